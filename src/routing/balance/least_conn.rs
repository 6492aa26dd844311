//! Least connections: the backend with the fewest active connections, ties broken by rotation so
//! that idle services still spread their load.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct LeastConn {
    len: usize,
    rotation: AtomicUsize,
}

impl LeastConn {
    pub fn new(len: usize) -> LeastConn {
        LeastConn {
            len,
            rotation: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pick(&self, load: impl Fn(usize) -> usize) -> usize {
        if self.len == 0 {
            return 0;
        }
        let start = self.rotation.fetch_add(1, Ordering::Relaxed) % self.len;
        let mut best = start;
        let mut best_load = load(start);
        for step in 1..self.len {
            let i = (start + step) % self.len;
            let l = load(i);
            if l < best_load {
                best = i;
                best_load = l;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn picks_a_least_loaded_backend(loads in proptest::collection::vec(0usize..10, 1..20)) {
            let lc = LeastConn::new(loads.len());
            let min = *loads.iter().min().unwrap();
            for _ in 0..loads.len() {
                prop_assert_eq!(loads[lc.pick(|i| loads[i])], min);
            }
        }
    }

    #[test]
    fn ties_rotate() {
        let lc = LeastConn::new(3);
        let picks: Vec<usize> = (0..3).map(|_| lc.pick(|_| 0)).collect();
        assert_eq!(picks, vec![0, 1, 2]);
    }
}
