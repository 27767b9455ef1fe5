//! The rootful runtime lab, shared by the Docker and Podman/CNI end-to-end tests: a network
//! namespace that stands in for "the host" (where the vswitch daemon and the container runtime
//! run), an "internet" namespace behind the host's uplink (`up0` in the host, `eth0` =
//! [`INET_ADDR`] in the internet), a directory for every state the lab's daemons keep, and a
//! busybox-static image built from the local busybox (no registry is reachable).
//!
//! Commands enter the host with `nsenter --net=/run/netns/HOST`: `ip netns exec` also remounts
//! /sys, which leaves dockerd without its cgroup mounts ("Devices cgroup isn't mounted").
//!
//! Everything it makes goes on drop, even when the caller panics: its processes (TERM, then
//! KILL after 10 s), anything else whose command line holds the lab's prefix, both namespaces
//! and the directory.

use crate::lab::{try_ok, wait_until};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The internet namespace's address (the far end of the host's uplink).
pub const INET_ADDR: &str = "203.0.113.1";
/// The vswitch uplink's address (what masqueraded connections come from).
pub const UPLINK_ADDR: &str = "203.0.113.2";
/// The host's uplink interface.
pub const UPLINK_IF: &str = "up0";

/// A vswitch topology for the lab: the uplink on [`UPLINK_IF`] with [`UPLINK_ADDR`], the
/// default `bridge` network; `extra` is appended (more tables).
pub fn topology(extra: &str) -> String {
    format!(
        r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"

[[port]]
name = "{UPLINK_IF}"
kind = "af_packet"

[uplink]
port = "{UPLINK_IF}"
address = "{UPLINK_ADDR}"
subnet = "203.0.113.0/24"
{extra}
"#
    )
}

/// The name under which the daemon attaches the host itself to every non-internal network
/// (its host port); not a container a runtime made.
pub const HOST_PORT_NAME: &str = "host.vswitch.internal";

/// The stand-in host and its internet; all removed on drop.
#[derive(Debug)]
pub struct RuntimeHost {
    prefix: String,
    host: String,
    inet: String,
    dir: PathBuf,
    procs: Vec<Child>,
}

impl RuntimeHost {
    /// Namespaces `PREFIX-host` and `PREFIX-inet` (ones of those names left by a killed run are
    /// removed first), linked by the uplink veth, `lo` up in both, and the directory
    /// `$TMPDIR/PREFIX` made afresh. Keep `prefix` short and unique
    /// ([`crate::lab::prefix`]): it marks every process the lab kills.
    ///
    /// # Errors
    /// When a step fails (what was made is removed on drop).
    pub fn new(prefix: &str) -> io::Result<RuntimeHost> {
        let lab = RuntimeHost {
            prefix: prefix.to_string(),
            host: format!("{prefix}-host"),
            inet: format!("{prefix}-inet"),
            dir: std::env::temp_dir().join(prefix),
            procs: Vec::new(),
        };
        for ns in [&lab.host, &lab.inet] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir)?;
        for ns in [&lab.host, &lab.inet] {
            try_ok(Command::new("ip").args(["netns", "add", ns]))?;
            try_ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        }
        try_ok(Command::new("ip").args([
            "link", "add", UPLINK_IF, "netns", &lab.host, "type", "veth", "peer", "name", "eth0",
            "netns", &lab.inet,
        ]))?;
        let inet_addr = format!("{INET_ADDR}/24");
        try_ok(
            Command::new("ip").args(["-n", &lab.inet, "addr", "add", &inet_addr, "dev", "eth0"]),
        )?;
        try_ok(Command::new("ip").args(["-n", &lab.inet, "link", "set", "eth0", "up"]))?;
        try_ok(Command::new("ip").args(["-n", &lab.host, "link", "set", UPLINK_IF, "up"]))?;
        Ok(lab)
    }

    /// The lab's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The host namespace's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The internet namespace's name.
    pub fn inet(&self) -> &str {
        &self.inet
    }

    /// The lab's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The vswitch daemon's control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("vswitch/vswitch.sock")
    }

    /// A command run inside the host (`nsenter --net=`).
    pub fn in_host(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.host)).args(args);
        c
    }

    /// A command run inside the internet namespace.
    pub fn in_inet(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.inet)).args(args);
        c
    }

    /// Starts `cmd` with stdout and stderr appended to `DIR/LOG`, killed on drop; its pid.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn spawn(&mut self, mut cmd: Command, log: &str) -> io::Result<u32> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| io::Error::other(format!("cannot start {cmd:?}: {e}")))?;
        let pid = child.id();
        self.procs.push(child);
        Ok(pid)
    }

    /// What `DIR/LOG` holds so far (for failure messages).
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }

    /// Starts `bin daemon` in the host with [`topology`]`(extra)` and state in `DIR/vswitch`,
    /// logging to `vswitch.log`, and waits for its control socket; its pid.
    ///
    /// # Errors
    /// When it cannot start, or has no socket after 15 s.
    pub fn start_vswitch(&mut self, bin: &Path, extra: &str) -> io::Result<u32> {
        let state = self.dir.join("vswitch");
        std::fs::create_dir_all(&state)?;
        let config = self.dir.join("topology.toml");
        std::fs::write(&config, topology(extra))?;
        let mut cmd = self.in_host(&[]);
        cmd.arg(bin)
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state);
        // nsenter execs the daemon: the pid is the daemon's.
        let pid = self.spawn(cmd, "vswitch.log")?;
        let sock = self.socket();
        if !wait_until(Duration::from_secs(15), || sock.exists()) {
            return Err(io::Error::other(format!(
                "the vswitch daemon did not start:\n{}",
                self.log("vswitch.log")
            )));
        }
        Ok(pid)
    }

    /// A lab whose vswitch daemon (`bin`) runs with [`topology`]`("")` and has a network
    /// `network` on `subnet` besides the default bridge: what most runtime tests start from.
    ///
    /// # Panics
    /// When a step fails (with the daemon's log).
    pub fn with_network(prefix: &str, bin: &Path, network: &str, subnet: &str) -> RuntimeHost {
        let mut lab = RuntimeHost::new(prefix).expect("the runtime lab");
        lab.start_vswitch(bin, "").expect("the vswitch daemon");
        lab.vswitch(bin, &["network", "create", network, "--subnet", subnet])
            .expect("vswitch network create");
        lab
    }

    /// Stops process `pid` (one [`RuntimeHost::spawn`] started) with SIGTERM and waits at
    /// most 15 s for it to exit; whether it did.
    pub fn terminate(&mut self, pid: u32) -> bool {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let Some(child) = self.procs.iter_mut().find(|c| c.id() == pid) else {
            return false;
        };
        wait_until(Duration::from_secs(15), || {
            matches!(child.try_wait(), Ok(Some(_)))
        })
    }

    /// Runs the vswitch CLI `bin ARGS --socket SOCKET` (from anywhere: the socket is a file);
    /// its stdout.
    ///
    /// # Errors
    /// When it fails (with its output and the daemon's log).
    pub fn vswitch(&self, bin: &Path, args: &[&str]) -> io::Result<String> {
        try_ok(
            Command::new(bin)
                .args(args)
                .arg("--socket")
                .arg(self.socket()),
        )
        .map_err(|e| io::Error::other(format!("{e}\ndaemon log:\n{}", self.log("vswitch.log"))))
    }

    /// The containers the daemon has attached (its `status`), the host ports left out.
    ///
    /// # Panics
    /// When the daemon does not answer.
    pub fn containers(&self) -> Vec<serde_json::Value> {
        let status = control::call(&self.socket(), &control::Request::Status)
            .unwrap_or_else(|e| panic!("vswitch status: {e}\n{}", self.log("vswitch.log")));
        status["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] != HOST_PORT_NAME)
            .cloned()
            .collect()
    }

    /// A tarball of a busybox-static root file system (`/bin/busybox` and its applets as hard links,
    /// `/etc/passwd`, `/etc/group`, empty `/tmp`, `/proc`, `/sys`, `/dev`, `/www`), made once
    /// under the lab's directory; its path. Import it as an image (`docker import`, `podman
    /// import`).
    ///
    /// # Errors
    /// When busybox is not installed (package busybox-static) or a step fails.
    pub fn busybox_rootfs(&self) -> io::Result<PathBuf> {
        let tar = self.dir.join("busybox-rootfs.tar");
        if tar.exists() {
            return Ok(tar);
        }
        let root = self.dir.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin)?;
        for d in ["etc", "tmp", "proc", "sys", "dev", "www", "root"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        std::fs::copy("/bin/busybox", bin.join("busybox")).map_err(|e| {
            io::Error::other(format!(
                "copying /bin/busybox (package busybox-static): {e}"
            ))
        })?;
        // Hard links: `--install -s` would write absolute links to this directory's path,
        // which does not exist inside a container.
        try_ok(Command::new(bin.join("busybox")).arg("--install").arg(&bin))?;
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )?;
        std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
        try_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        )?;
        Ok(tar)
    }
}

impl Drop for RuntimeHost {
    fn drop(&mut self) {
        for p in &self.procs {
            let _ = Command::new("kill").arg(p.id().to_string()).status();
        }
        for p in &mut self.procs {
            let pid = p.id();
            let gone = wait_until(Duration::from_secs(10), || {
                matches!(p.try_wait(), Ok(Some(_)))
            });
            if !gone {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                let _ = p.wait();
            }
        }
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.prefix])
            .status();
        for ns in [&self.host, &self.inet] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        // dockerd and podman leave mounts (overlay, shm, netns) under their roots.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
