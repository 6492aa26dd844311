//! Checks on a parsed configuration that serde cannot express: one discovery source, sane
//! timeouts and limits, names that parse. Every error names its key.

use std::time::Duration;

use super::Config;
use crate::routing::vip::VipRange;

impl Config {
    pub(super) fn validate(&self) -> Result<(), String> {
        for (key, list) in [
            ("proxy.proxy_protocol_from", &self.proxy.proxy_protocol_from),
            ("http.proxy_protocol_from", &self.http.proxy_protocol_from),
            ("https.proxy_protocol_from", &self.https.proxy_protocol_from),
            ("http.trusted_proxies", &self.http.trusted_proxies),
        ] {
            for block in list {
                crate::routing::cidr::Cidr::parse(block).map_err(|e| format!("{key}: {e}"))?;
            }
        }
        crate::proxy::tls::Policy::parse(&self.https.min_version, &self.https.cipher_suites)?;
        if self.rollout.interval.is_zero() {
            return Err("rollout.interval must be more than 0s".into());
        }
        if self.proxy.proxy_protocol_timeout.is_zero() {
            return Err("proxy.proxy_protocol_timeout: must be above zero".into());
        }
        if let Some(listen) = self.relay.listen
            && !listen.ip().is_loopback()
            && self.relay.token_file.is_none()
        {
            return Err(format!(
                "relay.listen {listen} is beyond loopback: set relay.token_file (followers present it)"
            ));
        }
        for (key, value) in [
            ("admin.header_timeout", self.admin.header_timeout),
            ("admin.idle_timeout", self.admin.idle_timeout),
            ("relay.header_timeout", self.relay.header_timeout),
            ("relay.idle_timeout", self.relay.idle_timeout),
        ] {
            if value < Duration::from_millis(10) || value > Duration::from_secs(3600) {
                return Err(format!("{key}: between 10ms and 1h"));
            }
        }
        // Well inside followers' discovery.stream_idle_timeout (90 s by default).
        if self.relay.keepalive_interval < Duration::from_millis(10)
            || self.relay.keepalive_interval > Duration::from_secs(60)
        {
            return Err("relay.keepalive_interval: between 10ms and 60s".into());
        }
        if self.relay.max_body_bytes == 0 {
            return Err("relay.max_body_bytes: above zero".into());
        }
        if self.relay.max_disconnected.is_zero() {
            return Err("relay.max_disconnected: above zero".into());
        }
        for (key, value) in [
            ("relay.max_subscribers", self.relay.max_subscribers),
            ("relay.subscriber_queue", self.relay.subscriber_queue),
        ] {
            if !(1..=65536).contains(&value) {
                return Err(format!("{key}: between 1 and 65536"));
            }
        }
        let d = &self.discovery;
        let cluster = !d.marathon.is_empty() || !d.mesos.masters.is_empty();
        match (&d.file, cluster) {
            (Some(_), true) => {
                return Err(
                    "discovery: set either `file` or `marathon`/`mesos.masters`, not both".into(),
                );
            }
            (None, false) => {
                return Err(
                    "discovery: set `file`, `marathon` or `mesos.masters` (no source configured)"
                        .into(),
                );
            }
            _ => {}
        }
        for master in &d.mesos.masters {
            crate::discovery::mesos::parse_master(master)
                .map_err(|e| format!("discovery.mesos.masters: {master:?}: {e}"))?;
        }
        if d.mesos.max_record_bytes < 1024 || d.mesos.max_snapshot_bytes < d.mesos.max_record_bytes
        {
            return Err("discovery.mesos.max_record_bytes: must be at least 1024, and max_snapshot_bytes at least as large".into());
        }
        for url in &d.marathon {
            crate::discovery::marathon::client::BaseUrl::parse(url)
                .map_err(|e| format!("discovery.marathon: {url:?}: {e}"))?;
        }
        if let Some(auth) = &d.basic_auth
            && !auth.contains(':')
        {
            return Err("discovery.basic_auth: expected \"user:password\"".into());
        }
        let auths = [
            d.basic_auth.is_some(),
            d.token_file.is_some(),
            d.service_account_file.is_some(),
        ];
        if auths.iter().filter(|set| **set).count() > 1 {
            return Err(
                "discovery: set one of `basic_auth`, `token_file` and `service_account_file`"
                    .into(),
            );
        }
        let https = d
            .marathon
            .iter()
            .chain(&d.mesos.masters)
            .chain(&d.login_endpoint)
            .any(|u| u.starts_with("https://"));
        if https && d.ca_file.is_none() {
            return Err(
                "discovery.ca_file: https:// URLs are verified against a CA bundle; set it".into(),
            );
        }
        if d.backoff_initial.is_zero() || d.backoff_initial > d.backoff_max {
            return Err("discovery.backoff_initial: must be > 0 and <= backoff_max".into());
        }
        if d.resync_interval < Duration::from_secs(1) {
            return Err("discovery.resync_interval: must be at least 1s".into());
        }
        if !(0.0..=1.0).contains(&d.max_removal_fraction) {
            return Err("discovery.max_removal_fraction: must be between 0 and 1".into());
        }
        // The event stream is not read while a held read waits: a short wait.
        if d.removal_confirm_delay > Duration::from_secs(60) {
            return Err("discovery.removal_confirm_delay: must be at most 60s".into());
        }
        if d.max_event_bytes < 1024 {
            return Err("discovery.max_event_bytes: must be at least 1024".into());
        }
        if d.file_poll_interval.is_zero() {
            return Err("discovery.file_poll_interval: must be > 0".into());
        }
        if self.proxy.group.is_empty() || self.proxy.group.iter().any(|g| g.trim().is_empty()) {
            return Err("proxy.group: must not be empty (use \"*\" to serve every group)".into());
        }
        for (key, value) in [
            ("proxy.connect_timeout", self.proxy.connect_timeout),
            ("proxy.response_timeout", self.proxy.response_timeout),
            (
                "proxy.client_header_timeout",
                self.proxy.client_header_timeout,
            ),
            ("proxy.tcp_idle_timeout", self.proxy.tcp_idle_timeout),
            ("proxy.tunnel_idle_timeout", self.proxy.tunnel_idle_timeout),
            ("discovery.connect_timeout", d.connect_timeout),
            ("discovery.request_timeout", d.request_timeout),
            ("discovery.stream_idle_timeout", d.stream_idle_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{key}: must be > 0"));
            }
        }
        if self.http.listen.contains(&self.admin.listen) {
            return Err("http.listen: collides with admin.listen".into());
        }
        if !self.https.listen.is_empty()
            && self.https.certs.is_none()
            && self.https.default_cert.is_none()
        {
            return Err("https.listen: set https.certs or https.default_cert".into());
        }
        if self.https.reload_interval.is_zero() || self.https.handshake_timeout.is_zero() {
            return Err("https.reload_interval and https.handshake_timeout: must be > 0".into());
        }
        VipRange::parse(&self.vip.range).map_err(|e| format!("vip.range: {e}"))?;
        self.vip.balance()?;
        self.vip.balance_by_name()?;
        if !self.admin.listen.ip().is_loopback() && self.admin.token_file.is_none() {
            return Err(
                "admin.listen: beyond loopback the admin API needs admin.token_file".into(),
            );
        }
        if !self.admin.loopback_reads_open && self.admin.token_file.is_none() {
            return Err(
                "admin.loopback_reads_open = false: reads need a token, set admin.token_file"
                    .into(),
            );
        }
        if self.admin.history_interval < std::time::Duration::from_millis(10) {
            return Err("admin.history_interval: must be at least 10ms".into());
        }
        if !(1..=65536).contains(&self.admin.max_connections) {
            return Err("admin.max_connections: between 1 and 65536".into());
        }
        if self.admin.session_ttl.is_zero() {
            return Err("admin.session_ttl: must be > 0".into());
        }
        if !matches!(self.health_checks.default.as_str(), "none" | "tcp" | "http") {
            return Err(format!(
                "health_checks.default: {:?} (use none, tcp or http)",
                self.health_checks.default
            ));
        }
        let h = &self.health_checks;
        if h.interval.is_zero() || h.timeout.is_zero() || h.concurrency == 0 {
            return Err("health_checks.interval, timeout and concurrency: must be > 0".into());
        }
        if h.max_consecutive_failures == 0 {
            return Err("health_checks.max_consecutive_failures: must be > 0".into());
        }
        if !h.path.starts_with('/') {
            return Err("health_checks.path: must start with /".into());
        }
        if self.proxy.min_serv_port_ip_per_task == 0
            || self.proxy.max_serv_port_ip_per_task < self.proxy.min_serv_port_ip_per_task
        {
            return Err(
                "proxy.min_serv_port_ip_per_task and max_serv_port_ip_per_task: \
                        a range of ports, 1 <= min <= max"
                    .into(),
            );
        }
        if self.proxy.max_connections == 0 || self.proxy.max_connections_per_listener == 0 {
            return Err(
                "proxy.max_connections and max_connections_per_listener: must be > 0".into(),
            );
        }
        if self.http.max_header_bytes < 8192 {
            return Err("http.max_header_bytes: must be at least 8192".into());
        }
        if self.http.max_headers == 0 {
            return Err("http.max_headers: must be > 0".into());
        }
        self.dns.ip_sources()?;
        if self.dns.ip_sources.is_empty() {
            return Err("dns.ip_sources: must name at least one source".into());
        }
        let domain = self.dns.domain.trim_end_matches('.');
        if domain.is_empty()
            || hickory_proto::rr::Name::from_ascii(format!("{domain}.")).is_err()
            || !domain.split('.').all(|l| !l.is_empty() && l.len() <= 63)
        {
            return Err(format!(
                "dns.domain: {:?} is not a domain name",
                self.dns.domain
            ));
        }
        self.dns.check_server()?;
        self.dns.allow_recursion()?;
        self.dns.rrl.settings()?;
        self.dns.zone_resolvers(self.vip.enabled)?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| format!("log.level: {e}"))?;
        Ok(())
    }
}
