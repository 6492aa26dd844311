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
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use rustc_hash::{FxHashMap, FxHasher};

#[path = "compact_build.rs"]
mod build;
#[cfg(test)]
pub(crate) use build::idle_at;
pub use build::{Builder, SPARE_IDLE, SoaData, Spare, idle_spare, offer, spare_bytes, take_spare};

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

    /// Holds what `other` holds, each name under the same id, written over this table's
    /// buffers (an incremental build starts from the last zone's names: see
    /// `zone/incremental.rs`).
    pub fn copy_from(&mut self, other: &NameTable) {
        self.bytes.clear();
        self.bytes.extend_from_slice(&other.bytes);
        self.starts.clear();
        self.starts.extend_from_slice(&other.starts);
        self.next.clear();
        self.next.extend_from_slice(&other.next);
        self.index.clone_from(&other.index);
    }

    /// `{label}.{parent}`, or `None` when the label is empty or too long, or the name would be.
    pub fn child(&mut self, label: &[u8], parent: NameId) -> Option<NameId> {
        self.child_joined(&[label], parent)
    }

    /// `{label}.{parent}` where the label is `parts` one after the other (`api-prod`, `-`,
    /// `1a2b3`), built in place without making the label first; `None` as for [`Self::child`].
    pub fn child_joined(&mut self, parts: &[&[u8]], parent: NameId) -> Option<NameId> {
        self.join(parts, parent, true)
    }

    /// As [`Self::child_joined`], for parts known to be lowercase already (labels made by
    /// `cluster::names`), which are not lowercased again.
    pub fn child_joined_lower(&mut self, parts: &[&[u8]], parent: NameId) -> Option<NameId> {
        debug_assert!(parts.iter().all(|p| !p.iter().any(u8::is_ascii_uppercase)));
        self.join(parts, parent, false)
    }

    fn join(&mut self, parts: &[&[u8]], parent: NameId, lower: bool) -> Option<NameId> {
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
        if lower {
            scratch[1..].make_ascii_lowercase();
        }
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

    /// Gives back what the table holds well beyond its size (see [`build::shrink`]); the
    /// index is left as it is, as shrinking a hash table rehashes every name.
    fn shrink(&mut self) {
        build::shrink(&mut self.bytes);
        build::shrink(&mut self.starts);
        build::shrink(&mut self.next);
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

/// A zone no longer read leaves its tables to the next build (see [`Spare`]).
impl Drop for Names {
    fn drop(&mut self) {
        if self.data.capacity() > 0 {
            offer(Spare::reclaim(self));
        }
    }
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

    /// The node of the interned name `id`, when it exists.
    pub fn node_of_id(&self, id: NameId) -> Option<u32> {
        self.node_of
            .get(id as usize)
            .copied()
            .filter(|&n| n != NONE)
    }

    /// Where the node's record sets are in the zone's data (see [`Builder::add_raw`]).
    pub fn node_span(&self, node: u32) -> (u32, u32) {
        let start = self.nodes[node as usize].data;
        let end = self
            .nodes
            .get(node as usize + 1)
            .map_or(self.data.len() as u32, |n| n.data);
        (start, end)
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

    /// Whether both hold the same names, nodes and pre-encoded records (what is held, not
    /// where: capacities may differ).
    #[cfg(test)]
    pub(crate) fn same_tables(&self, other: &Names) -> bool {
        let nodes = |n: &Names| -> Vec<(NameId, u32)> {
            n.nodes.iter().map(|node| (node.name, node.data)).collect()
        };
        self.names.bytes == other.names.bytes
            && self.names.starts == other.names.starts
            && self.names.next == other.names.next
            && nodes(self) == nodes(other)
            && self.node_of == other.node_of
            && self.data == other.data
    }

    /// Bytes held (capacity of every part), for the benchmarks.
    pub fn heap_bytes(&self) -> usize {
        self.names.bytes.capacity()
            + self.names.starts.capacity() * 4
            + self.names.next.capacity() * 4
            + self.names.index.capacity() * 8 / 7 * 17
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
