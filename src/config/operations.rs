//! `[admin]`, `[relay]`, `[runtime]`, `[rollout]`, `[health_checks]` and `[log]`: how the
//! process is run and operated (its API, the relay tier, threads and upgrades, canary rollouts,
//! active health checks, logging) and their defaults.

use super::*;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    pub listen: SocketAddr,
    /// A file holding the bearer token the admin API requires: for everything but `/healthz`
    /// and `/readyz` when listening beyond loopback, and always for changes (weights).
    pub token_file: Option<PathBuf>,
    /// How long a dashboard login (`POST /v1/login`: the token exchanged for a session cookie)
    /// lasts.
    #[serde(deserialize_with = "duration")]
    pub session_ttl: Duration,
    /// On a loopback `listen`, reads are open to every local client; `false` asks the token (or
    /// a session) of them too, as beyond loopback (a shared host; the tests of the login).
    pub loopback_reads_open: bool,
    /// How often the dashboard's history (`GET /v1/history`) samples the live counters; 180
    /// samples are kept per series (15 minutes at the default 5 s).
    #[serde(deserialize_with = "duration")]
    pub history_interval: Duration,
    /// A request head must arrive whole within this long of the moment the listener waits for
    /// it (the connection's opening, or the previous response's end), however slowly it drips;
    /// an idle keep-alive connection is closed after it too.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long while it waits on its
    /// client (a request body that stopped, a response the client does not read) is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Connections open at once; past them a few more may ask one probe each
    /// (`stall::PROBE_SLOTS`), past those a new one is closed at once (counted in
    /// `admin_refused_connections_total`).
    pub max_connections: usize,
    /// Which backends have per-backend series on `/metrics`.
    pub backend_series: BackendSeries,
}

/// `admin.backend_series`: which backends `/metrics` has per-backend series for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendSeries {
    /// Every backend of the table, from the start, at zero until it sees traffic.
    #[default]
    All,
    /// Only backends that have been used: a connection or request sent to one, or a connect
    /// that failed. For an instance of a large cluster that calls few of its apps (an agent
    /// node's): at 50,000 apps × 10 tasks, "all" is 620 MB of text per scrape.
    Used,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_file: None,
            session_ttl: Duration::from_secs(8 * 3600),
            loopback_reads_open: true,
            history_interval: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
            backend_series: BackendSeries::All,
        }
    }
}

/// `[relay]`: Marathon's read API served from this instance's model (docs/relay.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Where to serve it; `None` (the default): no relay.
    pub listen: Option<SocketAddr>,
    /// A file holding the token every request must present (`Authorization: Bearer T` or
    /// `token=T`, as `discovery.token_file` sends it); required beyond loopback.
    pub token_file: Option<PathBuf>,
    /// A PEM file holding the certificate chain and its private key (as an `https.certs` file):
    /// the relay then speaks HTTPS only, so the token and the model do not cross the cluster's
    /// network in the clear. Followers list it as `https://…` with `discovery.ca_file`. The
    /// file is checked for changes as often as `https.reload_interval`; one that stops loading
    /// keeps the last good certificate.
    pub tls_cert: Option<PathBuf>,
    /// Event streams served at once; more are refused (503).
    pub max_subscribers: usize,
    /// Events queued for one stream; a subscriber that lets it fill is cut.
    pub subscriber_queue: usize,
    /// How long the relay may go on serving after it lost its own Marathon: past it, it answers
    /// 503 and closes its streams, so that its followers move to a relay that is current instead
    /// of following a model that is ever older.
    #[serde(deserialize_with = "duration")]
    pub max_disconnected: Duration,
    /// Every stream gets 4 KiB of blank lines this often: followers see a live stream, and one
    /// that stopped reading fills its buffers and is cut even when nothing changes.
    #[serde(deserialize_with = "duration")]
    pub keepalive_interval: Duration,
    /// Bytes of `/v2/apps` and `/v2/tasks` bodies alive at once — the current model's and older
    /// ones slow followers are still reading — past which a request that needs a new one is
    /// answered 503 with `Retry-After`.
    pub max_body_bytes: usize,
    /// As `admin.header_timeout`, on the relay's listener.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// As `admin.idle_timeout`, on the relay's listener (never for an event stream).
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            listen: None,
            token_file: None,
            tls_cert: None,
            max_subscribers: 1024,
            subscriber_queue: 1024,
            max_disconnected: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(15),
            max_body_bytes: 512 << 20,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// How often the configuration file is checked for changes; "0s": only on SIGHUP or
    /// `switchyard reload`.
    #[serde(deserialize_with = "duration")]
    pub config_watch_interval: Duration,
    /// A Unix socket where a new switchyard process (`switchyard run --upgrade`) takes over the
    /// listening sockets; omitted, binary upgrades are off.
    pub upgrade_socket: Option<PathBuf>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            workers: 0,
            config_watch_interval: Duration::from_secs(1),
            upgrade_socket: None,
        }
    }
}

/// Canary rollouts (docs/rollouts.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rollout {
    /// How often running rollouts are measured and judged: a failing canary is back at 0
    /// within one interval of reaching its `min_requests`.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Where rollouts are recorded (`rollouts.json`, written atomically), so a restart resumes
    /// them; omitted, they live in memory only.
    pub state_dir: Option<PathBuf>,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            interval: Duration::from_secs(1),
            state_dir: None,
        }
    }
}

/// Active health checks: probes from switchyard itself, beside Marathon's verdicts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthChecks {
    pub enabled: bool,
    /// Probe with the app's Marathon `healthChecks` (HTTP, HTTPS as HTTP, TCP, and their MESOS_
    /// forms; COMMAND checks are Marathon's alone).
    pub from_marathon: bool,
    /// For ports no Marathon check covers: `none`, `tcp` (connect) or `http` (GET `path`, 2xx/3xx).
    pub default: String,
    pub path: String,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Consecutive failures that take a backend out (one success brings it back).
    pub max_consecutive_failures: u32,
    /// Probes in flight at once, over all backends.
    pub concurrency: usize,
}

impl Default for HealthChecks {
    fn default() -> Self {
        HealthChecks {
            enabled: true,
            from_marathon: true,
            default: "none".into(),
            path: "/".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            max_consecutive_failures: 3,
            concurrency: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter: `info`, `switchyard=debug`, …  `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
