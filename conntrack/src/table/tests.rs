//! Unit tests of the table (the model test is `model_tests.rs`).

use super::*;
use Direction::{Original as O, Reply as R};
use std::net::Ipv4Addr;

const S: u64 = 1_000_000_000;
const SYN: u8 = TcpSegment::FLAG_SYN;
const ACK: u8 = TcpSegment::FLAG_ACK;
const FIN: u8 = TcpSegment::FLAG_FIN;
const RST: u8 = TcpSegment::FLAG_RST;

fn seg(flags: u8, seq: u32, ack_no: u32) -> TcpSegment {
    TcpSegment::from_flags(flags, seq, ack_no, 0)
}

fn tuple(proto: L4Proto, sport: u16) -> Tuple {
    Tuple::new(
        proto,
        Ipv4Addr::new(172, 17, 0, 2),
        sport,
        Ipv4Addr::new(1, 2, 3, 4),
        80,
    )
}

fn table(max: usize) -> Conntrack {
    Conntrack::new(Config {
        max_entries: max,
        ..Config::default()
    })
}

fn tcp_state(ct: &Conntrack, id: EntryId) -> TcpState {
    match ct.entry(id).map(|e| e.state) {
        Some(State::Tcp(s)) => s,
        other => panic!("not tcp: {other:?}"),
    }
}

/// Client ISN 1000, server ISN 5000; returns the id in ESTABLISHED.
fn handshake(ct: &mut Conntrack, sport: u16, now: u64) -> EntryId {
    let t = tuple(L4Proto::Tcp, sport);
    let id = ct.insert(t, t.reversed(), 0, now).unwrap();
    assert_eq!(
        ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, now),
        Verdict::Accept
    );
    assert_eq!(tcp_state(ct, id), TcpState::SynSent);
    assert_eq!(
        ct.track(id, R, Some(&seg(SYN | ACK, 5000, 1001)), 60, now),
        Verdict::Accept
    );
    assert_eq!(tcp_state(ct, id), TcpState::SynRecv);
    assert!(!ct.entry(id).unwrap().assured);
    assert_eq!(
        ct.track(id, O, Some(&seg(ACK, 1001, 5001)), 52, now),
        Verdict::Accept
    );
    assert_eq!(tcp_state(ct, id), TcpState::Established);
    id
}

#[test]
fn handshake_reaches_established_and_assured() {
    let mut ct = table(16);
    let id = handshake(&mut ct, 1234, 0);
    let e = ct.entry(id).unwrap();
    assert!(e.assured);
    assert_eq!(e.packets, [2, 1]);
    assert_eq!(e.bytes, [112, 60]);
    assert_eq!(e.expires_at, 432_000 * S);
    ct.check_invariants();
}

#[test]
fn client_close_first_reaches_time_wait() {
    let mut ct = table(16);
    let id = handshake(&mut ct, 1, 0);
    let steps = [
        (O, FIN | ACK, 1001, 5001, TcpState::FinWait),
        (R, ACK, 5001, 1002, TcpState::CloseWait),
        (R, FIN | ACK, 5001, 1002, TcpState::LastAck),
        (O, ACK, 1002, 5002, TcpState::TimeWait),
    ];
    for (dir, flags, seq, ack, want) in steps {
        assert_eq!(
            ct.track(id, dir, Some(&seg(flags, seq, ack)), 40, S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), want);
    }
    assert_eq!(ct.entry(id).unwrap().expires_at, S + 120 * S);
    ct.check_invariants();
}

#[test]
fn server_close_first_and_simultaneous_fin_reach_time_wait() {
    let mut ct = table(16);
    let id = handshake(&mut ct, 1, 0);
    assert_eq!(
        ct.track(id, R, Some(&seg(FIN | ACK, 5001, 1001)), 40, S),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id), TcpState::FinWait);
    assert_eq!(ct.entry(id).unwrap().expires_at, S + 120 * S);
    // Client FIN+ACK before any pure ACK: straight to LAST_ACK.
    assert_eq!(
        ct.track(id, O, Some(&seg(FIN | ACK, 1001, 5002)), 40, S),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id), TcpState::LastAck);
    assert_eq!(ct.entry(id).unwrap().expires_at, S + 30 * S);
    assert_eq!(
        ct.track(id, R, Some(&seg(ACK, 5002, 1002)), 40, S),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id), TcpState::TimeWait);
    // A SYN on TIME_WAIT reopens.
    assert_eq!(
        ct.track(id, O, Some(&seg(SYN, 77, 0)), 40, S),
        Verdict::Reopen
    );
    assert_eq!(tcp_state(&ct, id), TcpState::TimeWait);
}

#[test]
fn exact_rst_closes_inexact_is_invalid() {
    let mut ct = table(16);
    let id = handshake(&mut ct, 1, 0);
    let exp = ct.entry(id).unwrap().expires_at;
    assert_eq!(
        ct.track(id, O, Some(&seg(RST, 1_000_000, 0)), 40, S),
        Verdict::Invalid
    );
    assert_eq!(tcp_state(&ct, id), TcpState::Established);
    assert_eq!(
        ct.entry(id).unwrap().expires_at,
        exp,
        "invalid must not refresh"
    );
    assert_eq!(
        ct.entry(id).unwrap().packets,
        [2, 1],
        "invalid must not be counted"
    );
    assert_eq!(ct.counters().invalid, 1);
    assert_eq!(
        ct.track(id, R, Some(&seg(RST | ACK, 5001, 1001)), 40, 2 * S),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id), TcpState::Close);
    assert_eq!(ct.entry(id).unwrap().expires_at, 12 * S);
    assert!(ct.entry(id).unwrap().assured, "assured is sticky");
    ct.check_invariants();
}

#[test]
fn rst_in_syn_sent_must_ack_the_syn() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Tcp, 9);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 0);
    assert_eq!(
        ct.track(id, R, Some(&seg(RST | ACK, 0, 999)), 40, 0),
        Verdict::Invalid
    );
    assert_eq!(
        ct.track(id, R, Some(&seg(RST, 0, 1001)), 40, 0),
        Verdict::Invalid
    );
    assert_eq!(tcp_state(&ct, id), TcpState::SynSent);
    assert_eq!(
        ct.track(id, R, Some(&seg(RST | ACK, 0, 1001)), 40, 0),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id), TcpState::Close);
    assert!(!ct.entry(id).unwrap().assured);
}

#[test]
fn client_rst_in_syn_sent_closes_so_the_retried_syn_reopens() {
    // The server still holds the tuple in TIME_WAIT: it answers the SYN with a challenge
    // ACK for the old connection, the client resets with that ACK's number as sequence.
    let mut ct = table(16);
    let t = tuple(L4Proto::Tcp, 9);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 0);
    assert_eq!(
        ct.track(id, R, Some(&seg(ACK, 777_000, 555_000)), 40, 0),
        Verdict::Accept,
        "the challenge ACK is let through untracked"
    );
    assert_eq!(
        ct.track(id, O, Some(&seg(RST, 555_000, 0)), 40, S),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id), TcpState::Close);
    assert_eq!(
        ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 2 * S),
        Verdict::Reopen
    );
}

#[test]
fn blind_rst_in_syn_sent_does_not_close() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Tcp, 9);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 0);
    ct.track(id, O, Some(&seg(RST, 123_456, 0)), 40, 0);
    assert_eq!(
        tcp_state(&ct, id),
        TcpState::SynSent,
        "a guessed RST is ignored"
    );
    ct.track(id, O, Some(&seg(RST, 1001, 0)), 40, 0);
    assert_eq!(
        tcp_state(&ct, id),
        TcpState::Close,
        "in sequence with the SYN"
    );
}

#[test]
fn syn_on_established_then_challenge_ack_rst_and_reopen() {
    let mut ct = table(16);
    let id = handshake(&mut ct, 1, 0);
    ct.track(
        id,
        O,
        Some(&TcpSegment::from_flags(ACK, 1001, 5001, 100)),
        140,
        0,
    );
    let exp = ct.entry(id).unwrap().expires_at;
    // Client restarted: new SYN with a fresh ISN passes, state kept.
    assert_eq!(
        ct.track(id, O, Some(&seg(SYN, 90_000, 0)), 60, S),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id), TcpState::Established);
    assert_eq!(
        ct.entry(id).unwrap().expires_at,
        exp,
        "ignored SYN does not refresh"
    );
    assert_eq!(ct.counters().invalid, 0);
    // Server's challenge ACK acknowledges the old stream.
    assert_eq!(
        ct.track(id, R, Some(&seg(ACK, 5001, 1101)), 40, S),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id), TcpState::Established);
    // Client answers the challenge ACK with RST seq = its ack number.
    assert_eq!(
        ct.track(id, O, Some(&seg(RST, 1101, 0)), 40, S),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id), TcpState::Close);
    // Retransmitted SYN: caller must start over.
    assert_eq!(
        ct.track(id, O, Some(&seg(SYN, 90_000, 0)), 60, 2 * S),
        Verdict::Reopen
    );
    assert!(ct.remove(id));
    let t = tuple(L4Proto::Tcp, 1);
    let id2 = ct.insert(t, t.reversed(), 0, 2 * S).unwrap();
    assert_ne!(id2, id);
    assert_eq!(
        ct.track(id2, O, Some(&seg(SYN, 90_000, 0)), 60, 2 * S),
        Verdict::Accept
    );
    assert_eq!(tcp_state(&ct, id2), TcpState::SynSent);
    assert!(ct.entry(id).is_none(), "old id is stale");
    ct.check_invariants();
}

#[test]
fn invalid_flags_and_missing_segment_are_invalid() {
    let mut ct = table(16);
    let id = handshake(&mut ct, 1, 0);
    assert_eq!(
        ct.track(id, O, Some(&seg(SYN | FIN, 1001, 0)), 40, 0),
        Verdict::Invalid
    );
    assert_eq!(
        ct.track(id, O, Some(&seg(SYN | RST, 1001, 0)), 40, 0),
        Verdict::Invalid
    );
    assert_eq!(
        ct.track(id, O, Some(&seg(0, 1001, 0)), 40, 0),
        Verdict::Invalid
    );
    assert_eq!(ct.track(id, O, None, 40, 0), Verdict::Invalid);
    assert_eq!(ct.counters().invalid, 4);
    assert_eq!(tcp_state(&ct, id), TcpState::Established);
    ct.count_invalid();
    assert_eq!(ct.counters().invalid, 5);
}

#[test]
fn udp_unreplied_then_replied_then_assured() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Udp, 5353);
    let id = ct.insert(t, t.reversed(), 7, 0).unwrap();
    assert_eq!(ct.entry(id).unwrap().expires_at, 30 * S);
    ct.track(id, O, None, 100, S);
    assert_eq!(ct.entry(id).unwrap().expires_at, 31 * S);
    ct.track(id, R, None, 100, 2 * S);
    let e = ct.entry(id).unwrap();
    assert_eq!(e.state, State::Udp { replied: true });
    assert!(!e.assured);
    assert_eq!(e.expires_at, 32 * S);
    ct.track(id, O, None, 100, 3 * S);
    let e = ct.entry(id).unwrap();
    assert!(e.assured);
    assert_eq!(e.expires_at, 123 * S);
    assert_eq!(e.packets, [2, 1]);
    assert_eq!(e.mark, 7);
    ct.check_invariants();
}

#[test]
fn icmp_replied_on_echo_reply_and_expires() {
    let mut ct = table(16);
    let t = Tuple::new(
        L4Proto::Icmp,
        Ipv4Addr::new(10, 0, 0, 1),
        42,
        Ipv4Addr::new(8, 8, 8, 8),
        42,
    );
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    ct.track(id, O, None, 84, 0);
    assert_eq!(ct.lookup(&t.reversed(), S), Some((id, R)));
    ct.track(id, R, None, 84, S);
    let e = ct.entry(id).unwrap();
    assert_eq!(e.state, State::Icmp { replied: true });
    assert!(!e.assured);
    assert_eq!(e.expires_at, 31 * S);
    assert_eq!(ct.expire(31 * S - 1, 10), 0);
    assert_eq!(ct.expire(31 * S, 10), 1);
    assert!(ct.is_empty());
    assert!(!ct.contains(&t));
}

#[test]
fn lookup_both_directions_and_with_nat_reply() {
    let mut ct = table(16);
    let orig = tuple(L4Proto::Tcp, 1234);
    let reply = Tuple::new(
        L4Proto::Tcp,
        orig.dst,
        80,
        Ipv4Addr::new(203, 0, 113, 2),
        40000,
    );
    let id = ct.insert(orig, reply, 0, 0).unwrap();
    assert_eq!(ct.lookup(&orig, 0), Some((id, O)));
    assert_eq!(ct.lookup(&reply, 0), Some((id, R)));
    assert_eq!(ct.lookup(&orig.reversed(), 0), None);
    assert!(ct.contains(&reply));
    assert_eq!(ct.counters().found, 2);
    assert_eq!(
        ct.insert(orig, orig.reversed(), 0, 0),
        Err(InsertError::Exists)
    );
    assert_eq!(
        ct.insert(tuple(L4Proto::Tcp, 9), reply, 0, 0),
        Err(InsertError::Exists)
    );
    assert_eq!(ct.len(), 1);
    assert!(ct.remove(id));
    assert!(!ct.remove(id));
    assert!(!ct.contains(&orig) && !ct.contains(&reply));
    ct.check_invariants();
}

#[test]
fn self_reversed_tuple_is_stored_once() {
    let mut ct = table(4);
    let a = Ipv4Addr::new(127, 0, 0, 1);
    let t = Tuple::new(L4Proto::Icmp, a, 7, a, 7);
    assert_eq!(t.reversed(), t);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    assert_eq!(ct.lookup(&t, 0), Some((id, O)));
    ct.check_invariants();
    assert!(ct.remove(id));
    assert!(ct.is_empty());
    ct.check_invariants();
}

#[test]
fn lookup_lazily_removes_expired() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Udp, 1);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    assert!(ct.lookup(&t, 30 * S - 1).is_some());
    assert_eq!(ct.lookup(&t.reversed(), 30 * S), None);
    assert_eq!(ct.len(), 0);
    assert_eq!(ct.counters().expired, 1);
    assert!(ct.entry(id).is_none());
    assert_eq!(ct.track(id, O, None, 1, 30 * S), Verdict::Invalid);
    ct.check_invariants();
}

#[test]
fn insert_reclaims_expired_colliding_key() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Udp, 1);
    ct.insert(t, t.reversed(), 0, 0).unwrap();
    ct.expire(100 * S, 0); // moves the clock only
    assert!(!ct.contains(&t), "expired entry is not 'taken'");
    assert_eq!(ct.len(), 1);
    assert!(ct.insert(t, t.reversed(), 0, 100 * S).is_ok());
    assert_eq!(ct.len(), 1);
    assert_eq!(ct.counters().expired, 1);
    ct.check_invariants();
}

#[test]
fn expiry_pops_in_order_and_respects_budget() {
    let mut ct = table(64);
    let mut ids = Vec::new();
    for i in 0..10u16 {
        let t = tuple(L4Proto::Udp, i);
        ids.push(ct.insert(t, t.reversed(), 0, u64::from(i) * S).unwrap());
    }
    // Refresh #0 at t=9s: it moves behind all others.
    ct.track(ids[0], O, None, 1, 9 * S);
    assert_eq!(ct.expire(35 * S, 3), 3);
    let live: Vec<_> = ct.iter().map(|(id, _)| id).collect();
    // #4 and #5 are expired but not yet reclaimed: stored, not listed.
    assert_eq!(ct.len(), 7);
    assert_eq!(live, vec![ids[0], ids[6], ids[7], ids[8], ids[9]]);
    assert_eq!(ct.expire(35 * S, 100), 2);
    assert_eq!(ct.len(), 5);
    assert_eq!(ct.expire(u64::MAX, 100), 5);
    assert_eq!(ct.counters().expired, 10);
    ct.check_invariants();
}

#[test]
fn clock_going_backwards_does_not_underflow_or_expire_early() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Udp, 1);
    let id = ct.insert(t, t.reversed(), 0, 100 * S).unwrap();
    // Backwards jump: time stands still at 100 s.
    ct.track(id, O, None, 1, 5 * S);
    let e = ct.entry(id).unwrap();
    assert_eq!(e.last_seen, 100 * S);
    assert_eq!(e.expires_at, 130 * S);
    assert_eq!(ct.expire(0, 10), 0);
    assert!(ct.lookup(&t, 0).is_some());
    assert_eq!(ct.now(), 100 * S);
    // Saturation at the top of the clock.
    let u = tuple(L4Proto::Udp, 2);
    let id2 = ct.insert(u, u.reversed(), 0, u64::MAX - 1).unwrap();
    assert_eq!(ct.entry(id2).unwrap().expires_at, u64::MAX);
    ct.check_invariants();
}

#[test]
fn early_drop_takes_oldest_unassured_never_assured() {
    let mut ct = table(3);
    let assured = handshake(&mut ct, 1, 0);
    let u1 = tuple(L4Proto::Udp, 10);
    let u2 = tuple(L4Proto::Udp, 11);
    let a = ct.insert(u1, u1.reversed(), 0, S).unwrap();
    let b = ct.insert(u2, u2.reversed(), 0, 2 * S).unwrap();
    // Refresh `a` so `b` becomes the oldest.
    ct.track(a, O, None, 1, 3 * S);
    let u3 = tuple(L4Proto::Udp, 12);
    let c = ct.insert(u3, u3.reversed(), 0, 4 * S).unwrap();
    assert!(ct.entry(b).is_none(), "oldest unassured dropped");
    assert!(ct.entry(a).is_some() && ct.entry(c).is_some());
    assert!(ct.entry(assured).is_some());
    assert_eq!(ct.counters().early_dropped, 1);
    assert_eq!(ct.len(), 3);
    ct.check_invariants();
}

#[test]
fn per_source_limit_refuses_only_that_source() {
    let mut ct = Conntrack::new(Config {
        max_per_source: 2,
        ..Config::default()
    });
    let a = ct.insert(
        tuple(L4Proto::Udp, 1),
        tuple(L4Proto::Udp, 1).reversed(),
        0,
        0,
    );
    let b = ct.insert(
        tuple(L4Proto::Udp, 2),
        tuple(L4Proto::Udp, 2).reversed(),
        0,
        0,
    );
    assert!(a.is_ok() && b.is_ok());
    let t = tuple(L4Proto::Udp, 3);
    let err = ct.insert(t, t.reversed(), 0, 0).unwrap_err();
    assert_eq!(err, InsertError::SourceLimit(t.src, 2));
    assert_eq!(ct.counters().source_limited, 1);
    // Another source is not affected.
    let other = Tuple {
        src: Ipv4Addr::new(172, 17, 0, 3),
        ..t
    };
    assert!(ct.insert(other, other.reversed(), 0, 0).is_ok());
    assert_eq!(ct.source_count(t.src), 2);
    // Once the first source's entries time out, it may open new ones.
    assert!(ct.insert(t, t.reversed(), 0, 31 * S).is_ok());
    assert_eq!(ct.source_count(t.src), 1);
    ct.check_invariants();
    ct.flush();
    assert_eq!(ct.source_count(t.src), 0);
    ct.check_invariants();
}

#[test]
fn per_destination_limit_counts_translated_entries_only() {
    let mut ct = Conntrack::new(Config {
        max_nat_per_destination: 1,
        ..Config::default()
    });
    let masq = |t: Tuple, port: u16| Tuple {
        src: t.dst,
        src_port: t.dst_port,
        dst: Ipv4Addr::new(192, 0, 2, 1),
        dst_port: port,
        proto: t.proto,
    };
    let (t1, t2) = (tuple(L4Proto::Tcp, 1), tuple(L4Proto::Tcp, 2));
    // Untranslated entries to the destination do not count.
    let t0 = tuple(L4Proto::Tcp, 9);
    ct.insert(t0, t0.reversed(), 0, 0).unwrap();
    let id = ct.insert(t1, masq(t1, 40000), 0, 0).unwrap();
    let err = ct.insert(t2, masq(t2, 40001), 0, 0).unwrap_err();
    assert_eq!(err, InsertError::DestinationLimit(t1.dst, 1));
    assert_eq!(ct.counters().destination_limited, 1);
    ct.check_invariants();
    assert!(ct.remove(id));
    assert!(ct.insert(t2, masq(t2, 40001), 0, 0).is_ok());
    ct.check_invariants();
}

#[test]
fn table_full_when_only_assured_remain() {
    let mut ct = table(2);
    let a = handshake(&mut ct, 1, 0);
    let b = handshake(&mut ct, 2, 0);
    let u = tuple(L4Proto::Udp, 10);
    let err = ct.insert(u, u.reversed(), 0, S).unwrap_err();
    assert_eq!(err, InsertError::TableFull { max_entries: 2 });
    assert!(err.to_string().contains("conntrack table full (2 entries)"));
    assert_eq!(ct.counters().dropped, 1);
    assert!(ct.entry(a).is_some() && ct.entry(b).is_some());
    // Once one expires, the insert reclaims it instead.
    let later = 432_000 * S + 1;
    assert!(ct.insert(u, u.reversed(), 0, later).is_ok());
    assert_eq!(ct.counters().expired, 2);
    ct.check_invariants();
}

#[test]
fn zero_capacity_refuses_without_panicking() {
    let mut ct = table(0);
    let u = tuple(L4Proto::Udp, 1);
    assert!(matches!(
        ct.insert(u, u.reversed(), 0, 0),
        Err(InsertError::TableFull { .. })
    ));
    assert!(ct.is_empty());
}

#[test]
fn flush_empties_and_stales_ids() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Udp, 1);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    ct.flush();
    assert!(ct.is_empty());
    assert!(ct.entry(id).is_none());
    assert!(!ct.contains(&t));
    let id2 = ct.insert(t, t.reversed(), 0, 0).unwrap();
    assert_ne!(id, id2);
    assert_eq!(ct.counters().new, 2);
    ct.check_invariants();
}

#[test]
fn set_mark_and_memory_estimate() {
    let mut ct = table(4);
    let t = tuple(L4Proto::Udp, 1);
    let id = ct.insert(t, t.reversed(), 1, 0).unwrap();
    assert!(ct.set_mark(id, 9));
    assert_eq!(ct.entry(id).unwrap().mark, 9);
    assert_eq!(ct.mark(id), Some(9));
    assert!(ct.remove(id));
    assert_eq!(ct.mark(id), None, "stale id");
    assert!(!ct.set_mark(id, 1));
    let b = Conntrack::entry_memory_bytes();
    assert!(b > std::mem::size_of::<Slot<Ipv4Addr>>() && b <= 128, "{b}");
}

#[test]
fn track_live_skips_stale_and_expired_ids_untouched() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Udp, 1);
    let id = ct.insert(t, t.reversed(), 3, 10 * S).unwrap();
    ct.track(id, O, None, 100, 10 * S);
    let before = ct.counters();
    // Expired at `now` (30 s timeout): no counter, no clock, nothing reclaimed.
    assert_eq!(ct.track_live(id, O, None, 100, 40 * S), None);
    assert_eq!(ct.counters(), before);
    assert_eq!(ct.now(), 10 * S);
    assert_eq!(ct.len(), 1);
    assert_eq!(ct.entry(id).unwrap().packets, [1, 0]);
    // ... and judged at the table clock when `now` lags behind it.
    let u = tuple(L4Proto::Udp, 2);
    let other = ct.insert(u, u.reversed(), 0, 40 * S).unwrap();
    assert_eq!(ct.track_live(id, O, None, 100, 0), None);
    assert_eq!(ct.counters().found, before.found);
    // The fallback lookup reclaims and counts it.
    assert_eq!(ct.lookup(&t, 40 * S), None);
    assert_eq!(ct.counters().expired, 1);
    // Stale id: None, and unlike `track` it counts no invalid packet.
    let before = ct.counters();
    assert_eq!(ct.track_live(id, O, None, 100, 40 * S), None);
    assert_eq!(ct.counters(), before);
    assert_eq!(ct.track(id, O, None, 100, 40 * S), Verdict::Invalid);
    assert_eq!(ct.counters().invalid, before.invalid + 1);
    assert!(ct.entry(other).is_some());
    ct.check_invariants();
}

#[test]
fn track_live_counts_found_and_tracks_like_lookup_then_track() {
    let mut a = table(16);
    let mut b = table(16);
    let t = tuple(L4Proto::Tcp, 7);
    let ia = a.insert(t, t.reversed(), 0, 0).unwrap();
    let ib = b.insert(t, t.reversed(), 0, 0).unwrap();
    let packets = [
        (O, SYN, 1000, 0, S),
        (O, SYN, 1000, 0, 2 * S), // retransmission: no refresh
        (R, SYN | ACK, 5000, 1001, 3 * S),
        (O, SYN | FIN, 1001, 0, 3 * S), // invalid
        (O, ACK, 1001, 5001, 4 * S),
        (R, RST, 5001, 0, 5 * S),
        (O, SYN, 7000, 0, 6 * S), // reopen
    ];
    for (dir, flags, seq, ack_no, now) in packets {
        let s = seg(flags, seq, ack_no);
        let want = a
            .lookup(&t, now)
            .map(|(id, _)| a.track(id, dir, Some(&s), 60, now));
        let got = b.track_live(ib, dir, Some(&s), 60, now);
        assert_eq!(got, want);
        assert_eq!(a.counters(), b.counters());
        assert_eq!(a.entry(ia), b.entry(ib));
        b.check_invariants();
    }
    assert_eq!(tcp_state(&b, ib), TcpState::Close);
    assert_eq!(b.counters().found, 7);
    assert_eq!(b.counters().invalid, 1);
}

#[test]
fn counters_carry_past_u32_and_saturate_like_u64() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Udp, 1);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    // Over 4 GiB in one packet (an offloaded super-frame cannot be that big, but `len` is a
    // usize) and many packets: the low halves carry into the `wide` side map.
    ct.track(id, O, None, 5_000_000_000, 0);
    ct.track(id, O, None, 1, 0);
    let e = ct.entry(id).unwrap();
    assert_eq!((e.packets, e.bytes), ([2, 0], [5_000_000_001, 0]));
    if let Some(s) = slot_in_mut(&mut ct.chunks, id.idx) {
        s.packets[1] = u32::MAX - 1;
    }
    for _ in 0..3 {
        ct.track(id, R, None, 10, 0);
    }
    let e = ct.entry(id).unwrap();
    assert_eq!(e.packets, [2, u64::from(u32::MAX) + 2]);
    assert_eq!(e.bytes, [5_000_000_001, 30]);
    ct.check_invariants();
    ct.track(id, O, None, usize::MAX, 0);
    ct.track(id, O, None, 1, 0);
    assert_eq!(ct.entry(id).unwrap().bytes[0], u64::MAX, "saturates");
    ct.check_invariants();
    assert!(ct.remove(id));
    assert!(ct.wide.is_empty());
    ct.check_invariants();
}

#[test]
fn last_seen_of_a_packet_that_did_not_refresh() {
    let mut ct = table(16);
    let t = tuple(L4Proto::Tcp, 1);
    let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
    ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, S);
    // A retransmitted SYN is counted but does not refresh the timeout.
    ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 4 * S);
    let e = ct.entry(id).unwrap();
    assert_eq!((e.created, e.last_seen, e.expires_at), (0, 4 * S, 121 * S));
    assert_eq!(ct.late.len(), 1);
    ct.check_invariants();
    ct.track(id, R, Some(&seg(SYN | ACK, 5000, 1001)), 60, 5 * S);
    let e = ct.entry(id).unwrap();
    assert_eq!((e.last_seen, e.expires_at), (5 * S, 65 * S));
    assert!(ct.late.is_empty());
    ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 6 * S);
    assert_eq!(ct.entry(id).unwrap().last_seen, 6 * S);
    ct.flush();
    assert!(ct.late.is_empty());
    ct.check_invariants();
}

#[test]
fn slab_grows_by_whole_chunks_and_ids_stay_dense() {
    let mut ct = table(3 * CHUNK);
    let ids: Vec<EntryId> = (0..(2 * CHUNK + 1) as u16)
        .map(|i| {
            let t = tuple(L4Proto::Udp, i);
            ct.insert(t, t.reversed(), u32::from(i), 0).unwrap()
        })
        .collect();
    assert_eq!(ct.chunks.len(), 3);
    assert!(
        ids.iter()
            .enumerate()
            .all(|(i, id)| id.index() as usize == i)
    );
    assert_eq!(ct.iter().map(|(id, _)| id).collect::<Vec<_>>(), ids);
    let last = ids[2 * CHUNK];
    assert_eq!(ct.mark(last), Some(2 * CHUNK as u32));
    ct.check_invariants();
    ct.flush();
    ct.check_invariants();
    let t = tuple(L4Proto::Udp, 9);
    assert_eq!(ct.insert(t, t.reversed(), 0, 0).unwrap().index(), 0);
}

#[test]
fn tuples_and_peek_route_agree_with_the_entry() {
    let mut ct = table(8);
    let t = tuple(L4Proto::Udp, 1);
    let mut reply = t.reversed();
    reply.dst_port = 40_000;
    let id = ct.insert(t, reply, 7, 0).unwrap();
    let e = ct.entry(id).unwrap();
    assert_eq!(ct.tuples(id), Some((e.original, e.reply)));
    assert_eq!(
        ct.peek_route(&t),
        Some((e.original, 7, Direction::Original))
    );
    assert_eq!(
        ct.peek_route(&reply),
        Some((e.original, 7, Direction::Reply))
    );
    assert_eq!(ct.peek_route(&t.reversed()), None);
    ct.remove(id);
    assert_eq!(ct.tuples(id), None);
}

#[test]
fn remove_address_forgets_every_flow_of_that_address_only() {
    let mut ct = table(16);
    let a = tuple(L4Proto::Udp, 5353);
    let b = tuple(L4Proto::Tcp, 40000);
    // A published-port flow: the container's address only on the reply side (after DNAT).
    let inbound = Tuple::new(
        L4Proto::Tcp,
        Ipv4Addr::new(203, 0, 113, 1),
        5000,
        Ipv4Addr::new(203, 0, 113, 2),
        8080,
    );
    let inbound_reply = Tuple::new(
        L4Proto::Tcp,
        Ipv4Addr::new(172, 17, 0, 2),
        80,
        Ipv4Addr::new(203, 0, 113, 1),
        5000,
    );
    let other = Tuple::new(
        L4Proto::Udp,
        Ipv4Addr::new(172, 17, 0, 3),
        53,
        Ipv4Addr::new(1, 2, 3, 4),
        53,
    );
    for (o, r) in [
        (a, a.reversed()),
        (b, b.reversed()),
        (inbound, inbound_reply),
        (other, other.reversed()),
    ] {
        ct.insert(o, r, 0, 0).unwrap();
    }
    assert_eq!(ct.remove_address(Ipv4Addr::new(172, 17, 0, 2)), 3);
    assert_eq!(ct.len(), 1);
    assert!(ct.contains(&other));
    assert!(!ct.contains(&inbound) && !ct.contains(&a.reversed()));
    assert_eq!(ct.remove_address(Ipv4Addr::new(172, 17, 0, 2)), 0);
    ct.check_invariants();
}
