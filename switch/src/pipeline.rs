//! The pipeline: a batch of frames in, frames with egress ports out.
//!
//! Pure and deterministic: no syscalls, no clock (the caller passes `now` in nanoseconds), no
//! threads. pcap replay, the in-memory bench and the real packet loops all drive this same code,
//! so a fixture that passes here describes what the real switch does.
//!
//! [`Pipeline`] owns the topology and the counters, and composes two components over them: the
//! L2 `Bridge` (FDB, checks, forwarding, flooding) and the L3 `Gateway` (conntrack, NAT,
//! neighbors, fragments, published ports, DNS). Each received frame gets one `Frame` context
//! that the stages share; only the pipeline touches the topology's ports and networks (at run
//! time, through the methods below).
//!
//! Stages per frame: ingress checks → learning → (gateway) → (multicast snooping) → L2
//! forwarding or flooding.
//! Every received frame ends in exactly one of: forwarded, local, or dropped with a reason.

use crate::bridge::{Bridge, check_source};
use crate::config::{Config, ConfigError, NetworkId, PortAddress, PortId, PortKind, Topology};
use crate::counters::{BridgeCounters, DropReason, PortCounters};
use crate::fdb::FdbRow;
use crate::frame::{Counters, Frame};
use crate::l3::Gateway;
use crate::l3::dns::DnsTable;
pub use crate::l3::flow_cache::FlowCacheStats;
use crate::multicast::{Destination, Multicast};
use crate::overlay::Overlay;
use crate::overlay::wire;
use crate::runtime::NetworkDef;
use crate::vlan::Parents;
use conntrack::Conntrack;
use packet::offload::{Capabilities, Checksum, Offload};
use packet::{Classified, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, classify, ethertype};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod overlay;
mod own_ports;
mod parent;

/// Conntrack size from which `process` warms the caches for a whole batch first (below it the
/// table and the neighbor caches stay in the core's caches anyway).
const WARM_MIN_ENTRIES: usize = 4096;
/// Frames warmed at a time.
const WARM_CHUNK: usize = crate::l3::WARM_CHUNK;

/// Nanoseconds per second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A frame and the port it came in on or goes out of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Ingress port (input) or egress port (output).
    pub port: PortId,
    /// The Ethernet frame, without FCS.
    pub data: Vec<u8>,
    /// Its offload state: a GSO super-frame, a partial checksum (from and to ports with a
    /// virtio-net header). Output frames carry a state other than plain only to ports whose
    /// [`Capabilities`] accept it; the pipeline finishes or segments the rest.
    pub offload: Offload,
}

impl Packet {
    /// A plain frame (final checksums, no segmentation pending).
    #[inline]
    pub fn new(port: PortId, data: Vec<u8>) -> Packet {
        Packet {
            port,
            data,
            offload: Offload::NONE,
        }
    }

    /// A frame with its offload state.
    #[inline]
    pub fn with_offload(port: PortId, data: Vec<u8>, offload: Offload) -> Packet {
        Packet {
            port,
            data,
            offload,
        }
    }
}

/// Why a port could not be added.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The name is taken.
    #[error("a port named {0:?} already exists: pick another name")]
    Exists(String),
    /// No such network.
    #[error("no such network")]
    NoNetwork,
    /// Every one of the 65,536 port ids is in use.
    #[error("too many ports (65536 attached at once): disconnect some containers")]
    TooMany,
}

/// The switch pipeline for one topology.
#[derive(Debug)]
pub struct Pipeline {
    topo: Topology,
    /// Per-port and bridge-wide counters.
    counters: Counters,
    /// L2: the FDB, frame checks, forwarding and flooding.
    bridge: Bridge,
    /// L3: the gateways, conntrack and NAT.
    gateway: Gateway,
    /// Multicast snooping: group memberships, the querier.
    multicast: Multicast,
    /// Overlay networks: VTEPs, remote endpoints (see `crate::overlay`).
    overlay: Overlay,
    /// Macvlan networks: their parent ports by VLAN (see `crate::vlan`).
    parents: Parents,
    /// Conntrack size from which batches are warmed (see `process_warmed`).
    warm_min_entries: usize,
}

/// Everything observable about a pipeline at one instant, for `--json` output and replay summaries.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Per-port counters of the active ports, by port name, in id order.
    pub ports: Vec<PortSnapshot>,
    /// Bridge-wide events.
    pub bridge: BridgeCounters,
    /// Live FDB entries.
    pub fdb: Vec<FdbRowNamed>,
    /// Conntrack counters, both address families together.
    pub conntrack_counters: conntrack::Counters,
    /// Tracked IPv4 connections, in table order.
    pub conntrack: Vec<conntrack::Entry>,
    /// Tracked IPv6 connections, in table order.
    pub conntrack6: Vec<conntrack::Entry<Ipv6Addr>>,
    /// Multicast group memberships learned by snooping, by network and group.
    pub groups: Vec<GroupRowNamed>,
}

/// A multicast group's member ports, with names instead of ids.
#[derive(Debug, Serialize)]
pub struct GroupRowNamed {
    /// Network name.
    pub network: String,
    /// Group address (IPv4 or IPv6).
    pub group: String,
    /// Member port names.
    pub ports: Vec<String>,
}

/// One port's counters with its name.
#[derive(Debug, Serialize)]
pub struct PortSnapshot {
    /// Port name.
    pub name: String,
    /// Network name.
    pub network: String,
    /// Counters.
    #[serde(flatten)]
    pub counters: PortCounters,
}

/// An FDB row with names instead of ids.
#[derive(Debug, Serialize)]
pub struct FdbRowNamed {
    /// Network name.
    pub network: String,
    /// MAC address.
    pub mac: String,
    /// Port name.
    pub port: String,
    /// The network's 802.1Q VLAN on the uplink (macvlan networks), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Seconds since last seen.
    pub age_secs: f64,
}

impl Pipeline {
    /// Builds a pipeline from a parsed config.
    pub fn new(config: &Config) -> Result<Pipeline, ConfigError> {
        let topo = Topology::new(config)?;
        let aging = topo.bridge.aging_secs.saturating_mul(NANOS_PER_SEC);
        let mut p = Pipeline {
            counters: Counters::new(topo.ports.len()),
            bridge: Bridge::new(&topo),
            gateway: Gateway::new(&topo),
            multicast: Multicast::new(&topo),
            overlay: Overlay::new(aging),
            parents: Parents::default(),
            warm_min_entries: WARM_MIN_ENTRIES,
            topo,
        };
        let lans: Vec<_> = (p.topo.networks.iter().enumerate())
            .filter_map(|(i, n)| n.macvlan.map(|m| (NetworkId(i as u16), m)))
            .collect();
        for (id, m) in lans {
            p.attach_parent(id, m)?;
        }
        for n in &config.networks {
            let id = p.topo.network_by_name(&n.name);
            match (n.vni, id) {
                (Some(vni), Some(id)) => p.attach_overlay(id, vni, &n.vtep_peers)?,
                (None, _) if !n.vtep_peers.is_empty() => {
                    return Err(ConfigError::PeersWithoutVni(n.name.clone()));
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// The topology this pipeline runs.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Counters of one port.
    pub fn port_counters(&self, port: PortId) -> Option<&PortCounters> {
        self.counters.ports.get(usize::from(port.0))
    }

    /// Bridge-wide counters.
    pub fn bridge_counters(&self) -> &BridgeCounters {
        &self.counters.bridge
    }

    /// Live FDB entries.
    pub fn fdb_rows(&self, now: u64) -> Vec<FdbRow> {
        self.bridge.rows(now)
    }

    /// Processes a batch: drains `input`, appends what leaves to `output`.
    pub fn process(&mut self, now: u64, input: &mut Vec<Packet>, output: &mut Vec<Packet>) {
        let first = output.len();
        self.process_stages(now, input, output);
        if self.overlay.is_active() {
            self.encapsulate_output(now, first, output);
        }
        if self.parents.is_active() {
            self.parent_output(first, output);
        }
    }

    /// Every stage but the overlay's, for one batch.
    #[inline(always)]
    fn process_stages(&mut self, now: u64, input: &mut Vec<Packet>, output: &mut Vec<Packet>) {
        self.counters.bridge.fdb_aged += self.bridge.sweep(now) as u64;
        self.gateway.housekeeping(now, &mut self.counters);
        self.multicast
            .housekeeping(now, &self.topo, &mut self.counters, output);
        if self.gateway.conntrack().len() < self.warm_min_entries {
            for pkt in input.drain(..) {
                self.process_one(now, pkt, output, None);
            }
            return;
        }
        self.process_warmed(now, input, output);
    }

    /// `process` for a large table: each chunk of frames is warmed (see `Gateway::warm`) just
    /// before it is processed, so a large batch does not evict what it warmed before using it.
    /// Gateway-bound frames are classified once, for the warm-up, and the result goes with
    /// them to the gateway.
    #[inline(never)]
    fn process_warmed(&mut self, now: u64, input: &mut Vec<Packet>, output: &mut Vec<Packet>) {
        let mut frames = input.drain(..);
        loop {
            let mut parsed = [None; WARM_CHUNK];
            let n = {
                let chunk = &frames.as_slice()[..frames.len().min(WARM_CHUNK)];
                for (pkt, c) in chunk.iter().zip(&mut parsed) {
                    if self.gateway_bound(pkt) {
                        *c = classify(&pkt.data).ok();
                    }
                }
                self.gateway.warm(&self.topo, now, chunk, &parsed);
                chunk.len()
            };
            if n == 0 {
                return;
            }
            for c in &parsed[..n] {
                if let Some(pkt) = frames.next() {
                    self.process_one(now, pkt, output, *c);
                }
            }
        }
    }

    /// Whether the gateway will classify this frame: everything from the uplink, IPv4 to a
    /// network's gateway MAC.
    #[inline]
    fn gateway_bound(&self, pkt: &Packet) -> bool {
        let Some(port) = self.topo.ports.get(usize::from(pkt.port.0)) else {
            return false;
        };
        let Some(net) = port.network else {
            return true;
        };
        self.topo
            .networks
            .get(usize::from(net.0))
            .and_then(|n| n.gateway)
            .is_some_and(|(_, gw_mac)| {
                packet::dst_mac(&pkt.data) == Some(gw_mac)
                    && matches!(ethertype(&pkt.data), Some(ETHERTYPE_IPV4 | ETHERTYPE_IPV6))
            })
    }

    /// Adds a port to `network` at run time (a container was connected); `address` is what
    /// the port was given, enforced when the network has anti-spoofing on. The id is the lowest
    /// a removed port left free, if any, and starts clean: zero counters, no FDB entries, no
    /// group memberships, no cached flows.
    pub fn add_port(
        &mut self,
        name: &str,
        kind: PortKind,
        network: NetworkId,
        address: PortAddress,
    ) -> Result<PortId, PortError> {
        let id = self.topo.add_port(name, kind, network, address)?;
        let slot = usize::from(id.0);
        match self.counters.ports.get_mut(slot) {
            Some(c) => *c = PortCounters::default(),
            None => self.counters.ports.push(PortCounters::default()),
        }
        self.bridge.add_port(id);
        self.multicast.add_port(id, network, true);
        self.gateway.invalidate_flows();
        Ok(id)
    }

    /// Removes a container port at run time: frames naming it are no longer accepted, its FDB
    /// entries, multicast memberships and frames waiting for ARP go, and its id is free for the
    /// next port added. False if it is not an active container port (the uplink stays).
    pub fn remove_port(&mut self, id: PortId) -> bool {
        let Some(network) = self.topo.remove_port(id) else {
            return false;
        };
        self.multicast.remove_port(id, network);
        self.bridge.flush_port(id);
        // Its waiting frames would be counted on (or, once ARP resolves, sent for) whichever
        // port gets the id next.
        self.gateway.forget_port(id);
        self.gateway.invalidate_flows();
        true
    }

    /// Declares what `port`'s driver can send besides plain frames (its virtio-net header's
    /// features); frames it cannot take are segmented and finished in software on their way
    /// out. False if there is no such port.
    pub fn set_port_offloads(&mut self, port: PortId, offloads: Capabilities) -> bool {
        match self.topo.ports.get_mut(usize::from(port.0)) {
            Some(p) => {
                p.offloads = offloads;
                self.gateway.invalidate_flows();
                if self.topo.uplink.is_some_and(|u| u.port == port) {
                    self.parent_offloads();
                }
                true
            }
            None => false,
        }
    }

    /// Accounts what a port's driver saw outside the pipeline: frames the kernel dropped before
    /// they were read, and frames the device refused on transmit.
    pub fn count_port_io(&mut self, port: PortId, rx_kernel_drops: u64, tx_errors: u64) {
        if let Some(c) = self.counters.port(port) {
            c.rx_kernel_drops += rx_kernel_drops;
            c.tx_errors += tx_errors;
        }
    }

    /// Counts `n` frames a port's driver refused before they reached the pipeline, for
    /// `reason` (e.g. a virtio-net header that does not match its frame).
    pub fn count_port_drops(&mut self, port: PortId, reason: DropReason, n: u64) {
        if let Some(c) = self.counters.port(port) {
            for _ in 0..n {
                c.drops.add(reason);
            }
        }
    }

    /// Starts or stops recording conntrack events (`vswitch events`); off by default.
    pub fn set_conntrack_events(&mut self, on: bool) {
        self.gateway.set_conntrack_events(on);
    }

    /// Hands the conntrack events recorded since the last call to `v4` and `v6`, oldest first;
    /// how many were lost because too many were pending.
    pub fn drain_conntrack_events(
        &mut self,
        v4: impl FnMut(conntrack::Event<Ipv4Addr>),
        v6: impl FnMut(conntrack::Event<Ipv6Addr>),
    ) -> u64 {
        self.gateway.drain_conntrack_events(v4, v6)
    }

    /// Forgets every tracked connection (`vswitch conntrack flush`).
    pub fn flush_conntrack(&mut self) {
        self.gateway.flush_conntrack();
    }

    /// Forgets the tracked flows and NAT mappings of `addr`, a container that went away, so
    /// the next holder of the address starts clean; how many flows went.
    pub fn forget_address(&mut self, addr: Ipv4Addr) -> usize {
        self.gateway.forget_address(addr)
    }

    /// Forgets the tracked IPv6 flows of `addr`; how many went.
    pub fn forget_address6(&mut self, addr: Ipv6Addr) -> usize {
        self.gateway.forget_address6(addr)
    }

    /// The gateway, mutably (restoring saved state).
    pub(crate) fn gateway_mut(&mut self) -> &mut Gateway {
        &mut self.gateway
    }

    /// Learns a saved FDB entry back; false at the port's MAC cap.
    pub(crate) fn restore_fdb(
        &mut self,
        network: NetworkId,
        mac: packet::MacAddr,
        port: PortId,
        last_seen: u64,
    ) -> bool {
        self.bridge.restore(network, mac, port, last_seen)
    }

    /// The conntrack table (for dumps).
    pub fn conntrack(&self) -> &Conntrack {
        self.gateway.conntrack()
    }

    /// The IPv6 conntrack table (for dumps).
    pub fn conntrack6(&self) -> &Conntrack<Ipv6Addr> {
        self.gateway.conntrack6()
    }

    /// Adds a network; returns its id, or the existing one if a network of that name with the
    /// same subnet is already there (so replaying the control plane's state is idempotent).
    pub fn add_network(&mut self, def: &NetworkDef) -> Result<NetworkId, ConfigError> {
        self.gateway.invalidate_flows();
        let id = self.topo.add_network(def)?;
        if let Some(m) = def.macvlan
            && self.parents.of(id).is_none()
            && let Err(e) = self.attach_parent(id, m)
        {
            self.topo.remove_network(&def.name);
            return Err(e);
        }
        if let Some(vni) = def.vni
            && self.overlay.port(id).is_none()
            && let Err(e) = self.attach_overlay(id, vni, &[])
        {
            self.topo.remove_network(&def.name);
            return Err(e);
        }
        Ok(id)
    }

    /// Removes a network that has no ports left; false if it has ports or does not exist.
    pub fn remove_network(&mut self, name: &str) -> bool {
        self.gateway.invalidate_flows();
        match self.topo.network_by_name(name) {
            Some(id) if self.detach_overlay(id) && self.detach_parent(id) => {
                self.topo.remove_network(name)
            }
            _ => false,
        }
    }

    /// Publishes `host_port` (IP protocol 6 or 17) on the uplink address to a container.
    pub fn publish(
        &mut self,
        protocol: u8,
        host_port: u16,
        container_ip: Ipv4Addr,
        container_port: u16,
    ) {
        self.gateway
            .publish(protocol, host_port, (container_ip, container_port));
    }

    /// Removes a published port; new connections to it are refused from now on, existing ones
    /// keep their conntrack entries until they end.
    pub fn unpublish(&mut self, protocol: u8, host_port: u16) -> bool {
        self.gateway.unpublish(protocol, host_port)
    }

    /// Replaces the DNS table of `network` (the control plane builds them whole at start-up
    /// and network creation). A network without a table has no embedded DNS.
    pub fn set_dns_table(&mut self, network: NetworkId, table: Option<DnsTable>) {
        self.gateway.set_dns_table(network, table);
    }

    /// Answers `name` (without case) with `ip` too on `network` (a container connected). False,
    /// and nothing done, if the network has no embedded DNS (the default bridge).
    pub fn dns_insert(&mut self, network: NetworkId, name: &str, ip: impl Into<IpAddr>) -> bool {
        match self.gateway.dns_table_mut(network) {
            Some(t) => {
                t.insert(name, ip);
                true
            }
            None => false,
        }
    }

    /// Stops answering `name` with `ip` on `network` (a container disconnected); false if it
    /// was not there.
    pub fn dns_remove(&mut self, network: NetworkId, name: &str, ip: impl Into<IpAddr>) -> bool {
        self.gateway
            .dns_table_mut(network)
            .is_some_and(|t| t.remove(name, ip))
    }

    /// Resolvers that forwarded queries go to (the first one is used).
    pub fn set_dns_upstream(&mut self, resolvers: Vec<IpAddr>) {
        self.topo.dns_upstream = crate::config::v4_only(&resolvers);
        self.topo.dns_upstream6 = crate::config::v6_only(&resolvers);
        self.gateway.invalidate_flows();
    }

    /// Turns the NAT flow cache on (the default) or off. Off, every routed packet takes the
    /// slow path: what comes out is the same, only slower (the property tests compare both).
    pub fn set_flow_cache(&mut self, on: bool) {
        self.gateway.set_flow_cache(on);
    }

    /// Warms the caches for each batch (one classification pass ahead of processing) from
    /// `entries` tracked connections on (default 4096; below it everything stays in the CPU
    /// caches anyway). What comes out is the same either way.
    pub fn set_warm_threshold(&mut self, entries: usize) {
        self.warm_min_entries = entries;
    }

    /// Makes this pipeline its networks' IGMP/MLD querier (the default) or not. Run several
    /// pipelines over the same ports (the daemon's workers) and exactly one must query: every
    /// pipeline learns the reports, which go to all of them (`affinity::Owner::All`).
    pub fn set_querier(&mut self, on: bool) {
        self.multicast.set_querier(on);
    }

    /// The NAT flow cache's hit, miss and fill counts.
    pub fn flow_cache_stats(&self) -> FlowCacheStats {
        self.gateway.flow_cache_stats()
    }

    #[inline(always)]
    /// One frame's journey; `classified` is its classification when the warm-up made it.
    fn process_one(
        &mut self,
        now: u64,
        pkt: Packet,
        output: &mut Vec<Packet>,
        classified: Option<Classified>,
    ) {
        let ingress = pkt.port;
        let Some(port) = self
            .topo
            .ports
            .get(usize::from(ingress.0))
            .filter(|p| p.active)
        else {
            self.counters.bridge.unknown_port += 1;
            return;
        };
        let network = port.network;
        let address = port.address;
        let kind = port.kind;
        let len = pkt.data.len();
        let counters = &mut self.counters.ports[usize::from(ingress.0)];
        counters.rx_frames += 1;
        counters.rx_bytes += len as u64;
        let offload = pkt.offload;
        // A super-frame is as long on the wire as its headers and one segment.
        let wire_len = if offload == Offload::NONE {
            len
        } else {
            if offload.check(&pkt.data).is_err() {
                return self.counters.drop(ingress, DropReason::BadOffload);
            }
            if offload.gso != packet::offload::Gso::None {
                self.counters.ports[usize::from(ingress.0)].rx_gso += 1;
            }
            offload.wire_len(&pkt.data)
        };
        let (src, dst) = match self.bridge.check(&pkt.data, wire_len) {
            Ok(macs) => macs,
            Err(reason) => return self.counters.drop(ingress, reason),
        };
        if network.is_none() && self.parents.is_active() {
            match self.lan_destination(&pkt.data, dst) {
                parent::FromLan::Gateway => {}
                parent::FromLan::Drop(reason) => return self.counters.drop(ingress, reason),
                parent::FromLan::Network(port) => {
                    return self.enter_from_lan(now, ingress, port, pkt.data, offload, output);
                }
            }
        }
        if network.is_none()
            && self.overlay.is_active()
            && let Some(up) = self.topo.uplink
            && (dst == up.mac || dst.is_broadcast())
            && let Some(vxlan) = wire::decapsulate(
                &pkt.data,
                up.address,
                offload.checksum == Checksum::Complete,
            )
        {
            if offload.gso != packet::offload::Gso::None {
                // A UDP super-frame of VXLAN datagrams: no sender makes one (tunnel GSO has
                // no virtio-net header type), so it is not taken apart here.
                return self.counters.drop(ingress, DropReason::VxlanMalformed);
            }
            return match vxlan {
                Ok(d) => self.decapsulate(now, ingress, pkt.data, d, output),
                Err(_) => self.counters.drop(ingress, DropReason::VxlanMalformed),
            };
        }
        let topo = &self.topo;
        let Some(network) = network else {
            // Only the uplink has no network (the topology checks that).
            let mut f = Frame::new(
                now,
                ingress,
                None,
                topo,
                &self.bridge,
                &mut self.counters,
                output,
            )
            .carrying(offload);
            return self.gateway.uplink_ingress(&mut f, pkt.data, classified);
        };
        let net = &topo.networks[usize::from(network.0)];
        let mut classified = classified;
        if address != PortAddress::default() && net.anti_spoofing {
            match check_source(&address, src, &pkt.data) {
                // Before learning: a spoofed MAC must not move another container's FDB entry.
                Err(reason) => return self.counters.drop(ingress, reason),
                // The IPv6 check classified the frame: the gateway need not do it again.
                Ok(c) => classified = classified.or(c),
            }
        }
        // The overlay port's sources are learned with their VTEPs (`crate::overlay`), not in the
        // FDB, whose per-port cap is for one container's MACs.
        let overlay_egress = match net.vni {
            Some(_) => self.overlay_egress(network, ingress, dst, now),
            None => None,
        };
        let private_egress = match net.macvlan {
            Some(_) if kind != PortKind::Parent && crate::vlan::tagged_with_vlan(&pkt.data) => {
                // An access port: a frame tagged for a VLAN would leave the trunk on that one.
                return self.counters.drop(ingress, DropReason::VlanOnAccessPort);
            }
            Some(_) => self.private_egress(network, ingress, dst, now),
            None => None,
        };
        if kind != PortKind::Overlay {
            self.bridge
                .learn(now, network, src, ingress, &mut self.counters.bridge);
        }
        let mut f = Frame::new(
            now,
            ingress,
            Some(network),
            topo,
            &self.bridge,
            &mut self.counters,
            output,
        )
        .carrying(offload);
        let mut data = pkt.data;
        if let Some((_, gw_mac)) = net.gateway {
            let ty = ethertype(&data);
            if dst == gw_mac && ty == Some(ETHERTYPE_IPV4) {
                return self.gateway.ipv4(&mut f, network, data, classified);
            }
            if ty == Some(ETHERTYPE_IPV6)
                && net.v6.is_some()
                && (dst == gw_mac || dst.is_multicast())
            {
                match self.gateway.ipv6(&mut f, network, data, classified) {
                    Some(back) => data = back,
                    None => return,
                }
            } else if ty == Some(ETHERTYPE_ARP) && (dst == gw_mac || dst.is_broadcast()) {
                match self.gateway.arp(&mut f, network, data) {
                    Some(back) => data = back,
                    None => return,
                }
                if net.vni.is_some()
                    && kind != PortKind::Overlay
                    && let Some(reply) = self.overlay.arp_reply(network, &data)
                {
                    // ARP suppression: a remote endpoint's address, answered here.
                    f.local();
                    f.events().arp_suppressed += 1;
                    return f.reply(reply);
                }
            }
        }
        if let Some(port) = overlay_egress
            && net.icc
        {
            f.forwarded();
            return f.emit(port, data);
        }
        let group = if dst.is_multicast() {
            match self.multicast.snoop(&mut f, network, &data) {
                Destination::Consumed => return,
                Destination::Everyone => None,
                Destination::Listeners(group) => Some(group),
            }
        } else {
            None
        };
        match private_egress {
            // Private mode: a container reaches the LAN only, never another container (after
            // snooping, which learns its reports and sends them to the LAN itself).
            Some(Ok(parent)) => {
                f.forwarded();
                return f.emit(parent, data);
            }
            Some(Err(reason)) => return f.drop(reason),
            None => {}
        }
        let listeners = group.map(|g| self.multicast.listeners(network, g, now));
        self.bridge.forward(&mut f, network, dst, data, listeners);
    }

    /// Counters, FDB and names, for JSON output.
    pub fn snapshot(&self, now: u64) -> Snapshot {
        let name = |p: PortId| {
            self.topo
                .port(p)
                .map(|p| p.name.clone())
                .unwrap_or_default()
        };
        let net_name = |n: NetworkId| {
            self.topo
                .networks
                .get(usize::from(n.0))
                .map(|n| n.name.clone())
                .unwrap_or_default()
        };
        Snapshot {
            // Removed ports are gone from the view: their slots wait for reuse.
            ports: self
                .topo
                .ports
                .iter()
                .zip(&self.counters.ports)
                .filter(|(p, _)| p.active)
                .map(|(p, c)| PortSnapshot {
                    name: p.name.clone(),
                    network: p
                        .network
                        .map(net_name)
                        .unwrap_or_else(|| "(uplink)".to_string()),
                    counters: *c,
                })
                .collect(),
            bridge: self.counters.bridge,
            fdb: self
                .bridge
                .rows(now)
                .into_iter()
                .map(|r| FdbRowNamed {
                    network: net_name(r.network),
                    mac: r.mac,
                    port: name(r.port),
                    vlan: self
                        .topo
                        .networks
                        .get(usize::from(r.network.0))
                        .and_then(|n| n.macvlan)
                        .and_then(|m| m.vlan),
                    age_secs: r.age_ns as f64 / NANOS_PER_SEC as f64,
                })
                .collect(),
            conntrack_counters: {
                let mut c = self.gateway.conntrack().counters();
                c.merge(&self.gateway.conntrack6().counters());
                c
            },
            conntrack: self.gateway.conntrack().iter().map(|(_, e)| e).collect(),
            conntrack6: self.gateway.conntrack6().iter().map(|(_, e)| e).collect(),
            groups: self
                .multicast
                .rows(now)
                .into_iter()
                .map(|r| GroupRowNamed {
                    network: net_name(r.network),
                    group: r.group.to_string(),
                    ports: r.ports.into_iter().map(name).collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
