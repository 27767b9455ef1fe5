//! The relay of one open TCP flow: bytes between its smoltcp socket (the container's side) and
//! its host `TcpStream`, both ways, and each side's FIN or reset passed on to the other.
//!
//! Invariants:
//! - Data moves only while the receiving side has room (smoltcp's send buffer, the host
//!   socket's kernel buffer), so nothing is buffered beyond those: that is the backpressure.
//! - `readable`/`writable` are cleared only on `WouldBlock` (mio is edge-triggered).
//! - The container's FIN reaches the host (`shutdown(Write)`) only once every byte before it
//!   has; the host's EOF closes smoltcp's side; a host error aborts smoltcp (RST to the
//!   container) and marks the flow `failed`, after which nothing more moves.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;

use smoltcp::socket::tcp;

use super::TcpFlow;
use crate::counters::Counters;
use crate::ctx::would_block;

/// States in which the container's FIN has been received.
fn fin_received(state: tcp::State) -> bool {
    matches!(
        state,
        tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait
    )
}

/// Why one direction of the relay stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `ready` no longer holds, or smoltcp refused the call: nothing more to move now.
    Idle,
    /// The host call returned 0: EOF when reading from the host.
    Zero,
    /// The host socket would block: wait for its next event.
    WouldBlock,
    /// The host socket failed (reset or another error).
    Failed,
}

/// One direction of the relay, shared by both: repeats `step` while `ready(end)` holds and
/// returns the bytes moved and why it stopped. `step` is one smoltcp `recv` or `send` whose
/// closure does one host `write` or `read` (see [`host_io`]); `Err(())` means smoltcp refused.
/// An interrupted host call is retried.
fn relay<S: ?Sized>(
    end: &mut S,
    ready: impl Fn(&S) -> bool,
    mut step: impl FnMut(&mut S) -> Result<io::Result<usize>, ()>,
) -> (u64, Stop) {
    let mut moved = 0u64;
    while ready(end) {
        match step(end) {
            Ok(Ok(0)) => return (moved, Stop::Zero),
            Ok(Ok(n)) => moved += n as u64,
            Ok(Err(e)) if would_block(&e) => return (moved, Stop::WouldBlock),
            Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
            Ok(Err(_)) => return (moved, Stop::Failed),
            Err(()) => return (moved, Stop::Idle),
        }
    }
    (moved, Stop::Idle)
}

/// A host read or write as a smoltcp buffer closure's result: bytes consumed, and the outcome.
fn host_io(r: io::Result<usize>) -> (usize, io::Result<usize>) {
    match r {
        Ok(n) => (n, Ok(n)),
        Err(e) => (0, Err(e)),
    }
}

/// Relays one open flow both ways as far as both sides allow. Returns true if anything moved.
pub(super) fn pump(flow: &mut TcpFlow, sock: &mut tcp::Socket<'static>, c: &Counters) -> bool {
    let mut progress = false;
    // Container → host, while the host takes it.
    if flow.writable && !flow.failed {
        let mut host = &flow.host;
        let (n, stop) = relay(
            sock,
            |s| s.can_recv(),
            |s| s.recv(|b| host_io(host.write(b))).map_err(drop),
        );
        Counters::add(&c.bytes_to_host, n);
        progress |= n > 0;
        match stop {
            Stop::WouldBlock => flow.writable = false,
            Stop::Failed => return fail(flow, sock),
            Stop::Idle | Stop::Zero => {}
        }
    }
    if !flow.host_shut_wr && !flow.failed && !sock.can_recv() && fin_received(sock.state()) {
        let _ = flow.host.shutdown(Shutdown::Write);
        flow.host_shut_wr = true;
        progress = true;
    }
    // Host → container, while smoltcp's send buffer has room.
    if flow.readable && !flow.host_eof && !flow.failed {
        let mut host = &flow.host;
        let (n, stop) = relay(
            sock,
            |s| s.may_send() && s.can_send(),
            |s| s.send(|b| host_io(host.read(b))).map_err(drop),
        );
        Counters::add(&c.bytes_from_host, n);
        progress |= n > 0;
        match stop {
            Stop::Zero => {
                flow.host_eof = true;
                sock.close();
                progress = true;
            }
            Stop::WouldBlock => flow.readable = false,
            Stop::Failed => return fail(flow, sock),
            Stop::Idle => {}
        }
    }
    progress
}

/// A host error: smoltcp resets the container's side; the flow is freed by `reap`.
fn fail(flow: &mut TcpFlow, sock: &mut tcp::Socket<'static>) -> bool {
    flow.failed = true;
    sock.abort();
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
    use std::time::{Duration, Instant as StdInstant};

    use mio::net::TcpStream;
    use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
    use smoltcp::phy::{Loopback, Medium};
    use smoltcp::time::Instant;
    use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
    use socket2::SockRef;

    use crate::ctx::FlowKey;
    use crate::tcp::TcpPhase;

    /// How long a test waits for something the kernel delivers over loopback before failing.
    const DEADLINE: Duration = Duration::from_secs(10);

    #[test]
    fn relay_sums_chunks_retries_interrupts_and_stops_on_would_block() {
        let mut script: Vec<io::Result<usize>> = vec![
            Ok(3),
            Err(ErrorKind::Interrupted.into()),
            Ok(4),
            Err(ErrorKind::WouldBlock.into()),
            Ok(100),
        ];
        script.reverse();
        let (n, stop) = relay(&mut script, |s| !s.is_empty(), |s| s.pop().ok_or(()));
        assert_eq!((n, stop), (7, Stop::WouldBlock));
        assert_eq!(script.len(), 1, "nothing runs after WouldBlock");
    }

    #[test]
    fn relay_reports_zero_failure_and_idle() {
        let mut s = vec![Ok(0), Ok(5)];
        assert_eq!(
            relay(&mut s, |s| !s.is_empty(), |s| s.pop().ok_or(())),
            (5, Stop::Zero)
        );
        let mut s = vec![Err(ErrorKind::ConnectionReset.into()), Ok(2)];
        assert_eq!(
            relay(&mut s, |s| !s.is_empty(), |s| s.pop().ok_or(())),
            (2, Stop::Failed)
        );
        let mut s = vec![Ok(1), Ok(2)];
        assert_eq!(
            relay(&mut s, |s| !s.is_empty(), |s| s.pop().ok_or(())),
            (3, Stop::Idle)
        );
        // smoltcp refusing the call (e.g. an invalid state) stops the loop too.
        let mut calls = 0;
        let r = relay(
            &mut calls,
            |_| true,
            |c| {
                *c += 1;
                Err(())
            },
        );
        assert_eq!((r, calls), ((0, Stop::Idle), 1));
    }

    /// One smoltcp interface on a loopback device with the gateway's socket `gw` (as after the
    /// handshake with the container) connected to the container's socket `ct`, and a host
    /// connection: `flow.host` is the gateway's end, `peer` the host service.
    struct Rig {
        iface: Interface,
        dev: Loopback,
        sockets: SocketSet<'static>,
        gw: SocketHandle,
        ct: SocketHandle,
        flow: TcpFlow,
        /// The host service (taken by a test that resets it).
        peer: Option<std::net::TcpStream>,
        counters: Counters,
    }

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn small_socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; 8192]),
            tcp::SocketBuffer::new(vec![0u8; 8192]),
        )
    }

    impl Rig {
        fn new() -> Rig {
            let mut dev = Loopback::new(Medium::Ip);
            let mut iface =
                Interface::new(Config::new(HardwareAddress::Ip), &mut dev, Instant::now());
            iface.update_ip_addrs(|a| {
                a.push(IpCidr::new(IpAddress::Ipv4(A), 24)).unwrap();
            });
            let mut sockets = SocketSet::new(Vec::new());
            let mut gw = small_socket();
            gw.listen(80).unwrap();
            let gw = sockets.add(gw);
            let mut ct = small_socket();
            ct.connect(iface.context(), (IpAddress::Ipv4(A), 80), 40000)
                .unwrap();
            let ct = sockets.add(ct);
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let host = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            host.set_nonblocking(true).unwrap();
            let (peer, _) = listener.accept().unwrap();
            peer.set_read_timeout(Some(DEADLINE)).unwrap();
            let key = FlowKey {
                inner: SocketAddrV4::new(A, 40000).into(),
                outer: SocketAddrV4::new(A, 80).into(),
            };
            let flow = TcpFlow::new(key, TcpStream::from_std(host), TcpPhase::Open(gw), true);
            let mut rig = Rig {
                iface,
                dev,
                sockets,
                gw,
                ct,
                flow,
                peer: Some(peer),
                counters: Counters::default(),
            };
            rig.until(|r| r.sock(r.ct).state() == tcp::State::Established);
            rig
        }

        fn peer(&mut self) -> &mut std::net::TcpStream {
            self.peer.as_mut().unwrap()
        }

        fn sock(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
            self.sockets.get_mut::<tcp::Socket>(h)
        }

        /// smoltcp, then the relay (with both host flags set, as after an event).
        fn turn(&mut self) -> bool {
            self.iface
                .poll(Instant::now(), &mut self.dev, &mut self.sockets);
            self.flow.readable = true;
            self.flow.writable = true;
            let sock = self.sockets.get_mut::<tcp::Socket>(self.gw);
            let moved = pump(&mut self.flow, sock, &self.counters);
            self.iface
                .poll(Instant::now(), &mut self.dev, &mut self.sockets);
            moved
        }

        /// Turns until `done`; fails the test after [`DEADLINE`].
        fn until(&mut self, mut done: impl FnMut(&mut Rig) -> bool) {
            let start = StdInstant::now();
            while !done(self) {
                assert!(start.elapsed() < DEADLINE, "timed out");
                self.turn();
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        fn container_read(&mut self) -> Vec<u8> {
            let mut got = Vec::new();
            let s = self.sock(self.ct);
            while s.can_recv() {
                s.recv(|b| {
                    got.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            got
        }
    }

    #[test]
    fn pump_relays_both_ways_and_passes_each_fin_on() {
        let mut r = Rig::new();
        // Container → host.
        let ct = r.ct;
        r.sock(ct).send_slice(b"ping").unwrap();
        r.until(|r| r.counters.snapshot().bytes_to_host == 4);
        let mut b = [0u8; 4];
        r.peer().read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");

        // Host → container, then the host's FIN: smoltcp closes (FIN to the container).
        r.peer().write_all(b"pong!").unwrap();
        r.peer().shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        r.until(|r| {
            got.extend(r.container_read());
            r.flow.host_eof && r.sock(ct).state() == tcp::State::CloseWait
        });
        got.extend(r.container_read());
        assert_eq!(got, b"pong!");
        assert_eq!(r.counters.snapshot().bytes_from_host, 5);
        assert!(!r.flow.host_shut_wr, "the container has not closed yet");

        // The container's FIN reaches the host as EOF.
        r.sock(ct).close();
        r.until(|r| r.flow.host_shut_wr);
        let mut rest = Vec::new();
        r.peer().read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(!r.flow.failed);
        let gw = r.gw;
        assert!(
            matches!(
                r.sock(gw).state(),
                tcp::State::TimeWait | tcp::State::Closed
            ),
            "{}",
            r.sock(gw).state()
        );
    }

    #[test]
    fn pump_stops_writing_when_the_host_is_full() {
        let mut r = Rig::new();
        let ct = r.ct;
        // The host service reads nothing: the kernel buffers fill, then the relay waits with the
        // rest in smoltcp's receive buffer (backpressure) instead of dropping or buffering more.
        // Small kernel buffers, so that they fill soon.
        SockRef::from(&*r.peer())
            .set_recv_buffer_size(64 << 10)
            .unwrap();
        SockRef::from(&r.flow.host)
            .set_send_buffer_size(64 << 10)
            .unwrap();
        let data = vec![0x5au8; 32 << 20];
        let mut sent = 0;
        let start = StdInstant::now();
        loop {
            assert!(start.elapsed() < DEADLINE, "the host never filled up");
            let s = r.sock(ct);
            if s.can_send() {
                sent += s.send_slice(&data[sent..]).unwrap();
            }
            r.iface.poll(Instant::now(), &mut r.dev, &mut r.sockets);
            r.flow.writable = true;
            let sock = r.sockets.get_mut::<tcp::Socket>(r.gw);
            pump(&mut r.flow, sock, &r.counters);
            if !r.flow.writable {
                break;
            }
        }
        let to_host = r.counters.snapshot().bytes_to_host;
        assert!(to_host > 0 && (to_host as usize) < sent);
        let gw = r.gw;
        assert!(r.sock(gw).can_recv(), "the rest waits in smoltcp");
        assert!(!r.flow.failed);
        // Everything the relay counted reached the host, in order.
        r.peer().set_nonblocking(true).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match r.peer().read(&mut buf) {
                Ok(n) => {
                    assert!(buf[..n].iter().all(|&x| x == 0x5a));
                    got += n;
                }
                Err(e) if would_block(&e) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got as u64, to_host);
    }

    #[test]
    fn a_host_reset_aborts_the_container_side() {
        let mut r = Rig::new();
        // Closing with SO_LINGER 0 sends a RST.
        let peer = r.peer.take().unwrap();
        SockRef::from(&peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(peer);
        let ct = r.ct;
        r.until(|r| r.flow.failed);
        assert!(!r.flow.host_eof, "a reset is not an EOF");
        r.until(|r| r.sock(ct).state() == tcp::State::Closed);
    }
}
