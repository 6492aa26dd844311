//! gzip on Marathon's JSON (RFC 1952, one member, as Marathon's and the relay's servers send it):
//! a streaming decoder with a hard bound on what it decodes (a snapshot that inflates past
//! `discovery.max_snapshot_bytes` fails its fetch like one sent that large), and the encoder
//! the relay compresses its prepared bodies with.

use std::io::Write;

use bytes::Bytes;

/// Decodes gzip as its bytes arrive, into at most `limit` decoded bytes. Anything but one
/// complete, intact member (truncated, corrupt, a bad checksum, trailing bytes, too large)
/// is an error; nothing panics.
pub struct Gunzip {
    decoder: flate2::write::GzDecoder<Capped>,
    limit: usize,
    /// Compressed bytes taken so far, bounded by `limit` too.
    taken: usize,
}

/// The decoded bytes, refusing to grow past `limit`.
struct Capped {
    out: Vec<u8>,
    limit: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(TOO_LARGE));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const TOO_LARGE: &str = "decoded size past the limit";

impl Gunzip {
    pub fn new(limit: usize) -> Gunzip {
        Gunzip {
            decoder: flate2::write::GzDecoder::new(Capped {
                out: Vec::new(),
                limit,
            }),
            limit,
            taken: 0,
        }
    }

    /// Takes the next compressed bytes.
    pub fn push(&mut self, compressed: &[u8]) -> Result<(), String> {
        self.taken += compressed.len();
        if self.taken > self.limit {
            return Err(format!("gzip body larger than {} bytes", self.limit));
        }
        // `write_all` fails on a decoder that takes no more (bytes after the member's end).
        self.decoder
            .write_all(compressed)
            .map_err(|e| self.error(e))
    }

    /// The decoded body, once the member ended intact (its CRC and length checked).
    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        match self.decoder.try_finish() {
            Ok(()) => Ok(std::mem::take(&mut self.decoder.get_mut().out)),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: std::io::Error) -> String {
        if e.to_string() == TOO_LARGE {
            format!("gzip body decodes to more than {} bytes", self.limit)
        } else {
            format!("bad gzip body: {e}")
        }
    }
}

/// Decodes a whole gzip body under `limit` (tests, and bodies already in memory).
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut decoder = Gunzip::new(limit);
    decoder.push(compressed)?;
    decoder.finish()
}

/// gzip at the fastest level: a relay compresses a 10,000-app body on each new model a
/// follower asks for, and JSON shrinks about tenfold even so.
pub fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    encoder.write_all(body).expect("writing to a Vec");
    Bytes::from(encoder.finish().expect("writing to a Vec"))
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip` or `x-gzip`, or `*`, with a q-value
/// that is not zero).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let named = coding.eq_ignore_ascii_case("gzip")
            || coding.eq_ignore_ascii_case("x-gzip")
            || coding == "*";
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        named && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_in_pieces() {
        let body = br#"{"apps":[]}"#.repeat(1000);
        let compressed = gzip(&body);
        assert!(compressed.len() < body.len() / 10);
        let mut decoder = Gunzip::new(body.len());
        for piece in compressed.chunks(7) {
            decoder.push(piece).unwrap();
        }
        assert_eq!(decoder.finish().unwrap(), body);
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit() {
        // 64 MiB of zeros is 64 KiB of gzip at the best level.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 64 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 128 << 10);
        let err = gunzip(&bomb, 1 << 20).unwrap_err();
        assert!(err.contains("more than 1048576"), "{err}");
        // The compressed size is bounded too.
        assert!(gunzip(&bomb, 1 << 10).unwrap_err().contains("larger than"));
    }

    #[test]
    fn trailing_bytes_and_empty_bodies_are_refused() {
        let mut two = gzip(b"{}").to_vec();
        two.extend_from_slice(b"garbage");
        assert!(gunzip(&two, 1 << 20).is_err());
        assert!(gunzip(b"", 1 << 20).is_err());
    }

    #[test]
    fn accept_encoding() {
        for yes in [
            "gzip",
            "deflate, gzip;q=0.8",
            "GZIP",
            "x-gzip",
            "*",
            "br, gzip ; q=1",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip; q=0.0",
            "gzipx",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }

    proptest! {
        /// Whatever arrives: no panic, and never more than the limit decoded.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                           split in 0usize..512) {
            let mut decoder = Gunzip::new(4096);
            let split = split.min(bytes.len());
            let pushed = decoder.push(&bytes[..split]).and_then(|()| decoder.push(&bytes[split..]));
            if pushed.is_ok() && let Ok(out) = decoder.finish() {
                prop_assert!(out.len() <= 4096);
            }
        }

        /// A body cut short, or with one byte changed, is refused or decodes to the body
        /// (a change in a stored block's padding can be harmless); never more.
        #[test]
        fn truncated_or_corrupt_gzip_is_refused(body in proptest::collection::vec(any::<u8>(), 0..2048),
                                                cut in any::<prop::sample::Index>(),
                                                flip in any::<prop::sample::Index>(),
                                                bit in 0u8..8) {
            let compressed = gzip(&body);
            let cut = cut.index(compressed.len());
            prop_assert!(gunzip(&compressed[..cut], 1 << 20).is_err());
            let mut corrupt = compressed.to_vec();
            corrupt[flip.index(compressed.len())] ^= 1 << bit;
            if let Ok(out) = gunzip(&corrupt, 1 << 20) {
                prop_assert_eq!(out, body);
            }
        }

        /// Over the limit is refused; at or under it decodes exactly.
        #[test]
        fn the_limit_is_exact(len in 0usize..20_000, limit in 0usize..20_000) {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let compressed = gzip(&body);
            match gunzip(&compressed, limit) {
                Ok(out) => {
                    prop_assert!(len <= limit);
                    prop_assert_eq!(out, body);
                }
                Err(_) => prop_assert!(len > limit || compressed.len() > limit),
            }
        }
    }
}
