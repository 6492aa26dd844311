//! The byte-level parts of the HTTP/1.1 fast path (`h1`): the chunked-body scanner that finds
//! where a relayed chunked message ends, the hop-by-hop rules for headers written as bytes,
//! small fixed responses, and the stream wrapper that hands already-read bytes to hyper when a
//! connection leaves the fast path.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest trailer section accepted after a chunked body.
const MAX_TRAILERS: usize = 64 * 1024;

/// Follows a chunked body as it is relayed, byte for byte, to find its end (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    Size { value: u64, digits: u8, ext: bool },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { len: usize, total: usize },
    TrailerLf { empty: bool, total: usize },
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::Size {
            value: 0,
            digits: 0,
            ext: false,
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
            if let Chunked::Data(left) = self {
                let take = (*left).min((bytes.len() - i) as u64);
                i += take as usize;
                *left -= take;
                if *left == 0 {
                    *self = Chunked::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            *self = match *self {
                Chunked::Size { value, digits, ext } => match b {
                    b'\r' if digits > 0 => Chunked::SizeLf { value },
                    b'\n' if digits > 0 => Self::after_size(value),
                    _ if ext => Chunked::Size { value, digits, ext },
                    b';' | b' ' | b'\t' if digits > 0 => Chunked::Size {
                        value,
                        digits,
                        ext: true,
                    },
                    _ => {
                        let digit = (b as char).to_digit(16).ok_or(BadChunk)? as u64;
                        if digits >= 15 {
                            return Err(BadChunk);
                        }
                        Chunked::Size {
                            value: value * 16 + digit,
                            digits: digits + 1,
                            ext: false,
                        }
                    }
                },
                Chunked::SizeLf { value } if b == b'\n' => Self::after_size(value),
                Chunked::DataCr if b == b'\r' => Chunked::DataLf,
                Chunked::DataLf if b == b'\n' => Chunked::default(),
                Chunked::Trailer { len, total } => {
                    if total >= MAX_TRAILERS {
                        return Err(BadChunk);
                    }
                    match b {
                        b'\r' => Chunked::TrailerLf {
                            empty: len == 0,
                            total: total + 1,
                        },
                        b'\n' if len == 0 => Chunked::Done,
                        b'\n' => Chunked::Trailer {
                            len: 0,
                            total: total + 1,
                        },
                        _ => Chunked::Trailer {
                            len: len + 1,
                            total: total + 1,
                        },
                    }
                }
                Chunked::TrailerLf { empty, total } if b == b'\n' => {
                    if empty {
                        Chunked::Done
                    } else {
                        Chunked::Trailer { len: 0, total }
                    }
                }
                _ => return Err(BadChunk),
            };
            if *self == Chunked::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn after_size(value: u64) -> Chunked {
        if value == 0 {
            Chunked::Trailer { len: 0, total: 0 }
        } else {
            Chunked::Data(value)
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded; `transfer-encoding` is kept apart:
/// the fast path relays chunked framing as it is.
pub fn is_hop_by_hop(name: &str) -> bool {
    let candidates: &[&str] = match name.len() {
        2 => &["te"],
        7 => &["trailer", "upgrade"],
        10 => &["connection", "keep-alive"],
        16 => &["proxy-connection"],
        _ => return false,
    };
    candidates.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether a header is named by the message's `Connection` header (and so is hop-by-hop too);
/// the common message without one pays a single pass.
fn connection_tokens<'a>(headers: &'a [httparse::Header<'a>]) -> impl Fn(&str) -> bool + 'a {
    // The usual tokens (close, keep-alive, upgrade) name no header that is not hop-by-hop
    // already: only other ones are kept, and usually there are none.
    let mut named: [&[u8]; 8] = [&[]; 8];
    let mut count = 0;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        if h.value.eq_ignore_ascii_case(b"keep-alive") || h.value.eq_ignore_ascii_case(b"close") {
            continue;
        }
        for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let usual = [&b"close"[..], b"keep-alive", b"upgrade", b""]
                .iter()
                .any(|u| token.eq_ignore_ascii_case(u));
            if !usual && count < named.len() {
                named[count] = token;
                count += 1;
            }
        }
    }
    move |name: &str| {
        named[..count]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A whole short response, for answers the proxy gives itself.
pub fn plain_response(status: u16, reason: &str, text: &str, close: bool) -> Vec<u8> {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\n{connection}\r\n{text}",
        text.len()
    )
    .into_bytes()
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

/// What a request head says that matters here.
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: Option<&'a [u8]>,
    pub content_length: u64,
    pub close: bool,
}

pub fn read_head<'a>(req: &httparse::Request<'_, 'a>) -> Option<Head<'a>> {
    if req.version != Some(1) || !req.path?.starts_with('/') || req.method? == "CONNECT" {
        return None;
    }
    let mut head = Head {
        method: req.method?,
        path: req.path?,
        host: None,
        content_length: 0,
        close: false,
    };
    let mut lengths = 0;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if head.host.is_some() {
                return None;
            }
            head.host = Some(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            head.content_length = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
        } else if name.eq_ignore_ascii_case("connection") {
            head.close |= lists(h.value, "close");
            if lists(h.value, "upgrade") {
                return None;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return None;
        }
    }
    (lengths <= 1 && head.host.is_some()).then_some(head)
}

/// The request head for the backend: hop-by-hop headers dropped (and those `Connection`
/// names), `X-Forwarded-For/Proto/Host` set, an `X-Request-Id` added when missing.
pub fn write_request_head(
    out: &mut Vec<u8>,
    req: &httparse::Request<'_, '_>,
    head: &Head,
    ip: &str,
    https: bool,
) {
    let named_by_connection = connection_tokens(req.headers);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for: Option<&[u8]> = None;
    let mut request_id = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(h.value);
            continue;
        }
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
            || named_by_connection(name)
        {
            continue;
        }
        request_id |= name.eq_ignore_ascii_case("x-request-id");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(existing) = forwarded_for {
        out.extend_from_slice(existing);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(ip.as_bytes());
    out.extend_from_slice(if https {
        &b"\r\nx-forwarded-proto: https\r\n"[..]
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    if let Some(host) = head.host {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    if !request_id {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut n = fastrand::u128(..);
        out.extend_from_slice(b"x-request-id: ");
        let start = out.len();
        out.resize(start + 32, b'0');
        for digit in out[start..].iter_mut().rev() {
            *digit = HEX[(n & 0xf) as usize];
            n >>= 4;
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    ToClose,
}

/// How the response body is delimited, and whether the backend closes after it.
pub fn framing_of(res: &httparse::Response<'_, '_>, head_only: bool) -> (Framing, bool) {
    let status = res.code.unwrap_or(0);
    let mut framing = Framing::ToClose;
    let mut close = res.version == Some(0);
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            framing = if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                Framing::Chunked
            } else {
                Framing::ToClose
            };
        } else if h.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            framing = match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) if framing == Framing::ToClose || framing == Framing::Length(n) => {
                    Framing::Length(n)
                }
                _ => Framing::ToClose,
            };
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= lists(h.value, "close");
        }
    }
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Empty;
    }
    (framing, close || framing == Framing::ToClose)
}

pub fn write_response_head(
    out: &mut Vec<u8>,
    res: &httparse::Response<'_, '_>,
    close: bool,
    extra: &[u8],
) {
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
    let named_by_connection = connection_tokens(res.headers);
    for h in res.headers.iter() {
        if is_hop_by_hop(h.name) || named_by_connection(h.name) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(extra);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: a\r\n\r\nNEXT";

    #[test]
    fn finds_the_end_of_a_chunked_body_whatever_the_splits() {
        let end = BODY.len() - 4;
        for split in 0..BODY.len() {
            let mut c = Chunked::default();
            let first = c.feed(&BODY[..split]).unwrap();
            let found = match first {
                Some(n) => n,
                None => split + c.feed(&BODY[split..]).unwrap().expect("ends"),
            };
            assert_eq!(found, end, "split at {split}");
        }
        let mut bytewise = Chunked::default();
        let ended = BODY
            .iter()
            .position(|b| bytewise.feed(std::slice::from_ref(b)).unwrap().is_some());
        assert_eq!(ended, Some(end - 1));
    }

    #[test]
    fn no_trailers_and_bare_lf_end_too() {
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"3\r\nabc\r\n0\r\n\r\n"), Ok(Some(13)));
        let mut lf = Chunked::default();
        assert_eq!(lf.feed(b"3\nabc\r\n0\n\n"), Ok(Some(10)));
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"g\r\n"[..],
            b"3\r\nabcX",
            b"\r\n",
            b"ffffffffffffffff1\r\n",
        ] {
            assert_eq!(Chunked::default().feed(bad), Err(BadChunk), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Any chunked encoding of any data, cut anywhere, ends exactly where it ends; and
        /// arbitrary bytes never panic the scanner.
        #[test]
        fn any_chunked_body_ends_where_it_ends(
            chunks in proptest::collection::vec(proptest::collection::vec(0u8..=255, 1..300), 0..8),
            cut in 0usize..4000,
            noise in proptest::collection::vec(0u8..=255, 0..200),
        ) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let end = body.len();
            body.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let cut = cut.min(body.len());
            let mut c = Chunked::default();
            let found = match c.feed(&body[..cut]).unwrap() {
                Some(n) => n,
                None => cut + c.feed(&body[cut..]).unwrap().unwrap(),
            };
            proptest::prop_assert_eq!(found, end);
            let _ = Chunked::default().feed(&noise);
        }
    }

    #[test]
    fn token_lists() {
        assert!(lists(b"keep-alive, Close", "close"));
        assert!(!lists(b"closed", "close"));
    }
}
