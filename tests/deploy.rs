//! Canary and blue-green end to end, against the Marathon stand-in: exact weighted splits,
//! the header-forced canary, health-gated green, a cutover under load with every request
//! counted, draining of in-flight requests, and runtime weight overrides.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use support::marathon::{Marathon, app, status_update, task};
use support::*;

fn config(marathon: &Marathon) -> String {
    format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\ndrain_timeout = \"5s\"\n",
        marathon.url()
    )
}

fn colour_app(
    id: &str,
    port: u16,
    colour: &str,
    weight: Option<u32>,
    backends: &[&Backend],
) -> Value {
    let mut labels = json!({
        "HAPROXY_0_MODE": "http",
        "HAPROXY_DEPLOYMENT_GROUP": "shop",
        "HAPROXY_DEPLOYMENT_COLOUR": colour,
        "HAPROXY_DEPLOYMENT_STARTED_AT": if colour == "blue" { "2026-11-01T00:00:00Z" } else { "2026-11-22T00:00:00Z" },
    });
    if let Some(w) = weight {
        labels["SWITCHYARD_0_WEIGHT"] = json!(w.to_string());
    }
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, b)| task(id, &format!("{id}.{i}"), b.port()))
        .collect();
    app(id, port, labels, tasks)
}

/// A keep-alive client that counts answers by body.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl Client {
    async fn connect(port: u16) -> Client {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    async fn get(&mut self, path: &str, header: Option<(&str, &str)>) -> (u16, String) {
        let mut req = hyper::Request::get(path).header("host", "shop");
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let resp = self
            .sender
            .send_request(req.body(http_body_util::Empty::new()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8_lossy(&body).to_string())
    }

    async fn count(&mut self, n: usize, who: &str) -> usize {
        let mut hits = 0;
        for _ in 0..n {
            let (status, body) = self.get("/", None).await;
            assert_eq!(status, 200);
            hits += usize::from(body == who);
        }
        hits
    }
}

#[tokio::test]
async fn weighted_splits_are_exact_and_the_canary_header_forces_green() {
    let (b1, b2, b3, g1) = (
        Backend::start("blue").await,
        Backend::start("blue").await,
        Backend::start("blue").await,
        Backend::start("green").await,
    );
    let marathon = Marathon::start().await;
    let port = free_port();
    let mut green = colour_app("/shop-green", port, "green", Some(10), &[&g1]);
    green["labels"]["SWITCHYARD_0_CANARY_HEADER"] = json!("X-Canary: on");
    marathon.set_apps(vec![
        colour_app("/shop-blue", port, "blue", Some(90), &[&b1, &b2, &b3]),
        green,
    ]);
    let sy = Switchyard::start("deploy-split", &config(&marathon));
    sy.wait_routes("route", |r| {
        r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "shop")
    })
    .await;
    let mut client = Client::connect(port).await;
    let green_hits = client.count(2000, "green").await;
    assert!(
        (199..=201).contains(&green_hits),
        "90/10 over 2000 requests: {green_hits} to green"
    );
    for _ in 0..20 {
        assert_eq!(client.get("/", Some(("x-canary", "on"))).await.1, "green");
    }
    // 50/50 across 3 and 1 instances: the split is per app, not per backend.
    marathon.update_app("/shop-blue", |a| {
        a["labels"]["SWITCHYARD_0_WEIGHT"] = json!("50")
    });
    marathon.update_app("/shop-green", |a| {
        a["labels"]["SWITCHYARD_0_WEIGHT"] = json!("50")
    });
    marathon.send_event(json!({"eventType": "deployment_success", "id": "d1"}));
    sy.wait_routes("50/50", |r| {
        r["routes"].to_string().contains("\"weight\":50")
    })
    .await;
    let green_hits = client.count(2000, "green").await;
    assert!(
        (999..=1001).contains(&green_hits),
        "50/50: {green_hits} to green"
    );
    // Per app version: response counts by class and a latency histogram, for a pipeline to
    // compare the canary with the stable version.
    let green = sy
        .metric("switchyard_http_response_seconds_count", &["/shop-green:0"])
        .await;
    let blue = sy
        .metric("switchyard_http_response_seconds_count", &["/shop-blue:0"])
        .await;
    assert!(green >= 1200.0 && blue >= 2800.0, "{green} {blue}");
    assert!(
        sy.metric("switchyard_http_responses_total", &["/shop-green:0", "2xx"])
            .await
            >= 1200.0
    );
}

#[tokio::test]
async fn unhealthy_green_gets_nothing_until_healthy_and_an_empty_app_gives_its_share_away() {
    let (blue, g1) = (Backend::start("blue").await, Backend::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    let mut green = colour_app("/shop-green", port, "green", Some(50), &[&g1]);
    green["healthChecks"] = json!([{"protocol": "MESOS_HTTP", "path": "/"}]);
    marathon.set_apps(vec![
        colour_app("/shop-blue", port, "blue", Some(50), &[&blue]),
        green,
    ]);
    let sy = Switchyard::start("deploy-health", &config(&marathon));
    sy.wait_routes("route", |r| has_service(r, port)).await;
    let mut client = Client::connect(port).await;
    assert_eq!(
        client.count(200, "green").await,
        0,
        "no health result yet: no traffic"
    );
    marathon.send_event(
        json!({"eventType": "health_status_changed_event", "appId": "/shop-green",
        "taskId": "/shop-green.0", "version": "v", "alive": true, "timestamp": "t"}),
    );
    sy.wait_routes("green healthy", |r| backends(r, port).len() == 2)
        .await;
    let hits = client.count(200, "green").await;
    assert!((99..=101).contains(&hits), "{hits}");
}

#[tokio::test]
async fn blue_green_cutover_under_load_loses_no_request() {
    let (b1, b2, g1, g2) = (
        Backend::start("blue").await,
        Backend::start("blue").await,
        Backend::start("green").await,
        Backend::start("green").await,
    );
    let marathon = Marathon::start().await;
    let port = free_port();
    marathon.set_apps(vec![colour_app(
        "/shop-blue",
        port,
        "blue",
        None,
        &[&b1, &b2],
    )]);
    let sy = Switchyard::start("deploy-cutover", &config(&marathon));
    sy.wait_routes("blue", |r| backends(r, port).len() == 2)
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, green_seen) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, green_seen) =
            (stop.clone(), ok.clone(), failed.clone(), green_seen.clone());
        load.push(tokio::spawn(async move {
            let mut client = Client::connect(port).await;
            while !stop.load(Ordering::Relaxed) {
                match client.get("/", None).await {
                    (200, body) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        green_seen.fetch_add(usize::from(body == "green"), Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Green is deployed beside blue (same group, alternate port), becomes healthy, takes
    // traffic; blue's tasks are killed one by one, then blue is deleted.
    let mut green = colour_app("/shop-green", port, "green", None, &[&g1, &g2]);
    green["labels"]["HAPROXY_DEPLOYMENT_ALT_PORT"] = json!(free_port().to_string());
    marathon.set_apps(vec![
        colour_app("/shop-blue", port, "blue", None, &[&b1, &b2]),
        green,
    ]);
    marathon
        .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/shop-green"}}));
    wait_for("green serving", || async {
        (green_seen.load(Ordering::Relaxed) > 50).then_some(())
    })
    .await;
    for (i, b) in [&b1, &b2].iter().enumerate() {
        marathon.send_event(status_update(
            "/shop-blue",
            &format!("/shop-blue.{i}"),
            b.port(),
            "TASK_KILLING",
        ));
    }
    sy.wait_routes("blue drained", |r| {
        backends(r, port) == {
            let mut v = vec![g1.addr, g2.addr];
            v.sort();
            v
        }
    })
    .await;
    marathon.remove_app("/shop-blue");
    marathon.send_event(json!({"eventType": "app_terminated_event", "appId": "/shop-blue"}));
    let before = ok.load(Ordering::Relaxed);
    wait_for("more load after the cutover", || async {
        (ok.load(Ordering::Relaxed) > before + 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} requests succeeded",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 500);
}

#[tokio::test]
async fn a_slow_request_to_a_removed_task_completes() {
    let (slow, other) = (Backend::start("slow").await, Backend::start("other").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    marathon.set_apps(vec![colour_app("/shop-blue", port, "blue", None, &[&slow])]);
    let sy = Switchyard::start("deploy-inflight", &config(&marathon));
    sy.wait_routes("route", |r| backends(r, port) == vec![slow.addr])
        .await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let in_flight = tokio::spawn(async move { http_get(addr, "/slow").await.unwrap() });
    wait_for("request in flight", || async {
        let r = sy.routes().await;
        (r["services"][0]["backends"][0]["active"] == 1).then_some(())
    })
    .await;
    marathon.update_app("/shop-blue", |a| {
        a["tasks"] = json!([task("/shop-blue", "other.1", other.port())])
    });
    marathon.send_event(status_update(
        "/shop-blue",
        "/shop-blue.0",
        slow.port(),
        "TASK_KILLING",
    ));
    marathon.send_event(status_update(
        "/shop-blue",
        "other.1",
        other.port(),
        "TASK_RUNNING",
    ));
    sy.wait_routes("removed", |r| backends(r, port) == vec![other.addr])
        .await;
    assert_eq!(in_flight.await.unwrap(), (200, "slow".to_string()));
}

#[tokio::test]
async fn runtime_weight_override_shows_and_clears_on_a_label_change() {
    let (blue, green) = (Backend::start("blue").await, Backend::start("green").await);
    let marathon = Marathon::start().await;
    let port = free_port();
    marathon.set_apps(vec![
        colour_app("/shop-blue", port, "blue", Some(90), &[&blue]),
        colour_app("/shop-green", port, "green", Some(10), &[&green]),
    ]);
    let token_file = temp_dir("deploy-override-token").join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let admin = format!("token_file = {:?}", token_file.display().to_string());
    let sy = Switchyard::start_with_admin("deploy-override", &config(&marathon), &admin);
    sy.wait_routes("route", |r| backends(r, port).len() == 2)
        .await;
    let put_as = |body: &str, token: &str| {
        let (admin, body, token) = (sy.admin, body.to_string(), token.to_string());
        async move {
            let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
            let req = format!(
                "PUT /v1/routes/shop/weights HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
                .await
                .unwrap();
            out
        }
    };
    let put = |body: &str| put_as(body, "s3cret");
    // Changes always need the admin token.
    assert!(
        put_as(r#"{"/shop-blue": 1}"#, "wrong")
            .await
            .starts_with("HTTP/1.1 401")
    );
    assert!(
        put_as(r#"{"/shop-blue": 1}"#, "")
            .await
            .starts_with("HTTP/1.1 401")
    );
    assert!(
        put(r#"{"/shop-nope": 1}"#)
            .await
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        put(r#"{"/shop-blue": 0, "/shop-green": 100}"#)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let routes = sy.routes().await;
    let shop = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "shop")
        .unwrap()
        .clone();
    assert_eq!(shop["overridden"], true);
    assert!(
        shop["members"]
            .to_string()
            .contains("\"weight_from\":\"override\""),
        "{shop}"
    );
    let (_, metrics) = sy.get("/metrics").await;
    let weights: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("route_weight{"))
        .collect();
    assert!(
        weights
            .iter()
            .any(|l| l.contains("/shop-green") && l.contains("override") && l.ends_with(" 100")),
        "{weights:?}"
    );
    let mut client = Client::connect(port).await;
    assert_eq!(client.count(50, "green").await, 50);
    // A new deployment (labels change) clears the override: back to the labels' 90/10.
    marathon.update_app("/shop-green", |a| a["labels"]["VERSION"] = json!("2"));
    marathon
        .send_event(json!({"eventType": "api_post_event", "appDefinition": {"id": "/shop-green"}}));
    sy.wait_routes("override cleared", |r| {
        r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "shop" && r["overridden"] == false)
    })
    .await;
    let hits = client.count(100, "green").await;
    assert!((9..=11).contains(&hits), "{hits}");
}

/// The SRV weights under the deployment group's name, by SRV port (each backend's own port).
async fn group_srv_weights(dns: SocketAddr) -> std::collections::BTreeMap<u16, u16> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii("_shop._tcp.marathon.mesos.").unwrap(),
        RecordType::SRV,
    ));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&query.to_vec().unwrap(), dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buf))
        .await
        .expect("a DNS answer")
        .unwrap();
    Message::from_vec(&buf[..n])
        .unwrap()
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.weight)),
            _ => None,
        })
        .collect()
}

/// A canary split is visible to SRV-aware clients: the deployment group's name answers every
/// task of both colours, weighted by its share of the traffic (blue 90 over two tasks, green 10
/// over one), and a runtime weight override moves the weights within a swap.
#[tokio::test]
async fn srv_weights_under_the_group_name_follow_the_canary_split() {
    let (b1, b2, g1) = (
        Backend::start("blue").await,
        Backend::start("blue").await,
        Backend::start("green").await,
    );
    let marathon = Marathon::start().await;
    let port = free_port();
    marathon.set_apps(vec![
        colour_app("/shop-blue", port, "blue", Some(90), &[&b1, &b2]),
        colour_app("/shop-green", port, "green", Some(10), &[&g1]),
    ]);
    let token_file = temp_dir("deploy-srv-token").join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let admin = format!("token_file = {:?}", token_file.display().to_string());
    let config = format!("{}[dns]\nlisten = \"127.0.0.1:0\"\n", config(&marathon));
    let sy = Switchyard::start_with_admin("deploy-srv", &config, &admin);
    let dns: SocketAddr = wait_for("dns listening", || async {
        let line = sy.log_lines("dns listening on ").into_iter().next()?;
        let rest = line.split("dns listening on ").nth(1)?;
        rest.split(|c: char| c.is_whitespace() || c == '\x1b')
            .next()?
            .parse()
            .ok()
    })
    .await;
    let split = |blue: u16, green: u16| {
        std::collections::BTreeMap::from([(b1.port(), blue), (b2.port(), blue), (g1.port(), green)])
    };
    wait_for("the split in SRV weights", || async {
        (group_srv_weights(dns).await == split(10_000, 2_222)).then_some(())
    })
    .await;
    // The override: 50/50 between the apps, so a green task weighs twice a blue one.
    let body = r#"{"/shop-blue": 50, "/shop-green": 50}"#;
    let mut s = tokio::net::TcpStream::connect(sy.admin).await.unwrap();
    let req = format!(
        "PUT /v1/routes/shop/weights HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    wait_for("the override in SRV weights", || async {
        (group_srv_weights(dns).await == split(5_000, 10_000)).then_some(())
    })
    .await;
}
