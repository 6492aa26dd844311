//! Whether the relay's model is its source's current one: what the relay has seen of its own
//! Marathon (`Source`, read from the reconciler's status), when it takes that for a loss, and
//! when a served model ends the loss again (`Relay::observe`). A relay that is behind turns
//! away new snapshots and streams; one behind for longer than `relay.max_disconnected` is
//! `stale` and serves nothing.

use std::sync::atomic::Ordering;

use super::Relay;

/// The relay's own source as the reconciler last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Connected to Marathon (its stream subscribed, its snapshot taken) now.
    pub connected: bool,
    /// Names the newest full read applied (the reconciler's last sync time, Unix ms): a model
    /// carrying another stamp than the one seen at a loss was read after it.
    pub synced: u64,
}

/// Reads [`Source`] (from the reconciler's status).
pub type Upstream = Box<dyn Fn() -> Source + Send + Sync>;

/// What the relay has seen of its source (`Relay::observe`).
#[derive(Default)]
pub(super) struct Following {
    /// Seen lost, and no model from a full read made after that served yet.
    lost: Option<Lost>,
}

struct Lost {
    since: std::time::Instant,
    /// The served model's stamp when the loss was seen: a model with another one holds a full
    /// read made since (a model swapped in meanwhile, from the same reads, does not).
    synced: u64,
}

impl Relay {
    /// Whether the relay's model is its source's current one, from what the source says now
    /// (on every tick, every publish, and every request that would start a follower on it).
    ///
    /// Every source says it is connected before it hands over the full read it took on that
    /// connection (`discovery::SourceEvent::Connected`), and the reconciler applies both in that
    /// order: a model is never served before the "connected" of the read it holds, so "not
    /// connected" while any model is served is a loss, with no grace to guess at.
    ///
    /// Seen lost, the relay is behind until it serves a model holding a full read made after
    /// the loss — not when the source reports connected again (it does so before its new
    /// snapshot is compiled), and not with a model swapped while still lost. Behind, it turns
    /// away new snapshots and streams: a follower failing over to it would otherwise go back to
    /// the table of the moment it lost Marathon. Behind for longer than
    /// `relay.max_disconnected`, it stops serving at all (`stale`) and closes its streams, so
    /// its own followers move to a relay that is current, or keep the table they have.
    pub(super) fn observe(&self, now: std::time::Instant) -> bool {
        let source = (self.upstream)();
        let mut following = self.following.lock().unwrap();
        // Before the first model nothing is served, and there is nothing to be behind with.
        let Some(served) = self.state.load().as_ref().map(|s| s.synced) else {
            return false;
        };
        match &following.lost {
            Some(lost) if lost.synced != served => {
                following.lost = None;
                if self.stale.swap(false, Ordering::Relaxed) {
                    tracing::info!("relay: Marathon is back, serving again");
                } else {
                    tracing::info!("relay: current again, serving snapshots and new streams");
                }
            }
            Some(_) => {}
            None if !source.connected => {
                following.lost = Some(Lost {
                    since: now,
                    synced: served,
                });
                tracing::warn!(
                    "relay: Marathon lost; answering 503 to new streams and snapshots until a \
                     model read after it is back is served (open streams go on)"
                );
            }
            None => {}
        }
        let current = following.lost.is_none();
        self.metrics.current.set(i64::from(current));
        let Some(lost) = &following.lost else {
            return current;
        };
        let stale = now.saturating_duration_since(lost.since) > self.settings.max_disconnected;
        if stale && !self.stale.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_disconnected = ?self.settings.max_disconnected,
                "relay: Marathon lost for longer than relay.max_disconnected; answering 503 and \
                 closing the event streams until it is back"
            );
            let mut subscribers = self.subscribers.lock().unwrap();
            for s in subscribers.drain(..) {
                s.cut.notify_one();
            }
            self.metrics.subscribers.set(0);
        }
        current
    }
}
