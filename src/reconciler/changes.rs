//! What one table swap changed, as the log line and the dashboard's swap record say it: backends
//! added and removed, routes whose apps or weights changed, and the short summary of a long list.
//! Pure functions of the two tables; the reconciler calls them once per swap.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::routing::RoutingTable;

pub(super) type BackendIds = BTreeSet<(String, SocketAddr)>;

pub(super) fn backend_ids(table: &RoutingTable) -> BackendIds {
    table
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(move |b| (s.key.to_string(), b.addr)))
        .collect()
}

/// Backends added and removed (`service@addr`, in that order), as sets of (service, address).
/// Services are sorted by key in a compiled table, so the two tables are walked side by side and
/// only what differs is formatted: a swap that moves one task of a 10,000-app table does not
/// format 200,000 names.
pub(super) fn diff(before: &RoutingTable, after: &RoutingTable) -> (Vec<String>, Vec<String>) {
    let fmt = |(s, addr): &(String, SocketAddr)| format!("{s}@{addr}");
    let sorted = |t: &RoutingTable| t.services.windows(2).all(|w| w[0].key <= w[1].key);
    if !sorted(before) || !sorted(after) {
        let (a, b) = (backend_ids(before), backend_ids(after));
        return (
            b.difference(&a).map(fmt).collect(),
            a.difference(&b).map(fmt).collect(),
        );
    }
    let (mut added, mut removed) = (BackendIds::new(), BackendIds::new());
    let ids = |s: &crate::routing::Service| -> BTreeSet<SocketAddr> {
        s.backends.iter().map(|b| b.addr).collect()
    };
    let all = |s: &crate::routing::Service, out: &mut BackendIds| {
        let key = s.key.to_string();
        out.extend(s.backends.iter().map(|b| (key.clone(), b.addr)));
    };
    let (mut a, mut b) = (
        before.services.iter().peekable(),
        after.services.iter().peekable(),
    );
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(x), None) => {
                all(x, &mut removed);
                a.next();
            }
            (None, Some(y)) => {
                all(y, &mut added);
                b.next();
            }
            (Some(x), Some(y)) => match x.key.cmp(&y.key) {
                std::cmp::Ordering::Less => {
                    all(x, &mut removed);
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    all(y, &mut added);
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    let same = x.backends.len() == y.backends.len()
                        && x.backends
                            .iter()
                            .zip(&y.backends)
                            .all(|(p, q)| p.addr == q.addr);
                    if !same {
                        let (p, q) = (ids(x), ids(y));
                        let key = y.key.to_string();
                        added.extend(q.difference(&p).map(|addr| (key.clone(), *addr)));
                        removed.extend(p.difference(&q).map(|addr| (key.clone(), *addr)));
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    // Two services whose keys read the same (a set of strings, as before) cancel out.
    let (added, removed): (Vec<_>, Vec<_>) = (
        added.difference(&removed).map(fmt).collect(),
        removed.difference(&added).map(fmt).collect(),
    );
    (added, removed)
}

/// Routes added (`+name`), removed (`-name`), or whose apps or weights changed (`name`), by
/// name: [`RoutingTable::route_weights`] compared, without building it for routes whose members
/// and weights are the same in the same order.
pub(super) fn route_changes(before: &RoutingTable, after: &RoutingTable) -> Vec<String> {
    use crate::routing::routes::Route;
    fn by_name(t: &RoutingTable) -> rustc_hash::FxHashMap<&str, &Route> {
        t.routes.iter().map(|r| (r.name.as_str(), &**r)).collect()
    }
    let (a, b) = (by_name(before), by_name(after));
    let weights = |r: &Route| -> BTreeMap<String, u32> {
        r.members
            .iter()
            .map(|m| (m.app_id.to_string(), m.weight))
            .collect()
    };
    let mut changed: Vec<(&str, bool)> = Vec::new();
    for (name, route) in &b {
        match a.get(name) {
            None => changed.push((name, true)),
            Some(old) => {
                let same = old.members.len() == route.members.len()
                    && old
                        .members
                        .iter()
                        .zip(&route.members)
                        .all(|(p, q)| p.app_id == q.app_id && p.weight == q.weight);
                if !same && weights(old) != weights(route) {
                    changed.push((name, false));
                }
            }
        }
    }
    changed.sort();
    let mut gone: Vec<&str> = a.keys().filter(|n| !b.contains_key(*n)).copied().collect();
    gone.sort();
    changed
        .into_iter()
        .map(|(name, new)| {
            if new {
                format!("+{name}")
            } else {
                name.to_string()
            }
        })
        .chain(gone.into_iter().map(|n| format!("-{n}")))
        .collect()
}

pub(super) fn summary(items: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    if items.len() > SHOWN {
        s.push_str(&format!(" (+{} more)", items.len() - SHOWN));
    }
    if s.is_empty() { "-".into() } else { s }
}
