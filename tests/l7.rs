//! The L7 edge end to end: the shared vhost listener routing by host and path, the services'
//! HTTP policies (ACL, redirect, sticky), forwarded headers, WebSocket upgrades across table
//! swaps, and the 502/503/504 paths — with real clients on loopback.

mod support;

use std::net::SocketAddr;

use serde_json::{Value, json};
use support::edge::{Edge, Sections, header, raw_request as request};
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn edge(name: &str, apps: Vec<Value>, extra: &str) -> Edge {
    let proxy = format!("drain_timeout = \"5s\"\n{extra}");
    let sections = Sections {
        proxy: &proxy,
        http: "access_log = true",
        ..Sections::default()
    };
    Edge::start(name, apps, sections).await
}

/// An app reached by vhost only (service port 0).
fn vhost_app(id: &str, labels: Value, backends: &[&Backend]) -> Value {
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, b)| task(id, &format!("{id}.{i}"), b.port()))
        .collect();
    app(id, 0, labels, tasks)
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let (status, _, body) = request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}")).await;
    (status, body)
}

#[tokio::test]
async fn host_and_path_routing_matrix() {
    let (shop, api, v2, wild, default) = (
        Backend::start("shop").await,
        Backend::start("api").await,
        Backend::start("v2").await,
        Backend::start("wild").await,
        Backend::start("default").await,
    );
    let apps = vec![
        vhost_app(
            "/shop",
            json!({"HAPROXY_0_VHOST": "shop.example.com,www.shop.example.com"}),
            &[&shop],
        ),
        vhost_app(
            "/api",
            json!({"HAPROXY_0_VHOST": "shop.example.com", "HAPROXY_0_PATH": "/api"}),
            &[&api],
        ),
        vhost_app(
            "/v2",
            json!({"HAPROXY_0_VHOST": "shop.example.com", "HAPROXY_0_PATH": "/api/v2 /beta"}),
            &[&v2],
        ),
        vhost_app(
            "/wild",
            json!({"HAPROXY_0_VHOST": "*.apps.example.com"}),
            &[&wild],
        ),
        vhost_app("/fallback", json!({}), &[&default]),
    ];
    let e = edge("l7-matrix", apps, "").await;
    e.sy.wait_routes("routes", |r| r["services"].as_array().unwrap().len() == 4)
        .await;
    let cases = [
        ("shop.example.com", "/", 200, "shop"),
        ("SHOP.Example.COM:8080", "/cart", 200, "shop"),
        ("shop.example.com.", "/", 200, "shop"),
        ("www.shop.example.com", "/", 200, "shop"),
        ("shop.example.com", "/api/users", 200, "api"),
        ("shop.example.com", "/api/v2/users", 200, "v2"),
        ("shop.example.com", "/beta", 200, "v2"),
        ("x.apps.example.com", "/", 200, "wild"),
        ("a.b.apps.example.com", "/anything", 200, "wild"),
        ("apps.example.com", "/", 503, "no route for this request\n"),
        ("unknown.org", "/", 503, "no route for this request\n"),
    ];
    for (host, path, status, body) in cases {
        assert_eq!(
            get(e.http, host, path).await,
            (status, body.to_string()),
            "{host}{path}"
        );
    }
    // Routes change with the table: a new vhost app answers without a restart.
    let mut apps = vec![vhost_app(
        "/shop",
        json!({"HAPROXY_0_VHOST": "shop.example.com"}),
        &[&shop],
    )];
    apps.push(vhost_app(
        "/new",
        json!({"HAPROXY_0_VHOST": "new.example.com"}),
        &[&default],
    ));
    write_apps(&e.file, apps);
    wait_for("new vhost", || async {
        (get(e.http, "new.example.com", "/").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        get(e.http, "shop.example.com", "/api/x").await.1,
        "shop",
        "the /api route is gone"
    );
    assert!(
        !e.sy.log_lines("switchyard::access").is_empty(),
        "access log lines are written"
    );
}

#[tokio::test]
async fn default_app_and_app_id_routing() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let app_id_port = free_port();
    let apps = vec![
        vhost_app("/a", json!({"HAPROXY_0_VHOST": "a.example.com"}), &[&a]),
        app(
            "/b",
            free_port(),
            json!({"HAPROXY_0_MODE": "http"}),
            vec![task("/b", "b.1", b.port())],
        ),
    ];
    let dir = temp_dir("l7-default");
    let file = dir.join("apps.json");
    write_apps(&file, apps);
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [http]\nlisten = [\"{http}\"]\napp_id_listen = \"127.0.0.1:{app_id_port}\"\ndefault_app = \"/b\"\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("l7-default", &toml);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(get(http, "a.example.com", "/").await.1, "a");
    assert_eq!(
        get(http, "elsewhere.org", "/").await.1,
        "b",
        "the default app answers"
    );
    let app_id: SocketAddr = format!("127.0.0.1:{app_id_port}").parse().unwrap();
    let (_, _, body) = request(app_id, "GET / HTTP/1.1\r\nHost: x\r\nX-Marathon-App-Id: /a").await;
    assert_eq!(body, "a");
    let (status, _, _) = request(
        app_id,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Marathon-App-Id: /nope",
    )
    .await;
    assert_eq!(status, 503);
    // A head hyper cannot parse (a field line without a colon) is answered by hyper itself,
    // never reaching the proxy's own code: 400, dated as every other answer (RFC 9110 §6.6.1).
    let (status, headers, _) = request(app_id, "GET / HTTP/1.1\r\nHost: x\r\nno colon here").await;
    assert_eq!(status, 400);
    let date = header(&headers, "date").expect("a Date on hyper's own 400");
    assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
}

#[tokio::test]
async fn forwarded_headers_reach_the_backend() {
    let b = Backend::start("b").await;
    let e = edge(
        "l7-headers",
        vec![vhost_app(
            "/b",
            json!({"HAPROXY_0_VHOST": "b.example.com"}),
            &[&b],
        )],
        "",
    )
    .await;
    let (_, _, body) = request(
        e.http,
        "GET /echo-headers HTTP/1.1\r\nHost: b.example.com:8080\r\nX-Forwarded-For: 203.0.113.7\r\nKeep-Alive: timeout=5",
    )
    .await;
    // Not from one of `http.trusted_proxies`: replaced.
    assert!(
        body.contains("\"x-forwarded-for\": \"127.0.0.1\""),
        "{body}"
    );
    assert!(body.contains("\"x-forwarded-proto\": \"http\""), "{body}");
    assert!(
        body.contains("\"x-forwarded-host\": \"b.example.com:8080\""),
        "{body}"
    );
    assert!(body.contains("\"x-request-id\""), "{body}");
    assert!(
        !body.contains("keep-alive"),
        "hop-by-hop headers are stripped: {body}"
    );
    let (_, _, body) = request(
        e.http,
        "GET /echo-headers HTTP/1.1\r\nHost: b.example.com\r\nX-Request-Id: abc-123",
    )
    .await;
    assert!(
        body.contains("\"x-request-id\": \"abc-123\""),
        "an incoming id is kept: {body}"
    );
}

#[tokio::test]
async fn acl_and_redirect_to_https() {
    let b = Backend::start("b").await;
    let apps = vec![
        vhost_app(
            "/open",
            json!({"HAPROXY_0_VHOST": "open.example.com", "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "127.0.0.0/8"}),
            &[&b],
        ),
        vhost_app(
            "/closed",
            json!({"HAPROXY_0_VHOST": "closed.example.com", "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "10.0.0.0/8, 192.168.0.0/16"}),
            &[&b],
        ),
        vhost_app(
            "/secure",
            json!({"HAPROXY_0_VHOST": "secure.example.com", "HAPROXY_0_REDIRECT_TO_HTTPS": "true"}),
            &[&b],
        ),
    ];
    let e = edge("l7-acl", apps, "").await;
    assert_eq!(
        get(e.http, "open.example.com", "/").await,
        (200, "b".into())
    );
    assert_eq!(get(e.http, "closed.example.com", "/").await.0, 403);
    let (status, headers, _) = request(
        e.http,
        "GET /cart?id=7 HTTP/1.1\r\nHost: secure.example.com:80",
    )
    .await;
    assert_eq!(status, 301);
    assert_eq!(
        header(&headers, "location"),
        Some("https://secure.example.com/cart?id=7")
    );
    assert_eq!(
        b.connections.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "403 and 301 never reach the backend"
    );
}

#[tokio::test]
async fn sticky_cookie_survives_a_scale_up_and_is_reissued_when_its_backend_goes() {
    let (b1, b2, b3) = (
        Backend::start("one").await,
        Backend::start("two").await,
        Backend::start("three").await,
    );
    let labels = json!({"HAPROXY_0_VHOST": "s.example.com", "HAPROXY_0_STICKY": "true"});
    let e = edge(
        "l7-sticky",
        vec![vhost_app("/s", labels.clone(), &[&b1, &b2])],
        "",
    )
    .await;
    let (_, headers, first) = request(e.http, "GET / HTTP/1.1\r\nHost: s.example.com").await;
    let cookie = header(&headers, "set-cookie")
        .expect("a sticky cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("mesosphere_server_id="), "{cookie}");
    let with_cookie =
        format!("GET / HTTP/1.1\r\nHost: s.example.com\r\nCookie: theme=dark; {cookie}");
    for _ in 0..5 {
        let (_, headers, body) = request(e.http, &with_cookie).await;
        assert_eq!(body, first, "pinned");
        assert!(
            header(&headers, "set-cookie").is_none(),
            "a valid cookie is not re-issued"
        );
    }
    // Scale up: still pinned (the id is the backend's address, not its place in the table).
    write_apps(
        &e.file,
        vec![vhost_app("/s", labels.clone(), &[&b1, &b2, &b3])],
    );
    e.sy.wait_routes("scaled", |r| {
        r["services"][0]["backends"].as_array().unwrap().len() == 3
    })
    .await;
    for _ in 0..5 {
        assert_eq!(request(e.http, &with_cookie).await.2, first);
    }
    // Its backend goes: another answers and the cookie is re-issued for it.
    let survivors: Vec<&Backend> = [&b1, &b2, &b3]
        .into_iter()
        .filter(|b| b.name != first)
        .collect();
    write_apps(&e.file, vec![vhost_app("/s", labels, &survivors)]);
    e.sy.wait_routes("removed", |r| {
        r["services"][0]["backends"].as_array().unwrap().len() == 2
    })
    .await;
    let (_, headers, body) = request(e.http, &with_cookie).await;
    assert_ne!(body, first);
    let reissued = header(&headers, "set-cookie").expect("re-issued");
    assert!(!reissued.starts_with(&cookie), "{reissued}");
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
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(
                    head.contains("upgrade: websocket") && head.contains("connection: upgrade"),
                    "{head}"
                );
                let reply = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                stream.write_all(reply.as_bytes()).await.unwrap();
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
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
async fn websocket_upgrade_passes_through_and_survives_a_table_swap() {
    let ws = upgrade_echo_backend().await;
    let other = Backend::start("other").await;
    let ws_app = app(
        "/ws",
        0,
        json!({"HAPROXY_0_VHOST": "ws.example.com"}),
        vec![task("/ws", "ws.1", ws.port())],
    );
    let e = edge("l7-ws", vec![ws_app.clone()], "").await;
    let mut stream = TcpStream::connect(e.http).await.unwrap();
    let handshake = "GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    echo(&mut stream, b"hello").await;
    // Swap the table (another app arrives); the tunnel is untouched.
    write_apps(
        &e.file,
        vec![
            ws_app,
            vhost_app(
                "/other",
                json!({"HAPROXY_0_VHOST": "o.example.com"}),
                &[&other],
            ),
        ],
    );
    e.sy.wait_routes("swapped", |r| r["services"].as_array().unwrap().len() == 2)
        .await;
    echo(&mut stream, b"after the swap").await;
}

#[tokio::test]
async fn bad_gateway_and_gateway_timeout() {
    // One backend closes every connection at once; another never answers.
    let closing = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing_addr = closing.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = closing.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        }
    });
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let apps = vec![
        app(
            "/closing",
            0,
            json!({"HAPROXY_0_VHOST": "closing.example.com"}),
            vec![task("/closing", "c.1", closing_addr.port())],
        ),
        app(
            "/silent",
            0,
            json!({"HAPROXY_0_VHOST": "silent.example.com"}),
            vec![task("/silent", "s.1", silent_addr.port())],
        ),
        app(
            "/down",
            0,
            json!({"HAPROXY_0_VHOST": "down.example.com"}),
            vec![task("/down", "d.1", free_port())],
        ),
    ];
    let good = Backend::start("good").await;
    let mut apps = apps;
    apps.push(app(
        "/mixed",
        0,
        json!({"HAPROXY_0_VHOST": "mixed.example.com"}),
        vec![
            task("/mixed", "m.1", closing_addr.port()),
            task("/mixed", "m.2", good.port()),
        ],
    ));
    let e = edge("l7-errors", apps, "response_timeout = \"300ms\"").await;
    // A backend that drops requests: idempotent ones are replayed on the other backend ...
    for _ in 0..6 {
        assert_eq!(
            get(e.http, "mixed.example.com", "/").await,
            (200, "good".to_string())
        );
    }
    // ... others are not (the backend may have acted on them): some get 502.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let post = "POST / HTTP/1.1\r\nHost: mixed.example.com\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello";
        let mut stream = TcpStream::connect(e.http).await.unwrap();
        stream.write_all(post.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf).to_string();
        statuses.push(text.split(' ').nth(1).unwrap_or("").to_string());
    }
    assert!(
        statuses.iter().any(|s| s == "502") && statuses.iter().any(|s| s == "200"),
        "{statuses:?}"
    );
    assert_eq!(get(e.http, "closing.example.com", "/").await.0, 502);
    assert_eq!(get(e.http, "silent.example.com", "/").await.0, 504);
    assert_eq!(get(e.http, "down.example.com", "/").await.0, 502);
    let (status, _, _) = request(
        e.http,
        &format!(
            "GET / HTTP/1.1\r\nHost: closing.example.com\r\nX-Big: {}",
            "x".repeat(300_000)
        ),
    )
    .await;
    assert_eq!(status, 431, "headers over the limit are refused");
}

#[tokio::test]
async fn h2c_prior_knowledge_when_enabled() {
    let b = Backend::start("b").await;
    let dir = temp_dir("l7-h2c");
    let file = dir.join("apps.json");
    write_apps(
        &file,
        vec![vhost_app(
            "/b",
            json!({"HAPROXY_0_VHOST": "b.example.com"}),
            &[&b],
        )],
    );
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [http]\nlisten = [\"{http}\"]\nh2c = true\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("l7-h2c", &toml);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let mut sender = h2c_client(http).await;
    let req = hyper::Request::get("http://b.example.com/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "b");
    // HTTP/1.1 still works on the same listener.
    assert_eq!(
        get(http, "b.example.com", "/").await,
        (200, "b".to_string())
    );
}

#[tokio::test]
async fn h2c_to_backends_when_the_app_asks_for_it() {
    // A backend that only speaks HTTP/2 (prior knowledge) and says which version it got.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?} {}", req.version(), req.uri().path());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    let labels = json!({"HAPROXY_0_VHOST": "h2.example.com", "SWITCHYARD_0_UPSTREAM": "h2c"});
    let e = edge(
        "l7-h2-upstream",
        vec![app(
            "/h2",
            0,
            labels,
            vec![task("/h2", "h2.1", addr.port())],
        )],
        "",
    )
    .await;
    for i in 0..5 {
        let (status, body) = get(e.http, "h2.example.com", &format!("/item/{i}")).await;
        assert_eq!((status, body), (200, format!("HTTP/2.0 /item/{i}")));
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one multiplexed connection"
    );
}
