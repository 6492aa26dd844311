//! Power of two choices over a peak-EWMA of connect latency times outstanding connections
//! (Minuteman's choice, and linkerd's): two backends drawn at random, the cheaper one wins. It
//! avoids both the herd that "least loaded" causes across many instances and slow backends.

use super::Load;

#[derive(Debug)]
pub struct P2c {
    len: usize,
}

impl P2c {
    pub fn new(len: usize) -> P2c {
        P2c { len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pick(&self, load: impl Fn(usize) -> Load) -> usize {
        match self.len {
            0 | 1 => 0,
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                if cost(load(b)) < cost(load(a)) { b } else { a }
            }
        }
    }
}

/// Latency (a backend never measured counts as fast, so it gets tried) times the work it has.
fn cost(load: Load) -> f64 {
    (load.latency_ns.max(1) as f64) * (load.active as f64 + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cheaper_of_two_wins() {
        let p = P2c::new(2);
        let loads = [
            Load {
                active: 0,
                latency_ns: 1_000_000,
            },
            Load {
                active: 0,
                latency_ns: 1_000,
            },
        ];
        assert!(
            (0..50).all(|_| p.pick(|i| loads[i]) == 1),
            "the faster backend"
        );
        let loads = [
            Load {
                active: 10,
                latency_ns: 1_000,
            },
            Load {
                active: 0,
                latency_ns: 1_000,
            },
        ];
        assert!(
            (0..50).all(|_| p.pick(|i| loads[i]) == 1),
            "the less busy backend"
        );
    }

    #[test]
    fn spreads_over_equal_backends() {
        let p = P2c::new(4);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[p.pick(|_| Load {
                active: 0,
                latency_ns: 1000,
            })] += 1;
        }
        assert!(seen.iter().all(|&c| c > 40), "{seen:?}");
    }
}
