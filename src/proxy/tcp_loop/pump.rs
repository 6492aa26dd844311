//! One direction of a TCP-mode relay, byte for byte: the two sockets as epoll reported them,
//! what a direction has in flight, and `pump`, which writes what is in flight and reads on
//! while the source has bytes, passing on its FIN (`tcp::direction`'s rules).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::coarse_ms;
use super::sys::{recv, send};
use crate::backends::Count;
use crate::proxy::buffers::Buffer;

/// One socket of a connection, and what epoll has said of it since it was last drained.
pub(super) struct Sock {
    pub(super) fd: OwnedFd,
    /// Tells this socket's events from those of a socket that had its slot before.
    pub(super) tag: u32,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The peer's FIN has arrived (`EPOLLRDHUP`, `EPOLLHUP`).
    pub(super) read_closed: bool,
    /// A reset or another error (`EPOLLERR`).
    pub(super) failed: bool,
}

impl Sock {
    pub(super) fn new(fd: OwnedFd, tag: u32) -> Sock {
        Sock {
            fd,
            tag,
            readable: false,
            writable: false,
            read_closed: false,
            failed: false,
        }
    }

    pub(super) fn note(&mut self, events: u32) {
        const IN: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        const OUT: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        const CLOSED: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32;
        self.readable |= events & IN != 0;
        self.writable |= events & OUT != 0;
        self.read_closed |= events & CLOSED != 0;
        self.failed |= events & libc::EPOLLERR as u32 != 0;
    }
}

/// One direction of a relay.
#[derive(Default)]
pub(super) struct Direction {
    /// Bytes read and not yet all written; `None` while nothing is in flight.
    pub(super) buf: Option<Buffer>,
    pub(super) sent: usize,
    /// The source's FIN came in behind the bytes in `buf`.
    pub(super) fin_follows: bool,
    /// The source's FIN has been read and passed on (or left to the close).
    pub(super) done: bool,
}

/// Which fault of a direction.
pub(super) enum Fault {
    Source,
    Destination,
}

/// One direction: writes what is in flight, then reads while the source has bytes, passing
/// on its FIN (see `tcp::direction`, whose rules these are).
pub(super) fn pump(
    dir: &mut Direction,
    src: &mut Sock,
    dst: &mut Sock,
    counter: &Count,
    (other_done, last_ms): (bool, &mut u64),
) -> Result<(), Fault> {
    if dir.done {
        return Ok(());
    }
    loop {
        if let Some(buf) = dir.buf.as_mut()
            && dir.sent < buf.len()
        {
            while dir.sent < buf.len() {
                if !dst.writable {
                    return Ok(()); // wait for room; the source's reset is still heard
                }
                let flags = if dir.fin_follows && dir.sent == 0 {
                    libc::MSG_MORE
                } else {
                    0
                };
                match send(dst.fd.as_raw_fd(), &buf[dir.sent..], flags) {
                    Ok(n) => dir.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Fault::Destination),
                }
            }
            counter.inc_by(dir.sent as u64);
            *last_ms = coarse_ms();
            buf.vec().clear();
            dir.sent = 0;
        }
        if !src.readable {
            dir.buf = None; // nothing in flight: the buffer goes back to the pool
            return Ok(());
        }
        let buf = dir.buf.get_or_insert_with(Buffer::tcp);
        let room = buf.vec().capacity() - buf.len();
        match recv(src.fd.as_raw_fd(), buf.vec()) {
            Ok(0) => {
                dir.buf = None;
                dir.done = true;
                // When the other direction has ended, the close that ends the relay sends
                // this FIN (see `tcp::direction`).
                if !other_done {
                    // SAFETY: a shutdown of a socket this connection owns.
                    unsafe { libc::shutdown(dst.fd.as_raw_fd(), libc::SHUT_WR) };
                }
                return Ok(());
            }
            Ok(n) => {
                dir.fin_follows = false;
                if n < room {
                    // The receive queue is empty: wait for news rather than hear EAGAIN,
                    // unless the FIN is in already (then it goes out with these bytes).
                    dir.fin_follows = src.read_closed;
                    if !dir.fin_follows {
                        src.readable = false;
                    }
                }
                *last_ms = coarse_ms();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                src.readable = false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Fault::Source),
        }
    }
}
