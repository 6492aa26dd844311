//! HTTP/2's defence against control-frame floods (CVE-2019-9512 ping, -9515 settings, -9518
//! empty frames, window-update and priority floods): the `h2` codec answers every PING and
//! SETTINGS and takes any number of WINDOW_UPDATE, PRIORITY or empty DATA frames, each costing
//! a wake, a parse and often a write, so a client sending nothing else holds most of a core
//! without ever being told to stop. [`Scanner`] follows the frame boundaries of a connection's
//! inbound bytes (after the client preface; a frame may be split across reads anywhere) and
//! charges every frame that does no useful work against a [`Budget`] that useful work refills:
//! a request (HEADERS), request body bytes (DATA with payload), response bytes sent (the
//! WINDOW_UPDATEs a client owes for them) and time. Past it, the connection is flooding:
//! `h2_server` sends GOAWAY(ENHANCE_YOUR_CALM) and closes it, as nginx and HAProxy ("glitches")
//! do. [`Guarded`] is the scanner in the connection's IO: one header read per frame, no
//! allocation, no clock read until the budget is spent.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4), which the codec checks: skipped here.
const PREFACE_LEN: usize = 24;
const HEADER_LEN: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const PADDED: u8 = 0x8;

/// Control frames a connection may send before it has done anything (a browser's opening
/// SETTINGS, WINDOW_UPDATE and PRIORITY frames are a handful).
pub const INITIAL_CREDIT: u32 = 1000;
/// The most a connection can bank by useful work: a client that made many requests still
/// cannot flood for long afterwards.
pub const MAX_CREDIT: u32 = 10_000;
/// Each request (HEADERS frame) earns this many: its stream's WINDOW_UPDATEs, PRIORITY and
/// RST_STREAM with room to spare.
pub const CREDIT_PER_REQUEST: u32 = 8;
/// Response bytes written per control frame earned: the WINDOW_UPDATEs a downloading client
/// sends (real clients send one per half window, many KiB).
pub const BYTES_PER_CREDIT: usize = 1024;
/// Control frames per second any connection may send for ever (keep-alive pings on a
/// long-lived stream): a rate that costs nothing.
pub const CREDIT_PER_SECOND: u32 = 100;

/// Streams handed on as requests before a connection's early resets are judged.
pub const RAPID_RESET_MIN_STREAMS: u32 = 100;

/// The rapid-reset rule (CVE-2023-44487), one home for both HTTP/2 server codecs: a client
/// that reset more than half of at least [`RAPID_RESET_MIN_STREAMS`] streams after they were
/// handed on as requests and before their answer's head is abusive (each had the proxy start a
/// backend request that was then thrown away; Envoy judges the same share over its
/// `premature_reset_total_stream_count`). `opened` counts only streams that could cost a
/// backend: a stream refused, answered 431, or answered here with no backend's answer (no
/// route, 401, 403, a limit, none reachable) is taken back out, or a client could mix one such cheap stream
/// with each reset and stay at half for free.
pub fn rapid_reset(opened: u32, early_resets: u32) -> bool {
    opened >= RAPID_RESET_MIN_STREAMS && u64::from(early_resets) * 2 > u64::from(opened)
}

/// A client's reset counts as early only within this long of its stream's request (Envoy's
/// `premature_reset_min_stream_lifetime`): an attacker resets at once, while a client that
/// gives up on a slow answer (a deadline, a navigation away) has waited; and a stream held
/// this long before its reset takes one of the connection's few concurrent places for it, so
/// such resets cannot come fast. A stream we reset for the client's fault (a bad frame on it,
/// "MadeYouReset", CVE-2025-8671) counts whenever it comes.
pub const EARLY_RESET_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// What a flooding connection sent: the frame that found the budget spent, and how many
/// control frames it had sent in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    pub frame_type: u8,
    pub control_frames: u64,
}

impl Flood {
    /// The frame type's name, for the log.
    pub fn frame_name(&self) -> &'static str {
        match self.frame_type {
            0x0 => "DATA",
            0x2 => "PRIORITY",
            0x3 => "RST_STREAM",
            0x4 => "SETTINGS",
            0x5 => "PUSH_PROMISE",
            0x6 => "PING",
            0x7 => "GOAWAY",
            0x8 => "WINDOW_UPDATE",
            0x9 => "CONTINUATION",
            _ => "unknown",
        }
    }
}

/// Control frames allowed from here on: spent by frames doing no useful work, earned by those
/// that do, by response bytes and by time.
#[derive(Debug, Clone)]
pub struct Budget {
    credit: u32,
    /// Response bytes written not yet turned into credit.
    written: usize,
    /// Since when time has not been credited.
    since: Instant,
    control_frames: u64,
}

impl Budget {
    pub fn new(now: Instant) -> Budget {
        Budget {
            credit: INITIAL_CREDIT,
            written: 0,
            since: now,
            control_frames: 0,
        }
    }

    fn earn(&mut self, credit: u32) {
        self.credit = self.credit.saturating_add(credit).min(MAX_CREDIT);
    }

    /// Response bytes written to the client.
    pub fn sent(&mut self, bytes: usize) {
        self.written += bytes;
        if self.written >= BYTES_PER_CREDIT {
            let earned = self.written / BYTES_PER_CREDIT;
            self.written %= BYTES_PER_CREDIT;
            self.earn(u32::try_from(earned).unwrap_or(u32::MAX));
        }
    }

    /// One control frame of `frame_type`; the clock is read only once the credit is spent.
    fn spend(&mut self, frame_type: u8, now: &mut impl FnMut() -> Instant) -> Result<(), Flood> {
        self.control_frames += 1;
        if self.credit == 0 {
            let now = now();
            let elapsed = now.saturating_duration_since(self.since);
            let earned = elapsed.as_millis() * u128::from(CREDIT_PER_SECOND) / 1000;
            if earned == 0 {
                return Err(Flood {
                    frame_type,
                    control_frames: self.control_frames,
                });
            }
            self.since = now;
            self.earn(u32::try_from(earned).unwrap_or(u32::MAX));
        }
        self.credit -= 1;
        Ok(())
    }

    /// One inbound frame of `frame_type` with `flags`; `carries_data` says whether a DATA
    /// frame has payload beyond its padding. A request (HEADERS) and body bytes are useful
    /// work and earn credit; an empty DATA frame ending its stream is how a body ends and costs
    /// nothing; every other frame (control frames, empty DATA, CONTINUATION, unknown types) is
    /// charged. Shared by [`Scanner`] and the HTTP/2 codec's connection (`h2codec::conn`).
    pub fn judge(
        &mut self,
        frame_type: u8,
        flags: u8,
        carries_data: bool,
        now: &mut impl FnMut() -> Instant,
    ) -> Result<(), Flood> {
        match frame_type {
            HEADERS => {
                self.earn(CREDIT_PER_REQUEST);
                Ok(())
            }
            DATA if carries_data => {
                self.earn(1);
                Ok(())
            }
            DATA if flags & END_STREAM != 0 => Ok(()),
            other => self.spend(other, now),
        }
    }

    /// Control frames still allowed without more useful work or time.
    pub fn credit(&self) -> u32 {
        self.credit
    }
}

/// Follows the frames of a client's byte stream and judges each by its 9-byte header (and, for
/// a padded DATA frame, its pad length); payloads are skipped, never copied.
#[derive(Debug, Clone)]
pub struct Scanner {
    preface_left: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    payload_left: usize,
    /// A padded DATA frame's header was read: its first payload byte, the pad length, decides
    /// whether it carries data. Holds the frame's length and flags.
    padded_data: Option<(usize, u8)>,
    pub budget: Budget,
}

impl Scanner {
    pub fn new(now: Instant) -> Scanner {
        Scanner {
            preface_left: PREFACE_LEN,
            header: [0; HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            padded_data: None,
            budget: Budget::new(now),
        }
    }

    /// The next bytes from the client; `now` is called only when the budget is spent. An
    /// error is final: the connection is flooding.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut now: impl FnMut() -> Instant,
    ) -> Result<(), Flood> {
        if self.preface_left > 0 {
            let skipped = self.preface_left.min(bytes.len());
            self.preface_left -= skipped;
            bytes = &bytes[skipped..];
        }
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                if let Some((length, flags)) = self.padded_data.take() {
                    let pad = usize::from(bytes[0]);
                    self.budget.judge(DATA, flags, length > pad + 1, &mut now)?;
                }
                let skipped = self.payload_left.min(bytes.len());
                self.payload_left -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            let taken = (HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + taken].copy_from_slice(&bytes[..taken]);
            self.header_len += taken;
            bytes = &bytes[taken..];
            if self.header_len == HEADER_LEN {
                self.header_len = 0;
                let h = self.header;
                let length = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.payload_left = length;
                self.frame(h[3], h[4], length, &mut now)?;
            }
        }
        Ok(())
    }

    fn frame(
        &mut self,
        frame_type: u8,
        flags: u8,
        length: usize,
        now: &mut impl FnMut() -> Instant,
    ) -> Result<(), Flood> {
        if frame_type == DATA && flags & PADDED != 0 && length > 0 {
            // Whether it carries data is told by its pad length, the payload's first byte.
            self.padded_data = Some((length, flags));
            return Ok(());
        }
        self.budget.judge(frame_type, flags, length > 0, now)
    }
}

/// A client connection's IO with its [`Scanner`]: once the client floods, `flood` is set and
/// nothing more is read from it (the server sends GOAWAY and closes).
pub struct Guarded<'f, S> {
    io: S,
    scanner: Scanner,
    flood: &'f OnceLock<Flood>,
}

impl<'f, S> Guarded<'f, S> {
    pub fn new(io: S, flood: &'f OnceLock<Flood>) -> Guarded<'f, S> {
        Guarded {
            io,
            scanner: Scanner::new(Instant::now()),
            flood,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.flood.get().is_some() {
            // The connection's task sees the flood once the codec is pending, and ends it.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if let Err(flood) = this.scanner.feed(&buf.filled()[before..], Instant::now) {
            let _ = this.flood.set(flood);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = std::task::ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.scanner.budget.sent(written);
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = std::task::ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        this.scanner.budget.sent(written);
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// How long the budget takes to refill by time alone from empty to `credit`.
    fn refill_time(credit: u32) -> Duration {
        Duration::from_millis(u64::from(credit) * 1000 / u64::from(CREDIT_PER_SECOND))
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(frame_type: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            frame_type,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn ping() -> Vec<u8> {
        frame(0x6, 0, &[0; 8])
    }

    /// Feeds `bytes` whole; the number of control frames accepted before a flood, if any.
    fn judge(bytes: &[u8], at: Instant) -> Result<u32, Flood> {
        let mut s = Scanner::new(at);
        s.feed(bytes, || at)?;
        Ok(s.budget.credit())
    }

    #[test]
    fn a_ping_flood_is_stopped_after_the_initial_credit() {
        let at = Instant::now();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..INITIAL_CREDIT {
            bytes.extend(ping());
        }
        assert_eq!(judge(&bytes, at), Ok(0));
        bytes.extend(ping());
        let flood = judge(&bytes, at).unwrap_err();
        assert_eq!(flood.frame_name(), "PING");
        assert_eq!(flood.control_frames, u64::from(INITIAL_CREDIT) + 1);
    }

    #[test]
    fn requests_and_body_bytes_earn_credit_and_an_ending_empty_data_frame_costs_nothing() {
        let at = Instant::now();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..INITIAL_CREDIT {
            bytes.extend(frame(0x8, 0, &[0, 0, 0, 0, 0, 0, 0, 1]));
        }
        bytes.extend(frame(0x1, 0x4, b"\x82")); // HEADERS
        bytes.extend(frame(0x0, 0, b"body")); // DATA with payload
        bytes.extend(frame(0x0, END_STREAM, b"")); // the body's end
        assert_eq!(judge(&bytes, at), Ok(CREDIT_PER_REQUEST + 1));
        // Empty DATA frames not ending a stream, and padded ones carrying only padding, are
        // charged; a padded one carrying a byte is not.
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x0, 0, b""));
        bytes.extend(frame(0x0, PADDED, &[2, 0, 0]));
        bytes.extend(frame(0x0, PADDED, &[1, b'x', 0]));
        assert_eq!(judge(&bytes, at), Ok(INITIAL_CREDIT - 2 + 1));
    }

    #[test]
    fn response_bytes_and_time_refill_the_budget_within_its_bound() {
        let at = Instant::now();
        let mut b = Budget::new(at);
        b.sent(BYTES_PER_CREDIT * 3 - 1);
        assert_eq!(b.credit(), INITIAL_CREDIT + 2);
        b.sent(1);
        assert_eq!(b.credit(), INITIAL_CREDIT + 3);
        b.sent(usize::MAX / 2);
        assert_eq!(b.credit(), MAX_CREDIT);
        let mut b = Budget::new(at);
        let mut now = || at;
        for _ in 0..INITIAL_CREDIT {
            b.spend(0x6, &mut now).unwrap();
        }
        assert!(b.spend(0x6, &mut now).is_err());
        let later = at + refill_time(5);
        let mut later_now = || later;
        for _ in 0..5 {
            b.spend(0x6, &mut later_now).unwrap();
        }
        assert!(b.spend(0x6, &mut later_now).is_err());
    }

    fn frames() -> impl Strategy<Value = Vec<(u8, u8, Vec<u8>)>> {
        proptest::collection::vec(
            (
                0u8..12,
                any::<u8>(),
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
            0..200,
        )
    }

    proptest! {
        /// However the bytes are split across reads, the verdict and the credit left are the
        /// whole stream's, and the scanner never reads past a frame's end into the next.
        #[test]
        fn splits_never_change_the_verdict(frames in frames(), cuts in proptest::collection::vec(0usize..2000, 0..20)) {
            let at = Instant::now();
            let mut bytes = PREFACE.to_vec();
            for (t, f, p) in &frames {
                bytes.extend(frame(*t, *f, p));
            }
            let whole = judge(&bytes, at);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut s = Scanner::new(at);
            let mut from = 0;
            let mut split = Ok(());
            for cut in cuts.into_iter().chain([bytes.len()]) {
                split = split.and_then(|()| s.feed(&bytes[from..cut], || at));
                from = cut;
            }
            match whole {
                Ok(credit) => {
                    prop_assert_eq!(split, Ok(()));
                    prop_assert_eq!(s.budget.credit(), credit);
                }
                Err(flood) => prop_assert_eq!(split, Err(flood)),
            }
        }

        /// Arbitrary bytes never panic, and the credit stays within its bound.
        #[test]
        fn any_bytes_are_judged_within_the_bound(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let at = Instant::now();
            let mut s = Scanner::new(at);
            let _ = s.feed(&bytes, || at);
            prop_assert!(s.budget.credit() <= MAX_CREDIT);
        }
    }
}
