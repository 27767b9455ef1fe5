//! Test helpers: independent checksum verification with etherparse.
//!
//! The code under test updates checksums incrementally with its own arithmetic; these helpers
//! recompute them from scratch with etherparse, a separate implementation.

use crate::Endpoint;
use etherparse::{Icmpv4Slice, Ipv4HeaderSlice, TcpSlice, UdpSlice};
use packet::MacAddr;

pub(crate) const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
pub(crate) const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

/// 0x0000 and 0xffff both encode ones' complement zero; a verifier accepts either.
pub(crate) fn same_ones(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// Checks the IPv4 header checksum of an untagged Ethernet frame the way a receiver does
/// (RFC 1071: the header, checksum included, sums to ones' complement zero). A header never sums
/// to +0, so both encodings of zero, 0x0000 and 0xffff, are valid checksums for it; the
/// incremental update may write either, a from-scratch computation writes 0x0000.
pub(crate) fn verify_ip(frame: &[u8]) -> Result<(), String> {
    let ip = Ipv4HeaderSlice::from_slice(&frame[14..]).map_err(|e| e.to_string())?;
    let want = ip.to_header().calc_header_checksum();
    let header = &frame[14..14 + usize::from(ip.ihl()) * 4];
    if packet::checksum::internet_checksum(header) != 0 {
        return Err(format!(
            "IPv4 checksum {:#06x}, expected {want:#06x}",
            ip.header_checksum()
        ));
    }
    Ok(())
}

/// Checks the IPv4 header checksum and the TCP/UDP/ICMP checksum of an untagged Ethernet frame,
/// recomputed from scratch with etherparse. Bytes past the IPv4 total length are ignored.
pub(crate) fn verify(frame: &[u8]) -> Result<(), String> {
    verify_ip(frame)?;
    let ip = Ipv4HeaderSlice::from_slice(&frame[14..]).map_err(|e| e.to_string())?;
    if ip.fragments_offset().value() != 0 {
        return Ok(());
    }
    let hl = usize::from(ip.ihl()) * 4;
    let seg = &frame[14 + hl..14 + usize::from(ip.total_len())];
    let (src, dst) = (ip.source(), ip.destination());
    match ip.protocol().0 {
        6 => {
            let tcp = TcpSlice::from_slice(seg).map_err(|e| e.to_string())?;
            let want = tcp
                .calc_checksum_ipv4(src, dst)
                .map_err(|e| e.to_string())?;
            if !same_ones(want, tcp.checksum()) {
                return Err(format!(
                    "TCP checksum {:#06x}, expected {want:#06x}",
                    tcp.checksum()
                ));
            }
        }
        17 => {
            let udp = UdpSlice::from_slice(seg).map_err(|e| e.to_string())?;
            if udp.checksum() == 0 {
                return Ok(());
            }
            let want = udp
                .to_header()
                .calc_checksum_ipv4_raw(src, dst, udp.payload())
                .map_err(|e| e.to_string())?;
            if want != udp.checksum() {
                return Err(format!(
                    "UDP checksum {:#06x}, expected {want:#06x}",
                    udp.checksum()
                ));
            }
        }
        1 => {
            let icmp = Icmpv4Slice::from_slice(seg).map_err(|e| e.to_string())?;
            let h = icmp.header();
            let want = h.icmp_type.calc_checksum(icmp.payload());
            if !same_ones(want, h.checksum) {
                return Err(format!(
                    "ICMP checksum {:#06x}, expected {want:#06x}",
                    h.checksum
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Source and destination endpoints of a TCP/UDP/ICMP-query frame per the crate's convention
/// (for ICMP both ports hold the identifier).
pub(crate) fn endpoints(frame: &[u8]) -> Option<(Endpoint, Endpoint)> {
    let c = packet::classify(frame).ok()?;
    let packet::L3::Ipv4(i) = c.l3 else {
        return None;
    };
    let (sp, dp) = match c.l4 {
        packet::L4::Tcp {
            src_port, dst_port, ..
        }
        | packet::L4::Udp { src_port, dst_port } => (src_port, dst_port),
        packet::L4::Icmp { ident, .. } => (ident, ident),
        packet::L4::None => (0, 0),
    };
    Some((Endpoint::new(i.src, sp), Endpoint::new(i.dst, dp)))
}

/// Recomputes the IPv4 header checksum of an untagged frame from scratch.
pub(crate) fn fix_ip_checksum(frame: &mut [u8]) {
    let hl = usize::from(frame[14] & 0x0f) * 4;
    frame[24] = 0;
    frame[25] = 0;
    let c = packet::checksum::internet_checksum(&frame[14..14 + hl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}
