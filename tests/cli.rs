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
