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
pub use files::read_limited;
mod settings;
mod validate;

pub use dns::{Dns, Rrl};
pub use files::{read_service_account, read_token};

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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Proxy {
    /// Which `HAPROXY_GROUP`s this instance serves (marathon-lb's repeated `--group`); `*`
    /// serves every app, grouped or not. A single string or a list.
    #[serde(deserialize_with = "one_or_more")]
    pub group: Vec<String>,
    /// Also serve apps that carry no group label (marathon-lb served them only with `*`).
    pub serve_ungrouped: bool,
    /// marathon-lb's strict mode: serve a port only when `HAPROXY_{n}_ENABLED` is true.
    pub strict_mode: bool,
    /// Address service ports bind to unless `HAPROXY_{n}_BIND_ADDR` says otherwise.
    pub bind: IpAddr,
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// HTTP mode: how long a backend may take to send response headers.
    #[serde(deserialize_with = "duration")]
    pub response_timeout: Duration,
    /// HTTP mode: how long a client may take to send request headers.
    #[serde(deserialize_with = "duration")]
    pub client_header_timeout: Duration,
    /// TCP mode (service ports, TCP VIPs): a connection with no byte either way for this long
    /// is closed (reset both ways); `SWITCHYARD_{n}_TCP_IDLE_TIMEOUT` overrides it per port.
    #[serde(deserialize_with = "duration")]
    pub tcp_idle_timeout: Duration,
    /// HTTP mode: the same for the tunnel of an upgraded connection (WebSocket).
    #[serde(deserialize_with = "duration")]
    pub tunnel_idle_timeout: Duration,
    /// Idle pooled upstream HTTP connections kept per backend.
    pub max_idle_per_backend: usize,
    /// HTTP: replay an idempotent request without a body once on another backend when the
    /// first fails after the request went out but before any response byte.
    pub retry_idempotent: bool,
    /// Open client connections allowed on one listener; past it new ones are refused.
    pub max_connections_per_listener: usize,
    /// Open client connections allowed in all.
    pub max_connections: usize,
    /// The range service ports are assigned from to IP-per-task apps that have none
    /// (marathon-lb's `--min-serv-port-ip-per-task` / `--max-serv-port-ip-per-task`).
    pub min_serv_port_ip_per_task: u16,
    pub max_serv_port_ip_per_task: u16,
    /// Service ports read a PROXY protocol header (v1 or v2) from these sources, which must
    /// send one; anyone else who sends one is refused. Empty: no PROXY protocol.
    pub proxy_protocol_from: Vec<String>,
    /// How long a PROXY header may take to arrive.
    #[serde(deserialize_with = "duration")]
    pub proxy_protocol_timeout: Duration,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            group: vec!["external".into()],
            serve_ungrouped: false,
            strict_mode: false,
            bind: IpAddr::from([0, 0, 0, 0]),
            drain_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(30),
            tcp_idle_timeout: Duration::from_secs(3600),
            tunnel_idle_timeout: Duration::from_secs(3600),
            max_idle_per_backend: 1024,
            retry_idempotent: true,
            max_connections_per_listener: 20_000,
            max_connections: 50_000,
            min_serv_port_ip_per_task: 10050,
            max_serv_port_ip_per_task: 10100,
            proxy_protocol_from: Vec::new(),
            proxy_protocol_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Shared virtual-host listeners. Their ports are reserved: no service port may take them.
    pub listen: Vec<SocketAddr>,
    /// marathon-lb's `X-Marathon-App-Id` routing, on a listener of its own.
    pub app_id_listen: Option<SocketAddr>,
    /// The app whose first port answers requests that match no vhost (else: 503).
    pub default_app: Option<String>,
    /// One structured log line per request (target `switchyard::access`).
    pub access_log: bool,
    /// Also accept HTTP/2 with prior knowledge (h2c) on the plain vhost listeners.
    pub h2c: bool,
    /// Request line and headers larger than this are refused (431); at least 8192.
    pub max_header_bytes: usize,
    /// Requests with more header fields than this are refused (431).
    pub max_headers: usize,
    /// The HTTP listeners (vhost and app-id) read PROXY headers from these sources.
    pub proxy_protocol_from: Vec<String>,
    /// Clients whose X-Forwarded-For and X-Forwarded-Proto are kept (extended); anyone else's
    /// are replaced. Address blocks.
    pub trusted_proxies: Vec<String>,
    /// Files whose contents answer 502, 503 and 504 for apps without a page of their own
    /// (`SWITCHYARD_{n}_ERROR_PAGE_*`); at most 64 KiB each, read at start and on reload.
    pub error_page_502: Option<PathBuf>,
    pub error_page_503: Option<PathBuf>,
    pub error_page_504: Option<PathBuf>,
    /// Their content type.
    pub error_page_content_type: String,
    /// The pages read from those files.
    #[serde(skip)]
    pub error_pages: crate::routing::edge::ErrorPages,
}

impl Http {
    /// The default error pages, read from their files (bounded).
    fn read_error_pages(&self) -> Result<crate::routing::edge::ErrorPages, String> {
        let mut pages = crate::routing::edge::ErrorPages::default();
        for (status, path) in [
            (502, &self.error_page_502),
            (503, &self.error_page_503),
            (504, &self.error_page_504),
        ] {
            let Some(path) = path else { continue };
            let key = format!("http.error_page_{status}");
            let limit = crate::routing::edge::MAX_PAGE_BYTES as u64;
            let file = std::fs::File::open(path)
                .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, limit + 1), &mut body)
                .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
            pages
                .set(status, &body, &self.error_page_content_type)
                .map_err(|e| format!("{key} {}: {e}", path.display()))?;
        }
        Ok(pages)
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: Vec::new(),
            app_id_listen: None,
            default_app: None,
            access_log: false,
            h2c: false,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            proxy_protocol_from: Vec::new(),
            trusted_proxies: Vec::new(),
            error_page_502: None,
            error_page_503: None,
            error_page_504: None,
            error_page_content_type: crate::routing::edge::DEFAULT_PAGE_TYPE.into(),
            error_pages: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Https {
    /// Shared HTTPS virtual-host listeners.
    pub listen: Vec<SocketAddr>,
    /// A directory of PEM files, each a certificate chain and its private key.
    pub certs: Option<PathBuf>,
    /// The certificate for clients whose SNI matches none (default: the first file by name).
    pub default_cert: Option<PathBuf>,
    /// Offer HTTP/2 by ALPN.
    pub h2: bool,
    /// How often certificate files are checked for changes.
    #[serde(deserialize_with = "duration")]
    pub reload_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// The HTTPS listeners read PROXY headers from these sources.
    pub proxy_protocol_from: Vec<String>,
    /// The lowest TLS version accepted: "1.2" or "1.3".
    pub min_version: String,
    /// Cipher suites offered, in order of preference (rustls's names); empty: all it has.
    pub cipher_suites: Vec<String>,
}

impl Default for Https {
    fn default() -> Self {
        Https {
            listen: Vec::new(),
            certs: None,
            default_cert: None,
            h2: true,
            reload_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            proxy_protocol_from: Vec::new(),
            min_version: "1.2".into(),
            cipher_suites: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Vip {
    /// Serve the VIPs that apps declare with `VIP_{i}` port labels.
    pub enabled: bool,
    /// Where named VIPs get their addresses (IPv4).
    pub range: String,
    /// `maglev` (consistent hashing of each connection), `leastconn` or `roundrobin`.
    pub balance: String,
    /// Per named VIP: a balancer other than `balance`.
    pub balance_by_name: BTreeMap<String, String>,
    /// A UDP flow's session ends after this long without a datagram either way.
    #[serde(deserialize_with = "duration")]
    pub udp_idle_timeout: Duration,
    /// UDP sessions kept per VIP; past this, new flows' datagrams are dropped.
    pub udp_max_sessions: usize,
}

fn parse_vip_balance(text: &str) -> Result<Balance, String> {
    match text {
        "maglev" => Ok(Balance::Maglev),
        "p2c" => Ok(Balance::P2c),
        "leastconn" => Ok(Balance::LeastConn),
        "roundrobin" => Ok(Balance::RoundRobin),
        other => Err(format!(
            "{other:?} (use maglev, p2c, leastconn or roundrobin)"
        )),
    }
}

impl Default for Vip {
    fn default() -> Self {
        Vip {
            enabled: true,
            range: "11.0.0.0/8".into(),
            balance: "maglev".into(),
            balance_by_name: BTreeMap::new(),
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_sessions: 10_000,
        }
    }
}

impl Vip {
    fn balance(&self) -> Result<Balance, String> {
        parse_vip_balance(&self.balance).map_err(|e| format!("vip.balance: {e}"))
    }

    fn balance_by_name(&self) -> Result<BTreeMap<String, Balance>, String> {
        self.balance_by_name
            .iter()
            .map(|(name, b)| {
                let balance =
                    parse_vip_balance(b).map_err(|e| format!("vip.balance_by_name.{name}: {e}"))?;
                Ok((name.trim_start_matches('/').to_ascii_lowercase(), balance))
            })
            .collect()
    }

    /// What `compile` and the DNS zone need; `None` when VIPs are off.
    pub fn settings(&self) -> Option<VipSettings> {
        if !self.enabled {
            return None;
        }
        Some(VipSettings {
            range: VipRange::parse(&self.range).ok()?,
            balance: self.balance().ok()?,
            balance_by_name: self.balance_by_name().ok()?,
        })
    }
}

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
