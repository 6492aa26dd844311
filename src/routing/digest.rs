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
//! hex digits. The bulk of that text — the services (a line per backend), the routes, the vhost
//! rules — is in it by parts: each chunk of services or routes (`crate::chunked`, 64 each) and
//! the vhost rules are hashed on their own, and the text names them by those digests. A part's
//! digest is kept while what it was of is ([`Memo`]), so the table after one app's change hashes
//! that app's chunks and a few lines, not 50,000 services.
//!
//! Version 2 of the text (its first line says `v2`; [`TEXT_VERSION`], also the metric's `text`
//! label). Version 1 hashed those lines themselves: the two give different values for one
//! table, so instances of the two versions do not agree; instances of one version holding equal
//! tables do, whatever their history (a table's chunks are its services and routes in order, 64
//! at a time, however it was made).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest, Sha256};

use super::routes::Route;
use super::vhosts::Vhosts;
use super::{RoutingTable, Service};

/// The version of the hashed text: instances agree on a table's hash only within one version,
/// so the metric carries it (alerts compare hashes per version, and an upgrade that changes it
/// does not look like a disagreement).
pub const TEXT_VERSION: &str = "2";

/// The digests of the parts of the table last hashed, with what each was of: a chunk of
/// services or routes by its position and its elements, the vhosts by their map. An element is
/// known by its allocation: compiles share the services and routes of apps that did not change
/// (`routing::compile::Cache`), patched or compiled in full, and a table patched from another
/// shares its maps. A `Weak` keeps the allocation from being reused, and a value with one cannot
/// be changed in place (`Arc::get_mut` refuses), so the same allocations are the same values.
#[derive(Default)]
struct Memo {
    bind: Option<IpAddr>,
    services: Vec<Option<Part<Service>>>,
    routes: Vec<Option<Part<Route>>>,
    /// The entry points the routes' digests were written with (their `at=`).
    by_listen: Weak<rustc_hash::FxHashMap<SocketAddr, usize>>,
    vhosts: Option<(Weak<Vhosts>, [u8; 32])>,
}

/// A chunk's elements and the digest of its lines.
type Part<T> = (Box<[Weak<T>]>, [u8; 32]);

/// One memo for the process: the tables it hashes are mostly each the last one patched. A
/// table hashed while another is (a plan's beside the live one's) is hashed without it.
static MEMO: Mutex<Option<Memo>> = Mutex::new(None);

/// The hash of `table`, compiled with `bind` as the instance's default bind address.
pub fn table_hash(table: &RoutingTable, bind: IpAddr) -> u64 {
    let taken = MEMO.lock().ok().and_then(|mut m| m.take());
    let mut last = taken.filter(|m| m.bind == Some(bind)).unwrap_or_default();
    let mut sink = Hashing::new();
    let memo = write_text(&mut sink, table, bind, &mut last);
    if let Ok(mut m) = MEMO.lock() {
        *m = Some(memo);
    }
    let digest = sink.finish();
    u64::from_be_bytes(digest[..8].try_into().expect("32 bytes"))
}

/// Writes the text of `table` (what [`table_hash`] hashes), with the digests of `last`'s parts
/// that `table` still has; gives the memo of `table`'s.
fn write_text(
    out: &mut impl std::fmt::Write,
    table: &RoutingTable,
    bind: IpAddr,
    last: &mut Memo,
) -> Memo {
    use crate::chunked::CHUNK;
    let mut memo = Memo {
        bind: Some(bind),
        by_listen: Arc::downgrade(&table.by_listen),
        ..Memo::default()
    };
    // Writing to a String or the hasher cannot fail (here and below).
    let _ = writeln!(out, "v{TEXT_VERSION}");
    for (c, chunk) in table.services.chunks().iter().enumerate() {
        let part = reuse(&mut last.services, c, chunk)
            .unwrap_or_else(|| part(chunk, |h| write_services(h, chunk, c * CHUNK, bind)));
        let _ = writeln!(out, "services {} {}", c * CHUNK, Hex(&part.1));
        memo.services.push(Some(part));
    }
    // The routes' entry points, when a chunk of routes is written again.
    let same_listen = std::ptr::eq(last.by_listen.as_ptr(), Arc::as_ptr(&table.by_listen));
    let mut entry_points = None;
    for (c, chunk) in table.routes.chunks().iter().enumerate() {
        let part = reuse(&mut last.routes, c, chunk)
            .filter(|_| same_listen)
            .unwrap_or_else(|| {
                let at = entry_points.get_or_insert_with(|| route_entry_points(table, bind));
                part(chunk, |h| write_routes(h, chunk, c * CHUNK, at))
            });
        let _ = writeln!(out, "routes {} {}", c * CHUNK, Hex(&part.1));
        memo.routes.push(Some(part));
    }
    write_udp(out, table, bind);
    let vhosts = last
        .vhosts
        .take()
        .filter(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&table.vhosts)))
        .unwrap_or_else(|| {
            let mut h = Hashing::new();
            write_vhosts(&mut h, &table.vhosts);
            (Arc::downgrade(&table.vhosts), h.finish())
        });
    let _ = writeln!(out, "vhosts {}", Hex(&vhosts.1));
    memo.vhosts = Some(vhosts);
    write_tail(out, table);
    memo
}

/// Chunk `c`'s part in `last` if `chunk` holds the same elements.
fn reuse<T>(last: &mut [Option<Part<T>>], c: usize, chunk: &[Arc<T>]) -> Option<Part<T>> {
    last.get_mut(c).and_then(Option::take).filter(|(of, _)| {
        of.len() == chunk.len()
            && of
                .iter()
                .zip(chunk)
                .all(|(w, x)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(x)))
    })
}

/// The part of `chunk` whose lines `write` writes.
fn part<T>(chunk: &[Arc<T>], write: impl FnOnce(&mut Hashing)) -> Part<T> {
    let mut h = Hashing::new();
    write(&mut h);
    (chunk.iter().map(Arc::downgrade).collect(), h.finish())
}

/// A digest in lowercase hex.
struct Hex<'a>(&'a [u8; 32]);

impl std::fmt::Display for Hex<'_> {
    // Written in one piece: a table at 50,000 apps names about 1,600 parts, and formatting
    // each byte on its own was a sixth of the hash after one app's change.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        for (pair, b) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        f.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

/// Feeds SHA-256 with what is written, in chunks.
struct Hashing {
    sha: Sha256,
    buf: String,
}

impl Hashing {
    const CHUNK: usize = 64 * 1024;

    // The text is hashed as it is written, a buffer at a time: at 50,000 apps it is tens of
    // MiB, which a single String would grow to (and copy on the way) only to be hashed once.
    fn new() -> Hashing {
        Hashing {
            sha: Sha256::new(),
            buf: String::new(),
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.sha.update(self.buf.as_bytes());
        self.sha.finalize().into()
    }
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

/// The table as text, one fact a line, in an order that depends on nothing but the content:
/// what [`table_hash`] hashes, each chunk of services or routes and the vhosts named by the
/// digest of their lines, written in full.
#[cfg(test)]
fn canonical(table: &RoutingTable, bind: IpAddr) -> String {
    let mut out = String::new();
    write_text(&mut out, table, bind, &mut Memo::default());
    out
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

/// The entry points (`at=`) of the routes that have any, by route, each sorted.
type EntryPoints = rustc_hash::FxHashMap<usize, Vec<String>>;

/// Each route's entry points, gathered in one pass over the listeners (not one scan of every
/// listener per route: that was quadratic in the number of apps), held for the routes that have
/// any: routes served by vhost alone have none, and a list per route was most of the work when
/// one app's change rewrites its chunk of routes at 50,000 apps.
fn route_entry_points(table: &RoutingTable, bind: IpAddr) -> EntryPoints {
    let mut at_by_route = EntryPoints::default();
    for (a, &x) in table.by_listen.iter() {
        at_by_route.entry(x).or_default().push(listen(*a, bind));
    }
    for at in at_by_route.values_mut() {
        at.sort();
    }
    at_by_route
}

/// The lines of `routes`, the first of which is the table's route `first`; `at`: every route's
/// entry points ([`route_entry_points`]).
fn write_routes(
    out: &mut impl std::fmt::Write,
    routes: &[Arc<Route>],
    first: usize,
    at: &EntryPoints,
) {
    macro_rules! line {
        ($($arg:tt)*) => {{ let _ = writeln!(out, $($arg)*); }};
    }
    for (i, r) in (first..).zip(routes) {
        let at = at.get(&i).map_or(&[][..], Vec::as_slice);
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
}

/// The UDP ports' lines.
fn write_udp(out: &mut impl std::fmt::Write, table: &RoutingTable, bind: IpAddr) {
    let mut udp: Vec<(String, usize)> = table
        .udp
        .iter()
        .map(|(a, s)| (listen(*a, bind), *s))
        .collect();
    udp.sort();
    for (addr, s) in udp {
        let _ = writeln!(out, "udp {addr} {s}");
    }
}

/// The vhost rules' lines: rules of one host keep the order they are tried in; hosts are
/// sorted.
fn write_vhosts(out: &mut impl std::fmt::Write, table_vhosts: &Vhosts) {
    let mut vhosts: Vec<(String, usize, String, usize)> = Vec::new();
    let mut last: Option<String> = None;
    let mut n = 0;
    for (host, prefix, route) in table_vhosts.entries() {
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
        let _ = writeln!(out, "vhost {host} {n} {prefix:?} {route}");
    }
}

/// The last lines: the default app, certificates, problems.
fn write_tail(out: &mut impl std::fmt::Write, table: &RoutingTable) {
    let _ = writeln!(out, "default {:?}", table.default_service);
    for cert in table.ssl_certs.iter() {
        let _ = writeln!(out, "cert {}", cert.display());
    }
    let mut problems: Vec<_> = table.problems.iter().collect();
    problems.sort();
    for p in problems {
        let _ = writeln!(out, "problem {:?} {p}", p.severity);
    }
}

#[cfg(test)]
#[path = "digest_tests.rs"]
mod tests;
