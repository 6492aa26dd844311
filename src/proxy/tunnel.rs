//! A protocol upgrade (WebSocket) bridged both ways: the client's upgraded connection and the
//! backend's, relayed by TCP mode's rules (`tcp::relay_io`) once hyper hands them over.

use std::sync::Arc;

use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::h1_framing::Prefixed;
use super::tcp;
use crate::backends::{ActiveGuard, BackendState};

/// Bridges an upgraded client connection and its backend until either side closes or fails,
/// nothing moves for `proxy.tunnel_idle_timeout`, or the backend drains; table swaps do not
/// touch it. [`tcp::relay`]'s rules: a failure on one side resets the other.
pub(super) async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    (state, idle): (Arc<BackendState>, std::time::Duration),
    active: ActiveGuard,
) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(backend = %state.addr, "upgrade failed: {e}");
            return;
        }
    };
    let counters = (
        &state.metrics.count().bytes_in,
        &state.metrics.count().bytes_out,
    );
    let end = match (
        stream_of::<TcpStream>(client),
        stream_of::<TcpStream>(upstream),
    ) {
        // Plain HTTP both ways (the usual case): the sockets themselves, watched for resets.
        (Ok((client, to_backend)), Ok((upstream, to_client))) => {
            let sent = async {
                send_all(&upstream, &to_backend).await?;
                send_all(&client, &to_client).await
            };
            let end = tokio::select! {
                sent = sent => match sent {
                    Ok(()) => tokio::select! {
                        end = tcp::relay(&client, &upstream, counters, idle) => end,
                        _ = state.drained() => tcp::End::Drained,
                    },
                    Err(_) => tcp::End::ClientFailed,
                },
                _ = state.drained() => tcp::End::Drained,
            };
            if end != tcp::End::Closed {
                tcp::abort(&client);
                tcp::abort(&upstream);
            }
            end
        }
        // TLS on the client's side (the HTTPS listener): the TLS stream over its socket, so a
        // failure still resets both sockets; a clean end sends the client a close_notify.
        (Err(client), Ok((mut upstream, to_client))) => match tls_socket(client) {
            Ok((mut client, to_backend)) => {
                let end = tcp::relay_io(
                    (&mut client, to_backend),
                    (&mut upstream, to_client),
                    counters,
                    idle,
                    state.drained(),
                )
                .await;
                if end != tcp::End::Closed {
                    tcp::abort(client.get_ref().0);
                    tcp::abort(&upstream);
                }
                end
            }
            Err(client) => {
                let end = tcp::relay_io(
                    (TokioIo::new(client), Bytes::new()),
                    (&mut upstream, to_client),
                    counters,
                    idle,
                    state.drained(),
                )
                .await;
                if end != tcp::End::Closed {
                    tcp::abort(&upstream);
                }
                end
            }
        },
        // Streams of other kinds: without their sockets, a clean close either way.
        (client, upstream) => {
            let (mut client, to_backend) = any_io(client);
            let (mut upstream, to_client) = any_io(upstream);
            tcp::relay_io(
                (&mut client, to_backend),
                (&mut upstream, to_client),
                counters,
                idle,
                state.drained(),
            )
            .await
        }
    };
    tracing::debug!(backend = %state.addr, "tunnel ended: {end:?}");
    drop(active);
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
type AnyIo = Box<dyn Io>;

/// A client connection of the HTTPS listener under an upgrade: its TLS stream (whose socket
/// can be reset) and the plaintext already read from it.
fn tls_socket(upgraded: Upgraded) -> Result<(Box<ServerTls>, Bytes), Upgraded> {
    stream_of::<ServerTls>(upgraded).map(|(stream, read)| (Box::new(stream), read))
}

/// The `S` an upgraded connection was made over (by hyper, or by the fast path handing hyper
/// what it had read, `Prefixed`), with the bytes already read from it: the TCP socket itself
/// when it is one of the plain kinds this proxy makes.
fn stream_of<S>(upgraded: Upgraded) -> Result<(S, Bytes), Upgraded>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let upgraded = match upgraded.downcast::<TokioIo<S>>() {
        Ok(parts) => return Ok((parts.io.into_inner(), parts.read_buf)),
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<Prefixed<S>>>() {
        Ok(parts) => {
            // hyper read what it holds before what the fast path had not yet handed it.
            let (rest, stream) = parts.io.into_inner().into_parts();
            let mut read = bytes::BytesMut::from(parts.read_buf);
            read.extend_from_slice(&rest);
            Ok((stream, read.freeze()))
        }
        Err(upgraded) => Err(upgraded),
    }
}

type ServerTls = tokio_rustls::server::TlsStream<TcpStream>;

fn any_io(side: Result<(TcpStream, Bytes), Upgraded>) -> (AnyIo, Bytes) {
    match side {
        Ok((stream, read)) => (Box::new(stream), read),
        Err(upgraded) => (Box::new(TokioIo::new(upgraded)), Bytes::new()),
    }
}

/// Writes bytes already read from the other side before relaying.
async fn send_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
