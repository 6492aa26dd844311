//! The edge labels of one app port (`SWITCHYARD_{n}_…`): request limits, per-app timeouts,
//! header rules, error pages and the maintenance switch. Read by `compile` only; applied by
//! the proxy (`proxy::limits`, `proxy::headers`, `proxy::errors`).
//!
//! What a bad value does depends on what the label is for (docs/labels.md, "Edge labels"):
//! - a limit or a timeout that does not parse is reported (`Ignored`) and the port is served
//!   without it: a limit guards the backends' capacity, not who may come in, and taking the
//!   port out of service for a typo would be the outage the limit exists to prevent;
//! - a header rule that cannot be applied as written (a hop-by-hop or framing field, a name or
//!   value that is not valid) takes the port out of service (`Skipped`): a rule may remove a
//!   field the backend trusts (`REQUEST_HEADER_REMOVE=X-Internal-User`), and forwarding it
//!   anyway could let a client claim what the operator meant to strip;
//! - a maintenance switch that is neither true nor false takes the port out of service too;
//! - an error page that is too large or has a bad content type is reported and the default
//!   page is used.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

/// Largest error page body, from a label or a file.
pub const MAX_PAGE_BYTES: usize = 64 * 1024;
/// Buckets of a per-client rate limit: clients whose addresses hash alike share one.
pub const CLIENT_BUCKETS: usize = 16 * 1024;
/// Most header rules per direction.
const MAX_RULES: usize = 32;

/// An app port's edge settings; the default is none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edge {
    pub rate: Option<Rate>,
    /// `MAX_CONCURRENT_REQUESTS`: requests in flight at once, from admission to the end of the
    /// response.
    pub max_concurrent: Option<u32>,
    /// `MAX_PENDING_REQUESTS`: requests waiting at once for a new backend connection.
    pub max_pending: Option<u32>,
    pub timeouts: Timeouts,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    pub pages: ErrorPages,
    /// `MAINTENANCE=true`: every request is answered 503 with the app's page; the route stays.
    pub maintenance: bool,
}

impl Edge {
    /// The one shared `Edge` of every port without edge labels (nearly all of them): a table
    /// of 50,000 services holds one default, not 50,000 copies of it.
    pub fn shared_default() -> std::sync::Arc<Edge> {
        static DEFAULT: std::sync::LazyLock<std::sync::Arc<Edge>> =
            std::sync::LazyLock::new(Default::default);
        DEFAULT.clone()
    }

    /// Whether any request limit is set (the proxy's limiter state is kept only then).
    pub fn limited(&self) -> bool {
        self.rate.is_some() || self.max_concurrent.is_some() || self.max_pending.is_some()
    }
}

/// `RATE_LIMIT`, `RATE_LIMIT_BURST`, `RATE_LIMIT_BY`: a token bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// Time between two requests at the sustained rate, in nanoseconds.
    pub interval_ns: u64,
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
    /// A bucket per client address (in a table of [`CLIENT_BUCKETS`]), not one for the app.
    pub per_client: bool,
    /// As written, for display.
    pub text: String,
}

/// Per-app timeouts over the `proxy.*` defaults; `None`: the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// `CONNECT_TIMEOUT`, over `proxy.connect_timeout`.
    pub connect: Option<Duration>,
    /// `RESPONSE_TIMEOUT`, over `proxy.response_timeout`: the wait for the response head, and
    /// then for each piece of its body.
    pub response: Option<Duration>,
    /// `TUNNEL_TIMEOUT`, over `proxy.tunnel_idle_timeout`: an upgraded connection (WebSocket)
    /// with no byte either way for this long is closed.
    pub tunnel: Option<Duration>,
}

/// Header rules of one direction, in the order they apply: fields named in `remove` are
/// dropped from the message (the fields `SET` replaces too), then `add` is appended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Lowercase names.
    pub remove: Vec<String>,
    /// (lowercase name, value).
    pub add: Vec<(String, String)>,
    /// `add` as the fast path writes it: `name: value\r\n` lines.
    pub lines: Vec<u8>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Whether a field of this name is removed (ASCII case aside).
    pub fn removes(&self, name: &[u8]) -> bool {
        self.remove
            .iter()
            .any(|r| r.len() == name.len() && r.as_bytes().eq_ignore_ascii_case(name))
    }
}

/// An error page: its body and content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub content_type: String,
    pub body: Bytes,
}

/// Pages for the answers the proxy writes itself when no backend answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages {
    pub bad_gateway: Option<Page>,
    pub unavailable: Option<Page>,
    pub gateway_timeout: Option<Page>,
}

impl ErrorPages {
    pub fn get(&self, status: u16) -> Option<&Page> {
        match status {
            502 => self.bad_gateway.as_ref(),
            503 => self.unavailable.as_ref(),
            504 => self.gateway_timeout.as_ref(),
            _ => None,
        }
    }

    fn slot(&mut self, status: u16) -> &mut Option<Page> {
        match status {
            502 => &mut self.bad_gateway,
            503 => &mut self.unavailable,
            _ => &mut self.gateway_timeout,
        }
    }

    /// Sets the page for `status` (502, 503 or 504) from a body and content type, checked.
    pub fn set(&mut self, status: u16, body: &[u8], content_type: &str) -> Result<(), String> {
        if body.len() > MAX_PAGE_BYTES {
            return Err(format!(
                "{} bytes, more than the {MAX_PAGE_BYTES} allowed",
                body.len()
            ));
        }
        check_content_type(content_type)?;
        *self.slot(status) = Some(Page {
            content_type: content_type.to_string(),
            body: Bytes::copy_from_slice(body),
        });
        Ok(())
    }
}

/// The content type of pages that do not say.
pub const DEFAULT_PAGE_TYPE: &str = "text/html; charset=utf-8";

pub fn check_content_type(value: &str) -> Result<(), String> {
    let ok = value.contains('/')
        && value.len() <= 256
        && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!("{value:?} is not a content type"))
    }
}

/// What reading the edge labels found wrong.
#[derive(Debug, Default)]
pub struct Findings {
    /// The port is not served, for this reason.
    pub skip: Option<String>,
    /// Labels without effect, with why; the port is served.
    pub ignored: Vec<String>,
}

/// The edge labels of port `n` (`SWITCHYARD_{n}_…`) of an app's labels.
pub fn read(labels: &BTreeMap<String, String>, n: usize) -> (Edge, Findings) {
    read_own(&super::known_labels::PortKeys::of(labels, n).own, n)
}

/// The edge labels of port `n`, given its `SWITCHYARD_{n}_…` labels (`mine`: rest of the key,
/// value; `known_labels::PortKeys::own`), looked up by suffix: no key built per lookup (compile
/// reads these for every port of every app on every full compile). Without any, the port has
/// no edge settings.
pub fn read_own(mine: &[(&str, &str)], n: usize) -> (Edge, Findings) {
    let own = super::known_labels::switchyard_prefix(n);
    let mut found = Findings::default();
    let mut edge = Edge::default();
    if mine.is_empty() {
        return (edge, found);
    }
    let raw = |key: &str| mine.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let get = |key: &str| raw(key).map(str::trim);

    // Limits: reported and left out when they do not parse.
    let limit_ignored = |key: &str, v: &str, expected: &str| {
        format!(
            "{own}{key}={v:?}: expected {expected}; the port is served WITHOUT this limit \
             until the label is fixed"
        )
    };
    if let Some(v) = get("RATE_LIMIT") {
        match rate(v) {
            Some(interval_ns) => {
                let burst = match get("RATE_LIMIT_BURST") {
                    None => Some(default_burst(interval_ns)),
                    Some(b) => match b.parse::<u32>() {
                        Ok(b) if b > 0 => Some(b),
                        _ => {
                            found.ignored.push(limit_ignored(
                                "RATE_LIMIT_BURST",
                                b,
                                "a whole number above zero",
                            ));
                            None
                        }
                    },
                };
                let per_client = match get("RATE_LIMIT_BY").map(str::to_ascii_lowercase).as_deref()
                {
                    None | Some("app") => Some(false),
                    Some("client") => Some(true),
                    Some(_) => {
                        let b = get("RATE_LIMIT_BY").unwrap_or("");
                        found
                            .ignored
                            .push(limit_ignored("RATE_LIMIT_BY", b, "app or client"));
                        None
                    }
                };
                if let (Some(burst), Some(per_client)) = (burst, per_client) {
                    edge.rate = Some(Rate {
                        interval_ns,
                        burst,
                        per_client,
                        text: v.to_string(),
                    });
                }
            }
            None => found.ignored.push(limit_ignored(
                "RATE_LIMIT",
                v,
                "requests per second, minute or hour such as \"100\", \"100/s\" or \"600/m\"",
            )),
        }
    } else {
        for key in ["RATE_LIMIT_BURST", "RATE_LIMIT_BY"] {
            if get(key).is_some() {
                found
                    .ignored
                    .push(format!("{own}{key} without {own}RATE_LIMIT: ignored"));
            }
        }
    }
    for (key, slot) in [
        ("MAX_CONCURRENT_REQUESTS", &mut edge.max_concurrent),
        ("MAX_PENDING_REQUESTS", &mut edge.max_pending),
    ] {
        if let Some(v) = get(key) {
            match v.parse::<u32>() {
                Ok(m) if m > 0 => *slot = Some(m),
                _ => found
                    .ignored
                    .push(limit_ignored(key, v, "a whole number above zero")),
            }
        }
    }

    // Timeouts: the default, and a notice.
    for (key, default, slot) in [
        (
            "CONNECT_TIMEOUT",
            "proxy.connect_timeout",
            &mut edge.timeouts.connect,
        ),
        (
            "RESPONSE_TIMEOUT",
            "proxy.response_timeout",
            &mut edge.timeouts.response,
        ),
        (
            "TUNNEL_TIMEOUT",
            "proxy.tunnel_idle_timeout",
            &mut edge.timeouts.tunnel,
        ),
    ] {
        if let Some(v) = get(key) {
            match super::labels::duration(v) {
                Some(d) => *slot = Some(d),
                None => found.ignored.push(format!(
                    "{own}{key}={v:?}: expected a duration above zero such as \"30s\", \"5m\" \
                     or \"1h\"; using {default}"
                )),
            }
        }
    }

    // Header rules: the port is not served when one cannot be applied as written.
    for (direction, rules) in [
        ("REQUEST", &mut edge.request_headers),
        ("RESPONSE", &mut edge.response_headers),
    ] {
        match header_rules(mine, &own, direction) {
            Ok(r) => *rules = r,
            Err(e) => {
                found.skip.get_or_insert(e);
            }
        }
    }

    // Error pages: the default page, and a notice.
    let content_type = match get("ERROR_PAGE_CONTENT_TYPE") {
        None => DEFAULT_PAGE_TYPE,
        Some(t) => match check_content_type(t) {
            Ok(()) => t,
            Err(e) => {
                found.ignored.push(format!(
                    "{own}ERROR_PAGE_CONTENT_TYPE: {e}; the pages are sent as \
                     {DEFAULT_PAGE_TYPE}"
                ));
                DEFAULT_PAGE_TYPE
            }
        },
    };
    for status in [502u16, 503, 504] {
        let key = format!("ERROR_PAGE_{status}");
        // The body as written (not trimmed): a page may end with a newline.
        if let Some(body) = raw(&key)
            && let Err(e) = edge.pages.set(status, body.as_bytes(), content_type)
        {
            found
                .ignored
                .push(format!("{own}{key}: {e}; the default page is used"));
        }
    }

    match get("MAINTENANCE").map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0" | "no" | "off") => {}
        Some("true" | "1" | "yes" | "on") => edge.maintenance = true,
        Some(other) => {
            found.skip.get_or_insert(format!(
                "{own}MAINTENANCE={other:?}: expected true or false; the port is not served \
                 until it says which"
            ));
        }
    }
    (edge, found)
}

/// The edge label names after `SWITCHYARD_{n}_` (header rules are matched by prefix).
pub const LABELS: &[&str] = &[
    "RATE_LIMIT",
    "RATE_LIMIT_BURST",
    "RATE_LIMIT_BY",
    "MAX_CONCURRENT_REQUESTS",
    "MAX_PENDING_REQUESTS",
    "CONNECT_TIMEOUT",
    "RESPONSE_TIMEOUT",
    "TUNNEL_TIMEOUT",
    "ERROR_PAGE_502",
    "ERROR_PAGE_503",
    "ERROR_PAGE_504",
    "ERROR_PAGE_CONTENT_TYPE",
    "MAINTENANCE",
];

/// `N`, `N/s`, `N/m` or `N/h` requests: the interval between two, in nanoseconds.
pub fn rate(text: &str) -> Option<u64> {
    let text = text.trim();
    let (count, per) = match text.split_once('/') {
        None => (text, "s"),
        Some((c, p)) => (c.trim(), p.trim()),
    };
    let period_ns: u64 = match per {
        "s" | "sec" | "second" => 1_000_000_000,
        "m" | "min" | "minute" => 60_000_000_000,
        "h" | "hour" => 3_600_000_000_000,
        _ => return None,
    };
    let count: u64 = count
        .parse()
        .ok()
        .filter(|&c| c > 0 && c <= 1_000_000_000)?;
    Some((period_ns / count).max(1))
}

/// One second's worth of requests at the rate, at least one.
fn default_burst(interval_ns: u64) -> u32 {
    u32::try_from(1_000_000_000u64.div_ceil(interval_ns))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Fields a rule may not touch: those of one hop (`Expect` among them: the proxy relays a body
/// as it comes), the message's framing, the one routing depends on, and those the proxy writes
/// itself.
fn forbidden(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "host"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-port"
            | "x-forwarded-host"
            | "expect"
            | "x-request-id"
            | "switchyard-trace"
            | "switchyard-trace-result"
    )
}

/// `{direction}_HEADER_SET_<Name>=value`, `{direction}_HEADER_ADD_<Name>=value` and
/// `{direction}_HEADER_REMOVE=Name, Name`.
fn header_rules(mine: &[(&str, &str)], own: &str, direction: &str) -> Result<HeaderRules, String> {
    let mut rules = HeaderRules::default();
    let check_name = |key: &str, name: &str| -> Result<String, String> {
        let lower = name.trim().to_ascii_lowercase();
        if lower.is_empty() || http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(format!(
                "{key}: {name:?} is not a header field name; the port is not served"
            ));
        }
        if forbidden(&lower) {
            return Err(format!(
                "{key}: {lower:?} is a hop-by-hop, framing or routing field, or one the proxy \
                 writes itself, which header rules may not change; the port is not served"
            ));
        }
        Ok(lower)
    };
    let remove_rest = format!("{direction}_HEADER_REMOVE");
    let remove_key = format!("{own}{remove_rest}");
    if let Some(&(_, list)) = mine.iter().find(|(rest, _)| *rest == remove_rest) {
        for name in list.split(',').filter(|n| !n.trim().is_empty()) {
            let name = check_name(&remove_key, name)?;
            if !rules.remove.contains(&name) {
                rules.remove.push(name);
            }
        }
    }
    for (verb, replaces) in [("SET", true), ("ADD", false)] {
        let prefix = format!("{direction}_HEADER_{verb}_");
        for (rest, value) in mine {
            let Some(name) = rest.strip_prefix(&prefix) else {
                continue;
            };
            let key = format!("{own}{rest}");
            let name = check_name(&key, name)?;
            let value = value.trim();
            if http::HeaderValue::from_str(value).is_err() {
                return Err(format!(
                    "{key}={value:?}: not a valid header value; the port is not served"
                ));
            }
            if replaces && !rules.remove.contains(&name) {
                rules.remove.push(name.clone());
            }
            rules.add.push((name, value.to_string()));
        }
    }
    if rules.add.len() + rules.remove.len() > MAX_RULES {
        return Err(format!(
            "{own}{direction}_HEADER_*: more than {MAX_RULES} rules; the port is not served"
        ));
    }
    for (name, value) in &rules.add {
        rules.lines.extend_from_slice(name.as_bytes());
        rules.lines.extend_from_slice(b": ");
        rules.lines.extend_from_slice(value.as_bytes());
        rules.lines.extend_from_slice(b"\r\n");
    }
    Ok(rules)
}

/// Whether `rest` (after `SWITCHYARD_{n}_`) is an edge label.
pub fn is_edge_label(rest: &str) -> bool {
    LABELS.contains(&rest)
        || ["REQUEST_HEADER_", "RESPONSE_HEADER_"]
            .iter()
            .any(|p| rest.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limits_read_and_a_bad_one_is_reported_with_the_port_served() {
        let (e, f) = read(
            &labels(&[
                ("SWITCHYARD_0_RATE_LIMIT", "600/m"),
                ("SWITCHYARD_0_RATE_LIMIT_BURST", "20"),
                ("SWITCHYARD_0_RATE_LIMIT_BY", "client"),
                ("SWITCHYARD_0_MAX_CONCURRENT_REQUESTS", "8"),
                ("SWITCHYARD_0_MAX_PENDING_REQUESTS", "lots"),
            ]),
            0,
        );
        let rate = e.rate.unwrap();
        assert_eq!(rate.interval_ns, 100_000_000);
        assert_eq!((rate.burst, rate.per_client), (20, true));
        assert_eq!(e.max_concurrent, Some(8));
        assert_eq!(e.max_pending, None);
        assert!(f.skip.is_none());
        assert_eq!(f.ignored.len(), 1);
        assert!(f.ignored[0].contains("MAX_PENDING_REQUESTS") && f.ignored[0].contains("WITHOUT"));
        let (e, f) = read(&labels(&[("SWITCHYARD_0_RATE_LIMIT", "fast")]), 0);
        assert!(e.rate.is_none() && f.ignored.len() == 1);
        let (e, _) = read(&labels(&[("SWITCHYARD_0_RATE_LIMIT", "5")]), 0);
        assert_eq!(e.rate.unwrap().burst, 5, "a second's worth by default");
    }

    #[test]
    fn header_rules_and_forbidden_fields() {
        let (e, f) = read(
            &labels(&[
                ("SWITCHYARD_0_REQUEST_HEADER_SET_X-Env", "prod"),
                ("SWITCHYARD_0_REQUEST_HEADER_ADD_X-Tag", "a"),
                (
                    "SWITCHYARD_0_REQUEST_HEADER_REMOVE",
                    "X-Internal-User, Cookie",
                ),
                ("SWITCHYARD_0_RESPONSE_HEADER_REMOVE", "Server"),
            ]),
            0,
        );
        assert!(f.skip.is_none(), "{f:?}");
        assert_eq!(
            e.request_headers.remove,
            ["x-internal-user", "cookie", "x-env"]
        );
        assert_eq!(e.request_headers.lines, b"x-env: prod\r\nx-tag: a\r\n");
        assert!(e.response_headers.removes(b"SERVER"));
        for (key, value) in [
            ("SWITCHYARD_0_REQUEST_HEADER_SET_Content-Length", "1"),
            ("SWITCHYARD_0_RESPONSE_HEADER_REMOVE", "Transfer-Encoding"),
            ("SWITCHYARD_0_REQUEST_HEADER_ADD_Connection", "close"),
            ("SWITCHYARD_0_REQUEST_HEADER_SET_Host", "x"),
            ("SWITCHYARD_0_REQUEST_HEADER_SET_X-Forwarded-Port", "443"),
            ("SWITCHYARD_0_REQUEST_HEADER_ADD_Expect", "100-continue"),
            ("SWITCHYARD_0_REQUEST_HEADER_SET_Bad Name", "x"),
            ("SWITCHYARD_0_REQUEST_HEADER_SET_X-A", "a\nb"),
        ] {
            let (_, f) = read(&labels(&[(key, value)]), 0);
            assert!(f.skip.is_some(), "{key}={value:?}");
        }
    }

    #[test]
    fn pages_timeouts_and_maintenance() {
        let big = "x".repeat(MAX_PAGE_BYTES + 1);
        let (e, f) = read(
            &labels(&[
                ("SWITCHYARD_0_ERROR_PAGE_503", "<h1>down</h1>\n"),
                ("SWITCHYARD_0_ERROR_PAGE_502", &big),
                ("SWITCHYARD_0_CONNECT_TIMEOUT", "250ms"),
                ("SWITCHYARD_0_TUNNEL_TIMEOUT", "forever"),
                ("SWITCHYARD_0_MAINTENANCE", "true"),
            ]),
            0,
        );
        assert_eq!(e.pages.get(503).unwrap().body, "<h1>down</h1>\n");
        assert_eq!(e.pages.get(503).unwrap().content_type, DEFAULT_PAGE_TYPE);
        assert!(e.pages.get(502).is_none());
        assert_eq!(e.timeouts.connect, Some(Duration::from_millis(250)));
        assert_eq!(e.timeouts.tunnel, None);
        assert!(e.maintenance);
        assert_eq!(f.ignored.len(), 2, "{f:?}");
        let (_, f) = read(&labels(&[("SWITCHYARD_0_MAINTENANCE", "soon")]), 0);
        assert!(f.skip.is_some());
    }

    proptest! {
        #[test]
        fn any_label_value_reads_without_panicking(key in "[A-Z_0-9-]{0,40}", value in ".{0,80}") {
            let (_e, _f) = read(&labels(&[(&format!("SWITCHYARD_0_{key}"), &value)]), 0);
            let _ = rate(&value);
        }

        #[test]
        fn a_rate_that_parses_has_a_nonzero_interval(count in 1u64..2_000_000_000, unit in "s|m|h") {
            if let Some(interval) = rate(&format!("{count}/{unit}")) {
                prop_assert!(interval >= 1);
                prop_assert!(count <= 1_000_000_000);
            }
        }
    }
}
