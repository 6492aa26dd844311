//! The system calls TCP mode's loop makes on raw descriptors: registering a socket in the inner
//! epoll set, the nonblocking backend connect, send and receive, and the socket options read or
//! set by descriptor. The loop's state machine (`super`) works on descriptors it owns and calls
//! these; each `unsafe` block is here, with why it is sound.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Registers `fd` for everything, edge-triggered, once: its close removes it.
pub(super) fn add(epfd: RawFd, fd: RawFd, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: data,
    };
    // SAFETY: both descriptors are open; `ev` is a valid event.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A nonblocking connect to `addr` with `TCP_NODELAY`, watched by the inner set (see
/// `super::connect`: success shows as writable, a failure as an error or a hang-up).
pub(super) fn connect(addr: SocketAddr, epfd: RawFd, data: u64) -> io::Result<OwnedFd> {
    let socket = crate::proxy::start_connect(addr)?;
    // SAFETY: the socket's own descriptor, owned from here by the `OwnedFd`.
    let fd = unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) };
    add(epfd, fd.as_raw_fd(), data)?;
    Ok(fd)
}

pub(super) fn socket_error(fd: RawFd) -> Option<io::Error> {
    // SAFETY: a borrowed view of a descriptor that stays open for the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    sock.take_error().ok().flatten()
}

pub(super) fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: as in `socket_error`.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    sock.local_addr().ok()?.as_socket()
}

/// Makes the close of `fd` a reset (`SO_LINGER` 0), as `tcp::abort` does.
pub(super) fn abort_fd(fd: RawFd) {
    // SAFETY: as in `socket_error`.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    let _ = sock.set_linger(Some(Duration::ZERO));
}

pub(super) fn send(fd: RawFd, bytes: &[u8], flags: i32) -> io::Result<usize> {
    // SAFETY: a send from a live slice.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            flags | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads into `buf`'s spare room.
pub(super) fn recv(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: a read into the vector's spare capacity, whose length then grows by what the
    // kernel wrote.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised `n` bytes past the length.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}
