//! One fast-path exchange's bytes in flight (`h1`): a request body relayed to the backend while
//! the backend is watched for an early answer, then the response head read, checked and
//! rewritten, and its body relayed by its framing. Every wait is bounded; what fails is typed
//! for `exchange` (the client's fault or the backend's).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::exchange::{BodyAt, Failure, summed_wait};
use super::h1_framing::{Chunked, read_response, write_response_head_with};
use super::message::ResponseBody;
use super::pool::Pools;
use crate::backends::BackendState;

pub(super) const READ_CHUNK: usize = 16 * 1024;
/// A response head and a small body fit; bigger bodies grow the buffer to `READ_CHUNK` reads.
const RESPONSE_CHUNK: usize = 4 * 1024;
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;

/// How much of a request body went to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodySent {
    Whole,
    /// The backend answered (or closed) before it took the whole body: its answer, if any,
    /// is relayed, and the rest of the body is never read. Where the body stood then decides
    /// whose a close is ([`Failure::given`]) and whether a `5xx` it answered is charged
    /// (`exchange::Attempts::answered`); what fails after an answer is the backend's.
    Cut {
        at: BodyAt,
        closed: bool,
    },
}

/// Copies exactly `n` body bytes from the client to the backend, watching the backend for an
/// early answer meanwhile. A client that stops sending for `client_timeout` or goes away is the
/// client's failure, never the backend's; a backend that takes none of it for
/// `backend_timeout` (neither reading nor answering) is the backend's (504).
pub(super) async fn relay_exact(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut TcpStream,
    mut n: u64,
    (client_timeout, backend_timeout): (Duration, Duration),
) -> Result<BodySent, Failure> {
    let mut chunk = vec![0u8; READ_CHUNK];
    // When the proxy last turned to the client for more, and how long it waited on the client
    // before that (coarse clock): what a backend's close is judged by.
    let mut waiting_since = crate::clock::coarse_ms();
    let mut waited = 0;
    // The body cut as it stands: the proxy waiting on the client (`quiet`) or holding some.
    let cut = |waiting_since: u64, waited: u64, waiting: bool, closed: bool| {
        let quiet = waiting.then(|| crate::clock::coarse_ms().saturating_sub(waiting_since));
        let waited = waited + summed_wait(quiet.unwrap_or(0));
        let at = BodyAt::Unfinished { quiet, waited };
        Ok(BodySent::Cut { at, closed })
    };
    while n > 0 {
        let want = (n as usize).min(chunk.len());
        let got = tokio::select! {
            biased;
            ready = to.readable() => {
                match ready.map(|()| backend_spoke(to)) {
                    // Readiness without input: nothing was lost, read again.
                    Ok(Spoke::Nothing) => {}
                    Ok(Spoke::Interim(len)) => {
                        if !skip_interim(to, len).await {
                            return cut(waiting_since, waited, true, false);
                        }
                    }
                    Ok(Spoke::Answer) => return cut(waiting_since, waited, true, false),
                    Ok(Spoke::Closed) | Err(_) => return cut(waiting_since, waited, true, true),
                }
                continue;
            }
            read = tokio::time::timeout(client_timeout, from.read(&mut chunk[..want])) => match read {
                Err(_) => return Err(Failure::ClientStalled),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Failure::ClientGone),
                Ok(Ok(got)) => got,
            },
        };
        waited += summed_wait(crate::clock::coarse_ms().saturating_sub(waiting_since));
        match tokio::time::timeout(backend_timeout, to.write_all(&chunk[..got])).await {
            Ok(Ok(())) => {}
            // It may have answered before it closed: the answer is read next, and what fails
            // there is the backend's.
            Ok(Err(_)) => return cut(waiting_since, waited, false, false),
            Err(_) => return Err(Failure::TimedOut),
        }
        waiting_since = crate::clock::coarse_ms();
        n -= got as u64;
    }
    Ok(BodySent::Whole)
}

/// What a backend sent while it was being sent a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spoke {
    /// Nothing (a readiness that turned out empty, cleared so that the next wait is real).
    Nothing,
    /// An interim response (`100 Continue`, `103 Early Hints`) of this many bytes, whole: it
    /// is read past ([`skip_interim`]) and the body goes on, the backend still watched.
    Interim(usize),
    /// Its answer, or a head not yet whole: the body is cut, and the answer is read next (the
    /// connection not reused).
    Answer,
    /// It closed (or reset) the connection: the body is cut, and whatever it sent before is
    /// read next. Where the body stood then decides whose the close is.
    Closed,
}

/// Reads a whole interim head of `len` bytes off the backend's socket (it is there: it was
/// peeked) and drops it: an interim answer to a request whose body is still on its way is
/// not passed on (RFC 9110 §15.2 lets a proxy drop what the client did not ask for; `103
/// Early Hints` is a hint). False if the socket failed.
pub(super) async fn skip_interim(to: &mut TcpStream, len: usize) -> bool {
    // On the heap: rare, and kept out of every connection's future.
    let mut head = vec![0u8; len];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), to.read_exact(&mut head)).await,
        Ok(Ok(_))
    )
}

/// How much of what a backend sent during a body is looked at for an interim head.
const INTERIM_PEEK: usize = 4096;

/// What a backend has sent (or whether it closed) while it was being sent a body: looked at
/// without taking it from the socket.
pub(super) fn backend_spoke(stream: &TcpStream) -> Spoke {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let mut probe = [0u8; INTERIM_PEEK];
    let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
        // SAFETY: a peek into a local buffer of its length on a socket this stream owns.
        let n = unsafe {
            libc::recv(
                fd,
                probe.as_mut_ptr().cast(),
                probe.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    });
    use std::io::ErrorKind;
    match peeked {
        Ok(0) => Spoke::Closed,
        Ok(n) => interim_len(&probe[..n]).map_or(Spoke::Answer, Spoke::Interim),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Spoke::Nothing,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::NotConnected
            ) =>
        {
            Spoke::Closed
        }
        // Anything else is read next as the answer would be, and fails there if it must.
        Err(_) => Spoke::Answer,
    }
}

/// The length of the whole interim response head (1xx, not 101: a switch is never interim)
/// `bytes` begin with, if they do.
fn interim_len(bytes: &[u8]) -> Option<usize> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut head = httparse::Response::new(&mut fields);
    match head.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if matches!(head.code, Some(code) if (100..200).contains(&code) && code != 101) => {
            Some(len)
        }
        _ => None,
    }
}

/// What the response relay needs to know of the request.
#[derive(Clone, Copy)]
pub(super) struct Relay<'a> {
    /// A HEAD request: the response has no body whatever it says.
    pub(super) head_only: bool,
    /// The client connection closes after this response.
    pub(super) close_client: bool,
    /// The backend connection may go back to the pool afterwards (not when the request's body
    /// was cut short).
    pub(super) reuse: bool,
    /// Header lines added to the response (HSTS).
    pub(super) extra: &'a [u8],
    /// The app's response header rules.
    pub(super) rules: &'a super::headers::Rules,
    /// The wait for the response head, and then for each read of its body.
    pub(super) timeout: Duration,
    /// The longest a client may take to take a piece of the response.
    pub(super) client_timeout: Duration,
    /// When the request had gone out: the response time is from then to the response head.
    pub(super) sent: std::time::Instant,
}

pub(super) struct Relayed {
    pub(super) status: u16,
    /// The client connection must close (the body ran to the backend's close, or broke off).
    pub(super) close: bool,
}

/// Reads the backend's response head (within `timeout`) and relays the response to the client;
/// the backend connection goes back to the pool when the exchange left it reusable. `Err` is a
/// failure before any response byte reached the client; once one has, a broken body closes
/// the client connection (and, when the backend broke it, counts against the backend).
pub(super) async fn relay_response(
    client: &mut (impl AsyncWrite + Unpin),
    mut upstream: TcpStream,
    out: &mut Vec<u8>,
    rbuf: &mut BytesMut,
    (pools, state): (&Pools, &Arc<BackendState>),
    relay: &Relay<'_>,
) -> Result<Relayed, Failure> {
    let Relay {
        head_only,
        close_client,
        reuse,
        extra,
        rules,
        timeout,
        client_timeout,
        sent,
    } = *relay;
    rbuf.clear();
    if rbuf.capacity() > 4 * READ_CHUNK {
        *rbuf = BytesMut::new(); // a big response passed: give its room back
    }
    if rbuf.capacity() < RESPONSE_CHUNK {
        rbuf.reserve(RESPONSE_CHUNK);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (head_len, status, checked) = loop {
            // Parsed in a block of its own: the header slots are not kept across the read
            // below, so they do not weigh on every connection's future.
            let parsed = if rbuf.is_empty() {
                None
            } else {
                let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
                let mut res = httparse::Response::new(&mut slots);
                match res.parse(rbuf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let checked =
                            read_response(&res, head_only).map_err(Failure::BadResponse)?;
                        out.clear();
                        let close = close_client || checked.body == ResponseBody::ToClose;
                        write_response_head_with(out, &res, &checked, close, extra, rules);
                        Some((n, res.code.unwrap_or(502), checked))
                    }
                    Ok(httparse::Status::Partial) if rbuf.len() < MAX_RESPONSE_HEAD => None,
                    _ => return Err(Failure::BadResponse("backend sent a malformed response")),
                }
            };
            if let Some(head) = parsed {
                break head;
            }
            let n = drained_or(state, deadline, upstream.read_buf(rbuf)).await?;
            if n == 0 {
                return Err(Failure::Lost(
                    "backend closed the connection without a response".into(),
                ));
            }
        };
        rbuf.advance(head_len);
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(Failure::BadResponse("backend switched protocols unasked"));
            }
            // An interim response (103 Early Hints): passed on, then the real one.
            if !write_within(client, out, client_timeout).await {
                return Err(Failure::ClientGone);
            }
            continue;
        }
        state
            .metrics
            .response(http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY));
        state.metrics.response_time(sent.elapsed());
        let mut body_out = 0u64;
        let relayed = relay_body(
            (client, &mut upstream),
            (rbuf, out),
            checked.body,
            &mut body_out,
            (client_timeout, timeout),
        )
        .await;
        state.metrics.count().bytes_out.inc_by(body_out);
        let close = match relayed {
            Ok(reusable) => {
                if reuse && reusable && !checked.close && rbuf.is_empty() {
                    pools.checkin_raw(state, upstream);
                }
                checked.body == ResponseBody::ToClose
            }
            Err(BodyBroke::Backend) => {
                state.metrics.response(http::StatusCode::BAD_GATEWAY);
                // Counted as a 5xx for the outlier record, whatever status had begun.
                return Ok(Relayed {
                    status: 502,
                    close: true,
                });
            }
            Err(BodyBroke::Client) => true,
        };
        return Ok(Relayed { status, close });
    }
}

/// A backend read bounded by the response deadline, or by the backend's drain deadline when it
/// was removed before the exchange (one timer: a removal during the wait leaves it bounded by
/// the response timeout).
pub(super) async fn drained_or(
    state: &BackendState,
    deadline: tokio::time::Instant,
    read: impl Future<Output = std::io::Result<usize>>,
) -> Result<usize, Failure> {
    let drain = state.drain_deadline();
    // A coarse deadline: nearly every response comes long before it (`coarse_timer`).
    let until = drain.map_or(deadline, |d| d.min(deadline));
    match super::coarse_timer::timeout_at(until, read).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(Failure::Lost(format!("backend failed: {e}"))),
        Err(_) if drain.is_some_and(|d| d <= deadline) => Err(Failure::Removed),
        Err(_) => Err(Failure::TimedOut),
    }
}

/// Writes all of `bytes` to the client within `timeout`; the timer is only armed when the
/// socket does not take them at once (the common case costs no timer).
async fn write_within(
    client: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    timeout: Duration,
) -> bool {
    let mut write = std::pin::pin!(client.write_all(bytes));
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    match first {
        std::task::Poll::Ready(result) => result.is_ok(),
        std::task::Poll::Pending => {
            matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(())))
        }
    }
}

/// Which side broke a response body off once it had begun.
enum BodyBroke {
    Client,
    Backend,
}

/// Relays the body after `head` (sent with its first bytes); true when the backend connection
/// ended the exchange cleanly and can be reused. Every wait is bounded: a client that takes
/// nothing for `client_timeout`, a backend that sends nothing for `backend_timeout`.
async fn relay_body(
    (client, upstream): (&mut (impl AsyncWrite + Unpin), &mut TcpStream),
    (rbuf, head): (&mut BytesMut, &mut Vec<u8>),
    framing: ResponseBody,
    body_out: &mut u64,
    (client_timeout, backend_timeout): (Duration, Duration),
) -> Result<bool, BodyBroke> {
    let mut left = match framing {
        ResponseBody::Empty => 0,
        ResponseBody::Length(n) => n,
        ResponseBody::Chunked | ResponseBody::ToClose => u64::MAX,
    };
    let mut chunked = Chunked::default();
    loop {
        // What of `rbuf` belongs to this body.
        let take = match framing {
            ResponseBody::Chunked => match chunked.feed(rbuf) {
                Ok(Some(end)) => {
                    left = 0;
                    end
                }
                Ok(None) => rbuf.len(),
                Err(_) => return Err(BodyBroke::Backend),
            },
            _ => (rbuf.len() as u64).min(left) as usize,
        };
        if let ResponseBody::Length(_) = framing {
            left -= take as u64;
        }
        *body_out += take as u64;
        let written = if head.is_empty() {
            write_within(client, &rbuf[..take], client_timeout).await
        } else {
            head.extend_from_slice(&rbuf[..take]);
            let written = write_within(client, head, client_timeout).await;
            head.clear();
            written
        };
        if !written {
            return Err(BodyBroke::Client);
        }
        rbuf.advance(take);
        if left == 0 {
            return Ok(true);
        }
        rbuf.reserve(READ_CHUNK);
        let deadline = tokio::time::Instant::now() + backend_timeout;
        match super::coarse_timer::timeout_at(deadline, upstream.read_buf(rbuf)).await {
            Ok(Ok(0)) if framing == ResponseBody::ToClose => return Ok(false),
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Err(BodyBroke::Backend),
            Ok(Ok(_)) => {}
        }
    }
}
