//! What the general path writes into a request and a response besides the backend's own:
//! the request's forwarding fields, rewrite and target; the response's HSTS and sticky
//! cookie; the redirect to https and the plain answers the proxy gives itself.

use super::*;

/// The service's response policy: HSTS over https, and a sticky cookie unless the client
/// already holds the one for the backend that answered.
pub(super) fn finish(
    response: &mut Response<ProxyBody>,
    service: &Service,
    https: bool,
    pinned: Option<usize>,
    used: usize,
) {
    // HSTS replaces the backend's, and the rewrite reads its fields: both on the whole map.
    // The sticky cookie is only added.
    if https && service.http.hsts {
        headers::add_hsts(fields_in_map(response));
    }
    if let Some(rewrite) = &service.http.rewrite
        && let Some(root) = &rewrite.revproxy_path
    {
        fields_in_map(response);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(value) = response.headers().get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(new) = crate::proxy::rewrite::reverse_location(value, &rewrite.hosts, root)
                .and_then(|v| HeaderValue::from_str(&v).ok())
            {
                response.headers_mut().insert(name, new);
            }
        }
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
pub(super) fn sticky_backend(headers: &HeaderMap, backends: &[Backend]) -> Option<usize> {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(STICKY_COOKIE)?.strip_prefix('='))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
    backends.iter().position(|b| sticky_id(b) == id)
}

pub(super) fn redirect_to_https(
    req: &Request<ClientBody>,
    host: Option<&[u8]>,
) -> Response<ProxyBody> {
    // The host passed `message`'s authority check: ASCII letters, digits and `-._~:[]`.
    let host = host.and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("");
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

/// The forwarding fields a request gets (`headers::Forwarded`).
pub(super) fn forwarded<'a>(
    client: &'a Peer,
    subject: Option<&'a HeaderValue>,
    https: bool,
    checked: &'a Checked,
) -> headers::Forwarded<'a> {
    headers::Forwarded {
        client: headers::Client {
            ip: client.ip.as_bytes(),
            trusted: client.trusted,
            port: client.dest.port(),
            cert_subject: subject.map(HeaderValue::as_bytes),
        },
        https,
        host: checked.host.as_deref(),
    }
}

/// The request as it goes to a backend: the hop-by-hop fields removed (an upgrade's put
/// back), the framing as checked, the forwarding fields added, origin-form, HTTP/1.1. `raw`:
/// for `upstream_h1`, which writes the forwarding fields and Host itself (the client's Host
/// removed here).
pub(super) fn prepare_request(
    req: &mut Request<ClientBody>,
    (client, subject): (&Peer, Option<&HeaderValue>),
    https: bool,
    (checked, raw): (&Checked, bool),
) {
    let headers = req.headers_mut();
    headers::strip_hop_by_hop(headers);
    if let Some(protocol) = &checked.upgrade {
        headers.insert(header::UPGRADE, protocol.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Some(body) = checked.body {
        headers::set_request_length(headers, body);
    }
    if raw {
        headers.remove(header::HOST);
        *req.version_mut() = Version::HTTP_11;
        return;
    }
    forwarded(client, subject, https, checked).apply(headers);
    // The authority the request was routed by is the one the backend is told (HTTP/2 carries
    // it in :authority, an absolute-form target in the URI).
    if let Some(host) = checked
        .host
        .as_deref()
        .and_then(|h| HeaderValue::from_bytes(h).ok())
    {
        headers.insert(header::HOST, host);
    }
    *req.version_mut() = Version::HTTP_11;
    // Absolute-form targets become origin-form; the Host header carries the authority.
    if req.uri().scheme().is_some() {
        let origin = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = origin.parse() {
            *req.uri_mut() = uri;
        }
    }
}

/// `HTTP_BACKEND_PROXYPASS_PATH` on a prepared (origin-form) request: the target without the
/// prefix, and the app's host as Host (see `rewrite`).
pub(super) fn rewrite_request(req: &mut Request<ClientBody>, rewrite: &crate::routing::Rewrite) {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (target, host) = crate::proxy::rewrite::request(rewrite, target);
    if let Some(uri) = target.and_then(|t| t.parse().ok()) {
        *req.uri_mut() = uri;
    }
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        req.headers_mut().insert(header::HOST, host);
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
