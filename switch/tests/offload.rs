//! Offloaded frames through the pipeline: GSO super-frames and partial checksums pass whole to
//! ports that take them, are segmented and finished in software for ports that do not, meet the
//! MTU by their segment size, and keep a correct checksum through NAT (the pseudo-header rule).
//! Every frame that leaves is decoded and its checksums verified by etherparse, an
//! implementation independent of the code under test.

#![allow(clippy::unwrap_used)]

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use packet::offload::{Capabilities, Checksum, Gso, Offload};
use std::net::Ipv4Addr;
use switch::{Config, DropReason, Packet, Pipeline, PortId};
use testkit::frames::make_partial;
use testkit::topology;

/// `bridge` with c1 and c2, the static uplink `up` (next hop by MAC); `mtu` on the uplink.
fn topo(uplink_mtu: Option<u16>) -> String {
    let t = topology::Topo::new()
        .bridge(&[("mtu", "1500")])
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .ports("bridge", &["c1", "c2"])
        .uplink_port("up")
        .uplink_static("up");
    match uplink_mtu {
        Some(m) => t.set("mtu", m).build(),
        None => t.build(),
    }
}

const C1: PortId = PortId(0);
const C2: PortId = PortId(1);
const UP: PortId = PortId(2);
const SEC: u64 = 1_000_000_000;

const C1_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 2];
const C2_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 3];
const GW_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 1];
const C1_IP: [u8; 4] = [172, 17, 0, 2];
const C2_IP: [u8; 4] = [172, 17, 0, 3];
/// A server on the internet, off-link (through the static next hop).
const INET: [u8; 4] = [198, 51, 100, 10];

fn pipeline() -> Pipeline {
    pipeline_with(None)
}

fn pipeline_with(uplink_mtu: Option<u16>) -> Pipeline {
    Pipeline::new(&Config::from_toml(&topo(uplink_mtu)).unwrap()).unwrap()
}

/// A TCP super-frame as a kernel with TSO hands it over: one IPv4/TCP header (DF set) for
/// `payload`, the TCP checksum field holding the pseudo-header sum, `mss` per segment.
fn super_frame(dst_mac: [u8; 6], dst: [u8; 4], payload: &[u8], mss: u16) -> (Vec<u8>, Offload) {
    let mut ip = etherparse::Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, C1_IP, dst).unwrap();
    ip.dont_fragment = true;
    ip.identification = 777;
    let b = PacketBuilder::ethernet2(C1_MAC, dst_mac)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(40000, 80, 1_000_000, 64240)
        .ack(5001)
        .psh();
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    let f = make_partial(f);
    let o = Offload {
        checksum: Checksum::Partial {
            start: 34,
            offset: 16,
        },
        gso: Gso::Tcp {
            mss,
            ipv6: false,
            ecn: false,
        },
    };
    (f, o)
}

/// Decodes `f` and checks its IPv4 and TCP checksums; returns (src, dst, seq, payload).
fn verified(f: &[u8]) -> (Ipv4Addr, Ipv4Addr, u32, Vec<u8>) {
    let p = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.calc_header_checksum(), h.header_checksum, "IPv4 checksum");
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!("not TCP")
    };
    let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
    assert_eq!(t.checksum(), want, "TCP checksum");
    (
        h.source.into(),
        h.destination.into(),
        t.sequence_number(),
        t.payload().to_vec(),
    )
}

fn run(p: &mut Pipeline, now: u64, port: PortId, data: Vec<u8>, o: Offload) -> Vec<Packet> {
    let mut out = Vec::new();
    p.process(
        now,
        &mut vec![Packet::with_offload(port, data, o)],
        &mut out,
    );
    out
}

/// c2 announces itself so the bridge knows its port.
fn learn_c2(p: &mut Pipeline) {
    let b = PacketBuilder::ethernet2(C2_MAC, C1_MAC)
        .ipv4(C2_IP, C1_IP, 64)
        .udp(1, 2);
    let mut f = Vec::new();
    b.write(&mut f, b"hi").unwrap();
    run(p, SEC, C2, f, Offload::NONE);
}

/// c1 opens a connection to the internet server (SYN, SYN/ACK through masquerade), so the data
/// that follows is part of a tracked connection.
fn handshake(p: &mut Pipeline) {
    let b = PacketBuilder::ethernet2(C1_MAC, GW_MAC)
        .ipv4(C1_IP, INET, 64)
        .tcp(40000, 80, 999_999, 64240)
        .syn();
    let mut syn = Vec::new();
    b.write(&mut syn, &[]).unwrap();
    let out = run(p, SEC, C1, syn, Offload::NONE);
    assert_eq!(out.len(), 1, "SYN masqueraded");
    let masq_port = match SlicedPacket::from_ethernet(&out[0].data).unwrap().transport {
        Some(TransportSlice::Tcp(t)) => t.source_port(),
        _ => panic!("not TCP: {:02x?} on {:?}", out[0].data, out[0].port),
    };
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xfe], [0; 6])
        .ipv4(INET, [203, 0, 113, 2], 64)
        .tcp(80, masq_port, 5000, 64240)
        .syn()
        .ack(1_000_000);
    let mut synack = Vec::new();
    b.write(&mut synack, &[]).unwrap();
    let uplink_mac = p.topology().uplink.unwrap().mac;
    synack[..6].copy_from_slice(&uplink_mac.0);
    let out = run(p, SEC, UP, synack, Offload::NONE);
    assert_eq!(out.len(), 1, "SYN/ACK back to c1");
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7) as u8).collect()
}

#[test]
fn a_super_frame_passes_whole_to_a_port_that_takes_it() {
    let mut p = pipeline();
    learn_c2(&mut p);
    assert!(p.set_port_offloads(C2, Capabilities::ALL));
    let (f, o) = super_frame(C2_MAC, C2_IP, &payload(60_000), 1448);
    let out = run(&mut p, 2 * SEC, C1, f.clone(), o);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, C2);
    assert_eq!(out[0].offload, o);
    assert_eq!(out[0].data, f, "L2 forwarding leaves the bytes alone");
    assert_eq!(p.port_counters(C1).unwrap().forwarded, 1);
    assert_eq!(p.port_counters(C1).unwrap().rx_gso, 1);
    assert_eq!(p.port_counters(C2).unwrap().tx_gso, 1);
}

#[test]
fn a_port_without_offloads_gets_segments_with_final_checksums() {
    let mut p = pipeline();
    learn_c2(&mut p);
    let data = payload(10_000);
    let (f, o) = super_frame(C2_MAC, C2_IP, &data, 1448);
    let out = run(&mut p, 2 * SEC, C1, f, o);
    assert_eq!(out.len(), 7, "10000 bytes in 1448-byte segments");
    let mut joined = Vec::new();
    let mut seq = 1_000_000u32;
    for pkt in &out {
        assert_eq!(pkt.port, C2);
        assert!(pkt.offload.is_plain());
        assert!(pkt.data.len() <= 1514);
        let (_, _, s, pl) = verified(&pkt.data);
        assert_eq!(s, seq);
        seq = seq.wrapping_add(pl.len() as u32);
        joined.extend(pl);
    }
    assert_eq!(joined, data);
    assert_eq!(p.bridge_counters().gso_segments, 7);
    assert_eq!(
        p.port_counters(C2).unwrap().tx_gso,
        0,
        "segments are plain frames"
    );
    assert_eq!(p.port_counters(C2).unwrap().tx_frames, 7);
}

#[test]
fn segments_too_big_for_the_mtu_or_a_lying_header_are_dropped() {
    let mut p = pipeline();
    learn_c2(&mut p);
    // Segments of 1600 bytes do not fit a 1500-byte MTU: oversize, as Linux's bridge would.
    let (f, o) = super_frame(C2_MAC, C2_IP, &payload(5000), 1600);
    assert!(run(&mut p, 2 * SEC, C1, f, o).is_empty());
    assert_eq!(
        p.port_counters(C1).unwrap().drops.get(DropReason::Oversize),
        1
    );
    // A UDP GSO type on a TCP frame.
    let (f, mut o) = super_frame(C2_MAC, C2_IP, &payload(5000), 1000);
    o.gso = Gso::Udp { size: 1000 };
    assert!(run(&mut p, 2 * SEC, C1, f, o).is_empty());
    assert_eq!(
        p.port_counters(C1)
            .unwrap()
            .drops
            .get(DropReason::BadOffload),
        1
    );
}

#[test]
fn masquerade_keeps_a_partial_checksum_right() {
    let mut p = pipeline();
    assert!(p.set_port_offloads(UP, Capabilities::ALL));
    handshake(&mut p);
    let data = payload(20_000);
    let (f, o) = super_frame(GW_MAC, INET, &data, 1300);
    let out = run(&mut p, 2 * SEC, C1, f, o);
    assert_eq!(out.len(), 1, "{out:?}");
    let mut frame = out[0].data.clone();
    assert_eq!(out[0].offload, o);
    // Finish the checksum as the device would, then check it is the right one.
    packet::gso::complete_checksum(&mut frame, 34, 16).unwrap();
    let (src, dst, _, pl) = verified(&frame);
    assert_eq!(src, Ipv4Addr::new(203, 0, 113, 2));
    assert_eq!(dst, Ipv4Addr::from(INET));
    assert_eq!(pl, data);
}

#[test]
fn masquerade_to_a_port_without_offloads_segments_after_translation() {
    let mut p = pipeline();
    handshake(&mut p);
    let data = payload(5000);
    let (f, o) = super_frame(GW_MAC, INET, &data, 1300);
    let out = run(&mut p, 2 * SEC, C1, f, o);
    assert_eq!(out.len(), 4);
    let mut joined = Vec::new();
    for pkt in &out {
        assert_eq!(pkt.port, UP);
        let (src, _, _, pl) = verified(&pkt.data);
        assert_eq!(src, Ipv4Addr::new(203, 0, 113, 2));
        joined.extend(pl);
    }
    assert_eq!(joined, data);
}

#[test]
fn segments_above_the_uplink_mtu_get_fragmentation_needed() {
    let mut p = pipeline_with(Some(1400));
    assert!(p.set_port_offloads(UP, Capabilities::ALL));
    handshake(&mut p);
    // 1448-byte segments make 1488-byte packets: more than the uplink's 1400, with DF.
    let (f, o) = super_frame(GW_MAC, INET, &payload(5000), 1448);
    let out = run(&mut p, 2 * SEC, C1, f, o);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].port, C1, "the error goes back to the sender");
    let p2 = SlicedPacket::from_ethernet(&out[0].data).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = p2.transport else {
        panic!("not ICMP")
    };
    assert_eq!(icmp.type_u8(), 3);
    assert_eq!(icmp.code_u8(), 4);
    assert_eq!(&icmp.bytes5to8()[2..4], &1400u16.to_be_bytes());
    assert_eq!(
        p.port_counters(C1)
            .unwrap()
            .drops
            .get(DropReason::FragNeeded),
        1
    );
}
