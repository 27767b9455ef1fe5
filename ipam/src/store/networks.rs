//! Networks: their records, the specs they are created from, the default pools, and the
//! [`Store`] methods that create, remove and read them.

use super::{
    DEFAULT_BRIDGE, META, NETWORKS, RESERVED_NAMES, Store, StoreError, all_networks, check_name,
    derived, encode, read_network, v6, yes,
};
use super::{Ipv6Config, Ipv6Spec};
use super::{LEASES, PUBLISHED, PUBLISHED_BY_CONTAINER};
use ipnet::Ipv4Net;
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;

const DEFAULT_MTU: u16 = 1500;

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
    /// The IPv6 subnet and gateway of a dual-stack network; None: IPv4 only (as every record
    /// written before this field existed reads).
    #[serde(default)]
    pub ipv6: Option<Ipv6Config>,
    /// An overlay network's VXLAN network identifier, the same on every host of the cluster
    /// (the cluster store allocates it); None: a network of this host alone (as every record
    /// written before this field existed reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// A macvlan network's link to the uplink's LAN (its `subnet` and `gateway` are the LAN's);
    /// None: a network behind vswitch's gateway (as every record written before this field
    /// existed reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macvlan: Option<MacvlanConfig>,
    /// Addresses of the subnet never handed out, by name (Docker's `--aux-address`): the LAN's
    /// other routers and hosts on a macvlan network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

/// A macvlan network's VLAN and mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacvlanConfig {
    /// Its 802.1Q VLAN id on the uplink (1..=4094); None: the untagged LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Private mode: its containers reach the LAN only, never each other.
    #[serde(default)]
    pub private: bool,
}

/// Whether `a` and `b` may have overlapping subnets: macvlan networks on different VLANs are
/// separate LANs. A bridge network never overlaps another (vswitch routes to its subnet).
fn separate_lans(a: Option<MacvlanConfig>, b: Option<MacvlanConfig>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.vlan != b.vlan,
        _ => false,
    }
}

/// Whether networks `a` and `b` clash: overlapping subnets on one LAN.
pub(super) fn clash(
    a: (Ipv4Net, Option<MacvlanConfig>),
    b: (Ipv4Net, Option<MacvlanConfig>),
) -> bool {
    overlaps(a.0, b.0) && !separate_lans(a.1, b.1)
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
    /// Make the network dual-stack with this IPv6 side; None: IPv4 only.
    pub ipv6: Option<Ipv6Spec>,
    /// An overlay network's VNI (allocated by the cluster store); None: a local network.
    pub vni: Option<u32>,
    /// Make it a macvlan network (bridged onto the uplink's LAN); needs a `subnet`, is IPv4
    /// only, one per VLAN.
    pub macvlan: Option<MacvlanConfig>,
    /// Addresses of the subnet never handed out, by name.
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

impl NetworkSpec {
    /// A spec with Docker's defaults: pool subnet, first-host gateway, icc on, MTU 1500, IPv4
    /// only.
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
            ipv6: None,
            vni: None,
            macvlan: None,
            aux_addresses: BTreeMap::new(),
        }
    }
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

pub(super) fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
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

impl Store {
    /// Creates a network. Without a subnet, takes the first default pool that overlaps no
    /// existing network; the gateway defaults to the subnet's first host. With
    /// [`NetworkSpec::ipv6`] the network is dual-stack: its IPv6 subnet (given, or the first
    /// /64 of [`DEFAULT_V6_POOL`](super::DEFAULT_V6_POOL) that no network's overlaps) and
    /// gateway (given, or prefix::1) are checked the same way (see [`Ipv6Spec`]).
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
        if let Some(v6) = &spec.ipv6 {
            v6::check_spec(v6)?;
        }
        if let Some(m) = spec.macvlan {
            if spec.subnet.is_none() {
                return Err(StoreError::MacvlanNeedsSubnet(spec.name));
            }
            if spec.ipv6.is_some() || spec.vni.is_some() {
                return Err(StoreError::MacvlanIpv4Only(spec.name));
            }
            if let Some(v) = m.vlan
                && !(1..=4094).contains(&v)
            {
                return Err(StoreError::BadVlan(v));
            }
        }
        self.write(|txn| {
            let mut nets = txn.open_table(NETWORKS)?;
            if read_network(&nets, &spec.name)?.is_some() {
                return Err(StoreError::DuplicateNetwork(spec.name.clone()));
            }
            let existing = all_networks(&nets)?;
            if let Some(m) = spec.macvlan
                && let Some(o) = existing
                    .iter()
                    .find(|o| o.macvlan.is_some_and(|om| om.vlan == m.vlan))
            {
                return Err(StoreError::DuplicateVlan {
                    vlan: m.vlan,
                    other: o.name.clone(),
                });
            }
            let subnet = match spec.subnet {
                Some(s) => {
                    if let Some(o) = existing
                        .iter()
                        .find(|o| clash((s, spec.macvlan), (o.subnet, o.macvlan)))
                    {
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
            let ipv6 = match &spec.ipv6 {
                Some(v6) => Some(v6::config(v6, &existing)?),
                None => None,
            };
            let record = build_record(txn, &spec, subnet, ipv6, false)?;
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
            let record = build_record(txn, &spec, subnet, None, true)?;
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
            v6::drop_network(txn, name)?;
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
}

/// The record for `spec` on `subnet` (and `ipv6`, checked by the caller), taking the next
/// creation sequence number.
fn build_record(
    txn: &WriteTransaction,
    spec: &NetworkSpec,
    subnet: Ipv4Net,
    ipv6: Option<Ipv6Config>,
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
    for (name, &ip) in &spec.aux_addresses {
        if name.is_empty()
            || !subnet.contains(&ip)
            || ip == subnet.network()
            || ip == subnet.broadcast()
        {
            return Err(StoreError::BadAuxAddress {
                name: name.clone(),
                ip,
                subnet,
            });
        }
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
        ipv6,
        vni: spec.vni,
        macvlan: spec.macvlan,
        aux_addresses: spec.aux_addresses.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::*;

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

    fn lan(name: &str, subnet: &str, vlan: Option<u16>) -> NetworkSpec {
        let mut sp = spec(name, Some(subnet));
        sp.macvlan = Some(MacvlanConfig {
            vlan,
            private: false,
        });
        sp
    }

    #[test]
    fn macvlan_networks_on_different_vlans_may_share_a_subnet_and_one_vlan_has_one() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let v10 = s
            .create_network(lan("v10", "192.168.77.0/24", Some(10)))
            .unwrap();
        assert_eq!(v10.macvlan.unwrap().vlan, Some(10));
        // Another VLAN: a separate LAN, the same subnet is fine.
        s.create_network(lan("v20", "192.168.77.0/24", Some(20)))
            .unwrap();
        s.create_network(lan("untagged", "192.168.77.0/25", None))
            .unwrap();
        // One network per VLAN (and one untagged).
        let e = s
            .create_network(lan("again", "10.5.0.0/24", Some(10)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "macvlan network \"v10\" is on VLAN 10 of the uplink already: each macvlan network \
             needs its own --vlan"
        );
        let e = s
            .create_network(lan("again", "10.5.0.0/24", None))
            .unwrap_err();
        assert!(e.to_string().contains("the untagged LAN"), "{e}");
        // A bridge network never overlaps one.
        assert!(matches!(
            s.create_network(spec("br", Some("192.168.77.0/24"))),
            Err(StoreError::Overlap { .. })
        ));
        // Nor does a macvlan network overlap a bridge network.
        s.create_network(spec("br", Some("10.6.0.0/16"))).unwrap();
        assert!(matches!(
            s.create_network(lan("v30", "10.6.1.0/24", Some(30))),
            Err(StoreError::Overlap { .. })
        ));
        let mut nosub = lan("nosub", "10.7.0.0/24", Some(40));
        nosub.subnet = None;
        assert!(matches!(
            s.create_network(nosub),
            Err(StoreError::MacvlanNeedsSubnet(_))
        ));
        let mut six = lan("six", "10.7.0.0/24", Some(40));
        six.ipv6 = Some(Ipv6Spec::default());
        assert!(matches!(
            s.create_network(six),
            Err(StoreError::MacvlanIpv4Only(_))
        ));
        assert!(matches!(
            s.create_network(lan("bad", "10.7.0.0/24", Some(4095))),
            Err(StoreError::BadVlan(4095))
        ));
        s.verify().unwrap();
        // Reopened, the records still are what they were.
        drop(s);
        let s = Store::open(&t.path).unwrap();
        assert_eq!(s.network("v10").unwrap(), Some(v10));
    }

    #[test]
    fn aux_addresses_are_kept_and_checked() {
        let t = tmp();
        let s = Store::open(&t.path).unwrap();
        let mut sp = lan("lan", "192.168.50.0/24", None);
        sp.aux_addresses
            .insert("router2".into(), ip("192.168.50.3"));
        let r = s.create_network(sp.clone()).unwrap();
        assert_eq!(r.aux_addresses["router2"], ip("192.168.50.3"));
        assert_eq!(r.gateway, ip("192.168.50.1"));
        s.remove_network("lan").unwrap();
        for bad in ["10.0.0.1", "192.168.50.0", "192.168.50.255"] {
            let mut b = sp.clone();
            b.aux_addresses.insert("x".into(), ip(bad));
            let e = s.create_network(b).unwrap_err();
            assert!(matches!(e, StoreError::BadAuxAddress { .. }), "{bad}: {e}");
        }
    }
}
