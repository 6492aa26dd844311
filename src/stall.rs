//! Bounds on a connection of switchyard's own HTTP listeners (the admin API and the relay): how
//! long a request head may take, and how long a connection may sit with no byte moving while
//! it waits on its client — between requests, while a request body arrives, while the client
//! does not read a response. Without them, a client that opens connections and sends nothing,
//! drips a body, or never reads an answer holds a connection (and its file descriptor, and a
//! response's memory) for ever.
//!
//! [`Guarded`] wraps the socket: a read or a write that waits for longer than the idle timeout
//! since the last byte moved fails, and hyper closes the connection. The wait does not count
//! while switchyard itself prepares an answer (a big body on the blocking pool), nor for the
//! reads of a connection that serves an event stream (`text/event-stream`: the relay's
//! `/v2/events`): its client sends nothing more. A stream's write that cannot go on (the kernel's
//! buffers are full: its reader stopped) fails once it has waited for the idle timeout. A
//! request body must also arrive whole within the idle timeout of the moment it was first
//! waited for: a body that drips a byte now and then would otherwise restart the idle timer for
//! ever.
//!
//! [`Slots`] caps the connections a listener holds open at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A listener's two bounds (`admin.header_timeout`, `admin.idle_timeout`, and the relay's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// A request head must arrive whole within this long of the moment the connection waits
    /// for it (its opening, or the end of the previous response), however slowly it drips.
    pub header: Duration,
    /// No byte moved either way for this long while the connection waits on its client:
    /// closed.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }
}

/// What the connection's service tells its socket: answers being prepared, and whether it
/// serves an event stream.
pub struct Activity {
    preparing: AtomicUsize,
    /// The service waits for the request body ([`Watched`]): the wait is on the client again.
    awaiting_body: AtomicBool,
    streaming: AtomicBool,
    /// When the connection opened: the origin of `body_since_ms`.
    opened: Instant,
    /// When the request body now being read was first waited for, in ms after `opened`
    /// (`NO_BODY`: none is). A body must arrive whole within the idle timeout of it, however
    /// slowly it drips (each byte would otherwise restart the idle timer).
    body_since_ms: AtomicU64,
}

const NO_BODY: u64 = u64::MAX;

impl Activity {
    fn new(opened: Instant) -> Activity {
        Activity {
            preparing: AtomicUsize::new(0),
            awaiting_body: AtomicBool::new(false),
            streaming: AtomicBool::new(false),
            opened,
            body_since_ms: AtomicU64::new(NO_BODY),
        }
    }

    /// How long the body now being read has been waited for.
    fn body_waited(&self, now: Instant) -> Option<Duration> {
        let since = self.body_since_ms.load(Ordering::Relaxed);
        (since != NO_BODY).then(|| {
            now.saturating_duration_since(self.opened)
                .saturating_sub(Duration::from_millis(since))
        })
    }
}

/// Held while an answer is prepared (see [`Activity::preparing`]).
pub struct Preparing(Arc<Activity>);

impl Drop for Preparing {
    fn drop(&mut self) {
        self.0.preparing.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// The connection waits on switchyard, not on its client, until the guard is dropped.
    pub fn preparing(self: &Arc<Self>) -> Preparing {
        self.preparing.fetch_add(1, Ordering::Relaxed);
        Preparing(self.clone())
    }

    /// Looks at an answer before it is sent: an event stream (a GET's: the answer to a HEAD
    /// has no body, and the connection goes on to its next request) frees its connection's
    /// reads from the idle timeout for good.
    pub fn answering<B>(&self, method: &http::Method, response: &http::Response<B>) {
        let stream = method == http::Method::GET
            && response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if stream {
            self.streaming.store(true, Ordering::Relaxed);
        }
    }

    fn exempt(&self) -> bool {
        (self.preparing.load(Ordering::Relaxed) > 0 && !self.awaiting_body.load(Ordering::Relaxed))
            || self.streaming.load(Ordering::Relaxed)
    }

    /// The request's body, read under the idle timeout even while its answer is prepared.
    pub fn watch<B>(self: &Arc<Self>, request: http::Request<B>) -> http::Request<Watched<B>> {
        request.map(|inner| Watched {
            inner,
            activity: self.clone(),
        })
    }
}

/// A request body whose reader tells the connection that it waits on the client.
pub struct Watched<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let activity = &self.activity;
        activity
            .awaiting_body
            .store(polled.is_pending(), Ordering::Relaxed);
        match &polled {
            Poll::Pending if activity.body_since_ms.load(Ordering::Relaxed) == NO_BODY => {
                let since = Instant::now().saturating_duration_since(activity.opened);
                activity
                    .body_since_ms
                    .store(since.as_millis() as u64, Ordering::Relaxed);
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                activity.body_since_ms.store(NO_BODY, Ordering::Relaxed);
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        self.activity.awaiting_body.store(false, Ordering::Relaxed);
        self.activity
            .body_since_ms
            .store(NO_BODY, Ordering::Relaxed);
    }
}

/// A socket that fails a read or write that waited past the idle timeout (see the module).
pub struct Guarded<T> {
    io: T,
    idle: Duration,
    /// When a byte last moved (or the connection opened).
    last: Instant,
    /// Since when a write has waited without a byte going out (an event stream's deadline).
    write_blocked_since: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
    activity: Arc<Activity>,
}

impl<T> Guarded<T> {
    pub fn new(io: T, idle: Duration) -> (Guarded<T>, Arc<Activity>) {
        let now = Instant::now();
        let activity = Arc::new(Activity::new(now));
        let guarded = Guarded {
            io,
            idle,
            last: now,
            write_blocked_since: None,
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
            activity: activity.clone(),
        };
        (guarded, activity)
    }

    /// An operation is waiting: fails it once nothing moved for the idle timeout, unless the
    /// connection is exempt now; otherwise makes sure the task wakes at the deadline.
    fn waiting(&mut self, cx: &mut Context<'_>, writing: bool) -> Poll<io::Result<()>> {
        // An event stream's write that waits on a reader that stopped: never exempt.
        let stream_write = writing && self.activity.streaming.load(Ordering::Relaxed);
        if self.activity.exempt() && !stream_write {
            // Woken by the service's own progress; counted again from there.
            self.last = Instant::now();
            return Poll::Pending;
        }
        let deadline = if stream_write {
            *self.write_blocked_since.get_or_insert_with(Instant::now) + self.idle
        } else {
            self.last + self.idle
        };
        if Instant::now() >= deadline {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no byte moved for the idle timeout",
            )));
        }
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no byte moved for the idle timeout",
            )));
        }
        Poll::Pending
    }

    fn moved(&mut self, writing: bool) {
        self.last = Instant::now();
        if writing {
            self.write_blocked_since = None;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this
            .activity
            .body_waited(Instant::now())
            .is_some_and(|waited| waited > this.idle)
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request body did not arrive whole within the idle timeout",
            )));
        }
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.moved(false);
                Poll::Ready(result)
            }
            Poll::Pending => {
                ready!(this.waiting(cx, false))?;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.moved(true);
                Poll::Ready(result)
            }
            Poll::Pending => {
                ready!(this.waiting(cx, true))?;
                Poll::Pending
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                this.moved(true);
                Poll::Ready(result)
            }
            Poll::Pending => {
                ready!(this.waiting(cx, true))?;
                Poll::Pending
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => {
                ready!(this.waiting(cx, true))?;
                Poll::Pending
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => {
                ready!(this.waiting(cx, true))?;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_a_busy_or_streaming_one_does_not() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut guarded, activity) = Guarded::new(a, Duration::from_secs(5));
        let mut buf = [0u8; 8];
        // Bytes keep it alive.
        b.write_all(b"x").await.unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 1);
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // A writer whose peer does not read: timed out too.
        let (a, _b) = tokio::io::duplex(4);
        let (mut guarded, _) = Guarded::new(a, Duration::from_secs(5));
        let err = guarded.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Preparing an answer, or streaming events: no timeout.
        let preparing = activity.preparing();
        let (a, _b) = tokio::io::duplex(4);
        let (mut guarded, activity) = Guarded::new(a, Duration::from_secs(5));
        let _preparing = activity.preparing();
        let read = tokio::time::timeout(Duration::from_secs(60), guarded.read(&mut buf)).await;
        assert!(read.is_err(), "still waiting");
        drop((preparing, _preparing));
        let (a, _b) = tokio::io::duplex(4);
        let (mut guarded, activity) = Guarded::new(a, Duration::from_secs(5));
        let stream = http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(())
            .unwrap();
        // The answer to a HEAD streams nothing: the connection stays under the timeout.
        activity.answering(&http::Method::HEAD, &stream);
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let (a, _b) = tokio::io::duplex(4);
        let (mut guarded, activity) = Guarded::new(a, Duration::from_secs(5));
        activity.answering(&http::Method::GET, &stream);
        let read = tokio::time::timeout(Duration::from_secs(60), guarded.read(&mut buf)).await;
        assert!(read.is_err(), "still waiting");
        // But a stream whose reader stopped: its write fails once it waited the idle timeout.
        let err = guarded.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}

/// A listener's connection slots (`admin.max_connections`; two per relay subscriber and 256
/// more): a connection holds one while it is open; one accepted with none left is closed at once
/// and counted, so a client that opens connections and holds them cannot take every file
/// descriptor (they are shared with the proxy).
#[derive(Clone)]
pub struct Slots {
    free: Arc<tokio::sync::Semaphore>,
    /// Slots past the limit for connections that may only ask a probe (see
    /// [`Slots::take_or_probe`]); none on the relay.
    probes: Option<Arc<tokio::sync::Semaphore>>,
    refused: prometheus_client::metrics::counter::Counter,
}

/// A connection admitted past the limit on a probe slot: it is answered once, and only if it
/// asks a probe (`/healthz`, ...), under this header timeout.
pub const PROBE_SLOTS: usize = 8;
/// How long a connection on a probe slot may take to send its one request head.
pub const PROBE_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection's admission: a slot, and whether it was a probe slot.
pub struct Admitted {
    pub slot: Slot,
    /// Taken past the limit: serve one probe, nothing else.
    pub probe_only: bool,
}

/// One open connection's slot, given back when dropped.
pub type Slot = tokio::sync::OwnedSemaphorePermit;

impl Slots {
    /// `limit` connections at once; `refused` counts the ones closed for want of a slot.
    pub fn new(limit: usize, refused: prometheus_client::metrics::counter::Counter) -> Slots {
        Slots {
            free: Arc::new(tokio::sync::Semaphore::new(
                limit.min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            probes: None,
            refused,
        }
    }

    /// As [`Slots::new`], with [`PROBE_SLOTS`] more for probes: a liveness probe still gets its
    /// answer while clients hold every slot, so a flooded admin port is not taken for a dead
    /// process (a probe slot is held for at most [`PROBE_HEADER_TIMEOUT`] and one answer).
    pub fn with_probe_reserve(
        limit: usize,
        refused: prometheus_client::metrics::counter::Counter,
    ) -> Slots {
        Slots {
            probes: Some(Arc::new(tokio::sync::Semaphore::new(PROBE_SLOTS))),
            ..Slots::new(limit, refused)
        }
    }

    /// A slot for a connection just accepted, or past the limit a probe slot; `None`
    /// (counted): none of either is left, drop the connection.
    pub fn take_or_probe(&self) -> Option<Admitted> {
        if let Ok(slot) = self.free.clone().try_acquire_owned() {
            return Some(Admitted {
                slot,
                probe_only: false,
            });
        }
        let probe = self
            .probes
            .as_ref()
            .and_then(|p| p.clone().try_acquire_owned().ok());
        match probe {
            Some(slot) => Some(Admitted {
                slot,
                probe_only: true,
            }),
            None => {
                self.refused.inc();
                None
            }
        }
    }

    /// A slot for a connection just accepted, held until it closes; `None` (counted): none is
    /// left, drop the connection.
    pub fn take(&self) -> Option<Slot> {
        let slot = self.free.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.refused.inc();
        }
        slot
    }
}
