//! The rootless lab, shared by the rootless end-to-end test and `vswitch-bench rootless`: a
//! network namespace that stands in for "the host" (loopback, and a dead-end link: a veth pair
//! `de0`/`de1` with nothing behind it, 192.0.2.1/24 on `de0`), commands run in it as a plain
//! user (`setpriv`, with the user's own XDG directories and home), rootless containers
//! (`unshare --user --map-root-user --net` processes the user owns) and commands in them
//! (`nsenter`), processes tracked and killed on drop.
//!
//! Everything it makes goes on drop, even when the caller panics: its processes, its
//! containers (and anything else whose command line holds `HOST-`), the namespace and the
//! directory `$TMPDIR/HOST-rootless`. Needs root; the caller checks ([`crate::lab::skip`],
//! [`user_exists`]).
//!
//! The methods return `io::Result` (errors carry the failing command and its output), so that a
//! driver can report them and a test can unwrap them.

use crate::lab::{run, try_ok, wait_until};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The stand-in host's address on its dead-end link.
pub const HOST_ADDR: &str = "192.0.2.1";
/// The dead-end link's end in the stand-in host.
pub const DEAD_END: &str = "de0";
/// The host's loopback as a rootless container sees it through a `host_loopback` mapping (and
/// slirp4netns's default).
pub const HOST_LOOPBACK: &str = "10.0.2.2";

/// Whether `user` exists (`id USER`).
pub fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `topology` (the daemon's embedded rootless topology, which ends with its `[uplink]` table)
/// with [`HOST_LOOPBACK`] mapped to the host's loopback; tables may follow.
///
/// # Panics
/// If `topology`'s last table is not `[uplink]`.
pub fn with_host_loopback(topology: &str) -> String {
    let last = topology
        .lines()
        .rfind(|l| l.trim_start().starts_with('['))
        .unwrap_or_default();
    assert_eq!(
        last.trim(),
        "[uplink]",
        "the topology must end with [uplink]"
    );
    format!(
        "{}\nhost_loopback = \"{HOST_LOOPBACK}\"\n",
        topology.trim_end()
    )
}

/// The stand-in host, the user's processes in it and their files; all removed on drop.
#[derive(Debug)]
pub struct RootlessHost {
    host: String,
    user: String,
    dir: PathBuf,
    procs: Vec<Child>,
    containers: Vec<u32>,
}

impl RootlessHost {
    /// The stand-in host namespace `host` (one of that name left by a killed run is removed
    /// first), with `lo` up and the dead-end link, and the directory `$TMPDIR/HOST-rootless`
    /// (made afresh, `run/` and `state/` in it) owned by `user`.
    ///
    /// # Errors
    /// When a step fails (what was made is removed again).
    pub fn new(host: &str, user: &str) -> io::Result<RootlessHost> {
        let _ = Command::new("ip")
            .args(["netns", "del", host])
            .stderr(Stdio::null())
            .status();
        let dir = std::env::temp_dir().join(format!("{host}-rootless"));
        let _ = std::fs::remove_dir_all(&dir);
        let lab = RootlessHost {
            host: host.to_string(),
            user: user.to_string(),
            dir,
            procs: Vec::new(),
            containers: Vec::new(),
        };
        std::fs::create_dir_all(&lab.dir)?;
        for sub in ["run", "state"] {
            lab.user_dir(sub)?;
        }
        lab.chown(&lab.dir)?;
        try_ok(Command::new("chmod").arg("755").arg(&lab.dir))?;
        try_ok(Command::new("ip").args(["netns", "add", host]))?;
        lab.ip(&["link", "set", "lo", "up"])?;
        lab.ip(&[
            "link", "add", DEAD_END, "type", "veth", "peer", "name", "de1",
        ])?;
        lab.ip(&["addr", "add", &format!("{HOST_ADDR}/24"), "dev", DEAD_END])?;
        lab.ip(&["link", "set", DEAD_END, "up"])?;
        Ok(lab)
    }

    /// The dead-end link's far end up and a default route through it that leads nowhere (pasta
    /// needs a template interface with a default route).
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn default_route(&self) -> io::Result<()> {
        self.ip(&["link", "set", "de1", "up"])?;
        self.ip(&[
            "route",
            "add",
            "default",
            "via",
            "192.0.2.254",
            "dev",
            DEAD_END,
            "onlink",
        ])?;
        Ok(())
    }

    /// The namespace's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The user the commands run as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The lab's directory (the user's home and XDG directories are in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The rootless daemon's control socket (under the user's `XDG_RUNTIME_DIR`).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/vswitch/vswitch.sock")
    }

    fn chown(&self, path: &Path) -> io::Result<String> {
        try_ok(Command::new("chown").args(["-R", &self.user]).arg(path))
    }

    /// Makes directory `name` in the lab's directory, owned by the user.
    ///
    /// # Errors
    /// When it cannot be made or handed over.
    pub fn user_dir(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path)?;
        self.chown(&path)?;
        Ok(path)
    }

    /// Copies `from` into the lab's directory as `name`, owned by the user, who may not be able
    /// to reach the original (a checkout under /root); returns the copy's path.
    ///
    /// # Errors
    /// When it cannot be copied or handed over.
    pub fn install(&self, from: &Path, name: &str) -> io::Result<String> {
        let to = self.dir.join(name);
        std::fs::copy(from, &to)?;
        self.chown(&to)?;
        Ok(to.to_string_lossy().into_owned())
    }

    /// Runs `ip -n HOST ARGS` (as root); its stdout.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        try_ok(Command::new("ip").args(["-n", &self.host]).args(args))
    }

    /// A command run as root inside the stand-in host (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host]).args(args);
        c
    }

    /// A command run as the user inside the stand-in host, with the user's XDG directories and
    /// home in the lab's directory.
    pub fn as_user(&self, args: &[&str]) -> Command {
        let mut c = self.exec(&["setpriv", "--reuid", &self.user]);
        c.args(["--regid", &self.user, "--init-groups", "env"])
            .arg(format!(
                "XDG_RUNTIME_DIR={}",
                self.dir.join("run").display()
            ))
            .arg(format!(
                "XDG_STATE_HOME={}",
                self.dir.join("state").display()
            ))
            .arg(format!("HOME={}", self.dir.display()))
            .args(args);
        c
    }

    /// A command run as the user inside container `pid`'s namespaces.
    pub fn in_container(&self, pid: u32, args: &[&str]) -> Command {
        let pid = pid.to_string();
        let mut all = vec!["nsenter", "-t", &pid, "-U", "-n", "--preserve-credentials"];
        all.extend_from_slice(args);
        self.as_user(&all)
    }

    /// Starts `cmd` with its output discarded, killed on drop; its pid.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn spawn(&mut self, cmd: Command) -> io::Result<u32> {
        self.spawn_to(cmd, Stdio::null())
    }

    /// Starts `cmd` with its stdout discarded and its stderr to `stderr`, killed on drop; its
    /// pid.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn spawn_to(&mut self, mut cmd: Command, stderr: impl Into<Stdio>) -> io::Result<u32> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| io::Error::other(format!("cannot start {cmd:?}: {e}")))?;
        let pid = child.id();
        self.procs.push(child);
        Ok(pid)
    }

    /// Starts `bin daemon --rootless --config CONFIG` as the user, its stderr to `stderr`, and
    /// waits for its control socket.
    ///
    /// # Errors
    /// When it cannot start, or has no socket after 15 s.
    pub fn start_daemon(
        &mut self,
        bin: &str,
        config: &Path,
        stderr: impl Into<Stdio>,
    ) -> io::Result<()> {
        let config = config.to_string_lossy();
        let daemon = self.as_user(&[bin, "daemon", "--rootless", "--config", &config]);
        self.spawn_to(daemon, stderr)?;
        let sock = self.socket();
        if !wait_until(Duration::from_secs(15), || sock.exists()) {
            return Err(io::Error::other(
                "the rootless vswitch daemon did not start",
            ));
        }
        Ok(())
    }

    /// Starts a rootless container run by the user (a user + network namespace holding a
    /// `sleep` named `HOST-TAG`), killed on drop; the pid whose namespaces are the container's,
    /// once it has entered them.
    ///
    /// # Errors
    /// When it cannot start, or does not show up in its namespaces within 10 s.
    pub fn container(&mut self, tag: &str) -> io::Result<u32> {
        let marker = format!("{}-{tag}", self.host);
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
        let mut pid = None;
        let found = wait_until(Duration::from_secs(10), || {
            let out = run(Command::new("pgrep").args(["-f", &marker]));
            pid = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.trim().parse::<u32>().ok());
            pid.is_some()
        });
        let pid = match pid {
            Some(pid) if found => pid,
            _ => return Err(io::Error::other(format!("container {tag} did not start"))),
        };
        self.containers.push(pid);
        // The pid exists before unshare has entered the namespaces.
        let host_ns = std::fs::read_link("/proc/self/ns/user").ok();
        if !wait_until(Duration::from_secs(10), || {
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
            ns.is_some() && ns != host_ns
        }) {
            return Err(io::Error::other(format!(
                "container {tag} did not enter its namespaces"
            )));
        }
        // And before it has written its uid map.
        std::thread::sleep(Duration::from_millis(200));
        Ok(pid)
    }
}

impl Drop for RootlessHost {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for pid in &self.containers {
            let _ = Command::new("kill")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("pkill")
            .args(["-f", &format!("{}-", self.host)])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_loopback_goes_into_the_last_uplink_table() {
        let t = with_host_loopback("[bridge]\nmtu = 1\n\n[uplink]\nport = \"up\"\n\n");
        assert_eq!(
            t,
            "[bridge]\nmtu = 1\n\n[uplink]\nport = \"up\"\nhost_loopback = \"10.0.2.2\"\n"
        );
    }

    #[test]
    #[should_panic(expected = "must end with [uplink]")]
    fn host_loopback_refuses_a_topology_not_ending_with_uplink() {
        with_host_loopback("[uplink]\nport = \"up\"\n[[port]]\nname = \"up\"\n");
    }
}
