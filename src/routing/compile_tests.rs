//! `compile`'s tests: groups, ports and conflicts, backends, routes and deployment groups,
//! VIPs, determinism — no sockets. The labels it must honour or refuse: `compile_label_tests.rs`.
use super::*;
use crate::cluster::fixtures::{app, task};
use crate::cluster::{ClusterUpdate, TaskState};

fn config(group: &str) -> CompileConfig {
    CompileConfig {
        reserved: vec!["127.0.0.1:9090".parse().unwrap()],
        ..CompileConfig::group(group, "127.0.0.1".parse().unwrap())
    }
}

fn cluster(apps: Vec<App>) -> Cluster {
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(apps));
    c
}

/// A backend fits one cache line (a full compile at 50,000 apps writes 500,000 of them).
#[test]
fn a_backend_is_one_cache_line() {
    assert_eq!(std::mem::size_of::<Backend>(), 64);
}

#[test]
fn groups_select_apps() {
    let c = cluster(vec![
        app(
            "/ext",
            10000,
            &[("HAPROXY_GROUP", "external")],
            vec![task("e.1", 1)],
        ),
        app(
            "/int",
            10001,
            &[("HAPROXY_GROUP", "internal")],
            vec![task("i.1", 1)],
        ),
        app("/none", 10002, &[], vec![task("n.1", 1)]),
    ]);
    let ports = |t: RoutingTable| {
        t.services
            .iter()
            .map(|s| s.listen.unwrap().port())
            .collect::<Vec<_>>()
    };
    assert_eq!(ports(compile(&c, &config("external"))), vec![10000]);
    assert_eq!(ports(compile(&c, &config("*"))), vec![10000, 10001, 10002]);
    let mut ungrouped = config("external");
    ungrouped.serve_ungrouped = true;
    assert_eq!(ports(compile(&c, &ungrouped)), vec![10000, 10002]);
}

#[test]
fn ports_without_edge_labels_share_one_default_edge() {
    let http = [("HAPROXY_0_MODE", "http")];
    let limited = [
        ("HAPROXY_0_MODE", "http"),
        ("SWITCHYARD_0_RATE_LIMIT", "10/s"),
    ];
    let c = cluster(vec![
        app("/a", 10000, &http, vec![task("a.1", 1)]),
        app("/b", 10001, &[], vec![task("b.1", 2)]),
        app("/c", 10002, &limited, vec![task("c.1", 3)]),
    ]);
    let t = compile(&c, &config("*"));
    let edge = |i: usize| &t.services[i].edge;
    assert!(std::sync::Arc::ptr_eq(edge(0), edge(1)));
    assert_eq!(**edge(0), super::super::edge::Edge::default());
    assert!(edge(2).rate.is_some());
    assert!(!std::sync::Arc::ptr_eq(edge(0), edge(2)));
}

#[test]
fn only_routable_tasks_become_backends() {
    let mut killing = task("a.2", 2);
    killing.state = TaskState::Killing;
    let mut staging = task("a.3", 3);
    staging.state = TaskState::Staging;
    let c = cluster(vec![app(
        "/a",
        10000,
        &[],
        vec![task("a.1", 1), killing, staging],
    )]);
    let t = compile(&c, &config("*"));
    let addrs: Vec<_> = t.services[0]
        .backends
        .iter()
        .map(|b| b.addr.port())
        .collect();
    assert_eq!(addrs, vec![1]);
}

#[test]
fn port_conflicts_resolve_by_app_id_and_are_reported() {
    let c = cluster(vec![
        app("/b", 10000, &[], vec![task("b.1", 2)]),
        app("/a", 10000, &[], vec![task("a.1", 1)]),
        app("/c", 9090, &[], vec![task("c.1", 3)]),
    ]);
    let t = compile(&c, &config("*"));
    assert_eq!(t.services.len(), 1);
    assert_eq!(&*t.services[0].key.app_id, "/a");
    let reasons: Vec<_> = t.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("/b") && r.contains("taken by /a:0"))
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("/c") && r.contains("switchyard's own"))
    );
}

#[test]
fn bad_labels_skip_only_that_port() {
    let mut two = app(
        "/two",
        10000,
        &[("HAPROXY_0_MODE", "banana")],
        vec![task("t.1", 1)],
    );
    two.ports.push(crate::cluster::PortSpec {
        service_port: 10001,
        ..Default::default()
    });
    two.tasks.get_mut("t.1").unwrap().ports.push(2);
    let c = cluster(vec![two, app("/ok", 10002, &[], vec![task("o.1", 5)])]);
    let t = compile(&c, &config("*"));
    let mut ports: Vec<_> = t
        .services
        .iter()
        .map(|s| s.listen.unwrap().port())
        .collect();
    ports.sort();
    assert_eq!(ports, vec![10001, 10002]);
    assert!(
        t.problems
            .iter()
            .any(|p| p.port_index == Some(0) && p.reason.contains("MODE"))
    );
}

#[test]
fn an_unsupported_balance_falls_back_to_round_robin_with_a_problem() {
    let c = cluster(vec![app(
        "/hdr",
        10000,
        &[
            ("HAPROXY_0_MODE", "http"),
            ("HAPROXY_0_BALANCE", "hdr(host)"),
        ],
        vec![task("h.1", 1), task("h.2", 2)],
    )]);
    let t = compile(&c, &config("*"));
    assert_eq!(t.services.len(), 1, "the port stays in service");
    assert_eq!(
        t.services[0].balancer.kind(),
        crate::routing::Balance::RoundRobin
    );
    assert_eq!(t.services[0].backends.len(), 2);
    let problem = t
        .problems
        .iter()
        .find(|p| p.reason.contains("BALANCE"))
        .expect("a problem for the balance label");
    assert_eq!(&*problem.app_id, "/hdr");
    assert_eq!(problem.port_index, Some(0));
    assert_eq!(problem.severity, Severity::Ignored);
    assert!(problem.reason.contains("hdr(host)"), "{problem}");
    assert!(problem.reason.contains("roundrobin"), "{problem}");
}

#[test]
fn port_and_bind_labels_and_strict_mode() {
    let labels = [
        ("HAPROXY_0_PORT", "12000"),
        ("HAPROXY_0_BIND_ADDR", "127.0.0.3"),
    ];
    let c = cluster(vec![
        app("/a", 10000, &labels, vec![task("a.1", 1)]),
        app(
            "/b",
            10001,
            &[("HAPROXY_0_ENABLED", "true")],
            vec![task("b.1", 1)],
        ),
    ]);
    let t = compile(&c, &config("*"));
    assert_eq!(
        t.services[0].listen,
        Some("127.0.0.3:12000".parse().unwrap())
    );
    assert_eq!(
        t.services[1].listen,
        Some("127.0.0.1:10001".parse().unwrap())
    );
    let mut strict = config("*");
    strict.strict_mode = true;
    let t = compile(&c, &strict);
    assert_eq!(t.services.len(), 1);
    assert_eq!(&*t.services[0].key.app_id, "/b");
}

#[test]
fn container_networking_uses_task_ip_and_container_port() {
    let mut a = app("/c", 10000, &[], vec![task("c.1", 31000)]);
    a.networking = Networking::Container;
    a.ports[0].container_port = Some(8080);
    a.tasks.get_mut("c.1").unwrap().ip_addresses = vec!["9.0.0.7".parse().unwrap()].into();
    let t = compile(&cluster(vec![a]), &config("*"));
    assert_eq!(
        t.services[0].backends[0].addr,
        "9.0.0.7:8080".parse().unwrap()
    );
}

#[test]
fn unresolved_agents_are_reported_and_resolved_ones_used() {
    let mut t1 = task("a.1", 31000);
    t1.host = "agent-1".into();
    let mut c = cluster(vec![app("/a", 10000, &[], vec![t1])]);
    let t = compile(&c, &config("*"));
    assert!(t.services[0].backends.is_empty());
    assert!(t.problems[0].reason.contains("not resolved"));
    c.agents
        .insert("agent-1".into(), "10.1.1.1".parse().unwrap());
    let t = compile(&c, &config("*"));
    assert_eq!(
        t.services[0].backends[0].addr,
        "10.1.1.1:31000".parse().unwrap()
    );
}

#[test]
fn apps_sharing_a_vhost_form_one_route_and_ports_are_not_shared_across_groups() {
    let c = cluster(vec![
        app(
            "/shop",
            10000,
            &[("HAPROXY_0_VHOST", "shop.example.com")],
            vec![task("s.1", 1)],
        ),
        app(
            "/api",
            10001,
            &[
                ("HAPROXY_0_VHOST", "shop.example.com"),
                ("HAPROXY_0_PATH", "/api"),
            ],
            vec![task("a.1", 2)],
        ),
        app(
            "/copy",
            10000,
            &[("HAPROXY_0_VHOST", "shop.example.com")],
            vec![task("c.1", 3)],
        ),
    ]);
    let mut config = config("*");
    config.default_app = Some("/api".into());
    let t = compile(&c, &config);
    let apps = |r: usize| {
        t.routes[r]
            .members
            .iter()
            .map(|m| m.app_id.to_string())
            .collect::<Vec<_>>()
    };
    let root = t.vhosts.route("shop.example.com", "/").unwrap();
    assert_eq!(apps(root), vec!["/copy", "/shop"]);
    assert_eq!(t.routes[root].name, "shop.example.com");
    assert_eq!(
        apps(t.vhosts.route("shop.example.com", "/api/x").unwrap()),
        vec!["/api"]
    );
    assert_eq!(&*t.services[t.default_service.unwrap()].key.app_id, "/api");
    // Without a shared deployment group, the service port stays with the first app.
    let shop = t
        .services
        .iter()
        .find(|s| &*s.key.app_id == "/shop")
        .unwrap();
    assert_eq!(shop.listen, None, "its service port went to /copy");
    assert!(
        t.problems
            .iter()
            .any(|p| &*p.app_id == "/shop" && p.reason.contains("taken by /copy:0"))
    );
}

#[test]
fn a_deployment_group_shares_its_port_and_splits_by_weight() {
    let blue = [
        ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
        ("HAPROXY_DEPLOYMENT_COLOUR", "blue"),
        ("SWITCHYARD_0_WEIGHT", "90"),
    ];
    let green = [
        ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
        ("HAPROXY_DEPLOYMENT_COLOUR", "green"),
        ("HAPROXY_DEPLOYMENT_ALT_PORT", "10100"),
        ("SWITCHYARD_0_WEIGHT", "10"),
        ("SWITCHYARD_0_CANARY_HEADER", "X-Canary: on"),
    ];
    let c = cluster(vec![
        app(
            "/shop-blue",
            10000,
            &blue,
            vec![task("b.1", 1), task("b.2", 2), task("b.3", 3)],
        ),
        app("/shop-green", 10000, &green, vec![task("g.1", 4)]),
    ]);
    let mut config = config("*");
    let t = compile(&c, &config);
    assert!(
        t.problems.iter().all(|p| !p.reason.contains("taken")),
        "{:?}",
        t.problems
    );
    let route = t.route_at("127.0.0.1:10000".parse().unwrap()).unwrap();
    assert_eq!(route.name, "shop");
    let alt = t.route_at("127.0.0.1:10100".parse().unwrap()).unwrap();
    assert_eq!(alt.name, "shop", "the alternate port serves the same route");
    let picks: Vec<usize> = (0..1000)
        .map(|_| route.pick(None, &t.services).unwrap())
        .collect();
    let green_idx = t
        .services
        .iter()
        .position(|s| &*s.key.app_id == "/shop-green")
        .unwrap();
    let to_green = picks.iter().filter(|&&s| s == green_idx).count();
    assert!((99..=101).contains(&to_green), "90/10 is exact: {to_green}");
    let mut canary = http::HeaderMap::new();
    canary.insert("x-canary", "on".parse().unwrap());
    assert_eq!(route.pick(Some(&canary), &t.services), Some(green_idx));
    // A runtime override replaces the labels' weights.
    config.weight_overrides.insert(
        "shop".into(),
        [("/shop-blue".into(), 0), ("/shop-green".into(), 1)].into(),
    );
    let t = compile(&c, &config);
    let route = t.route_at("127.0.0.1:10000".parse().unwrap()).unwrap();
    assert!(route.overridden);
    assert!((0..10).all(|_| route.pick(None, &t.services) == Some(green_idx)));
}

fn vip_config() -> CompileConfig {
    let mut c = config("external");
    c.vip = Some(VipSettings {
        range: vip::VipRange::parse("11.0.0.0/8").unwrap(),
        balance: crate::routing::Balance::Maglev,
        balance_by_name: Default::default(),
    });
    c
}

fn with_vip(mut app: App, label: &str) -> App {
    app.ports[0].labels.insert("VIP_0".into(), label.into());
    app
}

#[test]
fn two_instances_pick_the_same_backend_for_the_same_flow() {
    let tasks = |p: u16| (0..8).map(|i| task(&format!("t{p}.{i}"), p + i)).collect();
    let apps = vec![
        with_vip(app("/a", 0, &[], tasks(31000)), "/web:80"),
        with_vip(app("/b", 0, &[], tasks(32000)), "web:80"),
    ];
    let mut reversed = apps.clone();
    reversed.reverse();
    let (one, two) = (
        compile(&cluster(apps), &vip_config()),
        compile(&cluster(reversed), &vip_config()),
    );
    let pick = |t: &RoutingTable, flow: crate::routing::balance::Flow| {
        let s = t
            .services
            .iter()
            .find(|s| &*s.key.app_id == "vip:web")
            .unwrap();
        s.backends[s
            .balancer
            .candidates(flow, |_| Default::default())
            .next()
            .unwrap()]
        .addr
    };
    let web = one
        .services
        .iter()
        .find(|s| &*s.key.app_id == "vip:web")
        .unwrap();
    assert_eq!(web.backends.len(), 16, "the union of both apps");
    assert!(web.listen.unwrap().ip().to_string().starts_with("11."));
    for port in 0..1000u16 {
        let flow = crate::routing::balance::Flow {
            client: SocketAddr::from(([10, 0, (port / 250) as u8, 1], 40000 + port)),
            local: web.listen.unwrap(),
        };
        assert_eq!(pick(&one, flow), pick(&two, flow));
    }
}

#[test]
fn malformed_vip_labels_are_reported_and_the_rest_served() {
    let c = cluster(vec![
        with_vip(app("/bad", 0, &[], vec![task("b.1", 1)]), "web"),
        with_vip(app("/good", 0, &[], vec![task("g.1", 2)]), "/good:81"),
    ]);
    let t = compile(&c, &vip_config());
    assert!(
        t.problems
            .iter()
            .any(|p| &*p.app_id == "/bad" && p.reason.contains("VIP_0"))
    );
    assert!(t.services.iter().any(|s| &*s.key.app_id == "vip:good"));
}

#[test]
fn an_app_without_backends_gives_its_share_away() {
    let g = [
        ("HAPROXY_DEPLOYMENT_GROUP", "g"),
        ("SWITCHYARD_0_WEIGHT", "50"),
    ];
    let c = cluster(vec![
        app("/a", 10000, &g, vec![task("a.1", 1)]),
        app("/b", 10000, &g, vec![]),
    ]);
    let t = compile(&c, &config("*"));
    let route = t.route_at("127.0.0.1:10000".parse().unwrap()).unwrap();
    let a = t
        .services
        .iter()
        .position(|s| &*s.key.app_id == "/a")
        .unwrap();
    assert!((0..10).all(|_| route.pick(None, &t.services) == Some(a)));
    let c = cluster(vec![app("/b", 10000, &g, vec![])]);
    let t = compile(&c, &config("*"));
    assert_eq!(
        t.route_at("127.0.0.1:10000".parse().unwrap())
            .unwrap()
            .pick(None, &t.services),
        None
    );
}

#[test]
fn compile_is_deterministic() {
    let apps: Vec<App> = (0..50)
        .map(|i| {
            app(
                &format!("/app{i}"),
                10000 + (i % 7),
                &[],
                vec![task("t", i)],
            )
        })
        .collect();
    let mut reversed = apps.clone();
    reversed.reverse();
    let a = compile(&cluster(apps), &config("*"));
    let b = compile(&cluster(reversed), &config("*"));
    let keys = |t: &RoutingTable| t.services.iter().map(|s| s.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b));
    assert_eq!(a.problems, b.problems);
}

#[path = "compile_label_tests.rs"]
mod labels;
