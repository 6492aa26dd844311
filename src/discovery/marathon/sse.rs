//! A bounded server-sent-events decoder for Marathon's `/v2/events` stream.
//!
//! Bytes go in as they arrive; complete events come out. Two Marathon quirks are handled here:
//! one `data:` field may carry several JSON objects separated by `\r\n` (so a bare line starting
//! with `{` continues the data), and idle streams send bare newlines as keep-alives. An event
//! (every line from its first to the blank line that ends it) longer than the configured limit is
//! an error: the stream is dropped and re-opened, never buffered without bound. Only a blank line
//! (an event's end or a keep-alive) counts as progress, so a stream that piles up lines without
//! ever finishing an event is as idle as a silent one.

/// One dispatched event: its `event:` name (if any) and its data lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: Option<String>,
    pub data: String,
}

/// An event passed the limit: the bytes it held (at most the limit).
#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLong(pub usize);

pub struct SseDecoder {
    /// Longest event: the bytes of its lines so far plus the line being read.
    max_event: usize,
    /// Bytes of the current event's completed lines (each counted with one byte for its end).
    event_bytes: usize,
    line: Vec<u8>,
    /// The previous byte was `\r`: a following `\n` belongs to the same line end.
    after_cr: bool,
    name: Option<String>,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    pub fn new(max_event: usize) -> SseDecoder {
        SseDecoder {
            max_event,
            event_bytes: 0,
            line: Vec::new(),
            after_cr: false,
            name: None,
            data: String::new(),
            has_data: false,
        }
    }

    /// Feeds bytes; pushes every event they complete onto `out`. `Ok(true)` when they held a
    /// blank line (an event's end or a keep-alive): the stream is alive.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<bool, EventTooLong> {
        let mut progress = false;
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    progress |= self.end_line(out)?;
                }
                _ => {
                    self.after_cr = false;
                    if self.event_bytes + self.line.len() >= self.max_event {
                        return Err(self.overflow());
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(progress)
    }

    /// Drops the event being read and says how much it held.
    fn overflow(&mut self) -> EventTooLong {
        let held = self.event_bytes + self.line.len();
        self.line.clear();
        self.data.clear();
        self.name = None;
        self.has_data = false;
        self.event_bytes = 0;
        EventTooLong(held)
    }

    /// The data given out is bounded too: a byte that is not UTF-8 becomes a three-byte
    /// replacement character, so the text can be longer than the bytes that were counted.
    fn bound_data(&mut self, adding: usize) -> Result<(), EventTooLong> {
        if self.data.len() + adding > self.max_event {
            let held = self.max_event;
            self.overflow();
            return Err(EventTooLong(held));
        }
        Ok(())
    }

    /// Ends a line; `Ok(true)` if it was blank.
    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<bool, EventTooLong> {
        if !self.line.is_empty() {
            // The line end counts too: a flood of one-byte lines is bounded like one long line.
            if self.event_bytes + self.line.len() + 1 > self.max_event {
                return Err(self.overflow());
            }
            self.event_bytes += self.line.len() + 1;
        }
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&line);
        if line.is_empty() {
            self.event_bytes = 0;
            if self.has_data {
                out.push(SseEvent {
                    name: self.name.take(),
                    data: std::mem::take(&mut self.data),
                });
                self.has_data = false;
            }
            self.name = None;
            return Ok(true);
        }
        if line.starts_with(':') {
            return Ok(false); // comment
        }
        if line.starts_with('{') && self.has_data {
            // Marathon's second JSON object in the same data field.
            self.bound_data(line.len() + 1)?;
            self.data.push('\n');
            self.data.push_str(&line);
            return Ok(false);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.name = Some(value.to_string()),
            "data" => {
                self.bound_data(value.len() + usize::from(self.has_data))?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields carry nothing switchyard uses
        }
        Ok(false)
    }
}

/// Splits an event's data into the JSON values it holds (one or several).
pub fn json_values(data: &str) -> impl Iterator<Item = Result<serde_json::Value, String>> + '_ {
    serde_json::Deserializer::from_str(data)
        .into_iter::<serde_json::Value>()
        .map(|r| r.map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new(1024);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn events_keepalives_and_split_chunks() {
        let out = decode(&[
            b"\n\n\r\nevent: status_update_event\r\nda",
            b"ta: {\"a\":1}\r\n\r\n\n",
        ]);
        assert_eq!(
            out,
            vec![SseEvent {
                name: Some("status_update_event".into()),
                data: "{\"a\":1}".into()
            }]
        );
    }

    #[test]
    fn several_objects_in_one_data_field() {
        let out = decode(&[b"event: x\r\ndata: {\"a\":1}\r\n{\"a\":2}\r\n\r\n"]);
        assert_eq!(out.len(), 1);
        let values: Vec<_> = json_values(&out[0].data).map(Result::unwrap).collect();
        assert_eq!(
            values,
            vec![serde_json::json!({"a":1}), serde_json::json!({"a":2})]
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_do_not_stretch_an_event_past_its_bound() {
        // Each 0xFF is one byte in, three out (U+FFFD): 20 of them fit 32 bytes, not 32 of text.
        let mut d = SseDecoder::new(32);
        let mut out = Vec::new();
        let mut input = b"data: ".to_vec();
        input.extend([0xFF; 20]);
        input.extend(b"\n\n");
        let result = d.feed(&input, &mut out);
        assert!(result.is_err(), "{out:?}");
        assert!(out.iter().all(|e| e.data.len() <= 32), "{out:?}");
    }

    #[test]
    fn long_lines_are_refused() {
        let mut d = SseDecoder::new(8);
        let mut out = Vec::new();
        assert!(d.feed(b"data: 0123456789\n", &mut out).is_err());
    }

    #[test]
    fn an_event_of_many_short_lines_is_bounded_as_a_whole() {
        let mut d = SseDecoder::new(64);
        let mut out = Vec::new();
        // Each line is short; the event never ends.
        let mut fed = 0;
        let err = loop {
            match d.feed(b"data: 0123456789\n", &mut out) {
                Ok(progress) => assert!(!progress, "no blank line, no progress"),
                Err(e) => break e,
            }
            fed += 1;
            assert!(fed < 10, "never refused");
        };
        assert!(err.0 <= 64, "held {} bytes", err.0);
        assert!(out.is_empty());
        // After the refusal the decoder starts clean: the next event comes through whole.
        assert_eq!(d.feed(b"data: 1\n\n", &mut out), Ok(true));
        assert_eq!(
            out,
            vec![SseEvent {
                name: None,
                data: "1".into()
            }]
        );
    }

    #[test]
    fn events_under_the_limit_each_start_from_zero() {
        let mut d = SseDecoder::new(64);
        let mut out = Vec::new();
        for _ in 0..100 {
            d.feed(
                b"event: e\ndata: 0123456789\ndata: 0123456789\n\n",
                &mut out,
            )
            .unwrap();
        }
        assert_eq!(out.len(), 100);
        assert_eq!(
            d.feed(b"\r\n", &mut out),
            Ok(true),
            "a keep-alive is progress"
        );
    }

    proptest! {
        /// However the stream is cut into chunks, the same events come out.
        #[test]
        fn chunking_does_not_matter(cuts in proptest::collection::vec(0usize..80, 0..6)) {
            let stream = b"\n:c\r\nevent: a\r\ndata: {\"x\":1}\r\n{\"y\":2}\r\n\r\n\ndata: 3\ndata: 4\n\n";
            let whole = decode(&[stream]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&stream[last..c]); last = c; }
            chunks.push(&stream[last..]);
            prop_assert_eq!(decode(&chunks), whole);
        }

        /// Whatever arrives, the decoder never holds more than its limit, and every event it
        /// gives out fits in it.
        #[test]
        fn arbitrary_bytes_stay_within_the_limit(
            chunks in proptest::collection::vec(proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), Just(b'{'), Just(b'd'), any::<u8>()],
                0..64), 0..16),
            prefix in prop_oneof![Just(&b""[..]), Just(&b"data: "[..]), Just(&b"event: x\n"[..])],
        ) {
            let mut d = SseDecoder::new(64);
            let mut out = Vec::new();
            let _ = d.feed(prefix, &mut out);
            for c in &chunks {
                if let Err(e) = d.feed(c, &mut out) {
                    prop_assert!(e.0 <= 64);
                }
                prop_assert!(d.event_bytes + d.line.len() <= 64);
                prop_assert!(d.data.len() + d.name.as_ref().map_or(0, String::len) <= 64);
            }
            for e in &out {
                prop_assert!(e.data.len() <= 64);
            }
        }
    }
}
