//! The byte-level parts of the HTTP/1.1 fast path (`h1`): the chunked-body scanner that finds
//! where a relayed chunked message ends, request and response heads read with `message`'s
//! rules and written with `headers`' rules, small fixed responses, and the stream wrapper that hands already-read bytes to hyper when a
//! connection leaves the fast path.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::headers::{self, ConnectionNamed};
use super::message;

/// Longest trailer section accepted after a chunked body.
const MAX_TRAILERS: usize = 64 * 1024;
/// Most chunk-extension bytes accepted in one body (hyper's limit is of the same order).
const MAX_EXTENSIONS: usize = 16 * 1024;

/// Follows a chunked body as it is relayed, byte for byte, to find its end (RFC 9112 §7.1).
/// As strict as hyper's decoder, so that both codecs relay the same bodies: CRLF line ends,
/// only whitespace or an extension after a chunk size, trailer fields shaped `name: value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    Size {
        value: u64,
        digits: u8,
        ext: usize,
    },
    /// Whitespace after the size: only more of it, an extension, or the line end may follow.
    SizeLws {
        value: u64,
        ext: usize,
    },
    Extension {
        value: u64,
        ext: usize,
    },
    SizeLf {
        value: u64,
        ext: usize,
    },
    Data {
        left: u64,
        ext: usize,
    },
    DataCr {
        ext: usize,
    },
    DataLf {
        ext: usize,
    },
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart {
        total: usize,
    },
    TrailerName {
        total: usize,
    },
    TrailerValue {
        total: usize,
    },
    TrailerLf {
        end: bool,
        total: usize,
    },
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::Size {
            value: 0,
            digits: 0,
            ext: 0,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct BadChunk;

impl Chunked {
    /// Scans `bytes`; `Ok(Some(n))` when the body ended after its first `n` bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            if let Chunked::Data { left, ext } = *self {
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                *self = if take == left {
                    Chunked::DataCr { ext }
                } else {
                    Chunked::Data {
                        left: left - take,
                        ext,
                    }
                };
                continue;
            }
            let b = bytes[i];
            i += 1;
            *self = match *self {
                Chunked::Size { value, digits, ext } => match b {
                    b'\r' if digits > 0 => Chunked::SizeLf { value, ext },
                    b' ' | b'\t' if digits > 0 => Chunked::SizeLws { value, ext },
                    b';' if digits > 0 => Chunked::Extension { value, ext },
                    _ => {
                        let digit = (b as char).to_digit(16).ok_or(BadChunk)? as u64;
                        if digits >= 15 {
                            return Err(BadChunk);
                        }
                        Chunked::Size {
                            value: value * 16 + digit,
                            digits: digits + 1,
                            ext,
                        }
                    }
                },
                Chunked::SizeLws { value, ext } => match b {
                    b' ' | b'\t' => Chunked::SizeLws { value, ext },
                    b';' => Chunked::Extension { value, ext },
                    b'\r' => Chunked::SizeLf { value, ext },
                    _ => return Err(BadChunk),
                },
                Chunked::Extension { value, ext } => match b {
                    b'\r' => Chunked::SizeLf { value, ext },
                    b'\n' | 0 => return Err(BadChunk),
                    _ if ext >= MAX_EXTENSIONS => return Err(BadChunk),
                    _ => Chunked::Extension {
                        value,
                        ext: ext + 1,
                    },
                },
                Chunked::SizeLf { value, ext } if b == b'\n' => {
                    if value == 0 {
                        Chunked::TrailerStart { total: 0 }
                    } else {
                        Chunked::Data { left: value, ext }
                    }
                }
                Chunked::DataCr { ext } if b == b'\r' => Chunked::DataLf { ext },
                Chunked::DataLf { ext } if b == b'\n' => Chunked::Size {
                    value: 0,
                    digits: 0,
                    ext,
                },
                Chunked::TrailerStart { total } => match b {
                    b'\r' => Chunked::TrailerLf { end: true, total },
                    _ if is_tchar(b) => Chunked::TrailerName { total: total + 1 },
                    _ => return Err(BadChunk),
                },
                Chunked::TrailerName { total } => match b {
                    b':' => Chunked::TrailerValue { total: total + 1 },
                    _ if is_tchar(b) => Chunked::TrailerName { total: total + 1 },
                    _ => return Err(BadChunk),
                },
                Chunked::TrailerValue { total } => match b {
                    b'\r' => Chunked::TrailerLf { end: false, total },
                    b'\n' | 0 => return Err(BadChunk),
                    _ => Chunked::TrailerValue { total: total + 1 },
                },
                Chunked::TrailerLf { end, total } if b == b'\n' => {
                    if end {
                        Chunked::Done
                    } else {
                        Chunked::TrailerStart { total }
                    }
                }
                _ => return Err(BadChunk),
            };
            if let Chunked::TrailerName { total } | Chunked::TrailerValue { total } = *self
                && total > MAX_TRAILERS
            {
                return Err(BadChunk);
            }
            if *self == Chunked::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How many bytes of empty lines (CRLF, or a bare LF) come before a request line: they are
/// ignored (RFC 9112 §2.2). A bare CR is not an empty line, and fails the head's parse, as it
/// does in hyper.
pub fn empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match &buf[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [b'\n', ..] => at += 1,
            _ => return at,
        }
    }
}

/// Where a request head ends (after its blank line, CRLF or bare LF), once it has arrived.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + i + 1;
        match buf.get(at..at + 2) {
            Some([b'\n', _]) | Some([b'\n']) => return Some(at + 1),
            Some([b'\r', b'\n']) => return Some(at + 2),
            None if buf.get(at) == Some(&b'\n') => return Some(at + 1),
            _ => from = at,
        }
    }
    None
}

/// A whole short response, for answers the proxy gives itself (dated, as an origin's).
pub fn plain_response(status: u16, reason: &str, text: &str, close: bool) -> Vec<u8> {
    let connection = if close { "connection: close\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\n{connection}",
        text.len()
    )
    .into_bytes();
    headers::write_date(&mut out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
    out
}

/// A stream whose first bytes were already read: they are served again before the rest.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }

    /// The bytes not yet served, and the stream (an upgrade's tunnel takes its socket back).
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request head the fast path can forward as it is: its checked facts, and the target.
pub struct Head<'a> {
    pub method: &'a str,
    /// The origin-form target (path and query).
    pub path: &'a str,
    pub checked: message::Request<'a>,
}

/// The header fields of a parsed head, as `message` reads them.
pub fn fields<'s, 'b>(
    headers: &'s [httparse::Header<'b>],
) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + 's {
    headers.iter().map(|h| (h.name.as_bytes(), h.value))
}

/// `s` up to the first `byte`, or all of it. A byte loop: paths are short, and `str`'s
/// char searcher spends more setting up its search than this spends on a usual path.
pub(super) fn before(s: &str, byte: u8) -> &str {
    match s.bytes().position(|b| b == byte) {
        Some(i) => &s[..i],
        None => s,
    }
}

/// Checks a parsed request head against `message`'s rules. `Ok(None)`: an acceptable request
/// the fast path leaves to the general path (HTTP/1.0, absolute-form, a chunked body, an
/// upgrade, `Expect`).
pub fn read_head<'a>(
    req: &httparse::Request<'_, 'a>,
) -> Result<Option<Head<'a>>, message::Refusal> {
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(message::Refusal {
            status: 400,
            reason: "malformed request",
        });
    };
    let target = message::target_form(method.as_bytes(), path.as_bytes())?;
    // A fragment is not part of what is routed or sent on (hyper drops it too).
    let path = before(path, b'#');
    let checked =
        message::check_request(version == 0, method.as_bytes(), target, fields(req.headers))?;
    let plain = version == 1
        && target == message::Target::Origin
        && matches!(
            checked.body,
            message::RequestBody::None | message::RequestBody::Length(_)
        )
        && checked.upgrade.is_none()
        && !checked.expect_continue;
    Ok(plain.then_some(Head {
        method,
        path,
        checked,
    }))
}

/// The request head for the backend: the received fields but the hop-by-hop ones (and those
/// `Connection` names) and the framing, then the framing as checked, then the forwarding
/// fields (`headers`' rules).
pub fn write_request_head(
    out: &mut Vec<u8>,
    req: &httparse::Request<'_, '_>,
    head: &Head,
    client: &headers::Client<'_>,
    https: bool,
) {
    write_request_head_with(out, req, head, client, https, &headers::NO_RULES);
}

/// [`write_request_head`] with an app's request header rules. Returns the value of the
/// request's `Switchyard-Trace` field, if it had one (never written: see `trace`).
pub fn write_request_head_with<'h>(
    out: &mut Vec<u8>,
    req: &httparse::Request<'_, 'h>,
    head: &Head,
    client: &headers::Client<'_>,
    https: bool,
    rules: &headers::Rules,
) -> Option<&'h [u8]> {
    let named = ConnectionNamed::of(
        req.headers
            .iter()
            .filter(|h| headers::named(h.name.as_bytes(), b"connection"))
            .map(|h| h.value),
    );
    // Room for the whole head at once: a connection's first head would otherwise grow the
    // buffer by doubling, a reallocation every few fields.
    out.reserve(head_size(req.headers) + head.method.len() + head.path.len() + 256);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut request_id = false;
    // The client's X-Forwarded-For fields (any), X-Forwarded-Proto and -Port (kept only when
    // sent once), noted in the one pass over the fields.
    let (mut any_for, mut kept) = (false, headers::Kept::default());
    let mut trace = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let field = headers::classify(name);
        // One `Connection` names is one hop's: not kept (hyper's path drops it first).
        if matches!(
            field,
            headers::Field::ForwardedProto | headers::Field::ForwardedPort
        ) {
            if !named.contains(name) {
                kept.note(field, h.value);
            }
            continue;
        }
        match field {
            headers::Field::Other if !named.contains(name) && !headers::ruled_out(rules, name) => {}
            headers::Field::RequestId if !named.contains(name) => request_id = true,
            headers::Field::ForwardedFor => {
                any_for = true;
                continue;
            }
            headers::Field::Trace => {
                if headers::named(name, headers::SWITCHYARD_TRACE.as_bytes()) {
                    trace = Some(h.value);
                }
                continue;
            }
            headers::Field::Cookie if !named.contains(name) && !headers::ruled_out(rules, name) => {
                if headers::holds_session_cookie(h.value) {
                    headers::write_cookie_line(out, name, h.value);
                    continue;
                }
            }
            headers::Field::ClientClaim
                if client.trusted && !named.contains(name) && !headers::ruled_out(rules, name) => {}
            _ => continue,
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let message::RequestBody::Length(n) = head.checked.body {
        write_length(out, n);
    }
    let forwarded = headers::Forwarded {
        client: *client,
        https,
        host: head.checked.host,
    };
    // Only a trusted client's are extended: otherwise the fields are not looked at again.
    let fields: &[httparse::Header<'_>] = if any_for && client.trusted {
        req.headers
    } else {
        &[]
    };
    let existing = fields
        .iter()
        .filter(|h| headers::classify(h.name.as_bytes()) == headers::Field::ForwardedFor)
        .map(|h| h.value);
    forwarded.write(out, existing, kept, request_id);
    headers::write_added(out, rules);
    out.extend_from_slice(b"\r\n");
    trace
}

/// The bytes of `headers` as written back out (`name: value\r\n`).
fn head_size(headers: &[httparse::Header<'_>]) -> usize {
    headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum()
}

pub fn write_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    headers::write_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Which fields of a backend's response head go on to the client, for both codecs: not the
/// hop-by-hop ones nor those `Connection` names, and of the framing only the one valid
/// Content-Length, kept as it came (plain digits: `message` checked it); the rest of the
/// framing is the proxy's to write from the check.
pub struct ResponseFields<'a> {
    named: ConnectionNamed<'a>,
    length: Option<u64>,
    length_kept: bool,
}

impl<'a> ResponseFields<'a> {
    pub fn of(fields: &[httparse::Header<'a>], checked: &message::Response) -> ResponseFields<'a> {
        ResponseFields {
            named: ConnectionNamed::of(
                fields
                    .iter()
                    .filter(|h| headers::named(h.name.as_bytes(), b"connection"))
                    .map(|h| h.value),
            ),
            length: checked.length,
            length_kept: false,
        }
    }

    /// `None`: the field is dropped; else what kind of field it is.
    pub fn keeps(&mut self, name: &[u8]) -> Option<headers::Field> {
        match headers::classify(name) {
            // A backend's own trace result never reaches the client (`trace`).
            headers::Field::HopByHop | headers::Field::Trace => None,
            headers::Field::Framing
                if self.length.is_some()
                    && !self.length_kept
                    && headers::named(name, b"content-length") =>
            {
                self.length_kept = true;
                Some(headers::Field::Framing)
            }
            headers::Field::Framing => None,
            _ if self.named.contains(name) => None,
            field => Some(field),
        }
    }

    /// The Content-Length still to write once the fields were passed (none was kept).
    pub fn length_to_write(&self) -> Option<u64> {
        self.length.filter(|_| !self.length_kept)
    }
}

/// Checks a backend's response head (`message`'s rules); `head_only` for a HEAD request.
pub fn read_response(
    res: &httparse::Response<'_, '_>,
    head_only: bool,
) -> Result<message::Response, &'static str> {
    message::check_response(
        res.version == Some(0),
        res.code.unwrap_or(0),
        head_only,
        fields(res.headers),
    )
}

/// The response head for the client: the received fields but the hop-by-hop ones (and those
/// `Connection` names) and the framing, then the framing as checked, `extra` (HSTS), `Date`
/// when a final answer had none (`headers::write_date`), and `connection: close` when the client
/// connection ends after it.
pub fn write_response_head(
    out: &mut Vec<u8>,
    res: &httparse::Response<'_, '_>,
    checked: &message::Response,
    close: bool,
    extra: &[u8],
) {
    write_response_head_with(out, res, checked, close, extra, &headers::NO_RULES);
}

/// [`write_response_head`] with an app's response header rules (their added fields go before
/// `extra`).
pub fn write_response_head_with(
    out: &mut Vec<u8>,
    res: &httparse::Response<'_, '_>,
    checked: &message::Response,
    close: bool,
    extra: &[u8],
    rules: &headers::Rules,
) {
    out.reserve(head_size(res.headers) + extra.len() + 128); // see `write_request_head`
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = res.code.unwrap_or(502).min(999);
    out.extend_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // An interim answer (1xx: 100 Continue, 103 Early Hints) goes as the backend wrote it, less
    // its hop-by-hop fields and the fields the app's rules take out: what the rules and this
    // proxy add (HSTS, `Connection: close`, `Date`) is for the final answer.
    let interim = code < 200;
    let mut fields = ResponseFields::of(res.headers, checked);
    let mut dated = false;
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        match fields.keeps(name) {
            None => continue,
            Some(headers::Field::Framing) => {}
            Some(_) if headers::ruled_out(rules, name) => continue,
            Some(_) => {}
        }
        dated |= headers::named(name, b"date");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = fields.length_to_write() {
        write_length(out, n);
    } else if checked.body == message::ResponseBody::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !interim {
        headers::write_added(out, rules);
        out.extend_from_slice(extra);
    }
    // Interim answers (1xx) need none (RFC 9110 §6.6.1).
    if !dated && !interim {
        headers::write_date(out);
    }
    if close && !interim {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
#[path = "h1_framing_tests.rs"]
mod tests;
