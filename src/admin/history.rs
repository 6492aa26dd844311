//! The dashboard's history: a bounded server-side ring of samples, so that its charts survive
//! a page reload. Every `admin.history_interval` (5 s by default) the control plane reads the
//! live table's counters — the backends' atomics (requests, 5xx answers, active connections,
//! ejections, verdicts) and their lock-free latency buckets — and keeps, per route and app
//! version and per backend, the last [`POINTS`] samples (15 minutes at 5 s). Nothing here is on
//! the proxy's path: the proxy only bumps atomics; the sampler reads them.
//!
//! Changes of a route's split (weights: a label, an override, a rollout step) are recorded as
//! marks when the table that carries them is published (checked every second), with the
//! weights before and after.
//!
//! Bounds: [`POINTS`] samples per series, at most [`MAX_VERSIONS`] route × app series and
//! [`MAX_BACKENDS`] backend series (the first ones in table order; the rest are counted in
//! `not_kept`), at most [`MAX_MARKS`] marks, and nothing older than `POINTS` intervals.
//! Served as `GET /v1/history` (docs/admin-api.md).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::backends::latency;
use crate::backends::{BackendKey, BackendState};
use crate::chunked::Chunked;
use crate::routing::routes::Route;
use crate::snapshot::{Snapshot, Store};

/// Samples kept per series: 15 minutes at the default 5 s interval.
pub const POINTS: usize = 180;
/// Route × app version series kept at most.
pub const MAX_VERSIONS: usize = 1000;
/// Backend series kept at most.
pub const MAX_BACKENDS: usize = 2000;
/// Split changes kept at most.
pub const MAX_MARKS: usize = 500;

/// One sample of a route's app version over the interval before `t`.
#[derive(Clone, Debug, Serialize)]
pub struct VersionPoint {
    /// Unix time of the sample, ms.
    pub t: u64,
    /// Requests (HTTP) or connections (TCP) per second.
    pub rps: f64,
    /// 5xx answers from its backends per second.
    pub errors_5xx_ps: f64,
    /// Response-time percentiles over the interval, ms (`null`: no response in it).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Its share of the route's split (weight over the sum of weights), 0..=1.
    pub share: f64,
}

/// One sample of a backend.
#[derive(Clone, Debug, Serialize)]
pub struct BackendPoint {
    pub t: u64,
    /// Connections (TCP) or requests (HTTP) in flight at the sample.
    pub active: usize,
    /// Times ejected as an outlier during the interval.
    pub ejections: u64,
    pub rps: f64,
    /// `up`, `down` (failing active checks), `ejected` or `draining`.
    pub state: &'static str,
}

/// A change of a route's split, as published.
#[derive(Clone, Debug, Serialize)]
pub struct Mark {
    pub t: u64,
    pub generation: u64,
    pub route: String,
    /// Weights per app id before and after (an app absent on one side joined or left).
    pub before: BTreeMap<String, u32>,
    pub after: BTreeMap<String, u32>,
}

#[derive(Default)]
struct VersionSeries {
    /// The service this version is, for its backends.
    service: Option<crate::routing::ServiceKey>,
    points: VecDeque<VersionPoint>,
}

/// What a backend's counters were at the last sample (or their change since it).
#[derive(Clone)]
struct Seen {
    requests: u64,
    errors_5xx: u64,
    ejections: u64,
    /// `None` before the backend's first response: most backends of a big table have none, and
    /// the buckets are half a kilobyte.
    latency: Option<Box<[u64; latency::BUCKETS]>>,
}

#[derive(Default)]
struct Ring {
    /// Per (route, app id).
    versions: BTreeMap<(String, String), VersionSeries>,
    backends: BTreeMap<BackendKey, VecDeque<BackendPoint>>,
    marks: VecDeque<Mark>,
    seen: HashMap<BackendKey, Seen>,
    last_sample_ms: Option<u64>,
    /// The routes of the last table looked at, and its generation: shared with that table
    /// (and, for routes that did not change, with the tables after it), where a copy of every
    /// route's weights was 20 MB at 50,000 apps.
    routes: Option<(u64, Chunked<Arc<Route>>)>,
    not_kept_versions: usize,
    not_kept_backends: usize,
}

pub struct History {
    interval: Duration,
    ring: Mutex<Ring>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn state_of(st: &BackendState) -> &'static str {
    if st.is_draining() {
        "draining"
    } else if st.outlier.ejected_for().is_some() {
        "ejected"
    } else if st.health.is_down() {
        "down"
    } else {
        "up"
    }
}

impl History {
    pub fn new(interval: Duration) -> Arc<History> {
        Arc::new(History {
            interval: interval.max(Duration::from_millis(10)),
            ring: Mutex::new(Ring::default()),
        })
    }

    /// Samples every interval and looks for split changes every second (or every interval,
    /// when shorter), until the runtime stops. Each sample runs on the blocking pool: the
    /// control thread only waits for it.
    pub async fn run(self: Arc<Self>, store: Arc<Store>) {
        let tick = self.interval.min(Duration::from_secs(1));
        let mut next_sample = tokio::time::Instant::now() + self.interval;
        loop {
            tokio::time::sleep(tick).await;
            let sample = tokio::time::Instant::now() >= next_sample;
            if sample {
                next_sample += self.interval;
                if next_sample < tokio::time::Instant::now() {
                    next_sample = tokio::time::Instant::now() + self.interval;
                }
            }
            let (history, snapshot) = (self.clone(), store.load_full());
            let now = unix_ms(SystemTime::now());
            let done = tokio::task::spawn_blocking(move || {
                history.marks(&snapshot, now);
                if sample {
                    history.sample(&snapshot, now);
                }
            })
            .await;
            if done.is_err() {
                return;
            }
        }
    }

    /// Records a mark per route whose weights differ from the last table looked at.
    pub fn marks(&self, snapshot: &Snapshot, now_ms: u64) {
        let mut ring = self.ring.lock().unwrap();
        if ring
            .routes
            .as_ref()
            .is_some_and(|(g, _)| *g == snapshot.generation)
        {
            return;
        }
        let routes = snapshot.table.routes.clone();
        if let Some((_, before)) = ring.routes.take() {
            // By name, as `RoutingTable::route_weights` has them: routes of one name (a
            // deployment group's port route and its vhost route) are the last of that name.
            fn by_name(routes: &Chunked<Arc<Route>>) -> HashMap<&str, &Arc<Route>> {
                routes.iter().map(|r| (r.name.as_str(), r)).collect()
            }
            let (before, after) = (by_name(&before), by_name(&routes));
            // A route that appears is no change of a split; one whose weights move is.
            let mut moved: Vec<(&Arc<Route>, &Arc<Route>)> = after
                .values()
                .filter_map(|route| Some((*before.get(route.name.as_str())?, *route)))
                .filter(|(previous, route)| {
                    !Arc::ptr_eq(previous, route) && previous.split_differs(route)
                })
                .collect();
            moved.sort_by(|a, b| a.1.name.cmp(&b.1.name));
            for (previous, route) in moved {
                ring.marks.push_back(Mark {
                    t: now_ms,
                    generation: snapshot.generation,
                    route: route.name.clone(),
                    before: previous.weights(),
                    after: route.weights(),
                });
            }
            while ring.marks.len() > MAX_MARKS {
                ring.marks.pop_front();
            }
        }
        ring.routes = Some((snapshot.generation, routes));
    }

    /// Reads every kept series' counters from `snapshot` at `now_ms`.
    pub fn sample(&self, snapshot: &Snapshot, now_ms: u64) {
        let mut ring = self.ring.lock().unwrap();
        let ring = &mut *ring;
        let elapsed_s = ring
            .last_sample_ms
            .map(|last| now_ms.saturating_sub(last) as f64 / 1000.0)
            .filter(|s| *s > 0.0);
        ring.last_sample_ms = Some(now_ms);
        let table = &snapshot.table;
        let mut seen = HashMap::with_capacity(ring.seen.len());
        let (mut versions, mut backends) = (0usize, 0usize);
        let (mut not_kept_versions, mut not_kept_backends) = (0usize, 0usize);
        // A backend's deltas since the last sample (none on its first).
        let mut delta_of = |key: &BackendKey, st: &BackendState| -> Option<Seen> {
            let now = Seen {
                requests: st.metrics.connections(),
                errors_5xx: st.metrics.responses(5),
                ejections: st.metrics.ejections(),
                latency: st.metrics.latency().map(Box::new),
            };
            let delta = ring.seen.get(key).map(|before| Seen {
                requests: now.requests.saturating_sub(before.requests),
                errors_5xx: now.errors_5xx.saturating_sub(before.errors_5xx),
                ejections: now.ejections.saturating_sub(before.ejections),
                latency: now.latency.as_ref().map(|now| {
                    Box::new(std::array::from_fn(|i| {
                        let earlier = before.latency.as_ref().map_or(0, |b| b[i]);
                        now[i].saturating_sub(earlier)
                    }))
                }),
            });
            seen.insert(key.clone(), now);
            delta
        };
        let mut backend_deltas: HashMap<usize, Vec<Option<Seen>>> = HashMap::new();
        for route in &table.routes {
            let total: u64 = route.members.iter().map(|m| u64::from(m.weight)).sum();
            let backends_total: usize = route
                .members
                .iter()
                .map(|m| table.services[m.service].backends.len())
                .sum();
            for m in &route.members {
                if versions >= MAX_VERSIONS {
                    not_kept_versions += 1;
                    continue;
                }
                versions += 1;
                let service = &table.services[m.service];
                let states = &snapshot.states[m.service];
                // Each service's backends are read once per sample, whichever routes use it.
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    backend_deltas.entry(m.service)
                {
                    // Two tasks on one address share a state: it is one backend, read once.
                    let deltas = crate::backends::unique(states)
                        .map(|st| {
                            let key = (service.key.clone(), st.addr);
                            let delta = delta_of(&key, st);
                            if backends >= MAX_BACKENDS {
                                not_kept_backends += 1;
                            } else {
                                backends += 1;
                                let series = ring.backends.entry(key).or_default();
                                series.push_back(BackendPoint {
                                    t: now_ms,
                                    active: st.active(),
                                    ejections: delta.as_ref().map_or(0, |d| d.ejections),
                                    rps: match (&delta, elapsed_s) {
                                        (Some(d), Some(s)) => d.requests as f64 / s,
                                        _ => 0.0,
                                    },
                                    state: state_of(st),
                                });
                                while series.len() > POINTS {
                                    series.pop_front();
                                }
                            }
                            delta
                        })
                        .collect();
                    slot.insert(deltas);
                }
                let deltas = &backend_deltas[&m.service];
                let share = if total > 0 {
                    f64::from(m.weight) / total as f64
                } else if backends_total > 0 {
                    service.backends.len() as f64 / backends_total as f64
                } else {
                    0.0
                };
                let mut requests = 0u64;
                let mut errors = 0u64;
                let mut latency = [0u64; latency::BUCKETS];
                let mut measured = false;
                for d in deltas.iter().flatten() {
                    measured = true;
                    requests += d.requests;
                    errors += d.errors_5xx;
                    for (l, d) in latency
                        .iter_mut()
                        .zip(d.latency.iter().flat_map(|d| d.iter()))
                    {
                        *l += d;
                    }
                }
                let per_s = |n: u64| match elapsed_s {
                    Some(s) if measured => n as f64 / s,
                    _ => 0.0,
                };
                let series = ring
                    .versions
                    .entry((route.name.clone(), m.app_id.to_string()))
                    .or_default();
                series.service = Some(service.key.clone());
                series.points.push_back(VersionPoint {
                    t: now_ms,
                    rps: per_s(requests),
                    errors_5xx_ps: per_s(errors),
                    p50_ms: latency::quantile_ms(&latency, 0.50),
                    p99_ms: latency::quantile_ms(&latency, 0.99),
                    share,
                });
                while series.points.len() > POINTS {
                    series.points.pop_front();
                }
            }
        }
        ring.seen = seen;
        ring.not_kept_versions = not_kept_versions;
        ring.not_kept_backends = not_kept_backends;
        // Series with no sample inside the window are forgotten.
        let oldest = now_ms.saturating_sub(self.interval.as_millis() as u64 * POINTS as u64);
        ring.versions
            .retain(|_, s| s.points.back().is_some_and(|p| p.t > oldest));
        ring.backends
            .retain(|_, s| s.back().is_some_and(|p| p.t > oldest));
        while ring.marks.front().is_some_and(|m| m.t <= oldest) {
            ring.marks.pop_front();
        }
    }

    /// `GET /v1/history`: `route=NAME` (repeatable; all routes without it), `since=UNIX_MS`
    /// (only points and marks after it).
    pub fn view(&self, query: &str) -> serde_json::Value {
        use serde_json::json;
        let mut routes: Vec<String> = Vec::new();
        let mut since = 0u64;
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            match k {
                "route" => routes.push(super::percent_decode(&v.replace('+', " "))),
                "since" => since = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        let wanted = |r: &str| routes.is_empty() || routes.iter().any(|w| w == r);
        let ring = self.ring.lock().unwrap();
        let mut by_route: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
        for ((route, app), series) in &ring.versions {
            if !wanted(route) {
                continue;
            }
            let points: Vec<&VersionPoint> = series.points.iter().filter(|p| p.t > since).collect();
            let backends: Vec<serde_json::Value> = series
                .service
                .as_ref()
                .map(|key| {
                    ring.backends
                        .range((key.clone(), SocketAddr::from(([0, 0, 0, 0], 0)))..)
                        .take_while(|((k, _), _)| k == key)
                        .map(|((_, addr), points)| {
                            let points: Vec<&BackendPoint> =
                                points.iter().filter(|p| p.t > since).collect();
                            json!({"address": addr, "points": points})
                        })
                        .collect()
                })
                .unwrap_or_default();
            by_route.entry(route).or_default().push(json!({
                "app_id": app,
                "points": points,
                "backends": backends,
            }));
        }
        let routes_view: Vec<serde_json::Value> = by_route
            .into_iter()
            .map(|(route, versions)| {
                let marks: Vec<&Mark> = ring
                    .marks
                    .iter()
                    .filter(|m| m.route == route && m.t > since)
                    .collect();
                json!({"route": route, "versions": versions, "share_changes": marks})
            })
            .collect();
        json!({
            "interval_ms": self.interval.as_millis() as u64,
            "points_max": POINTS,
            "max_versions": MAX_VERSIONS,
            "max_backends": MAX_BACKENDS,
            "not_kept": {"versions": ring.not_kept_versions, "backends": ring.not_kept_backends},
            "last_sample_unix_ms": ring.last_sample_ms,
            "routes": routes_view,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{app, task};
    use crate::cluster::{Cluster, ClusterUpdate};
    use crate::routing::{CompileConfig, compile};

    fn snapshot(generation: u64, apps: Vec<crate::cluster::App>) -> Snapshot {
        let mut cluster = Cluster::default();
        cluster.apply(ClusterUpdate::Snapshot(apps));
        let config = CompileConfig::group("*", "127.0.0.1".parse().unwrap());
        Snapshot {
            generation,
            table: Arc::new(compile(&cluster, &config)),
            ..Snapshot::empty()
        }
    }

    fn shop(blue_weight: &str) -> Vec<crate::cluster::App> {
        let blue = [
            ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
            ("HAPROXY_DEPLOYMENT_COLOUR", "blue"),
            ("HAPROXY_0_VHOST", "shop.example.com"),
            ("SWITCHYARD_0_WEIGHT", blue_weight),
        ];
        let green = [
            ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
            ("HAPROXY_DEPLOYMENT_COLOUR", "green"),
            ("HAPROXY_DEPLOYMENT_ALT_PORT", "10100"),
            ("SWITCHYARD_0_WEIGHT", "10"),
        ];
        vec![
            app("/shop-blue", 10000, &blue, vec![task("b.1", 1)]),
            app("/shop-green", 10000, &green, vec![task("g.1", 2)]),
        ]
    }

    /// A mark as (route, weights before, weights after).
    type Shown = (String, BTreeMap<String, u32>, BTreeMap<String, u32>);

    fn marks(history: &History) -> Vec<Shown> {
        let ring = history.ring.lock().unwrap();
        ring.marks
            .iter()
            .map(|m| (m.route.clone(), m.before.clone(), m.after.clone()))
            .collect()
    }

    /// A deployment group's routes share its name (its service port's route and the route of
    /// a vhost only one colour has): a table compiled again with the same splits is no change,
    /// and a weight that moves is one mark for the name, as `RoutingTable::route_weights` has it.
    #[test]
    fn marks_follow_splits_by_route_name() {
        let first = snapshot(1, shop("90"));
        let names: Vec<&str> = first.table.routes.iter().map(|r| r.name.as_str()).collect();
        assert!(
            names.iter().filter(|n| **n == "shop").count() > 1,
            "routes of one name: {names:?}"
        );
        let history = History::new(Duration::from_secs(5));
        history.marks(&first, 1);
        history.marks(&snapshot(2, shop("90")), 2);
        assert_eq!(marks(&history), vec![], "the same splits, compiled again");
        history.marks(&snapshot(3, shop("70")), 3);
        let weights = snapshot(3, shop("70")).table.route_weights();
        let before = snapshot(2, shop("90")).table.route_weights();
        let expected: Vec<_> = weights
            .iter()
            .filter(|(name, after)| before.get(*name).is_some_and(|b| b != *after))
            .map(|(name, after)| (name.clone(), before[name].clone(), after.clone()))
            .collect();
        assert_eq!(expected.len(), 1, "{expected:?}");
        assert_eq!(marks(&history), expected);
    }
}
