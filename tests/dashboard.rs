//! The dashboard in a real browser (Debian's headless Chromium): the page loads, shows a
//! deployed app and its backends, and reflects a scale-up while it stays open (no reload).

mod support;

use std::process::{Command, Stdio};

use serde_json::json;
use support::marathon::{app, task};
use support::*;

#[tokio::test]
async fn the_dashboard_shows_an_app_and_follows_a_scale_up_live() {
    if Command::new("chromium").arg("--version").output().is_err() {
        eprintln!("chromium not installed: skipped (.ci/run installs it)");
        return;
    }
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let dir = temp_dir("dashboard");
    let file = dir.join("apps.json");
    let write = |backends: &[&Backend]| {
        let tasks = backends
            .iter()
            .enumerate()
            .map(|(i, b)| task("/shop", &format!("shop.{i}"), b.port()))
            .collect();
        let apps = json!({"apps": [app("/shop", free_port(), json!({"HAPROXY_0_VHOST": "shop.example.com"}), tasks)]});
        std::fs::write(file.with_extension("tmp"), apps.to_string()).unwrap();
        std::fs::rename(file.with_extension("tmp"), &file).unwrap();
    };
    write(&[&b1]);
    let toml = format!(
        "[discovery]\nfile = {:?}\nfile_poll_interval = \"20ms\"\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n",
        file.display().to_string()
    );
    let sy = Switchyard::start("dashboard", &toml);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;

    // One page load, left polling for 600 s of virtual time (about a second of real time,
    // the polls being the only work), then its DOM is printed.
    let profile = dir.join("chromium-profile");
    let url = format!("http://{}/", sy.admin);
    let browser = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=600000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    // The page has rendered the first table once it asks for the swap history.
    wait_for("the page polling", || async {
        (sy.metric("switchyard_admin_requests_total", &["/v1/swaps"])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    write(&[&b1, &b2]);
    sy.wait_routes("scaled up", |r| {
        r["services"][0]["backends"].as_array().unwrap().len() == 2
    })
    .await;
    let dom = tokio::task::spawn_blocking(move || browser.wait_with_output().unwrap())
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains("/shop"), "the deployed app is shown: {dom}");
    assert!(
        dom.contains(&b1.addr.to_string()) && dom.contains(&b2.addr.to_string()),
        "both backends: {dom}"
    );
    assert!(dom.contains("shop.example.com"));
    // The page saw generation 1 and then generation 2 without being reloaded.
    assert!(
        dom.contains("data-generation=\"1\"") && dom.contains("data-generation=\"2\""),
        "{dom}"
    );
}
