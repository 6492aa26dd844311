//! A thousand instances on one Marathon: what a leader change costs Marathon, and how long until
//! every instance is current again.
//!
//! Subscribers are the Marathon source alone, in process (`discovery::marathon::MarathonSource`,
//! the code every instance runs: its stream, its snapshots, its backoff and its jitter), each
//! with its own channel and a consumer that follows one marker app. Two Marathon stand-ins
//! (`tests/support/marathon.rs`) serve `A` apps; one leads, the other redirects to it.
//!
//! A round is one leader change: the standby's marker app moves on a generation, the standby
//! takes the lead, the old leader redirects to it and drops every event stream (what Marathon
//! does on failover). Reported per round: requests and bytes Marathon served (both stand-ins,
//! every answer: streams, snapshots, single apps, redirects) and full snapshots among them,
//! time until every subscriber has applied the new marker generation (p50, p99, max), and
//! subscribers that ever applied a marker older than one they had (a table going back).
//! Followed by Marathon's requests and MiB per 250 ms of the median round.
//!
//! `MODE=direct` (default): every subscriber follows Marathon itself, as instances do without
//! relays. `MODE=relay`: `RELAYS` switchyard processes (the release or debug binary, `[relay]`
//! on) follow Marathon, and the subscribers follow the relays (subscriber i: relay i mod R, then
//! the next), as agent-role instances behind relays do.
//!
//! Run: `cargo bench --bench herd` with `N=1000 APPS=500 ROUNDS=3 MODE=direct|relay RELAYS=3`,
//! and `GZIP=0` for a Marathon that answers uncompressed (the default serves gzip to whoever
//! asks, as Marathon does; switchyard asks).
//! A benchmark, not a test: it asserts nothing it measures.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::marathon::{Marathon, app, task};
use switchyard::cluster::ClusterUpdate;
use switchyard::discovery::SourceEvent;
use switchyard::discovery::marathon::client::{BaseUrl, Client};
use switchyard::discovery::marathon::{MarathonSource, Settings};
use switchyard::metrics::Metrics;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A cluster of `n` apps with three tasks each, and the marker app at `generation`.
fn cluster(n: usize, generation: u64) -> Vec<Value> {
    let mut apps: Vec<Value> = (0..n)
        .map(|i| {
            let id = format!("/svc/app-{i}");
            let tasks = (0..3)
                .map(|t| task(&id, &format!("app-{i}.{t}"), 20000 + t as u16))
                .collect();
            app(
                &id,
                (10000 + i % 20000) as u16,
                json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": format!("app-{i}.example.com")}),
                tasks,
            )
        })
        .collect();
    apps.push(marker(generation));
    apps
}

fn marker(generation: u64) -> Value {
    app(
        "/marker",
        9999,
        json!({"GENERATION": generation.to_string()}),
        vec![task("/marker", "marker.1", 9999)],
    )
}

/// One subscriber's view: the newest marker generation applied, when it got there, and
/// whether it ever went back.
#[derive(Default)]
struct Seen {
    generation: AtomicU64,
    at_us: AtomicU64,
    went_back: AtomicUsize,
}

impl Seen {
    fn apply(&self, generation: u64, epoch: Instant) {
        let previous = self.generation.load(Ordering::Relaxed);
        if generation < previous {
            self.went_back.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if generation > previous {
            self.generation.store(generation, Ordering::Relaxed);
            self.at_us
                .store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }
}

fn marker_generation(app: &switchyard::cluster::App) -> Option<u64> {
    (&*app.id == "/marker")
        .then(|| app.labels.get("GENERATION")?.parse().ok())
        .flatten()
}

fn subscriber(urls: Vec<BaseUrl>, seen: Arc<Seen>, metrics: Arc<Metrics>, epoch: Instant) {
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel(64);
    let (_refetch_tx, refetch_rx) = tokio::sync::mpsc::channel(16);
    let source = MarathonSource {
        urls,
        client: Client::new(None, None, Duration::from_secs(5), Duration::from_secs(30)),
        config: Settings {
            resync_interval: Duration::from_secs(3600),
            debounce: Duration::from_millis(10),
            stream_idle_timeout: Duration::from_secs(90),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            max_event_bytes: 1 << 20,
            max_snapshot_bytes: 256 << 20,
            resync_jitter: Duration::from_millis(env("JITTER_MS", 2000) as u64),
            removal_guard: switchyard::discovery::marathon::guard::RemovalGuard {
                max_fraction: 0.5,
                confirm_delay: Duration::from_secs(5),
            },
        },
        events: events_tx,
        refetch: refetch_rx,
        resync: Arc::default(),
        metrics,
    };
    tokio::spawn(async move {
        let _refetch_tx = _refetch_tx;
        source.run().await
    });
    tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            let SourceEvent::Update(update) = event else {
                continue;
            };
            match update {
                ClusterUpdate::Snapshot(apps) => {
                    match apps.iter().find_map(marker_generation) {
                        Some(g) => seen.apply(g, epoch),
                        // A snapshot without the marker: a table without apps it had.
                        None => {
                            seen.went_back.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                ClusterUpdate::AppUpserted(app) => {
                    if let Some(g) = marker_generation(&app) {
                        seen.apply(g, epoch);
                    }
                }
                _ => {}
            }
        }
    });
}

struct Round {
    requests: usize,
    bytes: usize,
    snapshots: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    current: usize,
    went_back: usize,
    buckets: Vec<(usize, usize)>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn relay_config(urls: &[String], port: u16) -> String {
    let urls = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[discovery]\nmarathon = [{urls}]\nbackoff_initial = \"250ms\"\n\
         [runtime]\nworkers = 1\n[proxy]\ngroup = \"none\"\nbind = \"127.0.0.1\"\n\
         [relay]\nlisten = \"127.0.0.1:{port}\"\nmax_subscribers = 2000\n"
    )
}

fn main() {
    let n = env("N", 1000);
    let apps = env("APPS", 500);
    let rounds = env("ROUNDS", 3);
    let relays = env("RELAYS", 3);
    let mode = std::env::var("MODE").unwrap_or_else(|_| "direct".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let m1 = Marathon::start().await;
        let m2 = Marathon::start().await;
        let mut generation = 1;
        m1.set_apps(cluster(apps, generation));
        m2.set_apps(cluster(apps, generation));
        m2.redirect_to(&m1);
        // GZIP=0: Marathon answers uncompressed (as before switchyard asked for gzip).
        let gzip = env("GZIP", 1) == 1;
        m1.serve_gzip(gzip);
        m2.serve_gzip(gzip);
        let snapshot_bytes = json!({ "apps": cluster(apps, 1) }).to_string().len();
        let marathon_urls = vec![m1.url(), m2.url()];

        let mut relay_procs = Vec::new();
        let subscriber_urls: Vec<Vec<BaseUrl>> = if mode == "relay" {
            let mut addrs = Vec::new();
            for r in 0..relays {
                let port = support::free_port();
                let sy = support::Switchyard::start(
                    &format!("herd-relay-{r}"),
                    &relay_config(&marathon_urls, port),
                );
                relay_procs.push(sy);
                addrs.push(format!("http://127.0.0.1:{port}"));
            }
            for sy in &relay_procs {
                support::wait_for("relay ready", || async {
                    (sy.get("/readyz").await.0 == 200).then_some(())
                })
                .await;
            }
            (0..n)
                .map(|i| {
                    vec![
                        BaseUrl::parse(&addrs[i % relays]).unwrap(),
                        BaseUrl::parse(&addrs[(i + 1) % relays]).unwrap(),
                    ]
                })
                .collect()
        } else {
            let urls: Vec<BaseUrl> = marathon_urls
                .iter()
                .map(|u| BaseUrl::parse(u).unwrap())
                .collect();
            vec![urls; n]
        };

        let epoch = Instant::now();
        let metrics = Arc::new(Metrics::new());
        let seen: Vec<Arc<Seen>> = (0..n).map(|_| Arc::default()).collect();
        let started = Instant::now();
        for (i, s) in seen.iter().enumerate() {
            subscriber(subscriber_urls[i].clone(), s.clone(), metrics.clone(), epoch);
        }
        wait_all(&seen, generation, Duration::from_secs(300)).await;
        eprintln!(
            "mode {mode}: {n} subscribers, {apps} apps ({:.2} MiB snapshot, gzip {gzip}){}; all synced in {:.1} s",
            snapshot_bytes as f64 / (1 << 20) as f64,
            if mode == "relay" {
                format!(", {relays} relays")
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        );
        let rss_kb = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        eprintln!("bench process RSS {} MiB", rss_kb / 1024);

        let (mut leader, mut standby) = (m1.clone(), m2.clone());
        let mut results = Vec::new();
        for round in 0..rounds {
            // Quiet before the change: what is left over is not this round's.
            tokio::time::sleep(Duration::from_secs(1)).await;
            m1.clear_served();
            m2.clear_served();
            generation += 1;
            let before: Vec<u64> = seen
                .iter()
                .map(|s| s.went_back.load(Ordering::Relaxed) as u64)
                .collect();
            standby.update_app("/marker", |a| *a = marker(generation));
            let t0_us = epoch.elapsed().as_micros() as u64;
            let t0 = Instant::now();
            standby.lead();
            leader.redirect_to(&standby);
            leader.drop_streams();
            let current = wait_all(&seen, generation, Duration::from_secs(120)).await;
            let mut times: Vec<f64> = seen
                .iter()
                .filter(|s| s.generation.load(Ordering::Relaxed) >= generation)
                .map(|s| (s.at_us.load(Ordering::Relaxed).saturating_sub(t0_us)) as f64 / 1e3)
                .collect();
            times.sort_by(f64::total_cmp);
            // Let stragglers' requests land before counting.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let served: Vec<_> = m1.served().into_iter().chain(m2.served()).collect();
            let mut buckets = Vec::new();
            for s in &served {
                let b = s.at.saturating_duration_since(t0).as_millis() as usize / 250;
                if buckets.len() <= b {
                    buckets.resize(b + 1, (0, 0));
                }
                buckets[b].0 += 1;
                buckets[b].1 += s.bytes;
            }
            let went_back = seen
                .iter()
                .zip(&before)
                .filter(|(s, b)| s.went_back.load(Ordering::Relaxed) as u64 > **b)
                .count();
            let r = Round {
                requests: served.len(),
                bytes: served.iter().map(|s| s.bytes).sum(),
                snapshots: served.iter().filter(|s| s.path == "/v2/apps").count(),
                p50_ms: percentile(&times, 0.5),
                p99_ms: percentile(&times, 0.99),
                max_ms: times.last().copied().unwrap_or(f64::NAN),
                current,
                went_back,
                buckets,
            };
            eprintln!(
                "round {round}: requests {} | {:.1} MiB | snapshots {} | current {}/{n} | p50 {:.0} ms p99 {:.0} ms max {:.0} ms | went back {}",
                r.requests,
                r.bytes as f64 / (1 << 20) as f64,
                r.snapshots,
                r.current,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.went_back
            );
            results.push(r);
            std::mem::swap(&mut leader, &mut standby);
        }
        results.sort_by(|a, b| a.max_ms.total_cmp(&b.max_ms));
        let median = &results[results.len() / 2];
        println!(
            "| {mode} | {n} | {apps} | {} | {} | {:.1} | {} | {}/{n} | {:.0} | {:.0} | {:.0} | {} |",
            if mode == "relay" {
                relays.to_string()
            } else {
                "-".into()
            },
            median.requests,
            median.bytes as f64 / (1 << 20) as f64,
            median.snapshots,
            median.current,
            median.p50_ms,
            median.p99_ms,
            median.max_ms,
            median.went_back
        );
        println!("Marathon per 250 ms of the median round (requests, MiB):");
        for (i, (requests, bytes)) in median.buckets.iter().enumerate() {
            if *requests > 0 {
                println!(
                    "  {:>5} ms  {requests:>5}  {:.2}",
                    i * 250,
                    *bytes as f64 / (1 << 20) as f64
                );
            }
        }
        drop(relay_procs);
    });
}

/// Waits until every subscriber has applied `generation` (or `limit` passes); how many have.
async fn wait_all(seen: &[Arc<Seen>], generation: u64, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let current = seen
            .iter()
            .filter(|s| s.generation.load(Ordering::Relaxed) >= generation)
            .count();
        if current == seen.len() || Instant::now() > deadline {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
