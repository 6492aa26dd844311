//! An app port's backends from its tasks, for `compile`: which tasks are routable and why the
//! others are held back, each task's address (host, container or IP-per-task networking), and
//! the backends' order (the table is the same whatever order the tasks came in).

use super::*;

/// Port `n`'s backends, in [`backend_order`], and the tasks held back (not routable: not
/// running, or not healthy or ready yet) with why, in task order: one walk over the tasks.
pub(super) fn backends(
    cluster: &Cluster,
    app: &App,
    n: usize,
    problem: &mut impl FnMut(Severity, String),
) -> (Vec<Backend>, Vec<(crate::cluster::TaskId, &'static str)>) {
    let mut out = Vec::with_capacity(app.tasks.len());
    let mut held_back = Vec::new();
    // What every task's address is made of the same way, read once per port.
    let container_port = match app.networking {
        Networking::Container => app.ports[n].container_port.filter(|&p| p != 0),
        Networking::Host => None,
    };
    // Whether the backends came in order (tasks in id order, often placed in turn): each one's
    // order key made once here, where sorting compares two per step.
    let mut sorted = true;
    let mut last = None;
    for task in app.tasks.values() {
        // `held_back` is `None` exactly for a routable task (`Task::is_routable`).
        if let Some(why) = task.held_back(app.health_checks) {
            held_back.push((task.id.clone(), why));
            continue;
        }
        match task_addr(cluster, app.networking, container_port, n, task) {
            Ok(addr) => {
                // Strictly above the last (an equal key is ordered by task id: sorted then).
                let key = v4_order(&addr);
                sorted &= key.is_some() && (last.is_none() || key > last);
                last = key;
                out.push(Backend {
                    addr,
                    task_id: task.id.clone(),
                    weight: 1,
                    probe_addr: None,
                })
            }
            Err(unaddressable) => problem(
                Severity::Skipped,
                format!("task {}: {}", task.id, unaddressable.reason(n, task)),
            ),
        }
    }
    if !sorted {
        out.sort_by(backend_order);
    }
    (out, held_back)
}

/// An IPv4 address and port as one integer, ordered as `SocketAddr` orders them; `None` for
/// IPv6.
#[inline]
pub(super) fn v4_order(addr: &SocketAddr) -> Option<u64> {
    match addr {
        SocketAddr::V4(v4) => Some((u64::from(v4.ip().to_bits()) << 16) | u64::from(v4.port())),
        SocketAddr::V6(_) => None,
    }
}

/// A service's backends in order: by address (as `SocketAddr` orders them), then task id.
/// IPv4 addresses (nearly always) compared as one integer of address and port: comparing
/// `SocketAddr`s was most of the sort.
pub(super) fn backend_order(a: &Backend, b: &Backend) -> std::cmp::Ordering {
    match (v4_order(&a.addr), v4_order(&b.addr)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.addr.cmp(&b.addr),
    }
    .then_with(|| a.task_id.cmp(&b.task_id))
}

/// Task `task`'s address for port `n` of `app`.
pub(super) fn backend_addr(
    cluster: &Cluster,
    app: &App,
    n: usize,
    task: &Task,
) -> Result<SocketAddr, String> {
    let container_port = match app.networking {
        Networking::Container => app.ports[n].container_port.filter(|&p| p != 0),
        Networking::Host => None,
    };
    task_addr(cluster, app.networking, container_port, n, task).map_err(|u| u.reason(n, task))
}

/// Why a task has no address for a port; said as text only when it happens.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unaddressable {
    NoContainerIp,
    NoContainerPort,
    NoPort,
    Unresolved,
}

impl Unaddressable {
    fn reason(self, n: usize, task: &Task) -> String {
        match self {
            Unaddressable::NoContainerIp => "no container IP address".into(),
            Unaddressable::NoContainerPort => "no container port".into(),
            Unaddressable::NoPort => format!("has no port {n}"),
            Unaddressable::Unresolved => {
                format!("agent host {:?} is not resolved", task.host.as_str())
            }
        }
    }
}

/// Task `task`'s address for app port `n`, given the app's networking and (in container
/// networking) the port's container port when it names one. Inlined into the walk over an
/// app's tasks: called for every task of every app on a full compile.
#[inline(always)]
pub(super) fn task_addr(
    cluster: &Cluster,
    networking: Networking,
    container_port: Option<u16>,
    n: usize,
    task: &Task,
) -> Result<SocketAddr, Unaddressable> {
    match networking {
        Networking::Container => {
            let ip = task
                .ip_addresses
                .first()
                .ok_or(Unaddressable::NoContainerIp)?;
            let port = container_port
                .or_else(|| task.ports.get(n).copied())
                .ok_or(Unaddressable::NoContainerPort)?;
            Ok(SocketAddr::new(*ip, port))
        }
        Networking::Host => {
            let port = *task.ports.get(n).ok_or(Unaddressable::NoPort)?;
            let ip = task
                .host
                .resolve(&cluster.agents)
                .ok_or(Unaddressable::Unresolved)?;
            Ok(SocketAddr::new(ip, port))
        }
    }
}
