//! In-place rewrite of an IPv4 packet's endpoints with incremental checksum updates.
//!
//! A NAT changes an address or a port and must fix every checksum that covers it: the IPv4
//! header checksum, and the TCP/UDP checksum through its pseudo-header (RFC 3022 section 4.2).
//! RFC 1624 updates them from the old and new values without summing the packet again.
//! Invariants:
//! - the old values are read from the frame, not from the [`Classified`], so a stale
//!   classification can never make a checksum wrong; it can only make the call fail;
//! - every read happens before the first write, so on error the frame is unchanged;
//! - nothing at or past `ip_end` (Ethernet padding) is read or written.

use crate::wire::{Delta, rd_addr, rd16, wr_addr, wr16};
use crate::{Endpoint, RewriteError};
use packet::{Classified, L3, L4};

/// Offset of the TCP checksum in the TCP header.
pub(crate) const TCP_CHECKSUM: usize = 16;
/// Offset of the UDP checksum in the UDP header.
pub(crate) const UDP_CHECKSUM: usize = 6;
/// Offset of the checksum in an ICMP header.
pub(crate) const ICMP_CHECKSUM: usize = 2;
/// Offset of the identifier in an ICMP query header.
pub(crate) const ICMP_IDENT: usize = 4;

/// ICMP query request types, whose identifier belongs to the source: echo (8), timestamp (13),
/// information (15), address mask (17).
#[inline]
pub fn is_query_request(ty: u8) -> bool {
    matches!(ty, 8 | 13 | 15 | 17)
}

/// ICMP query reply types, whose identifier belongs to the destination: echo reply (0),
/// timestamp reply (14), information reply (16), address mask reply (18).
#[inline]
pub fn is_query_reply(ty: u8) -> bool {
    matches!(ty, 0 | 14 | 16 | 18)
}

/// Rewrites the IPv4 packet of `frame` (classified as `c`) so that its source becomes `src` and
/// its destination `dst`. Only fields that differ are written.
///
/// - TCP/UDP: addresses and ports; the transport checksum is updated for the pseudo-header
///   addresses and the ports. A UDP checksum of 0 ("none", RFC 768) stays 0, and an updated UDP
///   checksum that comes out as 0 is sent as 0xffff ("If the computed checksum is zero, it is
///   transmitted as all ones").
/// - ICMP queries (echo, timestamp, information, address mask): addresses and the identifier,
///   which is `src.port` for a request and `dst.port` for a reply (see the crate docs). ICMPv4
///   has no pseudo-header, so only an identifier change touches the ICMP checksum.
/// - Other ICMP messages (errors included: use [`crate::rewrite_icmp_error`] to translate their
///   quote), other protocols, and non-first fragments (fragment offset != 0, which hold no
///   transport header): only the addresses; the ports are ignored.
///
/// The IPv4 header checksum is always updated. Checksums are updated incrementally (RFC 1624),
/// so a wrong checksum stays wrong by the same amount. A first fragment's transport checksum
/// covers the whole datagram, which the incremental update handles without seeing it.
///
/// # Errors
/// [`RewriteError::NotIpv4`] if `c` is not IPv4; [`RewriteError::Truncated`] if `c`'s offsets
/// do not fit the frame or its transport kind disagrees with the frame's protocol field. The frame
/// is unchanged on error.
pub fn rewrite(
    frame: &mut [u8],
    c: &Classified,
    src: Endpoint,
    dst: Endpoint,
) -> Result<(), RewriteError> {
    rewrite_offloaded(frame, c, src, dst, false)
}

/// [`rewrite`] for a frame whose TCP/UDP checksum may be *partial* (`l4_partial`: the field
/// holds the pseudo-header sum for the device to finish, as in GSO super-frames). Then the
/// address changes update the field by the pseudo-header rule, without the final complement,
/// and the port changes touch nothing there (the device sums the ports with the rest of the
/// segment). RFC 1624 on a partial field would corrupt it. The IPv4 header checksum is complete
/// either way and is updated as usual.
///
/// # Errors
/// As [`rewrite`].
pub fn rewrite_offloaded(
    frame: &mut [u8],
    c: &Classified,
    src: Endpoint,
    dst: Endpoint,
    l4_partial: bool,
) -> Result<(), RewriteError> {
    let L3::Ipv4(_) = c.l3 else {
        return Err(RewriteError::NotIpv4);
    };
    let pkt = frame
        .get_mut(c.l3_offset..c.ip_end)
        .ok_or(RewriteError::Truncated)?;
    let header_len = c
        .l4_offset
        .checked_sub(c.l3_offset)
        .filter(|&hl| hl >= 20)
        .ok_or(RewriteError::Truncated)?;
    let (ip, seg) = pkt
        .split_at_mut_checked(header_len)
        .ok_or(RewriteError::Truncated)?;
    let (old_src, old_dst, ip_ck, frag, protocol) = read_ipv4(ip).ok_or(RewriteError::Truncated)?;

    let mut pseudo = Delta::default();
    pseudo.addr(old_src, src.addr);
    pseudo.addr(old_dst, dst.addr);
    // Only the first fragment carries the transport header, whatever `c` says.
    let l4 = if frag & 0x1fff != 0 { L4::None } else { c.l4 };
    let mut ignored = Delta::default();
    let done = match l4 {
        L4::Tcp { .. } | L4::Udp { .. } if l4_partial => {
            let ck_off = if protocol == 6 {
                TCP_CHECKSUM
            } else {
                UDP_CHECKSUM
            };
            rewrite_ports_partial(seg, ck_off, pseudo, src.port, dst.port)
        }
        L4::Tcp { .. } if protocol == 6 => rewrite_ports(
            seg,
            TCP_CHECKSUM,
            false,
            pseudo,
            src.port,
            dst.port,
            &mut ignored,
        ),
        L4::Udp { .. } if protocol == 17 => rewrite_ports(
            seg,
            UDP_CHECKSUM,
            true,
            pseudo,
            src.port,
            dst.port,
            &mut ignored,
        ),
        L4::Icmp { .. } if protocol == 1 => {
            let ty = *seg.first().ok_or(RewriteError::Truncated)?;
            if is_query_request(ty) {
                rewrite_ident(seg, src.port, &mut ignored)
            } else if is_query_reply(ty) {
                rewrite_ident(seg, dst.port, &mut ignored)
            } else {
                Some(())
            }
        }
        L4::None => Some(()),
        // The classification names a transport the frame's protocol field does not carry.
        _ => None,
    };
    done.ok_or(RewriteError::Truncated)?;

    write_addrs(ip, src.addr, dst.addr, ip_ck, &mut ignored).ok_or(RewriteError::Truncated)
}

/// Source, destination, header checksum, flags+fragment word and protocol of an IPv4 header.
#[inline]
fn read_ipv4(ip: &[u8]) -> Option<(packet::Ipv4Addr, packet::Ipv4Addr, u16, u16, u8)> {
    Some((
        rd_addr(ip, 12)?,
        rd_addr(ip, 16)?,
        rd16(ip, 10)?,
        rd16(ip, 6)?,
        *ip.get(9)?,
    ))
}

/// Writes the addresses of an IPv4 header (already read successfully) and updates its checksum
/// `ck`; every changed word is added to `outer` (for an enclosing ICMP checksum).
#[inline]
pub(crate) fn write_addrs(
    ip: &mut [u8],
    src: packet::Ipv4Addr,
    dst: packet::Ipv4Addr,
    ck: u16,
    outer: &mut Delta,
) -> Option<()> {
    let old_src = rd_addr(ip, 12)?;
    let old_dst = rd_addr(ip, 16)?;
    let mut d = Delta::default();
    d.addr(old_src, src);
    d.addr(old_dst, dst);
    let new_ck = d.apply_ip_header(ck);
    wr_addr(ip, 12, src)?;
    wr_addr(ip, 16, dst)?;
    wr16(ip, 10, new_ck)?;
    outer.merge(d);
    outer.word(ck, new_ck);
    Some(())
}

/// Rewrites the ports of a TCP/UDP header at the start of `seg` and updates its checksum at
/// `ck_off` by `pseudo` (the pseudo-header address changes) plus the port changes. The checksum
/// is left alone if `seg` ends before it (an ICMP quote of only 8 TCP bytes). Every changed word
/// is added to `outer`. Reads everything before writing anything.
pub(crate) fn rewrite_ports(
    seg: &mut [u8],
    ck_off: usize,
    udp: bool,
    pseudo: Delta,
    src_port: u16,
    dst_port: u16,
    outer: &mut Delta,
) -> Option<()> {
    let old_sp = rd16(seg, 0)?;
    let old_dp = rd16(seg, 2)?;
    let ck = rd16(seg, ck_off);
    wr16(seg, 0, src_port)?;
    wr16(seg, 2, dst_port)?;
    outer.word(old_sp, src_port);
    outer.word(old_dp, dst_port);
    let Some(ck) = ck else {
        return Some(());
    };
    // RFC 768: a zero UDP checksum means the sender computed none; keep it that way.
    if udp && ck == 0 {
        return Some(());
    }
    let mut d = pseudo;
    d.word(old_sp, src_port);
    d.word(old_dp, dst_port);
    let mut new_ck = d.apply(ck);
    if udp && new_ck == 0 {
        new_ck = 0xffff;
    }
    wr16(seg, ck_off, new_ck)?;
    outer.word(ck, new_ck);
    Some(())
}

/// Ports of a TCP/UDP header whose checksum field is partial: the field takes only the
/// pseudo-header (address) terms.
fn rewrite_ports_partial(
    seg: &mut [u8],
    ck_off: usize,
    pseudo: Delta,
    src_port: u16,
    dst_port: u16,
) -> Option<()> {
    let field = rd16(seg, ck_off)?;
    wr16(seg, 0, src_port)?;
    wr16(seg, 2, dst_port)?;
    wr16(seg, ck_off, pseudo.apply_partial(field))
}

/// Rewrites the identifier of an ICMP query at the start of `seg` and updates the ICMP
/// checksum (no pseudo-header in ICMPv4). Every changed word is added to `outer`.
pub(crate) fn rewrite_ident(seg: &mut [u8], ident: u16, outer: &mut Delta) -> Option<()> {
    let old = rd16(seg, ICMP_IDENT)?;
    let ck = rd16(seg, ICMP_CHECKSUM)?;
    let mut d = Delta::default();
    d.word(old, ident);
    let new_ck = d.apply(ck);
    wr16(seg, ICMP_IDENT, ident)?;
    wr16(seg, ICMP_CHECKSUM, new_ck)?;
    outer.word(old, ident);
    outer.word(ck, new_ck);
    Some(())
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

    const INT: [u8; 4] = [10, 0, 0, 2];
    const EXT: [u8; 4] = [203, 0, 113, 1];
    const REMOTE: [u8; 4] = [198, 51, 100, 7];

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        build::tcp(
            MAC_A,
            MAC_B,
            INT.into(),
            REMOTE.into(),
            40000,
            443,
            1,
            2,
            0x12,
            payload,
        )
    }

    fn snat(frame: &mut [u8], port: u16) -> Classified {
        let c = classify(frame).unwrap();
        rewrite(frame, &c, ep(EXT, port), ep(REMOTE, 443)).unwrap();
        c
    }

    #[test]
    fn tcp_source_rewrite_verifies() {
        let mut f = tcp_frame(b"hello world");
        snat(&mut f, 61000);
        verify(&f).unwrap();
        let c = classify(&f).unwrap();
        assert!(matches!(c.l3, L3::Ipv4(i) if i.src == Ipv4Addr::from(EXT)));
        assert!(matches!(
            c.l4,
            L4::Tcp {
                src_port: 61000,
                dst_port: 443,
                ..
            }
        ));
    }

    #[test]
    fn tcp_destination_rewrite_verifies() {
        let mut f = tcp_frame(b"x");
        let c = classify(&f).unwrap();
        rewrite(&mut f, &c, ep(INT, 40000), ep([192, 168, 1, 10], 8443)).unwrap();
        verify(&f).unwrap();
        assert_eq!(&f[30..34], &[192, 168, 1, 10]);
        assert_eq!(&f[36..38], &8443u16.to_be_bytes());
    }

    #[test]
    fn udp_rewrite_verifies() {
        let mut f = build::udp(MAC_A, MAC_B, INT.into(), REMOTE.into(), 5353, 53, b"query");
        snat(&mut f, 33333);
        verify(&f).unwrap();
        assert_eq!(&f[34..36], &33333u16.to_be_bytes());
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut f = build::udp(MAC_A, MAC_B, INT.into(), REMOTE.into(), 5353, 53, b"q");
        f[40] = 0;
        f[41] = 0;
        let c = classify(&f).unwrap();
        rewrite(&mut f, &c, ep(EXT, 1024), ep(REMOTE, 53)).unwrap();
        assert_eq!(&f[40..42], &[0, 0]);
        verify(&f).unwrap();
    }

    #[test]
    fn udp_result_zero_is_sent_as_ffff() {
        // Find a source port for which the updated UDP checksum is ones' complement zero: the
        // checksum moves by one for each unit of port, so some port in a small window hits it.
        let base = build::udp(MAC_A, MAC_B, INT.into(), REMOTE.into(), 5353, 53, b"zz");
        let mut hit = false;
        for port in 1..=u16::MAX {
            let mut f = base.clone();
            let c = classify(&f).unwrap();
            rewrite(&mut f, &c, ep(EXT, port), ep(REMOTE, 53)).unwrap();
            let ck = u16::from_be_bytes([f[40], f[41]]);
            assert_ne!(ck, 0, "UDP checksum must never become 0 (port {port})");
            verify(&f).unwrap();
            if ck == 0xffff {
                hit = true;
                break;
            }
        }
        assert!(hit, "no port gave a zero UDP checksum");
    }

    #[test]
    fn icmp_echo_request_uses_src_port_reply_uses_dst_port() {
        let mut req =
            build::icmp_echo(MAC_A, MAC_B, INT.into(), REMOTE.into(), true, 7, 1, b"ping");
        let c = classify(&req).unwrap();
        rewrite(&mut req, &c, ep(EXT, 4242), ep(REMOTE, 9999)).unwrap();
        verify(&req).unwrap();
        assert!(matches!(
            classify(&req).unwrap().l4,
            L4::Icmp { ident: 4242, .. }
        ));

        let mut rep = build::icmp_echo(
            MAC_A,
            MAC_B,
            REMOTE.into(),
            EXT.into(),
            false,
            4242,
            1,
            b"ping",
        );
        let c = classify(&rep).unwrap();
        rewrite(&mut rep, &c, ep(REMOTE, 9999), ep(INT, 7)).unwrap();
        verify(&rep).unwrap();
        assert!(matches!(
            classify(&rep).unwrap().l4,
            L4::Icmp { ident: 7, .. }
        ));
        assert_eq!(&rep[30..34], &INT);
    }

    #[test]
    fn non_first_fragment_changes_addresses_only() {
        let mut f = build::udp(
            MAC_A,
            MAC_B,
            INT.into(),
            REMOTE.into(),
            5353,
            53,
            b"12345678",
        );
        // Turn it into a later fragment (offset 8 bytes): what follows the IP header is data.
        f[20] = 0;
        f[21] = 1;
        fix_ip_checksum(&mut f);
        let c = classify(&f).unwrap();
        assert_eq!(c.l4, L4::None);
        let before = f.clone();
        rewrite(&mut f, &c, ep(EXT, 1), ep(REMOTE, 2)).unwrap();
        assert_eq!(
            &f[34..],
            &before[34..],
            "payload of a later fragment is untouched"
        );
        assert_eq!(&f[26..30], &EXT);
        verify_ip(&f).unwrap();
    }

    #[test]
    fn padding_is_neither_touched_nor_summed() {
        let mut f = tcp_frame(b"");
        let ip_len = f.len();
        f.extend_from_slice(&[0xa5; 20]);
        snat(&mut f, 50000);
        assert_eq!(&f[ip_len..], &[0xa5; 20]);
        verify(&f[..ip_len]).unwrap();
        verify(&f).unwrap();
    }

    #[test]
    fn wrong_tcp_checksum_stays_wrong_by_the_same_delta() {
        let mut good = tcp_frame(b"data");
        let mut bad = good.clone();
        let off = 14 + 20 + 16;
        let ck = u16::from_be_bytes([bad[off], bad[off + 1]]);
        bad[off..off + 2].copy_from_slice(&ck.wrapping_add(0x0101).to_be_bytes());
        snat(&mut good, 61000);
        snat(&mut bad, 61000);
        verify(&good).unwrap();
        assert!(verify(&bad).is_err(), "a wrong checksum must not be fixed");
        let g = u16::from_be_bytes([good[off], good[off + 1]]);
        let b = u16::from_be_bytes([bad[off], bad[off + 1]]);
        assert_eq!(b, g.wrapping_add(0x0101));
        assert_eq!(&good[..off], &bad[..off]);
    }

    #[test]
    fn unchanged_endpoints_touch_nothing() {
        let mut f = tcp_frame(b"abc");
        let before = f.clone();
        let c = classify(&f).unwrap();
        rewrite(&mut f, &c, ep(INT, 40000), ep(REMOTE, 443)).unwrap();
        assert_eq!(f, before);
    }

    #[test]
    fn errors_leave_frame_unchanged() {
        let f = tcp_frame(b"abc");
        let c = classify(&f).unwrap();
        // Frame shorter than the classification says.
        let mut short = f[..40].to_vec();
        assert_eq!(
            rewrite(&mut short, &c, ep(EXT, 1), ep(REMOTE, 2)),
            Err(RewriteError::Truncated)
        );
        assert_eq!(short, f[..40]);
        // A classification from another frame kind.
        let mut udp = build::udp(
            MAC_A,
            MAC_B,
            INT.into(),
            REMOTE.into(),
            1,
            2,
            b"abcdefghijklmnop",
        );
        let before = udp.clone();
        assert_eq!(
            rewrite(&mut udp, &c, ep(EXT, 1), ep(REMOTE, 2)),
            Err(RewriteError::Truncated)
        );
        assert_eq!(udp, before);
        // Not IPv4.
        let mut arp = build::arp_request(MAC_A, INT.into(), REMOTE.into());
        let c = classify(&arp).unwrap();
        assert_eq!(
            rewrite(&mut arp, &c, ep(EXT, 1), ep(REMOTE, 2)),
            Err(RewriteError::NotIpv4)
        );
        // Offsets that make no sense.
        let mut f2 = f.clone();
        let mut c = classify(&f2).unwrap();
        c.l4_offset = c.l3_offset + 4;
        assert_eq!(
            rewrite(&mut f2, &c, ep(EXT, 1), ep(REMOTE, 2)),
            Err(RewriteError::Truncated)
        );
        c.l4_offset = usize::MAX;
        c.ip_end = usize::MAX;
        assert_eq!(
            rewrite(&mut f2, &c, ep(EXT, 1), ep(REMOTE, 2)),
            Err(RewriteError::Truncated)
        );
        assert_eq!(f2, f);
    }

    #[test]
    fn all_zero_echo_reply_checksum_encoding() {
        // The one frame whose checksum field must be 0xffff: an all-zero echo reply. Rewriting
        // its identifier and back gives 0x0000 by RFC 1624 eqn. 3 alone, with which the message
        // sums to +0 and fails verification (etherparse's `same_ones` in `verify` cannot see
        // that), so the update writes 0xffff (found by the nat_rewrite fuzz target).
        let mut f = build::icmp_echo(MAC_A, MAC_B, INT.into(), REMOTE.into(), false, 0, 0, b"");
        assert_eq!(&f[36..38], &[0xff, 0xff]);
        let c = classify(&f).unwrap();
        rewrite(&mut f, &c, ep(INT, 0), ep(REMOTE, 5)).unwrap();
        verify(&f).unwrap();
        rewrite(&mut f, &c, ep(INT, 0), ep(REMOTE, 0)).unwrap();
        verify(&f).unwrap();
        assert_eq!(&f[34..], &[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(packet::checksum::internet_checksum(&f[34..]), 0);
    }

    fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| ep(a, p))
    }

    /// A valid TCP, UDP or ICMP echo frame, optionally padded.
    fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            0u8..4,
            arb_endpoint(),
            arb_endpoint(),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<u32>(),
            1u16..,
            0usize..24,
        )
            .prop_map(|(kind, s, d, payload, seq, echo_seq, pad)| {
                let mut f = match kind {
                    0 => build::tcp(
                        MAC_A, MAC_B, s.addr, d.addr, s.port, d.port, seq, seq, 0x18, &payload,
                    ),
                    1 => build::udp(MAC_A, MAC_B, s.addr, d.addr, s.port, d.port, &payload),
                    2 => build::icmp_echo(
                        MAC_A, MAC_B, s.addr, d.addr, true, s.port, echo_seq, &payload,
                    ),
                    _ => build::icmp_echo(
                        MAC_A, MAC_B, s.addr, d.addr, false, d.port, echo_seq, &payload,
                    ),
                };
                f.resize(f.len() + pad, 0x5a);
                f
            })
    }

    proptest! {
        #[test]
        fn rewrite_and_back_restores_bytes(f in arb_frame(), s in arb_endpoint(), d in arb_endpoint()) {
            let c = classify(&f).unwrap();
            let orig = endpoints(&f).unwrap();
            let mut g = f.clone();
            rewrite(&mut g, &c, s, d).unwrap();
            rewrite(&mut g, &c, orig.0, orig.1).unwrap();
            prop_assert_eq!(g, f);
        }

        #[test]
        fn rewrite_keeps_checksums_valid(f in arb_frame(), s in arb_endpoint(), d in arb_endpoint()) {
            let c = classify(&f).unwrap();
            let mut g = f.clone();
            rewrite(&mut g, &c, s, d).unwrap();
            prop_assert_eq!(verify(&g), Ok(()));
            let (ns, nd) = endpoints(&g).unwrap();
            prop_assert_eq!(ns.addr, s.addr);
            prop_assert_eq!(nd.addr, d.addr);
            match c.l4 {
                L4::Icmp { ty: 8, .. } => prop_assert_eq!(ns.port, s.port),
                L4::Icmp { .. } => prop_assert_eq!(nd.port, d.port),
                _ => { prop_assert_eq!(ns.port, s.port); prop_assert_eq!(nd.port, d.port); }
            }
            // Padding is untouched.
            prop_assert_eq!(&g[c.ip_end..], &f[c.ip_end..]);
        }

        #[test]
        fn rewrite_never_panics_on_garbage(mut bytes in proptest::collection::vec(any::<u8>(), 14..120),
                                           proto in prop_oneof![Just(1u8), Just(6u8), Just(17u8), any::<u8>()],
                                           s in arb_endpoint(), d in arb_endpoint()) {
            // Steer most inputs into IPv4 so that classify accepts some of them.
            bytes[12] = 0x08;
            bytes[13] = 0x00;
            if let Some(b) = bytes.get_mut(14) { *b = 0x45; }
            if let Some(b) = bytes.get_mut(23) { *b = proto; }
            if bytes.len() >= 18 {
                let tl = u16::try_from(bytes.len() - 14).unwrap_or(0);
                bytes[16..18].copy_from_slice(&tl.to_be_bytes());
            }
            if let Ok(c) = classify(&bytes) {
                let mut g = bytes.clone();
                let _ = rewrite(&mut g, &c, s, d);
                // A classification against a shorter copy must fail cleanly, not panic.
                let mut short = bytes[..bytes.len() / 2].to_vec();
                let _ = rewrite(&mut short, &c, s, d);
            }
        }

        #[test]
        fn rewrite_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..100),
                                                    s in arb_endpoint(), d in arb_endpoint()) {
            if let Ok(c) = classify(&bytes) {
                let mut g = bytes.clone();
                let _ = rewrite(&mut g, &c, s, d);
            }
        }
    }
}
