//! HPACK's two index spaces (RFC 7541 §2.3): the static table every peer knows, and the decoder's
//! dynamic table of fields the client asked us to remember, evicted oldest first to stay within
//! the size the client's encoder last chose (itself within our SETTINGS_HEADER_TABLE_SIZE). A
//! client indexes the fields it repeats (`:authority`, `user-agent`, cookies), so on a busy
//! connection most of a request head is a few one-byte references into this table.

use std::collections::VecDeque;

/// RFC 7541 Appendix A: index 1 is the first entry.
pub const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// What an entry costs against the table's size: its name and value plus 32 (RFC 7541 §4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// One remembered field, name and value in one allocation.
#[derive(Debug, Clone)]
struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// The decoder's dynamic table: newest entry first (index 62).
#[derive(Debug, Clone)]
pub struct Dynamic {
    entries: VecDeque<Entry>,
    size: usize,
    /// The size the client's encoder last chose (a dynamic table size update), at most `limit`.
    max: usize,
    /// Our SETTINGS_HEADER_TABLE_SIZE: no size update may exceed it.
    limit: usize,
}

impl Dynamic {
    pub fn new(limit: usize) -> Dynamic {
        Dynamic {
            entries: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The encoder's size update; false (a COMPRESSION_ERROR) past our setting.
    pub fn resize(&mut self, max: usize) -> bool {
        if max > self.limit {
            return false;
        }
        self.max = max;
        self.evict_to(max);
        true
    }

    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => break,
            }
        }
    }

    /// Remembers a field, given as its name and value in one buffer; an entry bigger than the
    /// whole table empties it and is not kept (RFC 7541 §4.4: not an error).
    pub fn insert(&mut self, bytes: Vec<u8>, name_len: usize) {
        let size = bytes.len() + ENTRY_OVERHEAD;
        if size > self.max {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max - size);
        self.entries.push_front(Entry {
            bytes: bytes.into_boxed_slice(),
            name_len,
        });
        self.size += size;
    }

    /// The field at `index` of the combined index space (1-based; static first).
    pub fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        if index == 0 {
            return None;
        }
        if index <= STATIC.len() {
            return Some(STATIC[index - 1]);
        }
        let e = self.entries.get(index - STATIC.len() - 1)?;
        Some(e.bytes.split_at(e.name_len))
    }

    /// The table's size as RFC 7541 counts it (tests and the fuzz target check the bound).
    pub fn size(&self) -> usize {
        self.size
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The static index of a field name for the encoder (response fields as a backend wrote them,
/// any case): the first entry with that name. Length, first and last letter tell the
/// regular names apart (a test checks it), so one comparison decides.
pub fn static_name(name: &[u8]) -> Option<u8> {
    let (&first, &last) = (name.first()?, name.last()?);
    let index: u8 = match (name.len(), first | 0x20, last | 0x20) {
        (3, b'a', b'e') => 21,  // age
        (3, b'v', b'a') => 60,  // via
        (4, b'd', b'e') => 33,  // date
        (4, b'e', b'g') => 34,  // etag
        (4, b'f', b'm') => 37,  // from
        (4, b'h', b't') => 38,  // host
        (4, b'l', b'k') => 45,  // link
        (4, b'v', b'y') => 59,  // vary
        (5, b'a', b'w') => 22,  // allow
        (5, b'r', b'e') => 50,  // range
        (6, b'a', b't') => 19,  // accept
        (6, b'c', b'e') => 32,  // cookie
        (6, b'e', b't') => 35,  // expect
        (6, b's', b'r') => 54,  // server
        (7, b'e', b's') => 36,  // expires
        (7, b'r', b'h') => 52,  // refresh
        (7, b'r', b'r') => 51,  // referer
        (8, b'i', b'e') => 42,  // if-range
        (8, b'i', b'h') => 39,  // if-match
        (8, b'l', b'n') => 46,  // location
        (10, b's', b'e') => 55, // set-cookie
        (10, b'u', b't') => 58, // user-agent
        (11, b'r', b'r') => 53, // retry-after
        (12, b'c', b'e') => 31, // content-type
        (12, b'm', b's') => 47, // max-forwards
        (13, b'a', b'n') => 23, // authorization
        (13, b'a', b's') => 18, // accept-ranges
        (13, b'c', b'e') => 30, // content-range
        (13, b'c', b'l') => 24, // cache-control
        (13, b'i', b'h') => 41, // if-none-match
        (13, b'l', b'd') => 44, // last-modified
        (14, b'a', b't') => 15, // accept-charset
        (14, b'c', b'h') => 28, // content-length
        (15, b'a', b'e') => 17, // accept-language
        (15, b'a', b'g') => 16, // accept-encoding
        (16, b'c', b'e') => 27, // content-language
        (16, b'c', b'g') => 26, // content-encoding
        (16, b'c', b'n') => 29, // content-location
        (16, b'w', b'e') => 61, // www-authenticate
        (17, b'i', b'e') => 40, // if-modified-since
        (17, b't', b'g') => 57, // transfer-encoding
        (18, b'p', b'e') => 48, // proxy-authenticate
        (19, b'c', b'n') => 25, // content-disposition
        (19, b'i', b'e') => 43, // if-unmodified-since
        (19, b'p', b'n') => 49, // proxy-authorization
        (25, b's', b'y') => 56, // strict-transport-security
        (27, b'a', b'n') => 20, // access-control-allow-origin
        _ => return None,
    };
    // `name` (any case) is the entry (lowercase letters and '-', as every static name is): a
    // letter matches either case (setting bit 0x20 lowercases it), '-' only itself. Compared
    // a word at a time, zero-padded, as the entry is in `NAME_WORDS`.
    // (The arm matched on the length: the entry's is the name's, as a test checks.)
    let (lower, mask) = &NAME_WORDS[usize::from(index) - 1];
    let mut padded = [0u8; NAME_WORDS_LEN];
    padded[..name.len()].copy_from_slice(name);
    let mut differ = 0;
    for (i, word) in padded.chunks_exact(8).enumerate() {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        differ |= (word | mask[i]) ^ lower[i];
    }
    (differ == 0).then_some(index)
}

/// The longest static name, padded to whole words.
const NAME_WORDS_LEN: usize = 32;

/// Each static entry's name for [`static_name`]: its bytes, and a mask with 0x20 where it has a
/// letter, as little-endian words, zero-padded to `NAME_WORDS_LEN` bytes.
const NAME_WORDS: [([u64; 4], [u64; 4]); 61] = {
    let mut words = [([0u64; 4], [0u64; 4]); 61];
    let mut e = 0;
    while e < STATIC.len() {
        let name = STATIC[e].0;
        assert!(name.len() <= NAME_WORDS_LEN);
        let (mut bytes, mut mask) = ([0u8; NAME_WORDS_LEN], [0u8; NAME_WORDS_LEN]);
        let mut i = 0;
        while i < name.len() {
            bytes[i] = name[i];
            mask[i] = if name[i].is_ascii_lowercase() {
                0x20
            } else {
                0
            };
            i += 1;
        }
        let mut w = 0;
        while w < 4 {
            words[e].0[w] = word_at(&bytes, w * 8);
            words[e].1[w] = word_at(&mask, w * 8);
            w += 1;
        }
        e += 1;
    }
    words
};

const fn word_at(b: &[u8; NAME_WORDS_LEN], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_name_finds_every_regular_name_in_any_case() {
        for (name, _) in STATIC.iter() {
            if name.starts_with(b":") {
                continue;
            }
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(
                static_name(name),
                Some(first as u8),
                "{}",
                String::from_utf8_lossy(name)
            );
            let upper = name.to_ascii_uppercase();
            assert_eq!(static_name(&upper), Some(first as u8));
        }
        assert_eq!(static_name(b"x-forwarded-for"), None);
        // A byte that only looks alike once bit 0x20 is set: '\r' for '-'.
        assert_eq!(static_name(b"content\rtype"), None);
        assert_eq!(static_name(b"Date"), Some(33));
        assert_eq!(static_name(b"servez"), None);
    }

    #[test]
    fn static_name_refuses_every_other_byte_anywhere_in_a_name() {
        for (name, _) in STATIC.iter().filter(|(n, _)| !n.starts_with(b":")) {
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            for at in 0..name.len() {
                for b in 0..=255u8 {
                    let mut other = name.to_vec();
                    other[at] = b;
                    let alike =
                        b == name[at] || (name[at].is_ascii_lowercase() && b == name[at] ^ 0x20);
                    let expect = alike.then_some(first as u8);
                    assert_eq!(static_name(&other), expect, "{other:?}");
                }
            }
        }
    }

    fn insert(t: &mut Dynamic, name: &[u8], value: &[u8]) {
        t.insert([name, value].concat(), name.len());
    }

    #[test]
    fn entries_are_evicted_oldest_first_and_an_oversized_one_empties_the_table() {
        let mut t = Dynamic::new(100);
        insert(&mut t, b"a", b"1"); // 34
        insert(&mut t, b"b", b"2"); // 68
        assert_eq!(t.get(62), Some((&b"b"[..], &b"2"[..])));
        assert_eq!(t.get(63), Some((&b"a"[..], &b"1"[..])));
        insert(&mut t, b"c", b"3"); // 102 > 100: "a" goes
        assert_eq!((t.len(), t.size()), (2, 68));
        assert_eq!(t.get(64), None);
        assert!(t.resize(40));
        assert_eq!((t.len(), t.size()), (1, 34));
        assert!(!t.resize(101));
        insert(&mut t, b"long-name", b"long-value");
        assert!(t.is_empty());
        assert_eq!(t.get(0), None);
    }
}
