//! The TCP relay: each flow pairs a smoltcp socket (the switch's side) with a host `TcpStream`.
//!
//! [`TcpFlows`] owns the flows, their smoltcp [`SocketSet`] and the key → token index; the event
//! loop feeds it segments, host events and accepted connections, and polls smoltcp over
//! [`TcpFlows::sockets_mut`]. Moving the bytes of an open flow is `relay`'s (`tcp/relay.rs`).
//!
//! Flow lifecycle (switch → host): SYN from U:p to D:dp → host `connect` to D:dp starts, the SYN
//! is kept (retransmissions are dropped) → connect fails: RST to U:p, flow gone; connect
//! succeeds: a smoltcp socket listening on exactly D:dp is added and the kept SYN is fed to it
//! alone, so the handshake completes → relay → FIN each way as each side reaches EOF → freed once
//! smoltcp is in CLOSED/TIME-WAIT and its receive buffer is drained; a reset or error on either
//! side resets the other (RST to the host through `SO_LINGER` 0).
//!
//! Published TCP: an accepted host connection from C:cp becomes a smoltcp socket connecting from
//! C:cp (any local address is allowed: the interface runs with `any_ip` and smoltcp's `connect`
//! takes an explicit local endpoint) to U:host_port, then the same relay.
//!
//! IPv6 flows (from U6, or IPv6 clients of published ports to U6) take the same path with host
//! IPv6 sockets; a flow's two ends are always of one family.
//!
//! Invariants:
//! - `by_key` and `flows` hold the same flows; a flow in `Open` owns exactly one socket of the set.
//! - mio is edge-triggered: a flow's `readable`/`writable` are set by events here and cleared
//!   only on `WouldBlock` by the relay, which moves data only while the other side has room:
//!   nothing is buffered beyond the two smoltcp buffers of a connection and the kernel's.
//! - A flow is freed (`reap`) only after the poll that sent its last segment; a graceful end
//!   (both FINs passed on, no error) closes the host socket normally, any other end resets it.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant as StdInstant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use socket2::{Domain, Protocol, SockAddr, SockRef, Type};

use crate::CONNECT_TIMEOUT;
use crate::counters::Counters;
use crate::ctx::{Ctx, FlowKey};
use crate::frames;

mod relay;
use relay::pump;

/// smoltcp aborts a connection whose data goes unacknowledged this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(120);

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

impl TcpFlow {
    fn new(key: FlowKey, host: TcpStream, phase: TcpPhase, ready: bool) -> Self {
        TcpFlow {
            key,
            host,
            phase,
            readable: ready,
            writable: ready,
            host_eof: false,
            host_shut_wr: false,
            failed: false,
        }
    }
}

/// A TCP segment from U, as `frames::parse` read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub key: FlowKey,
    /// A connection request: SYN without ACK.
    pub syn_only: bool,
    pub seq: u32,
    pub seg_len: u32,
}

/// The TCP flows of the gateway.
pub(crate) struct TcpFlows {
    flows: HashMap<usize, TcpFlow>,
    by_key: HashMap<FlowKey, usize>,
    sockets: SocketSet<'static>,
    /// Size of each smoltcp buffer.
    buffer: usize,
}

impl TcpFlows {
    pub fn new(buffer: usize) -> Self {
        TcpFlows {
            flows: HashMap::new(),
            by_key: HashMap::new(),
            sockets: SocketSet::new(Vec::new()),
            buffer,
        }
    }

    /// The smoltcp sockets, for the interface's polls.
    pub fn sockets(&self) -> &SocketSet<'static> {
        &self.sockets
    }

    /// The smoltcp sockets, for the interface's polls.
    pub fn sockets_mut(&mut self) -> &mut SocketSet<'static> {
        &mut self.sockets
    }

    /// Handles one segment from the switch: starts a host connect for a new SYN, drops a SYN
    /// retransmitted while it connects, and queues everything else for smoltcp (which answers
    /// stray segments with RST).
    pub fn on_segment(&mut self, ctx: &mut Ctx, seg: Segment, frame: &[u8]) {
        let c = &ctx.counters;
        let connecting = self
            .by_key
            .get(&seg.key)
            .and_then(|t| self.flows.get(t))
            .map(|f| matches!(f.phase, TcpPhase::Connecting { .. }));
        match connecting {
            Some(true) if seg.syn_only => Counters::inc(&c.drop_syn_pending),
            None if seg.syn_only => {
                Counters::inc(&c.tcp_rx);
                self.start_connect(ctx, seg, frame);
            }
            _ => {
                Counters::inc(&c.tcp_rx);
                ctx.dev.rx.push_back(frame.to_vec());
            }
        }
    }

    /// Refuses a SYN: RST+ACK to the client, counted as `tcp_refused`.
    fn refuse(ctx: &mut Ctx, key: FlowKey, seq: u32, seg_len: u32) {
        Counters::inc(&ctx.counters.tcp_refused);
        if let Some(rst) = frames::tcp_rst(&ctx.cfg, key.outer, key.inner, seq, seg_len) {
            ctx.dev.tx.push_back(rst);
        }
    }

    fn start_connect(&mut self, ctx: &mut Ctx, seg: Segment, syn: &[u8]) {
        let Segment {
            key, seq, seg_len, ..
        } = seg;
        let Some(addr) = ctx.host_target_ip(key.outer.ip(), key.outer.port()) else {
            // Refused like a closed port (counted as tcp_refused).
            return Self::refuse(ctx, key, seq, seg_len);
        };
        let target = SocketAddr::new(addr, key.outer.port());
        let sock = (|| {
            let domain = Domain::for_address(target);
            let s = ctx.hs.socket(domain, Type::STREAM, Some(Protocol::TCP))?;
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
                return Self::refuse(ctx, key, seq, seg_len);
            }
        };
        let tok = ctx.token();
        if ctx
            .poll
            .registry()
            .register(
                &mut host,
                Token(tok),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return Self::refuse(ctx, key, seq, seg_len);
        }
        self.by_key.insert(key, tok);
        let phase = TcpPhase::Connecting {
            syn: syn.to_vec(),
            since: StdInstant::now(),
            seq,
            seg_len,
        };
        self.flows
            .insert(tok, TcpFlow::new(key, host, phase, false));
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let n = self.buffer;
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

    /// A host socket event; false if `tok` is not a TCP flow.
    pub fn on_host_event(
        &mut self,
        ctx: &mut Ctx,
        iface: &mut Interface,
        tok: usize,
        readable: bool,
        writable: bool,
    ) -> bool {
        let Some(flow) = self.flows.get_mut(&tok) else {
            return false;
        };
        flow.readable |= readable;
        flow.writable |= writable;
        if matches!(flow.phase, TcpPhase::Connecting { .. }) {
            self.finish_connect(ctx, iface, tok);
        }
        true
    }

    fn finish_connect(&mut self, ctx: &mut Ctx, iface: &mut Interface, tok: usize) {
        let Some(flow) = self.flows.get_mut(&tok) else {
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
            self.remove(ctx, tok, false);
            return Self::refuse(ctx, key, seq, seg_len);
        }
        let mut sock = self.new_socket();
        let ep = IpListenEndpoint {
            addr: Some(IpAddress::from(key.outer.ip())),
            port: key.outer.port(),
        };
        if sock.listen(ep).is_err() {
            self.remove(ctx, tok, false);
            return Self::refuse(ctx, key, seq, seg_len);
        }
        let h = self.sockets.add(sock);
        if let Some(flow) = self.flows.get_mut(&tok) {
            flow.phase = TcpPhase::Open(h);
        }
        Counters::inc(&ctx.counters.tcp_opened);
        // Feed the SYN on its own: other listening sockets of the same port could take it
        // otherwise, and this socket must not take another flow's SYN.
        let others = std::mem::take(&mut ctx.dev.rx);
        ctx.dev.rx.push_back(syn);
        iface.poll(Instant::now(), &mut ctx.dev, &mut self.sockets);
        ctx.dev.rx = others;
    }

    /// Takes a connection accepted on published port `port` from `peer`: a smoltcp socket
    /// connects from `peer` (a loopback client from [`GatewayConfig::client_ip`]) to U:`port`
    /// (U6 for an IPv6 peer). On failure, or an IPv6 peer when the gateway does not serve IPv6,
    /// the host connection is reset.
    ///
    /// [`GatewayConfig::client_ip`]: crate::GatewayConfig::client_ip
    pub fn adopt(
        &mut self,
        ctx: &mut Ctx,
        iface: &mut Interface,
        mut stream: TcpStream,
        peer: SocketAddr,
        port: u16,
    ) {
        let reset = |s: &TcpStream| {
            let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
        };
        let (Some(client), Some(uplink)) =
            (ctx.cfg.client_ip(peer.ip()), ctx.cfg.uplink_for(peer.ip()))
        else {
            return reset(&stream);
        };
        let peer = SocketAddr::new(client, peer.port());
        let key = FlowKey {
            inner: SocketAddr::new(uplink, port),
            outer: peer,
        };
        let mut sock = self.new_socket();
        let local = IpListenEndpoint {
            addr: Some(IpAddress::from(peer.ip())),
            port: peer.port(),
        };
        let remote = IpEndpoint::new(IpAddress::from(uplink), port);
        let tok = ctx.token();
        if self.by_key.contains_key(&key)
            || sock.connect(iface.context(), remote, local).is_err()
            || ctx
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(tok),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
        {
            return reset(&stream);
        }
        let h = self.sockets.add(sock);
        Counters::inc(&ctx.counters.tcp_published);
        self.by_key.insert(key, tok);
        self.flows
            .insert(tok, TcpFlow::new(key, stream, TcpPhase::Open(h), true));
    }

    /// Frees a TCP flow; `graceful` false resets the host side (SO_LINGER 0).
    fn remove(&mut self, ctx: &mut Ctx, tok: usize, graceful: bool) {
        let Some(mut flow) = self.flows.remove(&tok) else {
            return;
        };
        self.by_key.remove(&flow.key);
        if !graceful {
            let _ = SockRef::from(&flow.host).set_linger(Some(Duration::ZERO));
        }
        let _ = ctx.poll.registry().deregister(&mut flow.host);
        if let TcpPhase::Open(h) = flow.phase {
            self.sockets.remove(h);
            Counters::inc(&ctx.counters.tcp_closed);
            if !graceful {
                Counters::inc(&ctx.counters.tcp_reset);
            }
        }
    }

    /// Relays every open flow once (see `relay::pump`). Returns true if anything moved.
    pub fn pump_all(&mut self, c: &Counters) -> bool {
        let mut progress = false;
        for flow in self.flows.values_mut() {
            if let TcpPhase::Open(h) = flow.phase {
                let sock = self.sockets.get_mut::<tcp::Socket>(h);
                progress |= pump(flow, sock, c);
            }
        }
        progress
    }

    /// Frees finished flows (after the poll that sent their last segment).
    pub fn reap(&mut self, ctx: &mut Ctx) {
        let mut done = Vec::new();
        for (tok, flow) in &self.flows {
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
            self.remove(ctx, tok, graceful);
        }
    }

    /// Refuses the SYNs whose host connect has taken longer than [`CONNECT_TIMEOUT`] at `now`.
    pub fn expire(&mut self, ctx: &mut Ctx, now: StdInstant) {
        let expired: Vec<usize> = self
            .flows
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
            }) = self.flows.get(&tok)
            {
                let (key, seq, seg_len) = (*key, *seq, *seg_len);
                self.remove(ctx, tok, false);
                Self::refuse(ctx, key, seq, seg_len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

    use crate::ctx::tests::ctx;

    #[test]
    fn tcp_flows_refuse_a_syn_to_a_forbidden_address() {
        let mut c = ctx();
        let mut t = TcpFlows::new(4096);
        let seg = Segment {
            key: FlowKey {
                inner: SocketAddrV4::new(c.cfg.address, 40000).into(),
                outer: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 22).into(),
            },
            syn_only: true,
            seq: 1000,
            seg_len: 1,
        };
        t.on_segment(&mut c, seg, &[]);
        let s = c.counters.snapshot();
        assert_eq!((s.tcp_rx, s.tcp_refused), (1, 1));
        assert!(t.flows.is_empty());
        // The RST answers the SYN: ACK = SEQ + 1, from the address the client asked for.
        let rst = c.dev.tx.pop_front().unwrap();
        let ip = smoltcp::wire::Ipv4Packet::new_checked(&rst[14..]).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::LOCALHOST);
        assert_eq!(ip.dst_addr(), c.cfg.address);
        let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.rst() && tcp.ack());
        assert_eq!(tcp.ack_number().0 as u32, 1001);
        assert_eq!((tcp.src_port(), tcp.dst_port()), (22, 40000));
    }

    #[test]
    fn a_syn_waits_for_the_host_connect_and_retransmissions_are_dropped() {
        let mut c = ctx();
        let mut t = TcpFlows::new(4096);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let key = FlowKey {
            inner: SocketAddrV4::new(c.cfg.address, 40001).into(),
            outer: SocketAddrV4::new(crate::ctx::tests::G, port).into(),
        };
        let seg = Segment {
            key,
            syn_only: true,
            seq: 7,
            seg_len: 1,
        };
        t.on_segment(&mut c, seg, b"syn");
        t.on_segment(&mut c, seg, b"syn again");
        let s = c.counters.snapshot();
        assert_eq!((s.tcp_rx, s.drop_syn_pending), (1, 1));
        assert_eq!(t.flows.len(), 1);
        assert!(
            c.dev.rx.is_empty(),
            "smoltcp does not see the SYN before the connect"
        );
        // A non-SYN segment of the flow goes to smoltcp.
        t.on_segment(
            &mut c,
            Segment {
                syn_only: false,
                ..seg
            },
            b"ack",
        );
        assert_eq!(c.dev.rx.len(), 1);
        // A connect that takes too long is refused with a RST and the flow is freed.
        t.expire(
            &mut c,
            StdInstant::now() + CONNECT_TIMEOUT + Duration::from_secs(1),
        );
        assert!(t.flows.is_empty() && t.by_key.is_empty());
        assert_eq!(c.counters.snapshot().tcp_refused, 1);
        assert_eq!(c.dev.tx.len(), 1);
    }
}
