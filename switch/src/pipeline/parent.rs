//! The pipeline's parent stage (see `crate::vlan`): frames from the uplink into macvlan
//! networks by their 802.1Q tag, and what those networks send to their parent port out of the
//! uplink, tagged again.
//!
//! A frame from the uplink that enters a macvlan network counts `local` on the uplink, and its
//! outcome on the network's parent port, where it enters the pipeline again like any frame.
//! What leaves through a parent port is counted in `tx_*` there and on the uplink.

use super::{Packet, Pipeline};
use crate::config::{ConfigError, Macvlan, NetworkId, PortId, PortKind};
use crate::counters::DropReason;
use crate::vlan::{self, Tag};
use packet::offload::Offload;
use packet::{ETHERTYPE_ARP, MacAddr};

/// Where a frame from the uplink goes.
pub(super) enum FromLan {
    /// To the gateway (to the uplink's MAC, ARP for its address, or no macvlan network's).
    Gateway,
    /// Into the macvlan network of this parent port (its tag, if any, removed first).
    Network(PortId),
    /// Dropped.
    Drop(DropReason),
}

impl Pipeline {
    /// Makes `network` a macvlan network: its parent port (`parent`, or `parent.VLAN`).
    pub(super) fn attach_parent(
        &mut self,
        network: NetworkId,
        m: Macvlan,
    ) -> Result<(), ConfigError> {
        let name = self.topo.networks[usize::from(network.0)].name.clone();
        if self.topo.uplink.is_none() {
            return Err(ConfigError::MacvlanWithoutUplink(name));
        }
        if let Some(other) = self.parents.on_vlan(m.vlan) {
            return Err(ConfigError::DuplicateVlan {
                vlan: m.vlan,
                first: self.topo.networks[usize::from(other.0)].name.clone(),
                second: name,
            });
        }
        let port_name = match m.vlan {
            Some(v) => format!("parent.{v}"),
            None => "parent".to_string(),
        };
        let port = self.add_own_port(&port_name, PortKind::Parent, network)?;
        // The LAN's multicast routers are behind it: it gets every group and the reports, and
        // is never queried (a router port, see `crate::multicast`).
        self.multicast.add_router_port(port, network);
        self.parents.add(network, port, m);
        self.parent_offloads();
        Ok(())
    }

    /// Gives the untagged macvlan network's parent port the uplink's offloads: what is sent to
    /// it leaves through the uplink byte for byte, so a container's super-frame goes out whole
    /// where the uplink takes it (instead of segmented in software). A parent port on a VLAN
    /// keeps none: its frames get a tag on the way out, and the pipeline finishes them first.
    pub(super) fn parent_offloads(&mut self) {
        let Some(up) = self.topo.uplink else { return };
        let Some(caps) = self
            .topo
            .ports
            .get(usize::from(up.port.0))
            .map(|p| p.offloads)
        else {
            return;
        };
        let Some((parent, _)) = self.parents.on_vlan(None).and_then(|n| self.parents.of(n)) else {
            return;
        };
        if let Some(p) = self.topo.ports.get_mut(usize::from(parent.0)) {
            p.offloads = caps;
        }
    }

    /// Removes `network`'s parent port when it is the network's last; whether the network may
    /// go now.
    pub(super) fn detach_parent(&mut self, network: NetworkId) -> bool {
        let Some((port, _)) = self.parents.of(network) else {
            return true;
        };
        if !self.only_port(network, port) {
            return false;
        }
        self.parents.remove(network);
        self.remove_own_port(network, port);
        true
    }

    /// Where `frame` (from the uplink, to `dst`) goes when there are macvlan networks.
    pub(super) fn lan_destination(&self, frame: &[u8], dst: MacAddr) -> FromLan {
        let port_of = |n: NetworkId| self.parents.of(n).map(|(p, _)| p);
        match vlan::tag_of(frame) {
            Tag::Stacked => FromLan::Drop(DropReason::VlanQinq),
            Tag::Vlan { vid, .. } if vid != 0 => {
                match self.parents.on_vlan(Some(vid)).and_then(port_of) {
                    Some(port) => FromLan::Network(port),
                    None => FromLan::Drop(DropReason::VlanUnknown),
                }
            }
            tag => {
                let Some(port) = self.parents.on_vlan(None).and_then(port_of) else {
                    return FromLan::Gateway;
                };
                let Some(up) = self.topo.uplink else {
                    return FromLan::Gateway;
                };
                let arp_for_us = tag == Tag::Untagged
                    && packet::ethertype(frame) == Some(ETHERTYPE_ARP)
                    && frame.get(38..42) == Some(&up.address.octets()[..]);
                if dst == up.mac || arp_for_us {
                    FromLan::Gateway
                } else {
                    FromLan::Network(port)
                }
            }
        }
    }

    /// A frame from the uplink into the macvlan network of `parent`, untagged first.
    pub(super) fn enter_from_lan(
        &mut self,
        now: u64,
        uplink: PortId,
        parent: PortId,
        mut data: Vec<u8>,
        mut offload: Offload,
        output: &mut Vec<Packet>,
    ) {
        if vlan::tag_of(&data) != Tag::Untagged {
            vlan::pop(&mut data);
            offload = offload.retagged(false);
        }
        if let Some(c) = self.counters.port(uplink) {
            c.local += 1;
        }
        self.process_one(
            now,
            Packet::with_offload(parent, data, offload),
            output,
            None,
        );
    }

    /// Whether a frame from container port `ingress` of private-mode macvlan `network` to `dst`
    /// may go only to the LAN: the parent port to send it to, or the drop when it is for
    /// another container of the network.
    pub(super) fn private_egress(
        &self,
        network: NetworkId,
        ingress: PortId,
        dst: MacAddr,
        now: u64,
    ) -> Option<Result<PortId, DropReason>> {
        let parent = self.parents.private(network)?;
        if ingress == parent {
            return None;
        }
        let known = (!dst.is_multicast())
            .then(|| self.bridge.lookup_until(network, dst, now))
            .flatten();
        Some(match known {
            Some((port, _)) if port != parent => Err(DropReason::MacvlanPrivate),
            _ => Ok(parent),
        })
    }

    /// What the batch sent to parent ports since `first`, out of the uplink with the network's
    /// tag (a priority tag's PCP kept).
    pub(super) fn parent_output(&mut self, first: usize, output: &mut [Packet]) {
        let Some(up) = self.topo.uplink else { return };
        for pkt in &mut output[first..] {
            let Some(port) = self.topo.ports.get(usize::from(pkt.port.0)) else {
                continue;
            };
            if port.kind != PortKind::Parent {
                continue;
            }
            let vlan = port
                .network
                .and_then(|n| self.parents.of(n))
                .and_then(|(_, m)| m.vlan);
            if let Some(vid) = vlan {
                match vlan::tag_of(&pkt.data) {
                    Tag::Vlan { vid: 0, pcp } => {
                        vlan::pop(&mut pkt.data);
                        vlan::push(&mut pkt.data, vid, pcp);
                    }
                    _ => vlan::push(&mut pkt.data, vid, 0),
                }
            }
            pkt.port = up.port;
            self.counters.count_tx(up.port, pkt.data.len());
        }
    }
}
