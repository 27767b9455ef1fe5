//! Golden pcap scenarios of the gateway and NAT: the NAT fixtures under `pcap-fixtures/` and the
//! checker that keeps them honest (the L2 ones are in `golden.rs`).
//!
//! Each scenario is described here: its topology, its input frames (built with `testkit::frames`,
//! i.e. etherparse) and, for every port, the exact frames that must leave it. Expected frames are
//! NOT recorded from the code under test: they are built here from what a NAT gateway must
//! produce (addresses and ports translated, TTL - 1, gateway/uplink/next-hop MACs) by parsing the
//! input with etherparse, changing the fields, and serializing with every checksum computed from
//! scratch. The only values taken from the pipeline are none: where an allocator choice matters
//! the port range is narrowed so that the choice is forced (documented per scenario).
//!
//! Normal run: committed `in/*.pcap` equal the description; the replay equals the committed
//! `expected/*.pcap` byte for byte and the described frames one by one; summary.json counters add
//! up (`rx_frames = forwarded + local + dropped + queued` per port) with exactly the described
//! drop reasons; two replays are byte-identical; tshark (an independent decoder) finds every IP,
//! TCP, UDP and ICMP checksum of every expected frame good; tcpdump decodes one port as described.
//!
//! Regenerate after changing a description (the deliberate flag):
//!
//! ```sh
//! VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_nat
//! ```

// Test helpers outside #[test] fns, where clippy's allow-unwrap-in-tests does not reach.
#![allow(clippy::unwrap_used)]

mod common;

use common::nat::*;
use common::{NAT_SCENARIOS, fixtures_root, harness};
use packet::{MacAddr, tcp_flags};
use serde_json::Value;
use std::net::Ipv4Addr;
use testkit::frames as build;
use testkit::golden::{
    Forwarding, Scenario, Seq, TcpdumpCheck, assert_distinct_inputs, regen_requested,
};
use testkit::topology::{self, Topo};

const REGEN_HINT: &str = "if the description changed on purpose, run: VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_nat";

/// The echo reply the gateway (or the uplink address) answers `request` with: Ethernet and IP
/// addresses swapped, TTL 64, type 0; identifier, sequence, payload and IP id kept.
fn echo_reply_to(request: &[u8]) -> Vec<u8> {
    let mut e = Edit::new(request);
    e.swap_addresses();
    e.ttl(64);
    let l4 = e.l4();
    assert_eq!(e.0[l4], 8, "not an echo request");
    e.0[l4] = 0;
    e.done()
}

/// An ICMP error the gateway originates about `offending` (as received): from `our` to the
/// sender, TTL 64, IP id 0, no DF, quoting the IP header and 8 bytes (RFC 792).
fn originated_error(our: (MacAddr, Ipv4Addr), offending: &[u8], ty: u8, code: u8) -> Vec<u8> {
    let peer_mac = MacAddr(offending[6..12].try_into().unwrap());
    let peer = Ipv4Addr::from(<[u8; 4]>::try_from(&offending[26..30]).unwrap());
    let ihl = usize::from(offending[14] & 0x0f) * 4;
    let quote = &offending[14..14 + ihl + 8];
    let mut e = Edit::new(&build::icmp_error(
        our.0, peer_mac, our.1, peer, ty, code, [0; 4], quote,
    ));
    e.ttl(64);
    e.set_u16(18, 0);
    e.set_u16(20, 0);
    e.done()
}

/// The first `n` bytes of the IP packet of `frame`.
fn ip_quote(frame: &[u8], n: usize) -> Vec<u8> {
    frame[14..14 + n].to_vec()
}

/// `frame` with its TTL set to `ttl` and checksums recomputed.
fn with_ttl(frame: &[u8], ttl: u8) -> Vec<u8> {
    let mut e = Edit::new(frame);
    e.ttl(ttl);
    e.done()
}

// ---------------------------------------------------------------------------------------------
// Scenario descriptions.

use testkit::golden::no_check;

/// The conntrack table of a summary.
fn conntrack(summary: &Value) -> &Vec<Value> {
    summary["state"]["conntrack"].as_array().unwrap()
}

fn tuple(proto: &str, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Value {
    serde_json::json!({
        "proto": proto,
        "src": src.0.to_string(),
        "dst": dst.0.to_string(),
        "src_port": src.1,
        "dst_port": dst.1,
    })
}

/// The entry whose original tuple is `original`.
fn entry<'a>(summary: &'a Value, original: &Value) -> &'a Value {
    conntrack(summary)
        .iter()
        .find(|e| e["original"] == *original)
        .unwrap_or_else(|| {
            panic!(
                "no conntrack entry {original}: {:#}",
                summary["state"]["conntrack"]
            )
        })
}

/// The TCP state name in a serialized entry (Linux spelling).
fn tcp_state(e: &Value) -> String {
    let s = &e["state"];
    assert_eq!(s["proto"], "tcp", "{e}");
    s.as_object()
        .unwrap()
        .iter()
        .find_map(|(k, v)| (k != "proto").then(|| v.as_str().map_or(k.clone(), str::to_string)))
        .unwrap_or_default()
}

fn snat_tcp() -> Scenario {
    let mut s = Seq::new();
    let (cm, gm) = (mac(C1), gw_mac(GW));
    let um = mac(UP);
    let (c, w, u) = ((C1, 40000), (WEB, 80), (UP, 40000));
    let out = (cm, gm);
    let back = (ROUTER_MAC, um);
    let to_up = (um, ROUTER_MAC);
    let to_c1 = (gm, cm);
    let req = b"GET / HTTP/1.0\r\n\r\n";
    let resp = b"HTTP/1.0 200 OK\r\n\r\nhello";
    let (rl, pl) = (req.len() as u32, resp.len() as u32);
    let mut e_up = Vec::new();
    let mut e_c1 = Vec::new();
    let mut from_c1 = |s: &mut Seq, f: Vec<u8>| {
        let r = s.send("c1", f.clone());
        e_up.push((r, routed(&f, to_up, u, w)));
    };
    from_c1(&mut s, tcp(c, w, out, 1000, 0, tcp_flags::SYN, b""));
    let f = tcp(w, u, back, 5000, 1001, tcp_flags::SYN | tcp_flags::ACK, b"");
    e_c1.push((s.send("up", f.clone()), routed(&f, to_c1, w, c)));
    from_c1(&mut s, tcp(c, w, out, 1001, 5001, tcp_flags::ACK, b""));
    from_c1(&mut s, tcp(c, w, out, 1001, 5001, tcp_flags::ACK, req));
    let f = tcp(w, u, back, 5001, 1001 + rl, tcp_flags::ACK, resp);
    e_c1.push((s.send("up", f.clone()), routed(&f, to_c1, w, c)));
    let fin = tcp_flags::FIN | tcp_flags::ACK;
    from_c1(&mut s, tcp(c, w, out, 1001 + rl, 5001 + pl, fin, b""));
    let f = tcp(w, u, back, 5001 + pl, 1002 + rl, fin, b"");
    e_c1.push((s.send("up", f.clone()), routed(&f, to_c1, w, c)));
    from_c1(
        &mut s,
        tcp(c, w, out, 1002 + rl, 5002 + pl, tcp_flags::ACK, b""),
    );
    fn summary(v: &Value) {
        assert_eq!(conntrack(v).len(), 1);
        let e = entry(v, &tuple("tcp", (C1, 40000), (WEB, 80)));
        assert_eq!(e["reply"], tuple("tcp", (WEB, 80), (UP, 40000)));
        assert_eq!(tcp_state(e), "TIME_WAIT", "{e}");
        assert_eq!(e["assured"], true);
        assert_eq!(e["packets"], serde_json::json!([5, 3]));
    }
    Scenario {
        name: "snat-tcp",
        readme: "Masquerade of a TCP connection. Container c1 (172.17.0.2) opens 172.17.0.2:40000 ->\n\
                 198.51.100.10:80 through the gateway 172.17.0.1; the uplink `up` has address\n\
                 203.0.113.2 and a static next hop MAC 02:00:00:00:00:fe.\n\
                 In: SYN, SYN/ACK, ACK, request, response, FIN, FIN, last ACK.\n\
                 Out: every c1 segment leaves `up` from 203.0.113.2:40000 (the port is kept: it is\n\
                 free) with TTL 63, from the uplink MAC to the next hop; every reply reaches c1 as\n\
                 198.51.100.10:80 -> 172.17.0.2:40000 with TTL 63 from the gateway MAC. At the end the\n\
                 conntrack entry is TIME_WAIT, assured, 5 packets out and 3 back.\n",
        topo: standard_topo(""),
        input: s,
        expect: vec![("up", e_up), ("c1", e_c1)],
        drops: vec![],
        local: vec![],
        bridge: vec![("nat_translated", 8)],
        summary,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: true,
            lines: None,
            port: "up",
            contains: vec![
                "02:42:cb:00:71:02 > 02:00:00:00:00:fe",
                "ttl 63",
                "203.0.113.2.40000 > 198.51.100.10.80: Flags [S]",
                "203.0.113.2.40000 > 198.51.100.10.80: Flags [F.]",
            ],
        },
    }
}

fn snat_udp_and_icmp() -> Scenario {
    let mut s = Seq::new();
    let gm = gw_mac(GW);
    let um = mac(UP);
    let to_up = (um, ROUTER_MAC);
    let back = (ROUTER_MAC, um);
    // 1. A DNS query: the next hop is not resolved yet, so it waits while the gateway ARPs.
    let q = udp((C1, 1001), (DNS, 53), (mac(C1), gm), b"query example.org A");
    let rq = s.send("c1", q.clone());
    let arp = build::arp_request(um, UP, ROUTER);
    let ra = s.send("up", build::arp_reply(ROUTER_MAC, ROUTER, um, UP));
    let a = udp((DNS, 53), (UP, 1001), back, b"answer 93.184.216.34");
    let raa = s.send("up", a.clone());
    // 2. c1 and c2 ping the same far host with the same identifier 1000.
    let p1 = ping(C1, FAR, (mac(C1), gm), 1000, 1);
    let rp1 = s.send("c1", p1.clone());
    let p2 = build::icmp_echo(mac(C2), gm, C2, FAR, true, 1000, 1, b"second pinger");
    let rp2 = s.send("c2", p2.clone());
    // The far host answers the second mapping first.
    let r2 = build::icmp_echo(ROUTER_MAC, um, FAR, UP, false, 1001, 1, b"second pinger");
    let rr2 = s.send("up", r2.clone());
    let r1 = pong(FAR, UP, back, 1000, 1);
    let rr1 = s.send("up", r1.clone());
    fn summary(v: &Value) {
        assert_eq!(conntrack(v).len(), 3);
        let u = entry(v, &tuple("udp", (C1, 1001), (DNS, 53)));
        assert_eq!(u["reply"], tuple("udp", (DNS, 53), (UP, 1001)));
        assert_eq!(u["state"]["replied"], true);
        let i1 = entry(v, &tuple("icmp", (C1, 1000), (FAR, 1000)));
        assert_eq!(i1["reply"], tuple("icmp", (FAR, 1000), (UP, 1000)));
        let i2 = entry(v, &tuple("icmp", (C2, 1000), (FAR, 1000)));
        assert_eq!(i2["reply"], tuple("icmp", (FAR, 1001), (UP, 1001)));
        assert_eq!(i2["state"]["replied"], true);
        assert_eq!(v["state"]["bridge"]["arp_requests_sent"], 1);
    }
    Scenario {
        name: "snat-udp-and-icmp",
        readme: "Masquerade of UDP and ICMP echo, with the next hop resolved by ARP. [nat] port range\n\
                 1000-1001 (two ports) so every allocation is forced, not hash-chosen.\n\
                 In: c1 sends a DNS query 172.17.0.2:1001 -> 198.51.100.53:53; the router answers\n\
                 the gateway's ARP; the DNS answer comes back; c1 and c2 both ping 198.51.100.77\n\
                 with echo id 1000; the far host replies to id 1001, then to id 1000.\n\
                 Out: the query is held (queued) while `up` carries ARP who-has 203.0.113.1 tell\n\
                 203.0.113.2; the router's reply releases it as 203.0.113.2:1001 -> :53 (port\n\
                 kept); the answer reaches c1 translated back. c1's ping keeps id 1000, c2's gets\n\
                 1001 (1000 is taken toward that host); each reply returns to its own container\n\
                 with id 1000.\n",
        topo: Topo::new()
            .routed("bridge", "172.17.0.0/16", "172.17.0.1")
            .ports("bridge", &["c1", "c2"])
            .uplink_port("up")
            .uplink("up")
            .block("nat", false)
            .set("port_first", 1000)
            .set("port_last", 1001)
            .build(),
        input: s,
        expect: vec![
            (
                "up",
                vec![
                    (rq, arp),
                    (ra, routed(&q, to_up, (UP, 1001), (DNS, 53))),
                    (rp1, routed(&p1, to_up, (UP, 1000), (FAR, 0))),
                    (rp2, routed(&p2, to_up, (UP, 1001), (FAR, 0))),
                ],
            ),
            (
                "c1",
                vec![
                    (raa, routed(&a, (gm, mac(C1)), (DNS, 53), (C1, 1001))),
                    (rr1, routed(&r1, (gm, mac(C1)), (FAR, 1000), (C1, 0))),
                ],
            ),
            (
                "c2",
                vec![(rr2, routed(&r2, (gm, mac(C2)), (FAR, 1000), (C2, 0)))],
            ),
        ],
        drops: vec![],
        local: vec![("up", 1)],
        bridge: vec![("arp_requests_sent", 1), ("nat_translated", 6)],
        summary,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: true,
            lines: None,
            port: "up",
            contains: vec![
                "Request who-has 203.0.113.1 tell 203.0.113.2",
                "203.0.113.2.1001 > 198.51.100.53.53",
                "203.0.113.2 > 198.51.100.77: ICMP echo request, id 1000, seq 1",
                "203.0.113.2 > 198.51.100.77: ICMP echo request, id 1001, seq 1",
            ],
        },
    }
}

fn dnat_published() -> Scenario {
    let mut s = Seq::new();
    let gm = gw_mac(GW);
    let um = mac(UP);
    let back = (ROUTER_MAC, um);
    let to_up = (um, ROUTER_MAC);
    let to_c2 = (gm, mac(C2));
    let (cl, pub_, ct) = ((CLIENT, 5555), (UP, 8080), (C2, 80));
    // c2 never spoke: the gateway must ARP for it on its network and hold the SYN.
    let syn = tcp(cl, pub_, back, 7000, 0, tcp_flags::SYN, b"");
    let rs = s.send("up", syn.clone());
    let who = build::arp_request(gm, GW, C2);
    let rarp = s.send("c2", build::arp_reply(mac(C2), C2, gm, GW));
    let sa = tcp(
        ct,
        cl,
        (mac(C2), gm),
        9000,
        7001,
        tcp_flags::SYN | tcp_flags::ACK,
        b"",
    );
    let rsa = s.send("c2", sa.clone());
    let ack = tcp(cl, pub_, back, 7001, 9001, tcp_flags::ACK, b"");
    let rack = s.send("up", ack.clone());
    let data = tcp(
        ct,
        cl,
        (mac(C2), gm),
        9001,
        7001,
        tcp_flags::ACK,
        b"welcome",
    );
    let rdata = s.send("c2", data.clone());
    // A port nobody published.
    s.send("up", tcp(cl, (UP, 8081), back, 1, 0, tcp_flags::SYN, b""));
    fn summary(v: &Value) {
        assert_eq!(conntrack(v).len(), 1);
        let e = entry(v, &tuple("tcp", (CLIENT, 5555), (UP, 8080)));
        assert_eq!(e["reply"], tuple("tcp", (C2, 80), (CLIENT, 5555)));
        assert_eq!(tcp_state(e), "ESTABLISHED", "{e}");
    }
    Scenario {
        name: "dnat-published",
        readme: "A published port: 203.0.113.2:8080 -> 172.17.0.3:80 (container c2).\n\
                 In: client 198.51.100.20:5555 sends a SYN to 203.0.113.2:8080 on `up`; c2 answers\n\
                 the gateway's ARP; c2's SYN/ACK; the client's ACK; c2 sends data; then a SYN to\n\
                 port 8081, which nobody published.\n\
                 Out: c2 has not spoken yet, so the SYN waits while the gateway floods ARP\n\
                 who-has 172.17.0.3 tell 172.17.0.1 to c1 and c2; c2's ARP reply releases it as\n\
                 198.51.100.20:5555 -> 172.17.0.3:80 (the client's real address is kept, TTL 63).\n\
                 c2's segments leave `up` from 203.0.113.2:8080. The SYN to 8081 is dropped as\n\
                 unsolicited.\n",
        topo: standard_topo(""),
        input: s,
        expect: vec![
            ("c1", vec![(rs, who.clone())]),
            (
                "c2",
                vec![
                    (rs, who),
                    (rarp, routed(&syn, to_c2, cl, ct)),
                    (rack, routed(&ack, to_c2, cl, ct)),
                ],
            ),
            (
                "up",
                vec![
                    (rsa, routed(&sa, to_up, pub_, cl)),
                    (rdata, routed(&data, to_up, pub_, cl)),
                ],
            ),
        ],
        drops: vec![("up", "unsolicited", 1)],
        local: vec![("c2", 1)],
        bridge: vec![("arp_requests_sent", 1), ("nat_translated", 4)],
        summary,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: true,
            lines: None,
            port: "c2",
            contains: vec![
                "Request who-has 172.17.0.3 tell 172.17.0.1",
                "198.51.100.20.5555 > 172.17.0.3.80: Flags [S]",
            ],
        },
    }
}

fn hairpin() -> Scenario {
    let mut s = Seq::new();
    let gm = gw_mac(GW);
    let (a, b) = ((C1, 41000), (C2, 80));
    let (pub_, masq) = ((UP, 8080), (UP, 41000));
    let (from_a, from_b) = ((mac(C1), gm), (mac(C2), gm));
    let (to_a, to_b) = ((gm, mac(C1)), (gm, mac(C2)));
    let garp = build::arp_request(mac(C2), C2, GW);
    let rg = s.send("c2", garp);
    let arp_reply = build::arp_reply(gm, GW, mac(C2), C2);
    let mut e_a = Vec::new();
    let mut e_b = vec![(rg, arp_reply)];
    let fin = tcp_flags::FIN | tcp_flags::ACK;
    let mut from_c1 = |s: &mut Seq, seq, ack, flags| {
        let f = tcp(a, pub_, from_a, seq, ack, flags, b"");
        e_b.push((s.send("c1", f.clone()), routed(&f, to_b, masq, b)));
    };
    let mut from_c2 = |s: &mut Seq, seq, ack, flags| {
        let f = tcp(b, masq, from_b, seq, ack, flags, b"");
        e_a.push((s.send("c2", f.clone()), routed(&f, to_a, pub_, a)));
    };
    from_c1(&mut s, 100, 0, tcp_flags::SYN);
    from_c2(&mut s, 500, 101, tcp_flags::SYN | tcp_flags::ACK);
    from_c1(&mut s, 101, 501, tcp_flags::ACK);
    from_c1(&mut s, 101, 501, fin);
    from_c2(&mut s, 501, 102, fin);
    from_c1(&mut s, 102, 502, tcp_flags::ACK);
    fn summary(v: &Value) {
        assert_eq!(conntrack(v).len(), 1);
        let e = entry(v, &tuple("tcp", (C1, 41000), (UP, 8080)));
        assert_eq!(e["reply"], tuple("tcp", (C2, 80), (UP, 41000)));
        assert_eq!(tcp_state(e), "TIME_WAIT", "{e}");
    }
    Scenario {
        name: "hairpin",
        readme: "Hairpin NAT: container c1 (172.17.0.2) reaches the published 203.0.113.2:8080, which\n\
                 is its neighbour c2 (172.17.0.3:80) on the same network.\n\
                 In: c2 ARPs for the gateway (so it is known); c1 SYN to 203.0.113.2:8080; c2\n\
                 SYN/ACK; c1 ACK; c1 FIN; c2 FIN; c1 last ACK.\n\
                 Out: c2 gets the ARP reply, then every c1 segment as 203.0.113.2:41000 ->\n\
                 172.17.0.3:80 (source masqueraded, port kept, so the reply comes back through the\n\
                 gateway); c1 gets c2's segments as 203.0.113.2:8080 -> 172.17.0.2:41000. Nothing\n\
                 leaves on `up`; the entry ends in TIME_WAIT.\n",
        topo: standard_topo(""),
        input: s,
        expect: vec![("c1", e_a), ("c2", e_b)],
        drops: vec![],
        local: vec![("c2", 1)],
        bridge: vec![("nat_translated", 6), ("arp_replies_sent", 1)],
        summary,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: true,
            lines: None,
            port: "c2",
            contains: vec!["203.0.113.2.41000 > 172.17.0.3.80: Flags [S]"],
        },
    }
}

fn icmp_error_translation() -> Scenario {
    let mut s = Seq::new();
    let gm = gw_mac(GW);
    let um = mac(UP);
    let to_up = (um, ROUTER_MAC);
    let back = (ROUTER_MAC, um);
    let to_c1 = (gm, mac(C1));
    // 1. A UDP probe to a closed port; the far host answers port unreachable.
    let probe = udp((C1, 40001), (FAR, 9999), (mac(C1), gm), b"anyone there?");
    let rp = s.send("c1", probe.clone());
    let sent = routed(&probe, to_up, (UP, 40001), (FAR, 9999));
    let unreach = build::icmp_error(back.0, back.1, FAR, UP, 3, 3, [0; 4], &ip_quote(&sent, 28));
    let ru = s.send("up", unreach);
    // Outer: FAR -> c1, TTL 63. Inner: the probe as c1 sent it, with the TTL it had when quoted.
    let inner = ip_quote(&with_ttl(&probe, 63), 28);
    let want_unreach = with_ttl(
        &build::icmp_error(to_c1.0, to_c1.1, FAR, C1, 3, 3, [0; 4], &inner),
        63,
    );
    // 2. A SYN with TTL 2 dies at the router after us: time exceeded from 203.0.113.1.
    let mut syn = tcp(
        (C1, 40002),
        (WEB, 443),
        (mac(C1), gm),
        1,
        0,
        tcp_flags::SYN,
        b"",
    );
    build::set_ttl(&mut syn, 2);
    let rs = s.send("c1", syn.clone());
    let sent_syn = routed(&syn, to_up, (UP, 40002), (WEB, 443));
    let exceeded = build::icmp_error(
        back.0,
        back.1,
        ROUTER,
        UP,
        11,
        0,
        [0; 4],
        &ip_quote(&sent_syn, 28),
    );
    let rx = s.send("up", exceeded);
    let inner = ip_quote(&with_ttl(&syn, 1), 28);
    let want_exceeded = with_ttl(
        &build::icmp_error(to_c1.0, to_c1.1, ROUTER, C1, 11, 0, [0; 4], &inner),
        63,
    );
    // 3. An error quoting a flow that was never tracked.
    let stranger = udp((UP, 1), (FAR, 9999), to_up, b"anyone there?");
    s.send(
        "up",
        build::icmp_error(
            back.0,
            back.1,
            FAR,
            UP,
            3,
            3,
            [0; 4],
            &ip_quote(&stranger, 28),
        ),
    );
    Scenario {
        name: "icmp-error-translation",
        readme: "ICMP errors about masqueraded flows, translated outer and inner.\n\
                 In: c1 sends UDP 172.17.0.2:40001 -> 198.51.100.77:9999; the far host answers\n\
                 port unreachable quoting the packet as it saw it (from 203.0.113.2:40001, TTL 63).\n\
                 c1 sends a TCP SYN to 198.51.100.10:443 with TTL 2; the next router (203.0.113.1)\n\
                 answers time exceeded quoting it with TTL 1. Last, a port unreachable quoting\n\
                 a flow nobody created.\n\
                 Out: both errors reach c1 with outer destination 172.17.0.2 (outer source kept:\n\
                 the far host, the router), TTL 63, and the quoted packet's source back to\n\
                 172.17.0.2:40001 / :40002 with its IP header and UDP checksums valid again\n\
                 (the quote equals what c1 sent, but for the TTL). The stray error is dropped as\n\
                 icmp_error_no_flow.\n",
        topo: standard_topo(""),
        input: s,
        expect: vec![
            ("up", vec![(rp, sent), (rs, sent_syn)]),
            ("c1", vec![(ru, want_unreach), (rx, want_exceeded)]),
        ],
        drops: vec![("up", "icmp_error_no_flow", 1)],
        local: vec![],
        bridge: vec![("nat_translated", 4)],
        summary: no_check,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: true,
            lines: None,
            port: "c1",
            contains: vec![
                "198.51.100.77 > 172.17.0.2: ICMP 198.51.100.77 udp port 9999 unreachable",
                "203.0.113.1 > 172.17.0.2: ICMP time exceeded in-transit",
            ],
        },
    }
}

fn ttl_expiry() -> Scenario {
    let mut s = Seq::new();
    let gm = gw_mac(GW);
    let mut dying = udp((C1, 40000), (DNS, 53), (mac(C1), gm), b"ttl 1");
    build::set_ttl(&mut dying, 1);
    let r1 = s.send("c1", dying.clone());
    let mut ping1 = ping(C1, FAR, (mac(C1), gm), 4242, 1);
    build::set_ttl(&mut ping1, 1);
    let r2 = s.send("c1", ping1.clone());
    let mut last = udp((C1, 40000), (DNS, 53), (mac(C1), gm), b"ttl 2");
    build::set_ttl(&mut last, 2);
    let r3 = s.send("c1", last.clone());
    fn summary(v: &Value) {
        // Nothing is tracked for the packets that died.
        assert_eq!(conntrack(v).len(), 1);
        entry(v, &tuple("udp", (C1, 40000), (DNS, 53)));
    }
    Scenario {
        name: "ttl-expiry",
        readme: "TTL expiry at the gateway.\n\
                 In: c1 sends a UDP datagram and a ping to the outside with TTL 1, then a UDP\n\
                 datagram with TTL 2.\n\
                 Out: each TTL-1 packet gets an ICMP time exceeded from 172.17.0.1 (TTL 64, quoting\n\
                 the packet as received) back on c1, nothing on `up`, and no conntrack entry; the\n\
                 TTL-2 datagram leaves `up` with TTL 1.\n",
        topo: standard_topo(""),
        input: s,
        expect: vec![
            (
                "c1",
                vec![
                    (r1, originated_error((gm, GW), &dying, 11, 0)),
                    (r2, originated_error((gm, GW), &ping1, 11, 0)),
                ],
            ),
            (
                "up",
                vec![(
                    r3,
                    routed(&last, (mac(UP), ROUTER_MAC), (UP, 40000), (DNS, 53)),
                )],
            ),
        ],
        drops: vec![("c1", "ttl_exceeded", 2)],
        local: vec![],
        bridge: vec![("icmp_errors_sent", 2)],
        summary,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: true,
            lines: None,
            port: "c1",
            contains: vec!["172.17.0.1 > 172.17.0.2: ICMP time exceeded in-transit"],
        },
    }
}

fn table_full_and_port_exhaustion() -> Scenario {
    let mut s = Seq::new();
    let gm = gw_mac(GW);
    let um = mac(UP);
    let to_up = (um, ROUTER_MAC);
    let back = (ROUTER_MAC, um);
    let (from1, from2) = ((mac(C1), gm), (mac(C2), gm));
    let (to1, to2) = ((gm, mac(C1)), (gm, mac(C2)));
    let w = (WEB, 80);
    let (m0, m1) = ((UP, 50000), (UP, 50001));
    let mut e_up = Vec::new();
    let mut e_c1 = Vec::new();
    let mut e_c2 = Vec::new();
    let sa = tcp_flags::SYN | tcp_flags::ACK;
    // Two TCP connections to WEB:80, both established (assured). c1 keeps 50000; c2 asks for
    // 50000 too and gets the only other port, 50001.
    let f = tcp((C1, 50000), w, from1, 10, 0, tcp_flags::SYN, b"");
    e_up.push((s.send("c1", f.clone()), routed(&f, to_up, m0, w)));
    let f = tcp(w, m0, back, 20, 11, sa, b"");
    e_c1.push((s.send("up", f.clone()), routed(&f, to1, w, (C1, 50000))));
    let f = tcp((C1, 50000), w, from1, 11, 21, tcp_flags::ACK, b"");
    e_up.push((s.send("c1", f.clone()), routed(&f, to_up, m0, w)));
    let f = tcp((C2, 50000), w, from2, 30, 0, tcp_flags::SYN, b"");
    e_up.push((s.send("c2", f.clone()), routed(&f, to_up, m1, w)));
    let f = tcp(w, m1, back, 40, 31, sa, b"");
    e_c2.push((s.send("up", f.clone()), routed(&f, to2, w, (C2, 50000))));
    let f = tcp((C2, 50000), w, from2, 31, 41, tcp_flags::ACK, b"");
    e_up.push((s.send("c2", f.clone()), routed(&f, to_up, m1, w)));
    // A third connection to WEB:80: both ports are taken toward it.
    s.send("c1", tcp((C1, 50001), w, from1, 50, 0, tcp_flags::SYN, b""));
    // UDP to DNS: q1 takes 50000 (third entry, unassured). q2 asks for 50000 (still taken) and
    // gets 50001; the table is full, so the unassured q1 entry is early-dropped.
    let d = (DNS, 53);
    let f = udp((C1, 50000), d, from1, b"q1");
    e_up.push((s.send("c1", f.clone()), routed(&f, to_up, m0, d)));
    let f = udp((C2, 50000), d, from2, b"q2");
    e_up.push((s.send("c2", f.clone()), routed(&f, to_up, m1, d)));
    let f = udp(d, m1, back, b"a2");
    e_c2.push((s.send("up", f.clone()), routed(&f, to2, d, (C2, 50000))));
    // Traffic after the reply makes q2 assured: now all three entries are.
    let f = udp((C2, 50000), d, from2, b"q2 again");
    e_up.push((s.send("c2", f.clone()), routed(&f, to_up, m1, d)));
    // The answer to q1 finds no entry any more.
    s.send("up", udp(d, m0, back, b"a1"));
    // A new flow (its port, 50000 toward DNS, is free again) but no room and nothing to evict.
    s.send("c1", udp((C1, 50002), d, from1, b"q3"));
    fn summary(v: &Value) {
        assert_eq!(conntrack(v).len(), 3);
        for e in conntrack(v) {
            assert_eq!(e["assured"], true, "{e}");
        }
        let c = &v["state"]["conntrack_counters"];
        assert_eq!(c["early_dropped"], 1, "{c}");
        assert_eq!(c["dropped"], 1, "{c}");
        entry(v, &tuple("udp", (C2, 50000), (DNS, 53)));
        let e = entry(v, &tuple("tcp", (C2, 50000), (WEB, 80)));
        assert_eq!(e["reply"], tuple("tcp", (WEB, 80), (UP, 50001)));
    }
    Scenario {
        name: "table-full-and-port-exhaustion",
        readme: "Limits: [nat] ports 50000-50001 (two per destination), [conntrack] max_entries = 3.\n\
                 In: c1 and c2 each open TCP from port 50000 to 198.51.100.10:80 and complete the\n\
                 handshake; c1 tries a third connection to it; c1 and c2 send UDP to\n\
                 198.51.100.53:53 (q1, q2); the DNS server answers q2; c2 sends again; the answer\n\
                 to q1 arrives; c1 sends a new UDP flow q3.\n\
                 Out: c1 keeps 50000, c2 is moved to 50001; the third TCP connection is dropped\n\
                 (ports_exhausted). q1 leaves from 50000 as the third entry; q2 (50000 still taken\n\
                 by q1: 50001) finds the table full and early-drops q1's unassured entry; the\n\
                 answer to q2 reaches c2; q1's late answer is unsolicited; q3 finds three assured\n\
                 entries and nothing to evict (ct_table_full).\n",
        topo: standard_topo(
            "\n[nat]\nport_first = 50000\nport_last = 50001\n\n[conntrack]\nmax_entries = 3\n",
        ),
        input: s,
        expect: vec![("up", e_up), ("c1", e_c1), ("c2", e_c2)],
        drops: vec![
            ("c1", "ports_exhausted", 1),
            ("c1", "ct_table_full", 1),
            ("up", "unsolicited", 1),
        ],
        local: vec![],
        bridge: vec![],
        summary,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: true,
            lines: None,
            port: "up",
            contains: vec![
                "203.0.113.2.50000 > 198.51.100.10.80: Flags [S]",
                "203.0.113.2.50001 > 198.51.100.10.80: Flags [S]",
                "203.0.113.2.50001 > 198.51.100.53.53",
            ],
        },
    }
}

fn internal_and_icc() -> Scenario {
    let mut s = Seq::new();
    let (bgw, vgw) = (Ipv4Addr::new(172, 18, 0, 1), Ipv4Addr::new(172, 19, 0, 1));
    let (b1, b2) = (Ipv4Addr::new(172, 18, 0, 2), Ipv4Addr::new(172, 18, 0, 3));
    let (v1, v2) = (Ipv4Addr::new(172, 19, 0, 2), Ipv4Addr::new(172, 19, 0, 3));
    let (bm, vm) = (gw_mac(bgw), gw_mac(vgw));
    let um = mac(UP);
    // icc = false: b1 cannot reach b2 at L2 (broadcast or unicast) ...
    s.send("b1", build::arp_request(mac(b1), b1, b2));
    s.send("b1", udp((b1, 7), (b2, 7), (mac(b1), mac(b2)), b"psst"));
    // ... nor through the gateway, nor another network; it reaches the gateway and the outside.
    let garp = s.send("b1", build::arp_request(mac(b1), b1, bgw));
    s.send("b1", udp((b1, 7), (b2, 7), (mac(b1), bm), b"via gw"));
    s.send("b1", udp((b1, 7), (C1, 7), (mac(b1), bm), b"other net"));
    let out = udp((b1, 33000), (DNS, 53), (mac(b1), bm), b"b1 query");
    let rout = s.send("b1", out.clone());
    let ans = udp((DNS, 53), (UP, 33000), (ROUTER_MAC, um), b"b1 answer");
    let rans = s.send("up", ans.clone());
    // internal: v1 and v2 talk to each other, but nothing leaves.
    let va = build::arp_request(mac(v1), v1, v2);
    let rva = s.send("v1", va.clone());
    let vr = build::arp_reply(mac(v2), v2, mac(v1), v1);
    let rvr = s.send("v2", vr.clone());
    let vu = udp((v1, 9), (v2, 9), (mac(v1), mac(v2)), b"inside");
    let rvu = s.send("v1", vu.clone());
    s.send("v1", udp((v1, 9), (DNS, 53), (mac(v1), vm), b"escape?"));
    Scenario {
        name: "internal-and-icc",
        readme: "Isolation. Networks: bridge (c1), backend 172.18.0.0/16 with icc = false (b1, b2),\n\
                 vault 172.19.0.0/16 internal (v1, v2); uplink `up`.\n\
                 In: b1 ARPs for b2 and sends it a frame directly, ARPs for its gateway, sends to\n\
                 b2 and to c1 through the gateway, queries 198.51.100.53 (answered on `up`). v1\n\
                 ARPs for v2 (answered), sends to v2, then tries to reach 198.51.100.53.\n\
                 Out: nothing from b1 reaches b2 (icc_blocked at L2 and through the\n\
                 gateway) nor c1 (inter_network); the gateway answers b1's ARP; b1's query leaves\n\
                 `up` masqueraded and its answer comes back. v1 and v2 reach each other, but v1's\n\
                 packet to the outside is dropped (internal_network): `up` carries only b1's query.\n",
        topo: topology::three_networks()
            .port("c1", "bridge")
            .ports("backend", &["b1", "b2"])
            .ports("vault", &["v1", "v2"])
            .uplink_port("up")
            .uplink_static("up")
            .build(),
        input: s,
        expect: vec![
            (
                "b1",
                vec![
                    (garp, build::arp_reply(bm, bgw, mac(b1), b1)),
                    (rans, routed(&ans, (bm, mac(b1)), (DNS, 53), (b1, 33000))),
                ],
            ),
            (
                "up",
                vec![(rout, routed(&out, (um, ROUTER_MAC), (UP, 33000), (DNS, 53)))],
            ),
            ("v2", vec![(rva, va), (rvu, vu)]),
            ("v1", vec![(rvr, vr)]),
        ],
        drops: vec![
            ("b1", "icc_blocked", 3),
            ("b1", "inter_network", 1),
            ("v1", "internal_network", 1),
        ],
        local: vec![("b1", 1)],
        bridge: vec![],
        summary: no_check,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: true,
            lines: None,
            port: "up",
            contains: vec!["203.0.113.2.33000 > 198.51.100.53.53"],
        },
    }
}

fn gateway_arp_ping() -> Scenario {
    let mut s = Seq::new();
    let gm = gw_mac(GW);
    let um = mac(UP);
    let ra = s.send("c1", build::arp_request(mac(C1), C1, GW));
    let p_gw = ping(C1, GW, (mac(C1), gm), 7, 1);
    let r1 = s.send("c1", p_gw.clone());
    let p_up = ping(C1, UP, (mac(C1), gm), 7, 2);
    let r2 = s.send("c1", p_up.clone());
    let rua = s.send("up", build::arp_request(ROUTER_MAC, ROUTER, UP));
    let p_out = ping(CLIENT, UP, (ROUTER_MAC, um), 99, 1);
    let r3 = s.send("up", p_out.clone());
    let syn = s.send(
        "c1",
        tcp(
            (C1, 40000),
            (GW, 22),
            (mac(C1), gm),
            1,
            0,
            tcp_flags::SYN,
            b"",
        ),
    );
    // Nothing listens there: refused as a host refuses a closed port (RFC 793 3.4: seq 0,
    // ack = the SYN's seq + 1).
    let refused = build::tcp_reset(gm, mac(C1), GW, C1, 22, 40000, 0, Some(2));
    let other = build::arp_request(mac(C1), C1, Ipv4Addr::new(172, 17, 0, 9));
    let ro = s.send("c1", other.clone());
    Scenario {
        name: "gateway-arp-ping",
        readme: "What the gateway answers itself.\n\
                 In: c1 ARPs for its gateway 172.17.0.1, pings it, pings the uplink address\n\
                 203.0.113.2; the router ARPs for 203.0.113.2 and a client pings it on `up`; c1\n\
                 sends a TCP SYN to 172.17.0.1:22 and ARPs for 172.17.0.9.\n\
                 Out: ARP replies (02:42:ac:11:00:01 to c1, 02:42:cb:00:71:02 to the router) and\n\
                 echo replies (addresses swapped, TTL 64) on the port each request came in on; the\n\
                 SYN is refused with a RST+ACK from 172.17.0.1:22 (nothing listens there; counted\n\
                 as gateway_unsupported); the ARP for another address is bridged to c2 as usual.\n",
        topo: standard_topo(""),
        input: s,
        expect: vec![
            (
                "c1",
                vec![
                    (ra, build::arp_reply(gm, GW, mac(C1), C1)),
                    (r1, echo_reply_to(&p_gw)),
                    (r2, echo_reply_to(&p_up)),
                    (syn, refused),
                ],
            ),
            (
                "up",
                vec![
                    (rua, build::arp_reply(um, UP, ROUTER_MAC, ROUTER)),
                    (r3, echo_reply_to(&p_out)),
                ],
            ),
            ("c2", vec![(ro, other)]),
        ],
        drops: vec![("c1", "gateway_unsupported", 1)],
        local: vec![("c1", 3), ("up", 2)],
        bridge: vec![("echo_replies_sent", 3), ("arp_replies_sent", 2)],
        summary: |v| assert!(conntrack(v).is_empty()),
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            verbose: true,
            lines: None,
            port: "c1",
            contains: vec![
                "Reply 172.17.0.1 is-at 02:42:ac:11:00:01",
                "172.17.0.1 > 172.17.0.2: ICMP echo reply, id 7, seq 1",
                "203.0.113.2 > 172.17.0.2: ICMP echo reply, id 7, seq 2",
                "172.17.0.1.22 > 172.17.0.2.40000: Flags [R.], cksum",
            ],
        },
    }
}

fn all_scenarios() -> Vec<Scenario> {
    vec![
        snat_tcp(),
        snat_udp_and_icmp(),
        dnat_published(),
        hairpin(),
        icmp_error_translation(),
        ttl_expiry(),
        table_full_and_port_exhaustion(),
        internal_and_icc(),
        gateway_arp_ping(),
    ]
}

fn check(sc: Scenario) {
    harness(REGEN_HINT).check(sc);
}

#[test]
fn golden_nat_snat_tcp() {
    check(snat_tcp());
}

#[test]
fn golden_nat_snat_udp_and_icmp() {
    check(snat_udp_and_icmp());
}

#[test]
fn golden_nat_dnat_published() {
    check(dnat_published());
}

#[test]
fn golden_nat_hairpin() {
    check(hairpin());
}

#[test]
fn golden_nat_icmp_error_translation() {
    check(icmp_error_translation());
}

#[test]
fn golden_nat_ttl_expiry() {
    check(ttl_expiry());
}

#[test]
fn golden_nat_table_full_and_port_exhaustion() {
    check(table_full_and_port_exhaustion());
}

#[test]
fn golden_nat_internal_and_icc() {
    check(internal_and_icc());
}

#[test]
fn golden_nat_gateway_arp_ping() {
    check(gateway_arp_ping());
}

/// The scenarios described here are exactly the folders `golden.rs` leaves to this file, and
/// their input frames are distinct with increasing timestamps.
#[test]
fn nat_fixtures_and_descriptions_agree() {
    let scenarios = all_scenarios();
    let mut described: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    described.sort_unstable();
    assert_eq!(described, NAT_SCENARIOS);
    for s in &scenarios {
        if !regen_requested() {
            assert!(
                fixtures_root().join(s.name).is_dir(),
                "{}: no fixture folder; {REGEN_HINT}",
                s.name
            );
        }
    }
    assert_distinct_inputs(&scenarios);
}
