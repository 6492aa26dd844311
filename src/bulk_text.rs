//! Large text answers of the admin API — a `/metrics` scrape, the whole of `/v1/routes` —
//! written into fixed-size chunks rather than one string, and sent chunk by chunk.
//!
//! Why: a string that grows to hundreds of megabytes is copied at each doubling, and each new
//! allocation's pages are faulted in and zeroed by the kernel. At 50,000 apps × 10 tasks a
//! scrape is 619 MB of text: two thirds of its 7 s went to the kernel clearing pages, and the
//! process held 1.6 GB at its peak. Chunks are written once, each freed as soon as it is sent.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// How much text one chunk holds: large enough that a chunk is one write, small enough that a
/// half-filled last one wastes little.
const CHUNK: usize = 256 * 1024;

/// Full chunks a streaming body holds for its client before the writer keeps them itself.
const IN_FLIGHT: usize = 4;

/// Text written in chunks of [`CHUNK`] bytes (`std::fmt::Write` and `std::io::Write`).
///
/// Made by [`BulkText::new`] it keeps every chunk until [`BulkText::into_body`]. Made by
/// [`BulkText::streaming`] it hands each full chunk to its body as soon as the body has room
/// for it, so that a client that keeps up holds a few chunks, not the answer. It never waits
/// for the client: the writer may hold locks others need (a scrape encodes each metric family
/// under the family's lock), and a thread waiting on each slow client would be a thread per
/// connection. A chunk the body has no room for stays here until [`BulkText::finish`] hands
/// what is left to the body, which sends it after the rest.
#[derive(Default)]
pub struct BulkText {
    full: VecDeque<Bytes>,
    current: Vec<u8>,
    len: usize,
    to_body: Option<Stream>,
    /// The streaming body was dropped (its client left): what is written is dropped too.
    gone: bool,
}

/// The writer's end: the chunks, and where it leaves what is left when it finishes (a
/// channel that closes with nothing left there is an answer broken off).
struct Stream {
    chunks: mpsc::Sender<Bytes>,
    rest: Arc<Mutex<Option<VecDeque<Bytes>>>>,
}

impl BulkText {
    pub fn new() -> BulkText {
        BulkText::default()
    }

    /// A text streamed to the body returned with it (whose length is not known before).
    pub fn streaming() -> (BulkText, BulkBody) {
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let rest = Arc::new(Mutex::new(None));
        let text = BulkText {
            to_body: Some(Stream {
                chunks: tx,
                rest: rest.clone(),
            }),
            ..BulkText::default()
        };
        let body = BulkBody {
            stream: Some(Streamed {
                chunks: rx,
                rest,
                holding: None,
            }),
            ..BulkBody::default()
        };
        (text, body)
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.gone {
            return;
        }
        self.len += bytes.len();
        while !bytes.is_empty() {
            if self.current.capacity() == 0 {
                self.current = Vec::with_capacity(CHUNK);
            }
            let room = CHUNK - self.current.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.current.extend_from_slice(now);
            bytes = later;
            if self.current.len() == CHUNK {
                self.full
                    .push_back(Bytes::from(std::mem::take(&mut self.current)));
                self.hand_over();
                if self.gone {
                    return;
                }
            }
        }
    }

    /// Full chunks to the streaming body, in order, while it has room (never waiting).
    fn hand_over(&mut self) {
        let Some(stream) = &self.to_body else {
            return;
        };
        while let Some(chunk) = self.full.pop_front() {
            match stream.chunks.try_send(chunk) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(chunk)) => {
                    self.full.push_front(chunk);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.full.clear();
                    self.current = Vec::new();
                    self.gone = true;
                    return;
                }
            }
        }
    }

    /// A text written by `write` on the blocking pool, streamed to the body returned at once:
    /// the admin API's large answers. What `write` holds (its locks, a turn) is let go when it
    /// returns, before what the body had no room for is handed over ([`BulkText::finish`]).
    pub fn written_on_blocking_pool(
        write: impl FnOnce(&mut BulkText) + Send + 'static,
    ) -> BulkBody {
        let (mut text, body) = BulkText::streaming();
        tokio::task::spawn_blocking(move || {
            write(&mut text);
            text.finish();
        });
        body
    }

    /// The bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text as a response body (a streaming text's body is the one made with it: this
    /// gives an empty one).
    pub fn into_body(mut self) -> BulkBody {
        if self.to_body.is_some() {
            return BulkBody::from(Bytes::new());
        }
        if !self.current.is_empty() {
            self.full
                .push_back(Bytes::from(std::mem::take(&mut self.current)));
        }
        BulkBody {
            chunks: std::mem::take(&mut self.full),
            left: Some(self.len as u64),
            stream: None,
        }
    }

    /// A streaming text's end: what is left goes to the body, which sends it after what it
    /// was handed before and then ends cleanly. Never waits. A streaming text dropped without
    /// it breaks its body off.
    pub fn finish(mut self) {
        if !self.current.is_empty() {
            self.full
                .push_back(Bytes::from(std::mem::take(&mut self.current)));
        }
        let Some(stream) = self.to_body.take() else {
            return;
        };
        if !self.gone {
            let rest = std::mem::take(&mut self.full);
            *stream.rest.lock().unwrap_or_else(|e| e.into_inner()) = Some(rest);
        }
        // The sender goes after the rest is in place: the body reads it once the channel is
        // closed.
        drop(stream);
    }
}

impl std::fmt::Write for BulkText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

impl std::io::Write for BulkText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response body of chunks, sent in turn and each dropped once taken: every admin answer
/// is one (most are a single chunk). A streaming one ([`BulkText::streaming`]) takes its
/// chunks as they are written, and fails (the connection is cut, not ended as if whole) when
/// its writer stopped without finishing.
#[derive(Debug, Default)]
pub struct BulkBody {
    chunks: VecDeque<Bytes>,
    /// Bytes left to send, when known.
    left: Option<u64>,
    stream: Option<Streamed>,
}

/// A streaming body's end of its text.
struct Streamed {
    chunks: mpsc::Receiver<Bytes>,
    /// What the writer left when it finished; `None` while it writes (or if it never will).
    rest: Arc<Mutex<Option<VecDeque<Bytes>>>>,
    /// Held until the first chunk arrives (or the text ends): see [`BulkBody::hold`].
    holding: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").finish_non_exhaustive()
    }
}

impl BulkBody {
    /// Keeps `guard` until a streaming body's first chunk is written (or its text ends);
    /// drops it at once for another body. The admin API holds its "preparing an answer"
    /// guard so: a scrape that waits its turn before writing its first byte is not a client
    /// gone idle.
    pub fn hold(&mut self, guard: impl Send + Sync + 'static) {
        if let Some(stream) = &mut self.stream {
            stream.holding = Some(Box::new(guard));
        }
    }
}

/// A streamed answer whose writer stopped before its end (it panicked).
#[derive(Debug)]
pub struct BrokenOff;

impl std::fmt::Display for BrokenOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the answer broke off while it was written")
    }
}

impl std::error::Error for BrokenOff {}

impl From<BulkText> for BulkBody {
    fn from(text: BulkText) -> BulkBody {
        text.into_body()
    }
}

impl From<String> for BulkBody {
    fn from(text: String) -> BulkBody {
        BulkBody::from(Bytes::from(text))
    }
}

impl From<Bytes> for BulkBody {
    fn from(bytes: Bytes) -> BulkBody {
        let left = Some(bytes.len() as u64);
        BulkBody {
            chunks: (!bytes.is_empty()).then_some(bytes).into_iter().collect(),
            left,
            stream: None,
        }
    }
}

impl Body for BulkBody {
    type Data = Bytes;
    type Error = BrokenOff;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BrokenOff>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            if let Some(left) = &mut self.left {
                *left -= chunk.len() as u64;
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(stream) = &mut self.stream else {
            return Poll::Ready(None);
        };
        match stream.chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => {
                stream.holding = None;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) => {
                let rest = stream.rest.lock().unwrap_or_else(|e| e.into_inner()).take();
                self.stream = None;
                match rest {
                    // Finished: what it left, then the end.
                    Some(rest) => {
                        self.chunks = rest;
                        self.poll_frame(cx)
                    }
                    None => Poll::Ready(Some(Err(BrokenOff))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.stream.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(left) if self.stream.is_none() => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::fmt::Write as _;

    /// Text written in pieces of every size comes back whole, in order, in chunks of at most
    /// [`CHUNK`] bytes, with its exact length announced.
    #[tokio::test]
    async fn text_comes_back_whole_in_bounded_chunks() {
        let mut text = BulkText::new();
        let mut expected = String::new();
        for i in 0..20_000 {
            let piece = "x".repeat(i % 97) + &i.to_string();
            write!(text, "{piece}").unwrap();
            expected.push_str(&piece);
        }
        let big = "y".repeat(3 * CHUNK + 5);
        std::io::Write::write_all(&mut text, big.as_bytes()).unwrap();
        expected.push_str(&big);
        assert_eq!(text.len(), expected.len());
        let mut body = text.into_body();
        assert_eq!(body.size_hint().exact(), Some(expected.len() as u64));
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(!data.is_empty() && data.len() <= CHUNK);
            got.extend_from_slice(&data);
        }
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    async fn read_all(mut body: BulkBody) -> Result<Vec<u8>, BrokenOff> {
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            got.extend_from_slice(&frame?.into_data().unwrap());
        }
        assert!(body.is_end_stream());
        Ok(got)
    }

    fn pieces(text: &mut BulkText, n: usize) -> Vec<u8> {
        let mut written = Vec::new();
        for i in 0..n {
            let piece = format!("{i:09} {}\n", "z".repeat(i % 300));
            text.push(piece.as_bytes());
            written.extend_from_slice(piece.as_bytes());
        }
        written
    }

    /// A streamed text is never waited on while written, whoever reads it: with no reader at
    /// all, many more chunks than the body holds are written; `finish` then hands over the
    /// rest as the client takes it, and the answer arrives whole, in order, its length not
    /// announced before.
    #[tokio::test]
    async fn a_streamed_text_is_written_without_waiting_and_arrives_whole() {
        let (mut text, body) = BulkText::streaming();
        assert_eq!(body.size_hint().exact(), None);
        let written = pieces(&mut text, 80_000);
        assert!(written.len() > 10 * IN_FLIGHT * CHUNK, "{}", written.len());
        assert!(text.full.len() > IN_FLIGHT, "kept, not waited on");
        text.finish();
        assert_eq!(read_all(body).await.unwrap(), written);
    }

    /// Read as it is written, nothing is kept by the writer: each full chunk goes to the body
    /// at once.
    #[tokio::test]
    async fn a_streamed_text_read_as_written_keeps_nothing() {
        let (mut text, mut body) = BulkText::streaming();
        let mut written = Vec::new();
        let mut got = Vec::new();
        for round in 0..50 {
            let piece = vec![b'a' + (round % 26) as u8; 2 * CHUNK + 7];
            text.push(&piece);
            written.extend_from_slice(&piece);
            assert!(text.full.is_empty(), "round {round}: kept");
            while got.len() + CHUNK <= written.len() {
                let frame = body.frame().await.unwrap().unwrap();
                got.extend_from_slice(&frame.into_data().unwrap());
            }
        }
        text.finish();
        got.extend(read_all(body).await.unwrap());
        assert_eq!(got, written);
    }

    /// A writer that stops without finishing (it panicked) breaks the body off with an error,
    /// so the client's connection is cut rather than the answer ended as if whole; a client
    /// that leaves stops the writing's memory (what is written after is dropped).
    #[tokio::test]
    async fn an_unfinished_text_breaks_its_body_off_and_a_gone_client_stops_the_writing() {
        let (mut text, body) = BulkText::streaming();
        pieces(&mut text, 100);
        drop(text);
        assert!(read_all(body).await.is_err());

        let (mut text, body) = BulkText::streaming();
        drop(body);
        pieces(&mut text, 40_000);
        assert!(text.gone);
        assert!(text.full.is_empty() && text.current.capacity() == 0);
        text.finish();
    }

    /// What a streaming body holds (the admin API's "preparing" guard) is let go at its first
    /// chunk, or at its end when it has none; another body lets it go at once. A streaming
    /// text made into a body gives an empty one (its chunks go to its own body).
    #[tokio::test]
    async fn a_held_guard_goes_with_the_first_chunk() {
        let guard = Arc::new(());
        let (mut text, mut body) = BulkText::streaming();
        body.hold(guard.clone());
        assert_eq!(Arc::strong_count(&guard), 2);
        text.push(&vec![b'x'; CHUNK]);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap().len(), CHUNK);
        assert_eq!(Arc::strong_count(&guard), 1, "let go at the first chunk");
        text.finish();
        assert!(read_all(body).await.unwrap().is_empty());

        let (text, mut body) = BulkText::streaming();
        body.hold(guard.clone());
        text.finish();
        assert!(read_all(body).await.unwrap().is_empty());
        assert_eq!(Arc::strong_count(&guard), 1, "let go at the end");

        let mut plain = BulkBody::from("ok".to_string());
        plain.hold(guard.clone());
        assert_eq!(Arc::strong_count(&guard), 1, "not held");

        let (mut text, _body) = BulkText::streaming();
        text.push(b"kept by the stream");
        assert_eq!(text.into_body().size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn an_empty_text_is_an_empty_body() {
        let body = BulkText::new().into_body();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(BulkBody::from(String::new()).is_end_stream());
        let one = BulkBody::from("ok\n".to_string());
        assert_eq!(one.collect().await.unwrap().to_bytes(), "ok\n");
    }
}
