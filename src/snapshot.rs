//! The one place the live table is published: an `ArcSwap` of the current [`Snapshot`].
//!
//! The reconciler is the only writer. Readers `load()` once per connection, request or query and
//! never take a lock. A watch channel tells background tasks (listeners, the demo) that a new
//! generation is live.
//!
//! Replaced snapshots are retired, not dropped: the store keeps each until no reader holds it,
//! then the writer hands it to the runtime's blocking pool to be freed, a moment after the swap.
//! Otherwise the last request to let go of a 10,000-app table would free it on the data plane,
//! in the middle of serving; freed on the writer's thread, inside `publish`, it would lengthen
//! every swap; and freed at the publication's moment, it would compete for the CPU with the
//! readers that publication wakes.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::backends::BackendState;
use crate::routing::RoutingTable;

/// A compiled table with the runtime state of its backends attached, as readers see it.
pub struct Snapshot {
    pub generation: u64,
    /// Shared with the snapshot that only refreshes the DNS zone.
    pub table: Arc<RoutingTable>,
    /// The DNS zone, built beside the table (it takes longer) and published when ready.
    pub dns: Option<Arc<crate::zone::Zone>>,
    /// `states[s][b]` is the state of backend `b` of service `s`.
    /// A row is shared with the previous snapshot while its service is unchanged, and the rows
    /// in chunks (`crate::chunked`) while none of theirs changed.
    pub states: crate::chunked::Chunked<Arc<[Arc<BackendState>]>>,
    /// `limits[s]`: the request limits of service `s` (`None`: it has none).
    pub limits: crate::chunked::Chunked<Option<Arc<crate::backends::limits::AppLimits>>>,
    pub created: SystemTime,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            generation: 0,
            table: Arc::default(),
            dns: None,
            states: Default::default(),
            limits: Default::default(),
            created: SystemTime::now(),
        }
    }
}

pub struct Store {
    current: ArcSwap<Snapshot>,
    generation: watch::Sender<u64>,
    /// Replaced snapshots that readers may still hold.
    retired: Mutex<Vec<Arc<Snapshot>>>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        Store {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            generation: watch::Sender::new(0),
            retired: Mutex::default(),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// A snapshot to keep across awaits (a whole connection or request).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn publish(&self, snapshot: Snapshot) {
        let generation = snapshot.generation;
        // After the swap every reader's guard of the old snapshot is a counted reference.
        let old = self.current.swap(Arc::new(snapshot));
        self.generation.send_replace(generation);
        self.retired.lock().unwrap().push(old);
        self.reap();
    }

    /// Frees retired snapshots no reader holds any more, off the writer's thread; returns how
    /// many are still held.
    pub fn reap(&self) -> usize {
        let mut retired = self.retired.lock().unwrap();
        // Out of the store, a count of one is ours alone: no reader can take it again.
        let free: Vec<Arc<Snapshot>> = retired
            .extract_if(.., |s| Arc::strong_count(s) == 1)
            .collect();
        let held = retired.len();
        drop(retired);
        free_elsewhere(free);
        held
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// Frees snapshots nobody else holds on the runtime's blocking pool, [`SETTLE`] after the swap
/// that replaced them, so that a swap does not pay for freeing the table it replaced (at 50,000
/// apps, about 8 % of a swap), and the threads the swap woke (its readers) have run before a
/// pool thread starts on it (`perf sched`: benches/RESULTS.md, branch p99fix). Not on the
/// idle-priority thread: freeing takes the allocator's locks, which a thread the scheduler may
/// leave without a core must not hold. Without a runtime (unit tests, the CLI), here.
fn free_elsewhere(free: Vec<Arc<Snapshot>>) {
    if free.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || {
            std::thread::sleep(SETTLE);
            drop(free)
        })),
        Err(_) => drop(free),
    }
}

/// How long after a swap the table it replaced is freed (see [`free_elsewhere`]).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(n: u64) -> Snapshot {
        Snapshot {
            generation: n,
            ..Snapshot::empty()
        }
    }

    #[test]
    fn a_replaced_table_is_freed_by_the_writer_not_by_its_last_reader() {
        let store = Store::new();
        store.publish(generation(1));
        let reader = store.load_full();
        let table = Arc::downgrade(&reader.table);
        store.publish(generation(2));
        assert_eq!(store.load().generation, 2);
        assert_eq!(store.reap(), 1, "generation 1 is still read");
        drop(reader);
        assert!(
            table.upgrade().is_some(),
            "the reader's drop did not free it"
        );
        assert_eq!(store.reap(), 0);
        assert!(table.upgrade().is_none(), "reaped");
    }

    #[test]
    fn a_guard_taken_before_the_swap_keeps_its_snapshot() {
        let store = Store::new();
        store.publish(generation(1));
        let guard = store.load();
        store.publish(generation(2));
        assert_eq!(store.reap(), 1);
        assert_eq!(guard.generation, 1);
        drop(guard);
        assert_eq!(store.reap(), 0);
    }
}
