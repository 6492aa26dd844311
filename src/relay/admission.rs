//! Which connections the relay holds open: at most `2 × relay.max_subscribers + 256`, and a
//! connection that has not yet presented valid credentials never keeps out one that does.
//! Every connection starts unauthenticated (nothing is known of it when it is accepted); when
//! none is free, the oldest unauthenticated one is closed and its slot handed to the new one. A
//! connection becomes authenticated with its first authorized request, and is then never
//! evicted. So clients without the token can hold slots only until someone else needs them, and
//! each for at most `relay.header_timeout` anyway; a follower's connection, whose request comes
//! in its first packet, is authenticated long before hundreds of newer ones could evict it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// One open connection's share of the cap, given back when dropped.
type Slot = OwnedSemaphorePermit;

/// Unauthenticated connections, oldest first (ids grow), with their slots and what closes them.
type Waiting = BTreeMap<u64, (Slot, Arc<Notify>)>;

pub(super) struct Admission {
    free: Arc<Semaphore>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
    /// Connections closed at once: every slot held by an authenticated connection.
    refused: Counter,
    /// Unauthenticated connections closed to make room.
    evicted: Counter,
}

/// An admitted connection. Its slot is in the waiting list until it authenticates, then here.
pub(super) struct Ticket {
    id: u64,
    waiting: Arc<Mutex<Waiting>>,
    own: Mutex<Option<Slot>>,
}

impl Admission {
    pub(super) fn new(limit: usize, refused: Counter, evicted: Counter) -> Admission {
        Admission {
            free: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            waiting: Arc::default(),
            next_id: AtomicU64::new(0),
            refused,
            evicted,
        }
    }

    /// A slot for a connection just accepted (closed through `cut` if it is evicted), taken
    /// from the oldest unauthenticated connection when none is free; `None` (counted): every
    /// slot is an authenticated connection's, drop this one.
    pub(super) fn admit(&self, cut: Arc<Notify>) -> Option<Ticket> {
        let mut waiting = self.waiting.lock().unwrap();
        let slot = match self.free.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match waiting.pop_first() {
                Some((_, (slot, evicted))) => {
                    self.evicted.inc();
                    evicted.notify_one();
                    slot
                }
                None => {
                    self.refused.inc();
                    return None;
                }
            },
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        waiting.insert(id, (slot, cut));
        Some(Ticket {
            id,
            waiting: self.waiting.clone(),
            own: Mutex::new(None),
        })
    }
}

impl Ticket {
    /// The connection presented valid credentials: it keeps its slot until it closes.
    pub(super) fn authenticated(&self) {
        let mut own = self.own.lock().unwrap();
        if own.is_none()
            && let Some((slot, _)) = self.waiting.lock().unwrap().remove(&self.id)
        {
            *own = Some(slot);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.waiting.lock().unwrap().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_unauthenticated_connection_makes_room_and_authenticated_ones_never_do() {
        let admission = Admission::new(2, Counter::default(), Counter::default());
        let (a, b, c) = (
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
        );
        let first = admission.admit(a.clone()).unwrap();
        let second = admission.admit(b.clone()).unwrap();
        second.authenticated();
        // Full: the first (unauthenticated) is evicted, the second is not.
        let third = admission.admit(c.clone()).unwrap();
        assert_eq!(admission.evicted.get(), 1);
        third.authenticated();
        // Both slots authenticated: refused.
        assert!(admission.admit(Arc::new(Notify::new())).is_none());
        assert_eq!(admission.refused.get(), 1);
        // A closed connection gives its slot back (the evicted one had given it already).
        drop(first);
        assert!(admission.admit(Arc::new(Notify::new())).is_none());
        drop(second);
        assert!(admission.admit(Arc::new(Notify::new())).is_some());
        drop(third);
    }
}
