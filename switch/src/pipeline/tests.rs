//! The pipeline's unit tests: ports and networks added and removed at run time, batches.
use super::*;
use crate::DropReason;
use packet::MacAddr;
use testkit::frames as build;

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

#[test]
fn ports_added_and_removed_at_run_time() {
    let cfg =
        Config::from_toml("[[network]]\nname='n'\n[[port]]\nname='a'\nkind='tap'\nnetwork='n'")
            .unwrap();
    let mut p = Pipeline::new(&cfg).unwrap();
    // The queries a new port gets are the multicast module's tests' business.
    p.set_querier(false);
    let net = p.topology().network_by_name("n").unwrap();
    let b = p
        .add_port("b", PortKind::AfPacket, net, PortAddress::default())
        .unwrap();
    assert!(matches!(
        p.add_port("b", PortKind::AfPacket, net, PortAddress::default()),
        Err(PortError::Exists(_))
    ));
    let frame = build::udp(
        mac(1),
        MacAddr::BROADCAST,
        [10, 0, 0, 1].into(),
        [10, 0, 0, 255].into(),
        1,
        2,
        b"x",
    );
    let (mut input, mut out) = (vec![Packet::new(PortId(0), frame.clone())], Vec::new());
    p.process(1, &mut input, &mut out);
    assert_eq!(out.iter().map(|p| p.port).collect::<Vec<_>>(), vec![b]);
    // b learns a MAC, then goes away: its entries go and frames naming it are refused.
    let from_b = build::udp(
        mac(2),
        mac(1),
        [10, 0, 0, 2].into(),
        [10, 0, 0, 1].into(),
        1,
        2,
        b"y",
    );
    p.process(2, &mut vec![Packet::new(b, from_b.clone())], &mut out);
    assert!(p.fdb_rows(2).iter().any(|r| r.port == b));
    assert!(p.remove_port(b));
    assert!(!p.remove_port(b));
    assert!(p.fdb_rows(3).iter().all(|r| r.port != b));
    out.clear();
    p.process(
        3,
        &mut vec![Packet::new(b, from_b), Packet::new(PortId(0), frame)],
        &mut out,
    );
    assert!(out.is_empty(), "no other port is left to flood to");
    assert_eq!(p.bridge_counters().unknown_port, 1);
    assert_eq!(
        p.port_counters(PortId(0))
            .unwrap()
            .drops
            .get(DropReason::NoEgress),
        1
    );
    // The name can be used again; the id is b's, free again.
    assert_eq!(
        p.add_port("b", PortKind::AfPacket, net, PortAddress::default())
            .unwrap(),
        b
    );
}

fn lan(ports: &[&str]) -> Pipeline {
    let mut cfg = String::from("[[network]]\nname='n'\n");
    for name in ports {
        cfg += &format!("[[port]]\nname='{name}'\nkind='tap'\nnetwork='n'\n");
    }
    let mut p = Pipeline::new(&Config::from_toml(&cfg).unwrap()).unwrap();
    p.set_querier(false);
    p
}

#[test]
fn dns_names_change_one_at_a_time_where_there_is_dns() {
    let mut p = lan(&["a"]);
    let net = p.topology().network_by_name("n").unwrap();
    let ip = Ipv4Addr::new(10, 0, 0, 2);
    assert!(
        !p.dns_insert(net, "web", ip),
        "no table: no DNS (the default bridge)"
    );
    assert!(!p.dns_remove(net, "web", ip));
    p.set_dns_table(net, Some(DnsTable::default()));
    assert!(p.dns_insert(net, "Web", ip));
    assert!(p.dns_remove(net, "web", ip), "names without case");
    assert!(!p.dns_remove(net, "web", ip));
}

#[test]
fn churn_reuses_ids_lowest_first_and_never_runs_out() {
    let mut p = lan(&["a"]);
    let net = p.topology().network_by_name("n").unwrap();
    // More connects than 16-bit ids, as a CI host sees over a long life.
    for i in 0..70_000u32 {
        let id = p
            .add_port(
                &format!("vsw{i}"),
                PortKind::AfPacket,
                net,
                PortAddress::default(),
            )
            .unwrap();
        assert_eq!(id, PortId(1));
        assert!(p.remove_port(id));
    }
    assert_eq!(p.topology().ports.len(), 2, "no slot per connect");
    assert_eq!(p.topology().port(PortId(1)).unwrap().generation, 70_000);
    assert_eq!(p.topology().port_by_name("vsw69999"), None);
    let add = |p: &mut Pipeline, name: &str| {
        p.add_port(name, PortKind::AfPacket, net, PortAddress::default())
            .unwrap()
    };
    let [x, y, z] = ["x", "y", "z"].map(|n| add(&mut p, n));
    assert_eq!((x, y, z), (PortId(1), PortId(2), PortId(3)));
    assert!(p.remove_port(y) && p.remove_port(x));
    // Lowest first: the same on every worker for the same adds and removes.
    assert_eq!(add(&mut p, "u"), PortId(1));
    assert_eq!(add(&mut p, "v"), PortId(2));
    assert_eq!(add(&mut p, "w"), PortId(4));
    assert_eq!(p.topology().port_by_name("y"), None);
    assert_eq!(p.topology().port_by_name("v"), Some(PortId(2)));
    assert_eq!(p.topology().networks[0].ports.len(), 5);
}

#[test]
fn a_reused_id_starts_clean() {
    let mut p = lan(&["a", "d"]);
    let net = p.topology().network_by_name("n").unwrap();
    let (a, d) = (PortId(0), PortId(1));
    let b = p
        .add_port("b", PortKind::AfPacket, net, PortAddress::default())
        .unwrap();
    let group = Ipv4Addr::new(239, 1, 1, 1);
    let mut out = Vec::new();
    let from_b = build::udp(
        mac(2),
        mac(1),
        [10, 0, 0, 2].into(),
        [10, 0, 0, 1].into(),
        1,
        2,
        b"y",
    );
    let report = build::igmpv2_report(mac(2), [10, 0, 0, 2].into(), group);
    p.process(
        1,
        &mut vec![Packet::new(b, from_b), Packet::new(b, report)],
        &mut out,
    );
    let s = p.snapshot(1);
    assert!(s.fdb.iter().any(|r| r.port == "b"));
    assert_eq!(s.groups.len(), 1);
    assert_eq!(p.port_counters(b).unwrap().rx_frames, 2);
    assert!(p.remove_port(b));
    let names = |p: &Pipeline| {
        p.snapshot(2)
            .ports
            .into_iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&p), ["a", "d"], "a removed port is not shown");
    let c = p
        .add_port("c", PortKind::AfPacket, net, PortAddress::default())
        .unwrap();
    assert_eq!(c, b);
    assert_eq!(names(&p), ["a", "d", "c"]);
    assert_eq!(
        serde_json::to_value(p.port_counters(c).unwrap()).unwrap(),
        serde_json::to_value(PortCounters::default()).unwrap()
    );
    let s = p.snapshot(2);
    assert!(s.fdb.iter().all(|r| r.port != "c"), "{:?}", s.fdb);
    assert!(s.groups.is_empty());
    // A frame to b's old MAC is unknown unicast: flooded to d and c, not sent to c as if
    // c had been b.
    out.clear();
    let to_old = build::udp(
        mac(1),
        mac(2),
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        2,
        1,
        b"z",
    );
    p.process(3, &mut vec![Packet::new(a, to_old)], &mut out);
    let mut egress: Vec<_> = out.iter().map(|p| p.port).collect();
    egress.sort();
    assert_eq!(egress, [d, c]);
}

#[test]
fn a_reused_id_gets_nothing_of_the_old_port_s_arp_queue() {
    let topo = testkit::topology::Topo::new()
        .routed("web", "172.18.0.0/16", "172.18.0.1")
        .uplink_port("up")
        .uplink("up")
        .build();
    let mut p = Pipeline::new(&Config::from_toml(&topo).unwrap()).unwrap();
    p.set_querier(false);
    let net = p.topology().network_by_name("web").unwrap();
    let up = p.topology().uplink.unwrap().port;
    let add = |p: &mut Pipeline, name: &str| {
        p.add_port(name, PortKind::AfPacket, net, PortAddress::default())
            .unwrap()
    };
    let b = add(&mut p, "b");
    let gw = MacAddr::docker(Ipv4Addr::new(172, 18, 0, 1));
    let out_frame = build::udp(
        mac(2),
        gw,
        [172, 18, 0, 2].into(),
        [198, 51, 100, 1].into(),
        1000,
        53,
        b"q",
    );
    let mut out = Vec::new();
    p.process(1, &mut vec![Packet::new(b, out_frame)], &mut out);
    // Waiting for the next hop's MAC: the uplink saw an ARP request only.
    assert_eq!(p.port_counters(b).unwrap().queued, 1);
    assert!(out.iter().all(|o| o.port == up && o.data.len() < 64));
    assert!(p.remove_port(b));
    let c = add(&mut p, "c");
    assert_eq!(c, b);
    out.clear();
    let arp = build::arp_reply(
        MacAddr([2, 0, 0, 0, 0, 0xfe]),
        testkit::topology::NEXT_HOP.parse().unwrap(),
        MacAddr::docker(testkit::topology::UPLINK_ADDRESS.parse().unwrap()),
        testkit::topology::UPLINK_ADDRESS.parse().unwrap(),
    );
    p.process(2, &mut vec![Packet::new(up, arp)], &mut out);
    assert!(out.is_empty(), "b's datagram went with b: {out:?}");
    let cc = p.port_counters(c).unwrap();
    assert_eq!((cc.queued, cc.forwarded, cc.rx_frames), (0, 0, 0));
    // Past the queue's timeout nothing is counted on c either.
    p.process(10 * NANOS_PER_SEC, &mut Vec::new(), &mut out);
    assert_eq!(p.port_counters(c).unwrap().dropped(), 0);
}
