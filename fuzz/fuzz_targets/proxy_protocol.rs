//! The PROXY protocol header parser (v1 and v2) on arbitrary bytes: an answer, never a panic;
//! a complete header never claims more bytes than it was given or than the bound; and a header
//! re-encoded from what was parsed parses back to the same addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::proxy_protocol::{MAX_HEADER, Parsed, Version, encode, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Complete(header)) = parse(data) {
        assert!(header.len <= data.len() && header.len <= MAX_HEADER);
        if let Some((source, dest)) = header.addresses {
            for version in [Version::V1, Version::V2] {
                let again = encode(version, source, dest);
                match parse(&again) {
                    Ok(Parsed::Complete(h)) => {
                        assert_eq!(h.len, again.len());
                        assert_eq!(h.addresses, Some((source, dest)));
                    }
                    other => panic!("re-encoded header: {other:?}"),
                }
            }
        }
    }
});
