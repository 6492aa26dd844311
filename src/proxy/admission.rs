//! Admission of client connections: the per-listener and total connection limits (a refused
//! connection is counted and closed at once, with a 503 on HTTP listeners), and the gate that a
//! process taking over from an old one keeps closed until it can serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::watch;

use super::Context;

/// One listener's count of open connections.
#[derive(Default)]
pub struct ListenerSlots {
    open: AtomicUsize,
    /// Refusing now: logged when it starts and when it ends, not per connection.
    refusing: AtomicBool,
}

impl ListenerSlots {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// An admitted connection: holds its place in the listener's and the process's counts.
pub struct Admission {
    ctx: Arc<Context>,
    slots: Arc<ListenerSlots>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::Relaxed);
        self.ctx.shutdown.release();
    }
}

impl Context {
    /// Takes a place for a new connection on `listener`, or says which limit refuses it.
    pub fn admit(
        self: &Arc<Self>,
        slots: &Arc<ListenerSlots>,
        listener: &str,
    ) -> Result<Admission, &'static str> {
        let settings = self.settings.load();
        let on_listener = slots.open.fetch_add(1, Ordering::Relaxed) + 1;
        let in_all = self.shutdown.acquire();
        let admission = Admission {
            ctx: self.clone(),
            slots: slots.clone(),
        };
        let refused = if on_listener > settings.max_connections_per_listener {
            Some("listener_limit")
        } else if in_all > settings.max_connections {
            Some("total_limit")
        } else {
            None
        };
        match refused {
            None => {
                if slots.refusing.swap(false, Ordering::Relaxed) {
                    tracing::info!(listener, "connection limit: accepting again");
                }
                Ok(admission)
            }
            Some(reason) => {
                drop(admission);
                if !slots.refusing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        listener,
                        limit = reason,
                        open_on_listener = on_listener - 1,
                        open = in_all - 1,
                        "connection limit reached: refusing new connections"
                    );
                }
                self.metrics.refused(reason);
                Err(reason)
            }
        }
    }
}

/// The HTTP answer to a connection refused by a limit; written without waiting for the request:
/// fixed bytes and the current second's `Date` (`headers::write_date`, formatted once a second),
/// in one buffer of its exact size.
pub fn refused_http() -> Vec<u8> {
    const HEAD: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: text/plain\r\ncontent-length: 26\r\nretry-after: 1\r\n";
    const BODY: &[u8] = b"\r\nconnection limit reached\r\n";
    let mut out = Vec::with_capacity(HEAD.len() + super::headers::DATE_LINE_LEN + BODY.len());
    out.extend_from_slice(HEAD);
    super::headers::write_date(&mut out);
    out.extend_from_slice(BODY);
    out
}

/// Closed: accept loops wait. Opened once, it stays open.
pub struct Gate(watch::Sender<bool>);

impl Gate {
    pub fn open() -> Gate {
        Gate(watch::Sender::new(true))
    }

    pub fn closed() -> Gate {
        Gate(watch::Sender::new(false))
    }

    pub fn set_open(&self) {
        self.0.send_replace(true);
    }

    pub fn is_open(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

#[cfg(test)]
mod tests {
    /// The refusal is a whole, dated answer whose length field matches its body.
    #[test]
    fn the_refusal_is_dated_and_framed() {
        let answer = super::refused_http();
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut head = httparse::Response::new(&mut fields);
        let httparse::Status::Complete(len) = head.parse(&answer).unwrap() else {
            panic!("a partial head");
        };
        assert_eq!(head.code, Some(503));
        let field = |name: &str| {
            let f = head.headers.iter().find(|h| h.name == name).unwrap();
            std::str::from_utf8(f.value).unwrap().to_string()
        };
        let date = field("date");
        assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
        assert_eq!(field("content-length"), (answer.len() - len).to_string());
        assert_eq!(answer.capacity(), answer.len(), "sized exactly");
    }
}
