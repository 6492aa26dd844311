//! Criterion micro-benchmarks of the control and data plane's pure parts: snapshot parsing,
//! `compile` at 100, 1,000 and 10,000 apps (10 tasks each), applying a burst of task events, and
//! each balancer's pick. Run: `cargo bench --bench core`.

#[path = "support/synthetic.rs"]
mod synthetic;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use switchyard::cluster::{Cluster, ClusterUpdate, Task, TaskState};
use switchyard::discovery::marathon::api;
use switchyard::routing::balance::{Flow, Load};
use switchyard::routing::{Balance, Balancer, CompileConfig, compile};

fn config() -> CompileConfig {
    CompileConfig {
        reserved: vec!["127.0.0.1:9090".parse().unwrap()],
        ..CompileConfig::group("external", "0.0.0.0".parse().unwrap())
    }
}

fn cluster(apps: usize) -> Cluster {
    let parsed = api::parse_apps(&synthetic::apps_json(apps, 10, 10000)).unwrap();
    let mut cluster = Cluster::default();
    cluster.apply(ClusterUpdate::Snapshot(parsed.apps));
    cluster
}

fn parse_and_compile(c: &mut Criterion) {
    let json = synthetic::apps_json(1000, 10, 10000);
    c.bench_function("parse snapshot, 1000 apps x 10 tasks", |b| {
        b.iter(|| api::parse_apps(black_box(&json)).unwrap())
    });
    let config = config();
    let mut group = c.benchmark_group("compile");
    group.sample_size(20);
    for apps in [100, 1000, 10_000] {
        let cluster = cluster(apps);
        group.bench_function(format!("{apps} apps x 10 tasks"), |b| {
            b.iter(|| compile(black_box(&cluster), &config))
        });
    }
    group.finish();
}

fn task_event_burst(c: &mut Criterion) {
    let base = cluster(1000);
    let config = config();
    // 1,000 status updates: half new tasks starting to run, half existing tasks being killed.
    let burst: Vec<ClusterUpdate> = (0..1000)
        .map(|i| {
            let app = format!("/bench/group{}/app{i}", i % 50);
            let killing = i % 2 == 1;
            let task_id = if killing {
                format!("bench_app{i}.instance-{:08x}._app.1", 0)
            } else {
                format!("bench_app{i}.instance-new._app.1")
            };
            ClusterUpdate::TaskStatus {
                app_id: app.into(),
                task: Task {
                    id: task_id.into(),
                    host: "10.0.0.9".into(),
                    ports: vec![32000].into(),
                    ip_addresses: Default::default(),
                    changed_ms: 0,
                    state: if killing {
                        TaskState::Killing
                    } else {
                        TaskState::Running
                    },
                    healthy: None,
                    ready: None,
                },
            }
        })
        .collect();
    c.bench_function("apply 1000 task events + compile, 1000 apps", |b| {
        b.iter_batched(
            || (base.clone(), burst.clone()),
            |(mut cluster, burst)| {
                for update in burst {
                    cluster.apply(update);
                }
                compile(&cluster, &config)
            },
            BatchSize::LargeInput,
        )
    });
}

fn balancers(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [10usize, 100] {
        let loads: Vec<usize> = (0..n).map(|i| i % 7).collect();
        for balance in [
            Balance::RoundRobin,
            Balance::LeastConn,
            Balance::Maglev,
            Balance::P2c,
        ] {
            let balancer = Balancer::new(balance, &vec![1; n]);
            group.bench_function(format!("{balance:?}, {n} backends"), |b| {
                b.iter(|| {
                    balancer
                        .candidates(Flow::none(), |i| Load {
                            active: loads[i],
                            latency_ns: 1000,
                        })
                        .next()
                })
            });
        }
        let weighted: Vec<u32> = (0..n as u32).map(|i| 1 + i % 5).collect();
        let balancer = Balancer::new(Balance::RoundRobin, &weighted);
        group.bench_function(format!("weighted RoundRobin, {n} backends"), |b| {
            b.iter(|| {
                balancer
                    .candidates(Flow::none(), |_| Load::default())
                    .next()
            })
        });
    }
    group.finish();
}

fn lookups(c: &mut Criterion) {
    use switchyard::routing::vhosts::{Vhosts, host_key};
    let mut vhosts = Vhosts::default();
    for i in 0..10_000 {
        vhosts
            .insert(&format!("app{i}.example.com"), "", i)
            .unwrap();
        vhosts
            .insert(&format!("app{i}.example.com"), "/api", i)
            .unwrap();
    }
    vhosts.insert("*.apps.example.com", "", 0).unwrap();
    c.bench_function("vhost lookup, 10,000 hosts (Host header to route)", |b| {
        b.iter(|| {
            let mut buf = [0u8; 256];
            let host = host_key(black_box(b"App4242.Example.com:8080"), &mut buf).unwrap();
            vhosts.route(host, black_box("/api/users"))
        })
    });
    c.bench_function("wildcard vhost lookup", |b| {
        b.iter(|| vhosts.route(black_box("x.y.apps.example.com"), "/"))
    });

    use switchyard::cluster::names::LabelRule;
    use switchyard::dns::answer::{Transport, answer};
    use switchyard::zone::{IpSource, ZoneConfig, build};
    let zone = build(
        &cluster(1000),
        &ZoneConfig {
            domain: "mesos".into(),
            ttl: 60,
            ip_sources: vec![IpSource::Auto],
            label_rule: LabelRule::Rfc1123,
            ns_addr: None,
            vip_range: None,
            served: Default::default(),
            ptr: false,
            healthy: Default::default(),
        },
    );
    let query = |name: &str, qtype| {
        let mut m = hickory_proto::op::Message::query();
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii(name).unwrap(),
            qtype,
        ));
        m.to_vec().unwrap()
    };
    let a = query(
        "app42-group42-bench.marathon.mesos.",
        hickory_proto::rr::RecordType::A,
    );
    let srv = query(
        "_app42-group42-bench._tcp.marathon.mesos.",
        hickory_proto::rr::RecordType::SRV,
    );
    c.bench_function(
        "dns answer: A, 10 tasks (decode, look up, shuffle, encode)",
        |b| b.iter(|| answer(Some(&zone), black_box(&a), Transport::Udp, false)),
    );
    let mut out = Vec::with_capacity(512);
    c.bench_function(
        "dns answer: A, 10 tasks, UDP fast path (bytes written in place)",
        |b| {
            b.iter(|| {
                switchyard::dns::fast::answer(&zone, black_box(&a), &mut out, false)
                    .expect("fast path");
            })
        },
    );
    c.bench_function(
        "dns answer: SRV + additionals, 10 tasks, truncated to 512",
        |b| b.iter(|| answer(Some(&zone), black_box(&srv), Transport::Udp, false)),
    );
}

fn maglev_build(c: &mut Criterion) {
    use switchyard::routing::balance::{Maglev, maglev};
    let ids: Vec<u64> = (0..1000u64).map(maglev::mix).collect();
    let mut group = c.benchmark_group("maglev");
    group.sample_size(20);
    group.bench_function("table build, 1,000 backends, 65,537 entries", |b| {
        b.iter(|| Maglev::new(black_box(&ids), &[1; 1000]))
    });
    group.finish();
}

criterion_group!(
    benches,
    parse_and_compile,
    task_event_burst,
    balancers,
    lookups,
    maglev_build
);
criterion_main!(benches);
