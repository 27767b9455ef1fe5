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

use etherparse::PacketBuilder;
use packet::{ETHERTYPE_ARP, MacAddr};
use std::net::Ipv4Addr;

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
    let mut b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), TTL)
        .tcp(src_port, dst_port, seq, 64240);
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
    finish(|v| b.write(v, payload))
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
