//! A small HTTP/1.1 client for Marathon's and the Mesos master's APIs: timeouts on every wait,
//! redirects to the leader followed, bodies read under a size bound, HTTPS verified against a CA
//! bundle, basic, bearer or DC/OS service-account authorization (`discovery::auth`).
//!
//! Credentials go only where they were configured for: a redirect from `https` to `http` is
//! refused (it would send them, and the answer, in clear text), and a redirect to a host that is
//! not one of the source's configured URLs is followed without them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::discovery::auth::{self, Credentials};

/// A base URL: `http(s)://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub authority: String,
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("expected an http:// or https:// URL".into()),
        };
        let authority = uri.authority().ok_or("missing host")?;
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:{}", authority.host(), if tls { 443 } else { 80 }),
        };
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl {
            tls,
            authority,
            prefix,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The host part of the authority (for SNI and certificate names).
    fn host(&self) -> &str {
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.authority, self.prefix)
    }
}

/// How requests are authorized.
enum Auth {
    None,
    Static(http::HeaderValue),
    /// A DC/OS service account: a session token from the login endpoint, renewed.
    Dcos {
        credentials: Box<Credentials>,
        session: tokio::sync::Mutex<Option<(http::HeaderValue, Instant)>>,
    },
}

#[derive(Clone)]
pub struct Client {
    auth: Arc<Auth>,
    /// The authorities (`host:port`, lower case) credentials are sent to: the source's
    /// configured URLs ([`Client::credentials_for`]); none until it is called.
    credential_hosts: Arc<[String]>,
    tls: Option<tokio_rustls::TlsConnector>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

const MAX_REDIRECTS: usize = 4;

/// A TLS client configuration that trusts the certificates of a PEM bundle (and nothing else):
/// verification is always on.
pub fn tls_connector(ca_pem: &[u8]) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in the CA bundle".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

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
            auth: Arc::new(authorization.map_or(Auth::None, Auth::Static)),
            credential_hosts: Arc::new([]),
            tls: None,
            connect_timeout,
            request_timeout,
        }
    }

    /// HTTPS URLs verified against this CA bundle.
    pub fn with_tls(mut self, connector: tokio_rustls::TlsConnector) -> Client {
        self.tls = Some(connector);
        self
    }

    /// Authorization by a DC/OS service account (replaces basic and token authorization).
    pub fn with_service_account(mut self, credentials: Credentials) -> Client {
        self.auth = Arc::new(Auth::Dcos {
            credentials: Box::new(credentials),
            session: tokio::sync::Mutex::new(None),
        });
        self
    }

    /// Sends credentials to these URLs' hosts (a source's configured list), and to no other
    /// host a redirect names.
    pub fn credentials_for(mut self, urls: &[BaseUrl]) -> Client {
        self.credential_hosts = urls
            .iter()
            .map(|u| u.authority.to_ascii_lowercase())
            .collect();
        self
    }

    /// Whether credentials may go to `url`, in a request that began at `start`.
    fn may_send_credentials(&self, start: &BaseUrl, url: &BaseUrl) -> bool {
        // Never to plain http once the request began on https (`follow` refuses that anyway).
        if start.tls && !url.tls {
            return false;
        }
        // Not "the URL the request started at": a source asks the leader a redirect named
        // directly, and that must not make it trusted.
        self.credential_hosts
            .iter()
            .any(|h| url.authority.eq_ignore_ascii_case(h))
    }

    /// The Authorization header for the next request: for a service account, the session
    /// token, logged in for first (or again, when it is due for renewal).
    async fn authorization(&self) -> Result<Option<http::HeaderValue>, String> {
        let (credentials, session) = match &*self.auth {
            Auth::None => return Ok(None),
            Auth::Static(value) => return Ok(Some(value.clone())),
            Auth::Dcos {
                credentials,
                session,
            } => (credentials, session),
        };
        let mut session = session.lock().await;
        if let Some((value, renew_at)) = &*session
            && Instant::now() < *renew_at
        {
            return Ok(Some(value.clone()));
        }
        let endpoint = BaseUrl::parse(&credentials.login_endpoint)
            .map_err(|e| format!("login_endpoint: {e}"))?;
        let login_base = BaseUrl {
            prefix: String::new(),
            ..endpoint.clone()
        };
        let now = SystemTime::now();
        let body = Bytes::from(credentials.login_body(now)?);
        let response = self
            .send_once(
                &login_base,
                &endpoint.prefix,
                "application/json",
                Some(body),
                None,
                false,
            )
            .await
            .map_err(|e| format!("DC/OS login: {e}"))?;
        let status = response.status();
        let answer = self.read_body(response.into_body(), 64 * 1024).await?;
        if status != StatusCode::OK {
            return Err(format!(
                "DC/OS login at {endpoint} as {}: {status}",
                credentials.uid
            ));
        }
        let token = auth::parse_login_answer(&answer)?;
        let renew_at = Instant::now() + auth::renew_after(&token, now);
        let value = http::HeaderValue::from_str(&format!("token={token}"))
            .map_err(|_| "the login answer's token is not a header value".to_string())?;
        tracing::info!(uid = %credentials.uid, "DC/OS login: new session token");
        *session = Some((value.clone(), renew_at));
        Ok(Some(value))
    }

    /// Forgets the session token (it was refused): the next request logs in again.
    async fn refused(&self) -> bool {
        match &*self.auth {
            Auth::Dcos { session, .. } => {
                *session.lock().await = None;
                true
            }
            _ => false,
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
        self.send(base, path, accept, None, false).await
    }

    /// GETs a JSON document as [`Client::get`] does, asking for it gzip-compressed
    /// (`Accept-Encoding: gzip`; Marathon and the relay compress when asked): read it with
    /// [`Client::read_decoded`].
    pub async fn get_json(
        &self,
        base: &BaseUrl,
        path: &str,
    ) -> Result<(Response<Incoming>, BaseUrl), String> {
        self.send(base, path, "application/json", None, true).await
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
        self.send(base, path, accept, Some(body), false).await
    }

    async fn send(
        &self,
        base: &BaseUrl,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
        gzip: bool,
    ) -> Result<(Response<Incoming>, BaseUrl), String> {
        let start = base;
        let mut base = base.clone();
        let mut path = path.to_string();
        let mut logged_in_again = false;
        let mut redirects = 0;
        loop {
            let trusted = self.may_send_credentials(start, &base);
            let authorization = if trusted {
                self.authorization().await?
            } else {
                None
            };
            let response = self
                .send_once(&base, &path, accept, body.clone(), authorization, gzip)
                .await?;
            let status = response.status();
            if !trusted
                && !matches!(*self.auth, Auth::None)
                && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            {
                return Err(format!(
                    "{base} answered {status}: it is not one of the configured URLs' hosts, so it \
                     was asked without credentials (list it there; reached from {start})"
                ));
            }
            if status == StatusCode::UNAUTHORIZED && trusted && !logged_in_again {
                // A session token that expired or was revoked: log in again, once.
                if self.refused().await {
                    logged_in_again = true;
                    tracing::info!(url = %base, "401: logging in again");
                    continue;
                }
            }
            if !response.status().is_redirection() {
                return Ok((response, base));
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| format!("{} redirect without a Location", response.status()))?;
            let (next_base, next_path) = follow(&base, location)?;
            if base.tls && !next_base.tls {
                return Err(format!(
                    "refused a redirect from {base} to plain-text {next_base}: it would send \
                     the request, and its credentials, in clear text"
                ));
            }
            if !self.may_send_credentials(start, &next_base) && !matches!(*self.auth, Auth::None) {
                tracing::warn!(
                    from = %base,
                    to = %next_base,
                    "redirected off the configured hosts: following without credentials"
                );
            }
            tracing::debug!(from = %base, to = %next_base, "following redirect");
            base = next_base;
            path = next_path;
        }
    }

    async fn send_once(
        &self,
        base: &BaseUrl,
        path: &str,
        accept: &str,
        body: Option<Bytes>,
        authorization: Option<http::HeaderValue>,
        gzip: bool,
    ) -> Result<Response<Incoming>, String> {
        let stream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(&base.authority))
                .await
                .map_err(|_| format!("connect to {} timed out", base.authority))?
                .map_err(|e| format!("connect to {}: {e}", base.authority))?;
        let _ = stream.set_nodelay(true);
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
        if gzip {
            request = request.header(header::ACCEPT_ENCODING, "gzip");
        }
        if let Some(auth) = authorization {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            if !base.tls {
                return exchange(stream, request).await;
            }
            let connector = self
                .tls
                .as_ref()
                .ok_or("an https URL without discovery.ca_file")?;
            let name = rustls_pki_types::ServerName::try_from(base.host().to_string())
                .map_err(|e| format!("{}: {e}", base.host()))?;
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS with {}: {e}", base.authority))?;
            exchange(tls, request).await
        };
        tokio::time::timeout(self.request_timeout, exchange)
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

impl Client {
    /// Reads a whole response body asked for with [`Client::get_json`]: as sent, or decoded
    /// from gzip as it arrives. `limit` bounds both the bytes received and the decoded body,
    /// so a body that inflates past it (a decompression bomb) fails like one sent that large.
    pub async fn read_decoded(
        &self,
        response: Response<Incoming>,
        limit: usize,
    ) -> Result<Bytes, String> {
        let encoding = response
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
        match encoding.as_deref() {
            None | Some("" | "identity") => self.read_body(response.into_body(), limit).await,
            Some("gzip" | "x-gzip") => {
                let read = async {
                    let mut body = response.into_body();
                    let mut decoder = super::gzip::Gunzip::new(limit);
                    while let Some(frame) = body.frame().await {
                        let frame = frame.map_err(|e| e.to_string())?;
                        if let Some(data) = frame.data_ref() {
                            decoder.push(data)?;
                        }
                    }
                    decoder.finish().map(Bytes::from)
                };
                tokio::time::timeout(self.request_timeout, read)
                    .await
                    .map_err(|_| "response body timed out".to_string())?
            }
            Some(other) => Err(format!("unsupported Content-Encoding {other:?}")),
        }
    }
}

/// One request on a new connection (plain or TLS).
async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Resolves a `Location` header against the URL that sent it.
fn follow(base: &BaseUrl, location: &str) -> Result<(BaseUrl, String), String> {
    // Protocol-relative (`//host:port/path`, as a Mesos master that is not the leader sends):
    // the scheme of the URL that sent it.
    if location.starts_with("//") {
        return follow(base, &format!("{}:{location}", base.scheme()));
    }
    if location.starts_with('/') {
        let path = location.strip_prefix(&base.prefix).unwrap_or(location);
        return Ok((base.clone(), path.to_string()));
    }
    let uri: http::Uri = location
        .parse()
        .map_err(|e| format!("bad Location {location:?}: {e}"))?;
    let authority = uri.authority().ok_or("Location without host")?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => return Err(format!("redirect to unsupported URL {location:?}")),
    };
    let next = BaseUrl::parse(&format!("{scheme}://{authority}{}", base.prefix))?;
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
        let tls = BaseUrl::parse("https://m:8443").unwrap();
        assert!(tls.tls);
        assert_eq!(tls.to_string(), "https://m:8443");
        assert_eq!(BaseUrl::parse("https://m").unwrap().authority, "m:443");
        assert!(BaseUrl::parse("ftp://m").is_err());
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
