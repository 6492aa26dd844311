//! The path a request is routed by. Routes match path prefixes (`HAPROXY_{n}_PATH`), and a
//! backend reads the path after decoding it: `/%61dmin`, `/x/../admin` and `//admin` are
//! `/admin` to most servers. Matched raw, such a path would miss an `/admin` route that asks
//! for credentials (`HAPROXY_{n}_AUTH`) and reach the host's catch-all route, whose backend
//! may serve `/admin` without them. So routes match the path normalized as RFC 3986 §6.2.2
//! says servers may (unreserved characters percent-decoded, dot segments removed) and with
//! runs of `/` merged, as nginx and most frameworks do; the backend still gets the path as
//! the client sent it. Reserved escapes (`%2F`) stay encoded: decoding them changes what the
//! path means.

use std::borrow::Cow;

/// `path` (without its query) as routes match it; borrowed when it holds nothing to
/// normalize (no `%`, no `.` segment, no `//`), which is almost every request.
pub fn normalized(path: &str) -> Cow<'_, str> {
    if !needs_normalizing(path.as_bytes()) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path.as_bytes());
    Cow::Owned(remove_dot_segments(&decoded))
}

fn needs_normalizing(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            || (b == b'/' && matches!(path.get(i + 1), Some(b'/')))
            || (b == b'.' && (i == 0 || path[i - 1] == b'/'))
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

/// Segments `.` and `..` resolved (RFC 3986 §5.2.4; `..` never climbs above the root) and
/// empty segments dropped (`//` merged); a trailing `/` (or a last `.`/`..` segment, which
/// names a directory) is kept.
fn remove_dot_segments(path: &[u8]) -> String {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut directory = false;
    for segment in path.split(|&b| b == b'/') {
        directory = true;
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            segment => {
                segments.push(segment);
                directory = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
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
    fn paths_are_matched_as_backends_read_them() {
        let cases = [
            ("/", "/"),
            ("/admin", "/admin"),
            ("/admin/", "/admin/"),
            ("/%61dmin", "/admin"),
            ("/%61DMIN", "/aDMIN"),
            ("/x/../admin", "/admin"),
            ("/x/%2e%2e/admin", "/admin"),
            ("/./admin", "/admin"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/../../admin", "/admin"),
            ("/admin/..", "/"),
            ("/admin/.", "/admin/"),
            ("/a/b/../c/./d", "/a/c/d"),
            ("/%2Fadmin", "/%2Fadmin"),
            ("/a%20b", "/a%20b"),
            ("/100%", "/100%"),
            ("/%zz/x", "/%zz/x"),
            ("/.well-known/x", "/.well-known/x"),
            ("/file.txt", "/file.txt"),
            ("/é/../x", "/x"),
        ];
        for (path, routed) in cases {
            assert_eq!(normalized(path), routed, "{path}");
        }
        assert!(matches!(normalized("/api/v1/users"), Cow::Borrowed(_)));
        assert!(matches!(normalized("/file.txt"), Cow::Borrowed(_)));
    }

    /// Paths made of segments that mix plain text, dots, escapes of unreserved and reserved
    /// characters, and empty segments.
    fn paths() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let token = proptest::sample::select(vec![
            "a", "b", ".", "..", "%61", "%2e", "%2E", "%2F", "%20", "~", "%7e",
        ]);
        let segment = proptest::collection::vec(token, 0..3).prop_map(|t| t.concat());
        proptest::collection::vec(segment, 0..8).prop_map(|s| format!("/{}", s.join("/")))
    }

    proptest::proptest! {
        /// Normalizing twice changes nothing more; what comes out starts with `/`, has no empty,
        /// `.` or `..` segment inside and no escape of an unreserved character.
        #[test]
        fn normalized_paths_are_stable_and_plain(path in paths()) {
            let once = normalized(&path).into_owned();
            let twice = normalized(&once);
            proptest::prop_assert_eq!(twice.as_ref(), once.as_str());
            proptest::prop_assert!(once.starts_with('/'));
            proptest::prop_assert!(!once.contains("//"));
            for segment in once.split('/') {
                proptest::prop_assert!(segment != "." && segment != "..", "{}", once);
            }
            let encoded_unreserved = once.as_bytes().windows(3).any(|w| {
                w[0] == b'%'
                    && matches!((hex(w[1]), hex(w[2])), (Some(h), Some(l)) if unreserved(h << 4 | l))
            });
            proptest::prop_assert!(!encoded_unreserved, "{}", once);
        }

        /// Any text: never a panic, always a path from the root.
        #[test]
        fn any_text_is_normalized_without_panic(path in "\\PC{0,40}") {
            let routed = normalized(&path);
            proptest::prop_assert!(routed.starts_with('/') || routed == path);
        }
    }
}
