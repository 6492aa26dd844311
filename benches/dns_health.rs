//! How fast DNS follows health (`dns.healthy_only`): the time from a Marathon health event
//! (`health_status_changed_event` from the stand-in) to the first A answer that reflects it, for
//! `FLIPS` alternating unhealthy/healthy events on one of three tasks, against the release binary.
//! A client polls the name over UDP as fast as answers come back (one query in flight), so the
//! figure is the event → stream → reconciler → zone → swap latency plus at most one query's
//! round trip. Flips are 50 ms apart (isolated changes; a burst is coalesced to one swap per
//! `discovery.debounce`).
//!
//! Run: `cargo bench --bench dns_health`. A benchmark, not a test: it asserts nothing it measures.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::{Value, json};
use support::marathon::{Marathon, app, task};
use support::{Switchyard, wait_for};

const FLIPS: usize = 200;

fn health_event(task_id: &str, alive: bool) -> Value {
    json!({"eventType": "health_status_changed_event", "appId": "/hc",
        "taskId": task_id, "version": "v", "alive": alive, "timestamp": "t"})
}

/// The A answer's addresses for `hc.marathon.mesos`, sorted.
async fn answer(socket: &tokio::net::UdpSocket, server: SocketAddr, query: &[u8]) -> Vec<String> {
    socket.send_to(query, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
    else {
        return Vec::new();
    };
    let Ok(reply) = Message::from_vec(&buf[..n]) else {
        return Vec::new();
    };
    let mut ips: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let marathon = Marathon::start().await;
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let tasks = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let mut t = task("/hc", &format!("hc.{i}"), 31000 + i as u16);
            t["host"] = json!(ip);
            t["ipAddresses"] = json!([{"ipAddress": ip, "protocol": "IPv4"}]);
            t["healthCheckResults"] = json!([{"alive": true, "taskId": format!("hc.{i}")}]);
            t
        })
        .collect();
    let mut a = app("/hc", 0, json!({}), tasks);
    a["healthChecks"] = json!([{"protocol": "MESOS_HTTP", "path": "/"}]);
    marathon.set_apps(vec![a]);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[dns]\nlisten = \"127.0.0.1:0\"\nhealthy_only = true\n",
        marathon.url()
    );
    let sy = Switchyard::start("bench-dns-health", &config);
    let server: SocketAddr = wait_for("dns listening", || async {
        let line = sy.log_lines("dns listening on ").into_iter().next()?;
        let rest = line.split("dns listening on ").nth(1)?;
        rest.split(|c: char| c.is_whitespace() || c == '\x1b')
            .next()?
            .parse()
            .ok()
    })
    .await;
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii("hc.marathon.mesos.").unwrap(),
        RecordType::A,
    ));
    let query = query.to_vec().unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let all: Vec<String> = ips.iter().map(|s| s.to_string()).collect();
    let without: Vec<String> = all[1..].to_vec();
    wait_for("all three answered", || async {
        (answer(&socket, server, &query).await == all).then_some(())
    })
    .await;

    let mut took = Vec::with_capacity(FLIPS);
    let mut queries = 0u64;
    for flip in 0..FLIPS {
        let alive = flip % 2 == 1;
        let want = if alive { &all } else { &without };
        let sent = Instant::now();
        marathon.send_event(health_event("hc.0", alive));
        loop {
            queries += 1;
            if answer(&socket, server, &query).await == *want {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "flip {flip} never seen"
            );
        }
        took.push(sent.elapsed());
        // Health changes of one task come seconds apart, not back to back: let the reconciler's
        // coalescing window (`discovery.debounce`, one swap per 10 ms during a burst) pass, so
        // each flip is measured as the isolated change it is in a cluster.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    took.sort();
    println!(
        "health event -> DNS answer over {FLIPS} flips ({queries} queries): \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&took, 0.50).as_secs_f64() * 1e3,
        percentile(&took, 0.90).as_secs_f64() * 1e3,
        percentile(&took, 0.99).as_secs_f64() * 1e3,
        took.last().unwrap().as_secs_f64() * 1e3,
    );
}
