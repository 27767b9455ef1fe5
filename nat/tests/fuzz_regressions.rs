//! Inputs found by the fuzz targets in `fuzz/` (see fuzz/README.md), kept as regression tests.

#![allow(clippy::unwrap_used)] // Tests: panicking is how a test fails.

use nat::{Endpoint, rewrite};
use packet::checksum::internet_checksum;
use packet::{Ipv4Addr, classify};

/// nat_rewrite: an ICMP echo reply (identifier 0x3120, sequence 0, no payload) whose identifier
/// is translated back to 0 is all zeros but its checksum. RFC 1624 eqn. 3 gave 0x0000, with
/// which the message sums to +0 and fails verification; it must be 0xffff.
#[test]
fn echo_reply_translated_to_all_zero_keeps_a_valid_checksum() {
    let mut frame = *b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00\
        \x45\x00\x00\x1c\x00\x00\x40\x00\x40\x01\x26\xdf\x0a\x00\x00\x02\x0a\x00\x00\x01\
        \x00\x00\xce\xdf\x31\x20\x00\x00";
    assert_eq!(internet_checksum(&frame[14..34]), 0);
    assert_eq!(internet_checksum(&frame[34..]), 0);
    let c = classify(&frame).unwrap();
    let src = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 7);
    let dst = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 0);
    rewrite(&mut frame, &c, src, dst).unwrap();
    assert_eq!(&frame[38..40], &[0, 0], "identifier");
    assert_eq!(internet_checksum(&frame[14..34]), 0, "IPv4 checksum");
    assert_eq!(
        internet_checksum(&frame[34..]),
        0,
        "ICMP checksum {:02x?}",
        &frame[36..38]
    );
}

/// nat_rewrite: an ICMP echo reply with identifier 0xffff, sequence 0, no payload and checksum
/// 0x0000 (valid: the words sum to -0) whose identifier is translated to 0. The change from
/// 0xffff to 0 folds to ones' complement zero, so the checksum was left at 0x0000, and the
/// message became all zeros, which sums to +0 and fails verification; it must be 0xffff.
#[test]
fn echo_reply_identifier_ffff_to_zero_keeps_a_valid_checksum() {
    let mut frame = *b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00\
        \x45\x00\x00\x1c\x00\x00\x40\x00\x40\x01\x26\xdf\x0a\x00\x00\x02\x0a\x00\x00\x01\
        \x00\x00\x00\x00\xff\xff\x00\x00";
    assert_eq!(internet_checksum(&frame[34..]), 0);
    let c = classify(&frame).unwrap();
    let src = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 7);
    let dst = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 0);
    rewrite(&mut frame, &c, src, dst).unwrap();
    assert_eq!(&frame[38..40], &[0, 0], "identifier");
    assert_eq!(
        internet_checksum(&frame[34..]),
        0,
        "ICMP checksum {:02x?}",
        &frame[36..38]
    );
}
