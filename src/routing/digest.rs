//! The table hash: a digest of what a compiled table routes, so that the instances of an edge
//! group can show they agree (`table_hash` in `/v1/routes`, `switchyard status`, the metric
//! `switchyard_table_hash`).
//!
//! Two instances that follow the same Marathon with the same routing configuration get the same
//! value. What is local to one process is left out: the generation counter, when the table was
//! swapped in, pointers, the order a hash map iterates in, the round-robin positions of the
//! balancers, and the instance's own bind address (each node may bind its own IP; a service port
//! is hashed by its port, and by its address only when a label gives it one). Everything that
//! changes where traffic goes is in: services, service ports and modes, backends and their
//! weights, balancers, HTTP options (ACLs, auth, sticky, rewrites), vhosts and their order,
//! routes and their weights (runtime overrides included: an instance with one routes
//! differently), VIP addresses, the default app, certificates named, and the problems.
//!
//! It is computed once per table, when first asked for (after the swap, off the control thread),
//! never per request: SHA-256 over a canonical text of the table, the first 64 bits shown as 16
//! hex digits. The services' text (most of it: a line per backend) is kept per chunk of services
//! ([`Memo`]), so the hash of a table patched for one app formats that app's chunk alone; the
//! text, and so the value, is the one written in full.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};

use super::{RoutingTable, Service};

/// The canonical text of each chunk of services (`crate::chunked`) of the table last hashed,
/// by chunk position. A chunk is known by its allocation: the `Weak` keeps that allocation from
/// being reused, and a chunk with one cannot be changed in place (`Chunked::make_mut` copies
/// it), so the same allocation at the same position holds the same services.
#[derive(Default)]
struct Memo {
    bind: Option<IpAddr>,
    chunks: Vec<Option<(Weak<[Arc<Service>]>, String)>>,
}

/// One memo for the process: the tables it hashes are mostly each the last one patched. A
/// table hashed while another is (a plan's beside the live one's) is hashed without it.
static MEMO: Mutex<Option<Memo>> = Mutex::new(None);

/// The hash of `table`, compiled with `bind` as the instance's default bind address.
pub fn table_hash(table: &RoutingTable, bind: IpAddr) -> u64 {
    // The text is hashed as it is written, a buffer at a time: at 50,000 apps it is tens of MiB,
    // which a single String would grow to (and copy on the way) only to be hashed once.
    let mut sink = Hashing {
        sha: Sha256::new(),
        buf: String::with_capacity(2 * Hashing::CHUNK),
    };
    let taken = MEMO.lock().ok().and_then(|mut m| m.take());
    let mut last = taken.filter(|m| m.bind == Some(bind)).unwrap_or_default();
    let mut memo = Memo {
        bind: Some(bind),
        chunks: Vec::with_capacity(table.services.chunks().len()),
    };
    write_head(&mut sink);
    for (c, chunk) in table.services.chunks().iter().enumerate() {
        let kept = last
            .chunks
            .get_mut(c)
            .and_then(Option::take)
            .filter(|(weak, _)| std::ptr::addr_eq(weak.as_ptr(), Arc::as_ptr(chunk)));
        let (weak, text) = kept.unwrap_or_else(|| {
            let mut text = String::new();
            write_services(&mut text, chunk, c * crate::chunked::CHUNK, bind);
            (Arc::downgrade(chunk), text)
        });
        std::fmt::Write::write_str(&mut sink, &text).expect("hashing cannot fail");
        memo.chunks.push(Some((weak, text)));
    }
    write_rest(&mut sink, table, bind);
    if let Ok(mut m) = MEMO.lock() {
        *m = Some(memo);
    }
    sink.sha.update(sink.buf.as_bytes());
    let digest = sink.sha.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("32 bytes"))
}

/// Feeds SHA-256 with what is written, in chunks.
struct Hashing {
    sha: Sha256,
    buf: String,
}

impl Hashing {
    const CHUNK: usize = 64 * 1024;
}

impl std::fmt::Write for Hashing {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= Self::CHUNK {
            self.sha.update(self.buf.as_bytes());
            self.buf.clear();
        }
        Ok(())
    }
}

/// The `Debug` text of `value`, formatted again only when it differs from the last one asked
/// for: most services share their settings (none set), and formatting them was most of the
/// hash's cost.
fn memo<'s, 'a, T: PartialEq + std::fmt::Debug>(
    slot: &'s mut Option<(&'a T, String)>,
    value: &'a T,
) -> &'s str {
    let fresh = !matches!(slot, Some((last, _)) if *last == value);
    if fresh {
        *slot = Some((value, format!("{value:?}")));
    }
    slot.as_ref().map_or("", |(_, text)| text.as_str())
}

/// `hash` as `/v1/routes` and the metric show it: 16 lowercase hex digits.
pub fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// A service port's address without the node's own bind address.
fn listen(addr: SocketAddr, bind: IpAddr) -> String {
    if addr.ip() == bind {
        format!("*:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The table as text, one fact a line, in an order that depends on nothing but the content.
#[cfg(test)]
fn canonical(table: &RoutingTable, bind: IpAddr) -> String {
    let mut out = String::new();
    write_canonical(&mut out, table, bind);
    out
}

/// Writes [`canonical`]'s text to `out`: what [`table_hash`] hashes, written in one go.
#[cfg(test)]
fn write_canonical(out: &mut impl std::fmt::Write, table: &RoutingTable, bind: IpAddr) {
    write_head(out);
    for (c, chunk) in table.services.chunks().iter().enumerate() {
        write_services(out, chunk, c * crate::chunked::CHUNK, bind);
    }
    write_rest(out, table, bind);
}

/// The text's first line: its version.
fn write_head(out: &mut impl std::fmt::Write) {
    // Writing to a String or the hasher cannot fail (here and below).
    let _ = writeln!(out, "v1");
}

/// The lines of `services`, the first of which is the table's service `first`.
fn write_services(
    out: &mut impl std::fmt::Write,
    services: &[Arc<Service>],
    first: usize,
    bind: IpAddr,
) {
    macro_rules! line {
        ($($arg:tt)*) => {{ let _ = writeln!(out, $($arg)*); }};
    }
    macro_rules! put {
        ($($arg:tt)*) => {{ let _ = write!(out, $($arg)*); }};
    }
    let (mut edges, mut connections, mut deployments, mut probes) = (None, None, None, None);
    for (i, s) in (first..).zip(services) {
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
        line!(
            " edge {} connection {}",
            memo(&mut edges, &*s.edge),
            memo(&mut connections, &s.connection)
        );
        if let Some(auth) = &h.auth {
            line!(" auth {:?} {:?} {:?}", auth.realm, auth.user, auth.hash);
        }
        put!(
            " vhosts={:?} weight={:?} canary={:?} deployment=",
            s.vhosts,
            s.weight,
            s.canary,
        );
        line!(
            "{} probe={}",
            memo(&mut deployments, &s.deployment),
            memo(&mut probes, &s.probe)
        );
        for (task, reason) in &s.held_back {
            line!(" held_back {task} {reason}");
        }
    }
}

/// The lines after the services': routes, UDP ports, vhosts, the default app, certificates,
/// problems.
fn write_rest(out: &mut impl std::fmt::Write, table: &RoutingTable, bind: IpAddr) {
    macro_rules! line {
        ($($arg:tt)*) => {{ let _ = writeln!(out, $($arg)*); }};
    }
    // Each route's entry points, gathered in one pass (not one scan of every listener per
    // route: that was quadratic in the number of apps).
    let mut at_by_route: Vec<Vec<String>> = vec![Vec::new(); table.routes.len()];
    for (a, &x) in table.by_listen.iter() {
        if let Some(at) = at_by_route.get_mut(x) {
            at.push(listen(*a, bind));
        }
    }
    for (i, (r, mut at)) in table.routes.iter().zip(at_by_route).enumerate() {
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
}

#[cfg(test)]
mod tests {
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
    /// to show that the hash instances compare did not change: an instance of this version and
    /// one of the last agree on the same cluster.
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

    #[test]
    fn the_hash_is_the_one_the_previous_version_computed() {
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
            let text = reference(&table, config.bind);
            assert_eq!(canonical(&table, config.bind), text);
            let digest = Sha256::digest(text.as_bytes());
            let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
            assert_eq!(table.hash(), expected);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// The hash of a table patched event by event (its services' text kept per chunk
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
            let whole = |t: &RoutingTable| {
                let digest = Sha256::digest(canonical(t, config.bind).as_bytes());
                u64::from_be_bytes(digest[..8].try_into().unwrap())
            };
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
}
