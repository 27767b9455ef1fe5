//! Answers shaped like Docker's own JSON, so tools written for `docker network inspect` read
//! vswitch's too. Field names are Docker's (PascalCase, `IPv4Address`, `IPAM`); fields are
//! declared in the order Docker's output sorts them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `docker network inspect NAME`: one element of the array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    /// Attached containers by name.
    pub containers: BTreeMap<String, Endpoint>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// `vswitch`, or `overlay` for a network across the cluster's hosts.
    pub driver: String,
    /// Dual-stack: the network has an IPv6 prefix (its second `IPAM.Config`).
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// Address management.
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    /// 64 hex digits.
    pub id: String,
    /// No uplink.
    pub internal: bool,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Network name.
    pub name: String,
    /// Driver options, with Docker's keys where Docker has one
    /// (`com.docker.network.bridge.enable_icc`, `com.docker.network.driver.mtu`).
    pub options: BTreeMap<String, String>,
    /// An overlay network's hosts (this one too) with their VTEP addresses, as Docker's
    /// overlay shows them; absent for other networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// `local`, or `global` for an overlay network.
    pub scope: String,
}

/// A host of an overlay network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Peer {
    /// The host's name in the cluster.
    pub name: String,
    /// Its VTEP (uplink) address.
    #[serde(rename = "IP")]
    pub ip: String,
}

/// A container's endpoint on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Endpoint {
    /// `ADDRESS/PREFIX`.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// `ADDRESS/PREFIX` on a dual-stack network, else empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
    /// The switch-side interface (vswitch's addition to Docker's fields).
    pub interface: String,
    /// The container's MAC.
    pub mac_address: String,
    /// Container name.
    pub name: String,
}

/// `IPAM` of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    /// One entry per subnet: the IPv4 one, then the IPv6 one on a dual-stack network.
    pub config: Vec<IpamConfig>,
    /// Always `default`.
    pub driver: String,
    /// IPAM driver options (none).
    pub options: BTreeMap<String, String>,
}

/// One subnet of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    /// The gateway address.
    pub gateway: String,
    /// Allocation restricted to this range, when set.
    #[serde(rename = "IPRange")]
    pub ip_range: Option<String>,
    /// The subnet.
    pub subnet: String,
    /// Addresses never handed out, by name (Docker's `--aux-address`); left out when none.
    #[serde(
        rename = "AuxiliaryAddresses",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub aux_addresses: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn inspect_uses_dockers_field_names() {
        let n = NetworkInspect {
            containers: BTreeMap::from([(
                "web".to_string(),
                Endpoint {
                    ipv4_address: "172.18.0.2/16".into(),
                    ipv6_address: String::new(),
                    interface: "vsw0".into(),
                    mac_address: "02:42:ac:12:00:02".into(),
                    name: "web".into(),
                },
            )]),
            created: 1,
            driver: "vswitch".into(),
            enable_ipv6: false,
            ipam: Ipam {
                config: vec![IpamConfig {
                    gateway: "172.18.0.1".into(),
                    ip_range: None,
                    subnet: "172.18.0.0/16".into(),
                    aux_addresses: BTreeMap::new(),
                }],
                driver: "default".into(),
                options: BTreeMap::new(),
            },
            id: "ab".repeat(32),
            internal: false,
            labels: BTreeMap::new(),
            name: "shop".into(),
            options: BTreeMap::new(),
            peers: Vec::new(),
            scope: "local".into(),
        };
        let v = serde_json::to_value(&n).unwrap();
        assert!(v.get("Peers").is_none(), "only overlay networks have peers");
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
        assert_eq!(v["IPAM"]["Config"][0]["IPRange"], serde_json::Value::Null);
        assert_eq!(v["EnableIPv6"], false);
        assert_eq!(v["Containers"]["web"]["IPv4Address"], "172.18.0.2/16");
        assert_eq!(v["Containers"]["web"]["MacAddress"], "02:42:ac:12:00:02");
        // The text keeps Docker's sorted key order.
        let text = serde_json::to_string(&n).unwrap();
        let keys = [
            "\"Containers\"",
            "\"Created\"",
            "\"Driver\"",
            "\"EnableIPv6\"",
            "\"IPAM\"",
        ];
        let at: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        let back: NetworkInspect = serde_json::from_value(v).unwrap();
        assert_eq!(back, n);
    }
}
