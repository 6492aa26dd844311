//! The live table as the admin API shows it: `/v1/routes` (routes, services, backends, VIPs,
//! problems, the source's state) and `/v1/explain` (where a request or connection would go, and
//! why, by the proxy's own resolution).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use super::percent_decode;
use crate::reconciler::Status;
use crate::routing::{Balance, Mode, Problem};
use crate::snapshot::Snapshot;

#[derive(Serialize)]
pub(super) struct RoutesView<'a> {
    generation: u64,
    created_unix_ms: u64,
    ready: bool,
    source_connected: bool,
    last_sync_unix_ms: u64,
    services: Vec<ServiceView<'a>>,
    routes: Vec<RouteView<'a>>,
    /// The source's failure first (`source`, `severity: error`, `reason`), then the table's
    /// problems (`app_id`, `port_index`, `severity`, `reason`).
    problems: Vec<ProblemView<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ProblemView<'a> {
    Source {
        source: String,
        severity: &'static str,
        reason: String,
        since_unix_ms: u64,
    },
    Table(&'a Problem),
}

#[derive(Serialize)]
struct RouteView<'a> {
    name: &'a str,
    listen: Vec<SocketAddr>,
    vhosts: Vec<String>,
    overridden: bool,
    members: Vec<MemberView<'a>>,
}

#[derive(Serialize)]
struct MemberView<'a> {
    #[serde(flatten)]
    member: &'a crate::routing::routes::Member,
    port_index: usize,
    backends: usize,
    colour: Option<&'a str>,
}

#[derive(Serialize)]
struct ServiceView<'a> {
    app_id: &'a str,
    port_index: usize,
    /// Its own service port, if any.
    listen: Option<SocketAddr>,
    mode: Mode,
    balance: Balance,
    /// `open`, `none` (vhost only), or why the port could not be bound.
    listener: String,
    vhosts: &'a [String],
    backends: Vec<BackendView<'a>>,
    /// Tasks of the app that get no traffic, and why.
    held_back: Vec<HeldBackView<'a>>,
    /// PROXY protocol to the backends, TLS passthrough, TLS to the backends, client CA; only
    /// when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    edge: Option<&'a crate::routing::edge_labels::EdgeLabels>,
}

#[derive(Serialize)]
struct BackendView<'a> {
    task_id: &'a str,
    address: SocketAddr,
    active: usize,
    /// Connections (TCP) or requests (HTTP) sent to it so far: the dashboard's live split.
    total: u64,
}

#[derive(Serialize)]
struct HeldBackView<'a> {
    task_id: &'a str,
    reason: &'a str,
}

pub(super) fn routes<'a>(
    snapshot: &'a Snapshot,
    failures: &BTreeMap<SocketAddr, String>,
    status: &Status,
) -> RoutesView<'a> {
    let unix_ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let services = snapshot
        .table
        .services
        .iter()
        .zip(&snapshot.states)
        .map(|(s, states)| ServiceView {
            app_id: &s.key.app_id,
            port_index: s.key.port_index,
            listen: s.listen,
            mode: s.mode,
            balance: s.balancer.kind(),
            listener: match s.listen {
                None => "none".to_string(),
                Some(listen) => failures
                    .get(&listen)
                    .map_or_else(|| "open".to_string(), |e| format!("bind failed: {e}")),
            },
            vhosts: &s.vhosts,
            edge: Some(&s.edge).filter(|e| **e != Default::default()),
            backends: s
                .backends
                .iter()
                .zip(states)
                .map(|(b, st)| BackendView {
                    task_id: &b.task_id,
                    address: b.addr,
                    active: st.active(),
                    total: st.metrics.connections.get(),
                })
                .collect(),
            held_back: s
                .held_back
                .iter()
                .map(|(task_id, reason)| HeldBackView { task_id, reason })
                .collect(),
        })
        .collect();
    let table = &snapshot.table;
    let routes = table
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| RouteView {
            name: &r.name,
            listen: {
                let mut listen: Vec<SocketAddr> = table
                    .by_listen
                    .iter()
                    .filter(|(_, x)| **x == i)
                    .map(|(a, _)| *a)
                    .collect();
                listen.sort();
                listen
            },
            vhosts: table
                .vhosts
                .entries()
                .filter(|(_, _, x)| *x == i)
                .map(|(h, p, _)| format!("{h}{p}"))
                .collect(),
            overridden: r.overridden,
            members: r
                .members
                .iter()
                .map(|m| MemberView {
                    member: m,
                    port_index: table.services[m.service].key.port_index,
                    backends: table.services[m.service].backends.len(),
                    colour: table.services[m.service].deployment.colour.as_deref(),
                })
                .collect(),
        })
        .collect();
    RoutesView {
        routes,
        generation: snapshot.generation,
        created_unix_ms: unix_ms(snapshot.created),
        ready: status.ready.load(Ordering::Relaxed),
        source_connected: status.connected.load(Ordering::Relaxed),
        last_sync_unix_ms: status.last_sync_unix_ms.load(Ordering::Relaxed),
        services,
        problems: {
            let source = status.source_error.lock().unwrap().clone();
            let never_loaded = !status.ready.load(Ordering::Relaxed);
            source
                .map(|e| ProblemView::Source {
                    source: e.source,
                    severity: "error",
                    reason: if never_loaded {
                        format!(
                            "{} (never loaded: nothing is served until it does)",
                            e.error
                        )
                    } else {
                        format!("{} (serving the last good state)", e.error)
                    },
                    since_unix_ms: e.since_unix_ms,
                })
                .into_iter()
                .chain(snapshot.table.problems.iter().map(ProblemView::Table))
                // The DNS zone's: names served otherwise than the rules give.
                .chain(
                    snapshot
                        .dns
                        .iter()
                        .flat_map(|zone| zone.problems.iter())
                        .map(ProblemView::Table),
                )
                .collect()
        },
    }
}

/// Which route, apps and backends a request or connection would take, and why:
/// `?host=H&path=P` (the vhost listeners) or `?port=N` (a service port or VIP).
pub(super) fn explain(snapshot: &Snapshot, query: &str) -> serde_json::Value {
    use serde_json::json;
    let param = |key: &str| {
        query.split('&').find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| percent_decode(v))
        })
    };
    let table = &snapshot.table;
    let (route, why) = if let Some(host) = param("host") {
        use crate::routing::resolve::{Entry, Reason, Request, Target};
        let path = param("path").unwrap_or_else(|| "/".into());
        // The proxy's own resolution, so that what is explained is what a request gets.
        let request = Request {
            host: Some(host.as_bytes()),
            path: path.split('?').next().unwrap_or("/"),
            app_id: None,
        };
        match table.resolve(Entry::Vhost { https: false }, request) {
            Some((Target::Route(r), _)) => (
                Some(r),
                format!(
                    "vhost {host} path {path} matched route {:?}",
                    table.routes[r].name
                ),
            ),
            Some((Target::Service(s), Reason::DefaultApp)) => {
                return json!({"why": format!("no vhost matched {host}{path}: the default app answers"),
                              "service": table.services[s].key.to_string()});
            }
            _ => return json!({"why": format!("no vhost matched {host}{path}: 503")}),
        }
    } else if let Some(port) = param("port").and_then(|p| p.parse::<u16>().ok()) {
        match table.by_listen.iter().find(|(a, _)| a.port() == port) {
            Some((addr, &r)) => (
                Some(r),
                format!("listener {addr} serves route {:?}", table.routes[r].name),
            ),
            None => return json!({"why": format!("nothing listens on port {port}")}),
        }
    } else {
        return json!({"error": "ask ?host=H&path=P or ?port=N"});
    };
    let route = &table.routes[route.expect("set above")];
    let members: Vec<serde_json::Value> = route
        .members
        .iter()
        .map(|m| {
            let s = &table.services[m.service];
            json!({
                "app_id": &*m.app_id,
                "weight": m.weight,
                "weight_from": m.weight_from.as_str(),
                "balance": s.balancer.kind(),
                "backends": s.backends.iter().zip(&snapshot.states[m.service]).map(|(b, st)| json!({
                    "task_id": &*b.task_id, "address": b.addr.to_string(), "active": st.active(),
                })).collect::<Vec<_>>(),
                "acl": !s.http.acl.is_empty(),
                "auth": s.http.auth.as_ref().map(|a| a.realm.as_str()),
                "sticky": s.http.sticky,
            })
        })
        .collect();
    json!({"why": why, "route": route.name, "overridden": route.overridden, "members": members})
}
