//! `compile` against marathon-lb's own rules (marathon_lb.py, config.py, utils.py at
//! mesosphere/marathon-lb 9e669ec): each test quotes the lines it holds switchyard to.
use super::*;
use crate::cluster::fixtures::{app, task};
use crate::cluster::{CheckSpec, ClusterUpdate, PortSpec};

fn config() -> CompileConfig {
    CompileConfig::group("*", "127.0.0.1".parse().unwrap())
}

fn cluster(apps: Vec<App>) -> Cluster {
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(apps));
    c
}

fn check(protocol: &str, port_index: usize) -> CheckSpec {
    CheckSpec {
        protocol: protocol.into(),
        port_index,
        has_port: false,
    }
}

/// An app with `ports` service ports (10000, 10001, …) and one task on 1, 2, …
fn app_with(labels: &[(&str, &str)], ports: usize, checks: Vec<CheckSpec>) -> App {
    let mut a = app("/a", 10000, labels, vec![task("a.1", 1)]);
    for i in 1..ports {
        a.ports.push(PortSpec {
            service_port: 10000 + i as u16,
            ..PortSpec::default()
        });
        a.tasks.get_mut("a.1").unwrap().ports.push(1 + i as u16);
    }
    a.checks = checks;
    a
}

fn mode_of(a: App, n: usize) -> Mode {
    let t = compile(&cluster(vec![a]), &config());
    t.services
        .iter()
        .find(|s| s.key.port_index == n)
        .unwrap_or_else(|| panic!("port {n} served: {:?}", t.problems))
        .mode
}

#[test]
fn mode_is_the_label_else_http_for_a_vhost_else_tcp() {
    // marathon_lb.py, config(): "# If app has HAPROXY_{n}_MODE set, use that setting.
    // # Otherwise use 'http' if HAPROXY_{N}_VHOST is set, and 'tcp' if not.
    //     if app.mode is None:
    //         if app.hostname:
    //             app.mode = 'http'
    //         else:
    //             app.mode = 'tcp'"
    let vhost = [("HAPROXY_0_VHOST", "a.example.com")];
    assert_eq!(mode_of(app_with(&vhost, 1, vec![]), 0), Mode::Http);
    assert_eq!(mode_of(app_with(&[], 1, vec![]), 0), Mode::Tcp);
    // config.py, set_mode: "x.mode = v.lower()"
    let tcp = [
        ("HAPROXY_0_VHOST", "a.example.com"),
        ("HAPROXY_0_MODE", "TCP"),
    ];
    assert_eq!(mode_of(app_with(&tcp, 1, vec![]), 0), Mode::Tcp);
    let http = [("HAPROXY_0_MODE", "Http")];
    assert_eq!(mode_of(app_with(&http, 1, vec![]), 0), Mode::Http);
    // The vhost is per port: port 1 without one stays tcp.
    let a = app_with(&vhost, 2, vec![]);
    assert_eq!(mode_of(a.clone(), 0), Mode::Http);
    assert_eq!(mode_of(a, 1), Mode::Tcp);
}

#[test]
fn an_http_health_check_for_the_port_makes_it_http() {
    // marathon_lb.py, MarathonService.__init__: "if healthCheck:
    //     if healthCheck['protocol'] == 'HTTP':
    //         self.mode = 'http'"
    // with the check found by get_health_check(app, i): "for check in app['healthChecks']:
    //     if check.get('port'): return check
    //     if check.get('portIndex') == portIndex: return check"
    assert_eq!(
        mode_of(app_with(&[], 1, vec![check("HTTP", 0)]), 0),
        Mode::Http
    );
    // Only 'HTTP' there: a MESOS_HTTP or HTTPS check of the port itself leaves tcp.
    for protocol in ["MESOS_HTTP", "HTTPS", "TCP", "COMMAND"] {
        assert_eq!(
            mode_of(app_with(&[], 1, vec![check(protocol, 0)]), 0),
            Mode::Tcp,
            "{protocol}"
        );
    }
    // The check of another port does not count ...
    let a = app_with(&[], 2, vec![check("HTTP", 1)]);
    assert_eq!(mode_of(a.clone(), 0), Mode::Tcp);
    assert_eq!(mode_of(a, 1), Mode::Http);
    // ... but one naming a port number is every port's check (`if check.get('port')`).
    let by_number = CheckSpec {
        has_port: true,
        ..check("HTTP", 0)
    };
    assert_eq!(mode_of(app_with(&[], 2, vec![by_number]), 1), Mode::Http);
    // The label is applied after the constructor (`func(service, key_unformatted, ...)`), so
    // HAPROXY_{n}_MODE=tcp wins over the port's HTTP check.
    let tcp = [("HAPROXY_0_MODE", "tcp")];
    assert_eq!(
        mode_of(app_with(&tcp, 1, vec![check("HTTP", 0)]), 0),
        Mode::Tcp
    );
}

#[test]
fn the_healthcheck_port_index_lends_its_checks_protocol_to_the_mode() {
    // marathon_lb.py, get_apps(): "if service.healthCheck is None \
    //         and service.healthcheck_port_index is not None:
    //     service.healthCheck = get_health_check(app, service.healthcheck_port_index)
    //     if service.healthCheck:
    //         healthProto = service.healthCheck['protocol']
    //         if healthProto in ['HTTP', 'HTTPS', 'MESOS_HTTP', 'MESOS_HTTPS']:
    //             service.mode = 'http'"
    let index = [("HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX", "1")];
    for protocol in ["HTTP", "HTTPS", "MESOS_HTTP", "MESOS_HTTPS"] {
        let a = app_with(&index, 2, vec![check(protocol, 1)]);
        assert_eq!(mode_of(a, 0), Mode::Http, "{protocol}");
    }
    let a = app_with(&index, 2, vec![check("TCP", 1)]);
    assert_eq!(mode_of(a, 0), Mode::Tcp);
    // Only when the port has no check of its own.
    let a = app_with(&index, 2, vec![check("TCP", 0), check("HTTP", 1)]);
    assert_eq!(mode_of(a, 0), Mode::Tcp);
    // Switchyard differs on one point: marathon_lb.py sets `service.mode = 'http'` here after
    // the labels were applied, overriding an explicit HAPROXY_{n}_MODE=tcp; switchyard keeps
    // the label (the issue's rule: "HAPROXY_{n}_MODE if set").
    let explicit = [
        ("HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX", "1"),
        ("HAPROXY_0_MODE", "tcp"),
    ];
    assert_eq!(
        mode_of(app_with(&explicit, 2, vec![check("HTTP", 1)]), 0),
        Mode::Tcp
    );
}

#[test]
fn a_vhost_app_with_auth_and_no_mode_is_served_with_auth_on_its_port_and_vhost() {
    use crate::routing::auth::test_vectors::SHA512;
    // The VHOST makes the port http (above), so HAPROXY_0_AUTH can be honoured on both.
    let auth = format!("r:alice:{SHA512}");
    let a = app_with(
        &[
            ("HAPROXY_0_VHOST", "a.example.com"),
            ("HAPROXY_0_AUTH", &auth),
        ],
        1,
        vec![],
    );
    let t = compile(&cluster(vec![a]), &config());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let s = &t.services[0];
    assert_eq!(s.mode, Mode::Http);
    assert!(s.listen.is_some(), "its service port is served");
    assert!(s.http.auth.is_some());
    assert!(t.vhosts.route("a.example.com", "/").is_some());
}

fn vhost_app(id: &str, labels: &[(&str, &str)]) -> App {
    app(id, 0, labels, vec![task(&format!("{id}.1"), 1)])
}

/// The app a vhost request goes to.
fn routed(t: &RoutingTable, host: &str, path: &str) -> Option<String> {
    let route = t.vhosts.route(host, path)?;
    let services: Vec<usize> = t.routes[route].members.iter().map(|m| m.service).collect();
    Some(
        services
            .iter()
            .map(|&s| t.services[s].key.app_id.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )
}

#[test]
fn a_path_with_dash_i_matches_without_case() {
    // config.py, PATH: "The HTTP path to match, starting at the beginning. To specify multiple
    // paths, pass a space separated list. The syntax matches that of the `path_beg` config
    // option in HAProxy. ... Ex: `HAPROXY_0_PATH = '-i /multiple /paths'`"
    let c = cluster(vec![
        vhost_app(
            "/multi",
            &[
                ("HAPROXY_0_VHOST", "a.example.com"),
                ("HAPROXY_0_PATH", "-i /multiple /paths"),
            ],
        ),
        vhost_app(
            "/exact",
            &[
                ("HAPROXY_0_VHOST", "b.example.com"),
                ("HAPROXY_0_PATH", "/Exact"),
            ],
        ),
    ]);
    let t = compile(&c, &config());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    for path in ["/multiple", "/MULTIPLE/x", "/Paths", "/pathsX"] {
        assert_eq!(
            routed(&t, "a.example.com", path).as_deref(),
            Some("/multi"),
            "{path}"
        );
    }
    assert_eq!(
        routed(&t, "a.example.com", "/-i"),
        None,
        "-i is a flag, not a path"
    );
    assert_eq!(routed(&t, "a.example.com", "/other"), None);
    assert_eq!(
        routed(&t, "b.example.com", "/Exact/1").as_deref(),
        Some("/exact")
    );
    assert_eq!(
        routed(&t, "b.example.com", "/exact"),
        None,
        "no -i: case counts"
    );
    // Other ACL flags would change what matches: the port is not served.
    let c = cluster(vec![vhost_app(
        "/re",
        &[
            ("HAPROXY_0_VHOST", "a.example.com"),
            ("HAPROXY_0_PATH", "-m reg ^/a"),
        ],
    )]);
    let t = compile(&c, &config());
    assert!(t.services.is_empty());
    assert!(
        t.problems
            .iter()
            .any(|p| p.reason.contains("HAPROXY_0_PATH"))
    );
}

#[test]
fn backend_weight_orders_the_vhost_rules() {
    // config.py, BACKEND_WEIGHT: "Some ACLs may be affected by order. For example, if you're
    // using VHost and path ACLs that are shared amongst backends, the ordering of the ACLs will
    // matter. With HAPROXY_{n}_BACKEND_WEIGHT you can change the ordering by specifying a
    // weight. Backends are sorted from largest to smallest weight.
    // By default, any backends which use `HAPROXY_{n}_PATH` will have a weight of 1, if the
    // default weight is used (which is 0)."
    // marathon_lb.py: "http_frontend_list.sort(key=lambda x: x[0], reverse=True)"
    let host = ("HAPROXY_0_VHOST", "a.example.com");
    let c = cluster(vec![
        vhost_app("/root", &[host]),
        vhost_app("/api", &[host, ("HAPROXY_0_PATH", "/api")]),
    ]);
    let t = compile(&c, &config());
    // Defaults: the path rule (weight 1) before the host-only rule (weight 0).
    assert_eq!(
        routed(&t, "a.example.com", "/api/x").as_deref(),
        Some("/api")
    );
    assert_eq!(
        routed(&t, "a.example.com", "/web").as_deref(),
        Some("/root")
    );
    // A heavier host-only rule is tried first and takes every path.
    let c = cluster(vec![
        vhost_app("/root", &[host, ("HAPROXY_0_BACKEND_WEIGHT", "5")]),
        vhost_app("/api", &[host, ("HAPROXY_0_PATH", "/api")]),
    ]);
    let t = compile(&c, &config());
    assert_eq!(
        routed(&t, "a.example.com", "/api/x").as_deref(),
        Some("/root")
    );
    // Two apps with the same host and path: the heavier takes it (switchyard splits equal ones
    // between them, where HAProxy would take the first in its configuration).
    let c = cluster(vec![
        vhost_app("/old", &[host]),
        vhost_app("/new", &[host, ("HAPROXY_0_BACKEND_WEIGHT", "2")]),
        vhost_app("/same", &[host, ("HAPROXY_0_BACKEND_WEIGHT", "0")]),
    ]);
    let t = compile(&c, &config());
    assert_eq!(routed(&t, "a.example.com", "/").as_deref(), Some("/new"));
    // Weights may be negative (`int(v)`); a non-number does not parse.
    let c = cluster(vec![
        vhost_app(
            "/last",
            &[
                host,
                ("HAPROXY_0_PATH", "/a"),
                ("HAPROXY_0_BACKEND_WEIGHT", "-1"),
            ],
        ),
        vhost_app("/first", &[host]),
        vhost_app(
            "/bad",
            &[
                ("HAPROXY_0_VHOST", "b.example.com"),
                ("HAPROXY_0_BACKEND_WEIGHT", "x"),
            ],
        ),
    ]);
    let t = compile(&c, &config());
    assert_eq!(routed(&t, "a.example.com", "/a").as_deref(), Some("/first"));
    assert!(
        t.problems
            .iter()
            .any(|p| &*p.app_id == "/bad" && p.reason.contains("BACKEND_WEIGHT"))
    );
}

#[test]
fn the_healthcheck_port_index_probes_the_other_port_with_its_check() {
    use crate::cluster::{Probe, ProbeKind};
    use crate::routing::compile::HealthPolicy as Policy;
    use std::time::Duration;
    // config.py, BACKEND_HEALTHCHECK_PORT_INDEX: "Set the index of the port dedicated for the
    // healthchecks of the backends behind a given service port. By default, the index will be
    // the same as the one of the service port. ... HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX=1
    // will make it so that the port 9001 is used to perform the backend healthchecks."
    let mut a = app_with(
        &[("HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX", "1")],
        2,
        vec![check("HTTP", 1)],
    );
    a.probes = vec![Probe {
        kind: ProbeKind::Http {
            path: "/health".into(),
        },
        port_index: 1,
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(2),
        max_failures: 3,
        grace: Duration::ZERO,
        target: None,
    }];
    let mut config = config();
    config.health = Some(Policy {
        from_marathon: true,
        default: None,
    });
    let t = compile(&cluster(vec![a.clone()]), &config);
    let port0 = &t.services[0];
    assert_eq!(port0.key.port_index, 0);
    assert_eq!(port0.mode, Mode::Http, "the lent check is HTTP");
    let probe = port0.probe.as_ref().expect("probed with port 1's check");
    assert_eq!(probe.kind, a.probes[0].kind);
    // The task's ports are 1 (index 0) and 2 (index 1): traffic to 1, probes to 2.
    assert_eq!(port0.backends[0].addr.port(), 1);
    assert_eq!(
        port0.backends[0].probe_addr.as_deref().map(|a| a.port()),
        Some(2)
    );
    // Port 1 itself is probed as always, on its own address.
    assert_eq!(t.services[1].backends[0].probe_addr, None);
    assert!(t.services[1].probe.is_some());
    // An index the app does not have: the port's own check, and a problem.
    let a = app_with(
        &[("HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX", "7")],
        1,
        vec![],
    );
    let t = compile(&cluster(vec![a]), &config);
    assert_eq!(t.services[0].backends[0].probe_addr, None);
    assert!(t.problems.iter().any(|p| p.reason.contains("no port 7")));
}

#[test]
fn rewrite_labels_reach_the_service_with_its_hosts() {
    // config.py: "HTTP_BACKEND_PROXYPASS_PATH ... Ex: `HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH =
    // '/path/to/redirect'`", "HTTP_BACKEND_REVPROXY_PATH ... Ex:
    // `HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH = '/my/content'`", "HTTP_BACKEND_REDIR: Set the path
    // to redirect the root of the domain to Ex: HAPROXY_0_HTTP_BACKEND_REDIR = '/my/content'".
    // The templates use `{hostname}`, the app's vhost: the service carries its vhosts.
    let c = cluster(vec![vhost_app(
        "/r",
        &[
            ("HAPROXY_0_VHOST", "a.example.com,b.example.com"),
            ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH", "/path/to/redirect"),
            ("HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH", "/my/content"),
            ("HAPROXY_0_HTTP_BACKEND_REDIR", "/my/content"),
        ],
    )]);
    let t = compile(&c, &config());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
    let r = t.services[0].http.rewrite.as_ref().expect("rewrites");
    assert_eq!(r.proxy_path.as_deref(), Some("/path/to/redirect"));
    assert_eq!(r.revproxy_path.as_deref(), Some("/my/content"));
    assert_eq!(r.redirect_root.as_deref(), Some("/my/content"));
    assert_eq!(r.hosts, ["a.example.com", "b.example.com"]);
    let c = cluster(vec![vhost_app(
        "/bad",
        &[
            ("HAPROXY_0_VHOST", "a.example.com"),
            ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH", "/a b"),
        ],
    )]);
    let t = compile(&c, &config());
    assert!(t.services.is_empty());
    assert!(t.problems[0].reason.contains("PROXYPASS_PATH"));
    assert!(
        compile(&cluster(vec![vhost_app("/n", &[])]), &config())
            .services
            .is_empty()
    );
}

#[test]
fn ip_per_task_apps_without_service_ports_get_them_from_the_range() {
    // utils.py ServicePortAssigner: "assigning deterministic ports from a configurable range
    // when required ... The LB command line options --min-serv-port-ip-per-task and
    // --max-serv-port-ip-per-task specify the allowed range of ports to auto-assign from."
    let ip_app = |id: &str| {
        let mut a = app(id, 0, &[("HAPROXY_0_VHOST", "x.example.com")], vec![]);
        let mut t = task(&format!("{id}.1"), 0);
        t.ip_addresses = vec!["10.1.0.1".parse().unwrap()].into();
        a.tasks.insert(t);
        a.networking = crate::cluster::Networking::Container;
        a.assign_service_ports = true;
        a.ports[0].container_port = Some(8080);
        a
    };
    let apps: Vec<App> = ["/c", "/a", "/b"].into_iter().map(ip_app).collect();
    let t = compile(&cluster(apps.clone()), &config());
    let ports: Vec<u16> = t
        .services
        .iter()
        .map(|s| s.listen.unwrap().port())
        .collect();
    assert_eq!(ports.len(), 3, "{:?}", t.problems);
    assert!(
        ports.iter().all(|p| (10050..=10100).contains(p)),
        "{ports:?}"
    );
    assert_eq!(
        t.services[0].backends[0].addr,
        "10.1.0.1:8080".parse().unwrap()
    );
    // The same ports whatever order the apps come in.
    let mut reversed = apps;
    reversed.reverse();
    let again = compile(&cluster(reversed), &config());
    let again: Vec<u16> = again
        .services
        .iter()
        .map(|s| s.listen.unwrap().port())
        .collect();
    assert_eq!(ports, again);
    // HAPROXY_{n}_PORT still decides ("This overrides the servicePort").
    let mut labelled = ip_app("/p");
    labelled
        .labels
        .insert("HAPROXY_0_PORT".into(), "10200".into());
    let t = compile(&cluster(vec![labelled]), &config());
    assert_eq!(t.services[0].listen.unwrap().port(), 10200);
}

#[test]
fn an_instance_serves_several_groups() {
    // marathon_lb.py: `--group` with action="append"; has_group(groups, app_groups): "# Contains
    // matching groups  if (len(frozenset(app_groups) & groups)): return True".
    let grouped = |id: &str, port: u16, group: &str| {
        app(
            id,
            port,
            &[("HAPROXY_GROUP", group)],
            vec![task(&format!("{id}.1"), 1)],
        )
    };
    let c = cluster(vec![
        grouped("/ext", 10000, "external"),
        grouped("/int", 10001, "internal"),
        grouped("/other", 10002, "other"),
        grouped("/both", 10003, "other,internal"),
        app("/none", 10004, &[], vec![task("n.1", 1)]),
    ]);
    let mut config = config();
    config.group = vec!["external".into(), "internal".into()];
    let t = compile(&c, &config);
    let ids: Vec<&str> = t.services.iter().map(|s| &*s.key.app_id).collect();
    assert_eq!(ids, ["/both", "/ext", "/int"]);
    config.group.push("*".into());
    assert_eq!(
        compile(&c, &config).services.len(),
        5,
        "`*` among them: every app"
    );
}
