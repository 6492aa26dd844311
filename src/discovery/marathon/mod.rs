//! The Marathon source: a full snapshot on every (re)connect and periodically, the event stream
//! in between. The stream is treated as cache invalidation: task events are applied directly,
//! app-level events trigger re-fetches, coalesced so that a burst costs one fetch.

pub mod api;
pub mod client;
pub mod guard;
pub mod gzip;
pub mod render;
pub mod sse;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use self::api::Event;
use self::client::{BaseUrl, Client};
use super::{Rejections, SourceEvent};
use crate::cluster::{AppId, ClusterUpdate};
use crate::metrics::Metrics;

const SNAPSHOT_PATH: &str = "/v2/apps?embed=apps.tasks&embed=apps.deployments&embed=apps.readiness";

/// How the Marathon source follows its leader: built from `[discovery]` by `config`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// A full resync this often, whatever the stream says.
    pub resync_interval: Duration,
    /// App-level events within this long of each other make one re-fetch.
    pub debounce: Duration,
    /// A stream that carries nothing (not even a keep-alive) this long is re-opened.
    pub stream_idle_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// After a stream that was subscribed ends (a leader change, Marathon gone), reconnect
    /// after a random wait up to this long rather than the backoff's, so that many instances do
    /// not fetch their snapshots from the new leader at once (`discovery.resync_jitter`).
    pub resync_jitter: Duration,
    /// Longest SSE event, and largest snapshot, accepted.
    pub max_event_bytes: usize,
    pub max_snapshot_bytes: usize,
    /// A full read that would remove most apps waits for a second read (`guard`).
    pub removal_guard: guard::RemovalGuard,
}

pub struct MarathonSource {
    pub urls: Vec<BaseUrl>,
    pub client: Client,
    pub config: Settings,
    pub events: mpsc::Sender<SourceEvent>,
    /// Apps the reconciler could not apply an event to; fetched like app-level events.
    pub refetch: mpsc::Receiver<AppId>,
    pub resync: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

/// Re-fetches owed, gathered while events arrive and done together.
#[derive(Default)]
struct Pending {
    full: bool,
    apps: BTreeSet<String>,
    due: Option<Instant>,
}

impl Pending {
    fn add(&mut self, full: bool, app: Option<String>, delay: Duration) {
        self.full |= full;
        self.apps.extend(app);
        self.due.get_or_insert_with(|| Instant::now() + delay);
    }
}

enum Ended {
    Stream(String),
    Closed,
}

impl MarathonSource {
    pub async fn run(mut self) {
        super::zero_metrics(&self.metrics);
        // Credentials go to the configured URLs only, not wherever a redirect points.
        self.client = self.client.clone().credentials_for(&self.urls);
        let mut backoff = self.config.backoff_initial;
        let mut next_url = 0;
        let mut rejections = Rejections::default();
        // The apps applied so far (snapshots and events), across sessions: what a full read is
        // judged against (`guard`).
        let mut known = HashSet::new();
        loop {
            let base = self.urls[next_url % self.urls.len()].clone();
            let started = Instant::now();
            let mut subscribed = false;
            match self
                .session(&base, &mut rejections, &mut known, &mut subscribed)
                .await
            {
                Ended::Closed => return,
                Ended::Stream(reason) => {
                    self.metrics.source_errors.inc();
                    tracing::warn!(marathon = %base, "event stream ended: {reason}");
                    let failed = SourceEvent::Failed {
                        source: format!("marathon {base}"),
                        error: reason,
                    };
                    if self.events.send(failed).await.is_err() {
                        return;
                    }
                }
            }
            if self
                .events
                .send(SourceEvent::Connected(false))
                .await
                .is_err()
            {
                return;
            }
            self.metrics.source_connected.set(0);
            if started.elapsed() > self.config.backoff_max {
                backoff = self.config.backoff_initial; // it had been up a while: start over
            }
            next_url += 1;
            let wait = if subscribed && !self.config.resync_jitter.is_zero() {
                // A stream that was up ended: every instance saw the same end at the same time
                // (a leader change). Spread the reconnects, and their snapshots, over the window;
                // the last table is served meanwhile.
                backoff = self.config.backoff_initial;
                self.config.resync_jitter.mul_f64(fastrand::f64())
            } else {
                // Full jitter: anywhere in [backoff/2, backoff], so instances do not reconnect
                // in step.
                backoff.mul_f64(0.5 + fastrand::f64() / 2.0)
            };
            tracing::info!(retry_in = ?wait, "reconnecting to Marathon");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.resync.notified() => {}
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    /// One connection: open the stream, take a snapshot, then follow events until the stream
    /// drops. Returns why it ended.
    async fn session(
        &mut self,
        base: &BaseUrl,
        rejections: &mut Rejections,
        known: &mut HashSet<AppId>,
        subscribed: &mut bool,
    ) -> Ended {
        let path = events_path();
        let (response, leader) = match self.client.get(base, &path, "text/event-stream").await {
            Ok(r) => r,
            Err(e) => return Ended::Stream(e),
        };
        if response.status() != StatusCode::OK {
            return Ended::Stream(format!("GET /v2/events answered {}", response.status()));
        }
        if &leader != base {
            tracing::info!(leader = %leader, "following the Marathon leader");
        }
        if let Err(e) = self.snapshot(&leader, rejections, known).await {
            return Ended::Stream(format!("snapshot failed: {e}"));
        }
        tracing::info!(marathon = %leader, "subscribed to the event stream");
        *subscribed = true;
        self.metrics.source_connected.set(1);

        let mut body = response.into_body();
        let mut decoder = sse::SseDecoder::new(self.config.max_event_bytes);
        let mut decoded = Vec::new();
        let mut pending = Pending::default();
        let mut next_resync = Instant::now() + self.config.resync_interval;
        // Idle is measured in blank lines (an event's end, a keep-alive newline), not bytes or
        // lines: a stream dripping a byte at a time, or lines that never make an event, is as
        // good as dead.
        let mut idle = Instant::now() + self.config.stream_idle_timeout;
        loop {
            let due = pending.due.unwrap_or(next_resync).min(next_resync);
            tokio::select! {
                frame = body.frame() => {
                    let bytes = match frame {
                        None => return Ended::Stream("closed by Marathon".into()),
                        Some(Err(e)) => return Ended::Stream(e.to_string()),
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(bytes) => bytes,
                            Err(_) => continue,
                        },
                    };
                    match decoder.feed(&bytes, &mut decoded) {
                        Ok(true) => idle = Instant::now() + self.config.stream_idle_timeout,
                        Ok(false) => {}
                        Err(sse::EventTooLong(_)) => {
                            self.metrics.malformed_events.inc();
                            return Ended::Stream(format!(
                                "an event longer than discovery.max_event_bytes ({} bytes)",
                                self.config.max_event_bytes
                            ));
                        }
                    }
                    for event in decoded.drain(..) {
                        if let Some(closed) = self.handle(event, &mut pending, rejections, known).await {
                            return closed;
                        }
                    }
                }
                _ = tokio::time::sleep_until(idle) => {
                    return Ended::Stream(format!("no complete event or keep-alive for {:?}", self.config.stream_idle_timeout));
                }
                _ = tokio::time::sleep_until(due) => {
                    if Instant::now() >= next_resync {
                        pending.full = true;
                    }
                    let work = std::mem::take(&mut pending);
                    if work.full {
                        next_resync = Instant::now() + self.config.resync_interval;
                        if let Err(e) = self.snapshot(&leader, rejections, known).await {
                            return Ended::Stream(format!("resync failed: {e}"));
                        }
                        // The stream was not read meanwhile (a big read, a held one's wait):
                        // what it buffered is read next, not taken for silence.
                        idle = idle.max(Instant::now() + self.config.stream_idle_timeout);
                    } else {
                        for app in work.apps {
                            if let Err(e) = self.fetch_app(&leader, &app, rejections, known).await {
                                return Ended::Stream(format!("fetching {app} failed: {e}"));
                            }
                        }
                    }
                }
                _ = self.resync.notified() => {
                    tracing::info!("resync requested");
                    pending.add(true, None, Duration::ZERO);
                }
                Some(app) = self.refetch.recv() => {
                    pending.add(false, Some(app.to_string()), self.config.debounce);
                }
            }
        }
    }

    /// Applies one SSE event (which may hold several JSON objects). `Some` ends the session.
    async fn handle(
        &self,
        event: sse::SseEvent,
        pending: &mut Pending,
        rejections: &mut Rejections,
        known: &mut HashSet<AppId>,
    ) -> Option<Ended> {
        for value in sse::json_values(&event.data) {
            let parsed = value.and_then(api::parse_event);
            let (kind, action) = match parsed {
                Ok(parsed) => parsed,
                Err(reason) => {
                    self.metrics.malformed_events.inc();
                    let name = event.name.as_deref().unwrap_or("event");
                    rejections.report(name, &reason, "event", &self.metrics);
                    continue;
                }
            };
            self.metrics.event(&kind);
            match action {
                None => tracing::debug!(kind, "ignoring event"),
                Some(Event::Update(update)) => {
                    // A removal Marathon announced for one app is applied at once: a deletion,
                    // not an absence (the guard is for full reads).
                    if let ClusterUpdate::AppRemoved { id, .. } = &update {
                        known.remove(id);
                    }
                    if self.events.send(SourceEvent::Update(update)).await.is_err() {
                        return Some(Ended::Closed);
                    }
                }
                Some(Event::RefetchApp(id)) => pending.add(false, Some(id), self.config.debounce),
                Some(Event::Resync) => pending.add(true, None, self.config.debounce),
            }
        }
        None
    }

    /// A full read, applied; one that would remove most of the `known` apps only once a second
    /// read after `discovery.removal_confirm_delay` says the same (`guard`), reported while it
    /// waits. The second read is applied whatever it says: the removal confirmed, or the apps
    /// back.
    async fn snapshot(
        &self,
        base: &BaseUrl,
        rejections: &mut Rejections,
        known: &mut HashSet<AppId>,
    ) -> Result<(), String> {
        let mut parsed = self.read_apps(base, rejections).await?;
        let guard = self.config.removal_guard;
        if let Some(held) = guard.judge(known, parsed.apps.iter().map(|a| &a.id)) {
            self.metrics.snapshots_held.inc();
            self.metrics.snapshot_held.set(1);
            tracing::warn!(
                marathon = %base,
                removed = held.removed,
                known = held.known,
                confirm_in = ?guard.confirm_delay,
                "{held}"
            );
            let failed = SourceEvent::Failed {
                source: format!("marathon {base}"),
                error: held.to_string(),
            };
            self.events
                .send(failed)
                .await
                .map_err(|_| "shutting down".to_string())?;
            tokio::select! {
                _ = tokio::time::sleep(guard.confirm_delay) => {}
                _ = self.resync.notified() => {}
            }
            let second = self.read_apps(base, rejections).await;
            self.metrics.snapshot_held.set(0);
            parsed = second?;
            match guard.judge(known, parsed.apps.iter().map(|a| &a.id)) {
                Some(again) => tracing::warn!(
                    marathon = %base,
                    "a second read confirms it: {} of {} apps removed",
                    again.removed,
                    again.known
                ),
                None => tracing::info!(marathon = %base, "a second read has the apps back"),
            }
        }
        *known = parsed.apps.iter().map(|a| a.id.clone()).collect();
        tracing::debug!(apps = parsed.apps.len(), "snapshot");
        // Connected before the read it took (`SourceEvent::Connected`); a held read's problem
        // goes with it (a failed read would have replaced it).
        self.events
            .send(SourceEvent::Connected(true))
            .await
            .map_err(|_| "shutting down".to_string())?;
        self.events
            .send(SourceEvent::Update(ClusterUpdate::Snapshot(parsed.apps)))
            .await
            .map_err(|_| "shutting down".to_string())
    }

    /// `GET /v2/apps` in full, parsed; its rejections reported.
    async fn read_apps(
        &self,
        base: &BaseUrl,
        rejections: &mut Rejections,
    ) -> Result<api::ParsedApps, String> {
        let body = self
            .fetch(base, SNAPSHOT_PATH)
            .await?
            .ok_or("404 on /v2/apps")?;
        let parsed = api::parse_apps(&body).inspect_err(|_| self.metrics.reject("snapshot"))?;
        rejections.report_all(&parsed.rejected, "app", &self.metrics);
        Ok(parsed)
    }

    async fn fetch_app(
        &self,
        base: &BaseUrl,
        id: &str,
        rejections: &mut Rejections,
        known: &mut HashSet<AppId>,
    ) -> Result<(), String> {
        let path =
            format!("/v2/apps{id}?embed=app.tasks&embed=app.deployments&embed=app.readiness");
        let update = match self.fetch(base, &path).await? {
            None => {
                known.remove(id);
                ClusterUpdate::AppRemoved {
                    id: id.into(),
                    at_ms: 0,
                }
            }
            Some(body) => match api::parse_single_app(&body) {
                Ok(app) => {
                    known.insert(app.id.clone());
                    ClusterUpdate::AppUpserted(app)
                }
                Err((_, reason)) => {
                    rejections.report(id, &reason, "app", &self.metrics);
                    return Ok(());
                }
            },
        };
        self.events
            .send(SourceEvent::Update(update))
            .await
            .map_err(|_| "shutting down".into())
    }

    /// GETs a JSON document; `None` on 404.
    async fn fetch(&self, base: &BaseUrl, path: &str) -> Result<Option<bytes::Bytes>, String> {
        let (response, _) = self.client.get_json(base, path).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status if client::is_retryable(status) => return Err(format!("{path}: {status}")),
            status => return Err(format!("{path}: unexpected {status}")),
        }
        let body = self
            .client
            .read_decoded(response, self.config.max_snapshot_bytes)
            .await?;
        Ok(Some(body))
    }
}

fn events_path() -> String {
    let mut path = String::from("/v2/events?");
    for (i, kind) in api::SUBSCRIBED_EVENTS.iter().enumerate() {
        if i > 0 {
            path.push('&');
        }
        path.push_str("event_type=");
        path.push_str(kind);
    }
    path
}
