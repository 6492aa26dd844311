//! The server name of a TLS ClientHello, read from bytes peeked on an HTTPS listener for TLS
//! passthrough (`SWITCHYARD_{n}_TLS_PASSTHROUGH`). The ClientHello may come in several TLS
//! records and several TCP segments: `parse` is given everything received so far and answers
//! `Incomplete` until the handshake message is whole. It is bounded (`MAX_HELLO`), and a
//! server name is a DNS host name of at most 255 bytes.

/// The largest ClientHello accepted (handshake message body); a browser's, post-quantum key
/// shares included, is a few KiB.
pub const MAX_HELLO: usize = 16 * 1024;
/// Bytes that may be peeked to hold `MAX_HELLO` split over records (each with a 5-byte header).
pub const MAX_PEEK: usize = MAX_HELLO + 4 + 5 * 64;
/// RFC 6066: a host name is at most 2^8 - 1 bytes here (and 253 in DNS).
pub const MAX_SNI: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    Incomplete,
    /// The server name, lowercase, without a trailing dot; `None`: the client sent none.
    Complete(Option<String>),
}

/// Why the bytes are refused; also the class they are logged once and counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHello {
    /// The first record is not a TLS handshake record (or an SSLv2 hello).
    NotHandshake,
    /// The handshake message is not a ClientHello.
    NotClientHello,
    /// Larger than `MAX_HELLO`.
    TooLarge,
    /// A server name longer than `MAX_SNI`.
    SniTooLong,
    /// Lengths that do not add up, a server name that is no host name.
    Malformed,
}

impl BadHello {
    pub fn class(self) -> &'static str {
        match self {
            BadHello::NotHandshake | BadHello::NotClientHello => "not_client_hello",
            BadHello::TooLarge => "too_large",
            BadHello::SniTooLong => "sni_too_long",
            BadHello::Malformed => "malformed",
        }
    }
}

/// Reads the ClientHello at the start of `buf` (what a client sent so far).
pub fn parse(buf: &[u8]) -> Result<Hello, BadHello> {
    // The handshake message, gathered from the records' fragments.
    let mut message: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        if rest.is_empty() {
            return Ok(Hello::Incomplete);
        }
        if rest[0] != 22 {
            return Err(BadHello::NotHandshake);
        }
        if rest.len() < 5 {
            return Ok(Hello::Incomplete);
        }
        if rest[1] != 3 {
            return Err(BadHello::NotHandshake);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        // RFC 8446 §5.1: a record holds at most 2^14 bytes, and handshake records are never empty.
        if len == 0 || len > 1 << 14 {
            return Err(BadHello::Malformed);
        }
        let available = &rest[5..];
        let fragment = &available[..available.len().min(len)];
        message.extend_from_slice(fragment);
        if message.len() >= 4 {
            if message[0] != 1 {
                return Err(BadHello::NotClientHello);
            }
            let body = (usize::from(message[1]) << 16)
                | (usize::from(message[2]) << 8)
                | usize::from(message[3]);
            if body > MAX_HELLO {
                return Err(BadHello::TooLarge);
            }
            if message.len() >= 4 + body {
                return client_hello(&message[4..4 + body]).map(Hello::Complete);
            }
        }
        if fragment.len() < len {
            return Ok(Hello::Incomplete);
        }
        rest = &available[len..];
    }
}

/// A reader over a message's bytes: every read checks its length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BadHello> {
        if self.0.len() < n {
            return Err(BadHello::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<usize, BadHello> {
        Ok(usize::from(self.take(1)?[0]))
    }

    fn u16(&mut self) -> Result<usize, BadHello> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A vector with a `width`-byte length.
    fn vector(&mut self, width: usize) -> Result<&'a [u8], BadHello> {
        let len = if width == 1 { self.u8()? } else { self.u16()? };
        self.take(len)
    }
}

fn client_hello(body: &[u8]) -> Result<Option<String>, BadHello> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    if r.vector(1)?.len() > 32 {
        return Err(BadHello::Malformed); // legacy_session_id
    }
    let suites = r.vector(2)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(BadHello::Malformed);
    }
    if r.vector(1)?.is_empty() {
        return Err(BadHello::Malformed); // legacy_compression_methods
    }
    if r.0.is_empty() {
        return Ok(None); // no extensions at all (TLS 1.2 allows it)
    }
    let mut extensions = Reader(r.vector(2)?);
    if !r.0.is_empty() {
        return Err(BadHello::Malformed);
    }
    let mut sni = None;
    let mut seen_sni = false;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vector(2)?;
        if kind != 0 {
            continue;
        }
        if seen_sni {
            return Err(BadHello::Malformed); // RFC 8446 §4.2: one of each
        }
        seen_sni = true;
        let mut list = Reader(data);
        let mut names = Reader(list.vector(2)?);
        if !list.0.is_empty() || names.0.is_empty() {
            return Err(BadHello::Malformed);
        }
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name = names.vector(2)?;
            // RFC 6066 §3: one name per type; only host_name (0) is defined.
            if name_type != 0 || sni.is_some() {
                continue;
            }
            sni = Some(host_name(name)?);
        }
    }
    Ok(sni)
}

fn host_name(name: &[u8]) -> Result<String, BadHello> {
    if name.len() > MAX_SNI {
        return Err(BadHello::SniTooLong);
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    let valid = !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !name.starts_with(b".")
        && !name.windows(2).any(|w| w == b"..");
    if !valid {
        return Err(BadHello::Malformed);
    }
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ClientHello from rustls for `sni` (`None`: an IP address, so no SNI).
    fn real_hello(sni: Option<&str>) -> Vec<u8> {
        use std::sync::Arc;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let name = match sni {
            Some(n) => rustls_pki_types::ServerName::try_from(n.to_string()).unwrap(),
            None => rustls_pki_types::ServerName::IpAddress(
                std::net::IpAddr::from([127, 0, 0, 1]).into(),
            ),
        };
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// The same handshake message re-cut into records of at most `size` bytes.
    fn split_records(hello: &[u8], size: usize) -> Vec<u8> {
        let message = &hello[5..];
        let mut out = Vec::new();
        for chunk in message.chunks(size) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn real_client_hellos() {
        let hello = real_hello(Some("Shop.Example.com"));
        assert_eq!(
            parse(&hello),
            Ok(Hello::Complete(Some("shop.example.com".into())))
        );
        for cut in 0..hello.len() {
            assert_eq!(parse(&hello[..cut]), Ok(Hello::Incomplete), "{cut}");
        }
        assert_eq!(parse(&real_hello(None)), Ok(Hello::Complete(None)));
        // Several records.
        for size in [1, 7, 100] {
            let split = split_records(&hello, size);
            assert_eq!(
                parse(&split),
                Ok(Hello::Complete(Some("shop.example.com".into()))),
                "{size}"
            );
        }
    }

    #[test]
    fn bad_input() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(BadHello::NotHandshake));
        assert_eq!(
            parse(&[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]),
            Err(BadHello::NotHandshake)
        );
        // A ServerHello (2) where a ClientHello belongs.
        assert_eq!(
            parse(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
            Err(BadHello::NotClientHello)
        );
        assert_eq!(
            parse(&[22, 3, 3, 0, 4, 1, 1, 0, 0]),
            Err(BadHello::TooLarge)
        );
        assert_eq!(parse(&[22, 3, 3, 0, 0]), Err(BadHello::Malformed));
        // An over-long server name, and one that is no host name.
        assert_eq!(
            parse(&built(&sni_extension(&"a".repeat(300)))),
            Err(BadHello::SniTooLong)
        );
        assert_eq!(
            parse(&built(&sni_extension("a b.example"))),
            Err(BadHello::Malformed)
        );
        assert_eq!(
            parse(&built(&sni_extension("ok.example."))),
            Ok(Hello::Complete(Some("ok.example".into())))
        );
        let mut two = sni_extension("a.example");
        two.extend(sni_extension("b.example"));
        assert_eq!(parse(&built(&two)), Err(BadHello::Malformed));
    }

    /// The server_name extension for `name`.
    fn sni_extension(name: &str) -> Vec<u8> {
        let n = name.len() as u16;
        let mut out = vec![0, 0];
        out.extend_from_slice(&(n + 5).to_be_bytes());
        out.extend_from_slice(&(n + 3).to_be_bytes());
        out.push(0);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out
    }

    /// A minimal ClientHello record with these extensions.
    fn built(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
        let mut message = vec![1, 0];
        message.extend_from_slice(&(body.len() as u16).to_be_bytes());
        message.extend_from_slice(&body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(message.len() as u16).to_be_bytes());
        record.extend_from_slice(&message);
        record
    }

    proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        /// A handshake record header then noise: never a panic either.
        #[test]
        fn record_then_noise(len in 0u16..700, noise in proptest::collection::vec(any::<u8>(), 0..700)) {
            let mut bytes = vec![22, 3, 1];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.push(1);
            bytes.extend_from_slice(&noise);
            let _ = parse(&bytes);
        }

        /// A real ClientHello cut into records of any size and truncated anywhere: the name,
        /// or incomplete; never another answer.
        #[test]
        fn split_anywhere(size in 1usize..400, cut in 0usize..2000,
                          name in "[a-z]{1,20}(\\.[a-z]{1,10}){0,3}") {
            let hello = real_hello(Some(&name));
            let split = split_records(&hello, size);
            let cut = cut.min(split.len());
            match parse(&split[..cut]) {
                Ok(Hello::Incomplete) => prop_assert!(cut < split.len()),
                Ok(Hello::Complete(got)) => prop_assert_eq!(got, Some(name.clone())),
                Err(e) => prop_assert!(false, "{:?}", e),
            }
        }
    }
}
