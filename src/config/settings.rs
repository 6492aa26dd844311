//! From the file to the running settings: every subsystem owns its settings type, and this is
//! the one place a `Config` is turned into them, used alike by startup and by a reload (so
//! that what a reload reports applied is what runs).

use std::time::Duration;

use super::{Config, HealthChecks};
use crate::cluster::{Probe, ProbeKind};
use crate::routing::CompileConfig;
use crate::routing::compile::HealthPolicy;
use crate::routing::routes::Overrides;

impl Config {
    /// What `compile` reads.
    pub fn compile_config(&self) -> CompileConfig {
        CompileConfig {
            group: self.proxy.group.clone(),
            serve_ungrouped: self.proxy.serve_ungrouped,
            strict_mode: self.proxy.strict_mode,
            bind: self.proxy.bind,
            reserved: self.reserved_ports(),
            default_app: self.http.default_app.clone(),
            weight_overrides: Overrides::new(),
            maintenance: Default::default(),
            vip: self.vip.settings(),
            health: health_policy(&self.health_checks),
            ip_per_task_ports: (
                self.proxy.min_serv_port_ip_per_task,
                self.proxy.max_serv_port_ip_per_task,
            ),
        }
    }

    /// The DNS zones to serve, with the VIP range their `l4lb` names come from; `None`: no DNS.
    pub fn zone_config(&self) -> Option<crate::zone::ZoneConfig> {
        self.dns.zone_config().map(|mut zone| {
            zone.vip_range = self.vip.settings().map(|vip| vip.range);
            zone
        })
    }

    /// How the Marathon source follows the leader.
    pub fn marathon_settings(&self) -> crate::discovery::marathon::Settings {
        let d = &self.discovery;
        crate::discovery::marathon::Settings {
            resync_interval: d.resync_interval,
            debounce: d.debounce,
            stream_idle_timeout: d.stream_idle_timeout,
            backoff_initial: d.backoff_initial,
            backoff_max: d.backoff_max,
            resync_jitter: d.resync_jitter,
            max_event_bytes: d.max_event_bytes,
            max_snapshot_bytes: d.max_snapshot_bytes,
            removal_guard: crate::discovery::marathon::guard::RemovalGuard {
                max_fraction: d.max_removal_fraction,
                confirm_delay: d.removal_confirm_delay,
            },
        }
    }

    /// How the Mesos source follows the leading master.
    pub fn mesos_settings(&self) -> crate::discovery::mesos::Settings {
        let d = &self.discovery;
        crate::discovery::mesos::Settings {
            stream_idle_timeout: d.stream_idle_timeout,
            heartbeat_slack: d.mesos.heartbeat_slack,
            backoff_initial: d.backoff_initial,
            backoff_max: d.backoff_max,
            max_record_bytes: d.mesos.max_record_bytes,
            max_snapshot_bytes: d.mesos.max_snapshot_bytes,
        }
    }

    /// The proxy's reloadable knobs.
    pub fn proxy_settings(&self) -> crate::proxy::Settings {
        crate::proxy::Settings {
            connect_timeout: self.proxy.connect_timeout,
            response_timeout: self.proxy.response_timeout,
            client_header_timeout: self.proxy.client_header_timeout,
            tcp_idle_timeout: self.proxy.tcp_idle_timeout,
            tunnel_idle_timeout: self.proxy.tunnel_idle_timeout,
            max_header_bytes: self.http.max_header_bytes,
            max_headers: self.http.max_headers,
            access_log: self.http.access_log,
            retry_idempotent: self.proxy.retry_idempotent,
            udp_idle_timeout: self.vip.udp_idle_timeout,
            udp_max_sessions: self.vip.udp_max_sessions,
            max_connections_per_listener: self.proxy.max_connections_per_listener,
            max_connections: self.proxy.max_connections,
            max_idle_per_backend: self.proxy.max_idle_per_backend,
            drain_timeout: self.proxy.drain_timeout,
            error_pages: self.http.error_pages.clone(),
            edge: self.edge_settings(),
        }
    }

    /// Address blocks of a list key, validated already (`validate`).
    fn blocks(list: &[String]) -> Vec<crate::routing::cidr::Cidr> {
        list.iter()
            .filter_map(|c| crate::routing::cidr::Cidr::parse(c).ok())
            .collect()
    }

    fn edge_settings(&self) -> crate::proxy::proxy_protocol::EdgeSettings {
        use crate::proxy::proxy_protocol::{Accept, EdgeSettings};
        let accept = |from: &[String]| Accept {
            from: Config::blocks(from),
            timeout: self.proxy.proxy_protocol_timeout,
        };
        EdgeSettings {
            ports: accept(&self.proxy.proxy_protocol_from),
            http: accept(&self.http.proxy_protocol_from),
            https: accept(&self.https.proxy_protocol_from),
            trusted_proxies: Config::blocks(&self.http.trusted_proxies),
        }
    }
}

/// `None` when health checks are off.
fn health_policy(c: &HealthChecks) -> Option<HealthPolicy> {
    if !c.enabled {
        return None;
    }
    let kind = match c.default.as_str() {
        "tcp" => Some(ProbeKind::Tcp),
        "http" => Some(ProbeKind::Http {
            path: c.path.as_str().into(),
        }),
        _ => None,
    };
    Some(HealthPolicy {
        from_marathon: c.from_marathon,
        default: kind.map(|kind| Probe {
            kind,
            port_index: 0,
            interval: c.interval,
            timeout: c.timeout,
            max_failures: c.max_consecutive_failures,
            grace: Duration::ZERO,
            target: None,
        }),
    })
}
