//! IPv6 of dual-stack networks: the subnet a network gets (given, or the next free /64 of the
//! default ULA pool), its gateway, and the IPv6 address of each lease.
//!
//! A /64 is far too large for a free list like the IPv4 one (`free_ranges`), so the leased IPv6
//! addresses are kept as an ordered index instead, `leases6`: (network, address as u128) →
//! container. The lowest free address is the first gap in that index from prefix::1 on (the
//! gateway, prefix::1 by default, skipped), as Docker 25+ allocates IPv6 addresses sequentially;
//! the scan reads one row per address it passes over and gives up after [`V6_MAX_PROBES`].
//!
//! `leases6` is derived like the tables of `derived`: each lease record carries its address
//! ([`Lease::ip6`](super::Lease::ip6)), so the index is rebuilt from `leases` at every open and
//! checked by [`Store::verify`](super::Store::verify).

use super::{NetworkRecord, StoreError};
use crate::IpamError;
use ipnet::Ipv6Net;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;
use std::ops::RangeInclusive;

pub(super) const LEASES6: TableDefinition<(&str, u128), &str> = TableDefinition::new("leases6");

/// The ULA /48 the default IPv6 subnets are taken from, one /64 per network
/// (`fd00:7673:7700::/48`: 0x7673 is "vs").
pub const DEFAULT_V6_POOL: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0x7673, 0x7700, 0, 0, 0, 0, 0), 48);
/// Prefix lengths an IPv6 subnet may have: /64 (the usual one) up to /124 (16 addresses).
pub const V6_PREFIX_LENS: RangeInclusive<u8> = 64..=124;
/// Most addresses one dynamic IPv6 allocation looks at before it reports the pool exhausted.
pub const V6_MAX_PROBES: u32 = 65536;

/// The IPv6 side a network is created with ([`NetworkSpec::ipv6`](super::NetworkSpec::ipv6)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ipv6Spec {
    /// The subnet: a prefix in [`V6_PREFIX_LENS`] with its host bits clear, overlapping no other
    /// network's. None takes the next free /64 of [`DEFAULT_V6_POOL`].
    pub subnet: Option<Ipv6Net>,
    /// The gateway: inside the subnet, and not its subnet-router anycast address (prefix::).
    /// None takes prefix::1 (as Docker does).
    pub gateway: Option<Ipv6Addr>,
}

/// The IPv6 side of a dual-stack network as stored ([`NetworkRecord::ipv6`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Config {
    /// The subnet (host bits clear, prefix in [`V6_PREFIX_LENS`]).
    pub subnet: Ipv6Net,
    /// The gateway (inside the subnet, not prefix::).
    pub gateway: Ipv6Addr,
}

/// The default IPv6 subnets in the order they are taken: the /64s of [`DEFAULT_V6_POOL`].
pub fn default_v6_pools() -> impl Iterator<Item = Ipv6Net> {
    let base = u128::from(DEFAULT_V6_POOL.network());
    (0u128..1 << 16).filter_map(move |i| Ipv6Net::new(Ipv6Addr::from(base | i << 64), 64).ok())
}

pub(super) fn overlaps6(a: Ipv6Net, b: Ipv6Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Prefix length and host bits of a subnet given by the user.
fn check_subnet(subnet: Ipv6Net) -> Result<(), StoreError> {
    if !V6_PREFIX_LENS.contains(&subnet.prefix_len()) {
        return Err(IpamError::PrefixLen6(subnet).into());
    }
    if subnet != subnet.trunc() {
        return Err(StoreError::HostBits6 {
            given: subnet,
            suggested: subnet.trunc(),
        });
    }
    Ok(())
}

/// What can be checked of `spec` without the other networks (before the write transaction).
pub(super) fn check_spec(spec: &Ipv6Spec) -> Result<(), StoreError> {
    spec.subnet.map_or(Ok(()), check_subnet)
}

/// The IPv6 side of a new network: `spec`'s subnet, or the first default /64 that overlaps no
/// network of `existing`, with `spec`'s gateway or prefix::1.
pub(super) fn config(
    spec: &Ipv6Spec,
    existing: &[NetworkRecord],
) -> Result<Ipv6Config, StoreError> {
    let taken = || existing.iter().filter_map(|o| Some((o, o.ipv6?.subnet)));
    let subnet = match spec.subnet {
        Some(s) => {
            check_subnet(s)?;
            if let Some((o, other)) = taken().find(|(_, other)| overlaps6(s, *other)) {
                return Err(StoreError::Overlap6 {
                    subnet: s,
                    other: o.name.clone(),
                    other_subnet: other,
                });
            }
            s
        }
        None => default_v6_pools()
            .find(|p| !taken().any(|(_, other)| overlaps6(*p, other)))
            .ok_or(StoreError::V6PoolsExhausted)?,
    };
    let first = Ipv6Addr::from(u128::from(subnet.network()) + 1);
    let gateway = spec.gateway.unwrap_or(first);
    let cfg = Ipv6Config { subnet, gateway };
    if !subnet.contains(&gateway) || gateway == subnet.network() {
        return Err(StoreError::BadGateway6 { gateway, subnet });
    }
    Ok(cfg)
}

/// What is wrong with a stored config, if anything (for `verify`).
pub(super) fn config_problem(cfg: &Ipv6Config) -> Option<String> {
    let s = cfg.subnet;
    if s != s.trunc() || !V6_PREFIX_LENS.contains(&s.prefix_len()) {
        return Some(format!("IPv6 subnet {s}"));
    }
    if !s.contains(&cfg.gateway) || cfg.gateway == s.network() {
        return Some(format!("IPv6 gateway {}", cfg.gateway));
    }
    None
}

/// The subnet-router anycast address (prefix::) and the gateway are never leased.
pub(super) fn reserved6(cfg: &Ipv6Config, ip: Ipv6Addr) -> bool {
    ip == cfg.gateway || ip == cfg.subnet.network()
}

type Leases6<'t> = Table<'t, (&'static str, u128), &'static str>;

/// Leases an IPv6 address of `cfg` on `network` to `container`: `requested` if given (inside
/// the subnet, not reserved, not leased), else the lowest free one.
pub(super) fn take(
    table: &mut Leases6,
    network: &str,
    container: &str,
    cfg: &Ipv6Config,
    requested: Option<Ipv6Addr>,
) -> Result<Ipv6Addr, StoreError> {
    let ip = match requested {
        Some(ip) => {
            if !cfg.subnet.contains(&ip) {
                return Err(IpamError::OutsideSubnet6(ip, cfg.subnet).into());
            }
            if reserved6(cfg, ip) {
                return Err(IpamError::Reserved6(ip, cfg.subnet).into());
            }
            if table.get((network, u128::from(ip)))?.is_some() {
                return Err(IpamError::InUse6(ip).into());
            }
            ip
        }
        None => lowest_free(table, network, cfg)?,
    };
    table.insert((network, u128::from(ip)), container)?;
    Ok(ip)
}

/// The first address from prefix::1 on that is neither the gateway nor leased.
fn lowest_free(table: &Leases6, network: &str, cfg: &Ipv6Config) -> Result<Ipv6Addr, StoreError> {
    let exhausted = || StoreError::from(IpamError::Exhausted6(cfg.subnet));
    let first = u128::from(cfg.subnet.network()) + 1; // a /124 at most: no overflow
    let last = u128::from(cfg.subnet.broadcast()); // IPv6 has no broadcast: usable
    let gateway = u128::from(cfg.gateway);
    let mut candidate = first;
    let mut probes = 0u32;
    // `leased` ascends and `candidate` only grows: each row is passed once.
    for row in table.range((network, first)..=(network, last))? {
        let leased = row?.0.value().1;
        if candidate == gateway {
            candidate = candidate.checked_add(1).ok_or_else(exhausted)?;
        }
        if leased > candidate {
            break;
        }
        if leased == candidate {
            probes += 1;
            if probes >= V6_MAX_PROBES {
                return Err(exhausted());
            }
            candidate = candidate.checked_add(1).ok_or_else(exhausted)?;
        }
    }
    if candidate == gateway {
        candidate = candidate.checked_add(1).ok_or_else(exhausted)?;
    }
    if candidate > last {
        return Err(exhausted());
    }
    Ok(Ipv6Addr::from(candidate))
}

/// Frees `container`'s `ip` on `network`.
pub(super) fn give_back(
    table: &mut Leases6,
    network: &str,
    container: &str,
    ip: Ipv6Addr,
) -> Result<(), StoreError> {
    let holder = table
        .remove((network, u128::from(ip)))?
        .map(|v| v.value().to_string());
    if holder.as_deref() != Some(container) {
        return Err(StoreError::Corrupt(format!(
            "IPv6 index of {network} has {holder:?} on {ip}, the lease of {container:?}"
        )));
    }
    Ok(())
}

/// Drops the IPv6 rows of a removed network (it has no leases, so there are none unless the
/// index was off).
pub(super) fn drop_network(txn: &WriteTransaction, network: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(LEASES6)?;
    let keys: Vec<u128> = table
        .range((network, 0u128)..=(network, u128::MAX))?
        .map(|row| row.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for k in keys {
        table.remove((network, k))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::*;
    use crate::store::{LeaseMeta, NetworkSpec, Store};
    use redb::ReadableDatabase;

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A dual-stack spec: IPv4 `v4`, IPv6 `v6` (None: the default pool).
    fn dual(name: &str, v4: &str, v6: Option<&str>) -> NetworkSpec {
        let mut s = spec(name, Some(v4));
        s.ipv6 = Some(Ipv6Spec {
            subnet: v6.map(net6),
            gateway: None,
        });
        s
    }

    fn with6(ip: &str) -> LeaseMeta {
        LeaseMeta {
            ip6: Some(ip6(ip)),
            ..meta()
        }
    }

    #[test]
    fn default_pool_gives_the_next_free_64() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let a = s.create_network(dual("a", "10.0.0.0/24", None)).unwrap();
        let cfg = a.ipv6.unwrap();
        assert_eq!(cfg.subnet, net6("fd00:7673:7700::/64"));
        assert_eq!(cfg.gateway, ip6("fd00:7673:7700::1"));
        s.create_network(dual("b", "10.0.1.0/24", Some("fd00:7673:7700:1::/64")))
            .unwrap();
        let c = s.create_network(dual("c", "10.0.2.0/24", None)).unwrap();
        assert_eq!(c.ipv6.unwrap().subnet, net6("fd00:7673:7700:2::/64"));
        // an IPv4-only network takes no IPv6 pool
        let d = s.create_network(spec("d", Some("10.0.3.0/24"))).unwrap();
        assert_eq!(d.ipv6, None);
        assert_eq!(default_v6_pools().count(), 65536);
        assert_eq!(
            default_v6_pools().last(),
            Some(net6("fd00:7673:7700:ffff::/64"))
        );
        s.verify().unwrap();
    }

    #[test]
    fn subnet_and_gateway_are_validated() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(dual("a", "10.0.0.0/24", Some("fd12::/64")))
            .unwrap();
        let before = s.networks().unwrap();
        let err = |sp: NetworkSpec| s.create_network(sp).unwrap_err();
        for (subnet, len) in [("fd13::/48", 48), ("fd13::/63", 63), ("fd13::/125", 125)] {
            let e = err(dual("x", "10.0.1.0/24", Some(subnet)));
            assert!(
                matches!(&e, StoreError::Address(IpamError::PrefixLen6(n)) if n.prefix_len() == len),
                "{e}"
            );
            assert!(e.to_string().contains("/64 to /124"), "{e}");
        }
        let e = err(dual("x", "10.0.1.0/24", Some("fd13::5/64")));
        assert_eq!(
            e.to_string(),
            "fd13::5/64 has host bits set: did you mean fd13::/64?"
        );
        // overlap either way
        for o in ["fd12::/64", "fd12::100/120"] {
            let e = err(dual("x", "10.0.1.0/24", Some(o)));
            assert!(matches!(e, StoreError::Overlap6 { .. }), "{e}");
            assert!(e.to_string().contains("overlaps network \"a\""), "{e}");
        }
        // gateway outside, or the anycast address
        let mut g = dual("x", "10.0.1.0/24", Some("fd13::/64"));
        for bad in ["fd14::1", "fd13::"] {
            g.ipv6.as_mut().unwrap().gateway = Some(ip6(bad));
            assert!(matches!(err(g.clone()), StoreError::BadGateway6 { .. }));
        }
        // a gateway without a subnet must lie in the pool's /64
        let mut p = dual("x", "10.0.1.0/24", None);
        p.ipv6.as_mut().unwrap().gateway = Some(ip6("fd13::1"));
        assert!(matches!(err(p), StoreError::BadGateway6 { .. }));
        assert_eq!(s.networks().unwrap(), before, "nothing created on error");

        let mut g = dual("g", "10.0.1.0/24", Some("fd13::/64"));
        g.ipv6.as_mut().unwrap().gateway = Some(ip6("fd13::ffff"));
        let r = s.create_network(g).unwrap();
        assert_eq!(r.ipv6.unwrap().gateway, ip6("fd13::ffff"));
        s.verify().unwrap();
    }

    #[test]
    fn allocation_is_lowest_first_and_release_frees_both() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(dual("n", "10.0.0.0/24", Some("fd12:3456::/64")))
            .unwrap();
        let got: Vec<_> = (0..4)
            .map(|i| s.allocate("n", &format!("c{i}"), None, meta()).unwrap())
            .collect();
        let v6: Vec<_> = got.iter().map(|(_, l)| l.ip6).collect();
        let want: Vec<_> = (2..=5)
            .map(|i| Some(ip6(&format!("fd12:3456::{i}"))))
            .collect();
        assert_eq!(v6, want);
        assert_eq!(got[0].0, ip("10.0.0.2"));
        let rel = s.release("n", "c1", true).unwrap().unwrap();
        assert_eq!(rel.ip, ip("10.0.0.3"));
        assert_eq!(rel.lease.ip6, Some(ip6("fd12:3456::3")));
        // both families come back: the lowest free of each
        let (a, l) = s.allocate("n", "again", None, meta()).unwrap();
        assert_eq!(a, ip("10.0.0.3"));
        assert_eq!(l.ip6, Some(ip6("fd12:3456::3")));
        assert_eq!(
            s.lease_of("n", "again").unwrap(),
            Some((a, l.clone())),
            "lease_of finds it with both addresses"
        );
        assert_eq!(s.lease_of("n", "ghost").unwrap(), None);
        assert_eq!(s.verify().unwrap(), 4);
    }

    #[test]
    fn custom_gateway_is_skipped_and_prefix_1_used() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let mut sp = dual("n", "10.0.0.0/24", Some("fd12::/120"));
        sp.ipv6.as_mut().unwrap().gateway = Some(ip6("fd12::2"));
        s.create_network(sp).unwrap();
        let v6: Vec<_> = (0..3)
            .map(|i| {
                s.allocate("n", &format!("c{i}"), None, meta())
                    .unwrap()
                    .1
                    .ip6
            })
            .collect();
        assert_eq!(
            v6,
            [
                Some(ip6("fd12::1")),
                Some(ip6("fd12::3")),
                Some(ip6("fd12::4"))
            ]
        );
        s.verify().unwrap();
    }

    #[test]
    fn requested_address_rules() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(dual("n", "10.0.0.0/24", Some("fd12::/64")))
            .unwrap();
        s.create_network(spec("v4", Some("10.0.1.0/24"))).unwrap();
        let (_, l) = s.allocate("n", "st", None, with6("fd12::abcd")).unwrap();
        assert_eq!(l.ip6, Some(ip6("fd12::abcd")));
        // the dynamic one still starts at ::2
        let (_, l) = s.allocate("n", "dyn", None, meta()).unwrap();
        assert_eq!(l.ip6, Some(ip6("fd12::2")));
        let e = |r: &str| s.allocate("n", "x", None, with6(r)).unwrap_err();
        assert!(matches!(
            e("fd13::5"),
            StoreError::Address(IpamError::OutsideSubnet6(..))
        ));
        for r in ["fd12::", "fd12::1"] {
            assert!(matches!(
                e(r),
                StoreError::Address(IpamError::Reserved6(..))
            ));
        }
        assert_eq!(
            e("fd12::abcd").to_string(),
            "fd12::abcd is already in use on this network"
        );
        assert_eq!(
            e("fd12::2").to_string(),
            "fd12::2 is already in use on this network"
        );
        // IPv6 asked for on an IPv4-only network
        let e = s.allocate("v4", "x", None, with6("fd12::9")).unwrap_err();
        assert!(matches!(e, StoreError::NoIpv6(_)), "{e}");
        // a failed IPv6 request leaves no IPv4 lease behind (one transaction)
        assert_eq!(s.leases("n").unwrap().len(), 2);
        assert!(s.leases("v4").unwrap().is_empty());
        // IPv4-only networks give no IPv6 address
        let (_, l) = s.allocate("v4", "x", None, meta()).unwrap();
        assert_eq!(l.ip6, None);
        assert_eq!(s.verify().unwrap(), 3);
    }

    #[test]
    fn a_124_is_exhausted_after_14() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(dual("n", "10.0.0.0/24", Some("fd12::/124")))
            .unwrap();
        let v6: Vec<_> = (0..14)
            .map(|i| {
                s.allocate("n", &format!("c{i}"), None, meta())
                    .unwrap()
                    .1
                    .ip6
            })
            .collect();
        let want: Vec<_> = (2..=15u128)
            .map(|i| Some(Ipv6Addr::from(u128::from(ip6("fd12::")) + i)))
            .collect();
        assert_eq!(v6, want, "::2 … ::f, the last address included");
        let e = s.allocate("n", "c14", None, meta()).unwrap_err();
        assert!(
            matches!(e, StoreError::Address(IpamError::Exhausted6(n)) if n == net6("fd12::/124")),
            "{e}"
        );
        assert!(e.to_string().starts_with("IPv6 pool exhausted"), "{e}");
        assert_eq!(
            s.leases("n").unwrap().len(),
            14,
            "no IPv4 lease without IPv6"
        );
        s.release("n", "c7", true).unwrap();
        let (_, l) = s.allocate("n", "c14", None, meta()).unwrap();
        assert_eq!(l.ip6, Some(ip6("fd12::9")));
        s.verify().unwrap();
    }

    /// The scan gives up after [`V6_MAX_PROBES`] leased addresses, even in a /64.
    #[test]
    fn scan_is_bounded() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let n = s.create_network(dual("n", "10.0.0.0/24", Some("fd12::/64")));
        let cfg = n.unwrap().ipv6.unwrap();
        let base = u128::from(cfg.subnet.network());
        let txn = s.db.begin_write().unwrap();
        {
            let mut t6 = txn.open_table(LEASES6).unwrap();
            // ::2 … ::10001 leased: 65536 addresses
            for i in 2..2 + u128::from(V6_MAX_PROBES) {
                t6.insert(("n", base + i), "c").unwrap();
            }
            let e = lowest_free(&t6, "n", &cfg).unwrap_err();
            assert!(
                matches!(e, StoreError::Address(IpamError::Exhausted6(_))),
                "{e}"
            );
            assert!(e.to_string().contains("at most 65536 addresses"), "{e}");
            // one fewer: the next one is found
            t6.remove(("n", base + 2 + u128::from(V6_MAX_PROBES) - 1))
                .unwrap();
            let got = lowest_free(&t6, "n", &cfg).unwrap();
            assert_eq!(got, ip6("fd12::1:1"));
        }
        txn.abort().unwrap();
    }

    #[test]
    fn verify_catches_a_lease_of_the_wrong_family() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(spec("v4", Some("10.0.0.0/24"))).unwrap();
        s.allocate("v4", "a", None, meta()).unwrap();
        let txn = s.db.begin_write().unwrap();
        {
            let mut leases = txn.open_table(crate::store::LEASES).unwrap();
            let key = ("v4", u32::from(ip("10.0.0.2")));
            let mut l: crate::store::Lease =
                serde_json::from_str(leases.get(key).unwrap().unwrap().value()).unwrap();
            l.ip6 = Some(ip6("fd12::2"));
            let json = serde_json::to_string(&l).unwrap();
            leases.insert(key, json.as_str()).unwrap();
        }
        txn.commit().unwrap();
        let e = s.verify().unwrap_err();
        assert!(e.to_string().contains("IPv4-only"), "{e}");
    }

    #[test]
    fn survives_reopen_and_index_rebuild() {
        let t = tmp();
        let (nets, leases) = {
            let s = Store::open(&t.path).unwrap();
            s.create_network(dual("n", "10.0.0.0/24", None)).unwrap();
            s.allocate("n", "a", None, meta()).unwrap();
            s.allocate("n", "b", None, with6("fd00:7673:7700::77"))
                .unwrap();
            (s.networks().unwrap(), s.all_leases().unwrap())
        };
        {
            let s = Store::open(&t.path).unwrap();
            assert_eq!(s.networks().unwrap(), nets);
            assert_eq!(s.all_leases().unwrap(), leases);
            assert_eq!(s.verify().unwrap(), 2);
            let (_, l) = s.allocate("n", "c", None, meta()).unwrap();
            assert_eq!(l.ip6, Some(ip6("fd00:7673:7700::3")));
            // the index gone (a file from an older version): the next open rebuilds it
            let txn = s.db.begin_write().unwrap();
            assert!(txn.delete_table(LEASES6).unwrap());
            txn.commit().unwrap();
            assert!(s.verify().is_err(), "verify notices the missing index");
        }
        let s = Store::open(&t.path).unwrap();
        assert_eq!(s.verify().unwrap(), 3);
        let e = s.allocate("n", "d", None, with6("fd00:7673:7700::77"));
        assert!(matches!(e, Err(StoreError::Address(IpamError::InUse6(_)))));
        let (_, l) = s.allocate("n", "d", None, meta()).unwrap();
        assert_eq!(l.ip6, Some(ip6("fd00:7673:7700::4")));
    }

    #[test]
    fn networks_do_not_share_addresses_and_removal_cleans_up() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        s.create_network(dual("a", "10.0.0.0/24", None)).unwrap();
        s.create_network(dual("b", "10.0.1.0/24", None)).unwrap();
        let (_, la) = s.allocate("a", "web", None, meta()).unwrap();
        let (_, lb) = s.allocate("b", "web", None, meta()).unwrap();
        assert_eq!(la.ip6, Some(ip6("fd00:7673:7700::2")));
        assert_eq!(lb.ip6, Some(ip6("fd00:7673:7700:1::2")));
        s.release("a", "web", true).unwrap();
        s.remove_network("a").unwrap();
        let txn = s.db.begin_read().unwrap();
        let t6 = txn.open_table(LEASES6).unwrap();
        let rows: Vec<(String, u128)> = t6
            .iter()
            .unwrap()
            .map(|r| {
                let (k, _) = r.unwrap();
                (k.value().0.to_string(), k.value().1)
            })
            .collect();
        assert_eq!(
            rows,
            [("b".to_string(), u128::from(ip6("fd00:7673:7700:1::2")))]
        );
        drop(txn);
        // a's /64 is free again for the next network
        let c = s.create_network(dual("c", "10.0.2.0/24", None)).unwrap();
        assert_eq!(c.ipv6.unwrap().subnet, net6("fd00:7673:7700::/64"));
        s.verify().unwrap();
    }

    #[test]
    fn old_records_decode_as_ipv4_only() {
        let net = r#"{"id":"00","name":"old","subnet":"10.0.0.0/24","gateway":"10.0.0.1",
            "ip_range":null,"internal":false,"icc":true,"mtu":1500,"labels":{},
            "created_unix":1,"builtin":false}"#;
        let n: NetworkRecord = serde_json::from_str(net).unwrap();
        assert_eq!(n.ipv6, None);
        let lease = r#"{"container":"c","mac":"02:42:0a:00:00:02","netns":"ns",
            "ifname":"eth0","host_ifname":"veth0"}"#;
        let l: crate::store::Lease = serde_json::from_str(lease).unwrap();
        assert_eq!(l.ip6, None);
        // and a new record round-trips
        let cfg = Ipv6Config {
            subnet: net6("fd12::/64"),
            gateway: ip6("fd12::1"),
        };
        let json = serde_json::to_string(&NetworkRecord {
            ipv6: Some(cfg),
            ..n
        })
        .unwrap();
        assert!(json.contains(r#""ipv6":{"subnet":"fd12::/64","gateway":"fd12::1"}"#));
        let back: NetworkRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.ipv6, Some(cfg));
    }
}
