//! One pass over a frame's headers: what the pipeline needs to pick a stage, without copying.
//!
//! [`classify`] validates lengths with smoltcp's checked views and reports offsets so later stages
//! can rewrite fields in place. The IPv4 packet ends at `ip_end` (its total length): bytes after
//! it are Ethernet padding or trailer, kept on the wire but never part of any checksum.

use crate::{ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ethertype};
use smoltcp::wire::{ArpPacket, Icmpv4Packet, Ipv4Packet, TcpPacket, UdpPacket};
use std::net::Ipv4Addr;

/// Summary of a frame's network and transport layers, with byte offsets into the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    /// Network layer.
    pub l3: L3,
    /// Transport layer (only for IPv4 first fragments / unfragmented packets).
    pub l4: L4,
    /// Offset of the network header (14 for untagged Ethernet).
    pub l3_offset: usize,
    /// Offset of the transport header; equals `ip_end` when there is none.
    pub l4_offset: usize,
    /// End of the IPv4 packet (l3_offset + total length); frame length for other payloads.
    pub ip_end: usize,
}

/// Network layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    /// IPv4 with a header that passed the length checks.
    Ipv4(Ipv4Info),
    /// ARP for IPv4 over Ethernet (other ARP flavours are `Other`).
    Arp,
    /// Anything else (IPv6, VLAN-tagged, LLDP, ...): bridged untouched.
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

/// Transport layer of an IPv4 packet.
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
    /// ICMP message (at least the 8-byte header).
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
    c.l4 = match info.protocol {
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
        17 if info.more_frags => {
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
        1 => {
            let icmp = Icmpv4Packet::new_checked(seg).map_err(|_| Malformed::Transport)?;
            L4::Icmp {
                ty: seg[0],
                code: icmp.msg_code(),
                ident: u16::from_be_bytes([seg[4], seg[5]]),
            }
        }
        _ => L4::None,
    };
    Ok(c)
}

// Unit tests: tests/classify.rs (they build frames with testkit, which depends on this crate).
