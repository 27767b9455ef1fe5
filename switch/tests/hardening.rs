//! Tenant isolation under hostile input: anti-spoofing on container ports and the resource
//! limits (conntrack per source, NAT ports per destination, pending-ARP queues), each checked
//! for what it drops and, as much, for what it must keep forwarding.

#![allow(clippy::unwrap_used)] // Test code: panicking is how a test fails.

use packet::MacAddr;
use std::net::Ipv4Addr;
use switch::{Config, DropReason, Packet, Pipeline, PortId};
use testkit::frames as build;
use testkit::topology::Topo;

/// bridge (c1, c2 with MAC and address) with anti-spoofing, `open` without it (o1 with MAC and
/// address, o2 without), and the uplink on `up` with its next hop resolved by ARP.
fn topo() -> String {
    Topo::new()
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .routed("open", "172.20.0.0/16", "172.20.0.1")
        .set("anti_spoofing", false)
        .port("c1", "bridge")
        .set_str("mac", "02:42:ac:11:00:02")
        .set_str("ip", "172.17.0.2")
        .port("c2", "bridge")
        .set_str("mac", "02:42:ac:11:00:03")
        .set_str("ip", "172.17.0.3")
        .port("o1", "open")
        .set_str("mac", "02:42:ac:14:00:02")
        .set_str("ip", "172.20.0.2")
        .port("o2", "open")
        .uplink_port("up")
        .uplink("up")
        .build()
}

const C1: PortId = PortId(0);
const C2: PortId = PortId(1);
const O1: PortId = PortId(2);
const O2: PortId = PortId(3);
const UP: PortId = PortId(4);
const SEC: u64 = 1_000_000_000;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn mac(last: [u8; 4]) -> MacAddr {
    MacAddr::docker(Ipv4Addr::from(last))
}

fn c1_mac() -> MacAddr {
    mac([172, 17, 0, 2])
}
fn c2_mac() -> MacAddr {
    mac([172, 17, 0, 3])
}
fn gw_mac() -> MacAddr {
    mac([172, 17, 0, 1])
}
fn c1_ip() -> Ipv4Addr {
    Ipv4Addr::new(172, 17, 0, 2)
}
fn c2_ip() -> Ipv4Addr {
    Ipv4Addr::new(172, 17, 0, 3)
}
const ROUTER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

struct Rig {
    p: Pipeline,
    now: u64,
}

impl Rig {
    fn new(extra: &str) -> Rig {
        let text = format!("{}\n{extra}", topo());
        Rig {
            p: Pipeline::new(&Config::from_toml(&text).unwrap()).unwrap(),
            now: 1_000 * SEC,
        }
    }

    /// A rig whose uplink next hop is already resolved.
    fn routed(extra: &str) -> Rig {
        let mut r = Rig::new(extra);
        let uplink_mac = mac(UPLINK_IP.octets());
        r.send(
            UP,
            build::arp_reply(ROUTER_MAC, ROUTER_IP, uplink_mac, UPLINK_IP),
        );
        r
    }

    fn send(&mut self, port: PortId, data: Vec<u8>) -> Vec<Packet> {
        self.now += 1_000_000;
        let mut input = vec![Packet::new(port, data)];
        let mut out = Vec::new();
        self.p.process(self.now, &mut input, &mut out);
        for i in 0..5 {
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

    /// A TCP SYN from container `(mac, ip)` to the server, routed through the gateway.
    fn syn(&mut self, from: PortId, m: MacAddr, src: Ipv4Addr, sport: u16) -> Vec<Packet> {
        let f = build::tcp(m, gw_mac(), src, SERVER, sport, 80, 1, 0, SYN, &[]);
        self.send(from, f)
    }
}

fn ports(out: &[Packet]) -> Vec<PortId> {
    out.iter().map(|p| p.port).collect()
}

#[test]
fn frames_from_the_assigned_addresses_pass() {
    let mut r = Rig::new("");
    let f = build::udp(c1_mac(), c2_mac(), c1_ip(), c2_ip(), 1000, 2000, b"hi");
    assert_eq!(ports(&r.send(C1, f)), vec![C2]);
    let arp = build::arp_request(c1_mac(), c1_ip(), c2_ip());
    assert_eq!(ports(&r.send(C1, arp)), vec![C2]);
    // An ARP probe (RFC 5227) and a DHCP discover carry 0.0.0.0 and are allowed.
    let probe = build::arp_request(c1_mac(), Ipv4Addr::UNSPECIFIED, c1_ip());
    assert_eq!(ports(&r.send(C1, probe)), vec![C2]);
    let discover = build::udp(
        c1_mac(),
        MacAddr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        b"dhcp",
    );
    assert_eq!(ports(&r.send(C1, discover)), vec![C2]);
}

#[test]
fn a_container_cannot_pose_as_another() {
    let mut r = Rig::new("");
    // c2 talks first, so the FDB knows where its MAC lives.
    let hello = build::udp(c2_mac(), c1_mac(), c2_ip(), c1_ip(), 1, 2, b"x");
    assert_eq!(ports(&r.send(C2, hello)), vec![C1]);

    // c1 sends with c2's MAC: dropped, and c2's FDB entry stays on c2.
    let stolen_mac = build::udp(c2_mac(), MacAddr::BROADCAST, c1_ip(), c2_ip(), 1, 2, b"x");
    assert!(r.send(C1, stolen_mac).is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedMac), 1);
    let to_c2 = build::udp(c1_mac(), c2_mac(), c1_ip(), c2_ip(), 1, 2, b"x");
    assert_eq!(
        ports(&r.send(C1, to_c2)),
        vec![C2],
        "c2 still reached on its port"
    );

    // Its own MAC with c2's address.
    let stolen_ip = build::udp(c1_mac(), c2_mac(), c2_ip(), c1_ip(), 1, 2, b"x");
    assert!(r.send(C1, stolen_ip).is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedIp), 1);
    // Routed through the gateway with a foreign source: dropped before NAT too.
    let routed = build::udp(c1_mac(), gw_mac(), c2_ip(), SERVER, 1, 53, b"x");
    assert!(r.send(C1, routed).is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedIp), 2);

    // ARP reply claiming c2's address (cache poisoning), with c1's own MAC.
    let poison = build::arp_reply(c1_mac(), c2_ip(), gw_mac(), Ipv4Addr::new(172, 17, 0, 1));
    assert!(r.send(C1, poison).is_empty());
    // ARP whose sender MAC field differs from the frame's source.
    let mut forged = build::arp_request(c1_mac(), c1_ip(), c2_ip());
    forged[22..28].copy_from_slice(&c2_mac().0);
    assert!(r.send(C1, forged).is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedArp), 2);

    // A VLAN tag would hide the inner header from the check: refused.
    let mut tagged = build::udp(c1_mac(), c2_mac(), c2_ip(), c1_ip(), 1, 2, b"x");
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    assert!(r.send(C1, tagged).is_empty());
    assert_eq!(r.drops(C1, DropReason::SpoofedIp), 3);
    // c2 was never affected.
    assert_eq!(r.p.port_counters(C2).unwrap().dropped(), 0);
}

#[test]
fn anti_spoofing_can_be_switched_off_per_network() {
    let mut r = Rig::new("");
    let other = mac([172, 20, 0, 9]);
    let f = build::udp(
        other,
        MacAddr::BROADCAST,
        Ipv4Addr::new(172, 20, 0, 9),
        Ipv4Addr::new(172, 20, 0, 3),
        1,
        2,
        b"x",
    );
    assert_eq!(ports(&r.send(O1, f)), vec![O2]);
    assert_eq!(r.p.port_counters(O1).unwrap().dropped(), 0);
}

#[test]
fn per_source_limit_keeps_a_syn_flood_to_the_flooder() {
    let mut r = Rig::routed("[conntrack]\nmax_entries = 16\nmax_per_source = 4\n");
    // c2 establishes a connection first.
    let out = r.syn(C2, c2_mac(), c2_ip(), 5000);
    assert_eq!(ports(&out), vec![UP]);
    let nat_port = u16::from_be_bytes([out[0].data[34], out[0].data[35]]);
    let up_mac = mac(UPLINK_IP.octets());
    let synack = build::tcp(
        ROUTER_MAC,
        up_mac,
        SERVER,
        UPLINK_IP,
        80,
        nat_port,
        9,
        2,
        SYN | ACK,
        &[],
    );
    assert_eq!(ports(&r.send(UP, synack)), vec![C2]);
    let ack = build::tcp(
        c2_mac(),
        gw_mac(),
        c2_ip(),
        SERVER,
        5000,
        80,
        2,
        10,
        ACK,
        &[],
    );
    assert_eq!(ports(&r.send(C2, ack)), vec![UP]);

    // c1 floods SYNs: four get through, the rest are its own drops.
    let mut passed = 0;
    for sport in 0..100 {
        passed += r.syn(C1, c1_mac(), c1_ip(), 10_000 + sport).len();
    }
    assert_eq!(passed, 4);
    assert_eq!(r.drops(C1, DropReason::CtSourceLimit), 96);
    assert_eq!(r.p.conntrack().source_count(c1_ip()), 4);

    // c2's established connection still flows both ways, and it can open new ones.
    let data = build::tcp(
        c2_mac(),
        gw_mac(),
        c2_ip(),
        SERVER,
        5000,
        80,
        2,
        10,
        ACK,
        b"GET /",
    );
    assert_eq!(ports(&r.send(C2, data)), vec![UP]);
    let back = build::tcp(
        ROUTER_MAC, up_mac, SERVER, UPLINK_IP, 80, nat_port, 10, 7, ACK, b"200",
    );
    assert_eq!(ports(&r.send(UP, back)), vec![C2]);
    assert_eq!(ports(&r.syn(C2, c2_mac(), c2_ip(), 5001)), vec![UP]);
    assert_eq!(r.p.port_counters(C2).unwrap().dropped(), 0);

    // Once the flood's entries time out (SYN_SENT: 120 s), c1 may connect again.
    r.now += 121 * SEC;
    assert_eq!(ports(&r.syn(C1, c1_mac(), c1_ip(), 20_000)), vec![UP]);
}

#[test]
fn nat_ports_per_destination_are_capped() {
    let mut r = Rig::routed("[nat]\nmax_ports_per_destination = 3\n");
    let mut passed = 0;
    for sport in 0..5 {
        passed += r.syn(C1, c1_mac(), c1_ip(), 30_000 + sport).len();
    }
    assert_eq!(passed, 3);
    assert_eq!(r.drops(C1, DropReason::NatDestinationLimit), 2);
    // Another destination is unaffected.
    let other = build::tcp(
        c2_mac(),
        gw_mac(),
        c2_ip(),
        Ipv4Addr::new(198, 51, 100, 8),
        1,
        443,
        1,
        0,
        SYN,
        &[],
    );
    assert_eq!(ports(&r.send(C2, other)), vec![UP]);
}

#[test]
fn pending_arp_queue_length_is_configurable() {
    let mut r = Rig::new("[limits]\narp_queue_per_address = 2\n");
    // The next hop is unknown: the first frames wait for ARP (one request goes out).
    let out = r.syn(C1, c1_mac(), c1_ip(), 1);
    assert_eq!(ports(&out), vec![UP], "the ARP request");
    assert!(r.syn(C1, c1_mac(), c1_ip(), 2).is_empty());
    assert!(r.syn(C1, c1_mac(), c1_ip(), 3).is_empty());
    assert_eq!(r.drops(C1, DropReason::ArpQueueFull), 1);
    assert_eq!(r.p.port_counters(C1).unwrap().queued, 2);
}

#[test]
fn unknown_limit_names_are_rejected() {
    let err = Config::from_toml("[limits]\ncontrol_clientz = 3").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}
