//! The compact zone against the builder it replaced (`zone::legacy`, kept for this test): for a
//! varied cluster (apps with several named ports over TCP, UDP and both, IPv6 tasks, named VIPs,
//! other Mesos frameworks, masters and a leader, a canary group's weighted split, healthy-only
//! apps, PTR on), every name holds the same records in the same order, and every name and type
//! is answered with the same bytes (the shuffle seeded alike) over UDP with and without EDNS
//! and over TCP, by the general path and by the UDP fast path where it answers.

use super::*;
use crate::cluster::fixtures::{app, task};
use crate::cluster::mesos::{Agent, Framework, Master, MesosState, MesosTask};
use crate::cluster::{Cluster, ClusterUpdate, Networking, PortSpec, Protocol};
use crate::zone::{IpSource, Node, Verdicts, ZoneConfig, legacy};
use hickory_proto::rr::Name;
use proptest::prelude::*;

/// The knobs of the varied cluster.
#[derive(Debug, Clone)]
struct Shape {
    apps: usize,
    tasks: usize,
    /// Every `v6`th app runs on IPv6 container addresses.
    v6: usize,
    /// Every `healthy_only`th app follows health, with its odd tasks unhealthy.
    healthy_only: usize,
    mesos_tasks: usize,
    ptr: bool,
    vips: bool,
    ns_addr: bool,
    canary_weight: u32,
}

fn cluster(shape: &Shape) -> Cluster {
    let mut apps = Vec::new();
    for i in 0..shape.apps {
        let id = format!("/prod/team{}/app{i}", i % 3);
        let tasks = (0..shape.tasks)
            .map(|t| {
                let mut task = task(&format!("app{i}.{t}"), 31000 + t as u16);
                task.host = format!("10.1.{}.{}", t % 3, (i + t) % 7 + 1).into();
                task.ports.push(32000 + t as u16);
                task.ports.push(33000 + t as u16);
                if shape.healthy_only > 0 && i % shape.healthy_only == 0 {
                    task.healthy = Some(t % 2 == 0);
                }
                task
            })
            .collect();
        let mut labels = Vec::new();
        if shape.healthy_only > 0 && i % shape.healthy_only == 0 {
            labels.push((crate::zone::HEALTHY_ONLY_LABEL, "true"));
        }
        let mut a = app(&id, 10000 + i as u16, &labels, tasks);
        if shape.healthy_only > 0 && i % shape.healthy_only == 0 {
            a.health_checks = 1;
        }
        a.ports[0].name = Some(if i % 2 == 0 { "http" } else { "Web_Port" }.into());
        a.ports.push(PortSpec {
            service_port: 20000 + i as u16,
            protocol: Protocol::Udp,
            name: Some("dns".into()),
            ..Default::default()
        });
        a.ports.push(PortSpec {
            service_port: 30000 + i as u16,
            protocol: Protocol::TcpUdp,
            ..Default::default()
        });
        if shape.vips && i % 2 == 0 {
            a.ports[0]
                .labels
                .insert("VIP_0".into(), format!("/vip{}:80", i % 4));
        }
        if shape.v6 > 0 && i % shape.v6 == 0 {
            a.networking = Networking::Container;
            a.ports[0].container_port = Some(8080);
            for (n, t) in a.tasks.values_mut().enumerate() {
                t.ip_addresses = vec![format!("fd00::{i:x}:{n:x}").parse().unwrap()].into();
            }
        }
        apps.push(a);
    }
    // A canary group: two apps of one deployment group splitting its port.
    for (name, weight) in [("blue", 100), ("green", shape.canary_weight)] {
        let labels = [
            ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
            ("HAPROXY_DEPLOYMENT_ALT_PORT", "10900"),
            ("SWITCHYARD_0_WEIGHT", &*weight.to_string()),
        ]
        .map(|(k, v)| (k, v.to_string()));
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let tasks = (0..2)
            .map(|t| {
                let mut task = task(&format!("{name}.{t}"), 31500 + t);
                task.host = format!("10.2.0.{}", t + 1).into();
                task
            })
            .collect();
        apps.push(app(&format!("/shop-{name}"), 10800, &labels, tasks));
    }
    // A 63-character app name: its SRV label is cut.
    apps.push(app(
        &format!("/{}", "x".repeat(63)),
        10950,
        &[],
        vec![task("x.1", 31999)],
    ));
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(apps));
    let mut m = MesosState::default();
    m.masters = vec![
        Master {
            host: "10.9.0.1".into(),
            port: 5050,
        },
        Master {
            host: "10.9.0.2".into(),
            port: 5050,
        },
    ];
    m.leader = Some(m.masters[1].clone());
    for a in 0..3 {
        let id: crate::cluster::mesos::AgentId = format!("agent{a}").into();
        m.agents.insert(
            id.clone(),
            Agent {
                id,
                host: format!("10.8.0.{}", a + 1).as_str().into(),
                port: 5051,
            },
        );
    }
    for (f, name) in ["kafka", "Spark_Jobs"].iter().enumerate() {
        let id: crate::cluster::mesos::FrameworkId = format!("fw{f}").into();
        m.frameworks.insert(
            id.clone(),
            Framework {
                id,
                name: name.to_string(),
                host: format!("10.7.0.{}", f + 1).as_str().into(),
            },
        );
    }
    for t in 0..shape.mesos_tasks {
        let discovery = (t % 3 != 0).then(|| crate::cluster::mesos::Discovery {
            name: (t % 3 == 1).then(|| format!("broker-{}", t % 2)),
            ports: vec![
                crate::cluster::mesos::DiscoveryPort {
                    number: 9092 + t as u16,
                    name: Some("client".into()),
                    protocol: Protocol::Tcp,
                    labels: if shape.vips {
                        [("VIP_0".to_string(), "/brokers:9092".to_string())].into()
                    } else {
                        Default::default()
                    },
                },
                crate::cluster::mesos::DiscoveryPort {
                    number: 9500 + t as u16,
                    name: None,
                    protocol: Protocol::TcpUdp,
                    labels: Default::default(),
                },
            ],
        });
        let id: crate::cluster::TaskId = format!("mesos-task-{t}").into();
        m.tasks.insert(
            id.clone(),
            MesosTask {
                id,
                name: format!("worker{}", t % 4),
                framework_id: format!("fw{}", t % 2).into(),
                agent_id: format!("agent{}", t % 3).into(),
                state: crate::cluster::TaskState::Running,
                changed_ms: 0,
                container_ips: if t % 2 == 0 {
                    vec![format!("172.16.0.{}", t + 1).parse().unwrap()]
                } else {
                    vec![format!("fd01::{t:x}").parse().unwrap()]
                },
                container_network: t % 4 == 0,
                port_resources: vec![7000 + t as u16, 7100 + t as u16],
                discovery,
            },
        );
    }
    c.mesos = m;
    c
}

fn config(shape: &Shape) -> ZoneConfig {
    ZoneConfig {
        domain: "mesos".into(),
        ttl: 60,
        ip_sources: vec![IpSource::NetInfo, IpSource::Auto, IpSource::Host],
        label_rule: crate::cluster::names::LabelRule::Rfc1123,
        ns_addr: shape.ns_addr.then(|| "127.0.0.1".parse().unwrap()),
        vip_range: shape
            .vips
            .then(|| crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap()),
        served: Default::default(),
        ptr: shape.ptr,
        healthy: Default::default(),
    }
}

fn both(shape: &Shape) -> (Zone, legacy::Zone) {
    let c = cluster(shape);
    let config = config(shape);
    let table = crate::routing::compile(
        &c,
        &crate::routing::CompileConfig::group("*", "127.0.0.1".parse().unwrap()),
    );
    let splits = crate::zone::route_splits(&table);
    let mut verdicts = Verdicts::default();
    verdicts.unavailable.insert("app1.0".into());
    (
        crate::zone::build_from(&c, &config, &verdicts, &splits),
        legacy::build_from(&c, &config, &verdicts, &splits),
    )
}

/// The answer the replaced code gave: the same steps as `answer` on the old zone's records.
fn legacy_answer(
    new: &Zone,
    old: &legacy::Zone,
    packet: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let name = LowerName::new(request.queries[0].name());
    let qtype = request.queries[0].query_type();
    let soa = new.soa_for(&name)?.clone();
    let limit = match transport {
        Transport::Udp => udp_limit(&request),
        Transport::Tcp => u16::MAX as usize,
    };
    let mut response = into_response(request, false);
    let asked = response.queries[0].name().clone();
    response.metadata.authoritative = true;
    match old.names.get(&name) {
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.authorities.push(soa);
        }
        Some(node) => {
            let mut answers = legacy_records(node, qtype);
            if qtype == RecordType::ANY && transport == Transport::Udp {
                // RFC 8482 §4.1 over UDP: the first RRset the name has, in the node's order.
                let sets = [&node.a, &node.aaaa, &node.srv, &node.ns, &node.ptr];
                answers = match sets.into_iter().find(|set| !set.is_empty()) {
                    Some(set) => set.clone(),
                    None => node.soa.iter().map(|r| (**r).clone()).collect(),
                };
            }
            if answers.is_empty() {
                response.authorities.push(soa);
            }
            fastrand::shuffle(&mut answers);
            for record in &mut answers {
                record.name = asked.clone();
            }
            let mut additionals = Vec::new();
            for answer in &answers {
                let RData::SRV(srv) = &answer.data else {
                    continue;
                };
                let Some(target) = old.names.get(&LowerName::new(&srv.target)) else {
                    continue;
                };
                for record in target.a.iter().chain(&target.aaaa) {
                    let mut record = record.clone();
                    record.name = srv.target.clone();
                    additionals.push(record);
                }
            }
            response.additionals = additionals;
            response.answers = answers;
        }
    }
    Some(encode(response, limit, Some(qtype)).bytes)
}

fn legacy_records(node: &Node, qtype: RecordType) -> Vec<Record> {
    match qtype {
        RecordType::A => node.a.clone(),
        RecordType::AAAA => node.aaaa.clone(),
        RecordType::SRV => node.srv.clone(),
        RecordType::NS => node.ns.clone(),
        RecordType::SOA => node.soa.iter().map(|r| (**r).clone()).collect(),
        RecordType::PTR => node.ptr.clone(),
        RecordType::ANY => {
            let all = [&node.a, &node.aaaa, &node.srv, &node.ns, &node.ptr];
            let mut answers: Vec<Record> = all.into_iter().flatten().cloned().collect();
            answers.extend(node.soa.iter().map(|r| (**r).clone()));
            answers
        }
        _ => Vec::new(),
    }
}

fn same_records(a: &Node, b: &Node) -> bool {
    a.a == b.a
        && a.aaaa == b.aaaa
        && a.srv == b.srv
        && a.ns == b.ns
        && a.ptr == b.ptr
        && a.soa == b.soa
}

/// Every name of both zones holds the same records; the zones' tops, problems and listings
/// agree. Returns the names.
fn assert_same_zone(new: &Zone, old: &legacy::Zone) -> Vec<LowerName> {
    let mut old_names: Vec<LowerName> = old.names.keys().cloned().collect();
    let mut new_names: Vec<LowerName> = new.names.keys().collect();
    old_names.sort();
    new_names.sort();
    assert_eq!(new_names, old_names, "the same names exist");
    for name in &old_names {
        let (n, o) = (new.names.get(name).unwrap(), &old.names[name]);
        assert!(same_records(&n, o), "{name}: {n:?} != {o:?}");
    }
    assert_eq!(new.apex, old.apex);
    assert_eq!(new.soa, old.soa);
    assert_eq!(new.vip_apex, old.vip_apex);
    assert_eq!(new.reverse, old.reverse);
    assert_eq!(new.dcos_apex, old.dcos_apex);
    assert_eq!(new.problems, old.problems);
    assert_eq!(new.fail_static, old.fail_static);
    assert_eq!(new.listed.len(), old.listed.len());
    let table = new.names.table();
    for (n, o) in new.listed.iter().zip(&old.listed) {
        assert_eq!((&n.name, &n.label), (&o.name, &o.label));
        let services: Vec<Name> = n.services.iter().map(|&s| table.name(s)).collect();
        assert_eq!(services, o.services);
        assert_eq!(n.tasks.len(), o.tasks.len());
        for (nt, ot) in n.tasks.iter().zip(&o.tasks) {
            assert_eq!(
                (&nt.id, table.name(nt.target), nt.agent),
                (&ot.id, ot.target.clone(), ot.agent)
            );
        }
    }
    old_names
}

const TYPES: [RecordType; 10] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::NS,
    RecordType::SOA,
    RecordType::PTR,
    RecordType::ANY,
    RecordType::TXT,
    RecordType::MX,
    RecordType::CNAME,
];

/// Every name (as stored, and in mixed case) and a few that are not held, every type, over
/// each transport: the same bytes from both, and from the fast path where it answers.
fn assert_same_answers(new: &Zone, old: &legacy::Zone, names: &[LowerName]) -> (usize, usize) {
    let mut asked: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    asked.extend(
        [
            "nope.marathon.mesos.",
            "x.nope.mesos.",
            "nope.dcos.thisdcos.directory.",
            "9.9.9.9.in-addr.arpa.",
        ]
        .map(String::from),
    );
    let (mut compared, mut fast) = (0, 0);
    let mut out = Vec::new();
    for (i, text) in asked.iter().enumerate() {
        // 0x20 case: every other letter upper-cased on odd names.
        let text: String = if i % 2 == 1 {
            text.chars()
                .enumerate()
                .map(|(j, c)| {
                    if j % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        } else {
            text.clone()
        };
        if Name::from_ascii(&text).is_err() {
            continue;
        }
        for qtype in TYPES {
            for (transport, edns) in [
                (Transport::Udp, None),
                (Transport::Udp, Some(1232)),
                (Transport::Udp, Some(4096)),
                (Transport::Tcp, None),
            ] {
                let mut m = crate::zone::fixtures::query(&text, qtype, edns);
                m.metadata.id = i as u16;
                let q = m.to_vec().unwrap();
                let seed = (i as u64) << 16 | u64::from(u16::from(qtype));
                fastrand::seed(seed);
                let Outcome::Reply(reply) = answer(Some(new), &q, transport, false) else {
                    panic!("{text} {qtype}: not answered");
                };
                fastrand::seed(seed);
                let Some(expected) = legacy_answer(new, old, &q, transport) else {
                    // Outside the served zones (the reverse zones without PTR): refused alike.
                    assert_eq!(reply.rcode, ResponseCode::Refused, "{text}");
                    continue;
                };
                assert_eq!(
                    reply.bytes, expected,
                    "{text} {qtype} {transport:?} {edns:?}"
                );
                Message::from_vec(&reply.bytes).expect("the answer decodes");
                if transport == Transport::Udp {
                    fastrand::seed(seed);
                    if crate::dns::fast::answer(new, &q, &mut out, false).is_some() {
                        assert_eq!(out, expected, "fast: {text} {qtype} {edns:?}");
                        fast += 1;
                    }
                }
                compared += 1;
            }
        }
    }
    (compared, fast)
}

fn varied() -> Shape {
    Shape {
        apps: 12,
        tasks: 4,
        v6: 3,
        healthy_only: 4,
        mesos_tasks: 8,
        ptr: true,
        vips: true,
        ns_addr: true,
        canary_weight: 25,
    }
}

#[test]
fn the_compact_zone_answers_every_name_and_type_as_the_old_one_did() {
    let (new, old) = both(&varied());
    let names = assert_same_zone(&new, &old);
    assert!(names.len() > 150, "a varied zone: {} names", names.len());
    let (compared, fast) = assert_same_answers(&new, &old, &names);
    assert!(
        compared > 10_000 && fast > 500,
        "{compared} answers, {fast} by the fast path"
    );
    // Big answers are truncated alike: an app with 40 tasks does not fit in 512 bytes.
    let big = Shape {
        apps: 1,
        tasks: 40,
        ..varied()
    };
    let (new, old) = both(&big);
    let names = assert_same_zone(&new, &old);
    assert_same_answers(&new, &old, &names);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Clusters of every shape: the same zone, the same answers.
    #[test]
    fn every_cluster_gets_the_same_zone_and_answers(
        apps in 0usize..6,
        tasks in 0usize..5,
        v6 in 0usize..3,
        healthy_only in 0usize..3,
        mesos_tasks in 0usize..6,
        ptr in any::<bool>(),
        vips in any::<bool>(),
        ns_addr in any::<bool>(),
        canary_weight in 0u32..200,
    ) {
        let shape = Shape { apps, tasks, v6, healthy_only, mesos_tasks, ptr, vips, ns_addr, canary_weight };
        let (new, old) = both(&shape);
        let names = assert_same_zone(&new, &old);
        assert_same_answers(&new, &old, &names);
    }
}
