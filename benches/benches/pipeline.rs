//! L2 forwarding throughput of `switch::Pipeline::process`: batches of 64 frames of 64 bytes
//! between MACs learned beforehand (every frame is a known unicast, forwarded to one port).
//! Buffers are recycled: each iteration moves the output packets back into the input batch and
//! restores their ingress port, so the measured loop allocates nothing.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use switch::{NANOS_PER_SEC, Packet, PortId};
use vswitch_benches::l2_learned;

const BATCH: usize = 64;
const FRAME_LEN: usize = 64;

fn l2_forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH as u64));
    for ports in [2u16, 4] {
        let now = NANOS_PER_SEC;
        let (mut pipeline, mut input) = l2_learned(ports, BATCH, FRAME_LEN, now);
        let mut output: Vec<Packet> = Vec::with_capacity(BATCH);
        // Frames from port i go to the host on port i + 1: the ingress of an output is the port
        // before its egress.
        let ingress_of = |egress: PortId| PortId((egress.0 + ports - 1) % ports);
        // Check once, outside the measurement, that every frame is forwarded to one port.
        pipeline.process(now, &mut input, &mut output);
        assert_eq!(output.len(), BATCH, "every frame must be a known unicast");
        input.extend(output.drain(..).map(|mut p| {
            p.port = ingress_of(p.port);
            p
        }));
        group.bench_function(BenchmarkId::new("l2_forward_64B", ports), |b| {
            b.iter(|| {
                pipeline.process(black_box(now), &mut input, &mut output);
                input.extend(output.drain(..).map(|mut p| {
                    p.port = ingress_of(p.port);
                    p
                }));
                black_box(&input);
            })
        });
        assert_eq!(input.len(), BATCH, "no frame lost while measuring");
    }
    group.finish();
}

criterion_group!(benches, l2_forward);
criterion_main!(benches);
