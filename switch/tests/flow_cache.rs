//! The NAT flow cache changes how fast packets go, never what comes out: random traffic (TCP
//! sessions, stray segments, UDP both ways, published ports, oversized packets), clock jumps
//! across every timeout, conntrack flushes, published ports added and removed, the next hop
//! changing MAC, a container's MAC moving ports, a port going away and a new one taking its id
//! are driven through two pipelines, one with the cache and one without, and every batch's
//! output and every counter must be equal. The cached pipeline also warms every batch (classifying it in a pass ahead),
//! the other never does.

#![allow(clippy::unwrap_used)] // Test code: panicking is how a test fails.

use packet::{MacAddr, tcp_flags};
use proptest::prelude::*;
use std::net::Ipv4Addr;
use switch::{Config, Packet, Pipeline, PortId};
use testkit::frames as build;
use testkit::topology::{self, NEXT_HOP, UPLINK_ADDRESS};

const C: [PortId; 2] = [PortId(0), PortId(1)];
const UP: PortId = PortId(2);
const MS: u64 = 1_000_000;

/// Short timeouts and ageing so that clock jumps cross them; masquerade keeps the containers'
/// ports (1000-1002) when it can, so that remote hosts can answer them; `eim`: UDP mappings
/// endpoint-independent.
fn topo(eim: bool) -> String {
    topology::Topo::new()
        .bridge(&[("aging_secs", "20")])
        .block("nat", false)
        .set("port_first", 1000)
        .set("port_last", 1100)
        .set("udp_endpoint_independent", eim)
        .block("conntrack", false)
        .set("udp_unreplied_secs", 3)
        .set("udp_assured_secs", 10)
        .set("tcp_established_secs", 30)
        .set("tcp_syn_sent_secs", 5)
        .set("tcp_time_wait_secs", 4)
        .extend(
            topology::Topo::new()
                .routed("bridge", "172.17.0.0/16", "172.17.0.1")
                .ports("bridge", &["c1", "c2"])
                .uplink_port("up")
                .uplink("up")
                .set("mtu", 1400)
                .publish("tcp", 8080, "172.17.0.3", 80),
        )
        .build()
}

fn container_ip(c: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 17, 0, 2 + c as u8)
}

fn container_mac(c: usize) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0x10, c as u8])
}

fn remote_ip(r: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 1 + r)
}

fn router_mac(v: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, 0xf0 + v])
}

fn gateway_mac() -> MacAddr {
    MacAddr::docker(Ipv4Addr::new(172, 17, 0, 1))
}

fn uplink_ip() -> Ipv4Addr {
    UPLINK_ADDRESS.parse().unwrap()
}

fn uplink_mac() -> MacAddr {
    MacAddr::docker(uplink_ip())
}

const FLAGS: [u8; 6] = [
    tcp_flags::SYN,
    tcp_flags::SYN | tcp_flags::ACK,
    tcp_flags::ACK,
    tcp_flags::ACK | 0x08,
    tcp_flags::FIN | tcp_flags::ACK,
    tcp_flags::RST,
];

#[derive(Clone, Debug)]
enum Traffic {
    /// A container sends to a remote host.
    Out {
        c: usize,
        tcp: bool,
        sport: u16,
        remote: u8,
        flags: usize,
        seq: u32,
        big: bool,
    },
    /// A remote host sends to the uplink address (to a masquerade port or a published one).
    In {
        remote: u8,
        router: u8,
        tcp: bool,
        dport: u16,
        flags: usize,
        seq: u32,
        big: bool,
    },
    /// A whole TCP handshake from a container, then data both ways.
    Session { c: usize, sport: u16, remote: u8 },
    /// The next hop says where it is (possibly at a new MAC).
    RouterArp { router: u8 },
    /// A container's MAC shows up on the other port (a station move).
    Move { c: usize },
}

#[derive(Clone, Debug)]
enum Control {
    None,
    Flush,
    Publish,
    Unpublish,
    RemovePort(usize),
    /// A container port comes back, in the lowest free slot (a removed one's, if any).
    AddPort(usize),
}

#[derive(Clone, Debug)]
struct Step {
    advance_ms: u64,
    traffic: Vec<Traffic>,
    control: Control,
}

fn traffic() -> impl Strategy<Value = Traffic> {
    let port = prop_oneof![Just(1000u16), Just(1001), Just(1002), Just(8080), Just(9)];
    prop_oneof![
        4 => (0..2usize, any::<bool>(), 1000..1003u16, 0..2u8, 0..FLAGS.len(), 0..4u32, prop::bool::weighted(0.1))
            .prop_map(|(c, tcp, sport, remote, flags, seq, big)| Traffic::Out { c, tcp, sport, remote, flags, seq, big }),
        4 => (0..2u8, 0..2u8, any::<bool>(), port, 0..FLAGS.len(), 0..4u32, prop::bool::weighted(0.1))
            .prop_map(|(remote, router, tcp, dport, flags, seq, big)| Traffic::In { remote, router, tcp, dport, flags, seq, big }),
        2 => (0..2usize, 1000..1003u16, 0..2u8).prop_map(|(c, sport, remote)| Traffic::Session { c, sport, remote }),
        1 => (0..2u8).prop_map(|router| Traffic::RouterArp { router }),
        1 => (0..2usize).prop_map(|c| Traffic::Move { c }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let advance = prop_oneof![
        6 => 0..50u64,
        2 => 1_000..6_000u64,
        1 => 15_000..40_000u64,
    ];
    let control = prop_oneof![
        20 => Just(Control::None),
        1 => Just(Control::Flush),
        1 => Just(Control::Publish),
        1 => Just(Control::Unpublish),
        1 => (0..2usize).prop_map(Control::RemovePort),
        1 => (0..2usize).prop_map(Control::AddPort),
    ];
    (advance, prop::collection::vec(traffic(), 1..12), control).prop_map(
        |(advance_ms, traffic, control)| Step {
            advance_ms,
            traffic,
            control,
        },
    )
}

fn payload(big: bool) -> Vec<u8> {
    vec![0x5a; if big { 1400 } else { 18 }]
}

/// A container's frame to a remote host; `(seq, ack)` for TCP.
fn out_frame(
    c: usize,
    tcp: bool,
    sport: u16,
    remote: u8,
    flags: u8,
    (seq, ack): (u32, u32),
    data: &[u8],
) -> Vec<u8> {
    let (mac, ip) = (container_mac(c), container_ip(c));
    if tcp {
        build::tcp(
            mac,
            gateway_mac(),
            ip,
            remote_ip(remote),
            sport,
            80,
            seq,
            ack,
            flags,
            data,
        )
    } else {
        build::udp(mac, gateway_mac(), ip, remote_ip(remote), sport, 53, data)
    }
}

#[allow(clippy::too_many_arguments)]
fn in_frame(
    remote: u8,
    router: u8,
    tcp: bool,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<u8> {
    let (src, dst) = (remote_ip(remote), uplink_ip());
    let sport = if tcp { 80 } else { 53 };
    if tcp {
        build::tcp(
            router_mac(router),
            uplink_mac(),
            src,
            dst,
            sport,
            dport,
            seq,
            ack,
            flags,
            data,
        )
    } else {
        build::udp(
            router_mac(router),
            uplink_mac(),
            src,
            dst,
            sport,
            dport,
            data,
        )
    }
}

/// The frames of one step, in order, with their ingress ports.
fn frames(traffic: &[Traffic]) -> Vec<Packet> {
    let mut out = Vec::new();
    for t in traffic {
        match *t {
            Traffic::Out {
                c,
                tcp,
                sport,
                remote,
                flags,
                seq,
                big,
            } => out.push(Packet::new(
                C[c],
                out_frame(
                    c,
                    tcp,
                    sport,
                    remote,
                    FLAGS[flags],
                    (100 + seq, 0),
                    &payload(big),
                ),
            )),
            Traffic::In {
                remote,
                router,
                tcp,
                dport,
                flags,
                seq,
                big,
            } => out.push(Packet::new(
                UP,
                in_frame(
                    remote,
                    router,
                    tcp,
                    dport,
                    FLAGS[flags],
                    500 + seq,
                    101,
                    &payload(big),
                ),
            )),
            Traffic::Session { c, sport, remote } => {
                let none: &[u8] = &[];
                let data = [1u8; 10];
                out.push(Packet::new(
                    C[c],
                    out_frame(c, true, sport, remote, tcp_flags::SYN, (100, 0), none),
                ));
                out.push(Packet::new(
                    UP,
                    in_frame(
                        remote,
                        0,
                        true,
                        sport,
                        tcp_flags::SYN | tcp_flags::ACK,
                        500,
                        101,
                        none,
                    ),
                ));
                let ack = |seq: u32, ackn: u32, d: &[u8]| {
                    out_frame(c, true, sport, remote, tcp_flags::ACK, (seq, ackn), d)
                };
                out.push(Packet::new(C[c], ack(101, 501, none)));
                out.push(Packet::new(C[c], ack(101, 501, &data)));
                out.push(Packet::new(
                    UP,
                    in_frame(remote, 0, true, sport, tcp_flags::ACK, 501, 111, &data),
                ));
                out.push(Packet::new(C[c], ack(111, 511, &data)));
            }
            Traffic::RouterArp { router } => out.push(Packet::new(
                UP,
                build::arp_reply(
                    router_mac(router),
                    NEXT_HOP.parse().unwrap(),
                    uplink_mac(),
                    uplink_ip(),
                ),
            )),
            Traffic::Move { c } => out.push(Packet::new(
                C[1 - c],
                build::arp_request(
                    container_mac(c),
                    container_ip(c),
                    Ipv4Addr::new(172, 17, 0, 1),
                ),
            )),
        }
    }
    out
}

fn control(p: &mut Pipeline, c: &Control) {
    match *c {
        Control::None => {}
        Control::Flush => p.flush_conntrack(),
        Control::Publish => p.publish(6, 8080, container_ip(1), 80),
        Control::Unpublish => {
            p.unpublish(6, 8080);
        }
        Control::RemovePort(c) => {
            p.remove_port(C[c]);
        }
        Control::AddPort(c) => {
            let net = p.topology().network_by_name("bridge").unwrap();
            // Refused while the name is taken; else a removed port's id, starting clean.
            let _ = p.add_port(
                ["c1", "c2"][c],
                switch::PortKind::AfPacket,
                net,
                Default::default(),
            );
        }
    }
}

fn pipeline(cache: bool, eim: bool) -> Pipeline {
    let mut p = Pipeline::new(&Config::from_toml(&topo(eim)).unwrap()).unwrap();
    p.set_flow_cache(cache);
    p.set_warm_threshold(if cache { 0 } else { usize::MAX });
    p
}

/// Runs `steps` through a cached and an uncached pipeline, asserting equal output and state
/// after every batch; returns the cached pipeline.
fn compare(steps: &[Step], eim: bool) -> Result<Pipeline, TestCaseError> {
    let (mut fast, mut slow) = (pipeline(true, eim), pipeline(false, eim));
    let mut now = 1_000 * 1_000 * MS;
    for (i, s) in steps.iter().enumerate() {
        now += s.advance_ms * MS;
        control(&mut fast, &s.control);
        control(&mut slow, &s.control);
        let input = frames(&s.traffic);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fast.process(now, &mut input.clone(), &mut a);
        slow.process(now, &mut input.clone(), &mut b);
        prop_assert_eq!(&a, &b, "output of step {}: {:?}", i, s);
        let (sa, sb) = (
            serde_json::to_value(fast.snapshot(now)).unwrap(),
            serde_json::to_value(slow.snapshot(now)).unwrap(),
        );
        prop_assert_eq!(sa, sb, "state after step {}: {:?}", i, s);
    }
    prop_assert_eq!(slow.flow_cache_stats().hits, 0);
    Ok(fast)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn cache_changes_nothing_that_comes_out(
        steps in prop::collection::vec(step(), 1..40),
        eim in any::<bool>(),
    ) {
        compare(&steps, eim)?;
    }
}

/// The comparison above is only worth something if the cache is used: a plain session must be
/// served from it.
#[test]
fn established_flows_hit_the_cache() {
    let session = Step {
        advance_ms: 1,
        traffic: vec![
            Traffic::RouterArp { router: 0 },
            Traffic::Session {
                c: 0,
                sport: 1000,
                remote: 0,
            },
        ],
        control: Control::None,
    };
    let udp = |c| Traffic::Out {
        c,
        tcp: false,
        sport: 1001,
        remote: 1,
        flags: 0,
        seq: 0,
        big: false,
    };
    let replies = Traffic::In {
        remote: 1,
        router: 0,
        tcp: false,
        dport: 1001,
        flags: 0,
        seq: 0,
        big: false,
    };
    let more = Step {
        advance_ms: 1,
        traffic: vec![
            udp(0),
            replies.clone(),
            udp(0),
            replies.clone(),
            udp(0),
            replies,
        ],
        control: Control::None,
    };
    let p = compare(&[session, more], false).unwrap();
    let stats = p.flow_cache_stats();
    // Session: the SYN, SYN/ACK fill, the 4 segments after them hit. UDP: the first request
    // and reply fill, the 4 after them hit.
    assert_eq!((stats.hits, stats.fills), (8, 4), "{stats:?}");
}

/// Actions end when a neighbor or FDB entry they used ages, even before the tables' own
/// sweeps notice (the property test rarely lands in those windows).
#[test]
fn ageing_neighbors_and_fdb_entries_end_cached_actions() {
    let udp_out = Traffic::Out {
        c: 0,
        tcp: false,
        sport: 1001,
        remote: 1,
        flags: 0,
        seq: 0,
        big: false,
    };
    let step = |advance_ms, traffic| Step {
        advance_ms,
        traffic,
        control: Control::None,
    };
    // The FDB entry of c1 dies 20 s after its last frame, between two sweeps (every 2 s); the
    // TCP entry lives on, so the remote's segment is flooded, not sent from the cache.
    let fdb = [
        step(
            1,
            vec![
                Traffic::RouterArp { router: 0 },
                Traffic::Session {
                    c: 0,
                    sport: 1000,
                    remote: 0,
                },
            ],
        ),
        step(19_500, vec![]),
        step(
            1_000,
            vec![Traffic::In {
                remote: 0,
                router: 0,
                tcp: true,
                dport: 1000,
                flags: 2,
                seq: 11,
                big: false,
            }],
        ),
    ];
    let p = compare(&fdb, false).unwrap();
    assert!(p.flow_cache_stats().hits >= 4);
    // The next hop's ARP entry ages after 300 s while a UDP flow keeps sending: its packets
    // then wait for ARP instead of leaving from the cache.
    let mut neighbor = vec![step(
        1,
        vec![Traffic::RouterArp { router: 0 }, udp_out.clone()],
    )];
    neighbor.extend((0..40).map(|_| step(8_000, vec![udp_out.clone()])));
    let p = compare(&neighbor, false).unwrap();
    assert!(p.flow_cache_stats().hits >= 30);
}
