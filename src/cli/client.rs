//! The admin API client the commands share: one request per connection, plain HTTP/1.1 on
//! loopback, a bearer token when given, and the answer's body whether it came whole or chunked
//! (the admin API streams its large answers).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

pub struct Admin {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Admin {
    pub fn get(&self, path: &str) -> Result<Value, String> {
        self.call("GET", path)
    }

    /// One request; the answer's JSON body when it is a 200.
    pub fn call(&self, method: &str, path: &str) -> Result<Value, String> {
        self.send(method, path, "")
    }

    /// One request with a JSON body; the answer's JSON body when it is a 200.
    pub fn send(&self, method: &str, path: &str, body: &str) -> Result<Value, String> {
        let (status, body) = self.exchange(method, path, body)?;
        if status != "200" {
            return Err(format!(
                "{path}: {status}: {}",
                crate::text::escaped(body.trim())
            ));
        }
        serde_json::from_str(&body).map_err(|e| format!("{path}: not JSON: {e}"))
    }

    /// One request; the answer's status and body, whatever the status.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(String, String), String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(3))
            .map_err(|e| format!("cannot reach the admin API at {}: {e}", self.addr))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let kind = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/json\r\n"
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .map_err(|e| e.to_string())?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("a malformed answer")?;
        let head = String::from_utf8_lossy(&response[..split]);
        let body = &response[split + 4..];
        let status = head.split(' ').nth(1).unwrap_or("?");
        let chunked = head.lines().skip(1).any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("transfer-encoding")
                    && v.trim().eq_ignore_ascii_case("chunked")
            })
        });
        let body = if chunked {
            dechunked(body).ok_or("a malformed answer")?
        } else {
            body.to_vec()
        };
        Ok((
            status.to_string(),
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

/// A body sent in the chunked transfer coding, joined (the admin API streams its large answers:
/// `/metrics`, `/v1/routes`). `None` when malformed or cut short.
pub fn dechunked(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&raw[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line + 2..];
        if size == 0 {
            return Some(body);
        }
        let (data, rest) = (raw.get(..size)?, raw.get(size..)?);
        body.extend_from_slice(data);
        raw = rest.strip_prefix(b"\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::dechunked;

    #[test]
    fn chunked_bodies_are_joined_and_broken_ones_refused() {
        assert_eq!(
            dechunked(b"3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\n\r\n").as_deref(),
            Some(&b"abc0123456789abcdef"[..])
        );
        assert_eq!(dechunked(b"0\r\n\r\n").as_deref(), Some(&b""[..]));
        // Cut off (an answer broken off), a size that is not hex, data longer than said.
        assert_eq!(dechunked(b"3\r\nabc\r\n"), None);
        assert_eq!(dechunked(b"5\r\nab"), None);
        assert_eq!(dechunked(b"zz\r\nabc\r\n0\r\n\r\n"), None);
        assert_eq!(dechunked(b"2\r\nabc\r\n0\r\n\r\n"), None);
    }
}
