//! TCP mode: pick a backend (falling through on connect failure) and move bytes both ways,
//! unchanged, counting them. Shared by service ports, TCP VIPs and (see [`relay_io`]) the
//! tunnels of HTTP upgrades. Service ports and TCP VIPs are served by the same rules on each
//! worker's own event loop (`tcp_loop`) when they can be; [`serve`] serves the rest (ports that
//! read PROXY headers from clients, TLS passthrough by SNI).
//!
//! - A clean close is passed on as a clean close (FIN), each direction on its own: half-closes
//!   are preserved.
//! - A failure on either side (a reset, a write that fails) closes the other side with a reset
//!   (`SO_LINGER` 0), so that a peer never takes a broken-off stream for a complete one. So do
//!   the idle timeout and a drained backend's cut.
//! - While a direction waits for its destination to take bytes, its source is still watched for
//!   a reset, and a relay with no byte either way for the idle timeout ends: a stalled backend
//!   whose client left does not keep its connection (and its count in the active gauge).
//! - A direction holds a copy buffer only while bytes are in flight (`buffers`): an idle
//!   connection costs its two sockets and its task, not 64 KiB.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backends::Count;
use crate::clock::coarse_ms;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::buffers::Buffer;
use super::{Context, connect};
use crate::metrics::ServiceLabels;
use crate::routing::balance::Flow;
use crate::snapshot::Snapshot;

/// `edge`: the listener's PROXY protocol rule and the connection's own peer, for refusing a
/// header from a source that may not send one (see `proxy_protocol::refuse_unexpected`), and
/// the address the client connected to as a PROXY header it sent named it: a header to the
/// backend names that one (as HAProxy's `send-proxy` behind `accept-proxy` does), else the
/// address the connection came in on.
pub async fn serve(
    client: TcpStream,
    flow: Flow,
    snapshot: Arc<Snapshot>,
    service: usize,
    ctx: &Context,
    edge: (
        &super::proxy_protocol::Accept,
        std::net::SocketAddr,
        Option<std::net::SocketAddr>,
    ),
) {
    let settings = ctx.settings.load();
    let idle = snapshot.table.services[service]
        .tcp_idle_timeout
        .unwrap_or(settings.tcp_idle_timeout);
    let send_proxy = snapshot.table.services[service].connection.proxy_protocol;
    let connect_timeout = snapshot.table.services[service]
        .edge
        .timeouts
        .connect
        .unwrap_or(settings.connect_timeout);
    let picked = {
        let svc = &snapshot.table.services[service];
        let states = &snapshot.states[service];
        let mut picked = None;
        let mut local = false;
        let candidates = svc.balancer.candidates(flow, |i| states[i].load());
        for b in crate::backends::outlier::ordered(states, candidates) {
            let started = std::time::Instant::now();
            match connect(states[b].addr, connect_timeout).await {
                Ok(stream) => {
                    states[b].observe_connect(started.elapsed());
                    states[b].outlier.success();
                    picked = Some((stream, states[b].clone()));
                    break;
                }
                Err(e) => {
                    if super::count_connect_failure(&ctx.metrics, &states[b], &e) {
                        // This host's shortage, not the backend's: no other is tried.
                        local = true;
                        break;
                    }
                    crate::backends::outlier::failure(states, b);
                }
            }
        }
        if picked.is_none() && !local {
            let labels = ServiceLabels {
                service: svc.key.to_string(),
            };
            ctx.metrics.no_backend.get_or_create(&labels).inc();
        }
        picked
    };
    // The table may be swapped many times during a long connection; do not pin this one.
    drop(snapshot);
    drop(settings);
    let Some((mut upstream, state)) = picked else {
        // Nothing to relay to: a reset, so that a client never takes the close for an empty
        // but complete answer (a backend that accepted and reset at once lands here too).
        abort(&client);
        return;
    };
    // A source that may not send a PROXY header: whoever speaks first decides.
    let pair = (&client, &upstream);
    let edge_rule =
        super::proxy_protocol::refuse_unexpected(pair, edge.1, edge.0, idle, &ctx.metrics);
    if edge_rule.await.is_err() {
        abort(&client);
        return;
    }
    if let Some(version) = send_proxy {
        let dest = edge
            .2
            .unwrap_or_else(|| client.local_addr().unwrap_or(flow.local));
        let header = super::proxy_protocol::encode(version, flow.client, dest);
        if upstream.write_all(&header).await.is_err() {
            abort(&client);
            return;
        }
    }
    let _active = state.open();
    let end = tokio::select! {
        end = relay(&client, &upstream, (&state.metrics.count().bytes_in, &state.metrics.count().bytes_out), idle) => end,
        _ = state.drained() => End::Drained,
    };
    if end != End::Closed {
        tracing::debug!(backend = %state.addr, "tcp connection broken off: {end:?}");
        abort(&client);
        abort(&upstream);
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions closed cleanly.
    Closed,
    /// The client reset, or could not be written to.
    ClientFailed,
    /// The backend reset, or could not be written to.
    BackendFailed,
    /// No byte either way for the idle timeout.
    IdleTimeout,
    /// The backend's drain timeout cut it.
    Drained,
}

/// Makes the socket's close a reset (`SO_LINGER` 0): for a stream that was broken off.
pub fn abort(stream: &impl std::os::fd::AsFd) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// The last byte's time, shared by both directions of a relay, and whether one has ended.
struct Activity {
    epoch: Instant,
    /// `epoch` on the coarse clock, in milliseconds.
    epoch_ms: u64,
    /// The coarse clock's milliseconds at the last byte.
    last: AtomicU64,
    /// A direction has seen its source's FIN.
    one_ended: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        let epoch_ms = coarse_ms();
        Activity {
            epoch: Instant::now(),
            epoch_ms,
            last: AtomicU64::new(epoch_ms),
            one_ended: AtomicBool::new(false),
        }
    }

    /// Records a direction's end; whether the other one had ended already.
    fn end(&self) -> bool {
        self.one_ended.swap(true, Ordering::Relaxed)
    }

    fn touch(&self) {
        self.last.store(coarse_ms(), Ordering::Relaxed);
    }

    /// Ends once nothing has moved for `idle`: one timer per relay, re-armed only when it
    /// fires, not per byte.
    async fn idle(&self, idle: Duration) {
        loop {
            let since = self
                .last
                .load(Ordering::Relaxed)
                .saturating_sub(self.epoch_ms);
            let deadline = self.epoch + Duration::from_millis(since) + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// Which socket of a direction failed.
enum Fault {
    Source,
    Destination,
}

/// Moves bytes both ways between a client and a backend until both directions have closed
/// (a clean end), either side fails, or nothing moved for `idle`. The caller closes the sockets
/// when it returns — on a clean end the last FIN is left to that close; on any end but
/// [`End::Closed`] it should [`abort`] them first.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    (bytes_in, bytes_out): (&Count, &Count),
    idle: Duration,
) -> End {
    let activity = Activity::new();
    let mut up = pin!(direction(client, upstream, bytes_in, &activity));
    let mut down = pin!(direction(upstream, client, bytes_out, &activity));
    let mut timer = pin!(activity.idle(idle));
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(Fault::Source) => return End::ClientFailed,
                Err(Fault::Destination) => return End::BackendFailed,
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(Fault::Source) => return End::BackendFailed,
                Err(Fault::Destination) => return End::ClientFailed,
            },
            // A side that has sent its FIN is read no more: a reset from it is still news.
            _ = client.ready(Interest::ERROR), if up_done => return End::ClientFailed,
            _ = upstream.ready(Interest::ERROR), if down_done => return End::BackendFailed,
            _ = &mut timer => return End::IdleTimeout,
        }
    }
    End::Closed
}

/// One direction: waits for bytes without a buffer, then copies while they keep coming; on the
/// source's FIN, shuts the destination's write side.
async fn direction(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &Count,
    activity: &Activity,
) -> Result<(), Fault> {
    loop {
        src.readable().await.map_err(|_| Fault::Source)?;
        let mut buf = Buffer::tcp();
        loop {
            let room = buf.vec().capacity() - buf.len();
            // The source's FIN is in behind the bytes just read: they go out with the FIN
            // that follows them in one segment (see `send_before_fin`).
            let mut fin_follows = false;
            match src.try_read_buf(buf.vec()) {
                Ok(0) => {
                    // When the other direction has ended, the destination's FIN is in and
                    // nothing of it is left unread: the close that ends the relay sends this
                    // FIN, without a shutdown call first. (A destination already gone fails
                    // its own direction.)
                    if !activity.end() {
                        let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
                    }
                    return Ok(());
                }
                Ok(n) if n < room => {
                    // A read that did not fill the room emptied the receive queue. With the
                    // source's FIN already in, the next read hears it at once; otherwise it
                    // waits for news (bytes, a FIN, a reset) rather than hearing EAGAIN:
                    // readiness is cleared now, before any wait (readiness that comes later
                    // is kept).
                    fin_follows = read_closed(src);
                    if !fin_follows {
                        let _ = src.try_io(Interest::READABLE, || {
                            Err::<(), _>(io::ErrorKind::WouldBlock.into())
                        });
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break, // idle: buffer back
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Fault::Source),
            }
            activity.touch();
            let mut sent = 0;
            while sent < buf.len() {
                let wrote = if fin_follows && sent == 0 {
                    send_before_fin(dst, &buf)
                } else {
                    dst.try_write(&buf[sent..])
                };
                match wrote {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The destination does not take more: wait, but hear the source's reset.
                        tokio::select! {
                            r = dst.writable() => r.map_err(|_| Fault::Destination)?,
                            _ = src.ready(Interest::ERROR) => return Err(Fault::Source),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Fault::Destination),
                }
            }
            counter.inc_by(sent as u64);
            activity.touch();
            buf.vec().clear();
        }
    }
}

/// Whether the source's FIN has arrived (epoll said `EPOLLRDHUP`): asked of the readiness
/// tokio holds, without a wait and without a system call.
fn read_closed(src: &TcpStream) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let ready = pin!(src.ready(Interest::READABLE));
    matches!(ready.poll(&mut cx), std::task::Poll::Ready(Ok(r)) if r.is_read_closed())
}

/// The last bytes before a FIN, sent with `MSG_MORE`: the kernel holds them until the FIN
/// (the destination's shutdown, or the close that ends the relay, right after) and sends both
/// in one segment, as HAProxy's relay often manages to — one segment fewer through the kernel
/// per direction that ends so, and one acknowledgement fewer from the peer (counted in a private
/// network namespace: benches/RESULTS.md).
fn send_before_fin(dst: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = dst.as_raw_fd();
    dst.try_io(Interest::WRITABLE, || {
        // SAFETY: a send from a live slice on a socket this stream owns.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// The tunnel of an HTTP upgrade: [`relay`]'s rules over any two streams (a TLS one, say). As
/// with [`relay`], the caller resets the sockets it knows on any end but [`End::Closed`];
/// `prefix`es are bytes already read from each side, sent on first. Without readiness to wait on, a direction reads its first bytes
/// into a small buffer of its own and takes a pooled one only while more keep coming.
pub async fn relay_io<C, U>(
    (client, client_prefix): (C, bytes::Bytes),
    (upstream, upstream_prefix): (U, bytes::Bytes),
    (bytes_in, bytes_out): (&Count, &Count),
    idle: Duration,
    drained: impl Future<Output = ()>,
) -> End
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let mut up = pin!(io_direction(
        &mut cr,
        &mut uw,
        client_prefix,
        bytes_in,
        &activity
    ));
    let mut down = pin!(io_direction(
        &mut ur,
        &mut cw,
        upstream_prefix,
        bytes_out,
        &activity
    ));
    let mut timer = pin!(activity.idle(idle));
    let mut drained = pin!(drained);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(Fault::Source) => return End::ClientFailed,
                Err(Fault::Destination) => return End::BackendFailed,
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(Fault::Source) => return End::BackendFailed,
                Err(Fault::Destination) => return End::ClientFailed,
            },
            _ = &mut timer => return End::IdleTimeout,
            _ = &mut drained => return End::Drained,
        }
    }
    End::Closed
}

async fn io_direction<R, W>(
    src: &mut R,
    dst: &mut W,
    prefix: bytes::Bytes,
    counter: &Count,
    activity: &Activity,
) -> Result<(), Fault>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !prefix.is_empty() {
        write(dst, &prefix).await?;
        counter.inc_by(prefix.len() as u64);
    }
    let mut first = [0u8; 512];
    loop {
        let n = src.read(&mut first).await.map_err(|_| Fault::Source)?;
        if n == 0 {
            let _ = dst.shutdown().await;
            return Ok(());
        }
        activity.touch();
        write(dst, &first[..n]).await?;
        counter.inc_by(n as u64);
        // More at once: a pooled buffer while they keep coming.
        let mut buf = Buffer::tcp();
        loop {
            let read = tokio::select! {
                biased;
                r = src.read_buf(buf.vec()) => r,
                _ = std::future::ready(()) => break,
            };
            match read {
                Ok(0) => {
                    let _ = dst.shutdown().await;
                    return Ok(());
                }
                Ok(_) => {}
                Err(_) => return Err(Fault::Source),
            }
            activity.touch();
            write(dst, &buf).await?;
            counter.inc_by(buf.len() as u64);
            activity.touch();
            buf.vec().clear();
        }
    }
}

/// Writes and flushes (a TLS stream holds records until flushed).
async fn write<W: AsyncWrite + Unpin>(dst: &mut W, bytes: &[u8]) -> Result<(), Fault> {
    dst.write_all(bytes).await.map_err(|_| Fault::Destination)?;
    dst.flush().await.map_err(|_| Fault::Destination)
}
