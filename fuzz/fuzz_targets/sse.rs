//! The event-stream decoder on arbitrary bytes, cut at an arbitrary point: never panics, never
//! holds an event past its bound, and decodes the same events however the bytes arrive.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::discovery::marathon::sse::{SseDecoder, json_values};

const MAX_EVENT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut decoder = SseDecoder::new(MAX_EVENT);
    let mut out = Vec::new();
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let first = decoder.feed(&data[..cut], &mut out);
    let second = decoder.feed(&data[cut..], &mut out);
    if let (Ok(_), Ok(_)) = (&first, &second) {
        let mut whole = Vec::new();
        let all = SseDecoder::new(MAX_EVENT).feed(data, &mut whole);
        assert!(
            all.is_ok(),
            "the whole input overflowed an event, its two parts not"
        );
        assert_eq!(out, whole, "events depend on where the bytes were cut");
    }
    for error in [first, second].into_iter().filter_map(Result::err) {
        assert!(error.0 <= MAX_EVENT, "held a {}-byte event", error.0);
    }
    for event in out {
        assert!(event.data.len() <= MAX_EVENT, "gave out a {}-byte event", event.data.len());
        for value in json_values(&event.data) {
            let _ = value.map(switchyard::discovery::marathon::api::parse_event);
        }
    }
});
