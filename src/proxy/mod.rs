//! The data plane: service-port listeners and the TCP and HTTP proxies behind them.

pub mod access_log;
mod admission;
pub mod basic_auth;
mod buffers;
pub mod client_hello;
mod coarse_timer;
pub mod dial;
pub mod errors;
pub mod exchange;
mod h1;
pub mod h1_framing;
mod h1_relay;
pub mod h2_frames;
mod h2_server;
pub mod h2codec;
pub mod headers;
pub mod http;
pub mod limits;
pub mod listeners;
pub mod message;
pub mod pool;
pub mod proxy_protocol;
pub mod request_body;
mod retry_budget;
pub mod rewrite;
pub mod tcp;
mod tcp_loop;
pub mod tls;
pub mod tls_edge;
pub mod trace;
mod tunnel;
pub mod udp;
pub mod upstream;
pub mod upstream_h1;
pub mod upstream_h2;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

pub use self::admission::{Admission, Gate, ListenerSlots};
pub use self::retry_budget::RetryBudget;
use crate::metrics::Metrics;
use crate::snapshot::Store;

/// What every connection handler needs.
pub struct Context {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Idle backend connections, for reuse.
    pub pools: Arc<pool::Pools>,
    /// The reloadable knobs; a connection reads them once, when it starts.
    pub settings: ArcSwap<Settings>,
    pub shutdown: Shutdown,
    /// Shared by every HTTP replay: retries stay within a fraction of the requests.
    pub retry_budget: RetryBudget,
    /// Closed while a new process, taking over from an old one, is not ready to serve: nothing
    /// is accepted until it opens.
    pub serving: Gate,
    /// The admin token (`admin.token_file`, read at start like the admin API's): a request
    /// carrying it in `Switchyard-Trace` is answered with its trace (`trace`). `None`: no
    /// request is traced.
    pub trace_token: Option<Box<str>>,
    /// Wrong secrets per client address, shared with the admin API: a wrong
    /// `Switchyard-Trace` is a wrong guess of the admin token, and an address refused there is
    /// not traced here either (else the trace would answer yes or no to guesses at the speed
    /// of the network).
    pub guesses: Arc<crate::access::Guesses>,
}

impl Context {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, settings: Settings) -> Context {
        Context {
            store,
            metrics,
            pools: Arc::new(pool::Pools::new(settings.max_idle_per_backend)),
            settings: ArcSwap::from_pointee(settings),
            shutdown: Shutdown::default(),
            retry_budget: RetryBudget::default(),
            serving: Gate::open(),
            trace_token: None,
            guesses: Arc::default(),
        }
    }
}

/// The proxy's knobs from the configuration, swapped whole on a reload: connections opened
/// after it use the new values, open ones keep theirs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub client_header_timeout: Duration,
    /// TCP mode: no byte either way for this long ends a connection (a port's label may say
    /// otherwise).
    pub tcp_idle_timeout: Duration,
    /// The same for the tunnel of an upgraded HTTP connection.
    pub tunnel_idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub access_log: bool,
    /// Replay an idempotent request without a body once on another backend when the first fails
    /// before answering.
    pub retry_idempotent: bool,
    /// UDP VIP sessions: idle time before one ends, and how many one VIP keeps.
    pub udp_idle_timeout: Duration,
    pub udp_max_sessions: usize,
    /// Open client connections allowed per listener, and in all.
    pub max_connections_per_listener: usize,
    pub max_connections: usize,
    /// Idle connections kept per backend, per worker and kind (`pool`).
    pub max_idle_per_backend: usize,
    /// How long open connections may finish after a stop (SIGTERM, an upgrade's handover).
    pub drain_timeout: Duration,
    /// PROXY protocol per listener kind and the trusted forwarding proxies.
    pub edge: proxy_protocol::EdgeSettings,
    /// `http.error_page_*`: the pages of 502, 503 and 504 for apps without their own.
    pub error_pages: crate::routing::edge::ErrorPages,
}

#[cfg(test)]
impl Settings {
    /// The defaults, for unit tests that build a context without a configuration.
    pub fn for_tests() -> Settings {
        Settings {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(3600),
            tunnel_idle_timeout: Duration::from_secs(3600),
            max_header_bytes: 65536,
            max_headers: 100,
            access_log: false,
            retry_idempotent: true,
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_sessions: 1024,
            max_connections_per_listener: 10_000,
            max_connections: 100_000,
            max_idle_per_backend: 1024,
            drain_timeout: Duration::from_secs(30),
            edge: proxy_protocol::EdgeSettings::default(),
            error_pages: Default::default(),
        }
    }
}

/// Counts open client connections so that SIGTERM can wait for them, and tells them to wind down.
#[derive(Default)]
pub struct Shutdown {
    open: AtomicUsize,
    idle: Notify,
    stopping: watch::Sender<bool>,
}

impl Shutdown {
    /// Counts a connection in; returns how many are open with it.
    pub fn acquire(&self) -> usize {
        self.open.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn release(&self) {
        if self.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Asks every connection to finish: HTTP connections close after their current request.
    pub fn begin(&self) {
        self.stopping.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    pub async fn stopping(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Waits until no connection is open.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A nonblocking socket with `TCP_NODELAY` whose connect to `addr` has begun (or is done): the
/// caller watches it for writability. Shared by [`connect`] and TCP mode's own loop.
pub(crate) fn start_connect(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket)
}

/// Whether a failed backend connect was this host's own shortage rather than the backend's
/// fault: out of file descriptors (process or system), of socket buffers or memory, or of
/// ephemeral ports. Such a failure is never charged to a backend (its `connect_failures`, its
/// outlier record) and ends the walk over the candidates, since each would fail alike: a
/// client that holds the proxy's descriptors must not get healthy backends ejected.
pub(crate) fn local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// A backend connection that was not made, and whose fault that was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotConnected {
    /// Refused, timed out, or a failed handshake: the backend's.
    Backend,
    /// This host's shortage ([`local_shortage`]): no backend's.
    Local,
}

/// Counts a failed connect to `state`'s backend where it belongs: on the backend
/// (`connect_failures`), or, for [`local_shortage`], in `local_connect_failures` with a
/// warning at most once a second per thread. Returns whether it was a local shortage.
pub(crate) fn count_connect_failure(
    metrics: &crate::metrics::Metrics,
    state: &crate::backends::BackendState,
    e: &io::Error,
) -> bool {
    if local_shortage(e) {
        metrics.local_connect_failures.inc();
        thread_local!(static WARNED: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) });
        let now = std::time::Instant::now();
        if WARNED
            .get()
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            WARNED.set(Some(now));
            tracing::warn!(backend = %state.addr, "connect failed for want of local resources, not the backend's fault: {e}");
        }
        return true;
    }
    state.metrics.count().connect_failures.inc();
    tracing::debug!(backend = %state.addr, "connect failed: {e}");
    false
}

/// [`count_connect_failure`] as a [`NotConnected`].
pub(crate) fn connect_failure(
    metrics: &crate::metrics::Metrics,
    state: &crate::backends::BackendState,
    e: &io::Error,
) -> NotConnected {
    if count_connect_failure(metrics, state, e) {
        NotConnected::Local
    } else {
        NotConnected::Backend
    }
}

/// A connection to a backend, with `TCP_NODELAY`. Made by hand rather than by
/// `TcpStream::connect`: a connect that completes is seen as writable without the `SO_ERROR`
/// query that one makes every time; the error is fetched only when the socket reports one.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = start_connect(addr)?;
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    let ready = tokio::time::timeout(
        timeout,
        stream.ready(tokio::io::Interest::WRITABLE | tokio::io::Interest::ERROR),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend connect: made with TCP_NODELAY; a refusal is reported as one (without the
    /// `SO_ERROR` query on success, the error must still come through); a backend whose accept
    /// queue is full (its SYNs dropped) runs into the timeout.
    #[tokio::test]
    async fn connect_succeeds_is_refused_or_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect(addr, Duration::from_secs(5)).await.unwrap();
        assert!(stream.nodelay().unwrap());
        drop(listener);
        let refused = connect(addr, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(
            refused.kind(),
            io::ErrorKind::ConnectionRefused,
            "{refused}"
        );

        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        let timed_out = loop {
            assert!(queued.len() < 16, "the accept queue never filled");
            match connect(addr, Duration::from_millis(200)).await {
                Ok(stream) => queued.push(stream),
                Err(e) => break e,
            }
        };
        assert_eq!(timed_out.kind(), io::ErrorKind::TimedOut, "{timed_out}");
    }
}
