//! Shares of the DNS server's bounded resources (TCP connections, relayed queries in flight):
//! a global cap, and a cap per client, so that one client (or a few) holding its share cannot
//! starve the others. A client is its address, an IPv6 one by its prefix (`dns.ipv6_client_prefix`:
//! /64 by default, since one host commonly holds a whole /64 and picks new addresses in it at
//! will; /128 where containers hold one address each in a shared /64).
//!
//! Relayed queries are also capped per domain ([`Relays`], BIND's `fetches-per-zone`): names an
//! upstream is slow to answer (a domain whose servers never reply, names made up under it) hold
//! their slots for the whole upstream timeout, and without a cap per domain a few of them fill
//! every slot; with it they fill their domain's share, and every other domain is still relayed.
//! And the last slots of a pool can be kept for clients that hold none ([`Shares::reserving`]):
//! a client with an address of its own then gets a relay however many others hold theirs.
//!
//! The per-client (and per-domain) counts live in a map with an entry only while that key holds
//! something, and every count is backed by a held global permit: the map never holds more
//! entries than the global cap, whatever the clients do.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use hickory_proto::rr::LowerName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a share was refused: which cap was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Every slot of the server this client may take is taken (a client already holding some
    /// may not take the reserved ones: [`Shares::reserving`]).
    Total,
    /// This client holds its share.
    Client,
    /// The queried domain holds its share of the relay slots ([`Relays`]).
    Domain,
}

impl Over {
    pub fn label(self) -> &'static str {
        match self {
            Over::Total => "total",
            Over::Client => "client",
            Over::Domain => "domain",
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

/// Units held per key, with an entry only while its key holds one.
struct Tally<K> {
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One unit held by one key: given back when dropped.
struct Tallied<K: Eq + Hash> {
    key: K,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Copy> Tally<K> {
    fn new() -> Self {
        Tally {
            held: Arc::default(),
        }
    }

    /// One more unit for `key` if `room` allows it, told what the key holds now.
    fn take(&self, key: K, room: impl FnOnce(usize) -> bool) -> Option<Tallied<K>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key).or_insert(0);
        if !room(*count) {
            if *count == 0 {
                held.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Tallied {
            key,
            held: self.held.clone(),
        })
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl<K: Eq + Hash> Drop for Tallied<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// A global cap and a per-client cap on one resource.
pub struct Shares {
    total: Arc<Semaphore>,
    capacity: usize,
    per_client: usize,
    /// Units only a client holding none may take (see [`Shares::reserving`]).
    reserved: usize,
    /// Low bits of an IPv6 address that do not tell clients apart.
    v6_host_mask: u128,
    clients: Tally<IpAddr>,
}

/// One unit of a resource held by one client: given back when dropped.
pub struct Share {
    _permit: OwnedSemaphorePermit,
    _client: Tallied<IpAddr>,
}

impl Shares {
    /// `total` units at once, of which at most `per_client` to one client (at least 1), an
    /// IPv6 client counted by its first `v6_prefix` bits.
    pub fn new(total: usize, per_client: usize, v6_prefix: u8) -> Shares {
        Shares {
            total: Arc::new(Semaphore::new(total)),
            capacity: total,
            per_client: per_client.max(1),
            reserved: 0,
            v6_host_mask: u128::MAX
                .checked_shr(u32::from(v6_prefix.min(128)))
                .unwrap_or(0),
            clients: Tally::new(),
        }
    }

    /// The last `reserved` units go only to clients that hold none: however many clients hold
    /// their shares (each at most `per_client`), it takes `reserved` more of them, each holding
    /// one, before a client of its own gets none. Only where a client is proven (TCP): forged
    /// UDP sources are as many as the attacker likes.
    pub fn reserving(mut self, reserved: usize) -> Shares {
        self.reserved = reserved.min(self.capacity);
        self
    }

    /// One unit for `client`, or which cap refused it. Never waits.
    pub fn take(&self, client: IpAddr) -> Result<Share, Over> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Over::Total)?;
        // Read after taking ours: concurrent takes only lower it, so no two clients that hold
        // some both take the last unreserved unit.
        let free = self.total.available_permits();
        let mut over = Over::Client;
        let client = self
            .clients
            .take(key(client, self.v6_host_mask), |holds| {
                if holds > 0 && free < self.reserved {
                    over = Over::Total;
                    return false;
                }
                holds < self.per_client
            })
            .ok_or(over)?;
        Ok(Share {
            _permit: permit,
            _client: client,
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
        self.clients.keys()
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

/// The relay slots of one transport: [`Shares`] per client, and at most `per_domain` of them
/// to the names of one domain ([`domain`]).
pub struct Relays {
    shares: Shares,
    per_domain: usize,
    /// Domains by a hash keyed per process (no allocation per query; no one picks names that
    /// share a count).
    domains: Tally<u64>,
    hasher: RandomState,
}

/// One relay slot held by a client for a name: given back when dropped.
pub struct Relay {
    _share: Share,
    _domain: Tallied<u64>,
}

impl Relays {
    pub fn new(shares: Shares, per_domain: usize) -> Relays {
        Relays {
            shares,
            per_domain: per_domain.max(1),
            domains: Tally::new(),
            hasher: RandomState::new(),
        }
    }

    /// A slot for `client`'s query for `name`, or which cap refused it. Never waits.
    pub fn take(&self, client: IpAddr, name: &LowerName) -> Result<Relay, Over> {
        let share = self.shares.take(client)?;
        let mut hash = self.hasher.build_hasher();
        for label in domain(name) {
            hash.write_usize(label.len());
            hash.write(label);
        }
        let hash = hash.finish();
        let domain = self
            .domains
            .take(hash, |holds| holds < self.per_domain)
            .ok_or(Over::Domain)?;
        Ok(Relay {
            _share: share,
            _domain: domain,
        })
    }

    #[cfg(test)]
    fn domains(&self) -> usize {
        self.domains.keys()
    }
}

/// The domain a relayed name counts against (`dns.forwards_per_domain`), its labels from the
/// right: the last two (`x.y.example.com` → `example.com`), the registered domain under a
/// one-label suffix. Slow names are made up under a domain whose servers the maker runs (or
/// that never answer), and below the registered domain they can make up labels for nothing:
/// grouping any finer (three labels) would give each made-up label a share of its own. Under a
/// two-label public suffix (`co.uk`) the group is the suffix: one slow `attacker.co.uk` caps
/// every `co.uk` name while it lasts (their queries answered at once, not relayed), the price
/// of not carrying the public suffix list — every other domain is still relayed. Reverse names
/// go by the address block their zones are commonly delegated by: `in-addr.arpa` by /16 (four
/// labels), `ip6.arpa` by /32 (ten), so that one network's slow reverse zone does not take every
/// reverse lookup's share. Names are lowercase (`LowerName`).
pub fn domain(name: &LowerName) -> impl Iterator<Item = &[u8]> {
    let mut from_right = name.iter().rev();
    let labels = match (from_right.next(), from_right.next()) {
        (Some(b"arpa"), Some(b"in-addr")) => 4,
        (Some(b"arpa"), Some(b"ip6")) => 10,
        _ => 2,
    };
    name.iter().rev().take(labels)
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

    fn name(s: &str) -> LowerName {
        LowerName::new(&hickory_proto::rr::Name::from_ascii(s).unwrap())
    }

    fn grouped(s: &str) -> String {
        let labels: Vec<String> = domain(&name(s))
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect();
        labels.join("<")
    }

    #[test]
    fn names_group_by_their_last_two_labels_and_reverse_names_by_block() {
        assert_eq!(grouped("x1.slow.Attacker.example."), "example<attacker");
        assert_eq!(grouped("www.example.co.uk."), "uk<co");
        assert_eq!(grouped("com."), "com");
        assert_eq!(grouped("."), "");
        assert_eq!(grouped("4.3.2.1.in-addr.arpa."), "arpa<in-addr<1<2");
        assert_eq!(grouped("2.1.in-addr.arpa."), "arpa<in-addr<1<2");
        let v6 = "b.a.9.8.7.6.5.4.3.2.1.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.";
        assert_eq!(grouped(v6), "arpa<ip6<2<0<0<1<0<d<b<8");
    }

    #[test]
    fn one_domain_holds_its_share_of_relays_and_others_are_still_relayed() {
        let relays = Relays::new(Shares::new(8, 8, 64), 3);
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let slow: Vec<Relay> = (0..3)
            .map(|i| {
                relays
                    .take(client, &name(&format!("s{i}.SLOW.example.")))
                    .unwrap()
            })
            .collect();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            relays.take(other, &name("s9.a.slow.example.")).err(),
            Some(Over::Domain)
        );
        let _fine = relays.take(other, &name("www.fast.example.")).unwrap();
        assert_eq!(relays.domains(), 2);
        // A refused relay holds nothing: the client's and the pool's units are back.
        assert_eq!(relays.shares.clients(), 2);
        drop(slow);
        assert_eq!(relays.domains(), 1);
        let _again = relays.take(client, &name("s0.slow.example.")).unwrap();
    }

    #[test]
    fn the_reserved_units_go_to_clients_holding_none() {
        let shares = Shares::new(8, 4, 64).reserving(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut held: Vec<Share> = (0..4).map(|_| shares.take(a).unwrap()).collect();
        held.push(shares.take(b).unwrap());
        // 3 free, all reserved: b holds one, so it may not take them.
        assert_eq!(shares.take(b).err(), Some(Over::Total));
        for i in 3..6u8 {
            held.push(shares.take(IpAddr::from([10, 0, 0, i])).unwrap());
        }
        assert_eq!(
            shares.take("10.0.0.9".parse().unwrap()).err(),
            Some(Over::Total)
        );
        assert_eq!(shares.clients(), 5);
        held.truncate(4);
        // a holds its share (4): the client cap says so while units are free for others.
        assert_eq!(shares.take(a).err(), Some(Over::Client));
        assert!(shares.take(b).is_ok(), "b holds none now");
    }
}
