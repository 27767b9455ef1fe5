//! Published ports: the host listening sockets, and the clients of published UDP ports.
//!
//! [`Listeners`] owns one slot per port ever published, in order: a TCP listener, a bound UDP
//! socket, or `Closed` once unpublished. Accepted TCP connections are handed to the event loop
//! (which gives them to `tcp`); datagrams on a UDP port become frames to U:host_port from the
//! real client's address, and the container's replies to that client leave through the same
//! socket.
//!
//! A port published on 0.0.0.0 takes two slots when the gateway serves IPv6: the IPv4 listener
//! and an IPv6-only one on `[::]`, whose clients arrive at U6 (see [`crate::Published`]).
//!
//! Invariants:
//! - Slot `i` is registered under token `FIRST_LISTENER + i`. Slots are never removed or
//!   reordered (unpublishing leaves `Closed`), so a token always names the same port.
//! - A port is bound and listening when published: a port in use fails the publish, not later.
//! - A UDP client lives in `udp_clients` while it exchanges datagrams; idle longer than
//!   [`DATAGRAM_IDLE_TIMEOUT`] it is forgotten (counted as `dgram_expired`).

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant as StdInstant;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Token};
use socket2::{Domain, Protocol, SockAddr, Type};

use crate::counters::Counters;
use crate::ctx::{Ctx, FIRST_FLOW, would_block};
use crate::{DATAGRAM_IDLE_TIMEOUT, HostSockets, Published, frames};
use packet::PortProto;

/// Token of the first listener; slot `i` has `FIRST_LISTENER + i`.
pub(crate) const FIRST_LISTENER: usize = 1;

enum Listener {
    Tcp(TcpListener, u16),
    Udp(UdpSocket, u16),
    /// Unpublished: the slot stays so that listener indexes (tokens) never move.
    Closed,
}

/// What one `accept` on a TCP listener gave.
pub(crate) enum Accept {
    /// A connection from `peer` to published port `port`.
    Conn {
        stream: TcpStream,
        peer: SocketAddr,
        port: u16,
    },
    /// Nothing usable this time (interrupted); try again.
    Again,
    /// Nothing more to accept now (or not a TCP listener).
    Done,
}

struct UdpClient {
    slot: usize,
    real: SocketAddr,
    last: StdInstant,
}

/// The published ports of the gateway.
pub(crate) struct Listeners {
    slots: Vec<Listener>,
    /// Clients of published UDP ports: (host port, client as the switch sees it) → (slot, the
    /// real client, last activity). The two differ for a client on the host's loopback
    /// ([`crate::GatewayConfig::client_addr`]).
    udp_clients: HashMap<(u16, SocketAddr), UdpClient>,
    scratch: Vec<u8>,
}

impl Listeners {
    pub fn new() -> Self {
        Listeners {
            slots: Vec::new(),
            udp_clients: HashMap::new(),
            scratch: vec![0u8; 65536],
        }
    }

    /// The slot of a listener token, if it is one (tokens below the flows').
    pub fn slot_of(token: usize) -> Option<usize> {
        (FIRST_LISTENER..FIRST_FLOW)
            .contains(&token)
            .then(|| token - FIRST_LISTENER)
    }

    /// Opens and registers a host listening socket in a new slot; for 0.0.0.0 on a gateway that
    /// serves IPv6, `[::]` too in the slot after it (a port in use there fails the publish; a
    /// host without IPv6 only skips it). Nothing is kept when the publish fails.
    pub fn publish(&mut self, ctx: &Ctx, p: &Published) -> io::Result<()> {
        let mut opened = vec![open_listener(ctx.hs.as_ref(), p)?];
        if p.host_addr == IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED) && ctx.cfg.ipv6.is_some() {
            let all6 = Published {
                host_addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ..*p
            };
            // The IPv4 listener's port, for port 0.
            let port = match &opened[0] {
                Listener::Tcp(_, port) | Listener::Udp(_, port) => *port,
                Listener::Closed => p.host_port,
            };
            match open_listener(
                ctx.hs.as_ref(),
                &Published {
                    host_port: port,
                    ..all6
                },
            ) {
                Ok(l) => opened.push(l),
                Err(e) if e.kind() == ErrorKind::AddrInUse => return Err(e),
                Err(e) => tracing::debug!("sockgw: no IPv6 listener for port {port}: {e}"),
            }
        }
        let registry = ctx.poll.registry();
        for (i, l) in opened.iter_mut().enumerate() {
            let token = Token(FIRST_LISTENER + self.slots.len() + i);
            match l {
                Listener::Tcp(s, _) => registry.register(s, token, Interest::READABLE)?,
                Listener::Udp(s, _) => registry.register(s, token, Interest::READABLE)?,
                Listener::Closed => {}
            }
        }
        self.slots.extend(opened);
        Ok(())
    }

    /// Closes the listening socket(s) of this protocol and port; connections and UDP clients
    /// already there stay.
    pub fn unpublish(&mut self, proto: PortProto, host_port: u16) {
        for l in &mut self.slots {
            let hit = match (l as &Listener, proto) {
                (Listener::Tcp(_, p), PortProto::Tcp) | (Listener::Udp(_, p), PortProto::Udp) => {
                    *p == host_port
                }
                _ => false,
            };
            if hit {
                // Dropping the socket deregisters it from the poll.
                *l = Listener::Closed;
            }
        }
    }

    /// The bound address of each slot, in publishing order.
    pub fn addrs(&self) -> Vec<io::Result<SocketAddr>> {
        self.slots
            .iter()
            .map(|l| match l {
                Listener::Tcp(s, _) => s.local_addr(),
                Listener::Udp(s, _) => s.local_addr(),
                Listener::Closed => Err(io::Error::other("unpublished")),
            })
            .collect()
    }

    /// True if `slot` is a published TCP port.
    pub fn is_tcp(&self, slot: usize) -> bool {
        matches!(self.slots.get(slot), Some(Listener::Tcp(..)))
    }

    /// Accepts one connection on TCP slot `slot`.
    pub fn accept(&self, slot: usize) -> Accept {
        let Some(Listener::Tcp(l, port)) = self.slots.get(slot) else {
            return Accept::Done;
        };
        let port = *port;
        match l.accept() {
            Ok((stream, peer)) => Accept::Conn { stream, peer, port },
            Err(e) if would_block(&e) => Accept::Done,
            Err(e) if e.kind() == ErrorKind::Interrupted => Accept::Again,
            Err(e) => {
                // ECONNABORTED, EMFILE...: leave the rest for the next event.
                tracing::debug!("sockgw: accept on port {port}: {e}");
                Accept::Done
            }
        }
    }

    /// UDP slot `slot` is readable: each datagram becomes a frame from its client to U:port.
    pub fn udp_in(&mut self, ctx: &mut Ctx, slot: usize) {
        let buf = &mut self.scratch;
        while let Some(Listener::Udp(s, port)) = self.slots.get(slot) {
            let port = *port;
            let (n, peer) = match s.recv_from(buf) {
                Ok(x) => x,
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors from earlier sends surface here; they end nothing.
                Err(_) => continue,
            };
            // An IPv6 client when the gateway does not serve IPv6: nowhere to take it.
            let Some(client) = ctx.cfg.client_ip(peer.ip()) else {
                continue;
            };
            let seen = SocketAddr::new(client, peer.port());
            let client = UdpClient {
                slot,
                real: peer,
                last: StdInstant::now(),
            };
            if self.udp_clients.insert((port, seen), client).is_none() {
                Counters::inc(&ctx.counters.udp_opened);
            }
            Counters::add(&ctx.counters.bytes_from_host, n as u64);
            let frame = frames::udp_frame(&ctx.cfg, seen, port, buf.get(..n).unwrap_or(&[]));
            ctx.queue_reply(frame);
        }
    }

    /// A datagram from U:`src_port` to `dst`: if `dst` is a client of published UDP port
    /// `src_port`, sends it through that port's socket and returns true; otherwise false (an
    /// ordinary outbound flow).
    pub fn reply(&mut self, ctx: &Ctx, src_port: u16, dst: SocketAddr, payload: &[u8]) -> bool {
        let Some(client) = self.udp_clients.get_mut(&(src_port, dst)) else {
            return false;
        };
        client.last = StdInstant::now();
        let sent = match self.slots.get(client.slot) {
            Some(Listener::Udp(s, _)) => s.send_to(payload, client.real).is_ok(),
            _ => false,
        };
        ctx.count_send(sent, payload.len(), |c| &c.udp_rx);
        true
    }

    /// Forgets the UDP clients idle longer than [`DATAGRAM_IDLE_TIMEOUT`] at `now`.
    pub fn expire(&mut self, ctx: &Ctx, now: StdInstant) {
        let before = self.udp_clients.len();
        self.udp_clients
            .retain(|_, c| now.duration_since(c.last) <= DATAGRAM_IDLE_TIMEOUT);
        Counters::add(
            &ctx.counters.dgram_expired,
            (before - self.udp_clients.len()) as u64,
        );
    }
}

/// A bound host socket for `p` (an IPv6 one takes IPv6 clients only, so that `[::]` and
/// 0.0.0.0 can share a port).
fn open_listener(hs: &dyn HostSockets, p: &Published) -> io::Result<Listener> {
    let sa = SocketAddr::new(p.host_addr, p.host_port);
    let addr = SockAddr::from(sa);
    let domain = Domain::for_address(sa);
    let new = |ty, proto| -> io::Result<socket2::Socket> {
        let s = hs.socket(domain, ty, Some(proto))?;
        if sa.is_ipv6() {
            s.set_only_v6(true)?;
        }
        Ok(s)
    };
    match p.proto {
        PortProto::Tcp => {
            let s = new(Type::STREAM, Protocol::TCP)?;
            s.set_reuse_address(true)?;
            s.bind(&addr)?;
            s.listen(1024)?;
            s.set_nonblocking(true)?;
            let port = s
                .local_addr()?
                .as_socket()
                .map_or(p.host_port, |a| a.port());
            Ok(Listener::Tcp(
                TcpListener::from_std(std::net::TcpListener::from(s)),
                port,
            ))
        }
        PortProto::Udp => {
            let s = new(Type::DGRAM, Protocol::UDP)?;
            s.bind(&addr)?;
            s.set_nonblocking(true)?;
            let port = s
                .local_addr()?
                .as_socket()
                .map_or(p.host_port, |a| a.port());
            Ok(Listener::Udp(
                UdpSocket::from_std(std::net::UdpSocket::from(s)),
                port,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    use smoltcp::wire::{Ipv4Packet, UdpPacket};

    use crate::ctx::tests::{G, U, ctx};

    fn local(proto: PortProto, host_port: u16) -> Published {
        Published {
            proto,
            host_addr: Ipv4Addr::LOCALHOST.into(),
            host_port,
        }
    }

    fn accept_within_deadline(l: &Listeners, slot: usize) -> (TcpStream, SocketAddr, u16) {
        let start = StdInstant::now();
        loop {
            if let Accept::Conn { stream, peer, port } = l.accept(slot) {
                return (stream, peer, port);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nothing accepted"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn publish_accept_and_unpublish_tcp() {
        let c = ctx();
        let mut l = Listeners::new();
        l.publish(&c, &local(PortProto::Tcp, 0)).unwrap();
        let addr = l.addrs().remove(0).unwrap();
        assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(addr.port(), 0, "port 0 reports the port it got");
        assert!(l.is_tcp(0));
        assert!(matches!(l.accept(0), Accept::Done), "nobody connected yet");

        let client = std::net::TcpStream::connect(addr).unwrap();
        let (_stream, peer, port) = accept_within_deadline(&l, 0);
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(port, addr.port());

        // Unpublishing UDP on the same port leaves the TCP listener alone.
        l.unpublish(PortProto::Udp, addr.port());
        assert!(l.is_tcp(0));
        l.unpublish(PortProto::Tcp, addr.port());
        assert!(!l.is_tcp(0));
        assert!(l.addrs()[0].is_err(), "the slot stays, closed");
        let refused = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

        // The next port takes the next slot (token), not the closed one.
        l.publish(&c, &local(PortProto::Tcp, 0)).unwrap();
        assert_eq!(l.addrs().len(), 2);
        assert!(l.is_tcp(1));
    }

    #[test]
    fn a_port_in_use_is_refused() {
        let c = ctx();
        let mut l = Listeners::new();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = l.publish(&c, &local(PortProto::Tcp, port)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse);
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = l.publish(&c, &local(PortProto::Udp, port)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse);
        assert!(l.addrs().is_empty(), "a failed publish takes no slot");
    }

    #[test]
    fn listener_tokens_are_below_the_flows() {
        assert_eq!(Listeners::slot_of(0), None, "the link");
        assert_eq!(Listeners::slot_of(FIRST_LISTENER), Some(0));
        assert_eq!(Listeners::slot_of(FIRST_LISTENER + 5), Some(5));
        assert_eq!(Listeners::slot_of(FIRST_FLOW), None);
        assert_eq!(Listeners::slot_of(usize::MAX), None, "the waker");
    }

    #[test]
    fn published_udp_clients_get_frames_replies_and_expire() {
        let mut c = ctx();
        let mut l = Listeners::new();
        l.publish(&c, &local(PortProto::Udp, 0)).unwrap();
        let addr = l.addrs().remove(0).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let client_addr = client.local_addr().unwrap();
        client.send_to(b"hello", addr).unwrap();
        client.send_to(b"again", addr).unwrap();
        let start = StdInstant::now();
        while c.dev.tx.len() < 2 {
            assert!(start.elapsed() < Duration::from_secs(10), "no frames");
            l.udp_in(&mut c, 0);
            std::thread::sleep(Duration::from_millis(1));
        }
        let s = c.counters.snapshot();
        assert_eq!(s.udp_opened, 1, "one client");
        assert_eq!(s.bytes_from_host, 10);
        let frame = c.dev.tx.pop_front().unwrap();
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        // From the host's loopback: the mapped address (127.0.0.1 would be a martian).
        assert_eq!((ip.src_addr(), ip.dst_addr()), (G, U));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (udp.src_port(), udp.dst_port()),
            (client_addr.port(), addr.port()),
            "from the real client to U:host_port"
        );
        assert_eq!(udp.payload(), b"hello");

        // The container's reply to the mapped address leaves through the published socket,
        // to the real client.
        let seen = SocketAddrV4::new(G, client_addr.port()).into();
        assert!(l.reply(&c, addr.port(), seen, b"reply"));
        let mut b = [0u8; 16];
        let (n, from) = client.recv_from(&mut b).unwrap();
        assert_eq!((&b[..n], from), (&b"reply"[..], addr));
        assert_eq!(c.counters.snapshot().udp_rx, 1);
        // Not a client: an ordinary flow, not handled here.
        let other = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9).into();
        assert!(!l.reply(&c, addr.port(), other, b"x"));

        l.expire(&c, StdInstant::now() + DATAGRAM_IDLE_TIMEOUT / 2);
        assert_eq!(c.counters.snapshot().dgram_expired, 0);
        l.expire(
            &c,
            StdInstant::now() + DATAGRAM_IDLE_TIMEOUT + Duration::from_secs(1),
        );
        assert_eq!(c.counters.snapshot().dgram_expired, 1);
        assert!(!l.reply(&c, addr.port(), seen, b"late"), "forgotten");
    }
}
