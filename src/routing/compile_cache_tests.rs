//! The incremental compile against the one from scratch: across random sequences of app and task
//! changes (labels that claim, share and collide on ports, vhosts, deployment groups, UDP,
//! IP-per-task, maintenance, agents, weight overrides), a table compiled with the cache kept from
//! the previous steps is the table `compile` builds from nothing — same hash, same contents;
//! and so is one told which apps each step changed (`compile_changed`), whose audit finds a
//! list that leaves one out.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::cluster::fixtures::task;
use crate::cluster::{ClusterUpdate, PortSpec, TaskState};

/// Everything a table holds, as text that does not depend on hash-map order.
fn contents(t: &RoutingTable) -> String {
    let mut by_listen: Vec<_> = t.by_listen.iter().collect();
    by_listen.sort();
    let mut udp: Vec<_> = t.udp.iter().collect();
    udp.sort();
    let mut by_app_id: Vec<_> = t.by_app_id.iter().collect();
    by_app_id.sort();
    let vhosts: Vec<_> = t.vhosts.entries().collect();
    // A balancer's Debug text carries its runtime state, the round-robin cursor (which starts
    // anywhere, by design): left out.
    let text = format!(
        "{:#?}\n{:#?}\n{by_listen:?}\n{udp:?}\n{:#?}\n{vhosts:?}\n{by_app_id:?}\n{:?}\n{:?}\n{:x}\n{}",
        t.services,
        t.routes,
        t.problems,
        t.default_service,
        t.ssl_certs,
        t.hash(),
        t.sni_rules
    );
    text.lines()
        .filter(|l| !l.trim_start().starts_with("cursor:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One app from a few drawn numbers: small ranges, so that apps collide on service ports,
/// vhosts and deployment groups.
#[derive(Debug, Clone)]
struct AppShape {
    id: u8,
    service_port: u8,
    second_port: Option<u8>,
    protocol: u8,
    vhost: Option<u8>,
    group: Option<u8>,
    alt: Option<u8>,
    weight: Option<u8>,
    mode_http: bool,
    tasks: Vec<(u8, u8, bool)>,
    ip_per_task: bool,
    hc_index: Option<u8>,
    bind: Option<u8>,
    maintenance_label: bool,
    bad_label: bool,
}

fn app_shape() -> impl Strategy<Value = AppShape> {
    (
        (0u8..8, 0u8..4, proptest::option::of(0u8..4), 0u8..3),
        (
            proptest::option::of(0u8..3),
            proptest::option::of(0u8..2),
            proptest::option::of(0u8..3),
            proptest::option::of(0u8..100),
        ),
        (
            any::<bool>(),
            proptest::collection::vec((0u8..6, 0u8..3, any::<bool>()), 0..4),
            any::<bool>(),
            proptest::option::of(0u8..3),
        ),
        (proptest::option::of(0u8..2), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (id, service_port, second_port, protocol),
                (vhost, group, alt, weight),
                (mode_http, tasks, ip_per_task, hc_index),
                (bind, maintenance_label, bad_label),
            )| AppShape {
                id,
                service_port,
                second_port,
                protocol,
                vhost,
                group,
                alt,
                weight,
                mode_http,
                tasks,
                ip_per_task,
                hc_index,
                bind,
                maintenance_label,
                bad_label,
            },
        )
}

fn build(shape: &AppShape) -> App {
    let id = format!("/app{}", shape.id);
    let mut labels = std::collections::BTreeMap::new();
    let mut label = |k: &str, v: String| {
        labels.insert(k.to_string(), v);
    };
    if let Some(v) = shape.vhost {
        label("HAPROXY_0_VHOST", format!("h{v}.test"));
    }
    if let Some(g) = shape.group {
        label("HAPROXY_DEPLOYMENT_GROUP", format!("g{g}"));
    }
    if let Some(a) = shape.alt {
        label(
            "HAPROXY_DEPLOYMENT_ALT_PORT",
            format!("{}", 10100 + a as u16),
        );
    }
    if let Some(w) = shape.weight {
        label("SWITCHYARD_0_WEIGHT", w.to_string());
    }
    if shape.mode_http {
        label("HAPROXY_0_MODE", "http".into());
    }
    if let Some(k) = shape.hc_index {
        label("HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX", k.to_string());
    }
    if let Some(b) = shape.bind {
        label("HAPROXY_0_BIND_ADDR", format!("127.0.0.{}", b + 1));
    }
    if shape.maintenance_label {
        label("SWITCHYARD_0_MAINTENANCE", "true".into());
    }
    if shape.bad_label {
        label("HAPROXY_0_BALANCE", "nonsense".into());
        label("HAPROXY_0_BACKEND_HEAD", "ignored template".into());
    }
    let protocol = match shape.protocol {
        0 => crate::cluster::Protocol::Tcp,
        1 => crate::cluster::Protocol::Udp,
        _ => crate::cluster::Protocol::TcpUdp,
    };
    let port = |p: u8| PortSpec {
        service_port: if shape.ip_per_task {
            0
        } else {
            10000 + p as u16
        },
        container_port: shape.ip_per_task.then_some(8080 + p as u16),
        protocol,
        ..PortSpec::default()
    };
    let mut ports = vec![port(shape.service_port)];
    ports.extend(shape.second_port.map(port));
    let tasks = shape
        .tasks
        .iter()
        .map(|&(t, host, healthy)| {
            let mut task = task(&format!("{id}.t{t}"), 31000 + t as u16);
            task.ports.push(32000 + t as u16);
            task.host = match host {
                0 => "10.0.0.1".into(),
                1 => "agent-a".into(),
                _ => "agent-b".into(),
            };
            task.ip_addresses = vec![format!("10.1.0.{t}").parse().unwrap()].into();
            task.healthy = Some(healthy);
            task
        })
        .collect();
    App {
        id: id.as_str().into(),
        labels,
        ports,
        networking: if shape.ip_per_task {
            crate::cluster::Networking::Container
        } else {
            crate::cluster::Networking::Host
        },
        health_checks: usize::from(shape.tasks.iter().any(|t| !t.2)),
        probes: Vec::new(),
        checks: Vec::new(),
        assign_service_ports: shape.ip_per_task,
        tasks,
        version_ms: 0,
    }
}

#[derive(Debug, Clone)]
enum Step {
    Upsert(AppShape),
    Remove(u8),
    TaskUp(u8, u8),
    TaskDown(u8, u8),
    Health(u8, u8, bool),
    Maintenance(u8),
    Agent(bool),
    Override(Option<u8>),
    Resync,
    /// One label of an app set (or removed): what may, or may not, move it in the table.
    Relabel(u8, u8, Option<u8>),
    /// A VIP declared on (or taken off) an app's first port.
    Vip(u8, Option<u8>),
}

/// The labels `Step::Relabel` sets, and their values.
fn relabel(key: u8, v: u8) -> (&'static str, String) {
    match key % 9 {
        0 => ("HAPROXY_0_VHOST", format!("h{}.test", v % 3)),
        1 => ("HAPROXY_0_PATH", format!("/p{}", v % 2)),
        2 => ("HAPROXY_0_BACKEND_WEIGHT", format!("{}", v % 3)),
        3 => ("HAPROXY_DEPLOYMENT_GROUP", format!("g{}", v % 2)),
        4 => ("SWITCHYARD_0_WEIGHT", format!("{}", v % 4)),
        5 => ("HAPROXY_0_PORT", format!("{}", 10000 + u16::from(v % 4))),
        6 => ("SWITCHYARD_0_CANARY_HEADER", format!("x-c: {}", v % 2)),
        7 => ("HAPROXY_0_SSL_CERT", format!("/c{}.pem", v % 2)),
        _ => (
            "HAPROXY_0_MODE",
            if v.is_multiple_of(2) { "http" } else { "tcp" }.into(),
        ),
    }
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => app_shape().prop_map(Step::Upsert),
        1 => (0u8..8).prop_map(Step::Remove),
        3 => (0u8..8, 0u8..6).prop_map(|(a, t)| Step::TaskUp(a, t)),
        2 => (0u8..8, 0u8..6).prop_map(|(a, t)| Step::TaskDown(a, t)),
        2 => (0u8..8, 0u8..6, any::<bool>()).prop_map(|(a, t, h)| Step::Health(a, t, h)),
        1 => (0u8..8).prop_map(Step::Maintenance),
        1 => any::<bool>().prop_map(Step::Agent),
        1 => proptest::option::of(0u8..100).prop_map(Step::Override),
        1 => Just(Step::Resync),
        3 => (0u8..8, 0u8..9, proptest::option::of(0u8..4))
            .prop_map(|(a, k, v)| Step::Relabel(a, k, v)),
        1 => (0u8..8, proptest::option::of(0u8..2)).prop_map(|(a, v)| Step::Vip(a, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_cached_compile_is_the_compile_from_scratch(
        initial in proptest::collection::vec(app_shape(), 0..6),
        steps in proptest::collection::vec(step(), 1..25),
        vips in any::<bool>(),
    ) {
        let mut cluster = Cluster::default();
        cluster.agents.insert("agent-a".into(), "10.0.0.2".parse().unwrap());
        cluster.apply(ClusterUpdate::Snapshot(initial.iter().map(build).collect()));
        let mut config = CompileConfig {
            reserved: vec!["127.0.0.1:10003".parse().unwrap()],
            ip_per_task_ports: (10050, 10052),
            vip: vips.then(|| crate::routing::vip::VipSettings {
                range: crate::routing::vip::VipRange::parse("11.0.0.0/30").unwrap(),
                balance: crate::routing::Balance::Maglev,
                balance_by_name: Default::default(),
            }),
            ..CompileConfig::group("*", "127.0.0.1".parse().unwrap())
        };
        let mut cache = Cache::default();
        let table = compile_cached(&mut cache, &cluster, &config);
        prop_assert_eq!(contents(&table), contents(&compile(&cluster, &config)));
        // Told which apps each step changed, as the reconciler tells it: the app a step names
        // (none for a change of configuration or agents; not known for a resync).
        let mut listed_cache = Cache::default();
        compile_cached(&mut listed_cache, &cluster, &config);
        for step in steps {
            let named = |a: u8| Some(std::collections::BTreeSet::from([
                crate::cluster::AppId::from(format!("/app{a}")),
            ]));
            let listed = match &step {
                Step::Upsert(shape) => named(shape.id),
                Step::Remove(a)
                | Step::TaskUp(a, _)
                | Step::TaskDown(a, _)
                | Step::Health(a, _, _)
                | Step::Relabel(a, _, _)
                | Step::Vip(a, _) => named(*a),
                Step::Maintenance(_) | Step::Agent(_) | Step::Override(_) => Some(Default::default()),
                Step::Resync => None,
            };
            match step {
                Step::Upsert(shape) => {
                    cluster.apply(ClusterUpdate::AppUpserted(build(&shape)));
                }
                Step::Remove(a) => {
                    cluster.apply(ClusterUpdate::AppRemoved {
                        id: format!("/app{a}").into(),
                        at_ms: 0,
                    });
                }
                Step::TaskUp(a, t) | Step::TaskDown(a, t) => {
                    let app_id: crate::cluster::AppId = format!("/app{a}").into();
                    let mut task = task(&format!("{app_id}.t{t}"), 31000 + t as u16);
                    task.ports.push(32000 + t as u16);
                    task.ip_addresses = vec![format!("10.1.0.{t}").parse().unwrap()].into();
                    if matches!(step, Step::TaskDown(..)) {
                        task.state = TaskState::Other("TASK_KILLED".into());
                    }
                    cluster.apply(ClusterUpdate::TaskStatus { app_id, task });
                }
                Step::Health(a, t, alive) => {
                    let app_id: crate::cluster::AppId = format!("/app{a}").into();
                    cluster.apply(ClusterUpdate::TaskHealth {
                        task_id: format!("{app_id}.t{t}").into(),
                        app_id,
                        alive,
                    });
                }
                Step::Maintenance(a) => {
                    let id: crate::cluster::AppId = format!("/app{a}").into();
                    if !config.maintenance.remove(&id) {
                        config.maintenance.insert(id);
                    }
                }
                Step::Agent(known) => {
                    if known {
                        cluster.agents.insert("agent-b".into(), "10.0.0.3".parse().unwrap());
                    } else {
                        cluster.agents.remove("agent-b");
                    }
                }
                Step::Override(w) => {
                    config.weight_overrides.clear();
                    if let Some(w) = w {
                        let weights = [("/app0".into(), u32::from(w)), ("/app1".into(), 7)];
                        config.weight_overrides.insert("g0".into(), weights.into_iter().collect());
                    }
                }
                Step::Relabel(a, key, value) => {
                    let id: crate::cluster::AppId = format!("/app{a}").into();
                    if let Some(app) = cluster.apps.get(&id) {
                        let mut app = (**app).clone();
                        let (k, v) = relabel(key, value.unwrap_or(0));
                        match value {
                            Some(_) => app.labels.insert(k.into(), v),
                            None => app.labels.remove(k),
                        };
                        cluster.apply(ClusterUpdate::AppUpserted(app));
                    }
                }
                Step::Vip(a, v) => {
                    let id: crate::cluster::AppId = format!("/app{a}").into();
                    if let Some(app) = cluster.apps.get(&id) {
                        let mut app = (**app).clone();
                        match v {
                            Some(v) => app.ports[0]
                                .labels
                                .insert("VIP_0".into(), format!("/v{v}:80")),
                            None => app.ports[0].labels.remove("VIP_0"),
                        };
                        cluster.apply(ClusterUpdate::AppUpserted(app));
                    }
                }
                Step::Resync => {
                    let apps = cluster.apps.values().map(|a| (**a).clone()).collect();
                    cluster.apply(ClusterUpdate::Snapshot(apps));
                }
            }
            let cached = compile_cached(&mut cache, &cluster, &config);
            let scratch = compile(&cluster, &config);
            prop_assert_eq!(cached.hash(), scratch.hash());
            prop_assert_eq!(contents(&cached), contents(&scratch));
            let told = compile_changed(&mut listed_cache, &cluster, &config, listed.as_ref());
            prop_assert_eq!(told.hash(), scratch.hash());
            prop_assert_eq!(contents(&told), contents(&scratch));
            prop_assert_eq!(listed_cache.distrusted, 0, "a complete list is trusted");
        }
    }
}

/// A list of changed apps that leaves one out: the audit finds the app within
/// `apps / AUDITED` compiles (one that came, at once) and the table is then the full compile's.
#[test]
fn an_incomplete_list_of_changed_apps_is_found_out() {
    let apps: Vec<App> = (0..300)
        .map(|i| {
            crate::cluster::fixtures::app(
                &format!("/a{i:03}"),
                0,
                &[("HAPROXY_0_VHOST", &format!("a{i}.test"))],
                vec![task(&format!("a{i}.1"), 1)],
            )
        })
        .collect();
    let mut cluster = Cluster::default();
    cluster.apply(ClusterUpdate::Snapshot(apps));
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    let mut cache = Cache::default();
    compile_cached(&mut cache, &cluster, &config);
    let none = std::collections::BTreeSet::new();
    // A task of /a200 starts; the list says nothing changed.
    cluster.apply(ClusterUpdate::TaskStatus {
        app_id: "/a200".into(),
        task: task("a200.2", 2),
    });
    let mut compiles = 0;
    loop {
        let table = compile_changed(&mut cache, &cluster, &config, Some(&none));
        compiles += 1;
        if cache.distrusted > 0 {
            assert_eq!(contents(&table), contents(&compile(&cluster, &config)));
            break;
        }
        assert!(
            compiles <= 300 / cache::AUDITED + 1,
            "not found in {compiles} compiles"
        );
    }
    assert_eq!(cache.distrusted, 1);
    // An app that came: found at once.
    cluster.apply(ClusterUpdate::AppUpserted(crate::cluster::fixtures::app(
        "/b",
        0,
        &[("HAPROXY_0_VHOST", "b.test")],
        vec![task("b.1", 1)],
    )));
    let table = compile_changed(&mut cache, &cluster, &config, Some(&none));
    assert_eq!(cache.distrusted, 2);
    assert_eq!(contents(&table), contents(&compile(&cluster, &config)));
    // A complete list visits the app it names alone and patches the table.
    cluster.apply(ClusterUpdate::TaskStatus {
        app_id: "/a007".into(),
        task: task("a7.2", 2),
    });
    let listed = std::collections::BTreeSet::from(["/a007".into()]);
    let table = compile_changed(&mut cache, &cluster, &config, Some(&listed));
    assert_eq!((cache.distrusted, cache.recompiled), (2, 1));
    let patched = cache.patched.clone().expect("patched");
    assert_eq!(patched.services, vec![7]);
    assert_eq!(contents(&table), contents(&compile(&cluster, &config)));
}

/// An event on one app compiles that app alone, and the other apps' services are the previous
/// table's own (shared, not rebuilt).
#[test]
fn one_app_changed_compiles_one_app() {
    let apps: Vec<App> = (0..20)
        .map(|i| {
            crate::cluster::fixtures::app(
                &format!("/a{i:02}"),
                10000 + i,
                &[],
                vec![task(&format!("a{i}.1"), 1)],
            )
        })
        .collect();
    let mut cluster = Cluster::default();
    cluster.apply(ClusterUpdate::Snapshot(apps));
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    let mut cache = Cache::default();
    let first = compile_cached(&mut cache, &cluster, &config);
    assert_eq!(cache.recompiled, 20);
    cluster.apply(ClusterUpdate::TaskStatus {
        app_id: "/a05".into(),
        task: task("a5.2", 2),
    });
    let second = compile_cached(&mut cache, &cluster, &config);
    assert_eq!(cache.recompiled, 1);
    assert!(
        !cache.reassembled,
        "the app kept its place: the last assembly patched"
    );
    for (a, b) in first.services.iter().zip(&second.services) {
        assert_eq!(Arc::ptr_eq(a, b), &*a.key.app_id != "/a05", "{}", a.key);
    }
    // Only the changed app's route is made again; the others are the previous table's.
    for (a, b) in first.routes.iter().zip(&second.routes) {
        let changed = a.members.iter().any(|m| &*m.app_id == "/a05");
        assert_eq!(Arc::ptr_eq(a, b), !changed, "{}", a.name);
    }
    assert!(Arc::ptr_eq(&first.vhosts, &second.vhosts));
    assert_eq!(second.services[5].backends.len(), 2);
    assert_eq!(second.routes[5].members[0].weight, 2);
    assert_eq!(contents(&second), contents(&compile(&cluster, &config)));
    // An app that takes another place (a service port another app holds): assembled again.
    let mut moved = (*cluster.apps[&crate::cluster::AppId::from("/a07")]).clone();
    moved.ports[0].service_port = 10002;
    cluster.apply(ClusterUpdate::AppUpserted(moved));
    let third = compile_cached(&mut cache, &cluster, &config);
    assert!(cache.reassembled);
    assert!(third.problems.iter().any(|p| &*p.app_id == "/a07"));
    assert_eq!(contents(&third), contents(&compile(&cluster, &config)));
}

/// A compile without a list walks the parts beside the apps: a resync (every app read again,
/// the same) compiles none; apps gone at the start, middle and end and apps new between them
/// are found by that walk (the new compiled, the gone dropped), and the table is the full
/// compile's each time.
#[test]
fn the_walk_beside_the_apps_finds_every_app_come_and_gone() {
    let app = |i: u16| {
        crate::cluster::fixtures::app(
            &format!("/w{i:02}"),
            10000 + i,
            &[],
            vec![task(&format!("w{i}.1"), 1)],
        )
    };
    let mut cluster = Cluster::default();
    cluster.apply(ClusterUpdate::Snapshot((0..10).map(app).collect()));
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    let mut cache = Cache::default();
    compile_cached(&mut cache, &cluster, &config);
    assert_eq!(cache.recompiled, 10);
    // Read again, the same apps (new pointers): nothing compiled, the last assembly kept.
    let again = cluster.apps.values().map(|a| (**a).clone()).collect();
    cluster.apply(ClusterUpdate::Snapshot(again));
    let table = compile_cached(&mut cache, &cluster, &config);
    assert_eq!(cache.recompiled, 0);
    assert!(!cache.reassembled);
    assert_eq!(contents(&table), contents(&compile(&cluster, &config)));
    // Gone: the first, one in the middle, the last; new: one before all, two between.
    let mut apps: Vec<App> = [1, 2, 3, 4, 6, 7, 8].into_iter().map(app).collect();
    apps.extend([app(0), app(5), app(11)].into_iter().map(|mut a| {
        a.id = format!("{}b", a.id).into();
        a.ports[0].service_port += 50;
        a
    }));
    cluster.apply(ClusterUpdate::Snapshot(apps));
    let table = compile_cached(&mut cache, &cluster, &config);
    assert_eq!(cache.recompiled, 3, "the three new apps, and only they");
    assert!(cache.reassembled);
    assert_eq!(table.services.len(), 10);
    assert_eq!(contents(&table), contents(&compile(&cluster, &config)));
    // And back: the parts of the apps gone are gone (each comes back compiled again).
    cluster.apply(ClusterUpdate::Snapshot((0..10).map(app).collect()));
    let table = compile_cached(&mut cache, &cluster, &config);
    assert_eq!(cache.recompiled, 3);
    assert_eq!(contents(&table), contents(&compile(&cluster, &config)));
}

proptest! {
    /// Entry ports are sorted as `SocketAddr` and service index order them, whichever way
    /// `sort_ports` takes: a counting sort by port for many pairs of one address (with ports
    /// shared by several services, and duplicates), a comparison sort for few, for several
    /// addresses, or with IPv6.
    #[test]
    fn entry_ports_sort_as_addresses_and_services(
        pairs in proptest::collection::vec((0u8..4, 0u16..700, 0usize..900), 0..700),
        addresses in 1u8..3,
        v6 in any::<bool>(),
    ) {
        let mut ports: Vec<(SocketAddr, usize)> = pairs
            .iter()
            .enumerate()
            .map(|(i, &(a, port, service))| {
                let a = if addresses == 1 { 0 } else { a };
                let ip: IpAddr = if v6 && i == 0 {
                    "::1".parse().unwrap()
                } else {
                    std::net::Ipv4Addr::new(10, 0, 0, a).into()
                };
                // Ports spread over the whole range, their high byte too.
                (SocketAddr::new(ip, port.wrapping_mul(97)), service)
            })
            .collect();
        let mut oracle = ports.clone();
        oracle.sort();
        assembly::sort_ports(&mut ports);
        prop_assert_eq!(ports, oracle);
    }
}
