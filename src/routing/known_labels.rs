//! Which labels exist, and what an unknown one means: the names switchyard acts on (marathon-lb's
//! `HAPROXY_…` ones and its own `SWITCHYARD_…` ones), the template overrides that only
//! marathon-lb's config generator read, and the rule for a label nothing reads — reported, and
//! when its name says it restricts access, the port is not served (never fail open).
//! `labels::read` reads the values; this file knows the names, and gathers one port's labels by
//! them (`PortKeys`) for the readers.

use std::collections::BTreeMap;

/// HAProxy template overrides: meaningful to marathon-lb's config generator only. Matched by
/// ending (`BACKEND_HEAD`, `HTTP_FRONTEND_ACL_WITH_PATH`, `BACKEND_STICKY_OPTIONS`, …).
pub(super) const TEMPLATE_SUFFIXES: &[&str] = &[
    "HEAD",
    "OPTIONS",
    "FRONTEND_ACL",
    "FRONTEND_ACL_ONLY",
    "WITH_PATH",
    "ROUTING_ONLY",
    "APPID_ACL",
    "GLUE",
    "REDIRECT_HTTP_TO_HTTPS",
];

/// Labels that arrive with later work; noted, not errors.
pub(super) const LATER: &[&str] = &[];

/// The per-port labels switchyard acts on (after `HAPROXY_{n}_`). Any other `HAPROXY_{n}_…` label
/// is reported: nothing marathon-lb reads is dropped silently.
pub(super) const ACTED_ON: &[&str] = &[
    "GROUP",
    "MODE",
    "PORT",
    "BIND_ADDR",
    "BALANCE",
    "ENABLED",
    "VHOST",
    "PATH",
    "REDIRECT_TO_HTTPS",
    "USE_HSTS",
    "STICKY",
    "BACKEND_NETWORK_ALLOWED_ACL",
    "SSL_CERT",
    "AUTH",
    "BACKEND_HEALTHCHECK_PORT_INDEX",
    "BACKEND_WEIGHT",
    "HTTP_BACKEND_PROXYPASS_PATH",
    "HTTP_BACKEND_REVPROXY_PATH",
    "HTTP_BACKEND_REDIR",
];

/// The slot of a per-port label in [`ACTED_ON`], `None` for a label not acted on. A length
/// switch, then one comparison: called once per label a port has.
pub(super) fn acted_on(rest: &str) -> Option<usize> {
    ACTED_ON.iter().position(|&known| known == rest)
}

/// [`acted_on`] for a name the code reads, evaluated when it compiles (`const { … }`): a name
/// missing from [`ACTED_ON`] stops the build instead of never being found.
pub(super) const fn acted_on_slot(rest: &str) -> usize {
    let mut i = 0;
    while i < ACTED_ON.len() {
        if same_text(ACTED_ON[i], rest) {
            return i;
        }
        i += 1;
    }
    panic!("a label read is missing from ACTED_ON")
}

const fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// marathon-lb templates whose job is to decide who gets in: the basic-auth ones
/// (`HTTP_FRONTEND_ACL_WITH_AUTH`, `HTTPS_FRONTEND_AUTH_REQUEST_ONLY`, `USERLIST_HEAD`, …) and the
/// network ACLs (`HTTP_BACKEND_NETWORK_ALLOWED_ACL`, `TCP_BACKEND_NETWORK_ALLOWED_ACL`). An app
/// that overrides one wants access decided some other way than switchyard decides it; serving the
/// port anyway could let in whom the override keeps out, so the port is not served.
pub(super) fn restricts_access(rest: &str) -> bool {
    rest != "AUTH"
        && (rest.contains("AUTH")
            || rest == "USERLIST_HEAD"
            || (rest.ends_with("NETWORK_ALLOWED_ACL") && rest != "BACKEND_NETWORK_ALLOWED_ACL"))
}

/// App-wide `HAPROXY_…` labels switchyard reads (the per-port ones are `HAPROXY_{n}_…`).
pub(super) const APP_WIDE: &[&str] = &[
    "HAPROXY_GROUP",
    "HAPROXY_DEPLOYMENT_GROUP",
    "HAPROXY_DEPLOYMENT_COLOUR",
    "HAPROXY_DEPLOYMENT_STARTED_AT",
    "HAPROXY_DEPLOYMENT_ALT_PORT",
    "HAPROXY_DEPLOYMENT_TARGET_INSTANCES",
];

/// An app-wide label of [`APP_WIDE`], by its place there: read by index, not by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppWide {
    Group = 0,
    DeploymentGroup = 1,
    DeploymentColour = 2,
    DeploymentStartedAt = 3,
    DeploymentAltPort = 4,
    DeploymentTargetInstances = 5,
}

impl AppWide {
    /// The label's name.
    pub fn label(self) -> &'static str {
        APP_WIDE[self as usize]
    }
}

/// The `SWITCHYARD_{n}_…` labels read here (after the prefix); the edge labels
/// (`edge::is_edge_label`) and the connection labels (`edge_labels::LABELS`) are read by their
/// own modules. One list per reader, so a reader's new label is known where it is read.
const OWN_PORT_LABELS: &[&str] = &[
    "WEIGHT",
    "CANARY_HEADER",
    "UPSTREAM",
    "TCP_IDLE_TIMEOUT",
    "ROLLOUT",
];

/// App-wide `SWITCHYARD_…` labels (no port number) that something reads: the zone reads
/// `SWITCHYARD_DNS_HEALTHY_ONLY` (zone/tests.rs pins that the name matches).
pub const APP_WIDE_SWITCHYARD: &[&str] = &["SWITCHYARD_DNS_HEALTHY_ONLY"];

/// Whether `rest` (after `SWITCHYARD_{n}_`) names a label some part of switchyard reads.
pub fn is_switchyard_port_label(rest: &str) -> bool {
    OWN_PORT_LABELS.contains(&rest)
        || super::edge::is_edge_label(rest)
        || super::edge_labels::LABELS.contains(&rest)
}

/// Words that, in the name of a `SWITCHYARD_…` label switchyard does not know, say the label was
/// meant to keep someone out or hold traffic back (`SWITCHYARD_0_CLIENT_CA` misspelt, an
/// `_ALLOW_CIDR` from a newer release): ignoring it could open the port to whom it was meant to
/// keep out, so the port is not served until the label is fixed or removed.
const RESTRICTING_WORDS: &[&str] = &[
    "AUTH",
    "ACL",
    "ALLOW",
    "DENY",
    "CIDR",
    "WHITELIST",
    "BLACKLIST",
    "CLIENT",
    "CERT",
    "TLS",
    "PASSWORD",
    "SECRET",
    "TOKEN",
    "LIMIT",
    "MAINTENANCE",
    "PROTECT",
    "RESTRICT",
];

fn sounds_restricting(name: &str) -> bool {
    RESTRICTING_WORDS.iter().any(|w| name.contains(w))
}

/// A `SWITCHYARD_…` label of port `n`, or of the whole app, that nothing reads and whose name
/// sounds like an access rule: the port's skip reason.
pub(super) fn unknown_restricting_label(
    labels: &BTreeMap<String, String>,
    n: usize,
) -> Option<String> {
    let switchyard = with_prefix(labels, "SWITCHYARD_");
    if switchyard.is_empty() {
        return None; // most apps: nothing to check, no prefix made
    }
    let own = switchyard_prefix(n);
    switchyard.into_iter().find_map(|(rest, _)| {
        let key = format!("SWITCHYARD_{rest}");
        let unknown = match key.strip_prefix(&*own) {
            Some(port_rest) => !is_switchyard_port_label(port_rest),
            None => port_number(rest).is_none() && !APP_WIDE_SWITCHYARD.contains(&key.as_str()),
        };
        (unknown && sounds_restricting(&key)).then(|| {
            format!(
                "{key}: not a label switchyard knows, and its name says it restricts access; \
                     the port is not served until it is corrected or removed"
            )
        })
    })
}

/// `HAPROXY_{n}_`: made once for the first ports, formatted for the others (a full compile
/// reads every port's labels by such prefixes, four of them per port).
pub(super) fn haproxy_prefix(n: usize) -> std::borrow::Cow<'static, str> {
    static MADE: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..16).map(|n| format!("HAPROXY_{n}_")).collect());
    match MADE.get(n) {
        Some(prefix) => std::borrow::Cow::Borrowed(prefix),
        None => std::borrow::Cow::Owned(format!("HAPROXY_{n}_")),
    }
}

/// `SWITCHYARD_{n}_`, as [`haproxy_prefix`].
pub(super) fn switchyard_prefix(n: usize) -> std::borrow::Cow<'static, str> {
    static MADE: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..16).map(|n| format!("SWITCHYARD_{n}_")).collect());
    match MADE.get(n) {
        Some(prefix) => std::borrow::Cow::Borrowed(prefix),
        None => std::borrow::Cow::Owned(format!("SWITCHYARD_{n}_")),
    }
}

/// The port number of a `{n}_…` label rest, if it starts with one.
fn port_number(rest: &str) -> Option<usize> {
    port_digits(rest)?.parse().ok()
}

/// The `{n}` of a `{n}_…` label rest: the text before its first `_`, when it is digits. A byte
/// loop: a `str` char search costs more than the few bytes it looks at, for every app's labels.
fn port_digits(rest: &str) -> Option<&str> {
    let n = &rest[..rest.bytes().position(|b| b == b'_')?];
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

/// `HAPROXY_…` labels of an app that no port reads: app-wide labels switchyard does not know, and
/// `HAPROXY_{n}_…` labels for a port the app does not have. Reported once per app.
pub fn app_notices(labels: &BTreeMap<String, String>, ports: usize) -> Vec<String> {
    // Keys are read as they are (no copy): compile reads them for every app on a full compile.
    // One walk: every `HAPROXY_` key sorts before every `SWITCHYARD_` key, so the notices come
    // in the order of a walk per prefix.
    let mut notices = Vec::new();
    for key in labels.keys() {
        let key = key.as_str();
        if let Some(rest) = key.strip_prefix("HAPROXY_") {
            match port_digits(rest) {
                Some(n) => {
                    if n.parse::<usize>().map_or(true, |n| n >= ports) {
                        notices.push(format!("{key}: the app has no port {n}, ignored"));
                    }
                }
                None if APP_WIDE.contains(&key) => {}
                None => notices.push(format!("{key}: not acted on by switchyard, ignored")),
            }
        } else if let Some(rest) = key.strip_prefix("SWITCHYARD_") {
            match port_number(rest) {
                Some(n) if n >= ports => {
                    notices.push(format!("{key}: the app has no port {n}, ignored"));
                }
                Some(_) => {}
                None if APP_WIDE_SWITCHYARD.contains(&key) => {}
                // Restricting ones skip every port (`read`); said there, not twice.
                None if sounds_restricting(key) && ports > 0 => {}
                None => notices.push(format!(
                    "{key}: not a label switchyard knows (misspelt?), ignored"
                )),
            }
        }
    }
    notices
}

/// The keys that start with `prefix`, as (key, rest of the key), in order. A walk over the
/// labels, not a range search: an app has a handful, and a B-tree search per prefix cost more
/// than the walk (compile reads every app's on a full compile).
#[cfg(test)]
pub(super) fn keys_with_prefix<'a>(
    labels: &'a BTreeMap<String, String>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    labels
        .keys()
        .filter_map(move |k| Some((k.as_str(), k.strip_prefix(prefix)?)))
}

/// One port's labels, gathered in one walk over the app's labels: what `labels::read`,
/// `edge::read_own` and `edge_labels::read` look up. The same as [`with_prefix`] per prefix and
/// a lookup per app-wide name (`labels_tests` pins it), without a B-tree search for each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PortKeys<'a> {
    /// `HAPROXY_{n}_…` labels switchyard acts on: their values, by their place in
    /// [`ACTED_ON`] (read by slot, not by name: see [`acted_on_slot`]).
    pub acted_on: [Option<&'a str>; ACTED_ON.len()],
    /// The other `HAPROXY_{n}_…` labels (reported): (rest of the key, value), in key order.
    pub others: Vec<(&'a str, &'a str)>,
    /// `SWITCHYARD_{n}_…`: (rest of the key, value), in key order.
    pub own: Vec<(&'a str, &'a str)>,
    /// The values of the app-wide labels read per port, as [`APP_WIDE`] names them.
    app_wide: [Option<&'a str>; APP_WIDE.len()],
    /// Some key starts with `SWITCHYARD_` (of any port, or app-wide).
    pub any_switchyard: bool,
}

impl<'a> PortKeys<'a> {
    /// Port `n`'s labels of `labels`. Inlined: made in place, not copied out (it is a few
    /// hundred bytes, made for every port on a full compile).
    #[inline(always)]
    pub fn of(labels: &'a BTreeMap<String, String>, n: usize) -> PortKeys<'a> {
        let haproxy_prefix = haproxy_prefix(n);
        let own_prefix = switchyard_prefix(n);
        let mut keys = PortKeys::default();
        for (key, value) in labels {
            if let Some(rest) = key.strip_prefix("HAPROXY_") {
                match key.strip_prefix(&*haproxy_prefix) {
                    Some(rest) => match acted_on(rest) {
                        Some(slot) => keys.acted_on[slot] = Some(value),
                        None => keys.others.push((rest, value)),
                    },
                    // App-wide names have no digit after `HAPROXY_`.
                    None if !rest.starts_with(|c: char| c.is_ascii_digit()) => {
                        if let Some(i) = APP_WIDE.iter().position(|&w| w == key) {
                            keys.app_wide[i] = Some(value);
                        }
                    }
                    None => {}
                }
            } else if key.starts_with("SWITCHYARD_") {
                keys.any_switchyard = true;
                if let Some(rest) = key.strip_prefix(&*own_prefix) {
                    keys.own.push((rest, value));
                }
            }
        }
        keys
    }

    /// Every `HAPROXY_{n}_…` label, acted on or not: (rest of the key, value), in key order.
    #[cfg(test)]
    pub fn haproxy(&self) -> Vec<(&'a str, &'a str)> {
        let mut all: Vec<_> = ACTED_ON
            .iter()
            .zip(self.acted_on)
            .filter_map(|(&rest, value)| Some((rest, value?)))
            .chain(self.others.iter().copied())
            .collect();
        all.sort();
        all
    }

    /// The value of app-wide label `name`.
    #[inline]
    pub fn app_wide_at(&self, name: AppWide) -> Option<&'a str> {
        self.app_wide[name as usize]
    }

    /// The value of app-wide label `name` (one of [`APP_WIDE`]; `None` for any other name).
    #[cfg(test)]
    pub fn app_wide(&self, name: &str) -> Option<&'a str> {
        let i = APP_WIDE.iter().position(|&w| w == name)?;
        self.app_wide[i]
    }
}

/// The labels whose keys start with `prefix`, as (rest of the key, value), in key order.
pub(super) fn with_prefix<'a>(
    labels: &'a BTreeMap<String, String>,
    prefix: &str,
) -> Vec<(&'a str, &'a str)> {
    use std::ops::Bound;
    labels
        .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (&k[prefix.len()..], v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `app_notices` as it was, a walk per prefix with `str` searches: the oracle.
    fn app_notices_per_prefix(labels: &BTreeMap<String, String>, ports: usize) -> Vec<String> {
        keys_with_prefix(labels, "HAPROXY_")
            .filter_map(|(key, rest)| match rest.split_once('_') {
                Some((n, _)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    let beyond = n.parse::<usize>().map_or(true, |n| n >= ports);
                    beyond.then(|| format!("{key}: the app has no port {n}, ignored"))
                }
                _ if APP_WIDE.contains(&key) => None,
                _ => Some(format!("{key}: not acted on by switchyard, ignored")),
            })
            .chain(
                keys_with_prefix(labels, "SWITCHYARD_").filter_map(|(key, rest)| {
                    let n = rest.split_once('_').and_then(|(n, _)| {
                        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                            .then(|| n.parse::<usize>().ok())?
                    });
                    match n {
                        Some(n) if n >= ports => {
                            Some(format!("{key}: the app has no port {n}, ignored"))
                        }
                        Some(_) => None,
                        None if APP_WIDE_SWITCHYARD.contains(&key) => None,
                        None if sounds_restricting(key) && ports > 0 => None,
                        None => Some(format!(
                            "{key}: not a label switchyard knows (misspelt?), ignored"
                        )),
                    }
                }),
            )
            .collect()
    }

    proptest! {
        /// One walk with byte searches says what the walk per prefix said, in the same order:
        /// ports in and beyond range, `01`, `0`, numbers too long for a `usize`, app-wide
        /// names and look-alikes, keys without `_`, non-ASCII keys, other prefixes.
        #[test]
        fn notices_in_one_walk_are_those_per_prefix(
            keys in proptest::collection::vec(
                (
                    prop::sample::select(vec!["HAPROXY_", "SWITCHYARD_", "OTHER_", "HAPROXY", ""]),
                    prop::sample::select(vec![
                        "0_", "1_", "01_", "10_", "99999999999999999999999_", "_", "x_", "é_",
                        "GROUP", "DEPLOYMENT_GROUP", "DNS_HEALTHY_ONLY", "0", "",
                    ]),
                    prop::sample::select(vec!["MODE", "VHOST", "AUTH", "ACL_LIST", "", "é"]),
                ),
                0..8,
            ),
            ports in 0usize..3,
        ) {
            let labels: BTreeMap<String, String> =
                keys.iter().map(|(a, b, c)| (format!("{a}{b}{c}"), String::new())).collect();
            prop_assert_eq!(app_notices(&labels, ports), app_notices_per_prefix(&labels, ports));
        }
    }

    /// `labels::read_keys` skips the labels acted on before asking whether a label restricts
    /// access: none of them may.
    #[test]
    fn no_label_acted_on_restricts_access() {
        for rest in ACTED_ON {
            assert!(!restricts_access(rest), "{rest}");
        }
    }

    /// Every app-wide name is found, by name and by index, and no other name.
    #[test]
    fn app_wide_names_are_matched() {
        use AppWide::*;
        let named = [
            (Group, "HAPROXY_GROUP"),
            (DeploymentGroup, "HAPROXY_DEPLOYMENT_GROUP"),
            (DeploymentColour, "HAPROXY_DEPLOYMENT_COLOUR"),
            (DeploymentStartedAt, "HAPROXY_DEPLOYMENT_STARTED_AT"),
            (DeploymentAltPort, "HAPROXY_DEPLOYMENT_ALT_PORT"),
            (
                DeploymentTargetInstances,
                "HAPROXY_DEPLOYMENT_TARGET_INSTANCES",
            ),
        ];
        assert_eq!(named.len(), APP_WIDE.len());
        for (i, (which, name)) in named.into_iter().enumerate() {
            assert_eq!(which.label(), name);
            let mut keys = PortKeys::default();
            keys.app_wide[i] = Some("v");
            assert_eq!(keys.app_wide(name), Some("v"), "{name}");
            assert_eq!(keys.app_wide_at(which), Some("v"), "{name}");
            keys.app_wide[i] = None;
            assert_eq!(keys.app_wide(name), None, "{name}");
        }
        let all = PortKeys {
            app_wide: [Some("v"); APP_WIDE.len()],
            ..PortKeys::default()
        };
        assert_eq!(all.app_wide("HAPROXY_0_GROUP"), None);
        assert_eq!(all.app_wide("HAPROXY_DEPLOYMENT"), None);
    }

    /// Every label acted on has its slot, and a name not acted on has none.
    #[test]
    fn acted_on_slots() {
        for (i, rest) in ACTED_ON.iter().enumerate() {
            assert_eq!(acted_on(rest), Some(i));
            assert_eq!(acted_on_slot(rest), i);
        }
        for rest in ["", "MOD", "MODES", "mode", "BACKEND_HEAD", "GROUP "] {
            assert_eq!(acted_on(rest), None, "{rest:?}");
        }
    }
}
