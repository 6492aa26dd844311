//! Datagrams in batches: one `recvmmsg(2)` takes every query already waiting (up to [`BATCH`]),
//! one `sendmmsg(2)` sends their answers back to their senders. Under load that is two system
//! calls per batch instead of two per query; unloaded, a batch is a single query, answered as
//! soon as it came.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

pub const BATCH: usize = 32;

/// Received queries and the replies written for them, slot by slot; every buffer is reused.
pub struct Batch {
    /// `BATCH` receive buffers of `size` bytes each.
    queries: Box<[u8]>,
    size: usize,
    lens: [usize; BATCH],
    peers: [libc::sockaddr_storage; BATCH],
    peer_lens: [libc::socklen_t; BATCH],
    replies: Vec<Vec<u8>>,
}

/// One received query, where it came from, and the reply to send (left empty: none).
pub struct Slot<'a> {
    pub query: &'a [u8],
    pub reply: &'a mut Vec<u8>,
    from: (&'a libc::sockaddr_storage, libc::socklen_t),
}

impl Slot<'_> {
    /// The sender's address, for a reply that does not go back in the batch (a relayed query).
    pub fn peer(&self) -> Option<SocketAddr> {
        peer(self.from.0, self.from.1)
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
        }
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
        }
        // SAFETY: every header points at a buffer of `iov_len` bytes and an address of
        // `msg_namelen` bytes that live in `self` for the call; the kernel writes at most that.
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
        }
        Ok(n)
    }

    pub fn slot(&mut self, i: usize) -> Slot<'_> {
        Slot {
            query: &self.queries[i * self.size..i * self.size + self.lens[i]],
            reply: &mut self.replies[i],
            from: (&self.peers[i], self.peer_lens[i]),
        }
    }

    /// Sends the replies of the first `n` slots that have one, each to its query's sender; a
    /// datagram the kernel refuses is skipped.
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
            count += 1;
        }
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers[sent..count] point at replies and addresses in `self`, alive and
            // unchanged for the call.
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
