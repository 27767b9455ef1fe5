//! `classify` on frames built by etherparse (testkit), an implementation independent of the
//! views it reads with.

use packet::{L3, L4, MacAddr, Malformed, classify, tcp_flags};
use testkit::frames as build;

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

#[test]
fn classifies_udp() {
    let f = build::udp(
        A,
        B,
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        1000,
        53,
        b"hello",
    );
    let c = classify(&f).unwrap();
    assert!(matches!(c.l3, L3::Ipv4(i) if i.protocol == 17 && i.ttl == 64));
    assert_eq!(
        c.l4,
        L4::Udp {
            src_port: 1000,
            dst_port: 53
        }
    );
    assert_eq!(c.l4_offset, 34);
    assert_eq!(c.ip_end, f.len());
}

#[test]
fn classifies_tcp_with_flags_and_payload() {
    let f = build::tcp(
        A,
        B,
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        1000,
        80,
        7,
        0,
        tcp_flags::SYN,
        b"abc",
    );
    let c = classify(&f).unwrap();
    assert!(matches!(
        c.l4,
        L4::Tcp {
            flags: tcp_flags::SYN,
            seq: 7,
            payload_len: 3,
            ..
        }
    ));
}

#[test]
fn padding_is_outside_ip_end() {
    let mut f = build::icmp_echo(
        A,
        B,
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        true,
        9,
        1,
        b"",
    );
    let ip_len = f.len();
    f.extend_from_slice(&[0u8; 20]);
    let c = classify(&f).unwrap();
    assert_eq!(c.ip_end, ip_len);
    assert_eq!(
        c.l4,
        L4::Icmp {
            ty: 8,
            code: 0,
            ident: 9
        }
    );
}

#[test]
fn truncated_headers_are_malformed() {
    let f = build::tcp(
        A,
        B,
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        1,
        2,
        0,
        0,
        0,
        b"",
    );
    assert_eq!(classify(&f[..10]), Err(Malformed::Runt));
    assert_eq!(classify(&f[..30]), Err(Malformed::Ipv4));
    // Claim a total length shorter than IP + TCP headers: the TCP header does not fit.
    let mut g = f.clone();
    g[16..18].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(classify(&g), Err(Malformed::Transport));
}

#[test]
fn first_udp_fragment_has_ports() {
    let mut f = build::udp(
        A,
        B,
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        7,
        9,
        &[1; 100],
    );
    // Cut the datagram after 48 payload bytes and mark More Fragments, as a sender would.
    f.truncate(14 + 20 + 8 + 48);
    f[16..18].copy_from_slice(&(20u16 + 8 + 48).to_be_bytes());
    f[20] |= 0x20;
    let c = classify(&f).unwrap();
    assert_eq!(
        c.l4,
        L4::Udp {
            src_port: 7,
            dst_port: 9
        }
    );
    // Without MF the same bytes are a truncated datagram.
    f[20] &= !0x20;
    assert_eq!(classify(&f), Err(Malformed::Transport));
}

#[test]
fn arp_and_other() {
    let f = build::arp_request(A, [10, 0, 0, 1].into(), [10, 0, 0, 2].into());
    assert_eq!(classify(&f).unwrap().l3, L3::Arp);
    let mut v6 = f.clone();
    v6[12..14].copy_from_slice(&packet::ETHERTYPE_IPV6.to_be_bytes());
    assert_eq!(
        classify(&v6).unwrap().l3,
        L3::Other {
            ethertype: packet::ETHERTYPE_IPV6
        }
    );
}
