//! The retry budget (as Finagle's and Envoy's): every request that could be replayed deposits a
//! fifth of a retry, every replay withdraws one, plus a floor of a few retries per second for
//! quiet services. When backends fail en masse, retries stay at most 20% extra load instead of
//! doubling it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// In thousandths of a retry.
const RETRY: i64 = 1000;
const DEPOSIT: i64 = RETRY / 5;
/// At most this many retries are banked, so a long quiet spell cannot fund a storm.
const CAP: i64 = 100 * RETRY;
/// Retries allowed per second whatever the request rate.
const FLOOR_PER_SECOND: i64 = 10;

pub struct RetryBudget {
    balance: AtomicI64,
    epoch: Instant,
    /// Whole seconds since `epoch` when the floor was last added.
    floor_added: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            balance: AtomicI64::new(FLOOR_PER_SECOND * RETRY),
            epoch: Instant::now(),
            floor_added: AtomicU64::new(0),
        }
    }
}

impl RetryBudget {
    /// A request that may be replayed was made.
    pub fn deposit(&self) {
        if self.balance.fetch_add(DEPOSIT, Ordering::Relaxed) + DEPOSIT > CAP {
            self.balance.store(CAP, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        self.add_floor();
        let taken = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= RETRY).then_some(b - RETRY)
            });
        taken.is_ok()
    }

    fn add_floor(&self) {
        let now = self.epoch.elapsed().as_secs();
        let last = self.floor_added.load(Ordering::Relaxed);
        if now > last
            && self
                .floor_added
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let seconds = (now - last).min(1) as i64;
            let floor = seconds * FLOOR_PER_SECOND * RETRY;
            let _ = self
                .balance
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some((b.max(0) + floor).min(CAP.max(b)))
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_at_most_a_fifth_of_requests_beyond_the_floor() {
        let budget = RetryBudget::default();
        // The starting floor.
        let mut taken = 0;
        while budget.withdraw() {
            taken += 1;
        }
        assert_eq!(taken, FLOOR_PER_SECOND);
        for _ in 0..400 {
            budget.deposit();
        }
        let mut taken = 0;
        while budget.withdraw() {
            taken += 1;
        }
        assert_eq!(taken, 80);
    }

    #[test]
    fn the_bank_is_capped() {
        let budget = RetryBudget::default();
        for _ in 0..1_000_000 {
            budget.deposit();
        }
        let mut taken = 0;
        while budget.withdraw() {
            taken += 1;
        }
        assert_eq!(taken, CAP / RETRY);
    }
}
