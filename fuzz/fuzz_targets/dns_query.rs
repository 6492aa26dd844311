//! A DNS message from the network, answered over UDP and TCP from a small zone.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard::cluster::Cluster;
use switchyard::dns::answer::{Transport, answer};
use switchyard::dns::names::LabelRule;
use switchyard::dns::zone::{IpSource, Zone, ZoneConfig, build};

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let body = br#"{"apps":[{"id":"/prod/api","portDefinitions":[{"port":10000,"name":"http"}],
            "tasks":[{"id":"a.1","host":"10.0.0.1","ports":[31000]},{"id":"a.2","host":"10.0.0.2","ports":[31001]}]}]}"#;
        let parsed = switchyard::discovery::marathon::api::parse_apps(body).unwrap();
        let mut cluster = Cluster::default();
        cluster.apply(switchyard::cluster::ClusterUpdate::Snapshot(parsed.apps));
        let config = ZoneConfig {
            domain: "mesos".into(),
            ttl: 60,
            ip_sources: vec![IpSource::Auto],
            label_rule: LabelRule::Rfc1123,
            ns_addr: None,
            vip_range: None,
        };
        build(&cluster, &config)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = answer(Some(zone()), data, Transport::Udp, true);
    let _ = answer(Some(zone()), data, Transport::Tcp, false);
});
