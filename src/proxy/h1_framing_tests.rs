//! HTTP/1.1 framing: the end of a chunked body, malformed chunks, framing and forwarding fields.

use super::*;

const BODY: &[u8] =
    b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: a\r\n\r\nNEXT";

#[test]
fn finds_the_end_of_a_chunked_body_whatever_the_splits() {
    let end = BODY.len() - 4;
    for split in 0..BODY.len() {
        let mut c = Chunked::default();
        let first = c.feed(&BODY[..split]).unwrap();
        let found = match first {
            Some(n) => n,
            None => split + c.feed(&BODY[split..]).unwrap().expect("ends"),
        };
        assert_eq!(found, end, "split at {split}");
    }
    let mut bytewise = Chunked::default();
    let ended = BODY
        .iter()
        .position(|b| bytewise.feed(std::slice::from_ref(b)).unwrap().is_some());
    assert_eq!(ended, Some(end - 1));
}

#[test]
fn no_trailers_end_too_and_line_ends_are_crlf() {
    let mut c = Chunked::default();
    assert_eq!(c.feed(b"3\r\nabc\r\n0\r\n\r\n"), Ok(Some(13)));
    let mut ws = Chunked::default();
    assert_eq!(ws.feed(b"3 \t;x=y\r\nabc\r\n0\r\n\r\n"), Ok(Some(19)));
    for bad in [
        &b"3\nabc\r\n0\r\n\r\n"[..],
        b"3\r\nabc\r\n0\n\n",
        b"3 4\r\n",
        b"3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX: y\n\r\n",
        b"3;a\nb\r\n",
    ] {
        assert_eq!(Chunked::default().feed(bad), Err(BadChunk), "{bad:?}");
    }
}

#[test]
fn malformed_chunks_are_errors() {
    for bad in [
        &b"g\r\n"[..],
        b"3\r\nabcX",
        b"\r\n",
        b"ffffffffffffffff1\r\n",
    ] {
        assert_eq!(Chunked::default().feed(bad), Err(BadChunk), "{bad:?}");
    }
}

proptest::proptest! {
    /// Any chunked encoding of any data, cut anywhere, ends exactly where it ends; and
    /// arbitrary bytes never panic the scanner.
    #[test]
    fn any_chunked_body_ends_where_it_ends(
        chunks in proptest::collection::vec(proptest::collection::vec(0u8..=255, 1..300), 0..8),
        cut in 0usize..4000,
        noise in proptest::collection::vec(0u8..=255, 0..200),
    ) {
        let mut body = Vec::new();
        for c in &chunks {
            body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            body.extend_from_slice(c);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let end = body.len();
        body.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let cut = cut.min(body.len());
        let mut c = Chunked::default();
        let found = match c.feed(&body[..cut]).unwrap() {
            Some(n) => n,
            None => cut + c.feed(&body[cut..]).unwrap().unwrap(),
        };
        proptest::prop_assert_eq!(found, end);
        let _ = Chunked::default().feed(&noise);
    }
}

fn request(raw: &[u8]) -> Vec<u8> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    req.parse(raw).unwrap();
    let head = read_head(&req).unwrap().unwrap();
    let mut out = Vec::new();
    let client = crate::proxy::headers::Client {
        trusted: true,
        ..crate::proxy::headers::Client::untrusted(b"10.0.0.9", 8080)
    };
    write_request_head(&mut out, &req, &head, &client, false);
    out
}

#[test]
fn connection_never_strips_the_framing() {
    let out = request(
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host\r\n\
              Content-Length: 005\r\n\r\n",
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\r\nHost: a\r\n"), "{text}");
    assert!(text.contains("\r\ncontent-length: 5\r\n"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("connection"), "{text}");
}

#[test]
fn forwarding_fields_are_replaced_or_appended() {
    let out = request(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n\
              X-Forwarded-Proto: https\r\nX-Forwarded-For: 2.2.2.2\r\nX-Request-Id: r\r\n\r\n",
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n"),
        "{text}"
    );
    // From a trusted proxy: its X-Forwarded-Proto is kept.
    assert!(text.contains("x-forwarded-proto: https\r\n"), "{text}");
    assert!(!text.contains("X-Forwarded-Proto"), "{text}");
    assert_eq!(
        text.matches("-Request-Id: ").count() + text.matches("-request-id: ").count(),
        1
    );
}

/// The fast path's writer: the admin session's cookie pair is taken out, the rest kept; an
/// untrusted client's address claims are dropped and its X-Forwarded-Port replaced by the
/// listener's port, a trusted proxy's kept.
#[test]
fn the_session_cookie_and_untrusted_address_claims_are_left_out() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1; switchyard_session=0123; b=2\r\n\
                Cookie: switchyard_session=4567\r\nX-Real-IP: 203.0.113.7\r\n\
                Forwarded: for=203.0.113.8\r\nX-Forwarded-Port: 4443\r\n\r\n";
    let trusted = String::from_utf8(request(raw)).unwrap();
    assert!(trusted.contains("\r\nCookie: a=1; b=2\r\n"), "{trusted}");
    assert!(
        !trusted.contains("0123") && !trusted.contains("4567"),
        "{trusted}"
    );
    for claim in [
        "X-Real-IP: ",
        "Forwarded: ",
        "\r\nx-forwarded-port: 4443\r\n",
    ] {
        assert!(trusted.contains(claim), "{trusted}");
    }
    assert_eq!(trusted.matches("x-forwarded-port").count(), 1, "{trusted}");
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    req.parse(raw).unwrap();
    let head = read_head(&req).unwrap().unwrap();
    let mut out = Vec::new();
    let client = crate::proxy::headers::Client::untrusted(b"10.0.0.9", 8080);
    write_request_head(&mut out, &req, &head, &client, false);
    let untrusted = String::from_utf8(out).unwrap();
    assert!(
        untrusted.contains("\r\nCookie: a=1; b=2\r\n"),
        "{untrusted}"
    );
    for claim in ["X-Real-IP", "Forwarded:", "X-Forwarded-Port", "4443"] {
        assert!(!untrusted.contains(claim), "{untrusted}");
    }
    assert!(
        untrusted.contains("\r\nx-forwarded-port: 8080\r\n"),
        "{untrusted}"
    );
}

/// A trusted proxy's X-Forwarded-Port that its `Connection` names is one hop's: ours is
/// written instead, as hyper's path does after dropping the named field.
#[test]
fn a_forwarding_field_named_in_connection_is_not_kept() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-forwarded-port\r\n\
                X-Forwarded-Port: 4443\r\n\r\n";
    let written = String::from_utf8(request(raw)).unwrap();
    assert!(
        written.contains("\r\nx-forwarded-port: 8080\r\n") && !written.contains("4443"),
        "{written}"
    );
}
