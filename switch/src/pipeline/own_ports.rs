//! Ports the pipeline makes itself, beside a network's container ports: an overlay network's
//! `vxlan-VNI` and a macvlan network's `parent` ports. Each stands for what is beyond the uplink
//! (the other hosts, the LAN), so the bridge floods and forwards to it like to any port.

use super::Pipeline;
use crate::config::{ConfigError, NetworkId, PortAddress, PortId, PortKind};
use crate::counters::PortCounters;

impl Pipeline {
    /// Adds the port `name` of `kind` to `network`, with clean counters and no FDB entries;
    /// the multicast stage is the caller's (each kind has its own rule).
    pub(super) fn add_own_port(
        &mut self,
        name: &str,
        kind: PortKind,
        network: NetworkId,
    ) -> Result<PortId, ConfigError> {
        let port = self
            .topo
            .add_port(name, kind, network, PortAddress::default())
            .map_err(|_| ConfigError::TooMany("ports"))?;
        match self.counters.ports.get_mut(usize::from(port.0)) {
            Some(c) => *c = PortCounters::default(),
            None => self.counters.ports.push(PortCounters::default()),
        }
        self.bridge.add_port(port);
        self.gateway.invalidate_flows();
        Ok(port)
    }

    /// Whether `port` is the last port of `network` (so the network may go with it).
    pub(super) fn only_port(&self, network: NetworkId, port: PortId) -> bool {
        self.topo.networks[usize::from(network.0)]
            .ports
            .iter()
            .all(|&p| p == port)
    }

    /// Removes a port [`Pipeline::add_own_port`] made, with its memberships and FDB entries.
    pub(super) fn remove_own_port(&mut self, network: NetworkId, port: PortId) {
        self.topo.remove_port(port);
        self.multicast.remove_port(port, network);
        self.bridge.flush_port(port);
    }
}
