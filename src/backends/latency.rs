//! Response times in fine buckets the control plane can read (the Prometheus histogram's are
//! write-only from here, and doubling buckets are too coarse for a p99 ratio gate): a rollout
//! compares the canary's p99 with the baseline's over one step (`crate::rollout`). One atomic
//! add per response.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket `i` holds times up to `FIRST_US × GROWTH^i`; the last bucket holds everything longer.
pub const BUCKETS: usize = 64;
const FIRST_US: f64 = 100.0;
const GROWTH: f64 = 1.2;

/// The buckets' upper bounds, µs, but the last one's (it has none): `FIRST_US × GROWTH^i`, made
/// once at compile time. A response's bucket is found among them by a binary search (six
/// comparisons), not a logarithm per response.
const BOUNDS: [f64; BUCKETS - 1] = {
    let mut bounds = [0.0; BUCKETS - 1];
    let (mut i, mut bound) = (0, FIRST_US);
    while i < BUCKETS - 1 {
        bounds[i] = bound;
        bound *= GROWTH;
        i += 1;
    }
    bounds
};

/// The upper bound of bucket `i`, in microseconds (the last one: its lower bound).
pub fn upper_us(i: usize) -> f64 {
    BOUNDS[i.min(BUCKETS - 2)]
}

/// The first bucket whose bound is at least `us` (the last one past every bound).
fn bucket(us: f64) -> usize {
    BOUNDS.partition_point(|&bound| bound < us)
}

/// One backend's buckets, made at its first response: every backend of the table has a
/// `Latency`, and most never answer one (TCP-mode backends, and on an agent node the backends
/// of apps it never calls), so an empty one is 16 bytes, not the buckets' 512 (at 500,000
/// backends, 250 MB).
#[derive(Default)]
pub struct Latency {
    counts: OnceLock<Box<[AtomicU64; BUCKETS]>>,
}

impl Latency {
    pub fn observe(&self, seconds: f64) {
        let counts = self
            .counts
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        counts[bucket(seconds * 1e6)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, bucket by bucket (all 0 before the first response).
    pub fn counts(&self) -> [u64; BUCKETS] {
        self.observed().unwrap_or([0; BUCKETS])
    }

    /// The counts so far; `None` before the first response.
    pub fn observed(&self) -> Option<[u64; BUCKETS]> {
        let counts = self.counts.get()?;
        Some(std::array::from_fn(|i| counts[i].load(Ordering::Relaxed)))
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
    fn buckets_are_made_at_the_first_sample() {
        let latency = Latency::default();
        assert_eq!(latency.counts(), [0; BUCKETS]);
        assert!(latency.counts.get().is_none());
        latency.observe(0.000_05);
        latency.observe(0.5);
        let counts = latency.counts();
        assert_eq!(counts.iter().sum::<u64>(), 2);
        assert_eq!(counts[0], 1);
        assert!(std::mem::size_of::<Latency>() <= 16);
    }

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
        assert_eq!(bucket(f64::NAN), 0);
        // Every bound is in its own bucket, and just past it in the next.
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket(upper_us(i)), i);
            assert_eq!(bucket(upper_us(i) * 1.000_001), i + 1);
        }
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
