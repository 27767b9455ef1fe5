//! Which packet loop must see a frame: flow affinity for several workers.
//!
//! Each worker runs its own [`crate::Pipeline`], with its own conntrack table, FDB and ARP cache,
//! and no locks between them. That is correct only if both directions of a routed connection
//! reach the same worker, although NAT makes the two directions look different on the wire.
//! What both directions share is the *remote address*, the far side's, which NAT never changes:
//! - masquerade: out `container:p → R:q`, back `R:q → uplink:p'`: the remote is `R` both ways;
//! - published port: in `client:c → uplink:h`, back `container:h' → client:c`: `client`;
//! - ICMP errors quote the packet they are about, whose remote address is the flow's;
//! - hairpin (a container to the uplink address): the remote is the uplink address both ways;
//! - DNS queries to a gateway, which may be forwarded to the upstream resolver: the resolver.
//!
//! Ports are deliberately left out: later fragments carry none, and NAT's port uniqueness is per
//! remote, so with every flow to one remote address on one worker no two workers can ever hand
//! out the same mapping. The price: traffic to a single remote host is served by one worker;
//! traffic to many hosts spreads.
//!
//! Frames that need no shared state (switched between containers) may go to any worker
//! ([`Owner::Any`]); the kernel's symmetric fanout hash already keeps each L2 flow on one
//! worker, so FDBs learn both ends. ARP replies go to every worker ([`Owner::All`]) since any of
//! them may be waiting for that answer; ARP requests on the uplink are answered by worker 0.
//! IPv6 follows the same rules: neighbour advertisements (IPv6's ARP replies) go to every
//! worker, solicitations on the uplink to worker 0, routed packets by their remote address.
//! IGMP and MLD reports and leaves from container ports go to every worker too: each worker's
//! pipeline snoops multicast for the frames it forwards, so each must learn every membership;
//! each consumes its copy and forwards nothing, so no frame is duplicated.

use crate::config::{PortId, Topology};
use crate::multicast::{self, Kind};
use crate::pipeline::Snapshot;
use packet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, dst_mac, ethertype};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Where a frame must be processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Any worker (the one that read it).
    Any,
    /// This worker.
    Worker(usize),
    /// A copy to every worker.
    All,
}

fn pick(addr: Ipv4Addr, workers: usize) -> Owner {
    pick_key(u64::from(u32::from(addr)), workers)
}

fn pick6(addr: Ipv6Addr, workers: usize) -> Owner {
    let b = addr.to_bits();
    pick_key((b as u64) ^ ((b >> 64) as u64), workers)
}

fn pick_key(key: u64, workers: usize) -> Owner {
    // A fixed mix (splitmix64 finalizer): the same in every worker, so they all agree.
    let mut x = key;
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    Owner::Worker((x % workers as u64) as usize)
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    b.get(at..at + 4)
        .map(|x| Ipv4Addr::new(x[0], x[1], x[2], x[3]))
}

/// The remote address of the IPv4 packet at `l3`: its source when `src_side` (traffic arriving
/// from outside), else its destination (traffic leaving a container).
fn remote(frame: &[u8], l3: usize, src_side: bool) -> Option<Ipv4Addr> {
    let ihl = usize::from(frame.get(l3)? & 0x0f) * 4;
    let proto = *frame.get(l3 + 9)?;
    let flags = frame.get(l3 + 6..l3 + 8)?;
    let first_fragment = flags[0] & 0x1f == 0 && flags[1] == 0;
    if proto == 1 && first_fragment && matches!(frame.get(l3 + ihl), Some(3 | 4 | 11 | 12)) {
        // An ICMP error: the quoted packet went the other way, so its remote is on the
        // opposite side of the quote.
        return remote(frame, l3 + ihl + 8, !src_side);
    }
    ip_at(frame, l3 + if src_side { 12 } else { 16 })
}

fn ip6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    b.get(at..at + 16)
        .and_then(|x| <[u8; 16]>::try_from(x).ok())
        .map(Ipv6Addr::from)
}

/// [`remote`] for the IPv6 packet at `l3` (an ICMPv6 error right after the fixed header names
/// the remote of the packet it quotes).
fn remote6(frame: &[u8], l3: usize, src_side: bool) -> Option<Ipv6Addr> {
    if frame.get(l3 + 6) == Some(&packet::IPPROTO_ICMPV6)
        && matches!(frame.get(l3 + 40), Some(1..=4))
    {
        return remote6(frame, l3 + 48, !src_side);
    }
    ip6_at(frame, l3 + if src_side { 8 } else { 24 })
}

/// Where an IPv6 frame goes: neighbour advertisements to every worker, solicitations from the
/// uplink to worker 0, routed packets by their remote address, the rest anywhere.
fn owner6(
    topo: &Topology,
    network: Option<crate::config::NetworkId>,
    frame: &[u8],
    workers: usize,
) -> Owner {
    let icmp_type = (frame.get(20) == Some(&packet::IPPROTO_ICMPV6))
        .then(|| frame.get(54).copied())
        .flatten();
    match (icmp_type, network) {
        (Some(136), _) => return Owner::All,
        (Some(135), None) => return Owner::Worker(0),
        (Some(133..=137), Some(_)) => return Owner::Any,
        _ => {}
    }
    match network {
        None => remote6(frame, 14, true).map_or(Owner::Worker(0), |a| pick6(a, workers)),
        Some(net) => {
            let Some(n) = topo.networks.get(usize::from(net.0)) else {
                return Owner::Any;
            };
            let (Some((_, gw_mac)), Some(v6)) = (n.gateway, n.v6) else {
                return Owner::Any;
            };
            if dst_mac(frame) != Some(gw_mac) {
                return Owner::Any;
            }
            // A DNS query to the gateway may be forwarded: its flow's remote is the resolver.
            let to_dns = ip6_at(frame, 38) == Some(v6.gateway)
                && frame.get(20) == Some(&17)
                && frame.get(56..58) == Some(&[0, 53][..]);
            if let (true, Some(&resolver)) = (to_dns, topo.dns_upstream6.first()) {
                return pick6(resolver, workers);
            }
            remote6(frame, 14, false).map_or(Owner::Any, |a| pick6(a, workers))
        }
    }
}

/// Which of `workers` loops must process `frame`, which arrived on `ingress`.
pub fn owner(topo: &Topology, ingress: PortId, frame: &[u8], workers: usize) -> Owner {
    if workers <= 1 {
        return Owner::Any;
    }
    let Some(port) = topo.ports.get(usize::from(ingress.0)) else {
        return Owner::Any;
    };
    let Some(ty) = ethertype(frame) else {
        return Owner::Any;
    };
    if port.network.is_some()
        && dst_mac(frame).is_some_and(|m| m.is_multicast())
        && matches!(multicast::classify(frame), Ok(Kind::Report(_)))
    {
        return Owner::All;
    }
    if ty == ETHERTYPE_ARP {
        // Operation at offset 20 of an untagged frame: 1 request, 2 reply.
        return match frame.get(20..22) {
            Some([0, 2]) => Owner::All,
            _ if port.network.is_none() => Owner::Worker(0),
            _ => Owner::Any,
        };
    }
    if ty == ETHERTYPE_IPV6 {
        return owner6(topo, port.network, frame, workers);
    }
    if ty != ETHERTYPE_IPV4 {
        return Owner::Any;
    }
    match port.network {
        // From outside: the remote is the source.
        None => remote(frame, 14, true).map_or(Owner::Worker(0), |a| pick(a, workers)),
        Some(net) => {
            let gateway = topo
                .networks
                .get(usize::from(net.0))
                .and_then(|n| n.gateway);
            let Some((gw_ip, gw_mac)) = gateway else {
                return Owner::Any;
            };
            if dst_mac(frame) != Some(gw_mac) {
                return Owner::Any;
            }
            // A DNS query to the gateway may be forwarded upstream: its flow's remote is then
            // the resolver, whose answers arrive on the uplink.
            let to_dns = ip_at(frame, 30) == Some(gw_ip)
                && frame.get(23) == Some(&17)
                && frame.get(36..38) == Some(&[0, 53][..]);
            if let (true, Some(&resolver)) = (to_dns, topo.dns_upstream.first()) {
                return pick(resolver, workers);
            }
            remote(frame, 14, false).map_or(Owner::Any, |a| pick(a, workers))
        }
    }
}

/// The worker that owns a tracked IPv4 flow, from what its conntrack entry says: the side its
/// first packet came from (`from`: a network, or `None` for the uplink) and its original tuple.
/// The same rule as [`owner`] applies to that first packet (and so to every later packet of
/// the flow, both ways): the remote address decides; a DNS query to a gateway goes with the
/// resolver it is forwarded to. Used to put restored entries back on the right worker.
pub fn flow_owner(
    topo: &Topology,
    from: Option<crate::config::NetworkId>,
    original: &conntrack::Tuple<Ipv4Addr>,
    workers: usize,
) -> usize {
    let gateway = |net: crate::config::NetworkId| {
        let n = topo.networks.get(usize::from(net.0))?;
        n.gateway.map(|(ip, _)| ip)
    };
    let remote = flow_remote(from, original, gateway, topo.dns_upstream.first());
    worker_of(workers, || pick(remote, workers))
}

/// [`flow_owner`] for an IPv6 flow.
pub fn flow_owner6(
    topo: &Topology,
    from: Option<crate::config::NetworkId>,
    original: &conntrack::Tuple<Ipv6Addr>,
    workers: usize,
) -> usize {
    let gateway = |net: crate::config::NetworkId| {
        let n = topo.networks.get(usize::from(net.0))?;
        n.v6.map(|v6| v6.gateway)
    };
    let remote = flow_remote(from, original, gateway, topo.dns_upstream6.first());
    worker_of(workers, || pick6(remote, workers))
}

/// The address that places a flow: its source when it came from the uplink, else its
/// destination, or the first resolver for a DNS query to the network's gateway.
fn flow_remote<A: conntrack::Address>(
    from: Option<crate::config::NetworkId>,
    original: &conntrack::Tuple<A>,
    gateway: impl Fn(crate::config::NetworkId) -> Option<A>,
    resolver: Option<&A>,
) -> A {
    let Some(net) = from else {
        return original.src;
    };
    let to_dns = gateway(net) == Some(original.dst)
        && original.proto == packet::L4Proto::Udp
        && original.dst_port == 53;
    match (to_dns, resolver) {
        (true, Some(&resolver)) => resolver,
        _ => original.dst,
    }
}

fn worker_of(workers: usize, pick: impl FnOnce() -> Owner) -> usize {
    if workers <= 1 {
        return 0;
    }
    match pick() {
        Owner::Worker(w) => w,
        _ => 0,
    }
}

/// One view of several workers' snapshots: counters summed per port, FDB entries merged (the
/// freshest sighting of each MAC wins), conntrack tables side by side (flows never overlap:
/// each lives on exactly one worker).
pub fn merge_snapshots(parts: Vec<Snapshot>) -> Option<Snapshot> {
    let mut parts = parts.into_iter();
    let mut all = parts.next()?;
    // Rows by (network, key), so merging is linear in the rows: a search per row was
    // quadratic, a second per `vswitch stats` with a few thousand containers.
    let mut fdb_at: HashMap<(String, String), usize> = all
        .fdb
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.network.clone(), r.mac.clone()), i))
        .collect();
    let mut group_at: HashMap<(String, String), usize> = all
        .groups
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.network.clone(), r.group.clone()), i))
        .collect();
    for s in parts {
        for (mine, theirs) in all.ports.iter_mut().zip(&s.ports) {
            mine.counters.merge(&theirs.counters);
        }
        all.bridge.merge(&s.bridge);
        all.conntrack_counters.merge(&s.conntrack_counters);
        all.conntrack.extend(s.conntrack);
        all.conntrack6.extend(s.conntrack6);
        for row in s.groups {
            // Every worker learns every report, but their clocks differ a little: the union.
            match group_at.entry((row.network.clone(), row.group.clone())) {
                Entry::Occupied(at) => {
                    let r = &mut all.groups[*at.get()];
                    r.ports.extend(row.ports);
                    r.ports.sort();
                    r.ports.dedup();
                }
                Entry::Vacant(at) => {
                    at.insert(all.groups.len());
                    all.groups.push(row);
                }
            }
        }
        for row in s.fdb {
            match fdb_at.entry((row.network.clone(), row.mac.clone())) {
                Entry::Occupied(at) => {
                    let r = &mut all.fdb[*at.get()];
                    if r.age_secs > row.age_secs {
                        *r = row;
                    }
                }
                Entry::Vacant(at) => {
                    at.insert(all.fdb.len());
                    all.fdb.push(row);
                }
            }
        }
    }
    all.fdb
        .sort_by(|a, b| (&a.network, &a.mac).cmp(&(&b.network, &b.mac)));
    all.groups
        .sort_by(|a, b| (&a.network, &a.group).cmp(&(&b.network, &b.group)));
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use packet::MacAddr;
    use testkit::frames as build;

    const TOPO: &str = r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"
[[port]]
name = "c1"
kind = "pcap"
network = "bridge"
[[port]]
name = "up"
kind = "pcap"
[uplink]
port = "up"
address = "203.0.113.2"
"#;

    #[test]
    fn both_directions_of_nat_flows_meet() {
        let topo = Topology::new(&Config::from_toml(TOPO).unwrap()).unwrap();
        let (c1, up) = (PortId(0), PortId(1));
        let gw = MacAddr([0x02, 0x42, 172, 17, 0, 1]);
        let me = MacAddr([2, 0, 0, 0, 0, 2]);
        let router = MacAddr([2, 0, 0, 0, 0, 0xfe]);
        let uplink_mac = MacAddr([0x02, 0x42, 203, 0, 113, 2]);
        let c = Ipv4Addr::new(172, 17, 0, 2);
        let u = Ipv4Addr::new(203, 0, 113, 2);
        for workers in 2..6 {
            for last in 1..40u8 {
                let r = Ipv4Addr::new(198, 51, 100, last);
                let out = build::udp(me, gw, c, r, 1000, 53, b"q");
                let back = build::udp(router, uplink_mac, r, u, 53, 40000, b"a");
                let a = owner(&topo, c1, &out, workers);
                assert!(matches!(a, Owner::Worker(_)));
                assert_eq!(
                    a,
                    owner(&topo, up, &back, workers),
                    "masquerade, {workers} workers"
                );
                // An ICMP error about the outbound packet, as the far side sends it.
                let quoted = build::udp(uplink_mac, router, u, r, 40000, 53, b"q");
                let err =
                    build::icmp_error(router, uplink_mac, r, u, 3, 3, [0; 4], &quoted[14..42]);
                assert_eq!(
                    a,
                    owner(&topo, up, &err, workers),
                    "ICMP error follows its flow"
                );
                // A published port: the client's address decides both ways.
                let syn = build::tcp(router, uplink_mac, r, u, 5555, 8080, 1, 0, 2, b"");
                let synack = build::tcp(me, gw, c, r, 80, 5555, 1, 2, 0x12, b"");
                assert_eq!(
                    owner(&topo, up, &syn, workers),
                    owner(&topo, c1, &synack, workers)
                );
            }
        }
        // Frames between containers, and a single worker: anyone.
        let l2 = build::udp(
            me,
            MacAddr([2, 0, 0, 0, 0, 3]),
            c,
            Ipv4Addr::new(172, 17, 0, 3),
            1,
            2,
            b"x",
        );
        assert_eq!(owner(&topo, c1, &l2, 4), Owner::Any);
        assert_eq!(
            owner(&topo, c1, &build::udp(me, gw, c, u, 1, 2, b"x"), 1),
            Owner::Any
        );
        let reply = build::arp_reply(router, Ipv4Addr::new(203, 0, 113, 1), uplink_mac, u);
        assert_eq!(owner(&topo, up, &reply, 3), Owner::All);
    }

    #[test]
    fn both_directions_of_ipv6_flows_meet_and_advertisements_reach_everyone() {
        let text = TOPO.replace(
            "gateway = \"172.17.0.1\"\n",
            "gateway = \"172.17.0.1\"\nsubnet6 = \"fd00::/64\"\n",
        ) + "[uplink.ipv6]\naddress = \"2001:db8::2\"\n[dns]\nupstream = [\"2001:db8:53::53\"]\n";
        let topo = Topology::new(&Config::from_toml(&text).unwrap()).unwrap();
        let (c1, up) = (PortId(0), PortId(1));
        let gw = MacAddr([0x02, 0x42, 172, 17, 0, 1]);
        let me = MacAddr([2, 0, 0, 0, 0, 2]);
        let router = MacAddr([2, 0, 0, 0, 0, 0xfe]);
        let uplink_mac = MacAddr([0x02, 0x42, 203, 0, 113, 2]);
        let c: Ipv6Addr = "fd00::2".parse().unwrap();
        let u: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut workers_seen = std::collections::HashSet::new();
        for last in 1..40u16 {
            let r = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, last);
            let out = build::udp6(me, gw, c, r, 1000, 53, b"q");
            let back = build::udp6(router, uplink_mac, r, u, 53, 40000, b"a");
            let a = owner(&topo, c1, &out, 3);
            workers_seen.insert(format!("{a:?}"));
            assert_eq!(a, owner(&topo, up, &back, 3), "NAT66, both ways");
            let quoted = build::udp6(uplink_mac, router, u, r, 40000, 53, b"q");
            let err = build::icmpv6(router, uplink_mac, r, u, 64, 1, 4, [0; 4], &quoted[14..]);
            assert_eq!(
                a,
                owner(&topo, up, &err, 3),
                "ICMPv6 error follows its flow"
            );
        }
        assert_eq!(workers_seen.len(), 3, "remotes spread over the workers");
        let na = build::neighbor_advertisement(router, uplink_mac, r6(), u, r6(), 0x60, router);
        assert_eq!(owner(&topo, up, &na, 3), Owner::All);
        let ns = build::neighbor_solicitation(router, r6(), u);
        assert_eq!(owner(&topo, up, &ns, 3), Owner::Worker(0));
        let rs = build::router_solicitation(me, me.link_local());
        assert_eq!(owner(&topo, c1, &rs, 3), Owner::Any);
        // A DNS query to the gateway may be forwarded: it goes where the resolver's answer will.
        let gw6: Ipv6Addr = "fd00::1".parse().unwrap();
        let resolver: Ipv6Addr = "2001:db8:53::53".parse().unwrap();
        let q = build::udp6(me, gw, c, gw6, 5353, 53, b"q");
        let a = build::udp6(router, uplink_mac, resolver, u, 53, 5353, b"a");
        assert_eq!(owner(&topo, c1, &q, 3), owner(&topo, up, &a, 3));
        assert_eq!(
            owner(&topo, c1, &q, 3),
            pick6(resolver, 3),
            "by the resolver"
        );
    }

    fn r6() -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
    }

    #[test]
    fn membership_reports_go_to_every_worker() {
        use std::net::Ipv6Addr;
        use testkit::frames::record;
        let topo = Topology::new(&Config::from_toml(TOPO).unwrap()).unwrap();
        let (c1, up) = (PortId(0), PortId(1));
        let me = MacAddr([2, 0, 0, 0, 0, 2]);
        let c = Ipv4Addr::new(172, 17, 0, 2);
        let group = Ipv4Addr::new(239, 1, 2, 3);
        let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
        let sol = build::solicited_node(ll);
        let reports = [
            build::igmpv2_report(me, c, group),
            build::igmpv2_leave(me, c, group),
            build::igmpv3_report(me, c, &[(record::TO_EXCLUDE, group, &[])]),
            build::mldv1(me, ll, sol, false),
            build::mldv1(me, ll, sol, true),
            build::mldv2_report(me, Ipv6Addr::UNSPECIFIED, &[(record::TO_EXCLUDE, sol, &[])]),
        ];
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(owner(&topo, c1, r, 4), Owner::All, "report {i}");
            assert_eq!(owner(&topo, c1, r, 1), Owner::Any, "one worker: {i}");
        }
        // Data to a group, a malformed report (dropped by whichever worker reads it) and a
        // report on the uplink (which has no network to snoop): not copied.
        let data = build::udp(me, build::multicast_mac_v4(group), c, group, 1, 2, b"x");
        assert_eq!(owner(&topo, c1, &data, 4), Owner::Any);
        let ns = build::neighbor_solicitation(me, Ipv6Addr::UNSPECIFIED, ll);
        assert_eq!(owner(&topo, c1, &ns, 4), Owner::Any);
        let mut bad = reports[0].clone();
        bad[45] ^= 1;
        assert_eq!(owner(&topo, c1, &bad, 4), Owner::Any);
        assert_ne!(owner(&topo, up, &reports[0], 4), Owner::All);
    }

    #[test]
    fn restored_flows_go_where_their_packets_will() {
        let topo = Topology::new(&Config::from_toml(TOPO).unwrap()).unwrap();
        let (c1, up) = (PortId(0), PortId(1));
        let bridge = topo.network_by_name("bridge");
        let gw = MacAddr([0x02, 0x42, 172, 17, 0, 1]);
        let me = MacAddr([2, 0, 0, 0, 0, 2]);
        let router = MacAddr([2, 0, 0, 0, 0, 0xfe]);
        let uplink_mac = MacAddr([0x02, 0x42, 203, 0, 113, 2]);
        let c = Ipv4Addr::new(172, 17, 0, 2);
        let u = Ipv4Addr::new(203, 0, 113, 2);
        let tcp = packet::L4Proto::Tcp;
        for workers in 1..7 {
            for last in 1..40u8 {
                let r = Ipv4Addr::new(198, 51, 100, last);
                let w = |o: Owner| match o {
                    Owner::Worker(w) => w,
                    _ => 0,
                };
                // Masquerade: the entry's original tuple is the container's first packet.
                let t = conntrack::Tuple::new(tcp, c, 40000, r, 5201);
                let out = build::tcp(me, gw, c, r, 40000, 5201, 1, 0, 2, b"");
                let back = build::tcp(router, uplink_mac, r, u, 5201, 61000, 1, 2, 0x12, b"");
                let at = flow_owner(&topo, bridge, &t, workers);
                assert_eq!(at, w(owner(&topo, c1, &out, workers)));
                assert_eq!(at, w(owner(&topo, up, &back, workers)));
                // A published port: the client's first packet came in on the uplink.
                let t = conntrack::Tuple::new(tcp, r, 5555, u, 8080);
                let syn = build::tcp(router, uplink_mac, r, u, 5555, 8080, 1, 0, 2, b"");
                let synack = build::tcp(me, gw, c, r, 80, 5555, 1, 2, 0x12, b"");
                let at = flow_owner(&topo, None, &t, workers);
                assert_eq!(at, w(owner(&topo, up, &syn, workers)));
                assert_eq!(at, w(owner(&topo, c1, &synack, workers)));
                assert!(at < workers);
            }
        }
    }
}
