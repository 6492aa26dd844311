//! The connection as a client sees it: bytes in, events and frames out. Each protection of the
//! `h2` crate we rely on today has a test here that a client breaking the rule is answered with
//! the right frame and code.

use super::*;
use crate::proxy::h2codec::frame::{CONTINUATION, DATA, HEADERS, RST_STREAM, write_header};

const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Request(u32, Vec<(String, String)>, bool),
    Data(u32, Vec<u8>, bool),
    Trailers(u32, Vec<(String, String)>),
    Reset(u32, Reason),
    GoAway(u32),
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn owned(e: Event<'_>) -> Ev {
    match e {
        Event::Request {
            stream,
            head,
            end_stream,
        } => {
            let mut fields = vec![
                (":method".into(), text(head.method())),
                (":path".into(), text(head.path().unwrap_or(b"-"))),
            ];
            if let Some(a) = head.authority() {
                fields.push((":authority".into(), text(a)));
            }
            fields.extend(head.fields().map(|(n, v)| (text(n), text(v))));
            Ev::Request(stream, fields, end_stream)
        }
        Event::Data {
            stream,
            data,
            end_stream,
        } => Ev::Data(stream, data.to_vec(), end_stream),
        Event::Trailers { stream, head } => Ev::Trailers(
            stream,
            head.fields().map(|(n, v)| (text(n), text(v))).collect(),
        ),
        Event::Reset { stream, reason } => Ev::Reset(stream, reason),
        Event::GoAway { last_stream, .. } => Ev::GoAway(last_stream),
    }
}

/// A connection that has read the preface and the client's empty SETTINGS, its output taken.
fn connected(config: Config) -> Connection {
    let mut c = Connection::new(config, Instant::now());
    let mut bytes = frame::PREFACE.to_vec();
    bytes.extend(raw(SETTINGS, 0, 0, &[]));
    let (events, fault) = feed(&mut c, &bytes);
    assert_eq!((events, fault), (vec![], None));
    c.output().clear();
    c
}

/// Feeds `bytes` whole; the events and the fault, if any.
fn feed(c: &mut Connection, bytes: &[u8]) -> (Vec<Ev>, Option<Fault>) {
    feed_at(c, bytes, Instant::now())
}

/// [`feed`], the clock reading `now`.
fn feed_at(c: &mut Connection, mut bytes: &[u8], now: Instant) -> (Vec<Ev>, Option<Fault>) {
    let mut events = Vec::new();
    loop {
        match c.recv(bytes, || now) {
            Ok((n, Some(e))) => {
                events.push(owned(e));
                bytes = &bytes[n..];
            }
            Ok((n, None)) => {
                assert_eq!(n, bytes.len(), "whole frames only");
                return (events, None);
            }
            Err(f) => return (events, Some(f)),
        }
    }
}

fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

/// The frames written: (type, flags, stream, payload).
fn written(c: &mut Connection) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let out = std::mem::take(c.output());
    let mut rest = &out[..];
    let mut frames = Vec::new();
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        frames.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    frames
}

fn code(payload: &[u8], at: usize) -> Reason {
    Reason(u32::from_be_bytes(payload[at..at + 4].try_into().unwrap()))
}

/// A literal field without indexing, new name (as a client might write any name).
fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = vec![0, name.len() as u8];
    b.extend_from_slice(name);
    b.push(value.len() as u8);
    b.extend_from_slice(value);
    b
}

/// GET http://example.test/ with `extra` fields after the pseudo-header fields.
fn get(extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84];
    b.extend(literal(b":authority", b"example.test"));
    for (n, v) in extra {
        b.extend(literal(n, v));
    }
    b
}

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

#[test]
fn a_request_is_read_and_answered_and_its_stream_then_closed() {
    let mut c = Connection::new(Config::default(), Instant::now());
    let first = written(&mut c);
    assert_eq!(first[0].0, SETTINGS);
    assert_eq!(first[1].0, WINDOW_UPDATE);
    let mut bytes = frame::PREFACE.to_vec();
    bytes.extend(raw(SETTINGS, 0, 0, &[]));
    bytes.extend(raw(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get(&[(b"accept", b"*/*")]),
    ));
    // A frame cut short is left in the buffer until it is whole.
    let (n, event) = c.recv(&bytes[..30], Instant::now).unwrap();
    assert_eq!((n, event), (frame::PREFACE.len(), None));
    let (events, fault) = feed(&mut c, &bytes[n..]);
    assert_eq!(fault, None);
    assert_eq!(
        events,
        [Ev::Request(
            1,
            vec![
                (":method".into(), "GET".into()),
                (":path".into(), "/".into()),
                (":authority".into(), "example.test".into()),
                ("accept".into(), "*/*".into()),
            ],
            true
        )]
    );
    assert_eq!(written(&mut c), [(SETTINGS, 0x1, 0, vec![])]);
    assert!(c.send_head(1, 200, [(&b"Content-Type"[..], &b"text/plain"[..])], false));
    assert_eq!(c.send_data(1, b"hello", true), 5);
    let frames = written(&mut c);
    assert_eq!(frames.len(), 2);
    assert_eq!(
        (frames[0].0, frames[0].1, frames[0].2),
        (HEADERS, END_HEADERS, 1)
    );
    let mut d = hpack::Decoder::new(4096);
    let mut fields = Vec::new();
    d.decode(&frames[0].3, usize::MAX, |f| {
        fields.push((text(f.name), text(f.value)))
    })
    .unwrap();
    assert_eq!(
        fields,
        [
            (":status".to_string(), "200".to_string()),
            ("content-type".into(), "text/plain".into())
        ]
    );
    assert_eq!(frames[1], (DATA, END_STREAM, 1, b"hello".to_vec()));
    assert_eq!(c.active_streams(), 0);
}

#[test]
fn response_trailers_end_the_stream_once_its_head_went_out() {
    let mut c = connected(Config::default());
    feed(
        &mut c,
        &raw(HEADERS, END_STREAM | END_HEADERS, 1, &get(&[])),
    );
    let sum: [(&[u8], &[u8]); 1] = [(b"X-Sum", b"1")];
    assert!(!c.send_trailers(1, sum), "no head yet");
    assert!(c.send_head(1, 200, [], false));
    assert_eq!(c.send_data(1, b"ab", false), 2);
    assert!(c.send_trailers(1, sum));
    let frames = written(&mut c);
    assert_eq!(frames[2].0, HEADERS);
    assert_eq!(frames[2].1, END_STREAM | END_HEADERS);
    assert_eq!(frames[2].3, [&[0, 5][..], b"x-sum", &[1, b'1']].concat());
    assert_eq!(c.active_streams(), 0);
    assert!(!c.send_trailers(1, sum));
}

#[test]
fn without_the_preface_the_connection_is_not_http2() {
    let mut c = Connection::new(Config::default(), Instant::now());
    c.output().clear();
    let (_, fault) = feed(&mut c, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(fault, Some(Fault::NoPreface));
    assert!(written(&mut c).is_empty());
}

/// The fault and the GOAWAY's code.
fn fails(c: &mut Connection, bytes: &[u8]) -> (Fault, Reason) {
    let (_, fault) = feed(c, bytes);
    let fault = fault.expect("a connection error");
    let goaway = written(c)
        .into_iter()
        .find(|f| f.0 == GOAWAY)
        .expect("GOAWAY");
    (fault, code(&goaway.3, 4))
}

#[test]
fn stream_ids_are_odd_and_increasing_and_frames_on_idle_streams_are_refused() {
    let pe = Reason::PROTOCOL_ERROR;
    let even = raw(HEADERS, END_STREAM | END_HEADERS, 2, &get(&[]));
    assert_eq!(fails(&mut connected(Config::default()), &even).1, pe);
    let mut c = connected(Config::default());
    let mut bytes = raw(HEADERS, END_HEADERS, 5, &get(&[]));
    bytes.extend(raw(HEADERS, END_STREAM | END_HEADERS, 3, &get(&[])));
    assert_eq!(fails(&mut c, &bytes).1, Reason::STREAM_CLOSED);
    for idle in [
        raw(DATA, 0, 7, b"x"),
        raw(RST_STREAM, 0, 7, &[0, 0, 0, 8]),
        raw(WINDOW_UPDATE, 0, 7, &[0, 0, 0, 1]),
        raw(CONTINUATION, END_HEADERS, 7, &[0x82]),
    ] {
        assert_eq!(fails(&mut connected(Config::default()), &idle).1, pe);
    }
}

#[test]
fn streams_past_the_concurrency_limit_are_refused_and_the_connection_goes_on() {
    let mut c = connected(Config {
        max_concurrent_streams: 2,
        ..Config::default()
    });
    let mut bytes = Vec::new();
    for id in [1, 3, 5] {
        bytes.extend(raw(HEADERS, END_HEADERS, id, &get(&[])));
    }
    let (events, fault) = feed(&mut c, &bytes);
    assert_eq!((events.len(), fault), (2, None));
    assert_eq!(
        written(&mut c),
        [(
            RST_STREAM,
            0,
            5,
            Reason::REFUSED_STREAM.0.to_be_bytes().to_vec()
        )]
    );
    // One ends: a new stream is taken.
    c.reset(1, Reason::CANCEL);
    let (events, _) = feed(&mut c, &raw(HEADERS, END_HEADERS, 7, &get(&[])));
    assert!(matches!(events[..], [Ev::Request(7, _, false)]));
}

#[test]
fn continuations_are_assembled_bounded_and_never_interleaved() {
    let block = get(&[(b"x-long", &[b'a'; 40])]);
    let (a, b) = block.split_at(10);
    let (b, d) = b.split_at(20);
    let mut c = connected(Config::default());
    let mut bytes = raw(HEADERS, END_STREAM, 1, a);
    bytes.extend(raw(CONTINUATION, 0, 1, b));
    bytes.extend(raw(CONTINUATION, END_HEADERS, 1, d));
    let (events, fault) = feed(&mut c, &bytes);
    assert_eq!(fault, None);
    assert!(matches!(&events[..], [Ev::Request(1, f, true)] if f.len() == 4));
    // Another frame in between, or a CONTINUATION of another stream.
    for between in [
        raw(PING, 0, 0, &[0; 8]),
        raw(CONTINUATION, END_HEADERS, 3, d),
    ] {
        let mut bytes = raw(HEADERS, END_STREAM, 1, a);
        bytes.extend(between);
        let got = fails(&mut connected(Config::default()), &bytes);
        assert_eq!(got.1, Reason::PROTOCOL_ERROR);
    }
    // Endless empty CONTINUATIONs, or a block past its bound: ENHANCE_YOUR_CALM.
    let mut bytes = raw(HEADERS, END_STREAM, 1, a);
    for _ in 0..=MAX_CONTINUATIONS {
        bytes.extend(raw(CONTINUATION, 0, 1, &[]));
    }
    let got = fails(&mut connected(Config::default()), &bytes);
    assert_eq!(got.1, Reason::ENHANCE_YOUR_CALM);
    let small = Config {
        max_header_list_size: 100,
        ..Config::default()
    };
    let mut bytes = raw(HEADERS, END_STREAM, 1, a);
    bytes.extend(raw(CONTINUATION, 0, 1, &[0; 1200]));
    assert_eq!(
        fails(&mut connected(small), &bytes).1,
        Reason::ENHANCE_YOUR_CALM
    );
}

#[test]
fn a_head_past_the_list_size_gets_431_and_the_table_stays_in_step() {
    let mut c = connected(Config {
        max_header_list_size: 300,
        ..Config::default()
    });
    // A field added to the table that takes the list to 334.
    let mut block = get(&[]);
    block.extend([&[0x40, 5][..], b"x-big", &[120], &[b'v'; 120]].concat());
    let (events, fault) = feed(&mut c, &raw(HEADERS, END_HEADERS, 1, &block));
    assert_eq!((events, fault), (vec![], None));
    let frames = written(&mut c);
    assert_eq!(
        (frames[0].0, frames[0].1, frames[0].2),
        (HEADERS, END_STREAM | END_HEADERS, 1)
    );
    assert_eq!(frames[0].3, [0x08, 3, b'4', b'3', b'1']);
    assert_eq!(frames[1], (RST_STREAM, 0, 1, vec![0; 4]));
    // The next request (280 without :authority) refers to the field by its index (62):
    // decoded as the client meant.
    let next = [0x82, 0x86, 0x84, 0xbe];
    let (events, _) = feed(&mut c, &raw(HEADERS, END_STREAM | END_HEADERS, 3, &next));
    assert!(matches!(&events[..], [Ev::Request(3, f, true)] if f[2].0 == "x-big"));
}

#[test]
fn malformed_requests_are_reset_with_protocol_error() {
    // GET with another :path than origin-form (RFC 9113 §8.3.1).
    let with_path = |path: &[u8]| {
        let mut b = vec![0x82, 0x86];
        b.extend(literal(b":path", path));
        b.extend(literal(b":authority", b"example.test"));
        b
    };
    let cases: [Vec<u8>; 14] = [
        with_path(b"*"),
        with_path(b"?x=1"),
        with_path(b"/a#b"),
        with_path(b"x/y"),
        get(&[(b"Accept", b"x")]),
        get(&[(b"connection", b"close")]),
        get(&[(b"te", b"gzip")]),
        get(&[(b"x", b"a\r\nb")]),
        get(&[(b"x", b" padded")]),
        get(&[(b"x", b"a\x01b")]),
        get(&[(b"x", b"a\x7fb")]),
        [get(&[(b"a", b"b")]), vec![0x84]].concat(),
        vec![0x82, 0x86],
        [get(&[]), vec![0x82]].concat(),
    ];
    for block in cases {
        let mut c = connected(Config::default());
        let (events, fault) = feed(&mut c, &raw(HEADERS, END_STREAM | END_HEADERS, 1, &block));
        assert_eq!((events, fault), (vec![], None), "{block:?}");
        assert_eq!(
            written(&mut c),
            [(
                RST_STREAM,
                0,
                1,
                Reason::PROTOCOL_ERROR.0.to_be_bytes().to_vec()
            )]
        );
    }
    // OPTIONS * is the one request with an asterisk path.
    let mut c = connected(Config::default());
    let mut options = literal(b":method", b"OPTIONS");
    options.push(0x86);
    options.extend(literal(b":path", b"*"));
    options.extend(literal(b":authority", b"example.test"));
    let (events, fault) = feed(&mut c, &raw(HEADERS, END_STREAM | END_HEADERS, 1, &options));
    assert_eq!(fault, None);
    assert!(matches!(&events[..], [Ev::Request(1, f, true)] if f[1].1 == "*"));
    // CONNECT carries :authority only; te: trailers is fine.
    let mut c = connected(Config::default());
    let mut connect = vec![0x02, 7];
    connect.extend_from_slice(b"CONNECT");
    connect.extend(literal(b":authority", b"example.test:443"));
    let mut bytes = raw(HEADERS, END_HEADERS, 1, &connect);
    bytes.extend(raw(HEADERS, END_HEADERS, 3, &get(&[(b"te", b"trailers")])));
    let (events, _) = feed(&mut c, &bytes);
    assert_eq!(events.len(), 2);
}

#[test]
fn content_length_must_match_the_body() {
    let mut c = connected(Config::default());
    let head = get(&[(b"content-length", b"3")]);
    let mut bytes = raw(HEADERS, END_HEADERS, 1, &head);
    bytes.extend(raw(DATA, END_STREAM, 1, b"ab"));
    bytes.extend(raw(HEADERS, END_HEADERS, 3, &head));
    bytes.extend(raw(DATA, 0, 3, b"abc"));
    bytes.extend(raw(DATA, END_STREAM, 3, b""));
    let (events, fault) = feed(&mut c, &bytes);
    assert_eq!(fault, None);
    assert_eq!(events[1], Ev::Reset(1, Reason::PROTOCOL_ERROR));
    assert_eq!(events[3], Ev::Data(3, b"abc".to_vec(), false));
    assert_eq!(events[4], Ev::Data(3, vec![], true));
}

#[test]
fn trailers_end_the_request_and_must_carry_end_stream() {
    let mut c = connected(Config::default());
    let mut bytes = raw(HEADERS, END_HEADERS, 1, &get(&[]));
    bytes.extend(raw(DATA, 0, 1, b"body"));
    bytes.extend(raw(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &literal(b"x-sum", b"1"),
    ));
    bytes.extend(raw(HEADERS, END_HEADERS, 3, &get(&[])));
    bytes.extend(raw(HEADERS, END_HEADERS, 3, &literal(b"x-sum", b"1")));
    let (events, fault) = feed(&mut c, &bytes);
    assert_eq!(fault, None);
    assert_eq!(
        events[2],
        Ev::Trailers(1, vec![("x-sum".into(), "1".into())])
    );
    assert_eq!(events[4], Ev::Reset(3, Reason::PROTOCOL_ERROR));
}

/// Not a test: the instructions one h2load-like request costs the codec, counted with
/// callgrind over two iteration counts (`H2CODEC_PROBE_N`; `H2CODEC_PROBE=decode` reads the
/// request's HEADERS frame into its event, `encode` writes a typical nginx answer's head and a
/// small body, `both` does both). See `benches/RESULTS.md`.
#[test]
#[ignore]
fn probe() {
    let n: u32 = std::env::var("H2CODEC_PROBE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mode = std::env::var("H2CODEC_PROBE").unwrap_or_else(|_| "both".into());
    let mut c = connected(Config::default());
    // h2load's first request indexes :authority and user-agent; later ones are references.
    let mut first = vec![0x82, 0x86];
    first.extend([&[0x41, 14][..], b"127.0.0.1:8080"].concat());
    first.push(0x84);
    let agent = b"h2load nghttp2/1.59.0";
    first.extend([&[0x40, 10][..], b"user-agent", &[agent.len() as u8], agent].concat());
    let mut frame_bytes = raw(HEADERS, END_STREAM | END_HEADERS, 1, &first);
    let later = raw(
        HEADERS,
        END_STREAM | END_HEADERS,
        0,
        &[0x82, 0x86, 0xbf, 0x84, 0xbe],
    );
    let fields: [(&[u8], &[u8]); 7] = [
        (b"Server", b"nginx/1.24.0"),
        (b"Date", b"Thu, 03 Dec 2026 20:00:00 GMT"),
        (b"Content-Type", b"text/html"),
        (b"Content-Length", b"612"),
        (b"Last-Modified", b"Tue, 11 Apr 2023 01:45:34 GMT"),
        (b"ETag", b"\"6434bbbe-264\""),
        (b"Accept-Ranges", b"bytes"),
    ];
    let body = [b'x'; 612];
    let decode = mode != "encode";
    let encode = mode != "decode";
    for i in 0..n {
        let stream = 2 * i + 1;
        if i > 0 {
            frame_bytes.clear();
            frame_bytes.extend_from_slice(&later);
            frame_bytes[5..9].copy_from_slice(&stream.to_be_bytes());
        }
        if decode || i == 0 {
            let (_, event) = c.recv(&frame_bytes, Instant::now).unwrap();
            std::hint::black_box(event);
        }
        if encode {
            // The client's connection window, kept open without reading its WINDOW_UPDATEs.
            c.conn_send_window = i64::from(MAX_WINDOW);
            if !decode && i > 0 {
                // A stream to answer, opened without counting its decoding.
                let s = c.streams_template(stream);
                c.streams.insert(stream, s);
            }
            assert!(c.send_head(stream, 200, fields, false));
            assert_eq!(c.send_data(stream, &body, true), body.len());
        }
        c.output().clear();
    }
}

fn client_frames() -> impl proptest::strategy::Strategy<Value = Vec<(u8, u8, u32, Vec<u8>)>> {
    use proptest::prelude::*;
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(get(&[])),
        Just(vec![0, 0, 0, 1]),
    ];
    proptest::collection::vec((0u8..11, any::<u8>(), 0u32..9, payload), 0..60)
}

proptest::proptest! {
    /// Any frames after the preface: events or a fault, never a panic; never more streams
    /// than the limit; everything written is well-framed, and a fault's last frame is GOAWAY.
    #[test]
    fn any_frames_keep_the_connection_within_its_rules(frames in client_frames()) {
        let mut c = connected(Config { max_concurrent_streams: 3, ..Config::default() });
        let mut bytes = Vec::new();
        for (kind, flags, stream, payload) in &frames {
            bytes.extend(raw(*kind, *flags, *stream, payload));
        }
        let (_, fault) = feed(&mut c, &bytes);
        proptest::prop_assert!(c.active_streams() <= 3);
        let out = std::mem::take(c.output());
        let mut rest = &out[..];
        let mut last = None;
        while !rest.is_empty() {
            let (f, len) = frame::read(rest, frame::MAX_MAX_FRAME_SIZE).unwrap().unwrap();
            last = Some(f);
            rest = &rest[len..];
        }
        if matches!(fault, Some(Fault::Protocol(_) | Fault::Flood(_) | Fault::RapidReset { .. })) {
            let goaway = matches!(last, Some(Frame::GoAway { .. }));
            proptest::prop_assert!(goaway);
        }
    }
}

mod bounds;
mod resets;
