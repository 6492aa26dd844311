//! Rapid reset as the codec judges it: streams the client resets (or has us reset for its
//! faults) after their request went on and before their answer, against the streams that
//! could cost a backend, within `EARLY_RESET_WITHIN` of their request.

use super::*;
use crate::proxy::h2_frames::RAPID_RESET_MIN_STREAMS;

#[test]
fn streams_reset_before_their_answer_end_the_connection_past_half() {
    let mut c = connected(Config::default());
    let mut bytes = Vec::new();
    for i in 0..RAPID_RESET_MIN_STREAMS {
        let id = 2 * i + 1;
        bytes.extend(raw(HEADERS, END_HEADERS, id, &get(&[])));
        if i % 2 == 0 {
            bytes.extend(raw(RST_STREAM, 0, id, &[0, 0, 0, 8]));
        }
    }
    let (events, fault) = feed(&mut c, &bytes);
    assert_eq!(fault, None);
    assert_eq!(events.len(), 150);
    let next = RAPID_RESET_MIN_STREAMS * 2 + 1;
    let mut bytes = raw(HEADERS, END_HEADERS, next, &get(&[]));
    bytes.extend(raw(RST_STREAM, 0, next, &[0, 0, 0, 8]));
    let (fault, reason) = fails(&mut c, &bytes);
    assert_eq!(
        fault,
        Fault::RapidReset {
            opened: 101,
            reset: 51
        }
    );
    assert_eq!(reason, Reason::ENHANCE_YOUR_CALM);
}

/// Streams answered 431 (or refused, or reset for a fault) cost no backend request: they do
/// not count as opened, so a client cannot mix them in to keep its early resets under half.
#[test]
fn streams_answered_431_do_not_dilute_early_resets() {
    let mut c = connected(Config {
        max_header_list_size: 300,
        ..Config::default()
    });
    let big = [b'v'; 120];
    let too_large = get(&[(b"x-a", &big), (b"x-b", &big), (b"x-c", &big)]);
    let mut bytes = Vec::new();
    for i in 0..RAPID_RESET_MIN_STREAMS {
        let id = 4 * i + 1;
        bytes.extend(raw(HEADERS, END_STREAM | END_HEADERS, id, &too_large));
        bytes.extend(raw(HEADERS, END_HEADERS, id + 2, &get(&[])));
        bytes.extend(raw(RST_STREAM, 0, id + 2, &[0, 0, 0, 8]));
    }
    let (_, fault) = feed(&mut c, &bytes);
    assert!(
        matches!(
            fault,
            Some(Fault::RapidReset {
                opened: 100,
                reset: 51..
            })
        ),
        "{fault:?}"
    );
}

/// A request handed on and then reset by us for the client's fault (here a WINDOW_UPDATE that
/// overflows its window) before its answer is an early reset too ("MadeYouReset",
/// CVE-2025-8671): past half of 100, the connection ends.
#[test]
fn streams_we_reset_for_a_fault_after_their_request_count_as_early_resets() {
    let mut c = connected(Config::default());
    let mut bytes = Vec::new();
    for i in 0..RAPID_RESET_MIN_STREAMS {
        let id = 2 * i + 1;
        bytes.extend(raw(HEADERS, END_STREAM | END_HEADERS, id, &get(&[])));
        bytes.extend(raw(WINDOW_UPDATE, 0, id, &0x7fff_ffffu32.to_be_bytes()));
    }
    let (_, fault) = feed(&mut c, &bytes);
    assert!(
        matches!(fault, Some(Fault::RapidReset { opened: 100, .. })),
        "{fault:?}"
    );
}

/// Trailers with a value the proxy cannot take (a control character) on a stream whose
/// request went on: the stream is reset for the client's fault, an early reset
/// (MadeYouReset), so a client cannot have its streams thrown away without limit.
#[test]
fn bad_trailers_after_the_request_went_on_count_as_early_resets() {
    let mut c = connected(Config::default());
    let mut bytes = Vec::new();
    for i in 0..RAPID_RESET_MIN_STREAMS {
        let id = 2 * i + 1;
        bytes.extend(raw(HEADERS, END_HEADERS, id, &get(&[])));
        bytes.extend(raw(
            HEADERS,
            END_STREAM | END_HEADERS,
            id,
            &literal(b"x", b"a\x01b"),
        ));
    }
    let (_, fault) = feed(&mut c, &bytes);
    assert!(
        matches!(fault, Some(Fault::RapidReset { opened: 100, .. })),
        "{fault:?}"
    );
}

/// A client's reset counts as early only within `EARLY_RESET_WITHIN` of its request: one that
/// waited longer for an answer (a deadline, a slow backend) gave up, it did not flood.
#[test]
fn resets_after_a_long_wait_are_not_early() {
    let start = Instant::now();
    let late = start + crate::proxy::h2_frames::EARLY_RESET_WITHIN;
    let mut c = connected(Config::default());
    for i in 0..150u32 {
        let id = 2 * i + 1;
        let (_, fault) = feed_at(&mut c, &raw(HEADERS, END_HEADERS, id, &get(&[])), start);
        assert_eq!(fault, None);
        let (_, fault) = feed_at(&mut c, &raw(RST_STREAM, 0, id, &[0, 0, 0, 8]), late);
        assert_eq!(fault, None, "stream {id}");
    }
    // The same just inside the window: early.
    let mut c = connected(Config::default());
    let mut fault = None;
    for i in 0..150u32 {
        let id = 2 * i + 1;
        let _ = feed_at(&mut c, &raw(HEADERS, END_HEADERS, id, &get(&[])), start);
        let just_inside = late - std::time::Duration::from_millis(1);
        fault = feed_at(&mut c, &raw(RST_STREAM, 0, id, &[0, 0, 0, 8]), just_inside).1;
        if fault.is_some() {
            break;
        }
    }
    assert!(matches!(fault, Some(Fault::RapidReset { .. })), "{fault:?}");
}
