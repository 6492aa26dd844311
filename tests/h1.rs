//! The HTTP/1.1 fast path end to end, with raw sockets on both sides so that framing is seen
//! byte for byte: chunked and close-delimited responses, HEAD and 204, interim responses,
//! pipelined requests, streamed request bodies, `Connection: close` either way, pooled backend
//! connections, and the general path taking over for what the fast path leaves to it.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads one request head (and a `content-length` body) at a time and answers
/// by the path: `/chunked`, `/close` (body to the close), `/head-only` (204), `/early` (103
/// first), `/slow-body` (its body 1.5 s after its head), `/big` (1 MiB), `/echo` (the body back, with the request head's header count),
/// anything else `ok`. Counts the connections it accepts.
async fn raw_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some((head, body)) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let reply: Vec<u8> = match path.as_str() {
                        "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                            5\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n"
                            .to_vec(),
                        "/close" => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
                            return;
                        }
                        "/head-only" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                        "/slow-body" => {
                            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";
                            if s.write_all(head).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                            b"ok".to_vec()
                        }
                        "/dated" => b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
                            content-length: 2\r\n\r\nok"
                            .to_vec(),
                        "/early" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
                            HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            .to_vec(),
                        "/early-secret" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\
                            link-secret: 1\r\n\r\n\
                            HTTP/1.1 200 OK\r\ncontent-length: 2\r\nlink-secret: 1\r\n\r\nok"
                            .to_vec(),
                        "/big" => {
                            let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
                            if !head.starts_with("HEAD") {
                                r.resize(r.len() + (1 << 20), b'x');
                            }
                            r
                        }
                        "/echo" => {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-head: {}\r\n\r\n",
                                body.len(),
                                head.replace("\r\n", "|")
                            )
                            .into_bytes();
                            r.extend_from_slice(&body);
                            r
                        }
                        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok"
                            .to_vec(),
                    };
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// One request head and its `content-length` body, from `s` (bytes past it stay in `buf`).
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let mut chunk = [0u8; 65536];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            return Some((head, body));
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads from `s` until `want` bytes arrived or it closes; all it got, without the `date`
/// lines the proxy adds (`undated`; `responses_are_dated_once` pins them).
async fn read_until(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    while undated(&got).0.len() < want {
        match tokio::time::timeout(DEADLINE, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("timed out with {:?}", String::from_utf8_lossy(&got)),
        }
    }
    undated(&got).0
}

async fn exchange(s: &mut TcpStream, request: &str, expect: &str) {
    s.write_all(request.as_bytes()).await.unwrap();
    let got = read_until(s, expect.len()).await;
    assert_eq!(String::from_utf8_lossy(&got), expect, "for {request:?}");
}

/// An HTTP-mode app on a service port of its own, served by `backend`, once it is served;
/// `admin`: more of the `[admin]` section.
async fn raw_app(name: &str, backend: SocketAddr, admin: &str) -> (Switchyard, u16) {
    let port = free_port();
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    let apps = json!({"apps": [app("/raw", port, json!({"HAPROXY_0_MODE": "http"}),
        vec![task("/raw", "raw.1", backend.port())])]});
    std::fs::write(&file, apps.to_string()).unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    );
    let sy = Switchyard::start_with_admin(name, &toml, admin);
    sy.wait_routes("served", |r| has_service(r, port)).await;
    (sy, port)
}

/// A response's time is from the request sent to the response head, as docs/metrics.md says,
/// not to the body's end: a backend that sends its head at once and its body 1.5 s later shows
/// a p50 well under that in the history (and so in a rollout's p99 gate).
#[tokio::test]
async fn a_response_time_ends_at_the_response_head() {
    let (backend, _) = raw_backend().await;
    let (sy, port) = raw_app("h1-head-time", backend, "history_interval = \"10ms\"").await;
    // A backend's first sample is its baseline (its deltas start at the next): the request
    // goes once the history has sampled the route, or it would be part of that baseline.
    wait_for("the route's first sample", || async {
        let (_, body) = sy.get("/v1/history").await;
        let history: serde_json::Value = serde_json::from_str(&body).unwrap();
        let points = history["routes"]
            .as_array()?
            .iter()
            .flat_map(|r| r["versions"].as_array().into_iter().flatten())
            .filter_map(|v| v["points"].as_array())
            .map(Vec::len)
            .sum::<usize>();
        (points > 0).then_some(())
    })
    .await;
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    exchange(
        &mut c,
        "GET /slow-body HTTP/1.1\r\nHost: raw\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    let p50 = wait_for("a p50 in the history", || sy.history_p50_ms()).await;
    assert!(p50 < 1000.0, "p50 {p50} ms: the body's wait was counted");
}

#[tokio::test]
async fn responses_are_relayed_by_their_framing_on_one_keep_alive_connection() {
    let (backend, accepted) = raw_backend().await;
    let (_sy, port) = raw_app("h1", backend, "").await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: raw\r\n\r\n");
    exchange(
        &mut c,
        &get("/"),
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    exchange(
        &mut c,
        &get("/chunked"),
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
    )
    .await;
    exchange(
        &mut c,
        &get("/head-only"),
        "HTTP/1.1 204 No Content\r\n\r\n",
    )
    .await;
    exchange(
        &mut c,
        &get("/early"),
        "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
         HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    // HEAD: the length is told, no body follows.
    let head_req = "HEAD /big HTTP/1.1\r\nHost: raw\r\n\r\n";
    exchange(
        &mut c,
        head_req,
        "HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n",
    )
    .await;
    // Two pipelined requests, answered in order.
    let two = format!("{}{}", get("/"), get("/chunked"));
    c.write_all(two.as_bytes()).await.unwrap();
    let want = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".len() + 74;
    let got = String::from_utf8_lossy(&read_until(&mut c, want).await).to_string();
    assert!(
        got.starts_with(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ntransfer-encoding"
        ),
        "{got}"
    );
    // A megabyte, whole.
    c.write_all(get("/big").as_bytes()).await.unwrap();
    let big = read_until(&mut c, 1_048_576 + 40).await;
    assert_eq!(big.iter().filter(|&&b| b == b'x').count(), 1 << 20);
    // A body bigger than one read, streamed to the backend and echoed back with the headers
    // the backend saw: hop-by-hop ones gone, forwarding ones added.
    let body = vec![b'b'; 300_000];
    let post = format!(
        "POST /echo HTTP/1.1\r\nHost: raw\r\nContent-Length: {}\r\nConnection: keep-alive, x-drop\r\n\
         x-drop: 1\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n",
        body.len()
    );
    c.write_all(post.as_bytes()).await.unwrap();
    c.write_all(&body).await.unwrap();
    let echoed = read_until(&mut c, body.len() + 200).await;
    let text = String::from_utf8_lossy(&echoed);
    let head_seen = text
        .lines()
        .find(|l| l.starts_with("x-head:"))
        .unwrap()
        .to_string();
    // The client is no trusted proxy (`http.trusted_proxies`): its X-Forwarded-For is
    // replaced.
    assert!(
        head_seen.contains("x-forwarded-for: 127.0.0.1|"),
        "{head_seen}"
    );
    assert!(!head_seen.contains("10.1.1.1"), "{head_seen}");
    assert!(head_seen.contains("x-forwarded-proto: http"), "{head_seen}");
    assert!(head_seen.contains("x-request-id: "), "{head_seen}");
    assert!(
        !head_seen.to_ascii_lowercase().contains("x-drop"),
        "{head_seen}"
    );
    assert!(
        !head_seen.to_ascii_lowercase().contains("connection"),
        "{head_seen}"
    );
    assert!(text.ends_with(&"b".repeat(1000)));
    // All of that over one backend connection, pooled between requests.
    assert_eq!(accepted.load(Ordering::Relaxed), 1);

    // A body delimited by the backend's close ends the client connection too.
    c.write_all(get("/close").as_bytes()).await.unwrap();
    let got = read_until(&mut c, usize::MAX).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end"
    );

    // The client's `Connection: close` is honoured.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: raw\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut c, usize::MAX).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    );

    // A chunked request body goes to the general path, which sends it on by its length (the
    // backend here reads only `content-length`) and serves the next request on the connection.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: raw\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&read_until(&mut c, 17).await).to_string();
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    // HTTP/1.0 too.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.0\r\nHost: raw\r\n\r\n")
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&read_until(&mut c, usize::MAX).await).to_string();
    assert!(
        got.starts_with("HTTP/1.0 200 OK") && got.ends_with("ok"),
        "{got}"
    );
    let (status, body) = http_get(addr, "/").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
}

/// RFC 9110 §6.6.1: a response forwarded without `Date` gets one (the current second's
/// IMF-fixdate), on the fast path and on the general path (here HTTP/1.0) alike, and so do the
/// proxy's own answers; a backend's own `Date` is forwarded as it is, never doubled.
#[tokio::test]
async fn responses_are_dated_once_and_a_backends_date_is_kept() {
    let (backend, _) = raw_backend().await;
    let port = free_port();
    let dir = temp_dir("h1-date-apps");
    let file = dir.join("apps.json");
    let apps = json!({"apps": [app("/raw", port, json!({"HAPROXY_0_MODE": "http"}),
        vec![task("/raw", "raw.1", backend.port())])]});
    std::fs::write(&file, apps.to_string()).unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("h1-date", &toml);
    sy.wait_routes("served", |r| has_service(r, port)).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dates = |answer: &str| -> Vec<String> {
        answer
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                name.eq_ignore_ascii_case("date").then(|| value.to_string())
            })
            .collect()
    };
    for version in ["1.1", "1.0"] {
        for (path, close) in [("/", false), ("/dated", false), ("/refused", true)] {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let request =
                format!("GET {path} HTTP/{version}\r\nHost: raw\r\nConnection: close\r\n\r\n");
            // Two Hosts: refused by the proxy itself (400).
            let request = if close {
                request.replace("Host: raw", "Host: raw\r\nHost: other")
            } else {
                request
            };
            c.write_all(request.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(DEADLINE, c.read_to_end(&mut got))
                .await
                .unwrap()
                .unwrap();
            let got = String::from_utf8_lossy(&got).to_string();
            let head = got.split("\r\n\r\n").next().unwrap();
            let found = dates(head);
            assert_eq!(found.len(), 1, "HTTP/{version} {path}: {got}");
            assert_eq!(got.starts_with("HTTP/1.1 400"), close, "{got}");
            if path == "/dated" {
                assert_eq!(found[0], "Sun, 06 Nov 1994 08:49:37 GMT");
            } else {
                assert_eq!(found[0].len(), 29, "{got}");
                assert!(found[0].ends_with(" GMT"), "{got}");
            }
        }
    }
}

#[tokio::test]
async fn malformed_and_oversized_heads_are_refused() {
    let (backend, _) = raw_backend().await;
    let port = free_port();
    let dir = temp_dir("h1-bad-apps");
    let file = dir.join("apps.json");
    let apps = json!({"apps": [app("/raw", port, json!({"HAPROXY_0_MODE": "http"}),
        vec![task("/raw", "raw.1", backend.port())])]});
    std::fs::write(&file, apps.to_string()).unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [http]\nmax_header_bytes = 8192\nmax_headers = 10\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("h1-bad", &toml);
    sy.wait_routes("served", |r| has_service(r, port)).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for (request, status) in [
        ("G\x01T / HTTP/1.1\r\nHost: raw\r\n\r\n".to_string(), "400"),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: raw\r\nX-Big: {}\r\n\r\n",
                "a".repeat(9000)
            ),
            "431",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: raw\r\n{}\r\n",
                (0..11).map(|i| format!("X-{i}: y\r\n")).collect::<String>()
            ),
            "431",
        ),
    ] {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(request.as_bytes()).await.unwrap();
        let got = String::from_utf8_lossy(&read_until(&mut c, usize::MAX).await).to_string();
        assert!(got.starts_with(&format!("HTTP/1.1 {status}")), "{got}");
    }
    let (status, _) = http_get(addr, "/").await.unwrap();
    assert_eq!(status, 200);
}

/// An interim answer (103 Early Hints) goes to the client as the backend wrote it: what the
/// app's rules add (here `X-Frame-Options`) is on the final answer only, and a field they take
/// out (`Server`) is taken out of both.
#[tokio::test]
async fn an_interim_answer_gets_none_of_the_final_answers_additions() {
    let (backend, _) = raw_backend().await;
    let port = free_port();
    let dir = temp_dir("h1-interim");
    let file = dir.join("apps.json");
    let labels = json!({
        "HAPROXY_0_MODE": "http",
        "SWITCHYARD_0_RESPONSE_HEADER_SET_X-Frame-Options": "DENY",
        "SWITCHYARD_0_RESPONSE_HEADER_REMOVE": "Link-Secret",
    });
    let apps = json!({"apps": [app("/raw", port, labels,
        vec![task("/raw", "raw.1", backend.port())])]});
    std::fs::write(&file, apps.to_string()).unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("h1-interim", &toml);
    sy.wait_routes("served", |r| has_service(r, port)).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /early-secret HTTP/1.1\r\nHost: raw\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"\r\n\r\nok") {
        match tokio::time::timeout(DEADLINE, c.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("timed out with {:?}", String::from_utf8_lossy(&got)),
        }
    }
    let got = String::from_utf8_lossy(&got).to_lowercase();
    let (interim, last) = got
        .split_once("http/1.1 200 ok\r\n")
        .expect("a final answer");
    assert_eq!(
        interim,
        "http/1.1 103 early hints\r\nlink: </a.css>\r\n\r\n"
    );
    assert!(last.contains("x-frame-options: deny\r\n"), "{last}");
    assert!(!got.contains("secret"), "{got}");
}
