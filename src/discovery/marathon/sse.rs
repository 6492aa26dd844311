//! A bounded server-sent-events decoder for Marathon's `/v2/events` stream.
//!
//! Bytes go in as they arrive; complete events come out. Two Marathon quirks are handled here:
//! one `data:` field may carry several JSON objects separated by `\r\n` (so a bare line starting
//! with `{` continues the data), and idle streams send bare newlines as keep-alives. A line longer
//! than the configured limit is an error: the stream is dropped and re-opened, never buffered
//! without bound.

/// One dispatched event: its `event:` name (if any) and its data lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: Option<String>,
    pub data: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong(pub usize);

pub struct SseDecoder {
    max_line: usize,
    line: Vec<u8>,
    /// The previous byte was `\r`: a following `\n` belongs to the same line end.
    after_cr: bool,
    name: Option<String>,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    pub fn new(max_line: usize) -> SseDecoder {
        SseDecoder {
            max_line,
            line: Vec::new(),
            after_cr: false,
            name: None,
            data: String::new(),
            has_data: false,
        }
    }

    /// Feeds bytes; pushes every event they complete onto `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LineTooLong> {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    self.end_line(out);
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= self.max_line {
                        let len = self.line.len();
                        self.line.clear();
                        return Err(LineTooLong(len));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&line);
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    name: self.name.take(),
                    data: std::mem::take(&mut self.data),
                });
                self.has_data = false;
            }
            self.name = None;
            return;
        }
        if line.starts_with(':') {
            return; // comment
        }
        if line.starts_with('{') && self.has_data {
            // Marathon's second JSON object in the same data field.
            self.data.push('\n');
            self.data.push_str(&line);
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.name = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {} // id, retry and unknown fields carry nothing switchyard uses
        }
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
    fn long_lines_are_refused() {
        let mut d = SseDecoder::new(8);
        let mut out = Vec::new();
        assert!(d.feed(b"data: 0123456789\n", &mut out).is_err());
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

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = SseDecoder::new(64);
            let mut out = Vec::new();
            let _ = d.feed(&bytes, &mut out);
        }
    }
}
