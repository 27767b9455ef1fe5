//! Conntrack table micro-benchmarks: lookup hit/miss and insert+remove at
//! 1k, 100k and 1M entries. Keys are visited with a large prime stride so
//! consecutive lookups land on unrelated slots and buckets (no cache-warm
//! sequential walk).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use conntrack::{Config, Conntrack, Tuple};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use packet::L4Proto;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
/// Prime, coprime with every size above: a stride visiting all keys.
const STRIDE: usize = 7_919;

/// Distinct UDP originals: 16 million source address/port combinations.
fn key(i: usize, dst_port: u16) -> Tuple {
    let host = u32::try_from(i >> 8).unwrap_or(u32::MAX);
    let src = Ipv4Addr::from_bits(0x0a00_0000 | (host & 0x00ff_ffff));
    let src_port = 1024 + (i & 0xff) as u16;
    Tuple::new(
        L4Proto::Udp,
        src,
        src_port,
        Ipv4Addr::new(1, 1, 1, 1),
        dst_port,
    )
}

fn filled(n: usize) -> (Conntrack, Vec<Tuple>) {
    let mut ct = Conntrack::new(Config {
        max_entries: n + 16,
        ..Config::default()
    });
    let keys: Vec<Tuple> = (0..n).map(|i| key(i, 53)).collect();
    for k in &keys {
        ct.insert(*k, k.reversed(), 0, 1)
            .expect("bench table has room");
    }
    (ct, keys)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("conntrack");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let (mut ct, keys) = filled(n);
        let misses: Vec<Tuple> = (0..n).map(|i| key(i, 54)).collect();

        group.bench_with_input(BenchmarkId::new("lookup_hit", n), &n, |b, &n| {
            let mut i = 0;
            b.iter(|| {
                i = (i + STRIDE) % n;
                black_box(ct.lookup(black_box(&keys[i]), 2))
            });
        });
        group.bench_with_input(BenchmarkId::new("lookup_miss", n), &n, |b, &n| {
            let mut i = 0;
            b.iter(|| {
                i = (i + STRIDE) % n;
                black_box(ct.lookup(black_box(&misses[i]), 2))
            });
        });
        group.bench_with_input(BenchmarkId::new("insert_remove", n), &n, |b, &n| {
            let mut i = 0;
            b.iter(|| {
                i = (i + STRIDE) % n;
                let k = misses[i];
                let id = ct.insert(k, k.reversed(), 0, 2).expect("room for one more");
                black_box(ct.remove(id))
            });
        });
        assert_eq!(ct.len(), n, "benches must leave the table as built");
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
