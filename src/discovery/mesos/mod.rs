//! The Mesos source: the operator API's event stream (`POST /api/v1` `{"type":"SUBSCRIBE"}`,
//! RecordIO-framed JSON). Every subscription starts with a full snapshot (`SUBSCRIBED`), so a
//! reconnect is a resync; after it, task, agent and framework events apply directly. The
//! configured masters are tried in turn; a master that is not the leader answers 307 to it,
//! which is followed. A stream that carries no record (heartbeats included) for the announced
//! heartbeat interval plus a slack is dropped and re-opened, with jittered backoff.

pub mod api;
pub mod recordio;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::marathon::client::{BaseUrl, Client};
use super::{Rejections, SourceEvent};
use crate::cluster::ClusterUpdate;
use crate::cluster::mesos::{Master, MesosUpdate};
use crate::metrics::Metrics;

/// How the Mesos source follows the leading master: built from `[discovery.mesos]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Before the first record, and when the master announces no heartbeat interval: a stream
    /// silent this long is re-opened.
    pub stream_idle_timeout: Duration,
    /// Added to the announced heartbeat interval before a silent stream counts as dead.
    pub heartbeat_slack: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Largest record after the snapshot; a larger one is skipped (counted, listed).
    pub max_record_bytes: usize,
    /// Largest `SUBSCRIBED` record (the snapshot).
    pub max_snapshot_bytes: usize,
}

/// The source's state as `/v1/routes` and `switchyard status` show it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    pub connected: bool,
    /// The master that serves the subscription.
    pub leader: Option<String>,
    pub last_snapshot_unix_ms: Option<u64>,
    pub frameworks: usize,
    pub agents: usize,
    pub tasks: usize,
    /// Records skipped since start: not JSON, not an event, oversized.
    pub malformed_records: u64,
    /// The latest few of them, newest last: why.
    pub recent_malformed: Vec<String>,
    pub last_error: Option<String>,
}

const RECENT_MALFORMED: usize = 10;

pub struct MesosSource {
    pub masters: Vec<BaseUrl>,
    pub client: Client,
    pub config: Settings,
    pub events: mpsc::Sender<SourceEvent>,
    pub metrics: Arc<Metrics>,
}

enum Ended {
    Stream(String),
    Closed,
}

pub fn master_of(url: &BaseUrl) -> Master {
    let (host, port) = url
        .authority
        .rsplit_once(':')
        .map(|(h, p)| (h.trim_start_matches('[').trim_end_matches(']'), p))
        .unwrap_or((&url.authority, "5050"));
    Master {
        host: host.into(),
        port: port.parse().unwrap_or(5050),
    }
}

/// A configured master: `host:port` or an `http(s)://` URL.
pub fn parse_master(text: &str) -> Result<BaseUrl, String> {
    if text.contains("://") {
        BaseUrl::parse(text)
    } else {
        BaseUrl::parse(&format!("http://{text}"))
    }
}

impl MesosSource {
    pub async fn run(mut self) {
        // Credentials go to the configured masters only, not wherever a redirect points.
        self.client = self.client.clone().credentials_for(&self.masters);
        for kind in api::EVENTS {
            let _ = self
                .metrics
                .events
                .get_or_create(&crate::metrics::KindLabels {
                    kind: format!("mesos_{kind}"),
                });
        }
        let mut backoff = self.config.backoff_initial;
        let mut next = 0;
        let mut report = Report::default();
        let mut rejections = Rejections::default();
        loop {
            let base = self.masters[next % self.masters.len()].clone();
            let started = Instant::now();
            let ended = self.session(&base, &mut report, &mut rejections).await;
            let reason = match ended {
                Ended::Closed => return,
                Ended::Stream(reason) => reason,
            };
            self.metrics.source_errors.inc();
            tracing::warn!(mesos = %base, "Mesos subscription ended: {reason}");
            report.connected = false;
            report.leader = None;
            report.last_error = Some(format!("{base}: {reason}"));
            // What was read keeps being served (the last leader too) until a new snapshot.
            if self
                .events
                .send(SourceEvent::Mesos(report.clone()))
                .await
                .is_err()
            {
                return;
            }
            if started.elapsed() > self.config.backoff_max {
                backoff = self.config.backoff_initial;
            }
            next += 1;
            let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            tracing::info!(retry_in = ?wait, "reconnecting to Mesos");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }

    async fn send(&self, event: SourceEvent) -> Result<(), Ended> {
        self.events.send(event).await.map_err(|_| Ended::Closed)
    }

    fn malformed(
        &self,
        report: &mut Report,
        rejections: &mut Rejections,
        what: &str,
        reason: String,
    ) {
        self.metrics.malformed_events.inc();
        rejections.report(what, &reason, "mesos record", &self.metrics);
        report.malformed_records += 1;
        if report.recent_malformed.len() == RECENT_MALFORMED {
            report.recent_malformed.remove(0);
        }
        report.recent_malformed.push(reason);
    }

    async fn session(
        &self,
        base: &BaseUrl,
        report: &mut Report,
        rejections: &mut Rejections,
    ) -> Ended {
        match self.follow(base, report, rejections).await {
            Ok(never) => match never {},
            Err(ended) => ended,
        }
    }

    async fn follow(
        &self,
        base: &BaseUrl,
        report: &mut Report,
        rejections: &mut Rejections,
    ) -> Result<std::convert::Infallible, Ended> {
        let body = bytes::Bytes::from_static(br#"{"type":"SUBSCRIBE"}"#);
        let (response, leader) = self
            .client
            .post_json(base, "/api/v1", "application/json", body)
            .await
            .map_err(Ended::Stream)?;
        if response.status() != StatusCode::OK {
            return Err(Ended::Stream(format!(
                "SUBSCRIBE answered {}",
                response.status()
            )));
        }
        if &leader != base {
            tracing::info!(leader = %leader, "following the leading Mesos master");
        }
        let mut body = response.into_body();
        let mut decoder = recordio::Decoder::new(self.config.max_snapshot_bytes);
        let mut frames = Vec::new();
        let mut subscribed = false;
        let mut silence = self.config.stream_idle_timeout;
        let mut deadline = Instant::now() + silence;
        loop {
            tokio::select! {
                frame = body.frame() => {
                    let bytes = match frame {
                        None => return Err(Ended::Stream("closed by the master".into())),
                        Some(Err(e)) => return Err(Ended::Stream(e.to_string())),
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(bytes) => bytes,
                            Err(_) => continue,
                        },
                    };
                    if let Err(e) = decoder.feed(&bytes, &mut frames) {
                        self.malformed(report, rejections, "framing", e.to_string());
                        return Err(Ended::Stream(e.to_string()));
                    }
                    for frame in frames.drain(..) {
                        deadline = Instant::now() + silence;
                        let record = match frame {
                            recordio::Frame::Record(record) => record,
                            recordio::Frame::Oversized(n) => {
                                let limit = if subscribed { self.config.max_record_bytes } else { self.config.max_snapshot_bytes };
                                let reason = format!("a record of {n} bytes, over the {limit}-byte bound");
                                self.malformed(report, rejections, "record", reason.clone());
                                if !subscribed {
                                    return Err(Ended::Stream(format!("snapshot: {reason}")));
                                }
                                self.send(SourceEvent::Mesos(report.clone())).await?;
                                continue;
                            }
                        };
                        let (kind, event) = match api::parse_event(&record) {
                            Ok(parsed) => parsed,
                            Err(reason) => {
                                self.malformed(report, rejections, "record", reason);
                                self.send(SourceEvent::Mesos(report.clone())).await?;
                                continue;
                            }
                        };
                        self.metrics.event(&format!("mesos_{kind}"));
                        match event {
                            api::Event::Subscribed(snapshot) => {
                                // A new full read: what it rejects is reported afresh.
                                rejections.forget();
                                for (id, reason) in &snapshot.rejected {
                                    self.malformed(report, rejections, id, reason.clone());
                                }
                                let interval = snapshot.heartbeat_interval;
                                // The master's word, but never past the idle timeout: a
                                // master announcing a day and going silent is left in time.
                                let idle = self.config.stream_idle_timeout;
                                silence = interval.map_or(idle, |i| (i + self.config.heartbeat_slack).min(idle));
                                deadline = Instant::now() + silence;
                                report.frameworks = snapshot.frameworks.len();
                                report.agents = snapshot.agents.len();
                                report.tasks = snapshot.tasks.len();
                                tracing::info!(
                                    mesos = %leader,
                                    tasks = report.tasks,
                                    agents = report.agents,
                                    frameworks = report.frameworks,
                                    heartbeat = ?interval,
                                    "subscribed to the Mesos master"
                                );
                                let masters = self.masters.iter().map(master_of).collect();
                                let update = snapshot.into_update(master_of(&leader), masters);
                                subscribed = true;
                                decoder.set_max(self.config.max_record_bytes);
                                report.connected = true;
                                report.leader = Some(leader.to_string());
                                report.last_error = None;
                                report.last_snapshot_unix_ms = Some(
                                    std::time::SystemTime::now()
                                        .duration_since(std::time::UNIX_EPOCH)
                                        .map_or(0, |d| d.as_millis() as u64),
                                );
                                // Connected before the read it took (`SourceEvent::Connected`).
                                self.send(SourceEvent::Mesos(report.clone())).await?;
                                self.send(SourceEvent::Update(ClusterUpdate::Mesos(update))).await?;
                            }
                            _ if !subscribed => {
                                return Err(Ended::Stream(format!("{kind} before SUBSCRIBED")));
                            }
                            api::Event::Update(update) => {
                                match &update {
                                    MesosUpdate::TaskAdded(_) => report.tasks += 1,
                                    MesosUpdate::AgentAdded(_) => report.agents += 1,
                                    MesosUpdate::AgentRemoved(_) => report.agents = report.agents.saturating_sub(1),
                                    _ => {}
                                }
                                self.send(SourceEvent::Update(ClusterUpdate::Mesos(update))).await?;
                            }
                            api::Event::Heartbeat | api::Event::Ignored => {}
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let what = if subscribed { "no heartbeat" } else { "no snapshot" };
                    return Err(Ended::Stream(format!("{what} for {silence:?}")));
                }
            }
        }
    }
}
