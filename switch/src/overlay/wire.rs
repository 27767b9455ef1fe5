//! VXLAN on the wire (RFC 7348 section 5): an Ethernet frame inside UDP to port 4789, after an
//! 8-byte header whose I flag says the 24-bit VNI is valid.
//!
//! ```text
//! outer Ethernet (14) | outer IPv4 (20) | UDP (8) | flags 0x08, 3 reserved | VNI (3), 1 reserved | inner frame
//! ```
//!
//! The outer UDP checksum is sent as zero (the RFC's SHOULD, and the Linux default for IPv4);
//! one received non-zero is verified. The UDP source port is a hash of the inner headers in
//! 49152..=65535, so that the underlay's ECMP and the peer's RSS spread flows as the kernel's
//! vxlan device does.

use packet::checksum::{fold, internet_checksum, pseudo_header_sum, sum};
use packet::{ETH_HEADER_LEN, ETHERTYPE_IPV4, MacAddr};
use std::hash::Hasher;
use std::net::Ipv4Addr;

/// The IANA port of VXLAN.
pub const VXLAN_PORT: u16 = 4789;
/// Outer IPv4, UDP and VXLAN headers: what the uplink's MTU must hold beside the inner frame.
pub const OUTER_IP_OVERHEAD: usize = 20 + 8 + 8;
/// Everything encapsulation adds, outer Ethernet included: an overlay network's MTU is the
/// uplink's minus this.
pub const VXLAN_OVERHEAD: usize = ETH_HEADER_LEN + OUTER_IP_OVERHEAD;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The I flag: the VNI is valid.
const FLAG_VNI: u8 = 0x08;
/// TTL of the outer header (the kernel's default for vxlan devices is the host's, 64).
const OUTER_TTL: u8 = 64;

/// The outer addresses of one encapsulated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    /// This host's uplink MAC.
    pub src_mac: MacAddr,
    /// The next hop toward the remote VTEP (zero until resolved).
    pub dst_mac: MacAddr,
    /// This host's VTEP (the uplink address).
    pub src_ip: Ipv4Addr,
    /// The remote VTEP.
    pub dst_ip: Ipv4Addr,
    /// The outer IPv4 identification.
    pub ip_id: u16,
}

/// `inner` in VXLAN for network `vni`, addressed by `outer`, in a fresh buffer. The caller
/// checked that the result fits the uplink's MTU.
pub fn encapsulate(inner: &[u8], vni: u32, outer: &Outer) -> Vec<u8> {
    let mut f = Vec::with_capacity(VXLAN_OVERHEAD + inner.len());
    f.extend_from_slice(&outer.dst_mac.0);
    f.extend_from_slice(&outer.src_mac.0);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    // At most 65535: the caller's MTU check bounds `inner`.
    let ip_len = u16::try_from(OUTER_IP_OVERHEAD + inner.len()).unwrap_or(u16::MAX);
    let [l0, l1] = ip_len.to_be_bytes();
    let [i0, i1] = outer.ip_id.to_be_bytes();
    f.extend_from_slice(&[0x45, 0, l0, l1, i0, i1, 0, 0, OUTER_TTL, 17, 0, 0]);
    f.extend_from_slice(&outer.src_ip.octets());
    f.extend_from_slice(&outer.dst_ip.octets());
    let csum = internet_checksum(&f[ETH_HEADER_LEN..ETH_HEADER_LEN + 20]);
    f[ETH_HEADER_LEN + 10..ETH_HEADER_LEN + 12].copy_from_slice(&csum.to_be_bytes());
    let [s0, s1] = source_port(inner).to_be_bytes();
    let [d0, d1] = VXLAN_PORT.to_be_bytes();
    let [u0, u1] = (ip_len - 20).to_be_bytes();
    f.extend_from_slice(&[s0, s1, d0, d1, u0, u1, 0, 0]);
    let [_, v0, v1, v2] = (vni & MAX_VNI).to_be_bytes();
    f.extend_from_slice(&[FLAG_VNI, 0, 0, 0, v0, v1, v2, 0]);
    f.extend_from_slice(inner);
    f
}

/// A received VXLAN packet's outer facts and where its inner frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapsulated {
    /// The sending VTEP (outer IPv4 source).
    pub src_vtep: Ipv4Addr,
    /// The network identifier.
    pub vni: u32,
    /// The inner frame is `frame[start..end]` (Ethernet padding of the outer frame left out).
    pub start: usize,
    /// See `start`.
    pub end: usize,
}

/// Why a frame for the VXLAN port is not a VXLAN packet vswitch takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Too short, lengths that do not agree, the I flag clear, or a wrong UDP checksum.
    Header,
}

/// Whether `frame` (from the uplink) is UDP to the VXLAN port of `vtep`, unfragmented and
/// untagged: `None` if it is not (the gateway handles it), else what it carries. A non-zero UDP
/// checksum is verified when `verify` (not for a frame whose virtio-net header says the
/// checksum is partial, still to be finished by the sender's offload, or already verified).
pub fn decapsulate(
    frame: &[u8],
    vtep: Ipv4Addr,
    verify: bool,
) -> Option<Result<Decapsulated, Malformed>> {
    let ip = frame.get(ETH_HEADER_LEN..)?;
    if frame.get(12..14) != Some(&ETHERTYPE_IPV4.to_be_bytes()[..]) || ip.len() < 20 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 17 || fragmented || ip[16..20] != vtep.octets() {
        return None;
    }
    let udp = ip.get(ihl..ihl + 8)?;
    if u16::from_be_bytes([udp[2], udp[3]]) != VXLAN_PORT {
        return None;
    }
    Some(parse(frame, ihl, verify))
}

/// The checks past the UDP ports: lengths, checksum, the VXLAN header.
fn parse(frame: &[u8], ihl: usize, verify: bool) -> Result<Decapsulated, Malformed> {
    let ip = &frame[ETH_HEADER_LEN..];
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let udp_len = usize::from(u16::from_be_bytes([ip[ihl + 4], ip[ihl + 5]]));
    let inner_start = ETH_HEADER_LEN + ihl + 16;
    if total > ip.len() || ihl + udp_len != total || udp_len < 16 + ETH_HEADER_LEN {
        return Err(Malformed::Header);
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let segment = &ip[ihl..total];
    if verify && segment[6..8] != [0, 0] {
        // A sum over the segment with its checksum field in it folds to all ones.
        let acc = pseudo_header_sum(src, dst, 17, udp_len as u16) + sum(segment);
        if fold(acc) != 0xffff {
            return Err(Malformed::Header);
        }
    }
    let vx = &segment[8..16];
    if vx[0] & FLAG_VNI == 0 {
        return Err(Malformed::Header);
    }
    Ok(Decapsulated {
        src_vtep: src,
        vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
        start: inner_start,
        end: ETH_HEADER_LEN + total,
    })
}

/// The outer UDP source port for `inner`: a hash of its MACs and, for IPv4 and IPv6, of its
/// addresses and ports (the bytes after the Ethernet header that hold them), in the dynamic
/// range so that it never is a well-known port.
pub fn source_port(inner: &[u8]) -> u16 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(inner.get(..12).unwrap_or(inner));
    let flow = match inner.get(12..14) {
        // IPv4: addresses at 12..20 of the header, ports right after a 20-byte header.
        Some([0x08, 0x00]) => inner.get(26..38),
        // IPv6: addresses at 8..40, ports after the fixed header.
        Some([0x86, 0xdd]) => inner.get(22..58),
        _ => None,
    };
    h.write(flow.unwrap_or_default());
    let x = h.finish();
    49152 + ((x ^ (x >> 32)) % 16384) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner() -> Vec<u8> {
        // An Ethernet frame with an IPv4/UDP header; only its bytes matter here.
        let mut f = vec![
            0x02, 0x42, 10, 77, 0, 3, 0x02, 0x42, 10, 77, 0, 2, 0x08, 0x00,
        ];
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 0, 2, 10, 77, 0, 3,
        ]);
        f.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, 0]);
        f
    }

    fn outer() -> Outer {
        Outer {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src_ip: Ipv4Addr::new(198, 51, 100, 11),
            dst_ip: Ipv4Addr::new(198, 51, 100, 12),
            ip_id: 7,
        }
    }

    #[test]
    fn encapsulation_round_trips_with_rfc_7348_layout() {
        let i = inner();
        let f = encapsulate(&i, 0x0a0b0c, &outer());
        assert_eq!(f.len(), i.len() + VXLAN_OVERHEAD);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(internet_checksum(&f[14..34]), 0, "outer IPv4 checksum");
        assert_eq!(&f[36..38], &VXLAN_PORT.to_be_bytes(), "UDP dst 4789");
        let sport = u16::from_be_bytes([f[34], f[35]]);
        assert!(sport >= 49152, "{sport}");
        assert_eq!(&f[40..42], &[0, 0], "UDP checksum zero");
        assert_eq!(&f[42..50], &[0x08, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0]);
        let d = decapsulate(&f, Ipv4Addr::new(198, 51, 100, 12), true)
            .unwrap()
            .unwrap();
        assert_eq!(d.vni, 0x0a0b0c);
        assert_eq!(d.src_vtep, Ipv4Addr::new(198, 51, 100, 11));
        assert_eq!(&f[d.start..d.end], &i[..]);
        // Ethernet padding after the outer packet is not part of the inner frame.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 6]);
        let p = decapsulate(&padded, outer().dst_ip, true).unwrap().unwrap();
        assert_eq!(&padded[p.start..p.end], &i[..]);
    }

    #[test]
    fn other_traffic_is_not_taken_and_bad_headers_are_refused() {
        let f = encapsulate(&inner(), 42, &outer());
        assert_eq!(
            decapsulate(&f, Ipv4Addr::new(198, 51, 100, 99), true),
            None,
            "other address"
        );
        let mut other_port = f.clone();
        other_port[37] = 0x16;
        assert_eq!(decapsulate(&other_port, outer().dst_ip, true), None);
        let mut fragment = f.clone();
        fragment[20] = 0x20;
        assert_eq!(decapsulate(&fragment, outer().dst_ip, true), None);
        let mut no_flag = f.clone();
        no_flag[42] = 0;
        assert_eq!(
            decapsulate(&no_flag, outer().dst_ip, true),
            Some(Err(Malformed::Header))
        );
        let mut bad_sum = f.clone();
        bad_sum[40] = 0x12;
        assert_eq!(
            decapsulate(&bad_sum, outer().dst_ip, true),
            Some(Err(Malformed::Header))
        );
        for cut in [14, 30, 38, 45, 50, 60] {
            let r = decapsulate(&f[..cut], outer().dst_ip, true);
            assert!(matches!(r, None | Some(Err(_))), "cut at {cut}: {r:?}");
        }
    }

    #[test]
    fn a_partial_checksum_from_an_offloading_sender_is_not_verified() {
        let mut f = encapsulate(&inner(), 42, &outer());
        f[40..42].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(
            decapsulate(&f, outer().dst_ip, true),
            Some(Err(Malformed::Header))
        );
        assert!(decapsulate(&f, outer().dst_ip, false).unwrap().is_ok());
    }

    #[test]
    fn a_correct_nonzero_udp_checksum_is_accepted() {
        let mut f = encapsulate(&inner(), 42, &outer());
        let seg_len = (f.len() - 34) as u16;
        let acc = pseudo_header_sum(outer().src_ip, outer().dst_ip, 17, seg_len) + sum(&f[34..]);
        let csum = !fold(acc);
        f[40..42].copy_from_slice(&csum.to_be_bytes());
        assert!(decapsulate(&f, outer().dst_ip, true).unwrap().is_ok());
    }

    #[test]
    fn flows_hash_to_stable_dynamic_ports() {
        let a = inner();
        let mut b = inner();
        b[35] ^= 1; // another source port
        assert_eq!(source_port(&a), source_port(&a.clone()));
        assert_ne!(source_port(&a), source_port(&b));
        assert!(source_port(&[]) >= 49152);
    }
}
