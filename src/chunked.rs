//! `Chunked<T>`: a vector shared in fixed-size chunks, for the per-service and per-route
//! vectors of the live table and its snapshot (services, routes, backend states, limits).
//!
//! Why: a swap for one app's task event changes one service of 10,000 or 50,000. A `Vec` of
//! `Arc`s is copied whole for each new table (an atomic increment per element, a cache miss
//! each: most of what such a swap cost). Here a copy is one increment; a change copies the
//! chunk index and the chunk it lands in ([`Chunked::make_mut`]), so a swap costs the change.
//! Readers keep O(1) indexed lookups: one more pointer to follow than a `Vec`.

use std::sync::Arc;

/// log2 of the elements in a chunk: at 50,000 elements a change copies 782 chunk pointers and
/// 64 elements, against 50,000 elements.
const SHIFT: u32 = 6;
/// Elements in each chunk but the last (which holds the rest, 1 to `CHUNK`).
pub const CHUNK: usize = 1 << SHIFT;
const MASK: usize = CHUNK - 1;

/// A vector of `T` in chunks of [`CHUNK`] elements, each shared with the copies that did not
/// change it. Every chunk but the last is full, so element `i` is in chunk `i / CHUNK`.
pub struct Chunked<T> {
    chunks: Arc<[Arc<[T]>]>,
    len: usize,
}

impl<T> Clone for Chunked<T> {
    fn clone(&self) -> Self {
        Chunked {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Arc::from(Vec::new()),
            len: 0,
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Chunked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for Chunked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T> Chunked<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i >> SHIFT)?.get(i & MASK)
    }

    pub fn first(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn last(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            chunks: self.chunks.iter(),
            front: [].iter(),
            back: [].iter(),
            left: self.len,
        }
    }

    /// The chunks, in order: chunk `c` holds elements `c * CHUNK ..`. Two copies whose chunk
    /// `c` is the same allocation (`Arc::ptr_eq`) hold the same elements there.
    pub fn chunks(&self) -> &[Arc<[T]>] {
        &self.chunks
    }

    /// Whether `self` and `other` are copies of one another without a change since.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.chunks, &other.chunks)
    }

    /// Binary search, as `slice::binary_search_by` (the elements sorted as `f` sees them).
    pub fn binary_search_by(
        &self,
        mut f: impl FnMut(&T) -> std::cmp::Ordering,
    ) -> Result<usize, usize> {
        // The chunk first (by its first element), then within it.
        let c = self.chunks.partition_point(|c| f(&c[0]).is_lt());
        // Chunk `c - 1` starts below the target, chunk `c` (if any) at or above it: the target
        // is in `c - 1` or at the start of `c`.
        if c == 0 {
            return match self.chunks.first() {
                Some(first) if f(&first[0]).is_eq() => Ok(0),
                _ => Err(0),
            };
        }
        let base = (c - 1) << SHIFT;
        match self.chunks[c - 1].binary_search_by(&mut f) {
            Ok(i) => Ok(base + i),
            Err(i) if i < CHUNK || c == self.chunks.len() => Err(base + i),
            // Past chunk `c - 1`: the first of chunk `c`, which is at or above the target.
            Err(_) => match f(&self.chunks[c][0]) {
                std::cmp::Ordering::Equal => Ok(c << SHIFT),
                _ => Err(c << SHIFT),
            },
        }
    }
}

impl<T: Clone> Chunked<T> {
    /// Element `i`, to change: its chunk and the chunk index are copied first if another copy
    /// shares them. Panics when `i` is out of bounds.
    pub fn make_mut(&mut self, i: usize) -> &mut T {
        assert!(i < self.len, "index {i} out of bounds ({})", self.len);
        let chunks = unique(&mut self.chunks);
        let chunk = unique(&mut chunks[i >> SHIFT]);
        &mut chunk[i & MASK]
    }

    /// Sets element `i` (see [`Chunked::make_mut`]).
    pub fn set(&mut self, i: usize, value: T) {
        *self.make_mut(i) = value;
    }
}

/// `a`'s elements to change: copied first when `a` is shared.
fn unique<X: Clone>(a: &mut Arc<[X]>) -> &mut [X] {
    if Arc::get_mut(a).is_none() {
        *a = a.iter().cloned().collect();
    }
    Arc::get_mut(a).expect("not shared: just copied")
}

impl<T> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut iter = iter.into_iter();
        let mut chunks = Vec::new();
        let mut len = 0;
        loop {
            let chunk: Arc<[T]> = iter.by_ref().take(CHUNK).collect();
            len += chunk.len();
            let full = chunk.len() == CHUNK;
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
            if !full {
                break;
            }
        }
        Chunked {
            chunks: chunks.into(),
            len,
        }
    }
}

impl<T> From<Vec<T>> for Chunked<T> {
    fn from(v: Vec<T>) -> Self {
        v.into_iter().collect()
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> SHIFT][i & MASK]
    }
}

impl<'a, T> IntoIterator for &'a Chunked<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// The elements in order (either end).
pub struct Iter<'a, T> {
    chunks: std::slice::Iter<'a, Arc<[T]>>,
    front: std::slice::Iter<'a, T>,
    back: std::slice::Iter<'a, T>,
    left: usize,
}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Iter {
            chunks: self.chunks.clone(),
            front: self.front.clone(),
            back: self.back.clone(),
            left: self.left,
        }
    }
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    #[inline]
    fn next(&mut self) -> Option<&'a T> {
        loop {
            if let Some(x) = self.front.next() {
                self.left -= 1;
                return Some(x);
            }
            match self.chunks.next() {
                Some(c) => self.front = c.iter(),
                None => {
                    let x = self.back.next();
                    if x.is_some() {
                        self.left -= 1;
                    }
                    return x;
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.back.next_back() {
                self.left -= 1;
                return Some(x);
            }
            match self.chunks.next_back() {
                Some(c) => self.back = c.iter(),
                None => {
                    let x = self.front.next_back();
                    if x.is_some() {
                        self.left -= 1;
                    }
                    return x;
                }
            }
        }
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A copy changed through `set` equals the vector built from scratch with the same
        /// changes; the original is untouched; only the changed chunks are new allocations.
        #[test]
        fn a_patch_equals_a_rebuild(
            len in 0usize..400,
            sets in proptest::collection::vec((0usize..400, any::<u32>()), 0..12),
        ) {
            let before: Vec<u32> = (0..len as u32).collect();
            let original = Chunked::from(before.clone());
            let mut patched = original.clone();
            let mut rebuilt = before.clone();
            let mut touched = std::collections::BTreeSet::new();
            for (i, v) in sets.into_iter().filter(|&(i, _)| i < len) {
                patched.set(i, v);
                rebuilt[i] = v;
                touched.insert(i / CHUNK);
            }
            prop_assert_eq!(patched.iter().copied().collect::<Vec<_>>(), rebuilt.clone());
            prop_assert_eq!(&patched, &Chunked::from(rebuilt.clone()));
            prop_assert_eq!(patched.len(), len);
            prop_assert_eq!(original.iter().copied().collect::<Vec<_>>(), before);
            for (c, (a, b)) in original.chunks().iter().zip(patched.chunks()).enumerate() {
                prop_assert_eq!(Arc::ptr_eq(a, b), !touched.contains(&c), "chunk {}", c);
            }
            prop_assert_eq!(original.ptr_eq(&patched), touched.is_empty());
            for (i, v) in rebuilt.iter().enumerate() {
                prop_assert_eq!(patched[i], *v);
                prop_assert_eq!(patched.get(i), Some(v));
            }
            prop_assert_eq!(patched.get(len), None);
            prop_assert_eq!(patched.last(), rebuilt.last());
            let back: Vec<u32> = patched.iter().rev().copied().collect();
            prop_assert_eq!(back, rebuilt.iter().rev().copied().collect::<Vec<_>>());
            prop_assert_eq!(patched.iter().len(), len);
        }

        /// `binary_search_by` answers as the slice's does (on distinct sorted elements).
        #[test]
        fn binary_search_is_the_slices(
            mut v in proptest::collection::vec(0u32..1000, 0..300),
            wanted in 0u32..1001,
        ) {
            v.sort_unstable();
            v.dedup();
            let c = Chunked::from(v.clone());
            prop_assert_eq!(c.binary_search_by(|x| x.cmp(&wanted)), v.binary_search(&wanted));
        }
    }

    #[test]
    fn every_chunk_but_the_last_is_full() {
        let c: Chunked<usize> = (0..CHUNK * 2 + 3).collect();
        let lens: Vec<usize> = c.chunks().iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![CHUNK, CHUNK, 3]);
        let full: Chunked<usize> = (0..CHUNK).collect();
        assert_eq!(full.chunks().len(), 1);
        assert!(Chunked::<u8>::default().is_empty());
    }
}
