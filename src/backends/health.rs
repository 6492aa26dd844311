//! A backend's active health verdict, as the health checker (`health_check`) records it and
//! selection reads it: down after `max_failures` failed probes in a row, up after one success.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// A backend's active health, beside its passive outlier state.
#[derive(Debug, Default)]
pub struct Health {
    failures: AtomicU32,
    down: AtomicBool,
}

impl Health {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Failed probes in a row (0 after a pass).
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Records a probe; returns the new state when it changed.
    pub fn record(&self, passed: bool, max_failures: u32) -> Option<bool> {
        if passed {
            self.failures.store(0, Ordering::Relaxed);
            return self.down.swap(false, Ordering::Relaxed).then_some(false);
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        (failures >= max_failures && !self.down.swap(true, Ordering::Relaxed)).then_some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_max_failures_up_after_one_success() {
        let h = Health::default();
        assert_eq!(h.record(false, 3), None);
        assert_eq!(h.record(false, 3), None);
        assert_eq!(h.record(false, 3), Some(true));
        assert!(h.is_down());
        assert_eq!(h.record(false, 3), None);
        assert_eq!(h.record(true, 3), Some(false));
        assert!(!h.is_down());
    }
}
