use std::net::SocketAddr;

use super::changes::{backend_ids, diff, route_changes};
use super::*;
use crate::cluster::fixtures::{app, task};
use crate::cluster::names::LabelRule;
use crate::routing::compile;
use crate::zone::IpSource;

/// A reconciler over apps without service ports (no listener is bound), with `debounce`.
fn reconciler(debounce: Duration, zone: Option<ZoneConfig>) -> (Reconciler, Arc<Store>) {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::new());
    let ctx = Arc::new(crate::proxy::Context::new(
        store.clone(),
        metrics.clone(),
        crate::proxy::Settings::for_tests(),
    ));
    let workers = Arc::new(crate::workers::Workers::start(1).unwrap());
    let (refetch, _) = mpsc::channel(8);
    let reconciler = Reconciler::new(
        CompileConfig::group("*", "127.0.0.1".parse().unwrap()),
        debounce,
        Registry::new(metrics.clone(), Duration::from_secs(1)),
        store.clone(),
        Listeners::new(ctx.clone(), workers),
        metrics,
        Arc::new(Status::default()),
        refetch,
        ctx,
        zone,
    );
    (reconciler, store)
}

fn web(tasks: usize) -> crate::cluster::App {
    let tasks = (0..tasks)
        .map(|i| task(&format!("web.{i}"), 31000 + i as u16))
        .collect();
    // Reached by vhost only: a service with backends, and no listener to bind.
    app("/web", 0, &[("HAPROXY_0_VHOST", "web.test")], tasks)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never: {what}");
}

/// Leading-edge coalescing, on the virtual clock: after a quiet spell a change is live at
/// once; a burst right after it becomes one more swap, a debounce later, carrying all of it.
#[tokio::test(start_paused = true)]
async fn a_change_after_quiet_is_swapped_at_once_and_a_burst_is_one_swap() {
    let debounce = Duration::from_secs(1);
    let (reconciler, store) = reconciler(debounce, None);
    let (events, events_rx) = mpsc::channel(4096);
    let (_commands, commands_rx) = mpsc::channel(8);
    tokio::spawn(reconciler.run(events_rx, commands_rx));
    let snapshot = ClusterUpdate::Snapshot(vec![web(1)]);
    events.send(SourceEvent::Update(snapshot)).await.unwrap();
    // Waited for by yielding only: on the paused clock no timer can fire while this task keeps
    // the runtime busy, so reaching the table proves the first swap waited on none.
    let mut yields = 0;
    while store.load().generation != 1 {
        assert!(yields < 100_000, "the first swap waited on a timer");
        tokio::task::yield_now().await;
        yields += 1;
    }
    for n in 2..=50 {
        let update = ClusterUpdate::AppUpserted(web(n));
        events.send(SourceEvent::Update(update)).await.unwrap();
    }
    // Held for the debounce: while this task keeps the runtime busy the paused clock stands
    // still, so no timer fires, and the burst, taken in by now, is not live yet.
    for _ in 0..10_000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        store.load().generation,
        1,
        "the burst waits for the debounce"
    );
    tokio::time::advance(debounce).await;
    until("the burst's table", || {
        store
            .load()
            .table
            .services
            .first()
            .map(|s| s.backends.len())
            == Some(50)
    })
    .await;
    assert_eq!(store.load().generation, 2, "one swap for the whole burst");
}

/// A runtime weight override is dropped once its apps' labels change (a new deployment),
/// and kept while they do not.
#[tokio::test]
async fn overrides_are_cleared_when_their_apps_labels_change() {
    let (mut reconciler, _store) = reconciler(Duration::from_millis(10), None);
    let (blue, green) = (
        app("/blue", 0, &[("HAPROXY_DEPLOYMENT_COLOUR", "blue")], vec![]),
        app(
            "/green",
            0,
            &[("HAPROXY_DEPLOYMENT_COLOUR", "green")],
            vec![],
        ),
    );
    Arc::make_mut(&mut reconciler.cluster).apply(ClusterUpdate::Snapshot(vec![blue, green]));
    let weights: BTreeMap<AppId, u32> = [("/blue".into(), 90), ("/green".into(), 10)]
        .into_iter()
        .collect();
    let labels = weights
        .keys()
        .map(|a| (a.clone(), reconciler.labels_of(a)))
        .collect();
    reconciler
        .overrides
        .insert("shop".into(), Override { weights, labels });
    reconciler.refresh_overrides();
    assert!(reconciler.config.weight_overrides.contains_key("shop"));
    let moved = app(
        "/green",
        0,
        &[("HAPROXY_DEPLOYMENT_COLOUR", "blue")],
        vec![],
    );
    Arc::make_mut(&mut reconciler.cluster).apply(ClusterUpdate::AppUpserted(moved));
    reconciler.refresh_overrides();
    assert!(reconciler.overrides.is_empty());
    assert!(reconciler.config.weight_overrides.is_empty());
}

/// A rollout's held weights are in every compile, outlast the label change that clears an
/// operator's override, and are taken out again when the route no longer has every app they
/// name.
#[tokio::test]
async fn held_weights_outlast_a_label_change_and_need_every_app_in_the_route() {
    let (mut reconciler, _store) = reconciler(Duration::from_millis(10), None);
    let shop = |id: &str, group: &str, colour: &str, port: u16| {
        app(
            id,
            0,
            &[
                ("HAPROXY_0_VHOST", "shop.test"),
                ("HAPROXY_DEPLOYMENT_GROUP", group),
                ("HAPROXY_DEPLOYMENT_COLOUR", colour),
            ],
            vec![task(&format!("{id}.0"), port)],
        )
    };
    Arc::make_mut(&mut reconciler.cluster).apply(ClusterUpdate::Snapshot(vec![
        shop("/blue", "shop", "blue", 31000),
        shop("/green", "shop", "green", 31001),
    ]));
    let held: BTreeMap<AppId, u32> = [("/blue".into(), 100), ("/green".into(), 0)]
        .into_iter()
        .collect();
    reconciler
        .held
        .lock()
        .unwrap()
        .insert("shop".into(), held.clone());
    reconciler.refresh_overrides();
    let table = compile(&reconciler.cluster, &reconciler.config);
    assert!(!reconciler.misheld(&table));
    let route = table.routes.iter().find(|r| r.name == "shop").unwrap();
    let green = route
        .members
        .iter()
        .find(|m| *m.app_id == *"/green")
        .unwrap();
    assert_eq!(green.weight, 0);
    // A new deployment's labels: an operator's override would go, the held weights stay.
    Arc::make_mut(&mut reconciler.cluster).apply(ClusterUpdate::AppUpserted(shop(
        "/green", "shop", "teal", 31001,
    )));
    reconciler.refresh_overrides();
    assert_eq!(reconciler.config.weight_overrides.get("shop"), Some(&held));
    // Green leaves the route (another vhost): the held weights would leave blue alone at 100
    // and any newcomer at 0, so they are not applied.
    let mut moved = shop("/green", "shop", "teal", 31001);
    moved
        .labels
        .insert("HAPROXY_0_VHOST".into(), "other.test".into());
    Arc::make_mut(&mut reconciler.cluster).apply(ClusterUpdate::AppUpserted(moved));
    reconciler.refresh_overrides();
    let table = compile(&reconciler.cluster, &reconciler.config);
    assert!(
        table.routes.iter().any(|r| r.name == "shop"),
        "{:?}",
        table.routes.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    assert!(reconciler.misheld(&table));
    assert!(!reconciler.config.weight_overrides.contains_key("shop"));
}

/// Healthy-only DNS: an outlier ejection on the data plane (no table swap) reaches the zone
/// through the registry's notification, and the ejected task leaves the app's SRV answer.
#[tokio::test]
async fn an_ejection_leaves_the_healthy_only_zone_without_a_swap() {
    let zone = ZoneConfig {
        domain: "mesos".into(),
        ttl: 60,
        ip_sources: vec![IpSource::Auto],
        label_rule: LabelRule::Rfc1123,
        ns_addr: None,
        vip_range: None,
        served: Default::default(),
        ptr: false,
        healthy: crate::zone::HealthyDns { only: true, ttl: 5 },
    };
    let (reconciler, store) = reconciler(Duration::from_millis(1), Some(zone));
    let (events, events_rx) = mpsc::channel(16);
    let (_commands, commands_rx) = mpsc::channel(8);
    tokio::spawn(reconciler.run(events_rx, commands_rx));
    events
        .send(SourceEvent::Update(ClusterUpdate::Snapshot(vec![web(10)])))
        .await
        .unwrap();
    let name = hickory_proto::rr::LowerName::from(
        hickory_proto::rr::Name::from_ascii("_web._tcp.marathon.mesos.").unwrap(),
    );
    let records = || {
        store
            .load()
            .dns
            .as_ref()
            .and_then(|z| z.names.get(&name).map(|n| n.srv.len()))
    };
    until("every task answered", || records() == Some(10)).await;
    let generation = store.load().generation;
    let states = store.load().states[0].clone();
    for _ in 0..crate::backends::outlier::CONSECUTIVE_FAILURES {
        crate::backends::outlier::failure(&states, 0);
    }
    assert!(states[0].outlier.is_ejected());
    until("the ejected task left", || records() == Some(9)).await;
    assert_eq!(store.load().generation, generation, "no table swap");
}

/// The DNS zone is built off the loop and published after the table it was built from; a
/// change during a build starts another, so the last zone published is the last state.
#[tokio::test]
async fn the_last_zone_published_follows_the_last_change() {
    let zone = ZoneConfig {
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
    let (reconciler, store) = reconciler(Duration::from_millis(1), Some(zone));
    let status = reconciler.status.clone();
    let (events, events_rx) = mpsc::channel(4096);
    let (_commands, commands_rx) = mpsc::channel(8);
    tokio::spawn(reconciler.run(events_rx, commands_rx));
    events
        .send(SourceEvent::Update(ClusterUpdate::Snapshot(vec![web(1)])))
        .await
        .unwrap();
    for n in 2..=20 {
        let update = ClusterUpdate::AppUpserted(web(n));
        events.send(SourceEvent::Update(update)).await.unwrap();
    }
    let name = hickory_proto::rr::LowerName::from(
        hickory_proto::rr::Name::from_ascii("_web._tcp.marathon.mesos.").unwrap(),
    );
    let records = || {
        store
            .load()
            .dns
            .as_ref()
            .and_then(|z| z.names.get(&name).map(|n| n.srv.len()))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline
        && store
            .load()
            .table
            .services
            .first()
            .map(|s| s.backends.len())
            != Some(20)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every task has its SRV record (one per task port) once the last zone is in.
    while std::time::Instant::now() < deadline && records() != Some(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(records(), Some(20), "the zone follows the last change");
    assert!(
        status.ready.load(Ordering::Relaxed),
        "ready once its zone answers"
    );
}

/// A swap's record (backends added and removed, routes changed) as the whole-table sets it was
/// computed from before it walked the two tables side by side.
#[test]
fn a_swaps_record_is_what_the_whole_table_sets_give() {
    use crate::routing::{CompileConfig, compile};
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    let cluster = |apps: Vec<crate::cluster::App>| {
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(apps));
        c
    };
    let tasks = |id: &str, ports: &[u16]| {
        ports
            .iter()
            .map(|&p| task(&format!("{id}.{p}"), p))
            .collect::<Vec<_>>()
    };
    let group = [("HAPROXY_DEPLOYMENT_GROUP", "shop")];
    let before = cluster(vec![
        app("/a", 10001, &[], tasks("a", &[1, 2, 3])),
        app("/b", 10002, &[], tasks("b", &[4])),
        app("/gone", 10003, &[], tasks("gone", &[5, 6])),
        app("/blue", 10005, &group, tasks("blue", &[7])),
    ]);
    let after = cluster(vec![
        app("/a", 10001, &[], tasks("a", &[2, 3, 8])),
        app("/b", 10002, &[], tasks("b", &[4])),
        app("/new", 10004, &[], tasks("new", &[9])),
        app("/blue", 10005, &group, tasks("blue", &[7])),
        app("/green", 10005, &group, tasks("green", &[10])),
    ]);
    let (t0, t1) = (compile(&before, &config), compile(&after, &config));
    let reference = |a: &RoutingTable, b: &RoutingTable| {
        let (x, y) = (backend_ids(a), backend_ids(b));
        let fmt = |(s, addr): &(String, SocketAddr)| format!("{s}@{addr}");
        let added: Vec<String> = y.difference(&x).map(fmt).collect();
        let removed: Vec<String> = x.difference(&y).map(fmt).collect();
        let (p, q) = (a.route_weights(), b.route_weights());
        let mut routes = Vec::new();
        for (name, members) in &q {
            match p.get(name) {
                None => routes.push(format!("+{name}")),
                Some(old) if old != members => routes.push(name.clone()),
                Some(_) => {}
            }
        }
        routes.extend(
            p.keys()
                .filter(|n| !q.contains_key(*n))
                .map(|n| format!("-{n}")),
        );
        (added, removed, routes)
    };
    for (a, b) in [
        (&t0, &t1),
        (&t1, &t0),
        (&t0, &t0),
        (&RoutingTable::default(), &t1),
    ] {
        let (added, removed) = diff(a, b);
        let (want_added, want_removed, want_routes) = reference(a, b);
        let listed = |all: Vec<String>| changes::Listed {
            count: all.len(),
            first: all.into_iter().take(changes::KEPT).collect(),
        };
        assert_eq!(
            (&added, &removed),
            (&listed(want_added), &listed(want_removed))
        );
        assert_eq!(route_changes(a, b), want_routes);
    }
    let (added, removed) = diff(&t0, &t1);
    assert_eq!(added.count, 3, "{added:?}");
    assert_eq!(removed.count, 3, "{removed:?}");
}

/// A swap's record keeps the first `KEPT` backend ids in the order of their names, however the
/// walk meets them, and counts them all: ids offered in a shuffled order give the sorted list's
/// head.
#[test]
fn a_long_list_keeps_its_first_ids_in_order_and_counts_them_all() {
    let mut ids: Vec<(String, SocketAddr)> = (0..300u16)
        .map(|i| {
            (
                format!("/app-{}:0", i % 37),
                SocketAddr::from(([10, 0, 0, 1], 1000 + i)),
            )
        })
        .collect();
    fastrand::seed(7);
    fastrand::shuffle(&mut ids);
    let mut capped = changes::Capped::default();
    for (key, addr) in &ids {
        capped.offer(key, *addr);
    }
    let listed = capped.finish();
    ids.sort();
    let want: Vec<String> = ids
        .iter()
        .take(changes::KEPT)
        .map(|(s, a)| format!("{s}@{a}"))
        .collect();
    assert_eq!(listed.count, 300);
    assert_eq!(listed.first, want);
}

/// What a patched compile changed, looked at in the services and routes it replaced alone, is
/// what looking at every service and route gives; and the backend count follows.
#[test]
fn a_patched_swaps_record_is_the_whole_tables() {
    use crate::routing::compile::{Cache, compile_changed};
    use crate::routing::{CompileConfig, compile};
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    let group = [("HAPROXY_DEPLOYMENT_GROUP", "shop")];
    let mut cluster = Cluster::default();
    cluster.apply(ClusterUpdate::Snapshot(vec![
        app("/a", 10001, &[], vec![task("a.1", 1), task("a.2", 2)]),
        app("/b", 10002, &[], vec![task("b.1", 3)]),
        app("/blue", 10005, &group, vec![task("blue.1", 4)]),
        app("/green", 10005, &group, vec![task("green.1", 5)]),
    ]));
    let mut cache = Cache::default();
    let mut before = compile_changed(&mut cache, &cluster, &config, None);
    let mut count = changes::backends(0, &RoutingTable::default(), &before, None);
    assert_eq!(count, 5);
    // Each a task event on one app: started, killed, a second one started (the route's
    // weights move), a task of another app.
    let events = [
        ("/a", task("a.3", 6), true),
        ("/a", task("a.1", 1), false),
        ("/green", task("green.2", 7), true),
        ("/b", task("b.1", 3), false),
    ];
    for (id, mut t, up) in events {
        if !up {
            t.state = crate::cluster::TaskState::Other("TASK_KILLED".into());
        }
        cluster.apply(ClusterUpdate::TaskStatus {
            app_id: id.into(),
            task: t,
        });
        let listed = BTreeSet::from([AppId::from(id)]);
        let after = compile_changed(&mut cache, &cluster, &config, Some(&listed));
        let patched = cache
            .patched
            .clone()
            .expect("a task event patches the table");
        let told = changes::of(&before, &after, Some(&patched));
        let whole = changes::of(&before, &after, None);
        assert_eq!(
            (
                &told.added,
                &told.removed,
                &told.routes,
                told.problems_changed
            ),
            (
                &whole.added,
                &whole.removed,
                &whole.routes,
                whole.problems_changed
            ),
            "{id}"
        );
        assert_eq!(told.added.count + told.removed.count, 1, "{id}");
        count = changes::backends(count, &before, &after, Some(&patched));
        assert_eq!(count, changes::backends(0, &before, &after, None));
        assert_eq!(after.hash(), compile(&cluster, &config).hash());
        before = after;
    }
    assert_eq!(count, 5);
}

/// Events through the reconciler, each naming the app it changes: the table live after each is
/// the one a compile from scratch of the same cluster gives, and the compile's audit never
/// found the list of changed apps incomplete (an event whose app the reconciler left out of
/// the list would be counted there).
#[tokio::test]
async fn events_compile_the_apps_they_name_into_the_full_compiles_table() {
    let (reconciler, store) = reconciler(Duration::ZERO, None);
    let (metrics, config) = (reconciler.metrics.clone(), reconciler.config.clone());
    let (events, events_rx) = mpsc::channel(64);
    let (_commands, commands_rx) = mpsc::channel(8);
    tokio::spawn(reconciler.run(events_rx, commands_rx));
    // With a Marathon health check: a task's health moves it in or out of the table.
    let healthy = |id: &str, port: u16| {
        let mut t = task(id, port);
        t.healthy = Some(true);
        t
    };
    let vhost = |i: usize| {
        let tasks = vec![healthy(&format!("a{i}.1"), 1)];
        let host = format!("a{i}.test");
        let mut a = app(
            &format!("/a{i:03}"),
            0,
            &[("HAPROXY_0_VHOST", &host)],
            tasks,
        );
        a.health_checks = 1;
        a
    };
    let mut killed = healthy("a3.2", 2);
    killed.state = crate::cluster::TaskState::Other("TASK_KILLED".into());
    let mut relabelled = vhost(7);
    relabelled
        .labels
        .insert("HAPROXY_0_VHOST".into(), "seven.test".into());
    let updates = vec![
        ClusterUpdate::Snapshot((0..100).map(vhost).collect()),
        ClusterUpdate::TaskStatus {
            app_id: "/a003".into(),
            task: healthy("a3.2", 2),
        },
        ClusterUpdate::TaskHealth {
            app_id: "/a003".into(),
            task_id: "a3.1".into(),
            alive: false,
        },
        ClusterUpdate::InstanceHealth {
            app_id: "/a004".into(),
            instance_id: "a4.1".into(),
            healthy: Some(false),
        },
        ClusterUpdate::AppUpserted(vhost(200)),
        ClusterUpdate::AppUpserted(relabelled),
        ClusterUpdate::AppRemoved {
            id: "/a005".into(),
            at_ms: 0,
        },
        ClusterUpdate::TaskStatus {
            app_id: "/a003".into(),
            task: killed,
        },
    ];
    let mut mirror = Cluster::default();
    for (k, update) in updates.into_iter().enumerate() {
        mirror.apply(update.clone());
        events.send(SourceEvent::Update(update)).await.unwrap();
        let generation = k as u64 + 1;
        until("the swap", || store.load().generation == generation).await;
        let want = compile(&mirror, &config);
        assert_eq!(store.load().table.hash(), want.hash(), "after update {k}");
        assert_eq!(metrics.compile_audit_failures.get(), 0, "after update {k}");
    }
    assert_eq!(metrics.compile_audit_failures.get(), 0);
}
