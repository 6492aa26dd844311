//! The deployment files in config/: the Marathon app definitions parse as Marathon apps, the
//! configuration they fetch is accepted by `switchyard check`, their health checks point at the
//! admin listener; the systemd unit reloads with SIGHUP and stops with SIGTERM.
//!
//! And they start: each app definition's `cmd` runs verbatim (`sh -c`, as the Mesos command
//! executor runs it) in a fresh directory laid out as the Mesos fetcher and the secret store
//! would lay out the sandbox, and becomes ready; the systemd unit's command lines run against
//! a directory standing in for `/`, and its binary upgrade (SIGUSR2) hands over.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::marathon::{Marathon, app as marathon_app, task};
use support::*;

fn repo(path: &str) -> PathBuf {
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
        .unwrap()
        .trim_end_matches(';');
    let fetched = app["fetch"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["uri"].as_str().unwrap().ends_with(config));
    assert!(fetched, "{config} is fetched beside the binary");
    // `switchyard check` of the configuration needs the sandbox it names files in: the app's
    // own command runs it there (the sandbox tests below).
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

/// The Debian package's unit (packaging/debian/switchyard.service, installed by cargo-deb's
/// `systemd-units`) is the hand-installed one with the package's paths and system user: every
/// other directive (hardening, signals, notify) is the same; it needs no network tool (the VIP
/// route is a documented drop-in, as the package does not depend on iproute2).
#[test]
fn the_packaged_unit_is_the_shipped_one_with_the_packages_paths_and_user() {
    let directives = |path: &str| -> Vec<String> {
        std::fs::read_to_string(repo(path))
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.replace("/usr/local/bin/", "/usr/bin/"))
            .collect()
    };
    let shipped = directives("config/systemd/switchyard.service");
    let packaged = directives("packaging/debian/switchyard.service");
    let differ = |l: &String| {
        l.starts_with("DynamicUser=")
            || l.starts_with("User=")
            || l.starts_with("Group=")
            || l.starts_with("Documentation=")
            || l.contains("/sbin/ip ")
    };
    let same = |unit: &[String]| {
        unit.iter()
            .filter(|l| !differ(l))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(same(&shipped), same(&packaged));
    assert!(packaged.contains(&"User=switchyard".to_string()));
    assert!(packaged.contains(
        &"ExecStart=/usr/bin/switchyard --config /etc/switchyard/switchyard.toml".to_string()
    ));
    assert!(!packaged.iter().any(|l| l.contains("/sbin/ip")));
    // The package creates the user the unit runs as, and names the unit and its conffiles.
    let postinst = std::fs::read_to_string(repo("packaging/debian/postinst")).unwrap();
    assert!(postinst.contains("useradd --system") && postinst.contains("#DEBHELPER#"));
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    for needed in [
        "[package.metadata.deb]",
        "systemd-units",
        "\"/etc/switchyard/switchyard.toml\"",
        "usr/share/bash-completion/completions/switchyard",
        "usr/share/man/man1/",
    ] {
        assert!(manifest.contains(needed), "Cargo.toml lacks {needed}");
    }
    // The conffile the package installs is accepted as it is, beside the empty apps file it
    // also installs.
    let etc = temp_dir("deb-etc");
    std::fs::copy(repo("config/switchyard.toml"), etc.join("switchyard.toml")).unwrap();
    std::fs::copy(repo("packaging/debian/apps.json"), etc.join("apps.json")).unwrap();
    check(&etc.join("switchyard.toml"));
    let _ = std::fs::remove_dir_all(&etc);
}

/// What the Mesos fetcher and the secret store put in a task's sandbox for `app`, and the
/// environment Marathon gives its `cmd`.
struct Sandbox {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    /// Secret name (the app's `secrets` key) to its content.
    secrets: BTreeMap<String, String>,
}

impl Sandbox {
    /// Fetches `app`'s URIs into a fresh sandbox: the release tarball is the one
    /// packaging/build-tarball.sh makes of the binary under test (its name must be the URI's:
    /// the app definitions follow the crate's version), fetched unextracted as the app asks, and
    /// its digest is put in `SWITCHYARD_SHA256` as the operator pastes it; each other URI is the
    /// file of that name from config/marathon/. Secrets are made up (a token, or a self-signed
    /// certificate for a `.pem` source) and put where the app asks: file-based ones at
    /// `containerPath` in the sandbox, mode 0400, and environment ones in the variable.
    /// Marathon's variables come last.
    fn fetch(name: &str, app: &Value, with_secrets: bool) -> Sandbox {
        let dir = temp_dir(&format!("sandbox-{name}"));
        let mut digest = None;
        for f in app["fetch"].as_array().unwrap() {
            let uri = f["uri"].as_str().unwrap();
            let file = uri.rsplit('/').next().unwrap();
            assert_ne!(
                f["extract"], true,
                "{uri}: the command verifies, then extracts"
            );
            if file.ends_with(".tar.gz") {
                let (archive, sha256) = release_tarball();
                assert_eq!(
                    archive.file_name().unwrap().to_str().unwrap(),
                    file,
                    "{uri}: the tarball build-tarball.sh names for this version"
                );
                std::fs::copy(archive, dir.join(file)).unwrap();
                digest = Some(sha256.clone());
            } else {
                std::fs::copy(repo(&format!("config/marathon/{file}")), dir.join(file)).unwrap();
            }
        }
        let mut secrets = BTreeMap::new();
        for (key, secret) in app["secrets"].as_object().into_iter().flatten() {
            let source = secret["source"].as_str().unwrap();
            let content = if source.ends_with(".pem") {
                let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
                c.cert.pem() + &c.signing_key.serialize_pem()
            } else {
                format!("token-{key}-{}\n", std::process::id())
            };
            secrets.insert(key.clone(), content);
        }
        let mut env = BTreeMap::new();
        if with_secrets {
            let volumes = app["container"]["volumes"].as_array().into_iter().flatten();
            for volume in volumes.filter(|v| v["secret"].is_string()) {
                let path = dir.join(volume["containerPath"].as_str().unwrap());
                assert!(path.starts_with(&dir), "relative to the sandbox");
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &secrets[volume["secret"].as_str().unwrap()]).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
            }
        }
        for (key, value) in app["env"].as_object().into_iter().flatten() {
            match (value.as_str(), value["secret"].as_str()) {
                (Some(v), _) => {
                    env.insert(key.clone(), v.to_string());
                }
                (None, Some(secret)) if with_secrets => {
                    env.insert(key.clone(), secrets[secret].clone());
                }
                _ => {}
            }
        }
        assert!(
            env.contains_key("SWITCHYARD_SHA256"),
            "the app pins the digest"
        );
        env.insert(
            "SWITCHYARD_SHA256".into(),
            digest.expect("the app fetches the tarball"),
        );
        let ports: Vec<String> = app["portDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].to_string())
            .collect();
        for (i, port) in ports.iter().enumerate() {
            env.insert(format!("PORT{i}"), port.clone());
        }
        let id = app["id"].as_str().unwrap();
        let sandbox = dir.display().to_string();
        for (key, value) in [
            ("PORTS", ports.join(",")),
            ("HOST", "127.0.0.1".to_string()),
            ("MESOS_SANDBOX", sandbox.clone()),
            (
                "MESOS_TASK_ID",
                format!("{}.test-1", id.trim_start_matches('/')),
            ),
            ("MARATHON_APP_ID", id.to_string()),
            // A stub `ip` first: the agent's route for the VIP range needs root and a real
            // network namespace; the stub records what it was asked.
            (
                "PATH",
                format!("{sandbox}/stub-bin:/usr/local/bin:/usr/bin:/bin"),
            ),
        ] {
            env.insert(key.to_string(), value);
        }
        let stub = dir.join("stub-bin");
        std::fs::create_dir_all(&stub).unwrap();
        let log = dir.join("ip.log");
        std::fs::write(
            stub.join("ip"),
            format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(stub.join("ip"), std::fs::Permissions::from_mode(0o755)).unwrap();
        Sandbox { dir, env, secrets }
    }

    /// The one change a test makes to the fetched configuration: addresses. Marathon is the
    /// stand-in (there is no `marathon.mesos` without Mesos-DNS) and listeners move from the
    /// agent's 0.0.0.0:80/443/53/9090 to loopback test ports (admin: port 0, read from the
    /// log). Each replaced text must be in the shipped file, so nothing else can drift.
    fn readdress(&self, file: &str, replacements: &[(&str, String)]) {
        let path = self.dir.join(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in replacements {
            assert_eq!(text.matches(from).count(), 1, "{file}: {from} once");
            text = text.replace(from, to);
        }
        std::fs::write(&path, text).unwrap();
    }

    /// The app's `cmd`, as the Mesos command executor runs it: `sh -c` in the sandbox, with
    /// nothing in the environment but what Marathon and Mesos set.
    fn command(&self, app: &Value) -> Command {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(app["cmd"].as_str().unwrap())
            .current_dir(&self.dir)
            .env_clear()
            .envs(&self.env);
        command
    }
}

fn load_app(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(repo(&format!("config/marathon/{name}.json"))).unwrap())
        .unwrap()
}

/// A bearer-token call to the admin API (`POST /v1/reload` needs the token even on loopback).
async fn reload_with(admin: std::net::SocketAddr, token: Option<String>) -> Result<String, String> {
    let admin = switchyard::cli::Admin { addr: admin, token };
    tokio::task::spawn_blocking(move || switchyard::cli::reload(&admin))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_edge_app_starts_from_its_sandbox_to_ready_with_its_secrets() {
    let edge = load_app("switchyard-edge");
    let marathon = Marathon::start().await;
    let web = Backend::start("web").await;
    let service_port = free_port();
    marathon.set_apps(vec![marathon_app(
        "/web",
        service_port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/web", "web.1", web.port())],
    )]);
    let sandbox = Sandbox::fetch("edge", &edge, true);
    let (http, https) = (free_port(), free_port());
    sandbox.readdress(
        "switchyard-edge.toml",
        &[
            (
                "\"http://marathon.mesos:8080\"",
                format!("{:?}", marathon.url()),
            ),
            ("\"0.0.0.0:80\"", format!("\"127.0.0.1:{http}\"")),
            ("\"0.0.0.0:443\"", format!("\"127.0.0.1:{https}\"")),
            ("\"0.0.0.0:9090\"", "\"127.0.0.1:0\"".into()),
            ("bind = \"0.0.0.0\"", "bind = \"127.0.0.1\"".into()),
        ],
    );
    let sy = Switchyard::spawn(sandbox.dir.clone(), sandbox.command(&edge));
    wait_for("the edge is ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    // It serves what Marathon says, with the certificate the secret store provided.
    assert_eq!(
        http_get(local(service_port), "/").await.unwrap(),
        (200, "web".into())
    );
    assert_eq!(sy.log_lines("certificate loaded").len(), 1, "{:?}", sy.logs);
    // The admin token is the secret: changes need it.
    let token = sandbox.secrets["adminToken"].trim().to_string();
    let reloaded = reload_with(sy.admin, Some(token)).await;
    assert!(reloaded.is_ok(), "{reloaded:?}");
    let refused = reload_with(sy.admin, Some("wrong".into())).await;
    assert!(refused.unwrap_err().contains("401"));
}

/// The deployment as it used to crash-loop: nothing provides the secrets. The task fails at
/// once, and its stderr (the sandbox's `stderr` file) names every missing file.
#[test]
fn the_edge_app_without_its_secrets_fails_naming_each_missing_file() {
    let edge = load_app("switchyard-edge");
    let sandbox = Sandbox::fetch("edge-no-secrets", &edge, false);
    let out = sandbox.command(&edge).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for missing in [
        format!(
            "admin.token_file {}",
            sandbox.dir.join("secrets/admin-token").display()
        ),
        format!("https.certs {}", sandbox.dir.join("certs").display()),
    ] {
        assert!(stderr.contains(&missing), "{missing} not in: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&sandbox.dir);
}

/// A tarball that is not the one the app definition pins (a tampered or stale artifact, or the
/// shipped placeholder digest) never runs: the command stops at the checksum, before extracting.
#[test]
fn an_app_whose_tarball_does_not_match_its_digest_never_starts() {
    for (name, digest) in [
        ("switchyard-edge", "0".repeat(64)),
        ("switchyard-agent", String::new()),
    ] {
        let app = load_app(name);
        let mut sandbox = Sandbox::fetch(&format!("{name}-digest"), &app, true);
        if digest.is_empty() {
            // As shipped: the definition's placeholder text.
            let shipped = app["env"]["SWITCHYARD_SHA256"]
                .as_str()
                .unwrap()
                .to_string();
            sandbox.env.insert("SWITCHYARD_SHA256".into(), shipped);
        } else {
            sandbox.env.insert("SWITCHYARD_SHA256".into(), digest);
        }
        let out = sandbox.command(&app).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {stderr}");
        assert!(stderr.contains("sha256sum"), "{name}: {stderr}");
        assert!(
            !sandbox.dir.join("switchyard").exists(),
            "{name}: nothing extracted"
        );
        let _ = std::fs::remove_dir_all(&sandbox.dir);
    }
}

/// The release tarball holds one directory named like the archive, with the binary, the example
/// configurations, the unit, completions and man pages; its checksum file verifies with
/// `sha256sum -c`; and it is reproducible, so a pinned digest survives a rebuild.
#[test]
fn the_release_tarball_is_complete_checksummed_and_reproducible() {
    let (archive, sha256) = release_tarball();
    let name = archive.file_name().unwrap().to_str().unwrap();
    let dir = name.strip_suffix(".tar.gz").unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(dir.starts_with(&format!("switchyard-{version}-")), "{dir}");
    let listed = Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    for member in [
        "switchyard",
        "README.md",
        "config/switchyard.toml",
        "config/apps.json",
        "config/marathon/switchyard-edge.json",
        "config/marathon/switchyard-edge.toml",
        "config/marathon/switchyard-agent.json",
        "config/marathon/switchyard-agent.toml",
        "systemd/switchyard.service",
        "completions/switchyard.bash",
        "completions/_switchyard",
        "completions/switchyard.fish",
        "man/switchyard.1.gz",
    ] {
        assert!(
            listed.lines().any(|l| l == format!("{dir}/{member}")),
            "{member} not in {listed}"
        );
    }
    assert!(listed.lines().all(|l| l.starts_with(&format!("{dir}/"))));
    let checked = Command::new("sha256sum")
        .args(["-c", &format!("{name}.sha256")])
        .current_dir(archive.parent().unwrap())
        .output()
        .unwrap();
    assert!(checked.status.success(), "{checked:?}");
    // Unpacked, the binary runs and is the one packaged.
    let unpacked = temp_dir("unpacked");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let version_out = Command::new(unpacked.join(dir).join("switchyard"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&version_out.stdout).starts_with(&format!("switchyard {version}"))
    );
    check(&unpacked.join(dir).join("config/switchyard.toml"));
    // A second build of the same binary is byte-identical.
    let again = temp_dir("dist-again");
    let built = Command::new(repo("packaging/build-tarball.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--out-dir")
        .arg(&again)
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let second = String::from_utf8(built.stdout).unwrap();
    assert_eq!(second.lines().nth(1), Some(sha256.as_str()), "reproducible");
    let _ = std::fs::remove_dir_all(&unpacked);
    let _ = std::fs::remove_dir_all(&again);
}

#[tokio::test]
async fn the_agent_app_starts_from_its_sandbox_to_ready() {
    let agent = load_app("switchyard-agent");
    let marathon = Marathon::start().await;
    let sandbox = Sandbox::fetch("agent", &agent, true);
    let dns = free_port();
    sandbox.readdress(
        "switchyard-agent.toml",
        &[
            (
                "\"http://marathon.mesos:8080\"",
                format!("{:?}", marathon.url()),
            ),
            ("\"0.0.0.0:53\"", format!("\"127.0.0.1:{dns}\"")),
            ("\"127.0.0.1:9090\"", "\"127.0.0.1:0\"".into()),
        ],
    );
    let sy = Switchyard::spawn(sandbox.dir.clone(), sandbox.command(&agent));
    wait_for("the agent is ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let routed = std::fs::read_to_string(sandbox.dir.join("ip.log")).unwrap();
    assert_eq!(routed.trim(), "route replace local 11.0.0.0/8 dev lo");
}

/// The unit's `Exec*` lines that run switchyard (not the privileged `+` ones), with `/usr/local`
/// and `/etc/switchyard` moved under `root`, split as systemd splits them (no shell).
fn unit_commands(root: &Path, key: &str) -> Vec<Vec<String>> {
    let unit = std::fs::read_to_string(repo("config/systemd/switchyard.service")).unwrap();
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .filter(|c| c.starts_with("/usr/local/bin/switchyard"))
        .map(|c| {
            c.split_whitespace()
                .map(|w| {
                    w.replace("/usr/local/", &format!("{}/usr/local/", root.display()))
                        .replace(
                            "/etc/switchyard/",
                            &format!("{}/etc/switchyard/", root.display()),
                        )
                })
                .collect()
        })
        .collect()
}

/// `/` for the systemd unit: the binary in usr/local/bin, the repository's example
/// configuration as etc/switchyard/switchyard.toml (listeners moved to loopback test ports) with
/// an apps file beside it, and run/switchyard as RuntimeDirectory= makes it.
fn systemd_root(web: &Backend, service_port: u16, upgrade: bool) -> PathBuf {
    let root = temp_dir("systemd-root");
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    copy_executable(&bin.join("switchyard"));
    let etc = root.join("etc/switchyard");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(root.join("run/switchyard")).unwrap();
    let mut config = std::fs::read_to_string(repo("config/switchyard.toml")).unwrap();
    let mut replacements = vec![
        (
            "listen = [\"127.0.0.1:8080\"]",
            format!("listen = [\"127.0.0.1:{}\"]", free_port()),
        ),
        (
            "listen = \"127.0.0.1:8053\"",
            format!("listen = \"127.0.0.1:{}\"", free_port()),
        ),
        // Port 0 unless upgrading: the upgrade hands a socket over for the address it was
        // asked to bind, and "port 0" means any.
        (
            "listen = \"127.0.0.1:9090\"",
            format!(
                "listen = \"127.0.0.1:{}\"",
                if upgrade { free_port() } else { 0 }
            ),
        ),
    ];
    if upgrade {
        let socket = root.join("run/switchyard/upgrade.sock");
        replacements.push((
            "# upgrade_socket = \"/run/switchyard/upgrade.sock\"",
            format!("upgrade_socket = {:?}", socket.display().to_string()),
        ));
    }
    for (from, to) in replacements {
        assert_eq!(config.matches(from).count(), 1, "{from}");
        config = config.replace(from, &to);
    }
    std::fs::write(etc.join("switchyard.toml"), config).unwrap();
    write_apps(
        &etc.join("apps.json"),
        vec![marathon_app(
            "/web",
            service_port,
            json!({"HAPROXY_GROUP": "external"}),
            vec![task("/web", "web.1", web.port())],
        )],
    );
    root
}

/// systemd's side of `Type=notify`: the datagrams switchyard sends to `$NOTIFY_SOCKET`.
async fn notifications(socket: &tokio::net::UnixDatagram, until: &str) -> String {
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    while !seen.contains(until) {
        let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {until:?} from switchyard; got {seen:?}"))
            .unwrap();
        seen += &String::from_utf8_lossy(&buf[..n]);
        seen.push('\n');
    }
    seen
}

fn systemd_command(argv: &[String], root: &Path) -> Command {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("NOTIFY_SOCKET", root.join("notify.sock"))
        .env("RUNTIME_DIRECTORY", root.join("run/switchyard"));
    command
}

#[tokio::test]
async fn the_systemd_unit_starts_its_configuration_to_ready_and_notifies_systemd() {
    let web = Backend::start("web").await;
    let service_port = free_port();
    let root = systemd_root(&web, service_port, false);
    let notify = tokio::net::UnixDatagram::bind(root.join("notify.sock")).unwrap();
    for pre in unit_commands(&root, "ExecStartPre") {
        let out = systemd_command(&pre, &root).output().unwrap();
        assert!(
            out.status.success(),
            "{pre:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let start = unit_commands(&root, "ExecStart");
    assert_eq!(start.len(), 1);
    let sy = Switchyard::spawn(root.clone(), systemd_command(&start[0], &root));
    let seen = notifications(&notify, "READY=1").await;
    assert!(
        seen.contains(&format!("MAINPID={}", sy.child.id())),
        "{seen}"
    );
    // Started is not synced: /readyz follows.
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        http_get(local(service_port), "/").await.unwrap(),
        (200, "web".into())
    );
}

/// The upgrade procedure the unit's comment describes: SIGUSR2 to the main process starts the
/// binary again as its child, which takes the sockets over, tells systemd it is the main process
/// now, and the old one exits 0.
#[tokio::test]
async fn the_systemd_upgrade_by_sigusr2_hands_over_and_moves_the_main_pid() {
    let web = Backend::start("web").await;
    let service_port = free_port();
    let root = systemd_root(&web, service_port, true);
    let notify = tokio::net::UnixDatagram::bind(root.join("notify.sock")).unwrap();
    let start = unit_commands(&root, "ExecStart");
    let mut old = Switchyard::spawn(root.clone(), systemd_command(&start[0], &root));
    let old_pid = old.child.id();
    notifications(&notify, &format!("MAINPID={old_pid}\nREADY=1")).await;
    let socket = root.join("run/switchyard/upgrade.sock");
    wait_for("the upgrade socket", || async {
        socket.exists().then_some(())
    })
    .await;

    old.wait_routes("served", |r| has_service(r, service_port))
        .await;
    wait_for("ready", || async {
        (old.get("/readyz").await.0 == 200).then_some(())
    })
    .await;

    old.signal("USR2");
    let seen = notifications(&notify, "READY=1").await;
    let new_pid: u32 = seen
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .expect("the new process names itself")
        .parse()
        .unwrap();
    assert_ne!(new_pid, old_pid);
    // Killed by its pid when the test ends, however it ends.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _new = KillOnDrop(new_pid);
    assert_eq!(
        old.exited().await,
        Some(0),
        "the old process drains and exits 0"
    );
    // The admin socket and the service port were handed over: same addresses, new process.
    assert_eq!(old.get("/readyz").await.0, 200);
    assert_eq!(
        http_get(local(service_port), "/").await.unwrap(),
        (200, "web".into())
    );
    assert!(std::path::Path::new(&format!("/proc/{new_pid}")).exists());
}

/// Copies the switchyard binary to `to` with `cp`, so that this process never holds it open
/// for writing: a test thread forking meanwhile would inherit that descriptor, and running
/// the copy would then fail with "text file busy" (ETXTBSY).
/// The release tarball of the binary under test, built once per test process by the script
/// operators run, and its SHA-256 as the script prints it.
fn release_tarball() -> &'static (PathBuf, String) {
    static TARBALL: std::sync::OnceLock<(PathBuf, String)> = std::sync::OnceLock::new();
    TARBALL.get_or_init(|| {
        let out = temp_dir("dist");
        let built = Command::new(repo("packaging/build-tarball.sh"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_switchyard"))
            .arg("--out-dir")
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&built.stdout);
        assert!(
            built.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let mut lines = stdout.lines();
        let archive = PathBuf::from(lines.next().unwrap());
        let sha256 = lines.next().unwrap().to_string();
        assert_eq!(sha256.len(), 64, "{stdout}");
        (archive, sha256)
    })
}

fn copy_executable(to: &std::path::Path) {
    let status = Command::new("cp")
        .arg(env!("CARGO_BIN_EXE_switchyard"))
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success(), "cp to {}", to.display());
}
