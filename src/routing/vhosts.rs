//! Host and path routing for the shared HTTP(S) listeners: hash maps built by `compile` (no
//! linear ACL scan per request, marathon-lb's problem with many vhosts), longest path prefix
//! wins, exact hosts before wildcards, more specific wildcards first.

use rustc_hash::FxHashMap;

#[derive(Debug, Default)]
pub struct Vhosts {
    exact: FxHashMap<Box<str>, Paths>,
    /// `*.example.com` is kept under `example.com`.
    wildcard: FxHashMap<Box<str>, Paths>,
}

/// Path rules of one host and their services, in the order they are tried: highest
/// `HAPROXY_{n}_BACKEND_WEIGHT` first (marathon-lb sorts its `use_backend` lines so), then the
/// longest prefix.
#[derive(Debug, Default)]
struct Paths(Vec<(PathRule, usize)>);

/// One path rule: a prefix (`""`: any path), matched with or without case (`HAPROXY_{n}_PATH`
/// with `-i`), and the weight that orders it among the host's rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathRule {
    pub prefix: Box<str>,
    pub ignore_case: bool,
    pub weight: i64,
}

impl PathRule {
    /// A case-sensitive prefix with the default weight.
    pub fn prefix(prefix: &str) -> PathRule {
        PathRule {
            prefix: prefix.into(),
            ..PathRule::default()
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        let (path, prefix) = (path.as_bytes(), self.prefix.as_bytes());
        match path.get(..prefix.len()) {
            Some(head) if self.ignore_case => head.eq_ignore_ascii_case(prefix),
            Some(head) => head == prefix,
            None => false,
        }
    }
}

impl Paths {
    fn insert(&mut self, rule: PathRule, service: usize) -> Result<(), usize> {
        if let Some((_, owner)) = self
            .0
            .iter()
            .find(|(r, _)| r.prefix == rule.prefix && r.ignore_case == rule.ignore_case)
        {
            return Err(*owner);
        }
        self.0.push((rule, service));
        self.0.sort_by(|(a, _), (b, _)| {
            b.weight
                .cmp(&a.weight)
                .then_with(|| b.prefix.len().cmp(&a.prefix.len()))
                .then_with(|| a.ignore_case.cmp(&b.ignore_case))
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
        Ok(())
    }

    fn route(&self, path: &str) -> Option<usize> {
        self.0
            .iter()
            .find(|(rule, _)| rule.matches(path))
            .map(|(_, s)| *s)
    }

    /// Whether every path takes the same service here: all rules name one, and one of them
    /// takes any path (nothing falls through to a wildcard or the default app).
    fn one_way(&self) -> bool {
        let first = self.0.first().map(|(_, s)| *s);
        self.0.iter().all(|(_, s)| Some(*s) == first)
            && self.0.iter().any(|(rule, _)| rule.prefix.is_empty())
    }
}

impl Vhosts {
    /// Routes `host` (normalized, possibly `*.`-prefixed) and path `prefix` to `service`; the
    /// service already holding them, if any, keeps them.
    pub fn insert(&mut self, host: &str, prefix: &str, service: usize) -> Result<(), usize> {
        self.insert_rule(host, PathRule::prefix(prefix), service)
    }

    /// Routes `host` and the path `rule` to `service`; the service already holding the same
    /// prefix (with the same case rule), if any, keeps it.
    pub fn insert_rule(&mut self, host: &str, rule: PathRule, service: usize) -> Result<(), usize> {
        let (map, key) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix),
            None => (&mut self.exact, host),
        };
        map.entry(key.into()).or_default().insert(rule, service)
    }

    /// Every (host, path prefix, target), wildcards as `*.`: for display.
    pub fn entries(&self) -> impl Iterator<Item = (String, &str, usize)> {
        let exact = self.exact.iter().map(|(h, p)| (h.to_string(), p));
        let wild = self.wildcard.iter().map(|(h, p)| (format!("*.{h}"), p));
        exact.chain(wild).flat_map(|(h, p)| {
            p.0.iter()
                .map(move |(rule, t)| (h.clone(), &*rule.prefix, *t))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Whether a host's requests take one route whatever their path (its first rules are
    /// one service's with a catch-all, or it has none and no path is routed).
    pub fn path_independent(&self, host: &str) -> bool {
        if let Some(paths) = self.exact.get(host) {
            return paths.one_way();
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(paths) = self.wildcard.get(parent) {
                return paths.one_way();
            }
            rest = parent;
        }
        true
    }

    /// The service for a request, given its normalized host (see [`host_key`]) and path.
    pub fn route(&self, host: &str, path: &str) -> Option<usize> {
        if let Some(service) = self.exact.get(host).and_then(|p| p.route(path)) {
            return Some(service);
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(service) = self.wildcard.get(parent).and_then(|p| p.route(path)) {
                return Some(service);
            }
            rest = parent;
        }
        None
    }
}

/// A Host header as the maps key it: lowercase, port and trailing dot removed, written into
/// `buf` so the hot path does not allocate. `None` when it does not fit or is not ASCII.
pub fn host_key<'a>(raw: &[u8], buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let host = match raw.iter().rposition(|&b| b == b':') {
        // `[v6]:port` or `name:port`; a bare IPv6 literal has no brackets and several colons.
        Some(i) if raw[i + 1..].iter().all(u8::is_ascii_digit) && !raw[..i].contains(&b':') => {
            &raw[..i]
        }
        Some(i) if raw.first() == Some(&b'[') && raw[i - 1] == b']' => &raw[..i],
        _ => raw,
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.len() > buf.len() || !host.is_ascii() {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (o, b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    // SAFETY: every byte is ASCII (checked above; lowering keeps it so), and ASCII is UTF-8.
    // `from_utf8` would scan the bytes again, on every routed request.
    Some(unsafe { std::str::from_utf8_unchecked(out) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table() -> Vhosts {
        let mut v = Vhosts::default();
        v.insert("shop.example.com", "", 0).unwrap();
        v.insert("shop.example.com", "/api", 1).unwrap();
        v.insert("shop.example.com", "/api/v2", 2).unwrap();
        v.insert("*.example.com", "", 3).unwrap();
        v.insert("*.eu.example.com", "", 4).unwrap();
        v.insert("only-api.example.com", "/api", 5).unwrap();
        v
    }

    #[test]
    fn routing_matrix() {
        let v = table();
        assert_eq!(v.route("shop.example.com", "/"), Some(0));
        assert_eq!(v.route("shop.example.com", "/api"), Some(1));
        assert_eq!(v.route("shop.example.com", "/api/users"), Some(1));
        assert_eq!(
            v.route("shop.example.com", "/api/v2/x"),
            Some(2),
            "longest prefix wins"
        );
        assert_eq!(v.route("blog.example.com", "/"), Some(3), "wildcard");
        assert_eq!(
            v.route("a.b.example.com", "/"),
            Some(3),
            "wildcards match deeper names"
        );
        assert_eq!(
            v.route("x.eu.example.com", "/"),
            Some(4),
            "the more specific wildcard"
        );
        assert_eq!(
            v.route("example.com", "/"),
            None,
            "a wildcard does not match its apex"
        );
        assert_eq!(v.route("only-api.example.com", "/api/1"), Some(5));
        assert_eq!(
            v.route("only-api.example.com", "/web"),
            Some(3),
            "no path matched: wildcard"
        );
        assert_eq!(v.route("other.org", "/"), None);
    }

    #[test]
    fn first_claim_keeps_a_route() {
        let mut v = table();
        assert_eq!(v.insert("shop.example.com", "/api", 9), Err(1));
        assert_eq!(v.insert("*.example.com", "", 9), Err(3));
    }

    #[test]
    fn host_keys() {
        let mut buf = [0u8; 256];
        assert_eq!(
            host_key(b"Shop.Example.COM:8080", &mut buf),
            Some("shop.example.com")
        );
        assert_eq!(
            host_key(b"shop.example.com.", &mut buf),
            Some("shop.example.com")
        );
        assert_eq!(host_key(b"[::1]:80", &mut buf), Some("[::1]"));
        assert_eq!(host_key(b"::1", &mut buf), Some("::1"));
        assert_eq!(host_key("héllo".as_bytes(), &mut buf), None);
        assert_eq!(host_key(&[b'a'; 300], &mut buf), None);
    }

    #[test]
    fn ignore_case_and_weights_order_the_rules() {
        let mut v = Vhosts::default();
        let rule = |prefix: &str, ignore_case, weight| PathRule {
            prefix: prefix.into(),
            ignore_case,
            weight,
        };
        v.insert_rule("a.example.com", rule("/api", true, 1), 0)
            .unwrap();
        v.insert_rule("a.example.com", rule("/api/v2", false, 1), 1)
            .unwrap();
        v.insert_rule("a.example.com", rule("", false, 0), 2)
            .unwrap();
        assert_eq!(v.route("a.example.com", "/API/x"), Some(0));
        assert_eq!(v.route("a.example.com", "/Api"), Some(0));
        assert_eq!(v.route("a.example.com", "/api/v2/x"), Some(1));
        assert_eq!(
            v.route("a.example.com", "/API/V2/x"),
            Some(0),
            "v2 is case-sensitive"
        );
        assert_eq!(v.route("a.example.com", "/ap"), Some(2));
        // A heavier catch-all is tried before every lighter rule.
        v.insert_rule("b.example.com", rule("", false, 5), 3)
            .unwrap();
        v.insert_rule("b.example.com", rule("/api", false, 1), 4)
            .unwrap();
        assert_eq!(v.route("b.example.com", "/api"), Some(3));
        // The same prefix with and without -i are two rules.
        assert!(
            v.insert_rule("a.example.com", rule("/api", false, 1), 5)
                .is_ok()
        );
        assert_eq!(
            v.route("a.example.com", "/api"),
            Some(5),
            "exact case first"
        );
        assert_eq!(v.route("a.example.com", "/API"), Some(0));
    }

    proptest! {
        #[test]
        fn ignore_case_matches_what_lowercasing_both_matches(
            prefix in "/[a-zA-Z]{0,4}",
            path in "/[a-zA-Z/]{0,8}",
        ) {
            let rule = PathRule { prefix: prefix.as_str().into(), ignore_case: true, weight: 0 };
            prop_assert_eq!(
                rule.matches(&path),
                path.to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase())
            );
            let exact = PathRule::prefix(&prefix);
            prop_assert_eq!(exact.matches(&path), path.starts_with(&prefix));
        }

        /// Whatever the bytes, a key is lowercase ASCII (what makes its unchecked `str` sound)
        /// and a prefix of the header, lowered.
        #[test]
        fn host_key_never_panics_and_keys_are_lowercase_ascii(
            raw in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                "[a-zA-Z0-9.:\\[\\]\u{e9}-]{0,270}".prop_map(String::into_bytes),
            ],
        ) {
            let mut buf = [0u8; 256];
            if let Some(key) = host_key(&raw, &mut buf) {
                prop_assert!(key.is_ascii() && !key.bytes().any(|b| b.is_ascii_uppercase()));
                prop_assert!(raw.to_ascii_lowercase().starts_with(key.as_bytes()));
            }
        }
    }
}
