//! The pipeline: a batch of frames in, frames with egress ports out.
//!
//! Pure and deterministic: no syscalls, no clock (the caller passes `now` in nanoseconds), no
//! threads. pcap replay, the in-memory bench and the real packet loops all drive this same code,
//! so a fixture that passes here describes what the real switch does.
//!
//! Stages per frame: ingress checks → learning → (gateway) → L2 forwarding or flooding.
//! Every received frame ends in exactly one of: forwarded, local, or dropped with a reason.

use crate::config::{
    Config, ConfigError, NetworkId, Port, PortAddress, PortId, PortKind, Topology,
};
use crate::counters::{BridgeCounters, DropReason, PortCounters};
use crate::fdb::{Fdb, FdbRow, Learned};
use crate::fragments::Fragments;
use crate::neighbor::{Neighbors, Side};
use conntrack::{Conntrack, Direction, Proto, Tuple};
use packet::{
    ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_VLAN, MIN_FRAME_LEN, MacAddr, dst_mac,
    ethertype, src_mac,
};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::net::Ipv4Addr;

/// Conntrack size from which `process` warms the caches for a whole batch first (below it the
/// table and the neighbor caches stay in the core's caches anyway).
const WARM_MIN_ENTRIES: usize = 4096;
/// Frames warmed at a time.
const WARM_CHUNK: usize = 32;

/// Nanoseconds per second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A frame and the port it came in on or goes out of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Ingress port (input) or egress port (output).
    pub port: PortId,
    /// The Ethernet frame, without FCS.
    pub data: Vec<u8>,
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
    /// 65535 ports were used.
    #[error("too many ports (65535 ever created): restart the daemon")]
    TooMany,
}

/// The switch pipeline for one topology.
#[derive(Debug)]
pub struct Pipeline {
    pub(crate) topo: Topology,
    pub(crate) fdb: Fdb,
    pub(crate) ports: Vec<PortCounters>,
    pub(crate) bridge: BridgeCounters,
    max_frame: usize,
    /// Connection tracking (and so NAT state) of routed traffic.
    pub(crate) ct: Conntrack,
    /// ARP caches and packets waiting for ARP.
    pub(crate) neighbors: Neighbors,
    /// Published ports: (IP protocol, host port) → (container address, container port).
    pub(crate) published: FxHashMap<(u8, u16), (Ipv4Addr, u16)>,
    /// Clock of the batch being processed.
    pub(crate) now: u64,
    /// Translations of fragmented datagrams, for their later fragments.
    pub(crate) fragments: Fragments,
    /// Endpoint-independent UDP mappings (used when the topology asks for them).
    pub(crate) eim: nat::EimTable,
    /// Embedded DNS: container names per network that serves DNS.
    pub(crate) dns: FxHashMap<NetworkId, crate::dns_gateway::DnsTable>,
}

/// Everything observable about a pipeline at one instant, for `--json` output and replay summaries.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Per-port counters, by port name, in topology order.
    pub ports: Vec<PortSnapshot>,
    /// Bridge-wide events.
    pub bridge: BridgeCounters,
    /// Live FDB entries.
    pub fdb: Vec<FdbRowNamed>,
    /// Conntrack counters.
    pub conntrack_counters: conntrack::Counters,
    /// Tracked connections, in table order.
    pub conntrack: Vec<conntrack::Entry>,
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
    /// Seconds since last seen.
    pub age_secs: f64,
}

impl Pipeline {
    /// Builds a pipeline from a parsed config.
    pub fn new(config: &Config) -> Result<Pipeline, ConfigError> {
        let topo = Topology::new(config)?;
        let aging = topo.bridge.aging_secs.saturating_mul(NANOS_PER_SEC);
        let fdb = Fdb::new(topo.ports.len(), aging, topo.bridge.max_macs_per_port);
        // One VLAN tag may ride on an MTU-sized payload.
        let max_frame = usize::from(topo.bridge.mtu) + ETH_HEADER_LEN + 4;
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
        Ok(Pipeline {
            ports: vec![PortCounters::default(); topo.ports.len()],
            ct: Conntrack::new(topo.conntrack),
            neighbors: Neighbors::with_limits(
                topo.limits.arp_queue_per_address as usize,
                topo.limits.arp_queue_total as usize,
            ),
            topo,
            fdb,
            bridge: BridgeCounters::default(),
            max_frame,
            published,
            now: 0,
            fragments: Fragments::default(),
            // RFC 4787 REQ-5: a mapping lives at least 2 minutes; 5 is recommended.
            eim: nat::EimTable::new(300 * NANOS_PER_SEC),
            dns: FxHashMap::default(),
        })
    }

    /// The topology this pipeline runs.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Counters of one port.
    pub fn port_counters(&self, port: PortId) -> Option<&PortCounters> {
        self.ports.get(usize::from(port.0))
    }

    /// Bridge-wide counters.
    pub fn bridge_counters(&self) -> &BridgeCounters {
        &self.bridge
    }

    /// Live FDB entries.
    pub fn fdb_rows(&self, now: u64) -> Vec<FdbRow> {
        self.fdb.rows(now)
    }

    /// Processes a batch: drains `input`, appends what leaves to `output`.
    pub fn process(&mut self, now: u64, input: &mut Vec<Packet>, output: &mut Vec<Packet>) {
        self.now = now;
        self.bridge.fdb_aged += self.fdb.sweep(now) as u64;
        self.gateway_housekeeping(now);
        if self.ct.len() < WARM_MIN_ENTRIES {
            for pkt in input.drain(..) {
                self.process_one(now, pkt, output);
            }
            return;
        }
        self.process_warmed(now, input, output);
    }

    /// `process` for a large table: each chunk of frames is warmed (see `warm`) just before it
    /// is processed, so a large batch does not evict what it warmed before using it.
    #[inline(never)]
    fn process_warmed(&mut self, now: u64, input: &mut Vec<Packet>, output: &mut Vec<Packet>) {
        let mut frames = input.drain(..);
        let mut warmed = 0;
        loop {
            if warmed == 0 {
                let rest = frames.as_slice();
                self.warm(now, &rest[..rest.len().min(WARM_CHUNK)]);
                warmed = WARM_CHUNK;
            }
            let Some(pkt) = frames.next() else {
                break;
            };
            warmed = warmed.saturating_sub(1);
            self.process_one(now, pkt, output);
        }
    }

    /// Reads, for every frame of the batch, the conntrack entry and the neighbor entries its
    /// processing will need, without changing anything. The probes are independent of each
    /// other and each pass is a short loop, so the CPU overlaps their cache misses across frames
    /// instead of taking them one frame at a time (a software stand-in for a prefetch stage).
    /// Purely a performance hint: a frame this cheap parser misreads only warms the wrong lines.
    #[inline(never)]
    fn warm(&self, now: u64, input: &[Packet]) {
        const CHUNK: usize = WARM_CHUNK;
        let mut sink = 0u64;
        for chunk in input.chunks(CHUNK) {
            let mut keys = [(
                Tuple::new(
                    Proto::Udp,
                    Ipv4Addr::UNSPECIFIED,
                    0,
                    Ipv4Addr::UNSPECIFIED,
                    0,
                ),
                None,
            ); CHUNK];
            let mut n = 0;
            for pkt in chunk {
                if let Some(k) = self.warm_key(pkt) {
                    keys[n] = k;
                    n += 1;
                }
            }
            let keys = &keys[..n];
            // Gleaning looks the sender up on its network.
            for (k, net) in keys {
                if let Some(net) = net {
                    sink += u64::from(
                        self.neighbors
                            .lookup(Side::Network(*net), k.src, now)
                            .is_some(),
                    );
                }
            }
            let mut hits = [None; CHUNK];
            for ((k, _), hit) in keys.iter().zip(&mut hits) {
                *hit = self.ct.peek(k);
            }
            // A reply toward a container: its MAC is looked up on the way out.
            for (e, dir) in hits.iter().flatten() {
                sink = sink.wrapping_add(e.expires_at);
                if *dir == Direction::Reply
                    && let Ok(net) = u16::try_from(e.mark)
                {
                    sink += u64::from(
                        self.neighbors
                            .lookup(Side::Network(net), e.original.src, now)
                            .is_some(),
                    );
                }
            }
        }
        std::hint::black_box(sink);
    }

    /// The conntrack key of an IPv4 TCP/UDP/ICMP frame (not a later fragment), and the network
    /// it enters from.
    fn warm_key(&self, pkt: &Packet) -> Option<(Tuple, Option<u16>)> {
        let d = pkt.data.as_slice();
        let h = d.get(..ETH_HEADER_LEN + 20)?;
        if h[12..14] != [0x08, 0x00] || (h[20] & 0x1f) | h[21] != 0 {
            return None;
        }
        let proto = Proto::from_number(h[23])?;
        let src = Ipv4Addr::new(h[26], h[27], h[28], h[29]);
        let dst = Ipv4Addr::new(h[30], h[31], h[32], h[33]);
        let l4 = ETH_HEADER_LEN + usize::from(h[14] & 0x0f) * 4;
        let t = d.get(l4..l4 + 8)?;
        let (src_port, dst_port) = match proto {
            Proto::Icmp => {
                let id = u16::from_be_bytes([t[4], t[5]]);
                (id, id)
            }
            _ => (
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
            ),
        };
        let network = self.topo.ports.get(usize::from(pkt.port.0))?.network;
        Some((
            Tuple::new(proto, src, src_port, dst, dst_port),
            network.map(|n| n.0),
        ))
    }

    /// Adds a port to `network` at run time (a container was connected); `address` is what
    /// the port was given, enforced when the network has anti-spoofing on.
    pub fn add_port(
        &mut self,
        name: &str,
        kind: PortKind,
        network: NetworkId,
        address: PortAddress,
    ) -> Result<PortId, PortError> {
        if self.topo.port_by_name(name).is_some() {
            return Err(PortError::Exists(name.to_string()));
        }
        let net = self
            .topo
            .networks
            .get_mut(usize::from(network.0))
            .ok_or(PortError::NoNetwork)?;
        let id = PortId(u16::try_from(self.topo.ports.len()).map_err(|_| PortError::TooMany)?);
        net.ports.push(id);
        self.topo.ports.push(Port {
            name: name.to_string(),
            kind,
            network: Some(network),
            active: true,
            address,
        });
        self.ports.push(PortCounters::default());
        self.fdb.add_port();
        Ok(id)
    }

    /// Removes a port at run time: frames naming it are no longer accepted, its FDB entries go.
    pub fn remove_port(&mut self, id: PortId) -> bool {
        let Some(port) = self.topo.ports.get_mut(usize::from(id.0)) else {
            return false;
        };
        if !port.active {
            return false;
        }
        port.active = false;
        if let Some(n) = port
            .network
            .and_then(|n| self.topo.networks.get_mut(usize::from(n.0)))
        {
            n.ports.retain(|&p| p != id);
        }
        self.fdb.flush_port(id);
        true
    }

    /// Accounts what a port's driver saw outside the pipeline: frames the kernel dropped before
    /// they were read, and frames the device refused on transmit.
    pub fn count_port_io(&mut self, port: PortId, rx_kernel_drops: u64, tx_errors: u64) {
        if let Some(c) = self.ports.get_mut(usize::from(port.0)) {
            c.rx_kernel_drops += rx_kernel_drops;
            c.tx_errors += tx_errors;
        }
    }

    /// Forgets every tracked connection (`vswitch conntrack flush`).
    pub fn flush_conntrack(&mut self) {
        self.ct.flush();
    }

    /// The conntrack table (for dumps).
    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    pub(crate) fn drop(&mut self, port: PortId, reason: DropReason) {
        if let Some(c) = self.ports.get_mut(usize::from(port.0)) {
            c.drops.add(reason);
        }
    }

    #[inline(always)]
    fn process_one(&mut self, now: u64, pkt: Packet, output: &mut Vec<Packet>) {
        let ingress = pkt.port;
        let Some(port) = self
            .topo
            .ports
            .get(usize::from(ingress.0))
            .filter(|p| p.active)
        else {
            self.bridge.unknown_port += 1;
            return;
        };
        let network = port.network;
        let address = port.address;
        let len = pkt.data.len();
        let counters = &mut self.ports[usize::from(ingress.0)];
        counters.rx_frames += 1;
        counters.rx_bytes += len as u64;
        if len < MIN_FRAME_LEN {
            return self.drop(ingress, DropReason::Runt);
        }
        if len > self.max_frame {
            return self.drop(ingress, DropReason::Oversize);
        }
        let (Some(src), Some(dst)) = (src_mac(&pkt.data), dst_mac(&pkt.data)) else {
            return self.drop(ingress, DropReason::Runt);
        };
        if src.is_multicast() || src.is_zero() {
            return self.drop(ingress, DropReason::InvalidSrcMac);
        }
        let Some(network) = network else {
            // Only the uplink has no network (the topology checks that).
            return self.uplink_ingress(now, ingress, pkt.data, output);
        };
        if address != PortAddress::default()
            && self.topo.networks[usize::from(network.0)].anti_spoofing
            && let Err(reason) = check_source(&address, src, &pkt.data)
        {
            // Before learning: a spoofed MAC must not move another container's FDB entry.
            return self.drop(ingress, reason);
        }
        match self.fdb.learn(network, src, ingress, now) {
            Learned::New => self.bridge.fdb_learned += 1,
            Learned::Moved { .. } => self.bridge.fdb_moved += 1,
            Learned::CapReached => self.bridge.fdb_cap_reached += 1,
            Learned::Refreshed => {}
        }
        let net = &self.topo.networks[usize::from(network.0)];
        let mut data = pkt.data;
        if let Some((_, gw_mac)) = net.gateway {
            let ty = ethertype(&data);
            if dst == gw_mac && ty == Some(ETHERTYPE_IPV4) {
                return self.gateway_ipv4(now, ingress, network, data, output);
            }
            if ty == Some(ETHERTYPE_ARP) && (dst == gw_mac || dst.is_broadcast()) {
                match self.gateway_arp(now, ingress, network, data, output) {
                    Some(back) => data = back,
                    None => return,
                }
            }
        }
        let pkt = Packet {
            port: ingress,
            data,
        };
        let net = &self.topo.networks[usize::from(network.0)];
        if !net.icc {
            // Without inter-container communication a port's frames may only reach the gateway,
            // which the L3 stage serves; nothing is bridged to another container port.
            return self.drop(ingress, DropReason::IccBlocked);
        }
        if dst.is_multicast() {
            return self.flood(network, pkt, output);
        }
        match self.fdb.lookup(network, dst, now) {
            Some(egress) if egress == ingress => self.drop(ingress, DropReason::SamePort),
            Some(egress) => {
                self.ports[usize::from(ingress.0)].forwarded += 1;
                self.emit(
                    Packet {
                        port: egress,
                        data: pkt.data,
                    },
                    output,
                );
            }
            None => self.flood(network, pkt, output),
        }
    }

    /// Sends a copy to every port of `network` but the ingress port.
    fn flood(&mut self, network: NetworkId, pkt: Packet, output: &mut Vec<Packet>) {
        let ingress = pkt.port;
        let ports = &self.topo.networks[usize::from(network.0)].ports;
        let mut targets = ports.iter().copied().filter(|&p| p != ingress);
        let Some(mut next) = targets.next() else {
            return self.drop(ingress, DropReason::NoEgress);
        };
        self.ports[usize::from(ingress.0)].forwarded += 1;
        let mut data = pkt.data;
        // Clone for all targets but the last, which takes the original buffer.
        loop {
            match targets.next() {
                Some(after) => {
                    let copy = data.clone();
                    self.bridge.flooded_copies += 1;
                    count_tx(&mut self.ports, next, copy.len());
                    output.push(Packet {
                        port: next,
                        data: copy,
                    });
                    next = after;
                }
                None => {
                    self.bridge.flooded_copies += 1;
                    count_tx(&mut self.ports, next, data.len());
                    output.push(Packet {
                        port: next,
                        data: std::mem::take(&mut data),
                    });
                    return;
                }
            }
        }
    }

    pub(crate) fn emit(&mut self, pkt: Packet, output: &mut Vec<Packet>) {
        count_tx(&mut self.ports, pkt.port, pkt.data.len());
        output.push(pkt);
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
            ports: self
                .topo
                .ports
                .iter()
                .zip(&self.ports)
                .map(|(p, c)| PortSnapshot {
                    name: p.name.clone(),
                    network: p
                        .network
                        .map(net_name)
                        .unwrap_or_else(|| "(uplink)".to_string()),
                    counters: *c,
                })
                .collect(),
            bridge: self.bridge,
            fdb: self
                .fdb
                .rows(now)
                .into_iter()
                .map(|r| FdbRowNamed {
                    network: net_name(r.network),
                    mac: r.mac,
                    port: name(r.port),
                    age_secs: r.age_ns as f64 / NANOS_PER_SEC as f64,
                })
                .collect(),
            conntrack_counters: self.ct.counters(),
            conntrack: self.ct.iter().map(|(_, e)| e.clone()).collect(),
        }
    }
}

/// Anti-spoofing: whether a frame from a port with `address` uses only that port's addresses.
/// Untagged IPv4 and ARP are checked; a VLAN tag is refused outright, since the tag would hide
/// the inner header from the check. Other EtherTypes (IPv6, LLDP) pass with the MAC check alone.
/// Short headers are left to the later stages, which count them as malformed.
/// 802.1ad service tag.
const ETHERTYPE_QINQ: u16 = 0x88a8;

fn check_source(address: &PortAddress, src: MacAddr, frame: &[u8]) -> Result<(), DropReason> {
    if address.mac.is_some_and(|m| m != src) {
        return Err(DropReason::SpoofedMac);
    }
    let ty = ethertype(frame);
    if matches!(ty, Some(ETHERTYPE_VLAN | ETHERTYPE_QINQ)) {
        return Err(DropReason::SpoofedIp);
    }
    let Some(ip) = address.ip else {
        return Ok(());
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
    Ok(())
}

fn count_tx(ports: &mut [PortCounters], port: PortId, len: usize) {
    if let Some(c) = ports.get_mut(usize::from(port.0)) {
        c.tx_frames += 1;
        c.tx_bytes += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::{MacAddr, build};

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn warm_parses_keys_and_tolerates_any_frame() {
        let cfg =
            Config::from_toml("[[network]]\nname='n'\n[[port]]\nname='a'\nkind='tap'\nnetwork='n'")
                .unwrap();
        let p = Pipeline::new(&cfg).unwrap();
        let frame = build::udp(
            mac(1),
            mac(2),
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            1111,
            2222,
            b"x",
        );
        let pkt = Packet {
            port: PortId(0),
            data: frame.clone(),
        };
        let (key, net) = p.warm_key(&pkt).unwrap();
        assert_eq!(
            key,
            Tuple::new(
                Proto::Udp,
                [10, 0, 0, 1].into(),
                1111,
                [10, 0, 0, 2].into(),
                2222
            )
        );
        assert_eq!(net, Some(0));
        // Every truncation of the frame, and frames on unknown ports: no panic.
        let mut batch: Vec<Packet> = (0..frame.len())
            .map(|n| Packet {
                port: PortId(0),
                data: frame[..n].to_vec(),
            })
            .collect();
        batch.push(Packet {
            port: PortId(9),
            data: frame,
        });
        p.warm(0, &batch);
    }

    #[test]
    fn ports_added_and_removed_at_run_time() {
        let cfg =
            Config::from_toml("[[network]]\nname='n'\n[[port]]\nname='a'\nkind='tap'\nnetwork='n'")
                .unwrap();
        let mut p = Pipeline::new(&cfg).unwrap();
        let net = p.topology().network_by_name("n").unwrap();
        let b = p
            .add_port("b", PortKind::AfPacket, net, PortAddress::default())
            .unwrap();
        assert!(matches!(
            p.add_port("b", PortKind::AfPacket, net, PortAddress::default()),
            Err(PortError::Exists(_))
        ));
        let frame = build::udp(
            mac(1),
            MacAddr::BROADCAST,
            [10, 0, 0, 1].into(),
            [10, 0, 0, 255].into(),
            1,
            2,
            b"x",
        );
        let (mut input, mut out) = (
            vec![Packet {
                port: PortId(0),
                data: frame.clone(),
            }],
            Vec::new(),
        );
        p.process(1, &mut input, &mut out);
        assert_eq!(out.iter().map(|p| p.port).collect::<Vec<_>>(), vec![b]);
        // b learns a MAC, then goes away: its entries go and frames naming it are refused.
        let from_b = build::udp(
            mac(2),
            mac(1),
            [10, 0, 0, 2].into(),
            [10, 0, 0, 1].into(),
            1,
            2,
            b"y",
        );
        p.process(
            2,
            &mut vec![Packet {
                port: b,
                data: from_b.clone(),
            }],
            &mut out,
        );
        assert!(p.fdb_rows(2).iter().any(|r| r.port == b));
        assert!(p.remove_port(b));
        assert!(!p.remove_port(b));
        assert!(p.fdb_rows(3).iter().all(|r| r.port != b));
        out.clear();
        p.process(
            3,
            &mut vec![
                Packet {
                    port: b,
                    data: from_b,
                },
                Packet {
                    port: PortId(0),
                    data: frame,
                },
            ],
            &mut out,
        );
        assert!(out.is_empty(), "no other port is left to flood to");
        assert_eq!(p.bridge_counters().unknown_port, 1);
        assert_eq!(
            p.port_counters(PortId(0))
                .unwrap()
                .drops
                .get(DropReason::NoEgress),
            1
        );
        // The name can be used again, with a fresh id.
        assert_ne!(
            p.add_port("b", PortKind::AfPacket, net, PortAddress::default())
                .unwrap(),
            b
        );
    }
}
