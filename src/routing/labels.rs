//! marathon-lb's app labels, read for one service port. Only `compile` calls this. Which label
//! names exist, and what an unknown one means, is `known_labels`.
//!
//! A label switchyard understands but whose value it cannot parse makes the port `Err` (skipped,
//! reported); a label switchyard knows but does not act on yet is returned as a notice.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::auth::BasicAuth;
use super::cidr::Cidr;
use super::known_labels::{
    AppWide, LATER, PortKeys, TEMPLATE_SUFFIXES, acted_on_slot, is_switchyard_port_label,
    restricts_access, unknown_restricting_label,
};
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

/// One port's labels read, borrowing from the app's labels where a value is kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLabels<'a> {
    /// `None`: the app has no group label; else its value, read by [`groups`] (kept as written:
    /// a list made for every port was an allocation per port).
    pub groups: Option<&'a str>,
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

/// Port `n`'s labels of an app (its labels `labels`).
#[cfg(test)]
pub fn read(labels: &BTreeMap<String, String>, n: usize) -> Result<PortLabels<'_>, String> {
    read_keys(&PortKeys::of(labels, n), labels, n)
}

/// Port `n`'s labels, gathered (`keys`) from the app's labels (`labels`).
pub fn read_keys<'a>(
    keys: &PortKeys<'a>,
    labels: &BTreeMap<String, String>,
    n: usize,
) -> Result<PortLabels<'a>, String> {
    let prefix = super::known_labels::haproxy_prefix(n);
    // This port's labels were placed by name as they were gathered (a slot per label acted on)
    // and are read by slot: no key compared per lookup (compile reads some twenty per port, for
    // every app, on every swap). The labels not acted on are reported at the end.
    let slots = &keys.acted_on;
    // `get!("MODE")`: the value of `HAPROXY_{n}_MODE`, trimmed; the name is checked against
    // `ACTED_ON` when this compiles.
    macro_rules! get {
        ($key:literal) => {
            slots[const { acted_on_slot($key) }].map(str::trim)
        };
    }
    let app_wide = |name: AppWide| keys.app_wide_at(name);

    let groups = get!("GROUP").or_else(|| app_wide(AppWide::Group).map(str::trim));
    // Compared without case, not lowercased into a new string (read for every port).
    let mode = match get!("MODE") {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("tcp") => Some(Mode::Tcp),
        Some(v) if v.eq_ignore_ascii_case("http") => Some(Mode::Http),
        Some(other) => {
            let other = other.to_ascii_lowercase();
            return Err(format!("{prefix}MODE={other:?}: expected tcp or http"));
        }
    };
    let port = get!("PORT")
        .map(|v| v.parse::<u16>().ok().filter(|&p| p != 0))
        .map(|p| p.ok_or_else(|| format!("{prefix}PORT: not a port number")))
        .transpose()?;
    let bind_addr = get!("BIND_ADDR")
        .map(|v| {
            v.parse::<IpAddr>()
                .map_err(|_| format!("{prefix}BIND_ADDR={v:?}: not an IP"))
        })
        .transpose()?;
    let mut notices = Vec::new();
    // marathon-lb: `x.healthcheck_port_index = int(v)`; a value that is not a number is an
    // error there too. A negative index names no port's check: noted, ignored.
    let healthcheck_port_index = match get!("BACKEND_HEALTHCHECK_PORT_INDEX") {
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
    let balance = match get!("BALANCE").map(str::to_ascii_lowercase).as_deref() {
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
    let enabled = get!("ENABLED")
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(format!("{prefix}ENABLED={v:?}: expected true or false")),
        })
        .transpose()?;
    let flag = |value: Option<&str>, key: &str| -> Result<bool, String> {
        match value.map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no") => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some(other) => Err(format!("{prefix}{key}={other:?}: expected true or false")),
        }
    };
    let mut vhosts = Vec::new();
    // Absent (most ports): nothing split.
    for host in get!("VHOST")
        .into_iter()
        .flat_map(|v| v.split(','))
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
    let mut path_words = get!("PATH").unwrap_or("").split_whitespace().peekable();
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
    let backend_weight = match get!("BACKEND_WEIGHT") {
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
    let acl = get!("BACKEND_NETWORK_ALLOWED_ACL")
        .into_iter()
        .flat_map(|v| v.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|c| !c.is_empty())
        .map(|c| Cidr::parse(c).map_err(|e| format!("{prefix}BACKEND_NETWORK_ALLOWED_ACL: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let auth = get!("AUTH")
        .map(|v| {
            BasicAuth::parse(v)
                .map(Arc::new)
                .map_err(|e| format!("{prefix}AUTH: {e}; the port is not served"))
        })
        .transpose()?;
    // Paths (and the redirect's location) go into request lines and header values: no
    // whitespace or control characters.
    let rewrite_label = |value: Option<&str>, key: &str| -> Result<Option<String>, String> {
        match value.filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if v.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(v.to_string())),
            Some(v) => Err(format!("{prefix}{key}={v:?}: not a path")),
        }
    };
    let rewrites = [
        get!("HTTP_BACKEND_PROXYPASS_PATH"),
        get!("HTTP_BACKEND_REVPROXY_PATH"),
        get!("HTTP_BACKEND_REDIR"),
    ];
    // None of the three (most ports): no rewrite made, compared and dropped.
    let rewrite = if rewrites.iter().all(Option::is_none) {
        None
    } else {
        let [proxy, revproxy, redirect] = rewrites;
        let rewrite = super::Rewrite {
            proxy_path: rewrite_label(proxy, "HTTP_BACKEND_PROXYPASS_PATH")?,
            revproxy_path: rewrite_label(revproxy, "HTTP_BACKEND_REVPROXY_PATH")?,
            redirect_root: rewrite_label(redirect, "HTTP_BACKEND_REDIR")?,
            hosts: Vec::new(),
        };
        (rewrite != super::Rewrite::default()).then_some(rewrite)
    };
    let ssl_certs: Vec<String> = get!("SSL_CERT")
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(relative) = ssl_certs.iter().find(|p| !p.starts_with('/')) {
        return Err(format!(
            "{prefix}SSL_CERT: {relative:?} is not an absolute path"
        ));
    }
    let app_label = |name: AppWide| app_wide(name).map(str::trim).filter(|v| !v.is_empty());
    let number = |name: AppWide| -> Result<Option<u32>, String> {
        app_label(name)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("{}={v:?}: expected a number", name.label()))
            })
            .transpose()
    };
    let deployment = Deployment {
        group: app_label(AppWide::DeploymentGroup).map(str::to_string),
        colour: app_label(AppWide::DeploymentColour).map(str::to_string),
        started_at: app_label(AppWide::DeploymentStartedAt).map(str::to_string),
        alt_port: number(AppWide::DeploymentAltPort)?
            .map(|p| u16::try_from(p).ok().filter(|&p| p != 0))
            .map(|p| p.ok_or("HAPROXY_DEPLOYMENT_ALT_PORT: not a port number"))
            .transpose()?,
        target_instances: number(AppWide::DeploymentTargetInstances)?,
    };
    // Most apps have no `SWITCHYARD_…` label: nothing to look for.
    if keys.any_switchyard
        && let Some(reason) = unknown_restricting_label(labels, n)
    {
        return Err(reason);
    }
    let own = super::known_labels::switchyard_prefix(n);
    let own_labels = &keys.own;
    for &(rest, _) in own_labels {
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
        flag(get!("REDIRECT_TO_HTTPS"), "REDIRECT_TO_HTTPS")?,
        flag(get!("USE_HSTS"), "USE_HSTS")?,
        flag(get!("STICKY"), "STICKY")?,
    );
    // The labels acted on (nearly all a port has) are not among these: none of them restricts
    // access (`AUTH` and `BACKEND_NETWORK_ALLOWED_ACL` are applied; `known_labels` tests it).
    for &(rest, _) in &keys.others {
        let key = format_args!("{prefix}{rest}");
        if restricts_access(rest) {
            return Err(format!(
                "{key}: an HAProxy template that decides access, which switchyard cannot apply; \
                 the port is not served (remove the override to use switchyard's own checks)"
            ));
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

/// The groups a group label names (`HAPROXY_GROUP`, `HAPROXY_{n}_GROUP`): comma-separated,
/// trimmed, empty ones left out.
pub fn groups(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|g| !g.is_empty())
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
#[path = "labels_tests.rs"]
mod tests;
