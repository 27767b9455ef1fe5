//! A virtio-net header and a frame, as a packet socket or TAP hands them over, on arbitrary
//! bytes: the header is refused or its state matches the frame; a frame whose state was
//! accepted goes through the pipeline (to a plain port and to an offload port) and through
//! software segmentation without panicking; every segment of a super-frame is no longer than
//! its headers and one segment, with a checksum that verifies; plain ports get plain frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use packet::Ipv4Addr;
use packet::checksum::l4_checksum;
use packet::gso::segment;
use packet::offload::{Capabilities, Layout, Offload, VNET_HDR_LEN};
use switch::{Config, Packet, Pipeline, PortId};


fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_at_checked(VNET_HDR_LEN + 1) else {
        return;
    };
    let (limit, header) = (header[VNET_HDR_LEN], &header[..VNET_HDR_LEN]);
    let Ok(offload) = Offload::from_vnet_hdr(header, rest) else {
        return;
    };
    assert!(offload.check(rest).is_ok(), "accepted state re-checks");

    let max = (limit != 0).then(|| u16::from(limit) * 8);
    let mut scratch = Vec::new();
    let headers = Layout::of(rest).map(|l| l.headers_len);
    let size = offload.gso.segment_size();
    let _ = segment(rest, &offload, max, &mut scratch, &mut |seg| {
        if let (Some(h), Some(s)) = (headers, size) {
            assert!(seg.len() <= h + usize::from(s), "segment longer than its size");
        }
        // A segment cut from a super-frame has its TCP/UDP checksum computed afresh: it
        // verifies over the IPv4 pseudo-header.
        if let (Some(l), Some(_)) = (Layout::of(seg), size)
            && !l.ipv6
        {
            let ip = |i: usize| Ipv4Addr::new(seg[i], seg[i + 1], seg[i + 2], seg[i + 3]);
            let ck = l4_checksum(ip(l.l3 + 12), ip(l.l3 + 16), l.proto, &seg[l.l4..l.end]);
            assert_eq!(ck, 0, "segment checksum does not verify");
        }
    });

    let Ok(config) = Config::from_toml(&testkit::topology::standard().build()) else {
        return;
    };
    let Ok(mut pipeline) = Pipeline::new(&config) else {
        return;
    };
    // c1 (0) and the uplink (2) take plain frames, c2 (1) takes every offload.
    pipeline.set_port_offloads(PortId(1), Capabilities::ALL);
    let mut out = Vec::new();
    for (i, port) in [PortId(0), PortId(2)].into_iter().enumerate() {
        let mut input = vec![Packet::with_offload(port, rest.to_vec(), offload)];
        pipeline.process(1 + i as u64, &mut input, &mut out);
    }
    assert_eq!(
        pipeline.bridge_counters().gso_failed,
        0,
        "an accepted state failed segmentation"
    );
    for p in &out {
        // Ports without offloads get plain frames only.
        if p.port != PortId(1) {
            assert!(p.offload.is_plain(), "offloaded frame to a plain port");
        }
    }
});
