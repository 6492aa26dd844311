//! Slow and silent clients of switchyard's own listeners, the admin API and the relay: a
//! connection that sends nothing, a request head that drips, a keep-alive connection left idle,
//! a request body that stops, and a client that does not read its answer are all closed within
//! `header_timeout` / `idle_timeout` (short here); an event stream is not, however long it is
//! quiet.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use support::marathon::{Marathon, app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUTS: &str = "header_timeout = \"400ms\"\nidle_timeout = \"400ms\"\n";

/// Reads until the peer closes (EOF or reset) or `DEADLINE`: the bytes read, and whether it
/// closed.
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .is_ok();
    (got, closed)
}

/// Reads one answer's head (and `Content-Length` body) off a keep-alive connection.
async fn one_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// The four ways a client holds a connection without moving it along, each closed.
async fn slow_clients_are_closed(addr: SocketAddr, path: &str, body_path: &str) {
    // Nothing sent at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(
        until_closed(&mut silent).await.1,
        "a silent connection is closed"
    );

    // A request head that drips, a line at a time, each within the idle timeout.
    let mut drip = TcpStream::connect(addr).await.unwrap();
    drip.write_all(format!("GET {path} HTTP/1.1\r\n").as_bytes())
        .await
        .unwrap();
    let dripping = async {
        for i in 0..200 {
            if drip
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut byte = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), drip.read(&mut byte)).await
            {
                return true;
            }
        }
        false
    };
    assert!(dripping.await, "a dripping request head is closed");

    // A keep-alive connection left idle after one answer.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(one_answer(&mut idle).await.starts_with("HTTP/1.1 "));
    assert!(
        until_closed(&mut idle).await.1,
        "an idle keep-alive connection is closed"
    );

    // A request body that stops.
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(
        format!("POST {body_path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{{")
            .as_bytes(),
    )
    .await
    .unwrap();
    assert!(until_closed(&mut body).await.1, "a stopped body is closed");
}

/// A client that asks for many answers and reads none: closed before it has them all.
async fn a_client_that_does_not_read_is_closed(addr: SocketAddr, request: &str, count: usize) {
    a_client_that_does_not_read_is_closed_after(addr, "", request, count).await
}

/// As [`a_client_that_does_not_read_is_closed`], `first` (one request) sent before the others on
/// the connection.
async fn a_client_that_does_not_read_is_closed_after(
    addr: SocketAddr,
    first: &str,
    request: &str,
    count: usize,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let requests = first.to_string() + &request.repeat(count);
    let count = count + usize::from(!first.is_empty());
    let _ = stream.write_all(requests.as_bytes()).await;
    // Not reading, for ten times the idle timeout: the scenario, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (got, closed) = until_closed(&mut stream).await;
    let answers = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200")
        .count();
    assert!(closed, "closed");
    assert!(
        answers < count,
        "closed before all {count} answers: {answers}"
    );
}

#[tokio::test]
async fn the_admin_api_closes_slow_and_silent_clients() {
    let sy = Switchyard::start_with_admin(
        "slow-admin",
        "[discovery]\nmarathon = [\"http://127.0.0.1:1\"]\n",
        TIMEOUTS,
    );
    wait_for("admin up", || async {
        http_get(sy.admin, "/healthz").await.ok()
    })
    .await;
    slow_clients_are_closed(sy.admin, "/healthz", "/v1/plan").await;
    a_client_that_does_not_read_is_closed(
        sy.admin,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        4000,
    )
    .await;
    assert!(sy.log_lines("panicked").is_empty());
}

/// A request body that drips a byte now and then (each within the idle timeout) is cut once it
/// has taken the idle timeout as a whole; while it holds `POST /v1/plan`, a second plan is told
/// to come back (one is computed at a time), and once it is cut plans are served again.
#[tokio::test]
async fn the_admin_api_cuts_a_dripping_body_and_computes_one_plan_at_a_time() {
    let sy = Switchyard::start_with_admin(
        "slow-admin-body",
        "[discovery]\nmarathon = [\"http://127.0.0.1:1\"]\n",
        TIMEOUTS,
    );
    wait_for("admin up", || async {
        http_get(sy.admin, "/healthz").await.ok()
    })
    .await;
    let mut drip = TcpStream::connect(sy.admin).await.unwrap();
    drip.write_all(b"POST /v1/plan HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    // The dripping plan holds the one plan slot: another is refused with a Retry-After.
    let (status, headers, _) = http_request(sy.admin, "POST", "/v1/plan", &[], "[]").await;
    assert_eq!(status, 429);
    assert!(headers.iter().any(|(k, v)| k == "retry-after" && v == "1"));
    let mut sent = 1;
    let mut buf = [0u8; 1024];
    let cut = loop {
        if sent >= 1000 {
            break false;
        }
        if drip.write_all(b" ").await.is_err() {
            break true;
        }
        sent += 1;
        match tokio::time::timeout(Duration::from_millis(100), drip.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(_)) => {} // an error answer before the close
            Err(_) => {}    // nothing yet: drip on
        }
    };
    assert!(
        cut,
        "a body dripping for ever is cut ({sent} of 1000 bytes sent)"
    );
    wait_for("plans served again", || async {
        let (status, _, _) = http_request(sy.admin, "POST", "/v1/plan", &[], "[]").await;
        (status != 429).then_some(())
    })
    .await;
    assert!(sy.log_lines("panicked").is_empty());
}

#[tokio::test]
async fn the_relay_closes_slow_and_silent_clients_but_not_a_quiet_event_stream() {
    let b1 = Backend::start("one").await;
    let marathon = Marathon::start().await;
    let apps: Vec<_> = (0..200)
        .map(|i| {
            let id = format!("/a{i}");
            let tasks = vec![task(&id, &format!("a{i}.1"), b1.port())];
            app(&id, 10000 + i, json!({}), tasks)
        })
        .collect();
    marathon.set_apps(apps);
    let relay_port = free_port();
    let _sy = Switchyard::start(
        "slow-relay",
        &format!(
            "[discovery]\nmarathon = [{:?}]\nbackoff_initial = \"50ms\"\n[proxy]\ngroup = \"none\"\n\
             [relay]\nlisten = \"127.0.0.1:{relay_port}\"\n{TIMEOUTS}",
            marathon.url()
        ),
    );
    let addr: SocketAddr = format!("127.0.0.1:{relay_port}").parse().unwrap();
    wait_for("relay synced", || async {
        let (status, _) = http_get(addr, "/v2/apps").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    // An event stream, opened first and quiet through everything below.
    let mut events = TcpStream::connect(addr).await.unwrap();
    events
        .write_all(
            b"GET /v2/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = events.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    slow_clients_are_closed(addr, "/ping", "/ping").await;
    a_client_that_does_not_read_is_closed(
        addr,
        "GET /v2/apps?embed=apps.tasks HTTP/1.1\r\nHost: localhost\r\n\r\n",
        1000,
    )
    .await;
    // An answer to `HEAD /v2/events` streams nothing: the connection's later answers are
    // still closed when not read.
    a_client_that_does_not_read_is_closed_after(
        addr,
        "HEAD /v2/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        "GET /v2/apps?embed=apps.tasks HTTP/1.1\r\nHost: localhost\r\n\r\n",
        1000,
    )
    .await;

    // The stream is still open, and carries the next change.
    marathon.update_app("/a7", |a| a["labels"] = json!({"CHANGED": "yes"}));
    marathon.send_event(
        json!({"eventType": "api_post_event", "timestamp": "2026-01-01T00:00:00.000Z",
        "appDefinition": {"id": "/a7"}}),
    );
    let mut seen = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let n = events.read(&mut head).await.unwrap();
            assert!(n > 0, "the event stream was closed");
            seen.extend_from_slice(&head[..n]);
            if String::from_utf8_lossy(&seen).contains("/a7") {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "the change reached the quiet stream");
}

/// Sends one request on a fresh connection and reads until the server closes it: the answer
/// (empty if the connection was closed unanswered).
async fn ask_once(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await;
    let (bytes, closed) = tokio::time::timeout(Duration::from_secs(10), until_closed(&mut stream))
        .await
        .expect("closed within the wait");
    assert!(closed);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn the_admin_api_answers_only_probes_past_max_connections_then_closes_at_once() {
    // Timeouts far beyond the waits below: a close within them is the limit's, not a timeout's.
    let sy = Switchyard::start_with_admin(
        "admin-max-connections",
        "[discovery]\nmarathon = [\"http://127.0.0.1:1\"]\n",
        "header_timeout = \"1h\"\nidle_timeout = \"1h\"\nmax_connections = 2\n",
    );
    wait_for("admin up", || async {
        http_get(sy.admin, "/healthz").await.ok()
    })
    .await;
    assert_eq!(
        sy.metric("switchyard_admin_refused_connections_total", &[])
            .await,
        0.0
    );

    // Two idle connections hold both slots.
    let first = TcpStream::connect(sy.admin).await.unwrap();
    let mut second = TcpStream::connect(sy.admin).await.unwrap();
    // Past them a liveness probe is still answered, once, and the connection closed; anything
    // else gets 503.
    let probe = ask_once(sy.admin, "/healthz").await;
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
    let read = ask_once(sy.admin, "/v1/routes").await;
    assert!(read.starts_with("HTTP/1.1 503"), "{read}");

    // With the probe slots held too (by connections that send nothing: each is held up to the
    // probe slots' 2 s header timeout), one more is closed at once, unanswered. A stalled
    // machine could let those 2 s pass before the last connect: then try again.
    wait_for("a connection past every slot closed unanswered", || async {
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(TcpStream::connect(sy.admin).await.unwrap());
        }
        let answer = ask_once(sy.admin, "/healthz").await;
        drop(held);
        answer.is_empty().then_some(())
    })
    .await;

    // The second still works: a slot is held, not the connection refused.
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(one_answer(&mut second).await.starts_with("HTTP/1.1 200"));

    // One closes: a new connection is served on a slot of its own (kept alive), and the
    // refused ones were counted.
    drop(first);
    wait_for("a freed slot serves a new connection", || async {
        let mut stream = TcpStream::connect(sy.admin).await.ok()?;
        stream
            .write_all(b"GET /v1/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        // A probe slot's answer says `connection: close`; a slot of its own keeps it alive.
        let answer = one_answer(&mut stream).await.to_ascii_lowercase();
        (answer.starts_with("http/1.1 200") && !answer.contains("connection: close")).then_some(())
    })
    .await;
    drop(second);
    // (Read once the slots are free: `/metrics` is not a probe.)
    assert!(
        sy.metric("switchyard_admin_refused_connections_total", &[])
            .await
            >= 1.0
    );
    assert!(
        sy.metric("switchyard_admin_probe_only_connections_total", &[])
            .await
            >= 2.0
    );
    assert!(sy.log_lines("panicked").is_empty());
}
