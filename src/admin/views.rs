//! The live table as the admin API shows it: `/v1/routes` (routes, services, backends, VIPs,
//! problems, the source's state) and `/v1/explain` (where a request or connection would go, and
//! why, by the proxy's own resolution).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use super::percent_decode;
use crate::backends::{BackendKey, BackendState};
use crate::reconciler::Status;
use crate::routing::{Balance, Mode, Problem};
use crate::snapshot::Snapshot;

#[derive(Serialize)]
pub(super) struct RoutesView<'a> {
    generation: u64,
    /// The table's hash (16 hex digits): equal on instances that route alike.
    table_hash: String,
    created_unix_ms: u64,
    ready: bool,
    source_connected: bool,
    last_sync_unix_ms: u64,
    /// Present when a page was asked for (`offset`, `limit` or `filter`): then `routes` holds
    /// that page and `services` only the services its routes use.
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<PageView>,
    services: Walked<'a, ServiceView<'a>>,
    /// Draining backends of services no longer in the table.
    draining: Vec<DrainingView<'a>>,
    routes: Vec<RouteView<'a>>,
    /// The source's failure first (`source`, `severity: error`, `reason`), then the table's
    /// problems (`app_id`, `port_index`, `severity`, `reason`).
    problems: Vec<ProblemView<'a>>,
    /// The Mesos source's state, when one is configured: connected, leader, counts, skipped
    /// records.
    #[serde(skip_serializing_if = "Option::is_none")]
    mesos: Option<crate::discovery::mesos::Report>,
}

/// A list written as it is walked (serde's `collect_seq`), once: `/v1/routes`' services are
/// made one at a time while the answer is written, not all before it (at 50,000 apps × 10
/// tasks the made list was 180 MB beside the text being written).
pub(super) struct Walked<'a, T>(std::cell::RefCell<Option<Box<dyn Iterator<Item = T> + 'a>>>);

impl<'a, T> Walked<'a, T> {
    fn new(items: impl Iterator<Item = T> + 'a) -> Walked<'a, T> {
        Walked(std::cell::RefCell::new(Some(Box::new(items))))
    }
}

impl<T: Serialize> Serialize for Walked<'_, T> {
    /// The items, the first time; an empty list after.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let items = self.0.borrow_mut().take();
        serializer.collect_seq(items.into_iter().flatten())
    }
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
    /// Its canary rollout, if it has one (`crate::rollout`).
    rollout: Option<crate::rollout::Rollout>,
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
    /// Backends that left this service and still drain (see `BackendView::state`).
    draining: Vec<BackendView<'a>>,
    /// Tasks of the app that get no traffic, and why.
    held_back: Vec<HeldBackView<'a>>,
    /// Its edge labels in effect, when any: the HTTP part (limits, timeouts, header rules,
    /// pages, maintenance) and the connection part (PROXY protocol to the backends, TLS
    /// passthrough, TLS to the backends, client CA), each only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    edge: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct BackendView<'a> {
    /// Empty (left out) for a draining backend: its task is gone.
    #[serde(skip_serializing_if = "str::is_empty")]
    task_id: &'a str,
    address: SocketAddr,
    active: usize,
    /// Connections (TCP) or requests (HTTP) sent to it so far: the dashboard's live split.
    total: u64,
    /// `up`; `down` (failing active health checks); `ejected` (an outlier, until
    /// `ejected_until_unix_ms`); `draining` (left the table, cut at `drain_until_unix_ms`).
    state: &'static str,
    /// Wall-clock end of the current outlier ejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    ejected_until_unix_ms: Option<u64>,
    /// Wall-clock end of the drain: open connections are cut then.
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_until_unix_ms: Option<u64>,
    /// Active health probes failed in a row (0 after a pass, or without checks).
    health_failures: u32,
    /// Times ejected as an outlier so far.
    ejections: u64,
    /// Failed connects plus 5xx answers so far.
    errors: u64,
    connect_failures: u64,
    responses_5xx: u64,
}

impl<'a> BackendView<'a> {
    /// Read from the backend's counters and atomics: no lock on the proxy's path.
    fn new(task_id: &'a str, st: &BackendState) -> BackendView<'a> {
        let now = SystemTime::now();
        let ejected_until_unix_ms = st.outlier.ejected_for().map(|left| unix_ms(now + left));
        let drain_until_unix_ms = st.drain_deadline().map(|deadline| {
            unix_ms(now + deadline.saturating_duration_since(tokio::time::Instant::now()))
        });
        let state = if drain_until_unix_ms.is_some() {
            "draining"
        } else if ejected_until_unix_ms.is_some() {
            "ejected"
        } else if st.health.is_down() {
            "down"
        } else {
            "up"
        };
        let connect_failures = st.metrics.connect_failures();
        let responses_5xx = st.metrics.responses(5);
        BackendView {
            task_id,
            address: st.addr,
            active: st.active(),
            total: st.metrics.connections(),
            state,
            ejected_until_unix_ms,
            drain_until_unix_ms,
            health_failures: st.health.failures(),
            ejections: st.metrics.ejections(),
            errors: connect_failures + responses_5xx,
            connect_failures,
            responses_5xx,
        }
    }
}

/// A backend that left the table and still drains, under the service it belonged to.
#[derive(Serialize)]
struct DrainingView<'a> {
    app_id: &'a str,
    port_index: usize,
    #[serde(flatten)]
    backend: BackendView<'a>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Serialize)]
struct HeldBackView<'a> {
    task_id: &'a str,
    reason: &'a str,
}

/// A service's edge settings, as `/v1/routes` shows them: the HTTP part's keys and the
/// connection part's (`edge_labels`) in one object, each part only when set; `None` when
/// neither is.
fn edge_view(
    edge: &crate::routing::edge::Edge,
    connection: &crate::routing::edge_labels::EdgeLabels,
    limits: Option<&std::sync::Arc<crate::backends::limits::AppLimits>>,
) -> Option<serde_json::Value> {
    let http = http_edge_view(edge, limits);
    if *connection == Default::default() {
        return http;
    }
    let mut view = http.unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if let (Some(view), Ok(serde_json::Value::Object(connection))) =
        (view.as_object_mut(), serde_json::to_value(connection))
    {
        view.extend(connection);
    }
    Some(view)
}

/// The HTTP part of a service's edge settings (`routing::edge`); `None` when it has none.
fn http_edge_view(
    edge: &crate::routing::edge::Edge,
    limits: Option<&std::sync::Arc<crate::backends::limits::AppLimits>>,
) -> Option<serde_json::Value> {
    use serde_json::json;
    if *edge == crate::routing::edge::Edge::default() {
        return None;
    }
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
    let pages: Vec<u16> = [502, 503, 504]
        .into_iter()
        .filter(|s| edge.pages.get(*s).is_some())
        .collect();
    Some(json!({
        "rate_limit": edge.rate.as_ref().map(|r| json!({
            "rate": r.text,
            "burst": r.burst,
            "by": if r.per_client { "client" } else { "app" },
        })),
        "max_concurrent_requests": edge.max_concurrent,
        "max_pending_requests": edge.max_pending,
        "in_flight": limits.filter(|_| edge.max_concurrent.is_some()).map(|l| l.in_flight()),
        "connect_timeout_ms": ms(edge.timeouts.connect),
        "response_timeout_ms": ms(edge.timeouts.response),
        "tunnel_timeout_ms": ms(edge.timeouts.tunnel),
        "request_header_rules": edge.request_headers.remove.len() + edge.request_headers.add.len(),
        "response_header_rules": edge.response_headers.remove.len() + edge.response_headers.add.len(),
        "error_pages": pages,
        "maintenance": edge.maintenance,
    }))
}

/// Which part of the table `/v1/routes` answers with: `?offset=N&limit=M` a page of the routes
/// (in table order, at most [`Page::MAX_LIMIT`]), `filter=TEXT` only routes whose name or one
/// of whose apps' ids contains TEXT. Without any of them: everything (the full answer).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Page {
    offset: usize,
    limit: Option<usize>,
    filter: Option<String>,
}

impl Page {
    /// The largest page served; a larger `limit` is cut to it.
    pub(super) const MAX_LIMIT: usize = 1000;

    pub(super) fn parse(query: &str) -> Page {
        let mut page = Page::default();
        for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            match key {
                "offset" => page.offset = value.parse().unwrap_or(0),
                "limit" => {
                    page.limit = Some(
                        value
                            .parse()
                            .map_or(Self::MAX_LIMIT, |l: usize| l.min(Self::MAX_LIMIT)),
                    )
                }
                "filter" | "name" => {
                    let f = percent_decode(&value.replace('+', " "));
                    page.filter = (!f.is_empty()).then_some(f);
                }
                _ => {}
            }
        }
        page
    }

    /// Whole table: no paging asked for (the answer has no `page` object).
    pub(super) fn is_whole(&self) -> bool {
        *self == Page::default()
    }
}

/// Where a paged answer is in the table: `total` routes matched the filter (of `routes_total`),
/// and this page holds `routes.len()` of them from `offset`.
#[derive(Serialize)]
struct PageView {
    offset: usize,
    limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
    total: usize,
    routes_total: usize,
}

pub(super) fn routes<'a>(
    snapshot: &'a Snapshot,
    failures: &'a BTreeMap<SocketAddr, String>,
    status: &Status,
    draining: &'a [(BackendKey, std::sync::Arc<BackendState>)],
    page: &Page,
    rollouts: &BTreeMap<String, crate::rollout::Rollout>,
) -> RoutesView<'a> {
    let table = &snapshot.table;
    // The page's routes, and (when paged) only the services their members use.
    let matching: Vec<usize> = (0..table.routes.len())
        .filter(|&i| {
            page.filter.as_deref().is_none_or(|f| {
                let r = &table.routes[i];
                r.name.contains(f) || r.members.iter().any(|m| m.app_id.contains(f))
            })
        })
        .collect();
    let shown: Vec<usize> = matching
        .iter()
        .copied()
        .skip(page.offset)
        .take(page.limit.unwrap_or(usize::MAX))
        .collect();
    let services_shown: Option<std::collections::HashSet<usize>> = (!page.is_whole()).then(|| {
        shown
            .iter()
            .flat_map(|&i| table.routes[i].members.iter().map(|m| m.service))
            .collect()
    });
    let page_view = (!page.is_whole()).then(|| PageView {
        offset: page.offset,
        limit: page.limit,
        filter: page.filter.clone(),
        total: matching.len(),
        routes_total: table.routes.len(),
    });
    // Each route's listeners and vhosts, gathered in one pass (not one scan per route).
    let mut listen_of: Vec<Vec<SocketAddr>> = vec![Vec::new(); table.routes.len()];
    for (a, r) in table.by_listen.iter() {
        if let Some(l) = listen_of.get_mut(*r) {
            l.push(*a);
        }
    }
    let mut on_page = vec![false; table.routes.len()];
    for &i in &shown {
        on_page[i] = true;
    }
    let mut vhosts_of: Vec<Vec<String>> = vec![Vec::new(); table.routes.len()];
    for (h, p, r) in table.vhosts.entries() {
        if on_page.get(r).copied().unwrap_or(false)
            && let Some(v) = vhosts_of.get_mut(r)
        {
            v.push(format!("{h}{p}"));
        }
    }
    // Drained ones with no connection left are forgotten at the next swap: not shown.
    let draining: Vec<_> = draining
        .iter()
        .filter(|(_, st)| {
            st.active() > 0
                || st
                    .drain_deadline()
                    .is_some_and(|d| d > tokio::time::Instant::now())
        })
        .collect();
    // By service, once (a lookup per service, not a scan of every draining backend).
    let mut draining_by_service: HashMap<&crate::routing::ServiceKey, Vec<&BackendState>> =
        HashMap::new();
    for ((key, _), st) in &draining {
        draining_by_service.entry(key).or_default().push(st);
    }
    let in_table: std::collections::HashSet<&crate::routing::ServiceKey> =
        table.services.iter().map(|s| &s.key).collect();
    let draining_gone = draining
        .iter()
        .filter(|((k, _), _)| !in_table.contains(k))
        .map(|((k, _), st)| DrainingView {
            app_id: &k.app_id,
            port_index: k.port_index,
            backend: BackendView::new("", st),
        })
        .collect();
    let draining_of = move |key: &crate::routing::ServiceKey| -> Vec<BackendView<'a>> {
        draining_by_service
            .get(key)
            .into_iter()
            .flatten()
            .map(|st| BackendView::new("", st))
            .collect()
    };
    let services = snapshot
        .table
        .services
        .iter()
        .zip(&snapshot.states)
        .enumerate()
        .filter(move |(i, _)| {
            services_shown
                .as_ref()
                .is_none_or(|shown| shown.contains(i))
        })
        .map(move |(i, (s, states))| ServiceView {
            edge: edge_view(
                &s.edge,
                &s.connection,
                snapshot.limits.get(i).and_then(Option::as_ref),
            ),
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
            backends: s
                .backends
                .iter()
                .zip(states.iter())
                .map(|(b, st)| BackendView::new(&b.task_id, st))
                .collect(),
            draining: draining_of(&s.key),
            held_back: s
                .held_back
                .iter()
                .map(|(task_id, reason)| HeldBackView { task_id, reason })
                .collect(),
        });
    let routes = shown
        .iter()
        .map(|&i| (i, &table.routes[i]))
        .map(|(i, r)| RouteView {
            name: &r.name,
            listen: {
                let mut listen = std::mem::take(&mut listen_of[i]);
                listen.sort();
                listen
            },
            vhosts: std::mem::take(&mut vhosts_of[i]),
            overridden: r.overridden,
            rollout: rollouts.get(&r.name).cloned(),
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
    let mesos = status.mesos.lock().unwrap().clone();
    let mesos_problem = mesos
        .as_ref()
        .filter(|m| !m.connected)
        .and_then(|m| m.last_error.clone())
        .map(|error| ProblemView::Source {
            source: "mesos".into(),
            severity: "error",
            reason: error,
            since_unix_ms: 0,
        });
    RoutesView {
        page: page_view,
        draining: draining_gone,
        routes,
        generation: snapshot.generation,
        table_hash: crate::routing::digest::hex(snapshot.table.hash()),
        created_unix_ms: unix_ms(snapshot.created),
        ready: status.ready.load(Ordering::Relaxed),
        source_connected: status.source_connected(),
        mesos: mesos.clone(),
        last_sync_unix_ms: status.last_sync_unix_ms.load(Ordering::Relaxed),
        services: Walked::new(services),
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
                .chain(mesos_problem)
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
        use crate::routing::resolve::{Entry, Reason, Request, Target, Unrouted};
        let path = param("path").unwrap_or_else(|| "/".into());
        // The proxy's own resolution, so that what is explained is what a request gets.
        let request = Request {
            host: Some(host.as_bytes()),
            path: path.split('?').next().unwrap_or("/"),
            app_id: None,
        };
        match table.resolve(Entry::Vhost { https: false }, request) {
            Ok((Target::Route(r), _)) => (
                Some(r),
                format!(
                    "vhost {host} path {path} matched route {:?}",
                    table.routes[r].name
                ),
            ),
            Ok((Target::Service(s), Reason::DefaultApp)) => {
                return json!({"why": format!("no vhost matched {host}{path}: the default app answers"),
                              "service": table.services[s].key.to_string()});
            }
            Err(Unrouted::AmbiguousPath) => {
                return json!({"why": format!(
                    "path {path} is ambiguous on {host}: read as some servers read it, it names \
                     another route: 400"
                )});
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
                // As `/v1/routes` shows them: a request only goes to an `up` one.
                "backends": s.backends.iter().zip(snapshot.states[m.service].iter())
                    .map(|(b, st)| BackendView::new(&b.task_id, st))
                    .collect::<Vec<_>>(),
                "acl": !s.http.acl.is_empty(),
                "auth": s.http.auth.as_ref().map(|a| a.realm.as_str()),
                "sticky": s.http.sticky,
            })
        })
        .collect();
    json!({"why": why, "route": route.name, "overridden": route.overridden, "members": members})
}
