//! The one writer: applies source events to the cluster model, coalesces bursts, compiles, swaps
//! the table in, attaches backend runtime state, and reconciles the listener set.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use crate::backends::Registry;
use crate::cluster::{AppId, Applied, Cluster, ClusterUpdate};
use crate::discovery::SourceEvent;
use crate::metrics::Metrics;
use crate::proxy::listeners::Listeners;
use crate::routing::compile::{Cache, compile_changed};
use crate::routing::{CompileConfig, Problem, RoutingTable};
use crate::snapshot::{Snapshot, Store};
use crate::zone::{Verdicts, Zone, ZoneConfig};

use after_swap::AfterSwap;
pub use after_swap::scrape;
use changes::summary;

/// Runtime requests from the admin API.
pub enum Command {
    /// What the live table is compiled from, for a dry run (`POST /v1/plan`): the cluster,
    /// the compile configuration and the DNS zone's. Changes nothing.
    Inputs {
        reply: oneshot::Sender<(Arc<Cluster>, CompileConfig, Option<ZoneConfig>)>,
    },
    /// Set (`Some`) or clear (`None`) a route's weights; answered once the new table is live.
    SetWeights {
        route: String,
        weights: Option<BTreeMap<AppId, u32>>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Put an app in maintenance (`true`: every HTTP request answered 503 with its page, the
    /// route kept) or take it out; answered once the new table is live.
    SetMaintenance {
        app: AppId,
        on: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A reloaded configuration; answered once a table compiled with it is live.
    Reconfigure {
        compile: Box<CompileConfig>,
        zone: Option<ZoneConfig>,
        drain_timeout: Duration,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A runtime weight override, and the labels of its apps when it was set: a label change
/// (a new deployment) clears it.
struct Override {
    weights: BTreeMap<AppId, u32>,
    labels: BTreeMap<AppId, u64>,
}

pub struct Reconciler {
    pub config: CompileConfig,
    pub debounce: Duration,
    /// Shared with a DNS zone build in progress; copied on write only then.
    pub cluster: Arc<Cluster>,
    pub registry: Registry,
    pub store: Arc<Store>,
    pub listeners: Listeners,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub refetch: mpsc::Sender<AppId>,
    pub stopping: Arc<crate::proxy::Context>,
    /// What the active health checker probes; sent after every swap.
    pub health_targets: watch::Sender<crate::health_check::Targets>,
    problems_seen: HashSet<Problem>,
    overrides: BTreeMap<String, Override>,
    /// The weights canary rollouts hold, by route (`crate::rollout::Rollouts::held`): part of
    /// every compile from the first table on — recorded rollouts are read before it — and
    /// kept when a new deployment's labels clear the overrides, so a failed canary's 0 is never
    /// out of the table. Applied while every app they name is an app of the route.
    pub held: Arc<std::sync::Mutex<crate::routing::routes::Overrides>>,
    /// Apps in maintenance by the admin API (kept across reloads, not across restarts).
    maintenance: BTreeSet<AppId>,
    replies: Vec<oneshot::Sender<Result<(), String>>>,
    /// A full snapshot has been applied.
    synced: bool,
    zone: ZoneBuilds,
    /// Each app's compiled part, reused while the app is unchanged: an event compiles the apps
    /// it touched (`routing::compile::Cache`).
    compiled: Cache,
    /// Apps whose agent names the next swap resolves (`None`: every app's).
    unresolved: Option<BTreeSet<AppId>>,
    /// Apps the events applied since the last swap changed (`None`: not known, after a
    /// snapshot, a Mesos update or a command): the next compile visits those alone
    /// (`routing::compile::compile_changed`, which audits the list).
    changed: Option<BTreeSet<AppId>>,
    /// Backends in the live table.
    backends: usize,
    /// The compile cache's count of distrusted lists already counted in the metric.
    distrusted: u64,
    /// The work after a swap done on the idle-priority thread (the table hash).
    after: Arc<AfterSwap>,
    /// Called with the model of every swap once synced (the relay's feed, `relay::Relay::offer`);
    /// holding the model makes the next change copy it once.
    pub on_swap: Option<Box<dyn Fn(Arc<Cluster>) + Send>>,
}

impl Reconciler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: CompileConfig,
        debounce: Duration,
        registry: Registry,
        store: Arc<Store>,
        listeners: Listeners,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
        refetch: mpsc::Sender<AppId>,
        ctx: Arc<crate::proxy::Context>,
        zone: Option<ZoneConfig>,
    ) -> Reconciler {
        Reconciler {
            config,
            debounce,
            cluster: Arc::default(),
            registry,
            store,
            listeners,
            metrics,
            status,
            refetch,
            stopping: ctx,
            health_targets: watch::Sender::new(Default::default()),
            problems_seen: HashSet::new(),
            overrides: BTreeMap::new(),
            held: Arc::default(),
            maintenance: BTreeSet::new(),
            replies: Vec::new(),
            synced: false,
            compiled: Cache::default(),
            unresolved: None,
            changed: None,
            backends: 0,
            distrusted: 0,
            after: Arc::default(),
            on_swap: None,
            zone: {
                let (done_tx, done_rx) = mpsc::channel(1);
                ZoneBuilds {
                    config: zone,
                    running: false,
                    dirty: false,
                    published: false,
                    done_tx,
                    done_rx,
                    verdicts: Verdicts::default(),
                    recheck: None,
                    kept: Arc::default(),
                    splits: Default::default(),
                }
            },
        }
    }

    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<SourceEvent>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut last_swap: Option<tokio::time::Instant> = None;
        // Old tables are freed here once their last reader lets go (see `Store::reap`).
        let mut reap = tokio::time::interval(std::time::Duration::from_secs(1));
        reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let verdicts = self.registry.verdict_changes();
        loop {
            let recheck = self.zone.recheck;
            let first = tokio::select! {
                _ = verdicts.notified() => {
                    self.verdicts_changed();
                    continue;
                }
                _ = async {
                    match recheck {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.zone.recheck = None;
                    self.verdicts_changed();
                    continue;
                }
                e = events.recv() => e,
                _ = reap.tick() => {
                    self.store.reap();
                    if let Some(spare) = crate::zone::compact::idle_spare() {
                        tokio::task::spawn_blocking(move || drop(spare));
                    }
                    continue;
                }
                Some((zone, synced)) = self.zone.done_rx.recv() => {
                    self.publish_zone(zone, synced);
                    continue;
                }
                Some(command) = commands.recv() => {
                    if self.command(command) {
                        // What a command changes is not an app: every app is looked at.
                        self.changed = None;
                        self.swap().await;
                    }
                    continue;
                }
                _ = self.stopping.shutdown.stopping() => None,
            };
            let Some(first) = first else { break };
            let mut dirty = self.apply(first);
            while let Ok(e) = events.try_recv() {
                dirty |= self.apply(e);
            }
            // Leading-edge coalescing: after a quiet spell a change is swapped in at once; under
            // a burst, at most one swap per debounce window, carrying everything since the last.
            if let Some(earliest) = last_swap.map(|t| t + self.debounce) {
                loop {
                    tokio::select! {
                        e = events.recv() => match e {
                            Some(e) => dirty |= self.apply(e),
                            None => break,
                        },
                        _ = tokio::time::sleep_until(earliest) => break,
                    }
                }
            }
            if dirty {
                self.swap().await;
                last_swap = Some(tokio::time::Instant::now());
            }
        }
        self.listeners.close_all();
    }

    /// Ready after the first full sync, and with DNS on, once its zone answers from it.
    fn update_readiness(&self) {
        let ready = self.synced && (self.zone.config.is_none() || self.zone.published);
        self.status.ready.store(ready, Ordering::Relaxed);
    }

    /// Validates and records a command; true when the table must be rebuilt.
    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Reconfigure {
                compile,
                zone,
                drain_timeout,
                reply,
            } => {
                self.config = *compile;
                if zone.is_none() {
                    // Without DNS no zone is built: nothing to keep the last one for.
                    self.zone.kept = Arc::default();
                }
                self.zone.config = zone;
                self.registry.reconfigure(drain_timeout);
                self.replies.push(reply);
                true
            }
            Command::SetMaintenance { app, on, reply } => {
                if on && !self.cluster.apps.contains_key(&app) {
                    let _ = reply.send(Err(format!("no app {app}")));
                    return false;
                }
                let changed = if on {
                    self.maintenance.insert(app.clone())
                } else {
                    self.maintenance.remove(&app)
                };
                if !changed {
                    let _ = reply.send(Ok(()));
                    return false;
                }
                tracing::info!(app_id = %app, on, "maintenance set by the admin API");
                self.replies.push(reply);
                true
            }
            Command::Inputs { reply } => {
                let _ = reply.send((
                    self.cluster.clone(),
                    self.config.clone(),
                    self.zone.config.clone(),
                ));
                false
            }
            Command::SetWeights {
                route,
                weights,
                reply,
            } => {
                let table = self.store.load();
                let Some(found) = table.table.routes.iter().find(|r| r.name == route) else {
                    let _ = reply.send(Err(format!("no route named {route:?}")));
                    return false;
                };
                let members: BTreeSet<AppId> =
                    found.members.iter().map(|m| m.app_id.clone()).collect();
                match weights {
                    None => {
                        self.overrides.remove(&route);
                        tracing::info!(route, "weight override cleared");
                    }
                    Some(weights) => {
                        if let Some(stranger) = weights.keys().find(|a| !members.contains(*a)) {
                            let _ =
                                reply.send(Err(format!("{stranger} is not in route {route:?}")));
                            return false;
                        }
                        if weights.values().any(|&w| w > 1_000_000) {
                            let _ = reply.send(Err("weights must be at most 1000000".into()));
                            return false;
                        }
                        let labels = members
                            .iter()
                            .map(|a| (a.clone(), self.labels_of(a)))
                            .collect();
                        tracing::info!(route, ?weights, "weight override set");
                        self.overrides.insert(route, Override { weights, labels });
                    }
                }
                self.replies.push(reply);
                true
            }
        }
    }

    fn labels_of(&self, app: &AppId) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.cluster
            .apps
            .get(app)
            .map(|a| &a.labels)
            .hash(&mut hasher);
        hasher.finish()
    }

    /// Drops overrides whose apps' labels changed since they were set (a new deployment), and
    /// hands the rest to `compile`.
    fn refresh_overrides(&mut self) {
        let stale: Vec<String> = self
            .overrides
            .iter()
            .filter(|(_, o)| {
                o.labels
                    .iter()
                    .any(|(app, hash)| self.labels_of(app) != *hash)
            })
            .map(|(route, _)| route.clone())
            .collect();
        for route in stale {
            tracing::info!(
                route,
                "weight override cleared: the route's app labels changed"
            );
            self.overrides.remove(&route);
        }
        self.config.maintenance = self.maintenance.clone();
        self.config.weight_overrides = self
            .overrides
            .iter()
            .map(|(r, o)| (r.clone(), o.weights.clone()))
            .collect();
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (route, weights) in held {
            if weights
                .keys()
                .all(|app| self.cluster.apps.contains_key(app))
            {
                self.config.weight_overrides.insert(route, weights);
            }
        }
    }

    /// Held weights `table` applied to a route that does not have every app they name (the
    /// apps moved to other routes): taken out of the compile again.
    fn misheld(&mut self, table: &RoutingTable) -> bool {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = self.config.weight_overrides.len();
        self.config.weight_overrides.retain(|name, weights| {
            held.get(name) != Some(weights)
                || table
                    .routes
                    .iter()
                    .find(|r| r.name == *name)
                    .is_none_or(|r| {
                        weights
                            .keys()
                            .all(|app| r.members.iter().any(|m| m.app_id == *app))
                    })
        });
        self.config.weight_overrides.len() != before
    }

    /// Applies one event; true when the table must be rebuilt.
    fn apply(&mut self, event: SourceEvent) -> bool {
        match event {
            SourceEvent::Connected(up) => {
                // Ordered (SeqCst, as `full_reads` below) for the relay, which reads the count
                // before `connected` and relies on a count it sees coming after the
                // "connected" of the read it counts.
                if !up {
                    let reads = self.status.full_reads.load(Ordering::SeqCst);
                    self.status.reads_at_loss.store(reads, Ordering::SeqCst);
                }
                self.status.connected.store(up, Ordering::SeqCst);
                if up {
                    *self.status.source_error.lock().unwrap() = None;
                }
                false
            }
            SourceEvent::Failed { source, error } => {
                let mut current = self.status.source_error.lock().unwrap();
                // A repeat of the same failure keeps its start time.
                if current
                    .as_ref()
                    .is_none_or(|e| e.source != source || e.error != error)
                {
                    let since_unix_ms = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    *current = Some(SourceError {
                        source,
                        error,
                        since_unix_ms,
                    });
                }
                false
            }
            SourceEvent::Mesos(report) => {
                // Mesos alone makes the model: its loss is the source's (as `Connected`).
                if !report.connected && self.status.mesos_only.load(Ordering::Relaxed) {
                    let reads = self.status.full_reads.load(Ordering::SeqCst);
                    self.status.reads_at_loss.store(reads, Ordering::SeqCst);
                }
                *self.status.mesos.lock().unwrap() = Some(report);
                false
            }
            SourceEvent::Update(update) => {
                // Ready with the first full snapshot of Marathon (or the file), or of Mesos when
                // it is the only source: with both, Marathon's apps must be in before serving.
                let mesos_snapshot = matches!(
                    update,
                    ClusterUpdate::Mesos(crate::cluster::mesos::MesosUpdate::Snapshot { .. })
                );
                let full = matches!(update, ClusterUpdate::Snapshot(_))
                    || (mesos_snapshot && self.status.mesos_only.load(Ordering::Relaxed));
                // Whose agent names may be new: the next swap resolves those (all, on a snapshot).
                match &update {
                    ClusterUpdate::Snapshot(_) => self.unresolved = None,
                    ClusterUpdate::AppUpserted(app) => self.note_hosts(&app.id),
                    ClusterUpdate::TaskStatus { app_id, .. } => self.note_hosts(app_id),
                    _ => {}
                }
                // The apps it may change: those it names; a snapshot or Mesos's word (which
                // may move any of Marathon's tasks) any.
                let named = match &update {
                    ClusterUpdate::AppUpserted(app) => Some(&app.id),
                    ClusterUpdate::AppRemoved { id, .. } => Some(id),
                    ClusterUpdate::TaskStatus { app_id, .. }
                    | ClusterUpdate::TaskHealth { app_id, .. }
                    | ClusterUpdate::InstanceHealth { app_id, .. } => Some(app_id),
                    ClusterUpdate::Snapshot(_) | ClusterUpdate::Mesos(_) => None,
                };
                match (named, &mut self.changed) {
                    (Some(id), Some(changed)) => {
                        changed.insert(id.clone());
                    }
                    (None, changed) => *changed = None,
                    (Some(_), None) => {}
                }
                if let Applied::Refetch(app) = Arc::make_mut(&mut self.cluster).apply(update) {
                    // Full: the periodic resync catches up.
                    let _ = self.refetch.try_send(app);
                }
                if full {
                    self.synced = true;
                    self.status.full_reads.fetch_add(1, Ordering::SeqCst);
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap();
                    self.status
                        .last_sync_unix_ms
                        .store(now.as_millis() as u64, Ordering::Relaxed);
                    self.metrics.last_sync_timestamp.set(now.as_secs_f64());
                }
                true
            }
        }
    }

    async fn swap(&mut self) {
        self.resolve_agents().await;
        self.refresh_overrides();
        let started = Instant::now();
        let changed = self.changed.replace(BTreeSet::new());
        let (cluster, config) = (&self.cluster, &self.config);
        let mut table = compile_changed(&mut self.compiled, cluster, config, changed.as_ref());
        if self.misheld(&table) {
            let (cluster, config) = (&self.cluster, &self.config);
            table = compile_changed(&mut self.compiled, cluster, config, changed.as_ref());
        }
        let compile_time = started.elapsed();
        if self.compiled.distrusted > self.distrusted {
            tracing::warn!(
                "a compile's list of changed apps was incomplete: every app was compared instead"
            );
            self.metrics
                .compile_audit_failures
                .inc_by(self.compiled.distrusted - self.distrusted);
            self.distrusted = self.compiled.distrusted;
        }
        // A patched table is the last one but for these services and routes: the backend
        // states, the limits and what changed are looked at there alone.
        let patched = self.compiled.patched.take();
        let registry = &mut self.registry;
        let attached = patched.as_ref().and_then(|p| {
            let states = registry.attach_patched(&table, &p.services)?;
            Some((states, registry.attach_limits_patched(&table, &p.services)))
        });
        let (states, limits) =
            attached.unwrap_or_else(|| (registry.attach(&table), registry.attach_limits(&table)));
        let previous = self.store.load_full();
        let generation = previous.generation + 1;
        let table = Arc::new(table);
        let snapshot = Snapshot {
            generation,
            table: table.clone(),
            dns: previous.dns.clone(),
            states,
            limits,
            created: SystemTime::now(),
        };
        // Live from here: what follows records the swap and feeds what reads the table.
        self.store.publish(snapshot);
        // A patched table's problems are the last table's, all reported.
        if patched.is_none() {
            self.report_problems(&table);
        }
        *self.status.draining.lock().unwrap() = self.registry.draining_states();
        let changes = changes::of(&previous.table, &table, patched.as_ref());
        self.backends = changes::backends(self.backends, &previous.table, &table, patched.as_ref());
        let changes::Changes {
            added,
            removed,
            routes: routes_changed,
            problems_changed,
        } = changes;
        let services = table.services.len();
        let backends = self.backends;
        drop(table);
        if self.synced
            && let Some(on_swap) = &self.on_swap
        {
            on_swap(self.cluster.clone());
        }
        drop(previous);
        self.zone.dirty = self.zone.config.is_some();
        self.build_zone();
        self.update_readiness();
        // A patched table listens where the last did (its apps kept their places): the
        // listeners are reconciled only to try again a port that failed to bind.
        if patched.is_none() || !self.listeners.all_open() {
            self.listeners.reconcile(&self.store.load().table);
        }
        self.metrics.table_generation.set(generation as i64);
        self.metrics.compile_seconds.set(compile_time.as_secs_f64());
        self.metrics.services.set(services as i64);
        self.metrics.backends.set(backends as i64);
        // The health checker's targets: a pointer copy (the checker itself looks at the
        // services that changed, `health_check::update`), sent here so that probes follow the
        // table however busy the CPU is.
        after_swap::send_health_targets(&self.health_targets, &self.store.load());
        // What walks every service or route of the table is made from the live table on the
        // idle-priority thread, so that neither the next event nor a reader woken by this swap
        // waits for it: the route weight metrics and the table hash (at 50,000 apps the hash
        // takes longer than the rest of the swap).
        self.after.follow(&self.store);
        for reply in self.replies.drain(..) {
            let _ = reply.send(Ok(()));
        }
        {
            use changes::KEPT;
            let unix_ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let mut swaps = self.status.swaps.lock().unwrap();
            if swaps.len() == SWAP_HISTORY {
                swaps.pop_front();
            }
            swaps.push_back(SwapRecord {
                generation,
                unix_ms,
                compile_us: compile_time.as_micros() as u64,
                added: added.first.clone(),
                removed: removed.first.clone(),
                unchanged: added.is_empty()
                    && removed.is_empty()
                    && routes_changed.is_empty()
                    && !problems_changed,
                routes: routes_changed.into_iter().take(KEPT).collect(),
                problems_changed,
            });
        }
        if !added.is_empty() || !removed.is_empty() || generation == 1 {
            tracing::info!(
                generation,
                services,
                backends,
                draining = self.registry.draining(),
                compile_us = compile_time.as_micros() as u64,
                added = %summary(&added),
                removed = %summary(&removed),
                "routing table swapped"
            );
        } else {
            tracing::debug!(generation, "routing table swapped (no backend change)");
        }
    }

    fn report_problems(&mut self, table: &RoutingTable) {
        let current: HashSet<Problem> = table.problems.iter().cloned().collect();
        for problem in table.problems.iter() {
            if self.problems_seen.contains(problem) {
                continue;
            }
            match problem.severity {
                crate::routing::Severity::Skipped => {
                    tracing::warn!(app_id = %problem.app_id, "skipped: {problem}");
                    self.metrics.reject("compile");
                }
                crate::routing::Severity::Ignored => {
                    tracing::info!(app_id = %problem.app_id, "ignored: {problem}");
                    self.metrics.reject("ignored");
                }
                crate::routing::Severity::Renamed => {
                    tracing::info!(app_id = %problem.app_id, "renamed: {problem}");
                }
            }
        }
        self.problems_seen = current;
    }
}

#[path = "reconciler/after_swap.rs"]
mod after_swap;

#[path = "reconciler/changes.rs"]
mod changes;

#[path = "reconciler/agents.rs"]
mod agents;

#[path = "reconciler/status.rs"]
mod status;
pub use status::{SWAP_HISTORY, SourceError, Status, SwapRecord};

#[path = "reconciler/zone_builds.rs"]
mod zone_builds;
use zone_builds::ZoneBuilds;

#[cfg(test)]
#[path = "reconciler/tests.rs"]
mod tests;
