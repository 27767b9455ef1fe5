//! Frames the gateway originates: ARP requests and replies, ICMP echo replies and ICMP errors
//! (their IPv6 counterparts, neighbour discovery among them, in [`v6`]).
//!
//! These are slow-path frames (one per ARP miss or error), so they are built into fresh buffers
//! with fixed layouts; nothing here can fail or panic, whatever the offending packet looks like.

pub mod v6;

use packet::checksum::{internet_checksum, update_u16};
use packet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, MacAddr};
use std::net::Ipv4Addr;

/// TTL of packets the gateway originates.
pub const ORIGIN_TTL: u8 = 64;

/// Writes an Ethernet II header.
pub(crate) fn ethernet_header(out: &mut Vec<u8>, src: MacAddr, dst: MacAddr, ethertype: u16) {
    out.extend_from_slice(&dst.0);
    out.extend_from_slice(&src.0);
    out.extend_from_slice(&ethertype.to_be_bytes());
}

fn arp(
    op: u16,
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
    eth_dst: MacAddr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    ethernet_header(&mut f, src_mac, eth_dst, ETHERTYPE_ARP);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&target_mac.0);
    f.extend_from_slice(&target_ip.octets());
    f
}

/// ARP reply: `our_ip` is at `our_mac`, sent to the asker.
pub fn arp_reply(our_mac: MacAddr, our_ip: Ipv4Addr, to_mac: MacAddr, to_ip: Ipv4Addr) -> Vec<u8> {
    arp(2, our_mac, our_ip, to_mac, to_mac, to_ip)
}

/// Broadcast ARP request for `target`.
pub fn arp_request(our_mac: MacAddr, our_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp(
        1,
        our_mac,
        our_ip,
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        target,
    )
}

/// The first word and the rest of an ICMP header (RFC 792), without the checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpHeader {
    /// Type (3 destination unreachable, 11 time exceeded, ...).
    pub ty: u8,
    /// Code within the type.
    pub code: u8,
    /// The 4 bytes after the checksum (unused, or the next-hop MTU for fragmentation needed).
    pub rest: [u8; 4],
}

/// An ICMP error about `offending` (the IPv4 packet that caused it, from its header on): quotes
/// the IP header and the first 8 bytes of payload, as RFC 792 asks.
pub fn icmp_error(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    header: IcmpHeader,
    offending: &[u8],
) -> Vec<u8> {
    let IcmpHeader {
        ty,
        code,
        rest: rest_of_header,
    } = header;
    let ihl = offending.first().map_or(20, |b| usize::from(b & 0x0f) * 4);
    let quote = &offending[..offending.len().min(ihl + 8)];
    let total_len = 20 + 8 + quote.len();
    let mut f = Vec::with_capacity(14 + total_len);
    ethernet_header(&mut f, src_mac, dst_mac, ETHERTYPE_IPV4);
    // total_len is at most 20 + 8 + 68, so the cast is exact.
    let len = (total_len as u16).to_be_bytes();
    f.extend_from_slice(&[0x45, 0, len[0], len[1], 0, 0, 0, 0, ORIGIN_TTL, 1, 0, 0]);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&dst_ip.octets());
    let ip_csum = internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&ip_csum.to_be_bytes());
    f.extend_from_slice(&[ty, code, 0, 0]);
    f.extend_from_slice(&rest_of_header);
    f.extend_from_slice(quote);
    let icmp_csum = internet_checksum(&f[34..]);
    f[36..38].copy_from_slice(&icmp_csum.to_be_bytes());
    f
}

/// A TCP reset answering a segment from `to` to `from` that no connection takes (RFC 793
/// 3.4): `seq` and, for a segment without ACK, `ack` (RST+ACK) as the RFC's reset generation
/// rules give them.
pub fn tcp_rst(
    macs: (MacAddr, MacAddr),
    from: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
    seq: u32,
    ack: Option<u32>,
) -> Vec<u8> {
    let (src_mac, dst_mac) = macs;
    let mut f = Vec::with_capacity(14 + 40);
    ethernet_header(&mut f, src_mac, dst_mac, ETHERTYPE_IPV4);
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, ORIGIN_TTL, 6, 0, 0]);
    f.extend_from_slice(&from.0.octets());
    f.extend_from_slice(&to.0.octets());
    let ip_csum = internet_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&ip_csum.to_be_bytes());
    f.extend_from_slice(&from.1.to_be_bytes());
    f.extend_from_slice(&to.1.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.unwrap_or(0).to_be_bytes());
    let flags = if ack.is_some() { 0x14 } else { 0x04 };
    f.extend_from_slice(&[0x50, flags, 0, 0, 0, 0, 0, 0]);
    // The pseudo-header (RFC 793): addresses, protocol, TCP length.
    let mut pseudo = Vec::with_capacity(12 + 20);
    pseudo.extend_from_slice(&f[26..34]);
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&f[34..54]);
    let tcp_csum = internet_checksum(&pseudo);
    f[50..52].copy_from_slice(&tcp_csum.to_be_bytes());
    f
}

/// Turns an ICMP echo request frame into the reply, in place: MACs and addresses swapped, type 0,
/// TTL reset; checksums updated incrementally (a wrong one stays wrong).
pub fn echo_reply_in_place(frame: &mut [u8], l3: usize, l4: usize) {
    if frame.len() < l4 + 8 || l4 < l3 + 20 {
        return;
    }
    let (dst, src) = frame.split_at_mut(6);
    dst.swap_with_slice(&mut src[..6]);
    // Swapping source and destination addresses leaves the header sum unchanged.
    for i in 0..4 {
        frame.swap(l3 + 12 + i, l3 + 16 + i);
    }
    let old_ttl_word = u16::from_be_bytes([frame[l3 + 8], frame[l3 + 9]]);
    frame[l3 + 8] = ORIGIN_TTL;
    let new_ttl_word = u16::from_be_bytes([frame[l3 + 8], frame[l3 + 9]]);
    let ip_csum = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
    frame[l3 + 10..l3 + 12]
        .copy_from_slice(&update_u16(ip_csum, old_ttl_word, new_ttl_word).to_be_bytes());
    let old_type_word = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
    frame[l4] = 0;
    let new_type_word = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
    let icmp_csum = u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]);
    frame[l4 + 2..l4 + 4]
        .copy_from_slice(&update_u16(icmp_csum, old_type_word, new_type_word).to_be_bytes());
}

/// Decrements the TTL of the IPv4 header at `l3`, updating its checksum (RFC 1624).
pub fn decrement_ttl(frame: &mut [u8], l3: usize) {
    let Some(h) = frame.get_mut(l3..l3 + 12) else {
        return;
    };
    let old = u16::from_be_bytes([h[8], h[9]]);
    h[8] = h[8].saturating_sub(1);
    let new = u16::from_be_bytes([h[8], h[9]]);
    let csum = u16::from_be_bytes([h[10], h[11]]);
    h[10..12].copy_from_slice(&update_u16(csum, old, new).to_be_bytes());
}

/// Rewrites the Ethernet source and destination of a frame.
pub fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    if let Some(h) = frame.get_mut(..12) {
        h[..6].copy_from_slice(&dst.0);
        h[6..].copy_from_slice(&src.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::{L4, classify};
    use testkit::frames as build;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn ip_ok(f: &[u8]) -> bool {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        internet_checksum(&f[14..14 + ihl]) == 0
    }

    #[test]
    fn echo_reply_is_valid_and_swapped() {
        let mut f = build::icmp_echo(
            A,
            B,
            [10, 0, 0, 2].into(),
            [10, 0, 0, 1].into(),
            true,
            7,
            1,
            b"ping",
        );
        echo_reply_in_place(&mut f, 14, 34);
        let c = classify(&f).unwrap();
        assert_eq!(
            c.l4,
            L4::Icmp {
                ty: 0,
                code: 0,
                ident: 7
            }
        );
        assert_eq!(&f[0..6], &A.0);
        assert_eq!(&f[26..30], &[10, 0, 0, 1]);
        assert!(ip_ok(&f));
        assert_eq!(internet_checksum(&f[34..]), 0);
    }

    #[test]
    fn icmp_error_quotes_header_and_8_bytes() {
        let offending = build::udp(
            A,
            B,
            [10, 0, 0, 2].into(),
            [8, 8, 8, 8].into(),
            1000,
            53,
            &[9; 100],
        );
        let f = icmp_error(
            B,
            A,
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            IcmpHeader {
                ty: 11,
                code: 0,
                rest: [0; 4],
            },
            &offending[14..],
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 28);
        assert!(ip_ok(&f));
        assert_eq!(internet_checksum(&f[34..]), 0);
        assert_eq!(&f[42..70], &offending[14..42]);
        // Garbage offending bytes still give a well-formed error.
        let g = icmp_error(
            B,
            A,
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            IcmpHeader {
                ty: 3,
                code: 4,
                rest: [0; 4],
            },
            &[0xff],
        );
        assert!(ip_ok(&g));
    }

    #[test]
    fn tcp_rst_is_valid() {
        let f = tcp_rst(
            (B, A),
            ([10, 0, 2, 100].into(), 80),
            ([10, 0, 0, 2].into(), 40000),
            0,
            Some(1001),
        );
        assert!(ip_ok(&f));
        let c = classify(&f).unwrap();
        assert_eq!(
            c.l4,
            L4::Tcp {
                src_port: 80,
                dst_port: 40000,
                flags: 0x14,
                seq: 0,
                ack: 1001,
                payload_len: 0
            }
        );
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&f[34..]);
        assert_eq!(internet_checksum(&pseudo), 0, "TCP checksum");
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut f = build::udp(A, B, [10, 0, 0, 2].into(), [8, 8, 8, 8].into(), 1, 2, b"");
        decrement_ttl(&mut f, 14);
        assert_eq!(f[22], 63);
        assert!(ip_ok(&f));
    }
}
