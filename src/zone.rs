//! The DNS zone, built by `compile` from the cluster: every name and its records, ready to
//! answer from. Nothing here runs per query.
//!
//! Names follow Mesos-DNS (framework `marathon`, domain configurable):
//! `{task}.marathon.{domain}` (task addresses), `{task}.marathon.slave.{domain}` (agent
//! addresses), `{task}-{tag}-{agent}.marathon.{domain}` (one task: the SRV targets),
//! `_{task}._tcp.marathon.{domain}` / `_udp` and `_{port}._{task}._tcp.marathon.{domain}` (SRV).

pub mod compact;
mod incremental;
#[cfg(test)]
pub(crate) mod legacy;
mod mesos;
mod reverse;

use compact::{Builder, SoaData, Spare};
pub use compact::{NameId, Names};
pub use incremental::Incremental;
pub use mesos::DCOS_DOMAIN;
use std::net::IpAddr;

use hickory_proto::rr::{LowerName, Name, Record};

use crate::cluster::names::{LabelRule, label, service_label, tag_bytes, task_name};

mod app_pass;
use app_pass::{AppPass, AppShare};
mod splits;
use crate::cluster::{App, Cluster, Networking, Protocol, Task, TaskState};
pub use splits::{RouteSplit, SplitsMemo, route_splits};

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
    /// (`dns.ptr`; see `reverse::ptr_zones`).
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
    /// The app's SRV names (in the zone's name table, [`Names::table`]).
    pub services: Vec<NameId>,
    pub tasks: Vec<ListedTask>,
}

#[derive(Debug, Clone)]
pub struct ListedTask {
    pub id: crate::cluster::TaskId,
    /// The task's own name (its SRV records' target), in the zone's name table.
    pub target: NameId,
    pub agent: Option<IpAddr>,
}

/// The records of one name, by type, as read back from the compact zone ([`Names::get`]): A,
/// AAAA and SRV records are owned by the root (answers take the name as asked, and additionals
/// their target's name), NS, SOA and PTR records by the name.
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
    /// Every name and its records, interned and pre-encoded (see [`compact`]). Fx-hashed: the
    /// lookup is on every query, and the keys are not attacker-chosen (they come from the
    /// cluster, not the network).
    pub names: Names,
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
    /// The apps and tasks, for `/v1/enumerate` (each shared with the zones that copy it
    /// unchanged: see `zone/incremental.rs`).
    pub listed: Vec<std::sync::Arc<Listed>>,
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

/// A task's addresses: the ones Marathon reports, or its agent's (never both).
enum Addrs<'a> {
    Reported(&'a [IpAddr]),
    Agent(Option<IpAddr>),
}

impl Addrs<'_> {
    fn as_slice(&self) -> &[IpAddr] {
        match self {
            Addrs::Reported(addrs) => addrs,
            Addrs::Agent(agent) => agent.as_slice(),
        }
    }
}

/// A task's addresses per the configured sources; empty when none yields any.
fn task_addrs<'a>(cluster: &Cluster, app: &App, task: &'a Task, sources: &[IpSource]) -> Addrs<'a> {
    for source in sources {
        let addrs = match (source, app.networking) {
            (IpSource::Auto, Networking::Container) | (IpSource::NetInfo, _) => {
                Addrs::Reported(&task.ip_addresses)
            }
            (IpSource::Auto, Networking::Host) | (IpSource::Host, _) => {
                Addrs::Agent(task.host.resolve(&cluster.agents))
            }
        };
        if !addrs.as_slice().is_empty() {
            return addrs;
        }
    }
    Addrs::Reported(&[])
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
    let (zone, spare) = build_reusing(
        cluster,
        config,
        verdicts,
        route_splits,
        compact::take_spare(),
    );
    compact::offer(spare);
    zone
}

/// As [`build_from`], written over `spare`'s buffers (see [`Spare`]: the zone is the same
/// whatever they held); returns the build's own scratch with the zone.
pub(crate) fn build_reusing(
    cluster: &Cluster,
    config: &ZoneConfig,
    verdicts: &Verdicts,
    route_splits: &[RouteSplit],
    spare: Spare,
) -> (Zone, Spare) {
    build_core(cluster, config, verdicts, route_splits, spare, None)
        .expect("a build without an earlier zone to copy from always ends")
}

/// The build itself. With `pass`, apps go through [`incremental::add_apps`] (copied from the
/// last zone when unchanged); `None` when that build must give up (see there).
fn build_core(
    cluster: &Cluster,
    config: &ZoneConfig,
    verdicts: &Verdicts,
    route_splits: &[RouteSplit],
    spare: Spare,
    mut pass: Option<&mut incremental::Pass<'_>>,
) -> Option<(Zone, Spare)> {
    let mut b = Builder::reusing(spare);
    if let Some(pass) = &pass {
        pass.start(&mut b);
    } else {
        // Per task: its own name, and about eight records (the app's, the agent's, its own,
        // SRV, DC/OS's); per app: eight names.
        let tasks: usize = cluster.apps.values().map(|a| a.tasks.len()).sum();
        let apps = cluster.apps.len();
        b.reserve(tasks + apps * 8 + 64, 40, tasks * 8);
    }
    let root = b.names.intern(&[0]);
    let apex = b
        .names
        .parse(&format!("{}.", config.domain))
        .unwrap_or(root);
    // `marathon.{domain}.` and its SRV parents; a name that does not fit names nothing.
    let framework = b.names.parse(&format!("marathon.{}.", config.domain));
    let slave = b.names.parse(&format!("marathon.slave.{}.", config.domain));
    let tcp = framework.and_then(|f| b.names.child(b"_tcp", f));
    let udp = framework.and_then(|f| b.names.child(b"_udp", f));
    let ttl = config.ttl;
    let mut problems = Vec::new();
    let mut listed = Vec::new();
    let mut fail_static = Vec::new();
    // Both zones' SOA serial: the newest Marathon timestamp of the state, in seconds (see
    // `Cluster::serial`): it grows with every change and is the same on every instance.
    let serial = cluster.serial();
    let mut dcos = mesos::MarathonDcos::new(&mut b, config);
    dcos.done = framework.is_some();
    let mut apps = AppPass {
        cluster,
        config,
        verdicts,
        slave,
        tcp,
        udp,
        split_targets: splits::targets(route_splits),
        host_labels: Default::default(),
        host_list: Vec::new(),
        pre: Vec::new(),
        pre_ids: Vec::new(),
        run: Vec::new(),
        dcos,
    };
    let mut app_labels: Vec<String> = Vec::new();
    match (&mut pass, framework) {
        (Some(pass), Some(framework)) => {
            if !incremental::add_apps(
                pass,
                &mut b,
                &mut apps,
                framework,
                (&mut problems, &mut listed, &mut fail_static),
            ) {
                return None;
            }
        }
        (Some(_), None) => return None,
        (None, _) => {
            // Each app's Marathon task name (`api.prod`) and label (`api-prod`), made once for
            // every zone that names the app.
            let app_names: Vec<String> = cluster
                .apps
                .values()
                .map(|app| task_name(&app.id))
                .collect();
            app_labels = app_names
                .iter()
                .map(|name| label(name, config.label_rule))
                .collect();
            for ((app, name), task_label) in cluster.apps.values().zip(app_names).zip(&app_labels) {
                let Some(framework) = framework else { break };
                if task_label.is_empty() {
                    continue;
                }
                let share = apps.add(&mut b, app, framework, name, task_label);
                problems.extend(share.problems);
                if share.fail_static {
                    fail_static.push(app.id.clone());
                }
                listed.extend(share.listed.map(std::sync::Arc::new));
            }
        }
    }
    let AppPass {
        split_targets,
        dcos,
        ..
    } = apps;

    splits::add_records(
        route_splits,
        &split_targets,
        config.label_rule,
        tcp,
        udp,
        &mut b,
        &mut problems,
    );
    let agents = match &pass {
        Some(pass) => pass.agents(cluster),
        None => agents(cluster),
    };
    agent_records(agents, config, &mut b);
    let (dcos_apex, dcos_soa) = mesos::add(cluster, config, &mut b, serial, &app_labels, dcos);

    let ns1 = b.names.child(b"ns1", apex).unwrap_or(apex);
    let rname = b.names.child(b"root", ns1).unwrap_or(ns1);
    let soa_data = SoaData {
        mname: ns1,
        rname,
        serial,
        refresh: 60,
        retry: 600,
        expire: 86400,
        minimum: ttl,
    };
    let soa = b.soa_record(apex, &soa_data, ttl);
    b.set_soa(apex, soa_data, ttl);
    b.add_ns(apex, ns1, ttl);
    match config.ns_addr {
        Some(ip) => b.add_addr(ns1, ip, ttl),
        None => b.touch(ns1),
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
        if let Some(name) = b.names.parse(&format!("{between}.{}.", config.domain)) {
            b.touch(name);
        }
    }
    let vip_apex = config.vip_range.map(|range| {
        let zone = vip_zone(cluster, &range, &mut b, ttl, serial);
        if let Some(ip) = config.ns_addr {
            let ns = b
                .names
                .parse(&format!("ns1.{}.", crate::routing::vip::VIP_DOMAIN))
                .expect("a valid name");
            b.add_addr(ns, ip, ttl);
        }
        zone
    });
    let reverse = if config.ptr {
        reverse::ptr_zones(cluster, config, &mut b, serial)
    } else {
        Vec::new()
    };
    if let Some(pass) = &mut pass
        && !pass.settle(&b)
    {
        return None;
    }
    let apex_name = b.names.name(apex);
    let (names, spare) = b.finish_keeping_from(pass.and_then(|p| p.from()));
    let zone = Zone {
        vip_apex,
        reverse,
        dcos_apex: Some((dcos_apex, dcos_soa)),
        apex: LowerName::new(&apex_name),
        names,
        soa,
        live: true,
        problems,
        listed,
        fail_static,
        config: config.clone(),
    };
    Some((zone, spare))
}

/// The port Mesos agents listen on: `_slave._tcp.{domain}`'s SRV port, as in Mesos-DNS.
pub const AGENT_PORT: u16 = 5051;

/// `slave.{domain}` A/AAAA: every agent's address, and `_slave._tcp.{domain}` SRV to it on
/// port 5051, as Mesos-DNS answers them. The agents are those running Marathon's tasks and
/// every agent the Mesos master reports.
fn agent_records(agents: rustc_hash::FxHashSet<IpAddr>, config: &ZoneConfig, b: &mut Builder) {
    // In order, once each (a set first: there are far fewer agents than tasks).
    let mut agents: Vec<IpAddr> = agents.into_iter().collect();
    agents.sort_unstable();
    let (Some(slave), Some(service), Some(tcp)) = (
        b.names.parse(&format!("slave.{}.", config.domain)),
        b.names.parse(&format!("_slave._tcp.{}.", config.domain)),
        b.names.parse(&format!("_tcp.{}.", config.domain)),
    ) else {
        return;
    };
    if agents.is_empty() {
        return;
    }
    b.touch(slave);
    for ip in agents {
        b.push_addr(slave, ip, config.ttl);
    }
    b.add_srv(service, 1, AGENT_PORT, slave, config.ttl, false);
    b.touch(tcp);
}

/// The agents `slave.{domain}` lists: those of Marathon's tasks, and the Mesos master's.
fn agents(cluster: &Cluster) -> rustc_hash::FxHashSet<IpAddr> {
    cluster
        .apps
        .values()
        .flat_map(|app| app.tasks.values())
        .filter_map(|task| task.host.resolve(&cluster.agents))
        .chain(mesos_agents(cluster))
        .collect()
}

/// The Mesos master's agents' addresses.
fn mesos_agents(cluster: &Cluster) -> impl Iterator<Item = IpAddr> + '_ {
    cluster
        .mesos
        .agents
        .values()
        .filter_map(|a| a.host.resolve(&cluster.agents))
}

/// A served zone's top: its SOA (`root.{ns}` as the mailbox, the given serial and negative TTL)
/// and its NS record on `apex`'s node. Returns the SOA, for negative answers' authority section.
pub(crate) fn zone_top(
    b: &mut Builder,
    apex: NameId,
    ns: NameId,
    serial: u32,
    ttl: u32,
    minimum: u32,
) -> Record {
    let rname = b.names.child(b"root", ns).unwrap_or(ns);
    let data = SoaData {
        mname: ns,
        rname,
        serial,
        refresh: 60,
        retry: 600,
        expire: 86400,
        minimum,
    };
    let soa = b.soa_record(apex, &data, ttl);
    b.set_soa(apex, data, ttl);
    b.set_ns(apex, ns, ttl);
    soa
}

/// `{name}.marathon.l4lb.thisdcos.directory` A for every named VIP, and the zone's SOA (with
/// the cluster's serial) and NS (`ns1.l4lb.thisdcos.directory`, answering with the DNS listen
/// address when known).
fn vip_zone(
    cluster: &Cluster,
    range: &crate::routing::vip::VipRange,
    b: &mut Builder,
    ttl: u32,
    serial: u32,
) -> (LowerName, Record) {
    use crate::routing::vip::{self, VIP_DOMAIN, VipTarget};
    let (members, _) = vip::declared(cluster);
    for (target, ip) in vip::addresses(&members, range) {
        let VipTarget::Named(name) = &target else {
            continue;
        };
        let fqdn = format!("{}.marathon.{VIP_DOMAIN}.", vip::dns_label(name));
        let Some(fqdn) = b.names.parse(&fqdn) else {
            continue;
        };
        b.touch(fqdn);
        b.add_addr(fqdn, ip, VIP_TTL);
    }
    let apex = b
        .names
        .parse(&format!("{VIP_DOMAIN}."))
        .expect("a valid name");
    if let Some(name) = b.names.parse(&format!("marathon.{VIP_DOMAIN}.")) {
        b.touch(name);
    }
    let ns = b
        .names
        .parse(&format!("ns1.{VIP_DOMAIN}."))
        .expect("a valid name");
    let soa = zone_top(b, apex, ns, serial, ttl, VIP_TTL);
    b.touch(ns);
    (LowerName::new(&b.names.name(apex)), soa)
}

/// The reverse zones served with `dns.ptr`.
pub const REVERSE_ZONES: [&str; 2] = ["in-addr.arpa.", "ip6.arpa."];

#[cfg(test)]
#[path = "zone/fixtures.rs"]
pub(crate) mod fixtures;

#[cfg(test)]
#[path = "zone/tests.rs"]
mod tests;

#[cfg(test)]
#[path = "zone/reuse_tests.rs"]
mod reuse_tests;
