//! The incremental zone build: a zone that copies, from the last zone it built, the encoded
//! record sets of every app unchanged since (recognized by its pointer in `Cluster::apps`, as
//! `routing::compile::Cache` does, or by value after a resync), and builds only the changed
//! apps' names and the names every build makes afresh (the apexes and their SOAs, whose serial
//! moves with every change; `slave.{domain}`, `_slave._tcp`, the empty non-terminals, VIPs).
//!
//! An app's names are its own (`{app}.marathon.{d}`, `{app}.marathon.slave.{d}`, its tasks'
//! own names, its SRV owners, its DC/OS names) unless they collide with another app's or with
//! a shared name: the builder tracks which app (or the shared part) added records to each name
//! ([`Builder::track_claims`]), and a zone is copied from only when no name had two claimants.
//! Whatever is not one app's alone, or depends on more than the app, is built whole every time:
//! traffic splits, Mesos tasks and PTR records (the whole zone then), a change of config or of
//! agents' resolved addresses (every app then). A change of the proxy's verdicts rebuilds the
//! healthy-only apps that have a task whose verdict changed.
//!
//! The build starts from a copy of the last zone's name table, so that every name keeps its id
//! and a copied app's records and listing are taken as they are; the names that exist no more
//! are carried along until they pass a quarter of the table ([`worn`]), then a build starts a
//! table afresh.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::compact::{Builder, NameId, offer, take_spare};
use super::{AppPass, AppShare, Cluster, Listed, RouteSplit, Verdicts, Zone, ZoneConfig};
use crate::cluster::App;
use crate::cluster::names::{label, task_name};

/// The claimant of the names every build makes afresh.
pub(super) const SHARED: u32 = u32::MAX - 1;

/// What the next build copies from: the last zone and each app's share of it. One per zone
/// server (the reconciler's); a build takes it whole, so builds of it never overlap.
#[derive(Debug, Default)]
pub struct Incremental {
    last: Option<Last>,
    /// How many apps the last build copied.
    copied: usize,
}

#[derive(Debug)]
struct Last {
    zone: Arc<Zone>,
    /// In `Cluster::apps` order.
    parts: Vec<Part>,
    /// How many apps run tasks on each agent address (`slave.{domain}`).
    agents: FxHashMap<IpAddr, u32>,
    /// What the zone was built with besides the apps.
    config: ZoneConfig,
    hosts: HashMap<String, IpAddr>,
    verdicts: Verdicts,
}

/// One app's share of the last zone.
#[derive(Debug)]
struct Part {
    app: Arc<App>,
    /// The names it alone added records to, in the last zone's table.
    names: Vec<NameId>,
    /// Its entry in the last zone's `listed`.
    listed: Option<u32>,
    problems: Vec<crate::routing::Problem>,
    fail_static: bool,
    /// The DC/OS parents it put names under (`MarathonDcos::mask`).
    dcos: u8,
    /// Its tasks' agents' addresses, each once.
    agents: Vec<IpAddr>,
}

/// Whether two configs build the same zone from the same cluster (`served` only says how it
/// is served).
fn same_build(a: &ZoneConfig, b: &ZoneConfig) -> bool {
    a.domain == b.domain
        && a.ttl == b.ttl
        && a.ip_sources == b.ip_sources
        && a.label_rule == b.label_rule
        && a.ns_addr == b.ns_addr
        && a.vip_range == b.vip_range
        && a.healthy == b.healthy
        && a.ptr == b.ptr
}

impl Incremental {
    /// The zone of `cluster`, as [`super::build_from`] builds it, copying from the last zone
    /// what did not change.
    pub fn build(
        &mut self,
        cluster: &Cluster,
        config: &ZoneConfig,
        verdicts: &Verdicts,
        route_splits: &[RouteSplit],
    ) -> Arc<Zone> {
        let last = self.last.take();
        self.copied = 0;
        if !route_splits.is_empty() || config.ptr || !cluster.mesos.tasks.is_empty() {
            return Arc::new(super::build_from(cluster, config, verdicts, route_splits));
        }
        let last = last.filter(|l| {
            same_build(&l.config, config) && l.hosts == cluster.agents && !worn(&l.zone.names)
        });
        let from_last = last.and_then(|last| {
            let Last {
                zone,
                parts,
                agents,
                verdicts: judged,
                ..
            } = last;
            let mut pass = Pass::new(Some(&zone), parts, agents);
            // Tasks whose verdict changed: their apps are built again when they follow health.
            pass.rejudged = judged
                .unavailable
                .symmetric_difference(&verdicts.unavailable)
                .cloned()
                .collect();
            let built = super::build_core(
                cluster,
                config,
                verdicts,
                route_splits,
                take_spare(),
                Some(&mut pass),
            )?;
            let Pass {
                parts,
                agents,
                clean,
                copied,
                ..
            } = pass;
            self.copied = copied;
            Some((built, (parts, agents, clean)))
        });
        let ((zone, spare), (parts, agents, clean)) = match from_last {
            Some(done) => done,
            None => {
                let mut pass = Pass::new(None, Vec::new(), FxHashMap::default());
                let built = super::build_core(
                    cluster,
                    config,
                    verdicts,
                    route_splits,
                    take_spare(),
                    Some(&mut pass),
                );
                match built {
                    Some(built) => (built, (pass.parts, pass.agents, pass.clean)),
                    // No name that fits under the domain: nothing to copy, ever.
                    None => return Arc::new(super::build_from(cluster, config, verdicts, &[])),
                }
            }
        };
        offer(spare);
        let zone = Arc::new(zone);
        if clean {
            self.last = Some(Last {
                zone: zone.clone(),
                parts,
                agents,
                config: config.clone(),
                hosts: cluster.agents.clone(),
                verdicts: verdicts.clone(),
            });
        }
        zone
    }

    /// How many apps the last build copied from the zone before it.
    pub fn copied(&self) -> usize {
        self.copied
    }

    /// Bytes kept for the next build besides the last zone (which is served anyway), for the
    /// benchmarks.
    pub fn heap_bytes(&self) -> usize {
        let Some(last) = &self.last else { return 0 };
        last.parts.capacity() * std::mem::size_of::<Part>()
            + last
                .parts
                .iter()
                .map(|p| {
                    p.names.capacity() * 4 + p.agents.capacity() * std::mem::size_of::<IpAddr>()
                })
                .sum::<usize>()
            + last.agents.capacity() * 24
    }
}

/// One incremental build under way.
pub(super) struct Pass<'l> {
    /// The last zone, copied from.
    from: Option<&'l Zone>,
    /// Its parts, taken.
    old: Vec<Part>,
    parts: Vec<Part>,
    agents: FxHashMap<IpAddr, u32>,
    /// The DC/OS parents any app put names under.
    dcos: u8,
    /// The tasks whose verdict (`Verdicts`) changed since the last zone.
    rejudged: rustc_hash::FxHashSet<crate::cluster::TaskId>,
    /// No name had two claimants: the next build may copy from this one.
    clean: bool,
    copied: usize,
}

impl<'l> Pass<'l> {
    fn new(from: Option<&'l Zone>, old: Vec<Part>, agents: FxHashMap<IpAddr, u32>) -> Pass<'l> {
        Pass {
            from,
            old,
            parts: Vec::new(),
            agents,
            dcos: 0,
            rejudged: Default::default(),
            clean: false,
            copied: 0,
        }
    }

    /// Readies `b` for the build: claims tracked and, when copying, the last zone's name
    /// table copied whole (each name under its id there, so that an unchanged app's names and
    /// the targets in its copied records need no interning anew).
    pub(super) fn start(&self, b: &mut Builder) {
        match self.from {
            Some(from) => {
                let table = from.names.table();
                b.names.copy_from(table);
                b.track_claims(SHARED, table.len() + 64);
                b.reserve(64, 40, 4096);
            }
            None => {
                b.track_claims(SHARED, 1024);
                b.reserve(1024, 40, 4096);
            }
        }
    }

    /// The zone copied from, if any.
    pub(super) fn from(&self) -> Option<&'l super::Names> {
        self.from.map(|z| &z.names)
    }

    /// The agents `slave.{domain}` lists (as `super::agents` reads them from every task).
    pub(super) fn agents(&self, cluster: &Cluster) -> rustc_hash::FxHashSet<IpAddr> {
        self.agents
            .keys()
            .copied()
            .chain(super::mesos_agents(cluster))
            .collect()
    }

    /// Whether `app`'s names depend on a verdict that changed (so it is built, not copied):
    /// only a healthy-only app's answers read verdicts (`AppPass::add`).
    fn rejudged(&self, app: &App, config: &ZoneConfig) -> bool {
        // Whichever side is smaller is walked: an agent's blip changes hundreds of verdicts at
        // once, and walking them all for each of 50k healthy-only apps was quadratic.
        !self.rejudged.is_empty()
            && super::healthy_only(app, config)
            && if app.tasks.len() <= self.rejudged.len() {
                app.tasks.into_iter().any(|t| self.rejudged.contains(&t.id))
            } else {
                self.rejudged.iter().any(|id| app.tasks.contains_key(id))
            }
    }

    fn count_agents(&mut self, agents: &[IpAddr], up: bool) {
        for ip in agents {
            if up {
                *self.agents.entry(*ip).or_default() += 1;
            } else if let Some(n) = self.agents.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    self.agents.remove(ip);
                }
            }
        }
    }

    /// Once every name is added: whether the build holds (when copying, no name may have had
    /// two claimants; else the zone holds, but is not one to copy from).
    pub(super) fn settle(&mut self, b: &Builder) -> bool {
        self.clean = !b.collided();
        self.clean || self.from.is_none()
    }
}

/// Names in a copied table that exist no more (a changed app's old task names, a removed
/// app's) beyond which the next build starts a table afresh instead of copying it: a quarter
/// of the table, and a few more so that a small zone's names that are targets only (the SOA
/// mailbox) never count.
const WORN_SLACK: usize = 64;

/// Whether `names`' table holds too many dead names to be copied again (see [`WORN_SLACK`]):
/// the bound on what copying tables from build to build keeps.
fn worn(names: &super::Names) -> bool {
    let table = names.table().len();
    table.saturating_sub(names.len()) > table / 4 + WORN_SLACK
}

/// Adds every app of the cluster: copied from the last zone when unchanged, else built.
/// False when copying must give up (a name with two claimants), so the caller builds anew.
pub(super) fn add_apps<'a>(
    pass: &mut Pass<'_>,
    b: &mut Builder,
    apps: &mut AppPass<'a>,
    framework: NameId,
    (problems, listed, fail_static): (
        &mut Vec<crate::routing::Problem>,
        &mut Vec<Arc<Listed>>,
        &mut Vec<crate::cluster::AppId>,
    ),
) -> bool {
    let cluster = apps.cluster;
    let from = pass.from;
    let mut old = std::mem::take(&mut pass.old).into_iter().peekable();
    let mut parts = Vec::with_capacity(cluster.apps.len());
    apps.dcos.deferred = true;
    for (i, (id, app)) in cluster.apps.iter().enumerate() {
        b.claim_as(i as u32);
        // This app's part of the last zone (at once when unchanged), the parts of apps since
        // removed passed by.
        let mut before = old.next_if(|p| Arc::ptr_eq(&p.app, app));
        if before.is_none() {
            while let Some(gone) = old.next_if(|p| p.app.id < *id) {
                pass.count_agents(&gone.agents, false);
            }
            before = old.next_if(|p| p.app.id == *id);
        }
        let kept = match (from, before) {
            (Some(from), Some(p))
                if (Arc::ptr_eq(&p.app, app) || *p.app == **app)
                    && !pass.rejudged(app, apps.config) =>
            {
                pass.copied += 1;
                match copy(b, from, p, app, listed) {
                    Some(part) => part,
                    None => return false,
                }
            }
            (_, before) => {
                if let Some(p) = before {
                    pass.count_agents(&p.agents, false);
                }
                let part = build(b, apps, app, framework, listed);
                pass.count_agents(&part.agents, true);
                part
            }
        };
        if from.is_some() && b.collided() {
            return false;
        }
        pass.dcos |= kept.dcos;
        problems.extend(kept.problems.iter().cloned());
        if kept.fail_static {
            fail_static.push(app.id.clone());
        }
        parts.push(kept);
    }
    for gone in old {
        pass.count_agents(&gone.agents, false);
    }
    b.claim_as(SHARED);
    apps.dcos.deferred = false;
    apps.dcos.ensure_parents(b, pass.dcos);
    pass.parts = parts;
    true
}

/// An unchanged app's names, their record sets copied from the last zone, and its entry
/// listed; `None` when the last zone does not hold what its part says (never expected: the
/// caller builds anew). The build's table is the last zone's (see [`Pass::start`]), so its
/// names and the names its entry lists keep their ids.
fn copy(
    b: &mut Builder,
    from: &Zone,
    mut part: Part,
    app: &Arc<App>,
    listed: &mut Vec<Arc<Listed>>,
) -> Option<Part> {
    for &id in &part.names {
        let node = from.names.node_of_id(id)?;
        let (start, end) = from.names.node_span(node);
        b.add_raw(id, start, end);
    }
    if let Some(at) = part.listed {
        listed.push(from.listed.get(at as usize)?.clone());
        part.listed = Some(listed.len() as u32 - 1);
    }
    part.app = app.clone();
    Some(part)
}

/// A changed (or new) app's names, built, and its entry listed.
fn build<'a>(
    b: &mut Builder,
    apps: &mut AppPass<'a>,
    app: &'a Arc<App>,
    framework: NameId,
    listed: &mut Vec<Arc<Listed>>,
) -> Part {
    let name = task_name(&app.id);
    let task_label = label(&name, apps.config.label_rule);
    apps.dcos.mask = 0;
    let share = if task_label.is_empty() {
        AppShare::default()
    } else {
        apps.add(b, app, framework, name, &task_label)
    };
    let mut agents: Vec<IpAddr> = app
        .tasks
        .values()
        .filter_map(|t| t.host.resolve(&apps.cluster.agents))
        .collect();
    agents.sort_unstable();
    agents.dedup();
    let at = share.listed.map(|l| {
        listed.push(Arc::new(l));
        listed.len() as u32 - 1
    });
    Part {
        app: app.clone(),
        names: b.take_claimed(),
        listed: at,
        problems: share.problems,
        fail_static: share.fail_static,
        dcos: apps.dcos.mask,
        agents,
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
