//! Response times in fine buckets the control plane can read (the Prometheus histogram's are
//! write-only from here, and doubling buckets are too coarse for a p99 ratio gate): a rollout
//! compares the canary's p99 with the baseline's over one step (`crate::rollout`). One atomic
//! add per response.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket `i` holds times up to `FIRST_US × GROWTH^i`; the last bucket holds everything longer.
pub const BUCKETS: usize = 64;
const FIRST_US: f64 = 100.0;
const GROWTH: f64 = 1.2;

/// The upper bound of bucket `i`, in microseconds (the last one: its lower bound).
pub fn upper_us(i: usize) -> f64 {
    FIRST_US * GROWTH.powi(i.min(BUCKETS - 2) as i32)
}

fn bucket(us: f64) -> usize {
    if us <= FIRST_US {
        return 0;
    }
    let i = ((us / FIRST_US).ln() / GROWTH.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

pub struct Latency {
    counts: [AtomicU64; BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Latency {
    pub fn observe(&self, seconds: f64) {
        self.counts[bucket(seconds * 1e6)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, bucket by bucket.
    pub fn counts(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

/// The `q` quantile (0..1) of bucket counts, in milliseconds: the upper bound of the bucket it
/// falls in (within 20 % of the true value). `None` with no samples.
pub fn quantile_ms(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(upper_us(i) / 1000.0);
        }
    }
    Some(upper_us(BUCKETS - 1) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_samples() {
        for us in [1.0, 100.0, 101.0, 250.0, 1_000.0, 123_456.0, 2e6] {
            let i = bucket(us);
            assert!(us <= upper_us(i) * 1.0001, "{us} in {i}");
            if i > 0 {
                assert!(us > upper_us(i - 1), "{us} in {i}");
            }
        }
        assert_eq!(bucket(1e12), BUCKETS - 1);
    }

    #[test]
    fn p99_within_a_bucket() {
        let l = Latency::default();
        for _ in 0..990 {
            l.observe(0.010);
        }
        for _ in 0..10 {
            l.observe(0.500);
        }
        let p99 = quantile_ms(&l.counts(), 0.99).unwrap();
        assert!((10.0..12.0).contains(&p99), "{p99}");
        let p999 = quantile_ms(&l.counts(), 0.999).unwrap();
        assert!((500.0..600.0).contains(&p999), "{p999}");
        assert_eq!(quantile_ms(&[0; BUCKETS], 0.99), None);
    }
}
