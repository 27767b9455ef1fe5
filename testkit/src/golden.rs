//! The golden-scenario harness: a scenario folder of `pcap-fixtures/` (`topo.toml`, `README.md`,
//! `in/PORT.pcap`, `expected/PORT.pcap`) checked against its description in Rust.
//!
//! A [`Scenario`] gives the topology, the input frames (a [`Seq`]) and, for every port, the
//! frames that must leave it, each with the input frame that caused it: written by reasoning
//! about what a bridge or a NAT gateway must do, not recorded from the code under test.
//! [`Harness::check`] then asserts that the committed `in/` equals the description, that a replay
//! into a temporary folder equals the description frame by frame and the committed `expected/`
//! byte for byte, that the counters add up with exactly the described drops, that a second replay
//! is byte-identical, and that independent decoders (tcpdump; tshark for checksums) read the
//! expected files as described.
//!
//! Regeneration is deliberate: only with `VSWITCH_REGEN_FIXTURES=1` does [`Harness::check`]
//! rewrite `topo.toml`, `README.md` and `in/`, replay, and write `expected/` after asserting that
//! the output equals the description.
//!
//! The replay itself and the pcap files are the [`Driver`]'s (the datapath's tests implement
//! it): this crate does not depend on the switch or the datapath.

// Test support: panicking is how a check fails.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Capture clock of the first frame of every scenario (2023-11-14), in seconds since the epoch.
pub const BASE_SECS: u64 = 1_700_000_000;

/// A frame of an input: which port it enters and its index in that port's capture.
pub type FrameRef = (&'static str, usize);

/// An expected output frame and the input frame that caused it (whose timestamp it carries).
pub type Out = (FrameRef, Vec<u8>);

/// A check of summary.json beyond the counters (conntrack table, bridge events).
pub type SummaryCheck = fn(&Value);

/// A capture record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Capture time since the epoch.
    pub timestamp: Duration,
    /// Length on the wire.
    pub orig_len: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// One input frame of a scenario.
#[derive(Debug, Clone)]
pub struct Input {
    /// The port it enters.
    pub port: &'static str,
    /// Its capture time.
    pub timestamp: Duration,
    /// The frame.
    pub data: Vec<u8>,
    /// Its offload state as a line of `in/PORT.offload` would give it (`partial:34:16
    /// tcp4:1448`; see `datapath::replay::read_offloads`), `None` for a plain frame.
    pub offload: Option<String>,
}

/// The input of a scenario, in sending order, with a capture clock that advances 1 ms per frame
/// (so that no two frames share a timestamp and the merge order is the sending order).
#[derive(Debug, Clone)]
pub struct Seq {
    /// The clock of the next frame.
    pub now: Duration,
    /// The frames, in sending order.
    pub frames: Vec<Input>,
}

impl Default for Seq {
    fn default() -> Self {
        Seq::new()
    }
}

impl Seq {
    /// An empty input starting at [`BASE_SECS`].
    pub fn new() -> Seq {
        Seq {
            now: Duration::from_secs(BASE_SECS),
            frames: Vec::new(),
        }
    }

    /// Sends `data` into `port`; returns its reference.
    pub fn send(&mut self, port: &'static str, data: Vec<u8>) -> FrameRef {
        let index = self.frames.iter().filter(|f| f.port == port).count();
        self.frames.push(Input {
            port,
            timestamp: self.now,
            data,
            offload: None,
        });
        self.now += Duration::from_millis(1);
        (port, index)
    }

    /// Sends `data` into `port` with an offload state (`CHECKSUM GSO`, as a line of the
    /// port's `in/PORT.offload` side file has them), as a port with a virtio-net header reads
    /// a GSO super-frame or a partial checksum.
    pub fn send_offloaded(&mut self, port: &'static str, data: Vec<u8>, state: &str) -> FrameRef {
        let r = self.send(port, data);
        if let Some(last) = self.frames.last_mut() {
            last.offload = Some(state.to_string());
        }
        r
    }

    /// Advances the clock by `d` (on top of the 1 ms per frame).
    pub fn wait(&mut self, d: Duration) {
        self.now += d;
    }

    /// The input frame `r` names.
    ///
    /// # Panics
    /// If there is no such frame.
    pub fn get(&self, r: FrameRef) -> &Input {
        self.frames
            .iter()
            .filter(|f| f.port == r.0)
            .nth(r.1)
            .unwrap_or_else(|| panic!("no input frame {r:?}"))
    }

    /// The expected output that is input frame `r` unchanged (bridged).
    pub fn same(&self, r: FrameRef) -> Out {
        (r, self.get(r).data.clone())
    }
}

/// What tcpdump must make of one expected output file.
#[derive(Debug, Clone, Default)]
pub struct TcpdumpCheck {
    /// The port whose expected capture is decoded.
    pub port: &'static str,
    /// Decode with `-v`.
    pub verbose: bool,
    /// Number of decoded lines (one per frame), where checked.
    pub lines: Option<usize>,
    /// Substrings that must each appear in the decoded text.
    pub contains: Vec<&'static str>,
}

/// How the per-port `forwarded` counter is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Bridged scenarios: every output is an input frame that left; `forwarded` counts the
    /// distinct input frames of a port that left through at least one port.
    Bridged,
    /// Routed scenarios (gateway, NAT): outputs include replies and errors the gateway makes, so
    /// `forwarded` is only checked through `rx = forwarded + local + dropped + queued`.
    Routed,
}

/// One golden scenario.
pub struct Scenario {
    /// Its folder under the fixtures root.
    pub name: &'static str,
    /// README.md text after the title.
    pub readme: &'static str,
    /// topo.toml.
    pub topo: String,
    /// The input frames.
    pub input: Seq,
    /// Per port, the frames that must leave it in order. Ports not listed emit nothing.
    pub expect: Vec<(&'static str, Vec<Out>)>,
    /// (port, drop reason name, count); reasons not listed must be zero.
    pub drops: Vec<(&'static str, &'static str, u64)>,
    /// (port, frames consumed by the gateway); ports not listed must have local = 0.
    pub local: Vec<(&'static str, u64)>,
    /// Bridge counters by JSON name (only those listed are checked).
    pub bridge: Vec<(&'static str, u64)>,
    /// More checks of summary.json.
    pub summary: SummaryCheck,
    /// How `forwarded` is checked.
    pub forwarding: Forwarding,
    /// Whether tshark must find every checksum of every expected frame good (routed scenarios;
    /// the bridged ones carry deliberately broken frames).
    pub tshark: bool,
    /// The tcpdump decoding.
    pub tcpdump: TcpdumpCheck,
}

/// A summary check that checks nothing more.
pub fn no_check(_: &Value) {}

/// A port's counters after a replay.
#[derive(Debug, Clone, Default)]
pub struct PortCounts {
    /// Port name.
    pub name: String,
    /// Frames received.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// Frames consumed by the gateway.
    pub local: u64,
    /// Frames still waiting (ARP).
    pub queued: u64,
    /// Frames dropped, all reasons.
    pub dropped: u64,
    /// Drops by reason name, for every reason the switch has.
    pub drops: Vec<(&'static str, u64)>,
}

/// What a replay reports.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Frames read.
    pub frames_in: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Per port, in topology order.
    pub ports: Vec<PortCounts>,
    /// The bridge counters as JSON.
    pub bridge: Value,
}

/// What the harness needs of the code under test.
pub trait Driver {
    /// Port names of a topology, in topology order.
    fn port_names(&self, topo: &str) -> Vec<String>;
    /// The scenario's `in/` captures as (port, path), sorted by port name.
    fn inputs(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>, String>;
    /// Replays the scenario folder `dir` into `out` (one capture per port and summary.json).
    fn replay(&self, dir: &Path, out: &Path) -> Result<Outcome, String>;
    /// Reads a capture.
    fn read_pcap(&self, path: &Path) -> Vec<Record>;
    /// Writes a capture.
    fn write_pcap(&self, path: &Path, records: &[Record]);
}

/// Whether the deliberate regeneration flag is set.
pub fn regen_requested() -> bool {
    std::env::var_os("VSWITCH_REGEN_FIXTURES").is_some_and(|v| v == "1")
}

/// Whether `tool --version` runs.
pub fn tool_available(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
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

/// Every described input frame is distinct from the others and timestamps increase (so that
/// "port X carried frame Y" is unambiguous).
pub fn assert_distinct_inputs(scenarios: &[Scenario]) {
    for s in scenarios {
        let frames = &s.input.frames;
        for (i, a) in frames.iter().enumerate() {
            for b in &frames[i + 1..] {
                assert_ne!(a.data, b.data, "{}: two input frames are identical", s.name);
                assert!(
                    a.timestamp < b.timestamp,
                    "{}: timestamps must increase",
                    s.name
                );
            }
        }
    }
}

/// The folders under `root`, sorted.
pub fn fixture_dirs(root: &Path) -> Vec<String> {
    let mut on_disk: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    on_disk
}

/// Checks scenarios of one fixtures root with one driver.
pub struct Harness<D> {
    /// The code under test.
    pub driver: D,
    /// The fixtures root (`pcap-fixtures/`).
    pub root: PathBuf,
    /// What to tell the reader when a committed fixture differs from its description.
    pub hint: &'static str,
}

impl<D: Driver> Harness<D> {
    /// The described input, per port, as capture records.
    fn input_records(&self, sc: &Scenario) -> BTreeMap<&'static str, Vec<Record>> {
        let mut per_port: BTreeMap<&str, Vec<Record>> = BTreeMap::new();
        for f in &sc.input.frames {
            per_port.entry(f.port).or_default().push(Record {
                timestamp: f.timestamp,
                orig_len: f.data.len() as u32,
                data: f.data.clone(),
            });
        }
        per_port
    }

    /// The side files the description implies: `in/PORT.offload` for every port with an
    /// offloaded input frame (1-based frame numbers per port).
    fn offload_files(&self, sc: &Scenario) -> BTreeMap<&'static str, String> {
        let mut files: BTreeMap<&str, String> = BTreeMap::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &sc.input.frames {
            let n = seen.entry(f.port).or_default();
            *n += 1;
            if let Some(state) = &f.offload {
                let text = files.entry(f.port).or_insert_with(|| {
                    "# frame  checksum  gso (see datapath::replay::read_offloads)\n".to_string()
                });
                text.push_str(&format!("{n} {state}\n"));
            }
        }
        files
    }

    /// The described output of every port of the topology: each frame leaves with the timestamp
    /// of the input frame that caused it.
    fn expected_records(&self, sc: &Scenario) -> BTreeMap<String, Vec<Record>> {
        let ports = self.driver.port_names(&sc.topo);
        for (port, _) in &sc.expect {
            assert!(
                ports.iter().any(|p| p == port),
                "{}: expectation names unknown port {port}",
                sc.name
            );
        }
        ports
            .into_iter()
            .map(|port| {
                let records = sc
                    .expect
                    .iter()
                    .find(|(p, _)| *p == port)
                    .map(|(_, frames)| {
                        frames
                            .iter()
                            .map(|(cause, data)| Record {
                                timestamp: sc.input.get(*cause).timestamp,
                                orig_len: data.len() as u32,
                                data: data.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (port, records)
            })
            .collect()
    }

    fn run_replay(&self, sc: &Scenario, dir: &Path, out: &Path) -> Outcome {
        self.driver
            .replay(dir, out)
            .unwrap_or_else(|e| panic!("{}: {e}", sc.name))
    }

    fn inputs(&self, dir: &Path) -> Vec<(String, PathBuf)> {
        self.driver
            .inputs(dir)
            .unwrap_or_else(|e| panic!("{}: {e}; {}", dir.display(), self.hint))
    }

    fn check_against_description(&self, sc: &Scenario, out: &Path) {
        for (port, want) in self.expected_records(sc) {
            let got = self.driver.read_pcap(&out.join(format!("{port}.pcap")));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g == w,
                    "{}: port {port}, output frame {i} differs:\n got  {:02x?}\n want {:02x?}\n(got ts {:?}, want ts {:?})",
                    sc.name,
                    g.data,
                    w.data,
                    g.timestamp,
                    w.timestamp
                );
            }
            assert_eq!(
                got.len(),
                want.len(),
                "{}: port {port} emitted {} frames, the description says {}",
                sc.name,
                got.len(),
                want.len()
            );
        }
    }

    fn regenerate(&self, sc: &Scenario, dir: &Path) {
        let fresh = |sub: &str| {
            let p = dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).unwrap();
            }
            std::fs::create_dir_all(&p).unwrap();
        };
        fresh("in");
        std::fs::write(dir.join("topo.toml"), &sc.topo).unwrap();
        std::fs::write(
            dir.join("README.md"),
            format!("# {}\n\n{}", sc.name, sc.readme),
        )
        .unwrap();
        for (port, records) in self.input_records(sc) {
            self.driver
                .write_pcap(&dir.join("in").join(format!("{port}.pcap")), &records);
        }
        for (port, text) in self.offload_files(sc) {
            std::fs::write(dir.join("in").join(format!("{port}.offload")), text).unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        self.run_replay(sc, dir, tmp.path());
        // Only an output that matches the reasoned expectation becomes the golden file.
        self.check_against_description(sc, tmp.path());
        fresh("expected");
        for port in self.driver.port_names(&sc.topo) {
            let file = format!("{port}.pcap");
            std::fs::copy(tmp.path().join(&file), dir.join("expected").join(&file)).unwrap();
        }
    }

    fn check_counters(&self, sc: &Scenario, summary: &Outcome) {
        let inputs = self.input_records(sc);
        let expected = self.expected_records(sc);
        for (port, reason, _) in &sc.drops {
            assert!(
                summary.ports.iter().any(|p| p.name == *port),
                "{}: drop expectation names unknown port {port}",
                sc.name
            );
            assert!(
                summary
                    .ports
                    .iter()
                    .any(|p| p.drops.iter().any(|(r, _)| r == reason)),
                "{}: unknown drop reason {reason}",
                sc.name
            );
        }
        for c in &summary.ports {
            let name = c.name.as_str();
            assert_eq!(
                c.rx_frames,
                c.forwarded + c.local + c.dropped + c.queued,
                "{}: port {name}: rx_frames must be forwarded + local + dropped + queued: {c:?}",
                sc.name
            );
            assert_eq!(
                c.queued, 0,
                "{}: port {name}: nothing left waiting",
                sc.name
            );
            let rx = inputs.get(name).map_or(0, Vec::len) as u64;
            assert_eq!(c.rx_frames, rx, "{}: port {name} rx_frames", sc.name);
            let tx = expected.get(name).map_or(0, Vec::len) as u64;
            assert_eq!(c.tx_frames, tx, "{}: port {name} tx_frames", sc.name);
            if sc.forwarding == Forwarding::Bridged {
                // Frames of this port that left through at least one port, per the description.
                let mut left: Vec<usize> = sc
                    .expect
                    .iter()
                    .flat_map(|(_, outs)| outs.iter())
                    .filter(|((in_port, _), _)| *in_port == name)
                    .map(|((_, i), _)| *i)
                    .collect();
                left.sort_unstable();
                left.dedup();
                assert_eq!(
                    c.forwarded,
                    left.len() as u64,
                    "{}: port {name} forwarded",
                    sc.name
                );
            }
            let local: u64 = sc
                .local
                .iter()
                .filter(|(lp, _)| *lp == name)
                .map(|(_, n)| n)
                .sum();
            assert_eq!(c.local, local, "{}: port {name} local", sc.name);
            for (reason, got) in &c.drops {
                let want: u64 = sc
                    .drops
                    .iter()
                    .filter(|(dp, r, _)| *dp == name && r == reason)
                    .map(|(_, _, n)| n)
                    .sum();
                assert_eq!(*got, want, "{}: port {name} drops of {reason}", sc.name);
            }
        }
        let bridge = &summary.bridge;
        for (name, want) in &sc.bridge {
            let got = bridge
                .get(*name)
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("{}: no bridge counter {name} in {bridge}", sc.name));
            assert_eq!(got, *want, "{}: bridge.{name}", sc.name);
        }
        assert_eq!(bridge["unknown_port"], 0, "{}", sc.name);
        let total_in: usize = inputs.values().map(Vec::len).sum();
        assert_eq!(summary.frames_in, total_in as u64, "{}", sc.name);
        let total_out: usize = expected.values().map(Vec::len).sum();
        assert_eq!(summary.frames_out, total_out as u64, "{}", sc.name);
    }

    fn check_with_tcpdump(&self, sc: &Scenario, dir: &Path) {
        if !tool_available("tcpdump") {
            assert!(
                std::env::var_os("VSWITCH_SKIP_TCPDUMP").is_some_and(|v| v == "1"),
                "tcpdump is not on PATH: install it (apt-get install -y tcpdump) so an independent \
                 reader decodes the golden files, or set VSWITCH_SKIP_TCPDUMP=1 to skip this check"
            );
            return;
        }
        let t = &sc.tcpdump;
        let file = dir.join("expected").join(format!("{}.pcap", t.port));
        let args: &[&str] = if t.verbose {
            &["-nn", "-e", "-v", "-r"]
        } else {
            &["-nn", "-e", "-r"]
        };
        let out = Command::new("tcpdump")
            .args(args)
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: tcpdump failed on {}: {stderr}",
            sc.name,
            file.display()
        );
        assert!(
            stderr.contains("link-type EN10MB"),
            "{}: tcpdump does not see an Ethernet capture: {stderr}",
            sc.name
        );
        let text = String::from_utf8(out.stdout).unwrap();
        if let Some(lines) = t.lines {
            assert_eq!(
                text.lines().count(),
                lines,
                "{}: tcpdump lines of {}:\n{text}",
                sc.name,
                file.display()
            );
        }
        for want in &t.contains {
            assert!(
                text.contains(want),
                "{}: tcpdump output of {} lacks {want:?}:\n{text}",
                sc.name,
                file.display()
            );
        }
    }

    /// Checks one scenario (regenerating it first under the deliberate flag).
    pub fn check(&self, sc: Scenario) {
        let hint = self.hint;
        let dir = self.root.join(sc.name);
        if regen_requested() {
            self.regenerate(&sc, &dir);
        }
        // The committed fixture is the one described here.
        let topo = std::fs::read_to_string(dir.join("topo.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}; {hint}", dir.display()));
        assert_eq!(topo, sc.topo, "{}: topo.toml differs; {hint}", sc.name);
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.lines().count() >= 3, "{}: README.md", sc.name);
        let want_in = self.input_records(&sc);
        let have_in = self.inputs(&dir);
        assert_eq!(
            have_in.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            want_in.keys().copied().collect::<Vec<_>>(),
            "{}: in/ files; {hint}",
            sc.name
        );
        for (port, path) in &have_in {
            assert_eq!(
                self.driver.read_pcap(path),
                want_in[port.as_str()],
                "{}: in/{port}.pcap differs from the description; {hint}",
                sc.name
            );
        }
        // Offload side files: exactly those the description implies, with its lines.
        let want_side = self.offload_files(&sc);
        for port in want_in.keys() {
            let side = dir.join("in").join(format!("{port}.offload"));
            let have = std::fs::read_to_string(&side).ok();
            assert_eq!(
                have.as_deref(),
                want_side.get(port).map(String::as_str),
                "{}: in/{port}.offload differs from the description; {hint}",
                sc.name
            );
        }

        let (out1, out2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let summary = self.run_replay(&sc, &dir, out1.path());
        self.check_against_description(&sc, out1.path());

        // Byte-for-byte equal to the committed expected/ files, one per port and nothing else.
        let ports = self.driver.port_names(&sc.topo);
        let mut want_files: Vec<String> = ports.iter().map(|p| format!("{p}.pcap")).collect();
        want_files.sort();
        let golden = dir_files(&dir.join("expected"));
        assert_eq!(
            golden.keys().cloned().collect::<Vec<_>>(),
            want_files,
            "{}: expected/ must hold one capture per port; {hint}",
            sc.name
        );
        let got = dir_files(out1.path());
        for (file, bytes) in &golden {
            assert!(
                got.get(file) == Some(bytes),
                "{}: output {file} differs from expected/{file}; {hint}",
                sc.name
            );
        }

        self.check_counters(&sc, &summary);
        let json: Value = serde_json::from_slice(
            got.get("summary.json")
                .unwrap_or_else(|| panic!("{}: no summary.json", sc.name)),
        )
        .unwrap();
        (sc.summary)(&json);

        // Determinism: a second replay writes the same bytes, summary included.
        self.run_replay(&sc, &dir, out2.path());
        assert_eq!(
            got,
            dir_files(out2.path()),
            "{}: replay is not deterministic",
            sc.name
        );

        if sc.tshark {
            if tool_available("tshark") {
                for (port, records) in self.expected_records(&sc) {
                    if !records.is_empty() {
                        let file = dir.join("expected").join(format!("{port}.pcap"));
                        check_with_tshark(sc.name, &file, &records);
                    }
                }
            } else {
                assert!(
                    std::env::var_os("VSWITCH_SKIP_TSHARK").is_some_and(|v| v == "1"),
                    "tshark is not on PATH: install it (apt-get install -y tshark) so an \
                     independent decoder validates every checksum, or set VSWITCH_SKIP_TSHARK=1 \
                     to skip this check"
                );
            }
        }
        self.check_with_tcpdump(&sc, &dir);
    }
}

/// tshark's checksum verdicts (epan's proto_checksum_enum_e): 0 bad, 1 good, 2 unverified, 3
/// not present.
const CHECKSUM_GOOD: &str = "1";
const CHECKSUM_BAD: &str = "0";
const CHECKSUM_NOT_PRESENT: &str = "3";

/// Every IPv4 frame of `file` has a good IP header checksum and a good checksum for its own
/// TCP/UDP/ICMP header (or, for UDP, a zero one: none), every IPv6 frame a good TCP/UDP/ICMPv6
/// checksum, and no checksum anywhere in it (quoted and encapsulated packets included) is bad.
pub fn check_with_tshark(name: &str, file: &Path, frames: &[Record]) {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "ip.checksum.status",
            "-e",
            "tcp.checksum.status",
            "-e",
            "udp.checksum.status",
            "-e",
            "icmp.checksum.status",
            "-e",
            "icmpv6.checksum.status",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: tshark failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        frames.len(),
        "{name}: {}:\n{text}",
        file.display()
    );
    for (i, (line, rec)) in lines.iter().zip(frames).enumerate() {
        let cols: Vec<Vec<&str>> = line
            .split('\t')
            .map(|c| c.split(',').filter(|s| !s.is_empty()).collect())
            .collect();
        let ctx = format!("{name}: {} frame {i}: tshark says {line:?}", file.display());
        assert!(
            cols.iter().flatten().all(|s| *s != CHECKSUM_BAD),
            "{ctx}: a bad checksum"
        );
        let col = |k: usize| cols.get(k).and_then(|c| c.first()).copied();
        if let Ok(packet::Classified {
            l3: packet::L3::Ipv6(info),
            ..
        }) = packet::classify(&rec.data)
        {
            let l4 = match info.protocol {
                6 => 1,
                17 => 2,
                58 => 4,
                p => panic!("{ctx}: unexpected IPv6 next header {p}"),
            };
            assert_eq!(col(l4), Some(CHECKSUM_GOOD), "{ctx}: IPv6 L4 checksum");
            continue;
        }
        if rec.data.get(12..14) != Some(&[0x08, 0x00]) {
            continue;
        }
        assert_eq!(col(0), Some(CHECKSUM_GOOD), "{ctx}: IPv4 header checksum");
        let l4 = match rec.data[23] {
            6 => 1,
            17 => 2,
            1 => 3,
            p => panic!("{ctx}: unexpected protocol {p}"),
        };
        // RFC 768: a zero UDP checksum over IPv4 means none was computed (VXLAN sends so, RFC
        // 7348 section 5); tshark calls it not present. Anything it carries is still checked.
        let ihl = usize::from(rec.data[14] & 0x0f) * 4;
        let udp_sum = rec.data.get(14 + ihl + 6..14 + ihl + 8);
        if l4 == 2 && udp_sum == Some(&[0, 0]) {
            assert_eq!(
                col(l4),
                Some(CHECKSUM_NOT_PRESENT),
                "{ctx}: zero UDP checksum"
            );
            continue;
        }
        assert_eq!(col(l4), Some(CHECKSUM_GOOD), "{ctx}: L4 checksum");
    }
}
