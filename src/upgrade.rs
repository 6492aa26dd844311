//! Zero-downtime binary upgrade: the listening sockets pass from the running process to a new
//! one over a Unix socket (SCM_RIGHTS), as Pingora and Sōzu do. Neither process closes them, so
//! the kernel keeps accepting into the same queues throughout and no connection is refused.
//!
//! 1. The old process listens on `runtime.upgrade_socket` (SOCK_SEQPACKET: one message, one
//!    frame).
//! 2. `switchyard run --upgrade` connects and asks; the old process answers with every listening
//!    socket it holds, in frames of at most [`FDS_PER_FRAME`], each naming what its sockets are.
//! 3. The new process binds nothing it was handed, keeps its accept loops shut until its first
//!    table (and DNS zone) is live, then opens them and says `ready`.
//! 4. The old process stops accepting and drains, as on SIGTERM. Had the new one died before
//!    `ready`, the old one would simply carry on.
//!
//! Sockets are tracked here for the whole process: they are process resources, and every
//! binder (static listeners, service ports, VIPs, DNS) goes through [`take_inherited`] and
//! [`register`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::sync::Notify;

/// Linux's SCM_MAX_FD is 253.
const FDS_PER_FRAME: usize = 200;
const FRAME_BYTES: usize = 64 * 1024;
const TAKEOVER: &[u8] = b"takeover";
const READY: &[u8] = b"ready";
/// How long the old process waits for the new one to become ready before giving up on it.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

type Held = Weak<dyn AsRawFd + Send + Sync>;

static INVENTORY: Mutex<Vec<(Proto, SocketAddr, Held)>> = Mutex::new(Vec::new());
static INHERITED: Mutex<Option<HashMap<(Proto, SocketAddr), OwnedFd>>> = Mutex::new(None);

/// Records a listening socket so that an upgrade can hand it over. `addr` is the address it
/// was asked to bind (a port 0 socket is never handed to a port 0 request: it means "any").
pub fn register<T: AsRawFd + Send + Sync + 'static>(proto: Proto, addr: SocketAddr, s: &Arc<T>) {
    let held: Held = Arc::downgrade(s) as Held;
    let mut inventory = INVENTORY.lock().unwrap();
    inventory.retain(|(_, _, h)| h.strong_count() > 0);
    inventory.push((proto, addr, held));
}

/// The socket the previous process held for `addr`, if it handed one over.
pub fn take_inherited(proto: Proto, addr: SocketAddr) -> Option<OwnedFd> {
    if addr.port() == 0 {
        return None;
    }
    INHERITED.lock().unwrap().as_mut()?.remove(&(proto, addr))
}

/// Closes what the previous process handed over and nothing claimed (ports of apps that are
/// gone); returns how many.
pub fn close_unclaimed() -> usize {
    INHERITED
        .lock()
        .unwrap()
        .take()
        .map_or(0, |left| left.len())
}

#[derive(Serialize, Deserialize)]
struct Frame {
    sockets: Vec<(Proto, SocketAddr)>,
    more: bool,
}

/// The new process's side: connects to the old process and takes its sockets. `Ok(None)`:
/// nothing listens there (no process to take over from).
pub fn take_over(path: &Path) -> io::Result<Option<Handover>> {
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    match socket.connect(&SockAddr::unix(path)?) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    socket.set_write_timeout(Some(Duration::from_secs(10)))?;
    send_frame(socket.as_raw_fd(), TAKEOVER, &[])?;
    let mut inherited = HashMap::new();
    loop {
        let (bytes, fds) = recv_frame(socket.as_raw_fd())?;
        let frame: Frame = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if frame.sockets.len() != fds.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} sockets named, {} passed",
                    frame.sockets.len(),
                    fds.len()
                ),
            ));
        }
        inherited.extend(frame.sockets.into_iter().zip(fds));
        if !frame.more {
            break;
        }
    }
    let count = inherited.len();
    *INHERITED.lock().unwrap() = Some(inherited);
    Ok(Some(Handover { socket, count }))
}

/// The new process's open line to the old one, until it says it is ready.
pub struct Handover {
    socket: Socket,
    pub count: usize,
}

impl Handover {
    /// Tells the old process to stop accepting and drain.
    pub fn ready(self) -> io::Result<()> {
        send_frame(self.socket.as_raw_fd(), READY, &[])
    }
}

/// The old process's side: serves one takeover at a time on `path`, on a thread of its own.
/// `handed_over` is notified once a new process said it is ready.
pub fn listen(path: PathBuf, handed_over: Arc<Notify>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by a process that is gone (or that just handed over to us).
    let _ = std::fs::remove_file(&path);
    let listener = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    listener.bind(&SockAddr::unix(&path)?)?;
    listener.listen(4)?;
    std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || {
            loop {
                let (peer, _) = match listener.accept() {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!("upgrade socket: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                match hand_over(&peer) {
                    Ok(sockets) => {
                        tracing::info!(sockets, "upgrade: the new process is ready; draining");
                        handed_over.notify_one();
                        return;
                    }
                    Err(e) => tracing::warn!("upgrade aborted, still serving: {e}"),
                }
            }
        })?;
    Ok(())
}

fn hand_over(peer: &Socket) -> io::Result<usize> {
    peer.set_read_timeout(Some(Duration::from_secs(10)))?;
    peer.set_write_timeout(Some(Duration::from_secs(10)))?;
    let (request, _) = recv_frame(peer.as_raw_fd())?;
    if request != TAKEOVER {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a takeover"));
    }
    // Strong references for as long as the descriptors are being sent.
    let held: Vec<(Proto, SocketAddr, Arc<dyn AsRawFd + Send + Sync>)> = INVENTORY
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(p, a, h)| Some((*p, *a, h.upgrade()?)))
        .collect();
    tracing::info!(
        sockets = held.len(),
        "upgrade: handing the listening sockets over"
    );
    let mut chunks = held.chunks(FDS_PER_FRAME).peekable();
    if chunks.peek().is_none() {
        let frame = serde_json::to_vec(&Frame {
            sockets: Vec::new(),
            more: false,
        })?;
        send_frame(peer.as_raw_fd(), &frame, &[])?;
    }
    while let Some(chunk) = chunks.next() {
        let frame = serde_json::to_vec(&Frame {
            sockets: chunk.iter().map(|(p, a, _)| (*p, *a)).collect(),
            more: chunks.peek().is_some(),
        })?;
        let fds: Vec<RawFd> = chunk.iter().map(|(_, _, s)| s.as_raw_fd()).collect();
        send_frame(peer.as_raw_fd(), &frame, &fds)?;
    }
    peer.set_read_timeout(Some(READY_TIMEOUT))?;
    let (answer, _) = recv_frame(peer.as_raw_fd())?;
    if answer != READY {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the new process went away before it was ready",
        ));
    }
    Ok(held.len())
}

fn send_frame(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; unsafe { libc::CMSG_SPACE(fd_bytes) } as usize / 8 + 1];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call, and
    // the control buffer is CMSG_SPACE bytes long, enough for one header and the descriptors.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = libc::CMSG_SPACE(fd_bytes) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                fd_bytes as usize,
            );
        }
        if libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn recv_frame(socket: RawFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut bytes = vec![0u8; FRAME_BYTES];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let max_fd_bytes = (FDS_PER_FRAME * std::mem::size_of::<RawFd>()) as u32;
    let control_len = unsafe { libc::CMSG_SPACE(max_fd_bytes) } as usize;
    let mut control = vec![0u64; control_len / 8 + 1];
    let mut fds = Vec::new();
    // SAFETY: as in `send_frame`; descriptors are read only from SCM_RIGHTS headers that the
    // kernel filled in, each becoming owned exactly once.
    let received = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control_len as _;
        let n = libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "upgrade frame truncated",
            ));
        }
        n as usize
    };
    if received == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "upgrade peer closed",
        ));
    }
    bytes.truncate(received);
    Ok((bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_cross_a_socket_pair_with_their_frame() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        send_frame(a.as_raw_fd(), b"hello", &[listener.as_raw_fd()]).unwrap();
        let (bytes, fds) = recv_frame(b.as_raw_fd()).unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(fds.len(), 1);
        let passed = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(passed.local_addr().unwrap(), addr);
        // The same queue: a connection made now is accepted through the passed descriptor.
        drop(listener);
        let _client = std::net::TcpStream::connect(addr).unwrap();
        passed.accept().unwrap();
        drop(a);
        assert!(recv_frame(b.as_raw_fd()).is_err());
    }
}
