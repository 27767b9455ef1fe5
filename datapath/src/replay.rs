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
    let mut streams: Vec<(PortId, Vec<Record>)> = Vec::with_capacity(inputs.len());
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
        streams.push((port, read_file(path)?));
    }
    let frames_in = streams.iter().map(|(_, r)| r.len() as u64).sum();

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
        next[i] += 1;
        if !batch.is_empty() && (nanos(ts) != now || batch.len() == BATCH) {
            flush(&mut pipeline, now, &mut batch, &mut out, &mut per_port);
        }
        now = nanos(ts);
        batch.push(Packet::new(port, data));
    }
    flush(&mut pipeline, now, &mut batch, &mut out, &mut per_port);

    std::fs::create_dir_all(out_dir).map_err(|source| ReplayError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut outputs = Vec::with_capacity(per_port.len());
    for (port, records) in topo.ports.iter().zip(&per_port) {
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
