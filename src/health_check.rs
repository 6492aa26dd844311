//! Active health checks: switchyard probes backends itself, with the app's Marathon
//! `healthChecks` (HTTP and TCP, and their MESOS_ forms) or the configured default, so that a
//! backend that stops answering leaves selection within seconds rather than when Marathon next
//! reports. Probes are jittered and bounded in concurrency. A backend is down after
//! `max_consecutive_failures` failures in a row and up again after one success; down, it is
//! tried only when every other backend is unavailable too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::backends::{BackendState, Row};
use crate::chunked::{CHUNK, Chunked};
use crate::cluster::{Probe, ProbeKind};
use crate::metrics::Metrics;
use crate::routing::Service;

/// What to probe: every backend of the live table whose service has a probe (a backend in two
/// services is probed by each: their checks may differ, as HAProxy's do per backend section).
/// The live snapshot's services and rows of states, shared (`crate::chunked`): a swap hands
/// them over in O(1), and [`run`] looks only at the chunks that changed.
#[derive(Clone, Default)]
pub struct Targets {
    pub services: Chunked<Arc<Service>>,
    pub rows: Chunked<Row>,
}

impl Targets {
    /// Whether `self` and `other` are copies of the same table's.
    pub fn same(&self, other: &Targets) -> bool {
        self.services.ptr_eq(&other.services) && self.rows.ptr_eq(&other.rows)
    }
}

/// Probed backends by state (its address as a number: the state is held, so it is not reused),
/// each with its probe.
type Wanted = HashMap<usize, (Probe, Arc<BackendState>)>;

/// The probed backends of service `i` of `t`, into `into`.
fn wanted_at(t: &Targets, i: usize, into: &mut Wanted) {
    let (Some(service), Some(row)) = (t.services.get(i), t.rows.get(i)) else {
        return;
    };
    let Some(probe) = &service.probe else {
        return;
    };
    for (b, state) in row.iter().enumerate() {
        let mut probe = probe.clone();
        probe.target = service
            .backends
            .get(b)
            .and_then(|b| b.probe_addr.as_deref().copied());
        into.insert(Arc::as_ptr(state) as usize, (probe, state.clone()));
    }
}

/// The probed backends of `before` and of `after` where the two may differ: every one when
/// their lengths differ, else those of the services that are not the same (`Arc`s) at the same
/// index, looked for only in chunks that are not shared. A backend's state belongs to one
/// service, so a state outside these is at the same index, with the same probe, in both.
fn changed(before: &Targets, after: &Targets) -> (Wanted, Wanted) {
    let (mut old, mut new) = (Wanted::new(), Wanted::new());
    let n = after.services.len();
    let aligned = before.services.len() == n && before.rows.len() == n && after.rows.len() == n;
    if !aligned {
        for i in 0..before.services.len() {
            wanted_at(before, i, &mut old);
        }
        for i in 0..n {
            wanted_at(after, i, &mut new);
        }
        return (old, new);
    }
    let chunks = before
        .services
        .chunks()
        .iter()
        .zip(after.services.chunks())
        .zip(before.rows.chunks().iter().zip(after.rows.chunks()));
    for (c, ((s, t), (r, q))) in chunks.enumerate() {
        if Arc::ptr_eq(s, t) && Arc::ptr_eq(r, q) {
            continue;
        }
        for i in c * CHUNK..(c * CHUNK + t.len()) {
            if Arc::ptr_eq(&before.services[i], &after.services[i])
                && Arc::ptr_eq(&before.rows[i], &after.rows[i])
            {
                continue;
            }
            wanted_at(before, i, &mut old);
            wanted_at(after, i, &mut new);
        }
    }
    (old, new)
}

/// Brings `loops` (one per probed backend, with its probe) from `before`'s targets to
/// `after`'s: stops those no longer wanted as they were, starts those wanted anew.
fn update<L>(
    loops: &mut HashMap<usize, (Probe, L)>,
    before: &Targets,
    after: &Targets,
    mut start: impl FnMut(&Probe, &Arc<BackendState>) -> L,
    mut stop: impl FnMut(L),
) {
    let (old, new) = changed(before, after);
    for (key, (probe, _)) in &old {
        if new.get(key).is_some_and(|(p, _)| p == probe) {
            continue;
        }
        if let Some((_, l)) = loops.remove(key) {
            stop(l);
        }
    }
    for (key, (probe, state)) in new {
        if loops.get(&key).is_some_and(|(p, _)| *p == probe) {
            continue;
        }
        if let Some((_, l)) = loops.remove(&key) {
            stop(l);
        }
        let l = start(&probe, &state);
        loops.insert(key, (probe, l));
    }
}

/// Runs the probes of the latest `targets`, keeping one loop per backend. A change costs the
/// services that changed (`update`), not the table.
pub async fn run(mut targets: watch::Receiver<Targets>, concurrency: usize, metrics: Arc<Metrics>) {
    let permits = Arc::new(Semaphore::new(concurrency));
    // One loop per backend state (a backend of one service), keyed by where it lives; the loop
    // holds the state, so the key cannot be reused while the loop runs.
    let mut loops: HashMap<usize, (Probe, JoinHandle<()>)> = HashMap::new();
    let mut before = Targets::default();
    loop {
        let after = targets.borrow_and_update().clone();
        let start = |probe: &Probe, state: &Arc<BackendState>| {
            tokio::spawn(probe_loop(
                probe.clone(),
                state.clone(),
                permits.clone(),
                metrics.clone(),
            ))
        };
        update(&mut loops, &before, &after, start, |h| h.abort());
        before = after;
        if targets.changed().await.is_err() {
            for (_, (_, handle)) in loops {
                handle.abort();
            }
            return;
        }
    }
}

/// `d` give or take a tenth, so that backends added together are not probed in lockstep.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

async fn probe_loop(
    probe: Probe,
    state: Arc<BackendState>,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
) {
    let started = tokio::time::Instant::now();
    // The first probe comes soon (a new backend's state matters) but spread over a second.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1000)).min(probe.interval)).await;
    loop {
        let passed = {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            check(&probe, probe.target.unwrap_or(state.addr)).await
        };
        Metrics::count(&metrics.health_checks, if passed { "pass" } else { "fail" });
        if passed || started.elapsed() >= probe.grace {
            let flipped = state.health.record(passed, probe.max_failures);
            if flipped.is_some() {
                state.verdict_changed();
            }
            match flipped {
                Some(true) => tracing::warn!(backend = %state.addr, probe = ?probe.kind,
                    failures = probe.max_failures, "health check: backend down"),
                Some(false) => tracing::info!(backend = %state.addr, "health check: backend up"),
                None => {}
            }
        }
        tokio::time::sleep(jittered(probe.interval)).await;
    }
}

/// One probe, bounded by the probe's timeout.
pub async fn check(probe: &Probe, addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let ProbeKind::Http { path } = &probe.kind else {
            return Some(true);
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: switchyard-health-check\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        // The status line is all that counts: `HTTP/1.x NNN`.
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let status = std::str::from_utf8(&head[9..12])
            .ok()?
            .parse::<u16>()
            .ok()?;
        Some(head.starts_with(b"HTTP/1.") && (200..400).contains(&status))
    };
    matches!(
        tokio::time::timeout(probe.timeout, attempt).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_pass_and_fail_against_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let status = if buf[..n].starts_with(b"GET /ok ") {
                    204
                } else {
                    503
                };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        let probe = |kind| Probe {
            kind,
            port_index: 0,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_failures: 1,
            grace: Duration::ZERO,
            target: None,
        };
        let http = |path: &str| probe(ProbeKind::Http { path: path.into() });
        assert!(check(&probe(ProbeKind::Tcp), addr).await);
        assert!(check(&http("/ok"), addr).await);
        assert!(!check(&http("/bad"), addr).await);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!check(&probe(ProbeKind::Tcp), closed).await);
    }

    /// Probe loops brought from one table's targets to the next by `update` (which looks at
    /// the chunks that changed alone) are the loops made from the next table's targets from
    /// scratch; a task event starts and stops its own backends' loops and no other.
    #[tokio::test]
    async fn patched_targets_are_the_targets_made_again() {
        use crate::backends::Registry;
        use crate::cluster::fixtures::{app, task};
        use crate::cluster::{Cluster, ClusterUpdate, TaskState};
        use crate::routing::CompileConfig;
        use crate::routing::compile::{Cache, HealthPolicy, compile_changed};

        let tcp = Probe {
            kind: ProbeKind::Tcp,
            port_index: 0,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_failures: 3,
            grace: Duration::ZERO,
            target: None,
        };
        let mut config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
        config.health = Some(HealthPolicy {
            from_marathon: false,
            default: Some(tcp),
        });
        // Three chunks of services and then some.
        let n = CHUNK * 3 + 5;
        let apps = (0..n)
            .map(|i| {
                let tasks = (0..2)
                    .map(|t| task(&format!("a{i}.{t}"), 1000 + t))
                    .collect();
                app(&format!("/a{i:03}"), 10000 + i as u16, &[], tasks)
            })
            .collect();
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(apps));
        let mut cache = Cache::default();
        let mut registry = Registry::new(Arc::new(Metrics::new()), Duration::from_secs(30));
        let targets = |table: &crate::routing::RoutingTable, registry: &mut Registry| Targets {
            services: table.services.clone(),
            rows: registry.attach(table),
        };
        let first = compile_changed(&mut cache, &c, &config, None);
        let a = targets(&first, &mut registry);
        let scratch = |t: &Targets| {
            let mut loops = HashMap::new();
            update(&mut loops, &Targets::default(), t, |_, _| (), |_| {});
            let mut keys: Vec<(usize, Probe)> =
                loops.into_iter().map(|(k, (p, ()))| (k, p)).collect();
            keys.sort_by_key(|(k, _)| *k);
            keys
        };
        let mut loops = HashMap::new();
        update(&mut loops, &Targets::default(), &a, |_, _| (), |_| {});
        assert_eq!(loops.len(), 2 * n);

        // One task started in one app, one killed in another: a patched table.
        c.apply(ClusterUpdate::TaskStatus {
            app_id: "/a070".into(),
            task: task("a70.9", 1009),
        });
        let mut killed = task("a3.1", 1001);
        killed.state = TaskState::Other("TASK_KILLED".into());
        c.apply(ClusterUpdate::TaskStatus {
            app_id: "/a003".into(),
            task: killed,
        });
        let listed = std::collections::BTreeSet::from(["/a070".into(), "/a003".into()]);
        let second = compile_changed(&mut cache, &c, &config, Some(&listed));
        let patched = cache.patched.clone().expect("patched").services;
        let b = Targets {
            services: second.services.clone(),
            rows: registry.attach_patched(&second, &patched).expect("fits"),
        };
        let (mut started, mut stopped) = (0, 0);
        update(&mut loops, &a, &b, |_, _| started += 1, |()| stopped += 1);
        assert_eq!(
            (started, stopped),
            (1, 1),
            "the task started and the task killed"
        );
        let mut kept: Vec<(usize, Probe)> =
            loops.iter().map(|(k, (p, ()))| (*k, p.clone())).collect();
        kept.sort_by_key(|(k, _)| *k);
        assert_eq!(kept, scratch(&b));

        // An app gone: another length, every service looked at, the same answer.
        c.apply(ClusterUpdate::AppRemoved {
            id: "/a001".into(),
            at_ms: 0,
        });
        let third = compile_changed(&mut cache, &c, &config, None);
        let d = targets(&third, &mut registry);
        update(&mut loops, &b, &d, |_, _| (), |_| {});
        let mut kept: Vec<(usize, Probe)> =
            loops.iter().map(|(k, (p, ()))| (*k, p.clone())).collect();
        kept.sort_by_key(|(k, _)| *k);
        assert_eq!(kept, scratch(&d));
        assert_eq!(kept.len(), 2 * n - 2);
    }
}
