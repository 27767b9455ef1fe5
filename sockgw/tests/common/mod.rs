//! Test harness: a SocketGateway on one end of a seqpacket socketpair, and on the other a smoltcp
//! "client" stack that plays the switch's uplink (address U, MAC `mac`).
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use mio::{Events, Interest, Poll, Token};
use packet::PortProto;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use sockgw::{Counters, Direct, GatewayConfig, GatewayV6, MacAddr, Published, SocketGateway};

pub const U: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The client's default gateway, mapped to the host's 127.0.0.1.
pub const G: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// U6: the client's IPv6 address.
pub const U6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7673, 0xffff, 0, 0, 0, 0, 2);
/// The client's IPv6 default gateway, mapped to the host's ::1 by [`config6`].
pub const G6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7673, 0xffff, 0, 0, 0, 0, 1);
pub const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0f]);
pub const GW_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
pub const MTU: usize = 65520;

pub fn config() -> GatewayConfig {
    let mut c = GatewayConfig::new(U, MAC, GW_MAC);
    c.host_loopback = Some(G);
    c
}

/// [`config`] serving IPv6 too: U6, with G6 mapped to the host's ::1.
pub fn config6() -> GatewayConfig {
    let mut c = config();
    let mut v6 = GatewayV6::new(U6);
    v6.host_loopback = Some(G6);
    c.ipv6 = Some(v6);
    c
}

/// [`config`] with one port of `proto` published on 127.0.0.1 (port 0: the kernel picks it; see
/// `SocketGateway::published_addrs`).
pub fn config_publishing(proto: PortProto) -> GatewayConfig {
    let mut c = config();
    c.published.push(Published {
        proto,
        host_addr: Ipv4Addr::LOCALHOST.into(),
        host_port: 0,
    });
    c
}

/// The client's device: frames over the seqpacket socket, with a send queue for a full link.
pub struct SeqDevice {
    pub link: mio::net::UnixDatagram,
    tx: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
}

impl SeqDevice {
    pub fn flush(&mut self) {
        while let Some(f) = self.tx.front() {
            match self.link.send(f) {
                Ok(_) => {
                    self.tx.pop_front();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("link send: {e}"),
            }
        }
    }
}

pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = vec![0u8; len];
        let r = f(&mut v);
        self.0.push_back(v);
        r
    }
}

impl phy::Device for SeqDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        match self.link.recv(&mut self.buf) {
            Ok(n) => Some((Rx(self.buf[..n].to_vec()), Tx(&mut self.tx))),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => panic!("link recv: {e}"),
        }
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        if self.tx.len() >= 256 {
            return None;
        }
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU + 14;
        caps
    }
}

/// The client stack plus the running gateway.
pub struct Harness {
    pub iface: Interface,
    pub dev: SeqDevice,
    pub sockets: SocketSet<'static>,
    pub counters: Arc<Counters>,
    poll: Poll,
    events: Events,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn seqpacket_pair() -> (UnixDatagram, UnixDatagram) {
    let (a, b) =
        socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap();
    (
        UnixDatagram::from(OwnedFd::from(a)),
        UnixDatagram::from(OwnedFd::from(b)),
    )
}

impl Harness {
    pub fn start(cfg: GatewayConfig) -> (Harness, SocketGateway) {
        let gw = SocketGateway::new(cfg, Box::new(Direct)).unwrap();
        (Self::client(gw.counters()), gw)
    }

    fn client(counters: Arc<Counters>) -> Harness {
        // Filled in by `run`: the link is made there.
        let (a, _b) = seqpacket_pair();
        a.set_nonblocking(true).unwrap();
        let mut dev = SeqDevice {
            link: mio::net::UnixDatagram::from_std(a),
            tx: VecDeque::new(),
            buf: vec![0u8; MTU + 64],
        };
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(MAC.0)));
        cfg.random_seed = 7;
        let mut iface = Interface::new(cfg, &mut dev, Instant::now());
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(U), 24)).unwrap();
            a.push(IpCidr::new(IpAddress::Ipv6(U6), 64)).unwrap();
        });
        iface.routes_mut().add_default_ipv4_route(G).unwrap();
        // G6 is on-link (U6/64): the client solicits it, the gateway answers.
        iface.routes_mut().add_default_ipv6_route(G6).unwrap();
        Harness {
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            counters,
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(64),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// Connects a fresh link and runs the gateway on a thread.
    pub fn run(&mut self, gw: SocketGateway) {
        let (a, b) = seqpacket_pair();
        a.set_nonblocking(true).unwrap();
        let mut link = mio::net::UnixDatagram::from_std(a);
        self.poll
            .registry()
            .register(&mut link, Token(0), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        self.dev.link = link;
        let stop = Arc::clone(&self.stop);
        self.thread = Some(std::thread::spawn(move || gw.run(b, stop)));
    }

    /// One turn: smoltcp, the link, then a short wait for the link.
    pub fn step(&mut self) {
        self.iface
            .poll(Instant::now(), &mut self.dev, &mut self.sockets);
        self.dev.flush();
        let wait = self
            .iface
            .poll_delay(Instant::now(), &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_millis(5))
            .min(Duration::from_millis(5));
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
    }

    /// Steps until `done` says so; panics after `limit`.
    pub fn until(&mut self, limit: Duration, mut done: impl FnMut(&mut Harness) -> bool) {
        let start = StdInstant::now();
        while !done(self) {
            assert!(start.elapsed() < limit, "timed out after {limit:?}");
            self.step();
        }
    }

    /// Sends a raw frame on the link, as the switch would.
    pub fn send_raw(&mut self, frame: &[u8]) {
        self.dev.tx.push_back(frame.to_vec());
        self.dev.flush();
    }

    /// The client's TCP socket `h`.
    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// The client's UDP socket `h`.
    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket>(h)
    }

    /// A client TCP socket with `buf`-byte buffers connecting from U:`local_port` to G:`port`
    /// (the host's 127.0.0.1:`port`).
    pub fn tcp_connect(&mut self, buf: usize, port: u16, local_port: u16) -> SocketHandle {
        self.tcp_connect_to(buf, IpAddress::Ipv4(G), port, local_port)
    }

    /// A client TCP socket with `buf`-byte buffers connecting from `local_port` to `to`:`port`.
    pub fn tcp_connect_to(
        &mut self,
        buf: usize,
        to: IpAddress,
        port: u16,
        local_port: u16,
    ) -> SocketHandle {
        let handle = self.sockets.add(tcp_socket(buf));
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(cx, (to, port), local_port)
            .unwrap();
        handle
    }

    /// A client TCP socket listening on `port`.
    pub fn tcp_listen(&mut self, buf: usize, port: u16) -> SocketHandle {
        let handle = self.sockets.add(tcp_socket(buf));
        self.tcp(handle).listen(port).unwrap();
        handle
    }

    /// Appends everything socket `h` has received to `into`.
    pub fn tcp_drain(&mut self, h: SocketHandle, into: &mut Vec<u8>) {
        let s = self.tcp(h);
        while s.can_recv() {
            s.recv(|b| {
                into.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
    }

    /// A client UDP socket bound to `port` (8 datagrams, 8 KiB each way).
    pub fn udp_bind(&mut self, port: u16) -> SocketHandle {
        let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]);
        let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]);
        let handle = self.sockets.add(udp::Socket::new(rx, tx));
        self.udp(handle).bind(port).unwrap();
        handle
    }

    /// The next datagram socket `h` has received, with its sender.
    pub fn udp_recv(&mut self, h: SocketHandle) -> Option<(Vec<u8>, IpEndpoint)> {
        self.udp(h)
            .recv()
            .ok()
            .map(|(d, meta)| (d.to_vec(), meta.endpoint))
    }

    /// Every frame received was handled or counted as dropped.
    pub fn assert_counters_add_up(&self) {
        let s = self.counters.snapshot();
        assert_eq!(s.frames_rx, s.rx_handled() + s.rx_dropped(), "{s:#?}");
    }

    /// Stops the gateway and returns its result.
    pub fn stop(&mut self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add((i >> 12) as u8) ^ salt)
        .collect()
}

pub fn tcp_socket(buf: usize) -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; buf]),
        tcp::SocketBuffer::new(vec![0u8; buf]),
    )
}
