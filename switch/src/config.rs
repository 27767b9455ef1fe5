//! The topology file (TOML): networks, ports, bridge settings.
//!
//! [`Config`] is what the file says; [`Topology`] is the checked form the pipeline runs on, with
//! dense ids for networks and ports so the fast path indexes vectors instead of hashing names.
//! Every way a file can be wrong is a [`ConfigError`] that names the offending item.

use ipnet::Ipv4Net;
use packet::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Index of a network in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NetworkId(pub u16);

/// Index of a port in the topology; frames enter and leave through ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortId(pub u16);

/// The whole topology file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bridge-wide settings.
    #[serde(default)]
    pub bridge: BridgeConfig,
    /// Networks: isolated L2 domains.
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConfig>,
    /// Ports and the network each belongs to.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
}

/// Settings shared by every network's bridge.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Seconds after which an FDB entry not refreshed by traffic is forgotten (Linux: 300).
    pub aging_secs: u64,
    /// Most MACs one port may teach the FDB; further sources are forwarded but not learned.
    pub max_macs_per_port: u32,
    /// MTU of the ports: frames longer than MTU + 18 bytes (Ethernet header + one VLAN tag) are
    /// dropped as oversize.
    pub mtu: u16,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            aging_secs: 300,
            max_macs_per_port: 1024,
            mtu: 1500,
        }
    }
}

/// One network (an L2 domain; frames never cross between networks at layer 2).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Unique name, e.g. "bridge".
    pub name: String,
    /// IPv4 subnet, e.g. 172.17.0.0/16.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// Gateway address inside the subnet, e.g. 172.17.0.1.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// MAC the gateway answers with; derived from the gateway address when absent.
    #[serde(default)]
    pub gateway_mac: Option<MacAddr>,
    /// No uplink: traffic never leaves this network.
    #[serde(default)]
    pub internal: bool,
    /// Inter-container communication; when false, ports of this network reach only the gateway.
    #[serde(default = "yes")]
    pub icc: bool,
}

fn yes() -> bool {
    true
}

/// What backs a port at run time; the pipeline treats all kinds alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A TAP device.
    Tap,
    /// An existing interface (e.g. a veth end) read through AF_PACKET.
    AfPacket,
    /// A pcap file (replay).
    Pcap,
}

/// One port.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name, used by `--in NAME=FILE` and in output file names.
    pub name: String,
    /// Backend kind.
    pub kind: PortKind,
    /// Name of the network this port belongs to.
    pub network: String,
}

/// Why a topology file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax or schema error.
    #[error("invalid topology file: {0}")]
    Parse(#[from] toml::de::Error),
    /// Two networks share a name.
    #[error("network {0:?} is defined twice: give each [[network]] a unique name")]
    DuplicateNetwork(String),
    /// Two ports share a name.
    #[error("port {0:?} is defined twice: give each [[port]] a unique name")]
    DuplicatePort(String),
    /// A port names a network that does not exist.
    #[error(
        "port {port:?} refers to unknown network {network:?}: add a [[network]] with that name"
    )]
    UnknownNetwork {
        /// The port.
        port: String,
        /// The missing network.
        network: String,
    },
    /// The gateway address is not inside the subnet.
    #[error("network {network:?}: gateway {gateway} is outside subnet {subnet}")]
    GatewayOutsideSubnet {
        /// The network.
        network: String,
        /// Its gateway.
        gateway: Ipv4Addr,
        /// Its subnet.
        subnet: Ipv4Net,
    },
    /// A gateway without a subnet.
    #[error("network {0:?} has a gateway but no subnet: add subnet = \"A.B.C.D/N\"")]
    GatewayWithoutSubnet(String),
    /// Too many ports or networks for 16-bit ids.
    #[error("too many {0}: at most 65535")]
    TooMany(&'static str),
    /// A setting out of range.
    #[error("bridge.{0} must be greater than zero")]
    Zero(&'static str),
}

impl Config {
    /// Parses a topology from TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Ok(toml::from_str(text)?)
    }
}

/// A network as the pipeline sees it.
#[derive(Clone, Debug)]
pub struct Network {
    /// Name from the file.
    pub name: String,
    /// Ports of this network, in file order.
    pub ports: Vec<PortId>,
    /// Subnet, if any.
    pub subnet: Option<Ipv4Net>,
    /// Gateway address and MAC, if any.
    pub gateway: Option<(Ipv4Addr, MacAddr)>,
    /// No uplink.
    pub internal: bool,
    /// Inter-container communication allowed.
    pub icc: bool,
}

/// A port as the pipeline sees it.
#[derive(Clone, Debug)]
pub struct Port {
    /// Name from the file.
    pub name: String,
    /// Backend kind.
    pub kind: PortKind,
    /// Network it belongs to.
    pub network: NetworkId,
}

/// A checked topology with dense ids.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Bridge settings.
    pub bridge: BridgeConfig,
    /// Networks by id.
    pub networks: Vec<Network>,
    /// Ports by id.
    pub ports: Vec<Port>,
}

/// The MAC Docker derives from an IPv4 address: 02:42 followed by the four octets.
pub fn mac_from_ip(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
}

impl Topology {
    /// Checks a parsed config and assigns ids.
    pub fn new(config: &Config) -> Result<Topology, ConfigError> {
        if config.bridge.aging_secs == 0 {
            return Err(ConfigError::Zero("aging_secs"));
        }
        if config.bridge.max_macs_per_port == 0 {
            return Err(ConfigError::Zero("max_macs_per_port"));
        }
        if config.bridge.mtu == 0 {
            return Err(ConfigError::Zero("mtu"));
        }
        if config.networks.len() > usize::from(u16::MAX) {
            return Err(ConfigError::TooMany("networks"));
        }
        if config.ports.len() > usize::from(u16::MAX) {
            return Err(ConfigError::TooMany("ports"));
        }
        let mut seen = HashSet::new();
        let mut networks = Vec::with_capacity(config.networks.len());
        for n in &config.networks {
            if !seen.insert(n.name.as_str()) {
                return Err(ConfigError::DuplicateNetwork(n.name.clone()));
            }
            let gateway = match (n.gateway, n.subnet) {
                (Some(gw), Some(subnet)) if !subnet.contains(&gw) => {
                    return Err(ConfigError::GatewayOutsideSubnet {
                        network: n.name.clone(),
                        gateway: gw,
                        subnet,
                    });
                }
                (Some(_), None) => return Err(ConfigError::GatewayWithoutSubnet(n.name.clone())),
                (Some(gw), Some(_)) => Some((gw, n.gateway_mac.unwrap_or_else(|| mac_from_ip(gw)))),
                (None, _) => None,
            };
            networks.push(Network {
                name: n.name.clone(),
                ports: Vec::new(),
                subnet: n.subnet,
                gateway,
                internal: n.internal,
                icc: n.icc,
            });
        }
        let mut seen = HashSet::new();
        let mut ports = Vec::with_capacity(config.ports.len());
        for (i, p) in config.ports.iter().enumerate() {
            if !seen.insert(p.name.as_str()) {
                return Err(ConfigError::DuplicatePort(p.name.clone()));
            }
            let net = networks
                .iter()
                .position(|n| n.name == p.network)
                .ok_or_else(|| ConfigError::UnknownNetwork {
                    port: p.name.clone(),
                    network: p.network.clone(),
                })?;
            // Both casts are in range: lengths were checked against u16::MAX above.
            let (net_id, port_id) = (NetworkId(net as u16), PortId(i as u16));
            networks[net].ports.push(port_id);
            ports.push(Port {
                name: p.name.clone(),
                kind: p.kind,
                network: net_id,
            });
        }
        Ok(Topology {
            bridge: config.bridge.clone(),
            networks,
            ports,
        })
    }

    /// Looks a port up by name.
    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| PortId(i as u16))
    }

    /// The port with this id.
    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(usize::from(id.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [bridge]
        aging_secs = 30

        [[network]]
        name = "bridge"
        subnet = "172.17.0.0/16"
        gateway = "172.17.0.1"

        [[network]]
        name = "backend"
        icc = false

        [[port]]
        name = "c1"
        kind = "pcap"
        network = "bridge"

        [[port]]
        name = "c2"
        kind = "tap"
        network = "backend"
    "#;

    #[test]
    fn parses_and_assigns_ids() {
        let t = Topology::new(&Config::from_toml(GOOD).unwrap()).unwrap();
        assert_eq!(t.bridge.aging_secs, 30);
        assert_eq!(t.bridge.max_macs_per_port, 1024);
        assert_eq!(t.networks[0].ports, vec![PortId(0)]);
        assert_eq!(t.networks[1].ports, vec![PortId(1)]);
        assert!(!t.networks[1].icc && t.networks[0].icc);
        let (gw, mac) = t.networks[0].gateway.unwrap();
        assert_eq!(gw, Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(mac.to_string(), "02:42:ac:11:00:01");
        assert_eq!(t.port_by_name("c2"), Some(PortId(1)));
    }

    #[test]
    fn rejects_bad_files_with_a_named_cause() {
        let cases = [
            (
                "[[port]]\nname='a'\nkind='tap'\nnetwork='nope'",
                "unknown network \"nope\"",
            ),
            (
                "[[network]]\nname='n'\n[[network]]\nname='n'",
                "defined twice",
            ),
            (
                "[[network]]\nname='n'\nsubnet='10.0.0.0/24'\ngateway='10.0.1.1'",
                "outside subnet",
            ),
            ("[[network]]\nname='n'\ngateway='10.0.1.1'", "no subnet"),
            (
                "[[port]]\nname='a'\nkind='floppy'\nnetwork='n'",
                "unknown variant",
            ),
            ("[[network]]\nname='n'\nsubnet='10.0.0.300/24'", "invalid"),
            ("[bridge]\naging_secs=0", "greater than zero"),
            ("[bogus]", "unknown field"),
        ];
        for (text, want) in cases {
            let err = Config::from_toml(text)
                .map_err(|e| e.to_string())
                .and_then(|c| Topology::new(&c).map(|_| ()).map_err(|e| e.to_string()));
            let msg = err.expect_err(text);
            assert!(msg.contains(want), "{text:?}: {msg}");
        }
    }
}
