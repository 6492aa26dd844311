//! The Mesos operator API's event stream (v1, JSON) as `cluster` updates: the `SUBSCRIBED`
//! snapshot (`get_state`: tasks, frameworks, agents; `heartbeat_interval_seconds`) and the
//! events after it. Field names are master.proto's, as the master's JSON spells them; a task,
//! agent or framework that does not parse is rejected alone (listed by id), the rest applies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::cluster::mesos::{
    Agent, Discovery, DiscoveryPort, Framework, Master, MesosTask, MesosUpdate,
};
use crate::cluster::{Protocol, TaskState};

/// The event kinds the source counts (`switchyard_events_total{kind}`).
pub const EVENTS: &[&str] = &[
    "SUBSCRIBED",
    "TASK_ADDED",
    "TASK_UPDATED",
    "AGENT_ADDED",
    "AGENT_REMOVED",
    "FRAMEWORK_ADDED",
    "FRAMEWORK_UPDATED",
    "FRAMEWORK_REMOVED",
    "HEARTBEAT",
];

/// One parsed record.
#[derive(Debug)]
pub enum Event {
    Subscribed(Box<Snapshot>),
    Update(MesosUpdate),
    Heartbeat,
    /// A kind switchyard does not use (`UNKNOWN`, `OPERATION_UPDATED`, …).
    Ignored,
}

/// The `SUBSCRIBED` event's state, before the source adds the masters it knows.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub frameworks: Vec<Framework>,
    pub agents: Vec<Agent>,
    pub tasks: Vec<MesosTask>,
    pub heartbeat_interval: Option<std::time::Duration>,
    /// What did not parse: (id or position, reason).
    pub rejected: Vec<(String, String)>,
}

impl Snapshot {
    pub fn into_update(self, leader: Master, masters: Vec<Master>) -> MesosUpdate {
        MesosUpdate::Snapshot {
            leader,
            masters,
            frameworks: self.frameworks,
            agents: self.agents,
            tasks: self.tasks,
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(borrow, default)]
    subscribed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    task_added: Option<&'a RawValue>,
    #[serde(borrow, default)]
    task_updated: Option<&'a RawValue>,
    #[serde(borrow, default)]
    agent_added: Option<&'a RawValue>,
    #[serde(borrow, default)]
    agent_removed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    framework_added: Option<&'a RawValue>,
    #[serde(borrow, default)]
    framework_updated: Option<&'a RawValue>,
    #[serde(borrow, default)]
    framework_removed: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Value {
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubscribedJson<'a> {
    #[serde(borrow)]
    get_state: StateJson<'a>,
    heartbeat_interval_seconds: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StateJson<'a> {
    #[serde(borrow)]
    get_tasks: ListJson<'a>,
    #[serde(borrow)]
    get_frameworks: ListJson<'a>,
    #[serde(borrow)]
    get_agents: ListJson<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListJson<'a> {
    #[serde(borrow)]
    tasks: Vec<&'a RawValue>,
    #[serde(borrow)]
    frameworks: Vec<&'a RawValue>,
    #[serde(borrow)]
    agents: Vec<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TaskJson {
    name: String,
    task_id: Value,
    framework_id: Value,
    agent_id: Value,
    state: String,
    resources: Vec<ResourceJson>,
    statuses: Vec<StatusJson>,
    discovery: Option<DiscoveryJson>,
    container: Option<ContainerJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResourceJson {
    name: String,
    ranges: Option<RangesJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RangesJson {
    range: Vec<RangeJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RangeJson {
    begin: u64,
    end: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StatusJson {
    task_id: Value,
    state: String,
    timestamp: f64,
    container_status: Option<ContainerStatusJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContainerStatusJson {
    network_infos: Vec<NetworkInfoJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NetworkInfoJson {
    name: Option<String>,
    ip_addresses: Vec<IpAddressJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IpAddressJson {
    ip_address: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContainerJson {
    network_infos: Vec<NetworkInfoJson>,
    docker: Option<DockerJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DockerJson {
    network: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DiscoveryJson {
    name: Option<String>,
    ports: Option<PortsJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PortsJson {
    ports: Vec<PortJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PortJson {
    number: u32,
    name: Option<String>,
    protocol: Option<String>,
    labels: Option<LabelsJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LabelsJson {
    labels: Vec<LabelJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LabelJson {
    key: String,
    value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AgentJson {
    agent_info: AgentInfoJson,
    pid: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AgentInfoJson {
    hostname: String,
    port: Option<u32>,
    id: Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FrameworkJson {
    framework_info: FrameworkInfoJson,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FrameworkInfoJson {
    id: Value,
    name: String,
    hostname: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TaskAddedJson {
    task: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TaskUpdatedJson {
    state: String,
    status: StatusJson,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AgentAddedJson {
    agent: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AgentRemovedJson {
    agent_id: Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FrameworkEventJson {
    framework: Option<Box<RawValue>>,
    framework_info: Option<FrameworkInfoJson>,
}

/// Parses one record of the event stream. `Err` is the reason the whole record is refused.
pub fn parse_event(bytes: &[u8]) -> Result<(String, Event), String> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| format!("not an event: {e}"))?;
    let kind = envelope.kind;
    let missing = |field: &str| format!("{kind} without `{field}`");
    let event = match kind.as_str() {
        "SUBSCRIBED" => {
            let raw = envelope.subscribed.ok_or_else(|| missing("subscribed"))?;
            Event::Subscribed(Box::new(parse_subscribed(raw.get())?))
        }
        "HEARTBEAT" => Event::Heartbeat,
        "TASK_ADDED" => {
            let raw = envelope.task_added.ok_or_else(|| missing("task_added"))?;
            let added: TaskAddedJson = from_str(raw.get())?;
            let task = added.task.ok_or_else(|| missing("task_added.task"))?;
            Event::Update(MesosUpdate::TaskAdded(parse_task(task.get())?))
        }
        "TASK_UPDATED" => {
            let raw = envelope
                .task_updated
                .ok_or_else(|| missing("task_updated"))?;
            let updated: TaskUpdatedJson = from_str(raw.get())?;
            let id = updated.status.task_id.value;
            if id.is_empty() {
                return Err(missing("task_updated.status.task_id"));
            }
            let state = if updated.state.is_empty() {
                updated.status.state
            } else {
                updated.state
            };
            if state.is_empty() {
                return Err(missing("task_updated.state"));
            }
            Event::Update(MesosUpdate::TaskUpdated {
                id: id.into(),
                state: TaskState::parse(&state),
                changed_ms: seconds_to_ms(updated.status.timestamp),
                container_ips: status_ips(updated.status.container_status.as_ref()),
            })
        }
        "AGENT_ADDED" => {
            let raw = envelope.agent_added.ok_or_else(|| missing("agent_added"))?;
            let added: AgentAddedJson = from_str(raw.get())?;
            let agent = added.agent.ok_or_else(|| missing("agent_added.agent"))?;
            Event::Update(MesosUpdate::AgentAdded(parse_agent(agent.get())?))
        }
        "AGENT_REMOVED" => {
            let raw = envelope
                .agent_removed
                .ok_or_else(|| missing("agent_removed"))?;
            let removed: AgentRemovedJson = from_str(raw.get())?;
            if removed.agent_id.value.is_empty() {
                return Err(missing("agent_removed.agent_id"));
            }
            Event::Update(MesosUpdate::AgentRemoved(removed.agent_id.value.into()))
        }
        "FRAMEWORK_ADDED" | "FRAMEWORK_UPDATED" => {
            let raw = envelope
                .framework_added
                .or(envelope.framework_updated)
                .ok_or_else(|| missing("framework"))?;
            let event: FrameworkEventJson = from_str(raw.get())?;
            let framework = event.framework.ok_or_else(|| missing("framework"))?;
            Event::Update(MesosUpdate::Framework(parse_framework(framework.get())?))
        }
        "FRAMEWORK_REMOVED" => {
            let raw = envelope
                .framework_removed
                .ok_or_else(|| missing("framework_removed"))?;
            let event: FrameworkEventJson = from_str(raw.get())?;
            let info = event
                .framework_info
                .ok_or_else(|| missing("framework_removed.framework_info"))?;
            if info.id.value.is_empty() {
                return Err(missing("framework_info.id"));
            }
            Event::Update(MesosUpdate::FrameworkRemoved(info.id.value.into()))
        }
        "" => return Err("an event without `type`".into()),
        _ => Event::Ignored,
    };
    Ok((kind, event))
}

fn from_str<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

fn parse_subscribed(text: &str) -> Result<Snapshot, String> {
    let subscribed: SubscribedJson = from_str(text)?;
    let state = subscribed.get_state;
    let mut snapshot = Snapshot {
        heartbeat_interval: subscribed
            .heartbeat_interval_seconds
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
            .map(std::time::Duration::from_secs_f64),
        ..Snapshot::default()
    };
    for (i, raw) in state.get_tasks.tasks.iter().enumerate() {
        match parse_task(raw.get()) {
            Ok(task) => snapshot.tasks.push(task),
            Err(e) => snapshot.rejected.push((format!("task #{i}"), e)),
        }
    }
    for (i, raw) in state.get_agents.agents.iter().enumerate() {
        match parse_agent(raw.get()) {
            Ok(agent) => snapshot.agents.push(agent),
            Err(e) => snapshot.rejected.push((format!("agent #{i}"), e)),
        }
    }
    for (i, raw) in state.get_frameworks.frameworks.iter().enumerate() {
        match parse_framework(raw.get()) {
            Ok(framework) => snapshot.frameworks.push(framework),
            Err(e) => snapshot.rejected.push((format!("framework #{i}"), e)),
        }
    }
    Ok(snapshot)
}

fn seconds_to_ms(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0) as u64
    } else {
        0
    }
}

fn ips(infos: &[NetworkInfoJson]) -> Vec<IpAddr> {
    infos
        .iter()
        .flat_map(|n| &n.ip_addresses)
        .filter_map(|a| a.ip_address.parse().ok())
        .collect()
}

fn status_ips(status: Option<&ContainerStatusJson>) -> Vec<IpAddr> {
    status.map(|s| ips(&s.network_infos)).unwrap_or_default()
}

/// One `Task` of master.proto.
pub fn parse_task(text: &str) -> Result<MesosTask, String> {
    let t: TaskJson = from_str(text)?;
    if t.task_id.value.is_empty() {
        return Err("a task without `task_id`".into());
    }
    let id = t.task_id.value;
    let why = |reason: &str| format!("task {id}: {reason}");
    if t.framework_id.value.is_empty() {
        return Err(why("no `framework_id`"));
    }
    let latest = t.statuses.last();
    let state = if !t.state.is_empty() {
        t.state.clone()
    } else {
        latest.map(|s| s.state.clone()).unwrap_or_default()
    };
    if state.is_empty() {
        return Err(why("no `state`"));
    }
    let changed_ms = t
        .statuses
        .iter()
        .map(|s| seconds_to_ms(s.timestamp))
        .max()
        .unwrap_or(0);
    let mut container_ips = status_ips(latest.and_then(|s| s.container_status.as_ref()));
    let container = t.container.unwrap_or_default();
    if container_ips.is_empty() {
        container_ips = ips(&container.network_infos);
    }
    let container_network = container.network_infos.iter().any(|n| n.name.is_some())
        || container
            .docker
            .as_ref()
            .is_some_and(|d| d.network == "USER");
    let mut port_resources = Vec::new();
    for r in t.resources.iter().filter(|r| r.name == "ports") {
        for range in r.ranges.iter().flat_map(|r| &r.range) {
            if range.end < range.begin || range.end > u16::MAX as u64 {
                return Err(why("a `ports` range out of bounds"));
            }
            // A task holds a handful of ports; a wide range is refused, not expanded.
            if range.end - range.begin >= 1024 || port_resources.len() > 1024 {
                return Err(why("more than 1024 ports"));
            }
            port_resources.extend((range.begin..=range.end).map(|p| p as u16));
        }
    }
    let discovery = match t.discovery {
        None => None,
        Some(d) => {
            let mut ports = Vec::new();
            for p in d.ports.map(|p| p.ports).unwrap_or_default() {
                let number = u16::try_from(p.number)
                    .ok()
                    .filter(|&n| n != 0)
                    .ok_or_else(|| why(&format!("discovery port {} out of range", p.number)))?;
                let protocol = match p.protocol.as_deref().map(str::to_ascii_lowercase) {
                    None => Protocol::Tcp,
                    Some(p) if p == "tcp" => Protocol::Tcp,
                    Some(p) if p == "udp" => Protocol::Udp,
                    Some(p) if p == "udp,tcp" || p == "tcp,udp" => Protocol::TcpUdp,
                    Some(other) => return Err(why(&format!("discovery protocol {other:?}"))),
                };
                let labels: BTreeMap<String, String> = p
                    .labels
                    .map(|l| l.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|l| (l.key, l.value.unwrap_or_default()))
                    .collect();
                ports.push(DiscoveryPort {
                    number,
                    name: p.name.filter(|n| !n.is_empty()),
                    protocol,
                    labels,
                });
            }
            Some(Discovery {
                name: d.name.filter(|n| !n.is_empty()),
                ports,
            })
        }
    };
    Ok(MesosTask {
        id: id.as_str().into(),
        name: t.name,
        framework_id: t.framework_id.value.into(),
        agent_id: t.agent_id.value.into(),
        state: TaskState::parse(&state),
        changed_ms,
        container_ips,
        container_network,
        port_resources,
        discovery,
    })
}

/// One `Agent` of master.proto's `GetAgents`. Its address is the one in its `pid`
/// (`slave(1)@10.0.0.1:5051`) when it has one, as Mesos-DNS takes it, else its host name.
pub fn parse_agent(text: &str) -> Result<Agent, String> {
    let a: AgentJson = from_str(text)?;
    if a.agent_info.id.value.is_empty() {
        return Err("an agent without `agent_info.id`".into());
    }
    let from_pid = a
        .pid
        .as_deref()
        .and_then(|pid| pid.rsplit_once('@'))
        .and_then(|(_, addr)| addr.parse::<std::net::SocketAddr>().ok());
    let (host, port) = match from_pid {
        Some(addr) => (addr.ip().to_string(), addr.port()),
        None => (
            a.agent_info.hostname,
            a.agent_info
                .port
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(5051),
        ),
    };
    if host.is_empty() {
        return Err(format!("agent {}: no host", a.agent_info.id.value));
    }
    Ok(Agent {
        id: a.agent_info.id.value.into(),
        host: host.into(),
        port,
    })
}

/// One `Framework` of master.proto's `GetFrameworks`.
pub fn parse_framework(text: &str) -> Result<Framework, String> {
    let f: FrameworkJson = from_str(text)?;
    let info = f.framework_info;
    if info.id.value.is_empty() {
        return Err("a framework without `framework_info.id`".into());
    }
    if info.name.is_empty() {
        return Err(format!("framework {}: no name", info.id.value));
    }
    Ok(Framework {
        id: info.id.value.into(),
        name: info.name,
        host: info.hostname.unwrap_or_default().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task_json() -> serde_json::Value {
        json!({
            "name": "broker-0",
            "task_id": {"value": "broker-0__abc"},
            "framework_id": {"value": "F-kafka"},
            "agent_id": {"value": "S1"},
            "state": "TASK_RUNNING",
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}}
            ],
            "statuses": [{
                "task_id": {"value": "broker-0__abc"}, "state": "TASK_RUNNING", "timestamp": 1700000000.5,
                "container_status": {"network_infos": [{"name": "dcos", "ip_addresses": [{"protocol": "IPv4", "ip_address": "9.0.0.7"}]}]}
            }],
            "discovery": {"visibility": "FRAMEWORK", "name": "broker", "ports": {"ports": [
                {"number": 9092, "name": "broker", "protocol": "tcp", "labels": {"labels": [{"key": "VIP_0", "value": "/kafka:9092"}]}}
            ]}},
            "container": {"type": "MESOS", "network_infos": [{"name": "dcos"}]}
        })
    }

    #[test]
    fn a_subscribed_snapshot() {
        let mut bad = task_json();
        bad["task_id"] = json!(5);
        let event = json!({"type": "SUBSCRIBED", "subscribed": {
            "get_state": {
                "get_tasks": {"tasks": [task_json(), bad], "completed_tasks": []},
                "get_frameworks": {"frameworks": [{"framework_info": {"id": {"value": "F-kafka"}, "name": "kafka", "hostname": "10.0.0.9", "user": "root"}, "active": true}]},
                "get_agents": {"agents": [{"agent_info": {"hostname": "agent1", "port": 5051, "id": {"value": "S1"}}, "pid": "slave(1)@10.0.0.1:5051"}]}
            },
            "heartbeat_interval_seconds": 15.0
        }});
        let (kind, Event::Subscribed(s)) = parse_event(event.to_string().as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(kind, "SUBSCRIBED");
        assert_eq!(
            s.heartbeat_interval,
            Some(std::time::Duration::from_secs(15))
        );
        assert_eq!(s.tasks.len(), 1);
        assert_eq!(s.rejected.len(), 1, "{:?}", s.rejected);
        let t = &s.tasks[0];
        assert_eq!(t.dns_name(), "broker");
        assert_eq!(t.port_resources, vec![31000, 31001]);
        assert_eq!(t.container_ips, vec!["9.0.0.7".parse::<IpAddr>().unwrap()]);
        assert!(t.container_network);
        assert_eq!(t.changed_ms, 1_700_000_000_500);
        let d = t.discovery.as_ref().unwrap();
        assert_eq!(d.ports[0].labels["VIP_0"], "/kafka:9092");
        assert_eq!(s.agents[0].host.as_str(), "10.0.0.1");
        assert_eq!(s.frameworks[0].name, "kafka");
    }

    #[test]
    fn events() {
        let updated = json!({"type": "TASK_UPDATED", "task_updated": {
            "framework_id": {"value": "F"}, "state": "TASK_KILLED",
            "status": {"task_id": {"value": "t1"}, "state": "TASK_KILLED", "timestamp": 2.0}
        }});
        let (_, e) = parse_event(updated.to_string().as_bytes()).unwrap();
        assert!(
            matches!(e, Event::Update(MesosUpdate::TaskUpdated { ref id, changed_ms: 2000, .. }) if &**id == "t1")
        );
        let removed =
            json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": "S1"}}});
        assert!(matches!(
            parse_event(removed.to_string().as_bytes()).unwrap().1,
            Event::Update(MesosUpdate::AgentRemoved(_))
        ));
        let fw = json!({"type": "FRAMEWORK_REMOVED", "framework_removed": {"framework_info": {"id": {"value": "F"}, "name": "x"}}});
        assert!(matches!(
            parse_event(fw.to_string().as_bytes()).unwrap().1,
            Event::Update(MesosUpdate::FrameworkRemoved(_))
        ));
        assert!(matches!(
            parse_event(br#"{"type":"HEARTBEAT"}"#).unwrap().1,
            Event::Heartbeat
        ));
        assert!(matches!(
            parse_event(br#"{"type":"OPERATION_UPDATED"}"#).unwrap().1,
            Event::Ignored
        ));
        assert!(parse_event(b"{").is_err());
        assert!(parse_event(br#"{"type":"TASK_ADDED"}"#).is_err());
        assert!(parse_event(br#"{}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_records_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse_event(&bytes);
        }
    }
}
