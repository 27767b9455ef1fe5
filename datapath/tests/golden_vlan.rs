//! Golden pcap scenarios of macvlan networks (bridged onto the uplink's LAN: no gateway, no
//! NAT) and 802.1Q VLANs on a trunk uplink.
//!
//! Expected frames are built here by reasoning: the frames themselves with etherparse
//! (`testkit::frames`), and the 802.1Q tag by its layout (IEEE 802.1Q section 9.6): four bytes
//! after the MAC addresses, TPID `0x8100` (or 802.1ad's `0x88a8`), then TCI = PCP << 13 | DEI << 12
//! | VID. What leaves a container's port is untagged (access ports); what leaves the trunk for a
//! VLAN network carries its tag, PCP 0 unless the container sent a priority tag (VID 0), whose
//! PCP is kept. Nothing is translated: a macvlan container's frames leave with its own MAC and
//! address.
//!
//! The pipeline adds a port of kind Parent for each macvlan network (`parent`, `parent.VLAN`):
//! the replay writes no capture for it, and its counters are checked in summary.json. A frame
//! from the uplink that enters a macvlan network counts `local` on the uplink, and its outcome
//! (forwarded, dropped) on the parent port. Both scenarios are therefore checked as
//! [`Forwarding::Routed`] (the uplink's frames that leave are `local`, not `forwarded`) and every
//! port's `forwarded` is checked exactly in the summary check instead.
//!
//! Regenerate after changing the description (the deliberate flag):
//!
//! ```sh
//! VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_vlan
//! ```

#![allow(clippy::unwrap_used)]

mod common;

use common::{VLAN_SCENARIOS, harness};
use packet::MacAddr;
use serde_json::Value;
use std::net::Ipv4Addr;
use testkit::frames as build;
use testkit::golden::{Forwarding, Scenario, Seq, TcpdumpCheck};

const REGEN_HINT: &str = "if the description changed on purpose, run: VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_vlan";

/// 802.1Q's customer tag and 802.1ad's service tag.
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;

/// The uplink: the host's own address on the untagged (native) LAN, with a fixed MAC.
const UP_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const UP_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x99]);

/// `frame` with a 4-byte tag inserted after its MACs: `tpid`, then PCP (3 bits), DEI 0, VID
/// (12 bits).
fn tag(mut frame: Vec<u8>, tpid: u16, vid: u16, pcp: u8) -> Vec<u8> {
    assert!(vid <= 0x0fff && pcp <= 7);
    let tci = (u16::from(pcp) << 13) | vid;
    let mut t = tpid.to_be_bytes().to_vec();
    t.extend_from_slice(&tci.to_be_bytes());
    frame.splice(12..12, t);
    frame
}

/// `frame` tagged with 802.1Q VLAN `vid`, priority `pcp`.
fn dot1q(frame: Vec<u8>, vid: u16, pcp: u8) -> Vec<u8> {
    tag(frame, TPID_8021Q, vid, pcp)
}

/// A host on the LAN (behind the uplink): 02:00:00:00:VV:nn for 192.168.VV.nn.
fn lan_mac(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x02, 0, 0, 0, o[2], o[3]])
}

/// A container: Docker's MAC for its address.
fn ctr_mac(ip: Ipv4Addr) -> MacAddr {
    MacAddr::docker(ip)
}

fn addr(vlan: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, vlan, host)
}

/// A macvlan network on the LAN `192.168.SUBNET.0/24` (its router .1, which vswitch does not
/// answer for), with `extra` lines.
fn macvlan_net(name: &str, subnet: u8, extra: &str) -> String {
    format!(
        "[[network]]\n\
         name = \"{name}\"\n\
         driver = \"macvlan\"\n\
         subnet = \"192.168.{subnet}.0/24\"\n\
         gateway = \"192.168.{subnet}.1\"\n\
         {extra}\n"
    )
}

/// A container port with its MAC and address (under anti-spoofing, the only ones it may use).
fn ctr_port(name: &str, network: &str, ip: Ipv4Addr) -> String {
    format!(
        "[[port]]\n\
         name = \"{name}\"\n\
         kind = \"pcap\"\n\
         network = \"{network}\"\n\
         mac = \"{}\"\n\
         ip = \"{ip}\"\n\
         \n",
        ctr_mac(ip)
    )
}

/// The uplink port `up` with the host's address on the native LAN.
fn uplink() -> String {
    format!(
        "[[port]]\n\
         name = \"up\"\n\
         kind = \"pcap\"\n\
         \n\
         [uplink]\n\
         port = \"up\"\n\
         address = \"{UP_IP}\"\n\
         subnet = \"192.168.1.0/24\"\n\
         mac = \"{UP_MAC}\"\n"
    )
}

/// The port named `name` in summary.json's state (parent ports included).
fn port<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["state"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name} in {}", v["state"]["ports"]))
}

/// A port's counters: (rx_frames, forwarded, local, tx_frames, dropped of all reasons).
fn counts(v: &Value, name: &str) -> (u64, u64, u64, u64, u64) {
    let p = port(v, name);
    let n = |k: &str| {
        p[k].as_u64()
            .unwrap_or_else(|| panic!("{name}: no {k} in {p}"))
    };
    let dropped = p["drops"]
        .as_object()
        .unwrap_or_else(|| panic!("{name}: no drops in {p}"))
        .values()
        .map(|d| d.as_u64().unwrap())
        .sum();
    (
        n("rx_frames"),
        n("forwarded"),
        n("local"),
        n("tx_frames"),
        dropped,
    )
}

type FdbRow = (String, String, String, Option<u64>);

/// The FDB's rows as (network, MAC, port, VLAN) equal `want`, in any order.
fn assert_fdb(v: &Value, mut want: Vec<FdbRow>) {
    want.sort();
    assert_eq!(fdb(v), want);
}

/// The FDB as (network, MAC, port, VLAN) rows, sorted.
fn fdb(v: &Value) -> Vec<FdbRow> {
    let mut rows: Vec<_> = v["state"]["fdb"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["network"].as_str().unwrap().to_string(),
                r["mac"].as_str().unwrap().to_string(),
                r["port"].as_str().unwrap().to_string(),
                r["vlan"].as_u64(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn row(net: &str, mac: MacAddr, port: &str, vlan: Option<u64>) -> FdbRow {
    (net.to_string(), mac.to_string(), port.to_string(), vlan)
}

// ---------------------------------------------------------------------------------------------
// vlan-trunk

/// VLAN 10's containers and LAN host, VLAN 20's, and native-LAN hosts.
const A1: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 21);
const A2: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 22);
const H10: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 10);
const B1: Ipv4Addr = Ipv4Addr::new(192, 168, 20, 21);
const H20: Ipv4Addr = Ipv4Addr::new(192, 168, 20, 10);
const H30: Ipv4Addr = Ipv4Addr::new(192, 168, 30, 10);
const NATIVE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

fn trunk_topo() -> String {
    [
        macvlan_net("v10", 10, "vlan = 10"),
        macvlan_net("v20", 20, "vlan = 20\nanti_spoofing = false"),
        ctr_port("a1", "v10", A1),
        ctr_port("a2", "v10", A2),
        ctr_port("b1", "v20", B1),
        uplink(),
    ]
    .concat()
}

/// The ports the pipeline added, and the file's ports' `forwarded` (the harness checks it only
/// through `rx = forwarded + local + dropped`), and the FDB: the LAN hosts learned on their
/// network's parent port, with its VLAN.
fn trunk_summary(v: &Value) {
    // parent.10: H10's broadcast and unicast came in and were forwarded; a1's reply left.
    assert_eq!(counts(v, "parent.10"), (2, 2, 0, 1, 0));
    // parent.20: H20's broadcast in; b1's reply and its priority-tagged datagram out.
    assert_eq!(counts(v, "parent.20"), (1, 1, 0, 2, 0));
    assert_eq!(port(v, "parent.10")["network"], "v10");
    assert_eq!(port(v, "parent.20")["network"], "v20");
    // up: 7 in, 3 into the VLAN networks (local), 4 dropped, none forwarded; 3 out (tagged).
    assert_eq!(counts(v, "up"), (7, 0, 3, 3, 4));
    // a1: its ARP reply forwarded, its priority-tagged frame refused by anti-spoofing.
    assert_eq!(counts(v, "a1"), (2, 1, 0, 2, 1));
    assert_eq!(counts(v, "a2"), (0, 0, 0, 1, 0));
    assert_eq!(counts(v, "b1"), (2, 2, 0, 1, 0));
    assert_fdb(
        v,
        vec![
            row("v10", lan_mac(H10), "parent.10", Some(10)),
            row("v10", ctr_mac(A1), "a1", Some(10)),
            row("v20", lan_mac(H20), "parent.20", Some(20)),
            row("v20", ctr_mac(B1), "b1", Some(20)),
        ],
    );
}

fn vlan_trunk() -> Scenario {
    let mut s = Seq::new();
    let (h10, h20) = (lan_mac(H10), lan_mac(H20));
    let mut e_a1 = Vec::new();
    let mut e_a2 = Vec::new();
    let mut e_b1 = Vec::new();
    let mut e_up = Vec::new();

    // 1. VLAN 10's broadcast (who has a1?) from the trunk: to VLAN 10's containers, untagged.
    let who_a1 = build::arp_request(h10, H10, A1);
    let r = s.send("up", dot1q(who_a1.clone(), 10, 0));
    e_a1.push((r, who_a1.clone()));
    e_a2.push((r, who_a1));

    // 2. VLAN 20's broadcast (who has b1?): to b1 only.
    let who_b1 = build::arp_request(h20, H20, B1);
    let r = s.send("up", dot1q(who_b1.clone(), 20, 0));
    e_b1.push((r, who_b1));

    // 3. a1 answers H10 (learned behind parent.10): out of the trunk tagged 10, PCP 0.
    let a1_is_at = build::arp_reply(ctr_mac(A1), A1, h10, H10);
    let r = s.send("a1", a1_is_at.clone());
    e_up.push((r, dot1q(a1_is_at, 10, 0)));

    // 4. b1 answers H20: tagged 20.
    let b1_is_at = build::arp_reply(ctr_mac(B1), B1, h20, H20);
    let r = s.send("b1", b1_is_at.clone());
    e_up.push((r, dot1q(b1_is_at, 20, 0)));

    // 5. H10's datagram to a1 with priority 3: to a1 only (learned), the whole tag removed.
    let to_a1 = build::udp(h10, ctr_mac(A1), H10, A1, 5000, 6000, b"H10 to a1, PCP 3");
    let r = s.send("up", dot1q(to_a1.clone(), 10, 3));
    e_a1.push((r, to_a1));

    // 6. VLAN 30, which no network has: vlan_unknown.
    let who_30 = build::arp_request(lan_mac(H30), H30, addr(30, 21));
    s.send("up", dot1q(who_30, 30, 0));

    // 7. QinQ with two 802.1Q tags (outer 10, inner 20) and 8. 802.1ad (S-tag 0x88a8 VID 100
    // over a C-tag 10): vlan_qinq, not VLAN 10's.
    let double = build::udp(h10, ctr_mac(A1), H10, A1, 5000, 6001, b"double tagged");
    s.send("up", dot1q(dot1q(double, 20, 0), 10, 0));
    let ad = build::udp(h10, ctr_mac(A1), H10, A1, 5000, 6002, b"802.1ad S-tag");
    s.send("up", tag(dot1q(ad, 10, 0), TPID_8021AD, 100, 0));

    // 9. An untagged broadcast (who has another native-LAN host?) with no untagged macvlan
    // network: the gateway's, which answers only for the uplink address: not_for_us.
    let who_native = build::arp_request(lan_mac(NATIVE), NATIVE, addr(1, 50));
    s.send("up", who_native);

    // 10. b1 (v20, no anti-spoofing) sends H20 a priority-tagged datagram (VID 0, PCP 5): out
    // of the trunk tagged 20 with PCP 5 (the priority tag replaced, not stacked).
    let prio = build::udp(ctr_mac(B1), h20, B1, H20, 41000, 42000, b"b1 voice, PCP 5");
    let r = s.send("b1", dot1q(prio.clone(), 0, 5));
    e_up.push((r, dot1q(prio, 20, 5)));

    // 11. a1 (v10, anti-spoofing on) tries the same: the tag would hide its IP header from the
    // check, so it is refused (spoofed_ip) before it is learned or forwarded.
    let prio_a1 = build::udp(ctr_mac(A1), h10, A1, H10, 41000, 42000, b"a1 voice, PCP 5");
    s.send("a1", dot1q(prio_a1, 0, 5));

    Scenario {
        name: "vlan-trunk",
        readme: "802.1Q VLANs on a trunk uplink: macvlan networks v10 (VLAN 10: a1, a2) and v20 (VLAN 20,\n\
                 anti_spoofing = false: b1), no untagged macvlan network; the uplink `up` is the host's\n\
                 192.168.1.2/24 on the native (untagged) LAN. Container ports are access ports (untagged).\n\
                 The pipeline adds parent.10 and parent.20 (no captures; counters in summary.json).\n\
                 In on up: a broadcast ARP tagged 10 and one tagged 20; a datagram tagged 10 (PCP 3) to a1;\n\
                 an ARP tagged 30; a QinQ frame (0x8100 10 over 0x8100 20); an 802.1ad frame (0x88a8 100\n\
                 over 0x8100 10); an untagged broadcast ARP for another native host. From a1 and b1: ARP\n\
                 replies to the LAN hosts; from b1 and a1 each a priority-tagged datagram (VID 0, PCP 5).\n\
                 Out: the VLAN 10 broadcast to a1 and a2 untagged (not b1), the VLAN 20 one to b1 only, the\n\
                 datagram to a1 only with its tag removed; a1's reply on up tagged 10, b1's tagged 20;\n\
                 b1's priority-tagged datagram on up tagged 20 with PCP 5 (tag replaced, not stacked).\n\
                 Drops: the VLAN 30 frame vlan_unknown on up, the QinQ and 802.1ad frames vlan_qinq on up,\n\
                 the untagged broadcast not_for_us on up (the gateway's: no untagged macvlan network), a1's\n\
                 priority-tagged frame spoofed_ip on a1 (v10 has anti-spoofing; a tag hides the IP header).\n\
                 Frames from up into v10/v20 count local on up, their outcome on the parent port.\n",
        topo: trunk_topo(),
        input: s,
        expect: vec![("a1", e_a1), ("a2", e_a2), ("b1", e_b1), ("up", e_up)],
        drops: vec![
            ("up", "vlan_unknown", 1),
            ("up", "vlan_qinq", 2),
            ("up", "not_for_us", 1),
            ("a1", "spoofed_ip", 1),
        ],
        local: vec![("up", 3)],
        bridge: vec![
            ("fdb_learned", 4),
            ("fdb_moved", 0),
            // The two broadcasts: a1 and a2, then b1.
            ("flooded_copies", 3),
            ("multicast_flooded", 2),
            ("arp_replies_sent", 0),
            ("echo_replies_sent", 0),
        ],
        summary: trunk_summary,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            port: "up",
            verbose: false,
            lines: Some(3),
            contains: vec![
                "02:42:c0:a8:0a:15 > 02:00:00:00:0a:0a, ethertype 802.1Q (0x8100), length 46: vlan 10, p 0, ethertype ARP (0x0806), Reply 192.168.10.21 is-at 02:42:c0:a8:0a:15",
                "vlan 20, p 0, ethertype ARP (0x0806), Reply 192.168.20.21 is-at 02:42:c0:a8:14:15",
                "vlan 20, p 5, ethertype IPv4 (0x0800), 192.168.20.21.41000 > 192.168.20.10.42000: UDP, length 15",
            ],
        },
    }
}

// ---------------------------------------------------------------------------------------------
// macvlan-modes

const L1: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 21);
const L2: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 22);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const P1: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 31);
const P2: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 32);

fn modes_topo() -> String {
    [
        macvlan_net("lan", 1, "macvlan_mode = \"bridge\""),
        macvlan_net("v10", 10, "vlan = 10\nmacvlan_mode = \"private\""),
        ctr_port("l1", "lan", L1),
        ctr_port("l2", "lan", L2),
        ctr_port("p1", "v10", P1),
        ctr_port("p2", "v10", P2),
        uplink(),
    ]
    .concat()
}

fn modes_summary(v: &Value) {
    // parent: HOST's broadcast in (the ARP for the uplink and the ping are the gateway's);
    // l1's reply and its datagram to HOST out.
    assert_eq!(counts(v, "parent"), (1, 1, 0, 2, 0));
    // parent.10: H10's datagram to p2 and its broadcast in; p2's and p1's frames out.
    assert_eq!(counts(v, "parent.10"), (2, 2, 0, 2, 0));
    // up: 5 in, all local (3 into networks, 2 answered by the gateway); 6 out.
    assert_eq!(counts(v, "up"), (5, 0, 5, 6, 0));
    assert_eq!(counts(v, "l1"), (3, 3, 0, 2, 0));
    assert_eq!(counts(v, "l2"), (1, 1, 0, 2, 0));
    assert_eq!(counts(v, "p1"), (2, 1, 0, 1, 1));
    assert_eq!(counts(v, "p2"), (1, 1, 0, 2, 0));
    assert_fdb(
        v,
        vec![
            row("lan", ctr_mac(L1), "l1", None),
            row("lan", ctr_mac(L2), "l2", None),
            row("lan", lan_mac(HOST), "parent", None),
            row("v10", ctr_mac(P1), "p1", Some(10)),
            row("v10", ctr_mac(P2), "p2", Some(10)),
            row("v10", lan_mac(H10), "parent.10", Some(10)),
        ],
    );
}

fn macvlan_modes() -> Scenario {
    let mut s = Seq::new();
    let host = lan_mac(HOST);
    let h10 = lan_mac(H10);
    let (l1, l2, p1, p2) = (ctr_mac(L1), ctr_mac(L2), ctr_mac(P1), ctr_mac(P2));
    let mut e_l1 = Vec::new();
    let mut e_l2 = Vec::new();
    let mut e_p1 = Vec::new();
    let mut e_p2 = Vec::new();
    let mut e_up = Vec::new();

    // 1. A LAN host asks who has l1 (untagged broadcast): to l1 and l2, not to VLAN 10's p1, p2.
    let who_l1 = build::arp_request(host, HOST, L1);
    let r = s.send("up", who_l1);
    e_l1.push(s.same(r));
    e_l2.push(s.same(r));

    // 2. l1 answers: out of up as it is (l1's own MAC and address, untagged).
    let r = s.send("l1", build::arp_reply(l1, L1, host, HOST));
    e_up.push(s.same(r));

    // 3. Bridge mode: l2 to l1 (learned) and 4. l1 to l2 (learned from 3) go directly, only
    // to each other.
    let r = s.send("l2", build::udp(l2, l1, L2, L1, 4000, 4001, b"l2 to l1"));
    e_l1.push(s.same(r));
    let r = s.send("l1", build::udp(l1, l2, L1, L2, 4001, 4000, b"l1 to l2"));
    e_l2.push(s.same(r));

    // 5. l1 to the LAN host: out of up unchanged (no NAT: same addresses, ports and MACs).
    let r = s.send(
        "l1",
        build::udp(l1, host, L1, HOST, 40000, 9000, b"l1 to the LAN, no NAT"),
    );
    e_up.push(s.same(r));

    // 6. Private mode: p2 speaks first, to a LAN host of VLAN 10 (not learned yet): only to
    // the LAN, tagged 10 (never flooded to p1).
    let p2_out = build::udp(p2, h10, P2, H10, 5000, 8080, b"p2 to the VLAN 10 LAN");
    let r = s.send("p2", p2_out.clone());
    e_up.push((r, dot1q(p2_out, 10, 0)));

    // 7. p1 to p2 (learned on p2): macvlan_private on p1.
    s.send(
        "p1",
        build::udp(p1, p2, P1, P2, 5001, 5002, b"p1 to p2: refused"),
    );

    // 8. p1's broadcast: to the LAN only (tagged 10), not to p2.
    let who_h10 = build::arp_request(p1, P1, H10);
    let r = s.send("p1", who_h10.clone());
    e_up.push((r, dot1q(who_h10, 10, 0)));

    // 9. The LAN reaches p2 (learned): to p2 only, untagged; 10. and a LAN broadcast on VLAN 10
    // reaches both containers.
    let to_p2 = build::udp(h10, p2, H10, P2, 8080, 5000, b"VLAN 10 LAN to p2");
    let r = s.send("up", dot1q(to_p2.clone(), 10, 0));
    e_p2.push((r, to_p2));
    let bcast10 = build::udp(
        h10,
        MacAddr::BROADCAST,
        H10,
        addr(10, 255),
        9999,
        9998,
        b"VLAN 10 LAN broadcast",
    );
    let r = s.send("up", dot1q(bcast10.clone(), 10, 0));
    e_p1.push((r, bcast10.clone()));
    e_p2.push((r, bcast10));

    // 11. The LAN host asks who has the uplink address: the gateway answers (it still owns
    // it); not flooded to l1, l2. 12. Its ping to the uplink address: the gateway's echo reply
    // (MACs and addresses swapped, TTL 64, type 0, identifier, sequence and payload kept).
    let r = s.send("up", build::arp_request(host, HOST, UP_IP));
    e_up.push((r, build::arp_reply(UP_MAC, UP_IP, host, HOST)));
    let r = s.send(
        "up",
        build::icmp_echo(host, UP_MAC, HOST, UP_IP, true, 7, 1, b"ping the host"),
    );
    e_up.push((
        r,
        build::icmp_echo(UP_MAC, host, UP_IP, HOST, false, 7, 1, b"ping the host"),
    ));

    Scenario {
        name: "macvlan-modes",
        readme: "Macvlan modes: network lan (untagged, bridge mode: l1, l2) and v10 (VLAN 10, private\n\
                 mode: p1, p2) bridged onto the uplink's LAN; the uplink `up` is the host's 192.168.1.2/24.\n\
                 No gateway, no NAT for the containers. The pipeline adds parent and parent.10 (no\n\
                 captures; counters in summary.json).\n\
                 In: a LAN host broadcasts who-has l1; l1 answers; l2 -> l1 and l1 -> l2; l1 -> the LAN host;\n\
                 p2 -> a VLAN 10 LAN host; p1 -> p2; p1 broadcasts an ARP request; the VLAN 10 LAN host ->\n\
                 p2 and a VLAN 10 broadcast (tagged on up); the LAN host's ARP for 192.168.1.2 and ping.\n\
                 Out: the broadcast to l1 and l2 (not p1, p2); l1's reply and l1's datagram on up untagged\n\
                 and unchanged (same MACs and addresses); l2 -> l1 and l1 -> l2 directly to each other only;\n\
                 p2's datagram on up tagged 10 (not flooded to p1); p1 -> p2 dropped macvlan_private on p1;\n\
                 p1's broadcast on up tagged 10 only (not p2); the LAN -> p2 to p2 only and the VLAN 10\n\
                 broadcast to p1 and p2, untagged; the gateway's ARP reply and echo reply on up (the host\n\
                 still owns the uplink address; l1, l2 do not see the ARP for it).\n",
        topo: modes_topo(),
        input: s,
        expect: vec![
            ("l1", e_l1),
            ("l2", e_l2),
            ("p1", e_p1),
            ("p2", e_p2),
            ("up", e_up),
        ],
        drops: vec![("p1", "macvlan_private", 1)],
        local: vec![("up", 5)],
        bridge: vec![
            ("fdb_learned", 6),
            ("fdb_moved", 0),
            // The LAN's broadcast (l1, l2) and VLAN 10's (p1, p2); private mode sends p1's
            // broadcast and p2's unknown unicast to the LAN alone, not as a flood.
            ("flooded_copies", 4),
            ("multicast_flooded", 2),
            ("arp_replies_sent", 1),
            ("echo_replies_sent", 1),
        ],
        summary: modes_summary,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            port: "up",
            verbose: false,
            lines: Some(6),
            contains: vec![
                "02:42:c0:a8:01:15 > 02:00:00:00:01:0a, ethertype ARP (0x0806), length 42: Reply 192.168.1.21 is-at 02:42:c0:a8:01:15",
                "02:42:c0:a8:01:15 > 02:00:00:00:01:0a, ethertype IPv4 (0x0800), length 63: 192.168.1.21.40000 > 192.168.1.10.9000: UDP, length 21",
                "ethertype 802.1Q (0x8100), length 67: vlan 10, p 0, ethertype IPv4 (0x0800), 192.168.10.32.5000 > 192.168.10.10.8080: UDP, length 21",
                "vlan 10, p 0, ethertype ARP (0x0806), Request who-has 192.168.10.10 tell 192.168.10.31",
                "Reply 192.168.1.2 is-at 02:00:00:00:00:99",
                "192.168.1.2 > 192.168.1.10: ICMP echo reply, id 7, seq 1",
            ],
        },
    }
}

#[test]
fn golden_vlan_trunk() {
    harness(REGEN_HINT).check(vlan_trunk());
}

#[test]
fn golden_macvlan_modes() {
    harness(REGEN_HINT).check(macvlan_modes());
}

#[test]
fn vlan_fixtures_are_described() {
    assert_eq!(VLAN_SCENARIOS, &[vlan_trunk().name, macvlan_modes().name]);
    testkit::golden::assert_distinct_inputs(&[vlan_trunk(), macvlan_modes()]);
}
