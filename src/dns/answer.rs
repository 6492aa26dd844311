//! Answering one DNS message from the zone: decode, validate, look up, shuffle, fit to the
//! transport's size limit. Pure: no sockets, so every rcode path is tested directly.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};

use super::edns;
use crate::zone::Zone;

/// The largest UDP answer switchyard sends, whatever the client offers: 1232, as BIND, Knot,
/// Unbound and PowerDNS send by default since DNS Flag Day 2020. It fits an IPv6 minimum MTU
/// without fragments, and bounds what one spoofed query can draw onto its victim (a 47-byte
/// query for a 300-task app drew 2.8 KB at 4096). A bigger answer goes out with TC, and the
/// client asks again over TCP, where a source cannot be spoofed.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The receive buffer of one UDP query: larger than any answer, so that a query padded or
/// carrying options past [`MAX_UDP_PAYLOAD`] is read whole (and judged) rather than cut.
pub const UDP_QUERY_BUFFER: usize = 4096;
/// The payload size switchyard advertises in its own OPT record.
pub const ADVERTISED_PAYLOAD: u16 = 1232;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Reply),
    /// Not in a served zone, recursion is available to the client and it asked for it (RD):
    /// relay the query to the upstreams.
    Forward(Relayed),
    /// Not worth an answer (a response, or shorter than a header).
    Drop,
}

/// What a relayed query's reply must fit, and where it goes (see [`Outcome::Forward`]).
#[derive(Clone, Debug)]
pub struct Relayed {
    /// The name asked, for the upstreams of its zone (`dns.zone_resolvers`).
    pub name: LowerName,
    pub qtype: RecordType,
    /// The largest reply the client takes (UDP: 512, or its EDNS0 size up to
    /// [`MAX_UDP_PAYLOAD`]; TCP: 65535).
    pub limit: usize,
    /// `Some(DO bit)` when the client sent OPT.
    pub edns: Option<bool>,
}

#[derive(Debug)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub rcode: ResponseCode,
    pub qtype: Option<RecordType>,
    pub truncated: bool,
}

/// Answers `packet` from `zone`. `recursion` says whether recursion is available to this
/// client (upstreams configured, and the client in `dns.allow_recursion`): other names are
/// relayed (`Outcome::Forward`) only then, and only when the query asks for it (RD), REFUSED
/// otherwise, and RA says so on every answer.
/// Names in the zones `zone` serves are never forwarded: before the first zone is built, the
/// server passes [`Zone::pending`], whose names are answered SERVFAIL.
pub fn answer(
    zone: Option<&Zone>,
    packet: &[u8],
    transport: Transport,
    recursion: bool,
) -> Outcome {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    // EDNS first, from the wire: a message with a malformed OPT may still decode, and one that
    // does not decode still gets an OPT back when it had one (RFC 6891 §7).
    let seen = edns::scan(packet);
    if seen.malformed {
        return formerr(packet, seen, recursion);
    }
    let request = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return formerr(packet, seen, recursion),
    };
    let error = |rcode| error(&request, rcode, recursion);
    if request.metadata.op_code != OpCode::Query {
        return error(ResponseCode::NotImp);
    }
    if request.queries.len() != 1 {
        return error(ResponseCode::FormErr);
    }
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return error(ResponseCode::BADVERS);
    }
    let query = &request.queries[0];
    let qtype = query.query_type();
    // Zone transfers are not offered (the zone follows the cluster, not a primary): REFUSED,
    // over either transport and for any name, not an answer that looks like a transfer.
    if query.query_class() != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return error(ResponseCode::Refused);
    }
    // Meta-types live in one message and are never looked up (RFC 6895 §3.1): a query for
    // OPT, TSIG or TKEY is malformed, MAILA and MAILB are obsolete (RFC 883) and not
    // implemented, as BIND answers them, whatever the name (never relayed either).
    match u16::from(qtype) {
        41 | 249 | 250 => return error(ResponseCode::FormErr),
        253 | 254 => return error(ResponseCode::NotImp),
        _ => {}
    }
    let name = LowerName::new(query.name());
    let Some((zone, soa)) = zone.and_then(|z| Some((z, z.soa_for(&name)?.clone()))) else {
        // Relayed only when the client asks for recursion (RD): a non-recursive query for a
        // name outside the served zones gets REFUSED, as from an authoritative server.
        if recursion && request.metadata.recursion_desired {
            // A relayed answer fits what any other UDP answer fits (512, or the client's
            // EDNS0 size up to MAX_UDP_PAYLOAD), not whatever size the client claims.
            let limit = match transport {
                Transport::Udp => udp_limit(&request),
                Transport::Tcp => u16::MAX as usize,
            };
            let edns = request.edns.as_ref().map(|e| e.flags().dnssec_ok);
            return Outcome::Forward(Relayed {
                name,
                qtype,
                limit,
                edns,
            });
        }
        return error(ResponseCode::Refused);
    };
    if !zone.live {
        // A served zone whose contents are not known yet: never forwarded, never denied.
        return error(ResponseCode::ServFail);
    }
    let limit = match transport {
        Transport::Udp => udp_limit(&request),
        Transport::Tcp => u16::MAX as usize,
    };
    let mut response = into_response(request, recursion);
    let asked = response.queries[0].name().clone();
    response.metadata.authoritative = true;
    match zone.names.find_name(&name) {
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.authorities.push(soa);
        }
        Some(node) => {
            let mut answers = zone.names.records(node, qtype);
            if qtype == RecordType::ANY && transport == Transport::Udp {
                any_over_udp(&mut answers);
            }
            if answers.is_empty() {
                response.authorities.push(soa);
            }
            fastrand::shuffle(&mut answers);
            for record in &mut answers {
                // Echo the name as asked: clients using 0x20 case randomisation check it.
                record.name = asked.clone();
            }
            response.additionals = additionals(zone, &answers);
            response.answers = answers;
        }
    }
    Outcome::Reply(encode(response, limit, Some(qtype)))
}

/// An ANY query over UDP is answered with one RRset, the first the name has (A, AAAA, SRV,
/// NS, PTR, then SOA), as RFC 8482 §4.1 allows; over TCP, with all of them. A spoofed ANY then
/// draws no more than the name's A query would: every RRset of a name (a big app's A, AAAA
/// and SRV records, with the SRV targets' addresses as additionals) would make it a tool to
/// flood someone else with.
pub(crate) fn any_over_udp(answers: &mut Vec<Record>) {
    if let Some(first) = answers.first().map(Record::record_type) {
        answers.retain(|r| r.record_type() == first);
    }
}

/// FORMERR for a message that does not decode or whose EDNS is malformed, written from the
/// wire: the header's ID, opcode, RD and CD as asked; the question when it is one plain
/// question; an OPT record (with the DO bit as asked) when the message had any.
fn formerr(packet: &[u8], seen: edns::Seen, recursion: bool) -> Outcome {
    let mut out = Vec::with_capacity(packet.len().min(512) + 11);
    out.extend_from_slice(&packet[..2]);
    out.push(0x80 | (packet[2] & 0x79));
    out.push(if recursion { 0x80 } else { 0 } | (packet[3] & 0x10) | 1);
    let question = plain_question(packet);
    let counts = [u16::from(question.is_some()), 0, 0, u16::from(seen.opt)];
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
    let mut qtype = None;
    if let Some(end) = question {
        out.extend_from_slice(&packet[12..end]);
        qtype = Some(RecordType::from(u16::from_be_bytes([
            packet[end - 4],
            packet[end - 3],
        ])));
    }
    if seen.opt {
        out.extend_from_slice(&edns::opt_record(ADVERTISED_PAYLOAD, 0, seen.dnssec_ok));
    }
    Outcome::Reply(Reply {
        bytes: out,
        rcode: ResponseCode::FormErr,
        qtype,
        truncated: false,
    })
}

/// Where the question ends when `packet` asks one question with an uncompressed name.
pub fn plain_question(packet: &[u8]) -> Option<usize> {
    if packet.get(4..6)? != [0, 1] {
        return None;
    }
    let mut at = 12;
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        match len {
            0 => break,
            1..=63 => at += len,
            _ => return None,
        }
    }
    (at - 12 <= 255 && packet.len() >= at + 4).then_some(at + 4)
}

/// The addresses of the SRV answers' targets, named after them, for the additional section.
fn additionals(zone: &Zone, answers: &[Record]) -> Vec<Record> {
    let mut out = Vec::new();
    for answer in answers {
        let RData::SRV(srv) = &answer.data else {
            continue;
        };
        let Some(target) = zone.names.find_name(&srv.target) else {
            continue;
        };
        for rtype in [RecordType::A, RecordType::AAAA] {
            for mut record in zone.names.records(target, rtype) {
                record.name = srv.target.clone();
                out.push(record);
            }
        }
    }
    out
}

/// Turns a request into the skeleton of its response (question kept, sections empty).
fn response_to(request: &Message, recursion: bool) -> Message {
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.recursion_available = recursion;
    response.queries = request.queries.clone();
    with_edns(response, request)
}

fn into_response(mut request: Message, recursion: bool) -> Message {
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.recursion_available = recursion;
    response.queries = std::mem::take(&mut request.queries);
    with_edns(response, &request)
}

/// An OPT record in the response when the request had one, with the DO bit copied (RFC 3225).
fn with_edns(mut response: Message, request: &Message) -> Message {
    if let Some(asked) = &request.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(ADVERTISED_PAYLOAD);
        edns.set_version(0);
        edns.set_dnssec_ok(asked.flags().dnssec_ok);
        response.set_edns(edns);
    }
    response
}

fn error(request: &Message, rcode: ResponseCode, recursion: bool) -> Outcome {
    let mut response = response_to(request, recursion);
    response.metadata.response_code = rcode;
    let qtype = request.queries.first().map(Query::query_type);
    let bytes = response.to_vec().unwrap_or_default();
    Outcome::Reply(Reply {
        bytes,
        rcode,
        qtype,
        truncated: false,
    })
}

/// SERVFAIL for a relayed query that could not be answered (every upstream failed): the
/// client was allowed recursion, so RA is set.
pub fn servfail(packet: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let mut response = response_to(&request, true);
    response.metadata.response_code = ResponseCode::ServFail;
    response.to_vec().ok()
}

/// An empty answer to a relayed query with TC set, for a UDP query past the UDP relay slots
/// or its client's share of them: the client asks again over TCP, whose handshake proves the
/// address its share is counted against. Forged UDP from addresses allowed to recurse (each
/// query holding a slot until an upstream that never answers times out) then takes only UDP
/// slots, and the client it impersonates is still relayed over TCP. RA is set: the client was
/// allowed recursion.
pub fn truncated(packet: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let mut response = response_to(&request, true);
    response.metadata.truncation = true;
    response.to_vec().ok()
}

/// `reply` cut to its header with TC set, the question (`question`: the query's header and
/// question, when it has one plain question) and no records but an OPT (DO as asked) when the
/// query had one (`edns`): the client asks again over TCP (RFC 2181 §9, RFC 7766). For relayed
/// answers larger than the client takes, and for answers slipped by rate limiting. The OPT
/// keeps the reply's extended rcode (the upper bits of a 12-bit rcode such as BADVERS live
/// there, RFC 6891 §6.1.3: without them the header's lower bits alone would say NOERROR).
pub fn cut_to_question(reply: &[u8], question: Option<&[u8]>, edns: Option<bool>) -> Vec<u8> {
    let rcode_high = edns::scan(reply).rcode_high;
    let mut out = Vec::with_capacity(question.map_or(12, <[u8]>::len) + 11);
    out.extend_from_slice(&reply[..4]);
    out[2] |= 0x02;
    let questions = u16::from(question.is_some());
    for count in [questions, 0, 0, u16::from(edns.is_some())] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    if let Some(q) = question {
        out.extend_from_slice(&q[12..]);
    }
    if let Some(dnssec_ok) = edns {
        out.extend_from_slice(&edns::opt_record(ADVERTISED_PAYLOAD, rcode_high, dnssec_ok));
    }
    out
}

/// The size a UDP answer to `request` may have: 512, or the client's EDNS0 size (bounded).
pub fn udp_limit(request: &Message) -> usize {
    match &request.edns {
        Some(edns) => edns.max_payload().clamp(512, MAX_UDP_PAYLOAD) as usize,
        None => 512,
    }
}

/// Encodes `response`, fitting it to `limit` bytes: additionals go first, then answers from
/// the end, and TC is set when answers had to go (RFC 2181 §9: a missing additional is not
/// truncation).
fn encode(mut response: Message, limit: usize, qtype: Option<RecordType>) -> Reply {
    let rcode = response.metadata.response_code;
    let mut bytes = response.to_vec().unwrap_or_default();
    if bytes.len() > limit && !response.additionals.is_empty() {
        response.additionals.clear();
        bytes = response.to_vec().unwrap_or_default();
    }
    let mut truncated = false;
    while bytes.len() > limit && !response.answers.is_empty() {
        // Estimate how many answers to drop from the average size, then verify.
        let over = bytes.len() - limit;
        let each = (bytes.len() / (response.answers.len() + 1)).max(1);
        let drop = over.div_ceil(each).clamp(1, response.answers.len());
        response.answers.truncate(response.answers.len() - drop);
        response.metadata.truncation = true;
        truncated = true;
        bytes = response.to_vec().unwrap_or_default();
    }
    Reply {
        bytes,
        rcode,
        qtype,
        truncated,
    }
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "zone_diff_tests.rs"]
mod zone_diff_tests;
