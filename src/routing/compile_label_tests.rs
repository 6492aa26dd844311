//! `compile`'s tests of the labels it must honour or refuse: an auth label protects its ports
//! and vhosts, a label it cannot honour (auth, access templates) takes the port out of service
//! with a problem, every HAProxy label not acted on is reported, UDP service ports, and the
//! edge labels reaching the service.
use super::*;

/// Whether anything serves `app_id`: a listener or a vhost route.
fn served(t: &RoutingTable, app_id: &str) -> bool {
    t.services.iter().any(|s| &*s.key.app_id == app_id)
}

fn skipped_because(t: &RoutingTable, app_id: &str, needle: &str) -> bool {
    t.problems.iter().any(|p| {
        &*p.app_id == app_id && p.severity == Severity::Skipped && p.reason.contains(needle)
    })
}

#[test]
fn auth_label_protects_http_ports_and_vhosts() {
    use crate::routing::auth::test_vectors::SHA512;
    // marathon-lb's Longhelp.md: "The http basic auth definition. ...
    // Ex: `HAPROXY_0_AUTH = realm:username:encryptedpassword`"
    let auth = format!("Staff only:alice:{SHA512}");
    let c = cluster(vec![
        app(
            "/port",
            10000,
            &[("HAPROXY_0_MODE", "http"), ("HAPROXY_0_AUTH", &auth)],
            vec![task("p.1", 1)],
        ),
        app(
            "/vhost",
            0,
            &[
                ("HAPROXY_0_MODE", "http"),
                ("HAPROXY_0_VHOST", "staff.example.com"),
                ("HAPROXY_0_AUTH", &auth),
            ],
            vec![task("v.1", 2)],
        ),
    ]);
    let t = compile(&c, &config("*"));
    assert_eq!(t.services.len(), 2, "{:?}", t.problems);
    for s in &t.services {
        let a = s.http.auth.as_ref().expect("auth kept");
        assert_eq!((a.realm.as_str(), a.user.as_str()), ("Staff only", "alice"));
    }
    assert!(t.problems.is_empty(), "{:?}", t.problems);
}

#[test]
fn an_auth_label_that_cannot_be_honoured_takes_the_port_out_of_service() {
    use crate::routing::auth::test_vectors::SHA512;
    // marathon-lb's config.py reads the label as `v.split(':')` into three fields; a hash HAProxy
    // could take (crypt(3)) but switchyard cannot verify is refused the same way: never open.
    let cases = [
        (
            "/fields",
            "HAPROXY_0_AUTH",
            "realm:alice".to_string(),
            "3 fields",
        ),
        (
            "/bcrypt",
            "HAPROXY_0_AUTH",
            "r:alice:$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".into(),
            "unsupported password hash algorithm",
        ),
        (
            "/plain",
            "HAPROXY_0_AUTH",
            "r:alice:secret".into(),
            "crypt(3)",
        ),
    ];
    for (id, key, value, why) in cases {
        for vhost in [false, true] {
            let mut labels = vec![("HAPROXY_0_MODE", "http"), (key, value.as_str())];
            if vhost {
                labels.push(("HAPROXY_0_VHOST", "staff.example.com"));
            }
            let c = cluster(vec![app(id, 10000, &labels, vec![task("a.1", 1)])]);
            let t = compile(&c, &config("*"));
            assert!(!served(&t, id), "{id} vhost={vhost}: not served at all");
            assert!(t.by_listen.is_empty() && t.vhosts.route("staff.example.com", "/").is_none());
            assert!(skipped_because(&t, id, why), "{id}: {:?}", t.problems);
            assert!(
                skipped_because(&t, id, "HAPROXY_0_AUTH"),
                "the problem names the label"
            );
        }
    }
    // A tcp-mode port (the default) cannot ask for credentials: not served, on its port or by
    // its vhost.
    let auth = format!("r:alice:{SHA512}");
    for labels in [
        vec![("HAPROXY_0_AUTH", auth.as_str())],
        vec![
            ("HAPROXY_0_AUTH", auth.as_str()),
            ("HAPROXY_0_MODE", "tcp"),
            ("HAPROXY_0_VHOST", "staff.example.com"),
        ],
    ] {
        let c = cluster(vec![app("/tcp", 10000, &labels, vec![task("a.1", 1)])]);
        let t = compile(&c, &config("*"));
        assert!(!served(&t, "/tcp"));
        assert!(skipped_because(&t, "/tcp", "MODE=http"), "{:?}", t.problems);
    }
}

#[test]
fn every_haproxy_label_not_acted_on_is_reported() {
    let c = cluster(vec![app(
        "/a",
        10000,
        &[
            ("HAPROXY_0_HTTP_BACKEND_PROXYPASS_GLUE", "/api"),
            ("HAPROXY_0_BIND_OPTIONS", "accept-proxy"),
            ("HAPROXY_0_BACKEND_HEAD", "backend x"),
            ("HAPROXY_0_SOMETHING_NEW", "1"),
            ("HAPROXY_3_VHOST", "a.example.com"),
            ("HAPROXY_DEPLOYMENT_NEW_INSTANCES", "2"),
            ("HAPROXY_GROUP", "*"),
            ("HAPROXY_DEPLOYMENT_COLOUR", "blue"),
        ],
        vec![task("a.1", 1)],
    )]);
    let t = compile(&c, &config("*"));
    assert!(served(&t, "/a"), "ignored labels do not stop the port");
    let mut ignored: Vec<String> = t
        .problems
        .iter()
        .filter(|p| &*p.app_id == "/a" && p.severity == Severity::Ignored)
        .map(|p| p.reason.split(':').next().unwrap().to_string())
        .collect();
    ignored.sort();
    assert_eq!(
        ignored,
        [
            "HAPROXY_0_BACKEND_HEAD",
            "HAPROXY_0_BIND_OPTIONS",
            "HAPROXY_0_HTTP_BACKEND_PROXYPASS_GLUE",
            "HAPROXY_0_SOMETHING_NEW",
            "HAPROXY_3_VHOST",
            "HAPROXY_DEPLOYMENT_NEW_INSTANCES",
        ]
    );
}

#[test]
fn access_templates_that_cannot_be_honoured_take_the_port_out_of_service() {
    // marathon-lb's Longhelp.md: `HAPROXY_HTTP_FRONTEND_ACL_WITH_AUTH` "The ACL that glues a
    // backend to the corresponding virtual host of the `HAPROXY_HTTP_FRONTEND_HEAD` thru HTTP
    // basic auth", and `HAPROXY_HTTP_BACKEND_NETWORK_ALLOWED_ACL`: "This option set the IPs (or IP
    // ranges) having access to the HTTP backend." Overriding them per app changes who gets in,
    // which switchyard cannot replicate.
    for key in [
        "HAPROXY_0_HTTP_FRONTEND_ACL_WITH_AUTH",
        "HAPROXY_0_HTTPS_FRONTEND_AUTH_REQUEST_ONLY",
        "HAPROXY_0_USERLIST_HEAD",
        "HAPROXY_0_HTTP_BACKEND_NETWORK_ALLOWED_ACL",
        "HAPROXY_0_TCP_BACKEND_NETWORK_ALLOWED_ACL",
    ] {
        let c = cluster(vec![app(
            "/a",
            10000,
            &[(key, "  acl x src 10.0.0.0/8\n")],
            vec![task("a.1", 1)],
        )]);
        let t = compile(&c, &config("*"));
        assert!(!served(&t, "/a"), "{key}");
        assert!(skipped_because(&t, "/a", key), "{key}: {:?}", t.problems);
    }
    // The network ACL itself, unparseable: not served (never open to everyone).
    let c = cluster(vec![app(
        "/a",
        10000,
        &[("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/33")],
        vec![task("a.1", 1)],
    )]);
    let t = compile(&c, &config("*"));
    assert!(!served(&t, "/a"));
    assert!(skipped_because(&t, "/a", "BACKEND_NETWORK_ALLOWED_ACL"));
}

/// `udp` ports get a UDP service on their service port and `udp,tcp` ports both; UDP ports are
/// claimed apart from TCP's, first app by id keeps a contested one, switchyard's own listeners
/// are reserved, and the served-group rules apply as to TCP.
#[test]
fn udp_service_ports_are_served_claimed_apart_and_reported_when_taken() {
    let udp = |id: &str, port: u16, protocol: Protocol, labels: &[(&str, &str)]| {
        let mut a = app(id, port, labels, vec![task(&format!("{id}.1"), 31000)]);
        a.ports[0].protocol = protocol;
        a
    };
    let c = cluster(vec![
        udp("/a-dns", 5353, Protocol::Udp, &[]),
        udp("/b-dns", 5353, Protocol::Udp, &[]),
        udp("/both", 6000, Protocol::TcpUdp, &[]),
        // A TCP port may share a number with another app's UDP port.
        app("/tcp", 5353, &[], vec![task("t.1", 31001)]),
        udp("/own", 9090, Protocol::Udp, &[]),
        udp(
            "/other",
            7000,
            Protocol::Udp,
            &[("HAPROXY_GROUP", "internal")],
        ),
    ]);
    let t = compile(&c, &config("*"));
    let modes: Vec<(String, Mode, u16)> = t
        .services
        .iter()
        .map(|s| (s.key.to_string(), s.mode, s.listen.map_or(0, |l| l.port())))
        .collect();
    assert!(
        modes.contains(&("udp:/a-dns:0".into(), Mode::Udp, 5353)),
        "{modes:?}"
    );
    assert!(modes.contains(&("udp:/both:0".into(), Mode::Udp, 6000)));
    assert!(modes.contains(&("/both:0".into(), Mode::Tcp, 6000)));
    assert!(modes.contains(&("/tcp:0".into(), Mode::Tcp, 5353)));
    assert!(
        !modes
            .iter()
            .any(|(k, _, _)| k.contains("b-dns") || k.contains("own"))
    );
    assert!(
        !modes.iter().any(|(k, _, _)| k == "/a-dns:0"),
        "no TCP side"
    );
    let udp_ports: BTreeMap<u16, String> = t
        .udp
        .iter()
        .map(|(l, &s)| (l.port(), t.services[s].key.to_string()))
        .collect();
    assert_eq!(udp_ports.len(), 3, "{udp_ports:?}");
    assert_eq!(udp_ports[&5353], "udp:/a-dns:0");
    let reasons: Vec<String> = t.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        reasons.iter().any(|r| r
            .starts_with("/b-dns port 0: UDP service port 5353 is already taken by udp:/a-dns:0")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(
            |r| r.contains("/own port 0: UDP service port 9090 collides with switchyard's own")
        ),
        "{reasons:?}"
    );
    // Served groups: an instance serving `external` leaves `/other` alone.
    let t = compile(&c, &config("external"));
    assert!(!t.udp.keys().any(|l| l.port() == 7000));
}

#[test]
fn edge_labels_reach_the_service_and_bad_ones_are_reported_by_kind() {
    let http = |id: &str, port: u16, extra: (&str, &str)| {
        app(
            id,
            port,
            &[("HAPROXY_0_MODE", "http"), extra],
            vec![task(&format!("{id}.1"), 1)],
        )
    };
    let c = cluster(vec![
        http("/limited", 10000, ("SWITCHYARD_0_RATE_LIMIT", "10/s")),
        // A limit that does not parse: served, without it, reported.
        http(
            "/typo",
            10001,
            ("SWITCHYARD_0_MAX_CONCURRENT_REQUESTS", "-1"),
        ),
        // A header rule on a framing field: not served.
        http(
            "/framing",
            10002,
            ("SWITCHYARD_0_RESPONSE_HEADER_REMOVE", "Content-Length"),
        ),
        // HTTP-only labels on a tcp port: reported as ignored; maintenance takes it out.
        app(
            "/tcp",
            10003,
            &[("SWITCHYARD_0_RATE_LIMIT", "10")],
            vec![task("t.1", 1)],
        ),
        app(
            "/tcpdown",
            10004,
            &[("SWITCHYARD_0_MAINTENANCE", "true")],
            vec![task("d.1", 1)],
        ),
    ]);
    let t = compile(&c, &config("*"));
    let served: Vec<&str> = t.services.iter().map(|s| &*s.key.app_id).collect();
    assert_eq!(served, ["/limited", "/tcp", "/typo"]);
    assert_eq!(t.services[0].edge.rate.as_ref().unwrap().burst, 10);
    assert!(!t.services[2].edge.limited());
    let problem = |app: &str| {
        t.problems
            .iter()
            .find(|p| &*p.app_id == app)
            .unwrap_or_else(|| panic!("no problem for {app}: {:?}", t.problems))
    };
    assert_eq!(problem("/typo").severity, Severity::Ignored);
    assert!(problem("/typo").reason.contains("WITHOUT"));
    assert_eq!(problem("/framing").severity, Severity::Skipped);
    assert_eq!(problem("/tcp").severity, Severity::Ignored);
    assert_eq!(problem("/tcpdown").severity, Severity::Skipped);
    // Maintenance set at runtime reaches the port as the label would.
    let mut runtime = config("*");
    runtime.maintenance.insert("/limited".into());
    let t = compile(&c, &runtime);
    assert!(t.services[0].edge.maintenance);
}

proptest::proptest! {
    /// Backends are ordered as `SocketAddr` and task id order them, whatever the mix of IPv4
    /// and IPv6 addresses (the integer comparison of IPv4 addresses agrees with `SocketAddr`'s).
    #[test]
    fn backends_order_as_socket_addresses_and_task_ids(
        raw in proptest::collection::vec(
            (proptest::prelude::any::<bool>(), 0u32..4, 0u16..3, 0u8..3, 0u8..3),
            0..12,
        )
    ) {
        let mut backends: Vec<Backend> = raw
            .iter()
            .map(|&(v6, ip, port, task, high)| {
                // Addresses that share bits and straddle the byte boundaries.
                let ip = ip | (u32::from(high) << 24);
                let addr = if v6 {
                    SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::from_bits(u128::from(ip))), port)
                } else {
                    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::from_bits(ip)), port << 8 | port)
                };
                Backend { addr, task_id: format!("t{task}").into(), weight: 1, probe_addr: None }
            })
            .collect();
        let mut oracle = backends.clone();
        oracle.sort_by(|a, b| a.addr.cmp(&b.addr).then_with(|| a.task_id.cmp(&b.task_id)));
        backends.sort_by(backend_order);
        proptest::prop_assert_eq!(backends, oracle);
    }
}

proptest::proptest! {
    /// One walk over an app's tasks gives what a walk for each gave: the routable tasks'
    /// backends in `backend_order` (sorted only when they did not come in order: repeated
    /// addresses, addresses falling as task ids rise), and the other tasks held back, with why,
    /// in task order.
    #[test]
    fn backends_and_held_back_in_one_walk(
        raw in proptest::collection::vec(
            (0u8..4, 0u16..3, 0u8..4, proptest::prelude::any::<bool>(), proptest::prelude::any::<bool>()),
            0..10,
        ),
        health_checks in 0usize..2,
    ) {
        let tasks: Vec<crate::cluster::Task> = raw
            .iter()
            .enumerate()
            .map(|(i, &(host, port, state, healthy, unready))| {
                let mut t = task(&format!("t{i:02}"), 31000 + port);
                t.host = format!("10.0.0.{host}").into();
                t.state = match state {
                    0 => TaskState::Staging,
                    1 => TaskState::Killing,
                    _ => TaskState::Running,
                };
                t.healthy = Some(healthy);
                t.ready = unready.then_some(false);
                t
            })
            .collect();
        let mut a = app("/a", 10000, &[], tasks);
        a.health_checks = health_checks;
        let c = cluster(Vec::new());
        let (found, held) = backends(&c, &a, 0, &mut |_, reason| panic!("{reason}"));
        let mut routable: Vec<(SocketAddr, crate::cluster::TaskId)> = a
            .tasks
            .values()
            .filter(|t| t.is_routable(a.health_checks))
            .map(|t| (backend_addr(&c, &a, 0, t).unwrap(), t.id.clone()))
            .collect();
        routable.sort();
        let got: Vec<_> = found.iter().map(|b| (b.addr, b.task_id.clone())).collect();
        proptest::prop_assert_eq!(got, routable);
        let held_oracle: Vec<_> = a
            .tasks
            .values()
            .filter_map(|t| Some((t.id.clone(), t.held_back(a.health_checks)?)))
            .collect();
        proptest::prop_assert_eq!(held, held_oracle);
    }
}
