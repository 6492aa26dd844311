//! Reconfiguration figures, against the Marathon stand-in and the release binary:
//!
//! 1. event → first request: the time from a `status_update_event` written to the event stream
//!    to the first request served by the new task (p50, p99 over `CHANGES` changes);
//! 2. failed requests during `SWAPS` table swaps under wrk load (when wrk is installed).
//!
//! Run: `cargo bench --bench reconfig`. A benchmark, not a test: it asserts nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::marathon::{Marathon, app, status_update, task};
use support::{Backend, Switchyard, backends, free_port};

const CHANGES: usize = 100;
const SWAPS: usize = 1000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there are no tests here
    }
    let marathon = Marathon::start().await;
    let mut pool = Vec::new();
    for i in 0..=CHANGES {
        pool.push(Backend::start(&format!("b{i}")).await);
    }
    let port = free_port();
    let labels = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "http"});
    marathon.set_apps(vec![app(
        "/r",
        port,
        labels.clone(),
        vec![task("/r", "r.0", pool[0].port())],
    )]);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\n",
        marathon.url()
    );
    let sy = Switchyard::start("bench-reconfig", &config);
    sy.wait_routes("initial", |r| backends(r, port) == vec![pool[0].addr])
        .await;
    support::wait_for("subscribed", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;

    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut client, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);

    let mut samples = Vec::with_capacity(CHANGES);
    for i in 1..=CHANGES {
        let (new, old) = (&pool[i], &pool[i - 1]);
        marathon.update_app("/r", |a| {
            a["tasks"] = json!([task("/r", &format!("r.{i}"), new.port())])
        });
        let both = format!(
            "event: status_update_event\r\ndata: {}\r\n{}\r\n\r\n",
            status_update("/r", &format!("r.{i}"), new.port(), "TASK_RUNNING"),
            status_update("/r", &format!("r.{}", i - 1), old.port(), "TASK_KILLED"),
        );
        // Changes 30 ms apart, past the debounce window: each measures an isolated event.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let sent = Instant::now();
        marathon.send_raw(both.as_bytes());
        loop {
            let req = hyper::Request::get("/")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = client.send_request(req).await.unwrap();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            if body == new.name.as_bytes() {
                samples.push(sent.elapsed());
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "change {i} never reached routing"
            );
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "event -> first request served by the new task, {CHANGES} changes 30 ms apart: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*samples.last().unwrap())
    );

    swaps_under_load(&marathon, &sy, port, &pool).await;
}

/// Toggles a second task in and out `SWAPS` times while wrk runs, then reports wrk's errors.
async fn swaps_under_load(marathon: &Marathon, sy: &Switchyard, port: u16, pool: &[Backend]) {
    let Ok(wrk) = std::process::Command::new("wrk")
        .args(["-t1", "-c20", "-d25s", &format!("http://127.0.0.1:{port}/")])
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        println!("table swaps under load: skipped (wrk not installed)");
        return;
    };
    let live = &pool[CHANGES];
    let extra = &pool[0];
    let generation = |r: &serde_json::Value| r["generation"].as_u64().unwrap();
    let start_generation = generation(&sy.routes().await);
    tokio::time::sleep(Duration::from_millis(500)).await; // let wrk connect
    for n in 0..SWAPS {
        let state = if n % 2 == 0 {
            "TASK_RUNNING"
        } else {
            "TASK_KILLED"
        };
        marathon.send_event(status_update("/r", "r.extra", extra.port(), state));
        // Spaced past the 10 ms debounce, so that every event makes its own swap.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let swaps = generation(&sy.routes().await) - start_generation;
    let out = wrk.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    println!(
        "table swaps under wrk -t1 -c20 load: {swaps} swaps (backend {} kept, {} toggled); {}; non-2xx: {}; socket errors: {}",
        live.addr,
        extra.addr,
        line("requests in"),
        if line("Non-2xx").is_empty() {
            "0".into()
        } else {
            line("Non-2xx")
        },
        if line("Socket errors").is_empty() {
            "none".into()
        } else {
            line("Socket errors")
        },
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
