//! The table hash: equal tables hash alike whatever their history, a patched table's memo
//! equals a fresh one's, and what moves traffic changes the hash.

use super::*;
use crate::cluster::Cluster;
use crate::cluster::fixtures::{app, task};
use crate::routing::{CompileConfig, compile};
use std::fmt::Write as _;

fn cluster() -> Cluster {
    let mut c = Cluster::default();
    for (id, port, labels) in [
        ("/web", 10001, vec![("HAPROXY_0_VHOST", "web.example.com")]),
        ("/api", 10002, vec![("HAPROXY_GROUP", "internal")]),
        ("/db", 10003, vec![("HAPROXY_0_MODE", "tcp")]),
    ] {
        let a = app(
            id,
            port,
            &labels,
            vec![task(&format!("{id}.1"), 31000 + port)],
        );
        c.apps.insert(a.id.clone(), std::sync::Arc::new(a));
    }
    c
}

fn hash(c: &Cluster, config: &CompileConfig) -> u64 {
    compile(c, config).hash()
}

/// The text as it was written before it was streamed and memoized (commit 8ad11d0), kept
/// to show that version 2 hashes the same lines: its services' in chunks, the rest as is.
fn reference(table: &RoutingTable, bind: IpAddr) -> String {
    let mut out = String::new();
    // `write!` to a String cannot fail.
    macro_rules! line {
    ($($arg:tt)*) => {{ let _ = writeln!(out, $($arg)*); }};
}
    line!("v1");
    for (i, s) in table.services.iter().enumerate() {
        line!(
            "service {i} {} listen={:?} port={} mode={:?} balance={:?} h2={} idle={:?}",
            s.key,
            s.listen.map(|a| listen(a, bind)),
            s.service_port,
            s.mode,
            s.balancer.kind(),
            s.upstream_h2,
            s.tcp_idle_timeout,
        );
        for b in &s.backends {
            line!(
                " backend {} {} w={} probe_at={:?}",
                b.addr,
                b.task_id,
                b.weight,
                b.probe_addr
            );
        }
        let h = &s.http;
        line!(
            " http redirect={} hsts={} sticky={} acl={:?} rewrite={:?}",
            h.redirect_to_https,
            h.hsts,
            h.sticky,
            h.acl,
            h.rewrite.as_deref()
        );
        // The edge labels as read (limits, timeouts, header rules, error pages, maintenance;
        // PROXY protocol, passthrough, backend TLS, client CA): settings, no runtime state.
        line!(" edge {:?} connection {:?}", s.edge, s.connection);
        if let Some(auth) = &h.auth {
            line!(" auth {:?} {:?} {:?}", auth.realm, auth.user, auth.hash);
        }
        line!(
            " vhosts={:?} weight={:?} canary={:?} deployment={:?} probe={:?}",
            s.vhosts,
            s.weight,
            s.canary,
            s.deployment,
            s.probe
        );
        for (task, reason) in &s.held_back {
            line!(" held_back {task} {reason}");
        }
    }
    for (i, r) in table.routes.iter().enumerate() {
        let mut at: Vec<String> = table
            .by_listen
            .iter()
            .filter(|(_, x)| **x == i)
            .map(|(a, _)| listen(*a, bind))
            .collect();
        at.sort();
        line!(
            "route {i} {:?} at={at:?} overridden={}",
            r.name,
            r.overridden
        );
        for m in &r.members {
            line!(
                " member {} {} w={} from={}",
                m.service,
                m.app_id,
                m.weight,
                m.weight_from.as_str()
            );
        }
    }
    let mut udp: Vec<(String, usize)> = table
        .udp
        .iter()
        .map(|(a, s)| (listen(*a, bind), *s))
        .collect();
    udp.sort();
    for (addr, s) in udp {
        line!("udp {addr} {s}");
    }
    // Rules of one host keep the order they are tried in; hosts are sorted.
    let mut vhosts: Vec<(String, usize, String, usize)> = Vec::new();
    let mut last: Option<String> = None;
    let mut n = 0;
    for (host, prefix, route) in table.vhosts.entries() {
        n = if last.as_deref() == Some(host.as_str()) {
            n + 1
        } else {
            0
        };
        last = Some(host.clone());
        vhosts.push((host, n, prefix.to_string(), route));
    }
    vhosts.sort();
    for (host, n, prefix, route) in vhosts {
        line!("vhost {host} {n} {prefix:?} {route}");
    }
    line!("default {:?}", table.default_service);
    for cert in table.ssl_certs.iter() {
        line!("cert {}", cert.display());
    }
    let mut problems: Vec<_> = table.problems.iter().collect();
    problems.sort();
    for p in problems {
        line!("problem {:?} {p}", p.severity);
    }
    out
}

/// Version 1's text: its head, every service's and route's lines, the lines after them.
fn version_1(table: &RoutingTable, bind: IpAddr) -> String {
    let mut out = "v1\n".to_string();
    for (c, chunk) in table.services.chunks().iter().enumerate() {
        write_services(&mut out, chunk, c * crate::chunked::CHUNK, bind);
    }
    let at = route_entry_points(table, bind);
    for (c, chunk) in table.routes.chunks().iter().enumerate() {
        write_routes(&mut out, chunk, c * crate::chunked::CHUNK, &at);
    }
    write_udp(&mut out, table, bind);
    write_vhosts(&mut out, &table.vhosts);
    write_tail(&mut out, table);
    out
}

#[test]
fn the_hash_is_of_the_previous_versions_lines_with_services_by_chunk() {
    let mut c = cluster();
    // A deployment group (two apps in one route), a rate limit, a health probe, a task held
    // back, a tcp port with a label of its own.
    for (id, labels) in [
        (
            "/blue",
            vec![
                ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
                ("HAPROXY_DEPLOYMENT_ALT_PORT", "10099"),
            ],
        ),
        (
            "/green",
            vec![
                ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
                ("HAPROXY_DEPLOYMENT_ALT_PORT", "10099"),
            ],
        ),
        (
            "/limited",
            vec![
                ("SWITCHYARD_0_RATE_LIMIT", "100/s"),
                ("HAPROXY_0_VHOST", "l.example.com"),
            ],
        ),
    ] {
        let mut a = app(id, 10010, &labels, vec![task(&format!("{id}.1"), 31010)]);
        let mut held = task(&format!("{id}.2"), 31011);
        held.state = crate::cluster::TaskState::Staging;
        a.tasks.insert(held);
        c.apps.insert(a.id.clone(), std::sync::Arc::new(a));
    }
    let mut config = CompileConfig::group("*", "10.0.0.1".parse().unwrap());
    config.health = Some(crate::routing::compile::HealthPolicy {
        from_marathon: false,
        default: Some(crate::cluster::Probe {
            kind: crate::cluster::ProbeKind::Http {
                path: "/ping".into(),
            },
            port_index: 0,
            interval: std::time::Duration::from_secs(5),
            timeout: std::time::Duration::from_secs(2),
            max_failures: 3,
            grace: std::time::Duration::ZERO,
            target: None,
        }),
    });
    for config in [
        config,
        CompileConfig::group("*", "10.0.0.1".parse().unwrap()),
    ] {
        let table = compile(&c, &config);
        assert_eq!(
            version_1(&table, config.bind),
            reference(&table, config.bind)
        );
        assert_eq!(table.hash(), whole(&table, config.bind));
    }
}

/// The hash of `table`'s text, written in one go (no digest kept from another table).
fn whole(table: &RoutingTable, bind: IpAddr) -> u64 {
    let digest = Sha256::digest(canonical(table, bind).as_bytes());
    u64::from_be_bytes(digest[..8].try_into().unwrap())
}

/// Services past the first chunk are in the text by their chunk's digest: each service's
/// change still changes the hash, and only the chunk it is in.
#[test]
fn services_are_hashed_by_chunk() {
    use crate::chunked::CHUNK;
    let mut c = Cluster::default();
    let n = CHUNK * 2 + 3;
    for i in 0..n {
        let id = format!("/a{i:03}");
        let a = app(
            &id,
            10000 + i as u16,
            &[],
            vec![task(&format!("{id}.1"), 1)],
        );
        c.apps.insert(a.id.clone(), std::sync::Arc::new(a));
    }
    let config = CompileConfig::group("*", "10.0.0.1".parse().unwrap());
    let table = compile(&c, &config);
    let text = canonical(&table, config.bind);
    let chunks: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("services "))
        .collect();
    assert_eq!(chunks.len(), 3);
    assert!(chunks[1].starts_with(&format!("services {CHUNK} ")));
    let mut moved = c.clone();
    let id = format!("/a{:03}", CHUNK + 5);
    std::sync::Arc::make_mut(moved.apps.get_mut(id.as_str()).unwrap())
        .tasks
        .clear();
    let other = compile(&moved, &config);
    assert_ne!(table.hash(), other.hash());
    let text2 = canonical(&other, config.bind);
    let chunks2: Vec<&str> = text2
        .lines()
        .filter(|l| l.starts_with("services "))
        .collect();
    assert_eq!((chunks[0], chunks[2]), (chunks2[0], chunks2[2]));
    assert_ne!(chunks[1], chunks2[1]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// The hash of a table patched event by event (its chunks' digests kept
    /// between tables) is the hash of its whole text, and that of the table compiled afresh
    /// from the same cluster: instances compare it whatever their history.
    #[test]
    fn a_patched_tables_hash_is_its_whole_texts_and_a_fresh_tables(
        events in proptest::collection::vec((0..150usize, 0..4u8), 1..10)
    ) {
        use crate::cluster::ClusterUpdate;
        use crate::routing::compile::{Cache, compile_changed};
        let config = CompileConfig::group("*", "10.0.0.1".parse().unwrap());
        let id = |i: usize| format!("/a{i:03}");
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(
            (0..150)
                .map(|i| app(&id(i), 10000 + i as u16, &[], vec![task(&format!("{}.1", id(i)), 1)]))
                .collect(),
        ));
        let whole = |t: &RoutingTable| whole(t, config.bind);
        let mut cache = Cache::default();
        let first = compile_changed(&mut cache, &c, &config, None);
        proptest::prop_assert_eq!(first.hash(), whole(&first));
        for (i, what) in events {
            let app_id = id(i);
            let update = match what {
                // A task started, a task killed, a task's health flipped.
                0 => ClusterUpdate::TaskStatus {
                    app_id: app_id.as_str().into(),
                    task: task(&format!("{app_id}.{}", i % 7 + 2), 2 + (i % 7) as u16),
                },
                1 => {
                    let mut killed = task(&format!("{app_id}.1"), 1);
                    killed.state = crate::cluster::TaskState::Other("TASK_KILLED".into());
                    ClusterUpdate::TaskStatus { app_id: app_id.as_str().into(), task: killed }
                }
                2 => ClusterUpdate::TaskHealth {
                    app_id: app_id.as_str().into(),
                    task_id: format!("{app_id}.1").as_str().into(),
                    alive: false,
                },
                // The app redefined with a label: its service changes, not its place.
                _ => ClusterUpdate::AppUpserted(app(
                    &app_id,
                    10000 + i as u16,
                    &[("HAPROXY_0_BALANCE", "leastconn")],
                    vec![task(&format!("{app_id}.1"), 1)],
                )),
            };
            c.apply(update);
            let listed = std::collections::BTreeSet::from([app_id.as_str().into()]);
            let patched = compile_changed(&mut cache, &c, &config, Some(&listed));
            proptest::prop_assert_eq!(patched.hash(), whole(&patched));
            proptest::prop_assert_eq!(patched.hash(), compile(&c, &config).hash());
        }
    }
}

#[test]
fn the_same_cluster_and_config_give_the_same_hash_whatever_the_bind_address() {
    let c = cluster();
    let a = CompileConfig::group("*", "10.0.0.1".parse().unwrap());
    let mut b = CompileConfig::group("*", "10.0.0.2".parse().unwrap());
    // The instance's own listeners (admin bound at port 0) are not part of it either.
    b.reserved = vec!["127.0.0.1:41234".parse().unwrap()];
    assert_eq!(hash(&c, &a), hash(&c, &a));
    assert_eq!(hash(&c, &a), hash(&c, &b));
    assert_eq!(hex(hash(&c, &a)).len(), 16);
}

#[test]
fn what_changes_routing_changes_the_hash() {
    let c = cluster();
    let base = CompileConfig::group("*", "10.0.0.1".parse().unwrap());
    let h = hash(&c, &base);
    // Another group served.
    let external = CompileConfig::group("external", "10.0.0.1".parse().unwrap());
    assert_ne!(h, hash(&c, &external));
    // A label only one instance has seen.
    let mut relabelled = c.clone();
    relabelled
        .apps
        .get_mut("/web")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .labels
        .insert("HAPROXY_0_BALANCE".into(), "leastconn".into());
    assert_ne!(h, hash(&relabelled, &base));
    // An edge label (a rate limit) only one instance has seen.
    let mut limited = c.clone();
    limited
        .apps
        .get_mut("/web")
        .map(std::sync::Arc::make_mut)
        .unwrap()
        .labels
        .insert("SWITCHYARD_0_RATE_LIMIT".into(), "100/s".into());
    assert_ne!(h, hash(&limited, &base));
    // A task gone.
    let mut fewer = c.clone();
    std::sync::Arc::make_mut(fewer.apps.get_mut("/db").unwrap())
        .tasks
        .clear();
    assert_ne!(h, hash(&fewer, &base));
}

/// A part's digest is named in the text as 64 lowercase hex digits, two per byte in order:
/// the text (and so every hash value) of version 2, however it is written.
#[test]
fn a_parts_digest_is_named_by_its_bytes_in_lowercase_hex() {
    let digest: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
    let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(Hex(&digest).to_string(), expected);
    assert_eq!(Hex(&[0u8; 32]).to_string(), "0".repeat(64));
    assert_eq!(Hex(&[0xffu8; 32]).to_string(), "f".repeat(64));
}
