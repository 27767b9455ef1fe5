//! Changes to a running pipeline's topology: networks and published ports come and go as the
//! control plane says (`network create`, `port publish`, ...).
//!
//! Invariants kept: network ids are never reused (a removed network keeps its slot, emptied, so
//! ids held elsewhere stay unambiguous); subnets of live networks never overlap; a published
//! host port maps to one container.

use crate::config::{ConfigError, Network, NetworkId, mac_from_ip};
use crate::pipeline::Pipeline;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// A network to add at run time.
#[derive(Clone, Debug)]
pub struct NetworkDef {
    /// Unique name.
    pub name: String,
    /// Subnet.
    pub subnet: Ipv4Net,
    /// Gateway address inside it.
    pub gateway: Ipv4Addr,
    /// No uplink.
    pub internal: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// Enforce the ports' assigned addresses.
    pub anti_spoofing: bool,
}

impl Pipeline {
    /// Adds a network; returns its id, or the existing one if a network of that name with the
    /// same subnet is already there (so replaying the control plane's state is idempotent).
    pub fn add_network(&mut self, def: &NetworkDef) -> Result<NetworkId, ConfigError> {
        if let Some(id) = self.topo.network_by_name(&def.name) {
            let n = &self.topo.networks[usize::from(id.0)];
            if n.subnet == Some(def.subnet) {
                return Ok(id);
            }
            return Err(ConfigError::DuplicateNetwork(def.name.clone()));
        }
        if !def.subnet.contains(&def.gateway) {
            return Err(ConfigError::GatewayOutsideSubnet {
                network: def.name.clone(),
                gateway: def.gateway,
                subnet: def.subnet,
            });
        }
        for n in self.topo.networks.iter().filter(|n| !n.name.is_empty()) {
            if let Some(s) = n.subnet
                && (s.contains(&def.subnet.network()) || def.subnet.contains(&s.network()))
            {
                return Err(ConfigError::OverlappingSubnets(
                    n.name.clone(),
                    def.name.clone(),
                ));
            }
        }
        let id = NetworkId(
            u16::try_from(self.topo.networks.len())
                .map_err(|_| ConfigError::TooMany("networks"))?,
        );
        self.topo.networks.push(Network {
            name: def.name.clone(),
            ports: Vec::new(),
            subnet: Some(def.subnet),
            gateway: Some((def.gateway, mac_from_ip(def.gateway))),
            internal: def.internal,
            icc: def.icc,
            anti_spoofing: def.anti_spoofing,
        });
        Ok(id)
    }

    /// Removes a network that has no ports left; false if it has ports or does not exist.
    pub fn remove_network(&mut self, name: &str) -> bool {
        let Some(id) = self.topo.network_by_name(name) else {
            return false;
        };
        let n = &mut self.topo.networks[usize::from(id.0)];
        if !n.ports.is_empty() {
            return false;
        }
        // Keep the slot so ids stay stable; an unnamed network without subnet matches nothing.
        n.name.clear();
        n.subnet = None;
        n.gateway = None;
        true
    }

    /// Publishes `host_port` (IP protocol 6 or 17) on the uplink address to a container.
    pub fn publish(
        &mut self,
        protocol: u8,
        host_port: u16,
        container_ip: Ipv4Addr,
        container_port: u16,
    ) {
        self.published
            .insert((protocol, host_port), (container_ip, container_port));
    }

    /// Removes a published port; new connections to it are refused from now on, existing ones
    /// keep their conntrack entries until they end.
    pub fn unpublish(&mut self, protocol: u8, host_port: u16) -> bool {
        self.published.remove(&(protocol, host_port)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn def(name: &str, subnet: &str, gw: [u8; 4]) -> NetworkDef {
        NetworkDef {
            name: name.into(),
            subnet: subnet.parse().unwrap(),
            gateway: gw.into(),
            internal: false,
            icc: true,
            anti_spoofing: true,
        }
    }

    #[test]
    fn networks_come_and_go() {
        let mut p = Pipeline::new(
            &Config::from_toml(
                "[[network]]\nname='bridge'\nsubnet='172.17.0.0/16'\ngateway='172.17.0.1'",
            )
            .unwrap(),
        )
        .unwrap();
        let id = p
            .add_network(&def("web", "172.18.0.0/16", [172, 18, 0, 1]))
            .unwrap();
        assert_eq!(
            p.add_network(&def("web", "172.18.0.0/16", [172, 18, 0, 1]))
                .unwrap(),
            id,
            "idempotent"
        );
        assert!(matches!(
            p.add_network(&def("web", "172.20.0.0/16", [172, 20, 0, 1])),
            Err(ConfigError::DuplicateNetwork(_))
        ));
        assert!(matches!(
            p.add_network(&def("x", "172.18.5.0/24", [172, 18, 5, 1])),
            Err(ConfigError::OverlappingSubnets(..))
        ));
        assert!(matches!(
            p.add_network(&def("y", "10.0.0.0/24", [10, 0, 1, 1])),
            Err(ConfigError::GatewayOutsideSubnet { .. })
        ));
        assert_eq!(p.topology().network_of_ip([172, 18, 3, 3].into()), Some(id));
        let port = p
            .add_port("c", crate::PortKind::AfPacket, id, Default::default())
            .unwrap();
        assert!(!p.remove_network("web"), "still has a port");
        p.remove_port(port);
        assert!(p.remove_network("web"));
        assert_eq!(p.topology().network_of_ip([172, 18, 3, 3].into()), None);
        assert_eq!(p.topology().network_by_name("web"), None);
        let again = p
            .add_network(&def("web", "172.18.0.0/16", [172, 18, 0, 1]))
            .unwrap();
        assert_ne!(again, id, "ids are not reused");
    }
}
