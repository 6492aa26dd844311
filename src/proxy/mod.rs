//! The data plane: service-port listeners and the TCP and HTTP proxies behind them.

mod admission;
pub mod basic_auth;
mod buffers;
pub mod client_hello;
pub mod dial;
pub mod exchange;
mod h1;
pub mod h1_framing;
mod h1_relay;
pub mod headers;
pub mod http;
pub mod listeners;
pub mod message;
pub mod pool;
pub mod proxy_protocol;
mod retry_budget;
pub mod rewrite;
pub mod tcp;
pub mod tls;
pub mod tls_edge;
pub mod udp;
pub mod upstream;
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

pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
