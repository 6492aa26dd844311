//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size filled
//! from per-backend permutations, so that every instance given the same backends builds the same
//! table, each backend owns a share of entries proportional to its weight, and removing one of
//! N backends moves only about 1/N of the flows.

/// The default table size: prime, and large enough that shares stay within 1 % of the weights
/// for up to a few hundred backends.
pub const TABLE_SIZE: usize = 65537;

#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
    len: usize,
}

impl Maglev {
    /// `ids` identify the backends stably (their addresses); `weights` give their shares.
    pub fn new(ids: &[u64], weights: &[u32]) -> Maglev {
        Maglev::with_size(ids, weights, TABLE_SIZE)
    }

    pub fn with_size(ids: &[u64], weights: &[u32], size: usize) -> Maglev {
        let n = ids.len();
        if n == 0 {
            return Maglev {
                table: Box::new([]),
                len: 0,
            };
        }
        let offsets: Vec<usize> = ids
            .iter()
            .map(|&id| (mix(id) % size as u64) as usize)
            .collect();
        let skips: Vec<usize> = ids
            .iter()
            .map(|&id| (mix(id ^ 0x9e37_79b9_7f4a_7c15) % (size as u64 - 1)) as usize + 1)
            .collect();
        let max_weight = weights.iter().copied().max().unwrap_or(1).max(1) as u64;
        let mut next = vec![0usize; n];
        let mut table = vec![u32::MAX; size];
        // Weighted turns: each round, backend i fills one entry with probability w_i / w_max,
        // tracked deterministically with a credit counter.
        let mut credit = vec![0u64; n];
        let mut filled = 0;
        'fill: loop {
            for i in 0..n {
                credit[i] += weights[i] as u64;
                if credit[i] < max_weight {
                    continue;
                }
                credit[i] -= max_weight;
                loop {
                    let slot = (offsets[i] + next[i] * skips[i]) % size;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == size {
                    break 'fill;
                }
            }
            if weights.iter().all(|&w| w == 0) {
                break;
            }
        }
        Maglev {
            table: table.into_boxed_slice(),
            len: n,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backend for a flow hash.
    pub fn pick(&self, key: u64) -> usize {
        if self.table.is_empty() {
            return 0;
        }
        match self.table[(mix(key) % self.table.len() as u64) as usize] {
            u32::MAX => 0,
            i => i as usize,
        }
    }
}

/// A 64-bit finalizer (splitmix64): spreads any key over the table.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable id for a backend address (the same on every instance and every table).
pub fn id_of(addr: std::net::SocketAddr) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    };
    match addr.ip() {
        std::net::IpAddr::V4(ip) => feed(&ip.octets()),
        std::net::IpAddr::V6(ip) => feed(&ip.octets()),
    }
    feed(&addr.port().to_be_bytes());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shares(m: &Maglev, n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for &i in m.table.iter() {
            counts[i as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / m.table.len() as f64)
            .collect()
    }

    #[test]
    fn shares_follow_weights_within_one_percent() {
        let ids: Vec<u64> = (0..10).map(|i| mix(i + 1000)).collect();
        let equal = Maglev::new(&ids, &[1; 10]);
        for share in shares(&equal, 10) {
            assert!((share - 0.1).abs() < 0.01, "{share}");
        }
        let weights = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5];
        let weighted = Maglev::new(&ids, &weights);
        let total: u32 = weights.iter().sum();
        for (share, w) in shares(&weighted, 10).iter().zip(weights) {
            assert!(
                (share - w as f64 / total as f64).abs() < 0.01,
                "{share} vs {w}"
            );
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth_of_flows() {
        let n = 10;
        let ids: Vec<u64> = (0..n).map(|i| mix(i as u64 + 7)).collect();
        let before = Maglev::new(&ids, &vec![1; n]);
        let after = Maglev::new(&ids[1..], &vec![1; n - 1]);
        let flows = 100_000u64;
        let moved = (0..flows)
            .filter(|&k| {
                let b = before.pick(k);
                // Flows of the removed backend must move; count the others that moved too.
                b != 0 && ids[b] != ids[1..][after.pick(k)]
            })
            .count();
        let moved_share = moved as f64 / flows as f64;
        assert!(
            moved_share < 0.02,
            "only the removed backend's flows should move: {moved_share}"
        );
    }

    #[test]
    fn same_backends_same_table() {
        let ids = [mix(1), mix(2), mix(3)];
        let a = Maglev::new(&ids, &[1, 1, 1]);
        let b = Maglev::new(&ids, &[1, 1, 1]);
        assert_eq!(a.table, b.table);
    }

    proptest! {
        #[test]
        fn every_entry_is_a_backend(n in 1usize..20, seed: u64) {
            let ids: Vec<u64> = (0..n as u64).map(|i| mix(seed ^ i)).collect();
            let m = Maglev::with_size(&ids, &vec![1; n], 251);
            prop_assert!(m.table.iter().all(|&i| (i as usize) < n));
        }
    }
}
