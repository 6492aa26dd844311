//! The data plane: service-port listeners and the TCP and HTTP proxies behind them.

pub mod http;
pub mod listeners;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod upstream;
pub mod upstream_h2;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::routing::store::Store;

/// What every connection handler needs.
pub struct Context {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub client_header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub access_log: bool,
    /// Replay an idempotent request without a body once on another backend when the first fails
    /// before answering.
    pub retry_idempotent: bool,
    /// UDP VIP sessions: idle time before one ends, and how many one VIP keeps.
    pub udp_idle_timeout: Duration,
    pub udp_max_sessions: usize,
    pub shutdown: Shutdown,
}

/// Counts open client connections so that SIGTERM can wait for them, and tells them to wind down.
#[derive(Default)]
pub struct Shutdown {
    open: AtomicUsize,
    idle: Notify,
    stopping: watch::Sender<bool>,
}

impl Shutdown {
    pub fn track(&self) -> Tracked<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        Tracked(self)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Asks every connection to finish: HTTP connections close after their current request.
    pub fn begin(&self) {
        self.stopping.send_replace(true);
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

pub struct Tracked<'a>(&'a Shutdown);

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle.notify_waiters();
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
