//! Scale figures: a synthetic cluster of 10,000 apps x 10 tasks (snapshot parse time, compile
//! time, resident memory of model + table), and 1,000 service-port listeners open at once in the
//! release binary (time to open, every port answering, the process's resident memory), and how
//! long proxied requests stall while that 10,000-app cluster is re-read and recompiled.
//!
//! And how long a table swap waits while `/v1/routes` of that cluster is polled (`routes_poll`).
//!
//! And event -> route at that scale (`events`): one app's task event applied through the real
//! reconciler (`Reconciler::run`: apply, compile, attach backend states, publish) in this
//! process, timed until its table is published, with the control thread's CPU per event.
//!
//! Run: `cargo bench --bench scale` (`-- stalls` for the stall figures alone, `-- routes-poll`
//! for the swap delay under `/v1/routes` polling alone, `-- model` for the model, compile and
//! zone figures alone, `-- zone` for the zone build alone: the snapshot parsed, then
//! `ZONE_ROUNDS` builds (default 5), no compile, so that a profiler or
//! `valgrind --tool=callgrind` sees the zone and little else; `-- compile` for the full
//! compile alone: the snapshot parsed, then `COMPILE_ROUNDS` full compiles (default 5), for
//! `perf stat` or a profiler; `-- events` for event -> route alone; `SCALE_APPS=50000` for 50k). A benchmark, not a test: it asserts nothing it measures.

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "support/synthetic.rs"]
mod synthetic;

use std::time::Instant;

use serde_json::json;
use switchyard::cluster::{Cluster, ClusterUpdate};
use switchyard::discovery::marathon::api;
use switchyard::routing::{CompileConfig, compile};

const TASKS: usize = 10;

/// Apps in the synthetic cluster: 10,000, or `SCALE_APPS` (e.g. 50000 for the 50k figures).
fn apps() -> usize {
    std::env::var("SCALE_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Counts the bytes held on the heap, so that a structure's cost is measured exactly (RSS moves
/// in pages and keeps what the allocator does not return).
struct Counting;

static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        HELD.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new, std::sync::atomic::Ordering::Relaxed);
        HELD.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held() -> usize {
    HELD.load(std::sync::atomic::Ordering::Relaxed)
}

/// This thread's system time and minor page faults so far (the kernel's share of a build:
/// mostly faulting in fresh pages for what it writes).
fn thread_sys() -> (std::time::Duration, i64) {
    // SAFETY: a zeroed rusage is valid, and getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let sys =
        std::time::Duration::new(ru.ru_stime.tv_sec as u64, ru.ru_stime.tv_usec as u32 * 1000);
    (sys, ru.ru_minflt)
}

/// CPU time this thread has used: a figure that other processes on the machine do not inflate,
/// as they do wall-clock time.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
const LISTENERS: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    // `cargo bench --bench scale -- stalls`: only the stall figures.
    if args.iter().any(|a| a == "stalls") {
        return stalls();
    }
    // `cargo bench --bench scale -- routes-poll`: only the swap delay under /v1/routes polls.
    if args.iter().any(|a| a == "routes-poll") {
        return routes_poll();
    }
    // `-- events`: event -> route through the real reconciler, in this process.
    if args.iter().any(|a| a == "events") {
        return events();
    }
    if let Some(i) = args.iter().position(|a| a == "--measure") {
        if args.iter().any(|a| a == "compile") {
            return compiles_only(&args[i + 1]);
        }
        return measure(&args[i + 1], args.iter().any(|a| a == "zone"));
    }
    // Generating the JSON costs far more memory than reading it: measure in a fresh process.
    let dir = support::temp_dir("bench-scale-json");
    let file = dir.join("apps.json");
    std::fs::write(&file, synthetic::apps_json(apps(), TASKS, 10000)).unwrap();
    let zone_only = args.iter().any(|a| a == "zone");
    let compile_only = args.iter().any(|a| a == "compile");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--measure")
        .arg(&file)
        .args(zone_only.then_some("zone"))
        .args(compile_only.then_some("compile"))
        .status()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(dir);
    // `-- model`: the model, compile and zone figures alone (`-- zone`: the zone alone).
    if zone_only || compile_only || args.iter().any(|a| a == "model") {
        return;
    }
    listeners();
    stalls();
    routes_poll();
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

fn measure(path: &str, zone_only: bool) {
    #[allow(non_snake_case)]
    let APPS = apps();
    let (base_rss, _) = rss_kib("self");
    let start_heap = held();
    let json = std::fs::read(path).unwrap();
    let started = Instant::now();
    let parsed = api::parse_apps(&json).unwrap();
    let parse = started.elapsed();
    let json_mib = json.len() as f64 / (1 << 20) as f64;
    drop(json);
    let mut cluster = Cluster::default();
    cluster.apply(ClusterUpdate::Snapshot(parsed.apps));
    if zone_only {
        let rounds = std::env::var("ZONE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        // `ZONE_INCR=1`: the incremental build (`zone::Incremental`), one app changed per build.
        if std::env::var_os("ZONE_INCR").is_some_and(|v| v == "1") {
            return zone_incremental(cluster, rounds);
        }
        return zone_builds(&cluster, rounds);
    }
    // Held by the model alone: the snapshot text is gone, the parsed apps moved into it.
    let model_bytes = held() - start_heap;
    let config = CompileConfig::group("external", "0.0.0.0".parse().unwrap());
    let mut compiles = Vec::new();
    let mut compile_cpu = Vec::new();
    let mut table = None;
    let mut hash_cpu = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let cpu = thread_cpu();
        let t = compile(&cluster, &config);
        compile_cpu.push(thread_cpu() - cpu);
        compiles.push(started.elapsed());
        // The table hash: computed when first asked for, once the table is live.
        let cpu = thread_cpu();
        std::hint::black_box(t.hash());
        hash_cpu.push(thread_cpu() - cpu);
        table = Some(t);
    }
    compiles.sort();
    compile_cpu.sort();
    hash_cpu.sort();
    println!(
        "table hash of the full table: CPU median {:.1} ms (after the table is live; part of compile before)",
        hash_cpu[2].as_secs_f64() * 1e3
    );
    let before_table = held();
    drop(table.take());
    let table_bytes = before_table - held();
    let table = compile(&cluster, &config);
    let backends: usize = table.services.iter().map(|s| s.backends.len()).sum();
    let (rss, peak) = rss_kib("self");
    println!(
        "{APPS} apps x {TASKS} tasks: snapshot {json_mib:.1} MiB parsed in {:.0} ms; compile median {:.1} ms (min {:.1}, max {:.1}; CPU median {:.1} ms) -> {} services, {backends} backends",
        parse.as_secs_f64() * 1e3,
        compiles[2].as_secs_f64() * 1e3,
        compiles[0].as_secs_f64() * 1e3,
        compiles[4].as_secs_f64() * 1e3,
        compile_cpu[2].as_secs_f64() * 1e3,
        table.services.len(),
    );
    println!(
        "heap held: model {:.0} MiB ({:.0} bytes per task), table {:.0} MiB ({:.0} bytes per backend)",
        model_bytes as f64 / (1 << 20) as f64,
        model_bytes as f64 / (APPS * TASKS) as f64,
        table_bytes as f64 / (1 << 20) as f64,
        table_bytes as f64 / backends.max(1) as f64,
    );
    println!(
        "resident memory with model + table: {:.0} MiB above a {:.0} MiB baseline (peak, with the snapshot text and its parse: {:.0} MiB)",
        (rss - base_rss) as f64 / 1024.0,
        base_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    one_event_compiles(&mut cluster, &config);
    zone_builds(&cluster, 5);
}

/// `-- compile`: the snapshot parsed, then `COMPILE_ROUNDS` full compiles as `-- model` makes
/// them (each table hashed, the last one kept while the next is compiled) and nothing else, so
/// that `perf stat` or a profiler sees the compile; `COMPILE_DROP=1` drops each table first.
fn compiles_only(path: &str) {
    let json = std::fs::read(path).unwrap();
    let parsed = api::parse_apps(&json).unwrap();
    drop(json);
    let mut cluster = Cluster::default();
    cluster.apply(ClusterUpdate::Snapshot(parsed.apps));
    let config = CompileConfig::group("external", "0.0.0.0".parse().unwrap());
    let rounds: usize = std::env::var("COMPILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let drop_first = std::env::var_os("COMPILE_DROP").is_some_and(|v| v == "1");
    let (mut cpu, mut sys, mut faults) = (Vec::new(), Vec::new(), Vec::new());
    let mut table = None;
    let mut hash = 0;
    for _ in 0..rounds.max(1) {
        if drop_first {
            drop(table.take());
        }
        let (sys_before, faults_before) = thread_sys();
        let started = thread_cpu();
        let t = compile(&cluster, &config);
        cpu.push(thread_cpu() - started);
        let (sys_after, faults_after) = thread_sys();
        sys.push(sys_after - sys_before);
        faults.push(faults_after - faults_before);
        hash = t.hash();
        table = Some(t);
    }
    cpu.sort();
    sys.sort();
    faults.sort();
    println!(
        "{} full compiles: CPU median {:.1} ms (min {:.1}), of which system time median {:.1} ms, minor page faults median {} (table hash {hash:016x})",
        cpu.len(),
        cpu[cpu.len() / 2].as_secs_f64() * 1e3,
        cpu[0].as_secs_f64() * 1e3,
        sys[sys.len() / 2].as_secs_f64() * 1e3,
        faults[faults.len() / 2],
    );
}

/// A task event on one app at a time, each compiled with the parts kept from the last compile
/// (`routing::compile::Cache`, as the reconciler does): the CPU of a compile after one change.
fn one_event_compiles(cluster: &mut Cluster, config: &CompileConfig) {
    use switchyard::routing::compile::{Cache, compile_cached};
    let mut cache = Cache::default();
    drop(compile_cached(&mut cache, cluster, config));
    let ids: Vec<_> = cluster.apps.keys().cloned().collect();
    let mut cpu = Vec::new();
    let mut table = None;
    for k in 0..41 {
        let app = ids[(k * 7919) % ids.len()].clone();
        let task = switchyard::cluster::Task {
            id: format!("{app}.extra").into(),
            host: "10.9.0.1".into(),
            ports: vec![32000].into(),
            ip_addresses: Default::default(),
            state: switchyard::cluster::TaskState::Running,
            healthy: Some(true),
            ready: None,
            changed_ms: 0,
        };
        cluster.apply(ClusterUpdate::TaskStatus { app_id: app, task });
        // The previous table freed outside the timing, as the reconciler frees it off its path.
        drop(table.take());
        let started = thread_cpu();
        table = Some(compile_cached(&mut cache, cluster, config));
        cpu.push(thread_cpu() - started);
        assert_eq!(cache.recompiled, 1);
    }
    cpu.sort();
    let at = |q: f64| cpu[((cpu.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "one-event compile (one app changed, the others' parts reused): CPU p50 {:.2} ms, p99 {:.2} ms ({} events; the table hash, computed when first asked for, not included)",
        at(0.5),
        at(0.99),
        cpu.len()
    );
    let started = thread_cpu();
    let hash = table.as_ref().map_or(0, |t| t.hash());
    println!(
        "table hash (after the table is live): CPU {:.1} ms ({hash:016x})",
        (thread_cpu() - started).as_secs_f64() * 1e3
    );
    // Then events again, each table hashed as the swap's follower hashes it once the table is
    // live, the last one hashed before it (apart from the compiles, whose caches it would cool).
    let mut hash_cpu = Vec::new();
    for k in 0..21 {
        let app = ids[(k * 104729) % ids.len()].clone();
        let task = switchyard::cluster::Task {
            id: format!("{app}.more").into(),
            host: "10.9.0.2".into(),
            ports: vec![32001].into(),
            ip_addresses: Default::default(),
            state: switchyard::cluster::TaskState::Running,
            healthy: Some(true),
            ready: None,
            changed_ms: 0,
        };
        cluster.apply(ClusterUpdate::TaskStatus {
            app_id: app.clone(),
            task,
        });
        drop(table.take());
        // Told which app changed, as the reconciler is: the table is the last one patched.
        let listed = std::collections::BTreeSet::from([app]);
        let t = switchyard::routing::compile::compile_changed(
            &mut cache,
            cluster,
            config,
            Some(&listed),
        );
        let started = thread_cpu();
        std::hint::black_box(t.hash());
        hash_cpu.push(thread_cpu() - started);
        table = Some(t);
    }
    hash_cpu.sort();
    let at = |q: f64| hash_cpu[((hash_cpu.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "table hash after each one-event compile: CPU p50 {:.2} ms, p99 {:.2} ms ({} events)",
        at(0.5),
        at(0.99),
        hash_cpu.len()
    );
}

fn bench_zone_config() -> switchyard::zone::ZoneConfig {
    switchyard::zone::ZoneConfig {
        domain: "mesos".into(),
        ttl: 60,
        ip_sources: vec![switchyard::zone::IpSource::Auto],
        label_rule: switchyard::cluster::names::LabelRule::Rfc1123,
        ns_addr: None,
        vip_range: None,
        served: Default::default(),
        ptr: false,
        healthy: Default::default(),
    }
}

/// The incremental zone build: a first build from nothing, then `rounds` builds each after
/// one app changed (a task's port moved, as a task restarting elsewhere would), as the
/// reconciler builds after an event; thread CPU of each, and what is kept for the next.
fn zone_incremental(mut cluster: Cluster, rounds: usize) {
    let config = bench_zone_config();
    let verdicts = switchyard::zone::Verdicts::default();
    let mut incremental = switchyard::zone::Incremental::default();
    let cpu = thread_cpu();
    let zone = incremental.build(&cluster, &config, &verdicts, &[]);
    let first = thread_cpu() - cpu;
    let names = zone.names.len();
    // The zone served until the next is built (its last reference is the server's, dropped
    // outside the build, as in the reconciler).
    let mut served = zone;
    let ids: Vec<_> = cluster.apps.keys().cloned().collect();
    let mut cpu_one = Vec::new();
    let mut copied = 0;
    for round in 0..rounds {
        let id = &ids[(round * 7919) % ids.len()];
        let mut app = (*cluster.apps[id]).clone();
        if let Some(task) = app.tasks.values_mut().next() {
            let port = task.ports.first().copied().unwrap_or(0);
            task.ports = vec![port.wrapping_add(1)].into();
        }
        cluster.apps.insert(id.clone(), std::sync::Arc::new(app));
        cluster.newest_ms += 1000;
        let cpu = thread_cpu();
        let zone = incremental.build(&cluster, &config, &verdicts, &[]);
        cpu_one.push(thread_cpu() - cpu);
        copied = incremental.copied();
        served = zone;
    }
    cpu_one.sort();
    println!(
        "incremental DNS zone build: first (nothing to copy) CPU {:.1} ms; one app changed: CPU median {:.1} ms (min {:.1}, max {:.1}; {rounds} rounds), {copied} apps copied; {names} names; kept for the next build besides the zone: {:.1} MiB",
        first.as_secs_f64() * 1e3,
        cpu_one[rounds / 2].as_secs_f64() * 1e3,
        cpu_one[0].as_secs_f64() * 1e3,
        cpu_one[rounds - 1].as_secs_f64() * 1e3,
        incremental.heap_bytes() as f64 / (1 << 20) as f64,
    );
    drop(served);
}

/// `rounds` zone builds of `cluster`: their wall and thread CPU time, the zone's names and the
/// heap and RSS it holds.
fn zone_builds(cluster: &Cluster, rounds: usize) {
    let zone_config = bench_zone_config();
    let mut dns_compiles = Vec::new();
    let mut dns_cpu = Vec::new();
    let (mut dns_sys, mut dns_faults) = (Vec::new(), Vec::new());
    let mut zone_bytes = 0;
    let mut names = 0;
    let (before_rss, _) = rss_kib("self");
    let mut zone_rss = 0;
    let mut first = None;
    let mut kept = 0;
    for round in 0..rounds {
        // The buffers kept for the next build are not the zone's: counted apart.
        let (before, kept_before) = (held(), switchyard::zone::compact::spare_bytes());
        let started = Instant::now();
        let cpu = thread_cpu();
        let (sys, faults) = thread_sys();
        let t = switchyard::zone::build(cluster, &zone_config);
        let took = thread_cpu() - cpu;
        dns_cpu.push(took);
        let (sys_after, faults_after) = thread_sys();
        dns_sys.push(sys_after - sys);
        dns_faults.push(faults_after - faults);
        dns_compiles.push(started.elapsed());
        if round == 0 {
            first = Some((took, sys_after - sys, faults_after - faults));
        }
        zone_bytes = (held() + kept_before) as isize
            - (before + switchyard::zone::compact::spare_bytes()) as isize;
        zone_rss = rss_kib("self").0.saturating_sub(before_rss);
        names = t.names.len();
        drop(t);
        kept = switchyard::zone::compact::spare_bytes();
    }
    if let Some((cpu, sys, faults)) = first {
        println!(
            "first build (nothing to reuse): CPU {:.1} ms, of which {:.1} ms system time, {faults} minor page faults; kept for the next build after a zone is retired: {:.1} MiB",
            cpu.as_secs_f64() * 1e3,
            sys.as_secs_f64() * 1e3,
            kept as f64 / (1 << 20) as f64,
        );
    }
    // The floor under any zone build: one pass reading what a task's names are made of (its
    // id, host, ports and addresses, each behind a pointer of its own in the model).
    let mut touch_cpu = Vec::new();
    let mut sum = 0usize;
    for _ in 0..rounds {
        let cpu = thread_cpu();
        for app in cluster.apps.values() {
            for task in app.tasks.values() {
                sum += task.id.as_bytes().first().copied().unwrap_or(0) as usize
                    + task.host.as_bytes().first().copied().unwrap_or(0) as usize
                    + task.ports.first().copied().unwrap_or(0) as usize
                    + task.ip_addresses.len();
            }
        }
        touch_cpu.push(thread_cpu() - cpu);
    }
    touch_cpu.sort();
    println!(
        "one pass over every task's id, host, ports and addresses (the model's memory, read once): CPU median {:.1} ms ({sum})",
        touch_cpu[rounds / 2].as_secs_f64() * 1e3
    );
    dns_compiles.sort();
    dns_cpu.sort();
    dns_sys.sort();
    dns_faults.sort();
    let (mid, last) = (rounds / 2, rounds - 1);
    println!(
        "of which in the kernel: median {:.1} ms system time, {} minor page faults",
        dns_sys[mid].as_secs_f64() * 1e3,
        dns_faults[mid]
    );
    println!(
        "DNS zone build (off the swap path, on a blocking thread): median {:.1} ms (min {:.1}, max {:.1}; CPU median {:.1} ms, min {:.1}; {rounds} rounds); {names} names, {:.1} MiB held on the heap by the zone (RSS {:.1} MiB above the model + table)",
        dns_compiles[mid].as_secs_f64() * 1e3,
        dns_compiles[0].as_secs_f64() * 1e3,
        dns_compiles[last].as_secs_f64() * 1e3,
        dns_cpu[mid].as_secs_f64() * 1e3,
        dns_cpu[0].as_secs_f64() * 1e3,
        zone_bytes as f64 / (1 << 20) as f64,
        zone_rss as f64 / 1024.0,
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

/// Requests on one keep-alive connection through a service port, timed one by one, while the
/// release binary re-reads (file source: the whole 10,000-app snapshot) and recompiles the
/// cluster `CHURN` times: the longest requests are those that waited for the control plane.
#[tokio::main(flavor = "current_thread")]
async fn stalls() {
    const CHURN: usize = 10;
    let backend = support::Backend::start("b").await;
    let port = support::free_port();
    #[allow(non_snake_case)]
    let APPS = apps();
    let mut cluster: serde_json::Value =
        serde_json::from_slice(&synthetic::apps_json(APPS, TASKS, 10000)).unwrap();
    // Two versions of the file: the served app with one task, and with a second task.
    let versions: std::sync::Arc<Vec<Vec<u8>>> = (1..=2)
        .map(|n| {
            let tasks = (0..n)
                .map(|t| support::marathon::task("/stall/web", &format!("t{t}"), backend.port()))
                .collect();
            let app = support::marathon::app("/stall/web", port, json!({}), tasks);
            let apps = cluster["apps"].as_array_mut().unwrap();
            apps.retain(|a| a["id"] != "/stall/web");
            apps.push(app);
            serde_json::to_vec(&cluster).unwrap()
        })
        .collect::<Vec<_>>()
        .into();
    drop(cluster);
    let dir = support::temp_dir("bench-stalls");
    let file = dir.join("apps.json");
    rewrite(&file, &versions[0]);
    // Every synthetic app is served on 127.0.0.1:10000 and up (below the test ports): 10,000
    // listeners.
    let sy = support::Switchyard::start(
        "bench-stalls",
        &format!(
            "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n[runtime]\nworkers = 1\n",
            file.display().to_string()
        ),
    );
    let generation = |r: &serde_json::Value| r["generation"].as_u64().unwrap_or(0);
    let first = sy
        .wait_routes("the served app is routed", |r| {
            r["services"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["app_id"] == "/stall/web" && s["listener"] == "open")
            })
        })
        .await;
    let mut conn = tokio::net::TcpStream::connect(support::local(port))
        .await
        .unwrap();
    let quiet = timed(&mut conn, "quiet", std::time::Duration::from_secs(2)).await;
    // The rewrites come from a thread of their own: writing 34 MiB must not hold up the client.
    let churn = {
        let (file, versions) = (file.clone(), versions.clone());
        std::thread::spawn(move || {
            for i in 0..CHURN {
                rewrite(&file, &versions[(i + 1) % 2]);
                std::thread::sleep(std::time::Duration::from_millis(400));
            }
        })
    };
    let busy = timed(&mut conn, "churn", std::time::Duration::from_secs(4)).await;
    churn.join().unwrap();
    let last = generation(&sy.routes().await);
    for (label, mut l) in [quiet, busy] {
        l.sort();
        let at = |q: f64| l[((l.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        let slow = l.iter().filter(|d| d.as_millis() >= 5).count();
        println!(
            "requests during {label}: {} on one keep-alive connection, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, {slow} took 5 ms or more",
            l.len(),
            at(0.5),
            at(0.99),
            at(0.999),
            at(1.0)
        );
    }
    println!(
        "  ({} table swaps during the churn, {APPS} apps x {TASKS} tasks re-read from a {:.1} MiB file each time)",
        last - generation(&first),
        versions[0].len() as f64 / (1 << 20) as f64
    );
    drop(sy);
    let _ = std::fs::remove_dir_all(dir);
}

/// Replaces `file` whole, as a deployment tool does (a rename).
fn rewrite(file: &std::path::Path, contents: &[u8]) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// Requests one after another on `conn` for `until`, each timed.
async fn timed(
    conn: &mut tokio::net::TcpStream,
    label: &'static str,
    until: std::time::Duration,
) -> (&'static str, Vec<std::time::Duration>) {
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < until {
        let t = Instant::now();
        keep_alive_get(conn).await;
        latencies.push(t.elapsed());
    }
    (label, latencies)
}

/// One GET on a keep-alive connection, read to the end of its sized body.
async fn keep_alive_get(conn: &mut tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET / HTTP/1.1\r\nHost: stall\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 512];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "switchyard closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut res = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = res.parse(&buf) {
            let length: usize = res
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if buf.len() >= head + length {
                return;
            }
        }
    }
}

/// The swap delay at 10,000 apps x 10 tasks (Marathon stand-in, release binary): a
/// `status_update_event` moves a small app to a new task, and the delay is the time from the
/// event to the first request the new task answers. Measured with nobody reading `/v1/routes`,
/// with a client reading the whole table back to back (`GET /v1/routes`), and with one reading
/// the dashboard's page (`GET /v1/routes?limit=50`), interleaved, `ROUNDS` rounds. Beside it,
/// `/healthz` every 20 ms: it is answered on the control thread, so its latency is how long that
/// thread (which compiles and swaps tables) is held up.
#[tokio::main(flavor = "current_thread")]
async fn routes_poll() {
    let apps_n = apps();
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;
    use support::marathon::{Marathon, app, status_update, task};
    const CHANGES: usize = 10;
    const ROUNDS: usize = 3;
    let marathon = Marathon::start().await;
    let mut pool = Vec::new();
    for i in 0..2 {
        pool.push(support::Backend::start(&format!("b{i}")).await);
    }
    let port = support::free_port();
    let mut cluster: serde_json::Value =
        serde_json::from_slice(&synthetic::apps_json(apps_n, TASKS, 10000)).unwrap();
    let mut apps = std::mem::take(cluster["apps"].as_array_mut().unwrap());
    drop(cluster);
    let labels = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "http"});
    apps.push(app(
        "/poll/web",
        port,
        labels,
        vec![task("/poll/web", "p.0", pool[0].port())],
    ));
    marathon.set_apps(apps);
    let sy = support::Switchyard::start(
        "bench-routes-poll",
        &format!(
            "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\n[runtime]\nworkers = 1\n",
            marathon.url()
        ),
    );
    support::wait_for("the polled app is routed", || async {
        let (_, body) = sy.get("/v1/routes?filter=/poll/web").await;
        body.contains(&pool[0].addr.to_string()).then_some(())
    })
    .await;
    support::wait_for("subscribed", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;
    let admin = sy.admin;
    let mut task_n = 0usize;
    let mut results: Vec<(&str, Vec<Duration>, Vec<Duration>)> = Vec::new();
    for round in 0..ROUNDS {
        for (label, poll) in [
            ("idle", None),
            ("full table polled", Some("/v1/routes")),
            ("page polled", Some("/v1/routes?limit=50")),
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            let polls = Arc::new(AtomicUsize::new(0));
            let bytes = Arc::new(AtomicUsize::new(0));
            // The poller runs on a thread of its own: reading tens of MiB must not hold up the
            // client that measures.
            let poller = poll.map(|path| {
                let (stop, polls, bytes) = (stop.clone(), polls.clone(), bytes.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok((_, body)) = support::http_get(admin, path).await {
                                polls.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(body.len(), Ordering::Relaxed);
                            }
                        }
                    })
                })
            });
            // The control thread's own latency: `/healthz` is answered on it, so a request that
            // waits is a control loop (and its swaps) held up.
            let healthz = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let mut took = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let t = Instant::now();
                            let _ = support::http_get(admin, "/healthz").await;
                            took.push(t.elapsed());
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        took
                    })
                })
            };
            let mut samples = Vec::with_capacity(CHANGES);
            for _ in 0..CHANGES {
                let (old, new) = (task_n, task_n + 1);
                task_n += 1;
                let (old_b, new_b) = (&pool[old % 2], &pool[new % 2]);
                marathon.update_app("/poll/web", |a| {
                    a["tasks"] = json!([task("/poll/web", &format!("p.{new}"), new_b.port())])
                });
                let both = format!(
                    "event: status_update_event\r\ndata: {}\r\n\r\nevent: status_update_event\r\ndata: {}\r\n\r\n",
                    status_update(
                        "/poll/web",
                        &format!("p.{new}"),
                        new_b.port(),
                        "TASK_RUNNING"
                    ),
                    status_update(
                        "/poll/web",
                        &format!("p.{old}"),
                        old_b.port(),
                        "TASK_KILLED"
                    ),
                );
                // Past the debounce window and the last compile: each change is measured alone.
                tokio::time::sleep(Duration::from_millis(150)).await;
                let sent = Instant::now();
                marathon.send_raw(both.as_bytes());
                // A new connection per probe: the proxy may close one whose backend left.
                loop {
                    let body = support::http_get(support::local(port), "/")
                        .await
                        .map(|(_, body)| body)
                        .unwrap_or_default();
                    if body == new_b.name {
                        samples.push(sent.elapsed());
                        break;
                    }
                    assert!(
                        sent.elapsed() < Duration::from_secs(20),
                        "change {new} never reached routing"
                    );
                }
            }
            stop.store(true, Ordering::Relaxed);
            if let Some(p) = poller {
                p.join().unwrap();
            }
            let mut healthz = healthz.join().unwrap();
            healthz.sort();
            samples.sort();
            let n = polls.load(Ordering::Relaxed);
            println!(
                "round {round}, {label}: event -> first request on the new task p50 {:.1} ms, max {:.1} ms; /healthz p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({n} polls, {:.1} MiB each)",
                samples[samples.len() / 2].as_secs_f64() * 1e3,
                samples.last().unwrap().as_secs_f64() * 1e3,
                healthz[healthz.len() / 2].as_secs_f64() * 1e3,
                healthz[healthz.len() * 99 / 100].as_secs_f64() * 1e3,
                healthz.last().unwrap().as_secs_f64() * 1e3,
                bytes.load(Ordering::Relaxed) as f64 / n.max(1) as f64 / (1 << 20) as f64
            );
            results.push((label, samples, healthz));
        }
    }
    for label in ["idle", "full table polled", "page polled"] {
        let mut p50s: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == label)
            .map(|r| r.1[r.1.len() / 2].as_secs_f64() * 1e3)
            .collect();
        let mut maxes: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == label)
            .map(|r| r.1.last().unwrap().as_secs_f64() * 1e3)
            .collect();
        let mut healthz_max: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == label)
            .map(|r| r.2.last().unwrap().as_secs_f64() * 1e3)
            .collect();
        p50s.sort_by(f64::total_cmp);
        maxes.sort_by(f64::total_cmp);
        healthz_max.sort_by(f64::total_cmp);
        println!(
            "swap delay at {apps_n} apps x {TASKS} tasks, {label}: median of {ROUNDS} rounds' p50 {:.1} ms, of their max {:.1} ms; control thread (/healthz) median of the rounds' max {:.1} ms",
            p50s[p50s.len() / 2],
            maxes[maxes.len() / 2],
            healthz_max[healthz_max.len() / 2]
        );
    }
    drop(sy);
}

/// CPU time of every thread of this process so far.
fn process_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time of another thread of this process (its clock id, from `pthread_getcpuclockid`).
fn clock_cpu(clock: libc::clockid_t) -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a clock id of a thread that is still running, and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Event -> route at `SCALE_APPS` apps x 10 tasks, idle: the real reconciler (`Reconciler::run`
/// on a thread of its own, as the control plane runs it, with the real backend registry, store
/// and listener set) is given the synthetic cluster, then `EVENTS` task events one at a time,
/// each to a different app (a task starting, then that task killed), 150 ms apart; each is timed
/// from the send to the publication of the table that carries it, with the control thread's CPU
/// time over the same span. Every app is served by vhost (no service port): a process may not
/// hold 50,000 listening sockets here (the file limit is 20,000), and what the swap does per app
/// is the same.
fn events() {
    use std::sync::Arc;
    use std::time::Duration;
    use switchyard::cluster::{Task, TaskState};
    use switchyard::discovery::SourceEvent;
    // `SCALE_EVENTS`: fewer for a profile under callgrind.
    let events_n: usize = std::env::var("SCALE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let apps_n = apps();
    let mut parsed = api::parse_apps(&synthetic::apps_json(apps_n, TASKS, 10000))
        .unwrap()
        .apps;
    for (i, app) in parsed.iter_mut().enumerate() {
        app.ports[0].service_port = 0;
        app.labels.insert("HAPROXY_0_MODE".into(), "http".into());
        app.labels
            .insert("HAPROXY_0_VHOST".into(), format!("app{i}.bench.test"));
    }
    let ids: Vec<_> = parsed.iter().map(|a| a.id.clone()).collect();
    let text =
        "[discovery]\nfile = \"/dev/null\"\n[proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\n";
    let config = switchyard::config::Config::parse(text, std::path::Path::new("/")).unwrap();
    let metrics = Arc::new(switchyard::metrics::Metrics::new());
    let store = Arc::new(switchyard::snapshot::Store::new());
    let ctx = Arc::new(switchyard::proxy::Context::new(
        store.clone(),
        metrics.clone(),
        config.proxy_settings(),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let workers = {
        let _runtime = rt.enter();
        Arc::new(switchyard::workers::Workers::start(1).unwrap())
    };
    let (refetch, _refetch_rx) = tokio::sync::mpsc::channel(64);
    let reconciler = switchyard::reconciler::Reconciler::new(
        config.compile_config(),
        config.discovery.debounce,
        switchyard::backends::Registry::new(metrics.clone(), config.proxy.drain_timeout),
        store.clone(),
        switchyard::proxy::listeners::Listeners::new(ctx.clone(), workers),
        metrics,
        Arc::new(switchyard::reconciler::Status::default()),
        refetch,
        ctx,
        config.zone_config(),
    );
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(64);
    let (_commands, commands_rx) = tokio::sync::mpsc::channel(8);
    let (clock_tx, clock_rx) = std::sync::mpsc::channel();
    let control = std::thread::spawn(move || {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: this thread's own handle and a valid out pointer.
        unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        clock_tx.send(clock).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(reconciler.run(events_rx, commands_rx));
    });
    let clock = clock_rx.recv().unwrap();
    let mut generation = store.subscribe();
    let started = Instant::now();
    events_tx
        .blocking_send(SourceEvent::Update(ClusterUpdate::Snapshot(parsed)))
        .unwrap();
    rt.block_on(generation.wait_for(|g| *g >= 1)).unwrap();
    println!(
        "events at {apps_n} apps x {TASKS} tasks: first table published {:.0} ms after the snapshot was sent",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    // The CPU of the process's other threads over the events (what a swap leaves behind: the
    // table hash, the route weights, freeing replaced tables), besides the control thread's and
    // this thread's.
    let others = || {
        // The threads' clocks read first: the process's, read last, covers them.
        let (control, this) = (clock_cpu(clock), thread_cpu());
        process_cpu().saturating_sub(control + this)
    };
    let others_before = others();
    for k in 0..events_n {
        std::thread::sleep(Duration::from_millis(150));
        // Apps spread over the cluster; event 2j starts a task of app j, 2j+1 kills it.
        let app = &ids[(k / 2 * 7919) % ids.len()];
        let task = Task {
            id: format!("{app}.extra").into(),
            host: "10.9.0.1".into(),
            ports: vec![32000].into(),
            ip_addresses: Default::default(),
            state: if k % 2 == 0 {
                TaskState::Running
            } else {
                TaskState::Other("TASK_KILLED".into())
            },
            healthy: Some(true),
            ready: None,
            changed_ms: 0,
        };
        let before = *generation.borrow_and_update();
        let cpu = clock_cpu(clock);
        let sent = Instant::now();
        events_tx
            .blocking_send(SourceEvent::Update(ClusterUpdate::TaskStatus {
                app_id: app.clone(),
                task,
            }))
            .unwrap();
        rt.block_on(generation.wait_for(|g| *g > before)).unwrap();
        walls.push(sent.elapsed());
        cpus.push(clock_cpu(clock) - cpu);
        let table = store.load();
        let service = table
            .table
            .services
            .iter()
            .find(|s| s.key.app_id == *app)
            .unwrap();
        assert_eq!(
            service.backends.len(),
            TASKS + usize::from(k % 2 == 0),
            "event {k} is in the table"
        );
    }
    // Past the debounce window: what the last event left behind has started, and runs alone.
    std::thread::sleep(Duration::from_millis(150));
    let others = others().saturating_sub(others_before);
    walls.sort();
    cpus.sort();
    let at = |l: &[Duration], q: f64| l[((l.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "event -> route at {apps_n} apps x {TASKS} tasks, idle, {events_n} events: wall p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; control thread CPU per event p50 {:.2} ms, p99 {:.2} ms",
        at(&walls, 0.5),
        at(&walls, 0.99),
        at(&walls, 1.0),
        at(&cpus, 0.5),
        at(&cpus, 0.99),
    );
    println!(
        "CPU of the other threads (after-swap work: table hash, freeing) per event: {:.2} ms",
        others.as_secs_f64() * 1e3 / events_n as f64
    );
    // What a swap with DNS on walks besides (`zone::route_splits`, on the control thread).
    let live = store.load_full();
    let mut splits: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(switchyard::zone::route_splits(&live.table));
            t.elapsed()
        })
        .collect();
    splits.sort();
    println!(
        "route splits at {apps_n} apps x {TASKS} tasks (every route walked, DNS on): median {:.3} ms",
        splits[2].as_secs_f64() * 1e3
    );
    drop(live);
    drop(events_tx);
    drop(_commands);
    control.join().unwrap();
}
