//! Heap bytes per tracked connection, measured with a counting global allocator (not
//! `size_of` arithmetic): everything the table allocates (slab, key index, side maps)
//! divided by the live entries, at every insert of a growing table, so the worst point of
//! growth (just after the slab or the index grew) is what is checked. IPv4 within 128 bytes,
//! IPv6 (48 address bytes more per slot) within 176.

use std::alloc::System;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use cap::Cap;
use conntrack::{Address, Config, Conntrack, Direction, TcpSegment, Tuple, Verdict};
use packet::L4Proto;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// The counter is global: tests that measure take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// The target, including the index.
const MAX_BYTES_PER_ENTRY: f64 = 128.0;
/// An IPv6 slot is 48 bytes larger (two tuples of two 16-byte addresses).
const MAX_BYTES_PER_IPV6_ENTRY: f64 = MAX_BYTES_PER_ENTRY + 48.0;

/// Masqueraded TCP flow `i`: distinct original and reply tuples (two index keys).
fn flow(i: usize) -> (Tuple, Tuple) {
    let host = u32::try_from(i >> 10).unwrap_or(u32::MAX);
    let src = Ipv4Addr::from_bits(0x0a00_0000 | (host & 0x00ff_ffff));
    let src_port = 1024 + (i & 0x3ff) as u16;
    let dst = Ipv4Addr::new(93, 184, 216, 34);
    let original = Tuple::new(L4Proto::Tcp, src, src_port, dst, 443);
    let nat_port = (i % 60_000) as u16 + 1024;
    let nat_ip = Ipv4Addr::from_bits(0xcb00_7100 | (i / 60_000) as u32);
    let reply = Tuple::new(L4Proto::Tcp, dst, 443, nat_ip, nat_port);
    (original, reply)
}

/// [`flow`] over IPv6: the IPv4 addresses mapped into `fd00::/64` and `2001:db8::/64`.
fn flow_v6(i: usize) -> (Tuple<Ipv6Addr>, Tuple<Ipv6Addr>) {
    let v6 = |a: Ipv4Addr, prefix: u128| Ipv6Addr::from_bits(prefix | u128::from(a.to_bits()));
    let (inside, outside) = (0xfd00_u128 << 112, 0x2001_0db8_u128 << 96);
    let (o, r) = flow(i);
    let original = Tuple::new_v6(
        o.proto,
        v6(o.src, inside),
        o.src_port,
        v6(o.dst, outside),
        o.dst_port,
    );
    let reply = Tuple::new_v6(
        r.proto,
        v6(r.src, outside),
        r.src_port,
        v6(r.dst, outside),
        r.dst_port,
    );
    (original, reply)
}

/// Inserts `n` established flows; returns (worst bytes per entry over counts `from..=n`,
/// the count where it was reached, bytes per entry at `n`).
fn measure<A: Address>(
    n: usize,
    from: usize,
    flow: fn(usize) -> (Tuple<A>, Tuple<A>),
) -> (f64, usize, f64) {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = ALLOC.allocated();
    let mut ct = Conntrack::<A>::with_config(Config {
        max_entries: n,
        ..Config::default()
    });
    let (mut worst, mut worst_at) = (0.0f64, 0);
    let (o, r) = (Direction::Original, Direction::Reply);
    for i in 0..n {
        let (orig, reply) = flow(i);
        let id = ct.insert(orig, reply, 7, 1).expect("room");
        let syn = TcpSegment::from_flags(TcpSegment::FLAG_SYN, 1000, 0, 0);
        let synack =
            TcpSegment::from_flags(TcpSegment::FLAG_SYN | TcpSegment::FLAG_ACK, 5000, 1001, 0);
        let ack = TcpSegment::from_flags(TcpSegment::FLAG_ACK, 1001, 5001, 0);
        assert_eq!(ct.track(id, o, Some(&syn), 60, 1), Verdict::Accept);
        assert_eq!(ct.track(id, r, Some(&synack), 60, 1), Verdict::Accept);
        assert_eq!(ct.track(id, o, Some(&ack), 52, 1), Verdict::Accept);
        let count = i + 1;
        if count >= from {
            let per = (ALLOC.allocated() - base) as f64 / count as f64;
            if per > worst {
                (worst, worst_at) = (per, count);
            }
        }
    }
    assert_eq!(ct.len(), n);
    let at_end = (ALLOC.allocated() - base) as f64 / n as f64;
    drop(ct);
    (worst, worst_at, at_end)
}

/// Measures up to `n` entries and asserts the worst point stays within the budget.
fn assert_within_budget(n: usize, label: &str) {
    let (worst, at, end) = measure(n, 10_000, flow);
    println!("{label}: worst {worst:.1} B/entry at {at} entries, {end:.1} at {label}");
    assert!(
        worst <= MAX_BYTES_PER_ENTRY,
        "{worst:.1} bytes per entry at {at} entries"
    );
}

#[test]
fn at_most_128_bytes_per_connection_up_to_200k() {
    assert_within_budget(200_000, "200k");
}

#[test]
#[ignore = "a few seconds in debug: cargo test -p conntrack --test memory -- --ignored"]
fn at_most_128_bytes_per_connection_up_to_1m() {
    assert_within_budget(1_000_000, "1M");
}

#[test]
fn ipv6_at_most_176_bytes_per_connection_up_to_200k() {
    let (worst, at, end) = measure(200_000, 10_000, flow_v6);
    println!("ipv6 200k: worst {worst:.1} B/entry at {at} entries, {end:.1} at 200k");
    assert!(
        worst <= MAX_BYTES_PER_IPV6_ENTRY,
        "{worst:.1} bytes per IPv6 entry at {at} entries"
    );
}
