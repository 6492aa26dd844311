//! The loop's clock: each connection's timer (connect timeout, idle timeout, a removed
//! backend's cut), the sweep of what is gone, and the task that waits on the inner epoll set
//! or the next timer and hands what is ready to the loop.

use super::*;

impl Loop {
    /// Makes sure the connection has a timer due no later than `due`.
    pub(super) fn arm(&mut self, index: usize, due: u64) {
        let Some(conn) = self.conn(index) else { return };
        if due >= conn.armed_ms {
            return;
        }
        conn.armed_ms = due;
        let id = conn.id;
        self.timers.push(Reverse((due, index as u32, id)));
        if due < self.driver_wakes_ms && !self.rearm {
            self.rearm = true;
            if let Some(waker) = self.driver.take() {
                waker.wake();
            }
        }
    }

    /// Runs the timers due by `now`.
    pub(super) fn expire(&mut self, now: u64) {
        while let Some(&Reverse((due, index, id))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let index = index as usize;
            let Some(conn) = self.conn(index) else {
                continue;
            };
            if conn.id != id || conn.armed_ms != due {
                continue; // stale: the connection ended, or armed an earlier timer since
            }
            conn.armed_ms = u64::MAX;
            let due = conn.due();
            if due > now {
                self.arm(index, due);
                continue;
            }
            match conn.phase {
                Phase::Connecting { .. } => {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                    self.connect_failed(index, e);
                }
                Phase::Relaying { cut_ms, .. } => {
                    let end = if cut_ms <= now {
                        End::Drained
                    } else {
                        End::IdleTimeout
                    };
                    self.finish(index, end);
                }
            }
        }
    }

    /// Looks at every relayed connection's backend for a drain deadline (set when the backend
    /// leaves the table), and arms its cut.
    pub(super) fn sweep(&mut self) {
        for index in 0..self.slots.len() {
            let Some(conn) = self.conn(index) else {
                continue;
            };
            let Phase::Relaying { state, cut_ms, .. } = &mut conn.phase else {
                continue;
            };
            *cut_ms = self::cut_ms(state);
            let due = conn.due();
            self.arm(index, due);
        }
    }

    /// When the driver should look at the timers next.
    pub(super) fn next_wake(&self, now: u64) -> u64 {
        let first = self
            .timers
            .peek()
            .map_or(u64::MAX, |Reverse((due, ..))| *due);
        let wake = first.min(self.next_sweep_ms).min(now + TICK_MS);
        wake.div_ceil(SLACK_MS) * SLACK_MS
    }
}

impl Conn {
    /// When this connection's timer should fire: the connect timeout while connecting; the
    /// idle timeout or the backend's cut while relaying.
    pub(super) fn due(&self) -> u64 {
        match &self.phase {
            Phase::Connecting { deadline_ms, .. } => *deadline_ms,
            Phase::Relaying {
                last_ms, cut_ms, ..
            } => last_ms.saturating_add(self.idle_ms).min(*cut_ms),
        }
    }
}

/// The loop's task on its worker: waits for the inner set to have events or for the next
/// timer, then handles what is ready.
pub(super) async fn drive(epoll: Arc<AsyncFd<OwnedFd>>) {
    let epfd = epoll.get_ref().as_raw_fd();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let sleep = tokio::time::sleep(Duration::from_millis(TICK_MS));
    let mut sleep = std::pin::pin!(sleep);
    let mut sleeping_until = 0;
    loop {
        let now = coarse_ms();
        let wake = LOOP.with(|cell| {
            let mut l = cell.borrow_mut();
            let l = l.as_mut()?;
            if !Arc::ptr_eq(&l.epoll, &epoll) {
                return None; // replaced (a new runtime on this thread): this task is done
            }
            l.rearm = false;
            let wake = l.next_wake(now);
            l.driver_wakes_ms = wake;
            Some(wake)
        });
        let Some(wake) = wake else { return };
        if wake != sleeping_until {
            sleeping_until = wake;
            let at = tokio::time::Instant::now() + Duration::from_millis(wake.saturating_sub(now));
            sleep.as_mut().reset(at);
        }
        // Woken (through `Loop::arm`) when a timer due earlier than `wake` is armed.
        let rearm = std::future::poll_fn(|cx| {
            LOOP.with(|cell| match cell.borrow_mut().as_mut() {
                Some(l) if l.rearm => {
                    l.rearm = false;
                    std::task::Poll::Ready(())
                }
                Some(l) => {
                    if !l.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        l.driver = Some(cx.waker().clone());
                    }
                    std::task::Poll::Pending
                }
                None => std::task::Poll::Ready(()),
            })
        });
        let ready = tokio::select! {
            biased;
            ready = epoll.readable() => Some(ready),
            _ = sleep.as_mut() => {
                // Set again even for the same time: the coarse clock may not be there yet.
                sleeping_until = 0;
                None
            }
            _ = rearm => None,
        };
        if let Some(ready) = ready {
            let Ok(mut guard) = ready else { return };
            let n = LOOP.with(|cell| {
                let mut l = cell.borrow_mut();
                let Some(l) = l.as_mut() else { return 0 };
                // Running: a timer armed now is seen before the next wait, without a wake-up.
                l.driver = None;
                // SAFETY: `events` has room for BATCH entries; a zero timeout does not block.
                let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), BATCH as i32, 0) };
                for e in &events[..n.max(0) as usize] {
                    let (data, ev) = (e.u64, e.events);
                    l.event(data, ev);
                }
                n
            });
            if n >= 0 && (n as usize) < BATCH {
                guard.clear_ready();
            }
        }
        let now = coarse_ms();
        LOOP.with(|cell| {
            if let Some(l) = cell.borrow_mut().as_mut() {
                l.expire(now);
                if now >= l.next_sweep_ms {
                    l.next_sweep_ms = now + TICK_MS;
                    l.sweep();
                }
            }
        });
        // (Others on this worker get their turn: `readable` spends the task's budget.)
    }
}
