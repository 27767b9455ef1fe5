//! The gateway and NAT, end to end through the pipeline: frames in, frames out, every rewritten
//! frame checked by etherparse (an implementation independent of the code under test).

#![allow(clippy::unwrap_used, clippy::too_many_arguments)] // Test helpers: panicking is how a test fails.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use packet::{MacAddr, tcp_flags};
use std::net::Ipv4Addr;
use switch::{Config, DropReason, Packet, Pipeline, PortId};
use testkit::frames as build;
use testkit::topology;

/// bridge (c1, c2), backend with icc = false (b1, b2), internal vault (v1), the static uplink on
/// `up`, and tcp 8080 published to 172.17.0.3:80.
fn topo() -> String {
    topology::three_networks()
        .ports("bridge", &["c1", "c2"])
        .ports("backend", &["b1", "b2"])
        .port("v1", "vault")
        .uplink_port("up")
        .uplink_static("up")
        .publish("tcp", 8080, "172.17.0.3", 80)
        .build()
}

const C1: PortId = PortId(0);
const C2: PortId = PortId(1);
const B1: PortId = PortId(2);
const B2: PortId = PortId(3);
const V1: PortId = PortId(4);
const UP: PortId = PortId(5);

const SEC: u64 = 1_000_000_000;

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

const ROUTER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const UPLINK_IP: [u8; 4] = [203, 0, 113, 2];

fn gw_mac(net: u8) -> MacAddr {
    MacAddr([0x02, 0x42, 172, net, 0, 1])
}

fn uplink_mac() -> MacAddr {
    MacAddr::docker(UPLINK_IP.into())
}

struct Rig {
    p: Pipeline,
    now: u64,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(&topo())
    }

    fn with(topo: &str) -> Rig {
        Rig {
            p: Pipeline::new(&Config::from_toml(topo).unwrap()).unwrap(),
            now: 1_000 * SEC,
        }
    }

    fn send(&mut self, port: PortId, data: Vec<u8>) -> Vec<Packet> {
        self.now += 1_000_000;
        let mut input = vec![Packet::new(port, data)];
        let mut out = Vec::new();
        self.p.process(self.now, &mut input, &mut out);
        for pkt in &out {
            assert_valid(&pkt.data);
        }
        self.check_counters();
        out
    }

    fn check_counters(&self) {
        for i in 0..6 {
            let c = self.p.port_counters(PortId(i)).unwrap();
            assert_eq!(
                c.rx_frames,
                c.forwarded + c.local + c.dropped() + c.queued,
                "port {i}: {c:?}"
            );
        }
    }

    fn drops(&self, port: PortId, reason: DropReason) -> u64 {
        self.p.port_counters(port).unwrap().drops.get(reason)
    }
}

/// Every IPv4 frame the switch emits must carry valid IP and L4 checksums, as an independent
/// decoder computes them.
fn assert_valid(frame: &[u8]) {
    let Ok(s) = SlicedPacket::from_ethernet(frame) else {
        return;
    };
    let Some(NetSlice::Ipv4(ipv4)) = &s.net else {
        return;
    };
    let h = ipv4.header().to_header();
    // As a receiver checks it (RFC 1071): 0x0000 and 0xffff both encode the zero an
    // incremental update may produce for a header that sums to ones' complement zero.
    assert_eq!(
        packet::checksum::internet_checksum(ipv4.header().slice()),
        0,
        "IPv4 header checksum {:#06x} (from scratch: {:#06x})",
        h.header_checksum,
        h.calc_header_checksum()
    );
    if ipv4.is_payload_fragmented() {
        return;
    }
    let payload = ipv4.payload().payload;
    match &s.transport {
        // Verified as a receiver does (either encoding of zero is valid, see above); the
        // from-scratch value is in the message.
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            let (src, dst) = (h.source.into(), h.destination.into());
            assert_eq!(
                packet::checksum::l4_checksum(src, dst, 6, payload),
                0,
                "TCP checksum {:#06x} (from scratch: {want:#06x})",
                t.checksum()
            );
        }
        Some(TransportSlice::Udp(u)) if u.checksum() != 0 => {
            let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
            let (src, dst) = (h.source.into(), h.destination.into());
            assert_eq!(
                packet::checksum::l4_checksum(src, dst, 17, payload),
                0,
                "UDP checksum {:#06x} (from scratch: {want:#06x})",
                u.checksum()
            );
        }
        Some(TransportSlice::Icmpv4(_)) => {
            assert_eq!(
                packet::checksum::internet_checksum(payload),
                0,
                "ICMP checksum"
            );
        }
        _ => {}
    }
}

fn fields(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16, u8) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ipv4)) = &s.net else {
        panic!("not IPv4")
    };
    let h = ipv4.header();
    let (sp, dp) = match &s.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        Some(TransportSlice::Icmpv4(i)) => {
            let b = i.slice();
            (u16::from_be_bytes([b[4], b[5]]), 0)
        }
        _ => (0, 0),
    };
    (h.source_addr(), h.destination_addr(), sp, dp, h.ttl())
}

fn tcp(
    from: Ipv4Addr,
    to_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    build::tcp(
        MacAddr::docker(from),
        to_mac,
        src,
        dst,
        sp,
        dp,
        seq,
        ack,
        flags,
        b"",
    )
}

#[test]
fn gateway_answers_arp_and_ping() {
    let mut r = Rig::new();
    let c1 = ip(172, 17, 0, 2);
    let out = r.send(
        C1,
        build::arp_request(MacAddr::docker(c1), c1, ip(172, 17, 0, 1)),
    );
    assert_eq!(out.len(), 1, "answered, not flooded");
    assert_eq!(out[0].port, C1);
    let arp = &out[0].data;
    assert_eq!(&arp[20..22], &[0, 2], "ARP reply");
    assert_eq!(&arp[22..28], &gw_mac(17).0);
    let out = r.send(
        C1,
        build::icmp_echo(
            MacAddr::docker(c1),
            gw_mac(17),
            c1,
            ip(172, 17, 0, 1),
            true,
            77,
            1,
            b"hi",
        ),
    );
    assert_eq!(out.len(), 1);
    let (s, d, id, _, _) = fields(&out[0].data);
    assert_eq!((s, d, id, out[0].data[34]), (ip(172, 17, 0, 1), c1, 77, 0));
}

#[test]
fn masquerade_tcp_round_trip_and_states() {
    let mut r = Rig::new();
    let c1 = ip(172, 17, 0, 2);
    let web = ip(198, 51, 100, 10);
    let out = r.send(
        C1,
        tcp(c1, gw_mac(17), c1, web, 40000, 80, 100, 0, tcp_flags::SYN),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, UP);
    assert_eq!(&out[0].data[0..6], &ROUTER.0, "to the static next hop");
    assert_eq!(&out[0].data[6..12], &uplink_mac().0);
    let (s, d, sp, dp, ttl) = fields(&out[0].data);
    assert_eq!((s, d, dp, ttl), (UPLINK_IP.into(), web, 80, 63));
    assert_eq!(sp, 40000, "the client's port is kept when free");
    // The reply comes back to the container.
    let back = r.send(
        UP,
        tcp(
            web,
            uplink_mac(),
            web,
            UPLINK_IP.into(),
            80,
            sp,
            5000,
            101,
            tcp_flags::SYN | tcp_flags::ACK,
        ),
    );
    // The container's MAC was gleaned from its SYN, so the reply goes straight out, no ARP.
    assert_eq!(back.len(), 1);
    let reply = &back[0];
    assert_eq!(reply.port, C1);
    assert_eq!(
        &reply.data[0..12],
        &[MacAddr::docker(c1).0, gw_mac(17).0].concat()[..]
    );
    let (s, d, sp2, dp2, _) = fields(&reply.data);
    assert_eq!((s, d, sp2, dp2), (web, c1, 80, 40000));
    // Handshake completes; entry is established and assured.
    r.send(
        C1,
        tcp(
            c1,
            gw_mac(17),
            c1,
            web,
            40000,
            80,
            101,
            5001,
            tcp_flags::ACK,
        ),
    );
    let e = r.p.conntrack().iter().next().unwrap().1;
    assert!(e.assured);
    assert_eq!(format!("{:?}", e.state), "Tcp(Established)");
    // A lone ACK from outside with no entry is invalid and counted.
    let stray = r.send(
        UP,
        tcp(
            web,
            uplink_mac(),
            web,
            UPLINK_IP.into(),
            81,
            999,
            1,
            1,
            tcp_flags::ACK,
        ),
    );
    assert!(stray.is_empty());
    assert_eq!(r.drops(UP, DropReason::CtInvalid), 1);
    // A SYN to a port nobody published is unsolicited.
    let probe = r.send(
        UP,
        tcp(
            web,
            uplink_mac(),
            web,
            UPLINK_IP.into(),
            81,
            999,
            1,
            0,
            tcp_flags::SYN,
        ),
    );
    assert!(probe.is_empty());
    assert_eq!(r.drops(UP, DropReason::Unsolicited), 1);
}

#[test]
fn published_port_keeps_client_address_and_arps_for_the_container() {
    let mut r = Rig::new();
    let client = ip(198, 51, 100, 20);
    let c2 = ip(172, 17, 0, 3);
    let out = r.send(
        UP,
        tcp(
            client,
            uplink_mac(),
            client,
            UPLINK_IP.into(),
            5555,
            8080,
            1,
            0,
            tcp_flags::SYN,
        ),
    );
    // The container never spoke: the gateway ARPs for it on its network (flooded) and holds the SYN.
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.iter()
            .all(|p| p.data[12..14] == [8, 6] && (p.port == C1 || p.port == C2))
    );
    assert_eq!(r.p.port_counters(UP).unwrap().queued, 1);
    let out = r.send(
        C2,
        build::arp_reply(MacAddr::docker(c2), c2, gw_mac(17), ip(172, 17, 0, 1)),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, C2);
    let (s, d, sp, dp, _) = fields(&out[0].data);
    assert_eq!(
        (s, d, sp, dp),
        (client, c2, 5555, 80),
        "DNAT keeps the client's address"
    );
    // The container's answer leaves from the published address and port.
    let out = r.send(
        C2,
        tcp(
            c2,
            gw_mac(17),
            c2,
            client,
            80,
            5555,
            9,
            2,
            tcp_flags::SYN | tcp_flags::ACK,
        ),
    );
    assert_eq!(out[0].port, UP);
    let (s, d, sp, dp, _) = fields(&out[0].data);
    assert_eq!((s, d, sp, dp), (UPLINK_IP.into(), client, 8080, 5555));
}

#[test]
fn hairpin_through_the_published_address() {
    let mut r = Rig::new();
    let (c1, c2) = (ip(172, 17, 0, 2), ip(172, 17, 0, 3));
    r.send(
        C2,
        build::arp_request(MacAddr::docker(c2), c2, ip(172, 17, 0, 1)),
    );
    let out = r.send(
        C1,
        tcp(
            c1,
            gw_mac(17),
            c1,
            UPLINK_IP.into(),
            41000,
            8080,
            1,
            0,
            tcp_flags::SYN,
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, C2);
    let (s, d, sp, dp, _) = fields(&out[0].data);
    assert_eq!(
        (s, d, dp),
        (UPLINK_IP.into(), c2, 80),
        "source masqueraded so the reply returns via us"
    );
    let out = r.send(
        C2,
        tcp(
            c2,
            gw_mac(17),
            c2,
            UPLINK_IP.into(),
            80,
            sp,
            7,
            2,
            tcp_flags::SYN | tcp_flags::ACK,
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, C1);
    let (s, d, sp, dp, _) = fields(&out[0].data);
    assert_eq!((s, d, sp, dp), (UPLINK_IP.into(), c1, 8080, 41000));
}

/// The switch owns the uplink address: a container's connection to a port nothing is
/// published on is refused at once (a RST, an ICMP port unreachable) rather than left to hang.
#[test]
fn a_closed_port_of_the_uplink_address_is_refused() {
    let mut r = Rig::new();
    let c1 = ip(172, 17, 0, 2);
    let up: Ipv4Addr = UPLINK_IP.into();
    let out = r.send(
        C1,
        tcp(c1, gw_mac(17), c1, up, 41000, 9999, 1000, 0, tcp_flags::SYN),
    );
    assert_eq!(out.len(), 1, "one RST back");
    assert_eq!(out[0].port, C1);
    assert_eq!(&out[0].data[0..6], &MacAddr::docker(c1).0);
    assert_eq!(&out[0].data[6..12], &gw_mac(17).0);
    let (s, d, sp, dp, _) = fields(&out[0].data);
    assert_eq!((s, d, sp, dp), (up, c1, 9999, 41000));
    let t = SlicedPacket::from_ethernet(&out[0].data).unwrap();
    let Some(TransportSlice::Tcp(t)) = t.transport else {
        panic!("not TCP")
    };
    assert!(t.rst() && t.ack() && !t.syn());
    assert_eq!(t.acknowledgment_number(), 1001, "ACKs the SYN");
    assert_eq!(r.drops(C1, DropReason::UplinkPortClosed), 1);

    // A RST to it is dropped without an answer.
    let out = r.send(
        C1,
        tcp(c1, gw_mac(17), c1, up, 41000, 9999, 1000, 0, tcp_flags::RST),
    );
    assert!(out.is_empty());

    let out = r.send(
        C1,
        build::udp(
            MacAddr::docker(c1),
            gw_mac(17),
            c1,
            up,
            5353,
            9999,
            b"hello?",
        ),
    );
    assert_eq!(out.len(), 1, "one ICMP error back");
    let (s, d, _, _, _) = fields(&out[0].data);
    assert_eq!((s, d), (up, c1));
    let icmp = &out[0].data[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 3), "port unreachable");
    assert_eq!(
        &icmp[8..28],
        &build::udp(
            MacAddr::docker(c1),
            gw_mac(17),
            c1,
            up,
            5353,
            9999,
            b"hello?"
        )[14..34],
        "quotes the datagram"
    );
    assert_eq!(r.p.conntrack().len(), 0, "nothing tracked");
}

#[test]
fn udp_to_the_gateway_without_dns_is_refused() {
    // The default bridge serves no DNS (as docker0): even port 53 is closed there.
    let mut r = Rig::new();
    let c1 = ip(172, 17, 0, 2);
    let gw = ip(172, 17, 0, 1);
    let q = build::udp(MacAddr::docker(c1), gw_mac(17), c1, gw, 5353, 53, b"query");
    let out = r.send(C1, q.clone());
    assert_eq!(out.len(), 1, "one ICMP error back");
    let (s, d, _, _, _) = fields(&out[0].data);
    assert_eq!((s, d), (gw, c1));
    let icmp = &out[0].data[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 3), "port unreachable");
    assert_eq!(&icmp[8..28], &q[14..34], "quotes the datagram");
    assert_eq!(r.drops(C1, DropReason::GatewayUnsupported), 1);
}

#[test]
fn icmp_port_unreachable_is_translated_inside_and_out() {
    let mut r = Rig::new();
    let c1 = ip(172, 17, 0, 2);
    let dns = ip(198, 51, 100, 53);
    let out = r.send(
        C1,
        build::udp(MacAddr::docker(c1), gw_mac(17), c1, dns, 5353, 53, b"query"),
    );
    let sent = out[0].data.clone();
    let (_, _, mapped, _, _) = fields(&sent);
    // The far host quotes the packet as it saw it (after NAT and TTL decrement).
    let err = build::icmp_error(
        ROUTER,
        uplink_mac(),
        dns,
        UPLINK_IP.into(),
        3,
        3,
        [0; 4],
        &sent[14..42],
    );
    let back = r.send(UP, err);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].port, C1);
    let f = &back[0].data;
    let (s, d, _, _, _) = fields(f);
    assert_eq!((s, d), (dns, c1));
    // Inner header: source back to the container's address and port.
    assert_eq!(&f[42 + 12..42 + 16], &c1.octets());
    assert_eq!(u16::from_be_bytes([f[62], f[63]]), 5353);
    assert_eq!(
        packet::checksum::internet_checksum(&f[42..62]),
        0,
        "inner IPv4 checksum"
    );
    let _ = mapped;
    // An error quoting a flow that does not exist is invalid.
    let mut bogus = sent.clone();
    bogus[36..38].copy_from_slice(&1u16.to_be_bytes());
    let back = r.send(
        UP,
        build::icmp_error(
            ROUTER,
            uplink_mac(),
            dns,
            UPLINK_IP.into(),
            3,
            3,
            [0; 4],
            &bogus[14..42],
        ),
    );
    assert!(back.is_empty());
    assert_eq!(r.drops(UP, DropReason::IcmpErrorNoFlow), 1);
}

#[test]
fn ttl_expiry_and_fragmentation_needed() {
    let mut r = Rig::new();
    let c1 = ip(172, 17, 0, 2);
    let mut f = build::udp(
        MacAddr::docker(c1),
        gw_mac(17),
        c1,
        ip(198, 51, 100, 1),
        1,
        2,
        b"x",
    );
    build::set_ttl(&mut f, 1);
    let out = r.send(C1, f.clone());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, C1);
    assert_eq!(out[0].data[34], 11, "time exceeded");
    assert_eq!(
        &out[0].data[42..62],
        &f[14..34],
        "quotes the packet as received"
    );
    assert_eq!(r.drops(C1, DropReason::TtlExceeded), 1);
    assert!(
        r.p.conntrack().is_empty(),
        "nothing tracked for a packet that died"
    );
    let mut big = build::udp(
        MacAddr::docker(c1),
        gw_mac(17),
        c1,
        ip(198, 51, 100, 1),
        1,
        2,
        &[0u8; 1450],
    );
    build::set_dont_fragment(&mut big);
    let r2 = Rig::with(&topo().replace(
        "next_hop_mac = \"02:00:00:00:00:fe\"",
        "next_hop_mac = \"02:00:00:00:00:fe\"\nmtu = 1400",
    ));
    let mut r2 = r2;
    let out = r2.send(C1, big);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].data[34], out[0].data[35]), (3, 4));
    assert_eq!(
        u16::from_be_bytes([out[0].data[40], out[0].data[41]]),
        1400,
        "next-hop MTU"
    );
}

#[test]
fn isolation_icc_internal_and_between_networks() {
    let mut r = Rig::new();
    let (b1, b2) = (ip(172, 18, 0, 2), ip(172, 18, 0, 3));
    // icc = false: b1 cannot reach b2, even by broadcast ARP, but reaches the gateway and out.
    let out = r.send(B1, build::arp_request(MacAddr::docker(b1), b1, b2));
    assert!(out.is_empty());
    assert_eq!(r.drops(B1, DropReason::IccBlocked), 1);
    let out = r.send(
        B2,
        build::udp(
            MacAddr::docker(b2),
            MacAddr::docker(b1),
            b2,
            b1,
            1,
            2,
            b"psst",
        ),
    );
    assert!(out.is_empty());
    let out = r.send(
        B1,
        build::udp(
            MacAddr::docker(b1),
            gw_mac(18),
            b1,
            ip(198, 51, 100, 1),
            1,
            2,
            b"out",
        ),
    );
    assert_eq!(out[0].port, UP);
    // Through the gateway to another network: refused.
    let out = r.send(
        B1,
        build::udp(
            MacAddr::docker(b1),
            gw_mac(18),
            b1,
            ip(172, 17, 0, 2),
            1,
            2,
            b"x",
        ),
    );
    assert!(out.is_empty());
    assert_eq!(r.drops(B1, DropReason::InterNetwork), 1);
    // Internal network: nothing leaves.
    let v1 = ip(172, 19, 0, 2);
    let out = r.send(
        V1,
        build::udp(
            MacAddr::docker(v1),
            gw_mac(19),
            v1,
            ip(198, 51, 100, 1),
            1,
            2,
            b"x",
        ),
    );
    assert!(out.is_empty());
    assert_eq!(r.drops(V1, DropReason::InternalNetwork), 1);
    // Spoofed source from a container, and a container address arriving on the uplink.
    let out = r.send(
        C1,
        build::udp(
            MacAddr::docker(b1),
            gw_mac(17),
            b1,
            ip(198, 51, 100, 1),
            1,
            2,
            b"x",
        ),
    );
    assert!(out.is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedSource), 1);
    let out = r.send(
        UP,
        build::udp(
            ROUTER,
            uplink_mac(),
            ip(172, 17, 0, 2),
            UPLINK_IP.into(),
            1,
            2,
            b"x",
        ),
    );
    assert!(out.is_empty());
    assert_eq!(r.drops(UP, DropReason::SpoofedSource), 1);
}

#[test]
fn same_icmp_id_from_three_hosts_gets_distinct_ids() {
    let mut r = Rig::new();
    let far = ip(198, 51, 100, 7);
    let mut ids = Vec::new();
    for host in 2..5u8 {
        let c = ip(172, 17, 0, host);
        let out = r.send(
            C1,
            build::icmp_echo(MacAddr::docker(c), gw_mac(17), c, far, true, 42, 1, b"p"),
        );
        assert_eq!(out.len(), 1);
        ids.push(fields(&out[0].data).2);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    // Each reply returns to its own host.
    for (i, id) in ids.iter().enumerate() {
        let back = r.send(
            UP,
            build::icmp_echo(
                ROUTER,
                uplink_mac(),
                far,
                UPLINK_IP.into(),
                false,
                *id,
                1,
                b"p",
            ),
        );
        assert_eq!(back.len(), 1, "reply {i}");
        let (_, d, rid, _, _) = fields(&back[0].data);
        assert_eq!(rid, 42);
        assert!(d.octets()[3] >= 2 && d.octets()[3] <= 4);
    }
}

#[test]
fn port_exhaustion_and_table_full_are_counted_drops() {
    let topo = topo().replace("[[publish]]", "[nat]\nport_first = 50000\nport_last = 50001\n\n[conntrack]\nmax_entries = 3\n\n[[publish]]");
    let mut r = Rig::with(&topo);
    let web = ip(198, 51, 100, 10);
    for (i, host) in [2u8, 3, 4].iter().enumerate() {
        let c = ip(172, 17, 0, *host);
        let out = r.send(
            C1,
            tcp(c, gw_mac(17), c, web, 1234, 80, 1, 0, tcp_flags::SYN),
        );
        if i < 2 {
            assert_eq!(out.len(), 1, "host {host}");
        } else {
            assert!(out.is_empty(), "only two ports for one destination");
        }
    }
    assert_eq!(r.drops(C1, DropReason::PortsExhausted), 1);
    // Another destination has its own two ports; the table (3 entries) fills with assured flows.
    let other = ip(198, 51, 100, 11);
    let c = ip(172, 17, 0, 2);
    let out = r.send(
        C1,
        build::udp(MacAddr::docker(c), gw_mac(17), c, other, 1, 53, b"q"),
    );
    assert_eq!(out.len(), 1, "third entry fits");
    assert_eq!(r.p.conntrack().len(), 3);
    let out = r.send(
        C1,
        build::udp(MacAddr::docker(c), gw_mac(17), c, other, 2, 53, b"q"),
    );
    assert_eq!(
        out.len(),
        1,
        "an unassured entry was early-dropped to make room"
    );
    assert_eq!(r.p.conntrack().counters().early_dropped, 1);
}

/// Splits an untagged IPv4 frame into fragments of at most `chunk` payload bytes (a multiple
/// of 8), as a sending host would.
fn fragment(frame: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let payload = &frame[14 + ihl..];
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + chunk).min(payload.len());
        let mut f = frame[..14 + ihl].to_vec();
        f.extend_from_slice(&payload[off..end]);
        let total = (ihl + end - off) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let more = if end < payload.len() { 0x2000 } else { 0 };
        f[20..22].copy_from_slice(&(more | (off / 8) as u16).to_be_bytes());
        f[24] = 0;
        f[25] = 0;
        let c = packet::checksum::internet_checksum(&f[14..14 + ihl]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        out.push(f);
        off = end;
    }
    out
}

#[test]
fn fragmented_udp_goes_through_snat_whole() {
    let mut r = Rig::new();
    let c1 = ip(172, 17, 0, 2);
    let far = ip(198, 51, 100, 9);
    let mut dgram = build::udp(
        MacAddr::docker(c1),
        gw_mac(17),
        c1,
        far,
        7000,
        9000,
        &[0x5a; 4000],
    );
    dgram[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
    let frags = fragment(&dgram, 1480);
    assert_eq!(frags.len(), 3);
    // A later fragment before its first one cannot be translated: dropped and counted.
    assert!(r.send(C1, frags[2].clone()).is_empty());
    assert_eq!(r.drops(C1, DropReason::Unsupported), 1);
    let mut out = Vec::new();
    for f in &frags {
        let o = r.send(C1, f.clone());
        assert_eq!(o.len(), 1);
        out.push(o[0].data.clone());
    }
    for (i, f) in out.iter().enumerate() {
        assert_eq!(&f[26..30], &UPLINK_IP, "fragment {i} source");
        assert_eq!(&f[30..34], &far.octets());
        assert_eq!(&f[18..20], &[0x12, 0x34], "identification kept");
        assert_eq!(packet::checksum::internet_checksum(&f[14..34]), 0);
        if i > 0 {
            assert_eq!(
                &f[34..],
                &frags[i][34..],
                "later fragments' payload untouched"
            );
        }
    }
    // Reassembled, the datagram's UDP checksum is valid for the translated addresses.
    let mut whole = out[0][..34].to_vec();
    for f in &out {
        whole.extend_from_slice(&f[34..]);
    }
    let total = (whole.len() - 14) as u16;
    whole[16..18].copy_from_slice(&total.to_be_bytes());
    let udp = &whole[34..];
    assert_eq!(
        packet::checksum::l4_checksum(UPLINK_IP.into(), far, 17, udp),
        0,
        "UDP checksum over the reassembled datagram"
    );
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 9000);
}

#[test]
fn endpoint_independent_udp_mapping_reuses_the_external_port() {
    let topo = topo().replace("[[publish]]", "[nat]\nport_first = 40000\nport_last = 40100\nudp_endpoint_independent = true\n\n[[publish]]");
    let mut r = Rig::with(&topo);
    let c1 = ip(172, 17, 0, 2);
    let mut ports = Vec::new();
    for far in [ip(198, 51, 100, 1), ip(198, 51, 100, 2), ip(192, 0, 2, 77)] {
        let out = r.send(
            C1,
            build::udp(
                MacAddr::docker(c1),
                gw_mac(17),
                c1,
                far,
                5000,
                3478,
                b"stun",
            ),
        );
        assert_eq!(out.len(), 1);
        ports.push(fields(&out[0].data).2);
    }
    assert!((40000..=40100).contains(&ports[0]));
    assert!(
        ports.iter().all(|p| *p == ports[0]),
        "one external port for every destination: {ports:?}"
    );
    // Filtering stays address-and-port dependent: a stranger gets nothing through.
    let stranger = ip(203, 0, 113, 99);
    let out = r.send(
        UP,
        build::udp(
            ROUTER,
            uplink_mac(),
            stranger,
            UPLINK_IP.into(),
            3478,
            ports[0],
            b"hi",
        ),
    );
    assert!(out.is_empty());
}

#[test]
fn same_network_through_the_gateway_is_routed_back_unless_icc_is_off() {
    let mut r = Rig::new();
    let (c1, c2) = (ip(172, 17, 0, 2), ip(172, 17, 0, 3));
    r.send(
        C2,
        build::arp_request(MacAddr::docker(c2), c2, ip(172, 17, 0, 1)),
    );
    let out = r.send(
        C1,
        build::udp(MacAddr::docker(c1), gw_mac(17), c1, c2, 1, 2, b"x"),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, C2);
    let (s, d, sp, dp, ttl) = fields(&out[0].data);
    assert_eq!(
        (s, d, sp, dp, ttl),
        (c1, c2, 1, 2, 63),
        "routed, not translated"
    );
    assert_eq!(&out[0].data[6..12], &gw_mac(17).0);
    let (b1, b2) = (ip(172, 18, 0, 2), ip(172, 18, 0, 3));
    let out = r.send(
        B1,
        build::udp(MacAddr::docker(b1), gw_mac(18), b1, b2, 1, 2, b"x"),
    );
    assert!(out.is_empty());
    assert_eq!(r.drops(B1, DropReason::IccBlocked), 1);
}

#[path = "gateway/round_trip.rs"]
mod round_trip;

#[path = "gateway/embedded_dns.rs"]
mod embedded_dns;
