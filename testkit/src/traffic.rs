//! The traffic generator of the benches and fuzz seeds: L2 host frames and N established NAT
//! flows in both directions, with their topologies.
//!
//! Host `i` is MAC 02:00:00:00:hi:lo and IPv4 10.0.hi.lo. NAT flow `i` is UDP
//! 172.16.0.2+i:40000 → 100.64.0.0+i:443 from the container (original), answered by the far host
//! through the next hop to the uplink address (reply). Both directions carry the same payload, so
//! only the 42 header bytes differ from flow to flow: [`NatFlows`] patches the addresses of a
//! template built once with [`crate::frames`] and recomputes both checksums (the payload's sum
//! computed once), which makes a million flows cheap to generate and is checked equal to building
//! every frame.

use crate::frames;
use crate::topology::Topo;
use packet::MacAddr;
use packet::checksum::{fold, pseudo_header_sum, sum as sum16};
use std::net::Ipv4Addr;

/// Ethernet + IPv4 + UDP header bytes of every generated frame.
pub const HEADERS: usize = 42;

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

/// `ports` pcap ports (p0, p1, ...) on one network `lan` with default bridge settings.
pub fn l2_topology(ports: u16) -> String {
    (0..ports)
        .fold(Topo::new().network("lan"), |t, p| {
            t.port(&format!("p{p}"), "lan")
        })
        .build()
}

/// A UDP frame of exactly `len` bytes (at least [`HEADERS`]) from host `src` to host `dst`.
pub fn udp_frame(src: u16, dst: u16, len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len.saturating_sub(HEADERS)];
    frames::udp(
        host_mac(src),
        host_mac(dst),
        host_ip(src),
        host_ip(dst),
        40000,
        50000,
        &payload,
    )
}

/// The broadcast with which host `i` announces itself (and teaches the FDB where it is).
pub fn hello_frame(i: u16) -> Vec<u8> {
    frames::ethernet(host_mac(i), MacAddr::BROADCAST, 0x88b5, &[0; 46])
}

/// Address of vswitch on the uplink in [`nat_topology`].
pub const NAT_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// Gateway of the container network in [`nat_topology`].
pub const NAT_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
/// Static MAC of the uplink's next hop in [`nat_topology`].
pub const NAT_ROUTER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);
/// Container source port of every NAT flow (kept by masquerade: the destinations differ).
pub const NAT_SRC_PORT: u16 = 40000;
/// Destination port of every NAT flow.
pub const NAT_DST_PORT: u16 = 443;
/// Port index of the container network's port `c` in [`nat_topology`].
pub const NAT_CONTAINER_PORT: u16 = 0;
/// Port index of the uplink `up` in [`nat_topology`].
pub const NAT_UPLINK_PORT: u16 = 1;

/// A container network 172.16.0.0/12 (gateway 172.16.0.1) on port `c` (port 0), and an uplink
/// `up` (port 1) with address [`NAT_UPLINK_IP`] and a static next hop, so no ARP is involved;
/// with `max_entries`, a conntrack table of that size.
pub fn nat_topology(max_entries: Option<u32>) -> String {
    let t = Topo::new()
        .routed("bridge", "172.16.0.0/12", "172.16.0.1")
        .port("c", "bridge")
        .uplink_port("up")
        .uplink_static("up");
    match max_entries {
        Some(n) => t.block("conntrack", false).set("max_entries", n),
        None => t,
    }
    .build()
}

/// The container of flow `i`: 172.16.0.2 + i (up to about a million flows).
pub fn nat_container_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 2)) + i)
}

/// The far host of flow `i`: 100.64.0.0 + i (off-link, through the next hop).
pub fn nat_remote_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i)
}

/// Frames of the NAT flows of [`nat_topology`], `len` bytes each (at least [`HEADERS`]).
#[derive(Debug, Clone)]
pub struct NatFlows {
    /// Full frames of flow 0: original, reply.
    templates: [Vec<u8>; 2],
    /// One's-complement sum of the payload (constant).
    payload_sum: u32,
}

impl NatFlows {
    /// Templates for frames of `len` bytes.
    pub fn new(len: usize) -> NatFlows {
        let payload = vec![0x5a; len.saturating_sub(HEADERS)];
        NatFlows {
            templates: [
                Self::build(0, false, &payload),
                Self::build(0, true, &payload),
            ],
            payload_sum: sum16(&payload),
        }
    }

    /// Flow `i`'s frame in one direction, built from scratch (what [`NatFlows::frame`] must equal).
    pub fn build(i: u32, reply: bool, payload: &[u8]) -> Vec<u8> {
        let (container, remote) = (nat_container_ip(i), nat_remote_ip(i));
        if reply {
            frames::udp(
                NAT_ROUTER_MAC,
                MacAddr::docker(NAT_UPLINK_IP),
                remote,
                NAT_UPLINK_IP,
                NAT_DST_PORT,
                NAT_SRC_PORT,
                payload,
            )
        } else {
            frames::udp(
                host_mac(1),
                MacAddr::docker(NAT_GATEWAY_IP),
                container,
                remote,
                NAT_SRC_PORT,
                NAT_DST_PORT,
                payload,
            )
        }
    }

    /// The [`HEADERS`] header bytes of flow `i` in one direction.
    pub fn headers(&self, i: u32, reply: bool) -> [u8; HEADERS] {
        let mut h = [0u8; HEADERS];
        h.copy_from_slice(&self.templates[usize::from(reply)][..HEADERS]);
        let (container, remote) = (nat_container_ip(i), nat_remote_ip(i));
        let (src, dst) = if reply {
            (remote, NAT_UPLINK_IP)
        } else {
            (container, remote)
        };
        h[26..30].copy_from_slice(&src.octets());
        h[30..34].copy_from_slice(&dst.octets());
        // IPv4 header checksum.
        h[24..26].copy_from_slice(&[0, 0]);
        let ip = !fold(sum16(&h[14..34]));
        h[24..26].copy_from_slice(&ip.to_be_bytes());
        // UDP checksum: pseudo-header, UDP header, payload (RFC 768; 0 is sent as 0xffff).
        h[40..42].copy_from_slice(&[0, 0]);
        let udp_len = u16::from_be_bytes([h[38], h[39]]);
        let pseudo = pseudo_header_sum(src, dst, 17, udp_len);
        let udp = !fold(pseudo + sum16(&h[34..42]) + self.payload_sum);
        h[40..42].copy_from_slice(&(if udp == 0 { 0xffff } else { udp }).to_be_bytes());
        h
    }

    /// A full frame of flow `i`: the original direction, or the reply.
    pub fn frame(&self, i: u32, reply: bool) -> Vec<u8> {
        let mut f = self.templates[usize::from(reply)].clone();
        f[..HEADERS].copy_from_slice(&self.headers(i, reply));
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_nat_frames_equal_built_ones() {
        for len in [64, 65, 1500] {
            let flows = NatFlows::new(len);
            let payload = vec![0x5a; len - HEADERS];
            for i in [0u32, 1, 255, 65_537, 999_999] {
                for reply in [false, true] {
                    assert_eq!(
                        flows.frame(i, reply),
                        NatFlows::build(i, reply, &payload),
                        "len {len} flow {i} reply {reply}"
                    );
                }
            }
        }
    }

    #[test]
    fn udp_frame_has_the_asked_length() {
        assert_eq!(udp_frame(1, 2, 64).len(), 64);
        assert_eq!(udp_frame(1, 2, 1514).len(), 1514);
    }
}
