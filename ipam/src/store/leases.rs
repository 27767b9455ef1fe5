//! Leases: one container's address on one network, and the [`Store`] methods that give and take
//! them.

use super::{
    FREE, LEASE_BY_CONTAINER, LEASE_BY_MAC, LEASES, NETWORKS, NetworkRecord, PUBLISHED,
    PUBLISHED_BY_CONTAINER, Publish, Store, StoreError, check_name, decode, derived, encode,
    read_network, v6,
};
use crate::IpamError;
use packet::{MacAddr, PortProto};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One container's address on one network. The IPv4 address is the key it is stored under; the
/// IPv6 one, on a dual-stack network, is in the record.
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
    /// Its IPv6 address: always one on a dual-stack network, never on an IPv4-only one (records
    /// written before this field existed read as none).
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
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
    /// The IPv6 address to lease on a dual-stack network; None takes the lowest free one.
    /// Refused on an IPv4-only network ([`StoreError::NoIpv6`]).
    pub ip6: Option<Ipv6Addr>,
}

/// What [`Store::release`] gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The address.
    pub ip: Ipv4Addr,
    /// The lease (with the IPv6 address it freed too, if any).
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

/// Network, broadcast, gateway and auxiliary addresses are never leased (prefixes are at most
/// /30).
pub(super) fn reserved(net: &NetworkRecord, ip: Ipv4Addr) -> bool {
    ip == net.gateway
        || ip == net.subnet.network()
        || ip == net.subnet.broadcast()
        || net.aux_addresses.values().any(|&a| a == ip)
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

impl Store {
    /// Leases an address on `network` to `container`: `requested` if given (anywhere in the
    /// subnet, as Docker allows, but not reserved or leased), else the lowest free address of the
    /// ip range (or subnet). On a dual-stack network the lease gets an IPv6 address too:
    /// `meta.ip6` if given (inside the IPv6 subnet, not prefix:: nor the gateway, not leased),
    /// else the lowest free one from prefix::1 on (the gateway skipped: prefix::2 by default).
    /// One write transaction: a crash leaves either no lease or this one, with both addresses.
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
            if meta.ip6.is_some() && net.ipv6.is_none() {
                return Err(StoreError::NoIpv6(network.to_string()));
            }
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
            let ip6 = match &net.ipv6 {
                Some(cfg) => {
                    let mut leases6 = txn.open_table(v6::LEASES6)?;
                    Some(v6::take(&mut leases6, network, container, cfg, meta.ip6)?)
                }
                None => None,
            };
            let lease = Lease {
                container: container.to_string(),
                mac,
                netns: meta.netns,
                ifname: meta.ifname,
                host_ifname: meta.host_ifname,
                ip6,
            };
            leases.insert((network, u32::from(ip)), encode(&lease)?.as_str())?;
            by_container.insert((network, container), u32::from(ip))?;
            by_mac.insert((network, lease.mac.as_str()), u32::from(ip))?;
            Ok((ip, lease))
        })
    }

    /// Gives back `container`'s address on `network` (both addresses, on a dual-stack network).
    /// The ports published to it lose their address in the same transaction, and are removed too
    /// when `unpublish`. `Ok(None)` if it had no lease there.
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
            if let Some(ip6) = lease.ip6 {
                v6::give_back(&mut txn.open_table(v6::LEASES6)?, network, container, ip6)?;
            }
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

    /// `container`'s lease on `network` with its IPv4 address; None if it holds none there (or
    /// the network does not exist). The IPv6 address is [`Lease::ip6`].
    pub fn lease_of(
        &self,
        network: &str,
        container: &str,
    ) -> Result<Option<(Ipv4Addr, Lease)>, StoreError> {
        let txn = self.read()?;
        let Some(ip) = txn
            .open_table(LEASE_BY_CONTAINER)?
            .get((network, container))?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let key = format!("{network}/{}", Ipv4Addr::from(ip));
        match txn.open_table(LEASES)?.get((network, ip))? {
            Some(v) => Ok(Some((
                Ipv4Addr::from(ip),
                decode("lease", &key, v.value())?,
            ))),
            None => Err(StoreError::Corrupt(format!(
                "index points to missing lease {key}"
            ))),
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::*;
    use std::collections::BTreeMap;

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
    fn aux_addresses_and_the_lan_router_are_never_handed_out() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let mut sp = spec("lan", Some("192.168.50.0/29"));
        sp.macvlan = Some(crate::MacvlanConfig::default());
        sp.aux_addresses
            .insert("router2".into(), ip("192.168.50.3"));
        sp.aux_addresses
            .insert("printer".into(), ip("192.168.50.5"));
        s.create_network(sp).unwrap();
        let got: Vec<_> = (0..3)
            .map(|i| s.allocate("lan", &format!("c{i}"), None, meta()).unwrap().0)
            .collect();
        assert_eq!(
            got,
            [ip("192.168.50.2"), ip("192.168.50.4"), ip("192.168.50.6")]
        );
        assert!(matches!(
            s.allocate("lan", "c9", None, meta()),
            Err(StoreError::Address(IpamError::Exhausted(_)))
        ));
        // Nor asked for: they are someone else's on the LAN.
        for taken in ["192.168.50.1", "192.168.50.3", "192.168.50.5"] {
            s.release("lan", "c0", true).unwrap();
            assert!(
                s.allocate("lan", "c0", Some(ip(taken)), meta()).is_err(),
                "{taken}"
            );
        }
        // Reopening rebuilds the free runs with them still out.
        drop(s);
        let s = Store::open(&t.path).unwrap();
        assert_eq!(
            s.allocate("lan", "c0", None, meta()).unwrap().0,
            ip("192.168.50.2")
        );
        s.verify().unwrap();
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
    fn macs() {
        assert_eq!(
            format_mac(MacAddr::docker(ip("172.17.0.2")).0),
            "02:42:ac:11:00:02"
        );
        let m = local_mac([0xff; 6]);
        assert_eq!(m[0] & 0x03, 0x02);
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
