//! What the driver tells a connection: response heads, interim answers, trailers and body
//! frames (within the peer's windows), the resets and refusals it decides on, and GOAWAY;
//! each written to the connection's output.

use super::super::frame::{self, Reason};
use super::{Connection, Recv};

impl Connection {
    /// Writes a response head: `:status`, then `fields` (names any case; the driver drops
    /// the connection-specific ones). False if the stream is gone or its head went out.
    pub fn send_head<'f>(
        &mut self,
        stream: u32,
        status: u16,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
        end_stream: bool,
    ) -> bool {
        match self.streams.get_mut(&stream) {
            Some(s) if !s.head_sent => s.head_sent = true,
            _ => return false,
        }
        let at = frame::begin_headers(&mut self.out);
        self.encoder.start(&mut self.out);
        self.encoder.status(status, &mut self.out);
        for (name, value) in fields {
            self.encoder.field(name, value, false, &mut self.out);
        }
        frame::finish_headers(
            &mut self.out,
            at,
            stream,
            end_stream,
            self.peer_max_frame_size,
        );
        if end_stream {
            self.end_sent(stream);
        }
        true
    }

    /// Writes an interim `100 Continue` on `stream`: its client asked for one
    /// (`expect: 100-continue`) and its body is now wanted. False if the stream is gone, its
    /// response head has gone out, or the client already ended its side.
    pub fn send_continue(&mut self, stream: u32) -> bool {
        if !self
            .streams
            .get(&stream)
            .is_some_and(|s| !s.head_sent && s.recv == Recv::Open)
        {
            return false;
        }
        let at = frame::begin_headers(&mut self.out);
        self.encoder.start(&mut self.out);
        self.encoder.status(100, &mut self.out);
        frame::finish_headers(&mut self.out, at, stream, false, self.peer_max_frame_size);
        true
    }

    /// Writes a response's trailers, which end it. False if the stream is gone, its head has
    /// not gone out or its end has.
    pub fn send_trailers<'f>(
        &mut self,
        stream: u32,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
    ) -> bool {
        if !self
            .streams
            .get(&stream)
            .is_some_and(|s| s.head_sent && !s.sent_end)
        {
            return false;
        }
        let at = frame::begin_headers(&mut self.out);
        self.encoder.start(&mut self.out);
        for (name, value) in fields {
            self.encoder.field(name, value, false, &mut self.out);
        }
        frame::finish_headers(&mut self.out, at, stream, true, self.peer_max_frame_size);
        self.end_sent(stream);
        true
    }

    fn end_sent(&mut self, stream: u32) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.sent_end = true;
        }
        self.close_if_done(stream);
    }

    /// How many body bytes `stream` may send now: within both windows and one frame.
    pub fn send_capacity(&self, stream: u32) -> usize {
        match self.streams.get(&stream) {
            Some(s) if s.head_sent && !s.sent_end => {
                s.send_window
                    .min(self.conn_send_window)
                    .clamp(0, i64::from(self.peer_max_frame_size)) as usize
            }
            _ => 0,
        }
    }

    /// Writes one DATA frame of at most [`Connection::send_capacity`] bytes of `data` (an
    /// empty one ends the stream); the bytes taken.
    pub fn send_data(&mut self, stream: u32, data: &[u8], end_stream: bool) -> usize {
        let open = self
            .streams
            .get(&stream)
            .is_some_and(|s| s.head_sent && !s.sent_end);
        if !open {
            return 0;
        }
        let n = data.len().min(self.send_capacity(stream));
        // An empty DATA frame that ends the body needs no window.
        let end = end_stream && n == data.len();
        if n == 0 && !end {
            return 0;
        }
        frame::data_header(&mut self.out, stream, n, end);
        self.out.extend_from_slice(&data[..n]);
        if let Some(s) = self.streams.get_mut(&stream) {
            s.send_window -= n as i64;
        }
        self.conn_send_window -= n as i64;
        self.budget.sent(n);
        if end {
            self.end_sent(stream);
        }
        n
    }

    /// Resets a stream of ours (the backend failed mid-answer, the proxy gave up).
    pub fn reset(&mut self, stream: u32, reason: Reason) {
        if self.streams.remove(&stream).is_some() {
            self.send_reset(stream, reason);
        }
    }

    /// Resets a request the caller will not take (its head did not make a request): as a
    /// stream refused here, it does not count as opened against early resets.
    pub fn reject(&mut self, stream: u32, reason: Reason) {
        if self.streams.remove(&stream).is_some() {
            self.send_reset(stream, reason);
            self.opened = self.opened.saturating_sub(1);
            self.local_resets += 1;
        }
    }

    /// The request on `stream` was answered here, no backend having answered: like a stream
    /// refused, it no longer counts as opened against early resets (`h2_frames::rapid_reset`).
    pub fn answered_here(&mut self, stream: u32) {
        if self.streams.contains_key(&stream) {
            self.opened = self.opened.saturating_sub(1);
        }
    }

    /// A graceful GOAWAY: streams opened so far are served, later ones ignored.
    pub fn goaway(&mut self, reason: Reason) {
        if self.goaway_last.is_none() {
            self.goaway_last = Some(self.last_stream);
            frame::goaway(&mut self.out, self.last_stream, reason, b"");
        }
    }
}
