//! HTTP mode, the client side: HTTP/1.1 with keep-alive, for service ports in `http` mode and for
//! the shared vhost listeners. Each request loads the table once, finds its service (by port, by
//! host and path, or by `X-Marathon-App-Id`), applies the service's policy (ACL, redirect to
//! https, sticky cookie, HSTS), and goes to a backend through `upstream`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Context;
use super::upstream::{Outcome, ProxyBody, RequestBody, send};
use crate::metrics::{Metrics, ServiceLabels};
use crate::routing::balance::Flow;
use crate::routing::vhosts::host_key;
use crate::routing::{Backend, Service};

/// Which listener a request came in on, and so how it finds its service.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    /// An app's own service port in `http` mode.
    Port(SocketAddr),
    /// A shared vhost listener.
    Vhost { https: bool },
    /// marathon-lb's `X-Marathon-App-Id` listener.
    AppId,
}

/// Where a request goes before an app is chosen.
enum Target {
    /// A route: weighted (and canary) choice among its apps.
    Route(usize),
    /// One app's service directly (app-id routing, the default app).
    Service(usize),
}

/// marathon-lb's sticky cookie name, so pinned clients stay pinned across the migration.
const STICKY_COOKIE: &str = "mesosphere_server_id";
const HSTS: HeaderValue = HeaderValue::from_static("max-age=15768000");

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

pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    entry: Entry,
    protocol: Protocol,
    ctx: Arc<Context>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = ctx.clone();
    // The client's address as a header value, made once per connection, not per request.
    let client = Client {
        addr: peer,
        ip: HeaderValue::from_str(&peer.ip().to_string()).expect("an IP is a valid header value"),
    };
    // Set by the first request: see `drive!`.
    let asked = Arc::new(AtomicBool::new(false));
    let seen = asked.clone();
    let service = service_fn(move |req| {
        seen.store(true, Ordering::Relaxed);
        let (ctx, client) = (handler.clone(), client.clone());
        async move { Ok::<_, Infallible>(proxy(req, &client, entry, &ctx).await) }
    });
    let io = TokioIo::new(stream);
    let settings = ctx.settings.load_full();
    match protocol {
        Protocol::Http1 => drive!(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.client_header_timeout)
                .max_buf_size(settings.max_header_bytes)
                .max_headers(settings.max_headers)
                .keep_alive(true)
                .serve_connection(io, service)
                .with_upgrades(),
            ctx,
            asked
        ),
        Protocol::Http2 => drive!(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(settings.max_header_bytes as u32)
                .serve_connection(io, service),
            ctx,
            asked
        ),
        Protocol::Auto => {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.client_header_timeout)
                .max_buf_size(settings.max_header_bytes)
                .max_headers(settings.max_headers)
                .keep_alive(true);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(settings.max_header_bytes as u32);
            drive!(
                builder.serve_connection_with_upgrades(io, service),
                ctx,
                asked
            )
        }
    }
}

/// Who is on the other end of a client connection.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    ip: HeaderValue,
}

async fn proxy(
    mut req: Request<Incoming>,
    client: &Client,
    entry: Entry,
    ctx: &Context,
) -> Response<ProxyBody> {
    let settings = ctx.settings.load();
    let started = settings.access_log.then(Instant::now);
    let snapshot = ctx.store.load_full();
    let table = &snapshot.table;
    let target = match entry {
        Entry::Port(listen) => table.by_listen.get(&listen).map(|&r| Target::Route(r)),
        Entry::Vhost { .. } => {
            let mut buf = [0u8; 256];
            let host = req.headers().get(header::HOST).map(HeaderValue::as_bytes);
            let host = host.or(req.uri().host().map(str::as_bytes));
            host.and_then(|h| host_key(h, &mut buf))
                .and_then(|h| table.vhosts.route(h, req.uri().path()))
                .map(Target::Route)
                .or(table.default_service.map(Target::Service))
        }
        Entry::AppId => req
            .headers()
            .get("x-marathon-app-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|id| table.by_app_id.get(id).copied())
            .map(Target::Service),
    };
    let index = match target {
        None => {
            let response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "no route for this request\n",
            );
            return logged(started, &req, None, response);
        }
        Some(Target::Service(index)) => index,
        Some(Target::Route(route)) => {
            let route = &table.routes[route];
            match route.pick(Some(req.headers()), &table.services) {
                Some(index) => index,
                None => {
                    let service = &table.services[route.first()].key;
                    ctx.metrics
                        .no_backend
                        .get_or_create(&ServiceLabels {
                            service: service.to_string(),
                        })
                        .inc();
                    let response = plain(StatusCode::SERVICE_UNAVAILABLE, "no backend available\n");
                    return logged(started, &req, None, response);
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
        let response = plain(StatusCode::FORBIDDEN, "forbidden\n");
        return logged(started, &req, None, response);
    }
    if let Some(auth) = &service.http.auth
        && let Some(response) = super::basic_auth::check(auth, req.headers()).await
    {
        return logged(started, &req, None, response);
    }
    if matches!(entry, Entry::Vhost { https: false }) && service.http.redirect_to_https {
        let response = redirect_to_https(&req);
        return logged(started, &req, None, response);
    }
    let pinned = service
        .http
        .sticky
        .then(|| sticky_backend(req.headers(), &service.backends))
        .flatten();
    let mut upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let https = matches!(entry, Entry::Vhost { https: true });
    let log_line = started.map(|_| RequestLine::of(&req));
    prepare_request(&mut req, client, https, upgrade.is_some());
    // An idempotent request without a body may be replayed once on another backend when one
    // fails before answering: keep what it takes to rebuild it.
    let mut replay = (settings.retry_idempotent
        && is_idempotent(req.method())
        && http_body::Body::is_end_stream(req.body()))
    .then(|| {
        ctx.retry_budget.deposit();
        (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        )
    });
    let mut req = req.map(|inner| RequestBody {
        inner: Some(inner),
        bytes_in: None,
    });
    // Consistent hashing in HTTP mode keys on the client's address (`source`).
    let flow = Flow {
        client: client.addr,
        local: client.addr,
    };
    let balanced = crate::outlier::ordered(
        states,
        service.balancer.candidates(flow, |i| states[i].load()),
    );
    let mut unanswered = None;
    for b in pinned
        .into_iter()
        .chain(balanced.filter(|&b| Some(b) != pinned))
    {
        let outcome = if service.upstream_h2 {
            super::upstream_h2::send(req, &states[b], ctx).await
        } else {
            send(req, &states[b], ctx, &mut upgrade).await
        };
        let (status, reason) = match outcome {
            Outcome::Unsent(back) => {
                crate::outlier::failure(states, b);
                req = back;
                continue;
            }
            Outcome::Response(mut response) => {
                if response.status().is_server_error() {
                    crate::outlier::failure(states, b);
                } else {
                    states[b].outlier.success();
                }
                finish(&mut response, service, https, pinned, b);
                return match log_line {
                    Some(line) => line.log(started, Some(states[b].addr), response),
                    None => response,
                };
            }
            Outcome::Lost(reason) => (StatusCode::BAD_GATEWAY, reason),
            Outcome::Failed(status, reason) => (status, reason),
        };
        // The request went out and no response byte came back (the backend failed, hung past
        // the response timeout, or left the table): a replayable request goes once to the next
        // backend, within the retry budget.
        crate::outlier::failure(states, b);
        tracing::debug!(service = %service.key, backend = %states[b].addr, "{reason}");
        if let Some((method, uri, headers)) = replay.take() {
            if ctx.retry_budget.withdraw() {
                // Should no other backend take it, the client hears of this failure.
                unanswered = Some((status, reason, b));
                Metrics::count(&ctx.metrics.retries, "replayed");
                let mut again = Request::new(RequestBody {
                    inner: None,
                    bytes_in: None,
                });
                *again.method_mut() = method;
                *again.uri_mut() = uri;
                *again.headers_mut() = headers;
                req = again;
                continue;
            }
            Metrics::count(&ctx.metrics.retries, "budget_exhausted");
        }
        unanswered = Some((status, reason, b));
        break;
    }
    if let Some((status, reason, b)) = unanswered {
        states[b].metrics.response(status);
        let mut response = plain(status, &format!("{reason}\n"));
        finish(&mut response, service, https, pinned, b);
        return match log_line {
            Some(line) => line.log(started, Some(states[b].addr), response),
            None => response,
        };
    }
    ctx.metrics
        .no_backend
        .get_or_create(&ServiceLabels {
            service: service.key.to_string(),
        })
        .inc();
    let response = if service.backends.is_empty() {
        plain(StatusCode::SERVICE_UNAVAILABLE, "no backend available\n")
    } else {
        plain(StatusCode::BAD_GATEWAY, "no backend reachable\n")
    };
    match log_line {
        Some(line) => line.log(started, None, response),
        None => response,
    }
}

/// The service's response policy: HSTS over https, and a sticky cookie unless the client
/// already holds the one for the backend that answered.
fn finish(
    response: &mut Response<ProxyBody>,
    service: &Service,
    https: bool,
    pinned: Option<usize>,
    used: usize,
) {
    if https && service.http.hsts {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    if service.http.sticky && pinned != Some(used) {
        let cookie = format!(
            "{STICKY_COOKIE}={:016x}; Path=/; HttpOnly",
            sticky_id(&service.backends[used])
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// A backend's sticky id: a hash of its address, the same in every instance and every table.
fn sticky_id(backend: &Backend) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in backend.addr.to_string().bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x100000001b3);
    }
    hash
}

/// The backend a sticky cookie names, if it is still in the service.
fn sticky_backend(headers: &HeaderMap, backends: &[Backend]) -> Option<usize> {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(STICKY_COOKIE)?.strip_prefix('='))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
    backends.iter().position(|b| sticky_id(b) == id)
}

fn redirect_to_https(req: &Request<Incoming>) -> Response<ProxyBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // The https listener is on its default port: drop the plain listener's port.
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut response = plain(StatusCode::MOVED_PERMANENTLY, "moved to https\n");
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{path}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
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

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &listed {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn prepare_request(req: &mut Request<Incoming>, client: &Client, https: bool, upgrade: bool) {
    let upgrade_to = upgrade
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade_to {
        headers.insert(header::UPGRADE, protocol);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(existing) => HeaderValue::from_str(&format!("{existing}, {}", client.addr.ip())).ok(),
        None => Some(client.ip.clone()),
    };
    if let Some(value) = value {
        headers.insert(xff, value);
    }
    let proto = if https { "https" } else { "http" };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    let request_id = HeaderName::from_static("x-request-id");
    if !headers.contains_key(&request_id) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let (mut id, mut n) = ([0u8; 32], fastrand::u128(..));
        for digit in id.iter_mut().rev() {
            *digit = HEX[(n & 0xf) as usize];
            n >>= 4;
        }
        headers.insert(
            request_id,
            HeaderValue::from_bytes(&id).expect("hex is a valid header value"),
        );
    }
    *req.version_mut() = Version::HTTP_11;
    // HTTP/2 carries the host in :authority; the HTTP/1.1 backend needs a Host header.
    if !req.headers().contains_key(header::HOST)
        && let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned())
        && let Ok(host) = HeaderValue::from_str(&authority)
    {
        req.headers_mut().insert(header::HOST, host);
    }
    // Absolute-form targets become origin-form; the Host header carries the authority.
    if req.uri().scheme().is_some() {
        let origin = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = origin.parse() {
            *req.uri_mut() = uri;
        }
    }
}

pub fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Full(Full::new(Bytes::from(text.to_owned()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What the access log says of a request, taken before the request is sent on.
struct RequestLine {
    method: http::Method,
    host: String,
    path: String,
}

impl RequestLine {
    fn of(req: &Request<Incoming>) -> RequestLine {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-");
        RequestLine {
            method: req.method().clone(),
            host: host.into(),
            path: req.uri().path().into(),
        }
    }

    fn log(
        self,
        started: Option<Instant>,
        upstream: Option<SocketAddr>,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info!(
            target: "switchyard::access",
            method = %self.method,
            host = %self.host,
            path = %self.path,
            status = response.status().as_u16(),
            bytes,
            upstream = %upstream.map_or("-".to_string(), |a| a.to_string()),
            duration_ms = started.map_or(0.0, |s| s.elapsed().as_secs_f64() * 1e3),
        );
        response
    }
}

fn logged(
    started: Option<Instant>,
    req: &Request<Incoming>,
    upstream: Option<SocketAddr>,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    match started {
        Some(_) => RequestLine::of(req).log(started, upstream, response),
        None => response,
    }
}
