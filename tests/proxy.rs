//! The data plane end to end, driven by the file source: TCP and HTTP service ports, keep-alive
//! and pooling, fall-through, draining, listener changes, SIGTERM.

mod support;

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn file_setup(name: &str, apps: Vec<Value>, extra: &str) -> (Switchyard, PathBuf) {
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    write_apps(&file, apps);
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n\
         [proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\ndrain_timeout = \"1s\"\n{extra}",
        file.display().to_string()
    );
    (Switchyard::start(name, &toml), file)
}

fn http_app(id: &str, port: u16, backends: &[&Backend]) -> Value {
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, b)| task(id, &format!("{id}.{i}"), b.port()))
        .collect();
    app(id, port, json!({"HAPROXY_0_MODE": "http"}), tasks)
}

fn tcp_app(id: &str, port: u16, ports: &[u16], labels: Value) -> Value {
    let tasks = ports
        .iter()
        .enumerate()
        .map(|(i, p)| task(id, &format!("{id}.{i}"), *p))
        .collect();
    app(id, port, labels, tasks)
}

async fn echo_roundtrip(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    stream.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    assert_eq!(buf, msg);
    Ok(())
}

#[tokio::test]
async fn editing_the_file_changes_routing_live_and_bad_json_keeps_the_table() {
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    let (sy, file) = file_setup("file-edit", vec![http_app("/web", port, &[&b1])], "");
    sy.wait_routes("initial", |r| backends(r, port) == vec![b1.addr])
        .await;
    assert_eq!(sy.get("/readyz").await.0, 200);
    assert_eq!(answers(port, 3).await, vec!["one"]);

    write_apps(&file, vec![http_app("/web", port, &[&b1, &b2])]);
    sy.wait_routes("scaled", |r| backends(r, port).len() == 2)
        .await;
    assert_eq!(answers(port, 4).await, vec!["one", "two"]);

    std::fs::write(&file, "{ \"apps\": [ {\"id\": ").unwrap();
    wait_for("error logged", || async {
        (!sy.log_lines("keeping the last good state").is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        backends(&sy.routes().await, port).len(),
        2,
        "a broken file replaces nothing"
    );
    assert_eq!(answers(port, 4).await, vec!["one", "two"]);
    assert!(
        sy.metric("switchyard_rejected_inputs_total", &["kind=\"file\""])
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn http_mode_keeps_client_and_upstream_connections_alive() {
    let b1 = Backend::start("one").await;
    let port = free_port();
    let (sy, _file) = file_setup("keepalive", vec![http_app("/web", port, &[&b1])], "");
    sy.wait_routes("initial", |r| has_service(r, port)).await;

    let stream = TcpStream::connect(local(port)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..20 {
        let req = hyper::Request::get(if i == 0 { "/echo-headers" } else { "/" })
            .header("host", "web.example")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "hop-by-hop")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender
            .send_request(req)
            .await
            .expect("same client connection keeps working");
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body).to_string();
        if i == 0 {
            assert!(
                body.contains("\"x-forwarded-for\": \"127.0.0.1\""),
                "{body}"
            );
            assert!(body.contains("\"host\": \"web.example\""), "{body}");
            assert!(
                !body.contains("x-secret"),
                "headers named in Connection are hop-by-hop: {body}"
            );
        } else {
            assert_eq!(body, "one");
        }
    }
    assert_eq!(
        b1.connections.load(Ordering::Relaxed),
        1,
        "one pooled upstream connection served all"
    );
    assert_eq!(
        sy.metric("switchyard_http_responses_total", &["class=\"2xx\""])
            .await,
        20.0
    );
    // HTTP mode counts body bytes: 19 answers of "one" plus the echoed headers.
    let bytes_out = sy
        .metric("switchyard_backend_bytes_out_total", &["/web:0"])
        .await;
    assert!(bytes_out > 57.0, "{bytes_out}");
}

#[tokio::test]
async fn a_failed_connect_falls_through_to_the_next_backend() {
    let b1 = Backend::start("one").await;
    let dead = free_port(); // nothing listens here
    let (http_port, tcp_port) = (free_port(), free_port());
    let apps = vec![
        tcp_app(
            "/h",
            http_port,
            &[dead, b1.port()],
            json!({"HAPROXY_0_MODE": "http"}),
        ),
        tcp_app("/t", tcp_port, &[dead, b1.port()], json!({})),
    ];
    let (sy, _file) = file_setup("fallthrough", apps, "");
    sy.wait_routes("initial", |r| {
        backends(r, http_port).len() == 2 && backends(r, tcp_port).len() == 2
    })
    .await;
    for port in [http_port, tcp_port] {
        for _ in 0..6 {
            let (status, body) = http_get(local(port), "/").await.unwrap();
            assert_eq!((status, body.as_str()), (200, "one"), "port {port}");
        }
    }
    assert!(
        sy.metric(
            "switchyard_backend_connect_failures_total",
            &[&format!(":{dead}")]
        )
        .await
            >= 2.0
    );
}

#[tokio::test]
async fn no_backend_answers_503_in_http_and_closes_promptly_in_tcp() {
    let dead = free_port();
    let (http_port, tcp_port, none_port) = (free_port(), free_port(), free_port());
    let apps = vec![
        app(
            "/empty",
            http_port,
            json!({"HAPROXY_0_MODE": "http"}),
            vec![],
        ),
        tcp_app(
            "/dead",
            none_port,
            &[dead],
            json!({"HAPROXY_0_MODE": "http"}),
        ),
        app("/tcp", tcp_port, json!({}), vec![]),
    ];
    let (sy, _file) = file_setup("nobackend", apps, "");
    sy.wait_routes("initial", |r| {
        has_service(r, http_port) && has_service(r, tcp_port)
    })
    .await;
    let (status, body) = http_get(local(http_port), "/").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "no backend available\n"));
    let (status, _) = http_get(local(none_port), "/").await.unwrap();
    assert_eq!(status, 502);
    // TCP mode resets a client it has no backend for (tests/l4.rs pins the reset); on loopback
    // the reset can arrive before the connect is seen to complete, or at the first read.
    let closed = async {
        let mut stream = TcpStream::connect(local(tcp_port)).await?;
        let mut buf = [0u8; 1];
        stream.read(&mut buf).await
    };
    let closed = tokio::time::timeout(DEADLINE, closed)
        .await
        .expect("closed, not hung");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(sy.metric("switchyard_no_backend_total", &[]).await >= 3.0);
}

#[tokio::test]
async fn leastconn_avoids_the_busy_backend() {
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    let apps = vec![tcp_app(
        "/lc",
        port,
        &[b1.port(), b2.port()],
        json!({"HAPROXY_0_BALANCE": "leastconn"}),
    )];
    let (sy, _file) = file_setup("leastconn", apps, "");
    sy.wait_routes("initial", |r| backends(r, port).len() == 2)
        .await;
    // Hold one connection open: whichever backend it reached is now the busier one.
    let held = TcpStream::connect(local(port)).await.unwrap();
    let total_active = || async {
        let r = sy.routes().await;
        r["services"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["active"].as_u64().unwrap())
            .sum::<u64>()
    };
    wait_for("held connection counted", || async {
        (total_active().await == 1).then_some(())
    })
    .await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        let (_, body) = http_get(local(port), "/").await.unwrap();
        answers.push(body);
        // The closed connection is counted out asynchronously: wait, or the next pick sees a tie.
        wait_for("connection closed", || async {
            (total_active().await == 1).then_some(())
        })
        .await;
    }
    answers.sort();
    answers.dedup();
    assert_eq!(
        answers.len(),
        1,
        "every new connection went to the idle backend: {answers:?}"
    );
    drop(held);
}

#[tokio::test]
async fn removed_backends_drain_and_removed_ports_stop_accepting() {
    let (echo, _task) = echo_backend().await;
    let b2 = Backend::start("two").await;
    let (port, other) = (free_port(), free_port());
    let (sy, file) = file_setup(
        "drain",
        vec![
            tcp_app("/echo", port, &[echo.port()], json!({})),
            tcp_app("/o", other, &[b2.port()], json!({})),
        ],
        "",
    );
    sy.wait_routes("initial", |r| has_service(r, port)).await;
    let mut conn = TcpStream::connect(local(port)).await.unwrap();
    echo_roundtrip(&mut conn, b"before").await.unwrap();

    // The echo task goes away: the open connection keeps working while it drains ...
    write_apps(
        &file,
        vec![
            tcp_app("/echo", port, &[b2.port()], json!({})),
            tcp_app("/o", other, &[b2.port()], json!({})),
        ],
    );
    sy.wait_routes("echo removed", |r| backends(r, port) == vec![b2.addr])
        .await;
    echo_roundtrip(&mut conn, b"during drain").await.unwrap();
    // ... new connections go to the remaining task ...
    assert_eq!(answers(port, 2).await, vec!["two"]);
    // ... and the drained connection is closed once the drain timeout (1s) has passed.
    let mut buf = [0u8; 8];
    let closed = tokio::time::timeout(DEADLINE, conn.read(&mut buf))
        .await
        .expect("cut after drain timeout");
    assert!(matches!(closed, Ok(0) | Err(_)));

    // A removed service port stops accepting; a connection already open on it carries on.
    let mut held = TcpStream::connect(local(other)).await.unwrap();
    write_apps(&file, vec![tcp_app("/echo", port, &[b2.port()], json!({}))]);
    sy.wait_routes("port removed", |r| !has_service(r, other))
        .await;
    wait_for("stopped accepting", || async {
        TcpStream::connect(local(other))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(DEADLINE, held.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.ends_with("two"), "{reply}");
    assert!(sy.metric("switchyard_backend_bytes_in_total", &[]).await > 0.0);
    assert!(sy.metric("switchyard_backend_bytes_out_total", &[]).await > 0.0);
}

#[tokio::test]
async fn sigterm_stops_accepting_drains_and_exits_zero() {
    let (echo, _task) = echo_backend().await;
    let port = free_port();
    let (mut sy, _file) = file_setup(
        "sigterm",
        vec![tcp_app("/echo", port, &[echo.port()], json!({}))],
        "",
    );
    sy.wait_routes("initial", |r| has_service(r, port)).await;
    let mut conn = TcpStream::connect(local(port)).await.unwrap();
    echo_roundtrip(&mut conn, b"hello").await.unwrap();
    sy.signal("TERM");
    wait_for("stopped accepting", || async {
        TcpStream::connect(local(port)).await.is_err().then_some(())
    })
    .await;
    echo_roundtrip(&mut conn, b"still here").await.unwrap();
    assert!(sy.alive(), "waits for the open connection");
    drop(conn);
    let status = wait_for("exit", || {
        let s = sy.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_backend_answering_5xx_is_ejected_as_an_outlier() {
    // One backend answers 500 to everything.
    let bad = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad_port = bad.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = bad.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |_req: hyper::Request<hyper::body::Incoming>| async {
                        let mut r = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from("bad"),
                        ));
                        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let good = Backend::start("good").await;
    let port = free_port();
    let apps = vec![tcp_app(
        "/o",
        port,
        &[bad_port, good.port()],
        json!({"HAPROXY_0_MODE": "http"}),
    )];
    let (sy, _file) = file_setup("outlier", apps, "");
    sy.wait_routes("initial", |r| backends(r, port).len() == 2)
        .await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(http_get(local(port), "/").await.unwrap());
    }
    let bad_answers = answers.iter().filter(|(status, _)| *status == 500).count();
    assert_eq!(
        bad_answers, 5,
        "five 5xx in a row, then the backend is ejected: {answers:?}"
    );
    assert!(
        answers[20..]
            .iter()
            .all(|(status, body)| *status == 200 && body == "good")
    );
    assert_eq!(
        sy.metric(
            "switchyard_backend_ejections_total",
            &[&format!(":{bad_port}")]
        )
        .await,
        1.0
    );
}
