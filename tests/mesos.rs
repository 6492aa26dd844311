//! The Mesos master as a source, end to end: switchyard subscribed to the Mesos stand-in (and
//! the Marathon stand-in beside it), queried with a real DNS client over UDP, with traffic
//! through a VIP that a non-Marathon task declares.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::{Value, json};
use support::mesos::{Master, agent, framework, on_network, record, task, with_discovery};
use support::*;

async fn query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buf))
        .await
        .expect("a DNS answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

/// The addresses (A and AAAA) a name answers with, sorted.
async fn addrs(server: SocketAddr, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for qtype in [RecordType::A, RecordType::AAAA] {
        let reply = query(server, name, qtype).await;
        out.extend(reply.answers.iter().filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        }));
    }
    out.sort();
    out
}

/// SRV answers as (port, target).
async fn srv(server: SocketAddr, name: &str) -> Vec<(u16, String)> {
    let reply = query(server, name, RecordType::SRV).await;
    let mut out: Vec<(u16, String)> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

async fn rcode(server: SocketAddr, name: &str) -> ResponseCode {
    query(server, name, RecordType::A)
        .await
        .metadata
        .response_code
}

async fn dns_listening(sy: &Switchyard) -> SocketAddr {
    wait_for("dns listening", || async {
        let line = sy.log_lines("dns listening on ").into_iter().next()?;
        let rest = line.split("dns listening on ").nth(1)?;
        let addr = rest
            .split(|c: char| c.is_whitespace() || c == '\x1b')
            .next()?;
        addr.parse().ok()
    })
    .await
}

async fn wait_addrs(dns: SocketAddr, name: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(&format!("{name} = {want:?}"), || async {
        (addrs(dns, name).await == want).then_some(())
    })
    .await
}

fn cluster() -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let frameworks = vec![
        framework("F-kafka", "kafka", "127.0.0.9"),
        framework("F-spark", "spark", "127.0.0.8"),
        framework("F-marathon", "marathon", "127.0.0.7"),
    ];
    let agents = vec![agent("S1", "127.0.0.1"), agent("S2", "127.0.0.2")];
    let broker = with_discovery(
        task("broker-0__1", "broker-0", "F-kafka", "S1", &[]),
        Some("broker"),
        &[
            (9092, "client", "tcp", json!({"VIP_0": "/kafka-vip:9092"})),
            (9093, "", "udp", json!({})),
        ],
    );
    let tasks = vec![
        on_network(broker, "9.0.0.7"),
        task("driver__1", "driver", "F-spark", "S2", &[31000, 31001]),
        on_network(task("v6__1", "v6", "F-kafka", "S1", &[]), "fd00::7"),
        task("web.abc", "web", "F-marathon", "S1", &[31500]),
    ];
    (frameworks, agents, tasks)
}

/// Every Mesos-DNS and DC/OS name, from a snapshot read through a non-leader's 307, then kept
/// current by task, agent and framework events.
#[tokio::test]
async fn every_framework_is_named_as_mesos_dns_and_dcos_name_it() {
    let leader = Master::start(Duration::from_secs(1)).await;
    let standby = Master::start(Duration::from_secs(1)).await;
    standby.redirect_to(&leader);
    let (frameworks, agents, tasks) = cluster();
    leader.set_state(frameworks, agents, tasks);
    let config = format!(
        "[discovery.mesos]\nmasters = [\"{}\", \"{}\"]\n[vip]\nrange = \"127.81.0.0/16\"\n\
         [proxy]\nbind = \"127.0.0.1\"\n[dns]\nlisten = \"127.0.0.1:0\"\n",
        standby.address(),
        leader.address()
    );
    let sy = Switchyard::start("mesos-names", &config);
    let dns = dns_listening(&sy).await;
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert!(
        !standby.requests().is_empty(),
        "the first master was asked, and answered 307"
    );
    let routes = sy.routes().await;
    assert_eq!(routes["mesos"]["connected"], true, "{}", routes["mesos"]);
    assert_eq!(
        routes["mesos"]["leader"],
        format!("http://{}", leader.address())
    );
    assert_eq!(
        routes["source_connected"], true,
        "Mesos alone is the source"
    );

    // Tasks: by the IP sources (container address on a named network, else the agent's).
    assert_eq!(addrs(dns, "broker.kafka.mesos.").await, ["9.0.0.7"]);
    assert_eq!(addrs(dns, "broker.kafka.slave.mesos.").await, ["127.0.0.1"]);
    assert_eq!(addrs(dns, "driver.spark.mesos.").await, ["127.0.0.2"]);
    assert_eq!(addrs(dns, "v6.kafka.mesos.").await, ["fd00::7"]);
    assert_eq!(
        addrs(dns, "web.marathon.mesos.").await,
        ["127.0.0.1"],
        "Marathon's tasks from Mesos alone"
    );
    // SRV from DiscoveryInfo ports (named too), else from port resources (TCP and UDP).
    let broker = srv(dns, "_broker._tcp.kafka.mesos.").await;
    assert_eq!(broker.len(), 1);
    assert_eq!(broker[0].0, 9092);
    assert_eq!(
        addrs(dns, &broker[0].1).await,
        ["9.0.0.7"],
        "the SRV target"
    );
    assert_eq!(srv(dns, "_client._broker._tcp.kafka.mesos.").await, broker);
    assert_eq!(srv(dns, "_broker._udp.kafka.mesos.").await[0].0, 9093);
    for proto in ["_tcp", "_udp"] {
        let driver = srv(dns, &format!("_driver.{proto}.spark.mesos.")).await;
        let ports: Vec<u16> = driver.iter().map(|(p, _)| *p).collect();
        assert_eq!(ports, [31000, 31001], "{proto}");
        assert_eq!(addrs(dns, &driver[0].1).await, ["127.0.0.2"]);
    }
    // Frameworks, masters, the leader, agents.
    assert_eq!(addrs(dns, "kafka.mesos.").await, ["127.0.0.9"]);
    assert_eq!(addrs(dns, "spark.mesos.").await, ["127.0.0.8"]);
    assert_eq!(addrs(dns, "leader.mesos.").await, ["127.0.0.1"]);
    assert_eq!(addrs(dns, "master.mesos.").await, ["127.0.0.1"]);
    assert_eq!(addrs(dns, "master0.mesos.").await, ["127.0.0.1"]);
    assert_eq!(addrs(dns, "master1.mesos.").await, ["127.0.0.1"]);
    for proto in ["_tcp", "_udp"] {
        assert_eq!(
            srv(dns, &format!("_leader.{proto}.mesos.")).await,
            [(leader.addr.port(), "leader.mesos.".to_string())]
        );
    }
    assert_eq!(addrs(dns, "slave.mesos.").await, ["127.0.0.1", "127.0.0.2"]);
    assert_eq!(
        srv(dns, "_slave._tcp.mesos.").await,
        [(5051, "slave.mesos.".to_string())]
    );
    // DC/OS's names.
    let d = "dcos.thisdcos.directory.";
    assert_eq!(
        addrs(dns, &format!("broker.kafka.autoip.{d}")).await,
        ["9.0.0.7"]
    );
    assert_eq!(
        addrs(dns, &format!("broker.kafka.agentip.{d}")).await,
        ["127.0.0.1"]
    );
    assert_eq!(
        addrs(dns, &format!("broker.kafka.containerip.{d}")).await,
        ["9.0.0.7"]
    );
    assert_eq!(
        addrs(dns, &format!("driver.spark.autoip.{d}")).await,
        ["127.0.0.2"]
    );
    assert!(
        addrs(dns, &format!("driver.spark.containerip.{d}"))
            .await
            .is_empty()
    );
    assert_eq!(
        addrs(dns, &format!("web.marathon.agentip.{d}")).await,
        ["127.0.0.1"]
    );
    // The VIP declared on the broker's DiscoveryInfo port, under its framework.
    let vip = addrs(dns, "kafka-vip.kafka.l4lb.thisdcos.directory.").await;
    assert_eq!(vip.len(), 1);
    assert!(vip[0].starts_with("127.81."), "{vip:?}");
    assert_eq!(
        rcode(dns, "nothing.kafka.mesos.").await,
        ResponseCode::NXDomain
    );

    // Events: a task added, one killed, an agent gone, frameworks added and removed.
    leader.add_task(task("zk-0__1", "zk", "F-kafka", "S1", &[2181]));
    wait_addrs(dns, "zk.kafka.mesos.", &["127.0.0.1"]).await;
    leader.update_task("broker-0__1", "TASK_KILLED", 1_700_000_100.0);
    wait_for("broker gone", || async {
        (rcode(dns, "broker.kafka.mesos.").await == ResponseCode::NXDomain).then_some(())
    })
    .await;
    leader.remove_agent("S2");
    wait_addrs(dns, "slave.mesos.", &["127.0.0.1"]).await;
    leader.add_framework(framework("F-cass", "cassandra", "127.0.0.6"));
    wait_addrs(dns, "cassandra.mesos.", &["127.0.0.6"]).await;
    leader.remove_framework("F-spark");
    wait_for("spark gone", || async {
        (rcode(dns, "driver.spark.mesos.").await == ResponseCode::NXDomain
            && addrs(dns, "spark.mesos.").await.is_empty())
        .then_some(())
    })
    .await;
    assert_eq!(leader.subscriptions(), 1, "all of it on one subscription");
}

/// Garbage and oversized records are skipped, counted and listed; broken framing, a dropped
/// stream and a missed heartbeat each mean a new subscription and a fresh snapshot.
#[tokio::test]
async fn bad_records_are_skipped_and_a_silent_or_dropped_stream_is_resubscribed() {
    let leader = Master::start(Duration::from_millis(500)).await;
    let (frameworks, agents, tasks) = cluster();
    leader.set_state(frameworks, agents, tasks);
    let config = format!(
        "[discovery]\nbackoff_initial = \"20ms\"\nbackoff_max = \"100ms\"\n\
         [discovery.mesos]\nmasters = [\"{}\"]\nheartbeat_slack = \"1s\"\nmax_record_bytes = 2048\n\
         [dns]\nlisten = \"127.0.0.1:0\"\n",
        leader.address()
    );
    let sy = Switchyard::start("mesos-faults", &config);
    let dns = dns_listening(&sy).await;
    wait_addrs(dns, "driver.spark.mesos.", &["127.0.0.2"]).await;

    leader.send_raw(&record(b"{not json"));
    leader.send_raw(&record(&[b' '; 5000]));
    leader.send_raw(&record(br#"{"type":"TASK_ADDED","task_added":{}}"#));
    leader.add_task(task("zk-0__1", "zk", "F-kafka", "S1", &[2181]));
    wait_addrs(dns, "zk.kafka.mesos.", &["127.0.0.1"]).await;
    let routes = sy.routes().await;
    let m = &routes["mesos"];
    assert_eq!(m["malformed_records"], 3, "{m}");
    let recent = m["recent_malformed"].to_string();
    assert!(
        recent.contains("5000 bytes, over the 2048-byte bound"),
        "{recent}"
    );
    assert!(recent.contains("TASK_ADDED without"), "{recent}");
    assert_eq!(leader.subscriptions(), 1, "bad records are not fatal");
    assert!(
        sy.metric("switchyard_source_malformed_events_total", &[])
            .await
            >= 3.0
    );

    // Framing that cannot be followed: a new subscription and its snapshot.
    leader.send_raw(b"xyz\n");
    wait_for("resubscribed after bad framing", || async {
        (leader.subscriptions() == 2 && leader.open_streams() == 1).then_some(())
    })
    .await;
    // Dropped: what changed meanwhile comes with the fresh snapshot.
    let (frameworks, agents, mut tasks) = cluster();
    tasks.push(task("late__1", "late", "F-spark", "S2", &[31999]));
    leader.set_state(frameworks, agents, tasks);
    leader.drop_streams();
    wait_addrs(dns, "late.spark.mesos.", &["127.0.0.2"]).await;
    assert!(leader.subscriptions() >= 3);
    let routes = sy.routes().await;
    assert_eq!(routes["mesos"]["connected"], true);

    // Silence past the heartbeat interval and slack: dropped and subscribed again.
    let before = leader.subscriptions();
    leader.heartbeats(false);
    wait_for("resubscribed after missed heartbeats", || async {
        (leader.subscriptions() > before).then_some(())
    })
    .await;
    leader.heartbeats(true);
    assert!(
        !sy.log_lines("no heartbeat for").is_empty(),
        "the reason is logged"
    );
}

/// A master may announce any heartbeat interval; a silence is still bounded by
/// `discovery.stream_idle_timeout`: one announcing a day and then sending nothing is left and
/// subscribed to again.
#[tokio::test]
async fn an_announced_day_long_heartbeat_does_not_outlast_the_idle_timeout() {
    let leader = Master::start(Duration::from_secs(86_399)).await;
    let (frameworks, agents, tasks) = cluster();
    leader.set_state(frameworks, agents, tasks);
    let config = format!(
        "[discovery]\nbackoff_initial = \"20ms\"\nbackoff_max = \"100ms\"\n\
         stream_idle_timeout = \"1s\"\n\
         [discovery.mesos]\nmasters = [\"{}\"]\n[dns]\nlisten = \"127.0.0.1:0\"\n",
        leader.address()
    );
    let sy = Switchyard::start("mesos-day-heartbeat", &config);
    let dns = dns_listening(&sy).await;
    wait_addrs(dns, "driver.spark.mesos.", &["127.0.0.2"]).await;
    wait_for("resubscribed after the idle timeout", || async {
        (leader.subscriptions() >= 2).then_some(())
    })
    .await;
    assert!(!sy.log_lines("no heartbeat for").is_empty());
}

/// A named VIP declared on DiscoveryInfo ports of two non-Marathon frameworks' tasks carries
/// traffic to both.
#[tokio::test]
async fn a_vip_from_other_frameworks_carries_traffic() {
    let (a, b) = (
        Backend::start("cassandra").await,
        Backend::start("kafka").await,
    );
    let leader = Master::start(Duration::from_secs(1)).await;
    let vip = json!({"VIP_0": "/db:7000"});
    leader.set_state(
        vec![
            framework("F-cass", "cassandra", "127.0.0.1"),
            framework("F-kafka", "kafka", "127.0.0.1"),
        ],
        vec![agent("S1", "127.0.0.1")],
        vec![
            with_discovery(
                task("node-0__1", "node-0", "F-cass", "S1", &[a.port()]),
                None,
                &[(a.port(), "native", "tcp", vip.clone())],
            ),
            with_discovery(
                task("broker-0__1", "broker-0", "F-kafka", "S1", &[b.port()]),
                None,
                &[(b.port(), "client", "tcp", vip)],
            ),
        ],
    );
    let config = format!(
        "[discovery.mesos]\nmasters = [\"{}\"]\n[proxy]\nbind = \"127.0.0.1\"\n\
         [vip]\nrange = \"127.79.0.0/16\"\n[dns]\nlisten = \"127.0.0.1:0\"\n",
        leader.address()
    );
    let sy = Switchyard::start("mesos-vip", &config);
    let dns = dns_listening(&sy).await;
    let routes = sy
        .wait_routes("the VIP", |r| {
            r["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["app_id"] == "vip:db" && s["backends"].as_array().unwrap().len() == 2)
        })
        .await;
    let service = routes["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["app_id"] == "vip:db")
        .unwrap()
        .clone();
    let addr: SocketAddr = service["listen"].as_str().unwrap().parse().unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let (status, body) = http_get(addr, "/").await.unwrap();
        assert_eq!(status, 200);
        seen.insert(body);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["cassandra", "kafka"]);
    for fw in ["cassandra", "kafka"] {
        assert_eq!(
            addrs(dns, &format!("db.{fw}.l4lb.thisdcos.directory.")).await,
            [addr.ip().to_string()]
        );
    }
    // One framework's task ends: the VIP keeps serving from the other.
    leader.update_task("node-0__1", "TASK_FAILED", 1_700_000_100.0);
    sy.wait_routes("one backend", |r| {
        r["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["app_id"] == "vip:db" && s["backends"].as_array().unwrap().len() == 1)
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            http_get(addr, "/").await.unwrap(),
            (200, "kafka".to_string())
        );
    }
}

/// Marathon and Mesos together: a Marathon task that Mesos also reports is one task (one SRV
/// record, one backend); a fresher terminal state from Mesos takes it out before Marathon says.
#[tokio::test]
async fn both_sources_see_one_task_once_and_the_fresher_state_wins() {
    let backend = Backend::start("web").await;
    let marathon = support::marathon::Marathon::start().await;
    let service_port = free_port();
    marathon.set_apps(vec![support::marathon::app(
        "/web",
        service_port,
        json!({"HAPROXY_GROUP": "external"}),
        vec![support::marathon::task("/web", "web.abc", backend.port())],
    )]);
    let leader = Master::start(Duration::from_secs(1)).await;
    let (frameworks, agents, mut tasks) = cluster();
    tasks.retain(|t| t["task_id"]["value"] != "web.abc");
    tasks.push(task(
        "web.abc",
        "web",
        "F-marathon",
        "S1",
        &[backend.port()],
    ));
    leader.set_state(frameworks, agents, tasks);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[discovery.mesos]\nmasters = [\"{}\"]\n\
         [proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\n[dns]\nlisten = \"127.0.0.1:0\"\n",
        marathon.url(),
        leader.address()
    );
    let sy = Switchyard::start("mesos-both", &config);
    let dns = dns_listening(&sy).await;
    wait_addrs(dns, "driver.spark.mesos.", &["127.0.0.2"]).await;
    sy.wait_routes("the web service", |r| backends(r, service_port).len() == 1)
        .await;
    let web = srv(dns, "_web._tcp.marathon.mesos.").await;
    assert_eq!(web.len(), 1, "one task, one SRV record: {web:?}");
    assert_eq!(web[0].0, backend.port());
    assert_eq!(
        answers(service_port, 5).await,
        ["web"],
        "served through Marathon's service port"
    );
    // Mesos says the task was killed, after Marathon last said anything about it.
    leader.update_task("web.abc", "TASK_KILLED", 1_800_000_000.0);
    sy.wait_routes("the task gone", |r| backends(r, service_port).is_empty())
        .await;
    wait_for("its names gone", || async {
        (rcode(dns, "web.marathon.mesos.").await == ResponseCode::NXDomain).then_some(())
    })
    .await;
}
