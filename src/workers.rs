//! The data plane's workers: one current-thread runtime per worker, each on a thread of its own
//! (worker 0 is the runtime `run` is called on). Every worker accepts on every listening socket;
//! a connection is served to its end by one worker, with connections to backends pooled per
//! worker, so no wake-up crosses threads and no lock is contended on the way of a request.
//!
//! The workers share each listening socket (each registers its own duplicate of the descriptor)
//! rather than holding one `SO_REUSEPORT` socket each: a port stays one socket, which is what a
//! binary upgrade hands over whole, with its accept queue. Whichever worker the kernel wakes
//! first accepts; a worker that already serves more than one connection over the least loaded
//! worker hands the new one over to it (measured: a 2:1 split of the connections cost a quarter
//! more CPU per request than an even one).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::runtime_thread::RuntimeThread;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// How many workers run (1 until they start): what per-worker state is sized by.
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// The worker this thread is (0 on any thread that is not a worker's).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

pub struct Workers {
    /// Worker `i`'s runtime; 0 is the caller's.
    handles: Vec<Handle>,
    /// Worker `i`'s open client connections.
    loads: Arc<[AtomicUsize]>,
    /// Workers 1 and up.
    threads: std::sync::Mutex<Vec<RuntimeThread>>,
}

impl Workers {
    /// `n` workers: the runtime this is called on, and `n - 1` more on threads of their own.
    pub fn start(n: usize) -> io::Result<Workers> {
        COUNT.fetch_max(n.max(1), Ordering::Relaxed);
        let threads = (1..n.max(1))
            .map(|i| RuntimeThread::start(format!("worker-{i}"), move || WORKER.with(|w| w.set(i))))
            .collect::<io::Result<Vec<_>>>()?;
        let handles: Vec<Handle> = std::iter::once(Handle::current())
            .chain(threads.iter().map(|t| t.handle().clone()))
            .collect();
        for handle in &handles {
            handle.spawn(timer_heartbeat());
        }
        Ok(Workers {
            loads: handles.iter().map(|_| AtomicUsize::new(0)).collect(),
            handles,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// Ends the other workers' threads, dropping what they still serve; blocks until they end.
    pub fn stop(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap());
        for mut thread in threads {
            thread.stop();
        }
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Worker 0's runtime: what serves sockets only one worker may read (UDP VIPs, whose flow
    /// tables are per socket).
    pub fn first(&self) -> &Handle {
        &self.handles[0]
    }

    /// Runs `accept` in every worker, each on its own registration of `listener` (registered
    /// with worker 0's runtime); aborting the returned tasks stops accepting everywhere.
    pub fn accept_everywhere<F, Fut>(
        &self,
        listener: Arc<TcpListener>,
        accept: F,
    ) -> io::Result<Vec<JoinHandle<()>>>
    where
        F: Fn(Arc<TcpListener>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = Vec::with_capacity(self.handles.len());
        for handle in &self.handles[1..] {
            let duplicate: std::net::TcpListener =
                socket2::SockRef::from(&*listener).try_clone()?.into();
            duplicate.set_nonblocking(true)?;
            let _worker = handle.enter();
            let registered = Arc::new(TcpListener::from_std(duplicate)?);
            tasks.push(handle.spawn(accept(registered)));
        }
        tasks.push(self.handles[0].spawn(accept(listener)));
        Ok(tasks)
    }
}

impl Workers {
    /// As [`Workers::accept_everywhere`], with readiness only: each worker gets its own
    /// duplicate of `listener` registered with its reactor for readability, and accepts by
    /// hand, so that what it accepts is registered nowhere until it says where (TCP mode's own
    /// loop, `proxy::tcp_loop`). The tasks hold `listener` until they end.
    pub fn accept_everywhere_unregistered<F, Fut>(
        &self,
        listener: Arc<std::net::TcpListener>,
        accept: F,
    ) -> io::Result<Vec<JoinHandle<()>>>
    where
        F: Fn(AsyncFd<std::net::TcpListener>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = Vec::with_capacity(self.handles.len());
        for handle in self.handles[1..].iter().chain(&self.handles[..1]) {
            let duplicate: std::net::TcpListener =
                socket2::SockRef::from(&*listener).try_clone()?.into();
            duplicate.set_nonblocking(true)?;
            let _worker = handle.enter();
            // SAFETY: the duplicate is owned by the `AsyncFd` until it drops.
            let ready = unsafe {
                AsyncFd::register_with_interest(duplicate, tokio::io::Interest::READABLE)?
            };
            let (held, accepting) = (listener.clone(), accept(ready));
            tasks.push(handle.spawn(async move {
                let _held = held;
                accepting.await
            }));
        }
        Ok(tasks)
    }

    /// Serves an accepted connection to its end: here, or on the least loaded worker when this
    /// one serves more than one connection over it.
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let here = current().min(self.len() - 1);
        let target = self.placement(here);
        self.loads[target].fetch_add(1, Ordering::Relaxed);
        let load = Counted(self.loads.clone(), target);
        if target == here {
            tokio::spawn(async move {
                let _load = load;
                serve(stream).await
            });
            return;
        }
        // Moved whole: out of this worker's reactor, into the target's.
        let Ok(stream) = stream.into_std() else {
            return;
        };
        self.handles[target].spawn(async move {
            let _load = load;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!("handing a connection to another worker: {e}"),
            }
        });
    }

    /// As [`Workers::serve`], for a connection no reactor knows (TCP mode's own loop,
    /// `proxy::tcp_loop`): `serve` runs at once when this worker keeps it, else on the chosen
    /// worker's thread; it holds the worker's count (`Counted`) for as long as the connection
    /// lives.
    pub fn serve_unregistered<F>(&self, stream: std::net::TcpStream, serve: F)
    where
        F: FnOnce(std::net::TcpStream, Counted) + Send + 'static,
    {
        let here = current().min(self.len() - 1);
        let target = self.placement(here);
        self.loads[target].fetch_add(1, Ordering::Relaxed);
        let load = Counted(self.loads.clone(), target);
        if target == here {
            serve(stream, load);
            return;
        }
        self.handles[target].spawn(async move { serve(stream, load) });
    }

    /// The worker a connection accepted by `here` is served by.
    fn placement(&self, here: usize) -> usize {
        let load = |w: usize| self.loads[w].load(Ordering::Relaxed);
        let least = (0..self.len()).min_by_key(|&w| load(w)).unwrap_or(here);
        if load(here) > load(least) + 1 {
            least
        } else {
            here
        }
    }
}

/// How often a worker's timer driver wakes when nothing else is due (see [`timer_heartbeat`]).
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps a timer due within [`HEARTBEAT`] on every worker. Tokio's timer driver notes, each
/// time its thread parks, when its earliest timer is due; arming a timer due before that wakes
/// the driver through its eventfd (a `write(2)`, and one more event for the next `epoll_wait`),
/// even when the thread is busy and not parked at all. Without this, a new connection's connect
/// timeout (5 s) is such a timer whenever what is pending are only idle timeouts an hour out:
/// one write per new connection (strace: 2,024 writes for 2,000 connections). With a timer
/// always due within a second, connect timeouts of a second or more never wake the driver. The
/// price is one wakeup a second per worker on an idle proxy.
async fn timer_heartbeat() {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// A connection counted in its worker's load until it ends (`Counted`, not to be confused with
/// `balance::Load`, a backend's load).
pub struct Counted(Arc<[AtomicUsize]>, usize);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// Accepts on a fresh socket in every worker, then stops all but worker `keep`: whoever
    /// serves a connection then says which worker it is.
    async fn served_by(workers: &Workers, keep: usize) -> usize {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks = workers
            .accept_everywhere(listener, move |l| {
                let tx = tx.clone();
                async move {
                    while let Ok((stream, _)) = l.accept().await {
                        let _ = tx.send(current());
                        drop(stream);
                    }
                }
            })
            .unwrap();
        // Tasks come as workers 1, 2, …, then worker 0.
        let index = |task: usize| (task + 1) % workers.len();
        for (i, task) in tasks.iter().enumerate() {
            if index(i) != keep {
                task.abort();
            }
        }
        for (i, task) in tasks.into_iter().enumerate() {
            if index(i) != keep {
                let _ = task.await;
            }
        }
        // From a blocking thread: worker 0 is this test's runtime and must be free to accept.
        tokio::task::spawn_blocking(move || drop(std::net::TcpStream::connect(addr).unwrap()));
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a connection was served")
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_worker_accepts_on_the_shared_socket_and_serves_on_its_own_thread() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.len(), 3);
        for keep in 0..3 {
            assert_eq!(served_by(&workers, keep).await, keep);
        }
        tokio::task::spawn_blocking(move || drop(workers))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_port_closes_when_every_worker_stops_accepting() {
        let workers = Workers::start(2).unwrap();
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let tasks = workers
            .accept_everywhere(listener, |l| async move {
                while let Ok((stream, _)) = l.accept().await {
                    drop(stream);
                }
            })
            .unwrap();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        let refused = tokio::time::timeout(Duration::from_secs(5), async {
            while tokio::net::TcpStream::connect(addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            refused.is_ok(),
            "the socket closed with its last registration"
        );
        tokio::task::spawn_blocking(move || drop(workers))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_busier_worker_hands_a_new_connection_to_the_least_loaded_one() {
        let workers = Workers::start(2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut served_on = Vec::new();
        // This test's thread is worker 0: loaded by 5, then by none.
        for load in [5, 0] {
            workers.loads[0].store(load, Ordering::Relaxed);
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let (tx, rx) = oneshot::channel();
            workers.serve(stream, move |stream| async move {
                let _ = tx.send((current(), stream.peer_addr().is_ok()));
            });
            served_on.push(rx.await.unwrap());
        }
        assert_eq!(served_on, [(1, true), (0, true)]);
        tokio::task::spawn_blocking(move || drop(workers))
            .await
            .unwrap();
    }
}
