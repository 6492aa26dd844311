//! The incremental build is the full build: over random sequences of cluster changes (apps
//! added, changed in place, removed, read again equal; tasks moving between agents; labels
//! colliding between apps; health and verdicts flipping; the config changing), every zone the
//! incremental build gives answers every name with the same bytes as a fresh full build of
//! the same cluster, and lists the same apps, problems and names.

use super::super::*;
use super::Incremental;
use crate::cluster::fixtures::{app, task};
use crate::cluster::{PortSpec, TaskId};
use hickory_proto::rr::RecordType;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;

/// One change of a step.
#[derive(Debug, Clone)]
enum Change {
    /// App `id` (re)defined: its tasks (agent, healthy), served over IPv6, healthy-only, with a
    /// UDP port, named so that its label is app `id`'s twin's (a collision when both exist).
    Put {
        id: usize,
        tasks: Vec<(usize, bool)>,
        v6: bool,
        healthy_only: bool,
        udp_port: bool,
        twin: bool,
        changed_ms: u64,
    },
    Remove(usize),
    /// Every app read again, equal but behind new pointers (a resync).
    Reread,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => (
            0usize..8,
            prop::collection::vec((0usize..5, any::<bool>()), 0..6),
            any::<bool>(),
            prop::bool::weighted(0.2),
            any::<bool>(),
            prop::bool::weighted(0.1),
            0u64..4_000_000,
        )
            .prop_map(|(id, tasks, v6, healthy_only, udp_port, twin, changed_ms)| Change::Put {
                id,
                tasks,
                v6,
                healthy_only,
                udp_port,
                twin,
                changed_ms,
            }),
        2 => (0usize..8).prop_map(Change::Remove),
        1 => Just(Change::Reread),
    ]
}

fn app_id(id: usize, twin: bool) -> String {
    if twin {
        // `app{id}-team{n}`: the label of `/team{n}/app{id}`.
        format!("/app{id}-team{}", id % 3)
    } else {
        format!("/team{}/app{id}", id % 3)
    }
}

#[allow(clippy::too_many_arguments)]
fn make_app(
    id: usize,
    tasks: &[(usize, bool)],
    v6: bool,
    healthy_only: bool,
    udp_port: bool,
    twin: bool,
    changed_ms: u64,
) -> App {
    let tasks = tasks
        .iter()
        .enumerate()
        .map(|(t, &(agent, healthy))| {
            let mut task = task(&format!("app{id}-{twin}.{t}"), 31000 + t as u16);
            task.host = format!("10.2.0.{}", agent + 1).into();
            task.changed_ms = changed_ms + t as u64;
            if healthy_only {
                task.healthy = Some(healthy);
            }
            if v6 {
                task.ip_addresses = vec![format!("fd00::{id:x}:{t:x}").parse().unwrap()].into();
            }
            task
        })
        .collect();
    let labels: &[(&str, &str)] = if healthy_only {
        &[(HEALTHY_ONLY_LABEL, "true")]
    } else {
        &[]
    };
    let mut a = app(&app_id(id, twin), 10000 + id as u16, labels, tasks);
    if healthy_only {
        a.health_checks = 1;
    }
    a.ports[0].name = Some("http".into());
    a.ports[0]
        .labels
        .insert("VIP_0".into(), format!("/vip{}:80", id % 3));
    if v6 {
        a.networking = Networking::Container;
        a.ports[0].container_port = Some(8080);
    }
    if udp_port {
        a.ports.push(PortSpec {
            service_port: 20000 + id as u16,
            protocol: Protocol::TcpUdp,
            name: Some("dns".into()),
            ..Default::default()
        });
    }
    a
}

/// Applies `change` to the cluster's apps as the model does: a changed app gets a new
/// pointer, the others keep theirs.
fn apply(c: &mut Cluster, change: &Change) {
    match change {
        Change::Put {
            id,
            tasks,
            v6,
            healthy_only,
            udp_port,
            twin,
            changed_ms,
        } => {
            let a = make_app(
                *id,
                tasks,
                *v6,
                *healthy_only,
                *udp_port,
                *twin,
                *changed_ms,
            );
            c.newest_ms = c.newest_ms.max(*changed_ms + 100);
            c.apps.insert(a.id.clone(), Arc::new(a));
        }
        Change::Remove(id) => {
            c.apps.remove(app_id(*id, false).as_str());
            c.apps.remove(app_id(*id, true).as_str());
            c.newest_ms += 1000;
        }
        Change::Reread => {
            for a in c.apps.values_mut() {
                *a = Arc::new((**a).clone());
            }
        }
    }
}

fn config(vips: bool, ns: bool) -> ZoneConfig {
    ZoneConfig {
        domain: "mesos".into(),
        ttl: 60,
        ip_sources: vec![IpSource::NetInfo, IpSource::Host],
        label_rule: LabelRule::Rfc1123,
        ns_addr: ns.then(|| "127.0.0.1".parse().unwrap()),
        vip_range: vips.then(|| crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap()),
        served: Default::default(),
        ptr: false,
        healthy: Default::default(),
    }
}

/// Both zones hold the same names, tops and listings, and answer every name alike.
fn assert_same(got: &Zone, fresh: &Zone) {
    assert_eq!(got.apex, fresh.apex);
    assert_eq!(got.soa, fresh.soa);
    assert_eq!(got.vip_apex, fresh.vip_apex);
    assert_eq!(got.reverse, fresh.reverse);
    assert_eq!(got.dcos_apex, fresh.dcos_apex);
    assert_eq!(got.problems, fresh.problems);
    assert_eq!(got.fail_static, fresh.fail_static);
    let listed = |z: &Zone| -> Vec<_> {
        let name = |id: NameId| z.names.table().name(id).to_ascii();
        z.listed
            .iter()
            .map(|l| {
                let tasks: Vec<_> = l
                    .tasks
                    .iter()
                    .map(|t| (t.id.clone(), name(t.target), t.agent))
                    .collect();
                let services: Vec<_> = l.services.iter().map(|&s| name(s)).collect();
                (l.name.clone(), l.label.clone(), services, tasks)
            })
            .collect()
    };
    assert_eq!(listed(got), listed(fresh));
    let names: BTreeSet<LowerName> = fresh.names.keys().collect();
    assert_eq!(got.names.keys().collect::<BTreeSet<_>>(), names);
    assert_eq!(got.names.len(), fresh.names.len());
    // Every name, and a few that are not in the zone.
    let absent = [
        "nope.marathon.mesos.",
        "x.marathon.slave.mesos.",
        "a.b.dcos.thisdcos.directory.",
    ];
    let asked = names
        .iter()
        .map(|n| n.to_string())
        .chain(absent.iter().map(|s| s.to_string()));
    let qtypes = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::SOA,
        RecordType::ANY,
    ];
    crate::zone::fixtures::assert_answers_alike(got, fresh, asked, &qtypes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every step of a sequence of changes, built incrementally over the steps before it, is
    /// the full build of that step's cluster.
    #[test]
    fn an_incremental_build_is_a_full_build(
        steps in prop::collection::vec(prop::collection::vec(change(), 0..4), 1..8),
        unavailable in prop::collection::vec(
            prop::collection::vec((0usize..8, 0usize..6), 0..2), 8),
        vips in any::<bool>(),
        ns_flips in prop::collection::vec(prop::bool::weighted(0.15), 8),
    ) {
        let mut c = Cluster::default();
        let mut incremental = Incremental::default();
        let mut ns = true;
        for (n, step) in steps.iter().enumerate() {
            for change in step {
                apply(&mut c, change);
            }
            // Now and then the config or the proxy's verdicts change too.
            ns ^= ns_flips[n];
            let config = config(vips, ns);
            let mut verdicts = Verdicts::default();
            for &(i, t) in &unavailable[n] {
                let id: TaskId = format!("app{i}-false.{t}").into();
                verdicts.unavailable.insert(id);
            }
            let fresh = build_with(&c, &config, &verdicts);
            let got = incremental.build(&c, &config, &verdicts, &[]);
            assert_same(&got, &fresh);
        }
    }
}

/// An unchanged app is copied, not built again: the second build of an unchanged cluster
/// claims no app's names afresh, and a one-app change builds that app alone.
#[test]
fn unchanged_apps_are_copied_from_the_last_zone() {
    let mut c = Cluster::default();
    for id in 0..4 {
        apply(
            &mut c,
            &Change::Put {
                id,
                tasks: vec![(0, true), (1, true)],
                v6: false,
                healthy_only: false,
                udp_port: true,
                twin: false,
                changed_ms: 5,
            },
        );
    }
    let config = config(true, true);
    let mut incremental = Incremental::default();
    let first = incremental.build(&c, &config, &Verdicts::default(), &[]);
    assert_eq!(
        incremental.copied(),
        0,
        "the first build has nothing to copy"
    );
    let again = incremental.build(&c, &config, &Verdicts::default(), &[]);
    assert_eq!(incremental.copied(), 4);
    assert_same(&again, &first);
    apply(
        &mut c,
        &Change::Put {
            id: 2,
            tasks: vec![(3, true)],
            v6: true,
            healthy_only: false,
            udp_port: false,
            twin: false,
            changed_ms: 9,
        },
    );
    let changed = incremental.build(&c, &config, &Verdicts::default(), &[]);
    assert_eq!(incremental.copied(), 3);
    assert_same(&changed, &build(&c, &config));
    // Two apps of one label: nothing is copied from a zone where they collide.
    apply(
        &mut c,
        &Change::Put {
            id: 1,
            tasks: vec![(2, true)],
            v6: false,
            healthy_only: false,
            udp_port: false,
            twin: true,
            changed_ms: 11,
        },
    );
    let collided = incremental.build(&c, &config, &Verdicts::default(), &[]);
    assert_same(&collided, &build(&c, &config));
    let after = incremental.build(&c, &config, &Verdicts::default(), &[]);
    assert_eq!(incremental.copied(), 0);
    assert_same(&after, &build(&c, &config));
}

/// The copied name table keeps the names of changed and removed apps only so far: over many
/// changes that each give an app new task names, the names that exist no more never pass a
/// quarter of the table (and a few), a table is started afresh now and then, and every build
/// answers as a full build.
#[test]
fn dead_names_in_the_copied_table_stay_bounded() {
    let mut c = Cluster::default();
    let config = config(false, true);
    let mut incremental = Incremental::default();
    let (mut copied, mut fresh_tables, mut last_table) = (0, 0, 0);
    for round in 0..300usize {
        for id in 0..6 {
            if round > 0 && id != round % 6 {
                continue;
            }
            // New task ids every round: new task names.
            let tasks = (0..4)
                .map(|t| {
                    let mut task = task(&format!("app{id}-r{round}.{t}"), 31000 + t as u16);
                    task.host = format!("10.2.0.{}", t + 1).into();
                    task
                })
                .collect();
            let a = app(&app_id(id, false), 10000 + id as u16, &[], tasks);
            c.apps.insert(a.id.clone(), Arc::new(a));
        }
        c.newest_ms += 1000;
        let got = incremental.build(&c, &config, &Verdicts::default(), &[]);
        copied += incremental.copied();
        let (table, live) = (got.names.table().len(), got.names.len());
        let dead = table - live;
        assert!(
            dead <= table / 4 + super::WORN_SLACK + 32,
            "round {round}: {dead} dead names of {table}"
        );
        if table < last_table {
            fresh_tables += 1;
        }
        last_table = table;
        if round % 50 == 49 {
            assert_same(&got, &build(&c, &config));
        }
    }
    assert!(copied > 250 * 5, "apps were copied: {copied}");
    assert!(fresh_tables > 0, "a table was started afresh");
}

/// A change of the proxy's verdicts rebuilds the healthy-only app whose task it names and
/// copies the others; the zone answers as a full build with those verdicts, each way.
#[test]
fn a_verdict_change_rebuilds_only_the_app_it_names() {
    let mut c = Cluster::default();
    for id in 0..4 {
        apply(
            &mut c,
            &Change::Put {
                id,
                tasks: vec![(0, true), (1, true)],
                v6: false,
                healthy_only: id < 2,
                udp_port: false,
                twin: false,
                changed_ms: 5,
            },
        );
    }
    let config = config(false, true);
    let mut incremental = Incremental::default();
    let none = Verdicts::default();
    incremental.build(&c, &config, &none, &[]);
    let mut down = Verdicts::default();
    down.unavailable.insert("app1-false.0".into());
    // App 1 follows health: built again; app 3 does not and has no task named.
    down.unavailable.insert("app3-false.1".into());
    let got = incremental.build(&c, &config, &down, &[]);
    assert_eq!(incremental.copied(), 3);
    assert_same(&got, &build_with(&c, &config, &down));
    let got = incremental.build(&c, &config, &none, &[]);
    assert_eq!(incremental.copied(), 3);
    assert_same(&got, &build_with(&c, &config, &none));
    // Fewer changed verdicts than an app has tasks: the other way round, the same answer.
    let mut one = Verdicts::default();
    one.unavailable.insert("app0-false.1".into());
    let got = incremental.build(&c, &config, &one, &[]);
    assert_eq!(incremental.copied(), 3);
    assert_same(&got, &build_with(&c, &config, &one));
}
