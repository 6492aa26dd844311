//! `compile`: the pure function from (cluster, config) to a routing table.
//!
//! Every label is read and every conflict resolved here, deterministically: apps are visited in
//! id order, so every instance given the same cluster builds the same table. What cannot be
//! served is skipped and reported as a [`Problem`]; it never stops the rest from compiling.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::net::{IpAddr, SocketAddr};

use super::{
    Backend, Balancer, Problem, RoutingTable, Service, ServiceKey, Severity, known_labels, labels,
};
use crate::cluster::{App, Cluster, Networking, Probe, Protocol, Task};
use crate::routing::HttpOptions;
use crate::routing::Mode;
use crate::routing::routes::{Overrides, Route};
use crate::routing::vip::{self, VipSettings};

/// The part of the configuration that `compile` reads.
#[derive(Debug, Clone)]
pub struct CompileConfig {
    /// The groups served (`*`: every app).
    pub group: Vec<String>,
    pub serve_ungrouped: bool,
    pub strict_mode: bool,
    pub bind: IpAddr,
    /// switchyard's own listeners; a service port may not take one.
    pub reserved: Vec<SocketAddr>,
    /// The app (its first port) that answers vhost requests no route matches.
    pub default_app: Option<String>,
    /// Route weights set at runtime (admin API), by route name.
    pub weight_overrides: Overrides,
    /// Apps put in maintenance at runtime (admin API): as `SWITCHYARD_{n}_MAINTENANCE=true` on
    /// each of their ports.
    pub maintenance: std::collections::BTreeSet<crate::cluster::AppId>,
    /// VIPs: the range named VIPs get addresses from, and their balancer. `None`: no VIPs.
    pub vip: Option<VipSettings>,
    /// Active health checks; `None`: off.
    pub health: Option<HealthPolicy>,
    /// The range IP-per-task apps without service ports get theirs from (inclusive).
    pub ip_per_task_ports: (u16, u16),
}

/// How `compile` gives each service its probe (from `[health_checks]`).
#[derive(Debug, Clone, Default)]
pub struct HealthPolicy {
    /// Use the app's Marathon checks.
    pub from_marathon: bool,
    /// For ports no Marathon check covers.
    pub default: Option<Probe>,
}

impl HealthPolicy {
    /// The probe for port `n` of an app with Marathon checks `marathon`.
    pub fn probe(&self, marathon: &[Probe], n: usize) -> Option<Probe> {
        self.from_marathon
            .then(|| marathon.iter().find(|p| p.port_index == n).cloned())
            .flatten()
            .or_else(|| self.default.clone())
    }
}

impl CompileConfig {
    /// Every app of `group` (`*`: all) on `bind`, nothing reserved, no VIPs: for tests,
    /// benchmarks and fuzzing.
    pub fn group(group: &str, bind: IpAddr) -> CompileConfig {
        CompileConfig {
            group: vec![group.into()],
            serve_ungrouped: false,
            strict_mode: false,
            bind,
            reserved: Vec::new(),
            default_app: None,
            weight_overrides: Overrides::new(),
            maintenance: Default::default(),
            vip: None,
            health: None,
            ip_per_task_ports: (10050, 10100),
        }
    }

    /// Whether a port with group label `groups` (its value, `None` without one) is served.
    fn serves(&self, groups: Option<&str>) -> bool {
        if self.group.iter().any(|g| g == "*") {
            return true;
        }
        match groups {
            None => self.serve_ungrouped,
            Some(groups) => labels::groups(groups)
                .any(|g| g == "*" || self.group.iter().any(|c| c.as_str() == g)),
        }
    }
}

/// Compiles `cluster` from scratch.
pub fn compile(cluster: &Cluster, config: &CompileConfig) -> RoutingTable {
    cache::compile_fresh(cluster, config)
}

/// One app's part of the table, and what it was compiled from.
struct Part {
    app: std::sync::Arc<App>,
    maintenance: bool,
    assigned: Vec<Option<u16>>,
    notices: Vec<Problem>,
    ports: Ports,
}

/// An app's port parts, in port order: one inline (nearly every app has one port: no list
/// allocated and freed per app), more in a list. The inline variant is the large one on
/// purpose: boxing it would bring back the block per app this saves.
#[allow(clippy::large_enum_variant)]
enum Ports {
    One(PortPart),
    Many(Vec<PortPart>),
}

impl std::ops::Deref for Ports {
    type Target = [PortPart];

    fn deref(&self) -> &[PortPart] {
        match self {
            Ports::One(port) => std::slice::from_ref(port),
            Ports::Many(ports) => ports,
        }
    }
}

/// One app port's part: what it says before any port is claimed, and what it serves once its
/// ports are.
struct PortPart {
    /// Problems found before claiming ports.
    early: Vec<Problem>,
    /// `None`: not served, whatever the claims.
    claim: Option<ClaimPart>,
}

struct ClaimPart {
    key: ServiceKey,
    ip: IpAddr,
    service_port: u16,
    group: Option<String>,
    alt: Option<u16>,
    /// The UDP service of a `udp` or `udp,tcp` port with a service port, and its backends'
    /// problems (said by the UDP side only for a `udp` port).
    udp: Option<(std::sync::Arc<Service>, Vec<Problem>)>,
    /// `None` for a `udp` port.
    tcp: Option<TcpPart>,
}

struct TcpPart {
    /// Built with its service port listened on, as it is unless another app holds the port.
    service: std::sync::Arc<Service>,
    /// Its backends' problems and the health-check port's, said once it is served.
    late: Vec<Problem>,
    hosts: std::sync::Arc<[String]>,
    paths: std::sync::Arc<[String]>,
    ignore_case: bool,
    weight: i64,
    ssl_certs: Vec<std::path::PathBuf>,
    sni_rules: bool,
}

/// One app's part of the table: its labels read, backends found and services built, as far as
/// they do not depend on other apps.
fn compile_app(
    cluster: &Cluster,
    app: &std::sync::Arc<App>,
    config: &CompileConfig,
    maintenance: bool,
    assigned: Vec<Option<u16>>,
) -> Part {
    let notices = known_labels::app_notices(&app.labels, app.ports.len())
        .into_iter()
        .map(|reason| Problem {
            app_id: app.id.clone(),
            port_index: None,
            severity: Severity::Ignored,
            reason,
        })
        .collect();
    let port = |n| compile_port(cluster, app, n, config, maintenance, &assigned);
    let ports = match app.ports.len() {
        1 => Ports::One(port(0)),
        count => Ports::Many((0..count).map(port).collect()),
    };
    Part {
        app: app.clone(),
        maintenance,
        assigned,
        notices,
        ports,
    }
}

/// Port `n` of `app`: see [`PortPart`].
fn compile_port(
    cluster: &Cluster,
    app: &App,
    n: usize,
    config: &CompileConfig,
    maintenance: bool,
    assigned: &[Option<u16>],
) -> PortPart {
    let port = &app.ports[n];
    let mut early = Vec::new();
    let problem_of = |severity, reason: String| Problem {
        app_id: app.id.clone(),
        port_index: Some(n),
        severity,
        reason,
    };
    let mut problem = |severity, reason: String| early.push(problem_of(severity, reason));
    // The port's labels gathered once, for the three readers below.
    let keys = known_labels::PortKeys::of(&app.labels, n);
    let labels = match labels::read_keys(&keys, &app.labels, n) {
        Ok(l) => l,
        Err(reason) => {
            problem(Severity::Skipped, reason);
            return PortPart { early, claim: None };
        }
    };
    for notice in &labels.notices {
        problem(Severity::Ignored, notice.clone());
    }
    let mode = labels::mode(&labels, &app.checks, n);
    // Without `SWITCHYARD_{n}_` labels and not in maintenance (most ports): the default edge,
    // shared, with nothing to read, check or compare (an `Edge` is large: built, compared with
    // another default and dropped, it was a few percent of a full compile).
    let edge = if keys.own.is_empty() && !maintenance {
        super::edge::Edge::shared_default()
    } else {
        let (mut edge, findings) = super::edge::read_own(&keys.own, n);
        edge.maintenance |= maintenance;
        for notice in findings.ignored {
            problem(Severity::Ignored, notice);
        }
        if let Some(reason) = findings.skip {
            problem(Severity::Skipped, reason);
            return PortPart { early, claim: None };
        }
        // A tcp port cannot answer with a page: in maintenance it is not served at all.
        if mode != Mode::Http && edge.maintenance {
            problem(
                Severity::Skipped,
                format!(
                    "SWITCHYARD_{n}_MAINTENANCE on a tcp port: it cannot answer with a page, \
                     so the port is not served until maintenance ends"
                ),
            );
            return PortPart { early, claim: None };
        }
        let plain = edge == super::edge::Edge::default();
        if mode != Mode::Http && !plain {
            let connect_only = super::edge::Edge {
                timeouts: super::edge::Timeouts {
                    connect: edge.timeouts.connect,
                    ..Default::default()
                },
                ..Default::default()
            };
            if edge != connect_only {
                problem(
                    Severity::Ignored,
                    format!(
                        "SWITCHYARD_{n}_ limits, header rules, error pages, maintenance and \
                         response/tunnel timeouts apply in HTTP mode; this port is tcp, \
                         ignored (CONNECT_TIMEOUT and TCP_IDLE_TIMEOUT apply)"
                    ),
                );
            }
        }
        if plain {
            super::edge::Edge::shared_default()
        } else {
            std::sync::Arc::new(edge)
        }
    };
    if !config.serves(labels.groups) {
        return PortPart { early, claim: None };
    }
    if config.strict_mode && labels.enabled != Some(true) {
        return PortPart { early, claim: None };
    }
    if labels.enabled == Some(false) {
        return PortPart { early, claim: None };
    }
    // A tcp-mode service port relays bytes and cannot ask for credentials: serving it
    // (or only its vhosts) would leave the port open. Never open: not served.
    if labels.auth.is_some() && mode != Mode::Http {
        problem(
            Severity::Skipped,
            format!(
                "HAPROXY_{n}_AUTH needs HAPROXY_{n}_MODE=http: a tcp port cannot ask \
                 for credentials, so the port is not served"
            ),
        );
        return PortPart { early, claim: None };
    }
    let connection = match super::edge_labels::read(&keys, n, mode, !labels.vhosts.is_empty()) {
        Ok(connection) => connection,
        Err(reason) => {
            problem(Severity::Skipped, reason);
            return PortPart { early, claim: None };
        }
    };
    let key = ServiceKey {
        app_id: app.id.clone(),
        port_index: n,
    };
    // The service port (and a blue-green alternate port): none assigned, or taken, leaves
    // the app port served by vhost only.
    let group = labels.deployment.group.clone();
    let ip = labels.bind_addr.unwrap_or(config.bind);
    let mut service_port = labels.port.unwrap_or(port.service_port);
    if app.assign_service_ports && labels.port.is_none() {
        let (min, max) = config.ip_per_task_ports;
        match assigned.get(n).copied().flatten() {
            Some(p) => service_port = p,
            None if !app.tasks.is_empty() => problem(
                Severity::Skipped,
                format!("no service port: the IP-per-task range {min}-{max} is used up"),
            ),
            None => {}
        }
    }
    // `udp` and `udp,tcp` ports: a UDP service on the service port, relayed per client
    // flow as UDP VIPs are (`proxy::udp`); a `udp,tcp` port gets its TCP service too.
    let udp_only = port.protocol == Protocol::Udp;
    // No service port: nothing to listen on (UDP has no vhosts; VIPs are apart).
    let udp = (port.protocol != Protocol::Tcp && service_port != 0).then(|| {
        let udp_key = ServiceKey {
            app_id: format!("udp:{}", app.id).into(),
            port_index: n,
        };
        // A `udp,tcp` port's task problems are said once, by its TCP side.
        let mut late = Vec::new();
        let (backends, held_back) = if udp_only {
            backends(cluster, app, n, &mut |severity, reason| {
                late.push(problem_of(severity, reason))
            })
        } else {
            backends(cluster, app, n, &mut |_, _| {})
        };
        let service = Service {
            held_back,
            vhosts: Vec::new(),
            upstream_h2: false,
            tcp_idle_timeout: None,
            edge: super::edge::Edge::shared_default(),
            connection: Default::default(),
            // Probes are TCP or HTTP: nothing to probe a UDP port with.
            probe: None,
            weight: None,
            canary: None,
            rollout: None,
            deployment: labels.deployment.clone(),
            key: udp_key,
            listen: Some(SocketAddr::new(ip, service_port)),
            service_port,
            mode: Mode::Udp,
            balancer: balancer(labels.balance, &backends),
            backends,
            http: HttpOptions::default(),
        };
        (std::sync::Arc::new(service), late)
    });
    let alt = labels.deployment.alt_port.filter(|&p| p != service_port);
    if udp_only {
        return PortPart {
            early,
            claim: Some(ClaimPart {
                key,
                ip,
                service_port,
                group,
                alt,
                udp,
                tcp: None,
            }),
        };
    }
    let mut late = Vec::new();
    let (mut backends, held_back) = backends(cluster, app, n, &mut |severity, reason| {
        late.push(problem_of(severity, reason))
    });
    // HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX: the backends are probed on the task's
    // port of that index, with that port's check.
    let mut probe_port = n;
    if let Some(k) = labels.healthcheck_port_index.filter(|&k| k != n) {
        if k < app.ports.len() {
            probe_port = k;
            for b in &mut backends {
                b.probe_addr = app
                    .tasks
                    .get(&b.task_id)
                    .and_then(|t| backend_addr(cluster, app, k, t).ok())
                    .map(Box::new);
            }
        } else {
            // marathon_lb.py, get_backend_port: "if its value is nonsense simply return
            // the app port".
            late.push(problem_of(
                Severity::Ignored,
                format!(
                    "HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX={k}: the app has no port \
                     {k}; the port's own check is used"
                ),
            ));
        }
    }
    let vhosts = labels
        .vhosts
        .iter()
        .flat_map(|h| {
            let paths = if labels.paths.is_empty() {
                vec![String::new()]
            } else {
                labels.paths.clone()
            };
            let ci = if labels.paths_ignore_case && !labels.paths.is_empty() {
                " (-i)"
            } else {
                ""
            };
            paths.into_iter().map(move |p| format!("{h}{p}{ci}"))
        })
        .collect();
    let rewrite = labels.rewrite.clone().map(|r| {
        std::sync::Arc::new(crate::routing::Rewrite {
            hosts: labels.vhosts.clone(),
            ..r
        })
    });
    let tcp = TcpPart {
        late,
        hosts: shared_list(&labels.vhosts),
        paths: shared_list(&labels.paths),
        ignore_case: labels.paths_ignore_case,
        weight: labels.backend_weight,
        ssl_certs: labels
            .ssl_certs
            .iter()
            .map(std::path::PathBuf::from)
            .collect(),
        sni_rules: connection.tls_passthrough || connection.client_ca.is_some(),
        service: std::sync::Arc::new(Service {
            held_back,
            vhosts,
            upstream_h2: labels.upstream_h2,
            tcp_idle_timeout: labels.tcp_idle_timeout,
            edge,
            connection,
            probe: config
                .health
                .as_ref()
                .and_then(|h| h.probe(&app.probes, probe_port)),
            weight: labels.weight,
            canary: labels.canary_header,
            rollout: labels.rollout,
            deployment: labels.deployment,
            key: key.clone(),
            listen: (service_port != 0).then(|| SocketAddr::new(ip, service_port)),
            service_port,
            mode,
            balancer: balancer(labels.balance, &backends),
            backends,
            http: HttpOptions {
                redirect_to_https: labels.redirect_to_https,
                hsts: labels.hsts,
                sticky: labels.sticky,
                acl: labels.acl,
                auth: labels.auth,
                rewrite,
            },
        }),
    };
    PortPart {
        early,
        claim: Some(ClaimPart {
            key,
            ip,
            service_port,
            group,
            alt,
            udp,
            tcp: Some(tcp),
        }),
    }
}

impl Service {
    /// A copy listening on `listen` instead, with a balancer of its own: for a table in which
    /// another app holds its service port.
    fn relisten(&self, listen: Option<SocketAddr>) -> Service {
        Service {
            key: self.key.clone(),
            listen,
            service_port: self.service_port,
            mode: self.mode,
            balancer: balancer(self.balancer.kind(), &self.backends),
            backends: self.backends.clone(),
            http: self.http.clone(),
            vhosts: self.vhosts.clone(),
            weight: self.weight,
            canary: self.canary.clone(),
            rollout: self.rollout.clone(),
            deployment: self.deployment.clone(),
            upstream_h2: self.upstream_h2,
            tcp_idle_timeout: self.tcp_idle_timeout,
            edge: self.edge.clone(),
            probe: self.probe.clone(),
            held_back: self.held_back.clone(),
            connection: self.connection.clone(),
        }
    }
}

/// The balancer of a service's `backends`: their ids (for consistent hashing) made only for
/// the balancers that hash.
fn balancer(kind: super::Balance, backends: &[Backend]) -> Balancer {
    // Weights of one (every backend compile makes; VIPs' may differ): a shared slice, no list
    // per service.
    static ONES: [u32; 64] = [1; 64];
    let listed: Vec<u32>;
    let weights = if backends.len() <= ONES.len() && backends.iter().all(|b| b.weight == 1) {
        &ONES[..backends.len()]
    } else {
        listed = backends.iter().map(|b| b.weight).collect();
        &listed[..]
    };
    let ids = match kind {
        super::Balance::Source | super::Balance::Maglev => ids(backends),
        _ => Vec::new(),
    };
    Balancer::with_ids(kind, weights, &ids)
}

/// A list of vhosts or paths as a service's entry points hold it: the empty list (most
/// ports') shared, not allocated per port.
fn shared_list(list: &[String]) -> std::sync::Arc<[String]> {
    static EMPTY: std::sync::OnceLock<std::sync::Arc<[String]>> = std::sync::OnceLock::new();
    if list.is_empty() {
        EMPTY
            .get_or_init(|| std::sync::Arc::from(Vec::new()))
            .clone()
    } else {
        list.into()
    }
}

/// Stable backend ids for consistent hashing: their addresses.
fn ids(backends: &[Backend]) -> Vec<u64> {
    backends
        .iter()
        .map(|b| super::balance::maglev::id_of(b.addr))
        .collect()
}

#[path = "compile_backends.rs"]
mod backends_of;
#[cfg(test)]
use backends_of::backend_order;
use backends_of::{backend_addr, backends};

#[path = "compile_assemble.rs"]
mod assembly;
use assembly::assemble;

#[path = "compile_cache.rs"]
mod cache;
pub use cache::{Cache, Patched, compile_cached, compile_changed};

#[path = "compile_prefetch.rs"]
mod prefetch;

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "compile_mlb_tests.rs"]
mod mlb_tests;

#[cfg(test)]
#[path = "compile_cache_tests.rs"]
mod cache_tests;
