//! The frame context: what every stage needs to know about the frame in hand and where its
//! results go.
//!
//! A [`Frame`] is built by the pipeline for one received frame once the bridge has checked it
//! (and, on a container port, learned its source), and lent to the stages (L2 forwarding, the
//! L3 gateway). It carries the frame's
//! metadata (clock, ingress port, ingress network), read access to the topology and the FDB, and
//! the egress sink: the batch's output list and the counters. Stages never push to the output
//! list themselves: [`Frame::emit`], [`Frame::flood`] and [`Frame::deliver`] count every frame
//! they send (and [`Counters::originate`] the frames housekeeping makes), so `tx_*` always
//! matches what left.
//!
//! Owns: [`Counters`], the per-port and bridge-wide counters of one pipeline.
//!
//! Invariants: [`Frame::flood_to`] is the one flooding routine (to a network's every port for
//! the bridge and gateway, to a group's listeners for multicast snooping), and it allocates
//! nothing but the copies it sends; per received frame exactly one of `forwarded`,
//! `local` or a drop is counted on its ingress port, by whichever stage ends its journey.

use crate::bridge::Bridge;
use crate::config::{NetworkId, PortId, Topology};
use crate::counters::{BridgeCounters, DropReason, PortCounters};
use crate::pipeline::Packet;
use packet::MacAddr;
use packet::offload::Offload;

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

    /// Sends a plain frame the pipeline originates outside any received frame's journey (a
    /// multicast query from housekeeping) out of `port`, counted like every other.
    pub(crate) fn originate(&mut self, output: &mut Vec<Packet>, port: PortId, data: Vec<u8>) {
        self.tx(port, data.len());
        output.push(Packet::new(port, data));
    }

    /// Counts a frame of `len` bytes sent on `port` by a stage that retargets frames in the
    /// output (the parent stage).
    #[inline]
    pub(crate) fn count_tx(&mut self, port: PortId, len: usize) {
        self.tx(port, len);
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
    /// The frame's offload state: what its own bytes carry wherever they are sent.
    pub(crate) offload: Offload,
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
            offload: Offload::NONE,
            bridge,
            counters,
            output,
        }
    }

    /// The context for a frame whose bytes carry `offload` (a super-frame, a partial checksum).
    #[inline(always)]
    pub(crate) fn carrying(mut self, offload: Offload) -> Frame<'a> {
        self.offload = offload;
        self
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

    /// Sends the frame in hand (its bytes `data`, with the frame's offload state) out of
    /// `port`.
    #[inline]
    pub(crate) fn emit(&mut self, port: PortId, data: Vec<u8>) {
        let offload = self.offload;
        self.emit_as(port, data, offload);
    }

    /// Sends `data`, in offload state `offload`, out of `port`: as it is when the port takes
    /// that state, else segmented and with its checksums finished in software.
    #[inline]
    pub(crate) fn emit_as(&mut self, port: PortId, data: Vec<u8>, offload: Offload) {
        let accepted = offload == Offload::NONE
            || offload.is_plain()
            || self
                .topo
                .ports
                .get(usize::from(port.0))
                .is_some_and(|p| p.offloads.accepts(&offload));
        if accepted {
            self.counters.tx(port, data.len());
            if offload.gso != packet::offload::Gso::None
                && let Some(c) = self.counters.port(port)
            {
                c.tx_gso += 1;
            }
            self.output.push(Packet::with_offload(port, data, offload));
        } else {
            self.emit_segmented(port, &data, offload);
        }
    }

    /// The software fallback: `data` cut into plain frames for a port that takes no offload.
    #[inline(never)]
    fn emit_segmented(&mut self, port: PortId, data: &[u8], offload: Offload) {
        let mut scratch = Vec::with_capacity(data.len().min(9216));
        let (counters, output) = (&mut *self.counters, &mut *self.output);
        let done = packet::gso::segment(data, &offload, None, &mut scratch, &mut |seg| {
            counters.tx(port, seg.len());
            counters.bridge.gso_segments += 1;
            output.push(Packet::new(port, seg.to_vec()));
        });
        if done.is_err() {
            // Unreachable after the ingress check (the fuzz target asserts it stays 0); the
            // frame already counted its outcome, so this is counted bridge-wide.
            self.counters.bridge.gso_failed += 1;
        }
    }

    /// Sends a frame the gateway made (a plain frame) back out of the ingress port.
    #[inline]
    pub(crate) fn reply(&mut self, data: Vec<u8>) {
        self.emit_as(self.ingress, data, Offload::NONE);
    }

    /// Sends a copy of `data` to every port of `network` but `except` (counted in
    /// `flooded_copies`). Returns false, sending nothing, when there is no such port.
    pub(crate) fn flood(
        &mut self,
        network: NetworkId,
        except: Option<PortId>,
        data: Vec<u8>,
        offload: Offload,
    ) -> bool {
        let topo = self.topo;
        let Some(net) = topo.networks.get(usize::from(network.0)) else {
            return false;
        };
        let copies = self.flood_to(net.ports.iter().copied(), except, data, offload);
        self.counters.bridge.flooded_copies += copies;
        copies > 0
    }

    /// Sends a copy of `data` to each of `ports` but `except`; the last port takes the buffer
    /// itself. Returns how many copies left (0: none of them). The only flooding routine: no
    /// allocation besides the copies.
    pub(crate) fn flood_to(
        &mut self,
        ports: impl Iterator<Item = PortId>,
        except: Option<PortId>,
        mut data: Vec<u8>,
        offload: Offload,
    ) -> u64 {
        let mut targets = ports.filter(|&p| Some(p) != except);
        let Some(mut next) = targets.next() else {
            return 0;
        };
        // Clone for all targets but the last, which takes the original buffer.
        let mut copies = 1;
        loop {
            match targets.next() {
                Some(after) => {
                    let copy = data.clone();
                    self.emit_as(next, copy, offload);
                    next = after;
                    copies += 1;
                }
                None => {
                    self.emit_as(next, std::mem::take(&mut data), offload);
                    return copies;
                }
            }
        }
    }

    /// Sends `data` into `network` toward `dst_mac` as the bridge would: to the port that
    /// learned it, else (unknown or multicast) flooded to every port of the network. Returns
    /// the port and the first clock value at which its FDB entry ages, when it went to one
    /// learned port.
    pub(crate) fn deliver(
        &mut self,
        network: NetworkId,
        dst_mac: MacAddr,
        data: Vec<u8>,
        offload: Offload,
    ) -> Option<(PortId, u64)> {
        let known = if dst_mac.is_multicast() {
            None
        } else {
            self.bridge.lookup_until(network, dst_mac, self.now)
        };
        match known {
            Some((port, until)) => {
                self.emit_as(port, data, offload);
                Some((port, until))
            }
            None => {
                self.flood(network, None, data, offload);
                None
            }
        }
    }

    /// Changes whenever an FDB entry moved or went (see [`Bridge::fdb_generation`]).
    #[inline]
    pub(crate) fn fdb_generation(&self) -> u64 {
        self.bridge.fdb_generation()
    }
}
