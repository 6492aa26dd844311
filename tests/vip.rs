//! VIPs end to end: apps declare `VIP_0` port labels; switchyard listens on the VIP address
//! (a loopback range here, all local on Linux), balances over every declaring app's tasks with
//! consistent hashing, and answers the VIP's name in DNS.

mod support;

use std::net::SocketAddr;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::{Value, json};
use support::marathon::{Marathon, app, status_update, task};
use support::*;

fn vip_app(id: &str, vip: &str, backends: &[&Backend]) -> Value {
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, b)| task(id, &format!("{id}.{i}"), b.port()))
        .collect();
    let mut a = app(id, 0, json!({}), tasks);
    a["portDefinitions"][0]["labels"] = json!({ "VIP_0": vip });
    a
}

async fn dns_a(server: SocketAddr, name: &str) -> (Vec<String>, Vec<u32>) {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    let ips = reply.answers.iter().filter_map(|r| match &r.data {
        RData::A(a) => Some(a.0.to_string()),
        _ => None,
    });
    (ips.collect(), reply.answers.iter().map(|r| r.ttl).collect())
}

#[tokio::test]
async fn named_and_ip_vips_balance_over_every_declaring_app_and_resolve() {
    let (a1, a2, b1, c1) = (
        Backend::start("a").await,
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let marathon = Marathon::start().await;
    let ip_vip_port = free_port();
    marathon.set_apps(vec![
        vip_app("/web-a", "/web:8080", &[&a1, &a2]),
        vip_app("/web-b", "web:8080", &[&b1]),
        vip_app("/cache", &format!("127.88.0.5:{ip_vip_port}"), &[&c1]),
    ]);
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\n\
         [vip]\nrange = \"127.77.0.0/16\"\n[dns]\nlisten = \"{dns}\"\n",
        marathon.url()
    );
    let sy = Switchyard::start("vip", &config);
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    let routes = sy.routes().await;
    let web = routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == "vip:web")
        .unwrap()
        .clone();
    assert_eq!(
        web["backends"].as_array().unwrap().len(),
        3,
        "the union of both apps: {web}"
    );
    assert_eq!(web["balance"], "maglev");
    let web_addr: SocketAddr = web["listen"].as_str().unwrap().parse().unwrap();
    assert!(
        web_addr.ip().to_string().starts_with("127.77."),
        "{web_addr}"
    );
    assert_eq!(web_addr.port(), 8080);

    // Every declaring app's tasks answer through the VIP (connections from different source
    // ports are different flows).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let (status, body) = http_get(web_addr, "/").await.unwrap();
        assert_eq!(status, 200);
        seen.insert(body);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
    let ip_vip: SocketAddr = format!("127.88.0.5:{ip_vip_port}").parse().unwrap();
    assert_eq!(http_get(ip_vip, "/").await.unwrap(), (200, "c".to_string()));

    // The name resolves to the allocated address, TTL 5 as in DC/OS.
    let (ips, ttls) = dns_a(dns, "web.marathon.l4lb.thisdcos.directory.").await;
    assert_eq!(ips, vec![web_addr.ip().to_string()]);
    assert_eq!(ttls, vec![5]);

    // A task leaves: the VIP keeps answering from the rest.
    marathon.send_event(status_update(
        "/web-b",
        "/web-b.0",
        b1.port(),
        "TASK_KILLING",
    ));
    sy.wait_routes("b gone", |r| {
        r["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["app_id"] == "vip:web" && s["backends"].as_array().unwrap().len() == 2)
    })
    .await;
    for _ in 0..20 {
        assert_eq!(
            http_get(web_addr, "/").await.unwrap(),
            (200, "a".to_string())
        );
    }
}

#[tokio::test]
async fn a_vip_with_no_backend_refuses_promptly() {
    let marathon = Marathon::start().await;
    marathon.set_apps(vec![vip_app("/empty", "/empty:8081", &[])]);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"external\"\n[vip]\nrange = \"127.78.0.0/16\"\nbalance_by_name = {{ empty = \"p2c\" }}\n",
        marathon.url()
    );
    let sy = Switchyard::start("vip-empty", &config);
    let routes = sy
        .wait_routes("vip", |r| {
            r["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["app_id"] == "vip:empty")
        })
        .await;
    let svc = routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == "vip:empty")
        .unwrap()
        .clone();
    assert_eq!(svc["balance"], "p2c", "per-VIP balancer from the config");
    let addr: SocketAddr = svc["listen"].as_str().unwrap().parse().unwrap();
    // Reset, not closed cleanly (an empty answer would look complete): the reset can come
    // before the connect is seen to complete, or at the first read.
    let refused = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut buf = [0u8; 1];
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await
    };
    let refused = tokio::time::timeout(DEADLINE, refused)
        .await
        .expect("refused, not hung");
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

#[tokio::test]
async fn udp_vips_relay_per_client_flow_and_reply_from_the_vip_address() {
    // Two UDP echo backends that prefix their name.
    let mut backends = Vec::new();
    for name in ["u1", "u2"] {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let reply = [name.as_bytes(), b":", &buf[..n]].concat();
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        backends.push(port);
    }
    let marathon = Marathon::start().await;
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, p)| task("/dns", &format!("dns.{i}"), *p))
        .collect();
    let mut a = app("/dns", 0, json!({}), tasks);
    a["portDefinitions"][0]["protocol"] = json!("udp");
    a["portDefinitions"][0]["labels"] = json!({ "VIP_0": "/resolver:5353" });
    marathon.set_apps(vec![a]);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"external\"\n[vip]\nrange = \"127.79.0.0/16\"\nudp_idle_timeout = \"1s\"\n",
        marathon.url()
    );
    let sy = Switchyard::start("vip-udp", &config);
    let routes = sy
        .wait_routes("udp vip", |r| {
            r["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["app_id"] == "vip:resolver/udp")
        })
        .await;
    let svc = routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == "vip:resolver/udp")
        .unwrap()
        .clone();
    assert_eq!(svc["mode"], "udp");
    let vip: SocketAddr = svc["listen"].as_str().unwrap().parse().unwrap();

    let mut answered_by = std::collections::BTreeSet::new();
    // Flows hash over the two backends: with 32 of them, all on one has odds of 2^-31 (with 12,
    // 1 in 2,048 — seen once).
    for client in 0..32 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut first = None;
        for i in 0..3 {
            let msg = format!("hello {client}/{i}");
            // The VIP binds lazily after the table swap: retry the first datagram briefly.
            let reply = wait_for("udp reply", || async {
                socket.send_to(msg.as_bytes(), vip).await.unwrap();
                let mut buf = vec![0u8; 2048];
                match tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    socket.recv_from(&mut buf),
                )
                .await
                {
                    Ok(Ok((n, from))) => {
                        Some((String::from_utf8_lossy(&buf[..n]).to_string(), from))
                    }
                    _ => None,
                }
            })
            .await;
            assert_eq!(reply.1, vip, "replies come from the VIP address");
            let (backend, echoed) = reply.0.split_once(':').unwrap();
            assert_eq!(echoed, msg);
            // One flow, one backend.
            assert_eq!(*first.get_or_insert(backend.to_string()), backend);
        }
        answered_by.insert(first.unwrap());
    }
    assert_eq!(
        answered_by.len(),
        2,
        "flows spread over both backends: {answered_by:?}"
    );
}

/// A UDP echo backend; returns its port.
async fn udp_echo() -> u16 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    });
    port
}

async fn udp_roundtrip(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    msg: &[u8],
    wait: std::time::Duration,
) -> bool {
    socket.send_to(msg, to).await.unwrap();
    let mut buf = vec![0u8; 2048];
    matches!(tokio::time::timeout(wait, socket.recv_from(&mut buf)).await, Ok(Ok((n, _))) if &buf[..n] == msg)
}

#[tokio::test]
async fn the_udp_session_table_is_bounded_and_sessions_expire() {
    let port = udp_echo().await;
    let marathon = Marathon::start().await;
    let vip_port = free_port();
    let mut a = app("/echo", 0, json!({}), vec![task("/echo", "echo.1", port)]);
    a["portDefinitions"][0]["protocol"] = json!("udp");
    a["portDefinitions"][0]["labels"] = json!({ "VIP_0": format!("127.89.0.9:{vip_port}") });
    marathon.set_apps(vec![a]);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"external\"\n[vip]\n\
         udp_idle_timeout = \"500ms\"\nudp_max_sessions = 2\n",
        marathon.url()
    );
    let sy = Switchyard::start("vip-udp-bound", &config);
    sy.wait_routes("udp vip", |r| {
        r["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["mode"] == "udp")
    })
    .await;
    let vip: SocketAddr = format!("127.89.0.9:{vip_port}").parse().unwrap();
    let short = std::time::Duration::from_millis(200);
    let (c1, c2, c3) = (
        tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    );
    // Through an IP VIP; the listener opens right after the swap, so retry the first datagram.
    wait_for("first flow", || async {
        udp_roundtrip(&c1, vip, b"one", short).await.then_some(())
    })
    .await;
    assert!(
        udp_roundtrip(&c2, vip, b"two", short).await,
        "second flow, first datagram"
    );
    // The table holds two sessions: a third flow's datagrams are dropped while they live ...
    assert!(
        !udp_roundtrip(&c3, vip, b"three", short).await,
        "over the bound: dropped"
    );
    // ... and answered once the others have been idle for the timeout.
    wait_for("idle sessions expire", || async {
        udp_roundtrip(&c3, vip, b"three", short).await.then_some(())
    })
    .await;
}

/// A `udp` port with a service port is served over UDP on that port, through the same relay as
/// UDP VIPs: datagrams go both ways, replies come from the service port, and flows spread over
/// the tasks. A `udp,tcp` port gets both.
#[tokio::test]
async fn udp_service_ports_relay_both_ways_and_reply_from_the_service_port() {
    let ports = [named_udp_backend("u1").await, named_udp_backend("u2").await];
    let marathon = Marathon::start().await;
    let (service_port, both_port) = (free_port(), free_port());
    let tasks = ports
        .iter()
        .enumerate()
        .map(|(i, p)| task("/syslog", &format!("syslog.{i}"), *p))
        .collect();
    let mut a = app(
        "/syslog",
        service_port,
        json!({"HAPROXY_GROUP": "external"}),
        tasks,
    );
    a["portDefinitions"][0]["protocol"] = json!("udp");
    let (tcp_echo, _) = echo_backend().await;
    let mut b = app(
        "/both",
        both_port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![task("/both", "both.0", tcp_echo.port())],
    );
    b["portDefinitions"][0]["protocol"] = json!("udp,tcp");
    marathon.set_apps(vec![a, b]);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\n",
        marathon.url()
    );
    let sy = Switchyard::start("udp-service-port", &config);
    let routes = sy
        .wait_routes("udp service port", |r| {
            r["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["app_id"] == "udp:/syslog")
        })
        .await;
    let services = routes["services"].as_array().unwrap();
    let svc = services
        .iter()
        .find(|s| s["app_id"] == "udp:/syslog")
        .unwrap();
    assert_eq!(svc["mode"], "udp");
    let listen = local(service_port);
    assert_eq!(svc["listen"], listen.to_string());
    assert!(
        !services.iter().any(|s| s["app_id"] == "/syslog"),
        "a udp port has no TCP service"
    );
    // `udp,tcp`: a TCP service and a UDP one on the same port.
    let both: Vec<&Value> = services
        .iter()
        .filter(|s| s["app_id"] == "/both" || s["app_id"] == "udp:/both")
        .collect();
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(!routes["problems"].to_string().contains("UDP"), "{routes}");

    let mut answered_by = std::collections::BTreeSet::new();
    for client in 0..32 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut first = None;
        for i in 0..2 {
            let msg = format!("hello {client}/{i}");
            // The socket binds after the table swap: retry the first datagram briefly.
            let reply = wait_for("udp reply", || async {
                socket.send_to(msg.as_bytes(), listen).await.unwrap();
                let mut buf = vec![0u8; 2048];
                match tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    socket.recv_from(&mut buf),
                )
                .await
                {
                    Ok(Ok((n, from))) => {
                        Some((String::from_utf8_lossy(&buf[..n]).to_string(), from))
                    }
                    _ => None,
                }
            })
            .await;
            assert_eq!(reply.1, listen, "replies come from the service port");
            let (backend, echoed) = reply.0.split_once(':').unwrap();
            assert_eq!(echoed, msg);
            assert_eq!(*first.get_or_insert(backend.to_string()), backend);
        }
        answered_by.insert(first.unwrap());
    }
    assert_eq!(answered_by.len(), 2, "flows spread: {answered_by:?}");
}

/// A UDP backend that answers every datagram with `name:` and the datagram; returns its port.
async fn named_udp_backend(name: &'static str) -> u16 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let reply = [name.as_bytes(), b":", &buf[..n]].concat();
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    port
}

/// One datagram from `socket` to `to`; the name of the backend that answered within 200 ms.
async fn udp_ask(socket: &tokio::net::UdpSocket, to: SocketAddr, msg: &str) -> Option<String> {
    socket.send_to(msg.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let wait = std::time::Duration::from_millis(200);
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) if from == to => {
            let reply = String::from_utf8_lossy(&buf[..n]).to_string();
            let (backend, echoed) = reply.split_once(':')?;
            (echoed == msg).then(|| backend.to_string())
        }
        _ => None,
    }
}

/// Switchyard serving one `udp` app on a service port with these tasks and labels.
async fn udp_service(
    name: &str,
    backends: &[u16],
    labels: Value,
    vip_settings: &str,
) -> (Switchyard, Marathon, SocketAddr) {
    let marathon = Marathon::start().await;
    let service_port = free_port();
    let tasks = backends
        .iter()
        .enumerate()
        .map(|(i, p)| task("/udp", &format!("udp.{i}"), *p))
        .collect();
    let mut a = app("/udp", service_port, labels, tasks);
    a["portDefinitions"][0]["protocol"] = json!("udp");
    marathon.set_apps(vec![a]);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"*\"\nbind = \"127.0.0.1\"\n\
         [vip]\n{vip_settings}\n",
        marathon.url()
    );
    let sy = Switchyard::start(name, &config);
    sy.wait_routes("udp service port", |r| {
        r["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["app_id"] == "udp:/udp")
    })
    .await;
    let listen = local(service_port);
    // The listener opens right after the swap: wait for a first answer.
    let probe = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    wait_for("the UDP service port answers", || async {
        udp_ask(&probe, listen, "first").await
    })
    .await;
    (sy, marathon, listen)
}

/// `HAPROXY_0_BALANCE=source` on a UDP service port: every flow of a client address lands on the
/// same backend, whatever its source port and across sessions, while different clients spread.
#[tokio::test]
async fn a_udp_clients_flows_stay_on_one_backend_under_source_hashing() {
    let backends = [named_udp_backend("a").await, named_udp_backend("b").await];
    let (_sy, _marathon, listen) = udp_service(
        "udp-source",
        &backends,
        json!({"HAPROXY_0_BALANCE": "source"}),
        "",
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for client in 2..34u8 {
        let ip = format!("127.0.3.{client}");
        let mut first: Option<String> = None;
        // Four flows from four source ports of the same address.
        for flow in 0..4 {
            let socket = tokio::net::UdpSocket::bind(format!("{ip}:0"))
                .await
                .unwrap();
            let msg = format!("{ip} flow {flow}");
            let backend = wait_for("a reply", || udp_ask(&socket, listen, &msg)).await;
            assert_eq!(
                first.get_or_insert_with(|| backend.clone()),
                &backend,
                "{ip}: every flow on one backend"
            );
        }
        seen.insert(first.unwrap());
    }
    assert_eq!(seen.len(), 2, "clients spread over both backends: {seen:?}");
}

/// A UDP backend whose port is closed answers with ICMP port unreachable: each such answer is a
/// failed connect, five in a row eject it, and new flows go to the live backend only.
#[tokio::test]
async fn a_dead_udp_backend_is_skipped_after_its_icmp_errors() {
    let live = named_udp_backend("live").await;
    let dead = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let (sy, _marathon, listen) = udp_service(
        "udp-icmp",
        &[live, dead],
        json!({}),
        "udp_idle_timeout = \"30s\"",
    )
    .await;
    // Each new flow is a new session; the dead backend's share is lost until it is ejected, then
    // twenty new flows in a row are answered.
    let mut answered_in_a_row = 0;
    let deadline = std::time::Instant::now() + DEADLINE;
    for flow in 0.. {
        assert!(
            std::time::Instant::now() < deadline,
            "new flows answered by the live backend only"
        );
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        match udp_ask(&socket, listen, &format!("flow {flow}")).await {
            Some(backend) => {
                assert_eq!(backend, "live");
                answered_in_a_row += 1;
            }
            None => answered_in_a_row = 0,
        }
        if answered_in_a_row >= 20 {
            break;
        }
    }
    let dead_label = format!("127.0.0.1:{dead}");
    assert!(
        sy.metric("switchyard_backend_ejections", &[&dead_label])
            .await
            >= 1.0,
        "the dead backend was ejected"
    );
    assert!(
        sy.metric("switchyard_backend_connect_failures", &[&dead_label])
            .await
            >= 5.0
    );
    let live_label = format!("127.0.0.1:{live}");
    assert_eq!(
        sy.metric("switchyard_backend_ejections", &[&live_label])
            .await,
        0.0
    );
}

/// A flood of source ports against a UDP service port: the session table holds
/// `vip.udp_max_sessions`, new flows past it are dropped, a flow that was there keeps being
/// answered through the flood, and once the flood's sessions expire new flows are served again.
#[tokio::test]
async fn a_flood_of_udp_flows_is_bounded_by_the_session_table() {
    let backend = named_udp_backend("echo").await;
    let (_sy, _marathon, listen) = udp_service(
        "udp-flood",
        &[backend],
        json!({}),
        "udp_idle_timeout = \"1s\"\nudp_max_sessions = 8",
    )
    .await;
    let kept = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    wait_for("the kept flow answers", || udp_ask(&kept, listen, "kept")).await;
    let mut flood = Vec::new();
    for _ in 0..300 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(b"flood", listen).await.unwrap();
        flood.push(socket);
        if flood.len() % 50 == 0 {
            // The flow that was there is still answered.
            assert_eq!(
                udp_ask(&kept, listen, "kept").await.as_deref(),
                Some("echo"),
                "an existing flow through the flood"
            );
        }
    }
    // At most the table's size of the flood's flows got a session (the probe's and the kept
    // flow's sessions may still hold two places).
    let mut answered = 0;
    let mut buf = vec![0u8; 64];
    for socket in &flood {
        if let Ok(Ok(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(20), socket.recv(&mut buf)).await
        {
            answered += 1;
        }
    }
    assert!(
        answered <= 8,
        "{answered} flood flows answered over a table of 8"
    );
    // The flood stops; its sessions expire and a new flow is served.
    let late = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    wait_for("a new flow after the flood", || {
        udp_ask(&late, listen, "late")
    })
    .await;
}
