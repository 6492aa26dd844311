//! SRV records that carry a route's traffic split: a deployment group's apps (blue and green, or
//! a baseline and its canary) answer together under the group's name,
//! `_{group}._tcp.marathon.{domain}` (and `_udp`), each task's record weighted by its app's share
//! of the route divided by the app's number of answered tasks. An SRV-aware client that picks
//! targets by weight (RFC 2782) then splits its connections as the proxy splits its own, and
//! follows a weight change (labels or the runtime override) within one swap.
//!
//! The split comes from the compiled table (the weights as they route, overrides included), as
//! plain data ([`RouteSplit`]) read by the reconciler, so the zone needs no backend state.

use rustc_hash::FxHashMap;

use super::compact::{Builder, Kind, NameId};
use crate::cluster::AppId;
use crate::cluster::names::{label, service_label};
use crate::routing::RoutingTable;
use crate::routing::routes::Route;

/// The weight of the heaviest record of a split: every other record's is in proportion to it.
pub const HEAVIEST: u16 = 10_000;

/// One route that splits traffic among several apps, named after their deployment group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSplit {
    /// The deployment group (`HAPROXY_DEPLOYMENT_GROUP`), the route's name.
    pub group: String,
    /// Each app's port and weight as the route uses it (0: takes no traffic).
    pub members: Vec<(AppId, usize, u32)>,
}

/// The table's routes that split traffic among two or more apps of one deployment group, on the
/// group's first port (the route named after the group alone).
pub fn route_splits(table: &RoutingTable) -> Vec<RouteSplit> {
    table
        .routes
        .iter()
        .filter_map(|route| split_of(table, route))
        .collect()
}

/// `route`'s split, if it is one.
fn split_of(table: &RoutingTable, route: &Route) -> Option<RouteSplit> {
    if route.members.len() < 2 {
        return None;
    }
    let grouped = route.members.iter().all(|m| {
        let service = &table.services[m.service];
        service.deployment.group.as_deref() == Some(route.name.as_str())
            && service.key.port_index == 0
    });
    grouped.then(|| RouteSplit {
        group: route.name.clone(),
        members: route
            .members
            .iter()
            .map(|m| {
                let key = &table.services[m.service].key;
                (key.app_id.clone(), key.port_index, m.weight)
            })
            .collect(),
    })
}

/// [`route_splits`] kept from one swap to the next, so that a swap that patched a few routes
/// (`routing::compile::Patched`) looks at their chunks of routes alone, not at every route
/// (`crate::chunked`): a chunk of routes that is the last table's own, whose routes of several
/// members still have the same services, gives the splits it gave.
#[derive(Default)]
pub struct SplitsMemo {
    table: Option<std::sync::Arc<RoutingTable>>,
    /// Per chunk of routes: its splits, and its routes of several members (the only ones that
    /// read services).
    chunks: Vec<(Vec<RouteSplit>, Vec<usize>)>,
}

impl SplitsMemo {
    /// [`route_splits`] of `table`.
    pub fn splits(&mut self, table: &std::sync::Arc<RoutingTable>) -> Vec<RouteSplit> {
        let old = self.table.replace(table.clone());
        let old = old.filter(|t| t.routes.len() == table.routes.len());
        let mut chunks = Vec::with_capacity(table.routes.chunks().len());
        for (c, chunk) in table.routes.chunks().iter().enumerate() {
            let kept = old.as_ref().and_then(|old| {
                let (splits, several) = self.chunks.get_mut(c)?;
                let same = std::sync::Arc::ptr_eq(&old.routes.chunks()[c], chunk)
                    && several.iter().all(|&r| {
                        table.routes[r].members.iter().all(|m| {
                            std::sync::Arc::ptr_eq(
                                &old.services[m.service],
                                &table.services[m.service],
                            )
                        })
                    });
                same.then(|| (std::mem::take(splits), std::mem::take(several)))
            });
            chunks.push(kept.unwrap_or_else(|| {
                let from = c * crate::chunked::CHUNK;
                let several = (from..from + chunk.len())
                    .filter(|&r| table.routes[r].members.len() > 1)
                    .collect::<Vec<_>>();
                let splits = several
                    .iter()
                    .filter_map(|&r| split_of(table, &table.routes[r]))
                    .collect();
                (splits, several)
            }));
        }
        self.chunks = chunks;
        self.chunks
            .iter()
            .flat_map(|(splits, _)| splits.iter().cloned())
            .collect()
    }
}

/// One answered task's SRV data on a split member's port, gathered while the apps' own records
/// are built.
pub(super) struct Target {
    pub port: u16,
    pub target: NameId,
    pub protocols: &'static [&'static str],
    pub ttl: u32,
}

/// Where the zone build puts the targets of split members' ports: keyed by app and port.
pub(super) type Targets = FxHashMap<(AppId, usize), Vec<Target>>;

pub(super) fn targets(splits: &[RouteSplit]) -> Targets {
    splits
        .iter()
        .flat_map(|s| s.members.iter())
        .map(|(app, port, _)| ((app.clone(), *port), Vec::new()))
        .collect()
}

/// Adds each split's weighted SRV records under `_{group}._tcp` / `_udp` (`tcp`, `udp`: the
/// parents `_tcp.marathon.{domain}.` and `_udp.…`). A group whose name is an app's own SRV name
/// is not served there (the app's name wins) and is reported.
pub(super) fn add_records(
    splits: &[RouteSplit],
    targets: &Targets,
    rule: crate::cluster::names::LabelRule,
    tcp: Option<NameId>,
    udp: Option<NameId>,
    b: &mut Builder,
    problems: &mut Vec<crate::routing::Problem>,
) {
    for split in splits {
        let group = label(&split.group, rule);
        if group.is_empty() {
            continue;
        }
        let (service, _) = service_label(&group);
        // Each member's weight per answered task; members without either take no traffic.
        let shares: Vec<(f64, &Vec<Target>)> = split
            .members
            .iter()
            .filter_map(|(app, port, weight)| {
                let t = targets.get(&(app.clone(), *port))?;
                (*weight > 0 && !t.is_empty()).then(|| (f64::from(*weight) / t.len() as f64, t))
            })
            .collect();
        let heaviest = shares.iter().map(|(s, _)| *s).fold(0.0, f64::max);
        if heaviest <= 0.0 {
            continue;
        }
        // Per protocol: the owner (`None`: the name does not fit) and its records.
        type Srv = (u16, u16, NameId, u32);
        let mut owners: FxHashMap<&str, (Option<NameId>, Vec<Srv>)> = FxHashMap::default();
        for (share, targets) in &shares {
            let weight = ((share / heaviest) * f64::from(HEAVIEST)).round().max(1.0) as u16;
            for t in targets.iter() {
                for proto in t.protocols {
                    let entry = owners.entry(proto).or_insert_with(|| {
                        let parent = if *proto == "_tcp" { tcp } else { udp };
                        let owner = parent.and_then(|p| b.names.child(service.as_bytes(), p));
                        (owner, Vec::new())
                    });
                    entry.1.push((weight, t.port, t.target, t.ttl));
                }
            }
        }
        for (_, (owner, records)) in owners {
            let Some(owner) = owner else {
                continue;
            };
            if b.has(owner, Kind::Srv) {
                problems.push(crate::routing::Problem {
                    app_id: split.members[0].0.clone(),
                    port_index: Some(0),
                    severity: crate::routing::Severity::Ignored,
                    reason: format!(
                        "DNS: deployment group `{}`'s weighted SRV name `{}` is an app's own: \
                         the app's records answer it",
                        split.group,
                        b.names.name(owner)
                    ),
                });
                continue;
            }
            b.touch(owner);
            for (weight, port, target, ttl) in records {
                b.add_srv(owner, weight, port, target, ttl, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{app, task};
    use crate::cluster::{Cluster, ClusterUpdate, TaskState};
    use crate::routing::compile::{Cache, compile_changed};
    use std::sync::Arc;

    /// The memo's splits are `route_splits` of each table in turn: tables patched for a task
    /// of a split's member, of another app, and assembled again (an app gone).
    #[test]
    fn memoized_splits_are_the_splits_made_again() {
        let config = crate::routing::CompileConfig::group("*", "127.0.0.1".parse().unwrap());
        let group = |w: &'static str| {
            vec![
                ("HAPROXY_DEPLOYMENT_GROUP", "shop"),
                ("HAPROXY_DEPLOYMENT_ALT_PORT", "10100"),
                ("SWITCHYARD_0_WEIGHT", w),
            ]
        };
        let mut apps: Vec<_> = (0..3 * crate::chunked::CHUNK)
            .map(|i| {
                let id = format!("/a{i:03}");
                app(
                    &id,
                    11000 + i as u16,
                    &[],
                    vec![task(&format!("{id}.1"), 1)],
                )
            })
            .collect();
        apps.push(app("/m-blue", 10000, &group("90"), vec![task("b.1", 1)]));
        apps.push(app("/m-green", 10000, &group("10"), vec![task("g.1", 2)]));
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(apps));
        let mut cache = Cache::default();
        let mut memo = SplitsMemo::default();
        let mut check = |c: &Cluster, listed: Option<&[&str]>| {
            let listed = listed.map(|l| l.iter().map(|&id| id.into()).collect());
            let table = Arc::new(compile_changed(&mut cache, c, &config, listed.as_ref()));
            let splits = memo.splits(&table);
            assert_eq!(splits, route_splits(&table));
            splits
        };
        assert_eq!(check(&c, None).len(), 1);
        // A task of green's killed: its route made again, green's weight share unchanged.
        let mut killed = task("g.1", 2);
        killed.state = TaskState::Other("TASK_KILLED".into());
        c.apply(ClusterUpdate::TaskStatus {
            app_id: "/m-green".into(),
            task: killed,
        });
        check(&c, Some(&["/m-green"]));
        c.apply(ClusterUpdate::TaskStatus {
            app_id: "/a070".into(),
            task: task("/a070.2", 2),
        });
        check(&c, Some(&["/a070"]));
        // Green's weight changed: the split follows.
        c.apply(ClusterUpdate::AppUpserted(app(
            "/m-green",
            10000,
            &group("30"),
            vec![task("g.2", 3)],
        )));
        let splits = check(&c, Some(&["/m-green"]));
        assert_eq!(splits[0].members[1].2, 30, "{splits:?}");
        c.apply(ClusterUpdate::AppRemoved {
            id: "/a001".into(),
            at_ms: 0,
        });
        check(&c, None);
        c.apply(ClusterUpdate::AppRemoved {
            id: "/m-blue".into(),
            at_ms: 0,
        });
        assert!(check(&c, None).is_empty());
    }
}
