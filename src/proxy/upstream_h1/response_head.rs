//! A backend's response head as an HTTP/2 stream reads it: checked by `message`'s rules as
//! the fast path checks its own, its fields kept as slices of the head's bytes ([`RawHead`]),
//! a map made of them only where a rule reads one.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::proxy::exchange::Failure;
use crate::proxy::h1_framing::{ResponseFields, read_response};
use crate::proxy::headers;
use crate::proxy::message::ResponseBody;

const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;

/// A response head that passed, as it goes to the client.
pub(super) struct Head {
    /// The status, and a map with what the proxy adds (a Content-Length not kept as sent).
    pub(super) parts: http::response::Parts,
    pub(super) raw: RawHead,
    pub(super) body: ResponseBody,
    /// The backend closes its side after this response.
    pub(super) close: bool,
}

pub(super) enum Parsed {
    Partial,
    /// A 1xx was read past: the real answer follows.
    Interim,
    Done(Head),
}

/// Reads a response head from the front of `rbuf` (taking it out of the buffer when whole):
/// `message`'s rules as on the fast path; the fields as `ResponseFields` passes them, their
/// values sharing the head's bytes. One parse: where the kept fields' names and values are is
/// noted as offsets into the head (the `RawHead`'s list), sliced when they are sent.
pub(super) fn parse_head(rbuf: &mut BytesMut, head_only: bool) -> Result<Parsed, Failure> {
    let malformed = || Failure::BadResponse("backend sent a malformed response");
    let mut fields = Vec::new();
    let mut dated = false;
    let (len, status, body, close, length) = {
        // Left uninitialized (4 KiB the parser writes as it goes, not zeroed per response).
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, rbuf, &mut slots);
        let len = match parsed {
            // A head the last read completed past the bound is refused as one still partial
            // there would be (and no field of it can outgrow what `http` takes).
            Ok(httparse::Status::Complete(n)) if n <= MAX_RESPONSE_HEAD => n,
            Ok(httparse::Status::Partial) if rbuf.len() < MAX_RESPONSE_HEAD => {
                return Ok(Parsed::Partial);
            }
            _ => return Err(malformed()),
        };
        let checked = read_response(&res, head_only).map_err(Failure::BadResponse)?;
        let status = res.code.unwrap_or(502);
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(Failure::BadResponse("backend switched protocols unasked"));
            }
            rbuf.advance(len);
            return Ok(Parsed::Interim);
        }
        let start = rbuf.as_ptr() as usize;
        let at = |field: &[u8]| -> Result<Span, Failure> {
            let from = field.as_ptr() as usize - start;
            let to = from + field.len();
            Ok(Span(
                u32::try_from(from).map_err(|_| malformed())?,
                u32::try_from(to).map_err(|_| malformed())?,
            ))
        };
        let mut kept = ResponseFields::of(res.headers, &checked);
        fields.reserve_exact(res.headers.len());
        for h in res.headers.iter() {
            let name = h.name.as_bytes();
            if kept.keeps(name).is_none() {
                continue;
            }
            dated |= headers::named(name, b"date");
            fields.push((at(name)?, at(h.value)?));
        }
        let length = kept.length_to_write();
        (len, status, checked.body, checked.close, length)
    };
    let bytes = rbuf.split_to(len).freeze();
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(status)
        .map_err(|_| Failure::BadResponse("backend sent an invalid status"))?;
    if let Some(n) = length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let (parts, ()) = response.into_parts();
    let raw = RawHead {
        bytes,
        fields,
        dated,
    };
    Ok(Parsed::Done(Head {
        parts,
        raw,
        body,
        close,
    }))
}

/// A backend's response fields as it wrote them, those `ResponseFields` keeps (no hop-by-hop
/// field, none its `Connection` names, the framing as checked): slices of the head's bytes.
/// An HTTP/2 client on our codec gets them encoded from here when nothing the proxy applies
/// reads or replaces a backend's field (`upstream::fields_in_map` says when); every other
/// answer takes them into its map first ([`RawHead::into_map`]), as the rules expect.
pub struct RawHead {
    bytes: Bytes,
    fields: Vec<(Span, Span)>,
    /// One of the fields is `Date`.
    pub dated: bool,
}

impl RawHead {
    /// Each field's name (as the backend wrote it, any case) and value.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(name, value)| (&self.bytes[name.range()], &self.bytes[value.range()]))
    }

    /// Puts the fields in `map`, before what it held (the backend's fields come first). The
    /// `http` crate's rules for names and values are `httparse`'s, which read them: a field it
    /// refused anyway would be dropped, not sent.
    pub fn into_map(self, map: &mut HeaderMap) {
        let added = std::mem::take(map);
        // Room for the two fields the proxy may add to the usual head (Content-Length when none
        // was kept, Date when the backend sent none).
        map.reserve(self.fields.len() + added.len() + 2);
        for (name, value) in &self.fields {
            match (
                HeaderName::from_bytes(&self.bytes[name.range()]),
                HeaderValue::from_maybe_shared(self.bytes.slice(value.range())),
            ) {
                (Ok(name), Ok(value)) => {
                    map.append(name, value);
                }
                _ => tracing::debug!("a backend's response field refused by the http crate"),
            }
        }
        let mut last = None;
        for (name, value) in added {
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                map.append(name, value);
            }
        }
    }
}

/// Where a field's name or value is in a response head: its start and end offsets.
#[derive(Clone, Copy)]
struct Span(u32, u32);

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.0 as usize..self.1 as usize
    }
}

#[cfg(test)]
mod tests;
