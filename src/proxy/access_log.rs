//! The access log (`http.access_log`), the general path's (HTTP/1.x on hyper and HTTP/2 alike):
//! one line per request, written when its answer ends — whole, or cut off — with the body
//! bytes passed to the client's connection and who ended it (`term`, HAProxy's termination
//! state's two characters, which marathon-lb users read in its logs): `--` a whole answer;
//! first character `C` the client went away (closed, or reset its stream), `c` the client
//! stopped reading for `proxy.client_header_timeout` (its stream reset), `S` the backend broke
//! its body, `I` a panic in the proxy while the body was sent (a panic before the head drops
//! the request's future like a client that left, so it is logged `CH`; the `stream_panic`
//! metric and its log line tell it apart); second character `H` before the response head was
//! sent, `D` during its body. A request whose answer never started is logged with status 0.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, header};
use http_body::{Body, Frame, SizeHint};

use super::request_body::ClientBody;
use super::upstream::ProxyBody;

/// What the access log says of one request; logged when dropped.
pub struct Entry {
    started: Instant,
    /// The client's address (the PROXY header's, where one was read).
    client: SocketAddr,
    method: http::Method,
    host: String,
    path: String,
    /// 0 until a response head is handed to the client's codec.
    status: u16,
    upstream: Option<SocketAddr>,
    bytes: u64,
    /// Who ended the answer early, once known; a whole answer, or a drop without a cause, is
    /// decided when the line is written.
    ender: Option<u8>,
}

impl Entry {
    pub fn of(req: &Request<ClientBody>, client: SocketAddr) -> Box<Entry> {
        // HTTP/2 names its host in `:authority`; HTTP/1 in Host.
        let host = req
            .uri()
            .authority()
            .map(http::uri::Authority::as_str)
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("-");
        // A value that is no authority (refused with 400 by `http::check`, but logged) is
        // written quoted and escaped: its spaces must not read as the line's next fields.
        let host = if host == "-" || super::message::valid_authority(host.as_bytes()) {
            host.to_string()
        } else {
            format!("{host:?}")
        };
        Box::new(Entry {
            started: Instant::now(),
            client,
            method: req.method().clone(),
            host,
            path: req.uri().path().into(),
            status: 0,
            upstream: None,
            bytes: 0,
            ender: None,
        })
    }

    /// The response head is going to the client.
    pub fn answered(&mut self, status: u16, upstream: Option<SocketAddr>) {
        self.status = status;
        self.upstream = upstream;
    }

    /// The client was found gone before its answer (by the exchange).
    pub fn client_gone(&mut self) {
        self.ender = Some(b'C');
    }

    fn term(&self, whole: bool) -> [u8; 2] {
        let phase = if self.status == 0 { b'H' } else { b'D' };
        match self.ender {
            Some(ender) => [ender, phase],
            None if whole => *b"--",
            None => [b'C', phase],
        }
    }

    fn write(&self, whole: bool) {
        let term = self.term(whole);
        tracing::info!(
            target: "switchyard::access",
            client = %self.client,
            method = %self.method,
            host = %self.host,
            path = %self.path,
            status = self.status,
            bytes = self.bytes,
            upstream = %self.upstream.map_or("-".to_string(), |a| a.to_string()),
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            term = %String::from_utf8_lossy(&term),
        );
    }
}

/// A request whose answer has not started: logged if the exchange is dropped (the client
/// went away while the backend was asked) or panics.
pub struct Pending(pub Option<Box<Entry>>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(entry) = &self.0 {
            entry.write(false);
        }
    }
}

/// A response body with its request's log entry (none when the access log is off): counts the
/// body bytes taken from it, and writes the line when it is dropped.
pub struct Logged {
    body: ProxyBody,
    entry: Option<Box<Entry>>,
    ended: bool,
}

impl Logged {
    pub fn new(body: ProxyBody, entry: Option<Box<Entry>>) -> Logged {
        Logged {
            body,
            entry,
            ended: false,
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(entry) = &self.entry {
            entry.write(self.ended || self.body.is_end_stream());
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let Some(entry) = &mut this.entry {
            match &frame {
                Some(Ok(frame)) => {
                    entry.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                Some(Err(_)) => entry.ender = entry.ender.or(Some(b'S')),
                None => this.ended = true,
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl super::h2_server::StreamBody for Logged {
    fn cut_off(self: Pin<&mut Self>, why: super::h2_server::CutOff) {
        if let Some(entry) = &mut self.get_mut().entry {
            let ender = match why {
                super::h2_server::CutOff::Stalled => b'c',
                super::h2_server::CutOff::Panicked => b'I',
            };
            entry.ender = entry.ender.or(Some(ender));
        }
    }

    fn take_raw_head(&mut self) -> Option<super::upstream_h1::RawHead> {
        self.body.take_raw_head()
    }
}
