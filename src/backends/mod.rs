//! Per-backend runtime state that outlives any one routing table: active connection counts (for
//! least-connections and metrics), connect latency, the outlier record and the health verdict,
//! and draining. No protocol types: the proxy keeps its idle connections itself (`proxy::pool`).
//!
//! The [`Registry`] carries state from one table to the next by backend identity (service and
//! address). A backend that leaves the table starts draining: new traffic no longer reaches it,
//! and its open connections are cut once the drain timeout passes.

pub mod health;
pub mod latency;
pub mod limits;
pub mod outlier;
mod series;
mod state;

pub use series::{BackendMetrics, Count};
pub use state::{ActiveGuard, BackendState};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use tokio::time::Instant;

use crate::metrics::{Metrics, ServiceLabels};
use crate::routing::{RoutingTable, ServiceKey};

pub type BackendKey = (ServiceKey, SocketAddr);

/// The states of one service's backends, in its backend order; shared by the snapshots whose
/// service is the same.
pub type Row = Arc<[Arc<BackendState>]>;

/// A row's states once each: two tasks on one address share a state, next to each other.
pub(crate) fn unique(row: &[Arc<BackendState>]) -> impl Iterator<Item = &Arc<BackendState>> {
    row.iter()
        .enumerate()
        .filter(|&(i, state)| i == 0 || !Arc::ptr_eq(&row[i - 1], state))
        .map(|(_, state)| state)
}

/// A service no longer in the table: all its backends (`row`, its last states) leave.
fn leave(
    key: &ServiceKey,
    row: &[Arc<BackendState>],
    left: &mut Vec<(BackendKey, Arc<BackendState>)>,
) {
    left.extend(unique(row).map(|state| ((key.clone(), state.addr), state.clone())));
}

/// Backend states keyed by identity, carried across table swaps.
pub struct Registry {
    /// The services of the table last attached, in its order (the table's own, shared), and
    /// their rows of states: a patch copies the chunks it changes (`crate::chunked`). A
    /// changed service finds its last states here, beside it in key order (`attach`) or at its
    /// index (`attach_patched`): no second index of the live backends is kept (at 500,000
    /// backends one cost 25 MB).
    last: crate::chunked::Chunked<Arc<crate::routing::Service>>,
    rows: crate::chunked::Chunked<Row>,
    draining: HashMap<BackendKey, Arc<BackendState>>,
    metrics: Arc<Metrics>,
    drain_timeout: Duration,
    verdicts: Arc<tokio::sync::Notify>,
    limits: limits::LimitStates,
    /// What `/metrics` shows of the backends (`series`), published at the end of each attach.
    view: Arc<std::sync::Mutex<series::View>>,
    /// `/metrics` shows only the backends that have been used ([`Registry::series_of_used_only`]).
    used_only: Arc<std::sync::atomic::AtomicBool>,
    /// `draining` changed since the view last copied it.
    draining_changed: bool,
}

impl Registry {
    /// The registry of `metrics`' backends: their series are rendered from it when scraped
    /// (one registry per `Metrics`).
    pub fn new(metrics: Arc<Metrics>, drain_timeout: Duration) -> Registry {
        let (view, used_only) = (Arc::default(), Arc::default());
        metrics.register_collector(series::Series {
            view: Arc::clone(&view),
            used_only: Arc::clone(&used_only),
        });
        Registry {
            last: Default::default(),
            rows: Default::default(),
            draining: HashMap::new(),
            metrics,
            drain_timeout,
            verdicts: Arc::default(),
            limits: limits::LimitStates::default(),
            view,
            used_only,
            draining_changed: false,
        }
    }

    /// `/metrics` has per-backend series only for the backends that have been used (a
    /// connection or request sent, a connect failed: `admin.backend_series = "used"`), not
    /// for every backend of the table.
    pub fn series_of_used_only(&self, on: bool) {
        self.used_only.store(on, Ordering::Relaxed);
    }

    /// The request-limit states of `table`'s services, in table order (`None`: no limit),
    /// carried over from the last table while an app's limits stay the same.
    pub fn attach_limits(
        &mut self,
        table: &RoutingTable,
    ) -> crate::chunked::Chunked<Option<Arc<limits::AppLimits>>> {
        self.limits.attach(table, &self.metrics)
    }

    /// [`Registry::attach_limits`] for a table that is the last one attached but for the
    /// services at `patched`, once [`Registry::attach_patched`] took it.
    pub fn attach_limits_patched(
        &mut self,
        table: &RoutingTable,
        patched: &[usize],
    ) -> crate::chunked::Chunked<Option<Arc<limits::AppLimits>>> {
        self.limits.attach_patched(table, patched, &self.metrics)
    }

    /// Notified when any backend's verdict flips (see [`BackendState::verdict_changed`]).
    pub fn verdict_changes(&self) -> Arc<tokio::sync::Notify> {
        self.verdicts.clone()
    }

    /// A reloaded configuration's drain timeout (for backends removed from now).
    pub fn reconfigure(&mut self, drain_timeout: Duration) {
        self.drain_timeout = drain_timeout;
    }

    /// The states for every backend of `table`, service by service, in table order. Backends
    /// that left the table start draining; drained ones with no connection left are forgotten.
    ///
    /// The work is the change's: the table is walked beside the last one attached (both are
    /// sorted by service key), and a service that is the same `Arc` in both (its app did not
    /// change, see `routing::compile::Cache`) keeps its row of states as it is.
    pub fn attach(&mut self, table: &RoutingTable) -> crate::chunked::Chunked<Row> {
        let mut left: Vec<(BackendKey, Arc<BackendState>)> = Vec::new();
        let mut states = Vec::with_capacity(table.services.len());
        let (last, rows) = (
            std::mem::take(&mut self.last),
            std::mem::take(&mut self.rows),
        );
        let mut last = last.iter().zip(rows.iter()).peekable();
        for service in &table.services {
            // Services of the last table before this one: gone from the table.
            while let Some((old, _)) = last.peek() {
                if old.key >= service.key {
                    break;
                }
                let (old, row) = last.next().expect("peeked");
                leave(&old.key, row, &mut left);
            }
            let same = last
                .peek()
                .is_some_and(|(old, _)| Arc::ptr_eq(old, service));
            let row = if same {
                last.next().expect("peeked").1.clone()
            } else {
                let old = match last.peek() {
                    Some((old, _)) if old.key == service.key => {
                        Some(last.next().expect("peeked").1)
                    }
                    _ => None,
                };
                self.attach_service(service, old.map_or(&[][..], |row| &row[..]), &mut left)
            };
            states.push(row);
        }
        for (old, row) in last {
            leave(&old.key, row, &mut left);
        }
        self.last = table.services.clone();
        self.rows = states.into();
        self.retire(left);
        self.publish();
        self.rows.clone()
    }

    /// [`Registry::attach`] for a table that is the last one attached but for the services at
    /// `patched` (sorted indices; `routing::compile::Patched`): every other service is the last
    /// table's own, at the same index, and keeps its row without being looked at. The work is
    /// the patched services' (and a copy of the rows). `None`, nothing done, for a table that
    /// does not fit (another count of services, another key at a patched index): it is to be
    /// attached in full.
    pub fn attach_patched(
        &mut self,
        table: &RoutingTable,
        patched: &[usize],
    ) -> Option<crate::chunked::Chunked<Row>> {
        let fits = self.last.len() == table.services.len()
            && patched.iter().all(|&i| {
                table
                    .services
                    .get(i)
                    .is_some_and(|s| self.last[i].key == s.key)
            });
        if !fits {
            return None;
        }
        debug_assert!(
            self.last
                .iter()
                .zip(&table.services)
                .enumerate()
                .all(|(i, (old, s))| patched.contains(&i) || Arc::ptr_eq(old, s)),
            "a service not patched is the last table's"
        );
        let mut left = Vec::new();
        for &i in patched {
            let service = &table.services[i];
            if Arc::ptr_eq(&self.last[i], service) {
                continue;
            }
            let old = self.rows[i].clone();
            let row = self.attach_service(service, &old, &mut left);
            self.rows.set(i, row);
        }
        self.last = table.services.clone();
        self.retire(left);
        self.publish();
        Some(self.rows.clone())
    }

    /// Backends that left the table start draining; drained ones with no connection left are
    /// forgotten.
    fn retire(&mut self, left: Vec<(BackendKey, Arc<BackendState>)>) {
        let deadline = Instant::now() + self.drain_timeout;
        self.draining_changed |= !left.is_empty();
        for (key, state) in left {
            state.start_draining(deadline);
            self.draining.insert(key, state);
        }
        let now = Instant::now();
        let before = self.draining.len();
        self.draining.retain(|_, state| {
            !(state.drain_deadline().is_some_and(|d| d <= now) && state.active() == 0)
        });
        self.draining_changed |= self.draining.len() != before;
    }

    /// Hands `/metrics` the backends as they are now: the table's rows as attached (shared,
    /// not copied) and, when it changed, the list of those draining.
    fn publish(&mut self) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        view.services = self.last.clone();
        view.rows = self.rows.clone();
        if std::mem::take(&mut self.draining_changed) {
            view.draining = self
                .draining
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect();
        }
    }

    /// The states of a service that is new or changed: its backends matched by address with
    /// `old`, its row in the last table (empty when new); those not matched leave.
    fn attach_service(
        &mut self,
        service: &crate::routing::Service,
        old: &[Arc<BackendState>],
        left: &mut Vec<(BackendKey, Arc<BackendState>)>,
    ) -> Row {
        let old: Vec<&Arc<BackendState>> = unique(old).collect();
        let mut taken = vec![false; old.len()];
        // A service with many backends is searched through a map, a small one in place.
        let index: Option<rustc_hash::FxHashMap<SocketAddr, usize>> =
            (old.len() > 16).then(|| old.iter().enumerate().map(|(i, s)| (s.addr, i)).collect());
        let mut row: Vec<Arc<BackendState>> = Vec::with_capacity(service.backends.len());
        // The service's latency histogram, looked up once, when its first new backend needs it.
        let mut response_seconds = None;
        for (i, b) in service.backends.iter().enumerate() {
            // Two tasks on one address share its key, so its state (they are adjacent:
            // `compile` sorts backends by address).
            if let Some(state) = row.last()
                && state.addr == b.addr
            {
                row.push(state.clone());
                continue;
            }
            // Mostly the same backends in the same order: the same position first.
            let at = match old.get(i) {
                Some(state) if state.addr == b.addr => Some(i),
                _ => match &index {
                    Some(index) => index.get(&b.addr).copied(),
                    None => old.iter().position(|state| state.addr == b.addr),
                },
            };
            let state = match at {
                Some(at) if !taken[at] => {
                    taken[at] = true;
                    old[at].clone()
                }
                _ => match row.iter().find(|state| state.addr == b.addr) {
                    Some(state) => state.clone(),
                    None => {
                        let key = (service.key.clone(), b.addr);
                        self.undrain(&key).unwrap_or_else(|| {
                            let histogram = response_seconds
                                .get_or_insert_with(|| self.service_series(&service.key));
                            self.create(&key, histogram.clone())
                        })
                    }
                },
            };
            row.push(state);
        }
        for (state, taken) in old.into_iter().zip(taken) {
            if !taken {
                left.push(((service.key.clone(), state.addr), state.clone()));
            }
        }
        row.into()
    }

    pub fn draining(&self) -> usize {
        self.draining.len()
    }

    /// The backends that left the table and still drain, with their service, for the admin
    /// API (read off the hot path, after a swap).
    pub fn draining_states(&self) -> Vec<(BackendKey, Arc<BackendState>)> {
        let mut out: Vec<_> = self
            .draining
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn undrain(&mut self, key: &BackendKey) -> Option<Arc<BackendState>> {
        let state = self.draining.remove(key)?;
        self.draining_changed = true;
        state.stop_draining();
        Some(state)
    }

    /// A service's own series, made when its first backend is: its refusals (at zero) and its
    /// response-time histogram, which its backends share.
    fn service_series(&self, key: &ServiceKey) -> Histogram {
        let labels = ServiceLabels {
            service: key.to_string(),
        };
        let _ = self.metrics.no_backend.get_or_create(&labels);
        self.metrics
            .http_response_seconds
            .get_or_create(&labels)
            .clone()
    }

    fn create(&self, key: &BackendKey, response_seconds: Histogram) -> Arc<BackendState> {
        Arc::new(BackendState::new(
            key.1,
            response_seconds,
            self.verdicts.clone(),
        ))
    }
}

#[cfg(test)]
mod tests;
