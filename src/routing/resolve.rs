//! Where an HTTP request goes, from the listener it came in on and what it names: one
//! resolution used by both proxy codecs, the admin API's `explain` and the fuzz targets, so
//! that what an operator is told is what a request gets.

use std::net::SocketAddr;

use super::RoutingTable;
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

/// Why a request went where it did, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Listener,
    Vhost,
    DefaultApp,
    AppId,
}

impl RoutingTable {
    /// Resolves a request to its target; `None` is answered 503 (no route).
    pub fn resolve(&self, entry: Entry, request: Request<'_>) -> Option<(Target, Reason)> {
        match entry {
            Entry::Port(listen) => self
                .by_listen
                .get(&listen)
                .map(|&r| (Target::Route(r), Reason::Listener)),
            Entry::Vhost { .. } => {
                let mut key = [0u8; 256];
                request
                    .host
                    .and_then(|h| host_key(h, &mut key))
                    .and_then(|h| self.vhosts.route(h, request.path))
                    .map(|r| (Target::Route(r), Reason::Vhost))
                    .or(self
                        .default_service
                        .map(|s| (Target::Service(s), Reason::DefaultApp)))
            }
            Entry::AppId => request
                .app_id
                .and_then(|id| std::str::from_utf8(id).ok())
                .and_then(|id| self.by_app_id.get(id).copied())
                .map(|s| (Target::Service(s), Reason::AppId)),
        }
    }
}
