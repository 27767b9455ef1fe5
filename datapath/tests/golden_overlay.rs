//! Golden pcap scenario of an overlay network in VXLAN (RFC 7348): one host of the overlay,
//! with two local containers on pcap ports and two other hosts (VTEPs) behind its uplink.
//!
//! Expected frames are built here by reasoning, with etherparse (`testkit::frames`) for the
//! inner frames and the byte layout of RFC 7348 section 5 for the outer headers: outer
//! Ethernet to the VTEP's MAC (learned by ARP on the uplink) from the uplink's MAC; outer IPv4
//! `45 00`, total length, an identification that counts encapsulated copies from 1, no flags,
//! TTL 64, UDP, header checksum computed here (`common::nat::checksum`); UDP to 4789 with a zero
//! checksum; VXLAN `08 00 00 00 | VNI | 00`. The one value taken from the code under test is
//! the outer UDP source port: a documented hash of the inner headers (for the underlay's ECMP
//! and the peer's RSS) that `switch::overlay::wire::source_port` computes.
//!
//! The pipeline adds the network's overlay port (`vxlan-256`) itself; the replay writes no
//! capture for it, and what it sends is checked where it leaves, encapsulated, on `up`.
//!
//! Regenerate after changing the description (the deliberate flag):
//!
//! ```sh
//! VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_overlay
//! ```

#![allow(clippy::unwrap_used)]

mod common;

use common::nat::{Edit, checksum, tcp};
use common::{OVERLAY_SCENARIOS, harness};
use packet::{MacAddr, tcp_flags};
use serde_json::Value;
use std::net::Ipv4Addr;
use switch::overlay::wire::source_port;
use testkit::frames::{self as build, make_partial};
use testkit::golden::{Forwarding, Scenario, Seq, TcpdumpCheck};

const REGEN_HINT: &str = "if the description changed on purpose, run: VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_overlay";

const VNI: u32 = 256;
/// This host's VTEP: the uplink address, with a fixed MAC.
const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const UP_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
/// The other hosts of the overlay (the flood list), and one outside it.
const VTEP_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
const VTEP_C: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 13);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);
/// Containers: c1 here (c2, the other local port, only listens), R on host B.
const C1: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const R: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);

/// A VTEP's uplink MAC: 02:00:00:00:01:NN for 198.51.100.NN.
fn vtep_mac(vtep: Ipv4Addr) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0x01, vtep.octets()[3]])
}

fn mac(ip: Ipv4Addr) -> MacAddr {
    MacAddr::docker(ip)
}

fn topo() -> String {
    format!(
        "[[network]]\n\
         name = \"ov\"\n\
         subnet = \"10.77.0.0/24\"\n\
         gateway = \"10.77.0.1\"\n\
         vni = {VNI}\n\
         vtep_peers = [\"{VTEP_B}\", \"{VTEP_C}\"]\n\
         \n\
         [[port]]\n\
         name = \"c1\"\n\
         kind = \"pcap\"\n\
         network = \"ov\"\n\
         \n\
         [[port]]\n\
         name = \"c2\"\n\
         kind = \"pcap\"\n\
         network = \"ov\"\n\
         \n\
         [[port]]\n\
         name = \"up\"\n\
         kind = \"pcap\"\n\
         \n\
         [uplink]\n\
         port = \"up\"\n\
         address = \"{LOCAL}\"\n\
         subnet = \"198.51.100.0/24\"\n\
         mac = \"{UP_MAC}\"\n\
         mtu = 1500\n"
    )
}

/// `inner` in VXLAN for `vni`, as RFC 7348 section 5 lays it out: outer Ethernet (`src_mac` →
/// `dst_mac`, IPv4), outer IPv4 (no options, identification `ip_id`, no flags, TTL 64, UDP,
/// header checksum computed here), UDP (`sport` → 4789, zero checksum), the VXLAN header (I
/// flag, VNI) and the inner frame.
#[allow(clippy::too_many_arguments)]
fn vxlan(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ip_id: u16,
    sport: u16,
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    let udp_len = (8 + 8 + inner.len()) as u16;
    let total = 20 + udp_len;
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0x00];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&ip_id.to_be_bytes());
    ip.extend_from_slice(&[0x00, 0x00, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(0, &ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&4789u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    let v = vni.to_be_bytes();
    f.extend_from_slice(&[0x08, 0, 0, 0, v[1], v[2], v[3], 0]);
    f.extend_from_slice(inner);
    f
}

/// What this host sends toward `vtep`: `inner` encapsulated with outer identification `ip_id`;
/// the UDP source port is the switch's documented hash of the inner headers.
fn to_vtep(vtep: Ipv4Addr, ip_id: u16, inner: &[u8]) -> Vec<u8> {
    vxlan(
        UP_MAC,
        vtep_mac(vtep),
        LOCAL,
        vtep,
        ip_id,
        source_port(inner),
        VNI,
        inner,
    )
}

/// What a remote VTEP sends this host: `inner` in VXLAN for `vni`, from an arbitrary port.
fn from_vtep(vtep: Ipv4Addr, ip_id: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
    vxlan(
        vtep_mac(vtep),
        UP_MAC,
        vtep,
        LOCAL,
        ip_id,
        50000,
        vni,
        inner,
    )
}

/// The overlay port's own counters (the harness checks only the file's ports) and the FDB: the
/// port received the one decapsulated frame and forwarded it, and was handed five inner frames
/// (the ARP request, the datagram, three segments: replication happens after it); R is learned
/// in the overlay's table with its VTEP, not in the FDB, which holds c1 alone.
fn overlay_port_and_fdb(v: &Value) {
    let ports = v["state"]["ports"].as_array().unwrap();
    let ov = ports.iter().find(|p| p["name"] == "vxlan-256").unwrap();
    assert_eq!(ov["network"], "ov", "{ov}");
    assert_eq!(ov["rx_frames"], 1, "{ov}");
    assert_eq!(ov["forwarded"], 1, "{ov}");
    assert_eq!(ov["tx_frames"], 5, "{ov}");
    assert_eq!(ov["tx_bytes"], 42 + 66 + 3 * 554, "{ov}");
    let fdb = v["state"]["fdb"].as_array().unwrap();
    assert_eq!(fdb.len(), 1, "{fdb:?}");
    assert_eq!(fdb[0]["mac"], mac(C1).to_string());
    assert_eq!(fdb[0]["port"], "c1");
}

fn overlay_vxlan() -> Scenario {
    let mut s = Seq::new();
    let (c1m, rm) = (mac(C1), mac(R));
    let mut e_up = Vec::new();
    let mut e_c1 = Vec::new();
    let mut e_c2 = Vec::new();

    // 1. The other hosts ask for this VTEP's MAC: answered, and their MACs learned.
    for vtep in [VTEP_B, VTEP_C] {
        let ask = build::arp_request(vtep_mac(vtep), vtep, LOCAL);
        let r = s.send("up", ask);
        e_up.push((r, build::arp_reply(UP_MAC, LOCAL, vtep_mac(vtep), vtep)));
    }

    // 2. c1 asks for R (remote, unknown): flooded to c2 and, head-end replicated, to every
    // VTEP of the flood list in its order; outer identifications 1 and 2.
    let who_has = build::arp_request(c1m, C1, R);
    let r_who = s.send("c1", who_has.clone());
    e_c2.push(s.same(r_who));
    e_up.push((r_who, to_vtep(VTEP_B, 1, &who_has)));
    e_up.push((r_who, to_vtep(VTEP_C, 2, &who_has)));

    // 3. R answers from host B: decapsulated to c1, and R is learned behind B.
    let is_at = build::arp_reply(rm, R, c1m, C1);
    let r_is_at = s.send("up", from_vtep(VTEP_B, 0x1000, VNI, &is_at));
    e_c1.push((r_is_at, is_at));

    // 4. A datagram to R: one copy, to B only (identification 3).
    let dgram = build::udp(c1m, rm, C1, R, 40000, 7000, b"hello R over the overlay");
    let r_dgram = s.send("c1", dgram.clone());
    e_up.push((r_dgram, to_vtep(VTEP_B, 3, &dgram)));

    // 5. A TCP super-frame (1500 bytes, MSS 500) to R: the overlay port takes no offloads, so
    // it is cut into three complete segments (sequence +500, inner IP id 0, 1, 2), each then
    // encapsulated to B (identification 4, 5, 6).
    let data: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
    let (from, to) = ((C1, 41000), (R, 8000));
    let sf = make_partial(tcp(from, to, (c1m, rm), 9000, 1, tcp_flags::ACK, &data));
    let r_sf = s.send_offloaded("c1", sf, "partial:34:16 tcp4:500");
    for (i, chunk) in data.chunks(500).enumerate() {
        let seg = tcp(
            from,
            to,
            (c1m, rm),
            9000 + (i * 500) as u32,
            1,
            tcp_flags::ACK,
            chunk,
        );
        let mut e = Edit::new(&seg);
        e.set_u16(18, i as u16);
        let seg = e.done();
        e_up.push((r_sf, to_vtep(VTEP_B, 4 + i as u16, &seg)));
    }

    // 6. VXLAN from a host outside the overlay: dropped.
    let forged = build::udp(
        mac(Ipv4Addr::new(10, 77, 0, 50)),
        c1m,
        Ipv4Addr::new(10, 77, 0, 50),
        C1,
        1,
        2,
        b"from a stranger",
    );
    s.send("up", from_vtep(STRANGER, 0x2000, VNI, &forged));

    // 7. VXLAN from B for a VNI this host does not have: dropped.
    let other = build::udp(rm, c1m, R, C1, 8000, 41000, b"for another network");
    s.send("up", from_vtep(VTEP_B, 0x1001, 999, &other));

    Scenario {
        name: "overlay-vxlan",
        readme: "An overlay network in VXLAN (RFC 7348): network ov (10.77.0.0/24, VNI 256) with c1 and\n\
                 c2 here and the other hosts' VTEPs 198.51.100.12 and .13 (the flood list) behind the\n\
                 uplink `up` (198.51.100.11/24, MTU 1500). The pipeline adds the overlay port vxlan-256\n\
                 itself; what it sends leaves encapsulated on `up` (no capture of its own).\n\
                 In: the VTEPs .12 and .13 ask for .11 by ARP; c1 asks who has 10.77.0.9 (R, on host\n\
                 .12); .12 sends R's ARP reply to c1 in VXLAN; c1 sends R a UDP datagram and a\n\
                 1500-byte TCP super-frame (MSS 500, offload state in in/c1.offload); VXLAN comes from\n\
                 198.51.100.99 (not in the overlay) and from .12 for VNI 999.\n\
                 Out: `up` answers both ARP requests (local), then carries the ARP request twice in\n\
                 VXLAN (head-end replication: to .12, then .13), the datagram once to .12 (R was learned\n\
                 behind .12 from its reply) and three complete 500-byte segments to .12. Outer headers:\n\
                 uplink MAC to the VTEP's learned MAC, IPv4 id 1..6 (one per copy), no DF, TTL 64, UDP\n\
                 from a hash of the inner headers to 4789 with a zero checksum, VXLAN flags 0x08 and\n\
                 VNI 256. c2 gets the ARP request unchanged, c1 gets R's reply decapsulated. The\n\
                 stranger's frame is dropped as vxlan_unknown_vtep, the VNI 999 one as\n\
                 vxlan_unknown_vni.\n",
        topo: topo(),
        input: s,
        expect: vec![("c1", e_c1), ("c2", e_c2), ("up", e_up)],
        drops: vec![
            ("up", "vxlan_unknown_vtep", 1),
            ("up", "vxlan_unknown_vni", 1),
        ],
        local: vec![("up", 3)],
        bridge: vec![
            ("vxlan_encapsulated", 6),
            ("vxlan_decapsulated", 1),
            ("gso_segments", 3),
            // The ARP request's flood: c2 and the overlay port.
            ("flooded_copies", 2),
            ("fdb_learned", 1),
            ("arp_replies_sent", 2),
            ("vxlan_unresolved", 0),
            ("vxlan_too_big", 0),
        ],
        summary: overlay_port_and_fdb,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            port: "up",
            verbose: false,
            // Two lines per VXLAN frame: the outer packet, then the inner frame.
            lines: Some(2 + 2 * 6),
            contains: vec![
                "198.51.100.11.",
                "> 198.51.100.12.4789",
                "> 198.51.100.13.4789",
                "VXLAN, flags [I] (0x08), vni 256",
                "10.77.0.2.41000 > 10.77.0.9.8000",
            ],
        },
    }
}

#[test]
fn golden_overlay_vxlan() {
    harness(REGEN_HINT).check(overlay_vxlan());
}

#[test]
fn overlay_fixtures_are_described() {
    assert_eq!(OVERLAY_SCENARIOS, &[overlay_vxlan().name]);
}
