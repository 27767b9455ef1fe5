//! Derived tables: indexes over `leases` and `published` that make `allocate`, `release` and
//! `remove_network` O(log n) in a network's leases (issue #20: 1,000 containers on one network).
//!
//! - `lease_by_mac`: (network, MAC) → ip as u32, for the per-network MAC uniqueness check;
//! - `free_ranges`: (network, first) → last: the maximal runs of addresses of the network's
//!   allocation range (ip range, or subnet) that are neither reserved nor leased, so the lowest
//!   free address is the first key of the network;
//! - `published_by_container`: (network, container, proto, host port) → (), the ports to drop
//!   when a container leaves;
//! - `leases6`: (network, IPv6 address as u128) → container, the IPv6 addresses of the leases
//!   (kept by `v6`, which allocates from it).
//!
//! Each is a pure function of `networks`, `leases` and `published`, and is rebuilt from them in
//! the write transaction of every [`Store::open`](super::Store::open): a file written by an older
//! version (no such tables, or tables it did not maintain after a downgrade) is consistent again
//! without a schema bump, which would lock those older versions out. The cost is one pass over
//! the leases at start-up, where [`Store::verify`](super::Store::verify) makes one anyway.

use super::v6::LEASES6;
use super::{LEASES, Lease, NETWORKS, NetworkRecord, PUBLISHED, StoreError, all_networks, decode};
use crate::IpamError;
use packet::PortProto;
use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::str::FromStr;

pub(super) const LEASE_BY_MAC: TableDefinition<(&str, &str), u32> =
    TableDefinition::new("lease_by_mac");
pub(super) const FREE: TableDefinition<(&str, u32), u32> = TableDefinition::new("free_ranges");
pub(super) const PUBLISHED_BY_CONTAINER: TableDefinition<(&str, &str, &str, u16), ()> =
    TableDefinition::new("published_by_container");

type FreeTable<'t> = Table<'t, (&'static str, u32), u32>;

/// First and last address of the range new addresses are taken from.
fn bounds(net: &NetworkRecord) -> (u32, u32) {
    let range = net.ip_range.unwrap_or(net.subnet);
    (u32::from(range.network()), u32::from(range.broadcast()))
}

/// The free runs of `net` given its leased addresses (ascending).
fn free_runs(net: &NetworkRecord, leased: impl IntoIterator<Item = u32>) -> Vec<(u32, u32)> {
    let (first, last) = bounds(net);
    let mut blocked: Vec<u32> = [net.subnet.network(), net.subnet.broadcast(), net.gateway]
        .into_iter()
        .chain(net.aux_addresses.values().copied())
        .map(u32::from)
        .chain(leased)
        .filter(|a| (first..=last).contains(a))
        .collect();
    blocked.sort_unstable();
    blocked.dedup();
    let mut runs = Vec::new();
    let mut start = Some(first); // None: past `last`
    for b in blocked {
        if let Some(s) = start
            && s < b
        {
            runs.push((s, b - 1));
        }
        start = b.checked_add(1).filter(|n| *n <= last);
    }
    if let Some(s) = start {
        runs.push((s, last));
    }
    runs
}

/// Free runs of a network with no leases yet (creation).
pub(super) fn init_free(txn: &WriteTransaction, net: &NetworkRecord) -> Result<(), StoreError> {
    let mut free = txn.open_table(FREE)?;
    for (s, e) in free_runs(net, []) {
        free.insert((net.name.as_str(), s), e)?;
    }
    Ok(())
}

/// Drops a removed network's free runs.
pub(super) fn drop_free(txn: &WriteTransaction, name: &str) -> Result<(), StoreError> {
    let mut free = txn.open_table(FREE)?;
    let starts: Vec<u32> = free
        .range((name, 0u32)..=(name, u32::MAX))?
        .map(|row| row.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for s in starts {
        free.remove((name, s))?;
    }
    Ok(())
}

/// Takes the lowest free address of `net`'s range.
pub(super) fn take_lowest(
    free: &mut FreeTable,
    net: &NetworkRecord,
) -> Result<Ipv4Addr, StoreError> {
    let name = net.name.as_str();
    let Some((s, e)) = run_starting_in(free, name, 0..=u32::MAX, First::Lowest)? else {
        return Err(IpamError::Exhausted(net.ip_range.unwrap_or(net.subnet)).into());
    };
    split(free, name, (s, e), s)?;
    Ok(Ipv4Addr::from(s))
}

/// Marks `ip` leased; the caller has checked it is neither reserved nor leased. An address outside
/// the allocation range (a static one elsewhere in the subnet) is in no run.
pub(super) fn take(
    free: &mut FreeTable,
    net: &NetworkRecord,
    ip: Ipv4Addr,
) -> Result<(), StoreError> {
    let Some((first, ip)) = in_range(net, ip) else {
        return Ok(());
    };
    let name = net.name.as_str();
    match run_starting_in(free, name, first..=ip, First::Highest)? {
        Some((s, e)) if e >= ip => split(free, name, (s, e), ip),
        _ => Err(missing(name, ip)),
    }
}

/// `ip` as a number, with the first address of `net`'s allocation range, if it is in that range
/// (an address outside it, a static one elsewhere in the subnet, is in no run).
fn in_range(net: &NetworkRecord, ip: Ipv4Addr) -> Option<(u32, u32)> {
    let (first, last) = bounds(net);
    let ip = u32::from(ip);
    (first..=last).contains(&ip).then_some((first, ip))
}

/// Which of the runs starting in a span [`run_starting_in`] returns.
enum First {
    Lowest,
    Highest,
}

/// The free run (start, end) of network `name` with the lowest or highest start in `starts`.
fn run_starting_in(
    free: &FreeTable,
    name: &str,
    starts: std::ops::RangeInclusive<u32>,
    which: First,
) -> Result<Option<(u32, u32)>, StoreError> {
    let mut rows = free.range((name, *starts.start())..=(name, *starts.end()))?;
    let row = match which {
        First::Lowest => rows.next(),
        First::Highest => rows.next_back(),
    };
    match row {
        Some(row) => {
            let (k, v) = row?;
            Ok(Some((k.value().1, v.value())))
        }
        None => Ok(None),
    }
}

/// Removes `ip` from the run (s, e) that holds it.
fn split(free: &mut FreeTable, name: &str, (s, e): (u32, u32), ip: u32) -> Result<(), StoreError> {
    free.remove((name, s))?;
    if s < ip {
        free.insert((name, s), ip - 1)?;
    }
    if ip < e {
        free.insert((name, ip + 1), e)?;
    }
    Ok(())
}

/// Marks a released `ip` free again, merging it with the runs on either side.
pub(super) fn give_back(
    free: &mut FreeTable,
    net: &NetworkRecord,
    ip: Ipv4Addr,
) -> Result<(), StoreError> {
    let Some((first, ip)) = in_range(net, ip) else {
        return Ok(());
    };
    let name = net.name.as_str();
    let before = run_starting_in(free, name, first..=ip, First::Highest)?;
    if let Some((_, e)) = before
        && e >= ip
    {
        return Err(StoreError::Corrupt(format!(
            "free ranges of {name} already hold released {}",
            Ipv4Addr::from(ip)
        )));
    }
    // ip < last here (the broadcast address is never leased), but stay safe at u32::MAX
    let after = match ip.checked_add(1) {
        Some(n) => free.remove((name, n))?.map(|v| v.value()),
        None => None,
    };
    let start = match before {
        Some((s, e)) if e + 1 == ip => s,
        _ => ip,
    };
    free.insert((name, start), after.unwrap_or(ip))?;
    Ok(())
}

fn missing(name: &str, ip: u32) -> StoreError {
    StoreError::Corrupt(format!(
        "free ranges of {name} miss unleased {}",
        Ipv4Addr::from(ip)
    ))
}

/// Published ports of one container as (proto, host port), by proto then port.
pub(super) fn container_ports(
    index: &impl ReadableTable<(&'static str, &'static str, &'static str, u16), ()>,
    network: &str,
    container: &str,
) -> Result<Vec<(String, u16)>, StoreError> {
    let mut out = Vec::new();
    for row in index.range((network, container, "", 0u16)..)? {
        let (k, _) = row?;
        let (n, c, proto, port) = k.value();
        if n != network || c != container {
            break;
        }
        out.push((proto.to_string(), port));
    }
    Ok(out)
}

/// The ports published to containers of `network`: (container, protocol, host port).
pub(super) fn network_ports(
    txn: &WriteTransaction,
    network: &str,
) -> Result<Vec<(String, String, u16)>, StoreError> {
    let index = txn.open_table(PUBLISHED_BY_CONTAINER)?;
    let mut out = Vec::new();
    for row in index.range((network, "", "", 0u16)..)? {
        let (key, _) = row?;
        let (n, c, proto, port) = key.value();
        if n != network {
            break;
        }
        out.push((c.to_string(), proto.to_string(), port));
    }
    Ok(out)
}

/// The derived tables as the primary tables imply them.
struct Derived {
    macs: BTreeMap<(String, String), u32>,
    free: BTreeMap<(String, u32), u32>,
    ports: Vec<(String, String, String, u16)>,
    leases6: BTreeMap<(String, u128), String>,
}

fn derive(
    nets: &[NetworkRecord],
    leases: &impl ReadableTable<(&'static str, u32), &'static str>,
    published: &impl ReadableTable<(&'static str, u16), &'static str>,
) -> Result<Derived, StoreError> {
    let mut macs = BTreeMap::new();
    let mut leases6 = BTreeMap::new();
    let mut leased: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for row in leases.iter()? {
        let (k, v) = row?;
        let (net, ip) = k.value();
        let lease: Lease = decode("lease", &format!("{net}/{}", Ipv4Addr::from(ip)), v.value())?;
        if let Some(n) = nets.iter().find(|n| n.name == net) {
            leased.entry(n.name.as_str()).or_default().push(ip);
            if let Some(ip6) = lease.ip6 {
                leases6.insert((net.to_string(), u128::from(ip6)), lease.container);
            }
        }
        macs.insert((net.to_string(), lease.mac), ip);
    }
    let mut free = BTreeMap::new();
    for n in nets {
        let ips = leased.remove(n.name.as_str()).unwrap_or_default();
        for (s, e) in free_runs(n, ips) {
            free.insert((n.name.clone(), s), e);
        }
    }
    let mut ports = Vec::new();
    for row in published.iter()? {
        let (k, v) = row?;
        let (proto, port) = k.value();
        let p: super::Publish = decode("published port", &format!("{proto}/{port}"), v.value())?;
        ports.push((p.network, p.container, proto.to_string(), port));
    }
    ports.sort();
    Ok(Derived {
        macs,
        free,
        ports,
        leases6,
    })
}

/// Rebuilds the derived tables from the primary ones (see the module docs for why at every open).
/// Fails with [`StoreError::Corrupt`] only before writing anything.
pub(super) fn rebuild(txn: &WriteTransaction) -> Result<(), StoreError> {
    let nets = all_networks(&txn.open_table(NETWORKS)?)?;
    let d = derive(&nets, &txn.open_table(LEASES)?, &txn.open_table(PUBLISHED)?)?;
    txn.delete_table(LEASE_BY_MAC)?;
    txn.delete_table(FREE)?;
    txn.delete_table(PUBLISHED_BY_CONTAINER)?;
    txn.delete_table(LEASES6)?;
    let mut macs = txn.open_table(LEASE_BY_MAC)?;
    for ((net, mac), ip) in &d.macs {
        macs.insert((net.as_str(), mac.as_str()), *ip)?;
    }
    let mut free = txn.open_table(FREE)?;
    for ((net, s), e) in &d.free {
        free.insert((net.as_str(), *s), *e)?;
    }
    let mut ports = txn.open_table(PUBLISHED_BY_CONTAINER)?;
    for (net, c, proto, port) in &d.ports {
        ports.insert((net.as_str(), c.as_str(), proto.as_str(), *port), ())?;
    }
    let mut leases6 = txn.open_table(LEASES6)?;
    for ((net, ip6), c) in &d.leases6 {
        leases6.insert((net.as_str(), *ip6), c.as_str())?;
    }
    Ok(())
}

/// Checks that the derived tables of a snapshot agree with its primary tables.
pub(super) fn verify(txn: &ReadTransaction, nets: &[NetworkRecord]) -> Result<(), StoreError> {
    let want = derive(nets, &txn.open_table(LEASES)?, &txn.open_table(PUBLISHED)?)?;
    let mut macs = BTreeMap::new();
    for row in txn.open_table(LEASE_BY_MAC)?.iter()? {
        let (k, v) = row?;
        let (net, mac) = k.value();
        macs.insert((net.to_string(), mac.to_string()), v.value());
    }
    if macs != want.macs {
        return Err(StoreError::Corrupt(
            "MAC index disagrees with leases".into(),
        ));
    }
    let mut free = BTreeMap::new();
    for row in txn.open_table(FREE)?.iter()? {
        let (k, v) = row?;
        let (net, s) = k.value();
        free.insert((net.to_string(), s), v.value());
    }
    if free != want.free {
        return Err(StoreError::Corrupt(
            "free ranges disagree with leases".into(),
        ));
    }
    let mut ports = Vec::new();
    for row in txn.open_table(PUBLISHED_BY_CONTAINER)?.iter()? {
        let (k, _) = row?;
        let (net, c, proto, port) = k.value();
        PortProto::from_str(proto).map_err(|_| {
            StoreError::Corrupt(format!("published port {proto}/{port}: bad protocol"))
        })?;
        ports.push((net.to_string(), c.to_string(), proto.to_string(), port));
    }
    if ports != want.ports {
        return Err(StoreError::Corrupt(
            "port index disagrees with published ports".into(),
        ));
    }
    let mut leases6 = BTreeMap::new();
    for row in txn.open_table(LEASES6)?.iter()? {
        let (k, v) = row?;
        let (net, ip6) = k.value();
        leases6.insert((net.to_string(), ip6), v.value().to_string());
    }
    if leases6 != want.leases6 {
        return Err(StoreError::Corrupt(
            "IPv6 index disagrees with leases".into(),
        ));
    }
    Ok(())
}
