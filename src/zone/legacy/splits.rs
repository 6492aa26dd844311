#![allow(dead_code)]
// SRV records that carry a route's traffic split: a deployment group's apps (blue and green, or
// a baseline and its canary) answer together under the group's name,
// `_{group}._tcp.marathon.{domain}` (and `_udp`), each task's record weighted by its app's share
// of the route divided by the app's number of answered tasks. An SRV-aware client that picks
// targets by weight (RFC 2782) then splits its connections as the proxy splits its own, and
// follows a weight change (labels or the runtime override) within one swap.
//
// The split comes from the compiled table (the weights as they route, overrides included), as
// plain data ([`RouteSplit`]) read by the reconciler, so the zone needs no backend state.

use hickory_proto::rr::rdata::SRV;
use hickory_proto::rr::{LowerName, Name, RData, Record};
use rustc_hash::FxHashMap;

use crate::cluster::AppId;
use crate::cluster::names::{LabelRule, label, service_label};

/// The weight of the heaviest record of a split: every other record's is in proportion to it.
pub const HEAVIEST: u16 = 10_000;

use crate::zone::RouteSplit;

/// One answered task's SRV data on a split member's port, gathered while the apps' own records
/// are built.
pub(super) struct Target {
    pub port: u16,
    pub target: Name,
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

/// Adds each split's weighted SRV records under `_{group}._tcp` / `_udp`. A group whose name is
/// an app's own SRV name is not served there (the app's name wins) and is reported.
pub(super) fn add_records(
    splits: &[RouteSplit],
    targets: &Targets,
    domain: &str,
    rule: LabelRule,
    names: &mut FxHashMap<LowerName, super::Node>,
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
        let mut owners: FxHashMap<&str, (Name, Vec<Record>)> = FxHashMap::default();
        for (share, targets) in &shares {
            let weight = ((share / heaviest) * f64::from(HEAVIEST)).round().max(1.0) as u16;
            for t in targets.iter() {
                for proto in t.protocols {
                    let entry = owners.entry(proto).or_insert_with(|| {
                        let owner =
                            Name::from_ascii(format!("{service}.{proto}.marathon.{domain}."))
                                .unwrap_or_else(|_| Name::root());
                        (owner, Vec::new())
                    });
                    let srv = RData::SRV(SRV::new(0, weight, t.port, t.target.clone()));
                    entry.1.push(Record::from_rdata(Name::root(), t.ttl, srv));
                }
            }
        }
        for (_, (owner, records)) in owners {
            if owner.is_root() {
                continue;
            }
            let key = LowerName::new(&owner);
            if names.get(&key).is_some_and(|n| !n.srv.is_empty()) {
                problems.push(crate::routing::Problem {
                    app_id: split.members[0].0.clone(),
                    port_index: Some(0),
                    severity: crate::routing::Severity::Ignored,
                    reason: format!(
                        "DNS: deployment group `{}`'s weighted SRV name `{owner}` is an app's own: \
                         the app's records answer it",
                        split.group
                    ),
                });
                continue;
            }
            names.entry(key).or_default().srv = records;
        }
    }
}
