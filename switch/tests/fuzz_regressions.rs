//! Inputs found by the fuzz targets in `fuzz/` (see fuzz/README.md), kept as regression tests
//! of the whole pipeline.

#![allow(clippy::unwrap_used)] // Tests: panicking is how a test fails.

use packet::MacAddr;
use packet::checksum::internet_checksum;
use std::net::Ipv4Addr;
use switch::{Config, Packet, Pipeline, PortId};
use testkit::frames as build;
use testkit::topology::Topo;

/// The gateway's echo reply to a request with identifier 0, sequence 0 and no payload is all
/// zeros but its checksum, which must then be 0xffff (nat_rewrite found the same RFC 1624 edge
/// in the NAT; the gateway's reply used the same update, `packet::checksum::update_u16`).
#[test]
fn gateway_echo_reply_to_all_zero_request_verifies() {
    let topo = Topo::new()
        .routed("bridge", "172.17.0.0/16", "172.17.0.1")
        .port("c1", "bridge")
        .build();
    let mut p = Pipeline::new(&Config::from_toml(&topo).unwrap()).unwrap();
    let host = Ipv4Addr::new(172, 17, 0, 2);
    let gw = Ipv4Addr::new(172, 17, 0, 1);
    let req = build::icmp_echo(
        MacAddr([2, 0, 0, 0, 0, 2]),
        MacAddr::docker(gw),
        host,
        gw,
        true,
        0,
        0,
        b"",
    );
    let mut input = vec![Packet::new(PortId(0), req)];
    let mut output = Vec::new();
    p.process(1_000_000_000, &mut input, &mut output);
    assert_eq!(output.len(), 1, "{output:?}");
    let reply = &output[0].data;
    assert_eq!(&reply[34..], &[0, 0, 0xff, 0xff, 0, 0, 0, 0], "echo reply");
    assert_eq!(internet_checksum(&reply[14..34]), 0, "IPv4 checksum");
    assert_eq!(internet_checksum(&reply[34..]), 0, "ICMP checksum");
}
