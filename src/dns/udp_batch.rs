//! Datagrams in batches: one `recvmmsg(2)` takes every query already waiting (up to [`BATCH`]),
//! one `sendmmsg(2)` sends their answers back to their senders. Under load that is two system
//! calls per batch instead of two per query; unloaded, a batch is a single query, answered as
//! soon as it came.
//!
//! On a socket bound to a wildcard address (`0.0.0.0`, `[::]`), each query's destination address
//! comes with it (`IP_PKTINFO` / `IPV6_RECVPKTINFO`, one control message per datagram) and its
//! reply leaves from that address (`IP_PKTINFO` / `IPV6_PKTINFO`), as unbound and Knot do: a
//! client that asked a host's second address drops a reply from its first.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

pub const BATCH: usize = 32;

/// Room for one control message holding a destination address (`in6_pktinfo` is the larger:
/// 40 bytes with its header), in u64s for the alignment `cmsghdr` needs.
const CONTROL_WORDS: usize = 8;
// SAFETY: CMSG_SPACE is arithmetic on its argument.
const _: () = assert!(
    unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as libc::c_uint) } as usize
        <= CONTROL_WORDS * 8
);

/// The address a query was sent to, as the kernel reported it, for its reply to leave from.
#[derive(Clone, Copy)]
pub enum Local {
    /// Not asked for (the socket has one address) or not reported: the kernel picks.
    Unknown,
    V4(libc::in_pktinfo),
    V6(libc::in6_pktinfo),
}

/// Received queries and the replies written for them, slot by slot; every buffer is reused.
pub struct Batch {
    /// `BATCH` receive buffers of `size` bytes each.
    queries: Box<[u8]>,
    size: usize,
    lens: [usize; BATCH],
    peers: [libc::sockaddr_storage; BATCH],
    peer_lens: [libc::socklen_t; BATCH],
    replies: Vec<Vec<u8>>,
    /// Whether destination addresses are asked for (see [`Batch::reply_from_destination`]).
    destinations: bool,
    /// Each datagram's control messages on the way in, its reply's on the way out.
    controls: [[u64; CONTROL_WORDS]; BATCH],
    locals: [Local; BATCH],
}

/// One received query, where it came from, and the reply to send (left empty: none).
pub struct Slot<'a> {
    pub query: &'a [u8],
    pub reply: &'a mut Vec<u8>,
    from: (&'a libc::sockaddr_storage, libc::socklen_t),
    local: &'a Local,
}

impl Slot<'_> {
    /// The sender's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        peer(self.from.0, self.from.1)
    }

    /// Where a reply that does not go back in the batch (a relayed query) is sent, and from.
    pub fn sender(&self) -> Sender {
        Sender {
            peer: *self.from.0,
            peer_len: self.from.1,
            local: *self.local,
        }
    }
}

/// A query's sender and the address it was sent to, kept to answer it later.
#[derive(Clone, Copy)]
pub struct Sender {
    peer: libc::sockaddr_storage,
    peer_len: libc::socklen_t,
    local: Local,
}

impl Sender {
    pub fn addr(&self) -> Option<SocketAddr> {
        peer(&self.peer, self.peer_len)
    }

    /// Sends `reply` to the sender, from the address the query was sent to.
    pub fn send(&self, socket: &UdpSocket, reply: &[u8]) -> io::Result<()> {
        let mut control = [0u64; CONTROL_WORDS];
        let mut peer = self.peer;
        let mut iov = libc::iovec {
            iov_base: reply.as_ptr() as *mut _,
            iov_len: reply.len(),
        };
        // SAFETY: plain data, filled in below.
        let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        msg.msg_name = (&raw mut peer).cast();
        msg.msg_namelen = self.peer_len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        set_source(&mut msg, &mut control, &self.local);
        // SAFETY: the message points at `reply`, `peer` and `control`, alive for the call; the
        // kernel only reads them.
        let r = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Batch {
    /// Room for `BATCH` datagrams of up to `size` bytes each.
    pub fn new(size: usize) -> Batch {
        Batch {
            queries: vec![0u8; BATCH * size].into_boxed_slice(),
            size,
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (unspecified) value.
            peers: unsafe { MaybeUninit::zeroed().assume_init() },
            peer_lens: [0; BATCH],
            replies: (0..BATCH).map(|_| Vec::new()).collect(),
            destinations: false,
            controls: [[0; CONTROL_WORDS]; BATCH],
            locals: [Local::Unknown; BATCH],
        }
    }

    /// On a socket bound to a wildcard address, asks the kernel for each query's destination
    /// address, so that its reply leaves from it. A socket bound to one address needs nothing.
    pub fn reply_from_destination(&mut self, socket: &UdpSocket) -> io::Result<()> {
        let local = socket.local_addr()?;
        if !local.ip().is_unspecified() {
            return Ok(());
        }
        // An IPv6 socket reports IPv4 queries (dual stack) as IPv4-mapped IPV6_PKTINFO.
        let (level, option) = match local {
            SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
            SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        };
        let on: libc::c_int = 1;
        // SAFETY: a valid socket, and an int option of the size given.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                option,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.destinations = true;
        Ok(())
    }

    /// Waits for a datagram, then takes the others already queued; returns how many came.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        // SAFETY: both arrays are plain data, filled in below before use.
        let mut iovs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        for (i, (iov, header)) in iovs.iter_mut().zip(headers.iter_mut()).enumerate() {
            iov.iov_base = self.queries[i * self.size..].as_mut_ptr().cast();
            iov.iov_len = self.size;
            header.msg_hdr.msg_name = (&raw mut self.peers[i]).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            if self.destinations {
                header.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
                header.msg_hdr.msg_controllen = size_of::<[u64; CONTROL_WORDS]>() as _;
            }
        }
        // SAFETY: every header points at a buffer of `iov_len` bytes, an address of
        // `msg_namelen` bytes and control room of `msg_controllen` bytes that live in `self`
        // for the call; the kernel writes at most that.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, header) in headers.iter().enumerate().take(n) {
            // A datagram larger than the buffer was cut (MSG_TRUNC): too long for a query.
            let cut = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.lens[i] = if cut { 0 } else { header.msg_len as usize };
            self.peer_lens[i] = header.msg_hdr.msg_namelen;
            self.replies[i].clear();
            self.locals[i] = if self.destinations {
                destination(&header.msg_hdr)
            } else {
                Local::Unknown
            };
        }
        Ok(n)
    }

    pub fn slot(&mut self, i: usize) -> Slot<'_> {
        Slot {
            query: &self.queries[i * self.size..i * self.size + self.lens[i]],
            reply: &mut self.replies[i],
            from: (&self.peers[i], self.peer_lens[i]),
            local: &self.locals[i],
        }
    }

    /// Sends the replies of the first `n` slots that have one, each to its query's sender from
    /// the address the query was sent to; a datagram the kernel refuses is skipped.
    pub fn send(&mut self, socket: &UdpSocket, n: usize) {
        // SAFETY: as in `recv`: plain data, filled in below.
        let mut iovs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut count = 0;
        for i in 0..n {
            if self.replies[i].is_empty() {
                continue;
            }
            iovs[count].iov_base = self.replies[i].as_mut_ptr().cast();
            iovs[count].iov_len = self.replies[i].len();
            let header = &mut headers[count].msg_hdr;
            header.msg_name = (&raw mut self.peers[i]).cast();
            header.msg_namelen = self.peer_lens[i];
            header.msg_iov = &mut iovs[count];
            header.msg_iovlen = 1;
            set_source(header, &mut self.controls[i], &self.locals[i]);
            count += 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers[sent..count] point at replies, addresses and control messages in
            // `self`, alive and unchanged for the call.
            let r = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers[sent..].as_mut_ptr(),
                    (count - sent) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                sent += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::debug!("dns send: {e}");
            sent += 1; // that datagram cannot go; the rest still may
        }
    }
}

/// The destination address among a received datagram's control messages.
fn destination(msg: &libc::msghdr) -> Local {
    let v4 = size_of::<libc::in_pktinfo>();
    let v6 = size_of::<libc::in6_pktinfo>();
    // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into `msg_control`;
    // the CMSG macros stay within them, and each payload is read only when its length covers it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            let len = header.cmsg_len as usize;
            match (header.cmsg_level, header.cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if len >= libc::CMSG_LEN(v4 as libc::c_uint) as usize =>
                {
                    let info = libc::CMSG_DATA(cmsg).cast::<libc::in_pktinfo>();
                    return Local::V4(info.read_unaligned());
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if len >= libc::CMSG_LEN(v6 as libc::c_uint) as usize =>
                {
                    let info = libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>();
                    return Local::V6(info.read_unaligned());
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    Local::Unknown
}

/// Puts the control message that makes a reply leave from `local` into `control`, and points
/// `msg` at it; with `Local::Unknown`, none. The interface is left to routing (as unbound does),
/// except for an IPv6 link-local address, which only means something on its own link.
fn set_source(msg: &mut libc::msghdr, control: &mut [u64; CONTROL_WORDS], local: &Local) {
    msg.msg_control = std::ptr::null_mut();
    msg.msg_controllen = 0;
    let (level, kind, len) = match local {
        Local::Unknown => return,
        Local::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            size_of::<libc::in_pktinfo>(),
        ),
        Local::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            size_of::<libc::in6_pktinfo>(),
        ),
    };
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE of either payload (at most 40 bytes) fits the control buffer (64).
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(len as libc::c_uint) } as _;
    // SAFETY: `msg` points at a zero-filled buffer with room for one message of `len` bytes;
    // CMSG_FIRSTHDR is not null for it, and the payload is written unaligned within it.
    unsafe {
        control.fill(0);
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(len as libc::c_uint) as _;
        let data = libc::CMSG_DATA(cmsg);
        match *local {
            Local::V4(mut info) => {
                info.ipi_ifindex = 0;
                data.cast::<libc::in_pktinfo>().write_unaligned(info);
            }
            Local::V6(mut info) => {
                let link_local =
                    info.ipi6_addr.s6_addr[0] == 0xfe && info.ipi6_addr.s6_addr[1] & 0xc0 == 0x80;
                if !link_local {
                    info.ipi6_ifindex = 0;
                }
                data.cast::<libc::in6_pktinfo>().write_unaligned(info);
            }
            Local::Unknown => {}
        }
    }
}

/// The sender's address as the kernel wrote it.
fn peer(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = u32::from_be(a.sin_addr.s_addr).into();
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = a.sin6_addr.s6_addr.into();
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_takes_what_is_queued_and_answers_each_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..5)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(format!("q{i}").as_bytes(), addr).unwrap();
        }
        let mut batch = Batch::new(512);
        let mut seen = 0;
        while seen < clients.len() {
            let n = batch.recv(&server).unwrap();
            for i in 0..n {
                let slot = batch.slot(i);
                let from = slot.peer().unwrap();
                let which = clients
                    .iter()
                    .position(|c| c.local_addr().unwrap() == from)
                    .expect("a client's address");
                assert_eq!(slot.query, format!("q{which}").as_bytes());
                // Every other query gets no reply: those slots are skipped.
                if which.is_multiple_of(2) {
                    slot.reply.extend_from_slice(format!("a{which}").as_bytes());
                }
            }
            batch.send(&server, n);
            seen += n;
        }
        let mut buf = [0u8; 16];
        for (i, c) in clients
            .iter()
            .enumerate()
            .filter(|(i, _)| i.is_multiple_of(2))
        {
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..len], from), (format!("a{i}").as_bytes(), addr));
        }
    }

    #[test]
    fn ipv6_senders_are_answered() {
        let Ok(server) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client.send_to(b"q", server.local_addr().unwrap()).unwrap();
        let mut batch = Batch::new(512);
        assert_eq!(batch.recv(&server).unwrap(), 1);
        let slot = batch.slot(0);
        assert_eq!(slot.peer(), Some(client.local_addr().unwrap()));
        slot.reply.push(b'a');
        batch.send(&server, 1);
        let mut buf = [0u8; 4];
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
    }

    /// Sends `query` to `to` from a socket connected there (so that a reply from any other
    /// address is dropped) and returns the socket.
    fn connected_client(bind: &str, to: SocketAddr, query: &[u8]) -> UdpSocket {
        let client = UdpSocket::bind(bind).unwrap();
        client.connect(to).unwrap();
        client.send(query).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        client
    }

    /// Answers one query in the batch and one as a relayed reply (after the batch), then checks
    /// that each client, connected to the address it asked, got its answer.
    fn both_replies_arrive(server: &UdpSocket, asked: SocketAddr, bind: &str) {
        let mut batch = Batch::new(512);
        batch.reply_from_destination(server).unwrap();
        let batched = connected_client(bind, asked, b"q1");
        let relayed = connected_client(bind, asked, b"q2");
        let (mut seen, mut later) = (0, None);
        while seen < 2 {
            let n = batch.recv(server).unwrap();
            for i in 0..n {
                let slot = batch.slot(i);
                match slot.query {
                    b"q1" => slot.reply.extend_from_slice(b"a1"),
                    _ => later = Some(slot.sender()),
                }
            }
            batch.send(server, n);
            seen += n;
        }
        later.unwrap().send(server, b"a2").unwrap();
        let mut buf = [0u8; 8];
        for (client, answer) in [(batched, b"a1"), (relayed, b"a2")] {
            let n = client
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no reply from {asked}: {e}"));
            assert_eq!(&buf[..n], answer);
        }
    }

    #[test]
    fn a_wildcard_socket_replies_from_the_address_asked() {
        // Linux routes all of 127/8 to lo: 127.0.0.2 is this host's second address.
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = server.local_addr().unwrap().port();
        both_replies_arrive(
            &server,
            SocketAddr::from(([127, 0, 0, 2], port)),
            "127.0.0.1:0",
        );
    }

    #[test]
    fn an_ipv6_wildcard_socket_replies_from_the_address_asked() {
        let Ok(server) = UdpSocket::bind("[::]:0") else {
            eprintln!("no IPv6 on this machine: skipped");
            return;
        };
        let port = server.local_addr().unwrap().port();
        if UdpSocket::bind("[::1]:0").is_ok() {
            both_replies_arrive(
                &server,
                SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
                "[::1]:0",
            );
        } else {
            eprintln!("no IPv6 loopback on this machine: ::1 skipped");
        }
        // Dual stack: IPv4 queries come as IPv4-mapped addresses.
        both_replies_arrive(
            &server,
            SocketAddr::from(([127, 0, 0, 2], port)),
            "127.0.0.1:0",
        );
    }

    #[test]
    fn an_oversized_datagram_arrives_empty() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(&[7u8; 600], server.local_addr().unwrap())
            .unwrap();
        let mut batch = Batch::new(512);
        assert_eq!(batch.recv(&server).unwrap(), 1);
        assert!(batch.slot(0).query.is_empty());
    }
}
