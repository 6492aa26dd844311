//! The registry held against tables compiled from the cluster model: states kept across
//! swaps, drains, a patched attach, and the per-backend series.

use super::state::drain_epoch;
use super::*;
use crate::cluster::fixtures::{app, task};
use crate::cluster::{Cluster, ClusterUpdate};
use crate::routing::{CompileConfig, compile};

fn table(ports: &[u16]) -> RoutingTable {
    // Ids of their own: two tasks may share a port (one address, two tasks).
    let tasks = ports
        .iter()
        .enumerate()
        .map(|(i, &p)| task(&format!("t{i}.{p}"), p))
        .collect();
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![app("/a", 10000, &[], tasks)]));
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    compile(&c, &config)
}

#[tokio::test]
async fn state_survives_swaps_and_removed_backends_drain() {
    let mut reg = Registry::new(Arc::new(Metrics::new()), Duration::from_millis(1));
    let first = reg.attach(&table(&[1, 2]));
    let _conn = first[0][0].open();
    let second = reg.attach(&table(&[1, 2, 3]));
    assert!(
        Arc::ptr_eq(&first[0][0], &second[0][0]),
        "same backend, same state"
    );
    assert_eq!(second[0][0].active(), 1);
    let third = reg.attach(&table(&[2, 3]));
    assert_eq!(third[0].len(), 2);
    assert!(first[0][0].is_draining());
    // Its drain deadline passes; a connection still open sees it.
    tokio::time::timeout(Duration::from_secs(5), first[0][0].drained())
        .await
        .unwrap();
    // Re-added before being forgotten: the same state, no longer draining.
    let fourth = reg.attach(&table(&[1, 2, 3]));
    assert!(Arc::ptr_eq(&first[0][0], &fourth[0][0]));
    assert!(!fourth[0][0].is_draining());
}

/// A connection waiting on its backend before the backend left the table is cut at the
/// drain deadline; a backend back in the table before it stops the wait's clock; a
/// deadline before the first one ever taken reads back as itself.
#[tokio::test(start_paused = true)]
async fn a_waiter_sees_draining_start_and_stop() {
    let mut reg = Registry::new(Arc::new(Metrics::new()), Duration::from_secs(30));
    let first = reg.attach(&table(&[1, 2]));
    let state = first[0][0].clone();
    let waiter = tokio::spawn({
        let state = state.clone();
        async move { state.drained().await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!waiter.is_finished(), "in the table: no drain");
    reg.attach(&table(&[2]));
    let deadline = state.drain_deadline().expect("draining");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!waiter.is_finished(), "before the drain timeout");
    // Back in the table: the wait goes on past the old deadline.
    reg.attach(&table(&[1, 2]));
    assert_eq!(state.drain_deadline(), None);
    tokio::time::sleep_until(deadline + Duration::from_secs(5)).await;
    assert!(!waiter.is_finished(), "returned to the table: not cut");
    // Removed again: cut 30 s later.
    reg.attach(&table(&[2]));
    tokio::time::timeout(Duration::from_secs(31), waiter)
        .await
        .expect("cut at the drain deadline")
        .unwrap();
    let early = drain_epoch() - Duration::from_secs(5);
    state.start_draining(early);
    assert_eq!(state.drain_deadline(), Some(early));
}

/// A service of many backends (looked up through a map) keeps every state when one is added
/// in front of the others; two tasks on one address share its state.
#[tokio::test]
async fn many_backends_keep_their_states_when_one_is_added_in_front() {
    let mut reg = Registry::new(Arc::new(Metrics::new()), Duration::from_secs(30));
    let ports: Vec<u16> = (100..140).collect();
    let first = reg.attach(&table(&ports));
    let mut more = vec![50];
    more.extend(&ports);
    let second = reg.attach(&table(&more));
    assert_eq!(second[0].len(), 41);
    for (a, b) in first[0].iter().zip(&second[0][1..]) {
        assert!(Arc::ptr_eq(a, b), "same backend, same state");
    }
    assert_eq!(reg.draining(), 0);
    let third = reg.attach(&table(&ports[1..]));
    assert!(first[0][0].is_draining());
    assert!(Arc::ptr_eq(&third[0][0], &first[0][1]));
    assert_eq!(reg.draining(), 2, "the first and the one added in front");
    // Two tasks on one address: one state.
    let mut c = Cluster::default();
    let mut twin = task("t2", 7);
    twin.id = "twin".into();
    c.apply(ClusterUpdate::Snapshot(vec![app(
        "/a",
        10000,
        &[],
        vec![task("t1", 7), twin],
    )]));
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    let states = reg.attach(&compile(&c, &config));
    assert_eq!(states[0].len(), 2);
    assert!(Arc::ptr_eq(&states[0][0], &states[0][1]));
}
/// The per-backend lines of `/metrics`, sorted (a family's series come in no set order).
fn backend_lines(metrics: &Metrics) -> Vec<String> {
    let mut lines: Vec<String> = metrics
        .encode()
        .lines()
        .filter(|l| {
            ["backend_", "http_responses"].iter().any(|f| {
                l.starts_with(&format!("switchyard_{f}")) || l.contains(&format!(" switchyard_{f}"))
            })
        })
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// `/metrics` shows every backend of the table, each series at zero until it sees traffic
/// (operators alert on them), two tasks on one address once, a draining backend until it is
/// forgotten; then its series are gone.
#[tokio::test]
async fn metrics_show_each_backend_from_its_attach_until_it_is_forgotten() {
    let metrics = Arc::new(Metrics::new());
    let mut reg = Registry::new(metrics.clone(), Duration::from_millis(1));
    assert_eq!(
        backend_lines(&metrics),
        Vec::<String>::new(),
        "no backend yet"
    );
    let first = reg.attach(&table(&[1, 2, 2]));
    let conn = first[0][0].open();
    first[0][0].metrics.response(http::StatusCode::OK);
    first[0][0].metrics.count().bytes_out.inc_by(7);
    first[0][0].metrics.count().connect_failures.inc();
    let series = |port: u16, [conns, active, bytes_out, fails, ok]: [u64; 5]| {
        let l = format!("service=\"/a:0\",backend=\"127.0.0.1:{port}\"");
        let mut v = vec![
            format!("switchyard_backend_connections_total{{{l}}} {conns}"),
            format!("switchyard_backend_active_connections{{{l}}} {active}"),
            format!("switchyard_backend_bytes_in_total{{{l}}} 0"),
            format!("switchyard_backend_bytes_out_total{{{l}}} {bytes_out}"),
            format!("switchyard_backend_connect_failures_total{{{l}}} {fails}"),
            format!("switchyard_backend_ejections_total{{{l}}} 0"),
        ];
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let n = if class == "2xx" { ok } else { 0 };
            v.push(format!(
                "switchyard_http_responses_total{{{l},class=\"{class}\"}} {n}"
            ));
        }
        v
    };
    let head = [
        "# HELP switchyard_backend_active_connections Connections or requests in flight to a backend",
        "# HELP switchyard_backend_bytes_in Bytes received from clients and sent to a backend",
        "# HELP switchyard_backend_bytes_out Bytes received from a backend and sent to clients",
        "# HELP switchyard_backend_connect_failures Failed connects to a backend",
        "# HELP switchyard_backend_connections Connections (TCP) or requests (HTTP) sent to a backend",
        "# HELP switchyard_backend_ejections Times a backend was ejected as an outlier (5 consecutive failures)",
        "# HELP switchyard_http_responses HTTP responses by status class",
        "# TYPE switchyard_backend_active_connections gauge",
        "# TYPE switchyard_backend_bytes_in counter",
        "# TYPE switchyard_backend_bytes_out counter",
        "# TYPE switchyard_backend_connect_failures counter",
        "# TYPE switchyard_backend_connections counter",
        "# TYPE switchyard_backend_ejections counter",
        "# TYPE switchyard_http_responses counter",
    ];
    let expected = |ports: &[(u16, [u64; 5])]| {
        let mut v: Vec<String> = head.iter().map(|s| s.to_string()).collect();
        for &(port, values) in ports {
            v.extend(series(port, values));
        }
        v.sort();
        v
    };
    let busy = [1, 1, 7, 1, 1];
    assert_eq!(backend_lines(&metrics), expected(&[(1, busy), (2, [0; 5])]));
    // Port 1 leaves and drains with its connection open: still shown, as it is.
    let _second = reg.attach(&table(&[2, 3]));
    assert!(first[0][0].is_draining());
    assert_eq!(
        backend_lines(&metrics),
        expected(&[(1, busy), (2, [0; 5]), (3, [0; 5])])
    );
    // Its connection ends and its drain passes: the next swap forgets it.
    drop(conn);
    tokio::time::timeout(Duration::from_secs(5), first[0][0].drained())
        .await
        .unwrap();
    let _third = reg.attach(&table(&[2, 3]));
    assert_eq!(
        backend_lines(&metrics),
        expected(&[(2, [0; 5]), (3, [0; 5])])
    );
}

/// An app id that is not Marathon's (the file source takes any path) cannot write series of
/// its own into `/metrics`: a `"`, `\\` or line feed in a label value is escaped, in the
/// per-backend series and in the families prometheus-client writes.
#[tokio::test]
async fn label_values_are_escaped() {
    let metrics = Arc::new(Metrics::new());
    let mut reg = Registry::new(metrics.clone(), Duration::from_millis(1));
    let id = "/evil\"} 1\nswitchyard_injected_total{service=\"pwn\\";
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(vec![app(
        id,
        10000,
        &[],
        vec![task("t1", 7)],
    )]));
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    let table = compile(&c, &config);
    let service = table.services[0].key.to_string();
    assert!(
        service.contains('\n'),
        "the id reached the service key: {service:?}"
    );
    let _states = reg.attach(&table);
    metrics
        .no_backend
        .get_or_create(&crate::metrics::ServiceLabels { service })
        .inc();
    let text = metrics.encode();
    let escaped = r#"service="/evil\"} 1\nswitchyard_injected_total{service=\"pwn\\:0""#;
    for line in [
        format!("switchyard_backend_connections_total{{{escaped},backend=\"127.0.0.1:7\"}} 0"),
        format!("switchyard_no_backend_total{{{escaped}}} 1"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(
        !text.lines().any(|l| l.starts_with("switchyard_injected")),
        "{text}"
    );
}

/// A patched table's states, attached at its patched services alone, are those a full
/// attach gives: the same rows kept for every other service, the same states kept and
/// drained in the patched one.
#[tokio::test]
async fn a_patched_attach_is_the_full_attach() {
    use crate::routing::compile::{Cache, compile_changed};
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    let apps = (0..5)
        .map(|i| {
            app(
                &format!("/a{i}"),
                10000 + i,
                &[],
                vec![task(&format!("a{i}.1"), 1)],
            )
        })
        .collect();
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(apps));
    let mut cache = Cache::default();
    let first = compile_changed(&mut cache, &c, &config, None);
    let (mut full, mut patched) = (
        Registry::new(Arc::new(Metrics::new()), Duration::from_secs(30)),
        Registry::new(Arc::new(Metrics::new()), Duration::from_secs(30)),
    );
    let (a0, b0) = (full.attach(&first), patched.attach(&first));
    c.apply(ClusterUpdate::TaskStatus {
        app_id: "/a3".into(),
        task: task("a3.2", 2),
    });
    let mut killed = task("a3.1", 1);
    killed.state = crate::cluster::TaskState::Other("TASK_KILLED".into());
    c.apply(ClusterUpdate::TaskStatus {
        app_id: "/a3".into(),
        task: killed,
    });
    let listed = std::collections::BTreeSet::from(["/a3".into()]);
    let second = compile_changed(&mut cache, &c, &config, Some(&listed));
    let at = cache.patched.clone().expect("patched").services;
    assert_eq!(at, vec![3]);
    let a1 = full.attach(&second);
    let b1 = patched.attach_patched(&second, &at).expect("it fits");
    assert_eq!(a1.len(), b1.len());
    for (s, (a, b)) in a1.iter().zip(&b1).enumerate() {
        assert_eq!(a.len(), b.len());
        // A row kept whole in one is kept whole in the other.
        assert_eq!(
            Arc::ptr_eq(a, &a0[s]),
            Arc::ptr_eq(b, &b0[s]),
            "service {s}"
        );
        for (x, y) in a.iter().zip(b.iter()) {
            assert_eq!(x.addr, y.addr);
        }
    }
    assert!(!Arc::ptr_eq(&b1[3], &b0[3]));
    assert_eq!((full.draining(), patched.draining()), (1, 1));
    assert!(b0[3][0].is_draining());
    // The limits follow the same way; a table of another shape does not fit.
    assert_eq!(patched.attach_limits_patched(&second, &at).len(), 5);
    assert!(patched.attach_patched(&table(&[1]), &[0]).is_none());
}

/// A patched attach copies the chunk of rows its service is in and shares every other
/// with the last snapshot (`crate::chunked`); the rows are a full attach's.
#[tokio::test]
async fn a_patched_attach_shares_the_chunks_it_did_not_change() {
    use crate::chunked::CHUNK;
    use crate::routing::compile::{Cache, compile_changed};
    let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
    let n = CHUNK * 3 + 1;
    let apps = (0..n)
        .map(|i| {
            let id = format!("/a{i:03}");
            app(
                &id,
                10000 + i as u16,
                &[],
                vec![task(&format!("{id}.1"), 1)],
            )
        })
        .collect();
    let mut c = Cluster::default();
    c.apply(ClusterUpdate::Snapshot(apps));
    let mut cache = Cache::default();
    let first = compile_changed(&mut cache, &c, &config, None);
    let mut reg = Registry::new(Arc::new(Metrics::new()), Duration::from_secs(30));
    let before = reg.attach(&first);
    let changed = CHUNK + 2;
    let id = format!("/a{changed:03}");
    c.apply(ClusterUpdate::TaskStatus {
        app_id: id.as_str().into(),
        task: task(&format!("{id}.2"), 2),
    });
    let listed = std::collections::BTreeSet::from([id.as_str().into()]);
    let second = compile_changed(&mut cache, &c, &config, Some(&listed));
    let at = cache.patched.clone().expect("patched").services;
    assert_eq!(at, vec![changed]);
    let after = reg.attach_patched(&second, &at).expect("fits");
    for (k, (x, y)) in before.chunks().iter().zip(after.chunks()).enumerate() {
        assert_eq!(Arc::ptr_eq(x, y), k != 1, "chunk {k}");
    }
    let services = (first.services.chunks(), second.services.chunks());
    for (k, (x, y)) in services.0.iter().zip(services.1).enumerate() {
        assert_eq!(Arc::ptr_eq(x, y), k != 1, "service chunk {k}");
    }
    let mut full = Registry::new(Arc::new(Metrics::new()), Duration::from_secs(30));
    full.attach(&first);
    let rebuilt = full.attach(&second);
    assert_eq!(after.len(), rebuilt.len());
    for (x, y) in after.iter().zip(&rebuilt) {
        let addrs = |r: &Row| r.iter().map(|s| s.addr).collect::<Vec<_>>();
        assert_eq!(addrs(x), addrs(y));
    }
    assert_eq!(after[changed].len(), 2);
}
