//! Datagram flows: UDP and ICMP echo from the switch, relayed datagram by datagram through
//! connected host sockets, without smoltcp.
//!
//! [`DgramFlows`] owns one host socket per flow (a UDP socket, or an unprivileged ICMP socket
//! where `net.ipv4.ping_group_range` allows, ICMPv6 for IPv6 flows: the same sysctl governs
//! both), keyed by (is ICMP, [`FlowKey`]), of the flow's family. Answers from the
//! host are turned into frames to U by `frames` and queued with [`Ctx::queue_reply`].
//!
//! Invariants:
//! - `by_key` and `flows` hold the same flows; each host socket is registered under its token
//!   until its flow is removed.
//! - A flow lives while it carries traffic either way: idle longer than
//!   [`DATAGRAM_IDLE_TIMEOUT`], it is closed and counted as `dgram_expired`.
//! - ICMP: the kernel replaces the echo identifier with its own; the flow keeps the container's
//!   and puts it back into each reply. Only echo replies are passed on.
//!
//! Replies to clients of published UDP ports are not flows here: they leave through the
//! published socket (`listen`).

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant as StdInstant;

use mio::net::UdpSocket;
use mio::{Interest, Token};
use socket2::{Domain, Protocol, SockAddr, Type};

use crate::DATAGRAM_IDLE_TIMEOUT;
use crate::counters::Counters;
use crate::ctx::{Ctx, FlowKey, would_block};
use crate::frames;

#[derive(Debug, Clone, Copy)]
enum DgramKind {
    Udp,
    /// ICMP echo; the kernel replaces the identifier with its own, this is the container's.
    Icmp {
        ident: u16,
    },
}

impl DgramKind {
    fn is_icmp(self) -> bool {
        matches!(self, DgramKind::Icmp { .. })
    }
}

struct DgramFlow {
    key: FlowKey,
    kind: DgramKind,
    sock: UdpSocket,
    last: StdInstant,
}

/// The UDP and ICMP echo flows of the gateway.
pub(crate) struct DgramFlows {
    flows: HashMap<usize, DgramFlow>,
    /// Keyed by (is ICMP, key).
    by_key: HashMap<(bool, FlowKey), usize>,
    scratch: Vec<u8>,
}

impl DgramFlows {
    pub fn new() -> Self {
        DgramFlows {
            flows: HashMap::new(),
            by_key: HashMap::new(),
            scratch: vec![0u8; 65536],
        }
    }

    /// A UDP datagram from U:`src` to `dst`: sent through the flow's host socket, opened first
    /// for a new 4-tuple.
    pub fn udp_out(&mut self, ctx: &mut Ctx, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let key = FlowKey {
            inner: src,
            outer: dst,
        };
        let tok = match self.by_key.get(&(false, key)) {
            Some(t) => *t,
            None => {
                let Some(addr) = ctx.host_target_ip(dst.ip(), dst.port()) else {
                    return Counters::inc(&ctx.counters.drop_forbidden);
                };
                let target = SocketAddr::new(addr, dst.port());
                match self.open(ctx, key, DgramKind::Udp, Protocol::UDP, target) {
                    Ok(t) => {
                        Counters::inc(&ctx.counters.udp_opened);
                        t
                    }
                    Err(e) => {
                        tracing::debug!("sockgw: UDP socket to {target}: {e}");
                        return Counters::inc(&ctx.counters.drop_host_send);
                    }
                }
            }
        };
        let sent = self.send(tok, payload);
        ctx.count_send(sent, payload.len(), |c| &c.udp_rx);
    }

    /// An ICMP (ICMPv6 for an IPv6 `dst`) echo request from U (U6) to `dst` with the
    /// container's identifier `ident`; `message` is the whole ICMP message.
    pub fn icmp_out(&mut self, ctx: &mut Ctx, dst: IpAddr, ident: u16, message: &[u8]) {
        let Some(uplink) = ctx.cfg.uplink_for(dst) else {
            return Counters::inc(&ctx.counters.drop_forbidden);
        };
        let key = FlowKey {
            inner: SocketAddr::new(uplink, ident),
            outer: SocketAddr::new(dst, 0),
        };
        let tok = match self.by_key.get(&(true, key)) {
            Some(t) => *t,
            None => {
                let Some(addr) = ctx.host_target_ip(dst, 0) else {
                    return Counters::inc(&ctx.counters.drop_forbidden);
                };
                let target = SocketAddr::new(addr, 0);
                let kind = DgramKind::Icmp { ident };
                let proto = if addr.is_ipv6() {
                    Protocol::ICMPV6
                } else {
                    Protocol::ICMPV4
                };
                match self.open(ctx, key, kind, proto, target) {
                    Ok(t) => {
                        Counters::inc(&ctx.counters.icmp_opened);
                        t
                    }
                    // EACCES unless ping_group_range covers our group.
                    Err(_) => return Counters::inc(&ctx.counters.drop_icmp_unavailable),
                }
            }
        };
        let sent = self.send(tok, message);
        ctx.count_send(sent, message.len(), |c| &c.icmp_rx);
    }

    /// Sends on flow `tok`'s socket; false if the flow is gone or the socket refused.
    fn send(&mut self, tok: usize, data: &[u8]) -> bool {
        match self.flows.get_mut(&tok) {
            Some(f) => {
                f.last = StdInstant::now();
                f.sock.send(data).is_ok()
            }
            None => false,
        }
    }

    fn open(
        &mut self,
        ctx: &mut Ctx,
        key: FlowKey,
        kind: DgramKind,
        proto: Protocol,
        target: SocketAddr,
    ) -> io::Result<usize> {
        let s = ctx
            .hs
            .socket(Domain::for_address(target), Type::DGRAM, Some(proto))?;
        s.set_nonblocking(true)?;
        s.connect(&SockAddr::from(target))?;
        let mut sock = UdpSocket::from_std(std::net::UdpSocket::from(s));
        let tok = ctx.token();
        ctx.poll
            .registry()
            .register(&mut sock, Token(tok), Interest::READABLE)?;
        self.by_key.insert((kind.is_icmp(), key), tok);
        self.flows.insert(
            tok,
            DgramFlow {
                key,
                kind,
                sock,
                last: StdInstant::now(),
            },
        );
        Ok(tok)
    }

    /// True if `tok` is a datagram flow.
    pub fn contains(&self, tok: usize) -> bool {
        self.flows.contains_key(&tok)
    }

    /// Flow `tok`'s socket is readable: every waiting datagram becomes a frame to U.
    pub fn on_readable(&mut self, ctx: &mut Ctx, tok: usize) {
        let buf = &mut self.scratch;
        while let Some(flow) = self.flows.get_mut(&tok) {
            let n = match flow.sock.recv(buf) {
                Ok(n) => n,
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ECONNREFUSED and friends from ICMP errors: nothing to pass on (yet).
                Err(_) => continue,
            };
            flow.last = StdInstant::now();
            let (key, kind) = (flow.key, flow.kind);
            let data = buf.get(..n).unwrap_or(&[]);
            Counters::add(&ctx.counters.bytes_from_host, n as u64);
            let frame = match kind {
                DgramKind::Udp => frames::udp_frame(&ctx.cfg, key.outer, key.inner.port(), data),
                DgramKind::Icmp { ident } => {
                    match frames::icmp_echo_reply_frame(&ctx.cfg, key.outer.ip(), ident, data) {
                        Some(f) => Some(f),
                        // Not an echo reply: nothing to send.
                        None => continue,
                    }
                }
            };
            ctx.queue_reply(frame);
        }
    }

    /// Closes the flows idle longer than [`DATAGRAM_IDLE_TIMEOUT`] at `now`.
    pub fn expire(&mut self, ctx: &mut Ctx, now: StdInstant) {
        let idle: Vec<usize> = self
            .flows
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) > DATAGRAM_IDLE_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for tok in idle {
            if let Some(mut f) = self.flows.remove(&tok) {
                self.by_key.remove(&(f.kind.is_icmp(), f.key));
                let _ = ctx.poll.registry().deregister(&mut f.sock);
                Counters::inc(&ctx.counters.dgram_expired);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    use smoltcp::wire::{IpProtocol, Ipv4Packet, UdpPacket};

    use crate::ctx::tests::{G, G6, U, U6, ctx};
    use std::net::{Ipv6Addr, SocketAddrV6};

    /// A host UDP echo service on 127.0.0.1 (blocking, with a deadline).
    fn host_udp() -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Reads flow `tok` until a frame is queued (the datagram crosses the loopback first).
    fn wait_frame(d: &mut DgramFlows, c: &mut Ctx, tok: usize) -> Vec<u8> {
        let start = StdInstant::now();
        loop {
            d.on_readable(c, tok);
            if let Some(f) = c.dev.tx.pop_front() {
                return f;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no reply");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn one_flow_per_four_tuple_and_replies_come_back_as_frames() {
        let mut c = ctx();
        let mut d = DgramFlows::new();
        let host = host_udp();
        let port = host.local_addr().unwrap().port();
        let src = SocketAddrV4::new(U, 40000).into();
        let dst = SocketAddrV4::new(G, port).into();
        d.udp_out(&mut c, src, dst, b"one");
        d.udp_out(&mut c, src, dst, b"two");
        // Another source port is another flow.
        d.udp_out(&mut c, SocketAddrV4::new(U, 40001).into(), dst, b"three");
        let s = c.counters.snapshot();
        assert_eq!((s.udp_opened, s.udp_rx, s.bytes_to_host), (2, 3, 11));
        assert_eq!(d.flows.len(), 2);

        let mut b = [0u8; 64];
        let (n, from) = host.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"one");
        let (n, from2) = host.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"two");
        assert_eq!(from, from2, "one host socket per flow");
        host.send_to(b"reply", from).unwrap();

        let tok = d.by_key[&(
            false,
            FlowKey {
                inner: src,
                outer: dst,
            },
        )];
        let frame = wait_frame(&mut d, &mut c, tok);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Udp);
        assert_eq!(
            (ip.src_addr(), ip.dst_addr()),
            (G, U),
            "from the address U sent to"
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (port, 40000));
        assert_eq!(udp.payload(), b"reply");
        assert_eq!(c.counters.snapshot().bytes_from_host, 5);
    }

    #[test]
    fn forbidden_destinations_open_no_flow() {
        let mut c = ctx();
        let mut d = DgramFlows::new();
        let src = SocketAddrV4::new(U, 40000).into();
        let to = |a: Ipv4Addr| SocketAddrV4::new(a, 9).into();
        d.udp_out(&mut c, src, to(Ipv4Addr::LOCALHOST), b"x");
        d.udp_out(&mut c, src, to(Ipv4Addr::BROADCAST), b"x");
        d.icmp_out(
            &mut c,
            Ipv4Addr::LOCALHOST.into(),
            1,
            &[8, 0, 0, 0, 0, 1, 0, 1],
        );
        let s = c.counters.snapshot();
        assert_eq!(s.drop_forbidden, 3);
        assert_eq!(s.udp_opened + s.icmp_opened + s.udp_rx + s.icmp_rx, 0);
        assert!(d.flows.is_empty() && d.by_key.is_empty());
    }

    #[test]
    fn idle_flows_expire_and_the_next_datagram_opens_a_new_one() {
        let mut c = ctx();
        let mut d = DgramFlows::new();
        let host = host_udp();
        let dst = SocketAddrV4::new(G, host.local_addr().unwrap().port()).into();
        let src = SocketAddrV4::new(U, 40000).into();
        d.udp_out(&mut c, src, dst, b"a");
        let tok = *d.by_key.values().next().unwrap();

        // Not yet idle long enough.
        d.expire(&mut c, StdInstant::now() + DATAGRAM_IDLE_TIMEOUT / 2);
        assert!(d.contains(tok));
        d.expire(
            &mut c,
            StdInstant::now() + DATAGRAM_IDLE_TIMEOUT + Duration::from_secs(1),
        );
        assert!(!d.contains(tok) && d.by_key.is_empty());
        assert_eq!(c.counters.snapshot().dgram_expired, 1);

        d.udp_out(&mut c, src, dst, b"b");
        assert_eq!(c.counters.snapshot().udp_opened, 2);
        assert!(!d.contains(tok), "the new flow has a new token");
        assert_eq!(d.flows.len(), 1);
    }

    #[test]
    fn icmp_echo_keeps_the_containers_identifier_or_counts_unavailable() {
        let mut c = ctx();
        let mut d = DgramFlows::new();
        // Echo request, ident 0x1234, seq 1, checksum left to the kernel.
        let msg = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        d.icmp_out(&mut c, G.into(), 0x1234, &msg);
        let s = c.counters.snapshot();
        if s.drop_icmp_unavailable == 1 {
            // ping_group_range does not cover this user: nothing else may have happened.
            assert_eq!(s.icmp_opened + s.icmp_rx, 0);
            assert!(d.flows.is_empty());
            return;
        }
        assert_eq!((s.icmp_opened, s.icmp_rx), (1, 1));
        let tok = *d
            .by_key
            .get(&(
                true,
                FlowKey {
                    inner: SocketAddrV4::new(U, 0x1234).into(),
                    outer: SocketAddrV4::new(G, 0).into(),
                },
            ))
            .unwrap();
        let frame = wait_frame(&mut d, &mut c, tok);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (G, U));
        let icmp = smoltcp::wire::Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), smoltcp::wire::Icmpv4Message::EchoReply);
        assert_eq!(icmp.echo_ident(), 0x1234);
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.data(), b"hi");
    }

    #[test]
    fn ipv6_udp_goes_through_an_ipv6_host_socket_and_comes_back_to_u6() {
        let mut c = ctx();
        let mut d = DgramFlows::new();
        let host = std::net::UdpSocket::bind("[::1]:0").unwrap();
        host.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let port = host.local_addr().unwrap().port();
        let src = SocketAddrV6::new(U6, 40000, 0, 0).into();
        // G6 is mapped to the host's ::1.
        let dst = SocketAddrV6::new(G6, port, 0, 0).into();
        d.udp_out(&mut c, src, dst, b"ping6");
        let mut b = [0u8; 64];
        let (n, from) = host.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"ping6");
        assert!(from.is_ipv6() && from.ip().is_loopback());
        host.send_to(b"pong6", from).unwrap();
        let tok = d.by_key[&(
            false,
            FlowKey {
                inner: src,
                outer: dst,
            },
        )];
        let frame = wait_frame(&mut d, &mut c, tok);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        let ip = smoltcp::wire::Ipv6Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(
            (ip.src_addr(), ip.dst_addr()),
            (G6, U6),
            "from the address U6 sent to"
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (port, 40000));
        assert!(udp.verify_checksum(&G6.into(), &U6.into()));
        assert_eq!(udp.payload(), b"pong6");
        let s = c.counters.snapshot();
        assert_eq!((s.udp_opened, s.udp_rx, s.bytes_from_host), (1, 1, 5));

        // The host's ::1 unmapped, link-local, multicast and IPv4-mapped are refused.
        for far in ["::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1"] {
            let far: Ipv6Addr = far.parse().unwrap();
            d.udp_out(&mut c, src, SocketAddrV6::new(far, 9, 0, 0).into(), b"x");
        }
        d.icmp_out(
            &mut c,
            Ipv6Addr::LOCALHOST.into(),
            1,
            &[128, 0, 0, 0, 0, 1, 0, 1],
        );
        assert_eq!(c.counters.snapshot().drop_forbidden, 5);
        assert_eq!(d.flows.len(), 1);
    }

    #[test]
    fn icmpv6_echo_to_the_hosts_loopback_is_answered() {
        let mut c = ctx();
        let mut d = DgramFlows::new();
        // Echo request, ident 0x1234, seq 1, checksum left to the kernel.
        let msg = [128u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'h', b'i'];
        d.icmp_out(&mut c, G6.into(), 0x1234, &msg);
        let s = c.counters.snapshot();
        if s.drop_icmp_unavailable == 1 {
            eprintln!(
                "skipped: unprivileged ICMPv6 sockets are not permitted here \
                 (net.ipv4.ping_group_range does not cover this group)"
            );
            assert_eq!(s.icmp_opened + s.icmp_rx, 0);
            assert!(d.flows.is_empty());
            return;
        }
        assert_eq!((s.icmp_opened, s.icmp_rx), (1, 1));
        let key = FlowKey {
            inner: SocketAddrV6::new(U6, 0x1234, 0, 0).into(),
            outer: SocketAddrV6::new(G6, 0, 0, 0).into(),
        };
        let tok = d.by_key[&(true, key)];
        let frame = wait_frame(&mut d, &mut c, tok);
        let ip = smoltcp::wire::Ipv6Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (G6, U6));
        let icmp = smoltcp::wire::Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), smoltcp::wire::Icmpv6Message::EchoReply);
        assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x1234, 1));
        assert!(icmp.verify_checksum(&G6, &U6));
        assert_eq!(icmp.payload(), b"hi");
    }
}
