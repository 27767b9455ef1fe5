//! Parsing frames from the switch into what the gateway acts on, and building the frames it
//! answers with outside smoltcp (ARP, UDP, ICMP echo replies, RSTs for refused SYNs). The IPv6
//! half (neighbour discovery included) is `v6`; the builders here take either family.
//!
//! Every function here takes untrusted bytes: lengths are checked through smoltcp's `new_checked`
//! views and nothing indexes past them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use packet::{ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, MacAddr};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, Icmpv4Message, Icmpv4Packet,
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, TcpSeqNumber, UdpPacket, UdpRepr,
};

use crate::GatewayConfig;

mod v6;
pub(crate) use v6::{Solicitation, neighbor_advertisement};

/// Why a received frame was dropped; each maps to one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    Malformed,
    NotForUs,
    Unsupported,
}

/// What a received frame asks for.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// An ARP request to answer (`None`: some other ARP, ignored).
    Arp(Option<ArpRepr>),
    /// An IPv6 neighbour solicitation to answer (`None`: one that needs no answer).
    Ndp(Option<Solicitation>),
    /// A TCP segment from U (or U6); `syn_only` for a connection request (SYN without ACK).
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        syn_only: bool,
        seq: u32,
        seg_len: u32,
    },
    /// A UDP datagram from U (or U6).
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// An ICMP (or ICMPv6) echo request from U (or U6); `message` is the whole ICMP message.
    IcmpEcho {
        dst: IpAddr,
        ident: u16,
        message: &'a [u8],
    },
}

fn unicast(a: Ipv4Addr) -> bool {
    !(a.is_broadcast() || a.is_multicast() || a.is_unspecified())
}

/// Classifies one frame from the switch.
pub(crate) fn parse<'a>(frame: &'a [u8], cfg: &GatewayConfig) -> Result<Parsed<'a>, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Malformed)?;
    let dst_mac = MacAddr(eth.dst_addr().0);
    let ethertype = u16::from(eth.ethertype());
    // IPv6 multicast MACs (33:33:...) carry neighbour solicitations (when serving IPv6).
    let multicast6 =
        cfg.ipv6.is_some() && dst_mac.0[0..2] == [0x33, 0x33] && ethertype == ETHERTYPE_IPV6;
    if dst_mac != cfg.gateway_mac
        && !(dst_mac.is_broadcast() && ethertype == ETHERTYPE_ARP)
        && !multicast6
    {
        return Err(DropReason::NotForUs);
    }
    match ethertype {
        ETHERTYPE_ARP => {
            let arp = ArpPacket::new_checked(eth.payload()).map_err(|_| DropReason::Malformed)?;
            let repr = ArpRepr::parse(&arp).map_err(|_| DropReason::Malformed)?;
            match repr {
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    source_protocol_addr,
                    target_protocol_addr,
                    ..
                } if source_protocol_addr != target_protocol_addr => Ok(Parsed::Arp(Some(repr))),
                // Replies and gratuitous ARP need no answer.
                _ => Ok(Parsed::Arp(None)),
            }
        }
        ETHERTYPE_IPV4 => parse_ipv4(eth.payload(), cfg),
        ETHERTYPE_IPV6 => v6::parse_ipv6(eth.payload(), MacAddr(eth.src_addr().0), multicast6, cfg),
        _ => Err(DropReason::Unsupported),
    }
}

fn parse_ipv4<'a>(bytes: &'a [u8], cfg: &GatewayConfig) -> Result<Parsed<'a>, DropReason> {
    let ip = Ipv4Packet::new_checked(bytes).map_err(|_| DropReason::Malformed)?;
    if ip.version() != 4 || !ip.verify_checksum() {
        return Err(DropReason::Malformed);
    }
    if ip.src_addr() != cfg.address {
        return Err(DropReason::NotForUs);
    }
    // The switch hands over whole datagrams (MTU 65520); fragments and broadcasts have no flow.
    if ip.more_frags() || ip.frag_offset() != 0 || !unicast(ip.dst_addr()) {
        return Err(DropReason::Unsupported);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let payload = ip.payload();
    match ip.next_header() {
        IpProtocol::Tcp => tcp_parsed(IpAddr::V4(src), IpAddr::V4(dst), payload),
        IpProtocol::Udp => udp_parsed(IpAddr::V4(src), IpAddr::V4(dst), payload),
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_checked(payload).map_err(|_| DropReason::Malformed)?;
            if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
                return Err(DropReason::Unsupported);
            }
            Ok(Parsed::IcmpEcho {
                dst: IpAddr::V4(dst),
                ident: icmp.echo_ident(),
                message: payload,
            })
        }
        _ => Err(DropReason::Unsupported),
    }
}

/// A TCP segment `payload` from `src` to `dst` (either family).
fn tcp_parsed(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Result<Parsed<'_>, DropReason> {
    let tcp = TcpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
    let data_len = payload.len().saturating_sub(usize::from(tcp.header_len()));
    let seg_len = u32::try_from(data_len).map_err(|_| DropReason::Malformed)?
        + u32::from(tcp.syn())
        + u32::from(tcp.fin());
    Ok(Parsed::Tcp {
        src: SocketAddr::new(src, tcp.src_port()),
        dst: SocketAddr::new(dst, tcp.dst_port()),
        syn_only: tcp.syn() && !tcp.ack() && !tcp.rst(),
        seq: tcp.seq_number().0 as u32,
        seg_len,
    })
}

/// A UDP datagram `payload` from `src` to `dst` (either family).
fn udp_parsed(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Result<Parsed<'_>, DropReason> {
    let udp = UdpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
    if udp.src_port() == 0 || udp.dst_port() == 0 {
        return Err(DropReason::Malformed);
    }
    let len = usize::from(udp.len());
    let data = payload.get(8..len).ok_or(DropReason::Malformed)?;
    Ok(Parsed::Udp {
        src: SocketAddr::new(src, udp.src_port()),
        dst: SocketAddr::new(dst, udp.dst_port()),
        payload: data,
    })
}

/// Answers an ARP request for any address with the gateway's MAC.
pub(crate) fn arp_reply(cfg: &GatewayConfig, request: &ArpRepr) -> Option<Vec<u8>> {
    let ArpRepr::EthernetIpv4 {
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = *request
    else {
        return None;
    };
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(cfg.gateway_mac.0),
        source_protocol_addr: target_protocol_addr,
        target_hardware_addr: source_hardware_addr,
        target_protocol_addr: source_protocol_addr,
    };
    let mut frame = vec![0u8; ETH_HEADER_LEN + reply.buffer_len()];
    frame[0..6].copy_from_slice(&source_hardware_addr.0);
    frame[6..12].copy_from_slice(&cfg.gateway_mac.0);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let mut arp = ArpPacket::new_unchecked(&mut frame[ETH_HEADER_LEN..]);
    reply.emit(&mut arp);
    Some(frame)
}

/// An IPv4 frame from the gateway to U with `payload_len` bytes of `proto` filled by `fill`;
/// `None` if it would exceed the MTU.
fn ipv4_frame(
    cfg: &GatewayConfig,
    src: Ipv4Addr,
    proto: IpProtocol,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Option<Vec<u8>> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: cfg.address,
        next_header: proto,
        payload_len,
        hop_limit: 64,
    };
    let ip_len = repr.buffer_len() + payload_len;
    if ip_len > cfg.mtu || ip_len > usize::from(u16::MAX) {
        return None;
    }
    let mut frame = vec![0u8; ETH_HEADER_LEN + ip_len];
    frame[0..6].copy_from_slice(&cfg.mac.0);
    frame[6..12].copy_from_slice(&cfg.gateway_mac.0);
    frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH_HEADER_LEN..]);
    repr.emit(&mut ip, &ChecksumCapabilities::default());
    fill(ip.payload_mut());
    Some(frame)
}

/// A UDP datagram from `src` to `dst_port` at U (or U6, for an IPv6 `src`).
pub(crate) fn udp_frame(
    cfg: &GatewayConfig,
    src: SocketAddr,
    dst_port: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    match src {
        SocketAddr::V4(src) => udp_frame_v4(cfg, src, dst_port, payload),
        SocketAddr::V6(src) => v6::udp_frame(cfg, src, dst_port, payload),
    }
}

fn udp_frame_v4(
    cfg: &GatewayConfig,
    src: SocketAddrV4,
    dst_port: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let repr = UdpRepr {
        src_port: src.port(),
        dst_port,
    };
    let len = repr.header_len() + payload.len();
    ipv4_frame(cfg, *src.ip(), IpProtocol::Udp, len, |buf| {
        let mut udp = UdpPacket::new_unchecked(buf);
        repr.emit(
            &mut udp,
            &IpAddress::Ipv4(*src.ip()),
            &IpAddress::Ipv4(cfg.address),
            payload.len(),
            |p| p.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
    })
}

/// An ICMP message from `src` to U (an ICMPv6 one to U6, for an IPv6 `src`): `message` as the
/// host gave it, with the echo identifier set back to `ident` and the checksum recomputed.
/// `None` if it is not an echo reply.
pub(crate) fn icmp_echo_reply_frame(
    cfg: &GatewayConfig,
    src: IpAddr,
    ident: u16,
    message: &[u8],
) -> Option<Vec<u8>> {
    match src {
        IpAddr::V4(src) => icmp_echo_reply_frame_v4(cfg, src, ident, message),
        IpAddr::V6(src) => v6::icmp_echo_reply_frame(cfg, src, ident, message),
    }
}

fn icmp_echo_reply_frame_v4(
    cfg: &GatewayConfig,
    src: Ipv4Addr,
    ident: u16,
    message: &[u8],
) -> Option<Vec<u8>> {
    let check = Icmpv4Packet::new_checked(message).ok()?;
    if check.msg_type() != Icmpv4Message::EchoReply {
        return None;
    }
    ipv4_frame(cfg, src, IpProtocol::Icmp, message.len(), |buf| {
        buf.copy_from_slice(message);
        let mut icmp = Icmpv4Packet::new_unchecked(buf);
        icmp.set_echo_ident(ident);
        icmp.fill_checksum();
    })
}

/// The RST+ACK that refuses a SYN from `client` to `server` (RFC 793: SEQ 0, ACK = SEG.SEQ +
/// SEG.LEN when the incoming segment has no ACK); `None` for addresses of two families.
pub(crate) fn tcp_rst(
    cfg: &GatewayConfig,
    server: SocketAddr,
    client: SocketAddr,
    seq: u32,
    seg_len: u32,
) -> Option<Vec<u8>> {
    match (server, client) {
        (SocketAddr::V4(s), SocketAddr::V4(c)) => tcp_rst_v4(cfg, s, c, seq, seg_len),
        (SocketAddr::V6(s), SocketAddr::V6(c)) => v6::tcp_rst(cfg, s, c, seq, seg_len),
        _ => None,
    }
}

/// The 20-byte header of a refusing RST+ACK (checksum left to the caller).
fn fill_rst(tcp: &mut TcpPacket<&mut [u8]>, src_port: u16, dst_port: u16, seq: u32, seg_len: u32) {
    tcp.set_src_port(src_port);
    tcp.set_dst_port(dst_port);
    tcp.set_seq_number(TcpSeqNumber(0));
    tcp.set_ack_number(TcpSeqNumber(seq.wrapping_add(seg_len) as i32));
    tcp.set_header_len(20);
    tcp.clear_flags();
    tcp.set_rst(true);
    tcp.set_ack(true);
    tcp.set_window_len(0);
    tcp.set_urgent_at(0);
}

fn tcp_rst_v4(
    cfg: &GatewayConfig,
    server: SocketAddrV4,
    client: SocketAddrV4,
    seq: u32,
    seg_len: u32,
) -> Option<Vec<u8>> {
    ipv4_frame(cfg, *server.ip(), IpProtocol::Tcp, 20, |buf| {
        let mut tcp = TcpPacket::new_unchecked(buf);
        fill_rst(&mut tcp, server.port(), client.port(), seq, seg_len);
        tcp.fill_checksum(
            &IpAddress::Ipv4(*server.ip()),
            &IpAddress::Ipv4(*client.ip()),
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GatewayConfig {
        GatewayConfig::new(
            Ipv4Addr::new(10, 0, 2, 15),
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
        )
    }

    #[test]
    fn short_and_foreign_frames_are_dropped() {
        let c = cfg();
        assert_eq!(parse(&[], &c).err(), Some(DropReason::Malformed));
        assert_eq!(parse(&[0u8; 13], &c).err(), Some(DropReason::Malformed));
        let mut f = vec![0u8; 60];
        f[12] = 0x08;
        // Unicast to another MAC.
        assert_eq!(parse(&f, &c).err(), Some(DropReason::NotForUs));
        f[0..6].copy_from_slice(&c.gateway_mac.0);
        // IPv4 with a zero header: version 0.
        assert_eq!(parse(&f, &c).err(), Some(DropReason::Malformed));
        f[12] = 0x86;
        f[13] = 0xdd;
        assert_eq!(parse(&f, &c).err(), Some(DropReason::Unsupported));
    }

    #[test]
    fn udp_frame_round_trips() {
        let c = cfg();
        let src = SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 53);
        let f = udp_frame(&c, src.into(), 4000, b"hello").unwrap_or_default();
        // Turn it around as if U had sent it, then parse it.
        let mut back = f.clone();
        back[0..6].copy_from_slice(&c.gateway_mac.0);
        let mut ip = Ipv4Packet::new_unchecked(&mut back[ETH_HEADER_LEN..]);
        ip.set_src_addr(c.address);
        ip.set_dst_addr(Ipv4Addr::new(1, 2, 3, 4));
        ip.fill_checksum();
        match parse(&back, &c) {
            Ok(Parsed::Udp { payload, .. }) => assert_eq!(payload, b"hello"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(udp_frame(&c, src.into(), 1, &vec![0u8; 70000]).is_none());
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;

    #[test]
    fn tcp_segments_are_read_with_their_sequence_space() {
        let c = cfg();
        let far = Ipv4Addr::new(192, 0, 2, 9);
        let syn = testkit::frames::tcp(
            c.mac,
            c.gateway_mac,
            c.address,
            far,
            40000,
            80,
            7,
            0,
            SYN,
            b"",
        );
        match parse(&syn, &c) {
            Ok(Parsed::Tcp {
                src,
                dst,
                syn_only,
                seq,
                seg_len,
            }) => {
                assert_eq!(src, SocketAddrV4::new(c.address, 40000).into());
                assert_eq!(dst, SocketAddrV4::new(far, 80).into());
                assert!(syn_only);
                assert_eq!((seq, seg_len), (7, 1));
            }
            other => panic!("unexpected {other:?}"),
        }
        let data = testkit::frames::tcp(
            c.mac,
            c.gateway_mac,
            c.address,
            far,
            40000,
            80,
            8,
            1,
            ACK,
            b"abc",
        );
        assert!(matches!(
            parse(&data, &c),
            Ok(Parsed::Tcp {
                syn_only: false,
                seg_len: 3,
                ..
            })
        ));
        // From another source than U.
        let spoofed = testkit::frames::tcp(c.mac, c.gateway_mac, far, far, 1, 80, 0, 0, SYN, b"");
        assert_eq!(parse(&spoofed, &c).err(), Some(DropReason::NotForUs));
    }

    #[test]
    fn only_echo_requests_are_taken_from_icmp() {
        let c = cfg();
        let far = Ipv4Addr::new(192, 0, 2, 9);
        let req = testkit::frames::icmp_echo(
            c.mac,
            c.gateway_mac,
            c.address,
            far,
            true,
            0x1234,
            1,
            b"hi",
        );
        match parse(&req, &c) {
            Ok(Parsed::IcmpEcho {
                dst,
                ident,
                message,
            }) => {
                assert_eq!((dst, ident), (IpAddr::V4(far), 0x1234));
                assert_eq!(message.len(), 8 + 2, "the whole ICMP message");
            }
            other => panic!("unexpected {other:?}"),
        }
        let reply =
            testkit::frames::icmp_echo(c.mac, c.gateway_mac, c.address, far, false, 1, 1, b"");
        assert_eq!(parse(&reply, &c).err(), Some(DropReason::Unsupported));
    }

    #[test]
    fn echo_replies_get_the_containers_identifier_back() {
        let c = cfg();
        let far = Ipv4Addr::new(192, 0, 2, 9);
        // As the host's ping socket returns it: the kernel's identifier 999, "abc".
        let mut msg = vec![0u8, 0, 0, 0, 0x03, 0xe7, 0, 5, b'a', b'b', b'c'];
        let f = icmp_echo_reply_frame(&c, far.into(), 0x1234, &msg).unwrap();
        let ip = Ipv4Packet::new_checked(&f[ETH_HEADER_LEN..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (far, c.address));
        assert_eq!(&f[0..6], &c.mac.0);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), Icmpv4Message::EchoReply);
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x1234, 5));
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.data(), b"abc");
        // Anything but an echo reply is not passed on.
        msg[0] = 8;
        assert!(icmp_echo_reply_frame(&c, far.into(), 0x1234, &msg).is_none());
        assert!(icmp_echo_reply_frame(&c, far.into(), 0x1234, &[0, 0]).is_none());
    }

    #[test]
    fn a_refusing_rst_acks_the_syn() {
        let c = cfg();
        let server = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 80);
        let client = SocketAddrV4::new(c.address, 40000);
        // ACK = SEQ + LEN, wrapping.
        let f = tcp_rst(&c, server.into(), client.into(), u32::MAX, 1).unwrap();
        let ip = Ipv4Packet::new_checked(&f[ETH_HEADER_LEN..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (*server.ip(), c.address));
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port()), (80, 40000));
        assert!(tcp.rst() && tcp.ack() && !tcp.syn() && !tcp.fin());
        assert_eq!((tcp.seq_number().0, tcp.ack_number().0), (0, 0));
        assert!(tcp.verify_checksum(&IpAddress::Ipv4(*server.ip()), &IpAddress::Ipv4(c.address)));
    }

    #[test]
    fn arp_requests_for_any_address_are_answered_with_the_gateway_mac() {
        let c = cfg();
        let asked = Ipv4Addr::new(198, 51, 100, 1);
        let req = testkit::frames::arp_request(c.mac, c.address, asked);
        let Ok(Parsed::Arp(Some(repr))) = parse(&req, &c) else {
            panic!("not an ARP request to answer")
        };
        let f = arp_reply(&c, &repr).unwrap();
        assert_eq!(&f[0..6], &c.mac.0);
        let arp = ArpPacket::new_checked(&f[ETH_HEADER_LEN..]).unwrap();
        match ArpRepr::parse(&arp).unwrap() {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_hardware_addr,
                target_protocol_addr,
            } => {
                assert_eq!(operation, ArpOperation::Reply);
                assert_eq!(source_hardware_addr, EthernetAddress(c.gateway_mac.0));
                assert_eq!(source_protocol_addr, asked);
                assert_eq!(target_hardware_addr, EthernetAddress(c.mac.0));
                assert_eq!(target_protocol_addr, c.address);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Gratuitous ARP needs no answer.
        let gratuitous = testkit::frames::arp_request(c.mac, c.address, c.address);
        assert!(matches!(parse(&gratuitous, &c), Ok(Parsed::Arp(None))));
    }
}
