//! Smooth weighted round robin (nginx's algorithm), precomputed at compile time.
//!
//! The pick sequence of one period is built once when the table is compiled; asking for a backend
//! is then one atomic increment and one index, with no lock on the hot path. Equal weights give
//! plain rotation. Weights are scaled down so a period never exceeds [`MAX_PERIOD`] picks.

use std::sync::atomic::{AtomicUsize, Ordering};

pub const MAX_PERIOD: u64 = 4096;

pub struct SmoothWeighted {
    /// One period of picks; empty for equal weights, which rotate over `len` without a list
    /// (a compile makes one picker per service and per route, nearly all of equal weights).
    sequence: Box<[u32]>,
    /// The weights are equal and above zero: plain rotation.
    rotates: bool,
    len: usize,
    cursor: AtomicUsize,
}

/// The pick sequence and size only: the cursor starts at random and moves with traffic, so two
/// compiles of one cluster print alike.
impl std::fmt::Debug for SmoothWeighted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rotation: Vec<u32>;
        let sequence = if self.rotates {
            rotation = (0..self.len as u32).collect();
            &rotation[..]
        } else {
            &self.sequence[..]
        };
        f.debug_struct("SmoothWeighted")
            .field("sequence", &sequence)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl SmoothWeighted {
    pub fn new(weights: &[u32]) -> SmoothWeighted {
        let rotates = equal(weights);
        let sequence = if rotates {
            Box::default()
        } else {
            walk(weights).into_boxed_slice()
        };
        let period = if rotates {
            weights.len()
        } else {
            sequence.len()
        };
        // Start each table at a random point so instances and swaps do not all favour backend 0.
        // One (a route's single app, nearly always) or none: no random number to draw.
        let start = if period <= 1 {
            0
        } else {
            fastrand::usize(..period)
        };
        SmoothWeighted {
            sequence,
            rotates,
            len: weights.len(),
            cursor: AtomicUsize::new(start),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn next(&self) -> usize {
        if self.rotates {
            return self.cursor.fetch_add(1, Ordering::Relaxed) % self.len;
        }
        if self.sequence.is_empty() {
            return 0;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.sequence.len();
        self.sequence[i] as usize
    }
}

/// One period of smooth weighted round robin, as a list (what a picker walks). Zero weights
/// never appear. Equal weights (every backend of nearly every service) rotate: the picker
/// keeps no list for them, and the general walk below gives the same.
#[cfg(test)]
fn sequence(weights: &[u32]) -> Vec<u32> {
    if equal(weights) {
        return (0..weights.len() as u32).collect();
    }
    walk(weights)
}

/// Some weights, all equal and above zero: the sequence is plain rotation.
fn equal(weights: &[u32]) -> bool {
    weights
        .first()
        .is_some_and(|&first| first > 0 && weights.iter().all(|&w| w == first))
}

/// nginx's smooth weighted round robin over one period of `weights` (scaled).
fn walk(weights: &[u32]) -> Vec<u32> {
    let weights = scaled(weights);
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

/// Divides weights by their gcd, then scales them down (keeping every non-zero weight ≥ 1) until
/// one period fits in `MAX_PERIOD`.
fn scaled(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w)).max(1);
    let mut w: Vec<u32> = weights.iter().map(|&w| w / g).collect();
    let total: u64 = w.iter().map(|&x| x as u64).sum();
    if total > MAX_PERIOD {
        let factor = total as f64 / MAX_PERIOD as f64;
        for x in &mut w {
            if *x > 0 {
                *x = ((*x as f64 / factor).floor() as u32).max(1);
            }
        }
    }
    w
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The shortcut for equal weights gives the general walk's sequence.
        #[test]
        fn equal_weights_rotate_as_the_walk_does(n in 1usize..300, w in 1u32..5000) {
            let weights = vec![w; n];
            prop_assert_eq!(sequence(&weights), walk(&weights));
        }
    }

    proptest! {
        /// A picker walks its weights' sequence, from some point, period after period: equal
        /// weights (kept without a list) as any others.
        #[test]
        fn picks_follow_the_sequence(weights in proptest::collection::vec(0u32..4, 1..10)) {
            let period = sequence(&weights);
            let picker = SmoothWeighted::new(&weights);
            let picks: Vec<u32> = (0..2 * period.len()).map(|_| picker.next() as u32).collect();
            let follows = |from: usize| {
                picks.iter().enumerate().all(|(k, &p)| p == period[(from + k) % period.len()])
            };
            prop_assert!(period.is_empty() || (0..period.len()).any(follows), "{picks:?} {period:?}");
            prop_assert_eq!(format!("{picker:?}").contains(&format!("{period:?}")), true);
        }
    }

    #[test]
    fn two_pickers_of_one_weighting_print_alike() {
        let weights = [3, 1, 0, 2, 5, 1, 1, 4];
        let texts: std::collections::BTreeSet<String> = (0..32)
            .map(|_| {
                let picker = SmoothWeighted::new(&weights);
                picker.next();
                format!("{picker:?}")
            })
            .collect();
        assert_eq!(texts.len(), 1, "{texts:?}");
    }

    #[test]
    fn smooth_not_bursty() {
        assert_eq!(sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(sequence(&[1, 1, 1]), vec![0, 1, 2]);
    }

    proptest! {
        /// Over one period every backend is picked exactly its (reduced) weight times.
        #[test]
        fn exact_shares(weights in proptest::collection::vec(0u32..50, 1..12)) {
            let seq = sequence(&weights);
            let g = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
            for (i, &w) in weights.iter().enumerate() {
                let picks = seq.iter().filter(|&&x| x as usize == i).count() as u32;
                prop_assert_eq!(picks, w / g);
            }
        }

        /// Large weights are scaled, never dropped, and the period stays bounded.
        #[test]
        fn bounded_period(weights in proptest::collection::vec(1u32..100_000, 1..40)) {
            let seq = sequence(&weights);
            prop_assert!(seq.len() as u64 <= MAX_PERIOD + weights.len() as u64);
            for i in 0..weights.len() {
                prop_assert!(seq.contains(&(i as u32)));
            }
        }
    }
}
