//! Backend selection. A [`Balancer`] is built once per table from a service's backends and asked
//! per connection or request; it yields fall-through candidates, so when a connect to the first
//! fails the caller moves on to the next without asking again.

mod least_conn;
pub mod maglev;
mod p2c;
mod round_robin;

use std::net::SocketAddr;

use serde::Serialize;

pub use least_conn::LeastConn;
pub use maglev::Maglev;
pub use p2c::P2c;
pub use round_robin::SmoothWeighted;

/// The algorithm a service asks for (`HAPROXY_{n}_BALANCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
    /// Maglev on the client's address (`HAPROXY_{n}_BALANCE=source`): a client keeps its backend.
    Source,
    /// Maglev on the connection's addresses and ports (VIPs): instances agree per flow.
    Maglev,
    /// Power of two choices over peak-EWMA connect latency × outstanding connections.
    P2c,
}

/// What balancers weigh a backend by, read from its runtime state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub active: usize,
    /// Peak-EWMA of connect latency; 0 until measured.
    pub latency_ns: u64,
}

#[derive(Debug)]
pub enum Balancer {
    RoundRobin(SmoothWeighted),
    LeastConn(LeastConn),
    Maglev(Maglev, Balance),
    P2c(P2c),
}

/// The connection a pick is for: consistent hashing keys on it.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub client: SocketAddr,
    pub local: SocketAddr,
}

impl Flow {
    /// For callers with no connection at hand (benchmarks, tests).
    pub fn none() -> Flow {
        let zero = SocketAddr::from(([0, 0, 0, 0], 0));
        Flow {
            client: zero,
            local: zero,
        }
    }
}

impl Balancer {
    /// A balancer over backends identified by position (see [`Balancer::with_ids`]).
    pub fn new(balance: Balance, weights: &[u32]) -> Balancer {
        let ids: Vec<u64> = (0..weights.len() as u64).map(maglev::mix).collect();
        Balancer::with_ids(balance, weights, &ids)
    }

    /// `ids` identify backends stably across tables and instances (their addresses), so that
    /// consistent hashing maps a flow to the same backend everywhere.
    pub fn with_ids(balance: Balance, weights: &[u32], ids: &[u64]) -> Balancer {
        match balance {
            Balance::RoundRobin => Balancer::RoundRobin(SmoothWeighted::new(weights)),
            Balance::LeastConn => Balancer::LeastConn(LeastConn::new(weights.len())),
            Balance::Source | Balance::Maglev => {
                Balancer::Maglev(Maglev::new(ids, weights), balance)
            }
            Balance::P2c => Balancer::P2c(P2c::new(weights.len())),
        }
    }

    pub fn kind(&self) -> Balance {
        match self {
            Balancer::RoundRobin(_) => Balance::RoundRobin,
            Balancer::LeastConn(_) => Balance::LeastConn,
            Balancer::Maglev(_, kind) => *kind,
            Balancer::P2c(_) => Balance::P2c,
        }
    }

    /// Backend indices to try, best first; every backend appears exactly once. `load(i)` is
    /// backend `i`'s runtime load (used by least-connections and P2C).
    pub fn candidates(&self, flow: Flow, load: impl Fn(usize) -> Load) -> Candidates {
        let (first, n) = match self {
            Balancer::RoundRobin(rr) => (rr.next(), rr.len()),
            Balancer::LeastConn(lc) => (lc.pick(|i| load(i).active), lc.len()),
            Balancer::Maglev(m, kind) => (m.pick(flow_key(&flow, *kind)), m.len()),
            Balancer::P2c(p) => (p.pick(load), p.len()),
        };
        Candidates { first, n, i: 0 }
    }
}

fn flow_key(flow: &Flow, kind: Balance) -> u64 {
    let ip = |addr: &SocketAddr| match addr.ip() {
        std::net::IpAddr::V4(v4) => u32::from(v4) as u64,
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            (bits as u64) ^ ((bits >> 64) as u64)
        }
    };
    let source = maglev::mix(ip(&flow.client));
    match kind {
        Balance::Source => source,
        _ => maglev::mix(
            source
                ^ ((flow.client.port() as u64) << 48)
                ^ maglev::mix(ip(&flow.local))
                ^ ((flow.local.port() as u64) << 16)
                ^ 6, // TCP
        ),
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
            let mut seen: Vec<usize> = b.candidates(Flow::none(), |_| Load::default()).collect();
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2, 3]);
        }
        let empty = Balancer::new(Balance::LeastConn, &[]);
        assert_eq!(
            empty.candidates(Flow::none(), |_| Load::default()).count(),
            0
        );
        let maglev = Balancer::new(Balance::Maglev, &[1, 1, 1]);
        let flow = Flow {
            client: "10.0.0.1:5000".parse().unwrap(),
            local: "11.0.0.1:80".parse().unwrap(),
        };
        let first = maglev.candidates(flow, |_| Load::default()).next();
        assert!(
            (0..10).all(|_| maglev.candidates(flow, |_| Load::default()).next() == first),
            "a flow keeps its backend"
        );
        let mut all: Vec<usize> = maglev.candidates(flow, |_| Load::default()).collect();
        all.sort();
        assert_eq!(all, vec![0, 1, 2]);
    }
}
