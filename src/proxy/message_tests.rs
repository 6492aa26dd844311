use super::*;

fn req(lines: &[(&'static str, &'static str)]) -> Result<Request<'static>, Refusal> {
    check_request(
        false,
        b"POST",
        Target::Origin,
        lines.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
    )
}

#[test]
fn content_length_forms() {
    assert_eq!(content_length(b"0"), Some(0));
    assert_eq!(content_length(b"007"), Some(7));
    assert_eq!(content_length(b" 5 "), Some(5));
    for bad in [
        &b""[..],
        b"+5",
        b"-5",
        b"5 5",
        b"5,6",
        b"5, 5",
        b"5,",
        b"0x5",
        b"99999999999999999999",
        b"18446744073709551616",
        "\u{0665}".as_bytes(),
    ] {
        assert_eq!(content_length(bad), None, "{bad:?}");
    }
}

#[test]
fn framing_conflicts_are_refused() {
    let h = ("Host", "a");
    assert_eq!(
        req(&[h, ("Content-Length", "5"), ("Content-Length", "6")])
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        req(&[h, ("Content-Length", "5"), ("Transfer-Encoding", "chunked")])
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        req(&[h, ("Transfer-Encoding", "chunked, chunked")])
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        req(&[
            h,
            ("Transfer-Encoding", "chunked"),
            ("Transfer-Encoding", "chunked")
        ])
        .unwrap_err()
        .status,
        400
    );
    assert_eq!(
        req(&[h, ("Transfer-Encoding", "chunked, gzip")])
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        req(&[h, ("Transfer-Encoding", "identity")])
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        req(&[h, ("Transfer-Encoding", "gzip, chunked")])
            .unwrap_err()
            .status,
        501
    );
    assert_eq!(
        req(&[h, ("Transfer-Encoding", "")]).unwrap_err().status,
        400
    );
    assert_eq!(
        req(&[h, ("Transfer-Encoding", "Chunked")]).unwrap().body,
        RequestBody::Chunked
    );
    assert_eq!(
        req(&[h, ("Content-Length", "5"), ("content-length", "5")])
            .unwrap()
            .body,
        RequestBody::Length(5)
    );
}

#[test]
fn host_rules() {
    assert_eq!(req(&[]).unwrap_err().reason, "missing Host");
    assert_eq!(
        req(&[("Host", "a"), ("host", "a")]).unwrap_err().reason,
        "more than one Host"
    );
    for bad in ["a,b", "u@a", "a/b", "a b", "a:x", "[zz]", ":80", "a:123456"] {
        assert_eq!(req(&[("Host", bad)]).unwrap_err().status, 400, "{bad}");
    }
    for good in [
        "a",
        "a.example.com:8080",
        "10.0.0.1",
        "[::1]:80",
        "[fe80::1]",
    ] {
        assert!(req(&[("Host", good)]).is_ok(), "{good}");
    }
    let http10 = check_request(true, b"GET", Target::Origin, std::iter::empty()).unwrap();
    assert_eq!((http10.host, http10.close), (None, true));
}

#[test]
fn absolute_form_authority_wins_and_must_agree() {
    let target = target_form(b"GET", b"http://Shop.example.com:80/x?y").unwrap();
    assert_eq!(target, Target::Absolute(b"Shop.example.com:80"));
    let ok = check_request(
        false,
        b"GET",
        target,
        [(&b"Host"[..], &b"shop.example.com:80"[..])].into_iter(),
    )
    .unwrap();
    assert_eq!(ok.host, Some(&b"Shop.example.com:80"[..]));
    let bad = check_request(
        false,
        b"GET",
        target,
        [(&b"Host"[..], &b"evil.example.com"[..])].into_iter(),
    );
    assert_eq!(bad.unwrap_err().status, 400);
    assert!(target_form(b"GET", b"example.com:443").is_err());
    // Found by h1_differential: the path of an absolute-form target is held to the same
    // bytes as an origin-form one (hyper refuses `>` there too).
    assert!(target_form(b"GET", b"http://a/x>y").is_err());
    assert!(target_form(b"GET", b"http://a?x\"y").is_err());
    assert!(target_form(b"GET", b"http://a/x?y#z").is_ok());
    assert_eq!(
        target_form(b"CONNECT", b"example.com:443")
            .unwrap_err()
            .status,
        405
    );
    assert_eq!(
        check_request(false, b"GET", Target::Asterisk, std::iter::empty())
            .unwrap_err()
            .status,
        400
    );
}

/// Found by fuzz/fuzz_targets/h1_differential.rs: bytes hyper's URI parser (the `http`
/// crate) refuses in a target (RFC 3986 allows none of them) are forwarded as they are by
/// the fast path, refused (400) by the general path. The shared rule must refuse at least
/// these: `<`, `>`, `` ` `` in the path; `"`, `<`, `>` in the query.
#[test]
fn origin_form_bytes_as_hyper_reads_them() {
    for bad in [
        &b"/a<b"[..],
        b"/a>b",
        b"/a`b",
        b"/a?x\"y",
        b"/a?x<y",
        b"/a?x>y",
    ] {
        assert_eq!(
            target_form(b"GET", bad).map_err(|r| r.status),
            Err(400),
            "{}",
            bad.escape_ascii()
        );
    }
}

/// Found by fuzz/fuzz_targets/h1_differential.rs: `GET /a#b` was routed and forwarded as
/// `/a#b` by the fast path, as `/a` by the general path (hyper drops the fragment, and
/// never shows it to us). Both now drop it: the same route, the same target sent on.
#[test]
fn a_fragment_in_the_target_is_dropped_as_hyper_drops_it() {
    assert_eq!(origin_form(b"/a#b").unwrap(), b"/a");
    assert_eq!(origin_form(b"/a?x#y").unwrap(), b"/a?x");
    assert_eq!(target_form(b"GET", b"/a#b"), Ok(Target::Origin));
}

/// Found by fuzz/fuzz_targets/h1_differential.rs: `Transfer-Encoding: chunked;x` is read as
/// chunked here (parameters ignored), by hyper as a final coding other than chunked (a
/// request refused, a response read to the close). RFC 9112 §7.1: chunked defines no
/// parameters, and their presence SHOULD be treated as an error.
#[test]
fn chunked_with_parameters_is_invalid() {
    for te in ["chunked;", "chunked;x=1", "gzip, chunked;q=1"] {
        assert_eq!(
            req(&[("Host", "a"), ("Transfer-Encoding", te)]).map_err(|r| r.status),
            Err(400),
            "{te}"
        );
        assert!(
            res(200, false, &[("Transfer-Encoding", te)]).is_err(),
            "{te}"
        );
    }
}

#[test]
fn upgrade_to_h2c_is_not_an_upgrade() {
    let h2c = req(&[
        ("Host", "a"),
        ("Connection", "Upgrade, HTTP2-Settings"),
        ("Upgrade", "h2c"),
    ])
    .unwrap();
    assert_eq!(h2c.upgrade, None);
    let ws = req(&[
        ("Host", "a"),
        ("Connection", "keep-alive, Upgrade"),
        ("Upgrade", "websocket"),
    ])
    .unwrap();
    assert_eq!(ws.upgrade, Some(&b"websocket"[..]));
    let unasked = req(&[("Host", "a"), ("Upgrade", "websocket")]).unwrap();
    assert_eq!(unasked.upgrade, None);
}

fn res(
    status: u16,
    head: bool,
    lines: &[(&'static str, &'static str)],
) -> Result<Response, &'static str> {
    check_response(
        false,
        status,
        head,
        lines.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
    )
}

#[test]
fn response_framing() {
    assert!(
        res(
            200,
            false,
            &[("Content-Length", "1"), ("Content-Length", "2")]
        )
        .is_err()
    );
    assert!(res(200, false, &[("Content-Length", "+1")]).is_err());
    assert!(res(200, false, &[("Transfer-Encoding", "gzip")]).is_err());
    let both = res(
        200,
        false,
        &[("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
    )
    .unwrap();
    assert_eq!((both.body, both.length), (ResponseBody::Chunked, None));
    let head = res(200, true, &[("Content-Length", "3")]).unwrap();
    assert_eq!((head.body, head.length), (ResponseBody::Empty, Some(3)));
    let no_content = res(204, false, &[("Content-Length", "3")]).unwrap();
    assert_eq!(
        (no_content.body, no_content.length),
        (ResponseBody::Empty, None)
    );
    let to_close = res(200, false, &[]).unwrap();
    assert_eq!(
        (to_close.body, to_close.close),
        (ResponseBody::ToClose, true)
    );
}

#[test]
fn origin_form_targets_as_hyper_reads_them() {
    assert_eq!(origin_form(b"/a?x#y").unwrap(), b"/a?x");
    assert_eq!(origin_form(b"/a{\"b\"}").unwrap(), b"/a{\"b\"}");
    for bad in [
        &b"/a<b"[..],
        b"/a>b",
        b"/a`b",
        b"/a b",
        b"/a\x7f",
        b"/a?x\"y",
        b"x",
    ] {
        assert!(origin_form(bad).is_err(), "{bad:?}");
    }
    assert!(origin_form(b"/a?x`y").is_ok());
}

proptest::proptest! {
    /// The fast path's target check and hyper's URI parser (the `http` crate) agree on
    /// every ASCII target, and keep the same part of it.
    #[test]
    fn origin_form_agrees_with_the_http_crate(
        target in proptest::collection::vec(0x20u8..0x7f, 0..40),
    ) {
        let mut target = target;
        target.insert(0, b'/');
        let ours = origin_form(&target).ok();
        let theirs = http::uri::PathAndQuery::try_from(&target[..]).ok();
        proptest::prop_assert_eq!(ours, theirs.as_ref().map(|p| p.as_str().as_bytes()));
    }

    /// Arbitrary header bytes never panic the checks, and an accepted length is the one
    /// every member spells.
    #[test]
    fn never_panics(
        value in proptest::collection::vec(0u8..=255, 0..40),
        name in proptest::sample::select(vec![
            "content-length", "transfer-encoding", "host", "connection", "upgrade", "expect",
        ]),
    ) {
        let headers = [(name.as_bytes(), &value[..]), (&b"Host"[..], &b"a"[..])];
        let _ = check_request(false, b"POST", Target::Origin, headers.into_iter());
        let _ = check_response(false, 200, false, headers.into_iter());
        if let Some(n) = content_length(&value) {
            let text = String::from_utf8(value.clone()).unwrap();
            proptest::prop_assert_eq!(text.trim().parse::<u64>().unwrap(), n);
        }
    }
}

/// An HTTP/2 request's framing towards an HTTP/1.1 backend: its Content-Length (copies must
/// agree), else chunked while the body is open, else none (a zero length for POST, PUT, PATCH).
#[test]
fn h2_request_framing_for_http1_backends() {
    let framing = |method: &[u8], lengths: &[&[u8]], ended| {
        h2_request_body(method, lengths.iter().copied(), ended)
    };
    assert_eq!(framing(b"POST", &[b"5"], false), Ok(RequestBody::Length(5)));
    assert_eq!(
        framing(b"PUT", &[b"5", b"5"], false),
        Ok(RequestBody::Length(5))
    );
    assert_eq!(
        framing(b"POST", &[b"5", b"6"], false).unwrap_err().status,
        400
    );
    assert_eq!(framing(b"POST", &[b"-1"], false).unwrap_err().status, 400);
    assert_eq!(framing(b"POST", &[], false), Ok(RequestBody::Chunked));
    assert_eq!(framing(b"GET", &[], false), Ok(RequestBody::Chunked));
    assert_eq!(framing(b"POST", &[], true), Ok(RequestBody::Length(0)));
    assert_eq!(framing(b"PATCH", &[], true), Ok(RequestBody::Length(0)));
    assert_eq!(framing(b"GET", &[], true), Ok(RequestBody::None));
    assert_eq!(framing(b"DELETE", &[], true), Ok(RequestBody::None));
}
