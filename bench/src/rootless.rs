//! `vswitch bench rootless`: TCP from a rootless container to a service on the host, through
//! vswitch's socket gateway, slirp4netns and pasta, in the same run.
//!
//! Everything happens inside a network namespace made for the run that stands in for the host
//! (loopback, and a dead-end link 192.0.2.1/24 with a default route that leads nowhere, which
//! pasta needs as its template interface); iperf3's server listens on its 127.0.0.1. Each tool
//! gets a fresh `unshare --user --map-root-user --net` container run by the plain user `--user`,
//! and reaches the host's loopback through its own mapping: vswitch's `host_loopback`
//! (10.0.2.2), slirp4netns's 10.0.2.2, pasta's gateway address (192.0.2.254). All three use
//! MTU 65520. Needs root (for the stand-in host) and the user to run the tools as. The lab is
//! [`testkit::rootless`], the one the rootless end-to-end test runs in.

use crate::harness::{Machine, progress, stopped};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::lab::try_ok;
use testkit::rootless::{RootlessHost, user_exists, with_host_loopback};

/// Arguments of `vswitch bench rootless`.
#[derive(Args)]
pub struct RootlessArgs {
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    secs: u32,
    /// Runs per tool (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// The plain user the tools run as.
    #[arg(long, default_value = "vswitch-test")]
    user: String,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    tool: &'static str,
    gbit_per_s: Vec<f64>,
    median: f64,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    secs: u32,
    rows: Vec<Row>,
    /// vswitch's median over each other tool's.
    ratios: Vec<(String, f64)>,
}

const HOST: &str = "vswbr-host";

/// iperf3 from container `pid` to `target` for `secs`; Gbit/s received.
fn iperf(lab: &RootlessHost, pid: u32, target: &str, secs: u32) -> Result<f64> {
    let secs = secs.to_string();
    let out = try_ok(&mut lab.in_container(pid, &["iperf3", "-c", target, "-t", &secs, "-J"]))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3's JSON")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .with_context(|| format!("iperf3 reported no throughput: {}", v["error"]))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the comparison.
pub fn run(args: RootlessArgs) -> Result<()> {
    for tool in [
        "slirp4netns",
        "pasta",
        "iperf3",
        "setpriv",
        "nsenter",
        "unshare",
    ] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("{tool} is missing: apt-get install slirp4netns passt iperf3 util-linux");
        }
    }
    if !user_exists(&args.user) {
        bail!(
            "no user {:?} to run the rootless tools as: useradd -m {0}, or pass --user",
            args.user
        );
    }
    // A previous run that was killed may have left its namespace behind: `new` removes it.
    let mut lab = RootlessHost::new(HOST, &args.user)
        .context("creating the stand-in host namespace (needs root)")?;
    lab.default_route()?;
    // A copy the user can run: the build may sit under a home the user cannot enter (/root).
    let me = lab.install(&crate::harness::vswitch_binary()?, "vswitch")?;
    let topo = lab.dir().join("topo.toml");
    std::fs::write(&topo, with_host_loopback(daemon::ROOTLESS_TOPOLOGY))?;
    lab.start_daemon(&me, &topo, Stdio::null())?;
    let server = lab.as_user(&["iperf3", "-s", "-B", "127.0.0.1"]);
    lab.spawn(server)?;

    // One container per tool, attached once; each run is a fresh iperf3 connection.
    let vsw = lab.container("vswitch")?;
    try_ok(&mut lab.as_user(&[
        &me,
        "network",
        "connect",
        "bridge",
        "--pid",
        &vsw.to_string(),
        "--name",
        "bench",
    ]))?;
    let slirp = lab.container("slirp")?;
    let slirp_cmd = lab.as_user(&[
        "slirp4netns",
        "--configure",
        "--mtu=65520",
        &slirp.to_string(),
        "tap0",
    ]);
    lab.spawn(slirp_cmd)?;
    let pasta = lab.container("pasta")?;
    // In the foreground, as a tracked process: pasta daemonizes by default, and a daemonized
    // pasta outlived the run (seen: still running 15 minutes later).
    lab.spawn(lab.as_user(&[
        "pasta",
        "--foreground",
        "--config-net",
        "--mtu",
        "65520",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        &pasta.to_string(),
    ]))?;
    std::thread::sleep(Duration::from_secs(1));

    let tools: [(&'static str, u32, &str); 3] = [
        ("vswitch", vsw, "10.0.2.2"),
        ("slirp4netns", slirp, "10.0.2.2"),
        ("pasta", pasta, "192.0.2.254"),
    ];
    let total = tools.len() * args.reps;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let bar = progress(total as u64);
    // Interleaved, so a change in the machine's load touches every tool alike.
    for _ in 0..args.reps {
        for (i, (name, pid, target)) in tools.iter().enumerate() {
            if stopped() {
                bail!("interrupted");
            }
            bar.set_message(*name);
            samples[i].push(iperf(&lab, *pid, target, args.secs)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let rows: Vec<Row> = tools
        .iter()
        .zip(samples)
        .map(|((tool, _, _), s)| Row {
            tool,
            median: median(&s),
            gbit_per_s: s,
        })
        .collect();
    let ours = rows[0].median;
    let ratios = rows[1..]
        .iter()
        .map(|r| {
            (
                r.tool.to_string(),
                if r.median > 0.0 { ours / r.median } else { 0.0 },
            )
        })
        .collect();
    let report = Report {
        machine: Machine::now(),
        secs: args.secs,
        rows,
        ratios,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "TCP, rootless container -> host loopback, MTU 65520, {} s x {} runs (median):",
            report.secs, args.reps
        );
        for r in &report.rows {
            println!(
                "  {:<12} {:>6.2} Gbit/s  {:?}",
                r.tool, r.median, r.gbit_per_s
            );
        }
        for (tool, ratio) in &report.ratios {
            println!("  vswitch / {tool}: {ratio:.2}x");
        }
    }
    Ok(())
}
