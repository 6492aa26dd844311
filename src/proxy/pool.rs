//! Idle connections to backends, kept by the proxy for reuse: per worker, by backend, the fast
//! path's plain sockets and the general path's HTTP/1.1 connections; and per backend, the one
//! shared HTTP/2 connection of services that speak h2c. The backends' runtime state knows
//! nothing of them: a backend that leaves the table (drains) is simply no longer pooled, and
//! what was pooled for it is dropped when next seen or swept.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use super::upstream::Upstream;
use super::upstream_h2::H2Upstream;
use crate::backends::BackendState;

/// Every this many check-ins, a worker drops what it holds for backends that are gone or
/// draining, so that a removed backend's idle connections do not outlive it for long.
const SWEEP_EVERY: usize = 256;

pub struct Pools {
    workers: Box<[Mutex<WorkerPool>]>,
    h2: Mutex<FxHashMap<usize, (Weak<BackendState>, H2Upstream)>>,
    max_idle: AtomicUsize,
}

#[derive(Default)]
struct WorkerPool {
    by_backend: FxHashMap<usize, Idle>,
    checkins: usize,
}

struct Idle {
    /// Whose connections these are. The key is its address; this weak reference keeps that
    /// address from being reused for another state while the entry exists.
    state: Weak<BackendState>,
    /// HTTP/1.1 connections of the general path (hyper).
    h1: Vec<Upstream>,
    /// Plain sockets of the fast path, between exchanges.
    raw: Vec<TcpStream>,
}

fn key(state: &Arc<BackendState>) -> usize {
    Arc::as_ptr(state) as usize
}

impl Pools {
    /// Up to `max_idle` idle connections per backend, per worker and kind.
    pub fn new(max_idle: usize) -> Pools {
        Pools {
            workers: (0..crate::workers::count().max(1))
                .map(|_| Mutex::default())
                .collect(),
            h2: Mutex::default(),
            max_idle: AtomicUsize::new(max_idle),
        }
    }

    /// A reload's new `proxy.pool_max_idle`.
    pub fn set_max_idle(&self, max_idle: usize) {
        self.max_idle.store(max_idle, Ordering::Relaxed);
    }

    /// The calling worker's pool: a worker takes back only the connections its own runtime
    /// drives, and never waits on another worker's lock (see `workers`).
    fn worker(&self) -> std::sync::MutexGuard<'_, WorkerPool> {
        let worker = crate::workers::current().min(self.workers.len() - 1);
        self.workers[worker].lock().unwrap()
    }

    fn take<T>(
        &self,
        state: &Arc<BackendState>,
        list: impl Fn(&mut Idle) -> &mut Vec<T>,
        usable: impl Fn(&T) -> bool,
    ) -> Option<T> {
        // A draining backend is not selected, and is not pooled for (`put`): no check here.
        let mut pool = self.worker();
        let idle = pool.by_backend.get_mut(&key(state))?;
        let list = list(idle);
        while let Some(conn) = list.pop() {
            if usable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    fn put<T>(&self, state: &Arc<BackendState>, conn: T, list: impl Fn(&mut Idle) -> &mut Vec<T>) {
        if state.is_draining() {
            return;
        }
        let max_idle = self.max_idle.load(Ordering::Relaxed);
        let mut pool = self.worker();
        pool.checkins += 1;
        if pool.checkins.is_multiple_of(SWEEP_EVERY) {
            pool.by_backend
                .retain(|_, idle| idle.state.upgrade().is_some_and(|s| !s.is_draining()));
        }
        let idle = pool.by_backend.entry(key(state)).or_insert_with(|| Idle {
            state: Arc::downgrade(state),
            h1: Vec::new(),
            raw: Vec::new(),
        });
        let list = list(idle);
        if list.len() < max_idle {
            list.push(conn);
        }
    }

    /// An idle general-path connection, if one is still open. It may still be finishing its
    /// previous response: callers wait for `ready()`.
    pub fn checkout(&self, state: &Arc<BackendState>) -> Option<Upstream> {
        self.take(state, |i| &mut i.h1, |c| !c.is_closed())
    }

    /// Returns a connection whose last response finished.
    pub fn checkin(&self, state: &Arc<BackendState>, conn: Upstream) {
        if !conn.is_closed() {
            self.put(state, conn, |i| &mut i.h1);
        }
    }

    /// An idle fast-path socket that is still open: one the backend closed while it was idle
    /// reads as ended (or holds bytes nobody asked for) and is dropped.
    pub fn checkout_raw(&self, state: &Arc<BackendState>) -> Option<TcpStream> {
        self.take(
            state,
            |i| &mut i.raw,
            |conn| {
                let mut probe = [0u8; 1];
                matches!(conn.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            },
        )
    }

    /// Returns a fast-path socket whose exchange ended cleanly.
    pub fn checkin_raw(&self, state: &Arc<BackendState>, conn: TcpStream) {
        self.put(state, conn, |i| &mut i.raw);
    }

    /// The backend's shared HTTP/2 connection, if it is open.
    pub fn h2(&self, state: &Arc<BackendState>) -> Option<H2Upstream> {
        let mut shared = self.h2.lock().unwrap();
        let (_, sender) = shared.get(&key(state))?;
        if !sender.is_closed() && !state.is_draining() {
            return Some(sender.clone());
        }
        shared.remove(&key(state));
        None
    }

    /// Makes `sender` the backend's shared HTTP/2 connection.
    pub fn set_h2(&self, state: &Arc<BackendState>, sender: H2Upstream) {
        let mut shared = self.h2.lock().unwrap();
        shared.retain(|_, (owner, s)| !s.is_closed() && owner.strong_count() > 0);
        shared.insert(key(state), (Arc::downgrade(state), sender));
    }
}
