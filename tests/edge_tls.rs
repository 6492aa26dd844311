//! The connection- and TLS-level edge rules end to end, with real clients on loopback: the PROXY
//! protocol in (HTTP and TCP service ports, the vhost listener) and out (TCP and HTTP mode),
//! an ACL decided on the PROXY-provided address, X-Forwarded-For from trusted and untrusted
//! clients, TLS passthrough by SNI, TLS to backends (verification passing and failing), mutual
//! TLS on a vhost. Clients from another address than 127.0.0.1 bind 127.0.0.2 (all of
//! 127.0.0.0/8 is loopback).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::marathon::{app, task};
use support::*;
use switchyard::proxy::proxy_protocol::{self, Parsed, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends `prefix` then a GET (`Connection: close`) with `extra` header lines, from `from`;
/// returns what came back (empty: closed without an answer).
async fn get_with(from: IpAddr, to: SocketAddr, prefix: &[u8], host: &str, extra: &str) -> String {
    let mut stream = connect_from(from, to).await;
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(
        format!("GET /echo-headers HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    let _ = stream.write_all(&bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

fn v1(source: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    proxy_protocol::encode(Version::V1, source, "10.0.0.1:80".parse().unwrap())
}

fn v2(source: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    proxy_protocol::encode(Version::V2, source, "10.0.0.1:80".parse().unwrap())
}

/// A backend that expects a PROXY header on every connection and records the source and the
/// destination it names; after the header it answers HTTP requests (`http`) with that source
/// as the body, or echoes bytes (TCP).
struct ProxyBackend {
    addr: SocketAddr,
    /// Per connection: the header's source (or why it had none).
    seen: Arc<Mutex<Vec<String>>>,
    /// Per connection with addresses in its header: the header's destination.
    dests: Arc<Mutex<Vec<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ProxyBackend {
    async fn start(http: bool) -> ProxyBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let dests = Arc::new(Mutex::new(Vec::new()));
        let (record, record_dest) = (seen.clone(), dests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (record, record_dest) = (record.clone(), record_dest.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let header = loop {
                        let mut chunk = [0u8; 512];
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            record.lock().unwrap().push("closed before a header".into());
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        match proxy_protocol::parse(&buf) {
                            Ok(Parsed::Incomplete) => continue,
                            Ok(Parsed::Complete(h)) => break h,
                            Err(e) => {
                                record.lock().unwrap().push(format!("bad header: {e:?}"));
                                return;
                            }
                        }
                    };
                    let source = header
                        .addresses
                        .map_or("none".to_string(), |(s, _)| s.to_string());
                    if let Some((_, dest)) = header.addresses {
                        record_dest.lock().unwrap().push(dest);
                    }
                    record.lock().unwrap().push(source.clone());
                    let rest = buf.split_off(header.len);
                    if http {
                        let service = hyper::service::service_fn(
                            move |_req: hyper::Request<hyper::body::Incoming>| {
                                let body = source.clone();
                                async move {
                                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                        http_body_util::Full::new(bytes::Bytes::from(body)),
                                    ))
                                }
                            },
                        );
                        let io = Rewound(rest, stream);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                            .await;
                    } else {
                        let _ = stream.write_all(&rest).await;
                        let (mut r, mut w) = stream.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                });
            }
        });
        ProxyBackend {
            addr,
            seen,
            dests,
            task,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn dests(&self) -> Vec<SocketAddr> {
        self.dests.lock().unwrap().clone()
    }
}

impl Drop for ProxyBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stream with bytes already read put back in front.
struct Rewound(Vec<u8>, TcpStream);

impl tokio::io::AsyncRead for Rewound {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.0.is_empty() {
            let n = self.0.len().min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0.drain(..n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.1).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Rewound {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.1).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.1).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.1).poll_shutdown(cx)
    }
}

struct Edge {
    sy: Switchyard,
    http: SocketAddr,
}

async fn start(name: &str, apps: Vec<Value>, toml: &str) -> Edge {
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    write_apps(&file, apps);
    let http = local(free_port());
    let sy = Switchyard::start(
        name,
        &format!(
            "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n{toml}\n",
            file.display().to_string(),
        )
        .replace("HTTP_LISTEN", &http.to_string()),
    );
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    Edge { sy, http }
}

fn xff(reply: &str) -> Option<String> {
    let start = reply.find("\"x-forwarded-for\": \"")? + 20;
    Some(reply[start..].split('"').next()?.to_string())
}

#[tokio::test]
async fn proxy_protocol_in_sets_the_client_address_everywhere() {
    let backend = Backend::start("web").await;
    let (echo, _echo) = echo_backend().await;
    let (acl_port, open_port, tcp_port) = (free_port(), free_port(), free_port());
    let apps = vec![
        app(
            "/acl",
            acl_port,
            json!({"HAPROXY_0_MODE": "http",
                   "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "203.0.113.0/24"}),
            vec![task("/acl", "acl.1", backend.port())],
        ),
        app(
            "/open",
            open_port,
            json!({"HAPROXY_0_MODE": "http", "HAPROXY_0_VHOST": "open.example.com"}),
            vec![task("/open", "open.1", backend.port())],
        ),
        app(
            "/tcp",
            tcp_port,
            json!({"HAPROXY_0_MODE": "tcp"}),
            vec![task("/tcp", "tcp.1", echo.port())],
        ),
    ];
    let e = start(
        "pp-in",
        apps,
        "proxy_protocol_from = [\"127.0.0.1\"]\nproxy_protocol_timeout = \"2s\"\n\
         [http]\nlisten = [\"HTTP_LISTEN\"]\nproxy_protocol_from = [\"127.0.0.1\"]",
    )
    .await;
    e.sy.wait_routes("three ports", |r| {
        has_service(r, acl_port) && has_service(r, open_port) && has_service(r, tcp_port)
    })
    .await;

    // The ACL is decided on the PROXY header's address, v1 and v2 alike.
    let inside = get_with(lo(1), local(acl_port), &v1("203.0.113.7:5000"), "a", "").await;
    assert!(inside.starts_with("HTTP/1.1 200"), "{inside}");
    assert_eq!(xff(&inside).as_deref(), Some("203.0.113.7"), "{inside}");
    let inside = get_with(lo(1), local(acl_port), &v2("203.0.113.8:5000"), "a", "").await;
    assert_eq!(xff(&inside).as_deref(), Some("203.0.113.8"), "{inside}");
    // X-Forwarded-Port is the port the header says the client connected to (HAProxy's
    // `dst_port` behind `accept-proxy`), not the listener's.
    assert!(inside.contains("\"x-forwarded-port\": \"80\""), "{inside}");
    let outside = get_with(lo(1), local(acl_port), &v2("198.51.100.1:5000"), "a", "").await;
    assert!(outside.starts_with("HTTP/1.1 403"), "{outside}");

    // The fast path (a plain vhost and service port) takes the header's address as well.
    for to in [local(open_port), e.http] {
        let reply = get_with(lo(1), to, &v1("192.0.2.44:1"), "open.example.com", "").await;
        assert_eq!(xff(&reply).as_deref(), Some("192.0.2.44"), "{to}: {reply}");
        let reply = get_with(lo(1), to, &v2("[2001:db8::5]:1"), "open.example.com", "").await;
        assert_eq!(xff(&reply).as_deref(), Some("2001:db8::5"), "{to}: {reply}");
        assert!(
            reply.contains("\"x-forwarded-port\": \"80\""),
            "{to}: {reply}"
        );
    }

    // TCP mode: the header is consumed, the bytes after it pass.
    let mut stream = connect_from(lo(1), local(tcp_port)).await;
    let mut bytes = v2("192.0.2.9:7");
    bytes.extend_from_slice(b"hello");
    stream.write_all(&bytes).await.unwrap();
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
    drop(stream);

    // An allowed source must send a header; a malformed one closes the connection, counted.
    let missing = get_with(lo(1), local(open_port), b"", "open.example.com", "").await;
    assert_eq!(missing, "", "no header from an allowed source: closed");
    let bad = get_with(lo(1), e.http, b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n", "x", "").await;
    assert_eq!(bad, "");
    let mut tcp = connect_from(lo(1), local(tcp_port)).await;
    tcp.write_all(b"PROXY TCP9 nonsense\r\nhello")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink).await;
    assert!(sink.is_empty(), "{sink:?}");
    assert!(
        e.sy.metric(
            "switchyard_proxy_protocol_errors_total",
            &["kind=\"missing\""]
        )
        .await
            >= 1.0
    );
    assert!(
        e.sy.metric(
            "switchyard_proxy_protocol_errors_total",
            &["kind=\"v1_address\""]
        )
        .await
            >= 1.0
    );
    assert!(
        e.sy.metric(
            "switchyard_proxy_protocol_errors_total",
            &["kind=\"v1_syntax\""]
        )
        .await
            >= 1.0
    );
    assert_eq!(
        e.sy.log_lines("PROXY protocol header refused")
            .iter()
            .filter(|l| l.contains("v1_syntax") && l.contains("WARN"))
            .count(),
        1,
        "logged once per class"
    );

    // Anyone else: served on its own address, and refused when it sends a header.
    let plain = get_with(lo(2), local(open_port), b"", "open.example.com", "").await;
    assert_eq!(xff(&plain).as_deref(), Some("127.0.0.2"), "{plain}");
    let forged = get_with(lo(2), e.http, &v1("203.0.113.7:1"), "open.example.com", "").await;
    assert_eq!(forged, "", "a header from a source not allowed: refused");
    let forged = get_with(lo(2), local(acl_port), &v2("203.0.113.7:1"), "a", "").await;
    assert_eq!(forged, "");
    let mut tcp = connect_from(lo(2), local(tcp_port)).await;
    tcp.write_all(&v1("203.0.113.7:1")).await.unwrap();
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink).await;
    assert!(sink.is_empty(), "tcp: refused, {sink:?}");
    assert!(
        e.sy.metric(
            "switchyard_proxy_protocol_errors_total",
            &["kind=\"untrusted_source\""]
        )
        .await
            >= 3.0
    );
}

#[tokio::test]
async fn proxy_protocol_out_in_tcp_and_http_mode() {
    let tcp_backend = ProxyBackend::start(false).await;
    let http_backend = ProxyBackend::start(true).await;
    let vhost_backend = ProxyBackend::start(true).await;
    let (tcp_port, http_port) = (free_port(), free_port());
    let apps = vec![
        app(
            "/tcp",
            tcp_port,
            json!({"HAPROXY_0_MODE": "tcp", "SWITCHYARD_0_PROXY_PROTOCOL": "v2"}),
            vec![task("/tcp", "tcp.1", tcp_backend.addr.port())],
        ),
        app(
            "/web",
            http_port,
            json!({"HAPROXY_0_MODE": "http", "SWITCHYARD_0_PROXY_PROTOCOL": "v1"}),
            vec![task("/web", "web.1", http_backend.addr.port())],
        ),
        app(
            "/bad",
            free_port(),
            json!({"HAPROXY_0_MODE": "http", "SWITCHYARD_0_PROXY_PROTOCOL": "v3"}),
            vec![task("/bad", "bad.1", http_backend.addr.port())],
        ),
        app(
            "/vhost",
            free_port(),
            json!({"HAPROXY_0_VHOST": "pp.example.com", "SWITCHYARD_0_PROXY_PROTOCOL": "v1"}),
            vec![task("/vhost", "vhost.1", vhost_backend.addr.port())],
        ),
    ];
    let e = start(
        "pp-out",
        apps,
        "proxy_protocol_from = [\"127.0.0.1\"]\n[http]\nlisten = [\"HTTP_LISTEN\"]\naccess_log = true",
    )
    .await;
    let routes =
        e.sy.wait_routes("ports", |r| {
            has_service(r, tcp_port) && has_service(r, http_port)
        })
        .await;
    let problems = routes["problems"].to_string();
    assert!(
        problems.contains("SWITCHYARD_0_PROXY_PROTOCOL=\\\"v3\\\""),
        "{problems}"
    );

    // TCP: in as v1 from an allowed balancer, out as v2 with the client's address.
    let mut stream = connect_from(lo(1), local(tcp_port)).await;
    let mut bytes = v1("198.51.100.20:4242");
    bytes.extend_from_slice(b"ping");
    stream.write_all(&bytes).await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(tcp_backend.seen(), ["198.51.100.20:4242"]);
    // The address the client connected to, as the balancer's header named it (HAProxy's
    // `send-proxy` behind `accept-proxy`), not the port's own.
    let balancers: SocketAddr = "10.0.0.1:80".parse().unwrap();
    assert_eq!(tcp_backend.dests(), [balancers]);
    // From anyone else (not a balancer): its own address, and the port it connected to.
    let mut stream = connect_from(lo(2), local(tcp_port)).await;
    stream.write_all(b"pong").await.unwrap();
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(tcp_backend.seen()[1].split(':').next(), Some("127.0.0.2"));
    assert_eq!(tcp_backend.dests()[1], local(tcp_port));

    // HTTP: every request's backend connection carries its own client's header (not pooled):
    // two requests on one client connection, two backend connections.
    let mut client = connect_from(lo(1), local(http_port)).await;
    let mut bytes = v2("192.0.2.77:1000");
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    client.write_all(&bytes).await.unwrap();
    let first = read_response(&mut client).await;
    assert!(first.ends_with("192.0.2.77:1000"), "{first}");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(String::from_utf8_lossy(&rest).ends_with("192.0.2.77:1000"));
    let other = get_with(lo(2), local(http_port), b"", "x", "").await;
    assert!(other.contains("127.0.0.2:"), "{other}");
    let seen = http_backend.seen();
    assert_eq!(
        seen.len(),
        3,
        "one backend connection per request: {seen:?}"
    );
    assert_eq!(&seen[..2], ["192.0.2.77:1000", "192.0.2.77:1000"]);
    assert_eq!(
        http_backend.dests(),
        [balancers, balancers, local(http_port)]
    );
    // The shared vhost listener: the address it is bound to (it used to be 0.0.0.0:0).
    let reply = get_with(lo(2), e.http, b"", "pp.example.com", "").await;
    assert!(reply.contains("127.0.0.2:"), "{reply}");
    assert_eq!(vhost_backend.dests(), [e.http]);
    // The access log names the client by the PROXY header's address (its line is written
    // after the response, and read from the process's output after that: waited for).
    wait_for("the access log line naming the PROXY address", || async {
        e.sy.log_lines("switchyard::access")
            .iter()
            .any(|l| l.contains("client=192.0.2.77:1000"))
            .then_some(())
    })
    .await;
}

/// One response with a Content-Length body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8_lossy(&body)
}

#[tokio::test]
async fn forwarded_headers_are_kept_only_from_trusted_proxies() {
    let backend = Backend::start("web").await;
    let sticky_port = free_port();
    let apps = vec![
        app(
            "/web",
            0,
            json!({"HAPROXY_0_VHOST": "web.example.com"}),
            vec![task("/web", "web.1", backend.port())],
        ),
        // Sticky: served by the general path (hyper).
        app(
            "/sticky",
            sticky_port,
            json!({"HAPROXY_0_MODE": "http", "HAPROXY_0_STICKY": "true"}),
            vec![task("/sticky", "sticky.1", backend.port())],
        ),
    ];
    let e = start(
        "xff",
        apps,
        "[http]\nlisten = [\"HTTP_LISTEN\"]\ntrusted_proxies = [\"127.0.0.1/32\"]",
    )
    .await;
    let routes =
        e.sy.wait_routes("ports", |r| has_service(r, sticky_port))
            .await;
    assert!(
        routes["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.get("edge").is_none()),
        "no edge labels, no `edge`: {routes:#}"
    );
    // Address claims a backend might believe; the admin dashboard's session cookie, which a
    // browser sends to every port of the dashboard's host name, between two of the app's own.
    let extra = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
                 X-Client-Cert-Subject: CN=forged\r\nX-Real-IP: 203.0.113.7\r\n\
                 Forwarded: for=203.0.113.8\r\nX-Forwarded-Port: 4443\r\n\
                 Cookie: a=1; switchyard_session=0123abcd; b=2\r\n";
    for to in [e.http, local(sticky_port)] {
        let trusted = get_with(lo(1), to, b"", "web.example.com", extra).await;
        assert_eq!(
            xff(&trusted).as_deref(),
            Some("203.0.113.9, 127.0.0.1"),
            "{to}: {trusted}"
        );
        assert!(
            trusted.contains("\"x-forwarded-proto\": \"https\""),
            "{trusted}"
        );
        let untrusted = get_with(lo(2), to, b"", "web.example.com", extra).await;
        assert_eq!(
            xff(&untrusted).as_deref(),
            Some("127.0.0.2"),
            "{to}: {untrusted}"
        );
        assert!(
            untrusted.contains("\"x-forwarded-proto\": \"http\""),
            "{untrusted}"
        );
        // The port: a trusted proxy's kept, anyone else's replaced by the one connected to
        // (marathon-lb's `X-Forwarded-Port %[dst_port]`).
        let port = format!("\"x-forwarded-port\": \"{}\"", to.port());
        assert!(untrusted.contains(&port), "{to}: {untrusted}");
        assert!(!trusted.contains(&port), "{to}: {trusted}");
        for claim in [
            "\"x-real-ip\": \"203.0.113.7\"",
            "\"forwarded\": \"for=203.0.113.8\"",
            "\"x-forwarded-port\": \"4443\"",
        ] {
            assert!(trusted.contains(claim), "{to}: {claim} kept: {trusted}");
            assert!(
                !untrusted.contains(claim),
                "{to}: {claim} dropped: {untrusted}"
            );
        }
        for reply in [&trusted, &untrusted] {
            assert!(!reply.contains("forged"), "{reply}");
            assert!(!reply.contains("0123abcd"), "{to}: session cookie: {reply}");
            assert!(reply.contains("\"cookie\": \"a=1; b=2\""), "{to}: {reply}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TLS: passthrough by SNI, TLS to backends, client certificates, protocol settings.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;

/// A CA made at test time.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn write(&self, path: &std::path::Path) -> String {
        std::fs::write(path, self.pem()).unwrap();
        path.display().to_string()
    }

    /// A certificate for `names` (DNS names or IPs) with common name `cn`: (chain PEM, key PEM).
    fn leaf(&self, names: &[&str], cn: &str) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS backend (HTTP/1.1 and HTTP/2 by ALPN) with its own certificate, answering
/// `{name} {version} sni={sni}` — and requiring a client certificate `client_ca` verifies.
struct TlsBackend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    async fn start(name: &str, (cert, key_pem): (String, String), client_ca: Option<&Ca>) -> Self {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider(),
                )
                .build()
                .unwrap(),
            ),
        };
        let mut config = builder
            .with_single_cert(chain(&cert), key(&key_pem))
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let name: Arc<str> = name.into();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, name) = (acceptor.clone(), name.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let body = format!("{name} {:?} sni={sni}", req.version());
                            async move {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        TlsBackend { addr, task }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS client config trusting `roots`, with an optional client certificate.
fn client_config(
    roots: rustls::RootCertStore,
    cert: Option<&(String, String)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match cert {
        Some((c, k)) => builder.with_client_auth_cert(chain(c), key(k)).unwrap(),
        None => builder.with_no_client_auth(),
    })
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A GET over TLS with `sni` and Host `host`: the response as text, or the error.
async fn tls_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: ServerName<'static>,
    host: &str,
    extra: &str,
) -> Result<String, String> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let mut tls = connector
            .connect(sni, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let req = format!(
            "GET /echo-headers HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
        );
        tls.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        // A backend that closes without close_notify (hyper after `Connection: close`) ends
        // the read with an error after the answer: the answer counts.
        if let Err(e) = tls.read_to_end(&mut out).await
            && out.is_empty()
        {
            return Err(format!("read: {e}"));
        }
        if out.is_empty() {
            return Err("closed without an answer".to_string());
        }
        Ok(String::from_utf8_lossy(&out).to_string())
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

/// Switchyard with an HTTPS listener (default certificate from `switchyard_ca`) and an HTTP
/// one, on `apps`.
async fn start_https(
    name: &str,
    apps: Vec<Value>,
    switchyard_ca: &Ca,
    https_toml: &str,
) -> (Edge, SocketAddr) {
    let dir = temp_dir(name);
    let (cert, key_pem) = switchyard_ca.leaf(
        &["web.example.com", "secure.example.com", "127.0.0.1"],
        "switchyard",
    );
    let default = dir.join("default.pem");
    std::fs::write(&default, cert + &key_pem).unwrap();
    let https = local(free_port());
    let e = start(
        name,
        apps,
        &format!(
            "[http]\nlisten = [\"HTTP_LISTEN\"]\n[https]\nlisten = [\"{https}\"]\n\
             default_cert = {:?}\n{https_toml}",
            default.display().to_string()
        ),
    )
    .await;
    (e, https)
}

#[tokio::test]
async fn tls_passthrough_by_sni_with_two_names_on_one_port() {
    let (backend_ca, own_ca) = (Ca::new("backends"), Ca::new("switchyard"));
    let a = TlsBackend::start("A", backend_ca.leaf(&["a.pass.example"], "a"), None).await;
    let b = TlsBackend::start("B", backend_ca.leaf(&["b.pass.example"], "b"), None).await;
    let plain = Backend::start("terminated").await;
    let apps = vec![
        app(
            "/pa",
            0,
            json!({"HAPROXY_0_VHOST": "a.pass.example", "SWITCHYARD_0_TLS_PASSTHROUGH": "true"}),
            vec![task("/pa", "pa.1", a.addr.port())],
        ),
        app(
            "/pb",
            0,
            json!({"HAPROXY_0_VHOST": "b.pass.example", "SWITCHYARD_0_TLS_PASSTHROUGH": "true"}),
            vec![task("/pb", "pb.1", b.addr.port())],
        ),
        app(
            "/web",
            0,
            json!({"HAPROXY_0_VHOST": "web.example.com"}),
            vec![task("/web", "web.1", plain.port())],
        ),
        app(
            "/nohost",
            0,
            json!({"SWITCHYARD_0_TLS_PASSTHROUGH": "true"}),
            vec![task("/nohost", "nohost.1", plain.port())],
        ),
    ];
    let (e, https) = start_https("passthrough", apps, &own_ca, "").await;
    let routes =
        e.sy.wait_routes("vhosts", |r| r["services"].as_array().unwrap().len() >= 3)
            .await;
    assert!(
        routes["problems"]
            .to_string()
            .contains("TLS_PASSTHROUGH needs HAPROXY_0_VHOST"),
        "{routes:#}"
    );
    // Each name reaches its own backend, which terminates with its own certificate: the
    // client verifies it against the backends' CA.
    let to_backends = client_config(backend_ca.roots(), None, BOTH);
    for (name, expect) in [("a.pass.example", "A"), ("b.pass.example", "B")] {
        let reply = tls_get(https, to_backends.clone(), dns(name), name, "")
            .await
            .unwrap();
        assert!(
            reply.contains(&format!("{expect} HTTP/1.1 sni={name}")),
            "{reply}"
        );
    }
    // Another name is terminated by switchyard and routed by Host.
    let to_switchyard = client_config(own_ca.roots(), None, BOTH);
    let reply = tls_get(
        https,
        to_switchyard.clone(),
        dns("web.example.com"),
        "web.example.com",
        "",
    )
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // No SNI (an IP address): terminated with the default certificate.
    let ip = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let reply = tls_get(https, to_switchyard, ip, "web.example.com", "")
        .await
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // A ClientHello cut into small records, each written on its own (several TCP segments).
    let config = to_backends.clone();
    let reply = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut conn = rustls::ClientConnection::new(config, dns("b.pass.example")).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        let mut tcp = std::net::TcpStream::connect(https).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(DEADLINE)).unwrap();
        for chunk in hello[5..].chunks(60) {
            let mut record = vec![22, 3, 1];
            record.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            record.extend_from_slice(chunk);
            tcp.write_all(&record).unwrap();
            tcp.flush().unwrap();
        }
        let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: b.pass.example\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    })
    .await
    .unwrap();
    assert!(reply.contains("B HTTP/1.1 sni=b.pass.example"), "{reply}");
    assert!(
        e.sy.metric("switchyard_tls_passthrough_total", &["kind=\"passed\""])
            .await
            >= 3.0
    );

    // Bad input: not a ClientHello, an over-long server name. Closed, counted; the listener
    // serves on.
    let mut raw = TcpStream::connect(https).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: a.pass.example\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, raw.read_to_end(&mut sink)).await;
    assert!(sink.is_empty(), "{sink:?}");
    let mut raw = TcpStream::connect(https).await.unwrap();
    raw.write_all(&hello_with_sni(&"a".repeat(300)))
        .await
        .unwrap();
    let _ = tokio::time::timeout(DEADLINE, raw.read_to_end(&mut sink)).await;
    assert!(sink.is_empty(), "{sink:?}");
    for kind in ["not_client_hello", "sni_too_long"] {
        assert_eq!(
            e.sy.metric(
                "switchyard_tls_passthrough_total",
                &[&format!("kind=\"{kind}\"")]
            )
            .await,
            1.0,
            "{kind}"
        );
    }
    let reply = tls_get(
        https,
        to_backends,
        dns("a.pass.example"),
        "a.pass.example",
        "",
    )
    .await
    .unwrap();
    assert!(reply.contains("A HTTP/1.1"), "{reply}");
}

/// A minimal ClientHello record naming `name`.
fn hello_with_sni(name: &str) -> Vec<u8> {
    let n = name.len() as u16;
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(n + 5).to_be_bytes());
    ext.extend_from_slice(&(n + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&n.to_be_bytes());
    ext.extend_from_slice(name.as_bytes());
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut message = vec![1, 0];
    message.extend_from_slice(&(body.len() as u16).to_be_bytes());
    message.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(message.len() as u16).to_be_bytes());
    record.extend_from_slice(&message);
    record
}

#[tokio::test]
async fn tls_to_backends_verifies_and_fails_closed() {
    let dir = temp_dir("backend-tls-files");
    let (backend_ca, other_ca, client_ca) = (
        Ca::new("backends"),
        Ca::new("someone else"),
        Ca::new("clients"),
    );
    let ca_file = backend_ca.write(&dir.join("backends.pem"));
    let other_file = other_ca.write(&dir.join("other.pem"));
    let leaf = backend_ca.leaf(&["api.internal", "127.0.0.1"], "api");
    let open = TlsBackend::start("open", leaf.clone(), None).await;
    let strict = TlsBackend::start("strict", leaf, Some(&client_ca)).await;
    let (client_cert, client_key) = client_ca.leaf(&["switchyard.internal"], "switchyard");
    let (cert_file, key_file) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&cert_file, &client_cert).unwrap();
    std::fs::write(&key_file, &client_key).unwrap();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let tls = |extra: Value| {
        let mut labels = json!({"HAPROXY_0_MODE": "http", "SWITCHYARD_0_BACKEND_TLS": "true",
                                "SWITCHYARD_0_BACKEND_TLS_CA": ca_file});
        for (k, v) in extra.as_object().unwrap() {
            labels[k] = v.clone();
        }
        labels
    };
    let apps = vec![
        app(
            "/named",
            ports[0],
            tls(json!({"SWITCHYARD_0_BACKEND_TLS_SNI": "api.internal"})),
            vec![task("/named", "named.1", open.addr.port())],
        ),
        app(
            "/by-ip",
            ports[1],
            tls(json!({})),
            vec![task("/by-ip", "ip.1", open.addr.port())],
        ),
        app(
            "/h2",
            ports[2],
            tls(json!({"SWITCHYARD_0_UPSTREAM": "h2",
                                         "SWITCHYARD_0_BACKEND_TLS_SNI": "api.internal"})),
            vec![task("/h2", "h2.1", open.addr.port())],
        ),
        app(
            "/wrong-ca",
            ports[3],
            tls(json!({"SWITCHYARD_0_BACKEND_TLS_CA": other_file})),
            vec![task("/wrong-ca", "w.1", open.addr.port())],
        ),
        app(
            "/client-cert",
            ports[4],
            tls(json!({
                "SWITCHYARD_0_BACKEND_TLS_CERT": cert_file.display().to_string(),
                "SWITCHYARD_0_BACKEND_TLS_KEY": key_file.display().to_string()})),
            vec![task("/client-cert", "c.1", strict.addr.port())],
        ),
        app(
            "/no-client-cert",
            ports[5],
            tls(json!({})),
            vec![task("/no-client-cert", "n.1", strict.addr.port())],
        ),
        app(
            "/tcp-tls",
            free_port(),
            json!({"HAPROXY_0_MODE": "tcp", "SWITCHYARD_0_BACKEND_TLS": "true"}),
            vec![task("/tcp-tls", "t.1", open.addr.port())],
        ),
    ];
    let e = start("backend-tls", apps, "").await;
    let routes =
        e.sy.wait_routes("ports", |r| ports.iter().all(|&p| has_service(r, p)))
            .await;
    assert!(
        routes["problems"]
            .to_string()
            .contains("BACKEND_TLS needs HAPROXY_0_MODE=http"),
        "a tcp port asking for TLS is not served in the clear: {routes:#}"
    );
    // /v1/routes shows what a port asked for.
    let named = routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == "/named")
        .unwrap();
    assert_eq!(
        named["edge"]["backend_tls"]["server_name"], "api.internal",
        "{named:#}"
    );
    let get = |port: u16| http_get(local(port), "/");
    let (status, body) = get(ports[0]).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "open HTTP/1.1 sni=api.internal")
    );
    let (status, body) = get(ports[1]).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "open HTTP/1.1 sni=-"),
        "verified by IP, no SNI"
    );
    let (status, body) = get(ports[2]).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "open HTTP/2.0 sni=api.internal")
    );
    let (status, body) = get(ports[4]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "strict HTTP/1.1 sni=-"));
    // Verification failing: 502, counted, and never the request in the clear.
    let (status, _) = get(ports[3]).await.unwrap();
    assert_eq!(status, 502);
    assert!(
        e.sy.metric(
            "switchyard_upstream_tls_failures_total",
            &["kind=\"verify\""]
        )
        .await
            >= 1.0
    );
    let (status, _) = get(ports[5]).await.unwrap();
    assert_eq!(status, 502, "the backend wants a client certificate");
}

#[tokio::test]
async fn client_certificates_per_vhost_and_tls_settings() {
    let dir = temp_dir("mtls-files");
    let (own_ca, client_ca, stranger_ca) = (
        Ca::new("switchyard"),
        Ca::new("clients"),
        Ca::new("strangers"),
    );
    let ca_file = client_ca.write(&dir.join("clients.pem"));
    let backend = Backend::start("web").await;
    let apps = vec![
        app(
            "/secure",
            0,
            json!({"HAPROXY_0_VHOST": "secure.example.com", "SWITCHYARD_0_CLIENT_CA": ca_file}),
            vec![task("/secure", "secure.1", backend.port())],
        ),
        app(
            "/web",
            0,
            json!({"HAPROXY_0_VHOST": "web.example.com"}),
            vec![task("/web", "web.1", backend.port())],
        ),
    ];
    let (e, https) = start_https(
        "mtls",
        apps,
        &own_ca,
        "min_version = \"1.3\"\ncipher_suites = [\"TLS13_CHACHA20_POLY1305_SHA256\"]\n",
    )
    .await;
    e.sy.wait_routes("vhosts", |r| r["services"].as_array().unwrap().len() == 2)
        .await;
    let alice = client_ca.leaf(&["alice.example"], "alice");
    let mallory = stranger_ca.leaf(&["mallory.example"], "mallory");
    let forged = "X-Client-Cert-Subject: CN=admin\r\n";
    let with = |cert: Option<&(String, String)>| client_config(own_ca.roots(), cert, BOTH);
    // A certificate the vhost's CA verifies: served, its subject forwarded (the client's own
    // header replaced).
    let reply = tls_get(
        https,
        with(Some(&alice)),
        dns("secure.example.com"),
        "secure.example.com",
        forged,
    )
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("\"x-client-cert-subject\": \"CN=alice\""),
        "{reply}"
    );
    assert!(!reply.contains("CN=admin"), "{reply}");
    // None, or one from another CA: refused at the handshake (an alert, no HTTP).
    for cert in [None, Some(&mallory)] {
        let refused = tls_get(
            https,
            with(cert),
            dns("secure.example.com"),
            "secure.example.com",
            "",
        )
        .await;
        assert!(refused.is_err(), "{refused:?}");
    }
    // The vhost asked for by Host over a connection that showed no certificate: 400, on the
    // HTTPS listener (another SNI) and on the plain one.
    let reply = tls_get(
        https,
        with(None),
        dns("web.example.com"),
        "secure.example.com",
        "",
    )
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let reply = get_with(lo(1), e.http, b"", "secure.example.com", "").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // Other vhosts need none, and never see a client's subject header.
    let reply = tls_get(
        https,
        with(None),
        dns("web.example.com"),
        "web.example.com",
        forged,
    )
    .await
    .unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") && !reply.contains("CN=admin"),
        "{reply}"
    );

    // https.min_version = 1.3 and one cipher suite: a TLS 1.2 client is refused, a 1.3 one
    // gets that suite.
    let tls12 = client_config(own_ca.roots(), None, &[&rustls::version::TLS12]);
    let refused = tls_get(https, tls12, dns("web.example.com"), "web.example.com", "").await;
    assert!(refused.is_err(), "{refused:?}");
    let tcp = TcpStream::connect(https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(with(None))
        .connect(dns("web.example.com"), tcp)
        .await
        .unwrap();
    let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap();
    assert_eq!(
        format!("{:?}", suite.suite()),
        "TLS13_CHACHA20_POLY1305_SHA256"
    );
}

/// The request limits (edgehttp) key on the client address the PROXY header names, on the fast
/// path and on the general path (a port with PROXY protocol out), and /v1/routes shows both
/// parts of a port's edge labels in one `edge` object.
#[tokio::test]
async fn per_client_limits_key_on_the_proxy_address_and_routes_show_both_parts() {
    let backend = Backend::start("web").await;
    let proxied = ProxyBackend::start(true).await;
    let (fast_port, general_port) = (free_port(), free_port());
    let limit = |extra: Value| {
        let mut labels = json!({"HAPROXY_0_MODE": "http",
            "SWITCHYARD_0_RATE_LIMIT": "1/h", "SWITCHYARD_0_RATE_LIMIT_BURST": "1",
            "SWITCHYARD_0_RATE_LIMIT_BY": "client"});
        labels
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        labels
    };
    let apps = vec![
        app(
            "/fast",
            fast_port,
            limit(json!({})),
            vec![task("/fast", "fast.1", backend.port())],
        ),
        app(
            "/general",
            general_port,
            limit(json!({"SWITCHYARD_0_PROXY_PROTOCOL": "v1"})),
            vec![task("/general", "general.1", proxied.addr.port())],
        ),
    ];
    let e = start(
        "pp-limits",
        apps,
        "proxy_protocol_from = [\"127.0.0.1\"]\nproxy_protocol_timeout = \"2s\"",
    )
    .await;
    let routes =
        e.sy.wait_routes("two ports", |r| {
            has_service(r, fast_port) && has_service(r, general_port)
        })
        .await;
    let status = |reply: &str| reply.get(9..12).unwrap_or("").to_string();
    for port in [fast_port, general_port] {
        // One request per hour per client: the second from 203.0.113.7 is refused, and a
        // client behind the same proxy connection source (127.0.0.1) is not.
        let first = get_with(lo(1), local(port), &v1("203.0.113.7:1"), "a", "").await;
        assert_eq!(status(&first), "200", "{port}: {first}");
        let again = get_with(lo(1), local(port), &v2("203.0.113.7:2"), "a", "").await;
        assert_eq!(status(&again), "429", "{port}: {again}");
        let other = get_with(lo(1), local(port), &v1("203.0.113.8:1"), "a", "").await;
        assert_eq!(status(&other), "200", "{port}: {other}");
    }
    // PROXY protocol out carries the same address the limit keyed on.
    assert_eq!(proxied.seen(), ["203.0.113.7:1", "203.0.113.8:1"]);
    let service = |app_id: &str| {
        routes["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["app_id"] == app_id)
            .unwrap()
            .clone()
    };
    let fast = service("/fast");
    assert_eq!(fast["edge"]["rate_limit"]["by"], "client", "{fast:#}");
    assert!(fast["edge"].get("proxy_protocol").is_none(), "{fast:#}");
    let general = service("/general");
    assert_eq!(general["edge"]["rate_limit"]["by"], "client", "{general:#}");
    assert_eq!(general["edge"]["proxy_protocol"], "v1", "{general:#}");
}
