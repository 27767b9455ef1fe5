//! Golden pcap scenario of offloaded frames: GSO super-frames with partial checksums, as a port
//! with a virtio-net header reads them, replayed from a pcap with its `in/PORT.offload` side
//! file (see `datapath::replay::read_offloads`). pcap ports take no offloads, so what leaves is
//! what a wire without offloads carries: each super-frame cut into segments with their own
//! lengths, sequence numbers, IP identifiers and complete checksums, bridged as they are or
//! translated by NAT first. Expected segments are built here by etherparse and edited field by
//! field with checksums from scratch (`common::nat::Edit`), and tshark validates every checksum
//! of the expected captures.
//!
//! Regenerate after changing the description (the deliberate flag):
//!
//! ```sh
//! VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_offload
//! ```

#![allow(clippy::unwrap_used)]

mod common;

use common::nat::*;
use common::{OFFLOAD_SCENARIOS, harness};
use packet::tcp_flags;
use std::net::Ipv4Addr;
use testkit::frames::make_partial;
use testkit::golden::{Forwarding, Scenario, Seq, TcpdumpCheck, no_check};

const REGEN_HINT: &str = "if the description changed on purpose, run: VSWITCH_REGEN_FIXTURES=1 cargo test -p datapath --test golden_offload";

/// The segments a super-frame of `payload` becomes: `mss` bytes each, sequence numbers from
/// `seq`, IP identifiers from 0 (the super-frame's), each a complete frame.
fn segments(
    from: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
    macs: (packet::MacAddr, packet::MacAddr),
    seq: u32,
    ack: u32,
    payload: &[u8],
    mss: usize,
) -> Vec<Vec<u8>> {
    payload
        .chunks(mss)
        .enumerate()
        .map(|(i, chunk)| {
            let seg = tcp(
                from,
                to,
                macs,
                seq + (i * mss) as u32,
                ack,
                tcp_flags::ACK,
                chunk,
            );
            let mut e = Edit::new(&seg);
            e.set_u16(18, i as u16);
            e.done()
        })
        .collect()
}

fn gso_super_frames() -> Scenario {
    let mut s = Seq::new();
    let (c1m, c2m, gm, um) = (mac(C1), mac(C2), gw_mac(GW), mac(UP));
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();

    // c2 speaks first, so the bridge knows where it is.
    let hello = udp((C2, 5000), (C1, 5000), (c2m, c1m), b"hello from c2");
    let r_hello = s.send("c2", hello);
    let mut e_c1 = vec![s.same(r_hello)];

    // L2: a 3000-byte super-frame (MSS 1000) from c1 to c2 leaves as three segments.
    let (a, b) = ((C1, 41000), (C2, 8000));
    let sf = make_partial(tcp(a, b, (c1m, c2m), 7000, 1, tcp_flags::ACK, &data));
    let r_l2 = s.send_offloaded("c1", sf, "partial:34:16 tcp4:1000");
    let e_c2: Vec<_> = segments(a, b, (c1m, c2m), 7000, 1, &data, 1000)
        .into_iter()
        .map(|f| (r_l2, f))
        .collect();

    // NAT: c1 connects to WEB:80; the data super-frame (MSS 1200) is translated, then cut.
    let (c, w, u) = ((C1, 40000), (WEB, 80), (UP, 40000));
    let (to_up, back, to_c1) = ((um, ROUTER_MAC), (ROUTER_MAC, um), (gm, c1m));
    let syn = tcp(c, w, (c1m, gm), 1000, 0, tcp_flags::SYN, b"");
    let r_syn = s.send("c1", syn.clone());
    let mut e_up = vec![(r_syn, routed(&syn, to_up, u, w))];
    let synack = tcp(w, u, back, 5000, 1001, tcp_flags::SYN | tcp_flags::ACK, b"");
    e_c1.push((s.send("up", synack.clone()), routed(&synack, to_c1, w, c)));
    let nat_data = &data[..2500];
    let sf = make_partial(tcp(c, w, (c1m, gm), 1001, 5001, tcp_flags::ACK, nat_data));
    let r_nat = s.send_offloaded("c1", sf, "partial:34:16 tcp4:1200");
    for seg in segments(c, w, (c1m, gm), 1001, 5001, nat_data, 1200) {
        e_up.push((r_nat, routed(&seg, to_up, u, w)));
    }

    // A header that lies about its frame (TCP GSO on a UDP datagram) is a counted drop.
    let liar = udp((C1, 6000), (C2, 6000), (c1m, c2m), &[1u8; 200]);
    s.send_offloaded("c1", liar, "partial:34:16 tcp4:1000");

    Scenario {
        name: "gso-super-frames",
        readme: "GSO super-frames with partial checksums, as a packet socket with PACKET_VNET_HDR reads\n\
                 them; their offload state is in in/c1.offload (frame, checksum, GSO). pcap ports take\n\
                 no offloads, so the pipeline segments them and finishes their checksums on the way out.\n\
                 In: c2 says hello to c1; c1 sends c2 a 3000-byte TCP super-frame (MSS 1000); c1 opens\n\
                 172.17.0.2:40000 -> 198.51.100.10:80 through masquerade (SYN, SYN/ACK) and sends a\n\
                 2500-byte super-frame (MSS 1200); c1 sends a UDP datagram whose header claims TCP GSO.\n\
                 Out: c2 gets three 1000-byte segments (sequence +1000 each, IP id 0, 1, 2, complete\n\
                 checksums); `up` gets the SYN and three segments (1200, 1200, 100 bytes) from\n\
                 203.0.113.2:40000 with TTL 63; c1 gets the hello and the SYN/ACK. The lying frame is\n\
                 dropped as bad_offload.\n",
        topo: standard_topo(""),
        input: s,
        expect: vec![("c1", e_c1), ("c2", e_c2), ("up", e_up)],
        drops: vec![("c1", "bad_offload", 1)],
        local: vec![],
        bridge: vec![("gso_segments", 6), ("nat_translated", 3)],
        summary: no_check,
        forwarding: Forwarding::Routed,
        tshark: true,
        tcpdump: TcpdumpCheck {
            port: "c2",
            verbose: false,
            lines: Some(3),
            contains: vec!["172.17.0.2.41000 > 172.17.0.3.8000", "length 1000"],
        },
    }
}

#[test]
fn golden_offload_gso_super_frames() {
    harness(REGEN_HINT).check(gso_super_frames());
}

#[test]
fn offload_fixtures_are_described() {
    assert_eq!(OFFLOAD_SCENARIOS, &[gso_super_frames().name]);
}
