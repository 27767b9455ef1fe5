//! The uplink's side of start-up: the embedded rootless topology, the socket gateway that serves
//! a `kind = "socket"` uplink, and the host's DNS resolvers.

use anyhow::{Context, Result};
use datapath::io::rootless::HostHelper;
use datapath::ports::{HelperSockets, SocketUplinkPort};
use packet::PortProto;
use std::net::Ipv4Addr;
use std::sync::Arc;
use switch::Config;

/// The rootless default: an uplink of host sockets (the socket gateway), large MTUs like the
/// rootless tools use; networks come from the state (the default `bridge` at least). The text
/// ends with the `[uplink]` table, so that tests and benches can add keys to it (such as
/// `host_loopback`) and tables after it without writing their own copy.
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
"#;

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
    let gateway_mac = up
        .next_hop_mac
        .unwrap_or(packet::MacAddr([0x02, 0, 0, 0, 0, 0x01]));
    let mut gw = sockgw::GatewayConfig::new(up.address, up.mac, gateway_mac);
    gw.mtu = usize::from(up.mtu);
    gw.host_loopback = config.uplink.as_ref().and_then(|u| u.host_loopback);
    gw.next_hop = up.next_hop;
    gw.dns_loopback = dns_loopback;
    gw.published = config
        .published
        .iter()
        .map(|p| sockgw::Published {
            proto: p.proto,
            host_addr: p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            host_port: p.host_port,
        })
        .collect();
    let sockets: Box<dyn sockgw::HostSockets> = match helper {
        Some(h) => Box::new(HelperSockets(h)),
        None => Box::new(sockgw::Direct),
    };
    SocketUplinkPort::start(gw, sockets).context("starting the socket gateway (uplink)")
}

/// The host's resolvers: nameserver lines of /etc/resolv.conf, loopback stubs left out (as
/// Docker does: they would not be reachable from the containers' side).
/// The nameservers of /etc/resolv.conf; loopback ones only when `keep_loopback` (a socket
/// uplink can reach them, a routed uplink cannot).
pub(crate) fn host_resolvers(keep_loopback: bool) -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| keep_loopback || !a.is_loopback())
        .collect()
}

/// A port published at run time, as the socket gateway listens for it (on `host_ip`, or all
/// host addresses).
pub(crate) fn gateway_published(
    proto: PortProto,
    host_ip: Option<Ipv4Addr>,
    host_port: u16,
) -> sockgw::Published {
    sockgw::Published {
        proto,
        host_addr: host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        host_port,
    }
}
