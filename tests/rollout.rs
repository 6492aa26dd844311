//! Canary rollouts end to end, against the Marathon stand-in and real backends on loopback:
//! a healthy canary reaching 100 %, a canary that starts answering 500s at step 2 rolled back
//! (its weight to 0 at the next evaluation, the baseline's requests untouched), a restart
//! mid-rollout resuming from the recorded step, plans refused with why, the plan as a label,
//! and the CLI's start, status and abort. Short hold times and a short `rollout.interval`;
//! every wait is on a condition with a deadline.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, atomic::AtomicU64};

use serde_json::{Value, json};
use support::marathon::{Marathon, app, task};
use support::*;

const TOKEN: &str = "s3cret";

/// An HTTP backend answering its name, or 500 (with its name) once `failing` is set.
struct Flip {
    addr: SocketAddr,
    failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Flip {
    async fn start(name: &'static str) -> Flip {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let mut r = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(name.as_bytes()),
                        ));
                        if flag.load(Ordering::Relaxed) {
                            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        async move { Ok::<_, std::convert::Infallible>(r) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Flip {
            addr,
            failing,
            task,
        }
    }
}

impl Drop for Flip {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn colour_app(id: &str, port: u16, colour: &str, started: &str, backend: &Flip) -> Value {
    let labels = json!({
        "HAPROXY_0_MODE": "http",
        "HAPROXY_DEPLOYMENT_GROUP": "shop",
        "HAPROXY_DEPLOYMENT_COLOUR": colour,
        "HAPROXY_DEPLOYMENT_STARTED_AT": started,
    });
    app(
        id,
        port,
        labels,
        vec![task(id, &format!("{id}.0"), backend.addr.port())],
    )
}

/// Blue (the baseline, deployed first) and green (the canary, newest) in group `shop`.
fn shop(port: u16, blue: &Flip, green: &Flip) -> Vec<Value> {
    vec![
        colour_app("/shop-blue", port, "blue", "2026-11-01T00:00:00Z", blue),
        colour_app("/shop-green", port, "green", "2026-11-22T00:00:00Z", green),
    ]
}

/// A configuration file in `dir`: the stand-in Marathon, a token, rollouts judged every 50 ms
/// and recorded in `state`.
fn write_config(dir: &Path, marathon: &Marathon, state: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    // Only its owner may write a state directory (switchyard refuses one others may write),
    // whatever the umask the tests run under.
    std::fs::create_dir_all(state).unwrap();
    std::fs::set_permissions(state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
             [rollout]\ninterval = \"50ms\"\nstate_dir = {:?}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n\
             [log]\nlevel = \"info,switchyard=debug\"\n",
            marathon.url(),
            state.display().to_string()
        ),
    )
    .unwrap();
    config
}

fn start(name: &str, marathon: &Marathon, state: &Path) -> Switchyard {
    let dir = temp_dir(name);
    let config = write_config(&dir, marathon, state);
    Switchyard::launch(dir, &config, &[])
}

async fn admin(sy: &Switchyard, method: &str, path: &str, body: &str) -> (u16, String) {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) =
        http_request(sy.admin, method, path, &[("Authorization", &auth)], body).await;
    (status, body)
}

fn rollout_of(routes: &Value) -> Value {
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "shop")
        .map(|r| r["rollout"].clone())
        .unwrap_or(Value::Null)
}

fn weight(routes: &Value, app: &str) -> Option<u64> {
    routes["routes"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == "shop")?["members"]
        .as_array()?
        .iter()
        .find(|m| m["app_id"] == app)?["weight"]
        .as_u64()
}

/// Keep-alive clients sending requests through the service port until dropped, counting what
/// came back: (status, body) → count, and requests that got no answer at all.
struct Traffic {
    answers: Arc<Mutex<std::collections::BTreeMap<(u16, String), u64>>>,
    lost: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(port: u16, clients: usize) -> Traffic {
        let answers = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let lost = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (answers, lost, stop) = (answers.clone(), lost.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        else {
                            lost.fetch_add(1, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                            continue;
                        };
                        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(
                            hyper_util::rt::TokioIo::new(stream),
                        )
                        .await
                        else {
                            lost.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        tokio::spawn(conn);
                        while !stop.load(Ordering::Relaxed) {
                            let req = hyper::Request::get("/")
                                .header("host", "shop")
                                .body(http_body_util::Empty::<bytes::Bytes>::new())
                                .unwrap();
                            let Ok(resp) = sender.send_request(req).await else {
                                lost.fetch_add(1, Ordering::Relaxed);
                                break;
                            };
                            let status = resp.status().as_u16();
                            let Ok(body) = http_body_util::BodyExt::collect(resp.into_body()).await
                            else {
                                lost.fetch_add(1, Ordering::Relaxed);
                                break;
                            };
                            let body = String::from_utf8_lossy(&body.to_bytes()).to_string();
                            *answers.lock().unwrap().entry((status, body)).or_default() += 1;
                        }
                    }
                })
            })
            .collect();
        Traffic {
            answers,
            lost,
            stop,
            tasks,
        }
    }

    fn answers(&self) -> std::collections::BTreeMap<(u16, String), u64> {
        self.answers.lock().unwrap().clone()
    }

    async fn stop(mut self) -> std::collections::BTreeMap<(u16, String), u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        self.answers()
    }
}

async fn served(sy: &Switchyard, port: u16) {
    sy.wait_routes("both colours routed", |r| backends(r, port).len() == 2)
        .await;
}

#[tokio::test]
async fn a_healthy_canary_reaches_100_percent() {
    let (blue, green) = (Flip::start("blue").await, Flip::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    marathon.set_apps(shop(port, &blue, &green));
    let state = temp_dir("rollout-healthy-state");
    let sy = start("rollout-healthy", &marathon, &state);
    served(&sy, port).await;
    let traffic = Traffic::start(port, 2);
    let (status, body) = admin(
        &sy,
        "PUT",
        "/v1/routes/shop/rollout",
        r#"{"steps": [10, 50, 100], "hold": "200ms", "min_requests": 20, "max_p99_ratio": 100}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let started: Value = serde_json::from_str(&body).unwrap();
    // The canary is the newest deployment, the baseline the other app.
    assert_eq!(started["canary"], "/shop-green");
    assert_eq!(started["baseline"], "/shop-blue");
    assert_eq!(started["state"], "running");
    assert_eq!(started["share"], 10);
    let routes = sy
        .wait_routes("rollout succeeded", |r| {
            rollout_of(r)["state"] == "succeeded" && weight(r, "/shop-green") == Some(100)
        })
        .await;
    assert_eq!(weight(&routes, "/shop-blue"), Some(0));
    let rollout = rollout_of(&routes);
    assert_eq!(rollout["step"], 3);
    assert_eq!(rollout["share"], 100);
    // The last verdict, with its numbers, is the one that passed step 2.
    let verdict = &rollout["last_verdict"];
    assert_eq!(verdict["outcome"], "pass");
    assert!(
        verdict["canary_requests"].as_u64().unwrap() >= 20,
        "{verdict}"
    );
    assert!(verdict["p99_ratio"].as_f64().is_some(), "{verdict}");
    let answers = traffic.stop().await;
    assert!(
        answers.keys().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    // Every step is an event; the state and step are metrics.
    let (_, events) = sy.get("/v1/events").await;
    let events: Value = serde_json::from_str(&events).unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["route"] == "shop")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["started", "step", "succeeded"]);
    assert_eq!(
        sy.metric(
            "switchyard_rollout_state",
            &["route=\"shop\"", "state=\"succeeded\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        sy.metric("switchyard_rollout_step", &["route=\"shop\""])
            .await,
        3.0
    );
    assert_eq!(sy.log_lines("rollout succeeded").len(), 1);
    // Once it has ended, an operator's weights release it and apply.
    let (status, body) = admin(
        &sy,
        "PUT",
        "/v1/routes/shop/weights",
        r#"{"/shop-blue": 50, "/shop-green": 50}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let routes = sy
        .wait_routes("the operator's weights", |r| {
            rollout_of(r)["released"] == true
                && weight(r, "/shop-green") == Some(50)
                && weight(r, "/shop-blue") == Some(50)
        })
        .await;
    assert_eq!(rollout_of(&routes)["state"], "succeeded");
    let (_, events) = sy.get("/v1/events").await;
    assert!(events.contains("\"kind\":\"released\""), "{events}");
    let file = std::fs::read_to_string(state.join("rollouts.json")).unwrap();
    assert!(
        file.contains("\"released\": true") || file.contains("\"released\":true"),
        "{file}"
    );
}

#[tokio::test]
async fn a_canary_failing_at_step_2_goes_back_to_0_and_the_baseline_is_untouched() {
    let (blue, green) = (Flip::start("blue").await, Flip::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    marathon.set_apps(shop(port, &blue, &green));
    let state = temp_dir("rollout-fail-state");
    let sy = start("rollout-fail", &marathon, &state);
    served(&sy, port).await;
    let traffic = Traffic::start(port, 2);
    // A hold long enough that step 2 cannot pass before the canary breaks.
    let (status, body) = admin(
        &sy,
        "PUT",
        "/v1/routes/shop/rollout",
        r#"{"steps": [10, 50, 100], "hold": "1s", "min_requests": 20, "max_5xx_rate": 0.05, "max_p99_ratio": 100}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    sy.wait_routes("step 2", |r| {
        rollout_of(r)["step"] == 2 && weight(r, "/shop-green") == Some(50)
    })
    .await;
    green.failing.store(true, Ordering::Relaxed);
    let routes = sy
        .wait_routes("rolled back", |r| {
            rollout_of(r)["state"] == "failed" && weight(r, "/shop-green") == Some(0)
        })
        .await;
    let rollout = rollout_of(&routes);
    assert_eq!(rollout["step"], 2);
    assert_eq!(rollout["share"], 0);
    assert!(
        rollout["reason"].as_str().unwrap().contains("5xx rate"),
        "{rollout}"
    );
    assert_eq!(rollout["last_verdict"]["outcome"], "fail");
    assert!(rollout["last_verdict"]["canary_5xx_rate"].as_f64().unwrap() > 0.05);
    assert_eq!(weight(&routes, "/shop-blue"), Some(100));
    // From here on every request is the baseline's.
    let before = traffic.answers();
    wait_for("requests after the rollback", || {
        let now = traffic.answers();
        let more = now.get(&(200, "blue".into())).copied().unwrap_or(0)
            > before.get(&(200, "blue".into())).copied().unwrap_or(0) + 50;
        async move { more.then_some(()) }
    })
    .await;
    let after_rollback = traffic.answers();
    let lost = traffic.lost.load(Ordering::Relaxed);
    let answers = traffic.stop().await;
    assert_eq!(
        after_rollback.get(&(500, "green".into())),
        answers.get(&(500, "green".into())),
        "the canary took requests after its rollback: {answers:?}"
    );
    // No request failed but the canary's own 500s: every other answer is a 200.
    assert_eq!(lost, 0);
    for ((status, who), n) in &answers {
        assert!(
            *status == 200 || (*status == 500 && who == "green"),
            "{n} × {status} {who}: {answers:?}"
        );
    }
    assert!(answers.get(&(500, "green".into())).is_some_and(|&n| n > 0));
    // What the rollback cost the clients (printed with --nocapture; not asserted).
    let failing = rollout["last_verdict"]["canary_requests"]
        .as_u64()
        .unwrap_or(0);
    eprintln!(
        "canary 500s seen by clients: {} (the failing verdict saw {failing} canary responses in \
         step 2); all answers: {answers:?}",
        answers.get(&(500, "green".into())).copied().unwrap_or(0)
    );
    let (_, events) = sy.get("/v1/events").await;
    assert!(events.contains("\"kind\":\"failed\""), "{events}");
    assert_eq!(sy.log_lines("rollout failed").len(), 1);
    assert_eq!(
        sy.metric(
            "switchyard_rollout_state",
            &["route=\"shop\"", "state=\"failed\""]
        )
        .await,
        1.0
    );
    // The recorded state says failed too: a restart keeps the canary at 0.
    let file = std::fs::read_to_string(state.join("rollouts.json")).unwrap();
    assert!(file.contains("\"failed\""), "{file}");
}

#[tokio::test]
async fn a_restart_mid_rollout_resumes_from_the_recorded_step() {
    let (blue, green) = (Flip::start("blue").await, Flip::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    marathon.set_apps(shop(port, &blue, &green));
    let state = temp_dir("rollout-restart-state");
    let first = start("rollout-restart-1", &marathon, &state);
    served(&first, port).await;
    let traffic = Traffic::start(port, 2);
    let (status, body) = admin(
        &first,
        "PUT",
        "/v1/routes/shop/rollout",
        r#"{"steps": [10, 30, 60, 100], "hold": "300ms", "min_requests": 20, "max_p99_ratio": 100}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let at_step_2 = first
        .wait_routes("step 2", |r| rollout_of(r)["step"] == 2)
        .await;
    let started = rollout_of(&at_step_2)["started_unix_ms"].clone();
    drop(first);
    let file = std::fs::read_to_string(state.join("rollouts.json")).unwrap();
    let recorded: Value = serde_json::from_str(&file).unwrap();
    let step = recorded["rollouts"]["shop"]["step"].as_u64().unwrap();
    assert!(step >= 2, "{file}");
    let second = start("rollout-restart-2", &marathon, &state);
    // The first answer with the route already shows the recorded step, never step 1 again.
    let resumed = second
        .wait_routes("route back", |r| !rollout_of(r).is_null())
        .await;
    let rollout = rollout_of(&resumed);
    assert!(rollout["step"].as_u64().unwrap() >= step, "{rollout}");
    assert_eq!(rollout["started_unix_ms"], started);
    assert_eq!(
        second
            .log_lines("rollout resumed from the recorded step")
            .len(),
        1
    );
    second
        .wait_routes("rollout succeeded after the restart", |r| {
            rollout_of(r)["state"] == "succeeded" && weight(r, "/shop-green") == Some(100)
        })
        .await;
    traffic.stop().await;
}

#[tokio::test]
async fn bad_plans_are_refused_with_why_and_change_nothing() {
    let (blue, green) = (Flip::start("blue").await, Flip::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    marathon.set_apps(shop(port, &blue, &green));
    let state = temp_dir("rollout-bad-state");
    let sy = start("rollout-bad", &marathon, &state);
    served(&sy, port).await;
    for (path, body, status, why) in [
        ("/v1/routes/shop/rollout", r#"{"hold": "1s"}"#, 400, "steps"),
        (
            "/v1/routes/shop/rollout",
            r#"{"steps": [50, 10, 100], "hold": "1s"}"#,
            400,
            "must increase",
        ),
        (
            "/v1/routes/shop/rollout",
            r#"{"steps": [10, 50], "hold": "1s"}"#,
            400,
            "last step must be 100",
        ),
        (
            "/v1/routes/shop/rollout",
            r#"{"steps": [10, 100], "hold": "1s", "max_5xx_rate": 2}"#,
            400,
            "max_5xx_rate",
        ),
        (
            "/v1/routes/shop/rollout",
            r#"{"steps": [10, 100], "hold": "1s", "canary": "/shop-pink"}"#,
            400,
            "not an app of the route",
        ),
        (
            "/v1/routes/shop/rollout",
            r#"{"steps": [10, 100"#,
            400,
            "JSON",
        ),
        (
            "/v1/routes/shop/rollout",
            "steps=10,100 hold=1s",
            400,
            "JSON plan",
        ),
        (
            "/v1/routes/nope/rollout",
            r#"{"steps": [10, 100], "hold": "1s"}"#,
            404,
            "no route",
        ),
    ] {
        let (got, answer) = admin(&sy, "PUT", path, body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer.contains(why), "{body}: {answer}");
    }
    // Without the token: refused.
    let (status, _, _) = http_request(
        sy.admin,
        "PUT",
        "/v1/routes/shop/rollout",
        &[],
        r#"{"steps": [10, 100], "hold": "1s"}"#,
    )
    .await;
    assert_eq!(status, 401);
    // Nothing started, no weight moved.
    let routes = sy.routes().await;
    assert!(rollout_of(&routes).is_null(), "{routes}");
    assert_eq!(
        admin(&sy, "GET", "/v1/routes/shop/rollout", "").await.0,
        404
    );
    assert!(!std::fs::exists(state.join("rollouts.json")).unwrap());
    // A second plan while one runs: 409.
    let plan = r#"{"steps": [10, 100], "hold": "1h"}"#;
    assert_eq!(
        admin(&sy, "PUT", "/v1/routes/shop/rollout", plan).await.0,
        201
    );
    let (status, answer) = admin(&sy, "PUT", "/v1/routes/shop/rollout", plan).await;
    assert_eq!(status, 409, "{answer}");
    // While it runs it holds the route's weights: an operator's change (or clearing them) is
    // refused, and the rollout's weights stay.
    for (method, body) in [
        ("PUT", r#"{"/shop-blue": 50, "/shop-green": 50}"#),
        ("DELETE", ""),
    ] {
        let (status, answer) = admin(&sy, method, "/v1/routes/shop/weights", body).await;
        assert_eq!(status, 409, "{method}: {answer}");
        assert!(answer.contains("abort it first"), "{answer}");
    }
    let routes = sy.routes().await;
    assert_eq!(rollout_of(&routes)["state"], "running");
    assert_eq!(rollout_of(&routes)["released"], false);
}

#[tokio::test]
async fn a_plan_label_starts_a_rollout_and_a_bad_one_is_a_problem() {
    let (blue, green) = (Flip::start("blue").await, Flip::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    let mut apps = shop(port, &blue, &green);
    apps[1]["labels"]["SWITCHYARD_0_ROLLOUT"] =
        json!("steps=20,100; hold=100ms; min_requests=10; max_p99_ratio=100");
    marathon.set_apps(apps.clone());
    let state = temp_dir("rollout-label-state");
    let sy = start("rollout-label", &marathon, &state);
    served(&sy, port).await;
    let traffic = Traffic::start(port, 1);
    let routes = sy
        .wait_routes("label rollout succeeded", |r| {
            rollout_of(r)["state"] == "succeeded"
        })
        .await;
    let rollout = rollout_of(&routes);
    assert_eq!(rollout["origin"], "label");
    assert_eq!(rollout["canary"], "/shop-green");
    traffic.stop().await;
    // A plan label that cannot be read: a problem naming it, and no rollout from it.
    let mut bad = apps;
    bad[0]["labels"]["SWITCHYARD_0_ROLLOUT"] = json!("steps=20,10 hold=1s");
    marathon.update_app("/shop-blue", |a| *a = bad[0].clone());
    marathon
        .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/shop-blue"}}));
    let routes = sy
        .wait_routes("problem shown", |r| {
            r.to_string()
                .contains("SWITCHYARD_0_ROLLOUT: steps must increase")
        })
        .await;
    assert_eq!(rollout_of(&routes)["origin"], "label");
    // A new plan on the canary starts a new rollout; taking the label away aborts it (the
    // group-wide stop through Marathon): the canary back to 0.
    let mut green = bad[1].clone();
    green["labels"]["SWITCHYARD_0_ROLLOUT"] = json!("steps=20,100; hold=1h");
    marathon.update_app("/shop-green", |a| *a = green.clone());
    marathon
        .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/shop-green"}}));
    sy.wait_routes("new label rollout", |r| {
        rollout_of(r)["state"] == "running" && weight(r, "/shop-green") == Some(20)
    })
    .await;
    green["labels"]
        .as_object_mut()
        .unwrap()
        .remove("SWITCHYARD_0_ROLLOUT");
    marathon.update_app("/shop-green", |a| *a = green.clone());
    marathon
        .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/shop-green"}}));
    let routes = sy
        .wait_routes("label rollout aborted", |r| {
            rollout_of(r)["state"] == "aborted" && weight(r, "/shop-green") == Some(0)
        })
        .await;
    assert!(
        rollout_of(&routes)["reason"]
            .as_str()
            .unwrap()
            .contains("label was removed")
    );
}

/// `switchyard rollout ARGS…` against `sy`: exit code, stdout and stderr.
async fn cli(sy: &Switchyard, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .arg("rollout")
        .args(args)
        .arg("--admin")
        .arg(sy.admin.to_string())
        .arg("--token-file")
        .arg(sy.dir.join("token"));
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn the_cli_starts_watches_and_aborts_a_rollout() {
    let (blue, green) = (Flip::start("blue").await, Flip::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    marathon.set_apps(shop(port, &blue, &green));
    let state = temp_dir("rollout-cli-state");
    let sy = start("rollout-cli", &marathon, &state);
    served(&sy, port).await;
    // A plan the instance refuses: exit 1, with why.
    let (code, _, err) = cli(
        &sy,
        &["start", "shop", "--steps", "50,10,100", "--hold", "1s"],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("must increase"), "{err}");
    // Usage: no steps, no plan file.
    let (code, _, err) = cli(&sy, &["start", "shop", "--hold", "1s"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = cli(
        &sy,
        &[
            "start",
            "shop",
            "--steps",
            "10,100",
            "--hold",
            "1h",
            "--max-5xx-rate",
            "0.02",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rollout started"), "{out}");
    assert!(
        out.contains("running, step 1 of 2: /shop-green at 10 % (against /shop-blue)"),
        "{out}"
    );
    let (code, out, _) = cli(&sy, &["status", "shop"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("running, step 1 of 2"), "{out}");
    let (code, out, _) = cli(&sy, &["status", "shop", "--json"]).await;
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["plan"]["max_5xx_rate"], 0.02);
    // `switchyard routes` shows the rollout under its route.
    let mut routes = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    routes.args(["routes", "--admin", &sy.admin.to_string()]);
    let listing = tokio::task::spawn_blocking(move || routes.output().unwrap())
        .await
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        listing.contains("rollout: running, step 1 of 2: /shop-green at 10 %"),
        "{listing}"
    );
    sy.wait_routes("10 %", |r| weight(r, "/shop-green") == Some(10))
        .await;
    let (code, out, err) = cli(&sy, &["abort", "shop"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("aborted"), "{out}");
    sy.wait_routes("canary at 0", |r| weight(r, "/shop-green") == Some(0))
        .await;
    // Status of an aborted rollout: exit 4.
    let (code, out, _) = cli(&sy, &["status", "shop"]).await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("aborted through the admin API"), "{out}");
    // A plan file, then waiting for the outcome as a pipeline would.
    let plan = sy.dir.join("plan.json");
    std::fs::write(
        &plan,
        r#"{"steps": [20, 100], "hold": "100ms", "min_requests": 10, "max_p99_ratio": 100}"#,
    )
    .unwrap();
    let traffic = Traffic::start(port, 1);
    let (code, _, err) = cli(&sy, &["start", "shop", "--plan", plan.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&sy, &["status", "shop", "--wait", "--timeout", "1m"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("succeeded, step 2 of 2"), "{out}");
    traffic.stop().await;
    // No rollout on a route: exit 1.
    let (code, _, err) = cli(&sy, &["status", "nope"]).await;
    assert_eq!(code, 1, "{err}");
}

/// A backend that accepts connections, reads what it is sent and never answers; its
/// connections are held until it is dropped.
struct Silent {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                held.spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        Silent { addr, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_canary_that_times_out_fails_even_when_retries_save_the_clients() {
    let (blue, green) = (Flip::start("blue").await, Flip::start("green").await);
    let silent = Silent::start().await;
    let marathon = Marathon::start().await;
    let port = free_port();
    let mut apps = shop(port, &blue, &green);
    // The canary has two tasks: one answers, one accepts and never answers. Each request the
    // silent one takes times out (100 ms) and is replayed on the other: every client gets 200.
    apps[1]["tasks"] = json!([
        task("/shop-green", "/shop-green.0", green.addr.port()),
        task("/shop-green", "/shop-green.1", silent.addr.port()),
    ]);
    apps[1]["instances"] = json!(2);
    apps[1]["labels"]["SWITCHYARD_0_RESPONSE_TIMEOUT"] = json!("100ms");
    marathon.set_apps(apps);
    let state = temp_dir("rollout-timeout-state");
    let sy = start("rollout-timeout", &marathon, &state);
    sy.wait_routes("three backends", |r| backends(r, port).len() == 3)
        .await;
    // Without the timeouts counted the canary's rate is 0 % and the hold passes it. Any 5xx
    // fails it: the silent task is ejected after a few timeouts, so they are few next to the
    // other task's answers. The traffic begins with the step, so its first timeouts are in it.
    let (status, body) = admin(
        &sy,
        "PUT",
        "/v1/routes/shop/rollout",
        r#"{"steps": [50, 100], "hold": "3s", "min_requests": 20, "max_5xx_rate": 0, "max_p99_ratio": 100}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let traffic = Traffic::start(port, 2);
    let routes = sy
        .wait_routes("the rollout ended", |r| rollout_of(r)["state"] != "running")
        .await;
    let rollout = rollout_of(&routes);
    assert_eq!(rollout["state"], "failed", "{rollout}");
    assert!(
        rollout["reason"].as_str().unwrap().contains("5xx rate"),
        "{rollout}"
    );
    sy.wait_routes("the canary at 0", |r| weight(r, "/shop-green") == Some(0))
        .await;
    let answers = traffic.stop().await;
    assert!(
        answers.contains_key(&(200, "green".into())),
        "the canary answered through its other task: {answers:?}"
    );
    // The silent task's timeouts are its 5xx in the metrics too.
    let silent_5xx = sy
        .metric(
            "switchyard_http_responses_total",
            &[&format!("127.0.0.1:{}", silent.addr.port()), "5xx"],
        )
        .await;
    assert!(silent_5xx >= 1.0, "{silent_5xx}");
}

#[tokio::test]
async fn a_canary_without_backends_fails_after_max_wait_instead_of_waiting_forever() {
    let (blue, green) = (Flip::start("blue").await, Flip::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    let mut apps = shop(port, &blue, &green);
    // The canary is deployed but none of its tasks runs: it can never answer a request.
    apps[1]["tasks"] = json!([]);
    apps[1]["instances"] = json!(0);
    marathon.set_apps(apps);
    let state = temp_dir("rollout-max-wait-state");
    let sy = start("rollout-max-wait", &marathon, &state);
    sy.wait_routes("both apps in the route", |r| {
        weight(r, "/shop-green").is_some() && weight(r, "/shop-blue").is_some()
    })
    .await;
    let traffic = Traffic::start(port, 1);
    let (status, body) = admin(
        &sy,
        "PUT",
        "/v1/routes/shop/rollout",
        r#"{"steps": [10, 100], "hold": "100ms", "max_wait": "600ms", "min_requests": 5}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let started: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(started["plan"]["max_wait_ms"], 600);
    let routes = sy
        .wait_routes("the rollout ended", |r| rollout_of(r)["state"] != "running")
        .await;
    let rollout = rollout_of(&routes);
    assert_eq!(rollout["state"], "failed", "{rollout}");
    let reason = rollout["reason"].as_str().unwrap();
    assert!(
        reason.contains("no verdict within max_wait 600ms"),
        "{reason}"
    );
    assert!(reason.contains("canary 0, baseline"), "{reason}");
    assert_eq!(rollout["last_verdict"]["outcome"], "fail");
    sy.wait_routes("the canary at 0", |r| weight(r, "/shop-green") == Some(0))
        .await;
    traffic.stop().await;
    assert_eq!(sy.log_lines("rollout failed").len(), 1);
}

/// The count of answers from `who` (any status).
fn answered_by(answers: &std::collections::BTreeMap<(u16, String), u64>, who: &str) -> u64 {
    answers
        .iter()
        .filter(|((_, w), _)| w == who)
        .map(|(_, n)| n)
        .sum()
}

fn weight_from(routes: &Value, app: &str) -> Option<String> {
    routes["routes"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == "shop")?["members"]
        .as_array()?
        .iter()
        .find(|m| m["app_id"] == app)?["weight_from"]
        .as_str()
        .map(Into::into)
}

#[tokio::test]
async fn after_a_restart_a_failed_canary_gets_no_request_from_the_first_table_on() {
    let (blue, green) = (Flip::start("blue").await, Flip::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    let apps = shop(port, &blue, &green);
    marathon.set_apps(apps.clone());
    // What an instance that failed the canary at step 2 left behind.
    let state = temp_dir("rollout-held-state");
    let record = json!({"version": 1, "rollouts": {"shop": {
        "state": "failed", "origin": "api", "canary": "/shop-green", "baseline": "/shop-blue",
        "step": 2, "share": 50, "plan": {"steps": [10, 50, 100], "hold": "1s"},
        "started_unix_ms": 1, "step_started_unix_ms": 1, "finished_unix_ms": 2,
        "reason": "canary 5xx rate 12.50% (25 of 200) is over the limit 1.00%",
        "label_key": null}}});
    std::fs::write(state.join("rollouts.json"), record.to_string()).unwrap();
    let sy = start("rollout-held", &marathon, &state);
    // Clients knock from before the first table on.
    let traffic = Traffic::start(port, 2);
    let first = sy
        .wait_routes("the route", |r| weight(r, "/shop-green").is_some())
        .await;
    assert_eq!(first["generation"], 1, "{first}");
    assert_eq!(weight(&first, "/shop-green"), Some(0), "{first}");
    assert_eq!(weight(&first, "/shop-blue"), Some(100), "{first}");
    assert_eq!(rollout_of(&first)["state"], "failed");
    wait_for("200 answers from the baseline", || {
        let n = answered_by(&traffic.answers(), "blue");
        async move { (n >= 200).then_some(()) }
    })
    .await;
    assert_eq!(answered_by(&traffic.answers(), "green"), 0);
    // The controller found the table as it wants it: it never had to set the weights.
    assert!(sy.log_lines("weight override set").is_empty());
    // A new deployment's labels (which clear the route's overrides) keep the canary at 0: the
    // labels would give it half.
    let (_, body) = sy.get("/v1/routes").await;
    let generation = serde_json::from_str::<Value>(&body).unwrap()["generation"]
        .as_u64()
        .unwrap();
    for (i, id) in ["/shop-blue", "/shop-green"].into_iter().enumerate() {
        let mut changed = apps[i].clone();
        changed["labels"]["SWITCHYARD_0_WEIGHT"] = json!("50");
        // Seen in /v1/routes: the services' edge settings.
        changed["labels"]["SWITCHYARD_0_RESPONSE_TIMEOUT"] = json!("29s");
        marathon.update_app(id, |a| *a = changed);
        marathon.send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": id}}));
    }
    let relabelled = sy
        .wait_routes("the new labels in the table", |r| {
            r["generation"].as_u64().unwrap() > generation
                && r.to_string()
                    .matches("\"response_timeout_ms\":29000")
                    .count()
                    == 2
        })
        .await;
    assert_eq!(weight(&relabelled, "/shop-green"), Some(0), "{relabelled}");
    assert_eq!(
        weight_from(&relabelled, "/shop-green").as_deref(),
        Some("override")
    );
    let before = answered_by(&traffic.answers(), "blue");
    wait_for("200 more answers from the baseline", || {
        let n = answered_by(&traffic.answers(), "blue");
        async move { (n >= before + 200).then_some(()) }
    })
    .await;
    let answers = traffic.stop().await;
    assert_eq!(answered_by(&answers, "green"), 0, "{answers:?}");
}

/// What `state_dir` records moves traffic at the next start: a directory its group or everyone
/// may write is refused before any listener opens; a `rollouts.json` that is not a regular file
/// (a FIFO here: reading it would block the start for ever) is logged and nothing resumed.
#[tokio::test]
async fn a_state_dir_others_may_write_is_refused_and_a_fifo_state_file_is_not_read() {
    let marathon = Marathon::start().await;
    let state = temp_dir("rollout-state-modes");
    let dir = temp_dir("rollout-state-modes-sy");
    let config = write_config(&dir, &marathon, &state);
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o775)).unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("is writable by its group"), "{err}");
    assert!(!err.contains("admin listening"), "{err}");

    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let fifo = state.join("rollouts.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let sy = Switchyard::launch(dir, &config, &[]);
    wait_for("ready despite the FIFO", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let unreadable = sy.log_lines("rollout state unreadable");
    assert!(
        unreadable.iter().any(|l| l.contains("not a file")),
        "{unreadable:?}"
    );
}

#[tokio::test]
async fn a_second_instance_on_the_same_state_dir_is_refused_at_start() {
    let marathon = Marathon::start().await;
    let state = temp_dir("rollout-shared-state");
    let _first = start("rollout-shared-1", &marathon, &state);
    let dir = temp_dir("rollout-shared-2");
    let config = write_config(&dir, &marathon, &state);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_for("the second instance to stop", || {
        let status = second.try_wait().unwrap();
        async move { status }
    })
    .await;
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(exited.code(), Some(1), "{err}");
    assert!(
        err.contains("is in use by another switchyard process"),
        "{err}"
    );
    assert!(err.contains("rollouts.lock"), "{err}");
    // It stopped before opening any listener.
    assert!(!err.contains("admin listening"), "{err}");
}
