//! A frame's offload state: what the kernel's virtio-net header says about its checksum and its
//! segmentation, and the header itself as packet sockets and TAP devices carry it.
//!
//! Linux moves TCP as GSO super-frames (up to 64 KB, one IP/TCP header, to be cut into
//! `gso_size`-byte segments later) whose L4 checksum is *partial*: the checksum field holds the
//! folded pseudo-header sum and the device finishes it from `csum_start`. A packet socket with
//! `PACKET_VNET_HDR` or a TAP with `IFF_VNET_HDR` hands such frames over whole, each after a
//! 10-byte `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h), and takes them back the
//! same way. [`Offload`] is that header parsed and checked against its frame, so nothing later in
//! the pipeline trusts a field the frame cannot back (a checksum offset past the end, a TCP GSO
//! type on a UDP frame, a zero segment size).
//!
//! Byte order: the header is in the legacy virtio layout, little-endian on the little-endian
//! hosts vswitch runs on (the kernel's `vio_le()` for packet sockets; TAP without
//! `TUNSETVNETBE`).

use crate::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN};

/// Length of `struct virtio_net_hdr` (without the `num_buffers` of the mergeable variant).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum is partial.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified by the sender's side.
const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_F_RSC_INFO`: coalescing info (only from some NICs; ignored).
const F_RSC_INFO: u8 = 4;

const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_SCTP: u8 = 132;

/// The smallest TCP segment size a kernel sends (`TCP_MIN_SND_MSS`).
const MIN_TCP_SEGMENT: u16 = 48;
/// The most datagrams one UDP super-frame holds (`UDP_MAX_SEGMENTS`).
const MAX_UDP_SEGMENTS: usize = 128;

/// State of a frame's L4 checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Checksum {
    /// The checksums in the frame are final (or, for a capture, whatever they are).
    #[default]
    Complete,
    /// The field at `start + offset` holds the folded pseudo-header sum; the sum of the bytes
    /// from `start` to the end is still to be added and complemented.
    Partial {
        /// Where summing starts, from the start of the Ethernet frame (the L4 header).
        start: u16,
        /// Where the checksum field is, from `start` (16 for TCP, 6 for UDP).
        offset: u16,
    },
    /// The sender's side verified it (the frame came in from a device that checked it).
    Verified,
}

/// Segmentation the frame still needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Gso {
    /// One frame on the wire.
    #[default]
    None,
    /// A TCP super-frame: cut into segments of `mss` payload bytes.
    Tcp {
        /// Payload bytes per segment.
        mss: u16,
        /// IPv6 (`TCPV6`) rather than IPv4 (`TCPV4`).
        ipv6: bool,
        /// The ECN flag: CWR only on the first segment.
        ecn: bool,
    },
    /// A UDP super-frame (`UDP_L4`, USO): one UDP datagram per `size` payload bytes.
    Udp {
        /// Payload bytes per datagram.
        size: u16,
    },
}

impl Gso {
    /// Payload bytes per segment, `None` for a single frame.
    pub fn segment_size(self) -> Option<u16> {
        match self {
            Gso::None => None,
            Gso::Tcp { mss, .. } => Some(mss),
            Gso::Udp { size } => Some(size),
        }
    }
}

/// A frame's offload state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Offload {
    /// Its L4 checksum.
    pub checksum: Checksum,
    /// Its segmentation.
    pub gso: Gso,
}

/// What an egress takes besides plain frames: a port with a virtio-net header and the kernel
/// features it has (a pcap, a port without the header, takes nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// Partial TCP/UDP checksums (`TUN_F_CSUM`; any packet socket with `PACKET_VNET_HDR`).
    pub partial_checksum: bool,
    /// TCP super-frames over IPv4.
    pub tso4: bool,
    /// TCP super-frames over IPv6.
    pub tso6: bool,
    /// UDP super-frames (USO).
    pub uso: bool,
}

impl Capabilities {
    /// Plain frames only.
    pub const NONE: Capabilities = Capabilities {
        partial_checksum: false,
        tso4: false,
        tso6: false,
        uso: false,
    };

    /// Everything [`Offload`] can describe.
    pub const ALL: Capabilities = Capabilities {
        partial_checksum: true,
        tso4: true,
        tso6: true,
        uso: true,
    };

    /// Whether a frame in state `o` can go out as it is.
    #[inline]
    pub fn accepts(&self, o: &Offload) -> bool {
        let checksum = match o.checksum {
            Checksum::Partial { .. } => self.partial_checksum,
            Checksum::Complete | Checksum::Verified => true,
        };
        let gso = match o.gso {
            Gso::None => true,
            Gso::Tcp { ipv6: false, .. } => self.tso4,
            Gso::Tcp { ipv6: true, .. } => self.tso6,
            Gso::Udp { .. } => self.uso,
        };
        checksum && gso
    }
}

/// Why a virtio-net header was refused (each is a counted drop where a frame comes in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than the 10-byte header.
    #[error("virtio-net header shorter than 10 bytes")]
    Short,
    /// A flag vswitch does not know.
    #[error("virtio-net header has unknown flags {0:#04x}")]
    UnknownFlags(u8),
    /// A GSO type vswitch cannot carry (UFO, tunnels, SCTP, ...).
    #[error("GSO type {0:#04x} is not supported")]
    UnsupportedGso(u8),
    /// GSO with a segment size of zero.
    #[error("GSO with a zero segment size")]
    ZeroSegmentSize,
    /// A partial checksum whose field lies beyond the frame.
    #[error("partial checksum field past the end of the frame")]
    ChecksumOutOfFrame,
    /// More segments than a kernel makes of one super-frame (TCP segment size below 48 bytes,
    /// more than 128 UDP datagrams).
    #[error("GSO segment size too small for the frame")]
    TooManySegments,
    /// Offload state on an IP fragment.
    #[error("offload state on an IP fragment")]
    Fragment,
    /// The GSO type does not match the frame's headers (TCP GSO on a UDP frame, v4 on v6, ...).
    #[error("GSO type does not match the frame's headers")]
    GsoMismatch,
    /// The checksum start does not point at the frame's L4 header.
    #[error("partial checksum does not start at the L4 header")]
    ChecksumMismatch,
}

impl Offload {
    /// A frame with final checksums that needs no segmentation.
    pub const NONE: Offload = Offload {
        checksum: Checksum::Complete,
        gso: Gso::None,
    };

    /// The same state for the frame with a 4-byte 802.1Q tag inserted after its MACs
    /// (`tagged`), or removed (`!tagged`): a partial checksum's start moves with the headers.
    pub fn retagged(self, tagged: bool) -> Offload {
        let checksum = match self.checksum {
            Checksum::Partial { start, offset } => Checksum::Partial {
                start: if tagged {
                    start.saturating_add(4)
                } else {
                    start.saturating_sub(4)
                },
                offset,
            },
            other => other,
        };
        Offload { checksum, ..self }
    }

    /// True when the frame can go to a receiver that understands no offload (a pcap, a port
    /// without a virtio-net header) as it is.
    pub fn is_plain(&self) -> bool {
        self.gso == Gso::None && !matches!(self.checksum, Checksum::Partial { .. })
    }

    /// The largest frame this one becomes on the wire: headers plus one segment for a
    /// super-frame, its length otherwise (what MTU checks compare).
    pub fn wire_len(&self, frame: &[u8]) -> usize {
        match self.gso.segment_size() {
            Some(size) => Layout::of(frame).map_or(frame.len(), |l| {
                frame.len().min(l.headers_len + usize::from(size))
            }),
            None => frame.len(),
        }
    }

    /// Parses a virtio-net header that came before `frame`, and checks it against the frame's
    /// own headers.
    pub fn from_vnet_hdr(hdr: &[u8], frame: &[u8]) -> Result<Offload, OffloadError> {
        let h: &[u8; VNET_HDR_LEN] = hdr
            .get(..VNET_HDR_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(OffloadError::Short)?;
        let le = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let (flags, gso_type, gso_size) = (h[0], h[1], le(4));
        let (csum_start, csum_offset) = (le(6), le(8));
        if flags & !(F_NEEDS_CSUM | F_DATA_VALID | F_RSC_INFO) != 0 {
            return Err(OffloadError::UnknownFlags(flags));
        }
        let checksum = if flags & F_NEEDS_CSUM != 0 {
            let field_end = usize::from(csum_start) + usize::from(csum_offset) + 2;
            if field_end > frame.len() {
                return Err(OffloadError::ChecksumOutOfFrame);
            }
            Checksum::Partial {
                start: csum_start,
                offset: csum_offset,
            }
        } else if flags & F_DATA_VALID != 0 {
            Checksum::Verified
        } else {
            Checksum::Complete
        };
        let ecn = gso_type & GSO_ECN != 0;
        let gso = match gso_type & !GSO_ECN {
            GSO_NONE if !ecn => Gso::None,
            GSO_TCPV4 => Gso::Tcp {
                mss: gso_size,
                ipv6: false,
                ecn,
            },
            GSO_TCPV6 => Gso::Tcp {
                mss: gso_size,
                ipv6: true,
                ecn,
            },
            GSO_UDP_L4 if !ecn => Gso::Udp { size: gso_size },
            // UFO (GSO_UDP, IP fragmentation of UDP) is gone from Linux's offer; tunnels, SCTP
            // and the rest are not switched whole.
            _ => return Err(OffloadError::UnsupportedGso(gso_type)),
        };
        let offload = Offload { checksum, gso };
        offload.check(frame)?;
        Ok(offload)
    }

    /// Checks the state against the frame's headers, so nothing later trusts a field the frame
    /// cannot back:
    /// - a GSO type must match the L3/L4 protocol, go to a unicast MAC (TCP and UDP never send
    ///   super-frames to a group), and cut into no more segments than a kernel makes (TCP: a
    ///   segment size of at least 48 bytes, the kernel's `TCP_MIN_SND_MSS`; UDP: at most 128
    ///   datagrams, `UDP_MAX_SEGMENTS`), so one frame cannot become tens of thousands;
    /// - a partial checksum must lie inside the frame; at the TCP/UDP header it is this
    ///   packet's own (NAT updates it), elsewhere (the inner header of a tunnel, after IPv6
    ///   extension headers) it is finished generically, except SCTP's CRC32c, which is no ones'
    ///   complement sum;
    /// - no offload on an IP fragment (the kernel finishes checksums before fragmenting).
    ///
    /// GSO without a partial checksum is accepted: drivers' LRO hands over coalesced frames as
    /// verified, and segmentation computes every checksum afresh anyway.
    pub fn check(&self, frame: &[u8]) -> Result<(), OffloadError> {
        if self.gso == Gso::None && !matches!(self.checksum, Checksum::Partial { .. }) {
            return Ok(());
        }
        let ip = IpSummary::of(frame);
        if ip.is_some_and(|i| i.fragment) {
            return Err(OffloadError::Fragment);
        }
        let layout = Layout::of(frame);
        if let Some(size) = self.gso.segment_size() {
            if size == 0 {
                return Err(OffloadError::ZeroSegmentSize);
            }
            let l = layout.ok_or(OffloadError::GsoMismatch)?;
            let fits = match self.gso {
                Gso::Tcp { ipv6, .. } => l.proto == PROTO_TCP && l.ipv6 == ipv6,
                Gso::Udp { .. } => l.proto == PROTO_UDP,
                Gso::None => true,
            };
            if !fits || frame.first().is_some_and(|b| b & 1 == 1) {
                return Err(OffloadError::GsoMismatch);
            }
            let segments = (l.end - l.headers_len).div_ceil(usize::from(size));
            let too_many = match self.gso {
                Gso::Tcp { .. } => size < MIN_TCP_SEGMENT,
                _ => segments > MAX_UDP_SEGMENTS,
            };
            if too_many {
                return Err(OffloadError::TooManySegments);
            }
        }
        if let Checksum::Partial { start, offset } = self.checksum {
            // Inside the IP packet, not just the frame: padding after it is not summed.
            let end = ip.map_or(frame.len(), |i| i.end.min(frame.len()));
            if usize::from(start) + usize::from(offset) + 2 > end {
                return Err(OffloadError::ChecksumOutOfFrame);
            }
            let start = usize::from(start);
            let own = layout.map(|l| {
                let field = if l.proto == PROTO_TCP { 16 } else { 6 };
                (l.l4, (l.l4, field) == (start, offset))
            });
            match own {
                // The packet's own TCP/UDP checksum.
                Some((_, true)) => {}
                // A GSO frame's checksum is its TCP/UDP header's; a field at the TCP/UDP header
                // must be its checksum; nothing before it can be partial.
                Some((l4, false)) if self.gso != Gso::None || start <= l4 => {
                    return Err(OffloadError::ChecksumMismatch);
                }
                // Beyond it (a tunnel's inner header), or an IP payload vswitch does not parse:
                // a ones' complement sum after the Ethernet header, finished generically.
                _ => {
                    let sctp = ip.is_some_and(|i| i.proto == PROTO_SCTP);
                    if self.gso != Gso::None || sctp || start < 14 {
                        return Err(OffloadError::ChecksumMismatch);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the partial checksum (if any) is the TCP/UDP checksum of the packet's own L4
    /// header at `l4`, which NAT updates by the pseudo-header rule (a tunnel's inner one is not).
    pub fn partial_at(&self, l4: usize) -> bool {
        matches!(self.checksum, Checksum::Partial { start, .. } if usize::from(start) == l4)
    }

    /// The virtio-net header to send before `frame` (whose headers give `hdr_len`).
    pub fn to_vnet_hdr(&self, frame: &[u8]) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        let (flags, start, offset) = match self.checksum {
            Checksum::Complete => (0, 0, 0),
            Checksum::Partial { start, offset } => (F_NEEDS_CSUM, start, offset),
            Checksum::Verified => (F_DATA_VALID, 0, 0),
        };
        let (gso_type, size) = match self.gso {
            Gso::None => (GSO_NONE, 0),
            Gso::Tcp { mss, ipv6, ecn } => (
                if ipv6 { GSO_TCPV6 } else { GSO_TCPV4 } | if ecn { GSO_ECN } else { 0 },
                mss,
            ),
            Gso::Udp { size } => (GSO_UDP_L4, size),
        };
        let hdr_len = match self.gso {
            Gso::None => 0,
            _ => Layout::of(frame).map_or(0, |l| l.headers_len),
        };
        h[0] = flags;
        h[1] = gso_type;
        h[2..4].copy_from_slice(&(hdr_len as u16).to_le_bytes());
        h[4..6].copy_from_slice(&size.to_le_bytes());
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&offset.to_le_bytes());
        h
    }
}

/// The IP protocol of a frame (IPv4, or IPv6's first next header) and whether it is a
/// fragment, for the checks that do not need a TCP/UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpSummary {
    proto: u8,
    fragment: bool,
    /// End of the IP packet in the frame (padding may follow).
    pub(crate) end: usize,
}

impl IpSummary {
    pub(crate) fn of(frame: &[u8]) -> Option<IpSummary> {
        let be16 = |i: usize| {
            frame
                .get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let (mut l3, mut ethertype) = (14, be16(12)?);
        if ethertype == ETHERTYPE_VLAN {
            (l3, ethertype) = (18, be16(16)?);
        }
        match ethertype {
            ETHERTYPE_IPV4 => Some(IpSummary {
                proto: *frame.get(l3 + 9)?,
                // More fragments, or a fragment offset.
                fragment: be16(l3 + 6)? & 0x3fff != 0,
                end: l3 + usize::from(be16(l3 + 2)?),
            }),
            ETHERTYPE_IPV6 => {
                let next = *frame.get(l3 + 6)?;
                Some(IpSummary {
                    proto: next,
                    fragment: next == 44,
                    end: l3 + 40 + usize::from(be16(l3 + 4)?),
                })
            }
            _ => None,
        }
    }
}

/// The layers of a TCP or UDP frame over IPv4 or IPv6 (one 802.1Q tag at most, no IPv6
/// extension headers), as segmentation and checksum completion need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the IP header.
    pub l3: usize,
    /// IPv6 rather than IPv4.
    pub ipv6: bool,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// 6 or 17.
    pub proto: u8,
    /// Ethernet + IP + TCP/UDP header bytes.
    pub headers_len: usize,
    /// End of the IP packet (the frame may carry padding after it).
    pub end: usize,
}

impl Layout {
    /// `None` for anything else, or headers that do not fit.
    pub fn of(frame: &[u8]) -> Option<Layout> {
        let be16 = |i: usize| {
            frame
                .get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let mut l3 = 14;
        let mut ethertype = be16(12)?;
        if ethertype == ETHERTYPE_VLAN {
            ethertype = be16(16)?;
            l3 = 18;
        }
        let (ipv6, l4, proto, end) = match ethertype {
            ETHERTYPE_IPV4 => {
                let vihl = *frame.get(l3)?;
                let ihl = usize::from(vihl & 0x0f) * 4;
                if vihl >> 4 != 4 || ihl < 20 {
                    return None;
                }
                let total = usize::from(be16(l3 + 2)?);
                (false, l3 + ihl, *frame.get(l3 + 9)?, l3 + total)
            }
            ETHERTYPE_IPV6 => {
                if frame.get(l3)? >> 4 != 6 {
                    return None;
                }
                let payload = usize::from(be16(l3 + 4)?);
                (true, l3 + 40, *frame.get(l3 + 6)?, l3 + 40 + payload)
            }
            _ => return None,
        };
        let l4_len = match proto {
            PROTO_TCP => usize::from(frame.get(l4 + 12)? >> 4) * 4,
            PROTO_UDP => 8,
            _ => return None,
        };
        let headers_len = l4 + l4_len;
        if (proto == PROTO_TCP && l4_len < 20) || headers_len > end || end > frame.len() {
            return None;
        }
        Some(Layout {
            l3,
            ipv6,
            l4,
            proto,
            headers_len,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An IPv4 TCP frame built by etherparse (independent of the code under test).
    pub(crate) fn tcp_frame(payload: usize) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 80, 7, 64240)
            .ack(1)
            .psh();
        let mut out = Vec::new();
        b.write(&mut out, &vec![0x5a; payload]).unwrap();
        out
    }

    fn hdr(flags: u8, gso_type: u8, gso_size: u16, start: u16, offset: u16) -> [u8; 10] {
        let mut h = [0u8; 10];
        h[0] = flags;
        h[1] = gso_type;
        h[4..6].copy_from_slice(&gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&offset.to_le_bytes());
        h
    }

    #[test]
    fn a_tcp_super_frame_round_trips_through_its_header() {
        let f = tcp_frame(4000);
        let h = hdr(F_NEEDS_CSUM, GSO_TCPV4, 1448, 34, 16);
        let o = Offload::from_vnet_hdr(&h, &f).unwrap();
        assert_eq!(
            o,
            Offload {
                checksum: Checksum::Partial {
                    start: 34,
                    offset: 16
                },
                gso: Gso::Tcp {
                    mss: 1448,
                    ipv6: false,
                    ecn: false
                },
            }
        );
        assert!(!o.is_plain());
        let back = o.to_vnet_hdr(&f);
        // hdr_len: 14 + 20 + 20 header bytes.
        assert_eq!(u16::from_le_bytes([back[2], back[3]]), 54);
        assert_eq!(Offload::from_vnet_hdr(&back, &f).unwrap(), o);
        assert_eq!(Offload::NONE.to_vnet_hdr(&f), [0u8; 10]);
    }

    #[test]
    fn headers_the_frame_cannot_back_are_refused() {
        let f = tcp_frame(100);
        let cases = [
            (hdr(0, 0, 0, 0, 0)[..4].to_vec(), OffloadError::Short),
            (
                hdr(0x10, 0, 0, 0, 0).to_vec(),
                OffloadError::UnknownFlags(0x10),
            ),
            (
                hdr(1, 3, 1400, 34, 6).to_vec(),
                OffloadError::UnsupportedGso(3),
            ),
            (
                hdr(1, 0x42, 1400, 34, 16).to_vec(),
                OffloadError::UnsupportedGso(0x42),
            ),
            (
                hdr(1, GSO_TCPV4, 0, 34, 16).to_vec(),
                OffloadError::ZeroSegmentSize,
            ),
            (
                hdr(1, 0, 0, 34, 2000).to_vec(),
                OffloadError::ChecksumOutOfFrame,
            ),
            (
                hdr(1, 0, 0, 0xffff, 0xffff).to_vec(),
                OffloadError::ChecksumOutOfFrame,
            ),
            (
                hdr(1, GSO_TCPV4, 47, 34, 16).to_vec(),
                OffloadError::TooManySegments,
            ),
            (
                hdr(1, GSO_TCPV6, 1400, 34, 16).to_vec(),
                OffloadError::GsoMismatch,
            ),
            (
                hdr(1, GSO_UDP_L4, 1400, 34, 16).to_vec(),
                OffloadError::GsoMismatch,
            ),
            (
                hdr(1, 0, 0, 30, 16).to_vec(),
                OffloadError::ChecksumMismatch,
            ),
            (hdr(1, 0, 0, 34, 6).to_vec(), OffloadError::ChecksumMismatch),
        ];
        for (h, want) in cases {
            assert_eq!(Offload::from_vnet_hdr(&h, &f), Err(want), "{h:?}");
        }
        // GSO on a frame that is not TCP/UDP at all (an ARP-sized garbage frame).
        let junk = vec![0u8; 60];
        assert_eq!(
            Offload::from_vnet_hdr(&hdr(1, GSO_TCPV4, 1400, 34, 16), &junk),
            Err(OffloadError::GsoMismatch)
        );
    }

    #[test]
    fn what_a_kernel_sends_is_accepted_and_what_it_never_sends_is_not() {
        let f = tcp_frame(4000);
        // LRO: a verified GSO frame (no partial checksum).
        let lro = Offload::from_vnet_hdr(&hdr(F_DATA_VALID, GSO_TCPV4, 1448, 0, 0), &f).unwrap();
        assert_eq!(lro.checksum, Checksum::Verified);
        // A tunnel's inner checksum: partial past the outer L4 header, no GSO.
        assert!(Offload::from_vnet_hdr(&hdr(1, 0, 0, 74, 16), &f).is_ok());
        // ... but not on a GSO frame, not inside the Ethernet header, not for SCTP.
        assert!(Offload::from_vnet_hdr(&hdr(1, GSO_TCPV4, 1000, 40, 6), &f).is_err());
        let mut sctp = f.clone();
        sctp[23] = 132;
        assert_eq!(
            Offload::from_vnet_hdr(&hdr(1, 0, 0, 34, 8), &sctp),
            Err(OffloadError::ChecksumMismatch)
        );
        // A fragment carries no offload.
        let mut frag = f.clone();
        frag[20] |= 0x20; // more fragments
        assert_eq!(
            Offload::from_vnet_hdr(&hdr(1, 0, 0, 34, 16), &frag),
            Err(OffloadError::Fragment)
        );
        // No super-frame to a group address.
        let mut bcast = f.clone();
        bcast[..6].fill(0xff);
        assert_eq!(
            Offload::from_vnet_hdr(&hdr(1, GSO_TCPV4, 1000, 34, 16), &bcast),
            Err(OffloadError::GsoMismatch)
        );
        // The smallest TCP segment a kernel sends is 48 bytes.
        assert!(Offload::from_vnet_hdr(&hdr(1, GSO_TCPV4, 48, 34, 16), &f).is_ok());
        let o = Offload::from_vnet_hdr(&hdr(1, 0, 0, 34, 16), &f).unwrap();
        assert!(o.partial_at(34) && !o.partial_at(38));
        // A partial field in the Ethernet padding after the IP packet (found by fuzzing:
        // accepted, then segmentation could not finish it).
        let mut padded = tcp_frame(0);
        padded.extend_from_slice(&[0xff; 40]);
        assert_eq!(
            Offload::from_vnet_hdr(&hdr(1, 0, 0, 60, 16), &padded),
            Err(OffloadError::ChecksumOutOfFrame)
        );
    }

    #[test]
    fn plain_and_verified_headers() {
        let f = tcp_frame(10);
        assert_eq!(Offload::from_vnet_hdr(&[0; 10], &f).unwrap(), Offload::NONE);
        let v = Offload::from_vnet_hdr(&hdr(F_DATA_VALID, 0, 0, 0, 0), &f).unwrap();
        assert_eq!(v.checksum, Checksum::Verified);
        assert!(v.is_plain());
        let ecn = Offload::from_vnet_hdr(&hdr(1, GSO_TCPV4 | GSO_ECN, 500, 34, 16), &f).unwrap();
        assert_eq!(
            ecn.gso,
            Gso::Tcp {
                mss: 500,
                ipv6: false,
                ecn: true
            }
        );
        assert_eq!(ecn.to_vnet_hdr(&f)[1], GSO_TCPV4 | GSO_ECN);
    }

    #[test]
    fn capabilities_and_wire_length() {
        let f = tcp_frame(4000);
        let o = Offload::from_vnet_hdr(&hdr(F_NEEDS_CSUM, GSO_TCPV4, 1448, 34, 16), &f).unwrap();
        assert!(Capabilities::ALL.accepts(&o));
        assert!(!Capabilities::NONE.accepts(&o));
        let csum_only = Capabilities {
            partial_checksum: true,
            ..Capabilities::NONE
        };
        assert!(!csum_only.accepts(&o));
        let small = Offload {
            gso: Gso::None,
            ..o
        };
        assert!(csum_only.accepts(&small));
        assert!(Capabilities::NONE.accepts(&Offload::NONE));
        assert_eq!(o.wire_len(&f), 54 + 1448);
        assert_eq!(Offload::NONE.wire_len(&f), f.len());
    }

    #[test]
    fn layout_reads_v4_v6_and_a_vlan_tag() {
        let f = tcp_frame(10);
        let l = Layout::of(&f).unwrap();
        assert_eq!(
            (l.l3, l.l4, l.proto, l.headers_len, l.end),
            (14, 34, 6, 54, 64)
        );
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x14]);
        tagged.extend_from_slice(&f[12..]);
        assert_eq!(Layout::of(&tagged).unwrap().l4, 38);
        assert!(Layout::of(&f[..40]).is_none());
        assert!(Layout::of(&[0u8; 14]).is_none());
    }
}
