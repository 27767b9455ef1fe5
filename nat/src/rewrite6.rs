//! NAT66: in-place rewrite of an IPv6 packet's addresses and TCP/UDP ports or ICMPv6 echo
//! identifier, with incremental checksum updates (RFC 1624), and the translation of ICMPv6
//! errors, whose quoted packet is translated along with the outer header.
//!
//! IPv6 has no header checksum, but every upper-layer checksum covers the pseudo-header
//! (ICMPv6's too, unlike ICMPv4's), so an address change updates the TCP, UDP or ICMPv6
//! checksum. The same rules as for IPv4 hold: nothing panics on any input, on error the frame
//! is unchanged, and a checksum that was wrong stays wrong by the same amount.

use crate::RewriteError;
use packet::checksum::{update_addr_v6, update_partial_addr_v6, update_u16};
use packet::{Classified, IPPROTO_ICMPV6, IPV6_HEADER_LEN, L3, L4};
use std::net::Ipv6Addr;

/// One side of an IPv6 flow: an address and a TCP/UDP port or ICMPv6 echo identifier (the
/// request carries it as its source's, the reply as its destination's, as for IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint6 {
    /// IPv6 address.
    pub addr: Ipv6Addr,
    /// TCP/UDP port, or ICMPv6 echo identifier.
    pub port: u16,
}

impl Endpoint6 {
    /// An endpoint from its address and port.
    #[inline]
    pub const fn new(addr: Ipv6Addr, port: u16) -> Self {
        Self { addr, port }
    }
}

/// Where an upper-layer header keeps its checksum and its ports (or identifier).
fn layout(protocol: u8, l4: &L4) -> Option<(usize, usize)> {
    match (protocol, l4) {
        (6, L4::Tcp { .. }) => Some((16, 0)),
        (17, L4::Udp { .. }) => Some((6, 0)),
        // Echo request 128, reply 129: the identifier at 4.
        (IPPROTO_ICMPV6, L4::Icmp { ty: 128 | 129, .. }) => Some((2, 4)),
        _ => None,
    }
}

/// Rewrites the packet classified as `c` to carry `src` → `dst`. `l4_partial`: the TCP/UDP
/// checksum field holds the pseudo-header sum for the device to finish (a virtio-net
/// `NEEDS_CSUM` frame), so it takes the address delta only, as the kernel's
/// `inet_proto_csum_replace16` with `pseudohdr` does. A later fragment (no upper-layer header)
/// has only its addresses rewritten: the checksum is in the first fragment.
pub fn rewrite6(
    frame: &mut [u8],
    c: &Classified,
    src: Endpoint6,
    dst: Endpoint6,
    l4_partial: bool,
) -> Result<(), RewriteError> {
    let L3::Ipv6(info) = c.l3 else {
        return Err(RewriteError::NotIpv4);
    };
    let pkt = frame
        .get_mut(c.l3_offset..c.ip_end)
        .ok_or(RewriteError::Truncated)?;
    let header_len = c.l4_offset.checked_sub(c.l3_offset);
    if header_len.is_none_or(|h| h < IPV6_HEADER_LEN || h > pkt.len()) {
        return Err(RewriteError::Truncated);
    }
    let (ip, seg) = pkt.split_at_mut(c.l4_offset - c.l3_offset);
    let fields = if info.is_later_fragment() {
        None
    } else {
        layout(info.protocol, &c.l4)
    };
    if let Some((ck, ports)) = fields
        && seg.len() < (ck + 2).max(ports + 4)
    {
        return Err(RewriteError::Truncated);
    }
    ip[8..24].copy_from_slice(&src.addr.octets());
    ip[24..40].copy_from_slice(&dst.addr.octets());
    let Some((ck_at, ports_at)) = fields else {
        return Ok(());
    };
    let mut ck = u16::from_be_bytes([seg[ck_at], seg[ck_at + 1]]);
    let partial = l4_partial && info.protocol != IPPROTO_ICMPV6;
    for (old, new) in [(info.src, src.addr), (info.dst, dst.addr)] {
        if old != new {
            ck = if partial {
                update_partial_addr_v6(ck, old, new)
            } else {
                update_addr_v6(ck, old, new)
            };
        }
    }
    let new_ports: [Option<u16>; 2] = if info.protocol == IPPROTO_ICMPV6 {
        // The identifier: the request's source side, the reply's destination side.
        let request = seg[0] == 128;
        [Some(if request { src.port } else { dst.port }), None]
    } else {
        [Some(src.port), Some(dst.port)]
    };
    for (i, new) in new_ports.into_iter().enumerate() {
        let Some(new) = new else { continue };
        let at = ports_at + 2 * i;
        let old = u16::from_be_bytes([seg[at], seg[at + 1]]);
        if old != new {
            seg[at..at + 2].copy_from_slice(&new.to_be_bytes());
            if !partial {
                ck = update_u16(ck, old, new);
            }
        }
    }
    seg[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::checksum::l4_checksum_v6;
    use packet::{MacAddr, classify};
    use proptest::prelude::*;
    use testkit::frames as build;

    fn verifies(f: &[u8]) -> bool {
        let c = classify(f).unwrap();
        let L3::Ipv6(i) = c.l3 else { return false };
        l4_checksum_v6(i.src, i.dst, i.protocol, &f[c.l4_offset..c.ip_end]) == 0
    }

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    /// A frame by testkit's builders (etherparse: an independent implementation).
    fn build(proto: u8, src: Ipv6Addr, dst: Ipv6Addr, sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
        match proto {
            6 => build::tcp6(A, B, src, dst, sp, dp, 1, 0, 0x02, payload),
            17 => build::udp6(A, B, src, dst, sp, dp, payload),
            _ => build::icmpv6_echo(A, B, src, dst, true, sp, 1, payload),
        }
    }

    proptest! {
        /// Masquerade and back: the packet that returns is the packet that left, and every
        /// intermediate checksum verifies.
        #[test]
        fn a_round_trip_restores_the_packet(
            proto in prop::sample::select(vec![6u8, 17, 58]),
            inside in any::<u128>(), remote in any::<u128>(), public in any::<u128>(),
            sp in 1u16.., dp in 1u16.., mapped in 1u16..,
            payload in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let (inside, remote, public) =
                (Ipv6Addr::from(inside), Ipv6Addr::from(remote), Ipv6Addr::from(public));
            let original = build(proto, inside, remote, sp, dp, &payload);
            prop_assert!(verifies(&original));
            let mut f = original.clone();
            let c = classify(&f).unwrap();
            let dp_out = if proto == 58 { mapped } else { dp };
            rewrite6(&mut f, &c, Endpoint6::new(public, mapped), Endpoint6::new(remote, dp_out), false)
                .unwrap();
            prop_assert!(verifies(&f));
            let c = classify(&f).unwrap();
            prop_assert!(matches!(c.l3, L3::Ipv6(i) if i.src == public));
            rewrite6(&mut f, &c, Endpoint6::new(inside, sp), Endpoint6::new(remote, dp), false)
                .unwrap();
            prop_assert_eq!(f, original);
        }
    }

    #[test]
    fn a_partial_checksum_takes_the_address_delta_only() {
        let (a, b, p): (Ipv6Addr, Ipv6Addr, Ipv6Addr) = (
            "fd00::2".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "2001:db8::100".parse().unwrap(),
        );
        let mut f = build(6, a, b, 1000, 80, b"data");
        let c = classify(&f).unwrap();
        // The partial form: the folded pseudo-header sum in the field.
        let len = (c.ip_end - c.l4_offset) as u32;
        let field =
            |s, d| packet::checksum::fold(packet::checksum::pseudo_header_sum_v6(s, d, 6, len));
        let at = c.l4_offset + 16;
        f[at..at + 2].copy_from_slice(&field(a, b).to_be_bytes());
        rewrite6(
            &mut f,
            &c,
            Endpoint6::new(p, 40000),
            Endpoint6::new(b, 80),
            true,
        )
        .unwrap();
        assert_eq!(u16::from_be_bytes([f[at], f[at + 1]]), field(p, b));
        assert_eq!(
            u16::from_be_bytes([f[c.l4_offset], f[c.l4_offset + 1]]),
            40000
        );
    }

    #[test]
    fn garbage_leaves_the_frame_unchanged() {
        let a: Ipv6Addr = "fd00::2".parse().unwrap();
        let f = build(17, a, a, 1, 2, b"x");
        let mut c = classify(&f).unwrap();
        c.ip_end = f.len() + 1;
        let mut g = f.clone();
        let e = Endpoint6::new(Ipv6Addr::LOCALHOST, 9);
        assert_eq!(
            rewrite6(&mut g, &c, e, e, false),
            Err(RewriteError::Truncated)
        );
        assert_eq!(g, f);
        let v4 = build::udp(A, B, [10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 1, 2, b"x");
        let c4 = classify(&v4).unwrap();
        assert_eq!(
            rewrite6(&mut g, &c4, e, e, false),
            Err(RewriteError::NotIpv4)
        );
    }
}
