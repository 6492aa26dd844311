//! The names of what only the Mesos master knows, as Mesos-DNS serves them (its naming doc is
//! the contract), and DC/OS's names for every task:
//!
//! - `{task}.{framework}.{domain}` A/AAAA (by the IP sources), `{task}.{framework}.slave.{domain}`
//!   (the agent), and SRV `_{task}._tcp|_udp.{framework}.{domain}` from the task's DiscoveryInfo
//!   ports (with `_{port name}._{task}._{proto}.…` for named ones), else from its port
//!   resources (TCP and UDP), each to a name of its own task;
//! - `{framework}.{domain}`: the scheduler's host;
//! - `leader.{domain}`, `_leader._tcp|_udp.{domain}`, `master.{domain}`, `master{N}.{domain}`;
//! - `{task}.{framework}.autoip|agentip|containerip.dcos.thisdcos.directory` for every running
//!   task, Marathon's too;
//! - `{vip}.{framework}.l4lb.thisdcos.directory` for VIPs declared on other frameworks' tasks.
//!
//! Marathon's tasks that Marathon also reports are named by the Marathon rules in `zone.rs`,
//! once.

use std::net::IpAddr;

use super::compact::{Builder, NameId};
use super::{IpSource, ZoneConfig};
use crate::cluster::mesos::{Agent, MEMBER_PREFIX, MesosTask};
use crate::cluster::names::{LabelRule, label, service_label, tag};
use crate::cluster::{Cluster, Networking, Protocol, Task, TaskState};
use hickory_proto::rr::{LowerName, Record};
use rustc_hash::FxHashMap;

/// DC/OS's task-name zone.
pub const DCOS_DOMAIN: &str = "dcos.thisdcos.directory";

/// The names DC/OS gives every task under its framework: by the task's own address, its
/// agent's, its container's.
const DCOS_KINDS: [&str; 3] = ["autoip", "agentip", "containerip"];

/// Every name between `name` and `apex` exists (an empty non-terminal answers NODATA).
fn ancestors(b: &mut Builder, name: NameId, apex_labels: usize) {
    let mut current = b.names.parent(name);
    while b.names.labels(current) > apex_labels {
        if b.exists(current) {
            return; // its ancestors were added with it
        }
        b.touch(current);
        current = b.names.parent(current);
    }
}

/// A name under which many tasks' names are (`{framework}.{domain}.`, `_tcp.{framework}.…`,
/// `{framework}.autoip.{DCOS_DOMAIN}.`), made once per build; its own ancestors (and itself,
/// an empty non-terminal until records land on it) are added the first time a name under it
/// is, so that each task's name costs one lookup and no walk up to the apex.
struct Parent {
    name: Option<NameId>,
    added: bool,
}

impl Parent {
    fn new(name: Option<NameId>) -> Parent {
        Parent { name, added: false }
    }

    /// `{label}.{parent}`.
    fn under(&self, b: &mut Builder, label: &str) -> Option<NameId> {
        b.names.child(label.as_bytes(), self.name?)
    }

    /// The parent and its ancestors up to `apex` exist afterwards, as [`ancestors`] of a
    /// child adds them (called once a child is added).
    fn ensure(&mut self, b: &mut Builder, apex_labels: usize) {
        let Some(parent) = self.name.filter(|_| !self.added) else {
            return;
        };
        self.added = true;
        if b.names.labels(parent) > apex_labels && !b.exists(parent) {
            b.touch(parent);
            ancestors(b, parent, apex_labels);
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
    fn new(b: &mut Builder, name: &str, config: &ZoneConfig) -> FrameworkNames {
        let label = label(name, config.label_rule);
        let empty = label.is_empty();
        let mut parse = |text: String| b.names.parse(&text).filter(|_| !empty);
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

fn fqdn(b: &mut Builder, text: String) -> Option<NameId> {
    b.names.parse(&text)
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

/// Adds the Mesos names; returns the DC/OS zone's apex and SOA.
pub(super) fn add(
    cluster: &Cluster,
    config: &ZoneConfig,
    b: &mut Builder,
    serial: u32,
    app_labels: &[String],
    marathon_dcos: MarathonDcos,
) -> (LowerName, Record) {
    let domain = &config.domain;
    let root = b.names.intern(&[0]);
    let apex = b.names.parse(&format!("{domain}.")).unwrap_or(root);
    let apex_labels = b.names.labels(apex);
    let m = &cluster.mesos;
    let ttl = config.ttl;
    let resolve = |host: &crate::cluster::Host| host.resolve(&cluster.agents);
    let agent_ip = |agent: Option<&Agent>| agent.and_then(|a| resolve(&a.host));

    // Which Mesos tasks Marathon reports too (built only when Mesos reports tasks).
    let owned = m.owned_by_marathon(&cluster.apps);
    let mut frameworks: FxHashMap<&str, FrameworkNames> = FxHashMap::default();
    for (task, framework, agent) in m.own_tasks(&owned) {
        if task.state != TaskState::Running {
            continue;
        }
        let Some(framework) = framework else { continue };
        let fwn = frameworks
            .entry(&*framework.id)
            .or_insert_with(|| FrameworkNames::new(b, &framework.name, config));
        let tl = label(task.dns_name(), config.label_rule);
        if fwn.label.is_empty() || tl.is_empty() {
            continue;
        }
        let agent_addr = agent_ip(agent);
        // Both names valid, or neither added (as when they were parsed from text).
        let (Some(task_fqdn), Some(slave_fqdn)) =
            (fwn.tasks.under(b, &tl), fwn.slave.under(b, &tl))
        else {
            continue;
        };
        for ip in task_addrs(task, agent_addr, &config.ip_sources) {
            b.add_addr(task_fqdn, ip, ttl);
        }
        fwn.tasks.ensure(b, apex_labels);
        if let Some(ip) = agent_addr {
            b.add_addr(slave_fqdn, ip, ttl);
            fwn.slave.ensure(b, apex_labels);
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
        let Some(target) = fwn.tasks.under(b, &unique) else {
            continue;
        };
        for &ip in &targets {
            b.add_addr(target, ip, ttl);
        }
        let (service, _) = service_label(&tl);
        let mut srv = |b: &mut Builder, name: Option<&str>, proto: &str, port: u16| {
            let parent = if proto == "_tcp" {
                &mut fwn.tcp
            } else {
                &mut fwn.udp
            };
            let Some(owner) = parent.under(b, &service) else {
                return;
            };
            b.add_srv(owner, 1, port, target, ttl, true);
            parent.ensure(b, apex_labels);
            if let Some(named) = name.and_then(|n| b.names.child(n.as_bytes(), owner)) {
                b.add_srv(named, 1, port, target, ttl, true);
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
                        srv(b, name.as_deref(), proto, port.number);
                    }
                }
            }
            None => {
                for &port in &task.port_resources {
                    for proto in ["_tcp", "_udp"] {
                        srv(b, None, proto, port);
                    }
                }
            }
        }
    }

    // `{framework}.{domain}`: where each framework's scheduler runs.
    for framework in m.frameworks.values() {
        let name = match frameworks.get(&*framework.id) {
            Some(names) => names.tasks.name,
            None => FrameworkNames::new(b, &framework.name, config).tasks.name,
        };
        let (Some(ip), Some(name)) = (resolve(&framework.host), name) else {
            continue;
        };
        b.add_addr(name, ip, ttl);
    }

    masters(cluster, config, b);
    let dcos = dcos_zone(
        cluster,
        config,
        b,
        &owned,
        serial,
        app_labels,
        marathon_dcos,
    );
    l4lb_names(cluster, config, b);
    dcos
}

/// `leader.{domain}` and its `_leader._tcp`/`_udp` SRV, `master.{domain}` (every master) and
/// `master{N}.{domain}` (the configured ones in order), as Mesos-DNS serves them.
fn masters(cluster: &Cluster, config: &ZoneConfig, b: &mut Builder) {
    let m = &cluster.mesos;
    let domain = &config.domain;
    let ttl = config.ttl;
    let ip = |host: &crate::cluster::Host| host.resolve(&cluster.agents);
    let Some(master) = fqdn(b, format!("master.{domain}.")) else {
        return;
    };
    for (n, each) in m.masters.iter().enumerate() {
        let Some(addr) = ip(&each.host) else { continue };
        b.add_addr(master, addr, ttl);
        if let Some(name) = fqdn(b, format!("master{n}.{domain}.")) {
            b.add_addr(name, addr, ttl);
        }
    }
    let Some(leader) = &m.leader else { return };
    let Some(addr) = ip(&leader.host) else { return };
    let (Some(name), Some(tcp), Some(udp)) = (
        fqdn(b, format!("leader.{domain}.")),
        fqdn(b, format!("_leader._tcp.{domain}.")),
        fqdn(b, format!("_leader._udp.{domain}.")),
    ) else {
        return;
    };
    b.add_addr(name, addr, ttl);
    b.add_addr(master, addr, ttl);
    b.add_srv(tcp, 1, leader.port, name, ttl, true);
    b.add_srv(udp, 1, leader.port, name, ttl, true);
    for between in ["_tcp", "_udp"] {
        if let Some(n) = fqdn(b, format!("{between}.{domain}.")) {
            b.touch(n);
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
    app_labels: &[String],
    marathon_dcos: MarathonDcos,
) -> (LowerName, Record) {
    let apex = b
        .names
        .parse(&format!("{DCOS_DOMAIN}."))
        .expect("a valid name");
    let apex_labels = b.names.labels(apex);
    let ttl = config.ttl;
    // A framework's three parents (`{fw}.autoip|agentip|containerip.{DCOS_DOMAIN}.`), made
    // once per build; `None` when its label is empty.
    let mut parents: FxHashMap<String, Option<[Parent; 3]>> = FxHashMap::default();
    let kinds = DCOS_KINDS;
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
                kinds.map(|kind| Parent::new(b.names.parse(&format!("{fw}.{kind}.{DCOS_DOMAIN}."))))
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
            let Some(name) = parent.under(b, tl) else {
                continue;
            };
            for &ip in addrs {
                b.add_addr(name, ip, ttl);
            }
            parent.ensure(b, apex_labels);
        }
    };
    // Marathon's tasks, unless the zone build added them app by app.
    let mut marathon = marathon_dcos;
    if !marathon.done {
        for (app, tl) in cluster.apps.values().zip(app_labels) {
            let running: Vec<&Task> = app
                .tasks
                .values()
                .filter(|t| t.state == TaskState::Running)
                .collect();
            marathon.add_app(b, cluster, app, tl, &running);
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
    let ns = b
        .names
        .parse(&format!("ns1.{DCOS_DOMAIN}."))
        .expect("a valid name");
    let soa = super::zone_top(b, apex, ns, serial, ttl, ttl);
    match config.ns_addr {
        Some(ip) => b.add_addr(ns, ip, ttl),
        None => b.touch(ns),
    }
    (LowerName::new(&b.names.name(apex)), soa)
}

/// DC/OS's names of Marathon's tasks, `{app}.marathon.autoip|agentip|containerip.{DCOS_DOMAIN}`,
/// added app by app: by the zone build while it reads each app's tasks for its own names (the
/// model's memory is then read once, not in a second pass over every task), else by
/// [`dcos_zone`]. Each app's records are added in app order either way.
pub(super) struct MarathonDcos {
    /// `marathon.autoip|agentip|containerip.{DCOS_DOMAIN}.`
    parents: [Option<NameId>; 3],
    added: [bool; 3],
    apex_labels: usize,
    ttl: u32,
    /// Every app was added.
    pub done: bool,
    /// The parents' own names are left to [`Self::ensure_parents`] (an incremental build, where
    /// an app copied from the last zone is not added again), and `mask` says which an app
    /// needs.
    pub deferred: bool,
    /// Bit `i`: the app last added put a name under `parents[i]`.
    pub mask: u8,
}

impl MarathonDcos {
    pub fn new(b: &mut Builder, config: &ZoneConfig) -> MarathonDcos {
        let apex = b
            .names
            .parse(&format!("{DCOS_DOMAIN}."))
            .expect("a valid name");
        let marathon = label("marathon", config.label_rule);
        MarathonDcos {
            parents: DCOS_KINDS
                .map(|kind| b.names.parse(&format!("{marathon}.{kind}.{DCOS_DOMAIN}."))),
            added: [false; 3],
            apex_labels: b.names.labels(apex),
            ttl: config.ttl,
            done: false,
            deferred: false,
            mask: 0,
        }
    }

    /// The parents of `mask` (an OR of apps' [`Self::mask`]) and their ancestors exist.
    pub fn ensure_parents(&mut self, b: &mut Builder, mask: u8) {
        for i in 0..self.parents.len() {
            if mask & 1 << i != 0 && !self.added[i] {
                self.added[i] = true;
                Parent::new(self.parents[i]).ensure(b, self.apex_labels);
            }
        }
    }

    /// `app`'s three names (`tl`: its label) and its `running` tasks' addresses on them.
    pub fn add_app(
        &mut self,
        b: &mut Builder,
        cluster: &Cluster,
        app: &crate::cluster::App,
        tl: &str,
        running: &[&Task],
    ) {
        if tl.is_empty() {
            return;
        }
        let names = self
            .parents
            .map(|parent| b.names.child(tl.as_bytes(), parent?));
        for task in running {
            let agent = task.host.resolve(&cluster.agents);
            let container = &task.ip_addresses[..];
            let auto = if app.networking == Networking::Container && !container.is_empty() {
                container
            } else {
                agent.as_slice()
            };
            let addrs: [&[IpAddr]; 3] = [auto, agent.as_slice(), container];
            for (i, addrs) in addrs.into_iter().enumerate() {
                let Some(name) = names[i] else { continue };
                for &ip in addrs {
                    b.add_addr(name, ip, self.ttl);
                }
                self.mask |= 1 << i;
                if !self.added[i] && !self.deferred {
                    self.added[i] = true;
                    let mut parent = Parent::new(self.parents[i]);
                    parent.ensure(b, self.apex_labels);
                }
            }
        }
    }
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
            let Some(owner) = fqdn(b, format!("{}.{fw}.{VIP_DOMAIN}.", vip::dns_label(name)))
            else {
                continue;
            };
            b.add_addr(owner, ip, super::VIP_TTL);
            if let Some(between) = fqdn(b, format!("{fw}.{VIP_DOMAIN}.")) {
                b.touch(between);
            }
        }
    }
}
