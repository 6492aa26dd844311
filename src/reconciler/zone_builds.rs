//! The reconciler's DNS zone builds: one at a time on a blocking thread, another when the
//! cluster or the proxy's health verdicts changed meanwhile, each published when done.

use super::*;

/// The DNS zone is built beside the routing table, on a blocking thread: at 10,000 apps it
/// takes ten times longer than `compile`, and routing must not wait for it. One build runs at a
/// time; changes made meanwhile start another when it ends.
///
/// Healthy-only DNS: Marathon's health results and readiness are in the cluster, so a swap
/// carries them into the next zone. The proxy's own verdicts (active probes, outlier ejection)
/// live on backend state and change without a swap, so they reach the zone this way: whoever
/// flips one (`health_check`, or the data plane on an ejection) wakes the registry's `Notify`
/// — one atomic store, nothing on the hot path beyond it — and the reconciler reads the
/// verdicts of healthy-only apps' backends from the live snapshot into plain data
/// ([`Verdicts`]; the zone never imports `backends`). When they differ from what the last
/// build used, the zone is rebuilt. The one-build-at-a-time rule above is the debounce: a
/// burst of flips during a build becomes one more build. An ejection ends by time, not by an
/// event, so the reconciler also wakes when the soonest one ends. Patching the zone in place
/// was not chosen: rebuilding keeps one code path that decides what a name answers, and
/// verdict flips are rare next to cluster changes, which rebuild the zone anyway.
pub(super) struct ZoneBuilds {
    pub(super) config: Option<ZoneConfig>,
    pub(super) running: bool,
    /// The cluster changed since the running (or last) build started.
    pub(super) dirty: bool,
    /// At least one zone has been published since the first full sync.
    pub(super) published: bool,
    pub(super) done_tx: mpsc::Sender<(Arc<Zone>, bool)>,
    pub(super) done_rx: mpsc::Receiver<(Arc<Zone>, bool)>,
    /// What the next build copies from the last zone (see `zone::Incremental`): at 10,000
    /// apps a one-app change rebuilds one app's names instead of all of them. Taken by the
    /// one build running; replaced (never waited on) when DNS is turned off.
    pub(super) kept: Arc<std::sync::Mutex<crate::zone::Incremental>>,
    /// The verdicts the running (or last) build used.
    pub(super) verdicts: Verdicts,
    /// When the soonest outlier ejection of a healthy-only app's backend ends.
    pub(super) recheck: Option<tokio::time::Instant>,
    /// The route splits of the last table built for, to look at the routes a swap changed.
    pub(super) splits: crate::zone::SplitsMemo,
}

impl Reconciler {
    pub(super) fn build_zone(&mut self) {
        let Some(config) = self.zone.config.clone() else {
            return;
        };
        // Before the first full sync there is no cluster to name: a zone built now would be
        // empty and answer NXDOMAIN for every served name (a reload or a health flip could
        // start one). The zone stays owed (`dirty`) and is built once synced; until then the
        // DNS server answers served names SERVFAIL.
        if self.zone.running || !self.zone.dirty || !self.synced {
            return;
        }
        self.zone.running = true;
        self.zone.dirty = false;
        let (verdicts, recheck) = self.verdicts();
        self.zone.recheck = recheck;
        self.zone.verdicts = verdicts.clone();
        let (cluster, done, synced) =
            (self.cluster.clone(), self.zone.done_tx.clone(), self.synced);
        let kept = self.zone.kept.clone();
        // The weights as the table routes them, overrides included: a swap rebuilds the zone.
        let splits = self.zone.splits.splits(&self.store.load().table);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            // One build at a time (`running`): the lock is never contended.
            let zone = match kept.lock() {
                Ok(mut kept) => kept.build(&cluster, &config, &verdicts, &splits),
                Err(_) => Arc::new(crate::zone::build_from(
                    &cluster, &config, &verdicts, &splits,
                )),
            };
            tracing::debug!(
                names = zone.names.len(),
                build_us = started.elapsed().as_micros() as u64,
                "dns zone built"
            );
            let _ = done.blocking_send((zone, synced));
        });
    }

    /// A backend's verdict flipped, or an ejection ended: rebuilds the zone when the verdicts on
    /// healthy-only apps differ from those the last build used.
    pub(super) fn verdicts_changed(&mut self) {
        if self.zone.config.is_none() {
            return;
        }
        let (verdicts, recheck) = self.verdicts();
        self.zone.recheck = recheck;
        if verdicts != self.zone.verdicts {
            self.zone.dirty = true;
            self.build_zone();
        }
    }

    /// The proxy's verdicts on the backends of healthy-only apps (down by active probes,
    /// ejected as outliers) as plain data for the zone, and when the soonest ejection ends.
    pub(super) fn verdicts(&self) -> (Verdicts, Option<tokio::time::Instant>) {
        let mut verdicts = Verdicts::default();
        let Some(config) = &self.zone.config else {
            return (verdicts, None);
        };
        let snapshot = self.store.load();
        let mut soonest: Option<Duration> = None;
        for (service, states) in snapshot.table.services.iter().zip(snapshot.states.iter()) {
            // VIP and UDP services are keyed otherwise and match no app: they carry no probe.
            let Some(app) = self.cluster.apps.get(&service.key.app_id) else {
                continue;
            };
            if !crate::zone::healthy_only(app, config) {
                continue;
            }
            for (backend, state) in service.backends.iter().zip(states.iter()) {
                if let Some(left) = state.outlier.ejected_for() {
                    soonest = Some(soonest.map_or(left, |s| s.min(left)));
                }
                if state.is_unavailable() {
                    verdicts.unavailable.insert(backend.task_id.clone());
                }
            }
        }
        // Ejections end on the coarse clock, which lags this one.
        let recheck = soonest.map(|d| tokio::time::Instant::now() + d + crate::clock::COARSE_LAG);
        (verdicts, recheck)
    }

    /// Publishes a new zone with the live table, then starts the next build if one is owed.
    pub(super) fn publish_zone(&mut self, zone: Arc<Zone>, synced: bool) {
        self.zone.running = false;
        let current = self.store.load_full();
        let before = current.dns.as_ref().map(|z| &z.problems[..]).unwrap_or(&[]);
        for problem in zone.problems.iter().filter(|p| !before.contains(p)) {
            tracing::info!(app_id = %problem.app_id, "renamed: {problem}");
        }
        let failed_before = current.dns.as_ref().map(|z| &z.fail_static[..]);
        for app_id in &zone.fail_static {
            if !failed_before.unwrap_or(&[]).contains(app_id) {
                tracing::warn!(%app_id, "dns: no healthy task; answering with every running task");
                self.metrics.dns_fail_static_total.inc();
            }
        }
        self.metrics
            .dns_fail_static
            .set(zone.fail_static.len() as i64);
        self.store.publish(Snapshot {
            generation: current.generation,
            table: current.table.clone(),
            dns: Some(zone),
            states: current.states.clone(),
            limits: current.limits.clone(),
            created: current.created,
        });
        self.zone.published |= synced;
        self.update_readiness();
        self.build_zone();
    }
}
