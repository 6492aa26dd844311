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
//! Lenient servers go further: some decode every escape, separators too (`%2F`, `%5C`, `%3B`:
//! Go's and Python's routers on the decoded path, Tomcat with `ALLOW_ENCODED_SLASH`, IIS,
//! many handwritten routers), old IIS decodes overlong UTF-8 and
//! `%u` escapes of any ASCII character (`%c0%af`, `%u0061`) and drops ASP.NET's cookieless
//! segments (`/(S(x))/admin`), and Windows drops a segment's trailing dots (`/admin./x` is
//! `/admin/x`) and trailing spaces.
//!
//! So, on a host whose routes depend on the path (`resolve`), a request is served only when
//! every reading takes the route the path as sent takes; else it is refused as ambiguous (400).
//! Dot segments in any spelling (`.`, `..`, `...`, `%2e%2e`, `%c0%ae`, `..;x`, between `\`,
//! `%2F` or `%5C`) are refused there outright: where they move a path depends on the order a
//! backend decodes and resolves in, more orders than are worth listing, and browsers resolve
//! them before they send. No reading decodes twice (`%25` stays). Case is not a reading: a backend that matches
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
    let applicable = u16::from(decoded != path.as_bytes())
        | u16::from(lenient.contains(&b'\\')) << 1
        | u16::from(lenient.iter().take(2).all(separator) && lenient.len() >= 2) << 2
        | u16::from(lenient.contains(&b';')) << 3
        // Dropping parameters can leave `//` behind (`/;/admin`).
        | u16::from(lenient.contains(&b';') || lenient.windows(2).any(|w| w.iter().all(separator)))
            << 4
        | u16::from(lenient != decoded) << 5
        | u16::from(has_trailing_dot(&lenient)) << 6
        | u16::from(lenient.split(separator).any(may_be_cookieless)) << 7;
    if applicable.count_ones() > MAX_STEPS_AT_ONCE {
        return Some(Reading::Tangled);
    }
    // Every combination of them (at most 15); the path as sent is not among them.
    let mut readings: Vec<String> = Vec::new();
    for steps in (1u16..STEPS).filter(|steps| steps & !applicable == 0) {
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

/// One past the last combination of the eight steps [`apply`] takes.
const STEPS: u16 = 1 << 8;

/// `path` read with `steps`, in the order a parser would take them (bits: 1 unreserved escapes
/// decoded, 32 escaped separators, overlong forms and `%u` escapes decoded, 2 `\` as `/`, 4 a
/// leading `//name` taken as a host, 8 parameters dropped, 16 `//` merged, 64 segments'
/// trailing dots dropped, 128 ASP.NET's cookieless segments dropped); `decoded` is
/// `decode_unreserved(path)`.
fn apply(path: &[u8], decoded: &[u8], steps: u16) -> Vec<u8> {
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
        bytes = without_host(&bytes);
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
    if steps & 128 != 0 {
        bytes = without_cookieless(&bytes);
    }
    bytes
}

fn reads_otherwise(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| {
        matches!(b, b'%' | b'\\' | b';' | b'(')
            || (b == b'/' && matches!(path.get(i + 1), Some(b'/')))
            || (b == b'.' && (i == 0 || matches!(path[i - 1], b'/' | b'\\')))
            || (matches!(b, b'.' | b' ') && matches!(path.get(i + 1), None | Some(b'/')))
    })
}

/// Segments' names: between `/` or `\`, their `;` parameters aside.
fn names(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(separator)
        .map(|segment| segment.split(|&b| b == b';').next().unwrap_or_default())
}

/// A path separator to some reading: `/`, or `\` (WHATWG, Windows).
fn separator(b: &u8) -> bool {
    *b == b'/' || *b == b'\\'
}

/// A character Windows drops from the end of a segment.
fn trailing(b: &u8) -> bool {
    *b == b'.' || *b == b' '
}

/// Each segment as it stands in `path`, and the separator that ends it (none for the last):
/// joined back, they are `path`.
fn segments(path: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    path.split_inclusive(separator)
        .map(|segment| match segment.split_last() {
            Some((last, name)) if separator(last) => (name, &segment[name.len()..]),
            _ => (segment, &segment[segment.len()..]),
        })
}

/// Whether a segment's name is dots only (`.`, `..`, and `...` or `.. `, which Windows reads
/// as `..` once trailing dots and spaces go).
fn has_dot_segment(decoded: &[u8]) -> bool {
    names(decoded).any(|name| name.first() == Some(&b'.') && name.iter().all(trailing))
}

/// Whether a segment, or its name once parameters are dropped, ends with a dot or a space
/// (Windows drops them).
fn has_trailing_dot(decoded: &[u8]) -> bool {
    let trails = |s: &[u8]| s.last().is_some_and(trailing);
    decoded.split(separator).any(trails) || names(decoded).any(trails)
}

/// Each segment's trailing dots and spaces dropped, as Windows drops them (`/admin./x` is
/// `/admin/x`).
fn without_trailing_dots(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for (name, separator) in segments(path) {
        let kept = name.len() - name.iter().rev().take_while(|b| trailing(b)).count();
        out.extend_from_slice(&name[..kept]);
        out.extend_from_slice(separator);
    }
    out
}

/// A leading `//name` taken as a host, as URL parsers take it (WHATWG's: any run of `/` and
/// `\` before the name, `///x/admin` is host `x`): what follows the name, from its next
/// separator.
fn without_host(path: &[u8]) -> Vec<u8> {
    if path.len() < 2 || !path[..2].iter().all(separator) {
        return path.to_vec();
    }
    let name = path
        .iter()
        .position(|b| !separator(b))
        .unwrap_or(path.len());
    let rest = &path[name..];
    let mut out = b"/".to_vec();
    if let Some(at) = rest.iter().position(separator) {
        out.extend_from_slice(&rest[at + 1..]);
    }
    out
}

/// Whether a segment is ASP.NET's cookieless state, `(S(…))` and kin, which IIS drops from the
/// path before anything reads it.
fn cookieless(segment: &[u8]) -> bool {
    may_be_cookieless(segment) && segment.ends_with(b"))")
}

/// Whether a segment may be [`cookieless`] once other steps are taken (its parameters or
/// trailing dots dropped).
fn may_be_cookieless(segment: &[u8]) -> bool {
    segment.len() >= 5
        && segment[0] == b'('
        && segment[1].is_ascii_alphabetic()
        && segment[2] == b'('
        && segment.windows(2).any(|w| w == b"))")
}

/// The cookieless segments dropped (`/(S(x))/admin` is `/admin`).
fn without_cookieless(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for (name, separator) in segments(path) {
        if !cookieless(name) {
            out.extend_from_slice(name);
            out.extend_from_slice(separator);
        }
    }
    out
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

/// The escape at the front of `at` (which starts with `%`) as lenient decoders take it, and
/// its length: any escaped ASCII character (`%2F`, `%5C`, `%3B`, `%40`), an overlong UTF-8
/// form of one (`%c0%af`, `%e0%80%ae`: 2, 3 or 4 bytes), or IIS's `%uXXXX` for one (and
/// `%u2215`, a division slash IIS reads as `/`); never `%` itself.
fn lenient_escape(at: &[u8]) -> Option<(u8, usize)> {
    let byte = |i: usize| -> Option<u8> {
        match at.get(i * 3..i * 3 + 3)? {
            [b'%', hi, lo] => Some(hex(*hi)? << 4 | hex(*lo)?),
            _ => None,
        }
    };
    let continuation = |i: usize| {
        byte(i)
            .filter(|b| b & 0xc0 == 0x80)
            .map(|b| u32::from(b & 0x3f))
    };
    if at.get(1).is_some_and(|b| b.eq_ignore_ascii_case(&b'u')) {
        let digits = at.get(2..6)?;
        let value = digits
            .iter()
            .try_fold(0u32, |v, &b| Some(v << 4 | u32::from(hex(b)?)))?;
        return match value {
            0..0x80 if value != u32::from(b'%') => Some((value as u8, 6)),
            0x2215 => Some((b'/', 6)),
            _ => None,
        };
    }
    let (value, len) = match byte(0)? {
        b @ 0..0x80 => (u32::from(b), 3),
        b @ (0xc0 | 0xc1) => (u32::from(b & 0x1f) << 6 | continuation(1)?, 6),
        0xe0 => (continuation(1)? << 6 | continuation(2)?, 9),
        0xf0 => (
            continuation(1)? << 12 | continuation(2)? << 6 | continuation(3)?,
            12,
        ),
        _ => return None,
    };
    // `%` decoded would make a new escape: no reading decodes twice.
    (value < 0x80 && value != u32::from(b'%')).then_some((value as u8, len))
}

/// The escapes [`lenient_escape`] takes decoded, the rest kept as they are.
fn decode_lenient(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%'
            && let Some((b, len)) = lenient_escape(&path[i..])
        {
            out.push(b);
            i += len;
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
            // Between escaped separators, in overlong forms, as `%u` escapes, and Windows' `...`.
            "/x%2f..%2fadmin",
            "/x%5C..%5Cadmin",
            "/x%c0%af..%c0%afadmin",
            "/x/%c0%ae%c0%ae/admin",
            "/x/%E0%80%AE./admin",
            "/x/%u002e%u002e/admin",
            "/x/.../admin",
            "/x/..%2fadmin",
            "/x/%u002E%u002e/admin",
            "/x/%f0%80%80%ae%f0%80%80%ae/admin",
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
        // Overlong and `%u` forms of any ASCII character.
        assert!(paths("/%u0061dmin").contains(&"/admin".to_string()));
        assert!(paths("/%c1%a1dmin").contains(&"/admin".to_string()));
        assert!(paths("/%e0%81%a1dmin").contains(&"/admin".to_string()));
        assert_eq!(paths("/%c3%a9t%c3%a9"), Vec::<String>::new());
        // Any run of separators before a host name (WHATWG).
        assert!(paths("///x/admin").contains(&"/admin".to_string()));
        assert!(paths("/\\/x/admin").contains(&"/admin".to_string()));
        // IIS's cookieless segments.
        assert!(paths("/(S(abc))/admin/x").contains(&"/admin/x".to_string()));
        assert_eq!(paths("/wiki/Foo_(bar)"), Vec::<String>::new());
        // Windows drops a segment's trailing dots.
        assert!(paths("/api./admin").contains(&"/api/admin".to_string()));
        assert!(paths("/admin.").contains(&"/admin".to_string()));
        // Any escaped ASCII character, for lenient decoders, but nothing decoded twice.
        assert_eq!(paths("/a%20b"), ["/a b"]);
        assert!(paths("/%40admin").contains(&"/@admin".to_string()));
        assert!(paths("/%u003b/admin").contains(&"/admin".to_string()));
        assert!(paths("/admin%20/x").contains(&"/admin/x".to_string()));
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
            "%7e", "\\", ";", ";x=1", "a.", "%u0061", "%c1%a1", "(S(x))", "", "%u003b", "%c0%bb",
            "%3B", "%20", "%40",
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
        /// every combination of all eight steps.
        #[test]
        fn skipped_steps_lose_no_reading(path in any_path()) {
            let Some(Reading::Paths(mut readings)) = read(&path) else {
                return Ok(());
            };
            let decoded = decode_unreserved(path.as_bytes());
            let mut all: Vec<String> = Vec::new();
            for steps in 1u16..STEPS {
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
