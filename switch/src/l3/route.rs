//! Routing of a datagram that is not an ICMP error: conntrack lookup (or a new entry with its
//! NAT binding), the rewrite, and the way onto the wire (Ethernet addresses, ARP).
//!
//! Owns no state of its own: it works on the [`Gateway`]'s conntrack table, EIM table, published
//! ports and neighbor tables. Invariants: a new masquerade binding never takes a port that a
//! published port claims or that another connection to the same remote uses; a packet leaves
//! only after its TTL was checked (and decremented) and its size checked against the egress MTU.

use super::flow_cache::{Action, FlowKey};
use super::neighbor::{Enqueued, Side, Waiting};
use super::{Datagram, Gateway, icmp_error, ingress_side, transmit};
use crate::config::{PortId, Topology};
use crate::counters::DropReason;
use crate::frame::Frame;
use crate::l3::fragments::FragmentPlan;
use crate::synth;
use conntrack::{Direction, EntryId, InsertError, TcpSegment, Tuple, Verdict, tcp_may_create};
use nat::{Endpoint, NatError, PortRange};
use packet::offload::Offload;
use packet::{Classified, Ipv4Info, L4, L4Proto, MacAddr};
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

pub(super) fn tuple_of(info: &Ipv4Info, l4: &L4) -> Option<(Tuple, Option<TcpSegment>)> {
    tuple_from(info.src, info.dst, l4, [0, 8])
}

/// The conntrack key of a packet from `src` to `dst` with transport `l4`, and its TCP
/// segment; ICMP echo (of the types in `echo`: reply and request of this IP version) is keyed
/// by its identifier as both ports.
pub(super) fn tuple_from<A: conntrack::Address>(
    src: A,
    dst: A,
    l4: &L4,
    echo: [u8; 2],
) -> Option<(Tuple<A>, Option<TcpSegment>)> {
    let (proto, src_port, dst_port, seg) = match *l4 {
        L4::Tcp {
            src_port,
            dst_port,
            flags,
            seq,
            ack,
            payload_len,
        } => (
            L4Proto::Tcp,
            src_port,
            dst_port,
            Some(TcpSegment::from_flags(flags, seq, ack, payload_len)),
        ),
        L4::Udp { src_port, dst_port } => (L4Proto::Udp, src_port, dst_port, None),
        L4::Icmp { ty, ident, .. } if echo.contains(&ty) => (L4Proto::Icmp, ident, ident, None),
        _ => return None,
    };
    Some((Tuple::from_parts(proto, src, src_port, dst, dst_port), seg))
}

/// The IPv4 identification field.
pub(super) fn ip_ident(data: &[u8], c: &Classified) -> u16 {
    data.get(c.l3_offset + 4..c.l3_offset + 6)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

fn side_mark(side: Side) -> u32 {
    match side {
        Side::Network(n) => u32::from(n),
        Side::Uplink => u32::MAX,
    }
}

pub(super) fn endpoints(t: &Tuple) -> (Endpoint, Endpoint) {
    (
        Endpoint::new(t.src, t.src_port),
        Endpoint::new(t.dst, t.dst_port),
    )
}

/// A masquerade port on `addr` (either family) that no connection in `ct` to `remote` uses
/// and no published port claims; the candidates are walked from `preferred`, then in an order
/// `seed` picks.
#[allow(clippy::too_many_arguments)]
pub(super) fn free_port<A: conntrack::Address, T>(
    ct: &conntrack::Conntrack<A>,
    published: &rustc_hash::FxHashMap<(u8, u16), T>,
    topo: &Topology,
    proto: L4Proto,
    remote: (A, u16),
    addr: A,
    preferred: u16,
    seed: u64,
) -> Result<u16, DropReason> {
    let (first, last) = topo.nat_ports;
    let range = PortRange { first, last };
    let taken = |p: u16| {
        // ICMP echo: the identifier stands for both ports.
        let remote_port = if proto == L4Proto::Icmp { p } else { remote.1 };
        let key = Tuple::from_parts(proto, remote.0, remote_port, addr, p);
        ct.contains(&key)
            || (proto != L4Proto::Icmp && published.contains_key(&(proto.number(), p)))
    };
    nat::allocate_port(range, preferred, seed, PORT_TRIES, taken).map_err(|e| match e {
        NatError::PortsExhausted { .. } | NatError::InvalidPortRange { .. } => {
            DropReason::PortsExhausted
        }
    })
}

/// The side `ip` lives on: the network whose subnet holds it, else the uplink.
pub(super) fn side_of(topo: &Topology, ip: Ipv4Addr) -> Side {
    match topo.network_of_ip(ip) {
        Some(n) => Side::Network(n.0),
        None => Side::Uplink,
    }
}

impl Gateway {
    /// Conntrack, NAT and forwarding of a routed IPv4 packet. `redirect` sends a new flow to
    /// another destination address (see [`Gateway::new_flow`]). An established flow's packet
    /// takes its cached action when there is one (see [`flow_cache`]); the rest take the slow
    /// path, which caches what it decided.
    pub(super) fn route(&mut self, f: &mut Frame<'_>, dg: Datagram, redirect: Option<Ipv4Addr>) {
        let (c, info) = (dg.c, dg.info);
        if info.frag_offset != 0 {
            return self.route_fragment(f, dg);
        }
        if let L4::Icmp { ty, .. } = c.l4
            && nat::is_icmp_error(ty)
        {
            return self.route_icmp_error(f, dg);
        }
        let Some((tuple, seg)) = tuple_of(&info, &c.l4) else {
            return f.drop(DropReason::Unsupported);
        };
        if info.ttl <= 1 {
            icmp_error::send(f, &dg, icmp_error::Kind::TimeExceeded);
            return f.drop(DropReason::TtlExceeded);
        }
        let now = f.now;
        let len = dg.data.len();
        let key = FlowKey::new(f.ingress, &tuple);
        let epoch = self.flow_epoch(f);
        if let Some(hit) = self.flows.get(key, epoch, now)
            && !info.more_frags
            && on_wire(f, &dg) <= usize::from(hit.mtu)
        {
            match self.ct.track_live(hit.id, hit.dir, seg.as_ref(), len, now) {
                Some(Verdict::Accept) => return self.forward_cached(f, dg, &tuple, &hit),
                Some(Verdict::Invalid) => {
                    return self.invalid(f, &tuple, seg, hit.id, hit.dir, false);
                }
                Some(Verdict::Reopen) => {
                    let Some(id) = self.reopen(f, &tuple, seg.as_ref(), hit.id, len, redirect)
                    else {
                        return;
                    };
                    return self.forward(f, dg, &tuple, id, Direction::Original, key);
                }
                // Stale or expired: the lookup below reclaims and counts it.
                None => {}
            }
        }
        let from = ingress_side(f);
        let (id, dir, created) = match self.ct.lookup(&tuple, now) {
            Some((id, dir)) => (id, dir, false),
            None => match self.new_flow(f, &tuple, seg.as_ref(), redirect) {
                Ok(id) => (id, Direction::Original, true),
                Err(DropReason::UplinkPortClosed) => {
                    // As a host refuses a closed port, so the client does not hang.
                    icmp_error::refuse(f, &dg, seg.as_ref());
                    return f.drop(DropReason::UplinkPortClosed);
                }
                Err(reason) => return f.drop(reason),
            },
        };
        // Packets of an entry's original direction must come from the side that created it.
        if dir == Direction::Original && self.ct.mark(id).is_some_and(|m| m != side_mark(from)) {
            return f.drop(DropReason::SpoofedSource);
        }
        let (id, dir) = match self.ct.track(id, dir, seg.as_ref(), len, now) {
            Verdict::Accept => (id, dir),
            Verdict::Invalid => return self.invalid(f, &tuple, seg, id, dir, created),
            Verdict::Reopen => match self.reopen(f, &tuple, seg.as_ref(), id, len, redirect) {
                Some(id) => (id, Direction::Original),
                None => return,
            },
        };
        self.forward(f, dg, &tuple, id, dir, key);
    }

    /// Drops a packet conntrack judged invalid (removing the entry it just created).
    #[cold]
    fn invalid(
        &mut self,
        f: &mut Frame<'_>,
        tuple: &Tuple,
        seg: Option<TcpSegment>,
        id: EntryId,
        dir: Direction,
        created: bool,
    ) {
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
        f.drop(DropReason::CtInvalid);
    }

    /// A SYN on a closed TCP entry: the entry goes, and the packet starts a new connection.
    /// `None` when that fails (the drop is counted).
    fn reopen(
        &mut self,
        f: &mut Frame<'_>,
        tuple: &Tuple,
        seg: Option<&TcpSegment>,
        old: EntryId,
        len: usize,
        redirect: Option<Ipv4Addr>,
    ) -> Option<EntryId> {
        self.ct.remove(old);
        let id = match self.new_flow(f, tuple, seg, redirect) {
            Ok(id) => id,
            Err(reason) => {
                f.drop(reason);
                return None;
            }
        };
        if self.ct.track(id, Direction::Original, seg, len, f.now) != Verdict::Accept {
            self.ct.remove(id);
            f.drop(DropReason::CtInvalid);
            return None;
        }
        Some(id)
    }

    /// The slow path's tail for a tracked packet: where it goes, the MTU check, the rewrite,
    /// the way onto the wire, and the action cached for the flow's next packet.
    fn forward(
        &mut self,
        f: &mut Frame<'_>,
        mut dg: Datagram,
        tuple: &Tuple,
        id: EntryId,
        dir: Direction,
        key: FlowKey,
    ) {
        let (c, info, now) = (dg.c, dg.info, f.now);
        // Read before anything below can change it, and checked again when used.
        let epoch = self.flow_epoch(f);
        let Some(plan) = self.plan(f.topo, id, dir) else {
            return f.drop(DropReason::NoRoute);
        };
        if !icmp_error::fits_egress(f, plan.egress, &dg) {
            return;
        }
        let (src, dst) = endpoints(&plan.target);
        // Only the packet's own TCP/UDP checksum takes the pseudo-header rule (a tunnel's inner
        // partial checksum covers inner addresses NAT does not touch).
        let partial = f.offload.partial_at(c.l4_offset);
        if nat::rewrite_offloaded(&mut dg.data, &c, src, dst, partial).is_err() {
            return f.drop(DropReason::Malformed);
        }
        let translated = plan.target != *tuple;
        f.events().nat_translated += u64::from(translated);
        if info.more_frags {
            let key = (info.protocol, info.src, info.dst, ip_ident(&dg.data, &c));
            let later = FragmentPlan {
                src: plan.target.src,
                dst: plan.target.dst,
                egress: plan.egress,
            };
            self.fragments.remember(key, later, now);
        }
        self.touch_eim(f, tuple, dir);
        synth::decrement_ttl(&mut dg.data, c.l3_offset);
        let sent = self.send_to(f, plan.egress, plan.target.dst, dg.data);
        if let Some(out) = sent
            && !info.more_frags
            && self.flows.will_fill()
            && epoch == self.flow_epoch(f)
        {
            let action = Action {
                id,
                dir,
                rewrite: nat::Prepared::new(endpoints(tuple), (src, dst)),
                translated,
                egress: out.port,
                src_mac: out.src_mac,
                dst_mac: out.dst_mac,
                mtu: egress_mtu(f.topo, plan.egress),
                valid_until: out.valid_until,
            };
            self.flows.fill(key, epoch, now, action, self.ct.len());
        }
    }

    /// The fast path: an established flow's packet rewritten and sent as its cached action
    /// says, after conntrack tracked it. Byte for byte what the slow path would send.
    #[inline]
    fn forward_cached(&mut self, f: &mut Frame<'_>, mut dg: Datagram, tuple: &Tuple, a: &Action) {
        let c = dg.c;
        let partial = f.offload.partial_at(c.l4_offset);
        if nat::rewrite_prepared(&mut dg.data, &c, &a.rewrite, partial).is_err() {
            return f.drop(DropReason::Malformed);
        }
        f.events().nat_translated += u64::from(a.translated);
        self.touch_eim(f, tuple, a.dir);
        synth::decrement_ttl(&mut dg.data, c.l3_offset);
        synth::set_macs(&mut dg.data, a.src_mac, a.dst_mac);
        f.forwarded();
        let offload = f.offload;
        f.emit_as(a.egress, dg.data, offload);
    }

    /// Keeps an endpoint-independent UDP mapping alive while its flows send.
    #[inline]
    fn touch_eim(&mut self, f: &Frame<'_>, tuple: &Tuple, dir: Direction) {
        if f.topo.udp_eim && tuple.proto == L4Proto::Udp && dir == Direction::Original {
            self.eim
                .touch(Endpoint::new(tuple.src, tuple.src_port), f.now);
        }
    }

    /// Which tuple a packet of `dir` on entry `id` must carry, and where it goes.
    fn plan(&self, topo: &Topology, id: EntryId, dir: Direction) -> Option<Plan> {
        let (original, reply) = self.ct.tuples(id)?;
        let target = match dir {
            Direction::Original => reply.reversed(),
            Direction::Reply => original.reversed(),
        };
        Some(Plan {
            target,
            egress: side_of(topo, target.dst),
        })
    }

    /// Creates the conntrack entry for the first packet of a connection from the frame's
    /// ingress side, or says why not. `redirect` sends the flow to another destination address
    /// (the embedded DNS forwarding a query to the upstream resolver), masqueraded like any
    /// outbound flow.
    fn new_flow(
        &mut self,
        f: &Frame<'_>,
        t: &Tuple,
        seg: Option<&TcpSegment>,
        redirect: Option<Ipv4Addr>,
    ) -> Result<EntryId, DropReason> {
        if seg.is_some_and(|s| !tcp_may_create(s)) {
            self.ct.count_invalid();
            return Err(DropReason::CtInvalid);
        }
        let (now, from, topo) = (f.now, ingress_side(f), f.topo);
        let up = topo.uplink.as_ref().map(|u| u.address);
        let reply = if Some(t.dst) == up && redirect.is_none() {
            // A published port: DNAT, from outside or (hairpin) from a container.
            let Some(&(ip, port)) = self.published.get(&(t.proto.number(), t.dst_port)) else {
                return Err(if from == Side::Uplink {
                    DropReason::Unsolicited
                } else {
                    // The switch owns U: nothing else will answer, so refuse (route answers).
                    DropReason::UplinkPortClosed
                });
            };
            let client = match (from, up) {
                (Side::Network(_), Some(addr)) => {
                    // Hairpin: masquerade the source too, so the reply comes back through us.
                    let p = self.allocate(topo, t, Endpoint::new(ip, port), addr, t.src_port)?;
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
            if topo.networks[usize::from(n)].internal {
                return Err(DropReason::InternalNetwork);
            }
            if redirect.is_none() && topo.network_of_ip(t.dst).is_some() {
                return Err(DropReason::InterNetwork);
            }
            let Some(addr) = up else {
                return Err(DropReason::NoRoute);
            };
            let remote = Endpoint::new(redirect.unwrap_or(t.dst), t.dst_port);
            let inside = Endpoint::new(t.src, t.src_port);
            let eim = topo.udp_eim && t.proto == L4Proto::Udp;
            let preferred = if eim {
                self.eim.lookup(inside, now).unwrap_or(t.src_port)
            } else {
                t.src_port
            };
            let p = self.allocate(topo, t, remote, addr, preferred)?;
            if eim {
                self.eim.insert(inside, p, now);
            }
            let remote_port = if t.proto == L4Proto::Icmp {
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
        topo: &Topology,
        t: &Tuple,
        remote: Endpoint,
        addr: Ipv4Addr,
        preferred: u16,
    ) -> Result<u16, DropReason> {
        let seed = nat::hash_seed(
            t.proto.number(),
            Endpoint::new(t.src, t.src_port),
            Endpoint::new(t.dst, t.dst_port),
        );
        let remote = (remote.addr, remote.port);
        free_port(
            &self.ct,
            &self.published,
            topo,
            t.proto,
            remote,
            addr,
            preferred,
            seed,
        )
    }

    /// Puts a routed, translated packet on the wire toward `dst_ip` on `side`: Ethernet addresses,
    /// ARP when the next hop is unknown, and the egress port. Says how it left when it went to
    /// one port without waiting (what the flow cache can repeat).
    pub(super) fn send_to(
        &mut self,
        f: &mut Frame<'_>,
        side: Side,
        dst_ip: Ipv4Addr,
        mut data: Vec<u8>,
    ) -> Option<Sent> {
        let (our_mac, our_ip, next_hop) = match side {
            Side::Network(n) => match f.topo.networks[usize::from(n)].gateway {
                Some((ip, mac)) => (mac, ip, dst_ip),
                None => {
                    f.drop(DropReason::NoRoute);
                    return None;
                }
            },
            Side::Uplink => {
                let Some(up) = f.topo.uplink else {
                    f.drop(DropReason::NoRoute);
                    return None;
                };
                let on_link = up.subnet.is_some_and(|s| s.contains(&dst_ip));
                let hop = if on_link { Some(dst_ip) } else { up.next_hop };
                match (hop, up.next_hop_mac) {
                    (_, Some(mac)) if !on_link => {
                        synth::set_macs(&mut data, up.mac, mac);
                        f.forwarded();
                        f.emit(up.port, data);
                        return Some(Sent {
                            port: up.port,
                            src_mac: up.mac,
                            dst_mac: mac,
                            valid_until: u64::MAX,
                        });
                    }
                    (Some(hop), _) => (up.mac, up.address, hop),
                    (None, _) => {
                        f.drop(DropReason::NoRoute);
                        return None;
                    }
                }
            }
        };
        match self.neighbors.lookup_until(side, next_hop, f.now) {
            Some((mac, fresh_until)) => {
                synth::set_macs(&mut data, our_mac, mac);
                f.forwarded();
                let offload = f.offload;
                let (port, until) = transmit(f, side, mac, data, offload)?;
                Some(Sent {
                    port,
                    src_mac: our_mac,
                    dst_mac: mac,
                    valid_until: until.min(fresh_until),
                })
            }
            None => {
                synth::set_macs(&mut data, our_mac, MacAddr::ZERO);
                let ingress = f.ingress;
                match self.neighbors.enqueue(
                    side,
                    next_hop,
                    Waiting {
                        ingress,
                        data,
                        offload: f.offload,
                    },
                    f.now,
                ) {
                    Enqueued::Full(_) => f.drop(DropReason::ArpQueueFull),
                    queued => {
                        if let Some(c) = f.port_counters(ingress) {
                            c.queued += 1;
                        }
                        if matches!(queued, Enqueued::QueuedSendArp) {
                            f.events().arp_requests_sent += 1;
                            let req = synth::arp_request(our_mac, our_ip, next_hop);
                            transmit(f, side, MacAddr::BROADCAST, req, Offload::NONE);
                        }
                    }
                }
                None
            }
        }
    }
}

/// How a routed packet left, when it went to one port at once.
pub(super) struct Sent {
    port: PortId,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    /// When a neighbor or FDB entry the choice rests on may age.
    valid_until: u64,
}

/// The MTU a packet leaving on `side` must fit.
pub(super) fn egress_mtu(topo: &Topology, side: Side) -> u16 {
    match (side, &topo.uplink) {
        (Side::Uplink, Some(up)) => up.mtu,
        _ => topo.bridge.mtu,
    }
}

/// The IP length a packet takes on the wire: a super-frame's segments' (as Linux forwarding
/// checks GSO packets).
pub(super) fn on_wire(f: &Frame<'_>, dg: &Datagram) -> usize {
    dg.info
        .total_len
        .min(f.offload.wire_len(&dg.data).saturating_sub(dg.c.l3_offset))
}
