//! The deployment files in config/: the Marathon app definitions parse as Marathon apps, the
//! configuration they fetch is accepted by `switchyard check`, their health checks point at the
//! admin listener; the systemd unit reloads with SIGHUP and stops with SIGTERM.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn check(config: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loads an app definition, checks it the way switchyard reads Marathon's apps, and checks the
/// configuration its command runs with.
fn app(name: &str) -> Value {
    let text = std::fs::read(repo(&format!("config/marathon/{name}.json"))).unwrap();
    switchyard::discovery::marathon::api::parse_single_app(&text)
        .expect("a Marathon app definition");
    let app: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(app["id"], format!("/{name}"));
    let cmd = app["cmd"].as_str().unwrap();
    let config = cmd
        .split("--config ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let fetched = app["fetch"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["uri"].as_str().unwrap().ends_with(config));
    assert!(fetched, "{config} is fetched beside the binary");
    check(&repo(&format!("config/marathon/{config}")));
    assert_eq!(app["networks"][0]["mode"], "host");
    assert_eq!(
        app["constraints"][0],
        serde_json::json!(["hostname", "UNIQUE"])
    );
    app
}

#[test]
fn edge_app_runs_on_public_agents_with_a_health_check_on_the_admin_port() {
    let edge = app("switchyard-edge");
    assert_eq!(
        edge["acceptedResourceRoles"],
        serde_json::json!(["slave_public"])
    );
    let health = &edge["healthChecks"][0];
    assert_eq!(health["path"], "/healthz");
    let port = &edge["portDefinitions"][health["portIndex"].as_u64().unwrap() as usize];
    assert_eq!(port["port"], 9090);
    let config = std::fs::read_to_string(repo("config/marathon/switchyard-edge.toml")).unwrap();
    assert!(
        config.contains("listen = \"0.0.0.0:9090\""),
        "the admin listener is what Marathon checks"
    );
    assert_eq!(edge["readinessChecks"][0]["path"], "/readyz");
}

#[test]
fn agent_app_runs_once_per_agent_and_routes_the_vip_range() {
    let agent = app("switchyard-agent");
    assert!(
        agent["cmd"]
            .as_str()
            .unwrap()
            .contains("ip route replace local 11.0.0.0/8 dev lo")
    );
    let config = std::fs::read_to_string(repo("config/marathon/switchyard-agent.toml")).unwrap();
    assert!(config.contains("[dns]") && config.contains("[vip]"));
}

#[test]
fn systemd_unit_reloads_with_sighup_stops_with_sigterm_and_is_hardened() {
    let unit = std::fs::read_to_string(repo("config/systemd/switchyard.service")).unwrap();
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.contains(section), "{section}");
    }
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    assert!(has("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(has("KillSignal=SIGTERM"));
    assert!(has("NoNewPrivileges=yes"));
    assert!(has("CapabilityBoundingSet=CAP_NET_BIND_SERVICE"));
    assert!(has("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    // The unit validates its configuration before starting; so does this test, with the
    // repository's example standing in for /etc/switchyard/switchyard.toml.
    assert!(unit.contains(
        "ExecStartPre=/usr/local/bin/switchyard check --config /etc/switchyard/switchyard.toml"
    ));
    check(&repo("config/switchyard.toml"));
}
