//! The one place the live table is published: an `ArcSwap` of the current [`Snapshot`].
//!
//! The reconciler is the only writer. Readers `load()` once per connection, request or query and
//! never take a lock. A watch channel tells background tasks (listeners, the demo) that a new
//! generation is live.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::RoutingTable;
use crate::backends::BackendState;

/// A compiled table with the runtime state of its backends attached, as readers see it.
pub struct Snapshot {
    pub generation: u64,
    /// Shared with the snapshot that only refreshes the DNS zone.
    pub table: Arc<RoutingTable>,
    /// The DNS zone, built beside the table (it takes longer) and published when ready.
    pub dns: Option<Arc<crate::dns::zone::Zone>>,
    /// `states[s][b]` is the state of backend `b` of service `s`.
    pub states: Vec<Vec<Arc<BackendState>>>,
    pub created: SystemTime,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            generation: 0,
            table: Arc::default(),
            dns: None,
            states: Vec::new(),
            created: SystemTime::now(),
        }
    }
}

pub struct Store {
    current: ArcSwap<Snapshot>,
    generation: watch::Sender<u64>,
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
        self.current.store(Arc::new(snapshot));
        self.generation.send_replace(generation);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
