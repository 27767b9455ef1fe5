//! The uplink's side of start-up: the embedded rootless topology, the socket gateway that serves
//! a `kind = "socket"` uplink, and the host's DNS resolvers.

use anyhow::{Context, Result};
use datapath::io::rootless::HostHelper;
use datapath::ports::{HelperSockets, SocketUplinkPort};
use packet::{MacAddr, PortProto};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use switch::Config;

/// The rootless default: an uplink of host sockets (the socket gateway), large MTUs like the
/// rootless tools use; networks come from the state (the default `bridge` at least). The text
/// ends with the `[uplink]` table, so that tests and benches can add keys to it (such as
/// `host_loopback`) and tables after it without writing their own copy: its IPv6 side is the
/// inline `ipv6` table for that reason. IPv6 (for dual-stack networks, NAT66 to the ULA
/// fd00:7673:ffff::2) goes to the socket gateway as next hop fd00:7673:ffff::1, statically at
/// the gateway's MAC ([`SOCKET_GATEWAY_MAC`]), as IPv4 goes to 10.0.2.2.
pub const ROOTLESS_TOPOLOGY: &str = r#"
[bridge]
mtu = 65520

[[port]]
name = "uplink"
kind = "socket"

[uplink]
port = "uplink"
address = "10.0.2.100"
subnet = "10.0.2.0/24"
next_hop = "10.0.2.2"
mtu = 65520
ipv6 = { address = "fd00:7673:ffff::2", next_hop = "fd00:7673:ffff::1", next_hop_mac = "02:00:00:00:00:01" }
"#;

/// The MAC the socket gateway answers as (ARP and neighbour solicitations) unless `[uplink]
/// next_hop_mac` says otherwise; the embedded topology's IPv6 next hop is statically at it.
pub const SOCKET_GATEWAY_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

/// Starts the socket gateway that serves a `kind = "socket"` uplink, with host sockets from the
/// rootless helper (or made directly when running as root).
pub(crate) fn socket_uplink(
    config: &Config,
    topo: &switch::Topology,
    dns_loopback: Vec<Ipv4Addr>,
    helper: Option<Arc<HostHelper>>,
) -> Result<SocketUplinkPort> {
    let up = topo
        .uplink
        .context("a socket port must be the [uplink] port (with an address)")?;
    let gateway_mac = up.next_hop_mac.unwrap_or(SOCKET_GATEWAY_MAC);
    if let Some(warning) = small_mtu_warning(topo.bridge.mtu, up.mtu) {
        tracing::warn!("{warning}");
    }
    let mut gw = sockgw::GatewayConfig::new(up.address, up.mac, gateway_mac);
    gw.mtu = usize::from(up.mtu);
    gw.host_loopback = config.uplink.as_ref().and_then(|u| u.host_loopback);
    gw.next_hop = up.next_hop;
    gw.dns_loopback = dns_loopback;
    gw.ipv6 = gateway_v6(up.v6.as_ref(), gateway_mac)?;
    gw.published = config
        .published
        .iter()
        .map(|p| gateway_published(p.proto, p.host_ip, p.host_port))
        .collect();
    let sockets: Box<dyn sockgw::HostSockets> = match helper {
        Some(h) => Box::new(HelperSockets(h)),
        None => Box::new(sockgw::Direct),
    };
    SocketUplinkPort::start(gw, sockets).context("starting the socket gateway (uplink)")
}

/// The socket gateway's IPv6 side from the uplink's: the gateway is the IPv6 next hop too, so a
/// static `next_hop_mac` there must be the gateway's MAC (frames to any other MAC would be
/// dropped as not for it); without one the switch finds it by neighbour solicitation.
pub(crate) fn gateway_v6(
    v6: Option<&switch::config::UplinkV6>,
    gateway_mac: MacAddr,
) -> Result<Option<sockgw::GatewayV6>> {
    let Some(v6) = v6 else {
        return Ok(None);
    };
    if let Some(mac) = v6.next_hop_mac.filter(|m| *m != gateway_mac) {
        anyhow::bail!(
            "[uplink.ipv6] next_hop_mac {mac} of a socket uplink must be the socket gateway's MAC \
             {gateway_mac} (the IPv4 next_hop_mac, else {SOCKET_GATEWAY_MAC}): leave it out or \
             set it to that"
        );
    }
    let mut gw = sockgw::GatewayV6::new(v6.address);
    gw.next_hop = v6.next_hop;
    Ok(Some(gw))
}

/// The MTU the rootless tools (and the embedded topology) use on a socket uplink: nothing on
/// the wire limits it, and large segments keep the socket gateway's per-packet cost down.
pub const SOCKET_UPLINK_MTU: u16 = 65520;

/// What to tell the user when a socket uplink runs with MTUs below [`SOCKET_UPLINK_MTU`] (a
/// topology file that left `[bridge] mtu` or `[uplink] mtu` at the default 1500); `None` when
/// both are that large.
pub(crate) fn small_mtu_warning(bridge_mtu: u16, uplink_mtu: u16) -> Option<String> {
    (bridge_mtu < SOCKET_UPLINK_MTU || uplink_mtu < SOCKET_UPLINK_MTU).then(|| {
        format!(
            "socket uplink with bridge mtu {bridge_mtu} and uplink mtu {uplink_mtu}: containers' \
             eth0 gets the bridge MTU; set `mtu = {SOCKET_UPLINK_MTU}` under [bridge] and \
             [uplink], as the embedded rootless topology does, for full speed"
        )
    })
}

/// The host's resolvers: nameserver lines of /etc/resolv.conf, loopback stubs left out (as
/// Docker does: they would not be reachable from the containers' side).
/// The nameservers of /etc/resolv.conf; loopback ones only when `keep_loopback` (a socket
/// uplink can reach them, a routed uplink cannot).
pub(crate) fn host_resolvers(keep_loopback: bool) -> Vec<IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        // A scoped address (fe80::1%eth0) names another host's link: not a resolver here.
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .filter(|a| keep_loopback || !a.is_loopback())
        .filter(|a| !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect()
}

/// A port published at run time, as the socket gateway listens for it (on `host_ip`, or all
/// host addresses: the IPv6 ones too when the uplink has an IPv6 side).
pub(crate) fn gateway_published(
    proto: PortProto,
    host_ip: Option<Ipv4Addr>,
    host_port: u16,
) -> sockgw::Published {
    sockgw::Published {
        proto,
        host_addr: IpAddr::V4(host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)),
        host_port,
    }
}

/// The interface an `af_packet` uplink reads and writes: the port's own, or (mode `macvlan`,
/// or `auto` on an interface where the host's stack has an address) a macvlan of it with
/// vswitch's MAC, made here; `Some(name)` of the macvlan then (the daemon deletes it at stop).
pub(crate) fn raw_uplink_macvlan(
    config: &Config,
    topo: &switch::Topology,
) -> Result<Option<String>> {
    use switch::config::UplinkMode;
    let (Some(up_cfg), Some(up)) = (&config.uplink, topo.uplink) else {
        return Ok(None);
    };
    let Some(port) = topo.ports.get(usize::from(up.port.0)) else {
        return Ok(None);
    };
    if port.kind != switch::PortKind::AfPacket {
        return Ok(None);
    }
    let nic = port.name.as_str();
    let host_addrs = datapath::io::macvlan::ipv4_addresses(nic)
        .with_context(|| format!("reading the host's addresses on {nic}"))?;
    let macvlan = match up_cfg.mode {
        UplinkMode::Macvlan => true,
        UplinkMode::Raw => {
            if !host_addrs.is_empty() {
                tracing::warn!(
                    uplink = nic,
                    ?host_addrs,
                    "uplink mode raw on an interface the host uses: its stack sees vswitch's \
                     frames and resets connections it does not know (mode = \"macvlan\" avoids it)"
                );
            }
            false
        }
        UplinkMode::Auto => !host_addrs.is_empty(),
    };
    if !macvlan {
        return Ok(None);
    }
    let name: String = format!("vsu-{nic}").chars().take(15).collect();
    datapath::io::macvlan::create_uplink_macvlan(&name, nic, up.mac.0).with_context(|| {
        format!(
            "creating the uplink's macvlan {name} on {nic} (set [uplink] mode = \"raw\" to use \
             {nic} itself)"
        )
    })?;
    tracing::info!(uplink = nic, macvlan = %name, mac = %up.mac, ?host_addrs, "uplink beside the host's stack");
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ```toml block of README.md's "Rootless" section.
    fn readme_rootless_toml() -> String {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Rootless\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README.md has a Rootless section");
        section
            .split("```toml\n")
            .nth(1)
            .and_then(|s| s.split("```").next())
            .expect("the Rootless section has a toml block")
            .to_string()
    }

    #[test]
    fn the_readme_topology_parses_and_keeps_the_large_mtu() {
        // The daemon adds the networks of its state (the default `bridge` at least).
        let text = readme_rootless_toml()
            + "\n[[network]]\nname = \"bridge\"\nsubnet = \"172.17.0.0/16\"\n\
               gateway = \"172.17.0.1\"\n";
        let config = Config::from_toml(&text).expect("README's rootless topology parses");
        let topo = switch::Topology::new(&config).expect("and builds");
        let up = topo.uplink.expect("with an uplink");
        assert_eq!(topo.bridge.mtu, SOCKET_UPLINK_MTU, "containers' eth0 MTU");
        assert_eq!(up.mtu, SOCKET_UPLINK_MTU);
        assert_eq!(
            config.uplink.and_then(|u| u.host_loopback),
            Some(Ipv4Addr::new(10, 0, 2, 2))
        );
        assert_eq!(small_mtu_warning(topo.bridge.mtu, up.mtu), None);
    }

    #[test]
    fn the_embedded_topology_keeps_the_large_mtu() {
        let config = Config::from_toml(ROOTLESS_TOPOLOGY).expect("embedded topology");
        assert_eq!(config.bridge.mtu, SOCKET_UPLINK_MTU);
        assert_eq!(config.uplink.map(|u| u.mtu), Some(SOCKET_UPLINK_MTU));
    }

    #[test]
    fn the_embedded_topology_routes_ipv6_to_the_socket_gateway() {
        let text = ROOTLESS_TOPOLOGY.to_string()
            + "\n[[network]]\nname = \"bridge\"\nsubnet = \"172.17.0.0/16\"\n\
               gateway = \"172.17.0.1\"\nsubnet6 = \"fd00:17::/64\"\n";
        let config = Config::from_toml(&text).expect("embedded topology, dual-stack network");
        let topo = switch::Topology::new(&config).expect("builds");
        let up = topo.uplink.expect("an uplink");
        let v6 = up.v6.expect("with an IPv6 side");
        assert_eq!(v6.address.to_string(), "fd00:7673:ffff::2");
        let next_hop = v6.next_hop.map(|a| a.to_string());
        assert_eq!(next_hop.as_deref(), Some("fd00:7673:ffff::1"));
        assert!(v6.nat, "NAT66 to the uplink's ULA");
        assert_eq!(up.next_hop_mac, None, "IPv4 finds the gateway by ARP");
        // Statically at the MAC the socket gateway answers as.
        assert_eq!(v6.next_hop_mac, Some(SOCKET_GATEWAY_MAC));
        let gw = gateway_v6(Some(&v6), SOCKET_GATEWAY_MAC).unwrap().unwrap();
        assert_eq!((gw.address, gw.next_hop), (v6.address, v6.next_hop));
        assert_eq!(gw.host_loopback, None);
        // Another MAC would never reach the gateway: refused at start-up.
        let other = MacAddr([0x02, 0, 0, 0, 0, 0x09]);
        let e = gateway_v6(Some(&v6), other).unwrap_err().to_string();
        assert!(e.contains("next_hop_mac"), "{e}");
        assert_eq!(gateway_v6(None, other).unwrap(), None);
        // Tests and benches append keys to the last table: it is still [uplink].
        let last = ROOTLESS_TOPOLOGY
            .lines()
            .rfind(|l| l.trim_start().starts_with('['));
        assert_eq!(last.map(str::trim), Some("[uplink]"));
    }

    #[test]
    fn published_ports_listen_on_every_address_unless_given_one() {
        let all = gateway_published(PortProto::Tcp, None, 8080);
        assert_eq!(all.host_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let one = gateway_published(PortProto::Udp, Some(Ipv4Addr::LOCALHOST), 53);
        let expected = (IpAddr::V4(Ipv4Addr::LOCALHOST), 53);
        assert_eq!((one.host_addr, one.host_port), expected);
    }

    #[test]
    fn a_small_mtu_is_warned_about() {
        let w = small_mtu_warning(1500, SOCKET_UPLINK_MTU).unwrap_or_default();
        assert!(
            w.contains("bridge mtu 1500") && w.contains("mtu = 65520"),
            "{w}"
        );
        assert!(small_mtu_warning(SOCKET_UPLINK_MTU, 1500).is_some());
        assert!(small_mtu_warning(SOCKET_UPLINK_MTU, SOCKET_UPLINK_MTU).is_none());
    }
}
