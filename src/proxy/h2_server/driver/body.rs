//! A client's request body on one HTTP/2 stream of our codec, as the proxy reads it: the DATA
//! the driver queued for the stream (each piece's window given back as it is taken), then its
//! trailers; an upload's place among the connection's unfinished ones.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::super::{BodyError, MAX_UNFINISHED_UPLOADS, RefuseStream, Uploads};
use super::{SharedRef, lock};

/// A client's request body on one stream of the codec: its DATA (the window given back as
/// each piece is taken), then its trailers.
pub(in crate::proxy::h2_server) struct CodecBody {
    pub(super) shared: SharedRef,
    pub(super) id: u32,
    /// Everything was taken (or there was no body).
    pub(super) done: bool,
    pub(super) uploads: Arc<Uploads>,
    /// One of the connection's unfinished-upload places is held.
    pub(super) holding: bool,
    /// The client asked for `100 Continue` (`expect: 100-continue`) before it sends the body:
    /// sent when the body is first wanted, as hyper does for HTTP/1.1, so a request answered
    /// without its body (a 401, a 413) never asks for it.
    pub(super) continue_owed: bool,
}

impl CodecBody {
    /// See [`H2Body::claim_upload`]: a body whose END_STREAM has arrived needs no place.
    pub(in crate::proxy::h2_server) fn claim(&mut self) -> Result<(), RefuseStream> {
        if self.holding || self.done {
            return Ok(());
        }
        {
            let s = lock(&self.shared);
            match s.streams.get(&self.id) {
                Some(io) if io.reset.is_none() && !io.ended => {}
                // Ended, or reset (its body fails when read: the client's fault).
                _ => return Ok(()),
            }
        }
        if self.uploads.take(MAX_UNFINISHED_UPLOADS) {
            self.holding = true;
            Ok(())
        } else {
            Err(RefuseStream)
        }
    }

    fn release_place(&mut self) {
        if std::mem::take(&mut self.holding) {
            self.uploads.give_back();
        }
    }
}

impl Drop for CodecBody {
    fn drop(&mut self) {
        self.release_place();
        if self.done {
            return;
        }
        // What was queued and not read goes back to the windows; later DATA does too.
        let mut s = lock(&self.shared);
        let s = &mut *s;
        if let Some(io) = s.streams.get_mut(&self.id) {
            io.body_dropped = true;
            io.body_waker = None;
            let queued: usize = io.data.drain(..).map(|d| d.len()).sum();
            if queued > 0 {
                s.conn.release(self.id, queued);
                s.output_added();
            }
        }
    }
}

impl Body for CodecBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut guard = lock(&this.shared);
        let s = &mut *guard;
        if std::mem::take(&mut this.continue_owed) && s.conn.send_continue(this.id) {
            s.output_added();
        }
        let Some(io) = s.streams.get_mut(&this.id) else {
            drop(guard);
            this.done = true;
            this.release_place();
            return Poll::Ready(Some(Err(
                "HTTP/2 stream closed before its body ended".into()
            )));
        };
        if let Some(data) = io.data.pop_front() {
            let last = io.ended && io.data.is_empty() && io.trailers.is_none();
            s.conn.release(this.id, data.len());
            s.output_added();
            drop(guard);
            if last {
                this.release_place();
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(reason) = io.reset {
            drop(guard);
            this.done = true;
            this.release_place();
            return Poll::Ready(Some(Err(format!("HTTP/2 stream reset: {reason:?}").into())));
        }
        if s.gone {
            drop(guard);
            this.done = true;
            this.release_place();
            return Poll::Ready(Some(Err("HTTP/2 connection closed".into())));
        }
        if io.ended {
            let trailers = io.trailers.take();
            drop(guard);
            this.done = true;
            this.release_place();
            return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
        }
        if !io
            .body_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            io.body_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        let s = lock(&self.shared);
        s.streams
            .get(&self.id)
            .is_some_and(|io| io.ended && io.data.is_empty() && io.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}
