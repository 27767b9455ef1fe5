//! Multicast snooping at scale (issue #20: a thousand containers on one network, no flood
//! storms): 100 container ports come up as Linux hosts do (an MLDv2 report for their
//! solicited-node group, then duplicate address detection), and the frames that used to be
//! copied to every port reach only their listeners. Frames are built with etherparse
//! (`testkit::frames`), independent of the smoltcp views the switch parses them with.

#![allow(clippy::unwrap_used)] // Test helpers: panicking is how a test fails.

use packet::MacAddr;
use std::net::{Ipv4Addr, Ipv6Addr};
use switch::affinity::{Owner, owner};
use switch::{Config, DropReason, Packet, Pipeline, PortId};
use testkit::frames::{self as build, record};
use testkit::topology::Topo;

const PORTS: u16 = 100;
const T0: u64 = 5_000_000_000;
const SEC: u64 = 1_000_000_000;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// Network `bridge` 172.17.0.0/16 with container ports c0..c99 (ids 0..100).
fn topo() -> String {
    let names: Vec<String> = (0..PORTS).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    Topo::new()
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .ports("bridge", &names)
        .build()
}

fn mac(host: u16) -> MacAddr {
    let [hi, lo] = (host + 2).to_be_bytes();
    MacAddr([0x02, 0x42, 172, 17, hi, lo])
}

fn ip(host: u16) -> Ipv4Addr {
    let [hi, lo] = (host + 2).to_be_bytes();
    Ipv4Addr::new(172, 17, hi, lo)
}

/// The host's link-local address (its solicited-node groups differ from every other host's).
fn link_local(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0x42, 0xacff, 0xfe11, host + 2)
}

/// What a Linux host sends when its interface comes up, before DAD: an MLDv2 report from ::
/// joining the solicited-node group of its tentative address.
fn dad_report(host: u16) -> Vec<u8> {
    let group = build::solicited_node(link_local(host));
    build::mldv2_report(
        mac(host),
        Ipv6Addr::UNSPECIFIED,
        &[(record::TO_EXCLUDE, group, &[])],
    )
}

fn process(p: &mut Pipeline, now: u64, frames: Vec<(u16, Vec<u8>)>) -> Vec<Packet> {
    let mut input = frames
        .into_iter()
        .map(|(port, f)| Packet::new(PortId(port), f))
        .collect();
    let mut out = Vec::new();
    p.process(now, &mut input, &mut out);
    out
}

fn egress(out: &[Packet]) -> Vec<u16> {
    out.iter().map(|o| o.port.0).collect()
}

fn dropped(p: &Pipeline, reason: DropReason) -> u64 {
    (0..PORTS)
        .map(|i| p.port_counters(PortId(i)).unwrap().drops.get(reason))
        .sum()
}

#[test]
fn a_hundred_hosts_come_up_without_a_flood() {
    let mut p = Pipeline::new(&Config::from_toml(&topo()).unwrap()).unwrap();
    // Before anyone reported, a group's frames still reach every port (unsnooped).
    let early = build::neighbor_solicitation(mac(0), Ipv6Addr::UNSPECIFIED, link_local(0));
    assert_eq!(process(&mut p, T0, vec![(0, early)]).len(), 99);

    let reports = (0..PORTS).map(|h| (h, dad_report(h))).collect();
    assert!(
        process(&mut p, T0, reports).is_empty(),
        "reports are consumed"
    );
    assert_eq!(p.bridge_counters().multicast_reports, u64::from(PORTS));
    assert_eq!(p.snapshot(T0).groups.len(), usize::from(PORTS));

    // Duplicate address detection: each host asks its own solicited-node group, which no one
    // else listens to. 100 frames, no copy (it was 100 × 99).
    let dad = (0..PORTS)
        .map(|h| {
            let ns = build::neighbor_solicitation(mac(h), Ipv6Addr::UNSPECIFIED, link_local(h));
            (h, ns)
        })
        .collect();
    assert!(process(&mut p, T0 + SEC, dad).is_empty());
    assert_eq!(
        dropped(&p, DropReason::NoMulticastListener),
        u64::from(PORTS)
    );

    // Address resolution: c5 asks for c42's address; only c42 listens to that group.
    let ns = build::neighbor_solicitation(mac(5), link_local(5), link_local(42));
    assert_eq!(egress(&process(&mut p, T0 + SEC, vec![(5, ns)])), vec![42]);

    // A router solicitation: no router on a vswitch network listens to ff02::2.
    let rs = build::icmpv6_multicast(
        mac(7),
        link_local(7),
        ALL_ROUTERS,
        false,
        133,
        0,
        [0; 4],
        &[],
    );
    assert!(process(&mut p, T0 + SEC, vec![(7, rs)]).is_empty());
    assert_eq!(
        dropped(&p, DropReason::NoMulticastListener),
        u64::from(PORTS) + 1
    );

    // Broadcast ARP and all-nodes still reach the 99 others.
    let flooded_before = p.bridge_counters().flooded_copies;
    let arp = build::arp_request(mac(0), ip(0), ip(1));
    let out = process(&mut p, T0 + SEC, vec![(0, arp)]);
    assert_eq!(egress(&out), (1..PORTS).collect::<Vec<_>>());
    let na = build::icmpv6_multicast(
        mac(3),
        link_local(3),
        ALL_NODES,
        false,
        136,
        0,
        [0; 4],
        &link_local(3).octets(),
    );
    let out = process(&mut p, T0 + SEC, vec![(3, na)]);
    let want: Vec<u16> = (0..PORTS).filter(|&h| h != 3).collect();
    assert_eq!(egress(&out), want);
    assert_eq!(p.bridge_counters().flooded_copies - flooded_before, 2 * 99);

    let snooped = p.bridge_counters();
    assert_eq!(
        (
            snooped.multicast_to_listeners,
            snooped.multicast_listener_copies
        ),
        (2, 99 + 1)
    );
    for h in 0..PORTS {
        let c = p.port_counters(PortId(h)).unwrap();
        assert_eq!(c.rx_frames, c.forwarded + c.local + c.dropped(), "c{h}");
    }
}

/// Two workers as the daemon runs them: reports go to both (`Owner::All`), so both deliver
/// alike; only worker 0 queries.
#[test]
fn every_worker_learns_and_one_queries() {
    let cfg = Config::from_toml(&topo()).unwrap();
    let mut workers = [Pipeline::new(&cfg).unwrap(), Pipeline::new(&cfg).unwrap()];
    workers[1].set_querier(false);
    let topology = workers[0].topology().clone();
    for h in 0..PORTS {
        let report = dad_report(h);
        assert_eq!(owner(&topology, PortId(h), &report, 2), Owner::All);
        for w in &mut workers {
            assert!(process(w, T0, vec![(h, report.clone())]).is_empty());
        }
    }
    for w in &mut workers {
        let ns = build::neighbor_solicitation(mac(9), link_local(9), link_local(60));
        assert_eq!(egress(&process(w, T0 + SEC, vec![(9, ns)])), vec![60]);
    }
    let due = T0 + 125 * SEC;
    let queries = process(&mut workers[0], due, Vec::new());
    assert_eq!(queries.len(), 2 * usize::from(PORTS));
    assert!(process(&mut workers[1], due, Vec::new()).is_empty());
    let merged =
        switch::affinity::merge_snapshots(vec![workers[0].snapshot(due), workers[1].snapshot(due)])
            .unwrap();
    assert_eq!(merged.groups.len(), usize::from(PORTS));
    assert!(merged.groups.iter().all(|g| g.ports.len() == 1));
}
