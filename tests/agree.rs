//! Instances that agree (`table_hash`), and `switchyard plan` against a running instance.

mod support;

use serde_json::{Value, json};
use support::marathon::{Marathon, app, task};
use support::*;

fn config(marathon: &Marathon, group: &str, bind: &str) -> String {
    format!(
        "[discovery]\nmarathon = [{:?}]\nbackoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\n\
         [proxy]\ngroup = {group}\nbind = \"{bind}\"\ndrain_timeout = \"1s\"\n",
        marathon.url()
    )
}

fn hash(routes: &Value) -> String {
    routes["table_hash"]
        .as_str()
        .expect("table_hash")
        .to_string()
}

/// The `hash` label of the one `switchyard_table_hash` series.
async fn metric_hash(sy: &Switchyard) -> String {
    let (_, body) = sy.get("/metrics").await;
    let series: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("switchyard_table_hash{"))
        .collect();
    assert_eq!(series.len(), 1, "one series: {series:?}");
    assert!(series[0].ends_with(" 1"), "{}", series[0]);
    assert!(
        series[0].contains("text=\"2\""),
        "the text's version: {}",
        series[0]
    );
    series[0]
        .split("hash=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn two_instances_on_one_marathon_agree_and_a_different_config_disagrees() {
    let marathon = Marathon::start().await;
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let (web, db, api) = (free_port(), free_port(), free_port());
    marathon.set_apps(vec![
        app(
            "/web",
            web,
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "web.example.com"}),
            vec![
                task("/web", "web.1", b1.port()),
                task("/web", "web.2", b2.port()),
            ],
        ),
        app(
            "/db",
            db,
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "tcp"}),
            vec![task("/db", "db.1", b1.port())],
        ),
        app(
            "/api",
            api,
            json!({"HAPROXY_GROUP": "internal"}),
            vec![task("/api", "api.1", b2.port())],
        ),
    ]);
    // Two nodes of the external edge group, each binding its own address; a third serving
    // another group.
    let a = Switchyard::start("agree-a", &config(&marathon, "\"external\"", "127.0.0.1"));
    let b = Switchyard::start("agree-b", &config(&marathon, "\"external\"", "127.0.0.2"));
    let c = Switchyard::start(
        "agree-c",
        &config(&marathon, "[\"external\", \"internal\"]", "127.0.0.3"),
    );
    let served = |n: usize| move |r: &Value| r["services"].as_array().map_or(0, Vec::len) == n;
    let ra = a.wait_routes("a's table", served(2)).await;
    let rb = b.wait_routes("b's table", served(2)).await;
    let rc = c.wait_routes("c's table", served(3)).await;
    assert_eq!(hash(&ra).len(), 16);
    assert_eq!(hash(&ra), hash(&rb), "same Marathon, same group: equal");
    assert_ne!(hash(&ra), hash(&rc), "another group served: different");
    assert_eq!(metric_hash(&a).await, hash(&ra));
    assert_eq!(metric_hash(&b).await, hash(&rb));
    assert_eq!(metric_hash(&c).await, hash(&rc));

    // A change both see moves both, and they agree again.
    marathon.update_app("/web", |w| {
        w["labels"]["HAPROXY_0_BALANCE"] = json!("leastconn");
    });
    // Every instance reconnects and takes a fresh snapshot, as on a Marathon leader change.
    marathon.drop_streams();
    let changed = |old: String| move |r: &Value| hash(r) != old;
    let ra2 = a.wait_routes("a sees the change", changed(hash(&ra))).await;
    let rb2 = b.wait_routes("b sees the change", changed(hash(&rb))).await;
    assert_eq!(hash(&ra2), hash(&rb2));
    assert_eq!(metric_hash(&a).await, hash(&ra2));
}

/// `switchyard plan FILE… [--json]` against the running instance: its output and exit status.
fn plan(sy: &Switchyard, files: &[&std::path::Path], json: bool) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .arg("plan")
        .args(files)
        .arg("--admin")
        .arg(sy.admin.to_string());
    if json {
        command.arg("--json");
    }
    let out = command.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[tokio::test]
async fn plan_shows_what_a_deploy_would_change_and_fails_on_a_conflict() {
    let marathon = Marathon::start().await;
    let b1 = Backend::start("one").await;
    let (web, api) = (free_port(), free_port());
    marathon.set_apps(vec![app(
        "/web",
        web,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/web", "web.1", b1.port())],
    )]);
    let sy = Switchyard::start("plan", &config(&marathon, "\"external\"", "127.0.0.1"));
    let live = sy.wait_routes("served", |r| has_service(r, web)).await;
    let dir = temp_dir("plan-files");

    // A new app on a free port, and /web given a vhost (no tasks in the definition: kept).
    let mut new_web = app(
        "/web",
        web,
        json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "web.example.com"}),
        vec![],
    );
    new_web.as_object_mut().unwrap().remove("tasks");
    let ok = dir.join("ok.json");
    std::fs::write(&ok, json!({"apps": [new_web]}).to_string()).unwrap();
    let api_file = dir.join("api.json");
    let api_app = app("/api", api, json!({"HAPROXY_GROUP": "external"}), vec![]);
    std::fs::write(&api_file, api_app.to_string()).unwrap();
    let (code, out) = plan(&sy, &[&ok, &api_file], false);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("app /web: replaces the live app (its tasks kept)"),
        "{out}"
    );
    assert!(out.contains("app /api: new"), "{out}");
    assert!(out.contains("+ vhost    web.example.com (/web:0)"), "{out}");
    assert!(out.contains("~ mode     /web:0: tcp -> http"), "{out}");
    assert!(out.contains("+ service  /api:0"), "{out}");
    assert!(out.contains("nothing would break"), "{out}");
    assert!(
        out.contains(&format!("table hash {} -> ", hash(&live))),
        "the live table's hash is the plan's before: {out}"
    );

    // /api asking for /web's port: a conflict that /api wins (apps are visited in id order),
    // so /web would lose its port: exit 3, and --json says why.
    let clash = dir.join("clash.json");
    let clashing = app("/api", web, json!({"HAPROXY_GROUP": "external"}), vec![]);
    std::fs::write(&clash, clashing.to_string()).unwrap();
    let (code, out) = plan(&sy, &[&clash], true);
    assert_eq!(code, Some(3), "{out}");
    let answer: Value = serde_json::from_str(&out).expect("JSON");
    let breaking = answer["breaking"].as_array().unwrap();
    assert!(
        breaking
            .iter()
            .any(|b| b.as_str().unwrap().starts_with("new problem: /web port 0")),
        "{answer}"
    );
    assert!(
        breaking
            .iter()
            .any(|b| b == "/web:0 would no longer be served"),
        "{answer}"
    );

    // Nothing was applied.
    let after = sy.routes().await;
    assert_eq!(hash(&after), hash(&live));
    assert_eq!(after["services"].as_array().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The threads of process `pid` named `name`, by thread id.
fn threads_named(pid: u32, name: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| t.ok())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// The table hash (and the route weights, and freeing replaced tables) is made on a thread at
/// the kernel's idle priority: a thread woken by a swap — a worker, the control thread with the
/// next event — takes the CPU from it at once. The metric still names the live table.
#[tokio::test]
async fn the_table_hash_is_made_on_an_idle_priority_thread() {
    let marathon = Marathon::start().await;
    let b1 = Backend::start("one").await;
    let web = free_port();
    marathon.set_apps(vec![app(
        "/web",
        web,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/web", "web.1", b1.port())],
    )]);
    let sy = Switchyard::start(
        "agree-idle",
        &config(&marathon, "\"external\"", "127.0.0.1"),
    );
    let routes = sy
        .wait_routes("the app is routed", |r| {
            r["services"].as_array().is_some_and(|s| s.len() == 1)
        })
        .await;
    let pid = sy.child.id();
    let threads = wait_for("the idle-priority thread", || async {
        let found = threads_named(pid, "switchyard-idle");
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(threads.len(), 1, "one such thread: {threads:?}");
    // SAFETY: a thread id of a live process; sched_getscheduler reads its policy.
    let policy = unsafe { libc::sched_getscheduler(threads[0]) };
    assert_eq!(policy, libc::SCHED_IDLE, "thread {}", threads[0]);
    assert_eq!(metric_hash(&sy).await, hash(&routes));
}
