//! HTTP/2 clients' requests to HTTP/1.1 backends, over the fast path's pooled plain sockets
//! instead of hyper's client: the request's head written from its map (`headers`' rules were
//! applied to it by `http`), its body relayed while the backend is watched for an early answer,
//! the response head read and checked as the fast path reads it (`message`), its fields kept
//! as slices of the head's bytes (`RawHead`: no map unless a rule reads one), and its body
//! handed to the h2 stream frame by frame, the socket going back to the pool when the body
//! ended cleanly. No task, channel or codec of its own per backend connection: the stream's
//! task does it all.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::exchange::{Failure, Policy, is_idempotent};
use super::h1::NoConnection;
use super::h1_framing::{Chunked, write_length};
use super::h1_relay::{READ_CHUNK, Spoke, backend_spoke, drained_or, skip_interim};
use super::message::{self, ResponseBody};
use super::pool::Pools;
use super::request_body::RequestBody;
use super::upstream::{ProxyBody, Tried, charge};
use super::{Context, headers};
use crate::backends::{ActiveGuard, BackendState};

mod response_head;
pub use response_head::RawHead;
use response_head::{Head, Parsed, parse_head};

/// A response head and a small body fit in the first read.
const RESPONSE_CHUNK: usize = 4 * 1024;

/// The error a broken response body ends its stream with (the h2 codec resets the stream).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Sends a prepared request (origin-form, `headers`' rules applied) to one HTTP/1.1 backend.
/// A pooled socket the backend had closed is replaced by a new one, once, when nothing of the
/// request can have been taken by the backend. The request is only read, so a failure hands it
/// back (`Tried::FailedKept`) for the caller to replay if it may.
pub async fn send(
    mut req: Request<RequestBody>,
    state: &Arc<BackendState>,
    (ctx, policy): (&Context, &Policy<'_>),
    (client_timeout, forwarded): (Duration, &headers::Forwarded<'_>),
) -> Tried {
    let method = req.method().as_str().as_bytes();
    let ended = req.body().is_end_stream();
    let framing = match message::h2_request_body(
        method,
        req.headers()
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .map(HeaderValue::as_bytes),
        ended,
    ) {
        Ok(framing) => framing,
        Err(_) => return Tried::Failed(Failure::Client),
    };
    let head_only = req.method() == http::Method::HEAD;
    let idempotent = is_idempotent(method);
    let mut pooled = ctx.pools.checkout_raw(state);
    loop {
        let reused = pooled.is_some();
        let mut upstream = match pooled.take() {
            Some(upstream) => upstream,
            // Boxed: a new connection is the rare case (the pool is warm), and its future
            // inline would grow every HTTP/2 stream's, which is moved whole.
            None => match Box::pin(super::h1::connect_new(ctx, state, policy)).await {
                Ok(upstream) => upstream,
                Err(NoConnection::Failed(e)) if super::local_shortage(&e) => {
                    return Tried::FailedKept(Failure::Local, req);
                }
                Err(NoConnection::Failed(_)) => return Tried::Unsent(req),
                Err(NoConnection::Overloaded) => {
                    return Tried::FailedKept(Failure::Overloaded, req);
                }
            },
        };
        let active = charge(&mut req, state);
        let exchange = Exchange {
            state,
            policy,
            client_timeout,
            head_only,
        };
        // Written again for a second socket (rare): the buffer goes back once it is sent.
        let head = request_head(&req, framing, forwarded);
        match exchange.run(&mut upstream, head, &mut req, framing).await {
            Ok((parts, rbuf, cut)) => {
                let reuse = !cut && !parts.close;
                let mut body = RawBody::new(
                    (upstream, rbuf),
                    parts.body,
                    reuse,
                    (ctx.pools.clone(), state.clone(), active),
                    policy.response,
                );
                body.head = Some(parts.raw);
                return Tried::Response(Response::from_parts(
                    parts.parts,
                    ProxyBody::Raw(Box::new(body)),
                ));
            }
            // A pooled socket the backend closed while it was idle: nothing was taken.
            Err(Sent::Stale) if reused => {
                drop(active);
                continue;
            }
            Err(Sent::Stale) => {
                state.metrics.count().connect_failures.inc();
                return Tried::FailedKept(
                    Failure::Lost("backend closed the connection without a response".into()),
                    req,
                );
            }
            Err(Sent::LostUnread) if reused && idempotent => {
                drop(active);
                continue;
            }
            Err(Sent::LostUnread) => {
                return Tried::FailedKept(
                    Failure::Lost("backend closed the connection without a response".into()),
                    req,
                );
            }
            Err(Sent::Failed(failure)) => return Tried::FailedKept(failure, req),
        }
    }
}

/// The request head for the backend: request line (origin-form), the map's fields with Host
/// and the forwarding fields, the framing.
fn request_head(
    req: &Request<RequestBody>,
    framing: message::RequestBody,
    forwarded: &headers::Forwarded<'_>,
) -> HeadBuf {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let method = req.method().as_str();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut head = HeadBuf::take();
    let out = &mut head.0;
    out.reserve(method.len() + target.len() + fields + 256);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    headers::write_request_fields(out, req.headers(), forwarded);
    match framing {
        message::RequestBody::Length(n) => write_length(out, n),
        message::RequestBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        message::RequestBody::None => {}
    }
    out.extend_from_slice(b"\r\n");
    head
}

/// A request head being written: its buffer is the thread's, taken for the head and given
/// back once the head is sent (at once, most times: a head fits the socket's buffer), so a
/// request allocates none. A head that grew past `KEPT_HEAD` is not kept.
struct HeadBuf(Vec<u8>);

/// The largest head buffer kept for the thread's next head.
const KEPT_HEAD: usize = 16 * 1024;

thread_local! {
    static HEAD_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl HeadBuf {
    fn take() -> HeadBuf {
        HeadBuf(HEAD_BUF.try_with(std::cell::Cell::take).unwrap_or_default())
    }
}

impl Drop for HeadBuf {
    fn drop(&mut self) {
        if self.0.capacity() <= KEPT_HEAD {
            self.0.clear();
            let buf = std::mem::take(&mut self.0);
            let _ = HEAD_BUF.try_with(|kept| kept.set(buf));
        }
    }
}

/// How an exchange on one socket failed.
enum Sent {
    /// The head could not be written: the socket was closed before anything went out.
    Stale,
    /// The backend closed or reset without a byte of answer, and nothing of the body was read
    /// from the client.
    LostUnread,
    Failed(Failure),
}

struct Exchange<'a> {
    state: &'a Arc<BackendState>,
    policy: &'a Policy<'a>,
    client_timeout: Duration,
    head_only: bool,
}

impl Exchange<'_> {
    /// Writes the head and the body, reads the response head. On success: the head, the bytes
    /// read past it, and whether the request body was cut short by an early answer.
    async fn run(
        &self,
        upstream: &mut TcpStream,
        head: HeadBuf,
        req: &mut Request<RequestBody>,
        framing: message::RequestBody,
    ) -> Result<(Head, BytesMut, bool), Sent> {
        let written = upstream.write_all(&head.0).await;
        drop(head);
        if written.is_err() {
            return Err(Sent::Stale);
        }
        let mut body_read = false;
        let cut = if req.body().is_end_stream() {
            false
        } else {
            body_read = true;
            let chunked = framing == message::RequestBody::Chunked;
            // Boxed: only requests with a body take it (see `connect_new` above).
            Box::pin(send_body(
                req.body_mut(),
                upstream,
                chunked,
                (self.client_timeout, self.policy.response),
            ))
            .await
            .map_err(Sent::Failed)?
        };
        let sent = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + self.policy.response;
        // Taken once the backend has something to read: a request waiting for its answer holds
        // no buffer (with a thousand streams waiting, the worker's kept buffers serve the
        // answers as they come instead of each waiting request taking a new one).
        let mut rbuf = BytesMut::new();
        loop {
            if !rbuf.is_empty() {
                match parse_head(&mut rbuf, self.head_only).map_err(Sent::Failed)? {
                    Parsed::Partial => {}
                    Parsed::Interim => continue,
                    Parsed::Done(head) => {
                        let metrics = &self.state.metrics;
                        metrics.response(head.parts.status);
                        metrics.response_time(sent.elapsed());
                        return Ok((head, rbuf, cut));
                    }
                }
            }
            let read = async {
                if rbuf.capacity() == 0 {
                    // (Not `readable()`: its waiter list costs more than the allocation saved.)
                    std::future::poll_fn(|cx| upstream.poll_read_ready(cx)).await?;
                    rbuf = super::buffers::response_read(RESPONSE_CHUNK);
                } else if rbuf.capacity() - rbuf.len() < 1024 {
                    rbuf.reserve(RESPONSE_CHUNK);
                }
                upstream.read_buf(&mut rbuf).await
            };
            match drained_or(self.state, deadline, read).await {
                Ok(0) | Err(Failure::Lost(_)) if rbuf.is_empty() && !body_read => {
                    return Err(Sent::LostUnread);
                }
                Ok(0) => {
                    return Err(Sent::Failed(Failure::Lost(
                        "backend closed the connection without a response".into(),
                    )));
                }
                Ok(_) => {}
                Err(failure) => return Err(Sent::Failed(failure)),
            }
        }
    }
}

/// Relays a request body to the backend (chunked, or as it comes under its Content-Length),
/// watching the backend for an early answer: `Ok(true)` when it answered or closed before it
/// took the whole body (its answer is read next; the rest of the body is never read). A
/// client that breaks its body off or stops sending for `client_timeout` is the client's
/// failure, never the backend's; a backend that takes none of it for `backend_timeout` is the
/// backend's (504).
async fn send_body(
    body: &mut RequestBody,
    upstream: &mut TcpStream,
    chunked: bool,
    (client_timeout, backend_timeout): (Duration, Duration),
) -> Result<bool, Failure> {
    let mut line = Vec::new();
    loop {
        let frame = tokio::select! {
            biased;
            ready = upstream.readable() => {
                match ready.map(|()| backend_spoke(upstream)) {
                    Ok(Spoke::Nothing) => {}
                    Ok(Spoke::Interim(len)) => {
                        if !skip_interim(upstream, len).await {
                            body.cut(false);
                            return Ok(true);
                        }
                    }
                    Ok(Spoke::Answer) => {
                        body.cut(false);
                        return Ok(true);
                    }
                    Ok(Spoke::Closed) | Err(_) => {
                        body.cut(true);
                        return Ok(true);
                    }
                }
                continue;
            }
            frame = tokio::time::timeout(client_timeout, body.frame()) => match frame {
                Err(_) => return Err(Failure::ClientStalled),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(Failure::Client),
                Ok(Some(Ok(frame))) => frame,
            },
        };
        let data = match frame.into_data() {
            Ok(data) if data.is_empty() => continue,
            Ok(data) => data,
            // Trailers: not relayed to an HTTP/1.1 backend.
            Err(_) => continue,
        };
        let bytes: &[u8] = if chunked {
            line.clear();
            line.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            line.extend_from_slice(&data);
            line.extend_from_slice(b"\r\n");
            &line
        } else {
            &data
        };
        match tokio::time::timeout(backend_timeout, upstream.write_all(bytes)).await {
            Ok(Ok(())) => {}
            // It may have answered before it closed: read next.
            Ok(Err(_)) => {
                body.cut(false);
                return Ok(true);
            }
            Err(_) => return Err(Failure::TimedOut),
        }
    }
    if chunked {
        match tokio::time::timeout(backend_timeout, upstream.write_all(b"0\r\n\r\n")).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                body.cut(false);
                return Ok(true);
            }
            Err(_) => return Err(Failure::TimedOut),
        }
    }
    Ok(false)
}

/// How much of a response body is still to come.
enum Framing {
    Length(u64),
    Chunked(Chunked),
    ToClose,
    Done,
}

/// A response body read from a backend's plain socket as the h2 stream asks for it (its flow
/// control is the backpressure); the socket goes back to the pool when the body ended
/// cleanly with nothing after it. A read that waits longer than the response timeout, or a
/// body the backend breaks off, ends the stream with an error (a reset).
pub struct RawBody {
    io: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    reuse: bool,
    pools: Arc<Pools>,
    state: Arc<BackendState>,
    _active: ActiveGuard,
    /// The request's place among its app's requests in flight, held until the body ends.
    pub(super) slot: Option<crate::backends::limits::Slot>,
    /// The response's fields, until they are taken into its map or sent (`RawHead`).
    pub(super) head: Option<RawHead>,
    timeout: Duration,
    /// Armed only when a read has to wait.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    moved: bool,
}

impl RawBody {
    fn new(
        (io, buf): (TcpStream, BytesMut),
        body: ResponseBody,
        reuse: bool,
        (pools, state, active): (Arc<Pools>, Arc<BackendState>, ActiveGuard),
        timeout: Duration,
    ) -> RawBody {
        let framing = match body {
            ResponseBody::Empty | ResponseBody::Length(0) => Framing::Done,
            ResponseBody::Length(n) => Framing::Length(n),
            ResponseBody::Chunked => Framing::Chunked(Chunked::default()),
            ResponseBody::ToClose => Framing::ToClose,
        };
        let mut body = RawBody {
            io: Some(io),
            buf,
            framing,
            reuse: reuse && body != ResponseBody::ToClose,
            pools,
            state,
            _active: active,
            slot: None,
            head: None,
            timeout,
            idle: None,
            moved: false,
        };
        if matches!(body.framing, Framing::Done) {
            body.finish();
        }
        body
    }

    /// The body ended: the socket back to the pool when it is clean, the buffer to the
    /// worker's, the slot freed.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(io) = self.io.take()
            && self.reuse
            && self.buf.is_empty()
        {
            self.pools.checkin_raw(&self.state, io);
            super::buffers::response_done(std::mem::take(&mut self.buf));
        }
        self.slot = None;
    }

    /// Passes the chunk-size lines, CRLFs and trailers at the front of the buffer, up to the
    /// next data (or the end of the body).
    fn skip_chunk_lines(&mut self) -> Result<(), BodyError> {
        let Framing::Chunked(chunked) = &mut self.framing else {
            return Ok(());
        };
        while !self.buf.is_empty() && !matches!(chunked, Chunked::Data { .. }) {
            let end = chunked
                .feed(&self.buf[..1])
                .map_err(|_| broken("backend sent a malformed chunk"))?;
            self.buf.advance(1);
            if end.is_some() {
                self.finish();
                return Ok(());
            }
        }
        Ok(())
    }

    /// The next piece of body in the buffer, if there is one.
    fn take(&mut self) -> Result<Option<Bytes>, BodyError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let data = match &mut self.framing {
            Framing::Done => return Ok(None),
            Framing::ToClose => self.buf.split().freeze(),
            Framing::Length(left) => {
                let n = (*left).min(self.buf.len() as u64) as usize;
                *left -= n as u64;
                let data = self.buf.split_to(n).freeze();
                if *left == 0 {
                    self.finish();
                }
                data
            }
            Framing::Chunked(chunked) => {
                let Chunked::Data { left, .. } = *chunked else {
                    self.skip_chunk_lines()?;
                    return self.take();
                };
                let n = left.min(self.buf.len() as u64) as usize;
                let data = self.buf.split_to(n).freeze();
                let _ = chunked.feed(&data);
                self.skip_chunk_lines()?;
                data
            }
        };
        self.state
            .metrics
            .count()
            .bytes_out
            .inc_by(data.len() as u64);
        Ok(Some(data))
    }

    /// Reads more from the backend; `Ok(0)` at its close.
    fn poll_fill(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<usize, BodyError>> {
        let Some(io) = &self.io else {
            return Poll::Ready(Ok(0));
        };
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        loop {
            match io.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => match io.try_read_buf(&mut self.buf) {
                    Ok(n) => {
                        self.moved = true;
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e.into())),
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {
                    let deadline = tokio::time::Instant::now() + self.timeout;
                    let idle = self
                        .idle
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if std::mem::take(&mut self.moved) {
                        idle.as_mut().reset(deadline);
                    }
                    if idle.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(broken("backend timed out mid-body")));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

fn broken(what: &'static str) -> BodyError {
    Box::new(std::io::Error::other(what))
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        debug_assert!(
            this.head.is_none(),
            "a response body read before its head was sent or taken into the map"
        );
        loop {
            match this.take() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if matches!(this.framing, Framing::Done) => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.io = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(this.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::ToClose) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.io = None;
                    this.state.metrics.response(StatusCode::BAD_GATEWAY);
                    return Poll::Ready(Some(Err(broken("backend closed mid-body"))));
                }
                Ok(_) => {}
                Err(e) => {
                    this.io = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
