//! The admin HTTP listener (loopback by default; beyond it every read but the probes needs the
//! bearer token, and every change always does; on loopback a read needs none only when it names
//! a loopback host). What it serves:
//!
//! - probes: `/healthz`, `/readyz` (the body names a failing source), marathon-lb's
//!   `/_haproxy_health_check`, Mesos-DNS's `/v1/version`;
//! - `/metrics` (Prometheus text), the dashboard at `/` and `/dashboard`, and its charts'
//!   history, `/v1/history` (`history.rs`);
//! - the live table: `/v1/routes` (or a page of it: `?offset=&limit=&filter=`), `/v1/swaps`,
//!   `/v1/explain?host=H&path=P` or `?port=N`;
//! - a dry run of an app change: `POST /v1/plan` (`plan.rs`; a read: it changes nothing);
//! - changes: `PUT`/`DELETE /v1/routes/{route}/weights`, `PUT`/`DELETE
//!   /v1/apps/{app id}/maintenance`, `POST /v1/reload`, marathon-lb's
//!   `/_mlb_signal/hup` (a full resync; any method, and always the token);
//! - the dashboard's way in (`session`): `POST /v1/login` (the token for a session cookie),
//!   `GET /v1/session` (the session's CSRF token), `POST /v1/logout`;
//! - marathon-lb's maps: `/_haproxy_getvhostmap`, `/_haproxy_getappmap`;
//! - Mesos-DNS's API (`dns::http_api`): `/v1/hosts/{name}`, `/v1/services/{name}`,
//!   `/v1/config`, `/v1/enumerate`.

mod auth;
mod endpoints;
pub mod history;
mod mlb;
pub mod plan;
pub mod session;
mod views;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub(crate) use crate::bulk_text::BulkBody;
use http::{Method, Request, Response, StatusCode, header};
/// A request as the admin API reads it: its body read under `admin.idle_timeout` (`stall`).
type Incoming = crate::stall::Watched<hyper::body::Incoming>;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::reconciler::Status;
use crate::snapshot::Store;

/// The dashboard: plain HTML, CSS and a little JavaScript, polling the admin API.
const DASHBOARD: &str = include_str!("dashboard.html");

pub struct Admin {
    /// `Authorization: Bearer {token}` is required (see [`Admin::authorized`]); `None`: no
    /// token configured, so changes are refused and only loopback is served.
    pub token: Option<String>,
    /// Dashboard logins: the token exchanged for a session cookie (see [`session`]).
    pub sessions: session::Sessions,
    /// `admin.loopback_reads_open`: on a loopback listener, reads need no token.
    pub loopback_reads_open: bool,
    /// Asks the discovery source for a full resync (`/_mlb_signal/hup`).
    pub resync: Arc<tokio::sync::Notify>,
    pub commands: tokio::sync::mpsc::Sender<crate::reconciler::Command>,
    /// `POST /v1/reload`: re-read the configuration file.
    pub reload: tokio::sync::mpsc::Sender<crate::reload::Request>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub bind_failures: Arc<Mutex<BTreeMap<SocketAddr, String>>>,
    /// The dashboard's history of the live counters (`GET /v1/history`).
    pub history: Arc<history::History>,
    /// Canary rollouts (`/v1/routes/{route}/rollout`, `/v1/events`).
    pub rollouts: Arc<crate::rollout::Rollouts>,
    /// Wrong tokens, logins, session ids and CSRF tokens per client address.
    pub guesses: std::sync::Arc<crate::access::Guesses>,
    /// `admin.header_timeout` and `admin.idle_timeout`.
    pub timeouts: crate::stall::Timeouts,
    /// `admin.max_connections`: past them a new connection is closed at once, counted in
    /// `admin_refused_connections_total`.
    pub connections: crate::stall::Slots,
    /// `POST /v1/plan`: one computed at a time.
    pub planning: tokio::sync::Semaphore,
}

impl Admin {
    pub async fn serve(self: Arc<Self>, listener: Arc<TcpListener>) {
        loop {
            let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let Some(open) = self.connections.take_or_probe() else {
                continue; // closed: dropped
            };
            let probe_only = open.probe_only;
            if probe_only {
                self.metrics.admin_probe_only_connections.inc();
            }
            let admin = self.clone();
            let mut timeouts = self.timeouts;
            if probe_only {
                // One quick request on a slot past the limit, then closed.
                let quick = crate::stall::PROBE_HEADER_TIMEOUT;
                timeouts.header = timeouts.header.min(quick);
                timeouts.idle = timeouts.idle.min(quick);
            }
            tokio::spawn(async move {
                let _open = open.slot;
                let (stream, activity) = crate::stall::Guarded::new(stream, timeouts.idle);
                let service = service_fn(move |req| {
                    let (admin, activity) = (admin.clone(), activity.clone());
                    let client = peer.ip();
                    async move {
                        let preparing = activity.preparing();
                        let method = req.method().clone();
                        let mut response = if probe_only && !is_probe(req.uri().path()) {
                            over_capacity()
                        } else {
                            admin.handle(activity.watch(req), loopback, client).await
                        };
                        activity.answering(&method, &response);
                        // A streamed answer is still being prepared until its first chunk.
                        response.body_mut().hold(preparing);
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeouts.header)
                    .keep_alive(!probe_only)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Re-reads the configuration: 200 with what applied, 400 with why it was refused.
    async fn reload(&self) -> Response<BulkBody> {
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

    async fn handle(
        &self,
        req: Request<Incoming>,
        loopback: bool,
        client: std::net::IpAddr,
    ) -> Response<BulkBody> {
        const EXACT: [&str; 22] = [
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
            "/v1/history",
            "/v1/events",
            "/v1/explain",
            "/v1/reload",
            "/v1/plan",
            "/v1/version",
            "/v1/config",
            "/v1/enumerate",
            "/v1/login",
            "/v1/logout",
            "/v1/session",
        ];
        const PREFIXES: [(&str, &str); 4] = [
            ("/v1/hosts/", "/v1/hosts"),
            ("/v1/services/", "/v1/services"),
            ("/v1/routes/", "/v1/routes/weights"),
            ("/v1/apps/", "/v1/apps/maintenance"),
        ];
        let path = req.uri().path();
        let endpoint = EXACT
            .into_iter()
            .find(|e| *e == path)
            .or_else(|| {
                (path.starts_with("/v1/routes/") && path.ends_with("/rollout"))
                    .then_some("/v1/routes/rollout")
            })
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
        // Logging in is how a browser gets authorized; reading one's own session needs only
        // its cookie.
        match path {
            "/v1/login" => return self.login(req, client).await,
            "/v1/session" => return self.session(&req),
            _ => {}
        }
        if let Some(refused) = self.authorized(&req, loopback, client) {
            return refused;
        }
        if req.uri().path() == "/v1/logout" {
            return self.logout(&req);
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
        if let Some(route) = req
            .uri()
            .path()
            .strip_prefix("/v1/routes/")
            .and_then(|r| r.strip_suffix("/rollout"))
        {
            let route = percent_decode(route);
            return self.rollout(req, route).await;
        }
        if let Some(app) = req
            .uri()
            .path()
            .strip_prefix("/v1/apps/")
            .and_then(|r| r.strip_suffix("/maintenance"))
        {
            let app = format!("/{}", percent_decode(app).trim_start_matches('/'));
            return self.maintenance(req.method(), app).await;
        }
        if req.uri().path() == "/v1/reload" {
            if req.method() != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n".into());
            }
            return self.reload().await;
        }
        if req.uri().path() == "/v1/plan" {
            if req.method() != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "only POST\n".into());
            }
            return self.plan(req).await;
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
                // Marathon that refuses), so a readiness check that stays red names its cause —
                // to a caller who may read; an anonymous probe learns that a source fails, not
                // the internal addresses and answers in its error.
                let source = match self.status.source_problem() {
                    Some(p) if self.may_read(&req, loopback) => format!("source {p}\n"),
                    Some(_) => "source failing (details for readers of the admin API)\n".into(),
                    None => String::new(),
                };
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
                // On the blocking pool: a table's hash not made yet (a scrape right after a
                // swap, before the idle-priority thread made it) is made there, at normal
                // priority, not on the control thread that serves this API and takes events.
                // Streamed as it is written (`bulk_text`): at 50,000 apps a scrape is 600 MB. A HEAD
                // gets the head alone, without a scrape.
                let body = if req.method() == Method::HEAD {
                    BulkBody::default()
                } else {
                    // One scrape runs and one waits (`scrape` takes them in turn): a client
                    // asking for more waits here, where leaving cancels its turn.
                    let Ok(turn) = SCRAPES.acquire().await else {
                        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
                    };
                    let (metrics, store) = (self.metrics.clone(), self.store.clone());
                    crate::bulk_text::BulkText::written_on_blocking_pool(move |text| {
                        let _turn = turn;
                        crate::reconciler::scrape(&metrics, &store, text);
                    })
                };
                let mut r = bulk(StatusCode::OK, body);
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
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/html; charset=utf-8"),
                );
                // It can change weights: no other site may frame it (clickjacking).
                h.insert(
                    header::X_FRAME_OPTIONS,
                    header::HeaderValue::from_static("DENY"),
                );
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    header::HeaderValue::from_static("frame-ancestors 'none'"),
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
            "/v1/history" => {
                let history = self.history.clone();
                let query = req.uri().query().unwrap_or("").to_string();
                let Ok(body) =
                    tokio::task::spawn_blocking(move || history.view(&query).to_string()).await
                else {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
                };
                let mut r = text(StatusCode::OK, body + "\n");
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            "/v1/events" => json_list(&self.rollouts.events()),
            "/v1/explain" => {
                let query = req.uri().query().unwrap_or("");
                let snapshot = self.store.load_full();
                let body = views::explain(&snapshot, query);
                let mut r = text(StatusCode::OK, body.to_string() + "\n");
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            "/v1/routes" => {
                let page = views::Page::parse(req.uri().query().unwrap_or(""));
                // A HEAD gets the head alone, nothing built.
                let body = if req.method() == Method::HEAD {
                    Some(BulkBody::default())
                } else {
                    self.routes_view(page).await
                };
                let Some(body) = body else {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
                };
                let mut r = bulk(StatusCode::OK, body);
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

/// `/metrics` scrapes at once: one encoding, one waiting its turn.
static SCRAPES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A JSON list (`/v1/events`).
fn json_list<T: serde::Serialize>(items: &[T]) -> Response<BulkBody> {
    let mut r = text(
        StatusCode::OK,
        serde_json::to_string(items).expect("serializes") + "\n",
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Route names hold `/` and `:`; clients may send them percent-encoded.
pub(super) fn percent_decode(text: &str) -> String {
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

/// A JSON answer about a session (it may hold its CSRF token): never cached.
fn json_response(status: StatusCode, body: serde_json::Value) -> Response<BulkBody> {
    let mut r = text(status, body.to_string() + "\n");
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// The paths open to probes without a token, and the only ones served on a connection taken
/// past `admin.max_connections` (`stall::Slots::take_or_probe`). Mesos-DNS's health checks
/// poll `/v1/version`: a probe too.
fn is_probe(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/_haproxy_health_check" | "/v1/version"
    )
}

/// 503 for anything but a probe on a connection admitted past `admin.max_connections`.
fn over_capacity() -> Response<BulkBody> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "admin.max_connections are open: only probes are answered\n".into(),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

fn text(status: StatusCode, body: String) -> Response<BulkBody> {
    bulk(status, body.into())
}

/// [`text`] for an answer written in chunks (`crate::bulk_text`).
fn bulk(status: StatusCode, body: BulkBody) -> Response<BulkBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
