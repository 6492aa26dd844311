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
//! Lenient servers go further: some decode escaped separators (`%2F`, `%5C`: Tomcat with
//! `ALLOW_ENCODED_SLASH`, IIS, many handwritten routers), old IIS decodes overlong UTF-8 and
//! `%u` escapes (`%c0%af`, `%u002e`), and Windows drops a segment's trailing dots (`/admin./x`
//! is `/admin/x`).
//!
//! So, on a host whose routes depend on the path (`resolve`), a request is served only when
//! every reading takes the route the path as sent takes; else it is refused as ambiguous (400).
//! Dot segments in any spelling (`.`, `..`, `...`, `%2e%2e`, `%c0%ae`, `..;x`, between `\`,
//! `%2F` or `%5C`) are refused there outright: where they move a path depends on the order a
//! backend decodes and resolves in, more orders than are worth listing, and browsers resolve
//! them before they send. Other escapes of reserved characters (`%3B`, `%25`) stay encoded in
//! every reading, and no reading decodes twice. Case is not a reading: a backend that matches
//! without case needs `-i` on the guarded route.

/// How a path may read otherwise than as sent ([`read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// It has a dot segment in some spelling: refused where routes depend on the path.
    DotSegments,
    /// More than [`MAX_STEPS_AT_ONCE`] kinds of marks, or longer than [`MAX_READ_PATH`]:
    /// refused where routes depend on the path, as reading it every way would cost too many
    /// passes over it.
    Tangled,
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
    if path.len() > MAX_READ_PATH {
        return Some(Reading::Tangled);
    }
    let decoded = decode_unreserved(path.as_bytes());
    // Everything any reading decodes: where dot segments are looked for.
    let lenient = decode_lenient(&decoded);
    if has_dot_segment(&lenient) {
        return Some(Reading::DotSegments);
    }
    // The steps that can change this path (one that cannot would only repeat a reading), each
    // judged on the path with everything decoded, of which every step's input is a part.
    let separator = |b: &u8| *b == b'/' || *b == b'\\';
    let applicable = u8::from(decoded != path.as_bytes())
        | u8::from(lenient.contains(&b'\\')) << 1
        | u8::from(lenient.iter().take(2).all(separator) && lenient.len() >= 2) << 2
        | u8::from(path.contains(';')) << 3
        // Dropping parameters can leave `//` behind (`/;/admin`).
        | u8::from(path.contains(';') || lenient.windows(2).any(|w| w.iter().all(separator)))
            << 4
        | u8::from(lenient != decoded) << 5
        | u8::from(has_trailing_dot(&lenient)) << 6;
    if applicable.count_ones() > MAX_STEPS_AT_ONCE {
        return Some(Reading::Tangled);
    }
    // Every combination of them (at most 15); the path as sent is not among them.
    let mut readings: Vec<String> = Vec::new();
    for steps in (1u8..STEPS).filter(|steps| steps & !applicable == 0) {
        let reading = String::from_utf8(apply(path.as_bytes(), &decoded, steps))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if reading != path && !readings.contains(&reading) {
            readings.push(reading);
        }
    }
    Some(Reading::Paths(readings))
}

/// The most kinds of marks (steps that can change it) a path is read with: four make 15
/// readings, seven would make 127, each a few passes over a path of up to the head's size,
/// a cost a client could ask for with every request. Real paths carry one or two kinds (an
/// escape, a `;jsessionid`, a `//`).
pub const MAX_STEPS_AT_ONCE: u32 = 4;

/// The longest path that may read otherwise that is read (each reading is a few passes over
/// it); longer ones are refused where routes depend on the path. Common servers refuse a
/// request line past 8 KiB anyway (Apache's `LimitRequestLine`, nginx's default buffers).
pub const MAX_READ_PATH: usize = 8 * 1024;

/// One past the last combination of the seven steps [`apply`] takes.
const STEPS: u8 = 1 << 7;

/// `path` read with `steps`, in the order a parser would take them (bits: 1 unreserved escapes
/// decoded, 32 escaped separators and overlong forms decoded, 2 `\` as `/`, 4 a leading
/// `//name` taken as a host, 8 parameters dropped, 16 `//` merged, 64 segments' trailing dots
/// dropped); `decoded` is `decode_unreserved(path)`.
fn apply(path: &[u8], decoded: &[u8], steps: u8) -> Vec<u8> {
    let mut bytes = if steps & 1 != 0 {
        decoded.to_vec()
    } else {
        path.to_vec()
    };
    if steps & 32 != 0 {
        bytes = decode_lenient(&bytes);
    }
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
    if steps & 64 != 0 {
        bytes = without_trailing_dots(&bytes);
    }
    bytes
}

fn reads_otherwise(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| {
        matches!(b, b'%' | b'\\' | b';')
            || (b == b'/' && matches!(path.get(i + 1), Some(b'/')))
            || (b == b'.'
                && (i == 0
                    || matches!(path[i - 1], b'/' | b'\\')
                    || matches!(path.get(i + 1), None | Some(b'/'))))
    })
}

/// Segments' names: between `/` or `\`, their `;` parameters aside.
fn names(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/' || b == b'\\')
        .map(|segment| segment.split(|&b| b == b';').next().unwrap_or_default())
}

/// Whether a segment's name is dots only (`.`, `..`, and `...`, which Windows reads as `..`
/// once trailing dots go).
fn has_dot_segment(decoded: &[u8]) -> bool {
    names(decoded).any(|name| !name.is_empty() && name.iter().all(|&b| b == b'.'))
}

/// Whether a segment, or its name once parameters are dropped, ends with a dot (Windows
/// drops it).
fn has_trailing_dot(decoded: &[u8]) -> bool {
    decoded
        .split(|&b| b == b'/' || b == b'\\')
        .any(|segment| segment.last() == Some(&b'.'))
        || names(decoded).any(|name| name.last() == Some(&b'.'))
}

/// Each segment's trailing dots dropped, as Windows drops them (`/admin./x` is `/admin/x`).
fn without_trailing_dots(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for segment in path.split_inclusive(|&b| b == b'/' || b == b'\\') {
        let (name, separator) = match segment.split_last() {
            Some((&last, name)) if last == b'/' || last == b'\\' => (name, Some(last)),
            _ => (segment, None),
        };
        let kept = name.len() - name.iter().rev().take_while(|&&b| b == b'.').count();
        out.extend_from_slice(&name[..kept]);
        out.extend(separator);
    }
    out
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

/// Escapes lenient decoders take for `/`, `\` and `.`: escaped separators, overlong UTF-8
/// (each character's 2-, 3- and 4-byte forms) and IIS's `%u` escapes. Matched without case.
const LENIENT: [(&[u8], u8); 15] = [
    (b"%2f", b'/'),
    (b"%5c", b'\\'),
    (b"%c0%af", b'/'),
    (b"%e0%80%af", b'/'),
    (b"%f0%80%80%af", b'/'),
    (b"%c1%9c", b'\\'),
    (b"%e0%81%9c", b'\\'),
    (b"%f0%80%81%9c", b'\\'),
    (b"%c0%ae", b'.'),
    (b"%e0%80%ae", b'.'),
    (b"%f0%80%80%ae", b'.'),
    (b"%u002f", b'/'),
    (b"%u005c", b'\\'),
    (b"%u002e", b'.'),
    (b"%u2215", b'/'),
];

/// The escapes in [`LENIENT`] decoded, the rest kept as they are.
fn decode_lenient(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    'bytes: while i < path.len() {
        // Every escape in the list starts `%2`, `%5`, `%c`, `%e`, `%f` or `%u`.
        if path[i] == b'%'
            && path.get(i + 1).is_some_and(|b| {
                matches!(
                    b.to_ascii_lowercase(),
                    b'2' | b'5' | b'c' | b'e' | b'f' | b'u'
                )
            })
        {
            for (escape, b) in LENIENT {
                if path
                    .get(i..i + escape.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(escape))
                {
                    out.push(b);
                    i += escape.len();
                    continue 'bytes;
                }
            }
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
            // Between escaped separators, in overlong forms, as `%u` escapes, and Windows' `...`.
            "/x%2f..%2fadmin",
            "/x%5C..%5Cadmin",
            "/x%c0%af..%c0%afadmin",
            "/x/%c0%ae%c0%ae/admin",
            "/x/%E0%80%AE./admin",
            "/x/%u002e%u002e/admin",
            "/x/.../admin",
            "/x/..%2fadmin",
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
        // Escaped separators, for lenient decoders.
        assert!(paths("/%2Fadmin").contains(&"/admin".to_string()));
        assert!(paths("/%5cadmin/x").contains(&"/admin/x".to_string()));
        assert!(paths("/x%c0%afadmin").contains(&"/x/admin".to_string()));
        assert!(paths("/x%u2215admin").contains(&"/x/admin".to_string()));
        // Windows drops a segment's trailing dots.
        assert!(paths("/api./admin").contains(&"/api/admin".to_string()));
        assert!(paths("/admin.").contains(&"/admin".to_string()));
        // Other reserved escapes stay, and nothing is decoded twice.
        assert_eq!(paths("/a%20b"), Vec::<String>::new());
        assert_eq!(paths("/100%"), Vec::<String>::new());
        assert_eq!(paths("/%252fadmin"), Vec::<String>::new());
    }

    #[test]
    fn a_long_path_that_may_read_otherwise_is_tangled() {
        let long = format!("/%61{}", "b".repeat(MAX_READ_PATH));
        assert_eq!(read(&long), Some(Reading::Tangled));
        // Without marks, any length reads as sent.
        assert_eq!(read(&long.replace("%61", "a")), None);
    }

    #[test]
    fn a_path_with_more_than_four_kinds_of_marks_is_tangled() {
        // Escapes, a backslash, parameters, `//`, a trailing dot.
        assert_eq!(read("/%61\\b;x//c./d"), Some(Reading::Tangled));
        assert!(matches!(read("/%61\\b;x//c/d"), Some(Reading::Paths(_))));
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
            "/v1.2/x",
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
            "a", "b", ".", "..", "%61", "%2e", "%2E", "%2F", "%5c", "%c0%ae", "%u002f", "%20", "~",
            "%7e", "\\", ";", ";x=1", "a.",
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
        /// every combination of all seven steps.
        #[test]
        fn skipped_steps_lose_no_reading(path in any_path()) {
            let Some(Reading::Paths(mut readings)) = read(&path) else {
                return Ok(());
            };
            let decoded = decode_unreserved(path.as_bytes());
            let mut all: Vec<String> = Vec::new();
            for steps in 1u8..STEPS {
                let reading = String::from_utf8_lossy(&apply(path.as_bytes(), &decoded, steps))
                    .into_owned();
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
