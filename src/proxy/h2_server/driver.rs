//! The HTTP/2 server on our own codec (`h2codec`, issue #21): one task per client connection
//! reads into a bounded buffer, runs [`Connection::recv`] until it has no event, hands each
//! request to the handler as an `http::Request` (so that the proxy's rules, shared with
//! HTTP/1.1, stay in one place), queues each stream's body bytes for its reader (the window
//! given back as they are consumed), and writes what the codec and the streams put in its
//! output. The codec judges the protocol (preface, stream states, flow control, malformed
//! heads, 431, CONTINUATION and control-frame floods, rapid reset); this driver keeps what
//! needs IO or time: the handshake and SETTINGS ACK within the handshake timeout, the idle and
//! stall timeouts, the bound on the output buffered for a client that does not read, the
//! unfinished-upload places, a panic ending its stream alone.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version, uri};
use http_body::Body;
use rustc_hash::FxHashMap;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

mod body;
mod exchange;
use super::streams::{Idle, IdleTurn, Inbox, Streams};
use super::{
    AnsweredHere, BodyError, Config, CutOff, FIRST_REQUEST_GRACE, H2Body, Incident,
    MAX_CONCURRENT_STREAMS, MAX_FRAME_SIZE, MAX_LOCAL_ERROR_RESETS, ROUNDS_PER_POLL, RefuseStream,
    STREAM_WINDOW, StreamBody, Uploads, unwound,
};
use crate::proxy::h2codec::conn::{self as codec, Connection, Event, Fault, SharedHead};
use crate::proxy::h2codec::frame::Reason;
pub(super) use body::CodecBody;
use exchange::exchange;

/// The read buffer: a whole frame of our maximum size and its header fit, with room for the
/// small frames around it.
const READ_BUFFER: usize = 2 * MAX_FRAME_SIZE as usize + 1024;
/// Output the streams may queue beyond what the socket took: past it a stream waits (bounded by
/// the stall timeout), and the connection reads no more frames (whose answers, PING ACKs and
/// SETTINGS ACKs, would add to it).
const MAX_OUTPUT: usize = 256 * 1024;
/// The connection window (`super::CONN_WINDOW`) bounds what is queued for streams' readers.
const CONN_WINDOW: u32 = super::CONN_WINDOW;

/// A connection's state shared by its driver and its streams (and request bodies, which a
/// backend connection's task may poll).
struct Shared {
    conn: Connection,
    streams: FxHashMap<u32, StreamIo>,
    /// Streams waiting for room to send (window, or output below `MAX_OUTPUT`), or for a
    /// reset (their `send_waker` set): woken when frames were read or output written.
    waiting: Vec<u32>,
    /// The driver's task, woken when a body's reader (maybe in another task) wrote output.
    driver: Option<Waker>,
    /// The driver is inside its poll: it writes what is added before it returns.
    driving: bool,
    /// The connection ended (the client left, or a fault): every stream is gone.
    gone: bool,
}

/// One stream's IO as its exchange and its request body see it.
#[derive(Default)]
struct StreamIo {
    data: VecDeque<Bytes>,
    /// The client ended its body (END_STREAM seen).
    ended: bool,
    trailers: Option<HeaderMap>,
    /// The client reset it, or the codec did for its fault.
    reset: Option<Reason>,
    body_waker: Option<Waker>,
    /// The stream's exchange, waiting for room to send or for a reset.
    send_waker: Option<Waker>,
    /// The body was dropped: DATA arriving later is given back at once.
    body_dropped: bool,
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Output was added from outside the driver's poll: the driver writes it.
    fn output_added(&mut self) {
        if !self.driving
            && !self.conn.output().is_empty()
            && let Some(waker) = &self.driver
        {
            waker.wake_by_ref();
        }
    }

    fn wake_waiting(&mut self) {
        for id in self.waiting.drain(..) {
            if let Some(w) = self
                .streams
                .get_mut(&id)
                .and_then(|io| io.send_waker.take())
            {
                w.wake();
            }
        }
    }

    /// The stream's exchange waits (woken by `wake_waiting`).
    fn wait(&mut self, id: u32, cx: &mut TaskContext<'_>) {
        if let Some(io) = self.streams.get_mut(&id) {
            if io.send_waker.is_none() {
                self.waiting.push(id);
            }
            if !io
                .send_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                io.send_waker = Some(cx.waker().clone());
            }
        }
    }
}

/// Serves one HTTP/2 connection on the codec until it ends (see `super::serve`).
pub(super) async fn serve<'a, S, H, F, B>(
    mut io: S,
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
    let codec_config = codec::Config {
        max_concurrent_streams: MAX_CONCURRENT_STREAMS,
        stream_window: STREAM_WINDOW,
        conn_window: CONN_WINDOW,
        max_frame_size: MAX_FRAME_SIZE,
        max_header_list_size: config.max_header_list_size,
        header_table_size: 4096,
        max_local_resets: MAX_LOCAL_ERROR_RESETS as u32,
    };
    let shared: SharedRef = Arc::new(Mutex::new(Shared {
        conn: Connection::new(codec_config, Instant::now()),
        streams: FxHashMap::default(),
        waiting: Vec::new(),
        driver: None,
        driving: false,
        gone: false,
    }));
    let uploads = Arc::new(Uploads::default());
    let stall = config.stall_timeout;
    let mut streams = Streams::new();
    let handle = &handle;
    let worker = |inbox: Arc<Inbox<(Request<H2Body>, u32)>>| {
        let shared = shared.clone();
        async move {
            loop {
                let (req, id) = inbox.next().await;
                exchange((handle, req), &shared, id, stall, report).await;
                inbox.finished();
            }
        }
    };
    let mut rbuf = vec![0u8; READ_BUFFER].into_boxed_slice();
    let (mut rstart, mut rend) = (0usize, 0usize);
    let mut wbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut wpos = 0usize;
    // Written since the last flush that completed.
    let mut unflushed = false;
    let mut read_closed = false;
    let mut stopping = std::pin::pin!(stopping);
    let mut stop: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut handshake = Box::pin(tokio::time::sleep(config.handshake_timeout));
    let mut handshaken = false;
    let mut closing = false;
    let mut failed = false;
    let mut opened = false;
    let mut idle = Idle::new(config.idle_timeout);
    poll_fn(|cx| {
        streams.register(cx.waker());
        {
            let mut s = lock(&shared);
            s.driving = true;
            if !s.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.driver = Some(cx.waker().clone());
            }
        }
        if !handshaken {
            let s = lock(&shared);
            if s.conn.preface_seen() && s.conn.settings_acked() {
                handshaken = true;
            } else if handshake.as_mut().poll(cx).is_ready() {
                drop(s);
                if !lock(&shared).conn.preface_seen() {
                    return Poll::Ready(());
                }
                // The client never acknowledged our SETTINGS (RFC 9113 §6.5.3).
                let mut s = lock(&shared);
                s.conn.goaway(Reason::SETTINGS_TIMEOUT);
                handshaken = true;
                closing = true;
                failed = true;
            }
        }
        if !closing {
            if stop.is_none() && stopping.as_mut().poll(cx).is_ready() {
                stop = Some(Box::pin(tokio::time::sleep(FIRST_REQUEST_GRACE)));
            }
            if let Some(grace) = &mut stop
                && (opened || grace.as_mut().poll(cx).is_ready())
            {
                lock(&shared).conn.goaway(Reason::NO_ERROR);
                closing = true;
            }
        }
        let mut rounds = 0;
        loop {
            let mut progress = false;
            streams.poll_woken();
            // Read, unless the output is past its bound (a client that does not read what it
            // asks for) or the connection is failing.
            let out_len = wbuf.len() - wpos + lock(&shared).conn.output().len();
            if !read_closed && !failed && out_len < MAX_OUTPUT {
                if rend == rbuf.len() && rstart > 0 {
                    rbuf.copy_within(rstart..rend, 0);
                    rend -= rstart;
                    rstart = 0;
                }
                let mut read = ReadBuf::new(&mut rbuf[rend..]);
                match Pin::new(&mut io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if read.filled().is_empty() => {
                        // The client left (or read buffer full of a frame too big, which the
                        // codec refuses before): every stream ends.
                        read_closed = true;
                        return Poll::Ready(());
                    }
                    Poll::Ready(Ok(())) => {
                        rend += read.filled().len();
                        progress = true;
                        let events = handle_frames(
                            &shared,
                            &rbuf[rstart..rend],
                            &uploads,
                            &mut streams,
                            &worker,
                            report,
                        );
                        match events {
                            Ok((used, any)) => {
                                rstart += used;
                                if rstart == rend {
                                    (rstart, rend) = (0, 0);
                                }
                                opened |= any;
                            }
                            Err(()) => {
                                failed = true;
                                closing = true;
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!("h2 connection read failed: {e}");
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
            }
            // Write what the codec and the streams queued.
            if wpos == wbuf.len() {
                let mut s = lock(&shared);
                if !s.conn.output().is_empty() {
                    wbuf.clear();
                    wpos = 0;
                    std::mem::swap(&mut wbuf, s.conn.output());
                    s.wake_waiting();
                }
            }
            while wpos < wbuf.len() {
                match Pin::new(&mut io).poll_write(cx, &wbuf[wpos..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(()),
                    Poll::Ready(Ok(n)) => {
                        wpos += n;
                        progress = true;
                        unflushed = true;
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!("h2 connection write failed: {e}");
                        return Poll::Ready(());
                    }
                    Poll::Pending => break,
                }
            }
            if wpos == wbuf.len() && unflushed {
                // TLS holds what it was given until flushed (retried until done: a flush that
                // waited for the socket is polled again when it wakes the task).
                match Pin::new(&mut io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if failed && wpos == wbuf.len() && !unflushed && lock(&shared).conn.output().is_empty()
            {
                // The GOAWAY went out: the connection ends.
                return Poll::Ready(());
            }
            if !progress && !streams.any_woken() {
                let mut s = lock(&shared);
                if s.conn.output().is_empty() || wpos < wbuf.len() {
                    s.driving = false;
                    break;
                }
                // Output added since the write: another round.
            }
            rounds += 1;
            if rounds == ROUNDS_PER_POLL {
                lock(&shared).driving = false;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        if closing && streams.live() == 0 && wpos == wbuf.len() && !unflushed && !failed {
            return Poll::Ready(());
        }
        if failed {
            // Bounded: a client that does not read its GOAWAY is not waited for.
            return if idle.grace_over(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
        match idle.poll(cx, &mut streams, closing) {
            IdleTurn::Wait => Poll::Pending,
            IdleTurn::End => Poll::Ready(()),
            IdleTurn::GoAway => {
                lock(&shared).conn.goaway(Reason::NO_ERROR);
                closing = true;
                Poll::Pending
            }
        }
    })
    .await;
    // Every stream ends with the connection; what is left of the output goes out, bounded.
    {
        let mut s = lock(&shared);
        s.gone = true;
        s.driving = false;
        for io in s.streams.values_mut() {
            for w in [io.body_waker.take(), io.send_waker.take()]
                .into_iter()
                .flatten()
            {
                w.wake();
            }
        }
        s.waiting.clear();
        let rest = std::mem::take(s.conn.output());
        drop(s);
        wbuf.drain(..wpos);
        wbuf.extend_from_slice(&rest);
    }
    drop(streams);
    let _ = tokio::time::timeout(FIRST_REQUEST_GRACE, async {
        if !wbuf.is_empty() {
            io.write_all(&wbuf).await?;
        }
        io.shutdown().await
    })
    .await;
}

/// Runs the codec over the bytes read until it has no event: the bytes it used, and whether
/// a stream was opened; `Err` when the connection failed (its GOAWAY is in the output).
fn handle_frames<T, W>(
    shared: &SharedRef,
    buf: &[u8],
    uploads: &Arc<Uploads>,
    streams: &mut Streams<(Request<H2Body>, u32), T>,
    worker: &W,
    report: &(dyn Fn(Incident) + Sync),
) -> Result<(usize, bool), ()>
where
    T: Future<Output = ()>,
    W: Fn(Arc<Inbox<(Request<H2Body>, u32)>>) -> T,
{
    let mut s = lock(shared);
    let s = &mut *s;
    let mut used = 0;
    let mut opened = false;
    // The clock read once for the frames of this read, and only when a frame needs it.
    let mut clock = None;
    let mut now = || *clock.get_or_insert_with(Instant::now);
    loop {
        let (n, event) = match s.conn.recv(&buf[used..], &mut now) {
            Ok(r) => r,
            Err(fault) => {
                match fault {
                    Fault::Flood(flood) => report(Incident::Flood(flood)),
                    Fault::RapidReset { opened, reset } => {
                        report(Incident::RapidReset { opened, reset })
                    }
                    Fault::Protocol(reason) => {
                        tracing::debug!("h2 connection error: {reason:?}")
                    }
                    Fault::NoPreface => {}
                }
                for io in s.streams.values_mut() {
                    io.reset.get_or_insert(Reason::CANCEL);
                    for w in [io.body_waker.take(), io.send_waker.take()]
                        .into_iter()
                        .flatten()
                    {
                        w.wake();
                    }
                }
                s.waiting.clear();
                return Err(());
            }
        };
        used += n;
        let Some(event) = event else {
            // Frames read may have opened windows or reset streams: their senders look again.
            s.wake_waiting();
            return Ok((used, opened));
        };
        match event {
            Event::Request {
                stream,
                head,
                end_stream,
            } => match request(head.into_shared()) {
                Some(req) => {
                    opened = true;
                    s.streams.insert(
                        stream,
                        StreamIo {
                            ended: end_stream,
                            ..StreamIo::default()
                        },
                    );
                    let continue_owed = !end_stream
                        && req
                            .headers()
                            .get(header::EXPECT)
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
                    let body = CodecBody {
                        shared: shared.clone(),
                        id: stream,
                        done: end_stream,
                        uploads: uploads.clone(),
                        holding: false,
                        continue_owed,
                    };
                    let req = req.map(|()| H2Body(super::BodyKind::Codec(body)));
                    streams.push((req, stream), worker);
                }
                None => s.conn.reject(stream, Reason::PROTOCOL_ERROR),
            },
            Event::Data {
                stream,
                data,
                end_stream,
            } => match s.streams.get_mut(&stream) {
                Some(io) if !io.body_dropped => {
                    if !data.is_empty() {
                        io.data.push_back(Bytes::copy_from_slice(data));
                    }
                    io.ended |= end_stream;
                    if let Some(w) = io.body_waker.take() {
                        w.wake();
                    }
                }
                _ => s.conn.release(stream, data.len()),
            },
            Event::Trailers { stream, head } => {
                let trailers = fields(&head.into_shared());
                if trailers.is_none() {
                    // Fields the codec took but `http` refuses: malformed, as a head would be.
                    s.conn.reset(stream, Reason::PROTOCOL_ERROR);
                }
                if let Some(io) = s.streams.get_mut(&stream) {
                    match trailers {
                        Some(trailers) => {
                            io.ended = true;
                            io.trailers = Some(trailers);
                        }
                        None => io.reset = Some(Reason::PROTOCOL_ERROR),
                    }
                    for w in [io.body_waker.take(), io.send_waker.take()]
                        .into_iter()
                        .flatten()
                    {
                        w.wake();
                    }
                }
            }
            Event::Reset { stream, reason } => {
                if let Some(io) = s.streams.get_mut(&stream) {
                    io.reset = Some(reason);
                    for w in [io.body_waker.take(), io.send_waker.take()]
                        .into_iter()
                        .flatten()
                    {
                        w.wake();
                    }
                }
            }
            Event::GoAway { .. } => {
                // The client is leaving: its open streams are still answered.
            }
        }
    }
}

/// The request as the proxy's handler takes it, as the `h2` crate made it (an absolute URI
/// when `:authority` came); `None` when it cannot be one (malformed: PROTOCOL_ERROR). The
/// target and the field values are slices of the head's one buffer.
fn request(head: SharedHead) -> Option<Request<()>> {
    let method = http::Method::from_bytes(head.method()).ok()?;
    let mut parts = uri::Parts::default();
    if let Some(authority) = head.authority() {
        parts.authority = Some(uri::Authority::from_maybe_shared(authority).ok()?);
    }
    if let Some(scheme) = head.scheme() {
        let scheme = uri::Scheme::try_from(scheme).ok()?;
        // A URI cannot have a scheme without an authority: checked, then dropped.
        if parts.authority.is_some() {
            parts.scheme = Some(scheme);
        }
    }
    if let Some(path) = head.path() {
        parts.path_and_query = Some(uri::PathAndQuery::from_maybe_shared(path).ok()?);
    }
    let uri = uri::Uri::from_parts(parts).ok()?;
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = fields(&head)?;
    Some(req)
}

/// A head's regular fields as a `HeaderMap`. The codec checked names and values as it decoded
/// them (`conn::head`), so values are not scanned a second time here.
fn fields(head: &SharedHead) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(head.field_count());
    for (name, value) in head.fields() {
        let name = HeaderName::from_bytes(name).ok()?;
        // SAFETY: every value passed the codec's `valid_value` (no control byte but tab, no
        // DEL), which is `http`'s rule for a value and more; debug builds check it again.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(value) };
        map.append(name, value);
    }
    Some(map)
}
