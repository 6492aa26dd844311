//! HTTP mode, the general path (hyper): HTTP/1.x and HTTP/2 clients, for what the fast path
//! (`h1`) does not do. Each request is checked by `message`'s rules, loads the table once,
//! finds its service by the one resolution (`routing::resolve`), applies the service's policy
//! (ACL, redirect to https, sticky cookie, HSTS), and goes to a backend through `upstream`,
//! with `exchange::Attempts` deciding fall-through, replay, what a failure answers and what
//! is charged to a backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

mod check;
mod shape;
pub use check::{Checked, Host, check};
pub use shape::plain;
use shape::{
    finish, forwarded, prepare_request, redirect_to_https, rewrite_request, sticky_backend,
};

use super::access_log::{self, Logged};
use super::errors::Answer;
use super::exchange::{Attempts, BodyAt, Failure, Policy, is_idempotent};
use super::h1_framing::Prefixed;
use super::h2_server::AnsweredHere;
use super::request_body::{BodyProgress, ClientBody, RequestBody};
use super::upstream::{ProxyBody, Tried, fields_in_map, send};
use super::{Context, headers};
use crate::metrics::ServiceLabels;
use crate::routing::balance::Flow;
use crate::routing::resolve::{self, Target};
use crate::routing::{Backend, Service};

pub use crate::routing::resolve::Entry;

/// marathon-lb's sticky cookie name, so pinned clients stay pinned across the migration.
const STICKY_COOKIE: &str = "mesosphere_server_id";

/// The HTTP version(s) a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// Negotiated by ALPN.
    Http2,
    /// HTTP/1.1, or HTTP/2 when the client opens with its preface (h2c prior knowledge).
    Auto,
}

/// How long a connection accepted just before a stop may take to send its first request, which
/// is then served: closing it at once would lose a request the client has already sent.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a connection until it ends; on shutdown, asks it to finish its current requests (after
/// its first one, for a connection that has not sent one yet).
macro_rules! drive {
    ($conn:expr, $ctx:expr, $asked:expr) => {{
        let mut conn = std::pin::pin!($conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = $ctx.shutdown.stopping() => {}
        }
        let first_request = async {
            let grace = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
            while !$asked.load(Ordering::Relaxed) && tokio::time::Instant::now() < grace {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = first_request => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }};
}

/// Serves a connection on the general path; `peer` is the client's address and the address it
/// connected to (see [`Peer::dest`]).
pub async fn serve<S>(
    stream: S,
    (peer, dest): (SocketAddr, SocketAddr),
    entry: Entry,
    protocol: Protocol,
    ctx: Arc<Context>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_verified(stream, (peer, dest, None), entry, protocol, ctx).await
}

/// A client certificate verified at the handshake.
#[derive(Clone)]
pub struct ClientCert {
    pub subject: HeaderValue,
    /// The CA bundle (`SWITCHYARD_{n}_CLIENT_CA`) that verified it: it admits requests to the
    /// vhosts that name that bundle, and no others.
    pub ca: Arc<std::path::PathBuf>,
}

/// [`serve`] for a connection whose client certificate was verified: its subject goes to the
/// backends of the vhosts that asked for it in `X-Client-Cert-Subject`.
pub async fn serve_verified<S>(
    stream: S,
    (peer, dest, cert): (SocketAddr, SocketAddr, Option<ClientCert>),
    entry: Entry,
    protocol: Protocol,
    ctx: Arc<Context>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The client's address as a header value, made once per connection, not per request.
    let client = Peer {
        addr: peer,
        ip: HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a valid header value"),
        trusted: ctx.settings.load().edge.trusts(peer.ip()),
        dest,
        cert,
    };
    if protocol != Protocol::Auto {
        return serve_as(stream, protocol == Protocol::Http2, client, entry, ctx).await;
    }
    let timeout = ctx.settings.load().client_header_timeout;
    if let Some((stream, h2)) = sniff_preface(stream, timeout).await {
        serve_as(stream, h2, client, entry, ctx).await
    }
}

/// Serves a connection whose protocol is known: HTTP/2 on `h2_server` (every stream answered
/// inside the connection's task), HTTP/1.x on hyper's server.
async fn serve_as<S>(stream: S, h2: bool, client: Peer, entry: Entry, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = ctx.settings.load_full();
    if h2 {
        let config = super::h2_server::Config {
            max_header_list_size: settings.max_header_bytes as u32,
            handshake_timeout: settings.client_header_timeout,
            // As an HTTP/1.1 connection's: idle keep-alive and a response the client stops
            // reading are both bounded by the client header timeout (docs/http.md).
            idle_timeout: settings.client_header_timeout,
            stall_timeout: settings.client_header_timeout,
            codec: super::h2_server::own_codec(),
        };
        drop(settings);
        let (client, ctx) = (&client, &*ctx);
        let handle = move |req: Request<_>| answer(req.map(ClientBody::H2), client, entry, ctx);
        let report = |incident| h2_incident(incident, client.addr, ctx);
        let stopping = ctx.shutdown.stopping();
        return super::h2_server::serve(stream, &config, stopping, handle, &report).await;
    }
    let handler = ctx.clone();
    // Set by the first request: see `drive!`.
    let asked = Arc::new(AtomicBool::new(false));
    let seen = asked.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        let (ctx, client) = (handler.clone(), client.clone());
        async move {
            let req = req.map(ClientBody::Http1);
            Ok::<_, Infallible>(answer(req, &client, entry, &ctx).await)
        }
    });
    drive!(
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.client_header_timeout)
            // `answer` dates every response (`headers::add_date`), whichever codec serves it,
            // so hyper finds a `Date` and adds none; it dates the answers it makes itself (400
            // for a head it cannot parse, 431), which never reach `answer`.
            .auto_date_header(true)
            .max_buf_size(settings.max_header_bytes)
            .max_headers(settings.max_headers)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades(),
        ctx,
        asked
    )
}

/// h2c with prior knowledge or HTTP/1.x: reads until the first bytes show which (within the
/// client header timeout), and gives them back in front of the stream.
async fn sniff_preface<S>(
    mut stream: S,
    timeout: std::time::Duration,
) -> Option<(Prefixed<S>, bool)>
where
    S: AsyncRead + Unpin,
{
    let mut first = Vec::with_capacity(H2_PREFACE.len());
    let read = async {
        while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
            let mut byte = [0u8; 24];
            let want = H2_PREFACE.len() - first.len();
            match stream.read(&mut byte[..want]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => first.extend_from_slice(&byte[..n]),
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(timeout, read).await, Ok(true)) && first.is_empty() {
        return None;
    }
    let h2 = first == H2_PREFACE;
    Some((Prefixed::new(first.into(), stream), h2))
}

/// The client preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Who is on the other end of a client connection.
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    ip: HeaderValue,
    /// One of `http.trusted_proxies`.
    trusted: bool,
    /// The address it connected to: a PROXY header's destination where the listener read one,
    /// else the listener's (its port is `X-Forwarded-Port`; a PROXY header to a backend names
    /// it, as HAProxy's `send-proxy` behind `accept-proxy` does).
    dest: SocketAddr,
    /// The verified client certificate (mTLS vhosts).
    cert: Option<ClientCert>,
}

/// An HTTP/2 connection's incident, counted and logged (a flood once: it ends the connection).
fn h2_incident(incident: super::h2_server::Incident, client: SocketAddr, ctx: &Context) {
    let kind = match incident {
        super::h2_server::Incident::Flood(flood) => {
            tracing::warn!(
                "HTTP/2 client {client} sent {} control frames without the requests or data to \
                 earn them (the last a {}): GOAWAY ENHANCE_YOUR_CALM, connection closed",
                flood.control_frames,
                flood.frame_name(),
            );
            "control_flood"
        }
        super::h2_server::Incident::StreamPanic => {
            tracing::error!(
                "a panic while answering a stream of HTTP/2 client {client}: the stream was \
                 reset (INTERNAL_ERROR), the connection's other streams go on"
            );
            "stream_panic"
        }
        super::h2_server::Incident::UploadRefused => {
            tracing::debug!(
                "HTTP/2 client {client} opened more than {} streams whose request bodies were \
                 unfinished: one was refused (REFUSED_STREAM)",
                super::h2_server::MAX_UNFINISHED_UPLOADS
            );
            "upload_refused"
        }
        super::h2_server::Incident::RapidReset { opened, reset } => {
            tracing::warn!(
                "HTTP/2 client {client} reset {reset} of the {opened} streams it opened before                  their answers: GOAWAY ENHANCE_YOUR_CALM, connection closed (rapid reset)"
            );
            "rapid_reset"
        }
    };
    ctx.metrics
        .http2_incidents
        .get_or_create(&crate::metrics::KindLabels { kind: kind.into() })
        .inc();
}

/// Every request of the general path, whichever codec it came by: `proxy`'s answer, dated
/// (`headers::add_date`), with its access log entry, which is written when the answer ends
/// (or is dropped before it began: the client went away).
async fn answer(
    req: Request<ClientBody>,
    client: &Peer,
    entry: Entry,
    ctx: &Context,
) -> Response<Logged> {
    let mut pending = access_log::Pending(None);
    // Only the HTTP/2 servers send a backend's fields held as bytes (`upstream_h1::RawHead`);
    // any other codec gets them in the map.
    let http2 = req.version() == Version::HTTP_2;
    let (mut response, upstream) = proxy(req, client, entry, ctx, &mut pending.0).await;
    if !http2 {
        fields_in_map(&mut response);
    }
    if upstream == Some(None) {
        // No backend answered (none asked, or none reachable): an HTTP/2 stream answered so
        // is no cover for early resets.
        response.extensions_mut().insert(AnsweredHere);
    }
    if !response.body().raw_head_dated() {
        headers::add_date(response.headers_mut());
    }
    let mut line = pending.0.take();
    if let (Some(line), Some(upstream)) = (&mut line, upstream) {
        line.answered(response.status().as_u16(), upstream);
    }
    response.map(|body| Logged::new(body, line))
}

/// A request's answer, and the backend that gave it (`None`: the client went away first, no
/// answer is sent). `line`: the access log entry, made here when the log is on.
async fn proxy(
    mut req: Request<ClientBody>,
    client: &Peer,
    entry: Entry,
    ctx: &Context,
    line: &mut Option<Box<access_log::Entry>>,
) -> (Response<ProxyBody>, Option<Option<SocketAddr>>) {
    let settings = ctx.settings.load();
    if settings.access_log {
        *line = Some(access_log::Entry::of(&req, client.addr));
    }
    let log =
        |upstream: Option<SocketAddr>, response: Response<ProxyBody>| (response, Some(upstream));
    // HTTP/1 heads pass `message`'s rules here too: a connection the fast path handed over, or
    // one it never saw, is held to the same ones.
    // HTTP/1's field count is bounded by its parsers (`http.max_headers`); HTTP/2's codec
    // bounds only the bytes, so the count is held to the same limit here.
    let checked = match check(&req) {
        Ok(_) if req.version() == Version::HTTP_2 && req.headers().len() > settings.max_headers => {
            let response = plain(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields\n",
            );
            return log(None, response);
        }
        Ok(checked) => checked,
        Err(refusal) => {
            let mut response = plain(
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST),
                &format!("{}\n", refusal.reason),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return log(None, response);
        }
    };
    // Never forwarded, whoever asks: read here, answered only with the admin token.
    let trace_asked = headers::take_trace(req.headers_mut());
    let trace = super::trace::asked(
        trace_asked.as_ref().map(HeaderValue::as_bytes),
        client.addr.ip(),
        ctx,
    );
    let snapshot = ctx.store.load_full();
    let table = &snapshot.table;
    let request = resolve::Request {
        host: checked.host.as_deref(),
        path: req.uri().path(),
        app_id: req
            .headers()
            .get(const { http::HeaderName::from_static("x-marathon-app-id") })
            .map(HeaderValue::as_bytes),
    };
    let (index, routed) = match table.resolve(entry, request) {
        Err(why) => {
            let answer = Answer::unrouted(why, &settings.error_pages);
            return log(None, answer.response());
        }
        Ok((Target::Service(index), _)) => (index, None),
        Ok((Target::Route(route), _)) => {
            let route = &table.routes[route];
            match route.pick(Some(req.headers()), &table.services) {
                Some(index) => (index, Some(route)),
                None => {
                    let first = &table.services[route.first()];
                    ctx.metrics
                        .no_backend
                        .get_or_create(&ServiceLabels {
                            service: first.key.to_string(),
                        })
                        .inc();
                    let answer = Answer::new(
                        503,
                        "no backend available\n",
                        Some(first),
                        &settings.error_pages,
                    );
                    return log(None, answer.response());
                }
            }
        }
    };
    let service = &table.services[index];
    let states = &snapshot.states[index];
    if !service.http.acl.is_empty()
        && !service
            .http
            .acl
            .iter()
            .any(|c| c.contains(client.addr.ip()))
    {
        return log(None, plain(StatusCode::FORBIDDEN, "forbidden\n"));
    }
    // A vhost that asks for client certificates: only over a connection whose certificate its
    // CA verified (another vhost's SNI, or plain HTTP, does not do).
    let verified = match &service.connection.client_ca {
        None => None,
        Some(ca) => match &client.cert {
            Some(cert) if *cert.ca == *ca => Some(&cert.subject),
            _ => {
                let response = plain(
                    StatusCode::BAD_REQUEST,
                    "a client certificate is required for this host\n",
                );
                return log(None, response);
            }
        },
    };
    // The redirect comes first, as HAProxy's frontend redirect does: credentials are asked for
    // over https, not sent in the clear.
    if matches!(entry, Entry::Vhost { https: false }) && service.http.redirect_to_https {
        let response = redirect_to_https(&req, checked.host.as_deref());
        return log(None, response);
    }
    // An HTTP/2 stream whose client still owes its body, on its way to a backend connection of
    // its own (an HTTP/2 backend's is shared, unless a PROXY header makes it this client's):
    // one of its client connection's places for unfinished uploads, or refused before anything
    // is spent on it (`h2_server::MAX_UNFINISHED_UPLOADS`; no backend is charged).
    // Whether the client's body has ended, looked up once (HTTP/2: under the codec's lock).
    let body_ended = http_body::Body::is_end_stream(req.body());
    if !body_ended
        && let ClientBody::H2(body) = req.body_mut()
        && !(service.upstream_h2 && service.connection.proxy_protocol.is_none())
        && let Err(refused) = body.claim_upload().await
    {
        let mut response = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many unfinished uploads on this connection\n",
        );
        response.extensions_mut().insert(refused);
        return log(None, response);
    }
    // The app's maintenance switch and limits, before credentials are checked (a flood of
    // bad credentials is held to the rate too) and before anything goes to a backend.
    let limits = snapshot.limits.get(index).and_then(Option::as_ref);
    let slot = match super::limits::admit(ctx, service, limits, client.addr.ip()) {
        Ok(slot) => slot,
        Err(refusal) => {
            let text = format!("{}\n", refusal.text());
            let answer = Answer::new(
                refusal.status(),
                &text,
                Some(service),
                &settings.error_pages,
            )
            .retry_after(refusal.retry_after());
            return log(None, answer.response());
        }
    };
    let policy = Policy::of(service, &settings, limits);
    // Boxed: only apps with credentials take it, and inline it would grow every request's
    // future (an HTTP/2 stream's is moved whole).
    if let Some(auth) = &service.http.auth
        && let Some(response) = Box::pin(super::basic_auth::check(auth, req.headers())).await
    {
        return log(None, response);
    }
    // HTTP_BACKEND_REDIR: a backend rule in marathon-lb, so after the frontend's credentials.
    if let Some(rewrite) = &service.http.rewrite
        && let Some(location) = &rewrite.redirect_root
        && super::rewrite::redirects_root(req.uri().path(), checked.host.as_deref(), &rewrite.hosts)
    {
        let mut response = plain(StatusCode::MOVED_PERMANENTLY, "moved\n");
        if let Ok(location) = HeaderValue::from_str(location) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return log(None, response);
    }
    let pinned = service
        .http
        .sticky
        .then(|| sticky_backend(req.headers(), &service.backends))
        .flatten();
    let mut upgrade = checked
        .upgrade
        .is_some()
        .then(|| hyper::upgrade::on(&mut req));
    let https = matches!(entry, Entry::Vhost { https: true });
    // An HTTP/2 client's request to a plain HTTP/1.1 backend goes over the fast path's pooled
    // sockets (`upstream_h1`), not hyper's client; its forwarding fields are written as bytes.
    let raw = req.version() == Version::HTTP_2
        && !service.upstream_h2
        && service.connection.proxy_protocol.is_none()
        && service.connection.backend_tls.is_none()
        && upgrade.is_none();
    prepare_request(&mut req, (client, verified), https, (&checked, raw));
    headers::apply_rules(req.headers_mut(), &service.edge.request_headers);
    if let Some(rewrite) = &service.http.rewrite {
        rewrite_request(&mut req, rewrite);
    }
    // An idempotent request without a body may be replayed on another backend when one
    // fails before answering: keep what it takes to rebuild it.
    let replayable = is_idempotent(req.method().as_str().as_bytes()) && body_ended;
    let mut attempts = Attempts::new(ctx, service, states, replayable, settings.retry_idempotent);
    attempts.traced(trace.map(|mut t| {
        if let Some(route) = routed {
            t.route(table, route, index);
        }
        t
    }));
    // Only kept when there is another backend to replay on: the head's copy is not free. The
    // raw path hands the request back when it fails (`Tried::FailedKept`) and needs no copy.
    let replays = replayable && states.len() > 1;
    let mut replay = (replays && !raw).then(|| {
        (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        )
    });
    // A request with a body notes here how far the client got with it, so that a failure
    // while it was broken off or still arriving is not charged to the backend.
    let progress = (!body_ended).then(|| Arc::new(BodyProgress::default()));
    let mut req = req.map(|inner| RequestBody {
        inner: Some(inner),
        bytes_in: None,
        progress: progress.clone(),
    });
    // Consistent hashing in HTTP mode keys on the client's address (`source`).
    let flow = Flow {
        client: client.addr,
        local: client.addr,
    };
    let balanced = attempts.candidates(flow);
    let dial = super::dial::Dial {
        proxy_header: service
            .connection
            .proxy_protocol
            .map(|version| super::proxy_protocol::encode(version, client.addr, client.dest).into()),
        tls: service.connection.backend_tls.clone(),
    };
    for b in pinned
        .into_iter()
        .chain(balanced.filter(|&b| Some(b) != pinned))
    {
        let outcome = if service.upstream_h2 {
            // Boxed, as the hyper client's path below: the request's future (moved whole
            // into each HTTP/2 stream's task) stays the size of the common path's.
            Box::pin(super::upstream_h2::send(
                req,
                &states[b],
                (ctx, &policy),
                &dial,
            ))
            .await
        } else if raw {
            let forwarded = forwarded(client, verified, https, &checked);
            let client_timeout = settings.client_header_timeout;
            let how = (client_timeout, &forwarded);
            super::upstream_h1::send(req, &states[b], (ctx, &policy), how).await
        } else {
            Box::pin(send(req, &states[b], (ctx, &policy), (&mut upgrade, &dial))).await
        };
        let (failure, kept) = match outcome {
            Tried::Unsent(back) => {
                req = back;
                if attempts.failed(b, Failure::Connect) {
                    continue;
                }
                break;
            }
            Tried::Response(mut response) => {
                let body = progress.as_ref().map_or(BodyAt::Done, |p| p.pace());
                attempts.answered(b, response.status().as_u16(), body);
                headers::strip_trace_result(response.headers_mut());
                if let Some(trace) = attempts
                    .trace_value(Some(b))
                    .and_then(|t| HeaderValue::from_str(&t).ok())
                {
                    response.headers_mut().insert(
                        const { http::HeaderName::from_static(headers::SWITCHYARD_TRACE_RESULT) },
                        trace,
                    );
                }
                // Rules that remove a field read the backend's: those apply to the whole map.
                let rules = &service.edge.response_headers;
                if !rules.remove.is_empty() {
                    fields_in_map(&mut response);
                }
                headers::apply_rules(response.headers_mut(), rules);
                finish(&mut response, service, https, pinned, b);
                response.body_mut().hold(slot);
                return log(Some(states[b].addr), response);
            }
            Tried::Failed(failure) => (failure, None),
            Tried::FailedKept(failure, back) => (failure, Some(back)),
        };
        let failure = match &progress {
            Some(progress) => failure.given(progress.at()),
            None => failure,
        };
        if !attempts.failed(b, failure) {
            break;
        }
        // Replayed: the same head again, without a body (only bodiless requests replay).
        let bodiless = RequestBody {
            inner: None,
            bytes_in: None,
            progress: None,
        };
        req = match (kept, replay.take()) {
            (Some(back), _) if replays => Request::from_parts(back.into_parts().0, bodiless),
            (_, Some((method, uri, headers))) => {
                let mut again = Request::new(bodiless);
                *again.method_mut() = method;
                *again.uri_mut() = uri;
                *again.headers_mut() = headers;
                again
            }
            _ => break,
        };
    }
    let client_fault = attempts.client_failed();
    let Some(answer) = attempts.unanswered() else {
        // The client is gone; hyper drops the connection whatever is answered.
        if let Some(line) = line {
            line.client_gone();
        }
        return (plain(StatusCode::BAD_REQUEST, "client gone\n"), None);
    };
    let text = format!("{}\n", answer.text);
    let mut response = Answer::new(answer.status, &text, Some(service), &settings.error_pages)
        .trace(answer.trace.as_deref())
        .response();
    if client_fault {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    match answer.backend {
        Some(b) => {
            finish(&mut response, service, https, pinned, b);
            log(Some(states[b].addr), response)
        }
        None => log(None, response),
    }
}
