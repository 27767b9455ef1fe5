//! The L3 stage: each network's gateway, routing to and from the uplink, conntrack and NAT.
//!
//! What enters here:
//! - from a container port, ARP asking for the gateway address, and every frame addressed to the
//!   gateway MAC;
//! - everything from the uplink port.
//!
//! A routed packet is looked up in conntrack by its tuple (one lookup finds either direction);
//! a miss may create an entry — masquerade (SNAT to the uplink address) for traffic leaving a
//! network, DNAT for a published port, both for hairpin — and the packet is rewritten to the
//! tuple the entry says its direction carries on the other side. ICMP errors are matched by the
//! connection they quote and translated outer and inner. TTL is checked before anything is
//! created or rewritten, so time-exceeded and fragmentation-needed quote the packet as received.
//!
//! Threading: the pipeline, and so this conntrack table, is owned by one packet-loop thread.
//! Several workers each run their own pipeline and receive flow-affine traffic (both directions
//! of a connection on one worker), so the table needs no lock; see the datapath's notes.

use crate::config::{NetworkId, PortId};
use crate::counters::DropReason;
use crate::dns_gateway::DnsOutcome;
use crate::fragments::FragmentPlan;
use crate::neighbor::{Enqueued, Side, Waiting};
use crate::pipeline::{Packet, Pipeline};
use crate::synth;
use conntrack::{
    Direction, EntryId, InsertError, Proto, TcpSegment, Tuple, Verdict, tcp_may_create,
};
use nat::{Endpoint, NatError, PortRange};
use packet::{ArpPacket, Classified, Ipv4Info, L3, L4, MacAddr, classify};
use std::net::Ipv4Addr;

/// How many candidate ports the allocator tries before giving up.
const PORT_TRIES: u32 = 65_536;

/// What a routed packet turns into.
struct Plan {
    /// The tuple it must carry after translation.
    target: Tuple,
    /// Where it goes.
    egress: Side,
}

fn tuple_of(info: &Ipv4Info, l4: &L4) -> Option<(Tuple, Option<TcpSegment>)> {
    let (proto, src_port, dst_port, seg) = match *l4 {
        L4::Tcp {
            src_port,
            dst_port,
            flags,
            seq,
            ack,
            payload_len,
        } => (
            Proto::Tcp,
            src_port,
            dst_port,
            Some(TcpSegment::from_flags(flags, seq, ack, payload_len)),
        ),
        L4::Udp { src_port, dst_port } => (Proto::Udp, src_port, dst_port, None),
        L4::Icmp {
            ty: 0 | 8, ident, ..
        } => (Proto::Icmp, ident, ident, None),
        _ => return None,
    };
    Some((
        Tuple {
            proto,
            src: info.src,
            dst: info.dst,
            src_port,
            dst_port,
        },
        seg,
    ))
}

/// An IPv4 address from ARP's protocol-address bytes (checked to be 4 long by classify).
fn ip4(b: &[u8]) -> Ipv4Addr {
    <[u8; 4]>::try_from(b)
        .map(Ipv4Addr::from)
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// The IPv4 identification field.
fn ip_ident(data: &[u8], c: &Classified) -> u16 {
    data.get(c.l3_offset + 4..c.l3_offset + 6)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

fn side_mark(side: Side) -> u32 {
    match side {
        Side::Network(n) => u32::from(n),
        Side::Uplink => u32::MAX,
    }
}

fn endpoints(t: &Tuple) -> (Endpoint, Endpoint) {
    (
        Endpoint::new(t.src, t.src_port),
        Endpoint::new(t.dst, t.dst_port),
    )
}

impl Pipeline {
    /// ARP from a container port. Returns the frame back if it is not for the gateway.
    pub(crate) fn gateway_arp(
        &mut self,
        now: u64,
        ingress: PortId,
        net: NetworkId,
        data: Vec<u8>,
        output: &mut Vec<Packet>,
    ) -> Option<Vec<u8>> {
        let Some((gw_ip, gw_mac)) = self.topo.networks[usize::from(net.0)].gateway else {
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
        if self.in_subnet(net, sender_ip) && !sender_mac.is_multicast() {
            let released = self.neighbors.learn(side, sender_ip, sender_mac, now);
            self.release(side, sender_mac, released, output);
        }
        if target_ip != gw_ip {
            return Some(data);
        }
        self.count_local(ingress);
        if op == 1 {
            let reply = synth::arp_reply(gw_mac, gw_ip, sender_mac, sender_ip);
            self.bridge.arp_replies_sent += 1;
            self.emit(
                Packet {
                    port: ingress,
                    data: reply,
                },
                output,
            );
        }
        None
    }

    fn in_subnet(&self, net: NetworkId, ip: Ipv4Addr) -> bool {
        self.topo.networks[usize::from(net.0)]
            .subnet
            .is_some_and(|s| s.contains(&ip))
    }

    /// Answers an echo request addressed to us, back out of the port it came in on.
    fn answer_ping(
        &mut self,
        ingress: PortId,
        mut data: Vec<u8>,
        c: &Classified,
        output: &mut Vec<Packet>,
    ) {
        synth::echo_reply_in_place(&mut data, c.l3_offset, c.l4_offset);
        self.bridge.echo_replies_sent += 1;
        self.count_local(ingress);
        self.emit(
            Packet {
                port: ingress,
                data,
            },
            output,
        );
    }

    pub(crate) fn count_local(&mut self, port: PortId) {
        if let Some(c) = self.ports.get_mut(usize::from(port.0)) {
            c.local += 1;
        }
    }

    /// A frame to the gateway MAC from a container port.
    pub(crate) fn gateway_ipv4(
        &mut self,
        now: u64,
        ingress: PortId,
        net: NetworkId,
        mut data: Vec<u8>,
        output: &mut Vec<Packet>,
    ) {
        let c = match classify(&data) {
            Ok(c) => c,
            Err(_) => return self.drop(ingress, DropReason::Malformed),
        };
        let L3::Ipv4(info) = c.l3 else {
            return self.drop(ingress, DropReason::GatewayUnsupported);
        };
        let Some((gw_ip, _)) = self.topo.networks[usize::from(net.0)].gateway else {
            return self.drop(ingress, DropReason::GatewayUnsupported);
        };
        if !self.in_subnet(net, info.src) {
            return self.drop(ingress, DropReason::SpoofedSource);
        }
        // Gleaning: the sender is on this network at this MAC. Only a new or changed neighbor
        // costs a write; an entry that ages out is simply learned again from the next packet.
        if let Some(src) = packet::src_mac(&data) {
            let side = Side::Network(net.0);
            if self.neighbors.lookup(side, info.src, now) != Some(src) {
                let released = self.neighbors.learn(side, info.src, src, now);
                self.release(side, src, released, output);
            }
        }
        if info.dst == gw_ip && matches!(c.l4, L4::Udp { dst_port: 53, .. }) && self.serves_dns(net)
        {
            return match self.gateway_dns(net, ingress, &mut data, &c, &info, output) {
                DnsOutcome::Answered => self.count_local(ingress),
                DnsOutcome::Drop => self.drop(ingress, DropReason::DnsDropped),
                DnsOutcome::Forward(upstream) => {
                    let side = Side::Network(net.0);
                    self.route(now, ingress, side, data, c, info, output, Some(upstream))
                }
            };
        }
        let uplink_ip = self.topo.uplink.as_ref().map(|u| u.address);
        if info.dst == gw_ip || Some(info.dst) == uplink_ip {
            // The gateway, and the host's uplink address, answer pings themselves.
            if let L4::Icmp { ty: 8, .. } = c.l4 {
                return self.answer_ping(ingress, data, &c, output);
            }
            if info.dst == gw_ip {
                return self.drop(ingress, DropReason::GatewayUnsupported);
            }
        }
        if self.in_subnet(net, info.dst) {
            // To a neighbour on the same network, but through the gateway (a host route, say):
            // routed straight back onto the network, as the kernel would, without NAT.
            if !self.topo.networks[usize::from(net.0)].icc {
                return self.drop(ingress, DropReason::IccBlocked);
            }
            if info.ttl <= 1 {
                self.send_icmp_error(
                    ingress,
                    Side::Network(net.0),
                    &data,
                    &c,
                    11,
                    0,
                    [0; 4],
                    output,
                );
                return self.drop(ingress, DropReason::TtlExceeded);
            }
            synth::decrement_ttl(&mut data, c.l3_offset);
            return self.send_to(now, ingress, Side::Network(net.0), info.dst, data, output);
        }
        self.route(
            now,
            ingress,
            Side::Network(net.0),
            data,
            c,
            info,
            output,
            None,
        );
    }

    /// A frame from the uplink port.
    pub(crate) fn uplink_ingress(
        &mut self,
        now: u64,
        ingress: PortId,
        data: Vec<u8>,
        output: &mut Vec<Packet>,
    ) {
        let Some(up) = self.topo.uplink else {
            return self.drop(ingress, DropReason::NotForUs);
        };
        let c = match classify(&data) {
            Ok(c) => c,
            Err(_) => return self.drop(ingress, DropReason::Malformed),
        };
        let dst = packet::dst_mac(&data).unwrap_or(MacAddr::ZERO);
        match c.l3 {
            L3::Arp => {
                let Ok(arp) = ArpPacket::new_checked(&data[packet::ETH_HEADER_LEN..]) else {
                    return self.drop(ingress, DropReason::Malformed);
                };
                let sender_ip = ip4(arp.source_protocol_addr());
                let target_ip = ip4(arp.target_protocol_addr());
                let sender_mac =
                    MacAddr::from_slice(arp.source_hardware_addr()).unwrap_or(MacAddr::ZERO);
                let op = u16::from(arp.operation());
                if target_ip != up.address || sender_mac.is_multicast() || sender_mac.is_zero() {
                    return self.drop(ingress, DropReason::NotForUs);
                }
                let released = self
                    .neighbors
                    .learn(Side::Uplink, sender_ip, sender_mac, now);
                self.release(Side::Uplink, sender_mac, released, output);
                self.count_local(ingress);
                if op == 1 {
                    self.bridge.arp_replies_sent += 1;
                    let reply = synth::arp_reply(up.mac, up.address, sender_mac, sender_ip);
                    self.emit(
                        Packet {
                            port: ingress,
                            data: reply,
                        },
                        output,
                    );
                }
            }
            L3::Ipv4(info) => {
                if dst != up.mac && !dst.is_broadcast() || info.dst != up.address {
                    return self.drop(ingress, DropReason::NotForUs);
                }
                if self.topo.network_of_ip(info.src).is_some() {
                    return self.drop(ingress, DropReason::SpoofedSource);
                }
                if let L4::Icmp { ty: 8, .. } = c.l4 {
                    // The host answers pings to its own address.
                    return self.answer_ping(ingress, data, &c, output);
                }
                self.route(now, ingress, Side::Uplink, data, c, info, output, None);
            }
            L3::Other { .. } => self.drop(ingress, DropReason::NotForUs),
        }
    }

    /// Conntrack, NAT and forwarding of a routed IPv4 packet.
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        now: u64,
        ingress: PortId,
        from: Side,
        mut data: Vec<u8>,
        c: Classified,
        info: Ipv4Info,
        output: &mut Vec<Packet>,
        redirect: Option<Ipv4Addr>,
    ) {
        if info.frag_offset != 0 {
            return self.route_fragment(now, ingress, from, data, c, info, output);
        }
        if let L4::Icmp { ty, .. } = c.l4
            && nat::is_icmp_error(ty)
        {
            return self.route_icmp_error(now, ingress, from, data, c, info, output);
        }
        let Some((tuple, seg)) = tuple_of(&info, &c.l4) else {
            return self.drop(ingress, DropReason::Unsupported);
        };
        if info.ttl <= 1 {
            self.send_icmp_error(ingress, from, &data, &c, 11, 0, [0; 4], output);
            return self.drop(ingress, DropReason::TtlExceeded);
        }
        let (id, dir, created) = match self.ct.lookup(&tuple, now) {
            Some((id, dir)) => (id, dir, false),
            None => match self.new_flow(now, from, &tuple, seg.as_ref(), redirect) {
                Ok(id) => (id, Direction::Original, true),
                Err(reason) => return self.drop(ingress, reason),
            },
        };
        // Packets of an entry's original direction must come from the side that created it.
        if dir == Direction::Original
            && self.ct.entry(id).is_some_and(|e| e.mark != side_mark(from))
        {
            return self.drop(ingress, DropReason::SpoofedSource);
        }
        let len = data.len();
        let (id, dir) = match self.ct.track(id, dir, seg.as_ref(), len, now) {
            Verdict::Accept => (id, dir),
            Verdict::Invalid => {
                tracing::debug!(
                    ?tuple,
                    ?dir,
                    segment = ?seg,
                    state = ?self.ct.entry(id).map(|e| e.state),
                    "conntrack: invalid packet dropped"
                );
                if created {
                    self.ct.remove(id);
                }
                return self.drop(ingress, DropReason::CtInvalid);
            }
            Verdict::Reopen => {
                self.ct.remove(id);
                let id = match self.new_flow(now, from, &tuple, seg.as_ref(), redirect) {
                    Ok(id) => id,
                    Err(reason) => return self.drop(ingress, reason),
                };
                if self
                    .ct
                    .track(id, Direction::Original, seg.as_ref(), len, now)
                    != Verdict::Accept
                {
                    self.ct.remove(id);
                    return self.drop(ingress, DropReason::CtInvalid);
                }
                (id, Direction::Original)
            }
        };
        let Some(plan) = self.plan(id, dir) else {
            return self.drop(ingress, DropReason::NoRoute);
        };
        if !self.fits_egress(ingress, from, plan.egress, &data, &c, &info, output) {
            return;
        }
        let (src, dst) = endpoints(&plan.target);
        if nat::rewrite(&mut data, &c, src, dst).is_err() {
            return self.drop(ingress, DropReason::Malformed);
        }
        self.bridge.nat_translated += u64::from(plan.target != tuple);
        if info.more_frags {
            let key = (info.protocol, info.src, info.dst, ip_ident(&data, &c));
            let later = FragmentPlan {
                src: plan.target.src,
                dst: plan.target.dst,
                egress: plan.egress,
            };
            self.fragments.remember(key, later, now);
        }
        if self.topo.udp_eim && tuple.proto == Proto::Udp && dir == Direction::Original {
            self.eim
                .touch(Endpoint::new(tuple.src, tuple.src_port), now);
        }
        synth::decrement_ttl(&mut data, c.l3_offset);
        self.send_to(now, ingress, plan.egress, plan.target.dst, data, output);
    }

    /// A later fragment: the addresses its first fragment got, or a counted drop.
    #[allow(clippy::too_many_arguments)]
    fn route_fragment(
        &mut self,
        now: u64,
        ingress: PortId,
        from: Side,
        mut data: Vec<u8>,
        c: Classified,
        info: Ipv4Info,
        output: &mut Vec<Packet>,
    ) {
        let key = (info.protocol, info.src, info.dst, ip_ident(&data, &c));
        let Some(plan) = self.fragments.lookup(&key, now) else {
            return self.drop(ingress, DropReason::Unsupported);
        };
        if info.ttl <= 1 {
            return self.drop(ingress, DropReason::TtlExceeded);
        }
        if !self.fits_egress(ingress, from, plan.egress, &data, &c, &info, output) {
            return;
        }
        if nat::rewrite(
            &mut data,
            &c,
            Endpoint::new(plan.src, 0),
            Endpoint::new(plan.dst, 0),
        )
        .is_err()
        {
            return self.drop(ingress, DropReason::Malformed);
        }
        self.bridge.nat_translated += 1;
        synth::decrement_ttl(&mut data, c.l3_offset);
        self.send_to(now, ingress, plan.egress, plan.dst, data, output);
    }

    /// Which tuple a packet of `dir` on entry `id` must carry, and where it goes.
    fn plan(&self, id: EntryId, dir: Direction) -> Option<Plan> {
        let e = self.ct.entry(id)?;
        let target = match dir {
            Direction::Original => e.reply.reversed(),
            Direction::Reply => e.original.reversed(),
        };
        Some(Plan {
            target,
            egress: self.side_of(target.dst),
        })
    }

    fn side_of(&self, ip: Ipv4Addr) -> Side {
        match self.topo.network_of_ip(ip) {
            Some(n) => Side::Network(n.0),
            None => Side::Uplink,
        }
    }

    /// Checks the egress MTU; sends fragmentation-needed and returns false when it does not fit.
    #[allow(clippy::too_many_arguments)]
    fn fits_egress(
        &mut self,
        ingress: PortId,
        from: Side,
        egress: Side,
        data: &[u8],
        c: &Classified,
        info: &Ipv4Info,
        output: &mut Vec<Packet>,
    ) -> bool {
        let mtu = match (egress, &self.topo.uplink) {
            (Side::Uplink, Some(up)) => up.mtu,
            _ => self.topo.bridge.mtu,
        };
        if info.total_len <= usize::from(mtu) {
            return true;
        }
        if info.dont_frag {
            let m = mtu.to_be_bytes();
            self.send_icmp_error(ingress, from, data, c, 3, 4, [0, 0, m[0], m[1]], output);
            self.drop(ingress, DropReason::FragNeeded);
        } else {
            self.drop(ingress, DropReason::NeedsFragmentation);
        }
        false
    }

    /// Creates the conntrack entry for the first packet of a connection, or says why not.
    /// `redirect` sends the flow to another destination address (the embedded DNS forwarding
    /// a query to the upstream resolver), masqueraded like any outbound flow.
    fn new_flow(
        &mut self,
        now: u64,
        from: Side,
        t: &Tuple,
        seg: Option<&TcpSegment>,
        redirect: Option<Ipv4Addr>,
    ) -> Result<EntryId, DropReason> {
        if seg.is_some_and(|s| !tcp_may_create(s)) {
            self.ct.count_invalid();
            return Err(DropReason::CtInvalid);
        }
        let up = self.topo.uplink.as_ref().map(|u| u.address);
        let reply = if Some(t.dst) == up && redirect.is_none() {
            // A published port: DNAT, from outside or (hairpin) from a container.
            let Some(&(ip, port)) = self.published.get(&(t.proto.number(), t.dst_port)) else {
                return Err(if from == Side::Uplink {
                    DropReason::Unsolicited
                } else {
                    DropReason::GatewayUnsupported
                });
            };
            let client = match (from, up) {
                (Side::Network(_), Some(addr)) => {
                    // Hairpin: masquerade the source too, so the reply comes back through us.
                    let p = self.allocate(t, Endpoint::new(ip, port), addr, t.src_port)?;
                    Endpoint::new(addr, p)
                }
                _ => Endpoint::new(t.src, t.src_port),
            };
            Tuple {
                proto: t.proto,
                src: ip,
                dst: client.addr,
                src_port: port,
                dst_port: client.port,
            }
        } else {
            let Side::Network(n) = from else {
                return Err(DropReason::Unsolicited);
            };
            if self.topo.networks[usize::from(n)].internal {
                return Err(DropReason::InternalNetwork);
            }
            if redirect.is_none() && self.topo.network_of_ip(t.dst).is_some() {
                return Err(DropReason::InterNetwork);
            }
            let Some(addr) = up else {
                return Err(DropReason::NoRoute);
            };
            let remote = Endpoint::new(redirect.unwrap_or(t.dst), t.dst_port);
            let inside = Endpoint::new(t.src, t.src_port);
            let eim = self.topo.udp_eim && t.proto == Proto::Udp;
            let preferred = if eim {
                self.eim.lookup(inside, now).unwrap_or(t.src_port)
            } else {
                t.src_port
            };
            let p = self.allocate(t, remote, addr, preferred)?;
            if eim {
                self.eim.insert(inside, p, now);
            }
            let remote_port = if t.proto == Proto::Icmp {
                p
            } else {
                t.dst_port
            };
            Tuple {
                proto: t.proto,
                src: remote.addr,
                dst: addr,
                src_port: remote_port,
                dst_port: p,
            }
        };
        match self.ct.insert(*t, reply, side_mark(from), now) {
            Ok(id) => Ok(id),
            Err(InsertError::TableFull { .. }) => Err(DropReason::CtTableFull),
            Err(InsertError::Exists) => Err(DropReason::CtInvalid),
            Err(InsertError::SourceLimit(..)) => Err(DropReason::CtSourceLimit),
            Err(InsertError::DestinationLimit(..)) => Err(DropReason::NatDestinationLimit),
        }
    }

    /// A source port (or ICMP identifier) on `addr` that no connection to `remote` uses and no
    /// published port claims (so an inside client can never shadow a published port).
    fn allocate(
        &self,
        t: &Tuple,
        remote: Endpoint,
        addr: Ipv4Addr,
        preferred: u16,
    ) -> Result<u16, DropReason> {
        let (first, last) = self.topo.nat_ports;
        let range = PortRange { first, last };
        let seed = nat::hash_seed(
            t.proto.number(),
            Endpoint::new(t.src, t.src_port),
            Endpoint::new(t.dst, t.dst_port),
        );
        let taken = |p: u16| {
            let remote_port = if t.proto == Proto::Icmp {
                p
            } else {
                remote.port
            };
            let key = Tuple {
                proto: t.proto,
                src: remote.addr,
                dst: addr,
                src_port: remote_port,
                dst_port: p,
            };
            self.ct.contains(&key)
                || (t.proto != Proto::Icmp && self.published.contains_key(&(t.proto.number(), p)))
        };
        nat::allocate_port(range, preferred, seed, PORT_TRIES, taken).map_err(|e| match e {
            NatError::PortsExhausted { .. } => DropReason::PortsExhausted,
            _ => DropReason::PortsExhausted,
        })
    }

    /// An ICMP error about a tracked connection: translated outer and inner, then forwarded.
    #[allow(clippy::too_many_arguments)]
    fn route_icmp_error(
        &mut self,
        now: u64,
        ingress: PortId,
        from: Side,
        mut data: Vec<u8>,
        c: Classified,
        info: Ipv4Info,
        output: &mut Vec<Packet>,
    ) {
        let Some(inner) = nat::icmp_error_inner(&data, &c) else {
            self.ct.count_invalid();
            return self.drop(ingress, DropReason::IcmpErrorNoFlow);
        };
        let Some(proto) = Proto::from_number(inner.protocol) else {
            return self.drop(ingress, DropReason::IcmpErrorNoFlow);
        };
        // The quoted packet travelled the other way: its reverse is this error's direction.
        let key = Tuple {
            proto,
            src: inner.dst.addr,
            dst: inner.src.addr,
            src_port: inner.dst.port,
            dst_port: inner.src.port,
        };
        let Some((id, dir)) = self.ct.lookup(&key, now) else {
            self.ct.count_invalid();
            return self.drop(ingress, DropReason::IcmpErrorNoFlow);
        };
        let Some(e) = self.ct.entry(id) else {
            return self.drop(ingress, DropReason::IcmpErrorNoFlow);
        };
        let inner_target = match dir {
            Direction::Original => e.reply,
            Direction::Reply => e.original,
        };
        let outer_dst = inner_target.src;
        let outer_src = if info.src == inner.dst.addr {
            inner_target.dst
        } else {
            info.src
        };
        let egress = self.side_of(outer_dst);
        if info.ttl <= 1 {
            // Never an ICMP error about an ICMP error (RFC 1122 3.2.2).
            return self.drop(ingress, DropReason::TtlExceeded);
        }
        if egress == from && from == Side::Uplink {
            return self.drop(ingress, DropReason::NoRoute);
        }
        let (isrc, idst) = endpoints(&inner_target);
        if nat::rewrite_icmp_error(&mut data, &c, &inner, outer_src, outer_dst, isrc, idst).is_err()
        {
            return self.drop(ingress, DropReason::Malformed);
        }
        self.bridge.nat_translated += 1;
        synth::decrement_ttl(&mut data, c.l3_offset);
        self.send_to(now, ingress, egress, outer_dst, data, output);
    }

    /// Sends an ICMP error about `data` back out of the port it came in on.
    #[allow(clippy::too_many_arguments)]
    fn send_icmp_error(
        &mut self,
        ingress: PortId,
        from: Side,
        data: &[u8],
        c: &Classified,
        ty: u8,
        code: u8,
        rest: [u8; 4],
        output: &mut Vec<Packet>,
    ) {
        let (our_mac, our_ip) = match from {
            Side::Network(n) => match self.topo.networks[usize::from(n)].gateway {
                Some((ip, mac)) => (mac, ip),
                None => return,
            },
            Side::Uplink => match &self.topo.uplink {
                Some(u) => (u.mac, u.address),
                None => return,
            },
        };
        let (Some(peer_mac), L3::Ipv4(info)) = (packet::src_mac(data), c.l3) else {
            return;
        };
        let offending = &data[c.l3_offset..c.ip_end.min(data.len())];
        let err = synth::icmp_error(
            our_mac, peer_mac, our_ip, info.src, ty, code, rest, offending,
        );
        self.bridge.icmp_errors_sent += 1;
        self.emit(
            Packet {
                port: ingress,
                data: err,
            },
            output,
        );
    }

    /// Puts a routed, translated packet on the wire toward `dst_ip` on `side`: Ethernet addresses,
    /// ARP when the next hop is unknown, and the egress port.
    fn send_to(
        &mut self,
        now: u64,
        ingress: PortId,
        side: Side,
        dst_ip: Ipv4Addr,
        mut data: Vec<u8>,
        output: &mut Vec<Packet>,
    ) {
        let (our_mac, our_ip, next_hop) = match side {
            Side::Network(n) => match self.topo.networks[usize::from(n)].gateway {
                Some((ip, mac)) => (mac, ip, dst_ip),
                None => return self.drop(ingress, DropReason::NoRoute),
            },
            Side::Uplink => {
                let Some(up) = self.topo.uplink else {
                    return self.drop(ingress, DropReason::NoRoute);
                };
                let on_link = up.subnet.is_some_and(|s| s.contains(&dst_ip));
                let hop = if on_link { Some(dst_ip) } else { up.next_hop };
                match (hop, up.next_hop_mac) {
                    (_, Some(mac)) if !on_link => {
                        synth::set_macs(&mut data, up.mac, mac);
                        self.count_forwarded(ingress);
                        let port = up.port;
                        return self.emit(Packet { port, data }, output);
                    }
                    (Some(hop), _) => (up.mac, up.address, hop),
                    (None, _) => return self.drop(ingress, DropReason::NoRoute),
                }
            }
        };
        match self.neighbors.lookup(side, next_hop, now) {
            Some(mac) => {
                synth::set_macs(&mut data, our_mac, mac);
                self.count_forwarded(ingress);
                self.emit_on(side, mac, data, output);
            }
            None => {
                synth::set_macs(&mut data, our_mac, MacAddr::ZERO);
                match self
                    .neighbors
                    .enqueue(side, next_hop, Waiting { ingress, data }, now)
                {
                    Enqueued::Full(_) => self.drop(ingress, DropReason::ArpQueueFull),
                    queued => {
                        if let Some(c) = self.ports.get_mut(usize::from(ingress.0)) {
                            c.queued += 1;
                        }
                        if matches!(queued, Enqueued::QueuedSendArp) {
                            self.bridge.arp_requests_sent += 1;
                            let req = synth::arp_request(our_mac, our_ip, next_hop);
                            self.emit_on(side, MacAddr::BROADCAST, req, output);
                        }
                    }
                }
            }
        }
    }

    fn count_forwarded(&mut self, port: PortId) {
        if let Some(c) = self.ports.get_mut(usize::from(port.0)) {
            c.forwarded += 1;
        }
    }

    /// Emits a frame the gateway sends on `side` to `dst_mac`: the uplink port, or the network's
    /// port that learned `dst_mac`, or every port of the network when unknown or broadcast.
    fn emit_on(&mut self, side: Side, dst_mac: MacAddr, data: Vec<u8>, output: &mut Vec<Packet>) {
        match side {
            Side::Uplink => {
                if let Some(port) = self.topo.uplink.as_ref().map(|u| u.port) {
                    self.emit(Packet { port, data }, output);
                }
            }
            Side::Network(n) => {
                let net = NetworkId(n);
                let known = if dst_mac.is_multicast() {
                    None
                } else {
                    self.fdb.lookup(net, dst_mac, self.now)
                };
                match known {
                    Some(port) => self.emit(Packet { port, data }, output),
                    None => {
                        let ports = self.topo.networks[usize::from(n)].ports.clone();
                        let Some((last, rest)) = ports.split_last() else {
                            return;
                        };
                        for &p in rest {
                            self.bridge.flooded_copies += 1;
                            self.emit(
                                Packet {
                                    port: p,
                                    data: data.clone(),
                                },
                                output,
                            );
                        }
                        self.bridge.flooded_copies += 1;
                        self.emit(Packet { port: *last, data }, output);
                    }
                }
            }
        }
    }

    /// Sends frames that were waiting for `mac` to resolve.
    pub(crate) fn release(
        &mut self,
        side: Side,
        mac: MacAddr,
        frames: Vec<Waiting>,
        output: &mut Vec<Packet>,
    ) {
        for w in frames {
            let mut data = w.data;
            if let Some(h) = data.get_mut(..6) {
                h.copy_from_slice(&mac.0);
            }
            if let Some(c) = self.ports.get_mut(usize::from(w.ingress.0)) {
                c.queued = c.queued.saturating_sub(1);
                c.forwarded += 1;
            }
            self.emit_on(side, mac, data, output);
        }
    }

    /// Drops frames whose ARP never resolved; expires conntrack entries a little at a time.
    pub(crate) fn gateway_housekeeping(&mut self, now: u64) {
        for w in self.neighbors.expire(now) {
            if let Some(c) = self.ports.get_mut(usize::from(w.ingress.0)) {
                c.queued = c.queued.saturating_sub(1);
                c.drops.add(DropReason::ArpUnresolved);
            }
        }
        self.ct.expire(now, 256);
        self.eim.expire(now, 64);
        self.fragments.expire(now);
    }
}
