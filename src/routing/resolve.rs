//! Where an HTTP request goes, from the listener it came in on and what it names: one
//! resolution used by both proxy codecs, the admin API's `explain` and the fuzz targets, so
//! that what an operator is told is what a request gets.

use std::net::SocketAddr;

use super::RoutingTable;
use super::request_path::Reading;
use super::vhosts::host_key;

/// Which listener a request came in on, and so how it finds its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// An app's own service port in `http` mode.
    Port(SocketAddr),
    /// A shared vhost listener.
    Vhost { https: bool },
    /// marathon-lb's `X-Marathon-App-Id` listener.
    AppId,
}

/// Where a request goes before an app is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A route: weighted (and canary) choice among its apps.
    Route(usize),
    /// One app's service directly (app-id routing, the default app).
    Service(usize),
}

/// What a request names that routing reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// The authority (Host, or the absolute-form target's), port and trailing dot included.
    pub host: Option<&'a [u8]>,
    /// The path, without the query.
    pub path: &'a str,
    /// `X-Marathon-App-Id`.
    pub app_id: Option<&'a [u8]>,
}

/// Why a request has no target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// Nothing serves it (answered 503).
    NoRoute,
    /// Its path, read as some backends read it, takes another route than as sent
    /// (`request_path`): refused (400), whichever a backend would read.
    AmbiguousPath,
}

/// Why a request went where it did, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Listener,
    Vhost,
    DefaultApp,
    AppId,
}

impl RoutingTable {
    /// Resolves a request to its target.
    pub fn resolve(
        &self,
        entry: Entry,
        request: Request<'_>,
    ) -> Result<(Target, Reason), Unrouted> {
        let found = match entry {
            Entry::Port(listen) => self
                .by_listen
                .get(&listen)
                .map(|&r| (Target::Route(r), Reason::Listener)),
            Entry::Vhost { .. } => {
                let mut key = [0u8; 256];
                let host = request.host.and_then(|h| host_key(h, &mut key));
                let route = |path: &str| host.and_then(|h| self.vhosts.route(h, path));
                let routed = route(request.path);
                // Every reading a backend may make of the path takes the same route, or none
                // is taken (`request_path`); only looked at where the path can matter.
                if super::request_path::may_read_otherwise(request.path)
                    && let Some(h) = host
                    && !self.vhosts.path_independent(h)
                {
                    let agree =
                        Verdicts::recall(&self.vhosts, h, request.path).unwrap_or_else(|| {
                            let agree = match super::request_path::read(request.path) {
                                None => true,
                                Some(Reading::DotSegments | Reading::Tangled) => false,
                                Some(Reading::Paths(paths)) => {
                                    paths.iter().all(|p| route(p) == routed)
                                }
                            };
                            Verdicts::note(&self.vhosts, h, request.path, agree);
                            agree
                        });
                    if !agree {
                        return Err(Unrouted::AmbiguousPath);
                    }
                }
                routed.map(|r| (Target::Route(r), Reason::Vhost)).or(self
                    .default_service
                    .map(|s| (Target::Service(s), Reason::DefaultApp)))
            }
            Entry::AppId => request
                .app_id
                .and_then(|id| std::str::from_utf8(id).ok())
                .and_then(|id| self.by_app_id.get(id).copied())
                .map(|s| (Target::Service(s), Reason::AppId)),
        };
        found.ok_or(Unrouted::NoRoute)
    }
}

/// The last few paths this thread read every way, and whether their readings agreed: reading a
/// path costs up to 15 copies of it, and over HTTP/2 a client can send the same path again
/// for a byte or two (HPACK), so a repeat is answered from here. Eight places, as the 4 KiB
/// HPACK table holds at most that many paths of more than 450 bytes. A verdict is for one
/// table's host routes: it holds that table's `Vhosts` weakly (its address cannot be reused
/// while held, and its routes are freed as usual).
struct Verdicts {
    kept: [Option<Verdict>; 8],
    next: usize,
}

struct Verdict {
    vhosts: std::sync::Weak<super::vhosts::Vhosts>,
    host: Box<str>,
    path: Box<str>,
    agree: bool,
}

thread_local! {
    static VERDICTS: std::cell::RefCell<Verdicts> = const {
        std::cell::RefCell::new(Verdicts { kept: [const { None }; 8], next: 0 })
    };
}

impl Verdicts {
    fn recall(
        vhosts: &std::sync::Arc<super::vhosts::Vhosts>,
        host: &str,
        path: &str,
    ) -> Option<bool> {
        VERDICTS
            .try_with(|v| {
                v.borrow().kept.iter().flatten().find_map(|k| {
                    (std::ptr::eq(k.vhosts.as_ptr(), std::sync::Arc::as_ptr(vhosts))
                        && *k.host == *host
                        && *k.path == *path)
                        .then_some(k.agree)
                })
            })
            .ok()
            .flatten()
    }

    fn note(vhosts: &std::sync::Arc<super::vhosts::Vhosts>, host: &str, path: &str, agree: bool) {
        let _ = VERDICTS.try_with(|v| {
            let mut v = v.borrow_mut();
            let at = v.next;
            v.kept[at] = Some(Verdict {
                vhosts: std::sync::Arc::downgrade(vhosts),
                host: host.into(),
                path: path.into(),
                agree,
            });
            v.next = (at + 1) % v.kept.len();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{app, task};
    use crate::cluster::{Cluster, ClusterUpdate};
    use crate::routing::{CompileConfig, compile};

    fn table() -> RoutingTable {
        let http = |vhost: &'static str, path: &'static str| {
            let mut labels = vec![("HAPROXY_0_MODE", "http"), ("HAPROXY_0_VHOST", vhost)];
            if !path.is_empty() {
                labels.push(("HAPROXY_0_PATH", path));
            }
            labels
        };
        let mut cluster = Cluster::default();
        cluster.apply(ClusterUpdate::Snapshot(vec![
            app(
                "/shop",
                10000,
                &http("shop.example.com", ""),
                vec![task("s.1", 1)],
            ),
            app(
                "/api",
                10001,
                &http("shop.example.com", "/api"),
                vec![task("a.1", 1)],
            ),
            app(
                "/api-v2",
                10002,
                &http("shop.example.com", "/api/v2"),
                vec![task("b.1", 1)],
            ),
            app(
                "/any",
                10003,
                &http("*.example.com", ""),
                vec![task("w.1", 1)],
            ),
            app(
                "/fallback",
                10004,
                &http("fallback.test", ""),
                vec![task("f.1", 1)],
            ),
        ]));
        let config = CompileConfig {
            default_app: Some("/fallback".into()),
            ..CompileConfig::group("*", "127.0.0.1".parse().unwrap())
        };
        compile(&cluster, &config)
    }

    fn app_of(
        table: &RoutingTable,
        found: Result<(Target, Reason), Unrouted>,
    ) -> Option<(String, Reason)> {
        let (target, reason) = found.ok()?;
        let service = match target {
            Target::Service(s) => s,
            Target::Route(r) => table.routes[r].first(),
        };
        Some((table.services[service].key.app_id.to_string(), reason))
    }

    fn vhost(table: &RoutingTable, host: &str, path: &str) -> Option<(String, Reason)> {
        let request = Request {
            host: Some(host.as_bytes()),
            path,
            app_id: None,
        };
        app_of(table, table.resolve(Entry::Vhost { https: false }, request))
    }

    #[test]
    fn vhosts_by_host_then_longest_prefix_then_wildcard_then_default() {
        let t = table();
        let is = |app: &str, reason| Some((app.to_string(), reason));
        assert_eq!(
            vhost(&t, "shop.example.com", "/"),
            is("/shop", Reason::Vhost)
        );
        assert_eq!(
            vhost(&t, "shop.example.com", "/api/x"),
            is("/api", Reason::Vhost)
        );
        assert_eq!(
            vhost(&t, "shop.example.com", "/api/v2/x"),
            is("/api-v2", Reason::Vhost)
        );
        // Case, a port and a trailing dot do not change the host.
        assert_eq!(
            vhost(&t, "SHOP.Example.com.:8080", "/api"),
            is("/api", Reason::Vhost)
        );
        assert_eq!(vhost(&t, "eu.example.com", "/"), is("/any", Reason::Vhost));
        // A path that some backends read as another route's is refused, whichever route it
        // would take as sent; one read the same way by all is served as sent.
        let resolved = |path| {
            let request = Request {
                host: Some(b"shop.example.com"),
                path,
                app_id: None,
            };
            t.resolve(Entry::Vhost { https: false }, request)
        };
        for ambiguous in [
            "/%61pi/x",
            "/x/../api/x",
            "//api/x",
            "/./api",
            "/%2e%2e/api",
            "/api/../x",
            "/api/%2E%2E/x",
            "/api//../x",
            "/api//..",
            "/x\\..\\api",
            "/api/x/../../v2/y",
            // Tomcat's `..;` and parameters, a leading `//name` read as a host.
            "/x/..;/api/y",
            "/;/api/y",
            "//x/api/y",
            // Decoded but not resolved: `/api/..` to some backends.
            "/%61pi/..",
            // Dot segments that stay on the route are refused all the same.
            "/api/./x",
            "/api/x/../y",
        ] {
            assert_eq!(
                resolved(ambiguous),
                Err(Unrouted::AmbiguousPath),
                "{ambiguous}"
            );
        }
        for (same, app) in [
            ("/api/%7Ex", "/api"),
            ("/api;v=1/x", "/api"),
            ("/x//y", "/shop"),
            ("/.well-known/a", "/shop"),
            ("/a%20b", "/shop"),
        ] {
            assert_eq!(
                vhost(&t, "shop.example.com", same),
                is(app, Reason::Vhost),
                "{same}"
            );
        }
        // A host whose every path takes one route is not looked at: the same spellings are
        // served there, dot segments too.
        for path in ["/x/../api", "//x/api", "/%61pi"] {
            assert_eq!(vhost(&t, "eu.example.com", path), is("/any", Reason::Vhost));
        }
        // No route: the default app; without a Host either.
        assert_eq!(
            vhost(&t, "other.test", "/"),
            is("/fallback", Reason::DefaultApp)
        );
        let none = Request {
            host: None,
            path: "/",
            app_id: None,
        };
        assert_eq!(
            app_of(&t, t.resolve(Entry::Vhost { https: true }, none)),
            is("/fallback", Reason::DefaultApp)
        );
    }

    /// A path's verdict is remembered per table: asked again it is the same, and another
    /// table's routes are read anew.
    #[test]
    fn a_remembered_verdict_is_for_its_own_table_only() {
        let t = table();
        let mut cluster = Cluster::default();
        let http = |path: &'static str| {
            vec![
                ("HAPROXY_0_MODE", "http"),
                ("HAPROXY_0_VHOST", "shop.example.com"),
                ("HAPROXY_0_PATH", path),
            ]
        };
        cluster.apply(ClusterUpdate::Snapshot(vec![
            app("/shop", 10000, &http("/"), vec![task("s.1", 1)]),
            app("/other", 10001, &http("/other"), vec![task("o.1", 1)]),
        ]));
        let other = compile(
            &cluster,
            &CompileConfig::group("*", "127.0.0.1".parse().unwrap()),
        );
        for _ in 0..2 {
            let request = Request {
                host: Some(b"shop.example.com"),
                path: "/%61pi/x",
                app_id: None,
            };
            assert_eq!(
                t.resolve(Entry::Vhost { https: false }, request).err(),
                Some(Unrouted::AmbiguousPath)
            );
            assert_eq!(
                vhost(&other, "shop.example.com", "/%61pi/x"),
                Some(("/shop".to_string(), Reason::Vhost))
            );
        }
    }

    #[test]
    fn service_ports_and_app_ids() {
        let t = table();
        let port = |p: u16| {
            let listen = SocketAddr::from(([127, 0, 0, 1], p));
            app_of(&t, t.resolve(Entry::Port(listen), Request::default()))
        };
        assert_eq!(port(10001), Some(("/api".into(), Reason::Listener)));
        assert_eq!(port(9), None);
        let by_id = |id: &str| {
            let request = Request {
                app_id: Some(id.as_bytes()),
                ..Request::default()
            };
            app_of(&t, t.resolve(Entry::AppId, request))
        };
        assert_eq!(by_id("/api-v2"), Some(("/api-v2".into(), Reason::AppId)));
        assert_eq!(by_id("/nope"), None);
        assert_eq!(by_id("\u{ff}"), None);
    }
}
