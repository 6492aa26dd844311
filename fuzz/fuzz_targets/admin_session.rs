//! The admin API's session headers from the network: `Cookie` (the session id), `Origin` against
//! `Host` (the CSRF and login checks), `X-Forwarded-Proto`; and the constant-time comparison.
#![no_main]
use http::header::{self, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard::admin::session::{cookie_id, over_tls, same_origin, same_secret};

fuzz_target!(|data: &[u8]| {
    // Three header values separated by NUL: Cookie, Origin, Host.
    let mut parts = data.splitn(3, |&b| b == 0);
    let mut headers = HeaderMap::new();
    for name in [header::COOKIE, header::ORIGIN, header::HOST] {
        if let Some(v) = parts.next().and_then(|p| HeaderValue::from_bytes(p).ok()) {
            headers.append(name, v);
        }
    }
    if let Some(id) = cookie_id(&headers) {
        assert!(!id.contains(';'));
        let _ = same_secret(id, "0123456789abcdef");
    }
    if let Some(true) = same_origin(&headers) {
        assert!(headers.contains_key(header::HOST));
    }
    let _ = over_tls(&headers);
});
