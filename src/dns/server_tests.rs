//! The DNS server on loopback sockets: relay loops, zones never relayed before they are
//! built, truncated relays.

use super::*;
use crate::zone::fixtures::query;
use hickory_proto::op::Message;
use std::sync::atomic::{AtomicUsize, Ordering};

fn settings(upstreams: Vec<SocketAddr>) -> Settings {
    Settings {
        upstreams,
        upstream_timeout: Duration::from_secs(5),
        recursion: vec![Cidr::parse("127.0.0.0/8").unwrap()],
        rrl: None,
        zone_resolvers: Vec::new(),
        tcp_idle_timeout: Duration::from_secs(10),
        tcp_connections: DEFAULT_TCP_CONNECTIONS,
        tcp_connections_per_client: 16,
        forwards_per_client: 64,
        forwards_per_domain: DEFAULT_FORWARDS_PER_DOMAIN,
        ipv6_client_prefix: 64,
    }
}

/// UDP and TCP sockets on one loopback port.
async fn sockets() -> (std::net::UdpSocket, Arc<TcpListener>) {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, Arc::new(tcp));
        }
    }
}

/// The server, serving UDP (on a thread of its own, as in `lib.rs`) and TCP on `sockets`.
fn start(
    store: Arc<Store>,
    pending: Zone,
    settings: Settings,
    (udp, tcp): (std::net::UdpSocket, Arc<TcpListener>),
) -> Arc<DnsServer> {
    let metrics = Arc::new(DnsMetrics::default());
    let server = Arc::new(DnsServer::new(store, metrics, pending, settings));
    let (udp_server, runtime) = (server.clone(), tokio::runtime::Handle::current());
    std::thread::spawn(move || udp_server.serve_udp(Arc::new(udp), runtime));
    tokio::spawn(server.clone().serve_tcp(tcp));
    server
}

async fn ask(server: SocketAddr, name: &str, transport: Transport) -> Message {
    let packet = query(name, RecordType::A, None).to_vec().unwrap();
    let wait = Duration::from_secs(20);
    let bytes = match transport {
        Transport::Udp => {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.send_to(&packet, server).await.unwrap();
            let mut buf = vec![0u8; 65535];
            let n = tokio::time::timeout(wait, socket.recv(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            buf.truncate(n);
            buf
        }
        Transport::Tcp => {
            let mut stream = TcpStream::connect(server).await.unwrap();
            let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&packet);
            stream.write_all(&framed).await.unwrap();
            let len = tokio::time::timeout(wait, stream.read_u16())
                .await
                .expect("an answer")
                .unwrap();
            let mut buf = vec![0u8; len as usize];
            stream.read_exact(&mut buf).await.unwrap();
            buf
        }
    };
    Message::from_vec(&bytes).unwrap()
}

/// An upstream on loopback (UDP) that answers every query with an empty NOERROR, counting
/// them.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            counted.fetch_add(1, Ordering::SeqCst);
            buf[2] |= 0x80;
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_from_our_own_relay_socket_is_not_relayed_again() {
    // The upstream is our own listener: each relayed query would come back to be relayed.
    let (udp, tcp) = sockets().await;
    let own = udp.local_addr().unwrap();
    let pending = Zone::pending(&crate::zone::fixtures::api_zone(0, Vec::new()).config);
    let server = start(
        Arc::new(Store::new()),
        pending,
        settings(vec![own]),
        (udp, tcp),
    );
    for (transport, relayed) in [(Transport::Udp, 1), (Transport::Tcp, 2)] {
        let m = ask(own, "example.com.", transport).await;
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(server.metrics.forwarded.get(), relayed, "{transport:?}");
        assert_eq!(server.metrics.forward_loops.get(), relayed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zones_a_reload_serves_are_never_relayed_before_they_are_built() {
    let (upstream, seen) = upstream().await;
    let live = crate::zone::fixtures::api_zone(1, Vec::new());
    let mut reloaded = live.config.clone();
    reloaded.domain = "cluster".into();
    let store = Arc::new(Store::new());
    let pending = Zone::pending(&live.config);
    store.publish(Snapshot {
        dns: Some(Arc::new(live)),
        ..Snapshot::empty()
    });
    let sockets = sockets().await;
    let addr = sockets.0.local_addr().unwrap();
    let server = start(store, pending, settings(vec![upstream]), sockets);
    let name = "api-prod.marathon.cluster.";
    let m = ask(addr, name, Transport::Udp).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(seen.load(Ordering::SeqCst), 1, "not served yet: relayed");
    // The reload: `cluster` is served from now on, its zone not built yet.
    server.serve_zones(&reloaded);
    for transport in [Transport::Udp, Transport::Tcp] {
        for name in [name, "cluster.", "x.CLUSTER."] {
            let m = ask(addr, name, transport).await;
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{name}");
        }
        // The live zone answers on until the new one replaces it; other names are relayed.
        let m = ask(addr, "api-prod.marathon.mesos.", transport).await;
        assert_eq!(m.answers.len(), 1);
    }
    let m = ask(addr, "example.com.", Transport::Udp).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(seen.load(Ordering::SeqCst), 2, "only example.com relayed");
}

#[test]
fn a_truncated_relay_keeps_the_header_and_question() {
    let q = query("big.example.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    let end = relay::question_end(&q).unwrap();
    let mut reply = q.clone();
    reply[2] |= 0x80;
    reply[3] = 0x83; // RA, NXDOMAIN
    reply.extend_from_slice(&[0; 600]);
    let cut = answer::cut_to_question(&reply, Some(&q[..end]), Some(false));
    let m = hickory_proto::op::Message::from_vec(&cut).unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty());
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.queries[0].name().to_ascii(), "big.example.");
    assert!(m.edns.is_some());
}
