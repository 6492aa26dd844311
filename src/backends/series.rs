//! The per-backend metric series (`switchyard_backend_*`, `switchyard_http_responses_total`):
//! plain atomics inside each backend's state, rendered into `/metrics` when it is scraped.
//!
//! Why not a labelled family per metric: a backend then costs a dozen label sets (two `String`s
//! each), a dozen hash-map inserts under a lock and a dozen shared counters before it can take
//! traffic. A 50,000-app snapshot has 500,000 backends: that was most of the 12–16 s between the
//! snapshot and its first table. Here attaching a backend allocates its state and nothing else,
//! the hot path touches the same atomics as before (no lock, no allocation), and a scrape walks
//! what the [`super::Registry`] last published: every backend in the table and every one still
//! draining, each with every series, at zero until it sees traffic — the same text the families
//! gave.

use std::fmt::{Display, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::histogram::Histogram;

use super::{BackendKey, BackendState, Row};
use crate::chunked::Chunked;
use crate::routing::Service;

pub(super) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A monotonic count read at scrape time: one atomic, held in place (not behind an `Arc`).
#[derive(Default, Debug)]
pub struct Count(AtomicU64);

impl Count {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A backend's counters. Connections in flight are the state's own count
/// (`BackendState::active`), shown as `backend_active_connections`.
///
/// The counters are made at the first thing counted: every backend of the table has
/// `BackendMetrics`, and on an agent node most never see a connection (the backends of apps
/// it never calls), so an unused one is 24 bytes, not the counters' 96 (40 MB at 500,000
/// backends). Readers see zeros until then.
pub struct BackendMetrics {
    /// Shared by every backend of the service: latency per app version, not per task.
    response_seconds: Histogram,
    counters: OnceLock<Box<Counters>>,
}

/// What [`BackendMetrics`] counts, once it counts anything.
#[derive(Default)]
pub struct Counters {
    pub connections: Count,
    pub bytes_in: Count,
    pub bytes_out: Count,
    pub connect_failures: Count,
    pub ejections: Count,
    responses: [Count; 5],
    /// This backend's response times in fine buckets (20 % apart, atomics): a rollout's p99
    /// gate and the dashboard's history read them.
    latency: super::latency::Latency,
}

impl BackendMetrics {
    pub(super) fn new(response_seconds: Histogram) -> BackendMetrics {
        BackendMetrics {
            response_seconds,
            counters: OnceLock::new(),
        }
    }

    /// The counters, to count with (made at the first call).
    pub fn count(&self) -> &Counters {
        self.counters.get_or_init(Box::default)
    }

    fn read(&self, get: impl FnOnce(&Counters) -> u64) -> u64 {
        self.counters.get().map_or(0, |c| get(c))
    }

    /// Connections (TCP) or requests (HTTP) sent so far.
    pub fn connections(&self) -> u64 {
        self.read(|c| c.connections.get())
    }

    pub fn bytes_in(&self) -> u64 {
        self.read(|c| c.bytes_in.get())
    }

    pub fn bytes_out(&self) -> u64 {
        self.read(|c| c.bytes_out.get())
    }

    pub fn connect_failures(&self) -> u64 {
        self.read(|c| c.connect_failures.get())
    }

    pub fn ejections(&self) -> u64 {
        self.read(|c| c.ejections.get())
    }

    /// A response's time, from the request sent to the response head: the service's histogram
    /// and this backend's buckets. Both HTTP codecs record through here.
    pub fn response_time(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        self.response_seconds.observe(seconds);
        self.count().latency.observe(seconds);
    }

    /// Responses of a status class (`1`..=`5`) so far.
    pub fn responses(&self, class: usize) -> u64 {
        self.read(|c| c.responses[class.clamp(1, 5) - 1].get())
    }

    pub fn response(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.count().responses[class].inc();
    }

    /// Whether anything was counted yet (a connection or request sent, a connect failed).
    pub fn used(&self) -> bool {
        self.counters.get().is_some()
    }

    /// The response-time buckets so far; `None` before the first response (nothing to copy).
    pub fn latency(&self) -> Option<[u64; super::latency::BUCKETS]> {
        self.counters.get()?.latency.observed()
    }
}

/// What a scrape shows: the last attached table's services and their rows of states, and the
/// backends still draining. Cloned out of its lock by a scrape (a few reference counts), so a
/// swap waits at most for that copy.
#[derive(Clone, Default)]
pub(super) struct View {
    pub services: Chunked<Arc<Service>>,
    pub rows: Chunked<Row>,
    pub draining: Arc<[(BackendKey, Arc<BackendState>)]>,
}

impl View {
    /// Every backend once, with its service: a row holds one state twice for two tasks on one
    /// address, next to each other (`compile` sorts a service's backends by address).
    fn each(
        &self,
        mut f: impl FnMut(&dyn Display, SocketAddr, &BackendState) -> std::fmt::Result,
    ) -> std::fmt::Result {
        for (service, row) in self.services.iter().zip(self.rows.iter()) {
            let mut last: Option<&Arc<BackendState>> = None;
            for state in row.iter() {
                if last.is_some_and(|l| Arc::ptr_eq(l, state)) {
                    continue;
                }
                last = Some(state);
                f(&service.key, state.addr, state)?;
            }
        }
        for ((service, addr), state) in self.draining.iter() {
            f(service, *addr, state)?;
        }
        Ok(())
    }
}

/// The collector registered with the metrics: renders the published [`View`].
#[derive(Debug)]
pub(super) struct Series {
    pub view: Arc<Mutex<View>>,
    /// Only backends that have been used get series (`admin.backend_series = "used"`).
    pub used_only: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("services", &self.services.len())
            .field("draining", &self.draining.len())
            .finish()
    }
}

/// A label value written from its `Display` (a service key, an address), escaped as the other
/// families' values are (`metrics::Escaped`): a service key carries an app id.
struct Shown<'a>(&'a dyn Display);

impl EncodeLabelValue for Shown<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        write!(crate::metrics::EscapingWriter(encoder), "{}", self.0)
    }
}

/// A per-backend family: its name (without the `switchyard_` prefix and a counter's `_total`),
/// help, and value.
struct Family {
    name: &'static str,
    help: &'static str,
    value: Value,
}

enum Value {
    Counter(fn(&BackendState) -> u64),
    Gauge(fn(&BackendState) -> i64),
    /// `http_responses_total`, with a third label, `class`.
    Responses,
}

const FAMILIES: [Family; 7] = [
    Family {
        name: "backend_connections",
        help: "Connections (TCP) or requests (HTTP) sent to a backend",
        value: Value::Counter(|s| s.metrics.connections()),
    },
    Family {
        name: "backend_active_connections",
        help: "Connections or requests in flight to a backend",
        value: Value::Gauge(|s| s.active() as i64),
    },
    Family {
        name: "backend_bytes_in",
        help: "Bytes received from clients and sent to a backend",
        value: Value::Counter(|s| s.metrics.bytes_in()),
    },
    Family {
        name: "backend_bytes_out",
        help: "Bytes received from a backend and sent to clients",
        value: Value::Counter(|s| s.metrics.bytes_out()),
    },
    Family {
        name: "backend_connect_failures",
        help: "Failed connects to a backend",
        value: Value::Counter(|s| s.metrics.connect_failures()),
    },
    Family {
        name: "http_responses",
        help: "HTTP responses by status class",
        value: Value::Responses,
    },
    Family {
        name: "backend_ejections",
        help: "Times a backend was ejected as an outlier (5 consecutive failures)",
        value: Value::Counter(|s| s.metrics.ejections()),
    },
];

impl Collector for Series {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let used_only = self.used_only.load(Ordering::Relaxed);
        // As an empty family was: no backend, no family.
        if view.services.is_empty() && view.draining.is_empty() {
            return Ok(());
        }
        for family in &FAMILIES {
            let kind = match family.value {
                Value::Gauge(_) => MetricType::Gauge,
                Value::Counter(_) | Value::Responses => MetricType::Counter,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            view.each(|service, addr, state| {
                if used_only && !state.metrics.used() {
                    return Ok(());
                }
                let labels = [("service", Shown(service)), ("backend", Shown(&addr))];
                match family.value {
                    Value::Counter(get) => metric
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&get(state), None),
                    Value::Gauge(get) => metric.encode_family(&labels)?.encode_gauge(&get(state)),
                    Value::Responses => {
                        for (k, class) in STATUS_CLASSES.iter().enumerate() {
                            let labels = [
                                ("service", Shown(service)),
                                ("backend", Shown(&addr)),
                                ("class", Shown(class)),
                            ];
                            metric
                                .encode_family(&labels)?
                                .encode_counter::<NoLabelSet, _, u64>(
                                    &state.metrics.responses(k + 1),
                                    None,
                                )?;
                        }
                        Ok(())
                    }
                }
            })?;
        }
        Ok(())
    }
}
