//! The HTTP/2 server side: one task per client connection drives the connection and all of
//! its streams (no task per stream), hands each request to the caller's handler (`http`'s one
//! exchange), and writes the answer back — its head, its body as the stream's flow control
//! allows, its trailers. Two codecs serve it: our own (`h2codec`, driven by [`driver`], the
//! default) and the `h2` crate (this file's `serve` below, `SWITCHYARD_H2_CODEC=0`), kept as a
//! way back until the codec has proved itself. Either way the protections are the same: a
//! bound on concurrent streams and on the header list, the resets a client may provoke (rapid
//! reset), the handshake within the client header timeout; a connection flooding control
//! frames is sent GOAWAY(ENHANCE_YOUR_CALM) and closed (`h2_frames`' budget); a stream whose
//! code panics is reset (INTERNAL_ERROR) without ending its connection's other streams. A
//! connection's streams whose client still owes its request body hold at most
//! `MAX_UNFINISHED_UPLOADS` backend connections at once ([`H2Body::claim_upload`]); a stream
//! past that is refused with REFUSED_STREAM, which clients retry. Knows nothing of routing: it
//! imports no other proxy module but `headers`, `h2_frames` and `h2codec`.
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

mod driver;
mod streams;
use streams::{Idle, IdleTurn, Inbox, Streams};

/// What a connection tells its caller (to count and log): it ends for a flood, or one of its
/// streams was reset after a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incident {
    Flood(super::h2_frames::Flood),
    StreamPanic,
    /// A stream refused (REFUSED_STREAM): its connection already had `MAX_UNFINISHED_UPLOADS`
    /// streams holding a backend connection while their client still owed the body.
    UploadRefused,
    /// The connection ends (GOAWAY ENHANCE_YOUR_CALM): its client reset more than half of at
    /// `h2_frames::RAPID_RESET_MIN_STREAMS` streams after they were accepted and before their
    /// answer's head (the rapid reset that `MAX_PENDING_ACCEPT_RESETS` does not see). Carries
    /// the streams opened and those reset early.
    RapidReset {
        opened: u32,
        reset: u32,
    },
}

/// The error a stream's request body ends with (a reset, a malformed frame).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// What a connection is held to (the codec's settings and limits).
pub struct Config {
    /// SETTINGS_MAX_HEADER_LIST_SIZE: a bigger head is refused (431 / reset) by the codec.
    pub max_header_list_size: u32,
    /// The client preface must arrive within it.
    pub handshake_timeout: Duration,
    /// A connection with no open stream for this long is sent GOAWAY, and closed
    /// `FIRST_REQUEST_GRACE` later if its client has not closed it (an idle keep-alive, or a
    /// client that sent its preface and nothing else).
    pub idle_timeout: Duration,
    /// A response whose stream has had no flow-control window for this long (a client that
    /// stopped reading it, or keeps its window at 0) is reset, so that its backend connection
    /// and buffers are released.
    pub stall_timeout: Duration,
    /// Served by our own codec (`driver`, on `h2codec`) instead of the `h2` crate.
    pub codec: bool,
}

/// Whether connections are served by our own codec (`driver`, the default) rather than the
/// `h2` crate, which `SWITCHYARD_H2_CODEC=0` selects (read once): kept as a way back while the
/// codec proves itself in production (issue #21), then removed with `h2_frames::Guarded`.
pub fn own_codec() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| std::env::var_os("SWITCHYARD_H2_CODEC").is_none_or(|v| v != "0"))
}

/// Streams open at once on one connection: HAProxy's default. Each may hold a backend
/// connection and a send buffer, so it bounds what one client connection can pin.
const MAX_CONCURRENT_STREAMS: u32 = 100;
const CONN_WINDOW: u32 = 1024 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// Response bytes the codec buffers per stream beyond what the socket took: with a client that
/// opens a huge window and then stops reading, a connection holds at most
/// `MAX_CONCURRENT_STREAMS` times this (6.4 MiB; it was 200 × 400 KiB = 80 MiB).
const MAX_SEND_BUFFER: usize = 64 * 1024;
/// Streams the codec resets for the client's errors before it ends the connection.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Streams of one connection that may hold a backend connection of their own while their
/// client still owes the request body (HEADERS without END_STREAM, then the body slowly, or
/// never). Without it one connection could pin `MAX_CONCURRENT_STREAMS` backend connections
/// with bodies that never come. Past it a stream is refused before anything is sent for it
/// (REFUSED_STREAM, RFC 9113 §8.7: a client retries it safely), as HAProxy and Envoy refuse
/// the streams past a connection's budget; waiting instead would leave the waiting streams'
/// DATA unread in the shared connection window, which can stall the uploads that hold the
/// places until their client timeout.
pub const MAX_UNFINISHED_UPLOADS: usize = 16;
/// Streams a client opens and resets before they are accepted (rapid reset, CVE-2023-44487).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Rounds of (streams, connection) polling in one wake before the task yields to the runtime.
const ROUNDS_PER_POLL: usize = 32;
/// How long a connection accepted just before a stop may take to open its first stream,
/// which is then served.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Serves one HTTP/2 connection until it ends: `handle` answers each request; `stopping`
/// resolving asks the connection to finish its streams and close (after its first stream, for
/// a connection that has not opened one yet). `report` hears of its incidents.
pub async fn serve<'a, S, H, F, B>(
    io: S,
    config: &Config,
    stopping: impl Future<Output = ()>,
    handle: H,
    report: &'a (dyn Fn(Incident) + Sync),
) where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<H2Body>) -> F,
    F: Future<Output = Response<B>> + Send + 'a,
    B: Body<Data = Bytes> + StreamBody + Send + 'a,
    B::Error: Into<BodyError>,
{
    if config.codec {
        return driver::serve(io, config, stopping, handle, report).await;
    }
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(config.max_header_list_size)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let flood = std::sync::OnceLock::new();
    let handshake = builder.handshake::<_, Bytes>(super::h2_frames::Guarded::new(io, &flood));
    let mut conn = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!("h2 handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    // Before `streams`: its workers borrow it.
    let resets = EarlyResets::default();
    let mut streams = Streams::new();
    let uploads = Arc::new(Uploads::default());
    let stall = config.stall_timeout;
    // A slot's worker: serves the streams handed to its slot one after another.
    let (handle, resets) = (&handle, &resets);
    let worker = |inbox: Arc<Inbox<_>>| async move {
        loop {
            let (req, respond) = inbox.next().await;
            exchange((handle, req), respond, stall, report, resets).await;
            inbox.finished();
        }
    };
    let mut stopping = std::pin::pin!(stopping);
    let mut stop: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut closing = false;
    let mut opened = false;
    let mut idle = Idle::new(config.idle_timeout);
    let mut calmed = false;
    let ended = poll_fn(|cx| {
        streams.register(cx.waker());
        if !closing {
            if stop.is_none() && stopping.as_mut().poll(cx).is_ready() {
                stop = Some(Box::pin(tokio::time::sleep(FIRST_REQUEST_GRACE)));
            }
            if let Some(grace) = &mut stop
                && (opened || grace.as_mut().poll(cx).is_ready())
            {
                conn.graceful_shutdown();
                closing = true;
            }
        }
        let mut rounds = 0;
        loop {
            streams.poll_woken();
            if !calmed && let Some(&flooded) = flood.get() {
                // The IO reads no more: GOAWAY now, then the codec closes the connection.
                report(Incident::Flood(flooded));
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                calmed = true;
                closing = true;
            }
            if !calmed && let Some((opened, reset)) = resets.abusive() {
                report(Incident::RapidReset { opened, reset });
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                calmed = true;
                closing = true;
            }
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    opened = true;
                    resets.opened.fetch_add(1, Ordering::Relaxed);
                    let req =
                        req.map(|body| H2Body(BodyKind::Crate(CrateBody::new(body, &uploads))));
                    streams.push((req, respond), worker);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending if !calmed && flood.get().is_some() => {}
                Poll::Pending if !streams.any_woken() => break,
                Poll::Pending => {}
            }
            rounds += 1;
            if rounds == ROUNDS_PER_POLL {
                // Still busy: let the runtime run others (and renew the task's budget) first.
                cx.waker().wake_by_ref();
                break;
            }
        }
        match idle.poll(cx, &mut streams, closing) {
            IdleTurn::Wait => Poll::Pending,
            IdleTurn::End => Poll::Ready(Ok(())),
            IdleTurn::GoAway => {
                // Written by the next poll of the connection.
                conn.graceful_shutdown();
                closing = true;
                Poll::Pending
            }
        }
    })
    .await;
    if let Err(e) = ended {
        tracing::debug!("h2 connection ended: {e}");
    }
}

/// One stream: the handler's answer (dropped, with whatever it was doing, when the client
/// resets the stream first), then the answer written. A panic in the handler or the body ends
/// this stream alone, reset with INTERNAL_ERROR. The handler is called here, not by the caller:
/// its future is made in this one's state instead of moved into it (a stream's future is
/// several KiB, and each move of it is a copy).
async fn exchange<H, F, B>(
    (handle, req): (&H, Request<H2Body>),
    mut respond: h2::server::SendResponse<Bytes>,
    stall: Duration,
    report: &(dyn Fn(Incident) + Sync),
    resets: &EarlyResets,
) where
    H: Fn(Request<H2Body>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + StreamBody,
    B::Error: Into<BodyError>,
{
    let opened_at = std::time::Instant::now();
    let mut answer = std::pin::pin!(handle(req));
    let response = tokio::select! {
        biased;
        response = poll_fn(|cx| unwound(|| answer.as_mut().poll(cx))) => response,
        _ = poll_fn(|cx| respond.poll_reset(cx)) => {
            if opened_at.elapsed() < super::h2_frames::EARLY_RESET_WITHIN {
                resets.reset.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    };
    let Ok(response) = response else {
        report(Incident::StreamPanic);
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    };
    let (mut parts, mut body) = response.into_parts();
    if parts.extensions.get::<AnsweredHere>().is_some() {
        resets.answered_here();
    }
    if parts.extensions.get::<RefuseStream>().is_some() {
        report(Incident::UploadRefused);
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    super::headers::strip_hop_by_hop(&mut parts.headers);
    // The `h2` crate sends a map: the backend's fields held as bytes (no hop-by-hop ones among
    // them) go in first, after the map's own were stripped.
    if let Some(head) = body.take_raw_head() {
        head.into_map(&mut parts.headers);
    }
    let end = body.is_end_stream();
    if !end
        && let Some(n) = body.size_hint().exact()
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts.headers.insert(header::CONTENT_LENGTH, n.into());
    }
    let head = Response::from_parts(parts, ());
    let send = match respond.send_response(head, end) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!("h2 response not sent: {e}");
            return;
        }
    };
    if !end {
        pipe(body, send, stall, report).await;
    }
}

/// A panic inside one poll of a stream's code, caught so that it ends the stream only.
struct Panicked;

fn unwound<T>(poll: impl FnOnce() -> Poll<T>) -> Poll<Result<T, Panicked>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(poll)) {
        Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(_) => Poll::Ready(Err(Panicked)),
    }
}

/// Why the server gave up on a response body before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOff {
    /// The client's flow-control window stayed closed for the stall timeout.
    Stalled,
    /// Polling the body panicked.
    Panicked,
}

/// A response body as an HTTP/2 server sends it: told why the server gave up on it (the
/// access log says who ended an answer), and holding the backend's fields when they were
/// left as bytes (`upstream_h1::RawHead`), which go after `:status` and before the map's.
pub trait StreamBody {
    fn cut_off(self: Pin<&mut Self>, why: CutOff);

    /// No default: a body that wraps another and does not pass this on would send an answer
    /// without the backend's fields.
    fn take_raw_head(&mut self) -> Option<super::upstream_h1::RawHead>;
}

/// Writes a response body to its stream: each piece once the stream has room for it (the
/// client's flow control is the backpressure), trailers as they come; a broken body resets
/// the stream, a reset stream drops the body, and a stream without room for `stall` is reset.
async fn pipe<B>(
    body: B,
    mut send: h2::SendStream<Bytes>,
    stall: Duration,
    report: &(dyn Fn(Incident) + Sync),
) where
    B: Body<Data = Bytes> + StreamBody,
    B::Error: Into<BodyError>,
{
    let mut body = std::pin::pin!(body);
    loop {
        // Room for at least a byte before the next piece is read: the codec buffers the rest
        // of a piece up to the stream's window and its send buffer.
        send.reserve_capacity(1);
        // With room already, the piece is read at once (a stream reset meanwhile fails the
        // send, or is seen while the body waits).
        let ready = if send.capacity() > 0 {
            true
        } else {
            // Waiting on the client's window: bounded, so a client that stops reading cannot
            // hold the backend connection and the body's buffers for ever.
            match tokio::time::timeout(stall, poll_fn(|cx| room(&mut send, cx))).await {
                Ok(ready) => ready,
                Err(_) => {
                    tracing::debug!("h2 response stalled for {stall:?} without window: reset");
                    body.as_mut().cut_off(CutOff::Stalled);
                    send.send_reset(h2::Reason::CANCEL);
                    return;
                }
            }
        };
        if !ready {
            return;
        }
        let frame = tokio::select! {
            biased;
            frame = poll_fn(|cx| unwound(|| body.as_mut().poll_frame(cx))) => frame,
            _ = poll_fn(|cx| send.poll_reset(cx)) => return,
        };
        let Ok(frame) = frame else {
            body.as_mut().cut_off(CutOff::Panicked);
            report(Incident::StreamPanic);
            send.send_reset(h2::Reason::INTERNAL_ERROR);
            return;
        };
        let sent = match frame {
            None => send.send_data(Bytes::new(), true),
            Some(Err(e)) => {
                tracing::debug!("response body broken: {}", e.into());
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    match send.send_data(data, end) {
                        Ok(()) if !end => continue,
                        sent => sent,
                    }
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => send.send_trailers(trailers),
                    Err(_) => continue,
                },
            },
        };
        if let Err(e) = sent {
            tracing::debug!("h2 response body not sent: {e}");
        }
        return;
    }
}

/// Whether the stream has room for a byte (waiting for it), or was reset.
fn room(send: &mut h2::SendStream<Bytes>, cx: &mut TaskContext<'_>) -> Poll<bool> {
    if send.capacity() == 0 {
        loop {
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(0)) => {}
                Some(Ok(_)) => break,
                Some(Err(_)) | None => return Poll::Ready(false),
            }
        }
    } else if send.poll_reset(cx).is_ready() {
        return Poll::Ready(false);
    }
    Poll::Ready(true)
}

/// Marks a handler's answer as a refusal of its stream: the stream is reset with
/// REFUSED_STREAM instead of answered (nothing of the request was processed, so the client may
/// send it again).
#[derive(Debug, Clone, Copy)]
pub struct RefuseStream;

/// Marks a handler's answer as given here, no backend having answered (no route, 401, 403, a
/// limit, no backend reachable): its stream does not count as opened against early resets
/// (`h2_frames::rapid_reset`).
#[derive(Debug, Clone, Copy)]
pub struct AnsweredHere;

/// A connection's streams accepted (less those answered here), and those its client reset
/// before their answer's head.
#[derive(Default)]
struct EarlyResets {
    opened: AtomicU32,
    reset: AtomicU32,
}

impl EarlyResets {
    /// `Some((opened, reset))` once `h2_frames::rapid_reset` says the client is abusive.
    fn abusive(&self) -> Option<(u32, u32)> {
        let opened = self.opened.load(Ordering::Relaxed);
        let reset = self.reset.load(Ordering::Relaxed);
        super::h2_frames::rapid_reset(opened, reset).then_some((opened, reset))
    }

    /// A stream counted as opened was answered here.
    fn answered_here(&self) {
        let _ = self
            .opened
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// A connection's count of streams holding one of its `MAX_UNFINISHED_UPLOADS` places.
#[derive(Default)]
struct Uploads(AtomicUsize);

impl Uploads {
    /// Takes a place if fewer than `max` are taken.
    fn take(&self, max: usize) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client's request body on one HTTP/2 stream, from whichever server codec serves it.
pub struct H2Body(BodyKind);

enum BodyKind {
    Crate(CrateBody),
    Codec(driver::CodecBody),
}

impl H2Body {
    /// Called before the request goes to a backend over a connection of its own, for a body
    /// that has not ended (`is_end_stream`): when the client still owes body, takes one of
    /// its connection's `MAX_UNFINISHED_UPLOADS` places (held until the body ends), or
    /// `Err(RefuseStream)` when all are taken. A body already received whole needs no place,
    /// nor does a stream the client reset (its body fails when read: the client's fault).
    pub async fn claim_upload(&mut self) -> Result<(), RefuseStream> {
        match &mut self.0 {
            BodyKind::Crate(body) => body.claim_upload().await,
            BodyKind::Codec(body) => body.claim(),
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            BodyKind::Crate(body) => Pin::new(body).poll_frame(cx),
            BodyKind::Codec(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            BodyKind::Crate(body) => body.is_end_stream(),
            BodyKind::Codec(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            BodyKind::Crate(body) => body.size_hint(),
            BodyKind::Codec(body) => body.size_hint(),
        }
    }
}

/// A client's request body on one stream of the `h2` crate: its DATA frames (the window given
/// back as each is taken), then its trailers.
struct CrateBody {
    inner: h2::RecvStream,
    data_done: bool,
    /// DATA taken from the codec by [`H2Body::claim_upload`] before the body was read, handed
    /// on first; its window is given back as each piece is handed on, so the codec's window
    /// still bounds what is held. `None` for most bodies, which never have any.
    early: Option<VecDeque<Bytes>>,
    /// The connection's places.
    uploads: Arc<Uploads>,
    /// One of the places is held: given back when the body ends, breaks or is dropped.
    holding: bool,
}

impl CrateBody {
    fn new(inner: h2::RecvStream, uploads: &Arc<Uploads>) -> CrateBody {
        CrateBody {
            inner,
            data_done: false,
            early: None,
            uploads: uploads.clone(),
            holding: false,
        }
    }

    /// Called before the request goes to a backend over a connection of its own, for a body
    /// that has not ended (`is_end_stream`): when the client still owes body, takes one of its connection's `MAX_UNFINISHED_UPLOADS` places
    /// (held until the body ends), or `Err(RefuseStream)` when all are taken. A body already
    /// received whole (waiting in the codec) needs no place, nor does a stream the client
    /// reset (its body fails when read: the client's fault).
    async fn claim_upload(&mut self) -> Result<(), RefuseStream> {
        poll_fn(|cx| Poll::Ready(self.claim(cx))).await
    }

    fn claim(&mut self, cx: &mut TaskContext<'_>) -> Result<(), RefuseStream> {
        if self.holding {
            return Ok(());
        }
        // What has arrived already: a body whose END_STREAM is in owes nothing more.
        while !self.data_done {
            match self.inner.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    self.early.get_or_insert_default().push_back(data);
                }
                Poll::Ready(None) => self.data_done = true,
                Poll::Ready(Some(Err(_))) => return Ok(()),
                Poll::Pending => break,
            }
        }
        if self.data_done {
            return Ok(());
        }
        if self.uploads.take(MAX_UNFINISHED_UPLOADS) {
            self.holding = true;
            Ok(())
        } else {
            Err(RefuseStream)
        }
    }

    /// The client owes nothing more (or never will): its place goes back.
    fn release(&mut self) {
        if std::mem::take(&mut self.holding) {
            self.uploads.give_back();
        }
    }

    /// A piece of DATA handed on: its window given back to the client.
    fn early_empty(&self) -> bool {
        self.early.as_ref().is_none_or(|early| early.is_empty())
    }

    fn handed(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let _ = self.inner.flow_control().release_capacity(data.len());
        if self.holding && self.early_empty() && self.inner.is_end_stream() {
            self.release();
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl Drop for CrateBody {
    fn drop(&mut self) {
        self.release();
    }
}

impl Body for CrateBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(data) = this.early.as_mut().and_then(|early| early.pop_front()) {
            return this.handed(data);
        }
        if !this.data_done {
            match ready!(this.inner.poll_data(cx)) {
                Some(Ok(data)) => return this.handed(data),
                Some(Err(e)) => {
                    this.release();
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    this.data_done = true;
                    this.release();
                }
            }
        }
        Poll::Ready(match ready!(this.inner.poll_trailers(cx)) {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.early_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests;
