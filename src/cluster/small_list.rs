//! `SmallList`: a short list of small values kept inline, for a task's ports and addresses.
//!
//! Nearly every task has one or two ports and at most one address: a `Vec` for each is a heap
//! block and 24 bytes of pointer, length and capacity per task, which at 500,000 tasks is tens
//! of megabytes and two allocations per task to make and free on every snapshot.

use std::fmt;

/// Up to `N` values inline; more on the heap. Read as a slice.
#[derive(Clone)]
pub enum SmallList<T: Copy, const N: usize> {
    /// The first `len` values are the list (the rest repeat the first, unread).
    Inline {
        len: u8,
        items: [T; N],
    },
    Heap(Box<[T]>),
}

impl<T: Copy, const N: usize> SmallList<T, N> {
    pub fn new() -> Self {
        SmallList::Heap(Box::default())
    }

    pub fn as_slice(&self) -> &[T] {
        match self {
            SmallList::Inline { len, items } => &items[..usize::from(*len)],
            SmallList::Heap(items) => items,
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            SmallList::Inline { len, items } => &mut items[..usize::from(*len)],
            SmallList::Heap(items) => items,
        }
    }

    pub fn push(&mut self, value: T) {
        let mut all = self.as_slice().to_vec();
        all.push(value);
        *self = SmallList::from(all.as_slice());
    }
}

impl<T: Copy, const N: usize> Default for SmallList<T, N> {
    fn default() -> Self {
        SmallList::new()
    }
}

impl<T: Copy, const N: usize> From<&[T]> for SmallList<T, N> {
    fn from(values: &[T]) -> Self {
        match values.first() {
            Some(&first) if values.len() <= N && N <= usize::from(u8::MAX) => {
                let mut items = [first; N];
                items[..values.len()].copy_from_slice(values);
                SmallList::Inline {
                    len: values.len() as u8,
                    items,
                }
            }
            _ => SmallList::Heap(values.into()),
        }
    }
}

impl<T: Copy, const N: usize> From<Vec<T>> for SmallList<T, N> {
    fn from(values: Vec<T>) -> Self {
        if values.len() > N {
            return SmallList::Heap(values.into_boxed_slice());
        }
        SmallList::from(values.as_slice())
    }
}

impl<T: Copy, const N: usize> FromIterator<T> for SmallList<T, N> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        SmallList::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl<T: Copy, const N: usize> std::ops::Deref for SmallList<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy, const N: usize> std::ops::DerefMut for SmallList<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

/// Equal values are equal lists, however they are kept.
impl<T: Copy + PartialEq, const N: usize> PartialEq for SmallList<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Copy + Eq, const N: usize> Eq for SmallList<T, N> {}

impl<T: Copy + fmt::Debug, const N: usize> fmt::Debug for SmallList<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<'a, T: Copy, const N: usize> IntoIterator for &'a SmallList<T, N> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl<T: Copy + serde::Serialize, const N: usize> serde::Serialize for SmallList<T, N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_the_values_it_was_given_inline_or_not() {
        for n in 0..6u16 {
            let values: Vec<u16> = (0..n).map(|i| 31000 + i).collect();
            let list: SmallList<u16, 2> = values.clone().into();
            assert_eq!(list.as_slice(), values.as_slice());
            assert_eq!(list.len(), values.len());
            let mut pushed: SmallList<u16, 2> = SmallList::new();
            for &v in &values {
                pushed.push(v);
            }
            assert_eq!(pushed, list);
            assert_eq!(format!("{list:?}"), format!("{values:?}"));
        }
    }
}
