//! The HTTP/1.1 fast path's parsers on bytes from the network: a request head read and
//! rewritten for the backend, a response head's framing and its rewrite for the client, and the
//! chunked-body scanner fed in two pieces (it must find the same end either way).
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard::proxy::h1_framing::{
    Chunked, read_head, read_response, write_request_head, write_response_head,
};

fuzz_target!(|data: &[u8]| {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    if let Ok(httparse::Status::Complete(_)) = req.parse(data)
        && let Ok(Some(head)) = read_head(&req)
    {
        let mut out = Vec::new();
        let client = switchyard::proxy::headers::Client {
            trusted: data.len() % 2 == 0,
            ..switchyard::proxy::headers::Client::untrusted(b"10.1.2.3", 80)
        };
        write_request_head(&mut out, &req, &head, &client, data.len() % 3 == 0);
        // What goes to the backend is one well-formed head.
        let mut again = [httparse::EMPTY_HEADER; 80];
        let mut check = httparse::Request::new(&mut again);
        assert!(matches!(check.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()));
        // ... framed by at most one Content-Length, never a Transfer-Encoding.
        let lengths = check
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
            .count();
        assert!(lengths <= 1);
        assert!(
            !check
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        );
    }
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut slots);
    if let Ok(httparse::Status::Complete(_)) = res.parse(data) {
        if let Ok(checked) = read_response(&res, data.first() == Some(&b'H')) {
            let mut out = Vec::new();
            write_response_head(&mut out, &res, &checked, data.len() % 2 == 0, b"x-extra: 1\r\n");
            // What goes to the client is one well-formed head with at most one framing field.
            let mut again = [httparse::EMPTY_HEADER; 80];
            let mut check = httparse::Response::new(&mut again);
            assert!(matches!(check.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()));
            let framing = check
                .headers
                .iter()
                .filter(|h| {
                    h.name.eq_ignore_ascii_case("content-length")
                        || h.name.eq_ignore_ascii_case("transfer-encoding")
                })
                .count();
            assert!(framing <= 1);
        }
    }
    let whole = Chunked::default().feed(data);
    let cut = data.len() / 3;
    let mut split = Chunked::default();
    let pieces = match split.feed(&data[..cut]) {
        Ok(Some(n)) => Ok(Some(n)),
        Ok(None) => split.feed(&data[cut..]).map(|r| r.map(|n| n + cut)),
        Err(e) => Err(e),
    };
    assert_eq!(whole, pieces);
});
