//! Whether the relay's model is its source's current one: what the relay has seen of its own
//! Marathon (`Source`, read from the reconciler's status), when it takes that for a loss, and
//! when a served model ends the loss again (`Relay::observe`). A relay that is behind turns
//! away new snapshots and streams; one behind for longer than `relay.max_disconnected` is
//! `stale` and serves nothing.

use std::sync::atomic::Ordering;

use super::Relay;

/// The relay's own source as the reconciler last saw it. Read in field order (see
/// [`Relay::observe`] for why the order matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Full reads (snapshots, resyncs) the reconciler has applied so far: the count a model
    /// swapped now holds.
    pub reads: u64,
    /// Connected to Marathon (its stream subscribed, its snapshot taken) now.
    pub connected: bool,
    /// `reads` when the reconciler last saw the source lost (0: never): a model holding more
    /// reads than this holds one made after that loss, however short the loss was.
    pub reads_at_loss: u64,
}

/// Reads [`Source`] (from the reconciler's status).
pub type Upstream = Box<dyn Fn() -> Source + Send + Sync>;

/// What the relay has seen of its source (`Relay::observe`).
#[derive(Default)]
pub(super) struct Following {
    /// The reads applied before a "not connected" the relay saw itself (a loss the reconciler
    /// reports only as `connected`, such as a Mesos-only source's): a model must hold more.
    seen_loss: u64,
    /// Since when the relay is behind (for `relay.max_disconnected`); `None`: current.
    behind_since: Option<std::time::Instant>,
}

impl Relay {
    /// Whether the relay's model is its source's current one, from what the source says now
    /// (on every tick, every publish, and every request that would start a follower on it).
    ///
    /// Every source says it is connected before it hands over the full read it took on that
    /// connection (`discovery::SourceEvent::Connected`), and the reconciler applies both in that
    /// order and counts the reads: current is connected, with a model holding a read made
    /// after the last loss — not when the source reports connected again (it does so before
    /// its new snapshot is compiled), and not with a model swapped while still lost. Counts,
    /// not samples: a loss too short for any tick to see still needs a read after it, and a
    /// model published between this read of the source and the load of the model is judged
    /// right (`reads` is read before `connected`, so a "not connected" seen is later than every
    /// read counted: no read counted here can be from after it).
    ///
    /// Behind, the relay turns away new snapshots and streams: a follower failing over to it
    /// would otherwise go back to the table of the moment it lost Marathon. Behind for longer
    /// than `relay.max_disconnected`, it stops serving at all (`stale`) and closes its
    /// streams, so its own followers move to a relay that is current, or keep the table they
    /// have.
    pub(super) fn observe(&self, now: std::time::Instant) -> bool {
        let source = (self.upstream)();
        let mut following = self.following.lock().unwrap();
        // Before the first model nothing is served, and there is nothing to be behind with.
        let Some(served) = self.state.load().as_ref().map(|s| s.reads) else {
            return false;
        };
        if !source.connected {
            following.seen_loss = following.seen_loss.max(source.reads);
        }
        let current = source.connected && served > source.reads_at_loss.max(following.seen_loss);
        match (current, following.behind_since) {
            (false, None) => {
                following.behind_since = Some(now);
                tracing::warn!(
                    "relay: Marathon lost; answering 503 to new streams and snapshots until a \
                     model read after it is back is served (open streams go on)"
                );
            }
            (true, Some(_)) => {
                following.behind_since = None;
                if self.stale.swap(false, Ordering::Relaxed) {
                    tracing::info!("relay: Marathon is back, serving again");
                } else {
                    tracing::info!("relay: current again, serving snapshots and new streams");
                }
            }
            _ => {}
        }
        self.metrics.current.set(i64::from(current));
        let Some(since) = following.behind_since else {
            return current;
        };
        let stale = now.saturating_duration_since(since) > self.settings.max_disconnected;
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
