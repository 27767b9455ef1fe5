//! The L3 stage: each network's gateway, routing to and from the uplink, conntrack and NAT.
//!
//! [`Gateway`] owns all routing state of one pipeline: the conntrack table (and so the NAT
//! bindings), the endpoint-independent UDP mappings, the neighbor (ARP) tables with the frames
//! waiting for ARP, the translations remembered for later fragments, the published ports and the
//! embedded DNS tables. Its fields are private; the pipeline reaches them through the methods
//! below, and the stages take one [`Frame`] (clock, ingress, topology, output, counters) and,
//! for routed packets, one [`Datagram`] (the bytes and their parsed header summary).
//!
//! What enters here:
//! - from a container port, ARP asking for the gateway address, and every frame addressed to the
//!   gateway MAC ([`Gateway::arp`], [`Gateway::ipv4`]);
//! - everything from the uplink port ([`Gateway::uplink_ingress`]).
//!
//! A routed packet is looked up in conntrack by its tuple (one lookup finds either direction);
//! a miss may create an entry — masquerade (SNAT to the uplink address) for traffic leaving a
//! network, DNAT for a published port, both for hairpin — and the packet is rewritten to the
//! tuple the entry says its direction carries on the other side ([`route`]). ICMP errors are
//! matched by the connection they quote and translated outer and inner ([`icmp_error`]). TTL is
//! checked before anything is created or rewritten, so time-exceeded and fragmentation-needed
//! quote the packet as received.
//!
//! Invariants: every frame handed to a stage ends in exactly one of forwarded, local, queued for
//! ARP (later forwarded or dropped as `arp_unresolved`) or a counted drop; a published host port
//! is never handed out as a masquerade port; a conntrack entry's original direction is only
//! accepted from the side that created it.
//!
//! Threading: the pipeline, and so this conntrack table, is owned by one packet-loop thread.
//! Several workers each run their own pipeline and receive flow-affine traffic (both directions
//! of a connection on one worker), so the table needs no lock; see the datapath's notes.

pub mod dns;
pub(crate) mod flow_cache;
pub mod fragments;
mod icmp_error;
mod ipv6;
pub mod neighbor;
mod route;
mod warm;

pub(crate) use warm::WARM_CHUNK;

use self::dns::{DnsOutcome, DnsTable};
use crate::config::{NetworkId, PortId, Topology};
use crate::counters::DropReason;
use crate::frame::{Counters, Frame};
use crate::pipeline::NANOS_PER_SEC;
use crate::synth;
use conntrack::Conntrack;
use flow_cache::{FlowCache, FlowCacheStats};
use fragments::Fragments;
use neighbor::{Neighbors, Side, Waiting};
use packet::offload::Offload;
use packet::{ArpPacket, Classified, Ipv4Info, L3, L4, MacAddr, classify};
use rustc_hash::FxHashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The gateways of all networks and the router between them and the uplink.
#[derive(Debug)]
pub(crate) struct Gateway {
    /// Connection tracking (and so NAT state) of routed traffic.
    ct: Conntrack,
    /// The same for routed IPv6 (NAT66 and routed mode), with the same limits.
    ct6: Conntrack<Ipv6Addr>,
    /// ARP caches and packets waiting for ARP.
    neighbors: Neighbors,
    /// IPv6 neighbour caches and packets waiting for neighbour discovery.
    neighbors6: Neighbors<Ipv6Addr>,
    /// Published ports: (IP protocol, host port) → (container address, container port).
    published: FxHashMap<(u8, u16), (Ipv4Addr, u16)>,
    /// Translations of fragmented datagrams, for their later fragments.
    fragments: Fragments,
    /// The same for IPv6 (keyed by the fragment header's 32-bit identification).
    fragments6: Fragments<Ipv6Addr, u32>,
    /// Endpoint-independent UDP mappings (used when the topology asks for them).
    eim: nat::EimTable,
    /// Embedded DNS: container names per network that serves DNS.
    dns: FxHashMap<NetworkId, DnsTable>,
    /// Actions of established flows (see [`flow_cache`]).
    flows: FlowCache,
    /// Bumped by every change the cached actions may depend on, besides neighbor and FDB
    /// changes, which those tables count themselves.
    flow_epoch: u64,
}

/// A routed IPv4 packet: its bytes, and the header summary parsed from them. The bytes travel
/// with the summary (rather than in the [`Frame`]) because they change hands: rewritten, queued
/// for ARP, emitted.
pub(crate) struct Datagram {
    /// The Ethernet frame.
    data: Vec<u8>,
    /// Where its headers are.
    c: Classified,
    /// Its IPv4 header.
    info: Ipv4Info,
}

impl Gateway {
    /// Empty state for `topo`, with its published ports.
    pub(crate) fn new(topo: &Topology) -> Gateway {
        let published = topo
            .published
            .iter()
            .map(|p| {
                (
                    (p.protocol, p.host_port),
                    (p.container_ip, p.container_port),
                )
            })
            .collect();
        Gateway {
            ct: Conntrack::new(topo.conntrack),
            ct6: Conntrack::new_v6(topo.conntrack),
            neighbors: Neighbors::with_limits(
                topo.limits.arp_queue_per_address as usize,
                topo.limits.arp_queue_total as usize,
            ),
            neighbors6: Neighbors::with_limits(
                topo.limits.arp_queue_per_address as usize,
                topo.limits.arp_queue_total as usize,
            ),
            published,
            fragments: Fragments::default(),
            fragments6: Fragments::default(),
            // RFC 4787 REQ-5: a mapping lives at least 2 minutes; 5 is recommended.
            eim: nat::EimTable::new(300 * NANOS_PER_SEC),
            dns: FxHashMap::default(),
            flows: FlowCache::default(),
            flow_epoch: 0,
        }
    }

    /// Forgets every cached flow action: the topology, a published port or the conntrack
    /// table changed.
    pub(crate) fn invalidate_flows(&mut self) {
        self.flow_epoch += 1;
    }

    /// The epoch a cached action must have been filled in to be used now.
    #[inline]
    fn flow_epoch(&self, f: &Frame<'_>) -> u64 {
        self.flow_epoch
            .wrapping_add(self.neighbors.generation())
            .wrapping_add(f.fdb_generation())
    }

    /// Turns the flow cache on or off.
    pub(crate) fn set_flow_cache(&mut self, on: bool) {
        self.flows.set_enabled(on);
    }

    /// The flow cache's counters.
    pub(crate) fn flow_cache_stats(&self) -> FlowCacheStats {
        self.flows.stats()
    }

    /// The conntrack table, mutably (restoring saved entries).
    pub(crate) fn conntrack_mut(&mut self) -> &mut Conntrack {
        &mut self.ct
    }

    /// The IPv6 conntrack table, mutably.
    pub(crate) fn conntrack6_mut(&mut self) -> &mut Conntrack<Ipv6Addr> {
        &mut self.ct6
    }

    /// The conntrack table.
    pub(crate) fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    /// The IPv6 conntrack table.
    pub(crate) fn conntrack6(&self) -> &Conntrack<Ipv6Addr> {
        &self.ct6
    }

    /// Starts or stops recording conntrack events, in both families' tables.
    pub(crate) fn set_conntrack_events(&mut self, on: bool) {
        self.ct.set_events(on);
        self.ct6.set_events(on);
    }

    /// Drains both tables' events; how many were lost.
    pub(crate) fn drain_conntrack_events(
        &mut self,
        v4: impl FnMut(conntrack::Event<Ipv4Addr>),
        v6: impl FnMut(conntrack::Event<Ipv6Addr>),
    ) -> u64 {
        self.ct.drain_events(v4) + self.ct6.drain_events(v6)
    }

    /// Forgets every tracked connection, of both families.
    pub(crate) fn flush_conntrack(&mut self) {
        self.ct.flush();
        self.ct6.flush();
        self.invalidate_flows();
    }

    /// Forgets the IPv6 flows of `addr` (its container went away). How many went.
    pub(crate) fn forget_address6(&mut self, addr: Ipv6Addr) -> usize {
        self.ct6.remove_address(addr)
    }

    /// Forgets what the gateway knows of `addr` (its container went away): its tracked flows
    /// and NAT mappings. How many flows went.
    pub(crate) fn forget_address(&mut self, addr: Ipv4Addr) -> usize {
        let n = self.ct.remove_address(addr);
        self.eim.remove_address(addr);
        self.invalidate_flows();
        n
    }

    /// Publishes `host_port` of `protocol` to a container.
    pub(crate) fn publish(&mut self, protocol: u8, host_port: u16, to: (Ipv4Addr, u16)) {
        self.published.insert((protocol, host_port), to);
        self.invalidate_flows();
    }

    /// Removes a published port; false if it was not published.
    pub(crate) fn unpublish(&mut self, protocol: u8, host_port: u16) -> bool {
        self.invalidate_flows();
        self.published.remove(&(protocol, host_port)).is_some()
    }

    /// Replaces (or, with `None`, removes) the DNS table of `network`.
    pub(crate) fn set_dns_table(&mut self, network: NetworkId, table: Option<DnsTable>) {
        match table {
            Some(t) => {
                self.dns.insert(network, t);
            }
            None => {
                self.dns.remove(&network);
            }
        }
    }

    /// Forgets what came in on `port`, which went away: its frames waiting for ARP. (Conntrack,
    /// NAT and fragment state is keyed by addresses, not ports; cached flows go with the epoch
    /// the caller bumps.)
    pub(crate) fn forget_port(&mut self, port: PortId) {
        self.neighbors.forget_ingress(port);
        self.neighbors6.forget_ingress(port);
    }

    /// The DNS table of `network`, if it serves DNS.
    pub(crate) fn dns_table_mut(&mut self, network: NetworkId) -> Option<&mut DnsTable> {
        self.dns.get_mut(&network)
    }

    /// Drops frames whose ARP never resolved; expires conntrack entries a little at a time.
    pub(crate) fn housekeeping(&mut self, now: u64, counters: &mut Counters) {
        let unresolved = self.neighbors.expire(now);
        for w in unresolved.into_iter().chain(self.neighbors6.expire(now)) {
            if let Some(c) = counters.port(w.ingress) {
                c.queued = c.queued.saturating_sub(1);
                c.drops.add(DropReason::ArpUnresolved);
            }
        }
        self.ct.expire(now, 256);
        self.ct6.expire(now, 256);
        self.eim.expire(now, 64);
        self.fragments.expire(now);
        self.fragments6.expire(now);
    }

    /// The MAC of `ip` on the uplink segment, if ARP resolved it (the overlay's VTEP next hops).
    pub(crate) fn uplink_neighbor(&self, ip: Ipv4Addr, now: u64) -> Option<MacAddr> {
        self.neighbors.lookup(Side::Uplink, ip, now)
    }

    /// ARP from a container port of `net`. Returns the frame back if it is not for the gateway.
    pub(crate) fn arp(
        &mut self,
        f: &mut Frame<'_>,
        net: NetworkId,
        data: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let Some((gw_ip, gw_mac)) = f.topo.networks[usize::from(net.0)].gateway else {
            return Some(data);
        };
        let Ok(arp) = ArpPacket::new_checked(&data[packet::ETH_HEADER_LEN..]) else {
            return Some(data);
        };
        let (sender_ip, target_ip) = (
            ip4(arp.source_protocol_addr()),
            ip4(arp.target_protocol_addr()),
        );
        let Some(sender_mac) = MacAddr::from_slice(arp.source_hardware_addr()) else {
            return Some(data);
        };
        let op = u16::from(arp.operation());
        let side = Side::Network(net.0);
        if in_subnet(f.topo, net, sender_ip) && !sender_mac.is_multicast() {
            let released = self.neighbors.learn(side, sender_ip, sender_mac, f.now);
            release(f, side, sender_mac, released);
        }
        if target_ip != gw_ip {
            return Some(data);
        }
        f.local();
        if op == 1 {
            let reply = synth::arp_reply(gw_mac, gw_ip, sender_mac, sender_ip);
            f.events().arp_replies_sent += 1;
            f.reply(reply);
        }
        None
    }

    /// A frame to the gateway MAC from a container port of `net`; `classified`: what
    /// `classify` made of it already, if it ran.
    pub(crate) fn ipv4(
        &mut self,
        f: &mut Frame<'_>,
        net: NetworkId,
        data: Vec<u8>,
        classified: Option<Classified>,
    ) {
        let c = match classified.map_or_else(|| classify(&data), Ok) {
            Ok(c) => c,
            Err(_) => return f.drop(DropReason::Malformed),
        };
        let L3::Ipv4(info) = c.l3 else {
            return f.drop(DropReason::GatewayUnsupported);
        };
        let topo = f.topo;
        let network = &topo.networks[usize::from(net.0)];
        let Some((gw_ip, _)) = network.gateway else {
            return f.drop(DropReason::GatewayUnsupported);
        };
        if !in_subnet(topo, net, info.src) {
            return f.drop(DropReason::SpoofedSource);
        }
        let side = Side::Network(net.0);
        // Gleaning: the sender is on this network at this MAC. Only a new or changed neighbor
        // costs a write; an entry that ages out is simply learned again from the next packet.
        if let Some(src) = packet::src_mac(&data)
            && self.neighbors.lookup(side, info.src, f.now) != Some(src)
        {
            let released = self.neighbors.learn(side, info.src, src, f.now);
            release(f, side, src, released);
        }
        let mut dg = Datagram { data, c, info };
        if info.dst == gw_ip
            && matches!(c.l4, L4::Udp { dst_port: 53, .. })
            && self.dns.contains_key(&net)
        {
            return match self.dns_query(f, net, &mut dg) {
                DnsOutcome::Answered => f.local(),
                DnsOutcome::Drop => f.drop(DropReason::DnsDropped),
                DnsOutcome::Forward(upstream) => self.route(f, dg, Some(upstream)),
            };
        }
        let uplink_ip = topo.uplink.as_ref().map(|u| u.address);
        if info.dst == gw_ip || Some(info.dst) == uplink_ip {
            // The gateway, and the host's uplink address, answer pings themselves.
            if let L4::Icmp { ty: 8, .. } = c.l4 {
                return answer_ping(f, dg);
            }
            if info.dst == gw_ip {
                // Nothing but DNS listens on the gateway: refuse as a host refuses a closed
                // port (RST, port unreachable), so clients fail at once instead of hanging.
                let seg = route::tuple_of(&info, &c.l4).and_then(|(_, seg)| seg);
                icmp_error::refuse(f, &dg, seg.as_ref());
                return f.drop(DropReason::GatewayUnsupported);
            }
        }
        if in_subnet(topo, net, info.dst) {
            // To a neighbour on the same network, but through the gateway (a host route, say):
            // routed straight back onto the network, as the kernel would, without NAT.
            if !network.icc {
                return f.drop(DropReason::IccBlocked);
            }
            if info.ttl <= 1 {
                icmp_error::send(f, &dg, icmp_error::Kind::TimeExceeded);
                return f.drop(DropReason::TtlExceeded);
            }
            synth::decrement_ttl(&mut dg.data, c.l3_offset);
            self.send_to(f, side, info.dst, dg.data);
            return;
        }
        self.route(f, dg, None);
    }

    /// A frame from the uplink port; `classified` as for [`Gateway::ipv4`].
    pub(crate) fn uplink_ingress(
        &mut self,
        f: &mut Frame<'_>,
        data: Vec<u8>,
        classified: Option<Classified>,
    ) {
        let Some(up) = f.topo.uplink else {
            return f.drop(DropReason::NotForUs);
        };
        let c = match classified.map_or_else(|| classify(&data), Ok) {
            Ok(c) => c,
            Err(_) => return f.drop(DropReason::Malformed),
        };
        let dst = packet::dst_mac(&data).unwrap_or(MacAddr::ZERO);
        match c.l3 {
            L3::Arp => {
                let Ok(arp) = ArpPacket::new_checked(&data[packet::ETH_HEADER_LEN..]) else {
                    return f.drop(DropReason::Malformed);
                };
                let sender_ip = ip4(arp.source_protocol_addr());
                let target_ip = ip4(arp.target_protocol_addr());
                let sender_mac =
                    MacAddr::from_slice(arp.source_hardware_addr()).unwrap_or(MacAddr::ZERO);
                let op = u16::from(arp.operation());
                if target_ip != up.address || sender_mac.is_multicast() || sender_mac.is_zero() {
                    return f.drop(DropReason::NotForUs);
                }
                let released = self
                    .neighbors
                    .learn(Side::Uplink, sender_ip, sender_mac, f.now);
                release(f, Side::Uplink, sender_mac, released);
                f.local();
                if op == 1 {
                    f.events().arp_replies_sent += 1;
                    let reply = synth::arp_reply(up.mac, up.address, sender_mac, sender_ip);
                    f.reply(reply);
                }
            }
            L3::Ipv4(info) => {
                if dst != up.mac && !dst.is_broadcast() || info.dst != up.address {
                    return f.drop(DropReason::NotForUs);
                }
                if f.topo.network_of_ip(info.src).is_some() {
                    return f.drop(DropReason::SpoofedSource);
                }
                let dg = Datagram { data, c, info };
                if let L4::Icmp { ty: 8, .. } = c.l4 {
                    // The host answers pings to its own address.
                    return answer_ping(f, dg);
                }
                self.route(f, dg, None);
            }
            L3::Ipv6(_) => self.uplink_ingress6(f, data, c),
            L3::Other { .. } => f.drop(DropReason::NotForUs),
        }
    }
}

/// The side the frame in hand came from: its network, or the uplink.
fn ingress_side(f: &Frame<'_>) -> Side {
    match f.network {
        Some(n) => Side::Network(n.0),
        None => Side::Uplink,
    }
}

/// An IPv4 address from ARP's protocol-address bytes (checked to be 4 long by classify).
fn ip4(b: &[u8]) -> Ipv4Addr {
    <[u8; 4]>::try_from(b)
        .map(Ipv4Addr::from)
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

fn in_subnet(topo: &Topology, net: NetworkId, ip: Ipv4Addr) -> bool {
    topo.networks[usize::from(net.0)]
        .subnet
        .is_some_and(|s| s.contains(&ip))
}

/// Answers an echo request addressed to us, back out of the port it came in on.
fn answer_ping(f: &mut Frame<'_>, dg: Datagram) {
    let Datagram { mut data, c, .. } = dg;
    synth::echo_reply_in_place(&mut data, c.l3_offset, c.l4_offset);
    f.events().echo_replies_sent += 1;
    f.local();
    f.reply(data);
}

/// Emits a frame the gateway sends on `side` to `dst_mac`: the uplink port, or into the
/// network as its bridge would deliver it. Returns the one port it left by and until when
/// that choice holds (`u64::MAX`: no FDB entry involved), unless it was flooded.
fn transmit(
    f: &mut Frame<'_>,
    side: Side,
    dst_mac: MacAddr,
    data: Vec<u8>,
    offload: Offload,
) -> Option<(PortId, u64)> {
    match side {
        Side::Uplink => {
            let port = f.topo.uplink.as_ref().map(|u| u.port)?;
            f.emit_as(port, data, offload);
            Some((port, u64::MAX))
        }
        Side::Network(n) => f.deliver(NetworkId(n), dst_mac, data, offload),
    }
}

/// Sends frames that were waiting for `mac` to resolve.
fn release(f: &mut Frame<'_>, side: Side, mac: MacAddr, frames: Vec<Waiting>) {
    for w in frames {
        let mut data = w.data;
        if let Some(h) = data.get_mut(..6) {
            h.copy_from_slice(&mac.0);
        }
        if let Some(c) = f.port_counters(w.ingress) {
            c.queued = c.queued.saturating_sub(1);
            c.forwarded += 1;
        }
        transmit(f, side, mac, data, w.offload);
    }
}
