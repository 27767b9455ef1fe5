//! The uplink beside the host's own stack on a real NIC: a macvlan sub-interface of the NIC
//! with vswitch's own MAC, which the switch reads and writes instead of the NIC.
//!
//! Why: on the NIC itself, the host's kernel receives every frame vswitch does. It answers the
//! replies to masqueraded connections it knows nothing of with RST, and (without promiscuous
//! mode) the NIC does not even accept frames for vswitch's MAC. A macvlan adds vswitch's MAC to
//! the NIC's filter, and the kernel hands frames for that MAC to the macvlan alone, not to the
//! host's interface. The macvlan itself is made inert for the host's stack: no address, no ARP
//! (IFF_NOARP: the kernel would otherwise answer ARP for the host's own addresses on it with
//! vswitch's MAC), no IPv6, no forwarding of what arrives on it (a host with ip_forward=1
//! would route vswitch's traffic). Broadcasts reach both, each answering for its own address.
//! Mode bridge: several macvlans of one NIC (another vswitch, a container's) reach each other.
//! What macvlan cannot do: the host's stack and its macvlans do not reach each other through
//! the NIC (the host reaches containers through the host port instead).

use super::link::{disable_ipv6, rtnl_request, set_link_up};
use super::{IoError, check_ifname, ifindex};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use std::net::Ipv4Addr;

/// Makes `name` a macvlan (mode bridge) of `parent` with MAC `mac`, inert for the host's stack
/// (see the module docs), and brings it up. A link of that name left by an earlier run is
/// replaced.
///
/// # Errors
/// When `parent` does not exist, or the kernel refuses a step (EPERM without CAP_NET_ADMIN;
/// EOPNOTSUPP for a parent that cannot have macvlans, such as a loopback).
pub fn create_uplink_macvlan(name: &str, parent: &str, mac: [u8; 6]) -> Result<(), IoError> {
    check_ifname(name)?;
    let parent_index = ifindex(parent)?;
    super::link::delete_link(name)?;
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Noarp;
    msg.header.change_mask = LinkFlags::Noarp;
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::Link(parent_index),
        LinkAttribute::Address(mac.to_vec()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Bridge,
            )])),
        ]),
    ];
    rtnl_request(
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_CREATE | NLM_F_EXCL,
        || format!("creating macvlan {name} on {parent}"),
    )?;
    let inert = || -> Result<(), IoError> {
        disable_ipv6(name)?;
        // /proc/sys/net follows the thread's namespace, as in `disable_ipv6`.
        let path = format!("/proc/sys/net/ipv4/conf/{name}/forwarding");
        std::fs::write(&path, "0").map_err(|source| IoError::Sys {
            what: format!("turning forwarding off on {name} ({path})"),
            source,
        })?;
        set_link_up(name, None)
    };
    inert().inspect_err(|_| {
        let _ = super::link::delete_link(name);
    })
}

/// The IPv4 addresses the host's stack has on `ifname` (caller's namespace).
///
/// # Errors
/// When the addresses cannot be listed.
pub fn ipv4_addresses(ifname: &str) -> Result<Vec<Ipv4Addr>, IoError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| IoError::Sys {
        what: "listing the host's addresses".into(),
        source: e.into(),
    })?;
    Ok(addrs
        .filter(|a| a.interface_name == ifname)
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .collect())
}
