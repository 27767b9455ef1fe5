#![allow(clippy::unwrap_used)]
//! End-to-end tests: a smoltcp client stack (playing the switch's uplink, address U) talks through
//! the gateway to services on the host's 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use packet::PortProto;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use sockgw::GatewayConfig;

const TEN_MB: usize = 10 * 1024 * 1024;
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn tcp_download_and_upload_10mb() {
    let (mut h, gw) = Harness::start(config());
    h.run(gw);

    // Host → client.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = pattern(TEN_MB, 0x5a);
    let to_send = data.clone();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&to_send).unwrap();
    });
    let handle = h.tcp_connect(4 << 20, port, 49152);
    let mut got = Vec::with_capacity(TEN_MB);
    let start = Instant::now();
    h.until(LIMIT, |h| {
        h.tcp_drain(handle, &mut got);
        let s = h.tcp(handle);
        if !s.may_recv() && s.state() == tcp::State::CloseWait {
            s.close();
        }
        got.len() == TEN_MB && !s.is_open()
    });
    let down = start.elapsed();
    server.join().unwrap();
    assert!(got == data, "downloaded bytes differ");

    // Client → host.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        v
    });
    let handle = h.tcp_connect(4 << 20, port, 49153);
    let data = pattern(TEN_MB, 0xa5);
    let mut sent = 0;
    let start = Instant::now();
    h.until(LIMIT, |h| {
        let s = h.tcp(handle);
        while sent < data.len() && s.can_send() {
            sent += s.send_slice(&data[sent..]).unwrap();
        }
        if sent == data.len() && s.may_send() {
            s.close();
        }
        server.is_finished()
    });
    let up = start.elapsed();
    let v = server.join().unwrap();
    assert!(
        v == data,
        "uploaded bytes differ ({} of {})",
        v.len(),
        data.len()
    );

    let mbit = |d: Duration| TEN_MB as f64 * 8.0 / d.as_secs_f64() / 1e6;
    println!(
        "sockgw throughput: download {:.0} Mbit/s ({down:?}), upload {:.0} Mbit/s ({up:?})",
        mbit(down),
        mbit(up)
    );
    // Both flows end and are freed.
    h.until(Duration::from_secs(10), |h| {
        h.counters.snapshot().tcp_closed == 2
    });
    let s = h.counters.snapshot();
    assert_eq!(s.tcp_opened, 2);
    assert!(s.bytes_to_host >= TEN_MB as u64 && s.bytes_from_host >= TEN_MB as u64);
    h.stop().unwrap();
    h.assert_counters_add_up();
}

#[test]
fn closed_port_is_refused_with_a_reset() {
    let (mut h, gw) = Harness::start(config());
    h.run(gw);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let handle = h.tcp_connect(65536, port, 49200);
    // smoltcp's SYN-SENT retransmits forever unless reset: CLOSED means a RST came.
    h.until(Duration::from_secs(5), |h| {
        h.tcp(handle).state() == tcp::State::Closed
    });
    let s = h.counters.snapshot();
    assert_eq!(s.tcp_refused, 1);
    assert_eq!(s.tcp_opened, 0);
}

#[test]
fn udp_echo() {
    let (mut h, gw) = Harness::start(config());
    h.run(gw);
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        for _ in 0..3 {
            let (n, from) = echo.recv_from(&mut b).unwrap();
            echo.send_to(&b[..n], from).unwrap();
        }
    });
    let handle = h.udp_bind(40000);
    let to = IpEndpoint::new(IpAddress::Ipv4(G), port);
    for i in 0..3u8 {
        let msg = [b'p', b'i', b'n', b'g', i];
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
    assert_eq!(s.udp_opened, 1, "one flow for one 4-tuple");
    assert_eq!(s.udp_rx, 3);
}

/// A client on the host's 127.0.0.1 must not appear from 127.0.0.1 (a container's kernel
/// drops that as a martian): it appears from the address that maps to the host's loopback.
#[test]
fn published_tcp_port_from_the_host_loopback_appears_from_the_mapped_address() {
    published_tcp_round_trip(config_publishing(PortProto::Tcp), G);
}

/// Without a `host_loopback` mapping, a loopback client appears from the next hop.
#[test]
fn published_tcp_port_from_the_host_loopback_appears_from_the_next_hop() {
    let next_hop = Ipv4Addr::new(10, 0, 2, 3);
    let mut cfg = config_publishing(PortProto::Tcp);
    cfg.host_loopback = None;
    cfg.next_hop = Some(next_hop);
    published_tcp_round_trip(cfg, next_hop);
}

/// A host client connects to the port published on 127.0.0.1 by `cfg`; the "container" must
/// see it from `seen` and its reply must reach the client.
fn published_tcp_round_trip(cfg: GatewayConfig, seen: Ipv4Addr) {
    let (mut h, gw) = Harness::start(cfg);
    let addr = gw.published_addrs().remove(0).unwrap();
    h.run(gw);
    // The "container" listens on U:host_port (the switch's DNAT is not in this test).
    let handle = h.tcp_listen(65536, addr.port());
    let (tx, rx) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        tx.send(s.local_addr().unwrap()).unwrap();
        s.write_all(b"hello from the host").unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        reply
    });
    let client_addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut got = Vec::new();
    h.until(Duration::from_secs(10), |h| {
        h.tcp_drain(handle, &mut got);
        got.len() == 19
    });
    assert_eq!(got, b"hello from the host");
    let remote = h.tcp(handle).remote_endpoint().unwrap();
    assert_eq!(
        remote,
        IpEndpoint::new(IpAddress::Ipv4(seen), client_addr.port())
    );
    let s = h.tcp(handle);
    s.send_slice(b"hi back").unwrap();
    s.close();
    h.until(Duration::from_secs(10), |_| client.is_finished());
    assert_eq!(client.join().unwrap(), b"hi back");
    assert_eq!(h.counters.snapshot().tcp_published, 1);
}

#[test]
fn garbage_is_counted_and_service_continues() {
    let (mut h, gw) = Harness::start(config());
    h.run(gw);
    let mut junk: Vec<Vec<u8>> = vec![
        vec![0u8; 5],
        vec![0xffu8; 13],
        testkit::frames::ethernet(MAC, GW_MAC, 0x0800, &[0x45, 0, 0, 20]),
        testkit::frames::ethernet(MAC, GW_MAC, 0x0806, &[1, 2, 3]),
    ];
    // A UDP frame with a broken IPv4 header checksum.
    let mut f = testkit::frames::udp(MAC, GW_MAC, U, G, 1, 2, b"x");
    f[24] ^= 0xff;
    junk.push(f);
    // IPv4 total length beyond the frame.
    let mut f = testkit::frames::udp(MAC, GW_MAC, U, G, 1, 2, b"x");
    f[16] = 0xff;
    junk.push(f);
    // A TCP header cut short.
    let f = testkit::frames::tcp(MAC, GW_MAC, U, G, 1, 2, 0, 0, 0x02, b"");
    let mut cut = f[..14 + 20 + 10].to_vec();
    cut[16..18].copy_from_slice(&30u16.to_be_bytes());
    let mut ip = smoltcp::wire::Ipv4Packet::new_unchecked(&mut cut[14..]);
    ip.fill_checksum();
    junk.push(cut);
    // Pseudo-random bytes addressed to the gateway.
    let mut x = 0x1234_5678u32;
    for len in [60usize, 200, 1500] {
        let mut v: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        v[0..6].copy_from_slice(&GW_MAC.0);
        v[12] = 0x08;
        v[13] = 0x00;
        junk.push(v);
    }
    // Not for us; IPv6; an ICMP echo (answered only where ping sockets are allowed).
    junk.push(testkit::frames::udp(MAC, MAC, U, G, 1, 2, b"x"));
    junk.push(testkit::frames::ethernet(MAC, GW_MAC, 0x86dd, &[0x60; 40]));
    junk.push(testkit::frames::icmp_echo(
        MAC, GW_MAC, U, G, true, 7, 1, b"abc",
    ));
    let n = junk.len() as u64;
    for j in &junk {
        h.send_raw(j);
    }
    // Wait for the frames to be fully handled, not just received (frames_rx is counted first).
    h.until(Duration::from_secs(5), |h| {
        let s = h.counters.snapshot();
        s.rx_handled() + s.rx_dropped() >= n
    });
    let s = h.counters.snapshot();
    assert!(s.drop_malformed >= 9, "{s:#?}");
    assert_eq!(s.drop_not_for_us, 1);
    assert!(s.drop_unsupported >= 1);
    assert_eq!(s.icmp_rx + s.drop_icmp_unavailable, 1);

    // ARP for any address is answered with the gateway's MAC.
    let before = s.arp_replies;
    h.send_raw(&testkit::frames::arp_request(
        MAC,
        U,
        Ipv4Addr::new(192, 0, 2, 1),
    ));
    h.until(Duration::from_secs(5), |h| {
        h.counters.snapshot().arp_replies > before
    });

    // Still serving: a TCP round trip through a loopback echo server.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });
    let handle = h.tcp_connect(65536, port, 49300);
    let mut sent = false;
    let mut got = Vec::new();
    h.until(Duration::from_secs(10), |h| {
        let s = h.tcp(handle);
        if !sent && s.can_send() {
            s.send_slice(b"ping").unwrap();
            sent = true;
        }
        h.tcp_drain(handle, &mut got);
        got.len() == 4
    });
    assert_eq!(got, b"ping");
    server.join().unwrap();
    h.stop().unwrap();
    h.assert_counters_add_up();
}

#[test]
fn published_udp_port_round_trip() {
    let (mut h, gw) = Harness::start(config_publishing(PortProto::Udp));
    let addr = gw.published_addrs().remove(0).unwrap();
    h.run(gw);
    let handle = h.udp_bind(addr.port());
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.send_to(b"hello", addr).unwrap();
    let mut got = None;
    h.until(Duration::from_secs(5), |h| {
        got = h.udp_recv(handle);
        got.is_some()
    });
    let (d, from) = got.unwrap();
    assert_eq!(d, b"hello");
    let host_port = host.local_addr().unwrap().port();
    assert_eq!(
        from,
        IpEndpoint::new(IpAddress::Ipv4(G), host_port),
        "a client on the host's loopback appears from the mapped address, its port kept"
    );
    h.udp(handle).send_slice(b"reply", from).unwrap();
    let (tx, done) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut b = [0u8; 64];
        let r = host.recv_from(&mut b).map(|(n, a)| (b[..n].to_vec(), a));
        tx.send(()).unwrap();
        r
    });
    h.until(Duration::from_secs(6), |_| done.try_recv().is_ok());
    let (d, a) = reader.join().unwrap().unwrap();
    assert_eq!(
        d, b"reply",
        "the reply to the mapped address reached the real client"
    );
    assert_eq!(a, addr, "the reply leaves through the published socket");
}

#[test]
fn host_loopback_is_reached_only_through_the_mapping() {
    let (mut h, gw) = Harness::start(config());
    h.run(gw);
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    echo.set_nonblocking(true).unwrap();
    let port = echo.local_addr().unwrap().port();
    let handle = h.udp_bind(40001);
    // Straight to 127.0.0.1 (a raw packet a container could craft): refused and counted.
    let direct = IpEndpoint::new(IpAddress::Ipv4(Ipv4Addr::LOCALHOST), port);
    h.udp(handle).send_slice(b"sneak", direct).unwrap();
    h.until(Duration::from_secs(5), |h| {
        h.counters.snapshot().drop_forbidden == 1
    });
    let mut b = [0u8; 64];
    assert!(
        echo.recv_from(&mut b).is_err(),
        "nothing reached the host's loopback"
    );
    // Through the mapped address it arrives.
    let mapped = IpEndpoint::new(IpAddress::Ipv4(G), port);
    h.udp(handle).send_slice(b"hello", mapped).unwrap();
    let mut got = None;
    h.until(Duration::from_secs(5), |_| {
        got = echo.recv_from(&mut b).ok().map(|(n, _)| b[..n].to_vec());
        got.is_some()
    });
    assert_eq!(got.unwrap(), b"hello");
}
