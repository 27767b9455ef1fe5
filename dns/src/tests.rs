//! Unit and property tests of [`respond`](super::respond) and [`query_name`](super::query_name).

use super::*;
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(172, 18, 0, d))
}

fn v6(i: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x7673, 0x7700, 0, 0, 0, 0, i))
}

fn table(name: &str) -> Option<Vec<IpAddr>> {
    match name {
        "web" => Some(vec![v4(2)]),
        "db" => Some(vec![v4(3), v4(4), v4(3)]),
        "my.app" => Some(vec![v4(9)]),
        "nov4" => Some(vec![]),
        "many" => Some(
            (0..200u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0xac12_0000 + i)))
                .collect(),
        ),
        "dual" => Some(vec![v6(2), v4(2), v6(3), v6(2)]),
        "v6only" => Some(vec![v6(7)]),
        "many6" => Some((0..200u16).map(v6).collect()),
        "mixed" => Some((0..100u16).flat_map(|i| [v4(i as u8), v6(i)]).collect()),
        _ => None,
    }
}

fn zone(domain: Option<&'static str>) -> Zone<'static> {
    Zone {
        domain,
        lookup: &table,
    }
}

fn query_bytes(id: u16, name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    // from_ascii keeps case (FromStr goes through IDNA, which lowercases)
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn answer(d: Decision) -> Message {
    match d {
        Decision::Answer(b) => Message::from_vec(&b).unwrap(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn aaaa_records(m: &Message) -> Vec<Ipv6Addr> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::AAAA(a) => a.0,
            other => panic!("not an AAAA record: {other:?}"),
        })
        .collect()
}

fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            other => panic!("not an address record: {other:?}"),
        })
        .collect()
}

fn only_v6(ips: &[IpAddr]) -> Vec<Ipv6Addr> {
    ips.iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
        .collect()
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0,
            other => panic!("not an A record: {other:?}"),
        })
        .collect()
}

#[test]
fn bare_name_gets_a_records() {
    let q = query_bytes(0x1234, "web.", RecordType::A, None);
    let m = answer(respond(&q, &zone(None)));
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
    assert!(m.metadata.recursion_desired, "RD echoed");
    assert!(!m.metadata.truncation);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.queries.len(), 1);
    assert_eq!(m.queries[0].name().to_ascii(), "web.");
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(172, 18, 0, 2)]);
    assert_eq!(m.answers[0].ttl, TTL);
    assert_eq!(m.answers[0].name.to_ascii(), "web.");
}

#[test]
fn case_insensitive_and_question_echoed_as_sent() {
    let q = query_bytes(7, "WeB", RecordType::A, None);
    let m = answer(respond(&q, &zone(Some("vswitch.internal"))));
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(172, 18, 0, 2)]);
    assert_eq!(m.queries[0].name().to_ascii(), "WeB.");
    let q = query_bytes(8, "WEB.VSwitch.Internal.", RecordType::A, None);
    let m = answer(respond(&q, &zone(Some("vswitch.internal."))));
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(172, 18, 0, 2)]);
}

#[test]
fn multiple_addresses_deduplicated_in_order() {
    let q = query_bytes(1, "db.vswitch.internal", RecordType::A, None);
    let m = answer(respond(&q, &zone(Some("vswitch.internal"))));
    assert_eq!(
        a_records(&m),
        vec![Ipv4Addr::new(172, 18, 0, 3), Ipv4Addr::new(172, 18, 0, 4)]
    );
}

#[test]
fn dotted_container_name_inside_domain() {
    let q = query_bytes(1, "my.app.vswitch.internal", RecordType::A, None);
    let m = answer(respond(&q, &zone(Some("vswitch.internal"))));
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(172, 18, 0, 9)]);
    // outside the domain a two-label name is not ours
    let q = query_bytes(1, "my.app", RecordType::A, None);
    assert_eq!(
        respond(&q, &zone(Some("vswitch.internal"))),
        Decision::Forward
    );
}

#[test]
fn aaaa_gets_the_ipv6_addresses_a_the_ipv4_ones() {
    let z = zone(Some("vswitch.internal"));
    let q = query_bytes(0x66, "dual.vswitch.internal", RecordType::AAAA, None);
    let m = answer(respond(&q, &z));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative && !m.metadata.truncation);
    assert_eq!(
        aaaa_records(&m),
        only_v6(&[v6(2), v6(3)]),
        "in lookup order, duplicates removed"
    );
    assert!(m.answers.iter().all(|r| r.ttl == TTL));
    assert_eq!(m.answers[0].name.to_ascii(), "dual.vswitch.internal.");
    let q = query_bytes(0x66, "Dual", RecordType::A, None);
    let m = answer(respond(&q, &z));
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(172, 18, 0, 2)]);
    // ANY: both families, as `lookup` orders them
    let q = query_bytes(0x66, "dual", RecordType::ANY, None);
    assert_eq!(ips(&answer(respond(&q, &z))), vec![v6(2), v4(2), v6(3)]);
}

#[test]
fn nodata_either_way() {
    let z = zone(Some("vswitch.internal"));
    // IPv6 only: A is NODATA, AAAA answered
    for name in ["v6only", "v6only.vswitch.internal"] {
        let m = answer(respond(&query_bytes(5, name, RecordType::A, None), &z));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty() && m.metadata.authoritative, "{name}");
        let m = answer(respond(&query_bytes(5, name, RecordType::AAAA, None), &z));
        assert_eq!(aaaa_records(&m), only_v6(&[v6(7)]));
    }
    // IPv4 only: AAAA is NODATA
    let m = answer(respond(&query_bytes(5, "web", RecordType::AAAA, None), &z));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // no address at all: NODATA for both
    for t in [RecordType::A, RecordType::AAAA] {
        let m = answer(respond(&query_bytes(5, "nov4", t, None), &z));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(m.answers.is_empty(), "{t}");
    }
    // unknown names as before: NXDOMAIN in the domain, forwarded outside it
    let q = query_bytes(5, "ghost.vswitch.internal", RecordType::AAAA, None);
    let m = answer(respond(&q, &z));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let q = query_bytes(5, "ghost", RecordType::AAAA, None);
    assert_eq!(respond(&q, &z), Decision::Forward);
}

#[test]
fn many_aaaa_records_are_truncated_to_fit() {
    let z = zone(None);
    let mut counts = Vec::new();
    for (edns, limit) in [(None, 512), (Some(4096), 1232), (Some(100), 512)] {
        let q = query_bytes(9, "many6", RecordType::AAAA, edns);
        let Decision::Answer(b) = respond(&q, &z) else {
            panic!()
        };
        assert!(b.len() <= limit, "{edns:?}: {}", b.len());
        // full: one more AAAA record (28 bytes) would not have fitted
        assert!(b.len() + AAAA_RECORD_LEN > limit, "{edns:?}: {}", b.len());
        let m = Message::from_vec(&b).unwrap();
        assert!(m.metadata.truncation, "{edns:?}");
        let got = aaaa_records(&m);
        assert_eq!(
            got,
            (0..got.len() as u16)
                .map(|i| Ipv6Addr::new(0xfd00, 0x7673, 0x7700, 0, 0, 0, 0, i))
                .collect::<Vec<_>>(),
            "the first ones, in order"
        );
        counts.push(got.len());
    }
    // 512 bytes: header 12, question 11 ("many6" 7, type and class 4), n * 28
    assert_eq!(counts[0], (512 - 12 - 11) / AAAA_RECORD_LEN);
    assert!(counts[1] > 2 * counts[0], "{counts:?}");
    assert_eq!(counts[2], counts[0]);
    // the IPv4 ones of the same name fit more: 16 bytes each
    let q = query_bytes(9, "many", RecordType::A, None);
    let n4 = answer(respond(&q, &z)).answers.len();
    assert_eq!(n4, (512 - 12 - 10) / A_RECORD_LEN);
}

#[test]
fn mixed_families_are_cut_by_their_own_sizes() {
    let z = zone(None);
    // A and AAAA of 100 dual-stack names under one name: ANY carries both
    let q = query_bytes(9, "mixed", RecordType::ANY, None);
    let Decision::Answer(b) = respond(&q, &z) else {
        panic!()
    };
    assert!(
        b.len() <= 512 && b.len() + A_RECORD_LEN > 512,
        "{}",
        b.len()
    );
    let m = Message::from_vec(&b).unwrap();
    assert!(m.metadata.truncation);
    let got = ips(&m);
    let want: Vec<IpAddr> = (0..100u16)
        .flat_map(|i| [v4(i as u8), v6(i)])
        .take(got.len())
        .collect();
    assert_eq!(got, want);
    // header 12, question 11 ("mixed" 7, type and class 4): 11 pairs of 44 bytes, 5 left
    assert_eq!(got.len(), 2 * 11);
    // the same name's AAAA query: only the 100 IPv6 ones, cut at 28 bytes each
    let q = query_bytes(9, "mixed", RecordType::AAAA, None);
    let m = answer(respond(&q, &z));
    assert!(m.metadata.truncation);
    assert_eq!(m.answers.len(), (512 - 12 - 11) / AAAA_RECORD_LEN);
    assert_eq!(only_v6(&ips(&m)).len(), m.answers.len());
    // and a small mixed answer is not truncated
    let q = query_bytes(9, "dual", RecordType::ANY, Some(1232));
    let m = answer(respond(&q, &z));
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 3);
}

#[test]
fn known_name_other_types_get_nodata() {
    for t in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let q = query_bytes(2, "web", t, None);
        let m = answer(respond(&q, &zone(None)));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(m.answers.is_empty());
        assert_eq!(m.queries[0].query_type(), t);
    }
    let q = query_bytes(2, "web", RecordType::ANY, None);
    assert_eq!(a_records(&answer(respond(&q, &zone(None)))).len(), 1);
    // a name with no IPv4 address: NODATA for A too
    let q = query_bytes(2, "nov4", RecordType::A, None);
    let m = answer(respond(&q, &zone(None)));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn unknown_names() {
    let z = zone(Some("vswitch.internal"));
    // single label: upstream may know it (search domains, LAN names)
    let q = query_bytes(3, "ghost", RecordType::A, None);
    assert_eq!(respond(&q, &z), Decision::Forward);
    // inside the domain: we are authoritative
    let q = query_bytes(3, "ghost.vswitch.internal", RecordType::A, None);
    let m = answer(respond(&q, &z));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative && m.answers.is_empty());
    let q = query_bytes(3, "ghost.vswitch.internal", RecordType::AAAA, None);
    assert_eq!(
        answer(respond(&q, &z)).metadata.response_code,
        ResponseCode::NXDomain
    );
    // a label that cannot be a container name (a space, a dot inside the label)
    for bad in [&b"we b"[..], b"we.b"] {
        let raw = |labels: Vec<&[u8]>| {
            let mut m = Message::new(3, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(
                Name::from_labels(labels).unwrap(),
                RecordType::A,
            ));
            m.to_vec().unwrap()
        };
        let q = raw(vec![bad, b"vswitch", b"internal"]);
        assert_eq!(
            answer(respond(&q, &z)).metadata.response_code,
            ResponseCode::NXDomain
        );
        assert_eq!(respond(&raw(vec![bad]), &z), Decision::Forward);
    }
    // the apex exists
    let q = query_bytes(3, "vswitch.internal", RecordType::SOA, None);
    let m = answer(respond(&q, &z));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    // without a domain, suffixed names are someone else's
    let q = query_bytes(3, "web.vswitch.internal", RecordType::A, None);
    assert_eq!(respond(&q, &zone(None)), Decision::Forward);
}

#[test]
fn other_names_and_classes_are_forwarded() {
    let z = zone(Some("vswitch.internal"));
    for name in [
        "example.com",
        "web.example.com",
        "2.0.18.172.in-addr.arpa",
        "internal",
    ] {
        let q = query_bytes(4, name, RecordType::A, None);
        assert_eq!(respond(&q, &z), Decision::Forward, "{name}");
    }
    let mut m = Message::new(4, MessageType::Query, OpCode::Query);
    let mut qq = Query::query(Name::from_ascii("web.").unwrap(), RecordType::A);
    qq.set_query_class(DNSClass::CH);
    m.add_query(qq);
    assert_eq!(respond(&m.to_vec().unwrap(), &z), Decision::Forward);
    // root
    let q = query_bytes(4, ".", RecordType::NS, None);
    assert_eq!(respond(&q, &z), Decision::Forward);
}

#[test]
fn lookup_sees_normalised_names_only() {
    let seen = std::cell::RefCell::new(Vec::new());
    let f = |n: &str| {
        seen.borrow_mut().push(n.to_string());
        None
    };
    let z = Zone {
        domain: Some("Vswitch.Internal."),
        lookup: &f,
    };
    for name in ["Web.", "WEB.vswitch.INTERNAL.", "a.B.vswitch.internal"] {
        respond(&query_bytes(1, name, RecordType::A, None), &z);
    }
    assert_eq!(*seen.borrow(), vec!["web", "web", "a.b"]);
}

#[test]
fn unreadable_input_is_dropped() {
    let z = zone(None);
    assert_eq!(respond(&[], &z), Decision::Drop);
    assert_eq!(respond(&[0; 11], &z), Decision::Drop);
    // a response (QR=1) is never answered
    let mut q = query_bytes(5, "web", RecordType::A, None);
    q[2] |= 0x80;
    assert_eq!(respond(&q, &z), Decision::Drop);
}

fn header_only(d: Decision) -> [u8; 12] {
    match d {
        Decision::Answer(b) => b.as_slice().try_into().unwrap(),
        other => panic!("expected a header-only answer, got {other:?}"),
    }
}

#[test]
fn readable_but_bad_queries_get_error_replies() {
    let z = zone(None);
    let q = query_bytes(0xbeef, "web", RecordType::A, None);
    // NOTIFY (opcode 4) → NOTIMP, opcode echoed
    let mut n = q.clone();
    n[2] = (n[2] & !0x78) | (4 << 3);
    let r = header_only(respond(&n, &z));
    assert_eq!(&r[..2], &[0xbe, 0xef]);
    assert_eq!(r[2], 0x80 | (4 << 3) | 0x01);
    assert_eq!(r[3] & 0x0f, 4);
    let parsed = Message::from_vec(&r).unwrap();
    assert_eq!(parsed.metadata.response_code, ResponseCode::NotImp);
    // QDCOUNT 0 and 2 → FORMERR
    for qd in [0u8, 2] {
        let mut b = q.clone();
        b[5] = qd;
        let r = header_only(respond(&b, &z));
        assert_eq!(r[3] & 0x0f, 1, "qdcount {qd}");
    }
    // header fine, question truncated → FORMERR
    let r = header_only(respond(&q[..15], &z));
    assert_eq!(r[3] & 0x0f, 1);
    // forged huge counts do not make us allocate or panic
    let mut b = q.clone();
    b[6..12].copy_from_slice(&[0xff; 6]);
    assert_eq!(header_only(respond(&b, &z))[3] & 0x0f, 1);
}

#[test]
fn edns_is_echoed_and_bounds_the_size() {
    let z = zone(None);
    let q = query_bytes(9, "web", RecordType::A, Some(4096));
    let m = answer(respond(&q, &z));
    let e = m.edns.as_ref().unwrap();
    assert_eq!(e.max_payload(), MAX_UDP_PAYLOAD);
    assert_eq!(e.version(), 0);

    // 200 addresses: without EDNS cut to 512 bytes with TC
    let q = query_bytes(9, "many", RecordType::A, None);
    let Decision::Answer(b) = respond(&q, &z) else {
        panic!()
    };
    assert!(b.len() <= 512, "{}", b.len());
    let m = Message::from_vec(&b).unwrap();
    assert!(m.metadata.truncation);
    let n512 = m.answers.len();
    assert!(n512 > 20, "{n512}");
    assert_eq!(a_records(&m)[0], Ipv4Addr::new(172, 18, 0, 0));
    // with EDNS 4096: capped at 1232
    let q = query_bytes(9, "many", RecordType::A, Some(4096));
    let Decision::Answer(b) = respond(&q, &z) else {
        panic!()
    };
    assert!(b.len() <= 1232 && b.len() > 1100, "{}", b.len());
    let m = Message::from_vec(&b).unwrap();
    assert!(m.metadata.truncation && m.answers.len() > n512);
    // EDNS below 512 is treated as 512
    let q = query_bytes(9, "many", RecordType::A, Some(100));
    let Decision::Answer(b) = respond(&q, &z) else {
        panic!()
    };
    assert!(b.len() <= 512 && b.len() > 400);
}

#[test]
fn query_name_for_logs() {
    assert_eq!(
        query_name(&query_bytes(1, "Web.Example.COM.", RecordType::A, None)).as_deref(),
        Some("web.example.com")
    );
    assert_eq!(
        query_name(&query_bytes(1, ".", RecordType::NS, None)).as_deref(),
        Some(".")
    );
    assert_eq!(query_name(&[1, 2, 3]), None);
    assert_eq!(query_name(&[0; 12]), None);
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9-]{0,15}"
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let z = zone(Some("vswitch.internal"));
        if let Decision::Answer(b) = respond(&bytes, &z) {
            prop_assert!(b.len() >= HEADER_LEN);
            prop_assert_eq!(&b[..2], &bytes[..2]);
            prop_assert!(b[2] & 0x80 != 0);
        }
        let _ = query_name(&bytes);
    }

    #[test]
    fn mutated_queries_never_panic(
        name in label(), pos in 0usize..64, byte in any::<u8>(), cut in 0usize..64
    ) {
        let mut q = query_bytes(77, &name, RecordType::A, Some(1232));
        let i = pos % q.len();
        q[i] = byte;
        q.truncate(q.len().saturating_sub(cut % 8));
        let z = zone(Some("vswitch.internal"));
        if let Decision::Answer(b) = respond(&q, &z) {
            prop_assert_eq!(&b[..2], &q[..2]);
        }
    }

    #[test]
    fn valid_queries_get_a_matching_response(
        id in any::<u16>(),
        rd in any::<bool>(),
        labels in proptest::collection::vec(label(), 1..4),
        in_domain in any::<bool>(),
        known in any::<bool>(),
        t in prop::sample::select(vec![
            RecordType::A, RecordType::AAAA, RecordType::ANY, RecordType::MX, RecordType::PTR
        ]),
        edns in proptest::option::of(0u16..9000),
    ) {
        let mut name = if known { "web".to_string() } else { labels.join(".") };
        if in_domain {
            name.push_str(".vswitch.internal");
        }
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = rd;
        m.add_query(Query::query(Name::from_ascii(format!("{name}.")).unwrap(), t));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        let q = m.to_vec().unwrap();
        match respond(&q, &zone(Some("vswitch.internal"))) {
            Decision::Answer(b) => {
                let r = Message::from_vec(&b).unwrap();
                prop_assert_eq!(r.metadata.id, id);
                prop_assert_eq!(r.metadata.message_type, MessageType::Response);
                prop_assert_eq!(r.metadata.recursion_desired, rd);
                prop_assert_eq!(&r.queries, &m.queries);
                prop_assert_eq!(r.edns.is_some(), edns.is_some());
                prop_assert!(b.len() <= 512 || edns.is_some());
            }
            Decision::Forward => {
                prop_assert!(!in_domain);
                prop_assert!(!known || name.contains('.'));
            }
            Decision::Drop => prop_assert!(false, "a valid query was dropped"),
        }
    }
}
