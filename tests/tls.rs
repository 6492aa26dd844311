//! HTTPS end to end: SNI certificate choice (exact, wildcard, default, per-app label), hot
//! reload (new handshakes get the new certificate, open connections carry on, a broken file
//! keeps the old one), HTTP/2 by ALPN, HSTS — with a rustls client and rcgen certificates made
//! at test time.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Accepts any certificate: these tests check *which* certificate the server chose.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A fresh self-signed certificate for `names`, written as one PEM (certificate then key).
fn write_cert(path: &Path, names: &[&str]) -> Vec<u8> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(
        path.with_extension("tmp"),
        c.cert.pem() + &c.signing_key.serialize_pem(),
    )
    .unwrap();
    std::fs::rename(path.with_extension("tmp"), path).unwrap();
    c.cert.der().to_vec()
}

async fn connect(addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn get_over(stream: &mut TlsStream<TcpStream>, host: &str) -> String {
    let req = format!("GET /echo-headers HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    // Read one response: headers, then Content-Length bytes.
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

struct Setup {
    sy: Switchyard,
    https: SocketAddr,
    certs: PathBuf,
    a: Vec<u8>,
    wild: Vec<u8>,
    default: Vec<u8>,
    _backend: Backend,
}

async fn setup(name: &str, extra_apps: Vec<Value>) -> Setup {
    let dir = temp_dir(name);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let a = write_cert(&certs.join("a.pem"), &["a.example.com"]);
    let wild = write_cert(&certs.join("b.pem"), &["*.b.example.com"]);
    let default = write_cert(&dir.join("default.pem"), &["default.example.com"]);
    let backend = Backend::start("tls-backend").await;
    let mut apps = vec![app(
        "/web",
        0,
        json!({"HAPROXY_0_VHOST": "a.example.com,x.b.example.com", "HAPROXY_0_USE_HSTS": "true"}),
        vec![task("/web", "web.1", backend.port())],
    )];
    for mut extra in extra_apps {
        extra["tasks"] = json!([task("/extra", "extra.1", backend.port())]);
        apps.push(extra);
    }
    let file = dir.join("apps.json");
    std::fs::write(&file, json!({ "apps": apps }).to_string()).unwrap();
    let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [https]\nlisten = [\"{https}\"]\ncerts = {:?}\ndefault_cert = {:?}\nreload_interval = \"50ms\"\n",
        file.display().to_string(),
        certs.display().to_string(),
        dir.join("default.pem").display().to_string(),
    );
    let sy = Switchyard::start(name, &toml);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    Setup {
        sy,
        https,
        certs,
        a,
        wild,
        default,
        _backend: backend,
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_and_requests_route_with_hsts() {
    let s = setup("tls-sni", vec![]).await;
    let mut a = connect(s.https, "a.example.com", &[]).await;
    assert_eq!(presented(&a), s.a);
    let reply = get_over(&mut a, "a.example.com").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=15768000"),
        "{reply}"
    );
    assert!(
        reply.contains("\"x-forwarded-proto\": \"https\""),
        "{reply}"
    );
    assert_eq!(
        presented(&connect(s.https, "x.b.example.com", &[]).await),
        s.wild,
        "wildcard"
    );
    assert_eq!(
        presented(&connect(s.https, "A.Example.com", &[]).await),
        s.a,
        "case-insensitive"
    );
    assert_eq!(
        presented(&connect(s.https, "other.org", &[]).await),
        s.default,
        "default"
    );
    assert_eq!(
        presented(&connect(s.https, "y.z.b.example.com", &[]).await),
        s.default,
        "a wildcard covers one label"
    );
}

#[tokio::test]
async fn certificates_reload_without_dropping_connections_and_broken_files_keep_the_old() {
    let s = setup("tls-reload", vec![]).await;
    let mut open = connect(s.https, "a.example.com", &[]).await;
    assert!(
        get_over(&mut open, "a.example.com")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let renewed = write_cert(&s.certs.join("a.pem"), &["a.example.com"]);
    wait_for("renewed certificate served", || async {
        (presented(&connect(s.https, "a.example.com", &[]).await) == renewed).then_some(())
    })
    .await;
    assert!(
        get_over(&mut open, "a.example.com")
            .await
            .starts_with("HTTP/1.1 200"),
        "the open connection carries on"
    );
    // A broken replacement: logged, and the renewed certificate stays.
    std::fs::write(
        s.certs.join("a.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    wait_for("rejection logged", || async {
        (!s.sy.log_lines("certificate rejected").is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        presented(&connect(s.https, "a.example.com", &[]).await),
        renewed
    );
    // A new file in the directory is picked up too.
    let c = write_cert(&s.certs.join("c.pem"), &["c.example.com"]);
    wait_for("new file", || async {
        (presented(&connect(s.https, "c.example.com", &[]).await) == c).then_some(())
    })
    .await;
}

#[tokio::test]
async fn per_app_ssl_cert_label() {
    let dir = temp_dir("tls-label-cert");
    let path = dir.join("shop.pem");
    let shop = write_cert(&path, &["shop.example.com"]);
    let extra = app(
        "/extra",
        0,
        json!({"HAPROXY_0_VHOST": "shop.example.com", "HAPROXY_0_SSL_CERT": path.display().to_string()}),
        vec![],
    );
    let s = setup("tls-label", vec![extra]).await;
    wait_for("label certificate served", || async {
        (presented(&connect(s.https, "shop.example.com", &[]).await) == shop).then_some(())
    })
    .await;
}

#[tokio::test]
async fn http2_by_alpn() {
    let s = setup("tls-h2", vec![]).await;
    let tls = connect(s.https, "a.example.com", &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = hyper::Request::get("https://a.example.com/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let hsts: Vec<_> = resp
            .headers()
            .get_all("strict-transport-security")
            .iter()
            .collect();
        assert_eq!(hsts, ["max-age=15768000"]);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "tls-backend");
    }
    let http1 = connect(s.https, "a.example.com", &[b"http/1.1"]).await;
    assert_eq!(http1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

/// One request on an open connection; the response's head and body (read by Content-Length).
async fn exchange(stream: &mut TlsStream<TcpStream>, head: &str) -> String {
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
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
async fn basic_auth_on_the_https_vhost() {
    use base64::Engine;
    // SHA-512-crypt of "open sesame" by glibc's crypt(3) (what HAProxy calls), the same as
    // `openssl passwd -6 -salt switchyard0 'open sesame'`.
    let hash = "$6$switchyard0$jApw9FuFGvSIkilGJa5HO9NeHs.vR0pa1Jds8R6IY.QF7Rkg3f3q.717LBLlPcZ7WlGrWsWzKgPTB5ztCE6rP1";
    let extra = app(
        "/extra",
        0,
        json!({"HAPROXY_0_VHOST": "staff.example.com", "HAPROXY_0_MODE": "http",
               "HAPROXY_0_AUTH": format!("Staff:alice:{hash}")}),
        vec![],
    );
    let s = setup("tls-auth", vec![extra]).await;
    s.sy.wait_routes("the protected vhost", |r| {
        r["services"].as_array().unwrap().len() == 2
    })
    .await;
    let basic = |password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"))
    };
    // HTTP/1.1 over TLS, where the fast path hands the request to the general path.
    let mut stream = connect(s.https, "staff.example.com", &[b"http/1.1"]).await;
    let host = "GET / HTTP/1.1\r\nHost: staff.example.com";
    for head in [
        host.to_string(),
        format!("{host}\r\nAuthorization: Basic {}", basic("wrong")),
    ] {
        let reply = exchange(&mut stream, &head).await;
        assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
        assert!(
            reply
                .to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"staff\""),
            "{reply}"
        );
    }
    let reply = exchange(
        &mut stream,
        &format!("{host}\r\nAuthorization: Basic {}", basic("open sesame")),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("tls-backend"), "{reply}");
}

/// Reads to the end: the bytes, and how it ended.
async fn read_to_end<S: AsyncReadExt + Unpin>(stream: &mut S) -> (usize, std::io::Result<()>) {
    let mut total = 0;
    let mut buf = vec![0u8; 65536];
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => total += n,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the stream ended");
    (total, end)
}

/// Closes a TCP connection with a reset rather than a FIN.
fn reset(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
}

#[tokio::test]
async fn the_tunnel_of_an_upgrade_over_https_passes_resets_on_both_ways() {
    let dir = temp_dir("tls-tunnel-reset");
    write_cert(&dir.join("default.pem"), &["ws.example.com"]);
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let file = dir.join("apps.json");
    let tasks = vec![task("/ws", "ws.1", backend.local_addr().unwrap().port())];
    let labels = json!({"HAPROXY_0_VHOST": "ws.example.com"});
    write_apps(&file, vec![app("/ws", 0, labels, tasks)]);
    let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [https]\nlisten = [\"{https}\"]\ndefault_cert = {:?}\n",
        file.display().to_string(),
        dir.join("default.pem").display().to_string(),
    );
    let sy = Switchyard::start("tls-tunnel-reset", &toml);
    sy.wait_routes("the app", |r| r.to_string().contains("ws.example.com"))
        .await;
    let upgraded = || async {
        let mut client = connect(https, "ws.example.com", &[b"http/1.1"]).await;
        client
            .write_all(
                b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\n\r\n",
            )
            .await
            .unwrap();
        let (mut server, _) = tokio::time::timeout(DEADLINE, backend.accept())
            .await
            .unwrap()
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            server.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        server
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            client.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
        (client, server)
    };
    let data = vec![5u8; 128 * 1024];

    // The client resets mid-message: the backend sees a reset, not a complete message.
    let (mut client, mut server) = upgraded().await;
    client.write_all(&data).await.unwrap();
    client.flush().await.unwrap();
    reset(client.get_ref().0);
    drop(client);
    let (_, end) = read_to_end(&mut server).await;
    let error = end.expect_err("a reset, not a clean end");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");

    // The backend resets mid-message: the client's connection is reset (not ended, with or
    // without close_notify).
    let (mut client, mut server) = upgraded().await;
    server.write_all(&data).await.unwrap();
    reset(&server);
    drop(server);
    let (_, end) = read_to_end(&mut client).await;
    let error = end.expect_err("an error, not a clean end");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");

    // A clean close both ways stays clean and complete: close_notify to the client.
    let (mut client, mut server) = upgraded().await;
    client.write_all(&data).await.unwrap();
    client.shutdown().await.unwrap();
    let (got, end) = read_to_end(&mut server).await;
    assert!(end.is_ok() && got == data.len(), "{got} bytes, {end:?}");
    server.write_all(&data).await.unwrap();
    server.shutdown().await.unwrap();
    let (got, end) = read_to_end(&mut client).await;
    assert!(end.is_ok() && got == data.len(), "{got} bytes, {end:?}");

    wait_for("no active backend connection", || async {
        let active = sy
            .metric("switchyard_backend_active_connections", &[])
            .await;
        (active == 0.0).then_some(())
    })
    .await;
}
