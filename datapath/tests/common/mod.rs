//! What the golden-pcap checkers (`golden.rs`: L2 scenarios, `golden_nat.rs`: gateway and NAT
//! scenarios, `golden_ipv6.rs`: IPv6 at the gateway, `golden_offload.rs`: offloads,
//! `golden_overlay.rs`: a VXLAN overlay) share beyond `testkit::golden`: the datapath as the
//! harness's [`Driver`], the fixtures root and the list of scenario folders each checker owns.

// Each test crate compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod nat;

use datapath::pcap::{Record as PcapRecord, read_file, write_file};
use std::path::{Path, PathBuf};
use switch::{Config, DropReason, Topology};
use testkit::golden::{Driver, Harness, Outcome, PortCounts, Record};

/// The scenario folders described by `golden_nat.rs` (so that `golden.rs`, which checks that no
/// folder under `pcap-fixtures/` is orphaned, knows they are owned).
pub const NAT_SCENARIOS: &[&str] = &[
    "dnat-published",
    "gateway-arp-ping",
    "hairpin",
    "icmp-error-translation",
    "internal-and-icc",
    "snat-tcp",
    "snat-udp-and-icmp",
    "table-full-and-port-exhaustion",
    "ttl-expiry",
];

/// The scenario folders described by `golden_ipv6.rs`.
pub const IPV6_SCENARIOS: &[&str] = &["ipv6-gateway-nd", "ipv6-nat66"];

/// The scenario folders described by `golden_offload.rs`.
pub const OFFLOAD_SCENARIOS: &[&str] = &["gso-super-frames"];

/// The scenario folders described by `golden_overlay.rs`.
pub const OVERLAY_SCENARIOS: &[&str] = &["overlay-vxlan"];

pub fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcap-fixtures")
}

/// The harness over `pcap-fixtures/` with `datapath::replay` under test.
pub fn harness(hint: &'static str) -> Harness<Replay> {
    Harness {
        driver: Replay,
        root: fixtures_root(),
        hint,
    }
}

/// `datapath::replay` and `datapath::pcap` as the golden harness's driver.
pub struct Replay;

impl Driver for Replay {
    fn port_names(&self, topo: &str) -> Vec<String> {
        let t = Topology::new(&Config::from_toml(topo).unwrap()).unwrap();
        t.ports.into_iter().map(|p| p.name).collect()
    }

    fn inputs(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
        datapath::replay::scenario_inputs(dir).map_err(|e| e.to_string())
    }

    fn replay(&self, dir: &Path, out: &Path) -> Result<Outcome, String> {
        let text = std::fs::read_to_string(dir.join("topo.toml")).map_err(|e| e.to_string())?;
        let config = Config::from_toml(&text).map_err(|e| e.to_string())?;
        let inputs = self.inputs(dir)?;
        let summary = datapath::replay::replay(&config, &inputs, out).map_err(|e| e.to_string())?;
        // The file's ports: an overlay network's VXLAN port is the pipeline's own, and what
        // it sends is checked where it leaves, encapsulated, on the uplink.
        let described = self.port_names(&text);
        let ports = summary
            .state
            .ports
            .iter()
            .filter(|p| described.contains(&p.name))
            .map(|p| {
                let c = &p.counters;
                PortCounts {
                    name: p.name.clone(),
                    rx_frames: c.rx_frames,
                    tx_frames: c.tx_frames,
                    forwarded: c.forwarded,
                    local: c.local,
                    queued: c.queued,
                    dropped: c.dropped(),
                    drops: DropReason::ALL
                        .iter()
                        .map(|r| (r.as_str(), c.drops.get(*r)))
                        .collect(),
                }
            })
            .collect();
        Ok(Outcome {
            frames_in: summary.frames_in,
            frames_out: summary.frames_out,
            ports,
            bridge: serde_json::to_value(summary.state.bridge).map_err(|e| e.to_string())?,
        })
    }

    fn read_pcap(&self, path: &Path) -> Vec<Record> {
        read_file(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .into_iter()
            .map(|r| Record {
                timestamp: r.timestamp,
                orig_len: r.orig_len,
                data: r.data,
            })
            .collect()
    }

    fn write_pcap(&self, path: &Path, records: &[Record]) {
        let records: Vec<PcapRecord> = records
            .iter()
            .map(|r| PcapRecord {
                timestamp: r.timestamp,
                orig_len: r.orig_len,
                data: r.data.clone(),
            })
            .collect();
        write_file(path, &records).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
