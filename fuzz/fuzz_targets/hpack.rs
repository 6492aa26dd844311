//! The HTTP/2 codec's HPACK decoder on arbitrary field blocks (several on one connection, so
//! the dynamic table carries over): an error or a field list, never a panic; the table within
//! our SETTINGS_HEADER_TABLE_SIZE; nothing handed out past the header list size. And what the
//! encoder writes for the fields decoded decodes back to them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::h2codec::hpack::{Decoder, Encoder, Outcome};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let limit = usize::from(head) * 16;
    let max_list = usize::from(head) * 32;
    let mut d = Decoder::new(limit);
    // Blocks are separated by 0xfe bytes (easy for the fuzzer to place).
    for block in rest.split(|&b| b == 0xfe) {
        let mut fields = Vec::new();
        let mut size = 0;
        let outcome = d.decode(block, max_list, |f| {
            size += f.name.len() + f.value.len() + 32;
            fields.push((f.name.to_ascii_lowercase(), f.value.to_vec(), f.never_indexed));
        });
        assert!(size <= max_list);
        assert!(d.table_size() <= limit);
        if outcome.is_err() {
            return;
        }
        let mut e = Encoder::new(head & 1 == 1);
        let mut again = Vec::new();
        e.start(&mut again);
        for (name, value, never) in &fields {
            e.field(name, value, *never, &mut again);
        }
        let mut back = Vec::new();
        let outcome = Decoder::new(4096).decode(&again, usize::MAX, |f| {
            back.push((f.name.to_vec(), f.value.to_vec(), f.never_indexed))
        });
        assert_eq!(outcome, Ok(Outcome::Complete));
        assert_eq!(back, fields);
    }
});
