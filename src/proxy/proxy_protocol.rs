//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer in front puts
//! before a connection's bytes to say whose connection it is, read on listeners configured for
//! it (`*.proxy_protocol_from`), and written to an app's backends on request
//! (`SWITCHYARD_{n}_PROXY_PROTOCOL`).
//!
//! Reading never consumes more than the header: it is peeked until complete, then exactly its
//! length is read, so the TCP relay, the TLS acceptor and the HTTP codecs see the stream as the
//! client sent it. Every wait is bounded (`proxy.proxy_protocol_timeout`) and so is the header
//! (`MAX_HEADER`).
//!
//! A source allowed to send a header must send one (as HAProxy's `accept-proxy`); a source not
//! allowed that sends one is refused. On a TCP service port the refusal looks at the client's
//! first bytes when the client speaks first; a server-speaks-first protocol is not made to wait
//! (see `tcp::serve`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::routing::cidr::Cidr;

/// Version 1's longest line, CRLF included (the specification's 107).
pub const MAX_V1: usize = 107;
/// Version 2's header is bounded here, TLVs included (a cloud load balancer's few TLVs fit
/// many times over); a longer one is refused as malformed.
pub const MAX_HEADER: usize = 1024;

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes: what to consume from the stream.
    pub len: usize,
    /// The client's address and the address it connected to; `None` for a v1 `UNKNOWN`, a v2
    /// `LOCAL` (the balancer's own health check) or an address family other than TCP over IPv4
    /// and IPv6: the connection's own addresses stand.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// What the bytes so far are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a header: more bytes are needed.
    Incomplete,
    Complete(Header),
}

/// Why a header is refused; also the class it is logged once and counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The bytes start as no PROXY header does.
    NotProxy,
    V1Syntax,
    V1TooLong,
    V1Address,
    V2Version,
    V2Command,
    V2TooLong,
    V2Length,
}

impl Malformed {
    pub fn class(self) -> &'static str {
        match self {
            Malformed::NotProxy => "missing",
            Malformed::V1Syntax => "v1_syntax",
            Malformed::V1TooLong => "v1_too_long",
            Malformed::V1Address => "v1_address",
            Malformed::V2Version => "v2_version",
            Malformed::V2Command => "v2_command",
            Malformed::V2TooLong => "v2_too_long",
            Malformed::V2Length => "v2_length",
        }
    }
}

/// Whether `buf` could be the start of a PROXY header: `Some(true)` it is one's start,
/// `Some(false)` it cannot be, `None` too few bytes to tell.
pub fn looks_like_header(buf: &[u8]) -> Option<bool> {
    let v1 = V1_PREFIX.starts_with(&buf[..buf.len().min(V1_PREFIX.len())]);
    let v2 = V2_SIGNATURE.starts_with(&buf[..buf.len().min(V2_SIGNATURE.len())]);
    if buf.len() >= V1_PREFIX.len() && v1 || buf.len() >= V2_SIGNATURE.len() && v2 {
        return Some(true);
    }
    if !v1 && !v2 {
        return Some(false);
    }
    // A prefix of one of them (an empty buffer included): wait for more, unless a prefix of
    // only the v2 signature that is also an HTTP client's empty lines... still undecided.
    None
}

/// Parses a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, Malformed> {
    match looks_like_header(buf) {
        None => Ok(Parsed::Incomplete),
        Some(false) => Err(Malformed::NotProxy),
        Some(true) if buf.starts_with(V1_PREFIX) => parse_v1(buf),
        Some(true) => parse_v2(buf),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Malformed> {
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if window.len() >= MAX_V1 {
            return Err(Malformed::V1TooLong);
        }
        // A bare LF or a NUL is never part of the line: no need to wait for more.
        if window.iter().any(|&b| b == b'\n' || b == 0) {
            return Err(Malformed::V1Syntax);
        }
        return Ok(Parsed::Incomplete);
    };
    let len = end + 2;
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end]).map_err(|_| Malformed::V1Syntax)?;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Parsed::Complete(Header {
            len,
            addresses: None,
        }));
    }
    let mut fields = line.split(' ');
    let (Some(family), Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(Malformed::V1Syntax);
    };
    let ip = |text: &str| -> Result<IpAddr, Malformed> {
        match family {
            "TCP4" => text
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| Malformed::V1Address),
            "TCP6" => text
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| Malformed::V1Address),
            _ => Err(Malformed::V1Syntax),
        }
    };
    let port = |text: &str| -> Result<u16, Malformed> {
        // Decimal without a sign or a leading zero (the specification's form).
        let canonical = !text.is_empty()
            && text.len() <= 5
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        canonical
            .then(|| text.parse::<u16>().ok())
            .flatten()
            .ok_or(Malformed::V1Address)
    };
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    let dest = SocketAddr::new(ip(dst)?, port(dport)?);
    Ok(Parsed::Complete(Header {
        len,
        addresses: Some((source, dest)),
    }))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Malformed> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(Malformed::V2Version);
    }
    let family = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > MAX_HEADER {
        return Err(Malformed::V2TooLong);
    }
    let local = match command {
        0 => true,
        1 => false,
        _ => return Err(Malformed::V2Command),
    };
    // The address block must fit in the declared length, whatever is complete so far.
    let needed = match family {
        0x11 => 12,
        0x21 => 36,
        _ => 0,
    };
    if body < needed {
        return Err(Malformed::V2Length);
    }
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let a = &buf[16..len];
    let addresses = match family {
        _ if local => None,
        0x11 => {
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        0x21 => {
            let ip = |o: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        // UNSPEC, UDP, Unix sockets: the header is valid and says nothing we use.
        _ => None,
    };
    Ok(Parsed::Complete(Header { len, addresses }))
}

/// Which version to send to a backend.
pub use crate::routing::edge_labels::ProxyVersion as Version;

/// The header telling a backend that `source` connected to `dest`.
pub fn encode(version: Version, source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
    // One family for both: an IPv4 address beside an IPv6 one is written as IPv4-mapped.
    let (source, dest) = match (source, dest) {
        (SocketAddr::V4(_), SocketAddr::V6(_)) => (mapped(source), dest),
        (SocketAddr::V6(_), SocketAddr::V4(_)) => (source, mapped(dest)),
        _ => (source, dest),
    };
    match version {
        Version::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                dest.ip(),
                source.port(),
                dest.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut out = Vec::with_capacity(52);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21);
            match (source.ip(), dest.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&v6(s).octets());
                    out.extend_from_slice(&v6(d).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&dest.port().to_be_bytes());
            out
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(v6(addr.ip())), addr.port())
}

/// What a listener does with PROXY headers: who may send one, and how long one may take.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Accept {
    /// Sources that must send a header; empty: the listener does not read them.
    pub from: Vec<Cidr>,
    pub timeout: Duration,
}

impl Accept {
    pub fn enabled(&self) -> bool {
        !self.from.is_empty()
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.from.iter().any(|c| c.contains(ip))
    }
}

/// The client-address settings of the listeners (reloadable with the rest of `proxy::Settings`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EdgeSettings {
    /// Service ports (`proxy.proxy_protocol_from`).
    pub ports: Accept,
    /// The shared HTTP listeners, app-id listener included (`http.proxy_protocol_from`).
    pub http: Accept,
    /// The shared HTTPS listeners (`https.proxy_protocol_from`).
    pub https: Accept,
    /// `http.trusted_proxies`: clients whose X-Forwarded-For / -Proto are kept (extended).
    pub trusted_proxies: Vec<Cidr>,
}

impl EdgeSettings {
    /// Whether `client`'s forwarding headers are believed.
    pub fn trusts(&self, client: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(client))
    }
}

/// The client's address on a connection accepted on a listener with `accept`: the PROXY
/// header's source when the peer is allowed to send one (it must, and the header is consumed),
/// else the peer; with it, the address the client connected to when a header named it (as
/// HAProxy's `dst` reads it behind `accept-proxy`: X-Forwarded-Port takes its port). `Err`: the connection is to be closed (a header missing, malformed, too slow,
/// or sent by a source that may not). `client_speaks_first`: the listener's protocol has the
/// client send first (HTTP, TLS), so a source that may not send a header is waited for until
/// its first bytes tell; otherwise (TCP) see [`refuse_unexpected`].
pub async fn client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    accept: &Accept,
    client_speaks_first: bool,
    metrics: &Metrics,
) -> Result<(SocketAddr, Option<SocketAddr>), ()> {
    if !accept.enabled() {
        return Ok((peer, None));
    }
    let deadline = tokio::time::Instant::now() + accept.timeout;
    if !accept.allows(peer.ip()) {
        if !client_speaks_first {
            return Ok((peer, None));
        }
        let verdict = peek_until(stream, deadline, V2_SIGNATURE.len(), |b| {
            looks_like_header(b)
        })
        .await;
        return match verdict {
            Some(true) => {
                refused_source(peer, metrics);
                Err(())
            }
            // Not a header, or nothing said in time (the protocol's own timeout applies).
            _ => Ok((peer, None)),
        };
    }
    let parsed = peek_until(stream, deadline, MAX_HEADER, |b| match parse(b) {
        Ok(Parsed::Incomplete) => None,
        done => Some(done),
    })
    .await;
    match parsed {
        Some(Ok(Parsed::Complete(header))) => {
            let mut sink = [0u8; 256];
            let mut left = header.len;
            while left > 0 {
                let n = sink.len().min(left);
                if stream.read_exact(&mut sink[..n]).await.is_err() {
                    return Err(());
                }
                left -= n;
            }
            Ok(header
                .addresses
                .map_or((peer, None), |(source, destination)| {
                    (source, Some(destination))
                }))
        }
        Some(Ok(Parsed::Incomplete)) => unreachable!("peek_until returns decided values"),
        Some(Err(malformed)) => {
            report(malformed.class(), peer, metrics);
            Err(())
        }
        None => {
            report("timeout", peer, metrics);
            Err(())
        }
    }
}

/// TCP mode, a source not allowed to send a header: whoever speaks first decides. The client's
/// first bytes are looked at (peeked) before any goes to the backend, and refused when they
/// begin a header; a backend that speaks first (a server-first protocol) is not kept waiting.
pub async fn refuse_unexpected(
    (client, upstream): (&TcpStream, &TcpStream),
    peer: SocketAddr,
    accept: &Accept,
    wait: Duration,
    metrics: &Metrics,
) -> Result<(), ()> {
    if !accept.enabled() || accept.allows(peer.ip()) {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + wait;
    let peek = |stream: &TcpStream| {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 12];
        let n = socket2::SockRef::from(stream).peek(&mut buf)?;
        // SAFETY: `peek` initialised the first `n` bytes.
        let bytes: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        Ok::<_, std::io::Error>(bytes)
    };
    loop {
        tokio::select! {
            r = client.readable() => {
                if r.is_err() {
                    return Ok(());
                }
                // Readiness can be stale: a peek that would block waits again.
                match client.try_io(tokio::io::Interest::READABLE, || peek(client)) {
                    Ok(bytes) if !bytes.is_empty() && looks_like_header(&bytes) != Some(false) => {
                        refused_source(peer, metrics);
                        return Err(());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    _ => return Ok(()),
                }
            }
            r = upstream.readable() => {
                if r.is_err() {
                    return Ok(());
                }
                match upstream.try_io(tokio::io::Interest::READABLE, || peek(upstream)) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    _ => return Ok(()), // the backend spoke (or closed) first
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
        }
    }
}

fn refused_source(peer: SocketAddr, metrics: &Metrics) {
    report("untrusted_source", peer, metrics);
}

/// Logs a class of bad header once per process (a flood of them is one line, and counted).
fn report(class: &'static str, peer: SocketAddr, metrics: &Metrics) {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    Metrics::count(&metrics.proxy_protocol_errors, class);
    let mut seen = SEEN.lock().unwrap();
    if !seen.contains(&class) {
        seen.push(class);
        tracing::warn!(%peer, class, "PROXY protocol header refused, connection closed \
            (logged once per class; counted in switchyard_proxy_protocol_errors_total)");
    } else {
        tracing::debug!(%peer, class, "PROXY protocol header refused");
    }
}

/// Peeks at the stream's first bytes until `decide` says something about them, at most `max`
/// bytes, until `deadline`; `None` if the deadline passed, or the stream ended, undecided.
/// Nothing is consumed.
pub async fn peek_until<T>(
    stream: &TcpStream,
    deadline: tokio::time::Instant,
    max: usize,
    mut decide: impl FnMut(&[u8]) -> Option<T>,
) -> Option<T> {
    let mut buf = vec![0u8; max];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return None,
        };
        if let Some(verdict) = decide(&buf[..n]) {
            return Some(verdict);
        }
        if n == 0 || n >= max {
            // Ended, or as much as may be looked at without an answer.
            return None;
        }
        if n == seen {
            // Readiness stays set while bytes wait unread: back off instead of spinning until
            // the rest of a header split over segments arrives.
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete(buf: &[u8]) -> Header {
        match parse(buf) {
            Ok(Parsed::Complete(h)) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn v1_examples() {
        let h = complete(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /");
        assert_eq!(h.len, 45);
        assert_eq!(
            h.addresses,
            Some((
                "192.0.2.1:56324".parse().unwrap(),
                "198.51.100.2:443".parse().unwrap()
            ))
        );
        let h = complete(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
        assert_eq!(h.addresses.unwrap().0, "[2001:db8::1]:1".parse().unwrap());
        assert_eq!(complete(b"PROXY UNKNOWN\r\n").addresses, None);
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n").addresses,
            None
        );
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"PROX"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PROXY TCP4 1.2."), Ok(Parsed::Incomplete));
        assert_eq!(parse(&[b'P'; 200]), Err(Malformed::NotProxy));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'x');
        assert_eq!(parse(&long), Err(Malformed::V1TooLong));
    }

    #[test]
    fn v2_examples() {
        let src: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let dst: SocketAddr = "10.9.9.9:80".parse().unwrap();
        let mut bytes = encode(Version::V2, src, dst);
        assert_eq!(bytes.len(), 28);
        bytes.extend_from_slice(b"rest");
        let h = complete(&bytes);
        assert_eq!((h.len, h.addresses), (28, Some((src, dst))));
        for cut in 0..28 {
            assert_eq!(parse(&bytes[..cut]), Ok(Parsed::Incomplete), "{cut}");
        }
        // LOCAL: the connection's own addresses.
        let mut local = bytes.clone();
        local[12] = 0x20;
        assert_eq!(complete(&local).addresses, None);
        let mut bad = bytes.clone();
        bad[12] = 0x31;
        assert_eq!(parse(&bad), Err(Malformed::V2Version));
        bad[12] = 0x22;
        assert_eq!(parse(&bad), Err(Malformed::V2Command));
        let mut short = bytes.clone();
        short[15] = 4;
        assert_eq!(parse(&short), Err(Malformed::V2Length));
        let mut huge = bytes;
        huge[14] = 0xff;
        assert_eq!(parse(&huge), Err(Malformed::V2TooLong));
        // A TLV after the addresses is skipped whole.
        let mut tlv = encode(Version::V2, src, dst);
        tlv[15] += 5;
        tlv.extend_from_slice(&[0x04, 0, 2, b'h', b'i']);
        assert_eq!(complete(&tlv).len, 33);
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    proptest! {
        /// Whatever is encoded parses back to the same addresses and length, in both versions,
        /// with anything after it, and every strict prefix of it is incomplete.
        #[test]
        fn encode_then_parse(src in addr(), dst in addr(), v2 in any::<bool>(),
                             tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let version = if v2 { Version::V2 } else { Version::V1 };
            let header = encode(version, src, dst);
            let mut bytes = header.clone();
            bytes.extend_from_slice(&tail);
            let h = match parse(&bytes) {
                Ok(Parsed::Complete(h)) => h,
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(h.len, header.len());
            let (s, d) = h.addresses.unwrap();
            let same = |a: SocketAddr, b: SocketAddr| a == b || mapped(a) == mapped(b);
            prop_assert!(same(s, src) && same(d, dst));
            for cut in 0..header.len() {
                prop_assert_eq!(parse(&header[..cut]), Ok(Parsed::Incomplete));
            }
        }

        /// Any input: an answer, never a panic; a complete header never claims more bytes than
        /// it was given or than the bound.
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Parsed::Complete(h)) = parse(&bytes) {
                prop_assert!(h.len <= bytes.len() && h.len <= MAX_HEADER);
            }
        }

        /// Bytes that start with a signature and go on arbitrarily: still never a panic.
        #[test]
        fn signature_then_noise(v2 in any::<bool>(),
                                noise in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = if v2 { V2_SIGNATURE.to_vec() } else { V1_PREFIX.to_vec() };
            bytes.extend_from_slice(&noise);
            if let Ok(Parsed::Complete(h)) = parse(&bytes) {
                prop_assert!(h.len <= bytes.len());
            }
        }
    }
}
