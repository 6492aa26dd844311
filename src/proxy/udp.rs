//! UDP VIPs: datagrams relayed per client flow. The first datagram of a client picks a backend
//! (consistent hashing, like TCP VIPs) and opens a session: a socket connected to that backend,
//! whose replies go back to the client from the VIP address. Sessions end after an idle timeout
//! or when their backend drains; the table of sessions is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::Context;
use crate::metrics::ServiceLabels;
use crate::routing::balance::Flow;

struct Session {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
}

pub async fn serve(socket: Arc<UdpSocket>, listen: SocketAddr, ctx: Arc<Context>) {
    ctx.serving.wait().await;
    let epoch = Instant::now();
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%listen, "udp recv: {e}");
                continue;
            }
        };
        let now = epoch.elapsed().as_millis() as u64;
        if sessions
            .get(&client)
            .is_some_and(|s| s.closed.load(Ordering::Relaxed))
        {
            sessions.remove(&client);
        }
        if !sessions.contains_key(&client) {
            let max_sessions = ctx.settings.load().udp_max_sessions;
            if sessions.len() >= max_sessions {
                sessions.retain(|_, s| !s.closed.load(Ordering::Relaxed));
            }
            if sessions.len() >= max_sessions {
                tracing::debug!(%listen, "udp session table full: datagram dropped");
                continue;
            }
            match open(&socket, listen, client, &ctx, epoch).await {
                Some(session) => {
                    tracing::debug!(%listen, %client, sessions = sessions.len() + 1, "udp session opened");
                    sessions.insert(client, session);
                }
                None => continue,
            }
        }
        let session = &sessions[&client];
        session.last.store(now, Ordering::Relaxed);
        // (Not `try_send`: a socket new to the event loop has no readiness yet and would drop
        // the flow's first datagram.) A UDP send waits only while the socket buffer is full.
        let _ = session.upstream.send(&buf[..len]).await;
    }
}

/// Picks a backend for a new client flow and starts relaying its replies.
async fn open(
    socket: &Arc<UdpSocket>,
    listen: SocketAddr,
    client: SocketAddr,
    ctx: &Arc<Context>,
    epoch: Instant,
) -> Option<Session> {
    let (state, addr) = {
        let snapshot = ctx.store.load();
        let &index = snapshot.table.udp.get(&listen)?;
        let service = &snapshot.table.services[index];
        let states = &snapshot.states[index];
        let flow = Flow {
            client,
            local: listen,
        };
        let Some(b) = service
            .balancer
            .candidates(flow, |i| states[i].load())
            .next()
        else {
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
        state.metrics.connect_failures.inc();
        return None;
    }
    let upstream = Arc::new(upstream);
    let session = Session {
        upstream: upstream.clone(),
        last: Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64)),
        closed: Arc::new(AtomicBool::new(false)),
    };
    let (last, closed, socket, idle) = (
        session.last.clone(),
        session.closed.clone(),
        socket.clone(),
        ctx.settings.load().udp_idle_timeout,
    );
    let active = state.open();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let idle_for = Duration::from_millis(
                epoch.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed),
            );
            let Some(left) = idle.checked_sub(idle_for) else {
                break;
            };
            tokio::select! {
                received = upstream.recv(&mut buf) => match received {
                    Ok(n) => {
                        last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        state.metrics.bytes_out.inc_by(n as u64);
                        let _ = socket.send_to(&buf[..n], client).await;
                    }
                    Err(_) => break, // e.g. the backend's port is closed (ICMP unreachable)
                },
                _ = tokio::time::sleep(left) => {}
                _ = state.drained() => break,
            }
        }
        closed.store(true, Ordering::Relaxed);
        drop(active);
    });
    Some(session)
}
