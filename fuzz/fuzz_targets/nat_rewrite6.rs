//! `nat::rewrite6` (NAT66) on arbitrary IPv6 frames (raw, or built with etherparse through
//! `vswitch_fuzz::v6`: TCP/UDP/echo/ND/ICMPv6 errors behind arbitrary extension chains, cut or
//! padded) with arbitrary endpoints, in complete and in partial-checksum form.
//!
//! Checked: no panic; on error the frame is unchanged; bytes past the packet (padding) are never
//! touched; on success the new addresses are in the header; and the RFC 1624 contract: a TCP,
//! UDP or echo checksum that verified before the rewrite verifies after it (checked with the
//! independent etherparse computation in `verified`, not fragments).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use nat::{Endpoint6, rewrite6};
use packet::checksum::l4_checksum_v6;
use packet::{Ipv6Addr, L3, L4, classify};
use vswitch_fuzz::v6::{Ipv6Spec, L6Spec, ipv6_packet};

#[derive(Arbitrary, Debug)]
struct Params {
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    pad: u8,
    built: Option<(Ipv6Spec, L6Spec)>,
}

/// Whether the frame's own transport checksum verifies (none for fragments, other protocols
/// and ICMPv6 messages other than echo).
fn verified(frame: &[u8]) -> Option<bool> {
    let c = classify(frame).ok()?;
    let L3::Ipv6(info) = c.l3 else { return None };
    if info.is_fragment() {
        return None;
    }
    match (info.protocol, c.l4) {
        (6, L4::Tcp { .. }) | (17, L4::Udp { .. }) | (58, L4::Icmp { ty: 128 | 129, .. }) => {
            let seg = frame.get(c.l4_offset..c.ip_end)?;
            Some(l4_checksum_v6(info.src, info.dst, info.protocol, seg) == 0)
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(p) = Params::arbitrary(&mut u) else {
        return;
    };
    let packet = match &p.built {
        Some((ip, l6)) => {
            let (nh, upper) = l6.build(ip.src.addr(), ip.dst.addr());
            ipv6_packet(ip, nh, &upper)
        }
        None => u.take_rest().to_vec(),
    };
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    frame.extend_from_slice(&packet);
    frame.resize(frame.len() + usize::from(p.pad % 32), 0xee);
    let Ok(c) = classify(&frame) else {
        return;
    };
    let before = verified(&frame);
    let original = frame.clone();
    let src = Endpoint6::new(Ipv6Addr::from(p.src.0), p.src.1);
    let dst = Endpoint6::new(Ipv6Addr::from(p.dst.0), p.dst.1);
    match rewrite6(&mut frame, &c, src, dst, false) {
        Err(_) => assert_eq!(frame, original, "a failed rewrite changed the frame"),
        Ok(()) => {
            assert_eq!(&frame[c.ip_end..], &original[c.ip_end..], "padding touched");
            assert_eq!(&frame[22..38], &src.addr.octets());
            assert_eq!(&frame[38..54], &dst.addr.octets());
            if before == Some(true) {
                assert_eq!(verified(&frame), Some(true), "a checksum that verified broke");
            }
        }
    }
    // The partial form never panics either, and leaves the frame alone on error.
    let mut partial = original.clone();
    if rewrite6(&mut partial, &c, src, dst, true).is_err() {
        assert_eq!(partial, original);
    }
});
