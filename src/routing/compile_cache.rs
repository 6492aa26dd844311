//! `compile_cached`: the compile that keeps each app's part of the table (`Cache`) from one
//! compile to the next, and assembles the table from the parts: port claims, routes, vhosts and
//! the index maps, decided over every app in id order as `compile` does from scratch
//! (`compile_assemble.rs`).
//! `compile_changed`: the same, told which apps changed, so that it visits those alone.

use super::*;

/// What `compile` made of each app, kept from one compile to the next so that a change to one
/// app compiles that app alone: its labels read, its backends found, its services built (and
/// shared, behind their `Arc`, by every table they are in). The table is the one `compile`
/// builds from scratch — the same services, routes, problems and hash — because an app's part
/// is a function of the app and of what the cache checks before reusing it: the configuration
/// (a different one empties the cache), the resolved agents (likewise), the app's maintenance
/// switch and IP-per-task ports. What depends on other apps (port claims, routes, vhosts,
/// VIPs) is decided over every app, in id order, when some app came, went or changed its place
/// (claims, entry points, problems: `same_place`); when none did — a task started, died or
/// changed health — the last table's assembly is kept and only the changed apps' services and
/// the routes they are members of are made again (`patch`).
#[derive(Default)]
pub struct Cache {
    /// The configuration and agents the parts were compiled with.
    context: Option<(String, std::collections::HashMap<String, IpAddr>)>,
    /// In id order, as the model's apps: a compile without a list of changed apps walks both
    /// side by side (no lookup per app), and `assemble` reads the parts in that order.
    apps: BTreeMap<crate::cluster::AppId, Part>,
    /// The last table's assembly, which the next compile patches when no app's place in it
    /// changed (`same_place`) and no VIP member changed.
    last: Option<Assembly>,
    /// The IP-per-task assignment the parts were compiled with, made over every app by the
    /// last compile that visited every app; kept while no listed app asks for other ports.
    assigned: crate::routing::ip_per_task::Assigned,
    /// The maintenance switches the parts were compiled with.
    maintenance: std::collections::BTreeSet<crate::cluster::AppId>,
    /// Where the next audit of apps not listed as changed starts (after this id, in id order).
    audit_from: Option<crate::cluster::AppId>,
    /// Apps compiled (not reused) by the last compile.
    pub recompiled: usize,
    /// The last compile assembled the table over every app; `false`: it patched the last
    /// table's assembly, for the apps that changed.
    pub reassembled: bool,
    /// What the last compile patched (`None`: it assembled the table over every app).
    pub patched: Option<Patched>,
    /// Compiles told which apps changed whose audit found the list incomplete: each visited
    /// every app instead (the table is right either way; a count above 0 is a bug in whoever
    /// made the list).
    pub distrusted: u64,
}

/// What a patched table changed of the last: every other service and route is the last
/// table's own (the same `Arc`, at the same index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patched {
    /// Indices of the services replaced, sorted, distinct.
    pub services: Vec<usize>,
    /// Indices of the routes made again, sorted, distinct.
    pub routes: Vec<usize>,
}

/// How many apps not listed as changed each `compile_changed` checks against the model: the
/// window moves on by as many each compile, through every app in turn.
pub(super) const AUDITED: usize = 64;

/// A table's assembly: what decides where each app's services sit (claims, entry points,
/// routes, vhosts, the index maps, the problems), shared with the tables made from it. A
/// compile in which every app that changed keeps its place gives this again, but for the
/// changed apps' services and the routes they are members of.
struct Assembly {
    table: RoutingTable,
    /// (service, route it is a member of), sorted.
    member_of: Vec<(usize, usize)>,
    /// The configuration the assembly read that the cache's context leaves out.
    overrides: Overrides,
    default_app: Option<String>,
    /// The cluster had no Mesos task (no VIP member but Marathon's apps).
    no_mesos: bool,
}

impl Assembly {
    fn of(table: &RoutingTable, config: &CompileConfig, no_mesos: bool) -> Assembly {
        let mut member_of: Vec<(usize, usize)> = table
            .routes
            .iter()
            .enumerate()
            .flat_map(|(r, route)| route.members.iter().map(move |m| (m.service, r)))
            .collect();
        member_of.sort_unstable();
        member_of.dedup();
        Assembly {
            table: share(table),
            member_of,
            overrides: config.weight_overrides.clone(),
            default_app: config.default_app.clone(),
            no_mesos,
        }
    }
}

/// A copy of `table` that shares its services, routes and maps (the hash is computed again):
/// a pointer copy each (`crate::chunked`), whatever the table's size.
fn share(table: &RoutingTable) -> RoutingTable {
    RoutingTable {
        services: table.services.clone(),
        routes: table.routes.clone(),
        by_listen: table.by_listen.clone(),
        udp: table.udp.clone(),
        problems: table.problems.clone(),
        vhosts: table.vhosts.clone(),
        by_app_id: table.by_app_id.clone(),
        default_service: table.default_service,
        ssl_certs: table.ssl_certs.clone(),
        hash: Default::default(),
        compiled_bind: table.compiled_bind,
        sni_rules: table.sni_rules,
    }
}

/// What the cache's parts depend on in the configuration (weight overrides and maintenance
/// are read per compile), as text.
fn context_of(config: &CompileConfig) -> String {
    let CompileConfig {
        group,
        serve_ungrouped,
        strict_mode,
        bind,
        reserved,
        default_app: _,
        weight_overrides: _,
        maintenance: _,
        vip,
        health,
        ip_per_task_ports,
    } = config;
    format!(
        "{group:?} {serve_ungrouped} {strict_mode} {bind} {reserved:?} {vip:?} {health:?} {ip_per_task_ports:?}"
    )
}

/// Compiles `cluster`, reusing from `cache` the parts of apps that did not change; gives the
/// table [`compile`] gives.
pub fn compile_cached(
    cache: &mut Cache,
    cluster: &Cluster,
    config: &CompileConfig,
) -> RoutingTable {
    compile_changed(cache, cluster, config, None)
}

/// [`compile_cached`] told which apps changed (came, went or changed) since the last compile
/// with this cache (`None`: not known): those are visited, not every app, and the table is
/// the one [`compile`] gives provided the list is complete. A safety net checks that it is:
/// the count of apps, and a window of [`AUDITED`] other apps (a different one each compile)
/// compared with the parts they were compiled from; a mismatch visits every app, as without a
/// list, and is counted in `distrusted`.
pub fn compile_changed(
    cache: &mut Cache,
    cluster: &Cluster,
    config: &CompileConfig,
    changed: Option<&std::collections::BTreeSet<crate::cluster::AppId>>,
) -> RoutingTable {
    let context = context_of(config);
    let same = cache
        .context
        .as_ref()
        .is_some_and(|(c, agents)| *c == context && *agents == cluster.agents);
    if !same {
        cache.apps.clear();
        cache.last = None;
        cache.context = Some((context, cluster.agents.clone()));
    }
    cache.recompiled = 0;
    cache.patched = None;
    // A list is of use with parts of every app compiled in this context and with these
    // maintenance switches, and while no listed app asks for IP-per-task ports other than it
    // did (one that does may move every other app's).
    let listed = changed.filter(|ids| {
        cache.last.is_some()
            && cache.maintenance == config.maintenance
            && !ids.iter().any(|id| {
                crate::routing::ip_per_task::moves_assignment(
                    cache.apps.get(id).map(|p| &*p.app),
                    cluster.apps.get(id).map(|a| &**a),
                )
            })
    });
    // Apps compiled again that keep their place in the table; some app that did not (or came
    // or went): the table is assembled again.
    let mut visit = Visit::default();
    let trusted = listed.is_some_and(|ids| {
        for id in ids {
            match cluster.apps.get(id) {
                Some(app) => visit.app(cache, cluster, config, app),
                None => visit.moved |= cache.apps.remove(id).is_some(),
            }
        }
        audit(cache, cluster)
    });
    if !trusted {
        if listed.is_some() {
            cache.distrusted += 1;
        }
        cache.assigned = assignment(cluster, config);
        cache.maintenance.clone_from(&config.maintenance);
        visit.every_app(cache, cluster, config);
    }
    let Visit { changed, moved } = visit;
    // VIP services gather their backends from apps and Mesos tasks: with Mesos tasks (now or
    // when last assembled), assembled again; else they are what they were unless a member
    // changed (`vip_member`).
    let no_mesos = cluster.mesos.tasks.is_empty();
    let patchable = !moved
        && (config.vip.is_none() || no_mesos)
        && cache.last.as_ref().is_some_and(|last| {
            last.overrides == config.weight_overrides
                && last.default_app == config.default_app
                && last.no_mesos
        });
    cache.reassembled = !patchable;
    if patchable {
        let (table, patched) = patch(cache, &changed, config);
        cache.patched = Some(patched);
        return table;
    }
    let table = assemble(cache.apps.values(), cluster, config);
    cache.last = Some(Assembly::of(&table, config, no_mesos));
    table
}

/// [`compile`]: every app's part made in id order as the assembly reaches it, and dropped once
/// assembled: no map of parts built for a cache that is dropped at once, and each part read
/// back while it is still in the processor's cache (at 50,000 apps, a list of parts was
/// written out to memory and read back in).
pub(super) fn compile_fresh(cluster: &Cluster, config: &CompileConfig) -> RoutingTable {
    let assigned = assignment(cluster, config);
    let parts = super::prefetch::ahead(cluster.apps.iter()).map(|(_, app)| {
        let (maintenance, app_assigned) = wanted(&assigned, config, app);
        compile_app(cluster, app, config, maintenance, app_assigned)
    });
    assemble(parts, cluster, config)
}

/// The IP-per-task service ports of every app that asks for them, around switchyard's own.
fn assignment(cluster: &Cluster, config: &CompileConfig) -> crate::routing::ip_per_task::Assigned {
    let (min, max) = config.ip_per_task_ports;
    let own: std::collections::BTreeSet<u16> = config.reserved.iter().map(|a| a.port()).collect();
    crate::routing::ip_per_task::assign(cluster, min, max, &own)
}

/// What visiting apps found: the apps compiled again that keep their place, and whether some
/// app took another place (or came or went).
#[derive(Default)]
struct Visit {
    changed: Vec<crate::cluster::AppId>,
    moved: bool,
}

impl Visit {
    /// Every app of `cluster`: the parts walked beside the apps, both in id order, so that an
    /// app whose part is reusable costs no lookup (at 50,000 apps, a hash lookup per app was
    /// most of a compile in which one app changed); parts of apps gone are dropped. With no
    /// parts yet (a first compile), the parts are compiled in order and the map built at once.
    fn every_app(&mut self, cache: &mut Cache, cluster: &Cluster, config: &CompileConfig) {
        if cache.apps.is_empty() {
            cache.recompiled = cluster.apps.len();
            self.moved |= !cluster.apps.is_empty();
            let assigned = &cache.assigned;
            cache.apps = super::prefetch::ahead(cluster.apps.iter())
                .map(|(id, app)| {
                    let (maintenance, app_assigned) = wanted(assigned, config, app);
                    let part = compile_app(cluster, app, config, maintenance, app_assigned);
                    (id.clone(), part)
                })
                .collect();
            return;
        }
        let mut new = Vec::new();
        let mut gone = false;
        let mut parts = cache.apps.iter_mut().peekable();
        for (id, app) in &cluster.apps {
            // Parts before this id are of apps gone.
            while parts
                .next_if(|(pid, _)| !same_id(pid, id) && **pid < *id)
                .is_some()
            {
                gone = true;
            }
            match parts.next_if(|(pid, _)| same_id(pid, id)) {
                Some((_, part)) => {
                    if !reuse(part, &cache.assigned, config, app) {
                        // Compiled again in its place: no lookup, whatever the count.
                        cache.recompiled += 1;
                        let (maintenance, app_assigned) = wanted(&cache.assigned, config, app);
                        let fresh = compile_app(cluster, app, config, maintenance, app_assigned);
                        let old = std::mem::replace(part, fresh);
                        self.replaced(config, Some(&old), part);
                    }
                }
                None => new.push(app),
            }
        }
        gone |= parts.next().is_some();
        for app in new {
            self.app(cache, cluster, config, app);
        }
        // Every app has its part: more parts than apps are those of apps gone.
        if gone || cache.apps.len() != cluster.apps.len() {
            cache.apps.retain(|id, _| cluster.apps.contains_key(id));
            self.moved = true;
        }
    }

    /// Reuses `app`'s part when it is compiled from the same app, maintenance switch and
    /// IP-per-task ports; else compiles it again.
    fn app(
        &mut self,
        cache: &mut Cache,
        cluster: &Cluster,
        config: &CompileConfig,
        app: &std::sync::Arc<App>,
    ) {
        let reusable = match cache.apps.get_mut(&app.id) {
            Some(part) => reuse(part, &cache.assigned, config, app),
            None => false,
        };
        if reusable {
            return;
        }
        cache.recompiled += 1;
        let (maintenance, app_assigned) = wanted(&cache.assigned, config, app);
        let part = compile_app(cluster, app, config, maintenance, app_assigned);
        let old = cache.apps.insert(app.id.clone(), part);
        self.replaced(config, old.as_ref(), &cache.apps[&app.id]);
    }

    /// An app's part compiled again (`new`, in place of `old`): the app kept its place, or
    /// some app moved.
    fn replaced(&mut self, config: &CompileConfig, old: Option<&Part>, new: &Part) {
        // A VIP member's backends are its VIP services' too: those are gathered again.
        let vip_member = |a: &App| config.vip.is_some() && crate::routing::vip::declares(a);
        match old {
            Some(old) if same_place(old, new) && !vip_member(&old.app) && !vip_member(&new.app) => {
                self.changed.push(new.app.id.clone())
            }
            _ => self.moved = true,
        }
    }
}

/// The same app id: the same pointer (the model's ids are shared with the parts) or text.
fn same_id(a: &crate::cluster::AppId, b: &crate::cluster::AppId) -> bool {
    std::sync::Arc::ptr_eq(a, b) || a == b
}

/// `app`'s maintenance switch and IP-per-task ports, which its part is compiled with.
fn wanted(
    assigned: &crate::routing::ip_per_task::Assigned,
    config: &CompileConfig,
    app: &App,
) -> (bool, Vec<Option<u16>>) {
    let maintenance = !config.maintenance.is_empty() && config.maintenance.contains(&app.id);
    let app_assigned: Vec<Option<u16>> = if app.assign_service_ports {
        (0..app.ports.len())
            .map(|n| assigned.get(&(app.id.clone(), n)).copied())
            .collect()
    } else {
        Vec::new()
    };
    (maintenance, app_assigned)
}

/// Whether `part` was compiled from `app` as it is, with its maintenance switch and
/// IP-per-task ports; the same app read again (a resync) takes the new pointer, the one to
/// recognize next time.
fn reuse(
    part: &mut Part,
    assigned: &crate::routing::ip_per_task::Assigned,
    config: &CompileConfig,
    app: &std::sync::Arc<App>,
) -> bool {
    let maintenance = !config.maintenance.is_empty() && config.maintenance.contains(&app.id);
    if part.maintenance != maintenance {
        return false;
    }
    // Ports assigned only to apps that ask (none asked: none compared, nothing allocated).
    if app.assign_service_ports || !part.assigned.is_empty() {
        let (_, app_assigned) = wanted(assigned, config, app);
        if part.assigned != app_assigned {
            return false;
        }
    }
    if std::sync::Arc::ptr_eq(&part.app, app) {
        return true;
    }
    if *part.app == **app {
        part.app = app.clone();
        return true;
    }
    false
}

/// The safety net of a compile told which apps changed: as many parts as apps, and the next
/// [`AUDITED`] apps in id order (after those audited last, wrapping) compiled from the app the
/// model holds. An app changed but not listed is found here within `apps / AUDITED` compiles,
/// and one that came or went at once.
fn audit(cache: &mut Cache, cluster: &Cluster) -> bool {
    use std::ops::Bound::{Excluded, Unbounded};
    if cache.apps.len() != cluster.apps.len() {
        return false;
    }
    let from = cache.audit_from.take();
    let after = match &from {
        Some(id) => cluster
            .apps
            .range::<crate::cluster::AppId, _>((Excluded(id), Unbounded)),
        None => cluster.apps.range::<crate::cluster::AppId, _>(..),
    };
    let window = after
        .chain(cluster.apps.iter())
        .take(AUDITED.min(cluster.apps.len()));
    let mut last = None;
    for (id, app) in window {
        let Some(part) = cache.apps.get_mut(id) else {
            return false;
        };
        if !std::sync::Arc::ptr_eq(&part.app, app) {
            // The same app read again (a resync) is no change: its pointer is kept.
            if *part.app != **app {
                return false;
            }
            part.app = app.clone();
        }
        last = Some(id);
    }
    cache.audit_from = last.cloned();
    true
}

/// The last table's assembly with the services of the apps in `changed` (which keep their
/// place: `same_place`) replaced, and the routes they are members of made again: what
/// `assemble` would give, in the time of the change.
fn patch(
    cache: &mut Cache,
    changed: &[crate::cluster::AppId],
    config: &CompileConfig,
) -> (RoutingTable, Patched) {
    let Cache { apps, last, .. } = cache;
    let last = last.as_mut().expect("patched only with an assembly");
    let table = &mut last.table;
    let mut touched = Vec::new();
    for id in changed {
        for port in apps[id].ports.iter() {
            let Some(c) = &port.claim else {
                continue;
            };
            let at = |services: &crate::chunked::Chunked<std::sync::Arc<Service>>,
                      key: &ServiceKey| {
                services.binary_search_by(|s| s.key.cmp(key)).ok()
            };
            // In the table as it was (it kept its claims), or not at all.
            if let Some((udp, _)) = &c.udp
                && let Some(i) = at(&table.services, &udp.key)
            {
                table.services.set(i, udp.clone());
                touched.push(i);
            }
            if let Some(tcp) = &c.tcp
                && let Some(i) = at(&table.services, &c.key)
            {
                let listen = table.services[i].listen;
                let service = if tcp.service.listen == listen {
                    tcp.service.clone()
                } else {
                    std::sync::Arc::new(tcp.service.relisten(listen))
                };
                table.services.set(i, service);
                touched.push(i);
            }
        }
    }
    let mut routes: Vec<usize> = touched
        .iter()
        .flat_map(|&s| {
            let from = last.member_of.partition_point(|&(t, _)| t < s);
            last.member_of[from..]
                .iter()
                .take_while(move |&&(t, _)| t == s)
                .map(|&(_, r)| r)
        })
        .collect();
    routes.sort_unstable();
    routes.dedup();
    touched.sort_unstable();
    touched.dedup();
    for &r in &routes {
        let old = &table.routes[r];
        let services: Vec<usize> = old.members.iter().map(|m| m.service).collect();
        let route = Route::new(
            old.name.clone(),
            &services,
            &table.services,
            &config.weight_overrides,
        );
        table.routes.set(r, std::sync::Arc::new(route));
    }
    let patched = Patched {
        services: touched,
        routes,
    };
    (share(table), patched)
}

/// Whether an app compiled again (`new`) takes the place in the table it had (`old`): the same
/// claims, entry points and problems, so that every app's claims and every route's members
/// are what they were. What may differ is what its services hold (backends above all).
fn same_place(old: &Part, new: &Part) -> bool {
    old.notices == new.notices
        && old.ports.len() == new.ports.len()
        && old.ports.iter().zip(new.ports.iter()).all(|(p, q)| {
            p.early == q.early
                && match (&p.claim, &q.claim) {
                    (None, None) => true,
                    (Some(c), Some(d)) => same_claim(c, d),
                    _ => false,
                }
        })
}

fn same_claim(c: &ClaimPart, d: &ClaimPart) -> bool {
    // Every field named: a new one must be compared here (or said why not).
    let ClaimPart {
        key,
        ip,
        service_port,
        group,
        alt,
        udp,
        tcp,
    } = d;
    c.key == *key
        && c.ip == *ip
        && c.service_port == *service_port
        && c.group == *group
        && c.alt == *alt
        && match (&c.udp, udp) {
            (None, None) => true,
            // Its service is what may change; where it listens may not.
            (Some((s, late)), Some((t, later))) => {
                late == later && s.key == t.key && s.listen == t.listen && s.mode == t.mode
            }
            _ => false,
        }
        && match (&c.tcp, tcp) {
            (None, None) => true,
            (Some(t), Some(u)) => same_tcp(t, u),
            _ => false,
        }
}

fn same_tcp(t: &TcpPart, u: &TcpPart) -> bool {
    let TcpPart {
        service,
        late,
        hosts,
        paths,
        ignore_case,
        weight,
        ssl_certs,
        sni_rules,
    } = u;
    // The service's other fields are read by the routes it is a member of, which are made again.
    t.service.key == service.key
        && t.service.listen == service.listen
        && t.service.mode == service.mode
        && t.service.deployment.group == service.deployment.group
        && t.late == *late
        && t.hosts == *hosts
        && t.paths == *paths
        && t.ignore_case == *ignore_case
        && t.weight == *weight
        && t.ssl_certs == *ssl_certs
        && t.sni_rules == *sni_rules
}
