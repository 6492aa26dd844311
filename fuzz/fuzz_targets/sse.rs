//! The event-stream decoder on arbitrary bytes, cut at an arbitrary point: never panics, never
//! holds a line past its bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::discovery::marathon::sse::{SseDecoder, json_values};

fuzz_target!(|data: &[u8]| {
    let mut decoder = SseDecoder::new(4096);
    let mut out = Vec::new();
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let _ = decoder.feed(&data[..cut], &mut out);
    let _ = decoder.feed(&data[cut..], &mut out);
    for event in out {
        for value in json_values(&event.data) {
            let _ = value.map(switchyard::discovery::marathon::api::parse_event);
        }
    }
});
