//! Flow control as the connection keeps it: DATA frames counted against the receive windows
//! and given back as the driver consumes their bytes (a WINDOW_UPDATE once half a window is
//! owed), and the client's WINDOW_UPDATEs growing our send windows.

use super::super::frame::{self, Reason};
use super::{Connection, DEFAULT_WINDOW, Event, Fault, MAX_WINDOW, Recv};

impl Connection {
    /// A DATA frame: counted against both receive windows (padding included, and given
    /// back at once), checked against the stream's state and content-length.
    pub(super) fn data<'a>(
        &mut self,
        stream: u32,
        end_stream: bool,
        data: &'a [u8],
        flow_len: u32,
    ) -> Result<Option<Event<'a>>, Fault> {
        if self.is_idle(stream) {
            return Err(Fault::Protocol(Reason::PROTOCOL_ERROR));
        }
        // The connection window counts every DATA frame, even on a stream we closed.
        let flow = i64::from(flow_len);
        if flow > self.conn_recv_window {
            return Err(Fault::Protocol(Reason::FLOW_CONTROL_ERROR));
        }
        self.conn_recv_window -= flow;
        let Some(s) = self.streams.get_mut(&stream) else {
            // Closed: frames in flight after our RST_STREAM are ignored (RFC 9113 §5.1), their
            // bytes given back to the connection window.
            self.give_back_conn(flow_len);
            return Ok(None);
        };
        if s.recv == Recv::Closed {
            self.give_back_conn(flow_len);
            self.reset_for_fault(stream, Reason::STREAM_CLOSED)?;
            return Ok(Some(Event::Reset {
                stream,
                reason: Reason::STREAM_CLOSED,
            }));
        }
        if flow > s.recv_window {
            self.give_back_conn(flow_len);
            self.reset_for_fault(stream, Reason::FLOW_CONTROL_ERROR)?;
            return Ok(Some(Event::Reset {
                stream,
                reason: Reason::FLOW_CONTROL_ERROR,
            }));
        }
        s.recv_window -= flow;
        s.received += data.len() as u64;
        // content-length against the body (RFC 9113 §8.1.1): more, or less at its end.
        let wrong_length = s
            .content_length
            .is_some_and(|n| s.received > n || (end_stream && s.received != n));
        // Padding is flow-controlled but never handed out: given back now.
        let padding = flow_len - data.len() as u32;
        if wrong_length {
            self.give_back_conn(flow_len);
            self.reset_for_fault(stream, Reason::PROTOCOL_ERROR)?;
            return Ok(Some(Event::Reset {
                stream,
                reason: Reason::PROTOCOL_ERROR,
            }));
        }
        if end_stream {
            s.recv = Recv::Closed;
        }
        if padding > 0 {
            self.release(stream, padding as usize);
        }
        self.close_if_done(stream);
        Ok(Some(Event::Data {
            stream,
            data,
            end_stream,
        }))
    }

    pub(super) fn give_back_conn(&mut self, n: u32) {
        self.conn_recv_unacked += n;
        self.conn_recv_window_update();
    }

    fn conn_recv_window_update(&mut self) {
        let window = self.config.conn_window.max(DEFAULT_WINDOW);
        if self.conn_recv_unacked >= window / 2 {
            frame::window_update(&mut self.out, 0, self.conn_recv_unacked);
            self.conn_recv_window += i64::from(self.conn_recv_unacked);
            self.conn_recv_unacked = 0;
        }
    }

    /// The driver consumed `n` body bytes of `stream`: the client may send them again
    /// (WINDOW_UPDATEs go out once half a window is owed, not per frame).
    pub fn release(&mut self, stream: u32, n: usize) {
        let n = n as u32;
        self.give_back_conn(n);
        let half = self.config.stream_window / 2;
        if let Some(s) = self.streams.get_mut(&stream) {
            s.recv_unacked += n;
            // A stream whose client has ended needs no more window.
            if s.recv == Recv::Open && s.recv_unacked >= half {
                frame::window_update(&mut self.out, stream, s.recv_unacked);
                s.recv_window += i64::from(s.recv_unacked);
                s.recv_unacked = 0;
            }
        }
    }

    /// A WINDOW_UPDATE: the connection's or a stream's send window grows, bounded.
    pub(super) fn window_update<'a>(
        &mut self,
        stream: u32,
        increment: u32,
    ) -> Result<Option<Event<'a>>, Fault> {
        if stream == 0 {
            self.conn_send_window += i64::from(increment);
            if self.conn_send_window > i64::from(MAX_WINDOW) {
                return Err(Fault::Protocol(Reason::FLOW_CONTROL_ERROR));
            }
            return Ok(None);
        }
        if self.is_idle(stream) {
            return Err(Fault::Protocol(Reason::PROTOCOL_ERROR));
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            return Ok(None);
        };
        s.send_window += i64::from(increment);
        if s.send_window > i64::from(MAX_WINDOW) {
            self.reset_for_fault(stream, Reason::FLOW_CONTROL_ERROR)?;
            return Ok(Some(Event::Reset {
                stream,
                reason: Reason::FLOW_CONTROL_ERROR,
            }));
        }
        Ok(None)
    }
}
