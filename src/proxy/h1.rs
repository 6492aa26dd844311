//! The HTTP/1.1 fast path for plain listeners: request heads are parsed in place (httparse),
//! written to a pooled backend connection with the proxy's header changes, and the response is
//! relayed by its framing (length, chunked, or to the close), all in the connection's own task.
//! It does the common case with a fraction of the work of the general path.
//!
//! Every head is first checked against `message`'s rules, whichever path serves it: a request
//! two parsers could read two ways is refused here, before any byte of it goes anywhere.
//! Anything else the fast path does not do leaves it for good, with the bytes read so far, to
//! the general path (hyper): HTTP/1.0, upgrades, `Expect`, chunked request bodies,
//! absolute-form targets, the access log, the app-id listener, and services with sticky
//! sessions, an ACL, basic auth, a redirect to https, canary headers, HTTP/2 backends, TLS to backends or a PROXY header to backends. Both paths send
//! a request through `exchange::Attempts`, which makes every decision about backends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::errors::Answer;
use super::exchange::{self, Attempts, BodyAt, Failure, Policy};
use super::h1_framing::{
    Prefixed, empty_lines, head_end, plain_response, read_head, write_request_head_with,
};
use super::h1_relay::{BodySent, READ_CHUNK, Relay, Relayed, relay_exact, relay_response};
use super::headers::HSTS_LINE;
use super::http::Protocol;
use super::{Context, connect};
use crate::backends::BackendState;
use crate::metrics::ServiceLabels;
use crate::routing::balance::Flow;
use crate::routing::resolve::{self, Entry, Target};

/// Request header fields the fast path parses; a configured `http.max_headers` above it sends
/// connections to the general path.
const MAX_HEADERS: usize = 128;

/// Buffers kept for a connection's life, so that a request allocates nothing in the common
/// case.
#[derive(Default)]
struct Scratch {
    /// The request as sent to the backend.
    request: Vec<u8>,
    /// The response head as sent to the client, then its first body bytes.
    response: Vec<u8>,
    /// What the backend sent.
    from_backend: BytesMut,
}

/// How a request went; the connection goes on after `Done`.
enum Step {
    Done,
    Close,
    /// Leave the fast path: the general path takes the connection with these bytes.
    Fallback,
}

/// Serves a plain HTTP/1.1 connection on `entry` until it closes or leaves the fast path;
/// `peer` is the client's address and the address it connected to.
pub async fn serve<S>(stream: S, peer: (SocketAddr, SocketAddr), entry: Entry, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_h1_or_h2c(stream, peer, entry, false, ctx).await
}

/// HTTP/2's connection preface begins with this line (RFC 9113 §3.4): on a listener that also
/// takes h2c (`http.h2c`), a connection opening with it is HTTP/2 with prior knowledge.
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Serves a plain connection on a listener that takes both HTTP/1.1 and h2c (`h2c`): HTTP/1.1
/// on the fast path, and a connection that opens with HTTP/2's preface on the general path as
/// HTTP/2 — so turning h2c on costs the HTTP/1.1 clients nothing.
pub async fn serve_h1_or_h2c<S>(
    mut stream: S,
    (peer, dest): (SocketAddr, SocketAddr),
    entry: Entry,
    h2c: bool,
    ctx: Arc<Context>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = ctx.settings.load_full();
    if settings.access_log || settings.max_headers > MAX_HEADERS {
        let protocol = if h2c { Protocol::Auto } else { Protocol::Http1 };
        return Box::pin(super::http::serve(
            stream,
            (peer, dest),
            entry,
            protocol,
            ctx,
        ))
        .await;
    }
    // Buffers are taken when bytes arrive, not per connection: an idle connection holds only
    // what its last request needed (10,000 idle connections must stay cheap).
    let mut buf = BytesMut::new();
    let mut scratch = Scratch::default();
    let mut served = 0usize;
    let ip = peer.ip().to_string();
    let client = super::headers::Client {
        trusted: settings.edge.trusts(peer.ip()),
        ..super::headers::Client::untrusted(ip.as_bytes(), dest.port())
    };
    // One wait for the stop per connection, registered once, not one per request.
    let watching = ctx.clone();
    let mut stopping = std::pin::pin!(watching.shutdown.stopping());
    loop {
        // The next head: within the header timeout; between requests, a stop ends the wait.
        let deadline = tokio::time::Instant::now() + settings.client_header_timeout;
        let head_len = loop {
            buf.advance(empty_lines(&buf));
            if let Some(end) = head_end(&buf) {
                break end;
            }
            if buf.len() >= settings.max_header_bytes {
                return refuse(&mut stream, 431, "request head too large").await;
            }
            let idle = buf.is_empty() && served > 0;
            // A new head is read into the stack first, and only what came is kept; a head
            // that arrives in pieces grows the buffer.
            let mut first = [0u8; 1024];
            let read = async {
                if buf.is_empty() {
                    let n = stream.read(&mut first).await?;
                    buf.extend_from_slice(&first[..n]);
                    Ok(n)
                } else {
                    if buf.capacity() - buf.len() < 1024 {
                        buf.reserve(READ_CHUNK);
                    }
                    stream.read_buf(&mut buf).await
                }
            };
            // The read first: a stop is looked at only while no bytes are there (each look
            // at the shutdown watch takes its lock; a random order would look twice as often).
            let read = tokio::select! {
                biased;
                r = super::coarse_timer::timeout_at(deadline, read) => r,
                _ = &mut stopping, if idle => return,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) if buf.is_empty() => return, // an idle keep-alive connection
                Err(_) => return refuse(&mut stream, 408, "request head timed out").await,
            }
        };
        if head_len > settings.max_header_bytes {
            return refuse(&mut stream, 431, "request head too large").await;
        }
        // The head apart from what follows it (a body, pipelined requests): no copy.
        let head_bytes = buf.split_to(head_len);
        if h2c && served == 0 && head_bytes.starts_with(H2_PREFACE_LINE) {
            // HTTP/2 with prior knowledge: the general path reads the preface again.
            let mut all = head_bytes;
            all.unsplit(buf);
            let io = Prefixed::new(all.freeze(), stream);
            return Box::pin(super::http::serve(
                io,
                (peer, dest),
                entry,
                Protocol::Http2,
                ctx,
            ))
            .await;
        }
        let snapshot = ctx.store.load_full();
        let planned = {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut slots);
            match req.parse(&head_bytes) {
                Ok(httparse::Status::Complete(_)) if req.headers.len() <= settings.max_headers => {
                    plan(
                        &req,
                        &snapshot.table,
                        entry,
                        &mut scratch.request,
                        (&client, peer.ip()),
                        (&ctx, &settings),
                    )
                    .map_err(|r| (r.status, r.reason))
                }
                Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
                    Err((431, "too many header fields"))
                }
                _ => Err((400, "malformed request")),
            }
        };
        let step = match planned {
            Err((status, reason)) => return refuse(&mut stream, status, reason).await,
            Ok(Plan::Fallback) => Step::Fallback,
            Ok(Plan::Answer(answer, close)) => match stream.write_all(&answer).await {
                Ok(()) if !close => Step::Done,
                _ => Step::Close,
            },
            Ok(Plan::Forward(request)) => {
                forward(
                    &mut stream,
                    &mut buf,
                    &mut scratch,
                    &snapshot,
                    request,
                    peer,
                    (&ctx, &settings),
                )
                .await
            }
        };
        drop(snapshot);
        match step {
            Step::Done => {
                served += 1;
                if buf.is_empty() && buf.capacity() > 2 * READ_CHUNK {
                    buf = BytesMut::new(); // a big body passed: give its room back
                }
            }
            Step::Close => return,
            Step::Fallback => {
                // Nothing was taken from `buf` on the way to a fallback.
                let mut all = head_bytes;
                all.unsplit(buf);
                let io = Prefixed::new(all.freeze(), stream);
                // Boxed: the general path's connection state is large, and every connection's
                // future would carry room for it.
                return Box::pin(super::http::serve(
                    io,
                    (peer, dest),
                    entry,
                    Protocol::Http1,
                    ctx,
                ))
                .await;
            }
        }
    }
}

async fn refuse(stream: &mut (impl AsyncWrite + Unpin), status: u16, text: &str) {
    let _ = stream
        .write_all(&plain_response(
            status,
            exchange::reason(status),
            &format!("{text}\n"),
            true,
        ))
        .await;
}

/// What routing decided for one request; it borrows nothing of the head, whose header slots are
/// then free before anything is awaited (they would weigh on every connection's future).
enum Plan {
    Fallback,
    /// No backend: this answer, then close or not.
    Answer(Vec<u8>, bool),
    Forward(Forwarding),
}

struct Forwarding {
    index: usize,
    content_length: u64,
    close: bool,
    head_only: bool,
    replayable: bool,
    /// Header lines added to the response (HSTS).
    extra: &'static [u8],
    /// The request asked for its trace with the admin token (`trace`).
    trace: Option<Box<super::trace::Trace>>,
}

/// Checks and routes a request, and writes the head the backend gets into `out`.
fn plan(
    req: &httparse::Request<'_, '_>,
    table: &crate::routing::RoutingTable,
    entry: Entry,
    out: &mut Vec<u8>,
    (client, peer): (&super::headers::Client<'_>, std::net::IpAddr),
    (ctx, settings): (&Context, &super::Settings),
) -> Result<Plan, super::message::Refusal> {
    let Some(head) = read_head(req)? else {
        return Ok(Plan::Fallback);
    };
    if entry == Entry::AppId {
        return Ok(Plan::Fallback);
    }
    let path = super::h1_framing::before(head.path, b'?');
    let request = resolve::Request {
        host: head.checked.host,
        path,
        app_id: None,
    };
    let close = head.checked.close;
    let length = match head.checked.body {
        super::message::RequestBody::Length(n) => n,
        _ => 0,
    };
    let (index, routed) = match table.resolve(entry, request) {
        Err(why) => {
            let answer = Answer::unrouted(why, &settings.error_pages);
            return Ok(Plan::Answer(answer.bytes(true), true));
        }
        Ok((Target::Service(index), _)) => (index, None),
        Ok((Target::Route(r), _)) => {
            let route = &table.routes[r];
            if route.has_canaries() {
                return Ok(Plan::Fallback);
            }
            match route.pick(None, &table.services) {
                Some(index) => (index, Some(route)),
                None => {
                    let first = &table.services[route.first()];
                    ctx.metrics
                        .no_backend
                        .get_or_create(&ServiceLabels {
                            service: first.key.to_string(),
                        })
                        .inc();
                    let close = close || length > 0;
                    let answer = Answer::new(
                        503,
                        "no backend available\n",
                        Some(first),
                        &settings.error_pages,
                    );
                    return Ok(Plan::Answer(answer.bytes(close), close));
                }
            }
        }
    };
    let service = &table.services[index];
    let http = &service.http;
    let https = matches!(entry, Entry::Vhost { https: true });
    let redirect = http.redirect_to_https && !https;
    if !http.acl.is_empty()
        || http.auth.is_some()
        || http.rewrite.is_some()
        || redirect
        || http.sticky
        || service.upstream_h2
        || service.connection.proxy_protocol.is_some()
        || service.connection.backend_tls.is_some()
        || service.connection.client_ca.is_some()
    {
        return Ok(Plan::Fallback);
    }
    out.clear();
    let trace_asked = write_request_head_with(
        out,
        req,
        &head,
        client,
        https,
        &service.edge.request_headers,
    );
    let trace = super::trace::asked(trace_asked, peer, ctx).map(|mut t| {
        if let Some(route) = routed {
            t.route(table, route, index);
        }
        t
    });
    Ok(Plan::Forward(Forwarding {
        index,
        content_length: length,
        close,
        head_only: head.method == "HEAD",
        replayable: exchange::is_idempotent(head.method.as_bytes()),
        extra: if https && http.hsts { HSTS_LINE } else { b"" },
        trace,
    }))
}

/// Sends a planned request (and the rest of its body) to a backend of its service, with
/// fall-through and replay as `Attempts` decides, and relays the answer.
async fn forward(
    client: &mut (impl AsyncRead + AsyncWrite + Unpin),
    buf: &mut BytesMut,
    scratch: &mut Scratch,
    snapshot: &crate::snapshot::Snapshot,
    request: Forwarding,
    peer: SocketAddr,
    (ctx, settings): (&Context, &super::Settings),
) -> Step {
    let Forwarding {
        index,
        content_length,
        close: client_close,
        head_only,
        replayable,
        extra,
        trace,
    } = request;
    let service = &snapshot.table.services[index];
    let states = &snapshot.states[index];
    let limits = snapshot.limits.get(index).and_then(Option::as_ref);
    // The app's maintenance switch and limits, before anything goes to a backend; a body not
    // read yet leaves the connection unusable after the answer.
    let _slot = match super::limits::admit(ctx, service, limits, peer.ip()) {
        Ok(slot) => slot,
        Err(refusal) => {
            let close = client_close || content_length > 0;
            let text = format!("{}\n", refusal.text());
            let answer = Answer::new(
                refusal.status(),
                &text,
                Some(service),
                &settings.error_pages,
            )
            .retry_after(refusal.retry_after());
            return match client.write_all(&answer.bytes(close)).await {
                Ok(()) if !close => Step::Done,
                _ => Step::Close,
            };
        }
    };
    let policy = Policy::of(service, settings, limits);
    let in_buf = (buf.len() as u64).min(content_length) as usize;
    let body_prefix = buf.split_to(in_buf);
    let body_left = content_length - in_buf as u64;
    scratch.request.extend_from_slice(&body_prefix);
    let mut attempts = Attempts::new(
        ctx,
        service,
        states,
        replayable && body_left == 0,
        settings.retry_idempotent,
    );
    attempts.traced(trace);
    let flow = Flow {
        client: peer,
        local: peer,
    };
    let stopping = ctx.shutdown.is_stopping();
    for b in attempts.candidates(flow) {
        let state = &states[b];
        let mut upstream = match checkout_or_connect(ctx, state, &policy).await {
            Ok(upstream) => upstream,
            Err(unavailable) => {
                let next = match unavailable {
                    NoConnection::Overloaded => attempts.failed(b, Failure::Overloaded),
                    NoConnection::Failed(e) => attempts.connect_failed(b, &e),
                };
                if next {
                    continue;
                }
                break;
            }
        };
        let active = state.open();
        // Send the request, then the rest of a body still coming from the client. A backend
        // may answer before it has the whole body (a 413, a 401): the body then stops there,
        // the answer is relayed, and the client connection closes after it.
        let sent = async {
            upstream
                .write_all(&scratch.request)
                .await
                .map_err(|e| Failure::Lost(format!("backend failed: {e}")))?;
            let sent = if body_left > 0 {
                relay_exact(
                    client,
                    &mut upstream,
                    body_left,
                    (settings.client_header_timeout, policy.response),
                )
                .await?
            } else {
                BodySent::Whole
            };
            state.metrics.count().bytes_in.inc_by(content_length);
            Ok(sent)
        }
        .await;
        let started = Instant::now();
        let cut = match sent {
            Ok(BodySent::Cut { at, closed }) => Some((at, closed)),
            _ => None,
        };
        let answer = match sent {
            Err(failure) => Err(failure),
            Ok(_) => {
                // A traced request's line goes with the head (this backend's answer).
                let traced = attempts
                    .trace_value(Some(b))
                    .map(|v| [extra, &super::trace::line(&v)].concat());
                let relay = Relay {
                    head_only,
                    close_client: client_close || stopping || cut.is_some(),
                    reuse: cut.is_none(),
                    extra: traced.as_deref().unwrap_or(extra),
                    rules: &service.edge.response_headers,
                    timeout: policy.response,
                    client_timeout: settings.client_header_timeout,
                    sent: started,
                };
                let (to_client, from_backend) = (&mut scratch.response, &mut scratch.from_backend);
                relay_response(
                    client,
                    upstream,
                    to_client,
                    from_backend,
                    (&ctx.pools, state),
                    &relay,
                )
                .await
            }
        };
        drop(active);
        match answer {
            Ok(Relayed { status, close }) => {
                attempts.answered(b, status, cut.map_or(BodyAt::Done, |(at, _)| at));
                return if close || client_close || stopping || cut.is_some() {
                    Step::Close
                } else {
                    Step::Done
                };
            }
            Err(failure) => {
                let failure = match cut {
                    Some((at, true)) => failure.given(at),
                    _ => failure,
                };
                if !attempts.failed(b, failure) {
                    break;
                }
            }
        }
    }
    // A client that failed mid-body leaves its connection unusable: close after the answer.
    let close = attempts.client_failed() || body_left > 0 || client_close || stopping;
    let Some(answer) = attempts.unanswered() else {
        return Step::Close; // the client went away
    };
    // Once a response has begun, nothing more can be said on this connection.
    let close = close || answer.status != 503;
    let text = answer.text + "\n";
    let answer = Answer::new(answer.status, &text, Some(service), &settings.error_pages)
        .trace(answer.trace.as_deref());
    match client.write_all(&answer.bytes(close)).await {
        Ok(()) if !close => Step::Done,
        _ => Step::Close,
    }
}

/// Why no connection to a backend was had.
pub(super) enum NoConnection {
    /// The app's `MAX_PENDING_REQUESTS` were waiting already.
    Overloaded,
    Failed(std::io::Error),
}

/// A pooled connection that is still open, or a new one.
/// A new connection counts among the app's requests waiting for one (`MAX_PENDING_REQUESTS`)
/// while it opens.
async fn checkout_or_connect(
    ctx: &Context,
    state: &Arc<BackendState>,
    policy: &Policy<'_>,
) -> Result<TcpStream, NoConnection> {
    if let Some(stream) = ctx.pools.checkout_raw(state) {
        return Ok(stream);
    }
    connect_new(ctx, state, policy).await
}

/// A new plain connection to a backend (HTTP/2 clients' requests to HTTP/1.1 backends open
/// theirs here too, `upstream_h1`).
pub(super) async fn connect_new(
    ctx: &Context,
    state: &Arc<BackendState>,
    policy: &Policy<'_>,
) -> Result<TcpStream, NoConnection> {
    let Ok(_pending) = super::limits::pending(policy.limits) else {
        return Err(NoConnection::Overloaded);
    };
    let started = Instant::now();
    match connect(state.addr, policy.connect).await {
        Ok(stream) => {
            state.observe_connect(started.elapsed());
            Ok(stream)
        }
        Err(e) => {
            super::count_connect_failure(&ctx.metrics, state, &e);
            Err(NoConnection::Failed(e))
        }
    }
}
