//! The two HTTP/1.1 codecs on the same bytes: a client's request stream (pipelined requests,
//! bodies) read by the fast path (`h1`: leading empty lines skipped, the head cut at its blank
//! line, httparse, `h1_framing::read_head`, then the body its checked Content-Length spans) and
//! by hyper's HTTP/1 server as `http` builds it, in process over an in-memory duplex, with
//! `message::check_request` run on each head hyper parsed. They must agree, request by request,
//! on accepting or refusing it, and on where each message ends: the same (method, target, body)
//! for every request both accept, and the same number of them.
//!
//! What the fast path hands to hyper (HTTP/1.0, absolute-form, chunked bodies, upgrades,
//! `Expect`) is compared on accept/refuse only: from that head on, hyper reads the connection
//! on both paths.
//!
//! One difference is intended (RFC 9112 §6.1, and tests/desync.rs `BothFramings`): a request
//! with both Content-Length and Transfer-Encoding is refused by the fast path, while hyper
//! drops the Content-Length, reads the chunked body and closes the connection after it.
#![no_main]
use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use libfuzzer_sys::fuzz_target;
use switchyard::config::Config;
use switchyard::proxy::Settings;
use switchyard::proxy::h1_framing::{empty_lines, head_end, read_head};
use switchyard::proxy::message::{self, Refusal, RequestBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest input tried: a few pipelined requests with small bodies.
const MAX_INPUT: usize = 4096;
/// Header slots the fast path parses into (`h1::MAX_HEADERS`, private there).
const FAST_MAX_HEADERS: usize = 128;
/// hyper must be done with the input by then. The clock is paused and only moves when every
/// task waits on a timer, so any advance at all means hyper is stuck; this stays below the
/// header read timeout, which would otherwise end a stuck connection quietly.
const DRIVE_TIMEOUT: Duration = Duration::from_secs(5);

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| Config::default().proxy_settings())
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    })
}

/// A request body as one side read it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Complete(Vec<u8>),
    /// The input ended inside it.
    Incomplete,
}

/// What the fast path does with each request, in order; the last one ends the connection's
/// time on the fast path unless the input ran out first.
#[derive(Debug)]
enum Fast {
    /// Forwarded: Content-Length (or no) body; `close` when `Connection: close` ends the
    /// connection after it.
    Forwarded {
        method: String,
        target: String,
        body: Body,
        close: bool,
    },
    /// Answered with an error, and the connection closed. `both_framings`: the head has both
    /// Content-Length and Transfer-Encoding fields.
    Refused {
        refusal: Refusal,
        both_framings: bool,
    },
    /// Acceptable, left to hyper with the bytes from its head on.
    Fallback {
        method: String,
        target: String,
        body: RequestBody,
        /// A Transfer-Encoding's last coding has parameters (`chunked;x`).
        chunked_params: bool,
    },
}

/// The fast path's reading of a connection's bytes (`h1::serve` and `h1::plan`, routing
/// aside: every acceptable request is taken to reach a service it can forward to). With each
/// step, whether the bytes skipped before its head held a bare CR.
fn fast_path(data: &[u8]) -> (Vec<Fast>, Vec<bool>) {
    let mut bare_cr = Vec::new();
    let steps = fast_steps(data, &mut bare_cr);
    (steps, bare_cr)
}

fn fast_steps(data: &[u8], bare_cr: &mut Vec<bool>) -> Vec<Fast> {
    let settings = settings();
    let mut steps = Vec::new();
    let mut buf = data;
    loop {
        // Empty lines before a request line are ignored, as `h1::serve` skips them.
        let skipped = empty_lines(buf);
        bare_cr.push(
            buf[..skipped]
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'\r' && buf.get(i + 1) != Some(&b'\n')),
        );
        buf = &buf[skipped..];
        // No whole head before the input ends: the connection closes, nothing answered.
        let Some(head_len) = head_end(buf) else {
            return steps;
        };
        if head_len > settings.max_header_bytes {
            steps.push(Fast::Refused {
                refusal: Refusal {
                    status: 431,
                    reason: "request head too large",
                },
                both_framings: false,
            });
            return steps;
        }
        let (head, rest) = buf.split_at(head_len);
        let mut slots = [httparse::EMPTY_HEADER; FAST_MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let parsed = req.parse(head);
        let both_framings = matches!(parsed, Ok(httparse::Status::Complete(_)))
            && ["content-length", "transfer-encoding"]
                .iter()
                .all(|name| req.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name)));
        let read = match parsed {
            Ok(httparse::Status::Complete(_)) if req.headers.len() <= settings.max_headers => {
                read_head(&req)
            }
            Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
                Err(Refusal {
                    status: 431,
                    reason: "too many header fields",
                })
            }
            _ => Err(Refusal {
                status: 400,
                reason: "malformed request",
            }),
        };
        match read {
            Err(refusal) => {
                steps.push(Fast::Refused {
                    refusal,
                    both_framings,
                });
                return steps;
            }
            Ok(None) => {
                // `read_head` passed it, so it has a method and its checks passed.
                let method = req.method.unwrap_or_default().to_string();
                let target = req.path.unwrap_or_default().to_string();
                let body = message::target_form(method.as_bytes(), target.as_bytes())
                    .and_then(|t| {
                        message::check_request(
                            req.version == Some(0),
                            method.as_bytes(),
                            t,
                            req.headers.iter().map(|h| (h.name.as_bytes(), h.value)),
                        )
                    })
                    .expect("read_head passed it")
                    .body;
                let chunked_params = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("transfer-encoding")
                        && h.value.rsplit(|&b| b == b',').next().is_some_and(|c| c.contains(&b';'))
                });
                steps.push(Fast::Fallback {
                    method,
                    target,
                    body,
                    chunked_params,
                });
                return steps;
            }
            Ok(Some(head)) => {
                let length = match head.checked.body {
                    RequestBody::Length(n) => n,
                    _ => 0,
                };
                let (method, target, close) =
                    (head.method.to_string(), head.path.to_string(), head.checked.close);
                if (rest.len() as u64) < length {
                    steps.push(Fast::Forwarded {
                        method,
                        target,
                        body: Body::Incomplete,
                        close,
                    });
                    return steps;
                }
                let (body, after) = rest.split_at(length as usize);
                steps.push(Fast::Forwarded {
                    method,
                    target,
                    body: Body::Complete(body.to_vec()),
                    close,
                });
                if close {
                    return steps;
                }
                buf = after;
            }
        }
    }
}

/// One request as hyper's server gave it to the service.
#[derive(Debug)]
struct Seen {
    method: String,
    target: String,
    /// hyper read the target as authority-form (`host:port`, no scheme), or as absolute-form
    /// with a scheme other than http and https.
    other_form: bool,
    /// Every field, for the failure report.
    #[allow(dead_code)]
    headers: Vec<(String, Vec<u8>)>,
    /// `message::check_request` on hyper's head: the body framing it found, or its refusal.
    verdict: Result<RequestBody, Refusal>,
    /// `None`: refused, so not read (the connection closes after the answer).
    body: Option<Body>,
}

/// `http::check` (private there) for HTTP/1: the target's form from hyper's URI, then
/// `message::check_request` on the header map hyper built.
/// The general path's own check of hyper's head (`http::check`).
fn check(req: &Request<Incoming>) -> Result<RequestBody, Refusal> {
    switchyard::proxy::http::check(req).map(|checked| checked.body.unwrap_or(RequestBody::None))
}

/// hyper's reading of the same bytes: every request its service was called with, and what it
/// wrote back (for the failure report).
fn hyper_path(data: &[u8]) -> (Vec<Seen>, Vec<u8>) {
    let seen = Rc::new(RefCell::new(Vec::<Seen>::new()));
    let record = seen.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let record = record.clone();
        let verdict = check(&req);
        let index = {
            let mut all = record.borrow_mut();
            all.push(Seen {
                method: req.method().as_str().to_string(),
                target: req.uri().to_string(),
                other_form: match req.uri().scheme_str() {
                    None => req.uri().authority().is_some(),
                    Some(scheme) => {
                        !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https")
                    }
                },
                headers: req
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                    .collect(),
                verdict,
                body: None,
            });
            all.len() - 1
        };
        async move {
            let mut response = Response::new(Full::new(Bytes::new()));
            match verdict {
                // As `http::proxy` answers a refusal: its status, and the connection closes.
                Err(refusal) => {
                    *response.status_mut() =
                        StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, "close".parse().unwrap());
                }
                Ok(_) => {
                    record.borrow_mut()[index].body = Some(Body::Incomplete);
                    if let Ok(collected) = req.into_body().collect().await {
                        record.borrow_mut()[index].body =
                            Some(Body::Complete(collected.to_bytes().to_vec()));
                    }
                }
            }
            Ok::<_, Infallible>(response)
        }
    });
    let settings = settings();
    let written = runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        // As `http::serve` builds it for HTTP/1, but for `half_close`: the harness ends its
        // input with an EOF right after the last byte, which without it makes hyper drop the
        // request it is still answering (a client that waits for its answers keeps its side
        // open). That only changes what happens at the EOF, not how any message is read.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.client_header_timeout)
            .max_buf_size(settings.max_header_bytes)
            .max_headers(settings.max_headers)
            .keep_alive(true)
            .half_close(true)
            .serve_connection(TokioIo::new(server), service)
            .with_upgrades();
        let client = async move {
            client.write_all(data).await.unwrap();
            client.shutdown().await.unwrap();
            let mut written = Vec::new();
            let _ = client.read_to_end(&mut written).await;
            written
        };
        let driven = tokio::time::timeout(DRIVE_TIMEOUT, async { tokio::join!(conn, client) });
        match driven.await {
            Ok((_, written)) => written,
            Err(_) => panic!(
                "hyper did not finish with {:?} (it has seen {:?})",
                data.escape_ascii().to_string(),
                seen.borrow()
            ),
        }
    });
    let seen = seen.take();
    (seen, written)
}

fn compare(data: &[u8], (fast, bare_cr): (&[Fast], &[bool]), hyper: &[Seen], written: &[u8]) {
    let fail = |what: String| -> ! {
        panic!(
            "{what}\ninput: \"{}\"\nfast path: {fast:#?}\nhyper: {hyper:#?}\nhyper wrote: \"{}\"",
            data.escape_ascii(),
            written.escape_ascii()
        )
    };
    for (i, step) in fast.iter().enumerate() {
        let seen = hyper.get(i);
        match step {
            Fast::Forwarded {
                method,
                target,
                body,
                close,
            } => {
                let Some(seen) = seen else {
                    fail(format!(
                        "request {i}: the fast path forwards it, hyper refuses it (or never reads it)"
                    ));
                };
                if let Err(refusal) = seen.verdict {
                    fail(format!(
                        "request {i}: the fast path forwards it, our check of hyper's head refuses it: {refusal:?}"
                    ));
                }
                if (method, target) != (&seen.method, &seen.target) {
                    fail(format!("request {i}: not the same method and target"));
                }
                if Some(body) != seen.body.as_ref() {
                    fail(format!("request {i}: not the same body"));
                }
                if *close && hyper.len() > i + 1 {
                    fail(format!(
                        "request {i}: `Connection: close` ends the fast path's reading, hyper reads on"
                    ));
                }
            }
            Fast::Refused {
                refusal,
                both_framings,
            } => {
                let Some(seen) = seen else { return };
                match seen.verdict {
                    Err(_) => return,
                    // The intended difference: hyper takes the chunked framing, drops the
                    // Content-Length (unread when it follows Transfer-Encoding), and reads
                    // nothing after this request.
                    Ok(RequestBody::Chunked)
                        if *both_framings && refusal.status == 400 && hyper.len() == i + 1 =>
                    {
                        return;
                    }
                    Ok(_) => fail(format!(
                        "request {i}: the fast path refuses it ({refusal:?}), hyper and our check accept it"
                    )),
                }
            }
            Fast::Fallback {
                method,
                target,
                body,
                chunked_params,
            } => {
                let Some(seen) = seen else {
                    fail(format!(
                        "request {i}: the fast path accepts it (for hyper), hyper refuses it (or never reads it)"
                    ));
                };
                match &seen.verdict {
                    Err(refusal) => fail(format!(
                        "request {i}: the fast path accepts it (for hyper), our check of hyper's head refuses it: {refusal:?}"
                    )),
                    Ok(framing) if (method, framing) != (&seen.method, body) => {
                        fail(format!("request {i}: not the same method and framing"))
                    }
                    Ok(_) => return,
                }
            }
        }
    }
    // The fast path read no further: the input ended, or `Connection: close`.
    if hyper.len() > fast.len() {
        fail(format!(
            "hyper read {} request(s), the fast path {}",
            hyper.len(),
            fast.len()
        ));
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let (fast, bare_cr) = fast_path(data);
    let (hyper, written) = hyper_path(data);
    compare(data, (&fast, &bare_cr), &hyper, &written);
});
