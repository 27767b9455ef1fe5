//! Throughput of `switch::Pipeline::process` on batches of 64 frames of 64 bytes.
//!
//! - `l2_forward_64B/{2,4}`: L2 forwarding between MACs learned beforehand (every frame is a
//!   known unicast, forwarded to one port). Buffers are recycled: each iteration moves the output
//!   packets back into the input batch and restores their ingress port, so the measured loop
//!   allocates nothing.
//! - `nat_established_64B/{1,1000,100000}`: N live, assured UDP flows masqueraded from
//!   containers to the outside; each batch alternates the original direction (container →
//!   uplink, SNAT) and the reply direction (uplink → container, de-NAT), cycling over the flows
//!   from batch to batch. NAT rewrites frames in place, so after each batch every output buffer
//!   gets the bytes of the next frame copied back from two pre-built sets (original and reply
//!   frames): one 64-byte memcpy per frame, included in the measurement (a few ns of the total).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use switch::{NANOS_PER_SEC, Packet, PortId};
use vswitch_bench::{
    NAT_CONTAINER_PORT, NAT_UPLINK_PORT, l2_learned, nat_established, nat_original_frame,
    nat_reply_frame,
};

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

/// Fills `input` from `output`'s buffers with the batch starting at flow `first`: frame `k`
/// belongs to flow `(first + k / 2) % flows`, even `k` in the original direction, odd `k` in
/// the reply direction.
fn refill(
    input: &mut Vec<Packet>,
    output: &mut Vec<Packet>,
    originals: &[Vec<u8>],
    replies: &[Vec<u8>],
    first: usize,
) {
    let flows = originals.len();
    for (k, mut p) in output.drain(..).enumerate() {
        let flow = (first + k / 2) % flows;
        let (port, bytes) = if k % 2 == 0 {
            (NAT_CONTAINER_PORT, &originals[flow])
        } else {
            (NAT_UPLINK_PORT, &replies[flow])
        };
        p.port = port;
        p.data.clear();
        p.data.extend_from_slice(bytes);
        input.push(p);
    }
}

fn nat_established_flows(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(BATCH as u64));
    for flows in [1u32, 1000, 100_000] {
        let now = NANOS_PER_SEC;
        let mut pipeline = nat_established(flows, FRAME_LEN, now);
        let originals: Vec<Vec<u8>> = (0..flows)
            .map(|i| nat_original_frame(i, FRAME_LEN))
            .collect();
        let replies: Vec<Vec<u8>> = (0..flows).map(|i| nat_reply_frame(i, FRAME_LEN)).collect();
        let mut input: Vec<Packet> = Vec::with_capacity(BATCH);
        let mut output: Vec<Packet> = (0..BATCH)
            .map(|_| Packet::new(NAT_CONTAINER_PORT, Vec::with_capacity(FRAME_LEN)))
            .collect();
        let mut first = 0usize;
        refill(&mut input, &mut output, &originals, &replies, first);
        // Check once, outside the measurement, that every frame is translated and forwarded:
        // originals leave on the uplink, replies on the container port.
        pipeline.process(now, &mut input, &mut output);
        assert_eq!(output.len(), BATCH, "every frame must be forwarded");
        for (k, p) in output.iter().enumerate() {
            let want = if k % 2 == 0 {
                NAT_UPLINK_PORT
            } else {
                NAT_CONTAINER_PORT
            };
            assert_eq!(p.port, want, "frame {k}");
        }
        let step = BATCH / 2;
        group.bench_function(BenchmarkId::new("nat_established_64B", flows), |b| {
            b.iter(|| {
                first = (first + step) % originals.len();
                refill(&mut input, &mut output, &originals, &replies, first);
                pipeline.process(black_box(now), &mut input, &mut output);
                black_box(&output);
            })
        });
        assert_eq!(output.len(), BATCH, "no frame lost while measuring");
        let total = pipeline
            .port_counters(NAT_CONTAINER_PORT)
            .expect("the container port exists");
        assert_eq!(total.dropped(), 0, "no drops while measuring: {total:?}");
    }
    group.finish();
}

criterion_group!(benches, l2_forward, nat_established_flows);
criterion_main!(benches);
