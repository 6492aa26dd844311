//! A bounded RecordIO decoder for the Mesos operator API's event stream.
//!
//! RecordIO frames each record as its length in ASCII decimal, a `\n`, then that many bytes:
//! `21\n{"type":"HEARTBEAT"}\n` is not a record (the trailing newline would be read as the next
//! length's start and refused), `20\n{"type":"HEARTBEAT"}` is. Bytes go in as they arrive;
//! complete records come out. A record longer than the bound is skipped without being buffered
//! (its bytes are counted off as they pass) and reported as [`Frame::Oversized`]; a length that is
//! not a number cannot be resynchronized from and is an error (the stream is re-opened).

/// What the decoder produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete record's payload.
    Record(Vec<u8>),
    /// A record of this many bytes went past unread: longer than the bound.
    Oversized(u64),
}

/// The framing itself is broken: what was read where a length belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLength(pub String);

impl std::fmt::Display for BadLength {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordIO: bad record length {:?}", self.0)
    }
}

/// The longest length prefix accepted: 20 digits hold any u64.
const MAX_DIGITS: usize = 20;

enum State {
    Length(Vec<u8>),
    Payload { want: usize, buf: Vec<u8> },
    Skip { left: u64, total: u64 },
}

pub struct Decoder {
    max_record: usize,
    state: State,
}

impl Decoder {
    pub fn new(max_record: usize) -> Decoder {
        Decoder {
            max_record,
            state: State::Length(Vec::new()),
        }
    }

    /// Changes the bound for the records that follow (the snapshot's is larger).
    pub fn set_max(&mut self, max_record: usize) {
        self.max_record = max_record;
    }

    /// Whether the decoder is between records (nothing partial buffered).
    pub fn is_idle(&self) -> bool {
        matches!(&self.state, State::Length(digits) if digits.is_empty())
    }

    /// Feeds bytes; pushes every frame they complete onto `out`. After an error the decoder
    /// must not be fed again.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), BadLength> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Length(digits) => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    match b {
                        b'0'..=b'9' if digits.len() < MAX_DIGITS => digits.push(b),
                        b'\n' if !digits.is_empty() => {
                            let text = std::str::from_utf8(digits).unwrap_or("");
                            let len: u64 = text.parse().map_err(|_| BadLength(text.to_string()))?;
                            self.state = if len > self.max_record as u64 {
                                State::Skip {
                                    left: len,
                                    total: len,
                                }
                            } else {
                                State::Payload {
                                    want: len as usize,
                                    buf: Vec::with_capacity(len as usize),
                                }
                            };
                            self.finish_if_done(out);
                        }
                        _ => {
                            let mut seen = String::from_utf8_lossy(digits).into_owned();
                            seen.push_str(&String::from_utf8_lossy(&[b]));
                            return Err(BadLength(seen));
                        }
                    }
                }
                State::Payload { want, buf } => {
                    let take = (*want - buf.len()).min(bytes.len());
                    buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.finish_if_done(out);
                }
                State::Skip { left, .. } => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    self.finish_if_done(out);
                }
            }
        }
        Ok(())
    }

    fn finish_if_done(&mut self, out: &mut Vec<Frame>) {
        let done = match &self.state {
            State::Payload { want, buf } => buf.len() == *want,
            State::Skip { left, .. } => *left == 0,
            State::Length(_) => false,
        };
        if !done {
            return;
        }
        match std::mem::replace(&mut self.state, State::Length(Vec::new())) {
            State::Payload { buf, .. } => out.push(Frame::Record(buf)),
            State::Skip { total, .. } => out.push(Frame::Oversized(total)),
            State::Length(_) => {}
        }
    }
}

/// Frames `payload` as one RecordIO record (what the master sends; for tests and stand-ins).
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(chunks: &[&[u8]], max: usize) -> Result<Vec<Frame>, BadLength> {
        let mut d = Decoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn records_split_anywhere() {
        let out = decode(&[b"5\nhel", b"lo2", b"\n{}0\n"], 64).unwrap();
        assert_eq!(
            out,
            vec![
                Frame::Record(b"hello".to_vec()),
                Frame::Record(b"{}".to_vec()),
                Frame::Record(Vec::new())
            ]
        );
    }

    #[test]
    fn oversized_records_are_skipped_not_buffered() {
        let mut stream = b"12\n".to_vec();
        stream.extend_from_slice(&[b'x'; 12]);
        stream.extend_from_slice(b"2\nok");
        let out = decode(&[&stream], 4).unwrap();
        assert_eq!(
            out,
            vec![Frame::Oversized(12), Frame::Record(b"ok".to_vec())]
        );
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(decode(&[b"x\n"], 8).is_err());
        assert!(decode(&[b"\n"], 8).is_err());
        assert!(decode(&[b"2\nok\n2\nok"], 8).is_err(), "a stray newline");
        assert!(decode(&[b"123456789012345678901\n"], 8).is_err());
        assert!(decode(&[b"99999999999999999999\n"], 8).is_err(), "past u64");
    }

    proptest! {
        /// Whatever the records and however the stream is cut, the same records come out.
        #[test]
        fn round_trip_under_any_chunking(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let stream: Vec<u8> = records.iter().flat_map(|r| encode(r)).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&stream[last..c]); last = c; }
            chunks.push(&stream[last..]);
            let out = decode(&chunks, 20).unwrap();
            let expected: Vec<Frame> = records
                .iter()
                .map(|r| if r.len() > 20 { Frame::Oversized(r.len() as u64) } else { Frame::Record(r.clone()) })
                .collect();
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = Decoder::new(64);
            let mut out = Vec::new();
            let _ = d.feed(&bytes, &mut out);
            let bounded = out.iter().all(|f| match f {
                Frame::Record(r) => r.len() <= 64,
                Frame::Oversized(n) => *n > 64,
            });
            prop_assert!(bounded);
        }
    }
}
