//! The upstream side of HTTP mode: pooled HTTP/1.1 connections to backends, sending a request
//! with fall-through when it could not go out, and response bodies that return their connection
//! to the pool when fully read. The request's body is `request_body`'s; an upgrade, once both
//! sides agreed, is `tunnel`'s.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::dial::Dial;
use super::exchange::{Failure, Policy};
use super::headers::strip_hop_by_hop;
use super::pool::Pools;
use super::request_body::RequestBody;
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
                    tokio::spawn(super::tunnel::tunnel(
                        client,
                        upstream,
                        (state.clone(), idle),
                        active,
                    ));
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
