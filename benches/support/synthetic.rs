//! A synthetic cluster in Marathon's `/v2/apps?embed=apps.tasks` JSON shape, for benchmarks.

use serde_json::{Value, json};

/// `apps` apps with `tasks` running tasks each; app `i` has service port `base_port + i`, HTTP
/// mode on every other app, tasks spread over 100 agents on 10.x addresses.
pub fn apps_json(apps: usize, tasks: usize, base_port: u16) -> Vec<u8> {
    let list: Vec<Value> = (0..apps)
        .map(|i| {
            let id = format!("/bench/group{}/app{i}", i % 50);
            let tasks: Vec<Value> = (0..tasks)
                .map(|t| {
                    let agent = (i * tasks + t) % 100;
                    json!({
                        "id": format!("bench_app{i}.instance-{t:08x}._app.1"),
                        "appId": id,
                        "host": format!("10.0.{}.{}", agent / 250, agent % 250 + 1),
                        "ports": [31000 + (t as u16)],
                        "ipAddresses": [{"ipAddress": "10.0.0.1", "protocol": "IPv4"}],
                        "state": "TASK_RUNNING",
                        "healthCheckResults": [{"alive": true}],
                        "startedAt": "2026-11-22T00:00:00.000Z",
                        "version": "2026-11-22T00:00:00.000Z",
                        "slaveId": format!("agent-{agent}")
                    })
                })
                .collect();
            let mode = if i % 2 == 0 { "http" } else { "tcp" };
            json!({
                "id": id,
                "instances": tasks.len(),
                "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": mode},
                "portDefinitions": [{"port": base_port as usize + i, "protocol": "tcp", "name": "main"}],
                "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health"}],
                "tasks": tasks,
                "deployments": [],
                "version": "2026-11-22T00:00:00.000Z"
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "apps": list })).unwrap()
}
