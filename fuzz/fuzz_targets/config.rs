//! `switch::Config::from_toml`, `Topology::new` and `Pipeline::new` on arbitrary text: no panic,
//! and the pipeline accepts exactly the configs the topology check accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switch::{Config, Packet, Pipeline, PortId, Topology};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::from_toml(text) else {
        return;
    };
    let topo = Topology::new(&cfg);
    let pipe = Pipeline::new(&cfg);
    assert_eq!(
        topo.is_ok(),
        pipe.is_ok(),
        "{:?} vs {:?}",
        topo.err(),
        pipe.err()
    );
    let Ok(mut pipe) = pipe else {
        return;
    };
    // One broadcast frame through whatever was configured.
    let n = pipe.topology().ports.len();
    let mut input: Vec<Packet> = (0..n.min(4))
        .map(|p| Packet::new(PortId(p as u16), testkit::frames::arp_request(
                packet::MacAddr([2, 0, 0, 0, 0, 1]),
                [10, 0, 0, 2].into(),
                [10, 0, 0, 1].into(),
            )))
        .collect();
    let mut output = Vec::new();
    pipe.process(1, &mut input, &mut output);
    for p in &output {
        assert!(pipe.topology().port(p.port).is_some());
    }
    let _ = pipe.snapshot(1);
});
