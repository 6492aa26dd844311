//! Service ports for IP-per-task apps that Marathon gave none (marathon-lb's
//! `ServicePortAssigner`, utils.py): each port of such an app gets one from a configured range
//! (`--min-serv-port-ip-per-task` / `--max-serv-port-ip-per-task`, 10050–10100 by default),
//! hashed from the app id and the task port so that every instance agrees.
//!
//! marathon-lb assigns in the order Marathon lists apps, so two instances can disagree after a
//! clash when they read the apps in different orders. Here the apps are visited in id order
//! (and ports in index order): the assignment is a pure function of the cluster.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{App, AppId, Cluster};

/// "The maximum number of clashes to allow when assigning a port." (utils.py `MAX_CLASHES`)
const MAX_CLASHES: usize = 50;

/// (app, port index) → assigned service port; ports that found none are absent.
pub type Assigned = BTreeMap<(AppId, usize), u16>;

/// Assigns ports in `min..=max` to every port of the apps that need them. `reserved` (switchyard's
/// own listeners, from the configuration every instance shares) are never assigned: marathon-lb
/// leaves that to the operator's choice of range.
pub fn assign(cluster: &Cluster, min: u16, max: u16, reserved: &BTreeSet<u16>) -> Assigned {
    let mut assigned = Assigned::new();
    if min == 0 || max < min {
        return assigned;
    }
    let size = usize::from(max - min) + 1;
    let mut taken: BTreeSet<u16> = reserved.range(min..=max).copied().collect();
    // utils.py keys by (app id, task port): two indices with the same task port share one.
    let mut by_task_port: BTreeMap<(AppId, u16), u16> = BTreeMap::new();
    for app in cluster.apps.values().filter(|a| asks(a)) {
        for (n, task_port) in task_ports(app).enumerate() {
            let key = (app.id.clone(), task_port);
            let port = match by_task_port.get(&key) {
                Some(&p) => Some(p),
                None => new_port(&app.id, task_port, min, size, &taken),
            };
            if let Some(port) = port {
                taken.insert(port);
                by_task_port.insert(key, port);
                assigned.insert((app.id.clone(), n), port);
            }
        }
    }
    assigned
}

/// Whether `app` is given ports: `if not ports and mode == "container" and self.can_assign and
/// len(app['tasks']) > 0`.
fn asks(app: &App) -> bool {
    app.assign_service_ports && !app.tasks.is_empty()
}

/// The task port each of `app`'s ports is assigned by, in port order.
fn task_ports(app: &App) -> impl Iterator<Item = u16> + '_ {
    app.ports
        .iter()
        .map(|spec| spec.container_port.unwrap_or(0))
}

/// Whether [`assign`] may give any app other ports once `old` is replaced by `new` (`None`: no
/// such app): the assignment is a function of the apps that ask for ports, in id order, and of
/// their task ports, so only an app that asks (or asked) for others can move it.
pub fn moves_assignment(old: Option<&App>, new: Option<&App>) -> bool {
    match (old.filter(|a| asks(a)), new.filter(|a| asks(a))) {
        (None, None) => false,
        (Some(a), Some(b)) => !task_ports(a).eq(task_ports(b)),
        _ => true,
    }
}

/// utils.py `_assign_new_service_port`: up to 50 hashes of `{app id}-{task port}-{i}`
/// (the first 8 hex digits of SHA-1, modulo the range), then the lowest free port.
fn new_port(
    app_id: &str,
    task_port: u16,
    min: u16,
    size: usize,
    taken: &BTreeSet<u16>,
) -> Option<u16> {
    // `if self.max_ports <= len(self.ports_by_app): ... "Service ports are exhausted"`
    if taken.len() >= size {
        return None;
    }
    let offset = |o: usize| min.checked_add(u16::try_from(o).ok()?);
    for i in 0..MAX_CLASHES {
        let text = format!("{app_id}-{task_port}-{i}");
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
        let bytes = digest.as_ref();
        let hash = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let trial = offset(hash % size)?;
        if !taken.contains(&trial) {
            return Some(trial);
        }
    }
    (0..size).filter_map(offset).find(|p| !taken.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{app, task};
    use crate::cluster::{App, ClusterUpdate, Networking, PortSpec};

    fn ip_app(id: &str, container_ports: &[u16]) -> App {
        let mut a = app(id, 0, &[], vec![task(&format!("{id}.1"), 1)]);
        a.networking = Networking::Container;
        a.assign_service_ports = true;
        a.ports = container_ports
            .iter()
            .map(|&p| PortSpec {
                container_port: Some(p),
                ..PortSpec::default()
            })
            .collect();
        a
    }

    fn cluster(apps: Vec<App>) -> Cluster {
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(apps));
        c
    }

    #[test]
    fn the_first_hash_is_marathon_lbs() {
        // utils.py: hash_str = "%s-%s-%s" % (app['id'], task_port, i);
        // int(sha1(hash_str).hexdigest()[:8], 16); min_port + (hash_int % max_ports).
        // Python's hashlib: sha1(b"/web-80-0").hexdigest()[:8] == "7716ff21", and
        // 10050 + 0x7716ff21 % 51 == 10071.
        let expected = 10071;
        let a = assign(
            &cluster(vec![ip_app("/web", &[80])]),
            10050,
            10100,
            &BTreeSet::new(),
        );
        assert_eq!(a[&("/web".into(), 0)], expected);
    }

    #[test]
    fn clashes_move_on_and_the_range_can_run_out() {
        // A range of two ports and three app ports: two are assigned, distinct; one is not.
        let c = cluster(vec![ip_app("/a", &[80, 81]), ip_app("/b", &[80])]);
        let a = assign(&c, 20000, 20001, &BTreeSet::new());
        assert_eq!(a.len(), 2);
        let ports: BTreeSet<u16> = a.values().copied().collect();
        assert_eq!(ports, BTreeSet::from([20000, 20001]));
        // Apps without tasks, or that have service ports, get none.
        let mut idle = ip_app("/idle", &[80]);
        idle.tasks.clear();
        let mut has = ip_app("/has", &[80]);
        has.assign_service_ports = false;
        assert!(assign(&cluster(vec![idle, has]), 10050, 10100, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn switchyards_own_ports_are_never_assigned() {
        let c = cluster(vec![ip_app("/a", &[80]), ip_app("/b", &[80])]);
        let a = assign(&c, 20000, 20002, &BTreeSet::from([20000, 20001]));
        assert_eq!(a.len(), 1, "one port left");
        assert_eq!(a.values().next(), Some(&20002));
    }

    proptest::proptest! {
        #[test]
        fn the_assignment_ignores_the_order_apps_arrive_in(
            ids in proptest::collection::btree_set("/[a-z]{1,3}", 1..30),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let apps: Vec<App> = ids.iter().map(|id| ip_app(id, &[80, 443])).collect();
            let mut shuffled = apps.clone();
            fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
            let a = assign(&cluster(apps), 10050, 10100, &BTreeSet::new());
            let b = assign(&cluster(shuffled), 10050, 10100, &BTreeSet::new());
            proptest::prop_assert_eq!(&a, &b);
            let distinct: BTreeSet<u16> = a.values().copied().collect();
            proptest::prop_assert_eq!(distinct.len(), a.len(), "no port twice");
            proptest::prop_assert!(a.values().all(|p| (10050..=10100).contains(p)));
        }
    }
}
