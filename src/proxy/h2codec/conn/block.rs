//! A complete field block as the connection takes it (HEADERS and its CONTINUATIONs, see
//! `Connection::frame`): decoded and checked into a request head or trailers ([`super::head`]),
//! the stream opened, refused or reset as its head asks, and handed on as an [`Event`].

use std::time::Instant;

use super::super::frame::{self, Reason};
use super::super::hpack::Outcome;
use super::head::{HeadCheck, RequestHead};
use super::{Connection, Event, Fault, Recv, Stream};

impl Connection {
    /// Notes when a request handed on was opened (`Stream::opened_at`).
    pub(super) fn note_opened<'a>(
        &mut self,
        event: Result<Option<Event<'a>>, Fault>,
        now: &mut impl FnMut() -> Instant,
    ) -> Result<Option<Event<'a>>, Fault> {
        if let Ok(Some(Event::Request { stream, .. })) = &event
            && let Some(s) = self.streams.get_mut(stream)
        {
            s.opened_at = Some(now());
        }
        event
    }

    /// A complete field block on `stream`: a new request, trailers, or a fault.
    pub(super) fn headers<'a>(
        &mut self,
        stream: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
    ) -> Result<Option<Event<'a>>, Fault> {
        if stream > self.last_stream {
            // A new stream: client-initiated ids are odd and increasing (RFC 9113 §5.1.1).
            if stream.is_multiple_of(2) {
                return Err(Fault::Protocol(Reason::PROTOCOL_ERROR));
            }
            self.last_stream = stream;
            let (head, too_large) = self.decode(block, false)?;
            if self.goaway_last.is_some_and(|last| stream > last) {
                // After our GOAWAY: decoded for the table's sake, then ignored.
                return Ok(None);
            }
            if self_dependent {
                self.reset_for_fault(stream, Reason::PROTOCOL_ERROR)?;
                return Ok(None);
            }
            if self.streams.len() >= self.config.max_concurrent_streams as usize {
                // Retried safely by the client (RFC 9113 §8.7).
                self.send_reset(stream, Reason::REFUSED_STREAM);
                return Ok(None);
            }
            let mut s = Stream {
                recv: if end_stream { Recv::Closed } else { Recv::Open },
                sent_end: false,
                head_sent: false,
                recv_window: i64::from(self.config.stream_window),
                recv_unacked: 0,
                send_window: i64::from(self.peer_initial_window),
                content_length: None,
                received: 0,
                opened_at: None,
            };
            if too_large {
                // 431, the connection kept (RFC 9113 §10.5.1); a client still sending its
                // body is asked to stop.
                let at = frame::begin_headers(&mut self.out);
                self.encoder.start(&mut self.out);
                self.encoder.status(431, &mut self.out);
                frame::finish_headers(&mut self.out, at, stream, true, self.peer_max_frame_size);
                if !end_stream {
                    self.send_reset(stream, Reason::NO_ERROR);
                }
                self.count_client_fault()?;
                return Ok(None);
            }
            let head = match head {
                Ok(head) => head,
                Err(reason) => {
                    self.reset_for_fault(stream, reason)?;
                    return Ok(None);
                }
            };
            if end_stream && head.content_length.is_some_and(|n| n != 0) {
                self.reset_for_fault(stream, Reason::PROTOCOL_ERROR)?;
                return Ok(None);
            }
            s.content_length = head.content_length;
            // Only a stream handed on as a request counts against early resets: one refused,
            // reset or answered 431 here costs no backend request, and counted it would let
            // a client dilute its early resets for free (rapid reset, CVE-2023-44487).
            self.opened += 1;
            self.streams.insert(stream, s);
            return Ok(Some(Event::Request {
                stream,
                head,
                end_stream,
            }));
        }
        // An existing stream: trailers, which must end it.
        let Some(recv) = self.streams.get(&stream).map(|s| s.recv) else {
            if stream != 0 && self.reset_lately.contains(&stream) {
                // Sent before our reset arrived: decoded for the table's sake, then ignored;
                // a client fault all the same, so bounded.
                let _ignored = self.decode(block, true)?;
                self.count_client_fault()?;
                return Ok(None);
            }
            // Closed: a connection error (RFC 9113 §5.1).
            return Err(Fault::Protocol(Reason::STREAM_CLOSED));
        };
        let (head, too_large) = self.decode(block, true)?;
        if recv == Recv::Closed {
            self.reset_for_fault(stream, Reason::STREAM_CLOSED)?;
            return Ok(Some(Event::Reset {
                stream,
                reason: Reason::STREAM_CLOSED,
            }));
        }
        let content_length_short = self
            .streams
            .get(&stream)
            .is_some_and(|s| s.content_length.is_some_and(|n| s.received != n));
        let head = match head {
            Ok(head) if end_stream && !too_large && !self_dependent && !content_length_short => {
                head
            }
            _ => {
                self.reset_for_fault(stream, Reason::PROTOCOL_ERROR)?;
                return Ok(Some(Event::Reset {
                    stream,
                    reason: Reason::PROTOCOL_ERROR,
                }));
            }
        };
        if let Some(s) = self.streams.get_mut(&stream) {
            s.recv = Recv::Closed;
        }
        self.close_if_done(stream);
        Ok(Some(Event::Trailers { stream, head }))
    }

    /// Decodes a block (a decoding fault is the connection's: COMPRESSION_ERROR) and checks
    /// the fields as a request head or as trailers: the head, or the stream error it is
    /// (malformed: PROTOCOL_ERROR), and whether the list was past its size.
    #[allow(clippy::type_complexity)]
    fn decode(
        &mut self,
        block: &[u8],
        trailers: bool,
    ) -> Result<(Result<RequestHead, Reason>, bool), Fault> {
        let mut check = HeadCheck::new(trailers);
        let outcome = self
            .decoder
            .decode(block, self.config.max_header_list_size as usize, |f| {
                check.field(f)
            })
            .map_err(|e| match e {
                super::hpack::DecodeError::TooMuchWork => {
                    Fault::Protocol(Reason::ENHANCE_YOUR_CALM)
                }
                _ => Fault::Protocol(Reason::COMPRESSION_ERROR),
            })?;
        Ok((check.finish(), outcome == Outcome::TooLarge))
    }
}
