//! IPv6 at the gateway: neighbour discovery (RFC 4861), router advertisements, echo, and the
//! entry of routed IPv6 (NAT66 or routed, in [`route`]).
//!
//! A dual-stack network's gateway answers neighbour solicitations for its addresses (the
//! configured one and the link-local address of its MAC), answers router solicitations with a
//! router advertisement (the prefix on-link, the MTU, no SLAAC unless asked, the gateway as DNS
//! server when the network serves DNS, RFC 8106), answers echo and DNS queries, and learns its containers' link-layer addresses
//! from their neighbour discovery and from the packets they route (gleaning). Toward the
//! uplink it answers solicitations for the uplink's IPv6 addresses and resolves its next hop by
//! solicitation, with the same pending queue as ARP.
//!
//! Invariants: neighbour discovery is accepted only with hop limit 255 and code 0 (RFC 4861
//! 7.1.1, so it cannot have been routed); a solicitation for another address is left to the
//! bridge, never answered; every frame ends counted (forwarded, local, queued or a drop).

mod route;

use super::dns::DnsOutcome;
use super::neighbor::Side;
use super::{Gateway, release};
use crate::bridge::ndp_link_layer_options;
use crate::config::{NetworkId, NetworkV6};
use crate::counters::DropReason;
use crate::frame::Frame;
use crate::synth::v6 as synth6;
use packet::{Classified, IPPROTO_ICMPV6, Ipv6Info, L3, L4, MacAddr, classify};
use std::net::Ipv6Addr;

pub(crate) use route::Datagram6;

/// An NDP message's target address (bytes 8..24 of NS and NA).
fn ndp_target(body: &[u8]) -> Option<Ipv6Addr> {
    body.get(8..24)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(Ipv6Addr::from)
}

/// The ICMPv6 message of `data` (from its type byte to the packet's end).
fn icmp_body<'a>(data: &'a [u8], c: &Classified) -> &'a [u8] {
    data.get(c.l4_offset..c.ip_end).unwrap_or_default()
}

/// Neighbour discovery that passes RFC 4861's validation: hop limit 255, code 0.
fn valid_ndp(info: &Ipv6Info, code: u8) -> bool {
    info.hop_limit == synth6::NDP_HOP_LIMIT && code == 0
}

impl Gateway {
    /// An IPv6 frame from a container port of `net`: to the gateway MAC, or to a multicast MAC
    /// (a solicitation may be for the gateway). Returns the frame back when it is not the
    /// gateway's, for the bridge to deliver.
    pub(crate) fn ipv6(
        &mut self,
        f: &mut Frame<'_>,
        net: NetworkId,
        data: Vec<u8>,
        classified: Option<Classified>,
    ) -> Option<Vec<u8>> {
        let network = &f.topo.networks[usize::from(net.0)];
        let (Some(v6), Some((_, gw_mac))) = (network.v6, network.gateway) else {
            return Some(data);
        };
        let to_gateway = packet::dst_mac(&data) == Some(gw_mac);
        let c = match classified.map_or_else(|| classify(&data), Ok) {
            Ok(c) => c,
            Err(_) if to_gateway => {
                f.drop(DropReason::Malformed);
                return None;
            }
            Err(_) => return Some(data),
        };
        let L3::Ipv6(info) = c.l3 else {
            return Some(data);
        };
        let src_mac = packet::src_mac(&data).unwrap_or(MacAddr::ZERO);
        let side = Side::Network(net.0);
        if let (IPPROTO_ICMPV6, L4::Icmp { ty, code, .. }) = (info.protocol, c.l4) {
            match ty {
                133 => {
                    if !valid_ndp(&info, code) {
                        f.drop(DropReason::Malformed);
                        return None;
                    }
                    let mtu = u32::from(super::route::egress_mtu(f.topo, side));
                    let ad = synth6::Advertisement {
                        mac: gw_mac,
                        link_local: v6.gateway_ll,
                        prefix: (v6.subnet.network(), v6.subnet.prefix_len()),
                        autoconf: v6.autoconf,
                        mtu,
                        dns: self.dns.contains_key(&net).then_some(v6.gateway),
                    };
                    let reply = synth6::router_advertisement(&ad, src_mac, info.src);
                    f.events().router_advertisements_sent += 1;
                    f.local();
                    f.reply(reply);
                    return None;
                }
                135 | 136 => {
                    let body = icmp_body(&data, &c);
                    let Some(target) = ndp_target(body).filter(|_| valid_ndp(&info, code)) else {
                        if to_gateway {
                            f.drop(DropReason::Malformed);
                            return None;
                        }
                        return Some(data);
                    };
                    let lladdr = ndp_link_layer_options(body.get(24..).unwrap_or_default())
                        .next()
                        .unwrap_or(src_mac);
                    // NS teaches the sender's address, NA the target's (RFC 4861 7.2.3, 7.2.5).
                    let learned = if ty == 135 { info.src } else { target };
                    if !learned.is_unspecified() && !lladdr.is_multicast() && on_link(&v6, learned)
                    {
                        let released = self.neighbors6.learn(side, learned, lladdr, f.now);
                        release(f, side, lladdr, released);
                    }
                    if ty == 135 && v6.is_gateway(target) {
                        let na =
                            synth6::neighbor_advertisement(gw_mac, target, src_mac, info.src, true);
                        f.events().neighbor_advertisements_sent += 1;
                        f.local();
                        f.reply(na);
                        return None;
                    }
                    if to_gateway {
                        f.local();
                        return None;
                    }
                    return Some(data);
                }
                _ => {}
            }
        }
        if !to_gateway {
            return Some(data);
        }
        if on_link(&v6, info.src) && self.neighbors6.lookup(side, info.src, f.now) != Some(src_mac)
        {
            let released = self.neighbors6.learn(side, info.src, src_mac, f.now);
            release(f, side, src_mac, released);
        }
        let mut dg = Datagram6 { data, c, info };
        if info.dst == v6.gateway
            && matches!(c.l4, L4::Udp { dst_port: 53, .. })
            && self.dns.contains_key(&net)
        {
            match self.dns_query6(f, net, &mut dg) {
                DnsOutcome::Answered => f.local(),
                DnsOutcome::Drop => f.drop(DropReason::DnsDropped),
                DnsOutcome::Forward(upstream) => self.route6(f, dg, Some(upstream)),
            }
            return None;
        }
        if v6.is_gateway(info.dst) {
            if let L4::Icmp { ty: 128, .. } = c.l4 {
                answer_ping6(f, dg);
                return None;
            }
            route::refuse6(f, &dg);
            f.drop(DropReason::GatewayUnsupported);
            return None;
        }
        if v6.subnet.contains(&info.dst) {
            // To a neighbour on the same network, but through the gateway: routed straight
            // back onto the network without NAT, as for IPv4.
            if !network.icc {
                f.drop(DropReason::IccBlocked);
                return None;
            }
            self.route_back6(f, side, dg);
            return None;
        }
        self.route6(f, dg, None);
        None
    }

    /// An IPv6 frame from the uplink.
    pub(crate) fn uplink_ingress6(&mut self, f: &mut Frame<'_>, data: Vec<u8>, c: Classified) {
        let (Some(up), L3::Ipv6(info)) = (f.topo.uplink, c.l3) else {
            return f.drop(DropReason::NotForUs);
        };
        let Some(up6) = up.v6 else {
            return f.drop(DropReason::NotForUs);
        };
        let src_mac = packet::src_mac(&data).unwrap_or(MacAddr::ZERO);
        if let (IPPROTO_ICMPV6, L4::Icmp { ty: 135, code, .. }) = (info.protocol, c.l4) {
            let body = icmp_body(&data, &c);
            let Some(target) = ndp_target(body).filter(|_| valid_ndp(&info, code)) else {
                return f.drop(DropReason::Malformed);
            };
            let lladdr = ndp_link_layer_options(body.get(24..).unwrap_or_default())
                .next()
                .unwrap_or(src_mac);
            if !up6.is_ours(target) {
                return f.drop(DropReason::NotForUs);
            }
            if info.src.is_unspecified() || lladdr.is_multicast() {
                // Someone's duplicate address detection for our address: nothing to learn.
                f.local();
                return;
            }
            let released = self.neighbors6.learn(Side::Uplink, info.src, lladdr, f.now);
            release(f, Side::Uplink, lladdr, released);
            let na = synth6::neighbor_advertisement(up.mac, target, src_mac, info.src, false);
            f.events().neighbor_advertisements_sent += 1;
            f.local();
            return f.reply(na);
        }
        if let (IPPROTO_ICMPV6, L4::Icmp { ty: 136, code, .. }) = (info.protocol, c.l4) {
            let body = icmp_body(&data, &c);
            if let Some(target) = ndp_target(body).filter(|_| valid_ndp(&info, code)) {
                let lladdr = ndp_link_layer_options(body.get(24..).unwrap_or_default())
                    .next()
                    .unwrap_or(src_mac);
                let released = self.neighbors6.learn(Side::Uplink, target, lladdr, f.now);
                release(f, Side::Uplink, lladdr, released);
                f.local();
                return;
            }
            return f.drop(DropReason::Malformed);
        }
        let dst_mac = packet::dst_mac(&data).unwrap_or(MacAddr::ZERO);
        let routed_in = !up6.nat && f.topo.network_of_ip6(info.dst).is_some();
        if dst_mac != up.mac || !(up6.is_ours(info.dst) || routed_in) {
            return f.drop(DropReason::NotForUs);
        }
        if f.topo.network_of_ip6(info.src).is_some() {
            return f.drop(DropReason::SpoofedSource);
        }
        let dg = Datagram6 { data, c, info };
        if up6.is_ours(info.dst)
            && let L4::Icmp { ty: 128, .. } = c.l4
        {
            return answer_ping6(f, dg);
        }
        self.route6(f, dg, None);
    }
}

/// Whether `ip` can be a neighbour on a network with `v6`: inside its prefix or link-local.
fn on_link(v6: &NetworkV6, ip: Ipv6Addr) -> bool {
    v6.subnet.contains(&ip) || ip.is_unicast_link_local()
}

/// Answers an echo request addressed to us, back out of the port it came in on.
fn answer_ping6(f: &mut Frame<'_>, dg: Datagram6) {
    let Datagram6 { mut data, c, .. } = dg;
    synth6::echo_reply_in_place(&mut data, c.l3_offset, c.l4_offset);
    f.events().echo_replies_sent += 1;
    f.local();
    f.reply(data);
}
