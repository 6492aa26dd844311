//! The routing table: what `compile` builds from the cluster, and what every reader consults.
//!
//! A table is immutable. Changes build a new one and swap it in whole (see `snapshot`); runtime
//! state that must survive a swap (connection counts, outlier records, draining) lives in
//! `backends`.

pub mod auth;
pub mod balance;
pub mod cidr;
pub mod compile;
pub mod digest;
pub mod edge;
pub mod edge_labels;
pub mod ip_per_task;
pub mod known_labels;
pub mod labels;
pub mod request_path;
pub mod resolve;
pub mod rollout;
pub mod routes;
pub mod vhosts;
pub mod vip;

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::cluster::{AppId, TaskId};
pub use balance::{Balance, Balancer};
pub use compile::{CompileConfig, compile};

#[derive(Debug, Default)]
pub struct RoutingTable {
    /// One per served app port, sorted by app id and port index. Shared: a service whose app
    /// did not change is the same in the next table (`compile::Cache`).
    pub services: crate::chunked::Chunked<std::sync::Arc<Service>>,
    /// What each entry point (port or vhost) sends traffic to.
    /// Shared, as the services are: a route none of whose members changed is the same in the
    /// next table (`compile::Cache`).
    pub routes: crate::chunked::Chunked<std::sync::Arc<routes::Route>>,
    /// Listen address → route (TCP).
    /// Looked up per connection: a fast hash (the keys are our own addresses, not input).
    /// Shared with the tables patched from this one (`compile::Cache`).
    pub by_listen: std::sync::Arc<rustc_hash::FxHashMap<SocketAddr, usize>>,
    /// UDP listen address (VIPs and service ports) → service. Shared, likewise.
    pub udp: std::sync::Arc<HashMap<SocketAddr, usize>>,
    /// What `compile` skipped or ignored, and why. Shared: a table patched for apps that kept
    /// their places has the last table's (`compile::Cache`).
    pub problems: std::sync::Arc<Vec<Problem>>,
    /// Host and path routes of the shared HTTP(S) listeners, to route indices.
    pub vhosts: std::sync::Arc<vhosts::Vhosts>,
    /// App id → the service of its first port (`X-Marathon-App-Id` routing, the default app).
    /// A fast hash, as `by_listen`'s: the keys are the apps' ids, not input (a request's header
    /// is only looked up), and hashing 50,000 of them per compile with SipHash was measurable.
    pub by_app_id: std::sync::Arc<rustc_hash::FxHashMap<crate::cluster::AppId, usize>>,
    pub default_service: Option<usize>,
    /// Certificate files named by served apps' `HAPROXY_{n}_SSL_CERT`.
    /// Shared, likewise.
    pub ssl_certs: std::sync::Arc<std::collections::BTreeSet<std::path::PathBuf>>,
    /// What instances compare to show they agree ([`digest::table_hash`]): computed once per
    /// table, when first asked for ([`RoutingTable::hash`]) — after the table is live, not
    /// between an event and its route (at 50,000 apps it takes longer than the rest of the
    /// swap).
    hash: std::sync::OnceLock<u64>,
    /// The bind address `compile` used, which the hash leaves out; `None`: not compiled.
    pub(crate) compiled_bind: Option<std::net::IpAddr>,
    /// Some served vhost is passed through by SNI or asks for client certificates: the HTTPS
    /// listeners read the ClientHello's server name before deciding (`edge_labels`).
    pub sni_rules: bool,
}

impl RoutingTable {
    /// The table hash ([`digest::table_hash`]); 0 for a table not compiled. A pure function of
    /// the table, computed on the first call.
    pub fn hash(&self) -> u64 {
        *self.hash.get_or_init(|| self.compute_hash())
    }

    /// The table hash, computed without holding the table's once-only cell while it is made:
    /// for the idle-priority thread (`crate::background`), which the scheduler may leave
    /// without a core for long. Were it inside [`RoutingTable::hash`]'s initialisation, an
    /// admin request asking for the hash meanwhile would wait for it at that priority; this
    /// way such a request makes the hash itself, and whichever is first is kept (they agree).
    pub fn hash_at_low_priority(&self) -> u64 {
        if let Some(&known) = self.hash.get() {
            return known;
        }
        let made = self.compute_hash();
        *self.hash.get_or_init(|| made)
    }

    fn compute_hash(&self) -> u64 {
        match self.compiled_bind {
            Some(bind) => digest::table_hash(self, bind),
            None => 0,
        }
    }

    /// Each route's apps and their weights as it routes them, by route name: what a swap's
    /// record and a plan compare between two tables.
    pub fn route_weights(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, u32>> {
        self.routes
            .iter()
            .map(|r| (r.name.clone(), r.weights()))
            .collect()
    }

    pub fn route_at(&self, listen: SocketAddr) -> Option<&routes::Route> {
        self.by_listen.get(&listen).map(|&r| &*self.routes[r])
    }
}

/// One service port of one app.
#[derive(Debug)]
pub struct Service {
    pub key: ServiceKey,
    /// Its own service port; `None` when it is reached by vhost only.
    pub listen: Option<SocketAddr>,
    /// The service port marathon-lb would name its backend after (`HAPROXY_{n}_PORT`, the
    /// app's, or the assigned one; 0: none), whether or not it is listened on.
    pub service_port: u16,
    /// The protocol of its own service port (the shared vhost listeners are always HTTP).
    pub mode: Mode,
    pub backends: Vec<Backend>,
    pub balancer: Balancer,
    pub http: HttpOptions,
    /// Its vhost routes as `host/path`, for display.
    pub vhosts: Vec<String>,
    /// `SWITCHYARD_{n}_WEIGHT`, its share of the routes it is in.
    pub weight: Option<u32>,
    /// `SWITCHYARD_{n}_CANARY_HEADER`: (lowercase name, value).
    pub canary: Option<(String, String)>,
    /// `SWITCHYARD_{n}_ROLLOUT`: a rollout plan naming this app's service the canary.
    pub rollout: Option<std::sync::Arc<rollout::Plan>>,
    pub deployment: labels::Deployment,
    /// HTTP mode speaks HTTP/2 (prior knowledge) to the backends.
    pub upstream_h2: bool,
    /// TCP mode: `SWITCHYARD_{n}_TCP_IDLE_TIMEOUT`, over `proxy.tcp_idle_timeout`.
    pub tcp_idle_timeout: Option<std::time::Duration>,
    /// `SWITCHYARD_{n}_…` edge labels: limits, timeouts, header rules, error pages,
    /// maintenance (`edge`); shared, as most services have none.
    pub edge: std::sync::Arc<edge::Edge>,
    /// How switchyard checks its backends itself (`None`: it leaves that to Marathon).
    pub probe: Option<crate::cluster::Probe>,
    /// The app's tasks that get no traffic, and why (for operators: not used to route).
    pub held_back: Vec<(crate::cluster::TaskId, &'static str)>,
    /// `SWITCHYARD_{n}_…` connection labels: PROXY protocol to the backends, TLS passthrough,
    /// TLS to the backends, client certificates (`edge_labels`). `edge` is the HTTP part.
    pub connection: edge_labels::EdgeLabels,
}

/// Per-service HTTP behaviour from marathon-lb's labels.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Plain-HTTP vhost requests get a 301 to https.
    pub redirect_to_https: bool,
    /// HTTPS responses carry Strict-Transport-Security.
    pub hsts: bool,
    /// A cookie pins a client to a backend.
    pub sticky: bool,
    /// Source blocks allowed; empty: everyone.
    pub acl: Vec<cidr::Cidr>,
    /// `HAPROXY_{n}_AUTH`: requests without these credentials get a 401.
    pub auth: Option<std::sync::Arc<auth::BasicAuth>>,
    /// marathon-lb's path rewriting (`proxy::rewrite`); `None`: none.
    pub rewrite: Option<std::sync::Arc<Rewrite>>,
}

/// `HAPROXY_{n}_HTTP_BACKEND_PROXYPASS_PATH`, `_REVPROXY_PATH` and `_REDIR`, with the app's
/// vhosts (marathon-lb's `{hostname}` in those templates). Applied by `proxy::rewrite`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Stripped from the front of request targets.
    pub proxy_path: Option<String>,
    /// `Location` and `Content-Location` answers go back under this path.
    pub revproxy_path: Option<String>,
    /// Requests for the root of the app's host are redirected (301) here.
    pub redirect_root: Option<String>,
    /// The app's vhosts.
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServiceKey {
    pub app_id: AppId,
    pub port_index: usize,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.app_id, self.port_index)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Tcp,
    Http,
    /// UDP VIPs and UDP service ports: datagrams relayed per client flow.
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub task_id: TaskId,
    pub weight: u32,
    /// Where its health is probed when not at `addr`: the task's port named by
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`. Boxed: rare, and inline it made a backend
    /// 88 bytes, where 64 is one cache line (a full compile writes 500,000 at 50k apps).
    pub probe_addr: Option<Box<SocketAddr>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Problem {
    pub app_id: AppId,
    pub port_index: Option<usize>,
    pub severity: Severity,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The input had no effect and is reported so the operator can remove it.
    Ignored,
    /// The app, port or task was skipped.
    Skipped,
    /// Served under another name than the rules give (a DNS label too long to carry): the
    /// reason names the one used.
    Renamed,
}

/// As logged: the reason quotes label keys, values and task ids, outside text, so it is shown
/// escaped (`text`), one line whatever it holds.
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = crate::text::escaped(&self.reason);
        match self.port_index {
            Some(n) => write!(f, "{} port {}: {reason}", self.app_id, n),
            None => write!(f, "{}: {reason}", self.app_id),
        }
    }
}
