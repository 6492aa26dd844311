//! A backend's response head as `parse_head` reads it for an HTTP/2 client.

use super::*;

fn head_of(text: &[u8]) -> Result<Parsed, Failure> {
    parse_head(&mut BytesMut::from(text), false)
}

#[test]
fn fields_are_kept_as_sent_less_the_hop_by_hop_ones() {
    let Ok(Parsed::Done(head)) = head_of(
        b"HTTP/1.1 200 OK\r\nServer: a\r\nConnection: x-hop\r\nX-Hop: 1\r\nDATE: d\r\n\
          X-Two: 1\r\nx-two: 2\r\nContent-Length: 2\r\n\r\nok",
    ) else {
        panic!("parsed");
    };
    let fields: Vec<_> = head.raw.fields().collect();
    assert_eq!(
        fields,
        [
            (&b"Server"[..], &b"a"[..]),
            (b"DATE", b"d"),
            (b"X-Two", b"1"),
            (b"x-two", b"2"),
            (b"Content-Length", b"2"),
        ]
    );
    assert!(head.raw.dated);
    assert!(head.parts.headers.is_empty(), "nothing added");
    let mut map = HeaderMap::new();
    map.insert(header::SET_COOKIE, HeaderValue::from_static("added"));
    head.raw.into_map(&mut map);
    let order: Vec<_> = map
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    assert_eq!(order.first(), Some(&("server", &b"a"[..])));
    assert_eq!(order.last(), Some(&("set-cookie", &b"added"[..])));
    assert_eq!(map.get_all("x-two").iter().count(), 2);
}

#[test]
fn a_head_completed_past_64_kib_is_refused_like_one_still_partial_there() {
    let long = |n: usize| {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        head.resize(head.len() + n, b'a');
        head.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
        head
    };
    assert!(matches!(
        head_of(&long(MAX_RESPONSE_HEAD - 100)),
        Ok(Parsed::Done(_))
    ));
    assert!(matches!(
        head_of(&long(MAX_RESPONSE_HEAD)),
        Err(Failure::BadResponse(_))
    ));
    let partial = &long(MAX_RESPONSE_HEAD)[..MAX_RESPONSE_HEAD + 10];
    assert!(matches!(head_of(partial), Err(Failure::BadResponse(_))));
}
