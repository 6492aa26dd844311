//! HTTP edges found by an adversarial review of the shared HTTP rules (message, headers, h1,
//! exchange): who is blamed when a request body stalls or a backend answers early, how long a
//! stalled client may hold a backend connection, and whether the two codecs read request
//! targets and response framing alike. Each test documents the exact bytes; each failed on the
//! code as reviewed (the comments say what it did then).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "review.test";

/// How a scripted backend answers.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads the whole request body (Content-Length or chunked) before answering 200, as
    /// nearly every application server does.
    ReadBodyThenOk,
    /// Answers `413` with `Connection: close` as soon as the head is in, without reading the
    /// body, and closes (Go's MaxBytesReader, nginx `client_max_body_size`, ...).
    Early413AndClose,
    /// Reads the head, then whatever of the body comes for the given time, and closes without
    /// an answer: a backend timing out a quiet upload (nginx's `client_body_timeout`), or,
    /// with no time at all, one that fails on it.
    CloseAfter(Duration),
    /// Reads the head, then whatever of the body comes for the given time, then holds the
    /// connection without reading or answering (a backend that hangs mid-upload).
    StopReadingAfter(Duration),
    /// Reads the head, then whatever of the body comes for the given time, then answers `500`
    /// with `Connection: close` (a backend that answers a body read timeout with an error:
    /// Tomcat's 500, Go's `http.TimeoutHandler` 503).
    ErrorAfter(Duration),
}

/// A scripted backend on loopback.
async fn backend(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            match behaviour {
                Behaviour::ReadBodyThenOk => {
                    tokio::spawn(read_body_then_ok(s));
                }
                Behaviour::Early413AndClose => {
                    tokio::spawn(early_413(s));
                }
                Behaviour::CloseAfter(reading) => {
                    tokio::spawn(async move {
                        let mut s = s;
                        read_for(&mut s, reading).await;
                    });
                }
                Behaviour::ErrorAfter(reading) => {
                    tokio::spawn(async move {
                        let mut s = s;
                        if read_for(&mut s, reading).await {
                            let _ = s
                                .write_all(
                                    b"HTTP/1.1 500 Internal Server Error\r\n\
                                      content-length: 0\r\nconnection: close\r\n\r\n",
                                )
                                .await;
                        }
                    });
                }
                Behaviour::StopReadingAfter(reading) => {
                    tokio::spawn(async move {
                        let mut s = s;
                        read_for(&mut s, reading).await;
                        // Held, never read again, until the test ends.
                        std::future::pending::<()>().await;
                        drop(s);
                    });
                }
            }
        }
    });
    addr
}

/// A backend that hands every accepted connection to the test untouched.
async fn silent_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = tx.send(s);
        }
    });
    (addr, rx)
}

async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 65536];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn read_body_then_ok(mut s: TcpStream) {
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut s, &mut buf).await {
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap());
        if let Some(n) = length {
            while buf.len() < n {
                if !more(&mut s, &mut buf).await {
                    return;
                }
            }
            buf.drain(..n);
        } else if lower.contains("transfer-encoding: chunked") {
            // Until the last chunk and the empty trailer section.
            loop {
                if let Some(end) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                    buf.drain(..end + 5);
                    break;
                }
                if !more(&mut s, &mut buf).await {
                    return;
                }
            }
        }
        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn early_413(mut s: TcpStream) {
    let mut buf = Vec::new();
    if read_head(&mut s, &mut buf).await.is_some() {
        let _ = s
            .write_all(
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
    }
    // Dropped: closed with the body still unread (the kernel answers the rest with a RST).
}

/// Reads a request head, then whatever of its body comes for `reading`; false if no head came.
async fn read_for(s: &mut TcpStream, reading: Duration) -> bool {
    let mut buf = Vec::new();
    if read_head(s, &mut buf).await.is_none() {
        return false;
    }
    let more = async { while more(s, &mut buf).await {} };
    let _ = tokio::time::timeout(reading, more).await;
    true
}

/// Starts switchyard with one HTTP service on `port` (vhost `HOST`) over `backends`.
async fn start(
    name: &str,
    port: u16,
    backends: &[SocketAddr],
    proxy: &str,
    http: &str,
) -> (Switchyard, SocketAddr) {
    let labels = json!({"HAPROXY_0_MODE": "http", "HAPROXY_0_VHOST": HOST});
    start_labelled(name, (port, labels), backends, proxy, http).await
}

/// [`start`], the app labelled `labels`.
async fn start_labelled(
    name: &str,
    (port, labels): (u16, serde_json::Value),
    backends: &[SocketAddr],
    proxy: &str,
    http: &str,
) -> (Switchyard, SocketAddr) {
    let vhost = free_port();
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, b)| task("/review", &format!("review.{i}"), b.port()))
        .collect();
    write_apps(&file, vec![app("/review", port, labels, tasks)]);
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n{proxy}\n\
         [http]\nlisten = [\"127.0.0.1:{vhost}\"]\n{http}\n",
        file.display().to_string()
    );
    let sy = Switchyard::start(name, &toml);
    sy.wait_routes("served", |r| backends_of(r, port) == backends.len())
        .await;
    (sy, local(vhost))
}

/// Switchyard (`proxy` settings) on one HTTP service over a backend the test drives itself; a
/// client on the service port that has sent `POST /up` with `Content-Length: length` and the
/// body's `first` bytes; and the backend's end of the connection the request came on.
async fn upload(
    name: &str,
    proxy: &str,
    length: usize,
    first: &str,
) -> (Switchyard, TcpStream, TcpStream) {
    let (addr, mut accepted) = silent_backend().await;
    let port = free_port();
    let (sy, _vhost) = start(name, port, &[addr], proxy, "").await;
    let mut c = TcpStream::connect(local(port)).await.unwrap();
    let head = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {length}\r\n\r\n");
    c.write_all(format!("{head}{first}").as_bytes())
        .await
        .unwrap();
    let backend = tokio::time::timeout(DEADLINE, accepted.recv())
        .await
        .expect("the request reached the backend")
        .unwrap();
    (sy, c, backend)
}

/// Splits a client connection: its read half, and a task that sends body bytes on the write
/// half until the connection fails (abort it when done).
fn keep_uploading(c: TcpStream) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    let (r, mut w) = c.into_split();
    let uploading = tokio::spawn(async move {
        let chunk = vec![b'a'; 64 * 1024];
        while w.write_all(&chunk).await.is_ok() {}
    });
    (r, uploading)
}

fn backends_of(routes: &serde_json::Value, port: u16) -> usize {
    backends(routes, port).len()
}

/// Reads one response head (and nothing more) from `c`; its status.
async fn status_of(c: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let head = tokio::time::timeout(DEADLINE, read_head(c, &mut buf))
        .await
        .ok()??;
    head.get(9..12)?.parse().ok()
}

/// The `5xx` counted against the service's backends: what was charged to them.
async fn fives(sy: &Switchyard) -> f64 {
    sy.metric("switchyard_http_responses_total", &["class=\"5xx\""])
        .await
}

async fn ejections(sy: &Switchyard) -> f64 {
    sy.metric("switchyard_backend_ejections_total", &["/review"])
        .await
}

/// Was (medium, outlier ejection by a client): on the general path (hyper; here every
/// request, as the access log is on; on the fast path every chunked request falls back to it)
/// the response timeout starts when the request head is sent, while the client may still be
/// sending its body. A client that stops sending its body mid-way gets a 504 after
/// `response_timeout`, and the timeout is charged to the backend (`Failure::TimedOut` is a
/// backend failure). A dozen such requests eject a healthy backend.
///
/// Bytes, on one connection each, 12 in parallel, never completed:
///   `POST /up HTTP/1.1\r\nHost: review.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`
/// Expected: the stall is the client's (408, or the connection closed), nothing is charged to
/// the backend and nothing is ejected. Actual: 504 `backend timed out`, and
/// `switchyard_backend_ejections_total` goes to 1.
#[tokio::test]
async fn a_stalled_request_body_is_the_clients_fault_not_the_backends() {
    let a = backend(Behaviour::ReadBodyThenOk).await;
    let b = backend(Behaviour::ReadBodyThenOk).await;
    let port = free_port();
    let (sy, vhost) = start(
        "review-stall",
        port,
        &[a, b],
        "response_timeout = \"1s\"",
        "access_log = true",
    )
    .await;
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    );
    let mut clients = Vec::new();
    for _ in 0..12 {
        let head = head.clone();
        clients.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(vhost).await.unwrap();
            c.write_all(head.as_bytes()).await.unwrap();
            // The rest of the body never comes; the answer is whatever the proxy decides.
            status_of(&mut c).await
        }));
    }
    let mut statuses = Vec::new();
    for c in clients {
        statuses.push(c.await.unwrap());
    }
    eprintln!("statuses: {statuses:?}");
    assert_eq!(
        ejections(&sy).await,
        0.0,
        "a client stalling its own request body got a healthy backend ejected (statuses {statuses:?})"
    );
    assert!(
        !statuses.contains(&Some(504)),
        "a client's stalled body is answered as a backend timeout: {statuses:?}"
    );
}

/// Was (medium, outlier ejection by a client, and the fast path and the general path
/// disagree): a backend that refuses a large upload early (`413` + `Connection: close` right
/// after the head, body unread) is healthy. The fast path only reads the response after it has
/// relayed the whole body; the backend's close makes that relay fail with a RST, which is
/// `Failure::Lost`: the client gets `502 backend failed: Connection reset by peer` instead of
/// the backend's 413, and the failure is charged to the backend. Five uploads eject it. (The
/// general path relays the 413 when it wins the race.)
///
/// Bytes (service port, fast path), 6 times:
///   `POST /up HTTP/1.1\r\nHost: review.test\r\nContent-Length: 8388608\r\n\r\n` + 8 MiB of `a`
/// Expected: the client gets the 413 (or at least the backend is not charged). Actual: 502, and
/// `switchyard_backend_ejections_total` goes to 1.
#[tokio::test]
async fn an_early_answer_to_an_upload_reaches_the_client_and_charges_nothing() {
    let a = backend(Behaviour::Early413AndClose).await;
    let b = backend(Behaviour::Early413AndClose).await;
    let port = free_port();
    let (sy, _vhost) = start("review-413", port, &[a, b], "", "").await;
    const SIZE: usize = 8 * 1024 * 1024;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let c = TcpStream::connect(local(port)).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let writer = tokio::spawn(async move {
            let head =
                format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {SIZE}\r\n\r\n");
            let _ = w.write_all(head.as_bytes()).await;
            let _ = w.write_all(&vec![b'a'; SIZE]).await;
            w
        });
        let status = status_of_half(&mut r).await;
        writer.abort();
        statuses.push(status);
    }
    eprintln!("statuses: {statuses:?}");
    assert_eq!(
        ejections(&sy).await,
        0.0,
        "healthy backends answering 413 early were ejected (statuses {statuses:?})"
    );
    assert!(
        statuses.iter().all(|s| *s == Some(413)),
        "the backend's 413 was replaced: {statuses:?}"
    );
}

/// Was (medium, resource exhaustion): on the fast path nothing bounds the time a client
/// may take to send a request body. `relay_exact` reads the client without a deadline, and
/// the response timeout only starts after it. A client that sends the head and one byte of a
/// 10-byte body holds a backend connection (and an `active` slot, which `leastconn` reads)
/// forever, past the client header timeout and the response timeout; N such connections hold
/// N backend connections (thread-per-connection backends run out of workers).
///
/// Bytes (service port, fast path), then silence:
///   `POST /up HTTP/1.1\r\nHost: review.test\r\nContent-Length: 10\r\n\r\nx`
/// Expected: within the configured timeouts (here 1 s + 1 s) the proxy gives up on the body
/// (408 or a close) and closes the backend connection. Actual: the backend connection stays
/// open indefinitely (this test waits 6 s).
#[tokio::test]
async fn a_stalled_request_body_releases_its_backend_connection() {
    let (_sy, _c, mut upstream) = upload(
        "review-slowloris",
        "response_timeout = \"1s\"\nclient_header_timeout = \"1s\"",
        10,
        "x",
    )
    .await;
    // The backend reads what it was sent, and waits for the proxy to give up (EOF).
    let gave_up = tokio::time::timeout(Duration::from_secs(6), async {
        let mut chunk = [0u8; 4096];
        loop {
            match upstream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        gave_up.is_ok(),
        "6 s after a 1-byte body (client header and response timeouts 1 s), the backend \
         connection is still held for the stalled client"
    );
}

/// Was (low, the two codecs disagree on the request target): the fast path forwards
/// targets that hyper refuses (`<`, `>`, `` ` ``: 400 on the general path, 200 on the fast
/// path), and forwards a fragment that hyper strips (`/a?x#y` reaches the backend as
/// `/a?x#y` from the fast path, `/a?x` from the general path); routing on the fast path also
/// matches path prefixes against the fragment. The first request of a connection is judged
/// by one set of rules, the requests after a fallback by another.
///
/// Bytes: `GET /a<b HTTP/1.1\r\nHost: review.test\r\n\r\n` to the service port (fast path)
/// and to the vhost listener of an instance with the access log on (general path).
/// Expected: the same status from both. Actual: 200 (fast) vs 400 (general).
#[tokio::test]
async fn both_codecs_read_request_targets_alike() {
    let a = backend(Behaviour::ReadBodyThenOk).await;
    let fast_port = free_port();
    let (_fast, _) = start("review-target-fast", fast_port, &[a], "", "").await;
    let general_port = free_port();
    let (_general, general_vhost) = start(
        "review-target-general",
        general_port,
        &[a],
        "",
        "access_log = true",
    )
    .await;
    for target in ["/a<b", "/a>b", "/a`b"] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let mut answers = Vec::new();
        for entry in [local(fast_port), general_vhost] {
            let mut c = TcpStream::connect(entry).await.unwrap();
            c.write_all(request.as_bytes()).await.unwrap();
            answers.push(status_of(&mut c).await);
        }
        assert_eq!(
            answers[0], answers[1],
            "{target:?}: fast path {:?}, general path {:?}",
            answers[0], answers[1]
        );
    }
}

/// A backend answering each target with fixed bytes (after reading the request head).
async fn scripted_backend(answers: &'static [(&'static str, &'static [u8])]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_head(&mut s, &mut buf).await {
                    let target = head.split(' ').nth(1).unwrap_or("").to_string();
                    let answer = answers.iter().find(|(t, _)| *t == target).map_or(
                        &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
                        |a| a.1,
                    );
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Was (low, the two codecs disagree on a backend's response framing): the fast path's
/// response rules are looser than hyper's, so the same backend answer is a 502 on the general
/// path and relayed on the fast path:
/// - `HTTP/1.1 000 X\r\ncontent-length: 2\r\n\r\nok`: relayed to the client as status `000`
///   (and counted as an outlier *success*); hyper: 502 invalid status.
/// - `HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`:
///   relayed as chunked and the backend connection pooled, where RFC 9112 §6.1 says an
///   HTTP/1.0 message with Transfer-Encoding has faulty framing and the connection must close;
///   hyper: 502.
/// - `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 4\r\nok\r\n0\r\n\r\n` (garbage after
///   the chunk size, taken for an extension) and `...\r\n\r\n2\nok\r\n0\nX: y\n\n` (bare LF
///   chunk lines): relayed verbatim to the client by the `Chunked` scanner; hyper refuses them.
///
/// Expected: the same status on both paths for each. Actual: 200/000 (fast) vs 502 or nothing
/// (general).
#[tokio::test]
async fn both_codecs_read_response_framing_alike() {
    const ANSWERS: &[(&str, &[u8])] = &[
        ("/s000", b"HTTP/1.1 000 X\r\ncontent-length: 2\r\n\r\nok"),
        (
            "/h10te",
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        (
            "/chunk-size-garbage",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 4\r\nok\r\n0\r\n\r\n",
        ),
        (
            "/chunk-bare-lf",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\nX: y\n\n",
        ),
    ];
    let a = scripted_backend(ANSWERS).await;
    let fast_port = free_port();
    let (_fast, _) = start("review-resp-fast", fast_port, &[a], "", "").await;
    let general_port = free_port();
    let (_general, general_vhost) = start(
        "review-resp-general",
        general_port,
        &[a],
        "",
        "access_log = true",
    )
    .await;
    let mut differ = Vec::new();
    for (target, _) in ANSWERS {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        let mut answers = Vec::new();
        for entry in [local(fast_port), general_vhost] {
            let mut c = TcpStream::connect(entry).await.unwrap();
            c.write_all(request.as_bytes()).await.unwrap();
            answers.push(status_of(&mut c).await);
        }
        if answers[0] != answers[1] {
            differ.push(format!(
                "{target}: fast {:?}, general {:?}",
                answers[0], answers[1]
            ));
        }
    }
    assert!(differ.is_empty(), "{differ:#?}");
}

/// Review finding (access log): a Host with spaces could write fields of its own into the
/// access log's text line (`host=x client=203.0.113.9:4444 … path=/forged`). It is refused
/// (400), and logged quoted, so the line's own fields stay the only ones.
#[tokio::test]
async fn a_host_with_spaces_cannot_forge_access_log_fields() {
    let a = backend(Behaviour::ReadBodyThenOk).await;
    let port = free_port();
    let (sy, vhost) = start("host-log", port, &[a], "", "access_log = true").await;
    let mut c = TcpStream::connect(vhost).await.unwrap();
    c.write_all(b"GET /real HTTP/1.1\r\nHost: x client=203.0.113.9:4444 path=/forged\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status_of(&mut c).await, Some(400));
    let line = wait_for("the request logged", || async {
        sy.log_lines("switchyard::access")
            .into_iter()
            .find(|l| l.contains("/real"))
    })
    .await;
    assert!(
        line.contains(r#"host="x client=203.0.113.9:4444 path=/forged""#),
        "the Host is quoted: {line}"
    );
    assert!(line.contains("path=/real"), "{line}");
}

/// Review finding (interim answers during an upload): a backend that sends `103 Early Hints`
/// (or an unasked `100 Continue`) before it reads the request body was taken to have answered
/// early: the body stopped, and the proxy waited for a final answer while the backend waited
/// for the rest of the body, until the response timeout (a 504 charged to the backend). The
/// interim answer is now read past and the body goes on; the final answer reaches the client.
#[tokio::test]
async fn an_interim_answer_before_the_body_is_read_does_not_cut_the_body() {
    let (_sy, mut c, mut s) = upload("review-103", "response_timeout = \"30s\"", 10, "first").await;
    // The backend: the head, then 103 before reading any of the body.
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).await.unwrap();
    assert!(head.starts_with("POST /up"), "{head}");
    s.write_all(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n")
        .await
        .unwrap();
    // A moment for the proxy to see the interim answer while it still relays the body (the
    // code as reviewed stopped the body here, and passed the 103 on at once: then it ends
    // the wait early). Either way the test then goes on the same.
    let mut early = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_millis(300), c.peek(&mut early)).await;
    c.write_all(b"-rest").await.unwrap();
    // All ten bytes reach the backend, which then answers.
    let body = tokio::time::timeout(DEADLINE, async {
        while buf.len() < 10 {
            assert!(more(&mut s, &mut buf).await, "the body was cut: {buf:?}");
        }
        buf.clone()
    })
    .await
    .expect("the rest of the body never came");
    assert_eq!(body, b"first-rest");
    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while !answer.ends_with(b"ok") {
            let mut chunk = [0u8; 1024];
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The backend is still watched after an interim answer: a final early answer behind it (here
/// in the same write) cuts the upload and reaches the client at once, and the connection is
/// not reused.
#[tokio::test]
async fn an_early_answer_after_an_interim_one_still_cuts_the_upload() {
    let (_sy, c, mut s) = upload("review-103-413", "", 64 * 1024 * 1024, "first").await;
    let mut buf = Vec::new();
    read_head(&mut s, &mut buf).await.unwrap();
    s.write_all(
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
          HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    // The client goes on uploading (it has 64 MiB to send): the 413 comes all the same.
    let (mut r, uploading) = keep_uploading(c);
    assert_eq!(status_of_half(&mut r).await, Some(413));
    uploading.abort();
}

/// The status of the answer read from a connection's read half (its write half uploading).
async fn status_of_half(r: &mut tokio::net::tcp::OwnedReadHalf) -> Option<u16> {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return String::from_utf8_lossy(&buf[..end])
                .get(9..12)
                .and_then(|s| s.parse().ok());
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(DEADLINE, r.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// A backend that takes the head and then neither reads the body nor answers: each write of
/// the body to it is bounded by the response timeout (504, the backend's fault), where it
/// held the client and the backend connection until the backend's own timeout.
#[tokio::test]
async fn a_backend_that_stops_taking_the_body_times_out() {
    // The backend's end is held, never read from.
    let (_sy, c, _held) = upload(
        "review-stuck-upload",
        "response_timeout = \"1s\"",
        256 * 1024 * 1024,
        "",
    )
    .await;
    let (mut r, uploading) = keep_uploading(c);
    assert_eq!(status_of_half(&mut r).await, Some(504));
    uploading.abort();
}

/// How a client sends the rest of its body, in `a_close_on_an_unfinished_upload_...`.
#[derive(Debug, Clone, Copy)]
enum Rest {
    /// Never.
    Never,
    /// As fast as it can, until the answer.
    Streamed,
    /// A piece every 300 ms.
    Dripped,
}

/// Who is charged when a backend closes an upload before it is whole, on both paths a body
/// takes (the fast path, by Content-Length, and the general one, chunked):
/// - after the client has been quiet for 1.5 s: the backend timed the client out (408, nothing
///   charged);
/// - at once, the client quiet or streaming: the backend's failure (502, a `5xx` of the
///   backend's), as the client had not yet been slow;
/// - after 2 s of a client dripping its body: a close the client's pace may have caused, as a
///   backend's bound on an upload's whole time or rate does (502, nothing charged: a client
///   sending a byte every so often must not get a backend ejected).
#[tokio::test]
async fn a_close_on_an_unfinished_upload_is_charged_only_if_the_client_was_never_slow() {
    let cases = [
        (Duration::from_millis(1500), Rest::Never, 408, 0.0),
        (Duration::ZERO, Rest::Never, 502, 1.0),
        (Duration::ZERO, Rest::Streamed, 502, 1.0),
        (Duration::from_secs(2), Rest::Dripped, 502, 0.0),
    ];
    let framings = [
        ("Content-Length: 1073741824", "hello", b"a".as_slice()),
        (
            "Transfer-Encoding: chunked",
            "5\r\nhello\r\n",
            b"1\r\na\r\n".as_slice(),
        ),
    ];
    for (close_after, rest, want, charged) in cases {
        for (framing, first, piece) in framings {
            let a = backend(Behaviour::CloseAfter(close_after)).await;
            let port = free_port();
            let (sy, _vhost) = start("review-quiet", port, &[a], "", "").await;
            let status = post(port, (framing, first), piece, rest).await;
            let fives = fives(&sy).await;
            // What is charged to no backend is counted as the client's, with its reason.
            let reason = match want {
                408 => "stalled_body",
                _ => "slow_upload",
            };
            let clients = sy
                .metric(
                    "switchyard_http_client_failures_total",
                    &[&format!("reason=\"{reason}\"")],
                )
                .await;
            assert_eq!(
                (status, fives, clients),
                (Some(want), charged, 1.0 - charged),
                "{framing}, backend closing after {close_after:?}, the rest {rest:?}"
            );
        }
    }
}

/// A client that sends its body slowly for 1.5 s, then as fast as it can, to a backend that
/// takes the slow part and then hangs, reading no more: the proxy is left holding body the
/// backend will not take, and the timeout (3 s) is the backend's failure (504, charged)
/// however slow the client was before, on both paths a body takes.
#[tokio::test]
async fn a_backend_that_stops_taking_a_once_slow_upload_is_charged() {
    let kib = [b'a'; 1024];
    let chunk = [b"400\r\n".as_slice(), &kib, b"\r\n"].concat();
    let framings = [
        (
            "Content-Length: 1073741824",
            "hello",
            b"a".as_slice(),
            kib.to_vec(),
        ),
        (
            "Transfer-Encoding: chunked",
            "5\r\nhello\r\n",
            b"1\r\na\r\n".as_slice(),
            chunk,
        ),
    ];
    for (framing, first, piece, fast) in framings {
        let a = backend(Behaviour::StopReadingAfter(Duration::from_millis(1500))).await;
        let port = free_port();
        let proxy = "response_timeout = \"3s\"";
        let (sy, _vhost) = start("review-hung", port, &[a], proxy, "").await;
        let mut c = TcpStream::connect(local(port)).await.unwrap();
        let head = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\n{framing}\r\n\r\n{first}");
        c.write_all(head.as_bytes()).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let uploading = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                w.write_all(piece).await.unwrap();
            }
            let pieces = fast.repeat(64);
            while w.write_all(&pieces).await.is_ok() {}
            std::future::pending::<()>().await;
            drop(w);
        });
        let status = status_of_half(&mut r).await;
        uploading.abort();
        let fives = fives(&sy).await;
        assert_eq!((status, fives), (Some(504), 1.0), "{framing}");
    }
}

/// A backend that answers `500` to an upload before it is whole, as some answer a body read
/// timeout: after 1.5 s of a client dripping its body, the client's pace may be why, and a
/// dozen such answers eject no backend (counted as `slow_upload`); the same answer after
/// 200 ms to a client that sent its head and then nothing (not slow yet) is the backend's, and
/// ejects one. Both paths a body takes.
#[tokio::test]
async fn a_5xx_answered_to_a_slow_upload_ejects_no_backend() {
    let framings = [
        ("Content-Length: 1073741824", b"a".as_slice()),
        ("Transfer-Encoding: chunked", b"1\r\na\r\n".as_slice()),
    ];
    let cases = [
        (Duration::from_millis(1500), Rest::Dripped, 0.0),
        (Duration::from_millis(200), Rest::Never, 1.0),
    ];
    for (answer_after, rest, ejected) in cases {
        for (framing, piece) in framings {
            let a = backend(Behaviour::ErrorAfter(answer_after)).await;
            let b = backend(Behaviour::ErrorAfter(answer_after)).await;
            let port = free_port();
            let (sy, _vhost) = start("review-slow-500", port, &[a, b], "", "").await;
            for status in twelve_uploads(port, framing, piece, rest).await {
                assert_eq!(status, Some(500), "{framing}, {rest:?}");
            }
            assert_eq!(
                (ejections(&sy).await.min(1.0), slow_uploads(&sy).await),
                (ejected, 12.0 * (1.0 - ejected)),
                "{framing}, answered after {answer_after:?}, the rest {rest:?}"
            );
        }
    }
}

/// A `POST /up` to `port`: its head with `framing` and the body's `first` bytes, then the rest
/// as `rest` says (in `piece`s), the write half held until the answer (dropping it would end the
/// body); the answer's status.
async fn post(
    port: u16,
    (framing, first): (&'static str, &'static str),
    piece: &'static [u8],
    rest: Rest,
) -> Option<u16> {
    let mut c = TcpStream::connect(local(port)).await.unwrap();
    let head = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\n{framing}\r\n\r\n{first}");
    c.write_all(head.as_bytes()).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let uploading = tokio::spawn(async move {
        match rest {
            Rest::Never => {}
            Rest::Streamed => {
                let pieces = piece.repeat(64 * 1024 / piece.len());
                while w.write_all(&pieces).await.is_ok() {}
            }
            Rest::Dripped => loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if w.write_all(piece).await.is_err() {
                    break;
                }
            },
        }
        std::future::pending::<()>().await;
        drop(w);
    });
    let status = status_of_half(&mut r).await;
    uploading.abort();
    status
}

/// Twelve uploads at once to `port` (six a backend, past the five in a row that eject one),
/// each a head with `framing`, then `piece` every 300 ms or nothing (`rest`); their statuses.
async fn twelve_uploads(
    port: u16,
    framing: &'static str,
    piece: &'static [u8],
    rest: Rest,
) -> Vec<Option<u16>> {
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(tokio::spawn(post(port, (framing, ""), piece, rest)));
    }
    let mut statuses = Vec::new();
    for c in clients {
        statuses.push(c.await.unwrap());
    }
    statuses
}

async fn slow_uploads(sy: &Switchyard) -> f64 {
    sy.metric(
        "switchyard_http_client_failures_total",
        &["reason=\"slow_upload\""],
    )
    .await
}

/// An HTTP/2 backend (h2c, prior knowledge) that reads a request's body for `reading`, then
/// answers `500`.
async fn h2c_erroring_after(reading: Duration) -> SocketAddr {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    let mut body = req.into_body();
                    let more = async { while let Some(Ok(_)) = body.frame().await {} };
                    let _ = tokio::time::timeout(reading, more).await;
                    let mut answer =
                        hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
                    *answer.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                    Ok::<_, std::convert::Infallible>(answer)
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// As `a_5xx_answered_to_a_slow_upload_ejects_no_backend`, to an app whose backends speak
/// HTTP/2 (`SWITCHYARD_0_UPSTREAM=h2c`): a 500 after 1.5 s of dripping clients ejects none; the
/// same after 200 ms to clients that sent their head and nothing more ejects one.
#[tokio::test]
async fn a_5xx_from_an_http2_backend_to_a_slow_upload_ejects_no_backend() {
    let cases = [
        (Duration::from_millis(1500), Rest::Dripped, 0.0),
        (Duration::from_millis(200), Rest::Never, 1.0),
    ];
    for (answer_after, rest, ejected) in cases {
        let a = h2c_erroring_after(answer_after).await;
        let b = h2c_erroring_after(answer_after).await;
        let port = free_port();
        let labels = json!({
            "HAPROXY_0_MODE": "http",
            "HAPROXY_0_VHOST": HOST,
            "SWITCHYARD_0_UPSTREAM": "h2c",
        });
        let (sy, _) = start_labelled("review-h2-500", (port, labels), &[a, b], "", "").await;
        let chunked = "Transfer-Encoding: chunked";
        for status in twelve_uploads(port, chunked, b"1\r\na\r\n", rest).await {
            assert_eq!(status, Some(500), "{rest:?}");
        }
        assert_eq!(
            (ejections(&sy).await.min(1.0), slow_uploads(&sy).await),
            (ejected, 12.0 * (1.0 - ejected)),
            "answered after {answer_after:?}, the rest {rest:?}"
        );
    }
}
