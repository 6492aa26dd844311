//! Per-worker pools of copy buffers for the L4 relays (TCP ports, TCP VIPs, upgrade tunnels,
//! UDP sessions). A relay takes a buffer when bytes arrive and gives it back as soon as its
//! direction has nothing in flight, so an idle connection or session holds none. Each worker is
//! a current-thread runtime, so a pool is a thread-local list: no lock, no sharing. Buffers are
//! never zeroed: reads go into their spare capacity.

use std::cell::RefCell;
use std::thread::LocalKey;

/// One read's worth for a TCP relay (the size the relays copied with before).
pub const TCP: usize = 32 * 1024;
/// The largest UDP datagram.
pub const UDP: usize = 65535;

/// Buffers kept per worker and size; more in use at once come from the allocator and are freed
/// when given back (a burst does not pin its peak).
const KEEP_TCP: usize = 64;
const KEEP_UDP: usize = 8;

thread_local! {
    static TCP_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static UDP_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
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
