//! Frame builders for tests, benches and fixtures (moved here from `packet::build`: only tests,
//! benches and fuzz seeds used them, and they kept etherparse among the product's dependencies).
//!
//! They use etherparse's `PacketBuilder`, an implementation independent of the smoltcp views the
//! datapath parses with, so a test that builds with one and checks with the other is not
//! grading its own homework. Every builder returns a complete Ethernet II frame with valid
//! checksums and no padding.
//!
//! # Panics
//! Each builder panics if the payload makes the IPv4 packet longer than 65535 bytes; callers pass
//! fixed, small payloads.

use etherparse::igmp::{
    GroupAddress, LeaveGroupType, MembershipReportV2Type, MembershipReportV3Header,
};
use etherparse::{
    IgmpType, IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader,
    PacketBuilder,
};
use packet::{ETHERTYPE_ARP, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Default TTL of built IPv4 packets.
pub const TTL: u8 = 64;

fn finish<B>(write: impl FnOnce(&mut Vec<u8>) -> Result<(), B>) -> Vec<u8>
where
    B: std::fmt::Debug,
{
    let mut out = Vec::with_capacity(128);
    write(&mut out).expect("built frame must fit in an IPv4 packet");
    out
}

/// A UDP datagram in IPv4 in Ethernet.
pub fn udp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), TTL)
        .udp(src_port, dst_port);
    finish(|v| b.write(v, payload))
}

/// A TCP segment in IPv4 in Ethernet; `flags` uses [`packet::tcp_flags`]-style bits (FIN, SYN,
/// RST, ACK).
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), TTL)
        .tcp(src_port, dst_port, seq, 64240);
    let b = with_tcp_flags(b, flags, ack);
    finish(|v| b.write(v, payload))
}

/// Sets the FIN, SYN, RST and ACK bits of `flags` (and the acknowledgement number) on a TCP
/// builder step, of either IP version.
fn with_tcp_flags(
    mut b: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    flags: u8,
    ack: u32,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    if flags & 0x01 != 0 {
        b = b.fin();
    }
    if flags & 0x02 != 0 {
        b = b.syn();
    }
    if flags & 0x04 != 0 {
        b = b.rst();
    }
    if flags & 0x10 != 0 {
        b = b.ack(ack);
    }
    b
}

/// A TCP reset as a host's stack sends it to refuse a segment (RFC 793 3.4): window 0, no
/// payload, Don't Fragment set; RST+ACK acknowledging `ack` when given, else a bare RST.
#[allow(clippy::too_many_arguments)]
pub fn tcp_reset(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: Option<u32>,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), TTL)
        .tcp(src_port, dst_port, seq, 0)
        .rst();
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let mut f = finish(|v| b.write(v, &[]));
    set_dont_fragment(&mut f);
    f
}

/// An ICMP echo request (`request = true`) or reply.
#[allow(clippy::too_many_arguments)]
pub fn icmp_echo(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    request: bool,
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0).ipv4(src.octets(), dst.octets(), TTL);
    let b = if request {
        b.icmpv4_echo_request(ident, seq)
    } else {
        b.icmpv4_echo_reply(ident, seq)
    };
    finish(|v| b.write(v, payload))
}

/// An ICMP error (e.g. type 3 code 3, port unreachable) quoting `quoted`, the start of the
/// offending IPv4 packet (its IP header and at least 8 bytes of transport header).
#[allow(clippy::too_many_arguments)]
pub fn icmp_error(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ty: u8,
    code: u8,
    rest_of_header: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), TTL)
        .icmpv4_raw(ty, code, rest_of_header);
    finish(|v| b.write(v, quoted))
}

/// An Ethernet frame with any EtherType and payload.
pub fn ethernet(src_mac: MacAddr, dst_mac: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + payload.len());
    v.extend_from_slice(&dst_mac.0);
    v.extend_from_slice(&src_mac.0);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn arp(
    op: u16,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    sender: Ipv4Addr,
    target_mac: MacAddr,
    target: Ipv4Addr,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(28);
    p.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&src_mac.0);
    p.extend_from_slice(&sender.octets());
    p.extend_from_slice(&target_mac.0);
    p.extend_from_slice(&target.octets());
    ethernet(src_mac, dst_mac, ETHERTYPE_ARP, &p)
}

/// A broadcast ARP request: who has `target`? tell `sender`.
pub fn arp_request(src_mac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp(
        1,
        src_mac,
        MacAddr::BROADCAST,
        sender,
        MacAddr::ZERO,
        target,
    )
}

/// A unicast ARP reply: `sender` is at `src_mac`, sent to `dst_mac` / `target`.
pub fn arp_reply(
    src_mac: MacAddr,
    sender: Ipv4Addr,
    dst_mac: MacAddr,
    target: Ipv4Addr,
) -> Vec<u8> {
    arp(2, src_mac, dst_mac, sender, dst_mac, target)
}

/// Sets the Don't Fragment bit of an untagged IPv4 frame and recomputes its header checksum.
pub fn set_dont_fragment(frame: &mut [u8]) {
    if frame.len() >= 34 {
        frame[20] |= 0x40;
        refresh_ipv4_checksum(frame);
    }
}

/// Sets the TTL of an untagged IPv4 frame and recomputes its header checksum.
pub fn set_ttl(frame: &mut [u8], ttl: u8) {
    if frame.len() >= 34 {
        frame[22] = ttl;
        refresh_ipv4_checksum(frame);
    }
}

fn refresh_ipv4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    if frame.len() < 14 + ihl {
        return;
    }
    frame[24] = 0;
    frame[25] = 0;
    let c = packet::checksum::internet_checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Turns the complete TCP/UDP checksum of an untagged IPv4 frame (no IP options) into what a
/// sender with checksum offload hands over (CHECKSUM_PARTIAL, or a GSO super-frame from TSO):
/// the field holds the folded pseudo-header sum of the whole L4 length, for the device to
/// finish. Computed with [`ones_sum`], independently of the code under test.
///
/// # Panics
/// If the frame is not TCP or UDP over IPv4 without options.
pub fn make_partial(mut frame: Vec<u8>) -> Vec<u8> {
    assert!(frame.len() >= 42 && frame[12..14] == [0x08, 0x00] && frame[14] == 0x45);
    let field = match frame[23] {
        6 => 34 + 16,
        17 => 34 + 6,
        p => panic!("protocol {p} has no partial checksum"),
    };
    let mut ph = frame[26..34].to_vec();
    ph.extend_from_slice(&[0, frame[23]]);
    ph.extend_from_slice(&((frame.len() - 34) as u16).to_be_bytes());
    let pseudo = ones_sum(0, &ph) as u16;
    frame[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
    frame
}

/// RFC 1071 one's-complement sum of 16-bit words added to `acc`, folded to 16 bits: written here,
/// not taken from the code under test, so tests that verify checksums with it are independent.
pub fn ones_sum(mut acc: u32, bytes: &[u8]) -> u32 {
    for c in bytes.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// 01:00:5e and the low 23 bits of an IPv4 group (RFC 1112 6.4).
pub fn multicast_mac_v4(group: Ipv4Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// 33:33 and the low 32 bits of an IPv6 group (RFC 2464 7).
pub fn multicast_mac_v6(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The solicited-node group of `addr` (RFC 4291 2.7.1): ff02::1:ff and its low 24 bits.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// An IGMP message from `src` to `dst` (its group MAC), in an IPv4 header with TTL 1 and the
/// Router Alert option, as hosts send them (RFC 2236 2, RFC 3376 4).
fn igmp(src_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, ty: IgmpType, payload: &[u8]) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 1, IpNumber::IGMP, src.octets(), dst.octets())
        .expect("an empty payload fits");
    ip.options = [0x94, 0x04, 0, 0].into();
    let b = PacketBuilder::ethernet2(src_mac.0, multicast_mac_v4(dst).0)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .igmp(ty);
    finish(|v| b.write(v, payload))
}

/// An IGMPv2 membership report for `group` (sent to the group itself).
pub fn igmpv2_report(src_mac: MacAddr, src: Ipv4Addr, group: Ipv4Addr) -> Vec<u8> {
    let ty = IgmpType::MembershipReportV2(MembershipReportV2Type {
        group_address: GroupAddress::new(group.octets()),
    });
    igmp(src_mac, src, group, ty, &[])
}

/// An IGMPv2 leave for `group` (sent to 224.0.0.2, all routers).
pub fn igmpv2_leave(src_mac: MacAddr, src: Ipv4Addr, group: Ipv4Addr) -> Vec<u8> {
    let ty = IgmpType::LeaveGroup(LeaveGroupType {
        group_address: GroupAddress::new(group.octets()),
    });
    igmp(src_mac, src, Ipv4Addr::new(224, 0, 0, 2), ty, &[])
}

/// Record types of IGMPv3 and MLDv2 reports (RFC 3376 4.2.12, RFC 3810 5.2.12).
pub mod record {
    /// MODE_IS_INCLUDE.
    pub const IS_INCLUDE: u8 = 1;
    /// MODE_IS_EXCLUDE.
    pub const IS_EXCLUDE: u8 = 2;
    /// CHANGE_TO_INCLUDE_MODE.
    pub const TO_INCLUDE: u8 = 3;
    /// CHANGE_TO_EXCLUDE_MODE.
    pub const TO_EXCLUDE: u8 = 4;
    /// ALLOW_NEW_SOURCES.
    pub const ALLOW: u8 = 5;
    /// BLOCK_OLD_SOURCES.
    pub const BLOCK: u8 = 6;
}

/// One group record of an IGMPv3 or MLDv2 report: record type, group, sources.
pub type GroupRecord<'a, A> = (u8, A, &'a [A]);

/// Group records laid out: type, aux data length 0, number of sources, the group, the sources.
fn group_records<A: Copy, const N: usize>(
    records: &[GroupRecord<'_, A>],
    octets: fn(A) -> [u8; N],
) -> Vec<u8> {
    let mut out = Vec::new();
    for &(ty, group, sources) in records {
        out.extend_from_slice(&[ty, 0]);
        out.extend_from_slice(&(sources.len() as u16).to_be_bytes());
        out.extend_from_slice(&octets(group));
        sources
            .iter()
            .for_each(|&s| out.extend_from_slice(&octets(s)));
    }
    out
}

/// An IGMPv3 report (to 224.0.0.22) with `records`.
pub fn igmpv3_report(
    src_mac: MacAddr,
    src: Ipv4Addr,
    records: &[GroupRecord<'_, Ipv4Addr>],
) -> Vec<u8> {
    let ty = IgmpType::MembershipReportV3(MembershipReportV3Header {
        flags: [0, 0],
        num_of_records: records.len() as u16,
    });
    let body = group_records(records, |a: Ipv4Addr| a.octets());
    igmp(src_mac, src, Ipv4Addr::new(224, 0, 0, 22), ty, &body)
}

/// An ICMPv6 message (`ty`, `code`, the 4 bytes after the checksum, then `payload`) from `src`
/// to the multicast `group`, hop limit 255 or (with `router_alert`, as MLD is sent) 1 behind a
/// Hop-by-Hop header carrying the Router Alert option (RFC 2711).
#[allow(clippy::too_many_arguments)]
pub fn icmpv6_multicast(
    src_mac: MacAddr,
    src: Ipv6Addr,
    group: Ipv6Addr,
    router_alert: bool,
    ty: u8,
    code: u8,
    rest_of_header: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let header = Ipv6Header {
        hop_limit: if router_alert { 1 } else { 255 },
        source: src.octets(),
        destination: group.octets(),
        ..Default::default()
    };
    let mut ext = Ipv6Extensions::default();
    if router_alert {
        // Router Alert (type 5, value 0: MLD), then PadN of 0 bytes.
        let options = Ipv6RawExtHeader::new_raw(IpNumber::IPV6_ICMP, &[5, 2, 0, 0, 1, 0])
            .expect("6 option bytes fill one 8-byte header");
        ext.hop_by_hop_options = Some(options);
    }
    let b = PacketBuilder::ethernet2(src_mac.0, multicast_mac_v6(group).0)
        .ip(IpHeaders::Ipv6(header, ext))
        .icmpv6_raw(ty, code, rest_of_header);
    finish(|v| b.write(v, payload))
}

/// An MLDv1 report (`done = false`, to the group) or done (to ff02::2) for `group`.
pub fn mldv1(src_mac: MacAddr, src: Ipv6Addr, group: Ipv6Addr, done: bool) -> Vec<u8> {
    let (ty, dst) = if done {
        (132, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2))
    } else {
        (131, group)
    };
    icmpv6_multicast(src_mac, src, dst, true, ty, 0, [0; 4], &group.octets())
}

/// An MLDv2 report (to ff02::16) with `records`.
pub fn mldv2_report(
    src_mac: MacAddr,
    src: Ipv6Addr,
    records: &[GroupRecord<'_, Ipv6Addr>],
) -> Vec<u8> {
    let count = (records.len() as u16).to_be_bytes();
    icmpv6_multicast(
        src_mac,
        src,
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16),
        true,
        143,
        0,
        [0, 0, count[0], count[1]],
        &group_records(records, |a: Ipv6Addr| a.octets()),
    )
}

/// A neighbour solicitation for `target` from `src` (`::` for duplicate address detection) to
/// the target's solicited-node group, without options.
pub fn neighbor_solicitation(src_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    icmpv6_multicast(
        src_mac,
        src,
        solicited_node(target),
        false,
        135,
        0,
        [0; 4],
        &target.octets(),
    )
}

/// Default hop limit of built IPv6 packets.
pub const HOP_LIMIT: u8 = 64;

/// Sets the hop limit of an untagged IPv6 frame (no header checksum to fix in IPv6).
pub fn set_hop_limit(frame: &mut [u8], hop_limit: u8) {
    if let Some(h) = frame.get_mut(14 + 7) {
        *h = hop_limit;
    }
}

/// A UDP datagram in IPv6 in Ethernet.
pub fn udp6(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.octets(), dst.octets(), HOP_LIMIT)
        .udp(src_port, dst_port);
    finish(|v| b.write(v, payload))
}

/// A TCP segment in IPv6 in Ethernet; `flags` as for [`tcp`].
#[allow(clippy::too_many_arguments)]
pub fn tcp6(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.octets(), dst.octets(), HOP_LIMIT)
        .tcp(src_port, dst_port, seq, 64240);
    let b = with_tcp_flags(b, flags, ack);
    finish(|v| b.write(v, payload))
}

/// An ICMPv6 message to a unicast (or any) `dst` with hop limit `hop_limit`: `ty`, `code`,
/// the 4 bytes after the checksum, then `payload`.
#[allow(clippy::too_many_arguments)]
pub fn icmpv6(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    ty: u8,
    code: u8,
    rest_of_header: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(src.octets(), dst.octets(), hop_limit)
        .icmpv6_raw(ty, code, rest_of_header);
    finish(|v| b.write(v, payload))
}

/// An ICMPv6 echo request (`request = true`) or reply.
#[allow(clippy::too_many_arguments)]
pub fn icmpv6_echo(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    request: bool,
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let [i0, i1] = ident.to_be_bytes();
    let [s0, s1] = seq.to_be_bytes();
    let ty = if request { 128 } else { 129 };
    icmpv6(
        src_mac,
        dst_mac,
        src,
        dst,
        HOP_LIMIT,
        ty,
        0,
        [i0, i1, s0, s1],
        payload,
    )
}

/// The NDP link-layer address option (RFC 4861 4.6.1): 1 source, 2 target.
pub fn ndp_mac_option(kind: u8, mac: MacAddr) -> [u8; 8] {
    let m = mac.0;
    [kind, 1, m[0], m[1], m[2], m[3], m[4], m[5]]
}

/// A neighbour advertisement for `target` from `src` (hop limit 255) to `dst`, with the
/// target link-layer option `mac`; `flags` is the R/S/O byte (0x80 router, 0x40 solicited,
/// 0x20 override).
#[allow(clippy::too_many_arguments)]
pub fn neighbor_advertisement(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    flags: u8,
    mac: MacAddr,
) -> Vec<u8> {
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&ndp_mac_option(2, mac));
    icmpv6(
        src_mac,
        dst_mac,
        src,
        dst,
        255,
        136,
        0,
        [flags, 0, 0, 0],
        &body,
    )
}

/// A router solicitation from `src` to ff02::2 with the source link-layer option (none when
/// `src` is `::`, as RFC 4861 6.3.7 requires).
pub fn router_solicitation(src_mac: MacAddr, src: Ipv6Addr) -> Vec<u8> {
    let opt = if src.is_unspecified() {
        Vec::new()
    } else {
        ndp_mac_option(1, src_mac).to_vec()
    };
    icmpv6_multicast(
        src_mac,
        src,
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
        false,
        133,
        0,
        [0; 4],
        &opt,
    )
}

/// A router advertisement (router lifetime 1800 s, no options) from `src` to ff02::1, as a
/// rogue router would send it.
pub fn router_advertisement(src_mac: MacAddr, src: Ipv6Addr) -> Vec<u8> {
    let [l0, l1] = 1800u16.to_be_bytes();
    icmpv6_multicast(
        src_mac,
        src,
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        false,
        134,
        0,
        [64, 0, l0, l1],
        &[0; 8],
    )
}

/// A DNS query message (RFC 1035 4.1: recursion desired, one question of `qtype`, class IN)
/// for `name`: what a stub resolver sends. 1 is A, 28 AAAA.
pub fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}
