//! What a swap leaves for after the table is live: the health checker's targets (the live
//! table's services and rows, shared: the checker looks at what changed itself), sent on the
//! control thread; the route weight metrics and the table hash, made off it on the idle-priority
//! thread (`crate::background`), so that they never hold up a thread that wakes for the new
//! table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, Store};

/// Hands the live table's services and states to the health checker (a pointer copy; it looks
/// at the services that changed itself: `health_check::run`).
pub(super) fn send_health_targets(
    sender: &watch::Sender<crate::health_check::Targets>,
    snapshot: &Snapshot,
) {
    let next = crate::health_check::Targets {
        services: snapshot.table.services.clone(),
        rows: snapshot.states.clone(),
    };
    sender.send_if_modified(|current| {
        if current.same(&next) {
            return false;
        }
        *current = next;
        true
    });
}

/// Replaces the one `switchyard_table_hash` series by the live table's (computing its hash if
/// nobody has yet). Called after each swap off the control thread (`low_priority`: on the idle
/// thread), and before `/metrics` is encoded, so a scrape never shows a replaced table's hash.
/// The hash is made outside any lock, so that a scrape never waits for the idle thread's work,
/// only for another caller's few writes; a table older than the one already shown is not
/// shown again, so the last table wins whatever order the callers finish in.
pub fn publish_table_hash(metrics: &Metrics, store: &Store, low_priority: bool) {
    let live = store.load();
    // No table swapped in yet: no series.
    if live.generation == 0 {
        return;
    }
    let hash = if low_priority {
        live.table.hash_at_low_priority()
    } else {
        live.table.hash()
    };
    let labels = crate::metrics::HashLabels {
        hash: crate::routing::digest::hex(hash),
        text: crate::routing::digest::TEXT_VERSION.to_string(),
    };
    static SHOWN: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
    let mut shown = SHOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *shown > live.generation {
        return;
    }
    *shown = live.generation;
    metrics.table_hash.clear();
    metrics.table_hash.get_or_create(&labels).set(1);
}

/// Publishes the weights of every multi-app route of the live table (single-app routes carry
/// none). Called after each swap off the control thread, and before `/metrics` is encoded, so
/// that a scrape right after a weight change sees it. As for the hash, the series are gathered
/// outside the lock and a table older than the one shown is not shown again.
pub fn publish_route_weights(metrics: &Metrics, store: &Store) {
    let live = store.load();
    let weights: Vec<(crate::metrics::RouteLabels, i64)> = live
        .table
        .routes
        .iter()
        .filter(|r| r.members.len() > 1 || r.overridden)
        .flat_map(|route| {
            route.members.iter().map(|m| {
                let labels = crate::metrics::RouteLabels {
                    route: route.name.clone(),
                    app: m.app_id.to_string(),
                    source: m.weight_from.as_str(),
                };
                (labels, m.weight as i64)
            })
        })
        .collect();
    static SHOWN: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
    let mut shown = SHOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *shown > live.generation {
        return;
    }
    *shown = live.generation;
    metrics.route_weight.clear();
    for (labels, weight) in &weights {
        metrics.route_weight.get_or_create(labels).set(*weight);
    }
}

/// What a swap leaves to the idle-priority thread — the route weight metrics, the table hash —
/// made from the snapshot live when it runs: one run at a time, and at most one more waiting,
/// so that a burst of swaps costs one more run, and the last run reads the last table.
#[derive(Default)]
pub(super) struct AfterSwap {
    /// A run is waiting and has not read the live snapshot yet.
    queued: AtomicBool,
    running: std::sync::Mutex<()>,
}

impl AfterSwap {
    pub(super) fn follow(self: &Arc<Self>, store: &Arc<Store>, metrics: &Arc<Metrics>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let (store, metrics) = (store.clone(), metrics.clone());
        let job = Box::new(move || {
            let _one = this
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            this.queued.store(false, Ordering::Release);
            publish_route_weights(&metrics, &store);
            publish_table_hash(&metrics, &store, true);
        });
        // Its queue full (the idle thread starved for long) or no thread: the blocking pool.
        if let Err(job) = crate::background::run(job) {
            tokio::task::spawn_blocking(job);
        }
    }
}
