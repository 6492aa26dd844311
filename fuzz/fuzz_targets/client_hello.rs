//! The ClientHello reader of TLS passthrough on arbitrary bytes: an answer, never a panic; a
//! server name, when found, is a lowercase host name within the bound; and the same bytes cut
//! anywhere never give another name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::client_hello::{Hello, MAX_SNI, parse};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Hello::Complete(Some(name))) = &whole {
        assert!(name.len() <= MAX_SNI);
        assert_eq!(name, &name.to_ascii_lowercase());
    }
    // A prefix is incomplete, or already decided the same way.
    let cut = data.len() / 2;
    match (parse(&data[..cut]), &whole) {
        (Ok(Hello::Incomplete), _) => {}
        (Ok(Hello::Complete(a)), Ok(Hello::Complete(b))) => assert_eq!(&a, b),
        (Err(_), _) => {}
        (prefix, whole) => panic!("prefix {prefix:?}, whole {whole:?}"),
    }
});
