//! EDNS (RFC 6891) as it is on the wire, checked before a message is decoded: where its OPT
//! records are, whether their options are framed right, and the DO bit (RFC 3225) to echo.
//! The fast path and the general path both decide from here, so that they answer every
//! malformed OPT alike (FORMERR, with an OPT record: RFC 6891 §7).

const HEADER: usize = 12;
pub const TYPE_OPT: u16 = 41;

/// What a message's OPT records are like.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// At least one OPT record, anywhere: the response carries one too.
    pub opt: bool,
    /// The first OPT record's DO bit.
    pub dnssec_ok: bool,
    /// The first OPT record's extended rcode: the upper 8 bits of the message's 12-bit rcode
    /// (RFC 6891 §6.1.3; BADVERS, 16, is 1 here and 0 in the header).
    pub rcode_high: u8,
    /// Two OPT records, one outside the additional section, one not owned by the root, or
    /// options that do not fill its data exactly: FORMERR.
    pub malformed: bool,
}

/// How an OPT record's options are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Options {
    /// Each option's length fits and they fill the data exactly; none is one the decoder
    /// parses (NSID, DAU, Client Subnet), whose contents may still be rejected.
    Opaque,
    /// Framed right, but with an option whose contents the decoder checks.
    Parsed,
    Malformed,
}

/// Walks the options of an OPT record's data.
pub fn options(mut data: &[u8]) -> Options {
    let mut parsed = false;
    while !data.is_empty() {
        let Some(head) = data.get(..4) else {
            return Options::Malformed;
        };
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let Some(rest) = data.get(4 + len..) else {
            return Options::Malformed;
        };
        // NSID (3), DAU (5), Client Subnet (8).
        parsed |= matches!(code, 3 | 5 | 8);
        data = rest;
    }
    if parsed {
        Options::Parsed
    } else {
        Options::Opaque
    }
}

/// Where the name starting at `at` ends (after its last label or its pointer).
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)? as usize;
        match len {
            0 => return Some(at + 1),
            1..=63 => at += 1 + len,
            _ if len & 0xc0 == 0xc0 => return (at + 2 <= packet.len()).then_some(at + 2),
            _ => return None,
        }
    }
}

/// The OPT records of `packet`, walked as far as the message can be: a message cut short is
/// the decoder's to reject, with what was seen before the cut.
pub fn scan(packet: &[u8]) -> Seen {
    let mut seen = Seen::default();
    let Some(header) = packet.get(..HEADER) else {
        return seen;
    };
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]) as usize;
    let (questions, answers, authorities, additionals) = (count(4), count(6), count(8), count(10));
    let mut at = HEADER;
    for _ in 0..questions {
        let Some(end) = skip_name(packet, at) else {
            return seen;
        };
        at = end + 4;
    }
    for n in 0..answers + authorities + additionals {
        let owner = at;
        let Some(end) = skip_name(packet, at) else {
            return seen;
        };
        let Some(fixed) = packet.get(end..end + 10) else {
            return seen;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let data = end + 10;
        let Some(rdata) = packet.get(data..data + rdlen) else {
            if rtype == TYPE_OPT {
                seen.opt = true;
            }
            return seen;
        };
        if rtype == TYPE_OPT {
            if seen.opt {
                seen.malformed = true;
            } else {
                seen.opt = true;
                seen.dnssec_ok = fixed[6] & 0x80 != 0;
                seen.rcode_high = fixed[4];
            }
            let in_additional = n >= answers + authorities;
            let root = end == owner + 1;
            if !in_additional || !root || options(rdata) == Options::Malformed {
                seen.malformed = true;
            }
        }
        at = data + rdlen;
    }
    seen
}

/// The 11 bytes of switchyard's OPT record: root owner, its payload size, extended rcode
/// `rcode_high`, version 0, the DO bit as the query had it, no options.
pub fn opt_record(payload: u16, rcode_high: u8, dnssec_ok: bool) -> [u8; 11] {
    let p = payload.to_be_bytes();
    let flags = if dnssec_ok { 0x80 } else { 0 };
    [
        0,
        0,
        TYPE_OPT as u8,
        p[0],
        p[1],
        rcode_high,
        0,
        flags,
        0,
        0,
        0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::fixtures::query;
    use hickory_proto::rr::RecordType;

    fn with_opt(options: &[u8], dnssec_ok: bool) -> Vec<u8> {
        let mut q = query("a.mesos.", RecordType::A, None).to_vec().unwrap();
        q[11] = 1;
        q.extend_from_slice(&opt_record(1232, 0, dnssec_ok)[..9]);
        q.extend_from_slice(&(options.len() as u16).to_be_bytes());
        q.extend_from_slice(options);
        q
    }

    #[test]
    fn options_are_framed_or_not() {
        assert_eq!(options(&[]), Options::Opaque);
        // COOKIE with 8 bytes, then padding with none.
        let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 12, 0, 0];
        assert_eq!(options(&cookie), Options::Opaque);
        assert_eq!(options(&cookie[..15]), Options::Malformed);
        assert_eq!(options(&[0, 10, 0]), Options::Malformed);
        assert_eq!(options(&[0, 8, 0, 1, 0]), Options::Parsed);
    }

    #[test]
    fn scan_finds_the_opt_its_do_bit_and_what_is_wrong() {
        let plain = query("a.mesos.", RecordType::A, None).to_vec().unwrap();
        assert_eq!(scan(&plain), Seen::default());
        let good = with_opt(&[0, 10, 0, 2, 9, 9], true);
        assert_eq!(
            scan(&good),
            Seen {
                opt: true,
                dnssec_ok: true,
                rcode_high: 0,
                malformed: false
            }
        );
        // An answer's extended rcode (BADVERS: 1 in the OPT, 0 in the header).
        let mut badvers = plain.clone();
        badvers[11] = 1;
        badvers.extend_from_slice(&opt_record(1232, 1, false));
        assert_eq!(scan(&badvers).rcode_high, 1);
        // An option longer than the record's data.
        let bad = with_opt(&[0, 10, 0, 9, 9, 9], false);
        assert!(scan(&bad).malformed && scan(&bad).opt);
        // Two OPT records.
        let mut two = good.clone();
        two[11] = 2;
        two.extend_from_slice(&opt_record(512, 0, false));
        assert!(scan(&two).malformed && scan(&two).dnssec_ok);
        // The OPT record as an answer.
        let mut answer = good.clone();
        answer[7] = 1;
        answer[11] = 0;
        assert!(scan(&answer).malformed);
        // Owned by another name than the root.
        let mut owned = plain.clone();
        owned[11] = 1;
        owned.extend_from_slice(&[1, b'x', 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert!(scan(&owned).malformed);
        // Cut inside the OPT record: seen, for the decoder to reject.
        let cut = &good[..good.len() - 1];
        assert!(scan(cut).opt && !scan(cut).malformed);
    }
}
