//! The frame context: what every stage needs to know about the frame in hand and where its
//! results go.
//!
//! A [`Frame`] is built by the pipeline for one received frame once the bridge has checked it
//! (and, on a container port, learned its source), and lent to the stages (L2 forwarding, the L3 gateway). It carries the frame's
//! metadata (clock, ingress port, ingress network), read access to the topology and the FDB, and
//! the egress sink: the batch's output list and the counters. Stages never push to the output
//! list themselves: [`Frame::emit`], [`Frame::flood`] and [`Frame::deliver`] count every frame
//! they send, so `tx_*` always matches what left.
//!
//! Owns: [`Counters`], the per-port and bridge-wide counters of one pipeline.
//!
//! Invariants: [`Frame::flood`] is the one flooding routine (bridge and gateway alike), and it
//! allocates nothing but the copies it sends; per received frame exactly one of `forwarded`,
//! `local` or a drop is counted on its ingress port, by whichever stage ends its journey.

use crate::bridge::Bridge;
use crate::config::{NetworkId, PortId, Topology};
use crate::counters::{BridgeCounters, DropReason, PortCounters};
use crate::pipeline::Packet;
use packet::MacAddr;

/// Every counter of one pipeline.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Per port, indexed by port id.
    pub(crate) ports: Vec<PortCounters>,
    /// Bridge-wide events.
    pub(crate) bridge: BridgeCounters,
}

impl Counters {
    /// Zeroed counters for `ports` ports.
    pub(crate) fn new(ports: usize) -> Counters {
        Counters {
            ports: vec![PortCounters::default(); ports],
            bridge: BridgeCounters::default(),
        }
    }

    /// The counters of `port`, if it exists.
    #[inline]
    pub(crate) fn port(&mut self, port: PortId) -> Option<&mut PortCounters> {
        self.ports.get_mut(usize::from(port.0))
    }

    /// Counts a drop on `port`.
    #[inline]
    pub(crate) fn drop(&mut self, port: PortId, reason: DropReason) {
        if let Some(c) = self.port(port) {
            c.drops.add(reason);
        }
    }

    /// Counts a frame sent on `port`.
    #[inline]
    fn tx(&mut self, port: PortId, len: usize) {
        if let Some(c) = self.port(port) {
            c.tx_frames += 1;
            c.tx_bytes += len as u64;
        }
    }
}

/// One received frame's context through the stages.
pub(crate) struct Frame<'a> {
    /// Clock of the batch.
    pub(crate) now: u64,
    /// The port the frame came in on.
    pub(crate) ingress: PortId,
    /// Its network; `None` for the uplink.
    pub(crate) network: Option<NetworkId>,
    /// The topology (ports, networks, uplink).
    pub(crate) topo: &'a Topology,
    /// The L2 component, for [`Frame::deliver`]'s lookups.
    bridge: &'a Bridge,
    counters: &'a mut Counters,
    output: &'a mut Vec<Packet>,
}

impl<'a> Frame<'a> {
    /// A context for a frame received on `ingress` (of `network`) at `now`.
    #[inline(always)]
    pub(crate) fn new(
        now: u64,
        ingress: PortId,
        network: Option<NetworkId>,
        topo: &'a Topology,
        bridge: &'a Bridge,
        counters: &'a mut Counters,
        output: &'a mut Vec<Packet>,
    ) -> Frame<'a> {
        Frame {
            now,
            ingress,
            network,
            topo,
            bridge,
            counters,
            output,
        }
    }

    /// Ends the frame's journey: dropped, counted on its ingress port.
    #[inline]
    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.counters.drop(self.ingress, reason);
    }

    /// Ends the frame's journey: consumed by the gateway.
    #[inline]
    pub(crate) fn local(&mut self) {
        if let Some(c) = self.counters.port(self.ingress) {
            c.local += 1;
        }
    }

    /// Ends the frame's journey: it left through at least one port.
    #[inline]
    pub(crate) fn forwarded(&mut self) {
        if let Some(c) = self.counters.port(self.ingress) {
            c.forwarded += 1;
        }
    }

    /// The counters of any port (frames released from or expired in the ARP queue belong to
    /// the port they came in on, not to the frame in hand).
    #[inline]
    pub(crate) fn port_counters(&mut self, port: PortId) -> Option<&mut PortCounters> {
        self.counters.port(port)
    }

    /// Bridge-wide event counters.
    #[inline]
    pub(crate) fn events(&mut self) -> &mut BridgeCounters {
        &mut self.counters.bridge
    }

    /// Sends `data` out of `port`.
    #[inline]
    pub(crate) fn emit(&mut self, port: PortId, data: Vec<u8>) {
        self.counters.tx(port, data.len());
        self.output.push(Packet { port, data });
    }

    /// Sends `data` back out of the ingress port.
    #[inline]
    pub(crate) fn reply(&mut self, data: Vec<u8>) {
        self.emit(self.ingress, data);
    }

    /// Sends a copy of `data` to every port of `network` but `except`; the last port takes the
    /// buffer itself. Returns false, sending nothing, when there is no such port. The only
    /// flooding routine: no allocation besides the copies.
    pub(crate) fn flood(
        &mut self,
        network: NetworkId,
        except: Option<PortId>,
        mut data: Vec<u8>,
    ) -> bool {
        let topo = self.topo;
        let Some(net) = topo.networks.get(usize::from(network.0)) else {
            return false;
        };
        let mut targets = net.ports.iter().copied().filter(|&p| Some(p) != except);
        let Some(mut next) = targets.next() else {
            return false;
        };
        // Clone for all targets but the last, which takes the original buffer.
        loop {
            self.counters.bridge.flooded_copies += 1;
            match targets.next() {
                Some(after) => {
                    let copy = data.clone();
                    self.emit(next, copy);
                    next = after;
                }
                None => {
                    self.emit(next, std::mem::take(&mut data));
                    return true;
                }
            }
        }
    }

    /// Sends `data` into `network` toward `dst_mac` as the bridge would: to the port that
    /// learned it, else (unknown or multicast) flooded to every port of the network.
    pub(crate) fn deliver(&mut self, network: NetworkId, dst_mac: MacAddr, data: Vec<u8>) {
        let known = if dst_mac.is_multicast() {
            None
        } else {
            self.bridge.lookup(network, dst_mac, self.now)
        };
        match known {
            Some(port) => self.emit(port, data),
            None => {
                self.flood(network, None, data);
            }
        }
    }
}
