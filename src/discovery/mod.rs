//! Sources of cluster state. Each runs as its own task and sends [`SourceEvent`]s to the
//! reconciler; none of them touches the routing table.

pub mod auth;
pub mod file;
pub mod marathon;
pub mod mesos;

use std::collections::HashSet;

use crate::cluster::ClusterUpdate;
use crate::metrics::Metrics;

#[derive(Debug)]
pub enum SourceEvent {
    Update(ClusterUpdate),
    /// The source is (or is no longer) connected to its upstream.
    Connected(bool),
    /// The source's last attempt failed: `source` names it (`file PATH`, `marathon URL`),
    /// `error` says why. Shown as a problem until the source next succeeds (`Connected(true)`).
    Failed {
        source: String,
        error: String,
    },
    /// The Mesos source's state (connection, leader, skipped records), each time it changes.
    Mesos(mesos::Report),
}

/// Every source's metric families with a zero for each kind it can count, so that
/// `/metrics` lists them from the start (a rate over a series that appears only at its
/// first event misses that event). The file source counts no events but shares the families.
pub fn zero_metrics(metrics: &Metrics) {
    for kind in marathon::api::SUBSCRIBED_EVENTS {
        let _ = metrics.events.get_or_create(&crate::metrics::KindLabels {
            kind: (*kind).to_string(),
        });
    }
}

/// Reports each rejected input once (log line and metric), however often a source re-reads it.
#[derive(Default)]
pub struct Rejections {
    seen: HashSet<(String, String)>,
}

impl Rejections {
    /// Reports the rejections of one full read; forgets those that are gone, so a problem that
    /// comes back is reported again.
    pub fn report_all(&mut self, rejected: &[(String, String)], kind: &str, metrics: &Metrics) {
        let current: HashSet<(String, String)> = rejected.iter().cloned().collect();
        for (id, reason) in rejected {
            if !self.seen.contains(&(id.clone(), reason.clone())) {
                tracing::warn!(app_id = %id, "rejected {kind}: {reason}");
                metrics.reject(kind);
            }
        }
        self.seen = current;
    }

    /// Reports one rejection (an event or a single app) if it is new.
    pub fn report(&mut self, id: &str, reason: &str, kind: &str, metrics: &Metrics) {
        if self.seen.insert((id.to_string(), reason.to_string())) {
            tracing::warn!(app_id = %id, "rejected {kind}: {reason}");
            metrics.reject(kind);
        }
    }
}
