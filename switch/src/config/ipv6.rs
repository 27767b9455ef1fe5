//! The IPv6 half of a dual-stack topology: a network's IPv6 prefix and gateway, a port's IPv6
//! address, the uplink's IPv6 address and router, checked into what the pipeline reads.
//!
//! A network is IPv6-capable only beside IPv4 (dual-stack, Docker's `--ipv6`): its gateway
//! answers both families with one MAC. The gateway's addresses are the configured one
//! (`prefix::1` by default) and the link-local address of its MAC, which Router
//! Advertisements come from (RFC 4861 6.1.2: routers advertise from link-local addresses).

use super::ConfigError;
use ipnet::Ipv6Net;
use packet::MacAddr;
use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;

/// A network's IPv6 configuration, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkV6 {
    /// The on-link prefix (host bits clear).
    pub subnet: Ipv6Net,
    /// The gateway's global (or ULA) address inside it.
    pub gateway: Ipv6Addr,
    /// The gateway's link-local address (EUI-64 of its MAC).
    pub gateway_ll: Ipv6Addr,
    /// Router Advertisements set the autonomous flag: containers may configure addresses from
    /// the prefix themselves (SLAAC). Off by default: addresses come from IPAM, so that
    /// anti-spoofing knows them.
    pub autoconf: bool,
}

impl NetworkV6 {
    /// Checks `subnet`, `gateway` (default: the prefix's `::1`) for network `name`.
    pub fn new(
        name: &str,
        subnet: Ipv6Net,
        gateway: Option<Ipv6Addr>,
        gateway_mac: MacAddr,
        autoconf: bool,
    ) -> Result<NetworkV6, ConfigError> {
        if subnet.network() != subnet.addr() || subnet.prefix_len() > 126 {
            return Err(ConfigError::BadIpv6Subnet {
                network: name.to_string(),
                subnet,
            });
        }
        let gateway = gateway.unwrap_or_else(|| Ipv6Addr::from(subnet.network().to_bits() | 1));
        if !subnet.contains(&gateway) || gateway == subnet.network() {
            return Err(ConfigError::BadIpv6Gateway {
                network: name.to_string(),
                gateway,
                subnet,
            });
        }
        Ok(NetworkV6 {
            subnet,
            gateway,
            gateway_ll: gateway_mac.link_local(),
            autoconf: autoconf && subnet.prefix_len() == 64,
        })
    }

    /// One of the gateway's own addresses.
    #[inline]
    pub fn is_gateway(&self, ip: Ipv6Addr) -> bool {
        ip == self.gateway || ip == self.gateway_ll
    }
}

/// The uplink's IPv6 side, as written in the topology file (`[uplink]` keys).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UplinkV6Config {
    /// vswitch's IPv6 address on the uplink: the NAT66 source and published-port address.
    pub address: Ipv6Addr,
    /// The on-link prefix of the uplink; destinations inside it are reached directly.
    #[serde(default)]
    pub subnet: Option<Ipv6Net>,
    /// The router for everything off-link (resolved by neighbour discovery unless
    /// `next_hop_mac` is given).
    #[serde(default)]
    pub next_hop: Option<Ipv6Addr>,
    /// Static MAC of the IPv6 next hop.
    #[serde(default)]
    pub next_hop_mac: Option<MacAddr>,
    /// Masquerade (NAT66) container traffic to `address`, Docker's default for ULA networks;
    /// false routes the containers' own addresses (the upstream router must route the
    /// networks' prefixes to vswitch).
    #[serde(default = "super::yes")]
    pub nat: bool,
}

/// The uplink's IPv6 side, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkV6 {
    /// vswitch's address.
    pub address: Ipv6Addr,
    /// vswitch's link-local address on the uplink (EUI-64 of the uplink MAC).
    pub link_local: Ipv6Addr,
    /// On-link prefix.
    pub subnet: Option<Ipv6Net>,
    /// Off-link router.
    pub next_hop: Option<Ipv6Addr>,
    /// Static next-hop MAC.
    pub next_hop_mac: Option<MacAddr>,
    /// Masquerade (NAT66) or route.
    pub nat: bool,
}

impl UplinkV6 {
    /// Checks the file's keys; `mac` is the uplink's MAC.
    pub fn new(c: &UplinkV6Config, mac: MacAddr) -> Result<UplinkV6, ConfigError> {
        if c.address.is_unspecified() || c.address.is_multicast() {
            return Err(ConfigError::BadUplinkIpv6(c.address));
        }
        Ok(UplinkV6 {
            address: c.address,
            link_local: mac.link_local(),
            subnet: c.subnet,
            next_hop: c.next_hop,
            next_hop_mac: c.next_hop_mac,
            nat: c.nat,
        })
    }

    /// One of vswitch's own addresses on the uplink.
    #[inline]
    pub fn is_ours(&self, ip: Ipv6Addr) -> bool {
        ip == self.address || ip == self.link_local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x11, 0, 1]);

    #[test]
    fn the_gateway_defaults_to_the_first_address_and_is_checked() {
        let subnet: Ipv6Net = "fd00:1::/64".parse().unwrap();
        let v6 = NetworkV6::new("n", subnet, None, MAC, false).unwrap();
        assert_eq!(v6.gateway.to_string(), "fd00:1::1");
        assert_eq!(v6.gateway_ll.to_string(), "fe80::42:acff:fe11:1");
        assert!(v6.is_gateway(v6.gateway_ll) && !v6.is_gateway("fd00:1::2".parse().unwrap()));
        for (gw, why) in [
            ("fd00:2::1", "outside"),
            ("fd00:1::", "the subnet-router anycast"),
        ] {
            let err = NetworkV6::new("n", subnet, Some(gw.parse().unwrap()), MAC, false);
            assert!(
                matches!(err, Err(ConfigError::BadIpv6Gateway { .. })),
                "{why}: {err:?}"
            );
        }
        let host_bits: Ipv6Net = "fd00:1::5/64".parse().unwrap();
        assert!(NetworkV6::new("n", host_bits, None, MAC, false).is_err());
        // SLAAC needs a /64 (RFC 4862 5.5.3): asked for on a /80 it stays off.
        let p80: Ipv6Net = "fd00:1::/80".parse().unwrap();
        assert!(!NetworkV6::new("n", p80, None, MAC, true).unwrap().autoconf);
    }
}
