//! The overlay rows of `bench veth` (`overlay_tcp_gbps`): TCP between two containers on two
//! "hosts" joined by VXLAN over an underlay, through vswitch's overlay networks and through the
//! kernel's own `vxlan` device and Linux bridge, in the same run.
//!
//! The vswitch side is what a cluster of vswitch hosts is: an underlay namespace `ul` with a
//! bridge (198.51.100.254, which also runs etcd), and per host a namespace `hN` with a daemon
//! started with `--cluster`, its af_packet uplink `up0` (198.51.100.1N, the host's VTEP) and
//! a second veth `mg0` with the kernel's own address 198.51.100.2N, through which the daemon
//! reaches etcd. The overlay network is created on host 1 and found by host 2 in etcd; one
//! container per host is connected to it, as `vswitch network connect` does.
//!
//! The kernel side is the same shape built from kernel parts: an underlay `xul`, per host
//! `xhN` a `vxlan` device (VNI 256, a static all-zeros flood entry to the other host) and a
//! bridge `br0` enslaving it and the container's veth, containers at 10.78.0.N/24 with the
//! overlay's MTU (1450), every link with the kernel's default offloads.
//!
//! The vswitch row needs etcd (Debian `etcd-server`, and `etcdctl` from `etcd-client` to know
//! when it is up) and a daemon that has `--cluster`; without them it is reported as skipped,
//! and the kernel row is measured alone. Addresses are TEST-NET-2 and 10.7x, only ever inside
//! the lab's namespaces.

use super::*;
use std::os::unix::process::CommandExt;

/// The test: TCP Gbit/s container → container across two hosts, over VXLAN.
pub(super) const OVERLAY: &str = "overlay_tcp_gbps";
/// The kernel's overlay: a `vxlan` device and a Linux bridge on each host.
const VXLAN: &str = "linux-vxlan+bridge";
/// The vswitch underlay's bridge address: etcd listens here.
const UNDERLAY_IP: &str = "198.51.100.254";
const ETCD_PORT: u16 = 2379;
/// The overlay network vswitch's containers join, and its subnet.
const NET: &str = "ov";
const SUBNET: &str = "10.77.0.0/24";
/// The kernel side's VNI (any: its two hosts only talk to each other).
const KERNEL_VNI: &str = "256";
/// The MTU of an overlay's container links: 1500 less VXLAN's 50 bytes of headers.
const OVERLAY_MTU: &str = "1450";
/// Seconds a host's records outlive it in etcd (`--cluster-ttl`), short as in the cluster
/// tests: nothing here waits on a dead host, and a daemon that did not leave cleanly stops
/// being a peer soon.
const CLUSTER_TTL: &str = "5";
/// How long a host may take to learn a network or an endpoint created on the other host.
const CLUSTER_WAIT_SECS: f64 = 15.0;

/// The address of host `n`'s uplink: its VTEP (vswitch) or its underlay link (kernel).
fn vtep(n: u8) -> String {
    format!("198.51.100.{}", 10 + n)
}

/// One side of the overlay comparison: iperf3 runs from `src` to `dst_ip` (in `dst`).
pub(super) struct Pair {
    pub(super) src: String,
    pub(super) dst: String,
    pub(super) dst_ip: String,
    /// The control sockets of the hosts' daemons (vswitch's side; none for the kernel's).
    sockets: Vec<PathBuf>,
}

/// Drops so far per "host port": (receive ring full, the packet loop behind; dropped in the
/// pipeline, any reason).
pub(super) type Drops = std::collections::BTreeMap<String, (u64, u64)>;

impl Pair {
    /// The hosts' drops so far, per port of each daemon. None for the kernel, or when a daemon
    /// does not answer.
    pub(super) fn drops(&self) -> Option<Drops> {
        if self.sockets.is_empty() {
            return None;
        }
        let mut all = Drops::new();
        for (n, socket) in self.sockets.iter().enumerate() {
            let v = control::call(socket, &Request::Stats).ok()?;
            for p in v["ports"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let name = p["name"].as_str().unwrap_or("?");
                let e = all.entry(format!("h{} {name}", n + 1)).or_default();
                e.0 += p["rx_kernel_drops"].as_u64().unwrap_or(0);
                e.1 += p["drops"]
                    .as_object()
                    .map_or(0, |d| d.values().filter_map(|n| n.as_u64()).sum::<u64>());
            }
        }
        Some(all)
    }
}

/// Which overlay rows can run, or why not: the kernel's needs only iproute2, vswitch's needs
/// etcd and a daemon with `--cluster`, so either may run without the other.
pub(super) struct Availability {
    /// `Ok(etcd's version)` or why the vswitch row is skipped.
    pub(super) vswitch: std::result::Result<String, String>,
    /// Why the kernel row is skipped, if it is.
    pub(super) kernel: std::result::Result<(), String>,
}

impl Availability {
    /// What this machine and the daemon under test allow (`--no-overlay`: nothing).
    pub(super) fn probe(no_overlay: bool) -> Availability {
        if no_overlay {
            let why = "--no-overlay".to_string();
            return Availability {
                vswitch: Err(why.clone()),
                kernel: Err(why),
            };
        }
        Availability {
            vswitch: vswitch_overlay_available(),
            kernel: kernel_overlay_available(),
        }
    }

    /// Adds the rows that can run to `plan` (vswitch's first, then the kernel's, back to back
    /// so that both see the machine alike), and the others to `skipped`.
    pub(super) fn plan(
        &self,
        plan: &mut Vec<(&'static str, String, &'static str)>,
        skipped: &mut Vec<Skipped>,
    ) {
        let sides = [
            (VSWITCH, self.vswitch.as_ref().err()),
            (VXLAN, self.kernel.as_ref().err()),
        ];
        for (system, why) in sides {
            match why {
                None => plan.push((OVERLAY, system.into(), DEFAULTS)),
                Some(why) => skipped.push(Skipped {
                    test: OVERLAY,
                    system: system.into(),
                    reason: why.clone(),
                }),
            }
        }
    }

    /// The report's `overlay` line.
    pub(super) fn describe(&self) -> String {
        match &self.vswitch {
            Ok(v) => format!("vswitch hosts in a cluster on {v}"),
            Err(why) => format!("vswitch not measured: {why}"),
        }
    }
}

/// `Ok(etcd's version)` when the vswitch overlay row can run: etcd and etcdctl are installed
/// and the daemon under test has `--cluster`; `Err(why)` otherwise.
fn vswitch_overlay_available() -> std::result::Result<String, String> {
    for (tool, pkg) in [("etcd", "etcd-server"), ("etcdctl", "etcd-client")] {
        if !have(tool) {
            return Err(format!("{tool} not installed (apt-get install {pkg})"));
        }
    }
    let exe = crate::harness::vswitch_binary().map_err(|e| format!("{e:#}"))?;
    let help = Command::new(&exe)
        .args(["daemon", "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} daemon --help: {e}", exe.display()))?;
    if !String::from_utf8_lossy(&help.stdout).contains("--cluster") {
        return Err(format!(
            "{} daemon has no --cluster (a vswitch without overlay networks)",
            exe.display()
        ));
    }
    let version = Command::new("etcd")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("etcd --version: {e}"))?;
    Ok(String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("etcd (unknown version)")
        .trim()
        .to_string())
}

/// `Err(why)` when the kernel overlay row cannot run (no `bridge` tool for the flood entry).
fn kernel_overlay_available() -> std::result::Result<(), String> {
    if have("bridge") {
        Ok(())
    } else {
        Err("bridge (iproute2) not installed".into())
    }
}

impl Lab {
    /// A veth from `ns` (end `inner`) to the bridge `br0` of the underlay `ul` (end `outer`).
    fn wire(ul: &str, ns: &str, inner: &str, outer: &str) -> Result<()> {
        Lab::veth(ns, inner, ul, outer)?;
        ip(&["-n", ul, "link", "set", outer, "master", "br0"]).map(|_| ())
    }

    /// A namespace `tag` with a bridge `br0` (address `addr`, if any), up.
    fn bridge_ns(&mut self, tag: &str, addr: Option<&str>) -> Result<String> {
        let ns = self.netns(tag)?;
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        if let Some(a) = addr {
            ip(&["-n", &ns, "addr", "add", a, "dev", "br0"])?;
        }
        ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        Ok(ns)
    }

    /// The vswitch overlay side: underlay `ul` with etcd, hosts `h1`, `h2` with a daemon each
    /// in the cluster, the network `ov` made on host 1, containers `c1` (host 1) and `c2`
    /// (host 2) connected to it, reaching each other.
    pub(super) fn build_overlay_vswitch(&mut self) -> Result<Pair> {
        let ul = self.bridge_ns("ul", Some(&format!("{UNDERLAY_IP}/24")))?;
        self.start_etcd(&ul)?;
        let etcd = format!("etcd://{UNDERLAY_IP}:{ETCD_PORT}");
        let mut sockets = Vec::new();
        for n in 1..=2u8 {
            let host = self.netns(&format!("h{n}"))?;
            // The underlay's ends live in `ul`: short names are unique there.
            Lab::wire(&ul, &host, "up0", &format!("uh{n}"))?;
            Lab::wire(&ul, &host, "mg0", &format!("mh{n}"))?;
            let mg = format!("198.51.100.{}/24", 20 + n);
            ip(&["-n", &host, "addr", "add", &mg, "dev", "mg0"])?;
            let dir = self.dir.join(format!("h{n}"));
            std::fs::create_dir_all(&dir)?;
            let cfg = dir.join("topo.toml");
            std::fs::write(
                &cfg,
                format!(
                    r#"
[[port]]
name = "up0"
kind = "af_packet"

[uplink]
port = "up0"
address = "{}"
subnet = "198.51.100.0/24"
"#,
                    vtep(n)
                ),
            )?;
            let name = format!("h{n}");
            self.start_host_daemon(
                &host,
                &cfg,
                &dir,
                &[
                    "--cluster",
                    &etcd,
                    "--cluster-host",
                    &name,
                    "--cluster-ttl",
                    CLUSTER_TTL,
                ],
            )
            .with_context(|| format!("starting host {n}'s daemon"))?;
            sockets.push((dir.join("vswitch.sock"), dir.join("daemon.log")));
        }
        let [(s1, l1), (s2, l2)] = &sockets[..] else {
            bail!("two hosts expected");
        };
        let log = |l: &PathBuf| std::fs::read_to_string(l).unwrap_or_default();
        // Through the CLI, as a user creates it: it fills the request's defaults (icc,
        // anti-spoofing) the way every create does.
        let exe = crate::harness::vswitch_binary()?;
        sh(Command::new(&exe)
            .args(["network", "create", "--driver", "overlay", NET])
            .args(["--subnet", SUBNET, "--socket"])
            .arg(s1))
        .with_context(|| format!("creating the overlay network on host 1:\n{}", log(l1)))?;
        wait_network(s2, CLUSTER_WAIT_SECS)
            .with_context(|| format!("host 2 did not learn network {NET}:\n{}", log(l2)))?;
        let mut ips = Vec::new();
        let mut cs = Vec::new();
        for (n, (sock, l)) in [(1, (s1, l1)), (2, (s2, l2))] {
            let tag = format!("c{n}");
            let ns = self.netns(&tag)?;
            let req = Request::Connect {
                network: NET.into(),
                netns: Some(format!("/run/netns/{ns}")),
                name: Some(tag),
                ifname: Some("eth0".into()),
                ip: None,
                ip6: None,
                mac: None,
                peer_in_host: false,
            };
            let v = control::call(sock, &req)
                .with_context(|| format!("connecting {ns} on host {n}:\n{}", log(l)))?;
            let addr = v["ip"]
                .as_str()
                .with_context(|| format!("no address for {ns} in {v}"))?
                .to_string();
            ips.push(addr);
            cs.push(ns);
        }
        let (Some(c1), Some(c2), Some(ip1), Some(ip2)) =
            (cs.first(), cs.get(1), ips.first(), ips.get(1))
        else {
            bail!("two containers expected");
        };
        // Each host learns the other's endpoint from etcd: bounded, both ways.
        ping_within(c1, ip2, CLUSTER_WAIT_SECS)
            .with_context(|| format!("host 1:\n{}\nhost 2:\n{}", log(l1), log(l2)))?;
        ping_within(c2, ip1, CLUSTER_WAIT_SECS)
            .with_context(|| format!("host 1:\n{}\nhost 2:\n{}", log(l1), log(l2)))?;
        Ok(Pair {
            src: c1.clone(),
            dst: c2.clone(),
            dst_ip: ip2.clone(),
            sockets: vec![s1.clone(), s2.clone()],
        })
    }

    /// Starts etcd in `ns` on the underlay address, its data dir and log in the lab's temp dir
    /// (one of the lab's processes: its `Drop` kills it, after the daemons left, and removes
    /// the dir), and waits (at most 15 s) until it answers.
    fn start_etcd(&mut self, ns: &str) -> Result<()> {
        let data = self.dir.join("etcd");
        let log_path = self.dir.join("etcd.log");
        let client = format!("http://{UNDERLAY_IP}:{ETCD_PORT}");
        // The peer port only on the namespace's loopback: a one-member cluster.
        let peer = "http://127.0.0.1:2380";
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "etcd", "--name", "ul", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", peer])
            .args(["--initial-advertise-peer-urls", peer])
            .args(["--initial-cluster", &format!("ul={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start etcd")?;
        self.procs.push(child);
        let i = self.procs.len() - 1;
        let endpoints = format!("--endpoints={client}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            check_stop()?;
            let health = sh(Command::new("ip")
                .args(["netns", "exec", ns, "etcdctl", &endpoints])
                .args(["--dial-timeout=1s", "endpoint", "health"])
                .env("ETCDCTL_API", "3"));
            if health.is_ok() {
                return Ok(());
            }
            let tail = || {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(5)..].join("\n")
            };
            if let Some(st) = self.procs[i].try_wait()? {
                bail!("etcd exited ({st}):\n{}", tail());
            }
            if Instant::now() > deadline {
                bail!("etcd did not answer in 15 s:\n{}", tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The kernel overlay side: underlay `xul`, hosts `xh1`, `xh2` with `vx0` and `br0`,
    /// containers `xc1` (10.78.0.1) and `xc2` (10.78.0.2), reaching each other.
    pub(super) fn build_overlay_kernel(&mut self) -> Result<Pair> {
        let ul = self.bridge_ns("xul", None)?;
        let mut cs = Vec::new();
        for n in 1..=2u8 {
            let host = self.bridge_ns(&format!("xh{n}"), None)?;
            Lab::wire(&ul, &host, "eth0", &format!("xu{n}"))?;
            let local = vtep(n);
            let remote = vtep(3 - n);
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{local}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&[
                "-n",
                &host,
                "link",
                "add",
                "vx0",
                "type",
                "vxlan",
                "id",
                KERNEL_VNI,
                "dstport",
                "4789",
                "local",
                &local,
                "dev",
                "eth0",
                "nolearning",
            ])?;
            // Unknown and broadcast frames go to the other host; the bridge learns the rest.
            in_ns(
                &host,
                &[
                    "bridge",
                    "fdb",
                    "append",
                    "00:00:00:00:00:00",
                    "dev",
                    "vx0",
                    "dst",
                    &remote,
                ],
            )?;
            ip(&["-n", &host, "link", "set", "vx0", "master", "br0", "up"])?;
            let c = self.netns(&format!("xc{n}"))?;
            Lab::veth(&host, "vc", &c, "eth0")?;
            ip(&[
                "-n",
                &host,
                "link",
                "set",
                "vc",
                "mtu",
                OVERLAY_MTU,
                "master",
                "br0",
            ])?;
            ip(&["-n", &c, "link", "set", "eth0", "mtu", OVERLAY_MTU])?;
            let addr = format!("10.78.0.{n}/24");
            ip(&["-n", &c, "addr", "add", &addr, "dev", "eth0"])?;
            cs.push(c);
        }
        let (Some(c1), Some(c2)) = (cs.first(), cs.get(1)) else {
            bail!("two containers expected");
        };
        // A fresh bridge port listens and learns first: bounded, as the vswitch side's.
        ping_within(c1, "10.78.0.2", 10.0)?;
        ping_within(c2, "10.78.0.1", 10.0)?;
        Ok(Pair {
            src: c1.clone(),
            dst: c2.clone(),
            dst_ip: "10.78.0.2".into(),
            sockets: Vec::new(),
        })
    }
}

/// What an overlay row saw besides its figure: iperf3's retransmissions per repetition (a
/// path that drops shows here first) and, for vswitch, where its hosts dropped over the row
/// (`before` and `after`: [`Pair::drops`]), port by port.
pub(super) fn note(
    system: &str,
    retransmits: &[Option<u64>],
    before: Option<Drops>,
    after: Option<Drops>,
) -> String {
    let each: Vec<String> = retransmits
        .iter()
        .map(|r| r.map_or("?".to_string(), |n| n.to_string()))
        .collect();
    let drops = match (before, after) {
        (Some(b), Some(a)) => {
            let (mut ring, mut pipe, mut at) = (0, 0, Vec::new());
            for (port, (r, p)) in &a {
                let (r0, p0) = b.get(port).copied().unwrap_or_default();
                let (r, p) = (r.saturating_sub(r0), p.saturating_sub(p0));
                (ring, pipe) = (ring + r, pipe + p);
                if r + p > 0 {
                    at.push(format!("{port} {}", r + p));
                }
            }
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" ({})", at.join(", "))
            };
            format!(
                "; its two hosts dropped {ring} at full receive rings and {pipe} in their \
                 pipelines{at}"
            )
        }
        _ => String::new(),
    };
    format!(
        "{OVERLAY} {system}: iperf3 retransmitted {} segments (per repetition){drops}",
        each.join(", ")
    )
}

/// Waits (at most `secs`) until the daemon behind `socket` shows network `ov` as an overlay.
fn wait_network(socket: &std::path::Path, secs: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let req = Request::NetworkInspect {
        names: vec![NET.into()],
    };
    loop {
        check_stop()?;
        let got = control::call(socket, &req);
        let driver = got.as_ref().ok().map(|v| v[0]["Driver"].clone());
        if driver.as_ref().is_some_and(|d| d == "overlay") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not in {secs} s (last answer: {got:?})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_counts_drops_over_the_row_port_by_port() {
        let d = |v: &[(&str, u64, u64)]| -> Drops {
            v.iter()
                .map(|(p, r, q)| (p.to_string(), (*r, *q)))
                .collect()
        };
        let before = d(&[("h1 up0", 10, 0), ("h2 up0", 5, 1), ("h2 c2", 0, 0)]);
        let after = d(&[("h1 up0", 10, 0), ("h2 up0", 105, 3), ("h2 c2", 0, 0)]);
        let n = note(VSWITCH, &[Some(7), None], Some(before), Some(after));
        assert!(n.contains("retransmitted 7, ? segments"), "{n}");
        assert!(n.contains("dropped 100 at full receive rings and 2"), "{n}");
        assert!(n.ends_with("(h2 up0 102)"), "{n}");
        let k = note(VXLAN, &[Some(3)], None, None);
        assert!(
            k.ends_with("retransmitted 3 segments (per repetition)"),
            "{k}"
        );
    }
}
