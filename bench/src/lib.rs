//! Shared helpers for the criterion benches and the `vswitch-bench pipeline` driver: pipelines
//! set up with the one traffic generator of `testkit::traffic` (L2 host frames, N established NAT
//! flows in both directions).

use switch::{Config, Packet, Pipeline, PortId};
use testkit::traffic;
pub use testkit::traffic::{
    Family, HEADERS, NAT_DST_PORT, NAT_GATEWAY_IP, NAT_ROUTER_MAC, NAT_SRC_PORT, NAT_UPLINK_IP,
    NatFlows, host_ip, host_mac, nat_container_ip, nat_remote_ip, udp_frame, udp_frame_of,
};

/// `ports` pcap ports (p0, p1, ...) on one network with default bridge settings.
pub fn l2_config(ports: u16) -> Config {
    Config::from_toml(&traffic::l2_topology(ports)).expect("generated topology is valid")
}

/// A pipeline on `ports` ports (at least 2) where host `i` has been learned on port `i`, and a
/// batch of `batch` frames of `len` bytes: frame `k` enters port `k % ports` and is addressed to
/// the host on the next port, so with two ports the directions alternate. Every frame is a known
/// unicast: the pipeline forwards it to exactly one port.
pub fn l2_learned(ports: u16, batch: usize, len: usize, now: u64) -> (Pipeline, Vec<Packet>) {
    l2_learned_of(Family::V4, ports, batch, len, now)
}

/// [`l2_learned`] with frames of `family`.
pub fn l2_learned_of(
    family: Family,
    ports: u16,
    batch: usize,
    len: usize,
    now: u64,
) -> (Pipeline, Vec<Packet>) {
    let mut pipeline = Pipeline::new(&l2_config(ports)).expect("valid topology");
    // Each host announces itself once (broadcast), which teaches the FDB.
    let mut hello: Vec<Packet> = (0..ports)
        .map(|p| Packet::new(PortId(p), traffic::hello_frame(p)))
        .collect();
    let mut out = Vec::new();
    pipeline.process(now, &mut hello, &mut out);
    let input = (0..batch)
        .map(|k| {
            // `k % ports` fits in u16 because `ports` does.
            let from = (k % usize::from(ports)) as u16;
            let to = (from + 1) % ports;
            Packet::new(PortId(from), udp_frame_of(family, from, to, len))
        })
        .collect();
    (pipeline, input)
}

/// A container network 172.16.0.0/12 (gateway 172.16.0.1) on port `c` (port 0), and an uplink
/// `up` (port 1) with address [`NAT_UPLINK_IP`] and a static next hop, so no ARP is involved;
/// with `max_entries`, a conntrack table of that size.
pub fn nat_config(max_entries: Option<u32>) -> Config {
    nat_config_of(Family::V4, max_entries)
}

/// [`nat_config`], dual-stack with the uplink's IPv6 side for [`Family::V6`] (NAT66).
pub fn nat_config_of(family: Family, max_entries: Option<u32>) -> Config {
    Config::from_toml(&traffic::nat_topology_of(family, max_entries))
        .expect("NAT topology is valid")
}

/// Port of the container network in [`nat_config`].
pub const NAT_CONTAINER_PORT: PortId = PortId(traffic::NAT_CONTAINER_PORT);
/// Port of the uplink in [`nat_config`].
pub const NAT_UPLINK_PORT: PortId = PortId(traffic::NAT_UPLINK_PORT);

/// Frame of flow `i` in the original direction: UDP from its container (one MAC for all of
/// them) to the gateway MAC, `len` bytes.
pub fn nat_original_frame(i: u32, len: usize) -> Vec<u8> {
    NatFlows::build(i, false, &vec![0x5a; len.saturating_sub(HEADERS)])
}

/// Frame of flow `i` in the reply direction: UDP from its far host (via the next hop) to the
/// uplink address and the mapped port, `len` bytes.
pub fn nat_reply_frame(i: u32, len: usize) -> Vec<u8> {
    NatFlows::build(i, true, &vec![0x5a; len.saturating_sub(HEADERS)])
}

/// A pipeline with `flows` live, assured UDP flows masqueraded from the container network to the
/// outside: each was created by its first packet, answered, and sent again (UDP is assured on
/// the first packet after a reply). Panics if a flow did not come out as expected.
pub fn nat_established(flows: u32, len: usize, now: u64) -> Pipeline {
    let mut pipeline = Pipeline::new(&nat_config(None)).expect("valid topology");
    let mut input = Vec::with_capacity(64);
    let mut out = Vec::with_capacity(64);
    let step = 4096u32;
    for round in [0, 1, 2] {
        let mut start = 0;
        while start < flows {
            let end = flows.min(start + step);
            input.extend((start..end).map(|i| match round {
                1 => Packet::new(NAT_UPLINK_PORT, nat_reply_frame(i, len)),
                _ => Packet::new(NAT_CONTAINER_PORT, nat_original_frame(i, len)),
            }));
            pipeline.process(now, &mut input, &mut out);
            assert_eq!(
                out.len(),
                (end - start) as usize,
                "every set-up frame must be forwarded"
            );
            out.clear();
            start = end;
        }
    }
    assert_eq!(pipeline.conntrack().len(), flows as usize);
    pipeline
}
