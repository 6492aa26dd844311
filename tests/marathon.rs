//! End to end against the Marathon stand-in: switchyard as a process, real backends, real
//! clients on loopback. The lifecycle, health, resync and malformed-event scenarios also run
//! through a relay (stand-in → switchyard with `[relay]` → switchyard): `*_through_a_relay`.

mod support;

use serde_json::json;
use support::marathon::{Marathon, app, status_update, task};
use support::*;

/// App `/a` in group `external` with one task, on `backend`.
fn external_app(port: u16, backend: &Backend) -> serde_json::Value {
    app(
        "/a",
        port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/a", "a.1", backend.port())],
    )
}

fn marathon_config(urls: &[String], extra: &str) -> String {
    let urls = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[discovery]\nmarathon = [{urls}]\nbackoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\n\
         {extra}\n[proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\ndrain_timeout = \"2s\"\n"
    )
}

/// How the instance under test follows the stand-in: directly, or through a relay (another
/// switchyard with `[relay]` that serves no ports of its own). The relay must be faithful, so the
/// scenarios below run both ways.
#[derive(Clone, Copy)]
enum Via {
    Direct,
    Relay,
}

/// The instance under test and, through a relay, the relay (the one that reads Marathon).
struct Under {
    sy: Switchyard,
    relay: Option<Switchyard>,
}

fn start(name: &str, urls: &[String], extra: &str, via: Via) -> Under {
    let config = marathon_config(urls, extra);
    match via {
        Via::Direct => Under {
            sy: Switchyard::start(name, &config),
            relay: None,
        },
        Via::Relay => {
            let port = free_port();
            let relay_config = format!(
                "{}[relay]\nlisten = \"127.0.0.1:{port}\"\n",
                config.replace("group = \"external\"", "group = \"relay-only\"")
            );
            let relay = Switchyard::start(&format!("{name}-relay"), &relay_config);
            let relay_url = format!("http://127.0.0.1:{port}");
            Under {
                sy: Switchyard::start(name, &marathon_config(&[relay_url], "")),
                relay: Some(relay),
            }
        }
    }
}

async fn lifecycle(via: Via) {
    let marathon = Marathon::start().await;
    let Under { sy, relay } = start("lifecycle", &[marathon.url()], "", via);
    wait_for("subscribed", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;
    match via {
        Via::Direct => assert_eq!(sy.get("/readyz").await.0, 200),
        // The stream Marathon sees is the relay's; the follower syncs from the relay after it.
        Via::Relay => {
            wait_for("the follower synced through the relay", || async {
                (sy.get("/readyz").await.0 == 200).then_some(())
            })
            .await
        }
    }

    let (b1, b2, b3) = (
        Backend::start("one").await,
        Backend::start("two").await,
        Backend::start("three").await,
    );
    let port = free_port();
    let labels = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "http"});

    // Deploy: Marathon posts the app, then its first task runs.
    marathon.set_apps(vec![app(
        "/web",
        port,
        labels.clone(),
        vec![task("/web", "web.1", b1.port())],
    )]);
    marathon.send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/web"}}));
    sy.wait_routes("web deployed", |r| backends(r, port) == vec![b1.addr])
        .await;
    assert_eq!(answers(port, 3).await, vec!["one"]);

    // Scale up: task events alone, applied incrementally (no re-fetch needed).
    marathon.send_event(status_update("/web", "web.2", b2.port(), "TASK_STAGING"));
    marathon.send_event(status_update("/web", "web.2", b2.port(), "TASK_RUNNING"));
    marathon.send_event(status_update("/web", "web.3", b3.port(), "TASK_RUNNING"));
    sy.wait_routes("scaled to three", |r| backends(r, port).len() == 3)
        .await;
    assert_eq!(answers(port, 6).await, vec!["one", "three", "two"]);

    // A task being killed leaves the table at once; a finished one too.
    marathon.send_event(status_update("/web", "web.1", b1.port(), "TASK_KILLING"));
    marathon.send_event(status_update("/web", "web.3", b3.port(), "TASK_FINISHED"));
    sy.wait_routes("scaled down", |r| backends(r, port) == vec![b2.addr])
        .await;
    assert_eq!(answers(port, 4).await, vec!["two"]);

    // Delete: the service port closes.
    marathon.remove_app("/web");
    marathon.send_event(json!({"eventType": "app_terminated_event", "appId": "/web"}));
    sy.wait_routes("web deleted", |r| !has_service(r, port))
        .await;
    wait_for("port closed", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let upstream = relay.as_ref().unwrap_or(&sy);
    assert!(
        upstream
            .metric("switchyard_source_events_total", &["status_update_event"])
            .await
            >= 5.0
    );
}

async fn health(via: Via) {
    let marathon = Marathon::start().await;
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    let mut web = app(
        "/web",
        port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![
            task("/web", "web.1", b1.port()),
            task("/web", "web.2", b2.port()),
        ],
    );
    web["healthChecks"] = json!([{"protocol": "MESOS_HTTP", "path": "/"}]);
    web["tasks"][0]["healthCheckResults"] = json!([{"alive": true, "taskId": "web.1"}]);
    marathon.set_apps(vec![web]);
    let Under { sy, relay: _relay } = start("health", &[marathon.url()], "", via);
    // web.2 has no health result yet: not routed.
    let routes = sy
        .wait_routes("only the healthy task", |r| {
            backends(r, port) == vec![b1.addr]
        })
        .await;
    // Operators see why a task is held back.
    assert_eq!(
        routes["services"][0]["held_back"],
        serde_json::json!([{"task_id": "web.2", "reason": "no health result yet"}])
    );

    marathon.send_event(
        json!({"eventType": "health_status_changed_event", "appId": "/web",
        "taskId": "web.2", "version": "v", "alive": true, "timestamp": "t"}),
    );
    sy.wait_routes("web.2 healthy", |r| backends(r, port).len() == 2)
        .await;
    marathon.send_event(
        json!({"eventType": "health_status_changed_event", "appId": "/web",
        "taskId": "web.1", "version": "v", "alive": false, "timestamp": "t"}),
    );
    sy.wait_routes("web.1 unhealthy", |r| backends(r, port) == vec![b2.addr])
        .await;
    assert_eq!(answers(port, 4).await, vec!["two"]);
}

#[tokio::test]
async fn follows_the_standby_redirect_with_filters_and_auth() {
    let leader = Marathon::start().await;
    let standby = Marathon::start().await;
    standby.redirect_to(&leader);
    let b1 = Backend::start("one").await;
    let port = free_port();
    leader.set_apps(vec![external_app(port, &b1)]);
    let down = format!("http://127.0.0.1:{}", free_port()); // nothing listens: tried, then skipped
    // The leader is listed too: credentials go only to the configured hosts, never to wherever
    // a redirect points (listed after the standby, so the standby is asked first).
    let config = marathon_config(
        &[down, standby.url(), leader.url()],
        "basic_auth = \"ops:secret\"",
    );
    let sy = Switchyard::start("redirect", &config);
    sy.wait_routes("routes from the leader", |r| {
        backends(r, port) == vec![b1.addr]
    })
    .await;
    assert_eq!(answers(port, 2).await, vec!["one"]);

    let events: Vec<_> = leader
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with("/v2/events"))
        .collect();
    assert!(!events.is_empty(), "the stream was opened at the leader");
    let e = &events[0];
    assert_eq!(e.accept.as_deref(), Some("text/event-stream"));
    assert!(e.target.contains("event_type=status_update_event"));
    assert!(e.target.contains("event_type=api_post_event"));
    assert_eq!(e.authorization.as_deref(), Some("Basic b3BzOnNlY3JldA=="));
    let snapshot = leader
        .requests()
        .into_iter()
        .find(|r| r.target.starts_with("/v2/apps?"))
        .unwrap();
    assert_eq!(
        snapshot.target,
        "/v2/apps?embed=apps.tasks&embed=apps.deployments&embed=apps.readiness"
    );
    // The snapshot is asked for (and was served) gzip-compressed; the stream is not.
    assert_eq!(snapshot.accept_encoding.as_deref(), Some("gzip"));
    assert_eq!(e.accept_encoding, None);
}

/// A redirect to a Marathon that is not in `discovery.marathon` is followed without the
/// credentials: they go only to the hosts the operator listed, never to wherever a redirect
/// points.
#[tokio::test]
async fn credentials_do_not_follow_a_redirect_to_an_unlisted_host() {
    let leader = Marathon::start().await;
    let standby = Marathon::start().await;
    standby.redirect_to(&leader);
    let b1 = Backend::start("one").await;
    let port = free_port();
    leader.set_apps(vec![external_app(port, &b1)]);
    let config = marathon_config(&[standby.url()], "basic_auth = \"ops:secret\"");
    let sy = Switchyard::start("redirect-unlisted", &config);
    sy.wait_routes("routes from the unlisted leader", |r| {
        backends(r, port) == vec![b1.addr]
    })
    .await;
    let at_leader = leader.requests();
    assert!(!at_leader.is_empty());
    assert!(
        at_leader.iter().all(|r| r.authorization.is_none()),
        "credentials reached a host nobody listed: {:?}",
        at_leader
            .iter()
            .map(|r| &r.authorization)
            .collect::<Vec<_>>()
    );
    assert!(
        standby
            .requests()
            .iter()
            .any(|r| r.authorization.as_deref() == Some("Basic b3BzOnNlY3JldA==")),
        "the listed host got them"
    );
}

async fn resync(via: Via) {
    let marathon = Marathon::start().await;
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    let group = json!({"HAPROXY_GROUP": "external"});
    marathon.set_apps(vec![app(
        "/a",
        port,
        group.clone(),
        vec![task("/a", "a.1", b1.port())],
    )]);
    let Under { sy, relay: _relay } = start("resync", &[marathon.url()], "", via);
    sy.wait_routes("initial", |r| backends(r, port) == vec![b1.addr])
        .await;
    wait_for("subscribed", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;

    // The stream drops; while it is down the app changes and no event is ever sent for it.
    marathon.drop_streams();
    marathon.update_app("/a", |a| a["tasks"] = json!([task("/a", "a.2", b2.port())]));
    sy.wait_routes("resynced after reconnect", |r| {
        backends(r, port) == vec![b2.addr]
    })
    .await;
    wait_for("resubscribed", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;
    assert_eq!(answers(port, 3).await, vec!["two"]);
}

#[tokio::test]
async fn sighup_resyncs() {
    let marathon = Marathon::start().await;
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    marathon.set_apps(vec![external_app(port, &b1)]);
    let sy = Switchyard::start("sighup", &marathon_config(&[marathon.url()], ""));
    sy.wait_routes("initial", |r| backends(r, port) == vec![b1.addr])
        .await;
    marathon.update_app("/a", |a| a["tasks"] = json!([task("/a", "a.2", b2.port())]));
    sy.signal("HUP");
    sy.wait_routes("resynced on SIGHUP", |r| backends(r, port) == vec![b2.addr])
        .await;
}

async fn malformed(via: Via) {
    let marathon = Marathon::start().await;
    let (b1, b2, b3) = (
        Backend::start("one").await,
        Backend::start("two").await,
        Backend::start("three").await,
    );
    let port = free_port();
    marathon.set_apps(vec![external_app(port, &b1)]);
    let Under { mut sy, relay } = start("malformed", &[marathon.url()], "", via);
    sy.wait_routes("initial", |r| backends(r, port) == vec![b1.addr])
        .await;
    wait_for("subscribed", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;

    // Keep-alive newlines, garbage, wrong field types, an unknown event type.
    marathon.send_raw(b"\n\n\r\n");
    marathon.send_raw(b"event: status_update_event\r\ndata: {not json\r\n\r\n");
    marathon.send_raw(b"event: status_update_event\r\ndata: {\"eventType\":\"status_update_event\",\"appId\":7,\"taskId\":[]}\r\n\r\n");
    marathon.send_event(json!({"eventType": "framework_message_event", "message": "hi"}));
    // Two objects in one data field, separated by \r\n, as Marathon sends them.
    let two = format!(
        "event: status_update_event\r\ndata: {}\r\n{}\r\n\r\n",
        status_update("/a", "a.2", b2.port(), "TASK_RUNNING"),
        status_update("/a", "a.3", b3.port(), "TASK_RUNNING"),
    );
    marathon.send_raw(two.as_bytes());
    sy.wait_routes("both objects applied", |r| backends(r, port).len() == 3)
        .await;
    let upstream = relay.as_ref().unwrap_or(&sy);
    assert!(
        upstream
            .metric("switchyard_source_malformed_events_total", &[])
            .await
            >= 2.0
    );
    assert!(!upstream.log_lines("rejected event").is_empty());
    assert!(sy.alive());
    assert_eq!(answers(port, 6).await, vec!["one", "three", "two"]);
}

#[tokio::test]
async fn port_conflicts_and_bad_labels_skip_only_the_offender() {
    let marathon = Marathon::start().await;
    let (b1, b2, b3) = (
        Backend::start("one").await,
        Backend::start("two").await,
        Backend::start("three").await,
    );
    let (shared, taken, own, forged) = (free_port(), free_port(), free_port(), free_port());
    const FORGED: &str = "/x\nERROR injected line";
    let occupied = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();
    let g = || json!({"HAPROXY_GROUP": "external"});
    marathon.set_apps(vec![
        app("/a", shared, g(), vec![task("/a", "a.1", b1.port())]),
        app("/b", shared, g(), vec![task("/b", "b.1", b2.port())]),
        app("/c", own, g(), vec![task("/c", "c.1", b3.port())]),
        app("/d", taken, g(), vec![task("/d", "d.1", b3.port())]),
        app(
            "/e",
            free_port(),
            json!({"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "quic"}),
            vec![],
        ),
        json!({"id": "/broken", "labels": {"HAPROXY_GROUP": 5}}),
        // An id Marathon would never send, written to forge a log line of its own.
        app(FORGED, forged, g(), vec![task(FORGED, "f.1", b3.port())]),
    ]);
    let extra = format!("[http]\nlisten = [\"127.0.0.1:{own}\"]\n");
    let config = marathon_config(&[marathon.url()], "") + &extra;
    let sy = Switchyard::start("conflicts", &config);
    let routes = sy
        .wait_routes("table", |r| has_service(r, shared) && has_service(r, taken))
        .await;
    assert_eq!(
        backends(&routes, shared),
        vec![b1.addr],
        "/a wins the shared port"
    );
    assert!(
        !has_service(&routes, own),
        "switchyard's own port is refused"
    );
    let problems = routes["problems"].to_string();
    assert!(problems.contains("already taken by /a:0"), "{problems}");
    assert!(problems.contains("switchyard's own listener"), "{problems}");
    assert!(problems.contains("HAPROXY_0_MODE"), "{problems}");
    let taken_service = routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == "/d")
        .unwrap()
        .clone();
    assert!(
        taken_service["listener"]
            .as_str()
            .unwrap()
            .starts_with("bind failed")
    );
    assert_eq!(answers(shared, 3).await, vec!["one"]);
    // Each problem is logged once with its app id, however often the table is rebuilt.
    marathon.send_event(status_update("/a", "a.9", b1.port(), "TASK_RUNNING"));
    sy.wait_routes("rebuilt", |r| r["generation"].as_u64() >= Some(2))
        .await;
    assert_eq!(sy.log_lines("already taken by /a:0").len(), 1);
    assert_eq!(sy.log_lines("app_id=/broken").len(), 1);
    assert!(
        !has_service(&routes, forged),
        "an id off Marathon's rule is refused"
    );
    let injected = sy.log_lines("injected line");
    assert_eq!(injected.len(), 1, "{injected:?}");
    assert!(
        injected[0].contains("app_id=/x\\nERROR injected line"),
        "the line feed is escaped, not written: {injected:?}"
    );
    assert_eq!(sy.log_lines("cannot bind service port").len(), 1);
    assert!(
        sy.metric("switchyard_rejected_inputs_total", &["kind=\"app\""])
            .await
            >= 1.0
    );
    assert!(
        sy.metric("switchyard_rejected_inputs_total", &["kind=\"bind\""])
            .await
            >= 1.0
    );
    drop(occupied);
}

#[tokio::test]
async fn an_unreachable_marathon_at_start_is_retried_not_fatal() {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut sy = Switchyard::start(
        "unreachable",
        &marathon_config(&[format!("http://{addr}")], ""),
    );
    let (status, body) = sy.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(sy.alive());
    let marathon = Marathon::start_on(addr).await;
    let b1 = Backend::start("one").await;
    let port = free_port();
    marathon.set_apps(vec![external_app(port, &b1)]);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    sy.wait_routes("routes", |r| backends(r, port) == vec![b1.addr])
        .await;
    assert!(sy.metric("switchyard_source_connected", &[]).await == 1.0);
}

#[tokio::test]
async fn deploy_scale_up_scale_down_kill_and_delete() {
    lifecycle(Via::Direct).await;
}

#[tokio::test]
async fn deploy_scale_up_scale_down_kill_and_delete_through_a_relay() {
    lifecycle(Via::Relay).await;
}

#[tokio::test]
async fn unhealthy_and_unchecked_tasks_get_no_traffic() {
    health(Via::Direct).await;
}

#[tokio::test]
async fn unhealthy_and_unchecked_tasks_get_no_traffic_through_a_relay() {
    health(Via::Relay).await;
}

#[tokio::test]
async fn a_change_missed_while_disconnected_is_picked_up_by_the_resync() {
    resync(Via::Direct).await;
}

#[tokio::test]
async fn a_change_missed_while_disconnected_is_picked_up_through_a_relay() {
    resync(Via::Relay).await;
}

#[tokio::test]
async fn malformed_and_quirky_events_are_skipped_and_the_rest_applies() {
    malformed(Via::Direct).await;
}

#[tokio::test]
async fn malformed_and_quirky_events_are_skipped_and_the_rest_applies_through_a_relay() {
    malformed(Via::Relay).await;
}

/// The source says it is connected before it hands over each full read it took — the first
/// snapshot, each periodic resync, and the first snapshot after a reconnection — never after
/// it: a relay serving a model while its source reads as not connected takes that for a loss
/// (`relay::Relay::observe`), so a read must never be applied ahead of its "connected".
#[tokio::test]
async fn the_source_says_connected_before_each_full_read_it_hands_over() {
    use switchyard::cluster::ClusterUpdate;
    use switchyard::discovery::SourceEvent;
    use switchyard::discovery::marathon::MarathonSource;
    use switchyard::discovery::marathon::client::{BaseUrl, Client};

    let marathon = Marathon::start().await;
    marathon.set_apps(vec![app(
        "/a",
        10_000,
        json!({}),
        vec![task("/a", "a.1", 9)],
    )]);
    let config = switchyard::config::Config::parse(
        &format!(
            "[discovery]\nmarathon = [{:?}]\nbackoff_initial = \"50ms\"\nbackoff_max = \"100ms\"\n",
            marathon.url()
        ),
        std::path::Path::new("."),
    )
    .unwrap();
    let mut settings = config.marathon_settings();
    settings.resync_interval = std::time::Duration::from_millis(200);
    settings.resync_jitter = std::time::Duration::ZERO;
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let (_refetch, refetch) = tokio::sync::mpsc::channel(1);
    let source = MarathonSource {
        urls: vec![BaseUrl::parse(&marathon.url()).unwrap()],
        client: Client::new(
            None,
            None,
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(5),
        ),
        config: settings,
        events,
        refetch,
        resync: Default::default(),
        metrics: std::sync::Arc::new(switchyard::metrics::Metrics::new()),
    };
    let running = tokio::spawn(source.run());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let (mut connected, mut snapshots, mut reconnected) = (false, 0, false);
    while snapshots < 6 || !reconnected {
        let event = tokio::time::timeout_at(deadline, received.recv())
            .await
            .expect("six snapshots and a reconnection within 20 s")
            .expect("the source runs");
        match event {
            SourceEvent::Connected(up) => {
                reconnected |= up && snapshots > 0 && !connected;
                connected = up;
            }
            SourceEvent::Update(ClusterUpdate::Snapshot(_)) => {
                assert!(
                    connected,
                    "snapshot {} handed over before the source said connected",
                    snapshots + 1
                );
                snapshots += 1;
                // Halfway, the stream drops: the next session's snapshot must come after its
                // own "connected" again.
                if snapshots == 3 {
                    marathon.drop_streams();
                }
            }
            _ => {}
        }
    }
    assert!(
        reconnected,
        "the stream was dropped and the source reconnected"
    );
    running.abort();
}
