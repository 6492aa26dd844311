//! What one table swap changed, as the log line and the dashboard's swap record say it: backends
//! added and removed, routes whose apps or weights changed, and the short summary of a long list.
//! Pure functions of the two tables; the reconciler calls them once per swap, with what a
//! patched compile replaced (`routing::compile::Patched`) when it did: then the services and
//! routes it replaced are the only ones looked at.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::routing::RoutingTable;

use crate::routing::compile::Patched;

/// What one swap changed.
pub(super) struct Changes {
    pub added: Listed,
    pub removed: Listed,
    pub routes: Vec<String>,
    pub problems_changed: bool,
}

/// What `after` changed of `before`; `patched`: `after` is `before` but for these services and
/// routes (at the same indices, with the same keys and names), which alone are looked at. The
/// same as looking at every one: the others are the same `Arc`s.
pub(super) fn of(
    before: &RoutingTable,
    after: &RoutingTable,
    patched: Option<&Patched>,
) -> Changes {
    let problems_changed = before.problems != after.problems;
    let Some(p) = patched.filter(|p| fits(before, after, p)) else {
        let (added, removed) = diff(before, after);
        return Changes {
            added,
            removed,
            routes: route_changes(before, after),
            problems_changed,
        };
    };
    let (mut added, mut removed) = (Capped::default(), Capped::default());
    for &i in &p.services {
        let (x, y) = (&before.services[i], &after.services[i]);
        backends_changed(x, y, &mut added, &mut removed);
    }
    let mut routes: Vec<String> = p
        .routes
        .iter()
        .filter(|&&r| before.routes[r].split_differs(&after.routes[r]))
        .map(|&r| after.routes[r].name.clone())
        .collect();
    routes.sort();
    Changes {
        added: added.finish(),
        removed: removed.finish(),
        routes,
        problems_changed,
    }
}

/// Whether `patched` may be what made `after` of `before`: indices in both, services of the
/// same keys and routes of the same names there.
fn fits(before: &RoutingTable, after: &RoutingTable, p: &Patched) -> bool {
    before.services.len() == after.services.len()
        && before.routes.len() == after.routes.len()
        && p.services
            .iter()
            .all(|&i| i < after.services.len() && before.services[i].key == after.services[i].key)
        && p.routes
            .iter()
            .all(|&r| r < after.routes.len() && before.routes[r].name == after.routes[r].name)
}

/// The backends in `after`: `count` were in `before`, of which `after` is a patch (`patched`)
/// or not (`None`: counted again).
pub(super) fn backends(
    count: usize,
    before: &RoutingTable,
    after: &RoutingTable,
    patched: Option<&Patched>,
) -> usize {
    let all = |t: &RoutingTable| t.services.iter().map(|s| s.backends.len()).sum();
    match patched.filter(|p| fits(before, after, p)) {
        Some(p) => {
            let of = |t: &RoutingTable| -> usize {
                p.services
                    .iter()
                    .map(|&i| t.services[i].backends.len())
                    .sum()
            };
            (count + of(after)).saturating_sub(of(before))
        }
        None => all(after),
    }
}

pub(super) type BackendIds = BTreeSet<(String, SocketAddr)>;

pub(super) fn backend_ids(table: &RoutingTable) -> BackendIds {
    table
        .services
        .iter()
        .flat_map(|s| s.backends.iter().map(move |b| (s.key.to_string(), b.addr)))
        .collect()
}

/// Backends added and removed (`service@addr`), each listed as a swap's record keeps it: the
/// first [`KEPT`] in the order of their names, and how many in all. Services are sorted by key
/// in a compiled table, so the two tables are walked side by side and only services that differ
/// are looked at; of those, a backend's name is made only when it is among the first [`KEPT`]
/// so far. A table's service keys are unique and equal keys are matched, so no backend is both
/// added and removed. The first swap of a 50,000-app table adds 500,000 backends: it counts
/// them and names 20, where it used to name and sort them all on the control thread.
pub(super) fn diff(before: &RoutingTable, after: &RoutingTable) -> (Listed, Listed) {
    let sorted = |t: &RoutingTable| {
        let keys = t.services.iter().map(|s| &s.key);
        keys.clone().zip(keys.skip(1)).all(|(a, b)| a <= b)
    };
    let (mut added, mut removed) = (Capped::default(), Capped::default());
    if !sorted(before) || !sorted(after) {
        let (a, b) = (backend_ids(before), backend_ids(after));
        for id in b.difference(&a) {
            added.offer(&id.0, id.1);
        }
        for id in a.difference(&b) {
            removed.offer(&id.0, id.1);
        }
        return (added.finish(), removed.finish());
    }
    let all = |s: &crate::routing::Service, out: &mut Capped| {
        let key = s.key.to_string();
        for b in s.backends.iter() {
            out.offer(&key, b.addr);
        }
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
                    backends_changed(x, y, &mut added, &mut removed);
                    a.next();
                    b.next();
                }
            },
        }
    }
    (added.finish(), removed.finish())
}

/// How many a swap's record and log line keep of each list.
pub(super) const KEPT: usize = 20;

/// A list as a swap's record keeps it: its first [`KEPT`] items, in order, and how many in
/// all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Listed {
    pub first: Vec<String>,
    pub count: usize,
}

impl Listed {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Gathers backend ids into a [`Listed`]: all counted, the [`KEPT`] smallest kept.
#[derive(Default)]
pub(super) struct Capped {
    smallest: BTreeSet<(String, SocketAddr)>,
    count: usize,
}

impl Capped {
    pub(super) fn offer(&mut self, key: &str, addr: SocketAddr) {
        self.count += 1;
        if self.smallest.len() == KEPT
            && let Some(last) = self.smallest.last()
            && (key, addr) >= (last.0.as_str(), last.1)
        {
            return;
        }
        self.smallest.insert((key.to_string(), addr));
        if self.smallest.len() > KEPT {
            self.smallest.pop_last();
        }
    }

    pub(super) fn finish(self) -> Listed {
        Listed {
            first: self
                .smallest
                .iter()
                .map(|(s, addr)| format!("{s}@{addr}"))
                .collect(),
            count: self.count,
        }
    }
}

/// The backends of `y` not in `x` (added) and of `x` not in `y` (removed), for two services
/// of one key.
fn backends_changed(
    x: &crate::routing::Service,
    y: &crate::routing::Service,
    added: &mut Capped,
    removed: &mut Capped,
) {
    let same = x.backends.len() == y.backends.len()
        && x.backends
            .iter()
            .zip(&y.backends)
            .all(|(p, q)| p.addr == q.addr);
    if same {
        return;
    }
    let ids = |s: &crate::routing::Service| -> BTreeSet<SocketAddr> {
        s.backends.iter().map(|b| b.addr).collect()
    };
    let (p, q) = (ids(x), ids(y));
    let key = y.key.to_string();
    for addr in q.difference(&p) {
        added.offer(&key, *addr);
    }
    for addr in p.difference(&q) {
        removed.offer(&key, *addr);
    }
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
    let mut changed: Vec<(&str, bool)> = Vec::new();
    for (name, route) in &b {
        match a.get(name) {
            None => changed.push((name, true)),
            Some(old) if old.split_differs(route) => changed.push((name, false)),
            Some(_) => {}
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

/// A list for the log line: its first five, and how many more.
pub(super) fn summary(list: &Listed) -> String {
    const SHOWN: usize = 5;
    let mut s = list
        .first
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    if list.count > SHOWN {
        s.push_str(&format!(" (+{} more)", list.count - SHOWN));
    }
    if s.is_empty() { "-".into() } else { s }
}
