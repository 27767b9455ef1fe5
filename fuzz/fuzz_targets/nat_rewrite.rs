//! `nat::rewrite`, `nat::icmp_error_inner` and `nat::rewrite_icmp_error` on arbitrary IPv4
//! packets (raw, or built with etherparse: TCP/UDP/ICMP and ICMP errors quoting anything).
//!
//! Checked: no panic; on error the frame is unchanged; bytes past the IPv4 total length are never
//! touched; the new endpoints are in the packet; and the RFC 1624 contract: a checksum that
//! verified before the rewrite verifies after it. Only checksums computable from the packet are
//! checked: not a fragment's transport checksum, and a quoted transport checksum only when the
//! quote holds the whole quoted datagram.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use nat::{Endpoint, icmp_error_inner, rewrite, rewrite_icmp_error};
use packet::checksum::{internet_checksum, l4_checksum};
use packet::{Classified, Ipv4Addr, L3, L4, classify};
use vswitch_fuzz::{Ipv4Spec, L4Spec};

#[derive(Arbitrary, Debug)]
struct Params {
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    outer_src: [u8; 4],
    outer_dst: [u8; 4],
    inner_src: ([u8; 4], u16),
    inner_dst: ([u8; 4], u16),
    /// Pass a doctored InnerPacket to rewrite_icmp_error.
    foreign_inner: bool,
    /// Ethernet padding after the packet.
    pad: u8,
    /// Build the packet (`true`) or take the rest of the input as the IPv4 packet.
    built: bool,
}

fn ep((a, p): ([u8; 4], u16)) -> Endpoint {
    Endpoint::new(Ipv4Addr::from(a), p)
}

/// A checksum over `data` verifies (the folded sum is ones' complement -0).
fn ok(data: &[u8]) -> bool {
    internet_checksum(data) == 0
}

/// What verified in `frame`: (IPv4 header, transport checksum if checkable).
fn verified(frame: &[u8], c: &Classified) -> (bool, Option<bool>) {
    let L3::Ipv4(info) = c.l3 else {
        return (false, None);
    };
    let ip = ok(&frame[c.l3_offset..c.l4_offset]);
    if info.is_fragment() {
        return (ip, None);
    }
    let seg = &frame[c.l4_offset..c.ip_end];
    let l4 = match c.l4 {
        L4::Tcp { .. } => Some(l4_checksum(info.src, info.dst, 6, seg) == 0),
        L4::Udp { .. } if seg[6..8] != [0, 0] => {
            Some(l4_checksum(info.src, info.dst, 17, seg) == 0)
        }
        L4::Icmp { .. } => Some(ok(seg)),
        _ => None,
    };
    (ip, l4)
}

/// The quoted datagram's (IPv4 header, whole transport) checksums, if the quote holds the whole
/// datagram.
fn inner_verified(frame: &[u8], inner: &nat::InnerPacket) -> (bool, Option<bool>) {
    let hdr = &frame[inner.ip_offset..inner.l4_offset];
    let ip = ok(hdr);
    let total = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    let mf = hdr[6] & 0x20 != 0;
    if mf || inner.ip_offset + total != inner.quote_end {
        return (ip, None);
    }
    let seg = &frame[inner.l4_offset..inner.quote_end];
    let (s, d) = (inner.src.addr, inner.dst.addr);
    let l4 = match inner.protocol {
        6 if seg.len() >= 20 => Some(l4_checksum(s, d, 6, seg) == 0),
        17 if seg[6..8] != [0, 0] => Some(l4_checksum(s, d, 17, seg) == 0),
        1 => Some(ok(seg)),
        _ => None,
    };
    (ip, l4)
}

fn implies(before: bool, after: bool) -> bool {
    !before || after
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(params) = Params::arbitrary(&mut u) else {
        return;
    };
    let ip_packet = if params.built {
        let Ok((ip, l4)) = <(Ipv4Spec, L4Spec)>::arbitrary(&mut u) else {
            return;
        };
        vswitch_fuzz::FrameSpec::ipv4(&ip, &l4)
    } else {
        u.take_rest().to_vec()
    };
    let mut frame = testkit::frames::ethernet(
        packet::MacAddr([2, 0, 0, 0, 0, 1]),
        packet::MacAddr([2, 0, 0, 0, 0, 2]),
        packet::ETHERTYPE_IPV4,
        &ip_packet,
    );
    frame.resize(frame.len() + usize::from(params.pad % 32), 0xee);
    let Ok(c) = classify(&frame) else {
        return;
    };
    let L3::Ipv4(info) = c.l3 else {
        return;
    };
    let before = verified(&frame, &c);

    // Plain rewrite.
    let (src, dst) = (ep(params.src), ep(params.dst));
    let mut f = frame.clone();
    match rewrite(&mut f, &c, src, dst) {
        Err(e) => assert_eq!(f, frame, "frame changed although rewrite failed with {e:?}"),
        Ok(()) => {
            assert_eq!(f[c.ip_end..], frame[c.ip_end..], "padding was touched");
            let c2 = classify(&f).expect("a rewritten packet still classifies");
            let L3::Ipv4(info2) = c2.l3 else {
                panic!("no longer IPv4: {c2:?}");
            };
            assert_eq!((info2.src, info2.dst), (src.addr, dst.addr));
            if !info.is_fragment() {
                match c2.l4 {
                    L4::Tcp {
                        src_port, dst_port, ..
                    }
                    | L4::Udp { src_port, dst_port } => {
                        assert_eq!((src_port, dst_port), (src.port, dst.port));
                    }
                    _ => {}
                }
            }
            let after = verified(&f, &c2);
            assert!(
                implies(before.0, after.0),
                "IPv4 checksum broken by rewrite"
            );
            if let (Some(b), Some(a)) = (before.1, after.1) {
                assert!(implies(b, a), "transport checksum broken by rewrite: {c:?}");
            }
            if let L4::Udp { .. } = c.l4 {
                let z = |f: &[u8]| f[c.l4_offset + 6..c.l4_offset + 8] == [0, 0];
                if !info.is_fragment() || info.frag_offset == 0 {
                    assert_eq!(z(&frame), z(&f), "UDP checksum 0 (none) changed");
                }
            }
        }
    }

    // ICMP error translation.
    let Some(inner) = icmp_error_inner(&frame, &c) else {
        return;
    };
    assert!(c.l4_offset < inner.ip_offset);
    assert!(inner.ip_offset + 20 <= inner.l4_offset);
    assert!(inner.l4_offset + 8 <= inner.quote_end, "{inner:?}");
    assert!(inner.quote_end <= frame.len() && inner.quote_end == c.ip_end);
    assert!(inner.quoted_l4_len() >= 8);
    let inner_before = inner_verified(&frame, &inner);

    let mut given = inner;
    if params.foreign_inner {
        given.src.port = given.src.port.wrapping_add(1);
    }
    let (isrc, idst) = (ep(params.inner_src), ep(params.inner_dst));
    let (osrc, odst) = (
        Ipv4Addr::from(params.outer_src),
        Ipv4Addr::from(params.outer_dst),
    );
    let mut f = frame.clone();
    match rewrite_icmp_error(&mut f, &c, &given, osrc, odst, isrc, idst) {
        Err(e) => {
            assert_eq!(
                f, frame,
                "frame changed although rewrite_icmp_error failed: {e:?}"
            );
            assert!(
                params.foreign_inner,
                "a fresh InnerPacket was refused: {e:?}"
            );
        }
        Ok(()) => {
            assert!(!params.foreign_inner, "a foreign InnerPacket was accepted");
            assert_eq!(f[c.ip_end..], frame[c.ip_end..], "padding was touched");
            let c2 = classify(&f).expect("a translated ICMP error still classifies");
            let after = verified(&f, &c2);
            assert!(implies(before.0, after.0), "outer IPv4 checksum broken");
            if let (Some(b), Some(a)) = (before.1, after.1) {
                assert!(implies(b, a), "outer ICMP checksum broken");
            }
            let inner2 = icmp_error_inner(&f, &c2).expect("the quote still parses");
            assert_eq!((inner2.src.addr, inner2.dst.addr), (isrc.addr, idst.addr));
            match inner.icmp_type {
                None => assert_eq!((inner2.src.port, inner2.dst.port), (isrc.port, idst.port)),
                Some(ty) if nat::is_query_request(ty) => assert_eq!(inner2.src.port, isrc.port),
                Some(_) => assert_eq!(inner2.dst.port, idst.port),
            }
            let inner_after = inner_verified(&f, &inner2);
            assert!(
                implies(inner_before.0, inner_after.0),
                "quoted IPv4 checksum broken"
            );
            if let (Some(b), Some(a)) = (inner_before.1, inner_after.1) {
                assert!(implies(b, a), "quoted transport checksum broken");
            }
        }
    }
});
