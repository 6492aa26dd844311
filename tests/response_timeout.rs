//! The response timeout as clients see it, over HTTP/1.1 and h2c: a backend that never answers
//! gets its request a 504 once `proxy.response_timeout` has passed (never before, and not much
//! after: the proxy's deadlines are coarse, 50 ms), counted from that request, not from its
//! connection's start; a backend whose body keeps coming, each piece within the timeout, is
//! not cut however long the whole takes (the timeout bounds the head, then each read).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(1);
/// How late past the timeout a 504 may come here: the proxy's 50 ms, and wide room for a
/// machine busy with other tests (this is no benchmark: it tells a deadline that fires from one
/// that is lost, or counted from the wrong moment, without flaking under load).
const LATE: Duration = Duration::from_secs(5);
/// Between two pieces of `/trickle`'s body: within the timeout, four of them past it.
const PIECE_GAP: Duration = Duration::from_millis(600);
// The trickle's premise, held when the test is built instead of timed when it runs: each gap
// is within the timeout, the four together past it.
const _: () = assert!(
    PIECE_GAP.as_millis() < TIMEOUT.as_millis() && 4 * PIECE_GAP.as_millis() > TIMEOUT.as_millis()
);

/// A keep-alive HTTP/1.1 backend: `/silent` is read and never answered, `/trickle` answers its
/// head at once and its four body bytes `PIECE_GAP` apart, anything else answers `fast`.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    match path.as_str() {
                        "/silent" => {
                            // Holds the connection, answering nothing.
                            let _ = s.read(&mut [0u8; 1]).await;
                            return;
                        }
                        "/trickle" => {
                            let head = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
                            if s.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            for byte in b"slow" {
                                tokio::time::sleep(PIECE_GAP).await;
                                if s.write_all(&[*byte]).await.is_err() {
                                    return;
                                }
                            }
                        }
                        _ => {
                            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast";
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A proxy with one vhost app `t.example` on `backend`, HTTP/1.1 and h2c on one listener.
async fn edge(name: &str, backend: SocketAddr) -> (Switchyard, SocketAddr) {
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    let labels = json!({"HAPROXY_0_VHOST": "t.example"});
    write_apps(
        &file,
        vec![app(
            "/t",
            0,
            labels,
            vec![task("/t", "t.0", backend.port())],
        )],
    );
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         response_timeout = \"{}ms\"\n[runtime]\nworkers = 1\n\
         [http]\nlisten = [\"{http}\"]\nh2c = true\n",
        file.display().to_string(),
        TIMEOUT.as_millis()
    );
    let sy = Switchyard::start(name, &toml);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    (sy, http)
}

/// One keep-alive HTTP/1.1 exchange on `s`: the status and body of a response framed by
/// Content-Length.
async fn h1_get(s: &mut TcpStream, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t.example\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    let status = head[9..12].parse().unwrap();
                    let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]);
                    return (status, body.to_string());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("an answer")
}

type Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>;

async fn h2_get(sender: &Sender, path: &str) -> (u16, String) {
    let req = hyper::Request::get(format!("http://t.example{path}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let exchange = async {
        let resp = sender.clone().send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).to_string())
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("an answer")
}

/// `took` is past the timeout, and not by more than `LATE`.
fn on_time(took: Duration) {
    assert!(took >= TIMEOUT, "504 before the timeout: {took:?}");
    assert!(
        took < TIMEOUT + LATE,
        "504 long after the timeout: {took:?}"
    );
}

/// HTTP/1.1, one keep-alive connection older than the timeout: its silent request gets the
/// 504 a timeout after it was sent (the deadline is the request's, not the connection's),
/// and the next request on a new connection is answered.
#[tokio::test]
async fn http1_silent_backend_gets_504_a_timeout_after_the_request() {
    let (_sy, http) = edge("timeout-h1", backend().await).await;
    let mut s = TcpStream::connect(http).await.unwrap();
    assert_eq!(h1_get(&mut s, "/fast").await, (200, "fast".into()));
    // The connection outlives a timeout between requests, answered ones.
    let aged = Instant::now() + TIMEOUT + TIMEOUT / 2;
    while Instant::now() < aged {
        assert_eq!(h1_get(&mut s, "/fast").await, (200, "fast".into()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = Instant::now();
    let (status, _) = h1_get(&mut s, "/silent").await;
    assert_eq!(status, 504);
    on_time(sent.elapsed());
    let mut s = TcpStream::connect(http).await.unwrap();
    assert_eq!(h1_get(&mut s, "/fast").await, (200, "fast".into()));
}

/// h2c: a silent stream gets its 504 a timeout after it was sent, while streams beside it on
/// the same connection are answered at once.
#[tokio::test]
async fn h2c_silent_stream_gets_504_a_timeout_after_the_request() {
    let (_sy, http) = edge("timeout-h2", backend().await).await;
    let sender = h2c_client(http).await;
    assert_eq!(h2_get(&sender, "/fast").await, (200, "fast".into()));
    let sent = Instant::now();
    let silent = tokio::spawn({
        let sender = sender.clone();
        async move { (h2_get(&sender, "/silent").await, sent.elapsed()) }
    });
    for _ in 0..5 {
        assert_eq!(h2_get(&sender, "/fast").await, (200, "fast".into()));
    }
    assert!(!silent.is_finished(), "the silent stream ended early");
    let ((status, _), took) = silent.await.unwrap();
    assert_eq!(status, 504);
    on_time(took);
    assert_eq!(h2_get(&sender, "/fast").await, (200, "fast".into()));
}

/// A body whose pieces come within the timeout of each other is relayed whole, over both
/// codecs, though it takes longer than the timeout.
#[tokio::test]
async fn a_body_that_keeps_coming_is_not_cut() {
    let (_sy, http) = edge("timeout-trickle", backend().await).await;
    let mut s = TcpStream::connect(http).await.unwrap();
    assert_eq!(h1_get(&mut s, "/trickle").await, (200, "slow".into()));
    let sender = h2c_client(http).await;
    assert_eq!(h2_get(&sender, "/trickle").await, (200, "slow".into()));
}
