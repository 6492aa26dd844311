//! Test fixtures: a small zone under `mesos` and DNS queries to ask it.

use super::*;
use crate::cluster::ClusterUpdate;
use crate::cluster::fixtures::{app, task};

/// The zone of `/prod/api` (`api-prod.marathon.mesos`) with `tasks` tasks on agents
/// 10.0.x.y, and of the `extra` apps, under the domain `mesos`.
pub fn api_zone(tasks: usize, extra: Vec<App>) -> Zone {
    let tasks = (0..tasks)
        .map(|i| {
            let mut t = task(&format!("api.{i}"), 31000 + i as u16);
            t.host = format!("10.0.{}.{}", i / 200, i % 200 + 1).into();
            t
        })
        .collect();
    let mut c = Cluster::default();
    let mut apps = vec![app("/prod/api", 10000, &[], tasks)];
    apps.extend(extra);
    c.apply(ClusterUpdate::Snapshot(apps));
    let config = ZoneConfig {
        domain: "mesos".into(),
        ttl: 60,
        ip_sources: vec![IpSource::Auto],
        label_rule: LabelRule::Rfc1123,
        ns_addr: None,
        vip_range: None,
        served: Default::default(),
        ptr: false,
        healthy: Default::default(),
    };
    build(&c, &config)
}

/// A recursion-desired query for `name`, with an OPT record offering `edns` bytes.
pub fn query(
    name: &str,
    qtype: hickory_proto::rr::RecordType,
    edns: Option<u16>,
) -> hickory_proto::op::Message {
    use hickory_proto::op::{Edns, Message, Query};
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}
