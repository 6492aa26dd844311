//! How the general HTTP path reaches a backend when the port asks for more than a TCP
//! connection: a PROXY protocol header first (`SWITCHYARD_{n}_PROXY_PROTOCOL`), and TLS
//! (`SWITCHYARD_{n}_BACKEND_TLS`), verified against the port's CA bundle, always.
//!
//! A connection that carries a PROXY header speaks for one client, so it is never pooled nor
//! shared: each request opens its own (HTTP/1.1 and HTTP/2 alike). TLS connections without a
//! header are pooled as plain ones are.
//!
//! The CA bundle and client certificate files are read here, not by `compile` (which reads no
//! file), and cached per settings for `RELOAD_AFTER`; a file that cannot be used fails the
//! connections (502), logs once per file and reason, and counts in
//! `switchyard_upstream_tls_failures_total{kind="config"}` — never a connection in the clear or
//! unverified.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{Context, NotConnected, connect};
use crate::backends::BackendState;
use crate::metrics::Metrics;
use crate::routing::edge_labels::BackendTls;

/// How long a loaded CA bundle (or a failure to load one) is used before the files are read
/// again.
const RELOAD_AFTER: Duration = Duration::from_secs(5);

/// What to do on a new backend connection beyond connecting.
#[derive(Clone, Default)]
pub struct Dial {
    /// The PROXY header to send first: the connection belongs to that client alone.
    pub proxy_header: Option<Arc<[u8]>>,
    pub tls: Option<Arc<BackendTls>>,
}

impl Dial {
    /// Whether connections may be pooled or shared between clients.
    pub fn poolable(&self) -> bool {
        self.proxy_header.is_none()
    }

    pub fn is_plain(&self) -> bool {
        self.proxy_header.is_none() && self.tls.is_none()
    }
}

/// A backend connection, in the clear or over TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to `state`'s backend as `dial` says; `h2` offers HTTP/2 by ALPN (else HTTP/1.1).
/// `timeout` (the app's connect timeout, or the global one) bounds the connect and the TLS
/// handshake each. Failures are counted on the backend (`connect_failures`) and logged at
/// debug; TLS ones also in `upstream_tls_failures`.
pub async fn dial(
    state: &BackendState,
    (ctx, timeout): (&Context, Duration),
    dial: &Dial,
    h2: bool,
) -> Result<Stream, NotConnected> {
    let started = Instant::now();
    let mut stream = connect(state.addr, timeout)
        .await
        .map_err(|e| super::connect_failure(&ctx.metrics, state, &e))?;
    state.observe_connect(started.elapsed());
    if let Some(header) = &dial.proxy_header
        && stream.write_all(header).await.is_err()
    {
        state.metrics.count().connect_failures.inc();
        return Err(NotConnected::Backend);
    }
    let Some(tls) = &dial.tls else {
        return Ok(Stream::Plain(stream));
    };
    let config = client_config(tls, h2, &ctx.metrics).ok_or_else(|| {
        state.metrics.count().connect_failures.inc();
        NotConnected::Backend
    })?;
    let name = match &tls.server_name {
        Some(name) => ServerName::try_from(name.clone()).map_err(|_| NotConnected::Backend)?,
        None => ServerName::IpAddress(state.addr.ip().into()),
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let handshake = tokio::time::timeout(timeout, connector.connect(name, stream)).await;
    match handshake {
        Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            let verify = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                });
            let kind = if verify { "verify" } else { "handshake" };
            Metrics::count(&ctx.metrics.upstream_tls_failures, kind);
            state.metrics.count().connect_failures.inc();
            report(state.addr, kind, &e.to_string());
            Err(NotConnected::Backend)
        }
        Err(_) => {
            Metrics::count(&ctx.metrics.upstream_tls_failures, "handshake");
            state.metrics.count().connect_failures.inc();
            report(state.addr, "handshake", "timed out");
            Err(NotConnected::Backend)
        }
    }
}

/// A failed TLS handshake with a backend: a warning the first time per backend and reason.
fn report(backend: SocketAddr, kind: &str, reason: &str) {
    static SEEN: Mutex<Option<HashMap<(SocketAddr, String), ()>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap();
    let seen = seen.get_or_insert_with(HashMap::new);
    if seen.len() < 10_000 && seen.insert((backend, reason.to_string()), ()).is_none() {
        tracing::warn!(%backend, kind, "TLS to backend failed: {reason}");
    } else {
        tracing::debug!(%backend, kind, "TLS to backend failed: {reason}");
    }
}

type Cached = (Instant, Result<Arc<ClientConfig>, String>);

/// The client configuration for `tls` (and ALPN `h2` or not), from the cache while fresh.
fn client_config(tls: &Arc<BackendTls>, h2: bool, metrics: &Metrics) -> Option<Arc<ClientConfig>> {
    static CACHE: Mutex<Option<HashMap<(BackendTls, bool), Cached>>> = Mutex::new(None);
    let key = ((**tls).clone(), h2);
    {
        let mut cache = CACHE.lock().unwrap();
        let cache = cache.get_or_insert_with(HashMap::new);
        if let Some((at, result)) = cache.get(&key)
            && at.elapsed() < RELOAD_AFTER
        {
            return result.as_ref().ok().cloned();
        }
    }
    // Read outside the lock (small files; a reload every few seconds at most per setting).
    let result = build(tls, h2);
    let mut cache = CACHE.lock().unwrap();
    let cache = cache.get_or_insert_with(HashMap::new);
    let previous = cache.get(&key).map(|(_, r)| r.clone());
    if let Err(reason) = &result {
        Metrics::count(&metrics.upstream_tls_failures, "config");
        if previous.as_ref().and_then(|p| p.as_ref().err()) != Some(reason) {
            tracing::error!(ca = %tls.ca.display(), "TLS to backends cannot be set up: {reason}; \
                requests to these backends fail (502)");
        }
    }
    cache.insert(key, (Instant::now(), result.clone()));
    result.ok()
}

fn build(tls: &BackendTls, h2: bool) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&tls.ca)
        .map_err(|e| format!("CA bundle {}: {e}", tls.ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("CA bundle {}: {e}", tls.ca.display()))?;
        // A bundle may hold certificates the verifier cannot use: skipped, as others do.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!(
            "CA bundle {}: no usable certificate",
            tls.ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("client key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
    };
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config.enable_sni = tls.server_name.is_some();
    Ok(Arc::new(config))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
