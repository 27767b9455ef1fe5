//! Golden pcap scenarios of IPv6 at the gateway: neighbour discovery, router advertisements,
//! echo, anti-spoofing with RA guard, NAT66 out and back, a published port for an IPv6 client,
//! hop-limit and packet-too-big errors and an ICMPv6 error translated outer and inner.
//!
//! As in `golden_nat.rs`, expected frames are built here (testkit's etherparse builders, every
//! checksum from scratch) from what an IPv6 router must send (RFC 4861, RFC 4443), never
//! recorded from the code under test; tshark finds every TCP, UDP and ICMPv6 checksum of every
//! expected frame good, and tcpdump decodes one port as described.
//!
//! Regenerate after changing a description (the deliberate flag):
//!
//! ```sh
//! VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_ipv6
//! ```

#![allow(clippy::unwrap_used)]

mod common;

use common::nat::{C1, C2, GW, ROUTER_MAC, UP, gw_mac, mac};
use common::{IPV6_SCENARIOS, fixtures_root, harness};
use packet::{MacAddr, tcp_flags};
use serde_json::Value;
use std::net::Ipv6Addr;
use testkit::frames::{self as build, set_hop_limit};
use testkit::golden::{Forwarding, Scenario, Seq, TcpdumpCheck, regen_requested};
use testkit::topology::Topo;

const REGEN_HINT: &str = "if the description changed on purpose, run: VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_ipv6";

const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 1);
const C1_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 2);
const C2_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 3);
const UP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x20);
/// The uplink's MTU in these scenarios (below the bridge's, so packet-too-big can be shown).
const UPLINK_MTU: u16 = 1400;

/// `bridge` dual-stack (fd00:17::/64) with c1 and c2 (MAC, IPv4 and IPv6 enforced), the
/// static uplink (MTU 1400) with its IPv6 side, tcp 8080 published to 172.17.0.3:80.
fn topo() -> String {
    let port = |t: Topo, name: &str, ip4: std::net::Ipv4Addr, ip6: Ipv6Addr| {
        t.port(name, "bridge")
            .set_str("mac", &mac(ip4).to_string())
            .set_str("ip", &ip4.to_string())
            .set_str("ip6", &ip6.to_string())
    };
    let t = Topo::new()
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .set_str("subnet6", "fd00:17::/64");
    let t = port(t, "c1", C1, C1_6);
    port(t, "c2", C2, C2_6)
        .uplink_port("up")
        .uplink_static("up")
        .set("mtu", UPLINK_MTU)
        .block("uplink.ipv6", false)
        .set_str("address", &UP6.to_string())
        .set_str("subnet", "2001:db8::/64")
        .set_str("next_hop", &ROUTER6.to_string())
        .set_str("next_hop_mac", &ROUTER_MAC.to_string())
        .publish("tcp", 8080, "172.17.0.3", 80)
        .build()
}

fn um() -> MacAddr {
    mac(UP)
}

/// `frame` as it leaves after one hop: hop limit one less.
fn hop(mut frame: Vec<u8>) -> Vec<u8> {
    let h = frame[14 + 7];
    set_hop_limit(&mut frame, h - 1);
    frame
}

/// The router advertisement RFC 4861 4.2 describes for the bridge network, sent to `to`:
/// cur hop limit 64, no M/O, router lifetime 1800 s, the source link-layer, MTU (1500) and
/// prefix (fd00:17::/64, on-link, not autonomous, 86400 s) options.
fn advertisement(to: (MacAddr, Ipv6Addr)) -> Vec<u8> {
    let gm = gw_mac(GW);
    let mut body = vec![0u8; 8]; // reachable time, retrans timer
    body.extend_from_slice(&build::ndp_mac_option(1, gm));
    body.extend_from_slice(&[5, 1, 0, 0]);
    body.extend_from_slice(&1500u32.to_be_bytes());
    body.extend_from_slice(&[3, 4, 64, 0x80]);
    body.extend_from_slice(&86_400u32.to_be_bytes());
    body.extend_from_slice(&86_400u32.to_be_bytes());
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, 0).octets());
    let [l0, l1] = 1800u16.to_be_bytes();
    build::icmpv6(
        gm,
        to.0,
        gm.link_local(),
        to.1,
        255,
        134,
        0,
        [64, 0, l0, l1],
        &body,
    )
}

fn ipv6_gateway_nd() -> Scenario {
    let mut s = Seq::new();
    let (gm, c1m, c2m) = (gw_mac(GW), mac(C1), mac(C2));
    let ns = s.send("c1", build::neighbor_solicitation(c1m, C1_6, GW6));
    let rs = s.send("c1", build::router_solicitation(c1m, c1m.link_local()));
    let ping = build::icmpv6_echo(c1m, gm, C1_6, GW6, true, 7, 1, b"vswitch ping6");
    let r_ping = s.send("c1", ping);
    let ns_c2 = build::neighbor_solicitation(c1m, C1_6, C2_6);
    let r_ns_c2 = s.send("c1", ns_c2.clone());
    s.send("c1", build::router_advertisement(c1m, c1m.link_local()));
    s.send(
        "c1",
        build::neighbor_advertisement(c1m, c2m, C1_6, C2_6, C2_6, 0x20, c1m),
    );
    s.send("c1", build::udp6(c1m, c2m, C2_6, C1_6, 1, 2, b"spoofed"));
    let up_ns = s.send("up", build::neighbor_solicitation(ROUTER_MAC, ROUTER6, UP6));
    let up_ping = build::icmpv6_echo(ROUTER_MAC, um(), CLIENT6, UP6, true, 9, 1, b"from afar");
    let r_up_ping = s.send("up", up_ping);
    Scenario {
        name: "ipv6-gateway-nd",
        readme: "What the gateway answers itself over IPv6, and what anti-spoofing drops.\n\
                 In: c1 solicits fd00:17::1 (the gateway), solicits a router, pings the gateway,\n\
                 solicits c2's fd00:17::3; then sends a router advertisement, a neighbour\n\
                 advertisement claiming fd00:17::3, and a datagram from fd00:17::3. On `up` the\n\
                 router solicits 2001:db8::2 and a client pings it.\n\
                 Out: to c1 a neighbour advertisement (router, solicited, override; target\n\
                 link-layer 02:42:ac:11:00:01), a router advertisement from fe80::42:acff:fe11:1\n\
                 (prefix fd00:17::/64 on-link, MTU 1500, lifetime 1800 s) and the echo reply; c2\n\
                 gets c1's solicitation for it as sent; the rogue RA (ra_guard), the false NA\n\
                 (spoofed_nd) and the spoofed source (spoofed_ipv6) are dropped; on `up` a\n\
                 solicited advertisement for 2001:db8::2 and the echo reply.\n",
        topo: topo(),
        input: s,
        expect: vec![
            (
                "c1",
                vec![
                    (
                        ns,
                        build::neighbor_advertisement(gm, c1m, GW6, C1_6, GW6, 0xe0, gm),
                    ),
                    (rs, advertisement((c1m, c1m.link_local()))),
                    (
                        r_ping,
                        build::icmpv6_echo(gm, c1m, GW6, C1_6, false, 7, 1, b"vswitch ping6"),
                    ),
                ],
            ),
            ("c2", vec![(r_ns_c2, ns_c2)]),
            (
                "up",
                vec![
                    (
                        up_ns,
                        build::neighbor_advertisement(
                            um(),
                            ROUTER_MAC,
                            UP6,
                            ROUTER6,
                            UP6,
                            0x60,
                            um(),
                        ),
                    ),
                    (
                        r_up_ping,
                        build::icmpv6_echo(
                            um(),
                            ROUTER_MAC,
                            UP6,
                            CLIENT6,
                            false,
                            9,
                            1,
                            b"from afar",
                        ),
                    ),
                ],
            ),
        ],
        drops: vec![
            ("c1", "ra_guard", 1),
            ("c1", "spoofed_nd", 1),
            ("c1", "spoofed_ipv6", 1),
        ],
        local: vec![("c1", 3), ("up", 2)],
        bridge: vec![
            ("echo_replies_sent", 2),
            ("neighbor_advertisements_sent", 2),
            ("router_advertisements_sent", 1),
        ],
        summary: |v: &Value| assert!(v["state"]["conntrack6"].as_array().unwrap().is_empty()),
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: false,
            lines: Some(3),
            port: "c1",
            contains: vec![
                "fd00:17::1 > fd00:17::2: ICMP6, neighbor advertisement, tgt is fd00:17::1",
                "fe80::42:acff:fe11:1 > fe80::42:acff:fe11:2: ICMP6, router advertisement",
                "fd00:17::1 > fd00:17::2: ICMP6, echo reply, id 7, seq 1",
            ],
        },
    }
}

fn ipv6_nat66() -> Scenario {
    let mut s = Seq::new();
    let (gm, c1m, c2m) = (gw_mac(GW), mac(C1), mac(C2));
    let syn = build::tcp6(
        c1m,
        gm,
        C1_6,
        REMOTE6,
        40000,
        443,
        1,
        0,
        tcp_flags::SYN,
        b"",
    );
    let r_syn = s.send("c1", syn);
    let sa = tcp_flags::SYN | tcp_flags::ACK;
    let synack = build::tcp6(ROUTER_MAC, um(), REMOTE6, UP6, 443, 40000, 9, 2, sa, b"");
    let r_synack = s.send("up", synack);
    let p2 = build::icmpv6_echo(c2m, gm, C2_6, GW6, true, 3, 1, b"hello");
    let r_p2 = s.send("c2", p2);
    let client_syn = build::tcp6(
        ROUTER_MAC,
        um(),
        CLIENT6,
        UP6,
        5555,
        8080,
        1,
        0,
        tcp_flags::SYN,
        b"",
    );
    let r_client = s.send("up", client_syn);
    let mut last_hop = build::udp6(c1m, gm, C1_6, REMOTE6, 41002, 53, b"last hop");
    set_hop_limit(&mut last_hop, 1);
    let r_last = s.send("c1", last_hop.clone());
    let query = build::udp6(c1m, gm, C1_6, REMOTE6, 41000, 53, b"query");
    let r_query = s.send("c1", query.clone());
    let query_out = hop(build::udp6(
        um(),
        ROUTER_MAC,
        UP6,
        REMOTE6,
        41000,
        53,
        b"query",
    ));
    let unreachable = build::icmpv6(
        ROUTER_MAC,
        um(),
        REMOTE6,
        UP6,
        64,
        1,
        4,
        [0; 4],
        &query_out[14..],
    );
    let r_unreach = s.send("up", unreachable);
    let big = build::udp6(c1m, gm, C1_6, REMOTE6, 41001, 53, &[0x5a; 1400]);
    let r_big = s.send("c1", big.clone());
    // The quote of the error back to c1: c1's query as the remote received it, translated back
    // (addresses and port as c1 sent them, the hop limit it arrived with).
    let quoted_back = hop(query.clone());
    Scenario {
        name: "ipv6-nat66",
        readme: "NAT66 through the gateway (the uplink's 2001:db8::2, MTU 1400).\n\
                 In: c1 opens TCP to [2001:db8:ffff::10]:443 and the SYN-ACK comes back; c2 pings\n\
                 its gateway; a client connects to [2001:db8::2]:8080 (published to c2:80); c1\n\
                 sends UDP with hop limit 1, a query to [2001:db8:ffff::10]:53 (answered by a\n\
                 port unreachable), and a 1448-byte datagram.\n\
                 Out: the SYN from 2001:db8::2:40000 (ports in the NAT range are kept, hop limit 63)
                 to the router's MAC;\n\
                 the SYN-ACK to fd00:17::2:40000; c2's echo reply; the client's SYN to\n\
                 fd00:17::3:80 with the client's address kept; a time exceeded and a packet too big\n\
                 (MTU 1400, quote cut to 1280 bytes in all) from fd00:17::1; the query out\n\
                 translated and the port unreachable translated back, outer and inner.\n",
        topo: topo(),
        input: s,
        expect: vec![
            (
                "up",
                vec![
                    (
                        r_syn,
                        hop(build::tcp6(
                            um(),
                            ROUTER_MAC,
                            UP6,
                            REMOTE6,
                            40000,
                            443,
                            1,
                            0,
                            tcp_flags::SYN,
                            b"",
                        )),
                    ),
                    (r_query, query_out),
                ],
            ),
            (
                "c1",
                vec![
                    (
                        r_synack,
                        hop(build::tcp6(
                            gm, c1m, REMOTE6, C1_6, 443, 40000, 9, 2, sa, b"",
                        )),
                    ),
                    (
                        r_last,
                        build::icmpv6(gm, c1m, GW6, C1_6, 64, 3, 0, [0; 4], &last_hop[14..]),
                    ),
                    (
                        r_unreach,
                        hop(build::icmpv6(
                            gm,
                            c1m,
                            REMOTE6,
                            C1_6,
                            64,
                            1,
                            4,
                            [0; 4],
                            &quoted_back[14..],
                        )),
                    ),
                    (
                        r_big,
                        build::icmpv6(
                            gm,
                            c1m,
                            GW6,
                            C1_6,
                            64,
                            2,
                            0,
                            u32::from(UPLINK_MTU).to_be_bytes(),
                            &big[14..14 + 1280 - 48],
                        ),
                    ),
                ],
            ),
            (
                "c2",
                vec![
                    (
                        r_p2,
                        build::icmpv6_echo(gm, c2m, GW6, C2_6, false, 3, 1, b"hello"),
                    ),
                    (
                        r_client,
                        hop(build::tcp6(
                            gm,
                            c2m,
                            CLIENT6,
                            C2_6,
                            5555,
                            80,
                            1,
                            0,
                            tcp_flags::SYN,
                            b"",
                        )),
                    ),
                ],
            ),
        ],
        drops: vec![("c1", "ttl_exceeded", 1), ("c1", "frag_needed", 1)],
        local: vec![("c2", 1)],
        bridge: vec![("icmp_errors_sent", 2), ("echo_replies_sent", 1)],
        summary: |v: &Value| {
            let flows = v["state"]["conntrack6"].as_array().unwrap();
            // The oversize datagram was tracked before its MTU check, as Linux tracks in PREROUTING.
            assert_eq!(flows.len(), 4, "{flows:#?}");
            let text = serde_json::to_string(flows).unwrap();
            for want in [
                "2001:db8::2",
                "fd00:17::2",
                "fd00:17::3",
                "2001:db8:ffff::20",
            ] {
                assert!(text.contains(want), "{want} in {text}");
            }
        },
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: false,
            lines: Some(2),
            port: "up",
            contains: vec![
                "2001:db8::2.40000 > 2001:db8:ffff::10.443: Flags [S]",
                "2001:db8::2.41000 > 2001:db8:ffff::10.53",
            ],
        },
    }
}

fn all_scenarios() -> Vec<Scenario> {
    vec![ipv6_gateway_nd(), ipv6_nat66()]
}

fn check(sc: Scenario) {
    harness(REGEN_HINT).check(sc);
}

#[test]
fn golden_ipv6_gateway_nd() {
    check(ipv6_gateway_nd());
}

#[test]
fn golden_ipv6_nat66() {
    check(ipv6_nat66());
}

/// The scenarios described here are exactly the folders `golden.rs` leaves to this file.
#[test]
fn ipv6_fixtures_and_descriptions_agree() {
    let scenarios = all_scenarios();
    let mut described: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    described.sort_unstable();
    assert_eq!(described, IPV6_SCENARIOS);
    for s in &scenarios {
        if !regen_requested() {
            assert!(
                fixtures_root().join(s.name).is_dir(),
                "{}: no fixture folder; {REGEN_HINT}",
                s.name
            );
        }
    }
    testkit::golden::assert_distinct_inputs(&scenarios);
}
