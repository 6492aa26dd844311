//! Response rate limiting (RRL) for UDP answers, per client prefix and name, as BIND's RRL and
//! Knot's `rrl` module do: a client prefix (IPv4 /24, IPv6 /56 by default) gets
//! `responses_per_second` answers of each kind and name per second — positive answers by the
//! name asked, negative ones by the zone that says so (the owner of the SOA they carry: a flood
//! of made-up names under one zone is one key), errors whatever the name — so that many clients
//! behind one prefix (containers behind a /24) asking for many names are not cut off, while a
//! flood of one answer at a spoofed victim is. Past that, every `slip`-th
//! limited answer goes out cut to its header and question with TC set (a real client asks again
//! over TCP, which is never limited), the others are dropped. A spoofed flood so earns its
//! victim almost nothing, while a legitimate resolver behind the same prefix still gets through.
//!
//! The table is owned by the one UDP thread (no lock, no atomics): a fixed number of buckets in
//! sets of [`WAYS`], looked up by a keyed hash of the prefix, kind and name (the name's bytes
//! hashed where they lie in the answer, case folded: nothing allocated). A key not in its set takes
//! the set's stalest bucket, so the table never grows, whatever the sources (memory is
//! `table_size` × 24 bytes). An evicted key starts afresh with a full allowance, which only
//! errs on the side of answering, as Knot's table does when full.
//!
//! Credit works as in BIND: each second adds `rate` (up to `rate`), each answer takes one; a
//! bucket may go down to `-rate × window` while its client keeps asking too fast, so a flood that
//! goes on stays limited for up to `window` seconds after it pauses.

use std::net::IpAddr;
use std::time::Instant;

use crate::routing::cidr::Cidr;

/// Buckets per set: a key lives in one of the `WAYS` buckets of the set its hash picks.
pub const WAYS: usize = 4;

/// What to do with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send it cut to the header and question, TC set.
    Slip,
    Drop,
}

/// The kind of an answer, limited separately (a flood of NXDOMAIN does not starve answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// NOERROR with answers.
    Answer,
    /// NXDOMAIN, or NOERROR with no answer.
    Negative,
    /// Any other rcode.
    Error,
}

impl Kind {
    /// The kind of an encoded answer (its rcode and answer count). The rcode's upper bits are
    /// in the OPT record (RFC 6891 §6.1.3): an answer with no records and a header saying
    /// NOERROR is BADVERS when its OPT says so, an error.
    pub fn of(reply: &[u8]) -> Kind {
        if reply.len() < 12 {
            return Kind::Error;
        }
        let additionals = u16::from_be_bytes([reply[10], reply[11]]);
        match (reply[3] & 0x0f, u16::from_be_bytes([reply[6], reply[7]])) {
            (0, 0) if additionals > 0 && super::edns::scan(reply).rcode_high != 0 => Kind::Error,
            (0, 0) | (3, _) => Kind::Negative,
            (0, _) => Kind::Answer,
            _ => Kind::Error,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub responses_per_second: u32,
    /// Seconds a bucket's debt may cover (BIND's `window`).
    pub window: u32,
    /// Every `slip`-th limited answer is sent truncated; 0: all dropped.
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Buckets (rounded up to a power of two, at least one set).
    pub table_size: usize,
    /// Clients never limited.
    pub exempt: Vec<Cidr>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The key's hash (0: free).
    key: u64,
    /// Seconds since the table's start when the credit was last topped up.
    stamp: u32,
    credit: i32,
    /// Limited answers since the last slip.
    limited: u32,
}

pub struct Table {
    buckets: Box<[Bucket]>,
    /// Sets - 1 (a power of two, minus one).
    mask: usize,
    seed: u64,
    start: Instant,
    settings: Settings,
    v4_mask: u32,
    v6_mask: u128,
}

impl Table {
    pub fn new(settings: Settings) -> Table {
        let sets = settings
            .table_size
            .div_ceil(WAYS)
            .max(1)
            .next_power_of_two();
        let v4 = u32::from(settings.ipv4_prefix.min(32));
        let v6 = u32::from(settings.ipv6_prefix.min(128));
        Table {
            buckets: vec![Bucket::default(); sets * WAYS].into_boxed_slice(),
            mask: sets - 1,
            // Keyed per process, so no one picks sources that share a set.
            seed: fastrand::u64(..) | 1,
            start: Instant::now(),
            v4_mask: u32::MAX.checked_shl(32 - v4).unwrap_or(0),
            v6_mask: u128::MAX.checked_shl(128 - v6).unwrap_or(0),
            settings,
        }
    }

    /// The buckets the table holds: fixed at creation.
    pub fn capacity(&self) -> usize {
        self.buckets.len()
    }

    /// Seconds since the table started: read once per batch of answers.
    pub fn now(&self) -> u32 {
        self.start.elapsed().as_secs() as u32
    }

    /// Whether the encoded answer `reply` to `client`, at `now` (see [`Table::now`]), goes
    /// out: its kind, and the name it is limited under ([`Table::name`]).
    pub fn check_reply(&mut self, client: IpAddr, reply: &[u8], now: u32) -> Verdict {
        let kind = Kind::of(reply);
        let name = self.name(reply, kind);
        self.check(client, kind, name, now)
    }

    /// The keyed hash of the name an answer of `kind` is limited under: a positive answer's
    /// question; a negative answer's zone, the owner of the SOA in its authority section (BIND
    /// and Knot key NXDOMAIN so: made-up names under one zone are one key), else its question;
    /// none (0) for an error, which says nothing about the name (a flood of errors for made-up
    /// names stays one key), nor for a message whose names cannot be read.
    pub fn name(&self, reply: &[u8], kind: Kind) -> u64 {
        if kind == Kind::Error || reply.len() < 12 || reply[4..6] != [0, 1] {
            return 0;
        }
        let count = |at: usize| u16::from_be_bytes([reply[at], reply[at + 1]]);
        let owner = match kind {
            Kind::Negative if count(6) == 0 && count(8) > 0 => super::relay::question_end(reply)
                .filter(|&at| {
                    // The first authority record is an SOA: its type follows its owner.
                    super::relay::name_end(reply, at)
                        .is_some_and(|end| reply.get(end..end + 2) == Some(&[0, 6]))
                }),
            _ => None,
        };
        self.hash_name(reply, owner.unwrap_or(12)).unwrap_or(0)
    }

    /// The keyed hash of the name at `at` in `msg`, its labels case folded and compression
    /// pointers followed (a few: a loop ends it); `None` when it cannot be read.
    fn hash_name(&self, msg: &[u8], mut at: usize) -> Option<u64> {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = self.seed.rotate_left(32);
        let mut pointers = 0;
        loop {
            let len = *msg.get(at)? as usize;
            match len {
                0 => return Some(h | 1),
                1..=63 => {
                    h = (h ^ len as u64).wrapping_mul(PRIME);
                    for &b in msg.get(at + 1..at + 1 + len)? {
                        h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(PRIME);
                    }
                    at += 1 + len;
                }
                _ if len & 0xc0 == 0xc0 && pointers < 8 => {
                    pointers += 1;
                    at = (len & 0x3f) << 8 | *msg.get(at + 1)? as usize;
                }
                _ => return None,
            }
        }
    }

    /// Whether an answer of `kind` for the name hashed as `name` ([`Table::name`]) to `client`,
    /// at `now` (see [`Table::now`]), goes out.
    pub fn check(&mut self, client: IpAddr, kind: Kind, name: u64, now: u32) -> Verdict {
        let key = self.key(client, kind, name);
        let rate = self.settings.responses_per_second.min(i32::MAX as u32 / 2) as i32;
        let floor = -(rate.saturating_mul(self.settings.window.min(3600) as i32));
        let set = (key as usize >> 7) & self.mask;
        let ways = &mut self.buckets[set * WAYS..set * WAYS + WAYS];
        let at = match ways.iter().position(|b| b.key == key) {
            Some(at) => at,
            None => {
                // The stalest bucket of the set (a free one is stalest of all).
                let at = (0..WAYS)
                    .min_by_key(|&i| (ways[i].key != 0, ways[i].stamp))
                    .unwrap_or(0);
                ways[at] = Bucket {
                    key,
                    stamp: now,
                    credit: rate,
                    limited: 0,
                };
                at
            }
        };
        let bucket = &mut ways[at];
        let elapsed = now.saturating_sub(bucket.stamp).min(3600) as i32;
        if elapsed > 0 {
            bucket.credit = bucket
                .credit
                .saturating_add(elapsed.saturating_mul(rate))
                .min(rate);
            bucket.stamp = now;
        }
        let credit = bucket.credit - 1;
        bucket.credit = credit.max(floor);
        if credit >= 0 {
            return Verdict::Send;
        }
        if self
            .settings
            .exempt
            .iter()
            .any(|c| c.contains(client.to_canonical()))
        {
            bucket.credit = 0;
            return Verdict::Send;
        }
        bucket.limited += 1;
        let slip = self.settings.slip;
        if slip > 0 && bucket.limited >= slip {
            bucket.limited = 0;
            return Verdict::Slip;
        }
        Verdict::Drop
    }

    /// The keyed hash of the client's prefix, the answer's kind and its name's hash (never 0:
    /// 0 marks a free bucket).
    fn key(&self, client: IpAddr, kind: Kind, name: u64) -> u64 {
        let (family, bits) = match client.to_canonical() {
            IpAddr::V4(v4) => (1u64, u128::from(u32::from(v4) & self.v4_mask)),
            IpAddr::V6(v6) => (2u64, u128::from(v6) & self.v6_mask),
        };
        let mut h = self.seed ^ (family << 8 | kind as u64);
        for word in [bits as u64, (bits >> 64) as u64, name] {
            h = (h ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 29;
        }
        h.wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1
    }

    #[cfg(test)]
    fn credits(&self) -> impl Iterator<Item = i32> + '_ {
        self.buckets.iter().filter(|b| b.key != 0).map(|b| b.credit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(rate: u32, window: u32, slip: u32, table_size: usize) -> Settings {
        Settings {
            responses_per_second: rate,
            window,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            table_size,
            exempt: Vec::new(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_prefix_gets_its_rate_then_slips_every_nth() {
        let mut t = Table::new(settings(3, 2, 2, 64));
        let verdicts: Vec<Verdict> = (0..9)
            .map(|i| t.check(ip(&format!("192.0.2.{i}")), Kind::Answer, 0, 0))
            .collect();
        use Verdict::*;
        assert_eq!(
            verdicts,
            [Send, Send, Send, Drop, Slip, Drop, Slip, Drop, Slip]
        );
        // Another /24, another kind: their own allowance.
        assert_eq!(t.check(ip("192.0.3.1"), Kind::Answer, 0, 0), Send);
        assert_eq!(t.check(ip("192.0.2.1"), Kind::Negative, 0, 0), Send);
        // The debt is bounded by the window (3 × 2): two quiet seconds pay it, the third earns
        // a full second's worth.
        assert_eq!(t.check(ip("192.0.2.1"), Kind::Answer, 0, 2), Drop);
        let mut t2 = Table::new(settings(3, 2, 0, 64));
        for _ in 0..100 {
            assert_ne!(t2.check(ip("10.1.1.1"), Kind::Answer, 0, 0), Slip, "slip 0");
        }
        assert_eq!(t2.check(ip("10.1.1.1"), Kind::Answer, 0, 3), Send);
    }

    #[test]
    fn ipv6_prefixes_and_mapped_addresses() {
        let mut t = Table::new(settings(1, 1, 0, 64));
        assert_eq!(
            t.check(ip("2001:db8:0:1::1"), Kind::Answer, 0, 0),
            Verdict::Send
        );
        // The same /56.
        assert_eq!(
            t.check(ip("2001:db8:0:2::1"), Kind::Answer, 0, 0),
            Verdict::Drop
        );
        // Another /56.
        assert_eq!(
            t.check(ip("2001:db8:1::1"), Kind::Answer, 0, 0),
            Verdict::Send
        );
        // A mapped IPv4 address counts as that IPv4 client.
        assert_eq!(t.check(ip("10.0.0.1"), Kind::Answer, 0, 0), Verdict::Send);
        assert_eq!(
            t.check(ip("::ffff:10.0.0.2"), Kind::Answer, 0, 0),
            Verdict::Drop
        );
    }

    #[test]
    fn exempt_clients_are_never_limited() {
        let mut s = settings(1, 1, 0, 64);
        s.exempt = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let mut t = Table::new(s);
        for _ in 0..10 {
            assert_eq!(t.check(ip("10.0.0.1"), Kind::Answer, 0, 0), Verdict::Send);
        }
    }

    #[test]
    fn kinds_from_the_header() {
        let mut h = [0u8; 12];
        assert_eq!(Kind::of(&h), Kind::Negative);
        h[7] = 1;
        assert_eq!(Kind::of(&h), Kind::Answer);
        h[3] = 3;
        assert_eq!(Kind::of(&h), Kind::Negative);
        h[3] = 5;
        assert_eq!(Kind::of(&h), Kind::Error);
        assert_eq!(Kind::of(&h[..5]), Kind::Error);
        // BADVERS: NOERROR in the header, the upper bits in the OPT.
        let mut badvers = vec![0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        badvers.extend_from_slice(&crate::dns::edns::opt_record(1232, 1, false));
        assert_eq!(Kind::of(&badvers), Kind::Error);
        badvers[12 + 5] = 0;
        assert_eq!(Kind::of(&badvers), Kind::Negative);
    }

    /// An encoded answer to `name`: NOERROR with an A record, or NXDOMAIN with the SOA of
    /// `zone` in its authority section (the owner compressed to point into the question, as
    /// encoders write it), or REFUSED.
    fn reply(name: &str, rcode: u8, zone: &str) -> Vec<u8> {
        use hickory_proto::op::{Message, Query, ResponseCode};
        use hickory_proto::rr::rdata::SOA;
        use hickory_proto::rr::{Name, RData, Record, RecordType};
        let name = Name::from_ascii(name).unwrap();
        let mut m = Message::response(1, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        let zone = Name::from_ascii(zone).unwrap();
        match rcode {
            0 => {
                m.add_answer(Record::from_rdata(
                    name,
                    5,
                    RData::A(std::net::Ipv4Addr::new(10, 0, 0, 1).into()),
                ));
            }
            3 => {
                m.metadata.response_code = ResponseCode::NXDomain;
                let soa = SOA::new(zone.clone(), zone.clone(), 1, 60, 60, 60, 60);
                m.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
            }
            _ => m.metadata.response_code = ResponseCode::Refused,
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_are_limited_per_name_negative_ones_per_zone_errors_per_prefix() {
        let mut t = Table::new(settings(1, 1, 0, 4096));
        let client = ip("10.1.2.3");
        // Containers behind one /24 asking for many names: each name its own allowance.
        for i in 0..50 {
            let name = format!("app{i}.marathon.mesos.");
            let answer = reply(&name, 0, "mesos.");
            assert_eq!(t.check_reply(client, &answer, 0), Verdict::Send, "{name}");
        }
        // The same name again within the second, from the same /24, in another case: limited.
        let again = reply("APP7.marathon.mesos.", 0, "mesos.");
        assert_eq!(t.check_reply(ip("10.1.2.99"), &again, 0), Verdict::Drop);
        // NXDOMAIN for made-up names under one zone: one key, whatever the name.
        let nx = |name: &str| reply(name, 3, "mesos.");
        assert_eq!(t.check_reply(client, &nx("x1.mesos."), 0), Verdict::Send);
        assert_eq!(t.check_reply(client, &nx("x2.mesos."), 0), Verdict::Drop);
        assert_eq!(t.check_reply(client, &nx("y.x3.MESOS."), 0), Verdict::Drop);
        // Another zone's NXDOMAIN is another key.
        let other = reply("x1.l4lb.thisdcos.directory.", 3, "l4lb.thisdcos.directory.");
        assert_eq!(t.check_reply(client, &other, 0), Verdict::Send);
        // Errors: one key per prefix, whatever the name.
        assert_eq!(
            t.check_reply(client, &reply("a.b.", 5, "b."), 0),
            Verdict::Send
        );
        assert_eq!(
            t.check_reply(client, &reply("c.d.", 5, "d."), 0),
            Verdict::Drop
        );
        // The name keys: the question's for an answer, in any case; the SOA owner's for a
        // negative one; none for an error or an unreadable message.
        let a = t.name(&reply("Www.Example.", 0, "example."), Kind::Answer);
        assert_eq!(a, t.name(&reply("www.example.", 0, "x."), Kind::Answer));
        assert_ne!(a, t.name(&reply("www2.example.", 0, "x."), Kind::Answer));
        let zone = t.name(&nx("a.example."), Kind::Negative);
        assert_eq!(
            zone,
            t.name(&reply("b.c.example.", 3, "mesos."), Kind::Negative)
        );
        assert_eq!(t.name(&reply("a.b.", 5, "b."), Kind::Error), 0);
        assert_eq!(t.name(&[0xff; 11], Kind::Answer), 0);
        // A pointer loop ends the walk: no name.
        let mut looped = reply("www.example.", 0, "example.");
        looped[12] = 0xc0;
        looped[13] = 12;
        assert_eq!(t.name(&looped, Kind::Answer), 0);
    }

    proptest! {
        /// Whatever the sources and times, the table keeps its size, every credit stays within
        /// [-rate × window, rate], and a key that is never evicted (at most `WAYS` keys, so
        /// all fit their set) is sent at most its rate in any one second — and at least that
        /// much once it has been quiet for the window.
        #[test]
        fn the_table_is_bounded_and_keys_get_their_rate(
            rate in 1u32..20,
            window in 0u32..5,
            slip in 0u32..4,
            table_size in 1usize..64,
            events in proptest::collection::vec((0u8..4, 0u32..3), 1..400),
            many in proptest::collection::vec(any::<u32>(), 0..300),
        ) {
            let mut t = Table::new(settings(rate, window, slip, table_size));
            let capacity = t.capacity();
            prop_assert!(capacity >= table_size && capacity.is_multiple_of(WAYS));
            let mut now = 0u32;
            let mut sent: std::collections::HashMap<(u8, u32), u32> = Default::default();
            for (client, step) in &events {
                now += step;
                let addr = IpAddr::from([10, 0, *client, 1]);
                if t.check(addr, Kind::Answer, 0, now) == Verdict::Send {
                    *sent.entry((*client, now)).or_default() += 1;
                }
            }
            for (&(client, second), &n) in &sent {
                prop_assert!(n <= rate, "{client} sent {n} in second {second}");
            }
            // A flood of sources and names: the table does not grow, credits stay in bounds.
            for (i, source) in many.iter().enumerate() {
                let name = u64::from(*source).rotate_left(7);
                t.check(IpAddr::from(source.to_be_bytes()), Kind::Answer, name, now + i as u32 / 100);
            }
            prop_assert_eq!(t.capacity(), capacity);
            let floor = -((rate * window) as i32);
            for credit in t.credits() {
                prop_assert!((floor..=rate as i32).contains(&credit), "{credit}");
            }
            // After a quiet window, a fresh second gives a key its full rate.
            let later = now + 1000;
            let fresh = IpAddr::from([10, 0, 9, 1]);
            let n = (0..rate).filter(|_| t.check(fresh, Kind::Answer, 0, later) == Verdict::Send).count();
            prop_assert_eq!(n as u32, rate);
        }
    }
}
