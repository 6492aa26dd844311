//! HPACK (RFC 7541), the server's half: [`Decoder`] turns a client's field block (a request's
//! head or trailers) into fields handed one by one to the caller, borrowed from the block, the
//! tables or one scratch buffer — no allocation per field but for those the client asks us to
//! index; [`Encoder`] writes a response's head straight from the backend's bytes: static-table
//! references for `:status` and the common names, every other field a literal without
//! indexing (we keep no encoder table: it would cost memory per connection and CPU per field
//! to save bytes a response's body dwarfs).
//!
//! What a client's block may cost is bounded here: integers are at most 4 continuation bytes,
//! strings never reach past the block, the dynamic table stays within our
//! SETTINGS_HEADER_TABLE_SIZE, and past the header list size the rest of the block is still
//! decoded (the table must stay in step with the client's) but no longer handed out, so the
//! caller refuses that one request (431) and keeps the connection.

mod huffman;
mod table;

pub use huffman::HuffmanError;
use table::Dynamic;
pub use table::{ENTRY_OVERHEAD, STATIC};

/// One decoded field; `never_indexed` is the client's "never index" flag (RFC 7541 §6.2.3),
/// which an intermediary re-encoding the field keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub never_indexed: bool,
}

/// Why a field block is not HPACK: every one is a connection error of type COMPRESSION_ERROR
/// (RFC 9113 §4.3), as the client's and our tables may now differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// An integer or string runs past the end of the block.
    Truncated,
    /// An integer of more than 4 continuation bytes.
    IntegerTooLong,
    /// An index into neither table.
    BadIndex,
    /// A Huffman-coded string that is not one.
    Huffman,
    /// A dynamic table size update above our SETTINGS_HEADER_TABLE_SIZE.
    TableSizeTooBig,
    /// A dynamic table size update after the block's first field (RFC 7541 §4.2).
    LateTableSizeUpdate,
    /// A block whose fields come to more than [`WORK_FACTOR`] times the list size limit: a
    /// block past the limit is still decoded to keep the table in step (and answered 431),
    /// but a few bytes can name a large entry again and again (and copy it into the table
    /// each time), so the work of one block is bounded and the connection closed past it.
    TooMuchWork,
}

/// How many times the list size limit a block's decoded fields may come to (see
/// [`DecodeError::TooMuchWork`]); a head past the limit but within this still gets its 431.
pub const WORK_FACTOR: usize = 4;

impl From<HuffmanError> for DecodeError {
    fn from(_: HuffmanError) -> DecodeError {
        DecodeError::Huffman
    }
}

/// Whether the whole field list was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    /// The list passed the size limit: the fields before that one were handed out, the rest
    /// only decoded.
    TooLarge,
}

/// Where a decoded string lies until the field is complete.
#[derive(Debug, Clone, Copy)]
enum Span {
    Block(usize, usize),
    Scratch(usize, usize),
}

/// A connection's HPACK decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    table: Dynamic,
    /// Huffman-decoded strings of the field being decoded (at most 8/5 of the block).
    scratch: Vec<u8>,
}

/// Continuation bytes an integer may have: values up to 2^28, far past any block we accept.
const MAX_INT_CONTINUATIONS: u32 = 4;

/// Reads an integer with an `prefix`-bit prefix at `*pos` (RFC 7541 §5.1).
#[inline]
fn read_int(block: &[u8], pos: &mut usize, prefix: u32) -> Result<usize, DecodeError> {
    let mask = (1u8 << prefix) - 1;
    let first = block[*pos] & mask;
    *pos += 1;
    if first < mask {
        return Ok(usize::from(first));
    }
    let mut value = usize::from(mask);
    for i in 0..MAX_INT_CONTINUATIONS {
        let &b = block.get(*pos).ok_or(DecodeError::Truncated)?;
        *pos += 1;
        value += usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::IntegerTooLong)
}

impl Decoder {
    /// `table_limit` is the SETTINGS_HEADER_TABLE_SIZE we advertise (4096 unless we send one).
    pub fn new(table_limit: usize) -> Decoder {
        Decoder {
            table: Dynamic::new(table_limit),
            scratch: Vec::new(),
        }
    }

    /// The dynamic table's size as RFC 7541 counts it.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    pub fn table_limit(&self) -> usize {
        self.table.limit()
    }

    /// Decodes one complete field block (HEADERS and its CONTINUATIONs put together), handing
    /// each field to `sink` in order while the list stays within `max_list_size` (names, values
    /// and 32 per field, as SETTINGS_MAX_HEADER_LIST_SIZE counts).
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        mut sink: impl FnMut(Field<'_>),
    ) -> Result<Outcome, DecodeError> {
        let mut pos = 0;
        let mut list_size = 0usize;
        // Every field's size, delivered or not, against the work bound.
        let mut work = 0usize;
        let work_limit = max_list_size.saturating_mul(WORK_FACTOR).max(64 * 1024);
        let mut outcome = Outcome::Complete;
        let mut fields_seen = false;
        while pos < block.len() {
            let b = block[pos];
            if b & 0xe0 == 0x20 {
                // 001xxxxx: dynamic table size update, only before the first field.
                if fields_seen {
                    return Err(DecodeError::LateTableSizeUpdate);
                }
                let size = read_int(block, &mut pos, 5)?;
                if !self.table.resize(size) {
                    return Err(DecodeError::TableSizeTooBig);
                }
                continue;
            }
            fields_seen = true;
            let mut deliver = |name: &[u8], value: &[u8], never_indexed: bool| {
                if outcome == Outcome::TooLarge {
                    return;
                }
                list_size = list_size.saturating_add(name.len() + value.len() + ENTRY_OVERHEAD);
                if list_size > max_list_size {
                    outcome = Outcome::TooLarge;
                    return;
                }
                sink(Field {
                    name,
                    value,
                    never_indexed,
                });
            };
            if b & 0x80 != 0 {
                // 1xxxxxxx: an indexed field.
                let index = read_int(block, &mut pos, 7)?;
                let (name, value) = self.table.get(index).ok_or(DecodeError::BadIndex)?;
                deliver(name, value, false);
                continue;
            }
            // 01xxxxxx: literal with incremental indexing (6-bit name index); 0000xxxx without
            // indexing and 0001xxxx never indexed (4-bit).
            let (indexing, never_indexed, prefix) = if b & 0x40 != 0 {
                (true, false, 6)
            } else {
                (false, b & 0x10 != 0, 4)
            };
            self.scratch.clear();
            let name_index = read_int(block, &mut pos, prefix)?;
            let name = if name_index == 0 {
                Some(self.string(block, &mut pos)?)
            } else {
                if self.table.get(name_index).is_none() {
                    return Err(DecodeError::BadIndex);
                }
                None
            };
            let value = self.string(block, &mut pos)?;
            let span = |s: Span| match s {
                Span::Block(a, z) => &block[a..z],
                Span::Scratch(a, z) => &self.scratch[a..z],
            };
            let name_bytes = match name {
                Some(s) => span(s),
                None => self.table.get(name_index).map_or(&[][..], |(n, _)| n),
            };
            let value_bytes = span(value);
            work = work.saturating_add(name_bytes.len() + value_bytes.len() + ENTRY_OVERHEAD);
            if work > work_limit {
                return Err(DecodeError::TooMuchWork);
            }
            if indexing {
                // Copied before inserting: the name may be an entry the insertion evicts.
                let entry = [name_bytes, value_bytes].concat();
                let name_len = name_bytes.len();
                deliver(&entry[..name_len], &entry[name_len..], never_indexed);
                self.table.insert(entry, name_len);
            } else {
                deliver(name_bytes, value_bytes, never_indexed);
            }
        }
        Ok(outcome)
    }

    /// A string literal at `*pos` (RFC 7541 §5.2), Huffman-decoded into the scratch buffer.
    fn string(&mut self, block: &[u8], pos: &mut usize) -> Result<Span, DecodeError> {
        let &first = block.get(*pos).ok_or(DecodeError::Truncated)?;
        let len = read_int(block, pos, 7)?;
        let start = *pos;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= block.len())
            .ok_or(DecodeError::Truncated)?;
        *pos = end;
        if first & 0x80 == 0 {
            return Ok(Span::Block(start, end));
        }
        let from = self.scratch.len();
        huffman::decode(&block[start..end], &mut self.scratch)?;
        Ok(Span::Scratch(from, self.scratch.len()))
    }
}

/// Writes an integer with a `prefix`-bit prefix after the representation's `pattern` bits.
#[inline]
fn write_int(out: &mut Vec<u8>, pattern: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(pattern | value as u8);
        return;
    }
    out.push(pattern | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(rest as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// A connection's HPACK encoder for responses.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    /// The client changed its SETTINGS_HEADER_TABLE_SIZE: our next block starts with a size
    /// update (to 0, the table we never use), which a decoder may insist on (RFC 7541 §4.2).
    size_update: bool,
    /// Huffman-code values when that is shorter (costs a pass over each value).
    huffman: bool,
}

impl Encoder {
    pub fn new(huffman: bool) -> Encoder {
        Encoder {
            size_update: false,
            huffman,
        }
    }

    /// The client's SETTINGS_HEADER_TABLE_SIZE (any value: we keep nothing in its table).
    pub fn peer_table_size(&mut self, _size: u32) {
        self.size_update = true;
    }

    /// Starts a field block.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.size_update) {
            write_int(out, 0x20, 5, 0);
        }
    }

    /// `:status`: the static entries 8–14 for their codes, else a literal with name index 8.
    pub fn status(&mut self, status: u16, out: &mut Vec<u8>) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if index != 0 {
            out.push(0x80 | index);
            return;
        }
        // 0000 1000: without indexing, name index 8; three digits (100..=999, as parsed).
        let digits = [
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ];
        out.extend_from_slice(&[0x08, 3]);
        out.extend_from_slice(&digits);
    }

    /// A regular field, its name lowercased as HTTP/2 requires (RFC 9113 §8.2.1); a sensitive
    /// one (`never_indexed`) keeps that flag for whoever re-encodes it.
    pub fn field(&mut self, name: &[u8], value: &[u8], never_indexed: bool, out: &mut Vec<u8>) {
        let pattern = if never_indexed { 0x10 } else { 0x00 };
        match table::static_name(name) {
            Some(index) => write_int(out, pattern, 4, usize::from(index)),
            None => {
                out.push(pattern);
                write_int(out, 0, 7, name.len());
                out.extend(name.iter().map(u8::to_ascii_lowercase));
            }
        }
        self.string(value, out);
    }

    fn string(&self, s: &[u8], out: &mut Vec<u8>) {
        if self.huffman {
            let coded = huffman::encoded_len(s);
            if coded < s.len() {
                write_int(out, 0x80, 7, coded);
                huffman::encode(s, out);
                return;
            }
        }
        write_int(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests;
