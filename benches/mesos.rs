//! The Mesos source at scale: a 5,000-agent, 50,000-task cluster (20 frameworks, every task with
//! a port resource and a DiscoveryInfo port) served by the Mesos stand-in. Measures, per round:
//! the snapshot's size, the time from starting switchyard to the snapshot applied (`/readyz`)
//! and to a task's name resolving (the zone built), and switchyard's resident memory then;
//! and the time from a `TASK_UPDATED` (staging to running) to the task's name resolving over
//! UDP, p50/p99, on that cluster and on a 100-task one.
//!
//! Each update is a task added in `TASK_STAGING` (not named), then, after a gap that lets the
//! zone build the add started finish (`GAP_MS`, default 3,000 ms on the big cluster, 100 ms on
//! the small one), its `TASK_UPDATED` to `TASK_RUNNING`: the figure is one update's way to DNS,
//! not two builds back to back.
//!
//! Run: `cargo bench --bench mesos` (`ROUNDS=3`, `UPDATES=200`). A benchmark, not a test: it
//! asserts nothing it measures. `cargo bench --bench mesos -- zone`: only the zone build of the
//! big cluster, in process (the cluster parsed from the stand-in's `SUBSCRIBED` event, then
//! `zone::build` timed, median of `ROUNDS`, and the model's clone, which a change makes while a
//! build holds the model).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{Value, json};
use support::Switchyard;
use support::mesos::{Master, agent, framework, task, with_discovery};

const AGENTS: usize = 5_000;
const TASKS: usize = 50_000;
const FRAMEWORKS: usize = 20;

fn cluster(agents: usize, tasks: usize) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let frameworks = (0..FRAMEWORKS)
        .map(|f| framework(&format!("F{f}"), &format!("fw{f}"), "10.255.0.1"))
        .collect();
    let agent_list = (0..agents)
        .map(|a| {
            agent(
                &format!("S{a}"),
                &format!("10.{}.{}.{}", a / 65536, (a / 256) % 256, a % 256),
            )
        })
        .collect();
    let task_list = (0..tasks)
        .map(|t| {
            let port = 20000 + (t % 10000) as u16;
            with_discovery(
                task(
                    &format!("t{t}"),
                    &format!("svc{}", t / 10),
                    &format!("F{}", t % FRAMEWORKS),
                    &format!("S{}", t % agents),
                    &[port],
                ),
                None,
                &[(port, "main", "tcp", json!({}))],
            )
        })
        .collect();
    (frameworks, agent_list, task_list)
}

async fn resolves(dns: SocketAddr, name: &str) -> bool {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&m.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Message::from_vec(&buf[..n]).is_ok_and(|r| !r.answers.is_empty()),
        _ => false,
    }
}

/// Polls `check` every millisecond for up to two minutes.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn dns_listening(sy: &Switchyard) -> SocketAddr {
    support::wait_for("dns listening", || async {
        let line = sy.log_lines("dns listening on ").into_iter().next()?;
        let rest = line.split("dns listening on ").nth(1)?;
        rest.split(|c: char| c.is_whitespace() || c == '\x1b')
            .next()?
            .parse()
            .ok()
    })
    .await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// One round: start switchyard on the cluster, time the ingest, then `updates` TASK_UPDATEDs.
async fn round(agents: usize, tasks: usize, updates: usize) -> (f64, f64, u64, Vec<Duration>) {
    let master = Master::start(Duration::from_secs(15)).await;
    let (f, a, t) = cluster(agents, tasks);
    master.set_state(f, a, t);
    let config = format!(
        "[discovery.mesos]\nmasters = [\"{}\"]\n[dns]\nlisten = \"127.0.0.1:0\"\n",
        master.address()
    );
    let started = Instant::now();
    let sy = Switchyard::start("bench-mesos", &config);
    until("the snapshot", || async {
        sy.get("/readyz").await.0 == 200
    })
    .await;
    let ready = started.elapsed().as_secs_f64();
    let dns = dns_listening(&sy).await;
    let last = format!(
        "svc{}.fw{}.mesos.",
        (tasks - 1) / 10,
        (tasks - 1) % FRAMEWORKS
    );
    until("a name", || resolves(dns, &last)).await;
    let named = started.elapsed().as_secs_f64();
    let rss = sy.rss_bytes();
    let mut latencies = Vec::new();
    for i in 0..updates {
        let id = format!("new{i}");
        let mut staging = task(&id, &format!("new{i}"), "F0", "S0", &[30000]);
        staging["state"] = json!("TASK_STAGING");
        staging["statuses"][0]["state"] = json!("TASK_STAGING");
        master.add_task(staging);
        let name = format!("new{i}.fw0.mesos.");
        // A gap, so that the add's own zone build is over and the update times one build.
        tokio::time::sleep(gap(tasks)).await;
        // The staging task is in the model, not in DNS; then it runs.
        let sent = Instant::now();
        master.update_task(&id, "TASK_RUNNING", 1_700_000_000.0 + i as f64);
        until("the updated task's name", || resolves(dns, &name)).await;
        latencies.push(sent.elapsed());
    }
    (ready, named, rss, latencies)
}

fn gap(tasks: usize) -> Duration {
    let default = if tasks > 1000 { 3000 } else { 100 };
    Duration::from_millis(
        std::env::var("GAP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// The big cluster as switchyard's model, from the stand-in's `SUBSCRIBED` event.
fn model() -> switchyard::cluster::Cluster {
    use switchyard::discovery::mesos::api::{Event, parse_event};
    let (f, a, t) = cluster(AGENTS, TASKS);
    let event = json!({"type": "SUBSCRIBED", "subscribed": {"get_state": {
        "get_tasks": {"tasks": t, "completed_tasks": []},
        "get_executors": {"executors": []},
        "get_frameworks": {"frameworks": f, "completed_frameworks": []},
        "get_agents": {"agents": a, "recovered_agents": []}
    }}});
    let Ok((_, Event::Subscribed(snapshot))) = parse_event(event.to_string().as_bytes()) else {
        panic!("the stand-in's snapshot parses");
    };
    let master = switchyard::cluster::mesos::Master {
        host: String::from("127.0.0.1").into(),
        port: 5050,
    };
    let mut model = switchyard::cluster::Cluster::default();
    model.apply(switchyard::cluster::ClusterUpdate::Mesos(
        snapshot.into_update(master.clone(), vec![master]),
    ));
    model
}

/// `-- zone`: the zone build of the big cluster, in process.
fn zone_build(rounds: usize) {
    let model = model();
    let config = switchyard::zone::ZoneConfig {
        domain: "mesos".into(),
        ttl: 60,
        ip_sources: vec![
            switchyard::zone::IpSource::NetInfo,
            switchyard::zone::IpSource::Host,
        ],
        label_rule: switchyard::cluster::names::LabelRule::Rfc1123,
        ns_addr: None,
        vip_range: None,
        served: Default::default(),
        ptr: false,
        healthy: Default::default(),
    };
    let (mut builds, mut clones) = (Vec::new(), Vec::new());
    let mut names = 0;
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        let zone = switchyard::zone::build(&model, &config);
        builds.push(started.elapsed().as_secs_f64() * 1e3);
        names = zone.names.len();
        drop(zone);
        let started = Instant::now();
        let copy = model.clone();
        clones.push(started.elapsed().as_secs_f64() * 1e3);
        drop(copy);
    }
    println!(
        "zone build, {AGENTS} agents / {TASKS} tasks ({} names, {} bytes a name's node; median of \
         {} rounds): {:.1} ms; the model's clone: {:.1} ms",
        names,
        std::mem::size_of::<switchyard::zone::Node>(),
        builds.len(),
        median(builds),
        median(clones)
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::args().any(|a| a == "zone") {
        let rounds = std::env::var("ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        zone_build(rounds);
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let updates: usize = std::env::var("UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (f, a, t) = cluster(AGENTS, TASKS);
    let snapshot_bytes = json!({"frameworks": f, "agents": a, "tasks": t})
        .to_string()
        .len();
    println!(
        "cluster: {AGENTS} agents, {TASKS} tasks, {FRAMEWORKS} frameworks; snapshot {:.1} MB",
        snapshot_bytes as f64 / 1e6
    );
    for (agents, tasks) in [(AGENTS, TASKS), (10, 100)] {
        let (mut ready, mut named, mut rss, mut all) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (r, n, m, l) = round(agents, tasks, updates).await;
            ready.push(r);
            named.push(n);
            rss.push(m as f64 / (1 << 20) as f64);
            all.extend(l);
        }
        all.sort();
        println!(
            "{agents} agents / {tasks} tasks ({rounds} rounds, medians): start to snapshot applied {:.2} s, \
             to a name resolving {:.2} s, RSS {:.0} MiB; TASK_UPDATED to the name resolving ({} updates): \
             p50 {:.1} ms, p99 {:.1} ms",
            median(ready),
            median(named),
            median(rss),
            all.len(),
            percentile(&all, 0.5).as_secs_f64() * 1e3,
            percentile(&all, 0.99).as_secs_f64() * 1e3,
        );
    }
}
