//! Coarse deadlines for the waits every proxied request makes (a backend's response head, the
//! next request head on a keep-alive connection): `timeout_at` ends a wait no earlier than its
//! deadline and at most [`GRANULARITY`] after it.
//!
//! Why: a tokio timer registered and cancelled around each such wait costs its request a lock
//! on the timer driver, an insertion into and a removal from its wheel (about 590
//! instructions, callgrind; about 230 here), although nearly every wait ends long before its
//! deadline. Here a wait notes its deadline and waker in its thread's board (a slot taken and
//! given back: no lock contended, no timer), and one ticker task per board, itself on one
//! tokio timer, wakes the waits whose deadline passed. The ticker looks when the earliest deadline it knows of
//! is due (on a grid of [`GRANULARITY`], and not more often), so a proxy whose waits all end
//! in time wakes it about once per timeout, and an idle one not at all.
//!
//! Every wait is still bounded: a wait whose board has no live ticker (its runtime ended) or
//! made outside a runtime's task falls back to a tokio timer of its own.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// How late a wait may end past its deadline (and how often, at most, a ticker looks).
pub const GRANULARITY: Duration = Duration::from_millis(50);

/// The wait ran past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// `fut`'s output, or `Elapsed` once `deadline` has passed (by at most [`GRANULARITY`]) with
/// `fut` still pending. A future ready at its first poll never touches a timer.
pub async fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut wait = Wait {
        deadline,
        state: State::Unarmed,
    };
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        wait.poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

thread_local! {
    /// This thread's board: where its waits note their deadlines.
    static BOARD: std::cell::RefCell<Option<Arc<Mutex<Board>>>> =
        const { std::cell::RefCell::new(None) };
}

/// The deadlines of one thread's pending waits, and the ticker that watches them. Behind a
/// mutex only so that a wait or the ticker may be polled or dropped on another thread (a
/// multi-thread runtime): on a worker's current-thread runtime it is never contended.
struct Board {
    slots: Vec<Slot>,
    /// Slots free for the next wait.
    free: Vec<usize>,
    /// When the ticker looks next, on the grid: no later than the earliest pending deadline
    /// plus [`GRANULARITY`]. `None` when nothing waits (the ticker sleeps without a timer).
    planned: Option<Instant>,
    /// The ticker, to wake when a wait's deadline comes before `planned`.
    ticker: Option<Waker>,
    /// The ticker's task still runs (it is gone with its runtime).
    alive: bool,
    /// Where the grid starts.
    origin: Instant,
}

enum Slot {
    Free,
    Waiting {
        deadline: Instant,
        waker: Waker,
    },
    /// The deadline passed: the wait ends at its next poll.
    Due,
}

impl Board {
    /// `deadline` rounded up to the grid: waits due within one step share the ticker's look.
    fn on_grid(&self, deadline: Instant) -> Instant {
        let step = GRANULARITY.as_nanos();
        let since = deadline.saturating_duration_since(self.origin).as_nanos();
        let steps = since.div_ceil(step);
        self.origin + Duration::from_nanos(u64::try_from(steps * step).unwrap_or(u64::MAX))
    }

    /// Notes a wait; gives the ticker to wake when it must look earlier than it planned.
    fn insert(&mut self, deadline: Instant, waker: &Waker) -> (usize, Option<Waker>) {
        let slot = Slot::Waiting {
            deadline,
            waker: waker.clone(),
        };
        let key = match self.free.pop() {
            Some(key) => {
                self.slots[key] = slot;
                key
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        // The usual wait is due after the ticker's planned look: nothing to change.
        let mut wake = None;
        if self.planned.is_none_or(|planned| deadline < planned) {
            let at = self.on_grid(deadline);
            if self.planned.is_none_or(|planned| at < planned) {
                self.planned = Some(at);
                wake = self.ticker.take();
            }
        }
        (key, wake)
    }

    fn remove(&mut self, key: usize) {
        self.slots[key] = Slot::Free;
        self.free.push(key);
    }

    /// Marks the waits due at `now`, gives their wakers, and plans the next look.
    fn fire(&mut self, now: Instant) -> Vec<Waker> {
        let mut woken = Vec::new();
        let mut earliest: Option<Instant> = None;
        for slot in &mut self.slots {
            if let Slot::Waiting { deadline, .. } = slot {
                if *deadline <= now {
                    if let Slot::Waiting { waker, .. } = std::mem::replace(slot, Slot::Due) {
                        woken.push(waker);
                    }
                } else {
                    earliest = Some(earliest.map_or(*deadline, |e| e.min(*deadline)));
                }
            }
        }
        // On the grid, so after this step: a look per step at most, however deadlines fall.
        self.planned = earliest.map(|e| self.on_grid(e));
        woken
    }

    /// The ticker ended: every wait is woken, to fall back to a timer of its own.
    fn orphan(&mut self) -> Vec<Waker> {
        self.alive = false;
        self.slots
            .iter_mut()
            .filter_map(|slot| match std::mem::replace(slot, Slot::Due) {
                Slot::Waiting { waker, .. } => Some(waker),
                _ => None,
            })
            .collect()
    }
}

fn lock(board: &Mutex<Board>) -> MutexGuard<'_, Board> {
    // A panic never leaves a board half-changed (no user code runs under the lock).
    board.lock().unwrap_or_else(|e| e.into_inner())
}

/// One wait's place: nothing yet, a slot on a board, or its own timer.
enum State {
    Unarmed,
    Noted(Arc<Mutex<Board>>, usize),
    Own(std::pin::Pin<Box<tokio::time::Sleep>>),
}

struct Wait {
    deadline: Instant,
    state: State,
}

impl Wait {
    /// Ready once the deadline has passed.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Unarmed => match note(self.deadline, cx.waker()) {
                    Some((board, key)) => {
                        self.state = State::Noted(board, key);
                        return Poll::Pending;
                    }
                    None => {
                        self.state = State::Own(Box::pin(tokio::time::sleep_until(self.deadline)))
                    }
                },
                State::Noted(board, key) => {
                    let mut board = lock(board);
                    let alive = board.alive;
                    match &mut board.slots[*key] {
                        Slot::Waiting { waker, .. } => {
                            if !waker.will_wake(cx.waker()) {
                                *waker = cx.waker().clone();
                            }
                            return Poll::Pending;
                        }
                        Slot::Due if alive => return Poll::Ready(()),
                        // Woken because the ticker ended: a timer of its own from now on.
                        _ => {
                            board.remove(*key);
                            drop(board);
                            self.state =
                                State::Own(Box::pin(tokio::time::sleep_until(self.deadline)));
                        }
                    }
                }
                State::Own(sleep) => return sleep.as_mut().poll(cx),
            }
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let State::Noted(board, key) = &self.state {
            lock(board).remove(*key);
        }
    }
}

/// Notes `deadline` on this thread's board (started, with its ticker, at the first wait, and
/// again if its runtime ended); `None` outside a runtime. One lock, taken once.
fn note(deadline: Instant, waker: &Waker) -> Option<(Arc<Mutex<Board>>, usize)> {
    let (board, key, wake) = BOARD
        .try_with(|cell| {
            let mut cell = cell.borrow_mut();
            if let Some(board) = &*cell {
                let mut noted = lock(board);
                if noted.alive {
                    let (key, wake) = noted.insert(deadline, waker);
                    drop(noted);
                    return Some((board.clone(), key, wake));
                }
            }
            let board = start()?;
            *cell = Some(board.clone());
            let mut noted = lock(&board);
            // A runtime shutting down drops the ticker at once: a timer of the wait's own.
            if !noted.alive {
                return None;
            }
            let (key, wake) = noted.insert(deadline, waker);
            drop(noted);
            Some((board, key, wake))
        })
        .ok()??;
    if let Some(ticker) = wake {
        ticker.wake();
    }
    Some((board, key))
}

/// A board, with its ticker spawned on the current runtime.
fn start() -> Option<Arc<Mutex<Board>>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let board = Arc::new(Mutex::new(Board {
        slots: Vec::new(),
        free: Vec::new(),
        planned: None,
        ticker: None,
        alive: true,
        origin: Instant::now(),
    }));
    handle.spawn(tick(Ticker(board.clone())));
    Some(board)
}

/// The ticker's hold on its board: when its task is dropped (its runtime ends), the board's
/// waits are told, so that none is left without a timer.
struct Ticker(Arc<Mutex<Board>>);

impl Drop for Ticker {
    fn drop(&mut self) {
        let woken = lock(&self.0).orphan();
        woken.into_iter().for_each(Waker::wake);
    }
}

/// Sleeps until the board's planned look (or, with nothing planned, until a wait wakes it),
/// then wakes the waits that are due.
async fn tick(ticker: Ticker) {
    let mut sleep = Box::pin(tokio::time::sleep_until(Instant::now()));
    std::future::poll_fn(|cx| {
        loop {
            let mut board = lock(&ticker.0);
            let Some(planned) = board.planned else {
                board.ticker = Some(cx.waker().clone());
                return Poll::<()>::Pending;
            };
            if sleep.deadline() != planned {
                sleep.as_mut().reset(planned);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                board.ticker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let woken = board.fire(Instant::now());
            drop(board);
            woken.into_iter().for_each(Waker::wake);
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;

    /// Waits of many deadlines at once each end after theirs, and within `GRANULARITY` of it.
    #[tokio::test(start_paused = true)]
    async fn each_wait_ends_after_its_deadline_within_the_granularity() {
        let waits: Vec<_> = [30u64, 120, 121, 1_000, 5_000, 60_000, 20]
            .into_iter()
            .map(|ms| {
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_millis(ms);
                    let ended = timeout_at(deadline, pending::<()>()).await;
                    (ended, deadline, Instant::now())
                })
            })
            .collect();
        for wait in waits {
            let (ended, deadline, at) = wait.await.unwrap();
            assert_eq!(ended, Err(Elapsed));
            assert!(at >= deadline, "ended {:?} early", deadline - at);
            assert!(
                at <= deadline + GRANULARITY,
                "ended {:?} late",
                at - deadline
            );
        }
    }

    /// Waits that end in time give their slots back, a ready future never takes one, and
    /// once nothing waits the ticker sleeps without a timer.
    #[tokio::test(start_paused = true)]
    async fn waits_that_end_in_time_leave_nothing_behind() {
        for _ in 0..100 {
            let deadline = Instant::now() + Duration::from_secs(1);
            let answered = tokio::time::sleep(Duration::from_millis(10));
            assert_eq!(timeout_at(deadline, answered).await, Ok(()));
        }
        assert_eq!(timeout_at(Instant::now(), async { 7 }).await, Ok(7));
        let board = BOARD.with(|b| b.borrow().clone()).expect("a board");
        {
            let board = lock(&board);
            assert!(board.slots.iter().all(|s| matches!(s, Slot::Free)));
            assert_eq!(board.slots.len(), 1, "one slot, taken in turn");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(lock(&board).planned, None);
    }

    /// A thread's board whose runtime ended (and its ticker with it) is not used again: a
    /// wait in the thread's next runtime still ends.
    #[test]
    fn a_wait_outlives_the_runtime_of_an_earlier_board() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        };
        let wait = || async {
            let deadline = Instant::now() + Duration::from_millis(20);
            let bounded = timeout_at(deadline, pending::<()>());
            tokio::time::timeout(Duration::from_secs(5), bounded).await
        };
        let first = runtime();
        assert_eq!(first.block_on(wait()), Ok(Err(Elapsed)));
        drop(first);
        assert_eq!(runtime().block_on(wait()), Ok(Err(Elapsed)));
    }
}
