//! Translation of ICMP error messages and the packet they quote.
//!
//! An ICMP error (RFC 792) carries, after its 8-byte header, the start of the packet that caused
//! it: the full IP header and at least 8 bytes of its payload ("Internet Header + 64 bits of
//! Original Data Datagram"; RFC 1812 4.3.2.3 allows more). A NAT must translate that quote back
//! as well as the outer header, or the host cannot match the error to its socket: RFC 5508 (NAT
//! behavior for ICMP) requires the embedded IP header and its ports or query identifier to be
//! translated, and RFC 3022 section 4.3 notes that the ICMP checksum, which covers the whole
//! message, must then be fixed along with the embedded IP header checksum and, when present, the
//! embedded transport checksum.
//!
//! Invariants: the quote is untrusted and parsed with bounds checks only ([`icmp_error_inner`]
//! returns `None` for anything it cannot make sense of); every checksum is updated
//! incrementally, so the embedded transport checksum stays right for data that is not in the
//! quote, and a wrong checksum stays wrong; on error the frame is unchanged.

use crate::rewrite::{
    ICMP_CHECKSUM, TCP_CHECKSUM, UDP_CHECKSUM, is_query_reply, is_query_request, rewrite_ident,
    rewrite_ports, write_addrs,
};
use crate::wire::{Delta, rd_addr, rd16, wr16};
use crate::{Endpoint, RewriteError};
use packet::{Classified, Ipv4Addr, L3, L4};

/// Length of the ICMP header that precedes the quote.
const ICMP_HEADER_LEN: usize = 8;

/// ICMP error types whose quote is translated: destination unreachable (3), source quench (4,
/// deprecated by RFC 6633 but still quoted the same way), time exceeded (11), parameter problem
/// (12). Redirect (5) is not: its gateway address cannot be translated meaningfully, so a NAT
/// should drop it.
#[inline]
pub fn is_icmp_error(ty: u8) -> bool {
    matches!(ty, 3 | 4 | 11 | 12)
}

/// The packet quoted by an ICMP error, as found in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerPacket {
    /// IP protocol of the quoted packet: 6 TCP, 17 UDP or 1 ICMP (a query).
    pub protocol: u8,
    /// Source of the quoted packet (address, and port or query identifier).
    pub src: Endpoint,
    /// Destination of the quoted packet (address, and port or query identifier). For a quoted
    /// ICMP query both `src.port` and `dst.port` hold its identifier.
    pub dst: Endpoint,
    /// ICMP type of a quoted query (`None` for TCP/UDP).
    pub icmp_type: Option<u8>,
    /// Frame offset of the quoted IPv4 header.
    pub ip_offset: usize,
    /// Frame offset of the quoted transport header.
    pub l4_offset: usize,
    /// Frame offset where the quote ends (the outer packet's `ip_end`).
    pub quote_end: usize,
}

impl InnerPacket {
    /// Bytes of the quoted transport header present in the quote (at least 8).
    #[inline]
    pub fn quoted_l4_len(&self) -> usize {
        self.quote_end.saturating_sub(self.l4_offset)
    }
}

/// Parses the packet quoted by the ICMP error in `frame` (classified as `c`).
///
/// Returns `None` unless `c` is an ICMP error ([`is_icmp_error`]) whose quote holds a complete
/// IPv4 header (version 4, IHL >= 5) of a first fragment and at least 8 bytes of a TCP or UDP
/// header or of an ICMP query (echo, timestamp, information, address mask). The quote may end
/// anywhere after those 8 bytes, as routers quote only 8 bytes.
pub fn icmp_error_inner(frame: &[u8], c: &Classified) -> Option<InnerPacket> {
    let L3::Ipv4(_) = c.l3 else {
        return None;
    };
    let L4::Icmp { ty, .. } = c.l4 else {
        return None;
    };
    if !is_icmp_error(ty) {
        return None;
    }
    let msg = frame.get(c.l4_offset..c.ip_end)?;
    // The classification must describe this frame.
    if *msg.first()? != ty {
        return None;
    }
    let quote = msg.get(ICMP_HEADER_LEN..)?;
    let q = parse_quote(quote)?;
    let ip_offset = c.l4_offset.checked_add(ICMP_HEADER_LEN)?;
    Some(InnerPacket {
        protocol: q.protocol,
        src: q.src,
        dst: q.dst,
        icmp_type: q.icmp_type,
        ip_offset,
        l4_offset: ip_offset.checked_add(q.header_len)?,
        quote_end: c.ip_end,
    })
}

struct Quote {
    protocol: u8,
    src: Endpoint,
    dst: Endpoint,
    icmp_type: Option<u8>,
    header_len: usize,
}

fn parse_quote(q: &[u8]) -> Option<Quote> {
    let b0 = *q.first()?;
    if b0 >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(b0 & 0x0f) * 4;
    if header_len < 20 {
        return None;
    }
    let l4 = q.get(header_len..)?;
    if l4.len() < 8 {
        return None;
    }
    // The quoted total length is what the original sender wrote; it can exceed the quote but
    // never be shorter than the header that is there.
    if usize::from(rd16(q, 2)?) < header_len {
        return None;
    }
    // A later fragment has no transport header to match the flow by.
    if rd16(q, 6)? & 0x1fff != 0 {
        return None;
    }
    let protocol = *q.get(9)?;
    let src_addr = rd_addr(q, 12)?;
    let dst_addr = rd_addr(q, 16)?;
    let (sp, dp, icmp_type) = match protocol {
        6 | 17 => (rd16(l4, 0)?, rd16(l4, 2)?, None),
        1 => {
            let ty = *l4.first()?;
            if !is_query_request(ty) && !is_query_reply(ty) {
                // RFC 1122 3.2.2: no ICMP error is sent about an ICMP error, so this is garbage.
                return None;
            }
            let ident = rd16(l4, 4)?;
            (ident, ident, Some(ty))
        }
        _ => return None,
    };
    Some(Quote {
        protocol,
        src: Endpoint::new(src_addr, sp),
        dst: Endpoint::new(dst_addr, dp),
        icmp_type,
        header_len,
    })
}

/// Translates the ICMP error in `frame` (classified as `c`, quoting `inner` as returned by
/// [`icmp_error_inner`] for this frame) in place.
///
/// The outer source and destination addresses become `outer_src` and `outer_dst`; the quoted
/// packet's source and destination become `inner_src` and `inner_dst` (address and port; for a
/// quoted ICMP query the identifier is `inner_src.port` for a request and `inner_dst.port` for a
/// reply, as in [`crate::rewrite`]). Updated incrementally:
/// - the outer IPv4 header checksum;
/// - the quoted IPv4 header checksum;
/// - the quoted TCP/UDP checksum when the quote holds it (UDP: always, within the 8 bytes, and
///   left at 0 if it was 0; TCP: only when at least 18 TCP bytes are quoted), or the quoted ICMP
///   query checksum (identifier change); these checksums cover data beyond the quote, which is
///   why they can only be updated, not recomputed;
/// - the outer ICMP checksum, for every quoted word that changed (addresses, ports or
///   identifier, and the quoted checksums themselves). The outer addresses are not in it:
///   ICMPv4 has no pseudo-header.
///
/// # Errors
/// [`RewriteError::NotIpv4`] if `c` is not IPv4; [`RewriteError::NotTranslatable`] if the frame
/// is not an ICMP error with a parseable quote or `inner` does not describe it;
/// [`RewriteError::Truncated`] if the outer header does not fit `c`. The frame is unchanged on
/// error.
pub fn rewrite_icmp_error(
    frame: &mut [u8],
    c: &Classified,
    inner: &InnerPacket,
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    inner_src: Endpoint,
    inner_dst: Endpoint,
) -> Result<(), RewriteError> {
    let L3::Ipv4(_) = c.l3 else {
        return Err(RewriteError::NotIpv4);
    };
    // Parse again rather than trust `inner`'s offsets: cheap, and a stale or foreign
    // InnerPacket can then never write to the wrong place.
    let found = icmp_error_inner(frame, c).ok_or(RewriteError::NotTranslatable)?;
    if found != *inner {
        return Err(RewriteError::NotTranslatable);
    }
    let header_len = c
        .l4_offset
        .checked_sub(c.l3_offset)
        .filter(|&hl| hl >= 20)
        .ok_or(RewriteError::Truncated)?;
    let inner_header_len = inner.l4_offset - inner.ip_offset;
    let pkt = frame
        .get_mut(c.l3_offset..c.ip_end)
        .ok_or(RewriteError::Truncated)?;
    let (ip, msg) = pkt
        .split_at_mut_checked(header_len)
        .ok_or(RewriteError::Truncated)?;
    let ip_ck = rd16(ip, 10).ok_or(RewriteError::Truncated)?;
    let (icmp_header, quote) = msg
        .split_at_mut_checked(ICMP_HEADER_LEN)
        .ok_or(RewriteError::Truncated)?;
    let icmp_ck = rd16(icmp_header, ICMP_CHECKSUM).ok_or(RewriteError::Truncated)?;
    let (inner_ip, inner_l4) = quote
        .split_at_mut_checked(inner_header_len)
        .ok_or(RewriteError::Truncated)?;
    let inner_ip_ck = rd16(inner_ip, 10).ok_or(RewriteError::Truncated)?;
    // From here on every access was validated by icmp_error_inner or above; the `?`s below only
    // keep the code panic-free by construction.

    // Every change to a quoted word, for the outer ICMP checksum.
    let mut icmp_delta = Delta::default();
    let mut pseudo = Delta::default();
    pseudo.addr(inner.src.addr, inner_src.addr);
    pseudo.addr(inner.dst.addr, inner_dst.addr);
    let done = match (inner.protocol, inner.icmp_type) {
        (6, _) => rewrite_ports(
            inner_l4,
            TCP_CHECKSUM,
            false,
            pseudo,
            inner_src.port,
            inner_dst.port,
            &mut icmp_delta,
        ),
        (17, _) => rewrite_ports(
            inner_l4,
            UDP_CHECKSUM,
            true,
            pseudo,
            inner_src.port,
            inner_dst.port,
            &mut icmp_delta,
        ),
        (1, Some(ty)) if is_query_request(ty) => {
            rewrite_ident(inner_l4, inner_src.port, &mut icmp_delta)
        }
        (1, Some(_)) => rewrite_ident(inner_l4, inner_dst.port, &mut icmp_delta),
        _ => None,
    };
    done.ok_or(RewriteError::Truncated)?;
    write_addrs(
        inner_ip,
        inner_src.addr,
        inner_dst.addr,
        inner_ip_ck,
        &mut icmp_delta,
    )
    .ok_or(RewriteError::Truncated)?;
    wr16(icmp_header, ICMP_CHECKSUM, icmp_delta.apply(icmp_ck)).ok_or(RewriteError::Truncated)?;
    write_addrs(ip, outer_src, outer_dst, ip_ck, &mut Delta::default())
        .ok_or(RewriteError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite;
    use crate::testutil::*;
    use packet::checksum::internet_checksum;
    use packet::classify;
    use proptest::prelude::*;
    use testkit::frames as build;

    const INT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

    fn ep(addr: Ipv4Addr, port: u16) -> Endpoint {
        Endpoint::new(addr, port)
    }

    /// The IP packet (no Ethernet header) of a frame.
    fn ip_of(frame: &[u8]) -> &[u8] {
        &frame[14..]
    }

    /// An ICMP error from `from` to `EXT` quoting the first `quote_len` bytes of `original`'s IP
    /// packet.
    fn error_frame(ty: u8, code: u8, from: Ipv4Addr, original: &[u8], quote_len: usize) -> Vec<u8> {
        let ip = ip_of(original);
        build::icmp_error(
            MAC_A,
            MAC_B,
            from,
            EXT,
            ty,
            code,
            [0; 4],
            &ip[..quote_len.min(ip.len())],
        )
    }

    /// Verifies everything an ICMP error carries, from scratch.
    fn verify_error(frame: &[u8]) {
        verify(frame).unwrap(); // outer IP + ICMP (etherparse)
        let icmp = &frame[34..];
        assert_eq!(
            internet_checksum(icmp),
            0,
            "ICMP checksum over the whole message"
        );
        let inner_hl = usize::from(icmp[8] & 0x0f) * 4;
        assert_eq!(
            internet_checksum(&icmp[8..8 + inner_hl]),
            0,
            "quoted IPv4 header checksum"
        );
    }

    fn translate_in(frame: &mut [u8], inner_src: Endpoint) -> InnerPacket {
        let c = classify(frame).unwrap();
        let inner = icmp_error_inner(frame, &c).unwrap();
        let outer_src = match c.l3 {
            L3::Ipv4(i) => i.src,
            _ => unreachable!(),
        };
        rewrite_icmp_error(frame, &c, &inner, outer_src, INT, inner_src, inner.dst).unwrap();
        inner
    }

    #[test]
    fn udp_port_unreachable_quoting_8_bytes() {
        // INT:5353 was masqueraded to EXT:40000 and sent a datagram to REMOTE:53.
        let payload = b"some dns query bytes";
        let sent = build::udp(MAC_A, MAC_B, EXT, REMOTE, 40000, 53, payload);
        let mut f = error_frame(3, 3, REMOTE, &sent, 28);
        let inner = translate_in(&mut f, ep(INT, 5353));
        assert_eq!(inner.protocol, 17);
        assert_eq!(inner.src, ep(EXT, 40000));
        assert_eq!(inner.dst, ep(REMOTE, 53));
        assert_eq!(inner.quoted_l4_len(), 8);
        verify_error(&f);
        assert_eq!(&f[30..34], &INT.octets(), "outer destination");
        let q = &f[42..];
        assert_eq!(&q[12..16], &INT.octets(), "quoted source address");
        assert_eq!(&q[20..22], &5353u16.to_be_bytes(), "quoted source port");

        // The quoted UDP checksum is the one the original datagram would carry had it been
        // sent by INT:5353: rewrite the full original the normal way and compare.
        let mut full = sent.clone();
        let c = classify(&full).unwrap();
        rewrite(&mut full, &c, ep(INT, 5353), ep(REMOTE, 53)).unwrap();
        verify(&full).unwrap();
        assert_eq!(&q[26..28], &full[40..42]);
        // And the quoted IP header is that datagram's header.
        assert_eq!(&q[..20], &full[14..34]);
    }

    #[test]
    fn tcp_unreachable_quoting_20_bytes_updates_tcp_checksum() {
        let sent = build::tcp(MAC_A, MAC_B, EXT, REMOTE, 40001, 443, 100, 0, 0x02, b"");
        let mut f = error_frame(3, 1, ROUTER, &sent, 40);
        let inner = translate_in(&mut f, ep(INT, 33000));
        assert_eq!(inner.protocol, 6);
        assert_eq!(inner.quoted_l4_len(), 20);
        verify_error(&f);
        let mut full = sent.clone();
        let c = classify(&full).unwrap();
        rewrite(&mut full, &c, ep(INT, 33000), ep(REMOTE, 443)).unwrap();
        verify(&full).unwrap();
        assert_eq!(
            &f[42..82],
            &full[14..54],
            "quote equals the translated datagram"
        );
        // The outer source (the router) is kept as given.
        assert_eq!(&f[26..30], &ROUTER.octets());
    }

    #[test]
    fn tcp_quote_of_8_bytes_leaves_tcp_checksum_out() {
        let sent = build::tcp(MAC_A, MAC_B, EXT, REMOTE, 40001, 443, 100, 0, 0x02, b"");
        let mut f = error_frame(11, 0, ROUTER, &sent, 28);
        translate_in(&mut f, ep(INT, 33000));
        verify_error(&f);
        assert_eq!(&f[62..64], &33000u16.to_be_bytes());
    }

    #[test]
    fn echo_time_exceeded() {
        // INT sent an echo request with identifier 7, masqueraded to EXT with identifier 4242.
        let sent = build::icmp_echo(MAC_A, MAC_B, EXT, REMOTE, true, 4242, 3, b"abcdefgh");
        let mut f = error_frame(11, 0, ROUTER, &sent, 28 + 8);
        let c = classify(&f).unwrap();
        let inner = icmp_error_inner(&f, &c).unwrap();
        assert_eq!(inner.protocol, 1);
        assert_eq!(inner.icmp_type, Some(8));
        assert_eq!(inner.src, ep(EXT, 4242));
        rewrite_icmp_error(
            &mut f,
            &c,
            &inner,
            ROUTER,
            INT,
            ep(INT, 7),
            ep(REMOTE, 4242),
        )
        .unwrap();
        verify_error(&f);
        let mut full = sent.clone();
        let c = classify(&full).unwrap();
        rewrite(&mut full, &c, ep(INT, 7), ep(REMOTE, 0)).unwrap();
        verify(&full).unwrap();
        assert_eq!(&f[42..], &full[14..14 + 36]);
    }

    #[test]
    fn zero_udp_checksum_in_quote_stays_zero() {
        let mut sent = build::udp(MAC_A, MAC_B, EXT, REMOTE, 40000, 53, b"q");
        sent[40] = 0;
        sent[41] = 0;
        let mut f = error_frame(3, 3, REMOTE, &sent, 28);
        translate_in(&mut f, ep(INT, 5353));
        verify_error(&f);
        assert_eq!(&f[68..70], &[0, 0]);
    }

    #[test]
    fn garbage_quotes_are_rejected() {
        let sent = build::udp(MAC_A, MAC_B, EXT, REMOTE, 40000, 53, b"payload!");
        let ip = ip_of(&sent).to_vec();
        let reject = |quote: &[u8]| {
            let mut f = build::icmp_error(MAC_A, MAC_B, REMOTE, EXT, 3, 3, [0; 4], quote);
            let c = classify(&f).unwrap();
            assert_eq!(icmp_error_inner(&f, &c), None, "quote {quote:02x?}");
            let fake = InnerPacket {
                protocol: 17,
                src: ep(EXT, 40000),
                dst: ep(REMOTE, 53),
                icmp_type: None,
                ip_offset: 42,
                l4_offset: 62,
                quote_end: f.len(),
            };
            let before = f.clone();
            assert_eq!(
                rewrite_icmp_error(&mut f, &c, &fake, REMOTE, INT, ep(INT, 1), ep(REMOTE, 53)),
                Err(RewriteError::NotTranslatable)
            );
            assert_eq!(f, before);
        };
        reject(&ip[..0]);
        reject(&ip[..12]); // truncated inner header
        reject(&ip[..20]); // no transport bytes
        reject(&ip[..27]); // 7 transport bytes
        let mut bad = ip[..28].to_vec();
        bad[0] = 0x44; // IHL 4
        reject(&bad);
        bad[0] = 0x65; // version 6
        reject(&bad);
        bad[0] = 0x46; // IHL 6: header would need 24 bytes + 8
        reject(&bad);
        let mut frag = ip[..28].to_vec();
        frag[7] = 1; // later fragment
        reject(&frag);
        let mut gre = ip[..28].to_vec();
        gre[9] = 47;
        reject(&gre);
        let mut err_in_err = ip[..28].to_vec();
        err_in_err[9] = 1;
        err_in_err[20] = 3;
        reject(&err_in_err);
    }

    #[test]
    fn non_errors_are_not_translatable() {
        let mut f = build::icmp_echo(MAC_A, MAC_B, EXT, REMOTE, true, 1, 1, &[0x45; 40]);
        let c = classify(&f).unwrap();
        assert_eq!(icmp_error_inner(&f, &c), None);
        let udp = build::udp(MAC_A, MAC_B, EXT, REMOTE, 1, 2, &[0x45; 40]);
        assert_eq!(icmp_error_inner(&udp, &classify(&udp).unwrap()), None);
        let sent = build::udp(MAC_A, MAC_B, EXT, REMOTE, 40000, 53, b"x");
        let e = error_frame(3, 3, REMOTE, &sent, 28);
        let inner = icmp_error_inner(&e, &classify(&e).unwrap()).unwrap();
        // An InnerPacket from another frame is refused.
        assert_eq!(
            rewrite_icmp_error(&mut f, &c, &inner, EXT, INT, ep(INT, 1), ep(REMOTE, 2)),
            Err(RewriteError::NotTranslatable)
        );
    }

    #[test]
    fn padding_after_error_is_untouched() {
        let sent = build::udp(MAC_A, MAC_B, EXT, REMOTE, 40000, 53, b"x");
        let mut f = error_frame(3, 3, REMOTE, &sent, 28);
        let n = f.len();
        f.extend_from_slice(&[0xee; 20]);
        translate_in(&mut f, ep(INT, 5353));
        assert_eq!(&f[n..], &[0xee; 20]);
        verify_error(&f[..n]);
    }

    proptest! {
        #[test]
        fn icmp_error_parsing_never_panics(quote in proptest::collection::vec(any::<u8>(), 0..80),
                                           ty in prop_oneof![Just(3u8), Just(11u8), Just(12u8), any::<u8>()],
                                           v4 in any::<bool>(), s in any::<u16>(), d in any::<u16>()) {
            let mut quote = quote;
            if v4 && quote.len() >= 20 {
                // Steer towards quotes that parse: IPv4, IHL 5, sane total length, a known protocol.
                quote[0] = 0x45;
                quote[2] = 0x05;
                quote[6] &= 0xe0;
                quote[7] = 0;
                quote[9] = [1u8, 6, 17][usize::from(quote[9] % 3)];
                if quote[9] == 1 && quote.len() > 20 { quote[20] = [0u8, 8, 13][usize::from(quote[20] % 3)]; }
            }
            let mut f = build::icmp_error(MAC_A, MAC_B, REMOTE, EXT, ty, 0, [0; 4], &quote);
            let c = classify(&f).unwrap();
            if let Some(inner) = icmp_error_inner(&f, &c) {
                let mut short = f[..f.len() - 1].to_vec();
                let _ = rewrite_icmp_error(&mut short, &c, &inner, REMOTE, INT, ep(INT, s), ep(REMOTE, d));
                rewrite_icmp_error(&mut f, &c, &inner, REMOTE, INT, ep(INT, s), ep(REMOTE, d)).unwrap();
                prop_assert_eq!(internet_checksum(&f[34..]), 0);
            }
        }

        #[test]
        fn translated_udp_quote_matches_full_rewrite(
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            sport in any::<u16>(), dport in any::<u16>(), new_port in any::<u16>(),
            new_addr in any::<[u8; 4]>(), quote_extra in 0usize..8) {
            let sent = build::udp(MAC_A, MAC_B, EXT, REMOTE, sport, dport, &payload);
            let mut f = error_frame(3, 3, REMOTE, &sent, 28 + quote_extra);
            let new = ep(Ipv4Addr::from(new_addr), new_port);
            translate_in(&mut f, new);
            verify_error(&f);
            let mut full = sent.clone();
            let c = classify(&full).unwrap();
            rewrite(&mut full, &c, new, ep(REMOTE, dport)).unwrap();
            let q = (28 + quote_extra).min(full.len() - 14);
            prop_assert_eq!(&f[42..42 + q], &full[14..14 + q]);
        }
    }
}
