//! HPACK against RFC 7541 Appendix C's examples (requests on one connection, with and without
//! Huffman; responses with evictions at a 256-byte table), its bounds, and properties: what
//! the encoder writes decodes back, and no bytes make the decoder panic or outgrow its table.

use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

type List = Vec<(String, String)>;

fn decode(d: &mut Decoder, block: &[u8]) -> Result<List, DecodeError> {
    let mut list = Vec::new();
    let outcome = d.decode(block, usize::MAX, |f| {
        list.push((
            String::from_utf8_lossy(f.name).into_owned(),
            String::from_utf8_lossy(f.value).into_owned(),
        ))
    })?;
    assert_eq!(outcome, Outcome::Complete);
    Ok(list)
}

fn list(fields: &[(&str, &str)]) -> List {
    fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn requests() -> [List; 3] {
    let first = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    let mut second = first.to_vec();
    second.push(("cache-control", "no-cache"));
    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    [list(&first), list(&second), list(&third)]
}

fn responses() -> [List; 3] {
    let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    let loc = "https://www.example.com";
    let first = [
        (":status", "302"),
        ("cache-control", "private"),
        ("date", date1),
        ("location", loc),
    ];
    let second = [
        (":status", "307"),
        ("cache-control", "private"),
        ("date", date1),
        ("location", loc),
    ];
    let third = [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", loc),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ];
    [list(&first), list(&second), list(&third)]
}

#[test]
fn rfc_7541_c2_single_representations() {
    let mut d = Decoder::new(4096);
    let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    assert_eq!(
        decode(&mut d, &block),
        Ok(list(&[("custom-key", "custom-header")]))
    );
    assert_eq!(d.table_size(), 55);
    let mut d = Decoder::new(4096);
    let block = hex("040c 2f73 616d 706c 652f 7061 7468");
    assert_eq!(
        decode(&mut d, &block),
        Ok(list(&[(":path", "/sample/path")]))
    );
    assert_eq!(d.table_size(), 0);
    let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    let mut never = Vec::new();
    d.decode(&block, usize::MAX, |f| never.push(f.never_indexed))
        .unwrap();
    assert_eq!(never, [true]);
    assert_eq!(decode(&mut d, &hex("82")), Ok(list(&[(":method", "GET")])));
    assert_eq!(d.table_size(), 0);
}

#[test]
fn rfc_7541_c3_c4_requests_share_one_table() {
    let plain = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    let huffman = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    for blocks in [plain, huffman] {
        let mut d = Decoder::new(4096);
        for ((block, expect), size) in blocks.iter().zip(requests()).zip([57, 110, 164]) {
            assert_eq!(decode(&mut d, &hex(block)), Ok(expect));
            assert_eq!(d.table_size(), size);
        }
    }
}

#[test]
fn rfc_7541_c5_c6_responses_evict_at_256_bytes() {
    let plain = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
         3d31",
    ];
    let huffman = [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];
    for blocks in [plain, huffman] {
        let mut d = Decoder::new(256);
        for ((block, expect), size) in blocks.iter().zip(responses()).zip([222, 222, 215]) {
            assert_eq!(decode(&mut d, &hex(block)), Ok(expect));
            assert_eq!(d.table_size(), size);
        }
    }
}

#[test]
fn rfc_7541_c1_integers() {
    let mut out = Vec::new();
    write_int(&mut out, 0, 5, 10);
    write_int(&mut out, 0, 5, 1337);
    write_int(&mut out, 0, 8 - 1, 42);
    assert_eq!(out, [10, 31, 154, 10, 42]);
    let mut pos = 1;
    assert_eq!(read_int(&out, &mut pos, 5), Ok(1337));
    assert_eq!(pos, 4);
}

#[test]
fn bounds_are_compression_errors() {
    let mut d = Decoder::new(4096);
    // Index 62 with an empty dynamic table, and index 0.
    assert_eq!(decode(&mut d, &[0xbe]), Err(DecodeError::BadIndex));
    assert_eq!(decode(&mut d, &[0x80]), Err(DecodeError::BadIndex));
    assert_eq!(
        decode(&mut d, &[0x7f, 0x00, 0x01, b'x']),
        Err(DecodeError::BadIndex)
    );
    // A string longer than the block; an integer cut short; one of 5 continuation bytes.
    assert_eq!(
        decode(&mut d, &[0x04, 0x05, b'/']),
        Err(DecodeError::Truncated)
    );
    assert_eq!(decode(&mut d, &[0xff, 0x80]), Err(DecodeError::Truncated));
    assert_eq!(
        decode(&mut d, &[0xff, 0x80, 0x80, 0x80, 0x80, 0x01]),
        Err(DecodeError::IntegerTooLong)
    );
    // Size updates: above our setting, or after a field.
    assert_eq!(
        decode(&mut d, &hex("3fe2 1f")),
        Err(DecodeError::TableSizeTooBig)
    );
    assert_eq!(
        decode(&mut d, &hex("823f e11f")),
        Err(DecodeError::LateTableSizeUpdate)
    );
    // Two at the start (lowered, then raised back) are fine.
    assert_eq!(
        decode(&mut d, &hex("203f e11f 82")),
        Ok(list(&[(":method", "GET")]))
    );
    // A Huffman string with bad padding.
    assert_eq!(
        decode(&mut d, &[0x04, 0x81, 0x00]),
        Err(DecodeError::Huffman)
    );
}

#[test]
fn past_the_list_size_fields_are_still_decoded_into_the_table_but_not_handed_out() {
    let mut d = Decoder::new(4096);
    // Three fields of 42, 43 and 55 (custom-key: custom-header, indexed).
    let block = [
        hex("82 86"),
        hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    ]
    .concat();
    let mut seen = Vec::new();
    let outcome = d.decode(&block, 85, |f| seen.push(f.name.to_vec()));
    assert_eq!(outcome, Ok(Outcome::TooLarge));
    assert_eq!(seen, [b":method".to_vec(), b":scheme".to_vec()]);
    // The table has the field anyway: the next block's reference to it works.
    assert_eq!(
        decode(&mut d, &[0xbe]),
        Ok(list(&[("custom-key", "custom-header")]))
    );
}

#[test]
fn the_encoder_indexes_status_and_names_and_signals_a_table_size_change() {
    let mut e = Encoder::new(false);
    let mut out = Vec::new();
    e.start(&mut out);
    e.status(200, &mut out);
    e.status(302, &mut out);
    e.field(b"Content-Type", b"text/plain", false, &mut out);
    e.field(b"X-Thing", b"1", true, &mut out);
    assert_eq!(
        out,
        [
            &[0x88, 0x08, 3, b'3', b'0', b'2', 0x0f, 0x10, 10][..],
            b"text/plain",
            &[0x10, 7],
            b"x-thing",
            &[1, b'1'],
        ]
        .concat()
    );
    e.peer_table_size(0);
    let mut out = Vec::new();
    e.start(&mut out);
    e.status(404, &mut out);
    assert_eq!(out, [0x20, 0x8d]);
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &out), Ok(list(&[(":status", "404")])));
}

fn field_lists() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>, bool)>> {
    let name = prop_oneof![
        proptest::sample::select(
            STATIC
                .iter()
                .map(|(n, _)| n.to_vec())
                .filter(|n| !n.starts_with(b":"))
                .collect::<Vec<_>>()
        ),
        proptest::collection::vec(b'a'..=b'z', 1..20),
    ];
    proptest::collection::vec(
        (
            name,
            proptest::collection::vec(any::<u8>(), 0..200),
            any::<bool>(),
        ),
        0..20,
    )
}

proptest! {
    /// The encoder's blocks (with or without Huffman) decode to the same fields, names
    /// lowercased, flags kept.
    #[test]
    fn what_the_encoder_writes_decodes_back(
        fields in field_lists(),
        status in 100u16..1000,
        huffman in any::<bool>(),
        upper in any::<bool>(),
    ) {
        let mut e = Encoder::new(huffman);
        let mut block = Vec::new();
        e.start(&mut block);
        e.status(status, &mut block);
        for (name, value, never) in &fields {
            let name = if upper { name.to_ascii_uppercase() } else { name.clone() };
            e.field(&name, value, *never, &mut block);
        }
        let mut d = Decoder::new(4096);
        let mut got = Vec::new();
        let outcome = d.decode(&block, usize::MAX, |f| {
            got.push((f.name.to_vec(), f.value.to_vec(), f.never_indexed))
        });
        prop_assert_eq!(outcome, Ok(Outcome::Complete));
        let mut expect = vec![(b":status".to_vec(), status.to_string().into_bytes(), false)];
        expect.extend(fields);
        prop_assert_eq!(got, expect);
        prop_assert_eq!(d.table_size(), 0);
    }

    /// Any bytes: an error or a list, never a panic; the table within its limit; nothing
    /// handed out past the list size.
    #[test]
    fn any_bytes_are_decoded_or_refused_within_bounds(
        blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
        limit in 0usize..600,
        max_list in 0usize..2000,
    ) {
        let mut d = Decoder::new(limit);
        for block in blocks {
            let mut size = 0;
            let _ = d.decode(&block, max_list, |f| size += f.name.len() + f.value.len() + 32);
            prop_assert!(size <= max_list);
            prop_assert!(d.table_size() <= limit);
        }
    }
}
