//! The gateway's event loop: the link, the host sockets, smoltcp and the flow tables.
//!
//! One thread owns everything here. mio is edge-triggered, so each host socket carries
//! `readable`/`writable` flags that are set by events and cleared only on `WouldBlock`; the relay
//! (`pump`) runs over every open TCP flow after each smoltcp poll and moves data only while the
//! other side has room, which is the backpressure: nothing is buffered beyond the two smoltcp
//! buffers of a connection and the kernel's socket buffers.
//!
//! TCP flow lifecycle (switch → host): SYN from U:p to D:dp → host `connect` to D:dp starts, the
//! SYN is kept (retransmissions are dropped) → connect fails: RST to U:p, flow gone; connect
//! succeeds: a smoltcp socket listening on exactly D:dp is added and the kept SYN is fed to it
//! alone, so the handshake completes → relay → FIN each way as each side reaches EOF → freed once
//! smoltcp is in CLOSED/TIME-WAIT and its receive buffer is drained; a reset or error on either
//! side resets the other (RST to the host through `SO_LINGER` 0).
//!
//! Published TCP: an accepted host connection from C:cp becomes a smoltcp socket connecting from
//! C:cp (any local address is allowed: the interface runs with `any_ip` and smoltcp's `connect`
//! takes an explicit local endpoint) to U:host_port, then the same relay.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use mio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram as MioUnixDatagram};
use mio::{Events, Interest, Poll, Token};
use packet::ETH_HEADER_LEN;
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use socket2::{Domain, Protocol, SockAddr, SockRef, Type};

use crate::counters::Counters;
use crate::device::FrameQueues;
use crate::frames::{self, DropReason, Parsed};
use crate::{CONNECT_TIMEOUT, DATAGRAM_IDLE_TIMEOUT, GatewayConfig, HostSockets, Proto, Published};

const LINK: Token = Token(0);
const FIRST_LISTENER: usize = 1;
/// Flow tokens start here and are never reused, so a late event cannot hit a newer flow.
const FIRST_FLOW: usize = 1 << 20;
/// Frames read from the link per loop turn, so host sockets are not starved.
const LINK_BATCH: usize = 64;
/// Longest sleep: bounds how late `stop` is noticed.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// smoltcp poll/relay rounds per loop turn.
const MAX_ROUNDS: usize = 8;
/// UDP/ICMP replies are dropped (not queued) beyond this many frames waiting for the link.
const DGRAM_TX_LIMIT: usize = 4 * crate::device::TX_QUEUE_LIMIT;
/// The interface's own address. It is never seen on the wire: with `any_ip` smoltcp accepts every
/// destination, and the default route through this address is what lets it answer them.
const INTERNAL_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 255, 254);
/// smoltcp aborts a connection whose data goes unacknowledged this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(120);

/// Flow identity as seen from the switch: `inner` is the U side, `outer` the far side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    inner: SocketAddrV4,
    outer: SocketAddrV4,
}

enum TcpPhase {
    /// Host connect in progress; the container's SYN waits here.
    Connecting {
        syn: Vec<u8>,
        since: StdInstant,
        seq: u32,
        seg_len: u32,
    },
    Open(SocketHandle),
}

struct TcpFlow {
    key: FlowKey,
    host: TcpStream,
    phase: TcpPhase,
    readable: bool,
    writable: bool,
    /// The host sent FIN (read returned 0); smoltcp was told to close.
    host_eof: bool,
    /// The container's FIN was passed on with `shutdown(Write)`.
    host_shut_wr: bool,
    /// A host error or reset: smoltcp was aborted.
    failed: bool,
}

#[derive(Clone, Copy)]
enum DgramKind {
    Udp,
    /// ICMP echo; the kernel replaces the identifier with its own, this is the container's.
    Icmp {
        ident: u16,
    },
}

struct DgramFlow {
    key: FlowKey,
    kind: DgramKind,
    sock: UdpSocket,
    last: StdInstant,
}

enum Listener {
    Tcp(TcpListener, u16),
    Udp(UdpSocket, u16),
    /// Unpublished: the slot stays so that listener indexes (tokens) never move.
    Closed,
}

/// Token of the waker that announces commands.
const WAKE: Token = Token(usize::MAX);

/// A change to a running gateway, sent through a [`GatewayHandle`].
#[derive(Debug)]
pub enum Command {
    /// Open a host listening socket; the result says whether it could be bound.
    Publish(Published, std::sync::mpsc::Sender<io::Result<()>>),
    /// Close the listening socket of this protocol and host port (connections stay).
    Unpublish(Proto, u16),
}

/// Changes published ports of a running gateway (from any thread).
#[derive(Clone, Debug)]
pub struct GatewayHandle {
    tx: std::sync::mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

impl GatewayHandle {
    /// Publishes a host port now; fails when it cannot be bound (in use, not allowed).
    pub fn publish(&self, p: Published) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Command::Publish(p, tx))?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| io::Error::other("the socket gateway did not answer"))?
    }

    /// Stops listening on a published host port.
    pub fn unpublish(&self, proto: Proto, host_port: u16) -> io::Result<()> {
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
    cfg: GatewayConfig,
    hs: Box<dyn HostSockets>,
    counters: Arc<Counters>,
    poll: Poll,
    iface: Interface,
    dev: FrameQueues,
    sockets: SocketSet<'static>,
    tcp: HashMap<usize, TcpFlow>,
    tcp_by_key: HashMap<FlowKey, usize>,
    dgram: HashMap<usize, DgramFlow>,
    /// Keyed by (is ICMP, key).
    dgram_by_key: HashMap<(bool, FlowKey), usize>,
    listeners: Vec<Listener>,
    commands: std::sync::mpsc::Receiver<Command>,
    handle: GatewayHandle,
    /// Clients of published UDP ports: (host port, client) → (listener index, last activity).
    pub_udp: HashMap<(u16, SocketAddrV4), (usize, StdInstant)>,
    next_token: usize,
    scratch: Vec<u8>,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
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
        let poll = Poll::new()?;
        let mut dev = FrameQueues::new(config.gateway_mac, config.mac, config.mtu);
        let mut icfg = Config::new(HardwareAddress::Ip);
        icfg.random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        let mut iface = Interface::new(icfg, &mut dev, Instant::now());
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(INTERNAL_ADDR), 32));
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(INTERNAL_ADDR)
            .map_err(|_| io::Error::other("smoltcp route table full"))?;

        let mut listeners = Vec::with_capacity(config.published.len());
        for (i, p) in config.published.iter().enumerate() {
            let mut l = open_listener(sockets.as_ref(), p)?;
            let token = Token(FIRST_LISTENER + i);
            match &mut l {
                Listener::Tcp(s, _) => poll.registry().register(s, token, Interest::READABLE)?,
                Listener::Udp(s, _) => poll.registry().register(s, token, Interest::READABLE)?,
                Listener::Closed => {}
            }
            listeners.push(l);
        }

        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        let (tx, commands) = std::sync::mpsc::channel();
        Ok(SocketGateway {
            commands,
            handle: GatewayHandle { tx, waker },
            cfg: config,
            hs: sockets,
            counters: Arc::new(Counters::default()),
            poll,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            tcp: HashMap::new(),
            tcp_by_key: HashMap::new(),
            dgram: HashMap::new(),
            dgram_by_key: HashMap::new(),
            listeners,
            pub_udp: HashMap::new(),
            next_token: FIRST_FLOW,
            scratch: vec![0u8; 65536],
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
                    let token = Token(FIRST_LISTENER + self.listeners.len());
                    let opened = open_listener(self.hs.as_ref(), &p).and_then(|mut l| {
                        match &mut l {
                            Listener::Tcp(s, _) => {
                                self.poll
                                    .registry()
                                    .register(s, token, Interest::READABLE)?
                            }
                            Listener::Udp(s, _) => {
                                self.poll
                                    .registry()
                                    .register(s, token, Interest::READABLE)?
                            }
                            Listener::Closed => {}
                        }
                        self.listeners.push(l);
                        Ok(())
                    });
                    let _ = reply.send(opened);
                }
                Command::Unpublish(proto, host_port) => {
                    for l in &mut self.listeners {
                        let hit = match (l as &Listener, proto) {
                            (Listener::Tcp(_, p), Proto::Tcp)
                            | (Listener::Udp(_, p), Proto::Udp) => *p == host_port,
                            _ => false,
                        };
                        if hit {
                            // Dropping the socket deregisters it from the poll.
                            *l = Listener::Closed;
                        }
                    }
                }
            }
        }
    }

    /// The gateway's counters; the handle stays valid (and live) while and after `run` runs.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// The host addresses of the published ports, in configuration order (useful with port 0).
    pub fn published_addrs(&self) -> Vec<io::Result<SocketAddr>> {
        self.listeners
            .iter()
            .map(|l| match l {
                Listener::Tcp(s, _) => s.local_addr(),
                Listener::Udp(s, _) => s.local_addr(),
                Listener::Closed => Err(io::Error::other("unpublished")),
            })
            .collect()
    }

    /// Serves frames on `link` until `stop` is set or the switch closes its end.
    ///
    /// `link` carries one Ethernet frame per message and must keep message boundaries: a
    /// `SOCK_SEQPACKET` socketpair end (wrap its `OwnedFd` with `UnixDatagram::from`; std's
    /// `send`/`recv` are plain `send(2)`/`recv(2)`) or a connected `SOCK_DGRAM` one. Frames from the
    /// switch must come from `mac`; frames to it go to `mac` from `gateway_mac`.
    ///
    /// Returns an error only when the link fails; host socket errors end their flow.
    pub fn run(mut self, link: UnixDatagram, stop: Arc<AtomicBool>) -> io::Result<()> {
        link.set_nonblocking(true)?;
        // Best effort: a bigger send buffer lets more 64 KiB frames wait in the kernel.
        let _ = SockRef::from(&link).set_send_buffer_size(4 << 20);
        let mut link = MioUnixDatagram::from_std(link);
        self.poll
            .registry()
            .register(&mut link, LINK, Interest::READABLE | Interest::WRITABLE)?;
        let mut events = Events::with_capacity(256);
        // One byte more than the largest frame, so an oversized message shows as such.
        let mut frame_buf = vec![0u8; self.cfg.mtu + ETH_HEADER_LEN + 4 + 1];
        let mut link_readable = true;
        let mut link_writable = true;
        let mut busy = true;
        let mut next_maintenance = StdInstant::now() + Duration::from_secs(1);

        while !stop.load(Ordering::Relaxed) {
            let timeout = if busy || link_readable || (link_writable && !self.dev.tx.is_empty()) {
                Duration::ZERO
            } else {
                self.iface
                    .poll_delay(Instant::now(), &self.sockets)
                    .map(|d| Duration::from_micros(d.total_micros()))
                    .unwrap_or(MAX_WAIT)
                    .min(MAX_WAIT)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
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
                } else if t < FIRST_FLOW {
                    self.on_listener(t - FIRST_LISTENER);
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
                let was_full = !self.dev.tx_has_room();
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
        while let Some(frame) = self.dev.tx.front() {
            match link.send(frame) {
                Ok(_) => {
                    Counters::inc(&self.counters.frames_tx);
                    self.dev.tx.pop_front();
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
                    Counters::inc(&self.counters.drop_link_tx);
                    self.dev.tx.pop_front();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The host address a flow to `dst:port` is made to, or `None` for a destination a
    /// container must not reach through host sockets: the host's own loopback (reachable only
    /// through the `host_loopback` mapping, or a loopback resolver on port 53 that the switch
    /// forwards DNS to), and addresses no ordinary packet goes to.
    fn host_target(&self, dst: Ipv4Addr, port: u16) -> Option<Ipv4Addr> {
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

    fn token(&mut self) -> usize {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    fn push_dgram_frame(&mut self, frame: Option<Vec<u8>>) {
        match frame {
            None => Counters::inc(&self.counters.drop_too_big),
            Some(_) if self.dev.tx.len() >= DGRAM_TX_LIMIT => {
                Counters::inc(&self.counters.drop_link_tx)
            }
            Some(f) => self.dev.tx.push_back(f),
        }
    }

    /// One frame from the switch. `n` is the message length (may exceed the buffer's frame limit).
    fn on_frame(&mut self, frame: &[u8], n: usize) {
        let c = Arc::clone(&self.counters);
        Counters::inc(&c.frames_rx);
        if n > self.cfg.mtu + ETH_HEADER_LEN + 4 {
            Counters::inc(&c.drop_malformed);
            return;
        }
        let parsed = match frames::parse(frame, &self.cfg) {
            Ok(p) => p,
            Err(DropReason::Malformed) => return Counters::inc(&c.drop_malformed),
            Err(DropReason::NotForUs) => return Counters::inc(&c.drop_not_for_us),
            Err(DropReason::Unsupported) => return Counters::inc(&c.drop_unsupported),
        };
        match parsed {
            Parsed::Arp(req) => {
                Counters::inc(&c.arp_rx);
                if let Some(reply) = req.and_then(|r| frames::arp_reply(&self.cfg, &r)) {
                    Counters::inc(&c.arp_replies);
                    self.dev.tx.push_back(reply);
                }
            }
            Parsed::Tcp {
                src,
                dst,
                syn_only,
                seq,
                seg_len,
            } => {
                let key = FlowKey {
                    inner: src,
                    outer: dst,
                };
                let connecting = self
                    .tcp_by_key
                    .get(&key)
                    .and_then(|t| self.tcp.get(t))
                    .map(|f| matches!(f.phase, TcpPhase::Connecting { .. }));
                match connecting {
                    Some(true) if syn_only => Counters::inc(&c.drop_syn_pending),
                    None if syn_only => {
                        Counters::inc(&c.tcp_rx);
                        self.start_connect(key, frame, seq, seg_len);
                    }
                    // Known flows, and stray segments smoltcp answers with RST.
                    _ => {
                        Counters::inc(&c.tcp_rx);
                        self.dev.rx.push_back(frame.to_vec());
                    }
                }
            }
            Parsed::Udp { src, dst, payload } => self.udp_out(src, dst, payload),
            Parsed::IcmpEcho {
                dst,
                ident,
                message,
            } => self.icmp_out(dst, ident, message),
        }
    }

    fn refuse(&mut self, key: FlowKey, seq: u32, seg_len: u32) {
        Counters::inc(&self.counters.tcp_refused);
        if let Some(rst) = frames::tcp_rst(&self.cfg, key.outer, key.inner, seq, seg_len) {
            self.dev.tx.push_back(rst);
        }
    }

    fn start_connect(&mut self, key: FlowKey, syn: &[u8], seq: u32, seg_len: u32) {
        let Some(addr) = self.host_target(*key.outer.ip(), key.outer.port()) else {
            // Refused like a closed port (counted as tcp_refused).
            return self.refuse(key, seq, seg_len);
        };
        let target = SocketAddrV4::new(addr, key.outer.port());
        let sock = (|| {
            let s = self
                .hs
                .socket(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            s.set_nonblocking(true)?;
            s.set_tcp_nodelay(true)?;
            match s.connect(&SockAddr::from(target)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            Ok(s)
        })();
        let mut host = match sock {
            Ok(s) => TcpStream::from_std(std::net::TcpStream::from(s)),
            Err(e) => {
                tracing::debug!("sockgw: connect to {target} failed: {e}");
                return self.refuse(key, seq, seg_len);
            }
        };
        let tok = self.token();
        if self
            .poll
            .registry()
            .register(
                &mut host,
                Token(tok),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return self.refuse(key, seq, seg_len);
        }
        self.tcp_by_key.insert(key, tok);
        self.tcp.insert(
            tok,
            TcpFlow {
                key,
                host,
                phase: TcpPhase::Connecting {
                    syn: syn.to_vec(),
                    since: StdInstant::now(),
                    seq,
                    seg_len,
                },
                readable: false,
                writable: false,
                host_eof: false,
                host_shut_wr: false,
                failed: false,
            },
        );
    }

    fn new_tcp_socket(&self) -> tcp::Socket<'static> {
        let n = self.cfg.tcp_buffer;
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; n]),
            tcp::SocketBuffer::new(vec![0u8; n]),
        );
        // Latency over segment count: data is relayed as it comes, like a kernel socket with
        // TCP_NODELAY, and ACKs go out at once so the peer's window keeps moving.
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s.set_timeout(Some(smoltcp::time::Duration::from_secs(
            TCP_TIMEOUT.as_secs(),
        )));
        s
    }

    fn on_host_event(&mut self, tok: usize, readable: bool, writable: bool) {
        if let Some(flow) = self.tcp.get_mut(&tok) {
            flow.readable |= readable;
            flow.writable |= writable;
            if matches!(flow.phase, TcpPhase::Connecting { .. }) {
                self.finish_connect(tok);
            }
        } else if readable && self.dgram.contains_key(&tok) {
            self.dgram_in(tok);
        }
    }

    fn finish_connect(&mut self, tok: usize) {
        let Some(flow) = self.tcp.get_mut(&tok) else {
            return;
        };
        let connected = match flow.host.take_error() {
            Ok(None) => match flow.host.peer_addr() {
                Ok(_) => true,
                // Not yet: a spurious wakeup.
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(_) => false,
            },
            _ => false,
        };
        let TcpPhase::Connecting {
            syn, seq, seg_len, ..
        } = std::mem::replace(
            &mut flow.phase,
            TcpPhase::Connecting {
                syn: Vec::new(),
                since: StdInstant::now(),
                seq: 0,
                seg_len: 0,
            },
        )
        else {
            return;
        };
        let key = flow.key;
        if !connected {
            self.remove_tcp(tok, false);
            return self.refuse(key, seq, seg_len);
        }
        let mut sock = self.new_tcp_socket();
        let ep = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*key.outer.ip())),
            port: key.outer.port(),
        };
        if sock.listen(ep).is_err() {
            self.remove_tcp(tok, false);
            return self.refuse(key, seq, seg_len);
        }
        let h = self.sockets.add(sock);
        if let Some(flow) = self.tcp.get_mut(&tok) {
            flow.phase = TcpPhase::Open(h);
        }
        Counters::inc(&self.counters.tcp_opened);
        // Feed the SYN on its own: other listening sockets of the same port could take it
        // otherwise, and this socket must not take another flow's SYN.
        let others = std::mem::take(&mut self.dev.rx);
        self.dev.rx.push_back(syn);
        self.iface
            .poll(Instant::now(), &mut self.dev, &mut self.sockets);
        self.dev.rx = others;
    }

    /// Frees a TCP flow; `graceful` false resets the host side (SO_LINGER 0).
    fn remove_tcp(&mut self, tok: usize, graceful: bool) {
        let Some(mut flow) = self.tcp.remove(&tok) else {
            return;
        };
        self.tcp_by_key.remove(&flow.key);
        if !graceful {
            let _ = SockRef::from(&flow.host).set_linger(Some(Duration::ZERO));
        }
        let _ = self.poll.registry().deregister(&mut flow.host);
        if let TcpPhase::Open(h) = flow.phase {
            self.sockets.remove(h);
            Counters::inc(&self.counters.tcp_closed);
            if !graceful {
                Counters::inc(&self.counters.tcp_reset);
            }
        }
    }

    fn on_listener(&mut self, idx: usize) {
        match self.listeners.get(idx) {
            Some(Listener::Tcp(..)) => self.accept_tcp(idx),
            Some(Listener::Udp(..)) => self.published_udp_in(idx),
            Some(Listener::Closed) | None => {}
        }
    }

    fn accept_tcp(&mut self, idx: usize) {
        loop {
            let Some(Listener::Tcp(l, port)) = self.listeners.get(idx) else {
                return;
            };
            let port = *port;
            let (mut stream, peer) = match l.accept() {
                Ok(x) => x,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ECONNABORTED, EMFILE...: leave the rest for the next event.
                    tracing::debug!("sockgw: accept on port {port}: {e}");
                    return;
                }
            };
            let SocketAddr::V4(peer) = peer else {
                continue;
            };
            let key = FlowKey {
                inner: SocketAddrV4::new(self.cfg.address, port),
                outer: peer,
            };
            let mut sock = self.new_tcp_socket();
            let local = IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(*peer.ip())),
                port: peer.port(),
            };
            let remote = IpEndpoint::new(IpAddress::Ipv4(self.cfg.address), port);
            let tok = self.token();
            if self.tcp_by_key.contains_key(&key)
                || sock.connect(self.iface.context(), remote, local).is_err()
                || self
                    .poll
                    .registry()
                    .register(
                        &mut stream,
                        Token(tok),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_err()
            {
                let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                continue;
            }
            let h = self.sockets.add(sock);
            Counters::inc(&self.counters.tcp_published);
            self.tcp_by_key.insert(key, tok);
            self.tcp.insert(
                tok,
                TcpFlow {
                    key,
                    host: stream,
                    phase: TcpPhase::Open(h),
                    readable: true,
                    writable: true,
                    host_eof: false,
                    host_shut_wr: false,
                    failed: false,
                },
            );
        }
    }

    fn published_udp_in(&mut self, idx: usize) {
        let mut buf = std::mem::take(&mut self.scratch);
        while let Some(Listener::Udp(s, port)) = self.listeners.get(idx) {
            let port = *port;
            let (n, peer) = match s.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors from earlier sends surface here; they end nothing.
                Err(_) => continue,
            };
            let SocketAddr::V4(peer) = peer else {
                continue;
            };
            let now = StdInstant::now();
            if self.pub_udp.insert((port, peer), (idx, now)).is_none() {
                Counters::inc(&self.counters.udp_opened);
            }
            Counters::add(&self.counters.bytes_from_host, n as u64);
            let frame = frames::udp_frame(&self.cfg, peer, port, buf.get(..n).unwrap_or(&[]));
            self.push_dgram_frame(frame);
        }
        self.scratch = buf;
    }

    fn udp_out(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
        let c = Arc::clone(&self.counters);
        // A reply to a client of a published UDP port goes out through that port's socket.
        if let Some((idx, last)) = self.pub_udp.get_mut(&(src.port(), dst)) {
            *last = StdInstant::now();
            let sent = match self.listeners.get(*idx) {
                Some(Listener::Udp(s, _)) => s.send_to(payload, SocketAddr::V4(dst)).is_ok(),
                _ => false,
            };
            return self.count_send(sent, payload.len(), &c.udp_rx);
        }
        let key = FlowKey {
            inner: src,
            outer: dst,
        };
        let tok = match self.dgram_by_key.get(&(false, key)) {
            Some(t) => *t,
            None => {
                let Some(addr) = self.host_target(*dst.ip(), dst.port()) else {
                    return Counters::inc(&c.drop_forbidden);
                };
                let target = SocketAddrV4::new(addr, dst.port());
                match self.open_dgram(key, DgramKind::Udp, Protocol::UDP, target) {
                    Ok(t) => {
                        Counters::inc(&c.udp_opened);
                        t
                    }
                    Err(e) => {
                        tracing::debug!("sockgw: UDP socket to {target}: {e}");
                        return Counters::inc(&c.drop_host_send);
                    }
                }
            }
        };
        let sent = match self.dgram.get_mut(&tok) {
            Some(f) => {
                f.last = StdInstant::now();
                f.sock.send(payload).is_ok()
            }
            None => false,
        };
        self.count_send(sent, payload.len(), &c.udp_rx);
    }

    fn count_send(&self, sent: bool, len: usize, handled: &std::sync::atomic::AtomicU64) {
        if sent {
            Counters::inc(handled);
            Counters::add(&self.counters.bytes_to_host, len as u64);
        } else {
            Counters::inc(&self.counters.drop_host_send);
        }
    }

    fn icmp_out(&mut self, dst: Ipv4Addr, ident: u16, message: &[u8]) {
        let c = Arc::clone(&self.counters);
        let key = FlowKey {
            inner: SocketAddrV4::new(self.cfg.address, ident),
            outer: SocketAddrV4::new(dst, 0),
        };
        let tok = match self.dgram_by_key.get(&(true, key)) {
            Some(t) => *t,
            None => {
                let Some(addr) = self.host_target(dst, 0) else {
                    return Counters::inc(&c.drop_forbidden);
                };
                let target = SocketAddrV4::new(addr, 0);
                match self.open_dgram(key, DgramKind::Icmp { ident }, Protocol::ICMPV4, target) {
                    Ok(t) => {
                        Counters::inc(&c.icmp_opened);
                        t
                    }
                    // EACCES unless ping_group_range covers our group.
                    Err(_) => return Counters::inc(&c.drop_icmp_unavailable),
                }
            }
        };
        let sent = match self.dgram.get_mut(&tok) {
            Some(f) => {
                f.last = StdInstant::now();
                f.sock.send(message).is_ok()
            }
            None => false,
        };
        self.count_send(sent, message.len(), &c.icmp_rx);
    }

    fn open_dgram(
        &mut self,
        key: FlowKey,
        kind: DgramKind,
        proto: Protocol,
        target: SocketAddrV4,
    ) -> io::Result<usize> {
        let s = self.hs.socket(Domain::IPV4, Type::DGRAM, Some(proto))?;
        s.set_nonblocking(true)?;
        s.connect(&SockAddr::from(target))?;
        let mut sock = UdpSocket::from_std(std::net::UdpSocket::from(s));
        let tok = self.token();
        self.poll
            .registry()
            .register(&mut sock, Token(tok), Interest::READABLE)?;
        let is_icmp = matches!(kind, DgramKind::Icmp { .. });
        self.dgram_by_key.insert((is_icmp, key), tok);
        self.dgram.insert(
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

    fn dgram_in(&mut self, tok: usize) {
        let mut buf = std::mem::take(&mut self.scratch);
        while let Some(flow) = self.dgram.get_mut(&tok) {
            let n = match flow.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ECONNREFUSED and friends from ICMP errors: nothing to pass on (yet).
                Err(_) => continue,
            };
            flow.last = StdInstant::now();
            let (key, kind) = (flow.key, flow.kind);
            let data = buf.get(..n).unwrap_or(&[]);
            Counters::add(&self.counters.bytes_from_host, n as u64);
            let frame = match kind {
                DgramKind::Udp => frames::udp_frame(&self.cfg, key.outer, key.inner.port(), data),
                DgramKind::Icmp { ident } => {
                    match frames::icmp_echo_reply_frame(&self.cfg, *key.outer.ip(), ident, data) {
                        Some(f) => Some(f),
                        // Not an echo reply: nothing to send.
                        None => continue,
                    }
                }
            };
            self.push_dgram_frame(frame);
        }
        self.scratch = buf;
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
                    .poll_ingress_single(now, &mut self.dev, &mut self.sockets),
                PollIngressSingleResult::None
            ) {}
            let progress = self.pump_all();
            while !matches!(
                self.iface
                    .poll_egress(now, &mut self.dev, &mut self.sockets),
                PollResult::None
            ) {}
            if !progress {
                more = false;
                break;
            }
        }
        self.reap();
        more
    }

    fn pump_all(&mut self) -> bool {
        let mut progress = false;
        for flow in self.tcp.values_mut() {
            if let TcpPhase::Open(h) = flow.phase {
                let sock = self.sockets.get_mut::<tcp::Socket>(h);
                progress |= pump(flow, sock, &self.counters);
            }
        }
        progress
    }

    /// Frees finished TCP flows (after the poll that sent their last segment).
    fn reap(&mut self) {
        let mut done = Vec::new();
        for (tok, flow) in &self.tcp {
            let TcpPhase::Open(h) = flow.phase else {
                continue;
            };
            let sock = self.sockets.get::<tcp::Socket>(h);
            let finished = match sock.state() {
                // Keep a gracefully closed flow until its last data reached the host.
                tcp::State::Closed | tcp::State::TimeWait => flow.failed || !sock.can_recv(),
                // A SYN-RECEIVED that got a RST falls back to LISTEN: the flow is over.
                tcp::State::Listen => true,
                _ => false,
            };
            if finished {
                let graceful = !flow.failed && flow.host_eof && flow.host_shut_wr;
                done.push((*tok, graceful));
            }
        }
        for (tok, graceful) in done {
            self.remove_tcp(tok, graceful);
        }
    }

    fn maintenance(&mut self, now: StdInstant) {
        let expired: Vec<usize> = self
            .tcp
            .iter()
            .filter(|(_, f)| {
                matches!(f.phase, TcpPhase::Connecting { since, .. } if now.duration_since(since) > CONNECT_TIMEOUT)
            })
            .map(|(t, _)| *t)
            .collect();
        for tok in expired {
            if let Some(TcpFlow {
                key,
                phase: TcpPhase::Connecting { seq, seg_len, .. },
                ..
            }) = self.tcp.get(&tok)
            {
                let (key, seq, seg_len) = (*key, *seq, *seg_len);
                self.remove_tcp(tok, false);
                self.refuse(key, seq, seg_len);
            }
        }

        let idle: Vec<usize> = self
            .dgram
            .iter()
            .filter(|(_, f)| now.duration_since(f.last) > DATAGRAM_IDLE_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for tok in idle {
            if let Some(mut f) = self.dgram.remove(&tok) {
                let is_icmp = matches!(f.kind, DgramKind::Icmp { .. });
                self.dgram_by_key.remove(&(is_icmp, f.key));
                let _ = self.poll.registry().deregister(&mut f.sock);
                Counters::inc(&self.counters.dgram_expired);
            }
        }
        let before = self.pub_udp.len();
        self.pub_udp
            .retain(|_, (_, last)| now.duration_since(*last) <= DATAGRAM_IDLE_TIMEOUT);
        Counters::add(
            &self.counters.dgram_expired,
            (before - self.pub_udp.len()) as u64,
        );
    }
}

/// States in which the container's FIN has been received.
fn fin_received(state: tcp::State) -> bool {
    matches!(
        state,
        tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait
    )
}

/// Relays one open flow both ways as far as both sides allow. Returns true if anything moved.
fn pump(flow: &mut TcpFlow, sock: &mut tcp::Socket<'static>, c: &Counters) -> bool {
    let mut progress = false;
    // Container → host, while the host takes it.
    while flow.writable && !flow.failed && sock.can_recv() {
        let host = &flow.host;
        let r = sock.recv(|b| match (&*host).write(b) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                Counters::add(&c.bytes_to_host, n as u64);
                progress = true;
            }
            Ok(Err(e)) if would_block(&e) => flow.writable = false,
            Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                flow.failed = true;
                sock.abort();
                return true;
            }
            Err(_) => break,
        }
    }
    if !flow.host_shut_wr && !flow.failed && !sock.can_recv() && fin_received(sock.state()) {
        let _ = flow.host.shutdown(Shutdown::Write);
        flow.host_shut_wr = true;
        progress = true;
    }
    // Host → container, while smoltcp's send buffer has room.
    while flow.readable && !flow.host_eof && !flow.failed && sock.may_send() && sock.can_send() {
        let host = &flow.host;
        let r = sock.send(|b| match (&*host).read(b) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) => {
                flow.host_eof = true;
                sock.close();
                progress = true;
            }
            Ok(Ok(n)) => {
                Counters::add(&c.bytes_from_host, n as u64);
                progress = true;
            }
            Ok(Err(e)) if would_block(&e) => flow.readable = false,
            Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                flow.failed = true;
                sock.abort();
                return true;
            }
            Err(_) => break,
        }
    }
    progress
}

fn open_listener(hs: &dyn HostSockets, p: &Published) -> io::Result<Listener> {
    let addr = SockAddr::from(SocketAddrV4::new(p.host_addr, p.host_port));
    match p.proto {
        Proto::Tcp => {
            let s = hs.socket(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
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
        Proto::Udp => {
            let s = hs.socket(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
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
