//! HTTP/2 clients in front of HTTP/1.1 backends, end to end on loopback: each stream goes to a
//! backend over the pooled plain sockets the HTTP/1.1 fast path uses. Request bodies streamed
//! (chunked or by length), responses by length, chunked or to the close, HEAD, split cookies,
//! header rules, a backend that fails before or during its answer, pooled sockets reused across
//! streams and client connections, and many concurrent streams to one backend.

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use serde_json::{Value, json};
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

struct Edge {
    sy: Switchyard,
    http: SocketAddr,
}

/// `http`: more of the `[http]` section.
async fn edge(name: &str, apps: Vec<Value>, http_extra: &str) -> Edge {
    edge_with_admin(name, apps, http_extra, "").await
}

/// As [`edge`], with more of the `[admin]` section.
async fn edge_with_admin(name: &str, apps: Vec<Value>, http_extra: &str, admin: &str) -> Edge {
    edge_with_env(name, apps, http_extra, admin, &[]).await
}

/// As [`edge_with_admin`], with environment variables for the process (the `h2` crate's path:
/// `SWITCHYARD_H2_CODEC=0`).
async fn edge_with_env(
    name: &str,
    apps: Vec<Value>,
    http_extra: &str,
    admin: &str,
    env: &[(&str, &str)],
) -> Edge {
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    write_apps(&file, apps);
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         response_timeout = \"5s\"\n[runtime]\nworkers = 1\n\
         [http]\nlisten = [\"{http}\"]\nh2c = true\n{http_extra}\n",
        file.display().to_string()
    );
    let sy = Switchyard::start_with_env(name, &toml, admin, env);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    Edge { sy, http }
}

fn vhost_app(id: &str, host: &str, mut labels: Value, port: u16) -> Value {
    labels["HAPROXY_0_VHOST"] = json!(host);
    app(id, 0, labels, vec![task(id, &format!("{id}.0"), port)])
}

/// A request body the test feeds piece by piece.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

type Body2 = http_body_util::Either<http_body_util::Full<Bytes>, Fed>;
type Sender = hyper::client::conn::http2::SendRequest<Body2>;

async fn h2(addr: SocketAddr) -> Sender {
    h2c_client(addr).await
}

fn empty() -> Body2 {
    http_body_util::Either::Left(http_body_util::Full::new(Bytes::new()))
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Result<Bytes, String>,
}

async fn send(sender: &mut Sender, req: hyper::Request<Body2>) -> Answer {
    let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .unwrap()
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

async fn get(sender: &mut Sender, url: &str) -> Answer {
    let req = hyper::Request::get(url).body(empty()).unwrap();
    send(sender, req).await
}

/// An HTTP/1.1 backend (hyper) that answers with what it received: method, target, the
/// framing and cookie fields, then the body; `/big` answers 1 MiB. Counts its connections.
async fn mirror() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let field = |name: &str| {
                            req.headers()
                                .get_all(name)
                                .iter()
                                .map(|v| v.to_str().unwrap().to_string())
                                .collect::<Vec<_>>()
                                .join("|")
                        };
                        let head = format!(
                            "{} {} te={} cl={} cookie={} env={}\n",
                            req.method(),
                            req.uri(),
                            field("transfer-encoding"),
                            field("content-length"),
                            field("cookie"),
                            field("x-env"),
                        );
                        if req.uri().path() == "/fwd" {
                            let fwd = format!(
                                "host={} xff={} xfp={} xfport={} xfh={} rid={}",
                                field("host"),
                                field("x-forwarded-for"),
                                field("x-forwarded-proto"),
                                field("x-forwarded-port"),
                                field("x-forwarded-host"),
                                field("x-request-id").len(),
                            );
                            return Ok(hyper::Response::new(http_body_util::Full::new(
                                Bytes::from(fwd),
                            )));
                        }
                        let big = req.uri().path() == "/big";
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut out = head.into_bytes();
                        if big {
                            out = vec![b'x'; 1 << 20];
                        } else {
                            out.extend_from_slice(&body);
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from(out)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

/// A backend that reads a request head and answers with `answer` (then keeps the connection
/// open, or closes it when `close`), whatever was asked.
async fn scripted(answer: &'static [&'static [u8]], close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    for piece in answer {
                        if stream.write_all(piece).await.is_err() {
                            return;
                        }
                        stream.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn request_bodies_stream_to_an_http1_backend_chunked_or_by_length() {
    let (backend, _) = mirror().await;
    let e = edge(
        "h2-bodies",
        vec![vhost_app(
            "/m",
            "m.example.com",
            json!({"SWITCHYARD_0_REQUEST_HEADER_SET_X-Env": "prod"}),
            backend.port(),
        )],
        "access_log = true",
    )
    .await;
    let mut sender = h2(e.http).await;

    // No length: chunked to the backend, fed piece by piece while the stream is open.
    let (tx, rx) = mpsc::channel(1);
    let req = hyper::Request::post("http://m.example.com/upload?x=1")
        .body(http_body_util::Either::Right(Fed(rx)))
        .unwrap();
    let mut sending = sender.clone();
    let answer = tokio::spawn(async move { send(&mut sending, req).await });
    for piece in ["first,", "second,", "third"] {
        tx.send(Bytes::from(piece)).await.unwrap();
    }
    drop(tx);
    let answer = answer.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body.unwrap(),
        "POST /upload?x=1 te=chunked cl= cookie= env=prod\nfirst,second,third"
    );

    // `Expect: 100-continue` is not passed on: the body goes on as it comes, and a backend
    // asked to would answer 100 first, to be waited past while it waits for the body.
    let (tx, rx) = mpsc::channel(1);
    let req = hyper::Request::post("http://m.example.com/expect")
        .header("expect", "100-continue")
        .body(http_body_util::Either::Right(Fed(rx)))
        .unwrap();
    let mut sending = sender.clone();
    let answer = tokio::spawn(async move { send(&mut sending, req).await });
    for piece in ["first,", "second"] {
        tx.send(Bytes::from(piece)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tx);
    let answer = answer.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body.unwrap(),
        "POST /expect te=chunked cl= cookie= env=prod\nfirst,second"
    );

    // A Content-Length: forwarded as it is, the body by length.
    let req = hyper::Request::put("http://m.example.com/put")
        .header("content-length", "5")
        .body(http_body_util::Either::Left(http_body_util::Full::new(
            Bytes::from("hello"),
        )))
        .unwrap();
    let answer = send(&mut sender, req).await;
    assert_eq!(
        answer.body.unwrap(),
        "PUT /put te= cl=5 cookie= env=prod\nhello"
    );

    // A bodiless POST says so with a zero length; HTTP/2's split cookies arrive joined, the
    // admin dashboard's session cookie left out.
    let req = hyper::Request::post("http://m.example.com/empty")
        .header("cookie", "a=1")
        .header("cookie", "switchyard_session=0123abcd")
        .header("cookie", "b=2")
        .body(empty())
        .unwrap();
    let answer = send(&mut sender, req).await;
    assert_eq!(
        answer.body.unwrap(),
        "POST /empty te= cl=0 cookie=a=1; b=2 env=prod\n"
    );

    // The forwarding fields: the client's X-Forwarded-* replaced (it is not a trusted proxy),
    // Host from :authority, a fresh request id.
    let req = hyper::Request::get("http://m.example.com/fwd")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example.com")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-port", "4443")
        .body(empty())
        .unwrap();
    assert_eq!(
        send(&mut sender, req).await.body.unwrap(),
        format!(
            "host=m.example.com xff=127.0.0.1 xfp=http xfport={} xfh=m.example.com rid=32",
            e.http.port()
        )
    );

    // A 1 MiB answer arrives whole through the stream's flow control.
    let answer = get(&mut sender, "http://m.example.com/big").await;
    assert_eq!(answer.body.unwrap().len(), 1 << 20);
    assert_eq!(answer.headers["content-length"], "1048576");

    // The access log has the HTTP/2 requests.
    wait_for("access log", || async {
        (!e.sy.log_lines("/upload").is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn backend_sockets_are_pooled_across_streams_and_client_connections() {
    let (backend, connections) = mirror().await;
    let e = edge(
        "h2-pool",
        vec![vhost_app("/m", "m.example.com", json!({}), backend.port())],
        "",
    )
    .await;
    let mut sender = h2(e.http).await;
    for i in 0..20 {
        let answer = get(&mut sender, &format!("http://m.example.com/{i}")).await;
        assert_eq!(answer.status, 200);
        assert!(
            answer
                .body
                .unwrap()
                .starts_with(format!("GET /{i} ").as_bytes())
        );
    }
    assert_eq!(connections.load(Ordering::Relaxed), 1, "after GETs");
    // HEAD: the length it describes, no body, and the socket stays usable.
    let req = hyper::Request::head("http://m.example.com/head")
        .body(empty())
        .unwrap();
    let answer = send(&mut sender, req).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.unwrap().is_empty());
    assert!(answer.headers.contains_key("content-length"));
    assert_eq!(connections.load(Ordering::Relaxed), 1, "after HEAD");
    // Another client connection's streams take the same pooled socket.
    let mut other = h2(e.http).await;
    assert_eq!(
        get(&mut other, "http://m.example.com/other").await.status,
        200
    );
    assert_eq!(connections.load(Ordering::Relaxed), 1);
}

/// An HTTP/2 request's response time reaches its backend's fine latency buckets, as an
/// HTTP/1.1 request's does: the dashboard's history shows its p50, and a rollout's p99 gate
/// reads the same buckets (HTTP/2 requests once fed only the Prometheus histogram).
#[tokio::test]
async fn response_times_of_http2_requests_reach_the_backends_latency_buckets() {
    let (backend, _) = mirror().await;
    let e = edge_with_admin(
        "h2-latency",
        vec![vhost_app("/m", "m.example.com", json!({}), backend.port())],
        "",
        "history_interval = \"10ms\"",
    )
    .await;
    let sender = h2(e.http).await;
    wait_for("a p50 in the history after HTTP/2 requests", || async {
        let mut sender = sender.clone();
        assert_eq!(get(&mut sender, "http://m.example.com/").await.status, 200);
        e.sy.history_p50_ms().await.map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn concurrent_streams_to_one_backend_each_get_their_own_answer() {
    let (backend, connections) = mirror().await;
    let e = edge(
        "h2-concurrent",
        vec![vhost_app("/m", "m.example.com", json!({}), backend.port())],
        "",
    )
    .await;
    let sender = h2(e.http).await;
    let streams: Vec<_> = (0..64)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let answer = get(&mut sender, &format!("http://m.example.com/s{i}")).await;
                (i, answer.status, answer.body.unwrap())
            })
        })
        .collect();
    for stream in streams {
        let (i, status, body) = stream.await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.starts_with(format!("GET /s{i} ").as_bytes()),
            "{body:?}"
        );
    }
    let opened = connections.load(Ordering::Relaxed);
    assert!((1..=64).contains(&opened), "{opened}");
    // Once they are back in the pool, sequential streams open no more.
    let mut sender = sender;
    for _ in 0..10 {
        assert_eq!(get(&mut sender, "http://m.example.com/").await.status, 200);
    }
    assert_eq!(connections.load(Ordering::Relaxed), opened);
}

#[tokio::test]
async fn chunked_and_to_the_close_answers_are_relayed_with_hop_by_hop_fields_dropped() {
    let chunked = scripted(
        &[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x-hop\r\nX-Hop: 1\r\n\
              Keep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\n4\r\nWiki\r\n",
            b"5;ext=1\r\npedia\r\n",
            b"0\r\nX-Trailer: a\r\n\r\n",
        ],
        false,
    )
    .await;
    let to_close = scripted(
        &[
            b"HTTP/1.1 200 OK\r\nX-Kept: yes\r\n\r\nuntil",
            b" the close",
        ],
        true,
    )
    .await;
    let e = edge(
        "h2-framing",
        vec![
            vhost_app(
                "/c",
                "c.example.com",
                json!({"SWITCHYARD_0_RESPONSE_HEADER_SET_X-Frame-Options": "DENY"}),
                chunked.port(),
            ),
            vhost_app("/t", "t.example.com", json!({}), to_close.port()),
        ],
        "",
    )
    .await;
    let mut sender = h2(e.http).await;
    for _ in 0..2 {
        let answer = get(&mut sender, "http://c.example.com/").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body.unwrap(), "Wikipedia");
        assert_eq!(answer.headers["x-kept"], "yes");
        assert_eq!(answer.headers["x-frame-options"], "DENY");
        for gone in ["x-hop", "keep-alive", "transfer-encoding", "connection"] {
            assert!(!answer.headers.contains_key(gone), "{gone}");
        }
    }
    let answer = get(&mut sender, "http://t.example.com/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.unwrap(), "until the close");
}

#[tokio::test]
async fn a_backend_failing_before_its_answer_is_a_502_and_during_it_a_reset_stream() {
    let silent = scripted(&[], true).await;
    let cut = scripted(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"],
        true,
    )
    .await;
    let bad = scripted(
        &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx"],
        true,
    )
    .await;
    let e = edge(
        "h2-failures",
        vec![
            vhost_app("/s", "silent.example.com", json!({}), silent.port()),
            vhost_app("/c", "cut.example.com", json!({}), cut.port()),
            vhost_app("/b", "bad.example.com", json!({}), bad.port()),
        ],
        "",
    )
    .await;
    let mut sender = h2(e.http).await;
    let req = hyper::Request::post("http://silent.example.com/")
        .body(empty())
        .unwrap();
    assert_eq!(send(&mut sender, req).await.status, 502);
    assert_eq!(
        get(&mut sender, "http://silent.example.com/").await.status,
        502
    );
    // The head went out (or was still queued when the reset took it back): either way the
    // stream ends in a reset, never in a body that looks whole.
    let req = hyper::Request::get("http://cut.example.com/")
        .body(empty())
        .unwrap();
    match tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .unwrap()
    {
        Ok(resp) => {
            assert_eq!(resp.status(), 200);
            let body = tokio::time::timeout(DEADLINE, resp.into_body().collect()).await;
            assert!(body.unwrap().is_err(), "a cut body must not look whole");
        }
        Err(e) => assert!(format!("{e:?}").contains("Reset("), "{e:?}"),
    }
    assert_eq!(
        get(&mut sender, "http://bad.example.com/").await.status,
        502
    );
    // The connection outlives its streams' failures.
    let answer = get(&mut sender, "http://silent.example.com/").await;
    assert_eq!(answer.status, 502);
}

/// An HTTP/2 request without a body that a backend took and dropped is sent again to the
/// app's other backend, with the same head (its fields, and the forwarding fields once); one
/// with a body is not (the backend may have acted on it). Each kind of request has an app
/// of its own, with its own dropping backend, so that no drop of one counts towards another's
/// ejection (five in a row eject a backend, after which it is tried last).
#[tokio::test]
async fn a_dropped_bodiless_request_is_replayed_on_another_backend_with_the_same_head() {
    let (mirror, _) = mirror().await;
    let mut apps = Vec::new();
    let mut droppers = Vec::new();
    for name in ["fwd", "fields", "post"] {
        let (dropper, dropped) = heads_read(Then::Close).await;
        let id = format!("/{name}");
        let tasks = vec![
            task(&id, &format!("{name}.1"), dropper.port()),
            task(&id, &format!("{name}.2"), mirror.port()),
        ];
        let labels = json!({"HAPROXY_0_VHOST": format!("{name}.example.com")});
        apps.push(app(&id, 0, labels, tasks));
        droppers.push(dropped);
    }
    let e = edge("h2-replay", apps, "").await;
    let mut sender = h2(e.http).await;
    // Round robin over two backends: of any two requests in a row, one meets the dropper.
    // Four at most, short of an ejection.
    let fwd = format!(
        "host=fwd.example.com xff=127.0.0.1 xfp=http xfport={} xfh=fwd.example.com rid=32",
        e.http.port()
    );
    for _ in 0..4 {
        let answer = get(&mut sender, "http://fwd.example.com/fwd").await;
        assert_eq!(
            (answer.status, answer.body.unwrap()),
            (200, fwd.clone().into())
        );
    }
    assert!(
        droppers[0].load(Ordering::SeqCst) >= 1,
        "no /fwd was replayed"
    );
    for _ in 0..4 {
        let req = hyper::Request::get("http://fields.example.com/q?a=1")
            .header("x-env", "one")
            .header("x-env", "two")
            .body(empty())
            .unwrap();
        let answer = send(&mut sender, req).await;
        let want = "GET /q?a=1 te= cl= cookie= env=one|two\n";
        assert_eq!((answer.status, answer.body.unwrap()), (200, want.into()));
    }
    assert!(
        droppers[1].load(Ordering::SeqCst) >= 1,
        "no /q was replayed"
    );
    let mut met = 0;
    for _ in 0..4 {
        let before = droppers[2].load(Ordering::SeqCst);
        let req = hyper::Request::post("http://post.example.com/")
            .body(http_body_util::Either::Left(http_body_util::Full::new(
                Bytes::from_static(b"hello"),
            )))
            .unwrap();
        let status = send(&mut sender, req).await.status;
        let dropped = droppers[2].load(Ordering::SeqCst) > before;
        met += usize::from(dropped);
        // Not replayed: a 502 (the backend closed), never the other backend's 200.
        if dropped {
            assert_eq!(status, 502);
        } else {
            assert_eq!(status, 200);
        }
    }
    assert!(met >= 1, "no POST met the dropping backend");
}

/// A POST to `url` whose body the test feeds (`hello` first, the rest through the sender).
async fn upload(url: &str) -> (mpsc::Sender<Bytes>, hyper::Request<Body2>) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(Bytes::from("hello")).await.unwrap();
    let req = hyper::Request::post(url)
        .body(http_body_util::Either::Right(Fed(rx)))
        .unwrap();
    (tx, req)
}

/// The status of an [`upload`] to `url` whose body, after `hello`, never comes (`dripped`
/// false) or comes a byte every 300 ms; the body's sender is held until the answer.
async fn upload_status(mut sender: Sender, url: &'static str, dripped: bool) -> u16 {
    let (tx, req) = upload(url).await;
    let feeding = tokio::spawn(async move {
        if dripped {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if tx.send(Bytes::from("a")).await.is_err() {
                    break;
                }
            }
        }
        std::future::pending::<()>().await;
        drop(tx);
    });
    let status = send(&mut sender, req).await.status;
    feeding.abort();
    status
}

/// The `5xx` counted against the edge's backends: what was charged to them.
async fn fives(sy: &Switchyard) -> f64 {
    sy.metric("switchyard_http_responses_total", &["class=\"5xx\""])
        .await
}

/// As over HTTP/1.1 (`http_edges`): a backend that closes an upload after the client has
/// been quiet for 1.5 s timed the client out (408, nothing charged); one that closes it at
/// once fails on its own (502, a `5xx` of the backend's); one that closes it after 2 s of a
/// client dripping its body may have been made to by the client's pace (502, nothing charged).
#[tokio::test]
async fn a_close_on_an_unfinished_upload_is_charged_only_if_the_client_was_never_slow() {
    let cases = [
        (Duration::from_millis(1500), false, 408, 0.0),
        (Duration::ZERO, false, 502, 1.0),
        (Duration::from_secs(2), true, 502, 0.0),
    ];
    for (close_after, dripped, want, charged) in cases {
        let (backend, _) = heads_read(Then::CloseAfter(close_after)).await;
        let app = vhost_app("/quiet", "quiet.example.com", json!({}), backend.port());
        let e = edge("h2-quiet", vec![app], "").await;
        let sender = h2(e.http).await;
        let status = upload_status(sender, "http://quiet.example.com/up", dripped).await;
        let fives = fives(&e.sy).await;
        let reason = if want == 408 {
            "stalled_body"
        } else {
            "slow_upload"
        };
        let reason = format!("reason=\"{reason}\"");
        let clients =
            e.sy.metric("switchyard_http_client_failures_total", &[&reason])
                .await;
        assert_eq!(
            (status, fives, clients),
            (want, charged, 1.0 - charged),
            "backend closing after {close_after:?}, dripped: {dripped}"
        );
    }
}

/// As over HTTP/1.1 (`http_edges`): a client that sends its body slowly for 1.5 s, then as
/// fast as it can, to a backend that takes the slow part and then reads no more, leaves the
/// proxy holding body the backend will not take: the timeout (the edge's 5 s) is the
/// backend's (504, charged), however slow the client was before.
#[tokio::test]
async fn a_backend_that_stops_taking_a_once_slow_upload_is_charged() {
    let (backend, _) = heads_read(Then::StopReadingAfter(Duration::from_millis(1500))).await;
    let app = vhost_app("/hung", "hung.example.com", json!({}), backend.port());
    let e = edge("h2-hung", vec![app], "").await;
    let mut sender = h2(e.http).await;
    let (tx, req) = upload("http://hung.example.com/up").await;
    let feeding = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send(Bytes::from("a")).await.unwrap();
        }
        while tx.send(Bytes::from(vec![b'a'; 16 * 1024])).await.is_ok() {}
        std::future::pending::<()>().await;
        drop(tx);
    });
    let status = send(&mut sender, req).await.status;
    feeding.abort();
    assert_eq!((status, fives(&e.sy).await), (504, 1.0));
}

/// As over HTTP/1.1 (`http_edges`): a `500` a backend answers after 1.5 s of a client
/// dripping its body ejects no backend, however many (counted as `slow_upload`); the same
/// answer after 200 ms to a client that sent `hello` and then nothing ejects one.
#[tokio::test]
async fn a_5xx_answered_to_a_slow_upload_ejects_no_backend() {
    let cases = [
        (Duration::from_millis(1500), true, 0.0),
        (Duration::from_millis(200), false, 1.0),
    ];
    for (answer_after, dripped, ejected) in cases {
        let (a, _) = heads_read(Then::ErrorAfter(answer_after)).await;
        let (b, _) = heads_read(Then::ErrorAfter(answer_after)).await;
        let tasks = vec![
            task("/slow", "slow.1", a.port()),
            task("/slow", "slow.2", b.port()),
        ];
        let labels = json!({"HAPROXY_0_VHOST": "slow.example.com"});
        let e = edge("h2-slow-500", vec![app("/slow", 0, labels, tasks)], "").await;
        let sender = h2(e.http).await;
        let mut streams = Vec::new();
        // Twelve at once: six a backend, past the five in a row that eject one.
        for _ in 0..12 {
            let url = "http://slow.example.com/up";
            streams.push(tokio::spawn(upload_status(sender.clone(), url, dripped)));
        }
        for stream in streams {
            assert_eq!(stream.await.unwrap(), 500, "dripped: {dripped}");
        }
        let ejections =
            e.sy.metric("switchyard_backend_ejections_total", &["/slow"])
                .await;
        let slow =
            e.sy.metric(
                "switchyard_http_client_failures_total",
                &["reason=\"slow_upload\""],
            )
            .await;
        assert_eq!(
            (ejections.min(1.0), slow),
            (ejected, 12.0 * (1.0 - ejected)),
            "dripped: {dripped}"
        );
    }
}

/// CONNECT is refused over HTTP/2 as over HTTP/1 (405), before any backend is dialled: a
/// backend's 2xx to it would turn its pooled connection into a tunnel another client's request
/// could then be written into.
#[tokio::test]
async fn connect_is_refused_and_never_reaches_a_backend() {
    let (backend, connections) = mirror().await;
    let e = edge(
        "h2-connect",
        vec![vhost_app("/app", "app.test", json!({}), backend.port())],
        "",
    )
    .await;
    let mut sender = h2(e.http).await;
    let req = hyper::Request::connect("app.test:80")
        .body(empty())
        .unwrap();
    let answer = send(&mut sender, req).await;
    assert_eq!(answer.status, 405);
    // The same connection still serves, and only that request reached the backend.
    let answer = get(&mut sender, "http://app.test/after").await;
    assert_eq!(answer.status, 200);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// With the access log on, every connection of an h2c listener is read by the general path,
/// which tells h2c prior knowledge from HTTP/1.1 by the first bytes: both are answered on the
/// same listener, and an HTTP/2 client's many streams on one connection too.
#[tokio::test]
async fn the_general_path_tells_h2c_from_http1_by_the_preface() {
    let (backend, _) = mirror().await;
    let e = edge(
        "h2-sniffed",
        vec![vhost_app("/m", "m.example.com", json!({}), backend.port())],
        "access_log = true",
    )
    .await;
    let sender = h2(e.http).await;
    let streams: Vec<_> = (0..16)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let answer = get(&mut sender, &format!("http://m.example.com/a{i}")).await;
                (i, answer.status, answer.body.unwrap())
            })
        })
        .collect();
    for stream in streams {
        let (i, status, body) = stream.await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body.starts_with(format!("GET /a{i} ").as_bytes()),
            "{body:?}"
        );
    }
    let mut http1 = TcpStream::connect(e.http).await.unwrap();
    http1
        .write_all(b"GET /one HTTP/1.1\r\nHost: m.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, http1.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("GET /one "), "{answer}");
    drop(e.sy);
}

/// An edge whose client timeout is short (`proxy.client_header_timeout`), for the bounds an
/// HTTP/2 client is held to.
async fn edge_with_short_client_timeout(name: &str, backend: SocketAddr) -> support::edge::Edge {
    let sections = support::edge::Sections {
        proxy: "client_header_timeout = \"300ms\"",
        http: "h2c = true",
        ..Default::default()
    };
    let apps = vec![vhost_app("/m", "m.example.com", json!({}), backend.port())];
    support::edge::Edge::start(name, apps, sections).await
}

/// A connection with no open stream — one that sent its preface and SETTINGS and nothing
/// more, as an idle keep-alive does — gets GOAWAY and is closed, as an idle HTTP/1.1
/// connection is, instead of holding a socket for ever.
#[tokio::test]
async fn an_idle_connection_gets_goaway_and_is_closed() {
    let (backend, _) = mirror().await;
    let e = edge_with_short_client_timeout("h2-idle", backend).await;
    let mut stream = TcpStream::connect(e.http).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut seen))
        .await
        .expect("the idle connection was closed")
        .ok();
    // Frames: 9-byte header (length, type, flags, stream id), then the payload.
    let mut types = Vec::new();
    let mut rest = &seen[..];
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        types.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    assert!(types.contains(&7), "a GOAWAY before the close: {types:?}");
}

/// A client that never acknowledges the proxy's SETTINGS (RFC 9113 §6.5.3) is sent
/// GOAWAY(SETTINGS_TIMEOUT) within the client header timeout and closed: it cannot hold a
/// connection whose settings it may not be applying.
#[tokio::test]
async fn a_client_that_never_acknowledges_our_settings_gets_goaway_settings_timeout() {
    let (backend, _) = mirror().await;
    let e = edge_with_short_client_timeout("h2-settings-ack", backend).await;
    let mut stream = TcpStream::connect(e.http).await.unwrap();
    stream.write_all(PREFACE_AND_SETTINGS).await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut seen))
        .await
        .expect("the connection was closed")
        .ok();
    const SETTINGS_TIMEOUT: u32 = 0x4;
    assert_eq!(goaways(&frames_of(&seen)), [SETTINGS_TIMEOUT]);
}

/// A response the client never opens its window for is reset after the client timeout, and
/// the connection goes on serving: the backend connection and the buffers it held are not
/// pinned by a client that stopped reading.
#[tokio::test]
async fn a_response_without_window_is_reset_after_the_client_timeout() {
    let (backend, _) = mirror().await;
    let e = edge_with_short_client_timeout("h2-stall", backend).await;
    let stream = TcpStream::connect(e.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake::<_, Body2>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://m.example.com/big")
        .body(empty())
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(DEADLINE, response.into_body().collect())
        .await
        .expect("the stalled stream was reset");
    let error = format!("{:?}", body.expect_err("a reset, not a whole body"));
    assert!(error.contains("CANCEL"), "{error}");
}

/// An HTTP/2 request with more header fields than `http.max_headers` (100) gets 431, as an
/// HTTP/1.1 one does, and never reaches the backend.
#[tokio::test]
async fn too_many_header_fields_get_431_as_on_http1() {
    let (backend, connections) = mirror().await;
    let e = edge(
        "h2-fields",
        vec![vhost_app("/m", "m.example.com", json!({}), backend.port())],
        "",
    )
    .await;
    let mut sender = h2(e.http).await;
    let mut req = hyper::Request::get("http://m.example.com/many");
    for i in 0..150 {
        req = req.header(format!("x-field-{i}"), "v");
    }
    let answer = send(&mut sender, req.body(empty()).unwrap()).await;
    assert_eq!(answer.status, 431);
    let answer = get(&mut sender, "http://m.example.com/few").await;
    assert_eq!(answer.status, 200);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// An HTTP/2 frame as a raw client writes it: a 9-byte header, then the payload.
fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut frame = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The frames in what a server sent: (type, flags, stream, payload).
fn frames_of(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < 9 + length {
            break;
        }
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        frames.push((bytes[3], bytes[4], stream, bytes[9..9 + length].to_vec()));
        bytes = &bytes[9 + length..];
    }
    frames
}

const PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const GOAWAY: u8 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The error code of each GOAWAY among `frames`.
fn goaways(frames: &[(u8, u8, u32, Vec<u8>)]) -> Vec<u32> {
    frames
        .iter()
        .filter(|f| f.0 == GOAWAY && f.3.len() >= 8)
        .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
        .collect()
}

/// A raw client that opens a connection, sends `first`, then `copies` of `frame` (from a task
/// of its own) while it reads what the server sends until the server closes: the frames read.
async fn flood(
    addr: SocketAddr,
    first: Vec<u8>,
    frame: Vec<u8>,
    copies: usize,
) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(PREFACE_AND_SETTINGS).await.ok()?;
        write.write_all(&first).await.ok()?;
        let batch: Vec<u8> = frame.repeat(1000);
        for _ in 0..copies / 1000 {
            write.write_all(&batch).await.ok()?;
        }
        Some(write)
    });
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, read.read_to_end(&mut seen))
        .await
        .expect("the flooding connection was closed")
        .ok();
    // Written all, or stopped by the close; the write half (if kept) is dropped here.
    let _ = writer.await;
    frames_of(&seen)
}

/// A client flooding PING, SETTINGS, WINDOW_UPDATE, PRIORITY or empty DATA frames — each one
/// answered or processed by the codec, none of them a request — is sent
/// GOAWAY(ENHANCE_YOUR_CALM) and its connection closed, counted and logged once per
/// connection; the listener goes on serving others.
#[tokio::test]
async fn control_frame_floods_get_goaway_enhance_your_calm_and_a_close() {
    let (backend, _) = mirror().await;
    let e = edge(
        "h2-flood",
        vec![vhost_app("/m", "m.example.com", json!({}), backend.port())],
        "",
    )
    .await;
    let floods = [
        ("PING", raw_frame(0x6, 0, 0, &[7; 8])),
        ("SETTINGS", raw_frame(0x4, 0, 0, &[])),
        ("WINDOW_UPDATE", raw_frame(0x8, 0, 0, &[0, 0, 0, 1])),
        ("PRIORITY", raw_frame(0x2, 0, 3, &[0, 0, 0, 0, 16])),
    ];
    for (i, (name, frame)) in floods.iter().enumerate() {
        let frames = flood(e.http, Vec::new(), frame.clone(), 50_000).await;
        assert_eq!(goaways(&frames), [ENHANCE_YOUR_CALM], "{name}");
        let pongs = frames.iter().filter(|f| f.0 == 0x6).count();
        assert!(pongs < 2_000, "{name}: {pongs} pings answered");
        let needle = format!("(the last a {name})");
        wait_for("the flood counted and logged once", || async {
            let n =
                e.sy.metric("switchyard_http2_incidents", &["control_flood"])
                    .await;
            (n == (i + 1) as f64 && e.sy.log_lines(&needle).len() == 1).then_some(())
        })
        .await;
    }
    // Empty DATA frames on an open stream (a request whose body never comes): the codec's own
    // bound on small DATA frames, or the budget, whichever first.
    let open = raw_frame(0x1, 0x4, 1, b"\x83\x86\x84\x41\x0dm.example.com");
    let frames = flood(e.http, open, raw_frame(0x0, 0, 1, &[]), 50_000).await;
    assert_eq!(goaways(&frames), [ENHANCE_YOUR_CALM], "empty DATA");
    let mut sender = h2(e.http).await;
    assert_eq!(
        get(&mut sender, "http://m.example.com/after").await.status,
        200
    );
}

/// A client doing ordinary work is never taken for a flood: thousands of requests over one
/// connection, many at once, downloads with a small window (a WINDOW_UPDATE for every few KiB
/// read), and a raw client sending pings between its requests.
#[tokio::test]
async fn busy_clients_and_a_few_pings_are_served() {
    let (backend, _) = mirror().await;
    let e = edge(
        "h2-busy",
        vec![vhost_app("/m", "m.example.com", json!({}), backend.port())],
        "",
    )
    .await;
    let stream = TcpStream::connect(e.http).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(16 * 1024)
            .initial_connection_window_size(32 * 1024)
            .handshake::<_, Body2>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..50 {
        let mut sender = sender.clone();
        tasks.spawn(async move {
            for i in 0..60 {
                let path = if t < 4 && i < 5 { "big" } else { "small" };
                let answer = get(&mut sender, &format!("http://m.example.com/{path}")).await;
                assert_eq!(answer.status, 200);
                if path == "big" {
                    assert_eq!(answer.body.unwrap().len(), 1 << 20);
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // A raw client: pings before and after a request, all answered, no GOAWAY.
    let mut stream = TcpStream::connect(e.http).await.unwrap();
    let mut out = PREFACE_AND_SETTINGS.to_vec();
    out.extend(raw_frame(0x4, 0x1, 0, &[])); // the ACK of the server's SETTINGS
    for i in 0..10u8 {
        out.extend(raw_frame(0x6, 0, 0, &[i; 8]));
    }
    out.extend(raw_frame(0x1, 0x5, 1, b"\x82\x86\x84\x41\x0dm.example.com"));
    for i in 10..20u8 {
        out.extend(raw_frame(0x6, 0, 0, &[i; 8]));
    }
    stream.write_all(&out).await.unwrap();
    let frames = tokio::time::timeout(DEADLINE, async {
        let mut seen = Vec::new();
        loop {
            let mut chunk = [0u8; 16384];
            let n = stream.read(&mut chunk).await.unwrap();
            seen.extend_from_slice(&chunk[..n]);
            let frames = frames_of(&seen);
            let pongs = frames.iter().filter(|f| f.0 == 0x6 && f.1 & 1 == 1).count();
            let ended = frames.iter().any(|f| f.2 == 1 && f.1 & 1 == 1);
            if n == 0 || (pongs == 20 && ended) {
                return frames;
            }
        }
    })
    .await
    .expect("the answer and the pongs");
    assert!(goaways(&frames).is_empty(), "{frames:?}");
    assert!(frames.iter().any(|f| f.0 == 0x1 && f.2 == 1), "{frames:?}");
    assert_eq!(
        e.sy.metric("switchyard_http2_incidents", &["control_flood"])
            .await,
        0.0
    );
}

/// RFC 9110 §6.6.1 over HTTP/2: an answer forwarded without `Date` gets one, a backend's own
/// is kept as it is, and the proxy's own answers are dated too.
#[tokio::test]
async fn answers_are_dated_once_and_a_backends_date_is_kept() {
    let undated = scripted(&[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"], false).await;
    let dated = scripted(
        &[b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 2\r\n\r\nok"],
        false,
    )
    .await;
    let e = edge(
        "h2-date",
        vec![
            vhost_app("/u", "u.example.com", json!({}), undated.port()),
            vhost_app("/d", "d.example.com", json!({}), dated.port()),
        ],
        "",
    )
    .await;
    let mut sender = h2(e.http).await;
    for (url, status) in [
        ("http://u.example.com/", 200),
        ("http://d.example.com/", 200),
        ("http://nowhere.example.com/", 503),
    ] {
        let answer = get(&mut sender, url).await;
        assert_eq!(answer.status, status, "{url}");
        let dates: Vec<_> = answer.headers.get_all("date").iter().collect();
        assert_eq!(dates.len(), 1, "{url}: {:?}", answer.headers);
        let date = dates[0].to_str().unwrap();
        if url.starts_with("http://d.") {
            assert_eq!(date, "Sun, 06 Nov 1994 08:49:37 GMT");
        } else {
            assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
        }
    }
}

/// An HTTP/1.1 backend's fields reach an HTTP/2 client as it sent them (order, repeats, any
/// case lowered), less the hop-by-hop ones, with what each app's rules and policies change:
/// fields added after the backend's, removed or rewritten where a rule reads them.
#[tokio::test]
async fn backend_fields_reach_an_http2_client_with_the_apps_rules_applied() {
    backend_fields_reach_an_http2_client_on(&[]).await;
}

/// The same on the `h2` crate's path, which sends a map: the fields are taken into it.
#[tokio::test]
async fn backend_fields_reach_an_http2_client_on_the_h2_crates_path_too() {
    backend_fields_reach_an_http2_client_on(&[("SWITCHYARD_H2_CODEC", "0")]).await;
}

async fn backend_fields_reach_an_http2_client_on(env: &[(&str, &str)]) {
    let backend = scripted(
        &[
            b"HTTP/1.1 200 OK\r\nServer: Test\r\nX-Two: 1\r\nSet-Cookie: a=1\r\nX-TWO: 2\r\n\
              Connection: x-hop\r\nX-Hop: 1\r\nLocation: /login\r\nContent-Length: 2\r\n\r\nok",
        ],
        false,
    )
    .await;
    let apps = [
        ("/plain", json!({})),
        (
            "/added",
            json!({"SWITCHYARD_0_RESPONSE_HEADER_ADD_X-Added": "yes"}),
        ),
        (
            "/removed",
            json!({"SWITCHYARD_0_RESPONSE_HEADER_REMOVE": "X-Two"}),
        ),
        ("/sticky", json!({"HAPROXY_0_STICKY": "true"})),
        (
            "/rev",
            json!({"HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH": "/api"}),
        ),
    ];
    let apps_json = apps
        .iter()
        .map(|(id, labels)| {
            let host = format!("{}.example.com", &id[1..]);
            vhost_app(id, &host, labels.clone(), backend.port())
        })
        .collect();
    let e = edge_with_env("h2-fields", apps_json, "", "", env).await;
    let mut sender = h2(e.http).await;
    for (id, _) in apps {
        let answer = get(&mut sender, &format!("http://{}.example.com/", &id[1..])).await;
        assert_eq!(answer.status, 200, "{id}");
        assert_eq!(answer.body.as_deref().unwrap(), b"ok", "{id}");
        let all = |name: &str| -> Vec<&str> {
            answer
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("server"), ["Test"], "{id}");
        assert_eq!(all("content-length"), ["2"], "{id}");
        assert_eq!(all("date").len(), 1, "{id}");
        for gone in ["connection", "x-hop"] {
            assert!(all(gone).is_empty(), "{id}: {gone}");
        }
        let two: &[&str] = if id == "/removed" { &[] } else { &["1", "2"] };
        assert_eq!(all("x-two"), two, "{id}");
        let added: &[&str] = if id == "/added" { &["yes"] } else { &[] };
        assert_eq!(all("x-added"), added, "{id}");
        let cookies = all("set-cookie");
        assert_eq!(cookies[0], "a=1", "{id}");
        assert_eq!(cookies.len(), if id == "/sticky" { 2 } else { 1 }, "{id}");
        if id == "/sticky" {
            assert!(
                cookies[1].starts_with("mesosphere_server_id="),
                "{cookies:?}"
            );
        }
        let location = if id == "/rev" { "/api/login" } else { "/login" };
        assert_eq!(all("location"), [location], "{id}");
    }
}

/// A backend's response head is held to 64 KiB however it arrives: one whose last read took
/// it past the bound is refused as one still growing there is (a 502), never relayed.
#[tokio::test]
async fn a_response_head_past_64_kib_is_a_502_however_it_arrives() {
    let name = "x".repeat(70_000);
    let head = format!("HTTP/1.1 200 OK\r\n{name}: v\r\ncontent-length: 2\r\n\r\nok");
    let head: &'static [u8] = Box::leak(head.into_bytes().into_boxed_slice());
    let pieces: &'static [&'static [u8]] = Box::leak(Box::new([head]));
    let backend = scripted(pieces, false).await;
    let e = edge(
        "h2-big-head",
        vec![vhost_app(
            "/big",
            "big.example.com",
            json!({}),
            backend.port(),
        )],
        "",
    )
    .await;
    let mut sender = h2(e.http).await;
    let answer = get(&mut sender, "http://big.example.com/").await;
    assert_eq!(answer.status, 502);
}

/// The access log's line of one request: its fields by name.
fn access_fields(line: &str) -> std::collections::HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A stream cut off mid-answer is access-logged with the body bytes that went to the
/// connection, not the declared length, and who ended it: `CD` the client reset it, `cD` it
/// was reset for want of window; a whole answer is `--` with its length.
#[tokio::test]
async fn cut_off_streams_are_logged_with_the_bytes_sent_and_who_ended_them() {
    let (backend, _) = mirror().await;
    let sections = support::edge::Sections {
        proxy: "client_header_timeout = \"300ms\"",
        http: "h2c = true\naccess_log = true",
        ..Default::default()
    };
    let apps = vec![vhost_app("/m", "m.example.com", json!({}), backend.port())];
    let e = support::edge::Edge::start("h2-cutoff-log", apps, sections).await;
    // A client that takes the head and 64 KiB, then resets the stream.
    let stream = TcpStream::connect(e.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .handshake::<_, Body2>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = |path: &str| {
        hyper::Request::get(format!("http://m.example.com/{path}"))
            .body(empty())
            .unwrap()
    };
    let response = tokio::time::timeout(DEADLINE, sender.send_request(req("big?reset")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // One whole answer.
    let whole = send(&mut sender, req("small")).await;
    assert_eq!(whole.status, 200);
    let logged = |path: &'static str| {
        let sy = &e.sy;
        async move {
            let lines = sy.log_lines("switchyard::access");
            let line = lines.iter().find(|l| l.contains(&format!("path={path}")))?;
            Some(access_fields(line))
        }
    };
    let reset = wait_for("the reset stream logged", || logged("/big")).await;
    assert_eq!(reset["term"], "CD", "{reset:?}");
    assert_eq!(reset["status"], "200", "{reset:?}");
    let sent: u64 = reset["bytes"].parse().unwrap();
    assert!(sent < 1 << 20, "{reset:?}");
    let small = wait_for("the whole answer logged", || logged("/small")).await;
    assert_eq!(small["term"], "--", "{small:?}");
    assert_eq!(small["bytes"], whole.body.unwrap().len().to_string());
    // A client that opens no window: reset after the client timeout, by the proxy.
    let stream = TcpStream::connect(e.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake::<_, Body2>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = tokio::time::timeout(
        DEADLINE,
        sender.send_request(
            hyper::Request::get("http://m.example.com/big")
                .header("x-stall", "1")
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let body = tokio::time::timeout(DEADLINE, response.into_body().collect()).await;
    assert!(body.expect("reset").is_err());
    let stalled = wait_for("the stalled stream logged", || {
        let sy = &e.sy;
        async move {
            let lines = sy.log_lines("switchyard::access");
            let line = lines
                .iter()
                .filter(|l| l.contains("path=/big"))
                .find(|l| !l.contains("term=CD"))?;
            Some(access_fields(line))
        }
    })
    .await;
    assert_eq!(stalled["term"], "cD", "{stalled:?}");
    assert_eq!(stalled["bytes"], "0", "{stalled:?}");
}

/// What [`upload_holder`] saw: POST heads received, uploads open now (head in, body not
/// ended), the most open at once.
#[derive(Default)]
struct Uploads {
    posts: AtomicUsize,
    open: AtomicUsize,
    most: AtomicUsize,
}

/// An HTTP/1.1 backend that answers a GET at once and a POST once its (chunked) body has
/// ended, counting the uploads it holds open.
async fn upload_holder() -> (SocketAddr, Arc<Uploads>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Uploads::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = counts.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let head_end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let post = buf.starts_with(b"POST ");
                    buf.drain(..head_end);
                    if post {
                        seen.posts.fetch_add(1, Ordering::SeqCst);
                        let open = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.most.fetch_max(open, Ordering::SeqCst);
                        // The test's bodies are chunked pieces of `x`: the last chunk ends it.
                        let ended = loop {
                            if let Some(at) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                                buf.drain(..at + 5);
                                break true;
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => break false,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        seen.open.fetch_sub(1, Ordering::SeqCst);
                        if !ended {
                            return;
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An HTTP/2 client on the `h2` codec itself (a raw one: it can open streams and leave their
/// bodies unfinished).
async fn h2_raw(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tokio::time::timeout(DEADLINE, sender.ready())
        .await
        .unwrap()
        .unwrap()
}

/// The status of a stream's answer, or the reason it was reset.
async fn outcome(response: h2::client::ResponseFuture) -> Result<u16, Option<h2::Reason>> {
    response
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.reason())
}

/// A client that opens many streams whose request bodies never come (HEADERS without
/// END_STREAM, then nothing) holds at most 16 backend connections: the streams past that are
/// refused (REFUSED_STREAM, which clients retry), counted, and never reach a backend; a
/// finished upload frees its place, and the connection's other requests, and other
/// connections, are served meanwhile.
#[tokio::test]
async fn streams_with_unfinished_bodies_hold_at_most_16_backend_connections() {
    const CAP: usize = 16;
    const OPENED: usize = 40;
    let (backend, seen) = upload_holder().await;
    let e = edge(
        "h2-uploads",
        vec![vhost_app("/u", "u.example.com", json!({}), backend.port())],
        "",
    )
    .await;
    let request = |method: &str| {
        http::Request::builder()
            .method(method)
            .uri("http://u.example.com/upload")
            .body(())
            .unwrap()
    };
    let mut sender = h2_raw(e.http).await;
    let mut bodies = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..OPENED {
        let (response, body) = sender.send_request(request("POST"), false).unwrap();
        bodies.push(body);
        answers.push(tokio::spawn(outcome(response)));
    }
    // The streams past the cap are refused at once; the others wait at the backend for
    // bodies that do not come.
    wait_for("16 uploads held, the rest refused", || async {
        let done = answers.iter().filter(|a| a.is_finished()).count();
        (done == OPENED - CAP && seen.open.load(Ordering::SeqCst) == CAP).then_some(())
    })
    .await;
    let mut held = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        if answer.is_finished() {
            let refused = answer.await.unwrap();
            assert_eq!(refused, Err(Some(h2::Reason::REFUSED_STREAM)), "stream {i}");
        } else {
            held.push((i, answer));
        }
    }
    assert_eq!(held.len(), CAP);
    assert_eq!(
        seen.posts.load(Ordering::SeqCst),
        CAP,
        "refused streams reached a backend"
    );
    assert_eq!(seen.most.load(Ordering::SeqCst), CAP);
    wait_for("the refusals counted", || async {
        let n =
            e.sy.metric("switchyard_http2_incidents", &["upload_refused"])
                .await;
        (n == (OPENED - CAP) as f64).then_some(())
    })
    .await;
    // A bodiless request on the same connection is served meanwhile.
    let (get, _) = sender.send_request(request("GET"), true).unwrap();
    assert_eq!(
        tokio::time::timeout(DEADLINE, outcome(get)).await.unwrap(),
        Ok(200)
    );
    // So is another connection, uploads and all.
    let mut other = h2_raw(e.http).await;
    let (upload, mut body) = other.send_request(request("POST"), false).unwrap();
    body.send_data(Bytes::from_static(b"xx"), true).unwrap();
    assert_eq!(
        tokio::time::timeout(DEADLINE, outcome(upload))
            .await
            .unwrap(),
        Ok(200)
    );
    let (get, _) = other.send_request(request("GET"), true).unwrap();
    assert_eq!(
        tokio::time::timeout(DEADLINE, outcome(get)).await.unwrap(),
        Ok(200)
    );
    // A held upload that ends is answered, and frees its place for the next one.
    let (i, answer) = held.pop().unwrap();
    bodies[i].send_data(Bytes::from_static(b"x"), true).unwrap();
    assert_eq!(
        tokio::time::timeout(DEADLINE, answer)
            .await
            .unwrap()
            .unwrap(),
        Ok(200)
    );
    let (next, _next_body) = sender.send_request(request("POST"), false).unwrap();
    let next = tokio::spawn(outcome(next));
    wait_for("the freed place taken", || async {
        (seen.posts.load(Ordering::SeqCst) == CAP + 2 && seen.open.load(Ordering::SeqCst) == CAP)
            .then_some(())
    })
    .await;
    assert!(
        !next.is_finished(),
        "the stream after a freed place was refused"
    );
    // No backend was charged for the client's streams: it is still routed and answering.
    let (get, _) = other.send_request(request("GET"), true).unwrap();
    assert_eq!(
        tokio::time::timeout(DEADLINE, outcome(get)).await.unwrap(),
        Ok(200)
    );
    drop(bodies);
}

/// A backend that reads each request's head and never answers: the number of heads read.
async fn silent_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    heads_read(Then::Wait).await
}

/// What [`heads_read`]'s backend does once it has read a head.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// Reads on, never answering.
    Wait,
    /// Closes the connection without an answer.
    Close,
    /// Reads on for this long, then closes without an answer: a backend timing out a quiet
    /// upload (nginx's `client_body_timeout`).
    CloseAfter(Duration),
    /// Reads on for this long, then holds the connection without reading (a backend that
    /// hangs mid-upload).
    StopReadingAfter(Duration),
    /// Reads on for this long, then answers `500` with `Connection: close` (a backend that
    /// answers a body read timeout with an error).
    ErrorAfter(Duration),
}

/// Reads whatever comes on `stream` for `reading`, and drops it.
async fn read_for(stream: &mut TcpStream, reading: Duration) {
    let mut buf = [0u8; 4096];
    let more = async { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(reading, more).await;
}

/// A backend that reads request heads and answers none: the number of heads read.
async fn heads_read(then: Then) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = counted.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        heads.fetch_add(1, Ordering::SeqCst);
                        match then {
                            Then::Wait => {}
                            Then::Close => return,
                            Then::CloseAfter(reading) => {
                                read_for(&mut stream, reading).await;
                                return;
                            }
                            Then::ErrorAfter(reading) => {
                                read_for(&mut stream, reading).await;
                                let _ = stream
                                    .write_all(
                                        b"HTTP/1.1 500 Internal Server Error\r\n\
                                          content-length: 0\r\nconnection: close\r\n\r\n",
                                    )
                                    .await;
                                return;
                            }
                            Then::StopReadingAfter(reading) => {
                                read_for(&mut stream, reading).await;
                                // Held, never read again, until the test ends.
                                std::future::pending::<()>().await;
                            }
                        }
                        seen.drain(..end + 4);
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// Rapid reset after acceptance (CVE-2023-44487 as the codec's pending-accept bound does not
/// see it): a client that opens a stream, waits until the proxy has sent its request to the
/// backend, then resets it — over and over, with one stream open at a time — is sent
/// GOAWAY(ENHANCE_YOUR_CALM) once it has reset more than half of 100 streams, counted and
/// logged once; other clients are served.
#[tokio::test]
async fn streams_reset_after_their_request_went_out_end_the_connection() {
    streams_reset_after_their_request_went_out(Cover::None).await;
}

/// The same client, with a request answered here (no route: 503) sent beside each stream it
/// resets: a stream no backend answered is no cover, or one cheap request per reset would keep
/// the share at half for ever.
#[tokio::test]
async fn requests_answered_here_do_not_dilute_early_resets() {
    streams_reset_after_their_request_went_out(Cover::NoRoute).await;
}

/// The same, with an upload refused (its connection already holds 16 unfinished ones) beside
/// each stream reset: refused, it is no cover either.
#[tokio::test]
async fn refused_uploads_do_not_dilute_early_resets() {
    streams_reset_after_their_request_went_out(Cover::RefusedUpload).await;
}

/// What a client sends beside each stream it resets.
#[derive(Clone, Copy, PartialEq)]
enum Cover {
    None,
    /// A request on a host no app serves (503 from the proxy).
    NoRoute,
    /// An upload past the connection's 16 unfinished ones (REFUSED_STREAM).
    RefusedUpload,
}

async fn streams_reset_after_their_request_went_out(cover: Cover) {
    let (backend, heads) = silent_backend().await;
    let (good, _) = mirror().await;
    let e = edge(
        match cover {
            Cover::None => "h2-rapid-reset",
            Cover::NoRoute => "h2-rapid-reset-no-route",
            Cover::RefusedUpload => "h2-rapid-reset-refused",
        },
        vec![
            vhost_app("/s", "s.example.com", json!({}), backend.port()),
            vhost_app("/m", "m.example.com", json!({}), good.port()),
        ],
        "",
    )
    .await;
    let stream = TcpStream::connect(e.http).await.unwrap();
    // Small frames written as they come, not held for an ACK.
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, read.read_to_end(&mut seen)).await;
        frames_of(&seen)
    });
    write.write_all(PREFACE_AND_SETTINGS).await.unwrap();
    // GET / on s.example.com, ending the stream: no body, so no upload place is involved.
    let head = b"\x82\x86\x84\x41\x0ds.example.com";
    // GET / on a host no app serves.
    let unrouted = b"\x82\x86\x84\x41\x10nope.example.com";
    // POST / on s.example.com, its body to come (END_HEADERS alone).
    let upload = b"\x83\x86\x84\x41\x0ds.example.com";
    let mut first = 1;
    let mut held = 0;
    if cover == Cover::RefusedUpload {
        // The connection's 16 places for unfinished uploads, taken and held.
        held = 16;
        let mut uploads = Vec::new();
        for _ in 0..held {
            uploads.extend(raw_frame(0x1, 0x4, first, upload));
            first += 2;
        }
        write.write_all(&uploads).await.unwrap();
        wait_for("16 uploads held at the backend", || async {
            (heads.load(Ordering::SeqCst) == held).then_some(())
        })
        .await;
    }
    let mut sent = 0;
    for i in 0..150u32 {
        let id = first
            + if cover == Cover::None {
                2 * i
            } else {
                4 * i + 2
            };
        let mut requests = Vec::new();
        match cover {
            Cover::None => {}
            Cover::NoRoute => requests.extend(raw_frame(0x1, 0x5, id - 2, unrouted)),
            Cover::RefusedUpload => requests.extend(raw_frame(0x1, 0x4, id - 2, upload)),
        }
        requests.extend(raw_frame(0x1, 0x5, id, head));
        if write.write_all(&requests).await.is_err() {
            break;
        }
        let reached = tokio::time::timeout(DEADLINE, async {
            while heads.load(Ordering::SeqCst) <= held + i as usize && !reader.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(reached.is_ok(), "stream {id} never reached the backend");
        if reader.is_finished() {
            break;
        }
        // RST_STREAM(CANCEL).
        if write
            .write_all(&raw_frame(0x3, 0, id, &8u32.to_be_bytes()))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    let frames = reader.await.unwrap();
    assert_eq!(goaways(&frames), [ENHANCE_YOUR_CALM], "after {sent} resets");
    assert!(sent < 150, "the connection outlived {sent} early resets");
    wait_for("counted and logged once", || async {
        let n =
            e.sy.metric("switchyard_http2_incidents", &["rapid_reset"])
                .await;
        (n == 1.0 && e.sy.log_lines("(rapid reset)").len() == 1).then_some(())
    })
    .await;
    let mut sender = h2(e.http).await;
    let after = get(&mut sender, "http://m.example.com/after").await;
    assert_eq!(after.status, 200);
}

/// A backend's response fields reach the HTTP/2 client as they were sent: every value byte
/// for byte (a tab inside, obs-text), repeated fields in their order, past the two dozen
/// fields the response head notes without a list; a head with a field the parser refuses is
/// still a 502, never forwarded.
#[tokio::test]
async fn response_fields_arrive_byte_identical_and_malformed_ones_are_still_refused() {
    let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n".to_vec();
    for i in 0..40 {
        head.extend_from_slice(format!("X-Field-{i}: value {i}\twith tab\r\n").as_bytes());
    }
    head.extend_from_slice(b"X-Obs: caf\xc3\xa9 \xff\r\nSet-Cookie: b=2; Path=/\r\n\r\nok");
    let head: &'static [u8] = head.leak();
    let answer: &'static [&'static [u8]] = Box::leak(Box::new([head]));
    let good = scripted(answer, false).await;
    let bad_value = scripted(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Bad: a\x01b\r\n\r\nok"],
        false,
    )
    .await;
    let bad_name = scripted(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX Bad: 1\r\n\r\nok"],
        false,
    )
    .await;
    let e = edge(
        "h2-fields",
        vec![
            vhost_app("/g", "g.example.com", json!({}), good.port()),
            vhost_app("/v", "v.example.com", json!({}), bad_value.port()),
            vhost_app("/n", "n.example.com", json!({}), bad_name.port()),
        ],
        "",
    )
    .await;
    let mut sender = h2(e.http).await;
    for _ in 0..2 {
        let answer = get(&mut sender, "http://g.example.com/").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body.unwrap(), "ok");
        for i in 0..40 {
            let value = answer.headers[format!("x-field-{i}").as_str()].as_bytes();
            assert_eq!(value, format!("value {i}\twith tab").as_bytes());
        }
        assert_eq!(answer.headers["x-obs"].as_bytes(), b"caf\xc3\xa9 \xff");
        let cookies: Vec<_> = answer.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2; Path=/"]);
        assert_eq!(answer.headers["content-length"], "2");
    }
    for host in ["v.example.com", "n.example.com"] {
        let answer = get(&mut sender, &format!("http://{host}/")).await;
        assert_eq!(answer.status, 502, "{host}");
        assert!(!answer.headers.contains_key("x-bad"), "{host}");
    }
}

/// An HTTP/2 request whose path some backends read as another of the host's routes is refused
/// with 400, as on HTTP/1.1 (one resolution, `routing::resolve`, answered by the general path).
#[tokio::test]
async fn a_path_read_as_another_route_is_refused_over_http2() {
    let (site, _) = mirror().await;
    let (admin, _) = mirror().await;
    let e = edge(
        "h2-paths",
        vec![
            vhost_app("/site", "p.example.com", json!({}), site.port()),
            vhost_app(
                "/admin",
                "p.example.com",
                json!({"HAPROXY_0_PATH": "/admin"}),
                admin.port(),
            ),
        ],
        "",
    )
    .await;
    let mut sender = h2(e.http).await;
    // Both routes in: the guarded prefix reaches its own app.
    wait_for("both routes", || {
        let mut sender = sender.clone();
        async move {
            let answer = get(&mut sender, "http://p.example.com/admin/x").await;
            (answer.status == 200).then_some(())
        }
    })
    .await;
    for path in [
        "/x/../admin/x",
        "/%61dmin/x",
        "/x/..;/admin",
        "/admin/../x",
        "/%2fadmin",
        "/x/%c0%ae%c0%ae/admin",
    ] {
        let answer = get(&mut sender, &format!("http://p.example.com{path}")).await;
        let body = answer.body.unwrap();
        assert_eq!(answer.status, 400, "{path}: {body:?}");
        assert!(
            String::from_utf8_lossy(&body).contains("ambiguous"),
            "{path}: {body:?}"
        );
    }
    // Read the same way by every backend: served as sent.
    let answer = get(&mut sender, "http://p.example.com/x//y").await;
    assert_eq!(answer.status, 200);
}

/// A client that sends `expect: 100-continue` waits for `100 Continue` before its body (curl
/// does, for up to a second): it gets one once the proxy wants the body, then the answer.
/// Our codec only (the `h2` crate's path sends none).
#[tokio::test]
async fn a_client_asking_for_100_continue_gets_it_before_it_sends_the_body() {
    if std::env::var_os("SWITCHYARD_H2_CODEC").is_some_and(|v| v == "0") {
        return;
    }
    let (backend, _) = mirror().await;
    let e = edge(
        "h2-continue",
        vec![vhost_app("/m", "m.example.com", json!({}), backend.port())],
        "",
    )
    .await;
    let stream = TcpStream::connect(e.http).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    // POST / on m.example.com, `expect: 100-continue` (a literal without indexing), the
    // body to come.
    let mut head = b"\x83\x86\x84\x41\x0dm.example.com".to_vec();
    head.extend_from_slice(b"\x00\x06expect\x0c100-continue");
    let mut opening = PREFACE_AND_SETTINGS.to_vec();
    opening.extend(raw_frame(0x1, 0x4, 1, &head));
    write.write_all(&opening).await.unwrap();
    let mut seen = Vec::new();
    let heads = |seen: &[u8]| {
        frames_of(seen)
            .into_iter()
            .filter(|f| f.0 == 0x1 && f.2 == 1)
            .map(|f| f.3)
            .collect::<Vec<_>>()
    };
    let mut chunk = [0u8; 4096];
    while heads(&seen).is_empty() {
        let n = tokio::time::timeout(DEADLINE, read.read(&mut chunk))
            .await
            .expect("no 100 Continue before the body")
            .unwrap();
        assert!(n > 0, "closed");
        seen.extend_from_slice(&chunk[..n]);
    }
    let interim = &heads(&seen)[0];
    assert!(
        interim.windows(5).any(|w| w == b"\x08\x03100"),
        "{interim:?}"
    );
    // The body, then the answer (200: the static entry, 0x88).
    write
        .write_all(&raw_frame(0x0, 0x1, 1, b"hi"))
        .await
        .unwrap();
    while heads(&seen).len() < 2 {
        let n = tokio::time::timeout(DEADLINE, read.read(&mut chunk))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed");
        seen.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(heads(&seen)[1].first(), Some(&0x88));
}
