//! One event object from arbitrary JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = switchyard::discovery::marathon::api::parse_event(value);
    }
});
