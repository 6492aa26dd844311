//! The admin HTTP listener (loopback by default; beyond it every read but the probes needs the
//! bearer token, and every change always does). What it serves:
//!
//! - probes: `/healthz`, `/readyz` (the body names a failing source), marathon-lb's
//!   `/_haproxy_health_check`, Mesos-DNS's `/v1/version`;
//! - `/metrics` (Prometheus text), the dashboard at `/` and `/dashboard`;
//! - the live table: `/v1/routes`, `/v1/swaps`, `/v1/explain?host=H&path=P` or `?port=N`;
//! - changes: `PUT`/`DELETE /v1/routes/{route}/weights`, `POST /v1/reload`, marathon-lb's
//!   `/_mlb_signal/hup` (a full resync);
//! - marathon-lb's maps: `/_haproxy_getvhostmap`, `/_haproxy_getappmap`;
//! - Mesos-DNS's API (`dns::http_api`): `/v1/hosts/{name}`, `/v1/services/{name}`,
//!   `/v1/config`, `/v1/enumerate`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::reconciler::Status;
use crate::routing::{Balance, Mode, Problem};
use crate::snapshot::{Snapshot, Store};

/// The dashboard: plain HTML, CSS and a little JavaScript, polling the admin API.
const DASHBOARD: &str = include_str!("dashboard.html");

pub struct Admin {
    /// `Authorization: Bearer {token}` is required (see [`Admin::authorized`]); `None`: no
    /// token configured, so changes are refused and only loopback is served.
    pub token: Option<String>,
    /// Asks the discovery source for a full resync (`/_mlb_signal/hup`).
    pub resync: Arc<tokio::sync::Notify>,
    pub commands: tokio::sync::mpsc::Sender<crate::reconciler::Command>,
    /// `POST /v1/reload`: re-read the configuration file.
    pub reload: tokio::sync::mpsc::Sender<crate::reload::Request>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub bind_failures: Arc<Mutex<BTreeMap<SocketAddr, String>>>,
}

impl Admin {
    pub async fn serve(self: Arc<Self>, listener: Arc<TcpListener>) {
        loop {
            let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req, loopback).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Health and readiness are open to probes; reading needs the token when the listener is
    /// reachable beyond loopback; changing always needs it.
    fn authorized(&self, req: &Request<Incoming>, loopback: bool) -> Option<Response<Full<Bytes>>> {
        let path = req.uri().path();
        // marathon-lb's signals answer any method; with a token configured they need it, as
        // every change does.
        let signal = path.starts_with("/_mlb_signal/") && self.token.is_some();
        let change = !matches!(*req.method(), Method::GET | Method::HEAD) || signal;
        // Mesos-DNS's health checks poll `/v1/version`: open to probes too.
        let probe = matches!(
            path,
            "/healthz" | "/readyz" | "/_haproxy_health_check" | "/v1/version"
        );
        if !change && (probe || loopback) {
            return None;
        }
        let Some(token) = &self.token else {
            return Some(text(
                StatusCode::FORBIDDEN,
                "changes need admin.token_file to be set\n".into(),
            ));
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time: the token is a secret.
        let matches = presented.is_some_and(|p| {
            p.len() == token.len()
                && p.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if matches {
            None
        } else {
            let mut r = text(StatusCode::UNAUTHORIZED, "bearer token required\n".into());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            Some(r)
        }
    }

    /// Re-reads the configuration: 200 with what applied, 400 with why it was refused.
    async fn reload(&self) -> Response<Full<Bytes>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.reload.send(reply).await.is_err() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into());
        }
        let (status, body) = match answer.await {
            Ok(Ok(report)) => (
                StatusCode::OK,
                serde_json::to_value(&report).expect("serializes"),
            ),
            Ok(Err(e)) => (StatusCode::BAD_REQUEST, serde_json::json!({ "error": e })),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": "stopping" }),
            ),
        };
        let mut r = text(status, body.to_string() + "\n");
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    }

    async fn handle(&self, req: Request<Incoming>, loopback: bool) -> Response<Full<Bytes>> {
        const EXACT: [&str; 16] = [
            "/_haproxy_health_check",
            "/_haproxy_getvhostmap",
            "/_haproxy_getappmap",
            "/_mlb_signal/hup",
            "/",
            "/dashboard",
            "/healthz",
            "/readyz",
            "/metrics",
            "/v1/routes",
            "/v1/swaps",
            "/v1/explain",
            "/v1/reload",
            "/v1/version",
            "/v1/config",
            "/v1/enumerate",
        ];
        const PREFIXES: [(&str, &str); 3] = [
            ("/v1/hosts/", "/v1/hosts"),
            ("/v1/services/", "/v1/services"),
            ("/v1/routes/", "/v1/routes/weights"),
        ];
        let path = req.uri().path();
        let endpoint = EXACT
            .into_iter()
            .find(|e| *e == path)
            .or_else(|| {
                PREFIXES
                    .into_iter()
                    .find(|(p, _)| path.starts_with(p))
                    .map(|(_, e)| e)
            })
            .unwrap_or("other");
        self.metrics
            .admin_requests
            .get_or_create(&crate::metrics::PathLabels { path: endpoint })
            .inc();
        if let Some(refused) = self.authorized(&req, loopback) {
            return refused;
        }
        if let Some(route) = req
            .uri()
            .path()
            .strip_prefix("/v1/routes/")
            .and_then(|r| r.strip_suffix("/weights"))
        {
            let route = percent_decode(route);
            return self.weights(req, route).await;
        }
        if req.uri().path() == "/v1/reload" {
            if req.method() != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n".into());
            }
            return self.reload().await;
        }
        if req.uri().path() == "/_mlb_signal/hup" {
            // marathon-lb's signalmlb.lua sends SIGHUP, on which marathon-lb re-reads every
            // app; here the discovery source resyncs.
            self.resync.notify_one();
            return mlb::plain("Sent SIGHUP signal to marathon-lb");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        }
        match req.uri().path() {
            // HAProxy's `monitor-uri /_haproxy_health_check`: 200 while the process runs.
            "/_haproxy_health_check" => {
                let mut r = text(StatusCode::OK, mlb::HEALTH_CHECK_BODY.into());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/html"),
                );
                r
            }
            "/_haproxy_getvhostmap" => mlb::plain(&mlb::vhost_map(&self.store.load().table)),
            "/_haproxy_getappmap" => mlb::plain(&mlb::app_map(&self.store.load().table)),
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => {
                // The body says why: which source failed and how (a file that is not there, a
                // Marathon that refuses), so a readiness check that stays red names its cause.
                let source = self
                    .status
                    .source_problem()
                    .map(|p| format!("source {p}\n"))
                    .unwrap_or_default();
                if self.status.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, format!("ready\n{source}"))
                } else {
                    let waiting = if source.is_empty() {
                        "waiting for the source's first snapshot\n"
                    } else {
                        ""
                    };
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: no full sync yet\n{source}{waiting}"),
                    )
                }
            }
            "/metrics" => {
                let mut r = text(StatusCode::OK, self.metrics.encode());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }
            "/" | "/dashboard" => {
                let mut r = text(StatusCode::OK, DASHBOARD.to_string());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            }
            "/v1/swaps" => {
                let swaps: Vec<_> = self.status.swaps.lock().unwrap().iter().cloned().collect();
                let mut r = text(
                    StatusCode::OK,
                    serde_json::to_string(&swaps).expect("swaps serialize") + "\n",
                );
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            "/v1/explain" => {
                let query = req.uri().query().unwrap_or("");
                let snapshot = self.store.load_full();
                let body = explain(&snapshot, query);
                let mut r = text(StatusCode::OK, body.to_string() + "\n");
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            "/v1/routes" => {
                let snapshot = self.store.load_full();
                let failures = self.bind_failures.lock().unwrap().clone();
                let body =
                    serde_json::to_string_pretty(&routes(&snapshot, &failures, &self.status))
                        .expect("routes serialize");
                let mut r = text(StatusCode::OK, body + "\n");
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            // Mesos-DNS's HTTP API (crate::dns::http_api).
            path if crate::dns::http_api::serves(path) => {
                let snapshot = self.store.load();
                let body = match crate::dns::http_api::respond(snapshot.dns.as_deref(), path) {
                    Ok(body) => body,
                    Err(why) => return text(StatusCode::NOT_FOUND, format!("{why}\n")),
                };
                let mut r = text(StatusCode::OK, body.to_string() + "\n");
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

impl Admin {
    /// `PUT /v1/routes/{route}/weights` with `{"app id": weight, …}` sets a route's weights
    /// (apps left out get 0); `DELETE` clears them. Answers once the new table is live.
    async fn weights(&self, req: Request<Incoming>, route: String) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
        let weights = match *req.method() {
            Method::DELETE => None,
            Method::PUT | Method::POST => {
                let body = http_body_util::Limited::new(req.into_body(), 64 * 1024);
                let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "body unreadable or over 64 KiB\n".into(),
                    );
                };
                match serde_json::from_slice::<std::collections::BTreeMap<String, u32>>(&body) {
                    Ok(w) => Some(w.into_iter().map(|(k, v)| (k.into(), v)).collect()),
                    Err(e) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!("expected {{\"app id\": weight}}: {e}\n"),
                        );
                    }
                }
            }
            _ => return text(StatusCode::METHOD_NOT_ALLOWED, "PUT or DELETE\n".into()),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let command = crate::reconciler::Command::SetWeights {
            route,
            weights,
            reply,
        };
        if self.commands.send(command).await.is_err() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), answer).await {
            Ok(Ok(Ok(()))) => text(StatusCode::OK, "ok\n".into()),
            Ok(Ok(Err(e))) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
            _ => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not applied in time\n".into(),
            ),
        }
    }
}

/// Route names hold `/` and `:`; clients may send them percent-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[derive(Serialize)]
struct RoutesView<'a> {
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

fn routes<'a>(
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
fn explain(snapshot: &Snapshot, query: &str) -> serde_json::Value {
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

/// marathon-lb's endpoints on its stats port (9090), answered in the same shapes: HAProxy's
/// monitor page, the map files its Lua services serve (`{key} {backend}\n` lines, the backend
/// named `{app id without the first slash, / as _}_{service port}`), plain-text signal replies.
mod mlb {
    use std::collections::BTreeSet;

    use bytes::Bytes;
    use http::{Response, StatusCode, header};
    use http_body_util::Full;

    use crate::routing::{Mode, RoutingTable, Service};

    /// HAProxy's answer to `monitor-uri`.
    pub const HEALTH_CHECK_BODY: &str =
        "<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n";

    /// `send_map` in getmaps.lua / `send_response` in signalmlb.lua: 200, text/plain.
    pub fn plain(body: &str) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
        *r.status_mut() = StatusCode::OK;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        r
    }

    /// marathon_lb.py: `backend = app.appId[1:].replace('/', '_') + '_' + str(app.servicePort)`.
    pub fn backend_name(service: &Service) -> String {
        let id = service
            .key
            .app_id
            .strip_prefix('/')
            .unwrap_or(&service.key.app_id);
        format!("{}_{}", id.replace('/', "_"), service.service_port)
    }

    /// domain2backend.map: a vhost (without a path rule) and the backend serving it.
    pub fn vhost_map(table: &RoutingTable) -> String {
        let lines: BTreeSet<String> = table
            .vhosts
            .entries()
            .filter(|(_, prefix, _)| prefix.is_empty())
            .filter_map(|(host, _, route)| {
                let member = table.routes.get(route)?.members.first()?;
                let service = table.services.get(member.service)?;
                Some(format!("{host} {}\n", backend_name(service)))
            })
            .collect();
        lines.into_iter().collect()
    }

    /// app2backend.map: each app's first HTTP-mode port (marathon-lb's
    /// `apps_with_http_appid_backend`), by app id.
    pub fn app_map(table: &RoutingTable) -> String {
        let mut seen = BTreeSet::new();
        table
            .services
            .iter()
            .filter(|s| s.mode == Mode::Http && !s.key.app_id.starts_with("vip:"))
            .filter(|s| seen.insert(s.key.app_id.clone()))
            .map(|s| format!("{} {}\n", s.key.app_id, backend_name(s)))
            .collect()
    }
}
