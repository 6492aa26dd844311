//! A small HTTP/1.1 client for Marathon's API: timeouts on every wait, redirects to the leader
//! followed, bodies read under a size bound, basic or bearer authorization.

use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A Marathon base URL: `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub authority: String,
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err("https Marathon URLs are not supported yet; use http".into());
            }
            _ => return Err("expected an http:// URL".into()),
        }
        let authority = uri.authority().ok_or("missing host")?;
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl { authority, prefix })
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

#[derive(Clone)]
pub struct Client {
    authorization: Option<http::HeaderValue>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

const MAX_REDIRECTS: usize = 4;

impl Client {
    pub fn new(
        basic_auth: Option<&str>,
        token: Option<&str>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Client {
        let authorization = match (basic_auth, token) {
            (Some(basic), _) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(basic)
            )),
            (None, Some(token)) => Some(format!("token={}", token.trim())),
            (None, None) => None,
        }
        .map(|v| http::HeaderValue::from_str(&v).expect("authorization is a valid header"));
        Client {
            authorization,
            connect_timeout,
            request_timeout,
        }
    }

    /// GETs `path` from `base`, following redirects (a standby Marathon sends 302 to the
    /// leader). Returns the response whose status is not a redirect, and the URL that served it.
    pub async fn get(
        &self,
        base: &BaseUrl,
        path: &str,
        accept: &str,
    ) -> Result<(Response<Incoming>, BaseUrl), String> {
        self.send(base, path, accept, None).await
    }

    /// POSTs a JSON `body` to `path`, following redirects (a Mesos master that is not the
    /// leader answers 307 to it, its Location often protocol-relative: `//host:port/api/v1`).
    pub async fn post_json(
        &self,
        base: &BaseUrl,
        path: &str,
        accept: &str,
        body: Bytes,
    ) -> Result<(Response<Incoming>, BaseUrl), String> {
        self.send(base, path, accept, Some(body)).await
    }

    async fn send(
        &self,
        base: &BaseUrl,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
    ) -> Result<(Response<Incoming>, BaseUrl), String> {
        let mut base = base.clone();
        let mut path = path.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send_once(&base, &path, accept, body.clone()).await?;
            if !response.status().is_redirection() {
                return Ok((response, base));
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| format!("{} redirect without a Location", response.status()))?;
            let (next_base, next_path) = follow(&base, location)?;
            tracing::debug!(from = %base, to = %next_base, "following redirect");
            base = next_base;
            path = next_path;
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    async fn send_once(
        &self,
        base: &BaseUrl,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, String> {
        let stream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(&base.authority))
                .await
                .map_err(|_| format!("connect to {} timed out", base.authority))?
                .map_err(|e| format!("connect to {}: {e}", base.authority))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let method = if body.is_some() {
            http::Method::POST
        } else {
            http::Method::GET
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{}", base.prefix, path))
            .header(header::HOST, &base.authority)
            .header(header::ACCEPT, accept)
            .header(
                header::USER_AGENT,
                concat!("switchyard/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &self.authorization {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(self.request_timeout, sender.send_request(request))
            .await
            .map_err(|_| {
                format!(
                    "{base}{path}: no response within {:?}",
                    self.request_timeout
                )
            })?
            .map_err(|e| format!("{base}{path}: {e}"))
    }

    /// Reads a whole body, failing past `limit` bytes or the request timeout.
    pub async fn read_body(&self, body: Incoming, limit: usize) -> Result<Bytes, String> {
        let read = async {
            let mut body = body;
            let mut buf = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                if let Some(data) = frame.data_ref() {
                    if buf.len() + data.len() > limit {
                        return Err(format!("response larger than {limit} bytes"));
                    }
                    buf.extend_from_slice(data);
                }
            }
            Ok(buf.freeze())
        };
        tokio::time::timeout(self.request_timeout, read)
            .await
            .map_err(|_| "response body timed out".to_string())?
    }
}

/// Resolves a `Location` header against the URL that sent it.
fn follow(base: &BaseUrl, location: &str) -> Result<(BaseUrl, String), String> {
    // Protocol-relative (`//host:port/path`, as a Mesos master that is not the leader sends):
    // the scheme of the URL that sent it.
    if location.starts_with("//") {
        return follow(base, &format!("http:{location}"));
    }
    if location.starts_with('/') {
        let path = location.strip_prefix(&base.prefix).unwrap_or(location);
        return Ok((base.clone(), path.to_string()));
    }
    let uri: http::Uri = location
        .parse()
        .map_err(|e| format!("bad Location {location:?}: {e}"))?;
    let authority = uri.authority().ok_or("Location without host")?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("redirect to unsupported URL {location:?}"));
    }
    let next = BaseUrl::parse(&format!("http://{authority}{}", base.prefix))?;
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = path_and_query
        .strip_prefix(&base.prefix)
        .unwrap_or(path_and_query);
    Ok((next, path.to_string()))
}

/// Whether a status means "try the next Marathon" rather than "this request is wrong".
pub fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("http://marathon.mesos:8080/marathon/").unwrap();
        assert_eq!(b.authority, "marathon.mesos:8080");
        assert_eq!(b.prefix, "/marathon");
        assert_eq!(BaseUrl::parse("http://m").unwrap().authority, "m:80");
        assert!(BaseUrl::parse("https://m:8443").is_err());
        assert!(BaseUrl::parse("m:8080").is_err());
    }

    #[test]
    fn redirects_resolve() {
        let b = BaseUrl::parse("http://m1:8080").unwrap();
        let (nb, p) = follow(&b, "http://m2:8080/v2/events?event_type=a").unwrap();
        assert_eq!(nb.authority, "m2:8080");
        assert_eq!(p, "/v2/events?event_type=a");
        let (nb, p) = follow(&b, "//m3:5050/api/v1").unwrap();
        assert_eq!((nb.authority.as_str(), p.as_str()), ("m3:5050", "/api/v1"));
        let (nb, p) = follow(&b, "/v2/apps").unwrap();
        assert_eq!(nb, b);
        assert_eq!(p, "/v2/apps");
    }
}
