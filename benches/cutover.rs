//! Blue-green figures against the Marathon stand-in and the release binary: `CUTOVERS`
//! consecutive cutovers (deploy the other colour with a health check, make it healthy, kill the
//! old colour, delete it) under continuous load from four keep-alive clients, counting every
//! request; and the time from the health event that makes the new colour routable to the first
//! request it serves.
//!
//! Run: `cargo bench --bench cutover`. A benchmark, not a test: it asserts nothing it measures.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::marathon::{Marathon, app, status_update, task};
use support::{Backend, Switchyard, backends, free_port, wait_for};

const CUTOVERS: usize = 100;

fn colour(id: &str, port: u16, pool: &[Backend]) -> Value {
    let labels = json!({"HAPROXY_0_MODE": "http", "HAPROXY_DEPLOYMENT_GROUP": "shop"});
    let tasks = pool
        .iter()
        .enumerate()
        .map(|(i, b)| task(id, &format!("{id}.{i}"), b.port()))
        .collect();
    let mut a = app(id, port, labels, tasks);
    a["healthChecks"] = json!([{"protocol": "MESOS_HTTP", "path": "/"}]);
    a
}

fn healthy(mut a: Value) -> Value {
    for t in a["tasks"].as_array_mut().unwrap() {
        t["healthCheckResults"] = json!([{"alive": true}]);
    }
    a
}

type Client = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

async fn client(port: u16) -> Client {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(client: &mut Client) -> Option<String> {
    let req = hyper::Request::get("/")
        .header("host", "shop")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.send_request(req).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .ok()?
        .to_bytes();
    Some(String::from_utf8_lossy(&body).to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pools = [
        vec![Backend::start("blue").await, Backend::start("blue").await],
        vec![Backend::start("green").await, Backend::start("green").await],
    ];
    let marathon = Marathon::start().await;
    let port = free_port();
    let ids = ["/shop-blue", "/shop-green"];
    marathon.set_apps(vec![healthy(colour(ids[0], port, &pools[0]))]);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\ndrain_timeout = \"2s\"\n",
        marathon.url()
    );
    let sy = Switchyard::start("bench-cutover", &config);
    sy.wait_routes("blue", |r| backends(r, port).len() == 2)
        .await;
    wait_for("subscribed", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut c = client(port).await;
            while !stop.load(Ordering::Relaxed) {
                match get(&mut c).await {
                    Some(_) => ok.fetch_add(1, Ordering::Relaxed),
                    None => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut probe = client(port).await;
    let mut samples = Vec::new();
    for i in 0..CUTOVERS {
        let (old, new) = (i % 2, (i + 1) % 2);
        let (old_app, new_app) = (
            healthy(colour(ids[old], port, &pools[old])),
            colour(ids[new], port, &pools[new]),
        );
        // Deploy the new colour beside the old one: not healthy yet, so it takes nothing.
        marathon.set_apps(vec![old_app.clone(), new_app.clone()]);
        marathon
            .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": ids[new]}}));
        sy.wait_routes("new colour deployed", |r| {
            r["routes"].to_string().contains(ids[new])
        })
        .await;
        // It turns healthy: time to its first request.
        marathon.set_apps(vec![old_app, healthy(new_app.clone())]);
        let sent = Instant::now();
        for t in 0..pools[new].len() {
            marathon.send_event(json!({"eventType": "health_status_changed_event", "appId": ids[new],
                "taskId": format!("{}.{t}", ids[new]), "version": "v", "alive": true, "timestamp": "t"}));
        }
        let new_name = pools[new][0].name.clone();
        loop {
            if get(&mut probe).await.as_deref() == Some(new_name.as_str()) {
                samples.push(sent.elapsed());
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "new colour never served"
            );
        }
        // The old colour's tasks are killed, then the app is deleted.
        for (t, b) in pools[old].iter().enumerate() {
            marathon.send_event(status_update(
                ids[old],
                &format!("{}.{t}", ids[old]),
                b.port(),
                "TASK_KILLING",
            ));
        }
        marathon.set_apps(vec![healthy(new_app)]);
        marathon.send_event(json!({"eventType": "app_terminated_event", "appId": ids[old]}));
        sy.wait_routes("old colour gone", |r| {
            !r["routes"].to_string().contains(ids[old])
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    samples.sort();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1e3
    };
    println!(
        "{CUTOVERS} blue-green cutovers under load (4 keep-alive clients): {} requests, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "health event -> first request served by the new colour: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
