//! What a swap leaves for after the table is live: the health checker's targets (the live
//! table's services and rows, shared: the checker looks at what changed itself), sent on the
//! control thread; the table hash, made off it on the idle-priority thread
//! (`crate::background`), so that it never holds up a thread that wakes for the new table; and
//! what `/metrics` writes from the live table when scraped (the hash, the route weights).

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

/// Replaces the one `switchyard_table_hash` series by the live table's, making its hash if the
/// idle-priority thread has not yet (the caller is not the control thread: `admin`'s scrape
/// runs this on the blocking pool; 434 ms for a first table at 50,000 apps). A scrape never
/// shows a replaced table's hash.
fn publish_table_hash(metrics: &Metrics, live: &Snapshot) {
    metrics.table_hash.clear();
    // No table swapped in yet: no series.
    if live.generation == 0 {
        return;
    }
    let hash = live.table.hash();
    let labels = crate::metrics::HashLabels {
        hash: crate::routing::digest::hex(hash),
        text: crate::routing::digest::TEXT_VERSION.to_string(),
    };
    metrics.table_hash.get_or_create(&labels).set(1);
}

/// Publishes the weights of every multi-app route of the live table (single-app routes carry
/// none).
fn publish_route_weights(metrics: &Metrics, live: &Snapshot) {
    metrics.route_weight.clear();
    for route in live
        .table
        .routes
        .iter()
        .filter(|r| r.members.len() > 1 || r.overridden)
    {
        for m in &route.members {
            let labels = crate::metrics::RouteLabels {
                route: route.name.clone(),
                app: m.app_id.to_string(),
                source: m.weight_from.as_str(),
            };
            metrics
                .route_weight
                .get_or_create(&labels)
                .set(m.weight as i64);
        }
    }
}

/// `/metrics`: the live table's hash and route weights written into their families, then
/// everything encoded, one scrape at a time (so that one scrape's families are not cleared
/// under another's encoding). Only scrapes write these families, and the idle thread makes the
/// hash outside the table's once-only cell: nothing at its priority holds what a scrape waits
/// for. Blocking (a hash not made yet is made here): not for the control thread.
pub fn scrape(metrics: &Metrics, store: &Store, out: &mut impl std::fmt::Write) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let live = store.load();
    publish_table_hash(metrics, &live);
    publish_route_weights(metrics, &live);
    metrics.encode_into(out);
}

/// What a swap leaves to the idle-priority thread: the live table's hash, made there (outside
/// the table's once-only cell: `RoutingTable::hash_at_low_priority`) so that a scrape finds it
/// made. One run at a time, and at most one more waiting, so that a burst of swaps costs one
/// more run, and the last run reads the last table.
#[derive(Default)]
pub(super) struct AfterSwap {
    /// A run is waiting and has not read the live snapshot yet.
    queued: AtomicBool,
    running: std::sync::Mutex<()>,
}

impl AfterSwap {
    pub(super) fn follow(self: &Arc<Self>, store: &Arc<Store>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let store = store.clone();
        let job = Box::new(move || {
            let _one = this
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            this.queued.store(false, Ordering::Release);
            // A table replaced meanwhile is still freed by the store (`Store::reap`), never
            // here: freeing takes the allocator's locks, not to be held at this priority.
            store.load().table.hash_at_low_priority();
        });
        // Its queue full (the idle thread starved for long) or no thread: the blocking pool.
        if let Err(job) = crate::background::run(job) {
            tokio::task::spawn_blocking(job);
        }
    }
}
