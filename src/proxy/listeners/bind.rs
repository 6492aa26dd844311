//! Opening the sockets the proxy listens on: TCP listeners for service ports and shared HTTP(S)
//! listeners, UDP sockets for VIPs and DNS. Each is the socket a previous process handed over
//! in a zero-downtime upgrade when there is one (`upgrade`), else a new one, and is registered
//! so that the next upgrade can hand it on.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::upgrade::{self, Proto};

const BACKLOG: i32 = 1024;

/// A UDP socket on a VIP address (which need not be local: `IP_FREEBIND`), or the one a
/// previous process handed over.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<Arc<tokio::net::UdpSocket>> {
    let socket = bind_std_udp(addr)?;
    socket.set_nonblocking(true)?;
    let socket = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
    upgrade::register(Proto::Udp, addr, &socket);
    Ok(socket)
}

/// A blocking UDP socket (the DNS server's), or the one a previous process handed over; the
/// caller registers it for the next hand-over.
pub fn bind_std_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    if let Some(fd) = upgrade::take_inherited(Proto::Udp, addr) {
        let socket = std::net::UdpSocket::from(fd);
        socket.set_nonblocking(false)?;
        return Ok(socket);
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A listening TCP socket, or the one a previous process handed over; registered so that the
/// next upgrade can hand it on.
pub fn bind(addr: SocketAddr) -> std::io::Result<Arc<TcpListener>> {
    let listener = Arc::new(TcpListener::from_std(open(addr)?)?);
    upgrade::register(Proto::Tcp, addr, &listener);
    Ok(listener)
}

/// As [`bind`], registered with no reactor: for `Workers::accept_everywhere_unregistered`.
pub fn bind_unregistered(addr: SocketAddr) -> std::io::Result<Arc<std::net::TcpListener>> {
    let listener = Arc::new(open(addr)?);
    upgrade::register(Proto::Tcp, addr, &listener);
    Ok(listener)
}

/// The listening socket for `addr`, nonblocking: the one a previous process handed over, or a
/// new one.
fn open(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = match upgrade::take_inherited(Proto::Tcp, addr) {
        Some(fd) => std::net::TcpListener::from(fd),
        None => bind_fresh(addr)?,
    };
    listener.set_nonblocking(true)?;
    // Accepted connections inherit TCP_NODELAY from their listener (Linux): set once here, not
    // once per connection.
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    Ok(listener)
}

fn bind_fresh(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    // VIP addresses need not be configured on an interface (IP_FREEBIND); the VIP range is
    // routed to this host by `ip route add local 11.0.0.0/8 dev lo` or the network.
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
