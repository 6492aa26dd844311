//! The documentation's examples, run as shown: `switchyard demo` is started from the repository
//! on its documented, fixed ports (skipped, with a message, when one is taken), and
//!
//! 1. before any traffic, every metric family `docs/metrics.md` lists is on `/metrics`;
//! 2. every shell block tagged `sh runnable` in README.md and docs/*.md runs with `bash -e`
//!    (from the repository, `switchyard` on PATH) and must exit 0. Blocks that call `dig` are
//!    skipped with a message when dig is not installed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The demo's fixed ports (config/switchyard.toml, config/apps.json).
const TCP_PORTS: &[u16] = &[
    9090, 8080, 10080, 10081, 10082, 8053, 31001, 31002, 31003, 31011, 31012, 31021, 31022, 31031,
];
const UDP_PORTS: &[u16] = &[8053];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Stops the demo (by its PID, through the handle) however the test ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One plain HTTP/1.1 GET on loopback: (status, body), or None when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A runnable block: where it starts (file:line) and its text.
struct Block {
    at: String,
    text: String,
}

/// Shell blocks opened by a fence tagged `sh runnable`, also inside a `>` quote.
fn runnable_blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        let line = line
            .strip_prefix("> ")
            .or_else(|| line.strip_prefix('>'))
            .unwrap_or(line);
        let fence = line.trim_start().starts_with("```");
        match (&mut current, fence) {
            (None, true) => {
                let info: Vec<&str> = line.trim_start()[3..].split_whitespace().collect();
                if info.first() == Some(&"sh") && info.contains(&"runnable") {
                    current = Some(Block {
                        at: format!("{}:{}", file.display(), i + 1),
                        text: String::new(),
                    });
                }
            }
            (Some(_), true) => blocks.push(current.take().unwrap()),
            (Some(block), false) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, false) => {}
        }
    }
    assert!(
        current.is_none(),
        "{}: unclosed runnable block",
        file.display()
    );
    blocks
}

fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, repo().join("README.md"));
    docs
}

/// The families `docs/metrics.md`'s table lists (its first column, without the prefix).
fn documented_families() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

fn has_dig() -> bool {
    Command::new("dig")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn documented_examples_run_against_the_demo() {
    let taken: Vec<String> = TCP_PORTS
        .iter()
        .filter(|p| TcpListener::bind(("127.0.0.1", **p)).is_err())
        .map(|p| format!("tcp {p}"))
        .chain(
            UDP_PORTS
                .iter()
                .filter(|p| UdpSocket::bind(("127.0.0.1", **p)).is_err())
                .map(|p| format!("udp {p}")),
        )
        .collect();
    if !taken.is_empty() {
        eprintln!(
            "SKIPPED documented_examples_run_against_the_demo: the demo's ports are taken ({}); \
             stop whatever holds them (another `switchyard demo`?) to run the examples",
            taken.join(", ")
        );
        return;
    }
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_switchyard"));
    let demo = Command::new(&binary)
        .arg("demo")
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("switchyard demo starts");
    let _demo = Demo(demo);
    wait_for("/readyz", || {
        get(9090, "/readyz").is_some_and(|(status, _)| status == 200)
    });

    // 1. Before any traffic through the proxy: every documented family is there.
    let families = documented_families();
    assert!(families.len() > 20, "docs/metrics.md lists {families:?}");
    let (status, metrics) = get(9090, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    let missing: Vec<&String> = families
        .iter()
        .filter(|family| {
            let name = format!("switchyard_{family}");
            !metrics.lines().any(|l| {
                l.strip_prefix(&name)
                    .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "families in docs/metrics.md that /metrics does not show before traffic: {missing:?}\n{metrics}"
    );

    // 2. The runnable blocks, once the demo's backends answer.
    wait_for("the demo backends", || {
        TCP_PORTS[6..]
            .iter()
            .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
    });
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dig = has_dig();
    let mut ran = 0;
    let mut failed = Vec::new();
    for doc in documents() {
        for block in runnable_blocks(&doc) {
            if !dig && block.text.contains("dig ") {
                eprintln!("SKIPPED {}: dig is not installed", block.at);
                continue;
            }
            let mut child = Command::new("bash")
                .args(["-e", "-o", "pipefail", "-c", &block.text])
                .current_dir(repo())
                .env("PATH", &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("bash runs");
            let deadline = Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut out = String::new();
            let _ = child.stdout.take().unwrap().read_to_string(&mut out);
            let _ = child.stderr.take().unwrap().read_to_string(&mut out);
            ran += 1;
            match status {
                Some(s) if s.success() => {}
                Some(s) => failed.push(format!("{} ({s}):\n{}\n{out}", block.at, block.text)),
                None => failed.push(format!("{} (timed out):\n{}\n{out}", block.at, block.text)),
            }
        }
    }
    assert!(ran >= 5, "only {ran} runnable blocks found");
    assert!(
        failed.is_empty(),
        "runnable blocks that failed:\n\n{}",
        failed.join("\n\n")
    );

    // `switchyard resolve` fails on a name with no record (the docs show it with `|| echo`).
    let resolve = Command::new(&binary)
        .args(["resolve", "no-such-app.marathon.mesos"])
        .output()
        .unwrap();
    assert_eq!(resolve.status.code(), Some(1), "{resolve:?}");
    let resolve = Command::new(&binary)
        .args(["resolve", "web-demo.marathon.mesos"])
        .output()
        .unwrap();
    assert!(resolve.status.success(), "{resolve:?}");
}

/// Every per-port `SWITCHYARD_{n}_…` label docs/labels.md documents is one switchyard reads (so
/// it is not reported as unknown), and every one it reads is documented.
#[test]
fn documented_switchyard_labels_are_the_ones_read() {
    let text = std::fs::read_to_string(repo().join("docs/labels.md")).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("| `SWITCHYARD_{n}_")) {
        let first = line.split('|').nth(1).unwrap();
        let mut base = String::new();
        for (i, name) in first.split('`').skip(1).step_by(2).enumerate() {
            let rest = name.trim_start_matches("SWITCHYARD_{n}_");
            // `_KEY`, `_503`, `_ADD_<Name>`: the first name with as many of its last parts
            // replaced.
            let full = if i > 0 && rest.starts_with('_') {
                let parts: Vec<&str> = base.split('_').collect();
                let keep = parts.len().saturating_sub(rest.matches('_').count());
                format!("{}{rest}", parts[..keep].join("_"))
            } else {
                rest.to_string()
            };
            if i == 0 {
                base = full.clone();
            }
            documented.insert(full.replace("<Name>", "X_NAME"));
        }
    }
    assert!(documented.len() > 20, "{documented:?}");
    for name in &documented {
        assert!(
            switchyard::routing::known_labels::is_switchyard_port_label(name),
            "docs/labels.md documents SWITCHYARD_{{n}}_{name}, which nothing reads"
        );
    }
    let read = [
        "WEIGHT",
        "CANARY_HEADER",
        "UPSTREAM",
        "TCP_IDLE_TIMEOUT",
        "ROLLOUT",
    ]
    .into_iter()
    .chain(switchyard::routing::edge::LABELS.iter().copied())
    .chain(switchyard::routing::edge_labels::LABELS.iter().copied());
    for name in read {
        assert!(
            documented.contains(name),
            "SWITCHYARD_{{n}}_{name} is read but not in docs/labels.md"
        );
    }
}
