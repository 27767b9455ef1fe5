//! `vswitch replay`: capture files in, one capture per egress port out, deterministically.
//!
//! Each input file is bound to a port. The inputs are merged by timestamp, each file keeping its
//! own record order even where its timestamps go backwards (real captures do that), ties broken
//! by input order. The capture timestamp is the pipeline's clock. Consecutive records with the
//! same timestamp go through the pipeline as one batch (up to [`BATCH`]). Every egress frame is
//! written with the timestamp of the frame that caused it, to `DIR/<port>.pcap` (one file per
//! port of the topology, empty if nothing left through it), and `DIR/summary.json` holds the
//! counters and the FDB at the end. Same inputs, same bytes out.

use crate::pcap::{PcapError, Record, read_file, write_file};
use packet::offload::{Checksum, Gso, Offload};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switch::{Config, ConfigError, Packet, Pipeline, PortId, Snapshot};

/// Most frames handed to the pipeline at once.
pub const BATCH: usize = 64;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The topology is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An input or output capture failed.
    #[error(transparent)]
    Pcap(#[from] PcapError),
    /// An input names a port the topology lacks.
    #[error("--in names port {name:?}, which the topology does not have (ports: {known})")]
    UnknownPort {
        /// The name given.
        name: String,
        /// The ports that exist.
        known: String,
    },
    /// A scenario folder has no readable `in/`.
    #[error("{}: a scenario needs an in/ folder of PORT.pcap files ({source})", path.display())]
    NoInputs {
        /// The `in/` folder looked for.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An offload side file (`PORT.offload`) could not be read or has a bad line.
    #[error("{}:{line}: {why} (lines are `FRAME CHECKSUM GSO`, e.g. `3 partial:34:16 tcp4:1448`; see datapath::replay)", path.display())]
    BadOffloadFile {
        /// The side file.
        path: PathBuf,
        /// 1-based line number (0: the file itself).
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The output directory or summary could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Inputs of a scenario folder (`pcap-fixtures/NAME/`): `in/PORT.pcap` (or `.pcapng`), sorted
/// by port name.
pub fn scenario_inputs(dir: &Path) -> Result<Vec<(String, PathBuf)>, ReplayError> {
    let in_dir = dir.join("in");
    let no_inputs = |source| ReplayError::NoInputs {
        path: in_dir.clone(),
        source,
    };
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(&in_dir).map_err(no_inputs)? {
        let path = entry.map_err(no_inputs)?.path();
        let is_capture = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("pcap" | "pcapng")
        );
        if let (true, Some(port)) = (is_capture, path.file_stem().and_then(|s| s.to_str())) {
            inputs.push((port.to_string(), path.clone()));
        }
    }
    inputs.sort();
    Ok(inputs)
}

/// The offload state of an input's frames, from its side file: `in/PORT.offload` beside
/// `in/PORT.pcap`. pcap has no field for a frame's virtio-net header, so a capture of GSO
/// super-frames or partial checksums (as a packet socket with PACKET_VNET_HDR reads them)
/// carries that state in this text file, one line per offloaded frame:
///
/// ```text
/// # frame  checksum          gso
/// 3        partial:34:16     tcp4:1448
/// 4        verified          none
/// ```
///
/// `frame` is the 1-based frame number in the capture (as tcpdump and Wireshark count);
/// `checksum` is `complete`, `verified` or `partial:START:OFFSET`; `gso` is `none`,
/// `tcp4:MSS`, `tcp6:MSS` (`+ecn` may follow) or `udp:SIZE`. Frames without a line are plain.
/// Each state is checked against its frame as a real port's virtio-net header is: a bad one is
/// a counted drop (`bad_offload`). Output captures hold what the wire would: pcap ports take no
/// offloads, so the pipeline segments and finishes checksums before writing them.
pub fn read_offloads(path: &Path) -> Result<Vec<(usize, Offload)>, ReplayError> {
    let bad = |line: usize, why: String| ReplayError::BadOffloadFile {
        path: path.to_path_buf(),
        line,
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(0, e.to_string()))?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [frame, checksum, gso] = fields[..] else {
            return Err(bad(
                i + 1,
                format!("expected 3 fields, found {}", fields.len()),
            ));
        };
        let frame: usize = frame
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad(i + 1, format!("frame number {frame:?} is not 1 or more")))?;
        let checksum = parse_checksum(checksum).ok_or_else(|| {
            bad(
                i + 1,
                format!("checksum {checksum:?}: complete, verified or partial:START:OFFSET"),
            )
        })?;
        let gso = parse_gso(gso).ok_or_else(|| {
            bad(
                i + 1,
                format!("gso {gso:?}: none, tcp4:MSS, tcp6:MSS (+ecn) or udp:SIZE"),
            )
        })?;
        out.push((frame, Offload { checksum, gso }));
    }
    Ok(out)
}

fn parse_checksum(s: &str) -> Option<Checksum> {
    match s {
        "complete" => Some(Checksum::Complete),
        "verified" => Some(Checksum::Verified),
        _ => {
            let rest = s.strip_prefix("partial:")?;
            let (start, offset) = rest.split_once(':')?;
            Some(Checksum::Partial {
                start: start.parse().ok()?,
                offset: offset.parse().ok()?,
            })
        }
    }
}

fn parse_gso(s: &str) -> Option<Gso> {
    if s == "none" {
        return Some(Gso::None);
    }
    let (kind, size) = s.split_once(':')?;
    let (size, ecn) = match size.strip_suffix("+ecn") {
        Some(n) => (n, true),
        None => (size, false),
    };
    let size: u16 = size.parse().ok()?;
    match kind {
        "tcp4" => Some(Gso::Tcp {
            mss: size,
            ipv6: false,
            ecn,
        }),
        "tcp6" => Some(Gso::Tcp {
            mss: size,
            ipv6: true,
            ecn,
        }),
        "udp" if !ecn => Some(Gso::Udp { size }),
        _ => None,
    }
}

/// Result of a replay.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Frames read from all inputs.
    pub frames_in: u64,
    /// Frames written to all outputs.
    pub frames_out: u64,
    /// Clock value at the end, in nanoseconds since the epoch.
    pub end_time_ns: u64,
    /// Frames written per port, in topology order.
    pub outputs: Vec<OutputFile>,
    /// Counters and FDB at the end.
    pub state: Snapshot,
}

/// One output capture.
#[derive(Debug, Serialize)]
pub struct OutputFile {
    /// Port name.
    pub port: String,
    /// File name inside the output directory.
    pub file: String,
    /// Frames written.
    pub frames: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Replays `inputs` (port name, capture path) through a pipeline built from `config`, writing to
/// `out_dir`. Returns the summary that was also written to `out_dir/summary.json`.
pub fn replay(
    config: &Config,
    inputs: &[(String, PathBuf)],
    out_dir: &Path,
) -> Result<Summary, ReplayError> {
    let mut pipeline = Pipeline::new(config)?;
    let topo = pipeline.topology().clone();
    let mut streams: Vec<(PortId, Vec<Record>, Vec<Offload>)> = Vec::with_capacity(inputs.len());
    for (name, path) in inputs {
        let port = topo
            .port_by_name(name)
            .ok_or_else(|| ReplayError::UnknownPort {
                name: name.clone(),
                known: topo
                    .ports
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let records = read_file(path)?;
        let mut offloads = vec![Offload::NONE; records.len()];
        let side = path.with_extension("offload");
        if side.exists() {
            for (frame, offload) in read_offloads(&side)? {
                let slot =
                    offloads
                        .get_mut(frame - 1)
                        .ok_or_else(|| ReplayError::BadOffloadFile {
                            path: side.clone(),
                            line: 0,
                            why: format!(
                                "frame {frame} is past the capture's {} frames",
                                records.len()
                            ),
                        })?;
                *slot = offload;
            }
        }
        streams.push((port, records, offloads));
    }
    let frames_in = streams.iter().map(|(_, r, _)| r.len() as u64).sum();

    let mut per_port: Vec<Vec<Record>> = vec![Vec::new(); topo.ports.len()];
    let mut next = vec![0usize; streams.len()];
    let mut batch: Vec<Packet> = Vec::with_capacity(BATCH);
    let mut out: Vec<Packet> = Vec::with_capacity(BATCH * 4);
    let mut now = 0u64;
    loop {
        // The input whose next record is earliest; ties go to the earlier input.
        let pick = (0..streams.len())
            .filter_map(|i| streams[i].1.get(next[i]).map(|r| (r.timestamp, i)))
            .min();
        let Some((ts, i)) = pick else { break };
        let port = streams[i].0;
        let data = std::mem::take(&mut streams[i].1[next[i]].data);
        let offload = streams[i].2[next[i]];
        next[i] += 1;
        if !batch.is_empty() && (nanos(ts) != now || batch.len() == BATCH) {
            flush(&mut pipeline, now, &mut batch, &mut out, &mut per_port);
        }
        now = nanos(ts);
        batch.push(Packet::with_offload(port, data, offload));
    }
    flush(&mut pipeline, now, &mut batch, &mut out, &mut per_port);

    std::fs::create_dir_all(out_dir).map_err(|source| ReplayError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut outputs = Vec::with_capacity(per_port.len());
    // An overlay port's frames leave in VXLAN through the uplink, a parent port's through the
    // uplink too: neither has a capture of its own.
    let captured = topo.ports.iter().zip(&per_port);
    let own = |p: &switch::config::Port| {
        !matches!(p.kind, switch::PortKind::Overlay | switch::PortKind::Parent)
    };
    for (port, records) in captured.filter(|(p, _)| own(p)) {
        let file = format!("{}.pcap", port.name);
        write_file(&out_dir.join(&file), records)?;
        outputs.push(OutputFile {
            port: port.name.clone(),
            file,
            frames: records.len() as u64,
        });
    }
    let summary = Summary {
        frames_in,
        frames_out: per_port.iter().map(|r| r.len() as u64).sum(),
        end_time_ns: now,
        outputs,
        state: pipeline.snapshot(now),
    };
    let path = out_dir.join("summary.json");
    let mut json = serde_json::to_string_pretty(&summary).map_err(|e| ReplayError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    json.push('\n');
    std::fs::write(&path, json).map_err(|source| ReplayError::Io { path, source })?;
    Ok(summary)
}

fn flush(
    pipeline: &mut Pipeline,
    now: u64,
    batch: &mut Vec<Packet>,
    out: &mut Vec<Packet>,
    per_port: &mut [Vec<Record>],
) {
    if batch.is_empty() {
        return;
    }
    pipeline.process(now, batch, out);
    let timestamp = Duration::from_nanos(now);
    for pkt in out.drain(..) {
        if let Some(records) = per_port.get_mut(usize::from(pkt.port.0)) {
            let orig_len = u32::try_from(pkt.data.len()).unwrap_or(u32::MAX);
            records.push(Record {
                timestamp,
                orig_len,
                data: pkt.data,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn offload_side_files_parse_and_bad_lines_say_where() {
        let dir = std::env::temp_dir().join(format!("vsw-offload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("c1.offload");
        std::fs::write(
            &good,
            "# frame checksum gso\n3 partial:34:16 tcp4:1448+ecn\n\n7 verified none # note\n9 complete udp:1200\n",
        )
        .unwrap();
        let got = read_offloads(&good).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            (
                3,
                Offload {
                    checksum: Checksum::Partial {
                        start: 34,
                        offset: 16
                    },
                    gso: Gso::Tcp {
                        mss: 1448,
                        ipv6: false,
                        ecn: true
                    },
                }
            )
        );
        assert_eq!(got[1].1.checksum, Checksum::Verified);
        assert_eq!(got[2].1.gso, Gso::Udp { size: 1200 });
        for (text, want) in [
            ("0 complete none\n", "frame number"),
            ("1 partial:34 none\n", "checksum"),
            ("1 complete tcp9:5\n", "gso"),
            ("1 complete\n", "expected 3 fields"),
        ] {
            let bad = dir.join("bad.offload");
            std::fs::write(&bad, text).unwrap();
            let err = read_offloads(&bad).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(":1:"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
