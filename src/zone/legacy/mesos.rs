#![allow(dead_code)]
// The names of what only the Mesos master knows, as Mesos-DNS serves them (its naming doc is
// the contract), and DC/OS's names for every task:
//
// - `{task}.{framework}.{domain}` A/AAAA (by the IP sources), `{task}.{framework}.slave.{domain}`
//   (the agent), and SRV `_{task}._tcp|_udp.{framework}.{domain}` from the task's DiscoveryInfo
//   ports (with `_{port name}._{task}._{proto}.…` for named ones), else from its port
//   resources (TCP and UDP), each to a name of its own task;
// - `{framework}.{domain}`: the scheduler's host;
// - `leader.{domain}`, `_leader._tcp|_udp.{domain}`, `master.{domain}`, `master{N}.{domain}`;
// - `{task}.{framework}.autoip|agentip|containerip.dcos.thisdcos.directory` for every running
//   task, Marathon's too;
// - `{vip}.{framework}.l4lb.thisdcos.directory` for VIPs declared on other frameworks' tasks.
//
// Marathon's tasks that Marathon also reports are named by the Marathon rules in `zone.rs`,
// once.

use std::collections::hash_map::Entry;
use std::net::IpAddr;

use hickory_proto::rr::domain::Label;
use hickory_proto::rr::rdata::SRV;
use hickory_proto::rr::{LowerName, Name, RData, Record};
use rustc_hash::FxHashMap;

use super::{Builder, IpSource, Node, ZoneConfig};
use crate::cluster::mesos::{Agent, MEMBER_PREFIX, MesosTask};
use crate::cluster::names::{LabelRule, label, service_label, tag, task_name};
use crate::cluster::{Cluster, Networking, Protocol, TaskState};

/// DC/OS's task-name zone.
pub const DCOS_DOMAIN: &str = "dcos.thisdcos.directory";

impl Builder {
    fn add_srv(&mut self, owner: &Name, port: u16, target: &Name, ttl: u32) {
        let data = RData::SRV(SRV::new(0, 1, port, target.clone()));
        let node = self.names.entry(LowerName::new(owner)).or_default();
        if !node.srv.iter().any(|r| r.data == data) {
            node.srv.push(Record::from_rdata(Name::root(), ttl, data));
        }
    }
}

/// Every name between `name` and `apex` exists (an empty non-terminal answers NODATA).
fn ancestors(names: &mut FxHashMap<LowerName, Node>, name: &Name, apex: &Name) {
    let mut current = name.base_name();
    while current.num_labels() > apex.num_labels() {
        let key = LowerName::new(&current);
        if names.contains_key(&key) {
            return; // its ancestors were added with it
        }
        names.insert(key, Node::default());
        current = current.base_name();
    }
}

/// `{label}.{base}`: the label is sanitized (`cluster::names`), checked as the parse of the
/// whole name would check it, without formatting and parsing the name's text.
fn under(base: &Name, label: &str) -> Option<Name> {
    base.prepend_label(Label::from_ascii(label).ok()?).ok()
}

/// A name under which many tasks' names are (`{framework}.{domain}.`, `_tcp.{framework}.…`,
/// `{framework}.autoip.{DCOS_DOMAIN}.`), made once per build; its own ancestors (and itself,
/// an empty non-terminal until records land on it) are added the first time a name under it
/// is, so that each task's name costs one `Name` and no walk up to the apex.
struct Parent {
    name: Option<Name>,
    added: bool,
}

impl Parent {
    fn new(name: Option<Name>) -> Parent {
        Parent { name, added: false }
    }

    /// `{label}.{parent}`.
    fn under(&self, label: &str) -> Option<Name> {
        under(self.name.as_ref()?, label)
    }

    /// The parent and its ancestors up to `apex` exist afterwards, as [`ancestors`] of a
    /// child adds them (called once a child is added).
    fn ensure(&mut self, names: &mut FxHashMap<LowerName, Node>, apex: &Name) {
        let Some(parent) = self.name.as_ref().filter(|_| !self.added) else {
            return;
        };
        self.added = true;
        if parent.num_labels() > apex.num_labels()
            && let Entry::Vacant(vacant) = names.entry(LowerName::new(parent))
        {
            vacant.insert(Node::default());
            ancestors(names, parent, apex);
        }
    }
}

/// One framework's names, made once per build (its label, its parents).
struct FrameworkNames {
    /// The framework's label; empty names nothing.
    label: String,
    /// `{fw}.{domain}.`
    tasks: Parent,
    /// `{fw}.slave.{domain}.`
    slave: Parent,
    /// `_tcp.{fw}.{domain}.` and `_udp.{fw}.{domain}.`
    tcp: Parent,
    udp: Parent,
}

impl FrameworkNames {
    fn new(name: &str, config: &ZoneConfig) -> FrameworkNames {
        let label = label(name, config.label_rule);
        let parse = |text: String| Name::from_ascii(text).ok().filter(|_| !label.is_empty());
        let domain = &config.domain;
        FrameworkNames {
            tasks: Parent::new(parse(format!("{label}.{domain}."))),
            slave: Parent::new(parse(format!("{label}.slave.{domain}."))),
            tcp: Parent::new(parse(format!("_tcp.{label}.{domain}."))),
            udp: Parent::new(parse(format!("_udp.{label}.{domain}."))),
            label,
        }
    }
}

fn fqdn(text: String) -> Option<Name> {
    Name::from_ascii(text).ok()
}

/// Where a Mesos task's ports are reached: its container address on a named network, else the
/// agent's.
fn service_addrs(task: &MesosTask, agent: Option<IpAddr>) -> Vec<IpAddr> {
    if task.container_network && !task.container_ips.is_empty() {
        task.container_ips.clone()
    } else {
        agent.into_iter().collect()
    }
}

/// A task's addresses by the configured IP sources (Mesos-DNS's `IPSources`).
fn task_addrs(task: &MesosTask, agent: Option<IpAddr>, sources: &[IpSource]) -> Vec<IpAddr> {
    for source in sources {
        let addrs = match source {
            IpSource::Auto => service_addrs(task, agent),
            IpSource::NetInfo => task.container_ips.clone(),
            IpSource::Host => agent.into_iter().collect(),
        };
        if !addrs.is_empty() {
            return addrs;
        }
    }
    Vec::new()
}

/// Adds the Mesos names to `names`; returns the DC/OS zone's apex and SOA.
pub(super) fn add(
    cluster: &Cluster,
    config: &ZoneConfig,
    names: &mut FxHashMap<LowerName, Node>,
    serial: u32,
) -> (LowerName, Record) {
    let mut b = Builder {
        framework: String::new(),
        names: std::mem::take(names),
    };
    let domain = &config.domain;
    let apex = Name::from_ascii(format!("{domain}.")).unwrap_or_else(|_| Name::root());
    let m = &cluster.mesos;
    let ttl = config.ttl;
    let resolve = |host: &crate::cluster::Host| host.resolve(&cluster.agents);
    let agent_ip = |agent: Option<&Agent>| agent.and_then(|a| resolve(&a.host));

    let owned = cluster.mesos.owned_by_marathon(&cluster.apps);
    // Room for the names to come at once (at least a task's own name and its SRV target per
    // running task): the map does not grow, and rehash, a zone's worth of entries at a time.
    let running = m
        .own_tasks(&owned)
        .filter(|(t, _, _)| t.state == TaskState::Running)
        .count();
    b.names.reserve(running * 5);
    let mut frameworks: FxHashMap<&str, FrameworkNames> = FxHashMap::default();
    for (task, framework, agent) in m.own_tasks(&owned) {
        if task.state != TaskState::Running {
            continue;
        }
        let Some(framework) = framework else { continue };
        let fwn = frameworks
            .entry(&*framework.id)
            .or_insert_with(|| FrameworkNames::new(&framework.name, config));
        let tl = label(task.dns_name(), config.label_rule);
        if fwn.label.is_empty() || tl.is_empty() {
            continue;
        }
        let agent_addr = agent_ip(agent);
        // Both names valid, or neither added (as when they were parsed from text).
        let (Some(task_fqdn), Some(slave_fqdn)) = (fwn.tasks.under(&tl), fwn.slave.under(&tl))
        else {
            continue;
        };
        for ip in task_addrs(task, agent_addr, &config.ip_sources) {
            b.add_addr(&task_fqdn, ip, ttl);
        }
        fwn.tasks.ensure(&mut b.names, &apex);
        if let Some(ip) = agent_addr {
            b.add_addr(&slave_fqdn, ip, ttl);
            fwn.slave.ensure(&mut b.names, &apex);
        }
        // SRV: to a name of this task alone, whose address is where the port is reached.
        let targets = service_addrs(task, agent_addr);
        if targets.is_empty() {
            continue;
        }
        let host = agent
            .map(|a| label(&a.host, LabelRule::Rfc1123))
            .unwrap_or_default();
        let host = &host[..host.len().min(20)];
        let tag = tag(&task.id);
        let room = 63 - tag.len() - 1 - if host.is_empty() { 0 } else { host.len() + 1 };
        let base = tl[..tl.len().min(room)].trim_end_matches('-');
        let unique = if host.is_empty() {
            format!("{base}-{tag}")
        } else {
            format!("{base}-{tag}-{host}")
        };
        let Some(target) = fwn.tasks.under(&unique) else {
            continue;
        };
        for &ip in &targets {
            b.add_addr(&target, ip, ttl);
        }
        let (service, _) = service_label(&tl);
        let mut srv = |b: &mut Builder, name: Option<&str>, proto: &str, port: u16| {
            let parent = if proto == "_tcp" {
                &mut fwn.tcp
            } else {
                &mut fwn.udp
            };
            let Some(owner) = parent.under(&service) else {
                return;
            };
            b.add_srv(&owner, port, &target, ttl);
            parent.ensure(&mut b.names, &apex);
            if let Some(named) = name.and_then(|n| under(&owner, n)) {
                b.add_srv(&named, port, &target, ttl);
                // Its parent is `owner`, which exists.
            }
        };
        let discovered = task.discovery.as_ref().filter(|d| !d.ports.is_empty());
        match discovered {
            Some(discovery) => {
                for port in &discovery.ports {
                    let name = port
                        .name
                        .as_deref()
                        .map(|n| label(n, config.label_rule))
                        .filter(|n| !n.is_empty())
                        .map(|n| service_label(&n).0);
                    let protocols: &[&str] = match port.protocol {
                        Protocol::Tcp => &["_tcp"],
                        Protocol::Udp => &["_udp"],
                        Protocol::TcpUdp => &["_tcp", "_udp"],
                    };
                    for proto in protocols {
                        srv(&mut b, name.as_deref(), proto, port.number);
                    }
                }
            }
            None => {
                for &port in &task.port_resources {
                    for proto in ["_tcp", "_udp"] {
                        srv(&mut b, None, proto, port);
                    }
                }
            }
        }
    }

    // `{framework}.{domain}`: where each framework's scheduler runs.
    for framework in m.frameworks.values() {
        let name = match frameworks.get(&*framework.id) {
            Some(names) => names.tasks.name.clone(),
            None => FrameworkNames::new(&framework.name, config).tasks.name,
        };
        let (Some(ip), Some(name)) = (resolve(&framework.host), name) else {
            continue;
        };
        b.add_addr(&name, ip, ttl);
    }

    masters(cluster, config, &mut b);
    let dcos = dcos_zone(cluster, config, &mut b, &owned, serial);
    l4lb_names(cluster, config, &mut b);
    *names = b.names;
    dcos
}

/// `leader.{domain}` and its `_leader._tcp`/`_udp` SRV, `master.{domain}` (every master) and
/// `master{N}.{domain}` (the configured ones in order), as Mesos-DNS serves them.
fn masters(cluster: &Cluster, config: &ZoneConfig, b: &mut Builder) {
    let m = &cluster.mesos;
    let domain = &config.domain;
    let ttl = config.ttl;
    let ip = |host: &crate::cluster::Host| host.resolve(&cluster.agents);
    let Some(master) = fqdn(format!("master.{domain}.")) else {
        return;
    };
    for (n, each) in m.masters.iter().enumerate() {
        let Some(addr) = ip(&each.host) else { continue };
        b.add_addr(&master, addr, ttl);
        if let Some(name) = fqdn(format!("master{n}.{domain}.")) {
            b.add_addr(&name, addr, ttl);
        }
    }
    let Some(leader) = &m.leader else { return };
    let Some(addr) = ip(&leader.host) else { return };
    let (Some(name), Some(tcp), Some(udp)) = (
        fqdn(format!("leader.{domain}.")),
        fqdn(format!("_leader._tcp.{domain}.")),
        fqdn(format!("_leader._udp.{domain}.")),
    ) else {
        return;
    };
    b.add_addr(&name, addr, ttl);
    b.add_addr(&master, addr, ttl);
    b.add_srv(&tcp, leader.port, &name, ttl);
    b.add_srv(&udp, leader.port, &name, ttl);
    for between in ["_tcp", "_udp"] {
        if let Some(n) = fqdn(format!("{between}.{domain}.")) {
            b.names.entry(LowerName::new(&n)).or_default();
        }
    }
}

/// DC/OS's `{task}.{framework}.autoip|agentip|containerip.dcos.thisdcos.directory`, for every
/// running task: Marathon's (`{task}` its app's name) and every other framework's.
fn dcos_zone(
    cluster: &Cluster,
    config: &ZoneConfig,
    b: &mut Builder,
    owned: &std::collections::HashSet<crate::cluster::TaskId>,
    serial: u32,
) -> (LowerName, Record) {
    let apex = Name::from_ascii(format!("{DCOS_DOMAIN}.")).expect("a valid name");
    let ttl = config.ttl;
    // A framework's three parents (`{fw}.autoip|agentip|containerip.{DCOS_DOMAIN}.`), made
    // once per build; `None` when its label is empty.
    let mut parents: FxHashMap<String, Option<[Parent; 3]>> = FxHashMap::default();
    let kinds = ["autoip", "agentip", "containerip"];
    let mut add = |b: &mut Builder,
                   tl: &str,
                   framework: &str,
                   agent: Option<IpAddr>,
                   container: &[IpAddr],
                   on_container_network: bool| {
        if tl.is_empty() {
            return;
        }
        if !parents.contains_key(framework) {
            let fw = label(framework, config.label_rule);
            let made = (!fw.is_empty()).then(|| {
                kinds.map(|kind| {
                    Parent::new(Name::from_ascii(format!("{fw}.{kind}.{DCOS_DOMAIN}.")).ok())
                })
            });
            parents.insert(framework.to_string(), made);
        }
        let Some(Some(parents)) = parents.get_mut(framework) else {
            return;
        };
        let auto = if on_container_network && !container.is_empty() {
            container
        } else {
            agent.as_slice()
        };
        let addrs: [&[IpAddr]; 3] = [auto, agent.as_slice(), container];
        for (parent, addrs) in parents.iter_mut().zip(addrs) {
            let Some(name) = parent.under(tl) else {
                continue;
            };
            for &ip in addrs {
                b.add_addr(&name, ip, ttl);
            }
            parent.ensure(&mut b.names, &apex);
        }
    };
    for app in cluster.apps.values() {
        let tl = label(&task_name(&app.id), config.label_rule);
        for task in app.tasks.values().filter(|t| t.state == TaskState::Running) {
            add(
                b,
                &tl,
                "marathon",
                task.host.resolve(&cluster.agents),
                &task.ip_addresses,
                app.networking == Networking::Container,
            );
        }
    }
    let m = &cluster.mesos;
    for (task, framework, agent) in m.own_tasks(owned) {
        let Some(framework) = framework.filter(|_| task.state == TaskState::Running) else {
            continue;
        };
        add(
            b,
            &label(task.dns_name(), config.label_rule),
            &framework.name,
            agent.and_then(|a| a.host.resolve(&cluster.agents)),
            &task.container_ips,
            task.container_network,
        );
    }
    let ns = Name::from_ascii(format!("ns1.{DCOS_DOMAIN}.")).expect("a valid name");
    let soa = super::zone_top(&mut b.names, &apex, &ns, serial, ttl, ttl);
    match config.ns_addr {
        Some(ip) => b.add_addr(&ns, ip, ttl),
        None => {
            b.names.entry(LowerName::new(&ns)).or_default();
        }
    }
    (LowerName::new(&apex), soa)
}

/// `{vip}.{framework}.l4lb.thisdcos.directory` for named VIPs declared on other frameworks'
/// tasks (Marathon's are `vip_zone`'s): under each framework that declares it.
fn l4lb_names(cluster: &Cluster, config: &ZoneConfig, b: &mut Builder) {
    use crate::routing::vip::{self, VIP_DOMAIN, VipTarget};
    let Some(range) = config.vip_range else {
        return;
    };
    let (members, _) = vip::declared(cluster);
    let addresses = vip::addresses(&members, &range);
    for ((target, _), ids) in &members {
        let (VipTarget::Named(name), Some(&ip)) = (target, addresses.get(target)) else {
            continue;
        };
        for (id, _) in ids {
            let Some(task_id) = id.strip_prefix(MEMBER_PREFIX) else {
                continue;
            };
            let framework = cluster
                .mesos
                .tasks
                .get(task_id)
                .and_then(|t| cluster.mesos.frameworks.get(&t.framework_id));
            let Some(framework) = framework else { continue };
            let fw = label(&framework.name, LabelRule::Rfc1123);
            let Some(owner) = fqdn(format!("{}.{fw}.{VIP_DOMAIN}.", vip::dns_label(name))) else {
                continue;
            };
            b.add_addr(&owner, ip, super::VIP_TTL);
            if let Some(between) = fqdn(format!("{fw}.{VIP_DOMAIN}.")) {
                b.names.entry(LowerName::new(&between)).or_default();
            }
        }
    }
}
