//! What the reconciler publishes for the admin API and the dashboard: the control plane's status
//! (readiness, the source's connection and errors) and the record of each table swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the admin API reports about the control plane.
#[derive(Default)]
pub struct Status {
    /// A full snapshot has been applied at least once.
    pub ready: AtomicBool,
    pub connected: AtomicBool,
    pub last_sync_unix_ms: AtomicU64,
    /// Full reads of the source (snapshots, resyncs) applied so far.
    pub full_reads: AtomicU64,
    /// `full_reads` when the source was last reported lost (0: never): a model holding more
    /// holds a read made after that loss (the relay's freshness, `relay::Source`).
    pub reads_at_loss: AtomicU64,
    /// The source's last failure, while it lasts (cleared when the source next succeeds).
    pub source_error: std::sync::Mutex<Option<SourceError>>,
    /// The most recent table swaps, newest last (at most [`SWAP_HISTORY`]).
    pub swaps: std::sync::Mutex<std::collections::VecDeque<SwapRecord>>,
    /// Backends that left the table and still drain, as of the last swap (the admin API shows
    /// them; their counters stay live).
    pub draining: std::sync::Mutex<
        Vec<(
            crate::backends::BackendKey,
            Arc<crate::backends::BackendState>,
        )>,
    >,
    /// The Mesos source's state, when one is configured.
    pub mesos: std::sync::Mutex<Option<crate::discovery::mesos::Report>>,
    /// Mesos is the only source: its connection is the source's.
    pub mesos_only: AtomicBool,
}

impl Status {
    /// Connected to the source that makes the model: Marathon (or the file), or Mesos when it
    /// is the only source.
    pub fn source_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
            || (self.mesos_only.load(Ordering::Relaxed)
                && self
                    .mesos
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    .is_some_and(|m| m.connected))
    }
}

pub const SWAP_HISTORY: usize = 50;

/// Why the discovery source is failing: shown by `/v1/routes` (a problem), `/readyz` (its body)
/// and `switchyard status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceError {
    /// `file PATH` or `marathon URL`.
    pub source: String,
    pub error: String,
    pub since_unix_ms: u64,
}

impl Status {
    /// The source's failure as one line: what failed, why, and whether anything is served.
    pub fn source_problem(&self) -> Option<String> {
        let error = self.source_error.lock().unwrap().clone()?;
        let state = if self.ready.load(Ordering::Relaxed) {
            "serving the last good state"
        } else {
            "never loaded: nothing is served until it does"
        };
        Some(format!("{}: {} ({state})", error.source, error.error))
    }
}

/// What one table swap changed, for the dashboard.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwapRecord {
    pub generation: u64,
    pub unix_ms: u64,
    pub compile_us: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Routes added (`+name`), removed (`-name`), or whose apps or weights changed (`name`).
    pub routes: Vec<String>,
    /// Whether the table's problems differ from the previous table's.
    pub problems_changed: bool,
    /// Nothing above changed: a swap that left backends, routes and problems as they were (a
    /// resync, a task's health that does not move routing). The dashboard collapses them.
    pub unchanged: bool,
}
