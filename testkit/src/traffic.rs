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
//!
//! Every generator has an IPv6 twin ([`Family::V6`]): host `i` is fd00::hi:lo, NAT66 flow `i`
//! is fd00:16::2+i:40000 → 2001:db8:100::i:443 through the uplink's 2001:db8::2, with 62
//! header bytes.

use crate::frames;
use crate::topology::Topo;
use packet::MacAddr;
use packet::checksum::{fold, pseudo_header_sum, pseudo_header_sum_v6, sum as sum16};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Ethernet + IPv4 + UDP header bytes of every generated IPv4 frame.
pub const HEADERS: usize = 42;
/// Ethernet + IPv6 + UDP header bytes of every generated IPv6 frame.
pub const HEADERS6: usize = 62;

/// The IP version of generated traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Ethernet, IP and UDP header bytes of this family's frames.
    pub const fn headers(self) -> usize {
        match self {
            Family::V4 => HEADERS,
            Family::V6 => HEADERS6,
        }
    }
}

/// The IPv6 address of host `i`: fd00::hi:lo.
pub fn host_ip6(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)
}

/// [`udp_frame`] in `family`.
pub fn udp_frame_of(family: Family, src: u16, dst: u16, len: usize) -> Vec<u8> {
    match family {
        Family::V4 => udp_frame(src, dst, len),
        Family::V6 => frames::udp6(
            host_mac(src),
            host_mac(dst),
            host_ip6(src),
            host_ip6(dst),
            40000,
            50000,
            &vec![0x5a; len.saturating_sub(HEADERS6)],
        ),
    }
}

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

/// IPv6 address of vswitch on the uplink in [`nat_topology_of`] `(V6, ..)`.
pub const NAT_UPLINK_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

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
    nat_topology_of(Family::V4, max_entries)
}

/// [`nat_topology`], dual-stack for [`Family::V6`]: the network also holds fd00:16::/64 and
/// the uplink has [`NAT_UPLINK_IP6`] with a static next hop (no neighbour discovery).
pub fn nat_topology_of(family: Family, max_entries: Option<u32>) -> String {
    let t = Topo::new().routed("bridge", "172.16.0.0/12", "172.16.0.1");
    let t = match family {
        Family::V4 => t,
        Family::V6 => t.set_str("subnet6", "fd00:16::/64"),
    };
    let t = t.port("c", "bridge").uplink_port("up").uplink_static("up");
    let t = match family {
        Family::V4 => t,
        Family::V6 => t
            .block("uplink.ipv6", false)
            .set_str("address", &NAT_UPLINK_IP6.to_string())
            .set_str("next_hop", "2001:db8::1")
            .set_str("next_hop_mac", &NAT_ROUTER_MAC.to_string()),
    };
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

/// The container of NAT66 flow `i`: fd00:16::2 + i.
pub fn nat_container_ip6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(Ipv6Addr::new(0xfd00, 0x16, 0, 0, 0, 0, 0, 2).to_bits() + u128::from(i))
}

/// The far host of NAT66 flow `i`: 2001:db8:100:: + i.
pub fn nat_remote_ip6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0).to_bits() + u128::from(i))
}

/// Frames of the NAT flows of [`nat_topology_of`], `len` bytes each (at least the family's
/// header bytes).
#[derive(Debug, Clone)]
pub struct NatFlows {
    family: Family,
    /// Full frames of flow 0: original, reply.
    templates: [Vec<u8>; 2],
    /// One's-complement sum of the payload (constant).
    payload_sum: u32,
}

impl NatFlows {
    /// Templates for IPv4 frames of `len` bytes.
    pub fn new(len: usize) -> NatFlows {
        NatFlows::new_of(Family::V4, len)
    }

    /// Templates for frames of `len` bytes in `family`.
    pub fn new_of(family: Family, len: usize) -> NatFlows {
        let payload = vec![0x5a; len.saturating_sub(family.headers())];
        NatFlows {
            family,
            templates: [
                Self::build_of(family, 0, false, &payload),
                Self::build_of(family, 0, true, &payload),
            ],
            payload_sum: sum16(&payload),
        }
    }

    /// The flows' address family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// [`NatFlows::build`] in `family`.
    pub fn build_of(family: Family, i: u32, reply: bool, payload: &[u8]) -> Vec<u8> {
        if family == Family::V4 {
            return Self::build(i, reply, payload);
        }
        let (container, remote) = (nat_container_ip6(i), nat_remote_ip6(i));
        if reply {
            frames::udp6(
                NAT_ROUTER_MAC,
                MacAddr::docker(NAT_UPLINK_IP),
                remote,
                NAT_UPLINK_IP6,
                NAT_DST_PORT,
                NAT_SRC_PORT,
                payload,
            )
        } else {
            frames::udp6(
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

    /// Flow `i`'s IPv4 frame in one direction, built from scratch (what [`NatFlows::frame`]
    /// must equal).
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

    /// The header bytes of flow `i` in one direction ([`Family::headers`] of them).
    pub fn headers(&self, i: u32, reply: bool) -> Vec<u8> {
        if self.family == Family::V6 {
            return self.headers6(i, reply);
        }
        let mut h = self.templates[usize::from(reply)][..HEADERS].to_vec();
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

    fn headers6(&self, i: u32, reply: bool) -> Vec<u8> {
        let mut h = self.templates[usize::from(reply)][..HEADERS6].to_vec();
        let (container, remote) = (nat_container_ip6(i), nat_remote_ip6(i));
        let (src, dst) = if reply {
            (remote, NAT_UPLINK_IP6)
        } else {
            (container, remote)
        };
        h[22..38].copy_from_slice(&src.octets());
        h[38..54].copy_from_slice(&dst.octets());
        // UDP checksum over the IPv6 pseudo-header (mandatory in IPv6; 0 is sent as 0xffff).
        h[60..62].copy_from_slice(&[0, 0]);
        let udp_len = u16::from_be_bytes([h[58], h[59]]);
        let pseudo = pseudo_header_sum_v6(src, dst, 17, u32::from(udp_len));
        let udp = !fold(pseudo + sum16(&h[54..62]) + self.payload_sum);
        h[60..62].copy_from_slice(&(if udp == 0 { 0xffff } else { udp }).to_be_bytes());
        h
    }

    /// A full frame of flow `i`: the original direction, or the reply.
    pub fn frame(&self, i: u32, reply: bool) -> Vec<u8> {
        let mut f = self.templates[usize::from(reply)].clone();
        let h = self.headers(i, reply);
        f[..h.len()].copy_from_slice(&h);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_nat_frames_equal_built_ones() {
        for family in [Family::V4, Family::V6] {
            for len in [64, 65, 1500] {
                let flows = NatFlows::new_of(family, len);
                let payload = vec![0x5a; len.saturating_sub(family.headers())];
                for i in [0u32, 1, 255, 65_537, 999_999] {
                    for reply in [false, true] {
                        assert_eq!(
                            flows.frame(i, reply),
                            NatFlows::build_of(family, i, reply, &payload),
                            "{family:?} len {len} flow {i} reply {reply}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn udp_frame_has_the_asked_length() {
        assert_eq!(udp_frame(1, 2, 64).len(), 64);
        assert_eq!(udp_frame(1, 2, 1514).len(), 1514);
        assert_eq!(udp_frame_of(Family::V6, 1, 2, 64).len(), 64);
        assert_eq!(udp_frame_of(Family::V6, 1, 2, 1514).len(), 1514);
    }
}
