//! What a live capture (`vswitch capture`) adds to the packet loop, per 64-byte frame, beside
//! the pipeline's own cost measured in the same run: L2 forwarding of batches of 64 frames
//! between two learned ports (as `pipeline/l2_forward_64B/2`), each frame offered to the taps
//! as the loop does (on ingress as read, on egress as written).
//!
//! - `none`: no capture (the loop tests `is_empty` twice per frame);
//! - `other_port`: a capture on a third port, so every frame is looked at and none taken;
//! - `all`: a capture on both ports, every frame copied into the queue twice (in and out),
//!   the queue drained after each batch (the reader's side, on another thread in the daemon);
//! - `all_filtered`: `all` with a tcpdump filter that every frame passes (`udp`), run by
//!   libpcap's BPF interpreter. Skipped without libpcap.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use datapath::capture::{Direction, Selection, Tap, TapReader, Taps};
use datapath::io::bpf::Filter;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use switch::{NANOS_PER_SEC, Packet, PortId};
use vswitch_bench::l2_learned;

const BATCH: usize = 64;
const FRAME_LEN: usize = 64;

fn capture(c: &mut Criterion) {
    let mut group = c.benchmark_group("capture");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH as u64));
    let both = Selection::Ports(vec![PortId(0), PortId(1)]);
    let filter = Filter::compile("udp", 65535).ok().map(Arc::new);
    let cases: Vec<(&str, Option<(Tap, TapReader)>)> = vec![
        ("none", None),
        (
            "other_port",
            Some(Tap::new(
                1,
                Selection::Ports(vec![PortId(7)]),
                None,
                65535,
                (true, true),
            )),
        ),
        (
            "all",
            Some(Tap::new(2, both.clone(), None, 65535, (true, true))),
        ),
        (
            "all_filtered",
            filter.map(|f| Tap::new(3, both.clone(), Some(f), 65535, (true, true))),
        ),
    ];
    for (name, tap) in cases {
        if name == "all_filtered" && tap.is_none() {
            eprintln!("capture/all_filtered skipped: no libpcap");
            continue;
        }
        let now = NANOS_PER_SEC;
        let (mut pipeline, mut input) = l2_learned(2, BATCH, FRAME_LEN, now);
        let mut output: Vec<Packet> = Vec::with_capacity(BATCH);
        let mut taps = Taps::default();
        let reader = tap.map(|(tap, reader)| {
            taps.add(tap);
            reader
        });
        let ingress_of = |egress: PortId| PortId((egress.0 + 1) % 2);
        group.bench_function(BenchmarkId::new("l2_forward_64B", name), |b| {
            b.iter(|| {
                taps.start_batch();
                if !taps.is_empty() {
                    for p in &input {
                        taps.offer(pipeline.topology(), p.port, Direction::In, &p.data);
                    }
                }
                pipeline.process(black_box(now), &mut input, &mut output);
                if !taps.is_empty() {
                    for p in &output {
                        taps.offer(pipeline.topology(), p.port, Direction::Out, &p.data);
                    }
                }
                if let Some(r) = &reader {
                    while r.try_recv().is_some() {}
                }
                input.extend(output.drain(..).map(|mut p| {
                    p.port = ingress_of(p.port);
                    p
                }));
                black_box(&input);
            })
        });
        assert_eq!(input.len(), BATCH, "no frame lost while measuring");
        if let Some(r) = &reader {
            let (captured, dropped) = r.counts();
            assert_eq!(dropped, 0, "the drained queue never overflows");
            if name != "other_port" {
                assert!(captured > 0, "{name} took frames");
            }
        }
    }
    group.finish();
}

criterion_group!(benches, capture);
criterion_main!(benches);
