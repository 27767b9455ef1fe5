//! `vswitch bench rootless`: TCP from a rootless container to a service on the host, through
//! vswitch's socket gateway, slirp4netns and pasta, in the same run.
//!
//! Everything happens inside a network namespace made for the run that stands in for the host
//! (loopback, and a dead-end link 192.0.2.1/24 with a default route that leads nowhere, which
//! pasta needs as its template interface); iperf3's server listens on its 127.0.0.1. Each tool
//! gets a fresh `unshare --user --map-root-user --net` container run by the plain user `--user`,
//! and reaches the host's loopback through its own mapping: vswitch's `host_loopback`
//! (10.0.2.2), slirp4netns's 10.0.2.2, pasta's gateway address (192.0.2.254). All three use
//! MTU 65520. Needs root (for the stand-in host) and the user to run the tools as.

use crate::harness::{Machine, progress, stopped};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The stand-in host and what runs in it; removed on drop.
struct Lab {
    user: String,
    dir: PathBuf,
    procs: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = Command::new("pkill").args(["-f", "vswbr-ctr"]).status();
        let _ = Command::new("ip").args(["netns", "del", HOST]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    fn as_user(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", HOST, "setpriv", "--reuid", &self.user])
            .args(["--regid", &self.user, "--init-groups", "env"])
            .arg(format!(
                "XDG_RUNTIME_DIR={}",
                self.dir.join("run").display()
            ))
            .arg(format!(
                "XDG_STATE_HOME={}",
                self.dir.join("state").display()
            ))
            .args(args);
        c
    }

    fn spawn(&mut self, mut cmd: Command) -> Result<()> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a process in the stand-in host")?;
        self.procs.push(child);
        Ok(())
    }

    /// A fresh rootless container; returns its pid.
    fn container(&mut self, tag: &str) -> Result<u32> {
        let marker = format!("vswbr-ctr-{tag}");
        let cmd = self.as_user(&[
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "bash",
            "-c",
            &format!("exec -a {marker} sleep 3600"),
        ]);
        self.spawn(cmd)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("pgrep").args(["-f", &marker]).output()?;
            if let Some(pid) = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.trim().parse().ok())
            {
                std::thread::sleep(Duration::from_millis(200));
                return Ok(pid);
            }
            if Instant::now() > deadline {
                bail!("the container {tag} did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// iperf3 from the container to `target` for `secs`; Gbit/s received.
    fn iperf(&self, pid: u32, target: &str, secs: u32) -> Result<f64> {
        let pid = pid.to_string();
        let secs = secs.to_string();
        let out = sh(&mut self.as_user(&[
            "nsenter",
            "-t",
            &pid,
            "-U",
            "-n",
            "--preserve-credentials",
            "iperf3",
            "-c",
            target,
            "-t",
            &secs,
            "-J",
        ]))?;
        let v: serde_json::Value = serde_json::from_str(&out).context("iperf3's JSON")?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .with_context(|| format!("iperf3 reported no throughput: {}", v["error"]))
    }
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
    if sh(Command::new("id").args(["-u", &args.user])).is_err() {
        bail!(
            "no user {:?} to run the rootless tools as: useradd -m {0}, or pass --user",
            args.user
        );
    }
    // A previous run that was killed may have left its namespace behind.
    let _ = Command::new("ip")
        .args(["netns", "del", HOST])
        .stderr(Stdio::null())
        .status();
    let dir = std::env::temp_dir().join("vswbr-state");
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["run", "state"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    // A copy the user can run: the build may sit under a home the user cannot enter (/root).
    let me = dir.join("vswitch");
    std::fs::copy(crate::harness::vswitch_binary()?, &me)?;
    let me = me.to_string_lossy().into_owned();
    sh(Command::new("chown").args(["-R", &args.user]).arg(&dir))?;
    sh(Command::new("chmod").arg("755").arg(&dir))?;
    sh(Command::new("ip").args(["netns", "add", HOST]))
        .context("creating the stand-in host namespace (needs root)")?;
    let mut lab = Lab {
        user: args.user.clone(),
        dir: dir.clone(),
        procs: Vec::new(),
    };
    let ip = |a: &[&str]| sh(Command::new("ip").args(["-n", HOST]).args(a));
    ip(&["link", "set", "lo", "up"])?;
    ip(&["link", "add", "de0", "type", "veth", "peer", "name", "de1"])?;
    ip(&["addr", "add", "192.0.2.1/24", "dev", "de0"])?;
    ip(&["link", "set", "de0", "up"])?;
    ip(&["link", "set", "de1", "up"])?;
    ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.0.2.254",
        "dev",
        "de0",
        "onlink",
    ])?;
    let topo = dir.join("topo.toml");
    std::fs::write(
        &topo,
        "[bridge]\nmtu = 65520\n[[port]]\nname = \"uplink\"\nkind = \"socket\"\n[uplink]\n\
         port = \"uplink\"\naddress = \"10.0.2.100\"\nsubnet = \"10.0.2.0/24\"\n\
         next_hop = \"10.0.2.2\"\nhost_loopback = \"10.0.2.2\"\nmtu = 65520\n",
    )?;
    let topo = topo.to_string_lossy().into_owned();
    let daemon = lab.as_user(&[&me, "daemon", "--rootless", "--config", &topo]);
    lab.spawn(daemon)?;
    let sock = dir.join("run/vswitch/vswitch.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if Instant::now() > deadline {
            bail!("the rootless vswitch daemon did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let server = lab.as_user(&["iperf3", "-s", "-B", "127.0.0.1"]);
    lab.spawn(server)?;

    // One container per tool, attached once; each run is a fresh iperf3 connection.
    let vsw = lab.container("vswitch")?;
    sh(&mut lab.as_user(&[
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
    sh(&mut lab.as_user(&[
        "pasta",
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
            samples[i].push(lab.iperf(*pid, target, args.secs)?);
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
