//! The frame layer: each fault RFC 9113 names for a frame on its own, with its code and scope;
//! what the writers write reads back; arbitrary bytes never panic and a frame is never read
//! before all of it arrived.

use super::*;
use proptest::prelude::*;

fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn one(bytes: &[u8]) -> Result<Frame<'_>, ConnError> {
    let (frame, len) = read(bytes, MIN_MAX_FRAME_SIZE)?.expect("a whole frame");
    assert_eq!(len, bytes.len());
    Ok(frame)
}

const CONN_PROTOCOL: Result<Frame<'static>, ConnError> = Err(ConnError(Reason::PROTOCOL_ERROR));
const CONN_FRAME_SIZE: Result<Frame<'static>, ConnError> = Err(ConnError(Reason::FRAME_SIZE_ERROR));

#[test]
fn the_preface_is_checked_as_it_arrives() {
    assert_eq!(check_preface(b""), Ok(false));
    assert_eq!(check_preface(b"PRI * HTTP/2"), Ok(false));
    assert_eq!(check_preface(PREFACE), Ok(true));
    let mut more = PREFACE.to_vec();
    more.extend_from_slice(&raw(SETTINGS, 0, 0, &[]));
    assert_eq!(check_preface(&more), Ok(true));
    assert!(check_preface(b"GET / HTTP/1.1\r\n").is_err());
}

#[test]
fn frames_on_the_wrong_stream_are_connection_protocol_errors() {
    for kind in [DATA, HEADERS, PRIORITY, RST_STREAM, CONTINUATION] {
        let payload = [0u8; 5];
        let len = if kind == RST_STREAM { 4 } else { 5 };
        assert_eq!(
            one(&raw(kind, 0, 0, &payload[..len])),
            CONN_PROTOCOL,
            "{kind}"
        );
    }
    assert_eq!(one(&raw(SETTINGS, 0, 1, &[])), CONN_PROTOCOL);
    assert_eq!(one(&raw(PING, 0, 1, &[0; 8])), CONN_PROTOCOL);
    assert_eq!(one(&raw(GOAWAY, 0, 1, &[0; 8])), CONN_PROTOCOL);
    assert_eq!(
        one(&raw(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2])),
        CONN_PROTOCOL
    );
}

#[test]
fn wrong_sizes_are_frame_size_errors_of_the_right_scope() {
    assert_eq!(one(&raw(RST_STREAM, 0, 1, &[0; 5])), CONN_FRAME_SIZE);
    assert_eq!(one(&raw(PING, 0, 0, &[0; 7])), CONN_FRAME_SIZE);
    assert_eq!(one(&raw(GOAWAY, 0, 0, &[0; 7])), CONN_FRAME_SIZE);
    assert_eq!(
        one(&raw(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1, 0])),
        CONN_FRAME_SIZE
    );
    assert_eq!(one(&raw(SETTINGS, 0, 0, &[0; 5])), CONN_FRAME_SIZE);
    assert_eq!(one(&raw(SETTINGS, ACK, 0, &[0; 6])), CONN_FRAME_SIZE);
    // A padded frame without room for its pad length; HEADERS without room for its priority.
    assert_eq!(one(&raw(DATA, PADDED, 1, &[])), CONN_FRAME_SIZE);
    assert_eq!(
        one(&raw(HEADERS, PRIORITY_FLAG, 1, &[0; 4])),
        CONN_FRAME_SIZE
    );
    // PRIORITY of the wrong size concerns its stream only.
    assert_eq!(
        one(&raw(PRIORITY, 0, 3, &[0; 4])),
        Ok(Frame::StreamError {
            stream: 3,
            reason: Reason::FRAME_SIZE_ERROR
        })
    );
}

#[test]
fn a_frame_past_our_max_frame_size_is_refused_from_its_header() {
    let mut head = Vec::new();
    write_header(&mut head, MIN_MAX_FRAME_SIZE as usize + 1, DATA, 0, 1);
    assert_eq!(
        read(&head, MIN_MAX_FRAME_SIZE),
        Err(ConnError(Reason::FRAME_SIZE_ERROR))
    );
    assert_eq!(read(&head, MIN_MAX_FRAME_SIZE + 1), Ok(None));
}

#[test]
fn padding_is_stripped_but_counted_for_flow_control_and_may_not_fill_the_frame() {
    let frame = raw(DATA, PADDED | END_STREAM, 1, &[2, b'h', b'i', 0, 0]);
    assert_eq!(
        one(&frame),
        Ok(Frame::Data {
            stream: 1,
            end_stream: true,
            data: b"hi",
            flow_len: 5
        })
    );
    // Pad length equal to what follows it: allowed (no data); one more: PROTOCOL_ERROR.
    assert!(matches!(
        one(&raw(DATA, PADDED, 1, &[2, 0, 0])),
        Ok(Frame::Data { data: b"", .. })
    ));
    assert_eq!(one(&raw(DATA, PADDED, 1, &[3, 0, 0])), CONN_PROTOCOL);
    // HEADERS with padding and priority: the fragment is what lies between.
    let frame = raw(
        HEADERS,
        PADDED | PRIORITY_FLAG | END_HEADERS,
        5,
        &[1, 0x80, 0, 0, 3, 15, 0x82, 0],
    );
    assert_eq!(
        one(&frame),
        Ok(Frame::Headers {
            stream: 5,
            end_stream: false,
            end_headers: true,
            priority: Some(Priority {
                dependency: 3,
                exclusive: true,
                weight: 15
            }),
            fragment: &[0x82],
        })
    );
    let frame = raw(HEADERS, PADDED | PRIORITY_FLAG, 5, &[1, 0, 0, 0, 3, 15, 0]);
    assert!(matches!(
        one(&frame),
        Ok(Frame::Headers { fragment: b"", .. })
    ));
    let frame = raw(HEADERS, PADDED | PRIORITY_FLAG, 5, &[2, 0, 0, 0, 3, 15, 0]);
    assert_eq!(one(&frame), CONN_PROTOCOL);
}

#[test]
fn stream_errors_and_bad_settings() {
    assert_eq!(
        one(&raw(PRIORITY, 0, 3, &[0, 0, 0, 3, 16])),
        Ok(Frame::StreamError {
            stream: 3,
            reason: Reason::PROTOCOL_ERROR
        })
    );
    assert_eq!(
        one(&raw(WINDOW_UPDATE, 0, 3, &[0x80, 0, 0, 0])),
        Ok(Frame::StreamError {
            stream: 3,
            reason: Reason::PROTOCOL_ERROR
        })
    );
    assert_eq!(one(&raw(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0])), CONN_PROTOCOL);
    let bad = |id: u16, value: u32| {
        let mut out = Vec::new();
        settings(&mut out, &[(id, value)]);
        read(&out, MIN_MAX_FRAME_SIZE).map(|r| r.map(|_| ()))
    };
    assert_eq!(
        bad(Settings::ENABLE_PUSH, 2),
        Err(ConnError(Reason::PROTOCOL_ERROR))
    );
    assert_eq!(
        bad(Settings::INITIAL_WINDOW_SIZE, MAX_WINDOW + 1),
        Err(ConnError(Reason::FLOW_CONTROL_ERROR))
    );
    assert_eq!(
        bad(Settings::MAX_FRAME_SIZE, MIN_MAX_FRAME_SIZE - 1),
        Err(ConnError(Reason::PROTOCOL_ERROR))
    );
    assert_eq!(
        bad(Settings::MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE + 1),
        Err(ConnError(Reason::PROTOCOL_ERROR))
    );
    // Unknown settings and frame types are ignored; a repeated setting takes its last value.
    let mut out = Vec::new();
    settings(
        &mut out,
        &[(0x99, 7), (Settings::MAX_CONCURRENT_STREAMS, 1), (3, 2)],
    );
    assert_eq!(
        one(&out),
        Ok(Frame::Settings(Settings {
            max_concurrent_streams: Some(2),
            ..Settings::default()
        }))
    );
    assert_eq!(
        one(&raw(0xfa, 0xff, 7, b"x")),
        Ok(Frame::Unknown {
            kind: 0xfa,
            stream: 7
        })
    );
}

#[test]
fn what_the_writers_write_reads_back() {
    let mut out = Vec::new();
    settings_ack(&mut out);
    ping(&mut out, true, *b"12345678");
    rst_stream(&mut out, 7, Reason::CANCEL);
    goaway(&mut out, 9, Reason::ENHANCE_YOUR_CALM, b"calm");
    window_update(&mut out, 0, MAX_WINDOW);
    data_header(&mut out, 3, 2, true);
    out.extend_from_slice(b"ok");
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while let Some((frame, len)) = read(rest, MIN_MAX_FRAME_SIZE).unwrap() {
        frames.push(frame);
        rest = &rest[len..];
    }
    assert!(rest.is_empty());
    assert_eq!(
        frames,
        [
            Frame::SettingsAck,
            Frame::Ping {
                ack: true,
                payload: *b"12345678"
            },
            Frame::RstStream {
                stream: 7,
                reason: Reason::CANCEL
            },
            Frame::GoAway {
                last_stream: 9,
                reason: Reason::ENHANCE_YOUR_CALM,
                debug: b"calm"
            },
            Frame::WindowUpdate {
                stream: 0,
                increment: MAX_WINDOW
            },
            Frame::Data {
                stream: 3,
                end_stream: true,
                data: b"ok",
                flow_len: 2
            },
        ]
    );
}

/// Reads every frame of `bytes` (which must all be whole).
fn all(bytes: &[u8], max: u32) -> Vec<Frame<'_>> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Some((frame, len)) = read(rest, max).unwrap() {
        frames.push(frame);
        rest = &rest[len..];
    }
    assert!(rest.is_empty());
    frames
}

proptest! {
    /// A head encoded in place comes out as one HEADERS frame, or HEADERS and CONTINUATIONs
    /// of at most the client's frame size whose fragments make up the block, END_HEADERS on
    /// the last, END_STREAM on the first.
    #[test]
    fn a_head_is_framed_within_the_frame_size(
        block in proptest::collection::vec(any::<u8>(), 0..50_000),
        end_stream in any::<bool>(),
    ) {
        let mut out = Vec::new();
        ping(&mut out, false, [0; 8]);
        let at = begin_headers(&mut out);
        out.extend_from_slice(&block);
        finish_headers(&mut out, at, 1, end_stream, MIN_MAX_FRAME_SIZE);
        let frames = all(&out, MIN_MAX_FRAME_SIZE);
        prop_assert_eq!(frames.len(), 1 + block.len().div_ceil(MIN_MAX_FRAME_SIZE as usize).max(1));
        let mut joined = Vec::new();
        let last = frames.len() - 1;
        for (i, frame) in frames.iter().enumerate().skip(1) {
            match *frame {
                Frame::Headers { stream: 1, end_stream: e, end_headers, priority: None, fragment } if i == 1 => {
                    prop_assert_eq!(e, end_stream);
                    prop_assert_eq!(end_headers, i == last);
                    joined.extend_from_slice(fragment);
                }
                Frame::Continuation { stream: 1, end_headers, fragment } if i > 1 => {
                    prop_assert_eq!(end_headers, i == last);
                    joined.extend_from_slice(fragment);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(joined, block);
    }

    /// Any bytes: a frame, a connection error or "not yet", never a panic; a frame is never
    /// read from fewer bytes than it has, and every prefix of a readable frame is "not yet"
    /// (or the same error, decided by the header).
    #[test]
    fn any_bytes_are_read_or_refused_only_once_whole(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        small in any::<bool>(),
    ) {
        let max = if small { 16 } else { MIN_MAX_FRAME_SIZE };
        match read(&bytes, max) {
            Ok(Some((_, len))) => {
                prop_assert!(len <= bytes.len());
                for cut in 0..len {
                    prop_assert_eq!(read(&bytes[..cut], max), Ok(None));
                }
            }
            Ok(None) => {}
            Err(e) => {
                for cut in HEADER_LEN..bytes.len() {
                    let r = read(&bytes[..cut], max);
                    prop_assert!(r == Ok(None) || r == Err(e));
                }
            }
        }
    }
}
