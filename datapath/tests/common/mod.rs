//! Helpers shared by the golden-pcap checkers (`golden.rs`: L2 scenarios, `golden_nat.rs`:
//! gateway and NAT scenarios): the input sequencer, fixture paths and the list of scenario folders
//! each checker owns.

// Each test crate compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use packet::MacAddr;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use switch::{Config, Topology};

/// Capture clock of the first frame of every scenario (2023-11-14), in seconds since the epoch.
pub const BASE_SECS: u64 = 1_700_000_000;

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

/// A frame of an input: which port it enters and its index in that port's capture.
pub type FrameRef = (&'static str, usize);

pub struct Input {
    pub port: &'static str,
    pub timestamp: Duration,
    pub data: Vec<u8>,
}

/// The input of a scenario, in sending order, with a capture clock that advances 1 ms per frame
/// (so that no two frames share a timestamp and the merge order is the sending order).
pub struct Seq {
    pub now: Duration,
    pub frames: Vec<Input>,
}

impl Seq {
    pub fn new() -> Seq {
        Seq {
            now: Duration::from_secs(BASE_SECS),
            frames: Vec::new(),
        }
    }

    pub fn send(&mut self, port: &'static str, data: Vec<u8>) -> FrameRef {
        let index = self.frames.iter().filter(|f| f.port == port).count();
        self.frames.push(Input {
            port,
            timestamp: self.now,
            data,
        });
        self.now += Duration::from_millis(1);
        (port, index)
    }

    pub fn wait(&mut self, d: Duration) {
        self.now += d;
    }

    /// The input frame `r` names.
    pub fn get(&self, r: FrameRef) -> &Input {
        self.frames
            .iter()
            .filter(|f| f.port == r.0)
            .nth(r.1)
            .unwrap_or_else(|| panic!("no input frame {r:?}"))
    }
}

pub fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcap-fixtures")
}

pub fn regen_requested() -> bool {
    std::env::var_os("VSWITCH_REGEN_FIXTURES").is_some_and(|v| v == "1")
}

/// Port names of a topology, in topology order.
pub fn port_names(topo: &str) -> Vec<String> {
    let t = Topology::new(&Config::from_toml(topo).unwrap()).unwrap();
    t.ports.into_iter().map(|p| p.name).collect()
}

/// The scenario's `in/` captures, sorted by port name as `vswitch replay --scenario` does.
pub fn scenario_inputs(dir: &Path, hint: &str) -> Vec<(String, PathBuf)> {
    let mut inputs: Vec<(String, PathBuf)> = std::fs::read_dir(dir.join("in"))
        .unwrap_or_else(|e| panic!("{}: {e}; {hint}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .map(|p| (p.file_stem().unwrap().to_str().unwrap().to_string(), p))
        .collect();
    inputs.sort();
    inputs
}

/// Every file of a folder by name, with its bytes.
pub fn dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

pub fn tcpdump_available() -> bool {
    Command::new("tcpdump").arg("--version").output().is_ok()
}

/// The MAC Docker gives an IPv4 address: 02:42 and the four octets.
pub fn docker_mac(ip: std::net::Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
}
