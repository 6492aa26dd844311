//! The DNS listeners: UDP and TCP on one address. Each query loads the table once and is
//! answered inline; queries for other zones are relayed to the upstreams (in turn, each with a
//! timeout) in their own bounded tasks, so a slow upstream never stalls the zone's answers.
//!
//! What a client can hold is bounded, in total and per client (see [`limits`]): TCP connections
//! (each read and write under `dns.tcp_idle_timeout`, so a client that trickles its queries or
//! never reads its answers loses the connection), and relayed queries in flight, which are also
//! bounded per queried domain (slow names under one domain cannot hold every relay slot).
//!
//! [`limits`]: super::limits

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::answer::{self, Outcome, Relayed, Reply, Transport, UDP_QUERY_BUFFER};
use super::fast;
use super::limits::{Expired, Relay, Relays, Shares};
use super::metrics::DnsMetrics;
use super::relay::{self, OwnSockets};
use super::rrl;
use super::udp_batch::Batch;
use crate::routing::cidr::Cidr;
use crate::snapshot::{Snapshot, Store};
use crate::zone::{Zone, ZoneConfig};

/// Relayed queries in flight at once, half of them for queries that came over UDP and half for
/// those over TCP (see [`DnsServer::admit`]).
pub const MAX_FORWARDS: usize = 512;
/// `dns.forwards_per_domain` by default: a quarter of a transport's relay slots, so that slow
/// names fill them only from four domains or more, while a domain busy enough to need more
/// relays in flight at once than this is busier than a transport's slots serve well anyway.
pub const DEFAULT_FORWARDS_PER_DOMAIN: usize = MAX_FORWARDS / 8;
/// TCP relay slots only a client holding none may take: with clients holding at most 16 each
/// (`dns.tcp_connections_per_client`, one query in flight per connection), it takes twelve of
/// them and 64 more before a client with an address of its own gets no relay.
pub const RESERVED_TCP_FORWARDS: usize = MAX_FORWARDS / 8;
/// `dns.tcp_connections` by default: TCP connections open at once; past this, a new one is
/// closed at once.
pub const DEFAULT_TCP_CONNECTIONS: usize = 1024;
/// Longest `dns.tcp_connections`: each is a file descriptor shared with the proxy.
pub const MAX_TCP_CONNECTIONS: usize = 65_536;
/// How long a TCP connection may wait for its next query while half of `dns.tcp_connections`
/// are open (or `dns.tcp_idle_timeout`, if shorter): idle connections go first when slots run
/// short (RFC 7766 §6.2.3), so clients holding connections open without asking cannot keep new
/// ones out. Long enough for a client across a slow link to send the query it connected for.
pub const PRESSED_IDLE_TIMEOUT: Duration = Duration::from_millis(500);

/// How the server answers beyond the zone: relaying, who may recurse, rate limiting.
#[derive(Debug, Clone)]
pub struct Settings {
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// Clients whose queries for other names are relayed (`dns.allow_recursion`).
    pub recursion: Vec<Cidr>,
    /// Response rate limiting of UDP answers (`dns.rrl`); `None`: off.
    pub rrl: Option<rrl::Settings>,
    /// Upstreams per domain suffix (`dns.zone_resolvers`), longest suffix first.
    pub zone_resolvers: Vec<(LowerName, Vec<SocketAddr>)>,
    /// A query must arrive whole, and an answer be taken, within this on a TCP connection
    /// (`dns.tcp_idle_timeout`).
    pub tcp_idle_timeout: Duration,
    /// TCP connections open at once (`dns.tcp_connections`).
    pub tcp_connections: usize,
    /// TCP connections one client holds at once (`dns.tcp_connections_per_client`).
    pub tcp_connections_per_client: usize,
    /// Relayed queries of one client in flight at once (`dns.forwards_per_client`).
    pub forwards_per_client: usize,
    /// Relayed queries for one domain in flight at once (`dns.forwards_per_domain`).
    pub forwards_per_domain: usize,
    /// The IPv6 prefix a client is counted by for both (`dns.ipv6_client_prefix`).
    pub ipv6_client_prefix: u8,
}

pub struct DnsServer {
    pub store: Arc<Store>,
    pub metrics: Arc<DnsMetrics>,
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    /// The zones the configuration serves, empty and not live: answered (SERVFAIL) until the
    /// first zone is, and never relayed, also while a reload's new zones are being built
    /// (replaced by [`DnsServer::serve_zones`]).
    pending: ArcSwap<Zone>,
    /// Clients whose queries for other names are relayed (`dns.allow_recursion`).
    recursion: Vec<Cidr>,
    rrl: Option<rrl::Settings>,
    zone_resolvers: Vec<(LowerName, Vec<SocketAddr>)>,
    /// Relay slots of queries that came over UDP, whose source address may be forged: past
    /// them (or the client's share, or the domain's) the answer is TC, and the client asks
    /// again over TCP.
    udp_forwards: Relays,
    /// Relay slots of queries that came over TCP, whose address the handshake proved: past
    /// them (or the client's share, or the domain's) SERVFAIL. Forged UDP cannot take these,
    /// and the last [`RESERVED_TCP_FORWARDS`] go to clients holding none.
    tcp_forwards: Relays,
    tcp_connections: Shares,
    tcp_idle_timeout: Duration,
    /// Woken when a new TCP connection leaves half the slots or more taken: idle connections
    /// then wait no longer than [`PRESSED_IDLE_TIMEOUT`] for their next query.
    pressure: tokio::sync::Notify,
    /// Our relay sockets' addresses: a query from one is ours, come back round a loop.
    own: OwnSockets,
}

impl DnsServer {
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<DnsMetrics>,
        pending: Zone,
        settings: Settings,
    ) -> DnsServer {
        let v6 = settings.ipv6_client_prefix;
        DnsServer {
            store,
            metrics,
            pending: ArcSwap::from_pointee(pending),
            recursion: settings.recursion,
            upstreams: settings.upstreams,
            upstream_timeout: settings.upstream_timeout,
            rrl: settings.rrl,
            zone_resolvers: settings.zone_resolvers,
            udp_forwards: Relays::new(
                Shares::new(MAX_FORWARDS / 2, settings.forwards_per_client, v6),
                settings.forwards_per_domain,
            ),
            tcp_forwards: Relays::new(
                Shares::new(MAX_FORWARDS / 2, settings.forwards_per_client, v6)
                    .reserving(RESERVED_TCP_FORWARDS),
                settings.forwards_per_domain,
            ),
            tcp_connections: Shares::new(
                settings.tcp_connections,
                settings.tcp_connections_per_client,
                v6,
            ),
            tcp_idle_timeout: settings.tcp_idle_timeout,
            pressure: tokio::sync::Notify::new(),
            own: OwnSockets::default(),
        }
    }

    /// The zones a reloaded configuration serves: their names are never relayed from now on,
    /// and answer SERVFAIL until a zone holding them is live.
    pub fn serve_zones(&self, config: &ZoneConfig) {
        self.pending.store(Arc::new(Zone::pending(config)));
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
        let mut batch = Batch::new(UDP_QUERY_BUFFER);
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
            // One table (and one set of served zones) for the queries that came together.
            let snapshot = self.store.load();
            let pending = self.pending.load();
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
                    Some(snapshot.dns.as_deref().unwrap_or(&pending)),
                    slot.query,
                    Transport::Udp,
                    recursion,
                );
                match outcome {
                    Outcome::Reply(answer) => {
                        self.count(&answer);
                        *slot.reply = answer.bytes;
                    }
                    Outcome::Forward(relayed) => {
                        let (query, client) = (slot.query, slot.peer());
                        let admitted = self.admit(
                            &snapshot,
                            &pending,
                            query,
                            &relayed,
                            client,
                            Transport::Udp,
                        );
                        let share = match admitted {
                            Ok(share) => share,
                            Err(bytes) => {
                                *slot.reply = bytes;
                                continue;
                            }
                        };
                        let sender = slot.sender();
                        let packet = query.to_vec();
                        let (server, socket) = (self.clone(), socket.clone());
                        runtime.spawn(async move {
                            if let Some(bytes) =
                                server.forward(&packet, relayed, Transport::Udp).await
                            {
                                // A UDP send does not block on a socket that is not full.
                                let _ = sender.send(&socket, &bytes);
                            }
                            drop(share);
                        });
                    }
                    Outcome::Drop => {}
                }
            }
            drop((snapshot, pending));
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
            let taken = self.tcp_connections.take(client.ip());
            if self.tcp_connections.pressed() {
                self.pressure.notify_waiters();
            }
            let share = match taken {
                Ok(share) => share,
                Err(over) => {
                    // Closed as it drops: the others' connections go on.
                    self.metrics.refused(&self.metrics.tcp_refused, over);
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move {
                server.tcp_connection(stream, client).await;
                drop(share);
            });
        }
    }

    /// One TCP connection's queries, answered in turn (each read by [`DnsServer::tcp_query`]),
    /// and each answer taken by the client within `tcp_idle_timeout` (a client that never reads
    /// its answers does not hold the connection for ever).
    async fn tcp_connection(&self, mut stream: TcpStream, client: SocketAddr) {
        let recursion = self.relays() && self.may_recurse(client);
        loop {
            let Some(packet) = self.tcp_query(&mut stream).await else {
                return;
            };
            let Some(bytes) = self.tcp_answer(&packet, client, recursion).await else {
                return;
            };
            let Ok(len) = u16::try_from(bytes.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            match self.idle_bounded(stream.write_all(&framed)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(expired) => {
                    self.metrics.expired(expired);
                    return;
                }
            }
        }
    }

    /// The next query on a connection; `None`: close it. It must arrive whole within the
    /// connection's idle bound ([`DnsServer::idle_bounded`]): a client trickling it a byte at
    /// a time does not hold the connection longer.
    async fn tcp_query(&self, stream: &mut TcpStream) -> Option<Vec<u8>> {
        let begun = std::sync::atomic::AtomicBool::new(false);
        let read = async {
            let len = stream.read_u16().await.ok()?;
            begun.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut packet = vec![0u8; len as usize];
            stream.read_exact(&mut packet).await.ok()?;
            Some(packet)
        };
        match self.idle_bounded(read).await {
            Ok(packet) => packet,
            // No query begun in the relaxed time: the client is done with the connection,
            // not too slow, and that is not counted.
            Err(Expired::Idle) if !begun.load(std::sync::atomic::Ordering::Relaxed) => None,
            Err(expired) => {
                self.metrics.expired(expired);
                None
            }
        }
    }

    /// `step` of a TCP connection (reading its next query, writing an answer), given
    /// `tcp_idle_timeout` from now, or [`PRESSED_IDLE_TIMEOUT`] while half the slots are taken,
    /// also when that happens during the wait (RFC 7766 §6.2.3): neither a client that sends
    /// nothing nor one that never reads its answers keeps a slot long when slots run short.
    async fn idle_bounded<F: Future>(&self, step: F) -> Result<F::Output, Expired> {
        let since = tokio::time::Instant::now();
        let relaxed = since + self.tcp_idle_timeout;
        let pressed = since + PRESSED_IDLE_TIMEOUT.min(self.tcp_idle_timeout);
        tokio::pin!(step);
        let mut deadline = if self.tcp_connections.pressed() {
            pressed
        } else {
            relaxed
        };
        loop {
            let pressure = self.pressure.notified();
            tokio::select! {
                out = &mut step => return Ok(out),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(if deadline < relaxed { Expired::Pressed } else { Expired::Idle });
                }
                _ = pressure => deadline = deadline.min(pressed),
            }
        }
    }

    /// The answer to one query over TCP, relayed or not; `None`: close the connection.
    async fn tcp_answer(
        &self,
        packet: &[u8],
        client: SocketAddr,
        recursion: bool,
    ) -> Option<Vec<u8>> {
        let (admitted, relayed) = {
            let (snapshot, pending) = (self.store.load(), self.pending.load());
            let zone = snapshot.dns.as_deref().unwrap_or(&pending);
            match answer::answer(Some(zone), packet, Transport::Tcp, recursion) {
                Outcome::Reply(reply) => {
                    self.count(&reply);
                    return Some(reply.bytes).filter(|b| !b.is_empty());
                }
                Outcome::Forward(relayed) => {
                    let admitted = self.admit(
                        &snapshot,
                        &pending,
                        packet,
                        &relayed,
                        Some(client),
                        Transport::Tcp,
                    );
                    (admitted, relayed)
                }
                Outcome::Drop => return None,
            }
        };
        match admitted {
            Ok(share) => {
                let bytes = self.forward(packet, relayed, Transport::Tcp).await;
                drop(share);
                bytes
            }
            Err(bytes) => Some(bytes).filter(|b| !b.is_empty()),
        }
    }

    /// Whether a query that [`answer::answer`] would relay goes to the upstreams (`Ok`,
    /// holding a relay slot for its client and domain) or is answered here (`Err`, the
    /// answer): a name in the zones the configuration serves (a reload's, not built yet)
    /// SERVFAIL, never relayed; a name no upstream takes REFUSED; a query from one of our own
    /// relay sockets (a forwarding loop) SERVFAIL; past the relay slots of its transport, or
    /// the client's share of them, or its domain's, over UDP an empty answer with TC (ask again
    /// over TCP), over TCP SERVFAIL, at once.
    fn admit(
        &self,
        snapshot: &Snapshot,
        pending: &Zone,
        packet: &[u8],
        relayed: &Relayed,
        client: Option<SocketAddr>,
        transport: Transport,
    ) -> Result<Relay, Vec<u8>> {
        if pending.soa_for(&relayed.name).is_some() {
            return Err(self.reply(answer::answer(Some(pending), packet, transport, true)));
        }
        if self.route(&relayed.name).is_none() {
            // No upstream for this name (only zone resolvers, none of its).
            let zone = snapshot.dns.as_deref().unwrap_or(pending);
            return Err(self.reply(answer::answer(Some(zone), packet, transport, false)));
        }
        if client.is_some_and(|client| self.own.contains(client)) {
            self.metrics.forward_loops.inc();
            tracing::debug!(name = %relayed.name, "dns: a query from our own relay socket: a forwarding loop");
            return Err(self.servfail(packet, relayed.qtype).unwrap_or_default());
        }
        let ip = client.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.ip());
        match transport {
            // A UDP source address may be forged (by someone who never reads the answer, and
            // keeps a slot until the upstream times out): the client past the UDP slots, or
            // past its share of them, or its domain's, is told to ask again over TCP (see
            // `answer::truncated`), where forged queries hold nothing (a flood of forged queries
            // for slow names under a domain denies that domain's real clients nothing).
            Transport::Udp => self.udp_forwards.take(ip, &relayed.name).map_err(|over| {
                self.metrics.refused(&self.metrics.forwards_to_tcp, over);
                self.metrics.truncated.inc();
                self.metrics
                    .query(Some(relayed.qtype), ResponseCode::NoError);
                answer::truncated(packet).unwrap_or_default()
            }),
            Transport::Tcp => self.tcp_forwards.take(ip, &relayed.name).map_err(|over| {
                self.metrics.refused(&self.metrics.forwards_shed, over);
                self.servfail(packet, relayed.qtype).unwrap_or_default()
            }),
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
        let question = relay::question_end(packet)?;
        for upstream in self.route(&relay.name).unwrap_or_default() {
            let mut query = packet.to_vec();
            query[..2].copy_from_slice(&relay::random_id().to_be_bytes());
            let attempt = match transport {
                Transport::Udp => relay::relay_udp(&self.own, *upstream, &query, question),
                Transport::Tcp => {
                    Box::pin(relay::relay_tcp(&self.own, *upstream, &query, question)) as _
                }
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
        self.servfail(packet, relay.qtype)
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
            match table.check_reply(client.ip(), slot.reply, now) {
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

    /// The bytes of an answer, counted; empty for no answer.
    fn reply(&self, outcome: Outcome) -> Vec<u8> {
        match outcome {
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

    /// SERVFAIL for a query that was to be relayed, counted.
    fn servfail(&self, packet: &[u8], qtype: RecordType) -> Option<Vec<u8>> {
        let bytes = answer::servfail(packet)?;
        self.metrics.query(Some(qtype), ResponseCode::ServFail);
        Some(bytes)
    }

    fn count(&self, reply: &Reply) {
        self.metrics.query(reply.qtype, reply.rcode);
        if reply.truncated {
            self.metrics.truncated.inc();
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
