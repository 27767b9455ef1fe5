//! Routing of IPv6 datagrams: conntrack (an IPv6 table with the IPv4 one's states and limits),
//! NAT66 masquerade to the uplink's IPv6 address (or routing of the containers' own addresses),
//! published ports for IPv6 clients (the client's address kept), hairpin, ICMPv6 errors
//! translated outer and inner, hop limit and packet-too-big (IPv6 routers never fragment), later
//! fragments following their first, DNS queries forwarded to an IPv6 resolver, packets routed
//! back onto their own network, and the way onto the wire by neighbour discovery.
//!
//! Owns no state: it works on the [`Gateway`]'s IPv6 conntrack, neighbour and fragment tables
//! and on the published ports. A published port names its container by IPv4 address; its IPv6 address is
//! the one the same port was given (the topology's port addresses), looked up per new flow.

use super::super::neighbor::{Enqueued, Side, Waiting};
use super::super::route::{free_port, tuple_from};
use super::super::{Gateway, ingress_side, transmit};
use super::synth6;
use crate::config::Topology;
use crate::counters::DropReason;
use crate::frame::Frame;
use crate::l3::fragments::FragmentPlan;
use conntrack::{Direction, InsertError, TcpSegment, Tuple, Verdict, tcp_may_create};
use nat::Endpoint6;
use packet::checksum::l4_checksum_v6;
use packet::{Classified, IPPROTO_ICMPV6, Ipv6Info, L3, L4, L4Proto, classify};
use std::net::Ipv6Addr;

/// A routed IPv6 packet: its bytes and the header summary parsed from them.
pub(crate) struct Datagram6 {
    /// The Ethernet frame.
    pub(in crate::l3) data: Vec<u8>,
    /// Where its headers are.
    pub(in crate::l3) c: Classified,
    /// Its IPv6 header.
    pub(in crate::l3) info: Ipv6Info,
}

type Tuple6 = Tuple<Ipv6Addr>;

/// The conntrack key of a packet, and its TCP segment; ICMPv6 echo (reply 129, request 128)
/// is keyed by its identifier.
fn tuple_of6(info: &Ipv6Info, l4: &L4) -> Option<(Tuple6, Option<TcpSegment>)> {
    tuple_from(info.src, info.dst, l4, [129, 128])
}

fn side_mark(side: Side) -> u32 {
    match side {
        Side::Network(n) => u32::from(n),
        Side::Uplink => u32::MAX,
    }
}

/// The side `ip` lives on: the network whose IPv6 prefix holds it, else the uplink.
fn side_of6(topo: &Topology, ip: Ipv6Addr) -> Side {
    match topo.network_of_ip6(ip) {
        Some(n) => Side::Network(n.0),
        None => Side::Uplink,
    }
}

/// The IPv6 address of the container a published port names by its IPv4 address.
fn container_ip6(topo: &Topology, ip: std::net::Ipv4Addr) -> Option<Ipv6Addr> {
    topo.active_ports()
        .find(|(_, p)| p.address.ip == Some(ip))
        .and_then(|(_, p)| p.address.ip6)
}

/// What went wrong with a datagram that must be answered with an ICMPv6 error.
#[derive(Clone, Copy)]
enum Error6 {
    /// Hop limit exceeded in transit (type 3, code 0).
    HopLimit,
    /// Packet too big for the egress link (type 2).
    TooBig(u32),
    /// Destination unreachable, port unreachable (type 1, code 4).
    PortUnreachable,
}

/// Sends an ICMPv6 error about `dg` back out of the port it came in on, from our address on
/// the side it came from. Never about an ICMPv6 error (RFC 4443 2.4 (e)).
fn send_error6(f: &mut Frame<'_>, dg: &Datagram6, e: Error6) {
    if let L4::Icmp { ty, .. } = dg.c.l4
        && dg.info.protocol == IPPROTO_ICMPV6
        && ty < 128
    {
        return;
    }
    let (our_mac, our_ip) = match ingress_side(f) {
        Side::Network(n) => {
            let net = &f.topo.networks[usize::from(n)];
            match (net.gateway, net.v6) {
                (Some((_, mac)), Some(v6)) => (mac, v6.gateway),
                _ => return,
            }
        }
        Side::Uplink => match f.topo.uplink {
            Some(u) => match u.v6 {
                Some(v6) => (u.mac, v6.address),
                None => return,
            },
            None => return,
        },
    };
    let (ty, code, rest) = match e {
        Error6::HopLimit => (3, 0, [0; 4]),
        Error6::TooBig(mtu) => (2, 0, mtu.to_be_bytes()),
        Error6::PortUnreachable => (1, 4, [0; 4]),
    };
    let Some(peer_mac) = packet::src_mac(&dg.data) else {
        return;
    };
    let offending = &dg.data[dg.c.l3_offset..dg.c.ip_end.min(dg.data.len())];
    let err = synth6::icmpv6_error(
        our_mac,
        peer_mac,
        our_ip,
        dg.info.src,
        ty,
        code,
        rest,
        offending,
    );
    f.events().icmp_errors_sent += 1;
    f.reply(err);
}

/// Refuses a packet to a closed port of an address the switch owns: port unreachable (TCP
/// included: simpler than a reset, and what `ip6tables -j REJECT` sends by default).
pub(super) fn refuse6(f: &mut Frame<'_>, dg: &Datagram6) {
    if matches!(dg.c.l4, L4::Tcp { .. } | L4::Udp { .. }) {
        send_error6(f, dg, Error6::PortUnreachable);
    }
}

impl Gateway {
    /// Conntrack, NAT66 and forwarding of a routed IPv6 packet. `redirect` sends a new flow to
    /// another destination (a DNS query to the gateway forwarded to the IPv6 resolver).
    pub(super) fn route6(&mut self, f: &mut Frame<'_>, dg: Datagram6, redirect: Option<Ipv6Addr>) {
        let (c, info) = (dg.c, dg.info);
        if let Some(frag) = info.fragment.filter(|fr| fr.offset != 0) {
            return self.route_fragment6(f, dg, frag.ident);
        }
        if let L4::Icmp { ty, .. } = c.l4
            && info.protocol == IPPROTO_ICMPV6
            && ty < 128
        {
            return self.route_icmp6_error(f, dg);
        }
        let Some((tuple, seg)) = tuple_of6(&info, &c.l4) else {
            return f.drop(DropReason::Unsupported);
        };
        if info.hop_limit <= 1 {
            send_error6(f, &dg, Error6::HopLimit);
            return f.drop(DropReason::TtlExceeded);
        }
        let (now, len, from) = (f.now, dg.data.len(), ingress_side(f));
        let (id, dir, created) = match self.ct6.lookup(&tuple, now) {
            Some((id, dir)) => (id, dir, false),
            None => match self.new_flow6(f, &tuple, seg.as_ref(), redirect) {
                Ok(id) => (id, Direction::Original, true),
                Err(DropReason::UplinkPortClosed) => {
                    refuse6(f, &dg);
                    return f.drop(DropReason::UplinkPortClosed);
                }
                Err(reason) => return f.drop(reason),
            },
        };
        if dir == Direction::Original && self.ct6.mark(id).is_some_and(|m| m != side_mark(from)) {
            return f.drop(DropReason::SpoofedSource);
        }
        let (id, dir) = match self.ct6.track(id, dir, seg.as_ref(), len, now) {
            Verdict::Accept => (id, dir),
            Verdict::Invalid => {
                if created {
                    self.ct6.remove(id);
                }
                return f.drop(DropReason::CtInvalid);
            }
            Verdict::Reopen => {
                self.ct6.remove(id);
                let id = match self.new_flow6(f, &tuple, seg.as_ref(), redirect) {
                    Ok(id) => id,
                    Err(reason) => return f.drop(reason),
                };
                if self
                    .ct6
                    .track(id, Direction::Original, seg.as_ref(), len, now)
                    != Verdict::Accept
                {
                    self.ct6.remove(id);
                    return f.drop(DropReason::CtInvalid);
                }
                (id, Direction::Original)
            }
        };
        let Some((original, reply)) = self.ct6.tuples(id) else {
            return f.drop(DropReason::NoRoute);
        };
        let target = match dir {
            Direction::Original => reply.reversed(),
            Direction::Reply => original.reversed(),
        };
        let egress = side_of6(f.topo, target.dst);
        let mtu = usize::from(super::super::route::egress_mtu(f.topo, egress));
        // As long on the wire as one segment, for a super-frame (as Linux checks GSO packets).
        let wire =
            (c.ip_end - c.l3_offset).min(f.offload.wire_len(&dg.data).saturating_sub(c.l3_offset));
        if wire > mtu {
            send_error6(f, &dg, Error6::TooBig(mtu as u32));
            return f.drop(DropReason::FragNeeded);
        }
        let mut data = dg.data;
        let src = Endpoint6::new(target.src, target.src_port);
        let dst = Endpoint6::new(target.dst, target.dst_port);
        let partial = f.offload.partial_at(c.l4_offset);
        if nat::rewrite6(&mut data, &c, src, dst, partial).is_err() {
            return f.drop(DropReason::Malformed);
        }
        f.events().nat_translated += u64::from(target != tuple);
        if let Some(frag) = info.fragment.filter(|fr| fr.more) {
            // A first fragment: its later fragments (no ports) follow its translation.
            let key = (info.protocol, info.src, info.dst, frag.ident);
            let plan = FragmentPlan {
                src: target.src,
                dst: target.dst,
                egress,
            };
            self.fragments6.remember(key, plan, f.now);
        }
        synth6::decrement_hop_limit(&mut data, c.l3_offset);
        self.send_to6(f, egress, target.dst, data);
    }

    /// A packet for a neighbour on its own network that came through the gateway: hop limit,
    /// then back onto the network as it is.
    pub(super) fn route_back6(&mut self, f: &mut Frame<'_>, side: Side, dg: Datagram6) {
        if dg.info.hop_limit <= 1 {
            send_error6(f, &dg, Error6::HopLimit);
            return f.drop(DropReason::TtlExceeded);
        }
        let Datagram6 { mut data, c, info } = dg;
        synth6::decrement_hop_limit(&mut data, c.l3_offset);
        self.send_to6(f, side, info.dst, data);
    }

    /// A later fragment: translated as its first fragment was, or dropped when that one did
    /// not come by (no reassembly here).
    fn route_fragment6(&mut self, f: &mut Frame<'_>, dg: Datagram6, ident: u32) {
        let (c, info) = (dg.c, dg.info);
        let key = (info.protocol, info.src, info.dst, ident);
        let Some(plan) = self.fragments6.lookup(&key, f.now) else {
            return f.drop(DropReason::Unsupported);
        };
        if info.hop_limit <= 1 {
            return f.drop(DropReason::TtlExceeded);
        }
        let mtu = usize::from(super::super::route::egress_mtu(f.topo, plan.egress));
        if c.ip_end - c.l3_offset > mtu {
            send_error6(f, &dg, Error6::TooBig(mtu as u32));
            return f.drop(DropReason::FragNeeded);
        }
        let mut data = dg.data;
        let (src, dst) = (Endpoint6::new(plan.src, 0), Endpoint6::new(plan.dst, 0));
        if nat::rewrite6(&mut data, &c, src, dst, false).is_err() {
            return f.drop(DropReason::Malformed);
        }
        f.events().nat_translated += 1;
        synth6::decrement_hop_limit(&mut data, c.l3_offset);
        self.send_to6(f, plan.egress, plan.dst, data);
    }

    /// The conntrack entry for a new connection from the frame's ingress side, or why not.
    fn new_flow6(
        &mut self,
        f: &Frame<'_>,
        t: &Tuple6,
        seg: Option<&TcpSegment>,
        redirect: Option<Ipv6Addr>,
    ) -> Result<conntrack::EntryId, DropReason> {
        if seg.is_some_and(|s| !tcp_may_create(s)) {
            self.ct6.count_invalid();
            return Err(DropReason::CtInvalid);
        }
        let (now, from, topo) = (f.now, ingress_side(f), f.topo);
        let up6 = topo.uplink.and_then(|u| u.v6);
        let to_uplink_address = redirect.is_none() && up6.is_some_and(|u| u.is_ours(t.dst));
        let reply = if to_uplink_address {
            // A published port: DNAT to the container's IPv6 address.
            let target = self
                .published
                .get(&(t.proto.number(), t.dst_port))
                .and_then(|&(ip4, port)| container_ip6(topo, ip4).map(|ip| (ip, port)));
            let Some((ip, port)) = target else {
                return Err(if from == Side::Uplink {
                    DropReason::Unsolicited
                } else {
                    DropReason::UplinkPortClosed
                });
            };
            let client = match (from, up6) {
                (Side::Network(_), Some(u)) => {
                    // Hairpin: masquerade the source too, so the reply comes back through us.
                    let remote = Endpoint6::new(ip, port);
                    (
                        u.address,
                        self.allocate6(topo, t, remote, u.address, t.src_port)?,
                    )
                }
                _ => (t.src, t.src_port),
            };
            Tuple::from_parts(t.proto, ip, port, client.0, client.1)
        } else {
            let Side::Network(n) = from else {
                return Err(DropReason::Unsolicited);
            };
            if topo.networks[usize::from(n)].internal {
                return Err(DropReason::InternalNetwork);
            }
            if redirect.is_none() && topo.network_of_ip6(t.dst).is_some() {
                return Err(DropReason::InterNetwork);
            }
            let Some(u) = up6 else {
                return Err(DropReason::NoRoute);
            };
            let remote = Endpoint6::new(redirect.unwrap_or(t.dst), t.dst_port);
            if u.nat {
                let p = self.allocate6(topo, t, remote, u.address, t.src_port)?;
                let remote_port = if t.proto == L4Proto::Icmp {
                    p
                } else {
                    t.dst_port
                };
                Tuple::from_parts(t.proto, remote.addr, remote_port, u.address, p)
            } else {
                Tuple::from_parts(t.proto, remote.addr, remote.port, t.src, t.src_port)
            }
        };
        match self.ct6.insert(*t, reply, side_mark(from), now) {
            Ok(id) => Ok(id),
            Err(InsertError::TableFull { .. }) => Err(DropReason::CtTableFull),
            Err(InsertError::Exists) => Err(DropReason::CtInvalid),
            Err(InsertError::SourceLimit(..)) => Err(DropReason::CtSourceLimit),
            Err(InsertError::DestinationLimit(..)) => Err(DropReason::NatDestinationLimit),
        }
    }

    /// A source port (or echo identifier) on `addr` that no connection to `remote` uses and no
    /// published port claims.
    fn allocate6(
        &self,
        topo: &Topology,
        t: &Tuple6,
        remote: Endpoint6,
        addr: Ipv6Addr,
        preferred: u16,
    ) -> Result<u16, DropReason> {
        let remote = (remote.addr, remote.port);
        let seed = seed6(t);
        free_port(
            &self.ct6,
            &self.published,
            topo,
            t.proto,
            remote,
            addr,
            preferred,
            seed,
        )
    }

    /// An ICMPv6 error: matched by the connection it quotes, translated outer and inner.
    fn route_icmp6_error(&mut self, f: &mut Frame<'_>, dg: Datagram6) {
        let Datagram6 { mut data, c, info } = dg;
        let body_at = c.l4_offset + 8;
        let inner = data.get(body_at..c.ip_end).and_then(quoted_packet);
        let Some((ic, ii)) = inner else {
            self.ct6.count_invalid();
            return f.drop(DropReason::IcmpErrorNoFlow);
        };
        let Some((quoted, _)) = tuple_of6(&ii, &ic.l4) else {
            return f.drop(DropReason::IcmpErrorNoFlow);
        };
        // The quoted packet travelled the other way: its reverse is this error's direction.
        let Some((id, dir)) = self.ct6.lookup(&quoted.reversed(), f.now) else {
            self.ct6.count_invalid();
            return f.drop(DropReason::IcmpErrorNoFlow);
        };
        let Some((original, reply)) = self.ct6.tuples(id) else {
            return f.drop(DropReason::IcmpErrorNoFlow);
        };
        // The quoted packet is rewritten as it looked on the error's egress side.
        let inner_target = match dir {
            Direction::Original => reply,
            Direction::Reply => original,
        };
        let outer_dst = inner_target.src;
        let outer_src = if info.src == quoted.dst {
            inner_target.dst
        } else {
            info.src
        };
        if info.hop_limit <= 1 {
            return f.drop(DropReason::TtlExceeded);
        }
        let egress = side_of6(f.topo, outer_dst);
        if egress == Side::Uplink && ingress_side(f) == Side::Uplink {
            return f.drop(DropReason::NoRoute);
        }
        // The inner packet's checksum covers addresses that change: the same rewrite updates
        // it; the outer ICMPv6 checksum is then computed anew over the translated message.
        let mut inner_frame = quoted_frame(&data[body_at..c.ip_end]);
        let Ok(ic2) = reclassify_quoted(&inner_frame) else {
            return f.drop(DropReason::Malformed);
        };
        let isrc = Endpoint6::new(inner_target.src, inner_target.src_port);
        let idst = Endpoint6::new(inner_target.dst, inner_target.dst_port);
        if nat::rewrite6(&mut inner_frame, &ic2, isrc, idst, false).is_err() {
            return f.drop(DropReason::Malformed);
        }
        data[body_at..c.ip_end].copy_from_slice(&inner_frame[packet::ETH_HEADER_LEN..]);
        let l3 = c.l3_offset;
        data[l3 + 8..l3 + 24].copy_from_slice(&outer_src.octets());
        data[l3 + 24..l3 + 40].copy_from_slice(&outer_dst.octets());
        data[c.l4_offset + 2..c.l4_offset + 4].fill(0);
        let ck = l4_checksum_v6(
            outer_src,
            outer_dst,
            IPPROTO_ICMPV6,
            &data[c.l4_offset..c.ip_end],
        );
        data[c.l4_offset + 2..c.l4_offset + 4].copy_from_slice(&ck.to_be_bytes());
        f.events().nat_translated += 1;
        synth6::decrement_hop_limit(&mut data, l3);
        self.send_to6(f, egress, outer_dst, data);
    }

    /// Puts a routed packet on the wire toward `dst` on `side`: Ethernet addresses, neighbour
    /// discovery when the next hop is unknown, the egress port.
    pub(super) fn send_to6(
        &mut self,
        f: &mut Frame<'_>,
        side: Side,
        dst: Ipv6Addr,
        mut data: Vec<u8>,
    ) {
        let (our_mac, our_ip, next_hop) = match side {
            Side::Network(n) => {
                let net = &f.topo.networks[usize::from(n)];
                match (net.gateway, net.v6) {
                    (Some((_, mac)), Some(v6)) => (mac, v6.gateway, dst),
                    _ => return f.drop(DropReason::NoRoute),
                }
            }
            Side::Uplink => {
                let Some((up, up6)) = f.topo.uplink.and_then(|u| u.v6.map(|v| (u, v))) else {
                    return f.drop(DropReason::NoRoute);
                };
                let on_link = up6.subnet.is_some_and(|s| s.contains(&dst));
                match (on_link, up6.next_hop, up6.next_hop_mac) {
                    (false, _, Some(mac)) => {
                        crate::synth::set_macs(&mut data, up.mac, mac);
                        f.forwarded();
                        return f.emit(up.port, data);
                    }
                    (true, _, _) => (up.mac, up6.address, dst),
                    (false, Some(hop), None) => (up.mac, up6.address, hop),
                    (false, None, None) => return f.drop(DropReason::NoRoute),
                }
            }
        };
        if let Some(mac) = self.neighbors6.lookup(side, next_hop, f.now) {
            crate::synth::set_macs(&mut data, our_mac, mac);
            f.forwarded();
            let offload = f.offload;
            transmit(f, side, mac, data, offload);
            return;
        }
        crate::synth::set_macs(&mut data, our_mac, packet::MacAddr::ZERO);
        let waiting = Waiting {
            ingress: f.ingress,
            data,
            offload: f.offload,
        };
        match self.neighbors6.enqueue(side, next_hop, waiting, f.now) {
            Enqueued::Full(_) => f.drop(DropReason::ArpQueueFull),
            queued => {
                if let Some(c) = f.port_counters(f.ingress) {
                    c.queued += 1;
                }
                if matches!(queued, Enqueued::QueuedSendArp) {
                    let ns = synth6::neighbor_solicitation(our_mac, our_ip, next_hop);
                    f.events().neighbor_solicitations_sent += 1;
                    let group = packet::MacAddr::ipv6_multicast(synth6::solicited_node(next_hop));
                    transmit(f, side, group, ns, packet::offload::Offload::NONE);
                }
            }
        }
    }
}

/// A seed for the port allocator from a tuple (splitmix64 over its words).
fn seed6(t: &Tuple6) -> u64 {
    let (s, d) = (t.src.to_bits(), t.dst.to_bits());
    let words = [
        s as u64,
        (s >> 64) as u64,
        d as u64,
        (d >> 64) as u64,
        (u64::from(t.proto.number()) << 32) | (u64::from(t.src_port) << 16) | u64::from(t.dst_port),
    ];
    words.iter().fold(0x9e37_79b9_7f4a_7c15, |acc: u64, &w| {
        let mut x = (acc ^ w).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    })
}

/// A quoted packet (from its IPv6 header on) behind a blank Ethernet header, so that it can be
/// classified and rewritten as a frame.
fn quoted_frame(b: &[u8]) -> Vec<u8> {
    [&[0u8; 12][..], &packet::ETHERTYPE_IPV6.to_be_bytes(), b].concat()
}

/// The packet an ICMPv6 error quotes (`b`, from its IPv6 header on), classified: it must hold
/// its upper-layer ports (or echo identifier).
fn quoted_packet(b: &[u8]) -> Option<(Classified, Ipv6Info)> {
    let c = reclassify_quoted(&quoted_frame(b)).ok()?;
    match c.l3 {
        L3::Ipv6(info) => Some((c, info)),
        _ => None,
    }
}

/// Classifies a quoted packet behind an Ethernet header. A quote may be cut short (an error
/// fits in 1280 bytes), so a copy is classified with its payload length (and, for UDP right
/// after the fixed header, its UDP length) cut to what is there; the offsets hold for both.
fn reclassify_quoted(frame: &[u8]) -> Result<Classified, packet::Malformed> {
    let mut f = frame.to_vec();
    let l3 = packet::ETH_HEADER_LEN;
    let available = f.len().saturating_sub(l3 + packet::IPV6_HEADER_LEN);
    let fit = |field: &mut [u8], available: usize| {
        let stated = u16::from_be_bytes([field[0], field[1]]);
        let fit = u16::try_from(available).unwrap_or(u16::MAX).min(stated);
        field.copy_from_slice(&fit.to_be_bytes());
    };
    if let Some(field) = f.get_mut(l3 + 4..l3 + 6) {
        fit(field, available);
    }
    let udp = l3 + packet::IPV6_HEADER_LEN;
    if f.get(l3 + 6) == Some(&17)
        && let Some(field) = f.get_mut(udp + 4..udp + 6)
    {
        fit(field, available);
    }
    classify(&f)
}
