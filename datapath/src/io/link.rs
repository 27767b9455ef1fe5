//! Link plumbing over rtnetlink and ethtool ioctls: veth pairs into container namespaces,
//! addresses, default routes, link up/MTU, link deletion, and offload switches.
//!
//! Netlink is spoken synchronously (`netlink-sys` socket, `netlink-packet-route` messages): one
//! request, one ACK, on the calling thread. It is control plane only; nothing here is on the
//! packet path. A netlink or ioctl socket talks to the namespace of the thread that *created*
//! it, so every function acts on the caller's current namespace, and namespace work goes through
//! [`in_netns`].
//!
//! # Offloads: the kernel's defaults, carried with PACKET_VNET_HDR
//! A veth hands AF_PACKET sockets frames with partial checksums (CHECKSUM_PARTIAL: the L4
//! checksum field holds only the pseudo-header sum) and, with TSO/GSO, TCP super-frames up to
//! 64 KB. The switch's ports read and write them with their virtio-net header
//! ([`crate::io::afpacket`], `vnet_hdr`), and the pipeline finishes or segments them only where
//! an egress cannot take them. So [`create_container_veth`] leaves both ends' offloads as the
//! kernel sets them: a container keeps TSO, checksum offload and GSO as with Docker's bridge.
//! What a virtio-net header cannot describe (tunnel GSO types from a container's own overlay,
//! SCTP) the kernel drops before the ring, counted in the port's `rx_kernel_drops`.
//! [`set_offloads`] remains for links that must not carry them (benchmark peers, tests).
//!
//! The ethtool calls use the legacy per-feature commands (ETHTOOL_STXCSUM, _SSG, _STSO, _SGSO,
//! _SGRO): the kernel maps them onto its feature bits and they need no string-set lookup, unlike
//! ETHTOOL_SFEATURES. Known gap: Linux 6.18 added `tx-tcp-accecn-segmentation`, which no legacy
//! command covers, so it stays on (it only applies to AccECN TCP connections, off by default);
//! switching to ETHTOOL_SFEATURES by feature name would close it.

use super::{IoError, check_ifname, ifindex, in_netns};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_ERROR, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope},
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// What [`create_container_veth`] builds: the veth Docker creates on `docker run`.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    /// The end that stays in the caller's namespace and that the switch opens.
    pub host_ifname: &'a str,
    /// The other end's name while it is created (inside `netns`), before the rename.
    pub peer_ifname: &'a str,
    /// The container's network namespace file, e.g. /var/run/netns/NAME or /proc/PID/ns/net.
    pub netns: &'a Path,
    /// The container end's final name, e.g. "eth0".
    pub container_ifname: &'a str,
    /// The container end's MAC; the kernel picks a random one if `None`.
    pub mac: Option<[u8; 6]>,
    /// MTU of both ends.
    pub mtu: u16,
    /// The container's IPv4 address and prefix length.
    pub addr: Option<(Ipv4Addr, u8)>,
    /// The container's default gateway (the switch's gateway address).
    pub gateway: Option<Ipv4Addr>,
    /// The container's IPv6 address and prefix length (dual-stack networks).
    pub addr6: Option<(Ipv6Addr, u8)>,
    /// The container's IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
}

/// Creates a veth pair `host_ifname` <-> `peer_ifname` with the peer created directly inside the
/// namespace at `netns` (so it never appears, even briefly, in the caller's namespace, and a
/// container name like "eth0" cannot clash with the host's), renames the peer to
/// `container_ifname` there, sets its MAC (if given), MTU, IPv4 address, brings it and `lo` up,
/// and adds a default route via `gateway`. Brings the host end up with the MTU. Offloads stay
/// as the kernel sets them (see the module docs).
///
/// On failure after the pair exists, the pair is deleted again (best effort), so a retry starts
/// clean.
///
/// # Errors
/// Bad names, a missing namespace, or the kernel refusing a step (EEXIST when `host_ifname`
/// exists; EPERM without CAP_NET_ADMIN).
pub fn create_container_veth(spec: &VethSpec) -> Result<(), IoError> {
    check_ifname(spec.host_ifname)?;
    check_ifname(spec.peer_ifname)?;
    check_ifname(spec.container_ifname)?;
    if let Some((_, prefix)) = spec.addr
        && prefix > 32
    {
        return Err(IoError::netlink(
            format!("adding address with prefix /{prefix}"),
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    let ns = File::open(spec.netns).map_err(|source| IoError::Netns {
        path: spec.netns.to_owned(),
        source,
    })?;

    let mut peer = LinkMessage::default();
    peer.attributes = vec![
        LinkAttribute::IfName(spec.peer_ifname.to_owned()),
        LinkAttribute::Mtu(spec.mtu.into()),
        // The kernel dups nothing: the fd must stay open until the ACK, which `ns` guarantees.
        LinkAttribute::NetNsFd(ns.as_raw_fd()),
    ];
    let mut host = LinkMessage::default();
    host.attributes = vec![
        LinkAttribute::IfName(spec.host_ifname.to_owned()),
        LinkAttribute::Mtu(spec.mtu.into()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]),
    ];
    Rtnl::new()?.request(
        RouteNetlinkMessage::NewLink(host),
        NLM_F_CREATE | NLM_F_EXCL,
        || {
            format!(
                "creating veth {} <-> {} (peer in {})",
                spec.host_ifname,
                spec.peer_ifname,
                spec.netns.display()
            )
        },
    )?;
    drop(ns);

    let configure = || -> Result<(), IoError> {
        in_netns(spec.netns, || configure_container_end(spec))??;
        disable_ipv6(spec.host_ifname)?;
        set_link_up(spec.host_ifname, Some(spec.mtu))
    };
    configure().inspect_err(|_| {
        // Deleting the host end deletes the pair; the first error is the one worth reporting.
        let _ = delete_link(spec.host_ifname);
    })
}

/// Configures link `ifname` of the current namespace as a container's interface (MAC, MTU, up,
/// address, default route, `lo` up), as [`create_container_veth`] does for its container end:
/// `v4` is the IPv4 address and gateway, `v6` the IPv6 address and gateway of a dual-stack
/// network. `offloads_off` turns its offloads off too (veth; a TAP without a vnet header has
/// none).
pub fn configure_link_here(
    ifname: &str,
    mac: Option<[u8; 6]>,
    mtu: u16,
    (addr, gateway): (Option<(Ipv4Addr, u8)>, Option<Ipv4Addr>),
    v6: Option<((Ipv6Addr, u8), Option<Ipv6Addr>)>,
    offloads_off: bool,
) -> Result<(), IoError> {
    let spec = VethSpec {
        host_ifname: "",
        peer_ifname: ifname,
        netns: Path::new(""),
        container_ifname: ifname,
        mac,
        mtu,
        addr,
        gateway,
        addr6: v6.map(|(a, _)| a),
        gateway6: v6.and_then(|(_, g)| g),
    };
    configure_end(&spec, offloads_off)
}

/// The container half of [`create_container_veth`]; runs inside the container's namespace.
fn configure_container_end(spec: &VethSpec) -> Result<(), IoError> {
    configure_end(spec, false)
}

fn configure_end(spec: &VethSpec, offloads_off: bool) -> Result<(), IoError> {
    let mut rtnl = Rtnl::new()?;
    let index = ifindex(spec.peer_ifname)?;
    let name = spec.container_ifname;

    // Rename and MAC while the link is still down (a rename of an UP link is EBUSY).
    let mut msg = link_msg(index);
    if spec.container_ifname != spec.peer_ifname {
        msg.attributes
            .push(LinkAttribute::IfName(spec.container_ifname.to_owned()));
    }
    if let Some(mac) = spec.mac {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if !msg.attributes.is_empty() {
        rtnl.request(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("renaming {} to {name} / setting its MAC", spec.peer_ifname)
        })?;
    }
    if offloads_off {
        set_offloads(name, false)?;
    }
    rtnl.set_up(index, Some(spec.mtu), name)?;
    let lo = ifindex("lo")?;
    rtnl.set_up(lo, None, "lo")?;

    if let Some((addr, prefix)) = spec.addr {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.attributes = vec![
            AddressAttribute::Local(addr.into()),
            AddressAttribute::Address(addr.into()),
        ];
        if prefix < 31 {
            let host_mask = u32::MAX >> prefix;
            let brd = Ipv4Addr::from(u32::from(addr) | host_mask);
            msg.attributes.push(AddressAttribute::Broadcast(brd));
        }
        rtnl.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("adding address {addr}/{prefix} to {name}"),
        )?;
    }
    if let Some((addr, prefix)) = spec.addr6 {
        // A namespace may start with IPv6 off; a dual-stack network's interface needs it.
        set_ipv6(name, true)?;
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        // No duplicate address detection (as Docker): IPAM made the address unique, and DAD
        // would hold it "tentative" for a second after the container starts.
        msg.attributes = vec![
            AddressAttribute::Address(addr.into()),
            AddressAttribute::Flags(AddressFlags::Nodad),
        ];
        rtnl.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("adding address {addr}/{prefix} to {name}"),
        )?;
    }
    let routes = spec
        .gateway
        .map(IpAddr::V4)
        .into_iter()
        .chain(spec.gateway6.map(IpAddr::V6));
    for gw in routes {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match gw {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = 0;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::from(gw)),
            RouteAttribute::Oif(index),
        ];
        rtnl.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || {
                format!(
                    "adding default route via {gw} dev {name} (is the gateway inside the \
                     address's subnet?)"
                )
            },
        )?;
    }
    Ok(())
}

/// Sends one rtnetlink request on a fresh socket and waits for its ACK (for the other link
/// modules of `io`).
pub(super) fn rtnl_request(
    msg: RouteNetlinkMessage,
    flags: u16,
    what: impl Fn() -> String,
) -> Result<(), IoError> {
    Rtnl::new()?.request(msg, flags, what)
}

/// Deletes `ifname` in the caller's namespace; deleting one veth end deletes the pair. `Ok` if
/// there is no such link.
pub fn delete_link(ifname: &str) -> Result<(), IoError> {
    let index = match ifindex(ifname) {
        Ok(i) => i,
        Err(IoError::NoSuchInterface { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    match Rtnl::new()?.request(RouteNetlinkMessage::DelLink(link_msg(index)), 0, || {
        format!("deleting link {ifname}")
    }) {
        // Gone between the lookup and the request (e.g. its peer was deleted): that is fine.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        r => r,
    }
}

/// Whether a link named `ifname` exists in the caller's namespace.
pub fn link_exists(ifname: &str) -> bool {
    ifindex(ifname).is_ok()
}

/// Brings `ifname` (in the caller's namespace) up, setting its MTU first if given.
pub fn set_link_up(ifname: &str, mtu: Option<u16>) -> Result<(), IoError> {
    let index = ifindex(ifname)?;
    Rtnl::new()?.set_up(index, mtu, ifname)
}

/// Turns IPv6 off on `ifname` (caller's namespace) before it goes up: a switch port's host end
/// is not an L3 interface. Left on, the kernel gave every host end a link-local address, an
/// fe80::/64 and an ff00::/8 route (one more entry in one fib6 node per port, walked on each
/// add: attach time grew with the ports), sent router solicitations and MLD reports into the
/// container, and answered its IPv6 multicast itself. A kernel without IPv6 has nothing to turn
/// off. (There is no netlink attribute for it: IFLA_INET6_CONF is read-only.)
pub fn disable_ipv6(ifname: &str) -> Result<(), IoError> {
    set_ipv6(ifname, false)
}

/// Turns IPv6 on or off on `ifname` of the caller's namespace (see [`disable_ipv6`]); a kernel
/// without IPv6 has nothing to turn.
fn set_ipv6(ifname: &str, on: bool) -> Result<(), IoError> {
    check_ifname(ifname)?;
    // /proc/sys/net follows the writing thread's namespace (unlike /sys), so this works
    // inside [`in_netns`].
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, if on { "0" } else { "1" }) {
        Ok(()) => Ok(()),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && !Path::new("/proc/sys/net/ipv6").exists() =>
        {
            Ok(())
        }
        Err(source) => Err(IoError::Sys {
            what: format!(
                "turning IPv6 {} on {ifname} ({path})",
                if on { "on" } else { "off" }
            ),
            source,
        }),
    }
}

/// Enslaves `ifname` to the bridge (or bond) `master`, both in the caller's namespace: what
/// `ip link set IFNAME master MASTER` does. The benchmarks use it to build a Linux bridge peer
/// with the same netlink calls vswitch's own attach makes.
pub fn set_master(ifname: &str, master: &str) -> Result<(), IoError> {
    let index = ifindex(ifname)?;
    let master_index = ifindex(master)?;
    let mut msg = link_msg(index);
    msg.attributes.push(LinkAttribute::Controller(master_index));
    Rtnl::new()?.request(RouteNetlinkMessage::SetLink(msg), 0, || {
        format!("adding {ifname} to {master}")
    })
}

/// The offload switches [`set_offloads`] flips, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offloads {
    /// tx-checksumming: the stack may hand the device partial checksums.
    pub tx_csum: bool,
    /// scatter-gather.
    pub sg: bool,
    /// TCP segmentation offload.
    pub tso: bool,
    /// generic segmentation offload.
    pub gso: bool,
    /// generic receive offload.
    pub gro: bool,
}

impl Offloads {
    /// True when every switch is off.
    pub fn all_off(&self) -> bool {
        !(self.tx_csum || self.sg || self.tso || self.gso || self.gro)
    }
}

// Legacy ethtool commands (linux/ethtool.h), each with a `struct ethtool_value`.
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GSG: u32 = 0x18;
const ETHTOOL_SSG: u32 = 0x19;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_GGSO: u32 = 0x23;
const ETHTOOL_SGSO: u32 = 0x24;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

/// `struct ethtool_value` from linux/ethtool.h (libc does not have it).
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns checksum offload, scatter-gather, TSO, GSO and GRO of `ifname` (caller's namespace) on
/// or off. Off goes dependants first (GRO, GSO, TSO, SG, then tx checksum), on the reverse.
/// Turning on a feature the device lacks is skipped, not an error.
pub fn set_offloads(ifname: &str, on: bool) -> Result<(), IoError> {
    let sock = ioctl_socket()?;
    let mut steps = [
        (ETHTOOL_SGRO, "gro"),
        (ETHTOOL_SGSO, "gso"),
        (ETHTOOL_STSO, "tso"),
        (ETHTOOL_SSG, "sg"),
        (ETHTOOL_STXCSUM, "tx-checksumming"),
    ];
    if on {
        steps.reverse();
    }
    for (cmd, feature) in steps {
        match ethtool(&sock, ifname, cmd, u32::from(on)) {
            Err(e) if on && e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => {
                return Err(IoError::sys(
                    format!(
                        "turning {feature} {} on {ifname} (ethtool ioctl)",
                        if on { "on" } else { "off" }
                    ),
                    e,
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Reads the offload switches of `ifname` in the caller's namespace.
pub fn get_offloads(ifname: &str) -> Result<Offloads, IoError> {
    let sock = ioctl_socket()?;
    let get = |cmd| {
        ethtool(&sock, ifname, cmd, 0)
            .map(|v| v != 0)
            .map_err(|e| IoError::sys(format!("reading offloads of {ifname} (ethtool ioctl)"), e))
    };
    Ok(Offloads {
        tx_csum: get(ETHTOOL_GTXCSUM)?,
        sg: get(ETHTOOL_GSG)?,
        tso: get(ETHTOOL_GTSO)?,
        gso: get(ETHTOOL_GGSO)?,
        gro: get(ETHTOOL_GGRO)?,
    })
}

/// One SIOCETHTOOL call with an `ethtool_value`; returns the value the kernel left in it.
fn ethtool(sock: &OwnedFd, ifname: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    let name = super::ifname_cstr(ifname).map_err(std::io::Error::other)?;
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: ifreq is plain old data (names, integers, a union of those and a pointer); all
    // zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name = name;
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: SIOCETHTOOL reads `ifr` and the ethtool_value it points to, both alive and
    // writable for the call; the legacy commands used here read/write exactly that struct.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &raw mut ifr) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data)
}

/// A datagram socket for interface ioctls, in the calling thread's namespace.
pub(crate) fn ioctl_socket() -> Result<OwnedFd, IoError> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(IoError::sys(
            "creating an ioctl socket",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A `LinkMessage` addressing the link by index, with no attributes yet.
fn link_msg(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

/// A NETLINK_ROUTE socket in the namespace of the thread that created it; one request at a time.
struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    fn new() -> Result<Rtnl, IoError> {
        let err = |e| IoError::netlink("opening a NETLINK_ROUTE socket", e);
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(err)?;
        sock.bind_auto().map_err(err)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        Ok(Rtnl {
            sock,
            seq: 0,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    fn set_up(&mut self, index: u32, mtu: Option<u16>, name: &str) -> Result<(), IoError> {
        let mut msg = link_msg(index);
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu.into()));
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0, || match mtu {
            Some(mtu) => format!("bringing {name} up with MTU {mtu}"),
            None => format!("bringing {name} up"),
        })
    }

    /// Sends one request with NLM_F_REQUEST | NLM_F_ACK | `flags` and waits for its ACK.
    /// `what` describes the request for the error message (built only on failure).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl Fn() -> String,
    ) -> Result<(), IoError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock
            .send(&out, 0)
            .map_err(|e| IoError::netlink(what(), e))?;

        loop {
            self.buf.clear();
            let n = self
                .sock
                .recv(&mut self.buf, 0)
                .map_err(|e| IoError::netlink(what(), e))?;
            let mut rest = &self.buf[..n.min(self.buf.len())];
            // A datagram may hold several messages; walk them by their nlmsg_len.
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < 16 || len > rest.len() {
                    break;
                }
                if kind == NLMSG_ERROR && seq == self.seq {
                    let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
                        .map_err(|e| IoError::netlink(what(), std::io::Error::other(e)))?;
                    return match parsed.payload {
                        NetlinkPayload::Error(e) if e.code.is_some() => {
                            Err(IoError::netlink(what(), e.to_io()))
                        }
                        _ => Ok(()),
                    };
                }
                // Netlink messages are 4-byte aligned.
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::testutil::{LinkGuard, Netns, ip, skip_unless_root, unique};

    #[test]
    fn container_veth_end_to_end() {
        if skip_unless_root("container_veth_end_to_end") {
            return;
        }
        let ns = Netns::new("cv");
        let host = unique("h");
        let peer = unique("p");
        let _guard = LinkGuard(host.clone());
        let mac = [0x02, 0x42, 0xc0, 0x00, 0x02, 0x0a];
        let spec = VethSpec {
            host_ifname: &host,
            peer_ifname: &peer,
            netns: ns.path(),
            container_ifname: "eth0",
            mac: Some(mac),
            mtu: 1450,
            addr: Some(("192.0.2.10".parse().unwrap(), 24)),
            gateway: Some("192.0.2.1".parse().unwrap()),
            addr6: None,
            gateway6: None,
        };
        create_container_veth(&spec).unwrap();

        // Host end: up, MTU, the kernel's offloads (veth: checksum, SG, TSO, GSO on).
        assert!(link_exists(&host));
        let show = ip(&["link", "show", &host]);
        assert!(show.contains(",UP") && show.contains("mtu 1450"), "{show}");
        let on = get_offloads(&host).unwrap();
        assert!(
            on.tx_csum && on.sg && on.tso && on.gso,
            "host end offloads: {on:?}"
        );
        // Host end: no IPv6 (a switch port, not an L3 interface): no link-local address.
        if Path::new("/proc/sys/net/ipv6").exists() {
            let off =
                std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"));
            assert_eq!(off.unwrap().trim(), "1");
            let show = ip(&["-6", "addr", "show", "dev", &host]);
            assert!(!show.contains("fe80"), "{show}");
        }

        // Container end, inspected with `ip` from outside.
        let show = ip(&["-n", ns.name(), "addr", "show", "dev", "eth0"]);
        assert!(show.contains(",UP"), "{show}");
        assert!(show.contains("mtu 1450"), "{show}");
        assert!(show.contains("02:42:c0:00:02:0a"), "{show}");
        assert!(
            show.contains("inet 192.0.2.10/24 brd 192.0.2.255"),
            "{show}"
        );
        let lo = ip(&["-n", ns.name(), "link", "show", "lo"]);
        assert!(lo.contains(",UP"), "{lo}");
        let routes = ip(&["-n", ns.name(), "route"]);
        assert!(
            routes.contains("default via 192.0.2.1 dev eth0"),
            "{routes}"
        );
        assert!(
            !link_exists(&peer),
            "the peer must never appear in the caller's netns"
        );
        // The container keeps the kernel's defaults, as under Docker's bridge.
        let on = in_netns(ns.path(), || get_offloads("eth0"))
            .unwrap()
            .unwrap();
        assert!(
            on.tx_csum && on.sg && on.tso && on.gso,
            "container end offloads: {on:?}"
        );
        // set_offloads still turns them off where asked (benchmark peers).
        in_netns(ns.path(), || set_offloads("eth0", false))
            .unwrap()
            .unwrap();
        let off = in_netns(ns.path(), || get_offloads("eth0"))
            .unwrap()
            .unwrap();
        assert!(off.all_off(), "after set_offloads(false): {off:?}");
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "exec", ns.name(), "ethtool", "-k", "eth0"])
            .output()
        {
            // Cross-check with ethtool where it is installed.
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout);
                for feature in [
                    "tx-checksumming: off",
                    "scatter-gather: off",
                    // Not the umbrella "tcp-segmentation-offload": Linux 6.18 added
                    // tx-tcp-accecn-segmentation, which the legacy ETHTOOL_STSO leaves on
                    // (it only matters for AccECN connections).
                    "tx-tcp-segmentation: off",
                    "tx-tcp6-segmentation: off",
                    "generic-segmentation-offload: off",
                    "generic-receive-offload: off",
                ] {
                    assert!(text.contains(feature), "{feature} in\n{text}");
                }
            }
        }

        // Creating it again is a clear EEXIST error and leaves the first pair alone.
        let err = create_container_veth(&spec).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(link_exists(&host));

        // Deleting the host end deletes both; deleting again is fine.
        delete_link(&host).unwrap();
        assert!(!link_exists(&host));
        let exists_inside = in_netns(ns.path(), || link_exists("eth0")).unwrap();
        assert!(!exists_inside, "deleting one end deletes the pair");
        delete_link(&host).unwrap();
    }

    #[test]
    fn failed_configuration_removes_the_pair() {
        if skip_unless_root("failed_configuration_removes_the_pair") {
            return;
        }
        let ns = Netns::new("cf");
        let host = unique("h");
        let peer = unique("p");
        let _guard = LinkGuard(host.clone());
        // The gateway is outside the address's subnet: the route step fails.
        let spec = VethSpec {
            host_ifname: &host,
            peer_ifname: &peer,
            netns: ns.path(),
            container_ifname: "eth0",
            mac: None,
            mtu: 1500,
            addr: Some(("192.0.2.10".parse().unwrap(), 24)),
            gateway: Some("198.51.100.1".parse().unwrap()),
            addr6: None,
            gateway6: None,
        };
        let err = create_container_veth(&spec).unwrap_err();
        assert!(err.to_string().contains("default route via"), "{err}");
        assert!(!link_exists(&host), "the pair must be cleaned up");
    }

    #[test]
    fn set_link_up_and_offloads_toggle() {
        if skip_unless_root("set_link_up_and_offloads_toggle") {
            return;
        }
        let a = unique("la");
        let b = unique("lb");
        let _guard = LinkGuard(a.clone());
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        set_link_up(&a, Some(1280)).unwrap();
        let show = ip(&["link", "show", &a]);
        assert!(show.contains(",UP") && show.contains("mtu 1280"), "{show}");
        set_offloads(&a, false).unwrap();
        assert!(get_offloads(&a).unwrap().all_off());
        set_offloads(&a, true).unwrap();
        let on = get_offloads(&a).unwrap();
        assert!(on.tx_csum && on.sg && on.tso && on.gso, "{on:?}");
        let err = set_link_up("vsnosuchlink0", None).unwrap_err();
        assert!(matches!(err, IoError::NoSuchInterface { .. }), "{err}");
        let err = set_link_up("waytoolonginterfacename", None).unwrap_err();
        assert!(matches!(err, IoError::BadIfName { .. }), "{err}");
    }

    #[test]
    fn set_master_adds_a_veth_to_a_bridge() {
        if skip_unless_root("set_master_adds_a_veth_to_a_bridge") {
            return;
        }
        let (br, a, b) = (unique("lbr"), unique("lma"), unique("lmb"));
        let _guards = (LinkGuard(a.clone()), LinkGuard(br.clone()));
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        set_master(&a, &br).unwrap();
        let show = ip(&["link", "show", &a]);
        assert!(show.contains(&format!("master {br}")), "{show}");
        let err = set_master(&a, "vsnosuchbr0").unwrap_err();
        assert!(matches!(err, IoError::NoSuchInterface { .. }), "{err}");
    }
}
