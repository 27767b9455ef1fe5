//! sockgw: the socket gateway that serves the switch's uplink port in rootless mode.
//!
//! The switch masquerades container traffic to the uplink address U and sends it out of the
//! uplink port as Ethernet frames. With no real uplink, [`SocketGateway`] sits on the other end of
//! that port (a seqpacket socket, one frame per message): it terminates each flow and re-originates
//! it with an ordinary host socket, the way slirp4netns and pasta do, and turns the host's answers
//! back into frames addressed to U.
//!
//! - TCP is terminated in a smoltcp [`Interface`](smoltcp::iface::Interface) that accepts any
//!   destination address (`any_ip`). A SYN is held until the host `connect` completes, so a refused
//!   host connection reaches the container as a RST, not as an accepted-then-reset connection.
//! - UDP and ICMP echo are relayed datagram by datagram without smoltcp.
//! - ARP requests are answered with the gateway's MAC for every address.
//! - IPv6 (when [`GatewayConfig::ipv6`] is set): the same for flows from the uplink's IPv6
//!   address (TCP in smoltcp, UDP and ICMPv6 echo relayed through host IPv6 sockets), and
//!   neighbour solicitations are answered with the gateway's MAC for every target.
//!
//! Threading: [`SocketGateway::run`] owns everything on the calling thread; only the
//! [`Counters`] are shared (atomics).
//!
//! Layout, by role: `event_loop` (the mio loop, the link, commands, timers) owns the shared
//! state `ctx::Ctx` and lends it to one role per event: `tcp` (flows; `tcp/relay` moves their
//! bytes), `dgram` (UDP and ICMP echo flows) or `listen` (published ports). `frames` parses and
//! builds the frames handled outside smoltcp (`frames/v6` their IPv6 half, neighbour discovery
//! included); `device` is smoltcp's view of the link.

mod counters;
mod ctx;
mod device;
mod dgram;
mod event_loop;
mod frames;
mod listen;
mod tcp;

pub use counters::{Counters, CountersSnapshot};
pub use event_loop::{Command, GatewayHandle, SocketGateway};
pub use packet::MacAddr;

use packet::PortProto;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Default size of each smoltcp TCP buffer (receive and send, per connection). Large enough that
/// the advertised window (with window scaling) does not throttle a 65520-byte MTU link.
pub const DEFAULT_TCP_BUFFER: usize = 2 * 1024 * 1024;

/// Idle time after which a UDP or ICMP flow (and its host socket) is closed.
pub const DATAGRAM_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a host `connect` may take before the container's SYN is answered with a RST.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A host port published into the switch: traffic to `host_addr:host_port` on the host arrives at
/// `U:host_port` as a flow from the real client's address and port (the switch's DNAT then takes
/// it to the container). IPv6 clients arrive at the uplink's IPv6 address instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// TCP or UDP.
    pub proto: PortProto,
    /// Host address to listen on. 0.0.0.0 is every address: every IPv4 one, and, when the
    /// gateway serves IPv6 ([`GatewayConfig::ipv6`]), `[::]` too (IPv6 only; skipped on a host
    /// without IPv6). An IPv6 address listens there only (`::` for every IPv6 address).
    pub host_addr: IpAddr,
    /// Host port to listen on; also the destination port at U.
    pub host_port: u16,
}

/// Configuration of a [`SocketGateway`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// U: the switch's uplink address; all flows arrive from U.
    pub address: Ipv4Addr,
    /// U's MAC (frames from the switch come from it, frames to the switch go to it).
    pub mac: MacAddr,
    /// The MAC the gateway answers as (the switch's static next-hop MAC).
    pub gateway_mac: MacAddr,
    /// IP MTU of the link, e.g. 65520. Frames may be up to `mtu + 14` bytes.
    pub mtu: usize,
    /// Flows to this address go to the host's 127.0.0.1 (off by default).
    pub host_loopback: Option<Ipv4Addr>,
    /// The switch's next hop on the link (10.0.2.2 in the embedded topology). Clients of
    /// published ports on the host's loopback appear from `host_loopback`, else from this.
    pub next_hop: Option<Ipv4Addr>,
    /// Loopback resolvers of the host (e.g. systemd-resolved's 127.0.0.53) that flows to port
    /// 53 may reach: the switch forwards DNS there. Every other loopback destination is refused.
    pub dns_loopback: Vec<Ipv4Addr>,
    /// Host ports published into the switch.
    pub published: Vec<Published>,
    /// Size of each smoltcp TCP buffer per connection (receive and send); see
    /// [`DEFAULT_TCP_BUFFER`].
    pub tcp_buffer: usize,
    /// The uplink's IPv6 side; `None` (the default): IPv6 frames are dropped as unsupported.
    pub ipv6: Option<GatewayV6>,
}

/// The IPv6 side of a [`GatewayConfig`]: the counterparts of its IPv4 fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayV6 {
    /// U6: the switch's uplink IPv6 address; IPv6 flows arrive from it.
    pub address: Ipv6Addr,
    /// Flows to this address go to the host's ::1 (off by default).
    pub host_loopback: Option<Ipv6Addr>,
    /// The switch's IPv6 next hop on the link. IPv6 clients of published ports on the host's
    /// loopback appear from `host_loopback`, else from this.
    pub next_hop: Option<Ipv6Addr>,
}

impl GatewayV6 {
    /// U6 = `address`, no host loopback, no next hop.
    pub fn new(address: Ipv6Addr) -> Self {
        GatewayV6 {
            address,
            host_loopback: None,
            next_hop: None,
        }
    }

    /// [`GatewayConfig::client_addr`] for IPv6: a client on the host's ::1 appears from
    /// `host_loopback`, else the next hop; others keep their address.
    pub fn client_addr(&self, peer: Ipv6Addr) -> Ipv6Addr {
        if peer.is_loopback() {
            self.host_loopback.or(self.next_hop).unwrap_or(peer)
        } else {
            peer
        }
    }
}

impl GatewayConfig {
    /// The address a client of a published port at `peer` appears from in the switch. A
    /// container's kernel drops packets from 127.0.0.0/8 arriving on eth0 as martians, so a
    /// client on the host's loopback appears from the address that maps back to it
    /// (`host_loopback`, else the next hop), as with pasta and slirp4netns; others keep theirs.
    pub fn client_addr(&self, peer: Ipv4Addr) -> Ipv4Addr {
        if peer.is_loopback() {
            self.host_loopback.or(self.next_hop).unwrap_or(peer)
        } else {
            peer
        }
    }

    /// [`Self::client_addr`] for either family; `None` for an IPv6 peer when the gateway does
    /// not serve IPv6.
    pub fn client_ip(&self, peer: IpAddr) -> Option<IpAddr> {
        match peer {
            IpAddr::V4(a) => Some(IpAddr::V4(self.client_addr(a))),
            IpAddr::V6(a) => self.ipv6.map(|v6| IpAddr::V6(v6.client_addr(a))),
        }
    }

    /// U for a flow of `peer`'s family: [`Self::address`], or the IPv6 one (`None` when the
    /// gateway does not serve IPv6).
    pub fn uplink_for(&self, peer: IpAddr) -> Option<IpAddr> {
        match peer {
            IpAddr::V4(_) => Some(IpAddr::V4(self.address)),
            IpAddr::V6(_) => self.ipv6.map(|v6| IpAddr::V6(v6.address)),
        }
    }

    /// A configuration with MTU 65520, no host loopback, nothing published, no IPv6 and
    /// [`DEFAULT_TCP_BUFFER`].
    pub fn new(address: Ipv4Addr, mac: MacAddr, gateway_mac: MacAddr) -> Self {
        GatewayConfig {
            address,
            mac,
            gateway_mac,
            mtu: 65520,
            host_loopback: None,
            next_hop: None,
            dns_loopback: Vec::new(),
            published: Vec::new(),
            tcp_buffer: DEFAULT_TCP_BUFFER,
            ipv6: None,
        }
    }
}

/// How host sockets are made. In rootless mode they must be created in the host's network
/// namespace by a helper process and passed over; tests and the rootful case create them directly
/// ([`Direct`]). The gateway sets non-blocking mode itself.
pub trait HostSockets: Send {
    /// Creates a socket like `socket(2)`.
    fn socket(
        &self,
        domain: socket2::Domain,
        ty: socket2::Type,
        proto: Option<socket2::Protocol>,
    ) -> std::io::Result<socket2::Socket>;
}

/// Creates host sockets in the current network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl HostSockets for Direct {
    fn socket(
        &self,
        domain: socket2::Domain,
        ty: socket2::Type,
        proto: Option<socket2::Protocol>,
    ) -> std::io::Result<socket2::Socket> {
        socket2::Socket::new(domain, ty, proto)
    }
}
