//! The readings of a request's path that routing must agree with. Routes match path prefixes
//! (`HAPROXY_{n}_PATH`) on the path as the client sent it, and the backend gets that path; but
//! backends read paths in different ways: most decode escapes of unreserved characters
//! (`/%61dmin` is `/admin`), some merge runs of `/` (nginx), take `\` for `/` (WHATWG URL
//! parsers, Windows), drop `;` parameters from each segment (Tomcat, Jetty: `/admin;x/` is
//! `/admin/`), read a leading `//name` as a host (`new URL(path, base)`: `//x/admin` is
//! `/admin`), and resolve dot segments before or after decoding, or not at all. Were a route
//! chosen by any one reading, a path spelled for another would pass an `/admin` route that asks
//! for credentials (`HAPROXY_{n}_AUTH`) on its way to the host's catch-all, or the reverse.
//!
//! So, on a host whose routes depend on the path (`resolve`), a request is served only when
//! every reading takes the route the path as sent takes; else it is refused as ambiguous (400).
//! Dot segments in any spelling (`.`, `..`, `%2e%2e`, `..;x`, between `\`) are refused there
//! outright: where they move a path depends on the order a backend decodes and resolves in,
//! more orders than are worth listing, and browsers resolve them before they send. Escapes of
//! reserved characters (`%2F`, `%3B`) stay encoded in every reading: decoding them changes what
//! the path means. Case is not a reading: a backend that matches without case needs `-i` on the
//! guarded route.

/// How a path may read otherwise than as sent ([`read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// It has a dot segment in some spelling: refused where routes depend on the path.
    DotSegments,
    /// The other paths backends may read it as (each step below, alone and together).
    Paths(Vec<String>),
}

/// Whether anything in `path` (without its query) may read otherwise: a `%`, `\\`, `;`, `//`
/// or a segment starting with `.`. Almost every request has none: one pass, no allocation,
/// looked at before anything else is.
pub fn may_read_otherwise(path: &str) -> bool {
    reads_otherwise(path.as_bytes())
}

/// What `path` (without its query) may read as: `None` when nothing in it reads otherwise
/// ([`may_read_otherwise`]).
pub fn read(path: &str) -> Option<Reading> {
    if !reads_otherwise(path.as_bytes()) {
        return None;
    }
    let decoded = decode_unreserved(path.as_bytes());
    if has_dot_segment(&decoded) {
        return Some(Reading::DotSegments);
    }
    // The steps that can change this path (one that cannot would only repeat a reading).
    let separator = |b: &u8| *b == b'/' || *b == b'\\';
    let applicable = u8::from(decoded != path.as_bytes())
        | u8::from(path.contains('\\')) << 1
        | u8::from(path.as_bytes().iter().take(2).all(separator) && path.len() >= 2) << 2
        | u8::from(path.contains(';')) << 3
        // Dropping parameters can leave `//` behind (`/;/admin`).
        | u8::from(path.contains(';') || path.as_bytes().windows(2).any(|w| w.iter().all(separator)))
            << 4;
    // Every combination of them, in the order a parser would take them (decoding,
    // separators, host, parameters, merging); the path as sent is not among them.
    let mut readings: Vec<String> = Vec::new();
    for steps in (1u8..32).filter(|steps| steps & !applicable == 0) {
        let mut bytes = if steps & 1 != 0 {
            decoded.clone()
        } else {
            path.as_bytes().to_vec()
        };
        if steps & 2 != 0 {
            for b in &mut bytes {
                if *b == b'\\' {
                    *b = b'/';
                }
            }
        }
        if steps & 4 != 0 {
            bytes = without_host(&bytes).to_vec();
        }
        if steps & 8 != 0 {
            bytes = without_parameters(&bytes);
        }
        if steps & 16 != 0 {
            bytes = merged(&bytes);
        }
        let reading = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if reading != path && !readings.contains(&reading) {
            readings.push(reading);
        }
    }
    Some(Reading::Paths(readings))
}

fn reads_otherwise(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| {
        matches!(b, b'%' | b'\\' | b';')
            || (b == b'/' && matches!(path.get(i + 1), Some(b'/')))
            || (b == b'.' && (i == 0 || matches!(path[i - 1], b'/' | b'\\')))
    })
}

/// Whether a segment (between `/` or `\`, its `;` parameters aside) is `.` or `..`.
fn has_dot_segment(decoded: &[u8]) -> bool {
    decoded
        .split(|&b| b == b'/' || b == b'\\')
        .map(|segment| segment.split(|&b| b == b';').next().unwrap_or_default())
        .any(|name| name == b"." || name == b"..")
}

/// A leading `//name` (or `\\name` once read as `//`) taken as a host, as URL parsers take it:
/// what follows it, from its next `/`.
fn without_host(path: &[u8]) -> &[u8] {
    match path.strip_prefix(b"//") {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'/')
            .map_or(&b"/"[..], |at| &rest[at..]),
        None => path,
    }
}

/// Each segment's `;` parameters dropped.
fn without_parameters(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for (i, segment) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(segment.split(|&b| b == b';').next().unwrap_or_default());
    }
    out
}

/// Runs of `/` merged into one.
fn merged(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(path: &str) -> Vec<String> {
        match read(path) {
            Some(Reading::Paths(paths)) => paths,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn dot_segments_in_any_spelling_are_found() {
        for path in [
            "/x/../admin",
            "/admin/../x",
            "/./admin",
            "/admin/.",
            "/x/%2e%2e/admin",
            "/x/.%2E/admin",
            "/x/..;/admin",
            "/x/..;a=b/admin",
            "/x\\..\\admin",
            "/admin//..",
            "/%61dmin/..",
            "..",
        ] {
            assert_eq!(read(path), Some(Reading::DotSegments), "{path}");
        }
    }

    #[test]
    fn other_readings_take_each_step_alone_and_together() {
        let read = paths("/%61dmin");
        assert_eq!(read, ["/admin"]);
        assert!(paths("//admin").contains(&"/admin".to_string()));
        // A leading `//name` is a host to URL parsers.
        assert!(paths("//x/admin/secret").contains(&"/admin/secret".to_string()));
        assert!(paths("/\\x/admin").contains(&"/admin".to_string()));
        // `;` parameters dropped per segment (Tomcat, Jetty).
        assert!(paths("/admin;x=1/secret").contains(&"/admin/secret".to_string()));
        assert!(paths("/;/admin/secret").contains(&"/admin/secret".to_string()));
        // Together: decoded, parameters dropped, slashes merged.
        assert!(paths("/%61dmin;x//y").contains(&"/admin/y".to_string()));
        // Reserved escapes stay.
        assert_eq!(paths("/%2Fadmin"), Vec::<String>::new());
        assert_eq!(paths("/a%20b"), Vec::<String>::new());
        assert_eq!(paths("/100%"), Vec::<String>::new());
    }

    #[test]
    fn plain_paths_read_only_as_sent() {
        for plain in [
            "/",
            "/admin",
            "/api/v1/users",
            "/file.txt",
            "/a.b/c..d",
            "/é",
        ] {
            assert_eq!(read(plain), None, "{plain}");
        }
        // `.well-known` starts a segment with a dot: looked at, and read as sent.
        assert_eq!(read("/.well-known/x"), Some(Reading::Paths(vec![])));
    }

    /// Paths made of segments that mix plain text, dots, escapes of unreserved and reserved
    /// characters, backslashes, parameters and empty segments.
    fn any_path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let token = proptest::sample::select(vec![
            "a", "b", ".", "..", "%61", "%2e", "%2E", "%2F", "%20", "~", "%7e", "\\", ";", ";x=1",
        ]);
        let segment = proptest::collection::vec(token, 0..3).prop_map(|t| t.concat());
        proptest::collection::vec(segment, 0..8).prop_map(|s| format!("/{}", s.join("/")))
    }

    proptest::proptest! {
        /// A path without dot segments reads only as paths without dot segments, each from
        /// the root when the path is, none the path as sent, none twice.
        #[test]
        fn readings_have_no_dot_segments(path in any_path()) {
            let Some(Reading::Paths(readings)) = read(&path) else {
                return Ok(());
            };
            for (at, reading) in readings.iter().enumerate() {
                proptest::prop_assert!(read(reading) != Some(Reading::DotSegments), "{}", reading);
                proptest::prop_assert!(reading.starts_with('/'), "{}", reading);
                proptest::prop_assert!(reading != &path);
                proptest::prop_assert!(!readings[..at].contains(reading));
            }
        }

        /// Only the steps that can change a path are combined: the readings are those of
        /// every combination of all five steps.
        #[test]
        fn skipped_steps_lose_no_reading(path in any_path()) {
            let Some(Reading::Paths(mut readings)) = read(&path) else {
                return Ok(());
            };
            let decoded = decode_unreserved(path.as_bytes());
            let mut all: Vec<String> = Vec::new();
            for steps in 1u8..32 {
                let mut bytes = if steps & 1 != 0 { decoded.clone() } else { path.as_bytes().to_vec() };
                if steps & 2 != 0 {
                    bytes = bytes.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect();
                }
                if steps & 4 != 0 {
                    bytes = without_host(&bytes).to_vec();
                }
                if steps & 8 != 0 {
                    bytes = without_parameters(&bytes);
                }
                if steps & 16 != 0 {
                    bytes = merged(&bytes);
                }
                let reading = String::from_utf8_lossy(&bytes).into_owned();
                if reading != path && !all.contains(&reading) {
                    all.push(reading);
                }
            }
            readings.sort();
            all.sort();
            proptest::prop_assert_eq!(readings, all, "{}", path);
        }

        /// Any text: never a panic.
        #[test]
        fn any_text_is_read_without_panic(path in "\\PC{0,40}") {
            let _ = read(&path);
        }
    }
}
