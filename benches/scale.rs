//! Scale figures: a synthetic cluster of 10,000 apps x 10 tasks (snapshot parse time, compile
//! time, resident memory of model + table), and 1,000 service-port listeners open at once in the
//! release binary (time to open, every port answering, the process's resident memory).
//!
//! Run: `cargo bench --bench scale`. A benchmark, not a test: it asserts nothing it measures.

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "support/synthetic.rs"]
mod synthetic;

use std::time::Instant;

use serde_json::json;
use switchyard::cluster::{Cluster, ClusterUpdate};
use switchyard::discovery::marathon::api;
use switchyard::routing::{CompileConfig, compile};

const APPS: usize = 10_000;
const TASKS: usize = 10;
const LISTENERS: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        return measure(&args[i + 1]);
    }
    // Generating the JSON costs far more memory than reading it: measure in a fresh process.
    let dir = support::temp_dir("bench-scale-json");
    let file = dir.join("apps.json");
    std::fs::write(&file, synthetic::apps_json(APPS, TASKS, 10000)).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--measure")
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(dir);
    listeners();
}

fn rss_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn measure(path: &str) {
    let (base_rss, _) = rss_kib("self");
    let json = std::fs::read(path).unwrap();
    let started = Instant::now();
    let parsed = api::parse_apps(&json).unwrap();
    let parse = started.elapsed();
    let json_mib = json.len() as f64 / (1 << 20) as f64;
    drop(json);
    let mut cluster = Cluster::default();
    cluster.apply(ClusterUpdate::Snapshot(parsed.apps));
    let config = CompileConfig::group("external", "0.0.0.0".parse().unwrap());
    let mut compiles = Vec::new();
    let mut table = None;
    for _ in 0..5 {
        let started = Instant::now();
        table = Some(compile(&cluster, &config));
        compiles.push(started.elapsed());
    }
    compiles.sort();
    let table = table.unwrap();
    let backends: usize = table.services.iter().map(|s| s.backends.len()).sum();
    let (rss, peak) = rss_kib("self");
    println!(
        "{APPS} apps x {TASKS} tasks: snapshot {json_mib:.1} MiB parsed in {:.0} ms; compile median {:.1} ms (min {:.1}, max {:.1}) -> {} services, {backends} backends",
        parse.as_secs_f64() * 1e3,
        compiles[2].as_secs_f64() * 1e3,
        compiles[0].as_secs_f64() * 1e3,
        compiles[4].as_secs_f64() * 1e3,
        table.services.len(),
    );
    println!(
        "resident memory with model + table: {:.0} MiB above a {:.0} MiB baseline (peak, with the snapshot text and its parse: {:.0} MiB)",
        (rss - base_rss) as f64 / 1024.0,
        base_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let zone_config = switchyard::dns::zone::ZoneConfig {
        domain: "mesos".into(),
        ttl: 60,
        ip_sources: vec![switchyard::dns::zone::IpSource::Auto],
        label_rule: switchyard::dns::names::LabelRule::Rfc1123,
        ns_addr: None,
        vip_range: None,
    };
    let mut dns_compiles = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let t = switchyard::dns::zone::build(&cluster, &zone_config);
        dns_compiles.push(started.elapsed());
        drop(t);
    }
    dns_compiles.sort();
    println!(
        "DNS zone build (off the swap path, on a blocking thread): median {:.1} ms",
        dns_compiles[1].as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "current_thread")]
async fn listeners() {
    let backend = support::Backend::start("b").await;
    let mut ports = Vec::new();
    let mut candidate = 21000u16;
    while ports.len() < LISTENERS {
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            ports.push(candidate);
        }
        candidate += 1;
    }
    let apps: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let id = format!("/many/app{i}");
            support::marathon::app(
                &id,
                port,
                json!({}),
                vec![support::marathon::task(
                    &id,
                    &format!("t{i}"),
                    backend.port(),
                )],
            )
        })
        .collect();
    let dir = support::temp_dir("bench-scale");
    let file = dir.join("apps.json");
    std::fs::write(&file, json!({ "apps": apps }).to_string()).unwrap();
    let started = Instant::now();
    let sy = support::Switchyard::start(
        "bench-scale",
        &format!(
            "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
            file.display().to_string()
        ),
    );
    sy.wait_routes("all listeners open", |r| {
        let services = r["services"].as_array().unwrap();
        services.len() == LISTENERS && services.iter().all(|s| s["listener"] == "open")
    })
    .await;
    let open = started.elapsed();
    let mut answered = 0;
    for &port in &ports {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        if let Ok((200, body)) = support::http_get(addr, "/").await {
            answered += usize::from(body == "b");
        }
    }
    let (rss, _) = rss_kib(&sy.child.id().to_string());
    println!(
        "{LISTENERS} service ports: all open {:.0} ms after start, {answered}/{LISTENERS} answered through switchyard, switchyard resident {:.1} MiB",
        open.as_secs_f64() * 1e3,
        rss as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(dir);
}
