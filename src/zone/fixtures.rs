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

/// Two zones answer every name of `asked` alike, for each of `qtypes`, over both answer paths
/// (the full one and the fast one), with the same shuffle seed: byte for byte the same.
pub fn assert_answers_alike(
    got: &Zone,
    fresh: &Zone,
    asked: impl Iterator<Item = String>,
    qtypes: &[hickory_proto::rr::RecordType],
) {
    use crate::dns::answer::{Outcome, Transport, answer};
    let mut out = (Vec::new(), Vec::new());
    for (i, name) in asked.enumerate() {
        for &qtype in qtypes {
            let q = query(&name, qtype, Some(4096)).to_vec().unwrap();
            let seed = (i as u64) << 16 | u64::from(u16::from(qtype));
            let reply = |zone: &Zone| {
                fastrand::seed(seed);
                match answer(Some(zone), &q, Transport::Udp, false) {
                    Outcome::Reply(reply) => reply.bytes,
                    _ => panic!("{name} {qtype}: not answered"),
                }
            };
            assert_eq!(reply(got), reply(fresh), "{name} {qtype}");
            fastrand::seed(seed);
            let g = crate::dns::fast::answer(got, &q, &mut out.0, false);
            fastrand::seed(seed);
            let f = crate::dns::fast::answer(fresh, &q, &mut out.1, false);
            assert_eq!(g, f, "{name} {qtype}: fast path");
            if f.is_some() {
                assert_eq!(out.0, out.1, "{name} {qtype}: fast path");
            }
        }
    }
}
