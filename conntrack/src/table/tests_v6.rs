//! Unit tests of an IPv6 table (`Conntrack<Ipv6Addr>`, for NAT66): the same
//! states, timeouts and limits as IPv4, over IPv6 tuples. The IPv4 unit
//! tests are `tests.rs`; the model test runs both families.

use super::*;
use Direction::{Original as O, Reply as R};

const S: u64 = 1_000_000_000;
const SYN: u8 = TcpSegment::FLAG_SYN;
const ACK: u8 = TcpSegment::FLAG_ACK;
const FIN: u8 = TcpSegment::FLAG_FIN;

/// `2001:db8::<host>`.
fn ip(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host)
}

/// A container (`fd00::2`) to `2001:db8::1:80`.
fn tuple(proto: L4Proto, sport: u16) -> Tuple<Ipv6Addr> {
    let client = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    Tuple::new_v6(proto, client, sport, ip(1), 80)
}

fn table(config: Config) -> Conntrack<Ipv6Addr> {
    Conntrack::new_v6(config)
}

fn seg(flags: u8, seq: u32, ack_no: u32) -> TcpSegment {
    TcpSegment::from_flags(flags, seq, ack_no, 0)
}

fn tcp_state(ct: &Conntrack<Ipv6Addr>, id: EntryId) -> Option<TcpState> {
    match ct.entry(id)?.state {
        State::Tcp(s) => Some(s),
        _ => None,
    }
}

#[test]
fn tcp_handshake_established_then_fin_teardown() {
    let mut ct = table(Config::default());
    let t = tuple(L4Proto::Tcp, 40000);
    let id = ct.insert(t, t.reversed(), 3, 0).unwrap();
    let steps = [
        (O, SYN, 1000, 0, TcpState::SynSent),
        (R, SYN | ACK, 5000, 1001, TcpState::SynRecv),
        (O, ACK, 1001, 5001, TcpState::Established),
    ];
    for (dir, flags, seq, ack, want) in steps {
        assert_eq!(
            ct.track(id, dir, Some(&seg(flags, seq, ack)), 80, 0),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), Some(want));
    }
    let e = ct.entry(id).unwrap();
    assert!(e.assured);
    assert_eq!((e.original, e.reply, e.mark), (t, t.reversed(), 3));
    assert_eq!(e.packets, [2, 1]);
    assert_eq!(e.expires_at, 432_000 * S);
    assert_eq!(ct.lookup(&t.reversed(), S), Some((id, R)));
    ct.check_invariants();
    let teardown = [
        (O, FIN | ACK, 1001, 5001, TcpState::FinWait),
        (R, ACK, 5001, 1002, TcpState::CloseWait),
        (R, FIN | ACK, 5001, 1002, TcpState::LastAck),
        (O, ACK, 1002, 5002, TcpState::TimeWait),
    ];
    for (dir, flags, seq, ack, want) in teardown {
        assert_eq!(
            ct.track(id, dir, Some(&seg(flags, seq, ack)), 60, S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), Some(want));
    }
    assert_eq!(ct.entry(id).unwrap().expires_at, S + 120 * S);
    // A new SYN on TIME_WAIT reopens, as for IPv4.
    assert_eq!(
        ct.track(id, O, Some(&seg(SYN, 9000, 0)), 80, 2 * S),
        Verdict::Reopen
    );
    ct.check_invariants();
    assert_eq!(ct.expire(121 * S, 10), 1);
    assert!(ct.is_empty() && !ct.contains(&t));
}

#[test]
fn udp_unreplied_then_replied_then_assured() {
    let mut ct = table(Config::default());
    let t = tuple(L4Proto::Udp, 5353);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    assert_eq!(ct.entry(id).unwrap().expires_at, 30 * S);
    assert_eq!(ct.track(id, O, None, 100, S), Verdict::Accept);
    assert_eq!(ct.track(id, R, None, 100, 2 * S), Verdict::Accept);
    let e = ct.entry(id).unwrap();
    assert_eq!(e.state, State::Udp { replied: true });
    assert!(!e.assured);
    assert_eq!(e.expires_at, 32 * S);
    assert_eq!(ct.track(id, O, None, 100, 3 * S), Verdict::Accept);
    let e = ct.entry(id).unwrap();
    assert!(e.assured);
    assert_eq!(e.expires_at, 123 * S);
    assert_eq!(e.bytes, [200, 100]);
    ct.check_invariants();
}

/// ICMPv6 echo: `L4Proto::Icmp` (the packet crate has no ICMPv6 variant; in
/// an IPv6 table it can only mean ICMPv6), the identifier as both ports.
#[test]
fn icmpv6_echo_replied_and_expires() {
    let mut ct = table(Config::default());
    let t = Tuple::new_v6(L4Proto::Icmp, ip(0x10), 42, ip(0x20), 42);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    assert_eq!(ct.track(id, O, None, 104, 0), Verdict::Accept);
    assert_eq!(ct.lookup(&t.reversed(), S), Some((id, R)));
    // Another identifier between the same hosts is another flow.
    assert!(!ct.contains(&Tuple {
        src_port: 43,
        dst_port: 43,
        ..t
    }));
    assert_eq!(ct.track(id, R, None, 104, S), Verdict::Accept);
    let e = ct.entry(id).unwrap();
    assert_eq!(e.state, State::Icmp { replied: true });
    assert!(!e.assured);
    assert_eq!(e.expires_at, 31 * S);
    assert_eq!(ct.expire(31 * S - 1, 10), 0);
    assert_eq!(ct.expire(31 * S, 10), 1);
    assert!(ct.is_empty());
}

#[test]
fn nat66_reply_is_found_in_the_reply_direction() {
    let mut ct = table(Config {
        max_nat_per_destination: 1,
        ..Config::default()
    });
    let t = tuple(L4Proto::Tcp, 1);
    // Masqueraded to the host's global address.
    let reply = Tuple::new_v6(L4Proto::Tcp, t.dst, t.dst_port, ip(0xffff), 61000);
    let id = ct.insert(t, reply, 0, 0).unwrap();
    assert_eq!(ct.lookup(&reply, 0), Some((id, R)));
    assert_eq!(ct.lookup(&t, 0), Some((id, O)));
    assert_eq!(ct.tuples(id), Some((t, reply)));
    assert_eq!(ct.peek_route(&reply), Some((t, 0, R)));
    let t2 = tuple(L4Proto::Tcp, 2);
    let reply2 = Tuple {
        dst_port: 61001,
        ..reply
    };
    assert_eq!(
        ct.insert(t2, reply2, 0, 0),
        Err(InsertError::DestinationLimit(ip(1), 1))
    );
    ct.check_invariants();
}

#[test]
fn per_source_limit_counts_ipv6_sources() {
    let mut ct = table(Config {
        max_per_source: 2,
        ..Config::default()
    });
    for port in [1, 2] {
        let t = tuple(L4Proto::Udp, port);
        ct.insert(t, t.reversed(), 0, 0).unwrap();
    }
    let t = tuple(L4Proto::Udp, 3);
    let err = ct.insert(t, t.reversed(), 0, 0).unwrap_err();
    assert_eq!(err, InsertError::SourceLimit(t.src, 2));
    assert_eq!(
        err.to_string(),
        "source fd00::2 has 2 tracked connections, the per-source limit"
    );
    assert_eq!(ct.counters().source_limited, 1);
    // A source differing only in its high half is another source.
    let other = Tuple {
        src: Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 2),
        ..t
    };
    assert!(ct.insert(other, other.reversed(), 0, 0).is_ok());
    assert_eq!((ct.source_count(t.src), ct.source_count(other.src)), (2, 1));
    // Once its entries time out the source may open new ones.
    assert!(ct.insert(t, t.reversed(), 0, 31 * S).is_ok());
    assert_eq!(ct.source_count(t.src), 1);
    ct.check_invariants();
}

#[test]
fn remove_address_forgets_every_flow_of_that_ipv6_address_only() {
    let mut ct = table(Config::default());
    let a = tuple(L4Proto::Udp, 5353);
    let b = tuple(L4Proto::Tcp, 40000);
    // A published-port flow: the container's address only on the reply side (after DNAT).
    let inbound = Tuple::new_v6(L4Proto::Tcp, ip(7), 5000, ip(0xffff), 8080);
    let inbound_reply = Tuple::new_v6(L4Proto::Tcp, a.src, 80, ip(7), 5000);
    // Same low 64 bits as the container, another prefix.
    let other = Tuple {
        src: Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 2),
        ..a
    };
    for (o, r) in [
        (a, a.reversed()),
        (b, b.reversed()),
        (inbound, inbound_reply),
        (other, other.reversed()),
    ] {
        ct.insert(o, r, 0, 0).unwrap();
    }
    assert_eq!(ct.remove_address(a.src), 3);
    assert_eq!(ct.len(), 1);
    assert!(ct.contains(&other));
    assert!(!ct.contains(&inbound) && !ct.contains(&a.reversed()));
    assert_eq!(ct.remove_address(a.src), 0);
    ct.check_invariants();
}

#[test]
fn ipv6_slot_cost_and_ipv4_unchanged() {
    assert_eq!(std::mem::size_of::<Slot<Ipv4Addr>>(), 96);
    assert_eq!(
        Conntrack::entry_memory_bytes(),
        96 + 2 * Index::BYTES_PER_KEY
    );
    assert_eq!(
        Conntrack::<Ipv6Addr>::memory_per_entry(),
        144 + 2 * Index::BYTES_PER_KEY
    );
}
