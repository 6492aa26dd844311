//! Marathon's JSON shapes (apps, tasks, events) and their translation into the cluster model.
//!
//! Parsing is lenient about what switchyard does not use and strict about what it does: one app
//! or event that does not parse is reported with its id and skipped; the rest still applies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::cluster::{
    App, ClusterUpdate, HostNames, Networking, PortSpec, Probe, ProbeKind, Protocol, Task,
    TaskState,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MarathonApp {
    id: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    port_definitions: Option<Vec<MarathonPort>>,
    /// The legacy service-port list, read when `portDefinitions` is absent.
    #[serde(default)]
    ports: Option<Vec<u16>>,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    networks: Vec<Network>,
    #[serde(default)]
    ip_address: Option<Value>,
    #[serde(default)]
    health_checks: Vec<Value>,
    #[serde(default)]
    tasks: Vec<MarathonTask>,
    #[serde(default)]
    readiness_check_results: Vec<ReadinessResult>,
    /// When the definition last changed (config or scale), ISO 8601.
    #[serde(default)]
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadinessResult {
    task_id: String,
    ready: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MarathonPort {
    /// `port` in portDefinitions, `servicePort` in port mappings.
    #[serde(default, alias = "servicePort")]
    port: Option<u16>,
    #[serde(default)]
    container_port: Option<u16>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Container {
    #[serde(default)]
    docker: Option<Docker>,
    #[serde(default)]
    port_mappings: Option<Vec<MarathonPort>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Docker {
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    port_mappings: Option<Vec<MarathonPort>>,
}

#[derive(Debug, Deserialize)]
struct Network {
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MarathonTask {
    id: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    ip_addresses: Vec<IpAddressEntry>,
    #[serde(default, alias = "taskStatus")]
    state: Option<String>,
    #[serde(default)]
    health_check_results: Vec<HealthResult>,
    #[serde(default)]
    staged_at: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpAddressEntry {
    ip_address: IpAddr,
}

#[derive(Debug, Deserialize)]
struct HealthResult {
    alive: bool,
}

/// A snapshot's apps, and the apps that did not parse (`(app id, reason)`).
pub struct ParsedApps {
    pub apps: Vec<App>,
    pub rejected: Vec<(String, String)>,
}

/// Parses `/v2/apps` (`{"apps": [...]}`) or a bare array of apps; each app on its own, straight
/// from its slice of the document (no intermediate JSON tree: a 10,000-app snapshot is tens of
/// megabytes).
pub fn parse_apps(body: &[u8]) -> Result<ParsedApps, String> {
    #[derive(Deserialize)]
    struct Document<'a> {
        #[serde(borrow)]
        apps: Vec<&'a RawValue>,
    }
    let text = std::str::from_utf8(body).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let list = if text.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<&RawValue>>(text)
    } else {
        serde_json::from_str::<Document>(text).map(|d| d.apps)
    }
    .map_err(|e| format!("expected an object with an `apps` array: {e}"))?;
    let mut parsed = ParsedApps {
        apps: Vec::with_capacity(list.len()),
        rejected: Vec::new(),
    };
    // The snapshot's tasks on one agent share one host name.
    let mut hosts = crate::cluster::HostNames::default();
    for raw in list {
        match parse_app(raw.get(), &mut hosts) {
            Ok(app) => parsed.apps.push(app),
            Err(rejected) => parsed.rejected.push(rejected),
        }
    }
    Ok(parsed)
}

/// Parses `/v2/apps/{id}` (`{"app": {...}}`), or a bare app definition.
pub fn parse_single_app(body: &[u8]) -> Result<App, (String, String)> {
    #[derive(Deserialize)]
    struct Document<'a> {
        #[serde(borrow)]
        app: &'a RawValue,
    }
    let text =
        std::str::from_utf8(body).map_err(|e| (String::new(), format!("invalid UTF-8: {e}")))?;
    match serde_json::from_str::<Document>(text) {
        Ok(doc) => parse_app(doc.app.get(), &mut Default::default()),
        Err(_) => parse_app(text, &mut Default::default()),
    }
}

/// One app from its JSON text; on failure, its id (if it has one) and why.
fn parse_app(text: &str, hosts: &mut HostNames) -> Result<App, (String, String)> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<Value>,
    }
    match serde_json::from_str::<MarathonApp>(text) {
        Ok(app) => {
            let id = app.id.clone();
            into_app(app, hosts).map_err(|reason| (id, reason))
        }
        Err(e) => {
            let id = serde_json::from_str::<IdOnly>(text)
                .ok()
                .and_then(|i| i.id)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "<no id>".into());
            Err((id, e.to_string()))
        }
    }
}

/// Marathon's rule for an app id (`PathId`): absolute, `/`-separated segments, each made of
/// dot-separated labels of lower-case letters, digits and inner hyphens. Marathon refuses any
/// other id, so one that breaks the rule came from elsewhere (the file source, a relay, a
/// forged event). It is refused here, where ids enter the model, because an id is written
/// into DNS names, HAProxy-style backend names, `/metrics` labels, logs and the dashboard:
/// each escapes what it must, and none has to carry quotes, spaces, control characters or
/// `..` segments that Marathon itself could never have sent.
pub fn check_app_id(id: &str) -> Result<(), String> {
    let Some(path) = id.strip_prefix('/') else {
        return Err(format!("app id {id:?} is not absolute"));
    };
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    if path.is_empty()
        || !path
            .split('/')
            .all(|segment| segment.split('.').all(label_ok))
    {
        return Err(format!(
            "app id {id:?} breaks Marathon's id rule (segments of lower-case letters, digits, \
             inner hyphens and dots)"
        ));
    }
    Ok(())
}

fn into_app(app: MarathonApp, hosts: &mut HostNames) -> Result<App, String> {
    check_app_id(&app.id)?;
    let container = app.container.unwrap_or_default();
    let docker = container.docker.unwrap_or_default();
    let container_mode = app
        .networks
        .iter()
        .any(|n| n.mode.as_deref() == Some("container"))
        || docker.network.as_deref() == Some("USER")
        || app.ip_address.as_ref().is_some_and(|v| !v.is_null());
    // The places Marathon keeps ports, in the order Marathon itself prefers them; the legacy
    // `ports` array only without `portDefinitions` (utils.py: `ports = app.get('ports', [])`,
    // `if 'portDefinitions' in app:` those instead).
    let legacy = || {
        app.ports.as_ref().map(|ports| {
            ports
                .iter()
                .map(|&p| MarathonPort {
                    port: Some(p),
                    ..MarathonPort::default()
                })
                .collect::<Vec<_>>()
        })
    };
    let mut raw_ports = container
        .port_mappings
        .filter(|p| !p.is_empty())
        .or(docker.port_mappings.filter(|p| !p.is_empty()))
        .or(app.port_definitions)
        .or_else(legacy)
        .unwrap_or_default();
    // IP-per-task (utils.py's "container" mode, not bridge) with no service port: marathon-lb
    // assigns them ("legacy ip-per-container for Marathon 1.4.x and prior"), one per task port:
    // `ipAddress.discovery.ports`, else the port mappings' container ports.
    let ip_per_task = app.ip_address.as_ref().is_some_and(|v| !v.is_null())
        || docker.network.as_deref() == Some("USER")
        || app
            .networks
            .last()
            .is_some_and(|n| n.mode.as_deref().unwrap_or("container") == "container");
    let discovery: Vec<MarathonPort> = app
        .ip_address
        .as_ref()
        .and_then(|v| v.pointer("/discovery/ports"))
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    Some(MarathonPort {
                        container_port: u16::try_from(p["number"].as_u64()?).ok(),
                        protocol: p["protocol"].as_str().map(str::to_string),
                        name: p["name"].as_str().map(str::to_string),
                        ..MarathonPort::default()
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let assign_service_ports = ip_per_task && raw_ports.iter().all(|p| p.port.is_none());
    if assign_service_ports && !discovery.is_empty() {
        raw_ports = discovery;
    }
    let raw_ports_empty = raw_ports.is_empty();
    let ports = raw_ports
        .into_iter()
        .map(|p| PortSpec {
            service_port: p.port.unwrap_or(0),
            container_port: p.container_port,
            protocol: match p.protocol.as_deref() {
                Some("udp") => Protocol::Udp,
                Some("udp,tcp") | Some("tcp,udp") => Protocol::TcpUdp,
                _ => Protocol::Tcp,
            },
            name: p.name,
            labels: p.labels,
        })
        .collect();
    let readiness = app.readiness_check_results;
    let tasks = app
        .tasks
        .into_iter()
        .map(|t| {
            let mut task = into_task(t, hosts);
            // Several checks: ready when all have passed.
            for result in readiness.iter().filter(|r| *r.task_id == *task.id) {
                task.ready = Some(task.ready.unwrap_or(true) && result.ready);
            }
            task
        })
        .collect();
    Ok(App {
        id: app.id.into(),
        labels: app.labels,
        ports,
        networking: if container_mode {
            Networking::Container
        } else {
            Networking::Host
        },
        health_checks: app.health_checks.len(),
        probes: app
            .health_checks
            .iter()
            .filter_map(probe_from_marathon)
            .collect(),
        checks: app.health_checks.iter().map(check_spec).collect(),
        assign_service_ports: assign_service_ports && !raw_ports_empty,
        tasks,
        version_ms: app.version.as_deref().and_then(timestamp_ms).unwrap_or(0),
    })
}

/// Marathon's `healthChecks` entry as a probe; `None` for checks switchyard cannot run
/// (COMMAND) or that name a port by number rather than index.
fn probe_from_marathon(check: &Value) -> Option<Probe> {
    let protocol = check["protocol"].as_str().unwrap_or("HTTP");
    let kind = match protocol {
        "HTTP" | "MESOS_HTTP" => ProbeKind::Http {
            path: check["path"]
                .as_str()
                .filter(|p| p.starts_with('/') && p.len() < 1024 && p.is_ascii())
                .filter(|p| !p.bytes().any(|b| b.is_ascii_control() || b == b' '))
                .unwrap_or("/")
                .into(),
        },
        // An HTTPS check's TLS is the app's: switchyard checks that the port accepts.
        "TCP" | "MESOS_TCP" | "HTTPS" | "MESOS_HTTPS" => ProbeKind::Tcp,
        _ => return None,
    };
    if names_a_port(check) {
        return None;
    }
    let seconds = |key: &str, default: u64| {
        std::time::Duration::from_secs(check[key].as_u64().unwrap_or(default).clamp(1, 3600))
    };
    Some(Probe {
        kind,
        port_index: check["portIndex"].as_u64().unwrap_or(0).min(1024) as usize,
        interval: seconds("intervalSeconds", 60),
        timeout: seconds("timeoutSeconds", 20),
        max_failures: check["maxConsecutiveFailures"]
            .as_u64()
            .unwrap_or(3)
            .clamp(1, 1000) as u32,
        grace: std::time::Duration::from_secs(
            check["gracePeriodSeconds"]
                .as_u64()
                .unwrap_or(300)
                .min(86_400),
        ),
        target: None,
    })
}

/// A Marathon health check as marathon-lb's `get_health_check` sees it (protocol, `portIndex`,
/// `port`); Marathon's defaults for what is absent (`HTTP`, index 0).
fn check_spec(check: &Value) -> crate::cluster::CheckSpec {
    crate::cluster::CheckSpec {
        protocol: check["protocol"].as_str().unwrap_or("HTTP").to_string(),
        port_index: check["portIndex"]
            .as_u64()
            .map_or(0, |i| usize::try_from(i).unwrap_or(usize::MAX)),
        has_port: names_a_port(check),
    }
}

/// Whether a Marathon health check names its port by number (`port`) rather than by index:
/// marathon-lb's test (`check.get('port')`, so `0`, `""` and `null` name none). The one rule for
/// both what switchyard probes and what it reports of the check, so that the two always pair up
/// (the relay writes a check's probe beside the check it came from).
fn names_a_port(check: &Value) -> bool {
    match &check["port"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn into_task(t: MarathonTask, hosts: &mut HostNames) -> Task {
    let changed_ms = [&t.staged_at, &t.started_at]
        .into_iter()
        .filter_map(|s| timestamp_ms(s.as_deref()?))
        .max()
        .unwrap_or(0);
    Task {
        changed_ms,
        id: t.id.into(),
        host: hosts.intern(&t.host),
        ports: t.ports.into(),
        ip_addresses: t.ip_addresses.into_iter().map(|a| a.ip_address).collect(),
        state: TaskState::parse(t.state.as_deref().unwrap_or("TASK_RUNNING")),
        ready: None,
        healthy: if t.health_check_results.is_empty() {
            None
        } else {
            Some(t.health_check_results.iter().all(|r| r.alive))
        },
    }
}

/// Marathon's ISO 8601 timestamps (`2015-09-25T15:13:48.343Z`, or with an offset such as
/// `+02:00`) as milliseconds since the epoch; `None` when not of that shape or before 1970.
pub fn timestamp_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let fraction = &text[start..at];
        millis = fraction
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0, |n, d| n * 10 + i64::from(d - b'0'));
        if fraction.is_empty() {
            return None;
        }
    }
    let offset = match b.get(at..)? {
        [b'Z' | b'z'] | [] => 0,
        [sign @ (b'+' | b'-'), ..] => {
            let (h, m) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            if b.len() != at + 6 || b[at + 3] != b':' {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset * 60;
    u64::try_from(seconds * 1000 + millis).ok()
}

/// What one event on the stream asks of switchyard.
#[derive(Debug)]
pub enum Event {
    /// Apply to the model directly.
    Update(ClusterUpdate),
    /// Re-fetch one app's definition.
    RefetchApp(String),
    /// Re-fetch everything.
    Resync,
}

/// The event types switchyard subscribes to (`event_type=` filters on `/v2/events`).
pub const SUBSCRIBED_EVENTS: &[&str] = &[
    "status_update_event",
    "health_status_changed_event",
    "instance_health_changed_event",
    "api_post_event",
    "app_terminated_event",
    "deployment_info",
    "deployment_success",
    "deployment_failed",
    "deployment_step_success",
    "deployment_step_failure",
    "group_change_success",
    "group_change_failed",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusUpdate {
    app_id: String,
    task_id: String,
    task_status: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    ip_addresses: Vec<IpAddressEntry>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthChanged {
    app_id: String,
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    instance_id: Option<String>,
    alive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceHealthChanged {
    app_id: String,
    instance_id: String,
    healthy: Option<bool>,
}

/// Parses one event object. `Err` carries the reason the event is malformed; `Ok(None)` means
/// an event type switchyard does not act on.
pub fn parse_event(value: Value) -> Result<(String, Option<Event>), String> {
    let kind = value
        .get("eventType")
        .and_then(Value::as_str)
        .ok_or("missing eventType")?
        .to_string();
    let event = match kind.as_str() {
        "status_update_event" => {
            let e: StatusUpdate = serde_json::from_value(value).map_err(|e| e.to_string())?;
            let task = Task {
                id: e.task_id.into(),
                host: e.host.into(),
                ports: e.ports.into(),
                ip_addresses: e.ip_addresses.into_iter().map(|a| a.ip_address).collect(),
                state: TaskState::parse(&e.task_status),
                healthy: None,
                ready: None,
                changed_ms: e.timestamp.as_deref().and_then(timestamp_ms).unwrap_or(0),
            };
            Some(Event::Update(ClusterUpdate::TaskStatus {
                app_id: e.app_id.into(),
                task,
            }))
        }
        "health_status_changed_event" => {
            let e: HealthChanged = serde_json::from_value(value).map_err(|e| e.to_string())?;
            match (e.task_id, e.instance_id) {
                (Some(task_id), _) => Some(Event::Update(ClusterUpdate::TaskHealth {
                    app_id: e.app_id.into(),
                    task_id: task_id.into(),
                    alive: e.alive,
                })),
                (None, Some(instance_id)) => Some(Event::Update(ClusterUpdate::InstanceHealth {
                    app_id: e.app_id.into(),
                    instance_id,
                    healthy: Some(e.alive),
                })),
                (None, None) => return Err("neither taskId nor instanceId".into()),
            }
        }
        "instance_health_changed_event" => {
            let e: InstanceHealthChanged =
                serde_json::from_value(value).map_err(|e| e.to_string())?;
            Some(Event::Update(ClusterUpdate::InstanceHealth {
                app_id: e.app_id.into(),
                instance_id: e.instance_id,
                healthy: e.healthy,
            }))
        }
        "api_post_event" => {
            let id = value
                .pointer("/appDefinition/id")
                .and_then(Value::as_str)
                .ok_or("api_post_event without appDefinition.id")?;
            Some(Event::RefetchApp(id.to_string()))
        }
        "app_terminated_event" => {
            let id = value
                .get("appId")
                .and_then(Value::as_str)
                .ok_or("missing appId")?;
            let at_ms = value
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(timestamp_ms)
                .unwrap_or(0);
            Some(Event::Update(ClusterUpdate::AppRemoved {
                id: id.into(),
                at_ms,
            }))
        }
        k if k.starts_with("deployment_") || k.starts_with("group_change_") => Some(Event::Resync),
        _ => None,
    };
    Ok((kind, event))
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
