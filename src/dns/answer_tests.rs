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
        &query(srv, RecordType::SRV, Some(1232)),
        Transport::Udp,
        false,
    ));
    assert!(
        r.bytes.len() <= 1232 && r.bytes.len() > 512,
        "{}",
        r.bytes.len()
    );
    assert!(r.truncated && m.answers.len() < 40);
    let fit_in_1232 = m.answers.len();
    // A client offering 4096 bytes gets no more than 1232 (MAX_UDP_PAYLOAD): 40 SRV records
    // and their targets take more, so the answer says TC and the client asks over TCP.
    let (m, r) = reply(answer(
        Some(&z),
        &query(srv, RecordType::SRV, Some(4096)),
        Transport::Udp,
        false,
    ));
    assert!(r.bytes.len() <= 1232, "{}", r.bytes.len());
    assert!(r.truncated && m.metadata.truncation);
    assert_eq!(m.answers.len(), fit_in_1232);
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

/// BADVERS (16) is 0 in the header and 1 in the OPT (RFC 6891 §6.1.3), in the answer and in
/// the answer cut to its question (a slip, or a relayed answer too large for the client).
#[test]
fn badvers_keeps_its_upper_bits_when_cut_to_the_question() {
    let z = zone(1);
    let mut q = crate::zone::fixtures::query("api-prod.marathon.mesos.", RecordType::A, Some(1232));
    q.edns.as_mut().unwrap().set_version(1);
    let q = q.to_vec().unwrap();
    for transport in [Transport::Udp, Transport::Tcp] {
        // hickory decodes 16 as BADSIG, which shares the number (RFC 6891 §9, RFC 8945).
        let (m, r) = reply(answer(Some(&z), &q, transport, false));
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert_eq!(r.rcode, ResponseCode::BADVERS);
        assert_eq!(r.bytes[3] & 0x0f, 0, "the header has the lower bits");
        let question = plain_question(&q).map(|end| &q[..end]);
        let cut = cut_to_question(&r.bytes, question, Some(false));
        let m = Message::from_vec(&cut).unwrap();
        assert!(m.metadata.truncation);
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert_eq!(m.edns.as_ref().map(|e| e.rcode_high()), Some(1));
    }
}

/// Meta-types are not looked up (RFC 6895 §3.1): OPT, TSIG and TKEY are FORMERR, MAILA and
/// MAILB NOTIMP, for a served name and for one that would be relayed alike.
#[test]
fn meta_type_queries_are_formerr_or_notimp() {
    let z = zone(1);
    for (code, rcode) in [
        (41, ResponseCode::FormErr),
        (249, ResponseCode::FormErr),
        (250, ResponseCode::FormErr),
        (253, ResponseCode::NotImp),
        (254, ResponseCode::NotImp),
    ] {
        for name in ["api-prod.marathon.mesos.", "example.org."] {
            let q = query(name, RecordType::from(code), Some(1232));
            let (m, r) = reply(answer(Some(&z), &q, Transport::Udp, true));
            assert_eq!(m.metadata.response_code, rcode, "{code} {name}");
            assert_eq!(r.rcode, rcode);
            assert!(m.answers.is_empty() && m.edns.is_some());
        }
    }
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
        Outcome::Forward(_)
    ));
    let (m, _) = reply(answer(Some(&z), &q, Transport::Udp, false));
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // The served zone is never forwarded, even when the name is missing.
    let q = query("missing.mesos.", RecordType::A, None);
    let (m, _) = reply(answer(Some(&z), &q, Transport::Udp, true));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn a_query_without_rd_is_refused_not_forwarded() {
    let z = zone(1);
    let mut q = crate::zone::fixtures::query("example.com.", RecordType::A, None);
    q.metadata.recursion_desired = false;
    for transport in [Transport::Udp, Transport::Tcp] {
        let (m, _) = reply(answer(Some(&z), &q.to_vec().unwrap(), transport, true));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.recursion_desired && m.metadata.recursion_available);
    }
    // The served zone answers it as ever.
    let mut q = crate::zone::fixtures::query("api-prod.marathon.mesos.", RecordType::SRV, None);
    q.metadata.recursion_desired = false;
    let (m, _) = reply(answer(Some(&z), &q.to_vec().unwrap(), Transport::Udp, true));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[test]
fn a_relayed_answer_fits_the_clients_udp_size_up_to_1232() {
    let z = zone(1);
    for (edns, limit) in [
        (None, 512),
        (Some(100), 512),
        (Some(1000), 1000),
        (Some(1232), 1232),
        (Some(4096), 1232),
        (Some(65535), 1232),
    ] {
        let q = query("example.com.", RecordType::A, edns);
        let Outcome::Forward(Relayed { limit: got, .. }) =
            answer(Some(&z), &q, Transport::Udp, true)
        else {
            panic!("forwarded");
        };
        assert_eq!(got, limit, "{edns:?}");
    }
    let q = query("example.com.", RecordType::A, Some(1232));
    let Outcome::Forward(Relayed { limit, .. }) = answer(Some(&z), &q, Transport::Tcp, true) else {
        panic!("forwarded");
    };
    assert_eq!(limit, 65535);
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
                Outcome::Forward(_)
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
                let (m, _) = reply(answer(Some(&z), &query(name, qtype, None), transport, true));
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

/// ANY over UDP draws one RRset (RFC 8482 §4.1), over TCP every one: the apex has an SOA and
/// NS records, and a UDP ANY for it gets one of them, a TCP one both.
#[test]
fn any_over_udp_is_one_rrset_and_over_tcp_every_one() {
    let z = zone(3);
    let types = |transport| {
        let (m, _) = reply(answer(
            Some(&z),
            &query("mesos.", RecordType::ANY, Some(4096)),
            transport,
            false,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        m.answers
            .iter()
            .map(|r| u16::from(r.record_type()))
            .collect::<std::collections::BTreeSet<u16>>()
    };
    let tcp = types(Transport::Tcp);
    assert!(tcp.len() >= 2, "every RRset over TCP: {tcp:?}");
    let udp = types(Transport::Udp);
    assert_eq!(udp.len(), 1, "one RRset over UDP: {udp:?}");
    assert!(udp.is_subset(&tcp));
}
