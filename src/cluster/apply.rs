//! Updates applied to the model ([`ClusterUpdate`]): snapshots, apps and tasks from Marathon,
//! the Mesos source's updates, and what a source must fetch again when an update cannot be
//! applied exactly ([`Applied`]).

use super::*;

/// One change to the model, as a source reports it.
#[derive(Debug, Clone)]
pub enum ClusterUpdate {
    /// A full snapshot: replaces every app.
    Snapshot(Vec<App>),
    /// An app (re)defined, with its tasks.
    AppUpserted(App),
    /// An app removed, and when (milliseconds since the epoch; 0 when not known).
    AppRemoved { id: AppId, at_ms: u64 },
    /// A task's status changed (from `status_update_event`).
    TaskStatus { app_id: AppId, task: Task },
    /// A task's health changed (from `health_status_changed_event`).
    TaskHealth {
        app_id: AppId,
        task_id: TaskId,
        alive: bool,
    },
    /// An instance's health changed (from `instance_health_changed_event`).
    InstanceHealth {
        app_id: AppId,
        instance_id: String,
        healthy: Option<bool>,
    },
    /// From the Mesos source.
    Mesos(mesos::MesosUpdate),
}

/// What applying an update needs from the source: usually nothing, sometimes a re-fetch.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The model cannot apply this exactly (an unknown app, or one health check of several
    /// turning alive): the source should re-fetch the app.
    Refetch(AppId),
}

impl Cluster {
    pub fn apply(&mut self, update: ClusterUpdate) -> Applied {
        match update {
            ClusterUpdate::Snapshot(apps) => {
                let mut old = std::mem::take(&mut self.apps);
                for mut app in apps {
                    self.newest_ms = self.newest_ms.max(newest_of(&app));
                    let app = match old.remove(&app.id) {
                        Some(previous) => {
                            keep_last_health(&mut app, &previous);
                            // A resync that repeats an app keeps the app's pointer.
                            if *previous == app {
                                previous
                            } else {
                                Arc::new(app)
                            }
                        }
                        None => Arc::new(app),
                    };
                    self.apps.insert(app.id.clone(), app);
                }
            }
            ClusterUpdate::AppUpserted(mut app) => {
                self.newest_ms = self.newest_ms.max(newest_of(&app));
                if let Some(previous) = self.apps.get(&app.id) {
                    keep_last_health(&mut app, previous);
                    if **previous == app {
                        return Applied::Done;
                    }
                }
                self.apps.insert(app.id.clone(), Arc::new(app));
            }
            ClusterUpdate::AppRemoved { id, at_ms } => {
                self.newest_ms = self.newest_ms.max(at_ms);
                self.apps.remove(&id);
            }
            ClusterUpdate::TaskStatus { app_id, mut task } => {
                self.newest_ms = self.newest_ms.max(task.changed_ms);
                let Some(app) = self.apps.get_mut(&app_id).map(Arc::make_mut) else {
                    return Applied::Refetch(app_id);
                };
                if let Some(seen) = self.mesos.tasks.get(&task.id)
                    && mesos::mesos_fresher(&task, &seen.state, seen.changed_ms)
                {
                    task.state = seen.state.clone();
                    task.changed_ms = seen.changed_ms;
                }
                if task.state.is_live() {
                    if let Some(previous) = app.tasks.get(&task.id) {
                        task.healthy = task.healthy.or(previous.healthy);
                        task.ready = task.ready.or(previous.ready);
                    }
                    app.tasks.insert(task);
                } else {
                    app.tasks.remove(&task.id);
                }
            }
            ClusterUpdate::TaskHealth {
                app_id,
                task_id,
                alive,
            } => {
                let Some(app) = self.apps.get_mut(&app_id).map(Arc::make_mut) else {
                    return Applied::Refetch(app_id);
                };
                if alive && app.health_checks > 1 {
                    // The event does not say which check passed; only Marathon knows if all did.
                    return Applied::Refetch(app_id);
                }
                if let Some(task) = app.tasks.get_mut(&task_id) {
                    task.healthy = Some(alive);
                }
            }
            ClusterUpdate::InstanceHealth {
                app_id,
                instance_id,
                healthy,
            } => {
                let Some(app) = self.apps.get_mut(&app_id).map(Arc::make_mut) else {
                    return Applied::Refetch(app_id);
                };
                for task in app.tasks.values_mut() {
                    if instance_of(&task.id) == instance_id {
                        task.healthy = healthy;
                    }
                }
            }
            ClusterUpdate::Mesos(update) => self.apply_mesos(update),
        }
        Applied::Done
    }

    fn apply_mesos(&mut self, update: mesos::MesosUpdate) {
        use mesos::MesosUpdate as U;
        let m = &mut self.mesos;
        match update {
            U::Snapshot {
                leader,
                masters,
                frameworks,
                agents,
                tasks,
            } => {
                m.leader = Some(leader);
                m.masters = masters;
                m.frameworks = frameworks.into_iter().map(|f| (f.id.clone(), f)).collect();
                m.agents = agents.into_iter().map(|a| (a.id.clone(), a)).collect();
                m.tasks = tasks
                    .into_iter()
                    .filter(|t| t.state.is_live())
                    .map(|t| (t.id.clone(), t))
                    .collect();
                let newest = m.tasks.values().map(|t| t.changed_ms).max().unwrap_or(0);
                self.newest_ms = self.newest_ms.max(newest);
                // Marathon's tasks that Mesos knows fresher (one pass over Marathon's tasks); an
                // app is copied only when one of its tasks changes.
                for app in self.apps.values_mut() {
                    let stale = app.tasks.values().any(|task| {
                        m.tasks.get(&task.id).is_some_and(|seen| {
                            mesos::mesos_fresher(task, &seen.state, seen.changed_ms)
                                && (task.state != seen.state || task.changed_ms != seen.changed_ms)
                        })
                    });
                    if !stale {
                        continue;
                    }
                    Arc::make_mut(app).tasks.retain(|task| {
                        let Some(seen) = m.tasks.get(&task.id) else {
                            return true;
                        };
                        if mesos::mesos_fresher(task, &seen.state, seen.changed_ms) {
                            task.state = seen.state.clone();
                            task.changed_ms = seen.changed_ms;
                        }
                        true
                    });
                }
            }
            U::TaskAdded(task) => {
                self.newest_ms = self.newest_ms.max(task.changed_ms);
                let (id, state, ms) = (task.id.clone(), task.state.clone(), task.changed_ms);
                if task.state.is_live() {
                    m.tasks.insert(task.id.clone(), task);
                }
                self.mesos_task_state(&id, &state, ms);
            }
            U::TaskUpdated {
                id,
                state,
                changed_ms,
                container_ips,
            } => {
                self.newest_ms = self.newest_ms.max(changed_ms);
                if state.is_live() {
                    if let Some(task) = m.tasks.get_mut(&id) {
                        task.state = state.clone();
                        task.changed_ms = task.changed_ms.max(changed_ms);
                        if !container_ips.is_empty() {
                            task.container_ips = container_ips;
                        }
                    }
                } else {
                    m.tasks.remove(&id);
                }
                self.mesos_task_state(&id, &state, changed_ms);
            }
            U::AgentAdded(agent) => {
                m.agents.insert(agent.id.clone(), agent);
            }
            U::AgentRemoved(id) => {
                m.agents.remove(&id);
            }
            U::Framework(framework) => {
                m.frameworks.insert(framework.id.clone(), framework);
            }
            U::FrameworkRemoved(id) => {
                m.frameworks.remove(&id);
                m.tasks.retain(|_, t| t.framework_id != id);
            }
        }
    }

    /// A task state from Mesos for a task a Marathon app may hold: applied to it when it is the
    /// fresher ([`mesos::fresher`]); a terminal one removes it, as Marathon's own would.
    fn mesos_task_state(&mut self, id: &TaskId, state: &TaskState, changed_ms: u64) {
        for app in self.apps.values_mut() {
            let Some(task) = app.tasks.get(id) else {
                continue;
            };
            if mesos::mesos_fresher(task, state, changed_ms) {
                // Copied (when shared) only now that it changes.
                let app = Arc::make_mut(app);
                if state.is_live() {
                    if let Some(task) = app.tasks.get_mut(id) {
                        task.state = state.clone();
                        task.changed_ms = changed_ms;
                    }
                } else {
                    app.tasks.remove(id);
                }
            }
            return;
        }
    }
}

/// The newest timestamp an app carries: its version, its tasks' changes.
fn newest_of(app: &App) -> u64 {
    app.tasks
        .values()
        .map(|t| t.changed_ms)
        .fold(app.version_ms, u64::max)
}

/// Marathon omits health results after a leader change: keep the last known one.
fn keep_last_health(app: &mut App, previous: &App) {
    for task in app.tasks.values_mut() {
        if task.healthy.is_none()
            && let Some(old) = previous.tasks.get(&task.id)
        {
            task.healthy = old.healthy;
        }
    }
}
