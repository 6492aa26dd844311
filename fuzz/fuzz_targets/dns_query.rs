//! A DNS message from the network, answered over UDP and TCP from a small zone, and by the UDP
//! fast path, whose answers must decode and agree with the general path's.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard::cluster::Cluster;
use hickory_proto::op::Message;
use switchyard::dns::answer::{Outcome, Transport, answer};
use switchyard::cluster::names::LabelRule;
use switchyard::zone::{IpSource, Zone, ZoneConfig, build};

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
            served: Default::default(),
            healthy: Default::default(),
            ptr: false,
        };
        build(&cluster, &config)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut fast = Vec::new();
    let recursion = data.first().is_some_and(|b| b & 1 == 1);
    if let Some(qtype) = switchyard::dns::fast::answer(zone(), data, &mut fast, recursion) {
        let decoded = Message::from_vec(&fast).expect("a fast answer decodes");
        let Outcome::Reply(general) = answer(Some(zone()), data, Transport::Udp, recursion) else {
            panic!("the general path does not answer what the fast path answered");
        };
        let general = Message::from_vec(&general.bytes).unwrap();
        // Same rcode and header flags, and the same OPT (payload, version, DO bit).
        assert_eq!(decoded.metadata, general.metadata);
        let opt = |m: &Message| {
            m.edns
                .as_ref()
                .map(|e| (e.max_payload(), e.version(), e.flags().dnssec_ok))
        };
        assert_eq!(opt(&decoded), opt(&general));
        assert_eq!(decoded.answers.len(), general.answers.len());
        assert!(decoded.answers.iter().all(|r| r.record_type() == qtype));
    }
    // A malformed OPT is a FORMERR with an OPT, whatever the rest.
    if switchyard::dns::edns::scan(data).malformed
        && let Outcome::Reply(general) = answer(Some(zone()), data, Transport::Udp, recursion)
    {
        let m = Message::from_vec(&general.bytes).expect("a FORMERR decodes");
        assert_eq!(m.metadata.response_code, hickory_proto::op::ResponseCode::FormErr);
        assert!(m.edns.is_some());
    }
    let _ = answer(Some(zone()), data, Transport::Udp, true);
    let _ = answer(Some(zone()), data, Transport::Tcp, false);
});
