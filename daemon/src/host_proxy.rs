//! Published TCP ports reached from the host itself (`curl localhost:8080`), as docker-proxy
//! does: the host's own connections never cross the uplink, so the switch's DNAT never sees
//! them. A listener in the daemon's namespace (on the published host address, or every
//! address) accepts them and opens a connection to the container through the network's host
//! port (see `handlers::host_port`); the container sees the host port's address as the source.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] relayed connections per published port (further ones
//! are closed at once and counted in the log), two threads each.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Relayed connections at once per published port.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// How long a connection to the container may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a listener rechecks whether it was stopped (stopping also wakes it).
const STOP_POLL: Duration = Duration::from_millis(200);

struct Listener {
    stop: Arc<AtomicBool>,
    socket: Arc<TcpListener>,
}

impl Listener {
    /// Refuses new connections at once and lets the listener's thread end.
    fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(e) = datapath::io::wait::stop_listening(self.socket.as_fd()) {
            tracing::debug!("host proxy: stopping a listener: {e}");
        }
    }
}

/// The listeners, by host port.
#[derive(Default)]
pub(crate) struct HostProxy {
    listeners: Mutex<HashMap<u16, Listener>>,
}

impl HostProxy {
    /// Listens on `listen` and relays every connection to `target`. A port already relayed is
    /// relayed to the new target instead.
    ///
    /// # Errors
    /// When the host address cannot be bound (in use by a host service, or not the host's).
    pub(crate) fn start(&self, listen: SocketAddrV4, target: SocketAddrV4) -> io::Result<()> {
        self.stop(listen.port());
        let socket = Arc::new(TcpListener::bind(listen)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, served) = (Arc::clone(&stop), Arc::clone(&socket));
        std::thread::Builder::new()
            .name(format!("vswitch-proxy{}", listen.port()))
            .spawn(move || serve(&served, target, &flag))?;
        crate::state::lock(&self.listeners).insert(listen.port(), Listener { stop, socket });
        tracing::info!(%listen, %target, "host proxy listening");
        Ok(())
    }

    /// Stops relaying `port`: new connections are refused from now on; those being relayed
    /// finish on their own.
    pub(crate) fn stop(&self, port: u16) {
        if let Some(l) = crate::state::lock(&self.listeners).remove(&port) {
            l.close();
        }
    }

    /// Whether `port` is being relayed.
    #[cfg(test)]
    pub(crate) fn listening(&self, port: u16) -> bool {
        crate::state::lock(&self.listeners).contains_key(&port)
    }
}

impl Drop for HostProxy {
    fn drop(&mut self) {
        for l in crate::state::lock(&self.listeners).values() {
            l.close();
        }
    }
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
        proxy.start(local(port), target).unwrap();
        assert!(proxy.listening(port));
        let mut c = TcpStream::connect(local(port)).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        c.read_to_string(&mut back).unwrap();
        assert_eq!(back, "hello!");
        echo.join().unwrap();

        proxy.stop(port);
        assert!(!proxy.listening(port));
        // Refused at once, and the port is free again (the listener's thread let go).
        assert!(
            TcpStream::connect(local(port)).is_err(),
            "{port} accepts after stop"
        );
        proxy.start(local(port), target).unwrap();
    }

    #[test]
    fn a_port_in_use_is_an_error() {
        let taken = TcpListener::bind(local(0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let proxy = HostProxy::default();
        assert!(proxy.start(local(port), local(1)).is_err());
        assert!(!proxy.listening(port));
    }
}
