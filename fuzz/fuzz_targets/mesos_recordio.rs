//! The Mesos RecordIO decoder on arbitrary bytes, cut at an arbitrary point: never panics, never
//! hands out a record past its bound, and decodes the same frames however the bytes arrive.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::discovery::mesos::recordio::{Decoder, Frame};

const MAX_RECORD: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut decoder = Decoder::new(MAX_RECORD);
    let mut out = Vec::new();
    let split = decoder
        .feed(&data[..cut], &mut out)
        .and_then(|()| decoder.feed(&data[cut..], &mut out));
    let mut whole = Vec::new();
    let all = Decoder::new(MAX_RECORD).feed(data, &mut whole);
    assert_eq!(split.is_ok(), all.is_ok(), "the framing error depends on the cut");
    if all.is_ok() {
        assert_eq!(out, whole, "frames depend on where the bytes were cut");
    }
    for frame in &out {
        match frame {
            Frame::Record(r) => assert!(r.len() <= MAX_RECORD),
            Frame::Oversized(n) => assert!(*n > MAX_RECORD as u64),
        }
    }
    for frame in out {
        if let Frame::Record(r) = frame {
            let _ = switchyard::discovery::mesos::api::parse_event(&r);
        }
    }
});
