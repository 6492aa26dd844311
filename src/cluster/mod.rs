//! The source-independent model of the cluster: apps, their ports, their tasks and task health.
//!
//! Sources (Marathon, the file) translate what they read into these types and apply it through
//! [`ClusterUpdate`]; `routing::compile` reads it. Nothing here knows about labels' meaning.

mod apply;
pub mod mesos;
pub mod names;
mod small_list;
mod tasks;

pub use apply::{Applied, ClusterUpdate};
pub use small_list::SmallList;
pub use tasks::Tasks;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub type AppId = Arc<str>;
pub type TaskId = Arc<str>;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cluster {
    /// Each app behind its own pointer: a change to one app copies that app alone (the model is
    /// shared with a DNS zone build or the relay while they read it), and an app that did not
    /// change keeps its pointer, which `routing::compile::Cache` recognizes it by.
    pub apps: BTreeMap<AppId, Arc<App>>,
    /// Agent host names resolved outside `compile` (which stays pure): name → address.
    pub agents: HashMap<String, IpAddr>,
    /// The newest of the source's timestamps (milliseconds since the epoch, the source's
    /// clock) among what was applied: apps' versions, tasks' staging and start, the events
    /// that ended tasks or removed apps. It only grows; the DNS zone's SOA serial is its
    /// second (see [`Cluster::serial`]).
    pub newest_ms: u64,
    /// What the Mesos master reports (every framework's tasks, agents, masters); empty
    /// without a Mesos source.
    pub mesos: mesos::MesosState,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: AppId,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortSpec>,
    pub networking: Networking,
    /// Number of Marathon health checks the app defines; with any, tasks need all results alive.
    pub health_checks: usize,
    /// The Marathon checks switchyard can run itself (see `health_check`).
    pub probes: Vec<Probe>,
    /// Every Marathon check as marathon-lb reads it to choose a port's mode, in the app's order.
    pub checks: Vec<CheckSpec>,
    /// IP-per-task without service ports: `compile` assigns them from the configured range
    /// (marathon-lb's `--min-serv-port-ip-per-task`), see `routing::ip_per_task`.
    pub assign_service_ports: bool,
    pub tasks: Tasks,
    /// When the definition last changed (Marathon's `version`: config changes and scaling),
    /// milliseconds since the epoch; 0 when the source does not say.
    pub version_ms: u64,
}

/// One way of checking a backend: an app's health check as the model holds it, whatever
/// source it came from (Marathon's `healthChecks`, the configured default).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Probe {
    pub kind: ProbeKind,
    /// The app port it checks (Marathon's `portIndex`).
    pub port_index: usize,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_failures: u32,
    /// Failures in this long after a backend appears do not count (Marathon's grace period).
    pub grace: Duration,
    /// Probe this address rather than the backend's own: the task's port named by
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`. Set per backend when targets are sent.
    pub target: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// A connect succeeds.
    Tcp,
    /// `GET path` answers 2xx or 3xx (Marathon's rule). Shared: every backend's probe target
    /// carries it, and the targets are rebuilt on swaps.
    Http { path: Arc<str> },
}

/// One of the app's Marathon `healthChecks`, the fields marathon-lb's `get_health_check` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// `HTTP`, `HTTPS`, `TCP`, `MESOS_HTTP`, `MESOS_TCP`, `COMMAND`, … as Marathon spells it.
    pub protocol: String,
    /// `portIndex` (Marathon's default: 0).
    pub port_index: usize,
    /// The check names a port number (`port`) rather than an index.
    pub has_port: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSpec {
    /// The service port (0: none assigned).
    pub service_port: u16,
    /// The port inside the container, used under container networking.
    pub container_port: Option<u16>,
    pub protocol: Protocol,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    TcpUdp,
}

/// How a task's backends are addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Networking {
    /// Host or bridge networking: the agent's address and the task's (host) `ports[n]`.
    #[default]
    Host,
    /// Container networking: the task's own IP and the container port.
    Container,
}

/// The agent a task runs on, as Marathon names it, with the address parsed once when the name
/// is one: `compile` and the DNS zone read it for every task on every swap. Shared: a snapshot's
/// tasks on one agent hold one `Host` ([`HostNames::intern`]), a pointer each rather than a copy
/// of the name (a few hundred agents under tens of thousands of tasks).
#[derive(Debug, Clone, Default)]
pub struct Host(Arc<HostName>);

#[derive(Debug, Default, PartialEq, Eq)]
struct HostName {
    name: Box<str>,
    ip: Option<IpAddr>,
}

impl Host {
    pub fn as_str(&self) -> &str {
        &self.0.name
    }

    /// The address, when the name is an IP address.
    pub fn ip(&self) -> Option<IpAddr> {
        self.0.ip
    }

    /// The address: the name's own, or what the agent name was resolved to.
    #[inline]
    pub fn resolve(&self, agents: &HashMap<String, IpAddr>) -> Option<IpAddr> {
        self.0.ip.or_else(|| agents.get(self.as_str()).copied())
    }
    /// The same shared name, not an equal copy.
    #[cfg(test)]
    pub fn shares(&self, other: &Host) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Equal names are equal hosts, shared or not.
impl PartialEq for Host {
    fn eq(&self, other: &Host) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Host {}

impl From<String> for Host {
    fn from(name: String) -> Host {
        Host::from(name.as_str())
    }
}

impl From<&str> for Host {
    fn from(name: &str) -> Host {
        Host(Arc::new(HostName {
            ip: name.parse().ok(),
            name: name.into(),
        }))
    }
}

impl std::ops::Deref for Host {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hosts met while reading one document (a snapshot): each name once, handed out shared.
#[derive(Debug, Default)]
pub struct HostNames(HashMap<Box<str>, Host>);

impl HostNames {
    pub fn intern(&mut self, name: &str) -> Host {
        if let Some(host) = self.0.get(name) {
            return host.clone();
        }
        let host = Host::from(name);
        self.0.insert(name.into(), host.clone());
        host
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: TaskId,
    pub host: Host,
    /// Host ports (nearly always one or two: inline).
    pub ports: SmallList<u16, 4>,
    /// Container addresses (nearly always none or one: inline).
    pub ip_addresses: SmallList<IpAddr, 1>,
    pub state: TaskState,
    /// Aggregated health: `None` until Marathon reports a result.
    pub healthy: Option<bool>,
    /// Readiness during a deployment: `Some(false)` while a readiness check has not passed.
    pub ready: Option<bool>,
    /// When the task last changed as the source reports it (Marathon's `stagedAt`/`startedAt`,
    /// or a status event's `timestamp`), milliseconds since the epoch; 0 when not said.
    pub changed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Killing,
    /// Any terminal or unknown state (`TASK_FINISHED`, `TASK_FAILED`, `TASK_LOST`, …).
    Other(String),
}

impl TaskState {
    pub fn parse(state: &str) -> TaskState {
        match state {
            "TASK_STAGING" => TaskState::Staging,
            "TASK_STARTING" => TaskState::Starting,
            "TASK_RUNNING" => TaskState::Running,
            "TASK_KILLING" => TaskState::Killing,
            other => TaskState::Other(other.to_string()),
        }
    }

    /// States in which a task still exists and may become routable.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            TaskState::Staging | TaskState::Starting | TaskState::Running
        )
    }
}

impl Task {
    /// Whether the task may receive traffic: running, and healthy when the app checks health.
    /// Why the task gets no traffic, or `None` when it is routable.
    pub fn held_back(&self, health_checks: usize) -> Option<&'static str> {
        match self.state {
            TaskState::Running => {}
            TaskState::Staging => return Some("staging"),
            TaskState::Starting => return Some("starting"),
            TaskState::Killing => return Some("killing"),
            TaskState::Other(_) => return Some("not running"),
        }
        if health_checks > 0 {
            match self.healthy {
                None => return Some("no health result yet"),
                Some(false) => return Some("unhealthy"),
                Some(true) => {}
            }
        }
        (self.ready == Some(false)).then_some("not ready")
    }

    pub fn is_routable(&self, health_checks: usize) -> bool {
        self.state == TaskState::Running
            && (health_checks == 0 || self.healthy == Some(true))
            && self.ready != Some(false)
    }
}

impl Cluster {
    /// The DNS zones' SOA serial (RFC 1982): the second of [`Cluster::newest_ms`], so it only
    /// grows (a change never gives a smaller one) and the same state read from the same
    /// Marathon gives the same serial on every instance; it wraps in 2106, as serial arithmetic
    /// allows.
    pub fn serial(&self) -> u32 {
        (self.newest_ms / 1000) as u32
    }

    pub fn task_count(&self) -> usize {
        self.apps.values().map(|a| a.tasks.len()).sum()
    }
}

/// The instance id a task belongs to. Marathon ≥ 1.5 names tasks `{app}.instance-{uuid}._app.{n}`
/// and their instance `{app}.marathon-{uuid}`; older task ids are their own instance id.
pub fn instance_of(task_id: &str) -> String {
    match task_id.split_once(".instance-") {
        Some((app, rest)) => {
            let uuid = rest.split_once('.').map_or(rest, |(uuid, _)| uuid);
            format!("{app}.marathon-{uuid}")
        }
        None => task_id.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn task(id: &str, port: u16) -> Task {
        Task {
            id: id.into(),
            host: "127.0.0.1".into(),
            ports: vec![port].into(),
            ip_addresses: Default::default(),
            state: TaskState::Running,
            healthy: None,
            ready: None,
            changed_ms: 0,
        }
    }

    pub fn app(id: &str, service_port: u16, labels: &[(&str, &str)], tasks: Vec<Task>) -> App {
        App {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: vec![PortSpec {
                service_port,
                ..PortSpec::default()
            }],
            networking: Networking::Host,
            health_checks: 0,
            probes: Vec::new(),
            checks: Vec::new(),
            assign_service_ports: false,
            tasks: tasks.into_iter().collect(),
            version_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn eligibility() {
        let mut t = task("a.1", 1);
        assert!(t.is_routable(0));
        assert!(!t.is_routable(1), "health checks but no result yet");
        t.healthy = Some(false);
        assert!(!t.is_routable(1));
        t.healthy = Some(true);
        assert!(t.is_routable(1));
        t.state = TaskState::Killing;
        assert!(!t.is_routable(0));
        t.state = TaskState::Staging;
        assert!(!t.is_routable(0));
        t.state = TaskState::Running;
        t.ready = Some(false);
        assert!(!t.is_routable(0), "a readiness check that has not passed");
        t.ready = Some(true);
        assert!(t.is_routable(0));
    }

    #[test]
    fn killing_and_terminal_tasks_leave_the_model() {
        let mut c = Cluster::default();
        c.apply(ClusterUpdate::Snapshot(vec![app(
            "/a",
            1,
            &[],
            vec![task("a.1", 10)],
        )]));
        let mut killing = task("a.1", 10);
        killing.state = TaskState::Killing;
        c.apply(ClusterUpdate::TaskStatus {
            app_id: "/a".into(),
            task: killing,
        });
        // Killing tasks stay out of routing; the task itself is dropped from the model.
        assert!(c.apps["/a"].tasks.is_empty());
        let unknown = c.apply(ClusterUpdate::TaskStatus {
            app_id: "/b".into(),
            task: task("b.1", 1),
        });
        assert_eq!(unknown, Applied::Refetch("/b".into()));
    }

    #[test]
    fn last_known_health_survives_a_snapshot_without_results() {
        let mut c = Cluster::default();
        let mut healthy = task("a.1", 10);
        healthy.healthy = Some(true);
        let mut a = app("/a", 1, &[], vec![healthy]);
        a.health_checks = 1;
        c.apply(ClusterUpdate::Snapshot(vec![a.clone()]));
        a.tasks.get_mut("a.1").unwrap().healthy = None;
        c.apply(ClusterUpdate::Snapshot(vec![a]));
        assert_eq!(c.apps["/a"].tasks["a.1"].healthy, Some(true));
    }

    #[test]
    fn instance_ids() {
        assert_eq!(
            instance_of("web.instance-6f2a5c1e-1a2b-11e8-8e0a-0242ac110002._app.1"),
            "web.marathon-6f2a5c1e-1a2b-11e8-8e0a-0242ac110002"
        );
        assert_eq!(instance_of("web.6f2a5c1e"), "web.6f2a5c1e");
    }
}
