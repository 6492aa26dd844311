//! A Mesos master stand-in: the operator API's `SUBSCRIBE` call (`POST /api/v1`) answered with a
//! RecordIO-framed JSON stream in master.proto's shapes: the `SUBSCRIBED` snapshot (tasks,
//! frameworks, agents, the heartbeat interval), then the events the test sends, and heartbeats
//! while they are on. Its awkward parts on demand: a non-leader's 307 with a protocol-relative
//! Location, raw bytes (garbage records, an oversized one), dropped streams, silence.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Default)]
struct State {
    frameworks: Vec<Value>,
    agents: Vec<Value>,
    tasks: Vec<Value>,
    /// When set, this master is not the leader: 307 to this address.
    leader: Option<SocketAddr>,
    streams: Vec<mpsc::UnboundedSender<Option<Vec<u8>>>>,
    subscriptions: usize,
    heartbeats: bool,
    /// Records held back from the snapshot (snapshot larger than it says, for example): sent
    /// raw after the SUBSCRIBED record.
    requests: Vec<(String, Option<String>)>,
}

#[derive(Clone)]
pub struct Master {
    pub addr: SocketAddr,
    pub heartbeat_interval: Duration,
    state: Arc<Mutex<State>>,
}

/// One RecordIO record.
pub fn record(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Master {
    /// A master that announces `heartbeat_interval` and sends heartbeats at it.
    pub async fn start(heartbeat_interval: Duration) -> Master {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let master = Master {
            addr: listener.local_addr().unwrap(),
            heartbeat_interval,
            state: Arc::new(Mutex::new(State {
                heartbeats: true,
                ..State::default()
            })),
        };
        let state = master.state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, state.clone(), heartbeat_interval));
            }
        });
        let beat = master.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(heartbeat_interval).await;
                if beat.state.lock().unwrap().heartbeats {
                    beat.send(json!({"type": "HEARTBEAT"}));
                }
            }
        });
        master
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Makes this master a non-leader that redirects to `leader`.
    pub fn redirect_to(&self, leader: &Master) {
        self.state.lock().unwrap().leader = Some(leader.addr);
    }

    pub fn set_state(&self, frameworks: Vec<Value>, agents: Vec<Value>, tasks: Vec<Value>) {
        let mut s = self.state.lock().unwrap();
        s.frameworks = frameworks;
        s.agents = agents;
        s.tasks = tasks;
    }

    pub fn heartbeats(&self, on: bool) {
        self.state.lock().unwrap().heartbeats = on;
    }

    pub fn subscriptions(&self) -> usize {
        self.state.lock().unwrap().subscriptions
    }

    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn open_streams(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        state.streams.retain(|s| !s.is_closed());
        state.streams.len()
    }

    /// Writes bytes as they are to every open stream.
    pub fn send_raw(&self, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap();
        state
            .streams
            .retain(|s| s.send(Some(bytes.to_vec())).is_ok());
    }

    /// Sends one event as a record.
    pub fn send(&self, event: Value) {
        self.send_raw(&record(event.to_string().as_bytes()));
    }

    /// A task launched: kept for later snapshots and sent as TASK_ADDED.
    pub fn add_task(&self, task: Value) {
        self.state.lock().unwrap().tasks.push(task.clone());
        self.send(json!({"type": "TASK_ADDED", "task_added": {"task": task}}));
    }

    /// A task's state changed at `timestamp` (seconds): TASK_UPDATED; a terminal state drops
    /// it from later snapshots.
    pub fn update_task(&self, id: &str, state: &str, timestamp: f64) {
        let framework_id = {
            let mut s = self.state.lock().unwrap();
            let framework_id = s
                .tasks
                .iter()
                .find(|t| t["task_id"]["value"] == id)
                .map(|t| t["framework_id"].clone())
                .unwrap_or(json!({"value": "unknown"}));
            for t in s.tasks.iter_mut().filter(|t| t["task_id"]["value"] == id) {
                t["state"] = json!(state);
                t["statuses"] =
                    json!([{"task_id": {"value": id}, "state": state, "timestamp": timestamp}]);
            }
            if !matches!(state, "TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING") {
                s.tasks.retain(|t| t["task_id"]["value"] != id);
            }
            framework_id
        };
        self.send(json!({"type": "TASK_UPDATED", "task_updated": {
            "framework_id": framework_id,
            "state": state,
            "status": {"task_id": {"value": id}, "state": state, "timestamp": timestamp}
        }}));
    }

    pub fn add_agent(&self, agent: Value) {
        self.state.lock().unwrap().agents.push(agent.clone());
        self.send(json!({"type": "AGENT_ADDED", "agent_added": {"agent": agent}}));
    }

    pub fn remove_agent(&self, id: &str) {
        self.state
            .lock()
            .unwrap()
            .agents
            .retain(|a| a["agent_info"]["id"]["value"] != id);
        self.send(json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": id}}}));
    }

    pub fn add_framework(&self, framework: Value) {
        self.state
            .lock()
            .unwrap()
            .frameworks
            .push(framework.clone());
        self.send(json!({"type": "FRAMEWORK_ADDED", "framework_added": {"framework": framework}}));
    }

    pub fn remove_framework(&self, id: &str) {
        let info = {
            let mut s = self.state.lock().unwrap();
            let info = s
                .frameworks
                .iter()
                .find(|f| f["framework_info"]["id"]["value"] == id)
                .map(|f| f["framework_info"].clone())
                .unwrap_or(json!({"id": {"value": id}, "name": "gone"}));
            s.frameworks
                .retain(|f| f["framework_info"]["id"]["value"] != id);
            s.tasks.retain(|t| t["framework_id"]["value"] != id);
            info
        };
        self.send(
            json!({"type": "FRAMEWORK_REMOVED", "framework_removed": {"framework_info": info}}),
        );
    }

    /// Closes every open stream, as a master that fails over does.
    pub fn drop_streams(&self) {
        let mut state = self.state.lock().unwrap();
        for s in state.streams.drain(..) {
            let _ = s.send(None);
        }
    }

    fn snapshot(&self) -> Value {
        snapshot_of(&self.state.lock().unwrap(), self.heartbeat_interval)
    }
}

fn snapshot_of(s: &State, heartbeat: Duration) -> Value {
    json!({"type": "SUBSCRIBED", "subscribed": {
        "get_state": {
            "get_tasks": {"tasks": s.tasks, "completed_tasks": []},
            "get_executors": {"executors": []},
            "get_frameworks": {"frameworks": s.frameworks, "completed_frameworks": []},
            "get_agents": {"agents": s.agents, "recovered_agents": []}
        },
        "heartbeat_interval_seconds": heartbeat.as_secs_f64()
    }})
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>, heartbeat: Duration) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let request_line = head.split("\r\n").next().unwrap_or("").to_string();
    let length: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let leader = {
        let mut s = state.lock().unwrap();
        s.requests
            .push((request_line.clone(), header("authorization")));
        s.leader
    };
    if let Some(leader) = leader {
        let reply = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: //{leader}/api/v1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        return;
    }
    let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !request_line.starts_with("POST /api/v1 ") || call["type"] != "SUBSCRIBE" {
        let reply = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = stream.write_all(reply.as_bytes()).await;
        return;
    }
    if !header("accept")
        .unwrap_or_default()
        .contains("application/json")
    {
        let reply = "HTTP/1.1 406 Not Acceptable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = stream.write_all(reply.as_bytes()).await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = {
        let mut s = state.lock().unwrap();
        s.subscriptions += 1;
        s.streams.push(tx);
        record(snapshot_of(&s, heartbeat).to_string().as_bytes())
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/recordio\r\nMessage-Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut pending = Some(first);
    loop {
        let bytes = match pending.take() {
            Some(b) => b,
            None => match rx.recv().await {
                Some(Some(b)) => b,
                _ => return, // dropped: no terminating chunk, as a failing master
            },
        };
        let chunk = [
            format!("{:x}\r\n", bytes.len()).into_bytes(),
            bytes,
            b"\r\n".to_vec(),
        ]
        .concat();
        if stream.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

/// A framework in `GetFrameworks`' shape.
pub fn framework(id: &str, name: &str, host: &str) -> Value {
    json!({
        "framework_info": {"id": {"value": id}, "name": name, "hostname": host, "user": "root"},
        "active": true, "connected": true, "recovered": false
    })
}

/// An agent in `GetAgents`' shape, at `ip`.
pub fn agent(id: &str, ip: &str) -> Value {
    json!({
        "agent_info": {"id": {"value": id}, "hostname": format!("agent-{id}"), "port": 5051},
        "pid": format!("slave(1)@{ip}:5051"),
        "active": true
    })
}

/// A running task in master.proto's `Task` shape with host ports as `ports` resources.
pub fn task(id: &str, name: &str, framework_id: &str, agent_id: &str, ports: &[u16]) -> Value {
    let ranges: Vec<Value> = ports
        .iter()
        .map(|p| json!({"begin": p, "end": p}))
        .collect();
    json!({
        "name": name,
        "task_id": {"value": id},
        "framework_id": {"value": framework_id},
        "agent_id": {"value": agent_id},
        "state": "TASK_RUNNING",
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": ranges}}
        ],
        "statuses": [{"task_id": {"value": id}, "state": "TASK_RUNNING", "timestamp": 1_700_000_000.0}]
    })
}

/// Adds DiscoveryInfo ports (`(number, name, protocol, labels)`) to a task.
pub fn with_discovery(
    mut task: Value,
    name: Option<&str>,
    ports: &[(u16, &str, &str, Value)],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(number, port_name, protocol, labels)| {
            let labels: Vec<Value> = labels
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            json!({"number": number, "name": port_name, "protocol": protocol, "labels": {"labels": labels}})
        })
        .collect();
    task["discovery"] = json!({"visibility": "FRAMEWORK", "name": name, "ports": {"ports": ports}});
    task
}

/// Puts a task on a named container network with `ip`.
pub fn on_network(mut task: Value, ip: &str) -> Value {
    task["container"] = json!({"type": "MESOS", "network_infos": [{"name": "dcos"}]});
    task["statuses"][0]["container_status"] =
        json!({"network_infos": [{"name": "dcos", "ip_addresses": [{"ip_address": ip}]}]});
    task
}
