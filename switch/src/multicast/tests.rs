//! Snooping through a whole pipeline: membership from reports, the unsnooped grace period,
//! expiry, the querier's timing, and port removal.

use super::timing::{MEMBERSHIP, QUERY_INTERVAL, UNSNOOPED_GRACE};
use crate::{Config, DropReason, Packet, Pipeline, PortAddress, PortId, PortKind};
use packet::{Ipv4Addr, Ipv6Addr, MacAddr};
use testkit::frames::{self as build, record};
use testkit::topology::Topo;

const T0: u64 = 1_000_000_000;
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
const GATEWAY_MAC: MacAddr = MacAddr([0x02, 0x42, 172, 17, 0, 1]);

/// Network `bridge` (gateway 172.17.0.1) with container ports c0..c{n-1}, ids 0..n.
fn pipeline(ports: usize, querier: bool) -> Pipeline {
    let names: Vec<String> = (0..ports).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let topo = Topo::new()
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .ports("bridge", &names)
        .build();
    let mut p = Pipeline::new(&Config::from_toml(&topo).unwrap()).unwrap();
    p.set_querier(querier);
    p
}

fn mac(host: u16) -> MacAddr {
    MacAddr([0x02, 0x42, 172, 17, 0, 2 + host as u8])
}

fn ip(host: u16) -> Ipv4Addr {
    Ipv4Addr::new(172, 17, 0, 2 + host as u8)
}

fn ip6(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2 + host)
}

/// Sends `frame` from port `from` at `now`; returns what left, by egress port id.
fn send(p: &mut Pipeline, now: u64, from: u16, frame: Vec<u8>) -> Vec<u16> {
    let mut out = Vec::new();
    p.process(now, &mut vec![Packet::new(PortId(from), frame)], &mut out);
    out.iter().map(|o| o.port.0).collect()
}

/// Runs housekeeping alone at `now`; returns what left.
fn tick(p: &mut Pipeline, now: u64) -> Vec<Packet> {
    let mut out = Vec::new();
    p.process(now, &mut Vec::new(), &mut out);
    out
}

fn to_group(from: u16) -> Vec<u8> {
    build::udp(
        mac(from),
        build::multicast_mac_v4(GROUP),
        ip(from),
        GROUP,
        5000,
        5000,
        b"data",
    )
}

/// An IGMPv3 report with no record: "I speak IGMP and listen to nothing".
fn nothing(from: u16) -> Vec<u8> {
    build::igmpv3_report(mac(from), ip(from), &[])
}

fn drops(p: &Pipeline, port: u16, reason: DropReason) -> u64 {
    p.port_counters(PortId(port)).unwrap().drops.get(reason)
}

#[test]
fn reports_join_leave_and_expire() {
    let mut p = pipeline(3, false);
    assert!(send(&mut p, T0, 0, build::igmpv2_report(mac(0), ip(0), GROUP)).is_empty());
    assert!(send(&mut p, T0, 1, nothing(1)).is_empty());
    assert!(send(&mut p, T0, 2, nothing(2)).is_empty());
    assert_eq!(send(&mut p, T0, 1, to_group(1)), vec![0], "only the member");
    let rows = p.snapshot(T0).groups;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].group.as_str(), rows[0].ports.clone()),
        ("239.1.2.3", vec!["c0".to_string()])
    );
    // Reports are the switch's: consumed, counted local, nothing forwarded.
    let c0 = p.port_counters(PortId(0)).unwrap();
    assert_eq!((c0.local, c0.forwarded), (1, 0));
    assert_eq!(p.bridge_counters().multicast_reports, 3);
    assert_eq!(p.bridge_counters().multicast_to_listeners, 1);
    assert_eq!(p.bridge_counters().multicast_listener_copies, 1);
    assert_eq!(p.bridge_counters().flooded_copies, 0);

    // A refresh before the membership interval keeps it; without one it expires.
    let later = T0 + MEMBERSHIP - 1;
    send(&mut p, later, 0, build::igmpv2_report(mac(0), ip(0), GROUP));
    assert_eq!(send(&mut p, T0 + MEMBERSHIP + 1, 1, to_group(1)), vec![0]);
    assert!(send(&mut p, later + MEMBERSHIP, 1, to_group(1)).is_empty());
    assert_eq!(drops(&p, 1, DropReason::NoMulticastListener), 1);
    assert!(p.snapshot(later + MEMBERSHIP).groups.is_empty());

    // A leave takes effect at once.
    let t = later + MEMBERSHIP + 1;
    send(&mut p, t, 2, build::igmpv2_report(mac(2), ip(2), GROUP));
    assert_eq!(send(&mut p, t, 1, to_group(1)), vec![2]);
    send(&mut p, t, 2, build::igmpv2_leave(mac(2), ip(2), GROUP));
    assert!(send(&mut p, t, 1, to_group(1)).is_empty());
    assert_eq!(drops(&p, 1, DropReason::NoMulticastListener), 2);
    for port in 0..3 {
        let c = p.port_counters(PortId(port)).unwrap();
        assert_eq!(
            c.rx_frames,
            c.forwarded + c.local + c.dropped(),
            "port {port}"
        );
    }
}

#[test]
fn unsnooped_ports_get_every_group_until_they_report_or_the_grace_ends() {
    let mut p = pipeline(3, false);
    assert_eq!(
        send(&mut p, T0, 0, to_group(0)),
        vec![1, 2],
        "nobody snooped yet"
    );
    // c1 speaks IGMP and listens to nothing: IPv4 groups no longer reach it, IPv6 ones still do
    // (its MLD is not known yet).
    send(&mut p, T0, 1, nothing(1));
    assert_eq!(send(&mut p, T0, 0, to_group(0)), vec![2]);
    let ns = build::neighbor_solicitation(mac(0), Ipv6Addr::UNSPECIFIED, ip6(9));
    assert_eq!(send(&mut p, T0, 0, ns.clone()), vec![1, 2]);
    // One query interval and the response time after the first housekeeping, c2 (which never
    // reported) counts as a host without IGMP/MLD: groups reach it no more.
    let end = T0 + UNSNOOPED_GRACE;
    assert_eq!(send(&mut p, end - 1, 0, to_group(0)), vec![2]);
    assert!(send(&mut p, end, 0, to_group(0)).is_empty());
    assert!(send(&mut p, end, 0, ns).is_empty());
    assert_eq!(drops(&p, 0, DropReason::NoMulticastListener), 2);
}

#[test]
fn never_back_to_the_ingress_port() {
    let mut p = pipeline(2, false);
    let mld = build::mldv2_report(
        mac(0),
        ip6(0),
        &[(
            record::TO_EXCLUDE,
            Ipv6Addr::new(0xff05, 0, 0, 0, 0, 0, 0, 5),
            &[],
        )],
    );
    send(&mut p, T0, 0, mld);
    send(&mut p, T0, 1, build::mldv2_report(mac(1), ip6(1), &[]));
    let data = build::icmpv6_multicast(
        mac(0),
        ip6(0),
        Ipv6Addr::new(0xff05, 0, 0, 0, 0, 0, 0, 5),
        false,
        128,
        0,
        [0, 1, 0, 1],
        b"ping",
    );
    assert!(
        send(&mut p, T0, 0, data).is_empty(),
        "its only member sent it"
    );
    assert_eq!(drops(&p, 0, DropReason::NoMulticastListener), 1);
}

#[test]
fn link_local_groups_all_nodes_and_broadcast_still_flood() {
    let mut p = pipeline(3, false);
    for port in 0..3 {
        send(&mut p, T0, port, nothing(port));
        send(
            &mut p,
            T0,
            port,
            build::mldv2_report(mac(port), ip6(port), &[]),
        );
    }
    let mdns = Ipv4Addr::new(224, 0, 0, 251);
    let f = build::udp(
        mac(0),
        build::multicast_mac_v4(mdns),
        ip(0),
        mdns,
        5353,
        5353,
        b"q",
    );
    assert_eq!(send(&mut p, T0, 0, f), vec![1, 2]);
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let ra = build::icmpv6_multicast(mac(1), ip6(1), all_nodes, false, 134, 0, [0; 4], &[0; 12]);
    assert_eq!(send(&mut p, T0, 1, ra), vec![0, 2]);
    let arp = build::arp_request(mac(2), ip(2), ip(0));
    assert_eq!(send(&mut p, T0, 2, arp), vec![0, 1]);
    let lldp = build::ethernet(
        mac(0),
        MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]),
        0x88cc,
        &[0; 30],
    );
    assert_eq!(send(&mut p, T0, 0, lldp), vec![1, 2]);
    assert_eq!(p.bridge_counters().multicast_flooded, 4);
    assert_eq!(p.bridge_counters().flooded_copies, 8);
}

#[test]
fn malformed_reports_are_counted_drops() {
    let mut p = pipeline(2, false);
    let mut bad = build::igmpv2_report(mac(0), ip(0), GROUP);
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    assert!(send(&mut p, T0, 0, bad).is_empty());
    assert_eq!(drops(&p, 0, DropReason::MalformedReport), 1);
    assert_eq!(p.bridge_counters().multicast_reports, 0);
    assert!(p.snapshot(T0).groups.is_empty());
}

#[test]
fn removed_ports_lose_their_memberships() {
    let mut p = pipeline(3, false);
    let net = p.topology().network_by_name("bridge").unwrap();
    for port in 0..2 {
        send(
            &mut p,
            T0,
            port,
            build::igmpv2_report(mac(port), ip(port), GROUP),
        );
    }
    send(&mut p, T0, 2, nothing(2));
    assert!(p.remove_port(PortId(1)));
    assert_eq!(send(&mut p, T0, 2, to_group(2)), vec![0]);
    let rows = p.snapshot(T0).groups;
    assert_eq!(rows[0].ports, vec!["c0".to_string()]);
    // A new port (a new id) starts unsnooped, with no membership.
    let d = p
        .add_port("d", PortKind::AfPacket, net, PortAddress::default())
        .unwrap();
    assert_eq!(send(&mut p, T0, 2, to_group(2)), vec![0, d.0]);
}

/// The source, destination and IP protocol (or next header) of a query the switch sent.
fn query_kind(frame: &[u8]) -> (String, String, u8) {
    let s = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    match s.net.unwrap() {
        etherparse::NetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                h.source_addr().to_string(),
                h.destination_addr().to_string(),
                h.protocol().0,
            )
        }
        etherparse::NetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                h.source_addr().to_string(),
                h.destination_addr().to_string(),
                v6.payload().ip_number.0,
            )
        }
        other => panic!("not IP: {other:?}"),
    }
}

#[test]
fn queries_every_interval_and_only_when_querier() {
    let mut p = pipeline(3, true);
    assert!(
        tick(&mut p, T0).is_empty(),
        "the initial ports wait one interval"
    );
    assert!(tick(&mut p, T0 + QUERY_INTERVAL - 1).is_empty());
    let out = tick(&mut p, T0 + QUERY_INTERVAL);
    let ports: Vec<u16> = out.iter().map(|o| o.port.0).collect();
    assert_eq!(ports, vec![0, 0, 1, 1, 2, 2]);
    assert_eq!(p.bridge_counters().multicast_queries_sent, 6);
    assert_eq!(p.port_counters(PortId(0)).unwrap().tx_frames, 2);
    let igmp = &out[0].data;
    assert_eq!(&igmp[..12], &[1, 0, 0x5e, 0, 0, 1, 2, 0x42, 172, 17, 0, 1]);
    assert_eq!(
        query_kind(igmp),
        ("172.17.0.1".into(), "224.0.0.1".into(), 2)
    );
    // IGMPv3 query: after Ethernet and the 24-byte IPv4 header; type, max resp 10 s, group 0,
    // QRV 2, QQIC 125, no source; its checksum right.
    let msg = &igmp[38..];
    assert_eq!(msg.len(), 12);
    assert_eq!(
        (msg[0], msg[1], &msg[4..]),
        (0x11, 100, &[0, 0, 0, 0, 2, 125, 0, 0][..])
    );
    assert_eq!(build::ones_sum(0, msg), 0xffff);
    assert_eq!(
        build::ones_sum(0, &igmp[14..38]),
        0xffff,
        "IPv4 header checksum"
    );
    let mld = &out[1].data;
    assert_eq!(&mld[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    // From the gateway MAC's EUI-64 link-local address, behind Hop-by-Hop (next header 0).
    assert_eq!(
        query_kind(mld),
        ("fe80::42:acff:fe11:1".into(), "ff02::1".into(), 58)
    );
    assert_eq!(
        &mld[54..62],
        &[58, 0, 5, 2, 0, 0, 1, 0],
        "Router Alert: MLD"
    );
    let icmp = &mld[62..];
    assert_eq!(icmp.len(), 28);
    assert_eq!((icmp[0], &icmp[4..6]), (130, &10_000u16.to_be_bytes()[..]));
    assert_eq!(&icmp[24..], &[2, 125, 0, 0]);
    let mut pseudo = mld[22..54].to_vec();
    pseudo.extend_from_slice(&[0, 0, 0, 28, 0, 0, 0, 58]);
    assert_eq!(build::ones_sum(build::ones_sum(0, &pseudo), icmp), 0xffff);
    // Hosts answer them: the switch does not forward its own queries' answers either.
    assert_eq!(
        send(&mut p, T0 + QUERY_INTERVAL, 0, nothing(0)),
        Vec::<u16>::new()
    );
    assert!(tick(&mut p, T0 + 2 * QUERY_INTERVAL - 1).is_empty());
    assert_eq!(tick(&mut p, T0 + 2 * QUERY_INTERVAL).len(), 6);

    let mut quiet = pipeline(3, false);
    for t in [T0, T0 + QUERY_INTERVAL, T0 + 2 * QUERY_INTERVAL] {
        assert!(tick(&mut quiet, t).is_empty());
    }
    assert_eq!(quiet.bridge_counters().multicast_queries_sent, 0);
}

#[test]
fn a_port_added_at_run_time_is_queried_at_once() {
    let mut p = pipeline(2, true);
    tick(&mut p, T0);
    let net = p.topology().network_by_name("bridge").unwrap();
    let d = p
        .add_port("d", PortKind::AfPacket, net, PortAddress::default())
        .unwrap();
    let out = tick(&mut p, T0 + 5);
    assert_eq!(out.iter().map(|o| o.port).collect::<Vec<_>>(), vec![d, d]);
    assert_eq!(&out[0].data[6..12], &GATEWAY_MAC.0);
    assert!(tick(&mut p, T0 + 6).is_empty(), "once");
    // Its grace period started then: it gets groups until T0 + 5 + grace (the periodic
    // queries, due meanwhile, are not this test's business).
    p.set_querier(false);
    let end = T0 + 5 + UNSNOOPED_GRACE;
    send(&mut p, end - 1, 0, nothing(0));
    send(&mut p, end - 1, 1, nothing(1));
    assert_eq!(send(&mut p, end - 1, 0, to_group(0)), vec![d.0]);
    assert!(send(&mut p, end, 0, to_group(0)).is_empty());
}

#[test]
fn a_port_joins_at_most_its_cap_of_groups() {
    let topo = Topo::new()
        .bridge(&[("max_groups_per_port", "2")])
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .ports("bridge", &["c0", "c1"])
        .build();
    let mut p = Pipeline::new(&Config::from_toml(&topo).unwrap()).unwrap();
    let g = |n| Ipv4Addr::new(239, 0, 0, n);
    let join = |n| (record::TO_EXCLUDE, g(n), &[][..]);
    let report = build::igmpv3_report(mac(0), ip(0), &[join(1), join(2), join(3)]);
    send(&mut p, T0, 0, report);
    send(&mut p, T0, 1, nothing(1));
    assert_eq!(p.bridge_counters().multicast_group_cap_reached, 1);
    assert_eq!(p.snapshot(T0).groups.len(), 2);
    let to = |n| {
        build::udp(
            mac(1),
            build::multicast_mac_v4(g(n)),
            ip(1),
            g(n),
            1,
            2,
            b"x",
        )
    };
    assert!(send(&mut p, T0, 1, to(3)).is_empty(), "not learned");
    // A refresh of a known group is not a new one; a leave frees a slot.
    send(
        &mut p,
        T0,
        0,
        build::igmpv3_report(mac(0), ip(0), &[join(1)]),
    );
    assert_eq!(p.bridge_counters().multicast_group_cap_reached, 1);
    send(&mut p, T0, 0, build::igmpv2_leave(mac(0), ip(0), g(2)));
    send(&mut p, T0, 0, build::igmpv2_report(mac(0), ip(0), g(3)));
    assert_eq!(send(&mut p, T0, 1, to(3)), vec![0]);
    // Expired memberships free their slots too.
    let later = T0 + MEMBERSHIP;
    send(
        &mut p,
        later,
        0,
        build::igmpv3_report(mac(0), ip(0), &[join(4), join(5)]),
    );
    assert_eq!(p.bridge_counters().multicast_group_cap_reached, 1);
    assert_eq!(p.snapshot(later).groups.len(), 2);
}
