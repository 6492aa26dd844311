//! UDP VIPs and UDP service ports (one implementation for both): datagrams relayed per client
//! flow. The first datagram of a client picks a backend
//! (consistent hashing, like TCP VIPs) and opens a session: a socket connected to that backend,
//! whose replies go back to the client from the VIP address. Sessions end after an idle timeout,
//! when their backend drains, or on an ICMP error from it (charged to the backend as a failed
//! connect, so five in a row eject it); the table of sessions is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::Context;
use super::buffers::Buffer;
use crate::metrics::ServiceLabels;
use crate::routing::balance::Flow;

/// A session's state, owned by its relay task: when the task ends (expiry, drain, an error),
/// the socket closes with it. The table holds it weakly.
struct Session {
    upstream: UdpSocket,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: AtomicU64,
}

pub async fn serve(socket: Arc<UdpSocket>, listen: SocketAddr, ctx: Arc<Context>) {
    ctx.serving.wait().await;
    let epoch = Instant::now();
    let mut sessions: HashMap<SocketAddr, Weak<Session>> = HashMap::new();
    // Ended sessions' entries are swept when the table has grown this large since the last
    // sweep (or is full), so the table tracks the live sessions.
    let mut sweep_at = 64;
    let mut buf = vec![0u8; super::buffers::UDP];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%listen, "udp recv: {e}");
                continue;
            }
        };
        let now = epoch.elapsed().as_millis() as u64;
        let session = match sessions.get(&client).and_then(Weak::upgrade) {
            Some(session) => session,
            None => {
                let max_sessions = ctx.settings.load().udp_max_sessions;
                if sessions.len() >= max_sessions.min(sweep_at) {
                    sessions.retain(|_, s| s.strong_count() > 0);
                    sweep_at = (sessions.len() * 2).max(64);
                }
                if sessions.len() >= max_sessions && !sessions.contains_key(&client) {
                    tracing::debug!(%listen, "udp session table full: datagram dropped");
                    continue;
                }
                match open(&socket, listen, client, &ctx, epoch).await {
                    Some(session) => {
                        tracing::debug!(%listen, %client, sessions = sessions.len() + 1, "udp session opened");
                        sessions.insert(client, Arc::downgrade(&session));
                        session
                    }
                    None => continue,
                }
            }
        };
        session.last.store(now, Ordering::Relaxed);
        // (Not `try_send`: a socket new to the event loop has no readiness yet and would drop
        // the flow's first datagram.) A UDP send waits only while the socket buffer is full.
        let _ = session.upstream.send(&buf[..len]).await;
    }
}

/// Picks a backend for a new client flow and starts relaying its replies; the session lives as
/// long as the returned handle or its relay task, whichever is longer.
async fn open(
    socket: &Arc<UdpSocket>,
    listen: SocketAddr,
    client: SocketAddr,
    ctx: &Arc<Context>,
    epoch: Instant,
) -> Option<Arc<Session>> {
    let (state, addr) = {
        let snapshot = ctx.store.load();
        let &index = snapshot.table.udp.get(&listen)?;
        let service = &snapshot.table.services[index];
        let states = &snapshot.states[index];
        let flow = Flow {
            client,
            local: listen,
        };
        // Backends down by active probes or ejected are passed over while another is left.
        let candidates = service.balancer.candidates(flow, |i| states[i].load());
        let Some(b) = crate::backends::outlier::ordered(states, candidates).next() else {
            let labels = ServiceLabels {
                service: service.key.to_string(),
            };
            ctx.metrics.no_backend.get_or_create(&labels).inc();
            return None;
        };
        (states[b].clone(), states[b].addr)
    };
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .ok()?;
    let upstream = UdpSocket::bind(local).await.ok()?;
    if upstream.connect(addr).await.is_err() {
        state.metrics.count().connect_failures.inc();
        return None;
    }
    let session = Arc::new(Session {
        upstream,
        last: AtomicU64::new(epoch.elapsed().as_millis() as u64),
    });
    let (relay, socket, idle, ctx) = (
        session.clone(),
        socket.clone(),
        ctx.settings.load().udp_idle_timeout,
        ctx.clone(),
    );
    let active = state.open();
    tokio::spawn(async move {
        loop {
            let idle_for = Duration::from_millis(
                (epoch.elapsed().as_millis() as u64)
                    .saturating_sub(relay.last.load(Ordering::Relaxed)),
            );
            let Some(left) = idle.checked_sub(idle_for) else {
                break;
            };
            tokio::select! {
                // ERROR too: an ICMP error on a connected UDP socket raises only EPOLLERR,
                // which readable() alone would never see.
                ready = relay.upstream.ready(Interest::READABLE | Interest::ERROR) => {
                    let Ok(ready) = ready else {
                        break;
                    };
                    if ready.is_error() {
                        // (The receive below would see only that the socket is not readable.)
                        let error = relay.upstream.take_error().ok().flatten();
                        if error.as_ref().is_some_and(icmp_error) {
                            charge_unreachable(&ctx, listen, &state);
                        }
                        break;
                    }
                    // A buffer only while a reply is on its way.
                    let mut buf = Buffer::udp();
                    match relay.upstream.try_recv_buf(buf.vec()) {
                        Ok(n) => {
                            relay.last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                            state.metrics.count().bytes_out.inc_by(n as u64);
                            state.outlier.success();
                            let _ = socket.send_to(&buf, client).await;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            // An ICMP error on the connected socket (port or host unreachable):
                            // the backend is not serving. The session ends, and the client's
                            // next datagram opens a new one, which passes an ejected backend over.
                            if icmp_error(&e) {
                                charge_unreachable(&ctx, listen, &state);
                            }
                            break;
                        }
                    }
                }
                _ = tokio::time::sleep(left) => {}
                _ = state.drained() => break,
            }
        }
        // The socket closes here (unless a datagram is being sent on it this moment).
        drop(relay);
        drop(active);
    });
    Some(session)
}

/// Whether a receive error on a connected UDP socket is the kernel reporting an ICMP error from
/// the backend (Linux queues them on the socket: `ECONNREFUSED` for port unreachable,
/// `EHOSTUNREACH`/`ENETUNREACH` for the host or network).
fn icmp_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | HostUnreachable | NetworkUnreachable
    )
}

/// Charges an unreachable backend as a failed connect, to its state in the table serving now
/// (the session may have outlived the table it was opened from; a backend gone from the table
/// needs no verdict).
fn charge_unreachable(
    ctx: &Context,
    listen: SocketAddr,
    state: &Arc<crate::backends::BackendState>,
) {
    state.metrics.count().connect_failures.inc();
    let snapshot = ctx.store.load();
    let Some(&index) = snapshot.table.udp.get(&listen) else {
        return;
    };
    let states = &snapshot.states[index];
    if let Some(b) = states.iter().position(|s| Arc::ptr_eq(s, state)) {
        crate::backends::outlier::failure(states, b);
    }
}
