//! A gzip body from Marathon or a relay (`discovery::marathon::gzip`): fed in pieces, anything
//! is refused or decoded, never past the limit, never a panic; what gzip made decodes back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::discovery::marathon::gzip::{Gunzip, accepts_gzip, gunzip, gzip};

const LIMIT: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece size; the rest is the body.
    let Some((&piece, body)) = data.split_first() else {
        return;
    };
    let mut decoder = Gunzip::new(LIMIT);
    let mut ok = true;
    for chunk in body.chunks(usize::from(piece).max(1)) {
        if decoder.push(chunk).is_err() {
            ok = false;
            break;
        }
    }
    if ok && let Ok(out) = decoder.finish() {
        assert!(out.len() <= LIMIT);
    }
    // The encoder's output always decodes to its input.
    if body.len() <= LIMIT {
        assert_eq!(gunzip(&gzip(body), LIMIT + 64).unwrap(), body);
    }
    let _ = accepts_gzip(&String::from_utf8_lossy(body));
});
