//! The cluster model written back in Marathon's JSON shapes, for the relay (`relay/`): the
//! inverse of `api.rs`. What `api::parse_apps` reads from what is written here is the app it was
//! written from (`api_tests.rs` holds the two to that), so an instance that follows a relay holds
//! the model the relay holds. Only what the model keeps is written: a relay is faithful to what
//! switchyard reads, not to every field Marathon has.

use serde_json::{Map, Value, json};

use crate::cluster::{App, Networking, Protocol, Task, TaskState};

/// What an `embed` query asks for beside the definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Embed {
    /// `apps.tasks` / `app.tasks`: the tasks, with their health results.
    pub tasks: bool,
    /// `apps.deployments`: written as an empty list (the model keeps no deployments).
    pub deployments: bool,
    /// `apps.readiness`: `readinessCheckResults`.
    pub readiness: bool,
}

impl Embed {
    /// From a query string's `embed=` parameters (`apps.tasks` and `app.tasks` alike).
    pub fn from_query(query: &str) -> Embed {
        let mut embed = Embed::default();
        for (key, value) in query.split('&').filter_map(|p| p.split_once('=')) {
            if key != "embed" {
                continue;
            }
            match value.trim_start_matches("apps.").trim_start_matches("app.") {
                "tasks" => embed.tasks = true,
                "deployments" => embed.deployments = true,
                "readiness" => embed.readiness = true,
                _ => {}
            }
        }
        embed
    }
}

/// One app as `/v2/apps` lists it.
pub fn app(app: &App, embed: Embed) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(&*app.id));
    out.insert("labels".into(), json!(app.labels));
    let ports: Vec<Value> = app.ports.iter().map(|p| port(p, app)).collect();
    out.insert("portDefinitions".into(), Value::Array(ports));
    // Container networking: `networks: [{mode: container}]`; host: none. IP-per-task on host
    // networking (service ports assigned by switchyard) is a network without a mode.
    let networks = match (app.networking, app.assign_service_ports) {
        (Networking::Container, _) => json!([{"mode": "container"}]),
        (Networking::Host, true) => json!([{}]),
        (Networking::Host, false) => json!([]),
    };
    out.insert("networks".into(), networks);
    out.insert("healthChecks".into(), Value::Array(health_checks(app)));
    out.insert("instances".into(), json!(app.tasks.len()));
    if app.version_ms > 0 {
        out.insert("version".into(), json!(iso8601(app.version_ms)));
    }
    if embed.tasks {
        let tasks = app.tasks.values().map(|t| task(&app.id, t)).collect();
        out.insert("tasks".into(), Value::Array(tasks));
    }
    if embed.deployments {
        out.insert("deployments".into(), json!([]));
    }
    if embed.readiness {
        let results: Vec<Value> = app
            .tasks
            .values()
            .filter_map(|t| Some(json!({"taskId": &*t.id, "ready": t.ready?})))
            .collect();
        out.insert("readinessCheckResults".into(), Value::Array(results));
    }
    Value::Object(out)
}

fn port(p: &crate::cluster::PortSpec, app: &App) -> Value {
    let mut out = Map::new();
    // No service port on an app whose ports switchyard assigns: Marathon leaves it out.
    if p.service_port != 0 || !app.assign_service_ports {
        out.insert("port".into(), json!(p.service_port));
    }
    if let Some(container_port) = p.container_port {
        out.insert("containerPort".into(), json!(container_port));
    }
    let protocol = match p.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::TcpUdp => "udp,tcp",
    };
    out.insert("protocol".into(), json!(protocol));
    if let Some(name) = &p.name {
        out.insert("name".into(), json!(name));
    }
    out.insert("labels".into(), json!(p.labels));
    Value::Object(out)
}

/// The app's checks in its order; a check switchyard probes itself carries its probe's settings
/// (the model pairs them in order: every check that names no port and is not a command).
fn health_checks(app: &App) -> Vec<Value> {
    let mut probes = app.probes.iter();
    let mut out: Vec<Value> = app
        .checks
        .iter()
        .map(|check| {
            let mut c = Map::new();
            c.insert("protocol".into(), json!(check.protocol));
            c.insert("portIndex".into(), json!(check.port_index as u64));
            if check.has_port {
                // The model keeps only that a port was named, not which.
                c.insert("port".into(), json!(1));
            }
            let probed = !check.has_port
                && matches!(
                    check.protocol.as_str(),
                    "HTTP" | "MESOS_HTTP" | "TCP" | "MESOS_TCP" | "HTTPS" | "MESOS_HTTPS"
                );
            if probed && let Some(probe) = probes.next() {
                if let crate::cluster::ProbeKind::Http { path } = &probe.kind {
                    c.insert("path".into(), json!(&**path));
                }
                c.insert("intervalSeconds".into(), json!(probe.interval.as_secs()));
                c.insert("timeoutSeconds".into(), json!(probe.timeout.as_secs()));
                c.insert("maxConsecutiveFailures".into(), json!(probe.max_failures));
                c.insert("gracePeriodSeconds".into(), json!(probe.grace.as_secs()));
            }
            Value::Object(c)
        })
        .collect();
    // Counted checks beyond those described (a model from another source): plain commands.
    while out.len() < app.health_checks {
        out.push(json!({"protocol": "COMMAND"}));
    }
    out
}

/// One task as `/v2/apps?embed=apps.tasks` lists it (`/v2/tasks` adds nothing the model has).
pub fn task(app_id: &str, t: &Task) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(&*t.id));
    out.insert("appId".into(), json!(app_id));
    out.insert("host".into(), json!(t.host.as_str()));
    out.insert("ports".into(), json!(t.ports));
    let addresses: Vec<Value> = t
        .ip_addresses
        .iter()
        .map(|ip| {
            let protocol = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            json!({"ipAddress": ip.to_string(), "protocol": protocol})
        })
        .collect();
    out.insert("ipAddresses".into(), Value::Array(addresses));
    out.insert("state".into(), json!(state(&t.state)));
    if let Some(healthy) = t.healthy {
        out.insert(
            "healthCheckResults".into(),
            json!([{"alive": healthy, "taskId": &*t.id}]),
        );
    }
    if t.changed_ms > 0 {
        out.insert("startedAt".into(), json!(iso8601(t.changed_ms)));
    }
    Value::Object(out)
}

fn state(state: &TaskState) -> &str {
    match state {
        TaskState::Staging => "TASK_STAGING",
        TaskState::Starting => "TASK_STARTING",
        TaskState::Running => "TASK_RUNNING",
        TaskState::Killing => "TASK_KILLING",
        TaskState::Other(s) => s,
    }
}

/// Milliseconds since the epoch as Marathon writes a time: `2015-09-25T15:13:48.343Z`.
pub fn iso8601(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let of_day = ms % 86_400_000;
    // Civil date from days (Howard Hinnant's algorithm), the inverse of `api::timestamp_ms`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000
    )
}
