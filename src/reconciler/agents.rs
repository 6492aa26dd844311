//! Agents named by host name rather than address: resolved once each, off `compile`, for the
//! apps changed since the last swap (`Reconciler::resolve_agents`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::Reconciler;
use crate::cluster::AppId;

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

impl Reconciler {
    /// An app whose tasks' agent names the next swap looks at.
    pub(super) fn note_hosts(&mut self, app: &AppId) {
        if let Some(apps) = &mut self.unresolved {
            apps.insert(app.clone());
        }
    }

    /// Resolves agent host names that are not IP addresses, once each, outside `compile`: those
    /// of the apps changed since the last swap (every app's after a snapshot, and those that
    /// failed to resolve are looked at again), not every task's on every event.
    pub(super) async fn resolve_agents(&mut self) {
        let apps = self.unresolved.replace(BTreeSet::new());
        let looked: Vec<&Arc<crate::cluster::App>> = match &apps {
            None => self.cluster.apps.values().collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.cluster.apps.get(id))
                .collect(),
        };
        let pending: Vec<AppId> = looked
            .into_iter()
            .filter(|a| unresolved_host(a, &self.cluster.agents))
            .map(|a| a.id.clone())
            .collect();
        let wanted: BTreeSet<String> = pending
            .iter()
            .filter_map(|id| self.cluster.apps.get(id))
            .flat_map(|a| a.tasks.values())
            .map(|t| &t.host)
            .chain(self.cluster.mesos.hosts())
            .filter(|h| h.ip().is_none() && !h.is_empty())
            .filter(|h| !self.cluster.agents.contains_key(h.as_str()))
            .map(|h| h.to_string())
            .collect();
        for host in wanted {
            let lookup = tokio::net::lookup_host((host.clone(), 0));
            match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(mut addrs)) => {
                    if let Some(addr) = addrs.next() {
                        Arc::make_mut(&mut self.cluster)
                            .agents
                            .insert(host, addr.ip());
                    }
                }
                Ok(Err(e)) => tracing::debug!(host, "cannot resolve agent: {e}"),
                Err(_) => tracing::debug!(host, "resolving agent timed out"),
            }
        }
        // Apps with a name still unresolved: tried again on the next swap, as before.
        let still: Vec<AppId> = pending
            .into_iter()
            .filter(|id| {
                let app = self.cluster.apps.get(id);
                app.is_some_and(|a| unresolved_host(a, &self.cluster.agents))
            })
            .collect();
        for id in still {
            self.note_hosts(&id);
        }
    }
}

/// Whether a task of `app` runs on an agent named (not an address) and not resolved yet.
fn unresolved_host(
    app: &crate::cluster::App,
    agents: &std::collections::HashMap<String, std::net::IpAddr>,
) -> bool {
    app.tasks
        .values()
        .map(|t| &t.host)
        .any(|h| h.ip().is_none() && !h.is_empty() && !agents.contains_key(h.as_str()))
}
