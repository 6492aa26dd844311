//! A connection's HTTP/2 streams as the connection's task polls them: one waker per stream, so
//! a wake polls only the streams that were woken, and finished streams' boxes kept for the next
//! streams (released once the connection goes quiet).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Wake, Waker};
use std::time::Duration;

/// A connection's streams, polled inside the connection's task: each has a waker of its own
/// that queues it and wakes the task, so a wake polls only the streams that were woken. All of
/// a connection's streams are futures of one type, so a finished stream's box is kept and the
/// next stream is written into it (`Pin::set`) instead of allocating one per stream. At most
/// `SPARE_STREAMS` such boxes are kept (fewer when the connection never had as many streams
/// open at once): released with the connection, they bound what a quiet connection holds.
pub(super) struct Streams<T> {
    slots: Vec<Slot<T>>,
    wakers: Vec<(Arc<SlotWaker>, Waker)>,
    /// Slots of no open stream (a finished stream's box may still be in it, for reuse).
    free: Vec<usize>,
    /// Boxes kept in free slots.
    pub(super) spare: usize,
    woken: Arc<Woken>,
    /// Taken from `woken` for one round of polls.
    round: Vec<usize>,
}

struct Slot<T> {
    /// A finished future holds nothing: an async fn's returned state has dropped its locals.
    future: Option<Pin<Box<T>>>,
    open: bool,
}

/// Finished streams' boxes a busy connection keeps for its next streams.
pub(super) const SPARE_STREAMS: usize = 16;
/// A connection with no open stream for this long releases the boxes it kept: a busy
/// connection's streams come in bursts far closer together, and a quiet one (a browser after
/// its page loaded) should not hold up to `SPARE_STREAMS` stream futures until it closes.
pub(super) const SPARE_LINGER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Woken {
    queue: Mutex<Vec<usize>>,
    /// The connection task's waker.
    task: Mutex<Option<Waker>>,
}

struct SlotWaker {
    index: usize,
    queued: AtomicBool,
    woken: Arc<Woken>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.woken.queue).push(self.index);
        }
        if let Some(task) = &*lock(&self.woken.task) {
            task.wake_by_ref();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: Future<Output = ()>> Streams<T> {
    pub(super) fn new() -> Streams<T> {
        Streams {
            slots: Vec::new(),
            wakers: Vec::new(),
            free: Vec::new(),
            spare: 0,
            woken: Arc::new(Woken::default()),
            round: Vec::new(),
        }
    }

    pub(super) fn register(&self, waker: &Waker) {
        let mut task = lock(&self.woken.task);
        if !task.as_ref().is_some_and(|t| t.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }

    /// A new stream, polled in the next round (inlined: the stream is written where it goes,
    /// not copied through a call).
    #[inline(always)]
    pub(super) fn push(&mut self, stream: T) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = self.slots.len();
                let slot = Arc::new(SlotWaker {
                    index,
                    queued: AtomicBool::new(false),
                    woken: self.woken.clone(),
                });
                self.wakers.push((slot.clone(), Waker::from(slot)));
                self.slots.push(Slot {
                    future: None,
                    open: false,
                });
                index
            }
        };
        let slot = &mut self.slots[index];
        match &mut slot.future {
            Some(kept) => {
                self.spare -= 1;
                kept.set(stream);
            }
            None => slot.future = Some(Box::pin(stream)),
        }
        slot.open = true;
        self.wakers[index].1.wake_by_ref();
    }

    /// Drops the boxes kept in free slots (the connection went quiet).
    pub(super) fn release_spare(&mut self) {
        for &index in &self.free {
            self.slots[index].future = None;
        }
        self.spare = 0;
    }

    /// Streams open now.
    pub(super) fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub(super) fn any_woken(&self) -> bool {
        !lock(&self.woken.queue).is_empty()
    }

    /// Polls the streams woken since the last round; a finished one frees its slot (its box
    /// kept while fewer than `SPARE_STREAMS` are).
    pub(super) fn poll_woken(&mut self) {
        std::mem::swap(&mut *lock(&self.woken.queue), &mut self.round);
        for i in 0..self.round.len() {
            let index = self.round[i];
            let (slot, waker) = &self.wakers[index];
            slot.queued.store(false, Ordering::Release);
            let slot = &mut self.slots[index];
            let (true, Some(stream)) = (slot.open, &mut slot.future) else {
                continue; // woken after it ended
            };
            let mut cx = TaskContext::from_waker(waker);
            if stream.as_mut().poll(&mut cx).is_ready() {
                slot.open = false;
                if self.spare < SPARE_STREAMS {
                    self.spare += 1;
                } else {
                    slot.future = None;
                }
                self.free.push(index);
            }
        }
        self.round.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quiet connection releases the boxes it kept (`SPARE_LINGER`): none is left in a free
    /// slot, and the next stream gets a box of its own.
    #[test]
    fn released_spare_boxes_are_gone_and_new_streams_still_run() {
        let mut streams = Streams::new();
        for _ in 0..3 {
            streams.push(std::future::ready(()));
        }
        streams.poll_woken();
        assert_eq!((streams.live(), streams.spare), (0, 3));
        assert!(streams.slots.iter().all(|s| s.future.is_some()));
        streams.release_spare();
        assert_eq!(streams.spare, 0);
        assert!(streams.slots.iter().all(|s| s.future.is_none()));
        streams.push(std::future::ready(()));
        assert_eq!(streams.live(), 1);
        streams.poll_woken();
        assert_eq!((streams.live(), streams.spare), (0, 1));
    }
}
