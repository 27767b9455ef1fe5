//! Macvlan networks bridged onto the uplink's LAN, untagged and on 802.1Q VLANs of a trunk
//! uplink, through the pipeline: frames in, frames out, tags read byte by byte (802.1Q's
//! layout), the rest compared with the frames sent.

#![allow(clippy::unwrap_used)] // Test code: panicking is how a test fails.

use packet::MacAddr;
use std::net::Ipv4Addr;
use switch::{Config, DropReason, Packet, Pipeline, PortId};
use testkit::frames as build;

// Ports in file order.
const L1: PortId = PortId(0);
const L2: PortId = PortId(1);
const A1: PortId = PortId(2);
const A2: PortId = PortId(3);
const B1: PortId = PortId(4);
const UP: PortId = PortId(5);

const UPLINK_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x99]);

/// `lan` (untagged, bridge mode) with l1 and l2, `v10` (VLAN 10, private) with a1 and a2,
/// `v20` (VLAN 20, bridge, no anti-spoofing) with b1, and the uplink `up`.
fn topo() -> String {
    let port = |name: &str, net: &str| {
        format!("[[port]]\nname = '{name}'\nkind = 'pcap'\nnetwork = '{net}'\n")
    };
    let net = |name: &str, extra: &str| {
        format!(
            "[[network]]\nname = '{name}'\ndriver = 'macvlan'\nsubnet = '192.168.1.0/24'\n\
             gateway = '192.168.1.1'\n{extra}\n"
        )
    };
    [
        net("lan", ""),
        net("v10", "vlan = 10\nmacvlan_mode = 'private'"),
        net("v20", "vlan = 20\nanti_spoofing = false"),
        port("l1", "lan"),
        port("l2", "lan"),
        port("a1", "v10"),
        port("a2", "v10"),
        port("b1", "v20"),
        "[[port]]\nname = 'up'\nkind = 'pcap'\n".to_string(),
        format!(
            "[uplink]\nport = 'up'\naddress = '192.168.1.2'\nsubnet = '192.168.1.0/24'\nmac = '{UPLINK_MAC}'\n"
        ),
    ]
    .concat()
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 1, last)
}
fn mac(last: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, last])
}

fn tagged(mut frame: Vec<u8>, vid: u16, pcp: u8) -> Vec<u8> {
    let tci = (u16::from(pcp) << 13) | vid;
    frame.splice(12..12, [0x81, 0x00, (tci >> 8) as u8, tci as u8]);
    frame
}

struct Rig {
    p: Pipeline,
    now: u64,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            p: Pipeline::new(&Config::from_toml(&topo()).unwrap()).unwrap(),
            now: 1,
        }
    }

    fn send(&mut self, port: PortId, frame: Vec<u8>) -> Vec<(PortId, Vec<u8>)> {
        let mut out = Vec::new();
        self.now += 1000;
        self.p
            .process(self.now, &mut vec![Packet::new(port, frame)], &mut out);
        let mut out: Vec<_> = out.into_iter().map(|p| (p.port, p.data)).collect();
        out.sort();
        out
    }

    fn drops(&self, port: PortId, r: DropReason) -> u64 {
        self.p.port_counters(port).unwrap().drops.get(r)
    }
}

#[test]
fn the_untagged_lan_and_its_containers_see_each_other_without_nat() {
    let mut r = Rig::new();
    // A LAN host asks for l1: both containers of the untagged network get it, untagged; the
    // VLANs' containers do not.
    let who_has = build::arp_request(mac(10), ip(10), ip(20));
    let out = r.send(UP, who_has.clone());
    assert_eq!(out, [(L1, who_has.clone()), (L2, who_has)]);
    // l1 answers: out of the uplink as it is, from l1's own MAC and address.
    let is_at = build::arp_reply(mac(20), ip(20), mac(10), ip(10));
    assert_eq!(r.send(L1, is_at.clone()), [(UP, is_at)]);
    // The LAN host's datagram to l1 reaches it unchanged (no NAT), and only it.
    let hello = build::udp(mac(10), mac(20), ip(10), ip(20), 1000, 2000, b"hi");
    assert_eq!(r.send(UP, hello.clone()), [(L1, hello)]);
    // Bridge mode: l2 reaches l1 directly.
    let direct = build::udp(mac(21), mac(20), ip(21), ip(20), 1, 2, b"x");
    assert_eq!(r.send(L2, direct.clone()), [(L1, direct)]);
    // The uplink's own address is still the gateway's: a ping to it is answered.
    let ping = build::icmp_echo(mac(10), UPLINK_MAC, ip(10), ip(2), true, 7, 1, b"p");
    let out = r.send(UP, ping);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, UP);
    assert_eq!(&out[0].1[..6], &mac(10).0, "an echo reply to the LAN host");
    let fdb = r.p.fdb_rows(r.now);
    assert!(fdb.iter().any(|e| e.mac == mac(10).to_string()), "{fdb:?}");
}

#[test]
fn vlans_on_the_trunk_are_tagged_out_and_only_their_tag_gets_in() {
    let mut r = Rig::new();
    let who_has = build::arp_request(mac(10), ip(10), ip(30));
    // VLAN 10's broadcast reaches VLAN 10's containers only, untagged.
    let out = r.send(UP, tagged(who_has.clone(), 10, 3));
    assert_eq!(out, [(A1, who_has.clone()), (A2, who_has.clone())]);
    // VLAN 20's reaches b1 only.
    assert_eq!(
        r.send(UP, tagged(who_has.clone(), 20, 0)),
        [(B1, who_has.clone())]
    );
    // a1's answer leaves tagged with VLAN 10.
    let is_at = build::arp_reply(mac(30), ip(30), mac(10), ip(10));
    assert_eq!(r.send(A1, is_at.clone()), [(UP, tagged(is_at, 10, 0))]);
    // A tag no network has, and stacked tags: counted drops on the uplink.
    assert!(r.send(UP, tagged(who_has.clone(), 30, 0)).is_empty());
    assert_eq!(r.drops(UP, DropReason::VlanUnknown), 1);
    assert!(
        r.send(UP, tagged(tagged(who_has.clone(), 20, 0), 10, 0))
            .is_empty()
    );
    let mut ad = who_has.clone();
    ad.splice(12..12, [0x88, 0xa8, 0, 20]);
    assert!(r.send(UP, ad).is_empty());
    assert_eq!(r.drops(UP, DropReason::VlanQinq), 2);
    // A priority-tagged frame from a container (VLAN id 0) keeps its priority on the trunk.
    let prio = tagged(
        build::udp(mac(40), mac(10), ip(40), ip(10), 1, 2, b"p"),
        0,
        5,
    );
    let plain = build::udp(mac(40), mac(10), ip(40), ip(10), 1, 2, b"p");
    assert_eq!(r.send(B1, prio), [(UP, tagged(plain, 20, 5))]);
    let up = r.p.port_counters(UP).unwrap();
    assert_eq!(up.rx_frames, up.forwarded + up.local + up.drops.total());
    // b1 (no anti-spoofing) tags a frame for VLAN 10 itself: an access port may not.
    let hop = tagged(
        build::udp(mac(40), mac(10), ip(40), ip(10), 1, 2, b"h"),
        10,
        0,
    );
    assert!(r.send(B1, hop).is_empty());
    assert_eq!(r.drops(B1, DropReason::VlanOnAccessPort), 1);
}

#[test]
fn private_mode_keeps_containers_apart_but_on_the_lan() {
    let mut r = Rig::new();
    // a2 speaks first, so the bridge knows where it is.
    let a2_hello = build::udp(mac(32), mac(10), ip(32), ip(10), 1, 2, b"a2");
    assert_eq!(
        r.send(A2, a2_hello.clone()),
        [(UP, tagged(a2_hello, 10, 0))]
    );
    // a1 to a2: refused.
    let to_a2 = build::udp(mac(31), mac(32), ip(31), ip(32), 1, 2, b"no");
    assert!(r.send(A1, to_a2).is_empty());
    assert_eq!(r.drops(A1, DropReason::MacvlanPrivate), 1);
    // a1's broadcast goes to the LAN only, not to a2.
    let bcast = build::arp_request(mac(31), ip(31), ip(10));
    assert_eq!(r.send(A1, bcast.clone()), [(UP, tagged(bcast, 10, 0))]);
    // The LAN reaches both.
    let from_lan = build::udp(mac(10), mac(32), ip(10), ip(32), 1, 2, b"ok");
    assert_eq!(
        r.send(UP, tagged(from_lan.clone(), 10, 0)),
        [(A2, from_lan)]
    );
}

#[test]
fn bad_macvlan_configs_are_refused_with_the_fix() {
    let err = |net: &str| {
        let toml = format!(
            "{net}\n[[port]]\nname='up'\nkind='pcap'\n[uplink]\nport='up'\naddress='192.168.1.2'\n"
        );
        Pipeline::new(&Config::from_toml(&toml).unwrap())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let base = "[[network]]\nname = 'n'\nsubnet = '192.168.1.0/24'\n";
    assert!(err(&format!("{base}vlan = 10")).contains("needs driver = \"macvlan\""));
    assert!(err(&format!("{base}driver = 'macvlan'\nvlan = 4095")).contains("1 to 4094"));
    assert!(err(&format!("{base}driver = 'macvlan'\nvni = 9")).contains("IPv4 and local"));
    // The bridge network's isolation settings: internal would not cut a macvlan network off the
    // LAN, icc = false would cut it off everything.
    let internal = err(&format!("{base}driver = 'macvlan'\ninternal = true"));
    assert!(internal.contains("internal = true cannot"), "{internal}");
    let icc = err(&format!("{base}driver = 'macvlan'\nicc = false"));
    assert!(icc.contains("macvlan_mode = \"private\""), "{icc}");
    let two = format!(
        "{base}driver = 'macvlan'\nvlan = 7\n[[network]]\nname = 'm'\ndriver = 'macvlan'\nvlan = 7"
    );
    assert!(err(&two).contains("VLAN 7"), "{}", err(&two));
    let no_uplink =
        Pipeline::new(&Config::from_toml(&format!("{base}driver = 'macvlan'")).unwrap())
            .map(|_| ())
            .unwrap_err()
            .to_string();
    assert!(no_uplink.contains("no [uplink]"), "{no_uplink}");
}

#[test]
fn macvlan_networks_come_and_go_at_run_time() {
    let up = "[[port]]\nname='up'\nkind='pcap'\n[uplink]\nport='up'\naddress='192.168.1.2'\n";
    let mut p = Pipeline::new(&Config::from_toml(up).unwrap()).unwrap();
    let def = switch::runtime::NetworkDef {
        name: "lan".into(),
        subnet: "192.168.1.0/24".parse().unwrap(),
        gateway: ip(1),
        internal: false,
        icc: true,
        anti_spoofing: true,
        ipv6: None,
        vni: None,
        macvlan: Some(switch::config::Macvlan {
            mode: switch::config::MacvlanMode::Bridge,
            vlan: Some(10),
        }),
    };
    let id = p.add_network(&def).unwrap();
    assert_eq!(p.add_network(&def).unwrap(), id, "idempotent");
    let n = &p.topology().networks[usize::from(id.0)];
    assert_eq!(
        (n.subnet, n.gateway),
        (None, None),
        "no gateway of vswitch's on the LAN"
    );
    let other = switch::runtime::NetworkDef {
        name: "other".into(),
        ..def.clone()
    };
    assert!(p.add_network(&other).is_err(), "VLAN 10 is taken");
    for (internal, icc) in [(true, true), (false, false)] {
        let isolated = switch::runtime::NetworkDef {
            name: "isolated".into(),
            internal,
            icc,
            macvlan: Some(switch::config::Macvlan {
                mode: switch::config::MacvlanMode::Bridge,
                vlan: Some(30),
            }),
            ..def.clone()
        };
        assert!(p.add_network(&isolated).is_err(), "{internal} {icc}");
        assert!(p.topology().network_by_name("isolated").is_none());
    }
    assert!(p.topology().network_by_name("other").is_none());
    assert!(p.remove_network("lan"));
    p.add_network(&other).unwrap();
}

/// The parent port is where the LAN's multicast routers are (a router port, RFC 4541 2.1):
/// the containers' reports reach the LAN (tagged on a VLAN), their traffic to a group reaches
/// it once snooping has settled, private mode's containers are snooped too, and vswitch sends
/// no queries onto the LAN.
#[test]
fn the_parent_port_is_the_lan_s_multicast_router_port() {
    const SEC: u64 = 1_000_000_000;
    let mut r = Rig::new();
    let (g1, g2) = (Ipv4Addr::new(239, 1, 1, 1), Ipv4Addr::new(239, 1, 1, 2));
    // l1 joins g1 (untagged network), a1 joins g2 (VLAN 10, private mode): learned, and on to
    // the LAN's routers.
    let join1 = build::igmpv2_report(mac(20), ip(20), g1);
    assert_eq!(r.send(L1, join1.clone()), [(UP, join1)]);
    let join2 = build::igmpv2_report(mac(31), ip(31), g2);
    assert_eq!(r.send(A1, join2.clone()), [(UP, tagged(join2, 10, 0))]);
    assert_eq!(r.p.port_counters(L1).unwrap().forwarded, 1);
    assert_eq!(r.p.bridge_counters().multicast_reports, 2);
    // A LAN host's report comes in through the trunk: for the LAN, not learned, not flooded.
    let lan_join = build::igmpv2_report(mac(10), ip(10), g1);
    assert!(r.send(UP, lan_join).is_empty());
    // A query interval later: queries for the containers, none out of the uplink.
    r.now = 130 * SEC;
    let mut out = Vec::new();
    r.p.process(r.now, &mut Vec::new(), &mut out);
    assert!(!out.is_empty(), "the containers are queried");
    assert!(out.iter().all(|o| o.port != UP), "no query onto the LAN");
    // Past the grace period (every container snooped): l2's datagram to g1 reaches l1 and the
    // LAN; the LAN's to g2 on VLAN 10 reaches a1 (not a2, which never joined).
    r.now = 200 * SEC;
    let to_g1 = build::udp(
        mac(21),
        build::multicast_mac_v4(g1),
        ip(21),
        g1,
        1,
        2,
        b"g1",
    );
    assert_eq!(
        r.send(L2, to_g1.clone()),
        [(L1, to_g1.clone()), (UP, to_g1)]
    );
    let to_g2 = build::udp(
        mac(10),
        build::multicast_mac_v4(g2),
        ip(10),
        g2,
        1,
        2,
        b"g2",
    );
    assert_eq!(r.send(UP, tagged(to_g2.clone(), 10, 0)), [(A1, to_g2)]);
    // a2 (private) sends to g2: to the LAN only, not to a1.
    let from_a2 = build::udp(
        mac(32),
        build::multicast_mac_v4(g2),
        ip(32),
        g2,
        1,
        2,
        b"a2",
    );
    assert_eq!(r.send(A2, from_a2.clone()), [(UP, tagged(from_a2, 10, 0))]);
}

/// A TCP super-frame (TSO) from `src` to `dst` (MACs and addresses of the LAN's subnet), with
/// its offload state: the TCP checksum partial, `payload` in 1448-byte segments.
fn super_frame(src: u8, dst: u8, payload: &[u8]) -> (Vec<u8>, packet::offload::Offload) {
    use packet::offload::{Checksum, Gso, Offload};
    let b = etherparse::PacketBuilder::ethernet2(mac(src).0, mac(dst).0)
        .ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .tcp(40000, 80, 1, 64240)
        .ack(1);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    let o = Offload {
        checksum: Checksum::Partial {
            start: 34,
            offset: 16,
        },
        gso: Gso::Tcp {
            mss: 1448,
            ipv6: false,
            ecn: false,
        },
    };
    (testkit::frames::make_partial(f), o)
}

#[test]
fn a_super_frame_leaves_the_untagged_lan_whole_and_a_vlan_segmented() {
    use packet::offload::Capabilities;
    let mut r = Rig::new();
    // The uplink takes offloads (a virtio-net header): the untagged parent port does too.
    assert!(r.p.set_port_offloads(UP, Capabilities::ALL));
    // The LAN host is learnt on the uplink, untagged and on VLAN 20.
    let hello = build::udp(mac(10), mac(20), ip(10), ip(20), 1, 2, b"x");
    r.send(UP, hello.clone());
    r.send(UP, tagged(hello, 20, 0));
    let payload: Vec<u8> = (0..10_000).map(|i| (i * 7) as u8).collect();
    let (f, o) = super_frame(20, 10, &payload);
    let mut out = Vec::new();
    r.now += 1000;
    r.p.process(
        r.now,
        &mut vec![Packet::with_offload(L1, f.clone(), o)],
        &mut out,
    );
    assert_eq!(out.len(), 1, "one super-frame out of the uplink");
    assert_eq!(out[0].port, UP);
    assert_eq!(out[0].offload, o);
    assert_eq!(out[0].data, f, "bridged: the bytes as they came");
    // On VLAN 20 the tag goes in, so the pipeline segments first: each segment tagged.
    let (f, o) = super_frame(20, 10, &payload);
    let mut out = Vec::new();
    r.now += 1000;
    r.p.process(r.now, &mut vec![Packet::with_offload(B1, f, o)], &mut out);
    assert_eq!(out.len(), 7, "10000 bytes in 1448-byte segments");
    for pkt in &out {
        assert_eq!(pkt.port, UP);
        assert!(pkt.offload.is_plain());
        assert_eq!(&pkt.data[12..16], &[0x81, 0x00, 0, 20], "tagged VLAN 20");
        assert!(pkt.data.len() <= 1518);
    }
}
