//! Passive outlier detection (Envoy's defaults): a backend with 5 consecutive failures — failed
//! connects, or 5xx answers in HTTP mode — is ejected for 30 s × the times it has been ejected,
//! while at most 10 % of its service's backends (at least one, never the last) are out. An
//! ejected backend is passed over by selection until its time is up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::backends::BackendState;

pub const CONSECUTIVE_FAILURES: u32 = 5;
pub const BASE_EJECTION: Duration = Duration::from_secs(30);
pub const MAX_EJECTED_PERCENT: usize = 10;

/// The outlier state of one backend, part of its runtime state.
#[derive(Default, Debug)]
pub struct Outlier {
    consecutive: AtomicU32,
    ejections: AtomicU32,
    /// The coarse clock's milliseconds until which the backend is ejected (0: not ejected).
    until_ms: AtomicU64,
}

/// The coarse clock (`crate::clock`): an ejection lasts seconds, and every request's walk over
/// its candidates reads the time once.
fn now_ms() -> u64 {
    crate::clock::coarse_ms()
}

impl Outlier {
    pub fn is_ejected(&self) -> bool {
        self.until_ms.load(Ordering::Relaxed) > now_ms()
    }

    /// How long the ejection has left; `None` when not ejected.
    pub fn ejected_for(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    pub fn success(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }
}

/// Records a failure of `states[b]`; ejects it when it is an outlier and the service can spare
/// it. Returns whether it was ejected now.
pub fn failure(states: &[Arc<BackendState>], b: usize) -> bool {
    let outlier = &states[b].outlier;
    let failures = outlier.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
    if failures < CONSECUTIVE_FAILURES || outlier.is_ejected() {
        return false;
    }
    let ejected = states.iter().filter(|s| s.outlier.is_ejected()).count();
    let allowed = (states.len() * MAX_EJECTED_PERCENT / 100)
        .max(1)
        .min(states.len() - 1);
    if ejected >= allowed {
        return false;
    }
    let times = outlier.ejections.fetch_add(1, Ordering::Relaxed) + 1;
    let duration = BASE_EJECTION * times.min(10);
    outlier
        .until_ms
        .store(now_ms() + duration.as_millis() as u64, Ordering::Relaxed);
    outlier.consecutive.store(0, Ordering::Relaxed);
    states[b].metrics.count().ejections.inc();
    states[b].verdict_changed();
    tracing::warn!(backend = %states[b].addr, failures, ?duration, "backend ejected as an outlier");
    true
}

/// Selection order with unavailable backends (ejected here, or down by active health checks)
/// moved to the end: tried only when every other candidate has failed. No allocation: the candidates are walked twice.
pub fn ordered<'a>(
    states: &'a [Arc<BackendState>],
    candidates: crate::routing::balance::Candidates,
) -> impl Iterator<Item = usize> + 'a {
    let mut cursor = Order::new(candidates);
    std::iter::from_fn(move || cursor.next(states))
}

/// [`ordered`]'s walk, held apart from the states it reads: what a connection that tries its
/// candidates one event at a time (TCP mode's loop, `proxy::tcp_loop`) keeps between tries.
#[derive(Debug, Clone)]
pub struct Order {
    available: crate::routing::balance::Candidates,
    unavailable: crate::routing::balance::Candidates,
    /// Availability as of when the walk began.
    now: u64,
}

impl Order {
    pub fn new(candidates: crate::routing::balance::Candidates) -> Order {
        Order {
            available: candidates.clone(),
            unavailable: candidates,
            now: now_ms(),
        }
    }

    /// The next backend to try, if any is left.
    pub fn next(&mut self, states: &[Arc<BackendState>]) -> Option<usize> {
        let now = self.now;
        let ejected = |b: usize| {
            states[b].outlier.until_ms.load(Ordering::Relaxed) > now || states[b].health.is_down()
        };
        if let Some(b) = self.available.by_ref().find(|&b| !ejected(b)) {
            return Some(b);
        }
        self.unavailable.by_ref().find(|&b| ejected(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Registry;
    use crate::cluster::fixtures::{app, task};
    use crate::cluster::{Cluster, ClusterUpdate};
    use crate::metrics::Metrics;
    use crate::routing::{CompileConfig, compile};

    fn states(n: u16) -> Vec<Arc<BackendState>> {
        let tasks = (0..n).map(|i| task(&format!("t{i}"), 1000 + i)).collect();
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![app("/a", 10000, &[], tasks)]));
        let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
        let mut registry = Registry::new(Arc::new(Metrics::new()), Duration::from_secs(1));
        registry.attach(&compile(&c, &config))[0].to_vec()
    }

    #[test]
    fn five_consecutive_failures_eject_and_a_success_resets() {
        let s = states(10);
        for _ in 0..4 {
            assert!(!failure(&s, 0));
        }
        s[0].outlier.success();
        for _ in 0..4 {
            assert!(!failure(&s, 0), "the count restarted after a success");
        }
        assert!(failure(&s, 0), "the fifth in a row ejects");
        assert!(s[0].outlier.is_ejected());
        // At most 10 % of 10 backends: a second outlier stays in.
        for _ in 0..5 {
            assert!(!failure(&s, 1));
        }
        assert!(!s[1].outlier.is_ejected());
        let order: Vec<usize> = ordered(
            &s,
            crate::routing::Balancer::new(crate::routing::Balance::RoundRobin, &[1; 10])
                .candidates(crate::routing::balance::Flow::none(), |_| {
                    Default::default()
                }),
        )
        .collect();
        assert_eq!(order.len(), 10);
        assert_eq!(
            *order.last().unwrap(),
            0,
            "the ejected backend is tried last"
        );
    }

    #[test]
    fn the_last_backend_is_never_ejected() {
        let s = states(1);
        for _ in 0..10 {
            assert!(!failure(&s, 0));
        }
        let two = states(2);
        for _ in 0..5 {
            failure(&two, 0);
        }
        assert!(two[0].outlier.is_ejected(), "one of two may go");
        for _ in 0..5 {
            failure(&two, 1);
        }
        assert!(!two[1].outlier.is_ejected(), "but not both");
    }
}
