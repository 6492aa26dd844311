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
//! sessions, an ACL, basic auth, a redirect to https, canary headers or HTTP/2 backends. Both paths send
//! a request through `exchange::Attempts`, which makes every decision about backends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::exchange::{self, Attempts, Failure};
use super::h1_framing::{
    Chunked, Prefixed, empty_lines, head_end, plain_response, read_head, read_response,
    write_request_head, write_response_head,
};
use super::headers::HSTS_LINE;
use super::http::Protocol;
use super::message::ResponseBody;
use super::pool::Pools;
use super::{Context, connect};
use crate::backends::BackendState;
use crate::metrics::ServiceLabels;
use crate::routing::balance::Flow;
use crate::routing::resolve::{self, Entry, Target};

const READ_CHUNK: usize = 16 * 1024;
/// A response head and a small body fit; bigger bodies grow the buffer to `READ_CHUNK` reads.
const RESPONSE_CHUNK: usize = 4 * 1024;
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;
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

/// Serves a plain HTTP/1.1 connection on `entry` until it closes or leaves the fast path.
pub async fn serve<S>(mut stream: S, peer: SocketAddr, entry: Entry, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = ctx.settings.load_full();
    if settings.access_log || settings.max_headers > MAX_HEADERS {
        return Box::pin(super::http::serve(
            stream,
            peer,
            entry,
            Protocol::Http1,
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
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, read) => r,
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
                        &ip,
                        &ctx,
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
                return Box::pin(super::http::serve(io, peer, entry, Protocol::Http1, ctx)).await;
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
}

/// Checks and routes a request, and writes the head the backend gets into `out`.
fn plan(
    req: &httparse::Request<'_, '_>,
    table: &crate::routing::RoutingTable,
    entry: Entry,
    out: &mut Vec<u8>,
    ip: &str,
    ctx: &Context,
) -> Result<Plan, super::message::Refusal> {
    let Some(head) = read_head(req)? else {
        return Ok(Plan::Fallback);
    };
    if entry == Entry::AppId {
        return Ok(Plan::Fallback);
    }
    let path = head.path.split('?').next().unwrap_or("/");
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
    let index = match table.resolve(entry, request) {
        None => {
            let answer = plain_response(
                503,
                "Service Unavailable",
                "no route for this request\n",
                true,
            );
            return Ok(Plan::Answer(answer, true));
        }
        Some((Target::Service(index), _)) => index,
        Some((Target::Route(route), _)) => {
            let route = &table.routes[route];
            if route.has_canaries() {
                return Ok(Plan::Fallback);
            }
            match route.pick(None, &table.services) {
                Some(index) => index,
                None => {
                    let service = table.services[route.first()].key.to_string();
                    ctx.metrics
                        .no_backend
                        .get_or_create(&ServiceLabels { service })
                        .inc();
                    let close = close || length > 0;
                    let answer =
                        plain_response(503, "Service Unavailable", "no backend available\n", close);
                    return Ok(Plan::Answer(answer, close));
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
    {
        return Ok(Plan::Fallback);
    }
    out.clear();
    write_request_head(out, req, &head, ip, https);
    Ok(Plan::Forward(Forwarding {
        index,
        content_length: length,
        close,
        head_only: head.method == "HEAD",
        replayable: exchange::is_idempotent(head.method.as_bytes()),
        extra: if https && http.hsts { HSTS_LINE } else { b"" },
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
    } = request;
    let service = &snapshot.table.services[index];
    let states = &snapshot.states[index];
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
    let flow = Flow {
        client: peer,
        local: peer,
    };
    let stopping = ctx.shutdown.is_stopping();
    for b in attempts.candidates(flow) {
        let state = &states[b];
        let Some(mut upstream) =
            checkout_or_connect(&ctx.pools, state, settings.connect_timeout).await
        else {
            if attempts.failed(b, Failure::Connect) {
                continue;
            }
            break;
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
                    settings.client_header_timeout,
                )
                .await?
            } else {
                BodySent::Whole
            };
            state.metrics.bytes_in.inc_by(content_length);
            Ok(sent)
        }
        .await;
        let started = Instant::now();
        let cut = matches!(sent, Ok(BodySent::Cut));
        let answer = match sent {
            Err(failure) => Err(failure),
            Ok(_) => {
                let relay = Relay {
                    head_only,
                    close_client: client_close || stopping || cut,
                    reuse: !cut,
                    extra,
                    timeout: settings.response_timeout,
                    client_timeout: settings.client_header_timeout,
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
                state
                    .metrics
                    .response_seconds
                    .observe(started.elapsed().as_secs_f64());
                attempts.answered(b, status);
                return if close || client_close || stopping || cut {
                    Step::Close
                } else {
                    Step::Done
                };
            }
            Err(failure) => {
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
    match client
        .write_all(&plain_response(
            answer.status,
            exchange::reason(answer.status),
            &(answer.text + "\n"),
            close,
        ))
        .await
    {
        Ok(()) if !close => Step::Done,
        _ => Step::Close,
    }
}

/// A pooled connection that is still open, or a new one.
async fn checkout_or_connect(
    pools: &Pools,
    state: &Arc<BackendState>,
    timeout: Duration,
) -> Option<TcpStream> {
    if let Some(stream) = pools.checkout_raw(state) {
        return Some(stream);
    }
    let started = Instant::now();
    match connect(state.addr, timeout).await {
        Ok(stream) => {
            state.observe_connect(started.elapsed());
            Some(stream)
        }
        Err(e) => {
            state.metrics.connect_failures.inc();
            tracing::debug!(backend = %state.addr, "connect failed: {e}");
            None
        }
    }
}

/// How much of a request body went to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodySent {
    Whole,
    /// The backend answered (or closed) before it took the whole body: its answer, if any,
    /// is relayed, and the rest of the body is never read.
    Cut,
}

/// Copies exactly `n` body bytes from the client to the backend, watching the backend for an
/// early answer meanwhile. A client that stops sending for `client_timeout` or goes away is the
/// client's failure, never the backend's.
async fn relay_exact(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut TcpStream,
    mut n: u64,
    client_timeout: Duration,
) -> Result<BodySent, Failure> {
    let mut chunk = vec![0u8; READ_CHUNK];
    while n > 0 {
        let want = (n as usize).min(chunk.len());
        let got = tokio::select! {
            biased;
            ready = to.readable() => {
                if ready.is_err() || backend_spoke(to) {
                    return Ok(BodySent::Cut);
                }
                continue; // readiness without input: nothing was lost, read again
            }
            read = tokio::time::timeout(client_timeout, from.read(&mut chunk[..want])) => match read {
                Err(_) => return Err(Failure::ClientStalled),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Failure::ClientGone),
                Ok(Ok(got)) => got,
            },
        };
        if to.write_all(&chunk[..got]).await.is_err() {
            // It may have answered before it closed: the answer is read next.
            return Ok(BodySent::Cut);
        }
        n -= got as u64;
    }
    Ok(BodySent::Whole)
}

/// Whether a backend has sent something (or closed) while it was being sent a body; a
/// readiness that turns out empty is cleared so that the next wait is a real one.
fn backend_spoke(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
        let mut probe = [0u8; 1];
        // SAFETY: a one-byte peek into a local buffer on a socket this stream owns.
        let n = unsafe {
            libc::recv(
                fd,
                probe.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n)
        }
    });
    !matches!(peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// What the response relay needs to know of the request.
#[derive(Clone, Copy)]
struct Relay<'a> {
    /// A HEAD request: the response has no body whatever it says.
    head_only: bool,
    /// The client connection closes after this response.
    close_client: bool,
    /// The backend connection may go back to the pool afterwards (not when the request's body
    /// was cut short).
    reuse: bool,
    /// Header lines added to the response (HSTS).
    extra: &'a [u8],
    /// The wait for the response head, and then for each read of its body.
    timeout: Duration,
    /// The longest a client may take to take a piece of the response.
    client_timeout: Duration,
}

struct Relayed {
    status: u16,
    /// The client connection must close (the body ran to the backend's close, or broke off).
    close: bool,
}

/// Reads the backend's response head (within `timeout`) and relays the response to the client;
/// the backend connection goes back to the pool when the exchange left it reusable. `Err` is a
/// failure before any response byte reached the client; once one has, a broken body closes
/// the client connection (and, when the backend broke it, counts against the backend).
async fn relay_response(
    client: &mut (impl AsyncWrite + Unpin),
    mut upstream: TcpStream,
    out: &mut Vec<u8>,
    rbuf: &mut BytesMut,
    (pools, state): (&Pools, &Arc<BackendState>),
    relay: &Relay<'_>,
) -> Result<Relayed, Failure> {
    let Relay {
        head_only,
        close_client,
        reuse,
        extra,
        timeout,
        client_timeout,
    } = *relay;
    rbuf.clear();
    if rbuf.capacity() > 4 * READ_CHUNK {
        *rbuf = BytesMut::new(); // a big response passed: give its room back
    }
    if rbuf.capacity() < RESPONSE_CHUNK {
        rbuf.reserve(RESPONSE_CHUNK);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (head_len, status, checked) = loop {
            // Parsed in a block of its own: the header slots are not kept across the read
            // below, so they do not weigh on every connection's future.
            let parsed = if rbuf.is_empty() {
                None
            } else {
                let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
                let mut res = httparse::Response::new(&mut slots);
                match res.parse(rbuf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let checked =
                            read_response(&res, head_only).map_err(Failure::BadResponse)?;
                        out.clear();
                        let close = close_client || checked.body == ResponseBody::ToClose;
                        write_response_head(out, &res, &checked, close, extra);
                        Some((n, res.code.unwrap_or(502), checked))
                    }
                    Ok(httparse::Status::Partial) if rbuf.len() < MAX_RESPONSE_HEAD => None,
                    _ => return Err(Failure::BadResponse("backend sent a malformed response")),
                }
            };
            if let Some(head) = parsed {
                break head;
            }
            let n = drained_or(state, deadline, upstream.read_buf(rbuf)).await?;
            if n == 0 {
                return Err(Failure::Lost(
                    "backend closed the connection without a response".into(),
                ));
            }
        };
        rbuf.advance(head_len);
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(Failure::BadResponse("backend switched protocols unasked"));
            }
            // An interim response (103 Early Hints): passed on, then the real one.
            if !write_within(client, out, client_timeout).await {
                return Err(Failure::ClientGone);
            }
            continue;
        }
        state
            .metrics
            .response(http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY));
        let mut body_out = 0u64;
        let relayed = relay_body(
            (client, &mut upstream),
            (rbuf, out),
            checked.body,
            &mut body_out,
            (client_timeout, timeout),
        )
        .await;
        state.metrics.bytes_out.inc_by(body_out);
        let close = match relayed {
            Ok(reusable) => {
                if reuse && reusable && !checked.close && rbuf.is_empty() {
                    pools.checkin_raw(state, upstream);
                }
                checked.body == ResponseBody::ToClose
            }
            Err(BodyBroke::Backend) => {
                state.metrics.response(http::StatusCode::BAD_GATEWAY);
                // Counted as a 5xx for the outlier record, whatever status had begun.
                return Ok(Relayed {
                    status: 502,
                    close: true,
                });
            }
            Err(BodyBroke::Client) => true,
        };
        return Ok(Relayed { status, close });
    }
}

/// A backend read bounded by the response deadline, or by the backend's drain deadline when it
/// was removed before the exchange (one timer: a removal during the wait leaves it bounded by
/// the response timeout).
async fn drained_or(
    state: &BackendState,
    deadline: tokio::time::Instant,
    read: impl Future<Output = std::io::Result<usize>>,
) -> Result<usize, Failure> {
    let drain = state.drain_deadline();
    match tokio::time::timeout_at(drain.map_or(deadline, |d| d.min(deadline)), read).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(Failure::Lost(format!("backend failed: {e}"))),
        Err(_) if drain.is_some_and(|d| d <= deadline) => Err(Failure::Removed),
        Err(_) => Err(Failure::TimedOut),
    }
}

/// Writes all of `bytes` to the client within `timeout`; the timer is only armed when the
/// socket does not take them at once (the common case costs no timer).
async fn write_within(
    client: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    timeout: Duration,
) -> bool {
    let mut write = std::pin::pin!(client.write_all(bytes));
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(result) => result.is_ok(),
        std::task::Poll::Pending => {
            matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(())))
        }
    }
}

/// Which side broke a response body off once it had begun.
enum BodyBroke {
    Client,
    Backend,
}

/// Relays the body after `head` (sent with its first bytes); true when the backend connection
/// ended the exchange cleanly and can be reused. Every wait is bounded: a client that takes
/// nothing for `client_timeout`, a backend that sends nothing for `backend_timeout`.
async fn relay_body(
    (client, upstream): (&mut (impl AsyncWrite + Unpin), &mut TcpStream),
    (rbuf, head): (&mut BytesMut, &mut Vec<u8>),
    framing: ResponseBody,
    body_out: &mut u64,
    (client_timeout, backend_timeout): (Duration, Duration),
) -> Result<bool, BodyBroke> {
    let mut left = match framing {
        ResponseBody::Empty => 0,
        ResponseBody::Length(n) => n,
        ResponseBody::Chunked | ResponseBody::ToClose => u64::MAX,
    };
    let mut chunked = Chunked::default();
    loop {
        // What of `rbuf` belongs to this body.
        let take = match framing {
            ResponseBody::Chunked => match chunked.feed(rbuf) {
                Ok(Some(end)) => {
                    left = 0;
                    end
                }
                Ok(None) => rbuf.len(),
                Err(_) => return Err(BodyBroke::Backend),
            },
            _ => (rbuf.len() as u64).min(left) as usize,
        };
        if let ResponseBody::Length(_) = framing {
            left -= take as u64;
        }
        *body_out += take as u64;
        let written = if head.is_empty() {
            write_within(client, &rbuf[..take], client_timeout).await
        } else {
            head.extend_from_slice(&rbuf[..take]);
            let written = write_within(client, head, client_timeout).await;
            head.clear();
            written
        };
        if !written {
            return Err(BodyBroke::Client);
        }
        rbuf.advance(take);
        if left == 0 {
            return Ok(true);
        }
        rbuf.reserve(READ_CHUNK);
        match tokio::time::timeout(backend_timeout, upstream.read_buf(rbuf)).await {
            Ok(Ok(0)) if framing == ResponseBody::ToClose => return Ok(false),
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(BodyBroke::Backend),
            Ok(Ok(_)) => {}
        }
    }
}
