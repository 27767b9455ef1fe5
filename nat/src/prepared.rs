//! A flow's rewrite prepared once: its checksum changes summed when the flow's action is
//! decided, so that each later packet only writes the new endpoints and applies two folded
//! deltas (the NAT flow cache's fast path).
//!
//! Invariant: [`rewrite_prepared`] writes exactly what [`crate::rewrite_offloaded`] writes for
//! the same frame and endpoints, bit for bit (the same RFC 1624 terms, summed in advance). It
//! checks that the frame carries the endpoints the deltas were prepared from and falls back to
//! the general rewrite for anything else (ICMP, a short segment, other endpoints), so a wrong
//! preparation can cost time, never a wrong checksum.

use crate::rewrite::{TCP_CHECKSUM, UDP_CHECKSUM, rewrite_offloaded};
use crate::wire::{Delta, FoldedDelta};
use crate::{Endpoint, RewriteError};
use packet::{Classified, L3, L4};

/// The checksum changes of rewriting `from` endpoints to `to` endpoints (see
/// [`Prepared::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    from: (Endpoint, Endpoint),
    to: (Endpoint, Endpoint),
    /// The IPv4 header's terms (addresses); a partial checksum field takes the same ones
    /// (the pseudo-header addresses).
    ip: FoldedDelta,
    /// A complete TCP/UDP checksum's terms (pseudo-header addresses and ports).
    l4: FoldedDelta,
}

impl Prepared {
    /// The changes of rewriting source `from.0` / destination `from.1` to `to.0` / `to.1`.
    pub fn new(from: (Endpoint, Endpoint), to: (Endpoint, Endpoint)) -> Prepared {
        let mut pseudo = Delta::default();
        pseudo.addr(from.0.addr, to.0.addr);
        pseudo.addr(from.1.addr, to.1.addr);
        let mut l4 = pseudo;
        l4.word(from.0.port, to.0.port);
        l4.word(from.1.port, to.1.port);
        Prepared {
            from,
            to,
            ip: pseudo.into(),
            l4: l4.into(),
        }
    }

    /// The endpoints it writes: (source, destination).
    pub fn to(&self) -> (Endpoint, Endpoint) {
        self.to
    }
}

/// [`crate::rewrite_offloaded`] with the checksum terms summed in advance: for a TCP or UDP
/// packet (not a later fragment) carrying `p`'s `from` endpoints, writes `p`'s `to` endpoints.
/// Anything else goes through the general rewrite, with the same result.
///
/// # Errors
/// As [`crate::rewrite_offloaded`].
#[inline]
pub fn rewrite_prepared(
    frame: &mut [u8],
    c: &Classified,
    p: &Prepared,
    l4_partial: bool,
) -> Result<(), RewriteError> {
    let general = |frame: &mut [u8]| rewrite_offloaded(frame, c, p.to.0, p.to.1, l4_partial);
    let (proto, ck_off, udp) = match (c.l3, c.l4) {
        (L3::Ipv4(i), L4::Tcp { .. }) if i.frag_offset == 0 => (6, TCP_CHECKSUM, false),
        (L3::Ipv4(i), L4::Udp { .. }) if i.frag_offset == 0 => (17, UDP_CHECKSUM, true),
        _ => return general(frame),
    };
    let header_len = c.l4_offset.wrapping_sub(c.l3_offset);
    if header_len < 20 {
        return general(frame);
    }
    // One bounds check for every field touched: the IPv4 header's first 20 bytes and the
    // transport header up to its checksum.
    let Some((ip, seg)) = frame
        .get_mut(c.l3_offset..c.ip_end)
        .and_then(|pkt| pkt.split_at_mut_checked(header_len))
    else {
        return general(frame);
    };
    let (Some(ip), Some(seg)) = (ip.first_chunk_mut::<20>(), seg.get_mut(..ck_off + 2)) else {
        return general(frame);
    };
    let from = &p.from;
    let matches = ip[9] == proto
        && (u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) == 0
        && ip[12..16] == from.0.addr.octets()
        && ip[16..20] == from.1.addr.octets()
        && seg[0..2] == from.0.port.to_be_bytes()
        && seg[2..4] == from.1.port.to_be_bytes();
    if !matches {
        return general(frame);
    }
    let ip_ck = u16::from_be_bytes([ip[10], ip[11]]);
    let l4_ck = u16::from_be_bytes([seg[ck_off], seg[ck_off + 1]]);
    ip[12..16].copy_from_slice(&p.to.0.addr.octets());
    ip[16..20].copy_from_slice(&p.to.1.addr.octets());
    ip[10..12].copy_from_slice(&p.ip.delta().apply_ip_header(ip_ck).to_be_bytes());
    seg[0..2].copy_from_slice(&p.to.0.port.to_be_bytes());
    seg[2..4].copy_from_slice(&p.to.1.port.to_be_bytes());
    let new_ck = if l4_partial {
        p.ip.delta().apply_partial(l4_ck)
    } else if udp && l4_ck == 0 {
        // RFC 768: no checksum stays no checksum.
        0
    } else {
        match p.l4.delta().apply(l4_ck) {
            0 if udp => 0xffff,
            ck => ck,
        }
    };
    seg[ck_off..ck_off + 2].copy_from_slice(&new_ck.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use packet::{Ipv4Addr, classify};
    use proptest::prelude::*;
    use testkit::frames as build;

    fn ep(a: [u8; 4], port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::from(a), port)
    }

    #[allow(clippy::too_many_arguments)]
    fn frame(tcp: bool, from: (Endpoint, Endpoint), payload: &[u8], ck: Option<u16>) -> Vec<u8> {
        let (s, d) = from;
        let mut f = if tcp {
            build::tcp(
                MAC_A, MAC_B, s.addr, d.addr, s.port, d.port, 7, 9, 0x10, payload,
            )
        } else {
            build::udp(MAC_A, MAC_B, s.addr, d.addr, s.port, d.port, payload)
        };
        if let Some(ck) = ck {
            let off = 14 + 20 + if tcp { 16 } else { 6 };
            f[off..off + 2].copy_from_slice(&ck.to_be_bytes());
        }
        f
    }

    fn endpoint() -> impl Strategy<Value = Endpoint> {
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| ep(a, p))
    }

    proptest! {
        /// Bit for bit what the general rewrite writes, for any endpoints and checksums
        /// (0x0000, 0xffff and wrong ones included), partial or complete.
        #[test]
        fn same_bytes_as_the_general_rewrite(
            tcp in any::<bool>(),
            from in (endpoint(), endpoint()),
            to in (endpoint(), endpoint()),
            keep_src in any::<bool>(),
            ck in prop_oneof![Just(None), Just(Some(0u16)), Just(Some(0xffff)), any::<u16>().prop_map(Some)],
            partial in any::<bool>(),
            payload in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let to = if keep_src { (from.0, to.1) } else { to };
            let original = frame(tcp, from, &payload, ck);
            let c = classify(&original).unwrap();
            let (mut a, mut b) = (original.clone(), original.clone());
            let p = Prepared::new(from, to);
            let ra = rewrite_prepared(&mut a, &c, &p, partial);
            let rb = rewrite_offloaded(&mut b, &c, to.0, to.1, partial);
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn other_endpoints_and_icmp_take_the_general_rewrite() {
        let from = (ep([10, 0, 0, 2], 1000), ep([198, 51, 100, 1], 53));
        let to = (ep([203, 0, 113, 2], 2000), from.1);
        let p = Prepared::new(from, to);
        // The frame carries another source port than prepared for: still right.
        let mut f = frame(false, (ep([10, 0, 0, 2], 1001), from.1), b"q", None);
        let c = classify(&f).unwrap();
        rewrite_prepared(&mut f, &c, &p, false).unwrap();
        verify(&f).unwrap();
        assert_eq!(&f[34..36], &2000u16.to_be_bytes());
        let mut ping = build::icmp_echo(MAC_A, MAC_B, from.0.addr, from.1.addr, true, 1000, 1, b"");
        let c = classify(&ping).unwrap();
        rewrite_prepared(&mut ping, &c, &p, false).unwrap();
        verify(&ping).unwrap();
        assert_eq!(&ping[26..30], &[203, 0, 113, 2]);
    }
}
