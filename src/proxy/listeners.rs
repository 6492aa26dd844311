//! The set of open service-port listeners, reconciled with each new table: new ports open in the
//! same swap, removed ports stop accepting (their connections carry on and drain), ports that
//! cannot be bound are reported once and retried at the next swap. The reconciler calls it from
//! the control plane's thread; every worker of the data plane accepts on each TCP port (see
//! `workers`), and a UDP VIP is served by the first worker.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::admission::refused_http;
use super::{Context, ListenerSlots, http, proxy_protocol, tcp, tcp_loop, udp};
use crate::routing::{Mode, RoutingTable};
use crate::workers::Workers;

mod bind;
pub use bind::{bind, bind_std_udp, bind_udp, bind_unregistered};

pub struct Listeners {
    /// Each port's accept loops, one per worker.
    open: HashMap<SocketAddr, Vec<JoinHandle<()>>>,
    /// UDP VIP sockets, by address.
    udp: HashMap<SocketAddr, JoinHandle<()>>,
    /// Ports that failed to bind, with why; shared with the admin API.
    failed: Arc<Mutex<BTreeMap<SocketAddr, String>>>,
    ctx: Arc<Context>,
    workers: Arc<Workers>,
}

impl Listeners {
    pub fn new(ctx: Arc<Context>, workers: Arc<Workers>) -> Listeners {
        Listeners {
            open: HashMap::new(),
            udp: HashMap::new(),
            failed: Arc::default(),
            ctx,
            workers,
        }
    }

    pub fn failures(&self) -> Arc<Mutex<BTreeMap<SocketAddr, String>>> {
        self.failed.clone()
    }

    pub fn reconcile(&mut self, table: &RoutingTable) {
        // New sockets register with the first worker's reactor (the others register duplicates).
        let _data_plane = self.workers.first().enter();
        self.open.retain(|addr, accepts| {
            let keep = table.by_listen.contains_key(addr);
            if !keep {
                tracing::info!(listen = %addr, "service port removed: stopped accepting");
                accepts.iter().for_each(JoinHandle::abort);
            }
            keep
        });
        let mut failed = self.failed.lock().unwrap();
        failed.retain(|addr, _| table.by_listen.contains_key(addr));
        self.udp.retain(|addr, relay| {
            let keep = table.udp.contains_key(addr);
            if !keep {
                relay.abort();
            }
            keep
        });
        for &listen in table.udp.keys() {
            if self.udp.contains_key(&listen) {
                continue;
            }
            match bind_udp(listen) {
                Ok(socket) => {
                    tracing::info!(listen = %listen, "UDP VIP open");
                    let relay =
                        self.workers
                            .first()
                            .spawn(udp::serve(socket, listen, self.ctx.clone()));
                    self.udp.insert(listen, relay);
                }
                Err(e) => {
                    let reason = format!("udp: {e}");
                    if failed.get(&listen) != Some(&reason) {
                        tracing::warn!(listen = %listen, "cannot bind UDP VIP: {e}");
                        self.ctx.metrics.reject("bind");
                    }
                    failed.insert(listen, reason);
                }
            }
        }
        for service in &table.services {
            if service.mode == Mode::Udp {
                continue;
            }
            let Some(listen) = service.listen else {
                continue;
            };
            if self.open.contains_key(&listen) {
                continue;
            }
            let (ctx, slots) = (&self.ctx, Arc::new(ListenerSlots::default()));
            let accepting = bind_unregistered(listen).and_then(|listener| {
                self.workers
                    .accept_everywhere_unregistered(listener, |listener| {
                        let shared = (slots.clone(), self.workers.clone());
                        accept_loop(listener, listen, ctx.clone(), shared)
                    })
            });
            match accepting {
                Ok(accepts) => {
                    failed.remove(&listen);
                    tracing::info!(listen = %listen, service = %service.key, "service port open");
                    self.open.insert(listen, accepts);
                }
                Err(e) => {
                    let reason = e.to_string();
                    if failed.get(&listen) != Some(&reason) {
                        tracing::warn!(listen = %listen, app_id = %service.key.app_id,
                            "cannot bind service port: {reason}");
                        self.ctx.metrics.listener_bind_failures.inc();
                        self.ctx.metrics.reject("bind");
                    }
                    failed.insert(listen, reason);
                }
            }
        }
    }

    /// Stops accepting everywhere (SIGTERM); open connections carry on.
    pub fn close_all(&mut self) {
        for (_, accepts) in self.open.drain() {
            accepts.iter().for_each(JoinHandle::abort);
        }
        for (_, relay) in self.udp.drain() {
            relay.abort();
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Every port the last reconciled table asked for is open (none failed to bind): a table
    /// that listens where that one did needs no reconciling.
    pub fn all_open(&self) -> bool {
        self.failed.lock().unwrap().is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Accepts the next connection, once the process serves (see [`super::Gate`]); backs off when
/// accepting fails (out of file descriptors) instead of spinning.
async fn next(listener: &TcpListener, name: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(listener = name, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connections accepted per readiness before the accept loop lets the worker's other tasks run.
const ACCEPT_BATCH: usize = 64;

/// A service port's accept loop (one per worker; they share the port's `slots`). Connections
/// are accepted by hand (`accept4`, nonblocking from the start) and registered only where they
/// are served: TCP mode's own loop (`tcp_loop`), or this worker's reactor.
async fn accept_loop(
    listener: AsyncFd<std::net::TcpListener>,
    listen: SocketAddr,
    ctx: Arc<Context>,
    (slots, workers): (Arc<ListenerSlots>, Arc<Workers>),
) {
    ctx.serving.wait().await;
    let name = listen.to_string();
    loop {
        let mut ready = match listener.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::warn!(listener = name, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut accepted = 0;
        while accepted < ACCEPT_BATCH {
            match accept4(listener.get_ref()) {
                Ok((stream, peer)) => {
                    accepted += 1;
                    admit(stream, peer, listen, (&ctx, &slots, &workers), &name);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    ready.clear_ready();
                    break;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(listener = name, "accept failed: {e}");
                    drop(ready);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    break;
                }
            }
        }
        if accepted == ACCEPT_BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// A nonblocking, close-on-exec connection from `listener`'s queue.
fn accept4(listener: &std::net::TcpListener) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let listener = listener.as_raw_fd();
    // SAFETY: `accept4` writes at most `len` bytes of address into the storage it is given.
    let (fd, peer) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let fd = libc::accept4(
                listener,
                storage.cast(),
                len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(fd)
        })?
    };
    // SAFETY: a new descriptor, owned from here by the stream.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = peer
        .as_socket()
        .ok_or_else(|| std::io::Error::other("accepted a connection without an IP address"))?;
    Ok((stream, peer))
}

/// An accepted connection: admitted or refused by the limits (over one, a TCP connection is
/// closed at once: the client sees it end, not hang), then served — in TCP mode on this
/// worker's loop when it can be (`tcp_loop::available`) and the port reads no PROXY headers,
/// else as a tokio task.
fn admit(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    (ctx, slots, workers): (&Arc<Context>, &Arc<ListenerSlots>, &Arc<Workers>),
    name: &str,
) {
    let mode = {
        let snapshot = ctx.store.load();
        let route = snapshot.table.route_at(listen);
        route.map(|r| snapshot.table.services[r.first()].mode)
    };
    let Ok(admission) = ctx.admit(slots, name) else {
        if mode == Some(Mode::Http)
            && let Ok(stream) = TcpStream::from_std(stream)
        {
            refuse_http(stream);
        }
        return;
    };
    let ctx = ctx.clone();
    if mode == Some(Mode::Tcp) && !ctx.settings.load().edge.ports.enabled() && tcp_loop::available()
    {
        workers.serve_unregistered(stream, move |stream, load| {
            serve_in_loop(stream, (peer, listen), ctx, admission, load)
        });
        return;
    }
    match TcpStream::from_std(stream) {
        Ok(stream) => workers.serve(stream, move |stream| {
            serve(stream, peer, listen, ctx, admission)
        }),
        Err(e) => tracing::debug!(listener = name, "cannot register a connection: {e}"),
    }
}

/// [`serve`]'s TCP mode on the worker's own loop; what the loop does not do (the table or the
/// settings changed since the connection was accepted) goes to [`serve`].
fn serve_in_loop(
    stream: std::net::TcpStream,
    (peer, listen): (SocketAddr, SocketAddr),
    ctx: Arc<Context>,
    admission: super::Admission,
    load: crate::workers::Counted,
) {
    let snapshot = ctx.store.load_full();
    let route = snapshot.table.route_at(listen);
    let tcp = route.is_some_and(|r| snapshot.table.services[r.first()].mode == Mode::Tcp);
    if !tcp || ctx.settings.load().edge.ports.enabled() {
        drop(snapshot);
        if let Ok(stream) = TcpStream::from_std(stream) {
            tokio::spawn(async move {
                let _load = load;
                Box::pin(serve(stream, peer, listen, ctx, admission)).await
            });
        }
        return;
    }
    let route = route.expect("checked above");
    let Some(service) = route.pick(None, &snapshot.table.services) else {
        // No app of the route has a backend: refuse promptly.
        let service = snapshot.table.services[route.first()].key.to_string();
        ctx.metrics
            .no_backend
            .get_or_create(&crate::metrics::ServiceLabels { service })
            .inc();
        // A reset, as `tcp::serve` ends a connection with no backend: a client must not take
        // the close for an empty but complete answer.
        tcp::abort(&stream);
        return;
    };
    let flow = crate::routing::balance::Flow {
        client: peer,
        local: listen,
    };
    tcp_loop::start(tcp_loop::Start {
        client: stream,
        flow,
        snapshot,
        service,
        ctx,
        admission,
        load,
    });
}

/// A connection refused by a limit on an HTTP listener hears why. The request is not read, but
/// what the client sent is drained for a moment after the answer: closing with unread bytes
/// would send a reset, which can destroy the answer before the client reads it.
fn refuse_http(stream: TcpStream) {
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let linger = async {
            stream.write_all(&refused_http()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), linger).await;
    });
}

/// Serves a shared HTTP listener (vhosts, or the app-id listener) in every worker; it stops
/// accepting when switchyard stops.
pub fn serve_http(
    workers: &Arc<Workers>,
    listener: Arc<TcpListener>,
    (entry, protocol): (http::Entry, http::Protocol),
    ctx: &Arc<Context>,
) -> std::io::Result<()> {
    let slots = Arc::new(ListenerSlots::default());
    workers.accept_everywhere(listener, |listener| {
        let shared = (slots.clone(), workers.clone());
        accept_http(listener, entry, protocol, ctx.clone(), shared)
    })?;
    Ok(())
}

/// Serves a shared HTTPS listener in every worker; it stops accepting when switchyard stops.
pub fn serve_https(
    workers: &Arc<Workers>,
    listener: Arc<TcpListener>,
    (tls, handshake_timeout): (&Arc<super::tls_edge::HttpsTls>, std::time::Duration),
    ctx: &Arc<Context>,
) -> std::io::Result<()> {
    let slots = Arc::new(ListenerSlots::default());
    workers.accept_everywhere(listener, |listener| {
        let shared = (slots.clone(), workers.clone());
        accept_https(
            listener,
            tls.clone(),
            handshake_timeout,
            ctx.clone(),
            shared,
        )
    })?;
    Ok(())
}

/// A shared HTTP listener's accept loop in one worker; the workers share the listener's
/// `slots`.
async fn accept_http(
    listener: Arc<TcpListener>,
    entry: http::Entry,
    protocol: http::Protocol,
    ctx: Arc<Context>,
    (slots, workers): (Arc<ListenerSlots>, Arc<Workers>),
) {
    ctx.serving.wait().await;
    let name = format!("{entry:?}");
    // The address clients connect to (X-Forwarded-Port, a PROXY header to backends): the
    // bound one, also when port 0 was asked.
    let bound = bound_address(&listener);
    loop {
        let (stream, peer) = tokio::select! {
            a = next(&listener, &name) => a,
            _ = ctx.shutdown.stopping() => return,
        };
        let Ok(admission) = ctx.admit(&slots, &name) else {
            refuse_http(stream);
            continue;
        };
        let ctx = ctx.clone();
        workers.serve(stream, move |mut stream| async move {
            let _admission = admission;
            // The client's address: the PROXY header's, from a source that sends them.
            let settings = ctx.settings.load_full();
            let accept = &settings.edge.http;
            let Ok((peer, to)) =
                proxy_protocol::client_address(&mut stream, peer, accept, true, &ctx.metrics).await
            else {
                return;
            };
            drop(settings);
            let dest = to.unwrap_or_else(|| connected_to(&stream, bound));
            match (entry, protocol) {
                // Boxed: see `serve`.
                (http::Entry::Vhost { .. }, http::Protocol::Http1 | http::Protocol::Auto) => {
                    let h2c = protocol == http::Protocol::Auto;
                    let serving =
                        super::h1::serve_h1_or_h2c(stream, (peer, dest), entry, h2c, ctx.clone());
                    Box::pin(serving).await
                }
                _ => {
                    let serving = http::serve(stream, (peer, dest), entry, protocol, ctx.clone());
                    Box::pin(serving).await
                }
            }
        });
    }
}

/// The address a listener is bound to (the port the system chose when 0 was asked); a
/// listener whose address cannot be read names the unspecified one.
fn bound_address(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// The address a connection came in on, as TCP mode's PROXY header names it: the listener's
/// when it is bound to one, else (a wildcard bind, `0.0.0.0` or `[::]`) the connection's own,
/// read once (one `getsockname`, only on wildcard listeners).
fn connected_to(stream: &TcpStream, listener: SocketAddr) -> SocketAddr {
    if !listener.ip().is_unspecified() {
        return listener;
    }
    stream.local_addr().unwrap_or(listener)
}

/// A shared HTTPS listener's accept loop in one worker: TLS handshake (bounded in time), then
/// HTTP/2 or HTTP/1.1 as ALPN chose.
async fn accept_https(
    listener: Arc<TcpListener>,
    tls: Arc<super::tls_edge::HttpsTls>,
    handshake_timeout: std::time::Duration,
    ctx: Arc<Context>,
    (slots, workers): (Arc<ListenerSlots>, Arc<Workers>),
) {
    ctx.serving.wait().await;
    let bound = bound_address(&listener);
    loop {
        let (stream, peer) = tokio::select! {
            a = next(&listener, "https") => a,
            _ = ctx.shutdown.stopping() => return,
        };
        // Before the handshake nothing can be said to the client: refused, it is closed.
        let Ok(admission) = ctx.admit(&slots, "https") else {
            continue;
        };
        let (ctx, tls) = (ctx.clone(), tls.clone());
        workers.serve(stream, move |mut stream| async move {
            let _admission = admission;
            let settings = ctx.settings.load_full();
            let accept = &settings.edge.https;
            let Ok((peer, to)) =
                proxy_protocol::client_address(&mut stream, peer, accept, true, &ctx.metrics).await
            else {
                return;
            };
            drop(settings);
            let dest = to.unwrap_or_else(|| connected_to(&stream, bound));
            // Passthrough by SNI, or which configuration terminates (client certificates).
            let decision =
                super::tls_edge::decide(stream, (peer, to), &tls, &ctx, handshake_timeout).await;
            let super::tls_edge::Decision::Terminate(stream, acceptor, client_ca) = decision else {
                return;
            };
            let stream =
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        ctx.metrics.tls_handshake_failures.inc();
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        ctx.metrics.tls_handshake_failures.inc();
                        return;
                    }
                };
            let entry = http::Entry::Vhost { https: true };
            // A verified client certificate: its subject, and the CA that verified it.
            let cert = match client_ca {
                None => None,
                Some(ca) => {
                    let subject = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|der| super::tls_edge::subject(der))
                        .and_then(|s| ::http::HeaderValue::from_str(&s).ok());
                    let Some(subject) = subject else {
                        // The verifier required one: nothing to forward is a bug, not a pass.
                        return;
                    };
                    Some(http::ClientCert { subject, ca })
                }
            };
            match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => {
                    let protocol = http::Protocol::Http2;
                    Box::pin(http::serve_verified(
                        stream,
                        (peer, dest, cert),
                        entry,
                        protocol,
                        ctx,
                    ))
                    .await
                }
                _ if cert.is_some() => {
                    let protocol = http::Protocol::Http1;
                    Box::pin(http::serve_verified(
                        stream,
                        (peer, dest, cert),
                        entry,
                        protocol,
                        ctx,
                    ))
                    .await
                }
                _ => Box::pin(super::h1::serve(stream, (peer, dest), entry, ctx)).await,
            }
        });
    }
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    ctx: Arc<Context>,
    _admission: super::Admission,
) {
    let settings = ctx.settings.load_full();
    let accept = &settings.edge.ports;
    let mode = {
        let snapshot = ctx.store.load();
        let Some(route) = snapshot.table.route_at(listen) else {
            return;
        };
        // The route's apps share a port, so they share its protocol: the first one's says which.
        snapshot.table.services[route.first()].mode
    };
    // The client's address: the PROXY header's, on a port that reads them.
    let (client, to) = match mode {
        Mode::Udp => return, // UDP services have no TCP listener
        Mode::Tcp | Mode::Http => {
            let speaks_first = mode == Mode::Http;
            match proxy_protocol::client_address(
                &mut stream,
                peer,
                accept,
                speaks_first,
                &ctx.metrics,
            )
            .await
            {
                Ok(addresses) => addresses,
                Err(()) => return,
            }
        }
    };
    let snapshot = ctx.store.load_full();
    let Some(route) = snapshot.table.route_at(listen) else {
        return;
    };
    match snapshot.table.services[route.first()].mode {
        Mode::Tcp => {
            let Some(service) = route.pick(None, &snapshot.table.services) else {
                // No app of the route has a backend: refuse promptly.
                let service = snapshot.table.services[route.first()].key.to_string();
                ctx.metrics
                    .no_backend
                    .get_or_create(&crate::metrics::ServiceLabels { service })
                    .inc();
                tcp::abort(&stream); // a reset, as in `serve_in_loop`
                return;
            };
            let flow = crate::routing::balance::Flow {
                client,
                local: listen,
            };
            // Boxed, here and below: the task's own future stays small, and tokio copies a
            // task's future whole when it spawns and finishes it (a few KiB per connection).
            Box::pin(tcp::serve(
                stream,
                flow,
                snapshot,
                service,
                &ctx,
                (accept, peer, to),
            ))
            .await
        }
        Mode::Udp => {}
        Mode::Http => {
            drop(snapshot);
            let dest = to.unwrap_or_else(|| connected_to(&stream, listen));
            Box::pin(super::h1::serve(
                stream,
                (client, dest),
                http::Entry::Port(listen),
                ctx.clone(),
            ))
            .await
        }
    }
}

#[cfg(test)]
mod tests;
