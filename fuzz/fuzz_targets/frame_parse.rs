//! `packet::classify` and the checksum helpers on arbitrary bytes: no panic, every offset inside
//! the frame and consistent with the header fields, and the checksum helpers agree with each
//! other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packet::checksum::{fold, internet_checksum, l4_checksum, sum, update_addr, update_u16};
use packet::{L3, L4, classify};

/// Ones' complement sum of two folded sums.
fn add(a: u16, b: u16) -> u16 {
    fold(u32::from(a) + u32::from(b))
}

fuzz_target!(|data: &[u8]| {
    let _ = (
        packet::dst_mac(data),
        packet::src_mac(data),
        packet::ethertype(data),
    );

    // Checksum helpers: summing in two even-aligned halves equals summing the whole.
    let mid = (data.len() / 2) & !1;
    assert_eq!(
        fold(sum(data)),
        add(fold(sum(&data[..mid])), fold(sum(&data[mid..])))
    );

    let Ok(c) = classify(data) else {
        return;
    };
    assert!(data.len() >= packet::MIN_FRAME_LEN);
    assert!(c.l3_offset <= c.l4_offset, "{c:?}");
    assert!(c.l4_offset <= c.ip_end, "{c:?}");
    assert!(c.ip_end <= data.len(), "{c:?} len {}", data.len());
    match c.l3 {
        L3::Ipv4(info) => {
            assert!((20..=60).contains(&info.header_len), "{info:?}");
            assert_eq!(c.l4_offset, c.l3_offset + info.header_len);
            assert_eq!(c.ip_end, c.l3_offset + info.total_len);
            let seg = &data[c.l4_offset..c.ip_end];
            match c.l4 {
                L4::Tcp { payload_len, .. } => {
                    assert_eq!(info.frag_offset, 0);
                    assert!(seg.len() >= 20);
                    let hl = usize::from(seg[12] >> 4) * 4;
                    assert!(
                        hl >= 20 && hl <= seg.len(),
                        "TCP header {hl} of {}",
                        seg.len()
                    );
                    assert_eq!(payload_len as usize, seg.len() - hl);
                }
                L4::Udp { .. } | L4::Icmp { .. } => {
                    assert_eq!(info.frag_offset, 0);
                    assert!(seg.len() >= 8);
                }
                L4::None => {}
            }
            // The header checksum written back by the helpers verifies, and an incremental
            // address update matches recomputing it.
            let mut hdr = data[c.l3_offset..c.l4_offset].to_vec();
            hdr[10] = 0;
            hdr[11] = 0;
            let ck = internet_checksum(&hdr);
            hdr[10..12].copy_from_slice(&ck.to_be_bytes());
            assert_eq!(internet_checksum(&hdr), 0);
            let new_src = info.dst;
            let updated = update_addr(ck, info.src, new_src);
            hdr[12..16].copy_from_slice(&new_src.octets());
            hdr[10..12].copy_from_slice(&updated.to_be_bytes());
            assert_eq!(internet_checksum(&hdr), 0);
            // A rewritten 16-bit word (the identification) too.
            let old = u16::from_be_bytes([hdr[4], hdr[5]]);
            let new = old.rotate_left(3) ^ 0x5a5a;
            let ck = u16::from_be_bytes([hdr[10], hdr[11]]);
            hdr[4..6].copy_from_slice(&new.to_be_bytes());
            hdr[10..12].copy_from_slice(&update_u16(ck, old, new).to_be_bytes());
            assert_eq!(internet_checksum(&hdr), 0);
            // The transport checksum in verification form is the complement of the folded sum.
            if matches!(c.l4, L4::Tcp { .. } | L4::Udp { .. }) && seg.len() <= 0xffff {
                let v = l4_checksum(info.src, info.dst, info.protocol, seg);
                let len = seg.len() as u16;
                let pseudo =
                    packet::checksum::pseudo_header_sum(info.src, info.dst, info.protocol, len);
                assert_eq!(v, !add(fold(pseudo), fold(sum(seg))));
            }
        }
        L3::Ipv6(info) => {
            // The extension chain is bounded and lies inside the packet.
            assert!(info.header_len >= 40 && info.header_len <= 40 + info.payload_len);
            assert!(info.header_len <= 40 + 8 * packet::MAX_EXTENSION_HEADERS * 256);
            assert_eq!(c.l4_offset, c.l3_offset + info.header_len);
            assert_eq!(c.ip_end, c.l3_offset + 40 + info.payload_len);
            if info.is_later_fragment() {
                assert_eq!(c.l4, L4::None);
            }
            let seg = &data[c.l4_offset..c.ip_end];
            if !matches!(c.l4, L4::None) {
                assert!(seg.len() >= 8);
            }
        }
        L3::Arp => {
            assert!(data.len() >= c.l3_offset + 28);
            assert_eq!(c.l4, L4::None);
        }
        L3::Other { ethertype } => {
            assert_eq!(Some(ethertype), packet::ethertype(data));
            assert_eq!(c.l4, L4::None);
        }
    }
});
