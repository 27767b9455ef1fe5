//! `vswitch bench veth`: vswitch and its peers measured in one run on one namespace lab.
//!
//! ```text
//!  vswitch side                               kernel side
//!  a (172.17.0.2) ─┐                          ba (172.17.0.2) ─┐
//!                  ├─ sw: vswitch daemon ─ inet                ├─ br: br0 172.17.0.1, forwarding,
//!  b (172.17.0.3) ─┘   uplink 203.0.113.2    203.0.113.1      bb (172.17.0.3) ─┘  MASQUERADE ─ binet
//!
//!  raw veth: ra (172.17.0.2) ── rb (172.17.0.3)        (one veth pair, no switch)
//!  Open vSwitch: oa ─┐
//!                    ├─ ovs: ovsdb-server + ovs-vswitchd, br0 datapath_type=netdev
//!                ob ─┘       (AF_PACKET ports on the host ends; only when OVS is installed)
//!
//!  overlay, vswitch (two hosts in a cluster, VXLAN between their uplinks):
//!  c1 (10.77.0.x) ─ h1: daemon, up0 VTEP 198.51.100.11 ─┐
//!                       mg0 198.51.100.21 ──────────────┤ ul: br0 198.51.100.254, etcd :2379
//!                       mg0 198.51.100.22 ──────────────┤
//!  c2 (10.77.0.y) ─ h2: daemon, up0 VTEP 198.51.100.12 ─┘
//!  overlay, kernel (vxlan VNI 256 + br0 on each host, static flood entry to the other):
//!  xc1 (10.78.0.1) ─ xh1: br0 [vc, vx0] eth0 198.51.100.11 ─┐
//!                                                           ├─ xul: br0
//!  xc2 (10.78.0.2) ─ xh2: br0 [vc, vx0] eth0 198.51.100.12 ─┘
//! ```
//!
//! Containers are network namespaces. vswitch's are attached with the daemon's `connect`
//! request (veth pairs with the kernel's default offloads, as `vswitch network connect` does),
//! and its "internet" peer keeps its defaults too. The kernel's are veth pairs into `br0` in the
//! `br` namespace, which also routes to its own "internet" namespace with an iptables (or nft)
//! MASQUERADE rule — in that namespace only. The kernel side is measured twice: with the
//! kernel's defaults (the reference a user gets) and with offloads off on every link (what a
//! switch that cannot carry offloads gets). The raw veth pair is the ceiling of any veth design.
//!
//! Open vSwitch's userspace datapath runs when `ovs-vswitchd` is installed (package
//! `openvswitch-switch`), privately: its own database file, run directory, sockets and logs in
//! the lab's temp dir, both daemons inside the `ovs` namespace, started and killed by the lab
//! (a system OVS is never touched). It is measured without userspace TSO (tx offloads off in
//! the containers, which it needs to carry TCP at all) and with
//! `other_config:userspace-tso-enable=true` (offloads on). Without OVS those rows are reported
//! as skipped.
//!
//! Figures: 64-byte UDP frames per second received by the far container (trafgen, one process,
//! counted from the receiver's rx_packets), TCP Gbit/s with iperf3 container → container, TCP
//! Gbit/s container → "internet" through NAT, and 64-byte UDP frames per second container →
//! "internet" through NAT over `--nat-flows` source ports, counted as they arrive masqueraded by
//! a drop rule in the internet namespace (which therefore answers nothing; see `udp.rs`), and
//! TCP Gbit/s between containers on two hosts over a VXLAN overlay (`overlay.rs`). Every
//! namespace is named `vsb<pid>-*`; the lab's `Drop` kills what it started and deletes them,
//! also after an error or Ctrl-C.

use crate::harness::{Machine, OutputArgs, Stat, check_stop, progress, sleep_checked, stopped};
use anyhow::{Context, Result, bail};
use clap::Args;
use control::Request;
use serde::Serialize;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod overlay;
mod ovs;
mod probe;
mod sides;
mod udp;

use crate::lab::{Lab, have, in_ns, ip, is_root, sh, sweep_stale};
use overlay::{Availability, OVERLAY};
use ovs::ovs_available;
use probe::{counters, mac, offloads, ping, ping_within, tcp_rate};
use udp::{BLAST_MAX_FLOWS, Nat, Sink, Target, Tracker, Udp, udp_rate};
pub use udp::{BlastArgs, blast};

/// Arguments of `vswitch bench veth`.
#[derive(Args)]
pub struct VethArgs {
    /// Seconds per measurement (UDP rate window and iperf3 -t, rounded up to whole seconds).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Repetitions of each measurement.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    reps: u32,
    /// Use the built-in UDP sender even when trafgen is installed.
    #[arg(long)]
    no_trafgen: bool,
    /// Skip the Open vSwitch rows even when openvswitch-switch is installed.
    #[arg(long)]
    no_ovs: bool,
    /// Skip the overlay rows (overlay_tcp_gbps: two hosts over VXLAN, vswitch's cluster with
    /// etcd against the kernel's vxlan device and bridge).
    #[arg(long)]
    no_overlay: bool,
    /// UDP flows (source ports) of the NAT row, nat_udp_64B_pps (at most 256 without trafgen).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=50000))]
    nat_flows: u16,
    #[command(flatten)]
    out: OutputArgs,
}

/// One measured figure.
#[derive(Debug, Serialize)]
pub struct Row {
    /// `udp_64B_pps`, `tcp_gbps`, `nat_tcp_gbps`, `nat_udp_64B_pps` or `overlay_tcp_gbps`.
    pub test: &'static str,
    /// `vswitch`, `linux-bridge`, `linux-router+iptables` / `+nft`, `raw-veth`, `ovs-netdev`,
    /// `ovs-netdev+tso` or `linux-vxlan+bridge`.
    pub system: String,
    /// Offloads on the lab's veths: `kernel defaults`, `off` (every link) or
    /// `off in containers` (Open vSwitch without TSO).
    pub offloads: &'static str,
    /// Packets per second (udp) or Gbit/s (tcp).
    pub value: Stat,
    /// `pps` or `Gbit/s`.
    pub unit: &'static str,
    /// For udp: what the sender put on its link, per second (median).
    pub offered: Option<f64>,
    /// For udp: distinct UDP flows (source ports) sent.
    pub flows: Option<u32>,
}

/// vswitch's figure over a peer's figure.
#[derive(Debug, Serialize)]
pub struct Ratio {
    /// The test.
    pub test: &'static str,
    /// The row it is compared with: "system (offloads ...)".
    pub against: String,
    /// That row's system.
    pub system: String,
    /// That row's offloads.
    pub offloads: &'static str,
    /// vswitch median / peer median.
    pub ratio: f64,
}

/// A row that was not measured, and why.
#[derive(Debug, Serialize)]
pub struct Skipped {
    /// The test.
    pub test: &'static str,
    /// The system.
    pub system: String,
    /// Why (one line).
    pub reason: String,
}

/// Everything `bench veth` reports.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always "veth".
    pub bench: &'static str,
    /// The machine.
    pub machine: Machine,
    /// Namespace prefix used (all removed at the end).
    pub prefix: String,
    /// Seconds per measurement.
    pub seconds: f64,
    /// Repetitions per measurement.
    pub reps: u32,
    /// The UDP packet generator.
    pub generator: String,
    /// UDP flows (source ports) of the nat_udp_64B_pps rows.
    pub nat_udp_flows: u32,
    /// The kernel NAT peer's tool.
    pub nat_tool: String,
    /// `ovs-vswitchd --version`'s first line, or why Open vSwitch was not measured.
    pub ovs: String,
    /// The etcd the overlay row's vswitch hosts share, or why that row was not measured.
    pub overlay: String,
    /// Every figure.
    pub rows: Vec<Row>,
    /// Rows that were not measured (Open vSwitch or etcd not installed, Open vSwitch failing).
    pub skipped: Vec<Skipped>,
    /// vswitch against each other row of the same test.
    pub ratios: Vec<Ratio>,
    /// What the NAT UDP rows saw besides their figure: flows tracked after the warm-up, frames
    /// that arrived not masqueraded, ICMP unreachables sent by the "internet".
    pub notes: Vec<String>,
}

const OFF: &str = "off";
const DEFAULTS: &str = "kernel defaults";
const OFF_IN_CONTAINERS: &str = "off in containers";
const VSWITCH: &str = "vswitch";
const BRIDGE: &str = "linux-bridge";
const RAW: &str = "raw-veth";
const OVS: &str = "ovs-netdev";
const OVS_TSO: &str = "ovs-netdev+tso";
const UDP: &str = "udp_64B_pps";
const TCP: &str = "tcp_gbps";
const NAT: &str = "nat_tcp_gbps";
const NAT_UDP: &str = "nat_udp_64B_pps";
/// Open vSwitch's database schema (Debian's openvswitch-common).
const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const INET_IP: &str = "203.0.113.1";

/// Runs `vswitch bench veth`.
pub fn run(args: VethArgs) -> Result<()> {
    if !(args.seconds >= 0.5 && args.seconds <= 60.0) {
        bail!("--seconds must be in [0.5, 60]");
    }
    if !is_root() {
        bail!("bench veth needs root (it creates network namespaces and veth pairs)");
    }
    for tool in ["ip", "iperf3", "ethtool"] {
        if !have(tool) {
            bail!("bench veth needs {tool} (apt-get install iproute2 iperf3 ethtool)");
        }
    }
    let nat_tool = if have("iptables") {
        "iptables"
    } else if have("nft") {
        "nft"
    } else {
        bail!(
            "bench veth needs iptables or nft for the kernel NAT peer (apt-get install iptables)"
        );
    };
    let trafgen = !args.no_trafgen && have("trafgen");
    let nat_flows = if trafgen {
        args.nat_flows
    } else {
        args.nat_flows.min(BLAST_MAX_FLOWS)
    };
    let generator = if trafgen {
        "trafgen -P 1 (netsniff-ng), 60-byte frames + FCS".to_string()
    } else {
        "vswitch bench blast: one UDP socket send loop (trafgen not installed)".to_string()
    };
    let ovs = if args.no_ovs {
        Err("--no-ovs".to_string())
    } else {
        ovs_available()
    };
    let overlay = Availability::probe(args.no_overlay);
    sweep_stale();
    let machine = Machine::now();
    let mut lab = Lab::new()?;
    let result = measure_all(
        &mut lab, &args, trafgen, nat_flows, nat_tool, &ovs, &overlay,
    );
    let prefix = lab.prefix.clone();
    drop(lab);
    let (rows, skipped, notes) = result?;
    let ratios = ratios(&rows);
    let report = Report {
        bench: "veth",
        machine,
        prefix,
        seconds: args.seconds,
        reps: args.reps,
        generator,
        nat_udp_flows: u32::from(nat_flows),
        nat_tool: nat_tool.to_string(),
        ovs: match ovs {
            Ok(v) => v,
            Err(why) => format!("not measured: {why}"),
        },
        overlay: overlay.describe(),
        rows,
        skipped,
        ratios,
        notes,
    };
    args.out.emit(&report, crate::plot::veth, print_table)
}

fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for v in rows.iter().filter(|r| r.system == VSWITCH) {
        for k in rows
            .iter()
            .filter(|r| r.test == v.test && r.system != VSWITCH)
        {
            if k.value.median > 0.0 {
                out.push(Ratio {
                    test: v.test,
                    against: format!("{} (offloads {})", k.system, k.offloads),
                    system: k.system.clone(),
                    offloads: k.offloads,
                    ratio: v.value.median / k.value.median,
                });
            }
        }
    }
    out
}

fn print_table(r: &Report) {
    println!(
        "vswitch bench veth — {} — {} ({} CPUs, kernel {}, load {:.1}), {} × {:.1} s per figure",
        r.machine.date,
        r.machine.cpu,
        r.machine.cpus,
        r.machine.kernel,
        r.machine.load_avg_1m,
        r.reps,
        r.seconds
    );
    println!(
        "UDP generator: {}; {} flows (source ports) through NAT",
        r.generator, r.nat_udp_flows
    );
    println!("Open vSwitch: {}", r.ovs);
    println!("Overlay: {}", r.overlay);
    println!(
        "{:<16} {:<24} {:<18} {:>28}  {:>12}",
        "test", "system", "offloads", "median (min–max)", "vs vswitch"
    );
    for row in &r.rows {
        let v = |x: f64| {
            if row.unit == "pps" { x / 1e3 } else { x }
        };
        let unit = if row.unit == "pps" { "kpps" } else { "Gbit/s" };
        let vs = r
            .rows
            .iter()
            .find(|x| x.test == row.test && x.system == VSWITCH)
            .filter(|_| row.system != VSWITCH && row.value.median > 0.0)
            .map_or(String::new(), |x| {
                format!("{:.2}×", x.value.median / row.value.median)
            });
        let offered = row.offered.map_or(String::new(), |o| {
            format!("  (offered {:.0} kpps)", o / 1e3)
        });
        println!(
            "{:<16} {:<24} {:<18} {:>21} {:<6}  {:>12}{offered}",
            row.test,
            row.system,
            row.offloads,
            row.value.map(v).show(if row.unit == "pps" { 0 } else { 2 }),
            unit,
            vs
        );
    }
    for k in &r.skipped {
        println!("{:<16} {:<24} skipped: {}", k.test, k.system, k.reason);
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    println!("ratios are vswitch's median over the row's median (> 1: vswitch is faster)");
}

/// Rows, skipped rows and notes.
type Measured = (Vec<Row>, Vec<Skipped>, Vec<String>);

fn measure_all(
    lab: &mut Lab,
    args: &VethArgs,
    trafgen: bool,
    nat_flows: u16,
    nat_tool: &str,
    ovs_found: &std::result::Result<String, String>,
    overlay: &Availability,
) -> Result<Measured> {
    let reps = args.reps;
    let secs = args.seconds;
    let tcp_secs = secs.ceil().max(1.0) as u32;
    let nat_system = format!("linux-router+{nat_tool}");
    // (test, system, offloads) in run order: vswitch, the raw pair, the kernel with its
    // defaults, then with offloads off, the overlays, then Open vSwitch without and with TSO.
    let mut plan: Vec<(&'static str, String, &'static str)> = vec![
        (UDP, VSWITCH.into(), DEFAULTS),
        (TCP, VSWITCH.into(), DEFAULTS),
        (NAT, VSWITCH.into(), DEFAULTS),
        (NAT_UDP, VSWITCH.into(), DEFAULTS),
        (UDP, RAW.into(), DEFAULTS),
        (TCP, RAW.into(), DEFAULTS),
        (UDP, BRIDGE.into(), DEFAULTS),
        (TCP, BRIDGE.into(), DEFAULTS),
        (NAT, nat_system.clone(), DEFAULTS),
        (NAT_UDP, nat_system.clone(), DEFAULTS),
        (UDP, BRIDGE.into(), OFF),
        (TCP, BRIDGE.into(), OFF),
        (NAT, nat_system.clone(), OFF),
        (NAT_UDP, nat_system.clone(), OFF),
    ];
    let ovs_plan = [
        (UDP, OVS, OFF_IN_CONTAINERS),
        (TCP, OVS, OFF_IN_CONTAINERS),
        (TCP, OVS_TSO, DEFAULTS),
    ];
    let mut skipped = Vec::new();
    overlay.plan(&mut plan, &mut skipped);
    match ovs_found {
        Ok(_) => plan.extend(ovs_plan.map(|(t, s, o)| (t, s.to_string(), o))),
        Err(why) => skipped.extend(ovs_plan.map(|(test, system, _)| Skipped {
            test,
            system: system.into(),
            reason: why.clone(),
        })),
    }
    let bar = progress(u64::from(reps) * plan.len() as u64 + 1);
    bar.set_message("building the namespaces");
    let built = (|| {
        let v = lab.build_vswitch()?;
        let r = lab.build_raw()?;
        let k = lab.build_kernel(nat_tool)?;
        // Both "internet" namespaces drop (and count) the NAT UDP row's frames unanswered.
        let sinks = (
            Sink::install(&v.2, nat_tool)?,
            Sink::install(&k.2, nat_tool)?,
        );
        let o = match ovs_found {
            Ok(_) => Some(lab.build_ovs()?),
            Err(_) => None,
        };
        let ov = match &overlay.vswitch {
            Ok(_) => Some(lab.build_overlay_vswitch()?),
            Err(_) => None,
        };
        let ok = match &overlay.kernel {
            Ok(()) => Some(lab.build_overlay_kernel()?),
            Err(_) => None,
        };
        Ok::<_, anyhow::Error>((v, r, k, o, sinks, (ov, ok)))
    })();
    let ((a, b, inet), (ra, rb), (ba, bb, binet, br), mut ovs, (sink, bsink), (ov, ok)) =
        match built {
            Ok(x) => x,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        };
    bar.inc(1);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let socket = lab.socket();
    let mut run = |lab: &mut Lab| -> Result<()> {
        ping(&a, "172.17.0.3")?;
        ping(&b, "172.17.0.2")?;
        ping(&a, INET_IP)?;
        ping(&ra, "172.17.0.3")?;
        ping(&ba, "172.17.0.3")?;
        ping(&bb, "172.17.0.2")?;
        ping(&ba, INET_IP)?;
        // The NAT UDP frames go to the containers' gateways, and end in the internet namespaces.
        let (gw, bgw) = (udp::gateway_mac(&a)?, udp::gateway_mac(&ba)?);
        udp::check_local(&inet, INET_IP)?;
        udp::check_local(&binet, INET_IP)?;
        let kernel_links = [
            (ba.as_str(), "eth0"),
            (bb.as_str(), "eth0"),
            (br.as_str(), "vba"),
            (br.as_str(), "vbb"),
            (br.as_str(), "up0"),
            (binet.as_str(), "eth0"),
        ];
        let mut kernel_off = false;
        // The Open vSwitch configuration running now: None, Some(false) without TSO, Some(true).
        let mut ovs_mode: Option<bool> = None;
        // An Open vSwitch system that failed: its rows are skipped with the reason.
        let mut ovs_failed: Vec<(String, String)> = Vec::new();
        for (test, system, off) in &plan {
            let (test, off) = (*test, *off);
            let is_ovs = system == OVS || system == OVS_TSO;
            if let Some((_, why)) = ovs_failed.iter().find(|(s, _)| s == system) {
                skipped.push(Skipped {
                    test,
                    system: system.clone(),
                    reason: why.clone(),
                });
                bar.inc(u64::from(reps));
                continue;
            }
            bar.set_message(format!("{test}: {system}, offloads {off}"));
            if (system == BRIDGE || *system == nat_system) && off == OFF && !kernel_off {
                for (ns, dev) in kernel_links {
                    offloads(ns, dev, false)?;
                }
                kernel_off = true;
            }
            // The overlay rows run on labs of their own (two hosts each).
            let pair = match (test, system.as_str()) {
                (OVERLAY, VSWITCH) => Some(ov.as_ref().context("no vswitch overlay lab")?),
                (OVERLAY, _) => Some(ok.as_ref().context("no kernel overlay lab")?),
                _ => None,
            };
            let (src, dst, far): (&str, &str, Option<&str>) = match (pair, system.as_str()) {
                (Some(p), _) => (&p.src, &p.dst, None),
                (None, VSWITCH) => (&a, &b, Some(&inet)),
                (None, RAW) => (&ra, &rb, None),
                (None, OVS | OVS_TSO) => match &ovs {
                    Some(o) => (&o.oa, &o.ob, None),
                    None => bail!("the Open vSwitch side was not built"),
                },
                _ => (&ba, &bb, Some(&binet)),
            };
            let (src, dst) = (src.to_string(), dst.to_string());
            let far = far.map(str::to_string);
            // The overlay rows' retransmissions, per repetition, for their note.
            let mut retransmits: Vec<Option<u64>> = Vec::new();
            let drops_before = pair.and_then(overlay::Pair::drops);
            let measured = (|| -> Result<(Vec<f64>, Vec<Udp>)> {
                if let Some(o) = ovs.as_mut().filter(|_| is_ovs) {
                    let tso = system == OVS_TSO;
                    if ovs_mode != Some(tso) {
                        bar.set_message(format!("starting ovs-vswitchd (userspace TSO {tso})"));
                        o.stop_vswitchd(lab);
                        ovs_mode = None;
                        // Without TSO its AF_PACKET ports cannot take partial checksums or
                        // super-frames (BENCH-NOTES.md): tx offloads off in the containers.
                        for c in [&o.oa, &o.ob] {
                            offloads(c, "eth0", tso)?;
                        }
                        o.start(lab, tso)?;
                        ovs_mode = Some(tso);
                        // A restarted ovs-vswitchd may still be opening its ports.
                        ping_within(&o.oa, "172.17.0.3", 10.0)?;
                        ping_within(&o.ob, "172.17.0.2", 10.0)?;
                        bar.set_message(format!("{test}: {system}, offloads {off}"));
                    }
                }
                let mut values = Vec::new();
                let mut udps = Vec::new();
                for _ in 0..reps {
                    check_stop()?;
                    let far = far.as_deref();
                    match test {
                        UDP | NAT_UDP => {
                            let nat = test == NAT_UDP;
                            let t = Target {
                                src: &src,
                                src_ip: "172.17.0.2",
                                dst: if nat {
                                    far.context("no internet peer")?
                                } else {
                                    &dst
                                },
                                dst_ip: if nat { INET_IP } else { "172.17.0.3" },
                                dst_mac: match (nat, system == VSWITCH) {
                                    (false, _) => mac(&dst, "eth0")?,
                                    (true, true) => gw.clone(),
                                    (true, false) => bgw.clone(),
                                },
                                flows: if nat { nat_flows } else { 1 },
                                nat: nat.then(|| match system == VSWITCH {
                                    true => Nat {
                                        sink: &sink,
                                        tracker: Tracker::Vswitch(&socket),
                                    },
                                    false => Nat {
                                        sink: &bsink,
                                        tracker: Tracker::Kernel(&br),
                                    },
                                }),
                            };
                            let u = udp_rate(lab, &t, secs, trafgen)?;
                            values.push(u.rx);
                            udps.push(u);
                        }
                        TCP => values.push(tcp_rate(lab, &src, &dst, "172.17.0.3", tcp_secs)?),
                        OVERLAY => {
                            let ip = &pair.context("no overlay lab")?.dst_ip;
                            let t = probe::tcp_run(lab, &src, &dst, ip, tcp_secs)?;
                            values.push(t.gbps);
                            retransmits.push(t.retransmits);
                        }
                        _ => {
                            let far = far.context("no internet peer")?;
                            values.push(tcp_rate(lab, &src, far, INET_IP, tcp_secs)?);
                        }
                    }
                    bar.inc(1);
                }
                Ok((values, udps))
            })();
            let (values, udps) = match measured {
                Ok(x) => x,
                Err(e) if is_ovs && !stopped() => {
                    // Open vSwitch is a guest here: its failure skips its rows, not the run.
                    let why = format!("{e:#}").replace('\n', " ");
                    skipped.push(Skipped {
                        test,
                        system: system.clone(),
                        reason: why.clone(),
                    });
                    ovs_failed.push((system.clone(), why));
                    bar.inc(u64::from(reps));
                    continue;
                }
                Err(e) => return Err(e),
            };
            rows.push(Row {
                test,
                system: system.clone(),
                offloads: off,
                value: Stat::of(&values),
                unit: if [TCP, NAT, OVERLAY].contains(&test) {
                    "Gbit/s"
                } else {
                    "pps"
                },
                offered: (!udps.is_empty())
                    .then(|| Stat::of(&udps.iter().map(|u| u.offered).collect::<Vec<_>>()).median),
                flows: (!udps.is_empty())
                    .then(|| if test == NAT_UDP { nat_flows } else { 1 }.into()),
            });
            if test == NAT_UDP {
                notes.push(udp::nat_note(system, off, nat_flows, &udps));
            }
            if test == OVERLAY {
                let after = pair.and_then(overlay::Pair::drops);
                notes.push(overlay::note(system, &retransmits, drops_before, after));
            }
        }
        if let Some(o) = ovs.as_mut() {
            o.stop_vswitchd(lab);
        }
        Ok(())
    };
    let r = run(lab);
    bar.finish_and_clear();
    r?;
    rows.sort_by_key(order);
    Ok((rows, skipped, notes))
}

/// Print order: per test, vswitch, the kernel with its defaults, with offloads off, the raw
/// pair, Open vSwitch without and with TSO (the overlay test: vswitch, then the kernel's).
fn order(r: &Row) -> usize {
    let t = [UDP, TCP, NAT, NAT_UDP, OVERLAY]
        .iter()
        .position(|x| *x == r.test)
        .unwrap_or(9);
    let s = match r.system.as_str() {
        VSWITCH => 0,
        RAW => 3,
        OVS => 4,
        OVS_TSO => 5,
        _ if r.offloads == OFF => 2,
        _ => 1,
    };
    t * 10 + s
}
