//! The DNS zone, built by `compile` from the cluster: every name and its records, ready to
//! answer from. Nothing here runs per query.
//!
//! Names follow Mesos-DNS (framework `marathon`, domain configurable):
//! `{task}.marathon.{domain}` (task addresses), `{task}.marathon.slave.{domain}` (agent
//! addresses), `{task}-{tag}-{agent}.marathon.{domain}` (one task: the SRV targets),
//! `_{task}._tcp.marathon.{domain}` / `_udp` and `_{port}._{task}._tcp.marathon.{domain}` (SRV).

mod mesos;

pub use mesos::DCOS_DOMAIN;
use rustc_hash::FxHashMap;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record};

use crate::cluster::names::{LabelRule, label, service_label, tag, task_name};

mod splits;
use crate::cluster::{App, Cluster, Networking, Protocol, Task, TaskState};
pub use splits::{RouteSplit, route_splits};

/// Where a task's addresses come from, tried in order (Mesos-DNS's `IPSources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSource {
    /// The container's address under container networking, else the agent's.
    Auto,
    /// The addresses Marathon reports for the task (`ipAddresses`).
    NetInfo,
    /// The agent's address.
    Host,
}

#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// Lowercase, without the trailing dot: `mesos`.
    pub domain: String,
    pub ttl: u32,
    pub ip_sources: Vec<IpSource>,
    pub label_rule: LabelRule,
    /// The address `ns1.{domain}` answers with, when known.
    pub ns_addr: Option<IpAddr>,
    /// Named VIPs' range: `{name}.marathon.l4lb.thisdcos.directory` answers with their address.
    pub vip_range: Option<crate::routing::vip::VipRange>,
    /// How the zone is served, for Mesos-DNS's `/v1/config`.
    pub served: Served,
    /// DNS that follows health (`dns.healthy_only`, `dns.healthy_ttl`).
    pub healthy: HealthyDns,
    /// Serve `in-addr.arpa` and `ip6.arpa` with PTR records for task and VIP addresses
    /// (`dns.ptr`; see [`ptr_zones`]).
    pub ptr: bool,
}

/// The app label that turns health-following answers on (`true`) or off (`false`) for one app,
/// over `dns.healthy_only`.
pub const HEALTHY_ONLY_LABEL: &str = "SWITCHYARD_DNS_HEALTHY_ONLY";

/// Answers that list only the tasks the proxy would route to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthyDns {
    /// For every app (`dns.healthy_only`); the app label overrides it either way.
    pub only: bool,
    /// TTL of the A/AAAA/SRV records of healthy-only names (`dns.healthy_ttl`).
    pub ttl: u32,
}

impl Default for HealthyDns {
    fn default() -> Self {
        HealthyDns {
            only: false,
            ttl: 5,
        }
    }
}

/// Whether `app`'s answers follow health: its label when it says `true` or `false`, else the
/// configuration's switch.
pub fn healthy_only(app: &App, config: &ZoneConfig) -> bool {
    match app.labels.get(HEALTHY_ONLY_LABEL).map(|v| v.trim()) {
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        _ => config.healthy.only,
    }
}

/// The proxy's own verdicts on tasks, as plain data from the reconciler (the zone never reads
/// backend runtime state): the tasks of healthy-only apps that an active probe found down or
/// outlier detection ejected, on any of their service ports. Marathon's health results and
/// readiness are read from the cluster, as `compile` reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub unavailable: std::collections::BTreeSet<crate::cluster::TaskId>,
}

/// The server's settings the zone is answered with (not used to build it): what Mesos-DNS's
/// `/v1/config` reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Served {
    pub listen: Option<std::net::SocketAddr>,
    pub upstreams: Vec<std::net::SocketAddr>,
    pub upstream_timeout: std::time::Duration,
    /// Upstreams per domain suffix (`dns.zone_resolvers`).
    pub zone_resolvers: std::collections::BTreeMap<String, Vec<std::net::SocketAddr>>,
}

/// One app's tasks as Mesos-DNS's `/v1/enumerate` lists them (records are looked up from the
/// zone when asked, not kept twice).
#[derive(Debug, Clone)]
pub struct Listed {
    /// Marathon's task name (`api.prod`) and its label (`api-prod`).
    pub name: String,
    pub label: String,
    /// The app's SRV names.
    pub services: Vec<Name>,
    pub tasks: Vec<ListedTask>,
}

#[derive(Debug, Clone)]
pub struct ListedTask {
    pub id: crate::cluster::TaskId,
    /// The task's own name (its SRV records' target).
    pub target: Name,
    pub agent: Option<IpAddr>,
}

/// The records of one name, by type. A, AAAA and SRV records are stored with the root as their
/// owner (no allocation per record; a zone holds hundreds of thousands): answers take the name
/// as asked, and additionals their target's name.
#[derive(Debug, Default, Clone)]
pub struct Node {
    pub a: Vec<Record>,
    pub aaaa: Vec<Record>,
    pub srv: Vec<Record>,
    pub ns: Vec<Record>,
    pub soa: Option<Box<Record>>,
    /// Reverse names only (`dns.ptr`): owner set, as the answer is the name asked.
    pub ptr: Vec<Record>,
}

#[derive(Debug)]
pub struct Zone {
    pub apex: LowerName,
    /// Fx-hashed: the lookup is on every query, and the keys are not attacker-chosen (they come
    /// from the cluster, not the network).
    pub names: FxHashMap<LowerName, Node>,
    /// The apex SOA, for the authority section of negative answers.
    pub soa: Record,
    /// The named-VIP zone (`l4lb.thisdcos.directory`) and its SOA, when VIPs are on.
    pub vip_apex: Option<(LowerName, Record)>,
    /// `in-addr.arpa` and `ip6.arpa` and their SOAs, when PTR records are on (`dns.ptr`).
    pub reverse: Vec<(LowerName, Record)>,
    /// DC/OS's task-name zone (`dcos.thisdcos.directory`) and its SOA.
    pub dcos_apex: Option<(LowerName, Record)>,
    /// False for the stand-in served before the first zone is built (see [`Zone::pending`]):
    /// its zones are known, their contents are not, so their names are answered SERVFAIL.
    pub live: bool,
    /// Names served otherwise than the rules give (an SRV label cut to fit), reported with the
    /// table's problems.
    pub problems: Vec<crate::routing::Problem>,
    /// The apps and tasks, for `/v1/enumerate`.
    pub listed: Vec<Listed>,
    /// Healthy-only apps with no healthy task, answered with every running task instead
    /// (fail static).
    pub fail_static: Vec<crate::cluster::AppId>,
    pub config: ZoneConfig,
}

/// TTL of named-VIP records, as in DC/OS.
pub const VIP_TTL: u32 = 5;

impl Zone {
    /// The zones `config` serves, with nothing in them and not live: what the server answers
    /// from until the first zone is built (Marathon unreachable at start), so that names in
    /// the served zones get SERVFAIL instead of being forwarded.
    pub fn pending(config: &ZoneConfig) -> Zone {
        let mut zone = build(&Cluster::default(), config);
        zone.live = false;
        zone
    }

    /// The SOA of the served zone holding `name`, or `None` when no served zone does.
    pub fn soa_for(&self, name: &LowerName) -> Option<&Record> {
        if self.apex.zone_of(name) {
            return Some(&self.soa);
        }
        self.vip_apex
            .iter()
            .chain(&self.reverse)
            .chain(&self.dcos_apex)
            .find(|(apex, _)| apex.zone_of(name))
            .map(|(_, soa)| soa)
    }
}

/// A task's addresses per the configured sources; empty when none yields any.
fn task_addrs(cluster: &Cluster, app: &App, task: &Task, sources: &[IpSource]) -> Vec<IpAddr> {
    let agent = || -> Vec<IpAddr> { task.host.resolve(&cluster.agents).into_iter().collect() };
    for source in sources {
        let addrs = match (source, app.networking) {
            (IpSource::Auto, Networking::Container) | (IpSource::NetInfo, _) => {
                task.ip_addresses.clone()
            }
            (IpSource::Auto, Networking::Host) | (IpSource::Host, _) => agent(),
        };
        if !addrs.is_empty() {
            return addrs;
        }
    }
    Vec::new()
}

struct Builder {
    /// `marathon.{domain}.`
    framework: String,
    names: FxHashMap<LowerName, Node>,
}

impl Builder {
    /// `{labels joined by dots}.marathon.{domain}.`; labels are already sanitized ASCII.
    fn name(&self, labels: &[&str]) -> Option<Name> {
        Name::from_ascii(format!("{}.{}", labels.join("."), self.framework)).ok()
    }

    /// Adds an address to a name once: tasks sharing an agent share its address.
    fn add_addr(&mut self, name: &Name, ip: IpAddr, ttl: u32) {
        let node = self.names.entry(LowerName::new(name)).or_default();
        let (records, data) = match ip {
            IpAddr::V4(v4) => (&mut node.a, RData::A(A(v4))),
            IpAddr::V6(v6) => (&mut node.aaaa, RData::AAAA(AAAA(v6))),
        };
        if !records.iter().any(|r| r.data == data) {
            records.push(Record::from_rdata(Name::root(), ttl, data));
        }
    }
}

/// The zone of `cluster`, every task counted healthy by the proxy's own verdicts.
pub fn build(cluster: &Cluster, config: &ZoneConfig) -> Zone {
    build_with(cluster, config, &Verdicts::default())
}

/// The zone of `cluster`; healthy-only apps' names list the running tasks that Marathon counts
/// healthy and ready and that are not in `verdicts`, or every running task when none is
/// (fail static: a client gets an address that may work rather than none at all).
pub fn build_with(cluster: &Cluster, config: &ZoneConfig, verdicts: &Verdicts) -> Zone {
    build_from(cluster, config, verdicts, &[])
}

/// As [`build_with`], with the routing table's traffic splits answered as weighted SRV records
/// under their deployment group's name (see [`splits`]).
pub fn build_from(
    cluster: &Cluster,
    config: &ZoneConfig,
    verdicts: &Verdicts,
    route_splits: &[RouteSplit],
) -> Zone {
    let apex = Name::from_ascii(format!("{}.", config.domain)).unwrap_or_else(|_| Name::root());
    let framework = format!("marathon.{}.", config.domain);
    let mut b = Builder {
        framework,
        names: FxHashMap::default(),
    };
    let ttl = config.ttl;
    let mut problems = Vec::new();
    let mut listed = Vec::new();
    let mut fail_static = Vec::new();
    // Both zones' SOA serial: the newest Marathon timestamp of the state, in seconds (see
    // `Cluster::serial`): it grows with every change and is the same on every instance.
    let serial = cluster.serial();
    let mut split_targets = splits::targets(route_splits);

    for app in cluster.apps.values() {
        let task_label = label(&task_name(&app.id), config.label_rule);
        if task_label.is_empty() {
            continue;
        }
        let Some(task_fqdn) = b.name(&[&task_label]) else {
            continue;
        };
        let slave_fqdn =
            Name::from_ascii(format!("{task_label}.marathon.slave.{}.", config.domain)).ok();
        // `_` + a 63-character label is one too many: cut to fit, and said (never dropped).
        let mut renamed = |label: &str, service: &str, port_index: Option<usize>| {
            problems.push(crate::routing::Problem {
                app_id: app.id.clone(),
                port_index,
                severity: crate::routing::Severity::Renamed,
                reason: format!(
                    "DNS: `_{label}` is longer than 63 characters: its SRV records are under `{service}`"
                ),
            });
        };
        let (service, cut) = service_label(&task_label);
        if cut {
            renamed(&task_label, &service, None);
        }
        let port_labels: Vec<Option<String>> = app
            .ports
            .iter()
            .enumerate()
            .map(|(n, port)| {
                let p = label(port.name.as_deref()?, config.label_rule);
                if p.is_empty() {
                    return None;
                }
                let (l, cut) = service_label(&p);
                if cut {
                    renamed(&p, &l, Some(n));
                }
                Some(l)
            })
            .collect();
        let mut this = Listed {
            name: task_name(&app.id),
            label: task_label.clone(),
            services: Vec::new(),
            tasks: Vec::new(),
        };
        let running = || app.tasks.values().filter(|t| t.state == TaskState::Running);
        let follows_health = healthy_only(app, config);
        let healthy = |task: &Task| {
            task.is_routable(app.health_checks) && !verdicts.unavailable.contains(&task.id)
        };
        let everyone = follows_health && running().next().is_some() && !running().any(healthy);
        if everyone {
            fail_static.push(app.id.clone());
        }
        let ttl = if follows_health {
            config.healthy.ttl
        } else {
            config.ttl
        };
        for task in running() {
            // Listed under the app's names (A/AAAA/SRV); its own name resolves either way.
            let answered = !follows_health || everyone || healthy(task);
            let addrs = task_addrs(cluster, app, task, &config.ip_sources);
            if answered {
                for &ip in &addrs {
                    b.add_addr(&task_fqdn, ip, ttl);
                }
                if let Some(slave_fqdn) = &slave_fqdn {
                    let agent = task_addrs(cluster, app, task, &[IpSource::Host]);
                    for ip in agent {
                        b.add_addr(slave_fqdn, ip, ttl);
                    }
                }
            }
            if addrs.is_empty() {
                continue;
            }
            // One name per task, so that an SRV target resolves to exactly that task.
            let host = label(&task.host, LabelRule::Rfc1123);
            let host = &host[..host.len().min(20)];
            let tag = tag(&task.id);
            let room = 63 - tag.len() - 1 - if host.is_empty() { 0 } else { host.len() + 1 };
            let base = task_label[..task_label.len().min(room)].trim_end_matches('-');
            let unique = if host.is_empty() {
                format!("{base}-{tag}")
            } else {
                format!("{base}-{tag}-{host}")
            };
            let Some(target) = b.name(&[&unique]) else {
                continue;
            };
            for &ip in &addrs {
                b.add_addr(&target, ip, ttl);
            }
            this.tasks.push(ListedTask {
                id: task.id.clone(),
                target: target.clone(),
                agent: task.host.resolve(&cluster.agents),
            });
            for (n, port) in app.ports.iter().enumerate() {
                let number = match app.networking {
                    Networking::Container => port
                        .container_port
                        .filter(|&p| p != 0)
                        .or(task.ports.get(n).copied()),
                    Networking::Host => task.ports.get(n).copied(),
                };
                let Some(number) = number else { continue };
                if !answered {
                    continue;
                }
                let protocols: &'static [&'static str] = match port.protocol {
                    Protocol::Tcp => &["_tcp"],
                    Protocol::Udp => &["_udp"],
                    Protocol::TcpUdp => &["_tcp", "_udp"],
                };
                if !split_targets.is_empty()
                    && let Some(t) = split_targets.get_mut(&(app.id.clone(), n))
                {
                    t.push(splits::Target {
                        port: number,
                        target: target.clone(),
                        protocols,
                        ttl,
                    });
                }
                let srv = RData::SRV(SRV::new(0, 1, number, target.clone()));
                for proto in protocols {
                    let mut owners = vec![b.name(&[&service, proto])];
                    if let Some(p) = &port_labels[n] {
                        owners.push(b.name(&[p, &service, proto]));
                    }
                    for owner in owners.into_iter().flatten() {
                        if !this.services.contains(&owner) {
                            this.services.push(owner.clone());
                        }
                        let node = b.names.entry(LowerName::new(&owner)).or_default();
                        node.srv
                            .push(Record::from_rdata(Name::root(), ttl, srv.clone()));
                    }
                }
            }
        }
        listed.push(this);
    }

    splits::add_records(
        route_splits,
        &split_targets,
        &config.domain,
        config.label_rule,
        &mut b.names,
        &mut problems,
    );
    agent_records(cluster, config, &mut b.names);
    let dcos_apex = Some(mesos::add(cluster, config, &mut b.names, serial));

    let ns1 = Name::from_ascii("ns1")
        .unwrap()
        .append_name(&apex)
        .unwrap_or_else(|_| apex.clone());
    let rname = Name::from_ascii("root")
        .unwrap()
        .append_name(&ns1)
        .unwrap_or_else(|_| ns1.clone());
    let soa = Record::from_rdata(
        apex.clone(),
        ttl,
        RData::SOA(SOA::new(ns1.clone(), rname, serial, 60, 600, 86400, ttl)),
    );
    let apex_node = b.names.entry(LowerName::new(&apex)).or_default();
    apex_node.soa = Some(Box::new(soa.clone()));
    apex_node.ns.push(Record::from_rdata(
        apex.clone(),
        ttl,
        RData::NS(NS(ns1.clone())),
    ));
    match config.ns_addr {
        Some(ip) => b.add_addr(&ns1, ip, ttl),
        None => {
            b.names.entry(LowerName::new(&ns1)).or_default();
        }
    }
    // The names between the apex and the owners exist too (empty non-terminals): NODATA, not
    // NXDOMAIN (RFC 8020). Every owner is `x.marathon.{d}`, `x.marathon.slave.{d}`,
    // `_x._tcp.marathon.{d}` or `_p._x._tcp.marathon.{d}` (whose parent is itself an owner).
    for between in [
        "marathon",
        "slave",
        "marathon.slave",
        "_tcp.marathon",
        "_udp.marathon",
    ] {
        if let Ok(name) = Name::from_ascii(format!("{between}.{}.", config.domain)) {
            b.names.entry(LowerName::new(&name)).or_default();
        }
    }
    let vip_apex = config.vip_range.map(|range| {
        let zone = vip_zone(cluster, &range, &mut b.names, ttl, serial);
        if let Some(ip) = config.ns_addr {
            let ns = Name::from_ascii(format!("ns1.{}.", crate::routing::vip::VIP_DOMAIN))
                .expect("a valid name");
            b.add_addr(&ns, ip, ttl);
        }
        zone
    });
    let reverse = if config.ptr {
        ptr_zones(cluster, config, &mut b.names, serial)
    } else {
        Vec::new()
    };
    Zone {
        vip_apex,
        reverse,
        dcos_apex,
        apex: LowerName::new(&apex),
        names: b.names,
        soa,
        live: true,
        problems,
        listed,
        fail_static,
        config: config.clone(),
    }
}

/// The port Mesos agents listen on: `_slave._tcp.{domain}`'s SRV port, as in Mesos-DNS.
pub const AGENT_PORT: u16 = 5051;

/// `slave.{domain}` A/AAAA: every agent's address, and `_slave._tcp.{domain}` SRV to it on
/// port 5051, as Mesos-DNS answers them. The agents are those running Marathon's tasks and
/// every agent the Mesos master reports.
fn agent_records(cluster: &Cluster, config: &ZoneConfig, names: &mut FxHashMap<LowerName, Node>) {
    let agents: std::collections::BTreeSet<IpAddr> = cluster
        .apps
        .values()
        .flat_map(|app| app.tasks.values())
        .filter_map(|task| task.host.resolve(&cluster.agents))
        .chain(
            cluster
                .mesos
                .agents
                .values()
                .filter_map(|a| a.host.resolve(&cluster.agents)),
        )
        .collect();
    let (Ok(slave), Ok(service), Ok(tcp)) = (
        Name::from_ascii(format!("slave.{}.", config.domain)),
        Name::from_ascii(format!("_slave._tcp.{}.", config.domain)),
        Name::from_ascii(format!("_tcp.{}.", config.domain)),
    ) else {
        return;
    };
    if agents.is_empty() {
        return;
    }
    let node = names.entry(LowerName::new(&slave)).or_default();
    for ip in agents {
        let (records, data) = match ip {
            IpAddr::V4(v4) => (&mut node.a, RData::A(A(v4))),
            IpAddr::V6(v6) => (&mut node.aaaa, RData::AAAA(AAAA(v6))),
        };
        records.push(Record::from_rdata(Name::root(), config.ttl, data));
    }
    let srv = RData::SRV(SRV::new(0, 1, AGENT_PORT, slave));
    names.entry(LowerName::new(&service)).or_default().srv =
        vec![Record::from_rdata(Name::root(), config.ttl, srv)];
    names.entry(LowerName::new(&tcp)).or_default();
}

/// `{name}.marathon.l4lb.thisdcos.directory` A for every named VIP, and the zone's SOA (with
/// the cluster's serial) and NS (`ns1.l4lb.thisdcos.directory`, answering with the DNS listen
/// address when known).
fn vip_zone(
    cluster: &Cluster,
    range: &crate::routing::vip::VipRange,
    names: &mut FxHashMap<LowerName, Node>,
    ttl: u32,
    serial: u32,
) -> (LowerName, Record) {
    use crate::routing::vip::{self, VIP_DOMAIN, VipTarget};
    let (members, _) = vip::declared(cluster);
    for (target, ip) in vip::addresses(&members, range) {
        let VipTarget::Named(name) = &target else {
            continue;
        };
        let Ok(fqdn) = Name::from_ascii(format!("{}.marathon.{VIP_DOMAIN}.", vip::dns_label(name)))
        else {
            continue;
        };
        let node = names.entry(LowerName::new(&fqdn)).or_default();
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        let records = if ip.is_ipv4() {
            &mut node.a
        } else {
            &mut node.aaaa
        };
        if !records.iter().any(|r| r.data == data) {
            records.push(Record::from_rdata(Name::root(), VIP_TTL, data));
        }
    }
    let apex = Name::from_ascii(format!("{VIP_DOMAIN}.")).expect("a valid name");
    for between in ["marathon"] {
        if let Ok(name) = Name::from_ascii(format!("{between}.{VIP_DOMAIN}.")) {
            names.entry(LowerName::new(&name)).or_default();
        }
    }
    let ns = Name::from_ascii(format!("ns1.{VIP_DOMAIN}.")).expect("a valid name");
    let rname = Name::from_ascii(format!("root.ns1.{VIP_DOMAIN}.")).expect("a valid name");
    let soa = Record::from_rdata(
        apex.clone(),
        ttl,
        RData::SOA(SOA::new(ns.clone(), rname, serial, 60, 600, 86400, VIP_TTL)),
    );
    let apex_node = names.entry(LowerName::new(&apex)).or_default();
    apex_node.soa = Some(Box::new(soa.clone()));
    apex_node.ns = vec![Record::from_rdata(
        apex.clone(),
        ttl,
        RData::NS(NS(ns.clone())),
    )];
    names.entry(LowerName::new(&ns)).or_default();
    (LowerName::new(&apex), soa)
}

/// The reverse zones served with `dns.ptr`.
pub const REVERSE_ZONES: [&str; 2] = ["in-addr.arpa.", "ip6.arpa."];

/// With `dns.ptr`: `in-addr.arpa` and `ip6.arpa`, each with an SOA (the cluster's serial) and
/// NS (`ns1.{domain}`), and a PTR record for every running task's address (as `dns.ip_sources`
/// gives it) naming its app's name, `{task}.marathon.{domain}` — the stable name that resolves
/// back to the address — and for every named VIP's address naming
/// `{name}.marathon.l4lb.thisdcos.directory`. An address several apps share (tasks on one
/// agent under host networking) has one PTR per app. Every task counts, healthy or not, as the
/// task's own name does. Returns the two apexes and their SOAs.
fn ptr_zones(
    cluster: &Cluster,
    config: &ZoneConfig,
    names: &mut FxHashMap<LowerName, Node>,
    serial: u32,
) -> Vec<(LowerName, Record)> {
    let ttl = config.ttl;
    let mut targets: std::collections::BTreeMap<IpAddr, std::collections::BTreeSet<Name>> =
        Default::default();
    for app in cluster.apps.values() {
        let task_label = label(&task_name(&app.id), config.label_rule);
        if task_label.is_empty() {
            continue;
        }
        let Ok(fqdn) = Name::from_ascii(format!("{task_label}.marathon.{}.", config.domain)) else {
            continue;
        };
        for task in app.tasks.values().filter(|t| t.state == TaskState::Running) {
            for ip in task_addrs(cluster, app, task, &config.ip_sources) {
                targets.entry(ip).or_default().insert(fqdn.clone());
            }
        }
    }
    if let Some(range) = &config.vip_range {
        use crate::routing::vip::{self, VIP_DOMAIN, VipTarget};
        let (members, _) = vip::declared(cluster);
        for (target, ip) in vip::addresses(&members, range) {
            let VipTarget::Named(name) = &target else {
                continue;
            };
            let fqdn = format!("{}.marathon.{VIP_DOMAIN}.", vip::dns_label(name));
            if let Ok(fqdn) = Name::from_ascii(fqdn) {
                targets.entry(ip).or_default().insert(fqdn);
            }
        }
    }
    for (ip, fqdns) in targets {
        let owner = Name::from(ip);
        let node = names.entry(LowerName::new(&owner)).or_default();
        for fqdn in fqdns {
            let data = RData::PTR(hickory_proto::rr::rdata::PTR(fqdn));
            node.ptr.push(Record::from_rdata(owner.clone(), ttl, data));
        }
        // The names between the apex and the owner exist (NODATA, not NXDOMAIN: RFC 8020).
        let mut parent = owner.base_name();
        while parent.num_labels() > 2 {
            names.entry(LowerName::new(&parent)).or_default();
            parent = parent.base_name();
        }
    }
    let ns1 = Name::from_ascii(format!("ns1.{}.", config.domain)).unwrap_or_else(|_| Name::root());
    REVERSE_ZONES
        .iter()
        .map(|apex| {
            let apex = Name::from_ascii(apex).expect("a valid name");
            let rname = Name::from_ascii("root")
                .unwrap()
                .append_name(&ns1)
                .unwrap_or_else(|_| ns1.clone());
            let soa = Record::from_rdata(
                apex.clone(),
                ttl,
                RData::SOA(SOA::new(ns1.clone(), rname, serial, 60, 600, 86400, ttl)),
            );
            let node = names.entry(LowerName::new(&apex)).or_default();
            node.soa = Some(Box::new(soa.clone()));
            node.ns = vec![Record::from_rdata(
                apex.clone(),
                ttl,
                RData::NS(NS(ns1.clone())),
            )];
            (LowerName::new(&apex), soa)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::cluster::ClusterUpdate;
    use crate::cluster::fixtures::{app, task};

    /// The zone of `/prod/api` (`api-prod.marathon.mesos`) with `tasks` tasks on agents
    /// 10.0.x.y, and of the `extra` apps, under the domain `mesos`.
    pub fn api_zone(tasks: usize, extra: Vec<App>) -> Zone {
        let tasks = (0..tasks)
            .map(|i| {
                let mut t = task(&format!("api.{i}"), 31000 + i as u16);
                t.host = format!("10.0.{}.{}", i / 200, i % 200 + 1).into();
                t
            })
            .collect();
        let mut c = Cluster::default();
        let mut apps = vec![app("/prod/api", 10000, &[], tasks)];
        apps.extend(extra);
        c.apply(ClusterUpdate::Snapshot(apps));
        let config = ZoneConfig {
            domain: "mesos".into(),
            ttl: 60,
            ip_sources: vec![IpSource::Auto],
            label_rule: LabelRule::Rfc1123,
            ns_addr: None,
            vip_range: None,
            served: Default::default(),
            ptr: false,
            healthy: Default::default(),
        };
        build(&c, &config)
    }

    /// A recursion-desired query for `name`, with an OPT record offering `edns` bytes.
    pub fn query(
        name: &str,
        qtype: hickory_proto::rr::RecordType,
        edns: Option<u16>,
    ) -> hickory_proto::op::Message {
        use hickory_proto::op::{Edns, Message, Query};
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{app, task};
    use crate::cluster::{ClusterUpdate, PortSpec};
    use std::collections::BTreeSet;

    pub fn config() -> ZoneConfig {
        ZoneConfig {
            domain: "mesos".into(),
            ttl: 60,
            ip_sources: vec![IpSource::Auto],
            label_rule: LabelRule::Rfc1123,
            ns_addr: Some("127.0.0.1".parse().unwrap()),
            vip_range: None,
            served: Default::default(),
            ptr: false,
            healthy: Default::default(),
        }
    }

    fn lookup<'a>(zone: &'a Zone, name: &str) -> Option<&'a Node> {
        zone.names
            .get(&LowerName::new(&Name::from_ascii(name).unwrap()))
    }

    #[test]
    fn task_slave_and_srv_names() {
        let mut t1 = task("api.1", 31000);
        t1.host = "10.0.0.1".into();
        let mut t2 = task("api.2", 31001);
        t2.host = "10.0.0.2".into();
        let mut a = app("/prod/api", 10000, &[], vec![t1, t2]);
        a.ports[0].name = Some("http".into());
        a.ports.push(PortSpec {
            service_port: 10001,
            protocol: Protocol::Udp,
            ..Default::default()
        });
        a.tasks
            .values_mut()
            .for_each(|t| t.ports.push(t.ports[0] + 100));
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![a]));
        let zone = build(&c, &config());

        let node = lookup(&zone, "api-prod.marathon.mesos.").unwrap();
        assert_eq!(node.a.len(), 2);
        let slave = lookup(&zone, "api-prod.marathon.slave.mesos.").unwrap();
        assert_eq!(slave.a.len(), 2);
        let srv = lookup(&zone, "_api-prod._tcp.marathon.mesos.").unwrap();
        assert_eq!(srv.srv.len(), 2);
        let named = lookup(&zone, "_http._api-prod._tcp.marathon.mesos.").unwrap();
        assert_eq!(named.srv.len(), 2);
        let udp = lookup(&zone, "_api-prod._udp.marathon.mesos.").unwrap();
        let ports: BTreeSet<u16> = udp
            .srv
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => s.port,
                _ => 0,
            })
            .collect();
        assert_eq!(ports, BTreeSet::from([31100, 31101]));
        // Every SRV target resolves to exactly its task.
        for r in &srv.srv {
            let RData::SRV(s) = &r.data else { panic!() };
            let target = zone.names.get(&LowerName::new(&s.target)).unwrap();
            assert_eq!(target.a.len(), 1);
        }
        // Empty non-terminals exist; the apex has SOA and NS.
        assert!(lookup(&zone, "marathon.mesos.").is_some());
        assert!(lookup(&zone, "_tcp.marathon.mesos.").is_some());
        let apex = lookup(&zone, "mesos.").unwrap();
        assert!(apex.soa.is_some() && apex.ns.len() == 1);
        assert_eq!(lookup(&zone, "ns1.mesos.").unwrap().a.len(), 1);
    }

    #[test]
    fn ip_sources_and_only_running_tasks() {
        let mut running = task("c.1", 8080);
        running.ip_addresses = vec!["9.0.0.1".parse().unwrap()];
        let mut staging = task("c.2", 8080);
        staging.state = TaskState::Staging;
        let mut a = app("/c", 10000, &[], vec![running, staging]);
        a.networking = Networking::Container;
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![a]));
        let zone = build(&c, &config());
        let node = lookup(&zone, "c.marathon.mesos.").unwrap();
        assert_eq!(node.a.len(), 1);
        assert_eq!(node.a[0].data, RData::A(A("9.0.0.1".parse().unwrap())));
        let mut host_first = config();
        host_first.ip_sources = vec![IpSource::Host, IpSource::NetInfo];
        let zone = build(&c, &host_first);
        let node = lookup(&zone, "c.marathon.mesos.").unwrap();
        assert_eq!(node.a[0].data, RData::A(A("127.0.0.1".parse().unwrap())));
    }

    fn serial(record: &Record) -> u32 {
        let RData::SOA(soa) = &record.data else {
            panic!("not an SOA")
        };
        soa.serial
    }

    /// RFC 1982: `b` is after `a`, or the same.
    fn not_before(a: u32, b: u32) -> bool {
        a == b || (b.wrapping_sub(a) as i32) > 0
    }

    #[test]
    fn the_serial_follows_marathon_time_and_never_goes_back() {
        let mut vips = config();
        vips.vip_range = Some(crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap());
        let at = |s: u64| 1_700_000_000_000 + s * 1000;
        let mut t1 = task("api.1", 31000);
        t1.changed_ms = at(10);
        let mut t2 = task("api.2", 31001);
        t2.changed_ms = at(20);
        let mut a = app("/prod/api", 10000, &[], vec![t1, t2]);
        a.version_ms = at(5);
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![a.clone()]));
        let first = build(&c, &vips);
        assert_eq!(serial(&first.soa), 1_700_000_020);
        let (_, vip_soa) = first.vip_apex.as_ref().unwrap();
        assert_eq!(
            serial(vip_soa),
            serial(&first.soa),
            "the VIP zone's serial follows too"
        );
        // The same state, read by another instance (in another order): the same serial.
        let mut other = Cluster::default();
        other.apply(ClusterUpdate::AppUpserted(a.clone()));
        assert_eq!(serial(&build(&other, &vips).soa), serial(&first.soa));
        // The newest task ends: its event is newer still, and the serial grows, though the
        // newest timestamp left in the state is older.
        let mut ended = task("api.2", 31001);
        ended.state = TaskState::parse("TASK_KILLED");
        ended.changed_ms = at(30);
        c.apply(ClusterUpdate::TaskStatus {
            app_id: "/prod/api".into(),
            task: ended,
        });
        let second = build(&c, &vips);
        assert_eq!(serial(&second.soa), 1_700_000_030);
        // A snapshot without it (an app removed while the stream was down, say), and an
        // app removal without a time: never smaller.
        let mut older = a.clone();
        older.tasks.clear();
        c.apply(ClusterUpdate::Snapshot(vec![older]));
        c.apply(ClusterUpdate::AppRemoved {
            id: "/prod/api".into(),
            at_ms: 0,
        });
        let third = build(&c, &vips);
        assert!(not_before(serial(&second.soa), serial(&third.soa)));
        let (_, vip_soa) = third.vip_apex.as_ref().unwrap();
        assert!(not_before(serial(&second.soa), serial(vip_soa)));
    }

    #[test]
    fn the_vip_zone_has_ns_and_soa() {
        let mut vips = config();
        vips.vip_range = Some(crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap());
        let zone = build(&Cluster::default(), &vips);
        let apex = lookup(&zone, "l4lb.thisdcos.directory.").unwrap();
        assert!(apex.soa.is_some());
        assert!(
            matches!(&apex.ns[..], [r] if matches!(&r.data, RData::NS(ns) if ns.0.to_ascii() == "ns1.l4lb.thisdcos.directory."))
        );
        let ns = lookup(&zone, "ns1.l4lb.thisdcos.directory.").unwrap();
        assert_eq!(ns.a[0].data, RData::A(A("127.0.0.1".parse().unwrap())));
    }

    #[test]
    fn ptr_records_name_the_app_for_task_and_vip_addresses() {
        let mut t1 = task("api.1", 31000);
        t1.host = "10.0.0.1".into();
        let mut t2 = task("web.1", 31001);
        t2.host = "10.0.0.1".into();
        let mut v6 = app("/v6/db", 10002, &[], vec![task("db.1", 31002)]);
        v6.networking = crate::cluster::Networking::Container;
        for t in v6.tasks.values_mut() {
            t.ip_addresses = vec!["fd00::5".parse().unwrap()];
        }
        let mut api = app("/prod/api", 10000, &[], vec![t1]);
        api.ports[0].labels.insert("VIP_0".into(), "/api:80".into());
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![
            api,
            app("/web", 10001, &[], vec![t2]),
            v6,
        ]));
        let mut on = config();
        on.ptr = true;
        on.vip_range = Some(crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap());
        let zone = build(&c, &on);
        let ptrs = |name: &str| -> Vec<String> {
            lookup(&zone, name)
                .map(|n| n.ptr.iter().map(|r| r.data.to_string()).collect())
                .unwrap_or_default()
        };
        // Two apps on one agent: one PTR each, in name order.
        assert_eq!(
            ptrs("1.0.0.10.in-addr.arpa."),
            ["api-prod.marathon.mesos.", "web.marathon.mesos."]
        );
        let v6_owner = Name::from("fd00::5".parse::<IpAddr>().unwrap()).to_ascii();
        assert_eq!(ptrs(&v6_owner), ["db-v6.marathon.mesos."]);
        let vip = zone
            .names
            .iter()
            .find(|(_, n)| {
                n.ptr
                    .iter()
                    .any(|r| r.data.to_string() == "api.marathon.l4lb.thisdcos.directory.")
            })
            .map(|(name, _)| name.to_string())
            .expect("the VIP's address has a PTR");
        assert!(vip.ends_with(".11.in-addr.arpa."), "{vip}");
        // The apexes have SOA and NS; the names between are there (NODATA, not NXDOMAIN).
        for apex in ["in-addr.arpa.", "ip6.arpa."] {
            let node = lookup(&zone, apex).unwrap();
            assert!(node.soa.is_some() && node.ns.len() == 1, "{apex}");
            let name = LowerName::new(&Name::from_ascii(format!("x.{apex}")).unwrap());
            assert!(zone.soa_for(&name).is_some(), "{apex} is served");
        }
        assert!(lookup(&zone, "0.0.10.in-addr.arpa.").is_some());
        assert!(lookup(&zone, "2.0.0.10.in-addr.arpa.").is_none());
        // Off (the default): no reverse zone at all.
        let off = build(&c, &config());
        assert!(off.reverse.is_empty());
        assert!(lookup(&off, "1.0.0.10.in-addr.arpa.").is_none());
        let name = LowerName::new(&Name::from_ascii("1.0.0.10.in-addr.arpa.").unwrap());
        assert!(off.soa_for(&name).is_none(), "not served: relayed");
        // Pending (before the first sync): served, so never forwarded.
        assert!(Zone::pending(&on).soa_for(&name).is_some());
    }

    #[test]
    fn a_63_character_label_keeps_its_srv_records_under_a_cut_name() {
        let long = "a".repeat(61) + "-c";
        let mut a = app(&format!("/{long}"), 10000, &[], vec![task("l.1", 31000)]);
        a.ports[0].name = Some("x".repeat(63));
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![a]));
        let zone = build(&c, &config());
        assert!(lookup(&zone, &format!("{long}.marathon.mesos.")).is_some());
        let cut = "a".repeat(61) + "c";
        let srv = lookup(&zone, &format!("_{cut}._tcp.marathon.mesos.")).unwrap();
        assert_eq!(srv.srv.len(), 1);
        let named = format!("_{}._{cut}._tcp.marathon.mesos.", "x".repeat(62));
        assert_eq!(lookup(&zone, &named).unwrap().srv.len(), 1);
        assert_eq!(zone.problems.len(), 2, "{:?}", zone.problems);
        assert!(zone.problems[0].reason.contains(&format!("`_{cut}`")));
        assert_eq!(zone.problems[1].port_index, Some(0));
    }

    #[test]
    fn slave_names_answer_the_agents() {
        let mut t1 = task("api.1", 31000);
        t1.host = "10.0.0.1".into();
        let mut t2 = task("api.2", 31001);
        t2.host = "10.0.0.2".into();
        let mut t3 = task("web.1", 31002);
        t3.host = "10.0.0.1".into();
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![
            app("/prod/api", 10000, &[], vec![t1, t2]),
            app("/web", 10001, &[], vec![t3]),
        ]));
        let zone = build(&c, &config());
        let slave = lookup(&zone, "slave.mesos.").unwrap();
        let mut agents: Vec<String> = slave.a.iter().map(|r| r.data.to_string()).collect();
        agents.sort();
        assert_eq!(agents, ["10.0.0.1", "10.0.0.2"]);
        let srv = lookup(&zone, "_slave._tcp.mesos.").unwrap();
        let [record] = &srv.srv[..] else {
            panic!("{:?}", srv.srv)
        };
        let RData::SRV(s) = &record.data else {
            panic!()
        };
        assert_eq!(
            (s.port, s.target.to_ascii().as_str()),
            (5051, "slave.mesos.")
        );
        assert!(
            lookup(&zone, "_tcp.mesos.").is_some(),
            "an empty non-terminal"
        );
        // No tasks, no agents: no records (NXDOMAIN for the SRV name).
        let empty = build(&Cluster::default(), &config());
        assert!(lookup(&empty, "_slave._tcp.mesos.").is_none());
    }

    fn srv_ports(zone: &Zone, name: &str) -> BTreeSet<u16> {
        lookup(zone, name)
            .map(|n| {
                n.srv
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(s) => Some(s.port),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Healthy-only names list the tasks Marathon counts healthy and ready and the proxy's
    /// verdicts do not exclude, with the shorter TTL; none healthy: every running task.
    #[test]
    fn healthy_only_names_follow_marathon_health_and_the_proxys_verdicts() {
        let tasks = (1..=3u16)
            .map(|i| {
                let mut t = task(&format!("api.{i}"), 31000 + i);
                t.host = format!("10.0.0.{i}").into();
                t.healthy = Some(true);
                t
            })
            .collect();
        let mut a = app("/api", 10000, &[], tasks);
        a.health_checks = 1;
        a.tasks.get_mut("api.1").unwrap().healthy = Some(false);
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![a.clone()]));
        let mut healthy = config();
        healthy.healthy = HealthyDns { only: true, ttl: 3 };
        let down = Verdicts {
            unavailable: ["api.2".into()].into(),
        };
        let zone = build_with(&c, &healthy, &down);
        let node = lookup(&zone, "api.marathon.mesos.").unwrap();
        let ips: Vec<String> = node.a.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ips, ["10.0.0.3"]);
        assert_eq!(node.a[0].ttl, 3, "healthy-only names carry dns.healthy_ttl");
        assert_eq!(
            srv_ports(&zone, "_api._tcp.marathon.mesos."),
            [31003].into()
        );
        assert!(zone.fail_static.is_empty());
        // Each task's own name still resolves (what an SRV answer listed a moment ago).
        assert_eq!(zone.listed[0].tasks.len(), 3);

        // Off (no switch, no label): every running task, the zone's TTL.
        let zone = build_with(&c, &config(), &down);
        let node = lookup(&zone, "api.marathon.mesos.").unwrap();
        assert_eq!((node.a.len(), node.a[0].ttl), (3, 60));
        // The label turns it on for one app, or off under the switch.
        let mut labelled = a.clone();
        labelled
            .labels
            .insert(HEALTHY_ONLY_LABEL.into(), "true".into());
        let mut c2 = Cluster::default();
        c2.apply(ClusterUpdate::Snapshot(vec![labelled.clone()]));
        let zone = build_with(&c2, &config(), &down);
        assert_eq!(lookup(&zone, "api.marathon.mesos.").unwrap().a.len(), 1);
        labelled
            .labels
            .insert(HEALTHY_ONLY_LABEL.into(), "false".into());
        c2.apply(ClusterUpdate::Snapshot(vec![labelled]));
        let zone = build_with(&c2, &healthy, &down);
        assert_eq!(lookup(&zone, "api.marathon.mesos.").unwrap().a.len(), 3);

        // None healthy: every running task (fail static), and said.
        let all_down = Verdicts {
            unavailable: ["api.2".into(), "api.3".into()].into(),
        };
        let zone = build_with(&c, &healthy, &all_down);
        assert_eq!(lookup(&zone, "api.marathon.mesos.").unwrap().a.len(), 3);
        assert_eq!(
            srv_ports(&zone, "_api._tcp.marathon.mesos."),
            [31001, 31002, 31003].into()
        );
        assert_eq!(zone.fail_static, vec![crate::cluster::AppId::from("/api")]);
    }

    /// A deployment group's split (blue 90 over three tasks, green 10 over one) is answered
    /// under the group's name with weights in proportion to each task's share of the traffic;
    /// a weight override moves them; an app of weight 0 is not listed; a group named like an
    /// app keeps the app's records and is reported.
    #[test]
    fn a_deployment_groups_split_is_answered_as_weighted_srv_records() {
        let blue = [
            ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
            ("HAPROXY_DEPLOYMENT_ALT_PORT", "10100"),
            ("SWITCHYARD_0_WEIGHT", "90"),
        ];
        let green = [
            ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
            ("HAPROXY_DEPLOYMENT_ALT_PORT", "10100"),
            ("SWITCHYARD_0_WEIGHT", "10"),
        ];
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![
            app(
                "/shop-blue",
                10000,
                &blue,
                vec![task("b.1", 1), task("b.2", 2), task("b.3", 3)],
            ),
            app("/shop-green", 10000, &green, vec![task("g.1", 4)]),
        ]));
        let compile_config =
            crate::routing::CompileConfig::group("*", "127.0.0.1".parse().unwrap());
        use std::collections::BTreeMap;
        let weights = |zone: &Zone| -> BTreeMap<u16, u16> {
            lookup(zone, "_shop._tcp.marathon.mesos.")
                .map(|n| {
                    n.srv
                        .iter()
                        .map(|r| match &r.data {
                            RData::SRV(s) => (s.port, s.weight),
                            _ => panic!(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let table = crate::routing::compile(&c, &compile_config);
        let splits = route_splits(&table);
        assert_eq!(splits.len(), 1, "{splits:?}");
        let zone = build_from(&c, &config(), &Verdicts::default(), &splits);
        // Blue: 90 over three tasks, 30 each; green: 10 on one. The heaviest weighs 10,000.
        assert_eq!(
            weights(&zone),
            BTreeMap::from([(1, 10_000), (2, 10_000), (3, 10_000), (4, 3_333)])
        );
        // The apps' own names are unchanged.
        assert_eq!(
            lookup(&zone, "_shop-blue._tcp.marathon.mesos.")
                .unwrap()
                .srv
                .len(),
            3
        );

        // A runtime override (50/50) as the table routes it.
        let mut overridden = compile_config.clone();
        overridden.weight_overrides.insert(
            "shop".into(),
            BTreeMap::from([("/shop-blue".into(), 50), ("/shop-green".into(), 50)]),
        );
        let splits = route_splits(&crate::routing::compile(&c, &overridden));
        let zone = build_from(&c, &config(), &Verdicts::default(), &splits);
        assert_eq!(
            weights(&zone),
            BTreeMap::from([(1, 3_333), (2, 3_333), (3, 3_333), (4, 10_000)])
        );
        // Green at 0: not listed (the proxy sends it nothing).
        let mut zero = compile_config.clone();
        zero.weight_overrides.insert(
            "shop".into(),
            BTreeMap::from([("/shop-blue".into(), 100), ("/shop-green".into(), 0)]),
        );
        let splits = route_splits(&crate::routing::compile(&c, &zero));
        let zone = build_from(&c, &config(), &Verdicts::default(), &splits);
        assert_eq!(
            weights(&zone),
            BTreeMap::from([(1, 10_000), (2, 10_000), (3, 10_000)])
        );

        // An app named like the group: its own records answer, and the group is reported.
        let mut with_namesake = c.clone();
        with_namesake.apply(ClusterUpdate::AppUpserted(app(
            "/shop",
            10200,
            &[],
            vec![task("s.1", 9)],
        )));
        let splits = route_splits(&crate::routing::compile(&with_namesake, &compile_config));
        let zone = build_from(&with_namesake, &config(), &Verdicts::default(), &splits);
        assert_eq!(weights(&zone), BTreeMap::from([(9, 1)]));
        assert!(
            zone.problems
                .iter()
                .any(|p| p.reason.contains("deployment group `shop`")),
            "{:?}",
            zone.problems
        );
    }

    #[test]
    fn ipv6_tasks_get_aaaa() {
        let mut t = task("v6.1", 80);
        t.ip_addresses = vec!["fd00::5".parse().unwrap()];
        let mut a = app("/v6", 10000, &[], vec![t]);
        a.networking = Networking::Container;
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![a]));
        let zone = build(&c, &config());
        assert_eq!(lookup(&zone, "v6.marathon.mesos.").unwrap().aaaa.len(), 1);
    }
}
