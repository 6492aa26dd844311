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
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Connects to `to` from `from` (any loopback address).
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

fn lo(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Sends `prefix` then a GET (`Connection: close`) with `extra` header lines, from `from`;
/// returns what came back (empty: closed without an answer).
async fn get_with(
    from: IpAddr,
    to: SocketAddr,
    prefix: &[u8],
    host: &str,
    extra: &str,
) -> String {
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

/// A backend that expects a PROXY header on every connection and records the source it
/// names; after the header it answers HTTP requests (`http`) with that source as the body, or
/// echoes bytes (TCP).
struct ProxyBackend {
    addr: SocketAddr,
    /// Per connection: the header's source (or why it had none).
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ProxyBackend {
    async fn start(http: bool) -> ProxyBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let record = record.clone();
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
        ProxyBackend { addr, seen, task }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
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
    let outside = get_with(lo(1), local(acl_port), &v2("198.51.100.1:5000"), "a", "").await;
    assert!(outside.starts_with("HTTP/1.1 403"), "{outside}");

    // The fast path (a plain vhost and service port) takes the header's address as well.
    for to in [local(open_port), e.http] {
        let reply = get_with(lo(1), to, &v1("192.0.2.44:1"), "open.example.com", "").await;
        assert_eq!(xff(&reply).as_deref(), Some("192.0.2.44"), "{to}: {reply}");
        let reply = get_with(
            lo(1),
            to,
            &v2("[2001:db8::5]:1"),
            "open.example.com",
            "",
        )
        .await;
        assert_eq!(xff(&reply).as_deref(), Some("2001:db8::5"), "{to}: {reply}");
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
    tcp.write_all(b"PROXY TCP9 nonsense\r\nhello").await.unwrap();
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink).await;
    assert!(sink.is_empty(), "{sink:?}");
    assert!(
        e.sy.metric("switchyard_proxy_protocol_errors_total", &["kind=\"missing\""])
            .await
            >= 1.0
    );
    assert!(
        e.sy.metric("switchyard_proxy_protocol_errors_total", &["kind=\"v1_address\""])
            .await
            >= 1.0
    );
    assert!(
        e.sy.metric("switchyard_proxy_protocol_errors_total", &["kind=\"v1_syntax\""])
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
    ];
    let e = start("pp-out", apps, "proxy_protocol_from = [\"127.0.0.1\"]").await;
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
    // From anyone else (not a balancer): its own address.
    let mut stream = connect_from(lo(2), local(tcp_port)).await;
    stream.write_all(b"pong").await.unwrap();
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(tcp_backend.seen()[1].split(':').next(), Some("127.0.0.2"));

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
    assert_eq!(seen.len(), 3, "one backend connection per request: {seen:?}");
    assert_eq!(&seen[..2], ["192.0.2.77:1000", "192.0.2.77:1000"]);
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
    e.sy.wait_routes("ports", |r| has_service(r, sticky_port))
        .await;
    let extra = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\
                 X-Client-Cert-Subject: CN=forged\r\n";
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
        for reply in [&trusted, &untrusted] {
            assert!(!reply.contains("forged"), "{reply}");
        }
    }
}
