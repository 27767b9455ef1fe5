//! [`StoreError`]: why a state operation failed.

use super::SCHEMA_VERSION;
use crate::IpamError;
use ipnet::{Ipv4Net, Ipv6Net};
use packet::PortProto;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Why a state operation failed. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database.
    #[error(
        "state database {0} is in use by another process: is another vswitch daemon running with this --state-dir?"
    )]
    Locked(PathBuf),
    /// The database could not be opened or read.
    #[error("state database {path}: {source}: check the disk and the state dir's permissions")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
    /// A read or write of the open database failed.
    #[error("state database: {0}: check the disk and the state dir's permissions")]
    Db(#[source] Box<redb::Error>),
    /// A record could not be decoded, or an invariant does not hold.
    #[error(
        "state database is inconsistent ({0}): restore a backup of the state dir or remove it to start afresh"
    )]
    Corrupt(String),
    /// The file was written by another version of vswitch.
    #[error(
        "state database has schema version {found}, this vswitch understands {SCHEMA_VERSION}: run the matching vswitch version"
    )]
    Schema {
        /// The version in the file.
        found: u64,
    },
    /// A network or container name that is empty, too long or has odd characters.
    #[error(
        "invalid {what} name {name:?}: use 1 to 128 characters from [a-zA-Z0-9_.-], starting with a letter or digit"
    )]
    InvalidName {
        /// "network" or "container".
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// `bridge`, `host` and `none` cannot be created by hand.
    #[error("network name {0:?} is reserved: pick another name")]
    ReservedName(String),
    /// A network with that name exists.
    #[error("network {0:?} already exists: pick another name or remove it first")]
    DuplicateNetwork(String),
    /// No such network.
    #[error("no network named {0:?}: list them with `vswitch network ls`")]
    UnknownNetwork(String),
    /// The subnet overlaps an existing network's.
    #[error("subnet {subnet} overlaps network {other:?} ({other_subnet}): pick another --subnet")]
    Overlap {
        /// The subnet asked for.
        subnet: Ipv4Net,
        /// The network it overlaps.
        other: String,
        /// That network's subnet.
        other_subnet: Ipv4Net,
    },
    /// A macvlan network without a subnet (it is the LAN's: vswitch cannot pick it).
    #[error(
        "network {0:?}: a macvlan network needs --subnet (the LAN's subnet, with --gateway its \
         router)"
    )]
    MacvlanNeedsSubnet(String),
    /// A macvlan network asked to be dual-stack or an overlay.
    #[error("network {0:?}: a macvlan network is IPv4 only and local (no --ipv6, no overlay)")]
    MacvlanIpv4Only(String),
    /// A VLAN id out of 802.1Q's range.
    #[error("vlan {0} is out of range: give 1 to 4094")]
    BadVlan(u16),
    /// A second macvlan network on one VLAN (or on the untagged LAN).
    #[error(
        "macvlan network {other:?} is on {} of the uplink already: each macvlan network needs \
         its own --vlan",
        match vlan { Some(v) => format!("VLAN {v}"), None => "the untagged LAN".to_string() }
    )]
    DuplicateVlan {
        /// The VLAN (None: untagged).
        vlan: Option<u16>,
        /// The network on it.
        other: String,
    },
    /// An auxiliary address outside the subnet (or its network or broadcast address).
    #[error(
        "aux address {name}={ip} is not a host address of {subnet}: give NAME=IP inside the subnet"
    )]
    BadAuxAddress {
        /// Its name.
        name: String,
        /// The address.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// A CIDR with host bits set.
    #[error("{given} has host bits set: did you mean {suggested}?")]
    HostBits {
        /// As given.
        given: Ipv4Net,
        /// With the host bits cleared.
        suggested: Ipv4Net,
    },
    /// /31 and /32 leave no room for a gateway and containers.
    #[error("subnet {0} is too small: use a prefix of /30 or shorter")]
    SubnetTooSmall(Ipv4Net),
    /// The gateway is outside the subnet or is its network/broadcast address.
    #[error(
        "gateway {gateway} is not a usable host address of {subnet}: pick an address inside the subnet"
    )]
    BadGateway {
        /// The gateway asked for.
        gateway: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// The ip range does not lie inside the subnet.
    #[error("ip range {range} is not inside subnet {subnet}: pick a --ip-range within the subnet")]
    RangeOutside {
        /// The range asked for.
        range: Ipv4Net,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// MTU below IPv4's minimum.
    #[error("mtu {0} is too small: use at least 68 (1500 is the usual value)")]
    BadMtu(u16),
    /// An empty label key.
    #[error("label keys must not be empty: use --label key=value")]
    BadLabel,
    /// All default pools are used.
    #[error("all default address pools are in use: pass --subnet explicitly")]
    PoolsExhausted,
    /// The built-in network cannot be removed.
    #[error("network {0:?} is built in and cannot be removed")]
    Builtin(String),
    /// The network still has leases or published ports.
    #[error(
        "network {name:?} is in use ({leases} connected containers, {ports} published ports): disconnect the containers first"
    )]
    NetworkInUse {
        /// The network.
        name: String,
        /// Leases on it.
        leases: usize,
        /// Published ports pointing into it.
        ports: usize,
    },
    /// The container already has an address on that network.
    #[error(
        "container {container:?} is already connected to network {network:?} with {ip}: disconnect it first"
    )]
    AlreadyConnected {
        /// The container.
        container: String,
        /// The network.
        network: String,
        /// Its address there.
        ip: Ipv4Addr,
    },
    /// The container has no lease on that network.
    #[error("container {container:?} is not connected to network {network:?}: connect it first")]
    NotConnected {
        /// The container.
        container: String,
        /// The network.
        network: String,
    },
    /// Address errors (exhausted, outside the subnet, reserved, in use).
    #[error(transparent)]
    Address(#[from] IpamError),
    /// A MAC address that is multicast or all zeros.
    #[error("MAC {0} is not a unicast address: use a locally administered one such as 02:...")]
    BadMac(String),
    /// The MAC is already used on that network.
    #[error("MAC {mac} is already used by container {container:?} on this network: pick another")]
    MacInUse {
        /// The MAC.
        mac: String,
        /// Who has it.
        container: String,
    },
    /// An interface name longer than 15 bytes or with `/`, whitespace or NUL.
    #[error("invalid interface name {0:?}: use at most 15 characters without '/' or spaces")]
    BadIfname(String),
    /// A netns name or path with a NUL byte or over 4096 bytes.
    #[error("invalid netns {0:?}: give a namespace name or a path")]
    BadNetns(String),
    /// Port 0.
    #[error("port 0 cannot be published: use 1 to 65535")]
    PortZero,
    /// A port range that ends before it starts or runs past 65535 in the container.
    #[error(
        "bad port range {first}-{last} (to container port {container_first}): the range must go up and fit in 1-65535 on both sides"
    )]
    BadRange {
        /// First host port.
        first: u16,
        /// Last host port.
        last: u16,
        /// First container port.
        container_first: u16,
    },
    /// The host port is already published.
    #[error(
        "{proto} host port {port} is already published to {container:?} on network {network:?}: pick another port or remove it with `vswitch port rm`"
    )]
    PortInUse {
        /// The protocol.
        proto: PortProto,
        /// The host port.
        port: u16,
        /// Where it goes now.
        network: String,
        /// Where it goes now.
        container: String,
    },
    /// The IPv6 subnet overlaps an existing network's.
    #[error(
        "IPv6 subnet {subnet} overlaps network {other:?} ({other_subnet}): pick another IPv6 subnet"
    )]
    Overlap6 {
        /// The subnet asked for.
        subnet: Ipv6Net,
        /// The network it overlaps.
        other: String,
        /// That network's IPv6 subnet.
        other_subnet: Ipv6Net,
    },
    /// An IPv6 CIDR with host bits set.
    #[error("{given} has host bits set: did you mean {suggested}?")]
    HostBits6 {
        /// As given.
        given: Ipv6Net,
        /// With the host bits cleared.
        suggested: Ipv6Net,
    },
    /// The IPv6 gateway is outside the subnet or is its subnet-router anycast address.
    #[error(
        "IPv6 gateway {gateway} is not a usable address of {subnet}: pick an address inside the subnet other than {anycast} (its subnet-router anycast address)",
        anycast = .subnet.network()
    )]
    BadGateway6 {
        /// The gateway asked for.
        gateway: Ipv6Addr,
        /// The subnet.
        subnet: Ipv6Net,
    },
    /// Every /64 of the default IPv6 pool is used.
    #[error(
        "all default IPv6 subnets (the /64s of fd00:7673:7700::/48) are in use: give an IPv6 subnet explicitly"
    )]
    V6PoolsExhausted,
    /// An IPv6 address was requested on a network without IPv6.
    #[error(
        "network {0:?} has no IPv6 subnet: request no IPv6 address there, or use a network created with IPv6"
    )]
    NoIpv6(String),
    /// Ports cannot be published into an internal network.
    #[error("network {0:?} is internal (no uplink): publish ports from a non-internal network")]
    InternalNetwork(String),
}

macro_rules! db_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
db_error!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
