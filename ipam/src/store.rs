//! Persistent control-plane state: networks, leases and published ports in one redb file.
//!
//! [`Store`] owns an embedded transactional database (redb, copy-on-write B-trees, checksummed
//! commit slots). Every mutating method runs as **one** write transaction with
//! `Durability::Immediate` (fsync on commit), so a process killed at any instant (kill -9) leaves
//! the file either before or after the operation, never in between; redb repairs its allocator
//! state on the next open. Reads run in their own snapshot.
//!
//! Tables (keys are ordered, values are JSON for debuggability):
//! - `networks`: name → [`NetworkRecord`]
//! - `leases`: (network, ip as u32) → [`Lease`]
//! - `lease_by_container`: (network, container) → ip as u32 (index of `leases`)
//! - `published`: (proto, host port) → [`Publish`]
//! - `meta`: `schema_version`, `network_seq` (creation counter used for network ids)
//! - `lease_by_mac`, `free_ranges`, `published_by_container`: indexes derived from the tables
//!   above, rebuilt at every open (see [`derived`])
//!
//! Invariants (checked by [`Store::verify`], kept by every write):
//! - network subnets never overlap; a gateway lies inside its subnet and is neither the network
//!   nor the broadcast address; an `ip_range` lies inside its subnet; prefixes are at most /30;
//! - a lease's address lies in its network's subnet and is not the network, broadcast or gateway
//!   address; an address is leased at most once per network (it is the key), a container holds at
//!   most one lease per network, and `lease_by_container` is exactly the inverse of `leases`;
//! - MAC addresses are unique per network;
//! - a published port refers to a live lease (network, container) and carries its address; a
//!   (proto, host port) pair is published at most once.
//!
//! The file is opened exclusively: a second process opening the same file gets
//! [`StoreError::Locked`]. Only one write transaction runs at a time inside the process, so the
//! `&self` methods may be called from several threads.

mod derived;

use crate::IpamError;
use derived::{FREE, LEASE_BY_MAC, PUBLISHED_BY_CONTAINER};
use ipnet::Ipv4Net;
use packet::{MacAddr, PortProto};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

const NETWORKS: TableDefinition<&str, &str> = TableDefinition::new("networks");
const LEASES: TableDefinition<(&str, u32), &str> = TableDefinition::new("leases");
const LEASE_BY_CONTAINER: TableDefinition<(&str, &str), u32> =
    TableDefinition::new("lease_by_container");
const PUBLISHED: TableDefinition<(&str, u16), &str> = TableDefinition::new("published");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const SCHEMA_VERSION: u64 = 1;
/// Name of the built-in network that exists from the first start (Docker's `bridge`).
pub const DEFAULT_BRIDGE: &str = "bridge";
/// Names a user may not give a network (Docker reserves the same three).
const RESERVED_NAMES: [&str; 3] = ["bridge", "host", "none"];
const DEFAULT_MTU: u16 = 1500;
/// Longest network or container name accepted.
const MAX_NAME_LEN: usize = 128;
/// Page cache of the database; the state is small.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

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

/// A network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// 64 hex digits, stable for the network's life (derived from name and creation counter).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The subnet (host bits clear, /30 or shorter).
    pub subnet: Ipv4Net,
    /// The gateway address (answers ARP, ping and DNS).
    pub gateway: Ipv4Addr,
    /// Dynamic allocation is restricted to this range when set.
    pub ip_range: Option<Ipv4Net>,
    /// No uplink.
    pub internal: bool,
    /// Inter-container communication allowed.
    pub icc: bool,
    /// Containers may send only from their own MAC and address (records written before this
    /// field existed read as on).
    #[serde(default = "yes")]
    pub anti_spoofing: bool,
    /// MTU of the network's links.
    pub mtu: u16,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// The default `bridge` network: cannot be removed, has no embedded DNS.
    pub builtin: bool,
}

fn yes() -> bool {
    true
}

/// What `network create` asks for. Build with [`NetworkSpec::new`] (icc defaults to true).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, up to 128 characters).
    pub name: String,
    /// Subnet; None takes the next free default pool.
    pub subnet: Option<Ipv4Net>,
    /// Gateway; None takes the subnet's first host.
    pub gateway: Option<Ipv4Addr>,
    /// Restrict dynamic allocation to this range (inside the subnet).
    pub ip_range: Option<Ipv4Net>,
    /// No uplink.
    pub internal: bool,
    /// Inter-container communication.
    pub icc: bool,
    /// Enforce each container's MAC and address on its port.
    pub anti_spoofing: bool,
    /// MTU; None means 1500.
    pub mtu: Option<u16>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl NetworkSpec {
    /// A spec with Docker's defaults: pool subnet, first-host gateway, icc on, MTU 1500.
    pub fn new(name: impl Into<String>) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            subnet: None,
            gateway: None,
            ip_range: None,
            internal: false,
            icc: true,
            anti_spoofing: true,
            mtu: None,
            labels: BTreeMap::new(),
        }
    }
}

/// One container's address on one network. The address is the key it is stored under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Container name.
    pub container: String,
    /// MAC, lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Network namespace (name or path) the container side lives in.
    pub netns: String,
    /// Interface name inside the container.
    pub ifname: String,
    /// Host-side interface name.
    pub host_ifname: String,
}

/// What the caller knows about the link when allocating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseMeta {
    /// Network namespace.
    pub netns: String,
    /// Interface name inside the container.
    pub ifname: String,
    /// Host-side interface name.
    pub host_ifname: String,
    /// A MAC to use; None derives 02:42:a:b:c:d from the address (as Docker does).
    pub mac: Option<[u8; 6]>,
}

/// A published port: traffic to the uplink address on (proto, host port) goes here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    /// Network of the container.
    pub network: String,
    /// Container name.
    pub container: String,
    /// Its address on that network while it is connected (copied from the lease); none while
    /// it is not: the port stays the container's and comes back with its next lease
    /// ([`Store::republish`]), as Docker's published ports do across restarts.
    #[serde(default)]
    pub container_ip: Option<Ipv4Addr>,
    /// Port inside the container.
    pub container_port: u16,
    /// The host address it is bound to: none for every address, a loopback address for the
    /// host only.
    #[serde(default)]
    pub host_ip: Option<Ipv4Addr>,
    /// The host's own connections reach it through the daemon's host proxy; off when the
    /// runtime holds the host port itself (Podman binds every published port to reserve it).
    #[serde(default = "yes")]
    pub host_proxy: bool,
}

/// Where [`Store::publish_range`] sends ports: the container's first port.
#[derive(Debug, Clone, Copy)]
pub struct PublishTarget<'a> {
    /// Network of the container.
    pub network: &'a str,
    /// Container name.
    pub container: &'a str,
    /// Container port of the range's first host port.
    pub container_port: u16,
    /// See [`Publish::host_proxy`].
    pub host_proxy: bool,
}

/// What [`Store::release`] gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The address.
    pub ip: Ipv4Addr,
    /// The lease.
    pub lease: Lease,
    /// Ports that were published to this container on this network, as they were: removed in
    /// the same transaction, or (unless asked to remove them) kept without an address.
    pub unpublished: Vec<(PortProto, u16, Publish)>,
}

/// Makes six random bytes a locally administered unicast MAC (for callers that want random
/// MACs: pass the result as [`LeaseMeta::mac`]).
pub fn local_mac(mut bytes: [u8; 6]) -> [u8; 6] {
    bytes[0] = (bytes[0] | 0x02) & !0x01;
    bytes
}

/// Lowercase colon-separated text of a MAC.
pub fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Docker's default address pools: 172.18.0.0/16 … 172.31.0.0/16, then 192.168.0.0/20 …
/// 192.168.240.0/20. (172.17.0.0/16 belongs to the built-in `bridge`.)
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let wide = (18u8..=31).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
    let narrow =
        (0u8..16).filter_map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20).ok());
    wide.chain(narrow)
}

fn default_bridge_spec() -> (Ipv4Net, Ipv4Addr) {
    (
        Ipv4Net::new_assert(Ipv4Addr::new(172, 17, 0, 0), 16),
        Ipv4Addr::new(172, 17, 0, 1),
    )
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

fn check_ifname(name: &str) -> Result<(), StoreError> {
    let ok = name.len() <= 15
        && !name
            .bytes()
            .any(|c| c == b'/' || c == 0 || c.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadIfname(name.to_string()))
    }
}

fn check_cidr(net: Ipv4Net) -> Result<(), StoreError> {
    if net != net.trunc() {
        return Err(StoreError::HostBits {
            given: net,
            suggested: net.trunc(),
        });
    }
    Ok(())
}

/// Network, broadcast and gateway addresses are never leased (prefixes are at most /30).
fn reserved(net: &NetworkRecord, ip: Ipv4Addr) -> bool {
    ip == net.gateway || ip == net.subnet.network() || ip == net.subnet.broadcast()
}

fn network_id(name: &str, seq: u64) -> String {
    // SipHash with fixed keys: deterministic for (name, seq); ids are stored, so the hash only
    // has to be stable within one run. seq makes a re-created name get a new id.
    (0u8..4)
        .map(|i| {
            let mut h = DefaultHasher::new();
            ("vswitch-network", i, name, seq).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn decode<T: for<'de> Deserialize<'de>>(
    what: &str,
    key: &str,
    json: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what} {key}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))
}

fn read_network(
    table: &impl ReadableTable<&'static str, &'static str>,
    name: &str,
) -> Result<Option<NetworkRecord>, StoreError> {
    match table.get(name)? {
        Some(v) => decode("network", name, v.value()).map(Some),
        None => Ok(None),
    }
}

fn all_networks(
    table: &impl ReadableTable<&'static str, &'static str>,
) -> Result<Vec<NetworkRecord>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        out.push(decode("network", k.value(), v.value())?);
    }
    Ok(out)
}

fn network_leases(
    table: &impl ReadableTable<(&'static str, u32), &'static str>,
    network: &str,
) -> Result<Vec<(Ipv4Addr, Lease)>, StoreError> {
    let mut out = Vec::new();
    for row in table.range((network, 0u32)..=(network, u32::MAX))? {
        let (k, v) = row?;
        let ip = Ipv4Addr::from(k.value().1);
        out.push((ip, decode("lease", &format!("{network}/{ip}"), v.value())?));
    }
    Ok(out)
}

fn all_published(
    table: &impl ReadableTable<(&'static str, u16), &'static str>,
) -> Result<Vec<(PortProto, u16, Publish)>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let (proto, port) = k.value();
        let key = format!("{proto}/{port}");
        let proto = PortProto::from_str(proto)
            .map_err(|_| StoreError::Corrupt(format!("published port {key}: bad protocol")))?;
        out.push((proto, port, decode("published port", &key, v.value())?));
    }
    Ok(out)
}

/// The persistent state. See the module docs for tables and invariants.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and its tables. The parent directory
    /// must exist. Fails with [`StoreError::Locked`] if another process has it open.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.clone()),
                e => StoreError::Open {
                    path: path.clone(),
                    source: Box::new(e.into()),
                },
            })?;
        let store = Store { db, path };
        let txn = store.db.begin_write()?;
        {
            txn.open_table(NETWORKS)?;
            txn.open_table(LEASES)?;
            txn.open_table(LEASE_BY_CONTAINER)?;
            txn.open_table(PUBLISHED)?;
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => return Err(StoreError::Schema { found }),
            }
        }
        match derived::rebuild(&txn) {
            // an undecodable record: fail in `verify` as before, not in `open` (nothing written)
            Err(StoreError::Corrupt(_)) => {}
            r => r?,
        }
        txn.commit()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// Runs `f` in one write transaction and commits only if it succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write()?;
        let out = f(&txn)?; // on error `txn` is dropped, which aborts it
        txn.commit()?;
        Ok(out)
    }

    /// Creates a network. Without a subnet, takes the first default pool that overlaps no
    /// existing network; the gateway defaults to the subnet's first host.
    pub fn create_network(&self, spec: NetworkSpec) -> Result<NetworkRecord, StoreError> {
        check_name("network", &spec.name)?;
        if RESERVED_NAMES.contains(&spec.name.as_str()) {
            return Err(StoreError::ReservedName(spec.name));
        }
        if let Some(mtu) = spec.mtu
            && mtu < 68
        {
            return Err(StoreError::BadMtu(mtu));
        }
        if spec.labels.keys().any(|k| k.is_empty()) {
            return Err(StoreError::BadLabel);
        }
        if let Some(subnet) = spec.subnet {
            check_cidr(subnet)?;
        }
        if let Some(range) = spec.ip_range {
            check_cidr(range)?;
        }
        self.write(|txn| {
            let mut nets = txn.open_table(NETWORKS)?;
            if read_network(&nets, &spec.name)?.is_some() {
                return Err(StoreError::DuplicateNetwork(spec.name.clone()));
            }
            let existing = all_networks(&nets)?;
            let subnet = match spec.subnet {
                Some(s) => {
                    if let Some(o) = existing.iter().find(|o| overlaps(s, o.subnet)) {
                        return Err(StoreError::Overlap {
                            subnet: s,
                            other: o.name.clone(),
                            other_subnet: o.subnet,
                        });
                    }
                    s
                }
                None => default_pools()
                    .find(|p| !existing.iter().any(|o| overlaps(*p, o.subnet)))
                    .ok_or(StoreError::PoolsExhausted)?,
            };
            let record = build_record(txn, &spec, subnet, false)?;
            nets.insert(record.name.as_str(), encode(&record)?.as_str())?;
            derived::init_free(txn, &record)?;
            Ok(record)
        })
    }

    /// Creates the built-in `bridge` network (172.17.0.0/16, gateway 172.17.0.1) if absent and
    /// returns it.
    pub fn ensure_default_bridge(&self) -> Result<NetworkRecord, StoreError> {
        self.write(|txn| {
            let mut nets = txn.open_table(NETWORKS)?;
            if let Some(n) = read_network(&nets, DEFAULT_BRIDGE)? {
                return Ok(n);
            }
            let (subnet, gateway) = default_bridge_spec();
            if let Some(o) = all_networks(&nets)?
                .into_iter()
                .find(|o| overlaps(subnet, o.subnet))
            {
                return Err(StoreError::Overlap {
                    subnet,
                    other: o.name,
                    other_subnet: o.subnet,
                });
            }
            let mut spec = NetworkSpec::new(DEFAULT_BRIDGE);
            spec.gateway = Some(gateway);
            let record = build_record(txn, &spec, subnet, true)?;
            nets.insert(record.name.as_str(), encode(&record)?.as_str())?;
            derived::init_free(txn, &record)?;
            Ok(record)
        })
    }

    /// Removes a network that has no leases and no published ports; refuses `bridge`.
    pub fn remove_network(&self, name: &str) -> Result<NetworkRecord, StoreError> {
        self.write(|txn| {
            let mut nets = txn.open_table(NETWORKS)?;
            let net =
                read_network(&nets, name)?.ok_or(StoreError::UnknownNetwork(name.to_string()))?;
            if net.builtin {
                return Err(StoreError::Builtin(name.to_string()));
            }
            let leases = txn
                .open_table(LEASES)?
                .range((name, 0u32)..=(name, u32::MAX))?
                .count();
            let ports = derived::network_ports(txn, name)?;
            if leases > 0 {
                return Err(StoreError::NetworkInUse {
                    name: name.to_string(),
                    leases,
                    ports: ports.len(),
                });
            }
            // What is left is ports of disconnected containers: they go with the network.
            let mut published = txn.open_table(PUBLISHED)?;
            let mut index = txn.open_table(PUBLISHED_BY_CONTAINER)?;
            for (container, proto, port) in ports {
                published.remove((proto.as_str(), port))?;
                index.remove((name, container.as_str(), proto.as_str(), port))?;
            }
            nets.remove(name)?;
            derived::drop_free(txn, name)?;
            Ok(net)
        })
    }

    /// All networks, by name.
    pub fn networks(&self) -> Result<Vec<NetworkRecord>, StoreError> {
        all_networks(&self.read()?.open_table(NETWORKS)?)
    }

    /// One network.
    pub fn network(&self, name: &str) -> Result<Option<NetworkRecord>, StoreError> {
        read_network(&self.read()?.open_table(NETWORKS)?, name)
    }

    /// Leases an address on `network` to `container`: `requested` if given (anywhere in the
    /// subnet, as Docker allows, but not reserved or leased), else the lowest free address of the
    /// ip range (or subnet). One write transaction: a crash leaves either no lease or this one.
    pub fn allocate(
        &self,
        network: &str,
        container: &str,
        requested: Option<Ipv4Addr>,
        meta: LeaseMeta,
    ) -> Result<(Ipv4Addr, Lease), StoreError> {
        check_name("container", container)?;
        check_ifname(&meta.ifname)?;
        check_ifname(&meta.host_ifname)?;
        if meta.netns.len() > 4096 || meta.netns.contains('\0') {
            return Err(StoreError::BadNetns(meta.netns));
        }
        if let Some(mac) = meta.mac
            && (mac[0] & 0x01 != 0 || mac == [0; 6])
        {
            return Err(StoreError::BadMac(format_mac(mac)));
        }
        self.write(|txn| {
            let net = read_network(&txn.open_table(NETWORKS)?, network)?
                .ok_or(StoreError::UnknownNetwork(network.to_string()))?;
            let mut by_container = txn.open_table(LEASE_BY_CONTAINER)?;
            if let Some(ip) = by_container.get((network, container))? {
                return Err(StoreError::AlreadyConnected {
                    container: container.to_string(),
                    network: network.to_string(),
                    ip: Ipv4Addr::from(ip.value()),
                });
            }
            let mut leases = txn.open_table(LEASES)?;
            let mut free = txn.open_table(FREE)?;
            let ip = match requested {
                Some(ip) => {
                    if !net.subnet.contains(&ip) {
                        return Err(IpamError::OutsideSubnet(ip, net.subnet).into());
                    }
                    if reserved(&net, ip) {
                        return Err(IpamError::Reserved(ip, net.subnet).into());
                    }
                    if leases.get((network, u32::from(ip)))?.is_some() {
                        return Err(IpamError::InUse(ip).into());
                    }
                    derived::take(&mut free, &net, ip)?;
                    ip
                }
                None => derived::take_lowest(&mut free, &net)?,
            };
            let mac = format_mac(meta.mac.unwrap_or(MacAddr::docker(ip).0));
            let mut by_mac = txn.open_table(LEASE_BY_MAC)?;
            let other = by_mac.get((network, mac.as_str()))?.map(|v| v.value());
            if let Some(other) = other {
                let key = format!("{network}/{}", Ipv4Addr::from(other));
                let other: Lease = match leases.get((network, other))? {
                    Some(v) => decode("lease", &key, v.value())?,
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "MAC index points to missing lease {key}"
                        )));
                    }
                };
                return Err(StoreError::MacInUse {
                    mac,
                    container: other.container,
                });
            }
            let lease = Lease {
                container: container.to_string(),
                mac,
                netns: meta.netns,
                ifname: meta.ifname,
                host_ifname: meta.host_ifname,
            };
            leases.insert((network, u32::from(ip)), encode(&lease)?.as_str())?;
            by_container.insert((network, container), u32::from(ip))?;
            by_mac.insert((network, lease.mac.as_str()), u32::from(ip))?;
            Ok((ip, lease))
        })
    }

    /// Gives back `container`'s address on `network`. The ports published to it lose their
    /// address in the same transaction, and are removed too when `unpublish`. `Ok(None)` if it
    /// had no lease there.
    pub fn release(
        &self,
        network: &str,
        container: &str,
        unpublish: bool,
    ) -> Result<Option<Released>, StoreError> {
        self.write(|txn| {
            let net = read_network(&txn.open_table(NETWORKS)?, network)?
                .ok_or(StoreError::UnknownNetwork(network.to_string()))?;
            let ip = match txn
                .open_table(LEASE_BY_CONTAINER)?
                .remove((network, container))?
            {
                Some(ip) => Ipv4Addr::from(ip.value()),
                None => return Ok(None),
            };
            let key = format!("{network}/{ip}");
            let lease: Lease = match txn.open_table(LEASES)?.remove((network, u32::from(ip)))? {
                Some(v) => decode("lease", &key, v.value())?,
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "index points to missing lease {key}"
                    )));
                }
            };
            txn.open_table(LEASE_BY_MAC)?
                .remove((network, lease.mac.as_str()))?;
            derived::give_back(&mut txn.open_table(FREE)?, &net, ip)?;
            let mut published = txn.open_table(PUBLISHED)?;
            let mut index = txn.open_table(PUBLISHED_BY_CONTAINER)?;
            let mut unpublished = Vec::new();
            for (proto, port) in derived::container_ports(&index, network, container)? {
                let key = format!("{proto}/{port}");
                let parsed = PortProto::from_str(&proto).map_err(|_| {
                    StoreError::Corrupt(format!("published port {key}: bad protocol"))
                })?;
                let p: Publish = match published.remove((proto.as_str(), port))? {
                    Some(v) => decode("published port", &key, v.value())?,
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "port index points to missing published port {key}"
                        )));
                    }
                };
                if unpublish {
                    index.remove((network, container, proto.as_str(), port))?;
                } else {
                    let kept = Publish {
                        container_ip: None,
                        ..p.clone()
                    };
                    published.insert((proto.as_str(), port), encode(&kept)?.as_str())?;
                }
                unpublished.push((parsed, port, p));
            }
            Ok(Some(Released {
                ip,
                lease,
                unpublished,
            }))
        })
    }

    /// Leases on one network, by address. An unknown network has none.
    pub fn leases(&self, network: &str) -> Result<Vec<(Ipv4Addr, Lease)>, StoreError> {
        network_leases(&self.read()?.open_table(LEASES)?, network)
    }

    /// Every lease as (network, address, lease), by network then address.
    pub fn all_leases(&self) -> Result<Vec<(String, Ipv4Addr, Lease)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(LEASES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let (net, ip) = k.value();
            let ip = Ipv4Addr::from(ip);
            let lease = decode("lease", &format!("{net}/{ip}"), v.value())?;
            out.push((net.to_string(), ip, lease));
        }
        Ok(out)
    }

    /// Publishes (proto, host port) to `container_port` of `container` on `network`, which must
    /// hold a lease there, on every host address. Refuses a port already published and internal
    /// networks.
    pub fn publish(
        &self,
        proto: PortProto,
        host_port: u16,
        network: &str,
        container: &str,
        container_port: u16,
    ) -> Result<Publish, StoreError> {
        let target = PublishTarget {
            network,
            container,
            container_port,
            host_proxy: true,
        };
        let mut all = self.publish_range(proto, None, host_port, host_port, target)?;
        all.pop()
            .map(|(_, p)| p)
            .ok_or(StoreError::Corrupt("publishing one port gave none".into()))
    }

    /// Publishes host ports `first..=last` of `proto` on `host_ip` (none: every address) to
    /// the container's ports from `target.container_port` on, in step: all of them or (on the
    /// first refusal) none, in one transaction.
    pub fn publish_range(
        &self,
        proto: PortProto,
        host_ip: Option<Ipv4Addr>,
        first: u16,
        last: u16,
        target: PublishTarget<'_>,
    ) -> Result<Vec<(u16, Publish)>, StoreError> {
        let PublishTarget {
            network,
            container,
            container_port,
            host_proxy,
        } = target;
        if first == 0 || container_port == 0 {
            return Err(StoreError::PortZero);
        }
        let bad_range = StoreError::BadRange {
            first,
            last,
            container_first: container_port,
        };
        if last < first || u32::from(container_port) + u32::from(last - first) > 65535 {
            return Err(bad_range);
        }
        self.write(|txn| {
            let net = read_network(&txn.open_table(NETWORKS)?, network)?
                .ok_or(StoreError::UnknownNetwork(network.to_string()))?;
            if net.internal {
                return Err(StoreError::InternalNetwork(network.to_string()));
            }
            let ip = txn
                .open_table(LEASE_BY_CONTAINER)?
                .get((network, container))?
                .map(|v| Ipv4Addr::from(v.value()))
                .ok_or_else(|| StoreError::NotConnected {
                    container: container.to_string(),
                    network: network.to_string(),
                })?;
            let mut published = txn.open_table(PUBLISHED)?;
            let mut index = txn.open_table(PUBLISHED_BY_CONTAINER)?;
            let mut out = Vec::new();
            for (host_port, cport) in (first..=last).zip(container_port..) {
                if let Some(v) = published.get((proto.as_str(), host_port))? {
                    let other: Publish =
                        decode("published port", &format!("{proto}/{host_port}"), v.value())?;
                    return Err(StoreError::PortInUse {
                        proto,
                        port: host_port,
                        network: other.network,
                        container: other.container,
                    });
                }
                let p = Publish {
                    network: network.to_string(),
                    container: container.to_string(),
                    container_ip: Some(ip),
                    container_port: cport,
                    host_ip: host_ip.filter(|a| !a.is_unspecified()),
                    host_proxy,
                };
                published.insert((proto.as_str(), host_port), encode(&p)?.as_str())?;
                index.insert((network, container, proto.as_str(), host_port), ())?;
                out.push((host_port, p));
            }
            Ok(out)
        })
    }

    /// Gives the ports published to `container` on `network` its current address again (after
    /// a disconnect and a new lease); what they are now. None when it holds no lease there.
    pub fn republish(
        &self,
        network: &str,
        container: &str,
    ) -> Result<Vec<(PortProto, u16, Publish)>, StoreError> {
        self.write(|txn| {
            let Some(ip) = txn
                .open_table(LEASE_BY_CONTAINER)?
                .get((network, container))?
                .map(|v| Ipv4Addr::from(v.value()))
            else {
                return Ok(Vec::new());
            };
            let index = txn.open_table(PUBLISHED_BY_CONTAINER)?;
            let mut published = txn.open_table(PUBLISHED)?;
            let mut out = Vec::new();
            for (proto, port) in derived::container_ports(&index, network, container)? {
                let key = format!("{proto}/{port}");
                let parsed = PortProto::from_str(&proto).map_err(|_| {
                    StoreError::Corrupt(format!("published port {key}: bad protocol"))
                })?;
                let mut p: Publish = match published.get((proto.as_str(), port))? {
                    Some(v) => decode("published port", &key, v.value())?,
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "port index points to missing published port {key}"
                        )));
                    }
                };
                p.container_ip = Some(ip);
                published.insert((proto.as_str(), port), encode(&p)?.as_str())?;
                out.push((parsed, port, p));
            }
            Ok(out)
        })
    }

    /// Removes a published port; `Ok(None)` if it was not published.
    pub fn unpublish(
        &self,
        proto: PortProto,
        host_port: u16,
    ) -> Result<Option<Publish>, StoreError> {
        Ok(self
            .unpublish_range(proto, host_port, host_port)?
            .pop()
            .map(|(_, p)| p))
    }

    /// Removes the published ports of `proto` in `first..=last`, in one transaction; those
    /// that were published (none: an empty list).
    pub fn unpublish_range(
        &self,
        proto: PortProto,
        first: u16,
        last: u16,
    ) -> Result<Vec<(u16, Publish)>, StoreError> {
        self.write(|txn| {
            let mut published = txn.open_table(PUBLISHED)?;
            let mut index = txn.open_table(PUBLISHED_BY_CONTAINER)?;
            let mut out = Vec::new();
            for host_port in first..=last {
                let key = format!("{proto}/{host_port}");
                let p: Publish = match published.remove((proto.as_str(), host_port))? {
                    Some(v) => decode("published port", &key, v.value())?,
                    None => continue,
                };
                index.remove((
                    p.network.as_str(),
                    p.container.as_str(),
                    proto.as_str(),
                    host_port,
                ))?;
                out.push((host_port, p));
            }
            Ok(out)
        })
    }

    /// Published ports, by protocol then host port.
    pub fn published(&self) -> Result<Vec<(PortProto, u16, Publish)>, StoreError> {
        all_published(&self.read()?.open_table(PUBLISHED)?)
    }

    /// Checks every invariant of the module docs over one snapshot; run it at startup.
    /// Returns the number of leases checked.
    pub fn verify(&self) -> Result<usize, StoreError> {
        let txn = self.read()?;
        let bad = |m: String| Err(StoreError::Corrupt(m));
        let nets = all_networks(&txn.open_table(NETWORKS)?)?;
        let by_name: BTreeMap<&str, &NetworkRecord> =
            nets.iter().map(|n| (n.name.as_str(), n)).collect();
        for (i, a) in nets.iter().enumerate() {
            if a.subnet != a.subnet.trunc() || a.subnet.prefix_len() > 30 {
                return bad(format!("network {:?} has subnet {}", a.name, a.subnet));
            }
            if !a.subnet.contains(&a.gateway)
                || a.gateway == a.subnet.network()
                || a.gateway == a.subnet.broadcast()
            {
                return bad(format!("network {:?} has gateway {}", a.name, a.gateway));
            }
            if let Some(r) = a.ip_range
                && !a.subnet.contains(&r)
            {
                return bad(format!("network {:?} has ip range {r}", a.name));
            }
            if let Some(b) = nets[i + 1..].iter().find(|b| overlaps(a.subnet, b.subnet)) {
                return bad(format!("networks {:?} and {:?} overlap", a.name, b.name));
            }
        }
        let mut leases: BTreeMap<(String, String), Ipv4Addr> = BTreeMap::new();
        let mut macs: BTreeSet<(String, String)> = BTreeSet::new();
        let mut count = 0;
        for row in txn.open_table(LEASES)?.iter()? {
            let (k, v) = row?;
            let (net, ip) = k.value();
            let ip = Ipv4Addr::from(ip);
            let lease: Lease = decode("lease", &format!("{net}/{ip}"), v.value())?;
            let Some(n) = by_name.get(net) else {
                return bad(format!("lease {net}/{ip} on a missing network"));
            };
            if !n.subnet.contains(&ip) || reserved(n, ip) {
                return bad(format!("lease {net}/{ip} outside {} or reserved", n.subnet));
            }
            if leases
                .insert((net.to_string(), lease.container.clone()), ip)
                .is_some()
            {
                return bad(format!("{:?} leased twice on {net}", lease.container));
            }
            if !macs.insert((net.to_string(), lease.mac.clone())) {
                return bad(format!("MAC {} used twice on {net}", lease.mac));
            }
            count += 1;
        }
        let mut index = BTreeMap::new();
        for row in txn.open_table(LEASE_BY_CONTAINER)?.iter()? {
            let (k, v) = row?;
            let (net, c) = k.value();
            index.insert((net.to_string(), c.to_string()), Ipv4Addr::from(v.value()));
        }
        if index != leases {
            return bad("container index disagrees with leases".to_string());
        }
        for (proto, port, p) in all_published(&txn.open_table(PUBLISHED)?)? {
            // A port without an address belongs to a disconnected container; a connect may
            // have leased again without giving it back yet (`republish` is its own step).
            if let Some(ip) = p.container_ip
                && leases.get(&(p.network.clone(), p.container.clone())) != Some(&ip)
            {
                return bad(format!("{proto}/{port} points to no live lease"));
            }
        }
        derived::verify(&txn, &nets)?;
        Ok(count)
    }
}

/// The record for `spec` on `subnet`, taking the next creation sequence number.
fn build_record(
    txn: &WriteTransaction,
    spec: &NetworkSpec,
    subnet: Ipv4Net,
    builtin: bool,
) -> Result<NetworkRecord, StoreError> {
    if subnet.prefix_len() > 30 {
        return Err(StoreError::SubnetTooSmall(subnet));
    }
    let first_host = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    let gateway = spec.gateway.unwrap_or(first_host);
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(StoreError::BadGateway { gateway, subnet });
    }
    if let Some(range) = spec.ip_range
        && !subnet.contains(&range)
    {
        return Err(StoreError::RangeOutside { range, subnet });
    }
    let mut meta = txn.open_table(META)?;
    let seq = meta.get("network_seq")?.map(|v| v.value()).unwrap_or(0);
    meta.insert("network_seq", seq + 1)?;
    Ok(NetworkRecord {
        id: network_id(&spec.name, seq),
        name: spec.name.clone(),
        subnet,
        gateway,
        ip_range: spec.ip_range,
        internal: spec.internal,
        icc: spec.icc,
        anti_spoofing: spec.anti_spoofing,
        mtu: spec.mtu.unwrap_or(DEFAULT_MTU),
        labels: spec.labels.clone(),
        created_unix: now_unix(),
        builtin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn tmp() -> Tmp {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        Tmp { _dir: dir, path }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn spec(name: &str, subnet: Option<&str>) -> NetworkSpec {
        let mut s = NetworkSpec::new(name);
        s.subnet = subnet.map(net);
        s
    }

    fn meta() -> LeaseMeta {
        LeaseMeta {
            netns: "ns1".into(),
            ifname: "eth0".into(),
            host_ifname: "vethabc".into(),
            mac: None,
        }
    }

    #[test]
    fn default_bridge_is_docker_like_and_idempotent() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let b = s.ensure_default_bridge().unwrap();
        assert_eq!(b.subnet, net("172.17.0.0/16"));
        assert_eq!(b.gateway, ip("172.17.0.1"));
        assert!(b.builtin && b.icc && !b.internal);
        assert_eq!(b.mtu, 1500);
        assert_eq!(b.id.len(), 64);
        assert!(b.id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(s.ensure_default_bridge().unwrap(), b);
        assert_eq!(s.networks().unwrap(), vec![b]);
    }

    #[test]
    fn pool_subnets_follow_docker_order() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.ensure_default_bridge().unwrap();
        let a = s.create_network(spec("a", None)).unwrap();
        assert_eq!(a.subnet, net("172.18.0.0/16"));
        assert_eq!(a.gateway, ip("172.18.0.1"));
        s.create_network(spec("b", Some("172.19.128.0/24")))
            .unwrap();
        let c = s.create_network(spec("c", None)).unwrap();
        assert_eq!(c.subnet, net("172.20.0.0/16"), "172.19/16 overlaps b");
        for i in 0..11 {
            s.create_network(spec(&format!("x{i}"), None)).unwrap();
        }
        let n = s.create_network(spec("n", None)).unwrap();
        assert_eq!(n.subnet, net("192.168.0.0/20"));
        let n2 = s.create_network(spec("n2", None)).unwrap();
        assert_eq!(n2.subnet, net("192.168.16.0/20"));
        assert_eq!(default_pools().count(), 14 + 16);
    }

    #[test]
    fn pools_exhausted_is_an_error() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(spec("all172", Some("172.16.0.0/12")))
            .unwrap();
        s.create_network(spec("all192", Some("192.168.0.0/16")))
            .unwrap();
        assert!(matches!(
            s.create_network(spec("x", None)),
            Err(StoreError::PoolsExhausted)
        ));
    }

    #[test]
    fn overlap_is_refused_with_clear_message() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(spec("foo", Some("172.18.0.0/16")))
            .unwrap();
        let e = s
            .create_network(spec("bar", Some("172.18.0.0/16")))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 172.18.0.0/16 overlaps network \"foo\" (172.18.0.0/16): pick another --subnet"
        );
        // contained either way
        assert!(matches!(
            s.create_network(spec("bar", Some("172.18.5.0/24"))),
            Err(StoreError::Overlap { .. })
        ));
        assert!(matches!(
            s.create_network(spec("bar", Some("172.16.0.0/12"))),
            Err(StoreError::Overlap { .. })
        ));
        s.create_network(spec("bar", Some("172.19.0.0/16")))
            .unwrap();
        // an explicit subnet in 172.17/16 blocks the default bridge
        let t2 = tmp();
        let s2 = Store::open(&t2.path).unwrap();
        s2.create_network(spec("mine", Some("172.17.3.0/24")))
            .unwrap();
        assert!(matches!(
            s2.ensure_default_bridge(),
            Err(StoreError::Overlap { .. })
        ));
    }

    #[test]
    fn create_validates_everything_and_changes_nothing_on_error() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(spec("foo", Some("10.0.0.0/24"))).unwrap();
        let before = s.networks().unwrap();
        let err = |sp: NetworkSpec| s.create_network(sp).unwrap_err();

        assert!(matches!(
            err(spec("foo", Some("10.1.0.0/24"))),
            StoreError::DuplicateNetwork(_)
        ));
        for bad in ["", "-x", "a b", "a/b", "ü", &"x".repeat(129)] {
            assert!(
                matches!(err(spec(bad, None)), StoreError::InvalidName { .. }),
                "{bad:?}"
            );
        }
        for r in ["bridge", "host", "none"] {
            assert!(matches!(err(spec(r, None)), StoreError::ReservedName(_)));
        }
        let e = err(spec("h", Some("10.1.0.5/24")));
        assert_eq!(
            e.to_string(),
            "10.1.0.5/24 has host bits set: did you mean 10.1.0.0/24?"
        );
        assert!(matches!(
            err(spec("s", Some("10.1.0.0/31"))),
            StoreError::SubnetTooSmall(_)
        ));
        let mut g = spec("g", Some("10.1.0.0/24"));
        g.gateway = Some(ip("10.2.0.1"));
        assert!(matches!(err(g.clone()), StoreError::BadGateway { .. }));
        g.gateway = Some(ip("10.1.0.255"));
        assert!(matches!(err(g.clone()), StoreError::BadGateway { .. }));
        g.gateway = Some(ip("10.1.0.0"));
        assert!(matches!(err(g), StoreError::BadGateway { .. }));
        let mut r = spec("r", Some("10.1.0.0/24"));
        r.ip_range = Some(net("10.1.1.0/28"));
        assert!(matches!(err(r.clone()), StoreError::RangeOutside { .. }));
        r.ip_range = Some(net("10.1.0.0/23"));
        assert!(matches!(err(r.clone()), StoreError::RangeOutside { .. }));
        r.ip_range = Some(net("10.1.0.3/28"));
        assert!(matches!(err(r), StoreError::HostBits { .. }));
        let mut m = spec("m", Some("10.1.0.0/24"));
        m.mtu = Some(67);
        assert!(matches!(err(m), StoreError::BadMtu(67)));
        let mut l = spec("l", Some("10.1.0.0/24"));
        l.labels.insert(String::new(), "v".into());
        assert!(matches!(err(l), StoreError::BadLabel));

        assert_eq!(s.networks().unwrap(), before);
    }

    #[test]
    fn create_keeps_options_and_ids_are_unique() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let mut sp = spec("opts", Some("10.9.0.0/16"));
        sp.gateway = Some(ip("10.9.255.254"));
        sp.ip_range = Some(net("10.9.1.0/24"));
        sp.internal = true;
        sp.icc = false;
        sp.mtu = Some(9000);
        sp.labels.insert("env".into(), "prod".into());
        let r = s.create_network(sp).unwrap();
        assert_eq!(r.gateway, ip("10.9.255.254"));
        assert_eq!(r.ip_range, Some(net("10.9.1.0/24")));
        assert!(r.internal && !r.icc && !r.builtin);
        assert_eq!(r.mtu, 9000);
        assert_eq!(r.labels["env"], "prod");
        assert!(r.created_unix > 1_600_000_000);
        assert_eq!(s.network("opts").unwrap(), Some(r.clone()));
        assert_eq!(s.network("nope").unwrap(), None);
        // same name re-created after removal gets a new id
        s.remove_network("opts").unwrap();
        let r2 = s.create_network(spec("opts", Some("10.9.0.0/16"))).unwrap();
        assert_ne!(r.id, r2.id);
    }

    #[test]
    fn allocate_lowest_free_skipping_reserved() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let mut sp = spec("n", Some("10.0.0.0/29"));
        sp.gateway = Some(ip("10.0.0.3"));
        s.create_network(sp).unwrap();
        let got: Vec<_> = (0..5)
            .map(|i| s.allocate("n", &format!("c{i}"), None, meta()).unwrap().0)
            .collect();
        let want: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
            .iter()
            .map(|a| ip(a))
            .collect();
        assert_eq!(got, want);
        assert!(matches!(
            s.allocate("n", "c9", None, meta()),
            Err(StoreError::Address(IpamError::Exhausted(_)))
        ));
        let rel = s.release("n", "c2", true).unwrap().unwrap();
        assert_eq!(rel.ip, ip("10.0.0.4"));
        assert_eq!(rel.lease.container, "c2");
        assert_eq!(s.release("n", "c2", true).unwrap(), None);
        assert_eq!(
            s.allocate("n", "c9", None, meta()).unwrap().0,
            ip("10.0.0.4")
        );
        assert_eq!(s.verify().unwrap(), 5);
    }

    #[test]
    fn allocate_respects_ip_range_and_static_addresses() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let mut sp = spec("n", Some("10.0.0.0/24"));
        sp.ip_range = Some(net("10.0.0.128/30"));
        s.create_network(sp).unwrap();
        let a: Vec<_> = (0..4)
            .map(|i| s.allocate("n", &format!("c{i}"), None, meta()).unwrap().0)
            .collect();
        assert_eq!(
            a,
            (128..=131)
                .map(|d| Ipv4Addr::new(10, 0, 0, d))
                .collect::<Vec<_>>(),
            "range network/broadcast are usable: only the subnet's are reserved"
        );
        assert!(matches!(
            s.allocate("n", "c4", None, meta()),
            Err(StoreError::Address(IpamError::Exhausted(r))) if r == net("10.0.0.128/30")
        ));
        // static anywhere in the subnet, even outside the range (as Docker)
        let (got, lease) = s
            .allocate("n", "st", Some(ip("10.0.0.50")), meta())
            .unwrap();
        assert_eq!(got, ip("10.0.0.50"));
        assert_eq!(lease.mac, "02:42:0a:00:00:32");
        assert_eq!(lease.netns, "ns1");
        assert_eq!(lease.host_ifname, "vethabc");
        let e = |r: &str| s.allocate("n", "x", Some(ip(r)), meta()).unwrap_err();
        assert!(matches!(
            e("10.0.1.1"),
            StoreError::Address(IpamError::OutsideSubnet(..))
        ));
        for r in ["10.0.0.0", "10.0.0.1", "10.0.0.255"] {
            assert!(matches!(e(r), StoreError::Address(IpamError::Reserved(..))));
        }
        assert_eq!(
            e("10.0.0.50").to_string(),
            "10.0.0.50 is already in use on this network"
        );
    }

    #[test]
    fn allocate_refuses_bad_input() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(spec("n", Some("10.0.0.0/24"))).unwrap();
        s.create_network(spec("m", Some("10.0.1.0/24"))).unwrap();
        let (a, _) = s.allocate("n", "web", None, meta()).unwrap();
        let e = s.allocate("n", "web", None, meta()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "container \"web\" is already connected to network \"n\" with {a}: disconnect it first"
            )
        );
        // same container on another network is fine
        s.allocate("m", "web", None, meta()).unwrap();
        assert!(matches!(
            s.allocate("zz", "web", None, meta()),
            Err(StoreError::UnknownNetwork(_))
        ));
        assert!(matches!(
            s.allocate("n", "bad name", None, meta()),
            Err(StoreError::InvalidName { .. })
        ));
        let mut m = meta();
        m.ifname = "way-too-long-ifname".into();
        assert!(matches!(
            s.allocate("n", "x", None, m),
            Err(StoreError::BadIfname(_))
        ));
        let mut m = meta();
        m.host_ifname = "a/b".into();
        assert!(matches!(
            s.allocate("n", "x", None, m),
            Err(StoreError::BadIfname(_))
        ));
        let mut m = meta();
        m.netns = "a\0b".into();
        assert!(matches!(
            s.allocate("n", "x", None, m),
            Err(StoreError::BadNetns(_))
        ));
        let mut m = meta();
        m.mac = Some([0x01, 0, 0, 0, 0, 1]);
        assert!(matches!(
            s.allocate("n", "x", None, m),
            Err(StoreError::BadMac(_))
        ));
        // explicit MAC: used, then refused when taken (incl. a derived one)
        let mut m = meta();
        m.mac = Some(local_mac([0xff, 1, 2, 3, 4, 5]));
        let (_, l) = s.allocate("n", "x", None, m.clone()).unwrap();
        assert_eq!(l.mac, "fe:01:02:03:04:05");
        assert!(matches!(
            s.allocate("n", "y", None, m),
            Err(StoreError::MacInUse { .. })
        ));
        let mut m = meta();
        m.mac = Some(MacAddr::docker(a).0);
        assert!(matches!(
            s.allocate("n", "y", None, m),
            Err(StoreError::MacInUse { .. })
        ));
        assert_eq!(s.leases("n").unwrap().len(), 2);
        assert_eq!(s.verify().unwrap(), 3);
    }

    #[test]
    fn release_unknown_network_is_an_error() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        assert!(matches!(
            s.release("nope", "c", true),
            Err(StoreError::UnknownNetwork(_))
        ));
    }

    #[test]
    fn publish_rules() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.ensure_default_bridge().unwrap();
        s.create_network(spec("n", Some("10.0.0.0/24"))).unwrap();
        let mut internal = spec("int", Some("10.0.1.0/24"));
        internal.internal = true;
        s.create_network(internal).unwrap();
        let (ip_web, _) = s.allocate("n", "web", None, meta()).unwrap();
        s.allocate("int", "db", None, meta()).unwrap();

        let p = s.publish(PortProto::Tcp, 8080, "n", "web", 80).unwrap();
        assert_eq!(p.container_ip, Some(ip_web));
        // same port, other proto is fine
        s.publish(PortProto::Udp, 8080, "n", "web", 53).unwrap();
        let e = s.publish(PortProto::Tcp, 8080, "n", "web", 81).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tcp host port 8080 is already published to \"web\""),
            "{e}"
        );
        assert!(matches!(
            s.publish(PortProto::Tcp, 9000, "n", "ghost", 80),
            Err(StoreError::NotConnected { .. })
        ));
        assert!(matches!(
            s.publish(PortProto::Tcp, 9000, "nope", "web", 80),
            Err(StoreError::UnknownNetwork(_))
        ));
        assert!(matches!(
            s.publish(PortProto::Tcp, 9000, "int", "db", 80),
            Err(StoreError::InternalNetwork(_))
        ));
        assert!(matches!(
            s.publish(PortProto::Tcp, 0, "n", "web", 80),
            Err(StoreError::PortZero)
        ));
        assert_eq!(s.published().unwrap().len(), 2);

        // network removal refused while in use
        let e = s.remove_network("n").unwrap_err();
        assert!(matches!(
            e,
            StoreError::NetworkInUse {
                leases: 1,
                ports: 2,
                ..
            }
        ));
        assert_eq!(
            s.unpublish(PortProto::Udp, 8080)
                .unwrap()
                .unwrap()
                .container_port,
            53
        );
        assert_eq!(s.unpublish(PortProto::Udp, 8080).unwrap(), None);
        // releasing the container keeps its ports, without an address, for its next lease
        let rel = s.release("n", "web", false).unwrap().unwrap();
        assert_eq!(rel.unpublished.len(), 1);
        assert_eq!(rel.unpublished[0].0, PortProto::Tcp);
        assert_eq!(rel.unpublished[0].2.container_ip, Some(ip_web));
        let kept = s.published().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].2.container_ip, None);
        s.verify().unwrap();
        // ... and a port it keeps is still its own
        s.allocate("n", "other", None, meta()).unwrap();
        assert!(matches!(
            s.publish(PortProto::Tcp, 8080, "n", "other", 80),
            Err(StoreError::PortInUse { .. })
        ));
        s.release("n", "other", true).unwrap();
        // the container comes back on another address: its port follows
        let (again, _) = s
            .allocate("n", "web", Some(ip("10.0.0.77")), meta())
            .unwrap();
        assert_eq!(s.published().unwrap()[0].2.container_ip, None);
        let back = s.republish("n", "web").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].2.container_ip, Some(again));
        assert_eq!(s.published().unwrap()[0].2.container_ip, Some(again));
        assert!(s.republish("n", "ghost").unwrap().is_empty());
        s.verify().unwrap();
        // released with `unpublish`, its ports go in the same transaction
        let rel = s.release("n", "web", true).unwrap().unwrap();
        assert_eq!(rel.unpublished.len(), 1);
        assert!(s.published().unwrap().is_empty());
        s.allocate("n", "web", None, meta()).unwrap();
        assert!(s.republish("n", "web").unwrap().is_empty());
        s.publish(PortProto::Tcp, 8081, "n", "web", 80).unwrap();
        s.release("n", "web", false).unwrap();
        // a network without containers goes with the ports its disconnected containers kept
        s.remove_network("n").unwrap();
        assert!(s.published().unwrap().is_empty());
        s.verify().unwrap();
        assert!(matches!(
            s.remove_network("n"),
            Err(StoreError::UnknownNetwork(_))
        ));
        assert!(matches!(
            s.remove_network("bridge"),
            Err(StoreError::Builtin(_))
        ));
        assert!(matches!(
            s.remove_network("int"),
            Err(StoreError::NetworkInUse { leases: 1, .. })
        ));
        s.verify().unwrap();
    }

    #[test]
    fn port_ranges_are_all_or_nothing() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(spec("n", Some("10.0.0.0/24"))).unwrap();
        let (a, _) = s.allocate("n", "a", None, meta()).unwrap();
        s.allocate("n", "b", None, meta()).unwrap();
        let to = |container, container_port| PublishTarget {
            network: "n",
            container,
            container_port,
            host_proxy: true,
        };
        let loopback = Some(Ipv4Addr::LOCALHOST);
        let got = s
            .publish_range(PortProto::Tcp, loopback, 8000, 8002, to("a", 9000))
            .unwrap();
        let ports: Vec<(u16, u16)> = got.iter().map(|(h, p)| (*h, p.container_port)).collect();
        assert_eq!(ports, [(8000, 9000), (8001, 9001), (8002, 9002)]);
        assert!(
            got.iter()
                .all(|(_, p)| p.host_ip == loopback && p.container_ip == Some(a))
        );
        // one port of the range taken: nothing of it is published
        let e = s
            .publish_range(PortProto::Tcp, None, 7999, 8000, to("b", 80))
            .unwrap_err();
        assert!(matches!(e, StoreError::PortInUse { port: 8000, .. }), "{e}");
        assert_eq!(s.published().unwrap().len(), 3);
        for (first, last, cport) in [(10, 9, 80), (1, 2, 65535), (0, 3, 80)] {
            assert!(
                s.publish_range(PortProto::Udp, None, first, last, to("b", cport))
                    .is_err()
            );
        }
        // 0.0.0.0 is "every address"
        let any = s
            .publish_range(
                PortProto::Udp,
                Some(Ipv4Addr::UNSPECIFIED),
                53,
                53,
                to("b", 53),
            )
            .unwrap();
        assert_eq!(any[0].1.host_ip, None);
        let gone = s.unpublish_range(PortProto::Tcp, 7990, 8001).unwrap();
        assert_eq!(
            gone.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
            [8000, 8001]
        );
        assert!(
            s.unpublish_range(PortProto::Tcp, 7990, 7995)
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.published().unwrap().len(), 2);
        s.verify().unwrap();
    }

    #[test]
    fn reopen_keeps_everything() {
        let t = tmp();
        let (nets, leases, ports) = {
            let s = Store::open(&t.path).unwrap();
            s.ensure_default_bridge().unwrap();
            s.create_network(spec("n", None)).unwrap();
            s.allocate("n", "a", None, meta()).unwrap();
            s.allocate("bridge", "b", Some(ip("172.17.0.9")), meta())
                .unwrap();
            s.publish(PortProto::Tcp, 8080, "n", "a", 80).unwrap();
            (
                s.networks().unwrap(),
                s.all_leases().unwrap(),
                s.published().unwrap(),
            )
        };
        let s = Store::open(&t.path).unwrap();
        assert_eq!(s.networks().unwrap(), nets);
        assert_eq!(s.all_leases().unwrap(), leases);
        assert_eq!(s.published().unwrap(), ports);
        assert_eq!(s.verify().unwrap(), 2);
        // the creation counter survives too: a new network gets a fresh id
        let n2 = s.create_network(spec("n2", None)).unwrap();
        assert!(nets.iter().all(|n| n.id != n2.id));
    }

    #[test]
    fn second_open_is_locked() {
        let t = tmp();
        let _s = Store::open(&t.path).unwrap();
        let e = Store::open(&t.path).unwrap_err();
        assert!(matches!(e, StoreError::Locked(_)), "{e}");
        assert!(e.to_string().contains("--state-dir"));
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let t = tmp();
        std::fs::write(&t.path, vec![0x5a; 8192]).unwrap();
        let e = Store::open(&t.path).unwrap_err();
        assert!(matches!(e, StoreError::Open { .. }), "{e}");
    }

    #[test]
    fn macs() {
        assert_eq!(
            format_mac(MacAddr::docker(ip("172.17.0.2")).0),
            "02:42:ac:11:00:02"
        );
        let m = local_mac([0xff; 6]);
        assert_eq!(m[0] & 0x03, 0x02);
    }

    /// An undecodable lease fails `verify`, as before the derived tables, not `open`.
    #[test]
    fn bad_lease_record_fails_verify_not_open() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(spec("n", Some("10.0.0.0/24"))).unwrap();
        let txn = s.db.begin_write().unwrap();
        txn.open_table(LEASES)
            .unwrap()
            .insert(("n", u32::from(ip("10.0.0.7"))), "{")
            .unwrap();
        txn.commit().unwrap();
        drop(s);
        let s = Store::open(&t.path).unwrap();
        assert!(matches!(s.verify(), Err(StoreError::Corrupt(_))));
    }

    /// A file from a version without the derived tables: the open rebuilds them.
    #[test]
    fn old_file_without_indexes_is_migrated() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(spec("n", Some("10.0.0.0/24"))).unwrap();
        let mac = [0x02, 0, 0, 0, 0, 0x99];
        let m = LeaseMeta {
            mac: Some(mac),
            ..meta()
        };
        s.allocate("n", "a", None, m.clone()).unwrap();
        s.allocate("n", "b", None, meta()).unwrap();
        s.release("n", "a", true).unwrap();
        s.allocate("n", "a", None, m.clone()).unwrap();
        s.publish(PortProto::Tcp, 8080, "n", "a", 80).unwrap();
        let txn = s.db.begin_write().unwrap();
        for gone in [
            txn.delete_table(LEASE_BY_MAC).unwrap(),
            txn.delete_table(FREE).unwrap(),
            txn.delete_table(PUBLISHED_BY_CONTAINER).unwrap(),
        ] {
            assert!(gone);
        }
        txn.commit().unwrap();
        drop(s);

        let s = Store::open(&t.path).unwrap();
        s.verify().unwrap();
        let e = s.allocate("n", "c", None, m).unwrap_err();
        assert!(
            matches!(&e, StoreError::MacInUse { container, .. } if container == "a"),
            "{e}"
        );
        assert_eq!(
            s.allocate("n", "c", None, meta()).unwrap().0,
            ip("10.0.0.4")
        );
        let r = s.release("n", "a", true).unwrap().unwrap();
        assert_eq!(r.unpublished.len(), 1);
        assert!(s.published().unwrap().is_empty());
        assert_eq!(
            s.allocate("n", "d", None, meta()).unwrap().0,
            ip("10.0.0.2")
        );
        s.verify().unwrap();
    }

    /// Churn against a model: always the lowest free address, indexes consistent throughout.
    #[test]
    fn lowest_free_under_churn() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let mut sp = spec("n", Some("10.1.0.0/27"));
        sp.gateway = Some(ip("10.1.0.9"));
        sp.ip_range = Some(net("10.1.0.0/28"));
        s.create_network(sp).unwrap();
        let usable: Vec<u32> = (0..16u32)
            .map(|d| u32::from(ip("10.1.0.0")) + d)
            .filter(|a| ![u32::from(ip("10.1.0.0")), u32::from(ip("10.1.0.9"))].contains(a))
            .collect();
        let mut held: BTreeMap<String, u32> = BTreeMap::new();
        let mut x = 0x9e37_79b9_u32;
        for step in 0..300 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let c = format!("c{}", x % 20);
            if held.contains_key(&c) {
                let r = s.release("n", &c, x.is_multiple_of(2)).unwrap().unwrap();
                assert_eq!(Some(u32::from(r.ip)), held.remove(&c));
            } else if step % 7 == 0 {
                // a static address, sometimes outside the range
                let want = u32::from(ip("10.1.0.0")) + 1 + x % 30;
                let got = s.allocate("n", &c, Some(Ipv4Addr::from(want)), meta());
                if let Ok((a, _)) = got {
                    assert!(!held.values().any(|h| *h == want));
                    held.insert(c, u32::from(a));
                }
            } else {
                let want = usable.iter().find(|a| !held.values().any(|h| h == *a));
                match (s.allocate("n", &c, None, meta()), want) {
                    (Ok((a, _)), Some(w)) => {
                        assert_eq!(u32::from(a), *w, "step {step}");
                        held.insert(c, *w);
                    }
                    (Err(StoreError::Address(IpamError::Exhausted(_))), None) => {}
                    (got, w) => panic!("step {step}: {got:?}, want {w:?}"),
                }
            }
            s.verify().unwrap();
        }
    }
}
