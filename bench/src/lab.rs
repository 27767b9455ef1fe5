//! The namespaces, processes and files of one bench run (`veth`, `scale`), the vswitch daemon
//! it starts, and the `ip` helpers it builds them with; `Drop` removes them all, also after an
//! error or Ctrl-C. Every namespace is named `vsb<pid>-*`, so a run that was SIGKILLed is swept
//! by the next one ([`sweep_stale`]).

use crate::harness::{check_stop, stopped};
use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The namespaces, processes and files of one run; `Drop` removes them all.
pub(crate) struct Lab {
    pub(crate) prefix: String,
    pub(crate) namespaces: Vec<String>,
    pub(crate) procs: Vec<Child>,
    pub(crate) daemon: Option<Child>,
    /// More vswitch daemons (the overlay lab's hosts, [`Lab::start_host_daemon`]), each with a
    /// state dir of its own. They stop before `procs` die, so that they leave their cluster
    /// while its etcd (one of `procs`) still answers.
    pub(crate) daemons: Vec<Child>,
    pub(crate) dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        stop_daemons(std::mem::take(&mut self.daemons));
        for p in &mut self.procs {
            if matches!(p.try_wait(), Ok(None)) {
                signal_group(p, "-KILL");
            }
            let _ = p.kill();
            let _ = p.wait();
        }
        stop_daemons(self.daemon.take().into_iter().collect());
        let newest_first: Vec<&str> = self.namespaces.iter().rev().map(String::as_str).collect();
        delete_netns_all(&newest_first);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    pub(crate) fn new() -> Result<Lab> {
        let prefix = prefix();
        let dir = std::env::temp_dir().join(format!("{prefix}-state"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        Ok(Lab {
            prefix,
            namespaces: Vec::new(),
            procs: Vec::new(),
            daemon: None,
            daemons: Vec::new(),
            dir,
        })
    }

    pub(crate) fn netns(&mut self, tag: &str) -> Result<String> {
        let name = format!("{}-{tag}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A veth pair `a_if` in `a` and `b_if` in `b`, both up.
    pub(crate) fn veth(a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        ip(&[
            "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
        ])?;
        ip(&["-n", a, "link", "set", a_if, "up"])?;
        ip(&["-n", b, "link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Starts `cmd` in `ns` in its own process group (the terminal's Ctrl-C reaches only the
    /// bench, which then stops it), stdout to `out` if given.
    pub(crate) fn spawn(&mut self, ns: &str, cmd: &[&str], out: Option<&str>) -> Result<usize> {
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
    pub(crate) fn wait(&mut self, i: usize, secs: f64) -> Result<bool> {
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
    pub(crate) fn signal(&mut self, i: usize, sig: &str) {
        signal_group(&self.procs[i], sig);
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("vswitch.sock")
    }

    pub(crate) fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Starts the vswitch daemon in `ns` with topology `cfg` and the lab's state dir, and waits
    /// (at most 15 s) for its control socket.
    pub(crate) fn start_daemon(&mut self, ns: &str, cfg: &std::path::Path) -> Result<()> {
        let dir = self.dir.clone();
        let d = self.daemon.insert(spawn_daemon(ns, cfg, &dir, &[])?);
        wait_for_socket(d, &dir)
    }

    /// Starts one more vswitch daemon (a host of the overlay lab) in `ns` with topology `cfg`,
    /// state dir `dir` (its socket `dir/vswitch.sock`, its log `dir/daemon.log`) and the extra
    /// arguments `args`, and waits (at most 15 s) for its control socket.
    pub(crate) fn start_host_daemon(
        &mut self,
        ns: &str,
        cfg: &std::path::Path,
        dir: &std::path::Path,
        args: &[&str],
    ) -> Result<()> {
        let child = spawn_daemon(ns, cfg, dir, args)?;
        self.daemons.push(child);
        match self.daemons.last_mut() {
            Some(d) => wait_for_socket(d, dir),
            None => bail!("the daemon was not recorded"),
        }
    }

    /// The daemon's pid (`ip netns exec` execs it, so it is the child's).
    pub(crate) fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }
}

/// `vswitch daemon --config cfg --state-dir dir args...` in `ns`, its stderr to
/// `dir/daemon.log`, in its own process group (Ctrl-C reaches only the bench).
fn spawn_daemon(
    ns: &str,
    cfg: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
) -> Result<Child> {
    let exe = crate::harness::vswitch_binary()?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&exe)
        .arg("daemon")
        .arg("--config")
        .arg(cfg)
        .arg("--state-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the vswitch daemon")
}

/// Waits (at most 15 s) until the daemon `d` with state dir `dir` opens its control socket;
/// fails with its log if it exits first.
fn wait_for_socket(d: &mut Child, dir: &std::path::Path) -> Result<()> {
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dir.join("vswitch.sock").exists() {
        check_stop()?;
        if let Ok(Some(st)) = d.try_wait() {
            bail!("the daemon exited ({st}):\n{}", log());
        }
        if Instant::now() > deadline {
            bail!("the daemon did not open its socket in 15 s:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// SIGTERM to every daemon in `ds` at once (each removes the links it made, and leaves its
/// cluster, then exits), SIGKILL to those still running 5 s later.
fn stop_daemons(mut ds: Vec<Child>) {
    for d in &ds {
        let _ = Command::new("kill")
            .args(["-TERM", &d.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && ds.iter_mut().any(|d| !matches!(d.try_wait(), Ok(Some(_)))) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in &mut ds {
        let _ = d.kill();
        let _ = d.wait();
    }
}

/// The prefix of every namespace this run makes: `vsb<pid>`.
pub(crate) fn prefix() -> String {
    format!("vsb{}", std::process::id())
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub(crate) fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file())
}

/// Runs a command, fails with its stderr if it fails; returns stdout.
pub(crate) fn sh(cmd: &mut Command) -> Result<String> {
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

pub(crate) fn ip(args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(args))
}

pub(crate) fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// The namespaces named `vsb<pid>-*` whose process is gone (a run that was killed with
/// SIGKILL): their processes are stopped and the namespaces deleted.
pub(crate) fn sweep_stale() {
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
pub(crate) fn signal_group(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

/// Kills every process inside `ns` (a namespace this bench created), then deletes it.
pub(crate) fn delete_netns(ns: &str) {
    delete_netns_all(&[ns]);
}

/// [`delete_netns`] for many namespaces in two `ip -batch` runs, not two commands each (`bench
/// scale` makes thousands).
pub(crate) fn delete_netns_all(names: &[&str]) {
    if names.is_empty() {
        return;
    }
    let script = |verb: &str| -> String {
        names
            .iter()
            .map(|ns| format!("netns {verb} {ns}\n"))
            .collect()
    };
    if let Ok(pids) = ip_batch(&script("pids")) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = ip_batch(&script("del"));
}

/// Runs `ip -force -batch -` on `script` (one command per line; `-force` goes on past a failed
/// line); returns stdout.
pub(crate) fn ip_batch(script: &str) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run ip -batch")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
