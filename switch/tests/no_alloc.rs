//! The per-packet path allocates nothing: established NAT flows (from the flow cache and, with
//! it off, through the slow path) and L2 forwarding, measured with a counting allocator over
//! many batches whose buffers go round (what leaves is refilled and sent again, as the packet
//! loops do with their buffer pool).

#![allow(clippy::unwrap_used)] // Test code: panicking is how a test fails.

use switch::{Config, Packet, Pipeline, PortId};
use testkit::traffic::{self, HEADERS, NatFlows};

const FLOWS: u32 = 2000;
const BATCH: usize = 64;
const SEC: u64 = 1_000_000_000;

/// `flows` established UDP flows (request, reply, request again: assured).
fn nat_pipeline(cache: bool) -> (Pipeline, NatFlows) {
    let mut p = Pipeline::new(&Config::from_toml(&traffic::nat_topology(None)).unwrap()).unwrap();
    p.set_flow_cache(cache);
    let flows = NatFlows::new(64);
    let (c, up) = (
        PortId(traffic::NAT_CONTAINER_PORT),
        PortId(traffic::NAT_UPLINK_PORT),
    );
    for reply in [false, true, false] {
        for chunk in (0..FLOWS).collect::<Vec<_>>().chunks(BATCH) {
            let mut input: Vec<Packet> = chunk
                .iter()
                .map(|&i| Packet::new(if reply { up } else { c }, flows.frame(i, reply)))
                .collect();
            let mut out = Vec::new();
            p.process(SEC, &mut input, &mut out);
            assert_eq!(out.len(), chunk.len());
        }
    }
    (p, flows)
}

/// Sends `rounds` batches that cycle over every flow in both directions, reusing the output
/// buffers as the next input; returns the allocations made inside `process`.
fn nat_rounds(p: &mut Pipeline, flows: &NatFlows, rounds: u32) -> u64 {
    let (c, up) = (
        PortId(traffic::NAT_CONTAINER_PORT),
        PortId(traffic::NAT_UPLINK_PORT),
    );
    let mut input: Vec<Packet> = Vec::with_capacity(BATCH);
    let mut out: Vec<Packet> = Vec::with_capacity(BATCH);
    let mut spare: Vec<Vec<u8>> = (0..BATCH).map(|_| flows.frame(0, false)).collect();
    let mut next = 0u32;
    let mut allocations = 0;
    for round in 0..rounds {
        for buf in spare.drain(..) {
            let (i, reply) = (next / 2, next % 2 == 1);
            next = (next + 1) % (2 * FLOWS);
            let mut buf = buf;
            buf[..HEADERS].copy_from_slice(&flows.headers(i, reply));
            input.push(Packet::new(if reply { up } else { c }, buf));
        }
        let now = SEC + u64::from(round) * 1_000_000;
        let info = allocation_counter::measure(|| p.process(now, &mut input, &mut out));
        allocations += info.count_total;
        assert_eq!(out.len(), BATCH, "every frame forwarded");
        spare.extend(out.drain(..).map(|pkt| pkt.data));
    }
    allocations
}

#[test]
fn established_nat_flows_allocate_nothing() {
    for cache in [true, false] {
        let (mut p, flows) = nat_pipeline(cache);
        // A first pass fills the cache (sized once) and the output vectors.
        nat_rounds(&mut p, &flows, 2 * FLOWS / BATCH as u32 + 1);
        let allocations = nat_rounds(&mut p, &flows, 500);
        assert_eq!(allocations, 0, "cache {cache}: allocations in 500 batches");
        if cache {
            let s = p.flow_cache_stats();
            assert!(
                s.hits > 500 * BATCH as u64 / 2,
                "the cache served them: {s:?}"
            );
        }
    }
}

#[test]
fn l2_forwarding_allocates_nothing() {
    let mut p = Pipeline::new(&Config::from_toml(&traffic::l2_topology(2)).unwrap()).unwrap();
    let frames = [traffic::udp_frame(0, 1, 64), traffic::udp_frame(1, 0, 64)];
    let mut out = Vec::with_capacity(BATCH);
    // Learn both hosts.
    let mut input: Vec<Packet> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| Packet::new(PortId(i as u16), f.clone()))
        .collect();
    p.process(SEC, &mut input, &mut out);
    let mut input = Vec::with_capacity(BATCH);
    let mut allocations = 0;
    for round in 0..500u64 {
        input.extend(out.drain(..).map(|pkt| {
            let from = 1 - pkt.port.0;
            let mut data = pkt.data;
            data.copy_from_slice(&frames[usize::from(from)]);
            Packet::new(PortId(from), data)
        }));
        while input.len() < BATCH {
            input.push(Packet::new(PortId(0), frames[0].clone()));
        }
        let info = allocation_counter::measure(|| p.process(SEC + round, &mut input, &mut out));
        if round > 0 {
            allocations += info.count_total;
        }
    }
    assert_eq!(allocations, 0);
}
