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
    let mut lldp = f.clone();
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    assert_eq!(classify(&lldp).unwrap().l3, L3::Other { ethertype: 0x88cc });
    // ARP bytes under the IPv6 EtherType are not an IPv6 header.
    let mut v6 = f.clone();
    v6[12..14].copy_from_slice(&packet::ETHERTYPE_IPV6.to_be_bytes());
    assert_eq!(classify(&v6), Err(Malformed::Ipv6));
}

mod ipv6 {
    use super::*;
    use packet::{IPPROTO_ICMPV6, Ipv6Addr, MAX_EXTENSION_HEADERS};

    fn a() -> Ipv6Addr {
        "fd00::2".parse().expect("an IPv6 address")
    }
    fn b() -> Ipv6Addr {
        "2001:db8::1".parse().expect("an IPv6 address")
    }

    #[test]
    fn classifies_udp_tcp_and_icmpv6() {
        let f = build::udp6(A, B, a(), b(), 1000, 53, b"hello");
        let c = classify(&f).unwrap();
        let L3::Ipv6(info) = c.l3 else {
            panic!("not IPv6: {c:?}")
        };
        assert_eq!((info.src, info.dst, info.protocol), (a(), b(), 17));
        assert_eq!((info.hop_limit, info.header_len), (64, 40));
        assert_eq!(info.payload_len, 8 + 5);
        assert_eq!(
            c.l4,
            L4::Udp {
                src_port: 1000,
                dst_port: 53
            }
        );
        assert_eq!((c.l4_offset, c.ip_end), (54, f.len()));

        let f = build::tcp6(A, B, a(), b(), 1000, 80, 7, 0, tcp_flags::SYN, b"abc");
        assert!(matches!(
            classify(&f).unwrap().l4,
            L4::Tcp {
                dst_port: 80,
                seq: 7,
                payload_len: 3,
                ..
            }
        ));

        let f = build::icmpv6_echo(A, B, a(), b(), true, 0x1234, 1, b"ping");
        let c = classify(&f).unwrap();
        assert!(matches!(c.l3, L3::Ipv6(i) if i.protocol == IPPROTO_ICMPV6));
        assert_eq!(
            c.l4,
            L4::Icmp {
                ty: 128,
                code: 0,
                ident: 0x1234
            }
        );
    }

    #[test]
    fn walks_extension_headers_to_the_transport() {
        // MLD behind a hop-by-hop header carrying Router Alert.
        let group: Ipv6Addr = "ff02::fb".parse().unwrap();
        let f = build::mldv1(A, A.link_local(), group, false);
        let c = classify(&f).unwrap();
        let L3::Ipv6(info) = c.l3 else { panic!() };
        assert!(info.hop_by_hop);
        assert_eq!((info.protocol, info.header_len), (IPPROTO_ICMPV6, 48));
        assert!(matches!(c.l4, L4::Icmp { ty: 131, .. }));
        assert_eq!(c.l4_offset, 14 + 48);
    }

    /// A UDP packet behind `chain` extension headers of 8 bytes each (the next-header byte,
    /// then a zero length), built by hand.
    fn with_chain(chain: &[u8]) -> Vec<u8> {
        let udp = build::udp6(A, B, a(), b(), 1, 2, b"x");
        let (head, transport) = udp.split_at(54);
        let mut f = head.to_vec();
        let mut next = 17;
        let mut exts = Vec::new();
        for &ty in chain.iter().rev() {
            let mut h = vec![next, 0, 0, 0, 0, 0, 0, 0];
            if ty == 44 {
                h[3] = 0; // offset 0, more fragments clear: an atomic fragment
            }
            exts.splice(0..0, h);
            next = ty;
        }
        f[14 + 6] = next;
        let len = (exts.len() + transport.len()) as u16;
        f[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&exts);
        f.extend_from_slice(transport);
        f
    }

    #[test]
    fn an_extension_chain_is_bounded_and_checked() {
        let ok = with_chain(&[0, 60, 43, 44, 60]);
        let c = classify(&ok).unwrap();
        let L3::Ipv6(info) = c.l3 else { panic!() };
        assert_eq!(info.header_len, 40 + 5 * 8);
        assert!(
            info.fragment.is_some() && !info.is_fragment(),
            "atomic fragment"
        );
        assert!(matches!(c.l4, L4::Udp { src_port: 1, .. }));

        let long = with_chain(&[60; MAX_EXTENSION_HEADERS + 1]);
        assert_eq!(classify(&long), Err(Malformed::Ipv6));
        // Hop-by-hop anywhere but first, and two fragment headers, are malformed.
        assert_eq!(classify(&with_chain(&[60, 0])), Err(Malformed::Ipv6));
        assert_eq!(classify(&with_chain(&[44, 44])), Err(Malformed::Ipv6));
        // A chain that runs past the payload.
        let mut cut = with_chain(&[60]);
        cut[14 + 40 + 1] = 200;
        assert_eq!(classify(&cut), Err(Malformed::Ipv6));
    }

    #[test]
    fn later_fragments_have_no_transport() {
        let mut f = with_chain(&[44]);
        // Offset 8 (in 8-byte units: 1), more fragments.
        f[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&((1u16 << 3) | 1).to_be_bytes());
        f[14 + 40 + 4..14 + 40 + 8].copy_from_slice(&7u32.to_be_bytes());
        let c = classify(&f).unwrap();
        let L3::Ipv6(info) = c.l3 else { panic!() };
        let frag = info.fragment.unwrap();
        assert_eq!(
            (frag.offset, frag.more, frag.ident, frag.at),
            (8, true, 7, 54)
        );
        assert!(info.is_later_fragment());
        assert_eq!(c.l4, L4::None);
    }

    #[test]
    fn rejects_bad_lengths_and_versions() {
        let good = build::udp6(A, B, a(), b(), 1000, 53, b"hello");
        let mut f = good.clone();
        f[14 + 4..14 + 6].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(
            classify(&f),
            Err(Malformed::Ipv6),
            "payload beyond the frame"
        );
        let mut f = good.clone();
        f[14 + 4..14 + 6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(classify(&f), Err(Malformed::Ipv6), "jumbogram");
        let mut f = good.clone();
        f[14] = 0x40;
        assert_eq!(
            classify(&f),
            Err(Malformed::Ipv6),
            "version 4 in an IPv6 frame"
        );
        assert_eq!(classify(&good[..14 + 39]), Err(Malformed::Ipv6));
        let mut f = good.clone();
        f.extend_from_slice(&[0; 6]);
        assert_eq!(
            classify(&f).unwrap().ip_end,
            good.len(),
            "padding is not the packet"
        );
        let mut f = good;
        f[14 + 4..14 + 6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(classify(&f), Err(Malformed::Transport));
    }
}
