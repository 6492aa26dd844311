//! A request's trace: with `Switchyard-Trace: <admin token>` a request is answered with
//! `Switchyard-Trace-Result`, one line saying how the proxy routed it — the route and its
//! weighted split, the app the draw picked (and its deployment colour), the balancer, the
//! backends put last because they are ejected, down or draining, every attempt that failed and
//! why, and the backend whose answer this is. For both codecs: the fast path (`h1`) and the
//! general one (`http`) only find the field, hand its value here and write the line out;
//! `exchange::Attempts` records the attempts.
//!
//! Without the right token the field is ignored; either way it is never forwarded (its
//! removal, and that of a forged result field either way, is `headers`' rule: `Field::Trace`).
//! The token is compared in constant time by the admin API's own comparison
//! (`crate::access`), and a wrong one counts as a wrong guess of the admin token from that
//! address, as at the admin API (the two share one count). Nothing is done for a request without the field: the fast path notes it
//! in the one pass over the fields it already makes; no trace is kept otherwise.
//!
//! The line is bounded ([`MAX_LEN`]): what does not fit is cut and marked `…truncated`. It is
//! plain ASCII (anything else in a name becomes `?`), fields separated by `; `.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use super::Context;
use super::exchange::Failure;
use crate::backends::BackendState;
use crate::routing::routes::Route;
use crate::routing::{RoutingTable, Service};

/// The longest a trace line gets (bytes of the value); a request through a service with many
/// failing backends would otherwise make a header of any size.
pub const MAX_LEN: usize = 1024;
const TRUNCATED: &str = "; truncated";

/// One request's trace, kept only for a request that asked with the right token.
#[derive(Debug, Default)]
pub struct Trace {
    line: String,
    attempts: usize,
    truncated: bool,
}

/// A trace when `value` (the request's `Switchyard-Trace`) is the admin token; `None` without a
/// configured token, or with any other value. A wrong value is a wrong guess of the admin
/// token by `client`, counted with the admin API's (`Context::guesses`); a client refused
/// for its guesses is not traced, whatever it presents.
pub fn asked(value: Option<&[u8]>, client: IpAddr, ctx: &Context) -> Option<Box<Trace>> {
    let (value, token) = (value?, ctx.trace_token.as_deref()?);
    let now = Instant::now();
    if ctx.guesses.refused(client, now).is_some() {
        return None;
    }
    let right = std::str::from_utf8(value)
        .is_ok_and(|value| crate::access::same_secret(value.trim(), token));
    if !right {
        ctx.guesses.failed(client, now);
        return None;
    }
    Some(Box::default())
}

impl Trace {
    /// The route a request was matched to, its apps' weights and the app `picked` for it.
    pub fn route(&mut self, table: &RoutingTable, route: &Route, picked: usize) {
        self.field("route", &route.name);
        let mut split = String::new();
        for (i, m) in route.members.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(split, "{sep}{}:{}", m.app_id, m.weight);
        }
        self.field("split", &split);
        self.field("draw", &table.services[picked].key.to_string());
    }

    /// The service the request goes to: its app, deployment and balancer, and its backends
    /// that are tried only after every other (ejected, down by health checks, draining).
    pub fn service(&mut self, service: &Service, states: &[Arc<BackendState>]) {
        self.field("app", &service.key.to_string());
        let d = &service.deployment;
        if let Some(colour) = &d.colour {
            let group = d.group.as_deref().unwrap_or("-");
            self.field("version", &format!("{group}/{colour}"));
        }
        self.field(
            "balance",
            &format!("{:?}", service.balancer.kind()).to_ascii_lowercase(),
        );
        self.field("backends", &states.len().to_string());
        let mut deferred = String::new();
        for s in states {
            let why = if s.outlier.is_ejected() {
                "ejected"
            } else if s.health.is_down() {
                "down"
            } else if s.is_draining() {
                "draining"
            } else {
                continue;
            };
            let sep = if deferred.is_empty() { "" } else { ", " };
            let _ = write!(deferred, "{sep}{} {why}", s.addr);
            if deferred.len() > MAX_LEN {
                break;
            }
        }
        if !deferred.is_empty() {
            self.field("deferred", &deferred);
        }
    }

    /// An attempt on `backend` that failed, and why.
    pub fn failed(&mut self, backend: SocketAddr, why: &str) {
        self.attempts += 1;
        self.field("failed", &format!("{backend} {why}"));
    }

    /// Why no further backend was tried after a failure that allowed one.
    pub fn stopped(&mut self, why: &str) {
        self.field("stopped", why);
    }

    /// The line as sent: what was recorded, then the backend whose answer it is (`None`: the
    /// proxy's own answer, after every attempt failed).
    pub fn value(&self, answered_by: Option<SocketAddr>) -> String {
        let mut out = String::with_capacity(self.line.len() + 40);
        out.push_str(&self.line);
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(
            out,
            "attempts={}; ",
            self.attempts + answered_by.iter().count()
        );
        match answered_by {
            Some(addr) => {
                let _ = write!(out, "backend={addr}");
            }
            None => out.push_str("backend=none"),
        }
        if self.truncated {
            out.push_str(TRUNCATED);
        }
        out
    }

    /// `key=value`, in printable ASCII, while the line has room.
    fn field(&mut self, key: &str, value: &str) {
        if self.truncated {
            return;
        }
        // Room is kept for the closing fields `value` adds (attempts, backend, the mark).
        if self.line.len() + key.len() + value.len() + 3 > MAX_LEN - 96 {
            self.truncated = true;
            return;
        }
        if !self.line.is_empty() {
            self.line.push_str("; ");
        }
        self.line.push_str(key);
        self.line.push('=');
        self.line.extend(value.chars().map(|c| {
            if (' '..='~').contains(&c) && c != ';' {
                c
            } else {
                '?'
            }
        }));
    }
}

/// What the trace says of a failed attempt.
pub fn failure(failure: &Failure) -> String {
    match failure {
        Failure::Connect => "connect failed".into(),
        other => other.text(),
    }
}

/// What the trace says of a connect that failed with `error`.
pub fn connect_error(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connect refused".into(),
        ErrorKind::TimedOut => "connect timed out".into(),
        _ => format!("connect failed: {error}"),
    }
}

/// Bytes codec: the response header line.
pub fn line(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 30);
    out.extend_from_slice(super::headers::SWITCHYARD_TRACE_RESULT.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_bounded_printable_and_ends_with_the_backend() {
        let mut t = Trace::default();
        t.field("app", "/web\r\nx;y");
        assert_eq!(t.line, "app=/web??x?y");
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..1000 {
            t.failed(addr, "connect refused");
        }
        let value = t.value(Some(addr));
        assert!(value.len() <= MAX_LEN, "{}", value.len());
        assert!(value.ends_with("backend=127.0.0.1:9; truncated"), "{value}");
        assert!(value.contains("attempts=1001;"), "{value}");
        assert!(value.bytes().all(|b| (b' '..=b'~').contains(&b)));
        assert!(http::HeaderValue::from_str(&value).is_ok());
    }
}
