//! The HTTP/2 codec's frame reader on arbitrary client bytes after the preface: frames, "not
//! yet" or a connection error, never a panic; a frame is read only once all of it arrived, the
//! same with or without the bytes after it; what it carries lies within it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::h2codec::frame::{self, Frame, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    // Our SETTINGS_MAX_FRAME_SIZE: the minimum, or small enough for the fuzzer to pass.
    let max = if head & 1 == 0 { frame::MIN_MAX_FRAME_SIZE } else { u32::from(head) };
    loop {
        match frame::read(rest, max) {
            Ok(Some((f, len))) => {
                assert!(len >= HEADER_LEN && len <= rest.len());
                assert!(len - HEADER_LEN <= max as usize);
                let again = frame::read(&rest[..len], max);
                assert_eq!(again, Ok(Some((f, len))));
                match f {
                    Frame::Data { data, flow_len, .. } => {
                        assert!(data.len() <= flow_len as usize);
                        assert_eq!(flow_len as usize, len - HEADER_LEN);
                    }
                    Frame::Headers { fragment, .. } | Frame::Continuation { fragment, .. } => {
                        assert!(fragment.len() <= len - HEADER_LEN)
                    }
                    _ => {}
                }
                rest = &rest[len..];
            }
            Ok(None) => return,
            Err(_) => return,
        }
    }
});
