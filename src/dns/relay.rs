//! Relaying a query to one upstream resolver, over UDP or TCP: under a random ID (RFC 5452),
//! from a socket of its own, taking only a reply to that ID and question. And the guard against
//! relaying to ourselves: the local addresses of the relay sockets in use are known
//! ([`OwnSockets`]), so a query that arrives from one of them is switchyard's own, come back
//! round a loop (`dns.upstreams` naming our listener by an address configuration checks cannot
//! see as ours, a NAT rule), and is not relayed again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The local addresses of the relay sockets with a query out (at most one per relayed query in
/// flight, which are bounded: see `server`).
#[derive(Default)]
pub struct OwnSockets {
    held: Mutex<HashSet<SocketAddr>>,
}

/// One relay socket's local address, in [`OwnSockets`] until dropped.
struct Marked<'a> {
    own: &'a OwnSockets,
    local: SocketAddr,
}

impl OwnSockets {
    /// Whether `peer` is the local address of one of our relay sockets with a query out.
    pub fn contains(&self, peer: SocketAddr) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        !held.is_empty() && held.contains(&canonical(peer))
    }

    fn mark(&self, local: SocketAddr) -> Marked<'_> {
        let local = canonical(local);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(local);
        Marked { own: self, local }
    }
}

impl Drop for Marked<'_> {
    fn drop(&mut self) {
        let mut held = self.own.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.local);
    }
}

/// An address as a dual-stack listener and an IPv4 socket both name it.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

pub type Relay<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<u8>>> + Send + 'a>>;

/// The largest DNS message: what an upstream's UDP reply may be.
const MAX_MESSAGE: usize = u16::MAX as usize;

/// Sends `query` from a socket of its own (a port the kernel picks at random, connected: only
/// the upstream's datagrams arrive) and waits for the reply to it; replies to another ID or
/// question are ignored (late, or spoofed).
pub fn relay_udp<'a>(
    own: &'a OwnSockets,
    upstream: SocketAddr,
    query: &'a [u8],
    question: usize,
) -> Relay<'a> {
    Box::pin(async move {
        let local: SocketAddr = if upstream.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(upstream).await?;
        let _marked = own.mark(socket.local_addr()?);
        socket.send(query).await?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let n = socket.recv(&mut buf).await?;
            if answers(query, question, &buf[..n]) {
                buf.truncate(n);
                return Ok(buf);
            }
            tracing::debug!(%upstream, "ignored an upstream reply to another query");
        }
    })
}

/// As [`relay_udp`], over a TCP connection of its own.
pub async fn relay_tcp(
    own: &OwnSockets,
    upstream: SocketAddr,
    query: &[u8],
    question: usize,
) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let _marked = own.mark(stream.local_addr()?);
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let len = stream.read_u16().await?;
        let mut reply = vec![0u8; len as usize];
        stream.read_exact(&mut reply).await?;
        if answers(query, question, &reply) {
            return Ok(reply);
        }
        tracing::debug!(%upstream, "ignored an upstream reply to another query");
    }
}

/// Whether `reply` answers `query`: a response, with its ID, and its one question (the name in
/// any case: upstreams may echo a 0x20-randomised name as they got it). `question` is where the
/// query's question ends.
fn answers(query: &[u8], question: usize, reply: &[u8]) -> bool {
    let name_end = question - 4;
    reply.len() >= question
        && reply[..2] == query[..2]
        && reply[2] & 0x80 != 0
        && reply[4..6] == [0, 1]
        && reply[12..name_end].eq_ignore_ascii_case(&query[12..name_end])
        && reply[name_end..question] == query[name_end..question]
}

/// Where the question of a one-question message ends (its name uncompressed, or ending in a
/// pointer), or `None` when the message is shorter.
pub fn question_end(packet: &[u8]) -> Option<usize> {
    let at = name_end(packet, 12)?;
    (packet.len() >= at + 4).then_some(at + 4)
}

/// Where the name at `at` ends: after its root label, or after the pointer it ends in; `None`
/// when it is malformed or runs past the message.
pub fn name_end(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)? as usize;
        match len {
            0 => return Some(at + 1),
            1..=63 => at += 1 + len,
            _ if len & 0xc0 == 0xc0 => return (packet.len() >= at + 2).then_some(at + 2),
            _ => return None,
        }
    }
}

/// A query ID no one off the path can guess (RFC 5452): from the kernel's random pool.
pub fn random_id() -> u16 {
    let mut id = [0u8; 2];
    // SAFETY: the kernel writes at most two bytes into `id`.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n == 2 {
        u16::from_ne_bytes(id)
    } else {
        fastrand::u16(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::fixtures::query;
    use hickory_proto::rr::RecordType;

    #[test]
    fn a_reply_answers_its_query_only() {
        let q = query("Www.Example.com.", RecordType::A, Some(1232))
            .to_vec()
            .unwrap();
        let end = question_end(&q).unwrap();
        assert_eq!(&q[end..end + 3], &[0, 0, 41], "the OPT record follows");
        let mut reply = q.clone();
        reply[2] |= 0x80;
        assert!(answers(&q, end, &reply));
        // The name in another case (0x20) still answers it.
        reply[13] = b'w';
        assert!(answers(&q, end, &reply));
        let mut other_id = reply.clone();
        other_id[1] ^= 1;
        let mut other_type = reply.clone();
        other_type[end - 3] = 28;
        let mut other_name = reply.clone();
        other_name[14] = b'x';
        let mut a_query = reply.clone();
        a_query[2] &= 0x7f;
        for bad in [
            &other_id,
            &other_type,
            &other_name,
            &a_query,
            &reply[..end - 1].to_vec(),
        ] {
            assert!(!answers(&q, end, bad));
        }
    }

    #[test]
    fn question_end_never_reads_past_the_message() {
        for _ in 0..5000 {
            let len = fastrand::usize(..40);
            let bytes: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
            if let Some(end) = question_end(&bytes) {
                assert!(end <= bytes.len());
            }
        }
    }
}
