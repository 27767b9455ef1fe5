//! The pipeline's overlay stage (see `crate::overlay`): VXLAN in from the uplink, VXLAN out for
//! what the bridge sent to an overlay port, and the control plane's calls that fill the tables.
//!
//! Decapsulated frames enter the pipeline again on their network's overlay port, so the bridge,
//! gateway and counters treat them as any received frame. Encapsulation runs once per batch
//! over what the stages sent to overlay ports: those frames are plain by then (an overlay port
//! takes no offloads, so super-frames were segmented and checksums finished on the way), and
//! each copy leaves on the uplink as a frame the pipeline originates, counted in `tx_*` there.

use super::{Packet, Pipeline};
use crate::config::{ConfigError, NetworkId, PortId, PortKind};
use crate::counters::DropReason;
use crate::overlay::wire::{self, Decapsulated, OUTER_IP_OVERHEAD, Outer};
use crate::overlay::{Overlay, OverlayRow, Targets};
use crate::pipeline::NANOS_PER_SEC;
use packet::MacAddr;
use std::net::Ipv4Addr;

impl Pipeline {
    /// Makes `network` an overlay network with `vni` and flood list `peers`: its overlay port
    /// is added (named `vxlan-VNI`).
    pub(super) fn attach_overlay(
        &mut self,
        network: NetworkId,
        vni: u32,
        peers: &[Ipv4Addr],
    ) -> Result<(), ConfigError> {
        let name = self.topo.networks[usize::from(network.0)].name.clone();
        if vni == 0 || vni > wire::MAX_VNI {
            return Err(ConfigError::BadVni { network: name, vni });
        }
        if self.topo.uplink.is_none() {
            return Err(ConfigError::OverlayWithoutUplink(name));
        }
        if self.overlay.has_vni(vni) {
            let first = self
                .topo
                .networks
                .iter()
                .find(|n| n.vni == Some(vni) && n.name != name)
                .map(|n| n.name.clone())
                .unwrap_or_default();
            return Err(ConfigError::DuplicateVni {
                vni,
                first,
                second: name,
            });
        }
        let port = self.add_own_port(&format!("vxlan-{vni}"), PortKind::Overlay, network)?;
        // Not queried: the other hosts' gateways query their own containers. Never snooped
        // either, so every multicast frame reaches the other hosts.
        self.multicast.add_port(port, network, false);
        self.overlay.add(network, vni, port, peers);
        Ok(())
    }

    /// Removes `network`'s overlay port, if it has one and no other port is left; whether the
    /// network may go now.
    pub(super) fn detach_overlay(&mut self, network: NetworkId) -> bool {
        let Some(port) = self.overlay.port(network) else {
            return true;
        };
        if !self.only_port(network, port) {
            return false;
        }
        self.overlay.remove(network);
        self.remove_own_port(network, port);
        true
    }

    /// A VXLAN packet from the uplink (`d` says where its inner frame is): the inner frame into
    /// its network through the overlay port, or counted as dropped on the uplink.
    pub(super) fn decapsulate(
        &mut self,
        now: u64,
        uplink: PortId,
        mut data: Vec<u8>,
        d: Decapsulated,
        output: &mut Vec<Packet>,
    ) {
        let (network, port) = match self.overlay.accept(d.vni, d.src_vtep) {
            Ok(x) => x,
            Err(true) => return self.counters.drop(uplink, DropReason::VxlanUnknownVni),
            Err(false) => return self.counters.drop(uplink, DropReason::VxlanUnknownVtep),
        };
        data.truncate(d.end);
        data.drain(..d.start);
        let Some(src) = packet::src_mac(&data) else {
            return self.counters.drop(uplink, DropReason::VxlanMalformed);
        };
        let gateway = self.topo.networks[usize::from(network.0)].gateway;
        if gateway.is_some_and(|(_, mac)| mac == src) {
            return self.counters.drop(uplink, DropReason::OverlayGatewayMac);
        }
        if !src.is_multicast()
            && !src.is_zero()
            && !self.overlay.learn(network, src, d.src_vtep, now)
        {
            self.counters.bridge.overlay_learn_cap_reached += 1;
        }
        if let Some(c) = self.counters.port(uplink) {
            c.local += 1;
        }
        self.counters.bridge.vxlan_decapsulated += 1;
        self.process_one(now, Packet::new(port, data), output, None);
    }

    /// Whether the frame from `ingress` to unicast `dst` on overlay `network` goes straight to
    /// the overlay port: no local port learned `dst`, and its VTEP is known (so it is not
    /// flooded to every local port and every host).
    pub(super) fn overlay_egress(
        &self,
        network: NetworkId,
        ingress: PortId,
        dst: MacAddr,
        now: u64,
    ) -> Option<PortId> {
        let port = self.overlay.port(network)?;
        let known = !dst.is_multicast()
            && port != ingress
            && self.bridge.lookup_until(network, dst, now).is_none()
            && self.overlay.knows(network, dst, now);
        known.then_some(port)
    }

    /// The overlay stage at the end of a batch: frames waiting for a VTEP's next hop, then
    /// everything the stages sent to overlay ports since `first`, in VXLAN to their VTEPs.
    pub(super) fn encapsulate_output(&mut self, now: u64, first: usize, output: &mut Vec<Packet>) {
        self.counters.bridge.overlay_aged += self.overlay.maybe_sweep(now) as u64;
        let Some(up) = self.topo.uplink else { return };
        self.release_waiting(now, output);
        let topo = &self.topo;
        let is_overlay = |p: &Packet| {
            topo.ports
                .get(usize::from(p.port.0))
                .is_some_and(|p| p.kind == PortKind::Overlay)
        };
        if !output[first..].iter().any(is_overlay) {
            return;
        }
        let inner: Vec<Packet> = output.extract_if(first.., |p| is_overlay(p)).collect();
        for pkt in inner {
            let Some(network) = self.topo.ports[usize::from(pkt.port.0)].network else {
                continue;
            };
            let src = packet::src_mac(&pkt.data).unwrap_or(MacAddr::ZERO);
            let gateway = self.topo.networks[usize::from(network.0)].gateway;
            if gateway.is_some_and(|(_, mac)| mac == src) {
                self.counters.bridge.vxlan_gateway_kept += 1;
                continue;
            }
            if pkt.data.len() + OUTER_IP_OVERHEAD > usize::from(up.mtu) {
                self.counters.bridge.vxlan_too_big += 1;
                continue;
            }
            let dst = packet::dst_mac(&pkt.data).unwrap_or(MacAddr::ZERO);
            match self.overlay.targets(network, dst, now) {
                Some((vni, Targets::One(vtep))) => {
                    self.encapsulate_to(now, vni, vtep, &pkt.data, output);
                }
                Some((vni, Targets::Flood(peers))) => {
                    // Head-end replication: a copy per VTEP. The list is copied out of the
                    // table first: sending borrows the pipeline mutably.
                    #[allow(clippy::unnecessary_to_owned)]
                    for vtep in peers.to_vec() {
                        self.encapsulate_to(now, vni, vtep, &pkt.data, output);
                    }
                }
                None => {}
            }
        }
    }

    /// `inner` in VXLAN for `vni`, sent toward `vtep`.
    fn encapsulate_to(
        &mut self,
        now: u64,
        vni: u32,
        vtep: Ipv4Addr,
        inner: &[u8],
        output: &mut Vec<Packet>,
    ) {
        let Some(up) = self.topo.uplink else { return };
        let outer = Outer {
            src_mac: up.mac,
            dst_mac: MacAddr::ZERO,
            src_ip: up.address,
            dst_ip: vtep,
            ip_id: self.overlay.next_ip_id(),
        };
        let frame = wire::encapsulate(inner, vni, &outer);
        self.send_outer(now, vtep, frame, output);
    }

    /// Sends one encapsulated frame toward `vtep` on the uplink: to its next hop's MAC, or held
    /// (and the next hop asked by ARP) until it answers.
    fn send_outer(
        &mut self,
        now: u64,
        vtep: Ipv4Addr,
        mut frame: Vec<u8>,
        output: &mut Vec<Packet>,
    ) {
        let Some(up) = self.topo.uplink else { return };
        let on_link = up.subnet.is_some_and(|s| s.contains(&vtep));
        let hop = match (on_link, up.next_hop_mac, up.next_hop) {
            (true, _, _) => vtep,
            (false, Some(mac), _) => return self.send_resolved(up.port, mac, frame, output),
            (false, None, Some(hop)) => hop,
            (false, None, None) => {
                self.counters.bridge.vxlan_unresolved += 1;
                return;
            }
        };
        if let Some(mac) = self.gateway.uplink_neighbor(hop, now) {
            return self.send_resolved(up.port, mac, frame, output);
        }
        frame[..6].fill(0);
        match self.overlay.wait(hop, frame, now) {
            Ok(true) => self.ask_uplink(hop, output),
            Ok(false) => {}
            Err(()) => self.counters.bridge.vxlan_unresolved += 1,
        }
    }

    fn send_resolved(
        &mut self,
        uplink: PortId,
        mac: MacAddr,
        mut frame: Vec<u8>,
        output: &mut Vec<Packet>,
    ) {
        frame[..6].copy_from_slice(&mac.0);
        self.counters.bridge.vxlan_encapsulated += 1;
        self.counters.originate(output, uplink, frame);
    }

    /// An ARP request for `hop` out of the uplink.
    fn ask_uplink(&mut self, hop: Ipv4Addr, output: &mut Vec<Packet>) {
        let Some(up) = self.topo.uplink else { return };
        let req = crate::synth::arp_request(up.mac, up.address, hop);
        self.counters.bridge.arp_requests_sent += 1;
        self.counters.originate(output, up.port, req);
    }

    /// Frames waiting for a next hop: sent once it resolved, dropped after the timeout, the
    /// hop asked again every second meanwhile.
    fn release_waiting(&mut self, now: u64, output: &mut Vec<Packet>) {
        if self.overlay.waiting.is_empty() {
            return;
        }
        let Some(up) = self.topo.uplink else { return };
        let hops: Vec<Ipv4Addr> = self.overlay.waiting.keys().copied().collect();
        for hop in hops {
            if let Some(mac) = self.gateway.uplink_neighbor(hop, now) {
                for frame in self
                    .overlay
                    .waiting
                    .remove(&hop)
                    .map(|w| w.frames)
                    .unwrap_or_default()
                {
                    self.send_resolved(up.port, mac, frame, output);
                }
                continue;
            }
            let Some(w) = self.overlay.waiting.get_mut(&hop) else {
                continue;
            };
            if Overlay::expired(w.since, now) {
                let n = w.frames.len() as u64;
                self.overlay.waiting.remove(&hop);
                self.counters.bridge.vxlan_unresolved += n;
            } else if now.saturating_sub(w.asked) >= NANOS_PER_SEC {
                w.asked = now;
                self.ask_uplink(hop, output);
            }
        }
    }

    /// Replaces the flood list of overlay `network` (the VTEPs of the other hosts that have
    /// endpoints on it); false if it is not an overlay network.
    pub fn set_overlay_peers(&mut self, network: NetworkId, peers: &[Ipv4Addr]) -> bool {
        self.overlay.set_peers(network, peers)
    }

    /// Records that `mac` (with address `ip`, answered by ARP suppression) is an endpoint of
    /// overlay `network` on the host whose VTEP is `vtep`; false if it is not an overlay.
    pub fn set_overlay_endpoint(
        &mut self,
        network: NetworkId,
        mac: MacAddr,
        ip: Option<Ipv4Addr>,
        vtep: Ipv4Addr,
    ) -> bool {
        self.overlay.set_endpoint(network, mac, ip, vtep)
    }

    /// Forgets a remote endpoint of overlay `network`; false if it was not there.
    pub fn remove_overlay_endpoint(&mut self, network: NetworkId, mac: MacAddr) -> bool {
        self.overlay.remove_endpoint(network, mac)
    }

    /// The VNI of `network`, if it is an overlay network.
    pub fn overlay_vni(&self, network: NetworkId) -> Option<u32> {
        self.overlay.vni(network)
    }

    /// Every overlay network's flood list and remote endpoints, for `vswitch overlay`.
    pub fn overlay_rows(&self, now: u64) -> Vec<OverlayRow> {
        self.overlay.rows(now, |id| {
            self.topo
                .networks
                .get(usize::from(id.0))
                .map(|n| n.name.clone())
                .unwrap_or_default()
        })
    }
}
