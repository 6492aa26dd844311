//! The relay's byte budget on prepared bodies (`/v2/apps`, `/v2/tasks`): every such body is
//! counted from when it is built until its last holder lets it go — the model that built it, and
//! every follower's answer still being written from it. A follower that reads a big snapshot
//! slowly keeps that model's body alive after the model is replaced; many of them across
//! changes would keep many generations. Past `relay.max_body_bytes` no new body is built: the
//! request is answered 503 with `Retry-After` (a follower tries its next relay, or retries),
//! until the old bodies' readers finish or are cut. One body is always allowed, however large.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

pub(super) struct BodyBudget {
    limit: usize,
    alive: AtomicUsize,
    /// `alive`, for `/metrics`.
    bytes: Gauge,
    /// Requests answered 503 for want of room.
    refused: Counter,
}

/// A body's bytes, uncounted when the last `Bytes` pointing into them is dropped.
struct Counted {
    body: Bytes,
    budget: Arc<BodyBudget>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let left = self
            .budget
            .alive
            .fetch_sub(self.body.len(), Ordering::Relaxed);
        self.budget.bytes.set((left - self.body.len()) as i64);
    }
}

impl BodyBudget {
    pub(super) fn new(limit: usize, bytes: Gauge, refused: Counter) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            limit,
            alive: AtomicUsize::new(0),
            bytes,
            refused,
        })
    }

    /// Whether a new body may be built now; `false` is counted (the caller answers 503).
    pub(super) fn room(&self) -> bool {
        let alive = self.alive.load(Ordering::Relaxed);
        let room = alive == 0 || alive < self.limit;
        if !room {
            self.refused.inc();
        }
        room
    }

    /// A built body, counted until its last holder drops it.
    pub(super) fn count(self: &Arc<Self>, body: impl Into<Bytes>) -> Bytes {
        let body = body.into();
        let alive = self.alive.fetch_add(body.len(), Ordering::Relaxed) + body.len();
        self.bytes.set(alive as i64);
        Bytes::from_owner(Counted {
            body,
            budget: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_counts_until_its_last_slice_is_dropped_and_past_the_limit_none_is_built() {
        let budget = BodyBudget::new(100, Gauge::default(), Counter::default());
        assert!(budget.room(), "nothing alive: one body, however large");
        let big = budget.count(vec![0; 150]);
        let tail = big.slice(140..);
        drop(big);
        assert!(!budget.room(), "a slice still being written holds it");
        assert_eq!(budget.refused.get(), 1);
        assert_eq!(budget.bytes.get(), 150);
        drop(tail);
        assert_eq!(budget.bytes.get(), 0);
        assert!(budget.room());
        let small = budget.count(vec![0; 10]);
        assert!(budget.room(), "under the limit");
        drop(small);
    }
}
