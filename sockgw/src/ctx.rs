//! What the gateway's roles share: [`Ctx`], the loop state each role borrows for one call, and
//! [`FlowKey`], the identity of a TCP, UDP or ICMP flow.
//!
//! The event loop owns one `Ctx` beside the roles (`tcp::TcpFlows`, `dgram::DgramFlows`,
//! `listen::Listeners`) and lends it to whichever role handles an event, so no role holds
//! another role's state and none reaches into the loop.
//!
//! Invariants:
//! - Flow tokens come from [`Ctx::token`]: one counter from [`FIRST_FLOW`] up, shared by TCP and
//!   datagram flows and never reused, so a late event cannot reach a newer flow. Tokens below
//!   `FIRST_FLOW` belong to the link, the waker and the listeners.
//! - [`Ctx::host_target`] is the one rule for what containers may reach through host sockets.
//! - Frames built outside smoltcp for datagrams go through [`Ctx::queue_reply`], which drops
//!   rather than queues beyond [`DGRAM_TX_LIMIT`].

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddrV4};
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

/// Flow identity as seen from the switch: `inner` is the U side, `outer` the far side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub inner: SocketAddrV4,
    pub outer: SocketAddrV4,
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

    /// A context with U = 10.0.2.15, host loopback mapped from G = 10.0.2.2, direct sockets.
    pub fn ctx() -> Ctx {
        let mut cfg = GatewayConfig::new(
            U,
            MacAddr([2, 0, 0, 0, 0, 0x0f]),
            MacAddr([2, 0, 0, 0, 0, 2]),
        );
        cfg.host_loopback = Some(G);
        cfg.dns_loopback = vec![Ipv4Addr::new(127, 0, 0, 53)];
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
