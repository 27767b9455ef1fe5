//! Address management: which addresses of a network's subnets are handed out.
//!
//! A [`Pool`] covers one subnet. The network address, the broadcast address and the gateway are
//! never handed out; allocation takes the lowest free address (as Docker does), so results are
//! deterministic. Invariant: an address is in `used` at most once, and only addresses inside
//! the subnet (or the configured range) are ever returned.
//!
//! [`store`] keeps networks, leases and published ports in an embedded transactional database
//! (redb), one write transaction per operation, so that leases survive restarts and crashes. A
//! network may be dual-stack: an IPv6 subnet beside the IPv4 one ([`Ipv6Spec`]), and then each
//! of its leases holds an IPv6 address too, taken in the same transaction ([`Lease::ip6`]).

pub mod store;

pub use store::{
    Ipv6Config, Ipv6Spec, Lease, LeaseMeta, MacvlanConfig, NetworkRecord, NetworkSpec, Publish,
    PublishTarget, Released, Store, StoreError,
};

use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why an address could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Every address is taken.
    #[error("no free address left in {0}: disconnect a container or use a larger subnet")]
    Exhausted(Ipv4Net),
    /// The requested address is outside the subnet.
    #[error("{0} is outside the network's subnet {1}")]
    OutsideSubnet(Ipv4Addr, Ipv4Net),
    /// The requested address is reserved (network, broadcast, gateway, aux address).
    #[error("{0} is reserved in {1} (network, broadcast, gateway or aux address)")]
    Reserved(Ipv4Addr, Ipv4Net),
    /// The requested address is already leased.
    #[error("{0} is already in use on this network")]
    InUse(Ipv4Addr),
    /// No free IPv6 address was found (every one, or the most one allocation looks at, is
    /// taken).
    #[error(
        "IPv6 pool exhausted: no free address in {0} (searched from its start, at most {max} addresses): disconnect a container, use a larger subnet or request a free address",
        max = store::V6_MAX_PROBES
    )]
    Exhausted6(Ipv6Net),
    /// The requested IPv6 address is outside the network's IPv6 subnet.
    #[error("{0} is outside the network's IPv6 subnet {1}")]
    OutsideSubnet6(Ipv6Addr, Ipv6Net),
    /// The requested IPv6 address is reserved (the subnet-router anycast prefix::, the gateway).
    #[error("{0} is reserved in {1} (subnet-router anycast or gateway address)")]
    Reserved6(Ipv6Addr, Ipv6Net),
    /// The requested IPv6 address is already leased.
    #[error("{0} is already in use on this network")]
    InUse6(Ipv6Addr),
    /// An IPv6 subnet whose prefix is outside /64 to /124.
    #[error(
        "IPv6 subnet {0} has a /{len} prefix: use a prefix length from /64 to /124 (/64 is the usual one)",
        len = .0.prefix_len()
    )]
    PrefixLen6(Ipv6Net),
}

/// The addresses of one subnet.
#[derive(Debug, Clone)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    used: BTreeSet<Ipv4Addr>,
}

impl Pool {
    /// A pool for `subnet` whose gateway (if any) is reserved.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Pool {
        Pool {
            subnet,
            gateway,
            used: BTreeSet::new(),
        }
    }

    /// The subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    fn reserved(&self, ip: Ipv4Addr) -> bool {
        let small = self.subnet.prefix_len() >= 31;
        Some(ip) == self.gateway
            || (!small && (ip == self.subnet.network() || ip == self.subnet.broadcast()))
    }

    /// Leases the lowest free address.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let ip = self
            .subnet
            .hosts()
            .find(|ip| !self.reserved(*ip) && !self.used.contains(ip))
            .ok_or(IpamError::Exhausted(self.subnet))?;
        self.used.insert(ip);
        Ok(ip)
    }

    /// Leases a specific address.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        if !self.subnet.contains(&ip) {
            return Err(IpamError::OutsideSubnet(ip, self.subnet));
        }
        if self.reserved(ip) {
            return Err(IpamError::Reserved(ip, self.subnet));
        }
        if !self.used.insert(ip) {
            return Err(IpamError::InUse(ip));
        }
        Ok(())
    }

    /// Gives an address back; false if it was not leased.
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        self.used.remove(&ip)
    }

    /// Leased addresses, ascending.
    pub fn leases(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.used.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool::new(
            "172.17.0.0/29".parse().unwrap(),
            Some(Ipv4Addr::new(172, 17, 0, 1)),
        )
    }

    #[test]
    fn allocates_lowest_free_skipping_reserved() {
        let mut p = pool();
        let got: Vec<_> = (0..5).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(
            got,
            (2..=6)
                .map(|d| Ipv4Addr::new(172, 17, 0, d))
                .collect::<Vec<_>>()
        );
        assert_eq!(p.allocate(), Err(IpamError::Exhausted(p.subnet())));
        assert!(p.release(Ipv4Addr::new(172, 17, 0, 4)));
        assert_eq!(p.allocate().unwrap(), Ipv4Addr::new(172, 17, 0, 4));
    }

    #[test]
    fn reserve_checks_everything() {
        let mut p = pool();
        assert!(matches!(
            p.reserve(Ipv4Addr::new(10, 0, 0, 1)),
            Err(IpamError::OutsideSubnet(..))
        ));
        assert!(matches!(
            p.reserve(Ipv4Addr::new(172, 17, 0, 1)),
            Err(IpamError::Reserved(..))
        ));
        assert!(matches!(
            p.reserve(Ipv4Addr::new(172, 17, 0, 7)),
            Err(IpamError::Reserved(..))
        ));
        p.reserve(Ipv4Addr::new(172, 17, 0, 5)).unwrap();
        assert_eq!(
            p.reserve(Ipv4Addr::new(172, 17, 0, 5)),
            Err(IpamError::InUse(Ipv4Addr::new(172, 17, 0, 5)))
        );
        assert_eq!(p.allocate().unwrap(), Ipv4Addr::new(172, 17, 0, 2));
    }
}
