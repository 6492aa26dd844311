//! Resilience end to end: configuration reload (valid and invalid), connection limits, a
//! slowloris client, 10,000 idle connections, backends that hang or die mid-stream, active
//! health checks. Each test checks that the process stays up and that nothing which could be
//! served was lost.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn file_setup(name: &str, apps: Vec<Value>, extra: &str, admin: &str) -> (Switchyard, PathBuf) {
    let dir = temp_dir(name);
    let file = dir.join("apps.json");
    write_apps(&file, apps);
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n\
         [proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\ndrain_timeout = \"1s\"\n{extra}",
        file.display().to_string()
    );
    (Switchyard::start_with_admin(name, &toml, admin), file)
}

fn http_app(id: &str, port: u16, backends: &[SocketAddr], labels: Value) -> Value {
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, b)| task(id, &format!("{id}.{i}"), b.port()))
        .collect();
    let mut labels = labels;
    labels["HAPROXY_0_MODE"] = json!("http");
    app(id, port, labels, tasks)
}

/// A GET on an open keep-alive connection: the status.
async fn keepalive_get(stream: &mut TcpStream, host: &str) -> std::io::Result<u16> {
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {text:?}")))
}

fn rewrite(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{from:?} in {text}");
    std::fs::write(config, text.replace(from, to)).unwrap();
}

#[tokio::test]
async fn a_valid_config_reload_applies_live_and_an_invalid_one_is_refused_with_the_reason() {
    let (web, api) = (Backend::start("web").await, Backend::start("api").await);
    let (web_port, api_port) = (free_port(), free_port());
    let dir = temp_dir("reload-token");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let apps = vec![
        http_app("/web", web_port, &[web.addr], json!({})),
        http_app(
            "/api",
            api_port,
            &[api.addr],
            json!({"HAPROXY_0_ENABLED": "true"}),
        ),
    ];
    let (sy, _) = file_setup(
        "reload",
        apps,
        "strict_mode = false\n[runtime]\nconfig_watch_interval = \"50ms\"\n",
        &format!("token_file = {:?}", token.display().to_string()),
    );
    sy.wait_routes("both served", |r| {
        has_service(r, web_port) && has_service(r, api_port)
    })
    .await;
    // A client on a keep-alive connection through the reload.
    let mut held = TcpStream::connect(local(api_port)).await.unwrap();
    assert_eq!(keepalive_get(&mut held, "api").await.unwrap(), 200);

    // The file changes: marathon-lb's strict mode serves only ports that say ENABLED.
    let config = sy.dir.join("switchyard.toml");
    rewrite(&config, "strict_mode = false", "strict_mode = true");
    sy.wait_routes("strict mode applied", |r| {
        !has_service(r, web_port) && has_service(r, api_port)
    })
    .await;
    assert_eq!(keepalive_get(&mut held, "api").await.unwrap(), 200);
    wait_for("web port closed", || async {
        TcpStream::connect(local(web_port))
            .await
            .is_err()
            .then_some(())
    })
    .await;

    // An invalid file is refused with the key named; the running configuration stays.
    rewrite(
        &config,
        "strict_mode = true",
        "strict_mode = true\nmax_conections = 5",
    );
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .args(["--admin", &sy.admin.to_string()])
            .args(["--token-file", token.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_conections"), "{err}");
    assert!(
        sy.metric("switchyard_config_reloads_total", &["rejected"])
            .await
            >= 1.0
    );
    assert!(has_service(&sy.routes().await, api_port));
    assert_eq!(keepalive_get(&mut held, "api").await.unwrap(), 200);

    // Fixed, with a listener change that only a restart (or upgrade) applies: said so.
    rewrite(&config, "\nmax_conections = 5", "");
    rewrite(
        &config,
        "[admin]",
        "[http]\nlisten = [\"127.0.0.1:1\"]\n[admin]",
    );
    let out = cli(&["reload"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}", out);
    assert!(
        said.contains("needs a restart or upgrade: http.listen"),
        "{said}"
    );
    // Mutating the admin API needs the token.
    let anonymous = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["reload", "--admin", &sy.admin.to_string()])
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    assert_eq!(keepalive_get(&mut held, "api").await.unwrap(), 200);
}

#[tokio::test]
async fn connection_limits_refuse_clearly_and_free_up() {
    let web = Backend::start("web").await;
    let (port, other) = (free_port(), free_port());
    let apps = vec![
        http_app("/web", port, &[web.addr], json!({})),
        http_app("/other", other, &[web.addr], json!({})),
    ];
    let (sy, _) = file_setup(
        "limits",
        apps,
        "max_connections_per_listener = 5\nmax_connections = 8\n",
        "",
    );
    sy.wait_routes("served", |r| has_service(r, port) && has_service(r, other))
        .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(local(port)).await.unwrap();
        assert_eq!(keepalive_get(&mut s, "web").await.unwrap(), 200);
        held.push(s);
    }
    // The sixth hears why at once, in a dated answer.
    let (status, headers, body) = http_request(local(port), "GET", "/", &[], "").await;
    assert_eq!((status, body.trim()), (503, "connection limit reached"));
    let date = headers
        .iter()
        .find(|(k, _)| k == "date")
        .map(|(_, v)| v.as_str())
        .expect("a Date on the refusal");
    assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
    assert!(
        sy.metric("switchyard_connections_refused_total", &["listener_limit"])
            .await
            >= 1.0
    );
    // Another listener has room until the total (8) is reached.
    for _ in 0..3 {
        let mut s = TcpStream::connect(local(other)).await.unwrap();
        assert_eq!(keepalive_get(&mut s, "other").await.unwrap(), 200);
        held.push(s);
    }
    let (status, _) = http_get(local(other), "/").await.unwrap();
    assert_eq!(status, 503);
    assert!(
        sy.metric("switchyard_connections_refused_total", &["total_limit"])
            .await
            >= 1.0
    );
    // Closing connections frees their places.
    held.truncate(2);
    wait_for("a place free again", || async {
        matches!(http_get(local(port), "/").await, Ok((200, _))).then_some(())
    })
    .await;
    for s in &mut held {
        assert_eq!(keepalive_get(s, "web").await.unwrap(), 200);
    }
}

#[tokio::test]
async fn a_slowloris_client_is_timed_out_and_others_are_served() {
    let web = Backend::start("web").await;
    let port = free_port();
    let (sy, _) = file_setup(
        "slowloris",
        vec![http_app("/web", port, &[web.addr], json!({}))],
        "client_header_timeout = \"500ms\"\n",
        "",
    );
    sy.wait_routes("served", |r| has_service(r, port)).await;
    let mut slow = TcpStream::connect(local(port)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n")
        .await
        .unwrap();
    // A header line every 100 ms, never the blank line that ends the head: the proxy closes the
    // connection once the header timeout passes, whatever the client keeps sending.
    let dripping = tokio::spawn(async move {
        for i in 0..150 {
            if slow
                .write_all(format!("X-Drip-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {} // a 408 before the close
                Err(_) => {}
            }
        }
        false
    });
    for _ in 0..5 {
        assert_eq!(
            http_get(local(port), "/").await.unwrap(),
            (200, "web".into())
        );
    }
    assert!(
        dripping.await.unwrap(),
        "the slow client was cut off within 15 s"
    );
    assert_eq!(
        http_get(local(port), "/").await.unwrap(),
        (200, "web".into())
    );
}

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

#[tokio::test]
async fn ten_thousand_idle_connections_keep_memory_bounded_and_the_admin_api_answers() {
    raise_fd_limit();
    let web = Backend::start("web").await;
    let port = free_port();
    let (sy, _) = file_setup(
        "idle-10k",
        vec![http_app("/web", port, &[web.addr], json!({}))],
        "client_header_timeout = \"2m\"\n",
        "",
    );
    sy.wait_routes("served", |r| has_service(r, port)).await;
    let before = sy.rss_bytes();
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(TcpStream::connect(local(port)).await.unwrap());
    }
    // Every one accepted and held: a request on the last one is served.
    assert_eq!(
        keepalive_get(idle.last_mut().unwrap(), "web")
            .await
            .unwrap(),
        200
    );
    let (status, _) = sy.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        http_get(local(port), "/").await.unwrap(),
        (200, "web".into())
    );
    let held = sy.rss_bytes();
    eprintln!(
        "resident memory: {} MiB before, {} MiB with 10,000 idle connections",
        before >> 20,
        held >> 20
    );
    assert!(
        held - before < 200 << 20,
        "10,000 idle connections took {} MiB",
        (held - before) >> 20
    );
}

#[tokio::test]
async fn a_hanging_backend_times_out_and_the_request_goes_to_another() {
    let good = Backend::start("good").await;
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s); // accepted, never answered
        }
    });
    let port = free_port();
    let (sy, _) = file_setup(
        "hang",
        vec![http_app("/web", port, &[silent_addr, good.addr], json!({}))],
        "response_timeout = \"200ms\"\n",
        "",
    );
    sy.wait_routes("served", |r| backends(r, port).len() == 2)
        .await;
    for _ in 0..10 {
        assert_eq!(
            http_get(local(port), "/").await.unwrap(),
            (200, "good".into())
        );
    }
    assert!(
        sy.metric("switchyard_http_retries_total", &["replayed"])
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_backend_killed_mid_stream_loses_only_its_own_response() {
    let good = Backend::start("good").await;
    // Sends the head and half the body, then dies.
    let dying = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dying_addr = dying.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = dying.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                .await;
            drop(s);
        }
    });
    let port = free_port();
    let (mut sy, _) = file_setup(
        "killed",
        vec![http_app("/web", port, &[dying_addr, good.addr], json!({}))],
        "",
        "",
    );
    sy.wait_routes("served", |r| backends(r, port).len() == 2)
        .await;
    let (mut cut, mut served) = (0, 0);
    for _ in 0..20 {
        match http_get(local(port), "/").await {
            Ok((200, body)) if body == "good" => served += 1,
            // The cut response reaches the client as cut: it must not pass for whole.
            Ok((200, body)) => {
                assert_eq!(body, "half");
                cut += 1
            }
            Err(_) => cut += 1,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(served >= 10, "served {served}, cut {cut}");
    assert!(sy.alive());
}

/// An HTTP backend whose `/health` answers 200 or 503 as `healthy` says.
async fn switchable_backend(name: &'static str, healthy: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let healthy = healthy.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let status =
                        if req.uri().path() == "/health" && !healthy.load(Ordering::Relaxed) {
                            503
                        } else {
                            200
                        };
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(bytes::Bytes::from(name)))
                                .unwrap(),
                        )
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
async fn active_health_checks_take_a_failing_backend_out_and_bring_it_back() {
    let (up_a, up_b) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    let a = switchable_backend("a", up_a.clone()).await;
    let b = switchable_backend("b", up_b.clone()).await;
    let (port, marathon_port) = (free_port(), free_port());
    // One app checked by the configured default, one by its own Marathon health check.
    let mut checked = http_app("/checked", marathon_port, &[a, b], json!({}));
    checked["healthChecks"] = json!([{"protocol": "MESOS_HTTP", "path": "/health",
        "portIndex": 0, "intervalSeconds": 1, "timeoutSeconds": 1,
        "gracePeriodSeconds": 0, "maxConsecutiveFailures": 1}]);
    for t in checked["tasks"].as_array_mut().unwrap() {
        t["healthCheckResults"] = json!([{"alive": true}]);
    }
    let (sy, _) = file_setup(
        "active-health",
        vec![http_app("/web", port, &[a, b], json!({})), checked],
        "[health_checks]\ndefault = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\n\
         timeout = \"500ms\"\nmax_consecutive_failures = 2\n",
        "",
    );
    sy.wait_routes("served", |r| {
        backends(r, port).len() == 2 && backends(r, marathon_port).len() == 2
    })
    .await;
    up_a.store(false, Ordering::Relaxed);
    for p in [port, marathon_port] {
        wait_for("a taken out", || async {
            let seen = answers(p, 6).await;
            (seen == vec!["b"]).then_some(())
        })
        .await;
        // Out means out: every request now goes to b.
        assert_eq!(answers(p, 10).await, vec!["b"]);
    }
    assert!(sy.metric("switchyard_health_checks_total", &["fail"]).await >= 2.0);
    // The admin API says so, per backend: down by failing active checks, b up.
    let state = |r: &serde_json::Value, addr: SocketAddr| {
        r["services"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["backends"].as_array().unwrap())
            .filter(|b| b["address"] == json!(addr.to_string()))
            .map(|b| b["state"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let routes = sy.routes().await;
    assert_eq!(state(&routes, a), ["down", "down"], "{routes:#}");
    assert_eq!(state(&routes, b), ["up", "up"]);
    up_a.store(true, Ordering::Relaxed);
    for p in [port, marathon_port] {
        wait_for("a back", || async {
            (answers(p, 6).await == vec!["a", "b"]).then_some(())
        })
        .await;
    }
    assert_eq!(state(&sy.routes().await, a), ["up", "up"]);
}

/// The drain timeout a SIGTERM waits for is the one in force, not the one at startup: a reload
/// that shortens it applies to the next stop.
#[tokio::test]
async fn a_reloaded_drain_timeout_is_the_one_a_stop_waits_for() {
    let (echo, _task) = echo_backend().await;
    let port = free_port();
    let dir = temp_dir("drain-reload");
    let file = dir.join("apps.json");
    let tcp = app(
        "/echo",
        port,
        json!({}),
        vec![task("/echo", "echo.1", echo.port())],
    );
    write_apps(&file, vec![tcp]);
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         drain_timeout = \"1h\"\n[runtime]\nconfig_watch_interval = \"50ms\"\n",
        file.display().to_string()
    );
    let mut sy = Switchyard::start("drain-reload", &toml);
    sy.wait_routes("served", |r| has_service(r, port)).await;
    let config = sy.dir.join("switchyard.toml");
    rewrite(
        &config,
        "drain_timeout = \"1h\"",
        "drain_timeout = \"200ms\"",
    );
    wait_for("the reload applied", || async {
        (sy.metric("switchyard_config_reloads_total", &["applied"])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    // A TCP connection that stays open: only the drain timeout ends the stop.
    let mut held = TcpStream::connect(local(port)).await.unwrap();
    held.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    held.read_exact(&mut echoed).await.unwrap();
    sy.signal("TERM");
    // With the startup value this would wait an hour; the deadline is DEADLINE (15 s).
    let status = wait_for("exit after the reloaded drain timeout", || {
        let s = sy.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "{status:?}");
}
