//! A request's head as the codec decodes it: the fields of a block checked as they come (RFC
//! 9113 §8.2, §8.3.1: names, values, pseudo-header fields, connection-specific fields, the
//! request's shape) and collected into one buffer ([`RequestHead`]).

use std::ops::Range;

use bytes::Bytes;

use super::super::frame::Reason;
use super::super::hpack;

/// A request's head, decoded into one buffer: the pseudo-header fields the proxy routes on and
/// the regular fields in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    bytes: Vec<u8>,
    method: Range<usize>,
    scheme: Option<Range<usize>>,
    authority: Option<Range<usize>>,
    path: Option<Range<usize>>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// The content-length field's value, when there is one.
    pub content_length: Option<u64>,
}

impl RequestHead {
    pub fn method(&self) -> &[u8] {
        &self.bytes[self.method.clone()]
    }
    pub fn scheme(&self) -> Option<&[u8]> {
        self.scheme.clone().map(|r| &self.bytes[r])
    }
    pub fn authority(&self) -> Option<&[u8]> {
        self.authority.clone().map(|r| &self.bytes[r])
    }
    pub fn path(&self) -> Option<&[u8]> {
        self.path.clone().map(|r| &self.bytes[r])
    }
    /// The regular fields (no pseudo-header fields), in the client's order.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (&self.bytes[n.clone()], &self.bytes[v.clone()]))
    }

    /// The head with its bytes in one shared buffer: what outlives the head (the target,
    /// field values) is taken as slices of it, not copied one by one.
    pub fn into_shared(mut self) -> SharedHead {
        let bytes = Bytes::from(std::mem::take(&mut self.bytes));
        SharedHead { bytes, head: self }
    }

    fn push(&mut self, b: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        start..self.bytes.len()
    }
}

/// A [`RequestHead`] whose bytes are shared ([`RequestHead::into_shared`]).
pub struct SharedHead {
    bytes: Bytes,
    /// The spans; its own buffer is empty.
    head: RequestHead,
}

impl SharedHead {
    pub fn method(&self) -> &[u8] {
        &self.bytes[self.head.method.clone()]
    }
    pub fn scheme(&self) -> Option<&[u8]> {
        self.head.scheme.clone().map(|r| &self.bytes[r])
    }
    pub fn authority(&self) -> Option<Bytes> {
        self.head.authority.clone().map(|r| self.bytes.slice(r))
    }
    pub fn path(&self) -> Option<Bytes> {
        self.head.path.clone().map(|r| self.bytes.slice(r))
    }
    /// How many regular fields there are.
    pub fn field_count(&self) -> usize {
        self.head.fields.len()
    }
    /// The regular fields, in the client's order: each name, and its value as a slice.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], Bytes)> {
        self.head
            .fields
            .iter()
            .map(|(n, v)| (&self.bytes[n.clone()], self.bytes.slice(v.clone())))
    }
}

/// Checks a block's fields as they are decoded (RFC 9113 §8.2, §8.3.1) and collects them.
pub(super) struct HeadCheck {
    head: RequestHead,
    trailers: bool,
    regular_seen: bool,
    malformed: bool,
    has_method: bool,
}

impl HeadCheck {
    pub(super) fn new(trailers: bool) -> HeadCheck {
        HeadCheck {
            // Room for a usual head without regrowing.
            head: RequestHead {
                bytes: Vec::with_capacity(256),
                fields: Vec::with_capacity(8),
                ..RequestHead::default()
            },
            trailers,
            regular_seen: false,
            malformed: false,
            has_method: false,
        }
    }

    pub(super) fn field(&mut self, f: hpack::Field<'_>) {
        if self.malformed {
            return;
        }
        if !valid_value(f.value) {
            self.malformed = true;
            return;
        }
        if let Some(pseudo) = f.name.strip_prefix(b":") {
            // Pseudo-header fields: requests only, before the regular ones, each once.
            if self.trailers || self.regular_seen {
                self.malformed = true;
                return;
            }
            let h = &mut self.head;
            let slot = match pseudo {
                b"method" if !self.has_method => {
                    self.has_method = true;
                    h.method = h.push(f.value);
                    return;
                }
                b"scheme" => &mut h.scheme,
                b"authority" => &mut h.authority,
                b"path" => &mut h.path,
                _ => {
                    self.malformed = true;
                    return;
                }
            };
            if slot.is_some() {
                self.malformed = true;
                return;
            }
            let start = h.bytes.len();
            h.bytes.extend_from_slice(f.value);
            *slot = Some(start..h.bytes.len());
            return;
        }
        self.regular_seen = true;
        if !valid_name(f.name) || connection_specific(f.name, f.value) {
            self.malformed = true;
            return;
        }
        if f.name == b"content-length" {
            let parsed = std::str::from_utf8(f.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (parsed, self.head.content_length) {
                (Some(n), None) => self.head.content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => {
                    self.malformed = true;
                    return;
                }
            }
        }
        let name = self.head.push(f.name);
        let value = self.head.push(f.value);
        self.head.fields.push((name, value));
    }

    pub(super) fn finish(self) -> Result<RequestHead, Reason> {
        if self.malformed {
            return Err(Reason::PROTOCOL_ERROR);
        }
        if self.trailers {
            return Ok(self.head);
        }
        let h = &self.head;
        let complete = if !self.has_method {
            false
        } else if h.method() == b"CONNECT" {
            // RFC 9113 §8.5: :authority only.
            h.authority.is_some() && h.scheme.is_none() && h.path.is_none()
        } else {
            // RFC 9113 §8.3.1: an origin-form path ("/…", no fragment), or "*" for OPTIONS
            // alone; anything else would reach the backend as a target its route was not
            // chosen by.
            h.scheme.is_some()
                && h.path().is_some_and(|p| {
                    (p.first() == Some(&b'/') && !p.contains(&b'#'))
                        || (p == b"*" && h.method() == b"OPTIONS")
                })
        };
        if complete {
            Ok(self.head)
        } else {
            Err(Reason::PROTOCOL_ERROR)
        }
    }
}

/// A field name: lowercase token characters (RFC 9113 §8.2.1, RFC 9110 §5.1). Every byte
/// looked up, none branched on (names are short: a branch per byte costs more than the loop).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .fold(true, |ok, &b| ok & NAME_BYTE[usize::from(b)])
}

/// The bytes [`valid_name`] allows.
const NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&'
            | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        b += 1;
    }
    table
};

/// A field value: no NUL, CR or LF, no whitespace at either end (RFC 9113 §8.2.1), and no
/// other control character but tab (RFC 9110 §5.5, as the `http` crate holds values to):
/// one the codec let through would be refused only after its request was handed on, a reset
/// the client would get for free. `h2_server`'s driver builds `HeaderValue`s unchecked on the
/// strength of this rule (test below).
fn valid_value(value: &[u8]) -> bool {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    // Folded without a branch per byte, as `valid_name`.
    let control = value.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    });
    !control && !value.first().is_some_and(ws) && !value.last().is_some_and(ws)
}

/// Connection-specific fields, malformed in HTTP/2 (RFC 9113 §8.2.2); `te` only as
/// "trailers".
fn connection_specific(name: &[u8], value: &[u8]) -> bool {
    match name {
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade" => {
            true
        }
        b"te" => value != b"trailers",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    /// Every value the codec allows, the `http` crate allows too, whatever byte sits anywhere
    /// in it: what makes the driver's unchecked `HeaderValue`s sound.
    #[test]
    fn a_value_the_codec_allows_is_one_http_allows() {
        for b in 0..=255u8 {
            for value in [[b, b'a', b'a'], [b'a', b, b'a'], [b'a', b'a', b]] {
                if super::valid_value(&value) {
                    assert!(http::HeaderValue::from_bytes(&value).is_ok(), "{value:?}");
                }
            }
        }
    }
}
