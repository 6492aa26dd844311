//! marathon-lb parity end to end, with real requests on loopback: the mode marathon-lb would
//! give a port (a vhost app's service port is HTTP without a MODE label), `-i` paths, path
//! rewriting (prefix stripping seen by the backend, Location rewritten back under the prefix,
//! the root redirect), IP-per-task service ports identical across instances, and marathon-lb's
//! endpoints on the admin listener.

mod support;

use std::net::SocketAddr;

use base64::Engine;
use serde_json::{Value, json};
use support::edge::{Edge, Sections, header, raw_request as request};
use support::marathon::{app, task};
use support::*;
use tokio::net::TcpListener;

async fn edge(name: &str, apps: Vec<Value>, extra: &str) -> Edge {
    let sections = Sections {
        proxy: extra,
        ..Sections::default()
    };
    Edge::start(name, apps, sections).await
}

/// A backend that answers with what it was asked: `{method} {target}` and the headers' debug
/// form; `/redirect…` answers 302 with `Location` and `Content-Location` taken from the query
/// (`?to=/login`).
async fn mirror() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
                        let body = format!("{} {}\n{:?}", req.method(), req.uri(), req.headers());
                        let mut response = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        ));
                        if req.uri().path().starts_with("/redirect") {
                            let to = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("to="))
                                .unwrap_or("/")
                                .to_string();
                            *response.status_mut() = hyper::StatusCode::FOUND;
                            let value = hyper::header::HeaderValue::from_str(&to).unwrap();
                            response
                                .headers_mut()
                                .insert(hyper::header::LOCATION, value.clone());
                            response
                                .headers_mut()
                                .insert(hyper::header::CONTENT_LOCATION, value);
                        }
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("\r\nAuthorization: Basic {encoded}")
}

/// `open sesame`, `openssl passwd -6 -salt switchyard0 'open sesame'` (as tests/basic_auth.rs).
const SHA512: &str = "$6$switchyard0$jApw9FuFGvSIkilGJa5HO9NeHs.vR0pa1Jds8R6IY.QF7Rkg3f3q.717LBLlPcZ7WlGrWsWzKgPTB5ztCE6rP1";

#[tokio::test]
async fn a_vhost_apps_service_port_is_http_without_a_mode_label() {
    let (backend, _b) = mirror().await;
    let (plain_port, auth_port) = (free_port(), free_port());
    let apps = vec![
        app(
            "/web",
            plain_port,
            json!({"HAPROXY_0_VHOST": "web.example.com"}),
            vec![task("/web", "web.1", backend.port())],
        ),
        app(
            "/staff",
            auth_port,
            json!({
                "HAPROXY_0_VHOST": "staff.example.com",
                "HAPROXY_0_AUTH": format!("staff:alice:{SHA512}"),
            }),
            vec![task("/staff", "staff.1", backend.port())],
        ),
    ];
    let e = edge("mlb-mode", apps, "").await;
    let routes =
        e.sy.wait_routes("both apps", |r| {
            has_service(r, plain_port) && has_service(r, auth_port)
        })
        .await;
    assert_eq!(
        routes["problems"].as_array().unwrap().len(),
        0,
        "{routes:#}"
    );
    // The service port speaks HTTP: X-Forwarded-For is added (in tcp mode the bytes would pass
    // as they are).
    let (status, _, body) = request(
        local(plain_port),
        "GET /x HTTP/1.1\r\nHost: web.example.com",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"x-forwarded-for\": \"127.0.0.1\""),
        "{body}"
    );
    // VHOST + AUTH without MODE: served, with credentials asked for on the port and the vhost.
    for addr in [local(auth_port), e.http] {
        let head = "GET / HTTP/1.1\r\nHost: staff.example.com";
        let (status, headers, _) = request(addr, head).await;
        assert_eq!(status, 401, "{addr}");
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some("Basic realm=\"staff\"")
        );
        let with = format!("{head}{}", basic("alice", "open sesame"));
        let (status, _, body) = request(addr, &with).await;
        assert_eq!(status, 200, "{addr}: {body}");
        assert!(body.starts_with("GET /\n"), "{body}");
    }
}

#[tokio::test]
async fn a_dash_i_path_matches_without_case() {
    let (backend, _b) = mirror().await;
    let apps = vec![app(
        "/api",
        0,
        json!({"HAPROXY_0_VHOST": "a.example.com", "HAPROXY_0_PATH": "-i /api /v2"}),
        vec![task("/api", "api.1", backend.port())],
    )];
    let e = edge("mlb-dash-i", apps, "").await;
    e.sy.wait_routes("the vhost", |r| r.to_string().contains("a.example.com"))
        .await;
    for path in ["/api", "/API/users", "/Api?x=1", "/V2/x"] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: a.example.com");
        let (status, _, body) = request(e.http, &head).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.starts_with(&format!("GET {path}\n")), "{path}: {body}");
    }
    for path in ["/-i", "/ap", "/other"] {
        let head = format!("GET {path} HTTP/1.1\r\nHost: a.example.com");
        assert_eq!(request(e.http, &head).await.0, 503, "{path}");
    }
}

#[tokio::test]
async fn proxypass_revproxy_and_redir_rewrite_as_marathon_lb() {
    let (backend, _b) = mirror().await;
    let port = free_port();
    let apps = vec![app(
        "/legacy",
        port,
        json!({
            "HAPROXY_0_VHOST": "legacy.example.com",
            "HAPROXY_0_PATH": "/legacy",
            "HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH": "/legacy",
            "HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH": "/legacy",
            "HAPROXY_0_HTTP_BACKEND_REDIR": "/legacy/home",
        }),
        vec![task("/legacy", "legacy.1", backend.port())],
    )];
    let e = edge("mlb-rewrite", apps, "").await;
    e.sy.wait_routes("the app", |r| has_service(r, port)).await;
    for addr in [e.http, local(port)] {
        // The backend sees the target without the prefix, and the app's host.
        let (status, _, body) = request(
            addr,
            "GET /legacy/users/7?full=1 HTTP/1.1\r\nHost: legacy.example.com",
        )
        .await;
        assert_eq!(status, 200, "{addr}: {body}");
        assert!(body.starts_with("GET /users/7?full=1\n"), "{addr}: {body}");
        assert!(body.contains("\"host\": \"legacy.example.com\""), "{body}");
        let (_, _, body) = request(addr, "GET /legacy HTTP/1.1\r\nHost: legacy.example.com").await;
        assert!(body.starts_with("GET /\n"), "{addr}: {body}");
        // Location and Content-Location come back under the prefix (a path, and a URL at the
        // app's host); another host's URL is left alone.
        for (to, expected) in [
            ("/login", "/legacy/login"),
            ("http://legacy.example.com:8080/a?b=1", "/legacy/a?b=1"),
            ("http://elsewhere.org/x", "http://elsewhere.org/x"),
        ] {
            let head = format!("GET /legacy/redirect?to={to} HTTP/1.1\r\nHost: legacy.example.com");
            let (status, headers, _) = request(addr, &head).await;
            assert_eq!(status, 302, "{addr} {to}");
            assert_eq!(header(&headers, "location"), Some(expected), "{addr} {to}");
            assert_eq!(header(&headers, "content-location"), Some(expected));
        }
    }
    // The root of the app's host is redirected (on its service port, which has no path rule).
    let (status, headers, _) =
        request(local(port), "GET / HTTP/1.1\r\nHost: legacy.example.com").await;
    assert_eq!(status, 301);
    assert_eq!(header(&headers, "location"), Some("/legacy/home"));
    // Not the root, or another host: no redirect.
    let (status, _, body) = request(local(port), "GET / HTTP/1.1\r\nHost: other.org").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("GET /\n"), "{body}");
}

/// An IP-per-task app as Marathon 1.4 showed it: no service ports, the task's port under
/// `ipAddress.discovery`.
fn ip_per_task_app(id: &str, container_port: u16) -> Value {
    json!({
        "id": id,
        "labels": {"HAPROXY_0_VHOST": format!("{}.example.com", &id[1..])},
        "ipAddress": {"discovery": {"ports": [{"number": container_port, "name": "http", "protocol": "tcp"}]}},
        "tasks": [{
            "id": format!("{}.1", &id[1..]), "host": "127.0.0.1", "state": "TASK_RUNNING",
            "ipAddresses": [{"ipAddress": "127.0.0.1", "protocol": "IPv4"}]
        }]
    })
}

/// (app id, service port) of every service in `/v1/routes`.
fn service_ports(routes: &Value) -> Vec<(String, u16)> {
    let mut ports: Vec<(String, u16)> = routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let port = s["listen"].as_str()?.parse::<SocketAddr>().ok()?.port();
            Some((s["app_id"].as_str()?.to_string(), port))
        })
        .collect();
    ports.sort();
    ports
}

#[tokio::test]
async fn ip_per_task_service_ports_are_the_same_on_every_instance() {
    let (backend, _b) = mirror().await;
    let ids = ["/alpha", "/beta", "/gamma", "/delta", "/epsilon", "/zeta"];
    let apps: Vec<Value> = ids
        .iter()
        .map(|id| ip_per_task_app(id, backend.port()))
        .collect();
    let mut reversed = apps.clone();
    reversed.reverse();
    // Below the ports free_port hands out (20000 and up), so that neither instance's own
    // listeners fall in the range.
    let min = 12_000 + (std::process::id() % 7_900) as u16;
    let range = format!(
        "min_serv_port_ip_per_task = {min}\nmax_serv_port_ip_per_task = {}",
        min + 40
    );
    // Two instances, the apps listed in opposite orders. The second cannot bind the ports the
    // first holds (it reports that per listener); what it assigned is what is compared.
    let a = edge("mlb-ippt-a", apps, &range).await;
    let b = edge("mlb-ippt-b", reversed, &range).await;
    let all = |r: &Value| service_ports(r).len() == ids.len();
    let ports_a = service_ports(&a.sy.wait_routes("every app", all).await);
    let ports_b = service_ports(&b.sy.wait_routes("every app", all).await);
    assert_eq!(ports_a, ports_b);
    let distinct: std::collections::BTreeSet<u16> = ports_a.iter().map(|(_, p)| *p).collect();
    assert_eq!(distinct.len(), ids.len(), "{ports_a:?}");
    assert!(distinct.iter().all(|p| (min..=min + 40).contains(p)));
    // And the assigned port serves (HTTP: the vhost makes it so), as the vhost does.
    let (_, port) = &ports_a[0];
    let (status, _, body) = request(local(*port), "GET /p HTTP/1.1\r\nHost: x").await;
    assert_eq!(status, 200, "{body}");
    let host = format!("{}.example.com", &ports_a[0].0[1..]);
    let (status, _, _) = request(a.http, &format!("GET / HTTP/1.1\r\nHost: {host}")).await;
    assert_eq!(status, 200);
}

/// `GET`/`POST` on the admin listener with an optional bearer token: status and body.
async fn admin(
    sy: &Switchyard,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let auth = token.map_or(String::new(), |t| format!("\r\nAuthorization: Bearer {t}"));
    request(
        sy.admin,
        &format!("{method} {path} HTTP/1.1\r\nHost: localhost{auth}\r\nContent-Length: 0"),
    )
    .await
}

#[tokio::test]
async fn marathon_lb_endpoints_on_the_admin_listener() {
    let marathon = support::marathon::Marathon::start().await;
    let (backend, _b) = mirror().await;
    let (web_port, tcp_port) = (free_port(), free_port());
    marathon.set_apps(vec![
        app(
            "/shop/web",
            web_port,
            json!({"HAPROXY_0_VHOST": "shop.example.com,www.example.com"}),
            vec![task("/shop/web", "web.1", backend.port())],
        ),
        app(
            "/db",
            tcp_port,
            json!({}),
            vec![task("/db", "db.1", backend.port())],
        ),
    ]);
    let dir = temp_dir("mlb-endpoints");
    std::fs::write(dir.join("admin-token"), "s3cret\n").unwrap();
    let toml = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [http]\nlisten = [\"{}\"]\n",
        marathon.url(),
        local(free_port())
    );
    let token_file = dir.join("admin-token").display().to_string();
    let sy = Switchyard::start_with_admin(
        "mlb-endpoints",
        &toml,
        &format!("token_file = {token_file:?}"),
    );
    sy.wait_routes("both apps", |r| {
        has_service(r, web_port) && has_service(r, tcp_port)
    })
    .await;

    // HAProxy's monitor-uri: 200 and its page, open to probes like /healthz.
    let (status, headers, body) = admin(&sy, "GET", "/_haproxy_health_check", None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("text/html"));
    assert_eq!(
        body,
        "<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n"
    );

    // The maps: `{key} {backend}` lines, the backend named as marathon-lb names it.
    let (status, headers, body) = admin(&sy, "GET", "/_haproxy_getvhostmap", None).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("text/plain"));
    assert_eq!(
        body,
        format!("shop.example.com shop_web_{web_port}\nwww.example.com shop_web_{web_port}\n")
    );
    let (status, _, body) = admin(&sy, "GET", "/_haproxy_getappmap", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!("/shop/web shop_web_{web_port}\n"),
        "http-mode apps only"
    );

    // The signal needs the token that is configured; with it, a full resync from Marathon.
    for token in [None, Some("wrong")] {
        let (status, _, _) = admin(&sy, "GET", "/_mlb_signal/hup", token).await;
        assert_eq!(status, 401, "{token:?}");
    }
    let fetches = || {
        marathon
            .requests()
            .iter()
            .filter(|r| r.target.starts_with("/v2/apps"))
            .count()
    };
    let before = fetches();
    let (status, headers, body) = admin(&sy, "POST", "/_mlb_signal/hup", Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("text/plain"));
    assert_eq!(body, "Sent SIGHUP signal to marathon-lb");
    wait_for("a resync", || async { (fetches() > before).then_some(()) }).await;
}

/// marathon-lb's signals are changes: without `admin.token_file` they are refused on loopback
/// too, whatever the method — any page a browser shows could otherwise make the process resync
/// from Marathon over and over with an image pointing at 127.0.0.1. SIGHUP is the way without a
/// token.
#[tokio::test]
async fn marathon_lb_signals_need_the_token_even_on_loopback() {
    let marathon = support::marathon::Marathon::start().await;
    let port = free_port();
    marathon.set_apps(vec![app(
        "/a",
        port,
        json!({}),
        vec![task("/a", "a.1", free_port())],
    )]);
    let toml = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        marathon.url()
    );
    let sy = Switchyard::start("mlb-signals-open", &toml);
    sy.wait_routes("the app", |r| has_service(r, port)).await;
    let fetches = || {
        marathon
            .requests()
            .iter()
            .filter(|r| r.target.starts_with("/v2/apps"))
            .count()
    };
    let before = fetches();
    for (method, path) in [
        ("GET", "/_mlb_signal/hup"),
        ("POST", "/_mlb_signal/hup"),
        ("GET", "/_mlb_signal/usr1"),
    ] {
        let (status, _, body) = admin(&sy, method, path, None).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("admin.token_file"), "{body}");
    }
    // SIGHUP resyncs.
    sy.signal("HUP");
    wait_for("a resync", || async { (fetches() > before).then_some(()) }).await;
}
