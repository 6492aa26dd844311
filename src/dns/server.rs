//! The DNS listeners: UDP and TCP on one address. Each query loads the table once and is
//! answered inline; queries for other zones are relayed to the upstreams (in turn, each with a
//! timeout) in their own bounded tasks, so a slow upstream never stalls the zone's answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RecordType};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::answer::{self, MAX_UDP_PAYLOAD, Outcome, Reply, Transport};
use super::fast;
use super::rrl;
use super::udp_batch::Batch;
use crate::routing::cidr::Cidr;
use crate::snapshot::Store;
use crate::zone::Zone;

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
    /// UDP answers dropped, and sent truncated (slipped), by response rate limiting.
    pub rrl_dropped: Counter,
    pub rrl_slipped: Counter,
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
            rrl_dropped: Counter::default(),
            rrl_slipped: Counter::default(),
            by_kind,
        }
    }
}

impl DnsMetrics {
    /// DNS's metrics, registered with the process's.
    pub fn registered(metrics: &crate::metrics::Metrics) -> Arc<DnsMetrics> {
        let dns = Arc::new(DnsMetrics::default());
        metrics.register(
            "dns_queries",
            "DNS queries answered, by type and rcode",
            dns.queries.clone(),
        );
        metrics.register(
            "dns_truncated",
            "UDP answers truncated to fit (TC set)",
            dns.truncated.clone(),
        );
        metrics.register(
            "dns_forwarded",
            "Queries relayed to upstream resolvers",
            dns.forwarded.clone(),
        );
        metrics.register(
            "dns_upstream_failures",
            "Upstream attempts that failed or timed out",
            dns.upstream_failures.clone(),
        );
        metrics.register(
            "dns_rrl_dropped",
            "UDP answers dropped by response rate limiting (dns.rrl)",
            dns.rrl_dropped.clone(),
        );
        metrics.register(
            "dns_rrl_slipped",
            "UDP answers sent truncated (TC) by response rate limiting (dns.rrl)",
            dns.rrl_slipped.clone(),
        );
        dns
    }

    fn query(&self, qtype: Option<RecordType>, rcode: ResponseCode) {
        self.by_kind[qtype_index(qtype) * RCODES.len() + rcode_index(rcode)].inc();
    }
}

/// How the server answers beyond the zone: relaying, who may recurse, rate limiting.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// Clients whose queries for other names are relayed (`dns.allow_recursion`).
    pub recursion: Vec<Cidr>,
    /// Response rate limiting of UDP answers (`dns.rrl`); `None`: off.
    pub rrl: Option<rrl::Settings>,
    /// Upstreams per domain suffix (`dns.zone_resolvers`), longest suffix first.
    pub zone_resolvers: Vec<(LowerName, Vec<SocketAddr>)>,
}

pub struct DnsServer {
    pub store: Arc<Store>,
    pub metrics: Arc<DnsMetrics>,
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// The served zones, empty, until the first zone is live: their names get SERVFAIL.
    pending: Zone,
    /// Clients whose queries for other names are relayed (`dns.allow_recursion`).
    recursion: Vec<Cidr>,
    rrl: Option<rrl::Settings>,
    zone_resolvers: Vec<(LowerName, Vec<SocketAddr>)>,
    forwards: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
}

impl DnsServer {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<DnsMetrics>,
        pending: Zone,
        settings: Settings,
    ) -> DnsServer {
        DnsServer {
            store,
            metrics,
            pending,
            recursion: settings.recursion,
            upstreams: settings.upstreams,
            upstream_timeout: settings.upstream_timeout,
            rrl: settings.rrl,
            zone_resolvers: settings.zone_resolvers,
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
        // This thread's rate-limiting table: no one else touches it.
        let mut rrl = self.rrl.clone().map(rrl::Table::new);
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
                // Recursion available to this client (RA): the sender's address is read only
                // when there are upstreams to relay to.
                let recursion =
                    self.relays() && slot.peer().is_some_and(|client| self.may_recurse(client));
                if let Some(zone) = snapshot.dns.as_deref()
                    && let Some(qtype) = fast::answer(zone, slot.query, slot.reply, recursion)
                {
                    self.metrics.query(Some(qtype), ResponseCode::NoError);
                    continue;
                }
                let outcome = answer::answer(
                    Some(snapshot.dns.as_deref().unwrap_or(&self.pending)),
                    slot.query,
                    Transport::Udp,
                    recursion,
                );
                match outcome {
                    Outcome::Reply(answer) => {
                        self.count(&answer);
                        *slot.reply = answer.bytes;
                    }
                    Outcome::Forward {
                        name,
                        qtype,
                        limit,
                        edns,
                    } => {
                        if self.route(&name).is_none() {
                            // No upstream for this name (only zone resolvers, none of its).
                            *slot.reply = self.refuse(&snapshot, slot.query, Transport::Udp);
                            continue;
                        }
                        let relay = Relayed {
                            name,
                            qtype,
                            limit,
                            edns,
                        };
                        let sender = slot.sender();
                        let packet = slot.query.to_vec();
                        let Ok(permit) = self.forwards.clone().try_acquire_owned() else {
                            self.fail(&packet, qtype, |bytes| *slot.reply = bytes);
                            continue;
                        };
                        let (server, socket) = (self.clone(), socket.clone());
                        runtime.spawn(async move {
                            if let Some(bytes) =
                                server.forward(&packet, relay, Transport::Udp).await
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
            if let Some(table) = &mut rrl {
                self.rate_limit(table, &mut batch, n);
            }
            batch.send(&socket, n);
        }
    }

    pub async fn serve_tcp(self: Arc<Self>, listener: Arc<TcpListener>) {
        loop {
            let Ok((stream, client)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = self.tcp_connections.clone().try_acquire_owned() else {
                continue; // over the limit: the connection is closed as it drops
            };
            let server = self.clone();
            tokio::spawn(async move {
                server.tcp_connection(stream, client).await;
                drop(permit);
            });
        }
    }

    async fn tcp_connection(&self, mut stream: TcpStream, client: SocketAddr) {
        let recursion = self.relays() && self.may_recurse(client);
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
                    recursion,
                )
            };
            let bytes = match outcome {
                Outcome::Reply(reply) => {
                    self.count(&reply);
                    reply.bytes
                }
                Outcome::Forward {
                    name,
                    qtype,
                    limit,
                    edns,
                } => {
                    if self.route(&name).is_none() {
                        self.refuse(&self.store.load(), &packet, Transport::Tcp)
                    } else {
                        let relay = Relayed {
                            name,
                            qtype,
                            limit,
                            edns,
                        };
                        match self.forward(&packet, relay, Transport::Tcp).await {
                            Some(bytes) => bytes,
                            None => return,
                        }
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

    /// Relays a query to the upstreams in turn, each under a random ID from a fresh socket,
    /// taking only a reply to that ID and question; SERVFAIL when all fail. The reply goes back
    /// under the client's ID, cut to header and question with TC set when it is larger than
    /// the client takes (`limit`), so that it asks again over TCP.
    async fn forward(
        &self,
        packet: &[u8],
        relay: Relayed,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        self.metrics.forwarded.inc();
        let question = question_end(packet)?;
        for upstream in self.route(&relay.name).unwrap_or_default() {
            let mut query = packet.to_vec();
            query[..2].copy_from_slice(&random_id().to_be_bytes());
            let attempt = match transport {
                Transport::Udp => relay_udp(*upstream, &query, question),
                Transport::Tcp => Box::pin(relay_tcp(*upstream, &query, question)) as _,
            };
            match tokio::time::timeout(self.upstream_timeout, attempt).await {
                Ok(Ok(mut reply)) => {
                    reply[..2].copy_from_slice(&packet[..2]);
                    // The rcode is 12 bits: the upper 8 live in the OPT record (BADVERS).
                    let high = super::edns::scan(&reply).rcode_high;
                    let rcode = ResponseCode::from(high, reply[3] & 0x0f);
                    self.metrics.query(Some(relay.qtype), rcode);
                    if reply.len() > relay.limit {
                        self.metrics.truncated.inc();
                        return Some(answer::cut_to_question(
                            &reply,
                            Some(&packet[..question]),
                            relay.edns,
                        ));
                    }
                    return Some(reply);
                }
                Ok(Err(e)) => tracing::debug!(%upstream, "upstream failed: {e}"),
                Err(_) => tracing::debug!(%upstream, "upstream timed out (no matching reply)"),
            }
            self.metrics.upstream_failures.inc();
        }
        let mut reply = None;
        self.fail(packet, relay.qtype, |bytes| reply = Some(bytes));
        reply
    }

    /// Applies response rate limiting to the batch's answers: each goes out, goes out cut to
    /// its question with TC set (slipped), or is dropped (see [`rrl`]).
    fn rate_limit(&self, table: &mut rrl::Table, batch: &mut Batch, n: usize) {
        let now = table.now();
        for i in 0..n {
            let slot = batch.slot(i);
            if slot.reply.is_empty() {
                continue;
            }
            let Some(client) = slot.peer() else { continue };
            match table.check(client.ip(), rrl::Kind::of(slot.reply), now) {
                rrl::Verdict::Send => {}
                rrl::Verdict::Drop => {
                    self.metrics.rrl_dropped.inc();
                    slot.reply.clear();
                }
                rrl::Verdict::Slip => {
                    self.metrics.rrl_slipped.inc();
                    let question = answer::plain_question(slot.query).map(|end| &slot.query[..end]);
                    let seen = super::edns::scan(slot.query);
                    let edns = seen.opt.then_some(seen.dnssec_ok);
                    *slot.reply = answer::cut_to_question(slot.reply, question, edns);
                }
            }
        }
    }

    /// Whether any name is relayed: upstreams, or zone resolvers, configured.
    fn relays(&self) -> bool {
        !self.upstreams.is_empty() || !self.zone_resolvers.is_empty()
    }

    /// The upstreams a name outside the served zones is relayed to: those of the longest
    /// `dns.zone_resolvers` suffix holding it, else `dns.upstreams`; `None` when there are none.
    fn route(&self, name: &LowerName) -> Option<&[SocketAddr]> {
        let upstreams = self
            .zone_resolvers
            .iter()
            .find(|(suffix, _)| suffix.zone_of(name))
            .map_or(&self.upstreams, |(_, upstreams)| upstreams);
        (!upstreams.is_empty()).then_some(upstreams.as_slice())
    }

    /// REFUSED for a name no upstream takes: the answer to a client without recursion.
    fn refuse(
        &self,
        snapshot: &crate::snapshot::Snapshot,
        packet: &[u8],
        transport: Transport,
    ) -> Vec<u8> {
        let zone = snapshot.dns.as_deref().unwrap_or(&self.pending);
        match answer::answer(Some(zone), packet, transport, false) {
            Outcome::Reply(reply) => {
                self.count(&reply);
                reply.bytes
            }
            _ => Vec::new(),
        }
    }

    /// Whether `client` may have names outside the served zones relayed.
    fn may_recurse(&self, client: SocketAddr) -> bool {
        let ip = client.ip().to_canonical();
        self.recursion.iter().any(|block| block.contains(ip))
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

/// What a relayed query's reply must fit, and where it goes (see [`Outcome::Forward`]).
#[derive(Clone)]
struct Relayed {
    name: LowerName,
    qtype: RecordType,
    limit: usize,
    /// `Some(DO bit)` when the client sent OPT.
    edns: Option<bool>,
}

type Relay<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<u8>>> + Send + 'a>>;

/// The largest DNS message: what an upstream's UDP reply may be.
const MAX_MESSAGE: usize = u16::MAX as usize;

/// Sends `query` from a socket of its own (a port the kernel picks at random, connected: only
/// the upstream's datagrams arrive) and waits for the reply to it; replies to another ID or
/// question are ignored (late, or spoofed).
fn relay_udp(upstream: SocketAddr, query: &[u8], question: usize) -> Relay<'_> {
    Box::pin(async move {
        let local: SocketAddr = if upstream.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(upstream).await?;
        socket.send(query).await?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let n = socket.recv(&mut buf).await?;
            if answers(query, question, &buf[..n]) {
                buf.truncate(n);
                return Ok(buf);
            }
            tracing::debug!(%upstream, "ignored an upstream reply to another query");
        }
    })
}

async fn relay_tcp(
    upstream: SocketAddr,
    query: &[u8],
    question: usize,
) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let len = stream.read_u16().await?;
        let mut reply = vec![0u8; len as usize];
        stream.read_exact(&mut reply).await?;
        if answers(query, question, &reply) {
            return Ok(reply);
        }
        tracing::debug!(%upstream, "ignored an upstream reply to another query");
    }
}

/// Whether `reply` answers `query`: a response, with its ID, and its one question (the name in
/// any case: upstreams may echo a 0x20-randomised name as they got it). `question` is where the
/// query's question ends.
fn answers(query: &[u8], question: usize, reply: &[u8]) -> bool {
    let name_end = question - 4;
    reply.len() >= question
        && reply[..2] == query[..2]
        && reply[2] & 0x80 != 0
        && reply[4..6] == [0, 1]
        && reply[12..name_end].eq_ignore_ascii_case(&query[12..name_end])
        && reply[name_end..question] == query[name_end..question]
}

/// Where the question of a one-question message ends (its name uncompressed, or ending in a
/// pointer), or `None` when the message is shorter.
fn question_end(packet: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = *packet.get(at)? as usize;
        match len {
            0 => {
                at += 1;
                break;
            }
            1..=63 => at += 1 + len,
            _ if len & 0xc0 == 0xc0 => {
                at += 2;
                break;
            }
            _ => return None,
        }
    }
    (packet.len() >= at + 4).then_some(at + 4)
}

/// A query ID no one off the path can guess (RFC 5452): from the kernel's random pool.
fn random_id() -> u16 {
    let mut id = [0u8; 2];
    // SAFETY: the kernel writes at most two bytes into `id`.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n == 2 {
        u16::from_ne_bytes(id)
    } else {
        fastrand::u16(..)
    }
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
        // 16 is BADVERS in a message (RFC 6891) and BADSIG in a TSIG record (RFC 8945); a
        // decoded 12-bit rcode of 16 comes back as BADSIG.
        ResponseCode::BADVERS | ResponseCode::BADSIG => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::fixtures::query;

    #[test]
    fn a_reply_answers_its_query_only() {
        let q = query("Www.Example.com.", RecordType::A, Some(1232))
            .to_vec()
            .unwrap();
        let end = question_end(&q).unwrap();
        assert_eq!(&q[end..end + 3], &[0, 0, 41], "the OPT record follows");
        let mut reply = q.clone();
        reply[2] |= 0x80;
        assert!(answers(&q, end, &reply));
        // The name in another case (0x20) still answers it.
        reply[13] = b'w';
        assert!(answers(&q, end, &reply));
        let mut other_id = reply.clone();
        other_id[1] ^= 1;
        let mut other_type = reply.clone();
        other_type[end - 3] = 28;
        let mut other_name = reply.clone();
        other_name[14] = b'x';
        let mut a_query = reply.clone();
        a_query[2] &= 0x7f;
        for bad in [
            &other_id,
            &other_type,
            &other_name,
            &a_query,
            &reply[..end - 1].to_vec(),
        ] {
            assert!(!answers(&q, end, bad));
        }
    }

    #[test]
    fn a_truncated_relay_keeps_the_header_and_question() {
        let q = query("big.example.", RecordType::A, Some(1232))
            .to_vec()
            .unwrap();
        let end = question_end(&q).unwrap();
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

    #[test]
    fn question_end_never_reads_past_the_message() {
        for _ in 0..5000 {
            let len = fastrand::usize(..40);
            let bytes: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
            if let Some(end) = question_end(&bytes) {
                assert!(end <= bytes.len());
            }
        }
    }
}
