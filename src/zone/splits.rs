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
        .filter(|route| route.members.len() > 1)
        .filter_map(|route| {
            let members: Vec<(AppId, usize, u32)> = route
                .members
                .iter()
                .map(|m| {
                    let key = &table.services[m.service].key;
                    (key.app_id.clone(), key.port_index, m.weight)
                })
                .collect();
            let grouped = route.members.iter().all(|m| {
                let service = &table.services[m.service];
                service.deployment.group.as_deref() == Some(route.name.as_str())
                    && service.key.port_index == 0
            });
            grouped.then(|| RouteSplit {
                group: route.name.clone(),
                members,
            })
        })
        .collect()
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
