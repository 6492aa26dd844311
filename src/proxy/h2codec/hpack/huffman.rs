//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B): decoding string literals a client sent
//! Huffman-coded, and encoding ours when that is shorter. The code is canonical (codes of one
//! length are consecutive, ordered by symbol; a test checks it), so decoding needs no tree: a
//! 1024-entry table answers every code of up to 10 bits — all of the letters, digits and
//! punctuation a request head is made of — in one look-up, and the rare longer codes are found
//! by comparing the next bits against the first code of each length. Both tables are built at
//! compile time from the RFC's code list.

/// (code, length in bits) of symbols 0..=255 and EOS (256), as listed in RFC 7541 Appendix B.
#[rustfmt::skip]
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28),
    (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28), (0xfffffe8, 28), (0xffffea, 24),
    (0x3ffffffc, 30), (0xfffffe9, 28), (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28),
    (0xfffffec, 28), (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28), (0xffffff4, 28),
    (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28),
    (0xffffffa, 28), (0xffffffb, 28), (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11), (0x3fa, 10), (0x3fb, 10), (0xf9, 8),
    (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6), (0x0, 5), (0x1, 5), (0x2, 5),
    (0x19, 6), (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6), (0x1e, 6), (0x1f, 6), (0x5c, 7),
    (0xfb, 8), (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10), (0x1ffa, 13), (0x21, 6),
    (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7), (0x63, 7), (0x64, 7),
    (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7), (0x6b, 7), (0x6c, 7),
    (0x6d, 7), (0x6e, 7), (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xfc, 8), (0x73, 7),
    (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6), (0x7ffd, 15),
    (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5),
    (0x74, 7), (0x75, 7), (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5), (0x2b, 6), (0x76, 7),
    (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7), (0x79, 7), (0x7a, 7),
    (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20), (0x3fffd3, 22), (0x3fffd4, 22),
    (0x3fffd5, 22), (0x7fffd9, 23), (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23),
    (0x7fffdc, 23), (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23), (0xffffee, 24),
    (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23), (0x7fffe4, 23), (0x1fffdc, 21),
    (0x3fffd8, 22), (0x7fffe5, 23), (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23),
    (0xffffef, 24), (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22),
    (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21), (0x7fffea, 23), (0x3fffdd, 22),
    (0x3fffde, 22), (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23),
    (0x7fffec, 23), (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23), (0xfffea, 20), (0x3fffe2, 22),
    (0x3fffe3, 22), (0x3fffe4, 22), (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22),
    (0x7ffff1, 23), (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),
    (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25), (0x3ffffe2, 26),
    (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27), (0x7ffffdf, 27), (0x3ffffe5, 26),
    (0xfffff1, 24), (0x1ffffed, 25), (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26),
    (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28),
    (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27), (0xfffec, 20), (0xfffff3, 24),
    (0xfffed, 20), (0x1fffe6, 21), (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24),
    (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23), (0x3ffffeb, 26), (0x7ffffe6, 27),
    (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27),
    (0x7ffffea, 27), (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26), (0x3fffffff, 30),
];

const EOS: u16 = 256;
/// Codes of up to this many bits are decoded by one look-up in `SHORT`.
const SHORT_BITS: u32 = 10;
const LONGEST: usize = 30;

/// Indexed by the next `SHORT_BITS` bits: `symbol << 4 | length` of the code they start with,
/// or 0 when that code is longer than `SHORT_BITS` (no code is shorter than 5 bits, so 0 is
/// never a real entry).
static SHORT: [u16; 1 << SHORT_BITS] = short_table();

const fn short_table() -> [u16; 1 << SHORT_BITS] {
    let mut table = [0u16; 1 << SHORT_BITS];
    let mut sym = 0;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        if len as u32 <= SHORT_BITS {
            let free = SHORT_BITS - len as u32;
            let first = (code << free) as usize;
            let mut i = 0;
            while i < 1 << free {
                table[first + i] = (sym as u16) << 4 | len as u16;
                i += 1;
            }
        }
        sym += 1;
    }
    table
}

/// The canonical code's shape, per length: the first code of that length, how many codes have
/// it, and where its symbols start in `Canonical::symbols` (sorted by length, then symbol).
struct Canonical {
    first: [u32; LONGEST + 1],
    count: [u32; LONGEST + 1],
    offset: [u16; LONGEST + 1],
    symbols: [u16; 257],
}

static CANONICAL: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut c = Canonical {
        first: [0; LONGEST + 1],
        count: [0; LONGEST + 1],
        offset: [0; LONGEST + 1],
        symbols: [0; 257],
    };
    let mut next = 0u16;
    let mut len = 1;
    while len <= LONGEST {
        c.offset[len] = next;
        let mut sym = 0;
        while sym < CODES.len() {
            if CODES[sym].1 as usize == len {
                if c.count[len] == 0 {
                    c.first[len] = CODES[sym].0;
                }
                c.count[len] += 1;
                c.symbols[next as usize] = sym as u16;
                next += 1;
            }
            sym += 1;
        }
        len += 1;
    }
    c
}

/// A Huffman-coded string that is not one: a code past the end, padding longer than 7 bits or
/// not all ones, or the EOS symbol inside the string (RFC 7541 §5.2). A COMPRESSION_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HuffmanError;

/// The symbol and code length starting at the top of `window` (the next 30 bits, left-aligned
/// in its low 30 bits; past the input's end filled with ones, which no short code is made of).
#[inline]
fn symbol(window: u32) -> (u16, u32) {
    let short = SHORT[(window >> (LONGEST as u32 - SHORT_BITS)) as usize];
    if short != 0 {
        return (short >> 4, u32::from(short & 0xf));
    }
    let c = &CANONICAL;
    let mut len = SHORT_BITS as usize + 1;
    while len <= LONGEST {
        let code = window >> (LONGEST - len);
        // Canonical: a longer code's first `len` bits are past every code of this length.
        if code.wrapping_sub(c.first[len]) < c.count[len] {
            let at = c.offset[len] as u32 + (code - c.first[len]);
            return (c.symbols[at as usize], len as u32);
        }
        len += 1;
    }
    // Every 30-bit pattern starts with a code (the code is complete): unreachable.
    (EOS, LONGEST as u32)
}

/// Appends the decoding of `input` to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // Each symbol takes at least 5 bits: the output is at most 8/5 of the input.
    out.reserve(input.len() * 8 / 5 + 1);
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut bytes = input.iter();
    loop {
        while bits <= 56 {
            match bytes.next() {
                Some(&b) => {
                    acc = acc << 8 | u64::from(b);
                    bits += 8;
                }
                None => break,
            }
        }
        if bits == 0 {
            return Ok(());
        }
        let window = if bits >= LONGEST as u32 {
            (acc >> (bits - LONGEST as u32)) as u32 & ((1 << LONGEST) - 1)
        } else {
            let ones = (1u32 << (LONGEST as u32 - bits)) - 1;
            ((acc as u32 & ((1 << bits) - 1)) << (LONGEST as u32 - bits)) | ones
        };
        if bits < 8 && window == (1 << LONGEST) - 1 {
            // The rest is padding: fewer than 8 bits, all ones (EOS's first bits).
            return Ok(());
        }
        let (sym, len) = symbol(window);
        if len > bits || sym == EOS {
            return Err(HuffmanError);
        }
        out.push(sym as u8);
        bits -= len;
        acc &= (1u64 << bits) - 1;
    }
}

/// The length of `input` Huffman-coded, in bytes.
pub fn encoded_len(input: &[u8]) -> usize {
    let bits: usize = input
        .iter()
        .map(|&b| usize::from(CODES[usize::from(b)].1))
        .sum();
    bits.div_ceil(8)
}

/// Appends `input` Huffman-coded to `out`, padded with ones to a whole byte.
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(encoded_len(input));
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in input {
        let (code, len) = CODES[usize::from(b)];
        acc = acc << len | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push((acc << pad | ((1 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_code_is_complete_and_canonical() {
        // Kraft's sum is exactly 1: every bit pattern starts with a code, none with two.
        let kraft: u64 = CODES
            .iter()
            .map(|&(_, len)| 1u64 << (LONGEST - len as usize))
            .sum();
        assert_eq!(kraft, 1 << LONGEST);
        // Sorted by (length, symbol), each code follows the last (shifted to its length).
        let mut order: Vec<usize> = (0..CODES.len()).collect();
        order.sort_by_key(|&s| (CODES[s].1, s));
        let mut expect = CODES[order[0]].0;
        for pair in order.windows(2) {
            let (prev, next) = (CODES[pair[0]], CODES[pair[1]]);
            expect = (expect + 1) << (next.1 - prev.1);
            assert_eq!(next.0, expect, "symbol {}", pair[1]);
        }
    }

    #[test]
    fn every_symbol_decodes_alone_and_after_any_other() {
        for a in 0..=255u8 {
            let mut coded = Vec::new();
            encode(&[a], &mut coded);
            let mut back = Vec::new();
            decode(&coded, &mut back).unwrap();
            assert_eq!(back, [a]);
        }
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut coded = Vec::new();
        encode(&all, &mut coded);
        assert_eq!(coded.len(), encoded_len(&all));
        let mut back = Vec::new();
        decode(&coded, &mut back).unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn rfc_7541_examples() {
        // C.4.1, C.4.2, C.6.1.
        let cases: [(&[u8], &[u8]); 4] = [
            (
                b"www.example.com",
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
            ),
            (b"no-cache", &[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]),
            (b"302", &[0x64, 0x02]),
            (b"private", &[0xae, 0xc3, 0x77, 0x1a, 0x4b]),
        ];
        for (plain, coded) in cases {
            let mut out = Vec::new();
            encode(plain, &mut out);
            assert_eq!(out, coded);
            let mut back = Vec::new();
            decode(coded, &mut back).unwrap();
            assert_eq!(back, plain);
        }
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        // '0' is 00000: padded with zeros instead of ones.
        assert_eq!(decode(&[0x00], &mut Vec::new()), Err(HuffmanError));
        // A whole byte of padding (8 ones) after 'a' (00011) + 3 ones: 00011111 11111111.
        assert_eq!(decode(&[0x1f, 0xff], &mut Vec::new()), Err(HuffmanError));
        // EOS itself (30 ones) padded: refused even though it is a whole code.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut Vec::new()),
            Err(HuffmanError)
        );
        // Padding alone (up to 7 ones) is an empty string.
        let mut out = Vec::new();
        decode(&[], &mut out).unwrap();
        assert!(out.is_empty());
        // A code cut short by the end: the first 8 bits of ')' (11111110|11).
        assert_eq!(decode(&[0xfe], &mut Vec::new()), Err(HuffmanError));
    }

    proptest! {
        #[test]
        fn round_trip(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut coded = Vec::new();
            encode(&input, &mut coded);
            prop_assert_eq!(coded.len(), encoded_len(&input));
            let mut back = Vec::new();
            decode(&coded, &mut back).unwrap();
            prop_assert_eq!(back, input);
        }

        #[test]
        fn any_bytes_decode_or_are_refused(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            if decode(&input, &mut out).is_ok() {
                // What decodes re-encodes to the same bytes (padding is canonical too).
                let mut again = Vec::new();
                encode(&out, &mut again);
                prop_assert_eq!(again, input);
            }
        }
    }
}
