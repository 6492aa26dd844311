//! Shares of the DNS server's bounded resources (TCP connections, relayed queries in flight):
//! a global cap, and a cap per client, so that one client (or a few) holding its share cannot
//! starve the others. A client is its address, an IPv6 one by its prefix (`dns.ipv6_client_prefix`:
//! /64 by default, since one host commonly holds a whole /64 and picks new addresses in it at
//! will; /128 where containers hold one address each in a shared /64).
//!
//! The per-client counts live in a map with an entry only while that client holds something,
//! and every count is backed by a held global permit: the map never holds more entries than the
//! global cap, whatever the clients do.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a share was refused: which cap was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Every slot of the server is taken.
    Total,
    /// This client holds its share.
    Client,
}

impl Over {
    pub fn label(self) -> &'static str {
        match self {
            Over::Total => "total",
            Over::Client => "client",
        }
    }
}

/// Why a TCP connection's step (its next query, an answer taken) was not done in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Within `dns.tcp_idle_timeout`.
    Idle,
    /// Within the shorter bound that holds while half the connection slots are taken.
    Pressed,
}

/// A global cap and a per-client cap on one resource.
pub struct Shares {
    total: Arc<Semaphore>,
    capacity: usize,
    per_client: usize,
    /// Low bits of an IPv6 address that do not tell clients apart.
    v6_host_mask: u128,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One unit of a resource held by one client: given back when dropped.
pub struct Share {
    _permit: OwnedSemaphorePermit,
    client: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Shares {
    /// `total` units at once, of which at most `per_client` to one client (at least 1), an
    /// IPv6 client counted by its first `v6_prefix` bits.
    pub fn new(total: usize, per_client: usize, v6_prefix: u8) -> Shares {
        Shares {
            total: Arc::new(Semaphore::new(total)),
            capacity: total,
            per_client: per_client.max(1),
            v6_host_mask: u128::MAX
                .checked_shr(u32::from(v6_prefix.min(128)))
                .unwrap_or(0),
            held: Arc::default(),
        }
    }

    /// One unit for `client`, or which cap refused it. Never waits.
    pub fn take(&self, client: IpAddr) -> Result<Share, Over> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Over::Total)?;
        let client = key(client, self.v6_host_mask);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(client).or_insert(0);
        if *count >= self.per_client {
            return Err(Over::Client);
        }
        *count += 1;
        Ok(Share {
            _permit: permit,
            client,
            held: self.held.clone(),
        })
    }

    /// At least half of the units are held: the server is short of them (RFC 7766 §6.2.3:
    /// time to close idle connections sooner).
    pub fn pressed(&self) -> bool {
        let held = self.capacity - self.total.available_permits();
        held * 2 >= self.capacity
    }

    /// Clients holding at least one unit now (for tests: the map stays bounded).
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// The client an address counts as: IPv4 (and IPv4-mapped IPv6) as is, IPv6 by its prefix
/// (`host_mask`: the bits after it).
fn key(ip: IpAddr, host_mask: u128) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !host_mask)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_takes_its_share_and_no_more_and_others_still_get_theirs() {
        let shares = Shares::new(4, 2, 64);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = shares.take(a).unwrap();
        let _second = shares.take(a).unwrap();
        assert_eq!(shares.take(a).err(), Some(Over::Client));
        let _b1 = shares.take(b).unwrap();
        let _b2 = shares.take(b).unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(shares.take(c).err(), Some(Over::Total));
        drop(first);
        let _again = shares.take(a).unwrap();
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let shares = Shares::new(8, 1, 64);
        let _one = shares.take("fd00::1".parse().unwrap()).unwrap();
        assert_eq!(
            shares.take("fd00::ffff:2".parse().unwrap()).err(),
            Some(Over::Client)
        );
        assert!(shares.take("fd00:0:0:1::1".parse().unwrap()).is_ok());
        let _v4 = shares.take("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(
            shares.take("::ffff:192.0.2.1".parse().unwrap()).err(),
            Some(Over::Client)
        );
    }

    #[test]
    fn with_a_128_prefix_each_ipv6_address_is_a_client_of_its_own() {
        let shares = Shares::new(8, 1, 128);
        let _one = shares.take("fd00::1".parse().unwrap()).unwrap();
        assert!(
            shares.take("fd00::2".parse().unwrap()).is_ok(),
            "a neighbour in the /64"
        );
        assert_eq!(
            shares.take("fd00::1".parse().unwrap()).err(),
            Some(Over::Client)
        );
        let wide = Shares::new(8, 1, 48);
        let _one = wide.take("fd00::1".parse().unwrap()).unwrap();
        assert_eq!(
            wide.take("fd00:0:0:ffff::1".parse().unwrap()).err(),
            Some(Over::Client),
            "in the same /48"
        );
    }

    #[test]
    fn the_map_forgets_clients_that_hold_nothing() {
        let shares = Shares::new(16, 4, 64);
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            let share = shares.take(ip).unwrap();
            drop(share);
        }
        assert_eq!(shares.clients(), 0);
        let held: Vec<_> = (0..100u32)
            .filter_map(|i| shares.take(IpAddr::from(std::net::Ipv4Addr::from(i))).ok())
            .collect();
        assert_eq!(held.len(), 16);
        assert_eq!(
            shares.clients(),
            16,
            "never more entries than the global cap"
        );
    }
}
