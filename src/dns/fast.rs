//! The UDP fast path for the query nearly every container sends: one question for the A or
//! AAAA records of a name the zone holds, with or without EDNS0. The response is written
//! straight into a reused buffer: the header, the question copied as asked, the records in a
//! random order (each named by a pointer to the question), the OPT record. It makes what
//! [`answer::answer`] makes for these queries, without decoding the whole message or cloning
//! records; anything else (other types, names not held, answers that must be truncated,
//! unusual or malformed messages) returns `None` for that general path to answer.
//!
//! [`answer::answer`]: super::answer::answer

use hickory_proto::rr::RecordType;

use super::answer::{ADVERTISED_PAYLOAD, MAX_UDP_PAYLOAD};
use super::edns::{self, TYPE_OPT};
use crate::zone::Zone;
use crate::zone::compact::Kind;

const HEADER: usize = 12;
const CLASS_IN: u16 = 1;
/// Records one answer may shuffle on the stack; bigger sets take the general path.
const MAX_RECORDS: usize = 64;

/// Writes the answer to `query` into `out` and returns its type, or `None` when the general
/// path must answer. `recursion`: whether recursion is available to this client (RA).
pub fn answer(zone: &Zone, query: &[u8], out: &mut Vec<u8>, recursion: bool) -> Option<RecordType> {
    let question = Question::parse(query)?;
    let qtype = match question.qtype {
        1 => RecordType::A,
        28 => RecordType::AAAA,
        _ => return None,
    };
    if question.qclass != CLASS_IN {
        return None;
    }
    // The name as the zone keys it: lowercase wire bytes.
    let asked = &query[HEADER..question.name_end];
    let mut lower = [0u8; 256];
    let lower = &mut lower[..asked.len()];
    for (to, b) in lower.iter_mut().zip(asked) {
        *to = b.to_ascii_lowercase();
    }
    let node = zone.names.find(lower)?;
    let kind = match qtype {
        RecordType::A => Kind::A,
        _ => Kind::Aaaa,
    };
    // Pre-encoded records, each owned by a pointer to the question, all the same size.
    let set = zone.names.set(node, kind)?;
    let size = question.end + set.bytes.len() + if question.edns { 11 } else { 0 };
    if set.count == 0 || set.count > MAX_RECORDS || size > question.limit {
        return None;
    }
    let each = set.bytes.len() / set.count;
    out.clear();
    out.extend_from_slice(&query[..2]);
    // QR, opcode QUERY, AA, RD as asked; RA when recursion is available to the client, AD
    // clear, CD as asked, NOERROR.
    out.push(0x80 | 0x04 | (query[2] & 0x01));
    out.push(if recursion { 0x80 } else { 0 } | (query[3] & 0x10));
    let counts = [1, set.count as u16, 0, u16::from(question.edns)];
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(&query[HEADER..question.end]);
    let mut order = [0u8; MAX_RECORDS];
    let order = &mut order[..set.count];
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i as u8;
    }
    fastrand::shuffle(order);
    for &i in order.iter() {
        // Owned by `c0 0c`, the question's name as asked (clients using 0x20 case check it).
        let at = i as usize * each;
        out.extend_from_slice(&set.bytes[at..at + each]);
    }
    if question.edns {
        // OPT: root owner, our payload size, extended rcode 0, version 0, DO as asked.
        out.extend_from_slice(&edns::opt_record(ADVERTISED_PAYLOAD, 0, question.dnssec_ok));
    }
    debug_assert_eq!(out.len(), size);
    Some(qtype)
}

/// What the fast path needs of a query, when the query is of the plain shape it serves.
struct Question {
    /// Where the question's name ends, and the question.
    name_end: usize,
    end: usize,
    qtype: u16,
    qclass: u16,
    edns: bool,
    /// The OPT record's DO bit (RFC 3225), echoed.
    dnssec_ok: bool,
    /// The largest answer the client takes.
    limit: usize,
}

impl Question {
    fn parse(query: &[u8]) -> Option<Question> {
        let header = query.get(..HEADER)?;
        let word = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
        // A standard query (QR 0, opcode 0), not truncated, no rcode; exactly one question,
        // no answers or authorities, at most the OPT record.
        if header[2] & 0xfa != 0 || header[3] & 0x0f != 0 {
            return None;
        }
        let additionals = word(10);
        if word(4) != 1 || word(6) != 0 || word(8) != 0 || additionals > 1 {
            return None;
        }
        // The name's labels, uncompressed.
        let mut at = HEADER;
        loop {
            let len = *query.get(at)? as usize;
            at += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            at += len;
        }
        if at - HEADER > 255 {
            return None;
        }
        let name_end = at;
        let fixed = query.get(at..at + 4)?;
        let (qtype, qclass) = (
            u16::from_be_bytes([fixed[0], fixed[1]]),
            u16::from_be_bytes([fixed[2], fixed[3]]),
        );
        let end = at + 4;
        let mut question = Question {
            name_end,
            end,
            qtype,
            qclass,
            edns: false,
            dnssec_ok: false,
            limit: 512,
        };
        if additionals == 0 {
            return (query.len() == end).then_some(question);
        }
        // OPT: root owner, type 41, the payload size as class, then extended rcode, version,
        // flags; the version must be 0 (the general path answers BADVERS) and the record must
        // end the message, its options framed right and none that the decoder parses (the
        // general path decides those: see `edns`).
        let opt = query.get(end..end + 11)?;
        let rdlen = u16::from_be_bytes([opt[9], opt[10]]) as usize;
        if opt[0] != 0
            || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT
            || opt[5] != 0
            || opt[6] != 0
            || query.len() != end + 11 + rdlen
            || edns::options(&query[end + 11..]) != edns::Options::Opaque
        {
            return None;
        }
        question.edns = true;
        question.dnssec_ok = opt[7] & 0x80 != 0;
        question.limit = u16::from_be_bytes([opt[3], opt[4]]).clamp(512, MAX_UDP_PAYLOAD) as usize;
        Some(question)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{app, task};
    use crate::dns::answer::{self as general, Outcome, Transport};
    use hickory_proto::op::{Message, ResponseCode};
    use proptest::prelude::*;

    /// `/prod/api` with `tasks` tasks (A records), `/v6/web` with a container IPv6 address.
    fn zone(tasks: usize) -> Zone {
        let mut v6 = app("/v6/web", 10001, &[], vec![task("web.1", 31000)]);
        v6.networking = crate::cluster::Networking::Container;
        for t in v6.tasks.values_mut() {
            t.ip_addresses = vec!["fd00::1".parse().unwrap()].into();
        }
        crate::zone::fixtures::api_zone(tasks, vec![v6])
    }

    fn query(name: &str, qtype: RecordType, edns: Option<u16>, id: u16, cd: bool) -> Vec<u8> {
        let mut m = crate::zone::fixtures::query(name, qtype, edns);
        m.metadata.id = id;
        m.metadata.recursion_desired = id.is_multiple_of(2);
        m.metadata.checking_disabled = cd;
        m.to_vec().unwrap()
    }

    fn general(zone: &Zone, query: &[u8]) -> Message {
        general_with(zone, query, false)
    }

    fn general_with(zone: &Zone, query: &[u8], recursion: bool) -> Message {
        match general::answer(Some(zone), query, Transport::Udp, recursion) {
            Outcome::Reply(r) => Message::from_vec(&r.bytes).unwrap(),
            other => panic!("general path: {other:?}"),
        }
    }

    /// The two answers agree in everything but the (random) order of their records.
    fn assert_same(fast: &[u8], general: Message) {
        let mut fast = Message::from_vec(fast).expect("the fast answer decodes");
        let mut general = general;
        for m in [&mut fast, &mut general] {
            m.answers.sort_by_key(|r| r.data.to_string());
        }
        assert_eq!(fast.metadata, general.metadata);
        assert_eq!(fast.queries, general.queries);
        assert_eq!(fast.answers, general.answers);
        assert_eq!(fast.authorities, general.authorities);
        assert_eq!(fast.additionals, general.additionals);
        assert_eq!(
            fast.edns
                .as_ref()
                .map(|e| (e.max_payload(), e.version(), e.flags().dnssec_ok)),
            general
                .edns
                .as_ref()
                .map(|e| (e.max_payload(), e.version(), e.flags().dnssec_ok))
        );
    }

    #[test]
    fn a_and_aaaa_answers_match_the_general_path() {
        let z = zone(5);
        let mut out = Vec::new();
        for (name, qtype) in [
            ("api-prod.marathon.mesos.", RecordType::A),
            ("API-Prod.Marathon.MESOS.", RecordType::A),
            ("web-v6.marathon.mesos.", RecordType::AAAA),
        ] {
            for edns in [None, Some(512), Some(1232), Some(65535)] {
                let q = query(name, qtype, edns, 7, true);
                assert_eq!(
                    answer(&z, &q, &mut out, false),
                    Some(qtype),
                    "{name} {edns:?}"
                );
                assert_same(&out, general(&z, &q));
            }
        }
    }

    #[test]
    fn records_come_in_every_order() {
        let z = zone(3);
        let q = query("api-prod.marathon.mesos.", RecordType::A, None, 1, false);
        let mut firsts = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for _ in 0..200 {
            answer(&z, &q, &mut out, false).unwrap();
            let m = Message::from_vec(&out).unwrap();
            firsts.insert(m.answers[0].data.to_string());
        }
        assert_eq!(firsts.len(), 3, "each task comes first sometimes");
    }

    #[test]
    fn everything_else_is_left_to_the_general_path() {
        let z = zone(40);
        let mut out = Vec::new();
        let cases = [
            // not held: NXDOMAIN with the SOA
            query("nope.marathon.mesos.", RecordType::A, None, 1, false),
            // held, but no records of the type: NODATA
            query("api-prod.marathon.mesos.", RecordType::AAAA, None, 1, false),
            // other types
            query(
                "_api-prod._tcp.marathon.mesos.",
                RecordType::SRV,
                None,
                1,
                false,
            ),
            query("mesos.", RecordType::SOA, None, 1, false),
            // 40 A records do not fit in 512 bytes: truncated by the general path
            query("api-prod.marathon.mesos.", RecordType::A, None, 1, false),
        ];
        for q in &cases {
            assert_eq!(answer(&z, q, &mut out, false), None);
        }
        let small = zone(2);
        let plain = query(
            "api-prod.marathon.mesos.",
            RecordType::A,
            Some(1232),
            1,
            false,
        );
        assert!(answer(&small, &plain, &mut out, false).is_some());
        // EDNS version 1 (BADVERS), a response, trailing bytes, a compressed name, two
        // questions' worth of count, a short packet.
        let mut v1 = plain.clone();
        let opt = v1.len() - 11;
        v1[opt + 6] = 1;
        let mut response = plain.clone();
        response[2] |= 0x80;
        let mut trailing = plain.clone();
        trailing.push(0);
        let mut compressed = query("api-prod.marathon.mesos.", RecordType::A, None, 1, false);
        compressed.truncate(12);
        compressed.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        let mut two = plain.clone();
        two[5] = 2;
        for q in [
            &v1,
            &response,
            &trailing,
            &compressed,
            &two,
            &plain[..11].to_vec(),
        ] {
            assert_eq!(answer(&small, q, &mut out, false), None, "{q:?}");
        }
    }

    proptest! {
        /// Whatever the fast path answers, the general path answers the same; random bytes
        /// never make it panic.
        #[test]
        fn fast_answers_are_the_general_answers(
            which in 0usize..3,
            upper in proptest::collection::vec(any::<bool>(), 0..40),
            edns in proptest::option::of(0u16..5000),
            id in any::<u16>(),
            cd in any::<bool>(),
            tasks in 1usize..12,
        ) {
            let z = zone(tasks);
            let (name, qtype) = [
                ("api-prod.marathon.mesos.", RecordType::A),
                ("web-v6.marathon.mesos.", RecordType::AAAA),
                ("api-prod.marathon.mesos.", RecordType::AAAA),
            ][which];
            let name: String = name
                .chars()
                .zip(upper.iter().chain(std::iter::repeat(&false)))
                .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
                .collect();
            let q = query(&name, qtype, edns, id, cd);
            let mut out = Vec::new();
            let fast = answer(&z, &q, &mut out, false);
            // Up to 11 records fit in 512 bytes; the third case is NODATA.
            prop_assert_eq!(fast.is_some(), which != 2);
            if fast.is_some() {
                assert_same(&out, general(&z, &q));
            }
        }

        /// OPT records of every shape (options framed or not, parsed by the decoder or not,
        /// two of them, one among the answers or authorities, not owned by the root, another
        /// version, the DO bit) under every header flag and with or without recursion: the two
        /// paths give the same rcode, flags and OPT, and a malformed OPT is a FORMERR with an
        /// OPT whatever path it reaches.
        #[test]
        fn every_opt_gets_the_same_rcode_and_flags_from_both_paths(
            options in proptest::collection::vec(
                (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..12), -2i8..3),
                0..3,
            ),
            code_of_interest in proptest::option::of(prop_oneof![Just(3u16), Just(5), Just(8), Just(10)]),
            dnssec_ok in any::<bool>(),
            version in prop_oneof![Just(0u8), Just(0), Just(1)],
            placement in 0usize..5,
            owner_root in prop_oneof![Just(true), Just(true), Just(false)],
            flags2 in any::<u8>(),
            flags3 in any::<u8>(),
            recursion in any::<bool>(),
        ) {
            let z = zone(2);
            let mut q = query("api-prod.marathon.mesos.", RecordType::A, None, 9, false);
            // Header flags as sent, opcode QUERY and QR clear, rcode 0 (a query).
            q[2] = flags2 & 0x07;
            q[3] = flags3 & 0x70;
            let mut data = Vec::new();
            for (code, bytes, skew) in &options {
                let code = code_of_interest.unwrap_or(*code);
                data.extend_from_slice(&code.to_be_bytes());
                let len = (bytes.len() as i32 + i32::from(*skew)).max(0) as u16;
                data.extend_from_slice(&len.to_be_bytes());
                data.extend_from_slice(bytes);
            }
            let mut opt = Vec::new();
            if !owner_root {
                opt.extend_from_slice(&[1, b'x']);
            }
            opt.extend_from_slice(&edns::opt_record(1232, 0, dnssec_ok)[..9]);
            let at = opt.len() - 3;
            opt[at] = version;
            opt.extend_from_slice(&(data.len() as u16).to_be_bytes());
            opt.extend_from_slice(&data);
            // 0: one OPT; 1: two; 2: in the answers; 3: in the authorities; 4: none.
            match placement {
                0 | 2 | 3 => q.extend_from_slice(&opt),
                1 => {
                    q.extend_from_slice(&opt);
                    q.extend_from_slice(&opt);
                }
                _ => {}
            }
            let count = match placement { 1 => 2, 4 => 0, _ => 1 };
            let section = match placement { 2 => 7, 3 => 9, _ => 11 };
            q[section] = count;
            let mut out = Vec::new();
            let fast = answer(&z, &q, &mut out, recursion);
            let general = general_with(&z, &q, recursion);
            if fast.is_some() {
                assert_same(&out, general.clone());
            }
            let seen = edns::scan(&q);
            if seen.malformed {
                prop_assert!(fast.is_none());
                prop_assert_eq!(general.metadata.response_code, ResponseCode::FormErr);
                prop_assert_eq!(general.edns.as_ref().map(|e| e.flags().dnssec_ok), Some(dnssec_ok));
            }
            prop_assert_eq!(general.metadata.recursion_available, recursion);
            if placement != 4 {
                prop_assert!(general.edns.is_some(), "an OPT answers an OPT: {:?}", general);
            }
        }

        #[test]
        fn random_bytes_are_refused_or_answered(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let z = zone(2);
            let mut out = Vec::new();
            if answer(&z, &bytes, &mut out, false).is_some() {
                Message::from_vec(&out).expect("what is sent decodes");
            }
        }
    }
}
