//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! NAT rewrites an address or a port and must fix the IPv4 header checksum and the TCP/UDP/ICMP
//! checksum without summing the whole packet again. RFC 1624 eqn. 3 gives the new checksum from
//! the old one and the old and new values of the changed 16-bit words:
//!
//! ```text
//! HC' = ~(~HC + ~m + m')
//! ```
//!
//! An update never validates: a checksum that was wrong before stays wrong by the same amount, as
//! a real router does (captures with offloaded checksums must not be "fixed" or rejected).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Ones' complement sum of `data` as big-endian 16-bit words, not yet folded. An odd trailing
/// byte is padded with zero, as RFC 1071 says.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    fold64(acc)
}

#[inline]
fn fold64(mut acc: u64) -> u32 {
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit partial sum into 16 bits (end-around carry).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data`: the complement of its folded ones' complement sum.
#[inline]
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Partial sum of the IPv4 pseudo-header used by TCP and UDP (RFC 793, RFC 768).
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(protocol)
        + u32::from(l4_len)
}

/// Checksum of a TCP or UDP segment (with its checksum field as it is) under its pseudo-header.
/// A segment whose checksum field holds the right value yields 0 here (the verification form).
#[inline]
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    !fold(pseudo_header_sum(src, dst, protocol, len) + sum(segment))
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 8.1) used by TCP, UDP and ICMPv6.
#[inline]
pub fn pseudo_header_sum_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4_len: u32) -> u32 {
    let mut acc = u64::from(next_header) + u64::from(l4_len >> 16) + u64::from(l4_len & 0xffff);
    for a in [src, dst] {
        for w in a.segments() {
            acc += u64::from(w);
        }
    }
    fold64(acc)
}

/// Checksum of a TCP, UDP or ICMPv6 message (checksum field as it is) under the IPv6
/// pseudo-header; 0 when the field holds the right value.
#[inline]
pub fn l4_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, segment: &[u8]) -> u16 {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    !fold(pseudo_header_sum_v6(src, dst, next_header, len) + sum(segment))
}

/// The ones' complement difference `new - old` of two IPv6 addresses, to add to a sum.
#[inline]
fn addr_delta_v6(old: Ipv6Addr, new: Ipv6Addr) -> u32 {
    let mut acc: u64 = 0;
    for (o, n) in old.segments().into_iter().zip(new.segments()) {
        acc += u64::from(!o) + u64::from(n);
    }
    fold64(acc)
}

/// RFC 1624 update for a changed IPv6 address (eight words) in a complete checksum.
///
/// The result is never 0x0000 (see [`nonzero`]; UDP over IPv6 must not carry 0 either).
#[inline]
pub fn update_addr_v6(checksum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    nonzero(!fold(u32::from(!checksum) + addr_delta_v6(old, new)))
}

/// [`update_partial_addr`] for an IPv6 address: a partial checksum field (the folded
/// pseudo-header sum) gains `new - old`, with no complement.
#[inline]
pub fn update_partial_addr_v6(field: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    fold(u32::from(field) + addr_delta_v6(old, new))
}

/// RFC 1624 eqn. 3 for one changed 16-bit word.
///
/// The result is never 0x0000 (see [`nonzero`]).
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    nonzero(!fold(acc))
}

/// Writes a checksum of +0 (0x0000) as -0 (0xffff), the same ones' complement value.
///
/// RFC 1624 eqn. 3 yields 0x0000 when the covered data (without the checksum) sums to -0. That
/// is what a full computation gives too, unless every covered word is zero: such data sums to
/// +0, and only a checksum of 0xffff verifies (an ICMP echo reply with identifier 0, sequence 0
/// and no payload is all zeros). An incremental update cannot tell the two apart, but 0xffff
/// verifies in both, and a wrong checksum stays wrong by the same amount.
#[inline]
pub fn nonzero(checksum: u16) -> u16 {
    if checksum == 0 { 0xffff } else { checksum }
}

/// RFC 1624 eqn. 3 for a changed 32-bit value (two words), e.g. an IPv4 address.
///
/// The result is never 0x0000 (see [`nonzero`]).
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let acc = u32::from(!checksum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    nonzero(!fold(acc))
}

/// RFC 1624 update for a changed IPv4 address.
#[inline]
pub fn update_addr(checksum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(checksum, u32::from(old), u32::from(new))
}

/// Updates a *partial* checksum field (one holding the folded pseudo-header sum, for the
/// device to finish) for a changed IPv4 address: `F' = F - old + new` in ones' complement, with
/// no final complement (the kernel's `inet_proto_csum_replace4` with `pseudohdr`). Applying
/// RFC 1624 as for a complete checksum would corrupt it. A port change needs no update there:
/// ports are summed later, with the rest of the segment.
#[inline]
pub fn update_partial_addr(field: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    let (old, new) = (u32::from(old), u32::from(new));
    let acc = u32::from(field)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The IPv4 header example of RFC 1071 section 3 style: a real header with a known checksum.
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn known_header_verifies_and_recomputes() {
        assert_eq!(internet_checksum(&HEADER), 0);
        let mut h = HEADER;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(internet_checksum(&h), 0xb861);
    }

    proptest! {
        /// A UDP segment over IPv6 built with a correct checksum stays correct when NAT66
        /// rewrites either address, both in complete and in partial form.
        #[test]
        fn ipv6_address_updates_match_recompute(
            src in any::<u128>(), dst in any::<u128>(), new in any::<u128>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (src, dst, new) = (Ipv6Addr::from(src), Ipv6Addr::from(dst), Ipv6Addr::from(new));
            let mut seg = vec![0x12, 0x34, 0x00, 0x35, 0, 0, 0, 0];
            seg.extend_from_slice(&payload);
            let len = seg.len() as u16;
            seg[4..6].copy_from_slice(&len.to_be_bytes());
            let ck = nonzero(l4_checksum_v6(src, dst, 17, &seg));
            seg[6..8].copy_from_slice(&ck.to_be_bytes());
            prop_assert_eq!(l4_checksum_v6(src, dst, 17, &seg), 0);
            let updated = update_addr_v6(ck, src, new);
            seg[6..8].copy_from_slice(&updated.to_be_bytes());
            prop_assert_eq!(l4_checksum_v6(new, dst, 17, &seg), 0);
            // Partial form: the field holds the folded pseudo-header sum.
            let partial = fold(pseudo_header_sum_v6(src, dst, 17, u32::from(len)));
            let moved = update_partial_addr_v6(partial, dst, new);
            prop_assert_eq!(
                moved,
                fold(pseudo_header_sum_v6(src, new, 17, u32::from(len)))
            );
        }
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn address_update_matches_recompute() {
        let mut h = HEADER;
        let old = Ipv4Addr::new(192, 168, 0, 1);
        let new = Ipv4Addr::new(203, 0, 113, 7);
        h[12..16].copy_from_slice(&new.octets());
        let updated = update_addr(0xb861, old, new);
        h[10..12].copy_from_slice(&updated.to_be_bytes());
        assert_eq!(internet_checksum(&h), 0);
    }

    // Found by the nat_rewrite fuzz target: an ICMP echo request (type 8, identifier 0,
    // sequence 0, no payload) turned into the reply is all zeros but its checksum, which must
    // then be 0xffff; eqn. 3 alone gives 0x0000, which no receiver accepts.
    #[test]
    fn update_to_all_zero_data_gives_ffff() {
        let mut icmp = *b"\x08\x00\xf7\xff\x00\x00\x00\x00";
        assert_eq!(internet_checksum(&icmp), 0);
        icmp[0] = 0;
        let ck = update_u16(0xf7ff, 0x0800, 0x0000);
        icmp[2..4].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(internet_checksum(&icmp), 0, "checksum {ck:#06x}");
        // The same through the 32-bit form: an address field going to 0.0.0.0.
        let mut data = *b"\x00\x00\x00\x00\x0a\x00\x00\x01";
        let c = internet_checksum(&data);
        data[0..2].copy_from_slice(&c.to_be_bytes());
        let ck = update_u32(c, 0x0a00_0001, 0);
        data[4..8].copy_from_slice(&[0; 4]);
        data[0..2].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(internet_checksum(&data), 0, "checksum {ck:#06x}");
    }

    proptest! {
        // After any rewrite of one word, the incremental checksum equals a full recomputation.
        #[test]
        fn incremental_equals_full(mut data in proptest::collection::vec(any::<u8>(), 4..64usize),
                                   word in 0usize..32, new in any::<u16>()) {
            if data.len() % 2 == 1 { data.push(0); }
            let idx = (word % (data.len() / 2 - 1)) * 2 + 2;
            data[0] = 0; data[1] = 0;
            let c = internet_checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            let old = u16::from_be_bytes([data[idx], data[idx + 1]]);
            data[idx..idx + 2].copy_from_slice(&new.to_be_bytes());
            let updated = update_u16(c, old, new);
            data[0..2].copy_from_slice(&updated.to_be_bytes());
            // Both forms are valid encodings of ones' complement zero; verification is what counts.
            prop_assert_eq!(fold(sum(&data)), 0xffff);
        }

        #[test]
        // 0x0000 and 0xffff are the same ones' complement value, so keep c + delta away from both.
        fn wrong_checksum_stays_wrong_by_same_amount(old in any::<u32>(), new in any::<u32>(), c in 0u16..0x8000, delta in 1u16..0x7fff) {
            let good = update_u32(c, old, new);
            let bad = update_u32(c.wrapping_add(delta), old, new);
            prop_assert_ne!(good, bad);
        }
    }

    proptest! {
        /// The partial field after an address change equals the pseudo-header sum computed
        /// afresh for the new address.
        #[test]
        fn partial_update_matches_a_fresh_pseudo_sum(
            a in any::<u32>(), b in any::<u32>(), d in any::<u32>(), len in 0u16..65535
        ) {
            let (a, b, d) = (Ipv4Addr::from(a), Ipv4Addr::from(b), Ipv4Addr::from(d));
            let before = fold(pseudo_header_sum(a, d, 6, len));
            let after = fold(pseudo_header_sum(b, d, 6, len));
            let updated = update_partial_addr(before, a, b);
            // +0 and -0 are the same ones' complement value.
            let same = updated == after || matches!((updated, after), (0, 0xffff) | (0xffff, 0));
            prop_assert!(same, "{updated:#06x} != {after:#06x}");
        }
    }
}
