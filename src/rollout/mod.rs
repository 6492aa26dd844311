//! Canary rollouts with automatic rollback (docs/rollouts.md). A route given a plan
//! (`PUT /v1/routes/{route}/rollout`, or the `SWITCHYARD_{n}_ROLLOUT` label on the canary app)
//! moves the canary's share step by step; every `rollout.interval` the controller measures
//! what the canary and the baseline answered since the step began (their backends' response
//! counters and fine latency buckets, `backends::latency`) and takes a verdict
//! ([`gate::evaluate`], pure): a pass after the hold moves to the next step, a failed gate sets
//! the canary's weight to 0 in that same evaluation.
//!
//! Weights are written through the reconciler's `SetWeights` command — the path the weights
//! API takes — as a runtime override; the controller re-asserts them when the live table
//! differs (a new deployment clears overrides), so a failed or aborted canary stays at 0.
//!
//! Where state is kept: in memory, and with `rollout.state_dir` set, in
//! `{state_dir}/rollouts.json`, written atomically (a temporary file renamed over it) on every
//! change of state or step. A restart resumes each rollout at its recorded step, with the
//! step's recorded start (its hold is not started again, its measurements are: counters live
//! in the process). Each instance measures only its own traffic; why that converges across an
//! edge group is in docs/rollouts.md.

pub mod gate;
mod labelled;
mod measure;
mod state;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::cluster::AppId;
use crate::metrics::{Metrics, RolloutLabels, RolloutStateLabels};
use crate::reconciler::Command;
use crate::routing::RoutingTable;
use crate::routing::rollout::Plan;
use crate::routing::routes::Overrides;
use crate::snapshot::{Snapshot, Store};
use gate::{Outcome, Verdict};
use measure::Side;

/// `[rollout]` in the configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How often running rollouts are measured and judged.
    pub interval: Duration,
    /// Where `rollouts.json` is kept; `None`: rollouts live in memory only.
    pub state_dir: Option<PathBuf>,
    /// This process takes over from a running one (`--upgrade`), which still holds the state
    /// directory's lock until it exits: the lock is taken then, instead of refusing to start.
    pub taking_over: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: Duration::from_secs(1),
            state_dir: None,
            taking_over: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Succeeded,
    Failed,
    Aborted,
    /// A plan label that cannot be honoured (no canary or baseline to be told): nothing moved.
    Refused,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Aborted,
        State::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Aborted => "aborted",
            State::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Api,
    Label,
}

/// A verdict and when it was taken.
#[derive(Debug, Clone, Serialize)]
pub struct LastVerdict {
    pub at_unix_ms: u64,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A route's rollout, as `/v1/routes` and `GET /v1/routes/{route}/rollout` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub route: String,
    pub state: State,
    pub origin: Origin,
    pub canary: Option<AppId>,
    pub baseline: Option<AppId>,
    /// The step it is at, counted from 1 (`plan.steps[step - 1]` is its share).
    pub step: usize,
    pub steps: usize,
    /// The canary's share now, in percent (0 once failed or aborted).
    pub share: u32,
    pub plan: Arc<Plan>,
    pub started_unix_ms: u64,
    pub step_started_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    pub last_verdict: Option<LastVerdict>,
    /// Why it failed, was aborted or refused; while running, what it waits for beyond the gates.
    pub reason: Option<String>,
    /// An operator set the route's weights after it ended: the rollout no longer holds them
    /// (until then a finished rollout keeps its final weights, a failed canary at 0).
    pub released: bool,
    /// A label's plan: which deployment and plan it came from, so it runs once.
    #[serde(skip)]
    label_key: Option<String>,
    /// Each side's counters per backend when the step's measurement began.
    #[serde(skip)]
    window: Option<(Side, Side)>,
    /// When the step's measurement began (the step's start, or the restart that began it
    /// again): the plan's `max_wait` counts from here.
    #[serde(skip)]
    measured_since_unix_ms: u64,
}

/// Something a rollout did: `GET /v1/events`, and a log line.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub unix_ms: u64,
    pub route: String,
    /// `started`, `step`, `succeeded`, `failed`, `aborted`, `refused`, `released`.
    pub kind: &'static str,
    pub message: String,
}

const EVENTS_KEPT: usize = 200;

/// Why a rollout could not be started.
#[derive(Debug, PartialEq)]
pub enum StartError {
    NoRoute,
    Running,
    Unresolved(String),
}

/// The rollouts of every route: shared by the admin API and the controller task.
pub struct Rollouts {
    book: Mutex<BTreeMap<String, Rollout>>,
    events: Mutex<VecDeque<Event>>,
    wake: Notify,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// The live table's routes of several apps: their metrics series exist (at 0) before any
    /// rollout, as `route_weight`'s do.
    routes: Mutex<Vec<String>>,
    /// The weights the rollouts hold, by route, as the reconciler compiles them into every
    /// table (`Reconciler::held`): filled from `rollouts.json` before the first table, and
    /// updated on every change, before the `SetWeights` that makes a table of it.
    held: Arc<Mutex<Overrides>>,
    /// The state directory's lock (`rollouts.lock`), held while this process runs; `None`
    /// while a process this one took over from still holds it.
    lock: Mutex<Option<std::fs::File>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The route's apps as the choice of canary and baseline sees them.
fn candidates<'a>(
    table: &'a RoutingTable,
    route: &'a crate::routing::routes::Route,
) -> Vec<gate::Candidate<'a>> {
    route
        .members
        .iter()
        .map(|m| {
            let s = &table.services[m.service];
            gate::Candidate {
                app_id: &m.app_id,
                started_at: s.deployment.started_at.as_deref(),
                labelled: s.rollout.is_some(),
            }
        })
        .collect()
}

impl Rollouts {
    /// With `state_dir` set, the rollouts recorded there (a file that cannot be read is
    /// logged and left in place: nothing is resumed from it, and it is not overwritten until
    /// a rollout changes). Refused when another process uses the same `state_dir` (its lock
    /// is held), unless this one takes over from it.
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Result<Rollouts, String> {
        let lock = match &settings.state_dir {
            None => None,
            Some(dir) => match state::lock(dir)? {
                state::Lock::Held(file) => Some(file),
                state::Lock::Busy(why) if !settings.taking_over => return Err(why),
                state::Lock::Busy(_) => {
                    tracing::info!(
                        dir = %dir.display(),
                        "rollout state: the process taken over from holds the lock until it \
                         exits; taken then"
                    );
                    None
                }
            },
        };
        let book = settings
            .state_dir
            .as_ref()
            .map(|dir| state::load(&dir.join("rollouts.json")))
            .unwrap_or_default();
        let r = Rollouts {
            book: Mutex::new(book),
            events: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            settings,
            metrics,
            routes: Mutex::default(),
            held: Arc::default(),
            lock: Mutex::new(lock),
        };
        let book = r
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.publish_metrics(&book);
        r.publish_held(&book);
        drop(book);
        Ok(r)
    }

    /// Takes the state directory's lock once the process taken over from has let it go.
    fn relock(&self) {
        let Some(dir) = &self.settings.state_dir else {
            return;
        };
        let mut lock = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if lock.is_none()
            && let Ok(state::Lock::Held(file)) = state::lock(dir)
        {
            tracing::info!(dir = %dir.display(), "rollout state: lock taken");
            *lock = Some(file);
        }
    }

    /// The weights the rollouts hold, shared with the reconciler (`Reconciler::held`).
    pub fn held(&self) -> Arc<Mutex<Overrides>> {
        self.held.clone()
    }

    /// What the rollouts of `book` hold: a rollout's weights until it is released (a refused
    /// label plan holds nothing).
    fn publish_held(&self, book: &BTreeMap<String, Rollout>) {
        let held = book
            .iter()
            .filter(|(_, r)| r.state != State::Refused && !r.released)
            .filter_map(|(route, r)| {
                let (canary, baseline) = (r.canary.as_ref()?, r.baseline.as_ref()?);
                Some((route.clone(), gate::weights(canary, baseline, r.share)))
            })
            .collect();
        *self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = held;
    }

    pub fn get(&self, route: &str) -> Option<Rollout> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
            .cloned()
    }

    pub fn all(&self) -> BTreeMap<String, Rollout> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn event(&self, route: &str, kind: &'static str, message: String) {
        match kind {
            "failed" | "refused" => tracing::warn!(route, "rollout {kind}: {message}"),
            _ => tracing::info!(route, "rollout {kind}: {message}"),
        }
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(Event {
            unix_ms: unix_ms(),
            route: route.to_string(),
            kind,
            message,
        });
    }

    /// Starts `plan` on `route` of the live table (`PUT /v1/routes/{route}/rollout`): refused
    /// while another runs there, or when its canary and baseline cannot be told.
    pub fn start(
        &self,
        route: &str,
        plan: Plan,
        table: &RoutingTable,
    ) -> Result<Rollout, StartError> {
        let found = table
            .routes
            .iter()
            .find(|r| r.name == route)
            .ok_or(StartError::NoRoute)?;
        let (canary, baseline) =
            gate::resolve(&plan, &candidates(table, found)).map_err(StartError::Unresolved)?;
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if book.get(route).is_some_and(|r| r.state == State::Running) {
            return Err(StartError::Running);
        }
        let r = self.begin(route, Arc::new(plan), Origin::Api, canary, baseline, None);
        book.insert(route.to_string(), r.clone());
        self.save(&book);
        self.publish_metrics(&book);
        self.publish_held(&book);
        drop(book);
        self.wake.notify_one();
        Ok(r)
    }

    fn begin(
        &self,
        route: &str,
        plan: Arc<Plan>,
        origin: Origin,
        canary: AppId,
        baseline: AppId,
        label_key: Option<String>,
    ) -> Rollout {
        let now = unix_ms();
        let share = plan.steps[0];
        let done = plan.steps.len() == 1;
        self.event(
            route,
            "started",
            format!(
                "canary {canary} against {baseline}, steps {:?} % holding {} ms each ({})",
                plan.steps,
                plan.hold.as_millis(),
                if origin == Origin::Api {
                    "admin API"
                } else {
                    "label"
                }
            ),
        );
        if done {
            self.event(route, "succeeded", format!("{canary} takes 100 %"));
        }
        Rollout {
            route: route.to_string(),
            state: if done {
                State::Succeeded
            } else {
                State::Running
            },
            origin,
            canary: Some(canary),
            baseline: Some(baseline),
            step: 1,
            steps: plan.steps.len(),
            share,
            plan,
            started_unix_ms: now,
            step_started_unix_ms: now,
            finished_unix_ms: done.then_some(now),
            last_verdict: None,
            reason: None,
            released: false,
            label_key,
            window: None,
            measured_since_unix_ms: now,
        }
    }

    /// Sets the canary's weight to 0 and marks the rollout aborted (a failed one stays failed,
    /// its canary at 0 already). `None`: the route has no rollout.
    pub fn abort(&self, route: &str) -> Option<Rollout> {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = book.get_mut(route)?;
        if matches!(r.state, State::Running | State::Succeeded) {
            r.state = State::Aborted;
            r.share = 0;
            r.finished_unix_ms = Some(unix_ms());
            r.reason = Some("aborted through the admin API".into());
            let canary = r.canary.clone().map(|c| c.to_string()).unwrap_or_default();
            let out = r.clone();
            self.event(route, "aborted", format!("{canary} back to 0 %"));
            self.save(&book);
            self.publish_metrics(&book);
            self.publish_held(&book);
            drop(book);
            self.wake.notify_one();
            return Some(out);
        }
        Some(r.clone())
    }

    /// An operator sets `route`'s weights: a finished rollout stops holding them (it is
    /// `released`, and says so); a running one refuses, so that two hands never fight over a
    /// route's weights — abort it first. A route without a rollout: nothing to do.
    pub fn release(&self, route: &str) -> Result<(), String> {
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(r) = book.get_mut(route) else {
            return Ok(());
        };
        match r.state {
            State::Running => Err(format!(
                "a rollout is running on {route}: abort it first \
                 (DELETE /v1/routes/{route}/rollout)"
            )),
            State::Refused => Ok(()),
            _ if r.released => Ok(()),
            _ => {
                r.released = true;
                self.event(route, "released", "the operator's weights apply".into());
                self.save(&book);
                self.publish_held(&book);
                Ok(())
            }
        }
    }

    /// Writes `rollouts.json` (refused label plans are not state: they are seen again).
    fn save(&self, book: &BTreeMap<String, Rollout>) {
        let Some(dir) = &self.settings.state_dir else {
            return;
        };
        state::save(&dir.join("rollouts.json"), book);
    }

    fn publish_metrics(&self, book: &BTreeMap<String, Rollout>) {
        self.metrics.rollout_step.clear();
        self.metrics.rollout_state.clear();
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let without = routes.iter().filter(|r| !book.contains_key(*r));
        let all = book
            .iter()
            .map(|(route, r)| (route, Some(r)))
            .chain(without.map(|route| (route, None)));
        for (route, r) in all {
            self.metrics
                .rollout_step
                .get_or_create(&RolloutLabels {
                    route: route.clone(),
                })
                .set(r.map_or(0, |r| r.step as i64));
            for s in State::ALL {
                self.metrics
                    .rollout_state
                    .get_or_create(&RolloutStateLabels {
                        route: route.clone(),
                        state: s.as_str(),
                    })
                    .set(i64::from(r.is_some_and(|r| r.state == s)));
            }
        }
    }

    /// The controller: judges running rollouts every `interval` (and at once when one starts
    /// or is aborted), starts label plans, and keeps the live weights as the rollouts want.
    pub async fn run(self: Arc<Self>, store: Arc<Store>, commands: mpsc::Sender<Command>) {
        // A new table is judged at once too: a plan label starts when its app arrives.
        let mut swaps = store.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = self.wake.notified() => {}
                changed = swaps.changed() => if changed.is_err() { return },
            }
            self.relock();
            let snapshot = store.load_full();
            let wanted = self.tick(&snapshot, unix_ms());
            for (route, weights) in wanted {
                let (reply, answer) = oneshot::channel();
                let command = Command::SetWeights {
                    route: route.clone(),
                    weights: Some(weights),
                    reply,
                };
                if commands.send(command).await.is_err() {
                    return;
                }
                match tokio::time::timeout(Duration::from_secs(10), answer).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => tracing::warn!(route, "rollout weights not set: {e}"),
                    _ => tracing::warn!(route, "rollout weights not set in time"),
                }
            }
        }
    }

    /// One evaluation over the live table at `now`: the weights to set, by route.
    pub fn tick(&self, snapshot: &Snapshot, now: u64) -> Vec<(String, BTreeMap<AppId, u32>)> {
        let table = &snapshot.table;
        *self
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = table
            .routes
            .iter()
            .filter(|r| r.members.len() > 1)
            .map(|r| r.name.clone())
            .collect();
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changed = self.labels(table, &mut book);
        let mut wanted = Vec::new();
        for (name, r) in book.iter_mut() {
            let (Some(canary), Some(baseline)) = (r.canary.clone(), r.baseline.clone()) else {
                continue;
            };
            let Some(route) = table.routes.iter().find(|x| x.name == *name) else {
                if r.state == State::Running {
                    r.reason = Some("waiting: the route is not in the table".into());
                }
                continue;
            };
            let service = |app: &AppId| {
                route
                    .members
                    .iter()
                    .find(|m| m.app_id == *app)
                    .map(|m| m.service)
            };
            let (Some(cs), Some(bs)) = (service(&canary), service(&baseline)) else {
                if r.state == State::Running {
                    r.reason = Some(format!(
                        "waiting: {canary} and {baseline} must both be apps of the route"
                    ));
                }
                continue;
            };
            if r.state == State::Running {
                r.reason = None;
                let verdict = measure::step(r, snapshot, (cs, bs), now);
                if let Some(verdict) = verdict {
                    changed |= self.judge(name, r, verdict, now);
                }
            }
            if r.state == State::Refused || r.released {
                continue;
            }
            let want = gate::weights(&canary, &baseline, r.share);
            let live = route.members.iter().all(|m| {
                m.weight_from == crate::routing::routes::WeightSource::Override
                    && m.weight == want.get(&m.app_id).copied().unwrap_or(0)
            });
            if !live {
                wanted.push((name.clone(), want));
            }
        }
        if changed {
            self.save(&book);
        }
        self.publish_metrics(&book);
        self.publish_held(&book);
        wanted
    }

    /// Acts on a running rollout's verdict; true when its state or step changed.
    fn judge(&self, name: &str, r: &mut Rollout, verdict: Verdict, now: u64) -> bool {
        let outcome = verdict.outcome;
        let why = verdict.why.clone();
        r.last_verdict = Some(LastVerdict {
            at_unix_ms: now,
            verdict,
        });
        let canary = r.canary.clone().map(|c| c.to_string()).unwrap_or_default();
        match outcome {
            Outcome::Wait => false,
            Outcome::Fail => {
                let share = r.share;
                r.state = State::Failed;
                r.share = 0;
                r.finished_unix_ms = Some(now);
                r.reason = Some(why.clone());
                self.event(
                    name,
                    "failed",
                    format!("step {} ({share} %): {why}; {canary} back to 0 %", r.step),
                );
                true
            }
            Outcome::Pass => {
                // The last step passed is the end (a record resumed there included).
                r.step = (r.step + 1).min(r.plan.steps.len());
                r.share = r.plan.steps.get(r.step - 1).copied().unwrap_or(100);
                r.step_started_unix_ms = now;
                r.window = None;
                if r.step == r.plan.steps.len() {
                    r.state = State::Succeeded;
                    r.finished_unix_ms = Some(now);
                    self.event(name, "succeeded", format!("{canary} takes 100 %"));
                } else {
                    self.event(
                        name,
                        "step",
                        format!("step {} of {}: {canary} at {} %", r.step, r.steps, r.share),
                    );
                }
                true
            }
        }
    }
}
