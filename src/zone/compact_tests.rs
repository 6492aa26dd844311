//! The encoder: whatever records a name gets, its pre-encoded sets parse back, as a message
//! answering the name, into exactly those records.

use super::*;
use crate::zone::compact::*;
use hickory_proto::op::Message;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum In {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv(u16, u16, usize),
    Ns(usize),
    Ptr(usize),
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,63}"
}

proptest! {
    #[test]
    fn every_pre_encoded_set_parses_back_into_its_records(
        owner in proptest::collection::vec(label(), 1..4),
        targets in proptest::collection::vec(proptest::collection::vec(label(), 1..4), 1..4),
        records in proptest::collection::vec(
            (prop_oneof![
                any::<[u8; 4]>().prop_map(|o| In::A(o.into())),
                any::<[u8; 16]>().prop_map(|o| In::Aaaa(o.into())),
                // Few distinct values: equal records, also past the listed `Seen`.
                (0u8..8).prop_map(|o| In::A([10, 0, 0, o].into())),
                (0u16..8).prop_map(|o| In::Aaaa([0xfd00, 0, 0, 0, 0, 0, 0, o].into())),
                (0u16..2, 0u16..4, 0usize..2).prop_map(|(w, p, t)| In::Srv(w, p, t)),
                (any::<u16>(), any::<u16>(), 0usize..4).prop_map(|(w, p, t)| In::Srv(w, p, t)),
                (0usize..4).prop_map(In::Ns),
                (0usize..4).prop_map(In::Ptr),
            ], any::<u32>(), any::<bool>()),
            0..200,
        ),
        soa in proptest::option::of((any::<u32>(), any::<u32>())),
    ) {
        let mut b = Builder::default();
        let text = |labels: &[String]| format!("{}.", labels.join("."));
        let Some(owner) = b.names.parse(&text(&owner)) else { return Ok(()) };
        let targets: Vec<NameId> =
            targets.iter().filter_map(|t| b.names.parse(&text(t))).collect();
        prop_assume!(!targets.is_empty());
        b.touch(owner);
        // What each type should hold, in order (`once` records dropped when equal to one before).
        let mut expected: FxHashMap<RecordType, Vec<Record>> = FxHashMap::default();
        for (record, ttl, once) in &records {
            let target = |i: usize| targets[i % targets.len()];
            let (rtype, data) = match *record {
                In::A(ip) => {
                    b.push(owner, *ttl, Data::A(ip), *once);
                    (RecordType::A, RData::A(A(ip)))
                }
                In::Aaaa(ip) => {
                    b.push(owner, *ttl, Data::Aaaa(ip), *once);
                    (RecordType::AAAA, RData::AAAA(AAAA(ip)))
                }
                In::Srv(weight, port, t) => {
                    b.add_srv(owner, weight, port, target(t), *ttl, *once);
                    let name = b.names.name(target(t));
                    (RecordType::SRV, RData::SRV(SRV::new(0, weight, port, name)))
                }
                In::Ns(t) => {
                    b.add_ns(owner, target(t), *ttl);
                    (RecordType::NS, RData::NS(NS(b.names.name(target(t)))))
                }
                In::Ptr(t) => {
                    b.add_ptr(owner, target(t), *ttl);
                    (RecordType::PTR, RData::PTR(PTR(b.names.name(target(t)))))
                }
            };
            let once = *once && !matches!(record, In::Ns(_) | In::Ptr(_));
            let list = expected.entry(rtype).or_default();
            if once && list.iter().any(|r| r.data == data) {
                continue;
            }
            list.push(Record::from_rdata(Name::root(), *ttl, data));
        }
        if let Some((serial, minimum)) = soa {
            let data = SoaData { mname: targets[0], rname: *targets.last().unwrap(), serial, refresh: 60, retry: 600, expire: 86400, minimum };
            let record = b.soa_record(owner, &data, 30);
            b.set_soa(owner, data, 30);
            expected.insert(RecordType::SOA, vec![record]);
        }
        let owner_name = b.names.name(owner);
        let owner_wire = b.names.wire(owner).to_vec();
        let names = b.finish();
        let node = names.find_name(&owner_name).expect("the owner exists");
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::NS, RecordType::PTR, RecordType::SOA] {
            let want = expected.remove(&rtype).unwrap_or_default();
            let Some(set) = Kind::of(rtype).and_then(|k| names.set(node, k)) else {
                prop_assert!(want.is_empty(), "{rtype}: {want:?}");
                continue;
            };
            // A response to a question for the owner, with the set as its answers.
            let mut message = vec![0, 7, 0x84, 0, 0, 1];
            message.extend_from_slice(&(set.count as u16).to_be_bytes());
            message.extend_from_slice(&[0, 0, 0, 0]);
            message.extend_from_slice(&owner_wire);
            message.extend_from_slice(&u16::from(rtype).to_be_bytes());
            message.extend_from_slice(&[0, 1]);
            message.extend_from_slice(set.bytes);
            let parsed = Message::from_vec(&message).expect("the set parses as answers");
            let got: Vec<(RData, u32)> = parsed.answers.iter().map(|r| (r.data.clone(), r.ttl)).collect();
            let want_data: Vec<(RData, u32)> = want.iter().map(|r| (r.data.clone(), r.ttl)).collect();
            prop_assert_eq!(&got, &want_data);
            prop_assert!(parsed.answers.iter().all(|r| r.name == owner_name), "owned by the question's name");
            // And read back as hickory records (owner: the root; NS, PTR, SOA: the name).
            let back = names.records(node, rtype);
            prop_assert_eq!(back.iter().map(|r| (r.data.clone(), r.ttl)).collect::<Vec<_>>(), want_data);
        }
    }
}

#[test]
fn names_are_interned_once_and_found_in_any_case() {
    let mut t = NameTable::default();
    let a = t.parse("Api.Marathon.Mesos.").unwrap();
    let b = t.parse("api.marathon.mesos.").unwrap();
    assert_eq!(a, b);
    let parent = t.parse("marathon.mesos.").unwrap();
    assert_eq!(t.child(b"API", parent), Some(a));
    assert_eq!(t.parent(a), parent);
    assert_eq!(t.labels(a), 3);
    assert_eq!(t.name(a).to_ascii(), "api.marathon.mesos.");
    assert_eq!(t.child(&[b'x'; 64], parent), None, "a label of 64");
    assert_eq!(t.parse("a..b."), None);
    assert_eq!(t.parse("not.qualified"), None);
    let long = format!("{}.", vec!["x".repeat(63); 4].join("."));
    assert_eq!(t.parse(&long), None, "over 255 bytes");
}
