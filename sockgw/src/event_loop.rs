//! The gateway's event loop: the link to the switch, control commands, timers, and the dispatch
//! of frames and host socket events to the roles (`tcp`, `dgram`, `listen`).
//!
//! One thread owns everything here. [`SocketGateway`] holds the smoltcp interface, the shared
//! [`Ctx`] (configuration, host sockets, counters, poll, frame queues) and one value per role;
//! each event goes to exactly one role, which gets the `Ctx` for that call.
//!
//! Invariants:
//! - mio is edge-triggered: the link's `readable`/`writable` flags are set by events and cleared
//!   only on `WouldBlock` (the roles do the same for their host sockets).
//! - Each turn: events, at most `LINK_BATCH` frames from the link, smoltcp and the relay until
//!   nothing moves (bounded), the once-a-second timers, then flushing to the link. The loop
//!   sleeps only when nothing is pending, and at most `MAX_WAIT` so that `stop` is noticed.
//! - `frames_rx` counts every message from the link; each then lands in exactly one handled or
//!   `drop_*` counter (see `counters`).
//! - Tokens: `LINK` 0, listeners from `listen::FIRST_LISTENER`, flows from `ctx::FIRST_FLOW`,
//!   `WAKE` last.

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use mio::net::UnixDatagram as MioUnixDatagram;
use mio::{Events, Interest, Token};
use packet::ETH_HEADER_LEN;
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use socket2::SockRef;

use crate::counters::Counters;
use crate::ctx::{Ctx, FlowKey, would_block};
use crate::dgram::DgramFlows;
use crate::frames::{self, DropReason, Parsed};
use crate::listen::{Accept, Listeners};
use crate::tcp::{Segment, TcpFlows};
use crate::{GatewayConfig, HostSockets, Published};
use packet::PortProto;

const LINK: Token = Token(0);
/// Token of the waker that announces commands.
const WAKE: Token = Token(usize::MAX);
/// Frames read from the link per loop turn, so host sockets are not starved.
const LINK_BATCH: usize = 64;
/// Longest sleep: bounds how late `stop` is noticed.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// smoltcp poll/relay rounds per loop turn.
const MAX_ROUNDS: usize = 8;
/// The interface's own address. It is never seen on the wire: with `any_ip` smoltcp accepts every
/// destination, and the default route through this address is what lets it answer them.
const INTERNAL_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 255, 254);
/// The same for IPv6 (link-local: never routed, never a flow's destination, see
/// `Ctx::host_target6`).
const INTERNAL_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xffff, 0xfffe);

/// A change to a running gateway, sent through a [`GatewayHandle`].
#[derive(Debug)]
pub enum Command {
    /// Open a host listening socket; the result says whether it could be bound.
    Publish(Published, std::sync::mpsc::Sender<io::Result<()>>),
    /// Close the listening socket of this protocol and host port (connections stay).
    Unpublish(PortProto, u16),
}

/// Changes published ports of a running gateway (from any thread).
#[derive(Clone, Debug)]
pub struct GatewayHandle {
    tx: std::sync::mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    /// Why the gateway's loop returned, once it has.
    ended: Arc<std::sync::OnceLock<String>>,
}

impl GatewayHandle {
    /// Whether the gateway's loop still runs; why it ended otherwise.
    pub fn health(&self) -> Result<(), String> {
        self.ended.get().map_or(Ok(()), |why| Err(why.clone()))
    }

    /// Publishes a host port now; fails when it cannot be bound (in use, not allowed).
    pub fn publish(&self, p: Published) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Command::Publish(p, tx))?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| io::Error::other("the socket gateway did not answer"))?
    }

    /// Stops listening on a published host port.
    pub fn unpublish(&self, proto: PortProto, host_port: u16) -> io::Result<()> {
        self.send(Command::Unpublish(proto, host_port))
    }

    fn send(&self, c: Command) -> io::Result<()> {
        self.tx
            .send(c)
            .map_err(|_| io::Error::other("the socket gateway has stopped"))?;
        self.waker.wake()
    }
}

/// The socket gateway. Build it with [`SocketGateway::new`], keep [`SocketGateway::counters`],
/// then hand it to a thread with [`SocketGateway::run`].
pub struct SocketGateway {
    ctx: Ctx,
    iface: Interface,
    tcp: TcpFlows,
    dgram: DgramFlows,
    listeners: Listeners,
    commands: std::sync::mpsc::Receiver<Command>,
    handle: GatewayHandle,
}

impl SocketGateway {
    /// Sets up the TCP/IP engine and the published ports' host sockets (bound and listening here,
    /// so a port in use fails now, not later).
    pub fn new(config: GatewayConfig, sockets: Box<dyn HostSockets>) -> io::Result<Self> {
        if !(576..=65535).contains(&config.mtu) {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("mtu {} out of range: use 576..=65535", config.mtu),
            ));
        }
        if config.tcp_buffer < 4096 {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "tcp_buffer too small: use at least 4096 bytes (1-4 MiB for speed)",
            ));
        }
        let tcp = TcpFlows::new(config.tcp_buffer);
        let mut ctx = Ctx::new(config, sockets)?;
        let mut icfg = Config::new(HardwareAddress::Ip);
        icfg.random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        let mut iface = Interface::new(icfg, &mut ctx.dev, Instant::now());
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(INTERNAL_ADDR), 32));
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(INTERNAL_ADDR6), 128));
        });
        let routes = iface.routes_mut();
        routes
            .add_default_ipv4_route(INTERNAL_ADDR)
            .and_then(|_| routes.add_default_ipv6_route(INTERNAL_ADDR6))
            .map_err(|_| io::Error::other("smoltcp route table full"))?;

        let mut listeners = Listeners::new();
        for p in &ctx.cfg.published {
            listeners.publish(&ctx, p)?;
        }

        let waker = Arc::new(mio::Waker::new(ctx.poll.registry(), WAKE)?);
        let (tx, commands) = std::sync::mpsc::channel();
        Ok(SocketGateway {
            ctx,
            iface,
            tcp,
            dgram: DgramFlows::new(),
            listeners,
            commands,
            handle: GatewayHandle {
                tx,
                waker,
                ended: Arc::default(),
            },
        })
    }

    /// A handle to publish and unpublish host ports while the gateway runs.
    pub fn handle(&self) -> GatewayHandle {
        self.handle.clone()
    }

    fn apply_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Publish(p, reply) => {
                    let _ = reply.send(self.listeners.publish(&self.ctx, &p));
                }
                Command::Unpublish(proto, host_port) => self.listeners.unpublish(proto, host_port),
            }
        }
    }

    /// The gateway's counters; the handle stays valid (and live) while and after `run` runs.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.ctx.counters)
    }

    /// The host addresses of the published ports, in configuration order (useful with port 0).
    pub fn published_addrs(&self) -> Vec<io::Result<SocketAddr>> {
        self.listeners.addrs()
    }

    /// Serves frames on `link` until `stop` is set or the switch closes its end.
    ///
    /// `link` carries one Ethernet frame per message and must keep message boundaries: a
    /// `SOCK_SEQPACKET` socketpair end (wrap its `OwnedFd` with `UnixDatagram::from`; std's
    /// `send`/`recv` are plain `send(2)`/`recv(2)`) or a connected `SOCK_DGRAM` one. Frames from the
    /// switch must come from `mac`; frames to it go to `mac` from `gateway_mac`.
    ///
    /// Returns an error only when the link fails; host socket errors end their flow.
    pub fn run(self, link: UnixDatagram, stop: Arc<AtomicBool>) -> io::Result<()> {
        let ended = Arc::clone(&self.handle.ended);
        let result = self.serve(link, &stop);
        let _ = ended.set(match &result {
            Ok(()) if stop.load(std::sync::atomic::Ordering::Relaxed) => "stopped".into(),
            Ok(()) => "its loop returned".into(),
            Err(e) => format!("its link failed: {e}"),
        });
        result
    }

    fn serve(mut self, link: UnixDatagram, stop: &AtomicBool) -> io::Result<()> {
        link.set_nonblocking(true)?;
        // Best effort: a bigger send buffer lets more 64 KiB frames wait in the kernel.
        let _ = SockRef::from(&link).set_send_buffer_size(4 << 20);
        let mut link = MioUnixDatagram::from_std(link);
        self.ctx.poll.registry().register(
            &mut link,
            LINK,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut events = Events::with_capacity(256);
        // One byte more than the largest frame, so an oversized message shows as such.
        let mut frame_buf = vec![0u8; self.ctx.cfg.mtu + ETH_HEADER_LEN + 4 + 1];
        let mut link_readable = true;
        let mut link_writable = true;
        let mut busy = true;
        let mut next_maintenance = StdInstant::now() + Duration::from_secs(1);

        while !stop.load(Ordering::Relaxed) {
            let timeout = if busy || link_readable || (link_writable && !self.ctx.dev.tx.is_empty())
            {
                Duration::ZERO
            } else {
                self.iface
                    .poll_delay(Instant::now(), self.tcp.sockets())
                    .map(|d| Duration::from_micros(d.total_micros()))
                    .unwrap_or(MAX_WAIT)
                    .min(MAX_WAIT)
            };
            match self.ctx.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                let Token(t) = ev.token();
                if ev.token() == WAKE {
                    self.apply_commands();
                } else if t == LINK.0 {
                    link_readable |= ev.is_readable();
                    link_writable |= ev.is_writable();
                    if ev.is_read_closed() || ev.is_error() {
                        tracing::debug!("sockgw: the switch closed the link");
                        return Ok(());
                    }
                } else if let Some(slot) = Listeners::slot_of(t) {
                    self.on_listener(slot);
                } else {
                    self.on_host_event(t, ev.is_readable(), ev.is_writable());
                }
            }

            if link_readable {
                for _ in 0..LINK_BATCH {
                    match link.recv(&mut frame_buf) {
                        Ok(n) => self.on_frame(frame_buf.get(..n).unwrap_or(&[]), n),
                        Err(e) if would_block(&e) => {
                            link_readable = false;
                            break;
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }

            busy = self.service();
            let now = StdInstant::now();
            if now >= next_maintenance {
                self.maintenance(now);
                next_maintenance = now + Duration::from_secs(1);
            }

            // Flush, and let smoltcp fill the freed room while the link keeps taking frames.
            for _ in 0..MAX_ROUNDS {
                let was_full = !self.ctx.dev.tx_has_room();
                if !link_writable || !self.flush(&link, &mut link_writable)? {
                    break;
                }
                if !was_full {
                    break;
                }
                busy |= self.service();
            }
        }
        Ok(())
    }

    /// Sends queued frames; returns false when the switch's end is gone (run ends).
    fn flush(&mut self, link: &MioUnixDatagram, link_writable: &mut bool) -> io::Result<bool> {
        let tx = &mut self.ctx.dev.tx;
        let c = &self.ctx.counters;
        while let Some(frame) = tx.front() {
            match link.send(frame) {
                Ok(_) => {
                    Counters::inc(&c.frames_tx);
                    tx.pop_front();
                }
                Err(e) if would_block(&e) => {
                    *link_writable = false;
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::BrokenPipe
                            | ErrorKind::ConnectionRefused
                            | ErrorKind::ConnectionReset
                            | ErrorKind::NotConnected
                    ) =>
                {
                    return Ok(false);
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS)) => {
                    Counters::inc(&c.drop_link_tx);
                    tx.pop_front();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// One frame from the switch. `n` is the message length (may exceed the buffer's frame limit).
    fn on_frame(&mut self, frame: &[u8], n: usize) {
        let ctx = &mut self.ctx;
        let c = Arc::clone(&ctx.counters);
        Counters::inc(&c.frames_rx);
        if n > ctx.cfg.mtu + ETH_HEADER_LEN + 4 {
            Counters::inc(&c.drop_malformed);
            return;
        }
        let parsed = match frames::parse(frame, &ctx.cfg) {
            Ok(p) => p,
            Err(DropReason::Malformed) => return Counters::inc(&c.drop_malformed),
            Err(DropReason::NotForUs) => return Counters::inc(&c.drop_not_for_us),
            Err(DropReason::Unsupported) => return Counters::inc(&c.drop_unsupported),
        };
        match parsed {
            Parsed::Arp(req) => {
                Counters::inc(&c.arp_rx);
                if let Some(reply) = req.and_then(|r| frames::arp_reply(&ctx.cfg, &r)) {
                    Counters::inc(&c.arp_replies);
                    ctx.dev.tx.push_back(reply);
                }
            }
            Parsed::Ndp(ns) => {
                Counters::inc(&c.ndp_rx);
                if let Some(reply) = ns.and_then(|ns| frames::neighbor_advertisement(&ctx.cfg, &ns))
                {
                    Counters::inc(&c.ndp_replies);
                    ctx.dev.tx.push_back(reply);
                }
            }
            Parsed::Tcp {
                src,
                dst,
                syn_only,
                seq,
                seg_len,
            } => {
                let seg = Segment {
                    key: FlowKey {
                        inner: src,
                        outer: dst,
                    },
                    syn_only,
                    seq,
                    seg_len,
                };
                self.tcp.on_segment(ctx, seg, frame);
            }
            Parsed::Udp { src, dst, payload } => {
                // A reply to a client of a published UDP port goes out through that port's socket.
                if !self.listeners.reply(ctx, src.port(), dst, payload) {
                    self.dgram.udp_out(ctx, src, dst, payload);
                }
            }
            Parsed::IcmpEcho {
                dst,
                ident,
                message,
            } => self.dgram.icmp_out(ctx, dst, ident, message),
        }
    }

    fn on_host_event(&mut self, tok: usize, readable: bool, writable: bool) {
        if self
            .tcp
            .on_host_event(&mut self.ctx, &mut self.iface, tok, readable, writable)
        {
            return;
        }
        if readable && self.dgram.contains(tok) {
            self.dgram.on_readable(&mut self.ctx, tok);
        }
    }

    fn on_listener(&mut self, slot: usize) {
        if !self.listeners.is_tcp(slot) {
            return self.listeners.udp_in(&mut self.ctx, slot);
        }
        loop {
            match self.listeners.accept(slot) {
                Accept::Conn { stream, peer, port } => {
                    self.tcp
                        .adopt(&mut self.ctx, &mut self.iface, stream, peer, port)
                }
                Accept::Again => {}
                Accept::Done => return,
            }
        }
    }

    /// Runs smoltcp and the relay until nothing moves (bounded). Returns true if work may remain.
    ///
    /// Ingress, relay, then egress: the ACKs smoltcp sends then advertise the window after the
    /// relay has drained the receive buffers into the host sockets, and carry the host's data.
    /// (ACKing first would advertise a closed window; a peer that sends its FIN into it has the
    /// FIN dropped and waits a retransmission timeout.)
    fn service(&mut self) -> bool {
        let now = Instant::now();
        self.iface.poll_maintenance(now);
        let mut more = true;
        for _ in 0..MAX_ROUNDS {
            while !matches!(
                self.iface
                    .poll_ingress_single(now, &mut self.ctx.dev, self.tcp.sockets_mut()),
                PollIngressSingleResult::None
            ) {}
            let progress = self.tcp.pump_all(&self.ctx.counters);
            while !matches!(
                self.iface
                    .poll_egress(now, &mut self.ctx.dev, self.tcp.sockets_mut()),
                PollResult::None
            ) {}
            if !progress {
                more = false;
                break;
            }
        }
        self.tcp.reap(&mut self.ctx);
        more
    }

    /// The once-a-second timers: connect timeouts and idle datagram flows.
    fn maintenance(&mut self, now: StdInstant) {
        self.tcp.expire(&mut self.ctx, now);
        self.dgram.expire(&mut self.ctx, now);
        self.listeners.expire(&self.ctx, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direct;
    use crate::ctx::tests::{G, U};
    use packet::MacAddr;

    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0f]);
    const GW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn gateway() -> SocketGateway {
        let mut cfg = GatewayConfig::new(U, MAC, GW_MAC);
        cfg.host_loopback = Some(G);
        SocketGateway::new(cfg, Box::new(Direct)).unwrap()
    }

    #[test]
    fn new_refuses_a_bad_mtu_or_a_small_tcp_buffer() {
        for mtu in [575, 65536] {
            let mut cfg = GatewayConfig::new(U, MAC, GW_MAC);
            cfg.mtu = mtu;
            let e = SocketGateway::new(cfg, Box::new(Direct)).err().unwrap();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "mtu {mtu}");
        }
        let mut cfg = GatewayConfig::new(U, MAC, GW_MAC);
        cfg.tcp_buffer = 4095;
        let e = SocketGateway::new(cfg, Box::new(Direct)).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn every_frame_lands_in_one_counter() {
        let mut gw = gateway();
        let arp = testkit::frames::arp_request(MAC, U, Ipv4Addr::new(192, 0, 2, 1));
        gw.on_frame(&arp, arp.len());
        let s = gw.ctx.counters.snapshot();
        assert_eq!((s.arp_rx, s.arp_replies), (1, 1));
        let reply = gw.ctx.dev.tx.pop_front().unwrap();
        assert_eq!(&reply[0..6], &MAC.0, "to the asker");
        assert_eq!(&reply[6..12], &GW_MAC.0, "from the gateway");

        // A message longer than any frame is malformed, whatever it holds.
        gw.on_frame(&arp, gw.ctx.cfg.mtu + ETH_HEADER_LEN + 5);
        // Not addressed to the gateway's MAC.
        let other = testkit::frames::udp(MAC, MAC, U, G, 1, 2, b"x");
        gw.on_frame(&other, other.len());
        // A SYN to the host's loopback (not mapped): refused with a RST.
        let syn = testkit::frames::tcp(
            MAC,
            GW_MAC,
            U,
            Ipv4Addr::LOCALHOST,
            40000,
            22,
            1,
            0,
            0x02,
            b"",
        );
        gw.on_frame(&syn, syn.len());
        let s = gw.ctx.counters.snapshot();
        assert_eq!(s.frames_rx, 4);
        assert_eq!((s.drop_malformed, s.drop_not_for_us), (1, 1));
        assert_eq!((s.tcp_rx, s.tcp_refused), (1, 1));
        assert_eq!(s.frames_rx, s.rx_handled() + s.rx_dropped(), "{s:#?}");
        assert_eq!(gw.ctx.dev.tx.len(), 1, "the RST");
    }

    #[test]
    fn ipv6_solicitations_are_answered_and_counted() {
        let mut cfg = GatewayConfig::new(U, MAC, GW_MAC);
        let u6: Ipv6Addr = "fd00:7673:ffff::2".parse().unwrap();
        let next_hop: Ipv6Addr = "fd00:7673:ffff::1".parse().unwrap();
        cfg.ipv6 = Some(crate::GatewayV6::new(u6));
        let mut gw = SocketGateway::new(cfg, Box::new(Direct)).unwrap();
        let ns = testkit::frames::neighbor_solicitation(MAC, u6, next_hop);
        gw.on_frame(&ns, ns.len());
        let dad = testkit::frames::neighbor_solicitation(MAC, Ipv6Addr::UNSPECIFIED, u6);
        gw.on_frame(&dad, dad.len());
        // An IPv6 SYN to the host's ::1 (not mapped): refused with an IPv6 RST.
        let syn = testkit::frames::tcp6(
            MAC,
            GW_MAC,
            u6,
            Ipv6Addr::LOCALHOST,
            40000,
            22,
            1,
            0,
            0x02,
            b"",
        );
        gw.on_frame(&syn, syn.len());
        let s = gw.ctx.counters.snapshot();
        assert_eq!((s.ndp_rx, s.ndp_replies), (2, 1), "{s:#?}");
        assert_eq!((s.tcp_rx, s.tcp_refused), (1, 1));
        assert_eq!(s.frames_rx, s.rx_handled() + s.rx_dropped(), "{s:#?}");
        let na = gw.ctx.dev.tx.pop_front().unwrap();
        assert_eq!(&na[0..6], &MAC.0, "to the switch");
        assert_eq!(&na[22..38], &next_hop.octets(), "from the target");
        let rst = gw.ctx.dev.tx.pop_front().unwrap();
        assert_eq!(&rst[12..14], &[0x86, 0xdd]);
        assert!(gw.ctx.dev.tx.is_empty());
    }

    #[test]
    fn commands_publish_refuse_a_port_in_use_and_unpublish() {
        let mut gw = gateway();
        let p = Published {
            proto: PortProto::Tcp,
            host_addr: Ipv4Addr::LOCALHOST.into(),
            host_port: 0,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        gw.handle.tx.send(Command::Publish(p, tx.clone())).unwrap();
        gw.apply_commands();
        rx.try_recv().unwrap().unwrap();
        let port = gw.published_addrs()[0].as_ref().unwrap().port();

        let again = Published {
            host_port: port,
            ..p
        };
        gw.handle.tx.send(Command::Publish(again, tx)).unwrap();
        gw.apply_commands();
        let e = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse);
        assert_eq!(gw.published_addrs().len(), 1);

        gw.handle
            .tx
            .send(Command::Unpublish(PortProto::Tcp, port))
            .unwrap();
        gw.apply_commands();
        assert!(gw.published_addrs()[0].is_err());
        // The port is free again.
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn a_handle_reports_a_stopped_gateway() {
        let gw = gateway();
        let h = gw.handle();
        drop(gw);
        let e = h.unpublish(PortProto::Udp, 53).unwrap_err();
        assert!(e.to_string().contains("stopped"), "{e}");
    }
}
