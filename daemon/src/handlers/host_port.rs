//! The host port: how the daemon's own host reaches the containers of every non-internal
//! network, as it reaches Docker's through docker0. The host is attached like a container
//! whose namespace is the daemon's own: an interface `vs-NAME` in the daemon's namespace with
//! the subnet's last host address, on the network's bridge. That adds one connected route per
//! subnet and never a default route, so the host's own routing is otherwise untouched. In
//! DNS it is [`HOST_NAME`] (Docker's host.docker.internal).
//!
//! Made for every non-internal network at start-up and at `network create`, removed with the
//! network; `[host] port = false` turns it off, rootless daemons have none (their host is
//! reached through the socket gateway).

use super::container::{ConnectArgs, connect_held, forget};
use crate::state::{Container, Daemon, lock};
use datapath::io::link;
use ipnet::Ipv4Net;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;

/// The host's container name on every network (and its DNS name).
pub(crate) const HOST_NAME: &str = "host.vswitch.internal";
/// The daemon's own namespace, whichever process opens it.
const SELF_NETNS: &str = "/proc/self/ns/net";

/// The host interface of `network`: `vs-NAME`, or `vs-` and a hash of the name when the name
/// does not fit an interface name.
pub(crate) fn ifname_for(network: &str) -> String {
    let plain = format!("vs-{network}");
    if plain.len() <= 15
        && network
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
    {
        return plain;
    }
    let mut h = DefaultHasher::new();
    ("vswitch-host-port", network).hash(&mut h);
    format!("vs-{:08x}", h.finish() as u32)
}

/// The host's address on `subnet`: its last host address, or the one before when that is the
/// gateway. None for subnets too small to spare one.
pub(crate) fn host_address(subnet: Ipv4Net, gateway: Ipv4Addr) -> Option<Ipv4Addr> {
    if subnet.prefix_len() > 29 {
        return None;
    }
    let last = u32::from(subnet.broadcast()) - 1;
    let pick = if Ipv4Addr::from(last) == gateway {
        last - 1
    } else {
        last
    };
    Some(Ipv4Addr::from(pick))
}

/// Whether the host has an address in `subnet` on the uplink's NIC.
fn host_on_lan(d: &Daemon, subnet: ipnet::Ipv4Net) -> bool {
    let nic = d.engines.first().and_then(|e| {
        e.call(|e| {
            let topo = e.pipeline().topology();
            topo.uplink
                .and_then(|u| topo.ports.get(usize::from(u.port.0)))
                .map(|p| p.name.clone())
        })
        .flatten()
    });
    nic.and_then(|n| datapath::io::macvlan::ipv4_addresses(&n).ok())
        .is_some_and(|addrs| addrs.iter().any(|a| subnet.contains(a)))
}

/// `network`'s host port, when it has one.
pub(crate) fn of(d: &Daemon, network: &str) -> Option<Container> {
    lock(&d.containers)
        .get(&(network.to_string(), HOST_NAME.to_string()))
        .cloned()
}

/// Gives `network` its host port unless it has one, is internal, or host ports are off. A
/// failure is logged, not returned: the network works without it. `changes` must be held.
pub(crate) fn ensure(d: &Daemon, network: &str) {
    if !d.host.port || of(d, network).is_some() {
        return;
    }
    // An overlay network has none: its addresses are the cluster's, and one host port per
    // host would take one each and answer to the same name on every host. Hosts reach overlay
    // containers through published ports, as with Docker's overlay driver.
    let rec = match d.store.network(network) {
        Ok(Some(rec)) if !rec.internal && rec.vni.is_none() => rec,
        _ => return,
    };
    // A macvlan network's host port is how the host reaches its macvlan containers (which a
    // kernel macvlan's host cannot): an address of the network's range (vswitch's part of the
    // LAN), bridged by vswitch to the containers and onto the LAN. Not when the host is on that
    // LAN already through the uplink's NIC: two connected routes to the subnet would fight.
    let pool = match rec.macvlan {
        Some(_) if host_on_lan(d, rec.subnet) => {
            tracing::info!(
                network,
                subnet = %rec.subnet,
                "no host port: the host is on this LAN through the uplink's NIC already"
            );
            return;
        }
        Some(_) => rec.ip_range.unwrap_or(rec.subnet),
        None => rec.subnet,
    };
    let Some(ip) = host_address(pool, rec.gateway) else {
        tracing::info!(network, subnet = %rec.subnet, "subnet too small for a host port");
        return;
    };
    let ifname = ifname_for(network);
    if link::link_exists(&ifname) {
        tracing::warn!(
            network,
            "no host port: an interface {ifname} exists already"
        );
        return;
    }
    let args = ConnectArgs {
        network: network.to_string(),
        netns: Some(SELF_NETNS.to_string()),
        name: Some(HOST_NAME.to_string()),
        ifname: Some(ifname.clone()),
        ip: Some(ip),
        // The prefix's last address, as the IPv4 side takes the subnet's last host.
        ip6: rec
            .ipv6
            .map(|v| v.subnet.broadcast())
            .filter(|&last| Some(last) != rec.ipv6.map(|v| v.gateway)),
        mac: None,
        peer_in_host: false,
        default_route: false,
    };
    match connect_held(d, args) {
        Ok(c) => {
            // On an IPv4-only network the host's IPv6 chatter (router solicitations, MLD) has
            // no business there; a dual-stack network's host port keeps its IPv6 address.
            if c.ip6.is_none()
                && let Err(e) = link::disable_ipv6(&ifname)
            {
                tracing::debug!(%ifname, "leaving IPv6 on: {e}");
            }
            tracing::info!(network, %ifname, ip = %c.ip, ip6 = ?c.ip6, "host port");
        }
        Err(e) => tracing::warn!(network, "no host port: {e:#}"),
    }
}

/// [`ensure`] for every network.
pub(crate) fn ensure_all(d: &Daemon) {
    let _guard = lock(&d.changes);
    for n in d.store.networks().unwrap_or_default() {
        ensure(d, &n.name);
    }
}

/// Takes `network`'s host port away (before the network goes). `changes` must be held.
pub(crate) fn remove(d: &Daemon, network: &str) -> anyhow::Result<()> {
    if of(d, network).is_some() {
        forget(d, network, HOST_NAME, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_and_differ() {
        assert_eq!(ifname_for("bridge"), "vs-bridge");
        let long = ifname_for("a-very-long-network-name");
        assert!(long.len() <= 15 && long.starts_with("vs-"), "{long}");
        assert_ne!(long, ifname_for("a-very-long-network-name2"));
        // Dots are fine in network names, not in ours.
        assert!(!ifname_for("a.b").contains('.'));
    }

    #[test]
    fn the_host_takes_the_last_address_but_never_the_gateway() {
        let net: Ipv4Net = "172.17.0.0/16".parse().unwrap();
        let gw = Ipv4Addr::new(172, 17, 0, 1);
        assert_eq!(
            host_address(net, gw),
            Some(Ipv4Addr::new(172, 17, 255, 254))
        );
        let net: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let gw = Ipv4Addr::new(10, 0, 0, 254);
        assert_eq!(host_address(net, gw), Some(Ipv4Addr::new(10, 0, 0, 253)));
        assert_eq!(host_address("10.0.0.0/30".parse().unwrap(), gw), None);
    }
}
