//! The relay end to end: Marathon stand-in → switchyard with `[relay]` → switchyard following the
//! relay as if it were Marathon. The follower must hold what the relay holds (same table hash,
//! same backends) through deploys, scaling, health changes, label changes and deletes; keep its
//! table while the relay has lost Marathon; never go back to an older table; and the relay must
//! refuse to serve before its first sync, cut a subscriber that stops reading, and ask for its
//! token.

mod support;

use std::net::SocketAddr;

use serde_json::{Value, json};
use support::marathon::{Fault, Marathon, app, status_update, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An instance of group `external` following `urls`, its services bound on `bind`, with the
/// relay on `relay` (a port) when given, and more `[discovery]` keys.
fn config(urls: &[String], bind: &str, relay: Option<u16>, extra: &str) -> String {
    let urls = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let relay = relay.map_or(String::new(), |port| {
        format!("[relay]\nlisten = \"127.0.0.1:{port}\"\n")
    });
    format!(
        "[discovery]\nmarathon = [{urls}]\nbackoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\n\
         resync_jitter = \"100ms\"\n{extra}\n\
         [proxy]\ngroup = \"external\"\nbind = \"{bind}\"\ndrain_timeout = \"1s\"\n{relay}"
    )
}

fn hash(routes: &Value) -> String {
    routes["table_hash"].as_str().unwrap().to_string()
}

/// Backends of the service on `port` as (port) numbers: the follower binds another address.
fn backend_ports(routes: &Value, port: u16) -> Vec<u16> {
    backends(routes, port)
        .iter()
        .map(SocketAddr::port)
        .collect()
}

/// Waits until the follower's table satisfies `check` and its hash is the relay's; returns the
/// follower's routes.
async fn agree(
    relay: &Switchyard,
    follower: &Switchyard,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, || async {
        let (r, f) = (relay.routes().await, follower.routes().await);
        (hash(&r) == hash(&f) && check(&f)).then_some(f)
    })
    .await
}

struct Tier {
    marathon: Marathon,
    relay: Switchyard,
    relay_url: String,
    follower: Switchyard,
}

/// Marathon with `apps`, a relay following it, and a follower of the relay.
async fn tier(name: &str, apps: Vec<Value>, relay_extra: &str, follower_extra: &str) -> Tier {
    let marathon = Marathon::start().await;
    marathon.set_apps(apps);
    let relay_port = free_port();
    let relay = Switchyard::start(
        &format!("{name}-relay"),
        &format!(
            "{}{relay_extra}",
            config(&[marathon.url()], "127.0.0.1", Some(relay_port), "")
        ),
    );
    let relay_url = format!("http://127.0.0.1:{relay_port}");
    let follower = Switchyard::start(
        &format!("{name}-follower"),
        &config(
            std::slice::from_ref(&relay_url),
            "127.0.0.2",
            None,
            follower_extra,
        ),
    );
    Tier {
        marathon,
        relay,
        relay_url,
        follower,
    }
}

fn relay_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test]
async fn a_follower_of_a_relay_holds_what_the_relay_holds_through_every_change() {
    let (b1, b2, b3) = (
        Backend::start("one").await,
        Backend::start("two").await,
        Backend::start("three").await,
    );
    let (web_port, api_port) = (free_port(), free_port());
    let group = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_MODE": "http"});
    let mut api = app(
        "/api",
        api_port,
        group.clone(),
        vec![
            task("/api", "api.1", b1.port()),
            task("/api", "api.2", b2.port()),
        ],
    );
    api["healthChecks"] =
        json!([{"protocol": "MESOS_HTTP", "path": "/health", "intervalSeconds": 5}]);
    api["tasks"][0]["healthCheckResults"] = json!([{"alive": true, "taskId": "api.1"}]);
    api["readinessCheckResults"] = json!([{"taskId": "api.2", "ready": false}]);
    let t = tier(
        "faithful",
        vec![
            app(
                "/web",
                web_port,
                group.clone(),
                vec![task("/web", "web.1", b1.port())],
            ),
            api,
        ],
        "",
        "",
    )
    .await;
    let routes = agree(&t.relay, &t.follower, "first sync through the relay", |f| {
        has_service(f, web_port) && has_service(f, api_port)
    })
    .await;
    assert_eq!(backend_ports(&routes, web_port), vec![b1.port()]);
    // Health and readiness came through: only the healthy, ready task is routed.
    assert_eq!(backend_ports(&routes, api_port), vec![b1.port()]);
    assert_eq!(t.follower.get("/readyz").await.0, 200);

    // Scale up by task events only: the relay applies them, its followers re-fetch the app.
    let before = hash(&routes);
    t.marathon.update_app("/web", |a| {
        a["tasks"] = json!([
            task("/web", "web.1", b1.port()),
            task("/web", "web.2", b2.port())
        ])
    });
    t.marathon
        .send_event(status_update("/web", "web.2", b2.port(), "TASK_RUNNING"));
    let routes = agree(&t.relay, &t.follower, "scaled up", |f| {
        backend_ports(f, web_port).len() == 2
    })
    .await;
    assert_ne!(hash(&routes), before);
    let mut both = vec![b1.port(), b2.port()];
    both.sort_unstable();
    assert_eq!(backend_ports(&routes, web_port), both);

    // A health change.
    t.marathon.send_event(
        json!({"eventType": "health_status_changed_event", "appId": "/api",
        "taskId": "api.1", "version": "v", "alive": false, "timestamp": "t"}),
    );
    let routes = agree(&t.relay, &t.follower, "api.1 unhealthy", |f| {
        backend_ports(f, api_port).is_empty()
    })
    .await;
    assert!(backend_ports(&routes, api_port).is_empty());

    // A label change (a definition change: api_post_event).
    t.marathon.update_app("/web", |a| {
        a["labels"]["HAPROXY_0_VHOST"] = json!("web.example.com")
    });
    t.marathon
        .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/web"}}));
    let routes = agree(&t.relay, &t.follower, "vhost label", |f| {
        f.to_string().contains("web.example.com")
    })
    .await;
    assert!(has_service(&routes, web_port));

    // A kill and a delete.
    t.marathon.update_app("/web", |a| {
        a["tasks"] = json!([task("/web", "web.2", b2.port())])
    });
    t.marathon
        .send_event(status_update("/web", "web.1", b1.port(), "TASK_KILLED"));
    t.marathon.remove_app("/api");
    t.marathon
        .send_event(json!({"eventType": "app_terminated_event", "appId": "/api"}));
    let routes = agree(&t.relay, &t.follower, "kill and delete", |f| {
        !has_service(f, api_port) && backend_ports(f, web_port) == vec![b2.port()]
    })
    .await;
    assert!(!has_service(&routes, api_port));

    // A deployment (a full resync at the relay), with a new app and a third backend.
    let other_port = free_port();
    let mut apps = vec![app(
        "/web",
        web_port,
        group.clone(),
        vec![task("/web", "web.3", b3.port())],
    )];
    apps.push(app(
        "/other",
        other_port,
        group,
        vec![task("/other", "o.1", b3.port())],
    ));
    t.marathon.set_apps(apps);
    t.marathon
        .send_event(json!({"eventType": "deployment_success", "id": "d1"}));
    agree(&t.relay, &t.follower, "deployment", |f| {
        has_service(f, other_port) && backend_ports(f, web_port) == vec![b3.port()]
    })
    .await;
    let _ = b3;
}

/// A relay that lost Marathon keeps its followers' streams (they hold its model already) but
/// starts no new follower on the table of the moment it lost Marathon: snapshots and new streams
/// are 503 until it serves a model read after Marathon is back.
#[tokio::test]
async fn a_relay_that_lost_marathon_keeps_its_streams_and_its_followers_never_go_back() {
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    let group = json!({"HAPROXY_GROUP": "external"});
    let t = tier(
        "lost",
        vec![app(
            "/a",
            port,
            group.clone(),
            vec![task("/a", "a.1", b1.port())],
        )],
        "",
        "",
    )
    .await;
    let routes = agree(&t.relay, &t.follower, "synced", |f| has_service(f, port)).await;
    let first = hash(&routes);
    assert_eq!(backend_ports(&routes, port), vec![b1.port()]);
    let subscribers = t.relay.metric("switchyard_relay_open_streams", &[]).await;
    assert_eq!(subscribers, 1.0);

    // Marathon goes away: the relay's own stream drops and it cannot reconnect.
    t.marathon.fault(Some(Fault::Gone));
    wait_for("the relay notices", || async {
        (t.relay.metric("switchyard_source_connected", &[]).await == 0.0).then_some(())
    })
    .await;
    // The relay starts no one on its last model: no snapshot, no new stream...
    let relay = relay_addr(&t.relay_url);
    let (status, body) = http_get(relay, "/v2/apps?embed=apps.tasks").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("lost Marathon"), "{body}");
    assert_eq!(http_get(relay, "/v2/tasks").await.unwrap().0, 503);
    let (status, _, _) = http_request(
        relay,
        "GET",
        "/v2/events",
        &[("Accept", "text/event-stream")],
        "",
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(t.relay.metric("switchyard_relay_current", &[]).await, 0.0);
    // ... and the follower it has keeps its stream and its table.
    assert_eq!(hash(&t.follower.routes().await), first);
    assert_eq!(
        t.follower.metric("switchyard_source_connected", &[]).await,
        1.0
    );

    // Marathon returns with a change made meanwhile: the relay resyncs, the follower follows,
    // and every table the follower shows on the way is the first or the new one, never older.
    t.marathon
        .update_app("/a", |a| a["tasks"] = json!([task("/a", "a.2", b2.port())]));
    t.marathon.fault(None);
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let b2_port = b2.port();
    let routes = wait_for("the change made while gone", || {
        let (relay, follower, seen) = (&t.relay, &t.follower, &seen);
        async move {
            let f = follower.routes().await;
            seen.lock().unwrap().insert(hash(&f));
            let r = relay.routes().await;
            (hash(&r) == hash(&f) && backend_ports(&f, port) == vec![b2_port]).then_some(f)
        }
    })
    .await;
    let seen = seen.into_inner().unwrap();
    let last = hash(&routes);
    assert_ne!(last, first);
    assert!(
        seen.iter().all(|h| *h == first || *h == last),
        "the follower showed a table other than the first and the last: {seen:?}"
    );
    let cuts = t
        .relay
        .metric("switchyard_relay_cut_streams_total", &[])
        .await;
    assert_eq!(cuts, 0.0);
    // Current again: it serves snapshots.
    assert_eq!(t.relay.metric("switchyard_relay_current", &[]).await, 1.0);
    assert_eq!(http_get(relay, "/v2/apps").await.unwrap().0, 200);
}

/// Two relays, each on its own stand-in of one Marathon. The second loses Marathon; a change
/// reaches the first and its follower; the first relay goes away. The follower fails over to
/// the second, which turns it away rather than hand it the table of before the change: the
/// follower keeps its newer table, and follows the second relay once that one is current.
#[tokio::test]
async fn a_follower_failing_over_to_a_relay_that_lost_marathon_keeps_its_newer_table() {
    let (b1, b2) = (Backend::start("one").await, Backend::start("two").await);
    let port = free_port();
    let group = json!({"HAPROXY_GROUP": "external"});
    let apps = vec![app("/a", port, group, vec![task("/a", "a.1", b1.port())])];
    let (m1, m2) = (Marathon::start().await, Marathon::start().await);
    m1.set_apps(apps.clone());
    m2.set_apps(apps);
    let (p1, p2) = (free_port(), free_port());
    let first = Switchyard::start(
        "failover-relay-1",
        &config(&[m1.url()], "127.0.0.1", Some(p1), ""),
    );
    let second = Switchyard::start(
        "failover-relay-2",
        &config(&[m2.url()], "127.0.0.3", Some(p2), ""),
    );
    let urls = [
        format!("http://127.0.0.1:{p1}"),
        format!("http://127.0.0.1:{p2}"),
    ];
    let (r1, r2) = (relay_addr(&urls[0]), relay_addr(&urls[1]));
    for (relay, addr) in [(&first, r1), (&second, r2)] {
        wait_for("the relay connected and serving", || async move {
            let connected = relay.metric("switchyard_source_connected", &[]).await == 1.0;
            let (status, _) = http_get(addr, "/v2/apps").await.ok()?;
            (connected && status == 200).then_some(())
        })
        .await;
    }
    // The follower takes the first relay (the first URL).
    let follower = Switchyard::start("failover-follower", &config(&urls, "127.0.0.2", None, ""));
    agree(&first, &follower, "synced from the first relay", |f| {
        backend_ports(f, port) == vec![b1.port()]
    })
    .await;
    assert_eq!(
        first.metric("switchyard_relay_open_streams", &[]).await,
        1.0
    );

    // The second relay loses Marathon, and then Marathon changes: only the first relay sees it.
    m2.fault(Some(Fault::Gone));
    wait_for("the second relay notices", || async {
        (second.metric("switchyard_relay_current", &[]).await == 0.0).then_some(())
    })
    .await;
    let moved = |a: &mut Value| a["tasks"] = json!([task("/a", "a.2", b2.port())]);
    m1.update_app("/a", moved);
    m1.send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/a"}}));
    let routes = agree(&first, &follower, "the change", |f| {
        backend_ports(f, port) == vec![b2.port()]
    })
    .await;
    let newer = hash(&routes);

    // The first relay goes away: the follower tries the second, again and again, and keeps
    // its table (before the fix it took the second relay's, from before the change).
    drop(first);
    let shown = wait_for("the follower to try the second relay twice", || async {
        let tried = second
            .metric("switchyard_relay_requests_total", &["/v2/events"])
            .await;
        let f = follower.routes().await;
        (tried >= 2.0 || hash(&f) != newer).then_some(f)
    })
    .await;
    assert_eq!(
        hash(&shown),
        newer,
        "the follower went back to an older table"
    );
    assert_eq!(backend_ports(&shown, port), vec![b2.port()]);

    // Marathon is back for the second relay, with the change: the follower follows it.
    m2.update_app("/a", moved);
    m2.fault(None);
    wait_for("the follower on the second relay", || async {
        let streams = second.metric("switchyard_relay_open_streams", &[]).await;
        (streams == 1.0).then_some(())
    })
    .await;
    agree(&second, &follower, "following the second relay", |f| {
        backend_ports(f, port) == vec![b2.port()]
    })
    .await;
}

/// Without `relay.token_file` the relay listens on loopback and answers only requests that
/// name a loopback host: a browser's page whose name was rebound to 127.0.0.1 reads nothing.
#[tokio::test]
async fn a_relay_without_a_token_answers_only_requests_naming_a_loopback_host() {
    let b1 = Backend::start("one").await;
    let port = free_port();
    let t = tier(
        "rebind",
        vec![app(
            "/a",
            port,
            json!({"HAPROXY_GROUP": "external"}),
            vec![task("/a", "a.1", b1.port())],
        )],
        "",
        "",
    )
    .await;
    agree(&t.relay, &t.follower, "synced", |f| has_service(f, port)).await;
    let relay = relay_addr(&t.relay_url);
    let (status, body) = get_naming(relay, "/v2/apps", "rebound.example:8081").await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("\"/a\""), "{body}");
    for host in ["localhost:8081", "127.0.0.1", "[::1]:8081"] {
        let (status, body) = get_naming(relay, "/v2/apps", host).await;
        assert_eq!(status, 200, "{host}");
        assert!(body.contains("\"/a\""), "{host}: {body}");
    }
}

/// One GET whose `Host` header is `host` (whatever address it connects to): status and body.
async fn get_naming(addr: SocketAddr, path: &str, host: &str) -> (u16, String) {
    let (status, _, body) = get_raw(addr, path, &format!("Host: {host}\r\n")).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_relay_answers_503_until_its_first_sync() {
    let down = format!("http://127.0.0.1:{}", free_port()); // nothing listens
    let port = free_port();
    let relay = Switchyard::start("unsynced", &config(&[down], "127.0.0.1", Some(port), ""));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for("relay listening", || async {
        http_get(addr, "/v2/apps").await.ok()
    })
    .await;
    for path in ["/v2/apps", "/v2/apps/a", "/v2/tasks", "/v2/info"] {
        let (status, _) = http_get(addr, path).await.unwrap();
        assert_eq!(status, 503, "{path}");
    }
    let (status, _, _) = http_request(
        addr,
        "GET",
        "/v2/events",
        &[("Accept", "text/event-stream")],
        "",
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(relay.metric("switchyard_relay_generation", &[]).await, 0.0);
}

#[tokio::test]
async fn a_relay_asks_for_its_token_and_a_follower_with_it_gets_in() {
    let b1 = Backend::start("one").await;
    let port = free_port();
    let dir = temp_dir("relay-token");
    let token = dir.join("relay-token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let relay_extra = format!("token_file = {:?}\n", token.display().to_string());
    let t = tier(
        "token",
        vec![app(
            "/a",
            port,
            json!({"HAPROXY_GROUP": "external"}),
            vec![task("/a", "a.1", b1.port())],
        )],
        &relay_extra,
        &format!("token_file = {:?}", token.display().to_string()),
    )
    .await;
    agree(
        &t.relay,
        &t.follower,
        "the follower presents the token",
        |f| has_service(f, port),
    )
    .await;
    let addr = relay_addr(&t.relay_url);
    let (status, _) = http_get(addr, "/v2/apps").await.unwrap();
    assert_eq!(status, 401);
    let (status, _, _) = http_request(
        addr,
        "GET",
        "/v2/apps",
        &[("Authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, body) = http_request(
        addr,
        "GET",
        "/v2/apps",
        &[("Authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"/a\""));
    // Changes are not the relay's business.
    let (status, _, _) = http_request(
        addr,
        "POST",
        "/v2/apps",
        &[("Authorization", "Bearer s3cret")],
        "{}",
    )
    .await;
    assert_eq!(status, 405);
    // Beyond loopback without a token, the configuration is refused.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg({
            let path = dir.join("open.toml");
            std::fs::write(
                &path,
                "[discovery]\nmarathon = [\"http://127.0.0.1:1\"]\n[relay]\nlisten = \"0.0.0.0:0\"\n",
            )
            .unwrap();
            path
        })
        .output()
        .unwrap();
    assert!(!check.status.success());
    let said = String::from_utf8_lossy(&check.stderr).to_string()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(said.contains("relay.token_file"), "{said}");
}

#[tokio::test]
async fn a_relay_with_a_certificate_speaks_only_https_and_a_follower_trusting_its_ca_follows() {
    let b1 = Backend::start("one").await;
    let port = free_port();
    let dir = temp_dir("relay-tls");
    let ca = support::pki::test_ca("the relays' CA");
    let (cert, ca_file, token) = (dir.join("relay.pem"), dir.join("ca.pem"), dir.join("token"));
    std::fs::write(&cert, &ca.server_pem).unwrap();
    std::fs::write(&ca_file, &ca.pem).unwrap();
    std::fs::write(&token, "s3cret\n").unwrap();
    let marathon = Marathon::start().await;
    marathon.set_apps(vec![app(
        "/a",
        port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/a", "a.1", b1.port())],
    )]);
    let relay_port = free_port();
    let relay = Switchyard::start(
        "tls-relay",
        &format!(
            "{}tls_cert = {:?}\ntoken_file = {:?}\n",
            config(&[marathon.url()], "127.0.0.1", Some(relay_port), ""),
            cert.display().to_string(),
            token.display().to_string()
        ),
    );
    let follower = Switchyard::start(
        "tls-follower",
        &config(
            &[format!("https://127.0.0.1:{relay_port}")],
            "127.0.0.2",
            None,
            &format!(
                "ca_file = {:?}\ntoken_file = {:?}",
                ca_file.display().to_string(),
                token.display().to_string()
            ),
        ),
    );
    agree(
        &relay,
        &follower,
        "the follower reads the relay over TLS",
        |f| has_service(f, port),
    )
    .await;
    // Plain HTTP on the relay's port gets no answer: the token never crosses in the clear.
    let addr: SocketAddr = format!("127.0.0.1:{relay_port}").parse().unwrap();
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(
            b"GET /v2/apps HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // A change reaches the follower through the relay's TLS event stream.
    let b2 = Backend::start("two").await;
    marathon.set_apps(vec![app(
        "/a",
        port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/a", "a.2", b2.port())],
    )]);
    marathon.send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/a"}}));
    agree(&relay, &follower, "the change arrives over TLS", |f| {
        backend_ports(f, port) == vec![b2.port()]
    })
    .await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_and_the_others_stay_current() {
    let b1 = Backend::start("one").await;
    let port = free_port();
    let t = tier(
        "slow",
        vec![app(
            "/a",
            port,
            json!({"HAPROXY_GROUP": "external"}),
            vec![task("/a", "a.1", b1.port())],
        )],
        "subscriber_queue = 2\n",
        "",
    )
    .await;
    agree(&t.relay, &t.follower, "synced", |f| has_service(f, port)).await;
    // A subscriber that reads nothing, with the smallest receive buffer the kernel allows.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut slow = socket.connect(relay_addr(&t.relay_url)).await.unwrap();
    slow.write_all(
        b"GET /v2/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    wait_for("two subscribers", || async {
        (t.relay.metric("switchyard_relay_open_streams", &[]).await == 2.0).then_some(())
    })
    .await;
    // Large definitions change one after another: each is an event of ~200 KB on every stream.
    let mut round = 0;
    wait_for("the slow subscriber cut", || {
        round += 1;
        let big = "x".repeat(200 << 10);
        t.marathon.update_app("/a", |a| {
            a["labels"]["BIG"] = json!(big);
            a["labels"]["HAPROXY_0_VHOST"] = json!(format!("r{round}.example.com"));
        });
        t.marathon
            .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/a"}}));
        let relay = &t.relay;
        async move {
            (relay
                .metric("switchyard_relay_cut_streams_total", &[])
                .await
                >= 1.0)
                .then_some(())
        }
    })
    .await;
    // The follower that reads is still subscribed and current.
    let last = format!("r{round}.example.com");
    agree(&t.relay, &t.follower, "the reader stays current", |f| {
        f.to_string().contains(&last)
    })
    .await;
    wait_for("the reader's stream is the one left", || async {
        (t.relay.metric("switchyard_relay_open_streams", &[]).await == 1.0).then_some(())
    })
    .await;
    drop(slow);
}

/// A subscriber whose reader stopped is cut when what was written to it does not drain for
/// `relay.idle_timeout`, long before its (large) queue would fill.
#[tokio::test]
async fn a_stalled_subscriber_is_cut_when_its_writes_do_not_drain() {
    let b1 = Backend::start("one").await;
    let port = free_port();
    let t = tier(
        "stalled",
        vec![app(
            "/a",
            port,
            json!({"HAPROXY_GROUP": "external"}),
            vec![task("/a", "a.1", b1.port())],
        )],
        "subscriber_queue = 65536\nidle_timeout = \"500ms\"\n",
        "",
    )
    .await;
    agree(&t.relay, &t.follower, "synced", |f| has_service(f, port)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stalled = socket.connect(relay_addr(&t.relay_url)).await.unwrap();
    stalled
        .write_all(
            b"GET /v2/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    wait_for("two subscribers", || async {
        (t.relay.metric("switchyard_relay_open_streams", &[]).await == 2.0).then_some(())
    })
    .await;
    let mut round = 0;
    wait_for("the stalled subscriber cut", || {
        round += 1;
        let big = "x".repeat(200 << 10);
        t.marathon.update_app("/a", |a| {
            a["labels"]["BIG"] = json!(big);
            a["labels"]["HAPROXY_0_VHOST"] = json!(format!("s{round}.example.com"));
        });
        t.marathon
            .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/a"}}));
        let relay = &t.relay;
        async move {
            (relay.metric("switchyard_relay_open_streams", &[]).await == 1.0).then_some(())
        }
    })
    .await;
    // Its queue never filled; the reader's stream is the one left, and current.
    assert_eq!(
        t.relay
            .metric("switchyard_relay_cut_streams_total", &[])
            .await,
        0.0
    );
    let last = format!("s{round}.example.com");
    agree(&t.relay, &t.follower, "the reader stays current", |f| {
        f.to_string().contains(&last)
    })
    .await;
    drop(stalled);
}

#[tokio::test]
async fn a_relay_lost_for_longer_than_its_bound_stops_serving_and_its_follower_keeps_its_table() {
    let b1 = Backend::start("one").await;
    let port = free_port();
    let group = json!({"HAPROXY_GROUP": "external"});
    let t = tier(
        "stale",
        vec![app("/a", port, group, vec![task("/a", "a.1", b1.port())])],
        "max_disconnected = \"1s\"\n",
        "",
    )
    .await;
    let routes = agree(&t.relay, &t.follower, "synced", |f| has_service(f, port)).await;
    let first = hash(&routes);

    // Marathon goes away for longer than the bound: the relay answers 503 and closes its stream
    // (a follower would move to a relay that is current), and the follower keeps its table.
    t.marathon.fault(Some(Fault::Gone));
    let relay = relay_addr(&t.relay_url);
    wait_for("the relay to stop serving", || async move {
        let (status, _) = http_get(relay, "/v2/apps").await.ok()?;
        (status == 503).then_some(())
    })
    .await;
    wait_for("the follower's stream to close", || async {
        (t.follower.metric("switchyard_source_connected", &[]).await == 0.0).then_some(())
    })
    .await;
    assert_eq!(hash(&t.follower.routes().await), first);
    assert_eq!(
        t.relay.metric("switchyard_relay_open_streams", &[]).await,
        0.0
    );

    // Marathon is back: the relay serves again and the follower follows.
    t.marathon.fault(None);
    wait_for("the relay to serve again", || async move {
        let (status, _) = http_get(relay, "/v2/apps").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    agree(&t.relay, &t.follower, "back", |f| has_service(f, port)).await;
}

/// One GET with extra headers over a fresh connection: status, head (as text) and body bytes.
async fn get_bytes(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    get_raw(addr, path, &format!("Host: {addr}\r\n{headers}")).await
}

/// One GET with exactly these header lines (and `Connection: close`).
async fn get_raw(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n{headers}\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        buf
    };
    let buf = tokio::time::timeout(std::time::Duration::from_secs(30), fut)
        .await
        .expect("an answer in time");
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, buf[end + 4..].to_vec())
}

#[tokio::test]
async fn a_relay_serves_its_snapshots_gzip_compressed_to_who_asks() {
    let b1 = Backend::start("one").await;
    let port = free_port();
    // One app the follower serves, and 50 in another group that only fill the bodies.
    let mut apps: Vec<Value> = (0..50)
        .map(|i| {
            let id = format!("/svc/a{i}");
            let tasks = vec![task(&id, &format!("a{i}.1"), b1.port())];
            app(&id, 10000 + i, json!({"HAPROXY_GROUP": "internal"}), tasks)
        })
        .collect();
    apps.push(app(
        "/a",
        port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/a", "a.1", b1.port())],
    ));
    let t = tier("gzip", apps, "", "").await;
    agree(&t.relay, &t.follower, "the follower follows", |f| {
        has_service(f, port)
    })
    .await;
    // The relay asked its Marathon for gzip, and the follower asked the relay.
    assert!(
        t.marathon
            .requests()
            .iter()
            .filter(|r| r.target.starts_with("/v2/apps?"))
            .all(|r| r.accept_encoding.as_deref() == Some("gzip"))
    );
    let addr = relay_addr(&t.relay_url);
    for path in ["/v2/apps?embed=apps.tasks", "/v2/tasks"] {
        let (status, head, plain) = get_bytes(addr, path, "").await;
        assert_eq!(status, 200, "{path}");
        assert!(!head.contains("content-encoding"), "{path}: {head}");
        assert!(head.contains("vary: accept-encoding"), "{path}: {head}");
        let (status, head, compressed) =
            get_bytes(addr, path, "Accept-Encoding: deflate, gzip;q=0.9\r\n").await;
        assert_eq!(status, 200, "{path}");
        assert!(head.contains("content-encoding: gzip"), "{path}: {head}");
        assert!(compressed.len() * 4 < plain.len(), "{path}: smaller");
        let decoded = switchyard::discovery::marathon::gzip::gunzip(&compressed, 64 << 20).unwrap();
        assert_eq!(decoded, plain, "{path}: the same body");
        // Refused by q=0: sent as is.
        let (_, head, _) = get_bytes(addr, path, "Accept-Encoding: gzip;q=0\r\n").await;
        assert!(!head.contains("content-encoding"), "{path}: {head}");
    }
}

/// Connections that never present the token cannot lock followers out: with every connection
/// slot held by them, a follower's request still gets in (the oldest of them makes room), and a
/// follower already subscribed keeps its stream.
#[tokio::test]
async fn connections_without_the_token_make_room_for_a_follower_with_it() {
    use tokio::io::AsyncReadExt;
    let b1 = Backend::start("one").await;
    let port = free_port();
    let dir = temp_dir("relay-evict");
    let token = dir.join("relay-token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let token = format!("token_file = {:?}\n", token.display().to_string());
    // One stream: the cap is 2 + 256 connections. Unauthenticated ones stay for a minute.
    let t = tier(
        "evict",
        vec![app(
            "/a",
            port,
            json!({"HAPROXY_GROUP": "external"}),
            vec![task("/a", "a.1", b1.port())],
        )],
        &format!("{token}max_subscribers = 1\nheader_timeout = \"60s\"\n"),
        &token,
    )
    .await;
    agree(&t.relay, &t.follower, "synced", |f| has_service(f, port)).await;
    let addr = relay_addr(&t.relay_url);
    // More silent connections than the cap: every slot but the follower's stream is theirs.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    wait_for("the silent connections fill the relay", || async {
        let evicted = t
            .relay
            .metric("switchyard_relay_evicted_connections_total", &[])
            .await;
        (evicted >= 42.0).then_some(())
    })
    .await;
    // The oldest of them was closed to make room.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(DEADLINE, silent[0].read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // A follower's request gets in.
    let (status, _, body) = http_request(
        addr,
        "GET",
        "/v2/apps",
        &[("Authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"/a\""));
    // And the subscribed follower was not evicted: it still follows.
    t.marathon.update_app("/a", |a| {
        a["labels"]["HAPROXY_0_VHOST"] = json!("evict.example.com")
    });
    t.marathon
        .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/a"}}));
    agree(&t.relay, &t.follower, "the follower stays current", |f| {
        f.to_string().contains("evict.example.com")
    })
    .await;
    // A second stream is past relay.max_subscribers: refused, and counted as a stream.
    let (status, _, _) = http_request(
        addr,
        "GET",
        "/v2/events",
        &[
            ("Authorization", "Bearer s3cret"),
            ("Accept", "text/event-stream"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(
        t.relay
            .metric("switchyard_relay_refused_total", &["stream"])
            .await,
        1.0
    );
    assert_eq!(
        t.relay
            .metric("switchyard_relay_refused_total", &["connection"])
            .await,
        0.0,
        "no connection was refused"
    );
    drop(silent);
}

/// A reader that stops in the middle of a big `/v2/apps` keeps that model's body alive after the
/// model is replaced; past `relay.max_body_bytes` of such bodies the relay builds no new one and
/// answers 503 with `Retry-After`, until the reader goes.
#[tokio::test]
async fn bodies_held_by_slow_readers_are_bounded_and_past_the_budget_answers_are_503() {
    use tokio::io::AsyncReadExt;
    let b1 = Backend::start("one").await;
    let port = free_port();
    // About 1.2 MB of plain /v2/apps: more than the kernel buffers of one connection hold.
    let pad = "p".repeat(2000);
    let mut apps: Vec<Value> = (0..600)
        .map(|i| {
            let id = format!("/pad/a{i}");
            app(
                &id,
                20000 + i,
                json!({"HAPROXY_GROUP": "internal", "PAD": pad}),
                vec![],
            )
        })
        .collect();
    apps.push(app(
        "/a",
        port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/a", "a.1", b1.port())],
    ));
    let t = tier("budget", apps, "max_body_bytes = 65536\n", "").await;
    agree(&t.relay, &t.follower, "synced", |f| has_service(f, port)).await;
    let addr = relay_addr(&t.relay_url);
    // The follower's snapshot, as plain JSON (built beside the gzip one the follower took).
    let path = "/v2/apps?embed=apps.tasks&embed=apps.deployments&embed=apps.readiness";
    assert!(t.relay.metric("switchyard_relay_body_bytes", &[]).await > 1_000_000.0);
    // A reader that takes the head of the answer and then reads nothing more.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    slow.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(DEADLINE, slow.read_exact(&mut head))
        .await
        .expect("the answer starts")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // A new model: the old one's body is still being written to the reader.
    let generation = t.relay.metric("switchyard_relay_generation", &[]).await;
    t.marathon.update_app("/a", |a| {
        a["labels"]["HAPROXY_0_VHOST"] = json!("budget.example.com")
    });
    t.marathon
        .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/a"}}));
    wait_for("the new model", || async {
        (t.relay.metric("switchyard_relay_generation", &[]).await > generation).then_some(())
    })
    .await;
    let (status, head, _) = get_bytes(addr, path, "").await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after: 5"), "{head}");
    assert!(
        t.relay
            .metric("switchyard_relay_over_budget_total", &[])
            .await
            >= 1.0
    );
    // The follower still follows (its stream and single-app fetches need no new body).
    agree(&t.relay, &t.follower, "the follower current", |f| {
        f.to_string().contains("budget.example.com")
    })
    .await;
    // The reader gone, its body goes and the new model's is built.
    drop(slow);
    wait_for("a body again", || async {
        let (status, _, body) = get_bytes(addr, path, "").await;
        (status == 200 && String::from_utf8_lossy(&body).contains("budget.example.com"))
            .then_some(())
    })
    .await;
}

/// A follower that stops reading in a cluster where nothing changes is still cut: the relay's
/// heartbeats fill its buffers, its writes stall, and `relay.idle_timeout` later it is gone.
#[tokio::test]
async fn a_subscriber_that_stops_reading_in_a_quiet_cluster_is_cut() {
    let b1 = Backend::start("one").await;
    let port = free_port();
    let t = tier(
        "quiet",
        vec![app(
            "/a",
            port,
            json!({"HAPROXY_GROUP": "external"}),
            vec![task("/a", "a.1", b1.port())],
        )],
        "subscriber_queue = 65536\nidle_timeout = \"500ms\"\nkeepalive_interval = \"50ms\"\n",
        "",
    )
    .await;
    agree(&t.relay, &t.follower, "synced", |f| has_service(f, port)).await;
    // A reader with the kernel's default buffers (a follower's), that reads nothing.
    let mut stopped = tokio::net::TcpStream::connect(relay_addr(&t.relay_url))
        .await
        .unwrap();
    stopped
        .write_all(
            b"GET /v2/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    wait_for("two subscribers", || async {
        (t.relay.metric("switchyard_relay_open_streams", &[]).await == 2.0).then_some(())
    })
    .await;
    // Nothing changes in Marathon from here on.
    wait_for("the stopped subscriber cut", || async {
        (t.relay.metric("switchyard_relay_open_streams", &[]).await == 1.0).then_some(())
    })
    .await;
    // The follower, which reads, is the one left and still follows.
    t.marathon.update_app("/a", |a| {
        a["labels"]["HAPROXY_0_VHOST"] = json!("quiet.example.com")
    });
    t.marathon
        .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/a"}}));
    agree(&t.relay, &t.follower, "the reader stays current", |f| {
        f.to_string().contains("quiet.example.com")
    })
    .await;
    drop(stopped);
}
