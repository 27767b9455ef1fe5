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
//! - `leases`: (network, ip as u32) → [`Lease`] (with its IPv6 address on a dual-stack network)
//! - `lease_by_container`: (network, container) → ip as u32 (index of `leases`)
//! - `published`: (proto, host port) → [`Publish`]
//! - `meta`: `schema_version`, `network_seq` (creation counter used for network ids)
//! - `lease_by_mac`, `free_ranges`, `published_by_container`, `leases6`: indexes derived from
//!   the tables above, rebuilt at every open (see [`derived`]; `leases6`, the leased IPv6
//!   addresses, is what IPv6 allocation scans, see `v6`)
//!
//! Invariants (checked by [`Store::verify`], kept by every write):
//! - network subnets never overlap (but those of macvlan networks on different VLANs may:
//!   they are separate LANs); a gateway lies inside its subnet and is neither the network
//!   nor the broadcast address; an `ip_range` lies inside its subnet; prefixes are at most /30;
//! - IPv6 subnets (of dual-stack networks) never overlap, have a prefix of /64 to /124 with host
//!   bits clear; an IPv6 gateway lies inside its subnet and is not prefix:: (subnet-router
//!   anycast);
//! - a lease's address lies in its network's subnet and is not the network, broadcast or gateway
//!   address; an address is leased at most once per network (it is the key), a container holds at
//!   most one lease per network, and `lease_by_container` is exactly the inverse of `leases`;
//! - a lease has an IPv6 address exactly when its network is dual-stack; it lies in the IPv6
//!   subnet, is neither prefix:: nor the gateway, and is leased at most once per network;
//! - MAC addresses are unique per network;
//! - a published port refers to a live lease (network, container) and carries its address; a
//!   (proto, host port) pair is published at most once.
//!
//! The file is opened exclusively: a second process opening the same file gets
//! [`StoreError::Locked`]. Only one write transaction runs at a time inside the process, so the
//! `&self` methods may be called from several threads.
//!
//! The code is split by role: this module opens the file and checks it ([`Store::verify`]);
//! `networks`, `leases` and `publish` hold the records and the [`Store`] methods of each kind;
//! `v6` the IPv6 side of dual-stack networks (pool, checks, allocation);
//! `error` holds [`StoreError`]; `derived` keeps the indexes.

mod derived;
mod error;
mod leases;
mod networks;
mod publish;
#[cfg(test)]
mod testutil;
mod v6;

pub use error::StoreError;
pub use leases::{Lease, LeaseMeta, Released, format_mac, local_mac};
pub use networks::{MacvlanConfig, NetworkRecord, NetworkSpec, default_pools};
pub use publish::{Publish, PublishTarget};
pub use v6::{
    DEFAULT_V6_POOL, Ipv6Config, Ipv6Spec, V6_MAX_PROBES, V6_PREFIX_LENS, default_v6_pools,
};

use derived::{FREE, LEASE_BY_MAC, PUBLISHED_BY_CONTAINER};
use leases::reserved;
use networks::clash;
use publish::all_published;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

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
/// Longest network or container name accepted.
const MAX_NAME_LEN: usize = 128;
/// Page cache of the database; the state is small.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

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

fn yes() -> bool {
    true
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
            if let Some(b) = nets[i + 1..]
                .iter()
                .find(|b| clash((a.subnet, a.macvlan), (b.subnet, b.macvlan)))
            {
                return bad(format!("networks {:?} and {:?} overlap", a.name, b.name));
            }
            let Some(a6) = a.ipv6 else { continue };
            if let Some(problem) = v6::config_problem(&a6) {
                return bad(format!("network {:?} has {problem}", a.name));
            }
            let overlaps6 =
                |b: &&NetworkRecord| b.ipv6.is_some_and(|b6| v6::overlaps6(a6.subnet, b6.subnet));
            if let Some(b) = nets[i + 1..].iter().find(overlaps6) {
                return bad(format!(
                    "IPv6 subnets of {:?} and {:?} overlap",
                    a.name, b.name
                ));
            }
        }
        let mut leases: BTreeMap<(String, String), Ipv4Addr> = BTreeMap::new();
        let mut macs: BTreeSet<(String, String)> = BTreeSet::new();
        let mut ip6s: BTreeSet<(String, Ipv6Addr)> = BTreeSet::new();
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
            match (n.ipv6, lease.ip6) {
                (None, None) => {}
                (Some(cfg), Some(ip6)) => {
                    if !cfg.subnet.contains(&ip6) || v6::reserved6(&cfg, ip6) {
                        return bad(format!(
                            "lease {net}/{ip} has {ip6}, outside {} or reserved",
                            cfg.subnet
                        ));
                    }
                    if !ip6s.insert((net.to_string(), ip6)) {
                        return bad(format!("{ip6} leased twice on {net}"));
                    }
                }
                (Some(_), None) => return bad(format!("lease {net}/{ip} lacks its IPv6 address")),
                (None, Some(ip6)) => {
                    return bad(format!(
                        "lease {net}/{ip} has {ip6} on an IPv4-only network"
                    ));
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::*;
    use packet::PortProto;

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
}
