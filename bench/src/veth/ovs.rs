//! Open vSwitch's userspace datapath for `bench veth`, run privately: its own database file,
//! run directory, sockets and logs in the lab's temp dir, both daemons in the `ovs` namespace,
//! started and stopped by the lab; a system OVS is never touched.

use super::*;

/// `Ok(version)` when Open vSwitch's userspace tools are installed, `Err(why)` otherwise.
pub(super) fn ovs_available() -> std::result::Result<String, String> {
    for tool in ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"] {
        if !have(tool) {
            return Err(format!(
                "{tool} not installed (apt-get install openvswitch-switch)"
            ));
        }
    }
    if !std::path::Path::new(OVS_SCHEMA).is_file() {
        return Err(format!("{OVS_SCHEMA} missing"));
    }
    let out = Command::new("ovs-vswitchd")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ovs-vswitchd --version: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("ovs-vswitchd (unknown version)")
        .trim()
        .to_string())
}

/// A private Open vSwitch: database, sockets, pid files and logs under `dir` (the lab's temp
/// dir), both daemons inside `ns`, run as children of the lab (killed by its `Drop`).
pub(super) struct Ovs {
    pub(super) ns: String,
    pub(super) oa: String,
    pub(super) ob: String,
    pub(super) dir: PathBuf,
    /// Index of ovsdb-server in the lab's processes.
    pub(super) db: Option<usize>,
    /// Index of ovs-vswitchd in the lab's processes.
    pub(super) vswitchd: Option<usize>,
    /// "TSO enabled" lines in ovs-vswitchd's log so far.
    pub(super) tso_lines: usize,
}

impl Ovs {
    pub(super) fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// `env OVS_*DIR=dir`: nothing defaults to the system's /run/openvswitch or /etc.
    pub(super) fn env(&self) -> Vec<String> {
        let d = self.dir.to_string_lossy();
        let mut v = vec!["env".to_string()];
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            v.push(format!("{var}={d}"));
        }
        v
    }

    pub(super) fn vsctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db=unix:{}", self.path("db.sock"));
        let mut cmd: Vec<String> = self.env();
        cmd.extend(["ovs-vsctl".into(), db, "--timeout=20".into()]);
        cmd.extend(args.iter().map(|s| s.to_string()));
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        in_ns(&self.ns, &cmd)
    }

    pub(super) fn log_tail(&self, file: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Starts ovsdb-server (first time) and ovs-vswitchd with userspace TSO `tso`, and the
    /// bridge `br0` (datapath_type=netdev) with the host ends `voa`, `vob` as ports.
    pub(super) fn start(&mut self, lab: &mut Lab, tso: bool) -> Result<()> {
        let env = self.env();
        if self.db.is_none() {
            sh(Command::new("ovsdb-tool").args(["create", &self.path("conf.db"), OVS_SCHEMA]))?;
            let remote = format!("--remote=punix:{}", self.path("db.sock"));
            let unixctl = format!("--unixctl={}", self.path("ovsdb-server.ctl"));
            let pid = format!("--pidfile={}", self.path("ovsdb-server.pid"));
            let log = format!("--log-file={}", self.path("ovsdb-server.log"));
            let conf = self.path("conf.db");
            let mut cmd: Vec<&str> = env.iter().map(String::as_str).collect();
            cmd.extend([
                "ovsdb-server",
                &conf,
                &remote,
                &unixctl,
                &pid,
                &log,
                "--no-chdir",
            ]);
            let i = lab.spawn(&self.ns, &cmd, None)?;
            self.db = Some(i);
            let sock = self.dir.join("db.sock");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !sock.exists() {
                check_stop()?;
                if let Some(st) = lab.procs[i].try_wait()? {
                    bail!(
                        "ovsdb-server exited ({st}): {}",
                        self.log_tail("ovsdb-server.log")
                    );
                }
                if Instant::now() > deadline {
                    bail!("ovsdb-server did not open its socket in 10 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            self.vsctl(&["--no-wait", "init"])?;
        }
        // Read once at start-up: set before ovs-vswitchd starts.
        self.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:userspace-tso-enable={tso}"),
        ])?;
        let db = format!("unix:{}", self.path("db.sock"));
        let unixctl = format!("--unixctl={}", self.path("ovs-vswitchd.ctl"));
        let pid = format!("--pidfile={}", self.path("ovs-vswitchd.pid"));
        let log = format!("--log-file={}", self.path("ovs-vswitchd.log"));
        let mut cmd: Vec<&str> = env.iter().map(String::as_str).collect();
        cmd.extend(["ovs-vswitchd", &db, &unixctl, &pid, &log, "--no-chdir"]);
        let i = lab.spawn(&self.ns, &cmd, None)?;
        self.vswitchd = Some(i);
        // Without --no-wait, ovs-vsctl waits (at most --timeout) until ovs-vswitchd has
        // applied the change: the bridge and its ports exist when it returns.
        self.vsctl(&[
            "--may-exist",
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
            "--",
            "--may-exist",
            "add-port",
            "br0",
            "voa",
            "--",
            "--may-exist",
            "add-port",
            "br0",
            "vob",
        ])
        .with_context(|| format!("ovs-vswitchd: {}", self.log_tail("ovs-vswitchd.log")))?;
        if let Some(st) = lab.procs[i].try_wait()? {
            bail!(
                "ovs-vswitchd exited ({st}): {}",
                self.log_tail("ovs-vswitchd.log")
            );
        }
        if tso {
            // Its log is written asynchronously: give the line a moment to appear. The file
            // holds the earlier run's lines too, so count them.
            let count = || {
                std::fs::read_to_string(self.dir.join("ovs-vswitchd.log"))
                    .unwrap_or_default()
                    .matches("Userspace TCP Segmentation Offloading support enabled")
                    .count()
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while count() <= self.tso_lines {
                check_stop()?;
                if Instant::now() > deadline {
                    bail!(
                        "ovs-vswitchd did not enable userspace TSO: {}",
                        self.log_tail("ovs-vswitchd.log")
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            self.tso_lines = count();
        }
        Ok(())
    }

    /// Stops ovs-vswitchd (SIGTERM, then SIGKILL after 5 s), leaving ovsdb-server running.
    pub(super) fn stop_vswitchd(&mut self, lab: &mut Lab) {
        if let Some(i) = self.vswitchd.take() {
            lab.signal(i, "-TERM");
            let _ = lab.wait(i, 5.0);
        }
    }
}
