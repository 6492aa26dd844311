//! Per-app request limits as runtime state, carried across table swaps by service: the token
//! bucket of `SWITCHYARD_{n}_RATE_LIMIT` (one for the app, or a bounded table of them by
//! client address), and the counts of requests in flight and waiting for a backend connection
//! (`MAX_CONCURRENT_REQUESTS`, `MAX_PENDING_REQUESTS`). Every worker shares one state per app
//! and only touches atomics: a bucket is one `AtomicU64` updated by compare-and-swap.
//!
//! The bucket is kept as GCRA's "theoretical arrival time": the instant (in nanoseconds since
//! the process's epoch) at which the bucket would be full again. A request at `now` is
//! allowed when that instant, moved on by one interval, is at most `burst` intervals ahead of
//! `now`; the refusal says how long until it would be. No refill timer, no lock.
//! How the proxy answers a refusal is `proxy::limits`'.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::metrics::{LimitLabels, Metrics};
use crate::routing::ServiceKey;
use crate::routing::edge::{CLIENT_BUCKETS, Edge, Rate};

/// What is limited, as configured; a state is carried to the next table only while it stays
/// the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitConfig {
    pub rate: Option<Rate>,
    pub max_concurrent: Option<u32>,
    pub max_pending: Option<u32>,
}

impl LimitConfig {
    pub fn of(edge: &Edge) -> LimitConfig {
        LimitConfig {
            rate: edge.rate.clone(),
            max_concurrent: edge.max_concurrent,
            max_pending: edge.max_pending,
        }
    }
}

/// Refusals counted per app, resolved once.
pub struct LimitCounters {
    pub rate: Counter,
    pub concurrency: Counter,
    pub pending: Counter,
}

pub struct AppLimits {
    pub config: LimitConfig,
    /// The app's bucket (a rate limit by app).
    bucket: AtomicU64,
    /// Buckets by client address hash (a rate limit by client); empty otherwise.
    clients: Box<[AtomicU64]>,
    active: AtomicU32,
    pending: AtomicU32,
    pub counters: LimitCounters,
}

/// Nanoseconds since the process's first look at the clock here (never 0 after the first
/// call: a bucket at 0 is full).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| Instant::now() - Duration::from_secs(1));
    epoch.elapsed().as_nanos() as u64
}

/// One request through a GCRA bucket: `Err` with the wait until one would be allowed.
fn take(bucket: &AtomicU64, rate: &Rate, now: u64) -> Result<(), Duration> {
    let interval = rate.interval_ns;
    let tolerance = interval.saturating_mul(u64::from(rate.burst));
    let mut current = bucket.load(Ordering::Relaxed);
    loop {
        let next = current.max(now).saturating_add(interval);
        if next - now > tolerance {
            return Err(Duration::from_nanos(next - now - tolerance));
        }
        match bucket.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(seen) => current = seen,
        }
    }
}

/// A client address's bucket: a hash of the address, the same for every worker.
fn client_slot(ip: IpAddr, buckets: usize) -> usize {
    let mut hash: u64 = 0xcbf29ce484222325;
    let bytes: &[u8] = &match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    (hash % buckets as u64) as usize
}

/// The count a [`Slot`] was asked of is at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLimit;

/// A place among the requests in flight (or waiting for a connection); freed when dropped.
pub struct Slot {
    limits: Arc<AppLimits>,
    pending: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let count = if self.pending {
            &self.limits.pending
        } else {
            &self.limits.active
        };
        count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppLimits {
    pub fn new(config: LimitConfig, counters: LimitCounters) -> AppLimits {
        let per_client = config.rate.as_ref().is_some_and(|r| r.per_client);
        let clients = if per_client {
            (0..CLIENT_BUCKETS).map(|_| AtomicU64::new(0)).collect()
        } else {
            Box::default()
        };
        AppLimits {
            config,
            bucket: AtomicU64::new(0),
            clients,
            active: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            counters,
        }
    }

    /// One request from `client` through the rate limit: `Err` with how long until one would
    /// pass.
    pub fn rate(&self, client: IpAddr) -> Result<(), Duration> {
        let Some(rate) = &self.config.rate else {
            return Ok(());
        };
        let bucket = if self.clients.is_empty() {
            &self.bucket
        } else {
            &self.clients[client_slot(client, self.clients.len())]
        };
        take(bucket, rate, now_ns())
    }

    /// A place among the requests in flight (`None`: no such limit), or `Err` when they are
    /// at the limit.
    pub fn enter(self: &Arc<Self>) -> Result<Option<Slot>, AtLimit> {
        Self::acquire(self, &self.active, self.config.max_concurrent, false)
    }

    /// A place among the requests waiting for a new backend connection (`None`: no such
    /// limit), or `Err` when they are at the limit.
    pub fn wait_for_connection(self: &Arc<Self>) -> Result<Option<Slot>, AtLimit> {
        Self::acquire(self, &self.pending, self.config.max_pending, true)
    }

    fn acquire(
        this: &Arc<Self>,
        count: &AtomicU32,
        max: Option<u32>,
        pending: bool,
    ) -> Result<Option<Slot>, AtLimit> {
        let Some(max) = max else {
            return Ok(None);
        };
        let before = count.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            limits: this.clone(),
            pending,
        };
        if before < max {
            Ok(Some(slot))
        } else {
            Err(AtLimit)
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }
}

/// The limit states of a table's services, by service key, carried across swaps.
#[derive(Default)]
pub struct LimitStates {
    by_service: std::collections::HashMap<ServiceKey, Arc<AppLimits>>,
    /// The states of the table last attached, in its order.
    last: crate::chunked::Chunked<Option<Arc<AppLimits>>>,
}

impl LimitStates {
    /// One entry per service of the table (in table order): its state when it has limits.
    pub fn attach(
        &mut self,
        table: &crate::routing::RoutingTable,
        metrics: &Metrics,
    ) -> crate::chunked::Chunked<Option<Arc<AppLimits>>> {
        let mut kept = std::collections::HashMap::new();
        let states: crate::chunked::Chunked<_> = table
            .services
            .iter()
            .map(|service| state_of(service, &mut self.by_service, &mut kept, metrics))
            .collect();
        self.by_service = kept;
        self.last = states.clone();
        states
    }

    /// [`LimitStates::attach`] for a table that is the last one attached but for the services
    /// at `patched` (of the same keys: `backends::Registry::attach_patched`).
    pub fn attach_patched(
        &mut self,
        table: &crate::routing::RoutingTable,
        patched: &[usize],
        metrics: &Metrics,
    ) -> crate::chunked::Chunked<Option<Arc<AppLimits>>> {
        if self.last.len() != table.services.len() {
            return self.attach(table, metrics);
        }
        for &i in patched {
            let service = &table.services[i];
            let mut kept = std::collections::HashMap::new();
            let state = state_of(service, &mut self.by_service, &mut kept, metrics);
            // Most services have no limits: a chunk is copied only for a change.
            let same = match (&self.last[i], &state) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if !same {
                self.last.set(i, state);
            }
            self.by_service.extend(kept);
        }
        self.last.clone()
    }
}

/// The state of `service` taken from `old` when its limits are the same, else a new one; put
/// in `kept` (`None`, nothing kept: it has no limits).
fn state_of(
    service: &crate::routing::Service,
    old: &mut std::collections::HashMap<ServiceKey, Arc<AppLimits>>,
    kept: &mut std::collections::HashMap<ServiceKey, Arc<AppLimits>>,
    metrics: &Metrics,
) -> Option<Arc<AppLimits>> {
    if !service.edge.limited() {
        // Its key's state, if any, is not carried on.
        old.remove(&service.key);
        return None;
    }
    let config = LimitConfig::of(&service.edge);
    let state = match old.remove(&service.key) {
        Some(old) if old.config == config => old,
        _ => {
            let counter = |reason| {
                metrics
                    .limited
                    .get_or_create(&LimitLabels {
                        service: service.key.to_string(),
                        reason,
                    })
                    .clone()
            };
            Arc::new(AppLimits::new(
                config,
                LimitCounters {
                    rate: counter("rate"),
                    concurrency: counter("concurrency"),
                    pending: counter("pending"),
                },
            ))
        }
    };
    kept.insert(service.key.clone(), state.clone());
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u64, burst: u32) -> Rate {
        Rate {
            interval_ns: 1_000_000_000 / per_second,
            burst,
            per_client: false,
            text: String::new(),
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let bucket = AtomicU64::new(0);
        let r = rate(10, 3);
        let t = 5_000_000_000;
        for _ in 0..3 {
            assert!(take(&bucket, &r, t).is_ok());
        }
        let wait = take(&bucket, &r, t).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // A tenth of a second later, one more.
        assert!(take(&bucket, &r, t + 100_000_000).is_ok());
        assert!(take(&bucket, &r, t + 100_000_000).is_err());
        // After a quiet second the whole burst again, no more.
        let later = t + 2_000_000_000;
        for _ in 0..3 {
            assert!(take(&bucket, &r, later).is_ok());
        }
        assert!(take(&bucket, &r, later).is_err());
    }

    #[test]
    fn concurrency_slots_are_given_back() {
        let limits = Arc::new(AppLimits::new(
            LimitConfig {
                rate: None,
                max_concurrent: Some(2),
                max_pending: None,
            },
            LimitCounters {
                rate: Counter::default(),
                concurrency: Counter::default(),
                pending: Counter::default(),
            },
        ));
        let a = limits.enter().unwrap();
        let _b = limits.enter().unwrap();
        assert!(limits.enter().is_err());
        drop(a);
        assert!(matches!(limits.enter(), Ok(Some(_))));
        assert!(
            matches!(limits.wait_for_connection(), Ok(None)),
            "no pending limit"
        );
    }
}
