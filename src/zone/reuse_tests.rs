//! A zone built over a retired zone's buffers and an earlier build's scratch ([`Spare`]) is the
//! zone a fresh build makes: over random sequences of cluster changes (apps and tasks coming
//! and going, moving between agents, growing and shrinking the zone, health and verdicts
//! flipping), each step's reused build holds the same tables and answers every name with the
//! same bytes as a fresh build of the same cluster.

use super::*;
use crate::cluster::fixtures::{app, task};
use crate::cluster::{ClusterUpdate, PortSpec};
use hickory_proto::rr::RecordType;
use proptest::prelude::*;

/// One app of a step: which of a few ids, its tasks (each: agent, healthy), how it is served.
#[derive(Debug, Clone)]
struct AppShape {
    id: usize,
    tasks: Vec<(usize, bool)>,
    v6: bool,
    healthy_only: bool,
    udp_port: bool,
    changed_ms: u64,
}

fn app_shape() -> impl Strategy<Value = AppShape> {
    (
        0usize..8,
        prop::collection::vec((0usize..5, any::<bool>()), 0..12),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u64..4_000_000,
    )
        .prop_map(
            |(id, tasks, v6, healthy_only, udp_port, changed_ms)| AppShape {
                id,
                tasks,
                v6,
                healthy_only,
                udp_port,
                changed_ms,
            },
        )
}

/// The cluster of one step; apps of the same id in a step: the last one wins.
fn cluster(step: &[AppShape]) -> Cluster {
    let apps = step
        .iter()
        .map(|shape| {
            let i = shape.id;
            let tasks = shape
                .tasks
                .iter()
                .enumerate()
                .map(|(t, &(agent, healthy))| {
                    let mut task = task(&format!("app{i}.{t}"), 31000 + t as u16);
                    task.host = format!("10.2.0.{}", agent + 1).into();
                    task.changed_ms = shape.changed_ms + t as u64;
                    if shape.healthy_only {
                        task.healthy = Some(healthy);
                    }
                    if shape.v6 {
                        task.ip_addresses =
                            vec![format!("fd00::{i:x}:{t:x}").parse().unwrap()].into();
                    }
                    task
                })
                .collect();
            let labels: &[(&str, &str)] = if shape.healthy_only {
                &[(HEALTHY_ONLY_LABEL, "true")]
            } else {
                &[]
            };
            let mut a = app(
                &format!("/team{}/app{i}", i % 3),
                10000 + i as u16,
                labels,
                tasks,
            );
            if shape.healthy_only {
                a.health_checks = 1;
            }
            a.ports[0].name = Some("http".into());
            a.ports[0]
                .labels
                .insert("VIP_0".into(), format!("/vip{}:80", i % 3));
            if shape.v6 {
                a.networking = Networking::Container;
                a.ports[0].container_port = Some(8080);
            }
            if shape.udp_port {
                a.ports.push(PortSpec {
                    service_port: 20000 + i as u16,
                    protocol: Protocol::TcpUdp,
                    name: Some("dns".into()),
                    ..Default::default()
                });
            }
            a
        })
        .collect();
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(apps));
    c
}

fn config() -> ZoneConfig {
    ZoneConfig {
        domain: "mesos".into(),
        ttl: 60,
        ip_sources: vec![IpSource::NetInfo, IpSource::Host],
        label_rule: LabelRule::Rfc1123,
        ns_addr: Some("127.0.0.1".parse().unwrap()),
        vip_range: Some(crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap()),
        served: Default::default(),
        ptr: true,
        healthy: Default::default(),
    }
}

/// Both zones hold the same names, records and tops, and answer every name alike.
fn assert_same(reused: &Zone, fresh: &Zone) {
    assert!(reused.names.same_tables(&fresh.names), "the same tables");
    assert_eq!(reused.apex, fresh.apex);
    assert_eq!(reused.soa, fresh.soa);
    assert_eq!(reused.vip_apex, fresh.vip_apex);
    assert_eq!(reused.reverse, fresh.reverse);
    assert_eq!(reused.dcos_apex, fresh.dcos_apex);
    assert_eq!(reused.problems, fresh.problems);
    assert_eq!(reused.fail_static, fresh.fail_static);
    assert_eq!(reused.listed.len(), fresh.listed.len());
    for (r, f) in reused.listed.iter().zip(&fresh.listed) {
        assert_eq!(
            (&r.name, &r.label, &r.services),
            (&f.name, &f.label, &f.services)
        );
        let tasks = |l: &Listed| -> Vec<_> {
            l.tasks
                .iter()
                .map(|t| (t.id.clone(), t.target, t.agent))
                .collect()
        };
        assert_eq!(tasks(r), tasks(f));
    }
    let names: Vec<LowerName> = fresh.names.keys().collect();
    assert_eq!(reused.names.keys().collect::<Vec<_>>(), names);
    let qtypes = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::ANY,
    ];
    let asked = names.iter().map(|n| n.to_string());
    crate::zone::fixtures::assert_answers_alike(reused, fresh, asked, &qtypes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Every step of a sequence of changes, built over the buffers the previous steps left
    /// (their scratch and their retired zones), is the fresh build of that step's cluster.
    #[test]
    fn a_build_over_recycled_buffers_is_a_fresh_build(
        steps in prop::collection::vec(prop::collection::vec(app_shape(), 0..7), 1..6),
        unavailable in prop::collection::vec((0usize..8, 0usize..12), 0..4),
    ) {
        let config = config();
        let mut verdicts = Verdicts::default();
        for (i, t) in unavailable {
            verdicts.unavailable.insert(format!("app{i}.{t}").into());
        }
        let mut spare = Spare::default();
        let mut retired: Option<Zone> = None;
        for step in &steps {
            let c = cluster(step);
            let table = crate::routing::compile(
                &c,
                &crate::routing::CompileConfig::group("*", "127.0.0.1".parse().unwrap()),
            );
            let splits = route_splits(&table);
            let (fresh, _) = build_reusing(&c, &config, &verdicts, &splits, Spare::default());
            if let Some(mut old) = retired.take() {
                spare.merge(Spare::reclaim(&mut old.names));
            }
            let (reused, scratch) = build_reusing(&c, &config, &verdicts, &splits, spare);
            spare = scratch;
            assert_same(&reused, &fresh);
            // And through the kept buffers, as the server builds.
            assert_same(&build_from(&c, &config, &verdicts, &splits), &fresh);
            retired = Some(reused);
        }
    }
}

/// Buffers no build takes are given back after `SPARE_IDLE`, not before.
#[test]
fn kept_buffers_are_given_back_when_no_build_takes_them() {
    use crate::zone::compact::SPARE_IDLE;
    let (zone, scratch) = build_reusing(
        &cluster(&[AppShape {
            id: 1,
            tasks: vec![(0, true), (1, true)],
            v6: false,
            healthy_only: false,
            udp_port: false,
            changed_ms: 5,
        }]),
        &config(),
        &Verdicts::default(),
        &[],
        Spare::default(),
    );
    let offered = std::time::Instant::now();
    let mut kept = Some((scratch, offered));
    assert!(compact::idle_at(&mut kept, offered + SPARE_IDLE / 2).is_none());
    assert!(kept.is_some(), "kept while a build may come");
    let given = compact::idle_at(&mut kept, offered + SPARE_IDLE);
    assert!(given.is_some_and(|s| s.heap_bytes() > 0));
    assert!(kept.is_none());
    drop(zone);
}
