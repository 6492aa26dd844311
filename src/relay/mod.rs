//! The relay: Marathon's read API served from this instance's live model, so that agent-role
//! instances follow a few relays instead of Marathon (docs/relay.md). No new protocol: a relay
//! answers `/v2/apps` (with the `embed` forms switchyard asks for), `/v2/apps/{id}`,
//! `/v2/tasks`, `/v2/info`, `/v2/leader`, `/ping` and `/v2/events` (server-sent events, in the
//! shapes Marathon sends), and an instance points `discovery.marathon` at it.
//!
//! - Never before its own first sync: until the reconciler hands over a model built from a full
//!   snapshot, every Marathon path answers 503, so a follower tries its next URL.
//! - Never behind its source: once it has seen its own Marathon lost, it answers no new
//!   snapshot (`/v2/apps`, `/v2/tasks`) and opens no new stream until it serves a model from a
//!   full read made after the loss (`observe`). Its open streams go on (their followers hold
//!   its last model already, and get what changed when it is back), for at most
//!   `relay.max_disconnected`; a follower that fails over to it meanwhile is turned away rather
//!   than sent back to an older table.
//! - Ordered: a subscriber is registered before its stream's 200 is written, and a new model is
//!   stored before its events go out, so a follower that opens the stream and then takes the
//!   snapshot (as switchyard does) misses no change: every event after the snapshot's model is
//!   on its stream. A model that changed many apps at once goes out as one
//!   `group_change_success` (the follower takes a full snapshot) rather than one event per app.
//! - Bounded: at most `max_subscribers` streams; each has a queue of `subscriber_queue` events,
//!   and a subscriber whose queue is full is cut (its connection closed), never buffered for;
//!   its socket's send buffer is fixed ([`SEND_BUFFER`]).
//! - Secured like the admin API (`access`): with `relay.token_file`, every request presents the
//!   token (`Authorization: Bearer T` or `token=T`); without one the relay only listens on
//!   loopback (the configuration refuses anything else) and answers requests that name a
//!   loopback host.
//!
//! Events name what changed (`api_post_event` with the app's definition, `app_terminated_event`)
//! and a follower re-fetches the app from the relay: what it fetches is the relay's model as of
//! that event or newer (the events themselves, and a subscriber's stream: `events.rs`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;

use crate::cluster::{AppId, Cluster};
use crate::discovery::marathon::gzip;
use crate::discovery::marathon::render::{self, Embed};
use crate::metrics::{KindLabels, Metrics, PathLabels};

mod admission;
mod budget;
mod events;
mod freshness;

use admission::{Admission, Ticket};
use budget::BodyBudget;
use events::{SseBody, Subscriber, events};
use freshness::Following;
pub use freshness::{Source, Upstream};

/// The kernel send buffer of every relay connection (a big `/v2/apps` goes out at the pace of
/// the network, not of the relay's wakeups).
pub const SEND_BUFFER: usize = 256 << 10;
/// ... and of a connection once it serves an event stream: what a subscriber that stopped
/// reading holds in the kernel besides its queue, and what heartbeats must fill before its
/// writes stall and it is cut (`stall`).
pub const STREAM_SEND_BUFFER: usize = 16 << 10;
/// More apps than this changed in one model: one `group_change_success` (a full re-read).
pub const RESYNC_ABOVE: usize = 64;
/// Sent every `relay.keepalive_interval` on every stream: blank lines, which followers' idle
/// timers (`discovery.stream_idle_timeout`) take for a live stream as they take Marathon's
/// single newline. Many of them, so that a follower that stopped reading fills its buffers
/// (the stream's [`STREAM_SEND_BUFFER`] and its own receive buffer) in a bounded time even in
/// a cluster where nothing changes, and its stalled writes get it cut; a comment line would
/// count against followers' `discovery.max_event_bytes`, blank lines do not.
static HEARTBEAT: [u8; 4096] = [b'\n'; 4096];

/// `[relay]`, as `lib.rs` builds it from the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Required from every client when set (the configuration requires it beyond loopback).
    pub token: Option<String>,
    pub max_subscribers: usize,
    /// Events queued for one subscriber before it is cut.
    pub subscriber_queue: usize,
    /// Served this long after the relay's own Marathon was lost, then 503 (`stale`).
    pub max_disconnected: Duration,
    /// A [`HEARTBEAT`] on every stream this often.
    pub keepalive: Duration,
    /// Bytes of prepared bodies alive at once (the model's, and older ones followers still
    /// read), past which no new one is built (`budget`).
    pub max_body_bytes: usize,
    /// `relay.header_timeout` and `relay.idle_timeout` (`stall`).
    pub timeouts: crate::stall::Timeouts,
}

/// What the relay knows of an accepted connection before it speaks HTTP.
struct Client {
    /// The relay listens on loopback (`access`: a token is then optional).
    loopback: bool,
    peer: SocketAddr,
    /// The TCP socket, for its send buffer once a response turns out to be a stream.
    fd: std::os::fd::RawFd,
    /// Notified to close the connection (a subscriber cut, the relay shutting down).
    cut: Arc<Notify>,
    ticket: Arc<Ticket>,
}

/// One model as served: a generation (the relay's own count of models), the cluster, and the
/// `/v2/apps` bodies built from it so far (one per `embed` form and encoding, built on first
/// request; the gzip one from the plain one).
struct Served {
    generation: u64,
    /// The full reads this model holds ([`Source::reads`] at its swap).
    reads: u64,
    cluster: Arc<Cluster>,
    budget: Arc<BodyBudget>,
    bodies: Mutex<HashMap<(Embed, Encoding), Bytes>>,
    /// `/v2/tasks`, built on first request like the `/v2/apps` bodies, and its gzip form.
    tasks: std::sync::OnceLock<Bytes>,
    tasks_gzip: std::sync::OnceLock<Bytes>,
}

/// How a prepared body is sent: as is, or gzip-compressed for a client that asks
/// (`Accept-Encoding: gzip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Encoding {
    Identity,
    Gzip,
}

/// The relay's metric families, registered whether a relay runs or not (every family is on
/// `/metrics` from the start).
#[derive(Clone, Default)]
pub struct RelayMetrics {
    subscribers: Gauge,
    cut: Counter,
    /// `stream`: answered 503, `relay.max_subscribers` streams open; `connection`: closed at
    /// once, every connection slot held by an authenticated connection.
    refused: Family<KindLabels, Counter>,
    evicted: Counter,
    body_bytes: Gauge,
    over_budget: Counter,
    requests: Family<PathLabels, Counter>,
    generation: Gauge,
    /// 1: serving snapshots and new streams; 0: not synced yet, or behind its source.
    current: Gauge,
}

pub struct Relay {
    settings: Settings,
    state: ArcSwapOption<Served>,
    /// The newest model handed over (with its [`Source::reads`]) and not yet taken by
    /// [`Relay::follow`].
    offered: Mutex<Option<(Arc<Cluster>, u64)>>,
    wake: Notify,
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
    metrics: RelayMetrics,
    /// Wrong tokens per client address (`access::Guesses`).
    guesses: crate::access::Guesses,
    upstream: Upstream,
    /// Whether its model is its source's current one (`observe`).
    following: Mutex<Following>,
    /// Lost for longer than `relay.max_disconnected`: every request is 503, no stream open.
    stale: std::sync::atomic::AtomicBool,
    /// Open connections: two per subscriber and [`EXTRA_CONNECTIONS`] more; past them the
    /// oldest one without credentials makes room, or the new one is closed at once, counted in
    /// `refused{kind="connection"}` (file descriptors are shared with the proxy): `admission`.
    connections: Admission,
    budget: Arc<BodyBudget>,
}

/// Connections allowed beyond two per `relay.max_subscribers` (each follower holds its stream
/// and, while it re-reads after an event, a fetch: a `group_change_success` sends every follower
/// to re-read at once) — a refused stream's answer, fetches of instances that follow no stream.
const EXTRA_CONNECTIONS: usize = 256;

impl RelayMetrics {
    pub fn register(metrics: &Metrics) -> RelayMetrics {
        let m = RelayMetrics::default();
        metrics.register(
            "relay_open_streams",
            "Event streams the relay serves now",
            m.subscribers.clone(),
        );
        metrics.register(
            "relay_cut_streams",
            "Event streams the relay closed because their queue was full (a slow subscriber)",
            m.cut.clone(),
        );
        metrics.register(
            "relay_refused",
            "Refused by the relay: event streams answered 503 because relay.max_subscribers were open (kind: stream), connections closed at once because 2 x relay.max_subscribers + 256 were open, every one authenticated (kind: connection)",
            m.refused.clone(),
        );
        for kind in ["stream", "connection"] {
            let _ = m.refused.get_or_create(&KindLabels { kind: kind.into() });
        }
        metrics.register(
            "relay_evicted_connections",
            "Connections that had not presented the relay's token, closed to make room for a new one when every slot was taken",
            m.evicted.clone(),
        );
        metrics.register(
            "relay_body_bytes",
            "Bytes of /v2/apps and /v2/tasks bodies alive: the model's, and older ones followers are still reading",
            m.body_bytes.clone(),
        );
        metrics.register(
            "relay_over_budget",
            "Requests answered 503 because relay.max_body_bytes of bodies were alive",
            m.over_budget.clone(),
        );
        metrics.register(
            "relay_requests",
            "Requests the relay answered, by endpoint",
            m.requests.clone(),
        );
        metrics.register(
            "relay_generation",
            "Models the relay has served (0: not synced yet)",
            m.generation.clone(),
        );
        metrics.register(
            "relay_current",
            "1 while the relay answers snapshots and new event streams; 0 before its first sync, and from the moment it sees its own Marathon lost until it serves a model read after reconnecting",
            m.current.clone(),
        );
        for path in ENDPOINTS {
            let _ = m.requests.get_or_create(&PathLabels { path });
        }
        m
    }
}

/// The paths a relay answers, as `relay_requests_total` labels them (`other`: the rest).
const ENDPOINTS: [&str; 8] = [
    "/v2/apps",
    "/v2/apps/{id}",
    "/v2/tasks",
    "/v2/events",
    "/v2/info",
    "/v2/leader",
    "/ping",
    "other",
];

impl Relay {
    pub fn new(settings: Settings, m: RelayMetrics, upstream: Upstream) -> Arc<Relay> {
        let refused_connections = m
            .refused
            .get_or_create(&KindLabels {
                kind: "connection".into(),
            })
            .clone();
        Arc::new(Relay {
            upstream,
            following: Mutex::default(),
            stale: std::sync::atomic::AtomicBool::new(false),
            state: ArcSwapOption::empty(),
            offered: Mutex::new(None),
            wake: Notify::new(),
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            guesses: Default::default(),
            connections: Admission::new(
                2 * settings.max_subscribers + EXTRA_CONNECTIONS,
                refused_connections,
                m.evicted.clone(),
            ),
            budget: BodyBudget::new(
                settings.max_body_bytes,
                m.body_bytes.clone(),
                m.over_budget.clone(),
            ),
            settings,
            metrics: m,
        })
    }

    /// Hands over the model a swap compiled (the reconciler calls this once synced) and the
    /// full reads it holds ([`Source::reads`] as of the swap): taken by [`Relay::follow`] off
    /// the swap path; a newer one replaces one not yet taken.
    pub fn offer(&self, cluster: Arc<Cluster>, reads: u64) {
        *self.offered.lock().unwrap() = Some((cluster, reads));
        self.wake.notify_one();
    }

    /// Publishes each model handed over, with its events, and keeps streams alive (on the relay's
    /// own thread, as [`Relay::serve`]).
    pub async fn follow(self: Arc<Self>) {
        let mut keepalive = tokio::time::interval(self.settings.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut upstream = tokio::time::interval(Duration::from_secs(1));
        upstream.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = upstream.tick() => {
                    self.observe(std::time::Instant::now());
                }
                _ = self.wake.notified() => {
                    let offered = self.offered.lock().unwrap().take();
                    if let Some((cluster, reads)) = offered {
                        self.publish(cluster, reads);
                    }
                }
                _ = keepalive.tick() => self.send(&[(String::new(), Bytes::from_static(&HEARTBEAT))]),
            }
        }
    }

    fn publish(&self, cluster: Arc<Cluster>, reads: u64) {
        let previous = self.state.load_full();
        let events = match &previous {
            Some(previous) => events(&previous.cluster, &cluster),
            None => Vec::new(),
        };
        let generation = previous.as_ref().map_or(0, |p| p.generation) + 1;
        // Stored before its events are sent: whoever an event reaches fetches this model or a
        // newer one.
        self.state.store(Some(Arc::new(Served {
            generation,
            reads,
            cluster,
            budget: self.budget.clone(),
            bodies: Mutex::new(HashMap::new()),
            tasks: std::sync::OnceLock::new(),
            tasks_gzip: std::sync::OnceLock::new(),
        })));
        self.metrics.generation.set(generation as i64);
        // A model read after a loss ends it (and its clock: a later loss is timed from when it
        // is seen); one swapped while still lost, say for a weight change, does not.
        self.observe(std::time::Instant::now());
        if generation == 1 {
            tracing::info!("relay: synced, serving Marathon's read API");
        }
        self.send(&events);
    }

    /// Queues events (`(kind, bytes)`; an empty kind goes to every stream) for every subscriber;
    /// one whose queue is full or gone is dropped, its connection closed.
    fn send(&self, events: &[(String, Bytes)]) {
        if events.is_empty() {
            return;
        }
        let mut subscribers = self.subscribers.lock().unwrap();
        subscribers.retain(|s| {
            for (kind, bytes) in events {
                if !kind.is_empty() && !s.kinds.is_empty() && !s.kinds.contains(kind) {
                    continue;
                }
                match s.queue.try_send(bytes.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.metrics.cut.inc();
                        tracing::warn!(
                            queue = self.settings.subscriber_queue,
                            "relay: cutting a subscriber that does not keep up"
                        );
                        s.cut.notify_one();
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        self.metrics.subscribers.set(subscribers.len() as i64);
    }

    /// Accepts the relay's connections; with `tls`, each speaks HTTPS after a handshake that
    /// must end within the header timeout (a client that opens and says nothing holds nothing).
    pub async fn serve(self: Arc<Self>, listener: Arc<TcpListener>, tls: Option<TlsAcceptor>) {
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let cut = Arc::new(Notify::new());
            let Some(ticket) = self.connections.admit(cut.clone()) else {
                continue; // closed: dropped
            };
            let ticket = Arc::new(ticket);
            let socket = socket2::SockRef::from(&stream);
            let _ = socket.set_send_buffer_size(SEND_BUFFER);
            // Bytes sent and not acknowledged (a follower's host gone, a reader whose window
            // stays shut) for the idle timeout: the kernel closes the connection, as a stream's
            // write that cannot go on does (`stall`).
            let _ = socket.set_tcp_user_timeout(Some(self.settings.timeouts.idle));
            let _ = stream.set_nodelay(true);
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            let client = Client {
                loopback,
                peer,
                fd,
                cut,
                ticket,
            };
            let relay = self.clone();
            match &tls {
                None => {
                    tokio::spawn(relay.connection(stream, client));
                }
                Some(tls) => {
                    let handshake = tls.accept(stream);
                    let header = self.settings.timeouts.header;
                    tokio::spawn(async move {
                        let on_cut = client.cut.clone();
                        let stream = tokio::select! {
                            done = tokio::time::timeout(header, handshake) => match done {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(peer = %client.peer, "relay TLS handshake: {e}");
                                    return;
                                }
                                Err(_) => return,
                            },
                            _ = on_cut.notified() => return,
                        };
                        relay.connection(stream, client).await;
                    });
                }
            }
        }
    }

    /// One connection's requests, over plain TCP or TLS, until it ends or is cut.
    async fn connection<T>(self: Arc<Self>, stream: T, client: Client)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Client {
            loopback,
            peer,
            fd,
            cut,
            ticket,
        } = client;
        let timeouts = self.settings.timeouts;
        let on_cut = cut.clone();
        let (stream, activity) = crate::stall::Guarded::new(stream, timeouts.idle);
        let relay = self;
        let service = service_fn(move |req| {
            let (relay, cut, activity) = (relay.clone(), cut.clone(), activity.clone());
            let ticket = ticket.clone();
            async move {
                let preparing = activity.preparing();
                let method = req.method().clone();
                let response = relay.handle(req, (loopback, peer.ip()), cut, &ticket).await;
                activity.answering(&method, &response);
                if is_stream(&response) {
                    // SAFETY: this service runs inside the connection that owns the socket
                    // (under TLS too: the TLS stream owns it), so `fd` is open (and is that
                    // socket) while it runs.
                    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                    let socket = socket2::SockRef::from(&socket);
                    let _ = socket.set_send_buffer_size(STREAM_SEND_BUFFER);
                }
                drop(preparing);
                Ok::<_, Infallible>(response)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header)
            .serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            _ = connection => {}
            _ = on_cut.notified() => {}
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        (loopback, client): (bool, std::net::IpAddr),
        cut: Arc<Notify>,
        ticket: &Ticket,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path();
        let endpoint = if path.starts_with("/v2/apps/") {
            "/v2/apps/{id}"
        } else {
            ENDPOINTS
                .into_iter()
                .find(|e| *e == path)
                .unwrap_or("other")
        };
        self.metrics
            .requests
            .get_or_create(&PathLabels { path: endpoint })
            .inc();
        // Every request, loopback or not, presents the token when one is set; without one the
        // listener is loopback (the configuration sees to it).
        let now = std::time::Instant::now();
        if self.settings.token.is_some()
            && let Some(left) = self.guesses.refused(client, now)
        {
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                crate::access::TOO_MANY_GUESSES,
            );
            let retry = crate::access::retry_after(left);
            r.headers_mut().insert(header::RETRY_AFTER, retry);
            return r;
        }
        let allowed = match &self.settings.token {
            Some(token) => {
                let ok = crate::access::presents(req.headers(), token);
                if !ok && req.headers().contains_key(header::AUTHORIZATION) {
                    self.guesses.failed(client, now);
                }
                ok
            }
            // Open to loopback clients that name a loopback host: not to a browser's page whose
            // name was rebound to 127.0.0.1 (as the admin API's open reads).
            None if loopback && !crate::access::names_loopback(req.uri(), req.headers()) => {
                return text(StatusCode::FORBIDDEN, crate::access::NOT_A_LOOPBACK_NAME);
            }
            None => loopback,
        };
        if !allowed {
            let mut r = text(StatusCode::UNAUTHORIZED, "relay token required\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            // Not another guess on the same connection.
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return r;
        }
        // From now on it is never evicted to make room (`admission`).
        ticket.authenticated();
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return text(StatusCode::METHOD_NOT_ALLOWED, "the relay is read-only\n");
        }
        if endpoint == "other" {
            return text(StatusCode::NOT_FOUND, "not a path the relay serves\n");
        }
        let current = self.observe(std::time::Instant::now());
        if self.stale.load(Ordering::Relaxed) {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "relay lost Marathon for longer than relay.max_disconnected\n",
            );
        }
        let Some(served) = self.state.load_full() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "relay not synced with Marathon yet\n",
            );
        };
        // What starts a follower on this relay (its stream, its snapshot) waits for a current
        // model; an app's re-fetch after an event is a follower's that is on it already.
        if !current && matches!(endpoint, "/v2/apps" | "/v2/tasks" | "/v2/events") {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "relay lost Marathon: no new snapshot or stream until it serves a model read \
                 after reconnecting\n",
            );
        }
        let query = req.uri().query().unwrap_or("");
        let encoding = match req.headers().get(header::ACCEPT_ENCODING) {
            Some(v) if gzip::accepts_gzip(v.to_str().unwrap_or("")) => Encoding::Gzip,
            _ => Encoding::Identity,
        };
        let mut response = match endpoint {
            // Built on the blocking pool, once per model and encoding: a big cluster's body
            // takes a while, and every follower (and every slow reader) shares the one copy.
            "/v2/apps" => {
                let embed = Embed::from_query(query);
                let served = served.clone();
                let built = tokio::task::spawn_blocking(move || served.apps_body(embed, encoding));
                match built.await {
                    Ok(Some(body)) => prepared(body, encoding),
                    Ok(None) => over_budget(),
                    Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                }
            }
            "/v2/apps/{id}" => {
                let id = path["/v2/apps".len()..].trim_end_matches('/');
                let mut embed = Embed::from_query(query);
                // Marathon embeds an app's tasks unless told what to embed.
                embed.tasks |= !query.contains("embed=");
                match served.cluster.apps.get(&AppId::from(id)) {
                    Some(app) => {
                        json_value(StatusCode::OK, json!({"app": render::app(app, embed)}))
                    }
                    None => json_value(
                        StatusCode::NOT_FOUND,
                        json!({"message": format!("App '{id}' does not exist")}),
                    ),
                }
            }
            "/v2/tasks" => {
                let served = served.clone();
                match tokio::task::spawn_blocking(move || served.tasks_body(encoding)).await {
                    Ok(Some(body)) => prepared(body, encoding),
                    Ok(None) => over_budget(),
                    Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
                }
            }
            "/v2/leader" => json_value(
                StatusCode::OK,
                json!({"leader": self.settings.listen.to_string()}),
            ),
            "/v2/info" => json_value(
                StatusCode::OK,
                json!({
                    "name": "switchyard-relay",
                    "version": env!("CARGO_PKG_VERSION"),
                    "leader": self.settings.listen.to_string(),
                    "elected": true,
                }),
            ),
            "/ping" => text(StatusCode::OK, "pong\n"),
            _ => return self.subscribe(&req, cut),
        };
        response.headers_mut().insert(
            "x-switchyard-relay-generation",
            header::HeaderValue::from(served.generation),
        );
        response
    }

    /// `/v2/events`: registered before the 200 goes out (see the module's ordering note).
    fn subscribe(
        &self,
        req: &Request<Incoming>,
        cut: Arc<Notify>,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let accepts = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        if !accepts {
            return text(
                StatusCode::NOT_ACCEPTABLE,
                "/v2/events needs Accept: text/event-stream\n",
            );
        }
        let kinds = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.strip_prefix("event_type="))
            .map(str::to_string)
            .collect();
        let (queue, rx) = mpsc::channel(self.settings.subscriber_queue.max(1));
        {
            let mut subscribers = self.subscribers.lock().unwrap();
            subscribers.retain(|s| !s.queue.is_closed());
            if subscribers.len() >= self.settings.max_subscribers {
                self.metrics
                    .refused
                    .get_or_create(&KindLabels {
                        kind: "stream".into(),
                    })
                    .inc();
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "relay.max_subscribers streams are open\n",
                );
            }
            subscribers.push(Subscriber {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                queue,
                kinds,
                cut,
            });
            self.metrics.subscribers.set(subscribers.len() as i64);
        }
        let mut r = Response::new(SseBody { rx }.boxed());
        let headers = r.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        r
    }

    /// Subscribers now (for tests and `/metrics`).
    pub fn subscriber_ids(&self) -> Vec<u64> {
        self.subscribers
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect()
    }
}

impl Served {
    /// `/v2/tasks`, built once per model (and compressed once, when asked for so); `None`:
    /// not built, past the body budget.
    fn tasks_body(&self, encoding: Encoding) -> Option<Bytes> {
        let cell = match encoding {
            Encoding::Gzip => &self.tasks_gzip,
            Encoding::Identity => &self.tasks,
        };
        if let Some(body) = cell.get() {
            return Some(body.clone());
        }
        if !self.budget.room() {
            return None;
        }
        let plain = || {
            let tasks: Vec<_> = self
                .cluster
                .apps
                .values()
                .flat_map(|a| a.tasks.values().map(|t| render::task(&a.id, t)))
                .collect();
            let body = serde_json::to_vec(&json!({ "tasks": tasks })).expect("serializes");
            self.budget.count(body)
        };
        let plain = self.tasks.get_or_init(plain).clone();
        Some(match encoding {
            Encoding::Identity => plain,
            Encoding::Gzip => self
                .tasks_gzip
                .get_or_init(|| self.budget.count(gzip::gzip(&plain)))
                .clone(),
        })
    }

    /// `/v2/apps` in one `embed` form and encoding, built once per model (the gzip body from
    /// the plain one); `None`: not built, past the body budget.
    fn apps_body(&self, embed: Embed, encoding: Encoding) -> Option<Bytes> {
        // Held while building: a thousand followers asking at once build it once.
        let mut bodies = self.bodies.lock().unwrap();
        if let Some(body) = bodies.get(&(embed, encoding)) {
            return Some(body.clone());
        }
        if !self.budget.room() {
            return None;
        }
        let plain = match bodies.get(&(embed, Encoding::Identity)) {
            Some(plain) => plain.clone(),
            None => {
                let plain = self.render_apps(embed);
                bodies.insert((embed, Encoding::Identity), plain.clone());
                plain
            }
        };
        if encoding == Encoding::Identity {
            return Some(plain);
        }
        let compressed = self.budget.count(gzip::gzip(&plain));
        bodies.insert((embed, encoding), compressed.clone());
        Some(compressed)
    }

    fn render_apps(&self, embed: Embed) -> Bytes {
        let mut out = Vec::with_capacity(64 << 10);
        out.extend_from_slice(b"{\"apps\":[");
        for (i, app) in self.cluster.apps.values().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &render::app(app, embed))
                .expect("a JSON value serializes");
        }
        out.extend_from_slice(b"]}");
        self.budget.count(out)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Whether an answer is an event stream (`subscribe`'s).
fn is_stream<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"text/event-stream")
}

/// A body not built: too many older ones are still being read (`budget`).
fn over_budget() -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "relay.max_body_bytes of answers are being read; try again\n",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    r
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = Response::new(Full::new(body).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A prepared body (`/v2/apps`, `/v2/tasks`) in the encoding the client asked for.
fn prepared(body: Bytes, encoding: Encoding) -> Response<BoxBody<Bytes, Infallible>> {
    let mut r = json_bytes(StatusCode::OK, body);
    let headers = r.headers_mut();
    headers.insert(
        header::VARY,
        header::HeaderValue::from_static("accept-encoding"),
    );
    if encoding == Encoding::Gzip {
        headers.insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    r
}

fn json_value(status: StatusCode, body: serde_json::Value) -> Response<BoxBody<Bytes, Infallible>> {
    json_bytes(status, Bytes::from(body.to_string()))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
