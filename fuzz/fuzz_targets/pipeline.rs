//! `switch::Pipeline::process` on a fixed topology fed arbitrary batches: records of
//! `[tag, port, len_hi, len_lo, body]` (see `vswitch_fuzz::record`): clock advances (up to
//! hours, so every expiry runs), snapshots, raw frames and frames built from the body with
//! etherparse, on any port id (also ones that do not exist). Every output frame must leave by an
//! existing port and be at least an Ethernet header long.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use switch::dns_gateway::DnsTable;
use switch::{Config, NetworkId, Packet, Pipeline, PortId};
use vswitch_fuzz::{FrameSpec, PORTS, advance, record, topology};

fn pipeline(eim: bool) -> Pipeline {
    let text = topology(eim);
    let cfg = Config::from_toml(&text).expect("the fuzz topology parses");
    let mut p = Pipeline::new(&cfg).expect("the fuzz topology is valid");
    let backend = p
        .topology()
        .network_by_name("backend")
        .expect("backend network");
    let names = [
        ("b1", Ipv4Addr::new(172, 18, 0, 2)),
        ("web", Ipv4Addr::new(172, 18, 0, 10)),
        ("web", Ipv4Addr::new(172, 18, 0, 11)),
    ];
    p.set_dns_table(
        backend,
        Some(DnsTable::new(
            names.iter().map(|(n, a)| (n.to_string(), *a)),
        )),
    );
    let _: NetworkId = backend;
    p
}

fn run(p: &mut Pipeline, now: u64, input: &mut Vec<Packet>) {
    let mut output = Vec::new();
    p.process(now, input, &mut output);
    assert!(input.is_empty(), "process drains its input");
    for out in &output {
        assert!(
            p.topology().port(out.port).is_some(),
            "frame sent to port {:?}, which does not exist",
            out.port
        );
        assert!(
            out.data.len() >= packet::ETH_HEADER_LEN,
            "runt of {} bytes sent to {:?}",
            out.data.len(),
            out.port
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut p = pipeline(mode & 1 == 1);
    assert_eq!(p.topology().ports.len(), PORTS.len());
    let mut now: u64 = 1_000_000_000;
    let mut input = Vec::new();
    let mut frames = 0usize;
    while rest.len() >= 4 && frames < 512 {
        let (tag, port) = (rest[0], rest[1]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let end = (4 + len).min(rest.len());
        let body = &rest[4..end];
        rest = &rest[end..];
        // Ports 0..=3 exist; 4 and above mostly do not.
        let port = PortId(if port < 0xf0 {
            u16::from(port % 5)
        } else {
            u16::from(port) << 4
        });
        match tag % 4 {
            record::CLOCK => {
                run(&mut p, now, &mut input);
                now = now.saturating_add(advance(body));
            }
            record::SNAPSHOT => {
                let _ = p.snapshot(now);
            }
            record::BUILT => {
                let mut u = Unstructured::new(body);
                if let Ok(spec) = FrameSpec::arbitrary(&mut u) {
                    input.push(Packet::new(port, spec.build()));
                    frames += 1;
                }
            }
            _ => {
                input.push(Packet::new(port, body.to_vec()));
                frames += 1;
            }
        }
        if input.len() >= 64 {
            run(&mut p, now, &mut input);
        }
    }
    run(&mut p, now, &mut input);
    let _ = p.snapshot(now.saturating_add(3_600_000_000_000));
});
