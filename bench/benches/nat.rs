//! NAT micro-benchmarks: an in-place source rewrite of a 64-byte TCP frame (address + port with
//! RFC 1624 incremental checksum updates), an ICMP error translation, and the checksum work of
//! a source-address change done from scratch versus incrementally.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nat::{Endpoint, rewrite};
use packet::checksum::{internet_checksum, l4_checksum, update_addr};
use packet::{Ipv4Addr, MacAddr, classify};
use testkit::frames as build;

const INT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

/// 14 + 20 + 20 + 10 = 64 bytes.
fn tcp64() -> Vec<u8> {
    build::tcp(
        MAC_A,
        MAC_B,
        INT,
        REMOTE,
        40000,
        443,
        1,
        1,
        0x10,
        b"0123456789",
    )
}

fn bench_rewrite(c: &mut Criterion) {
    let mut frame = tcp64();
    assert_eq!(frame.len(), 64);
    let cl = classify(&frame).expect("built frame classifies");
    let dst = Endpoint::new(REMOTE, 443);
    // Alternate between two sources so that every call changes the fields (a rewrite to the
    // current values touches nothing and would flatter the figure).
    let sources = [Endpoint::new(EXT, 61000), Endpoint::new(INT, 40000)];
    let mut i = 0usize;
    c.bench_function("nat/rewrite_tcp64_snat", |b| {
        b.iter(|| {
            i ^= 1;
            rewrite(black_box(&mut frame), &cl, sources[i], dst).expect("rewrite");
        })
    });

    let sent = build::udp(MAC_A, MAC_B, EXT, REMOTE, 40000, 53, b"query");
    let mut err = build::icmp_error(MAC_A, MAC_B, REMOTE, EXT, 3, 3, [0; 4], &sent[14..42]);
    let cl = classify(&err).expect("built frame classifies");
    let inner_srcs = [Endpoint::new(INT, 5353), Endpoint::new(EXT, 40000)];
    let outer_dsts = [INT, EXT];
    let mut j = 0usize;
    c.bench_function("nat/rewrite_icmp_error_udp", |b| {
        b.iter(|| {
            let inner = nat::icmp_error_inner(black_box(&err), &cl).expect("quote parses");
            j ^= 1;
            nat::rewrite_icmp_error(
                &mut err,
                &cl,
                &inner,
                REMOTE,
                outer_dsts[j],
                inner_srcs[j],
                inner.dst,
            )
            .expect("translate");
        })
    });
}

fn bench_checksum(c: &mut Criterion) {
    let frame = tcp64();
    let mut g = c.benchmark_group("nat/checksum_after_src_change");
    // From scratch: the IPv4 header and the TCP segment under its pseudo-header.
    g.bench_function("full_recompute", |b| {
        b.iter(|| {
            let f = black_box(&frame[..]);
            let ip = internet_checksum(&f[14..34]);
            let tcp = l4_checksum(EXT, REMOTE, 6, &f[34..64]);
            (ip, tcp)
        })
    });
    // Incremental (RFC 1624): both checksums from their old values and the address change.
    g.bench_function("incremental", |b| {
        b.iter(|| {
            let f = black_box(&frame[..]);
            let ip_ck = u16::from_be_bytes([f[24], f[25]]);
            let tcp_ck = u16::from_be_bytes([f[50], f[51]]);
            let old = black_box(INT);
            (update_addr(ip_ck, old, EXT), update_addr(tcp_ck, old, EXT))
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_rewrite, bench_checksum
}
criterion_main!(benches);
