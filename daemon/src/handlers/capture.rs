//! `capture`: a tap in every packet loop, and the thread of the client's connection streaming
//! what it takes (see [`control::capture`]) until the client shuts down its half, goes away or
//! stops reading for the control socket's write timeout; the tap goes with it.

use crate::state::{Daemon, lock};
use anyhow::{Context, Result, bail};
use control::capture::Record;
use datapath::capture::{Direction, Selection, Tap, TapReader};
use datapath::io::bpf::Filter;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switch::PortId;

/// Bytes kept of each frame by default: all of a 64 KB super-frame.
const DEFAULT_SNAPLEN: u32 = 262_144;
/// How often the counts go out while frames flow (and the client's end is looked at).
const STATS_EVERY: Duration = Duration::from_secs(1);

/// What a capture request asks for, checked.
pub(crate) struct CaptureArgs {
    pub(crate) target: String,
    pub(crate) filter: Option<String>,
    pub(crate) snaplen: Option<u32>,
    pub(crate) direction: Option<String>,
}

/// A capture being served: its tap is in every loop until this is dropped.
struct Installed<'a> {
    d: &'a Daemon,
    id: u64,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let id = self.id;
        let _ = self.d.call_all(move |e| e.remove_tap(id));
    }
}

/// What a capture target names: what the tap takes, the ports known now (id, name), and a
/// word on what it is.
type Resolved = (Selection, Vec<(PortId, String)>, String);

/// Resolves `target`, or says what the names are.
fn resolve(d: &Daemon, target: &str) -> Result<Resolved> {
    let t = target.to_string();
    let found = d
        .engines
        .first()
        .and_then(|e| {
            e.call(move |e| {
                let topo = e.pipeline().topology();
                if let Some(id) = topo.port_by_name(&t) {
                    return Some((Selection::Ports(vec![id]), vec![(id, t.clone())], "port"));
                }
                let net = topo.network_by_name(&t)?;
                let ports = topo
                    .active_ports()
                    .filter(|(_, p)| p.network == Some(net))
                    .map(|(id, p)| (id, p.name.clone()))
                    .collect();
                Some((Selection::Network(net), ports, "network"))
            })
        })
        .context("the packet loop is not running")?;
    if let Some((sel, ports, kind)) = found {
        return Ok((sel, ports, kind.to_string()));
    }
    // A container: NETWORK/NAME, or a NAME connected to one network only.
    let containers = lock(&d.containers);
    let matches: Vec<_> = containers
        .values()
        .filter(|c| {
            target
                .split_once('/')
                .map_or(c.name == target, |(n, name)| {
                    c.network == n && c.name == name
                })
        })
        .collect();
    match matches.as_slice() {
        [c] => Ok((
            Selection::Ports(vec![c.port_id]),
            vec![(c.port_id, c.port.clone())],
            format!("container {} on {}", c.name, c.network),
        )),
        [] => bail!(
            "nothing named {target:?} to capture on: give a port (`vswitch stats` lists them), a \
             network (`vswitch network ls`) or a container (`vswitch status`)"
        ),
        many => bail!(
            "container {target:?} is on {} networks: give NETWORK/{target} (one of {})",
            many.len(),
            many.iter()
                .map(|c| format!("{}/{}", c.network, c.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Starts a capture: the `ok` answer's result and what to stream, or why not.
pub(crate) fn start(d: &Daemon, args: CaptureArgs) -> Result<(Value, Streaming<'_>)> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let directions = match args.direction.as_deref() {
        None | Some("both") => (true, true),
        Some("in") => (true, false),
        Some("out") => (false, true),
        Some(other) => bail!("direction {other:?}: give in, out or both"),
    };
    let snaplen = args.snaplen.unwrap_or(DEFAULT_SNAPLEN);
    if snaplen == 0 {
        bail!("a snap length of 0 keeps nothing: give at least 1 byte, or leave it out");
    }
    let filter = args
        .filter
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(|f| Filter::compile(f, snaplen).map(Arc::new))
        .transpose()?;
    let (selection, ports, what) = resolve(d, &args.target)?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (tap, reader) = Tap::new(id, selection, filter, snaplen as usize, directions);
    d.call_all(move |e| e.add_tap(tap.clone()))
        .context("the packet loop is not running")?;
    tracing::info!(target = %args.target, id, "capture started");
    let answer = json!({
        "target": args.target,
        "what": what,
        "ports": ports.iter().map(|(_, n)| n).collect::<Vec<_>>(),
        "snaplen": snaplen,
        "filter": args.filter,
    });
    Ok((
        answer,
        Streaming {
            installed: Installed { d, id },
            reader,
            named: ports,
        },
    ))
}

/// A started capture, streamed by [`Streaming::run`].
pub(crate) struct Streaming<'a> {
    installed: Installed<'a>,
    reader: TapReader,
    named: Vec<(PortId, String)>,
}

impl Streaming<'_> {
    /// Streams records to `stream` until the client ends the capture or the connection fails;
    /// the final counts go last.
    pub(crate) fn run(self, stream: &UnixStream) {
        let mut w = stream;
        let mut out = Vec::with_capacity(64 * 1024);
        let mut named: HashSet<PortId> = HashSet::new();
        for (id, name) in &self.named {
            named.insert(*id);
            Record::Interface {
                port: id.0,
                name: name.clone(),
            }
            .encode(&mut out);
        }
        let mut stats_at = Instant::now();
        let result: std::io::Result<()> = loop {
            let mut next = self.reader.recv_timeout(Duration::from_millis(100));
            // What is queued goes out in one write of up to 32 KB, not a syscall per frame.
            while let Some(c) = next {
                if named.insert(c.port) {
                    Record::Interface {
                        port: c.port.0,
                        name: self.port_name(c.port),
                    }
                    .encode(&mut out);
                }
                Record::Frame {
                    time_ns: u64::try_from(c.time.as_nanos()).unwrap_or(u64::MAX),
                    port: c.port.0,
                    outbound: c.direction == Direction::Out,
                    wire_len: c.wire_len,
                    data: c.data,
                }
                .encode(&mut out);
                next = (out.len() < 32 * 1024)
                    .then(|| self.reader.try_recv())
                    .flatten();
            }
            if stats_at.elapsed() >= STATS_EVERY {
                stats_at = Instant::now();
                self.counts().encode(&mut out);
            }
            if !out.is_empty() {
                if let Err(e) = w.write_all(&out) {
                    break Err(e);
                }
                out.clear();
            }
            if crate::server::client_done(stream) {
                break Ok(());
            }
        };
        let (captured, dropped) = self.reader.counts();
        match result {
            Ok(()) => {
                out.clear();
                self.counts().encode(&mut out);
                let _ = w.write_all(&out);
            }
            Err(e) => tracing::info!(id = self.installed.id, "capture client gone: {e}"),
        }
        tracing::info!(id = self.installed.id, captured, dropped, "capture ended");
    }

    fn counts(&self) -> Record {
        let (captured, dropped) = self.reader.counts();
        Record::Stats { captured, dropped }
    }

    fn port_name(&self, port: PortId) -> String {
        self.installed
            .d
            .engines
            .first()
            .and_then(|e| {
                e.call(move |e| e.pipeline().topology().port(port).map(|p| p.name.clone()))
            })
            .flatten()
            .unwrap_or_else(|| format!("port{}", port.0))
    }
}
