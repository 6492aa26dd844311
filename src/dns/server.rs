//! The DNS listeners: UDP and TCP on one address. Each query loads the table once and is
//! answered inline; queries for other zones are relayed to the upstreams (in turn, each with a
//! timeout) in their own bounded tasks, so a slow upstream never stalls the zone's answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::answer::{self, MAX_UDP_PAYLOAD, Outcome, Reply, Transport};
use super::fast;
use super::udp_batch::Batch;
use super::zone::Zone;
use crate::routing::store::Store;

/// Forwarded queries in flight at once; past this, SERVFAIL at once.
const MAX_FORWARDS: usize = 512;
const MAX_TCP_CONNECTIONS: usize = 1024;
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub qtype: &'static str,
    pub rcode: &'static str,
}

pub struct DnsMetrics {
    pub queries: Family<QueryLabels, Counter>,
    pub truncated: Counter,
    pub forwarded: Counter,
    pub upstream_failures: Counter,
    /// `queries` resolved for every (type, rcode) pair, so counting a query takes no lock.
    by_kind: Vec<Counter>,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        let queries = Family::<QueryLabels, Counter>::default();
        let by_kind = QTYPES
            .iter()
            .flat_map(|&qtype| {
                RCODES
                    .iter()
                    .map(move |&rcode| QueryLabels { qtype, rcode })
            })
            .map(|labels| queries.get_or_create(&labels).clone())
            .collect();
        DnsMetrics {
            queries,
            truncated: Counter::default(),
            forwarded: Counter::default(),
            upstream_failures: Counter::default(),
            by_kind,
        }
    }
}

impl DnsMetrics {
    fn query(&self, qtype: Option<RecordType>, rcode: ResponseCode) {
        self.by_kind[qtype_index(qtype) * RCODES.len() + rcode_index(rcode)].inc();
    }
}

pub struct DnsServer {
    pub store: Arc<Store>,
    pub metrics: Arc<DnsMetrics>,
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// The served zones, empty, until the first zone is live: their names get SERVFAIL.
    pending: Zone,
    forwards: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
}

impl DnsServer {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<DnsMetrics>,
        pending: Zone,
        upstreams: Vec<SocketAddr>,
        upstream_timeout: Duration,
    ) -> DnsServer {
        DnsServer {
            store,
            metrics,
            pending,
            upstreams,
            upstream_timeout,
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            tcp_connections: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
        }
    }

    /// The UDP loop, on a thread of its own with a blocking socket: under load every `recv`
    /// finds datagrams waiting, so going through the event loop only adds work (measured: see
    /// benches/RESULTS.md). Queries come and go in batches (see [`udp_batch`]); the plain A and
    /// AAAA query takes the fast path (see [`fast`]). Relayed queries run on the runtime.
    ///
    /// [`udp_batch`]: super::udp_batch
    /// [`fast`]: super::fast
    pub fn serve_udp(
        self: Arc<Self>,
        socket: Arc<std::net::UdpSocket>,
        runtime: tokio::runtime::Handle,
    ) {
        let mut batch = Batch::new(MAX_UDP_PAYLOAD as usize);
        if let Err(e) = batch.reply_from_destination(&socket) {
            tracing::warn!("dns: replies may leave from another address than asked: {e}");
        }
        loop {
            let n = match batch.recv(&socket) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("dns recv: {e}");
                    continue;
                }
            };
            // One table for the queries that came together.
            let snapshot = self.store.load();
            for i in 0..n {
                let slot = batch.slot(i);
                if let Some(zone) = snapshot.dns.as_deref()
                    && let Some(qtype) = fast::answer(zone, slot.query, slot.reply)
                {
                    self.metrics.query(Some(qtype), ResponseCode::NoError);
                    continue;
                }
                let outcome = answer::answer(
                    Some(snapshot.dns.as_deref().unwrap_or(&self.pending)),
                    slot.query,
                    Transport::Udp,
                    !self.upstreams.is_empty(),
                );
                match outcome {
                    Outcome::Reply(answer) => {
                        self.count(&answer);
                        *slot.reply = answer.bytes;
                    }
                    Outcome::Forward { qtype } => {
                        let sender = slot.sender();
                        if sender.addr().is_none() {
                            continue;
                        }
                        let packet = slot.query.to_vec();
                        let Ok(permit) = self.forwards.clone().try_acquire_owned() else {
                            self.fail(&packet, qtype, |bytes| *slot.reply = bytes);
                            continue;
                        };
                        let (server, socket) = (self.clone(), socket.clone());
                        runtime.spawn(async move {
                            if let Some(bytes) =
                                server.forward(&packet, qtype, Transport::Udp).await
                            {
                                // A UDP send does not block on a socket that is not full.
                                let _ = sender.send(&socket, &bytes);
                            }
                            drop(permit);
                        });
                    }
                    Outcome::Drop => {}
                }
            }
            drop(snapshot);
            batch.send(&socket, n);
        }
    }

    pub async fn serve_tcp(self: Arc<Self>, listener: Arc<TcpListener>) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = self.tcp_connections.clone().try_acquire_owned() else {
                continue; // over the limit: the connection is closed as it drops
            };
            let server = self.clone();
            tokio::spawn(async move {
                server.tcp_connection(stream).await;
                drop(permit);
            });
        }
    }

    async fn tcp_connection(&self, mut stream: TcpStream) {
        loop {
            let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
                return;
            };
            let mut packet = vec![0u8; len as usize];
            if !matches!(
                tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await,
                Ok(Ok(_))
            ) {
                return;
            }
            let outcome = {
                let snapshot = self.store.load();
                answer::answer(
                    Some(snapshot.dns.as_deref().unwrap_or(&self.pending)),
                    &packet,
                    Transport::Tcp,
                    !self.upstreams.is_empty(),
                )
            };
            let bytes = match outcome {
                Outcome::Reply(reply) => {
                    self.count(&reply);
                    reply.bytes
                }
                Outcome::Forward { qtype } => {
                    match self.forward(&packet, qtype, Transport::Tcp).await {
                        Some(bytes) => bytes,
                        None => return,
                    }
                }
                Outcome::Drop => return,
            };
            let Ok(len) = u16::try_from(bytes.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }

    /// Relays a query to the upstreams in turn; SERVFAIL when all fail.
    async fn forward(
        &self,
        packet: &[u8],
        qtype: RecordType,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        self.metrics.forwarded.inc();
        for upstream in &self.upstreams {
            let attempt = match transport {
                Transport::Udp => relay_udp(*upstream, packet),
                Transport::Tcp => Box::pin(relay_tcp(*upstream, packet)) as _,
            };
            match tokio::time::timeout(self.upstream_timeout, attempt).await {
                Ok(Ok(reply)) if valid_reply(packet, &reply) => {
                    let rcode = ResponseCode::from_low(reply[3] & 0x0f);
                    self.metrics.query(Some(qtype), rcode);
                    return Some(reply);
                }
                Ok(Ok(_)) => {
                    tracing::debug!(%upstream, "upstream answered with a mismatched reply")
                }
                Ok(Err(e)) => tracing::debug!(%upstream, "upstream failed: {e}"),
                Err(_) => tracing::debug!(%upstream, "upstream timed out"),
            }
            self.metrics.upstream_failures.inc();
        }
        let mut reply = None;
        self.fail(packet, qtype, |bytes| reply = Some(bytes));
        reply
    }

    fn fail(&self, packet: &[u8], qtype: RecordType, send: impl FnOnce(Vec<u8>)) {
        if let Some(bytes) = answer::servfail(packet) {
            self.metrics.query(Some(qtype), ResponseCode::ServFail);
            send(bytes);
        }
    }

    fn count(&self, reply: &Reply) {
        self.metrics.query(reply.qtype, reply.rcode);
        if reply.truncated {
            self.metrics.truncated.inc();
        }
    }
}

type Relay<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<u8>>> + Send + 'a>>;

fn relay_udp(upstream: SocketAddr, packet: &[u8]) -> Relay<'_> {
    Box::pin(async move {
        let local: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .unwrap();
        let socket = UdpSocket::bind(local).await?;
        socket.connect(upstream).await?;
        socket.send(packet).await?;
        let mut buf = vec![0u8; MAX_UDP_PAYLOAD as usize];
        let n = socket.recv(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    })
}

async fn relay_tcp(upstream: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(packet.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(packet).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; len as usize];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// A reply must answer this query: same id, and marked as a response.
fn valid_reply(query: &[u8], reply: &[u8]) -> bool {
    reply.len() >= 12 && reply[..2] == query[..2] && reply[2] & 0x80 != 0
}

const QTYPES: [&str; 12] = [
    "A", "AAAA", "SRV", "SOA", "NS", "ANY", "PTR", "TXT", "CNAME", "MX", "other", "none",
];
const RCODES: [&str; 8] = [
    "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP", "BADVERS", "other",
];

fn qtype_index(qtype: Option<RecordType>) -> usize {
    match qtype {
        Some(RecordType::A) => 0,
        Some(RecordType::AAAA) => 1,
        Some(RecordType::SRV) => 2,
        Some(RecordType::SOA) => 3,
        Some(RecordType::NS) => 4,
        Some(RecordType::ANY) => 5,
        Some(RecordType::PTR) => 6,
        Some(RecordType::TXT) => 7,
        Some(RecordType::CNAME) => 8,
        Some(RecordType::MX) => 9,
        Some(_) => 10,
        None => 11,
    }
}

fn rcode_index(rcode: ResponseCode) -> usize {
    match rcode {
        ResponseCode::NoError => 0,
        ResponseCode::NXDomain => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::Refused => 3,
        ResponseCode::FormErr => 4,
        ResponseCode::NotImp => 5,
        ResponseCode::BADVERS => 6,
        _ => 7,
    }
}
