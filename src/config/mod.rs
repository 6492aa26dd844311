//! The TOML configuration file: types, defaults and validation.
//!
//! Every key has a default except the discovery source (`discovery.file` or `discovery.marathon`),
//! which must be named. Unknown keys are errors: a typo must not silently fall back to a default.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::cluster::names::LabelRule;
use crate::routing::Balance;
use crate::routing::cidr::Cidr;
use crate::routing::vip::{VipRange, VipSettings};
use crate::zone::{IpSource, ZoneConfig};

mod dns;
mod files;
mod operations;
mod proxy;
pub use files::read_limited;
mod settings;
mod validate;

pub use dns::{Dns, Rrl};
pub use files::{read_service_account, read_token};
pub use operations::{Admin, BackendSeries, HealthChecks, Log, LogFormat, Relay, Rollout, Runtime};
pub use proxy::{Http, Https, Proxy, Vip};

/// The configuration shipped inside the binary, used by `switchyard demo` and when no `--config`
/// is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/switchyard.toml");

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub discovery: Discovery,
    pub proxy: Proxy,
    pub http: Http,
    pub https: Https,
    pub dns: Dns,
    pub vip: Vip,
    pub health_checks: HealthChecks,
    pub admin: Admin,
    pub relay: Relay,
    pub runtime: Runtime,
    pub rollout: Rollout,
    pub log: Log,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// A JSON file in Marathon's `/v2/apps?embed=apps.tasks` shape, watched for changes.
    pub file: Option<PathBuf>,
    /// Marathon base URLs, tried in turn.
    pub marathon: Vec<String>,
    /// `user:password` for HTTP basic auth against Marathon.
    pub basic_auth: Option<String>,
    /// A file holding a bearer token (DC/OS ACS token) sent to Marathon.
    pub token_file: Option<PathBuf>,
    /// A DC/OS service-account credential (JSON: `uid`, `private_key`, `login_endpoint`):
    /// switchyard logs in with it and sends the session token to Marathon and Mesos.
    pub service_account_file: Option<PathBuf>,
    /// The IAM login endpoint when the credential names none.
    pub login_endpoint: Option<String>,
    /// PEM bundle of the CAs that sign Marathon's and the Mesos masters' (and the login
    /// endpoint's) certificates: needed for `https://` URLs; verification is always on.
    pub ca_file: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    pub resync_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub debounce: Duration,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub stream_idle_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub backoff_initial: Duration,
    #[serde(deserialize_with = "duration")]
    pub backoff_max: Duration,
    /// After an event stream that was up ends (a Marathon leader change), the reconnect and
    /// its full snapshot wait a random time up to this long, so that a thousand instances do
    /// not ask the new leader at once; the last table is served meanwhile. "0s": reconnect at
    /// once (the backoff's own jitter only).
    #[serde(deserialize_with = "duration")]
    pub resync_jitter: Duration,
    /// A full read of Marathon that would remove every app, or more than this share of them
    /// (0 – 1), is held until a second read `removal_confirm_delay` later says the same (a
    /// leader that answers `{"apps": []}` just after a failover).
    pub max_removal_fraction: f64,
    /// How long a held read waits for its confirming read (at most 60s); "0s": no guard.
    #[serde(deserialize_with = "duration")]
    pub removal_confirm_delay: Duration,
    pub max_event_bytes: usize,
    pub max_snapshot_bytes: usize,
    #[serde(deserialize_with = "duration")]
    pub file_poll_interval: Duration,
    /// The Mesos master as a source (`[discovery.mesos]`), beside Marathon or alone.
    pub mesos: MesosDiscovery,
}

/// `[discovery.mesos]`: the operator API's event stream of the leading master. Timeouts,
/// backoff and authorization are `[discovery]`'s.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MesosDiscovery {
    /// Masters (`host:port` or `http://host:port`), tried in turn; a non-leader's redirect is
    /// followed. Empty: no Mesos source.
    pub masters: Vec<String>,
    /// Added to the heartbeat interval the master announces before its silence counts as a
    /// dead stream.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_slack: Duration,
    /// Largest event record after the snapshot; larger ones are skipped, counted and listed.
    pub max_record_bytes: usize,
    /// Largest snapshot (`SUBSCRIBED`) record.
    pub max_snapshot_bytes: usize,
}

impl Default for MesosDiscovery {
    fn default() -> Self {
        MesosDiscovery {
            masters: Vec::new(),
            heartbeat_slack: Duration::from_secs(5),
            max_record_bytes: 1 << 20,
            max_snapshot_bytes: 256 << 20,
        }
    }
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            file: None,
            marathon: Vec::new(),
            basic_auth: None,
            token_file: None,
            service_account_file: None,
            login_endpoint: None,
            ca_file: None,
            resync_interval: Duration::from_secs(300),
            debounce: Duration::from_millis(10),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(90),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            resync_jitter: Duration::from_secs(2),
            max_removal_fraction: 0.5,
            removal_confirm_delay: Duration::from_secs(5),
            max_event_bytes: 1 << 20,
            max_snapshot_bytes: 256 << 20,
            file_poll_interval: Duration::from_millis(250),
            mesos: MesosDiscovery::default(),
        }
    }
}

impl Config {
    /// Parses and validates a configuration. Relative paths are resolved against `base` (the
    /// configuration file's directory), never against the working directory: a configuration
    /// means the same wherever the process starts (in a Mesos sandbox, under systemd).
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(file) = &config.discovery.file
            && file.is_relative()
        {
            config.discovery.file = Some(base.join(file));
        }
        for path in [
            &mut config.https.certs,
            &mut config.https.default_cert,
            &mut config.admin.token_file,
            &mut config.relay.token_file,
            &mut config.relay.tls_cert,
            &mut config.runtime.upgrade_socket,
            &mut config.rollout.state_dir,
            &mut config.http.error_page_502,
            &mut config.http.error_page_503,
            &mut config.http.error_page_504,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        for path in [
            &mut config.discovery.token_file,
            &mut config.discovery.service_account_file,
            &mut config.discovery.ca_file,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        config.validate()?;
        config.http.error_pages = config.http.read_error_pages()?;
        Ok(config)
    }

    /// Reads a configuration file; relative paths inside it are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let base = absolute(path.parent().unwrap_or(Path::new("")));
        Config::parse(&text, &base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The embedded default. It is `config/switchyard.toml`, so its relative paths resolve as
    /// that file's do when read from the working directory: from `./config/` (its `apps.json`
    /// is `./config/apps.json`, with or without `--config config/switchyard.toml`).
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_DEFAULT, &absolute(Path::new("config")))
            .expect("embedded default config is valid")
    }

    /// Ports that switchyard itself listens on; a service port that asks for one is refused.
    pub fn reserved_ports(&self) -> Vec<SocketAddr> {
        let mut ports = vec![self.admin.listen];
        ports.extend(self.http.listen.iter().copied());
        ports.extend(self.http.app_id_listen);
        ports.extend(self.https.listen.iter().copied());
        ports.extend(self.dns.listen);
        ports.extend(self.relay.listen);
        ports
    }

    pub fn worker_threads(&self) -> usize {
        match self.runtime.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// `dir` made absolute against the working directory at start, so that every message names
/// the path that was really looked at.
fn absolute(dir: &Path) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Parses `250ms`, `5s`, `5m`, `1h`, or a combination such as `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {text:?}: expected a number"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A string, or a list of them.
fn one_or_more<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMore {
        One(String),
        More(Vec<String>),
    }
    Ok(match OneOrMore::deserialize(d)? {
        OneOrMore::One(one) => vec![one],
        OneOrMore::More(more) => more,
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests;
