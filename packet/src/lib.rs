//! Packet views for vswitch: the bottom layer every other crate builds on.
//!
//! Frames are plain byte slices. Headers are read and rewritten in place through the typed views of
//! smoltcp's `wire` module (re-exported here so that every crate uses the same ones), checksums are
//! updated incrementally ([`checksum`], RFC 1624), and [`classify`] gives the pipeline a one-pass
//! summary of a frame's layers without copying anything.
//!
//! The shared vocabulary lives here too: [`L4Proto`] and [`PortProto`] (the transport of a flow,
//! and of a published port), and Docker's MAC rule, [`MacAddr::docker`].
//!
//! Frame builders for tests are in the dev-only `testkit` crate.

pub mod checksum;
mod classify;
pub mod gso;
mod mac;
pub mod offload;
mod proto;

pub use classify::{
    Classified, IPPROTO_ICMPV6, IPV6_HEADER_LEN, Ipv4Info, Ipv6Fragment, Ipv6Info, L3, L4,
    MAX_EXTENSION_HEADERS, Malformed, classify, tcp_flags,
};
pub use mac::MacAddr;
pub use proto::{L4Proto, NoPorts, ParseL4ProtoError, ParsePortProtoError, PortProto};
pub use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet,
    Icmpv6Message, Icmpv6Packet, IgmpPacket, IpProtocol, Ipv4Packet, Ipv6ExtHeader,
    Ipv6HopByHopHeader, Ipv6HopByHopRepr, Ipv6OptionRepr, Ipv6OptionsIterator, Ipv6Packet,
    MldAddressRecord, MldRecordType, MldRepr, TcpPacket, UdpPacket,
};
pub use std::net::{Ipv4Addr, Ipv6Addr};

/// Length of an Ethernet II header without VLAN tags.
pub const ETH_HEADER_LEN: usize = 14;
/// Shortest frame the switch accepts: an Ethernet header and nothing else would be a runt; real
/// NICs pad to 60 bytes (without FCS), but TAP and veth deliver unpadded frames, so only frames too
/// short for an Ethernet header are runts.
pub const MIN_FRAME_LEN: usize = ETH_HEADER_LEN;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Destination MAC of a frame; `None` if the frame is shorter than an Ethernet header.
#[inline]
pub fn dst_mac(frame: &[u8]) -> Option<MacAddr> {
    frame.get(0..6).and_then(MacAddr::from_slice)
}

/// Source MAC of a frame; `None` if the frame is shorter than an Ethernet header.
#[inline]
pub fn src_mac(frame: &[u8]) -> Option<MacAddr> {
    frame.get(6..12).and_then(MacAddr::from_slice)
}

/// EtherType (after the source MAC, VLAN tags not skipped); `None` for a runt.
#[inline]
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    let b = frame.get(12..14)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}
