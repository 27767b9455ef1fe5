//! The libnetwork remote driver protocol on the wire: one JSON body per HTTP POST to
//! `/Plugin.Activate`, `/NetworkDriver.<Method>`. Field names are Docker's (Go's exported
//! names); Docker sends fields we do not read (AuxAddresses, ExposedPorts, ...), so no struct
//! denies unknown fields, and every field is optional where Docker may leave it out.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Docker's option map (`map[string]interface{}`).
pub type Options = BTreeMap<String, Value>;

/// Option key of the `-o key=value` pairs of `docker network create` (a string map).
pub const GENERIC: &str = "com.docker.network.generic";
/// Option key set (true) by `docker network create --internal`.
pub const INTERNAL: &str = "com.docker.network.internal";
/// Option key set (true) by `docker network create --ipv6`.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// Option key of the published ports in ProgramExternalConnectivity.
pub const PORTMAP: &str = "com.docker.network.portmap";

/// One address pool of a network (`driverapi.IPAMData`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    /// The subnet, `10.77.0.0/24`.
    pub pool: String,
    /// The gateway with the pool's length, `10.77.0.1/24`.
    pub gateway: String,
    /// `--aux-address` reservations, by name (`192.168.50.3/24`).
    pub aux_addresses: std::collections::BTreeMap<String, String>,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options")]
    pub options: Option<Options>,
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// `NetworkDriver.DeleteNetwork`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// The endpoint's interface, as Docker's IPAM filled it in (or as the driver answers it).
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    /// `10.77.0.2/24`; empty when Docker assigned none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
}

/// Every request that names only an endpoint (DeleteEndpoint, EndpointOperInfo, Leave,
/// RevokeExternalConnectivity), and Join and ProgramExternalConnectivity with their options.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options")]
    pub options: Option<Options>,
}

/// One published port of `com.docker.network.portmap` (`types.PortBinding`): `Proto` is the
/// IP protocol number, `HostPort..=HostPortEnd` the host ports to pick one from (0: Docker
/// wants one chosen for it).
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub proto: u8,
    #[serde(rename = "IP")]
    pub ip: Option<String>,
    pub port: u16,
    #[serde(rename = "HostIP")]
    pub host_ip: Option<String>,
    pub host_port: u16,
    pub host_port_end: u16,
}

/// `Join`'s interface: Docker moves `SrcName` into the container and renames it
/// `DstPrefix<N>` (eth0, eth1, ...).
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}
