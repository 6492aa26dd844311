//! DNS end to end: switchyard against the Marathon stand-in, queried over UDP and TCP with
//! hickory's message codec on plain sockets (and with `dig` where it is installed).

mod support;

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::{Value, json};
use support::marathon::{Marathon, app, status_update, task};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn message(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

async fn udp_raw(server: SocketAddr, packet: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buf))
        .await
        .expect("a UDP answer")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn udp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> (Message, usize) {
    let bytes = udp_raw(server, &message(name, qtype, edns).to_vec().unwrap()).await;
    (Message::from_vec(&bytes).unwrap(), bytes.len())
}

async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let packet = message(name, qtype, None).to_vec().unwrap();
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream
        .write_all(&(packet.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&packet).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut reply = vec![0u8; len as usize];
    stream.read_exact(&mut reply).await.unwrap();
    Message::from_vec(&reply).unwrap()
}

fn ips(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn host_task(app_id: &str, id: &str, host: &str, port: u16) -> Value {
    let mut t = task(app_id, id, port);
    t["host"] = json!(host);
    t["ipAddresses"] = json!([{"ipAddress": host, "protocol": "IPv4"}]);
    t
}

struct Setup {
    marathon: Marathon,
    sy: Switchyard,
    dns: SocketAddr,
}

async fn setup(name: &str, apps: Vec<Value>, dns_extra: &str) -> Setup {
    setup_on(name, apps, "127.0.0.1:0", dns_extra).await
}

/// Switchyard with DNS on `listen` (port 0: the port is read from the log) and the `apps`.
async fn setup_on(name: &str, apps: Vec<Value>, listen: &str, dns_extra: &str) -> Setup {
    let marathon = Marathon::start().await;
    marathon.set_apps(apps);
    let config = format!(
        "[discovery]\nmarathon = [\"{}\"]\n[proxy]\ngroup = \"external\"\nbind = \"127.0.0.1\"\n\
         [dns]\nlisten = \"{listen}\"\n{dns_extra}\n",
        marathon.url()
    );
    let sy = Switchyard::start(name, &config);
    let dns = dns_listening(&sy).await;
    wait_for("ready", || async {
        (sy.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    Setup { marathon, sy, dns }
}

fn api_app(tasks: usize) -> Value {
    let tasks = (0..tasks)
        .map(|i| {
            host_task(
                "/prod/api",
                &format!("api.{i}"),
                &format!("127.0.{}.{}", i / 200, i % 200 + 1),
                31000 + i as u16,
            )
        })
        .collect();
    let mut a = app("/prod/api", 10000, json!({}), tasks);
    a["portDefinitions"][0]["name"] = json!("http");
    a
}

#[tokio::test]
async fn records_over_udp_and_tcp_follow_marathon_events() {
    let mut v6 = app("/v6", 10001, json!({}), vec![]);
    v6["networks"] = json!([{"mode": "container", "name": "dcos"}]);
    v6["container"] =
        json!({"type": "MESOS", "portMappings": [{"containerPort": 8080, "servicePort": 10001}]});
    let mut t = task("/v6", "v6.1", 31999);
    t["ipAddresses"] = json!([{"ipAddress": "fd00::7", "protocol": "IPv6"}]);
    v6["tasks"] = json!([t]);
    let s = setup("dns-records", vec![api_app(2), v6], "").await;

    let (m, _) = udp(s.dns, "api-prod.marathon.mesos.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(ips(&m.answers), vec!["127.0.0.1", "127.0.0.2"]);
    let (m, _) = udp(s.dns, "V6.Marathon.Mesos.", RecordType::AAAA, None).await;
    assert_eq!(ips(&m.answers), vec!["fd00::7"]);
    let (m, _) = udp(s.dns, "api-prod.marathon.slave.mesos.", RecordType::A, None).await;
    assert_eq!(ips(&m.answers), vec!["127.0.0.1", "127.0.0.2"]);

    for m in [
        udp(
            s.dns,
            "_api-prod._tcp.marathon.mesos.",
            RecordType::SRV,
            None,
        )
        .await
        .0,
        tcp(
            s.dns,
            "_http._api-prod._tcp.marathon.mesos.",
            RecordType::SRV,
        )
        .await,
    ] {
        let mut ports: Vec<u16> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.port),
                _ => None,
            })
            .collect();
        ports.sort();
        assert_eq!(ports, vec![31000, 31001]);
        assert_eq!(
            ips(&m.additionals),
            vec!["127.0.0.1", "127.0.0.2"],
            "targets' addresses in additionals"
        );
        // Each target names exactly one task.
        for r in &m.answers {
            let RData::SRV(srv) = &r.data else { panic!() };
            let (t, _) = udp(s.dns, &srv.target.to_ascii(), RecordType::A, None).await;
            assert_eq!(t.answers.len(), 1);
        }
    }
    let v6_srv = tcp(s.dns, "_v6._tcp.marathon.mesos.", RecordType::SRV).await;
    assert!(matches!(&v6_srv.answers[0].data, RData::SRV(srv) if srv.port == 8080));

    // A new task appears within the event's swap; a killed one leaves.
    let mut started = status_update("/prod/api", "api.9", 31009, "TASK_RUNNING");
    started["host"] = json!("127.0.0.9");
    started["ipAddresses"] = json!([{"ipAddress": "127.0.0.9", "protocol": "IPv4"}]);
    s.marathon.send_event(started);
    wait_for("third address", || async {
        let (m, _) = udp(s.dns, "api-prod.marathon.mesos.", RecordType::A, None).await;
        (ips(&m.answers) == vec!["127.0.0.1", "127.0.0.2", "127.0.0.9"]).then_some(())
    })
    .await;
    s.marathon
        .send_event(status_update("/prod/api", "api.0", 31000, "TASK_KILLING"));
    wait_for("api.0 gone", || async {
        let (m, _) = udp(s.dns, "api-prod.marathon.mesos.", RecordType::A, None).await;
        (ips(&m.answers) == vec!["127.0.0.2", "127.0.0.9"]).then_some(())
    })
    .await;
    assert!(
        s.sy.metric(
            "switchyard_dns_queries_total",
            &["qtype=\"SRV\"", "NOERROR"]
        )
        .await
            >= 3.0
    );
}

#[tokio::test]
async fn negative_answers_carry_the_soa_and_the_apex_has_soa_and_ns() {
    let s = setup("dns-negative", vec![api_app(1)], "").await;
    let (m, _) = udp(s.dns, "missing.marathon.mesos.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));
    let (m, _) = udp(s.dns, "api-prod.marathon.mesos.", RecordType::MX, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));
    let (m, _) = udp(s.dns, "marathon.mesos.", RecordType::A, None).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "an empty non-terminal exists"
    );
    let (m, _) = udp(s.dns, "mesos.", RecordType::SOA, None).await;
    assert!(matches!(m.answers[0].data, RData::SOA(_)));
    let (m, _) = udp(s.dns, "mesos.", RecordType::NS, None).await;
    assert!(matches!(&m.answers[0].data, RData::NS(ns) if ns.0.to_ascii() == "ns1.mesos."));
    let (m, _) = udp(s.dns, "ns1.mesos.", RecordType::A, None).await;
    assert_eq!(ips(&m.answers), vec!["127.0.0.1"]);
}

#[tokio::test]
async fn big_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let s = setup("dns-truncation", vec![api_app(40)], "").await;
    let name = "_api-prod._tcp.marathon.mesos.";
    let (m, size) = udp(s.dns, name, RecordType::SRV, None).await;
    assert!(size <= 512, "{size}");
    assert!(m.metadata.truncation);
    assert!(m.additionals.is_empty() && m.answers.len() < 40);
    let m = tcp(s.dns, name, RecordType::SRV).await;
    assert!(!m.metadata.truncation);
    assert_eq!((m.answers.len(), m.additionals.len()), (40, 40));
    let (m, size) = udp(s.dns, "api-prod.marathon.mesos.", RecordType::A, Some(4096)).await;
    assert!(size > 512, "EDNS0 lets 40 A records through: {size}");
    assert_eq!(m.answers.len(), 40);
    assert!(!m.metadata.truncation);
    assert_eq!(m.edns.map(|e| e.max_payload()), Some(1232));
    assert!(s.sy.metric("switchyard_dns_truncated_total", &[]).await >= 1.0);
}

/// A query the stub upstream got: its name, ID, and the port it came from.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    id: u16,
    port: u16,
}

type Log = std::sync::Arc<std::sync::Mutex<Vec<Seen>>>;

fn names(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|s| s.name.clone()).collect()
}

/// The stub upstream's messages for a query: `big.*` has 300 A records (about 4.8 KB);
/// `spoofed.*` is answered first under another ID, then for another question (both with
/// 198.51.100.66), then rightly; every other name has 192.0.2.1.
fn stub_replies(packet: &[u8]) -> Vec<Vec<u8>> {
    let q = Message::from_vec(packet).unwrap();
    let name = q.queries[0].name().clone();
    let reply = |id: u16, question: &Name, addrs: Vec<std::net::Ipv4Addr>| {
        let mut r = Message::response(id, q.metadata.op_code);
        r.metadata.recursion_available = true;
        r.add_query(Query::query(question.clone(), q.queries[0].query_type()));
        for a in addrs {
            r.add_answer(Record::from_rdata(question.clone(), 30, RData::A(a.into())));
        }
        r.to_vec().unwrap()
    };
    let id = q.metadata.id;
    let first = name.to_ascii().to_ascii_lowercase();
    if first.starts_with("big.") {
        let addrs = (0..300u16)
            .map(|i| std::net::Ipv4Addr::new(192, 0, 2 + (i / 250) as u8, (i % 250) as u8))
            .collect();
        return vec![reply(id, &name, addrs)];
    }
    let one = vec!["192.0.2.1".parse().unwrap()];
    if first.starts_with("badvers.") {
        // BADVERS (16): 0 in the header, the upper bits (1) in the OPT record.
        let mut r = Message::response(id, q.metadata.op_code);
        r.add_query(q.queries[0].clone());
        r.metadata.response_code = ResponseCode::BADVERS;
        r.set_edns(Edns::new());
        let bytes = r.to_vec().unwrap();
        assert_eq!(bytes[3] & 0x0f, 0, "the header holds the lower bits only");
        return vec![bytes];
    }
    if first.starts_with("spoofed.") {
        let spoof = vec!["198.51.100.66".parse().unwrap()];
        let other = Name::from_ascii("other.example.").unwrap();
        return vec![
            reply(id.wrapping_add(1), &name, spoof.clone()),
            reply(id, &other, spoof),
            reply(id, &name, one),
        ];
    }
    vec![reply(id, &name, one)]
}

/// A UDP socket and a TCP listener on one loopback port: another port when TCP finds the one
/// UDP got taken (by another test's connection).
async fn one_port() -> (UdpSocket, tokio::net::TcpListener) {
    loop {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(socket.local_addr().unwrap()).await {
            return (socket, tcp);
        }
    }
}

/// A stub upstream on loopback, over UDP and TCP (see [`stub_replies`]), logging what it got.
async fn stub_upstream() -> (SocketAddr, Log) {
    let seen: Log = Default::default();
    let (socket, tcp) = one_port().await;
    let addr = socket.local_addr().unwrap();
    let log = |packet: &[u8], port: u16, seen: &Log| {
        let q = Message::from_vec(packet).unwrap();
        seen.lock().unwrap().push(Seen {
            name: q.queries[0].name().to_ascii(),
            id: q.metadata.id,
            port,
        });
    };
    let udp_seen = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            log(&buf[..n], peer.port(), &udp_seen);
            for reply in stub_replies(&buf[..n]) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    let tcp_seen = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = tcp.accept().await {
            let len = stream.read_u16().await.unwrap();
            let mut packet = vec![0u8; len as usize];
            stream.read_exact(&mut packet).await.unwrap();
            log(&packet, peer.port(), &tcp_seen);
            for reply in stub_replies(&packet) {
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                // The relay may have what it waited for and be gone.
                let _ = stream.write_all(&framed).await;
            }
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn relayed_queries_go_under_their_own_id_and_take_only_their_reply() {
    let (upstream, seen) = stub_upstream().await;
    let s = setup(
        "dns-relay-ids",
        vec![],
        &format!("upstreams = [\"{upstream}\"]\nupstream_timeout = \"10s\""),
    )
    .await;
    // A reply under another ID, then one for another question, come first: both ignored.
    let mut q = message("spoofed.example.", RecordType::A, None);
    q.metadata.id = 0x4242;
    let m = Message::from_vec(&udp_raw(s.dns, &q.to_vec().unwrap()).await).unwrap();
    assert_eq!(m.metadata.id, 0x4242, "the client's ID comes back");
    assert_eq!(ips(&m.answers), vec!["192.0.2.1"]);
    assert_eq!(m.queries[0].name().to_ascii(), "spoofed.example.");
    let m = tcp_message(s.dns, &q).await;
    assert_eq!(m.metadata.id, 0x4242);
    assert_eq!(ips(&m.answers), vec!["192.0.2.1"]);
    // More queries under the same client ID: the upstream sees IDs (and ports) of switchyard's.
    for _ in 0..4 {
        let m = Message::from_vec(&udp_raw(s.dns, &q.to_vec().unwrap()).await).unwrap();
        assert_eq!(m.metadata.id, 0x4242);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    assert!(
        seen.iter().any(|s| s.id != 0x4242),
        "not the client's ID: {seen:?}"
    );
    let ports: std::collections::BTreeSet<u16> = seen.iter().map(|s| s.port).collect();
    assert!(ports.len() > 1, "a socket per relayed query: {seen:?}");
}

#[tokio::test]
async fn recursion_only_for_allowed_clients() {
    let (upstream, seen) = stub_upstream().await;
    // Loopback is not in the list: this client is an outsider.
    let s = setup(
        "dns-acl",
        vec![api_app(1)],
        &format!("upstreams = [\"{upstream}\"]\nallow_recursion = [\"10.0.0.0/8\", \"fd00::/8\"]"),
    )
    .await;
    let (m, _) = udp(s.dns, "example.com.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    let m = tcp(s.dns, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // The served zone answers everyone.
    let (m, _) = udp(s.dns, "api-prod.marathon.mesos.", RecordType::A, None).await;
    assert_eq!(ips(&m.answers), vec!["127.0.0.1"]);
    let m = tcp(s.dns, "nope.marathon.mesos.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        names(&seen).is_empty(),
        "nothing relayed: {:?}",
        names(&seen)
    );
    assert!(
        s.sy.metric("switchyard_dns_queries_total", &["REFUSED"])
            .await
            >= 2.0
    );
}

/// A relayed answer's rcode is counted whole: BADVERS keeps its upper bits (in the OPT record)
/// in the client's answer and in the metrics, where the header's 4 bits alone say NOERROR.
#[tokio::test]
async fn a_relayed_badvers_is_counted_as_badvers() {
    let (upstream, _) = stub_upstream().await;
    let s = setup(
        "dns-relay-badvers",
        vec![],
        &format!("upstreams = [\"{upstream}\"]"),
    )
    .await;
    let (m, _) = udp(s.dns, "badvers.example.", RecordType::A, Some(1232)).await;
    assert_eq!(u16::from(m.metadata.response_code), 16, "{m:?}");
    assert!(
        s.sy.metric("switchyard_dns_queries_total", &["BADVERS"])
            .await
            >= 1.0
    );
    assert_eq!(
        s.sy.metric("switchyard_dns_queries_total", &["qtype=\"A\"", "NOERROR"])
            .await,
        0.0
    );
}

#[tokio::test]
async fn big_relayed_answers_are_truncated_to_what_the_client_takes() {
    let (upstream, _) = stub_upstream().await;
    let s = setup(
        "dns-relay-big",
        vec![],
        &format!("upstreams = [\"{upstream}\"]"),
    )
    .await;
    let name = "big.example.";
    for (edns, limit) in [(None, 512), (Some(1232), 1232), (Some(4096), 1232)] {
        let (m, size) = udp(s.dns, name, RecordType::A, edns).await;
        assert!(size <= limit, "{size} > {limit}");
        assert!(m.metadata.truncation, "TC with {edns:?}");
        assert!(m.answers.is_empty());
        assert_eq!(m.queries[0].name().to_ascii(), name);
        assert_eq!(m.edns.is_some(), edns.is_some());
    }
    // A client that claims to take more still gets at most 1232 bytes over UDP (as any other
    // UDP answer); TCP gets all of it.
    let (m, size) = udp(s.dns, name, RecordType::A, Some(65535)).await;
    assert!(size <= 1232, "{size}");
    assert!(m.metadata.truncation);
    let m = tcp(s.dns, name, RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 300);
}

#[tokio::test]
async fn other_names_are_forwarded_refused_or_servfail() {
    let (upstream, seen) = stub_upstream().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let s = setup(
        "dns-forward",
        vec![api_app(1)],
        &format!("upstreams = [\"{dead}\", \"{upstream}\"]\nupstream_timeout = \"500ms\""),
    )
    .await;
    let (m, _) = udp(s.dns, "example.com.", RecordType::A, None).await;
    assert_eq!(
        ips(&m.answers),
        vec!["192.0.2.1"],
        "the dead upstream is skipped"
    );
    let m = tcp(s.dns, "www.example.org.", RecordType::A).await;
    assert_eq!(ips(&m.answers), vec!["192.0.2.1"]);
    let (m, _) = udp(s.dns, "nothere.marathon.mesos.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // A query that does not ask for recursion (RD clear) is not relayed: REFUSED, as an
    // authoritative server answers it.
    let mut q = message("norecurse.example.", RecordType::A, None);
    q.metadata.recursion_desired = false;
    let m = Message::from_vec(&udp_raw(s.dns, &q.to_vec().unwrap()).await).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(
        tcp_message(s.dns, &q).await.metadata.response_code,
        ResponseCode::Refused
    );
    let m = Message::from_vec(
        &udp_raw(s.dns, &{
            let mut q = message("api-prod.marathon.mesos.", RecordType::A, None);
            q.metadata.recursion_desired = false;
            q.to_vec().unwrap()
        })
        .await,
    )
    .unwrap();
    assert_eq!(ips(&m.answers), vec!["127.0.0.1"], "the zone answers it");

    let seen = names(&seen);
    assert!(
        seen.iter().all(|n| !n.ends_with("mesos.")),
        "the served zone is never forwarded: {seen:?}"
    );
    assert!(
        !seen.contains(&"norecurse.example.".to_string()),
        "a query without RD is never forwarded: {seen:?}"
    );
    assert!(s.sy.metric("switchyard_dns_forwarded_total", &[]).await >= 2.0);
    assert!(
        s.sy.metric("switchyard_dns_upstream_failures_total", &[])
            .await
            >= 1.0
    );

    let none = setup("dns-refused", vec![], "").await;
    let (m, _) = udp(none.dns, "example.com.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let failing = setup(
        "dns-servfail",
        vec![],
        &format!("upstreams = [\"{dead}\"]\nupstream_timeout = \"300ms\""),
    )
    .await;
    let (m, _) = udp(failing.dns, "example.com.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

/// The address switchyard's DNS listener bound (`dns.listen` with port 0), read from its log.
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

async fn tcp_message(server: SocketAddr, query: &Message) -> Message {
    let packet = query.to_vec().unwrap();
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream
        .write_all(&(packet.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&packet).await.unwrap();
    let len = tokio::time::timeout(DEADLINE, stream.read_u16())
        .await
        .expect("a TCP answer")
        .unwrap();
    let mut reply = vec![0u8; len as usize];
    stream.read_exact(&mut reply).await.unwrap();
    Message::from_vec(&reply).unwrap()
}

#[tokio::test]
async fn served_zones_are_servfail_and_never_forwarded_before_the_first_sync() {
    // A Marathon that takes connections and never answers: no table, no zone.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (upstream, seen) = stub_upstream().await;
    let config = format!(
        "[discovery]\nmarathon = [\"http://{}\"]\n[proxy]\ngroup = \"external\"\n\
         bind = \"127.0.0.1\"\n[vip]\nenabled = true\n[dns]\nlisten = \"127.0.0.1:0\"\n\
         upstreams = [\"{upstream}\"]\nupstream_timeout = \"5s\"\n",
        silent.local_addr().unwrap()
    );
    let sy = Switchyard::start("dns-pending", &config);
    let dns = dns_listening(&sy).await;
    let served = [
        // the plain A query takes the fast path once a zone is live; SRV the general path
        ("x.marathon.mesos.", RecordType::A, None),
        ("X.Marathon.Mesos.", RecordType::A, Some(1232)),
        ("_x._tcp.marathon.mesos.", RecordType::SRV, None),
        ("mesos.", RecordType::SOA, None),
        ("foo.l4lb.thisdcos.directory.", RecordType::A, None),
        (
            "foo.marathon.l4lb.thisdcos.directory.",
            RecordType::A,
            Some(1232),
        ),
    ];
    for (name, qtype, edns) in served {
        let (m, _) = udp(dns, name, qtype, edns).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{name}");
        assert!(m.answers.is_empty());
        let m = tcp_message(dns, &message(name, qtype, edns)).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{name}");
    }
    // Other names are still forwarded.
    let (m, _) = udp(dns, "example.com.", RecordType::A, None).await;
    assert_eq!(ips(&m.answers), vec!["192.0.2.1"]);
    let m = tcp(dns, "www.example.org.", RecordType::A).await;
    assert_eq!(ips(&m.answers), vec!["192.0.2.1"]);
    // A reload before the first sync (SIGHUP, or the file touched) rebuilds nothing it cannot
    // build: the served names stay SERVFAIL, not an empty zone's NXDOMAIN.
    sy.signal("HUP");
    wait_for("the reload applied", || async {
        (sy.metric("switchyard_config_reloads_total", &["applied"])
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let watched = std::time::Instant::now();
    while watched.elapsed() < std::time::Duration::from_millis(500) {
        for (name, qtype, edns) in served {
            let (m, _) = udp(dns, name, qtype, edns).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::ServFail,
                "{name} after a reload"
            );
        }
    }
    assert_ne!(
        sy.get("/readyz").await.0,
        200,
        "still before the first sync"
    );
    let seen = names(&seen);
    assert_eq!(
        seen,
        vec!["example.com.", "www.example.org."],
        "the served zones are never forwarded"
    );
    drop(silent);
}

/// Asks `to` from a socket bound to `bind` and connected to `to`: the kernel drops a reply
/// from any other address, as a resolver library does.
async fn udp_connected(bind: &str, to: SocketAddr, query: &Message) -> Message {
    let socket = UdpSocket::bind(bind).await.unwrap();
    socket.connect(to).await.unwrap();
    socket.send(&query.to_vec().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no reply from {to} (from another address?)"))
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test]
async fn wildcard_listeners_reply_from_the_address_asked() {
    let (upstream, _) = stub_upstream().await;
    let extra = format!("upstreams = [\"{upstream}\"]");
    let ipv6 = std::net::UdpSocket::bind("[::1]:0").is_ok();
    for listen in ["0.0.0.0:0", "[::]:0"] {
        if listen.starts_with('[') && std::net::UdpSocket::bind(listen).is_err() {
            eprintln!("no IPv6 on this machine: [::] skipped");
            continue;
        }
        let s = setup_on("dns-wildcard", vec![api_app(2)], listen, &extra).await;
        let port = s.dns.port();
        // Linux routes all of 127/8 to lo: 127.0.0.2 is the host's second address (over [::],
        // an IPv4-mapped one).
        let mut asked = vec![("127.0.0.1:0", SocketAddr::from(([127, 0, 0, 2], port)))];
        if listen.starts_with('[') && ipv6 {
            asked.push((
                "[::1]:0",
                SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
            ));
        }
        for (bind, to) in asked {
            // The fast path, the general path, a relayed answer.
            for (name, qtype, answers) in [
                ("api-prod.marathon.mesos.", RecordType::A, 2),
                ("_api-prod._tcp.marathon.mesos.", RecordType::SRV, 2),
                ("example.com.", RecordType::A, 1),
            ] {
                let m = udp_connected(bind, to, &message(name, qtype, None)).await;
                assert_eq!(
                    m.metadata.response_code,
                    ResponseCode::NoError,
                    "{name} {to}"
                );
                assert_eq!(m.answers.len(), answers, "{name} {to}");
            }
        }
    }
}

#[tokio::test]
async fn malformed_queries_get_formerr_or_nothing_and_break_nothing() {
    let mut s = setup("dns-malformed", vec![api_app(1)], "").await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Too short for a header: no answer. A truncated question: FORMERR with the same id.
    socket.send_to(b"\x12\x34\x01", s.dns).await.unwrap();
    let mut broken = message("api-prod.marathon.mesos.", RecordType::A, None);
    broken.metadata.id = 0x4242;
    let mut bytes = broken.to_vec().unwrap();
    bytes.truncate(bytes.len() - 6);
    socket.send_to(&bytes, s.dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (0x4242, ResponseCode::FormErr),
        "the short packet got no answer"
    );
    // Two questions: FORMERR.
    let mut two = message("a.mesos.", RecordType::A, None);
    two.add_query(Query::query(
        Name::from_ascii("b.mesos.").unwrap(),
        RecordType::A,
    ));
    let reply = Message::from_vec(&udp_raw(s.dns, &two.to_vec().unwrap()).await).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // Random garbage, then a real query still answers.
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(i % 60)).map(|_| fastrand::u8(..)).collect();
        socket.send_to(&junk, s.dns).await.unwrap();
    }
    let (m, _) = udp(s.dns, "api-prod.marathon.mesos.", RecordType::A, None).await;
    assert_eq!(m.answers.len(), 1);
    assert!(s.sy.alive());
}

#[tokio::test]
async fn zone_transfers_are_refused_over_udp_and_tcp() {
    let (upstream, seen) = stub_upstream().await;
    let s = setup(
        "dns-axfr",
        vec![api_app(1)],
        &format!("upstreams = [\"{upstream}\"]"),
    )
    .await;
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        for name in ["mesos.", "example.com."] {
            let (m, _) = udp(s.dns, name, qtype, None).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::Refused,
                "{qtype} {name}"
            );
            assert!(m.answers.is_empty() && m.authorities.is_empty());
            let m = tcp(s.dns, name, qtype).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::Refused,
                "{qtype} {name}"
            );
            assert!(m.answers.is_empty() && m.authorities.is_empty());
        }
    }
    assert!(seen.lock().unwrap().is_empty(), "a transfer is not relayed");
}

#[tokio::test]
async fn mesos_dns_http_api() {
    let s = setup("dns-http", vec![api_app(2)], "").await;
    let (status, body) = s.sy.get("/v1/hosts/api-prod.marathon.mesos").await;
    assert_eq!(status, 200);
    let hosts: Value = serde_json::from_str(&body).unwrap();
    let mut got: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ip"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, vec!["127.0.0.1", "127.0.0.2"]);
    assert_eq!(hosts[0]["host"], "api-prod.marathon.mesos.");
    let (_, body) =
        s.sy.get("/v1/services/_api-prod._tcp.marathon.mesos.")
            .await;
    let services: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(services.as_array().unwrap().len(), 2);
    assert_eq!(services[0]["service"], "_api-prod._tcp.marathon.mesos.");
    assert!(services[0]["port"] == "31000" || services[0]["port"] == "31001");
    let (_, body) = s.sy.get("/v1/hosts/nothing.marathon.mesos").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!([{"host": "", "ip": ""}])
    );
    let (status, body) = s.sy.get("/v1/version").await;
    assert_eq!(status, 200);
    let version: Value = serde_json::from_str(&body).unwrap();
    for key in ["Service", "URL", "Version"] {
        assert!(version[key].is_string(), "{version}");
    }
    let (status, body) = s.sy.get("/v1/config").await;
    assert_eq!(status, 200);
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["Domain"], "mesos");
    assert_eq!(config["TTL"], 60);
    assert_eq!(
        config["Port"], 0,
        "as configured (`dns.listen` port 0 here)"
    );
    assert_eq!(config["Listener"], "127.0.0.1");
    assert_eq!(config["DnsOn"], true);
    let (status, body) = s.sy.get("/v1/enumerate").await;
    assert_eq!(status, 200);
    let all: Value = serde_json::from_str(&body).unwrap();
    let framework = &all["frameworks"][0];
    assert_eq!(framework["name"], "marathon");
    let tasks = framework["tasks"].as_array().unwrap();
    let mut ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["api.0", "api.1"]);
    for task in tasks {
        assert_eq!(task["name"], "api.prod");
        let records = task["records"].as_array().unwrap();
        assert!(
            records
                .iter()
                .any(|r| r["name"] == "api-prod.marathon.mesos." && r["rtype"] == "A")
        );
        let srv: Vec<&Value> = records.iter().filter(|r| r["rtype"] == "SRV").collect();
        // `_api-prod._tcp` and the named port's `_http._api-prod._tcp`.
        assert_eq!(srv.len(), 2, "{records:?}");
    }
}

#[tokio::test]
async fn dig_resolves_over_udp_and_tcp() {
    if std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("dig not installed: skipped (.ci/run installs it)");
        return;
    }
    let s = setup("dns-dig", vec![api_app(2)], "").await;
    let dig = |args: &[&str]| {
        let port = s.dns.port().to_string();
        let out = std::process::Command::new("dig")
            .args(["@127.0.0.1", "-p", &port, "+time=5", "+tries=1"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let a = dig(&["api-prod.marathon.mesos", "A", "+short"]);
    let mut lines: Vec<&str> = a.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["127.0.0.1", "127.0.0.2"], "{a}");
    let srv = dig(&["_api-prod._tcp.marathon.mesos", "SRV", "+tcp"]);
    assert!(
        srv.contains("status: NOERROR")
            && srv.contains("ANSWER: 2")
            && srv.contains("ADDITIONAL: 3"),
        "{srv}"
    );
    let nx = dig(&["nope.marathon.mesos", "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("AUTHORITY: 1"),
        "{nx}"
    );
}

#[tokio::test]
async fn edns_do_bit_and_formerr_opt_on_the_wire() {
    let s = setup("dns-edns", vec![api_app(2)], "").await;
    // The fast path (A), the general path (SRV, NXDOMAIN), over UDP and TCP: DO echoed.
    for (name, qtype) in [
        ("api-prod.marathon.mesos.", RecordType::A),
        ("_api-prod._tcp.marathon.mesos.", RecordType::SRV),
        ("nope.marathon.mesos.", RecordType::A),
    ] {
        for dnssec_ok in [false, true] {
            let mut q = message(name, qtype, Some(1232));
            q.edns.as_mut().unwrap().set_dnssec_ok(dnssec_ok);
            let m = Message::from_vec(&udp_raw(s.dns, &q.to_vec().unwrap()).await).unwrap();
            assert_eq!(m.edns.unwrap().flags().dnssec_ok, dnssec_ok, "{name} UDP");
            let m = tcp_message(s.dns, &q).await;
            assert_eq!(m.edns.unwrap().flags().dnssec_ok, dnssec_ok, "{name} TCP");
        }
    }
    // Two OPT records; an option longer than its record; OPT among the answers: FORMERR with
    // an OPT (DO as the first OPT had it), the question kept.
    let plain = message("api-prod.marathon.mesos.", RecordType::A, None)
        .to_vec()
        .unwrap();
    let opt = |flags: u8, data: &[u8]| {
        let mut r = vec![0, 0, 41, 4, 0xd0, 0, 0, flags, 0];
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(data);
        r
    };
    let mut two = plain.clone();
    two[11] = 2;
    two.extend_from_slice(&opt(0x80, &[]));
    two.extend_from_slice(&opt(0, &[]));
    let mut bad_option = plain.clone();
    bad_option[11] = 1;
    bad_option.extend_from_slice(&opt(0x80, &[0, 10, 0, 9, 1, 2]));
    let mut in_answers = plain.clone();
    in_answers[7] = 1;
    in_answers.extend_from_slice(&opt(0x80, &[]));
    for packet in [two, bad_option, in_answers] {
        let m = Message::from_vec(&udp_raw(s.dns, &packet).await).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.edns.expect("an OPT in the FORMERR").flags().dnssec_ok);
        assert_eq!(m.queries[0].name().to_ascii(), "api-prod.marathon.mesos.");
    }
}

#[tokio::test]
async fn ra_is_set_when_recursion_is_available_to_the_client() {
    let (upstream, _) = stub_upstream().await;
    let relay = format!("upstreams = [\"{upstream}\"]");
    let open = setup("dns-ra-open", vec![api_app(2)], &relay).await;
    let closed = setup(
        "dns-ra-closed",
        vec![api_app(2)],
        &format!("{relay}\nallow_recursion = [\"10.0.0.0/8\"]"),
    )
    .await;
    let none = setup("dns-ra-none", vec![api_app(2)], "").await;
    for (s, ra) in [(&open, true), (&closed, false), (&none, false)] {
        // Authoritative answers (fast path, general path, NXDOMAIN) and a relayed name.
        for (name, qtype) in [
            ("api-prod.marathon.mesos.", RecordType::A),
            ("_api-prod._tcp.marathon.mesos.", RecordType::SRV),
            ("nope.marathon.mesos.", RecordType::A),
            ("example.com.", RecordType::A),
        ] {
            for edns in [None, Some(1232)] {
                let (m, _) = udp(s.dns, name, qtype, edns).await;
                assert_eq!(m.metadata.recursion_available, ra, "{name} UDP ra={ra}");
            }
            let m = tcp(s.dns, name, qtype).await;
            assert_eq!(m.metadata.recursion_available, ra, "{name} TCP ra={ra}");
            if name == "example.com." {
                let want = if ra {
                    ResponseCode::NoError
                } else {
                    ResponseCode::Refused
                };
                assert_eq!(m.metadata.response_code, want);
            }
        }
    }
}

fn soa_serial(m: &Message) -> u32 {
    match m.answers.first().map(|r| &r.data) {
        Some(RData::SOA(soa)) => soa.serial,
        other => panic!("no SOA: {other:?}"),
    }
}

#[tokio::test]
async fn soa_serials_follow_marathon_time_in_both_zones() {
    let s = setup(
        "dns-serial",
        vec![api_app(2)],
        "[vip]\nenabled = true\nrange = \"11.0.0.0/8\"",
    )
    .await;
    // The apps' version and the tasks' start: 2026-11-22T00:00:00Z.
    let start = 1_795_305_600;
    let (m, _) = udp(s.dns, "mesos.", RecordType::SOA, None).await;
    assert_eq!(soa_serial(&m), start);
    let (m, _) = udp(s.dns, "l4lb.thisdcos.directory.", RecordType::SOA, None).await;
    assert_eq!(soa_serial(&m), start);
    let (m, _) = udp(s.dns, "l4lb.thisdcos.directory.", RecordType::NS, None).await;
    assert!(
        matches!(&m.answers[..], [r] if matches!(&r.data, RData::NS(ns) if ns.0.to_ascii() == "ns1.l4lb.thisdcos.directory."))
    );
    let (m, _) = udp(s.dns, "ns1.l4lb.thisdcos.directory.", RecordType::A, None).await;
    assert_eq!(ips(&m.answers), vec!["127.0.0.1"]);
    // A task ends (the event at 00:00:01): both serials grow to the event's second, though the
    // newest timestamp left in Marathon's state is older.
    s.marathon
        .send_event(status_update("/prod/api", "api.0", 31000, "TASK_KILLED"));
    for zone in ["mesos.", "l4lb.thisdcos.directory."] {
        wait_for("the serial grows", || async {
            let (m, _) = udp(s.dns, zone, RecordType::SOA, None).await;
            (soa_serial(&m) == start + 1).then_some(())
        })
        .await;
    }
    let (m, _) = udp(s.dns, "api-prod.marathon.mesos.", RecordType::A, None).await;
    assert_eq!(ips(&m.answers), vec!["127.0.0.2"]);
}

#[tokio::test]
async fn a_63_character_task_label_keeps_its_srv_records_and_says_so() {
    // `/{61 a}-c` is the 63-character label `aaa…a-c`; `_` + it would be 64.
    let id = format!("/{}-c", "a".repeat(61));
    let mut long = app(
        &id,
        10005,
        json!({}),
        vec![host_task(&id, "long.1", "127.0.0.5", 31500)],
    );
    long["portDefinitions"][0]["name"] = json!("http");
    let s = setup("dns-long-label", vec![long], "").await;
    let label = format!("{}-c", "a".repeat(61));
    let (m, _) = udp(
        s.dns,
        &format!("{label}.marathon.mesos."),
        RecordType::A,
        None,
    )
    .await;
    assert_eq!(ips(&m.answers), vec!["127.0.0.5"]);
    // Mesos-DNS's cut at 62: the trailing `-` goes and the room is filled from after the cut.
    let cut = format!("_{}c", "a".repeat(61));
    for name in [
        format!("{cut}._tcp.marathon.mesos."),
        format!("_http.{cut}._tcp.marathon.mesos."),
    ] {
        let m = tcp(s.dns, &name, RecordType::SRV).await;
        assert_eq!(m.answers.len(), 1, "{name}");
        assert_eq!(ips(&m.additionals), vec!["127.0.0.5"]);
    }
    let (_, body) = s.sy.get("/v1/routes").await;
    let routes: Value = serde_json::from_str(&body).unwrap();
    let problems = routes["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["app_id"] == json!(id)
            && p["severity"] == "renamed"
            && p["reason"].as_str().unwrap().contains(&cut)),
        "{problems:?}"
    );
}

#[tokio::test]
async fn slave_names_answer_the_agents_as_mesos_dns_does() {
    let s = setup("dns-slave", vec![api_app(2)], "").await;
    let (m, _) = udp(s.dns, "slave.mesos.", RecordType::A, None).await;
    assert_eq!(ips(&m.answers), vec!["127.0.0.1", "127.0.0.2"]);
    let m = tcp(s.dns, "_slave._tcp.mesos.", RecordType::SRV).await;
    assert!(
        matches!(&m.answers[..], [r] if matches!(&r.data, RData::SRV(srv) if srv.port == 5051 && srv.target.to_ascii() == "slave.mesos.")),
        "{:?}",
        m.answers
    );
    assert_eq!(ips(&m.additionals), vec!["127.0.0.1", "127.0.0.2"]);
}

/// A TCP listener on `ip` (port 0) that accepts and closes: what an active TCP probe passes on.
async fn probe_target(ip: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    (addr, handle)
}

fn health_event(task_id: &str, alive: bool) -> Value {
    json!({"eventType": "health_status_changed_event", "appId": "/hc",
        "taskId": task_id, "version": "v", "alive": alive, "timestamp": "t"})
}

fn srv_ports(m: &Message) -> Vec<u16> {
    let mut ports: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.port),
            _ => None,
        })
        .collect();
    ports.sort();
    ports
}

/// `dns.healthy_only`: a task leaves the answers when Marathon reports it unhealthy or an
/// active probe fails it, and comes back when it recovers; with none healthy, every running task
/// is answered (fail static) and counted.
#[tokio::test]
async fn healthy_only_answers_follow_marathon_health_and_active_probes() {
    let mut targets = Vec::new();
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        targets.push(probe_target(ip).await);
    }
    let tasks = targets
        .iter()
        .enumerate()
        .map(|(i, (addr, _))| {
            let mut t = host_task(
                "/hc",
                &format!("hc.{i}"),
                &addr.ip().to_string(),
                addr.port(),
            );
            t["healthCheckResults"] = json!([{"alive": true, "taskId": format!("hc.{i}")}]);
            t
        })
        .collect();
    // Served by the proxy (a service port), so its backends are probed.
    let mut a = app(
        "/hc",
        free_port(),
        json!({"HAPROXY_GROUP": "external"}),
        tasks,
    );
    a["healthChecks"] = json!([{"protocol": "MESOS_TCP", "portIndex": 0, "intervalSeconds": 1,
        "timeoutSeconds": 1, "maxConsecutiveFailures": 1, "gracePeriodSeconds": 0}]);
    let s = setup(
        "dns-healthy",
        vec![a],
        "healthy_only = true\nhealthy_ttl = 2",
    )
    .await;
    let a_record = || async {
        let (m, _) = udp(s.dns, "hc.marathon.mesos.", RecordType::A, None).await;
        m
    };
    let answers = |want: &'static [&'static str]| async move {
        wait_for(&format!("A answers {want:?}"), || async {
            (ips(&a_record().await.answers) == want).then_some(())
        })
        .await
    };
    let all: &[&str] = &["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    answers(all).await;
    let m = a_record().await;
    assert!(
        m.answers.iter().all(|r| r.ttl == 2),
        "dns.healthy_ttl: {:?}",
        m.answers
    );

    // Marathon: unhealthy leaves (A and SRV), healthy again comes back.
    s.marathon.send_event(health_event("hc.0", false));
    answers(&["127.0.0.2", "127.0.0.3"]).await;
    let srv = udp(s.dns, "_hc._tcp.marathon.mesos.", RecordType::SRV, None)
        .await
        .0;
    let mut want = vec![targets[1].0.port(), targets[2].0.port()];
    want.sort();
    assert_eq!(srv_ports(&srv), want);
    s.marathon.send_event(health_event("hc.0", true));
    answers(all).await;

    // An active probe failing (the task stops accepting) takes it out; passing, back in.
    let (gone, handle) = targets.pop().unwrap();
    handle.abort();
    let _ = handle.await;
    answers(&["127.0.0.1", "127.0.0.2"]).await;
    let back = tokio::net::TcpListener::bind(gone).await.unwrap();
    let accept = tokio::spawn(async move {
        while let Ok((s, _)) = back.accept().await {
            drop(s);
        }
    });
    answers(all).await;

    // None healthy: every running task is answered, and counted.
    for t in ["hc.0", "hc.1", "hc.2"] {
        s.marathon.send_event(health_event(t, false));
    }
    wait_for("fail static counted", || async {
        (s.sy.metric("switchyard_dns_fail_static_apps", &[]).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(ips(&a_record().await.answers), all, "fail static");
    assert!(s.sy.metric("switchyard_dns_fail_static_total", &[]).await >= 1.0);
    // One healthy again: only it.
    s.marathon.send_event(health_event("hc.1", true));
    answers(&["127.0.0.2"]).await;
    assert_eq!(
        s.sy.metric("switchyard_dns_fail_static_apps", &[]).await,
        0.0
    );
    accept.abort();
}

/// `dig @server` with `args`, its output; `None` when dig is not installed.
fn dig_at(server: SocketAddr, args: &[&str]) -> Option<String> {
    let port = server.port().to_string();
    let out = std::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port, "+time=5", "+tries=1"])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

/// RFC 6891 §6.1.3: an rcode above 15 is split, its lower 4 bits in the header and its upper 8
/// in the OPT record. BADVERS (16) is 0 in the header and 1 in the OPT: an answer that lost its
/// OPT's upper bits would say NOERROR. Every answer to an EDNS version 1 query says BADVERS:
/// over TCP, over UDP, and over UDP when rate limiting slips it (cut to its question, TC set),
/// as hickory's decoder and dig read it.
#[tokio::test]
async fn badvers_keeps_its_upper_rcode_bits_on_every_path_slipped_too() {
    // One answer a second per prefix, each limited one slipped, and a burst keeps the prefix
    // limited for as many seconds as it went over (the window is long).
    let s = setup(
        "dns-badvers",
        vec![api_app(2)],
        "[dns.rrl]\nresponses_per_second = 1\nwindow = \"3600s\"\nslip = 1",
    )
    .await;
    let mut q = message("api-prod.marathon.mesos.", RecordType::A, Some(1232));
    q.edns.as_mut().unwrap().set_version(1);
    let badvers = |m: &Message| {
        // 16: hickory decodes it as BADSIG, which shares the number (RFC 6891 §9).
        assert_eq!(u16::from(m.metadata.response_code), 16, "{m:?}");
        let edns = m.edns.as_ref().expect("an OPT answers an OPT");
        assert_eq!((edns.rcode_high(), edns.version()), (1, 0));
        assert!(m.answers.is_empty());
    };
    // TCP is never limited.
    let m = tcp_message(s.dns, &q).await;
    badvers(&m);
    assert!(!m.metadata.truncation);
    // A burst from one socket, then a query from another prefix, answered after the burst.
    let burst = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for id in 0..30u16 {
        q.metadata.id = id;
        burst.send_to(&q.to_vec().unwrap(), s.dns).await.unwrap();
    }
    let other = UdpSocket::bind("127.0.1.1:0").await.unwrap();
    badvers(&ask_from(&other, s.dns, &q.to_vec().unwrap()).await);
    let (mut full, mut slipped) = (0, 0);
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = burst.try_recv(&mut buf) {
        let m = Message::from_vec(&buf[..n]).unwrap();
        badvers(&m);
        assert_eq!(m.queries[0].name().to_ascii(), "api-prod.marathon.mesos.");
        if m.metadata.truncation {
            slipped += 1;
        } else {
            full += 1;
        }
    }
    assert!(full >= 1 && slipped >= 20, "{full} full, {slipped} slipped");
    assert!(s.sy.metric("switchyard_dns_rrl_slipped_total", &[]).await >= 20.0);

    // dig, the way a user sees it: its own query from the limited prefix is slipped (TC, not
    // retried with +ignore), and still says BADVERS; over TCP, BADVERS in full.
    let Some(slip) = dig_at(
        s.dns,
        &[
            "+edns=1",
            "+noednsnegotiation",
            "+ignore",
            "api-prod.marathon.mesos",
            "A",
        ],
    ) else {
        eprintln!("dig not installed: skipped (.ci/run installs it)");
        return;
    };
    assert!(slip.contains("status: BADVERS"), "{slip}");
    assert!(slip.contains(" tc"), "slipped: {slip}");
    assert!(slip.contains("EDNS: version: 0"), "{slip}");
    let tcp = dig_at(
        s.dns,
        &[
            "+edns=1",
            "+noednsnegotiation",
            "+tcp",
            "api-prod.marathon.mesos",
            "A",
        ],
    )
    .unwrap();
    assert!(
        tcp.contains("status: BADVERS") && !tcp.contains(" tc"),
        "{tcp}"
    );
}

/// A query for a meta-type is not looked up (RFC 6895 §3.1), as BIND answers it: OPT, TSIG and
/// TKEY FORMERR, MAILA and MAILB NOTIMP; seen by dig, over UDP and TCP.
#[tokio::test]
async fn dig_meta_type_queries_are_formerr_or_notimp() {
    let s = setup("dns-meta", vec![api_app(2)], "").await;
    let Some(plain) = dig_at(s.dns, &["api-prod.marathon.mesos", "A"]) else {
        eprintln!("dig not installed: skipped (.ci/run installs it)");
        return;
    };
    assert!(plain.contains("status: NOERROR"), "{plain}");
    for (qtype, status) in [
        ("TYPE41", "FORMERR"),
        ("TSIG", "FORMERR"),
        ("TYPE249", "FORMERR"),
        ("MAILA", "NOTIMP"),
        ("MAILB", "NOTIMP"),
    ] {
        for transport in ["+notcp", "+tcp"] {
            let out = dig_at(s.dns, &[transport, "api-prod.marathon.mesos", qtype]).unwrap();
            assert!(out.contains(&format!("status: {status}")), "{qtype}: {out}");
            assert!(out.contains("ANSWER: 0"), "{qtype}: {out}");
        }
    }
}

/// Sends `packet` from `socket` to `server` and waits for the reply.
async fn ask_from(socket: &UdpSocket, server: SocketAddr, packet: &[u8]) -> Message {
    socket.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buf))
        .await
        .expect("a UDP answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test]
async fn rate_limiting_drops_or_slips_a_burst_per_prefix_and_never_tcp() {
    let s = setup(
        "dns-rrl",
        vec![api_app(2)],
        "[dns.rrl]\nresponses_per_second = 2\nwindow = \"1s\"\nslip = 2",
    )
    .await;
    // A burst of 60 from one client, then one query from another /24 (127.0.1.1): that answer
    // comes after every answer to the burst (one socket, taken in order).
    let burst = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for id in 0..60u16 {
        let mut q = message("api-prod.marathon.mesos.", RecordType::A, Some(1232));
        q.metadata.id = id;
        burst.send_to(&q.to_vec().unwrap(), s.dns).await.unwrap();
    }
    let other = UdpSocket::bind("127.0.1.1:0").await.unwrap();
    let q = message("api-prod.marathon.mesos.", RecordType::A, None);
    let m = ask_from(&other, s.dns, &q.to_vec().unwrap()).await;
    assert_eq!(ips(&m.answers).len(), 2, "another prefix is not limited");
    assert!(!m.metadata.truncation);
    let (mut full, mut slipped) = (0, 0);
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = burst.try_recv(&mut buf) {
        let m = Message::from_vec(&buf[..n]).unwrap();
        if m.metadata.truncation {
            assert!(m.answers.is_empty());
            assert_eq!(m.queries[0].name().to_ascii(), "api-prod.marathon.mesos.");
            assert!(m.edns.is_some(), "an OPT answers an OPT");
            slipped += 1;
        } else {
            assert_eq!(ips(&m.answers).len(), 2);
            full += 1;
        }
    }
    assert!(full >= 2, "the rate goes through: {full}");
    assert!(slipped >= 1, "some slip (TC): {slipped}");
    assert!(full + slipped < 60, "some are dropped: {full} + {slipped}");
    assert!(full < 30, "most of the burst is limited: {full}");
    // TCP from the limited client is never limited: it is where a slipped client goes.
    for _ in 0..5 {
        let m = tcp(s.dns, "api-prod.marathon.mesos.", RecordType::A).await;
        assert_eq!(ips(&m.answers).len(), 2);
    }
    assert!(s.sy.metric("switchyard_dns_rrl_dropped_total", &[]).await >= 1.0);
    assert!(s.sy.metric("switchyard_dns_rrl_slipped_total", &[]).await >= 1.0);

    // Off by default: the same burst is answered in full.
    let off = setup("dns-rrl-off", vec![api_app(2)], "").await;
    for _ in 0..30 {
        let (m, _) = udp(off.dns, "api-prod.marathon.mesos.", RecordType::A, None).await;
        assert_eq!(ips(&m.answers).len(), 2);
    }
    assert_eq!(
        off.sy.metric("switchyard_dns_rrl_dropped_total", &[]).await,
        0.0
    );
}

fn ptr_names(m: &Message) -> Vec<String> {
    let mut out: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn ptr_records_answer_task_addresses_and_the_reverse_zones_are_never_forwarded() {
    let (upstream, seen) = stub_upstream().await;
    let s = setup(
        "dns-ptr",
        vec![api_app(2)],
        &format!("ptr = true\nupstreams = [\"{upstream}\"]"),
    )
    .await;
    let (m, _) = udp(s.dns, "1.0.0.127.in-addr.arpa.", RecordType::PTR, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(ptr_names(&m), ["api-prod.marathon.mesos."]);
    let m = tcp(s.dns, "2.0.0.127.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(ptr_names(&m), ["api-prod.marathon.mesos."]);
    // An address no task has: NXDOMAIN from the served zone, with its SOA, not relayed.
    let (m, _) = udp(s.dns, "9.9.9.9.in-addr.arpa.", RecordType::PTR, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        matches!(&m.authorities[..], [soa] if soa.name.to_ascii() == "in-addr.arpa."),
        "{m:?}"
    );
    let (m, _) = udp(s.dns, "1.ip6.arpa.", RecordType::PTR, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        names(&seen).is_empty(),
        "nothing relayed: {:?}",
        names(&seen)
    );
    // The way a user asks: dig -x, when installed.
    if std::process::Command::new("dig").arg("-v").output().is_ok() {
        let out = std::process::Command::new("dig")
            .args(["@127.0.0.1", "-p", &s.dns.port().to_string()])
            .args(["+time=5", "+tries=1", "+short", "-x", "127.0.0.2"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "api-prod.marathon.mesos."
        );
    }

    // Off (the default): no PTR records, and reverse names are relayed like any other.
    let off = setup(
        "dns-ptr-off",
        vec![api_app(2)],
        &format!("upstreams = [\"{upstream}\"]"),
    )
    .await;
    let (m, _) = udp(off.dns, "1.0.0.127.in-addr.arpa.", RecordType::PTR, None).await;
    assert!(ptr_names(&m).is_empty());
    assert_eq!(names(&seen), ["1.0.0.127.in-addr.arpa."]);
}

#[tokio::test]
async fn zone_resolvers_take_their_suffixes_longest_first() {
    let (default, default_seen) = stub_upstream().await;
    let (corp, corp_seen) = stub_upstream().await;
    let s = setup(
        "dns-zone-resolvers",
        vec![api_app(1)],
        &format!(
            "upstreams = [\"{default}\"]\nupstream_timeout = \"5s\"\n\
             [dns.zone_resolvers]\n\"corp.example\" = [\"{corp}\"]\n\"lab.corp.example\" = [\"{default}\"]"
        ),
    )
    .await;
    let (m, _) = udp(s.dns, "www.corp.example.", RecordType::A, None).await;
    assert_eq!(ips(&m.answers), ["192.0.2.1"]);
    let m = tcp(s.dns, "db.CORP.example.", RecordType::A).await;
    assert_eq!(ips(&m.answers), ["192.0.2.1"]);
    udp(s.dns, "corp.example.", RecordType::A, None).await;
    udp(s.dns, "www.example.org.", RecordType::A, None).await;
    udp(s.dns, "x.lab.corp.example.", RecordType::A, None).await;
    // The same safety as the default upstreams: their own ID, their reply only.
    let mut q = message("spoofed.corp.example.", RecordType::A, None);
    q.metadata.id = 0x4242;
    let m = Message::from_vec(&udp_raw(s.dns, &q.to_vec().unwrap()).await).unwrap();
    assert_eq!(
        (m.metadata.id, ips(&m.answers)),
        (0x4242, vec!["192.0.2.1".into()])
    );
    // The served zone is never relayed, by either.
    udp(s.dns, "nope.marathon.mesos.", RecordType::A, None).await;
    assert_eq!(
        names(&corp_seen),
        [
            "www.corp.example.",
            "db.CORP.example.",
            "corp.example.",
            "spoofed.corp.example."
        ]
    );
    assert!(corp_seen.lock().unwrap().iter().all(|s| s.id != 0x4242));
    assert_eq!(
        names(&default_seen),
        ["www.example.org.", "x.lab.corp.example."]
    );

    // Zone resolvers alone: other names are REFUSED; clients outside allow_recursion are
    // refused for the zone resolvers' names too.
    let only = setup(
        "dns-zone-resolvers-only",
        vec![],
        &format!("[dns.zone_resolvers]\n\"corp.example\" = [\"{corp}\"]"),
    )
    .await;
    let (m, _) = udp(only.dns, "www.example.org.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let m = tcp(only.dns, "www.example.org.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let (m, _) = udp(only.dns, "a.corp.example.", RecordType::A, None).await;
    assert_eq!(ips(&m.answers), ["192.0.2.1"]);
    assert!(m.metadata.recursion_available);
    let acl = setup(
        "dns-zone-resolvers-acl",
        vec![],
        &format!(
            "allow_recursion = [\"10.0.0.0/8\"]\n[dns.zone_resolvers]\n\"corp.example\" = [\"{corp}\"]"
        ),
    )
    .await;
    let (m, _) = udp(acl.dns, "b.corp.example.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!names(&corp_seen).contains(&"b.corp.example.".to_string()));
}

/// A TCP connection to `server` from `source` (a loopback address: another client).
async fn tcp_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Sends `query` framed on `stream` and reads the answer; `None` when the connection is
/// closed (or reset) instead.
async fn ask_on(stream: &mut TcpStream, query: &Message) -> Option<Message> {
    let packet = query.to_vec().unwrap();
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&packet);
    stream.write_all(&framed).await.ok()?;
    let len = tokio::time::timeout(DEADLINE, stream.read_u16())
        .await
        .expect("an answer or a close")
        .ok()?;
    let mut reply = vec![0u8; len as usize];
    stream.read_exact(&mut reply).await.ok()?;
    Some(Message::from_vec(&reply).unwrap())
}

/// A client holding its share of TCP connections gets no more, and other clients are not
/// affected: its next connection is closed unanswered, another address's is served.
#[tokio::test]
async fn one_client_cannot_hold_more_than_its_tcp_connections() {
    let s = setup(
        "dns-tcp-per-client",
        vec![api_app(1)],
        "tcp_connections_per_client = 2",
    )
    .await;
    let q = message("api-prod.marathon.mesos.", RecordType::A, None);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tcp_from("127.0.0.1", s.dns).await;
        assert!(ask_on(&mut stream, &q).await.is_some(), "within its share");
        held.push(stream);
    }
    let mut over = tcp_from("127.0.0.1", s.dns).await;
    assert!(
        ask_on(&mut over, &q).await.is_none(),
        "a third connection is closed unanswered"
    );
    let mut other = tcp_from("127.0.0.2", s.dns).await;
    let m = ask_on(&mut other, &q)
        .await
        .expect("another client is served");
    assert_eq!(ips(&m.answers), vec!["127.0.0.1"]);
    // The held connections still work, and once one closes the client gets one again.
    assert!(ask_on(&mut held[0], &q).await.is_some());
    drop(held.pop());
    let mut again = wait_for("a connection within the share again", || async {
        let mut stream = tcp_from("127.0.0.1", s.dns).await;
        ask_on(&mut stream, &q).await.map(|_| stream)
    })
    .await;
    assert!(ask_on(&mut again, &q).await.is_some());
    assert!(
        s.sy.metric("switchyard_dns_tcp_refused_total", &["limit=\"client\""])
            .await
            >= 1.0
    );
}

/// Idle connections go first when TCP slots run short (RFC 7766 §6.2.3): once half of
/// `dns.tcp_connections` are open, a connection waits at most 500 ms for its next query, also
/// one that was already waiting, so clients that hold connections open without asking cannot
/// keep others out for `dns.tcp_idle_timeout` (a minute here).
#[tokio::test]
async fn idle_connections_are_closed_early_when_slots_run_short() {
    let s = setup(
        "dns-tcp-pressure",
        vec![api_app(1)],
        "tcp_connections = 8\ntcp_connections_per_client = 8\ntcp_idle_timeout = \"60s\"",
    )
    .await;
    let q = message("api-prod.marathon.mesos.", RecordType::A, None);
    // Three connections, each answered once and then idle: below half, nothing presses.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut stream = tcp_from("127.0.0.1", s.dns).await;
        assert!(ask_on(&mut stream, &q).await.is_some());
        idle.push(stream);
    }
    // Two more that never ask: five of eight open.
    for _ in 0..2 {
        idle.push(tcp_from("127.0.0.2", s.dns).await);
    }
    // Every idle one is closed well within the minute.
    for (i, stream) in idle.iter_mut().enumerate() {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
            .await
            .unwrap_or_else(|_| panic!("idle connection {i} still open"));
        assert!(matches!(read, Ok(0) | Err(_)), "connection {i}: {read:?}");
    }
    let mut other = tcp_from("127.0.0.3", s.dns).await;
    assert!(
        ask_on(&mut other, &q).await.is_some(),
        "a new client is served"
    );
    assert!(
        s.sy.metric("switchyard_dns_tcp_pressure_closed_total", &[])
            .await
            >= 5.0
    );
}

/// A client that sends queries and never reads the answers loses its connection once an answer
/// has waited `dns.tcp_idle_timeout` to be taken, instead of holding it (and a slot) for ever.
#[tokio::test]
async fn a_client_that_never_reads_its_answers_loses_the_connection() {
    let s = setup(
        "dns-tcp-write-deadline",
        vec![api_app(100)],
        "tcp_idle_timeout = \"500ms\"",
    )
    .await;
    let stream = unread_client("127.0.0.1", s.dns).await;
    assert!(
        asks_until_closed(stream).await,
        "the connection is still open"
    );
    assert!(s.sy.metric("switchyard_dns_tcp_timeouts_total", &[]).await >= 1.0);
}

/// While half the TCP slots are taken, an answer waits at most 500 ms to be taken: clients that
/// send queries and never read cannot keep others out for `dns.tcp_idle_timeout` (a minute).
#[tokio::test]
async fn clients_that_never_read_lose_their_connections_soon_when_slots_run_short() {
    let s = setup(
        "dns-tcp-write-pressure",
        vec![api_app(100)],
        "tcp_connections = 4\ntcp_connections_per_client = 4\ntcp_idle_timeout = \"60s\"",
    )
    .await;
    // Two of four slots: half.
    let (first, second) = (
        unread_client("127.0.0.5", s.dns).await,
        unread_client("127.0.0.5", s.dns).await,
    );
    let (first, second) = tokio::join!(asks_until_closed(first), asks_until_closed(second));
    assert!(first && second, "a connection is still open");
    assert!(
        s.sy.metric("switchyard_dns_tcp_pressure_closed_total", &[])
            .await
            >= 2.0
    );
}

/// A TCP connection from `source` with small buffers: the kernel's room for answers the client
/// does not read fills fast.
async fn unread_client(source: &str, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.connect(server).await.unwrap()
}

/// Queries (about 1.7 KB of answer each) sent and never read, until the writes stall, then until
/// the server closes the connection (a write fails: it reset the connection with queries
/// unread). Whether that happened within [`DEADLINE`].
async fn asks_until_closed(mut stream: TcpStream) -> bool {
    let packet = message("api-prod.marathon.mesos.", RecordType::A, None)
        .to_vec()
        .unwrap();
    let mut frames = Vec::new();
    for _ in 0..50 {
        frames.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        frames.extend_from_slice(&packet);
    }
    tokio::time::timeout(DEADLINE, async {
        loop {
            let write = tokio::time::timeout(
                std::time::Duration::from_millis(100),
                stream.write_all(&frames),
            );
            if let Ok(Err(_)) = write.await {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// A UDP source address can be forged. Past the UDP relay slots (here held by four addresses'
/// queries to an upstream that never answers, as forged queries would hold them) a UDP query
/// is answered empty with TC at once, and the same query over TCP, whose handshake proves the
/// address, is relayed: forged UDP never takes the slots of TCP.
#[tokio::test]
async fn past_the_udp_relay_slots_udp_queries_are_sent_to_tcp() {
    // An upstream that takes queries over UDP and TCP and never answers.
    let (upstream, upstream_tcp) = one_port().await;
    let s = setup(
        "dns-forward-udp-slots",
        vec![],
        &format!(
            "upstreams = [\"{}\"]\nupstream_timeout = \"60s\"\nforwards_per_client = 64",
            upstream.local_addr().unwrap()
        ),
    )
    .await;
    let mut buf = vec![0u8; 4096];
    // 4 × 64: the 256 UDP relay slots.
    let mut holders = Vec::new();
    for host in 11..15 {
        let client = UdpSocket::bind(format!("127.0.0.{host}:0")).await.unwrap();
        for i in 0..64 {
            let q = message(&format!("slow{i}.h{host}.example."), RecordType::A, None);
            client.send_to(&q.to_vec().unwrap(), s.dns).await.unwrap();
        }
        holders.push(client);
    }
    for _ in 0..256 {
        tokio::time::timeout(DEADLINE, upstream.recv_from(&mut buf))
            .await
            .expect("relayed")
            .unwrap();
    }
    let client = UdpSocket::bind("127.0.0.20:0").await.unwrap();
    let q = message("proven.example.", RecordType::A, Some(1232));
    client.send_to(&q.to_vec().unwrap(), s.dns).await.unwrap();
    let n = tokio::time::timeout(DEADLINE, client.recv(&mut buf))
        .await
        .expect("an answer at once")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert!(m.metadata.truncation, "TC: ask again over TCP");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.queries[0].name().to_ascii(), "proven.example.");
    assert!(m.edns.is_some(), "the OPT the query had");
    // Over TCP the same query is relayed.
    let asked = tokio::spawn(tcp(s.dns, "proven.example.", RecordType::A));
    let (query, _held) = relayed_over_tcp(&upstream_tcp).await;
    assert_eq!(query.queries[0].name().to_ascii(), "proven.example.");
    asked.abort();
    assert_eq!(
        s.sy.metric("switchyard_dns_forwards_to_tcp_total", &["limit=\"total\""])
            .await,
        1.0
    );
    drop(holders);
}

/// The next query a stand-in upstream takes over TCP, and its connection, kept open (the
/// query is in flight until it closes).
async fn relayed_over_tcp(upstream: &tokio::net::TcpListener) -> (Message, TcpStream) {
    let (mut relayed, _) = tokio::time::timeout(DEADLINE, upstream.accept())
        .await
        .expect("relayed over TCP")
        .unwrap();
    let len = relayed.read_u16().await.unwrap();
    let mut query = vec![0u8; len as usize];
    relayed.read_exact(&mut query).await.unwrap();
    (Message::from_vec(&query).unwrap(), relayed)
}

/// A client's queries being relayed at once are capped, per transport: past its share of UDP
/// slots its queries get TC, and over TCP they are still relayed (queries forged with its
/// address cannot deny it); past its share of TCP slots, SERVFAIL at once. Another client's
/// queries are still relayed.
#[tokio::test]
async fn one_client_cannot_take_every_relay_slot() {
    // An upstream that takes queries over UDP and TCP and never answers.
    let (upstream, upstream_tcp) = one_port().await;
    let s = setup(
        "dns-forward-share",
        vec![],
        &format!(
            "upstreams = [\"{}\"]\nupstream_timeout = \"60s\"\nforwards_per_client = 3",
            upstream.local_addr().unwrap()
        ),
    )
    .await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 4096];
    for i in 0..3 {
        let q = message(&format!("slow{i}.example."), RecordType::A, None);
        client.send_to(&q.to_vec().unwrap(), s.dns).await.unwrap();
        // Relayed: the upstream has it.
        tokio::time::timeout(DEADLINE, upstream.recv_from(&mut buf))
            .await
            .expect("relayed")
            .unwrap();
    }
    let (m, _) = udp(s.dns, "one.more.example.", RecordType::A, None).await;
    assert!(m.metadata.truncation, "past its UDP share: TC");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    // Over TCP, its share of TCP slots: relayed, held by the upstream.
    let (mut held, mut asking) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let (name, dns) = (format!("tcp{i}.example."), s.dns);
        asking.push(tokio::spawn(
            async move { tcp(dns, &name, RecordType::A).await },
        ));
        let (query, upstream_side) = relayed_over_tcp(&upstream_tcp).await;
        assert_eq!(
            query.queries[0].name().to_ascii(),
            format!("tcp{i}.example.")
        );
        held.push(upstream_side);
    }
    let m = tcp(s.dns, "one.more.example.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::ServFail,
        "past its TCP share"
    );
    // Another client's query is relayed.
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let q = message("other.example.", RecordType::A, None);
    other.send_to(&q.to_vec().unwrap(), s.dns).await.unwrap();
    let (n, _) = tokio::time::timeout(DEADLINE, upstream.recv_from(&mut buf))
        .await
        .expect("relayed")
        .unwrap();
    let relayed = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(relayed.queries[0].name().to_ascii(), "other.example.");
    for (family, limit) in [
        ("switchyard_dns_forwards_to_tcp_total", "limit=\"client\""),
        ("switchyard_dns_forwards_shed_total", "limit=\"client\""),
    ] {
        assert_eq!(s.sy.metric(family, &[limit]).await, 1.0, "{family}");
    }
    for task in asking {
        task.abort();
    }
    drop(held);
}

/// A stand-in upstream over UDP and TCP on one port: names whose first label begins with `slow`
/// it never answers (holding their TCP connections open), every other name as
/// [`stub_replies`] does (192.0.2.1). Counts the slow queries it got, per transport.
struct SlowUpstream {
    addr: SocketAddr,
    udp_slow: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tcp_slow: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn is_slow(packet: &[u8]) -> bool {
    let q = Message::from_vec(packet).unwrap();
    q.queries[0]
        .name()
        .to_ascii()
        .to_ascii_lowercase()
        .starts_with("slow")
}

async fn slow_upstream() -> SlowUpstream {
    use std::sync::atomic::Ordering::Relaxed;
    let (socket, tcp) = one_port().await;
    let up = SlowUpstream {
        addr: socket.local_addr().unwrap(),
        udp_slow: Default::default(),
        tcp_slow: Default::default(),
    };
    let udp_slow = up.udp_slow.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if is_slow(&buf[..n]) {
                udp_slow.fetch_add(1, Relaxed);
                continue;
            }
            for reply in stub_replies(&buf[..n]) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    let tcp_slow = up.tcp_slow.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = tcp.accept().await {
            let len = stream.read_u16().await.unwrap();
            let mut packet = vec![0u8; len as usize];
            stream.read_exact(&mut packet).await.unwrap();
            if is_slow(&packet) {
                tcp_slow.fetch_add(1, Relaxed);
                held.push(stream);
                continue;
            }
            let reply = stub_replies(&packet).pop().unwrap();
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            let _ = stream.write_all(&framed).await;
        }
    });
    up
}

/// The attack on the relay slots: from 127.0.0.11-14, 64 UDP queries each (as forged sources
/// would send them; their answers are only counted), and from 127.0.0.31-46, 16 TCP
/// connections each asking one query; the names `udp_name(host, i)`, `tcp_name(host, i)`, all
/// slow. Returns once each of the 256 + 256 queries is relayed (the upstream has it) or refused
/// (answered at once), with the tasks holding the TCP connections.
async fn fill_relay_slots(
    dns: SocketAddr,
    upstream: &SlowUpstream,
    udp_name: impl Fn(u8, usize) -> String,
    tcp_name: impl Fn(u8, usize) -> String,
) -> Vec<tokio::task::JoinHandle<()>> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let (udp_refused, tcp_refused) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
    );
    let mut tasks = Vec::new();
    for host in 11..15u8 {
        let socket = UdpSocket::bind(format!("127.0.0.{host}:0")).await.unwrap();
        for i in 0..64 {
            let q = message(&udp_name(host, i), RecordType::A, None);
            socket.send_to(&q.to_vec().unwrap(), dns).await.unwrap();
        }
        let refused = udp_refused.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while socket.recv(&mut buf).await.is_ok() {
                refused.fetch_add(1, Relaxed);
            }
        }));
    }
    for host in 31..47u8 {
        for i in 0..16 {
            let (refused, query) = (
                tcp_refused.clone(),
                message(&tcp_name(host, i), RecordType::A, None),
            );
            let mut stream = tcp_from(&format!("127.0.0.{host}"), dns).await;
            tasks.push(tokio::spawn(async move {
                if ask_on(&mut stream, &query).await.is_some() {
                    refused.fetch_add(1, Relaxed);
                }
                // Held open, as an attacker's connection would be.
                std::future::pending::<()>().await;
                drop(stream);
            }));
        }
    }
    wait_for("every attacking query relayed or refused", || async {
        let udp = upstream.udp_slow.load(Relaxed) + udp_refused.load(Relaxed);
        let tcp = upstream.tcp_slow.load(Relaxed) + tcp_refused.load(Relaxed);
        (udp == 256 && tcp == 256).then_some(())
    })
    .await;
    tasks
}

/// The victim, a client with an address of its own (127.0.0.50), asks for a name of another
/// domain over UDP, and over TCP when told to (TC): the answer it ends with.
async fn victim_asks(dns: SocketAddr, name: &str) -> Message {
    let client = UdpSocket::bind("127.0.0.50:0").await.unwrap();
    let m = ask_from(
        &client,
        dns,
        &message(name, RecordType::A, Some(1232)).to_vec().unwrap(),
    )
    .await;
    if !m.metadata.truncation {
        return m;
    }
    let mut stream = tcp_from("127.0.0.50", dns).await;
    ask_on(&mut stream, &message(name, RecordType::A, None))
        .await
        .expect("an answer over TCP")
}

fn answered_by_the_upstream(m: &Message) -> bool {
    m.metadata.response_code == ResponseCode::NoError && ips(&m.answers) == ["192.0.2.1"]
}

/// Slow names under one domain (an upstream that never answers them) held every relay slot:
/// forged UDP queries the 256 UDP ones, sixteen addresses' sixteen TCP connections the 256 TCP
/// ones, and a victim's query for another domain got TC, then SERVFAIL. Now the domain holds
/// `dns.forwards_per_domain` (64) of each, its further queries are answered at once (TC over
/// UDP, SERVFAIL over TCP, counted under `limit="domain"`), and the victim's is relayed.
#[tokio::test]
async fn slow_names_under_one_domain_do_not_starve_other_domains() {
    let upstream = slow_upstream().await;
    let s = setup(
        "dns-forward-per-domain",
        vec![],
        &format!(
            "upstreams = [\"{}\"]\nupstream_timeout = \"60s\"",
            upstream.addr
        ),
    )
    .await;
    let held = fill_relay_slots(
        s.dns,
        &upstream,
        |host, i| format!("slow{i}.h{host}.attacker.example."),
        |host, i| format!("slow{i}.t{host}.attacker.example."),
    )
    .await;
    let m = victim_asks(s.dns, "www.victim.example.").await;
    assert!(answered_by_the_upstream(&m), "{m:?}");
    let mut stream = tcp_from("127.0.0.50", s.dns).await;
    let m = ask_on(
        &mut stream,
        &message("tcp.victim.example.", RecordType::A, None),
    )
    .await
    .unwrap();
    assert!(answered_by_the_upstream(&m), "over TCP: {m:?}");
    // The attacker's domain: its share relayed, the rest answered at once.
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(upstream.udp_slow.load(Relaxed), 64);
    assert_eq!(upstream.tcp_slow.load(Relaxed), 64);
    for family in [
        "switchyard_dns_forwards_to_tcp_total",
        "switchyard_dns_forwards_shed_total",
    ] {
        assert_eq!(
            s.sy.metric(family, &["limit=\"domain\""]).await,
            192.0,
            "{family}"
        );
    }
    for task in held {
        task.abort();
    }
}

/// Slow names under many domains, each within its share, can still take every UDP relay slot
/// (forged sources are as many as an attacker likes) and every TCP slot that clients already
/// holding one may take: the last 64 TCP slots go only to clients holding none, so a victim
/// with an address of its own, told TC over UDP, is relayed over TCP.
#[tokio::test]
async fn a_client_holding_no_relay_gets_one_over_tcp_whatever_others_hold() {
    let upstream = slow_upstream().await;
    let s = setup(
        "dns-forward-reserve",
        vec![],
        &format!(
            "upstreams = [\"{}\"]\nupstream_timeout = \"60s\"",
            upstream.addr
        ),
    )
    .await;
    let held = fill_relay_slots(
        s.dns,
        &upstream,
        |host, i| format!("slow{i}.d{host}.example."),
        |host, i| format!("slow{host}.t{}.example.", (usize::from(host) * 16 + i) % 8),
    )
    .await;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(upstream.udp_slow.load(Relaxed), 256, "every UDP slot taken");
    assert!(upstream.tcp_slow.load(Relaxed) < 256);
    let m = victim_asks(s.dns, "www.victim.example.").await;
    assert!(answered_by_the_upstream(&m), "{m:?}");
    for task in held {
        task.abort();
    }
}
