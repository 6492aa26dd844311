//! The zone's compact form: every name interned once as lowercase wire bytes in one arena, and
//! every name's records pre-encoded in another, as they go on the wire in an answer (owner: a
//! pointer to the question, `c0 0c`; type, class IN, TTL, RDLENGTH, RDATA with names
//! uncompressed), so that answering the common query is a lookup and a copy (as Knot DNS
//! prepares its answers). The records are built into a flat list ([`Builder`]) and laid out
//! once at the end ([`Builder::finish`]); nothing here allocates per record.
//!
//! The general answer path and the HTTP API read records back as hickory [`Record`]s
//! ([`Names::get`], [`Names::records`]), owned by the root as the zone always stored them.

use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use rustc_hash::{FxHashMap, FxHasher};

/// An interned name: its index in the name table.
pub type NameId = u32;

const NONE: u32 = u32::MAX;
const CLASS_IN: [u8; 2] = [0, 1];

/// The record types a zone holds, in the order a node lists them (and an ANY answer, as the
/// zone's `Node` did: A, AAAA, SRV, NS, PTR, then SOA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    A = 0,
    Aaaa = 1,
    Srv = 2,
    Ns = 3,
    Ptr = 4,
    Soa = 5,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::A,
        Kind::Aaaa,
        Kind::Srv,
        Kind::Ns,
        Kind::Ptr,
        Kind::Soa,
    ];

    pub fn of(rtype: RecordType) -> Option<Kind> {
        Some(match rtype {
            RecordType::A => Kind::A,
            RecordType::AAAA => Kind::Aaaa,
            RecordType::SRV => Kind::Srv,
            RecordType::NS => Kind::Ns,
            RecordType::PTR => Kind::Ptr,
            RecordType::SOA => Kind::Soa,
            _ => return None,
        })
    }

    fn code(self) -> u16 {
        match self {
            Kind::A => 1,
            Kind::Aaaa => 28,
            Kind::Srv => 33,
            Kind::Ns => 2,
            Kind::Ptr => 12,
            Kind::Soa => 6,
        }
    }
}

fn hash(wire: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(wire);
    h.finish()
}

/// Names as lowercase wire bytes (`3api4prod0`), each stored once.
#[derive(Debug, Default)]
pub struct NameTable {
    bytes: Vec<u8>,
    /// Where each name starts in `bytes`; it ends where the next starts.
    starts: Vec<u32>,
    /// First name of each hash, then the chain of names sharing it.
    index: FxHashMap<u64, u32>,
    next: Vec<u32>,
    scratch: Vec<u8>,
}

impl NameTable {
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The wire bytes of `id`.
    pub fn wire(&self, id: NameId) -> &[u8] {
        let start = self.starts[id as usize] as usize;
        let end = self
            .starts
            .get(id as usize + 1)
            .map_or(self.bytes.len(), |&e| e as usize);
        &self.bytes[start..end]
    }

    /// The id of `wire` (already lowercase), when it is held.
    pub fn find(&self, wire: &[u8]) -> Option<NameId> {
        let mut at = *self.index.get(&hash(wire))?;
        while at != NONE {
            if self.wire(at) == wire {
                return Some(at);
            }
            at = self.next[at as usize];
        }
        None
    }

    /// The id of `wire` (lowercase, valid), interned if new.
    pub fn intern(&mut self, wire: &[u8]) -> NameId {
        let h = hash(wire);
        let id = self.starts.len() as u32;
        match self.index.entry(h) {
            std::collections::hash_map::Entry::Occupied(first) => {
                let mut at = *first.get();
                loop {
                    if self.wire(at) == wire {
                        return at;
                    }
                    let next = self.next[at as usize];
                    if next == NONE {
                        self.next[at as usize] = id;
                        break;
                    }
                    at = next;
                }
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(id);
            }
        }
        self.starts.push(self.bytes.len() as u32);
        self.bytes.extend_from_slice(wire);
        self.next.push(NONE);
        id
    }

    /// `{label}.{parent}`, or `None` when the label is empty or too long, or the name would be.
    pub fn child(&mut self, label: &[u8], parent: NameId) -> Option<NameId> {
        self.child_joined(&[label], parent)
    }

    /// `{label}.{parent}` where the label is `parts` one after the other (`api-prod`, `-`,
    /// `1a2b3`), built in place without making the label first; `None` as for [`Self::child`].
    pub fn child_joined(&mut self, parts: &[&[u8]], parent: NameId) -> Option<NameId> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 || len > 63 {
            return None;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.push(len as u8);
        for part in parts {
            scratch.extend_from_slice(part);
        }
        scratch[1..].make_ascii_lowercase();
        scratch.extend_from_slice(self.wire(parent));
        let id = (scratch.len() <= 255).then(|| self.intern(&scratch));
        self.scratch = scratch;
        id
    }

    /// A fully qualified name in text (`api.marathon.mesos.`), or `None` when it is not one.
    pub fn parse(&mut self, text: &str) -> Option<NameId> {
        let wire = text_to_wire(text)?;
        Some(self.intern(&wire))
    }

    /// A hickory name.
    pub fn from_name(&mut self, name: &Name) -> Option<NameId> {
        let mut wire = Vec::with_capacity(name.len() + 2);
        for label in name.iter() {
            wire.push(label.len() as u8);
            wire.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        wire.push(0);
        (wire.len() <= 255).then(|| self.intern(&wire))
    }

    /// `id` without its first label (the root stays the root).
    pub fn parent(&mut self, id: NameId) -> NameId {
        let wire = self.wire(id);
        if wire[0] == 0 {
            return id;
        }
        let rest = wire[1 + wire[0] as usize..].to_vec();
        self.intern(&rest)
    }

    pub fn labels(&self, id: NameId) -> usize {
        labels(self.wire(id))
    }

    /// `id` as a hickory name.
    pub fn name(&self, id: NameId) -> Name {
        wire_to_name(self.wire(id))
    }

    fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
        self.starts.shrink_to_fit();
        self.next.shrink_to_fit();
        self.index.shrink_to_fit();
        self.scratch = Vec::new();
    }
}

fn labels(wire: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while wire[at] != 0 {
        at += 1 + wire[at] as usize;
        n += 1;
    }
    n
}

/// `api.marathon.mesos.` as lowercase wire bytes; `None` unless fully qualified, with labels of
/// 1 to 63 characters, within 255 bytes.
pub fn text_to_wire(text: &str) -> Option<Vec<u8>> {
    let body = text.strip_suffix('.')?;
    let mut wire = Vec::with_capacity(text.len() + 1);
    if !body.is_empty() {
        for label in body.split('.') {
            if label.is_empty() || label.len() > 63 || label.contains('\\') {
                return None;
            }
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    wire.push(0);
    (wire.len() <= 255).then_some(wire)
}

fn wire_to_name(wire: &[u8]) -> Name {
    Name::read(&mut BinDecoder::new(wire)).unwrap_or_else(|_| Name::root())
}

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

#[derive(Debug, Clone, Copy)]
struct Rec {
    owner: NameId,
    ttl: u32,
    /// Added only when the name has no equal record of its type yet.
    once: bool,
    data: Data,
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
    soas: Vec<SoaData>,
}

const EXISTS: u8 = 0x80;
/// The name has a record added `once` (so its sets are checked for equal records).
const ONCE: u8 = 0x40;
/// The bits of the kinds a name has records of.
const KINDS: u8 = 0x3f;

impl Builder {
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

    fn push(&mut self, owner: NameId, ttl: u32, data: Data, once: bool) {
        *self.flag(owner) |= EXISTS | 1 << data.kind() as u8 | if once { ONCE } else { 0 };
        self.records.push(Rec {
            owner,
            ttl,
            once,
            data,
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
                .retain(|r| !(r.owner == owner && r.data.kind() == Kind::Soa));
        }
        self.soas.push(soa);
        let at = self.soas.len() as u32 - 1;
        self.push(owner, ttl, Data::Soa(at), false);
    }

    /// Replaces the name's NS records with one.
    pub fn set_ns(&mut self, owner: NameId, target: NameId, ttl: u32) {
        if self.has(owner, Kind::Ns) {
            self.records
                .retain(|r| !(r.owner == owner && r.data.kind() == Kind::Ns));
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
    pub fn finish(mut self) -> Names {
        let count = self.names.len();
        self.flags.resize(count, 0);
        // Records by owner, in the order added (a counting sort); and the bytes they take, so
        // that the encoded zone is allocated once.
        let mut starts = vec![0u32; count + 1];
        let mut bound = 0;
        for r in &self.records {
            starts[r.owner as usize + 1] += 1;
            bound += encoded_len(r, &self.names, &self.soas);
        }
        for i in 0..count {
            starts[i + 1] += starts[i];
        }
        let mut fill = starts[..count].to_vec();
        let mut order = vec![0u32; self.records.len()];
        for (i, r) in self.records.iter().enumerate() {
            let slot = &mut fill[r.owner as usize];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }
        drop(fill);
        let mut existing = 0;
        for f in &self.flags {
            if f & EXISTS != 0 {
                existing += 1;
                bound += SET_HEADER * (f & KINDS).count_ones() as usize;
            }
        }
        let mut out = Names {
            names: NameTable::default(),
            nodes: Vec::with_capacity(existing),
            node_of: Vec::new(),
            data: Vec::with_capacity(bound),
        };

        let mut node_of = vec![NONE; count];
        // The records of the set so far, to drop one added `once` when an equal one came first.
        let mut seen: Vec<Data> = Vec::new();
        for id in 0..count {
            let flags = self.flags[id];
            if flags & EXISTS == 0 {
                continue;
            }
            node_of[id] = out.nodes.len() as u32;
            out.nodes.push(Node {
                name: id as u32,
                data: out.data.len() as u32,
            });
            let kinds = flags & KINDS;
            let once = flags & ONCE != 0;
            if kinds == 0 {
                continue;
            }
            let mine = &order[starts[id] as usize..starts[id + 1] as usize];
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
                    if !single && r.data.kind() != kind {
                        continue;
                    }
                    if once {
                        if r.once && seen.contains(&r.data) {
                            continue;
                        }
                        seen.push(r.data);
                    }
                    n = n.wrapping_add(1);
                    encode(&mut out.data, r, &self.names, &self.soas);
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
        out.node_of = node_of;
        self.names.shrink();
        out.names = self.names;
        out.data.shrink_to_fit();
        out
    }
}

/// A record set's header in [`Names`]' data: kind, count (u16), bytes (u32).
const SET_HEADER: usize = 7;

/// The bytes [`encode`] writes for `r`.
fn encoded_len(r: &Rec, names: &NameTable, soas: &[SoaData]) -> usize {
    let name_len = |id: NameId| {
        let start = names.starts[id as usize] as usize;
        let end = names
            .starts
            .get(id as usize + 1)
            .map_or(names.bytes.len(), |&e| e as usize);
        end - start
    };
    12 + match r.data {
        Data::A(_) => 4,
        Data::Aaaa(_) => 16,
        Data::Srv { target, .. } => 6 + name_len(target),
        Data::Ns(target) | Data::Ptr(target) => name_len(target),
        Data::Soa(i) => {
            let soa = &soas[i as usize];
            name_len(soa.mname) + name_len(soa.rname) + 20
        }
    }
}

fn addr(ip: IpAddr) -> Data {
    match ip {
        IpAddr::V4(v4) => Data::A(v4),
        IpAddr::V6(v6) => Data::Aaaa(v6),
    }
}

/// One record on the wire, owned by a pointer to the question.
fn encode(out: &mut Vec<u8>, r: &Rec, names: &NameTable, soas: &[SoaData]) {
    let code = r.data.kind().code().to_be_bytes();
    let ttl = r.ttl.to_be_bytes();
    // Owner, type, class IN, TTL; RDLENGTH follows.
    let head = |rdlength: usize| -> [u8; 12] {
        let l = (rdlength as u16).to_be_bytes();
        [
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
            l[0],
            l[1],
        ]
    };
    match r.data {
        Data::A(v4) => {
            out.extend_from_slice(&head(4));
            out.extend_from_slice(&v4.octets());
        }
        Data::Aaaa(v6) => {
            out.extend_from_slice(&head(16));
            out.extend_from_slice(&v6.octets());
        }
        Data::Srv {
            weight,
            port,
            target,
        } => {
            let target = names.wire(target);
            out.extend_from_slice(&head(6 + target.len()));
            let (w, p) = (weight.to_be_bytes(), port.to_be_bytes());
            out.extend_from_slice(&[0, 0, w[0], w[1], p[0], p[1]]);
            out.extend_from_slice(target);
        }
        Data::Ns(target) | Data::Ptr(target) => {
            let target = names.wire(target);
            out.extend_from_slice(&head(target.len()));
            out.extend_from_slice(target);
        }
        Data::Soa(i) => {
            let soa = &soas[i as usize];
            let (mname, rname) = (names.wire(soa.mname), names.wire(soa.rname));
            out.extend_from_slice(&head(mname.len() + rname.len() + 20));
            out.extend_from_slice(mname);
            out.extend_from_slice(rname);
            for v in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    name: NameId,
    /// Where its record sets start in `data`; they end where the next node's start.
    data: u32,
}

/// The zone's names and their pre-encoded records.
#[derive(Debug, Default)]
pub struct Names {
    names: NameTable,
    nodes: Vec<Node>,
    /// Per interned name: its node, or `NONE` when the name does not exist (a target only).
    node_of: Vec<u32>,
    data: Vec<u8>,
}

/// One record set, pre-encoded: `count` records, each owned by `c0 0c`.
#[derive(Debug, Clone, Copy)]
pub struct Set<'a> {
    pub kind: Kind,
    pub count: usize,
    pub bytes: &'a [u8],
}

impl<'a> Set<'a> {
    /// Each record's bytes.
    pub fn records(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.bytes;
        std::iter::from_fn(move || {
            if rest.len() < 12 {
                return None;
            }
            let len = 12 + u16::from_be_bytes([rest[10], rest[11]]) as usize;
            let (one, tail) = rest.split_at(len);
            rest = tail;
            Some(one)
        })
    }
}

impl Names {
    /// How many names exist.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node of a lowercase wire name.
    pub fn find(&self, wire: &[u8]) -> Option<u32> {
        let id = self.names.find(wire)?;
        let node = self.node_of[id as usize];
        (node != NONE).then_some(node)
    }

    /// The node of `name`.
    pub fn find_name(&self, name: &Name) -> Option<u32> {
        let mut wire = [0u8; 256];
        let mut len = 0;
        for label in name.iter() {
            if len + 1 + label.len() >= wire.len() {
                return None;
            }
            wire[len] = label.len() as u8;
            for (to, b) in wire[len + 1..].iter_mut().zip(label) {
                *to = b.to_ascii_lowercase();
            }
            len += 1 + label.len();
        }
        wire[len] = 0;
        self.find(&wire[..=len])
    }

    pub fn contains(&self, name: &LowerName) -> bool {
        self.find_name(name).is_some()
    }

    fn sets(&self, node: u32) -> impl Iterator<Item = Set<'_>> {
        let start = self.nodes[node as usize].data as usize;
        let end = self
            .nodes
            .get(node as usize + 1)
            .map_or(self.data.len(), |n| n.data as usize);
        let mut rest = &self.data[start..end];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let kind = Kind::ALL[rest[0] as usize];
            let count = u16::from_le_bytes([rest[1], rest[2]]) as usize;
            let len = u32::from_le_bytes([rest[3], rest[4], rest[5], rest[6]]) as usize;
            let bytes = &rest[7..7 + len];
            rest = &rest[7 + len..];
            Some(Set { kind, count, bytes })
        })
    }

    /// The node's records of one kind, pre-encoded.
    pub fn set(&self, node: u32, kind: Kind) -> Option<Set<'_>> {
        self.sets(node).find(|s| s.kind == kind)
    }

    /// The node's own name.
    pub fn name_of(&self, node: u32) -> Name {
        self.names.name(self.nodes[node as usize].name)
    }

    /// The name table (owners and targets).
    pub fn table(&self) -> &NameTable {
        &self.names
    }

    /// The node's records answering `rtype` (ANY: all of them), owned by the root.
    pub fn records(&self, node: u32, rtype: RecordType) -> Vec<Record> {
        let mut out = Vec::new();
        let owner = || self.name_of(node);
        if rtype == RecordType::ANY {
            for set in self.sets(node) {
                decode_set(&set, &owner, &mut out);
            }
        } else if let Some(set) = Kind::of(rtype).and_then(|k| self.set(node, k)) {
            decode_set(&set, &owner, &mut out);
        }
        out
    }

    /// The records of `name`, by type, when it exists.
    pub fn get(&self, name: &LowerName) -> Option<crate::zone::Node> {
        self.find_name(name).map(|node| self.node(node))
    }

    /// One node's records as hickory records.
    pub fn node(&self, node: u32) -> crate::zone::Node {
        let mut out = crate::zone::Node::default();
        let owner = || self.name_of(node);
        for set in self.sets(node) {
            let mut records = Vec::with_capacity(set.count);
            decode_set(&set, &owner, &mut records);
            match set.kind {
                Kind::A => out.a = records,
                Kind::Aaaa => out.aaaa = records,
                Kind::Srv => out.srv = records,
                Kind::Ns => out.ns = records,
                Kind::Ptr => out.ptr = records,
                Kind::Soa => out.soa = records.pop().map(Box::new),
            }
        }
        out
    }

    /// Every name that exists, with its records.
    pub fn iter(&self) -> impl Iterator<Item = (LowerName, crate::zone::Node)> + '_ {
        (0..self.nodes.len() as u32).map(|n| (LowerName::new(&self.name_of(n)), self.node(n)))
    }

    /// Every name that exists.
    pub fn keys(&self) -> impl Iterator<Item = LowerName> + '_ {
        (0..self.nodes.len() as u32).map(|n| LowerName::new(&self.name_of(n)))
    }

    /// Bytes held (capacity of every part), for the benchmarks.
    pub fn heap_bytes(&self) -> usize {
        self.names.bytes.capacity()
            + self.names.starts.capacity() * 4
            + self.names.next.capacity() * 4
            + self.names.index.capacity() * 13
            + self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.node_of.capacity() * 4
            + self.data.capacity()
    }
}

/// Decodes a set; NS, PTR and SOA records are owned by `owner` (as the zone stored them), the
/// others by the root.
fn decode_set(set: &Set<'_>, owner: &dyn Fn() -> Name, out: &mut Vec<Record>) {
    let named = matches!(set.kind, Kind::Ns | Kind::Ptr | Kind::Soa);
    let name = named.then(owner);
    for bytes in set.records() {
        if let Some(mut record) = decode(set.kind, bytes) {
            if let Some(name) = &name {
                record.name = name.clone();
            }
            out.push(record);
        }
    }
}

/// One pre-encoded record as a hickory record owned by the root (SOA and NS: by the root too;
/// answers rename every record to the name asked).
pub fn decode(kind: Kind, bytes: &[u8]) -> Option<Record> {
    let ttl = u32::from_be_bytes(bytes.get(6..10)?.try_into().ok()?);
    let rdata = bytes.get(12..)?;
    let name = |at: usize| -> Option<(Name, usize)> {
        let mut d = BinDecoder::new(rdata.get(at..)?);
        let name = Name::read(&mut d).ok()?;
        Some((name, at + d.index()))
    };
    let u32_at = |at: usize| Some(u32::from_be_bytes(rdata.get(at..at + 4)?.try_into().ok()?));
    let data = match kind {
        Kind::A => RData::A(A(Ipv4Addr::from(<[u8; 4]>::try_from(rdata).ok()?))),
        Kind::Aaaa => RData::AAAA(AAAA(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?))),
        Kind::Srv => {
            let word = |at: usize| u16::from_be_bytes([rdata[at], rdata[at + 1]]);
            if rdata.len() < 7 {
                return None;
            }
            RData::SRV(SRV::new(word(0), word(2), word(4), name(6)?.0))
        }
        Kind::Ns => RData::NS(NS(name(0)?.0)),
        Kind::Ptr => RData::PTR(PTR(name(0)?.0)),
        Kind::Soa => {
            let (mname, at) = name(0)?;
            let (rname, at) = name(at)?;
            RData::SOA(SOA::new(
                mname,
                rname,
                u32_at(at)?,
                u32_at(at + 4)? as i32,
                u32_at(at + 8)? as i32,
                u32_at(at + 12)? as i32,
                u32_at(at + 16)?,
            ))
        }
    };
    Some(Record::from_rdata(Name::root(), ttl, data))
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
