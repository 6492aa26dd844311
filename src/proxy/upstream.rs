//! The upstream side of HTTP mode: pooled HTTP/1.1 connections to backends, sending a request
//! with fall-through when it could not go out, response bodies that return their connection to
//! the pool when fully read, and protocol upgrades (WebSocket) bridged both ways.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use tokio::net::TcpStream;

use super::dial::Dial;
use super::exchange::{BodyAt, Failure, Policy, summed_wait};
use super::h1_framing::Prefixed;
use super::headers::strip_hop_by_hop;
use super::pool::Pools;
use super::tcp;
use super::{Context, NotConnected, connect};
use crate::backends::{ActiveGuard, BackendState};

/// A pooled HTTP/1.1 connection to a backend.
pub type Upstream = SendRequest<RequestBody>;

pub enum Tried {
    Response(Response<ProxyBody>),
    /// The request went out and no usable response came back.
    Failed(Failure),
    /// The same, from a sender that only read the request (the HTTP/1.1 path that writes the
    /// head as bytes): it is handed back, so that a bodiless request is replayed from it rather
    /// than from a copy made before every first try.
    FailedKept(Failure, Request<RequestBody>),
    /// The request was not sent: try the next backend with it.
    Unsent(Request<RequestBody>),
}

/// Sends `req` to one backend. `upgrade` is the client side of a protocol upgrade, bridged to
/// the backend's when it answers 101.
pub async fn send(
    mut req: Request<RequestBody>,
    state: &Arc<BackendState>,
    (ctx, policy): (&Context, &Policy<'_>),
    (upgrade, dial): (&mut Option<OnUpgrade>, &Dial),
) -> Tried {
    // A pooled connection may have been closed by the backend while idle; if it fails before
    // the request goes out, one fresh connection to the same backend is tried.
    let checked_out = if dial.poolable() {
        ctx.pools.checkout(state)
    } else {
        None
    };
    let mut pooled = match checked_out {
        // Ready already (its last response was read to the end): no timer to arm.
        Some(sender) if sender.is_ready() => Some(sender),
        Some(mut sender) => {
            let ready = tokio::time::timeout(policy.connect, sender.ready()).await;
            matches!(ready, Ok(Ok(()))).then_some(sender)
        }
        None => None,
    };
    loop {
        let fresh = pooled.is_none();
        let mut sender = match pooled.take() {
            Some(sender) => sender,
            None => {
                let Ok(_pending) = super::limits::pending(policy.limits) else {
                    return Tried::Failed(Failure::Overloaded);
                };
                match open(state, (ctx, policy.connect), dial).await {
                    Ok(sender) => sender,
                    Err(NotConnected::Backend) => return Tried::Unsent(req),
                    Err(NotConnected::Local) => return Tried::Failed(Failure::Local),
                }
            }
        };
        let active = charge(&mut req, state);
        match await_response(sender.try_send_request(req), state, policy.response).await {
            Awaited::Over(outcome) => return outcome,
            Awaited::Answered(mut response) => {
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    let Some(client) = upgrade.take() else {
                        return Tried::Failed(Failure::BadResponse(
                            "backend switched protocols unasked",
                        ));
                    };
                    let upstream = hyper::upgrade::on(&mut response);
                    let idle = policy.tunnel;
                    tokio::spawn(tunnel(client, upstream, (state.clone(), idle), active));
                    let (parts, _) = response.into_parts();
                    return Tried::Response(Response::from_parts(parts, ProxyBody::empty()));
                }
                // The framing hyper accepted must also be one this proxy can relay unchanged
                // (`message`'s rules, as on the fast path): a coding other than chunked is a 502.
                let checked = super::message::check_response(
                    response.version() == http::Version::HTTP_10,
                    response.status().as_u16(),
                    false,
                    response
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
                );
                if let Err(reason) = checked {
                    return Tried::Failed(Failure::BadResponse(reason));
                }
                // A connection that carries one client's PROXY header is not pooled: dropping
                // its sender closes it once this response is read.
                let back = dial.poolable().then(|| (sender, ctx.pools.clone()));
                return Tried::Response(finish_response(response, back, state.clone(), active));
            }
            Awaited::Returned(back) if !fresh => req = back,
            Awaited::Returned(back) => {
                state.metrics.count().connect_failures.inc();
                return Tried::Unsent(back);
            }
        }
    }
}

/// What came of a request handed to a connection.
pub enum Awaited {
    Answered(Response<Incoming>),
    /// The connection closed before the request went out: it is handed back.
    Returned(Request<RequestBody>),
    /// Timed out, drained, or failed after sending: the outcome to report.
    Over(Tried),
}

/// Counts a request against its backend (active gauge, bytes in) until its response ends.
pub fn charge(req: &mut Request<RequestBody>, state: &Arc<BackendState>) -> ActiveGuard {
    req.body_mut().bytes_in = Some(state.clone());
    state.open()
}

/// Waits for a backend's response, bounded by the response timeout and the backend's drain,
/// and counts it (status class, latency). Shared by HTTP/1.1 and HTTP/2 upstreams.
pub async fn await_response(
    exchange: impl Future<Output = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>>,
    state: &BackendState,
    response_timeout: std::time::Duration,
) -> Awaited {
    let sent = std::time::Instant::now();
    // The coarse deadline every codec's response wait has (`coarse_timer`).
    let deadline = tokio::time::Instant::now() + response_timeout;
    let result = tokio::select! {
        r = super::coarse_timer::timeout_at(deadline, exchange) => r,
        _ = state.drained() => return Awaited::Over(Tried::Failed(Failure::Removed)),
    };
    match result {
        Err(_) => Awaited::Over(Tried::Failed(Failure::TimedOut)),
        Ok(Ok(response)) => {
            state.metrics.response(response.status());
            state.metrics.response_time(sent.elapsed());
            Awaited::Answered(response)
        }
        Ok(Err(mut e)) => match e.take_message() {
            Some(back) => Awaited::Returned(back),
            None => {
                let e = e.into_error();
                // An answer hyper could not read is malformed, as the raw paths call it (and
                // never laid at a slow client's door, as a close may be: `Failure::given`).
                let failure = if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
                    Failure::BadResponse("backend sent a malformed response")
                } else {
                    Failure::Lost(format!("backend failed: {e}"))
                };
                Awaited::Over(Tried::Failed(failure))
            }
        },
    }
}

/// A new connection to `state`'s backend, within `connect_timeout` (the app's or the
/// global one), dialled as `dial` says.
pub async fn open(
    state: &BackendState,
    (ctx, connect_timeout): (&Context, std::time::Duration),
    dial: &Dial,
) -> Result<Upstream, NotConnected> {
    if !dial.is_plain() {
        let stream = super::dial::dial(state, (ctx, connect_timeout), dial, false).await?;
        return handshake(state, stream).await;
    }
    let started = std::time::Instant::now();
    let stream = connect(state.addr, connect_timeout)
        .await
        .map_err(|e| super::connect_failure(&ctx.metrics, state, &e))?;
    state.observe_connect(started.elapsed());
    handshake(state, stream).await
}

async fn handshake<S>(state: &BackendState, stream: S) -> Result<Upstream, NotConnected>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            state.metrics.count().connect_failures.inc();
            tracing::debug!(backend = %state.addr, "handshake failed: {e}");
            NotConnected::Backend
        })?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

fn finish_response(
    response: Response<Incoming>,
    back: Option<(Upstream, Arc<Pools>)>,
    state: Arc<BackendState>,
    active: ActiveGuard,
) -> Response<ProxyBody> {
    let (mut parts, inner) = response.into_parts();
    strip_response_framing(&mut parts.headers);
    let mut body = PooledBody {
        inner,
        conn: back.map(|(sender, pools)| (sender, pools, state)),
        active,
        slot: None,
    };
    if body.inner.is_end_stream() {
        body.release();
    }
    Response::from_parts(parts, ProxyBody::Upstream(body))
}

/// The response's map with every field in it: the backend's fields still held as bytes
/// (`upstream_h1::RawHead`) are taken in first. What reads, replaces or removes a response
/// field goes through here; what only adds one may write to the map as it is. What the map
/// alone is still asked about holds because of what `ResponseFields::keeps` never keeps: a
/// backend's trace result (`strip_trace_result`), hop-by-hop fields and those `Connection`
/// names (`strip_hop_by_hop`); `Date` is asked of both (`raw_head_dated`); and a known length
/// is always a kept Content-Length or the map's, so the HTTP/2 server adds none to a raw head.
pub fn fields_in_map(response: &mut Response<ProxyBody>) -> &mut http::HeaderMap {
    if let Some(head) = response.body_mut().take_raw_head() {
        head.into_map(response.headers_mut());
    }
    response.headers_mut()
}

/// A backend response's fields as they go to the client: hop-by-hop removed, and the
/// Content-Length a chunked response also carried dropped (RFC 9112 §6.3: the coding wins;
/// hyper frames what it sends from what is left).
pub fn strip_response_framing(headers: &mut http::HeaderMap) {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        headers.remove(http::header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(headers);
}

/// A response body from a backend that returns its connection to the pool once fully read, and
/// counts the request as active until then.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(Upstream, Arc<Pools>, Arc<BackendState>)>,
    /// The request counted in flight; its backend's `bytes_out` counts the body.
    active: ActiveGuard,
    /// The request's place among its app's requests in flight (`MAX_CONCURRENT_REQUESTS`),
    /// held until the body ends.
    slot: Option<crate::backends::limits::Slot>,
}

impl PooledBody {
    /// A body whose connection is not pooled (HTTP/2 connections are shared, not checked out).
    pub fn unpooled(inner: Incoming, active: ActiveGuard) -> PooledBody {
        PooledBody {
            inner,
            conn: None,
            active,
            slot: None,
        }
    }

    fn release(&mut self) {
        if let Some((sender, pools, state)) = self.conn.take() {
            pools.checkin(&state, sender);
        }
        self.slot = None;
    }
}

pub enum ProxyBody {
    Upstream(PooledBody),
    /// From an HTTP/1.1 backend's plain socket (`upstream_h1`). Boxed: a response is moved
    /// a dozen times on its way to the client, and inline its 232 bytes would go with it.
    Raw(Box<super::upstream_h1::RawBody>),
    Full(Full<Bytes>),
}

impl ProxyBody {
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(Full::new(Bytes::new()))
    }

    /// The backend's response fields still held as bytes (`upstream_h1::RawHead`), taken out:
    /// an HTTP/2 server sends them after `:status`, before the map's fields.
    pub fn take_raw_head(&mut self) -> Option<super::upstream_h1::RawHead> {
        match self {
            ProxyBody::Raw(body) => body.head.take(),
            _ => None,
        }
    }

    /// Whether the backend's fields still held as bytes have a `Date`.
    pub fn raw_head_dated(&self) -> bool {
        matches!(self, ProxyBody::Raw(body) if body.head.as_ref().is_some_and(|h| h.dated))
    }

    /// Keeps a request's place among its app's requests in flight until the body from the
    /// backend ends (a whole body in hand frees it at once).
    pub fn hold(&mut self, slot: Option<crate::backends::limits::Slot>) {
        match self {
            ProxyBody::Upstream(body) if !body.inner.is_end_stream() => body.slot = slot,
            ProxyBody::Raw(body) if !body.is_end_stream() => body.slot = slot,
            _ => {}
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = super::upstream_h1::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(full) => Pin::new(full).poll_frame(cx).map_err(|e| match e {}),
            ProxyBody::Raw(body) => Pin::new(&mut **body).poll_frame(cx),
            ProxyBody::Upstream(body) => {
                let frame = std::task::ready!(Pin::new(&mut body.inner).poll_frame(cx))
                    .map(|frame| frame.map_err(Into::into));
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    body.active
                        .state()
                        .metrics
                        .count()
                        .bytes_out
                        .inc_by(data.len() as u64);
                }
                if frame.is_none() || body.inner.is_end_stream() {
                    body.release();
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(full) => full.is_end_stream(),
            ProxyBody::Raw(body) => body.is_end_stream(),
            ProxyBody::Upstream(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(full) => full.size_hint(),
            ProxyBody::Raw(body) => body.size_hint(),
            ProxyBody::Upstream(body) => body.inner.size_hint(),
        }
    }
}

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
    /// decides whose a failure is ([`Failure::given`]).
    pub progress: Option<Arc<BodyProgress>>,
}

/// Whether a request body ended, or broke off, on the client's side, and how long the proxy
/// has waited on the client for it (coarse clock): what [`Failure::given`] reads.
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

/// Bridges an upgraded client connection and its backend until either side closes or fails,
/// nothing moves for `proxy.tunnel_idle_timeout`, or the backend drains; table swaps do not
/// touch it. [`tcp::relay`]'s rules: a failure on one side resets the other.
async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    (state, idle): (Arc<BackendState>, std::time::Duration),
    active: ActiveGuard,
) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(backend = %state.addr, "upgrade failed: {e}");
            return;
        }
    };
    let counters = (
        &state.metrics.count().bytes_in,
        &state.metrics.count().bytes_out,
    );
    let end = match (raw_socket(client), raw_socket(upstream)) {
        // Plain HTTP both ways (the usual case): the sockets themselves, watched for resets.
        (Ok((client, to_backend)), Ok((upstream, to_client))) => {
            let sent = async {
                send_all(&upstream, &to_backend).await?;
                send_all(&client, &to_client).await
            };
            let end = tokio::select! {
                sent = sent => match sent {
                    Ok(()) => tokio::select! {
                        end = tcp::relay(&client, &upstream, counters, idle) => end,
                        _ = state.drained() => tcp::End::Drained,
                    },
                    Err(_) => tcp::End::ClientFailed,
                },
                _ = state.drained() => tcp::End::Drained,
            };
            if end != tcp::End::Closed {
                tcp::abort(&client);
                tcp::abort(&upstream);
            }
            end
        }
        // TLS on the client's side (the HTTPS listener): the TLS stream over its socket, so a
        // failure still resets both sockets; a clean end sends the client a close_notify.
        (Err(client), Ok((mut upstream, to_client))) => match tls_socket(client) {
            Ok((mut client, to_backend)) => {
                let end = tcp::relay_io(
                    (&mut client, to_backend),
                    (&mut upstream, to_client),
                    counters,
                    idle,
                    state.drained(),
                )
                .await;
                if end != tcp::End::Closed {
                    tcp::abort(client.get_ref().0);
                    tcp::abort(&upstream);
                }
                end
            }
            Err(client) => {
                let end = tcp::relay_io(
                    (TokioIo::new(client), Bytes::new()),
                    (&mut upstream, to_client),
                    counters,
                    idle,
                    state.drained(),
                )
                .await;
                if end != tcp::End::Closed {
                    tcp::abort(&upstream);
                }
                end
            }
        },
        // Streams of other kinds: without their sockets, a clean close either way.
        (client, upstream) => {
            let (mut client, to_backend) = any_io(client);
            let (mut upstream, to_client) = any_io(upstream);
            tcp::relay_io(
                (&mut client, to_backend),
                (&mut upstream, to_client),
                counters,
                idle,
                state.drained(),
            )
            .await
        }
    };
    tracing::debug!(backend = %state.addr, "tunnel ended: {end:?}");
    drop(active);
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
type AnyIo = Box<dyn Io>;

/// The TCP socket under an upgraded connection, with the bytes already read from it, when it
/// is one of the plain kinds this proxy makes.
fn raw_socket(upgraded: Upgraded) -> Result<(TcpStream, Bytes), Upgraded> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return Ok((parts.io.into_inner(), parts.read_buf)),
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<Prefixed<TcpStream>>>() {
        Ok(parts) => {
            // hyper read what it holds before what the fast path had not yet handed it.
            let (rest, stream) = parts.io.into_inner().into_parts();
            let mut read = bytes::BytesMut::from(parts.read_buf);
            read.extend_from_slice(&rest);
            Ok((stream, read.freeze()))
        }
        Err(upgraded) => Err(upgraded),
    }
}

/// A client connection of the HTTPS listener under an upgrade: its TLS stream (whose socket
/// can be reset) and the plaintext already read from it.
fn tls_socket(upgraded: Upgraded) -> Result<(Box<ServerTls>, Bytes), Upgraded> {
    let upgraded = match upgraded.downcast::<TokioIo<ServerTls>>() {
        Ok(parts) => return Ok((Box::new(parts.io.into_inner()), parts.read_buf)),
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<Prefixed<ServerTls>>>() {
        Ok(parts) => {
            let (rest, stream) = parts.io.into_inner().into_parts();
            let mut read = bytes::BytesMut::from(parts.read_buf);
            read.extend_from_slice(&rest);
            Ok((Box::new(stream), read.freeze()))
        }
        Err(upgraded) => Err(upgraded),
    }
}

type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;

fn any_io(side: Result<(TcpStream, Bytes), Upgraded>) -> (AnyIo, Bytes) {
    match side {
        Ok((stream, read)) => (Box::new(stream), read),
        Err(upgraded) => (Box::new(TokioIo::new(upgraded)), Bytes::new()),
    }
}

/// Writes bytes already read from the other side before relaying.
async fn send_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
