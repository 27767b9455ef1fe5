//! `vswitch bench pipeline`: the real [`Pipeline::process`] driven from memory, no I/O.
//!
//! Workloads (each in batches of 64 frames, the packet loops' batch size):
//! - `l2`: two ports, each host learned beforehand; every frame is a known unicast forwarded to
//!   the other port. The output buffers go straight back in as input (no copy).
//! - `nat`: N live, assured UDP flows masqueraded from a container network to the uplink; each
//!   batch alternates original (SNAT) and reply (de-NAT) frames, cycling over the flows. NAT
//!   rewrites in place, so each buffer gets the 42 header bytes of its next frame copied back
//!   (payload bytes are left as they are: the pipeline never reads them); that copy is measured.
//! - both `l2` and `nat` run for IPv4 and IPv6 (`--families 4,6`): IPv6 L2 forwarding, and
//!   NAT66 masquerade to the uplink's IPv6 address (62 header bytes copied per frame).
//! - `pcap`: the frames of a capture (or of a scenario's `in/PORT.pcap` files, merged by time)
//!   replayed in a loop on the scenario's topology, each frame copied into a recycled buffer.
//!
//! With W workers, W threads each run their own pipeline on their own share of the flows
//! (`nat`: flows / W each) — the daemon is flow-affine per worker, so no state is shared. The
//! pipeline's clock is the real elapsed time. Each (workload, frame size, workers) case runs a
//! warm-up, then `--reps` repetitions; the aggregate rate of a repetition is the sum of the
//! workers' rates. Gbit/s counts Ethernet frame bytes (no FCS, preamble or gap).

use crate::harness::{Machine, OutputArgs, Stat, check_stop, progress, stopped};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use switch::{Config, NANOS_PER_SEC, Packet, Pipeline, PortId};
use testkit::traffic::{Family, NatFlows};

/// Frames per `process` call.
const BATCH: usize = 64;

/// Arguments of `vswitch bench pipeline`.
#[derive(Args)]
pub struct PipelineArgs {
    /// Measured seconds per case, split over the repetitions (a warm-up of a tenth of it, at
    /// most 0.2 s, comes first).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Repetitions per case.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// Measure with 1, 2, ... up to this many worker threads (default: the CPUs available).
    #[arg(long)]
    workers: Option<usize>,
    /// Frame sizes in bytes for the l2 and nat cases.
    #[arg(long, value_delimiter = ',', default_value = "64,1500")]
    sizes: Vec<usize>,
    /// Live NAT flow counts.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,100000")]
    flows: Vec<u32>,
    /// Also measure NAT with 1,000,000 live flows (about 0.5 GB of memory, slower set-up).
    #[arg(long)]
    big: bool,
    /// The pcap mix: a capture file (fed to port p0 of a two-port L2 network) or a scenario
    /// folder (DIR/topo.toml and DIR/in/PORT.pcap). Default: pcap-fixtures/snat-udp-and-icmp.
    #[arg(long, value_name = "FILE|DIR")]
    pcap: Option<PathBuf>,
    /// Workloads to run.
    #[arg(long, value_delimiter = ',', default_value = "l2,nat,pcap")]
    only: Vec<Kind>,
    /// IP versions of the l2 and nat cases (6: IPv6 L2 and NAT66).
    #[arg(long, value_delimiter = ',', default_value = "4,6")]
    families: Vec<u8>,
    /// Run the NAT cases without the flow cache (every packet takes the slow path), to see
    /// what the cache saves.
    #[arg(long)]
    no_flow_cache: bool,
    #[command(flatten)]
    out: OutputArgs,
}

/// A workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// L2 forwarding between learned MACs.
    L2,
    /// NAT on established flows.
    Nat,
    /// A capture replayed in a loop.
    Pcap,
}

/// One case to measure.
#[derive(Clone, Debug)]
struct Case {
    kind: Kind,
    /// IP version of the frames (l2, nat).
    family: Family,
    /// Live flows (nat), in total over the workers.
    flows: u32,
    /// Frame length (l2, nat).
    frame_len: usize,
    /// The NAT flow cache is on (nat).
    flow_cache: bool,
}

impl Case {
    fn label(&self) -> String {
        let v6 = if self.family == Family::V6 { "6" } else { "" };
        match self.kind {
            Kind::L2 => format!("l2{v6} {}B", self.frame_len),
            Kind::Nat => format!(
                "nat{} {} flows {}B",
                v6.repeat(2),
                self.flows,
                self.frame_len
            ),
            Kind::Pcap => "pcap mix".to_string(),
        }
    }
}

/// "ipv4" or "ipv6", as reports name a family.
fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// The result of one case with a given number of workers.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    /// Workload.
    pub case: Kind,
    /// IP version of the generated frames: "ipv4" or "ipv6" (the pcap mix says "ipv4"; its
    /// capture holds whatever it holds).
    pub family: &'static str,
    /// Live flows in total (nat only).
    pub flows: Option<u32>,
    /// Frame length in bytes (the mean, for the pcap mix).
    pub frame_bytes: f64,
    /// Worker threads, each with its own pipeline.
    pub workers: usize,
    /// Aggregate million packets per second.
    pub mpps: Stat,
    /// Aggregate Gbit/s of Ethernet frame bytes.
    pub gbps: Stat,
    /// Nanoseconds of one worker per packet (workers / aggregate rate).
    pub ns_per_packet: Stat,
    /// Frames processed over all repetitions.
    pub packets: u64,
    /// Share of received frames the pipeline dropped (0 for l2 and nat; the pcap mix has some).
    pub dropped_share: f64,
}

/// Aggregate rate with W workers over the rate with one, per case.
#[derive(Debug, Serialize)]
pub struct Scaling {
    /// Workload.
    pub case: Kind,
    /// IP version.
    pub family: &'static str,
    /// Live flows (nat only).
    pub flows: Option<u32>,
    /// Frame length in bytes.
    pub frame_bytes: f64,
    /// Workers.
    pub workers: usize,
    /// Median Mpps with `workers` over median Mpps with one.
    pub ratio: f64,
}

/// Everything `bench pipeline` reports.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always "pipeline".
    pub bench: &'static str,
    /// The machine.
    pub machine: Machine,
    /// Measured seconds per case.
    pub seconds: f64,
    /// Repetitions per case.
    pub reps: u32,
    /// Frames per `process` call.
    pub batch: usize,
    /// The pcap mix's source.
    pub pcap: Option<String>,
    /// CPU capacity found free before the run: the work of `workers` spinning threads over the
    /// work of one (about the worker count on an idle machine; less when other work holds
    /// cores, and then scaling cannot show).
    pub free_cpus: f64,
    /// Every case, in run order.
    pub results: Vec<CaseResult>,
    /// Scaling ratios (workers > 1).
    pub scaling: Vec<Scaling>,
}

/// Runs `vswitch bench pipeline`.
pub fn run(args: PipelineArgs) -> Result<()> {
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    let max_workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    for &s in &args.sizes {
        if !(60..=1514).contains(&s) {
            bail!("--sizes: {s} is not a frame length in 60..=1514 bytes (no FCS)");
        }
    }
    let mut families = Vec::new();
    for &f in &args.families {
        families.push(match f {
            4 => Family::V4,
            6 => Family::V6,
            _ => bail!("--families: {f} is not an IP version (4 or 6)"),
        });
    }
    if args.sizes.iter().any(|&s| s < 64) && families.contains(&Family::V6) {
        bail!("--sizes: IPv6 frames need at least 64 bytes (62 of headers)");
    }
    let mut cases = Vec::new();
    if args.only.contains(&Kind::L2) {
        for &family in &families {
            cases.extend(args.sizes.iter().map(|&frame_len| Case {
                flow_cache: false,
                kind: Kind::L2,
                family,
                flows: 0,
                frame_len,
            }));
        }
    }
    if args.only.contains(&Kind::Nat) {
        let mut flows = args.flows.clone();
        if args.big && !flows.contains(&1_000_000) {
            flows.push(1_000_000);
        }
        for &f in &flows {
            if !(1..=1_000_000).contains(&f) {
                bail!("--flows: {f} is not in 1..=1000000");
            }
        }
        for &family in &families {
            for &frame_len in &args.sizes {
                cases.extend(flows.iter().map(|&flows| Case {
                    kind: Kind::Nat,
                    family,
                    flows,
                    frame_len,
                    flow_cache: !args.no_flow_cache,
                }));
            }
        }
    }
    let mix = if args.only.contains(&Kind::Pcap) {
        let path = args.pcap.clone().unwrap_or_else(default_scenario);
        let mix = Mix::load(&path)?;
        cases.push(Case {
            flow_cache: false,
            kind: Kind::Pcap,
            family: Family::V4,
            flows: 0,
            frame_len: 0,
        });
        Some(Arc::new(mix))
    } else {
        None
    };

    let machine = Machine::now();
    let free_cpus = free_cpus(max_workers);
    let bar = progress((cases.len() * max_workers) as u64);
    let per_rep = args.seconds / f64::from(args.reps);
    let warm = (args.seconds / 10.0).min(0.2);
    let mut results = Vec::new();
    for case in &cases {
        for workers in 1..=max_workers {
            bar.set_message(format!("{} × {workers} worker(s)", case.label()));
            let r = measure(case, workers, per_rep, warm, args.reps, mix.clone());
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    bar.finish_and_clear();
                    return Err(e);
                }
            };
            results.push(r);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let scaling = scaling(&results);
    let report = Report {
        bench: "pipeline",
        machine,
        seconds: args.seconds,
        reps: args.reps,
        batch: BATCH,
        pcap: mix.map(|m| m.source.clone()),
        free_cpus,
        results,
        scaling,
    };
    args.out.emit(&report, crate::plot::pipeline, print_table)
}

/// Work done by `n` threads spinning together for 0.1 s over the work of one alone.
fn free_cpus(n: usize) -> f64 {
    let spin = || {
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut loops = 0u64;
        while Instant::now() < deadline {
            for _ in 0..64 {
                loops = std::hint::black_box(loops + 1);
            }
        }
        loops
    };
    let one = spin().max(1);
    let all: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(spin)).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    all as f64 / one as f64
}

/// The bundled scenario, found from the build tree or the current directory.
fn default_scenario() -> PathBuf {
    let rel = "pcap-fixtures/snat-udp-and-icmp";
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    if built.is_dir() {
        built
    } else {
        PathBuf::from(rel)
    }
}

fn scaling(results: &[CaseResult]) -> Vec<Scaling> {
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.workers > 1) {
        let one = results.iter().find(|o| {
            o.workers == 1
                && o.case == r.case
                && o.family == r.family
                && o.flows == r.flows
                && o.frame_bytes == r.frame_bytes
        });
        if let Some(one) = one.filter(|o| o.mpps.median > 0.0) {
            out.push(Scaling {
                case: r.case,
                family: r.family,
                flows: r.flows,
                frame_bytes: r.frame_bytes,
                workers: r.workers,
                ratio: r.mpps.median / one.mpps.median,
            });
        }
    }
    out
}

fn print_table(r: &Report) {
    println!(
        "vswitch bench pipeline — {} — {} ({} CPUs, load {:.1}), {} reps × {:.2} s per case, batches of {}",
        r.machine.date,
        r.machine.cpu,
        r.machine.cpus,
        r.machine.load_avg_1m,
        r.reps,
        r.seconds / f64::from(r.reps),
        r.batch
    );
    println!(
        "{:<6} {:>4} {:>8} {:>7} {:>7}  {:<24} {:<22} {:<22} {:>6}",
        "case",
        "ip",
        "flows",
        "frame",
        "workers",
        "Mpps med (min–max)",
        "Gbit/s",
        "ns/pkt/worker",
        "drop%"
    );
    for c in &r.results {
        println!(
            "{:<6} {:>4} {:>8} {:>6}B {:>7}  {:<24} {:<22} {:<22} {:>6.1}",
            format!("{:?}", c.case).to_lowercase(),
            c.family.trim_start_matches("ip"),
            c.flows.map_or("-".into(), |f| f.to_string()),
            format!("{:.0}", c.frame_bytes),
            c.workers,
            c.mpps.show(2),
            c.gbps.show(2),
            c.ns_per_packet.show(1),
            c.dropped_share * 100.0
        );
    }
    if !r.scaling.is_empty() {
        println!("scaling (median Mpps with W workers / with 1):");
        for s in &r.scaling {
            println!(
                "  {:<5} {:>4} {:>8} {:>5.0}B  1→{} workers: {:.2}×",
                format!("{:?}", s.case).to_lowercase(),
                s.family.trim_start_matches("ip"),
                s.flows.map_or("-".into(), |f| f.to_string()),
                s.frame_bytes,
                s.workers,
                s.ratio
            );
        }
    }
    println!(
        "free CPU capacity before the run: {:.2} of {} (1-minute load {:.1}); scaling is capped by it",
        r.free_cpus, r.machine.cpus, r.machine.load_avg_1m
    );
    if let Some(p) = &r.pcap {
        println!("pcap mix: {p}");
    }
}

/// What a worker thread tells the coordinator.
enum Msg {
    /// Set-up done (or failed): bytes per packet.
    Ready(Result<f64>),
    /// One repetition: packets processed and seconds taken.
    Rep(u64, f64),
    /// After the last repetition: frames received and dropped by the pipeline.
    Done(u64, u64),
}

fn measure(
    case: &Case,
    workers: usize,
    per_rep: f64,
    warm: f64,
    reps: u32,
    mix: Option<Arc<Mix>>,
) -> Result<CaseResult> {
    check_stop()?;
    let barrier = Arc::new(Barrier::new(workers + 1));
    let abort = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut threads = Vec::with_capacity(workers);
    for w in 0..workers {
        let (case, barrier, abort, tx, mix) = (
            case.clone(),
            barrier.clone(),
            abort.clone(),
            tx.clone(),
            mix.clone(),
        );
        let t = std::thread::Builder::new()
            .name(format!("bench-w{w}"))
            .spawn(move || {
                let built = Workload::new(&case, w, workers, mix);
                let mut load = match built {
                    Ok(l) => {
                        let _ = tx.send(Msg::Ready(Ok(l.bytes_per_packet)));
                        Some(l)
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Ready(Err(e)));
                        None
                    }
                };
                barrier.wait();
                let Some(load) = load.as_mut() else { return };
                if abort.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                load.run_for(warm);
                for _ in 0..reps {
                    barrier.wait();
                    let (n, secs) = load.run_for(per_rep);
                    let _ = tx.send(Msg::Rep(n, secs));
                }
                // Every repetition is collected before any Done is sent.
                barrier.wait();
                let (rx_frames, dropped) = load.counters();
                let _ = tx.send(Msg::Done(rx_frames, dropped));
            })
            .context("cannot start a worker thread")?;
        threads.push(t);
    }
    drop(tx);
    let mut bytes = Vec::new();
    let mut failure = None;
    for _ in 0..workers {
        match rx.recv() {
            Ok(Msg::Ready(Ok(b))) => bytes.push(b),
            Ok(Msg::Ready(Err(e))) => failure = Some(e),
            _ => failure = Some(anyhow::anyhow!("a worker thread died during set-up")),
        }
    }
    if failure.is_some() {
        abort.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    barrier.wait();
    if let Some(e) = failure {
        for t in threads {
            let _ = t.join();
        }
        return Err(e.context(format!("setting up {}", case.label())));
    }
    let mut rates = Vec::with_capacity(reps as usize);
    let mut total = 0u64;
    for _ in 0..reps {
        barrier.wait();
        let mut pps = 0.0;
        for _ in 0..workers {
            match rx.recv() {
                Ok(Msg::Rep(n, secs)) => {
                    total += n;
                    pps += n as f64 / secs.max(1e-9);
                }
                Ok(_) => bail!("worker protocol error while measuring {}", case.label()),
                Err(_) => bail!("a worker thread died while measuring {}", case.label()),
            }
        }
        rates.push(pps);
    }
    barrier.wait();
    let (mut rx_frames, mut dropped) = (0u64, 0u64);
    for _ in 0..workers {
        if let Ok(Msg::Done(r, d)) = rx.recv() {
            rx_frames += r;
            dropped += d;
        }
    }
    for t in threads {
        let _ = t.join();
    }
    check_stop()?;
    let bytes_per_packet = bytes.iter().sum::<f64>() / bytes.len().max(1) as f64;
    let pps = Stat::of(&rates);
    let w = workers as f64;
    Ok(CaseResult {
        case: case.kind,
        family: family_name(case.family),
        flows: (case.kind == Kind::Nat).then_some(case.flows),
        frame_bytes: bytes_per_packet,
        workers,
        mpps: pps.map(|p| p / 1e6),
        gbps: pps.map(|p| p * bytes_per_packet * 8.0 / 1e9),
        // Decreasing in the rate: the slowest repetition gives the largest figure.
        ns_per_packet: Stat {
            median: w * 1e9 / pps.median.max(1e-9),
            min: w * 1e9 / pps.max.max(1e-9),
            max: w * 1e9 / pps.min.max(1e-9),
        },
        packets: total,
        dropped_share: if rx_frames == 0 {
            0.0
        } else {
            dropped as f64 / rx_frames as f64
        },
    })
}

/// One worker's pipeline and generator.
struct Workload {
    pipeline: Pipeline,
    source: Generator,
    input: Vec<Packet>,
    output: Vec<Packet>,
    start: Instant,
    base: u64,
    bytes_per_packet: f64,
}

enum Generator {
    /// Outputs go back in as inputs, from the port before their egress.
    L2 { ports: u16 },
    /// Header bytes of each flow's original and reply frames, flat.
    Nat {
        originals: Vec<u8>,
        replies: Vec<u8>,
        /// Header bytes per frame (42 for IPv4, 62 for IPv6).
        headers: usize,
        flows: usize,
        next: usize,
    },
    /// Frames replayed in order, forever.
    Mix {
        mix: Arc<Mix>,
        next: usize,
        spare: Vec<Vec<u8>>,
    },
}

impl Workload {
    fn new(case: &Case, worker: usize, workers: usize, mix: Option<Arc<Mix>>) -> Result<Workload> {
        let base = NANOS_PER_SEC;
        match case.kind {
            Kind::L2 => {
                let ports = 2u16;
                let (pipeline, input) = l2_learned(case.family, ports, case.frame_len, base)?;
                Ok(Workload::with(
                    pipeline,
                    Generator::L2 { ports },
                    input,
                    base,
                    case.frame_len,
                ))
            }
            Kind::Nat => {
                // Each worker owns its own slice of the flows (at least one).
                let share = (case.flows as usize / workers).max(1);
                let first = u32::try_from(worker * share).unwrap_or(0);
                let count = u32::try_from(share).unwrap_or(1);
                let frames = NatFlows::new_of(case.family, case.frame_len);
                let mut pipeline = nat_established(&frames, first, count, base)?;
                pipeline.set_flow_cache(case.flow_cache);
                let headers = case.family.headers();
                let mut originals = Vec::with_capacity(share * headers);
                let mut replies = Vec::with_capacity(share * headers);
                for i in first..first + count {
                    originals.extend_from_slice(&frames.headers(i, false));
                    replies.extend_from_slice(&frames.headers(i, true));
                }
                // Buffers of full length: the payload stays as built, only headers are copied in.
                let input = (0..BATCH)
                    .map(|k| Packet::new(NAT_CONTAINER, frames.frame(first, k % 2 == 1)))
                    .collect::<Vec<_>>();
                let mut w = Workload::with(
                    pipeline,
                    Generator::Nat {
                        originals,
                        replies,
                        headers,
                        flows: share,
                        next: 0,
                    },
                    Vec::new(),
                    base,
                    case.frame_len,
                );
                w.output = input;
                w.refill();
                Ok(w)
            }
            Kind::Pcap => {
                let mix = mix.context("no pcap mix loaded")?;
                let config = Config::from_toml(&mix.topology).context("pcap mix topology")?;
                let pipeline = Pipeline::new(&config).context("pcap mix topology")?;
                let bpp = mix.frames.iter().map(|(_, f)| f.len()).sum::<usize>() as f64
                    / mix.frames.len() as f64;
                let spare = (0..BATCH).map(|_| Vec::with_capacity(1518)).collect();
                let mut w = Workload::with(
                    pipeline,
                    Generator::Mix {
                        mix,
                        next: 0,
                        spare,
                    },
                    Vec::new(),
                    base,
                    0,
                );
                w.bytes_per_packet = bpp;
                w.refill();
                Ok(w)
            }
        }
    }

    fn with(
        pipeline: Pipeline,
        source: Generator,
        input: Vec<Packet>,
        base: u64,
        frame_len: usize,
    ) -> Workload {
        Workload {
            pipeline,
            source,
            input,
            output: Vec::with_capacity(BATCH * 4),
            start: Instant::now(),
            base,
            bytes_per_packet: frame_len as f64,
        }
    }

    /// Moves the output buffers back into the input with the next frames.
    fn refill(&mut self) {
        match &mut self.source {
            Generator::L2 { ports } => {
                let ports = *ports;
                self.input.extend(self.output.drain(..).map(|mut p| {
                    p.port = PortId((p.port.0 + ports - 1) % ports);
                    p
                }));
            }
            Generator::Nat {
                originals,
                replies,
                headers,
                flows,
                next,
            } => {
                let h = *headers;
                for (k, mut p) in self.output.drain(..).enumerate() {
                    let flow = (*next + k / 2) % *flows;
                    let (port, src) = if k % 2 == 0 {
                        (NAT_CONTAINER, &originals[flow * h..][..h])
                    } else {
                        (NAT_UPLINK, &replies[flow * h..][..h])
                    };
                    p.port = port;
                    p.data[..h].copy_from_slice(src);
                    self.input.push(p);
                }
                *next = (*next + BATCH / 2) % *flows;
            }
            Generator::Mix { mix, next, spare } => {
                spare.extend(self.output.drain(..).map(|p| p.data));
                for _ in 0..BATCH {
                    let (port, frame) = &mix.frames[*next];
                    *next = (*next + 1) % mix.frames.len();
                    let mut data = spare.pop().unwrap_or_default();
                    data.clear();
                    data.extend_from_slice(frame);
                    self.input.push(Packet::new(*port, data));
                }
            }
        }
    }

    /// Runs batches for `secs`; returns the frames processed and the seconds taken.
    fn run_for(&mut self, secs: f64) -> (u64, f64) {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(secs);
        let mut n = 0u64;
        let mut batches = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline || (batches.is_multiple_of(256) && stopped()) {
                return (n, (now - t0).as_secs_f64());
            }
            let clock = self.base + u64::try_from((now - self.start).as_nanos()).unwrap_or(0);
            n += self.input.len() as u64;
            self.pipeline
                .process(clock, &mut self.input, &mut self.output);
            std::hint::black_box(&self.output);
            self.refill();
            batches = batches.wrapping_add(1);
        }
    }

    /// Frames received and dropped, over all ports.
    fn counters(&self) -> (u64, u64) {
        let ports = self.pipeline.topology().ports.len();
        (0..ports)
            .filter_map(|p| self.pipeline.port_counters(PortId(p as u16)))
            .fold((0, 0), |(r, d), c| (r + c.rx_frames, d + c.dropped()))
    }
}

/// A pipeline on `ports` ports where host `i` has been learned on port `i`, and a batch where
/// frame `k` enters port `k % ports` addressed to the host on the next port.
fn l2_learned(family: Family, ports: u16, len: usize, now: u64) -> Result<(Pipeline, Vec<Packet>)> {
    let (mut pipeline, mut input) = vswitch_bench::l2_learned_of(family, ports, BATCH, len, now);
    // Check once that every frame is a known unicast, forwarded to one port.
    let mut out = Vec::with_capacity(BATCH);
    pipeline.process(now, &mut input, &mut out);
    if out.len() != BATCH {
        bail!("l2 set-up: {} of {BATCH} frames forwarded", out.len());
    }
    input.extend(out.drain(..).map(|mut p| {
        p.port = PortId((p.port.0 + ports - 1) % ports);
        p
    }));
    Ok((pipeline, input))
}

const NAT_CONTAINER: PortId = vswitch_bench::NAT_CONTAINER_PORT;
const NAT_UPLINK: PortId = vswitch_bench::NAT_UPLINK_PORT;

/// Conntrack entries of the NAT topology: enough for a million flows.
const NAT_MAX_ENTRIES: u32 = 2_097_152;

/// A pipeline where flows `first..first + count` are live and assured: each was created by its
/// first packet, answered, and sent again (UDP is assured on the first packet after a reply).
fn nat_established(frames: &NatFlows, first: u32, count: u32, now: u64) -> Result<Pipeline> {
    let config = vswitch_bench::nat_config_of(frames.family(), Some(NAT_MAX_ENTRIES));
    let mut pipeline = Pipeline::new(&config)?;
    let mut input = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let end = first + count;
    for round in 0..3 {
        let mut start = first;
        while start < end {
            check_stop()?;
            let stop = end.min(start + 4096);
            input.extend((start..stop).map(|i| {
                Packet::new(
                    if round == 1 {
                        NAT_UPLINK
                    } else {
                        NAT_CONTAINER
                    },
                    frames.frame(i, round == 1),
                )
            }));
            pipeline.process(now, &mut input, &mut out);
            if out.len() != (stop - start) as usize {
                bail!(
                    "nat set-up: {} of {} frames forwarded (round {round})",
                    out.len(),
                    stop - start
                );
            }
            out.clear();
            start = stop;
        }
    }
    let tracked = match frames.family() {
        Family::V4 => pipeline.conntrack().len(),
        Family::V6 => pipeline.conntrack6().len(),
    };
    if tracked != count as usize {
        bail!("nat set-up: {tracked} connections tracked, {count} expected");
    }
    Ok(pipeline)
}

/// The pcap mix: a topology and frames with their ingress ports, in replay order.
#[derive(Clone)]
struct Mix {
    topology: String,
    frames: Vec<(PortId, Vec<u8>)>,
    source: String,
}

impl Mix {
    fn load(path: &Path) -> Result<Mix> {
        let (topology, inputs) = if path.is_dir() {
            let topo = std::fs::read_to_string(path.join("topo.toml"))
                .with_context(|| format!("{}/topo.toml", path.display()))?;
            (topo, datapath::replay::scenario_inputs(path)?)
        } else {
            let topo = "[[network]]\nname = \"lan\"\n\n[[port]]\nname = \"p0\"\nkind = \"pcap\"\nnetwork = \"lan\"\n\n[[port]]\nname = \"p1\"\nkind = \"pcap\"\nnetwork = \"lan\"\n";
            (
                topo.to_string(),
                vec![("p0".to_string(), path.to_path_buf())],
            )
        };
        let config = Config::from_toml(&topology).context("pcap mix topology")?;
        let topo = switch::Topology::new(&config).context("pcap mix topology")?;
        let mut records = Vec::new();
        for (order, (port, file)) in inputs.iter().enumerate() {
            let id = topo
                .port_by_name(port)
                .with_context(|| format!("{}: no port {port:?} in the topology", file.display()))?;
            for r in datapath::pcap::read_file(file)? {
                // Snaplen-cut records are skipped: the frame was longer than what was captured.
                if r.data.len() as u32 == r.orig_len && !r.data.is_empty() {
                    records.push((r.timestamp, order, id, r.data));
                }
            }
        }
        records.sort_by_key(|(ts, order, _, _)| (*ts, *order));
        if records.is_empty() {
            bail!("{}: no complete frames to replay", path.display());
        }
        Ok(Mix {
            topology,
            frames: records.into_iter().map(|(_, _, p, d)| (p, d)).collect(),
            source: path.display().to_string(),
        })
    }
}
