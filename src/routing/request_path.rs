//! The readings of a request's path that routing must agree with. Routes match path prefixes
//! (`HAPROXY_{n}_PATH`) on the path as the client sent it, and the backend gets that path; but
//! backends read paths in different ways. Most decode escapes of unreserved characters
//! (`/%61dmin` is `/admin`) and resolve dot segments, some as RFC 3986 §5.2.4 and WHATWG URL
//! parsers do (empty segments kept, and `\` a separator for the latter: `/admin//../x` is
//! `/admin/x`), some after merging runs of `/` as nginx does (`/admin//../x` is `/x`), and some
//! (Express, plain Node, most routers on raw targets) not at all. Were a route chosen by any
//! one reading, a path spelled for another would pass an `/admin` route that asks for
//! credentials (`HAPROXY_{n}_AUTH`) on its way to the host's catch-all, or the reverse. So a
//! path that reads otherwise ([`readings`]) is served only when every reading takes the same
//! route as the path as sent (`resolve`); else it is refused as ambiguous (400). Browsers
//! resolve dot segments before they send, so such paths come from hand-made requests. Escapes
//! of reserved characters (`%2F`) stay encoded in every reading: decoding them changes what
//! the path means.

/// The other readings of `path` (without its query): `None` when it has none, which is almost
/// every request (no `%`, `\`, `.` segment or `//`). Else the WHATWG / RFC 3986 reading
/// (unreserved escapes decoded, `\` a separator, dot segments removed, empty segments kept)
/// and nginx's (unreserved escapes decoded, runs of `/` merged, dot segments removed).
pub fn readings(path: &str) -> Option<[String; 2]> {
    if !reads_otherwise(path.as_bytes()) {
        return None;
    }
    let decoded = decode_unreserved(path.as_bytes());
    let whatwg: Vec<u8> = decoded
        .iter()
        .map(|&b| if b == b'\\' { b'/' } else { b })
        .collect();
    Some([
        remove_dot_segments(&whatwg, false),
        remove_dot_segments(&decoded, true),
    ])
}

fn reads_otherwise(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            || b == b'\\'
            || (b == b'/' && matches!(path.get(i + 1), Some(b'/')))
            || (b == b'.' && (i == 0 || matches!(path[i - 1], b'/' | b'\\')))
    })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `%XX` escapes of unreserved characters decoded (RFC 3986 §2.3: they mean the same
/// decoded), the rest kept as they are.
fn decode_unreserved(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                path.get(i + 1).copied().and_then(hex),
                path.get(i + 2).copied().and_then(hex),
            )
            && unreserved(hi << 4 | lo)
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(path[i]);
        i += 1;
    }
    out
}

/// Segments `.` and `..` resolved (RFC 3986 §5.2.4; `..` never climbs above the root), empty
/// segments dropped when `merge` (runs of `/` merged first, as nginx does) and kept otherwise;
/// a trailing `/` (or a last `.`/`..` segment, which names a directory) is kept.
fn remove_dot_segments(path: &[u8], merge: bool) -> String {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut directory = false;
    // The first piece is what comes before the leading `/`: nothing, for an origin-form path.
    let mut pieces = path.split(|&b| b == b'/');
    let first = pieces.next().unwrap_or_default();
    if !first.is_empty() {
        segments.push(first);
    }
    for segment in pieces {
        directory = true;
        match segment {
            b"." => {}
            b"" if merge => {}
            b".." => {
                segments.pop();
            }
            segment => {
                segments.push(segment);
                directory = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if directory || segments.is_empty() {
        out.push(b'/');
    }
    // Only ASCII bytes were decoded and only whole segments moved: what was UTF-8 still is.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_as_backends_read_them() {
        // (path, WHATWG / RFC 3986 reading, nginx's reading)
        let cases = [
            ("/%61dmin", "/admin", "/admin"),
            ("/%61DMIN", "/aDMIN", "/aDMIN"),
            ("/x/../admin", "/admin", "/admin"),
            ("/x/%2e%2e/admin", "/admin", "/admin"),
            ("/./admin", "/admin", "/admin"),
            ("//admin", "//admin", "/admin"),
            ("/a//b///c", "/a//b///c", "/a/b/c"),
            ("/../../admin", "/admin", "/admin"),
            ("/admin/..", "/", "/"),
            ("/admin/.", "/admin/", "/admin/"),
            ("/a/b/../c/./d", "/a/c/d", "/a/c/d"),
            ("/admin//../x", "/admin/x", "/x"),
            ("/admin//..", "/admin/", "/"),
            ("/x\\..\\admin", "/admin", "/x\\..\\admin"),
            ("/%2Fadmin", "/%2Fadmin", "/%2Fadmin"),
            ("/100%", "/100%", "/100%"),
            ("/%zz/x", "/%zz/x", "/%zz/x"),
            ("/é/../x", "/x", "/x"),
        ];
        for (path, whatwg, nginx) in cases {
            let [a, b] = readings(path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!((a.as_str(), b.as_str()), (whatwg, nginx), "{path}");
        }
        for plain in [
            "/",
            "/admin",
            "/api/v1/users",
            "/file.txt",
            "/.well-known/x",
            "/a.b/c..d",
        ] {
            let read = readings(plain);
            // `.well-known` starts a segment with a dot: read, and read the same.
            assert!(
                read.as_ref()
                    .is_none_or(|r| r.iter().all(|reading| reading == plain)),
                "{plain}: {read:?}"
            );
        }
        assert!(readings("/api/v1/users").is_none());
    }

    /// Paths made of segments that mix plain text, dots, escapes of unreserved and reserved
    /// characters, backslashes and empty segments.
    fn paths() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let token = proptest::sample::select(vec![
            "a", "b", ".", "..", "%61", "%2e", "%2E", "%2F", "%20", "~", "%7e", "\\",
        ]);
        let segment = proptest::collection::vec(token, 0..3).prop_map(|t| t.concat());
        proptest::collection::vec(segment, 0..8).prop_map(|s| format!("/{}", s.join("/")))
    }

    proptest::proptest! {
        /// Reading a reading again changes nothing more; each starts with `/` and has no `.`
        /// or `..` segment and no escape of an unreserved character; nginx's has no `//`.
        #[test]
        fn readings_are_stable_and_plain(path in paths()) {
            let Some(read) = readings(&path) else {
                return Ok(());
            };
            for (at, once) in read.iter().enumerate() {
                if let Some(again) = readings(once) {
                    proptest::prop_assert_eq!(&again[at], once);
                }
                proptest::prop_assert!(once.starts_with('/'));
                let separators: &[char] = if at == 0 { &['/', '\\'] } else { &['/'] };
                for segment in once.split(separators) {
                    proptest::prop_assert!(segment != "." && segment != "..", "{}", once);
                }
                let encoded_unreserved = once.as_bytes().windows(3).any(|w| {
                    w[0] == b'%'
                        && matches!((hex(w[1]), hex(w[2])), (Some(h), Some(l)) if unreserved(h << 4 | l))
                });
                proptest::prop_assert!(!encoded_unreserved, "{}", once);
            }
            proptest::prop_assert!(!read[1].contains("//"), "{}", read[1]);
        }

        /// Any text: never a panic.
        #[test]
        fn any_text_is_read_without_panic(path in "\\PC{0,40}") {
            let _ = readings(&path);
        }
    }
}
