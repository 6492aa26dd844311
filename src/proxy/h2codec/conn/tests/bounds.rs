//! What the connection bounds: receive and send windows, SETTINGS and PING floods, HPACK
//! copies of large entries, trailers on streams we reset, the streams we reset for a client's
//! faults, and new streams after our GOAWAY.

use super::*;

#[test]
fn receive_windows_are_enforced_and_given_back_as_the_body_is_consumed() {
    let config = Config {
        stream_window: 65_535,
        conn_window: 100_000,
        ..Config::default()
    };
    let mut c = connected(config.clone());
    let mut bytes = raw(HEADERS, END_HEADERS, 1, &get(&[]));
    for _ in 0..4 {
        bytes.extend(raw(DATA, 0, 1, &[b'x'; 16_000]));
    }
    let (events, fault) = feed(&mut c, &bytes);
    assert_eq!((events.len(), fault), (5, None));
    // Past the stream's window (64,000 + 2,000 > 65,535): that stream is reset.
    let (events, _) = feed(&mut c, &raw(DATA, 0, 1, &[b'x'; 2_000]));
    assert_eq!(events, [Ev::Reset(1, Reason::FLOW_CONTROL_ERROR)]);
    // Consuming body bytes sends WINDOW_UPDATEs once half a window is owed.
    let mut c = connected(config.clone());
    let mut bytes = raw(HEADERS, END_HEADERS, 1, &get(&[]));
    for _ in 0..3 {
        bytes.extend(raw(DATA, 0, 1, &[b'x'; 16_000]));
    }
    feed(&mut c, &bytes);
    written(&mut c);
    c.release(1, 16_000);
    c.release(1, 16_000);
    assert!(written(&mut c).is_empty());
    c.release(1, 16_000);
    let updates: Vec<(u32, u32)> = written(&mut c)
        .into_iter()
        .map(|f| (f.2, code(&f.3, 0).0))
        .collect();
    assert_eq!(updates, [(1, 48_000)]);
    // The connection's window: streams together past it end the connection.
    let mut c = connected(config);
    let mut bytes = Vec::new();
    for id in [1, 3, 5] {
        bytes.extend(raw(HEADERS, END_HEADERS, id, &get(&[])));
        for _ in 0..3 {
            bytes.extend(raw(DATA, 0, id, &[b'x'; 16_000]));
        }
    }
    assert_eq!(fails(&mut c, &bytes).1, Reason::FLOW_CONTROL_ERROR);
}

#[test]
fn send_windows_follow_window_updates_and_settings_and_overflow_is_refused() {
    let mut c = connected(Config::default());
    feed(
        &mut c,
        &raw(HEADERS, END_STREAM | END_HEADERS, 1, &get(&[])),
    );
    assert_eq!(c.send_capacity(1), 0, "no head yet");
    assert!(c.send_head(1, 200, [], false));
    assert_eq!(c.send_capacity(1), 16_384);
    assert_eq!(c.send_data(1, &[0; 60_000], false), 16_384);
    assert_eq!(c.send_data(1, &[0; 60_000], false), 16_384);
    assert_eq!(c.send_data(1, &[0; 60_000], false), 16_384);
    assert_eq!(c.send_data(1, &[0; 60_000], false), 65_535 - 3 * 16_384);
    assert_eq!(c.send_capacity(1), 0);
    // The client lowers the initial window: the stream's goes negative; a WINDOW_UPDATE of
    // the stream and one of the connection are both needed.
    let mut settings = Vec::new();
    frame::settings(&mut settings, &[(Settings::INITIAL_WINDOW_SIZE, 65_435)]);
    feed(&mut c, &settings);
    feed(&mut c, &raw(WINDOW_UPDATE, 0, 1, &150u32.to_be_bytes()));
    assert_eq!(c.send_capacity(1), 0);
    feed(&mut c, &raw(WINDOW_UPDATE, 0, 0, &1000u32.to_be_bytes()));
    assert_eq!(c.send_capacity(1), 50);
    // Overflow: the stream's is reset, the connection's ends it.
    let (events, _) = feed(&mut c, &raw(WINDOW_UPDATE, 0, 1, &MAX_WINDOW.to_be_bytes()));
    assert_eq!(events, [Ev::Reset(1, Reason::FLOW_CONTROL_ERROR)]);
    let over = raw(WINDOW_UPDATE, 0, 0, &MAX_WINDOW.to_be_bytes());
    assert_eq!(fails(&mut c, &over).1, Reason::FLOW_CONTROL_ERROR);
}

#[test]
fn settings_are_acknowledged_and_pings_answered_until_they_flood() {
    let mut c = connected(Config::default());
    let mut bytes = raw(PING, 0, 0, b"12345678");
    bytes.extend(raw(PING, 0x1, 0, b"87654321"));
    bytes.extend(raw(SETTINGS, 0x1, 0, &[]));
    feed(&mut c, &bytes);
    assert_eq!(written(&mut c), [(PING, 0x1, 0, b"12345678".to_vec())]);
    assert!(c.settings_acked());
    let mut flood = Vec::new();
    for _ in 0..=crate::proxy::h2_frames::INITIAL_CREDIT {
        flood.extend(raw(PING, 0, 0, &[0; 8]));
    }
    let (fault, reason) = fails(&mut c, &flood);
    assert!(matches!(fault, Fault::Flood(f) if f.frame_name() == "PING"));
    assert_eq!(reason, Reason::ENHANCE_YOUR_CALM);
}

/// A block that names a large table entry again and again (a literal with indexing whose name
/// is that entry's: two bytes each, the entry copied each time) ends the connection once its
/// fields come to more than a few times the list size, 431 or not.
#[test]
fn a_block_that_copies_a_large_entry_over_and_over_ends_the_connection() {
    let mut c = connected(Config::default());
    // An entry with a 4,000-byte name, added to the table (literal with indexing, new name).
    let name = vec![b'n'; 4000];
    let mut prime = get(&[]);
    prime.push(0x40);
    prime.extend([0x7f, 0xa1, 0x1e]); // 127 + 3873 = 4000
    prime.extend(&name);
    prime.push(0);
    let (events, fault) = feed(&mut c, &raw(HEADERS, END_STREAM | END_HEADERS, 1, &prime));
    assert_eq!(fault, None);
    assert!(matches!(&events[..], [Ev::Request(1, ..)]), "{events:?}");
    // 8,000 times "the name of entry 62, an empty value, indexed": 16 KB naming 32 MB.
    let mut flood = get(&[]);
    for _ in 0..8000 {
        flood.extend([0x7e, 0x00]);
    }
    let (fault, reason) = fails(&mut c, &raw(HEADERS, END_STREAM | END_HEADERS, 3, &flood));
    assert_eq!(
        (fault, reason),
        (
            Fault::Protocol(Reason::ENHANCE_YOUR_CALM),
            Reason::ENHANCE_YOUR_CALM
        )
    );
}

/// Trailers a client sent before our RST_STREAM reached it are ignored (RFC 9113 §5.1), the
/// table kept in step; trailers on a stream that closed otherwise are still a connection error.
#[test]
fn trailers_on_a_stream_we_reset_are_ignored() {
    let mut c = connected(Config {
        max_concurrent_streams: 1,
        ..Config::default()
    });
    let mut bytes = raw(HEADERS, END_HEADERS, 1, &get(&[]));
    // Refused: one stream at a time.
    bytes.extend(raw(HEADERS, END_HEADERS, 3, &get(&[])));
    // Its trailers, adding a field to the table.
    let mut trailers = vec![0x40, 5];
    trailers.extend_from_slice(b"x-sum");
    trailers.extend([3]);
    trailers.extend_from_slice(b"abc");
    bytes.extend(raw(HEADERS, END_STREAM | END_HEADERS, 3, &trailers));
    // Stream 1's trailers refer to that field by its index: decoded as the client meant.
    bytes.extend(raw(HEADERS, END_STREAM | END_HEADERS, 1, &[0xbe]));
    let (events, fault) = feed(&mut c, &bytes);
    assert_eq!(fault, None);
    assert_eq!(
        events[1..],
        [Ev::Trailers(1, vec![("x-sum".into(), "abc".into())])]
    );
    // Stream 1 ended both ways once answered: its trailers again are a connection error.
    assert!(c.send_head(1, 200, [], true));
    assert_eq!(
        fails(&mut c, &raw(HEADERS, END_STREAM | END_HEADERS, 1, &[0xbe])).1,
        Reason::STREAM_CLOSED
    );
}

#[test]
fn streams_reset_for_the_clients_faults_are_bounded() {
    let mut c = connected(Config {
        max_local_resets: 3,
        ..Config::default()
    });
    let mut bytes = Vec::new();
    for id in [1, 3, 5, 7] {
        bytes.extend(raw(
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &get(&[(b"Bad", b"x")]),
        ));
    }
    assert_eq!(fails(&mut c, &bytes).1, Reason::ENHANCE_YOUR_CALM);
}

#[test]
fn after_our_goaway_new_streams_are_ignored_but_kept_in_step() {
    let mut c = connected(Config::default());
    feed(&mut c, &raw(HEADERS, END_HEADERS, 1, &get(&[])));
    c.goaway(Reason::NO_ERROR);
    let frames = written(&mut c);
    assert_eq!(frames[0].0, GOAWAY);
    assert_eq!(code(&frames[0].3, 0).0, 1);
    let mut block = get(&[]);
    block.extend([&[0x40, 1][..], b"k", &[1], b"v"].concat());
    let (events, fault) = feed(&mut c, &raw(HEADERS, END_HEADERS, 3, &block));
    assert_eq!((events, fault), (vec![], None));
    let (events, _) = feed(&mut c, &raw(DATA, END_STREAM, 1, b"ok"));
    assert_eq!(events, [Ev::Data(1, b"ok".to_vec(), true)]);
}
