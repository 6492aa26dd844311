//! A client's request body on its way to a backend, whatever codec read it and whichever
//! upstream sends it: counted into the backend's `bytes_in`, and watched for how far the client
//! got with it and how long the proxy waited on the client ([`BodyProgress`]), which decides
//! whose a failure mid-upload is (`exchange::Failure::given`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::exchange::{BodyAt, summed_wait};
use crate::backends::BackendState;

/// A client's request body as its codec reads it: hyper's (HTTP/1.x), or an HTTP/2 stream's.
pub enum ClientBody {
    Http1(Incoming),
    H2(super::h2_server::H2Body),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = super::h2_server::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
        }
    }
}

/// A client's request body on its way to a backend, counted into that backend's `bytes_in`.
pub struct RequestBody {
    /// `None`: no body (a request replayed on another backend carries none).
    pub inner: Option<ClientBody>,
    /// The backend whose `bytes_in` counts the body.
    pub bytes_in: Option<Arc<BackendState>>,
    /// How far the client's body got, and whether the proxy is waiting on the client: what
    /// decides whose a failure is ([`super::exchange::Failure::given`]).
    pub progress: Option<Arc<BodyProgress>>,
}

/// Whether a request body ended, or broke off, on the client's side, and how long the proxy
/// has waited on the client for it (coarse clock): what [`super::exchange::Failure::given`] reads.
#[derive(Default)]
pub struct BodyProgress {
    failed: AtomicBool,
    done: AtomicBool,
    /// The coarse clock's reading, plus one, when the proxy last asked the client for more of
    /// its body and had none; 0 while a frame is in hand.
    waiting_since: AtomicU64,
    /// Milliseconds of the waits on the client that have ended.
    waited: AtomicU64,
    /// The coarse clock's reading, plus one, when the proxy stopped sending the body before it
    /// was whole ([`BodyProgress::cut`]); 0 while it is sent. The wait then stops there.
    cut_at: AtomicU64,
    /// The body was cut by the backend's answer: what fails after is the backend's.
    answered: AtomicBool,
}

impl BodyProgress {
    /// Where the body stands now, or stood when the backend closed, for judging a failure:
    /// done once the backend's answer cut it (what fails after is the backend's).
    pub fn at(&self) -> BodyAt {
        if self.answered.load(Relaxed) {
            return BodyAt::Done;
        }
        self.pace()
    }

    /// Where the body stands now, or stood when it was cut, for judging the backend's answer
    /// (`exchange::Attempts::answered`).
    pub fn pace(&self) -> BodyAt {
        if self.failed.load(Relaxed) {
            return BodyAt::BrokeOff;
        }
        if self.done.load(Relaxed) {
            return BodyAt::Done;
        }
        let now = match self.cut_at.load(Relaxed) {
            0 => crate::clock::coarse_ms(),
            cut => cut - 1,
        };
        let since = self.waiting_since.load(Relaxed);
        let quiet = (since != 0).then(|| now.saturating_sub(since - 1));
        BodyAt::Unfinished {
            quiet,
            waited: self.waited.load(Relaxed) + summed_wait(quiet.unwrap_or(0)),
        }
    }

    /// The proxy stops sending the body before it is whole: the backend answered (`closed`
    /// false), and what fails after is the backend's, or it closed. Either way the body is
    /// judged as it stood then.
    pub fn cut(&self, closed: bool) {
        let now = crate::clock::coarse_ms() + 1;
        let _ = self.cut_at.compare_exchange(0, now, Relaxed, Relaxed);
        if !closed {
            self.answered.store(true, Relaxed);
        }
    }

    /// Notes one poll of the client's body: `Pending` starts a wait (unless one is on), a
    /// frame or the end ends it. `ended` is asked only of a frame.
    fn polled<T>(
        &self,
        frame: &Poll<Option<Result<Frame<Bytes>, T>>>,
        ended: impl FnOnce() -> bool,
    ) {
        let Poll::Ready(frame) = frame else {
            if self.waiting_since.load(Relaxed) == 0 {
                self.waiting_since
                    .store(crate::clock::coarse_ms() + 1, Relaxed);
            }
            return;
        };
        // Added before the wait is cleared (the poller is the one writer): `at` read between
        // the two counts the wait twice, in the client's favour, never not at all.
        let since = self.waiting_since.load(Relaxed);
        if since != 0 {
            let quiet = crate::clock::coarse_ms().saturating_sub(since - 1);
            self.waited.fetch_add(summed_wait(quiet), Relaxed);
            self.waiting_since.store(0, Relaxed);
        }
        match frame {
            Some(Err(_)) => self.failed.store(true, Relaxed),
            None => self.done.store(true, Relaxed),
            Some(Ok(_)) if ended() => self.done.store(true, Relaxed),
            Some(Ok(_)) => {}
        }
    }
}

impl RequestBody {
    /// The proxy stops sending the body before it is whole ([`BodyProgress::cut`]).
    pub fn cut(&self, closed: bool) {
        if let Some(progress) = &self.progress {
            progress.cut(closed);
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = super::h2_server::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if let Some(progress) = &this.progress {
            progress.polled(&polled, || inner.is_end_stream());
        }
        let frame = std::task::ready!(polled);
        if let (Some(state), Some(data)) = (
            &this.bytes_in,
            frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()),
        ) {
            state.metrics.count().bytes_in.inc_by(data.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Polled = Poll<Option<Result<Frame<Bytes>, ()>>>;

    fn data() -> Polled {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
    }

    /// `progress`'s wait as if it had begun `ms` ago.
    fn begun_ago(progress: &BodyProgress, ms: u64) {
        let since = crate::clock::coarse_ms() - ms + 1;
        progress.waiting_since.store(since, Relaxed);
    }

    fn quiet_and_waited(progress: &BodyProgress) -> (Option<u64>, u64) {
        match progress.at() {
            BodyAt::Unfinished { quiet, waited } => (quiet, waited),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn waits_on_the_client_add_up_from_a_poll_without_a_frame_to_the_next_frame() {
        let progress = BodyProgress::default();
        assert_eq!(quiet_and_waited(&progress), (None, 0));
        progress.polled(&Polled::Pending, || false);
        assert!(matches!(quiet_and_waited(&progress), (Some(q), _) if q < 1000));
        // A second poll without a frame goes on with the wait begun before.
        begun_ago(&progress, 600);
        progress.polled(&Polled::Pending, || false);
        let (quiet, waited) = quiet_and_waited(&progress);
        assert!(quiet.is_some_and(|q| q >= 600) && waited == quiet.unwrap());
        // A frame ends the wait and keeps its length (a wait under the floor adds nothing).
        progress.polled(&data(), || false);
        let (quiet, waited) = quiet_and_waited(&progress);
        assert!(quiet.is_none() && (600..1000).contains(&waited), "{waited}");
        // The next wait adds to it.
        progress.polled(&Polled::Pending, || false);
        begun_ago(&progress, 500);
        let (quiet, total) = quiet_and_waited(&progress);
        assert!(quiet.is_some_and(|q| q >= 500) && total >= waited + 500);
        progress.polled(&data(), || true);
        assert_eq!(progress.at(), BodyAt::Done);

        let ended = BodyProgress::default();
        ended.polled(&Polled::Ready(None), || {
            unreachable!("asked only of a frame")
        });
        assert_eq!(ended.at(), BodyAt::Done);

        let broken = BodyProgress::default();
        broken.polled(&Polled::Ready(Some(Err(()))), || false);
        assert_eq!(broken.at(), BodyAt::BrokeOff);
    }

    #[test]
    fn a_body_cut_by_a_close_is_judged_as_it_stood_then_and_one_cut_by_an_answer_is_done() {
        let closed = BodyProgress::default();
        closed.polled(&Polled::Pending, || false);
        begun_ago(&closed, 500);
        closed.cut(true);
        let at = quiet_and_waited(&closed);
        assert!(
            matches!(at, (Some(q), _) if (500..1000).contains(&q)),
            "{at:?}"
        );
        // However long the backend then takes to fail: two ticks of the coarse clock on, the
        // same.
        std::thread::sleep(2 * crate::clock::COARSE_LAG);
        assert_eq!(quiet_and_waited(&closed), at);

        // Cut by an answer: a failure after it is the backend's, and the answer is judged by
        // the body as it stood.
        let answered = BodyProgress::default();
        answered.polled(&Polled::Pending, || false);
        begun_ago(&answered, 1500);
        answered.cut(false);
        assert_eq!(answered.at(), BodyAt::Done);
        assert!(answered.pace().slow(), "{:?}", answered.pace());
    }
}
