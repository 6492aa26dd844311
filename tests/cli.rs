//! The command line: `check` accepts the shipped configs and names the key of a bad one.

use std::process::Command;

fn switchyard(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("switchyard-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_shipped_configs() {
    for config in ["config/switchyard.toml", "benches/peers/switchyard.toml"] {
        let path = format!("{}/{config}", env!("CARGO_MANIFEST_DIR"));
        let (ok, text) = switchyard(&["check", "--config", &path]);
        assert!(ok, "{config}: {text}");
        assert!(text.contains("configuration ok"));
    }
}

#[test]
fn check_names_the_bad_key_and_fails() {
    let cases = [
        (
            "[discovery]\nfile = \"a.json\"\ndebounce = \"soon\"\n",
            "debounce",
        ),
        (
            "[discovery]\nfile = \"a.json\"\n[proxy]\nbind = \"localhost\"\n",
            "bind",
        ),
        (
            "[discovery]\nfile = \"a.json\"\n[proxy]\ndrain_timout = \"1s\"\n",
            "drain_timout",
        ),
        (
            "[discovery]\nmarathon = [\"marathon:8080\"]\n",
            "discovery.marathon",
        ),
        (
            "[discovery]\nfile = \"a.json\"\n[proxy]\nconnect_timeout = \"0s\"\n",
            "proxy.connect_timeout",
        ),
        ("[proxy]\ngroup = \"x\"\n", "discovery"),
        (
            "[discovery]\nfile = \"a.json\"\n[admin]\nlisten = \"0.0.0.0:9090\"\n",
            "admin.token_file",
        ),
    ];
    for (i, (toml, key)) in cases.iter().enumerate() {
        let path = write(&format!("bad{i}"), toml);
        let (ok, text) = switchyard(&["check", "--config", path.to_str().unwrap()]);
        assert!(!ok, "{toml} was accepted");
        assert!(text.contains(key), "{key} not named in: {text}");
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn unknown_arguments_are_refused() {
    let (ok, text) = switchyard(&["--bogus"]);
    assert!(!ok);
    assert!(text.contains("usage"));
    let (ok, _) = switchyard(&["check"]);
    assert!(!ok);
}

mod support;

#[tokio::test]
async fn routes_status_resolve_and_explain_against_a_running_instance() {
    use serde_json::json;
    use support::marathon::{app, task};
    let b = support::Backend::start("b").await;
    let dir = support::temp_dir("cli-inspect");
    let file = dir.join("apps.json");
    let port = support::free_port();
    let apps = json!({"apps": [app("/prod/api", port, json!({"HAPROXY_0_VHOST": "api.example.com"}), vec![task("/prod/api", "api.1", b.port())])]});
    std::fs::write(&file, apps.to_string()).unwrap();
    let dns = support::free_port();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n[dns]\nlisten = \"127.0.0.1:{dns}\"\n",
        file.display().to_string()
    );
    let sy = support::Switchyard::start("cli-inspect", &toml);
    support::wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let admin = sy.admin.to_string();
    let run = |args: &[&str]| {
        let (ok, text) = switchyard(&[args, &["--admin", &admin]].concat());
        assert!(ok, "{args:?}: {text}");
        text
    };
    let routes = run(&["routes"]);
    assert!(
        routes.contains("/prod/api") && routes.contains("api.example.com"),
        "{routes}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(&["routes", "--json"])).unwrap();
    assert_eq!(json["routes"][0]["members"][0]["app_id"], "/prod/api");
    let status = run(&["status"]);
    assert!(
        status.contains("ready: true") && status.contains("source connected: true"),
        "{status}"
    );
    let resolved = run(&["resolve", "api-prod.marathon.mesos"]);
    assert!(resolved.contains("127.0.0.1"), "{resolved}");
    let explained = run(&["explain", "API.example.com:80", "/v1/users"]);
    assert!(
        explained.contains("matched route") && explained.contains(&b.addr.to_string()),
        "{explained}"
    );
    let by_port = run(&["explain", &port.to_string()]);
    assert!(by_port.contains("serves route"), "{by_port}");
    let (ok, text) = switchyard(&["status", "--admin", "127.0.0.1:1"]);
    assert!(!ok && text.contains("cannot reach"), "{text}");
}
