//! The header rules of the proxy, in one place: which fields are hop-by-hop and never
//! forwarded, which of them `Connection` may add to, what the proxy adds to a request
//! (`X-Forwarded-For/Proto/Port/Host`, `X-Request-Id`) and to a response (HSTS, and `Date` when it
//! has none: RFC 9110 §6.6.1), what it never lets through (the admin dashboard's session
//! cookie; client-address fields from anyone but a trusted proxy), and an app's own
//! header rules (`SWITCHYARD_{n}_REQUEST_HEADER_*`, `_RESPONSE_HEADER_*`, [`Rules`]). Each rule is
//! decided here once; the fast path writes it as bytes and the general path on hyper's
//! `HeaderMap`, with the two writers side by side below so they cannot drift apart.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

mod cookie;
mod date;
pub use cookie::{
    holds_session_cookie, strip_session_cookie, write_cookie_line, write_cookie_pairs,
};
pub use date::{DATE_LINE_LEN, add_date, write_date};
#[cfg(test)]
use date::{IMF_FIXDATE_LEN, imf_fixdate};

/// Fields that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Fields `Connection` can never remove: the message's framing and the field it is routed by.
/// A request that lists `Content-Length` in `Connection` and had it removed would leave its
/// body to be read by the backend as the next request (request smuggling).
const NEVER_REMOVED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
/// The port the client connected to, as marathon-lb's HAProxy sets it (`set-header
/// X-Forwarded-Port %[dst_port]`): backends build absolute URLs from it.
pub const X_FORWARDED_PORT: &str = "x-forwarded-port";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";
pub const X_REQUEST_ID: &str = "x-request-id";
/// The subject of the client certificate verified on an mTLS vhost; a client's own copy is
/// always dropped, so a backend can believe it.
pub const X_CLIENT_CERT_SUBJECT: &str = "x-client-cert-subject";
/// Asks for a request's trace (`proxy::trace`), its value the admin token. Never forwarded:
/// a backend never sees it, whatever its value.
pub const SWITCHYARD_TRACE: &str = "switchyard-trace";
/// Fields that name the client or the hop which the proxy does not write itself: kept from a
/// trusted proxy (`http.trusted_proxies`), dropped from anyone else, as a backend that logs or
/// trusts them would believe a forged address.
pub const CLIENT_CLAIMS: [&str; 2] = ["forwarded", "x-real-ip"];
/// The trace of a request in its response. Only the proxy writes it: a client's copy on a
/// request and a backend's on a response are dropped.
pub const SWITCHYARD_TRACE_RESULT: &str = "switchyard-trace-result";
/// marathon-lb's HSTS value (six months).
pub const HSTS: &str = "max-age=15768000";
/// The HSTS header line as the fast path writes it.
pub const HSTS_LINE: &[u8] = b"strict-transport-security: max-age=15768000\r\n";

/// Whether a field's name is `lower` (a lowercase name), ASCII case aside: the length rejects
/// most mismatches, then the first letter, then names of eight bytes or more are compared a
/// word at a time (this runs for several names of every field of every message).
#[inline]
pub fn named(name: &[u8], lower: &[u8]) -> bool {
    debug_assert!(!lower.iter().any(u8::is_ascii_uppercase), "{lower:?}");
    name.len() == lower.len()
        && name.first().map(|b| b | 0x20) == lower.first().copied()
        && if name.len() < 8 {
            name.eq_ignore_ascii_case(lower)
        } else {
            same_lowered(name, lower)
        }
}

/// [`named`] for names of eight bytes or more: each word of `name` lowered and compared with
/// `lower`'s, the last one overlapping the one before.
fn same_lowered(name: &[u8], lower: &[u8]) -> bool {
    let word =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"));
    let last = name.len() - 8;
    let mut at = 0;
    while at < last {
        if lowered(word(name, at)) != word(lower, at) {
            return false;
        }
        at += 8;
    }
    lowered(word(name, last)) == word(lower, last)
}

/// A word's ASCII capitals lowered, its other bytes as they are, without a branch per byte:
/// the high bit of each byte under 0x80 marks whether it is at least `A`, and again whether it
/// is at least `[`; the bytes where the two differ are the capitals, which gain 0x20.
fn lowered(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // At most 0x7f in each byte, so adding at most 0x3f carries into no other byte.
    let low = x & (0x7f * ONES);
    let from_a = low + (0x80 - u64::from(b'A')) * ONES;
    let from_bracket = low + (0x80 - u64::from(b'[')) * ONES;
    let capitals = (from_a ^ from_bracket) & !x & (0x80 * ONES);
    x | (capitals >> 2)
}

/// Whether a field is one of [`HOP_BY_HOP`]: by length first, then [`named`] (a `Connection`
/// value's every token is asked).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |h: &str| named(name, h.as_bytes());
    match name.len() {
        2 => is("te"),
        7 => is("trailer") || is("upgrade"),
        10 => is("connection") || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        _ => false,
    }
}

/// Whether a field is one of the framing fields the proxy writes itself (from what
/// `message` decided), never copied as received.
pub fn is_framing(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding")
}

/// Whether `Connection` may name this field to have it removed.
fn connection_may_remove(name: &[u8]) -> bool {
    !NEVER_REMOVED
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Fields the proxy replaces with its own: a client's copies are dropped.
pub fn is_replaced(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(X_FORWARDED_PROTO.as_bytes())
        || name.eq_ignore_ascii_case(X_FORWARDED_HOST.as_bytes())
        || name.eq_ignore_ascii_case(X_CLIENT_CERT_SUBJECT.as_bytes())
}

/// The extra fields a message's `Connection` names for removal (past the hop-by-hop ones);
/// kept on the stack, as usually there are none.
pub struct ConnectionNamed<'a> {
    named: [&'a [u8]; 8],
    count: usize,
}

impl<'a> ConnectionNamed<'a> {
    pub fn of(values: impl Iterator<Item = &'a [u8]>) -> ConnectionNamed<'a> {
        let mut this = ConnectionNamed {
            named: [&[]; 8],
            count: 0,
        };
        for value in values {
            for token in super::message::tokens(value) {
                if !is_hop_by_hop(token)
                    && connection_may_remove(token)
                    && !token.eq_ignore_ascii_case(b"close")
                    && this.count < this.named.len()
                {
                    this.named[this.count] = token;
                    this.count += 1;
                }
            }
        }
        this
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.named[..self.count]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// What the proxy does with a received field, decided in one look at its name (by length
/// first: most fields are none of these and cost one comparison).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Copied as it is.
    Other,
    /// Hop-by-hop: dropped.
    HopByHop,
    /// Content-Length / Transfer-Encoding: written by the proxy from what `message` decided.
    Framing,
    /// X-Forwarded-For: appended to (from a trusted proxy), else replaced.
    ForwardedFor,
    /// X-Forwarded-Proto: kept from a trusted proxy, else replaced (requests only).
    ForwardedProto,
    /// X-Forwarded-Port: kept from a trusted proxy, else replaced (requests only).
    ForwardedPort,
    /// X-Forwarded-Host, X-Client-Cert-Subject: replaced by the proxy's (requests only).
    Replaced,
    /// X-Request-Id: kept, and then none is added.
    RequestId,
    /// Switchyard-Trace (requests: read by `trace`) and Switchyard-Trace-Result (the proxy's
    /// own): dropped either way.
    Trace,
    /// Cookie: copied without the admin session's pair ([`holds_session_cookie`]).
    Cookie,
    /// Forwarded, X-Real-IP ([`CLIENT_CLAIMS`]): kept from a trusted proxy only (requests
    /// only).
    ClientClaim,
}

pub fn classify(name: &[u8]) -> Field {
    let is = |h: &str| named(name, h.as_bytes());
    match name.len() {
        2 if is("te") => Field::HopByHop,
        7 if is("trailer") || is("upgrade") => Field::HopByHop,
        10 if is("connection") || is("keep-alive") => Field::HopByHop,
        16 if is("proxy-connection") => Field::HopByHop,
        14 if is("content-length") => Field::Framing,
        17 if is("transfer-encoding") => Field::Framing,
        15 if is(X_FORWARDED_FOR) => Field::ForwardedFor,
        16 if is(X_FORWARDED_HOST) => Field::Replaced,
        16 if is(SWITCHYARD_TRACE) => Field::Trace,
        23 if is(SWITCHYARD_TRACE_RESULT) => Field::Trace,
        17 if is(X_FORWARDED_PROTO) => Field::ForwardedProto,
        21 if is(X_CLIENT_CERT_SUBJECT) => Field::Replaced,
        12 if is(X_REQUEST_ID) => Field::RequestId,
        6 if is("cookie") => Field::Cookie,
        9 if is(CLIENT_CLAIMS[0]) || is(CLIENT_CLAIMS[1]) => Field::ClientClaim,
        16 if is(X_FORWARDED_PORT) => Field::ForwardedPort,
        _ => Field::Other,
    }
}

/// A fresh request id: 32 hex digits (a random 128-bit number, two digits per byte).
pub fn request_id() -> [u8; 32] {
    // Each byte's two digits, looked up at once (one per request: half the cost of two).
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0u8; 2]; 256];
        let mut byte = 0;
        while byte < 256 {
            pairs[byte] = [HEX[byte >> 4], HEX[byte & 0xf]];
            byte += 1;
        }
        pairs
    };
    let mut id = [0u8; 32];
    for (pair, byte) in id.chunks_exact_mut(2).zip(fastrand::u128(..).to_le_bytes()) {
        pair.copy_from_slice(&PAIRS[usize::from(byte)]);
    }
    id
}

/// Hyper codec: a client's [`CLIENT_CLAIMS`] removed unless it is a trusted proxy.
fn strip_client_claims(headers: &mut HeaderMap, trusted: bool) {
    if !trusted {
        for name in CLIENT_CLAIMS {
            headers.remove(name);
        }
    }
}

/// Who sent a request, as the header rules need it; decided once per connection.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    /// The client's address (the PROXY header's, where one was read), as text.
    pub ip: &'a [u8],
    /// Its address is one of `http.trusted_proxies`: its X-Forwarded-For is extended and its
    /// X-Forwarded-Proto and X-Forwarded-Port kept; anyone else's are replaced.
    pub trusted: bool,
    /// The port it connected to (the listener's), for X-Forwarded-Port.
    pub port: u16,
    /// The subject of its verified client certificate (mTLS vhosts).
    pub cert_subject: Option<&'a [u8]>,
}

impl<'a> Client<'a> {
    /// A client that is not a trusted proxy and showed no certificate, connected to `port`.
    pub fn untrusted(ip: &'a [u8], port: u16) -> Client<'a> {
        Client {
            ip,
            trusted: false,
            port,
            cert_subject: None,
        }
    }
}

/// `n` in decimal digits (a field value the proxy writes: a length, a port).
pub fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The client's X-Forwarded-Proto and X-Forwarded-Port, noted while its fields are copied:
/// kept from a trusted proxy, each when it was sent once (two copies are not one claim: the
/// proxy's own is written instead).
#[derive(Debug, Clone, Copy, Default)]
pub struct Kept<'v> {
    proto: Once<'v>,
    port: Once<'v>,
}

impl<'v> Kept<'v> {
    /// Notes the field if it is one of the two; returns whether it was.
    #[inline]
    pub fn note(&mut self, field: Field, value: &'v [u8]) -> bool {
        match field {
            Field::ForwardedProto => self.proto.note(value),
            Field::ForwardedPort => self.port.note(value),
            _ => return false,
        }
        true
    }
}

#[derive(Debug, Clone, Copy, Default)]
enum Once<'v> {
    #[default]
    Never,
    One(&'v [u8]),
    More,
}

impl<'v> Once<'v> {
    fn note(&mut self, value: &'v [u8]) {
        *self = match self {
            Once::Never => Once::One(value),
            _ => Once::More,
        };
    }

    fn value(self) -> Option<&'v [u8]> {
        match self {
            Once::One(value) => Some(value),
            _ => None,
        }
    }
}

/// What the proxy adds to a request on its way to a backend.
pub struct Forwarded<'a> {
    pub client: Client<'a>,
    pub https: bool,
    /// The authority the request was for.
    pub host: Option<&'a [u8]>,
}

impl Forwarded<'_> {
    fn proto(&self) -> &'static [u8] {
        if self.https { b"https" } else { b"http" }
    }

    /// Bytes codec: the added lines, after the fields copied from the request.
    /// `existing_for` are the client's `X-Forwarded-For` values (appended to, in order, when
    /// it is trusted), `kept` its `X-Forwarded-Proto` and `X-Forwarded-Port` when each was
    /// sent once (kept when trusted); `has_request_id` whether the client sent one (kept).
    // Inline, as `message::check_request`: a call across codegen units cost the fast path's
    // request more than its body.
    #[inline]
    pub fn write<'v>(
        &self,
        out: &mut Vec<u8>,
        existing_for: impl Iterator<Item = &'v [u8]>,
        kept: Kept<'_>,
        has_request_id: bool,
    ) {
        out.extend_from_slice(b"x-forwarded-for: ");
        if self.client.trusted {
            for existing in existing_for {
                out.extend_from_slice(existing);
                out.extend_from_slice(b", ");
            }
        }
        out.extend_from_slice(self.client.ip);
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        match kept.proto.value().filter(|_| self.client.trusted) {
            Some(proto) => out.extend_from_slice(proto),
            None => out.extend_from_slice(self.proto()),
        }
        out.extend_from_slice(b"\r\nx-forwarded-port: ");
        match kept.port.value().filter(|_| self.client.trusted) {
            Some(port) => out.extend_from_slice(port),
            None => write_decimal(out, u64::from(self.client.port)),
        }
        out.extend_from_slice(b"\r\n");
        if let Some(subject) = self.client.cert_subject {
            out.extend_from_slice(X_CLIENT_CERT_SUBJECT.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(subject);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(host) = self.host {
            out.extend_from_slice(b"x-forwarded-host: ");
            out.extend_from_slice(host);
            out.extend_from_slice(b"\r\n");
        }
        if !has_request_id {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(&request_id());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Hyper codec: the same fields set on a request's map (hop-by-hop already removed), the
    /// admin session's cookie and an untrusted client's address claims removed, as the bytes
    /// codecs leave them out.
    pub fn apply(&self, headers: &mut HeaderMap) {
        strip_session_cookie(headers);
        strip_client_claims(headers, self.client.trusted);
        let xff = HeaderName::from_static(X_FORWARDED_FOR);
        let mut value = Vec::with_capacity(48);
        if self.client.trusted {
            for existing in headers.get_all(&xff) {
                value.extend_from_slice(existing.as_bytes());
                value.extend_from_slice(b", ");
            }
        }
        value.extend_from_slice(self.client.ip);
        match HeaderValue::from_bytes(&value) {
            Ok(value) => {
                headers.insert(xff, value);
            }
            Err(_) => {
                headers.remove(&xff);
            }
        }
        // A trusted proxy's X-Forwarded-Proto and -Port are kept when sent once (`Kept`).
        let trusted = self.client.trusted;
        let proto = HeaderValue::from_static(if self.https { "https" } else { "http" });
        for (name, ours) in [
            (X_FORWARDED_PROTO, proto),
            (X_FORWARDED_PORT, HeaderValue::from(self.client.port)),
        ] {
            let name = HeaderName::from_static(name);
            if !(trusted && headers.get_all(&name).iter().count() == 1) {
                headers.insert(name, ours);
            }
        }
        headers.remove(X_CLIENT_CERT_SUBJECT);
        if let Some(subject) = self
            .client
            .cert_subject
            .and_then(|s| HeaderValue::from_bytes(s).ok())
        {
            headers.insert(HeaderName::from_static(X_CLIENT_CERT_SUBJECT), subject);
        }
        headers.remove(X_FORWARDED_HOST);
        if let Some(host) = self.host.and_then(|h| HeaderValue::from_bytes(h).ok()) {
            headers.insert(HeaderName::from_static(X_FORWARDED_HOST), host);
        }
        if !headers.contains_key(X_REQUEST_ID) {
            headers.insert(
                HeaderName::from_static(X_REQUEST_ID),
                HeaderValue::from_bytes(&request_id()).expect("hex is a valid header value"),
            );
        }
    }
}

/// An app's header rules for one direction (`routing::edge` reads and checks them: never a
/// hop-by-hop, framing or routing field, nor one the proxy adds itself). They apply to the
/// fields the message arrived with: the named fields are removed (a `SET` field too), then the
/// added ones are written. The proxy's own fields are untouched by them.
pub use crate::routing::edge::HeaderRules as Rules;

/// No rules.
pub static NO_RULES: Rules = Rules {
    remove: Vec::new(),
    add: Vec::new(),
    lines: Vec::new(),
};

/// Bytes codecs: whether a received field is dropped by the rules.
#[inline]
pub fn ruled_out(rules: &Rules, name: &[u8]) -> bool {
    !rules.remove.is_empty() && rules.removes(name)
}

/// Bytes codecs: the rules' added fields, as lines.
#[inline]
pub fn write_added(out: &mut Vec<u8>, rules: &Rules) {
    out.extend_from_slice(&rules.lines);
}

/// Hyper codec: the rules applied to a map (the same fields as [`ruled_out`] and
/// [`write_added`] give the bytes codec).
pub fn apply_rules(headers: &mut HeaderMap, rules: &Rules) {
    for name in &rules.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &rules.add {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
}

/// Hyper codec: removes the hop-by-hop fields and those `Connection` names (never the framing
/// fields or Host).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one look at each name (its length first, `classify`) instead
    // of a lookup per hop-by-hop name.
    let hop_by_hop = |name: &[u8]| match classify(name) {
        Field::HopByHop => true,
        Field::Framing => name.len() == b"transfer-encoding".len(),
        _ => false,
    };
    if !headers.keys().any(|n| hop_by_hop(n.as_str().as_bytes())) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = {
            let named = ConnectionNamed::of(
                headers
                    .get_all(header::CONNECTION)
                    .iter()
                    .map(HeaderValue::as_bytes),
            );
            named.named[..named.count]
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n).ok())
                .collect()
        };
        for name in &listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Hyper codec: removes both trace fields from a request and gives back what it asked with
/// (the bytes codec drops them in its one pass over the fields, [`Field::Trace`]).
pub fn take_trace(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // Most requests carry neither: one look at each name instead of two hashed lookups.
    if !headers
        .keys()
        .any(|n| classify(n.as_str().as_bytes()) == Field::Trace)
    {
        return None;
    }
    headers.remove(&TRACE_RESULT_NAME);
    headers.remove(&TRACE_NAME)
}

/// Hyper codec: a backend's trace field is not the proxy's: dropped from its response.
pub fn strip_trace_result(headers: &mut HeaderMap) {
    headers.remove(&TRACE_RESULT_NAME);
}

// As names, so that a lookup does not parse them first.
const TRACE_NAME: HeaderName = HeaderName::from_static(SWITCHYARD_TRACE);
const TRACE_RESULT_NAME: HeaderName = HeaderName::from_static(SWITCHYARD_TRACE_RESULT);

/// Hyper codec: the request's framing as `message` decided it, the received fields replaced
/// (hyper frames the body it sends from these).
pub fn set_request_length(headers: &mut HeaderMap, body: super::message::RequestBody) {
    headers.remove(header::CONTENT_LENGTH);
    if let super::message::RequestBody::Length(n) = body {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// Bytes codec for a map (an HTTP/2 request going to an HTTP/1.1 backend, hop-by-hop fields
/// and the client's Host already removed, the app's rules applied): the fields as lines, then
/// Host (the routed authority, unless a rewrite set one) and the forwarding fields as
/// [`Forwarded::write`] writes them for the fast path, the client's copies treated alike. The
/// framing fields are left out (the caller writes them from `message`'s decision); the Cookie
/// fields HTTP/2 may split are joined into one (RFC 9113 §8.2.3), without the admin session's.
/// `Expect` is left out: the body is relayed as it comes whatever the backend says, and a
/// backend asked to would answer `100 Continue` first, which the relay would take for its
/// early answer and then wait for the final one while the backend waits for the body.
pub fn write_request_fields(out: &mut Vec<u8>, headers: &HeaderMap, forwarded: &Forwarded<'_>) {
    let (mut cookie_written, mut request_id, mut any_for) = (false, false, false);
    let (mut kept, mut host) = (Kept::default(), false);
    for (name, value) in headers {
        let bytes = name.as_str().as_bytes();
        let field = classify(bytes);
        if kept.note(field, value.as_bytes()) {
            continue;
        }
        match field {
            Field::Other if *name == header::EXPECT => continue,
            // Noted here, not looked up again after the loop.
            Field::Other => host |= *name == header::HOST,
            Field::RequestId => request_id = true,
            Field::ForwardedFor => {
                any_for = true;
                continue;
            }
            // All of them in one line, where the first was.
            Field::Cookie => {
                if !std::mem::replace(&mut cookie_written, true) {
                    let start = out.len();
                    out.extend_from_slice(b"cookie: ");
                    let mut joined = false;
                    for value in headers.get_all(header::COOKIE) {
                        joined = write_cookie_pairs(out, value.as_bytes(), joined);
                    }
                    if joined {
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.truncate(start);
                    }
                }
                continue;
            }
            Field::ClientClaim if forwarded.client.trusted => {}
            Field::HopByHop
            | Field::Framing
            | Field::ForwardedProto
            | Field::ForwardedPort
            | Field::Replaced
            | Field::Trace
            | Field::ClientClaim => continue,
        }
        out.extend_from_slice(bytes);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !host && let Some(host) = forwarded.host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    // Looked up only when there is one to keep.
    let existing = (any_for && forwarded.client.trusted)
        .then(|| headers.get_all(X_FORWARDED_FOR))
        .into_iter()
        .flatten()
        .map(HeaderValue::as_bytes);
    forwarded.write(out, existing, kept, request_id);
}

/// Hyper codec: HSTS on a response.
pub fn add_hsts(headers: &mut HeaderMap) {
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
