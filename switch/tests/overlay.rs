//! Overlay networks between two pipelines ("hosts" A and B) whose uplinks are wired to each
//! other: what one encapsulates the other decapsulates. Outer headers are read by etherparse
//! (independent of the code under test); the VXLAN header by its RFC 7348 layout.

#![allow(clippy::unwrap_used)] // Test code: panicking is how a test fails.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use packet::MacAddr;
use std::net::Ipv4Addr;
use switch::{Config, DropReason, Packet, Pipeline, PortId};
use testkit::frames as build;

const SEC: u64 = 1_000_000_000;
const VNI: u32 = 256;
const C: PortId = PortId(0);
const UP: PortId = PortId(1);
/// The overlay port: made by the pipeline after the file's ports.
const OV: PortId = PortId(2);

fn vtep(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + host)
}
fn up_mac(host: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, 0x10 + host])
}
fn ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 1 + host)
}
fn mac(host: u8) -> MacAddr {
    MacAddr::docker(ip(host))
}
const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 10, 77, 0, 1]);

/// Host `me` with container port `c` and uplink `up` on 198.51.100.0/24, peer `peer`.
fn host(me: u8, peer: u8, mtu: u16) -> Pipeline {
    let toml = format!(
        "[[network]]\nname = 'ov'\nsubnet = '10.77.0.0/24'\ngateway = '10.77.0.1'\n\
         vni = {VNI}\nvtep_peers = ['{}']\n\
         [[port]]\nname = 'c'\nkind = 'pcap'\nnetwork = 'ov'\n\
         [[port]]\nname = 'up'\nkind = 'pcap'\n\
         [uplink]\nport = 'up'\naddress = '{}'\nsubnet = '198.51.100.0/24'\nmac = '{}'\nmtu = {mtu}\n",
        vtep(peer),
        vtep(me),
        up_mac(me)
    );
    let p = Pipeline::new(&Config::from_toml(&toml).unwrap()).unwrap();
    assert_eq!(
        p.topology().ports[usize::from(OV.0)].name,
        format!("vxlan-{VNI}")
    );
    p
}

fn run(p: &mut Pipeline, now: u64, port: PortId, frame: Vec<u8>) -> Vec<Packet> {
    let mut out = Vec::new();
    p.process(now, &mut vec![Packet::new(port, frame)], &mut out);
    out
}

/// The outer facts of a VXLAN frame: (src ip, dst ip, dst mac, UDP dst port, VNI, inner).
fn outer(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, MacAddr, u16, u32, Vec<u8>) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = s.net else {
        panic!("not IPv4")
    };
    let Some(TransportSlice::Udp(udp)) = s.transport else {
        panic!("not UDP")
    };
    assert_eq!(udp.checksum(), 0, "sent with a zero UDP checksum");
    let payload = udp.payload();
    assert_eq!(payload[0], 0x08, "the I flag");
    let vni = u32::from_be_bytes([0, payload[4], payload[5], payload[6]]);
    let dst_mac = MacAddr::from_slice(&frame[..6]).unwrap();
    (
        ip.header().source_addr(),
        ip.header().destination_addr(),
        dst_mac,
        udp.destination_port(),
        vni,
        payload[8..].to_vec(),
    )
}

fn drops(p: &Pipeline, port: PortId, r: DropReason) -> u64 {
    p.port_counters(port).unwrap().drops.get(r)
}

#[test]
fn two_hosts_talk_over_vxlan_and_learn_each_other() {
    let (mut a, mut b) = (host(1, 2, 1500), host(2, 1, 1500));
    // A's container asks for B's: broadcast, so it goes to the flood list; A first asks for
    // the VTEP's MAC and holds the VXLAN frame meanwhile.
    let who_has = build::arp_request(mac(1), ip(1), ip(2));
    let out = run(&mut a, SEC, C, who_has.clone());
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].port, UP);
    assert_eq!(out[0].data, build::arp_request(up_mac(1), vtep(1), vtep(2)));
    let reply = build::arp_reply(up_mac(2), vtep(2), up_mac(1), vtep(1));
    let out = run(&mut a, SEC + 1000, UP, reply);
    assert_eq!(out.len(), 1, "the held frame leaves: {out:?}");
    let (src, dst, dmac, dport, vni, inner) = outer(&out[0].data);
    assert_eq!(
        (src, dst, dmac, dport, vni),
        (vtep(1), vtep(2), up_mac(2), 4789, VNI)
    );
    assert_eq!(inner, who_has);
    assert_eq!(a.bridge_counters().vxlan_encapsulated, 1);

    // B decapsulates it to its container and learns where A's container is.
    let vxlan = out[0].data.clone();
    let out = run(&mut b, SEC, UP, vxlan);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].port, &out[0].data), (C, &who_has));
    assert_eq!(b.bridge_counters().vxlan_decapsulated, 1);
    let rows = b.overlay_rows(SEC);
    assert_eq!(rows[0].endpoints.len(), 1);
    assert_eq!(rows[0].endpoints[0].vtep, vtep(1));
    assert_eq!(rows[0].endpoints[0].origin, "learned");

    // The answer is unicast to A's container: straight to A's VTEP, not flooded (B learned
    // A's VTEP MAC from the ARP request A sent it meanwhile).
    let ask_b = build::arp_request(up_mac(1), vtep(1), vtep(2));
    let out = run(&mut b, SEC + 1, UP, ask_b);
    assert_eq!(out.len(), 1, "B answers A's VTEP ARP: {out:?}");
    let is_at = build::arp_reply(mac(2), ip(2), mac(1), ip(1));
    let out = run(&mut b, SEC + 2, C, is_at.clone());
    assert_eq!(out.len(), 1, "{out:?}");
    let (src, dst, dmac, _, _, inner) = outer(&out[0].data);
    assert_eq!((src, dst, dmac), (vtep(2), vtep(1), up_mac(1)));
    assert_eq!(inner, is_at);
    let back = run(&mut a, SEC + 3, UP, out[0].data.clone());
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].port, &back[0].data), (C, &is_at));

    // A's container now sends B's a datagram: A learned B's container from that reply.
    let hello = build::udp(mac(1), mac(2), ip(1), ip(2), 4000, 5000, b"hello");
    let out = run(&mut a, SEC + 4, C, hello.clone());
    assert_eq!(out.len(), 1);
    assert_eq!(outer(&out[0].data).5, hello);
    let counters = a.port_counters(OV).unwrap();
    assert_eq!(
        counters.rx_frames,
        counters.forwarded + counters.local + counters.drops.total(),
        "the overlay port accounts for what it received"
    );
}

#[test]
fn strangers_unknown_networks_and_gateway_frames_stay_out() {
    let (mut a, mut b) = (host(1, 2, 1500), host(2, 1, 1500));
    // B's VTEP MAC, so A's frames leave at once.
    run(
        &mut a,
        0,
        UP,
        build::arp_request(up_mac(2), vtep(2), vtep(1)),
    );
    let hello = build::udp(mac(1), mac(2), ip(1), ip(2), 4000, 5000, b"hi");
    let out = run(&mut a, 1, C, hello);
    let vxlan = out.last().unwrap().data.clone();

    // From a host that is not in B's flood list: dropped.
    let mut c = host(3, 2, 1500);
    run(
        &mut c,
        0,
        UP,
        build::arp_request(up_mac(2), vtep(2), vtep(3)),
    );
    let out = run(
        &mut c,
        1,
        C,
        build::udp(mac(3), mac(2), ip(3), ip(2), 1, 2, b"x"),
    );
    assert!(run(&mut b, 2, UP, out.last().unwrap().data.clone()).is_empty());
    assert_eq!(drops(&b, UP, DropReason::VxlanUnknownVtep), 1);

    // Another VNI: dropped.
    let mut other = vxlan.clone();
    other[46] ^= 0x01;
    assert!(run(&mut b, 3, UP, other).is_empty());
    assert_eq!(drops(&b, UP, DropReason::VxlanUnknownVni), 1);

    // No valid-VNI flag: malformed.
    let mut bad = vxlan.clone();
    bad[42] = 0;
    assert!(run(&mut b, 4, UP, bad).is_empty());
    assert_eq!(drops(&b, UP, DropReason::VxlanMalformed), 1);

    // The gateway's own frames never cross: from A's gateway MAC inside, dropped at B.
    let inner = build::udp(
        GW_MAC,
        mac(2),
        Ipv4Addr::new(10, 77, 0, 1),
        ip(2),
        1,
        2,
        b"gw",
    );
    let mut forged = vxlan[..50].to_vec();
    forged.extend_from_slice(&inner);
    let total = (forged.len() - 14) as u16;
    forged[16..18].copy_from_slice(&total.to_be_bytes());
    forged[38..40].copy_from_slice(&(total - 20).to_be_bytes());
    forged[24..26].fill(0);
    let sum = !packet::checksum::fold(packet::checksum::sum(&forged[14..34]));
    forged[24..26].copy_from_slice(&sum.to_be_bytes());
    assert!(run(&mut b, 5, UP, forged).is_empty());
    assert_eq!(drops(&b, UP, DropReason::OverlayGatewayMac), 1);
    // The valid one still goes through.
    assert_eq!(run(&mut b, 6, UP, vxlan).len(), 1);
    let up = b.port_counters(UP).unwrap();
    assert_eq!(up.rx_frames, up.forwarded + up.local + up.drops.total());
}

#[test]
fn endpoints_from_the_control_plane_suppress_arp_and_skip_flooding() {
    let mut a = host(1, 2, 1500);
    let net = a.topology().network_by_name("ov").unwrap();
    assert!(a.set_overlay_endpoint(net, mac(2), Some(ip(2)), vtep(2)));
    // ARP for the remote endpoint is answered here, by its MAC.
    let out = run(&mut a, 0, C, build::arp_request(mac(1), ip(1), ip(2)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, C);
    assert_eq!(out[0].data, build::arp_reply(mac(2), ip(2), mac(1), ip(1)));
    assert_eq!(a.bridge_counters().arp_suppressed, 1);
    // The flood list can go empty: unicast to a known endpoint still has its VTEP.
    assert!(a.set_overlay_peers(net, &[]));
    run(
        &mut a,
        1,
        UP,
        build::arp_request(up_mac(2), vtep(2), vtep(1)),
    );
    let out = run(
        &mut a,
        2,
        C,
        build::udp(mac(1), mac(2), ip(1), ip(2), 1, 2, b"x"),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(outer(&out[0].data).1, vtep(2));
    // Gone from the control plane: unknown unicast, and no peers to flood to.
    assert!(a.remove_overlay_endpoint(net, mac(2)));
    let out = run(
        &mut a,
        3,
        C,
        build::udp(mac(1), mac(2), ip(1), ip(2), 1, 2, b"x"),
    );
    assert!(out.is_empty(), "{out:?}");
    let rows = a.overlay_rows(3);
    assert!(rows[0].endpoints.is_empty() && rows[0].peers.is_empty());
}

#[test]
fn frames_too_big_for_the_uplink_and_unanswered_vteps_are_counted() {
    let mut a = host(1, 2, 1000);
    run(
        &mut a,
        0,
        UP,
        build::arp_request(up_mac(2), vtep(2), vtep(1)),
    );
    let big = build::udp(
        mac(1),
        mac(2),
        ip(1),
        ip(2),
        1,
        2,
        &[0u8; 1000 - 36 - 42 + 1],
    );
    assert!(run(&mut a, 1, C, big).is_empty());
    assert_eq!(a.bridge_counters().vxlan_too_big, 1);
    let fits = build::udp(mac(1), mac(2), ip(1), ip(2), 1, 2, &[0u8; 1000 - 36 - 42]);
    let out = run(&mut a, 2, C, fits);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data.len(), 1014, "an uplink-MTU-sized packet");

    let mut b = host(2, 1, 1500);
    let out = run(&mut b, 0, C, build::arp_request(mac(2), ip(2), ip(1)));
    assert_eq!(out.len(), 1, "an ARP request for the VTEP");
    let out = run(&mut b, SEC + 1, C, vec![0; 0]);
    assert!(out.len() <= 1, "asked again at most once a second: {out:?}");
    run(&mut b, 4 * SEC, C, vec![]);
    assert_eq!(
        b.bridge_counters().vxlan_unresolved,
        1,
        "the held frame expired"
    );
}

#[test]
fn bad_overlay_configs_are_refused_with_the_fix() {
    let base = "[[network]]\nname = 'ov'\nsubnet = '10.77.0.0/24'\ngateway = '10.77.0.1'\n";
    let err = |extra: &str| {
        Pipeline::new(&Config::from_toml(&format!("{base}{extra}")).unwrap())
            .unwrap_err()
            .to_string()
    };
    assert!(err("vni = 5\n").contains("no [uplink]"));
    let up = "[[port]]\nname='up'\nkind='pcap'\n[uplink]\nport='up'\naddress='198.51.100.1'\n";
    assert!(err(&format!("vni = 0\n{up}")).contains("1 to 16777215"));
    assert!(err(&format!("vni = 16777216\n{up}")).contains("1 to 16777215"));
    assert!(err(&format!("vtep_peers = ['198.51.100.2']\n{up}")).contains("needs a vni"));
    let two = format!(
        "vni = 7\n[[network]]\nname = 'b'\nsubnet = '10.78.0.0/24'\ngateway = '10.78.0.1'\nvni = 7\n{up}"
    );
    assert!(err(&two).contains("each overlay network needs its own"));
}

#[test]
fn overlay_networks_come_and_go_at_run_time() {
    let up = "[[port]]\nname='up'\nkind='pcap'\n[uplink]\nport='up'\naddress='198.51.100.1'\n";
    let mut p = Pipeline::new(&Config::from_toml(up).unwrap()).unwrap();
    let def = switch::runtime::NetworkDef {
        name: "ov".into(),
        subnet: "10.77.0.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 77, 0, 1),
        internal: false,
        icc: true,
        anti_spoofing: true,
        ipv6: None,
        vni: Some(300),
        macvlan: None,
    };
    let id = p.add_network(&def).unwrap();
    assert_eq!(p.add_network(&def).unwrap(), id, "idempotent");
    assert_eq!(p.overlay_vni(id), Some(300));
    assert_eq!(p.topology().networks[usize::from(id.0)].ports.len(), 1);
    let c = p
        .add_port("c", switch::PortKind::AfPacket, id, Default::default())
        .unwrap();
    assert!(!p.remove_network("ov"), "a container is still on it");
    p.remove_port(c);
    assert!(p.remove_network("ov"));
    assert_eq!(p.overlay_vni(id), None);
    assert!(p.overlay_rows(0).is_empty());
    let again = p.add_network(&def).unwrap();
    assert_eq!(p.overlay_vni(again), Some(300), "the VNI is free again");
}
