//! The compact zone's encoder: the records gathered as the zone is built ([`Builder`]), laid
//! out once at the end ([`Builder::finish`]) into the pre-encoded table of `compact.rs`; the
//! buffers kept from one build to the next are `compact_spare.rs`'s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{RData, Record};

use super::{CLASS_IN, Kind, NONE, NameId, NameTable, Names, Node};

#[path = "compact_spare.rs"]
mod spare;
#[cfg(test)]
pub(crate) use spare::idle_at;
pub use spare::{SPARE_IDLE, Spare, idle_spare, offer, spare_bytes, take_spare};

/// One record as the build gathers it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        weight: u16,
        port: u16,
        target: NameId,
    },
    Ns(NameId),
    Ptr(NameId),
    Soa(u32),
}

impl Data {
    fn kind(&self) -> Kind {
        match self {
            Data::A(_) => Kind::A,
            Data::Aaaa(_) => Kind::Aaaa,
            Data::Srv { .. } => Kind::Srv,
            Data::Ns(_) => Kind::Ns,
            Data::Ptr(_) => Kind::Ptr,
            Data::Soa(_) => Kind::Soa,
        }
    }
}

/// One record as the build gathers it, in 20 bytes (an AAAA address is kept aside, in
/// [`Builder`]'s `v6`): the list is written once and read once per build, 800,000 records at
/// 10,000 apps, so its size is memory traffic.
#[derive(Debug, Clone, Copy)]
struct Rec {
    owner: NameId,
    ttl: u32,
    /// A: the address; AAAA: its index in `v6`; SRV, NS, PTR: the target; SOA: its index in
    /// `soas`.
    value: u32,
    /// SRV only.
    weight: u16,
    port: u16,
    kind: Kind,
    /// Added only when the name has no equal record of its type yet.
    once: bool,
}

/// An SOA's fields: the primary and mailbox, serial, refresh, retry, expire, minimum.
#[derive(Debug, Clone, Copy)]
pub struct SoaData {
    pub mname: NameId,
    pub rname: NameId,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// The zone as it is built: interned names, which of them exist, and their records in the
/// order they were added.
#[derive(Debug, Default)]
pub struct Builder {
    pub names: NameTable,
    /// Per name: whether it exists in the zone (a bit per type it has records of, and bit 7).
    flags: Vec<u8>,
    records: Vec<Rec>,
    /// The AAAA records' addresses, by `Rec::value`.
    v6: Vec<Ipv6Addr>,
    soas: Vec<SoaData>,
    /// The bytes the records take encoded (at most: a record added `once` may be dropped), so
    /// that the encoded zone is allocated once without a pass to size it.
    bound: usize,
    /// Buffers for [`Self::finish`]: its scratch and the built table's own, empty.
    spare: Spare,
    /// Names whose records are copied whole from an earlier zone ([`Self::add_raw`]): the name
    /// and where its record sets are in that zone's data.
    raw: Vec<(NameId, u32, u32)>,
    /// Who added records to each name, when tracked ([`Self::track_claims`]).
    claims: Option<Claims>,
}

/// Which part of a build (an app, or the names every build makes afresh) each name's records
/// come from: an incremental build may copy a name's records from the last zone only when one
/// app alone gave them (see `zone/incremental.rs`).
#[derive(Debug, Default)]
struct Claims {
    /// Per name: the claimant, or `NONE`.
    of: Vec<u32>,
    /// The claimant records are added for now.
    current: u32,
    /// Names first claimed by the current claimant, in the order claimed.
    fresh: Vec<NameId>,
    /// A name was claimed by two claimants.
    collided: bool,
}

const EXISTS: u8 = 0x80;
/// The name has a record added `once` (so its sets are checked for equal records).
const ONCE: u8 = 0x40;
/// The bits of the kinds a name has records of.
const KINDS: u8 = 0x3f;

impl Builder {
    /// A builder writing over `spare`'s buffers.
    pub fn reusing(mut spare: Spare) -> Builder {
        let mut names = std::mem::take(&mut spare.names);
        names.bytes.clear();
        names.starts.clear();
        names.next.clear();
        names.index.clear();
        let (mut flags, mut records, mut v6, mut soas) = (
            std::mem::take(&mut spare.flags),
            std::mem::take(&mut spare.records),
            std::mem::take(&mut spare.v6),
            std::mem::take(&mut spare.soas),
        );
        flags.clear();
        records.clear();
        v6.clear();
        soas.clear();
        Builder {
            names,
            flags,
            records,
            v6,
            soas,
            bound: 0,
            spare,
            raw: Vec::new(),
            claims: None,
        }
    }

    /// Tracks who adds records to each name from now on, starting with `claimant`; room for
    /// about `names` names.
    pub fn track_claims(&mut self, claimant: u32, names: usize) {
        self.claims = Some(Claims {
            of: vec![NONE; names],
            current: claimant,
            ..Claims::default()
        });
    }

    /// The records and names added from now on are `claimant`'s.
    pub fn claim_as(&mut self, claimant: u32) {
        if let Some(c) = &mut self.claims {
            c.current = claimant;
            c.fresh.clear();
        }
    }

    /// The names the current claimant claimed first, in order; emptied.
    pub fn take_claimed(&mut self) -> Vec<NameId> {
        self.claims
            .as_mut()
            .map(|c| std::mem::take(&mut c.fresh))
            .unwrap_or_default()
    }

    /// Whether a name was claimed by two claimants (so its records are not one app's alone).
    pub fn collided(&self) -> bool {
        self.claims.as_ref().is_some_and(|c| c.collided)
    }

    #[inline]
    fn claim(&mut self, id: NameId) {
        let Some(c) = &mut self.claims else { return };
        let at = id as usize;
        if c.of.len() <= at {
            c.of.resize(self.names.len().max(at + 1), NONE);
        }
        let owner = &mut c.of[at];
        if *owner == NONE {
            *owner = c.current;
            c.fresh.push(id);
        } else if *owner != c.current {
            c.collided = true;
        }
    }

    /// `owner` exists with the record sets `from[start..end]` of an earlier zone's data, as
    /// they were encoded there (names are written whole in records, so the bytes hold); laid out
    /// from `from` by [`Self::finish_keeping_from`].
    pub fn add_raw(&mut self, owner: NameId, start: u32, end: u32) {
        self.claim(owner);
        *self.flag(owner) |= EXISTS;
        self.bound += (end - start) as usize;
        self.raw.push((owner, start, end));
    }

    /// Room for about `names` names of `name_bytes` bytes each and `records` records, so that
    /// the build does not grow (and copy) its tables a zone's worth at a time.
    pub fn reserve(&mut self, names: usize, name_bytes: usize, records: usize) {
        self.names.bytes.reserve(names * name_bytes);
        self.names.starts.reserve(names);
        self.names.next.reserve(names);
        self.names.index.reserve(names);
        self.flags.reserve(names);
        self.records.reserve(records);
    }

    fn flag(&mut self, id: NameId) -> &mut u8 {
        let at = id as usize;
        if self.flags.len() <= at {
            self.flags.resize(self.names.len().max(at + 1), 0);
        }
        &mut self.flags[at]
    }

    /// The name exists (with or without records: an empty non-terminal answers NODATA).
    pub fn touch(&mut self, id: NameId) {
        self.claim(id);
        *self.flag(id) |= EXISTS;
    }

    pub fn exists(&self, id: NameId) -> bool {
        self.flags.get(id as usize).is_some_and(|f| f & EXISTS != 0)
    }

    pub fn has(&self, id: NameId, kind: Kind) -> bool {
        self.flags
            .get(id as usize)
            .is_some_and(|f| f & (1 << kind as u8) != 0)
    }

    #[inline]
    fn push(&mut self, owner: NameId, ttl: u32, data: Data, once: bool) {
        let kind = data.kind();
        self.claim(owner);
        *self.flag(owner) |= EXISTS | 1 << kind as u8 | if once { ONCE } else { 0 };
        let (mut weight, mut port) = (0, 0);
        let (value, rdata) = match data {
            Data::A(v4) => (u32::from(v4), 4),
            Data::Aaaa(v6) => {
                self.v6.push(v6);
                (self.v6.len() as u32 - 1, 16)
            }
            Data::Srv {
                weight: w,
                port: p,
                target,
            } => {
                (weight, port) = (w, p);
                (target, 6 + self.names.wire(target).len())
            }
            Data::Ns(target) | Data::Ptr(target) => (target, self.names.wire(target).len()),
            Data::Soa(i) => {
                let soa = &self.soas[i as usize];
                let names = self.names.wire(soa.mname).len() + self.names.wire(soa.rname).len();
                (i, names + 20)
            }
        };
        self.bound += 12 + rdata;
        self.records.push(Rec {
            owner,
            ttl,
            value,
            weight,
            port,
            kind,
            once,
        });
    }

    /// An address, once per name (tasks sharing an agent share its address).
    pub fn add_addr(&mut self, owner: NameId, ip: IpAddr, ttl: u32) {
        self.push(owner, ttl, addr(ip), true);
    }

    /// An address, as many times as it is added.
    pub fn push_addr(&mut self, owner: NameId, ip: IpAddr, ttl: u32) {
        self.push(owner, ttl, addr(ip), false);
    }

    /// An SRV record (priority 0); `once`: only when the name has no equal one.
    pub fn add_srv(
        &mut self,
        owner: NameId,
        weight: u16,
        port: u16,
        target: NameId,
        ttl: u32,
        once: bool,
    ) {
        let data = Data::Srv {
            weight,
            port,
            target,
        };
        self.push(owner, ttl, data, once);
    }

    pub fn add_ns(&mut self, owner: NameId, target: NameId, ttl: u32) {
        self.push(owner, ttl, Data::Ns(target), false);
    }

    pub fn add_ptr(&mut self, owner: NameId, target: NameId, ttl: u32) {
        self.push(owner, ttl, Data::Ptr(target), false);
    }

    /// Replaces the name's SOA.
    pub fn set_soa(&mut self, owner: NameId, soa: SoaData, ttl: u32) {
        if self.has(owner, Kind::Soa) {
            self.records
                .retain(|r| !(r.owner == owner && r.kind == Kind::Soa));
        }
        self.soas.push(soa);
        let at = self.soas.len() as u32 - 1;
        self.push(owner, ttl, Data::Soa(at), false);
    }

    /// Replaces the name's NS records with one.
    pub fn set_ns(&mut self, owner: NameId, target: NameId, ttl: u32) {
        if self.has(owner, Kind::Ns) {
            self.records
                .retain(|r| !(r.owner == owner && r.kind == Kind::Ns));
        }
        self.add_ns(owner, target, ttl);
    }

    /// The SOA as a hickory record owned by `owner` (for negative answers' authority section).
    pub fn soa_record(&self, owner: NameId, soa: &SoaData, ttl: u32) -> Record {
        let data = SOA::new(
            self.names.name(soa.mname),
            self.names.name(soa.rname),
            soa.serial,
            soa.refresh as i32,
            soa.retry as i32,
            soa.expire as i32,
            soa.minimum,
        );
        Record::from_rdata(self.names.name(owner), ttl, RData::SOA(data))
    }

    /// Lays the zone out: each existing name's records grouped by type, in the order added
    /// (a record added `once` dropped when an equal one came before it), pre-encoded.
    pub fn finish(self) -> Names {
        self.finish_keeping().0
    }

    /// As [`Self::finish`], with the build's scratch handed back for the next build.
    pub fn finish_keeping(self) -> (Names, Spare) {
        self.finish_keeping_from(None)
    }

    /// As [`Self::finish_keeping`], the names added by [`Self::add_raw`] laid out with their
    /// record sets copied from `from`'s data.
    pub fn finish_keeping_from(mut self, from: Option<&Names>) -> (Names, Spare) {
        let count = self.names.len();
        // Per name: its raw record sets' place in `from`, or none.
        let mut raw_of: Vec<(u32, u32)> = Vec::new();
        if let Some(from) = from.filter(|_| !self.raw.is_empty()) {
            raw_of.resize(count, (NONE, NONE));
            for &(id, start, end) in &self.raw {
                raw_of[id as usize] = (start, end);
            }
            debug_assert!(
                self.raw
                    .iter()
                    .all(|&(_, _, end)| end as usize <= from.data.len())
            );
        }
        self.flags.resize(count, 0);
        let mut spare = std::mem::take(&mut self.spare);
        // Records by owner, in the order added (a counting sort). `starts[i]` is where name
        // `i`'s records begin in `order`, and once they are placed, where they end.
        let starts = &mut spare.starts;
        starts.clear();
        starts.resize(count + 1, 0);
        for r in &self.records {
            starts[r.owner as usize + 1] += 1;
        }
        for i in 0..count {
            starts[i + 1] += starts[i];
        }
        let order = &mut spare.order;
        order.clear();
        order.resize(self.records.len(), 0);
        for (i, r) in self.records.iter().enumerate() {
            let slot = &mut starts[r.owner as usize];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }
        let mut existing = 0;
        let mut bound = self.bound;
        for f in &self.flags {
            if f & EXISTS != 0 {
                existing += 1;
                bound += SET_HEADER * (f & KINDS).count_ones() as usize;
            }
        }
        let mut nodes = std::mem::take(&mut spare.nodes);
        nodes.clear();
        nodes.reserve(existing);
        let mut data = std::mem::take(&mut spare.data);
        data.clear();
        data.reserve(bound);
        let mut out = Names {
            names: NameTable::default(),
            nodes,
            node_of: Vec::new(),
            data,
        };

        let mut node_of = std::mem::take(&mut spare.node_of);
        node_of.clear();
        node_of.resize(count, NONE);
        // The records of the set so far, to drop one added `once` when an equal one came first.
        let mut seen = Seen::default();
        // Raw record sets not yet copied, one run of `from`'s data: the names of a copied app
        // follow one another there as here, so most runs are many names long.
        let mut run = (0u32, 0u32);
        let flush = |data: &mut Vec<u8>, run: &mut (u32, u32)| {
            if let Some(from) = from
                && run.1 > run.0
            {
                data.extend_from_slice(&from.data[run.0 as usize..run.1 as usize]);
            }
            *run = (0, 0);
        };
        let mut begin = 0;
        for id in 0..count {
            let end = starts[id] as usize;
            let mine = &order[begin..end];
            begin = end;
            let flags = self.flags[id];
            if flags & EXISTS == 0 {
                continue;
            }
            node_of[id] = out.nodes.len() as u32;
            out.nodes.push(Node {
                name: id as u32,
                data: (out.data.len() + (run.1 - run.0) as usize) as u32,
            });
            if let Some(&(start, end)) = raw_of.get(id)
                && start != NONE
            {
                // Its records are one app's alone (no name of a copied app is claimed twice),
                // so it has none of this build's.
                if start != run.1 {
                    flush(&mut out.data, &mut run);
                    run.0 = start;
                }
                run.1 = end;
                continue;
            }
            flush(&mut out.data, &mut run);
            let kinds = flags & KINDS;
            let once = flags & ONCE != 0;
            if kinds == 0 {
                continue;
            }
            let single = kinds.is_power_of_two();
            for kind in Kind::ALL {
                if kinds & (1 << kind as u8) == 0 {
                    continue;
                }
                seen.clear();
                // Set header: kind, count (u16), bytes (u32), then the records.
                let header = out.data.len();
                out.data.extend_from_slice(&[kind as u8, 0, 0, 0, 0, 0, 0]);
                let mut n: u16 = 0;
                for &i in mine {
                    let r = &self.records[i as usize];
                    if !single && r.kind != kind {
                        continue;
                    }
                    if once && !seen.insert(data_key(r, &self.v6)) && r.once {
                        continue;
                    }
                    n = n.wrapping_add(1);
                    encode(&mut out.data, r, &self.names, &self.v6, &self.soas);
                }
                if n == 0 {
                    out.data.truncate(header);
                    continue;
                }
                let len = (out.data.len() - header - SET_HEADER) as u32;
                out.data[header + 1..header + 3].copy_from_slice(&n.to_le_bytes());
                out.data[header + 3..header + 7].copy_from_slice(&len.to_le_bytes());
            }
        }
        flush(&mut out.data, &mut run);
        out.node_of = node_of;
        self.names.shrink();
        out.names = self.names;
        shrink(&mut out.data);
        spare.flags = self.flags;
        spare.records = self.records;
        spare.v6 = self.v6;
        spare.soas = self.soas;
        (out, spare)
    }
}

/// What two records of one kind are the same by (their TTLs aside), as [`Data`] compares:
/// the address or target, and an SRV's weight and port.
type DataKey = (u128, u16, u16);

fn data_key(r: &Rec, v6: &[Ipv6Addr]) -> DataKey {
    match r.kind {
        Kind::Aaaa => (u128::from(v6[r.value as usize]), 0, 0),
        _ => (u128::from(r.value), r.weight, r.port),
    }
}

/// The record data one name's set of one kind holds so far, for the records added only once
/// (`Rec::once`): a list while short, a hash set past [`SEEN_LISTED`] — one app's name can
/// hold the addresses of 20,000 tasks, and a scan of the list per record made its build
/// quadratic (seconds per zone build).
#[derive(Default)]
struct Seen {
    listed: Vec<DataKey>,
    hashed: std::collections::HashSet<DataKey>,
}

const SEEN_LISTED: usize = 32;

impl Seen {
    fn clear(&mut self) {
        self.listed.clear();
        if !self.hashed.is_empty() {
            self.hashed.clear();
        }
    }

    /// Whether `key` was not seen yet (it is now).
    fn insert(&mut self, key: DataKey) -> bool {
        if !self.hashed.is_empty() {
            return self.hashed.insert(key);
        }
        if self.listed.contains(&key) {
            return false;
        }
        self.listed.push(key);
        if self.listed.len() > SEEN_LISTED {
            self.hashed.extend(self.listed.drain(..));
        }
        true
    }
}

/// Gives back what `v` holds beyond a quarter over its length (a buffer from a larger zone),
/// and keeps the rest: the next build of a zone this size writes over it.
pub(super) fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > v.len() + v.len() / 4 {
        v.shrink_to(v.len() + v.len() / 8);
    }
}

/// A record set's header in [`Names`]' data: kind, count (u16), bytes (u32).
const SET_HEADER: usize = 7;

fn addr(ip: IpAddr) -> Data {
    match ip {
        IpAddr::V4(v4) => Data::A(v4),
        IpAddr::V6(v6) => Data::Aaaa(v6),
    }
}

/// One record on the wire, owned by a pointer to the question: its fixed part written at once.
fn encode(out: &mut Vec<u8>, r: &Rec, names: &NameTable, v6: &[Ipv6Addr], soas: &[SoaData]) {
    let code = r.kind.code().to_be_bytes();
    let ttl = r.ttl.to_be_bytes();
    // Owner, type, class IN, TTL, RDLENGTH, then up to 16 bytes of RDATA.
    let mut fixed = [
        0xc0,
        0x0c,
        code[0],
        code[1],
        CLASS_IN[0],
        CLASS_IN[1],
        ttl[0],
        ttl[1],
        ttl[2],
        ttl[3],
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    let rdlength = |fixed: &mut [u8; 28], len: usize| {
        fixed[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    };
    match r.kind {
        Kind::A => {
            rdlength(&mut fixed, 4);
            fixed[12..16].copy_from_slice(&r.value.to_be_bytes());
            out.extend_from_slice(&fixed[..16]);
        }
        Kind::Aaaa => {
            rdlength(&mut fixed, 16);
            fixed[12..28].copy_from_slice(&v6[r.value as usize].octets());
            out.extend_from_slice(&fixed);
        }
        Kind::Srv => {
            let target = names.wire(r.value);
            rdlength(&mut fixed, 6 + target.len());
            fixed[14..16].copy_from_slice(&r.weight.to_be_bytes());
            fixed[16..18].copy_from_slice(&r.port.to_be_bytes());
            out.extend_from_slice(&fixed[..18]);
            out.extend_from_slice(target);
        }
        Kind::Ns | Kind::Ptr => {
            let target = names.wire(r.value);
            rdlength(&mut fixed, target.len());
            out.extend_from_slice(&fixed[..12]);
            out.extend_from_slice(target);
        }
        Kind::Soa => {
            let soa = &soas[r.value as usize];
            let (mname, rname) = (names.wire(soa.mname), names.wire(soa.rname));
            rdlength(&mut fixed, mname.len() + rname.len() + 20);
            out.extend_from_slice(&fixed[..12]);
            out.extend_from_slice(mname);
            out.extend_from_slice(rname);
            for v in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
