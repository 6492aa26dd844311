//! The command line: `check` accepts the shipped configs and names the key of a bad one; every
//! command has its own help; exit codes (0 ok, 1 runtime failure, 2 usage or invalid
//! configuration); completions and man pages; the invocations the docs and deploy files use.

use std::process::Command;

fn switchyard(args: &[&str]) -> (bool, String) {
    let (code, text) = exit_code(args);
    (code == 0, text)
}

/// The exit code and stdout followed by stderr.
fn exit_code(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().expect("exited"), text)
}

const COMMANDS: [&str; 11] = [
    "run",
    "demo",
    "check",
    "routes",
    "status",
    "resolve",
    "explain",
    "reload",
    "plan",
    "completions",
    "man",
];

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
        let (code, text) = exit_code(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{toml}: {text}");
        assert!(text.contains(key), "{key} not named in: {text}");
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn unknown_arguments_are_refused() {
    let (code, text) = exit_code(&["--bogus"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("Usage: switchyard"), "{text}");
    let (code, text) = exit_code(&["check"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--config"), "{text}");
    let (code, text) = exit_code(&["frobnicate"]);
    assert_eq!(code, 2, "{text}");
    // A flag a command does not have: the error names that command (its usage line).
    for (args, command) in [
        (&["routes", "--bogus"][..], "switchyard routes"),
        (
            &["check", "--config", "x.toml", "--jsn"],
            "switchyard check",
        ),
        (
            &["explain", "--upgrade", "web.localhost"],
            "switchyard explain",
        ),
        (&["completions", "tcsh"], "bash, zsh, fish"),
    ] {
        let (code, text) = exit_code(args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(command), "{args:?}: {command} not in: {text}");
    }
    // Flags the old parser took before the command are refused where they do not apply.
    let (code, text) = exit_code(&["--json", "status"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--json") && text.contains("switchyard status"),
        "{text}"
    );
    // An address that is not ADDR:PORT is a usage error.
    let (code, text) = exit_code(&["status", "--admin", "localhost"]);
    assert_eq!(code, 2, "{text}");
}

#[test]
fn every_command_has_its_own_help_with_examples() {
    for command in COMMANDS {
        let (code, text) = exit_code(&[command, "--help"]);
        assert_eq!(code, 0, "{command}: {text}");
        assert!(
            text.contains(&format!("Usage: switchyard {command}")),
            "{command}: {text}"
        );
        assert!(text.contains("Examples:"), "{command}: {text}");
        let (code, short) = exit_code(&["help", command]);
        assert_eq!(code, 0);
        assert!(short.contains(&format!("Usage: switchyard {command}")));
    }
    let (code, text) = exit_code(&["--help"]);
    assert_eq!(code, 0);
    assert!(text.contains("Exit codes:"), "{text}");
    for command in COMMANDS {
        assert!(
            text.contains(&format!("  {command} ")),
            "{command} not in: {text}"
        );
    }
    // The admin commands share their flags.
    for command in ["routes", "status", "resolve", "explain", "reload", "plan"] {
        let (_, text) = exit_code(&[command, "--help"]);
        for flag in ["--admin", "--token-file", "--config"] {
            assert!(text.contains(flag), "{command} lacks {flag}: {text}");
        }
    }
    for command in ["routes", "resolve", "explain"] {
        assert!(exit_code(&[command, "--help"]).1.contains("--json"));
    }
}

#[test]
fn version_names_the_crate_version() {
    for args in [&["--version"][..], &["-V"], &["routes", "--version"]] {
        let (code, text) = exit_code(args);
        assert_eq!(code, 0, "{text}");
        // `switchyard 0.1.0 (abc1234)`, `switchyard-routes 0.1.0 (abc1234)`; the commit when
        // built from a git checkout.
        assert!(
            text.starts_with("switchyard")
                && text.contains(concat!(" ", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
    }
}

#[test]
fn completions_for_each_shell_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(!script.is_empty(), "{shell}");
        for word in [
            "switchyard",
            "routes",
            "explain",
            "completions",
            "--token-file",
        ] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
}

#[test]
fn man_pages_are_roff_for_the_tool_and_each_command() {
    let (code, page) = exit_code(&["man"]);
    assert_eq!(code, 0, "{page}");
    assert!(page.contains(".TH switchyard 1"), "{page}");
    assert!(page.contains("Exit codes"), "{page}");
    for command in COMMANDS {
        assert!(page.contains(command), "{command} not in the page");
    }
    let (code, page) = exit_code(&["man", "routes"]);
    assert_eq!(code, 0);
    assert!(page.contains(".TH switchyard-routes 1") && page.contains("json"));
    let dir = support::temp_dir("cli-man");
    let (code, text) = exit_code(&["man", "--out-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    for name in ["switchyard.1", "switchyard-check.1", "switchyard-resolve.1"] {
        assert!(dir.join(name).is_file(), "{name}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exit 1 (runtime) versus 2 (usage, invalid configuration) for the admin commands, with the
/// flags before the command as the docs show (`switchyard --token-file FILE status`).
#[test]
fn admin_command_failures_are_exit_1_and_flags_go_before_or_after() {
    let (code, text) = exit_code(&["status", "--admin", "127.0.0.1:1"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("cannot reach"), "{text}");
    let (code, text) = exit_code(&["--admin", "127.0.0.1:1", "routes", "--json"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("switchyard routes: cannot reach"), "{text}");
    let (code, text) = exit_code(&["--token-file", "/nonexistent/token", "status"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("token file"), "{text}");
    let bad = write("admin-bad", "[proxy]\ngroup = \"x\"\n");
    let (code, text) = exit_code(&["reload", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("invalid configuration"), "{text}");
    let (code, text) = exit_code(&["--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    let _ = std::fs::remove_file(bad);
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
    // A second task where nothing listens: active TCP checks take it down.
    let dead = support::free_port();
    let tasks = vec![
        task("/prod/api", "api.1", b.port()),
        task("/prod/api", "api.2", dead),
    ];
    // An app whose labels carry a terminal escape and a line feed into its problems' text (an
    // app-level one, an unknown label, and one of its port's).
    let odd = app(
        "/prod/odd",
        support::free_port(),
        json!({"HAPROXY_0_BALANCE": "bad\u{1b}[31m", "HAPROXY_0_BOGUS\u{1b}[2J\nforged": "1"}),
        vec![],
    );
    let apps = json!({"apps": [app("/prod/api", port, json!({"HAPROXY_0_VHOST": "api.example.com"}), tasks), odd]});
    std::fs::write(&file, apps.to_string()).unwrap();
    let dns = support::free_port();
    let toml = format!(
        "[discovery]\nfile = {:?}\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n[dns]\nlisten = \"127.0.0.1:{dns}\"\n\
         [health_checks]\ndefault = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nmax_consecutive_failures = 1\n",
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
    // What takes no request, and why, in the summary: the dead task is down.
    let routes = support::wait_for("the dead task down", || async {
        let routes = run(&["routes"]);
        routes.contains("2 backends (1 down)").then_some(routes)
    })
    .await;
    assert!(
        routes.contains("/prod/api") && routes.contains("api.example.com"),
        "{routes}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(&["routes", "--json"])).unwrap();
    assert!(
        json["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["members"][0]["app_id"] == "/prod/api"),
        "{json}"
    );
    let status = run(&["status"]);
    assert!(
        status.contains("ready: true") && status.contains("source connected: true"),
        "{status}"
    );
    // Outside text is shown escaped, one line each: no escape reaches the terminal and no line
    // is forged; an app's own problem names no port.
    assert!(
        !status.contains('\u{1b}') && !routes.contains('\u{1b}'),
        "{status:?}"
    );
    assert!(
        status.contains("HAPROXY_0_BOGUS\\u{1b}[2J\\nforged"),
        "{status}"
    );
    assert!(status.contains("bad\\u{1b}[31m"), "{status}");
    assert!(!status.lines().any(|l| l.starts_with("forged")), "{status}");
    assert!(status.contains("/prod/odd port 0: "), "{status}");
    assert!(!status.contains("port null"), "{status}");
    let resolved = run(&["resolve", "api-prod.marathon.mesos"]);
    assert!(resolved.contains("127.0.0.1"), "{resolved}");
    let explained = run(&["explain", "API.example.com:80", "/v1/users"]);
    assert!(
        explained.contains("matched route")
            && explained.contains(&format!("{}  api.1  up", b.addr))
            && explained.contains(&format!("127.0.0.1:{dead}  api.2  down")),
        "{explained}"
    );
    let by_port = run(&["explain", &port.to_string()]);
    assert!(by_port.contains("serves route"), "{by_port}");
    let explained: serde_json::Value =
        serde_json::from_str(&run(&["explain", "api.example.com", "--json"])).unwrap();
    assert!(explained["why"].is_string(), "{explained}");
    let resolved: serde_json::Value =
        serde_json::from_str(&run(&["resolve", "--json", "api-prod.marathon.mesos"])).unwrap();
    assert!(resolved["hosts"].is_array(), "{resolved}");
    // The flags before the command, as the old parser took them.
    let (ok, text) = switchyard(&["--admin", &admin, "--json", "routes"]);
    assert!(ok && text.contains("\"generation\""), "{text}");
    // No record: exit 1, the reason on stderr.
    let (code, text) = exit_code(&["resolve", "no-such-app.marathon.mesos", "--admin", &admin]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("NXDOMAIN"), "{text}");
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

/// `/readyz` is open to anonymous probes; why a source fails (its addresses, its answers) is
/// told only to a caller who may read the admin API.
#[tokio::test]
async fn readyz_names_the_failing_source_only_to_readers() {
    let dir = support::temp_dir("cli-readyz-token");
    let token = dir.join("admin-token");
    std::fs::write(&token, "s3cret-readyz\n").unwrap();
    let sy = support::Switchyard::start_with_admin(
        "cli-readyz-readers",
        "[discovery]\nfile = \"config/apps.json\"\nfile_poll_interval = \"20ms\"\n",
        &format!(
            "token_file = {:?}\nloopback_reads_open = false\n",
            token.display().to_string()
        ),
    );
    let expected = sy.dir.join("config/apps.json").display().to_string();
    let anonymous = support::wait_for("the source's failure", || async {
        let (status, body) = sy.get("/readyz").await;
        (status == 503 && body.contains("source failing")).then_some(body)
    })
    .await;
    assert!(!anonymous.contains(&expected), "{anonymous}");
    let (status, _, body) = support::http_request(
        sy.admin,
        "GET",
        "/readyz",
        &[("Authorization", "Bearer s3cret-readyz")],
        "",
    )
    .await;
    assert_eq!(status, 503);
    assert!(
        body.contains(&expected) && body.contains("No such file"),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One GET to the admin listener naming `host` in its `Host` header, with an optional token.
async fn get_naming(sy: &support::Switchyard, path: &str, host: &str, token: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut stream = tokio::net::TcpStream::connect(sy.admin).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(support::DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Reads open on loopback answer only requests that name a loopback host: a browser's page
/// whose name was rebound to 127.0.0.1 (DNS rebinding) names its own host, and reads nothing.
/// Probes and the dashboard page stay open; with a token file, the token opens the rest.
#[tokio::test]
async fn open_loopback_reads_answer_only_requests_naming_a_loopback_host() {
    let open = support::Switchyard::start(
        "cli-rebind-open",
        "[discovery]\nfile = \"config/apps.json\"\nfile_poll_interval = \"20ms\"\n",
    );
    for host in [
        "localhost",
        "localhost:9090",
        "127.0.0.1",
        "127.0.0.2:1",
        "[::1]:9090",
    ] {
        assert_eq!(
            get_naming(&open, "/v1/routes", host, None).await,
            200,
            "{host}"
        );
    }
    for path in ["/v1/routes", "/metrics", "/v1/swaps", "/_haproxy_getappmap"] {
        let status = get_naming(&open, path, "rebound.example:9090", None).await;
        assert_eq!(status, 403, "{path}");
    }
    for path in ["/healthz", "/", "/_haproxy_health_check"] {
        let status = get_naming(&open, path, "rebound.example:9090", None).await;
        assert_eq!(status, 200, "{path}");
    }

    let dir = support::temp_dir("cli-rebind-token");
    let token = dir.join("admin-token");
    std::fs::write(&token, "s3cret-rebind\n").unwrap();
    let guarded = support::Switchyard::start_with_admin(
        "cli-rebind-token",
        "[discovery]\nfile = \"config/apps.json\"\nfile_poll_interval = \"20ms\"\n",
        &format!("token_file = {:?}\n", token.display().to_string()),
    );
    let named = |host, token| get_naming(&guarded, "/v1/routes", host, token);
    assert_eq!(named("localhost:9090", None).await, 200);
    assert_eq!(named("rebound.example", None).await, 401);
    assert_eq!(named("rebound.example", Some("s3cret-rebind")).await, 200);
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
