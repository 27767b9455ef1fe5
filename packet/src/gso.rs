//! The software fallback for offloads: finishing a partial checksum, and cutting a GSO
//! super-frame into the frames a receiver without offloads expects.
//!
//! Used where an egress cannot take a frame's [`Offload`] as it is: a pcap being written, a port
//! without a virtio-net header, a segment size above the egress MTU. What the kernel's
//! `skb_checksum_help` and `tcp_gso_segment`/`__udp_gso_segment` do, as Open vSwitch's
//! `dp-packet-gso.c` does it in userspace:
//!
//! - each segment gets a copy of the headers; IPv4 total length / IPv6 payload length fixed;
//! - IPv4: the identifier advances by one per segment, the header checksum is recomputed;
//! - TCP: the sequence number advances by the payload cut so far; FIN and PSH stay only on the
//!   last segment, CWR only on the first; the checksum is computed over each segment;
//! - UDP (USO): each datagram gets its own length and checksum (0 sent as 0xffff).
//!
//! Nothing here trusts the frame: every offset comes from [`Layout`], and a frame whose headers
//! do not back its offload state is refused with an [`OffloadError`].

use crate::checksum::{fold, pseudo_header_sum, sum};
use crate::offload::{Checksum, Gso, IpSummary, Layout, Offload, OffloadError};
use std::net::Ipv4Addr;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Finishes a partial checksum in place: sums the bytes from `start` to the end of the IP
/// packet (the field holds the pseudo-header sum already) and writes the complement.
pub fn complete_checksum(frame: &mut [u8], start: u16, offset: u16) -> Result<(), OffloadError> {
    let start = usize::from(start);
    let field = start + usize::from(offset);
    let layout = Layout::of(frame);
    // Padding after the IP packet (short Ethernet frames) is not part of the segment.
    let end = IpSummary::of(frame).map_or(frame.len(), |i| i.end.min(frame.len()));
    if field + 2 > end || start > end {
        return Err(OffloadError::ChecksumOutOfFrame);
    }
    let mut c = !fold(sum(&frame[start..end]));
    if c == 0 && layout.is_some_and(|l| l.proto == 17) {
        // RFC 768: a computed UDP checksum of zero is sent as all ones.
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Sends `frame` to `emit` as frames a receiver without offloads takes: a super-frame cut into
/// segments of at most `max_payload` (and its own segment size) payload bytes, every checksum
/// complete. A frame that needs nothing is passed on as it is. Returns the number of frames
/// emitted. `scratch` is reused for each segment.
pub fn segment(
    frame: &[u8],
    offload: &Offload,
    max_payload: Option<u16>,
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    offload.check(frame)?;
    let size = match (offload.gso.segment_size(), max_payload) {
        (Some(s), Some(m)) => s.min(m),
        (Some(s), None) => s,
        (None, Some(m)) => m,
        (None, None) => u16::MAX,
    };
    let layout = Layout::of(frame);
    let fits = layout.is_none_or(|l| l.end - l.headers_len <= usize::from(size));
    if offload.gso == Gso::None && fits {
        match offload.checksum {
            Checksum::Partial { start, offset } => {
                scratch.clear();
                scratch.extend_from_slice(frame);
                complete_checksum(scratch, start, offset)?;
                emit(scratch);
            }
            Checksum::Complete | Checksum::Verified => emit(frame),
        }
        return Ok(1);
    }
    let l = layout.ok_or(OffloadError::GsoMismatch)?;
    if size == 0 {
        return Err(OffloadError::ZeroSegmentSize);
    }
    // A frame too big for the egress without GSO is cut like a TCP/UDP super-frame only when it
    // is one; plain frames are the caller's (fragmentation-needed or fragmentation).
    if offload.gso == Gso::None {
        return Err(OffloadError::GsoMismatch);
    }
    let payload = &frame[l.headers_len..l.end];
    let headers = &frame[..l.headers_len];
    let mut emitted = 0;
    for (i, chunk) in payload.chunks(usize::from(size)).enumerate() {
        let last = (i + 1) * usize::from(size) >= payload.len();
        scratch.clear();
        scratch.extend_from_slice(headers);
        scratch.extend_from_slice(chunk);
        fix_segment(scratch, &l, i, i * usize::from(size), last);
        emit(scratch);
        emitted += 1;
    }
    if payload.is_empty() {
        // A super-frame with no payload (never sent by Linux): one frame with its checksum.
        scratch.clear();
        scratch.extend_from_slice(headers);
        fix_segment(scratch, &l, 0, 0, true);
        emit(scratch);
        emitted = 1;
    }
    Ok(emitted)
}

/// Rewrites the copied headers of segment `index` (payload starting at `offset` of the
/// super-frame's payload) to describe it alone, checksums included.
fn fix_segment(seg: &mut [u8], l: &Layout, index: usize, offset: usize, last: bool) {
    let ip_len = seg.len() - l.l3;
    if l.ipv6 {
        put16(seg, l.l3 + 4, (ip_len - 40) as u16);
    } else {
        put16(seg, l.l3 + 2, ip_len as u16);
        let id = get16(seg, l.l3 + 4).wrapping_add(index as u16);
        put16(seg, l.l3 + 4, id);
        put16(seg, l.l3 + 10, 0);
        let c = !fold(sum(&seg[l.l3..l.l4]));
        put16(seg, l.l3 + 10, c);
    }
    let l4_len = seg.len() - l.l4;
    let field = if l.proto == 6 {
        let seq = u32::from_be_bytes([seg[l.l4 + 4], seg[l.l4 + 5], seg[l.l4 + 6], seg[l.l4 + 7]]);
        let seq = seq.wrapping_add(offset as u32);
        seg[l.l4 + 4..l.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let flags = &mut seg[l.l4 + 13];
        if !last {
            *flags &= !(TCP_FIN | TCP_PSH);
        }
        if index > 0 {
            *flags &= !TCP_CWR;
        }
        l.l4 + 16
    } else {
        put16(seg, l.l4 + 4, l4_len as u16);
        l.l4 + 6
    };
    put16(seg, field, 0);
    let pseudo = pseudo_sum(seg, l, l4_len as u32);
    let mut c = !fold(pseudo + sum(&seg[l.l4..]));
    if c == 0 && l.proto == 17 {
        c = 0xffff;
    }
    put16(seg, field, c);
}

/// The pseudo-header sum of the IP header at `l.l3` for an L4 length of `l4_len`.
fn pseudo_sum(frame: &[u8], l: &Layout, l4_len: u32) -> u32 {
    if l.ipv6 {
        // RFC 8200 8.1: source, destination, upper-layer length (32 bits), next header.
        let addrs = sum(&frame[l.l3 + 8..l.l3 + 40]);
        let wide = u64::from(addrs) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff);
        (wide + u64::from(l.proto)) as u32
    } else {
        let a = |i: usize| Ipv4Addr::new(frame[i], frame[i + 1], frame[i + 2], frame[i + 3]);
        pseudo_header_sum(a(l.l3 + 12), a(l.l3 + 16), l.proto, l4_len as u16)
    }
}

fn get16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checksum::internet_checksum;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    /// A TCP super-frame as the kernel hands it over: the field holds the pseudo-header sum
    /// of the whole L4 length, the IPv4 header is complete.
    fn super_frame(payload: &[u8], flags_fin: bool) -> (Vec<u8>, Offload) {
        let mut b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 80, 0xffff_fff0, 64240)
            .ack(1)
            .psh()
            .cwr();
        if flags_fin {
            b = b.fin();
        }
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        let l4_len = (f.len() - 34) as u16;
        let pseudo = fold(pseudo_header_sum(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            l4_len,
        ));
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let o = Offload {
            checksum: Checksum::Partial {
                start: 34,
                offset: 16,
            },
            gso: Gso::Tcp {
                mss: 1000,
                ipv6: false,
                ecn: false,
            },
        };
        (f, o)
    }

    /// Each emitted frame, decoded and checksum-verified independently of the code under test.
    fn verify_tcp(frames: &[Vec<u8>]) -> Vec<(u32, u16, u8, Vec<u8>)> {
        frames
            .iter()
            .map(|f| {
                let p = SlicedPacket::from_ethernet(f).unwrap();
                let Some(NetSlice::Ipv4(ip)) = p.net else {
                    panic!("not IPv4")
                };
                assert_eq!(internet_checksum(ip.header().slice()), 0, "IP checksum");
                let Some(TransportSlice::Tcp(tcp)) = p.transport else {
                    panic!("not TCP")
                };
                let h = ip.header().to_header();
                let want = tcp
                    .to_header()
                    .calc_checksum_ipv4(&h, tcp.payload())
                    .unwrap();
                assert_eq!(tcp.checksum(), want, "TCP checksum");
                let flags = f[47];
                (
                    tcp.sequence_number(),
                    h.identification,
                    flags,
                    tcp.payload().to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn a_super_frame_becomes_segments_with_right_headers() {
        let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let (f, o) = super_frame(&payload, true);
        let mut out = Vec::new();
        let n = segment(&f, &o, None, &mut Vec::new(), &mut |s| out.push(s.to_vec())).unwrap();
        assert_eq!(n, 3);
        let segs = verify_tcp(&out);
        let id0 = segs[0].1;
        // Sequence numbers advance by the payload (and wrap), ids by one.
        assert_eq!(segs[0].0, 0xffff_fff0);
        assert_eq!(segs[1].0, 0xffff_fff0u32.wrapping_add(1000));
        assert_eq!(segs[2].0, 0xffff_fff0u32.wrapping_add(2000));
        assert_eq!(segs[1].1, id0.wrapping_add(1));
        assert_eq!(segs[2].1, id0.wrapping_add(2));
        // CWR only first; FIN and PSH only last.
        assert_eq!(segs[0].2 & (TCP_FIN | TCP_PSH | TCP_CWR), TCP_CWR);
        assert_eq!(segs[1].2 & (TCP_FIN | TCP_PSH | TCP_CWR), 0);
        assert_eq!(segs[2].2 & (TCP_FIN | TCP_PSH | TCP_CWR), TCP_FIN | TCP_PSH);
        let joined: Vec<u8> = segs.iter().flat_map(|s| s.3.clone()).collect();
        assert_eq!(joined, payload);
        assert_eq!(out[0].len(), 54 + 1000);
        assert_eq!(out[2].len(), 54 + 500);
    }

    #[test]
    fn the_egress_limit_cuts_smaller_than_the_mss() {
        let (f, o) = super_frame(&[7u8; 2000], false);
        let mut out = Vec::new();
        let n = segment(&f, &o, Some(600), &mut Vec::new(), &mut |s| {
            out.push(s.to_vec())
        })
        .unwrap();
        assert_eq!(n, 4);
        let segs = verify_tcp(&out);
        assert_eq!(
            segs.iter().map(|s| s.3.len()).collect::<Vec<_>>(),
            [600, 600, 600, 200]
        );
    }

    #[test]
    fn a_partial_checksum_alone_is_completed() {
        let (f, mut o) = super_frame(&[1u8; 300], false);
        o.gso = Gso::None;
        let mut out = Vec::new();
        segment(&f, &o, None, &mut Vec::new(), &mut |s| out.push(s.to_vec())).unwrap();
        assert_eq!(out.len(), 1);
        verify_tcp(&out);
        let mut g = f.clone();
        complete_checksum(&mut g, 34, 16).unwrap();
        assert_eq!(g, out[0]);
        // A plain frame passes unchanged.
        let mut plain = Vec::new();
        segment(&out[0], &Offload::NONE, None, &mut Vec::new(), &mut |s| {
            plain.push(s.to_vec())
        })
        .unwrap();
        assert_eq!(plain, out);
    }

    #[test]
    fn ipv6_and_udp_super_frames() {
        // TCP over IPv6.
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(1, 2, 100, 1000)
            .ack(5);
        let mut f = Vec::new();
        b.write(&mut f, &[3u8; 1500]).unwrap();
        let o6 = Offload {
            checksum: Checksum::Partial {
                start: 54,
                offset: 16,
            },
            gso: Gso::Tcp {
                mss: 1000,
                ipv6: true,
                ecn: false,
            },
        };
        let mut out = Vec::new();
        segment(&f, &o6, None, &mut Vec::new(), &mut |s| {
            out.push(s.to_vec())
        })
        .unwrap();
        assert_eq!(out.len(), 2);
        for s in &out {
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let Some(NetSlice::Ipv6(ip)) = p.net else {
                panic!()
            };
            let Some(TransportSlice::Tcp(tcp)) = p.transport else {
                panic!()
            };
            let want = tcp
                .to_header()
                .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), want);
        }
        // UDP segmentation offload.
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(5, 6);
        let mut f = Vec::new();
        b.write(&mut f, &[9u8; 2500]).unwrap();
        let ou = Offload {
            checksum: Checksum::Partial {
                start: 34,
                offset: 6,
            },
            gso: Gso::Udp { size: 1200 },
        };
        let mut out = Vec::new();
        segment(&f, &ou, None, &mut Vec::new(), &mut |s| {
            out.push(s.to_vec())
        })
        .unwrap();
        assert_eq!(out.len(), 3);
        for s in &out {
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let Some(NetSlice::Ipv4(ip)) = p.net else {
                panic!()
            };
            let Some(TransportSlice::Udp(udp)) = p.transport else {
                panic!()
            };
            let h = udp.to_header();
            assert_eq!(usize::from(h.length), 8 + udp.payload().len());
            let want = h
                .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
                .unwrap();
            assert_eq!(udp.checksum(), want);
        }
    }

    #[test]
    fn bad_state_is_refused_not_trusted() {
        let (f, mut o) = super_frame(&[1u8; 100], false);
        o.gso = Gso::Udp { size: 10 };
        assert!(segment(&f, &o, None, &mut Vec::new(), &mut |_| ()).is_err());
        let mut short = f.clone();
        assert_eq!(
            complete_checksum(&mut short, 34, 2000),
            Err(OffloadError::ChecksumOutOfFrame)
        );
        // Truncated frame: its IP length claims more than it holds.
        let (f, o) = super_frame(&[1u8; 3000], false);
        assert!(segment(&f[..1000], &o, None, &mut Vec::new(), &mut |_| ()).is_err());
    }
}
