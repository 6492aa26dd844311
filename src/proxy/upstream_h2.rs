//! HTTP/2 to backends (`SWITCHYARD_{n}_UPSTREAM=h2c`, prior knowledge): one multiplexed
//! connection per backend, shared by every request, opened again when it closes; over TLS with
//! `SWITCHYARD_{n}_BACKEND_TLS` (ALPN h2), and per request with a PROXY header (`dial`).

use std::sync::Arc;

use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::dial::Dial;
use super::request_body::RequestBody;
use super::upstream::{Awaited, PooledBody, ProxyBody, Tried, await_response, charge};
use super::{Context, NotConnected, connect};
use crate::backends::BackendState;

pub type H2Upstream = hyper::client::conn::http2::SendRequest<RequestBody>;

pub async fn send(
    mut req: Request<RequestBody>,
    state: &Arc<BackendState>,
    (ctx, policy): (&Context, &super::exchange::Policy<'_>),
    dial: &Dial,
) -> Tried {
    // HTTP/2 carries the target as :scheme and :authority: make the URI absolute.
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let scheme = if dial.tls.is_some() { "https" } else { "http" };
    match format!("{scheme}://{}{path}", state.addr).parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return Tried::Failed(super::exchange::Failure::Client),
    }
    *req.version_mut() = Version::HTTP_2;
    // A connection with one client's PROXY header is that client's alone: not shared.
    let shared = if dial.poolable() {
        ctx.pools.h2(state)
    } else {
        None
    };
    let mut reused = shared.is_some();
    let mut sender = match shared {
        Some(sender) => sender,
        None => {
            let Ok(_pending) = super::limits::pending(policy.limits) else {
                return Tried::Failed(super::exchange::Failure::Overloaded);
            };
            match open(state, (ctx, policy.connect), dial).await {
                Ok(sender) => sender,
                Err(NotConnected::Backend) => return Tried::Unsent(req),
                Err(NotConnected::Local) => return Tried::Failed(super::exchange::Failure::Local),
            }
        }
    };
    loop {
        let active = charge(&mut req, state);
        match await_response(sender.try_send_request(req), state, policy.response).await {
            Awaited::Over(outcome) => return outcome,
            Awaited::Answered(response) => {
                return Tried::Response(into_proxy(response, active));
            }
            // The shared connection had closed under us: open a fresh one, once.
            Awaited::Returned(back) if reused => {
                req = back;
                reused = false;
                match open(state, (ctx, policy.connect), dial).await {
                    Ok(fresh) => sender = fresh,
                    Err(NotConnected::Backend) => return Tried::Unsent(req),
                    Err(NotConnected::Local) => {
                        return Tried::Failed(super::exchange::Failure::Local);
                    }
                }
            }
            Awaited::Returned(back) => return Tried::Unsent(back),
        }
    }
}

/// A new HTTP/2 connection to `state`'s backend, within `connect_timeout` (the app's or the
/// global one), dialled as `dial` says; shared (pooled) when `dial` allows.
async fn open(
    state: &Arc<BackendState>,
    (ctx, connect_timeout): (&Context, std::time::Duration),
    dial: &Dial,
) -> Result<H2Upstream, NotConnected> {
    let stream = if dial.is_plain() {
        let started = std::time::Instant::now();
        match connect(state.addr, connect_timeout).await {
            Ok(stream) => {
                state.observe_connect(started.elapsed());
                super::dial::Stream::Plain(stream)
            }
            Err(e) => return Err(super::connect_failure(&ctx.metrics, state, &e)),
        }
    } else {
        super::dial::dial(state, (ctx, connect_timeout), dial, true).await?
    };
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await;
    let (sender, conn) = match handshake {
        Ok(pair) => pair,
        Err(e) => {
            state.metrics.count().connect_failures.inc();
            tracing::debug!(backend = %state.addr, "h2 handshake failed: {e}");
            return Err(NotConnected::Backend);
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    if dial.poolable() {
        ctx.pools.set_h2(state, sender.clone());
    }
    Ok(sender)
}

fn into_proxy(
    response: Response<Incoming>,
    active: crate::backends::ActiveGuard,
) -> Response<ProxyBody> {
    let (mut parts, inner) = response.into_parts();
    super::upstream::strip_response_framing(&mut parts.headers);
    parts.version = Version::HTTP_11;
    let body = PooledBody::unpooled(inner, active);
    Response::from_parts(parts, ProxyBody::Upstream(body))
}
