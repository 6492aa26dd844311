//! The relay's listener: each connection admitted (or refused: `admission`), its socket's
//! buffers and timeouts set, its TLS handshake bounded by the header timeout, then its HTTP/1
//! requests served (`answers`) until it ends or is cut.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use super::admission::Ticket;
use super::answers::is_stream;
use super::{Relay, SEND_BUFFER, STREAM_SEND_BUFFER};

/// What the relay knows of an accepted connection before it speaks HTTP.
struct Client {
    /// The relay listens on loopback (`access`: a token is then optional).
    loopback: bool,
    peer: SocketAddr,
    /// The TCP socket, for its send buffer once a response turns out to be a stream.
    fd: std::os::fd::RawFd,
    /// Notified to close the connection (a subscriber cut, the relay shutting down).
    cut: Arc<Notify>,
    ticket: Arc<Ticket>,
}

impl Relay {
    /// Accepts the relay's connections; with `tls`, each speaks HTTPS after a handshake that
    /// must end within the header timeout (a client that opens and says nothing holds nothing).
    pub async fn serve(self: Arc<Self>, listener: Arc<TcpListener>, tls: Option<TlsAcceptor>) {
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let cut = Arc::new(Notify::new());
            let Some(ticket) = self.connections.admit(cut.clone()) else {
                continue; // closed: dropped
            };
            let ticket = Arc::new(ticket);
            let socket = socket2::SockRef::from(&stream);
            let _ = socket.set_send_buffer_size(SEND_BUFFER);
            // Bytes sent and not acknowledged (a follower's host gone, a reader whose window
            // stays shut) for the idle timeout: the kernel closes the connection, as a stream's
            // write that cannot go on does (`stall`).
            let _ = socket.set_tcp_user_timeout(Some(self.settings.timeouts.idle));
            let _ = stream.set_nodelay(true);
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            let client = Client {
                loopback,
                peer,
                fd,
                cut,
                ticket,
            };
            let relay = self.clone();
            match &tls {
                None => {
                    tokio::spawn(relay.connection(stream, client));
                }
                Some(tls) => {
                    let handshake = tls.accept(stream);
                    let header = self.settings.timeouts.header;
                    tokio::spawn(async move {
                        let on_cut = client.cut.clone();
                        let stream = tokio::select! {
                            done = tokio::time::timeout(header, handshake) => match done {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(peer = %client.peer, "relay TLS handshake: {e}");
                                    return;
                                }
                                Err(_) => return,
                            },
                            _ = on_cut.notified() => return,
                        };
                        relay.connection(stream, client).await;
                    });
                }
            }
        }
    }

    /// One connection's requests, over plain TCP or TLS, until it ends or is cut.
    async fn connection<T>(self: Arc<Self>, stream: T, client: Client)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Client {
            loopback,
            peer,
            fd,
            cut,
            ticket,
        } = client;
        let timeouts = self.settings.timeouts;
        let on_cut = cut.clone();
        let (stream, activity) = crate::stall::Guarded::new(stream, timeouts.idle);
        let service = service_fn(move |req| {
            let (relay, cut, activity) = (self.clone(), cut.clone(), activity.clone());
            let ticket = ticket.clone();
            async move {
                let preparing = activity.preparing();
                let method = req.method().clone();
                let response = relay.handle(req, (loopback, peer.ip()), cut, &ticket).await;
                activity.answering(&method, &response);
                if is_stream(&response) {
                    // SAFETY: this service runs inside the connection that owns the socket
                    // (under TLS too: the TLS stream owns it), so `fd` is open (and is that
                    // socket) while it runs.
                    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                    let socket = socket2::SockRef::from(&socket);
                    let _ = socket.set_send_buffer_size(STREAM_SEND_BUFFER);
                }
                drop(preparing);
                Ok::<_, Infallible>(response)
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header)
            .serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            _ = connection => {}
            _ = on_cut.notified() => {}
        }
    }
}
