//! Changes to a running pipeline's topology: networks and published ports come and go as the
//! control plane says (`network create`, `port publish`, ...).
//!
//! Invariants kept: network ids are never reused (a removed network keeps its slot, emptied, so
//! ids held elsewhere stay unambiguous); port ids are (a removed port's slot goes to the next
//! port added, lowest first, so ids stay below 65,536 however many containers come and go);
//! `port_names` holds exactly the active ports; subnets of live networks never overlap; a
//! published host port maps to one container (the gateway's table holds one entry per host
//! port).
//!
//! Owns [`NetworkDef`] and the topology's side of these changes; the pipeline's public methods
//! (`add_network`, `publish`, ...) delegate here and to the gateway.

use crate::config::{
    ConfigError, Network, NetworkId, NetworkV6, Port, PortAddress, PortId, PortKind, Topology,
};
use crate::pipeline::PortError;
use ipnet::{Ipv4Net, Ipv6Net};
use packet::MacAddr;
use std::net::{Ipv4Addr, Ipv6Addr};

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
    /// IPv6 prefix and gateway (dual-stack).
    pub ipv6: Option<(Ipv6Net, Ipv6Addr)>,
    /// VXLAN network identifier: an overlay network (see `crate::overlay`).
    pub vni: Option<u32>,
    /// Bridged onto the uplink's LAN (see `crate::config::Macvlan`): `subnet` and `gateway`
    /// are the LAN's, which vswitch neither routes to nor answers for.
    pub macvlan: Option<crate::config::Macvlan>,
}

impl Topology {
    /// Adds a network; returns its id, or the existing one if a network of that name with the
    /// same subnet is already there (so replaying the control plane's state is idempotent).
    pub(crate) fn add_network(&mut self, def: &NetworkDef) -> Result<NetworkId, ConfigError> {
        if let Some(id) = self.network_by_name(&def.name) {
            let n = &self.networks[usize::from(id.0)];
            let same = match def.macvlan {
                Some(m) => n.macvlan == Some(m),
                None => n.subnet == Some(def.subnet),
            };
            if same {
                return Ok(id);
            }
            return Err(ConfigError::DuplicateNetwork(def.name.clone()));
        }
        if def.macvlan.is_some() {
            return self.push_network(Network {
                name: def.name.clone(),
                ports: Vec::new(),
                subnet: None,
                gateway: None,
                internal: def.internal,
                icc: def.icc,
                anti_spoofing: def.anti_spoofing,
                v6: None,
                vni: None,
                macvlan: def.macvlan,
            });
        }
        if !def.subnet.contains(&def.gateway) {
            return Err(ConfigError::GatewayOutsideSubnet {
                network: def.name.clone(),
                gateway: def.gateway,
                subnet: def.subnet,
            });
        }
        for n in self.networks.iter().filter(|n| !n.name.is_empty()) {
            if let Some(s) = n.subnet
                && (s.contains(&def.subnet.network()) || def.subnet.contains(&s.network()))
            {
                return Err(ConfigError::OverlappingSubnets(
                    n.name.clone(),
                    def.name.clone(),
                ));
            }
        }
        let gateway_mac = MacAddr::docker(def.gateway);
        let v6 = def
            .ipv6
            .map(|(subnet, gw)| NetworkV6::new(&def.name, subnet, Some(gw), gateway_mac, false))
            .transpose()?;
        if let Some(v6) = v6 {
            let taken = self.networks.iter().filter_map(|n| n.v6.map(|v| (n, v)));
            for (n, other) in taken.filter(|(n, _)| !n.name.is_empty()) {
                let (x, y) = (other.subnet, v6.subnet);
                if x.contains(&y.network()) || y.contains(&x.network()) {
                    return Err(ConfigError::OverlappingSubnets(
                        n.name.clone(),
                        def.name.clone(),
                    ));
                }
            }
        }
        self.push_network(Network {
            name: def.name.clone(),
            ports: Vec::new(),
            subnet: Some(def.subnet),
            gateway: Some((def.gateway, gateway_mac)),
            internal: def.internal,
            icc: def.icc,
            anti_spoofing: def.anti_spoofing,
            v6,
            vni: def.vni,
            macvlan: None,
        })
    }

    /// Appends `n`; its id.
    fn push_network(&mut self, n: Network) -> Result<NetworkId, ConfigError> {
        let id = NetworkId(
            u16::try_from(self.networks.len()).map_err(|_| ConfigError::TooMany("networks"))?,
        );
        self.networks.push(n);
        Ok(id)
    }

    /// Removes a network that has no ports left; false if it has ports or does not exist.
    pub(crate) fn remove_network(&mut self, name: &str) -> bool {
        let Some(id) = self.network_by_name(name) else {
            return false;
        };
        let n = &mut self.networks[usize::from(id.0)];
        if !n.ports.is_empty() {
            return false;
        }
        // Keep the slot so ids stay stable; an unnamed network without subnet matches nothing.
        n.name.clear();
        n.subnet = None;
        n.gateway = None;
        n.v6 = None;
        n.vni = None;
        n.macvlan = None;
        true
    }

    /// Adds an active port to `network`: in the lowest free slot, else a new one. The caller
    /// resets whatever else it keeps per slot.
    pub(crate) fn add_port(
        &mut self,
        name: &str,
        kind: PortKind,
        network: NetworkId,
        address: PortAddress,
    ) -> Result<PortId, PortError> {
        if self.port_names.contains_key(name) {
            return Err(PortError::Exists(name.to_string()));
        }
        let net = self
            .networks
            .get_mut(usize::from(network.0))
            .ok_or(PortError::NoNetwork)?;
        let id = match self.free_ports.first() {
            Some(&free) => PortId(free),
            None => PortId(u16::try_from(self.ports.len()).map_err(|_| PortError::TooMany)?),
        };
        let slot = self.ports.get_mut(usize::from(id.0));
        let port = Port {
            name: name.to_string(),
            kind,
            network: Some(network),
            active: true,
            generation: slot.as_ref().map_or(1, |p| p.generation.wrapping_add(1)),
            address,
            offloads: packet::offload::Capabilities::NONE,
        };
        match slot {
            Some(slot) => {
                *slot = port;
                self.free_ports.remove(&id.0);
            }
            None => self.ports.push(port),
        }
        net.ports.push(id);
        self.port_names.insert(name.to_string(), id);
        Ok(id)
    }

    /// Marks a container port removed and frees its name and slot; returns its network, or
    /// `None` if it is not an active port of a network. The uplink stays: `uplink.port` names
    /// its slot, which must never go to a container.
    pub(crate) fn remove_port(&mut self, id: PortId) -> Option<NetworkId> {
        let port = self.ports.get_mut(usize::from(id.0)).filter(|p| p.active)?;
        let network = port.network?;
        port.active = false;
        self.port_names.remove(&port.name);
        self.free_ports.insert(id.0);
        if let Some(n) = self.networks.get_mut(usize::from(network.0)) {
            n.ports.retain(|&p| p != id);
        }
        Some(network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Pipeline};

    fn def(name: &str, subnet: &str, gw: [u8; 4]) -> NetworkDef {
        NetworkDef {
            name: name.into(),
            subnet: subnet.parse().unwrap(),
            gateway: gw.into(),
            internal: false,
            icc: true,
            anti_spoofing: true,
            ipv6: None,
            vni: None,
            macvlan: None,
        }
    }

    #[test]
    fn ipv6_prefixes_of_live_networks_never_overlap() {
        let mut p = Pipeline::new(&Config::default()).unwrap();
        let v6 = |s: &str, gw: &str| Some((s.parse().unwrap(), gw.parse().unwrap()));
        let a = NetworkDef {
            ipv6: v6("fd00:1::/64", "fd00:1::1"),
            ..def("a", "10.1.0.0/24", [10, 1, 0, 1])
        };
        let id = p.add_network(&a).unwrap();
        let v = p.topology().networks[usize::from(id.0)].v6.unwrap();
        assert_eq!(v.gateway.to_string(), "fd00:1::1");
        let b = NetworkDef {
            ipv6: v6("fd00:1::/80", "fd00:1::1"),
            ..def("b", "10.2.0.0/24", [10, 2, 0, 1])
        };
        assert!(matches!(
            p.add_network(&b),
            Err(ConfigError::OverlappingSubnets(..))
        ));
        assert!(p.remove_network("a"));
        p.add_network(&b).unwrap();
        let bad = NetworkDef {
            ipv6: v6("fd00:3::/64", "fd00:4::1"),
            ..def("c", "10.3.0.0/24", [10, 3, 0, 1])
        };
        assert!(matches!(
            p.add_network(&bad),
            Err(ConfigError::BadIpv6Gateway { .. })
        ));
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
