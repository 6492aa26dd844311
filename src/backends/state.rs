//! One backend's runtime state, shared by the tables it is in and the connections through it:
//! its active count, connect latency, outlier record, health verdict, counters, and its drain
//! (a deadline once it leaves the table, which its open connections wait on). The
//! [`super::Registry`] makes and carries these across swaps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{BackendMetrics, health, outlier};

pub struct BackendState {
    pub addr: SocketAddr,
    /// Passive outlier detection (see `outlier`).
    pub outlier: outlier::Outlier,
    /// Active health checks (see `health_check`).
    pub health: health::Health,
    active: AtomicUsize,
    connect_ewma_ns: std::sync::atomic::AtomicU64,
    pub metrics: BackendMetrics,
    /// While the backend drains, its deadline in nanoseconds from [`drain_epoch`] (either
    /// side of it); [`IN_TABLE`] while it is in the table. An atomic and a `Notify` rather
    /// than a `watch` channel: every backend of the table has them, and a channel is ten
    /// times their size (about 360 bytes against 40; 180 MB at 500,000 backends).
    drain_at: AtomicI64,
    /// Woken when `drain_at` changes (draining starts, or a returning backend stops).
    drain_changed: Notify,
    /// Shared by every backend of the registry: woken when a verdict flips (see
    /// [`BackendState::verdict_changed`]).
    verdicts: Arc<tokio::sync::Notify>,
}

impl BackendState {
    /// A backend's state as it joins the table: nothing counted, in the table, up.
    pub(super) fn new(
        addr: SocketAddr,
        response_seconds: Histogram,
        verdicts: Arc<Notify>,
    ) -> BackendState {
        BackendState {
            addr,
            outlier: Default::default(),
            health: Default::default(),
            active: AtomicUsize::new(0),
            connect_ewma_ns: Default::default(),
            metrics: BackendMetrics::new(response_seconds),
            drain_at: AtomicI64::new(IN_TABLE),
            drain_changed: Notify::new(),
            verdicts,
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// What balancers weigh this backend by.
    pub fn load(&self) -> crate::routing::balance::Load {
        crate::routing::balance::Load {
            active: self.active(),
            latency_ns: self.connect_ewma_ns.load(Ordering::Relaxed),
        }
    }

    /// Records a connect's duration in a peak-EWMA: a slower sample takes over at once, a
    /// faster one pulls the average down gradually (races between connections lose a sample,
    /// which an average can afford).
    pub fn observe_connect(&self, took: std::time::Duration) {
        let sample = took.as_nanos().min(u64::MAX as u128) as u64;
        let current = self.connect_ewma_ns.load(Ordering::Relaxed);
        let next = if sample >= current || current == 0 {
            sample
        } else {
            current - (current - sample) / 10
        };
        self.connect_ewma_ns.store(next, Ordering::Relaxed);
    }

    /// Counts a connection (TCP) or request (HTTP) for as long as the guard lives.
    pub fn open(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.metrics.count().connections.inc();
        ActiveGuard(self.clone())
    }

    /// Says that this backend's verdict flipped (an active probe took it down or up, outlier
    /// detection ejected it): the control plane rebuilds what follows verdicts (healthy-only
    /// DNS). One atomic store when nobody waits; the waiter coalesces a burst into one wakeup.
    pub fn verdict_changed(&self) {
        self.verdicts.notify_one();
    }

    /// Whether selection passes this backend over: down by active checks or ejected.
    pub fn is_unavailable(&self) -> bool {
        self.health.is_down() || self.outlier.is_ejected()
    }

    pub fn is_draining(&self) -> bool {
        self.drain_at.load(Ordering::Acquire) != IN_TABLE
    }

    /// When a removed backend's drain ends; `None` while it is in the table.
    pub fn drain_deadline(&self) -> Option<Instant> {
        match self.drain_at.load(Ordering::Acquire) {
            IN_TABLE => None,
            at if at >= 0 => Some(drain_epoch() + Duration::from_nanos(at.unsigned_abs())),
            at => Some(drain_epoch() - Duration::from_nanos(at.unsigned_abs())),
        }
    }

    /// Completes when this backend has been removed and its drain timeout has passed.
    pub async fn drained(&self) {
        loop {
            // Registered before the deadline is read: a change after the read wakes it.
            let changed = self.drain_changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            match self.drain_deadline() {
                Some(deadline) => tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        // Still draining to that deadline (not returned to the table since).
                        if self.drain_deadline() == Some(deadline) {
                            return;
                        }
                    }
                    _ = changed => {}
                },
                None => changed.await,
            }
        }
    }

    pub(super) fn start_draining(&self, deadline: Instant) {
        let epoch = drain_epoch();
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let at = if deadline >= epoch {
            nanos(deadline - epoch)
        } else {
            // Not IN_TABLE: i64::MIN + 1 is as early as it goes.
            -nanos(epoch - deadline)
        };
        self.drain_at.store(at, Ordering::Release);
        self.drain_changed.notify_waiters();
    }

    /// Back in the table before its drain ended.
    pub(super) fn stop_draining(&self) {
        self.drain_at.store(IN_TABLE, Ordering::Release);
        self.drain_changed.notify_waiters();
    }
}

/// `BackendState::drain_at` of a backend in the table.
const IN_TABLE: i64 = i64::MIN;

/// What drain deadlines count from: the first time one is asked for (a `tokio` instant, so that
/// tests with paused time see their own clock; a deadline may fall either side of it).
pub(super) fn drain_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub struct ActiveGuard(Arc<BackendState>);

impl ActiveGuard {
    /// The backend counted.
    pub fn state(&self) -> &Arc<BackendState> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
