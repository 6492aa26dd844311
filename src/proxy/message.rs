//! What makes an HTTP/1.1 message acceptable to the proxy (RFC 9110/9112), decided once for
//! both codecs: the fast path checks httparse's headers with it, the general path hyper's
//! `HeaderMap`. A request either passes with its framing, host and connection options read, or
//! is refused with the status to answer (and the connection closed); a backend's response
//! either passes with its framing or is a 502.
//!
//! The rules are strict on purpose: a proxy and the server behind it must agree on where every
//! message ends, so anything two parsers could read two ways is refused rather than forwarded.

use super::headers::named;

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// A request head that passed, as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub body: RequestBody,
    /// The authority the request is for: the absolute-form target's, else the Host header's
    /// (absent only for an HTTP/1.0 request without Host).
    pub host: Option<&'a [u8]>,
    /// `Connection: close`, or HTTP/1.0 without keep-alive.
    pub close: bool,
    /// The protocol the client asks to switch to (`Upgrade` named by `Connection`), `h2c`
    /// excepted: an h2c upgrade is never forwarded, the request goes on as HTTP/1.1.
    pub upgrade: Option<&'a [u8]>,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// Why a request is refused; the connection closes after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// The request target's form (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/path?query`
    Origin,
    /// `http://authority/path`: the authority.
    Absolute(&'a [u8]),
    /// `*`, for OPTIONS.
    Asterisk,
}

/// Reads a request target as sent on the request line (CONNECT's authority-form is refused:
/// this is not a forward proxy). An origin-form target must pass `origin_form`.
pub fn target_form<'a>(method: &[u8], target: &'a [u8]) -> Result<Target<'a>, Refusal> {
    if method == b"CONNECT" {
        return Err(refuse(405, "CONNECT is not served"));
    }
    if target.first() == Some(&b'/') {
        origin_form(target)?;
        return Ok(Target::Origin);
    }
    if target == b"*" {
        return Ok(Target::Asterisk);
    }
    let rest = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))
        .ok_or(refuse(400, "unsupported request target"))?;
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    // The path and query after the authority, byte by byte as an origin-form target's.
    match rest[end..].first() {
        Some(b'/') => {
            origin_form(&rest[end..])?;
        }
        Some(b'?') => {
            let query = &rest[end + 1..];
            let cut = query.iter().position(|&b| b == b'#').unwrap_or(query.len());
            if query[..cut]
                .iter()
                .any(|&b| query_byte(b) != UriByte::Valid)
            {
                return Err(refuse(400, "invalid request target"));
            }
        }
        _ => {}
    }
    Ok(Target::Absolute(&rest[..end]))
}

/// How a byte of an origin-form target is read: the `http` crate's classes (hyper's parser),
/// so that both codecs accept and refuse the same targets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UriByte {
    Valid,
    Query,
    Fragment,
    Invalid,
}

const fn path_byte(b: u8) -> UriByte {
    match b {
        b'?' => UriByte::Query,
        b'#' => UriByte::Fragment,
        0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E => UriByte::Valid,
        // Should be percent-encoded, but clients send them (JSON in paths); hyper takes them.
        b'"' | b'{' | b'}' => UriByte::Valid,
        // UTF-8: the target came through as text already.
        0x80..=0xFF => UriByte::Valid,
        _ => UriByte::Invalid,
    }
}

const fn query_byte(b: u8) -> UriByte {
    match b {
        b'#' => UriByte::Fragment,
        0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E | 0x80..=0xFF => UriByte::Valid,
        _ => UriByte::Invalid,
    }
}

/// An origin-form target (`/path?query`), checked byte by byte as hyper checks it; returns
/// the target without its fragment (a fragment is never sent on, as hyper drops it too).
pub fn origin_form(target: &[u8]) -> Result<&[u8], Refusal> {
    const INVALID: Refusal = refuse(400, "invalid request target");
    if target.first() != Some(&b'/') || target.len() > usize::from(u16::MAX - 1) {
        return Err(INVALID);
    }
    let mut in_query = false;
    for (i, &b) in target.iter().enumerate() {
        let class = if in_query {
            query_byte(b)
        } else {
            path_byte(b)
        };
        match class {
            UriByte::Valid => {}
            UriByte::Query => in_query = true,
            UriByte::Fragment => return Ok(&target[..i]),
            UriByte::Invalid => return Err(INVALID),
        }
    }
    Ok(target)
}

fn strip_prefix_ignore_case<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &bytes[prefix.len()..])
}

/// A request's method against its target, in every HTTP version (HTTP/2's codec checks the
/// pseudo-header fields' syntax, not this): CONNECT is not served — this is not a forward proxy,
/// and a backend's 2xx to it would make its connection a tunnel that must never go back to the
/// pool —, and an asterisk target is OPTIONS's alone.
pub fn check_method(method: &[u8], target: Target<'_>) -> Result<(), Refusal> {
    if method == b"CONNECT" {
        return Err(refuse(405, "CONNECT is not served"));
    }
    if target == Target::Asterisk && method != b"OPTIONS" {
        return Err(refuse(400, "asterisk target outside OPTIONS"));
    }
    Ok(())
}

/// Checks a request head: `http10` for HTTP/1.0, the method, the target's form, and every
/// header field as received (name, value), duplicates included.
// Inline: on the fast path its caller's iterator and result fold into it; as a call across
// codegen units it cost the request about 200 instructions more (callgrind, issue #21).
#[inline]
pub fn check_request<'a>(
    http10: bool,
    method: &[u8],
    target: Target<'a>,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Request<'a>, Refusal> {
    check_method(method, target)?;
    let mut length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    let (mut said_close, mut said_keep_alive) = (false, false);
    let mut connection_upgrade = false;
    let mut upgrade: Option<&[u8]> = None;
    let mut expect_continue = false;
    for (name, value) in headers {
        match name.len() {
            4 if named(name, b"host") => {
                hosts += 1;
                host = Some(value.trim_ascii());
            }
            14 if named(name, b"content-length") => {
                let n = content_length(value).ok_or(refuse(400, "invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(refuse(400, "conflicting Content-Length"));
                }
                length = Some(n);
            }
            17 if named(name, b"transfer-encoding") => {
                if http10 {
                    return Err(refuse(400, "Transfer-Encoding in HTTP/1.0"));
                }
                codings.add(value);
            }
            10 if named(name, b"connection") => {
                for token in tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        said_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        said_keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        connection_upgrade = true;
                    }
                }
            }
            7 if named(name, b"upgrade") => upgrade = Some(value.trim_ascii()),
            6 if named(name, b"expect") => {
                if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(refuse(417, "unsupported expectation"));
                }
            }
            _ => {}
        }
    }
    // HTTP/1.0 keeps the connection only when it says keep-alive; `close` wins.
    let close = said_close || (http10 && !said_keep_alive);
    let body = match (codings.state(), length) {
        (CodingState::Absent, None) => RequestBody::None,
        (CodingState::Absent, Some(n)) => RequestBody::Length(n),
        // RFC 9112 §6.1 lets a server drop Content-Length and close after the exchange; both
        // together only ever come from an attack or a broken client: refused.
        (_, Some(_)) => return Err(refuse(400, "both Content-Length and Transfer-Encoding")),
        (CodingState::Chunked, None) => RequestBody::Chunked,
        (CodingState::Invalid, None) => {
            return Err(refuse(400, "invalid Transfer-Encoding"));
        }
        (CodingState::Unsupported, None) => {
            return Err(refuse(501, "unsupported transfer coding"));
        }
    };
    if hosts > 1 {
        return Err(refuse(400, "more than one Host"));
    }
    if hosts == 0 && !http10 {
        return Err(refuse(400, "missing Host"));
    }
    if let Some(h) = host
        && !valid_authority(h)
    {
        return Err(refuse(400, "invalid Host"));
    }
    let host = match target {
        Target::Absolute(authority) => {
            if !valid_authority(authority) {
                return Err(refuse(400, "invalid authority in the request target"));
            }
            // RFC 9112 §3.2.2: the target's authority is the one that counts; a Host that says
            // otherwise means two parsers could route this request two ways.
            if host.is_some_and(|h| !h.eq_ignore_ascii_case(authority)) {
                return Err(refuse(400, "Host disagrees with the request target"));
            }
            Some(authority)
        }
        _ => host,
    };
    let upgrade = upgrade.filter(|u| {
        connection_upgrade && !u.is_empty() && !tokens(u).any(|t| t.eq_ignore_ascii_case(b"h2c"))
    });
    Ok(Request {
        body,
        host,
        close,
        upgrade,
        expect_continue,
    })
}

/// The members of a comma-separated header value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A Content-Length value: `1*DIGIT`, no sign, no inner spaces, no overflow. A list (`5, 5`),
/// which RFC 9110 §8.6 lets a recipient either collapse or reject, is rejected: hyper rejects
/// it too, and both codecs must draw the same line.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum CodingState {
    #[default]
    Absent,
    /// Exactly one coding, `chunked`, last.
    Chunked,
    /// Codings this proxy does not apply (gzip, …): 501.
    Unsupported,
    /// Empty, `chunked` not last or repeated: 400.
    Invalid,
}

/// The transfer codings of a message, over every Transfer-Encoding field in order.
#[derive(Default)]
struct Codings {
    seen: bool,
    malformed: bool,
    chunked: usize,
    last_chunked: bool,
    others: usize,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.seen = true;
        let mut any = false;
        for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            any = true;
            // A coding may carry parameters (`gzip;q=1`): its name is what counts here. chunked
            // defines none (RFC 9112 §7.1), and hyper reads `chunked;x` as another coding.
            let mut parts = coding.split(|&b| b == b';');
            let name = parts.next().unwrap_or(b"").trim_ascii();
            let has_parameters = parts.next().is_some();
            let chunked = name.eq_ignore_ascii_case(b"chunked");
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) || (chunked && has_parameters)
            {
                self.malformed = true;
            } else if chunked {
                self.chunked += 1;
                self.last_chunked = true;
                continue;
            } else {
                self.others += 1;
            }
            self.last_chunked = false;
        }
        self.malformed |= !any;
    }

    /// RFC 9112 §6.3: a request whose final coding is not chunked cannot be delimited (400,
    /// as hyper answers too); chunked applied twice is invalid; other codings before it are
    /// valid HTTP that this proxy does not apply (501).
    fn state(&self) -> CodingState {
        if !self.seen {
            CodingState::Absent
        } else if self.malformed || self.chunked != 1 || !self.last_chunked {
            CodingState::Invalid
        } else if self.others > 0 {
            CodingState::Unsupported
        } else {
            CodingState::Chunked
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A Host value or a target's authority: `host[:port]`, with `host` a DNS name, an IPv4
/// address or a bracketed IPv6 address; no userinfo, path, list or spaces.
pub fn valid_authority(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &value[1..close];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &value[close + 1..] {
            [] => (&value[..0], None),
            [b':', port @ ..] => (&value[..0], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    let host_ok = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    host_ok && port_ok && (value.first() == Some(&b'[') || !host.is_empty())
}

/// How an HTTP/2 request's body is framed on its way to an HTTP/1.1 backend (RFC 9113 §8.1.1):
/// by its Content-Length (the h2 codec holds the DATA frames to it; copies that disagree are
/// refused), else chunked while more may come. A request that ended with its head has none,
/// but a zero length where the method gives content a meaning, as hyper's client writes it.
pub fn h2_request_body<'a>(
    method: &[u8],
    lengths: impl Iterator<Item = &'a [u8]>,
    ended: bool,
) -> Result<RequestBody, Refusal> {
    let mut length = None;
    for value in lengths {
        let n = content_length(value).ok_or(Refusal {
            status: 400,
            reason: "invalid Content-Length",
        })?;
        if length.is_some_and(|l| l != n) {
            return Err(Refusal {
                status: 400,
                reason: "conflicting Content-Lengths",
            });
        }
        length = Some(n);
    }
    Ok(match length {
        Some(n) => RequestBody::Length(n),
        None if !ended => RequestBody::Chunked,
        None if matches!(method, b"POST" | b"PUT" | b"PATCH") => RequestBody::Length(0),
        None => RequestBody::None,
    })
}

/// How a backend's response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body, whatever the headers say (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Up to the backend's close.
    ToClose,
}

/// A backend's response head that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub body: ResponseBody,
    /// The Content-Length to forward (HEAD and 304 keep the one they describe); `None` when the
    /// body is chunked or delimited by the close.
    pub length: Option<u64>,
    /// The backend closes the connection after this response.
    pub close: bool,
}

/// Checks a backend's response head; `Err` is a 502, and the connection is not reused.
pub fn check_response<'a>(
    http10: bool,
    status: u16,
    head_request: bool,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Response, &'static str> {
    let mut length: Option<u64> = None;
    let mut codings = Codings::default();
    let mut close = http10;
    for (name, value) in headers {
        if named(name, b"content-length") {
            let n = content_length(value).ok_or("backend sent an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("backend sent conflicting Content-Lengths");
            }
            length = Some(n);
        } else if named(name, b"transfer-encoding") {
            codings.add(value);
        } else if named(name, b"connection") {
            for token in tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    close = false;
                }
            }
        }
    }
    if !(100..=999).contains(&status) {
        return Err("backend sent an invalid status");
    }
    // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
    if http10 && codings.seen {
        return Err("backend sent Transfer-Encoding in HTTP/1.0");
    }
    let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    let body = match codings.state() {
        _ if no_body => ResponseBody::Empty,
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3), which is then dropped.
        CodingState::Chunked => ResponseBody::Chunked,
        CodingState::Absent => length.map_or(ResponseBody::ToClose, ResponseBody::Length),
        CodingState::Unsupported | CodingState::Invalid => {
            return Err("backend sent a Transfer-Encoding this proxy cannot relay");
        }
    };
    let length = match body {
        ResponseBody::Length(n) => Some(n),
        // HEAD and 304 describe the representation; 1xx and 204 have no length at all.
        ResponseBody::Empty if status != 204 && !(100..200).contains(&status) => {
            if codings.state() == CodingState::Absent {
                length
            } else {
                None
            }
        }
        _ => None,
    };
    Ok(Response {
        body,
        length,
        close: close || body == ResponseBody::ToClose,
    })
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
