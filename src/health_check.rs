//! Active health checks: switchyard probes backends itself, with the app's Marathon
//! `healthChecks` (HTTP and TCP, and their MESOS_ forms) or the configured default, so that a
//! backend that stops answering leaves selection within seconds rather than when Marathon next
//! reports. Probes are jittered and bounded in concurrency. A backend is down after
//! `max_consecutive_failures` failures in a row and up again after one success; down, it is
//! tried only when every other backend is unavailable too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::backends::BackendState;
use crate::config::HealthChecks;
use crate::metrics::Metrics;

/// One way of checking a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Probe {
    pub kind: ProbeKind,
    /// The app port it checks (Marathon's `portIndex`).
    pub port_index: usize,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_failures: u32,
    /// Failures in this long after a backend appears do not count (Marathon's grace period).
    pub grace: Duration,
    /// Probe this address rather than the backend's own: the task's port named by
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`. Set per backend when targets are sent.
    pub target: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A connect succeeds.
    Tcp,
    /// `GET path` answers 2xx or 3xx (Marathon's rule).
    Http { path: String },
}

/// Marathon's `healthChecks` entry as a probe; `None` for checks switchyard cannot run
/// (COMMAND) or that name a port by number rather than index.
pub fn from_marathon(check: &Value) -> Option<Probe> {
    let protocol = check["protocol"].as_str().unwrap_or("HTTP");
    let kind = match protocol {
        "HTTP" | "MESOS_HTTP" => ProbeKind::Http {
            path: check["path"]
                .as_str()
                .filter(|p| p.starts_with('/') && p.len() < 1024 && p.is_ascii())
                .filter(|p| !p.bytes().any(|b| b.is_ascii_control() || b == b' '))
                .unwrap_or("/")
                .to_string(),
        },
        // An HTTPS check's TLS is the app's: switchyard checks that the port accepts.
        "TCP" | "MESOS_TCP" | "HTTPS" | "MESOS_HTTPS" => ProbeKind::Tcp,
        _ => return None,
    };
    if check.get("port").is_some_and(|p| !p.is_null()) {
        return None;
    }
    let seconds = |key: &str, default: u64| {
        Duration::from_secs(check[key].as_u64().unwrap_or(default).clamp(1, 3600))
    };
    Some(Probe {
        kind,
        port_index: check["portIndex"].as_u64().unwrap_or(0).min(1024) as usize,
        interval: seconds("intervalSeconds", 60),
        timeout: seconds("timeoutSeconds", 20),
        max_failures: check["maxConsecutiveFailures"]
            .as_u64()
            .unwrap_or(3)
            .clamp(1, 1000) as u32,
        grace: Duration::from_secs(
            check["gracePeriodSeconds"]
                .as_u64()
                .unwrap_or(300)
                .min(86_400),
        ),
        target: None,
    })
}

/// What `compile` needs from `[health_checks]` to give each service its probe.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Use the app's Marathon checks.
    pub from_marathon: bool,
    /// For ports no Marathon check covers.
    pub default: Option<Probe>,
}

impl Policy {
    /// `None` when health checks are off.
    pub fn from_config(c: &HealthChecks) -> Option<Policy> {
        if !c.enabled {
            return None;
        }
        let kind = match c.default.as_str() {
            "tcp" => Some(ProbeKind::Tcp),
            "http" => Some(ProbeKind::Http {
                path: c.path.clone(),
            }),
            _ => None,
        };
        Some(Policy {
            from_marathon: c.from_marathon,
            default: kind.map(|kind| Probe {
                kind,
                port_index: 0,
                interval: c.interval,
                timeout: c.timeout,
                max_failures: c.max_consecutive_failures,
                grace: Duration::ZERO,
                target: None,
            }),
        })
    }

    /// The probe for port `n` of an app with Marathon checks `marathon`.
    pub fn probe(&self, marathon: &[Probe], n: usize) -> Option<Probe> {
        self.from_marathon
            .then(|| marathon.iter().find(|p| p.port_index == n).cloned())
            .flatten()
            .or_else(|| self.default.clone())
    }
}

/// A backend's active health, beside its passive outlier state.
#[derive(Debug, Default)]
pub struct Health {
    failures: AtomicU32,
    down: AtomicBool,
}

impl Health {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Records a probe; returns the new state when it changed.
    fn record(&self, passed: bool, max_failures: u32) -> Option<bool> {
        if passed {
            self.failures.store(0, Ordering::Relaxed);
            return self.down.swap(false, Ordering::Relaxed).then_some(false);
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        (failures >= max_failures && !self.down.swap(true, Ordering::Relaxed)).then_some(true)
    }
}

/// What to probe: every backend of the live table whose service has a probe.
pub type Targets = Vec<(Probe, Arc<BackendState>)>;

/// Runs the probes of the latest `targets`, keeping one loop per backend.
pub async fn run(mut targets: watch::Receiver<Targets>, concurrency: usize, metrics: Arc<Metrics>) {
    let permits = Arc::new(Semaphore::new(concurrency));
    // One loop per backend state (a backend of one service), keyed by where it lives; the loop
    // holds the state, so the key cannot be reused while the loop runs.
    let mut loops: HashMap<usize, (Probe, Arc<BackendState>, JoinHandle<()>)> = HashMap::new();
    loop {
        let wanted: HashMap<usize, (Probe, Arc<BackendState>)> = targets
            .borrow_and_update()
            .iter()
            .map(|(p, s)| (Arc::as_ptr(s) as usize, (p.clone(), s.clone())))
            .collect();
        loops.retain(|key, (probe, _, handle)| {
            let keep = wanted.get(key).is_some_and(|(p, _)| p == probe);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (addr, (probe, state)) in wanted {
            if loops.contains_key(&addr) {
                continue;
            }
            let handle = tokio::spawn(probe_loop(
                probe.clone(),
                state.clone(),
                permits.clone(),
                metrics.clone(),
            ));
            loops.insert(addr, (probe, state, handle));
        }
        if targets.changed().await.is_err() {
            for (_, (_, _, handle)) in loops {
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
            match state.health.record(passed, probe.max_failures) {
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
    use serde_json::json;

    #[test]
    fn marathon_checks_become_probes_with_marathon_defaults() {
        let http = from_marathon(&json!({"protocol": "MESOS_HTTP", "path": "/health",
            "portIndex": 1, "intervalSeconds": 5, "maxConsecutiveFailures": 2}))
        .unwrap();
        assert_eq!(
            http.kind,
            ProbeKind::Http {
                path: "/health".into()
            }
        );
        assert_eq!(
            (http.port_index, http.interval, http.max_failures),
            (1, Duration::from_secs(5), 2)
        );
        assert_eq!(http.timeout, Duration::from_secs(20));
        assert_eq!(http.grace, Duration::from_secs(300));
        let tcp = from_marathon(&json!({"protocol": "TCP"})).unwrap();
        assert_eq!((tcp.kind, tcp.port_index), (ProbeKind::Tcp, 0));
        assert!(
            from_marathon(&json!({"protocol": "COMMAND", "command": {"value": "true"}})).is_none()
        );
        assert!(from_marathon(&json!({"protocol": "HTTP", "port": 8080})).is_none());
        // A path that would break the request line falls back to /.
        let odd = from_marathon(&json!({"path": "/a b\r\nX: y"})).unwrap();
        assert_eq!(odd.kind, ProbeKind::Http { path: "/".into() });
    }

    #[test]
    fn down_after_max_failures_up_after_one_success() {
        let h = Health::default();
        assert_eq!(h.record(false, 3), None);
        assert_eq!(h.record(false, 3), None);
        assert_eq!(h.record(false, 3), Some(true));
        assert!(h.is_down());
        assert_eq!(h.record(false, 3), None);
        assert_eq!(h.record(true, 3), Some(false));
        assert!(!h.is_down());
    }

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
}
