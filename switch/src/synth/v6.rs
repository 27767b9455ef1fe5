//! IPv6 frames the gateway originates: neighbour advertisements and solicitations, router
//! advertisements (RFC 4861), ICMPv6 echo replies and errors (RFC 4443).
//!
//! Slow-path frames, built into fresh buffers with fixed layouts and checksummed over the IPv6
//! pseudo-header; nothing here can fail or panic, whatever the offending packet looks like.

use super::ethernet_header;
use packet::checksum::{l4_checksum_v6, update_u16};
use packet::{ETHERTYPE_IPV6, IPPROTO_ICMPV6, IPV6_HEADER_LEN, MacAddr};
use std::net::Ipv6Addr;

/// Hop limit of packets the gateway originates toward other hosts.
pub const ORIGIN_HOP_LIMIT: u8 = 64;
/// Hop limit of neighbour discovery messages (RFC 4861: receivers drop any other).
pub const NDP_HOP_LIMIT: u8 = 255;
/// The IPv6 minimum MTU: an ICMPv6 error never exceeds it (RFC 4443 2.4 (c)).
pub const MIN_MTU: usize = 1280;
/// ff02::1, every node on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Router lifetime advertised, in seconds (RFC 4861's default, 3 × MaxRtrAdvInterval).
pub const ROUTER_LIFETIME_SECS: u16 = 1800;
/// Valid and preferred lifetimes of the advertised prefix, in seconds.
pub const PREFIX_LIFETIME_SECS: u32 = 86_400;

/// The solicited-node multicast group of `addr` (RFC 4291 2.7.1).
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The destination MAC of a packet to `dst`: its multicast MAC (RFC 2464 7), else `unicast`.
fn eth_dst(dst: Ipv6Addr, unicast: MacAddr) -> MacAddr {
    if dst.is_multicast() {
        MacAddr::ipv6_multicast(dst)
    } else {
        unicast
    }
}

/// An ICMPv6 message in IPv6 in Ethernet: `message` starts at the type byte (its checksum
/// bytes are overwritten with the computed checksum).
pub fn icmpv6(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    message: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + IPV6_HEADER_LEN + message.len());
    ethernet_header(&mut f, src_mac, eth_dst(dst, dst_mac), ETHERTYPE_IPV6);
    let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[IPPROTO_ICMPV6, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let at = f.len();
    f.extend_from_slice(message);
    if let Some(ck) = f.get_mut(at + 2..at + 4) {
        ck.fill(0);
    }
    let ck = l4_checksum_v6(src, dst, IPPROTO_ICMPV6, &f[at..]);
    if let Some(c) = f.get_mut(at + 2..at + 4) {
        c.copy_from_slice(&ck.to_be_bytes());
    }
    f
}

/// The link-layer address option (RFC 4861 4.6.1): 1 source, 2 target.
fn mac_option(kind: u8, mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    [kind, 1, m[0], m[1], m[2], m[3], m[4], m[5]]
}

/// A neighbour advertisement: `target` is at `our_mac`. To `to_ip` (solicited) or, when the
/// solicitation came from `::` (duplicate address detection), to all nodes, unsolicited.
pub fn neighbor_advertisement(
    our_mac: MacAddr,
    target: Ipv6Addr,
    to_mac: MacAddr,
    to_ip: Ipv6Addr,
    router: bool,
) -> Vec<u8> {
    let (dst, solicited) = if to_ip.is_unspecified() {
        (ALL_NODES, false)
    } else {
        (to_ip, true)
    };
    let flags = if router { 0x80 } else { 0 } | if solicited { 0x40 } else { 0 } | 0x20;
    let mut m = vec![136, 0, 0, 0, flags, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&mac_option(2, our_mac));
    icmpv6(our_mac, to_mac, target, dst, NDP_HOP_LIMIT, &m)
}

/// A neighbour solicitation for `target` from `our_ip`, to its solicited-node group.
pub fn neighbor_solicitation(our_mac: MacAddr, our_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&mac_option(1, our_mac));
    let group = solicited_node(target);
    icmpv6(our_mac, MacAddr::ZERO, our_ip, group, NDP_HOP_LIMIT, &m)
}

/// What a router advertisement announces.
#[derive(Clone, Copy, Debug)]
pub struct Advertisement {
    /// The router's MAC.
    pub mac: MacAddr,
    /// Its link-local address (the RA's source, RFC 4861 6.1.2).
    pub link_local: Ipv6Addr,
    /// The on-link prefix and its length.
    pub prefix: (Ipv6Addr, u8),
    /// Set the autonomous flag (SLAAC).
    pub autoconf: bool,
    /// The link MTU.
    pub mtu: u32,
    /// A recursive DNS server to announce (RFC 8106), if the network serves DNS.
    pub dns: Option<Ipv6Addr>,
}

/// A router advertisement to `to_ip` (a soliciting host) or to all nodes.
pub fn router_advertisement(ad: &Advertisement, to_mac: MacAddr, to_ip: Ipv6Addr) -> Vec<u8> {
    let dst = if to_ip.is_unspecified() {
        ALL_NODES
    } else {
        to_ip
    };
    let [l0, l1] = ROUTER_LIFETIME_SECS.to_be_bytes();
    // Type, code, checksum, cur hop limit, flags (no M, no O), router lifetime, reachable
    // time and retrans timer unspecified.
    let mut m = vec![
        134,
        0,
        0,
        0,
        ORIGIN_HOP_LIMIT,
        0,
        l0,
        l1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    m.extend_from_slice(&mac_option(1, ad.mac));
    m.extend_from_slice(&[5, 1, 0, 0]);
    m.extend_from_slice(&ad.mtu.to_be_bytes());
    let flags = 0x80 | if ad.autoconf { 0x40 } else { 0 };
    m.extend_from_slice(&[3, 4, ad.prefix.1, flags]);
    m.extend_from_slice(&PREFIX_LIFETIME_SECS.to_be_bytes());
    m.extend_from_slice(&PREFIX_LIFETIME_SECS.to_be_bytes());
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(&ad.prefix.0.octets());
    if let Some(dns) = ad.dns {
        m.extend_from_slice(&[25, 3, 0, 0]);
        m.extend_from_slice(&u32::from(ROUTER_LIFETIME_SECS).to_be_bytes());
        m.extend_from_slice(&dns.octets());
    }
    icmpv6(ad.mac, to_mac, ad.link_local, dst, NDP_HOP_LIMIT, &m)
}

/// An ICMPv6 error (`ty`, `code`, the 4-byte field after the checksum) about `offending` (the
/// IPv6 packet from its header on), quoting as much of it as fits in the minimum MTU.
#[allow(clippy::too_many_arguments)]
pub fn icmpv6_error(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    offending: &[u8],
) -> Vec<u8> {
    let room = MIN_MTU - IPV6_HEADER_LEN - 8;
    let quoted = &offending[..offending.len().min(room)];
    let mut m = Vec::with_capacity(8 + quoted.len());
    m.extend_from_slice(&[ty, code, 0, 0]);
    m.extend_from_slice(&rest);
    m.extend_from_slice(quoted);
    icmpv6(src_mac, dst_mac, src, dst, ORIGIN_HOP_LIMIT, &m)
}

/// Turns an ICMPv6 echo request frame into the reply, in place: MACs and addresses swapped,
/// type 129, hop limit reset; the checksum updated incrementally (the pseudo-header sum does
/// not change with the swap; a wrong checksum stays wrong).
pub fn echo_reply_in_place(frame: &mut [u8], l3: usize, l4: usize) {
    if frame.len() < l4 + 8 || l4 < l3 + IPV6_HEADER_LEN {
        return;
    }
    let (dst, src) = frame.split_at_mut(6);
    dst.swap_with_slice(&mut src[..6]);
    for i in 0..16 {
        frame.swap(l3 + 8 + i, l3 + 24 + i);
    }
    frame[l3 + 7] = ORIGIN_HOP_LIMIT;
    let old = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
    frame[l4] = 129;
    let new = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
    let ck = u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]);
    frame[l4 + 2..l4 + 4].copy_from_slice(&update_u16(ck, old, new).to_be_bytes());
}

/// Decrements the hop limit of the IPv6 header at `l3` (no header checksum in IPv6).
pub fn decrement_hop_limit(frame: &mut [u8], l3: usize) {
    if let Some(h) = frame.get_mut(l3 + 7) {
        *h = h.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::{L3, L4, classify};

    const GW: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 1]);
    const HOST: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 2]);

    fn verifies(f: &[u8]) -> bool {
        let c = classify(f).unwrap();
        let L3::Ipv6(i) = c.l3 else { return false };
        l4_checksum_v6(i.src, i.dst, i.protocol, &f[c.l4_offset..c.ip_end]) == 0
    }

    #[test]
    fn advertisements_are_well_formed() {
        let host: Ipv6Addr = "fd00::2".parse().unwrap();
        let gw: Ipv6Addr = "fd00::1".parse().unwrap();
        let na = neighbor_advertisement(GW, gw, HOST, host, true);
        assert!(verifies(&na));
        assert_eq!(&na[..6], &HOST.0);
        assert_eq!(na[14 + 7], 255);
        assert_eq!(na[54 + 4], 0xe0, "router, solicited, override");
        // DAD from :: is answered to all nodes, unsolicited.
        let dad = neighbor_advertisement(GW, gw, HOST, Ipv6Addr::UNSPECIFIED, true);
        assert_eq!(&dad[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(dad[54 + 4], 0xa0);

        let ad = Advertisement {
            mac: GW,
            link_local: GW.link_local(),
            prefix: ("fd00::".parse().unwrap(), 64),
            autoconf: false,
            mtu: 1500,
            dns: Some(gw),
        };
        let ra = router_advertisement(&ad, HOST, host);
        assert!(verifies(&ra));
        let c = classify(&ra).unwrap();
        assert!(matches!(c.l4, L4::Icmp { ty: 134, .. }));
        assert!(matches!(c.l3, L3::Ipv6(i) if i.src == GW.link_local()));
        // 16 fixed, SLLA 8, MTU 8, prefix 32, RDNSS 24.
        assert_eq!(c.ip_end - c.l4_offset, 16 + 8 + 8 + 32 + 24);

        let ns = neighbor_solicitation(GW, gw, host);
        assert!(verifies(&ns));
        assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0, 0, 2]);
        assert_eq!(solicited_node(host).to_string(), "ff02::1:ff00:2");
    }

    #[test]
    fn an_error_quotes_at_most_the_minimum_mtu() {
        let big = vec![0x60; 3000];
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00::2".parse().unwrap();
        let e = icmpv6_error(GW, HOST, src, dst, 2, 0, 1500u32.to_be_bytes(), &big);
        assert_eq!(e.len() - 14, MIN_MTU);
    }
}
