//! The zone builder as it was before the compact form (hickory `Record`s per name in a map),
//! kept for the differential test only: the compact zone must answer every name and type as
//! this one did.

#![allow(dead_code)]

#[path = "legacy/mesos.rs"]
mod mesos;

use rustc_hash::FxHashMap;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record};

use crate::cluster::names::{LabelRule, label, service_label, tag, task_name};

#[path = "legacy/splits.rs"]
mod splits;
use crate::cluster::{App, Cluster, Networking, Protocol, Task, TaskState};
use crate::zone::RouteSplit;

use super::{
    AGENT_PORT, IpSource, Node, REVERSE_ZONES, VIP_TTL, Verdicts, ZoneConfig, healthy_only,
};

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

/// A task's addresses per the configured sources; empty when none yields any.
fn task_addrs(cluster: &Cluster, app: &App, task: &Task, sources: &[IpSource]) -> Vec<IpAddr> {
    let agent = || -> Vec<IpAddr> { task.host.resolve(&cluster.agents).into_iter().collect() };
    for source in sources {
        let addrs = match (source, app.networking) {
            (IpSource::Auto, Networking::Container) | (IpSource::NetInfo, _) => {
                task.ip_addresses.to_vec()
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

/// A served zone's top: its SOA (`root.{ns}` as the mailbox, the given serial and negative TTL)
/// and its NS record on `apex`'s node. Returns the SOA, for negative answers' authority section.
pub(crate) fn zone_top(
    names: &mut FxHashMap<LowerName, Node>,
    apex: &Name,
    ns: &Name,
    serial: u32,
    ttl: u32,
    minimum: u32,
) -> Record {
    let rname = Name::from_ascii("root")
        .expect("a valid label")
        .append_name(ns)
        .unwrap_or_else(|_| ns.clone());
    let soa = Record::from_rdata(
        apex.clone(),
        ttl,
        RData::SOA(SOA::new(ns.clone(), rname, serial, 60, 600, 86400, minimum)),
    );
    let node = names.entry(LowerName::new(apex)).or_default();
    node.soa = Some(Box::new(soa.clone()));
    node.ns = vec![Record::from_rdata(
        apex.clone(),
        ttl,
        RData::NS(NS(ns.clone())),
    )];
    soa
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
    let soa = zone_top(names, &apex, &ns, serial, ttl, VIP_TTL);
    names.entry(LowerName::new(&ns)).or_default();
    (LowerName::new(&apex), soa)
}

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
            let soa = zone_top(names, &apex, &ns1, serial, ttl, ttl);
            (LowerName::new(&apex), soa)
        })
        .collect()
}
