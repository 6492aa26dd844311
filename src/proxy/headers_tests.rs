//! Header rules: Date, hop-by-hop fields, trace fields, and both codecs applying them alike.

use super::*;

#[test]
fn dates_are_imf_fixdates() {
    let text = |secs| String::from_utf8(imf_fixdate(secs).to_vec()).unwrap();
    assert_eq!(text(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(text(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(text(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(text(951_868_799), "Tue, 29 Feb 2000 23:59:59 GMT");
    assert_eq!(text(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    assert_eq!(text(4_107_542_399), "Sun, 28 Feb 2100 23:59:59 GMT");
    assert_eq!(text(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
    assert_eq!(text(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 GMT");
    assert_eq!(text(1_735_689_600), "Wed, 01 Jan 2025 00:00:00 GMT");
}

#[test]
fn a_date_is_added_once_and_an_existing_one_kept() {
    let mut headers = HeaderMap::new();
    add_date(&mut headers);
    let added = headers.get(header::DATE).unwrap().clone();
    assert_eq!(added.len(), IMF_FIXDATE_LEN);
    assert!(added.to_str().unwrap().ends_with(" GMT"));
    let mut kept = HeaderMap::new();
    kept.insert(
        header::DATE,
        HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
    );
    add_date(&mut kept);
    assert_eq!(kept.get_all(header::DATE).iter().count(), 1);
    assert_eq!(kept[header::DATE], "Sun, 06 Nov 1994 08:49:37 GMT");
    let mut line = Vec::new();
    write_date(&mut line);
    assert!(
        line.starts_with(b"date: ") && line.ends_with(b" GMT\r\n"),
        "{line:?}"
    );
}

#[test]
fn connection_never_removes_framing_or_host() {
    let named = ConnectionNamed::of(
        [&b"Content-Length, Transfer-Encoding, HOST, x-secret, close"[..]].into_iter(),
    );
    assert!(!named.contains(b"content-length"));
    assert!(!named.contains(b"transfer-encoding"));
    assert!(!named.contains(b"host"));
    assert!(named.contains(b"X-Secret"));
    let mut map = HeaderMap::new();
    map.insert(
        header::CONNECTION,
        HeaderValue::from_static("content-length, host, x-secret"),
    );
    map.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
    map.insert(header::HOST, HeaderValue::from_static("a"));
    map.insert("x-secret", HeaderValue::from_static("1"));
    strip_hop_by_hop(&mut map);
    assert!(map.contains_key(header::CONTENT_LENGTH) && map.contains_key(header::HOST));
    assert!(!map.contains_key("x-secret") && !map.contains_key(header::CONNECTION));
}

/// The one look at the names before any lookup: each hop-by-hop field alone is still
/// found and removed (Transfer-Encoding too, never Content-Length), and a map without one
/// is left as it is.
#[test]
fn each_hop_by_hop_field_alone_is_removed() {
    for name in HOP_BY_HOP {
        let mut map = HeaderMap::new();
        map.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
        map.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        map.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut map);
        assert!(!map.contains_key(name), "{name}");
        assert_eq!(map.len(), 2, "{name}");
    }
    let mut map = HeaderMap::new();
    map.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    map.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    let before = map.clone();
    strip_hop_by_hop(&mut map);
    assert_eq!(map, before);
}

/// Both trace fields leave a request whichever of them it has, the asking one's value
/// given back; a request with neither is left as it is.
#[test]
fn trace_fields_are_taken_whichever_is_present() {
    let mut map = HeaderMap::new();
    map.insert("Switchyard-Trace", HeaderValue::from_static("token"));
    map.insert("x-kept", HeaderValue::from_static("1"));
    assert_eq!(take_trace(&mut map).unwrap(), "token");
    assert_eq!(map.len(), 1);
    let mut map = HeaderMap::new();
    map.insert(
        "switchyard-trace-result",
        HeaderValue::from_static("forged"),
    );
    assert_eq!(take_trace(&mut map), None);
    assert!(map.is_empty());
    let mut map = HeaderMap::new();
    map.insert("x-kept", HeaderValue::from_static("1"));
    map.insert("switchyard-tracer", HeaderValue::from_static("1"));
    assert_eq!(take_trace(&mut map), None);
    assert_eq!(map.len(), 2);
}

#[test]
fn both_codecs_apply_the_same_rules() {
    let labels: std::collections::BTreeMap<String, String> = [
        ("SWITCHYARD_0_RESPONSE_HEADER_SET_X-Frame-Options", "DENY"),
        ("SWITCHYARD_0_RESPONSE_HEADER_ADD_X-Tag", "b"),
        ("SWITCHYARD_0_RESPONSE_HEADER_REMOVE", "Server"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let rules = crate::routing::edge::read(&labels, 0).0.response_headers;
    let received = [
        ("Server", "x"),
        ("X-Frame-Options", "SAMEORIGIN"),
        ("X-Tag", "a"),
    ];
    let mut bytes = Vec::new();
    for (name, value) in received {
        if !ruled_out(&rules, name.as_bytes()) {
            bytes.extend_from_slice(
                format!("{}: {value}\r\n", name.to_ascii_lowercase()).as_bytes(),
            );
        }
    }
    write_added(&mut bytes, &rules);
    let mut map = HeaderMap::new();
    for (name, value) in received {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static(value),
        );
    }
    apply_rules(&mut map, &rules);
    let mut from_map = Vec::new();
    for (name, value) in &map {
        from_map.extend_from_slice(format!("{name}: {}\r\n", value.to_str().unwrap()).as_bytes());
    }
    let sorted = |b: Vec<u8>| {
        let mut lines: Vec<String> = String::from_utf8(b)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(bytes.clone()), sorted(from_map));
    assert_eq!(
        sorted(bytes),
        ["x-frame-options: DENY", "x-tag: a", "x-tag: b"]
    );
}

#[test]
fn both_codecs_add_the_same_fields() {
    for (trusted, subject) in [
        (true, None),
        (false, None),
        (false, Some(&b"CN=client"[..])),
    ] {
        let forwarded = Forwarded {
            client: Client {
                ip: b"10.0.0.9",
                trusted,
                port: 8443,
                cert_subject: subject,
            },
            https: true,
            host: Some(b"shop.example.com"),
        };
        let mut bytes = Vec::new();
        let mut kept = Kept::default();
        assert!(kept.note(Field::ForwardedProto, b"http"));
        assert!(kept.note(Field::ForwardedPort, b"80"));
        assert!(!kept.note(Field::Other, b"x"));
        forwarded.write(&mut bytes, [&b"1.2.3.4"[..]].into_iter(), kept, true);
        let mut map = HeaderMap::new();
        map.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        map.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        map.insert(X_FORWARDED_PORT, HeaderValue::from_static("80"));
        map.insert(X_CLIENT_CERT_SUBJECT, HeaderValue::from_static("CN=forged"));
        map.insert(X_REQUEST_ID, HeaderValue::from_static("x"));
        forwarded.apply(&mut map);
        let mut from_map = Vec::new();
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_PORT,
            X_CLIENT_CERT_SUBJECT,
            X_FORWARDED_HOST,
        ] {
            let Some(value) = map.get(name) else { continue };
            from_map.extend_from_slice(name.as_bytes());
            from_map.extend_from_slice(b": ");
            from_map.extend_from_slice(value.as_bytes());
            from_map.extend_from_slice(b"\r\n");
        }
        assert_eq!(String::from_utf8(bytes), String::from_utf8(from_map));
        let xff = map[X_FORWARDED_FOR].to_str().unwrap();
        let proto = map[X_FORWARDED_PROTO].to_str().unwrap();
        let port = map[X_FORWARDED_PORT].to_str().unwrap();
        if trusted {
            assert_eq!((xff, proto, port), ("1.2.3.4, 10.0.0.9", "http", "80"));
        } else {
            assert_eq!((xff, proto, port), ("10.0.0.9", "https", "8443"));
        }
        assert_eq!(
            map.get(X_CLIENT_CERT_SUBJECT).map(|v| v.as_bytes()),
            subject,
            "a client's own copy never passes"
        );
    }
}

/// The admin session's pair is taken out of `Cookie` alike by the three writers (HTTP/1.1
/// bytes, HTTP/2 joined into one line, hyper's map); other pairs pass in order, and a field
/// left empty is not written.
#[test]
fn the_admin_session_cookie_never_passes_on_any_codec() {
    let cases: [(&[&str], Option<&str>); 6] = [
        (&["a=1; switchyard_session=0123; b=2"], Some("a=1; b=2")),
        (&["switchyard_session=0123"], None),
        (&[" Switchyard_Session =0123;a=1"], Some("a=1")),
        (&["a=switchyard_session"], Some("a=switchyard_session")),
        (&["a=1", "switchyard_session=0123", "b=2"], Some("a=1; b=2")),
        (&["theme=dark"], Some("theme=dark")),
    ];
    for (fields, kept) in cases {
        // HTTP/1.1 bytes: each field on its own line, as received.
        let mut bytes = Vec::new();
        for value in fields {
            if holds_session_cookie(value.as_bytes()) {
                write_cookie_line(&mut bytes, b"cookie", value.as_bytes());
            } else {
                bytes.extend_from_slice(format!("cookie: {value}\r\n").as_bytes());
            }
        }
        let lines: Vec<String> = String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| l.strip_prefix("cookie: ").unwrap().to_string())
            .collect();
        // HTTP/2 to an HTTP/1.1 backend: one joined line.
        let mut map = HeaderMap::new();
        for value in fields {
            map.append(header::COOKIE, HeaderValue::from_str(value).unwrap());
        }
        let forwarded = Forwarded {
            client: Client::untrusted(b"10.0.0.9", 80),
            https: false,
            host: None,
        };
        let mut joined = Vec::new();
        map.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        write_request_fields(&mut joined, &map, &forwarded);
        map.remove(header::EXPECT);
        let joined = String::from_utf8(joined).unwrap();
        assert!(!joined.contains("expect"), "{joined}");
        let joined = joined
            .lines()
            .find_map(|l| l.strip_prefix("cookie: "))
            .map(str::to_string);
        // Hyper's map.
        forwarded.apply(&mut map);
        let from_map: Vec<String> = map
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(joined.as_deref(), kept, "{fields:?}");
        assert_eq!(lines.join("; "), kept.unwrap_or(""), "{fields:?}");
        assert_eq!(from_map, lines, "{fields:?}");
    }
}

/// `Forwarded` and `X-Real-IP` pass from a trusted proxy and from no one else, and
/// `X-Forwarded-Port` is kept from a trusted proxy and replaced by the listener's port for
/// anyone else, on the bytes codec and on the map alike.
#[test]
fn client_address_claims_pass_only_from_a_trusted_proxy() {
    for trusted in [true, false] {
        let mut map = HeaderMap::new();
        map.insert("forwarded", HeaderValue::from_static("for=203.0.113.8"));
        map.insert("x-real-ip", HeaderValue::from_static("203.0.113.7"));
        map.insert("x-forwarded-port", HeaderValue::from_static("4443"));
        map.insert("x-other", HeaderValue::from_static("kept"));
        let forwarded = Forwarded {
            client: Client {
                trusted,
                ..Client::untrusted(b"10.0.0.9", 80)
            },
            https: false,
            host: None,
        };
        let mut bytes = Vec::new();
        write_request_fields(&mut bytes, &map, &forwarded);
        let bytes = String::from_utf8(bytes).unwrap();
        forwarded.apply(&mut map);
        for claim in CLIENT_CLAIMS {
            assert_eq!(bytes.contains(&format!("{claim}: ")), trusted, "{bytes}");
            assert_eq!(map.contains_key(claim), trusted, "{claim}");
        }
        assert!(bytes.contains("x-other: kept") && map.contains_key("x-other"));
        let port = if trusted { "4443" } else { "80" };
        assert!(
            bytes.contains(&format!("\r\nx-forwarded-port: {port}\r\n")),
            "{bytes}"
        );
        assert_eq!(bytes.matches("x-forwarded-port").count(), 1, "{bytes}");
        assert_eq!(map.get_all(X_FORWARDED_PORT).iter().count(), 1);
        assert_eq!(map[X_FORWARDED_PORT], port);
    }
}

mod names {
    use super::super::{HOP_BY_HOP, is_hop_by_hop, lowered, named, request_id};
    use proptest::prelude::*;

    /// The lowercase names the proxy looks for (the word compare takes those of eight bytes or
    /// more; 16 is a length without an overlapping last word).
    const NAMES: &[&str] = &[
        "te",
        "host",
        "cookie",
        "upgrade",
        "x-real-ip",
        "connection",
        "content-length",
        "x-forwarded-for",
        "x-forwarded-host",
        "proxy-connection",
        "transfer-encoding",
        "x-client-cert-subject",
        "switchyard-trace-result",
    ];

    #[test]
    fn a_word_lowers_exactly_the_capitals_of_every_byte() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut bytes = *b"\x00\x7f@[`{\x80\xff";
                bytes[at] = b;
                let mut want = bytes;
                want.make_ascii_lowercase();
                let got = lowered(u64::from_le_bytes(bytes)).to_le_bytes();
                assert_eq!(got, want, "{b:#x} at {at}");
            }
        }
    }

    proptest! {
        /// `named` is `eq_ignore_ascii_case` against a lowercase name (the proxy's, and any of
        /// 1 to 64 bytes): for names in any case with any byte changed, and for any bytes.
        #[test]
        fn named_is_the_case_blind_compare(
            lower in prop_oneof![
                proptest::sample::select(NAMES).prop_map(String::from),
                "[a-z0-9-]{1,64}",
            ],
            flips in proptest::collection::vec(any::<bool>(), 64),
            change in proptest::option::of((0usize..64, any::<u8>())),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let lower = lower.as_bytes();
            let mut name: Vec<u8> = lower
                .iter()
                .zip(&flips)
                .map(|(b, f)| if *f { b.to_ascii_uppercase() } else { *b })
                .collect();
            if let Some((at, byte)) = change {
                let at = at % name.len();
                name[at] = byte;
            }
            prop_assert_eq!(named(&name, lower), name.eq_ignore_ascii_case(lower));
            let noise = &noise[..noise.len().min(lower.len())];
            prop_assert_eq!(named(noise, lower), noise.eq_ignore_ascii_case(lower));
        }
    }

    proptest! {
        /// `is_hop_by_hop` is the case-blind lookup in `HOP_BY_HOP`: for its names in any case
        /// with any byte changed, and for the proxy's other names.
        #[test]
        fn is_hop_by_hop_is_the_case_blind_lookup(
            lower in prop_oneof![
                proptest::sample::select(&HOP_BY_HOP[..]).prop_map(String::from),
                proptest::sample::select(NAMES).prop_map(String::from),
                "[a-z-]{1,20}",
            ],
            flips in proptest::collection::vec(any::<bool>(), 64),
            change in proptest::option::of((0usize..64, any::<u8>())),
        ) {
            let mut name: Vec<u8> = lower
                .bytes()
                .zip(&flips)
                .map(|(b, f)| if *f { b.to_ascii_uppercase() } else { b })
                .collect();
            if let Some((at, byte)) = change {
                let at = at % name.len();
                name[at] = byte;
            }
            let listed = HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()));
            prop_assert_eq!(is_hop_by_hop(&name), listed);
        }
    }

    #[test]
    fn a_request_id_is_32_lowercase_hex_digits_and_new_each_time() {
        let ids: Vec<[u8; 32]> = (0..64).map(|_| request_id()).collect();
        for id in &ids {
            assert!(id.iter().all(|b| b"0123456789abcdef".contains(b)), "{id:?}");
        }
        // Every digit in every place, over 64 ids: the lookup covers all 256 bytes' pairs.
        for place in 0..32 {
            let seen: std::collections::HashSet<u8> = ids.iter().map(|id| id[place]).collect();
            assert!(seen.len() > 8, "place {place}: {seen:?}");
        }
        assert_eq!(
            ids.iter().collect::<std::collections::HashSet<_>>().len(),
            ids.len()
        );
    }
}
