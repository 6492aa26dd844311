//! The buffers one zone build leaves for the next ([`Spare`]): a retired zone's tables and a
//! build's scratch, kept once per process, the larger of each, and given back when no build
//! came for [`SPARE_IDLE`].

use std::net::Ipv6Addr;

use super::super::{NameTable, Names, Node};
use super::{Rec, SoaData};

/// Buffers a build writes over instead of allocating afresh: a retired zone's tables and an
/// earlier build's scratch, emptied but with their capacity. Fresh memory costs a page fault
/// per 4 KiB on first write (a fifth of a whole build at 10,000 apps); memory written before
/// does not. What a build makes never depends on what it was given: only where it goes.
#[derive(Debug, Default)]
pub struct Spare {
    pub(super) names: NameTable,
    pub(super) flags: Vec<u8>,
    pub(super) records: Vec<Rec>,
    pub(super) v6: Vec<Ipv6Addr>,
    pub(super) soas: Vec<SoaData>,
    pub(super) nodes: Vec<Node>,
    pub(super) node_of: Vec<u32>,
    pub(super) data: Vec<u8>,
    /// `finish`'s counting sort.
    pub(super) starts: Vec<u32>,
    pub(super) order: Vec<u32>,
}

/// `a` empty, with the larger of the two buffers' capacity.
fn keep_larger<T>(a: &mut Vec<T>, mut b: Vec<T>) {
    if b.capacity() > a.capacity() {
        b.clear();
        *a = b;
    } else {
        a.clear();
    }
}

impl Spare {
    /// A retired zone's tables, for the next build.
    pub fn reclaim(names: &mut Names) -> Spare {
        let mut spare = Spare::default();
        spare.take_table(names);
        spare
    }

    fn take_table(&mut self, names: &mut Names) {
        let table = &mut names.names;
        keep_larger(&mut self.names.bytes, std::mem::take(&mut table.bytes));
        keep_larger(&mut self.names.starts, std::mem::take(&mut table.starts));
        keep_larger(&mut self.names.next, std::mem::take(&mut table.next));
        if table.index.capacity() > self.names.index.capacity() {
            self.names.index = std::mem::take(&mut table.index);
        }
        self.names.index.clear();
        keep_larger(&mut self.nodes, std::mem::take(&mut names.nodes));
        keep_larger(&mut self.node_of, std::mem::take(&mut names.node_of));
        keep_larger(&mut self.data, std::mem::take(&mut names.data));
    }

    /// Both sets of buffers, the larger of each kept.
    pub fn merge(&mut self, mut other: Spare) {
        keep_larger(&mut self.flags, other.flags);
        keep_larger(&mut self.records, other.records);
        keep_larger(&mut self.v6, other.v6);
        keep_larger(&mut self.soas, other.soas);
        keep_larger(&mut self.starts, other.starts);
        keep_larger(&mut self.order, other.order);
        let mut table = Names {
            names: std::mem::take(&mut other.names),
            nodes: other.nodes,
            node_of: other.node_of,
            data: other.data,
        };
        self.take_table(&mut table);
    }

    /// Bytes held, for the benchmarks.
    pub fn heap_bytes(&self) -> usize {
        self.names.bytes.capacity()
            + self.names.starts.capacity() * 4
            + self.names.next.capacity() * 4
            + self.names.index.capacity() * 8 / 7 * 17
            + self.flags.capacity()
            + self.records.capacity() * std::mem::size_of::<Rec>()
            + self.v6.capacity() * 16
            + self.soas.capacity() * std::mem::size_of::<SoaData>()
            + self.nodes.capacity() * std::mem::size_of::<Node>()
            + (self.node_of.capacity() + self.starts.capacity() + self.order.capacity()) * 4
            + self.data.capacity()
    }
}

/// The buffers of the last build and the last retired zone, for the next build (see [`Spare`]),
/// and when they were last offered: one set, each buffer the largest offered, so bounded by the
/// largest zone built; given back after [`SPARE_IDLE`] without a build ([`idle_spare`]).
static SPARE: std::sync::Mutex<Option<(Spare, std::time::Instant)>> = std::sync::Mutex::new(None);

/// How long buffers are kept for a build that does not come: under churn, builds follow one
/// another within the debounce and reuse them; a quiet cluster holds one zone, as without them.
pub const SPARE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The kept buffers, or none.
pub fn take_spare() -> Spare {
    match SPARE.lock() {
        Ok(mut kept) => kept.take().map(|(spare, _)| spare).unwrap_or_default(),
        Err(_) => Spare::default(),
    }
}

/// The kept buffers when no build has taken them for [`SPARE_IDLE`], to be freed (off any
/// thread that must not stall: freeing a large zone's buffers takes milliseconds).
pub fn idle_spare() -> Option<Spare> {
    idle_at(&mut *SPARE.try_lock().ok()?, std::time::Instant::now())
}

/// The kept buffers when offered [`SPARE_IDLE`] or longer before `now`.
pub(crate) fn idle_at(
    kept: &mut Option<(Spare, std::time::Instant)>,
    now: std::time::Instant,
) -> Option<Spare> {
    if now.saturating_duration_since(kept.as_ref()?.1) < SPARE_IDLE {
        return None;
    }
    kept.take().map(|(spare, _)| spare)
}

/// Bytes held by the kept buffers, for the benchmarks.
pub fn spare_bytes() -> usize {
    SPARE
        .lock()
        .ok()
        .and_then(|kept| kept.as_ref().map(|(spare, _)| spare.heap_bytes()))
        .unwrap_or(0)
}

/// Keeps `spare` for the next build, never waiting: when another thread holds the buffers'
/// lock this instant, they are freed instead.
pub fn offer(spare: Spare) {
    if let Ok(mut kept) = SPARE.try_lock() {
        let now = std::time::Instant::now();
        match kept.as_mut() {
            Some((kept, at)) => {
                kept.merge(spare);
                *at = now;
            }
            None => *kept = Some((spare, now)),
        }
    }
}
