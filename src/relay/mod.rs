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
//!
//! Here: the relay's state and the models it publishes; its connections are accepted and served
//! in `serve.rs`, its requests answered in `answers.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, mpsc};

use crate::cluster::Cluster;
use crate::discovery::marathon::render::Embed;
use crate::metrics::{KindLabels, Metrics, PathLabels};

mod admission;
mod answers;
mod budget;
mod events;
mod freshness;
mod serve;

use admission::Admission;
use budget::BodyBudget;
use events::{Subscriber, events};
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

/// `[relay]`, as `wiring.rs` builds it from the file.
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

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
