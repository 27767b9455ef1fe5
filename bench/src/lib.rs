//! Shared helpers for the criterion benches: topologies and pre-learned pipelines built from
//! well-formed frames (`packet::build`).

use packet::MacAddr;
use std::net::Ipv4Addr;
use switch::{Config, Packet, Pipeline, PortId};
use testkit::frames as build;

/// The MAC of host `i` (locally administered unicast).
pub fn host_mac(i: u16) -> MacAddr {
    let [hi, lo] = i.to_be_bytes();
    MacAddr([0x02, 0, 0, 0, hi, lo])
}

/// The IPv4 address of host `i`: 10.0.x.y.
pub fn host_ip(i: u16) -> Ipv4Addr {
    let [hi, lo] = i.to_be_bytes();
    Ipv4Addr::new(10, 0, hi, lo)
}

/// `ports` pcap ports (p0, p1, ...) on one network with default bridge settings.
pub fn l2_config(ports: u16) -> Config {
    let mut text = String::from("[[network]]\nname = \"lan\"\n");
    for p in 0..ports {
        text.push_str(&format!(
            "\n[[port]]\nname = \"p{p}\"\nkind = \"pcap\"\nnetwork = \"lan\"\n"
        ));
    }
    Config::from_toml(&text).expect("generated topology is valid")
}

/// A UDP frame of exactly `len` bytes (at least 42: Ethernet + IPv4 + UDP headers) from host
/// `src` to host `dst`.
pub fn udp_frame(src: u16, dst: u16, len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len.saturating_sub(42)];
    build::udp(
        host_mac(src),
        host_mac(dst),
        host_ip(src),
        host_ip(dst),
        40000,
        50000,
        &payload,
    )
}

/// A pipeline on `ports` ports (at least 2) where host `i` has been learned on port `i`, and a
/// batch of `batch` frames of `len` bytes: frame `k` enters port `k % ports` and is addressed to
/// the host on the next port, so with two ports the directions alternate. Every frame is a known
/// unicast: the pipeline forwards it to exactly one port.
pub fn l2_learned(ports: u16, batch: usize, len: usize, now: u64) -> (Pipeline, Vec<Packet>) {
    let mut pipeline = Pipeline::new(&l2_config(ports)).expect("valid topology");
    // Each host announces itself once (broadcast), which teaches the FDB.
    let mut hello: Vec<Packet> = (0..ports)
        .map(|p| {
            Packet::new(
                PortId(p),
                build::ethernet(host_mac(p), MacAddr::BROADCAST, 0x88b5, &[0; 46]),
            )
        })
        .collect();
    let mut out = Vec::new();
    pipeline.process(now, &mut hello, &mut out);
    let input = (0..batch)
        .map(|k| {
            // `k % ports` fits in u16 because `ports` does.
            let from = (k % usize::from(ports)) as u16;
            let to = (from + 1) % ports;
            Packet::new(PortId(from), udp_frame(from, to, len))
        })
        .collect();
    (pipeline, input)
}

/// Address of vswitch on the uplink in [`nat_config`].
pub const NAT_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// Gateway of the container network in [`nat_config`].
pub const NAT_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);

/// Static MAC of the uplink's next hop in [`nat_config`].
pub const NAT_ROUTER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);

/// Container source port of every NAT flow (kept by masquerade: the destinations differ).
pub const NAT_SRC_PORT: u16 = 40000;

/// Destination port of every NAT flow.
pub const NAT_DST_PORT: u16 = 443;

/// A container network 172.16.0.0/12 (gateway 172.16.0.1) on port `c` (port 0), and an uplink
/// `up` (port 1) with address [`NAT_UPLINK_IP`] and a static next hop, so no ARP is involved.
pub fn nat_config() -> Config {
    Config::from_toml(
        r#"
[[network]]
name = "bridge"
subnet = "172.16.0.0/12"
gateway = "172.16.0.1"

[[port]]
name = "c"
kind = "pcap"
network = "bridge"

[[port]]
name = "up"
kind = "pcap"

[uplink]
port = "up"
address = "203.0.113.2"
subnet = "203.0.113.0/24"
next_hop = "203.0.113.1"
next_hop_mac = "02:00:00:00:00:fe"
"#,
    )
    .expect("NAT topology is valid")
}

/// The container of flow `i`: 172.16.0.2 + i (up to about a million flows).
pub fn nat_container_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 2)) + i)
}

/// The far host of flow `i`: 100.64.0.0 + i (off-link, through the next hop).
pub fn nat_remote_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i)
}

/// Port of the container network in [`nat_config`].
pub const NAT_CONTAINER_PORT: PortId = PortId(0);
/// Port of the uplink in [`nat_config`].
pub const NAT_UPLINK_PORT: PortId = PortId(1);

/// Frame of flow `i` in the original direction: UDP from its container (one MAC for all of
/// them) to the gateway MAC, `len` bytes.
pub fn nat_original_frame(i: u32, len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len.saturating_sub(42)];
    build::udp(
        host_mac(1),
        MacAddr::docker(NAT_GATEWAY_IP),
        nat_container_ip(i),
        nat_remote_ip(i),
        NAT_SRC_PORT,
        NAT_DST_PORT,
        &payload,
    )
}

/// Frame of flow `i` in the reply direction: UDP from its far host (via the next hop) to the
/// uplink address and the mapped port, `len` bytes.
pub fn nat_reply_frame(i: u32, len: usize) -> Vec<u8> {
    let payload = vec![0xa5; len.saturating_sub(42)];
    build::udp(
        NAT_ROUTER_MAC,
        MacAddr::docker(NAT_UPLINK_IP),
        nat_remote_ip(i),
        NAT_UPLINK_IP,
        NAT_DST_PORT,
        NAT_SRC_PORT,
        &payload,
    )
}

/// A pipeline with `flows` live, assured UDP flows masqueraded from the container network to the
/// outside: each was created by its first packet, answered, and sent again (UDP is assured on
/// the first packet after a reply). Panics if a flow did not come out as expected.
pub fn nat_established(flows: u32, len: usize, now: u64) -> Pipeline {
    let mut pipeline = Pipeline::new(&nat_config()).expect("valid topology");
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
