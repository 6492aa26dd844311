//! HTTP/2 framing (RFC 9113 §4, §6), the server's half: [`read`] takes the next frame off a
//! connection's inbound buffer — borrowed, never copied — and checks everything a frame can be
//! wrong about on its own (its size for its type, its stream id, padding, setting values),
//! answering each fault with the error RFC 9113 names and its scope: a connection error
//! ([`ConnError`], GOAWAY and close) or a stream error ([`Frame::StreamError`], RST_STREAM and
//! go on). What needs the connection's state (stream states, the HEADERS/CONTINUATION
//! sequence, flow control, floods) is `conn`'s. The writers append frames to an output
//! buffer; a response head is encoded in place after a reserved frame header
//! ([`begin_headers`], [`finish_headers`]) so it is never copied.

/// The client connection preface (RFC 9113 §3.4), before its SETTINGS frame.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value and lower bound.
pub const MIN_MAX_FRAME_SIZE: u32 = 1 << 14;
/// SETTINGS_MAX_FRAME_SIZE's upper bound.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (RFC 9113 §6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// An HTTP/2 error code (RFC 9113 §7); a peer may send codes we do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);
}

/// A connection error (RFC 9113 §5.4.1): the connection is sent GOAWAY with it and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnError(pub Reason);

/// HEADERS' or PRIORITY's priority fields (deprecated by RFC 9113, still parsed: a stream may
/// not depend on itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub dependency: u32,
    pub exclusive: bool,
    pub weight: u8,
}

/// The parameters of one SETTINGS frame (RFC 9113 §6.5.2), each checked; unknown ones are
/// ignored, and a parameter sent twice takes its last value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
}

impl Settings {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;

    fn parse(payload: &[u8]) -> Result<Settings, ConnError> {
        let mut s = Settings::default();
        for p in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([p[0], p[1]]);
            let value = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
            match id {
                Settings::HEADER_TABLE_SIZE => s.header_table_size = Some(value),
                Settings::ENABLE_PUSH => match value {
                    0 | 1 => s.enable_push = Some(value == 1),
                    _ => return Err(ConnError(Reason::PROTOCOL_ERROR)),
                },
                Settings::MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(value),
                Settings::INITIAL_WINDOW_SIZE if value > MAX_WINDOW => {
                    return Err(ConnError(Reason::FLOW_CONTROL_ERROR));
                }
                Settings::INITIAL_WINDOW_SIZE => s.initial_window_size = Some(value),
                Settings::MAX_FRAME_SIZE
                    if !(MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) =>
                {
                    return Err(ConnError(Reason::PROTOCOL_ERROR));
                }
                Settings::MAX_FRAME_SIZE => s.max_frame_size = Some(value),
                Settings::MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(value),
                _ => {}
            }
        }
        Ok(s)
    }
}

/// One frame read from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `data` without padding; `flow_len` is the whole payload, padding included, which is
    /// what flow control counts (RFC 9113 §6.1).
    Data {
        stream: u32,
        end_stream: bool,
        data: &'a [u8],
        flow_len: u32,
    },
    /// `fragment` without padding or priority fields: the first piece of a field block.
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        priority: Option<Priority>,
        fragment: &'a [u8],
    },
    Priority {
        stream: u32,
        priority: Priority,
    },
    RstStream {
        stream: u32,
        reason: Reason,
    },
    Settings(Settings),
    SettingsAck,
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
        debug: &'a [u8],
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        fragment: &'a [u8],
    },
    /// A frame type we do not know: ignored (RFC 9113 §5.5), unless it splits a field block.
    Unknown {
        kind: u8,
        stream: u32,
    },
    /// A frame wrong in a way that ends its stream only (RST_STREAM with `reason`).
    StreamError {
        stream: u32,
        reason: Reason,
    },
}

/// The 9-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored on receipt (RFC 9113 §4.1).
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        }
    }
}

/// How far a client's preface has arrived: `Ok(true)` once whole, `Ok(false)` while what came
/// so far matches; anything else is not HTTP/2 (closed without a GOAWAY, RFC 9113 §3.4).
pub fn check_preface(buf: &[u8]) -> Result<bool, ConnError> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        return Err(ConnError(Reason::PROTOCOL_ERROR));
    }
    Ok(n == PREFACE.len())
}

/// Strips a padded frame's padding: the pad length byte, then `skip` bytes (priority fields),
/// then the content, then the padding.
fn unpad(payload: &[u8], padded: bool, skip: usize) -> Result<(&[u8], usize), ConnError> {
    let (pad, rest) = if padded {
        match payload.split_first() {
            Some((&pad, rest)) => (usize::from(pad), rest),
            None => return Err(ConnError(Reason::FRAME_SIZE_ERROR)),
        }
    } else {
        (0, payload)
    };
    if rest.len() < skip {
        return Err(ConnError(Reason::FRAME_SIZE_ERROR));
    }
    // Padding as long as the payload or longer (RFC 9113 §6.1, §6.2).
    if pad > rest.len() - skip {
        return Err(ConnError(Reason::PROTOCOL_ERROR));
    }
    Ok((&rest[..rest.len() - pad], skip))
}

fn priority(b: &[u8]) -> Priority {
    let word = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Priority {
        dependency: word & MAX_WINDOW,
        exclusive: word & !MAX_WINDOW != 0,
        weight: b[4],
    }
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The next frame at the start of `buf`, and its length; `None` until it has all arrived. A
/// frame longer than `max_frame_size` (our SETTINGS_MAX_FRAME_SIZE) is refused from its
/// header, before its payload is waited for.
pub fn read(buf: &[u8], max_frame_size: u32) -> Result<Option<(Frame<'_>, usize)>, ConnError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let h = Header::parse(head);
    if h.len > max_frame_size {
        // Every frame we could receive that large alters connection state or carries a field
        // block: a connection error (RFC 9113 §4.2).
        return Err(ConnError(Reason::FRAME_SIZE_ERROR));
    }
    let total = HEADER_LEN + h.len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    Ok(Some((parse(h, payload)?, total)))
}

/// A whole frame's meaning.
pub fn parse(h: Header, payload: &[u8]) -> Result<Frame<'_>, ConnError> {
    let protocol = Err(ConnError(Reason::PROTOCOL_ERROR));
    let frame_size = Err(ConnError(Reason::FRAME_SIZE_ERROR));
    let stream = h.stream;
    match h.kind {
        DATA => {
            if stream == 0 {
                return protocol;
            }
            let (data, _) = unpad(payload, h.flags & PADDED != 0, 0)?;
            Ok(Frame::Data {
                stream,
                end_stream: h.flags & END_STREAM != 0,
                data,
                flow_len: h.len,
            })
        }
        HEADERS => {
            if stream == 0 {
                return protocol;
            }
            let has_priority = h.flags & PRIORITY_FLAG != 0;
            let skip = if has_priority { 5 } else { 0 };
            let (content, skip) = unpad(payload, h.flags & PADDED != 0, skip)?;
            let padded = usize::from(h.flags & PADDED != 0);
            Ok(Frame::Headers {
                stream,
                end_stream: h.flags & END_STREAM != 0,
                end_headers: h.flags & END_HEADERS != 0,
                // A dependency on itself is a stream error the connection judges after
                // decoding the block (the HPACK state must be kept).
                priority: has_priority.then(|| priority(&payload[padded..])),
                fragment: &content[skip..],
            })
        }
        PRIORITY => {
            if stream == 0 {
                return protocol;
            }
            if h.len != 5 {
                return Ok(Frame::StreamError {
                    stream,
                    reason: Reason::FRAME_SIZE_ERROR,
                });
            }
            let priority = priority(payload);
            if priority.dependency == stream {
                return Ok(Frame::StreamError {
                    stream,
                    reason: Reason::PROTOCOL_ERROR,
                });
            }
            Ok(Frame::Priority { stream, priority })
        }
        RST_STREAM => {
            if stream == 0 {
                return protocol;
            }
            if h.len != 4 {
                return frame_size;
            }
            Ok(Frame::RstStream {
                stream,
                reason: Reason(u32_at(payload)),
            })
        }
        SETTINGS => {
            if stream != 0 {
                return protocol;
            }
            if h.flags & ACK != 0 {
                return if h.len == 0 {
                    Ok(Frame::SettingsAck)
                } else {
                    frame_size
                };
            }
            if !h.len.is_multiple_of(6) {
                return frame_size;
            }
            Ok(Frame::Settings(Settings::parse(payload)?))
        }
        // A client cannot push (RFC 9113 §8.4).
        PUSH_PROMISE => protocol,
        PING => {
            if stream != 0 {
                return protocol;
            }
            match payload.first_chunk::<8>() {
                Some(&data) if h.len == 8 => Ok(Frame::Ping {
                    ack: h.flags & ACK != 0,
                    payload: data,
                }),
                _ => frame_size,
            }
        }
        GOAWAY => {
            if stream != 0 {
                return protocol;
            }
            if h.len < 8 {
                return frame_size;
            }
            Ok(Frame::GoAway {
                last_stream: u32_at(payload) & MAX_WINDOW,
                reason: Reason(u32_at(&payload[4..])),
                debug: &payload[8..],
            })
        }
        WINDOW_UPDATE => {
            if h.len != 4 {
                return frame_size;
            }
            let increment = u32_at(payload) & MAX_WINDOW;
            if increment == 0 {
                return if stream == 0 {
                    protocol
                } else {
                    Ok(Frame::StreamError {
                        stream,
                        reason: Reason::PROTOCOL_ERROR,
                    })
                };
            }
            Ok(Frame::WindowUpdate { stream, increment })
        }
        CONTINUATION => {
            if stream == 0 {
                return protocol;
            }
            Ok(Frame::Continuation {
                stream,
                end_headers: h.flags & END_HEADERS != 0,
                fragment: payload,
            })
        }
        kind => Ok(Frame::Unknown { kind, stream }),
    }
}

/// Appends a frame header.
pub fn write_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&header(len, kind, flags, stream));
}

/// A frame header's 9 bytes.
fn header(len: usize, kind: u8, flags: u8, stream: u32) -> [u8; HEADER_LEN] {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
    let len = (len as u32).to_be_bytes();
    let stream = stream.to_be_bytes();
    [
        len[1], len[2], len[3], kind, flags, stream[0], stream[1], stream[2], stream[3],
    ]
}

/// A DATA frame's header: its `len` bytes of data follow (written by the caller, often from
/// the backend's buffer straight to the socket).
pub fn data_header(out: &mut Vec<u8>, stream: u32, len: usize, end_stream: bool) {
    write_header(
        out,
        len,
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
    );
}

/// Reserves a HEADERS frame's header; the field block is then encoded after it into `out`.
pub fn begin_headers(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    at
}

/// Completes the HEADERS frame begun at `at`: a block longer than the client's
/// `max_frame_size` goes on in CONTINUATION frames (rare: only a very large head does).
pub fn finish_headers(
    out: &mut Vec<u8>,
    at: usize,
    stream: u32,
    end_stream: bool,
    max_frame_size: u32,
) {
    let max = max_frame_size as usize;
    let block_len = out.len() - at - HEADER_LEN;
    let end_stream = if end_stream { END_STREAM } else { 0 };
    if block_len <= max {
        let head = header(block_len, HEADERS, end_stream | END_HEADERS, stream);
        out[at..at + HEADER_LEN].copy_from_slice(&head);
        return;
    }
    let block = out.split_off(at + HEADER_LEN);
    out.truncate(at);
    let mut pieces = block.chunks(max).peekable();
    let mut kind = HEADERS;
    let mut flags = end_stream;
    while let Some(piece) = pieces.next() {
        if pieces.peek().is_none() {
            flags |= END_HEADERS;
        }
        write_header(out, piece.len(), kind, flags, stream);
        out.extend_from_slice(piece);
        kind = CONTINUATION;
        flags = 0;
    }
}

/// A SETTINGS frame with `params` (identifier, value).
pub fn settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    write_header(out, params.len() * 6, SETTINGS, 0, 0);
    for &(id, value) in params {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn settings_ack(out: &mut Vec<u8>) {
    write_header(out, 0, SETTINGS, ACK, 0);
}

pub fn ping(out: &mut Vec<u8>, ack: bool, payload: [u8; 8]) {
    write_header(out, 8, PING, if ack { ACK } else { 0 }, 0);
    out.extend_from_slice(&payload);
}

pub fn rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    write_header(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    write_header(out, 8 + debug.len(), GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&reason.0.to_be_bytes());
    out.extend_from_slice(debug);
}

pub fn window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    debug_assert!(increment > 0 && increment <= MAX_WINDOW);
    write_header(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

#[cfg(test)]
mod tests;
