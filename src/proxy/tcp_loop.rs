//! TCP mode's own event loop: the connections of TCP-mode service ports served without a tokio
//! task or registration per socket. Each worker has one epoll set of its own (the inner set),
//! registered once with its tokio reactor and driven by one task; a connection is a slot in the
//! worker's slab with its two sockets registered edge-triggered in the inner set when they are
//! made, and closed when it ends — the close drops the registration, so no `EPOLL_CTL_DEL`, no
//! task spawned, woken or freed, no per-socket readiness allocated (benches/RESULTS.md, "TCP
//! mode's own loop", for what that saves and what it does not).
//!
//! The rules are [`super::tcp`]'s, one for one: backends tried in the balancer's order with
//! unavailable ones last, each within the connect timeout; a PROXY header sent first when the
//! port asks for one; half-closes kept; a failure on either side resets the other; the last
//! bytes before a FIN sent with it (`MSG_MORE`); a direction holds a copy buffer from the
//! worker's pool only while bytes are in flight; the idle timeout and a draining backend's cut
//! end a connection with resets. Timers are the coarse clock's milliseconds in a heap, re-armed
//! only when they fire (an idle timer is not moved per byte), with one tokio sleep for the
//! earliest. What the loop does not do stays on tokio: a port that reads PROXY headers from
//! clients, HTTP mode, and runtimes that may move a task between threads.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::proxy_protocol::Version;
use super::tcp::End;
use super::{Admission, Context};
use crate::backends::outlier::{self, Order};
use crate::backends::{ActiveGuard, BackendState};
use crate::clock::coarse_ms;
use crate::metrics::ServiceLabels;
use crate::routing::balance::Flow as FlowAddrs;
use crate::snapshot::Snapshot;
use crate::workers::Counted;

mod pump;
mod sys;
mod timers;
use pump::{Direction, Fault, Sock, pump};
use sys::{abort_fd, add, connect, local_addr, send, socket_error};
use timers::drive;

/// Events taken from the inner set per `epoll_wait`.
const BATCH: usize = 256;
/// The longest the driver sleeps without looking at its timers (a timer armed meanwhile that
/// is due earlier wakes it), and how often relayed connections are checked for a draining
/// backend.
const TICK_MS: u64 = 1000;
/// The driver's sleep is set to multiples of this: a stream of timers coming due resets it
/// at most this often.
const SLACK_MS: u64 = 16;

/// Whether TCP-mode connections of this thread can be served by the loop: only on a
/// current-thread runtime, whose tasks never move off the thread that holds the loop.
pub fn available() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// What a TCP-mode connection needs to start: everything [`super::tcp::serve`] takes, and what
/// it holds for its lifetime (its admission, its worker's count).
pub struct Start {
    pub client: std::net::TcpStream,
    pub flow: FlowAddrs,
    pub snapshot: Arc<Snapshot>,
    pub service: usize,
    pub ctx: Arc<Context>,
    pub admission: Admission,
    pub load: Counted,
}

/// Serves a TCP-mode connection on this worker's loop (see [`available`]).
pub fn start(start: Start) {
    LOOP.with(|cell| {
        let mut slot = cell.borrow_mut();
        let id = tokio::runtime::Handle::current().id();
        if slot.as_ref().is_none_or(|l| l.runtime != id) {
            match Loop::new(id) {
                Ok(l) => *slot = Some(l),
                Err(e) => {
                    tracing::warn!("tcp loop: cannot create its epoll set: {e}");
                    abort_fd(start.client.as_raw_fd());
                    return;
                }
            }
        }
        let l = slot.as_mut().expect("just made");
        l.start(start);
    });
}

thread_local! {
    static LOOP: RefCell<Option<Loop>> = const { RefCell::new(None) };
}

enum Phase {
    /// Trying backends: the table it was picked in (held until a backend answers), where the
    /// walk is, and the attempt under way.
    Connecting {
        snapshot: Arc<Snapshot>,
        order: Order,
        backend: usize,
        started: Instant,
        deadline_ms: u64,
        connect_timeout: Duration,
        send_proxy: Option<Version>,
    },
    Relaying {
        state: Arc<BackendState>,
        _active: ActiveGuard,
        up: Direction,
        down: Direction,
        /// The coarse clock at the last byte either way.
        last_ms: u64,
        /// The backend's drain deadline as last looked at.
        cut_ms: u64,
    },
}

struct Conn {
    /// Tells this connection's timers from those of one that had its slot before.
    id: u32,
    client: Sock,
    backend: Option<Sock>,
    phase: Phase,
    flow: FlowAddrs,
    service: usize,
    idle_ms: u64,
    /// The due time of this connection's live timer in the heap (`u64::MAX`: none).
    armed_ms: u64,
    ctx: Arc<Context>,
    _admission: Admission,
    _load: Counted,
}

enum Slot {
    Free(usize),
    Used(Box<Conn>),
}

/// A worker's loop: its inner epoll set, its connections, its timers.
struct Loop {
    runtime: tokio::runtime::Id,
    epoll: Arc<AsyncFd<OwnedFd>>,
    slots: Vec<Slot>,
    free: usize,
    ids: u32,
    tags: u32,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// When the driver's sleep ends, and how to wake it for an earlier timer.
    driver_wakes_ms: u64,
    driver: Option<Waker>,
    /// A timer due before `driver_wakes_ms` was armed: the driver sets its sleep again.
    rearm: bool,
    next_sweep_ms: u64,
}

const NONE: usize = usize::MAX;

impl Loop {
    fn new(runtime: tokio::runtime::Id) -> io::Result<Loop> {
        // SAFETY: creates a descriptor; checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the `OwnedFd` is the epoll set's descriptor, owned by the `AsyncFd` until it
        // drops.
        let epoll = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? };
        let epoll = Arc::new(epoll);
        tokio::spawn(drive(epoll.clone()));
        Ok(Loop {
            runtime,
            epoll,
            slots: Vec::new(),
            free: NONE,
            ids: 0,
            tags: 0,
            timers: BinaryHeap::new(),
            driver_wakes_ms: 0,
            driver: None,
            rearm: false,
            next_sweep_ms: coarse_ms() + TICK_MS,
        })
    }

    fn epfd(&self) -> RawFd {
        self.epoll.get_ref().as_raw_fd()
    }

    fn start(&mut self, s: Start) {
        let ctx = s.ctx;
        let snapshot = s.snapshot;
        let settings = ctx.settings.load();
        let svc = &snapshot.table.services[s.service];
        let idle = svc.tcp_idle_timeout.unwrap_or(settings.tcp_idle_timeout);
        let connect_timeout = svc
            .edge
            .timeouts
            .connect
            .unwrap_or(settings.connect_timeout);
        let send_proxy = svc.connection.proxy_protocol;
        let states = &snapshot.states[s.service];
        let order = Order::new(svc.balancer.candidates(s.flow, |i| states[i].load()));
        drop(settings);
        let client_fd = OwnedFd::from(s.client);
        let tag = self.tag();
        let index = self.alloc();
        let id = self.ids.wrapping_add(1);
        self.ids = id;
        if let Err(e) = add(
            self.epfd(),
            client_fd.as_raw_fd(),
            token(tag, index, CLIENT),
        ) {
            tracing::debug!("tcp loop: cannot watch a client: {e}");
            self.slots[index] = Slot::Free(self.free);
            self.free = index;
            return;
        }
        let conn = Conn {
            id,
            client: Sock::new(client_fd, tag),
            backend: None,
            phase: Phase::Connecting {
                snapshot,
                order,
                backend: 0,
                started: Instant::now(),
                deadline_ms: 0,
                connect_timeout,
                send_proxy,
            },
            flow: s.flow,
            service: s.service,
            idle_ms: idle.as_millis().min(u64::MAX as u128) as u64,
            armed_ms: u64::MAX,
            ctx,
            _admission: s.admission,
            _load: s.load,
        };
        self.slots[index] = Slot::Used(Box::new(conn));
        self.next_backend(index);
    }

    fn tag(&mut self) -> u32 {
        self.tags = self.tags.wrapping_add(1);
        self.tags
    }

    fn alloc(&mut self) -> usize {
        if self.free != NONE {
            let index = self.free;
            self.free = match self.slots[index] {
                Slot::Free(next) => next,
                Slot::Used(_) => unreachable!("a used slot on the free list"),
            };
            index
        } else {
            self.slots.push(Slot::Free(NONE));
            self.slots.len() - 1
        }
    }

    fn conn(&mut self, index: usize) -> Option<&mut Conn> {
        match self.slots.get_mut(index) {
            Some(Slot::Used(c)) => Some(c),
            _ => None,
        }
    }

    /// Frees the slot; the sockets close with the connection (resets when `abort`).
    fn finish(&mut self, index: usize, end: End) {
        let slot = std::mem::replace(&mut self.slots[index], Slot::Free(self.free));
        self.free = index;
        let Slot::Used(conn) = slot else {
            return;
        };
        if end != End::Closed {
            if let Phase::Relaying { state, .. } = &conn.phase {
                tracing::debug!(backend = %state.addr, "tcp connection broken off: {end:?}");
            }
            abort_fd(conn.client.fd.as_raw_fd());
            if let Some(b) = &conn.backend {
                abort_fd(b.fd.as_raw_fd());
            }
        }
        // The backend closes first, then the client (as `tcp::serve` drops them).
        let Conn {
            client, backend, ..
        } = *conn;
        drop(backend);
        drop(client);
    }

    /// Starts a connect to the next backend of the connection's walk; with none left, the
    /// client is reset.
    fn next_backend(&mut self, index: usize) {
        let epfd = self.epfd();
        loop {
            let tag = self.tag();
            let Some(conn) = self.conn(index) else {
                return;
            };
            let Phase::Connecting {
                snapshot,
                order,
                backend,
                started,
                deadline_ms,
                connect_timeout,
                ..
            } = &mut conn.phase
            else {
                return;
            };
            let states = &snapshot.states[conn.service];
            let Some(b) = order.next(states) else {
                let service = snapshot.table.services[conn.service].key.to_string();
                conn.ctx
                    .metrics
                    .no_backend
                    .get_or_create(&ServiceLabels { service })
                    .inc();
                // Nothing to relay to: a reset (see `tcp::serve`).
                self.finish(index, End::BackendFailed);
                return;
            };
            *backend = b;
            *started = Instant::now();
            match connect(states[b].addr, epfd, token(tag, index, BACKEND)) {
                Ok(fd) => {
                    conn.backend = Some(Sock::new(fd, tag));
                    *deadline_ms = coarse_ms() + millis(*connect_timeout);
                    let due = *deadline_ms;
                    self.arm(index, due);
                    return;
                }
                Err(e) => {
                    conn.backend = None;
                    if connect_failed(&conn.ctx, states, b, &e) {
                        // This host's shortage, not the backend's: no other is tried.
                        self.finish(index, End::BackendFailed);
                        return;
                    }
                }
            }
        }
    }

    /// The connect under way failed (`e`); on to the next backend.
    fn connect_failed(&mut self, index: usize, e: io::Error) {
        let Some(conn) = self.conn(index) else { return };
        conn.backend = None; // closed: its registration goes with it
        if let Phase::Connecting {
            snapshot, backend, ..
        } = &conn.phase
            && connect_failed(&conn.ctx, &snapshot.states[conn.service], *backend, &e)
        {
            // This host's shortage, not the backend's: no other is tried.
            self.finish(index, End::BackendFailed);
            return;
        }
        self.next_backend(index);
    }

    /// The backend answered: the PROXY header goes first, then the relay begins.
    fn connected(&mut self, index: usize) {
        let Some(conn) = self.conn(index) else { return };
        if conn.client.failed {
            // The client reset in the same batch of events: nothing goes to the backend.
            self.finish(index, End::ClientFailed);
            return;
        }
        let Phase::Connecting {
            snapshot,
            backend,
            started,
            send_proxy,
            ..
        } = &conn.phase
        else {
            return;
        };
        let send_proxy = *send_proxy;
        let state = snapshot.states[conn.service][*backend].clone();
        state.observe_connect(started.elapsed());
        state.outlier.success();
        if let Some(version) = send_proxy {
            let local = local_addr(conn.client.fd.as_raw_fd()).unwrap_or(conn.flow.local);
            let header = super::proxy_protocol::encode(version, conn.flow.client, local);
            let fd = conn.backend.as_ref().map_or(-1, |b| b.fd.as_raw_fd());
            // A new connection's send buffer takes a header whole; anything less is a failure.
            if send(fd, &header, 0).ok() != Some(header.len()) {
                self.finish(index, End::BackendFailed);
                return;
            }
        }
        let active = state.open();
        let cut_ms = cut_ms(&state);
        conn.phase = Phase::Relaying {
            state,
            _active: active,
            up: Direction::default(),
            down: Direction::default(),
            last_ms: coarse_ms(),
            cut_ms,
        };
        let due = conn.due();
        self.arm(index, due);
        self.relay(index);
    }

    /// Moves what can be moved both ways; ends the connection when the relay is over.
    fn relay(&mut self, index: usize) {
        let Some(conn) = self.conn(index) else { return };
        let Some(backend) = conn.backend.as_mut() else {
            return;
        };
        let client = &mut conn.client;
        let Phase::Relaying {
            state,
            up,
            down,
            last_ms,
            ..
        } = &mut conn.phase
        else {
            return;
        };
        let m = state.metrics.count();
        let end = match pump(up, client, backend, &m.bytes_in, (down.done, last_ms)) {
            Err(Fault::Source) => Some(End::ClientFailed),
            Err(Fault::Destination) => Some(End::BackendFailed),
            Ok(()) => match pump(down, backend, client, &m.bytes_out, (up.done, last_ms)) {
                Err(Fault::Source) => Some(End::BackendFailed),
                Err(Fault::Destination) => Some(End::ClientFailed),
                Ok(()) if up.done && down.done => Some(End::Closed),
                // A reset from a side not being read (it has sent its FIN, or its
                // destination is full) is still news.
                Ok(()) if client.failed => Some(End::ClientFailed),
                Ok(()) if backend.failed => Some(End::BackendFailed),
                Ok(()) => None,
            },
        };
        if let Some(end) = end {
            self.finish(index, end);
        }
    }

    /// Handles one event of the inner set.
    fn event(&mut self, data: u64, events: u32) {
        let (tag, index, side) = untoken(data);
        let Some(conn) = self.conn(index) else { return };
        let sock = if side == CLIENT {
            &mut conn.client
        } else {
            match conn.backend.as_mut() {
                Some(b) => b,
                None => return,
            }
        };
        if sock.tag != tag {
            return; // a socket closed earlier in this batch
        }
        sock.note(events);
        let fd = sock.fd.as_raw_fd();
        if matches!(conn.phase, Phase::Relaying { .. }) {
            self.relay(index);
        } else if side == BACKEND {
            if events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                let e = socket_error(fd).unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into());
                self.connect_failed(index, e);
            } else if events & libc::EPOLLOUT as u32 != 0 {
                self.connected(index);
            }
        } else if sock.failed {
            // The client reset while its backend connect is under way: the connect is given
            // up (charged to no backend) before the backend is sent anything.
            self.finish(index, End::ClientFailed);
        }
        // (The client's other news while connecting — bytes, a FIN — waits for the relay.)
    }
}

/// The client side's token bit, and the backend's.
const CLIENT: u64 = 0;
const BACKEND: u64 = 1;

fn token(tag: u32, index: usize, side: u64) -> u64 {
    ((tag as u64) << 32) | ((index as u64) << 1) | side
}

fn untoken(data: u64) -> (u32, usize, u64) {
    (
        (data >> 32) as u32,
        ((data & 0xffff_ffff) >> 1) as usize,
        data & 1,
    )
}

/// Counts a failed connect (`super::count_connect_failure`) and charges the backend's outlier
/// record unless it was this host's shortage; returns whether it was.
fn connect_failed(ctx: &Context, states: &[Arc<BackendState>], b: usize, e: &io::Error) -> bool {
    if super::count_connect_failure(&ctx.metrics, &states[b], e) {
        return true;
    }
    outlier::failure(states, b);
    false
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// The backend's drain deadline on the coarse clock (`u64::MAX`: it is not draining).
fn cut_ms(state: &BackendState) -> u64 {
    match state.drain_deadline() {
        None => u64::MAX,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            coarse_ms() + millis(left)
        }
    }
}
