//! What the HTTPS listeners decide from a connection's ClientHello before any TLS is spoken:
//! TLS passthrough by server name (`SWITCHYARD_{n}_TLS_PASSTHROUGH`), and which server
//! configuration terminates it — the listeners' own, or one that requires a client certificate
//! from a vhost's CA (`SWITCHYARD_{n}_CLIENT_CA`).
//!
//! The ClientHello is peeked, never consumed (`client_hello`), and only when the table has such
//! vhosts (`RoutingTable::sni_rules`): otherwise the handshake starts at once, as before. A
//! connection without SNI is terminated with the listeners' configuration (the default
//! certificate, then routed by Host); bad input (a first record that is no ClientHello, an
//! over-long or invalid server name, a ClientHello over the bound, too slow) closes it, logged
//! once per class and counted in `switchyard_tls_passthrough_total{kind}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::client_hello::{self, Hello};
use super::tls::{Certificates, Policy, server_config};
use super::{Context, proxy_protocol, tcp};
use crate::metrics::Metrics;
use crate::routing::resolve::{self, Entry, Target};

/// How long a client CA bundle (or a failure to read it) is used before it is read again.
const RELOAD_AFTER: Duration = Duration::from_secs(5);

type CachedAcceptor = (Instant, Result<TlsAcceptor, String>);

/// The HTTPS listeners' TLS: the default configuration, and one per client CA, made on demand.
pub struct HttpsTls {
    pub default: TlsAcceptor,
    certs: Arc<Certificates>,
    h2: bool,
    policy: Policy,
    with_client_ca: Mutex<HashMap<PathBuf, CachedAcceptor>>,
}

impl HttpsTls {
    pub fn new(certs: Arc<Certificates>, h2: bool, policy: Policy) -> Result<HttpsTls, String> {
        let default = TlsAcceptor::from(server_config(certs.clone(), h2, &policy, None)?);
        Ok(HttpsTls {
            default,
            certs,
            h2,
            policy,
            with_client_ca: Mutex::default(),
        })
    }

    /// The configuration that requires a client certificate `ca` verifies; `None` when the CA
    /// bundle cannot be used (reported once per reason; the connection is closed).
    fn for_client_ca(&self, ca: &Path, metrics: &Metrics) -> Option<TlsAcceptor> {
        {
            let cache = self.with_client_ca.lock().unwrap();
            if let Some((at, acceptor)) = cache.get(ca)
                && at.elapsed() < RELOAD_AFTER
            {
                return acceptor.as_ref().ok().cloned();
            }
        }
        let built = roots(ca).and_then(|roots| {
            let config = server_config(
                self.certs.clone(),
                self.h2,
                &self.policy,
                Some(Arc::new(roots)),
            )?;
            Ok(TlsAcceptor::from(config))
        });
        let mut cache = self.with_client_ca.lock().unwrap();
        if let Err(reason) = &built {
            Metrics::count(&metrics.tls_passthrough, "client_ca_unusable");
            let before = cache.get(ca).and_then(|(_, r)| r.as_ref().err());
            if before != Some(reason) {
                tracing::error!(ca = %ca.display(), "client CA cannot be used: {reason}; \
                    connections for its vhosts are closed");
            }
        }
        cache.insert(ca.to_path_buf(), (Instant::now(), built.clone()));
        built.ok()
    }
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        let _ = roots.add(cert.map_err(|e| e.to_string())?);
    }
    if roots.is_empty() {
        return Err("no usable CA certificate in the file".into());
    }
    Ok(roots)
}

/// How a connection on an HTTPS listener goes on.
pub enum Decision {
    /// Terminate it with this configuration; with `Some(ca)`, a client certificate that CA
    /// verified is required (and its subject forwarded).
    Terminate(TcpStream, TlsAcceptor, Option<Arc<PathBuf>>),
    /// Passed through to a backend, or closed.
    Done,
}

/// Reads the server name when the table has SNI rules, and acts on it; `peer` is the client's
/// address and `to` the address a PROXY header it sent said it connected to (for a header to
/// a passthrough backend).
pub async fn decide(
    stream: TcpStream,
    (peer, to): (SocketAddr, Option<SocketAddr>),
    https: &HttpsTls,
    ctx: &Arc<Context>,
    timeout: Duration,
) -> Decision {
    if !ctx.store.load().table.sni_rules {
        return Decision::Terminate(stream, https.default.clone(), None);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let hello = proxy_protocol::peek_until(&stream, deadline, client_hello::MAX_PEEK, |bytes| {
        match client_hello::parse(bytes) {
            Ok(Hello::Incomplete) => None,
            decided => Some(decided),
        }
    })
    .await;
    let name = match hello {
        Some(Ok(Hello::Complete(name))) => name,
        Some(Ok(Hello::Incomplete)) => unreachable!("peek_until returns decided values"),
        Some(Err(bad)) => {
            report(bad.class(), peer, &ctx.metrics);
            return Decision::Done;
        }
        None => {
            report("timeout", peer, &ctx.metrics);
            return Decision::Done;
        }
    };
    let Some(name) = name else {
        // No SNI: the listeners' own configuration and default certificate; routed by Host.
        return Decision::Terminate(stream, https.default.clone(), None);
    };
    let snapshot = ctx.store.load_full();
    let table = &snapshot.table;
    let request = resolve::Request {
        host: Some(name.as_bytes()),
        path: "/",
        app_id: None,
    };
    let service = match table.resolve(Entry::Vhost { https: true }, request) {
        Ok((Target::Service(index), _)) => Some(index),
        Ok((Target::Route(route), _)) => table.routes[route].pick(None, &table.services),
        Err(_) => None,
    };
    let Some(index) = service else {
        return Decision::Terminate(stream, https.default.clone(), None);
    };
    let connection = &table.services[index].connection;
    if connection.tls_passthrough {
        Metrics::count(&ctx.metrics.tls_passthrough, "passed");
        let flow = crate::routing::balance::Flow {
            client: peer,
            local: stream.local_addr().unwrap_or(peer),
        };
        // The ClientHello is still in the socket: the backend gets the connection whole.
        let none = proxy_protocol::Accept::default();
        tcp::serve(stream, flow, snapshot, index, ctx, (&none, peer, to)).await;
        return Decision::Done;
    }
    if let Some(ca) = &connection.client_ca {
        let ca = Arc::new(ca.clone());
        drop(snapshot);
        return match https.for_client_ca(&ca, &ctx.metrics) {
            Some(acceptor) => Decision::Terminate(stream, acceptor, Some(ca)),
            None => Decision::Done,
        };
    }
    Decision::Terminate(stream, https.default.clone(), None)
}

/// Logs a class of bad ClientHello once per process, and counts it.
fn report(class: &'static str, peer: SocketAddr, metrics: &Metrics) {
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    Metrics::count(&metrics.tls_passthrough, class);
    let mut seen = SEEN.lock().unwrap();
    if !seen.contains(&class) {
        seen.push(class);
        tracing::warn!(%peer, class, "TLS connection closed before the handshake: its \
            ClientHello could not be read (logged once per class; counted in \
            switchyard_tls_passthrough_total)");
    } else {
        tracing::debug!(%peer, class, "TLS connection closed: bad ClientHello");
    }
}

/// A certificate's subject as text (`CN=client,O=Example`: attributes in the certificate's
/// order), for the `X-Client-Cert-Subject` header. Bytes outside visible ASCII, commas and
/// backslashes are written `\xNN`. `None` when the DER cannot be walked.
pub fn subject(der: &[u8]) -> Option<String> {
    let mut cert = Der(der).element(0x30)?; // Certificate
    let mut tbs = cert.element(0x30)?; // TBSCertificate
    if tbs.0.first() == Some(&0xa0) {
        tbs.any()?; // [0] version
    }
    tbs.any()?; // serialNumber
    tbs.any()?; // signature
    tbs.any()?; // issuer
    tbs.any()?; // validity
    let mut name = tbs.element(0x30)?; // subject
    let mut parts = Vec::new();
    while !name.0.is_empty() {
        let mut rdn = name.element(0x31)?;
        while !rdn.0.is_empty() {
            let mut attribute = rdn.element(0x30)?;
            let oid = attribute.element(0x06)?;
            let (_, value) = attribute.tlv()?;
            let key = match oid.0 {
                [0x55, 0x04, 0x03] => "CN".to_string(),
                [0x55, 0x04, 0x06] => "C".into(),
                [0x55, 0x04, 0x07] => "L".into(),
                [0x55, 0x04, 0x08] => "ST".into(),
                [0x55, 0x04, 0x0a] => "O".into(),
                [0x55, 0x04, 0x0b] => "OU".into(),
                other => other
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(""),
            };
            let mut text = String::new();
            for &b in value.0 {
                if (0x20..0x7f).contains(&b) && b != b',' && b != b'\\' {
                    text.push(char::from(b));
                } else {
                    text.push_str(&format!("\\x{b:02x}"));
                }
            }
            parts.push(format!("{key}={text}"));
        }
    }
    Some(parts.join(","))
}

/// A DER reader: each call takes one element off the front, every length checked.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element's tag and contents.
    fn tlv(&mut self) -> Option<(u8, Der<'a>)> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let width = usize::from(first & 0x7f);
            if width == 0 || width > 4 || rest.len() < width {
                return None;
            }
            let len = rest[..width]
                .iter()
                .fold(0usize, |n, &b| (n << 8) | usize::from(b));
            (len, &rest[width..])
        };
        if rest.len() < len {
            return None;
        }
        let (contents, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, Der(contents)))
    }

    fn element(&mut self, tag: u8) -> Option<Der<'a>> {
        let (got, contents) = self.tlv()?;
        (got == tag).then_some(contents)
    }

    fn any(&mut self) -> Option<()> {
        self.tlv().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subject_of_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["client.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice, the tester");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject(cert.der()).as_deref(),
            Some("CN=alice\\x2c the tester,O=Example")
        );
    }

    proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn subject_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = subject(&bytes);
        }
    }
}
