//! The L2 stage: one learning bridge per network.
//!
//! Owns the forwarding database ([`Fdb`]) of all networks and the frame-size limit. On the way
//! in it checks a frame (size, source MAC, anti-spoofing) and learns its source; on the way out
//! it forwards by destination MAC, or floods through [`Frame::flood`]; a frame to a snooped
//! multicast group goes to the listeners `crate::multicast` names, through [`Frame::flood_to`].
//!
//! Invariants: a frame is checked (and, with anti-spoofing, its source verified) before it is
//! learned, so a refused frame never moves another port's FDB entry; nothing is ever sent back
//! out of the port it came in on; with `icc = false` nothing is bridged between container ports.

use crate::config::{NetworkId, PortAddress, PortId, Topology};
use crate::counters::{BridgeCounters, DropReason};
use crate::fdb::{Fdb, FdbRow, Learned};
use crate::frame::Frame;
use crate::pipeline::NANOS_PER_SEC;
use packet::{
    ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, L3, L4,
    MIN_FRAME_LEN, MacAddr, dst_mac, ethertype, src_mac,
};
use std::net::{Ipv4Addr, Ipv6Addr};

/// 802.1ad service tag.
const ETHERTYPE_QINQ: u16 = 0x88a8;

/// The bridges of all networks.
#[derive(Debug)]
pub(crate) struct Bridge {
    fdb: Fdb,
    /// Longest frame accepted.
    max_frame: usize,
}

impl Bridge {
    /// Bridges for `topo`, with empty FDBs.
    pub(crate) fn new(topo: &Topology) -> Bridge {
        let aging = topo.bridge.aging_secs.saturating_mul(NANOS_PER_SEC);
        Bridge {
            fdb: Fdb::new(topo.ports.len(), aging, topo.bridge.max_macs_per_port),
            // One VLAN tag may ride on an MTU-sized payload.
            max_frame: usize::from(topo.bridge.mtu) + ETH_HEADER_LEN + 4,
        }
    }

    /// The checks every received frame passes first: its size and its source MAC. Returns its
    /// (source, destination) MACs.
    #[inline(always)]
    pub(crate) fn check(
        &self,
        data: &[u8],
        wire_len: usize,
    ) -> Result<(MacAddr, MacAddr), DropReason> {
        if data.len() < MIN_FRAME_LEN {
            return Err(DropReason::Runt);
        }
        if wire_len > self.max_frame {
            return Err(DropReason::Oversize);
        }
        let (Some(src), Some(dst)) = (src_mac(data), dst_mac(data)) else {
            return Err(DropReason::Runt);
        };
        if src.is_multicast() || src.is_zero() {
            return Err(DropReason::InvalidSrcMac);
        }
        Ok((src, dst))
    }

    /// Learns that `src` is on `ingress` in `network`.
    #[inline(always)]
    pub(crate) fn learn(
        &mut self,
        now: u64,
        network: NetworkId,
        src: MacAddr,
        ingress: PortId,
        events: &mut BridgeCounters,
    ) {
        match self.fdb.learn(network, src, ingress, now) {
            Learned::New => events.fdb_learned += 1,
            Learned::Moved { .. } => events.fdb_moved += 1,
            Learned::CapReached => events.fdb_cap_reached += 1,
            Learned::Refreshed => {}
        }
    }

    /// Bridges a frame within the ingress network: to `listeners` when multicast snooping
    /// gave the frame's group, else to the port that learned `dst`, or flooded.
    #[inline(always)]
    pub(crate) fn forward(
        &self,
        f: &mut Frame<'_>,
        network: NetworkId,
        dst: MacAddr,
        data: Vec<u8>,
        listeners: Option<impl Iterator<Item = PortId>>,
    ) {
        if !f.topo.networks[usize::from(network.0)].icc {
            // Without inter-container communication a port's frames may only reach the gateway,
            // which the L3 stage serves; nothing is bridged to another container port.
            return f.drop(DropReason::IccBlocked);
        }
        if let Some(ports) = listeners {
            return to_listeners(f, ports, data);
        }
        if dst.is_multicast() {
            f.events().multicast_flooded += 1;
            return flood(f, network, data);
        }
        match self.fdb.lookup(network, dst, f.now) {
            Some(egress) if egress == f.ingress => f.drop(DropReason::SamePort),
            Some(egress) => {
                f.forwarded();
                f.emit(egress, data);
            }
            None => flood(f, network, data),
        }
    }

    /// The port that learned `mac` in `network`, if its entry is alive at `now`, and the first
    /// clock value at which the entry is dead.
    #[inline]
    pub(crate) fn lookup_until(
        &self,
        network: NetworkId,
        mac: MacAddr,
        now: u64,
    ) -> Option<(PortId, u64)> {
        self.fdb.lookup_until(network, mac, now)
    }

    /// Changes whenever an FDB entry moved or went.
    #[inline]
    pub(crate) fn fdb_generation(&self) -> u64 {
        self.fdb.generation()
    }

    /// Ages the FDB out; returns how many entries went.
    pub(crate) fn sweep(&mut self, now: u64) -> usize {
        self.fdb.sweep(now)
    }

    /// Makes room for port `id` (new or reused) with no entries.
    /// Learns a saved entry back (`last_seen` on the pipeline's clock); false at the port's cap.
    pub(crate) fn restore(
        &mut self,
        network: NetworkId,
        mac: MacAddr,
        port: PortId,
        last_seen: u64,
    ) -> bool {
        !matches!(
            self.fdb.learn(network, mac, port, last_seen),
            Learned::CapReached
        )
    }

    pub(crate) fn add_port(&mut self, id: PortId) {
        self.fdb.add_port(id);
    }

    /// Forgets every entry learned on `port`.
    pub(crate) fn flush_port(&mut self, port: PortId) {
        self.fdb.flush_port(port);
    }

    /// Live FDB entries.
    pub(crate) fn rows(&self, now: u64) -> Vec<FdbRow> {
        self.fdb.rows(now)
    }
}

/// Floods a received frame to the other ports of its network.
fn flood(f: &mut Frame<'_>, network: NetworkId, data: Vec<u8>) {
    let offload = f.offload;
    if f.flood(network, Some(f.ingress), data, offload) {
        f.forwarded();
    } else {
        f.drop(DropReason::NoEgress);
    }
}

/// Sends a frame to a multicast group's listeners (never back to the ingress port).
fn to_listeners(f: &mut Frame<'_>, ports: impl Iterator<Item = PortId>, data: Vec<u8>) {
    let offload = f.offload;
    let copies = f.flood_to(ports, Some(f.ingress), data, offload);
    if copies == 0 {
        return f.drop(DropReason::NoMulticastListener);
    }
    let events = f.events();
    events.multicast_to_listeners += 1;
    events.multicast_listener_copies += copies;
    f.forwarded();
}

/// Anti-spoofing: whether a frame from a port with `address` uses only that port's addresses.
/// Untagged IPv4, ARP and IPv6 (with its neighbour discovery, see [`check_ipv6`]) are checked;
/// a VLAN tag is refused outright, since the tag would hide the inner header from the check.
/// Other EtherTypes (LLDP) pass with the MAC check alone. Short headers are left to the later
/// stages, which count them as malformed. An IPv6 frame that passes comes back classified
/// (the check had to find its upper layer), so the gateway does not classify it again.
pub(crate) fn check_source(
    address: &PortAddress,
    src: MacAddr,
    frame: &[u8],
) -> Result<Option<packet::Classified>, DropReason> {
    if address.mac.is_some_and(|m| m != src) {
        return Err(DropReason::SpoofedMac);
    }
    let ty = ethertype(frame);
    if matches!(ty, Some(ETHERTYPE_VLAN | ETHERTYPE_QINQ)) {
        return Err(DropReason::SpoofedIp);
    }
    if ty == Some(ETHERTYPE_IPV6) {
        return check_ipv6(address, address.mac.unwrap_or(src), frame);
    }
    let Some(ip) = address.ip else {
        return Ok(None);
    };
    let allowed = |b: Option<&[u8]>| {
        b.and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(Ipv4Addr::from)
            .is_none_or(|a| a == ip || a.is_unspecified())
    };
    match ty {
        Some(ETHERTYPE_IPV4) => {
            let at = ETH_HEADER_LEN + 12;
            if !allowed(frame.get(at..at + 4)) {
                return Err(DropReason::SpoofedIp);
            }
        }
        Some(ETHERTYPE_ARP) => {
            // Sender hardware address at 8, sender protocol address at 14 of the ARP header.
            let sha = frame.get(ETH_HEADER_LEN + 8..ETH_HEADER_LEN + 14);
            let spa = frame.get(ETH_HEADER_LEN + 14..ETH_HEADER_LEN + 18);
            let mac_ok = match (address.mac, sha.and_then(MacAddr::from_slice)) {
                (Some(m), Some(s)) => m == s,
                _ => true,
            };
            if !mac_ok || !allowed(spa) {
                return Err(DropReason::SpoofedArp);
            }
        }
        _ => {}
    }
    Ok(None)
}

/// Anti-spoofing for IPv6 from a port whose MAC is `mac`: the source must be the port's IPv6
/// address, the link-local address of its MAC, or `::` (only for duplicate address detection's
/// solicitations and MLD reports, RFC 4862 5.4, RFC 3810 5.2.13); a neighbour advertisement
/// must be for one of those addresses and neighbour discovery may name no other link-layer
/// address; router advertisements and redirects are routers' alone (RA guard, RFC 6105).
fn check_ipv6(
    address: &PortAddress,
    mac: MacAddr,
    frame: &[u8],
) -> Result<Option<packet::Classified>, DropReason> {
    let Ok(c) = packet::classify(frame) else {
        return Ok(None);
    };
    let L3::Ipv6(info) = c.l3 else {
        return Ok(None);
    };
    let own = |ip: Ipv6Addr| ip == mac.link_local() || Some(ip) == address.ip6;
    let icmp_type = match c.l4 {
        L4::Icmp { ty, .. } if info.protocol == packet::IPPROTO_ICMPV6 => Some(ty),
        _ => None,
    };
    if info.src.is_unspecified() {
        if !matches!(icmp_type, Some(135 | 131 | 143)) {
            return Err(DropReason::SpoofedIpv6);
        }
    } else if !own(info.src) {
        return Err(DropReason::SpoofedIpv6);
    }
    let Some(ty) = icmp_type else {
        return Ok(Some(c));
    };
    let body = frame.get(c.l4_offset..c.ip_end).unwrap_or_default();
    match ty {
        134 | 137 => Err(DropReason::RaGuard),
        135 | 136 => {
            // Target address at 8, options from 24 (RFC 4861 4.3, 4.4).
            let target = body
                .get(8..24)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(Ipv6Addr::from);
            if ty == 136 && !target.is_some_and(own) {
                return Err(DropReason::SpoofedNd);
            }
            if ndp_link_layer_options(body.get(24..).unwrap_or_default()).any(|m| m != mac) {
                return Err(DropReason::SpoofedNd);
            }
            Ok(Some(c))
        }
        _ => Ok(Some(c)),
    }
}

/// The link-layer addresses (source or target options, RFC 4861 4.6.1) among NDP options;
/// a malformed option ends the walk.
pub(crate) fn ndp_link_layer_options(mut opts: &[u8]) -> impl Iterator<Item = MacAddr> + '_ {
    std::iter::from_fn(move || {
        loop {
            let [kind, len, ..] = *opts else { return None };
            let size = usize::from(len) * 8;
            if size == 0 || size > opts.len() {
                return None;
            }
            let (opt, rest) = opts.split_at(size);
            opts = rest;
            if matches!(kind, 1 | 2) && size == 8 {
                return MacAddr::from_slice(&opt[2..8]);
            }
        }
    })
}
