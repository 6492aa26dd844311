use super::*;
use crate::cluster::fixtures::{app, task};
use crate::cluster::{ClusterUpdate, PortSpec};
use hickory_proto::rr::RData;
use hickory_proto::rr::rdata::A;
use std::collections::BTreeSet;

pub fn config() -> ZoneConfig {
    ZoneConfig {
        domain: "mesos".into(),
        ttl: 60,
        ip_sources: vec![IpSource::Auto],
        label_rule: LabelRule::Rfc1123,
        ns_addr: Some("127.0.0.1".parse().unwrap()),
        vip_range: None,
        served: Default::default(),
        ptr: false,
        healthy: Default::default(),
    }
}

fn lookup(zone: &Zone, name: &str) -> Option<Node> {
    zone.names
        .get(&LowerName::new(&Name::from_ascii(name).unwrap()))
}

#[test]
fn task_slave_and_srv_names() {
    let mut t1 = task("api.1", 31000);
    t1.host = "10.0.0.1".into();
    let mut t2 = task("api.2", 31001);
    t2.host = "10.0.0.2".into();
    let mut a = app("/prod/api", 10000, &[], vec![t1, t2]);
    a.ports[0].name = Some("http".into());
    a.ports.push(PortSpec {
        service_port: 10001,
        protocol: Protocol::Udp,
        ..Default::default()
    });
    a.tasks
        .values_mut()
        .for_each(|t| t.ports.push(t.ports[0] + 100));
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![a]));
    let zone = build(&c, &config());

    let node = lookup(&zone, "api-prod.marathon.mesos.").unwrap();
    assert_eq!(node.a.len(), 2);
    let slave = lookup(&zone, "api-prod.marathon.slave.mesos.").unwrap();
    assert_eq!(slave.a.len(), 2);
    let srv = lookup(&zone, "_api-prod._tcp.marathon.mesos.").unwrap();
    assert_eq!(srv.srv.len(), 2);
    let named = lookup(&zone, "_http._api-prod._tcp.marathon.mesos.").unwrap();
    assert_eq!(named.srv.len(), 2);
    let udp = lookup(&zone, "_api-prod._udp.marathon.mesos.").unwrap();
    let ports: BTreeSet<u16> = udp
        .srv
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => s.port,
            _ => 0,
        })
        .collect();
    assert_eq!(ports, BTreeSet::from([31100, 31101]));
    // Every SRV target resolves to exactly its task.
    for r in &srv.srv {
        let RData::SRV(s) = &r.data else { panic!() };
        let target = zone.names.get(&LowerName::new(&s.target)).unwrap();
        assert_eq!(target.a.len(), 1);
    }
    // Empty non-terminals exist; the apex has SOA and NS.
    assert!(lookup(&zone, "marathon.mesos.").is_some());
    assert!(lookup(&zone, "_tcp.marathon.mesos.").is_some());
    let apex = lookup(&zone, "mesos.").unwrap();
    assert!(apex.soa.is_some() && apex.ns.len() == 1);
    assert_eq!(lookup(&zone, "ns1.mesos.").unwrap().a.len(), 1);
}

#[test]
fn ip_sources_and_only_running_tasks() {
    let mut running = task("c.1", 8080);
    running.ip_addresses = vec!["9.0.0.1".parse().unwrap()].into();
    let mut staging = task("c.2", 8080);
    staging.state = TaskState::Staging;
    let mut a = app("/c", 10000, &[], vec![running, staging]);
    a.networking = Networking::Container;
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![a]));
    let zone = build(&c, &config());
    let node = lookup(&zone, "c.marathon.mesos.").unwrap();
    assert_eq!(node.a.len(), 1);
    assert_eq!(node.a[0].data, RData::A(A("9.0.0.1".parse().unwrap())));
    let mut host_first = config();
    host_first.ip_sources = vec![IpSource::Host, IpSource::NetInfo];
    let zone = build(&c, &host_first);
    let node = lookup(&zone, "c.marathon.mesos.").unwrap();
    assert_eq!(node.a[0].data, RData::A(A("127.0.0.1".parse().unwrap())));
}

fn serial(record: &Record) -> u32 {
    let RData::SOA(soa) = &record.data else {
        panic!("not an SOA")
    };
    soa.serial
}

/// RFC 1982: `b` is after `a`, or the same.
fn not_before(a: u32, b: u32) -> bool {
    a == b || (b.wrapping_sub(a) as i32) > 0
}

#[test]
fn the_serial_follows_marathon_time_and_never_goes_back() {
    let mut vips = config();
    vips.vip_range = Some(crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap());
    let at = |s: u64| 1_700_000_000_000 + s * 1000;
    let mut t1 = task("api.1", 31000);
    t1.changed_ms = at(10);
    let mut t2 = task("api.2", 31001);
    t2.changed_ms = at(20);
    let mut a = app("/prod/api", 10000, &[], vec![t1, t2]);
    a.version_ms = at(5);
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![a.clone()]));
    let first = build(&c, &vips);
    assert_eq!(serial(&first.soa), 1_700_000_020);
    let (_, vip_soa) = first.vip_apex.as_ref().unwrap();
    assert_eq!(
        serial(vip_soa),
        serial(&first.soa),
        "the VIP zone's serial follows too"
    );
    // The same state, read by another instance (in another order): the same serial.
    let mut other = Cluster::default();
    other.apply(ClusterUpdate::AppUpserted(a.clone()));
    assert_eq!(serial(&build(&other, &vips).soa), serial(&first.soa));
    // The newest task ends: its event is newer still, and the serial grows, though the
    // newest timestamp left in the state is older.
    let mut ended = task("api.2", 31001);
    ended.state = TaskState::parse("TASK_KILLED");
    ended.changed_ms = at(30);
    c.apply(ClusterUpdate::TaskStatus {
        app_id: "/prod/api".into(),
        task: ended,
    });
    let second = build(&c, &vips);
    assert_eq!(serial(&second.soa), 1_700_000_030);
    // A snapshot without it (an app removed while the stream was down, say), and an
    // app removal without a time: never smaller.
    let mut older = a.clone();
    older.tasks.clear();
    c.apply(ClusterUpdate::Snapshot(vec![older]));
    c.apply(ClusterUpdate::AppRemoved {
        id: "/prod/api".into(),
        at_ms: 0,
    });
    let third = build(&c, &vips);
    assert!(not_before(serial(&second.soa), serial(&third.soa)));
    let (_, vip_soa) = third.vip_apex.as_ref().unwrap();
    assert!(not_before(serial(&second.soa), serial(vip_soa)));
}

#[test]
fn the_vip_zone_has_ns_and_soa() {
    let mut vips = config();
    vips.vip_range = Some(crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap());
    let zone = build(&Cluster::default(), &vips);
    let apex = lookup(&zone, "l4lb.thisdcos.directory.").unwrap();
    assert!(apex.soa.is_some());
    assert!(
        matches!(&apex.ns[..], [r] if matches!(&r.data, RData::NS(ns) if ns.0.to_ascii() == "ns1.l4lb.thisdcos.directory."))
    );
    let ns = lookup(&zone, "ns1.l4lb.thisdcos.directory.").unwrap();
    assert_eq!(ns.a[0].data, RData::A(A("127.0.0.1".parse().unwrap())));
}

#[test]
fn ptr_records_name_the_app_for_task_and_vip_addresses() {
    let mut t1 = task("api.1", 31000);
    t1.host = "10.0.0.1".into();
    let mut t2 = task("web.1", 31001);
    t2.host = "10.0.0.1".into();
    let mut v6 = app("/v6/db", 10002, &[], vec![task("db.1", 31002)]);
    v6.networking = crate::cluster::Networking::Container;
    for t in v6.tasks.values_mut() {
        t.ip_addresses = vec!["fd00::5".parse().unwrap()].into();
    }
    let mut api = app("/prod/api", 10000, &[], vec![t1]);
    api.ports[0].labels.insert("VIP_0".into(), "/api:80".into());
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![
        api,
        app("/web", 10001, &[], vec![t2]),
        v6,
    ]));
    let mut on = config();
    on.ptr = true;
    on.vip_range = Some(crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap());
    let zone = build(&c, &on);
    let ptrs = |name: &str| -> Vec<String> {
        lookup(&zone, name)
            .map(|n| n.ptr.iter().map(|r| r.data.to_string()).collect())
            .unwrap_or_default()
    };
    // Two apps on one agent: one PTR each, in name order.
    assert_eq!(
        ptrs("1.0.0.10.in-addr.arpa."),
        ["api-prod.marathon.mesos.", "web.marathon.mesos."]
    );
    let v6_owner = Name::from("fd00::5".parse::<IpAddr>().unwrap()).to_ascii();
    assert_eq!(ptrs(&v6_owner), ["db-v6.marathon.mesos."]);
    let vip = zone
        .names
        .iter()
        .find(|(_, n)| {
            n.ptr
                .iter()
                .any(|r| r.data.to_string() == "api.marathon.l4lb.thisdcos.directory.")
        })
        .map(|(name, _)| name.to_string())
        .expect("the VIP's address has a PTR");
    assert!(vip.ends_with(".11.in-addr.arpa."), "{vip}");
    // The apexes have SOA and NS; the names between are there (NODATA, not NXDOMAIN).
    for apex in ["in-addr.arpa.", "ip6.arpa."] {
        let node = lookup(&zone, apex).unwrap();
        assert!(node.soa.is_some() && node.ns.len() == 1, "{apex}");
        let name = LowerName::new(&Name::from_ascii(format!("x.{apex}")).unwrap());
        assert!(zone.soa_for(&name).is_some(), "{apex} is served");
    }
    assert!(lookup(&zone, "0.0.10.in-addr.arpa.").is_some());
    assert!(lookup(&zone, "2.0.0.10.in-addr.arpa.").is_none());
    // Off (the default): no reverse zone at all.
    let off = build(&c, &config());
    assert!(off.reverse.is_empty());
    assert!(lookup(&off, "1.0.0.10.in-addr.arpa.").is_none());
    let name = LowerName::new(&Name::from_ascii("1.0.0.10.in-addr.arpa.").unwrap());
    assert!(off.soa_for(&name).is_none(), "not served: relayed");
    // Pending (before the first sync): served, so never forwarded.
    assert!(Zone::pending(&on).soa_for(&name).is_some());
}

#[test]
fn a_63_character_label_keeps_its_srv_records_under_a_cut_name() {
    let long = "a".repeat(61) + "-c";
    let mut a = app(&format!("/{long}"), 10000, &[], vec![task("l.1", 31000)]);
    a.ports[0].name = Some("x".repeat(63));
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![a]));
    let zone = build(&c, &config());
    assert!(lookup(&zone, &format!("{long}.marathon.mesos.")).is_some());
    let cut = "a".repeat(61) + "c";
    let srv = lookup(&zone, &format!("_{cut}._tcp.marathon.mesos.")).unwrap();
    assert_eq!(srv.srv.len(), 1);
    let named = format!("_{}._{cut}._tcp.marathon.mesos.", "x".repeat(62));
    assert_eq!(lookup(&zone, &named).unwrap().srv.len(), 1);
    assert_eq!(zone.problems.len(), 2, "{:?}", zone.problems);
    assert!(zone.problems[0].reason.contains(&format!("`_{cut}`")));
    assert_eq!(zone.problems[1].port_index, Some(0));
}

#[test]
fn slave_names_answer_the_agents() {
    let mut t1 = task("api.1", 31000);
    t1.host = "10.0.0.1".into();
    let mut t2 = task("api.2", 31001);
    t2.host = "10.0.0.2".into();
    let mut t3 = task("web.1", 31002);
    t3.host = "10.0.0.1".into();
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![
        app("/prod/api", 10000, &[], vec![t1, t2]),
        app("/web", 10001, &[], vec![t3]),
    ]));
    let zone = build(&c, &config());
    let slave = lookup(&zone, "slave.mesos.").unwrap();
    let mut agents: Vec<String> = slave.a.iter().map(|r| r.data.to_string()).collect();
    agents.sort();
    assert_eq!(agents, ["10.0.0.1", "10.0.0.2"]);
    let srv = lookup(&zone, "_slave._tcp.mesos.").unwrap();
    let [record] = &srv.srv[..] else {
        panic!("{:?}", srv.srv)
    };
    let RData::SRV(s) = &record.data else {
        panic!()
    };
    assert_eq!(
        (s.port, s.target.to_ascii().as_str()),
        (5051, "slave.mesos.")
    );
    assert!(
        lookup(&zone, "_tcp.mesos.").is_some(),
        "an empty non-terminal"
    );
    // No tasks, no agents: no records (NXDOMAIN for the SRV name).
    let empty = build(&Cluster::default(), &config());
    assert!(lookup(&empty, "_slave._tcp.mesos.").is_none());
}

fn srv_ports(zone: &Zone, name: &str) -> BTreeSet<u16> {
    lookup(zone, name)
        .map(|n| {
            n.srv
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some(s.port),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Healthy-only names list the tasks Marathon counts healthy and ready and the proxy's
/// verdicts do not exclude, with the shorter TTL; none healthy: every running task.
#[test]
fn healthy_only_names_follow_marathon_health_and_the_proxys_verdicts() {
    let tasks = (1..=3u16)
        .map(|i| {
            let mut t = task(&format!("api.{i}"), 31000 + i);
            t.host = format!("10.0.0.{i}").into();
            t.healthy = Some(true);
            t
        })
        .collect();
    let mut a = app("/api", 10000, &[], tasks);
    a.health_checks = 1;
    a.tasks.get_mut("api.1").unwrap().healthy = Some(false);
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![a.clone()]));
    let mut healthy = config();
    healthy.healthy = HealthyDns { only: true, ttl: 3 };
    let down = Verdicts {
        unavailable: ["api.2".into()].into(),
    };
    let zone = build_with(&c, &healthy, &down);
    let node = lookup(&zone, "api.marathon.mesos.").unwrap();
    let ips: Vec<String> = node.a.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(ips, ["10.0.0.3"]);
    assert_eq!(node.a[0].ttl, 3, "healthy-only names carry dns.healthy_ttl");
    assert_eq!(
        srv_ports(&zone, "_api._tcp.marathon.mesos."),
        [31003].into()
    );
    assert!(zone.fail_static.is_empty());
    // Each task's own name still resolves (what an SRV answer listed a moment ago).
    assert_eq!(zone.listed[0].tasks.len(), 3);

    // Off (no switch, no label): every running task, the zone's TTL.
    let zone = build_with(&c, &config(), &down);
    let node = lookup(&zone, "api.marathon.mesos.").unwrap();
    assert_eq!((node.a.len(), node.a[0].ttl), (3, 60));
    // The label turns it on for one app, or off under the switch.
    let mut labelled = a.clone();
    labelled
        .labels
        .insert(HEALTHY_ONLY_LABEL.into(), "true".into());
    let mut c2 = Cluster::default();
    c2.apply(ClusterUpdate::Snapshot(vec![labelled.clone()]));
    let zone = build_with(&c2, &config(), &down);
    assert_eq!(lookup(&zone, "api.marathon.mesos.").unwrap().a.len(), 1);
    labelled
        .labels
        .insert(HEALTHY_ONLY_LABEL.into(), "false".into());
    c2.apply(ClusterUpdate::Snapshot(vec![labelled]));
    let zone = build_with(&c2, &healthy, &down);
    assert_eq!(lookup(&zone, "api.marathon.mesos.").unwrap().a.len(), 3);

    // None healthy: every running task (fail static), and said.
    let all_down = Verdicts {
        unavailable: ["api.2".into(), "api.3".into()].into(),
    };
    let zone = build_with(&c, &healthy, &all_down);
    assert_eq!(lookup(&zone, "api.marathon.mesos.").unwrap().a.len(), 3);
    assert_eq!(
        srv_ports(&zone, "_api._tcp.marathon.mesos."),
        [31001, 31002, 31003].into()
    );
    assert_eq!(zone.fail_static, vec![crate::cluster::AppId::from("/api")]);
}

/// A deployment group's split (blue 90 over three tasks, green 10 over one) is answered
/// under the group's name with weights in proportion to each task's share of the traffic;
/// a weight override moves them; an app of weight 0 is not listed; a group named like an
/// app keeps the app's records and is reported.
#[test]
fn a_deployment_groups_split_is_answered_as_weighted_srv_records() {
    let blue = [
        ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
        ("HAPROXY_DEPLOYMENT_ALT_PORT", "10100"),
        ("SWITCHYARD_0_WEIGHT", "90"),
    ];
    let green = [
        ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
        ("HAPROXY_DEPLOYMENT_ALT_PORT", "10100"),
        ("SWITCHYARD_0_WEIGHT", "10"),
    ];
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![
        app(
            "/shop-blue",
            10000,
            &blue,
            vec![task("b.1", 1), task("b.2", 2), task("b.3", 3)],
        ),
        app("/shop-green", 10000, &green, vec![task("g.1", 4)]),
    ]));
    let compile_config = crate::routing::CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    use std::collections::BTreeMap;
    let weights = |zone: &Zone| -> BTreeMap<u16, u16> {
        lookup(zone, "_shop._tcp.marathon.mesos.")
            .map(|n| {
                n.srv
                    .iter()
                    .map(|r| match &r.data {
                        RData::SRV(s) => (s.port, s.weight),
                        _ => panic!(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let table = crate::routing::compile(&c, &compile_config);
    let splits = route_splits(&table);
    assert_eq!(splits.len(), 1, "{splits:?}");
    let zone = build_from(&c, &config(), &Verdicts::default(), &splits);
    // Blue: 90 over three tasks, 30 each; green: 10 on one. The heaviest weighs 10,000.
    assert_eq!(
        weights(&zone),
        BTreeMap::from([(1, 10_000), (2, 10_000), (3, 10_000), (4, 3_333)])
    );
    // The apps' own names are unchanged.
    assert_eq!(
        lookup(&zone, "_shop-blue._tcp.marathon.mesos.")
            .unwrap()
            .srv
            .len(),
        3
    );

    // A runtime override (50/50) as the table routes it.
    let mut overridden = compile_config.clone();
    overridden.weight_overrides.insert(
        "shop".into(),
        BTreeMap::from([("/shop-blue".into(), 50), ("/shop-green".into(), 50)]),
    );
    let splits = route_splits(&crate::routing::compile(&c, &overridden));
    let zone = build_from(&c, &config(), &Verdicts::default(), &splits);
    assert_eq!(
        weights(&zone),
        BTreeMap::from([(1, 3_333), (2, 3_333), (3, 3_333), (4, 10_000)])
    );
    // Green at 0: not listed (the proxy sends it nothing).
    let mut zero = compile_config.clone();
    zero.weight_overrides.insert(
        "shop".into(),
        BTreeMap::from([("/shop-blue".into(), 100), ("/shop-green".into(), 0)]),
    );
    let splits = route_splits(&crate::routing::compile(&c, &zero));
    let zone = build_from(&c, &config(), &Verdicts::default(), &splits);
    assert_eq!(
        weights(&zone),
        BTreeMap::from([(1, 10_000), (2, 10_000), (3, 10_000)])
    );

    // An app named like the group: its own records answer, and the group is reported.
    let mut with_namesake = c.clone();
    with_namesake.apply(ClusterUpdate::AppUpserted(app(
        "/shop",
        10200,
        &[],
        vec![task("s.1", 9)],
    )));
    let splits = route_splits(&crate::routing::compile(&with_namesake, &compile_config));
    let zone = build_from(&with_namesake, &config(), &Verdicts::default(), &splits);
    assert_eq!(weights(&zone), BTreeMap::from([(9, 1)]));
    assert!(
        zone.problems
            .iter()
            .any(|p| p.reason.contains("deployment group `shop`")),
        "{:?}",
        zone.problems
    );
}

#[test]
fn ipv6_tasks_get_aaaa() {
    let mut t = task("v6.1", 80);
    t.ip_addresses = vec!["fd00::5".parse().unwrap()].into();
    let mut a = app("/v6", 10000, &[], vec![t]);
    a.networking = Networking::Container;
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![a]));
    let zone = build(&c, &config());
    assert_eq!(lookup(&zone, "v6.marathon.mesos.").unwrap().aaaa.len(), 1);
}

#[test]
fn the_healthy_only_label_is_known_to_the_label_reader() {
    // routing reports unknown `SWITCHYARD_…` labels; it cannot import the zone's name.
    assert!(crate::routing::known_labels::APP_WIDE_SWITCHYARD.contains(&HEALTHY_ONLY_LABEL));
}
