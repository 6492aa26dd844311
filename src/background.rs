//! One thread at the kernel's lowest CPU priority (`SCHED_IDLE`) for the work a table swap
//! leaves behind that nobody waits for: the new table's hash (`reconciler::after_swap`).
//!
//! Why: that work (with the route weight metrics and freeing the replaced table) used to go to
//! tokio's blocking pool, whose threads run at normal priority.
//! It is handed over at the moment the new table is published, which is also the moment its
//! readers wake (a worker, the event -> route bench's reader, the control thread with the next
//! event). On a 2-core machine with the other core busy, a freshly woken pool thread holding
//! the free core kept a woken reader waiting for milliseconds (`perf sched` at 50,000 apps:
//! benches/RESULTS.md, branch p99fix). A `SCHED_IDLE` thread runs only on a core nothing else
//! wants, and any thread that wakes takes the core from it at once. A thread's policy cannot be
//! raised back without privileges, hence a thread of its own rather than the pool's.
//!
//! What this costs: under a saturated CPU this work waits (it still gets a small share; the
//! scheduler gives an idle-policy thread weight 3 against a normal one's 1024). Nothing on the
//! data path needs it, and nothing at normal priority waits for it: the hash is made outside
//! the table's once-only cell, and only a scrape writes it into `/metrics`, showing no series
//! while it is not made (`reconciler::after_swap`). Replaced tables are not freed here
//! (`snapshot::free_elsewhere`): freeing takes the allocator's locks.
//!
//! Priority alone was not enough (`perf sched` on the branch): a reader preempted by the control
//! thread it woke (runnable, not waking) is not put ahead of an idle-policy thread the same swap
//! woke, and waited behind it for a slice of a few ms. So the thread also lets [`SETTLE`] pass
//! before it runs what it was handed: the threads the swap woke have run by then, and the swaps
//! of a burst share one run of the work they coalesce (`reconciler::after_swap`).
//!
//! Bounded: at most [`QUEUE`] jobs wait. Past that, or when the thread cannot be started,
//! [`run`] gives the job back and the caller runs it elsewhere as before.

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// A piece of work for the idle thread.
pub type Job = Box<dyn FnOnce() + Send>;

/// Jobs that may wait for the thread: a swap queues at most one hash run (coalesced by its
/// caller) and one batch of tables to free.
const QUEUE: usize = 64;

/// How long a job waits before the thread runs it (with every job handed over meanwhile).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// The thread's name, as `ps -L` and `/proc/PID/task/*/comm` show it.
pub const THREAD_NAME: &str = "switchyard-idle";

/// The queue of the one idle thread of the process (`None`: it could not be started).
static LANE: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();

/// Queues `job` for the idle-priority thread, started on first use; gives the job back when
/// the queue is full or the thread could not be started.
pub fn run(job: Job) -> Result<(), Job> {
    match LANE.get_or_init(start) {
        Some(lane) => lane.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        }),
        None => Err(job),
    }
}

fn start() -> Option<SyncSender<Job>> {
    let (lane, jobs) = sync_channel::<Job>(QUEUE);
    let started = std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            lower_priority();
            while let Ok(first) = jobs.recv() {
                std::thread::sleep(SETTLE);
                for job in std::iter::once(first).chain(jobs.try_iter()) {
                    // A job that panics ends itself, not the thread (as a blocking-pool task).
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            }
        });
    match started {
        Ok(_) => Some(lane),
        Err(e) => {
            tracing::warn!("cannot start the idle-priority thread: {e}; its work runs elsewhere");
            None
        }
    }
}

/// Puts the calling thread on `SCHED_IDLE`; where that is refused, at nice 19 (the lowest
/// normal priority).
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: 0 names the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return;
    }
    // SAFETY: gettid has no preconditions; setpriority on this thread's id.
    let tid = unsafe { libc::gettid() };
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) } != 0 {
        tracing::debug!("the idle-priority thread runs at normal priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// What a job sees of the thread it runs on: its id and its scheduling policy.
    fn where_it_runs() -> (std::thread::ThreadId, i32) {
        let (tx, rx) = std::sync::mpsc::channel();
        let queued = run(Box::new(move || {
            // SAFETY: 0 names the calling thread.
            let policy = unsafe { libc::sched_getscheduler(0) };
            let _ = tx.send((std::thread::current().id(), policy));
        }));
        assert!(queued.is_ok(), "the idle thread takes the job");
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the job ran")
    }

    #[test]
    fn a_job_runs_on_a_thread_of_its_own_at_idle_priority() {
        let (thread, policy) = where_it_runs();
        assert_ne!(thread, std::thread::current().id());
        assert_eq!(policy, libc::SCHED_IDLE);
    }

    #[test]
    fn a_job_that_panics_does_not_end_the_thread() {
        assert!(run(Box::new(|| panic!("a job's own failure"))).is_ok());
        let (first, _) = where_it_runs();
        let (second, _) = where_it_runs();
        assert_eq!(first, second, "one thread, still running");
    }
}
