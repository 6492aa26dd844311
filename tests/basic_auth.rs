//! `HAPROXY_{n}_AUTH` end to end, with real requests on loopback: 401 and the realm without
//! credentials or with a wrong password, the backend's answer with the right password for each
//! hash kind, on an HTTP service port and on the vhost listener; a label that does not parse,
//! and AUTH on a tcp port, leave the port unserved with a problem.
//!
//! The hashes are of `open sesame`, made with glibc's crypt(3) (what HAProxy calls) and the same
//! from `openssl passwd -1|-5|-6 -salt switchyard0 'open sesame'`: independent of the crates that
//! verify them.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use base64::Engine;
use serde_json::{Value, json};
use support::edge::raw_request as request;
use support::marathon::{app, task};
use support::*;
use tokio::net::TcpStream;

const PASSWORD: &str = "open sesame";
const HASHES: [(&str, &str); 3] = [
    ("md5", "$1$switchya$yY1V60ehSY6oynLpj4ryX."),
    (
        "sha256",
        "$5$switchyard0$DtZbIcYr1DSPtHdHXu7x9f7sXO/sygp.FINx5FkONC/",
    ),
    (
        "sha512",
        "$6$switchyard0$jApw9FuFGvSIkilGJa5HO9NeHs.vR0pa1Jds8R6IY.QF7Rkg3f3q.717LBLlPcZ7WlGrWsWzKgPTB5ztCE6rP1",
    ),
];

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("\r\nAuthorization: Basic {encoded}")
}

fn realm(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
}

fn problems(routes: &Value, app_id: &str) -> Vec<String> {
    routes["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["app_id"] == app_id)
        .map(|p| p["reason"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn basic_auth_on_service_ports_and_vhosts() {
    let backend = Backend::start("protected").await;
    let dir = temp_dir("basic-auth");
    let file = dir.join("apps.json");
    let http: SocketAddr = local(free_port());
    let mut ports = Vec::new();
    let mut apps = Vec::new();
    for (kind, hash) in HASHES {
        let port = free_port();
        ports.push((kind, port));
        apps.push(app(
            &format!("/{kind}"),
            port,
            json!({
                "HAPROXY_0_MODE": "http",
                "HAPROXY_0_VHOST": format!("{kind}.example.com"),
                "HAPROXY_0_AUTH": format!("{kind} staff:alice:{hash}"),
            }),
            vec![task(
                &format!("/{kind}"),
                &format!("{kind}.1"),
                backend.port(),
            )],
        ));
    }
    // Does not parse (marathon-lb reads exactly realm:username:encryptedpassword).
    let broken_port = free_port();
    apps.push(app(
        "/broken",
        broken_port,
        json!({
            "HAPROXY_0_MODE": "http",
            "HAPROXY_0_VHOST": "broken.example.com",
            "HAPROXY_0_AUTH": "staff:alice",
        }),
        vec![task("/broken", "broken.1", backend.port())],
    ));
    // A valid label on a tcp port: cannot be honoured.
    let tcp_port = free_port();
    apps.push(app(
        "/tcp",
        tcp_port,
        json!({"HAPROXY_0_AUTH": format!("staff:alice:{}", HASHES[2].1)}),
        vec![task("/tcp", "tcp.1", backend.port())],
    ));
    write_apps(&file, apps);
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [http]\nlisten = [\"{http}\"]\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("basic-auth", &toml);
    let routes = sy
        .wait_routes("the three protected apps", |r| {
            r["services"].as_array().unwrap().len() == 3
        })
        .await;

    // Without valid credentials: 401 with the realm, and the backend is never contacted.
    for &(kind, port) in &ports {
        let host = format!("{kind}.example.com");
        for (addr, host) in [(local(port), "localhost"), (http, host.as_str())] {
            for credentials in [
                String::new(),
                basic("alice", "sesame"),
                basic("bob", PASSWORD),
            ] {
                let (status, headers, _) = request(
                    addr,
                    &format!("GET / HTTP/1.1\r\nHost: {host}{credentials}"),
                )
                .await;
                assert_eq!(status, 401, "{kind} at {addr} with {credentials:?}");
                assert_eq!(
                    realm(&headers),
                    Some(format!("Basic realm=\"{kind} staff\"").as_str())
                );
            }
        }
    }
    assert_eq!(
        backend.connections.load(Ordering::Relaxed),
        0,
        "a 401 never reaches the backend"
    );

    // The right password: the backend answers, on the service port and by vhost; the
    // Authorization header is forwarded, as HAProxy does.
    for &(kind, port) in &ports {
        let host = format!("{kind}.example.com");
        for (addr, host) in [(local(port), "localhost"), (http, host.as_str())] {
            let head = format!("GET / HTTP/1.1\r\nHost: {host}{}", basic("alice", PASSWORD));
            let (status, _, body) = request(addr, &head).await;
            assert_eq!(
                (status, body.as_str()),
                (200, "protected"),
                "{kind} at {addr}"
            );
            let head = head.replacen("GET / ", "GET /echo-headers ", 1);
            let (_, _, body) = request(addr, &head).await;
            assert!(body.contains("\"authorization\": \"Basic "), "{body}");
        }
    }

    // The label that does not parse: neither its port nor its vhost is served.
    assert!(!has_service(&routes, broken_port) && !has_service(&routes, tcp_port));
    for port in [broken_port, tcp_port] {
        let refused = TcpStream::connect(local(port)).await;
        assert!(refused.is_err(), "port {port} is not listening");
    }
    let (status, _, body) = request(http, "GET / HTTP/1.1\r\nHost: broken.example.com").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "no route for this request\n")
    );
    let broken = problems(&routes, "/broken");
    assert!(
        broken.iter().any(|p| p.contains("HAPROXY_0_AUTH")),
        "{broken:?}"
    );
    let tcp = problems(&routes, "/tcp");
    assert!(tcp.iter().any(|p| p.contains("MODE=http")), "{tcp:?}");
    // Both problems are counted (once each: the metric is not bumped per re-compile).
    wait_for("the problems counted", || async {
        let counted = sy
            .metric("switchyard_rejected_inputs_total", &["kind=\"compile\""])
            .await;
        (counted >= 2.0).then_some(())
    })
    .await;
}

/// An `/admin` path route that asks for credentials, beside the host's catch-all app: a path
/// that some backends read as `/admin` and others not (an escaped letter, a dot segment, a
/// doubled slash, a backslash, `;` parameters, a leading `//name`), either way round, is
/// refused as ambiguous with or without credentials and reaches neither backend (both codecs
/// route by `routing::resolve`); a path every reading takes to the same route is served as
/// sent.
#[tokio::test]
async fn a_guarded_path_route_is_not_missed_by_spelling_the_path_otherwise() {
    let site = Backend::start("site").await;
    let admin = Backend::start("admin").await;
    let dir = temp_dir("basic-auth-paths");
    let file = dir.join("apps.json");
    let http: SocketAddr = local(free_port());
    write_apps(
        &file,
        vec![
            app(
                "/site",
                free_port(),
                json!({"HAPROXY_0_VHOST": "corp.example.com"}),
                vec![task("/site", "site.1", site.port())],
            ),
            app(
                "/admin",
                free_port(),
                json!({
                    "HAPROXY_0_VHOST": "corp.example.com",
                    "HAPROXY_0_PATH": "/admin",
                    "HAPROXY_0_AUTH": format!("staff:alice:{}", HASHES[2].1),
                }),
                vec![task("/admin", "admin.1", admin.port())],
            ),
        ],
    );
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [http]\nlisten = [\"{http}\"]\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("basic-auth-paths", &toml);
    sy.wait_routes("both apps", |r| {
        r["services"].as_array().unwrap().len() == 2
    })
    .await;
    let (status, _, body) = request(http, "GET / HTTP/1.1\r\nHost: corp.example.com").await;
    assert_eq!((status, body.as_str()), (200, "site"));
    let (status, headers, _) =
        request(http, "GET /admin/x HTTP/1.1\r\nHost: corp.example.com").await;
    assert_eq!(status, 401);
    assert!(realm(&headers).is_some());
    let with_credentials = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: corp.example.com{}",
            basic("alice", PASSWORD)
        )
    };
    let (status, _, body) = request(http, &with_credentials("/admin/x")).await;
    assert_eq!((status, body.as_str()), (200, "admin"));
    for path in [
        // Read as /admin by backends that decode or resolve dot segments.
        "/%61dmin",
        "/x/../admin",
        "/site/%2e%2e/admin/x",
        "//admin",
        "/./admin",
        "/x\\..\\admin",
        // Read as /admin by Tomcat and Jetty (`;` parameters), and by URL parsers that take
        // a leading `//name` for a host.
        "/x/..;/admin",
        "/;/admin/x",
        "//x/admin/x",
        // Read as outside /admin by the same backends, while the guarded route takes it as sent.
        "/admin/../x",
        "/admin/%2e%2e/x",
        "/admin//../x",
        "/%61dmin/..",
        // Read as /admin by lenient decoders: escaped separators (some Tomcat setups, IIS,
        // handwritten routers), overlong UTF-8 and `%u` escapes (old IIS), and Windows,
        // which drops a segment's trailing dots; any run of separators before a host name
        // (WHATWG URL parsers), `%u` and overlong forms of letters, and ASP.NET's cookieless
        // segments.
        "/%2fadmin",
        "/x%2f..%2fadmin",
        "/x%5c..%5cadmin/x",
        "/x/%c0%ae%c0%ae/admin",
        "/x/%u002e%u002e/admin",
        "/x/.../admin",
        "/x/..%2fadmin",
        "///x/admin",
        "/%u0061dmin",
        "/%c1%a1dmin/x",
        "/(S(abc))/admin/x",
    ] {
        for head in [
            format!("GET {path} HTTP/1.1\r\nHost: corp.example.com"),
            with_credentials(path),
        ] {
            // The proxy's own answer: no backend was asked.
            let (status, _, body) = request(http, &head).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("ambiguous"), "{path}: {body}");
        }
    }
    // Read otherwise only within the catch-all, or only within the guarded route: served as
    // sent.
    let (status, _, body) =
        request(http, "GET /site//x;v=1 HTTP/1.1\r\nHost: corp.example.com").await;
    assert_eq!((status, body.as_str()), (200, "site"));
    let (status, _, body) =
        request(http, "GET /site/a%2Fb. HTTP/1.1\r\nHost: corp.example.com").await;
    assert_eq!((status, body.as_str()), (200, "site"));
    let (status, _, body) = request(http, &with_credentials("/admin/a%2Fb")).await;
    assert_eq!((status, body.as_str()), (200, "admin"));
}
