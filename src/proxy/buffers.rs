//! Per-worker pools of copy buffers for the L4 relays (TCP ports, TCP VIPs, upgrade tunnels,
//! UDP sessions). A relay takes a buffer when bytes arrive and gives it back as soon as its
//! direction has nothing in flight, so an idle connection or session holds none. Each worker is
//! a current-thread runtime, so a pool is a thread-local list: no lock, no sharing. Buffers are
//! never zeroed: reads go into their spare capacity.
//!
//! Also the read buffers of HTTP/1.1 backend responses ([`response_read`]): a response's head
//! and body are slices of its buffer, so the buffer comes back shared; it is taken up again
//! once those slices are gone (`BytesMut::reserve` reclaims a buffer no slice holds), which
//! saves a request its largest allocation.

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::BytesMut;

/// One read's worth for a TCP relay (the size the relays copied with before).
pub const TCP: usize = 32 * 1024;
/// The largest UDP datagram.
pub const UDP: usize = 65535;

/// Buffers kept per worker and size; more in use at once come from the allocator and are freed
/// when given back (a burst does not pin its peak).
const KEEP_TCP: usize = 64;
const KEEP_UDP: usize = 8;

/// Response read buffers kept per worker, and the largest kept (a buffer a large body grew
/// is freed).
const KEEP_RESPONSE: usize = 32;
const KEPT_RESPONSE_CAPACITY: usize = 64 * 1024;

thread_local! {
    static TCP_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static UDP_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static RESPONSE_POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for `room` bytes, for a backend's response: one given back
/// ([`response_done`]) when no slice of it is still held, else a new one.
pub fn response_read(room: usize) -> BytesMut {
    let kept = RESPONSE_POOL
        .try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten();
    if let Some(mut buf) = kept
        // Taken up only when no slice holds it (else it is let go: its last slice frees it),
        // and only while its whole room is within the bound.
        && buf.try_reclaim(room)
        && buf.capacity() <= KEPT_RESPONSE_CAPACITY
    {
        return buf;
    }
    BytesMut::with_capacity(room)
}

/// A response's buffer, read to its end: kept for the worker's next response. Its storage may
/// still be shared with slices of the response on their way to the client.
pub fn response_done(buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() > KEPT_RESPONSE_CAPACITY {
        return;
    }
    let _ = RESPONSE_POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP_RESPONSE {
            p.push(buf);
        }
    });
}

/// An empty buffer with room for one read; back to its worker's pool on drop.
pub struct Buffer {
    buf: Vec<u8>,
    pool: &'static LocalKey<RefCell<Vec<Vec<u8>>>>,
    keep: usize,
}

impl Buffer {
    pub fn tcp() -> Buffer {
        Buffer::take(&TCP_POOL, TCP, KEEP_TCP)
    }

    pub fn udp() -> Buffer {
        Buffer::take(&UDP_POOL, UDP, KEEP_UDP)
    }

    fn take(pool: &'static LocalKey<RefCell<Vec<Vec<u8>>>>, size: usize, keep: usize) -> Buffer {
        let buf = pool
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(size));
        Buffer { buf, pool, keep }
    }

    /// The bytes read into it so far.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let keep = self.keep;
        // (During thread teardown the pool may be gone: the buffer is just freed.)
        let _ = self.pool.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < keep {
                p.push(buf);
            }
        });
    }
}

/// Buffers kept in this thread's pools, for tests.
#[cfg(test)]
pub fn pooled() -> (usize, usize) {
    (
        TCP_POOL.with(|p| p.borrow().len()),
        UDP_POOL.with(|p| p.borrow().len()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_buffer_is_taken_up_again_once_its_slices_are_gone() {
        let mut buf = response_read(4096);
        let at = buf.as_ptr();
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\nok");
        let head = buf.split_to(19).freeze();
        let body = buf.split().freeze();
        response_done(buf);
        drop((head, body));
        let again = response_read(4096);
        assert_eq!(again.as_ptr(), at, "the same storage");
        assert!(again.is_empty() && again.capacity() >= 4096);
        // A slice still held: a new buffer, and the held bytes stay as they were.
        let mut buf = again;
        buf.extend_from_slice(b"held");
        let held = buf.split().freeze();
        response_done(buf);
        let mut other = response_read(4096);
        other.extend_from_slice(b"next");
        assert_eq!(&held[..], b"held");
        assert_ne!(other.as_ptr(), held.as_ptr());
    }

    #[test]
    fn buffers_come_back_empty_with_their_room() {
        let before = pooled().0;
        let mut b = Buffer::tcp();
        b.vec().extend_from_slice(b"abc");
        assert_eq!(&*b, b"abc");
        drop(b);
        assert_eq!(pooled().0, before + 1);
        let mut again = Buffer::tcp();
        assert!(again.vec().is_empty() && again.vec().capacity() >= TCP);
        assert_eq!(pooled().0, before);
    }
}
