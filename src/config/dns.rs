//! `[dns]` and `[dns.rrl]`: the DNS server's settings (zones, listeners, upstreams, response
//! rate limiting), their defaults and what the zone builder and the server are handed.

use super::*;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// UDP and TCP address of the DNS server; omitted, DNS is off.
    pub listen: Option<SocketAddr>,
    /// The served zone: `{task}.marathon.{domain}`.
    pub domain: String,
    pub ttl: u32,
    /// Where task addresses come from, in order: `auto`, `netinfo`, `host`.
    pub ip_sources: Vec<String>,
    /// RFC 952 names (24 characters, starting with a letter) instead of RFC 1123 (63).
    pub rfc952: bool,
    /// Resolvers for names outside the served zone; none: such queries are REFUSED.
    pub upstreams: Vec<SocketAddr>,
    #[serde(deserialize_with = "duration")]
    pub upstream_timeout: Duration,
    /// Clients whose queries for other names are relayed to the upstreams (address blocks);
    /// others get REFUSED for them. The served zones answer everyone.
    pub allow_recursion: Vec<String>,
    /// A/AAAA/SRV answers list only the tasks the proxy routes to (the app label
    /// `SWITCHYARD_DNS_HEALTHY_ONLY` overrides it per app).
    pub healthy_only: bool,
    /// TTL of those names' records, in seconds.
    pub healthy_ttl: u32,
    /// Response rate limiting of UDP answers per client prefix (`[dns.rrl]`); off by default.
    pub rrl: Rrl,
    /// PTR records for task and VIP addresses (`in-addr.arpa`, `ip6.arpa`); off by default.
    pub ptr: bool,
    /// Upstreams per domain suffix (Mesos-DNS's `zoneResolvers`): names under a suffix are
    /// relayed to its upstreams instead of `upstreams`; the longest suffix wins.
    pub zone_resolvers: std::collections::BTreeMap<String, Vec<SocketAddr>>,
    /// On a TCP connection, a query must arrive whole within this of the moment it is waited
    /// for (the connection's opening, or the previous answer sent), and an answer be taken by
    /// the client within as long; else the connection is closed.
    #[serde(deserialize_with = "duration")]
    pub tcp_idle_timeout: Duration,
    /// TCP connections open at once; past them a new one is closed at once, and from half of
    /// them on, idle connections wait 500 ms at most for their next query (RFC 7766 §6.2.3).
    pub tcp_connections: usize,
    /// TCP connections one client (an address; IPv6 by its `ipv6_client_prefix`) holds open
    /// at once; past them its new connections are closed at once.
    pub tcp_connections_per_client: usize,
    /// Queries of one client (as above) being relayed to upstreams at once, over each
    /// transport; past them its UDP queries for other names get TC (ask again over TCP), its
    /// TCP queries SERVFAIL, at once.
    pub forwards_per_client: usize,
    /// Queries for names of one domain (its last two labels; see `crate::dns::limits::domain`)
    /// being relayed at once, over each transport, whoever asks: names an upstream is slow to
    /// answer fill their domain's share, not every relay slot. Past them, as past a client's.
    pub forwards_per_domain: usize,
    /// The IPv6 prefix length a client is counted by for the shares above: 64 by default (a
    /// host commonly holds a whole /64 and picks addresses in it at will); 128 where each
    /// container has an address of its own in one shared /64 (a bridge or overlay network), so
    /// that one container cannot take its neighbours' shares.
    pub ipv6_client_prefix: u8,
}

/// `[dns.rrl]`: response rate limiting (see `crate::dns::rrl`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rrl {
    /// Answers of one kind per client prefix per second; 0: off.
    pub responses_per_second: u32,
    /// How long a client that kept asking too fast stays limited after it stops (BIND's window).
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Every `slip`-th limited answer is sent truncated (TC) instead of dropped; 0: drop all.
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Buckets in the table (24 bytes each): the most (client prefix, kind, name) keys tracked
    /// at once.
    pub table_size: usize,
    /// Clients never limited (address blocks).
    pub exempt: Vec<String>,
}

impl Default for Rrl {
    fn default() -> Self {
        Rrl {
            responses_per_second: 0,
            window: Duration::from_secs(15),
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            table_size: 65536,
            exempt: Vec::new(),
        }
    }
}

impl Rrl {
    /// The rate limiter's settings; `None` when off.
    pub fn settings(&self) -> Result<Option<crate::dns::rrl::Settings>, String> {
        if self.slip > 10 {
            return Err(format!("dns.rrl.slip: {} (0 to 10)", self.slip));
        }
        if self.ipv4_prefix > 32 || self.ipv6_prefix > 128 {
            return Err("dns.rrl: ipv4_prefix is at most 32, ipv6_prefix at most 128".into());
        }
        if !(1..=1 << 24).contains(&self.table_size) {
            return Err(format!(
                "dns.rrl.table_size: {} (1 to 16777216)",
                self.table_size
            ));
        }
        if self.window.as_secs() > 3600 {
            return Err("dns.rrl.window: at most 1h".into());
        }
        let exempt = self
            .exempt
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| format!("dns.rrl.exempt: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if self.responses_per_second == 0 {
            return Ok(None);
        }
        Ok(Some(crate::dns::rrl::Settings {
            responses_per_second: self.responses_per_second,
            window: self.window.as_secs() as u32,
            slip: self.slip,
            ipv4_prefix: self.ipv4_prefix,
            ipv6_prefix: self.ipv6_prefix,
            table_size: self.table_size,
            exempt,
        }))
    }
}

/// Loopback, the private ranges (RFC 1918, unique local fc00::/7) and link-local: the clients
/// of a cluster's resolver, not the internet.
pub const DEFAULT_ALLOW_RECURSION: [&str; 8] = [
    "127.0.0.0/8",
    "::1",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "169.254.0.0/16",
    "fe80::/10",
];

impl Default for Dns {
    fn default() -> Self {
        Dns {
            listen: None,
            domain: "mesos".into(),
            ttl: 60,
            ip_sources: vec!["auto".into()],
            rfc952: false,
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            allow_recursion: DEFAULT_ALLOW_RECURSION.map(String::from).to_vec(),
            healthy_only: false,
            healthy_ttl: crate::zone::HealthyDns::default().ttl,
            rrl: Rrl::default(),
            ptr: false,
            zone_resolvers: Default::default(),
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_connections: crate::dns::server::DEFAULT_TCP_CONNECTIONS,
            tcp_connections_per_client: 16,
            forwards_per_client: 64,
            forwards_per_domain: crate::dns::server::DEFAULT_FORWARDS_PER_DOMAIN,
            ipv6_client_prefix: 64,
        }
    }
}

impl Dns {
    pub(super) fn ip_sources(&self) -> Result<Vec<IpSource>, String> {
        self.ip_sources
            .iter()
            .map(|s| match s.as_str() {
                "auto" => Ok(IpSource::Auto),
                "netinfo" => Ok(IpSource::NetInfo),
                "host" => Ok(IpSource::Host),
                other => Err(format!(
                    "dns.ip_sources: {other:?} (use auto, netinfo or host)"
                )),
            })
            .collect()
    }

    /// One client's relayed queries in flight per transport: `forwards_per_client`, at most a
    /// transport's relay slots (256 each for UDP and TCP).
    pub fn forwards_per_transport(&self) -> usize {
        self.forwards_per_client
            .min(crate::dns::server::MAX_FORWARDS / 2)
    }

    /// A public address the DNS listener answers on while response rate limiting is off: an
    /// address outside loopback, the private ranges and link-local (those of
    /// [`DEFAULT_ALLOW_RECURSION`]), or for a wildcard listener such an address of this host's.
    /// Such a listener can be used to reflect floods at spoofed sources (see `[dns.rrl]`); RRL
    /// stays off by default all the same, since a cluster's own clients may sit anywhere.
    pub fn unlimited_public_listener(&self) -> Option<IpAddr> {
        if self.rrl.responses_per_second > 0 {
            return None;
        }
        let listen = self.listen?.ip().to_canonical();
        let private: Vec<Cidr> = DEFAULT_ALLOW_RECURSION
            .iter()
            .filter_map(|c| Cidr::parse(c).ok())
            .collect();
        let public = |ip: &IpAddr| {
            let ip = ip.to_canonical();
            !ip.is_unspecified() && !private.iter().any(|block| block.contains(ip))
        };
        if !listen.is_unspecified() {
            return Some(listen).filter(public);
        }
        // `::` takes IPv4 too (a dual-stack socket); `0.0.0.0` IPv4 only.
        host_addresses()
            .into_iter()
            .filter(|ip| listen.is_ipv6() || ip.to_canonical().is_ipv4())
            .find(public)
    }

    /// `allow_recursion` parsed.
    pub fn allow_recursion(&self) -> Result<Vec<Cidr>, String> {
        self.allow_recursion
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| format!("dns.allow_recursion: {e}")))
            .collect()
    }

    /// The server's limits and where it relays to, checked: the timeouts and caps in range,
    /// and no upstream that is switchyard's own DNS listener (a query relayed there would come
    /// back to be relayed again, round and round).
    pub(super) fn check_server(&self) -> Result<(), String> {
        if self.upstream_timeout.is_zero() {
            return Err("dns.upstream_timeout: must be > 0".into());
        }
        if self.tcp_idle_timeout < Duration::from_millis(10)
            || self.tcp_idle_timeout > Duration::from_secs(3600)
        {
            return Err("dns.tcp_idle_timeout: between 10ms and 1h".into());
        }
        let (most, relays) = (
            crate::dns::server::MAX_TCP_CONNECTIONS,
            crate::dns::server::MAX_FORWARDS,
        );
        if !(1..=most).contains(&self.tcp_connections) {
            return Err(format!("dns.tcp_connections: between 1 and {most}"));
        }
        let tcp = self.tcp_connections;
        if !(1..=tcp).contains(&self.tcp_connections_per_client) {
            return Err(format!(
                "dns.tcp_connections_per_client: between 1 and dns.tcp_connections ({tcp})"
            ));
        }
        // Up to 512, as before the slots were split per transport: a share above one
        // transport's 256 slots means all of them (`forwards_per_transport`), so a
        // configuration that was valid stays valid across an upgrade.
        if !(1..=relays).contains(&self.forwards_per_client) {
            return Err(format!("dns.forwards_per_client: between 1 and {relays}"));
        }
        let per_transport = relays / 2;
        if !(1..=per_transport).contains(&self.forwards_per_domain) {
            return Err(format!(
                "dns.forwards_per_domain: between 1 and {per_transport} (a transport's relay slots)"
            ));
        }
        if !(32..=128).contains(&self.ipv6_client_prefix) {
            return Err("dns.ipv6_client_prefix: between 32 and 128".into());
        }
        let Some(listen) = self.listen else {
            return Ok(());
        };
        let resolvers = self
            .zone_resolvers
            .iter()
            .flat_map(|(suffix, upstreams)| upstreams.iter().map(move |u| (Some(suffix), u)));
        for (suffix, upstream) in self.upstreams.iter().map(|u| (None, u)).chain(resolvers) {
            if is_own_listener(listen, *upstream) {
                let key = match suffix {
                    Some(suffix) => format!("dns.zone_resolvers.{suffix:?}"),
                    None => "dns.upstreams".into(),
                };
                return Err(format!(
                    "{key}: {upstream} is switchyard's own DNS listener (dns.listen {listen}): \
                     a query relayed there would come back to be relayed again"
                ));
            }
        }
        Ok(())
    }

    /// `zone_resolvers` as the server takes them: each suffix as a name, longest (most labels)
    /// first, so the first that holds a name is the longest suffix of it. A suffix inside a
    /// zone switchyard serves (`domain`; `l4lb.thisdcos.directory` with `vips`; the reverse
    /// zones with `ptr`) is an error: those names are answered, never relayed.
    pub fn zone_resolvers(
        &self,
        vips: bool,
    ) -> Result<Vec<(hickory_proto::rr::LowerName, Vec<SocketAddr>)>, String> {
        use hickory_proto::rr::{LowerName, Name};
        let mut served = vec![format!("{}.", self.domain.trim_end_matches('.'))];
        if vips {
            served.push(format!("{}.", crate::routing::vip::VIP_DOMAIN));
        }
        if self.ptr {
            served.extend(crate::zone::REVERSE_ZONES.map(String::from));
        }
        let served: Vec<LowerName> = served
            .iter()
            .filter_map(|z| Name::from_ascii(z).ok())
            .map(|n| LowerName::new(&n))
            .collect();
        let mut out = Vec::new();
        for (suffix, upstreams) in &self.zone_resolvers {
            let fqdn = format!("{}.", suffix.trim_end_matches('.'));
            let name = Name::from_ascii(&fqdn)
                .map(|n| LowerName::new(&n))
                .map_err(|e| format!("dns.zone_resolvers: {suffix:?} is not a domain name: {e}"))?;
            if upstreams.is_empty() {
                return Err(format!("dns.zone_resolvers: {suffix:?} has no upstreams"));
            }
            if let Some(zone) = served.iter().find(|zone| zone.zone_of(&name)) {
                return Err(format!(
                    "dns.zone_resolvers: {suffix:?} is inside the served zone {zone}: its names are answered, never relayed"
                ));
            }
            out.push((name, upstreams.clone()));
        }
        out.sort_by_key(|(name, _)| std::cmp::Reverse(name.num_labels()));
        Ok(out)
    }

    /// What `compile` needs to build the zone; `None` when DNS is off.
    pub fn zone_config(&self) -> Option<ZoneConfig> {
        let listen = self.listen?;
        Some(ZoneConfig {
            domain: self.domain.trim_end_matches('.').to_ascii_lowercase(),
            ttl: self.ttl,
            ip_sources: self.ip_sources().unwrap_or_else(|_| vec![IpSource::Auto]),
            label_rule: if self.rfc952 {
                LabelRule::Rfc952
            } else {
                LabelRule::Rfc1123
            },
            ns_addr: Some(listen.ip()).filter(|ip| !ip.is_unspecified()),
            vip_range: None,
            served: crate::zone::Served {
                listen: Some(listen),
                upstreams: self.upstreams.clone(),
                upstream_timeout: self.upstream_timeout,
                zone_resolvers: self.zone_resolvers.clone(),
            },
            ptr: self.ptr,
            healthy: crate::zone::HealthyDns {
                only: self.healthy_only,
                ttl: self.healthy_ttl,
            },
        })
    }
}

/// This host's interface addresses (none when they cannot be listed).
fn host_addresses() -> Vec<IpAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs hands over a list, freed below once read; an entry's address, when
    // not null, is a sockaddr of the family it names, read as that family's struct.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut at = head;
        while !at.is_null() {
            let addr = (*at).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Whether a query sent to `upstream` reaches the DNS listener on `listen`: the same port,
/// and the same address, or, for a wildcard listener (`0.0.0.0`, `::`, which takes both
/// families), any address of this host (loopback, the wildcard itself, or an address a socket
/// can bind here).
fn is_own_listener(listen: SocketAddr, upstream: SocketAddr) -> bool {
    if listen.port() == 0 || listen.port() != upstream.port() {
        return false;
    }
    let (listen_ip, ip) = (listen.ip().to_canonical(), upstream.ip().to_canonical());
    if listen_ip == ip {
        return true;
    }
    // A wildcard upstream is this host, as is a loopback one.
    let local = |ip: std::net::IpAddr| {
        ip.is_unspecified()
            || ip.is_loopback()
            || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
    };
    match listen.ip() {
        // `::` takes IPv4 too (a dual-stack socket).
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => local(ip),
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => ip.is_ipv4() && local(ip),
        // A specific address: a wildcard upstream reaches it on this host.
        _ => ip.is_unspecified() && ip.is_ipv4() == listen_ip.is_ipv4(),
    }
}
