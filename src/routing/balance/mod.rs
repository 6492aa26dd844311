//! Backend selection. A [`Balancer`] is built once per table from a service's backends and asked
//! per connection or request; it yields fall-through candidates, so when a connect to the first
//! fails the caller moves on to the next without asking again.

mod least_conn;
mod round_robin;

use serde::Serialize;

pub use least_conn::LeastConn;
pub use round_robin::SmoothWeighted;

/// The algorithm a service asks for (`HAPROXY_{n}_BALANCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
}

#[derive(Debug)]
pub enum Balancer {
    RoundRobin(SmoothWeighted),
    LeastConn(LeastConn),
}

impl Balancer {
    pub fn new(balance: Balance, weights: &[u32]) -> Balancer {
        match balance {
            Balance::RoundRobin => Balancer::RoundRobin(SmoothWeighted::new(weights)),
            Balance::LeastConn => Balancer::LeastConn(LeastConn::new(weights.len())),
        }
    }

    pub fn kind(&self) -> Balance {
        match self {
            Balancer::RoundRobin(_) => Balance::RoundRobin,
            Balancer::LeastConn(_) => Balance::LeastConn,
        }
    }

    /// Backend indices to try, best first; every backend appears exactly once. `load(i)` is
    /// backend `i`'s current number of active connections (used by least-connections).
    pub fn candidates(&self, load: impl Fn(usize) -> usize) -> Candidates {
        let (first, n) = match self {
            Balancer::RoundRobin(rr) => (rr.next(), rr.len()),
            Balancer::LeastConn(lc) => (lc.pick(load), lc.len()),
        };
        Candidates { first, n, i: 0 }
    }
}

/// The first pick, then every other backend in ring order after it.
#[derive(Debug, Clone)]
pub struct Candidates {
    first: usize,
    n: usize,
    i: usize,
}

impl Iterator for Candidates {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.i >= self.n {
            return None;
        }
        let item = (self.first + self.i) % self.n;
        self.i += 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.n - self.i;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_cover_every_backend_once() {
        let b = Balancer::new(Balance::RoundRobin, &[1, 1, 1, 1]);
        for _ in 0..5 {
            let mut seen: Vec<usize> = b.candidates(|_| 0).collect();
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2, 3]);
        }
        let empty = Balancer::new(Balance::LeastConn, &[]);
        assert_eq!(empty.candidates(|_| 0).count(), 0);
    }
}
