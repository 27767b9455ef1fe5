//! Golden pcap scenarios: the fixtures under `pcap-fixtures/` and the checker that keeps them
//! honest.
//!
//! Each scenario is described here in Rust: its topology, its input frames (built with
//! `testkit::frames`, i.e. etherparse, independent of the smoltcp views the pipeline parses with),
//! and the output it must produce, written by reasoning about what a learning bridge does and
//! NOT by running the code under test: for every port, the input frames it must carry in order,
//! the drop counts by reason, and some bridge event counters.
//!
//! Normal run: the committed `in/*.pcap` must equal the description, the replay of them must equal
//! the committed `expected/*.pcap` byte for byte and the described output frame for frame, the
//! counters must add up, two replays must be byte-identical, and `tcpdump` (an independent
//! reader) must decode the expected files as described.
//!
//! Regenerate the fixtures after changing a description (the deliberate flag):
//!
//! ```sh
//! VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden
//! ```
//!
//! This rewrites `topo.toml`, `README.md` and `in/`, replays, and writes `expected/` only after
//! asserting that the output equals the described expectation.

// Test helpers outside #[test] fns, where clippy's allow-unwrap-in-tests does not reach.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    IPV6_SCENARIOS, NAT_SCENARIOS, OFFLOAD_SCENARIOS, OVERLAY_SCENARIOS, fixtures_root, harness,
};
use packet::MacAddr;
use std::net::Ipv4Addr;
use std::time::Duration;
use testkit::frames as build;
use testkit::golden::{
    Forwarding, FrameRef, Out, Scenario, Seq, TcpdumpCheck, assert_distinct_inputs, fixture_dirs,
    no_check, regen_requested,
};
use testkit::topology::{Topo, lan};

/// Host `n`: locally administered unicast MAC 02:00:00:00:00:nn, IPv4 10.0.0.n.
fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

/// A UDP datagram from host `src` to host `dst` (or to broadcast), carrying `tag` so that every
/// frame of a scenario is distinct.
fn udp(src: u8, dst: Option<u8>, tag: &str) -> Vec<u8> {
    let (dmac, dip) = match dst {
        Some(d) => (mac(d), ip(d)),
        None => (MacAddr::BROADCAST, Ipv4Addr::new(10, 0, 0, 255)),
    };
    build::udp(mac(src), dmac, ip(src), dip, 40000, 50000, tag.as_bytes())
}

/// Outputs of a bridged scenario: per port, input frames that leave it unchanged.
fn unchanged(
    input: &Seq,
    expect: Vec<(&'static str, Vec<FrameRef>)>,
) -> Vec<(&'static str, Vec<Out>)> {
    expect
        .into_iter()
        .map(|(port, refs)| (port, refs.into_iter().map(|r| input.same(r)).collect()))
        .collect()
}

/// Three pcap ports p1, p2, p3 on network `lan`.
fn three_ports() -> String {
    lan(3).build()
}

fn two_hosts_learn() -> Scenario {
    let mut s = Seq::new();
    // Host 1 behind p1, host 2 behind p2, nobody behind p3.
    let a1 = s.send("p1", udp(1, Some(2), "1->2 first"));
    let b1 = s.send("p2", udp(2, Some(1), "2->1 reply"));
    let a2 = s.send("p1", udp(1, Some(2), "1->2 second"));
    Scenario {
        name: "two-hosts-learn",
        readme: "Three ports on one network; host .1 on p1, host .2 on p2.\n\
                 In: 1->2 (2 unknown), 2->1, 1->2 again.\n\
                 Out: the first frame floods to p2 and p3 (unknown unicast, never back to p1);\n\
                 2->1 goes only to p1 (learned from the first frame); the second 1->2 goes only\n\
                 to p2 (learned from the reply). p3 sees only the first flood.\n",
        topo: three_ports(),
        expect: unchanged(
            &s,
            vec![("p1", vec![b1]), ("p2", vec![a1, a2]), ("p3", vec![a1])],
        ),
        input: s,
        drops: vec![],
        bridge: vec![("fdb_learned", 2), ("flooded_copies", 2), ("fdb_moved", 0)],
        local: vec![],
        summary: no_check,
        forwarding: Forwarding::Bridged,
        tshark: false,
        tcpdump: TcpdumpCheck {
            port: "p2",
            verbose: false,
            lines: Some(2),
            contains: vec![
                "02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 (0x0800)",
                "10.0.0.1.40000 > 10.0.0.2.50000: UDP, length 10",
                "10.0.0.1.40000 > 10.0.0.2.50000: UDP, length 11",
            ],
        },
    }
}

fn arp_broadcast_flood() -> Scenario {
    let mut s = Seq::new();
    let req = s.send("p1", build::arp_request(mac(1), ip(1), ip(2)));
    let rep = s.send("p2", build::arp_reply(mac(2), ip(2), mac(1), ip(1)));
    let req2 = s.send("p3", build::arp_request(mac(3), ip(3), ip(1)));
    Scenario {
        name: "arp-broadcast-flood",
        readme: "Four ports on one network. In: .1 on p1 asks who-has 10.0.0.2 (broadcast);\n\
                 .2 on p2 replies (unicast to .1); .3 on p3 asks who-has 10.0.0.1.\n\
                 Out: each request reaches every other port of the network and never its\n\
                 ingress port; the reply reaches only p1, where .1 was learned.\n",
        topo: lan(4).build(),
        expect: unchanged(
            &s,
            vec![
                ("p1", vec![rep, req2]),
                ("p2", vec![req, req2]),
                ("p3", vec![req]),
                ("p4", vec![req, req2]),
            ],
        ),
        input: s,
        drops: vec![],
        bridge: vec![("fdb_learned", 3), ("flooded_copies", 6)],
        local: vec![],
        summary: no_check,
        forwarding: Forwarding::Bridged,
        tshark: false,
        tcpdump: TcpdumpCheck {
            port: "p1",
            verbose: false,
            lines: Some(2),
            contains: vec![
                "02:00:00:00:00:02 > 02:00:00:00:00:01, ethertype ARP (0x0806)",
                "Reply 10.0.0.2 is-at 02:00:00:00:00:02",
                "02:00:00:00:00:03 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806)",
                "Request who-has 10.0.0.1 tell 10.0.0.3",
            ],
        },
    }
}

fn unknown_unicast_then_learned() -> Scenario {
    let mut s = Seq::new();
    // Host 3 (behind p3) stays silent at first.
    let x1 = s.send("p1", udp(1, Some(3), "1->3 a"));
    let x2 = s.send("p1", udp(1, Some(3), "1->3 b"));
    let bc = s.send("p3", udp(3, None, "3->all"));
    let x3 = s.send("p1", udp(1, Some(3), "1->3 c"));
    let y1 = s.send("p2", udp(2, Some(3), "2->3"));
    let z1 = s.send("p3", udp(3, Some(2), "3->2"));
    Scenario {
        name: "unknown-unicast-then-learned",
        readme: "Three ports. In: .1 (p1) sends twice to .3, which has not spoken yet; .3 (p3)\n\
                 broadcasts; then .1 -> .3, .2 (p2) -> .3 and .3 -> .2.\n\
                 Out: both early frames to .3 flood to p2 and p3; the broadcast floods to p1 and\n\
                 p2; once .3 is learned every frame to it goes only to p3, and .3 -> .2 only to p2.\n",
        topo: three_ports(),
        expect: unchanged(
            &s,
            vec![
                ("p1", vec![bc]),
                ("p2", vec![x1, x2, bc, z1]),
                ("p3", vec![x1, x2, x3, y1]),
            ],
        ),
        input: s,
        drops: vec![],
        bridge: vec![("fdb_learned", 3), ("flooded_copies", 6)],
        local: vec![],
        summary: no_check,
        forwarding: Forwarding::Bridged,
        tshark: false,
        tcpdump: TcpdumpCheck {
            port: "p3",
            verbose: false,
            lines: Some(4),
            contains: vec![
                "02:00:00:00:00:01 > 02:00:00:00:00:03",
                "02:00:00:00:00:02 > 02:00:00:00:00:03",
                "10.0.0.2.40000 > 10.0.0.3.50000: UDP",
            ],
        },
    }
}

fn aging_expiry() -> Scenario {
    let mut s = Seq::new();
    let a1 = s.send("p1", udp(1, Some(2), "1->2 flood"));
    let b1 = s.send("p2", udp(2, Some(1), "2->1"));
    let a2 = s.send("p1", udp(1, Some(2), "1->2 learned"));
    // aging_secs = 2: five seconds of silence forget both hosts.
    s.wait(Duration::from_secs(5));
    let a3 = s.send("p1", udp(1, Some(2), "1->2 after aging"));
    let b2 = s.send("p2", udp(2, Some(1), "2->1 after aging"));
    Scenario {
        name: "aging-expiry",
        readme: "Three ports, aging_secs = 2. In: 1->2, 2->1, 1->2, then 5 s of silence, then\n\
                 1->2 and 2->1 again.\n\
                 Out: before the pause .2 is learned, so the third frame goes only to p2; after\n\
                 the pause both entries have expired, so 1->2 floods to p2 and p3 again, while\n\
                 2->1 goes only to p1 (.1 was re-learned 1 ms earlier).\n",
        topo: Topo::new()
            .bridge(&[("aging_secs", "2")])
            .extend(lan(3))
            .build(),
        expect: unchanged(
            &s,
            vec![
                ("p1", vec![b1, b2]),
                ("p2", vec![a1, a2, a3]),
                ("p3", vec![a1, a3]),
            ],
        ),
        input: s,
        drops: vec![],
        bridge: vec![("fdb_aged", 2), ("fdb_learned", 4), ("flooded_copies", 4)],
        local: vec![],
        summary: no_check,
        forwarding: Forwarding::Bridged,
        tshark: false,
        tcpdump: TcpdumpCheck {
            port: "p3",
            verbose: false,
            lines: Some(2),
            contains: vec!["02:00:00:00:00:01 > 02:00:00:00:00:02"],
        },
    }
}

fn station_move() -> Scenario {
    let mut s = Seq::new();
    // Host 9 starts behind p1, then moves behind p3 (e.g. a migrated VM) and announces itself
    // with a gratuitous ARP.
    let m1 = s.send("p1", udp(9, None, "9 on p1"));
    let b1 = s.send("p2", udp(2, Some(9), "2->9 before"));
    let garp = s.send("p3", build::arp_request(mac(9), ip(9), ip(9)));
    let b2 = s.send("p2", udp(2, Some(9), "2->9 after"));
    Scenario {
        name: "station-move",
        readme: "Three ports. In: .9 broadcasts from p1; .2 (p2) sends to .9; .9 moves to p3\n\
                 and sends a gratuitous ARP; .2 sends to .9 again.\n\
                 Out: the first 2->9 goes only to p1; the gratuitous ARP floods to p1 and p2 and\n\
                 moves .9 to p3 (fdb_moved = 1); the second 2->9 goes only to p3, never p1.\n",
        topo: three_ports(),
        expect: unchanged(
            &s,
            vec![
                ("p1", vec![b1, garp]),
                ("p2", vec![m1, garp]),
                ("p3", vec![m1, b2]),
            ],
        ),
        input: s,
        drops: vec![],
        bridge: vec![("fdb_moved", 1), ("fdb_learned", 2)],
        local: vec![],
        summary: no_check,
        forwarding: Forwarding::Bridged,
        tshark: false,
        tcpdump: TcpdumpCheck {
            port: "p3",
            verbose: false,
            lines: Some(2),
            contains: vec![
                "02:00:00:00:00:09 > ff:ff:ff:ff:ff:ff",
                "02:00:00:00:00:02 > 02:00:00:00:00:09",
                "10.0.0.2.40000 > 10.0.0.9.50000: UDP",
            ],
        },
    }
}

fn isolated_networks() -> Scenario {
    let mut s = Seq::new();
    // The same two MACs (.1 and .2) live on both networks.
    let r_req = s.send("r1", build::arp_request(mac(1), ip(1), ip(2)));
    let b_req = s.send("b1", build::arp_request(mac(1), ip(1), ip(3)));
    let r_rep = s.send("r2", build::arp_reply(mac(2), ip(2), mac(1), ip(1)));
    let b_uni = s.send("b2", udp(2, Some(1), "blue 2->1"));
    let b_unk = s.send("b2", udp(2, Some(7), "blue 2->7"));
    let r_bc = s.send("r2", udp(2, None, "red 2->all"));
    Scenario {
        name: "isolated-networks",
        readme: "Two networks, red (r1, r2) and blue (b1, b2), with the same MACs .1 and .2 on\n\
                 both. In: ARP requests from .1 on r1 and on b1, .2 answers/sends from r2 and b2,\n\
                 an unknown unicast and a broadcast.\n\
                 Out: every frame stays on its own network: floods reach only the other port of\n\
                 the same network, and the shared MACs never count as station moves.\n",
        topo: Topo::new()
            .network("red")
            .network("blue")
            .ports("red", &["r1", "r2"])
            .ports("blue", &["b1", "b2"])
            .build(),
        expect: unchanged(
            &s,
            vec![
                ("r1", vec![r_rep, r_bc]),
                ("r2", vec![r_req]),
                ("b1", vec![b_uni, b_unk]),
                ("b2", vec![b_req]),
            ],
        ),
        input: s,
        drops: vec![],
        bridge: vec![("fdb_learned", 4), ("fdb_moved", 0), ("flooded_copies", 4)],
        local: vec![],
        summary: no_check,
        forwarding: Forwarding::Bridged,
        tshark: false,
        tcpdump: TcpdumpCheck {
            port: "r2",
            verbose: false,
            lines: Some(1),
            contains: vec!["Request who-has 10.0.0.2 tell 10.0.0.1"],
        },
    }
}

fn mac_flood_cap() -> Scenario {
    let mut s = Seq::new();
    let hello = s.send("p2", udp(2, None, "2 hello"));
    // Ten hosts (.10 to .19) behind p1, which may teach at most 4 MACs.
    let tags = [
        "10->2", "11->2", "12->2", "13->2", "14->2", "15->2", "16->2", "17->2", "18->2", "19->2",
    ];
    let from_many: Vec<FrameRef> = (10u8..20)
        .zip(tags)
        .map(|(h, tag)| s.send("p1", udp(h, Some(2), tag)))
        .collect();
    let to10 = s.send("p2", udp(2, Some(10), "2->10"));
    let to13 = s.send("p2", udp(2, Some(13), "2->13"));
    let to14 = s.send("p2", udp(2, Some(14), "2->14"));
    let to19 = s.send("p2", udp(2, Some(19), "2->19"));
    Scenario {
        name: "mac-flood-cap",
        readme: "Three ports, max_macs_per_port = 4. In: .2 (p2) broadcasts; ten hosts .10-.19\n\
                 behind p1 each send to .2; .2 sends to .10, .13, .14 and .19.\n\
                 Out: all ten reach p2 (forwarded, .2 is known); only .10-.13 are learned, the\n\
                 six others count in bridge.fdb_cap_reached; frames to .10/.13 go only to p1,\n\
                 frames to .14/.19 (never learned) flood to p1 and p3.\n",
        topo: Topo::new()
            .bridge(&[("max_macs_per_port", "4")])
            .extend(lan(3))
            .build(),
        expect: unchanged(
            &s,
            vec![
                ("p1", vec![hello, to10, to13, to14, to19]),
                ("p2", from_many),
                ("p3", vec![hello, to14, to19]),
            ],
        ),
        input: s,
        drops: vec![],
        bridge: vec![
            ("fdb_cap_reached", 6),
            ("fdb_learned", 5),
            ("flooded_copies", 6),
        ],
        local: vec![],
        summary: no_check,
        forwarding: Forwarding::Bridged,
        tshark: false,
        tcpdump: TcpdumpCheck {
            port: "p3",
            verbose: false,
            lines: Some(3),
            contains: vec![
                "02:00:00:00:00:02 > 02:00:00:00:00:0e",
                "02:00:00:00:00:02 > 02:00:00:00:00:13",
                "10.0.0.2.40000 > 10.0.0.19.50000: UDP",
            ],
        },
    }
}

fn bad_frames() -> Scenario {
    let mut s = Seq::new();
    let good = udp(1, Some(2), "template");
    // 13 bytes: one byte short of an Ethernet header (14 would be accepted).
    s.send("p1", good[..13].to_vec());
    // 1519 bytes: one more than MTU 1500 + 14-byte header + 4-byte VLAN tag.
    s.send(
        "p1",
        build::udp(mac(1), mac(2), ip(1), ip(2), 1, 2, &[0u8; 1477]),
    );
    let mut mcast_src = udp(1, Some(2), "mcast src");
    mcast_src[6..12].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
    s.send("p1", mcast_src);
    let mut bcast_src = udp(1, Some(2), "bcast src");
    bcast_src[6..12].copy_from_slice(&MacAddr::BROADCAST.0);
    s.send("p1", bcast_src);
    let mut zero_src = udp(1, Some(2), "zero src");
    zero_src[6..12].copy_from_slice(&MacAddr::ZERO.0);
    s.send("p1", zero_src);
    // .1 talks to itself: learned on p1 by this very frame, so its destination is the ingress.
    s.send("p1", udp(1, Some(1), "1->1"));
    // .3, also behind p1, to .1 (learned on p1): hairpin, never sent back out.
    s.send("p1", udp(3, Some(1), "3->1"));
    // An empty record on another port.
    s.send("p2", Vec::new());
    Scenario {
        name: "bad-frames",
        readme: "Three ports. In on p1: a 13-byte runt, a 1519-byte frame (MTU 1500 allows\n\
                 1518), frames with multicast, broadcast and all-zero source MACs, a frame from\n\
                 .1 to itself and one from .3 to .1 (both behind p1); on p2 an empty record.\n\
                 Out: nothing on any port; each frame is dropped and counted under its reason\n\
                 (runt, oversize, invalid_src_mac, same_port).\n",
        topo: three_ports(),
        expect: unchanged(&s, vec![]),
        input: s,
        drops: vec![
            ("p1", "runt", 1),
            ("p1", "oversize", 1),
            ("p1", "invalid_src_mac", 3),
            ("p1", "same_port", 2),
            ("p2", "runt", 1),
        ],
        bridge: vec![("fdb_learned", 2), ("flooded_copies", 0)],
        local: vec![],
        summary: no_check,
        forwarding: Forwarding::Bridged,
        tshark: false,
        tcpdump: TcpdumpCheck {
            port: "p3",
            verbose: false,
            lines: Some(0),
            contains: vec![],
        },
    }
}

fn size_boundaries() -> Scenario {
    let mut s = Seq::new();
    // The shortest accepted frame: a bare 14-byte Ethernet header (TAP/veth do not pad).
    let bare = s.send(
        "p1",
        build::ethernet(mac(1), MacAddr::BROADCAST, 0x88b5, &[]),
    );
    // The longest accepted frame: 1518 bytes.
    let max = s.send(
        "p2",
        build::udp(mac(2), mac(1), ip(2), ip(1), 1, 2, &[0xab; 1476]),
    );
    s.send(
        "p1",
        build::ethernet(mac(1), MacAddr::BROADCAST, 0x88b5, &[])[..13].to_vec(),
    );
    s.send(
        "p2",
        build::udp(mac(2), mac(1), ip(2), ip(1), 1, 2, &[0xab; 1477]),
    );
    Scenario {
        name: "size-boundaries",
        readme: "Three ports, MTU 1500. In: a bare 14-byte header broadcast from p1, a 1518-byte\n\
                 frame from p2 to .1, then a 13-byte frame on p1 and a 1519-byte one on p2.\n\
                 Out: the two frames on the limits pass (flood to p2/p3; unicast to p1); the two\n\
                 just past them are dropped as runt and oversize.\n",
        topo: three_ports(),
        expect: unchanged(
            &s,
            vec![("p1", vec![max]), ("p2", vec![bare]), ("p3", vec![bare])],
        ),
        input: s,
        drops: vec![("p1", "runt", 1), ("p2", "oversize", 1)],
        bridge: vec![("fdb_learned", 2)],
        local: vec![],
        summary: no_check,
        forwarding: Forwarding::Bridged,
        tshark: false,
        tcpdump: TcpdumpCheck {
            port: "p1",
            verbose: false,
            lines: Some(1),
            contains: vec!["02:00:00:00:00:02 > 02:00:00:00:00:01", "length 1518"],
        },
    }
}

fn all_scenarios() -> Vec<Scenario> {
    vec![
        two_hosts_learn(),
        arp_broadcast_flood(),
        unknown_unicast_then_learned(),
        aging_expiry(),
        station_move(),
        isolated_networks(),
        mac_flood_cap(),
        bad_frames(),
        size_boundaries(),
    ]
}

const REGEN_HINT: &str = "if the description changed on purpose, run: VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden";

fn check(sc: Scenario) {
    harness(REGEN_HINT).check(sc);
}

#[test]
fn golden_two_hosts_learn() {
    check(two_hosts_learn());
}

#[test]
fn golden_arp_broadcast_flood() {
    check(arp_broadcast_flood());
}

#[test]
fn golden_unknown_unicast_then_learned() {
    check(unknown_unicast_then_learned());
}

#[test]
fn golden_aging_expiry() {
    check(aging_expiry());
}

#[test]
fn golden_station_move() {
    check(station_move());
}

#[test]
fn golden_isolated_networks() {
    check(isolated_networks());
}

#[test]
fn golden_mac_flood_cap() {
    check(mac_flood_cap());
}

#[test]
fn golden_bad_frames() {
    check(bad_frames());
}

#[test]
fn golden_size_boundaries() {
    check(size_boundaries());
}

/// Every folder under pcap-fixtures/ is a scenario described here (no orphaned fixtures), and
/// every described scenario has distinct frames (so "port X carried frame Y" is unambiguous).
#[test]
fn fixtures_and_descriptions_agree() {
    let scenarios = all_scenarios();
    let mut described: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    if regen_requested() {
        for s in &scenarios {
            std::fs::create_dir_all(fixtures_root().join(s.name)).unwrap();
        }
    }
    // The gateway/NAT scenarios are described (and checked) by golden_nat.rs.
    described.extend_from_slice(NAT_SCENARIOS);
    described.extend_from_slice(OFFLOAD_SCENARIOS);
    described.extend_from_slice(IPV6_SCENARIOS);
    described.extend_from_slice(OVERLAY_SCENARIOS);
    described.sort_unstable();
    assert_eq!(fixture_dirs(&fixtures_root()), described);
    assert_distinct_inputs(&scenarios);
}
