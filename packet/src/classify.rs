//! One pass over a frame's headers: what the pipeline needs to pick a stage, without copying.
//!
//! [`classify`] validates lengths with smoltcp's checked views and reports offsets so later stages
//! can rewrite fields in place. The IP packet ends at `ip_end` (IPv4's total length, IPv6's
//! fixed header and payload length): bytes after it are Ethernet padding or trailer, kept on
//! the wire but never part of any checksum.
//!
//! IPv6 extension headers (hop-by-hop, routing, fragment, destination options) are walked to
//! the upper-layer header, at most [`MAX_EXTENSION_HEADERS`] of them: a longer chain is
//! malformed rather than a loop an attacker controls.

use crate::{ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ethertype};
use smoltcp::wire::{ArpPacket, Icmpv4Packet, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest chain of IPv6 extension headers walked; a longer one is malformed.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

/// IPv6 next-header value of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// Summary of a frame's network and transport layers, with byte offsets into the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    /// Network layer.
    pub l3: L3,
    /// Transport layer (only for first fragments / unfragmented packets).
    pub l4: L4,
    /// Offset of the network header (14 for untagged Ethernet).
    pub l3_offset: usize,
    /// Offset of the transport header (after IPv6 extension headers); equals `ip_end` when
    /// there is none.
    pub l4_offset: usize,
    /// End of the IP packet (IPv4: l3_offset + total length; IPv6: l3_offset + 40 + payload
    /// length); frame length for other payloads.
    pub ip_end: usize,
}

/// Network layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    /// IPv4 with a header that passed the length checks.
    Ipv4(Ipv4Info),
    /// IPv6 whose fixed header and extension headers passed the length checks.
    Ipv6(Ipv6Info),
    /// ARP for IPv4 over Ethernet (other ARP flavours are `Other`).
    Arp,
    /// Anything else (VLAN-tagged, LLDP, ...): bridged untouched.
    Other {
        /// EtherType of the frame.
        ethertype: u16,
    },
}

/// The IPv4 header fields the pipeline acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// Header length in bytes (20..=60).
    pub header_len: usize,
    /// Total length in bytes.
    pub total_len: usize,
    /// Don't Fragment flag.
    pub dont_frag: bool,
    /// More Fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
}

impl Ipv4Info {
    /// Part of a fragmented datagram (first or later fragment).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }
}

/// The IPv6 header fields the pipeline acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Info {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// The upper-layer protocol after the extension headers (6 TCP, 17 UDP, 58 ICMPv6, or
    /// whatever else ends the chain, e.g. 59 "no next header").
    pub protocol: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Payload length (extension headers included), in bytes.
    pub payload_len: usize,
    /// The fixed header and the extension headers, in bytes (40 without extensions).
    pub header_len: usize,
    /// The fragment header, if there is one.
    pub fragment: Option<Ipv6Fragment>,
    /// A hop-by-hop options header is present.
    pub hop_by_hop: bool,
}

/// An IPv6 fragment header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Identification.
    pub ident: u32,
    /// Offset of the fragment header in the frame.
    pub at: usize,
}

impl Ipv6Info {
    /// Part of a fragmented datagram (an atomic fragment, offset 0 and no more, is not).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.fragment.is_some_and(|f| f.more || f.offset != 0)
    }

    /// A later fragment: no upper-layer header in it.
    #[inline]
    pub fn is_later_fragment(&self) -> bool {
        self.fragment.is_some_and(|f| f.offset != 0)
    }
}

/// Transport layer of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP header that passed the length checks.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
        flags: u8,
        /// Sequence number.
        seq: u32,
        /// Acknowledgement number.
        ack: u32,
        /// Payload length in bytes.
        payload_len: u32,
    },
    /// UDP header whose length field fits the packet.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP message, or ICMPv6 in an IPv6 packet (at least the 8-byte header).
    Icmp {
        /// ICMP type.
        ty: u8,
        /// ICMP code.
        code: u8,
        /// Echo identifier (bytes 4..6; meaningful for echo request/reply only).
        ident: u16,
    },
    /// No transport header to look at: not the first fragment, not IPv4, or another protocol.
    None,
}

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Why a frame could not be classified; each is a counted drop reason of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Shorter than an Ethernet header.
    #[error("runt frame")]
    Runt,
    /// IPv4 header too short, wrong version, or total length beyond the frame.
    #[error("malformed IPv4 header")]
    Ipv4,
    /// IPv6 header too short, wrong version, payload length beyond the frame (or zero: no
    /// jumbograms), or an extension header chain that is truncated or too long.
    #[error("malformed IPv6 header")]
    Ipv6,
    /// TCP/UDP/ICMP header truncated or inconsistent with the IPv4 total length.
    #[error("truncated transport header")]
    Transport,
    /// ARP for IPv4 whose addresses do not fit the frame.
    #[error("malformed ARP")]
    Arp,
}

/// Classifies an Ethernet frame.
pub fn classify(frame: &[u8]) -> Result<Classified, Malformed> {
    let ethertype = ethertype(frame).ok_or(Malformed::Runt)?;
    let l3_offset = ETH_HEADER_LEN;
    let other = |ethertype| Classified {
        l3: L3::Other { ethertype },
        l4: L4::None,
        l3_offset,
        l4_offset: frame.len(),
        ip_end: frame.len(),
    };
    let payload = &frame[l3_offset..];
    match ethertype {
        ETHERTYPE_IPV4 => classify_ipv4(payload, l3_offset),
        ETHERTYPE_IPV6 => classify_ipv6(payload, l3_offset),
        ETHERTYPE_ARP => {
            let arp = ArpPacket::new_checked(payload).map_err(|_| Malformed::Arp)?;
            // Only Ethernet/IPv4 ARP is answered; other hardware types are bridged as they are.
            if arp.hardware_len() == 6 && arp.protocol_len() == 4 {
                Ok(Classified {
                    l3: L3::Arp,
                    ..other(ethertype)
                })
            } else {
                Ok(other(ethertype))
            }
        }
        _ => Ok(other(ethertype)),
    }
}

fn classify_ipv4(payload: &[u8], l3_offset: usize) -> Result<Classified, Malformed> {
    let ip = Ipv4Packet::new_checked(payload).map_err(|_| Malformed::Ipv4)?;
    if ip.version() != 4 {
        return Err(Malformed::Ipv4);
    }
    let header_len = usize::from(ip.header_len());
    let total_len = usize::from(ip.total_len());
    let info = Ipv4Info {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        protocol: u8::from(ip.next_header()),
        ttl: ip.hop_limit(),
        header_len,
        total_len,
        dont_frag: ip.dont_frag(),
        more_frags: ip.more_frags(),
        frag_offset: ip.frag_offset(),
    };
    let l4_offset = l3_offset + header_len;
    let ip_end = l3_offset + total_len;
    let mut c = Classified {
        l3: L3::Ipv4(info),
        l4: L4::None,
        l3_offset,
        l4_offset,
        ip_end,
    };
    if info.frag_offset != 0 {
        return Ok(c);
    }
    let seg = &payload[header_len..total_len];
    c.l4 = transport(info.protocol, seg, info.more_frags, 1)?;
    Ok(c)
}

fn classify_ipv6(payload: &[u8], l3_offset: usize) -> Result<Classified, Malformed> {
    let ip = Ipv6Packet::new_checked(payload).map_err(|_| Malformed::Ipv6)?;
    let payload_len = usize::from(ip.payload_len());
    if ip.version() != 6 || payload_len == 0 {
        return Err(Malformed::Ipv6);
    }
    let end = IPV6_HEADER_LEN + payload_len;
    let packet = &payload[..end];
    let mut info = Ipv6Info {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        protocol: u8::from(ip.next_header()),
        hop_limit: ip.hop_limit(),
        payload_len,
        header_len: IPV6_HEADER_LEN,
        fragment: None,
        hop_by_hop: false,
    };
    let mut walked = 0;
    loop {
        let at = info.header_len;
        let len = match info.protocol {
            // Hop-by-hop (only first), routing, destination options: length in 8-byte units,
            // not counting the first 8.
            0 | 43 | 60 => {
                if info.protocol == 0 && walked != 0 {
                    return Err(Malformed::Ipv6);
                }
                info.hop_by_hop |= info.protocol == 0;
                let h = packet.get(at..at + 2).ok_or(Malformed::Ipv6)?;
                8 + 8 * usize::from(h[1])
            }
            // Fragment: always 8 bytes, at most one.
            44 => {
                let h = packet.get(at..at + 8).ok_or(Malformed::Ipv6)?;
                if info.fragment.is_some() {
                    return Err(Malformed::Ipv6);
                }
                let off_flags = u16::from_be_bytes([h[2], h[3]]);
                info.fragment = Some(Ipv6Fragment {
                    offset: off_flags & !7,
                    more: off_flags & 1 != 0,
                    ident: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    at: l3_offset + at,
                });
                8
            }
            _ => break,
        };
        walked += 1;
        if walked > MAX_EXTENSION_HEADERS || at + len > end {
            return Err(Malformed::Ipv6);
        }
        info.protocol = packet[at];
        info.header_len = at + len;
    }
    let mut c = Classified {
        l3: L3::Ipv6(info),
        l4: L4::None,
        l3_offset,
        l4_offset: l3_offset + info.header_len,
        ip_end: l3_offset + end,
    };
    if info.is_later_fragment() {
        return Ok(c);
    }
    let more = info.fragment.is_some_and(|f| f.more);
    c.l4 = transport(
        info.protocol,
        &packet[info.header_len..],
        more,
        IPPROTO_ICMPV6,
    )?;
    Ok(c)
}

/// The transport header of a first fragment or a whole packet: `seg` is the IP payload,
/// `first_fragment` whether more fragments follow, `icmp` the protocol number of ICMP in this
/// IP version (1, or 58 for ICMPv6; both have the same 8-byte header layout).
fn transport(protocol: u8, seg: &[u8], first_fragment: bool, icmp: u8) -> Result<L4, Malformed> {
    Ok(match protocol {
        6 => {
            let tcp = TcpPacket::new_checked(seg).map_err(|_| Malformed::Transport)?;
            let hl = usize::from(tcp.header_len());
            L4::Tcp {
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
                flags: seg[13],
                seq: tcp.seq_number().0 as u32,
                ack: tcp.ack_number().0 as u32,
                payload_len: u32::try_from(seg.len().saturating_sub(hl)).unwrap_or(0),
            }
        }
        // A first fragment holds only part of the datagram its UDP length field describes, so
        // only the 8-byte header must fit.
        17 if first_fragment => {
            let h = seg.get(..8).ok_or(Malformed::Transport)?;
            L4::Udp {
                src_port: u16::from_be_bytes([h[0], h[1]]),
                dst_port: u16::from_be_bytes([h[2], h[3]]),
            }
        }
        17 => {
            let udp = UdpPacket::new_checked(seg).map_err(|_| Malformed::Transport)?;
            L4::Udp {
                src_port: udp.src_port(),
                dst_port: udp.dst_port(),
            }
        }
        p if p == icmp => {
            let icmp = Icmpv4Packet::new_checked(seg).map_err(|_| Malformed::Transport)?;
            L4::Icmp {
                ty: seg[0],
                code: icmp.msg_code(),
                ident: u16::from_be_bytes([seg[4], seg[5]]),
            }
        }
        _ => L4::None,
    })
}

// Unit tests: tests/classify.rs (they build frames with testkit, which depends on this crate).
