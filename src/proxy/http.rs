//! HTTP mode: HTTP/1.1 with keep-alive on both sides. Each request loads the table once, picks a
//! backend (falling through on connect failure), reuses a pooled upstream connection when one
//! is idle, and returns the connection to the pool when the response body ends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;

use super::{Context, connect};
use crate::backends::{ActiveGuard, BackendState};
use crate::metrics::ServiceLabels;

/// A pooled HTTP/1.1 connection to a backend.
pub type Upstream = SendRequest<RequestBody>;

pub async fn serve(stream: TcpStream, peer: SocketAddr, listen: SocketAddr, ctx: Arc<Context>) {
    let _ = stream.set_nodelay(true);
    let handler = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = handler.clone();
        async move { Ok::<_, Infallible>(proxy(req, peer, listen, &ctx).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.client_header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = ctx.shutdown.stopping() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

async fn proxy(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    listen: SocketAddr,
    ctx: &Context,
) -> Response<ProxyBody> {
    let snapshot = ctx.store.load_full();
    let Some(index) = snapshot.table.service_at(listen) else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "no service on this port\n");
    };
    let service = &snapshot.table.services[index];
    let states = &snapshot.states[index];
    prepare_request(&mut req, peer);
    let mut req = req.map(|inner| RequestBody {
        inner,
        bytes_in: None,
    });
    for b in service.balancer.candidates(|i| states[i].active()) {
        match send(req, &states[b], ctx).await {
            Outcome::Response(response) => return response,
            Outcome::Failed(status, reason) => {
                tracing::debug!(service = %service.key, backend = %states[b].addr, "{reason}");
                states[b].metrics.response(status);
                return plain(status, &format!("{reason}\n"));
            }
            Outcome::Unsent(back) => req = back,
        }
    }
    let labels = ServiceLabels {
        service: service.key.to_string(),
    };
    ctx.metrics.no_backend.get_or_create(&labels).inc();
    if service.backends.is_empty() {
        plain(StatusCode::SERVICE_UNAVAILABLE, "no backend available\n")
    } else {
        plain(StatusCode::BAD_GATEWAY, "no backend reachable\n")
    }
}

enum Outcome {
    Response(Response<ProxyBody>),
    /// The request reached the backend but no usable response came back.
    Failed(StatusCode, String),
    /// The request was not sent: try the next backend with it.
    Unsent(Request<RequestBody>),
}

async fn send(mut req: Request<RequestBody>, state: &Arc<BackendState>, ctx: &Context) -> Outcome {
    // A pooled connection may have been closed by the backend while idle; if it fails before
    // the request goes out, one fresh connection to the same backend is tried.
    let mut pooled = match state.checkout() {
        Some(mut sender) => {
            let ready = tokio::time::timeout(ctx.connect_timeout, sender.ready()).await;
            matches!(ready, Ok(Ok(()))).then_some(sender)
        }
        None => None,
    };
    loop {
        let fresh = pooled.is_none();
        let mut sender = match pooled.take() {
            Some(sender) => sender,
            None => match open(state, ctx).await {
                Ok(sender) => sender,
                Err(_) => return Outcome::Unsent(req),
            },
        };
        let active = state.open();
        req.body_mut().bytes_in = Some(state.metrics.bytes_in.clone());
        let exchange = sender.try_send_request(req);
        let result = tokio::select! {
            r = tokio::time::timeout(ctx.response_timeout, exchange) => r,
            _ = state.drained() => {
                return Outcome::Failed(StatusCode::BAD_GATEWAY, "backend removed while waiting".into())
            }
        };
        match result {
            Err(_) => {
                return Outcome::Failed(StatusCode::GATEWAY_TIMEOUT, "backend timed out".into());
            }
            Ok(Ok(response)) => {
                state.metrics.response(response.status());
                return Outcome::Response(finish_response(response, sender, state.clone(), active));
            }
            Ok(Err(mut e)) => match e.take_message() {
                Some(back) if !fresh => req = back,
                Some(back) => {
                    state.metrics.connect_failures.inc();
                    return Outcome::Unsent(back);
                }
                None => {
                    let reason = format!("backend failed: {}", e.into_error());
                    return Outcome::Failed(StatusCode::BAD_GATEWAY, reason);
                }
            },
        }
    }
}

async fn open(state: &BackendState, ctx: &Context) -> Result<Upstream, ()> {
    let stream = connect(state.addr, ctx.connect_timeout)
        .await
        .map_err(|e| {
            state.metrics.connect_failures.inc();
            tracing::debug!(backend = %state.addr, "connect failed: {e}");
        })?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            state.metrics.connect_failures.inc();
            tracing::debug!(backend = %state.addr, "handshake failed: {e}");
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Headers that describe one hop, not the message; never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

fn prepare_request(req: &mut Request<Incoming>, peer: SocketAddr) {
    strip_hop_by_hop(req.headers_mut());
    *req.version_mut() = Version::HTTP_11;
    // Absolute-form targets become origin-form; the Host header carries the authority.
    if req.uri().scheme().is_some() {
        let origin = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = origin.parse() {
            *req.uri_mut() = uri;
        }
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = peer.ip().to_string();
    let value = match req.headers().get(&xff).and_then(|v| v.to_str().ok()) {
        Some(existing) => format!("{existing}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        req.headers_mut().insert(xff, value);
    }
}

fn finish_response(
    response: Response<Incoming>,
    sender: Upstream,
    state: Arc<BackendState>,
    active: ActiveGuard,
) -> Response<ProxyBody> {
    let (mut parts, inner) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let bytes_out = state.metrics.bytes_out.clone();
    let mut body = PooledBody {
        inner,
        conn: Some((sender, state)),
        bytes_out,
        _active: active,
    };
    if body.inner.is_end_stream() {
        body.release();
    }
    Response::from_parts(parts, ProxyBody::Upstream(body))
}

fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Full(Full::new(Bytes::from(text.to_owned()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response body from a backend that returns its connection to the pool once fully read, and
/// counts the request as active until then.
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(Upstream, Arc<BackendState>)>,
    bytes_out: Counter,
    _active: ActiveGuard,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, state)) = self.conn.take() {
            state.checkin(sender);
        }
    }
}

pub enum ProxyBody {
    Upstream(PooledBody),
    Full(Full<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(full) => Pin::new(full).poll_frame(cx).map_err(|e| match e {}),
            ProxyBody::Upstream(body) => {
                let frame = std::task::ready!(Pin::new(&mut body.inner).poll_frame(cx));
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                    body.bytes_out.inc_by(data.len() as u64);
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
            ProxyBody::Upstream(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(full) => full.size_hint(),
            ProxyBody::Upstream(body) => body.inner.size_hint(),
        }
    }
}

/// A client's request body on its way to a backend, counted into that backend's `bytes_in`.
pub struct RequestBody {
    inner: Incoming,
    bytes_in: Option<Counter>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let (Some(counter), Some(data)) = (
            &this.bytes_in,
            frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()),
        ) {
            counter.inc_by(data.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
