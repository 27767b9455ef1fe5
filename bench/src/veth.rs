//! `vswitch bench veth`: vswitch and the kernel measured in one run on one namespace lab.
//!
//! ```text
//!  vswitch side                               kernel side
//!  a (172.17.0.2) ─┐                          ba (172.17.0.2) ─┐
//!                  ├─ sw: vswitch daemon ─ inet                ├─ br: br0 172.17.0.1, forwarding,
//!  b (172.17.0.3) ─┘   uplink 203.0.113.2    203.0.113.1      bb (172.17.0.3) ─┘  MASQUERADE ─ binet
//! ```
//!
//! Containers are network namespaces. vswitch's are attached with the daemon's `connect`
//! request (veth pairs, offloads off at both ends, as `vswitch network connect` does); the
//! kernel's are veth pairs into `br0` in the `br` namespace, which also routes to its own
//! "internet" namespace with an iptables (or nft) MASQUERADE rule — in that namespace only.
//! The kernel side is measured twice: with the same offloads off as vswitch's links
//! (apples to apples) and with the kernel's defaults (the reference a user gets).
//!
//! Figures: 64-byte UDP frames per second received by the far container (trafgen, one process,
//! counted from the receiver's rx_packets), TCP Gbit/s with iperf3 container → container, and
//! TCP Gbit/s container → "internet" through NAT. Every namespace is named `vsb<pid>-*`; the
//! lab's `Drop` kills what it started and deletes them, also after an error or Ctrl-C.

use crate::harness::{Machine, OutputArgs, Stat, check_stop, progress, sleep_checked, stopped};
use anyhow::{Context, Result, bail};
use clap::Args;
use control::Request;
use serde::Serialize;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    #[command(flatten)]
    out: OutputArgs,
}

/// Arguments of the hidden `vswitch bench blast`: UDP datagrams as fast as a socket sends them.
#[derive(Args)]
pub struct BlastArgs {
    /// Destination address.
    #[arg(long)]
    dst: Ipv4Addr,
    /// Destination port.
    #[arg(long, default_value_t = 9)]
    port: u16,
    /// Seconds to send for.
    #[arg(long)]
    seconds: f64,
}

/// The fallback generator: 18-byte UDP payloads (64-byte frames with FCS) in a loop.
pub fn blast(a: BlastArgs) -> Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect((a.dst, a.port))?;
    let payload = [0x41u8; 18];
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let mut sent = 0u64;
    while !stopped() {
        for _ in 0..256 {
            // ENOBUFS and ECONNREFUSED (from ICMP port unreachable) are expected under load.
            if sock.send(&payload).is_ok() {
                sent += 1;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    println!("{sent}");
    Ok(())
}

/// One measured figure.
#[derive(Debug, Serialize)]
pub struct Row {
    /// `udp_64B_pps`, `tcp_gbps` or `nat_tcp_gbps`.
    pub test: &'static str,
    /// `vswitch`, `linux-bridge`, or `linux-router+iptables` / `+nft`.
    pub system: String,
    /// Offloads on the lab's veths: `off` (as vswitch's links) or `kernel defaults`.
    pub offloads: &'static str,
    /// Packets per second (udp) or Gbit/s (tcp).
    pub value: Stat,
    /// `pps` or `Gbit/s`.
    pub unit: &'static str,
    /// For udp: what the sender put on its link, per second (median).
    pub offered: Option<f64>,
}

/// vswitch's figure over a kernel figure.
#[derive(Debug, Serialize)]
pub struct Ratio {
    /// The test.
    pub test: &'static str,
    /// The kernel row it is compared with (`system`, offloads).
    pub against: String,
    /// vswitch median / kernel median.
    pub ratio: f64,
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
    /// The kernel NAT peer's tool.
    pub nat_tool: String,
    /// Every figure.
    pub rows: Vec<Row>,
    /// vswitch against each kernel row.
    pub ratios: Vec<Ratio>,
}

const OFF: &str = "off";
const DEFAULTS: &str = "kernel defaults";
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
    let generator = if trafgen {
        "trafgen -P 1 (netsniff-ng), 60-byte frames + FCS".to_string()
    } else {
        "vswitch bench blast: one UDP socket send loop (trafgen not installed)".to_string()
    };
    sweep_stale();
    let machine = Machine::now();
    let mut lab = Lab::new()?;
    let result = measure_all(&mut lab, &args, trafgen, nat_tool);
    let prefix = lab.prefix.clone();
    drop(lab);
    let rows = result?;
    let ratios = ratios(&rows);
    let report = Report {
        bench: "veth",
        machine,
        prefix,
        seconds: args.seconds,
        reps: args.reps,
        generator,
        nat_tool: nat_tool.to_string(),
        rows,
        ratios,
    };
    if let Some(path) = &args.out.plot {
        crate::plot::veth(&report, path)?;
    }
    if args.out.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
        if let Some(path) = &args.out.plot {
            println!("plot: {}", path.display());
        }
    }
    Ok(())
}

fn ratios(rows: &[Row]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for v in rows.iter().filter(|r| r.system == "vswitch") {
        for k in rows
            .iter()
            .filter(|r| r.test == v.test && r.system != "vswitch")
        {
            if k.value.median > 0.0 {
                out.push(Ratio {
                    test: v.test,
                    against: format!("{} (offloads {})", k.system, k.offloads),
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
    println!("UDP generator: {}", r.generator);
    println!(
        "{:<13} {:<24} {:<16} {:>28}  {:>12}",
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
            .find(|x| x.test == row.test && x.system == "vswitch")
            .filter(|_| row.system != "vswitch" && row.value.median > 0.0)
            .map_or(String::new(), |x| {
                format!("{:.2}×", x.value.median / row.value.median)
            });
        let offered = row.offered.map_or(String::new(), |o| {
            format!("  (offered {:.0} kpps)", o / 1e3)
        });
        println!(
            "{:<13} {:<24} {:<16} {:>21} {:<6}  {:>12}{offered}",
            row.test,
            row.system,
            row.offloads,
            row.value.map(v).show(if row.unit == "pps" { 0 } else { 2 }),
            unit,
            vs
        );
    }
    println!("ratios are vswitch's median over the kernel row's median (> 1: vswitch is faster)");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file())
}

/// Runs a command, fails with its stderr if it fails; returns stdout.
fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(args))
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// The namespaces named `vsb<pid>-*` whose process is gone (a run that was killed with
/// SIGKILL): their processes are stopped and the namespaces deleted.
fn sweep_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("vsb")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_netns(name);
        }
    }
}

/// Sends `sig` to the process group led by `child` (spawned with `process_group(0)`).
fn signal_group(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

/// Kills every process inside `ns` (a namespace this bench created), then deletes it.
fn delete_netns(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// The namespaces, processes and files of one run; `Drop` removes them all.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    procs: Vec<Child>,
    daemon: Option<Child>,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if matches!(p.try_wait(), Ok(None)) {
                signal_group(p, "-KILL");
            }
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(mut d) = self.daemon.take() {
            // SIGTERM: the daemon removes the links it made, then exits.
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !matches!(d.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.namespaces.iter().rev() {
            delete_netns(ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn new() -> Result<Lab> {
        let prefix = format!("vsb{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{prefix}-state"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        Ok(Lab {
            prefix,
            namespaces: Vec::new(),
            procs: Vec::new(),
            daemon: None,
            dir,
        })
    }

    fn netns(&mut self, tag: &str) -> Result<String> {
        let name = format!("{}-{tag}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A veth pair `a_if` in `a` and `b_if` in `b`, both up.
    fn veth(a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        ip(&[
            "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
        ])?;
        ip(&["-n", a, "link", "set", a_if, "up"])?;
        ip(&["-n", b, "link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Starts `cmd` in `ns` in its own process group (the terminal's Ctrl-C reaches only the
    /// bench, which then stops it), stdout to `out` if given.
    fn spawn(&mut self, ns: &str, cmd: &[&str], out: Option<&str>) -> Result<usize> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        match out {
            Some(f) => c.stdout(std::fs::File::create(self.dir.join(f))?),
            None => c.stdout(Stdio::null()),
        };
        let child = c.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
        self.procs.push(child);
        Ok(self.procs.len() - 1)
    }

    /// Waits for process `i` to exit, at most `secs`; kills it past that.
    fn wait(&mut self, i: usize, secs: f64) -> Result<bool> {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        loop {
            if let Some(st) = self.procs[i].try_wait()? {
                return Ok(st.success());
            }
            if stopped() || Instant::now() >= deadline {
                signal_group(&self.procs[i], "-KILL");
                let _ = self.procs[i].kill();
                let _ = self.procs[i].wait();
                check_stop()?;
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the process group of process `i` (it leads its own group, see
    /// [`Lab::spawn`]): trafgen forks its sender, which must stop too.
    fn signal(&mut self, i: usize, sig: &str) {
        signal_group(&self.procs[i], sig);
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("vswitch.sock")
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The vswitch side: daemon in `sw`, uplink to `inet`, containers `a` and `b`.
    fn build_vswitch(&mut self) -> Result<(String, String, String)> {
        let sw = self.netns("sw")?;
        let inet = self.netns("inet")?;
        Lab::veth(&sw, "up0", &inet, "eth0")?;
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{INET_IP}/24"),
            "dev",
            "eth0",
        ])?;
        // The switch reads whole, checksummed frames: no offloads on the peer that sends to it.
        offloads(&inet, "eth0", false)?;
        let cfg = self.dir.join("topo.toml");
        std::fs::write(
            &cfg,
            r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"

[[port]]
name = "up0"
kind = "af_packet"

[uplink]
port = "up0"
address = "203.0.113.2"
subnet = "203.0.113.0/24"
"#,
        )?;
        let exe = crate::harness::vswitch_binary()?;
        let log = std::fs::File::create(self.dir.join("daemon.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &sw])
            .arg(&exe)
            .arg("daemon")
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start the vswitch daemon")?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.socket().exists() {
            check_stop()?;
            if let Some(d) = self.daemon.as_mut()
                && let Ok(Some(st)) = d.try_wait()
            {
                bail!("the daemon exited ({st}):\n{}", self.daemon_log());
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not open its socket in 15 s:\n{}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut names = Vec::new();
        for (tag, addr) in [("a", "172.17.0.2"), ("b", "172.17.0.3")] {
            let ns = self.netns(tag)?;
            let req = Request::Connect {
                network: "bridge".into(),
                netns: format!("/run/netns/{ns}"),
                name: Some(tag.into()),
                ifname: Some("eth0".into()),
                ip: Some(addr.parse()?),
            };
            control::call(&self.socket(), &req)
                .with_context(|| format!("connecting {ns}:\n{}", self.daemon_log()))?;
            names.push(ns);
        }
        let b = names.pop().unwrap_or_default();
        let a = names.pop().unwrap_or_default();
        Ok((a, b, inet))
    }

    /// The kernel side: `br` with br0 (172.17.0.1/16) and containers `ba`, `bb` on it, routing
    /// with MASQUERADE to `binet`. Returns (ba, bb, binet, br).
    fn build_kernel(&mut self, nat_tool: &str) -> Result<(String, String, String, String)> {
        let br = self.netns("br")?;
        let binet = self.netns("binet")?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "addr", "add", "172.17.0.1/16", "dev", "br0"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let mut cs = Vec::new();
        for (tag, addr) in [("ba", "172.17.0.2"), ("bb", "172.17.0.3")] {
            let ns = self.netns(tag)?;
            let port = format!("v{tag}");
            Lab::veth(&br, &port, &ns, "eth0")?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/16"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "route", "add", "default", "via", "172.17.0.1"])?;
            cs.push(ns);
        }
        Lab::veth(&br, "up0", &binet, "eth0")?;
        ip(&["-n", &br, "addr", "add", "203.0.113.2/24", "dev", "up0"])?;
        ip(&[
            "-n",
            &binet,
            "addr",
            "add",
            &format!("{INET_IP}/24"),
            "dev",
            "eth0",
        ])?;
        in_ns(&br, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // The NAT rule lives in the `br` namespace only, never in the root namespace.
        if nat_tool == "iptables" {
            in_ns(
                &br,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    "172.17.0.0/16",
                    "-o",
                    "up0",
                    "-j",
                    "MASQUERADE",
                ],
            )?;
        } else {
            in_ns(
                &br,
                &[
                    "nft",
                    "add table ip vsbnat; add chain ip vsbnat post { type nat hook postrouting priority 100; }; add rule ip vsbnat post ip saddr 172.17.0.0/16 oifname \"up0\" masquerade",
                ],
            )?;
        }
        let bb = cs.pop().unwrap_or_default();
        let ba = cs.pop().unwrap_or_default();
        Ok((ba, bb, binet, br))
    }
}

/// Turns the offloads vswitch turns off (tx checksum, sg, tso, gso, gro) off, or back on.
fn offloads(ns: &str, dev: &str, on: bool) -> Result<()> {
    let v = if on { "on" } else { "off" };
    // Order matters when turning off (dependants first); ethtool applies them together.
    in_ns(
        ns,
        &[
            "ethtool", "-K", dev, "gro", v, "gso", v, "tso", v, "sg", v, "tx", v,
        ],
    )
    .map(|_| ())
}

/// (rx_packets, tx_packets) of `dev` in `ns`.
fn counters(ns: &str, dev: &str) -> Result<(u64, u64)> {
    let out = ip(&["-n", ns, "-s", "-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let s = &v[0]["stats64"];
    let get = |dir: &str| s[dir]["packets"].as_u64().context("no packet counters");
    Ok((get("rx")?, get("tx")?))
}

fn mac(ns: &str, dev: &str) -> Result<String> {
    let out = ip(&["-n", ns, "-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .context("no MAC address")
}

/// A ping that warms FDBs and ARP caches and proves the path works.
fn ping(ns: &str, dst: &str) -> Result<()> {
    if !have("ping") {
        return Ok(());
    }
    in_ns(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", dst])
        .map(|_| ())
        .with_context(|| format!("no path from {ns} to {dst}"))
}

/// Side: the sender, receiver and their addresses.
struct Pair<'a> {
    src: &'a str,
    dst: &'a str,
    src_ip: &'a str,
    dst_ip: &'a str,
}

/// 64-byte UDP frames per second received by `p.dst` (and offered by `p.src`).
fn udp_rate(lab: &mut Lab, p: &Pair, secs: f64, trafgen: bool) -> Result<(f64, f64)> {
    let warm = 0.5;
    let exe = std::env::current_exe()?;
    let i = if trafgen {
        let conf = lab.dir.join(format!("{}.trafgen", p.src));
        let da = mac(p.dst, "eth0")?;
        let sa = mac(p.src, "eth0")?;
        // 14 + 20 + 8 + 18 = 60 bytes, 64 on the wire with the FCS.
        std::fs::write(
            &conf,
            format!(
                "{{ eth(da={da}, sa={sa}), ipv4(saddr={}, daddr={}, ttl=64), udp(sp=4000, dp=9), fill(0x41, 18) }}\n",
                p.src_ip, p.dst_ip
            ),
        )?;
        let conf = conf.to_string_lossy().into_owned();
        // -Q: leave IRQ affinity alone (socket memory limits cannot be changed from a netns).
        lab.spawn(
            p.src,
            &["trafgen", "-o", "eth0", "-c", &conf, "-P", "1", "-Q", "-C"],
            None,
        )?
    } else {
        let exe = exe.to_string_lossy().into_owned();
        let total = format!("{}", secs + warm + 2.0);
        lab.spawn(
            p.src,
            &[&exe, "blast", "--dst", p.dst_ip, "--seconds", &total],
            None,
        )?
    };
    let result = (|| {
        sleep_checked(warm)?;
        if let Some(st) = lab.procs[i].try_wait()? {
            bail!("the packet generator exited early ({st})");
        }
        let (rx0, _) = counters(p.dst, "eth0")?;
        let (_, tx0) = counters(p.src, "eth0")?;
        let t0 = Instant::now();
        sleep_checked(secs)?;
        let (rx1, _) = counters(p.dst, "eth0")?;
        let (_, tx1) = counters(p.src, "eth0")?;
        let dt = t0.elapsed().as_secs_f64();
        Ok(((rx1 - rx0) as f64 / dt, (tx1 - tx0) as f64 / dt))
    })();
    lab.signal(i, "-INT");
    let _ = lab.wait(i, 3.0);
    // Let the queues drain before the next figure.
    std::thread::sleep(Duration::from_millis(300));
    result
}

static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(5201);

/// TCP Gbit/s from `src` to `dst_ip` (an iperf3 server started in `dst`).
fn tcp_rate(lab: &mut Lab, src: &str, dst: &str, dst_ip: &str, secs: u32) -> Result<f64> {
    let port = PORT
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    let server = lab.spawn(dst, &["iperf3", "-s", "-1", "-p", &port], None)?;
    let out = format!("iperf3-{port}.json");
    let t = secs.to_string();
    let mut result = Err(anyhow::anyhow!("iperf3 did not run"));
    // The server needs a moment to listen: retry a refused connection a few times.
    for _ in 0..5 {
        sleep_checked(0.2)?;
        let client = lab.spawn(
            src,
            &[
                "iperf3",
                "-c",
                dst_ip,
                "-p",
                &port,
                "-t",
                &t,
                "-i",
                "0",
                "-J",
                "--connect-timeout",
                "2000",
            ],
            Some(&out),
        )?;
        let ok = lab.wait(client, f64::from(secs) + 15.0)?;
        let text = std::fs::read_to_string(lab.dir.join(&out)).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            result = Ok(bps / 1e9);
            break;
        }
        let err = v["error"].as_str().unwrap_or("no output").to_string();
        result = Err(anyhow::anyhow!(
            "iperf3 {src} → {dst_ip}: {err} (exit ok: {ok})"
        ));
        if !err.contains("refused") {
            break;
        }
    }
    let _ = lab.wait(server, 2.0);
    result
}

fn measure_all(lab: &mut Lab, args: &VethArgs, trafgen: bool, nat_tool: &str) -> Result<Vec<Row>> {
    let reps = args.reps;
    let secs = args.seconds;
    let tcp_secs = secs.ceil().max(1.0) as u32;
    // 3 UDP rows, 6 TCP rows.
    let bar = progress(u64::from(9 * reps) + 1);
    bar.set_message("building the namespaces");
    let built = (|| {
        let v = lab.build_vswitch()?;
        let k = lab.build_kernel(nat_tool)?;
        Ok::<_, anyhow::Error>((v, k))
    })();
    let ((a, b, inet), (ba, bb, binet, br)) = match built {
        Ok(x) => x,
        Err(e) => {
            bar.finish_and_clear();
            return Err(e);
        }
    };
    bar.inc(1);
    let nat_system = format!("linux-router+{nat_tool}");
    let mut rows = Vec::new();
    let mut run = |lab: &mut Lab| -> Result<()> {
        ping(&a, "172.17.0.3")?;
        ping(&b, "172.17.0.2")?;
        ping(&a, INET_IP)?;
        // Kernel with its default offloads first, then with vswitch's (off).
        ping(&ba, "172.17.0.3")?;
        ping(&bb, "172.17.0.2")?;
        ping(&ba, INET_IP)?;
        let vs = Pair {
            src: &a,
            dst: &b,
            src_ip: "172.17.0.2",
            dst_ip: "172.17.0.3",
        };
        let kp = Pair {
            src: &ba,
            dst: &bb,
            src_ip: "172.17.0.2",
            dst_ip: "172.17.0.3",
        };
        let kernel_links = [
            (ba.as_str(), "eth0"),
            (bb.as_str(), "eth0"),
            (br.as_str(), "vba"),
            (br.as_str(), "vbb"),
            (br.as_str(), "up0"),
            (binet.as_str(), "eth0"),
        ];
        // (test, system, offloads) in run order.
        let plan: [(&'static str, &str, &'static str); 9] = [
            ("udp_64B_pps", "vswitch", OFF),
            ("tcp_gbps", "vswitch", OFF),
            ("nat_tcp_gbps", "vswitch", OFF),
            ("udp_64B_pps", "linux-bridge", DEFAULTS),
            ("tcp_gbps", "linux-bridge", DEFAULTS),
            ("nat_tcp_gbps", &nat_system, DEFAULTS),
            ("udp_64B_pps", "linux-bridge", OFF),
            ("tcp_gbps", "linux-bridge", OFF),
            ("nat_tcp_gbps", &nat_system, OFF),
        ];
        let mut kernel_off = false;
        for (test, system, off) in plan {
            let kernel = system != "vswitch";
            if kernel && off == OFF && !kernel_off {
                for (ns, dev) in kernel_links {
                    offloads(ns, dev, false)?;
                }
                kernel_off = true;
            }
            bar.set_message(format!("{test}: {system}, offloads {off}"));
            let mut values = Vec::new();
            let mut offered = Vec::new();
            for _ in 0..reps {
                check_stop()?;
                match test {
                    "udp_64B_pps" => {
                        let (rx, tx) =
                            udp_rate(lab, if kernel { &kp } else { &vs }, secs, trafgen)?;
                        values.push(rx);
                        offered.push(tx);
                    }
                    "tcp_gbps" => {
                        let (src, dst) = if kernel { (&ba, &bb) } else { (&a, &b) };
                        values.push(tcp_rate(lab, src, dst, "172.17.0.3", tcp_secs)?);
                    }
                    _ => {
                        let (src, dst) = if kernel { (&ba, &binet) } else { (&a, &inet) };
                        values.push(tcp_rate(lab, src, dst, INET_IP, tcp_secs)?);
                    }
                }
                bar.inc(1);
            }
            rows.push(Row {
                test,
                system: system.to_string(),
                offloads: off,
                value: Stat::of(&values),
                unit: if test == "udp_64B_pps" {
                    "pps"
                } else {
                    "Gbit/s"
                },
                offered: (!offered.is_empty()).then(|| Stat::of(&offered).median),
            });
        }
        Ok(())
    };
    let r = run(lab);
    bar.finish_and_clear();
    r?;
    // Print order: vswitch, kernel with the same offloads, kernel defaults; per test.
    let order = |r: &Row| {
        let t = ["udp_64B_pps", "tcp_gbps", "nat_tcp_gbps"]
            .iter()
            .position(|x| *x == r.test)
            .unwrap_or(9);
        let s = if r.system == "vswitch" {
            0
        } else if r.offloads == OFF {
            1
        } else {
            2
        };
        t * 3 + s
    };
    rows.sort_by_key(order);
    Ok(rows)
}
