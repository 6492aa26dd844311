//! HTTP/2 to backends (`SWITCHYARD_{n}_UPSTREAM=h2c`, prior knowledge): one multiplexed
//! connection per backend, shared by every request, opened again when it closes.

use std::sync::Arc;

use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::upstream::{Outcome, PooledBody, ProxyBody, RequestBody};
use super::{Context, connect};
use crate::backends::BackendState;

pub type H2Upstream = hyper::client::conn::http2::SendRequest<RequestBody>;

pub async fn send(
    mut req: Request<RequestBody>,
    state: &Arc<BackendState>,
    ctx: &Context,
) -> Outcome {
    // HTTP/2 carries the target as :scheme and :authority: make the URI absolute.
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    match format!("http://{}{path}", state.addr).parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return Outcome::Failed(StatusCode::BAD_REQUEST, format!("bad target: {e}")),
    }
    *req.version_mut() = Version::HTTP_2;
    let shared = state.h2.lock().unwrap().clone().filter(|s| !s.is_closed());
    let mut reused = shared.is_some();
    let mut sender = match shared {
        Some(sender) => sender,
        None => match open(state, ctx).await {
            Some(sender) => sender,
            None => return Outcome::Unsent(req),
        },
    };
    loop {
        let active = state.open();
        req.body_mut().bytes_in = Some(state.metrics.bytes_in.clone());
        let sent = std::time::Instant::now();
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
                state
                    .metrics
                    .response_seconds
                    .observe(sent.elapsed().as_secs_f64());
                return Outcome::Response(into_proxy(response, state, active));
            }
            Ok(Err(mut e)) => match e.take_message() {
                // The shared connection had closed under us: open a fresh one, once.
                Some(back) if reused => {
                    req = back;
                    reused = false;
                    match open(state, ctx).await {
                        Some(fresh) => sender = fresh,
                        None => return Outcome::Unsent(req),
                    }
                }
                Some(back) => return Outcome::Unsent(back),
                None => return Outcome::Lost(format!("backend failed: {}", e.into_error())),
            },
        }
    }
}

async fn open(state: &BackendState, ctx: &Context) -> Option<H2Upstream> {
    let started = std::time::Instant::now();
    let stream = match connect(state.addr, ctx.connect_timeout).await {
        Ok(stream) => stream,
        Err(e) => {
            state.metrics.connect_failures.inc();
            tracing::debug!(backend = %state.addr, "connect failed: {e}");
            return None;
        }
    };
    state.observe_connect(started.elapsed());
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await;
    let (sender, conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            state.metrics.connect_failures.inc();
            tracing::debug!(backend = %state.addr, "h2 handshake failed: {e}");
            return None;
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    *state.h2.lock().unwrap() = Some(sender.clone());
    Some(sender)
}

fn into_proxy(
    response: Response<Incoming>,
    state: &BackendState,
    active: crate::backends::ActiveGuard,
) -> Response<ProxyBody> {
    let (mut parts, inner) = response.into_parts();
    super::http::strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    let body = PooledBody::unpooled(inner, state.metrics.bytes_out.clone(), active);
    Response::from_parts(parts, ProxyBody::Upstream(body))
}
