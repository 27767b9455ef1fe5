//! The topology file (TOML): networks, ports, bridge settings.
//!
//! [`Config`] is what the file says; [`Topology`] is the checked form the pipeline runs on, with
//! dense ids for networks and ports so the fast path indexes vectors instead of hashing names.
//! Every way a file can be wrong is a [`ConfigError`] that names the offending item.

mod error;
mod ipv6;
mod macvlan;

pub use error::ConfigError;
pub use ipv6::{NetworkV6, UplinkV6, UplinkV6Config};
pub use macvlan::{MAX_VLAN, Macvlan, MacvlanMode, NetworkDriver, parse_vlan};

use ipnet::{Ipv4Net, Ipv6Net};
use packet::{MacAddr, PortProto};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Index of a network in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NetworkId(pub u16);

/// Index of a port in the topology; frames enter and leave through ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortId(pub u16);

/// The whole topology file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bridge-wide settings.
    #[serde(default)]
    pub bridge: BridgeConfig,
    /// Networks: isolated L2 domains.
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConfig>,
    /// Ports and the network each belongs to.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    /// The port toward the outside, with the address used for masquerade and published ports.
    #[serde(default)]
    pub uplink: Option<UplinkConfig>,
    /// Source NAT settings.
    #[serde(default)]
    pub nat: NatConfig,
    /// Connection tracking limits and timeouts.
    #[serde(default)]
    pub conntrack: ConntrackConfig,
    /// Published ports: DNAT from the uplink address to a container.
    #[serde(default, rename = "publish")]
    pub published: Vec<PublishConfig>,
    /// Embedded DNS settings.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Resource limits that keep one tenant from starving the others.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How the daemon's own host reaches its containers (rootful daemon only).
    #[serde(default)]
    pub host: HostConfig,
}

/// The host's way in (the daemon only; `vswitch replay` and the bench ignore it).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// A host port on every non-internal network: an interface `vs-NAME` in the daemon's
    /// namespace holding the subnet's last address, so the host reaches the containers (as
    /// docker0 does). It adds a connected route for each subnet, no default route.
    pub port: bool,
    /// Published ports (TCP and UDP) reachable from the host itself, on localhost and its own
    /// addresses (a relay through the host port, as docker-proxy does). Needs `port`.
    pub proxy: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            port: true,
            proxy: true,
        }
    }
}

/// Resource limits (the ones that belong to a section of their own; the others are
/// `bridge.max_macs_per_port`, `conntrack.max_entries`, `conntrack.max_per_source` and
/// `nat.max_ports_per_destination`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Frames held per next-hop address while its ARP is pending.
    pub arp_queue_per_address: u32,
    /// Frames held for all pending ARP resolutions together.
    pub arp_queue_total: u32,
    /// Control-socket clients served at once; further ones get an error and are closed.
    pub control_clients: u32,
    /// Longest control request line, in bytes.
    pub control_request_bytes: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            arp_queue_per_address: crate::neighbor::MAX_PENDING_PER_IP as u32,
            arp_queue_total: crate::neighbor::MAX_PENDING_TOTAL as u32,
            control_clients: 64,
            control_request_bytes: 64 * 1024,
        }
    }
}

/// Embedded DNS settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Resolvers that queries for other names are forwarded to; empty means the host's
    /// (the nameservers of /etc/resolv.conf, loopback ones left out). Queries over IPv4 go to
    /// the first IPv4 one, queries over IPv6 (to a gateway's IPv6 address) to the first IPv6
    /// one.
    pub upstream: Vec<IpAddr>,
}

/// The uplink: where routed traffic leaves and published ports arrive.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Name of the [[port]] (with no network) that is the uplink.
    pub port: String,
    /// IPv4 address of vswitch on the uplink: masquerade source and published-port address.
    pub address: Ipv4Addr,
    /// The uplink's on-link subnet; destinations inside it are reached directly.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// MAC of vswitch on the uplink; derived from `address` when absent.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Router for everything off-link (resolved by ARP unless `next_hop_mac` is given).
    #[serde(default)]
    pub next_hop: Option<Ipv4Addr>,
    /// Static MAC of the next hop: no ARP on the uplink at all.
    #[serde(default)]
    pub next_hop_mac: Option<MacAddr>,
    /// MTU of the uplink; larger DF packets get ICMP fragmentation-needed.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// How an `af_packet` uplink shares its interface with the host's own stack (see
    /// [`UplinkMode`]).
    #[serde(default)]
    pub mode: UplinkMode,
    /// Socket uplink only: connections to this address reach the host's own loopback
    /// (127.0.0.1), like pasta's gateway mapping. Off unless set: it opens the host's local
    /// services to every container.
    #[serde(default)]
    pub host_loopback: Option<Ipv4Addr>,
    /// The uplink's IPv6 side (`[uplink.ipv6]`): without it, IPv6 is not routed out.
    #[serde(default)]
    pub ipv6: Option<UplinkV6Config>,
}

/// How an `af_packet` uplink lives beside the host's own stack on the same interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkMode {
    /// `macvlan` when the host's stack has an IPv4 address on the interface (a real NIC the
    /// host uses), `raw` when it has none (a link given to vswitch alone).
    #[default]
    Auto,
    /// The interface itself: the host's stack sees every frame vswitch does (and answers
    /// what it does not know with RST), and a NIC must accept vswitch's MAC (promiscuous).
    Raw,
    /// A macvlan sub-interface of it with vswitch's MAC, which the host's stack leaves alone.
    Macvlan,
}

fn default_mtu() -> u16 {
    1500
}

/// Source NAT settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatConfig {
    /// First source port handed out by masquerade.
    pub port_first: u16,
    /// Last source port handed out by masquerade.
    pub port_last: u16,
    /// RFC 4787 endpoint-independent mapping for UDP: a container's (address, port) keeps one
    /// external port for every destination while it is in use. Filtering stays
    /// address-and-port dependent: only remotes the container sent to get in.
    pub udp_endpoint_independent: bool,
    /// Most masqueraded connections toward one destination address at once (0 = as many as
    /// the port range holds), so a few containers cannot use up the ports toward a popular
    /// server.
    pub max_ports_per_destination: u32,
}

impl Default for NatConfig {
    fn default() -> Self {
        // Linux's default ip_local_port_range.
        NatConfig {
            port_first: 32768,
            port_last: 60999,
            udp_endpoint_independent: false,
            max_ports_per_destination: 0,
        }
    }
}

/// Conntrack limits and timeouts, in seconds (Linux defaults).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackConfig {
    /// Most connections tracked at once; when full, unassured ones are evicted first.
    pub max_entries: usize,
    /// Most connections one source address may have tracked at once (0 = no limit): a
    /// container flooding SYNs fills its own share, not the table.
    pub max_per_source: u32,
    /// TCP: after the first SYN.
    pub tcp_syn_sent_secs: u64,
    /// TCP: after SYN/ACK.
    pub tcp_syn_recv_secs: u64,
    /// TCP: established.
    pub tcp_established_secs: u64,
    /// TCP: one FIN seen.
    pub tcp_fin_wait_secs: u64,
    /// TCP: FIN acknowledged.
    pub tcp_close_wait_secs: u64,
    /// TCP: both FINs seen.
    pub tcp_last_ack_secs: u64,
    /// TCP: closed, waiting out late segments.
    pub tcp_time_wait_secs: u64,
    /// TCP: after RST.
    pub tcp_close_secs: u64,
    /// UDP: no reply yet.
    pub udp_unreplied_secs: u64,
    /// UDP: replied stream.
    pub udp_assured_secs: u64,
    /// ICMP echo.
    pub icmp_secs: u64,
}

/// Default `conntrack.max_per_source`: a quarter of the default table.
pub const DEFAULT_MAX_PER_SOURCE: u32 = (conntrack::Config::DEFAULT_MAX_ENTRIES / 4) as u32;

impl Default for ConntrackConfig {
    fn default() -> Self {
        let t = conntrack::Timeouts::default();
        let s = |ns: u64| ns / 1_000_000_000;
        ConntrackConfig {
            max_entries: conntrack::Config::DEFAULT_MAX_ENTRIES,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            tcp_syn_sent_secs: s(t.tcp_syn_sent),
            tcp_syn_recv_secs: s(t.tcp_syn_recv),
            tcp_established_secs: s(t.tcp_established),
            tcp_fin_wait_secs: s(t.tcp_fin_wait),
            tcp_close_wait_secs: s(t.tcp_close_wait),
            tcp_last_ack_secs: s(t.tcp_last_ack),
            tcp_time_wait_secs: s(t.tcp_time_wait),
            tcp_close_secs: s(t.tcp_close),
            udp_unreplied_secs: s(t.udp_unreplied),
            udp_assured_secs: s(t.udp_assured),
            icmp_secs: s(t.icmp),
        }
    }
}

impl ConntrackConfig {
    /// The table configuration in the conntrack crate's units (nanoseconds).
    pub fn to_table_config(&self) -> conntrack::Config {
        let ns = |secs: u64| secs.saturating_mul(1_000_000_000);
        conntrack::Config {
            max_entries: self.max_entries,
            max_per_source: self.max_per_source,
            max_nat_per_destination: 0,
            timeouts: conntrack::Timeouts {
                tcp_syn_sent: ns(self.tcp_syn_sent_secs),
                tcp_syn_recv: ns(self.tcp_syn_recv_secs),
                tcp_established: ns(self.tcp_established_secs),
                tcp_fin_wait: ns(self.tcp_fin_wait_secs),
                tcp_close_wait: ns(self.tcp_close_wait_secs),
                tcp_last_ack: ns(self.tcp_last_ack_secs),
                tcp_time_wait: ns(self.tcp_time_wait_secs),
                tcp_close: ns(self.tcp_close_secs),
                udp_unreplied: ns(self.udp_unreplied_secs),
                udp_assured: ns(self.udp_assured_secs),
                icmp: ns(self.icmp_secs),
            },
        }
    }
}

/// A published port: traffic to uplink address:host_port goes to container_ip:container_port.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// tcp or udp.
    #[serde(default = "default_proto")]
    pub proto: PortProto,
    /// Port on the uplink address.
    pub host_port: u16,
    /// Container address (inside some network's subnet).
    pub container_ip: Ipv4Addr,
    /// Port in the container.
    pub container_port: u16,
    /// Socket uplink only: the host address the listening socket binds (default 0.0.0.0;
    /// 127.0.0.1 makes the port reachable from the host only).
    #[serde(default)]
    pub host_ip: Option<Ipv4Addr>,
}

fn default_proto() -> PortProto {
    PortProto::Tcp
}

/// Settings shared by every network's bridge.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Seconds after which an FDB entry not refreshed by traffic is forgotten (Linux: 300).
    pub aging_secs: u64,
    /// Most MACs one port may teach the FDB; further sources are forwarded but not learned.
    pub max_macs_per_port: u32,
    /// Most multicast groups one port may join (IGMP/MLD snooping); reports for more are
    /// consumed but not learned, and those groups do not reach the port.
    pub max_groups_per_port: u32,
    /// MTU of the ports: frames longer than MTU + 18 bytes (Ethernet header + one VLAN tag) are
    /// dropped as oversize.
    pub mtu: u16,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            aging_secs: 300,
            max_macs_per_port: 1024,
            max_groups_per_port: 256,
            mtu: 1500,
        }
    }
}

/// One network (an L2 domain; frames never cross between networks at layer 2).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Unique name, e.g. "bridge".
    pub name: String,
    /// IPv4 subnet, e.g. 172.17.0.0/16.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// Gateway address inside the subnet, e.g. 172.17.0.1.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// MAC the gateway answers with; derived from the gateway address when absent.
    #[serde(default)]
    pub gateway_mac: Option<MacAddr>,
    /// No uplink: traffic never leaves this network.
    #[serde(default)]
    pub internal: bool,
    /// Inter-container communication; when false, ports of this network reach only the gateway.
    #[serde(default = "yes")]
    pub icc: bool,
    /// Ports with an assigned MAC/address may only send from them (see [`PortConfig::mac`]).
    #[serde(default = "yes")]
    pub anti_spoofing: bool,
    /// IPv6 prefix beside the IPv4 subnet (dual-stack), e.g. fd00:1::/64; needs `gateway`.
    #[serde(default)]
    pub subnet6: Option<Ipv6Net>,
    /// IPv6 gateway address; the prefix's `::1` when absent.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// Router Advertisements let containers configure addresses from the prefix (SLAAC).
    #[serde(default)]
    pub ipv6_autoconf: bool,
    /// An overlay network: its VXLAN network identifier (1 to 16777215); frames between its
    /// ports here and its endpoints on other hosts travel in VXLAN over the uplink.
    #[serde(default)]
    pub vni: Option<u32>,
    /// The other VTEPs of an overlay network (the flood list), when no cluster gives them.
    #[serde(default)]
    pub vtep_peers: Vec<Ipv4Addr>,
    /// `bridge` (the default: behind vswitch's gateway and NAT) or `macvlan` (on the uplink's
    /// LAN: `subnet` is the LAN's, `gateway` its router, which vswitch does not answer for).
    #[serde(default)]
    pub driver: NetworkDriver,
    /// A macvlan network's mode: `bridge` (its containers reach each other) or `private`.
    #[serde(default)]
    pub macvlan_mode: MacvlanMode,
    /// A macvlan network's 802.1Q VLAN id on the uplink (a trunk): tagged out, only that tag in.
    #[serde(default)]
    pub vlan: Option<u16>,
}

fn yes() -> bool {
    true
}

/// What backs a port at run time; the pipeline treats all kinds alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A TAP device.
    Tap,
    /// An existing interface (e.g. a veth end) read through AF_PACKET.
    AfPacket,
    /// A pcap file (replay).
    Pcap,
    /// The uplink served by the socket gateway (rootless mode): flows leaving through it are
    /// re-originated with ordinary host sockets.
    Socket,
    /// An overlay network's VXLAN side, made by the pipeline (not in a file): frames sent to it
    /// are encapsulated to the other hosts' VTEPs, frames decapsulated from them come in on it.
    Overlay,
    /// A macvlan network's side of the uplink, made by the pipeline (not in a file): frames sent
    /// to it leave through the uplink (tagged with the network's VLAN), the uplink's frames for
    /// the network come in on it.
    Parent,
}

/// One port.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name, used by `--in NAME=FILE` and in output file names.
    pub name: String,
    /// Backend kind.
    pub kind: PortKind,
    /// Name of the network this port belongs to; absent only for the uplink port.
    #[serde(default)]
    pub network: Option<String>,
    /// The container's MAC: with anti-spoofing, other source MACs are dropped.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// The container's IPv4 address: with anti-spoofing, other sources (but 0.0.0.0) and ARP
    /// for other addresses are dropped.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The container's IPv6 address: with anti-spoofing, IPv6 from anything but it, the
    /// link-local address of the port's MAC and `::` (duplicate address detection) is dropped.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
}

impl Config {
    /// Parses a topology from TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Ok(toml::from_str(text)?)
    }
}

/// A network as the pipeline sees it.
#[derive(Clone, Debug)]
pub struct Network {
    /// Name from the file.
    pub name: String,
    /// Ports of this network, in file order.
    pub ports: Vec<PortId>,
    /// Subnet, if any.
    pub subnet: Option<Ipv4Net>,
    /// Gateway address and MAC, if any.
    pub gateway: Option<(Ipv4Addr, MacAddr)>,
    /// No uplink.
    pub internal: bool,
    /// Inter-container communication allowed.
    pub icc: bool,
    /// Assigned addresses of its ports are enforced.
    pub anti_spoofing: bool,
    /// Its IPv6 prefix and gateway (dual-stack networks).
    pub v6: Option<NetworkV6>,
    /// Its VXLAN network identifier, for an overlay network.
    pub vni: Option<u32>,
    /// How a macvlan network reaches the LAN (`None`: a bridge network).
    pub macvlan: Option<Macvlan>,
}

/// The addresses a port was given; under anti-spoofing, the only ones it may send from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortAddress {
    /// Assigned MAC.
    pub mac: Option<MacAddr>,
    /// Assigned IPv4 address.
    pub ip: Option<Ipv4Addr>,
    /// Assigned IPv6 address.
    pub ip6: Option<Ipv6Addr>,
}

/// A port as the pipeline sees it.
#[derive(Clone, Debug)]
pub struct Port {
    /// Name from the file.
    pub name: String,
    /// Backend kind.
    pub kind: PortKind,
    /// Network it belongs to (`None` for the uplink).
    pub network: Option<NetworkId>,
    /// False once the port was removed at run time. Its slot waits for the next port added
    /// (see [`Topology::port_by_name`] and the pipeline's `add_port`), which starts clean.
    pub active: bool,
    /// How many ports this slot has held: 1 for its first, one more at each reuse. The same on
    /// every worker (they see the same adds), so a frame one worker read and handed to
    /// another can be told apart from the next port in its slot.
    pub generation: u32,
    /// Its assigned addresses.
    pub address: PortAddress,
    /// What its driver can send besides plain frames (set by the datapath when it attaches a
    /// port with a virtio-net header; none for pcap ports).
    pub offloads: packet::offload::Capabilities,
}

/// The uplink as the pipeline sees it.
#[derive(Clone, Copy, Debug)]
pub struct Uplink {
    /// Its port.
    pub port: PortId,
    /// vswitch's address on it.
    pub address: Ipv4Addr,
    /// vswitch's MAC on it.
    pub mac: MacAddr,
    /// On-link subnet.
    pub subnet: Option<Ipv4Net>,
    /// Off-link router.
    pub next_hop: Option<Ipv4Addr>,
    /// Static next-hop MAC.
    pub next_hop_mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u16,
    /// Its IPv6 side, if IPv6 is routed out.
    pub v6: Option<UplinkV6>,
}

/// A published port, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// IP protocol number (6 or 17).
    pub protocol: u8,
    /// Port on the uplink address.
    pub host_port: u16,
    /// Container address.
    pub container_ip: Ipv4Addr,
    /// Container port.
    pub container_port: u16,
}

/// A checked topology with dense ids.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Bridge settings.
    pub bridge: BridgeConfig,
    /// Networks by id.
    pub networks: Vec<Network>,
    /// Ports by id.
    pub ports: Vec<Port>,
    /// The uplink, if any.
    pub uplink: Option<Uplink>,
    /// NAT port range (first, last).
    pub nat_ports: (u16, u16),
    /// Endpoint-independent UDP mapping.
    pub udp_eim: bool,
    /// Conntrack table settings.
    pub conntrack: conntrack::Config,
    /// Published ports.
    pub published: Vec<Published>,
    /// IPv4 resolvers the embedded DNS forwards queries over IPv4 to (the first is used).
    pub dns_upstream: Vec<Ipv4Addr>,
    /// IPv6 resolvers for queries over IPv6.
    pub dns_upstream6: Vec<Ipv6Addr>,
    /// Resource limits.
    pub limits: LimitsConfig,
    /// Active ports by name: `port_by_name` is asked on every connect, on every worker. Kept in
    /// step with `ports` by `new`, `add_port` and `remove_port`, the only writers of either.
    pub(crate) port_names: HashMap<String, PortId>,
    /// Slots of removed ports. The lowest is reused first: every worker's pipeline sees the
    /// same adds and removes and so must pick the same id for the same port.
    pub(crate) free_ports: BTreeSet<u16>,
}

/// The IPv4 addresses of `all`, in order.
pub(crate) fn v4_only(all: &[IpAddr]) -> Vec<Ipv4Addr> {
    all.iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// The IPv6 addresses of `all`, in order.
pub(crate) fn v6_only(all: &[IpAddr]) -> Vec<Ipv6Addr> {
    all.iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
        .collect()
}

impl Topology {
    /// Checks a parsed config and assigns ids.
    pub fn new(config: &Config) -> Result<Topology, ConfigError> {
        if config.bridge.aging_secs == 0 {
            return Err(ConfigError::Zero("aging_secs"));
        }
        if config.bridge.max_macs_per_port == 0 {
            return Err(ConfigError::Zero("max_macs_per_port"));
        }
        if config.bridge.max_groups_per_port == 0 {
            return Err(ConfigError::Zero("max_groups_per_port"));
        }
        if config.bridge.mtu == 0 {
            return Err(ConfigError::Zero("mtu"));
        }
        if config.networks.len() > usize::from(u16::MAX) {
            return Err(ConfigError::TooMany("networks"));
        }
        if config.ports.len() > usize::from(u16::MAX) {
            return Err(ConfigError::TooMany("ports"));
        }
        let mut seen = HashSet::new();
        let mut networks = Vec::with_capacity(config.networks.len());
        for n in &config.networks {
            if !seen.insert(n.name.as_str()) {
                return Err(ConfigError::DuplicateNetwork(n.name.clone()));
            }
            let gateway = match (n.gateway, n.subnet) {
                (Some(gw), Some(subnet)) if !subnet.contains(&gw) => {
                    return Err(ConfigError::GatewayOutsideSubnet {
                        network: n.name.clone(),
                        gateway: gw,
                        subnet,
                    });
                }
                (Some(_), None) => return Err(ConfigError::GatewayWithoutSubnet(n.name.clone())),
                (Some(gw), Some(_)) => {
                    Some((gw, n.gateway_mac.unwrap_or_else(|| MacAddr::docker(gw))))
                }
                (None, _) => None,
            };
            let macvlan = macvlan::of_config(n)?;
            // A macvlan network's subnet and gateway are the LAN's, for IPAM: vswitch neither
            // answers for the router nor routes to the subnet.
            let (subnet, gateway) = match macvlan {
                Some(_) => (None, None),
                None => (n.subnet, gateway),
            };
            if n.ipv6_autoconf && n.anti_spoofing {
                return Err(ConfigError::AutoconfWithAntiSpoofing(n.name.clone()));
            }
            let v6 = match (n.subnet6, gateway) {
                (None, _) => None,
                (Some(_), None) => return Err(ConfigError::Ipv6WithoutIpv4(n.name.clone())),
                (Some(subnet6), Some((_, gw_mac))) => Some(NetworkV6::new(
                    &n.name,
                    subnet6,
                    n.gateway6,
                    gw_mac,
                    n.ipv6_autoconf,
                )?),
            };
            networks.push(Network {
                name: n.name.clone(),
                ports: Vec::new(),
                subnet,
                gateway,
                internal: n.internal,
                icc: n.icc,
                anti_spoofing: n.anti_spoofing,
                v6,
                vni: n.vni,
                macvlan,
            });
        }
        for (i, a) in networks.iter().enumerate() {
            for b in &networks[i + 1..] {
                if let (Some(x), Some(y)) = (a.subnet, b.subnet)
                    && (x.contains(&y.network()) || y.contains(&x.network()))
                {
                    return Err(ConfigError::OverlappingSubnets(
                        a.name.clone(),
                        b.name.clone(),
                    ));
                }
            }
        }
        let uplink_name = config.uplink.as_ref().map(|u| u.port.as_str());
        let mut seen = HashSet::new();
        let mut ports = Vec::with_capacity(config.ports.len());
        for (i, p) in config.ports.iter().enumerate() {
            if !seen.insert(p.name.as_str()) {
                return Err(ConfigError::DuplicatePort(p.name.clone()));
            }
            // The cast is in range: lengths were checked against u16::MAX above.
            let port_id = PortId(i as u16);
            let is_uplink = uplink_name == Some(p.name.as_str());
            let network = match (&p.network, is_uplink) {
                (Some(_), true) => return Err(ConfigError::UplinkInNetwork(p.name.clone())),
                (None, false) => return Err(ConfigError::PortWithoutNetwork(p.name.clone())),
                (None, true) => None,
                (Some(name), false) => {
                    let net = networks
                        .iter()
                        .position(|n| &n.name == name)
                        .ok_or_else(|| ConfigError::UnknownNetwork {
                            port: p.name.clone(),
                            network: name.clone(),
                        })?;
                    networks[net].ports.push(port_id);
                    Some(NetworkId(net as u16))
                }
            };
            ports.push(Port {
                name: p.name.clone(),
                kind: p.kind,
                active: true,
                generation: 1,
                network,
                address: PortAddress {
                    mac: p.mac,
                    ip: p.ip,
                    ip6: p.ip6,
                },
                offloads: packet::offload::Capabilities::NONE,
            });
        }
        let uplink = match &config.uplink {
            None => None,
            Some(u) => {
                let port = ports
                    .iter()
                    .position(|p| p.name == u.port)
                    .ok_or_else(|| ConfigError::UnknownUplinkPort(u.port.clone()))?;
                let mac = u.mac.unwrap_or_else(|| MacAddr::docker(u.address));
                Some(Uplink {
                    port: PortId(port as u16),
                    address: u.address,
                    mac,
                    subnet: u.subnet,
                    next_hop: u.next_hop,
                    next_hop_mac: u.next_hop_mac,
                    mtu: u.mtu,
                    v6: u.ipv6.as_ref().map(|c| UplinkV6::new(c, mac)).transpose()?,
                })
            }
        };
        let (first, last) = (config.nat.port_first, config.nat.port_last);
        if first == 0 || first > last {
            return Err(ConfigError::BadPortRange(first, last));
        }
        let mut published = Vec::with_capacity(config.published.len());
        for p in &config.published {
            if uplink.is_none() {
                return Err(ConfigError::PublishWithoutUplink);
            }
            let inside = networks
                .iter()
                .any(|n| n.subnet.is_some_and(|s| s.contains(&p.container_ip)));
            if !inside {
                return Err(ConfigError::PublishOutsideNetworks {
                    proto: p.proto,
                    host_port: p.host_port,
                    ip: p.container_ip,
                });
            }
            let protocol = p.proto.number();
            if published
                .iter()
                .any(|q: &Published| q.protocol == protocol && q.host_port == p.host_port)
            {
                return Err(ConfigError::DuplicatePublish(p.proto, p.host_port));
            }
            published.push(Published {
                protocol,
                host_port: p.host_port,
                container_ip: p.container_ip,
                container_port: p.container_port,
            });
        }
        let port_names = ports
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), PortId(i as u16)))
            .collect();
        Ok(Topology {
            bridge: config.bridge.clone(),
            networks,
            ports,
            port_names,
            free_ports: BTreeSet::new(),
            uplink,
            nat_ports: (first, last),
            udp_eim: config.nat.udp_endpoint_independent,
            conntrack: conntrack::Config {
                max_nat_per_destination: config.nat.max_ports_per_destination,
                ..config.conntrack.to_table_config()
            },
            published,
            dns_upstream: v4_only(&config.dns.upstream),
            dns_upstream6: v6_only(&config.dns.upstream),
            limits: config.limits.clone(),
        })
    }

    /// The network whose subnet holds `ip`.
    pub fn network_of_ip(&self, ip: Ipv4Addr) -> Option<NetworkId> {
        self.networks
            .iter()
            .position(|n| n.subnet.is_some_and(|s| s.contains(&ip)))
            .map(|i| NetworkId(i as u16))
    }

    /// The dual-stack network whose IPv6 prefix holds `ip`.
    pub fn network_of_ip6(&self, ip: Ipv6Addr) -> Option<NetworkId> {
        self.networks
            .iter()
            .position(|n| n.v6.is_some_and(|v| v.subnet.contains(&ip)))
            .map(|i| NetworkId(i as u16))
    }

    /// Looks a network up by name.
    pub fn network_by_name(&self, name: &str) -> Option<NetworkId> {
        self.networks
            .iter()
            .position(|n| n.name == name)
            .map(|i| NetworkId(i as u16))
    }

    /// Looks an active port up by name. A removed port's name is free at once: its slot is
    /// reused by the next port added, whatever that port is called, so nothing could resolve
    /// the old name anyway (and the daemon's `reattach` re-adds ports by their old names).
    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        self.port_names.get(name).copied()
    }

    /// The active ports with their ids, in id order.
    pub fn active_ports(&self) -> impl Iterator<Item = (PortId, &Port)> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.active)
            .map(|(i, p)| (PortId(i as u16), p))
    }

    /// The port with this id.
    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(usize::from(id.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [bridge]
        aging_secs = 30

        [[network]]
        name = "bridge"
        subnet = "172.17.0.0/16"
        gateway = "172.17.0.1"

        [[network]]
        name = "backend"
        icc = false

        [[port]]
        name = "c1"
        kind = "pcap"
        network = "bridge"

        [[port]]
        name = "c2"
        kind = "tap"
        network = "backend"
    "#;

    #[test]
    fn parses_and_assigns_ids() {
        let t = Topology::new(&Config::from_toml(GOOD).unwrap()).unwrap();
        assert_eq!(t.bridge.aging_secs, 30);
        assert_eq!(t.bridge.max_macs_per_port, 1024);
        assert_eq!(t.networks[0].ports, vec![PortId(0)]);
        assert_eq!(t.ports[1].network, Some(NetworkId(1)));
        assert_eq!(t.networks[1].ports, vec![PortId(1)]);
        assert!(!t.networks[1].icc && t.networks[0].icc);
        let (gw, mac) = t.networks[0].gateway.unwrap();
        assert_eq!(gw, Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(mac.to_string(), "02:42:ac:11:00:01");
        assert_eq!(t.port_by_name("c2"), Some(PortId(1)));
    }

    #[test]
    fn rejects_bad_files_with_a_named_cause() {
        let cases = [
            (
                "[[port]]\nname='a'\nkind='tap'\nnetwork='nope'",
                "unknown network \"nope\"",
            ),
            (
                "[[network]]\nname='n'\n[[network]]\nname='n'",
                "defined twice",
            ),
            (
                "[[network]]\nname='n'\nsubnet='10.0.0.0/24'\ngateway='10.0.1.1'",
                "outside subnet",
            ),
            ("[[network]]\nname='n'\ngateway='10.0.1.1'", "no subnet"),
            (
                "[[network]]\nname='n'\nsubnet6='fd00::/64'",
                "IPv6 networks are dual-stack",
            ),
            (
                "[[network]]\nname='n'\nsubnet='10.0.0.0/24'\ngateway='10.0.0.1'\nsubnet6='fd00::/64'\nipv6_autoconf=true",
                "ipv6_autoconf needs anti_spoofing = false",
            ),
            (
                "[[network]]\nname='n'\nsubnet='10.0.0.0/24'\ngateway='10.0.0.1'\nsubnet6='fd00::/64'\ngateway6='fd01::1'",
                "must be an address inside fd00::/64",
            ),
            (
                "[[port]]\nname='a'\nkind='floppy'\nnetwork='n'",
                "unknown variant",
            ),
            ("[[network]]\nname='n'\nsubnet='10.0.0.300/24'", "invalid"),
            ("[bridge]\naging_secs=0", "greater than zero"),
            ("[bogus]", "unknown field"),
            ("[[port]]\nname='a'\nkind='tap'", "has no network"),
            (
                "[[network]]\nname='a'\nsubnet='10.0.0.0/16'\n[[network]]\nname='b'\nsubnet='10.0.1.0/24'",
                "overlapping",
            ),
            ("[nat]\nport_first=0", "includes port 0"),
            (
                "[uplink]\nport='u'\naddress='192.0.2.1'",
                "is not a [[port]]",
            ),
            (
                "[[publish]]\nproto='icmp'\nhost_port=1\ncontainer_ip='10.0.0.2'\ncontainer_port=1",
                "unknown variant `icmp`, expected `tcp` or `udp`",
            ),
        ];
        for (text, want) in cases {
            let err = Config::from_toml(text)
                .map_err(|e| e.to_string())
                .and_then(|c| Topology::new(&c).map(|_| ()).map_err(|e| e.to_string()));
            let msg = err.expect_err(text);
            assert!(msg.contains(want), "{text:?}: {msg}");
        }
    }

    #[test]
    fn publish_proto_is_tcp_or_udp_text() {
        let text = "[[publish]]\nhost_port=53\ncontainer_ip='10.0.0.2'\ncontainer_port=53\n\
                    [[publish]]\nproto='udp'\nhost_port=53\ncontainer_ip='10.0.0.2'\ncontainer_port=53";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.published[0].proto, PortProto::Tcp);
        assert_eq!(c.published[1].proto, PortProto::Udp);
        let back = toml::to_string(&c.published[1]).unwrap();
        assert!(back.contains("proto = \"udp\""), "{back}");
    }
}
