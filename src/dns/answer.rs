//! Answering one DNS message from the zone: decode, validate, look up, shuffle, fit to the
//! transport's size limit. Pure: no sockets, so every rcode path is tested directly.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};

use super::edns;
use crate::zone::{Node, Zone};

/// The largest UDP answer switchyard sends, whatever the client offers.
pub const MAX_UDP_PAYLOAD: u16 = 4096;
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
    /// Not in a served zone, and recursion is available to the client: relay the query to the
    /// upstreams. `limit` is the largest reply the client takes (UDP: 512, or its EDNS0 size;
    /// TCP: 65535).
    Forward {
        /// The name asked, for the upstreams of its zone (`dns.zone_resolvers`).
        name: LowerName,
        qtype: RecordType,
        limit: usize,
        /// `Some(DO bit)` when the client sent OPT.
        edns: Option<bool>,
    },
    /// Not worth an answer (a response, or shorter than a header).
    Drop,
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
/// relayed (`Outcome::Forward`) only then, REFUSED otherwise, and RA says so on every answer.
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
    let name = LowerName::new(query.name());
    let Some((zone, soa)) = zone.and_then(|z| Some((z, z.soa_for(&name)?.clone()))) else {
        if recursion {
            let limit = match (transport, &request.edns) {
                (Transport::Udp, Some(edns)) => edns.max_payload().max(512) as usize,
                (Transport::Udp, None) => 512,
                (Transport::Tcp, _) => u16::MAX as usize,
            };
            let edns = request.edns.as_ref().map(|e| e.flags().dnssec_ok);
            return Outcome::Forward {
                name,
                qtype,
                limit,
                edns,
            };
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
    match zone.names.get(&name) {
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.authorities.push(soa);
        }
        Some(node) => {
            let mut answers = records(node, qtype);
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

fn records(node: &Node, qtype: RecordType) -> Vec<Record> {
    match qtype {
        RecordType::A => node.a.clone(),
        RecordType::AAAA => node.aaaa.clone(),
        RecordType::SRV => node.srv.clone(),
        RecordType::NS => node.ns.clone(),
        RecordType::SOA => node.soa.iter().map(|r| (**r).clone()).collect(),
        RecordType::PTR => node.ptr.clone(),
        RecordType::ANY => {
            let all = [&node.a, &node.aaaa, &node.srv, &node.ns, &node.ptr];
            let mut answers: Vec<Record> = all.into_iter().flatten().cloned().collect();
            answers.extend(node.soa.iter().map(|r| (**r).clone()));
            answers
        }
        _ => Vec::new(),
    }
}

/// The addresses of the SRV answers' targets, named after them, for the additional section.
fn additionals(zone: &Zone, answers: &[Record]) -> Vec<Record> {
    let mut out = Vec::new();
    for answer in answers {
        let RData::SRV(srv) = &answer.data else {
            continue;
        };
        let Some(target) = zone.names.get(&LowerName::new(&srv.target)) else {
            continue;
        };
        for record in target.a.iter().chain(&target.aaaa) {
            let mut record = record.clone();
            record.name = srv.target.clone();
            out.push(record);
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

/// `reply` cut to its header with TC set, the question (`question`: the query's header and
/// question, when it has one plain question) and no records but an OPT (DO as asked) when the
/// query had one (`edns`): the client asks again over TCP (RFC 2181 §9, RFC 7766). For relayed
/// answers larger than the client takes, and for answers slipped by rate limiting.
pub fn cut_to_question(reply: &[u8], question: Option<&[u8]>, edns: Option<bool>) -> Vec<u8> {
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
        out.extend_from_slice(&edns::opt_record(ADVERTISED_PAYLOAD, 0, dnssec_ok));
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
mod tests {
    use super::*;
    use hickory_proto::rr::{Name, RData};

    fn zone(tasks: usize) -> Zone {
        crate::zone::fixtures::api_zone(tasks, Vec::new())
    }

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        crate::zone::fixtures::query(name, qtype, edns)
            .to_vec()
            .unwrap()
    }

    fn reply(outcome: Outcome) -> (Message, Reply) {
        let Outcome::Reply(r) = outcome else {
            panic!("expected a reply, got {outcome:?}")
        };
        (Message::from_vec(&r.bytes).unwrap(), r)
    }

    #[test]
    fn a_records_case_insensitively_with_the_name_as_asked() {
        let z = zone(3);
        let (m, _) = reply(answer(
            Some(&z),
            &query("API-Prod.Marathon.MESOS.", RecordType::A, None),
            Transport::Udp,
            false,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 3);
        assert!(
            m.answers
                .iter()
                .all(|r| r.name.to_ascii() == "API-Prod.Marathon.MESOS.")
        );
        assert_eq!(m.answers[0].ttl, 60);
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa() {
        let z = zone(1);
        let (m, _) = reply(answer(
            Some(&z),
            &query("nope.marathon.mesos.", RecordType::A, None),
            Transport::Udp,
            false,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(matches!(m.authorities[0].data, RData::SOA(_)));
        let (m, _) = reply(answer(
            Some(&z),
            &query("api-prod.marathon.mesos.", RecordType::TXT, None),
            Transport::Udp,
            false,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert!(matches!(m.authorities[0].data, RData::SOA(_)));
    }

    #[test]
    fn srv_with_additionals_and_truncation() {
        let z = zone(40);
        let srv = "_api-prod._tcp.marathon.mesos.";
        let (m, r) = reply(answer(
            Some(&z),
            &query(srv, RecordType::SRV, Some(4096)),
            Transport::Udp,
            false,
        ));
        assert!(
            !r.truncated && m.answers.len() == 40,
            "40 SRV fit in 4096 bytes"
        );
        assert!(m.additionals.is_empty() || m.additionals.len() == 40);
        let (m, r) = reply(answer(
            Some(&z),
            &query(srv, RecordType::SRV, None),
            Transport::Udp,
            false,
        ));
        assert!(r.bytes.len() <= 512);
        assert!(r.truncated && m.metadata.truncation);
        assert!(m.additionals.is_empty(), "additionals go first");
        assert!(!m.answers.is_empty() && m.answers.len() < 40);
        let (m, r) = reply(answer(
            Some(&z),
            &query(srv, RecordType::SRV, None),
            Transport::Tcp,
            false,
        ));
        assert!(!r.truncated);
        assert_eq!((m.answers.len(), m.additionals.len()), (40, 40));
        // A small answer that only loses additionals is not truncated.
        let z = zone(4);
        let (m, r) = reply(answer(
            Some(&z),
            &query(srv, RecordType::SRV, None),
            Transport::Udp,
            false,
        ));
        assert_eq!(m.answers.len(), 4);
        assert!(!r.truncated);
    }

    #[test]
    fn bad_input_gets_the_right_rcode() {
        let z = zone(1);
        assert!(matches!(
            answer(Some(&z), b"short", Transport::Udp, false),
            Outcome::Drop
        ));
        let mut garbage = query("a.mesos.", RecordType::A, None);
        garbage.truncate(garbage.len() - 3);
        let (m, _) = reply(answer(Some(&z), &garbage, Transport::Udp, false));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        let mut two = Message::query();
        two.add_query(Query::query(
            Name::from_ascii("a.mesos.").unwrap(),
            RecordType::A,
        ));
        two.add_query(Query::query(
            Name::from_ascii("b.mesos.").unwrap(),
            RecordType::A,
        ));
        let (m, _) = reply(answer(
            Some(&z),
            &two.to_vec().unwrap(),
            Transport::Udp,
            false,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        let mut update = Message::new(7, MessageType::Query, OpCode::Update);
        update.add_query(Query::query(
            Name::from_ascii("a.mesos.").unwrap(),
            RecordType::A,
        ));
        let (m, _) = reply(answer(
            Some(&z),
            &update.to_vec().unwrap(),
            Transport::Udp,
            false,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        let mut chaos = Message::query();
        let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        chaos.add_query(q);
        let (m, _) = reply(answer(
            Some(&z),
            &chaos.to_vec().unwrap(),
            Transport::Udp,
            true,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        let mut response = Message::query();
        response.metadata.message_type = MessageType::Response;
        assert!(matches!(
            answer(Some(&z), &response.to_vec().unwrap(), Transport::Udp, false),
            Outcome::Drop
        ));
    }

    #[test]
    fn other_zones_are_forwarded_or_refused() {
        let z = zone(1);
        let q = query("example.com.", RecordType::A, None);
        assert!(matches!(
            answer(Some(&z), &q, Transport::Udp, true),
            Outcome::Forward { .. }
        ));
        let (m, _) = reply(answer(Some(&z), &q, Transport::Udp, false));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // The served zone is never forwarded, even when the name is missing.
        let q = query("missing.mesos.", RecordType::A, None);
        let (m, _) = reply(answer(Some(&z), &q, Transport::Udp, true));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn served_zones_are_servfail_until_live_and_never_forwarded() {
        let config = crate::zone::ZoneConfig {
            domain: "mesos".into(),
            ttl: 60,
            ip_sources: vec![crate::zone::IpSource::Auto],
            label_rule: crate::cluster::names::LabelRule::Rfc1123,
            ns_addr: Some("127.0.0.1".parse().unwrap()),
            vip_range: Some(crate::routing::vip::VipRange::parse("11.0.0.0/8").unwrap()),
            served: Default::default(),
            ptr: false,
            healthy: Default::default(),
        };
        let pending = Zone::pending(&config);
        for (name, qtype) in [
            ("x.marathon.mesos.", RecordType::A),
            ("MESOS.", RecordType::SOA),
            ("ns1.mesos.", RecordType::A),
            ("_x._tcp.marathon.mesos.", RecordType::SRV),
            ("foo.l4lb.thisdcos.directory.", RecordType::A),
            ("foo.marathon.L4LB.thisdcos.directory.", RecordType::AAAA),
        ] {
            for transport in [Transport::Udp, Transport::Tcp] {
                let (m, r) = reply(answer(
                    Some(&pending),
                    &query(name, qtype, Some(1232)),
                    transport,
                    true,
                ));
                assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{name}");
                assert_eq!(r.rcode, ResponseCode::ServFail);
                assert!(!m.metadata.authoritative && m.answers.is_empty());
                assert!(m.edns.is_some());
            }
        }
        for name in ["example.com.", "mesos.example.", "thisdcos.directory."] {
            assert!(
                matches!(
                    answer(
                        Some(&pending),
                        &query(name, RecordType::A, None),
                        Transport::Udp,
                        true
                    ),
                    Outcome::Forward { .. }
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn zone_transfers_are_refused() {
        let z = zone(2);
        for qtype in [RecordType::AXFR, RecordType::IXFR] {
            for name in ["mesos.", "api-prod.marathon.mesos.", "example.com."] {
                for transport in [Transport::Udp, Transport::Tcp] {
                    let (m, _) =
                        reply(answer(Some(&z), &query(name, qtype, None), transport, true));
                    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
                    assert!(m.answers.is_empty() && m.authorities.is_empty());
                }
            }
        }
    }

    #[test]
    fn edns_is_answered_with_opt() {
        let z = zone(1);
        let (m, _) = reply(answer(
            Some(&z),
            &query("api-prod.marathon.mesos.", RecordType::A, Some(1400)),
            Transport::Udp,
            false,
        ));
        assert_eq!(m.edns.unwrap().max_payload(), ADVERTISED_PAYLOAD);
    }

    #[test]
    fn the_do_bit_is_echoed() {
        let z = zone(1);
        for (name, qtype) in [
            ("api-prod.marathon.mesos.", RecordType::A),
            ("nope.marathon.mesos.", RecordType::A),
            ("mesos.", RecordType::AXFR),
        ] {
            for dnssec_ok in [false, true] {
                let mut q = crate::zone::fixtures::query(name, qtype, Some(1232));
                q.edns.as_mut().unwrap().set_dnssec_ok(dnssec_ok);
                let (m, _) = reply(answer(
                    Some(&z),
                    &q.to_vec().unwrap(),
                    Transport::Udp,
                    false,
                ));
                assert_eq!(m.edns.unwrap().flags().dnssec_ok, dnssec_ok, "{name}");
            }
        }
    }

    #[test]
    fn a_formerr_about_edns_carries_an_opt() {
        let z = zone(1);
        let mut q = query("api-prod.marathon.mesos.", RecordType::A, None);
        q[11] = 2;
        q.extend_from_slice(&edns::opt_record(1232, 0, true));
        q.extend_from_slice(&edns::opt_record(4096, 0, false));
        let (m, r) = reply(answer(Some(&z), &q, Transport::Udp, true));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(r.qtype, Some(RecordType::A));
        assert_eq!(m.queries[0].name().to_ascii(), "api-prod.marathon.mesos.");
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        let edns = m.edns.unwrap();
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), ADVERTISED_PAYLOAD);
        // A malformed option (longer than the record), and an OPT among the answers.
        let mut bad = query("api-prod.marathon.mesos.", RecordType::A, None);
        bad[11] = 1;
        bad.extend_from_slice(&edns::opt_record(1232, 0, false)[..9]);
        bad.extend_from_slice(&[0, 4, 0, 10, 0, 10]);
        let mut answered = query("api-prod.marathon.mesos.", RecordType::A, None);
        answered[7] = 1;
        answered.extend_from_slice(&edns::opt_record(1232, 0, false));
        for q in [bad, answered] {
            let (m, _) = reply(answer(Some(&z), &q, Transport::Tcp, false));
            assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
            assert!(m.edns.is_some() && !m.metadata.recursion_available);
        }
        // A message that does not decode, without OPT: FORMERR without one.
        let mut cut = query("api-prod.marathon.mesos.", RecordType::A, None);
        cut.truncate(cut.len() - 6);
        let (m, _) = reply(answer(Some(&z), &cut, Transport::Udp, false));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.edns.is_none() && m.queries.is_empty());
    }

    #[test]
    fn ra_says_whether_recursion_is_available_to_the_client() {
        let z = zone(1);
        for recursion in [false, true] {
            for (name, qtype) in [
                ("api-prod.marathon.mesos.", RecordType::A),
                ("_api-prod._tcp.marathon.mesos.", RecordType::SRV),
                ("nope.marathon.mesos.", RecordType::A),
                ("mesos.", RecordType::AXFR),
            ] {
                let (m, _) = reply(answer(
                    Some(&z),
                    &query(name, qtype, None),
                    Transport::Udp,
                    recursion,
                ));
                assert_eq!(m.metadata.recursion_available, recursion, "{name}");
            }
        }
        // Without recursion, other names are REFUSED (RA clear); with it, relayed.
        let q = query("example.com.", RecordType::A, None);
        let (m, _) = reply(answer(Some(&z), &q, Transport::Udp, false));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.recursion_available);
        let relayed = servfail(&q).unwrap();
        assert!(
            Message::from_vec(&relayed)
                .unwrap()
                .metadata
                .recursion_available
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let z = zone(2);
        let seed = query("api-prod.marathon.mesos.", RecordType::SRV, Some(1232));
        for i in 0..2000 {
            let mut p = seed.clone();
            let pos = fastrand::usize(..p.len());
            p[pos] = fastrand::u8(..);
            if i % 3 == 0 {
                p.truncate(fastrand::usize(..p.len()));
            }
            let _ = answer(Some(&z), &p, Transport::Udp, i % 2 == 0);
        }
    }

    proptest::proptest! {
        /// Whatever a UDP query was answered with (any bytes after a header), the answer cut to
        /// its question — a rate-limited slip, or a relayed answer too big for the client —
        /// decodes, keeps the ID, rcode and question, has TC set and no records but the OPT the
        /// query asked for.
        #[test]
        fn a_cut_answer_is_a_valid_truncated_message(
            name in proptest::sample::select(vec!["api-prod.marathon.mesos.", "nope.marathon.mesos.", "example.com."]),
            qtype in proptest::sample::select(vec![RecordType::A, RecordType::SRV, RecordType::TXT]),
            edns in proptest::option::of(512u16..4096),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            garble in proptest::prelude::any::<bool>(),
        ) {
            let z = zone(3);
            let mut q = query(name, qtype, edns);
            if garble {
                q.truncate(12);
                q.extend_from_slice(&tail);
            }
            let Outcome::Reply(reply) = answer(Some(&z), &q, Transport::Udp, false) else {
                return Ok(());
            };
            let seen = edns::scan(&q);
            let question = plain_question(&q).map(|end| &q[..end]);
            let cut = cut_to_question(&reply.bytes, question, seen.opt.then_some(seen.dnssec_ok));
            let m = Message::from_vec(&cut).expect("a cut answer decodes");
            proptest::prop_assert!(m.metadata.truncation);
            proptest::prop_assert_eq!(m.metadata.id, u16::from_be_bytes([q[0], q[1]]));
            proptest::prop_assert_eq!(m.metadata.response_code, reply.rcode);
            proptest::prop_assert!(m.answers.is_empty() && m.authorities.is_empty());
            proptest::prop_assert_eq!(m.queries.len(), usize::from(question.is_some()));
            proptest::prop_assert_eq!(m.edns.is_some(), seen.opt);
        }
    }
}
