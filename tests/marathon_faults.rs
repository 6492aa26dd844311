//! Fault injection on the Marathon side: answers of 500, garbage, a 50 MB body, a gzip body that
//! inflates past the snapshot limit (a decompression bomb) or is cut short, a 302 loop, an
//! event stream that drips a byte at a time, and Marathon gone for a minute. Through each, the
//! last good table keeps serving, the process stays up, and a change made meanwhile is picked up
//! once Marathon behaves again. Also: the DNS upstream down, and a certificate replaced by
//! garbage (in tls.rs).

mod support;

use serde_json::json;
use support::marathon::{Fault, Marathon, app, task};
use support::*;

fn config(marathon: &Marathon) -> String {
    format!(
        "[discovery]\nmarathon = [{:?}]\nbackoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\n\
         stream_idle_timeout = \"1s\"\nmax_snapshot_bytes = 8388608\n\
         [proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\ndrain_timeout = \"1s\"\n",
        marathon.url()
    )
}

fn web(port: u16, backends: &[&Backend]) -> serde_json::Value {
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, b)| task("/web", &format!("web.{i}"), b.port()))
        .collect();
    app("/web", port, json!({"HAPROXY_0_MODE": "http"}), tasks)
}

#[tokio::test]
async fn a_misbehaving_marathon_never_takes_the_table_down() {
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    let marathon = Marathon::start().await;
    marathon.set_apps(vec![web(port, &[&one])]);
    let mut sy = Switchyard::start("marathon-faults", &config(&marathon));
    sy.wait_routes("served", |r| backends(r, port) == vec![one.addr])
        .await;
    let mut current = vec![&one];
    for fault in [
        Fault::ServerError,
        Fault::Garbage,
        Fault::Huge,
        Fault::RedirectLoop,
        Fault::SlowDrip,
        Fault::GzipBomb,
        Fault::GzipTruncated,
    ] {
        let seen = marathon.requests().len();
        marathon.fault(Some(fault));
        // Switchyard keeps trying against the fault ...
        wait_for(&format!("retries under {fault:?}"), || async {
            (marathon.requests().len() >= seen + 3).then_some(())
        })
        .await;
        // ... while serving from its last good table.
        let expected: Vec<String> = current.iter().map(|b| b.name.clone()).collect();
        assert_eq!(answers(port, 4).await, expected, "under {fault:?}");
        assert!(sy.alive(), "alive under {fault:?}");
        // A change made during the fault arrives once Marathon behaves.
        current = if current.len() == 1 {
            vec![&one, &two]
        } else {
            vec![&one]
        };
        marathon.set_apps(vec![web(port, &current)]);
        marathon.fault(None);
        let want: Vec<_> = {
            let mut v: Vec<_> = current.iter().map(|b| b.addr).collect();
            v.sort();
            v
        };
        sy.wait_routes(&format!("recovered from {fault:?}"), |r| {
            backends(r, port) == want
        })
        .await;
    }
    assert!(
        sy.metric("switchyard_source_errors_total", &[]).await >= 7.0,
        "every fault was counted"
    );
    assert!(
        sy.metric("switchyard_rejected_inputs_total", &["snapshot"])
            .await
            >= 1.0,
        "the garbage snapshot was counted as rejected"
    );
}

#[tokio::test]
async fn marathon_gone_for_a_minute_changes_nothing_and_its_return_is_picked_up() {
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    let marathon = Marathon::start().await;
    marathon.set_apps(vec![web(port, &[&one])]);
    let mut sy = Switchyard::start("marathon-gone", &config(&marathon));
    sy.wait_routes("served", |r| backends(r, port) == vec![one.addr])
        .await;
    marathon.fault(Some(Fault::Gone));
    let gone = std::time::Instant::now();
    while gone.elapsed() < std::time::Duration::from_secs(60) {
        assert_eq!(answers(port, 2).await, vec!["one"]);
        assert!(sy.alive());
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(sy.metric("switchyard_source_connected", &[]).await, 0.0);
    marathon.set_apps(vec![web(port, &[&one, &two])]);
    marathon.fault(None);
    sy.wait_routes("back", |r| backends(r, port).len() == 2)
        .await;
    assert_eq!(answers(port, 6).await, vec!["one", "two"]);
}

/// An event that never ends (`data:` lines, each short, and never the blank line) is refused
/// once it passes `discovery.max_event_bytes`: the stream is re-opened and the table kept. The
/// lines do not count as life either: only an event's end or a keep-alive does.
#[tokio::test]
async fn an_event_that_never_ends_is_refused_at_max_event_bytes() {
    let one = Backend::start("one").await;
    let port = free_port();
    let marathon = Marathon::start().await;
    marathon.set_apps(vec![web(port, &[&one])]);
    let toml = config(&marathon).replace(
        "stream_idle_timeout = \"1s\"",
        "stream_idle_timeout = \"1h\"\nmax_event_bytes = 4096",
    );
    let sy = Switchyard::start("marathon-endless-event", &toml);
    sy.wait_routes("served", |r| backends(r, port) == vec![one.addr])
        .await;
    let streams = || {
        marathon
            .requests()
            .iter()
            .filter(|r| r.target.starts_with("/v2/events"))
            .count()
    };
    let opened = streams();
    wait_for("the stream open", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;
    // 64 lines of 100 bytes: each far under the bound, together past it.
    let line = format!("data: {}\r\n", "x".repeat(94));
    marathon.send_raw(format!("event: status_update_event\r\n{}", line.repeat(64)).as_bytes());
    wait_for("the stream re-opened", || async {
        (streams() > opened).then_some(())
    })
    .await;
    assert!(
        sy.metric("switchyard_source_malformed_events_total", &[])
            .await
            >= 1.0
    );
    assert_eq!(answers(port, 2).await, vec!["one"], "the table is kept");
    wait_for("the reason logged", || async {
        (!sy.log_lines("longer than discovery.max_event_bytes")
            .is_empty())
        .then_some(())
    })
    .await;
}

/// Lines that never make an event do not keep a stream alive: after `stream_idle_timeout`
/// without an event's end or a keep-alive, it is re-opened.
#[tokio::test]
async fn lines_without_an_event_end_do_not_keep_the_stream_alive() {
    let one = Backend::start("one").await;
    let port = free_port();
    let marathon = Marathon::start().await;
    marathon.set_apps(vec![web(port, &[&one])]);
    let sy = Switchyard::start("marathon-lines-no-event", &config(&marathon));
    sy.wait_routes("served", |r| backends(r, port) == vec![one.addr])
        .await;
    let streams = || {
        marathon
            .requests()
            .iter()
            .filter(|r| r.target.starts_with("/v2/events"))
            .count()
    };
    let opened = streams();
    // A comment line every 100 ms (far more often than the 1 s idle timeout): complete lines,
    // never an event's end.
    let stand_in = marathon.clone();
    let drip = tokio::spawn(async move {
        loop {
            stand_in.send_raw(b": still here\r\n");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
    wait_for("the idle stream re-opened", || async {
        (streams() > opened).then_some(())
    })
    .await;
    drip.abort();
    wait_for("the reason logged", || async {
        (!sy.log_lines("no complete event or keep-alive").is_empty()).then_some(())
    })
    .await;
    assert_eq!(answers(port, 2).await, vec!["one"], "the table is kept");
}

/// Malformed events, each with its own (peer-chosen, long) name: every one is counted, but the
/// log gets a bounded number of bounded lines, and the table is kept.
#[tokio::test]
async fn a_flood_of_distinct_malformed_events_is_counted_not_logged_line_by_line() {
    let one = Backend::start("one").await;
    let port = free_port();
    let marathon = Marathon::start().await;
    marathon.set_apps(vec![web(port, &[&one])]);
    let sy = Switchyard::start("marathon-malformed-flood", &config(&marathon));
    sy.wait_routes("served", |r| backends(r, port) == vec![one.addr])
        .await;
    wait_for("the stream open", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;
    let name = "n".repeat(64 * 1024);
    let mut flood = String::new();
    for i in 0..300 {
        // No eventType: malformed.
        flood.push_str(&format!("event: {i}{name}\r\ndata: {{}}\r\n\r\n"));
    }
    marathon.send_raw(flood.as_bytes());
    wait_for("every malformed event counted", || async {
        let n = sy
            .metric("switchyard_rejected_inputs_total", &["event"])
            .await;
        (n >= 300.0).then_some(())
    })
    .await;
    let lines = sy.log_lines("rejected event");
    assert!(
        (1..=20).contains(&lines.len()),
        "{} warning lines for 300 rejections",
        lines.len()
    );
    assert!(
        lines.iter().all(|l| l.len() < 2048),
        "a peer-chosen name is logged cut short"
    );
    assert_eq!(answers(port, 2).await, vec!["one"], "the table is kept");
}

/// Whether `/v1/routes` lists a held read among its problems.
fn held(routes: &serde_json::Value) -> bool {
    routes["problems"].as_array().is_some_and(|p| {
        p.iter()
            .any(|p| p["reason"].as_str().unwrap_or("").contains("held until"))
    })
}

/// A Marathon that answers `{"apps": []}` (a leader just after a failover) does not empty the
/// table: that read is held and reported, and a second read decides — the apps back, or the
/// removal confirmed. An app scaled to zero, or one app deleted among several, applies at once.
#[tokio::test]
async fn an_answer_that_removes_every_app_waits_for_a_second_read() {
    let one = Backend::start("one").await;
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let apps = |ports: &[u16]| -> Vec<serde_json::Value> {
        ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let id = format!("/app{i}");
                app(
                    &id,
                    *port,
                    json!({}),
                    vec![task(&id, &format!("app{i}.1"), one.port())],
                )
            })
            .collect()
    };
    let marathon = Marathon::start().await;
    marathon.set_apps(apps(&ports));
    // A confirm delay far past the test's deadline: only a second read (SIGHUP) ends a hold.
    let toml = config(&marathon).replace(
        "stream_idle_timeout = \"1s\"",
        "stream_idle_timeout = \"1h\"\nremoval_confirm_delay = \"60s\"",
    );
    let sy = Switchyard::start("marathon-held-read", &toml);
    sy.wait_routes("served", |r| ports.iter().all(|p| has_service(r, *p)))
        .await;
    wait_for("the stream open", || async {
        (marathon.open_streams() == 1).then_some(())
    })
    .await;
    let resync = || {
        marathon.send_event(json!({"eventType": "group_change_success", "groupId": "/"}));
    };

    // Scaled to zero: the app stays, without tasks; deleted: one of four. Both at once.
    marathon.update_app("/app0", |a| a["tasks"] = json!([]));
    marathon.remove_app("/app1");
    resync();
    sy.wait_routes("scale to zero and one deletion applied", |r| {
        backends(r, ports[0]).is_empty() && !has_service(r, ports[1])
    })
    .await;
    assert_eq!(
        sy.metric("switchyard_source_snapshots_held_total", &[])
            .await,
        0.0
    );

    // Everything gone at once: held, reported, the table kept ...
    marathon.set_apps(vec![]);
    resync();
    let routes = sy.wait_routes("the read held", held).await;
    assert!(has_service(&routes, ports[2]) && has_service(&routes, ports[3]));
    assert_eq!(sy.metric("switchyard_source_snapshot_held", &[]).await, 1.0);
    assert_eq!(
        sy.metric("switchyard_source_snapshots_held_total", &[])
            .await,
        1.0
    );
    assert_eq!(answers(ports[2], 2).await, vec!["one"]);
    let (status, body) = sy.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("held until"), "{body}");
    // ... until a second read has the apps back: kept, and the problem gone.
    marathon.set_apps({
        let mut back = apps(&ports);
        back[0]["tasks"] = json!([]);
        back.remove(1);
        back
    });
    sy.signal("HUP");
    let routes = sy.wait_routes("the hold over", |r| !held(r)).await;
    assert!(has_service(&routes, ports[2]) && has_service(&routes, ports[3]));
    assert_eq!(sy.metric("switchyard_source_snapshot_held", &[]).await, 0.0);

    // Everything gone again, and a second read says the same: applied.
    marathon.set_apps(vec![]);
    resync();
    sy.wait_routes("held again", held).await;
    sy.signal("HUP");
    sy.wait_routes("the removal confirmed", |r| {
        !held(r) && ports.iter().all(|p| !has_service(r, *p))
    })
    .await;
    assert_eq!(
        sy.metric("switchyard_source_snapshots_held_total", &[])
            .await,
        2.0
    );
    assert_eq!(
        sy.log_lines("held until a second read").len(),
        2,
        "logged once per hold"
    );
}
