//! HTTP desync probes, as an attacker would send them, through every HTTP entry point: an
//! app's service port and the shared vhost listener (the fast path), and the vhost listener of
//! an instance with the access log on (every request on the general path, hyper).
//!
//! Behind them is a recording backend with a strict parser of its own: it logs every message it
//! parsed (method, target, Host, body) and the exact framing it read. After each probe the
//! backend must have seen exactly the messages the client meant and nothing else: a refused
//! probe reaches it not at all, an accepted one as the same messages with one unambiguous
//! framing. After every probe a fresh request must come back clean, so that no pooled backend
//! connection was left poisoned.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::marathon::{app, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "desync.test";

/// One message as the backend parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    body: Vec<u8>,
}

fn seen(method: &str, target: &str, body: &[u8]) -> Seen {
    Seen {
        method: method.into(),
        target: target.into(),
        body: body.to_vec(),
    }
}

#[derive(Default)]
struct Log {
    messages: Vec<Seen>,
    /// What the backend could not parse unambiguously: each one is a desync.
    ambiguous: Vec<String>,
    /// Messages the connection's close cut short: safe (the backend drops them), and only
    /// allowed where the client's own message was broken and it was answered with an error.
    cut: usize,
}

/// A strict HTTP/1.1 server that records what it parses and answers by the path.
async fn recording_backend() -> (SocketAddr, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve_backend(s, shared.clone()));
        }
    });
    (addr, log)
}

async fn serve_backend(mut s: TcpStream, log: Arc<Mutex<Log>>) {
    let mut buf = Vec::new();
    loop {
        let message = match parse_message(&mut s, &mut buf).await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(Fault::Cut) => {
                log.lock().unwrap().cut += 1;
                return;
            }
            Err(Fault::Ambiguous(why)) => {
                log.lock().unwrap().ambiguous.push(why);
                return;
            }
        };
        let target = message.target.clone();
        let head_request = message.method == "HEAD";
        log.lock().unwrap().messages.push(message);
        let reply: Vec<u8> = match target.as_str() {
            "/resp/two-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!".to_vec(),
            "/resp/bad-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok".to_vec(),
            "/resp/bad-te" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok".to_vec(),
            "/resp/cl-te" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
            "/resp/conn-cl" => b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/resp/204-body" => b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            "/resp/304-body" => b"HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled".to_vec(),
            "/resp/1xx" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            "/resp/101" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_vec(),
            "/resp/to-close" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the close").await;
                return;
            }
            _ if head_request => b"HTTP/1.1 200 OK
content-length: 5

hello".to_vec(),
            _ => {
                let body = format!("ok:{target}");
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
            }
        };
        if s.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// Why the backend could not take a message.
#[derive(Debug)]
enum Fault {
    /// The connection closed in the middle of it.
    Cut,
    Ambiguous(String),
}

impl From<String> for Fault {
    fn from(why: String) -> Fault {
        Fault::Ambiguous(why)
    }
}

impl From<&str> for Fault {
    fn from(why: &str) -> Fault {
        Fault::Ambiguous(why.into())
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool, String> {
    let mut chunk = [0u8; 16384];
    match tokio::time::timeout(DEADLINE, s.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ok(false),
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(_) => Err("backend read timed out mid-message".into()),
    }
}

/// One message, strictly: CRLF lines, one Host, framing by exactly one of a plain
/// Content-Length or `Transfer-Encoding: chunked`. `Ok(None)`: the connection closed between
/// messages.
async fn parse_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Seen>, Fault> {
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if !fill(s, buf).await? {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(Fault::Cut)
            };
        }
    };
    let head = String::from_utf8(buf[..end].to_vec()).map_err(|_| Fault::from("non-UTF-8 head"))?;
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts[2] != "HTTP/1.1" || !parts[1].starts_with('/') {
        return Err(format!("bad request line {line:?}").into());
    }
    let (mut lengths, mut codings, mut hosts) = (Vec::new(), Vec::new(), 0);
    for field in lines {
        let (name, value) = field
            .split_once(':')
            .ok_or_else(|| Fault::from(format!("bad field {field:?}")))?;
        if name.trim() != name || name.is_empty() || field.contains('\r') || field.contains('\n') {
            return Err(format!("bad field {field:?}").into());
        }
        match name.to_ascii_lowercase().as_str() {
            "content-length" => lengths.push(value.trim().to_string()),
            "transfer-encoding" => codings.push(value.trim().to_string()),
            "host" => hosts += 1,
            "connection" if value.to_ascii_lowercase().contains("content-length") => {
                return Err(format!("Connection names the framing: {value:?}").into());
            }
            _ => {}
        }
    }
    if hosts != 1 {
        return Err(format!("{hosts} Host fields in {head:?}").into());
    }
    let body = match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Vec::new(),
        ([n], []) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let n: usize = n.parse().map_err(|_| Fault::from("length overflow"))?;
            while buf.len() < n {
                if !fill(s, buf).await? {
                    return Err(Fault::Cut);
                }
            }
            buf.drain(..n).collect()
        }
        ([], [te]) if te == "chunked" => read_chunked(s, buf).await?,
        _ => return Err(format!("ambiguous framing in {head:?}").into()),
    };
    Ok(Some(seen(parts[0], parts[1], &body)))
}

async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, Fault> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if !fill(s, buf).await? {
                return Err(Fault::Cut);
            }
        };
        let line = String::from_utf8(buf[..line_end].to_vec())
            .map_err(|_| Fault::from("bad chunk line"))?;
        buf.drain(..line_end + 2);
        let size = line.split(';').next().unwrap_or("");
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) || size.len() > 8 {
            return Err(format!("bad chunk size {line:?}").into());
        }
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let end = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if !fill(s, buf).await? {
                        return Err(Fault::Cut);
                    }
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(body);
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(s, buf).await? {
                return Err(Fault::Cut);
            }
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err("chunk without CRLF".into());
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// A response as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads responses from `c` until `count` arrived or the connection closed; strict framing
/// (what the proxy sends a client must be unambiguous too).
async fn responses(c: &mut TcpStream, count: usize, head_request: bool) -> Vec<Answer> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut closed = false;
    let finals = |out: &Vec<Answer>| out.iter().filter(|a| a.status >= 200).count();
    while finals(&out) < count {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if closed {
                assert!(
                    buf.is_empty(),
                    "partial response {:?}",
                    String::from_utf8_lossy(&buf)
                );
                break;
            }
            closed = !fill(c, &mut buf).await.expect("client read");
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status: u16 = head[9..12].parse().unwrap();
        let field = |name: &str| -> Vec<String> {
            head.split("\r\n")
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
                .collect()
        };
        let lengths = field("content-length");
        let codings = field("transfer-encoding");
        assert!(
            lengths.len() + codings.len() <= 1,
            "response framed twice: {head:?}"
        );
        let mut rest = buf.split_off(end + 4);
        std::mem::swap(&mut buf, &mut rest);
        let no_body = head_request || status == 204 || status == 304 || status < 200;
        let body = if no_body {
            Vec::new()
        } else if let [n] = lengths.as_slice() {
            let n: usize = n.parse().expect("a plain length");
            while buf.len() < n {
                assert!(fill(c, &mut buf).await.unwrap(), "body cut short");
            }
            buf.drain(..n).collect()
        } else if !codings.is_empty() {
            decode_chunked(c, &mut buf).await
        } else {
            while fill(c, &mut buf).await.unwrap() {}
            closed = true;
            std::mem::take(&mut buf)
        };
        out.push(Answer { status, head, body });
    }
    out
}

/// A chunked body as the client reads it, decoded (strictly: CRLF lines, hex sizes).
async fn decode_chunked(c: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            assert!(fill(c, buf).await.unwrap(), "chunks cut short");
        };
        let line = String::from_utf8(buf[..line_end].to_vec()).unwrap();
        buf.drain(..line_end + 2);
        let size = usize::from_str_radix(line.split(';').next().unwrap(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {line:?}"));
        if size == 0 {
            loop {
                let end = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(fill(c, buf).await.unwrap(), "trailers cut short");
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return body;
                }
            }
        }
        while buf.len() < size + 2 {
            assert!(fill(c, buf).await.unwrap(), "chunk cut short");
        }
        assert_eq!(&buf[size..size + 2], b"\r\n");
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// What a probe must come to.
enum Expect {
    /// Refused with this status before anything reached a backend.
    Refused(u16),
    /// Forwarded as exactly these messages, each answered.
    Forwarded(Vec<Seen>),
    /// Either refused (a 4xx/5xx answered by the proxy, nothing forwarded) or forwarded as
    /// exactly these messages: both are safe, as long as nothing else reaches the backend.
    Either(Vec<Seen>),
    /// Content-Length with Transfer-Encoding: the fast path refuses it (400); hyper, on the
    /// general path, takes the chunked framing, drops the Content-Length and closes the
    /// connection after the exchange (RFC 9112 §6.1), so the backend gets exactly the chunked
    /// reading of the message and nothing after it. Both are safe.
    BothFramings(Vec<Seen>),
}

struct Probe {
    name: &'static str,
    bytes: String,
    expect: Expect,
}

fn probe(name: &'static str, bytes: impl Into<String>, expect: Expect) -> Probe {
    Probe {
        name,
        bytes: bytes.into(),
        expect,
    }
}

const PIPELINED: &str = "GET /pipelined HTTP/1.1\r\nHost: desync.test\r\n\r\n";

fn post(fields: &str, body: &str) -> String {
    format!("POST /p HTTP/1.1\r\nHost: {HOST}\r\n{fields}\r\n{body}{PIPELINED}")
}

fn request_probes() -> Vec<Probe> {
    use Expect::*;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: desync.test\r\n\r\n";
    let pipelined = || seen("GET", "/pipelined", b"");
    let with_body = |body: &str| Forwarded(vec![seen("POST", "/p", body.as_bytes()), pipelined()]);
    let chunk0 = format!("0\r\n\r\n{smuggled}");
    let mut probes = vec![
        // CL.TE and TE.CL, and their obfuscations: both framings present is never read two ways.
        probe(
            "cl.te",
            post(
                "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nG",
            ),
            BothFramings(vec![seen("POST", "/p", b"")]),
        ),
        probe(
            "te.cl",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                &format!("8\r\nSMUGGLED\r\n{chunk0}"),
            ),
            BothFramings(vec![seen("POST", "/p", b"SMUGGLED")]),
        ),
        probe(
            "te.cl case",
            post(
                "transfer-ENCODING: Chunked\r\ncontent-length: 3\r\n",
                &chunk0,
            ),
            BothFramings(vec![seen("POST", "/p", b"")]),
        ),
        probe(
            "te tab",
            post(
                "Transfer-Encoding:\tchunked\r\nContent-Length: 3\r\n",
                &chunk0,
            ),
            BothFramings(vec![seen("POST", "/p", b"")]),
        ),
        probe(
            "te space before colon",
            post(
                "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n",
                &chunk0,
            ),
            Refused(400),
        ),
        probe(
            "te obs-fold",
            post(
                "Transfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n",
                &chunk0,
            ),
            Refused(400),
        ),
        probe(
            "te xchunked",
            post(
                "Transfer-Encoding: xchunked\r\nContent-Length: 3\r\n",
                &chunk0,
            ),
            Refused(400),
        ),
        probe(
            "te identity with cl",
            post(
                "Transfer-Encoding: identity\r\nContent-Length: 3\r\n",
                &chunk0,
            ),
            Refused(400),
        ),
        probe(
            "te identity",
            post("Transfer-Encoding: identity\r\n", &chunk0),
            Refused(400),
        ),
        probe(
            "te chunked then identity",
            post("Transfer-Encoding: chunked, identity\r\n", &chunk0),
            Refused(400),
        ),
        probe(
            "te twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                &chunk0,
            ),
            Refused(400),
        ),
        probe(
            "te list twice",
            post("Transfer-Encoding: chunked, chunked\r\n", &chunk0),
            Refused(400),
        ),
        probe(
            "te empty",
            post("Transfer-Encoding: \r\n", &chunk0),
            Refused(400),
        ),
        probe(
            "te gzip chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", &chunk0),
            Refused(501),
        ),
        // Content-Length forms.
        probe(
            "cl plus",
            post("Content-Length: +5\r\n", "hello"),
            Refused(400),
        ),
        probe("cl minus", post("Content-Length: -1\r\n", ""), Refused(400)),
        probe(
            "cl inner space",
            post("Content-Length: 1 0\r\n", "helloworld"),
            Refused(400),
        ),
        probe(
            "cl list differs",
            post("Content-Length: 5, 6\r\n", "hello"),
            Refused(400),
        ),
        probe(
            "cl two fields differ",
            post("Content-Length: 5\r\nContent-Length: 41\r\n", "hello"),
            Refused(400),
        ),
        probe("cl empty", post("Content-Length: \r\n", ""), Refused(400)),
        probe(
            "cl overflow",
            post("Content-Length: 18446744073709551621\r\n", "hello"),
            Refused(400),
        ),
        probe(
            "cl hex",
            post("Content-Length: 0x5\r\n", "hello"),
            Refused(400),
        ),
        probe(
            "cl non-ascii digit",
            post("Content-Length: \u{0665}\r\n", "hello"),
            Refused(400),
        ),
        probe(
            "cl leading zeros",
            post("Content-Length: 005\r\n", "hello"),
            with_body("hello"),
        ),
        probe(
            "cl list same",
            post("Content-Length: 5, 5\r\n", "hello"),
            Refused(400),
        ),
        probe(
            "cl two fields same",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            with_body("hello"),
        ),
        // Chunk sizes (a chunked body goes to the general path).
        probe(
            "chunked",
            post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            with_body("hello"),
        ),
        probe(
            "chunk extension",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5;a=b\r\nhello\r\n0\r\n\r\n",
            ),
            with_body("hello"),
        ),
        probe(
            "chunk trailers",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            ),
            with_body("hello"),
        ),
        probe(
            "chunk overflow",
            post(
                "Transfer-Encoding: chunked\r\n",
                "10000000000000005\r\nhello\r\n0\r\n\r\n",
            ),
            Refused(400),
        ),
        probe(
            "chunk size space",
            post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n"),
            Either(vec![seen("POST", "/p", b"hello"), pipelined()]),
        ),
        probe(
            "chunk size leading space",
            post("Transfer-Encoding: chunked\r\n", " 5\r\nhello\r\n0\r\n\r\n"),
            Refused(400),
        ),
        probe(
            "chunk bare lf",
            post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"),
            Either(vec![seen("POST", "/p", b"hello"), pipelined()]),
        ),
        probe(
            "chunk missing crlf",
            post("Transfer-Encoding: chunked\r\n", "5\r\nhelloX0\r\n\r\n"),
            Refused(400),
        ),
        probe(
            "chunk negative",
            post("Transfer-Encoding: chunked\r\n", "-5\r\nhello\r\n0\r\n\r\n"),
            Refused(400),
        ),
        // `Connection` naming the framing or Host strips nothing of them.
        probe(
            "connection content-length",
            post(
                &format!(
                    "Connection: Content-Length\r\nContent-Length: {}\r\n",
                    smuggled.len()
                ),
                smuggled,
            ),
            with_body(smuggled),
        ),
        probe(
            "connection host",
            post(
                "Connection: Host, close-not\r\nContent-Length: 5\r\n",
                "hello",
            ),
            with_body("hello"),
        ),
        probe(
            "connection transfer-encoding",
            post(
                "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            with_body("hello"),
        ),
        // Host forms.
        probe(
            "host missing",
            format!("GET /h HTTP/1.1\r\n\r\n{PIPELINED}"),
            Refused(400),
        ),
        probe(
            "host twice",
            format!("GET /h HTTP/1.1\r\nHost: {HOST}\r\nHost: {HOST}\r\n\r\n{PIPELINED}"),
            Refused(400),
        ),
        probe(
            "host twice differ",
            format!("GET /h HTTP/1.1\r\nHost: {HOST}\r\nHost: evil.test\r\n\r\n{PIPELINED}"),
            Refused(400),
        ),
        probe(
            "host userinfo",
            format!("GET /h HTTP/1.1\r\nHost: u@{HOST}\r\n\r\n{PIPELINED}"),
            Refused(400),
        ),
        probe(
            "host path",
            format!("GET /h HTTP/1.1\r\nHost: {HOST}/x\r\n\r\n{PIPELINED}"),
            Refused(400),
        ),
        probe(
            "host list",
            format!("GET /h HTTP/1.1\r\nHost: {HOST}, evil.test\r\n\r\n{PIPELINED}"),
            Refused(400),
        ),
        probe(
            "host space",
            format!("GET /h HTTP/1.1\r\nHost: {HOST} x\r\n\r\n{PIPELINED}"),
            Refused(400),
        ),
        // Absolute-form: the target's authority counts, and Host must agree with it.
        probe(
            "absolute form",
            format!("GET http://{HOST}/abs HTTP/1.1\r\nHost: {HOST}\r\n\r\n{PIPELINED}"),
            Forwarded(vec![seen("GET", "/abs", b""), pipelined()]),
        ),
        probe(
            "absolute form host differs",
            format!("GET http://{HOST}/abs HTTP/1.1\r\nHost: evil.test\r\n\r\n{PIPELINED}"),
            Refused(400),
        ),
        probe(
            "absolute form userinfo",
            format!("GET http://u@{HOST}/abs HTTP/1.1\r\nHost: {HOST}\r\n\r\n{PIPELINED}"),
            Refused(400),
        ),
        probe(
            "connect",
            format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n{PIPELINED}"),
            Refused(405),
        ),
        // An h2c upgrade is not forwarded as one: the request goes on as HTTP/1.1.
        probe(
            "h2c upgrade",
            format!(
                "GET /h2c HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n{PIPELINED}"
            ),
            Forwarded(vec![seen("GET", "/h2c", b""), pipelined()]),
        ),
    ];
    // Plain pipelining: three requests in one write, answered in order.
    probes.push(probe(
        "pipelined",
        format!("GET /a HTTP/1.1\r\nHost: {HOST}\r\n\r\nPOST /b HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2\r\n\r\nhi{PIPELINED}"),
        Forwarded(vec![seen("GET", "/a", b""), seen("POST", "/b", b"hi"), pipelined()]),
    ));
    probes
}

/// Backend-side cases: (path, method, the status the client must get).
const RESPONSE_PROBES: [(&str, &str, u16); 11] = [
    ("/resp/two-cl", "GET", 502),
    ("/resp/bad-cl", "GET", 502),
    ("/resp/bad-te", "GET", 502),
    ("/resp/cl-te", "GET", 200),
    ("/resp/conn-cl", "GET", 200),
    ("/resp/204-body", "GET", 204),
    ("/resp/304-body", "GET", 304),
    ("/resp/1xx", "GET", 200),
    ("/resp/101", "GET", 502),
    ("/resp/to-close", "GET", 200),
    ("/head-with-body", "HEAD", 200),
];

/// Sends a probe, checks what the client and the backend saw, then a clean request.
async fn run_probe(entry: SocketAddr, general: bool, log: &Mutex<Log>, p: &Probe) {
    *log.lock().unwrap() = Log::default();
    let mut c = TcpStream::connect(entry).await.unwrap();
    c.write_all(p.bytes.as_bytes()).await.unwrap();
    let wanted = match &p.expect {
        Expect::Refused(_) => 1,
        Expect::Forwarded(m) | Expect::Either(m) | Expect::BothFramings(m) => m.len(),
    };
    let answers = responses(&mut c, wanted, false).await;
    let answers: Vec<&Answer> = answers.iter().filter(|a| a.status >= 200).collect();
    drop(c);
    let refused = answers.first().is_some_and(|a| a.status >= 400);
    let expected = match &p.expect {
        Expect::BothFramings(m) if general => {
            assert_eq!(answers.len(), m.len(), "{}: {answers:?}", p.name);
            assert!(
                answers.iter().all(|a| a.status == 200),
                "{}: {answers:?}",
                p.name
            );
            assert!(
                answers.last().unwrap().head.contains("connection: close"),
                "{}",
                p.name
            );
            m.clone()
        }
        Expect::BothFramings(_) => {
            assert_eq!(
                answers.first().map(|a| a.status),
                Some(400),
                "{}: {answers:?}",
                p.name
            );
            Vec::new()
        }
        Expect::Refused(status) => {
            assert_eq!(
                answers.first().map(|a| a.status),
                Some(*status),
                "{}: {answers:?}",
                p.name
            );
            Vec::new()
        }
        Expect::Either(_) if refused => Vec::new(),
        Expect::Forwarded(m) | Expect::Either(m) => {
            assert_eq!(answers.len(), m.len(), "{}: {answers:?}", p.name);
            for (a, m) in answers.iter().zip(m) {
                assert_eq!(a.status, 200, "{}: {a:?}", p.name);
                assert_eq!(
                    String::from_utf8_lossy(&a.body),
                    format!("ok:{}", m.target),
                    "{}",
                    p.name
                );
            }
            m.clone()
        }
    };
    if !refused {
        assert_eq!(
            log.lock().unwrap().cut,
            0,
            "{}: a message was cut short",
            p.name
        );
    }
    clean_after(entry, log, p.name, expected).await;
}

/// A fresh request comes back clean, and the backend saw exactly `expected` before it.
async fn clean_after(entry: SocketAddr, log: &Mutex<Log>, name: &str, mut expected: Vec<Seen>) {
    let mut c = TcpStream::connect(entry).await.unwrap();
    let after = format!("GET /after HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    c.write_all(after.as_bytes()).await.unwrap();
    let answers = responses(&mut c, 1, false).await;
    assert_eq!(answers.len(), 1, "{name}: no answer after the probe");
    assert_eq!(answers[0].status, 200, "{name}: after: {:?}", answers[0]);
    assert_eq!(
        answers[0].body, b"ok:/after",
        "{name}: after: {:?}",
        answers[0]
    );
    expected.push(seen("GET", "/after", b""));
    let log = log.lock().unwrap();
    assert!(
        log.ambiguous.is_empty(),
        "{name}: backend saw {:?}",
        log.ambiguous
    );
    assert_eq!(log.messages, expected, "{name}: what the backend parsed");
}

async fn run_response_probes(entry: SocketAddr, log: &Mutex<Log>) {
    for (path, method, status) in RESPONSE_PROBES {
        eprintln!("  {path}");
        *log.lock().unwrap() = Log::default();
        let mut c = TcpStream::connect(entry).await.unwrap();
        let request = format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        c.write_all(request.as_bytes()).await.unwrap();
        let answers = responses(&mut c, 1, method == "HEAD").await;
        let last = answers
            .iter()
            .rfind(|a| a.status >= 200)
            .unwrap_or_else(|| panic!("{path}: {answers:?}"));
        assert_eq!(last.status, status, "{path}: {answers:?}");
        match path {
            "/resp/cl-te" | "/resp/conn-cl" | "/resp/1xx" => {
                assert!(
                    String::from_utf8_lossy(&last.body).contains("ok"),
                    "{path}: {last:?}"
                )
            }
            "/resp/to-close" => assert_eq!(last.body, b"until the close"),
            "/head-with-body" => assert!(last.head.contains("content-length: 5"), "{last:?}"),
            _ => {}
        }
        if path == "/resp/101" {
            assert!(!answers.iter().any(|a| a.status == 101), "{answers:?}");
        }
        drop(c);
        clean_after(entry, log, path, vec![seen(method, path, b"")]).await;
    }
}

struct Setup {
    _instances: Vec<Switchyard>,
    /// Entry points, named.
    entries: Vec<(&'static str, SocketAddr)>,
    log: Arc<Mutex<Log>>,
}

async fn setup() -> Setup {
    let (backend, log) = recording_backend().await;
    let service_port = free_port();
    let mut instances = Vec::new();
    let mut entries = Vec::new();
    for (name, access_log) in [("fast", false), ("general", true)] {
        let vhost_port = free_port();
        let dir = temp_dir("desync-apps");
        let file = dir.join("apps.json");
        let port = if access_log {
            free_port()
        } else {
            service_port
        };
        let labels = json!({"HAPROXY_0_MODE": "http", "HAPROXY_0_VHOST": HOST});
        write_apps(
            &file,
            vec![app(
                "/desync",
                port,
                labels,
                vec![task("/desync", "d.1", backend.port())],
            )],
        );
        let toml = format!(
            "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
             [http]\nlisten = [\"127.0.0.1:{vhost_port}\"]\naccess_log = {access_log}\n",
            file.display().to_string()
        );
        let sy = Switchyard::start(&format!("desync-{name}"), &toml);
        sy.wait_routes("served", |r| has_service(r, port)).await;
        if access_log {
            entries.push(("vhost, general path", local(vhost_port)));
        } else {
            entries.push(("service port", local(port)));
            entries.push(("vhost", local(vhost_port)));
        }
        instances.push(sy);
    }
    Setup {
        _instances: instances,
        entries,
        log,
    }
}

#[tokio::test]
async fn request_desync_probes_reach_the_backend_as_sent_or_not_at_all() {
    let setup = setup().await;
    for (entry_name, entry) in &setup.entries {
        for p in request_probes() {
            eprintln!("{entry_name}: {}", p.name);
            run_probe(*entry, entry_name.contains("general"), &setup.log, &p).await;
        }
    }
}

#[tokio::test]
async fn backend_framing_faults_never_reach_the_client_ambiguous() {
    let setup = setup().await;
    for (entry_name, entry) in &setup.entries {
        eprintln!("{entry_name}");
        run_response_probes(*entry, &setup.log).await;
    }
}

/// What the differential fuzz target (fuzz/fuzz_targets/h1_differential.rs) found: requests one
/// path forwards and the other refuses. Each must be refused (400) on every entry point, and
/// nothing of it reach the backend.
async fn refused_everywhere(name: &'static str, bytes: String) {
    let setup = setup().await;
    for (entry_name, entry) in &setup.entries {
        eprintln!("{entry_name}: {name}");
        let p = probe(name, bytes.clone(), Expect::Refused(400));
        run_probe(*entry, entry_name.contains("general"), &setup.log, &p).await;
    }
}

/// RFC 9112 §3.2.3: the authority-form is for CONNECT only. The fast path refuses it; the
/// general path takes hyper's authority-only URI for origin-form and sends
/// `GET desync.test:80 HTTP/1.1` on to the backend.
#[tokio::test]
async fn fuzz_finding_authority_form_outside_connect() {
    refused_everywhere(
        "authority form outside connect",
        format!("GET {HOST}:80 HTTP/1.1\r\nHost: {HOST}:80\r\n\r\n{PIPELINED}"),
    )
    .await;
}

/// RFC 9112 §3.2.2 (`message::target_form`): an absolute-form target is http or https. The
/// fast path refuses another scheme; the general path routes by its authority and forwards.
#[tokio::test]
async fn fuzz_finding_absolute_form_with_another_scheme() {
    refused_everywhere(
        "absolute form, another scheme",
        format!("GET foo://{HOST}/abs HTTP/1.1\r\nHost: {HOST}\r\n\r\n{PIPELINED}"),
    )
    .await;
}

/// RFC 9112 §2.2: only empty lines (CRLF, or a bare LF) may come before a request line; a bare
/// CR is invalid. hyper (httparse) refuses it; the fast path skips it with the empty lines and
/// forwards the request.
#[tokio::test]
async fn fuzz_finding_bare_cr_before_the_request_line() {
    refused_everywhere(
        "bare cr before the request line",
        format!("\rGET /cr HTTP/1.1\r\nHost: {HOST}\r\n\r\n{PIPELINED}"),
    )
    .await;
}
