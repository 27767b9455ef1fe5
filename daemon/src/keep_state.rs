//! Zero-loss restart: the connections written at stop and restored at the next start.
//!
//! With `--keep-state` (or on a `vswitch upgrade` request) the daemon, at stop, has every packet
//! loop export its pipeline ([`switch::Pipeline::export_state`]: conntrack entries with their NAT
//! translations, FDB entries by port name) and stop in the same command, so no frame is
//! processed after its export; writes [`FILE`] atomically (a temporary file, fsync, rename);
//! and leaves the containers' links and leases in place. The next start (possibly of another
//! build) reads the file before any loop runs, checks its header, restores each flow on the
//! worker that will own it ([`switch::affinity::flow_owner`], recomputed for the worker count
//! of this run), starts the loops' clocks past the oldest restored entry, and removes the file:
//! a snapshot is used once. The FDB goes back once the containers are re-attached (their
//! ports get new ids; entries name them). The time the daemon was down counts: it is taken
//! off every entry's remaining lifetime.
//!
//! The file is input: a file of another format version, a truncated or corrupt one, is
//! refused with a clear error and the daemon starts clean (the connections are lost, as after
//! a plain restart); it never stops the daemon from starting.
//!
//! What is not kept: the ARP and neighbour caches (a restored flow's next packet waits for
//! one ARP exchange), the NAT flow cache (refilled from the table), endpoint-independent UDP
//! mappings, fragment reassembly state, multicast memberships (re-learned from the next
//! reports) and counters other than the entries' own.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use switch::saved::{SavedFdb, SavedFlow, SavedPipeline};

/// The snapshot's name in the state directory.
pub const FILE: &str = "keep-state.json";
/// The snapshot format this build writes and reads. Bump it on any change a previous build
/// would misread; a reader refuses every other value.
pub const FORMAT: u32 = 1;
/// The largest snapshot read (a bigger file is refused rather than read into memory):
/// 2 × 4 M entries of ~400 bytes of JSON.
const MAX_BYTES: u64 = 4 << 30;

/// What the file says about itself; read first, alone, so that a file of another format is
/// refused by its header whatever its body looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`] of the writer.
    pub format: u32,
    /// The writer's vswitch version.
    pub vswitch: String,
    /// Wall clock when written, in milliseconds since the Unix epoch.
    pub written_at_unix_ms: u64,
    /// The writer's worker count (informational: placement is recomputed).
    pub workers: usize,
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Header.
    pub header: Header,
    /// IPv4 flows of every worker.
    pub conntrack: Vec<SavedFlow<Ipv4Addr>>,
    /// IPv6 flows of every worker.
    pub conntrack6: Vec<SavedFlow<Ipv6Addr>>,
    /// FDB entries, one per (network, MAC): the freshest of the workers'.
    pub fdb: Vec<SavedFdb>,
}

#[derive(Deserialize)]
struct HeaderOnly {
    header: Header,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Snapshot {
    /// The workers' exports as one snapshot, stamped now.
    pub fn merge(parts: Vec<SavedPipeline>) -> Snapshot {
        let workers = parts.len();
        let mut conntrack = Vec::new();
        let mut conntrack6 = Vec::new();
        let mut fdb: BTreeMap<(String, String), SavedFdb> = BTreeMap::new();
        for p in parts {
            conntrack.extend(p.conntrack);
            conntrack6.extend(p.conntrack6);
            for row in p.fdb {
                let key = (row.network.clone(), row.mac.clone());
                match fdb.get(&key) {
                    Some(have) if have.age_ns <= row.age_ns => {}
                    _ => {
                        fdb.insert(key, row);
                    }
                }
            }
        }
        Snapshot {
            header: Header {
                format: FORMAT,
                vswitch: env!("CARGO_PKG_VERSION").to_string(),
                written_at_unix_ms: wall_ms(),
                workers,
            },
            conntrack,
            conntrack6,
            fdb: fdb.into_values().collect(),
        }
    }

    /// Parses a snapshot, checking its header first.
    pub fn parse(bytes: &[u8]) -> Result<Snapshot> {
        let header = serde_json::from_slice::<HeaderOnly>(bytes)
            .context("the file is not a vswitch keep-state snapshot (corrupt or truncated?)")?
            .header;
        if header.format != FORMAT {
            bail!(
                "snapshot format {} (written by vswitch {}), this vswitch ({}) reads format {FORMAT} \
                 only",
                header.format,
                header.vswitch,
                env!("CARGO_PKG_VERSION")
            );
        }
        serde_json::from_slice(bytes)
            .context("the snapshot's header is fine but its body is corrupt or truncated")
    }

    /// Writes the snapshot to `dir/FILE` atomically: a temporary file in `dir`, synced, then
    /// renamed over (a crash leaves either no snapshot or the whole of one). Returns its size.
    pub fn write(&self, dir: &Path) -> Result<u64> {
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let body = serde_json::to_vec(self).context("encoding the snapshot")?;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(f);
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(body.len() as u64)
    }

    /// Reads and removes `dir/FILE`: `Ok(None)` when there is none; `Err` (the file removed
    /// all the same, so that a bad file is reported once) when it cannot be used.
    pub fn take(dir: &Path) -> Result<Option<Snapshot>> {
        let path = dir.join(FILE);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let read = if meta.len() > MAX_BYTES {
            Err(anyhow::anyhow!(
                "{} bytes, more than the {MAX_BYTES} a snapshot may have",
                meta.len()
            ))
        } else {
            std::fs::read(&path).map_err(anyhow::Error::from)
        };
        let _ = std::fs::remove_file(&path);
        let bytes = read.with_context(|| format!("reading {}", path.display()))?;
        Snapshot::parse(&bytes)
            .with_context(|| format!("{}", path.display()))
            .map(Some)
    }

    /// Takes the time the daemon was down (the wall clock since the header's stamp; none if
    /// the clock went back) off every entry: lifetimes shorten, ages and idle times grow; the
    /// entries that had less time left are dropped. Returns the downtime and how many went.
    pub fn age_by_downtime(&mut self) -> (u64, usize) {
        let down = wall_ms()
            .saturating_sub(self.header.written_at_unix_ms)
            .saturating_mul(1_000_000);
        let before = self.conntrack.len() + self.conntrack6.len();
        fn age<A: conntrack::Address>(flows: &mut Vec<SavedFlow<A>>, down: u64) {
            flows.retain_mut(|f| {
                let e = &mut f.entry;
                e.age_ns = e.age_ns.saturating_add(down);
                e.idle_ns = e.idle_ns.saturating_add(down);
                e.remaining_ns = e.remaining_ns.saturating_sub(down);
                e.remaining_ns > 0
            });
        }
        age(&mut self.conntrack, down);
        age(&mut self.conntrack6, down);
        for r in &mut self.fdb {
            r.age_ns = r.age_ns.saturating_add(down);
        }
        (down, before - self.conntrack.len() - self.conntrack6.len())
    }

    /// The clock the loops must start at so that no restored entry's creation falls before 0:
    /// the oldest entry's age (at least 1 s).
    pub fn clock_base(&self) -> u64 {
        let ages = self.conntrack.iter().map(|f| f.entry.age_ns);
        let ages6 = self.conntrack6.iter().map(|f| f.entry.age_ns);
        let oldest = ages.chain(ages6).max().unwrap_or(0);
        let fdb = self.fdb.iter().map(|r| r.age_ns).max().unwrap_or(0);
        oldest.max(fdb).max(1_000_000_000)
    }

    /// The flows per worker of `workers`, as this run's affinity places them: (IPv4, IPv6)
    /// per worker, plus the flows whose network is gone (left out, with the first such name).
    #[allow(clippy::type_complexity)]
    pub fn place(
        &self,
        topo: &switch::Topology,
        pipeline: &switch::Pipeline,
        workers: usize,
    ) -> (
        Vec<(Vec<SavedFlow<Ipv4Addr>>, Vec<SavedFlow<Ipv6Addr>>)>,
        usize,
    ) {
        let workers = workers.max(1);
        let mut out: Vec<(Vec<_>, Vec<_>)> = (0..workers).map(|_| Default::default()).collect();
        let mut lost = 0;
        for f in &self.conntrack {
            match pipeline.saved_side(&f.from) {
                Ok(net) => {
                    let w = switch::affinity::flow_owner(topo, net, &f.entry.original, workers);
                    if let Some(slot) = out.get_mut(w) {
                        slot.0.push(f.clone());
                    }
                }
                Err(_) => lost += 1,
            }
        }
        for f in &self.conntrack6 {
            match pipeline.saved_side(&f.from) {
                Ok(net) => {
                    let w = switch::affinity::flow_owner6(topo, net, &f.entry.original, workers);
                    if let Some(slot) = out.get_mut(w) {
                        slot.1.push(f.clone());
                    }
                }
                Err(_) => lost += 1,
            }
        }
        (out, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::L4Proto;
    use switch::saved::SavedSide;

    const SEC: u64 = 1_000_000_000;
    const TOPO: &str = r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"
[[port]]
name = "up"
kind = "pcap"
[uplink]
port = "up"
address = "203.0.113.2"
"#;

    fn pipeline() -> switch::Pipeline {
        switch::Pipeline::new(&switch::Config::from_toml(TOPO).expect("topology"))
            .expect("pipeline")
    }

    /// A snapshot with `n` masqueraded UDP flows to as many remotes, and a published-port flow.
    fn snapshot(n: u8) -> Snapshot {
        let mut p = pipeline();
        for i in 0..n {
            let t = conntrack::Tuple::new(
                L4Proto::Udp,
                Ipv4Addr::new(172, 17, 0, 2),
                1000 + u16::from(i),
                Ipv4Addr::new(198, 51, 100, i),
                53,
            );
            let saved = SavedFlow {
                from: SavedSide::Network("bridge".into()),
                entry: conntrack::SavedEntry {
                    original: t,
                    reply: t.reversed(),
                    state: conntrack::SavedState::Udp { replied: true },
                    assured: true,
                    age_ns: 50 * SEC,
                    idle_ns: SEC,
                    remaining_ns: 100 * SEC,
                    packets: [1, 1],
                    bytes: [60, 60],
                    mark: 0,
                },
            };
            p.import_conntrack(&[saved], &[], 100 * SEC);
        }
        Snapshot::merge(vec![p.export_state(100 * SEC)])
    }

    #[test]
    fn write_then_take_gives_it_back_once() {
        let dir = tempfile::tempdir().expect("dir");
        let s = snapshot(5);
        s.write(dir.path()).expect("write");
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
        let back = Snapshot::take(dir.path()).expect("read").expect("there");
        assert_eq!(back, s);
        assert!(
            Snapshot::take(dir.path()).expect("read").is_none(),
            "used once"
        );
    }

    #[test]
    fn corrupt_truncated_and_foreign_files_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(FILE);
        let good = serde_json::to_vec(&snapshot(3)).expect("json");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"\x00\xffgarbage".to_vec(),
                "not a vswitch keep-state snapshot",
            ),
            (
                good[..good.len() / 2].to_vec(),
                "not a vswitch keep-state snapshot",
            ),
            (Vec::new(), "not a vswitch keep-state snapshot"),
            (
                String::from_utf8(good.clone())
                    .expect("utf8")
                    .replace("\"format\":1", "\"format\":99")
                    .into_bytes(),
                "snapshot format 99",
            ),
            (
                String::from_utf8(good.clone())
                    .expect("utf8")
                    .replace("\"udp\"", "\"sctp\"")
                    .into_bytes(),
                "body is corrupt",
            ),
        ];
        for (bytes, want) in cases {
            std::fs::write(&path, &bytes).expect("write");
            let err = Snapshot::take(dir.path()).expect_err("refused");
            let text = format!("{err:#}");
            assert!(text.contains(want), "{text}");
            assert!(text.contains(FILE), "names the file: {text}");
            assert!(!path.exists(), "a bad file is removed, reported once");
        }
    }

    #[test]
    fn downtime_shortens_lifetimes_and_drops_what_ran_out() {
        let mut s = snapshot(2);
        s.conntrack[0].entry.remaining_ns = 2 * SEC;
        s.header.written_at_unix_ms -= 5_000;
        let (down, dropped) = s.age_by_downtime();
        assert!((5 * SEC..6 * SEC).contains(&down), "{down}");
        assert_eq!(dropped, 1);
        assert_eq!(s.conntrack.len(), 1);
        let e = s.conntrack[0].entry;
        assert!(e.remaining_ns <= 95 * SEC && e.age_ns >= 55 * SEC);
        assert!(s.clock_base() >= 55 * SEC);
    }

    #[test]
    fn placement_follows_this_runs_affinity_for_any_worker_count() {
        let s = snapshot(40);
        let p = pipeline();
        let topo = p.topology().clone();
        for workers in 1..6 {
            let (parts, lost) = s.place(&topo, &p, workers);
            assert_eq!(lost, 0);
            assert_eq!(parts.len(), workers);
            let total: usize = parts.iter().map(|(v4, v6)| v4.len() + v6.len()).sum();
            assert_eq!(total, 40);
            for (w, (v4, _)) in parts.iter().enumerate() {
                for f in v4 {
                    // The worker a frame of this flow, read from the network, goes to.
                    let net = topo.network_by_name("bridge");
                    assert_eq!(
                        switch::affinity::flow_owner(&topo, net, &f.entry.original, workers),
                        w
                    );
                }
            }
            if workers > 1 {
                assert!(
                    parts.iter().filter(|p| !p.0.is_empty()).count() > 1,
                    "spread"
                );
            }
            // Each worker's share imports cleanly.
            for (v4, v6) in &parts {
                let mut q = pipeline();
                let r = q.import_conntrack(v4, v6, s.clock_base());
                assert_eq!((r.conntrack, r.skipped), (v4.len(), 0));
            }
        }
        // A network that is gone: its flows are left out, counted.
        let mut s = s;
        s.conntrack[0].from = SavedSide::Network("gone".into());
        assert_eq!(s.place(&topo, &p, 2).1, 1);
    }

    /// A snapshot written by a real run (the keep_state e2e test, two workers, iperf3 and two
    /// echo connections): every later build that reads format 1 must read it, and place and
    /// restore all of it. A change that breaks this must bump [`FORMAT`].
    #[test]
    fn a_format_1_snapshot_from_a_real_run_still_restores() {
        let bytes = include_bytes!("../tests/fixtures/keep-state-v1.json");
        let s = Snapshot::parse(bytes).expect("format 1 parses");
        assert_eq!((s.header.format, s.header.workers), (1, 2));
        assert_eq!(s.conntrack.len(), 4);
        let p = pipeline();
        let topo = p.topology().clone();
        let (parts, lost) = s.place(&topo, &p, 2);
        assert_eq!(lost, 0);
        assert!(parts.iter().all(|(v4, _)| !v4.is_empty()), "both workers");
        let mut restored = 0;
        for (v4, v6) in &parts {
            let mut q = pipeline();
            let r = q.import_conntrack(v4, v6, s.clock_base());
            assert_eq!(r.skipped, 0, "{:?}", r.reasons);
            restored += r.conntrack;
            for f in v4 {
                // The NAT translation is back: its reply tuple is taken.
                assert!(q.conntrack().contains(&f.entry.reply));
            }
        }
        assert_eq!(restored, 4);
    }
}
