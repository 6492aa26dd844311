//! The DNS server's metric families: queries by type and answer code (counted through a flat
//! array indexed by both, not a label lookup per query), relaying, truncation, response rate
//! limiting, and what the per-client and total limits turned away.

use std::sync::Arc;

use super::limits::{Expired, Over};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub qtype: &'static str,
    pub rcode: &'static str,
}

/// Which cap turned something away: `total` (every slot taken), `client` (its share) or
/// `domain` (the queried domain's share of the relay slots).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

pub struct DnsMetrics {
    pub queries: Family<QueryLabels, Counter>,
    pub truncated: Counter,
    pub forwarded: Counter,
    pub upstream_failures: Counter,
    /// UDP answers dropped, and sent truncated (slipped), by response rate limiting.
    pub rrl_dropped: Counter,
    pub rrl_slipped: Counter,
    /// TCP connections closed at once, unanswered, by which cap.
    pub tcp_refused: Family<LimitLabels, Counter>,
    /// TCP connections closed because a query did not arrive whole, or an answer was not
    /// taken, within `dns.tcp_idle_timeout`.
    pub tcp_timeouts: Counter,
    /// TCP connections closed early, idle or not reading their answers, because half the
    /// slots were taken (RFC 7766 §6.2.3).
    pub tcp_pressure_closed: Counter,
    /// TCP queries not relayed but answered SERVFAIL at once, by which cap (`domain` too).
    pub forwards_shed: Family<LimitLabels, Counter>,
    /// UDP queries not relayed but answered empty with TC (ask again over TCP), by which cap.
    pub forwards_to_tcp: Family<LimitLabels, Counter>,
    /// Queries that came from one of our own relay sockets (a forwarding loop): SERVFAIL.
    pub forward_loops: Counter,
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
        let metrics = DnsMetrics {
            queries,
            truncated: Counter::default(),
            forwarded: Counter::default(),
            upstream_failures: Counter::default(),
            rrl_dropped: Counter::default(),
            rrl_slipped: Counter::default(),
            tcp_refused: Family::default(),
            tcp_timeouts: Counter::default(),
            tcp_pressure_closed: Counter::default(),
            forwards_shed: Family::default(),
            forwards_to_tcp: Family::default(),
            forward_loops: Counter::default(),
            by_kind,
        };
        // Every series of each limit family exists from the start, at 0.
        for over in [Over::Total, Over::Client, Over::Domain] {
            let labels = LimitLabels {
                limit: over.label(),
            };
            if over != Over::Domain {
                let _ = metrics.tcp_refused.get_or_create(&labels).get();
            }
            let _ = metrics.forwards_shed.get_or_create(&labels).get();
            let _ = metrics.forwards_to_tcp.get_or_create(&labels).get();
        }
        metrics
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
        metrics.register(
            "dns_tcp_refused",
            "TCP connections closed at once, unanswered: every slot taken (limit=total) or the client's share (limit=client, dns.tcp_connections_per_client)",
            dns.tcp_refused.clone(),
        );
        metrics.register(
            "dns_tcp_timeouts",
            "TCP connections closed because a query did not arrive whole, or an answer was not taken, within dns.tcp_idle_timeout",
            dns.tcp_timeouts.clone(),
        );
        metrics.register(
            "dns_tcp_pressure_closed",
            "TCP connections closed early: no query, or an answer not taken, within 500 ms (or dns.tcp_idle_timeout if shorter) while half of dns.tcp_connections were open",
            dns.tcp_pressure_closed.clone(),
        );
        metrics.register(
            "dns_forwards_shed",
            "TCP queries answered SERVFAIL at once instead of relayed: every TCP relay slot the client may take taken (limit=total), the client's share (limit=client, dns.forwards_per_client) or the queried domain's (limit=domain, dns.forwards_per_domain)",
            dns.forwards_shed.clone(),
        );
        metrics.register(
            "dns_forwards_to_tcp",
            "UDP queries answered empty with TC at once instead of relayed, so that the client asks again over TCP, where its address is proven: every UDP relay slot taken (limit=total), the client's share (limit=client, dns.forwards_per_client) or the queried domain's (limit=domain, dns.forwards_per_domain)",
            dns.forwards_to_tcp.clone(),
        );
        metrics.register(
            "dns_forward_loops",
            "Queries that came from switchyard's own relay socket (a forwarding loop): SERVFAIL, not relayed again",
            dns.forward_loops.clone(),
        );
        dns
    }

    /// Counts a TCP connection or a relayed query turned away by `over`.
    /// A TCP connection closed because a step was not done in time.
    pub(super) fn expired(&self, expired: Expired) {
        match expired {
            Expired::Idle => self.tcp_timeouts.inc(),
            Expired::Pressed => self.tcp_pressure_closed.inc(),
        };
    }

    pub(super) fn refused(&self, family: &Family<LimitLabels, Counter>, over: Over) {
        family
            .get_or_create(&LimitLabels {
                limit: over.label(),
            })
            .inc();
    }

    pub(super) fn query(&self, qtype: Option<RecordType>, rcode: ResponseCode) {
        self.by_kind[qtype_index(qtype) * RCODES.len() + rcode_index(rcode)].inc();
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
