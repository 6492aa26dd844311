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

/// Every file a configuration names, in a fresh directory, referenced by relative paths (they
/// resolve from the configuration's directory): `check` passes with all of them, and fails
/// naming the key and the path when any one is missing, empty or broken.
#[test]
fn check_fails_on_each_missing_referenced_file_naming_it() {
    let dir = support::temp_dir("cli-check-files");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = cert.cert.pem() + &cert.signing_key.serialize_pem();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let files = [
        ("apps.json", "{\"apps\": []}".to_string()),
        ("admin-token", "s3cret\n".to_string()),
        ("marathon-token", "acs-token\n".to_string()),
        ("certs/a.pem", pem.clone()),
        ("default.pem", pem),
    ];
    for (name, content) in &files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let file_source = dir.join("file.toml");
    std::fs::write(
        &file_source,
        "[discovery]\nfile = \"apps.json\"\n\
         [https]\nlisten = [\"127.0.0.1:8443\"]\ncerts = \"certs\"\ndefault_cert = \"default.pem\"\n\
         [admin]\ntoken_file = \"admin-token\"\n\
         [runtime]\nupgrade_socket = \"run/upgrade.sock\"\n",
    )
    .unwrap();
    let marathon_source = dir.join("marathon.toml");
    std::fs::write(
        &marathon_source,
        "[discovery]\nmarathon = [\"http://marathon.mesos:8080\"]\ntoken_file = \"marathon-token\"\n",
    )
    .unwrap();
    let check =
        |config: &std::path::Path| switchyard(&["check", "--config", config.to_str().unwrap()]);
    for config in [&file_source, &marathon_source] {
        let (ok, text) = check(config);
        assert!(ok && text.contains("configuration ok"), "{text}");
    }

    // Missing, then present but unusable (empty). A PEM in the certificates directory is
    // found by listing it, so only the directory itself can be missing (below).
    let (missing_or_empty, empty): (&[_], &[_]) = (&[None, Some("")], &[Some("")]);
    let cases = [
        (
            &file_source,
            "apps.json",
            "discovery.file",
            missing_or_empty,
        ),
        (
            &file_source,
            "admin-token",
            "admin.token_file",
            missing_or_empty,
        ),
        (&file_source, "certs/a.pem", "https.certs", empty),
        (
            &file_source,
            "default.pem",
            "https.default_cert",
            missing_or_empty,
        ),
        (
            &marathon_source,
            "marathon-token",
            "discovery.token_file",
            missing_or_empty,
        ),
    ];
    for (config, name, key, breakages) in cases {
        let path = dir.join(name);
        let saved = std::fs::read(&path).unwrap();
        for &broken in breakages {
            match broken {
                None => std::fs::remove_file(&path).unwrap(),
                Some(text) => std::fs::write(&path, text).unwrap(),
            }
            let (ok, text) = check(config);
            assert!(!ok, "{name} {broken:?}: accepted");
            let named = format!("{key} {}", path.display());
            assert!(text.contains(&named), "{named} not in: {text}");
        }
        std::fs::write(&path, saved).unwrap();
    }

    // Directories: the certificates directory and the upgrade socket's.
    std::fs::rename(dir.join("certs"), dir.join("certs.away")).unwrap();
    let (ok, text) = check(&file_source);
    assert!(
        !ok && text.contains(&format!("https.certs {}", dir.join("certs").display())),
        "{text}"
    );
    std::fs::rename(dir.join("certs.away"), dir.join("certs")).unwrap();
    std::fs::remove_dir(dir.join("run")).unwrap();
    let (ok, text) = check(&file_source);
    assert!(!ok && text.contains("runtime.upgrade_socket"), "{text}");
    std::fs::create_dir(dir.join("run")).unwrap();
    assert!(check(&file_source).0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A relative `discovery.file` resolves from the configuration's directory. When it is not
/// there, the source has never loaded: `/readyz`, `/v1/routes` and `switchyard status` say so,
/// naming the file and the error, until it appears.
#[tokio::test]
async fn a_source_that_never_loaded_is_a_problem_naming_the_file() {
    let sy = support::Switchyard::start(
        "cli-never-loaded",
        "[discovery]\nfile = \"config/apps.json\"\nfile_poll_interval = \"20ms\"\n",
    );
    let expected = sy.dir.join("config/apps.json").display().to_string();
    let (status, body) = support::wait_for("the source's failure", || async {
        let (status, body) = sy.get("/readyz").await;
        body.contains("source file").then_some((status, body))
    })
    .await;
    assert_eq!(status, 503);
    assert!(
        body.contains(&expected) && body.contains("No such file"),
        "{body}"
    );
    let routes = sy.routes().await;
    let problem = &routes["problems"][0];
    assert_eq!(problem["source"], format!("file {expected}"), "{routes}");
    assert_eq!(problem["severity"], "error");
    assert!(
        problem["reason"].as_str().unwrap().contains("never loaded"),
        "{problem}"
    );
    let admin = sy.admin.to_string();
    let (ok, text) = switchyard(&["status", "--admin", &admin]);
    assert!(ok, "{text}");
    assert!(
        text.contains("ready: false") && text.contains(&expected) && text.contains("never loaded"),
        "{text}"
    );

    std::fs::create_dir_all(sy.dir.join("config")).unwrap();
    support::write_apps(&sy.dir.join("config/apps.json"), vec![]);
    support::wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let routes = sy.routes().await;
    assert_eq!(routes["problems"], serde_json::json!([]), "{routes}");
    let (_, text) = switchyard(&["status", "--admin", &admin]);
    assert!(!text.contains("never loaded"), "{text}");
}
