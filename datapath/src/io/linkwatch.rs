//! Links seen from the control plane's side: a watcher that hears of deleted links (a
//! container's namespace went away, so its veth pair went with it), a veth pair kept whole in
//! the caller's namespace (for a runtime that moves one end itself), and one link read back as
//! it is (for a runtime's "is it still as you made it?" check).
//!
//! The watcher is a NETLINK_ROUTE socket bound to the RTNLGRP_LINK multicast group: the kernel
//! sends RTM_DELLINK when a link is deleted *and* when it moves to another namespace, so the
//! caller must only act on names it knows to be links that never move (the switch's host
//! ends). When the socket's buffer overflows the kernel drops events and reports ENOBUFS: the
//! caller then checks every link it cares about ([`LinkEvents::Overrun`]).

use super::link::{delete_link, disable_ipv6, set_link_up};
use super::{IoError, check_ifname, in_netns};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::net::if_::InterfaceFlags;
use std::net::Ipv4Addr;
use std::path::Path;

/// RTMGRP_LINK: the link multicast group's bit (`1 << (RTNLGRP_LINK - 1)`).
const RTMGRP_LINK: u32 = 1;

/// What one wait on a [`LinkWatcher`] brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvents {
    /// These links were deleted (or moved to another namespace), in the order the kernel said.
    Removed(Vec<String>),
    /// The kernel dropped events: re-check every link of interest.
    Overrun,
}

/// Hears of links deleted in the namespace of the thread that opened it.
pub struct LinkWatcher {
    sock: Socket,
    buf: Vec<u8>,
}

impl LinkWatcher {
    /// Subscribes to link events of the caller's namespace.
    ///
    /// # Errors
    /// When the socket cannot be opened or bound.
    pub fn open() -> Result<LinkWatcher, IoError> {
        let err = |e| IoError::netlink("opening a NETLINK_ROUTE socket for link events", e);
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(err)?;
        sock.bind(&SocketAddr::new(0, RTMGRP_LINK)).map_err(err)?;
        Ok(LinkWatcher {
            sock,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Blocks until the kernel sends link events; the links they remove (often none: links
    /// also come and change).
    ///
    /// # Errors
    /// When receiving fails for another reason than an overrun.
    pub fn wait(&mut self) -> Result<LinkEvents, IoError> {
        self.buf.clear();
        let n = match self.sock.recv(&mut self.buf, 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(LinkEvents::Overrun),
            Err(e) => return Err(IoError::netlink("receiving link events", e)),
        };
        Ok(LinkEvents::Removed(removed_links(
            &self.buf[..n.min(self.buf.len())],
        )))
    }
}

/// The names of the links an RTM_DELLINK in `datagram` names; other messages and bytes that do
/// not parse are skipped.
fn removed_links(datagram: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
            && let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) = msg.payload
        {
            out.extend(link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name),
                _ => None,
            }));
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

/// Creates a veth pair `host_ifname` <-> `peer_ifname` with both ends in the caller's namespace:
/// the host end up with `mtu` and IPv6 off (a switch port), the peer down with `mtu` and `mac`,
/// no address, for a runtime (Docker's libnetwork) to move into its container and configure.
/// On failure after the pair exists, it is deleted again.
///
/// # Errors
/// Bad names, or the kernel refusing a step (EEXIST when a name is taken).
pub fn create_veth_pair_here(
    host_ifname: &str,
    peer_ifname: &str,
    mac: [u8; 6],
    mtu: u16,
) -> Result<(), IoError> {
    check_ifname(host_ifname)?;
    check_ifname(peer_ifname)?;
    let mut peer = LinkMessage::default();
    peer.attributes = vec![
        LinkAttribute::IfName(peer_ifname.to_owned()),
        LinkAttribute::Mtu(mtu.into()),
        LinkAttribute::Address(mac.to_vec()),
    ];
    let mut host = LinkMessage::default();
    host.attributes = vec![
        LinkAttribute::IfName(host_ifname.to_owned()),
        LinkAttribute::Mtu(mtu.into()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]),
    ];
    super::link::rtnl_request(
        RouteNetlinkMessage::NewLink(host),
        NLM_F_CREATE | NLM_F_EXCL,
        || format!("creating veth {host_ifname} <-> {peer_ifname}"),
    )?;
    let finish = || -> Result<(), IoError> {
        disable_ipv6(host_ifname)?;
        set_link_up(host_ifname, Some(mtu))
    };
    finish().inspect_err(|_| {
        let _ = delete_link(host_ifname);
    })
}

/// A link as the kernel has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Administratively up.
    pub up: bool,
    /// Its MAC, when it has one.
    pub mac: Option<[u8; 6]>,
    /// Its IPv4 addresses with their prefix lengths.
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

/// Reads link `ifname` of the namespace at `netns` (`getifaddrs` inside it). `Ok(None)` when
/// the namespace has no such link.
///
/// # Errors
/// When the namespace cannot be entered or the kernel cannot be asked.
pub fn link_state_in(netns: &Path, ifname: &str) -> Result<Option<LinkState>, IoError> {
    check_ifname(ifname)?;
    in_netns(netns, || link_state_here(ifname))?
}

fn link_state_here(ifname: &str) -> Result<Option<LinkState>, IoError> {
    let all = nix::ifaddrs::getifaddrs()
        .map_err(|e| IoError::sys(format!("listing the addresses of {ifname}"), e))?;
    let mut state: Option<LinkState> = None;
    for ifa in all.filter(|a| a.interface_name == ifname) {
        let s = state.get_or_insert(LinkState {
            up: false,
            mac: None,
            addrs: Vec::new(),
        });
        s.up |= ifa.flags.contains(InterfaceFlags::IFF_UP);
        let Some(addr) = ifa.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            s.mac = s.mac.or(link.addr());
        } else if let Some(inet) = addr.as_sockaddr_in() {
            let prefix = ifa
                .netmask
                .and_then(|m| m.as_sockaddr_in().map(|m| m.ip().to_bits().count_ones()))
                .unwrap_or(32);
            s.addrs
                .push((inet.ip(), u8::try_from(prefix).unwrap_or(32)));
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::testutil::{Netns, skip_unless_root};
    use netlink_packet_core::NetlinkHeader;

    fn dellink(name: &str) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.attributes = vec![LinkAttribute::IfName(name.to_owned())];
        let mut nl = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::DelLink(link)),
        );
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        out
    }

    #[test]
    fn removed_links_reads_dellinks_and_skips_the_rest() {
        let mut d = dellink("vsw3");
        let mut newlink = LinkMessage::default();
        newlink.attributes = vec![LinkAttribute::IfName("vsw4".into())];
        let mut nl = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewLink(newlink)),
        );
        nl.finalize();
        let mut other = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut other);
        d.extend(other);
        d.extend(dellink("vsw5"));
        assert_eq!(removed_links(&d), ["vsw3", "vsw5"]);
        // Truncated or garbage datagrams give what parsed before them, never a panic.
        assert_eq!(removed_links(&d[..d.len() - 3]), ["vsw3"]);
        assert!(removed_links(&[0xff; 40]).is_empty());
        assert!(removed_links(&[]).is_empty());
    }

    #[test]
    fn watcher_hears_a_deleted_link_and_state_reads_it_back() {
        if skip_unless_root("link watcher") {
            return;
        }
        let ns = Netns::new("lw");
        let mac = [0x02, 0x42, 0xac, 0x11, 0, 9];
        let state = in_netns(ns.path(), || -> Result<_, IoError> {
            let mut w = LinkWatcher::open()?;
            create_veth_pair_here("lwh0", "lwh0p", mac, 1400)?;
            let peer = link_state_here("lwh0p")?;
            let host = link_state_here("lwh0")?;
            let missing = link_state_here("nosuch0")?;
            delete_link("lwh0")?;
            let mut gone = Vec::new();
            while gone.len() < 2 {
                match w.wait()? {
                    LinkEvents::Removed(names) => gone.extend(names),
                    LinkEvents::Overrun => break,
                }
            }
            Ok((peer, host, missing, gone))
        })
        .unwrap()
        .unwrap();
        let (peer, host, missing, mut gone) = state;
        let peer = peer.unwrap();
        assert!(!peer.up, "the runtime's end stays down");
        assert_eq!(peer.mac, Some(mac));
        assert!(peer.addrs.is_empty());
        assert!(host.unwrap().up);
        assert_eq!(missing, None);
        gone.sort();
        assert_eq!(gone, ["lwh0", "lwh0p"]);
    }
}
