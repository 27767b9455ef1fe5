//! `vswitch bench scale`: many containers on one network, attached one after another, on
//! vswitch and, in the same run, on a Linux bridge.
//!
//! ```text
//!  vswitch side                          kernel side
//!  c0 ─┐                                 k0 ─┐
//!  c1 ─┼─ sw: vswitch daemon, `bridge`   k1 ─┼─ br: br0 172.17.0.1/16
//!  ... │   (uplink up0 ─ inet)           ... │
//!  cN ─┘                                 kN ─┘
//! ```
//!
//! Each container is an empty network namespace. vswitch's are attached with the daemon's
//! `connect` request (what `vswitch network connect` sends); the bridge's with the same netlink
//! calls vswitch makes (datapath::io::link: a veth pair created into the namespace, address,
//! route, up) plus `master br0`. So the two attach times differ by what each switch does with a
//! new port, not by how the pair is made.
//!
//! Per side: the time of every attach, `ip netns add` beside it, the daemon's RSS and the
//! machine's softirq share per step, a ping between the first two containers all through the
//! attaches and a churn phase (`--churn` containers disconnected and attached again), a ping
//! after it, then the softirq share and the daemon's CPU while idle, and how long `status` and
//! `network inspect` take with every container attached. The sides run one after the other;
//! between them the bench waits until the kernel has finished tearing the first one down.
//!
//! Lost pings count as 1 s in the percentiles (a lost ping is worse than any late one).

use crate::harness::{Machine, OutputArgs, check_stop, progress, sleep_checked};
use crate::lab::{Lab, have, in_ns, ip, is_root, sweep_stale};
use anyhow::{Context, Result, bail};
use clap::Args;
use control::Request;
use datapath::io::link::{self, VethSpec};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `vswitch bench scale`.
#[derive(Args)]
pub struct ScaleArgs {
    /// Containers attached on each side.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(20..=4000))]
    containers: u32,
    /// Containers disconnected and attached again after the attach phase (the ping runs on).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=4000))]
    churn: u32,
    /// Rows of the table (attach phase split into this many steps).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    steps: u32,
    /// Measure vswitch only (no Linux bridge side).
    #[arg(long)]
    no_bridge: bool,
    #[command(flatten)]
    out: OutputArgs,
}

/// Milliseconds: median, 90th percentile, largest.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ms {
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Ms {
    fn of(v: &[f64]) -> Ms {
        Ms {
            median: percentile(v, 50.0),
            p90: percentile(v, 90.0),
            max: percentile(v, 100.0),
        }
    }
}

/// One row of the table: containers `first..=last` attached.
#[derive(Debug, Serialize)]
pub struct Step {
    pub first: u32,
    pub last: u32,
    /// Time per attach.
    pub attach_ms: Ms,
    /// Time per `ip netns add` (+ `lo` up) beside it.
    pub netns_ms: Ms,
    /// The daemon's RSS at the end of the step (vswitch only).
    pub rss_kb: Option<u64>,
    /// Share of all CPUs' time spent in softirq during the step, percent.
    pub softirq_pct: f64,
}

/// A ping between the first two containers.
#[derive(Debug, Default, Serialize)]
pub struct Ping {
    pub sent: u64,
    pub received: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One switch's run.
#[derive(Debug, Serialize)]
pub struct Side {
    /// `vswitch` or `linux-bridge`.
    pub system: &'static str,
    pub steps: Vec<Step>,
    /// Median attach time of containers 6..=15 ("the 10th").
    pub attach_ms_at_10th: f64,
    /// Median attach time of the last 10 containers.
    pub attach_ms_at_last: f64,
    /// `attach_ms_at_last / attach_ms_at_10th`.
    pub attach_growth: f64,
    /// Disconnect and re-attach times of the churn phase.
    pub churn_detach_ms: Option<Ms>,
    pub churn_attach_ms: Option<Ms>,
    /// From the second container's attach to the end of the churn.
    pub ping_during: Ping,
    /// 500 pings at 10 ms once the churn is over.
    pub ping_after: Ping,
    /// Softirq share of all CPUs over 5 s idle after the churn, percent.
    pub idle_softirq_pct: f64,
    /// The daemon's CPU over the same 5 s, percent of one CPU (vswitch only).
    pub idle_daemon_cpu_pct: Option<f64>,
    /// Daemon RSS before the first container, at the end, and per container in between.
    pub rss_base_kb: Option<u64>,
    pub rss_end_kb: Option<u64>,
    pub rss_per_container_kb: Option<f64>,
    /// `status` and `network inspect bridge` with every container attached (vswitch only).
    pub status_ms: Option<f64>,
    pub inspect_ms: Option<f64>,
    /// Every attach time in order, for plots and machines.
    pub attach_ms: Vec<f64>,
}

/// A target of issue #20 and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Target {
    pub what: &'static str,
    pub value: f64,
    pub limit: f64,
    pub met: bool,
}

/// vswitch's figure over the bridge's (< 1: vswitch is faster or lower).
#[derive(Debug, Serialize)]
pub struct Ratio {
    pub what: &'static str,
    pub ratio: f64,
}

/// Everything `bench scale` reports.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always "scale".
    pub bench: &'static str,
    pub machine: Machine,
    /// Namespace prefix of the run (all removed at the end).
    pub prefix: String,
    pub containers: u32,
    pub churn: u32,
    pub sides: Vec<Side>,
    pub targets: Vec<Target>,
    pub ratios: Vec<Ratio>,
}

const CONTAINER_NET: &str = "172.17.0.0/16";
const GATEWAY: &str = "172.17.0.1";

/// Runs `vswitch bench scale`.
pub fn run(args: ScaleArgs) -> Result<()> {
    if !is_root() {
        bail!("bench scale needs root (it creates network namespaces and veth pairs)");
    }
    for tool in ["ip", "ping"] {
        if !have(tool) {
            bail!("bench scale needs {tool} (apt-get install iproute2 iputils-ping)");
        }
    }
    sweep_stale();
    let machine = Machine::now();
    let mut sides = vec![run_side(&args, System::Vswitch)?];
    if !args.no_bridge {
        wait_quiet()?;
        sides.push(run_side(&args, System::Bridge)?);
    }
    let report = Report {
        bench: "scale",
        machine,
        prefix: crate::lab::prefix(),
        containers: args.containers,
        churn: args.churn,
        targets: targets(&sides[0]),
        ratios: ratios(&sides),
        sides,
    };
    args.out.emit(&report, crate::plot::scale, print_table)
}

#[derive(Clone, Copy, PartialEq)]
enum System {
    Vswitch,
    Bridge,
}

/// One side's switch, built: how it attaches and detaches a container namespace.
enum Switch {
    /// The daemon in the lab (its control socket).
    Vswitch,
    /// `br0` in this namespace.
    Bridge(PathBuf),
}

impl Switch {
    /// Attaches container `i` (namespace `ns`); returns its address.
    fn attach(&self, lab: &Lab, i: u32, ns: &str) -> Result<Ipv4Addr> {
        match self {
            Switch::Vswitch => {
                let req = Request::Connect {
                    network: "bridge".into(),
                    netns: Some(format!("/run/netns/{ns}")),
                    name: Some(format!("c{i}")),
                    ifname: Some("eth0".into()),
                    ip: None,
                    ip6: None,
                    mac: None,
                    peer_in_host: false,
                };
                let v = control::call(&lab.socket(), &req)
                    .with_context(|| format!("connecting {ns}:\n{}", lab.daemon_log()))?;
                v["ip"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("connect answered without an address: {v}"))
            }
            Switch::Bridge(br) => {
                let addr = container_ip(i);
                let host = format!("k{i}");
                let netns = PathBuf::from(format!("/run/netns/{ns}"));
                let spec = VethSpec {
                    host_ifname: &host,
                    peer_ifname: &format!("k{i}p"),
                    netns: &netns,
                    container_ifname: "eth0",
                    mac: None,
                    mtu: 1500,
                    addr: Some((addr, 16)),
                    gateway: Some(GATEWAY.parse()?),
                    addr6: None,
                    gateway6: None,
                };
                datapath::io::in_netns(br, || {
                    link::create_container_veth(&spec)?;
                    link::set_master(&host, "br0")
                })??;
                Ok(addr)
            }
        }
    }

    fn detach(&self, lab: &Lab, i: u32) -> Result<()> {
        match self {
            Switch::Vswitch => {
                let req = Request::Disconnect {
                    network: "bridge".into(),
                    name: format!("c{i}"),
                    unpublish: true,
                    missing_ok: false,
                    netns: None,
                };
                control::call(&lab.socket(), &req)
                    .with_context(|| format!("disconnecting c{i}:\n{}", lab.daemon_log()))?;
            }
            Switch::Bridge(br) => {
                datapath::io::in_netns(br, || link::delete_link(&format!("k{i}")))??;
            }
        }
        Ok(())
    }
}

/// The bridge side's address for container `i` (.2 up, as IPAM gives on the vswitch side).
fn container_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 17, 0, 2)) + i)
}

fn run_side(args: &ScaleArgs, system: System) -> Result<Side> {
    let mut lab = Lab::new()?;
    let switch = match system {
        System::Vswitch => {
            let sw = lab.netns("sw")?;
            let inet = lab.netns("inet")?;
            Lab::veth(&sw, "up0", &inet, "eth0")?;
            let cfg = lab.dir.join("topo.toml");
            std::fs::write(
                &cfg,
                format!(
                    "[[network]]\nname = \"bridge\"\nsubnet = \"{CONTAINER_NET}\"\ngateway = \"{GATEWAY}\"\n\n\
                     [[port]]\nname = \"up0\"\nkind = \"af_packet\"\n\n\
                     [uplink]\nport = \"up0\"\naddress = \"203.0.113.2\"\nsubnet = \"203.0.113.0/24\"\n"
                ),
            )?;
            lab.start_daemon(&sw, &cfg)?;
            Switch::Vswitch
        }
        System::Bridge => {
            let br = lab.netns("br")?;
            ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
            ip(&[
                "-n",
                &br,
                "addr",
                "add",
                &format!("{GATEWAY}/16"),
                "dev",
                "br0",
            ])?;
            ip(&["-n", &br, "link", "set", "br0", "up"])?;
            Switch::Bridge(PathBuf::from(format!("/run/netns/{br}")))
        }
    };
    let name = match system {
        System::Vswitch => "vswitch",
        System::Bridge => "linux-bridge",
    };
    let pid = lab.daemon_pid();
    let rss_base_kb = pid.and_then(rss_kb);
    let n = args.containers;
    let bar = progress(u64::from(n + args.churn));
    bar.set_message(format!("{name}: attaching"));
    let mut namespaces = Vec::with_capacity(n as usize);
    let mut attach_ms = Vec::with_capacity(n as usize);
    let mut netns_ms = Vec::with_capacity(n as usize);
    let mut steps = Vec::new();
    let mut step_start = (0u32, cpu_times()?);
    let mut pinger = None;
    let mut peer = None;
    for i in 0..n {
        check_stop()?;
        let t = Instant::now();
        let ns = lab.netns(&format!("c{i}"))?;
        netns_ms.push(ms(t.elapsed()));
        let t = Instant::now();
        let addr = switch.attach(&lab, i, &ns)?;
        attach_ms.push(ms(t.elapsed()));
        namespaces.push(ns);
        match i {
            0 => peer = Some(addr),
            1 => {
                // The pair answers before the ping starts: the figures are about staying fast.
                let to = peer.context("no first container")?.to_string();
                wait_ping(&namespaces[1], &to)?;
                pinger = Some(lab.spawn(
                    &namespaces[1],
                    &["ping", "-i", "0.01", &to],
                    Some("ping-during.txt"),
                )?);
            }
            _ => {}
        }
        let done = i + 1;
        if done * args.steps / n != i * args.steps / n || done == n {
            let now = cpu_times()?;
            let (first, ref before) = step_start;
            steps.push(Step {
                first: first + 1,
                last: done,
                attach_ms: Ms::of(&attach_ms[first as usize..]),
                netns_ms: Ms::of(&netns_ms[first as usize..]),
                rss_kb: pid.and_then(rss_kb),
                softirq_pct: softirq_share(before, &now),
            });
            step_start = (done, now);
        }
        bar.inc(1);
    }
    let (status_ms, inspect_ms) = match system {
        System::Vswitch => {
            let t = Instant::now();
            control::call(&lab.socket(), &Request::Status).context("status")?;
            let status = ms(t.elapsed());
            let t = Instant::now();
            control::call(
                &lab.socket(),
                &Request::NetworkInspect {
                    names: vec!["bridge".into()],
                },
            )
            .context("network inspect")?;
            (Some(status), Some(ms(t.elapsed())))
        }
        System::Bridge => (None, None),
    };
    bar.set_message(format!("{name}: churn"));
    let (mut detach, mut reattach) = (Vec::new(), Vec::new());
    for k in 0..args.churn {
        check_stop()?;
        // Spread over the containers, never the pinging pair.
        let i = 2 + (k * 7919) % (n - 2);
        let t = Instant::now();
        switch.detach(&lab, i)?;
        detach.push(ms(t.elapsed()));
        let t = Instant::now();
        switch.attach(&lab, i, &namespaces[i as usize])?;
        reattach.push(ms(t.elapsed()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let pinger = pinger.context("no ping was started")?;
    lab.signal(pinger, "-INT");
    lab.wait(pinger, 5.0)?;
    let ping_during = parse_ping(&std::fs::read_to_string(lab.dir.join("ping-during.txt"))?);
    let to = peer.context("no first container")?.to_string();
    let after = in_ns(
        &namespaces[1],
        &["ping", "-c", "500", "-i", "0.01", "-W", "1", &to],
    )
    .unwrap_or_else(|e| format!("{e:#}"));
    let ping_after = parse_ping(&after);
    // Idle: let the last attach's chatter (DAD, router solicitations) end, then 5 s of nothing.
    sleep_checked(3.0)?;
    let (cpu0, daemon0) = (cpu_times()?, pid.and_then(process_ticks));
    let idle = Duration::from_secs(5);
    sleep_checked(idle.as_secs_f64())?;
    let (cpu1, daemon1) = (cpu_times()?, pid.and_then(process_ticks));
    let idle_daemon_cpu_pct = daemon0.zip(daemon1).map(|(a, b)| {
        // Clock ticks are 100 per second on Linux (USER_HZ).
        (b.saturating_sub(a)) as f64 / 100.0 / idle.as_secs_f64() * 100.0
    });
    let rss_end_kb = pid.and_then(rss_kb);
    let attach_ms_at_10th = percentile(&attach_ms[5..15], 50.0);
    let attach_ms_at_last = percentile(&attach_ms[attach_ms.len() - 10..], 50.0);
    Ok(Side {
        system: name,
        steps,
        attach_ms_at_10th,
        attach_ms_at_last,
        attach_growth: attach_ms_at_last / attach_ms_at_10th,
        churn_detach_ms: (!detach.is_empty()).then(|| Ms::of(&detach)),
        churn_attach_ms: (!reattach.is_empty()).then(|| Ms::of(&reattach)),
        ping_during,
        ping_after,
        idle_softirq_pct: softirq_share(&cpu0, &cpu1),
        idle_daemon_cpu_pct,
        rss_base_kb,
        rss_end_kb,
        rss_per_container_kb: rss_base_kb
            .zip(rss_end_kb)
            .map(|(a, b)| b.saturating_sub(a) as f64 / f64::from(n)),
        status_ms,
        inspect_ms,
        attach_ms,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`th percentile (nearest rank) of `v`; 0 when empty.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Pings `to` from `ns` until one reply comes (at most 10 s).
fn wait_ping(ns: &str, to: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        check_stop()?;
        let r = in_ns(ns, &["ping", "-c", "1", "-W", "1", to]);
        if r.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return r
                .map(|_| ())
                .context("the first two containers do not reach each other");
        }
    }
}

/// Round trip times and counts from iputils ping's output; a lost ping counts as 1 s.
fn parse_ping(out: &str) -> Ping {
    let mut rtts: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    let counted = out.lines().find_map(|l| {
        let (sent, rest) = l.split_once(" packets transmitted, ")?;
        let received = rest.split_whitespace().next()?;
        Some((sent.trim().parse().ok()?, received.parse().ok()?))
    });
    let (sent, received) = counted.unwrap_or((rtts.len() as u64, rtts.len() as u64));
    let lost = sent.saturating_sub(received);
    rtts.extend((0..lost).map(|_| 1000.0));
    Ping {
        sent,
        received,
        p50_ms: percentile(&rtts, 50.0),
        p99_ms: percentile(&rtts, 99.0),
        max_ms: percentile(&rtts, 100.0),
    }
}

/// The `cpu` line of /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal.
fn cpu_times() -> Result<[u64; 8]> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let mut t = [0u64; 8];
    for (slot, v) in t.iter_mut().zip(line.split_whitespace().skip(1)) {
        *slot = v.parse().context("/proc/stat")?;
    }
    Ok(t)
}

/// Percent of all CPU time between two readings that went to softirq.
fn softirq_share(a: &[u64; 8], b: &[u64; 8]) -> f64 {
    let total: u64 = b.iter().zip(a).map(|(x, y)| x.saturating_sub(*y)).sum();
    let soft = b[6].saturating_sub(a[6]);
    if total == 0 {
        0.0
    } else {
        soft as f64 * 100.0 / total as f64
    }
}

/// Percent of all CPU time between two readings that was not idle.
fn busy_share(a: &[u64; 8], b: &[u64; 8]) -> f64 {
    let total: u64 = b.iter().zip(a).map(|(x, y)| x.saturating_sub(*y)).sum();
    let idle = b[3].saturating_sub(a[3]) + b[4].saturating_sub(a[4]);
    if total == 0 {
        0.0
    } else {
        100.0 - idle as f64 * 100.0 / total as f64
    }
}

/// Waits (at most 60 s) until the machine is mostly idle: the kernel tears namespaces down in
/// the background, which would be charged to the next side.
fn wait_quiet() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let a = cpu_times()?;
        sleep_checked(1.0)?;
        if busy_share(&a, &cpu_times()?) < 10.0 {
            break;
        }
    }
    Ok(())
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of `pid` in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn targets(v: &Side) -> Vec<Target> {
    let mut t = vec![
        ("attach at the last / at the 10th", v.attach_growth, 1.2),
        ("attach ms at the last", v.attach_ms_at_last, 50.0),
        ("ping p99 ms during", v.ping_during.p99_ms, 5.0),
        ("ping p99 ms after", v.ping_after.p99_ms, 5.0),
        ("idle softirq %", v.idle_softirq_pct, 1.0),
    ];
    if let Some(kb) = v.rss_per_container_kb {
        t.push(("daemon RSS KB per container", kb, 200.0));
    }
    t.into_iter()
        .map(|(what, value, limit)| Target {
            what,
            value,
            limit,
            met: value <= limit,
        })
        .collect()
}

fn ratios(sides: &[Side]) -> Vec<Ratio> {
    let [v, b] = sides else {
        return Vec::new();
    };
    [
        (
            "attach ms at the 10th",
            v.attach_ms_at_10th,
            b.attach_ms_at_10th,
        ),
        (
            "attach ms at the last",
            v.attach_ms_at_last,
            b.attach_ms_at_last,
        ),
        (
            "ping p99 during",
            v.ping_during.p99_ms,
            b.ping_during.p99_ms,
        ),
        ("ping p99 after", v.ping_after.p99_ms, b.ping_after.p99_ms),
    ]
    .into_iter()
    .filter(|(_, _, peer)| *peer > 0.0)
    .map(|(what, ours, peer)| Ratio {
        what,
        ratio: ours / peer,
    })
    .collect()
}

fn print_table(r: &Report) {
    let m = &r.machine;
    println!(
        "vswitch bench scale — {} containers, churn {} — {} ({} CPUs), kernel {}, {}",
        r.containers, r.churn, m.cpu, m.cpus, m.kernel, m.date
    );
    for s in &r.sides {
        println!();
        println!("{}:", s.system);
        println!(
            "  {:<12} {:>22} {:>12} {:>10} {:>9}",
            "containers", "attach ms med/p90/max", "netns add", "RSS MB", "softirq"
        );
        for st in &s.steps {
            println!(
                "  {:<12} {:>22} {:>12} {:>10} {:>8.1}%",
                format!("{}–{}", st.first, st.last),
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    st.attach_ms.median, st.attach_ms.p90, st.attach_ms.max
                ),
                format!("{:.1}", st.netns_ms.median),
                st.rss_kb
                    .map_or("-".into(), |kb| format!("{:.1}", kb as f64 / 1024.0)),
                st.softirq_pct
            );
        }
        println!(
            "  attach at the 10th {:.1} ms, at the last {:.1} ms ({:.2}×)",
            s.attach_ms_at_10th, s.attach_ms_at_last, s.attach_growth
        );
        if let (Some(d), Some(a)) = (s.churn_detach_ms, s.churn_attach_ms) {
            println!(
                "  churn: detach {:.1} ms, re-attach {:.1} ms (median)",
                d.median, a.median
            );
        }
        for (when, p) in [("during", &s.ping_during), ("after", &s.ping_after)] {
            println!(
                "  ping {when}: {}/{} replies, p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms",
                p.received, p.sent, p.p50_ms, p.p99_ms, p.max_ms
            );
        }
        print!("  idle: softirq {:.2}%", s.idle_softirq_pct);
        if let Some(c) = s.idle_daemon_cpu_pct {
            print!(", daemon CPU {c:.1}% of one CPU");
        }
        println!();
        if let (Some(a), Some(b), Some(per)) = (s.rss_base_kb, s.rss_end_kb, s.rss_per_container_kb)
        {
            println!(
                "  daemon RSS {:.1} MB → {:.1} MB: {per:.1} KB per container",
                a as f64 / 1024.0,
                b as f64 / 1024.0
            );
        }
        if let (Some(st), Some(ins)) = (s.status_ms, s.inspect_ms) {
            println!("  with all attached: status {st:.1} ms, network inspect {ins:.1} ms");
        }
    }
    println!();
    println!("targets (vswitch):");
    for t in &r.targets {
        println!(
            "  {:<34} {:>9.2} (≤ {}) {}",
            t.what,
            t.value,
            t.limit,
            if t.met { "met" } else { "MISSED" }
        );
    }
    if !r.ratios.is_empty() {
        println!("vswitch / linux-bridge:");
        for x in &r.ratios {
            println!("  {:<34} {:>9.2}×", x.what, x.ratio);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_output_with_losses() {
        let out = "PING 172.17.0.2 (172.17.0.2) 56(84) bytes of data.\n\
                   64 bytes from 172.17.0.2: icmp_seq=1 ttl=64 time=0.050 ms\n\
                   64 bytes from 172.17.0.2: icmp_seq=3 ttl=64 time=2.50 ms\n\n\
                   --- 172.17.0.2 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 20ms\n";
        let p = parse_ping(out);
        assert_eq!((p.sent, p.received), (3, 2));
        assert_eq!(p.p50_ms, 2.5);
        assert_eq!(p.max_ms, 1000.0, "a lost ping counts as 1 s");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn softirq_share_of_the_delta() {
        let a = [0, 0, 0, 0, 0, 0, 0, 0];
        let b = [10, 0, 10, 70, 0, 0, 10, 0];
        assert_eq!(softirq_share(&a, &b), 10.0);
        assert_eq!(busy_share(&a, &b), 30.0);
    }

    #[test]
    fn bridge_side_addresses_follow_ipam() {
        assert_eq!(container_ip(0), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(container_ip(300), Ipv4Addr::new(172, 17, 1, 46));
    }
}
