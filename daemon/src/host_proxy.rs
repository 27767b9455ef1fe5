//! Published ports reached from the host itself (`curl localhost:8080`), as docker-proxy
//! does: the host's own connections never cross the uplink, so the switch's DNAT never sees
//! them. A socket in the daemon's namespace (on the published host address, or every address)
//! takes them and relays each to the container through the network's host port (see
//! `handlers::host_port`); the container sees the host port's address as the source.
//!
//! TCP: a listener; each accepted connection gets its own connection to the container, two
//! relay threads, half-closes passed on. UDP: one socket; each client address gets its own
//! connected socket toward the container (so replies find their client) and a thread relaying
//! the replies, ended after [`UDP_IDLE`] without any.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] relayed connections (TCP) or clients (UDP) per
//! published port; further ones are refused and logged.

use packet::PortProto;
use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Relayed connections (TCP) or clients (UDP) at once per published port.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// How long a connection to the container may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a listener rechecks whether it was stopped (stopping also wakes a TCP one).
const STOP_POLL: Duration = Duration::from_millis(200);
/// A UDP client's relay ends after this long without a datagram either way (Linux's
/// conntrack keeps an unreplied UDP flow 30 s, a replied one 120 s).
const UDP_IDLE: Duration = Duration::from_secs(60);

enum Socket {
    Tcp(Arc<TcpListener>),
    Udp,
}

struct Listener {
    stop: Arc<AtomicBool>,
    socket: Socket,
}

impl Listener {
    /// Refuses new connections at once (TCP) and lets the listener's thread end.
    fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Socket::Tcp(l) = &self.socket
            && let Err(e) = datapath::io::wait::stop_listening(l.as_fd())
        {
            tracing::debug!("host proxy: stopping a listener: {e}");
        }
    }
}

/// The listeners, by protocol and host port.
#[derive(Default)]
pub(crate) struct HostProxy {
    listeners: Mutex<HashMap<(PortProto, u16), Listener>>,
}

impl HostProxy {
    /// Listens on `listen` for `proto` and relays to `target`. A port already relayed is
    /// relayed to the new target instead.
    ///
    /// # Errors
    /// When the host address cannot be bound (in use by a host service, or not the host's).
    pub(crate) fn start(
        &self,
        proto: PortProto,
        listen: SocketAddrV4,
        target: SocketAddrV4,
    ) -> io::Result<()> {
        self.stop(proto, listen.port());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let name = format!("vswitch-proxy{}", listen.port());
        let socket = match proto {
            PortProto::Tcp => {
                let l = Arc::new(TcpListener::bind(listen)?);
                let served = Arc::clone(&l);
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || serve(&served, target, &flag))?;
                Socket::Tcp(l)
            }
            PortProto::Udp => {
                let sock = bind_udp(listen)?;
                sock.set_read_timeout(Some(STOP_POLL))?;
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || serve_udp(sock, target, flag))?;
                Socket::Udp
            }
        };
        crate::state::lock(&self.listeners)
            .insert((proto, listen.port()), Listener { stop, socket });
        tracing::info!(%proto, %listen, %target, "host proxy listening");
        Ok(())
    }

    /// Stops relaying `port`: new connections are refused from now on; TCP connections being
    /// relayed finish on their own. Whether it was relayed.
    pub(crate) fn stop(&self, proto: PortProto, port: u16) -> bool {
        match crate::state::lock(&self.listeners).remove(&(proto, port)) {
            Some(l) => {
                l.close();
                true
            }
            None => false,
        }
    }

    /// Whether `port` is being relayed.
    #[cfg(test)]
    pub(crate) fn listening(&self, proto: PortProto, port: u16) -> bool {
        crate::state::lock(&self.listeners).contains_key(&(proto, port))
    }
}

impl Drop for HostProxy {
    fn drop(&mut self) {
        for l in crate::state::lock(&self.listeners).values() {
            l.close();
        }
    }
}

/// Binds a UDP socket on `listen`. A port in use is tried again for up to a second: when it
/// is ours, just stopped (a container's reconnect), its threads let go of it within
/// [`STOP_POLL`] (a UDP socket cannot be woken).
fn bind_udp(listen: SocketAddrV4) -> io::Result<UdpSocket> {
    let mut tries = 10;
    loop {
        match UdpSocket::bind(listen) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries > 0 => {
                tries -= 1;
                std::thread::sleep(STOP_POLL / 2);
            }
            other => return other,
        }
    }
}

/// Relays datagrams from host clients on `sock` to `target`, each client through a socket of
/// its own, until `stop`.
fn serve_udp(sock: UdpSocket, target: SocketAddrV4, stop: Arc<AtomicBool>) {
    let sock = Arc::new(sock);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let (n, client) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::debug!(%target, "host proxy (udp): {e}");
                continue;
            }
        };
        let known = crate::state::lock(&flows).get(&client).cloned();
        let upstream = match known {
            Some(u) => u,
            None => match udp_flow(&sock, client, target, &stop, &flows) {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(%target, %client, "host proxy (udp): {e}");
                    continue;
                }
            },
        };
        let _ = upstream.send(&buf[..n]);
    }
}

/// A new client's socket toward `target` and the thread relaying its replies back.
fn udp_flow(
    sock: &Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddrV4,
    stop: &Arc<AtomicBool>,
    flows: &Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) -> io::Result<Arc<UdpSocket>> {
    if crate::state::lock(flows).len() >= MAX_CONNECTIONS {
        return Err(io::Error::other(format!(
            "{MAX_CONNECTIONS} clients relayed, refusing one"
        )));
    }
    let upstream = UdpSocket::bind(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0))?;
    upstream.connect(target)?;
    upstream.set_read_timeout(Some(STOP_POLL))?;
    let upstream = Arc::new(upstream);
    crate::state::lock(flows).insert(client, Arc::clone(&upstream));
    let (sock, up, stop, table) = (
        Arc::clone(sock),
        Arc::clone(&upstream),
        Arc::clone(stop),
        Arc::clone(flows),
    );
    let spawned = std::thread::Builder::new()
        .name("vswitch-relay".into())
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) && last.elapsed() < UDP_IDLE {
                match up.recv(&mut buf) {
                    Ok(n) => {
                        last = Instant::now();
                        let _ = sock.send_to(&buf[..n], client);
                    }
                    // Timeouts; an ICMP error from the container (ECONNREFUSED) too.
                    Err(_) => continue,
                }
            }
            crate::state::lock(&table).remove(&client);
        });
    if let Err(e) = spawned {
        crate::state::lock(flows).remove(&client);
        return Err(e);
    }
    Ok(upstream)
}

fn serve(listener: &TcpListener, target: SocketAddrV4, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match datapath::io::wait::readable(listener.as_fd(), STOP_POLL) {
            Ok(true) if !stop.load(Ordering::Relaxed) => {}
            Ok(true) => return,
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(%target, "host proxy stops: {e}");
                return;
            }
        }
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::debug!("host proxy accept: {e}");
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!(%target, "host proxy: {MAX_CONNECTIONS} connections open, refusing one");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let count = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("vswitch-relay".into())
            .spawn(move || {
                if let Err(e) = relay(client, target) {
                    tracing::debug!(%target, "host proxy connection: {e}");
                }
                count.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!("host proxy: cannot start a relay thread: {e}");
        }
    }
}

/// Copies both ways until both sides have closed; a half-close is passed on.
fn relay(client: TcpStream, target: SocketAddrV4) -> io::Result<()> {
    let server = TcpStream::connect_timeout(&target.into(), CONNECT_TIMEOUT)?;
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (client_rx, server_tx) = (client.try_clone()?, server.try_clone()?);
    let upstream = std::thread::Builder::new()
        .name("vswitch-relay".into())
        .spawn(move || pipe(client_rx, server_tx))?;
    pipe(server, client);
    let _ = upstream.join();
    Ok(())
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::Ipv4Addr;

    fn local(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    #[test]
    fn relays_both_ways_with_half_close_and_stops() {
        let server = TcpListener::bind(local(0)).unwrap();
        let target = match server.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got).unwrap();
            s.write_all(b"!").unwrap();
        });
        // A free port for the proxy.
        let port = TcpListener::bind(local(0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = HostProxy::default();
        proxy.start(PortProto::Tcp, local(port), target).unwrap();
        assert!(proxy.listening(PortProto::Tcp, port));
        let mut c = TcpStream::connect(local(port)).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "hello!");
        echo.join().unwrap();

        proxy.stop(PortProto::Tcp, port);
        assert!(!proxy.listening(PortProto::Tcp, port));
        // Refused at once, and the port is free again (the listener's thread let go).
        assert!(
            TcpStream::connect(local(port)).is_err(),
            "{port} accepts after stop"
        );
        proxy.start(PortProto::Tcp, local(port), target).unwrap();
    }

    #[test]
    fn a_port_in_use_is_an_error() {
        let taken = TcpListener::bind(local(0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let proxy = HostProxy::default();
        assert!(proxy.start(PortProto::Tcp, local(port), local(1)).is_err());
        assert!(!proxy.listening(PortProto::Tcp, port));
    }

    #[test]
    fn udp_clients_get_their_own_replies_and_the_port_comes_back() {
        // An echo "container" that says who it saw.
        let server = UdpSocket::bind(local(0)).unwrap();
        let target = match server.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let mut answer = buf[..n].to_vec();
                answer.extend_from_slice(b" via proxy");
                let _ = server.send_to(&answer, from);
            }
        });
        let port = UdpSocket::bind(local(0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = HostProxy::default();
        proxy.start(PortProto::Udp, local(port), target).unwrap();
        let ask = |what: &str| {
            let c = UdpSocket::bind(local(0)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.send_to(what.as_bytes(), local(port)).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        assert_eq!(ask("one"), "one via proxy");
        assert_eq!(ask("two"), "two via proxy");
        // Stopped and started again at once (a container's reconnect): the port binds again.
        proxy.stop(PortProto::Udp, port);
        proxy.start(PortProto::Udp, local(port), target).unwrap();
        assert_eq!(ask("three"), "three via proxy");
    }
}
