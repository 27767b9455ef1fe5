//! ICMP errors at the gateway: those it forwards (about a tracked connection, translated outer
//! and inner) and those it originates (time exceeded, fragmentation needed, port unreachable),
//! and the TCP resets that refuse a closed port of the uplink address.
//!
//! Owns no state: forwarded errors are matched against the [`Gateway`]'s conntrack table.
//! Invariants: never an ICMP error about an ICMP error (RFC 1122 3.2.2), so a forwarded error
//! whose TTL runs out is dropped silently; an originated error quotes the offending IP header
//! and the first 8 bytes of its payload, as received (RFC 792); an error from the uplink is
//! never sent back to the uplink.

use super::neighbor::Side;
use super::route::{endpoints, side_of};
use super::{Datagram, Gateway, ingress_side};
use crate::counters::DropReason;
use crate::frame::Frame;
use crate::synth::{self, IcmpHeader};
use conntrack::{Direction, TcpSegment, Tuple};
use packet::{L3, L4, L4Proto};

/// An ICMP error the gateway originates.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    /// Type 11 code 0: TTL exceeded in transit.
    TimeExceeded,
    /// Type 3 code 4: fragmentation needed and DF set, with the next-hop MTU (RFC 1191).
    FragNeeded {
        /// The MTU of the egress link.
        mtu: u16,
    },
}

impl Gateway {
    /// An ICMP error about a tracked connection: translated outer and inner, then forwarded.
    pub(super) fn route_icmp_error(&mut self, f: &mut Frame<'_>, dg: Datagram) {
        let Datagram { mut data, c, info } = dg;
        let Some(inner) = nat::icmp_error_inner(&data, &c) else {
            self.ct.count_invalid();
            return f.drop(DropReason::IcmpErrorNoFlow);
        };
        let Some(proto) = L4Proto::from_number(inner.protocol) else {
            return f.drop(DropReason::IcmpErrorNoFlow);
        };
        // The quoted packet travelled the other way: its reverse is this error's direction.
        let key = Tuple {
            proto,
            src: inner.dst.addr,
            dst: inner.src.addr,
            src_port: inner.dst.port,
            dst_port: inner.src.port,
        };
        let Some((id, dir)) = self.ct.lookup(&key, f.now) else {
            self.ct.count_invalid();
            return f.drop(DropReason::IcmpErrorNoFlow);
        };
        let Some(e) = self.ct.entry(id) else {
            return f.drop(DropReason::IcmpErrorNoFlow);
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
        let egress = side_of(f.topo, outer_dst);
        if info.ttl <= 1 {
            // Never an ICMP error about an ICMP error (RFC 1122 3.2.2).
            return f.drop(DropReason::TtlExceeded);
        }
        let from = ingress_side(f);
        if egress == from && from == Side::Uplink {
            return f.drop(DropReason::NoRoute);
        }
        let (isrc, idst) = endpoints(&inner_target);
        if nat::rewrite_icmp_error(&mut data, &c, &inner, outer_src, outer_dst, isrc, idst).is_err()
        {
            return f.drop(DropReason::Malformed);
        }
        f.events().nat_translated += 1;
        synth::decrement_ttl(&mut data, c.l3_offset);
        self.send_to(f, egress, outer_dst, data);
    }
}

/// Sends an ICMP error about `dg` back out of the port it came in on, from the gateway address
/// of the side it came from.
pub(super) fn send(f: &mut Frame<'_>, dg: &Datagram, kind: Kind) {
    let header = match kind {
        Kind::TimeExceeded => IcmpHeader {
            ty: 11,
            code: 0,
            rest: [0; 4],
        },
        Kind::FragNeeded { mtu } => {
            let m = mtu.to_be_bytes();
            IcmpHeader {
                ty: 3,
                code: 4,
                rest: [0, 0, m[0], m[1]],
            }
        }
    };
    let (our_mac, our_ip) = match ingress_side(f) {
        Side::Network(n) => match f.topo.networks[usize::from(n)].gateway {
            Some((ip, mac)) => (mac, ip),
            None => return,
        },
        Side::Uplink => match &f.topo.uplink {
            Some(u) => (u.mac, u.address),
            None => return,
        },
    };
    let (data, c) = (&dg.data, &dg.c);
    let (Some(peer_mac), L3::Ipv4(info)) = (packet::src_mac(data), c.l3) else {
        return;
    };
    let offending = &data[c.l3_offset..c.ip_end.min(data.len())];
    let err = synth::icmp_error(our_mac, peer_mac, our_ip, info.src, header, offending);
    f.events().icmp_errors_sent += 1;
    f.reply(err);
}

/// Refuses `dg`, a new connection from a container to a closed port of an address the switch
/// owns (the uplink address, a gateway): a TCP SYN gets a RST+ACK, a UDP datagram an ICMP port
/// unreachable, from the address it was sent to, out of the port it came in on. Anything else
/// (a RST, an ICMP message) gets nothing (RFC 793 3.4, RFC 1122 3.2.2).
pub(super) fn refuse(f: &mut Frame<'_>, dg: &Datagram, seg: Option<&TcpSegment>) {
    let Side::Network(n) = ingress_side(f) else {
        return;
    };
    let Some((_, our_mac)) = f.topo.networks[usize::from(n)].gateway else {
        return;
    };
    let (data, c, info) = (&dg.data, &dg.c, &dg.info);
    let Some(peer_mac) = packet::src_mac(data) else {
        return;
    };
    let reply = match (c.l4, seg) {
        (
            L4::Tcp {
                src_port, dst_port, ..
            },
            Some(s),
        ) if s.syn && !s.rst && !s.ack => {
            // SEG.LEN counts the SYN (and a FIN).
            let len = s.payload_len + 1 + u32::from(s.fin);
            synth::tcp_rst(
                (our_mac, peer_mac),
                (info.dst, dst_port),
                (info.src, src_port),
                0,
                Some(s.seq.wrapping_add(len)),
            )
        }
        (L4::Udp { .. }, _) => {
            let header = IcmpHeader {
                ty: 3,
                code: 3,
                rest: [0; 4],
            };
            let offending = &data[c.l3_offset..c.ip_end.min(data.len())];
            f.events().icmp_errors_sent += 1;
            synth::icmp_error(our_mac, peer_mac, info.dst, info.src, header, offending)
        }
        _ => return,
    };
    f.reply(reply);
}

/// Checks the egress MTU; sends fragmentation-needed and returns false when it does not fit.
pub(super) fn fits_egress(f: &mut Frame<'_>, egress: Side, dg: &Datagram) -> bool {
    let mtu = super::route::egress_mtu(f.topo, egress);
    if super::route::on_wire(f, dg) <= usize::from(mtu) {
        return true;
    }
    if dg.info.dont_frag {
        send(f, dg, Kind::FragNeeded { mtu });
        f.drop(DropReason::FragNeeded);
    } else {
        f.drop(DropReason::NeedsFragmentation);
    }
    false
}
