//! `[proxy]`, `[http]`, `[https]` and `[vip]`: the data plane's settings (which apps are served
//! and how, the HTTP and HTTPS listeners, Minuteman's VIPs) and their defaults.

use super::*;

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
    pub(super) fn read_error_pages(&self) -> Result<crate::routing::edge::ErrorPages, String> {
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
    pub(super) fn balance(&self) -> Result<Balance, String> {
        parse_vip_balance(&self.balance).map_err(|e| format!("vip.balance: {e}"))
    }

    pub(super) fn balance_by_name(&self) -> Result<BTreeMap<String, Balance>, String> {
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
