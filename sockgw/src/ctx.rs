//! What the gateway's roles share: [`Ctx`], the loop state each role borrows for one call, and
//! [`FlowKey`], the identity of a TCP, UDP or ICMP flow (of either family).
//!
//! The event loop owns one `Ctx` beside the roles (`tcp::TcpFlows`, `dgram::DgramFlows`,
//! `listen::Listeners`) and lends it to whichever role handles an event, so no role holds
//! another role's state and none reaches into the loop.
//!
//! Invariants:
//! - Flow tokens come from [`Ctx::token`]: one counter from [`FIRST_FLOW`] up, shared by TCP and
//!   datagram flows and never reused, so a late event cannot reach a newer flow. Tokens below
//!   `FIRST_FLOW` belong to the link, the waker and the listeners.
//! - [`Ctx::host_target`] (IPv4) and [`Ctx::host_target6`] (IPv6), joined by
//!   [`Ctx::host_target_ip`], are the one rule for what containers may reach through host
//!   sockets.
//! - Frames built outside smoltcp for datagrams go through [`Ctx::queue_reply`], which drops
//!   rather than queues beyond [`DGRAM_TX_LIMIT`].

use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use mio::Poll;

use crate::counters::Counters;
use crate::device::FrameQueues;
use crate::{GatewayConfig, HostSockets};

/// Flow tokens start here and are never reused, so a late event cannot hit a newer flow.
pub(crate) const FIRST_FLOW: usize = 1 << 20;
/// UDP/ICMP replies are dropped (not queued) beyond this many frames waiting for the link.
pub(crate) const DGRAM_TX_LIMIT: usize = 4 * crate::device::TX_QUEUE_LIMIT;

/// Flow identity as seen from the switch: `inner` is the U side, `outer` the far side (both of
/// one family: U and the destination, or U6 and an IPv6 destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub inner: SocketAddr,
    pub outer: SocketAddr,
}

/// The loop state every role uses.
pub(crate) struct Ctx {
    pub cfg: GatewayConfig,
    /// Makes host sockets (in the host's namespace in rootless mode).
    pub hs: Box<dyn HostSockets>,
    pub counters: Arc<Counters>,
    /// Every host socket is registered here under its token.
    pub poll: Poll,
    /// The frame queues between the loop, smoltcp and the link.
    pub dev: FrameQueues,
    next_token: usize,
}

pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

impl Ctx {
    pub fn new(cfg: GatewayConfig, hs: Box<dyn HostSockets>) -> io::Result<Self> {
        let dev = FrameQueues::new(cfg.gateway_mac, cfg.mac, cfg.mtu);
        Ok(Ctx {
            cfg,
            hs,
            counters: Arc::new(Counters::default()),
            poll: Poll::new()?,
            dev,
            next_token: FIRST_FLOW,
        })
    }

    /// A fresh flow token.
    pub fn token(&mut self) -> usize {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// The host address a flow to `dst:port` is made to, or `None` for a destination a
    /// container must not reach through host sockets: the host's own loopback (reachable only
    /// through the `host_loopback` mapping, or a loopback resolver on port 53 that the switch
    /// forwards DNS to), and addresses no ordinary packet goes to.
    pub fn host_target(&self, dst: Ipv4Addr, port: u16) -> Option<Ipv4Addr> {
        if Some(dst) == self.cfg.host_loopback {
            return Some(Ipv4Addr::LOCALHOST);
        }
        if dst.is_loopback() {
            return (port == 53 && self.cfg.dns_loopback.contains(&dst)).then_some(dst);
        }
        if dst.is_unspecified() || dst.is_broadcast() || dst.is_multicast() {
            return None;
        }
        Some(dst)
    }

    /// [`Self::host_target`] for IPv6: the host's ::1 only through the `host_loopback` mapping
    /// of [`GatewayV6`](crate::GatewayV6); never the unspecified address, multicast, link-local
    /// unicast (no scope to send it on), nor IPv4-mapped or -compatible addresses (they would
    /// reach IPv4 destinations, the host's 127.0.0.1 among them, around the IPv4 rule).
    pub fn host_target6(&self, dst: Ipv6Addr, _port: u16) -> Option<Ipv6Addr> {
        let v6 = self.cfg.ipv6.as_ref()?;
        if Some(dst) == v6.host_loopback {
            return Some(Ipv6Addr::LOCALHOST);
        }
        let [a, b, c, d, e, f, ..] = dst.segments();
        let v4_embedded = [a, b, c, d, e] == [0; 5] && (f == 0xffff || f == 0);
        if dst.is_loopback()
            || dst.is_unspecified()
            || dst.is_multicast()
            || dst.is_unicast_link_local()
            || v4_embedded
        {
            return None;
        }
        Some(dst)
    }

    /// [`Self::host_target`] or [`Self::host_target6`], by `dst`'s family.
    pub fn host_target_ip(&self, dst: IpAddr, port: u16) -> Option<IpAddr> {
        match dst {
            IpAddr::V4(a) => self.host_target(a, port).map(IpAddr::V4),
            IpAddr::V6(a) => self.host_target6(a, port).map(IpAddr::V6),
        }
    }

    /// Queues a datagram frame for the switch (`None`: it was too big for the MTU).
    pub fn queue_reply(&mut self, frame: Option<Vec<u8>>) {
        match frame {
            None => Counters::inc(&self.counters.drop_too_big),
            Some(_) if self.dev.tx.len() >= DGRAM_TX_LIMIT => {
                Counters::inc(&self.counters.drop_link_tx)
            }
            Some(f) => self.dev.tx.push_back(f),
        }
    }

    /// Counts a datagram from the switch that a host socket took (`handled`) or refused.
    pub fn count_send(&self, sent: bool, len: usize, handled: impl Fn(&Counters) -> &AtomicU64) {
        if sent {
            Counters::inc(handled(&self.counters));
            Counters::add(&self.counters.bytes_to_host, len as u64);
        } else {
            Counters::inc(&self.counters.drop_host_send);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Direct, MacAddr};

    pub const U: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    /// Mapped to the host's 127.0.0.1.
    pub const G: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    /// U6: the uplink's IPv6 address.
    pub const U6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7673, 0xffff, 0, 0, 0, 0, 2);
    /// Mapped to the host's ::1.
    pub const G6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7673, 0xffff, 0, 0, 0, 0, 1);

    /// A context with U = 10.0.2.15, host loopback mapped from G = 10.0.2.2, U6 and G6 (mapped to
    /// ::1), direct sockets.
    pub fn ctx() -> Ctx {
        let mut cfg = GatewayConfig::new(
            U,
            MacAddr([2, 0, 0, 0, 0, 0x0f]),
            MacAddr([2, 0, 0, 0, 0, 2]),
        );
        cfg.host_loopback = Some(G);
        cfg.dns_loopback = vec![Ipv4Addr::new(127, 0, 0, 53)];
        let mut v6 = crate::GatewayV6::new(U6);
        v6.host_loopback = Some(G6);
        cfg.ipv6 = Some(v6);
        Ctx::new(cfg, Box::new(Direct)).unwrap()
    }

    #[test]
    fn host_target_maps_loopback_and_refuses_the_rest() {
        let c = ctx();
        assert_eq!(c.host_target(G, 80), Some(Ipv4Addr::LOCALHOST));
        let remote = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(c.host_target(remote, 80), Some(remote));
        assert_eq!(c.host_target(Ipv4Addr::LOCALHOST, 80), None);
        // A loopback resolver is reachable on port 53 only, and only the configured one.
        let resolver = Ipv4Addr::new(127, 0, 0, 53);
        assert_eq!(c.host_target(resolver, 53), Some(resolver));
        assert_eq!(c.host_target(resolver, 54), None);
        assert_eq!(c.host_target(Ipv4Addr::LOCALHOST, 53), None);
        for dst in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 251),
        ] {
            assert_eq!(c.host_target(dst, 5353), None, "{dst}");
        }
    }

    #[test]
    fn ipv6_host_targets_map_loopback_and_refuse_the_rest() {
        let mut c = ctx();
        assert_eq!(c.host_target6(G6, 80), Some(Ipv6Addr::LOCALHOST));
        let remote: Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(c.host_target6(remote, 80), Some(remote));
        assert_eq!(
            c.host_target_ip(IpAddr::V6(remote), 80),
            Some(IpAddr::V6(remote))
        );
        for dst in [
            "::1",
            "::",
            "ff02::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:192.0.2.7",
            "::127.0.0.1",
        ] {
            let dst: Ipv6Addr = dst.parse().unwrap();
            assert_eq!(c.host_target6(dst, 53), None, "{dst}");
        }
        // Without IPv6 configured nothing is reachable over it.
        c.cfg.ipv6 = None;
        assert_eq!(c.host_target6(remote, 80), None);
    }

    #[test]
    fn loopback_clients_appear_from_the_mapped_address_others_keep_theirs() {
        let mut cfg = ctx().cfg;
        let remote = Ipv4Addr::new(192, 0, 2, 9);
        assert_eq!(cfg.client_addr(remote), remote);
        assert_eq!(cfg.client_addr(Ipv4Addr::LOCALHOST), G);
        assert_eq!(
            cfg.client_addr(Ipv4Addr::new(127, 1, 2, 3)),
            G,
            "all of 127/8"
        );
        cfg.host_loopback = None;
        cfg.next_hop = Some(Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(
            cfg.client_addr(Ipv4Addr::LOCALHOST),
            Ipv4Addr::new(10, 0, 2, 3)
        );
        assert_eq!(cfg.client_addr(remote), remote);
        cfg.next_hop = None;
        assert_eq!(
            cfg.client_addr(Ipv4Addr::LOCALHOST),
            Ipv4Addr::LOCALHOST,
            "nothing else to use"
        );
    }

    #[test]
    fn ipv6_loopback_clients_appear_from_the_mapped_address_or_the_next_hop() {
        let mut cfg = ctx().cfg;
        let remote: Ipv6Addr = "2001:db8::9".parse().unwrap();
        let ip = |a: Ipv6Addr| Some(IpAddr::V6(a));
        assert_eq!(cfg.client_ip(IpAddr::V6(remote)), ip(remote));
        assert_eq!(cfg.client_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), ip(G6));
        assert_eq!(cfg.uplink_for(IpAddr::V6(remote)), ip(U6));
        assert_eq!(cfg.uplink_for(IpAddr::V4(G)), Some(IpAddr::V4(U)));
        let next_hop = "fd00:7673:ffff::3".parse().unwrap();
        if let Some(v6) = cfg.ipv6.as_mut() {
            v6.host_loopback = None;
            v6.next_hop = Some(next_hop);
        }
        assert_eq!(cfg.client_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), ip(next_hop));
        // Not serving IPv6: an IPv6 client has nowhere to go; IPv4 is unaffected.
        cfg.ipv6 = None;
        assert_eq!(cfg.client_ip(IpAddr::V6(remote)), None);
        assert_eq!(cfg.uplink_for(IpAddr::V6(remote)), None);
        assert_eq!(
            cfg.client_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some(IpAddr::V4(G))
        );
    }

    #[test]
    fn tokens_are_never_reused() {
        let mut c = ctx();
        let a = c.token();
        let b = c.token();
        assert_eq!(a, FIRST_FLOW);
        assert_eq!(b, FIRST_FLOW + 1);
    }

    #[test]
    fn datagram_replies_beyond_the_limit_are_dropped() {
        let mut c = ctx();
        for _ in 0..DGRAM_TX_LIMIT + 3 {
            c.queue_reply(Some(vec![0u8; 60]));
        }
        c.queue_reply(None);
        assert_eq!(c.dev.tx.len(), DGRAM_TX_LIMIT);
        let s = c.counters.snapshot();
        assert_eq!(s.drop_link_tx, 3);
        assert_eq!(s.drop_too_big, 1);
    }
}
