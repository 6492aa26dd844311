//! A connection's HTTP/2 streams as the connection's task polls them: one waker per stream, so
//! a wake polls only the streams that were woken, and each slot's worker kept for the next
//! streams (released once the connection goes quiet).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Duration;

/// A connection's streams, polled inside the connection's task: each has a waker of its own
/// that queues it and wakes the task, so a wake polls only the streams that were woken. A
/// stream is served by its slot's worker, a future that takes the jobs handed to its slot's
/// [`Inbox`] one after another: a finished stream leaves its worker waiting for the next job,
/// so a new stream costs neither an allocation nor a copy of a stream's future (several KiB,
/// written whole by each move). At most `SPARE_STREAMS` idle workers are kept (fewer when the
/// connection never had as many streams open at once): released with the connection, they
/// bound what a quiet connection holds.
pub(super) struct Streams<J, T> {
    slots: Vec<Slot<J, T>>,
    wakers: Vec<(Arc<SlotWaker>, Waker)>,
    /// Slots of no open stream (an idle worker may still be in it, for reuse).
    free: Vec<usize>,
    /// Idle workers kept in free slots.
    pub(super) spare: usize,
    woken: Arc<Woken>,
    /// Taken from `woken` for one round of polls.
    round: Vec<usize>,
}

struct Slot<J, T> {
    /// An idle worker holds nothing: the state of its last job was dropped when it ended.
    /// Released with its inbox, so that a slot without a worker costs only its waker (a quiet
    /// connection that once had 100 streams open keeps no 100 inboxes).
    worker: Option<Worker<J, T>>,
    open: bool,
}

/// A slot's worker (its loop over the jobs handed to it) and the inbox it takes them from.
type Worker<J, T> = (Pin<Box<T>>, Arc<Inbox<J>>);

/// A slot's next job, as its worker takes it, and the worker's word that its job is done.
pub(super) struct Inbox<J> {
    job: Mutex<Option<J>>,
    finished: AtomicBool,
}

impl<J> Inbox<J> {
    /// The next job (its worker is woken when one is handed to the slot).
    pub(super) async fn next(&self) -> J {
        poll_fn(|_| match lock(&self.job).take() {
            Some(job) => Poll::Ready(job),
            None => Poll::Pending,
        })
        .await
    }

    /// The job taken last is done: its slot is free for the next stream.
    pub(super) fn finished(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }
}

/// Idle workers a busy connection keeps for its next streams.
pub(super) const SPARE_STREAMS: usize = 16;
/// A connection with no open stream for this long releases the workers it kept: a busy
/// connection's streams come in bursts far closer together, and a quiet one (a browser after
/// its page loaded) should not hold up to `SPARE_STREAMS` stream futures until it closes.
pub(super) const SPARE_LINGER: Duration = Duration::from_secs(1);

/// A connection's idle timer, for both codecs' drivers: armed while no stream is open. With
/// idle workers kept it first fires after `SPARE_LINGER` to release them, then at the idle
/// timeout, when the connection is to send GOAWAY; `FIRST_REQUEST_GRACE` after that, a client
/// still holding the connection is closed on. One timer per connection, reset in place.
pub(super) struct Idle {
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
    since: tokio::time::Instant,
    timeout: Duration,
}

/// What the idle timer asks of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdleTurn {
    /// Nothing yet (the task is woken when there is).
    Wait,
    /// Idle past the timeout: send GOAWAY (the task is woken to write it).
    GoAway,
    /// GOAWAY was sent a grace ago and the client still holds the connection: end it.
    End,
}

impl Idle {
    pub(super) fn new(timeout: Duration) -> Idle {
        Idle {
            timer: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            since: tokio::time::Instant::now(),
            timeout,
        }
    }

    /// Called once a round's work is done; `closing`: GOAWAY was sent.
    pub(super) fn poll<J, T: Future<Output = ()>>(
        &mut self,
        cx: &mut TaskContext<'_>,
        streams: &mut Streams<J, T>,
        closing: bool,
    ) -> IdleTurn {
        if streams.live() > 0 {
            self.armed = false;
            return IdleTurn::Wait;
        }
        if !self.armed {
            self.since = tokio::time::Instant::now();
            let first = if streams.spare > 0 {
                SPARE_LINGER.min(self.timeout)
            } else {
                self.timeout
            };
            self.timer.as_mut().reset(self.since + first);
            self.armed = true;
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return IdleTurn::Wait;
        }
        if streams.spare > 0 && !closing {
            streams.release_spare();
            self.timer.as_mut().reset(self.since + self.timeout);
            if self.timer.as_mut().poll(cx).is_pending() {
                return IdleTurn::Wait;
            }
        }
        if closing {
            return IdleTurn::End;
        }
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + super::FIRST_REQUEST_GRACE);
        cx.waker().wake_by_ref();
        IdleTurn::GoAway
    }

    /// After a fault's GOAWAY: true once the client had a grace to read it (a client that
    /// does not is not waited for).
    pub(super) fn grace_over(&mut self, cx: &mut TaskContext<'_>) -> bool {
        if !self.armed {
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + super::FIRST_REQUEST_GRACE);
            self.armed = true;
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

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

impl<J, T: Future<Output = ()>> Streams<J, T> {
    pub(super) fn new() -> Streams<J, T> {
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

    /// A new stream: `job` handed to a free slot's idle worker, or to a new worker
    /// (`worker(inbox)`, a loop taking its inbox's jobs); polled in the next round.
    pub(super) fn push(&mut self, job: J, worker: impl FnOnce(Arc<Inbox<J>>) -> T) {
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
                    worker: None,
                    open: false,
                });
                index
            }
        };
        let slot = &mut self.slots[index];
        match &slot.worker {
            Some((_, inbox)) => {
                *lock(&inbox.job) = Some(job);
                self.spare -= 1;
            }
            None => {
                let inbox = Arc::new(Inbox {
                    job: Mutex::new(Some(job)),
                    finished: AtomicBool::new(false),
                });
                slot.worker = Some((Box::pin(worker(inbox.clone())), inbox));
            }
        }
        slot.open = true;
        self.wakers[index].1.wake_by_ref();
    }

    /// Drops the idle workers kept in free slots (the connection went quiet).
    pub(super) fn release_spare(&mut self) {
        for &index in &self.free {
            self.slots[index].worker = None;
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

    /// Polls the streams woken since the last round; a finished one frees its slot (its
    /// worker kept while fewer than `SPARE_STREAMS` are).
    pub(super) fn poll_woken(&mut self) {
        std::mem::swap(&mut *lock(&self.woken.queue), &mut self.round);
        for i in 0..self.round.len() {
            let index = self.round[i];
            let (slot, waker) = &self.wakers[index];
            slot.queued.store(false, Ordering::Release);
            let slot = &mut self.slots[index];
            let (true, Some((worker, inbox))) = (slot.open, &mut slot.worker) else {
                continue; // woken after its stream ended
            };
            let mut cx = TaskContext::from_waker(waker);
            let ended = worker.as_mut().poll(&mut cx).is_ready();
            if ended || inbox.finished.swap(false, Ordering::Relaxed) {
                slot.open = false;
                if self.spare < SPARE_STREAMS && !ended {
                    self.spare += 1;
                } else {
                    slot.worker = None;
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

    /// A quiet connection releases the workers it kept (`SPARE_LINGER`): none is left in a free
    /// slot, and the next stream gets a worker of its own.
    #[test]
    fn released_spare_boxes_are_gone_and_new_streams_still_run() {
        let mut streams = Streams::new();
        let worker = |inbox: Arc<Inbox<()>>| async move {
            loop {
                inbox.next().await;
                inbox.finished();
            }
        };
        for _ in 0..3 {
            streams.push((), worker);
        }
        streams.poll_woken();
        assert_eq!((streams.live(), streams.spare), (0, 3));
        assert!(streams.slots.iter().all(|s| s.worker.is_some()));
        streams.release_spare();
        assert_eq!(streams.spare, 0);
        assert!(streams.slots.iter().all(|s| s.worker.is_none()));
        streams.push((), worker);
        assert_eq!(streams.live(), 1);
        streams.poll_woken();
        assert_eq!((streams.live(), streams.spare), (0, 1));
    }
}
