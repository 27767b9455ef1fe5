//! Shared helpers for the criterion benches: topologies and pre-learned pipelines built from
//! well-formed frames (`packet::build`).

use packet::{MacAddr, build};
use std::net::Ipv4Addr;
use switch::{Config, Packet, Pipeline, PortId};

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
        .map(|p| Packet {
            port: PortId(p),
            data: build::ethernet(host_mac(p), MacAddr::BROADCAST, 0x88b5, &[0; 46]),
        })
        .collect();
    let mut out = Vec::new();
    pipeline.process(now, &mut hello, &mut out);
    let input = (0..batch)
        .map(|k| {
            // `k % ports` fits in u16 because `ports` does.
            let from = (k % usize::from(ports)) as u16;
            let to = (from + 1) % ports;
            Packet {
                port: PortId(from),
                data: udp_frame(from, to, len),
            }
        })
        .collect();
    (pipeline, input)
}
