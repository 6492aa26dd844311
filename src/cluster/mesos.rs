//! What the Mesos master knows beside Marathon: the masters, the agents, every framework and the
//! tasks of every framework, as the Mesos source reads them from the operator API. Marathon's
//! own tasks may appear here too; they are one task with Marathon's (by task id), see
//! [`fresher`] and [`MesosState::owned_by_marathon`].

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::{App, Host, Networking, PortSpec, Protocol, Task, TaskId, TaskState};

pub type FrameworkId = Arc<str>;
pub type AgentId = Arc<str>;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MesosState {
    /// The master that served the latest subscription (the leader; kept while reconnecting).
    pub leader: Option<Master>,
    /// The configured masters, in the configured order (`master0`, `master1`, …).
    pub masters: Vec<Master>,
    pub frameworks: BTreeMap<FrameworkId, Framework>,
    pub agents: BTreeMap<AgentId, Agent>,
    /// Live tasks of every framework (terminal ones leave).
    pub tasks: BTreeMap<TaskId, MesosTask>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framework {
    pub id: FrameworkId,
    pub name: String,
    /// Where the scheduler runs (`framework_info.hostname`).
    pub host: Host,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub id: AgentId,
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MesosTask {
    pub id: TaskId,
    /// The task's name (Mesos-DNS names it by its DiscoveryInfo name when it has one).
    pub name: String,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub state: TaskState,
    /// The latest status's timestamp, milliseconds since the epoch; 0 when not said.
    pub changed_ms: u64,
    /// The container's addresses (the latest status's `container_status.network_infos`).
    pub container_ips: Vec<IpAddr>,
    /// The container joined a named network (CNI, overlay, Docker `USER`): its ports are
    /// reached on its own address, not the agent's.
    pub container_network: bool,
    /// Host ports from the task's `ports` resources, in order.
    pub port_resources: Vec<u16>,
    pub discovery: Option<Discovery>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Discovery {
    pub name: Option<String>,
    pub ports: Vec<DiscoveryPort>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiscoveryPort {
    pub number: u16,
    pub name: Option<String>,
    pub protocol: Protocol,
    pub labels: BTreeMap<String, String>,
}

impl MesosTask {
    /// The name the task is known by: its DiscoveryInfo name, else its own.
    pub fn dns_name(&self) -> &str {
        self.discovery
            .as_ref()
            .and_then(|d| d.name.as_deref())
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.name)
    }

    /// The task as a one-task app for the VIP code: its DiscoveryInfo ports as the app's ports
    /// (with their labels), the agent's host, its container addresses.
    pub fn as_app(&self, app_id: &str, agent: Option<&Agent>) -> App {
        let ports: Vec<PortSpec> = self
            .discovery
            .iter()
            .flat_map(|d| &d.ports)
            .map(|p| PortSpec {
                service_port: 0,
                container_port: Some(p.number),
                protocol: p.protocol,
                name: p.name.clone(),
                labels: p.labels.clone(),
            })
            .collect();
        let task = Task {
            id: self.id.clone(),
            host: agent.map(|a| a.host.clone()).unwrap_or_default(),
            ports: ports.iter().filter_map(|p| p.container_port).collect(),
            ip_addresses: self.container_ips.as_slice().into(),
            state: self.state.clone(),
            healthy: None,
            ready: None,
            changed_ms: self.changed_ms,
        };
        App {
            id: app_id.into(),
            labels: BTreeMap::new(),
            ports,
            networking: if self.container_network && !self.container_ips.is_empty() {
                Networking::Container
            } else {
                Networking::Host
            },
            health_checks: 0,
            probes: Vec::new(),
            checks: Vec::new(),
            assign_service_ports: false,
            tasks: [task].into_iter().collect(),
            version_ms: self.changed_ms,
        }
    }
}

/// One change from the Mesos master.
#[derive(Debug, Clone)]
pub enum MesosUpdate {
    /// The subscription's snapshot: replaces everything the master said before.
    Snapshot {
        leader: Master,
        masters: Vec<Master>,
        frameworks: Vec<Framework>,
        agents: Vec<Agent>,
        tasks: Vec<MesosTask>,
    },
    TaskAdded(MesosTask),
    TaskUpdated {
        id: TaskId,
        state: TaskState,
        changed_ms: u64,
        /// The status's container addresses, when it carries any.
        container_ips: Vec<IpAddr>,
    },
    AgentAdded(Agent),
    AgentRemoved(AgentId),
    /// Added or updated.
    Framework(Framework),
    FrameworkRemoved(FrameworkId),
}

/// One source's view of a task's state and when it saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<'a> {
    pub state: &'a TaskState,
    pub changed_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Marathon,
    Mesos,
}

/// Which source's state of one task (seen by both) wins: the one with the newer timestamp; on a
/// tie (or when neither says when), Marathon's, which carries health and readiness; a terminal
/// state on a tie over a live one, since a task never comes back from one.
pub fn fresher(marathon: Seen<'_>, mesos: Seen<'_>) -> Side {
    use std::cmp::Ordering::*;
    match mesos.changed_ms.cmp(&marathon.changed_ms) {
        Greater => Side::Mesos,
        Less => Side::Marathon,
        Equal if marathon.state.is_live() && !mesos.state.is_live() => Side::Mesos,
        Equal => Side::Marathon,
    }
}

/// Whether Mesos's state of a task Marathon holds (`state`, seen at `changed_ms`) wins over
/// Marathon's own ([`fresher`]).
pub fn mesos_fresher(task: &super::Task, state: &TaskState, changed_ms: u64) -> bool {
    let marathon = Seen {
        state: &task.state,
        changed_ms: task.changed_ms,
    };
    fresher(marathon, Seen { state, changed_ms }) == Side::Mesos
}

impl MesosState {
    /// The ids of the tasks Marathon's apps hold that Mesos reports too: those are Marathon's to
    /// name and route, not [`MesosState::own_tasks`]. Empty without Mesos tasks (no Mesos
    /// source, or none yet): then no set of every Marathon task is built, on every zone build
    /// and compile.
    pub fn owned_by_marathon(
        &self,
        apps: &BTreeMap<super::AppId, std::sync::Arc<App>>,
    ) -> HashSet<TaskId> {
        if self.tasks.is_empty() {
            return HashSet::new();
        }
        apps.values()
            .flat_map(|a| a.tasks.keys().cloned())
            .collect()
    }

    /// Every host name the state holds (masters, agents, frameworks' schedulers), for
    /// resolving the ones that are not addresses.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.masters
            .iter()
            .map(|m| &m.host)
            .chain(self.leader.iter().map(|m| &m.host))
            .chain(self.agents.values().map(|a| &a.host))
            .chain(self.frameworks.values().map(|f| &f.host))
    }

    /// The live tasks only Mesos knows (not in any Marathon app), with their framework and
    /// agent, in task-id order.
    pub fn own_tasks<'a>(
        &'a self,
        marathon: &'a HashSet<TaskId>,
    ) -> impl Iterator<Item = (&'a MesosTask, Option<&'a Framework>, Option<&'a Agent>)> + 'a {
        self.tasks
            .values()
            .filter(move |t| !marathon.contains(&t.id))
            .map(|t| {
                (
                    t,
                    self.frameworks.get(&t.framework_id),
                    self.agents.get(&t.agent_id),
                )
            })
    }
}

/// The app-id prefix under which a Mesos task's VIP ports are listed (`mesos:{task id}`).
pub const MEMBER_PREFIX: &str = "mesos:";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{app, task};
    use crate::cluster::{Cluster, ClusterUpdate};

    fn mesos_task(id: &str, state: &str, ms: u64) -> MesosTask {
        MesosTask {
            id: id.into(),
            name: "web".into(),
            framework_id: "F-marathon".into(),
            agent_id: "S1".into(),
            state: TaskState::parse(state),
            changed_ms: ms,
            container_ips: Vec::new(),
            container_network: false,
            port_resources: vec![31000],
            discovery: None,
        }
    }

    fn snapshot(tasks: Vec<MesosTask>) -> ClusterUpdate {
        let leader = Master {
            host: "10.0.0.1".into(),
            port: 5050,
        };
        ClusterUpdate::Mesos(MesosUpdate::Snapshot {
            leader: leader.clone(),
            masters: vec![leader],
            frameworks: Vec::new(),
            agents: Vec::new(),
            tasks,
        })
    }

    /// The set of Marathon's tasks is built only when Mesos reports tasks to check against it.
    #[test]
    fn no_set_of_marathon_tasks_without_mesos_tasks() {
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![app(
            "/web",
            1,
            &[],
            vec![task("web.1", 31000)],
        )]));
        assert!(c.mesos.owned_by_marathon(&c.apps).is_empty());
        c.apply(snapshot(vec![mesos_task("other.1", "TASK_RUNNING", 50)]));
        let owned = c.mesos.owned_by_marathon(&c.apps);
        assert_eq!(owned.len(), 1);
        assert_eq!(
            c.mesos.own_tasks(&owned).count(),
            1,
            "only Mesos's own task"
        );
    }

    /// One task seen by both sources stays one task, and each side's fresher word applies.
    #[test]
    fn a_task_seen_twice_is_one_task_with_the_fresher_state() {
        let mut c = Cluster::default();
        let mut t = task("web.1", 31000);
        t.changed_ms = 100;
        c.apply(ClusterUpdate::Snapshot(vec![app("/web", 1, &[], vec![t])]));
        c.apply(snapshot(vec![mesos_task("web.1", "TASK_RUNNING", 50)]));
        let owned = c.mesos.owned_by_marathon(&c.apps);
        assert_eq!(
            c.mesos.own_tasks(&owned).count(),
            0,
            "Marathon's, not twice"
        );
        assert_eq!(c.apps["/web"].tasks.len(), 1);
        // An older terminal state from Mesos does not end it ...
        c.apply(ClusterUpdate::Mesos(MesosUpdate::TaskUpdated {
            id: "web.1".into(),
            state: TaskState::parse("TASK_KILLED"),
            changed_ms: 90,
            container_ips: Vec::new(),
        }));
        assert_eq!(c.apps["/web"].tasks.len(), 1);
        // ... a fresher one does, before Marathon says anything.
        c.apply(ClusterUpdate::Mesos(MesosUpdate::TaskUpdated {
            id: "web.1".into(),
            state: TaskState::parse("TASK_KILLED"),
            changed_ms: 200,
            container_ips: Vec::new(),
        }));
        assert!(c.apps["/web"].tasks.is_empty());
        // Marathon's older word does not undo Mesos's fresher one.
        let mut t2 = task("web.2", 31001);
        t2.changed_ms = 100;
        t2.state = TaskState::Staging;
        c.apply(snapshot(vec![mesos_task("web.2", "TASK_RUNNING", 300)]));
        c.apply(ClusterUpdate::TaskStatus {
            app_id: "/web".into(),
            task: t2,
        });
        assert_eq!(c.apps["/web"].tasks["web.2"].state, TaskState::Running);
    }

    fn seen(state: &TaskState, ms: u64) -> Seen<'_> {
        Seen {
            state,
            changed_ms: ms,
        }
    }

    #[test]
    fn the_fresher_state_wins() {
        let running = TaskState::Running;
        let killed = TaskState::parse("TASK_KILLED");
        assert_eq!(fresher(seen(&running, 10), seen(&killed, 20)), Side::Mesos);
        assert_eq!(
            fresher(seen(&killed, 30), seen(&running, 20)),
            Side::Marathon
        );
        assert_eq!(
            fresher(seen(&running, 10), seen(&running, 10)),
            Side::Marathon,
            "a tie: Marathon's, which knows health"
        );
        assert_eq!(
            fresher(seen(&running, 10), seen(&killed, 10)),
            Side::Mesos,
            "a tie between live and ended: ended"
        );
        assert_eq!(
            fresher(seen(&running, 0), seen(&running, 0)),
            Side::Marathon
        );
    }
}
