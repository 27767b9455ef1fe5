#![allow(clippy::unwrap_used)]
//! End-to-end tests over IPv6: the smoltcp client stack (U6, its default router G6 on-link,
//! found by neighbour solicitation) talks through the gateway to services on the host's ::1,
//! and a host client on ::1 reaches a port published on it.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::*;
use packet::PortProto;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use sockgw::Published;

const ONE_MB: usize = 1024 * 1024;

#[test]
fn tcp_over_ipv6_to_the_hosts_loopback_carries_data_both_ways() {
    let (mut h, gw) = Harness::start(config6());
    h.run(gw);
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut v = vec![0u8; ONE_MB];
        s.read_exact(&mut v).unwrap();
        s.write_all(&v).unwrap();
        (peer, v)
    });
    let handle = h.tcp_connect_to(1 << 20, IpAddress::Ipv6(G6), port, 49152);
    let data = pattern(ONE_MB, 0x66);
    let (mut sent, mut got) = (0, Vec::with_capacity(ONE_MB));
    h.until(Duration::from_secs(30), |h| {
        let s = h.tcp(handle);
        while sent < data.len() && s.can_send() {
            sent += s.send_slice(&data[sent..]).unwrap();
        }
        h.tcp_drain(handle, &mut got);
        let s = h.tcp(handle);
        if got.len() == ONE_MB && s.may_send() {
            s.close();
        }
        got.len() == ONE_MB && !s.is_open()
    });
    let (peer, echoed) = server.join().unwrap();
    assert!(peer.is_ipv6() && peer.ip().is_loopback(), "{peer}");
    assert!(echoed == data, "the host got other bytes");
    assert!(got == data, "the echo differs");
    h.until(Duration::from_secs(10), |h| {
        h.counters.snapshot().tcp_closed == 1
    });
    let s = h.counters.snapshot();
    assert_eq!((s.tcp_opened, s.tcp_refused), (1, 0));
    assert!(
        s.ndp_replies >= 1,
        "G6 was solicited and advertised: {s:#?}"
    );
    h.stop().unwrap();
    h.assert_counters_add_up();
}

#[test]
fn tcp_over_ipv6_to_a_closed_port_is_refused_with_a_reset() {
    let (mut h, gw) = Harness::start(config6());
    h.run(gw);
    let port = TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let handle = h.tcp_connect_to(65536, IpAddress::Ipv6(G6), port, 49200);
    h.until(Duration::from_secs(5), |h| {
        h.tcp(handle).state() == tcp::State::Closed
    });
    assert_eq!(h.counters.snapshot().tcp_refused, 1);
    // Straight to ::1 (a raw SYN a container could craft; not through the mapping): refused
    // as well, nothing connects.
    let syn = testkit::frames::tcp6(
        MAC,
        GW_MAC,
        U6,
        Ipv6Addr::LOCALHOST,
        49201,
        port,
        1,
        0,
        0x02,
        b"",
    );
    h.send_raw(&syn);
    h.until(Duration::from_secs(5), |h| {
        h.counters.snapshot().tcp_refused == 2
    });
    assert_eq!(h.counters.snapshot().tcp_opened, 0);
}

#[test]
fn udp_over_ipv6_echo() {
    let (mut h, gw) = Harness::start(config6());
    h.run(gw);
    let echo = UdpSocket::bind("[::1]:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        for _ in 0..2 {
            let (n, from) = echo.recv_from(&mut b).unwrap();
            echo.send_to(&b[..n], from).unwrap();
        }
    });
    let handle = h.udp_bind(40000);
    let to = IpEndpoint::new(IpAddress::Ipv6(G6), port);
    for i in 0..2u8 {
        let msg = [b'v', b'6', i];
        h.udp(handle).send_slice(&msg, to).unwrap();
        let mut reply = None;
        h.until(Duration::from_secs(5), |h| {
            reply = h.udp_recv(handle);
            reply.is_some()
        });
        let (d, from) = reply.unwrap();
        assert_eq!(d, msg);
        assert_eq!(
            from, to,
            "the reply comes from the address the client sent to"
        );
    }
    server.join().unwrap();
    let s = h.counters.snapshot();
    assert_eq!((s.udp_opened, s.udp_rx), (1, 2));
}

/// A client on the host's ::1 reaches a port published on ::1 and appears from G6 (the address
/// mapped to the host's loopback), its port kept; the reply reaches it.
#[test]
fn published_tcp_port_on_ipv6_loopback_round_trip() {
    let mut cfg = config6();
    cfg.published.push(Published {
        proto: PortProto::Tcp,
        host_addr: Ipv6Addr::LOCALHOST.into(),
        host_port: 0,
    });
    let (mut h, gw) = Harness::start(cfg);
    let addrs = gw.published_addrs();
    assert_eq!(addrs.len(), 1, "an IPv6 address listens there only");
    let addr = addrs[0].as_ref().unwrap().to_owned();
    assert!(addr.is_ipv6());
    h.run(gw);
    // The "container" listens on U6:host_port (the switch's DNAT is not in this test).
    let handle = h.tcp_listen(65536, addr.port());
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let local = s.local_addr().unwrap();
        s.write_all(b"hello over ipv6").unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        (local, reply)
    });
    let mut got = Vec::new();
    h.until(Duration::from_secs(10), |h| {
        h.tcp_drain(handle, &mut got);
        got.len() == 15
    });
    assert_eq!(got, b"hello over ipv6");
    let s = h.tcp(handle);
    let remote = s.remote_endpoint().unwrap();
    let local = s.local_endpoint().unwrap();
    assert_eq!(local, IpEndpoint::new(IpAddress::Ipv6(U6), addr.port()));
    s.send_slice(b"hi back").unwrap();
    s.close();
    h.until(Duration::from_secs(10), |_| client.is_finished());
    let (client_addr, reply) = client.join().unwrap();
    assert_eq!(reply, b"hi back");
    assert_eq!(
        remote,
        IpEndpoint::new(IpAddress::Ipv6(G6), client_addr.port())
    );
    assert_eq!(h.counters.snapshot().tcp_published, 1);
}

/// 0.0.0.0 on a gateway that serves IPv6 listens on [::] too (IPv6 only), on the same port.
#[test]
fn a_port_published_on_every_address_listens_on_both_families() {
    let mut cfg = config6();
    cfg.published.push(Published {
        proto: PortProto::Udp,
        host_addr: std::net::Ipv4Addr::UNSPECIFIED.into(),
        host_port: 0,
    });
    let (mut h, gw) = Harness::start(cfg);
    let addrs: Vec<_> = gw
        .published_addrs()
        .into_iter()
        .map(|a| a.unwrap())
        .collect();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6());
    assert_eq!(addrs[0].port(), addrs[1].port());
    let port = addrs[0].port();
    h.run(gw);
    let handle = h.udp_bind(port);
    // Only over the loopback.
    let host = UdpSocket::bind("[::1]:0").unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.send_to(b"six", ("::1", port)).unwrap();
    let mut got = None;
    h.until(Duration::from_secs(5), |h| {
        got = h.udp_recv(handle);
        got.is_some()
    });
    let (d, from) = got.unwrap();
    assert_eq!(d, b"six");
    let host_port = host.local_addr().unwrap().port();
    assert_eq!(from, IpEndpoint::new(IpAddress::Ipv6(G6), host_port));
    h.udp(handle).send_slice(b"back", from).unwrap();
    let (tx, done) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut b = [0u8; 64];
        let r = host.recv_from(&mut b).map(|(n, a)| (b[..n].to_vec(), a));
        tx.send(()).unwrap();
        r
    });
    h.until(Duration::from_secs(6), |_| done.try_recv().is_ok());
    let (d, a) = reader.join().unwrap().unwrap();
    assert_eq!(d, b"back");
    assert_eq!(a.port(), port, "through the published [::] socket");
}
