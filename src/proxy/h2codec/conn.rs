//! The server side of one HTTP/2 connection as a state machine without IO: the driver (at stage
//! 4, `h2_server`) hands it the bytes a client sent and gets back, one at a time, what matters
//! to the proxy ([`Event`]: a request head decoded straight into a [`RequestHead`], body
//! bytes borrowed from the read buffer, trailers, resets, GOAWAY); everything else — SETTINGS
//! and their ACK, PING answers, WINDOW_UPDATEs for what the proxy consumed, RST_STREAM for a
//! stream's faults, GOAWAY for the connection's — is written to [`Connection::output`], as are
//! the response heads and body frames the driver sends.
//!
//! It holds what the `h2` crate enforces for us today: the preface, stream states and id rules
//! (RFC 9113 §5.1), the concurrency limit (REFUSED_STREAM past it), flow control both ways
//! with overflow checks (§6.9), HEADERS+CONTINUATION sequencing with a bound on the block and on
//! its frames (the CONTINUATION flood), the header list size (431, connection kept), malformed
//! requests (§8.1.1, §8.3: stream errors), content-length against the body, a bound on the
//! streams reset for the client's faults, control-frame floods (`h2_frames`' budget) and rapid
//! reset (CVE-2023-44487: streams the client resets before their answer began).

use std::time::Instant;

use rustc_hash::FxHashMap;

use super::frame::{self, ConnError, Frame, MAX_WINDOW, Reason, Settings};
use super::hpack;

mod block;
mod flow;
mod head;
mod send;
use crate::proxy::h2_frames::{self, Budget, Flood};
pub use head::{RequestHead, SharedHead};

/// What the connection is held to (the values we advertise in our SETTINGS).
#[derive(Debug, Clone)]
pub struct Config {
    pub max_concurrent_streams: u32,
    /// Our SETTINGS_INITIAL_WINDOW_SIZE (at least 65,535: a client may send that much before
    /// it has our SETTINGS).
    pub stream_window: u32,
    /// The connection window we open with a WINDOW_UPDATE after our SETTINGS.
    pub conn_window: u32,
    pub max_frame_size: u32,
    pub max_header_list_size: u32,
    /// Our SETTINGS_HEADER_TABLE_SIZE, the decoder's table bound (below the default 4,096 a
    /// client's first blocks, sent before our SETTINGS reached it, may be refused).
    pub header_table_size: u32,
    /// Streams reset for the client's faults before the connection is ended (a client making
    /// us reset streams is as costly as one resetting them itself).
    pub max_local_resets: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_concurrent_streams: 100,
            stream_window: 1024 * 1024,
            conn_window: 1024 * 1024,
            max_frame_size: frame::MIN_MAX_FRAME_SIZE,
            max_header_list_size: 16 * 1024,
            header_table_size: 4096,
            max_local_resets: 1024,
        }
    }
}

/// A field block may take at most this many CONTINUATION frames: real heads take none or a
/// few; a stream of (empty) CONTINUATIONs is a flood that costs us while holding the
/// connection (CVE-2024-27316 and kin).
pub const MAX_CONTINUATIONS: u32 = 16;

/// Why the connection ends; GOAWAY with [`Fault::reason`] is already in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A protocol fault of the client's (RFC 9113 §5.4.1), or a CONTINUATION flood or too many
    /// streams we had to reset (ENHANCE_YOUR_CALM).
    Protocol(Reason),
    /// Control frames past the budget.
    Flood(Flood),
    /// Streams reset by the client after we took them and before their answer's head, past
    /// `h2_frames::rapid_reset`: each had the proxy start a backend request thrown away.
    RapidReset { opened: u32, reset: u32 },
    /// Not HTTP/2 at all (no preface): closed without GOAWAY.
    NoPreface,
}

impl Fault {
    pub fn reason(&self) -> Reason {
        match self {
            Fault::Protocol(r) => *r,
            Fault::Flood(_) | Fault::RapidReset { .. } => Reason::ENHANCE_YOUR_CALM,
            Fault::NoPreface => Reason::PROTOCOL_ERROR,
        }
    }
}

impl From<ConnError> for Fault {
    fn from(e: ConnError) -> Fault {
        Fault::Protocol(e.0)
    }
}

/// What the driver hears of.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A new stream's request. `end_stream`: it has no body.
    Request {
        stream: u32,
        head: RequestHead,
        end_stream: bool,
    },
    /// Body bytes (release them with [`Connection::release`] once consumed).
    Data {
        stream: u32,
        data: &'a [u8],
        end_stream: bool,
    },
    /// The request's trailers, which end it (fields in `head.fields()`).
    Trailers { stream: u32, head: RequestHead },
    /// The stream is gone (the client reset it, or we did for its fault): drop its work.
    Reset { stream: u32, reason: Reason },
    /// The client is going away; streams above `last_stream` were not seen by it.
    GoAway { last_stream: u32, reason: Reason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// The client may still send body or trailers.
    Open,
    /// The client ended its side.
    Closed,
}

#[derive(Debug, Clone)]
struct Stream {
    recv: Recv,
    /// We ended our side (END_STREAM sent).
    sent_end: bool,
    /// Our response's head has gone out.
    head_sent: bool,
    /// What the client may still send on this stream.
    recv_window: i64,
    /// Bytes consumed (or discarded) not yet given back in a WINDOW_UPDATE.
    recv_unacked: u32,
    /// What we may still send.
    send_window: i64,
    content_length: Option<u64>,
    received: u64,
    /// When its request was handed on (read once per batch of frames).
    opened_at: Option<Instant>,
}

/// A field block being assembled from HEADERS and CONTINUATIONs.
#[derive(Debug, Default)]
struct Block {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
    continuations: u32,
    bytes: Vec<u8>,
}

/// One client connection.
pub struct Connection {
    config: Config,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    out: Vec<u8>,
    preface_seen: bool,
    streams: FxHashMap<u32, Stream>,
    /// The highest stream id the client opened (or we refused).
    last_stream: u32,
    /// The assembled block when its HEADERS lacked END_HEADERS.
    block: Option<Block>,
    conn_recv_window: i64,
    conn_recv_unacked: u32,
    conn_send_window: i64,
    /// The client's SETTINGS.
    peer_initial_window: u32,
    peer_max_frame_size: u32,
    settings_acked: bool,
    /// GOAWAY sent: streams above this id are ignored.
    goaway_last: Option<u32>,
    budget: Budget,
    local_resets: u32,
    opened: u32,
    early_resets: u32,
    /// The streams we reset last (a ring): a client may have sent their trailers before our
    /// RST_STREAM reached it, and such frames are ignored, not a connection error (RFC 9113
    /// §5.1, "closed").
    reset_lately: [u32; RESETS_REMEMBERED],
    reset_at: usize,
    fault: Option<Fault>,
}

/// How many of the streams we reset are remembered (see `Connection::reset_lately`).
const RESETS_REMEMBERED: usize = 16;

impl Connection {
    /// A connection whose first output is our SETTINGS and the connection window's
    /// WINDOW_UPDATE (the server's preface, RFC 9113 §3.4).
    pub fn new(config: Config, now: Instant) -> Connection {
        let mut out = Vec::with_capacity(64);
        frame::settings(
            &mut out,
            &[
                (Settings::ENABLE_PUSH, 0),
                (
                    Settings::MAX_CONCURRENT_STREAMS,
                    config.max_concurrent_streams,
                ),
                (Settings::INITIAL_WINDOW_SIZE, config.stream_window),
                (Settings::MAX_FRAME_SIZE, config.max_frame_size),
                (Settings::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
                (Settings::HEADER_TABLE_SIZE, config.header_table_size),
            ],
        );
        let conn_window = i64::from(config.conn_window.max(DEFAULT_WINDOW));
        if config.conn_window > DEFAULT_WINDOW {
            frame::window_update(&mut out, 0, config.conn_window - DEFAULT_WINDOW);
        }
        Connection {
            decoder: hpack::Decoder::new(config.header_table_size as usize),
            encoder: hpack::Encoder::new(false),
            out,
            preface_seen: false,
            streams: FxHashMap::default(),
            last_stream: 0,
            block: None,
            conn_recv_window: conn_window,
            conn_recv_unacked: 0,
            conn_send_window: i64::from(DEFAULT_WINDOW),
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame_size: frame::MIN_MAX_FRAME_SIZE,
            settings_acked: false,
            goaway_last: None,
            budget: Budget::new(now),
            local_resets: 0,
            opened: 0,
            early_resets: 0,
            reset_lately: [0; RESETS_REMEMBERED],
            reset_at: 0,
            fault: None,
            config,
        }
    }

    /// Frames to write to the client; the driver takes them (`std::mem::take` or drain).
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Whether the client acknowledged our SETTINGS (the driver bounds the wait).
    pub fn settings_acked(&self) -> bool {
        self.settings_acked
    }

    /// Whether the client's preface has arrived (the driver bounds the handshake by it).
    pub fn preface_seen(&self) -> bool {
        self.preface_seen
    }

    /// Whether `stream` is still open on either side (not ended both ways, not reset).
    pub fn is_open(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Whether our response's head went out on `stream`.
    pub fn head_sent(&self, stream: u32) -> bool {
        self.streams.get(&stream).is_some_and(|s| s.head_sent)
    }

    /// Streams open or half-closed (those counted against the concurrency limit).
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Reads from `buf` until one event or the end of the whole frames in it: the bytes
    /// consumed, and the event. After an error, GOAWAY (but for `NoPreface`) is in the output
    /// and the connection is done.
    pub fn recv<'a>(
        &mut self,
        buf: &'a [u8],
        mut now: impl FnMut() -> Instant,
    ) -> Result<(usize, Option<Event<'a>>), Fault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        let mut used = 0;
        if !self.preface_seen {
            match frame::check_preface(buf) {
                Ok(true) => {
                    self.preface_seen = true;
                    used = frame::PREFACE.len();
                }
                Ok(false) => return Ok((0, None)),
                Err(_) => {
                    self.fault = Some(Fault::NoPreface);
                    return Err(Fault::NoPreface);
                }
            }
        }
        loop {
            let read = frame::read(&buf[used..], self.config.max_frame_size);
            let (f, len) = match read {
                Ok(Some(r)) => r,
                Ok(None) => return Ok((used, None)),
                Err(e) => return Err(self.fail(e.into())),
            };
            used += len;
            match self.frame(f, &mut now) {
                Ok(Some(event)) => return Ok((used, Some(event))),
                Ok(None) => {}
                Err(fault) => return Err(self.fail(fault)),
            }
        }
    }

    fn fail(&mut self, fault: Fault) -> Fault {
        if fault != Fault::NoPreface {
            frame::goaway(&mut self.out, self.last_stream, fault.reason(), b"");
        }
        self.fault = Some(fault);
        fault
    }

    /// Resets `stream` for the client's fault; past `max_local_resets` the connection ends.
    fn reset_for_fault(&mut self, stream: u32, reason: Reason) -> Result<(), Fault> {
        self.send_reset(stream, reason);
        if self.streams.remove(&stream).is_some_and(|s| !s.head_sent) {
            // A request handed on, thrown away for the client's fault before its answer: an
            // early reset as much as one the client sends (MadeYouReset).
            self.early_reset()?;
        }
        self.count_client_fault()
    }

    /// One more stream handed on and reset before its answer's head.
    fn early_reset(&mut self) -> Result<(), Fault> {
        self.early_resets += 1;
        if h2_frames::rapid_reset(self.opened, self.early_resets) {
            return Err(Fault::RapidReset {
                opened: self.opened,
                reset: self.early_resets,
            });
        }
        Ok(())
    }

    /// RST_STREAM for `stream`, remembered among the last ones sent.
    fn send_reset(&mut self, stream: u32, reason: Reason) {
        frame::rst_stream(&mut self.out, stream, reason);
        self.reset_lately[self.reset_at] = stream;
        self.reset_at = (self.reset_at + 1) % RESETS_REMEMBERED;
    }

    /// A stream ended for the client's fault (reset, or answered 431): bounded per connection,
    /// as each costs us a decode and an answer.
    fn count_client_fault(&mut self) -> Result<(), Fault> {
        self.local_resets += 1;
        if self.local_resets > self.config.max_local_resets {
            return Err(Fault::Protocol(Reason::ENHANCE_YOUR_CALM));
        }
        Ok(())
    }

    fn frame<'a>(
        &mut self,
        f: Frame<'a>,
        now: &mut impl FnMut() -> Instant,
    ) -> Result<Option<Event<'a>>, Fault> {
        if let Some(block) = &self.block {
            // Nothing may come between a HEADERS without END_HEADERS and its last
            // CONTINUATION (RFC 9113 §6.10).
            match f {
                Frame::Continuation { stream, .. } if stream == block.stream => {}
                _ => return Err(Fault::Protocol(Reason::PROTOCOL_ERROR)),
            }
        }
        let (kind, flags, carries_data) = budget_class(&f);
        self.budget
            .judge(kind, flags, carries_data, now)
            .map_err(Fault::Flood)?;
        match f {
            Frame::Data {
                stream,
                end_stream,
                data,
                flow_len,
            } => self.data(stream, end_stream, data, flow_len),
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                priority,
                fragment,
            } => {
                let self_dependent = priority.is_some_and(|p| p.dependency == stream);
                if end_headers {
                    let event = self.headers(stream, end_stream, self_dependent, fragment);
                    return self.note_opened(event, now);
                }
                self.block = Some(Block {
                    stream,
                    end_stream,
                    self_dependent,
                    continuations: 0,
                    bytes: fragment.to_vec(),
                });
                Ok(None)
            }
            Frame::Continuation {
                end_headers,
                fragment,
                ..
            } => {
                let Some(mut block) = self.block.take() else {
                    return Err(Fault::Protocol(Reason::PROTOCOL_ERROR));
                };
                block.continuations += 1;
                if block.continuations > MAX_CONTINUATIONS
                    || block.bytes.len() + fragment.len() > self.max_block()
                {
                    return Err(Fault::Protocol(Reason::ENHANCE_YOUR_CALM));
                }
                block.bytes.extend_from_slice(fragment);
                if !end_headers {
                    self.block = Some(block);
                    return Ok(None);
                }
                let event = self.headers(
                    block.stream,
                    block.end_stream,
                    block.self_dependent,
                    &block.bytes,
                );
                self.note_opened(event, now)
            }
            Frame::Priority { stream, .. } => {
                // Deprecated (RFC 9113 §5.3.2): read and ignored, in any state.
                let _ = stream;
                Ok(None)
            }
            Frame::RstStream { stream, reason } => {
                if self.is_idle(stream) {
                    return Err(Fault::Protocol(Reason::PROTOCOL_ERROR));
                }
                let Some(s) = self.streams.remove(&stream) else {
                    return Ok(None);
                };
                if !s.head_sent
                    && s.opened_at.is_none_or(|at| {
                        now().saturating_duration_since(at) < h2_frames::EARLY_RESET_WITHIN
                    })
                {
                    self.early_reset()?;
                }
                Ok(Some(Event::Reset { stream, reason }))
            }
            Frame::Settings(s) => {
                self.settings(s)?;
                frame::settings_ack(&mut self.out);
                Ok(None)
            }
            Frame::SettingsAck => {
                self.settings_acked = true;
                Ok(None)
            }
            Frame::Ping { ack, payload } => {
                if !ack {
                    frame::ping(&mut self.out, true, payload);
                }
                Ok(None)
            }
            Frame::GoAway {
                last_stream,
                reason,
                ..
            } => Ok(Some(Event::GoAway {
                last_stream,
                reason,
            })),
            Frame::WindowUpdate { stream, increment } => self.window_update(stream, increment),
            Frame::Unknown { .. } => Ok(None),
            Frame::StreamError { stream, reason } => {
                if self.is_idle(stream) {
                    // No RST_STREAM for an idle stream (RFC 9113 §5.1): the client's fault
                    // ends the connection instead.
                    return Err(Fault::Protocol(reason));
                }
                let known = self.streams.contains_key(&stream);
                self.reset_for_fault(stream, reason)?;
                Ok(known.then_some(Event::Reset { stream, reason }))
            }
        }
    }

    /// The largest field block we assemble: a head within the list size can be no bigger
    /// (a literal field costs at most a few bytes over its name and value, which the list
    /// size counts with 32 more), with room for a client's table size updates.
    fn max_block(&self) -> usize {
        self.config.max_header_list_size as usize + 1024
    }

    /// Not yet opened by the client (RFC 9113 §5.1: a frame other than HEADERS or PRIORITY
    /// on an idle stream is a connection error).
    fn is_idle(&self, stream: u32) -> bool {
        stream > self.last_stream
    }

    fn settings(&mut self, s: Settings) -> Result<(), Fault> {
        if let Some(size) = s.header_table_size {
            self.encoder.peer_table_size(size);
        }
        if let Some(size) = s.max_frame_size {
            self.peer_max_frame_size = size;
        }
        if let Some(window) = s.initial_window_size {
            // Applies to every stream's send window, by the difference (RFC 9113 §6.9.2).
            let delta = i64::from(window) - i64::from(self.peer_initial_window);
            self.peer_initial_window = window;
            for s in self.streams.values_mut() {
                s.send_window += delta;
                if s.send_window > i64::from(MAX_WINDOW) {
                    return Err(Fault::Protocol(Reason::FLOW_CONTROL_ERROR));
                }
            }
        }
        Ok(())
    }

    /// A stream as the probe's encode-only mode opens it, its request already read.
    #[cfg(test)]
    fn streams_template(&mut self, stream: u32) -> Stream {
        self.last_stream = stream;
        Stream {
            recv: Recv::Closed,
            sent_end: false,
            head_sent: false,
            recv_window: 0,
            recv_unacked: 0,
            send_window: i64::from(self.peer_initial_window),
            content_length: None,
            received: 0,
            opened_at: None,
        }
    }

    /// Both sides ended: the stream no longer counts.
    fn close_if_done(&mut self, stream: u32) {
        if self
            .streams
            .get(&stream)
            .is_some_and(|s| s.recv == Recv::Closed && s.sent_end)
        {
            self.streams.remove(&stream);
        }
    }
}

/// The initial flow-control window of connections and streams (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: u32 = 65_535;

/// How the flood budget sees a frame: its type, flags, and whether DATA carries bytes.
fn budget_class(f: &Frame<'_>) -> (u8, u8, bool) {
    const END_STREAM: u8 = 0x1;
    match *f {
        Frame::Data {
            data, end_stream, ..
        } => (
            frame::DATA,
            if end_stream { END_STREAM } else { 0 },
            !data.is_empty(),
        ),
        Frame::Headers { .. } => (frame::HEADERS, 0, false),
        Frame::Priority { .. } => (frame::PRIORITY, 0, false),
        Frame::RstStream { .. } => (frame::RST_STREAM, 0, false),
        Frame::Settings(_) | Frame::SettingsAck => (frame::SETTINGS, 0, false),
        Frame::Ping { .. } => (frame::PING, 0, false),
        Frame::GoAway { .. } => (frame::GOAWAY, 0, false),
        Frame::WindowUpdate { .. } => (frame::WINDOW_UPDATE, 0, false),
        Frame::Continuation { .. } => (frame::CONTINUATION, 0, false),
        Frame::Unknown { kind, .. } => (kind, 0, false),
        Frame::StreamError { .. } => (frame::PRIORITY, 0, false),
    }
}

#[cfg(test)]
mod tests;
