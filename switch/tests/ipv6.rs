//! IPv6 through the pipeline, end to end: the gateway's neighbour discovery and router
//! advertisements, echo, NAT66 out and back, a published port reached by an IPv6 client with
//! its address kept, hairpin, hop limit and packet-too-big errors, ICMPv6 errors translated,
//! and anti-spoofing with RA guard. Every emitted IPv6 frame's checksum is checked with
//! etherparse (an implementation independent of the code under test).

#![allow(clippy::unwrap_used)] // Test helpers: panicking is how a test fails.

use etherparse::{Icmpv6Header, NetSlice, SlicedPacket, TransportSlice};
use packet::{L3, L4, MacAddr, classify, tcp_flags};
use std::net::Ipv6Addr;
use switch::{Config, DropReason, Packet, Pipeline, PortId};
use testkit::frames as build;
use testkit::topology::{self, Topo};

const C1: PortId = PortId(0);
const C2: PortId = PortId(1);
const UP: PortId = PortId(2);
const SEC: u64 = 1_000_000_000;

const C1_MAC: MacAddr = MacAddr([0x02, 0x42, 172, 17, 0, 2]);
const C2_MAC: MacAddr = MacAddr([0x02, 0x42, 172, 17, 0, 3]);
const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 172, 17, 0, 1]);
const ROUTER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn c1() -> Ipv6Addr {
    v6("fd00:17::2")
}
fn c2() -> Ipv6Addr {
    v6("fd00:17::3")
}
fn gw() -> Ipv6Addr {
    v6("fd00:17::1")
}
fn uplink6() -> Ipv6Addr {
    v6("2001:db8::2")
}
fn remote() -> Ipv6Addr {
    v6("2001:db8:ffff::9")
}

fn uplink_mac() -> MacAddr {
    MacAddr::docker(topology::UPLINK_ADDRESS.parse().unwrap())
}

/// `bridge` dual-stack (fd00:17::/64) with c1 and c2 (addresses enforced), the static uplink
/// with its IPv6 side (MTU 1400), tcp 8080 published to c2:80.
fn topo() -> String {
    let port = |t: Topo, name: &str, mac: MacAddr, ip: &str, ip6: &str| {
        t.port(name, "bridge")
            .set_str("mac", &mac.to_string())
            .set_str("ip", ip)
            .set_str("ip6", ip6)
    };
    let t = Topo::new()
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .set_str("subnet6", "fd00:17::/64");
    let t = port(t, "c1", C1_MAC, "172.17.0.2", "fd00:17::2");
    let t = port(t, "c2", C2_MAC, "172.17.0.3", "fd00:17::3");
    t.uplink_port("up")
        .uplink_static("up")
        .set("mtu", 1400)
        .block("uplink.ipv6", false)
        .set_str("address", "2001:db8::2")
        .set_str("subnet", "2001:db8::/64")
        .set_str("next_hop", "2001:db8::1")
        .set_str("next_hop_mac", &ROUTER.to_string())
        .publish("tcp", 8080, "172.17.0.3", 80)
        .build()
}

struct Rig {
    p: Pipeline,
    now: u64,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(&topo())
    }

    fn with(text: &str) -> Rig {
        Rig {
            p: Pipeline::new(&Config::from_toml(text).unwrap()).unwrap(),
            now: 1_000 * SEC,
        }
    }

    fn send(&mut self, port: PortId, data: Vec<u8>) -> Vec<Packet> {
        self.now += 1_000_000;
        let mut input = vec![Packet::new(port, data)];
        let mut out = Vec::new();
        self.p.process(self.now, &mut input, &mut out);
        for pkt in &out {
            assert_valid6(&pkt.data);
        }
        for i in 0..3 {
            let c = self.p.port_counters(PortId(i)).unwrap();
            assert_eq!(
                c.rx_frames,
                c.forwarded + c.local + c.dropped() + c.queued,
                "port {i}: {c:?}"
            );
        }
        out
    }

    fn drops(&self, port: PortId, reason: DropReason) -> u64 {
        self.p.port_counters(port).unwrap().drops.get(reason)
    }
}

/// Every IPv6 frame out must carry a valid TCP/UDP/ICMPv6 checksum, as etherparse computes it.
fn assert_valid6(frame: &[u8]) {
    let Ok(s) = SlicedPacket::from_ethernet(frame) else {
        return;
    };
    let Some(NetSlice::Ipv6(ip)) = &s.net else {
        return;
    };
    let h = ip.header().to_header();
    match &s.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv6(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum");
        }
        Some(TransportSlice::Udp(u)) => {
            let want = u.to_header().calc_checksum_ipv6(&h, u.payload()).unwrap();
            assert_eq!(u.checksum(), want, "UDP checksum");
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let want =
                Icmpv6Header::with_checksum(i.icmp_type(), h.source, h.destination, i.payload())
                    .unwrap();
            assert_eq!(i.checksum(), want.checksum, "ICMPv6 checksum");
        }
        _ => {}
    }
}

/// The one frame out, on `port`.
fn only(out: &[Packet], port: PortId) -> &[u8] {
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].port, port);
    &out[0].data
}

fn icmp_type(frame: &[u8]) -> Option<u8> {
    match classify(frame).ok()?.l4 {
        L4::Icmp { ty, .. } => Some(ty),
        _ => None,
    }
}

fn addrs(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
    match classify(frame).unwrap().l3 {
        L3::Ipv6(i) => (i.src, i.dst),
        l3 => panic!("not IPv6: {l3:?}"),
    }
}

#[test]
fn the_gateway_answers_neighbour_and_router_solicitations_and_pings() {
    let mut r = Rig::new();
    let ns = build::neighbor_solicitation(C1_MAC, c1(), gw());
    let out = r.send(C1, ns);
    let na = only(&out, C1);
    assert_eq!(icmp_type(na), Some(136));
    assert_eq!(addrs(na), (gw(), c1()));
    // Target link-layer option: the gateway's MAC.
    assert_eq!(&na[14 + 40 + 24 + 2..14 + 40 + 24 + 8], &GW_MAC.0);
    // Its link-local address is the gateway's too.
    let out = r.send(
        C1,
        build::neighbor_solicitation(C1_MAC, c1(), GW_MAC.link_local()),
    );
    assert_eq!(icmp_type(only(&out, C1)), Some(136));

    let out = r.send(C1, build::router_solicitation(C1_MAC, C1_MAC.link_local()));
    let ra = only(&out, C1);
    assert_eq!(icmp_type(ra), Some(134));
    assert_eq!(addrs(ra), (GW_MAC.link_local(), C1_MAC.link_local()));
    let c = classify(ra).unwrap();
    let body = &ra[c.l4_offset..c.ip_end];
    assert_eq!(
        u16::from_be_bytes([body[6], body[7]]),
        1800,
        "router lifetime"
    );
    // The prefix option: fd00:17::/64, on-link, not autonomous.
    let prefix = body.windows(2).position(|w| w == [3, 4]).unwrap();
    assert_eq!(body[prefix + 2], 64);
    assert_eq!(body[prefix + 3], 0x80);
    assert_eq!(&body[prefix + 16..prefix + 32], &v6("fd00:17::").octets());

    let ping = build::icmpv6_echo(C1_MAC, GW_MAC, c1(), gw(), true, 7, 1, b"hi");
    let out = r.send(C1, ping);
    let reply = only(&out, C1);
    assert_eq!(icmp_type(reply), Some(129));
    assert_eq!(addrs(reply), (gw(), c1()));
    assert_eq!(r.p.port_counters(C1).unwrap().local, 4);
    // A solicitation for a neighbour is the bridge's: flooded to c2, not answered.
    let out = r.send(C1, build::neighbor_solicitation(C1_MAC, c1(), c2()));
    assert_eq!(
        only(&out, C2),
        &build::neighbor_solicitation(C1_MAC, c1(), c2())[..]
    );
}

#[test]
fn nat66_masquerades_out_and_translates_back() {
    let mut r = Rig::new();
    let syn = build::tcp6(
        C1_MAC,
        GW_MAC,
        c1(),
        remote(),
        40000,
        443,
        1,
        0,
        tcp_flags::SYN,
        &[],
    );
    let out = r.send(C1, syn);
    let f = only(&out, UP).to_vec();
    assert_eq!(addrs(&f), (uplink6(), remote()));
    assert_eq!(&f[..6], &ROUTER.0);
    assert_eq!(&f[6..12], &uplink_mac().0);
    let c = classify(&f).unwrap();
    let L4::Tcp { src_port, .. } = c.l4 else {
        panic!()
    };
    assert_eq!(src_port, 40000, "the source port is kept when free");
    let L3::Ipv6(info) = c.l3 else { panic!() };
    assert_eq!(info.hop_limit, build::HOP_LIMIT - 1);

    let synack = build::tcp6(
        ROUTER,
        uplink_mac(),
        remote(),
        uplink6(),
        443,
        src_port,
        9,
        2,
        tcp_flags::SYN | tcp_flags::ACK,
        &[],
    );
    let out = r.send(UP, synack);
    let back = only(&out, C1);
    assert_eq!(addrs(back), (remote(), c1()));
    assert_eq!(
        &back[..6],
        &C1_MAC.0,
        "c1's MAC was gleaned from its packet"
    );
    assert!(matches!(
        classify(back).unwrap().l4,
        L4::Tcp {
            dst_port: 40000,
            ..
        }
    ));
    assert_eq!(r.p.conntrack6().len(), 1);

    // Unsolicited inbound, and a packet from the uplink claiming a container's source.
    let stray = build::udp6(ROUTER, uplink_mac(), remote(), uplink6(), 53, 5353, b"x");
    assert!(r.send(UP, stray).is_empty());
    assert_eq!(r.drops(UP, DropReason::Unsolicited), 1);
    let spoof = build::udp6(ROUTER, uplink_mac(), c2(), uplink6(), 53, 5353, b"x");
    assert!(r.send(UP, spoof).is_empty());
    assert_eq!(r.drops(UP, DropReason::SpoofedSource), 1);
}

#[test]
fn a_published_port_reaches_the_container_with_the_client_address_kept() {
    let mut r = Rig::new();
    let syn = build::tcp6(
        ROUTER,
        uplink_mac(),
        remote(),
        uplink6(),
        5555,
        8080,
        1,
        0,
        tcp_flags::SYN,
        &[],
    );
    // c2's MAC is unknown: the gateway solicits it and holds the packet.
    let out = r.send(UP, syn);
    assert_eq!(out.len(), 2, "flooded in the network: {out:?}");
    let ns = &out[1].data;
    assert_eq!(icmp_type(ns), Some(135));
    assert_eq!(addrs(ns), (gw(), v6("ff02::1:ff00:3")));
    assert_eq!(r.p.port_counters(UP).unwrap().queued, 1);
    let na = build::neighbor_advertisement(C2_MAC, GW_MAC, c2(), gw(), c2(), 0x60, C2_MAC);
    let out = r.send(C2, na);
    let f = only(&out, C2);
    assert_eq!(addrs(f), (remote(), c2()), "the client's address is kept");
    assert!(matches!(
        classify(f).unwrap().l4,
        L4::Tcp {
            dst_port: 80,
            src_port: 5555,
            ..
        }
    ));

    // Hairpin: c1 to the uplink address's published port reaches c2, from the uplink address.
    let syn = build::tcp6(
        C1_MAC,
        GW_MAC,
        c1(),
        uplink6(),
        41000,
        8080,
        1,
        0,
        tcp_flags::SYN,
        &[],
    );
    let out = r.send(C1, syn);
    let f = only(&out, C2);
    assert_eq!(addrs(f), (uplink6(), c2()));
    // A port nothing is published on is refused at once: port unreachable.
    let syn = build::tcp6(
        C1_MAC,
        GW_MAC,
        c1(),
        uplink6(),
        41001,
        9999,
        1,
        0,
        tcp_flags::SYN,
        &[],
    );
    let out = r.send(C1, syn);
    assert_eq!(icmp_type(only(&out, C1)), Some(1));
    assert_eq!(r.drops(C1, DropReason::UplinkPortClosed), 1);
}

#[test]
fn hop_limit_and_mtu_errors_and_icmpv6_errors_translated() {
    let mut r = Rig::new();
    let mut last_hop = build::udp6(C1_MAC, GW_MAC, c1(), remote(), 1000, 53, b"q");
    last_hop[14 + 7] = 1;
    let out = r.send(C1, last_hop);
    let te = only(&out, C1);
    assert_eq!(icmp_type(te), Some(3));
    assert_eq!(addrs(te), (gw(), c1()));
    assert_eq!(r.drops(C1, DropReason::TtlExceeded), 1);

    let big = build::udp6(C1_MAC, GW_MAC, c1(), remote(), 1000, 53, &[0; 1400]);
    let out = r.send(C1, big);
    let ptb = only(&out, C1);
    assert_eq!(icmp_type(ptb), Some(2));
    assert_eq!(&ptb[14 + 40 + 4..14 + 40 + 8], &1400u32.to_be_bytes());
    assert_eq!(r.drops(C1, DropReason::FragNeeded), 1);

    // A flow out, then the far side's port unreachable about it comes back translated.
    let q = build::udp6(C1_MAC, GW_MAC, c1(), remote(), 1000, 53, b"query");
    let out = r.send(C1, q);
    let sent = only(&out, UP).to_vec();
    let quoted = &sent[14..];
    let err = build::icmpv6(
        ROUTER,
        uplink_mac(),
        remote(),
        uplink6(),
        64,
        1,
        4,
        [0; 4],
        quoted,
    );
    let out = r.send(UP, err);
    let back = only(&out, C1);
    assert_eq!(addrs(back), (remote(), c1()));
    // The quoted packet is c1's as it sent it: source c1, port 1000.
    let inner = &back[14 + 40 + 8..];
    assert_eq!(&inner[8..24], &c1().octets());
    assert_eq!(u16::from_be_bytes([inner[40], inner[41]]), 1000);
    // An error quoting nothing we track goes nowhere.
    let other = build::udp6(C1_MAC, GW_MAC, c1(), remote(), 2000, 53, b"z");
    let err = build::icmpv6(
        ROUTER,
        uplink_mac(),
        remote(),
        uplink6(),
        64,
        1,
        4,
        [0; 4],
        &other[14..],
    );
    assert!(r.send(UP, err).is_empty());
    assert_eq!(r.drops(UP, DropReason::IcmpErrorNoFlow), 1);
}

#[test]
fn anti_spoofing_ra_guard_and_neighbour_advertisement_guard() {
    let mut r = Rig::new();
    let spoofed = build::udp6(C1_MAC, C2_MAC, c2(), v6("fd00:17::9"), 1, 2, b"x");
    assert!(r.send(C1, spoofed).is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedIpv6), 1);
    let rogue = build::router_advertisement(C1_MAC, C1_MAC.link_local());
    assert!(r.send(C1, rogue).is_empty());
    assert_eq!(r.drops(C1, DropReason::RaGuard), 1);
    let steal = build::neighbor_advertisement(C1_MAC, C2_MAC, c1(), c2(), c2(), 0x20, C1_MAC);
    assert!(r.send(C1, steal).is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedNd), 1);
    let wrong_ll = build::neighbor_advertisement(C1_MAC, C2_MAC, c1(), c2(), c1(), 0x20, C2_MAC);
    assert!(r.send(C1, wrong_ll).is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedNd), 2);
    // `::` only for duplicate address detection.
    let dad = build::neighbor_solicitation(C1_MAC, Ipv6Addr::UNSPECIFIED, c1());
    assert_eq!(r.send(C1, dad).len(), 1);
    let unspec = build::udp6(C1_MAC, C2_MAC, Ipv6Addr::UNSPECIFIED, c2(), 1, 2, b"x");
    assert!(r.send(C1, unspec).is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedIpv6), 2);
    // Its own addresses still work: c1 to c2 over the bridge, by global and link-local.
    let ok = build::icmpv6_echo(C1_MAC, C2_MAC, c1(), c2(), true, 1, 1, b"");
    assert_eq!(only(&r.send(C1, ok), C2).len(), 14 + 40 + 8);
    let ll = build::icmpv6_echo(
        C1_MAC,
        C2_MAC,
        C1_MAC.link_local(),
        C2_MAC.link_local(),
        true,
        1,
        1,
        b"",
    );
    assert_eq!(r.send(C1, ll).len(), 1);
}

#[test]
fn the_uplink_next_hop_is_resolved_by_neighbour_discovery() {
    let text = topo().replace(&format!("next_hop_mac = \"{ROUTER}\"\n"), "");
    let mut r = Rig::with(&text);
    let syn = build::tcp6(
        C1_MAC,
        GW_MAC,
        c1(),
        remote(),
        40000,
        443,
        1,
        0,
        tcp_flags::SYN,
        &[],
    );
    let out = r.send(C1, syn);
    let ns = only(&out, UP);
    assert_eq!(icmp_type(ns), Some(135));
    assert_eq!(addrs(ns), (uplink6(), v6("ff02::1:ff00:1")));
    let router = v6("2001:db8::1");
    let na = build::neighbor_advertisement(
        ROUTER,
        uplink_mac(),
        router,
        uplink6(),
        router,
        0xe0,
        ROUTER,
    );
    let out = r.send(UP, na);
    let f = only(&out, UP);
    assert_eq!(&f[..6], &ROUTER.0);
    assert_eq!(addrs(f), (uplink6(), remote()));
    // The router asks for our address: answered, and it is learned from the solicitation.
    let ask = build::neighbor_solicitation(ROUTER, router, uplink6());
    let out = r.send(UP, ask);
    let na = only(&out, UP);
    assert_eq!(icmp_type(na), Some(136));
    assert_eq!(&na[..6], &ROUTER.0);
}

/// The fragment of the IPv6 `frame`'s payload at `offset..offset + len` (a multiple of 8 unless
/// last), behind a fragment header with `ident`.
fn fragment6(frame: &[u8], offset: usize, len: usize, more: bool, ident: u32) -> Vec<u8> {
    let payload = &frame[14 + 40..];
    let part = &payload[offset..(offset + len).min(payload.len())];
    let mut f = frame[..14 + 40].to_vec();
    let nh = f[14 + 6];
    f[14 + 6] = 44;
    let word = ((offset / 8) as u16) << 3 | u16::from(more);
    f.extend_from_slice(&[nh, 0]);
    f.extend_from_slice(&word.to_be_bytes());
    f.extend_from_slice(&ident.to_be_bytes());
    f.extend_from_slice(part);
    let plen = (8 + part.len()) as u16;
    f[14 + 4..14 + 6].copy_from_slice(&plen.to_be_bytes());
    f
}

#[test]
fn later_fragments_follow_their_first_fragment_through_nat66() {
    let mut r = Rig::new();
    let whole = build::udp6(C1_MAC, GW_MAC, c1(), remote(), 40000, 53, &[7; 40]);
    let first = fragment6(&whole, 0, 24, true, 99);
    let second = fragment6(&whole, 24, 24, false, 99);
    // A later fragment of a datagram never seen goes nowhere.
    let stray = fragment6(&whole, 24, 24, false, 100);
    assert!(r.send(C1, stray).is_empty());
    assert_eq!(r.drops(C1, DropReason::Unsupported), 1);
    let out = r.send(C1, first);
    let f1 = only(&out, UP).to_vec();
    assert_eq!(addrs(&f1), (uplink6(), remote()));
    let out = r.send(C1, second);
    let f2 = only(&out, UP);
    assert_eq!(addrs(f2), (uplink6(), remote()));
    // Reassembled, the datagram is the original one translated: its UDP checksum verifies.
    let mut payload = f1[14 + 48..].to_vec();
    payload.extend_from_slice(&f2[14 + 48..]);
    assert_eq!(
        packet::checksum::l4_checksum_v6(uplink6(), remote(), 17, &payload),
        0
    );
}

#[test]
fn a_tso6_super_frame_is_translated_and_segmented_for_a_port_without_offloads() {
    use packet::offload::{Checksum, Gso, Offload};
    let mut r = Rig::new();
    // Open the flow (the super-frame is an ACK segment of an established-enough connection).
    let syn = build::tcp6(
        C1_MAC,
        GW_MAC,
        c1(),
        remote(),
        40000,
        443,
        1,
        0,
        tcp_flags::SYN,
        &[],
    );
    only(&r.send(C1, syn), UP);
    let sa = tcp_flags::SYN | tcp_flags::ACK;
    let back = build::tcp6(
        ROUTER,
        uplink_mac(),
        remote(),
        uplink6(),
        443,
        40000,
        9,
        2,
        sa,
        &[],
    );
    only(&r.send(UP, back), C1);
    // 3,000 payload bytes as the kernel hands them to a packet socket: one frame, its TCP
    // checksum field holding the pseudo-header sum, to be cut at 1,000 bytes.
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let mut sf = build::tcp6(
        C1_MAC,
        GW_MAC,
        c1(),
        remote(),
        40000,
        443,
        2,
        10,
        tcp_flags::ACK,
        &payload,
    );
    let tcp_len = (sf.len() - 54) as u32;
    let pseudo = packet::checksum::fold(packet::checksum::pseudo_header_sum_v6(
        c1(),
        remote(),
        6,
        tcp_len,
    ));
    sf[54 + 16..54 + 18].copy_from_slice(&pseudo.to_be_bytes());
    let offload = Offload {
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
    r.now += 1_000_000;
    let mut input = vec![Packet::with_offload(C1, sf, offload)];
    let mut out = Vec::new();
    r.p.process(r.now, &mut input, &mut out);
    assert_eq!(out.len(), 3, "{out:?}");
    let mut seqs = Vec::new();
    for seg in &out {
        assert_eq!(seg.port, UP);
        assert_valid6(&seg.data);
        assert_eq!(addrs(&seg.data), (uplink6(), remote()));
        let L4::Tcp {
            seq, payload_len, ..
        } = classify(&seg.data).unwrap().l4
        else {
            panic!()
        };
        seqs.push((seq, payload_len));
    }
    assert_eq!(seqs, [(2, 1000), (1002, 1000), (2002, 1000)]);
}

#[test]
fn routed_mode_keeps_the_container_address_and_admits_only_replies() {
    let text = topo().replace(
        "next_hop = \"2001:db8::1\"\n",
        "next_hop = \"2001:db8::1\"\nnat = false\n",
    );
    let mut r = Rig::with(&text);
    let syn = build::tcp6(
        C1_MAC,
        GW_MAC,
        c1(),
        remote(),
        40000,
        443,
        1,
        0,
        tcp_flags::SYN,
        &[],
    );
    let out = r.send(C1, syn);
    assert_eq!(
        addrs(only(&out, UP)),
        (c1(), remote()),
        "no NAT66: the source is c1's"
    );
    let sa = tcp_flags::SYN | tcp_flags::ACK;
    let back = build::tcp6(
        ROUTER,
        uplink_mac(),
        remote(),
        c1(),
        443,
        40000,
        9,
        2,
        sa,
        &[],
    );
    let out = r.send(UP, back);
    assert_eq!(addrs(only(&out, C1)), (remote(), c1()));
    // A connection the container did not open is not let in, routed or not.
    let probe = build::tcp6(
        ROUTER,
        uplink_mac(),
        remote(),
        c2(),
        5555,
        22,
        1,
        0,
        tcp_flags::SYN,
        &[],
    );
    assert!(r.send(UP, probe).is_empty());
    assert_eq!(r.drops(UP, DropReason::Unsolicited), 1);
}

#[test]
fn dns_over_ipv6_answers_names_and_forwards_the_rest_to_an_ipv6_resolver() {
    use switch::dns_gateway::DnsTable;
    let resolver = v6("2001:db8:53::53");
    let text = topo().replace(
        "[[publish]]",
        &format!("[dns]\nupstream = [\"198.51.100.53\", \"{resolver}\"]\n\n[[publish]]"),
    );
    let mut r = Rig::with(&text);
    let bridge = r.p.topology().network_by_name("bridge").unwrap();
    r.p.set_dns_table(
        bridge,
        Some(DnsTable::new([(
            "c2".to_string(),
            std::net::IpAddr::V6(c2()),
        )])),
    );
    // The RA names the gateway as DNS server once the network serves DNS (RDNSS, type 25).
    let out = r.send(C1, build::router_solicitation(C1_MAC, C1_MAC.link_local()));
    let ra = only(&out, C1);
    let rdnss = ra
        .windows(2)
        .position(|w| w == [25, 3])
        .expect("an RDNSS option");
    assert_eq!(&ra[rdnss + 8..rdnss + 24], &gw().octets());

    let q = build::udp6(
        C1_MAC,
        GW_MAC,
        c1(),
        gw(),
        5353,
        53,
        &build::dns_query(7, "c2", 28),
    );
    let out = r.send(C1, q);
    let answer = only(&out, C1);
    assert_eq!(addrs(answer), (gw(), c1()));
    assert!(matches!(
        classify(answer).unwrap().l4,
        L4::Udp {
            src_port: 53,
            dst_port: 5353
        }
    ));
    assert_eq!(
        &answer[answer.len() - 16..],
        &c2().octets(),
        "the AAAA record"
    );

    // Another name goes to the IPv6 resolver through NAT66, and its answer comes back from
    // the gateway's address.
    let q = build::udp6(
        C1_MAC,
        GW_MAC,
        c1(),
        gw(),
        40001,
        53,
        &build::dns_query(8, "example.com", 28),
    );
    let out = r.send(C1, q);
    let sent = only(&out, UP);
    assert_eq!(addrs(sent), (uplink6(), resolver));
    let L4::Udp { src_port, .. } = classify(sent).unwrap().l4 else {
        panic!()
    };
    let reply = build::udp6(
        ROUTER,
        uplink_mac(),
        resolver,
        uplink6(),
        53,
        src_port,
        b"answer",
    );
    let out = r.send(UP, reply);
    let back = only(&out, C1);
    assert_eq!(addrs(back), (gw(), c1()));
    assert!(matches!(
        classify(back).unwrap().l4,
        L4::Udp {
            src_port: 53,
            dst_port: 40001
        }
    ));
}

#[test]
fn a_neighbour_reached_through_the_gateway_is_routed_back_without_nat() {
    let mut r = Rig::new();
    // c2 talks first, so the gateway knows its MAC.
    let hello = build::icmpv6_echo(C2_MAC, GW_MAC, c2(), gw(), true, 1, 1, b"");
    only(&r.send(C2, hello), C2);
    let via_gw = build::udp6(C1_MAC, GW_MAC, c1(), c2(), 1000, 2000, b"x");
    let out = r.send(C1, via_gw);
    let f = only(&out, C2);
    assert_eq!(addrs(f), (c1(), c2()), "no NAT inside a network");
    assert_eq!(&f[..6], &C2_MAC.0);
    assert_eq!(f[14 + 7], build::HOP_LIMIT - 1);
    // Without icc the gateway does not carry it either.
    let text = topo().replace(
        "subnet6 = \"fd00:17::/64\"\n",
        "subnet6 = \"fd00:17::/64\"\nicc = false\n",
    );
    let mut r = Rig::with(&text);
    let via_gw = build::udp6(C1_MAC, GW_MAC, c1(), c2(), 1000, 2000, b"x");
    assert!(r.send(C1, via_gw).is_empty());
    assert_eq!(r.drops(C1, DropReason::IccBlocked), 1);
}
