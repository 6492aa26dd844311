//! The request-level edge labels end to end, with real clients on loopback: rate limits (429
//! with Retry-After) and concurrency limits (503 at once) on the fast path and on HTTP/2,
//! per-app tunnel and response timeouts, header rules seen by backend and client, error pages
//! (the app's and the default one) and the maintenance switch.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use support::edge::{Edge, Sections};
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn edge(name: &str, apps: Vec<Value>, proxy: &str, http: &str) -> Edge {
    edge_with_admin(name, apps, proxy, http, "").await
}

async fn edge_with_admin(
    name: &str,
    apps: Vec<Value>,
    proxy: &str,
    http: &str,
    admin: &str,
) -> Edge {
    let proxy = format!("drain_timeout = \"5s\"\n{proxy}");
    let http = format!("h2c = true\n{http}");
    let sections = Sections {
        proxy: &proxy,
        http: &http,
        admin,
    };
    Edge::start(name, apps, sections).await
}

fn vhost_app(id: &str, host: &str, mut labels: Value, ports: &[u16]) -> Value {
    labels["HAPROXY_0_VHOST"] = json!(host);
    let tasks = ports
        .iter()
        .enumerate()
        .map(|(i, p)| task(id, &format!("{id}.{i}"), *p))
        .collect();
    app(id, 0, labels, tasks)
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on its own connection (the fast path serves it).
async fn get(addr: SocketAddr, host: &str, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    parse(&buf)
}

fn parse(buf: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// An HTTP/2 (h2c) client on the general path.
async fn h2(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    h2c_client(addr).await
}

async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    url: &str,
) -> Answer {
    let req = hyper::Request::get(url)
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_past_the_burst_on_both_codecs() {
    let b = Backend::start("b").await;
    let apps = vec![
        vhost_app(
            "/limited",
            "limited.example.com",
            json!({"SWITCHYARD_0_RATE_LIMIT": "1/h", "SWITCHYARD_0_RATE_LIMIT_BURST": "3"}),
            &[b.port()],
        ),
        vhost_app(
            "/h2limited",
            "h2.example.com",
            json!({"SWITCHYARD_0_RATE_LIMIT": "1/h", "SWITCHYARD_0_RATE_LIMIT_BURST": "2"}),
            &[b.port()],
        ),
        vhost_app(
            "/badlimit",
            "bad.example.com",
            json!({"SWITCHYARD_0_RATE_LIMIT": "lots"}),
            &[b.port()],
        ),
    ];
    let e = edge("edge-rate", apps, "", "").await;
    // The fast path: the burst passes, then 429 with Retry-After.
    for _ in 0..3 {
        assert_eq!(get(e.http, "limited.example.com", "/").await.status, 200);
    }
    let refused = get(e.http, "limited.example.com", "/").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    // HTTP/2 (the general path), one connection: the same rule.
    let mut sender = h2(e.http).await;
    for _ in 0..2 {
        assert_eq!(
            h2_get(&mut sender, "http://h2.example.com/").await.status,
            200
        );
    }
    let refused = h2_get(&mut sender, "http://h2.example.com/").await;
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
    // Counted per app.
    let counted =
        e.sy.metric("switchyard_limited_requests_total", &["/limited:0", "rate"])
            .await;
    assert_eq!(counted, 1.0);
    // A limit that does not parse: reported, and the app is served without it.
    let routes = e.sy.routes().await;
    let problems = routes["problems"].to_string();
    assert!(
        problems.contains("SWITCHYARD_0_RATE_LIMIT") && problems.contains("WITHOUT"),
        "{problems}"
    );
    for _ in 0..5 {
        assert_eq!(get(e.http, "bad.example.com", "/").await.status, 200);
    }
}

/// A backend that holds every request until told to answer; counts requests that arrived.
async fn held_backend() -> (
    SocketAddr,
    Arc<tokio::sync::Notify>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (r, a) = (release.clone(), arrived.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (r, a) = (r.clone(), a.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                r.notified().await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nheld",
                    )
                    .await;
            });
        }
    });
    (addr, release, arrived)
}

#[tokio::test]
async fn over_the_concurrency_limit_is_503_at_once_on_both_codecs() {
    let (held, release, arrived) = held_backend().await;
    let apps = vec![vhost_app(
        "/narrow",
        "narrow.example.com",
        json!({"SWITCHYARD_0_MAX_CONCURRENT_REQUESTS": "1"}),
        &[held.port()],
    )];
    let e = edge("edge-concurrency", apps, "", "").await;
    let first = tokio::spawn(get(e.http, "narrow.example.com", "/"));
    wait_for("the first request at the backend", || async {
        (arrived.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // The second, on the fast path and on HTTP/2, is refused without waiting.
    let second = get(e.http, "narrow.example.com", "/").await;
    assert_eq!(second.status, 503);
    assert!(second.body.contains("in flight"), "{}", second.body);
    let mut sender = h2(e.http).await;
    assert_eq!(
        h2_get(&mut sender, "http://narrow.example.com/")
            .await
            .status,
        503
    );
    assert_eq!(arrived.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The first finishes; its place is given back.
    release.notify_waiters();
    let first = first.await.unwrap();
    assert_eq!((first.status, first.body.as_str()), (200, "held"));
    let third = tokio::spawn(get(e.http, "narrow.example.com", "/"));
    wait_for("the third request at the backend", || async {
        (arrived.load(std::sync::atomic::Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    release.notify_waiters();
    assert_eq!(third.await.unwrap().status, 200);
    assert_eq!(
        e.sy.metric(
            "switchyard_limited_requests_total",
            &["/narrow:0", "concurrency"]
        )
        .await,
        2.0
    );
}

/// A backend that accepts one WebSocket-style upgrade per connection and then echoes bytes.
async fn upgrade_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let reply = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                stream.write_all(reply.as_bytes()).await.unwrap();
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn websocket(addr: SocketAddr, host: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"));
    stream
}

async fn echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test]
async fn a_websocket_outlives_the_default_idle_timeout_under_its_apps_tunnel_timeout() {
    let ws = upgrade_echo_backend().await;
    let apps = vec![
        vhost_app(
            "/long",
            "long.example.com",
            json!({"SWITCHYARD_0_TUNNEL_TIMEOUT": "1h"}),
            &[ws.port()],
        ),
        vhost_app("/short", "short.example.com", json!({}), &[ws.port()]),
    ];
    // The default tunnel timeout is short here.
    let e = edge("edge-tunnel", apps, "tunnel_idle_timeout = \"300ms\"", "").await;
    let mut long = websocket(e.http, "long.example.com").await;
    let mut short = websocket(e.http, "short.example.com").await;
    echo(&mut long, b"hello").await;
    echo(&mut short, b"hello").await;
    // The default one is closed once idle past the default ...
    let mut buf = [0u8; 16];
    let end = tokio::time::timeout(DEADLINE, short.read(&mut buf))
        .await
        .expect("the idle tunnel is closed");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    // ... while the app's, idle as long, still carries bytes both ways.
    echo(&mut long, b"still here").await;
}

/// A backend that answers with the request's headers in its body and a `Server` header.
async fn header_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
                        let mut seen: Vec<String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
                            .collect();
                        seen.sort();
                        async move {
                            let mut resp = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(seen.join("\n")),
                            ));
                            let h = resp.headers_mut();
                            h.insert("server", "backend/1.0".parse().unwrap());
                            h.insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn header_rules_are_seen_by_backend_and_client_on_both_codecs() {
    let backend = header_echo_backend().await;
    let labels = json!({
        "SWITCHYARD_0_REQUEST_HEADER_SET_X-Env": "prod",
        "SWITCHYARD_0_REQUEST_HEADER_ADD_X-Tag": "edge",
        "SWITCHYARD_0_REQUEST_HEADER_REMOVE": "X-Internal-User",
        "SWITCHYARD_0_RESPONSE_HEADER_SET_X-Frame-Options": "DENY",
        "SWITCHYARD_0_RESPONSE_HEADER_REMOVE": "Server",
    });
    let apps = vec![
        vhost_app("/ruled", "ruled.example.com", labels, &[backend.port()]),
        vhost_app(
            "/hopbyhop",
            "bad.example.com",
            json!({"SWITCHYARD_0_REQUEST_HEADER_SET_Transfer-Encoding": "chunked"}),
            &[backend.port()],
        ),
    ];
    let e = edge("edge-headers", apps, "", "").await;
    // HTTP/1.1 (fast path), with the client's own X-Env and X-Internal-User.
    let mut stream = TcpStream::connect(e.http).await.unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: ruled.example.com\r\nX-Env: dev\r\nX-Internal-User: admin\r\n\
              X-Tag: client\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let h1 = parse(&buf);
    // HTTP/2 (general path).
    let mut sender = h2(e.http).await;
    let req = hyper::Request::get("http://ruled.example.com/")
        .header("x-env", "dev")
        .header("x-internal-user", "admin")
        .header("x-tag", "client")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let h2_frame = resp.headers()["x-frame-options"]
        .to_str()
        .unwrap()
        .to_string();
    let h2_server = resp.headers().get("server").cloned();
    let h2_body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let h2_body = String::from_utf8_lossy(&h2_body).to_string();
    for (body, frame, server) in [
        (
            &h1.body,
            h1.header("x-frame-options").unwrap().to_string(),
            h1.header("server").map(str::to_string),
        ),
        (&h2_body, h2_frame, h2_server.map(|_| "present".to_string())),
    ] {
        assert!(
            body.contains("x-env=prod") && !body.contains("x-env=dev"),
            "{body}"
        );
        assert!(!body.contains("x-internal-user"), "{body}");
        assert!(
            body.contains("x-tag=client") && body.contains("x-tag=edge"),
            "{body}"
        );
        assert_eq!(frame, "DENY");
        assert_eq!(server, None);
    }
    // A rule on a framing field: the app is not served, and the problem says why.
    let problems = e.sy.routes().await["problems"].to_string();
    assert!(problems.contains("transfer-encoding"), "{problems}");
    assert_eq!(get(e.http, "bad.example.com", "/").await.status, 503);
}

#[tokio::test]
async fn error_pages_per_app_and_by_default_and_the_maintenance_switch() {
    let dir = temp_dir("edge-pages-files");
    let default_502 = dir.join("502.html");
    std::fs::write(&default_502, "<h1>default bad gateway</h1>").unwrap();
    // A backend that never answers (504), a port nobody listens on (502).
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let good = Backend::start("good").await;
    let down = free_port();
    let maintenance = json!({
        "SWITCHYARD_0_MAINTENANCE": "true",
        "SWITCHYARD_0_ERROR_PAGE_503": "<h1>back soon</h1>",
    });
    let apps = |maintenance: Value| {
        vec![
            vhost_app(
                "/slow",
                "slow.example.com",
                json!({
                    "SWITCHYARD_0_RESPONSE_TIMEOUT": "200ms",
                    "SWITCHYARD_0_ERROR_PAGE_504": "{\"error\":\"timeout\"}",
                    "SWITCHYARD_0_ERROR_PAGE_CONTENT_TYPE": "application/json",
                }),
                &[silent_port],
            ),
            vhost_app(
                "/down",
                "down.example.com",
                json!({"SWITCHYARD_0_ERROR_PAGE_502": "<h1>app bad gateway</h1>"}),
                &[down],
            ),
            vhost_app("/plain", "plain.example.com", json!({}), &[down]),
            vhost_app(
                "/empty",
                "empty.example.com",
                json!({"SWITCHYARD_0_ERROR_PAGE_503": "<h1>no tasks</h1>"}),
                &[],
            ),
            vhost_app("/shop", "shop.example.com", maintenance, &[good.port()]),
        ]
    };
    let e = edge(
        "edge-pages",
        apps(maintenance),
        "",
        &format!("error_page_502 = {:?}", default_502.display().to_string()),
    )
    .await;
    // 504 after the app's own response timeout, with its JSON page.
    let slow = get(e.http, "slow.example.com", "/").await;
    assert_eq!(slow.status, 504);
    assert_eq!(slow.body, "{\"error\":\"timeout\"}");
    assert_eq!(slow.header("content-type"), Some("application/json"));
    // 502: the app's page; an app without one gets the configured default.
    let down = get(e.http, "down.example.com", "/").await;
    assert_eq!(
        (down.status, down.body.as_str()),
        (502, "<h1>app bad gateway</h1>")
    );
    let plain = get(e.http, "plain.example.com", "/").await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (502, "<h1>default bad gateway</h1>")
    );
    assert_eq!(
        plain.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // 503 without a backend: the app's page, on HTTP/1.1 and HTTP/2.
    let empty = get(e.http, "empty.example.com", "/").await;
    assert_eq!(
        (empty.status, empty.body.as_str()),
        (503, "<h1>no tasks</h1>")
    );
    let mut sender = h2(e.http).await;
    let empty = h2_get(&mut sender, "http://empty.example.com/").await;
    assert_eq!(
        (empty.status, empty.body.as_str()),
        (503, "<h1>no tasks</h1>")
    );
    // Maintenance: 503 with the app's page on both codecs, the route kept.
    let shop = get(e.http, "shop.example.com", "/").await;
    assert_eq!(
        (shop.status, shop.body.as_str()),
        (503, "<h1>back soon</h1>")
    );
    let shop = h2_get(&mut sender, "http://shop.example.com/").await;
    assert_eq!(
        (shop.status, shop.body.as_str()),
        (503, "<h1>back soon</h1>")
    );
    assert_eq!(
        good.connections.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let routes = e.sy.routes().await;
    assert!(routes.to_string().contains("shop.example.com"));
    // Maintenance over: served again.
    write_apps(&e.file, apps(json!({})));
    wait_for("maintenance over", || async {
        (get(e.http, "shop.example.com", "/").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(get(e.http, "shop.example.com", "/").await.body, "good");
}

/// A change on the admin API with the bearer token; returns the status.
async fn admin_change(admin: SocketAddr, method: &str, path: &str, token: &str) -> u16 {
    let mut s = TcpStream::connect(admin).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    parse(&out).status
}

#[tokio::test]
async fn maintenance_switch_at_runtime_through_the_admin_api() {
    let good = Backend::start("good").await;
    let token_file = temp_dir("edge-maintenance-token").join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let admin = format!("token_file = {:?}", token_file.display().to_string());
    let apps = vec![vhost_app(
        "/shop",
        "shop.example.com",
        json!({"SWITCHYARD_0_ERROR_PAGE_503": "<h1>back soon</h1>"}),
        &[good.port()],
    )];
    let e = edge_with_admin("edge-maintenance", apps, "", "", &admin).await;
    assert_eq!(get(e.http, "shop.example.com", "/").await.status, 200);
    let path = "/v1/apps/shop/maintenance";
    assert_eq!(admin_change(e.sy.admin, "PUT", path, "wrong").await, 401);
    assert_eq!(admin_change(e.sy.admin, "PUT", path, "s3cret").await, 200);
    // Answered once the table is live: the next request sees it.
    let shop = get(e.http, "shop.example.com", "/").await;
    assert_eq!(
        (shop.status, shop.body.as_str()),
        (503, "<h1>back soon</h1>")
    );
    let routes = e.sy.routes().await;
    let shop_service = routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == "/shop")
        .unwrap();
    assert_eq!(shop_service["edge"]["maintenance"], true);
    assert_eq!(
        admin_change(e.sy.admin, "PUT", "/v1/apps/nope/maintenance", "s3cret").await,
        404
    );
    assert_eq!(
        admin_change(e.sy.admin, "DELETE", path, "s3cret").await,
        200
    );
    assert_eq!(get(e.http, "shop.example.com", "/").await.body, "good");
    assert_eq!(
        e.sy.metric(
            "switchyard_limited_requests_total",
            &["/shop:0", "maintenance"]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn over_the_pending_limit_is_503_at_once_while_a_connection_opens() {
    // A backend whose accept queue is full and never drained: connecting to it hangs (the
    // kernel drops the SYNs), so a request waits for its connection until the connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = socket.listen(1).unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let mut queued = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let attempt = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            TcpStream::connect(stuck_addr),
        );
        match attempt.await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break, // a connect that does not complete: the queue is full
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the accept queue never filled"
        );
    }
    let apps = vec![vhost_app(
        "/stuck",
        "stuck.example.com",
        json!({
            "SWITCHYARD_0_MAX_PENDING_REQUESTS": "1",
            "SWITCHYARD_0_MAX_CONCURRENT_REQUESTS": "100",
            "SWITCHYARD_0_CONNECT_TIMEOUT": "10s",
        }),
        &[stuck_addr.port()],
    )];
    let e = edge("edge-pending", apps, "", "").await;
    let first = tokio::spawn(get(e.http, "stuck.example.com", "/"));
    // Admitted, and so (with no wait in between) waiting for its connection.
    wait_for("the first request in flight", || async {
        let routes = e.sy.routes().await;
        let service = routes["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["app_id"] == "/stuck")
            .cloned()
            .unwrap();
        (service["edge"]["in_flight"] == 1).then_some(())
    })
    .await;
    let second = get(e.http, "stuck.example.com", "/").await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert!(
        second.body.contains("waiting for a backend connection"),
        "{}",
        second.body
    );
    assert_eq!(
        e.sy.metric(
            "switchyard_limited_requests_total",
            &["/stuck:0", "pending"]
        )
        .await,
        1.0
    );
    first.abort();
    drop(queued);
}
