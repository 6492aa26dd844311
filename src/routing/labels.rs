//! marathon-lb's app labels, read for one service port. Only `compile` calls this.
//!
//! A label switchyard understands but whose value it cannot parse makes the port `Err` (skipped,
//! reported); a label switchyard knows but does not act on yet is returned as a notice.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::auth::BasicAuth;
use super::cidr::Cidr;
use super::{Balance, Mode};
use crate::cluster::CheckSpec;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deployment {
    pub group: Option<String>,
    pub colour: Option<String>,
    pub started_at: Option<String>,
    pub alt_port: Option<u16>,
    pub target_instances: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLabels {
    /// `None`: the app has no group label.
    pub groups: Option<Vec<String>>,
    /// `HAPROXY_{n}_MODE`, when set; [`mode`] decides the port's mode from it and the rest.
    pub mode: Option<Mode>,
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`: the port whose health check stands for
    /// this one's (its mode, and the port switchyard probes).
    pub healthcheck_port_index: Option<usize>,
    pub port: Option<u16>,
    pub bind_addr: Option<IpAddr>,
    pub balance: Balance,
    pub enabled: Option<bool>,
    /// Virtual hosts, lowercase, without port; `*.example.com` for a wildcard.
    pub vhosts: Vec<String>,
    /// Path prefixes, with the vhosts.
    pub paths: Vec<String>,
    /// `HAPROXY_{n}_PATH` began with HAProxy's `-i`: the prefixes match without case.
    pub paths_ignore_case: bool,
    /// `HAPROXY_{n}_BACKEND_WEIGHT` (default 0, and 1 for a port with a path): the order in
    /// which vhost rules are tried, heaviest first.
    pub backend_weight: i64,
    pub redirect_to_https: bool,
    pub hsts: bool,
    pub sticky: bool,
    /// Source blocks allowed; empty: everyone.
    pub acl: Vec<Cidr>,
    /// `HAPROXY_{n}_AUTH`: requests need these credentials.
    pub auth: Option<Arc<BasicAuth>>,
    /// `HAPROXY_{n}_HTTP_BACKEND_PROXYPASS_PATH`, `_REVPROXY_PATH`, `_REDIR` (hosts empty:
    /// `compile` adds the vhosts).
    pub rewrite: Option<super::Rewrite>,
    /// Certificate files (PEM, chain and key) to serve on the HTTPS listeners.
    pub ssl_certs: Vec<String>,
    /// marathon-lb's blue-green set (app-wide labels).
    pub deployment: Deployment,
    /// `SWITCHYARD_{n}_WEIGHT`: this app's share of its route.
    pub weight: Option<u32>,
    /// `SWITCHYARD_{n}_CANARY_HEADER`: requests carrying this header (lowercase name, value)
    /// go to this app.
    pub canary_header: Option<(String, String)>,
    /// `SWITCHYARD_{n}_ROLLOUT`: a canary rollout plan with this app as the canary (a plan
    /// that cannot be read is a notice: no rollout starts from it).
    pub rollout: Option<Arc<super::rollout::Plan>>,
    /// `SWITCHYARD_{n}_UPSTREAM=h2c`: HTTP/2 (prior knowledge) to the backends.
    pub upstream_h2: bool,
    /// `SWITCHYARD_{n}_TCP_IDLE_TIMEOUT`: this port's `proxy.tcp_idle_timeout` (TCP mode).
    pub tcp_idle_timeout: Option<std::time::Duration>,
    /// Labels accepted but without effect, with why.
    pub notices: Vec<String>,
}

/// HAProxy template overrides: meaningful to marathon-lb's config generator only. Matched by
/// ending (`BACKEND_HEAD`, `HTTP_FRONTEND_ACL_WITH_PATH`, `BACKEND_STICKY_OPTIONS`, …).
const TEMPLATE_SUFFIXES: &[&str] = &[
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
const LATER: &[&str] = &[];

/// The per-port labels switchyard acts on (after `HAPROXY_{n}_`). Any other `HAPROXY_{n}_…` label
/// is reported: nothing marathon-lb reads is dropped silently.
const ACTED_ON: &[&str] = &[
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

/// marathon-lb templates whose job is to decide who gets in: the basic-auth ones
/// (`HTTP_FRONTEND_ACL_WITH_AUTH`, `HTTPS_FRONTEND_AUTH_REQUEST_ONLY`, `USERLIST_HEAD`, …) and the
/// network ACLs (`HTTP_BACKEND_NETWORK_ALLOWED_ACL`, `TCP_BACKEND_NETWORK_ALLOWED_ACL`). An app
/// that overrides one wants access decided some other way than switchyard decides it; serving the
/// port anyway could let in whom the override keeps out, so the port is not served.
fn restricts_access(rest: &str) -> bool {
    rest != "AUTH"
        && (rest.contains("AUTH")
            || rest == "USERLIST_HEAD"
            || (rest.ends_with("NETWORK_ALLOWED_ACL") && rest != "BACKEND_NETWORK_ALLOWED_ACL"))
}

/// App-wide `HAPROXY_…` labels switchyard reads (the per-port ones are `HAPROXY_{n}_…`).
const APP_WIDE: &[&str] = &[
    "HAPROXY_GROUP",
    "HAPROXY_DEPLOYMENT_GROUP",
    "HAPROXY_DEPLOYMENT_COLOUR",
    "HAPROXY_DEPLOYMENT_STARTED_AT",
    "HAPROXY_DEPLOYMENT_ALT_PORT",
    "HAPROXY_DEPLOYMENT_TARGET_INSTANCES",
];

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
fn unknown_restricting_label(labels: &BTreeMap<String, String>, n: usize) -> Option<String> {
    let own = format!("SWITCHYARD_{n}_");
    with_prefix(labels, "SWITCHYARD_")
        .into_iter()
        .find_map(|(rest, _)| {
            let key = format!("SWITCHYARD_{rest}");
            let unknown = match key.strip_prefix(own.as_str()) {
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

/// The port number of a `{n}_…` label rest, if it starts with one.
fn port_number(rest: &str) -> Option<usize> {
    let (n, _) = rest.split_once('_')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse().ok())?
}

/// `HAPROXY_…` labels of an app that no port reads: app-wide labels switchyard does not know, and
/// `HAPROXY_{n}_…` labels for a port the app does not have. Reported once per app.
pub fn app_notices(labels: &BTreeMap<String, String>, ports: usize) -> Vec<String> {
    with_prefix(labels, "HAPROXY_")
        .into_iter()
        .filter_map(|(rest, _)| {
            let key = format!("HAPROXY_{rest}");
            match rest.split_once('_') {
                Some((n, _)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    let beyond = n.parse::<usize>().map_or(true, |n| n >= ports);
                    beyond.then(|| format!("{key}: the app has no port {n}, ignored"))
                }
                _ if APP_WIDE.contains(&key.as_str()) => None,
                _ => Some(format!("{key}: not acted on by switchyard, ignored")),
            }
        })
        .chain(
            with_prefix(labels, "SWITCHYARD_")
                .into_iter()
                .filter_map(|(rest, _)| {
                    let key = format!("SWITCHYARD_{rest}");
                    match port_number(rest) {
                        Some(n) if n >= ports => {
                            Some(format!("{key}: the app has no port {n}, ignored"))
                        }
                        Some(_) => None,
                        None if APP_WIDE_SWITCHYARD.contains(&key.as_str()) => None,
                        // Restricting ones skip every port (`read`); said there, not twice.
                        None if sounds_restricting(&key) && ports > 0 => None,
                        None => Some(format!(
                            "{key}: not a label switchyard knows (misspelt?), ignored"
                        )),
                    }
                }),
        )
        .collect()
}

/// The labels whose keys start with `prefix`, as (rest of the key, value), in key order.
fn with_prefix<'a>(labels: &'a BTreeMap<String, String>, prefix: &str) -> Vec<(&'a str, &'a str)> {
    use std::ops::Bound;
    labels
        .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (&k[prefix.len()..], v.as_str()))
        .collect()
}

pub fn read(labels: &BTreeMap<String, String>, n: usize) -> Result<PortLabels, String> {
    let prefix = format!("HAPROXY_{n}_");
    // This port's labels in one ordered range, then looked up by suffix: no key built per
    // lookup (compile reads some twenty per port, for every app, on every swap).
    let port_labels = with_prefix(labels, &prefix);
    let get = |key: &str| {
        port_labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim())
    };

    let groups = get("GROUP")
        .or_else(|| labels.get("HAPROXY_GROUP").map(|v| v.trim()))
        .map(|v| {
            v.split(',')
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .collect::<Vec<_>>()
        });
    let mode = match get("MODE").map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("tcp") => Some(Mode::Tcp),
        Some("http") => Some(Mode::Http),
        Some(other) => return Err(format!("{prefix}MODE={other:?}: expected tcp or http")),
    };
    let port = get("PORT")
        .map(|v| v.parse::<u16>().ok().filter(|&p| p != 0))
        .map(|p| p.ok_or_else(|| format!("{prefix}PORT: not a port number")))
        .transpose()?;
    let bind_addr = get("BIND_ADDR")
        .map(|v| {
            v.parse::<IpAddr>()
                .map_err(|_| format!("{prefix}BIND_ADDR={v:?}: not an IP"))
        })
        .transpose()?;
    let mut notices = Vec::new();
    // marathon-lb: `x.healthcheck_port_index = int(v)`; a value that is not a number is an
    // error there too. A negative index names no port's check: noted, ignored.
    let healthcheck_port_index = match get("BACKEND_HEALTHCHECK_PORT_INDEX") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(i) if i >= 0 => Some(usize::try_from(i).unwrap_or(usize::MAX)),
            Ok(_) => {
                notices.push(format!(
                    "{prefix}BACKEND_HEALTHCHECK_PORT_INDEX={v:?}: a negative index names no \
                     port, ignored"
                ));
                None
            }
            Err(_) => {
                return Err(format!(
                    "{prefix}BACKEND_HEALTHCHECK_PORT_INDEX={v:?}: expected a port index"
                ));
            }
        },
    };
    let balance = match get("BALANCE").map(str::to_ascii_lowercase).as_deref() {
        None | Some("roundrobin") => Balance::RoundRobin,
        Some("leastconn") => Balance::LeastConn,
        Some("source") => Balance::Source,
        // An algorithm switchyard cannot do (`uri`, `hdr(host)`, `first`, a typo) is not a
        // reason to stop serving the port: round robin, and a notice naming the label.
        Some(other) => {
            notices.push(format!(
                "{prefix}BALANCE={other:?}: not supported, using roundrobin"
            ));
            Balance::RoundRobin
        }
    };
    let enabled = get("ENABLED")
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(format!("{prefix}ENABLED={v:?}: expected true or false")),
        })
        .transpose()?;
    let flag = |key: &str| -> Result<bool, String> {
        match get(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no") => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some(other) => Err(format!("{prefix}{key}={other:?}: expected true or false")),
        }
    };
    let mut vhosts = Vec::new();
    for host in get("VHOST")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        let host = normalize_host(host)
            .ok_or_else(|| format!("{prefix}VHOST: {host:?} is not a host name"))?;
        vhosts.push(host);
    }
    // marathon-lb pastes the label after HAProxy's `path_beg`, so it may start with ACL flags:
    // `-i` (ignore case) and `--` (end of flags) are honoured; any other flag (`-f` file,
    // `-m` match method, …) would change what matches, so the port is not served.
    let mut path_words = get("PATH").unwrap_or("").split_whitespace().peekable();
    let mut paths_ignore_case = false;
    while let Some(flag) = path_words.next_if(|w| w.starts_with('-')) {
        match flag {
            "-i" => paths_ignore_case = true,
            "--" => break,
            other => {
                return Err(format!(
                    "{prefix}PATH: HAProxy flag {other:?} is not supported (only -i and --)"
                ));
            }
        }
    }
    let paths: Vec<String> = path_words
        .map(|p| {
            if p.starts_with('/') {
                p.to_string()
            } else {
                format!("/{p}")
            }
        })
        .collect();
    // config.py, set_path: "if x.backend_weight == 0: x.backend_weight = 1"
    let backend_weight = match get("BACKEND_WEIGHT") {
        None => 0,
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| format!("{prefix}BACKEND_WEIGHT={v:?}: expected a whole number"))?,
    };
    let backend_weight = if backend_weight == 0 && !paths.is_empty() {
        1
    } else {
        backend_weight
    };
    if !paths.is_empty() && vhosts.is_empty() {
        notices.push(format!("{prefix}PATH without {prefix}VHOST: ignored"));
    }
    let acl = get("BACKEND_NETWORK_ALLOWED_ACL")
        .unwrap_or("")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|c| !c.is_empty())
        .map(|c| Cidr::parse(c).map_err(|e| format!("{prefix}BACKEND_NETWORK_ALLOWED_ACL: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let auth = get("AUTH")
        .map(|v| {
            BasicAuth::parse(v)
                .map(Arc::new)
                .map_err(|e| format!("{prefix}AUTH: {e}; the port is not served"))
        })
        .transpose()?;
    // Paths (and the redirect's location) go into request lines and header values: no
    // whitespace or control characters.
    let rewrite_label = |key: &str| -> Result<Option<String>, String> {
        match get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if v.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(v.to_string())),
            Some(v) => Err(format!("{prefix}{key}={v:?}: not a path")),
        }
    };
    let rewrite = super::Rewrite {
        proxy_path: rewrite_label("HTTP_BACKEND_PROXYPASS_PATH")?,
        revproxy_path: rewrite_label("HTTP_BACKEND_REVPROXY_PATH")?,
        redirect_root: rewrite_label("HTTP_BACKEND_REDIR")?,
        hosts: Vec::new(),
    };
    let rewrite = (rewrite != super::Rewrite::default()).then_some(rewrite);
    let ssl_certs: Vec<String> = get("SSL_CERT")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(relative) = ssl_certs.iter().find(|p| !p.starts_with('/')) {
        return Err(format!(
            "{prefix}SSL_CERT: {relative:?} is not an absolute path"
        ));
    }
    let app_label = |key: &str| labels.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    let number = |key: &str| -> Result<Option<u32>, String> {
        app_label(key)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("{key}={v:?}: expected a number"))
            })
            .transpose()
    };
    let deployment = Deployment {
        group: app_label("HAPROXY_DEPLOYMENT_GROUP").map(str::to_string),
        colour: app_label("HAPROXY_DEPLOYMENT_COLOUR").map(str::to_string),
        started_at: app_label("HAPROXY_DEPLOYMENT_STARTED_AT").map(str::to_string),
        alt_port: number("HAPROXY_DEPLOYMENT_ALT_PORT")?
            .map(|p| u16::try_from(p).ok().filter(|&p| p != 0))
            .map(|p| p.ok_or("HAPROXY_DEPLOYMENT_ALT_PORT: not a port number"))
            .transpose()?,
        target_instances: number("HAPROXY_DEPLOYMENT_TARGET_INSTANCES")?,
    };
    if let Some(reason) = unknown_restricting_label(labels, n) {
        return Err(reason);
    }
    let own = format!("SWITCHYARD_{n}_");
    let own_labels = with_prefix(labels, &own);
    for &(rest, _) in &own_labels {
        if !is_switchyard_port_label(rest) {
            notices.push(format!(
                "{own}{rest}: not a label switchyard knows (misspelt?), ignored"
            ));
        }
    }
    let own_get = |key: &str| own_labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let weight = own_get("WEIGHT")
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{own}WEIGHT={v:?}: expected a number"))
        })
        .transpose()?;
    let canary_header = own_get("CANARY_HEADER")
        .map(|v| {
            let (name, value) = v
                .split_once(':')
                .ok_or_else(|| format!("{own}CANARY_HEADER={v:?}: expected \"Name: value\""))?;
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("{own}CANARY_HEADER: {name:?} is not a header name"));
            }
            Ok((name, value.trim().to_string()))
        })
        .transpose()?;
    let rollout = match own_get("ROLLOUT").map(super::rollout::Plan::parse) {
        None => None,
        Some(Ok(plan)) => Some(Arc::new(plan)),
        Some(Err(e)) => {
            notices.push(format!("{own}ROLLOUT: {e}; no rollout is started from it"));
            None
        }
    };
    let upstream_h2 = match own_get("UPSTREAM")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("http/1.1" | "h1") => false,
        Some("h2c" | "h2") => true,
        Some(other) => return Err(format!("{own}UPSTREAM={other:?}: expected h1 or h2c")),
    };
    // A bad timeout is not a reason to stop serving the port: the default, and a notice.
    let tcp_idle_timeout = own_get("TCP_IDLE_TIMEOUT").and_then(|v| match duration(v) {
        Some(d) => Some(d),
        None => {
            notices.push(format!(
                "{own}TCP_IDLE_TIMEOUT={v:?}: expected a duration above zero such as \"30s\", \
                 \"5m\" or \"1h\"; using proxy.tcp_idle_timeout"
            ));
            None
        }
    });
    let (redirect_to_https, hsts, sticky) = (
        flag("REDIRECT_TO_HTTPS")?,
        flag("USE_HSTS")?,
        flag("STICKY")?,
    );
    for &(rest, _) in &port_labels {
        let key = format_args!("{prefix}{rest}");
        if restricts_access(rest) {
            return Err(format!(
                "{key}: an HAProxy template that decides access, which switchyard cannot apply; \
                 the port is not served (remove the override to use switchyard's own checks)"
            ));
        }
        if ACTED_ON.contains(&rest) {
            continue;
        }
        let why = if TEMPLATE_SUFFIXES.iter().any(|s| rest.ends_with(s)) {
            "HAProxy template override"
        } else if LATER.contains(&rest) {
            "not supported yet"
        } else {
            "not acted on by switchyard"
        };
        notices.push(format!("{key}: {why}, ignored"));
    }
    Ok(PortLabels {
        groups,
        mode,
        healthcheck_port_index,
        port,
        bind_addr,
        balance,
        enabled,
        vhosts,
        paths,
        paths_ignore_case,
        backend_weight,
        redirect_to_https,
        hsts,
        sticky,
        acl,
        auth,
        rewrite,
        ssl_certs,
        deployment,
        weight,
        canary_header,
        rollout,
        upstream_h2,
        tcp_idle_timeout,
        notices,
    })
}

/// A duration label: whole numbers with units `ms`, `s`, `m`, `h`, one or more (`1m30s`), as in
/// the config file; `None` for anything else, zero included.
pub(super) fn duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.trim();
    let mut total = std::time::Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        total += std::time::Duration::from_millis(value.checked_mul(ms)?);
        rest = &rest[unit..];
    }
    (!total.is_zero()).then_some(total)
}

/// The mode of app port `n`, as marathon-lb decides it: `HAPROXY_{n}_MODE` when set; else
/// `http` when the port has a vhost, or when the app's health check for the port is `HTTP`, or
/// (the port having no check) when the check of `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`
/// is HTTP(S); else `tcp`. The lines of marathon_lb.py this follows are quoted in the tests.
pub fn mode(labels: &PortLabels, checks: &[CheckSpec], n: usize) -> Mode {
    if let Some(mode) = labels.mode {
        return mode;
    }
    if !labels.vhosts.is_empty() {
        return Mode::Http;
    }
    match health_check(checks, n) {
        Some(own) if own.protocol == "HTTP" => Mode::Http,
        Some(_) => Mode::Tcp,
        None => {
            let other = labels
                .healthcheck_port_index
                .and_then(|i| health_check(checks, i));
            match other.map(|c| c.protocol.as_str()) {
                Some("HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS") => Mode::Http,
                _ => Mode::Tcp,
            }
        }
    }
}

/// marathon-lb's `get_health_check(app, portIndex)`: the first check that names a port number,
/// or whose `portIndex` is `n`.
pub fn health_check(checks: &[CheckSpec], n: usize) -> Option<&CheckSpec> {
    checks.iter().find(|c| c.has_port || c.port_index == n)
}

/// A Host as routing compares it: lowercase, no port, no trailing dot. `None` when it cannot be
/// a host name (wildcards keep their leading `*.`).
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    valid.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let l = read(&labels(&[]), 0).unwrap();
        assert_eq!(l.groups, None);
        assert_eq!(l.mode, None);
        assert_eq!(mode(&l, &[], 0), Mode::Tcp);
        assert_eq!(l.balance, Balance::RoundRobin);
        assert!(l.notices.is_empty());
    }

    #[test]
    fn per_port_overrides_app_wide() {
        let l = labels(&[
            ("HAPROXY_GROUP", "external,internal"),
            ("HAPROXY_1_GROUP", "internal"),
            ("HAPROXY_1_MODE", "HTTP"),
            ("HAPROXY_1_PORT", "8080"),
            ("HAPROXY_1_BIND_ADDR", "127.0.0.2"),
            ("HAPROXY_1_BALANCE", "leastconn"),
        ]);
        let p0 = read(&l, 0).unwrap();
        assert_eq!(p0.groups, Some(vec!["external".into(), "internal".into()]));
        let p1 = read(&l, 1).unwrap();
        assert_eq!(p1.groups, Some(vec!["internal".into()]));
        assert_eq!(p1.mode, Some(Mode::Http));
        assert_eq!(p1.port, Some(8080));
        assert_eq!(p1.bind_addr, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(p1.balance, Balance::LeastConn);
    }

    #[test]
    fn unparseable_values_are_errors_naming_the_label() {
        for (k, v) in [
            ("HAPROXY_0_MODE", "udp"),
            ("HAPROXY_0_PORT", "70000"),
            ("HAPROXY_0_BIND_ADDR", "localhost"),
            ("HAPROXY_0_ENABLED", "maybe"),
            ("HAPROXY_0_STICKY", "sometimes"),
        ] {
            let err = read(&labels(&[(k, v)]), 0).unwrap_err();
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn templates_and_later_labels_are_noticed() {
        let l = labels(&[
            ("HAPROXY_0_BACKEND_HEAD", "x"),
            ("HAPROXY_0_SSL_CERT", "/etc/ssl/a.pem,/etc/ssl/b.pem"),
            ("HAPROXY_0_BALANCE", "uri"),
        ]);
        let p = read(&l, 0).unwrap();
        assert_eq!(p.notices.len(), 2, "{:?}", p.notices);
        assert_eq!(p.ssl_certs, vec!["/etc/ssl/a.pem", "/etc/ssl/b.pem"]);
        for unsupported in ["hdr(host)", "fastest", "rdp-cookie"] {
            let p = read(&labels(&[("HAPROXY_0_BALANCE", unsupported)]), 0).unwrap();
            assert_eq!(p.balance, Balance::RoundRobin);
            assert!(
                p.notices[0].contains("HAPROXY_0_BALANCE"),
                "{:?}",
                p.notices
            );
        }
    }

    #[test]
    fn unknown_switchyard_labels_are_reported_and_restricting_ones_close_the_port() {
        // A misspelt label that changes nothing about access: noticed, the port served.
        let p = read(&labels(&[("SWITCHYARD_0_WIEGHT", "10")]), 0).unwrap();
        assert!(
            p.notices
                .iter()
                .any(|n| n.contains("SWITCHYARD_0_WIEGHT") && n.contains("misspelt")),
            "{:?}",
            p.notices
        );
        // Every label some reader reads is known: no notice.
        for known in [
            "WEIGHT",
            "ROLLOUT",
            "RATE_LIMIT",
            "CLIENT_CA",
            "BACKEND_TLS_KEY",
            "REQUEST_HEADER_SET_X_A",
        ] {
            let key = format!("SWITCHYARD_0_{known}");
            assert!(is_switchyard_port_label(known), "{key}");
            if let Ok(p) = read(&labels(&[(key.as_str(), "1")]), 0) {
                assert!(
                    p.notices
                        .iter()
                        .all(|n| !n.contains("not a label switchyard knows")),
                    "{:?}",
                    p.notices
                );
            }
        }
        // A misspelt access rule, on the port or for the whole app: the port is not served.
        for key in [
            "SWITCHYARD_0_CLIENT_CERT_CA",
            "SWITCHYARD_0_ALLOW_CIDR",
            "SWITCHYARD_AUTH",
        ] {
            let err = read(&labels(&[(key, "x")]), 0).unwrap_err();
            assert!(err.contains(key) && err.contains("not served"), "{err}");
        }
        // Another port's labels are that port's business.
        let l = labels(&[("SWITCHYARD_1_ALLOW_CIDR", "10.0.0.0/8")]);
        assert!(read(&l, 0).is_ok());
        assert!(read(&l, 1).is_err());
        // App-wide: a label for a port the app lacks, an unknown one; known ones are quiet.
        let l = labels(&[
            ("SWITCHYARD_3_WEIGHT", "1"),
            ("SWITCHYARD_COLOR", "blue"),
            ("SWITCHYARD_DNS_HEALTHY_ONLY", "true"),
            ("SWITCHYARD_0_WEIGHT", "1"),
        ]);
        let notices = app_notices(&l, 1);
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(notices[0].contains("SWITCHYARD_3_WEIGHT") && notices[0].contains("no port 3"));
        assert!(notices[1].contains("SWITCHYARD_COLOR"));
    }

    #[test]
    fn tcp_idle_timeout_label_and_a_bad_one_noticed_with_the_default() {
        let p = read(&labels(&[("SWITCHYARD_0_TCP_IDLE_TIMEOUT", "1m30s")]), 0).unwrap();
        assert_eq!(p.tcp_idle_timeout, Some(std::time::Duration::from_secs(90)));
        assert!(p.notices.is_empty(), "{:?}", p.notices);
        assert_eq!(read(&labels(&[]), 0).unwrap().tcp_idle_timeout, None);
        for bad in ["30", "0s", "soon", "-5s", ""] {
            let p = read(&labels(&[("SWITCHYARD_0_TCP_IDLE_TIMEOUT", bad)]), 0).unwrap();
            assert_eq!(p.tcp_idle_timeout, None, "{bad:?}");
            assert!(
                p.notices.len() == 1 && p.notices[0].contains("SWITCHYARD_0_TCP_IDLE_TIMEOUT"),
                "{bad:?}: {:?}",
                p.notices
            );
        }
    }

    #[test]
    fn deployment_and_canary_labels() {
        let l = labels(&[
            ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
            ("HAPROXY_DEPLOYMENT_COLOUR", "green"),
            ("HAPROXY_DEPLOYMENT_ALT_PORT", "10101"),
            ("HAPROXY_DEPLOYMENT_TARGET_INSTANCES", "3"),
            ("SWITCHYARD_0_WEIGHT", "10"),
            ("SWITCHYARD_0_CANARY_HEADER", "X-Canary: on"),
        ]);
        let p = read(&l, 0).unwrap();
        assert_eq!(p.deployment.group.as_deref(), Some("shop"));
        assert_eq!(p.deployment.alt_port, Some(10101));
        assert_eq!(p.deployment.target_instances, Some(3));
        assert_eq!(p.weight, Some(10));
        assert_eq!(p.canary_header, Some(("x-canary".into(), "on".into())));
        assert_eq!(read(&l, 1).unwrap().weight, None, "weights are per port");
        for (k, v) in [
            ("SWITCHYARD_0_WEIGHT", "-1"),
            ("SWITCHYARD_0_CANARY_HEADER", "nocolon"),
            ("HAPROXY_DEPLOYMENT_ALT_PORT", "0"),
        ] {
            assert!(read(&labels(&[(k, v)]), 0).unwrap_err().contains(k));
        }
    }

    #[test]
    fn vhost_labels() {
        let l = labels(&[
            (
                "HAPROXY_0_VHOST",
                "Shop.Example.com:8080, *.apps.example.com,api.example.com.",
            ),
            ("HAPROXY_0_PATH", "/api v2"),
            ("HAPROXY_0_REDIRECT_TO_HTTPS", "true"),
            ("HAPROXY_0_USE_HSTS", "true"),
            ("HAPROXY_0_STICKY", "true"),
            (
                "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL",
                "10.0.0.0/8 192.168.1.1",
            ),
        ]);
        let p = read(&l, 0).unwrap();
        assert_eq!(
            p.vhosts,
            vec!["shop.example.com", "*.apps.example.com", "api.example.com"]
        );
        assert_eq!(p.paths, vec!["/api", "/v2"]);
        assert!(p.redirect_to_https && p.hsts && p.sticky);
        assert_eq!(p.acl.len(), 2);
        let bad = labels(&[("HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL", "10.0.0.0/99")]);
        assert!(read(&bad, 0).unwrap_err().contains("ACL"));
        let bad = labels(&[("HAPROXY_0_VHOST", "a b")]);
        assert!(read(&bad, 0).unwrap_err().contains("VHOST"));
    }
}
