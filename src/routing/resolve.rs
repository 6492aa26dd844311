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
                    && !host.is_none_or(|h| self.vhosts.path_independent(h))
                    && let Some(reading) = super::request_path::read(request.path)
                {
                    let agree = match reading {
                        Reading::DotSegments | Reading::Tangled => false,
                        Reading::Paths(paths) => paths.iter().all(|p| route(p) == routed),
                    };
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
