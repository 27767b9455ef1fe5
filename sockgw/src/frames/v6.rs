//! The IPv6 half of `frames`: parsing IPv6 frames from the switch (TCP, UDP and ICMPv6 echo
//! from U6, neighbour solicitations) and building the IPv6 frames the gateway answers with
//! outside smoltcp (neighbour advertisements, UDP, ICMPv6 echo replies, RSTs for refused SYNs).
//!
//! Every function here takes untrusted bytes: lengths are checked through smoltcp's
//! `new_checked` views and nothing indexes past them. ICMPv6 checksums are computed with
//! `packet::checksum` (neighbour discovery checksums are verified too: an advertisement is an
//! answer the switch acts on).

use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};

use packet::checksum::l4_checksum_v6;
use packet::{ETH_HEADER_LEN, ETHERTYPE_IPV6, IPPROTO_ICMPV6, IPV6_HEADER_LEN, MacAddr};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket, UdpRepr};

use super::{DropReason, Parsed, tcp_parsed, udp_parsed};
use crate::{GatewayConfig, GatewayV6};

/// Hop limit of neighbour discovery messages (RFC 4861: receivers drop any other).
const NDP_HOP_LIMIT: u8 = 255;
/// Hop limit of the other packets the gateway builds.
const HOP_LIMIT: u8 = 64;
const NEIGHBOR_SOLICIT: u8 = 135;
const NEIGHBOR_ADVERT: u8 = 136;
const ECHO_REQUEST: u8 = 128;
const ECHO_REPLY: u8 = 129;
/// An NS or NA: type, code, checksum, 4 bytes (reserved / flags), the target.
const NDP_LEN: usize = 24;

/// A neighbour solicitation to answer: from `from_ip` at `from_mac`, asking for `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Solicitation {
    pub from_mac: MacAddr,
    pub from_ip: Ipv6Addr,
    pub target: Ipv6Addr,
}

/// Classifies the IPv6 packet `bytes` of a frame from `src_mac`; `multicast` when the frame went
/// to a multicast MAC (only a neighbour solicitation is taken from those).
pub(super) fn parse_ipv6<'a>(
    bytes: &'a [u8],
    src_mac: MacAddr,
    multicast: bool,
    cfg: &GatewayConfig,
) -> Result<Parsed<'a>, DropReason> {
    let Some(v6) = cfg.ipv6.as_ref() else {
        return Err(DropReason::Unsupported);
    };
    let ip = Ipv6Packet::new_checked(bytes).map_err(|_| DropReason::Malformed)?;
    if ip.version() != 6 {
        return Err(DropReason::Malformed);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let payload = ip.payload();
    if ip.next_header() == IpProtocol::Icmpv6 && payload.first() == Some(&NEIGHBOR_SOLICIT) {
        return parse_solicitation(&ip, src_mac, cfg, v6);
    }
    if multicast || dst.is_multicast() || dst.is_unspecified() {
        return Err(DropReason::Unsupported);
    }
    if src != v6.address {
        return Err(DropReason::NotForUs);
    }
    let (src, dst) = (IpAddr::V6(src), IpAddr::V6(dst));
    match ip.next_header() {
        IpProtocol::Tcp => tcp_parsed(src, dst, payload),
        IpProtocol::Udp => udp_parsed(src, dst, payload),
        IpProtocol::Icmpv6 => {
            // Type, code, checksum, identifier, sequence number.
            match payload {
                [ECHO_REQUEST, 0, _, _, i0, i1, _, _, ..] => Ok(Parsed::IcmpEcho {
                    dst,
                    ident: u16::from_be_bytes([*i0, *i1]),
                    message: payload,
                }),
                [_, _, _, _, ..] => Err(DropReason::Unsupported),
                _ => Err(DropReason::Malformed),
            }
        }
        // Extension headers (fragments among them) and other protocols have no flow here.
        _ => Err(DropReason::Unsupported),
    }
}

/// A neighbour solicitation (RFC 4861 7.1.1 checks) from the switch: from U6, its link-local
/// address, or `::` (duplicate address detection, which needs no answer: the gateway claims no
/// address of the switch's). A node asking for its own address needs none either.
fn parse_solicitation<'a>(
    ip: &Ipv6Packet<&'a [u8]>,
    src_mac: MacAddr,
    cfg: &GatewayConfig,
    v6: &GatewayV6,
) -> Result<Parsed<'a>, DropReason> {
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let m = ip.payload();
    let target = m
        .get(8..NDP_LEN)
        .and_then(|t| <[u8; 16]>::try_from(t).ok())
        .map(Ipv6Addr::from)
        .ok_or(DropReason::Malformed)?;
    if ip.hop_limit() != NDP_HOP_LIMIT
        || m.get(1) != Some(&0)
        || l4_checksum_v6(src, dst, IPPROTO_ICMPV6, m) != 0
        || target.is_multicast()
    {
        return Err(DropReason::Malformed);
    }
    if src != v6.address && src != cfg.mac.link_local() && !src.is_unspecified() {
        return Err(DropReason::NotForUs);
    }
    if src.is_unspecified() || target == src {
        return Ok(Parsed::Ndp(None));
    }
    Ok(Parsed::Ndp(Some(Solicitation {
        from_mac: src_mac,
        from_ip: src,
        target,
    })))
}

/// The NDP link-layer address option (RFC 4861 4.6.1): 1 source, 2 target.
fn mac_option(kind: u8, mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    [kind, 1, m[0], m[1], m[2], m[3], m[4], m[5]]
}

/// Ethernet and IPv6 headers from the gateway's MAC to `dst_mac`, then `payload_len` zero
/// bytes; `None` if the packet would exceed the MTU.
fn ipv6_frame(
    cfg: &GatewayConfig,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    (proto, hop_limit): (IpProtocol, u8),
    payload_len: usize,
) -> Option<Vec<u8>> {
    let ip_len = IPV6_HEADER_LEN + payload_len;
    if ip_len > cfg.mtu || payload_len > usize::from(u16::MAX) {
        return None;
    }
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len,
        hop_limit,
    };
    let mut frame = vec![0u8; ETH_HEADER_LEN + ip_len];
    frame[0..6].copy_from_slice(&dst_mac.0);
    frame[6..12].copy_from_slice(&cfg.gateway_mac.0);
    frame[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let mut ip = Ipv6Packet::new_unchecked(&mut frame[ETH_HEADER_LEN..]);
    repr.emit(&mut ip);
    Some(frame)
}

/// Fills the ICMPv6 checksum of the message after the IPv6 header of `frame`.
fn fill_icmpv6_checksum(frame: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let at = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    if let Some(ck) = frame.get_mut(at + 2..at + 4) {
        ck.fill(0);
    }
    let ck = l4_checksum_v6(src, dst, IPPROTO_ICMPV6, frame.get(at..).unwrap_or(&[]));
    if let Some(c) = frame.get_mut(at + 2..at + 4) {
        c.copy_from_slice(&ck.to_be_bytes());
    }
}

/// Answers a neighbour solicitation for any target with the gateway's MAC: a solicited
/// advertisement from the target to the asker, router and override flags set (the gateway is
/// the switch's next hop), hop limit 255.
pub(crate) fn neighbor_advertisement(cfg: &GatewayConfig, ns: &Solicitation) -> Option<Vec<u8>> {
    let len = NDP_LEN + 8;
    let proto = (IpProtocol::Icmpv6, NDP_HOP_LIMIT);
    let mut frame = ipv6_frame(cfg, ns.from_mac, ns.target, ns.from_ip, proto, len)?;
    let at = ETH_HEADER_LEN + IPV6_HEADER_LEN;
    let m = frame.get_mut(at..)?;
    m[0] = NEIGHBOR_ADVERT;
    // Router, solicited, override.
    m[4] = 0x80 | 0x40 | 0x20;
    m[8..NDP_LEN].copy_from_slice(&ns.target.octets());
    m[NDP_LEN..].copy_from_slice(&mac_option(2, cfg.gateway_mac));
    fill_icmpv6_checksum(&mut frame, ns.target, ns.from_ip);
    Some(frame)
}

/// A UDP datagram from `src` to U6:`dst_port`.
pub(crate) fn udp_frame(
    cfg: &GatewayConfig,
    src: SocketAddrV6,
    dst_port: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let u6 = cfg.ipv6?.address;
    let repr = UdpRepr {
        src_port: src.port(),
        dst_port,
    };
    let len = repr.header_len() + payload.len();
    let proto = (IpProtocol::Udp, HOP_LIMIT);
    let mut frame = ipv6_frame(cfg, cfg.mac, *src.ip(), u6, proto, len)?;
    let mut udp = UdpPacket::new_unchecked(frame.get_mut(ETH_HEADER_LEN + IPV6_HEADER_LEN..)?);
    repr.emit(
        &mut udp,
        &IpAddress::Ipv6(*src.ip()),
        &IpAddress::Ipv6(u6),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    Some(frame)
}

/// An ICMPv6 message from `src` to U6: `message` as the host's ping socket gave it, with the
/// echo identifier set back to `ident` and the checksum recomputed. `None` if it is not an echo
/// reply.
pub(crate) fn icmp_echo_reply_frame(
    cfg: &GatewayConfig,
    src: Ipv6Addr,
    ident: u16,
    message: &[u8],
) -> Option<Vec<u8>> {
    if !matches!(message, [ECHO_REPLY, 0, _, _, _, _, _, _, ..]) {
        return None;
    }
    let u6 = cfg.ipv6?.address;
    let proto = (IpProtocol::Icmpv6, HOP_LIMIT);
    let mut frame = ipv6_frame(cfg, cfg.mac, src, u6, proto, message.len())?;
    let m = frame.get_mut(ETH_HEADER_LEN + IPV6_HEADER_LEN..)?;
    m.copy_from_slice(message);
    m[4..6].copy_from_slice(&ident.to_be_bytes());
    fill_icmpv6_checksum(&mut frame, src, u6);
    Some(frame)
}

/// The RST+ACK that refuses a SYN from `client` (U6) to `server`, as `frames::tcp_rst` does for
/// IPv4.
pub(crate) fn tcp_rst(
    cfg: &GatewayConfig,
    server: SocketAddrV6,
    client: SocketAddrV6,
    seq: u32,
    seg_len: u32,
) -> Option<Vec<u8>> {
    let proto = (IpProtocol::Tcp, HOP_LIMIT);
    let mut frame = ipv6_frame(cfg, cfg.mac, *server.ip(), *client.ip(), proto, 20)?;
    let mut tcp = TcpPacket::new_unchecked(frame.get_mut(ETH_HEADER_LEN + IPV6_HEADER_LEN..)?);
    super::fill_rst(&mut tcp, server.port(), client.port(), seq, seg_len);
    tcp.fill_checksum(
        &IpAddress::Ipv6(*server.ip()),
        &IpAddress::Ipv6(*client.ip()),
    );
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::parse;
    use smoltcp::wire::Icmpv6Packet;

    const U6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7673, 0xffff, 0, 0, 0, 0, 2);
    const FAR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9);

    fn cfg() -> GatewayConfig {
        let mut c = GatewayConfig::new(
            std::net::Ipv4Addr::new(10, 0, 2, 15),
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
        );
        c.ipv6 = Some(GatewayV6::new(U6));
        c
    }

    /// The ICMPv6 message of an IPv6 frame, checked, with its source and destination.
    fn icmpv6_of(f: &[u8]) -> (Ipv6Addr, Ipv6Addr, u8, Vec<u8>) {
        let ip = Ipv6Packet::new_checked(&f[ETH_HEADER_LEN..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Icmpv6);
        let m = ip.payload().to_vec();
        assert_eq!(
            l4_checksum_v6(ip.src_addr(), ip.dst_addr(), IPPROTO_ICMPV6, &m),
            0,
            "ICMPv6 checksum"
        );
        (ip.src_addr(), ip.dst_addr(), ip.hop_limit(), m)
    }

    #[test]
    fn solicitations_for_any_target_are_answered_with_the_gateway_mac() {
        let c = cfg();
        let asked: Ipv6Addr = "fd00:7673:ffff::1".parse().unwrap();
        for from in [U6, c.mac.link_local()] {
            let ns = testkit::frames::neighbor_solicitation(c.mac, from, asked);
            assert_eq!(
                &ns[0..2],
                &[0x33, 0x33],
                "to the solicited-node group's MAC"
            );
            let Ok(Parsed::Ndp(Some(sol))) = parse(&ns, &c) else {
                panic!("not a solicitation to answer from {from}")
            };
            assert_eq!(
                (sol.from_mac, sol.from_ip, sol.target),
                (c.mac, from, asked)
            );
            let na = neighbor_advertisement(&c, &sol).unwrap();
            assert_eq!(&na[0..6], &c.mac.0, "to the asker");
            assert_eq!(&na[6..12], &c.gateway_mac.0, "from the gateway");
            assert_eq!(&na[12..14], &ETHERTYPE_IPV6.to_be_bytes());
            let (src, dst, hops, m) = icmpv6_of(&na);
            assert_eq!((src, dst, hops), (asked, from, 255));
            assert_eq!((m[0], m[1]), (136, 0));
            assert_eq!(m[4], 0xe0, "router, solicited, override");
            assert_eq!(&m[8..24], &asked.octets());
            let mut opt = vec![2, 1];
            opt.extend_from_slice(&c.gateway_mac.0);
            assert_eq!(
                &m[24..],
                &opt[..],
                "target link-layer address: the gateway's MAC"
            );
            // smoltcp reads it as the same advertisement.
            let icmp = Icmpv6Packet::new_checked(&m[..]).unwrap();
            assert!(icmp.verify_checksum(&src, &dst));
        }
        // Any target at all, a far one too.
        let ns = testkit::frames::neighbor_solicitation(c.mac, U6, FAR);
        assert!(matches!(parse(&ns, &c), Ok(Parsed::Ndp(Some(_)))));
    }

    #[test]
    fn solicitations_needing_no_answer_or_not_valid_are_not_answered() {
        let c = cfg();
        // Duplicate address detection, and asking for one's own address.
        let dad = testkit::frames::neighbor_solicitation(c.mac, Ipv6Addr::UNSPECIFIED, U6);
        assert!(matches!(parse(&dad, &c), Ok(Parsed::Ndp(None))));
        let own = testkit::frames::neighbor_solicitation(c.mac, U6, U6);
        assert!(matches!(parse(&own, &c), Ok(Parsed::Ndp(None))));
        // From another node than the switch.
        let other = testkit::frames::neighbor_solicitation(c.mac, FAR, U6);
        assert_eq!(parse(&other, &c).err(), Some(DropReason::NotForUs));
        // Hop limit other than 255: may have been routed (RFC 4861 7.1.1).
        let mut routed = testkit::frames::neighbor_solicitation(c.mac, U6, FAR);
        testkit::frames::set_hop_limit(&mut routed, 64);
        assert_eq!(parse(&routed, &c).err(), Some(DropReason::Malformed));
        // A bad checksum, a truncated message.
        let mut bad = testkit::frames::neighbor_solicitation(c.mac, U6, FAR);
        let at = ETH_HEADER_LEN + IPV6_HEADER_LEN + 2;
        bad[at] ^= 0xff;
        assert_eq!(parse(&bad, &c).err(), Some(DropReason::Malformed));
        let short = testkit::frames::icmpv6_multicast(
            c.mac,
            U6,
            "ff02::1:ff00:9".parse().unwrap(),
            false,
            135,
            0,
            [0; 4],
            &[0; 4],
        );
        assert_eq!(parse(&short, &c).err(), Some(DropReason::Malformed));
        // IPv6 not configured: nothing of it is taken, as before IPv6 was served (multicast
        // MACs are not the gateway's, IPv6 to its MAC is unsupported).
        let mut off = cfg();
        off.ipv6 = None;
        let ns = testkit::frames::neighbor_solicitation(c.mac, U6, FAR);
        assert_eq!(parse(&ns, &off).err(), Some(DropReason::NotForUs));
        let udp = testkit::frames::udp6(c.mac, c.gateway_mac, U6, FAR, 5000, 53, b"q");
        assert_eq!(parse(&udp, &off).err(), Some(DropReason::Unsupported));
    }

    #[test]
    fn flows_are_read_from_u6_only_and_other_icmpv6_is_unsupported() {
        let c = cfg();
        let (mac, gw) = (c.mac, c.gateway_mac);
        let syn = testkit::frames::tcp6(mac, gw, U6, FAR, 40000, 80, 7, 0, 0x02, b"");
        match parse(&syn, &c) {
            Ok(Parsed::Tcp {
                src,
                dst,
                syn_only: true,
                seq: 7,
                seg_len: 1,
            }) => {
                assert_eq!(src, SocketAddrV6::new(U6, 40000, 0, 0).into());
                assert_eq!(dst, SocketAddrV6::new(FAR, 80, 0, 0).into());
            }
            other => panic!("unexpected {other:?}"),
        }
        let udp = testkit::frames::udp6(mac, gw, U6, FAR, 5000, 53, b"q");
        assert!(matches!(
            parse(&udp, &c),
            Ok(Parsed::Udp { payload: b"q", .. })
        ));
        let echo = testkit::frames::icmpv6_echo(mac, gw, U6, FAR, true, 0x4321, 1, b"hi");
        match parse(&echo, &c) {
            Ok(Parsed::IcmpEcho {
                dst,
                ident,
                message,
            }) => {
                assert_eq!((dst, ident), (IpAddr::V6(FAR), 0x4321));
                assert_eq!(message.len(), 8 + 2, "the whole ICMPv6 message");
            }
            other => panic!("unexpected {other:?}"),
        }
        let reply = testkit::frames::icmpv6_echo(mac, gw, U6, FAR, false, 1, 1, b"");
        assert_eq!(parse(&reply, &c).err(), Some(DropReason::Unsupported));
        let spoofed = testkit::frames::udp6(mac, gw, FAR, FAR, 5000, 53, b"q");
        assert_eq!(parse(&spoofed, &c).err(), Some(DropReason::NotForUs));
        // Multicast destinations have no flow; other MACs are not for the gateway.
        let group = "ff02::fb".parse().unwrap();
        let mdns = testkit::frames::udp6(
            mac,
            MacAddr::ipv6_multicast(group),
            U6,
            group,
            5353,
            5353,
            b"",
        );
        assert_eq!(parse(&mdns, &c).err(), Some(DropReason::Unsupported));
        let elsewhere = testkit::frames::udp6(mac, mac, U6, FAR, 5000, 53, b"q");
        assert_eq!(parse(&elsewhere, &c).err(), Some(DropReason::NotForUs));
    }

    #[test]
    fn udp_echo_reply_and_rst_frames_go_to_u6() {
        let c = cfg();
        let src = SocketAddrV6::new(FAR, 53, 0, 0);
        let f = udp_frame(&c, src, 4000, b"hello").unwrap();
        assert_eq!((&f[0..6], &f[6..12]), (&c.mac.0[..], &c.gateway_mac.0[..]));
        let ip = Ipv6Packet::new_checked(&f[ETH_HEADER_LEN..]).unwrap();
        assert_eq!(
            (ip.src_addr(), ip.dst_addr(), ip.hop_limit()),
            (FAR, U6, 64)
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::Ipv6(FAR), &IpAddress::Ipv6(U6)));
        assert_eq!(
            (udp.src_port(), udp.dst_port(), udp.payload()),
            (53, 4000, &b"hello"[..])
        );
        assert!(
            udp_frame(&c, src, 1, &vec![0u8; 70000]).is_none(),
            "beyond the MTU"
        );

        // As the host's ping socket returns it: the kernel's identifier 999.
        let msg = [129u8, 0, 0, 0, 0x03, 0xe7, 0, 5, b'a', b'b', b'c'];
        let f = icmp_echo_reply_frame(&c, FAR, 0x1234, &msg).unwrap();
        let (src, dst, _, m) = icmpv6_of(&f);
        assert_eq!((src, dst), (FAR, U6));
        assert_eq!(&m[4..], &[0x12, 0x34, 0, 5, b'a', b'b', b'c']);
        assert!(icmp_echo_reply_frame(&c, FAR, 1, &[128, 0, 0, 0, 0, 1, 0, 1]).is_none());
        assert!(icmp_echo_reply_frame(&c, FAR, 1, &[129, 0]).is_none());

        let server = SocketAddrV6::new(FAR, 80, 0, 0);
        let client = SocketAddrV6::new(U6, 40000, 0, 0);
        let f = tcp_rst(&c, server, client, 99, 1).unwrap();
        let ip = Ipv6Packet::new_checked(&f[ETH_HEADER_LEN..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!(
            (tcp.src_port(), tcp.dst_port(), tcp.ack_number().0),
            (80, 40000, 100)
        );
        assert!(tcp.verify_checksum(&IpAddress::Ipv6(FAR), &IpAddress::Ipv6(U6)));
        // Mixed families make no RST.
        let v4 = std::net::SocketAddrV4::new(c.address, 40000);
        assert!(crate::frames::tcp_rst(&c, server.into(), v4.into(), 1, 1).is_none());
    }
}
