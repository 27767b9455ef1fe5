//! Why a topology is refused: every [`ConfigError`] names the file's key at fault and what to
//! write instead.

use ipnet::{Ipv4Net, Ipv6Net};
use packet::PortProto;
use std::net::{Ipv4Addr, Ipv6Addr};

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
    /// SLAAC asked for where anti-spoofing would drop the addresses it makes.
    #[error(
        "network {0:?}: ipv6_autoconf needs anti_spoofing = false (vswitch cannot know the addresses containers make themselves; without autoconf they get theirs from IPAM)"
    )]
    AutoconfWithAntiSpoofing(String),
    /// An IPv6 prefix on a network without an IPv4 gateway.
    #[error(
        "network {0:?} has subnet6 but no IPv4 gateway: IPv6 networks are dual-stack, add subnet and gateway"
    )]
    Ipv6WithoutIpv4(String),
    /// An IPv6 prefix with host bits set, or too long to hold a gateway and a container.
    #[error(
        "network {network:?}: subnet6 {subnet} must have its host bits clear and be /126 or shorter"
    )]
    BadIpv6Subnet {
        /// The network.
        network: String,
        /// Its prefix.
        subnet: Ipv6Net,
    },
    /// The IPv6 gateway is outside the prefix, or is its subnet-router anycast address.
    #[error(
        "network {network:?}: gateway6 {gateway} must be an address inside {subnet} other than the prefix itself"
    )]
    BadIpv6Gateway {
        /// The network.
        network: String,
        /// The gateway asked for.
        gateway: Ipv6Addr,
        /// Its prefix.
        subnet: Ipv6Net,
    },
    /// The uplink's IPv6 address cannot be a host's.
    #[error(
        "[uplink.ipv6] address {0} is unspecified or multicast: give the host's IPv6 address on the uplink"
    )]
    BadUplinkIpv6(Ipv6Addr),
    /// A port has no network and is not the uplink.
    #[error("port {0:?} has no network: set network = \"NAME\", or name it in [uplink] port")]
    PortWithoutNetwork(String),
    /// The uplink port also names a network.
    #[error("uplink port {0:?} must not belong to a network: remove its network = line")]
    UplinkInNetwork(String),
    /// The uplink names a port that does not exist.
    #[error("[uplink] port {0:?} is not a [[port]] of this file")]
    UnknownUplinkPort(String),
    /// The NAT port range is empty or includes port 0.
    #[error("nat port range {0}-{1} is empty or includes port 0: use e.g. 32768-60999")]
    BadPortRange(u16, u16),
    /// Published ports need an uplink.
    #[error("[[publish]] needs an [uplink] with an address")]
    PublishWithoutUplink,
    /// A published port's container address is in no network's subnet.
    #[error("[[publish]] {proto:?} {host_port}: container_ip {ip} is in no network's subnet")]
    PublishOutsideNetworks {
        /// Protocol.
        proto: PortProto,
        /// Host port.
        host_port: u16,
        /// The address.
        ip: Ipv4Addr,
    },
    /// Two published ports share a host port.
    #[error("host port {1} ({0:?}) is published twice: each host port can go to one container")]
    DuplicatePublish(PortProto, u16),
    /// Two networks have overlapping subnets.
    #[error("networks {0:?} and {1:?} have overlapping subnets: give each its own")]
    OverlappingSubnets(String, String),
    /// Too many ports or networks for 16-bit ids.
    #[error("too many {0}: at most 65535")]
    TooMany(&'static str),
    /// A setting out of range.
    #[error("bridge.{0} must be greater than zero")]
    Zero(&'static str),

    /// A VNI outside VXLAN's 24 bits (or zero).
    #[error("network {network:?}: vni {vni} is out of range: give 1 to 16777215")]
    BadVni {
        /// The network.
        network: String,
        /// Its VNI.
        vni: u32,
    },

    /// Two overlay networks with one VNI.
    #[error(
        "vni {vni} is given to networks {first:?} and {second:?}: each overlay network needs its own"
    )]
    DuplicateVni {
        /// The VNI.
        vni: u32,
        /// The network that has it.
        first: String,
        /// The one that asked for it too.
        second: String,
    },

    /// An overlay network without a VTEP address.
    #[error(
        "network {0:?} is an overlay (vni) but there is no [uplink] with an address: the uplink \
         address is this host's VTEP, where the other hosts send the network's frames"
    )]
    OverlayWithoutUplink(String),

    /// A VLAN id out of 802.1Q's range.
    #[error("network {network:?}: vlan {vlan} is out of range: give 1 to 4094")]
    BadVlan {
        /// The network.
        network: String,
        /// Its VLAN id.
        vlan: u16,
    },

    /// Two macvlan networks on one VLAN (or both untagged) of the uplink.
    #[error(
        "networks {first:?} and {second:?} are both on {} of the uplink: each macvlan \
         network needs its own VLAN",
        match vlan { Some(v) => format!("VLAN {v}"), None => "the untagged LAN".to_string() }
    )]
    DuplicateVlan {
        /// The VLAN (None: untagged).
        vlan: Option<u16>,
        /// The network that has it.
        first: String,
        /// The one that asked for it too.
        second: String,
    },

    /// A VLAN on a bridge network.
    #[error(
        "network {0:?}: vlan needs driver = \"macvlan\" (a bridge network's traffic leaves \
         through the gateway's NAT, untagged)"
    )]
    VlanNeedsMacvlan(String),

    /// A macvlan mode on a bridge network.
    #[error("network {0:?}: macvlan_mode needs driver = \"macvlan\"")]
    ModeNeedsMacvlan(String),

    /// A macvlan network that is also an overlay or dual-stack.
    #[error("network {0:?}: a macvlan network is IPv4 and local: remove vni / subnet6")]
    MacvlanIpv4Only(String),

    /// A macvlan network without an uplink to be bridged onto.
    #[error(
        "network {0:?} is a macvlan network but there is no [uplink]: it is bridged onto the \
         uplink's LAN"
    )]
    MacvlanWithoutUplink(String),

    /// A flood list on a network that is not an overlay.
    #[error(
        "network {0:?}: vtep_peers needs a vni (they are the other hosts of an overlay network)"
    )]
    PeersWithoutVni(String),
}
