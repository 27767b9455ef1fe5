//! Network-namespace labs for the end-to-end tests and benches: unique names (so concurrent
//! test binaries never collide), namespaces and links removed in `Drop` even when a test panics,
//! the skip rules (not root, or `VSWITCH_SKIP_E2E=1`), the one lock that runs labs one at a time,
//! and `ip`/command helpers that fail with the command's output. Traffic stays inside the
//! namespaces a lab makes; tests only shell out here, the product never does.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Labs run one at a time: on two cores, parallel labs would starve each other's packet loops
/// and turn timeouts into flakes.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the lab lock (a test that panicked while holding it does not poison the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the effective uid is 0 (read from /proc: no libc call needed in a test).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// True (and says why) when an end-to-end test must skip: `VSWITCH_SKIP_E2E=1`, or not root.
pub fn skip() -> bool {
    if std::env::var("VSWITCH_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!("skipping end-to-end test: VSWITCH_SKIP_E2E=1");
        return true;
    }
    if !is_root() {
        eprintln!(
            "skipping end-to-end test: needs root (network namespaces, veth); CI runs it as root"
        );
        return true;
    }
    false
}

/// True (and says why) when `test` cannot run: it needs root for namespaces and links, TUN and
/// the `ip` command.
pub fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: needs root (network namespaces, links, AF_PACKET)");
        return true;
    }
    if !Path::new("/dev/net/tun").exists() || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping {test}: needs /dev/net/tun and the `ip` command");
        return true;
    }
    false
}

/// A name unique to this process and call, at most 15 bytes (an interface name):
/// `vs<pid%100000><tag><n>`.
///
/// # Panics
/// If `tag` is longer than 4 bytes.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    assert!(tag.len() <= 4, "tag too long for an interface name");
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("vs{}{}{}", std::process::id() % 100_000, tag, n);
    assert!(name.len() <= 15, "{name} too long");
    name
}

/// A prefix unique to this process and call for a lab's names: `<stem><pid%100000>x<n>`.
pub fn prefix(stem: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{stem}{}x{n}", std::process::id() % 100_000)
}

/// The median of `samples` (the upper one of an even count); zero for none.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Calls `f` until it succeeds, every 200 ms for up to `timeout`; its last error when it never
/// did (for a wait that wants to show why it failed, unlike [`wait_until`]).
///
/// # Errors
/// `f`'s last error.
pub fn retry<T>(timeout: Duration, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Runs `cmd`, panicking only when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`; its stdout, or an error with its output when it fails or cannot start.
///
/// # Errors
/// When `cmd` cannot start or exits unsuccessfully.
pub fn try_ok(cmd: &mut Command) -> io::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::other(format!("cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd`, panicking with its output when it fails; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    try_ok(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `f` every 50 ms until it holds (true) or `timeout` has passed (false).
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Runs `ip ARGS`, panicking with its output when it fails; returns stdout.
pub fn ip(args: &[&str]) -> String {
    ok(Command::new("ip").args(args))
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Adds namespace `name` as it is.
    pub fn named(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        Netns {
            path: PathBuf::from(format!("/var/run/netns/{name}")),
            name: name.to_string(),
        }
    }

    /// A namespace with a [`unique`] name and IPv6 off inside, so that the kernel's router
    /// solicitations and MLD reports do not mix with test traffic.
    pub fn new(tag: &str) -> Netns {
        let ns = Netns::named(&unique(tag));
        for knob in ["all", "default"] {
            let _ = ns.exec(&[
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv6.conf.{knob}.disable_ipv6=1"),
            ]);
        }
        ns
    }

    /// Sets `lo` up.
    pub fn lo_up(&self) {
        ip(&["-n", &self.name, "link", "set", "lo", "up"]);
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its path (`/var/run/netns/NAME`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `cmd` inside (`ip netns exec`).
    pub fn exec(&self, cmd: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A link in the root namespace, deleted on drop (deleting a veth end deletes the pair).
#[derive(Debug)]
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .output();
    }
}

/// A veth pair with one end in each of two fresh namespaces, both ends UP.
#[derive(Debug)]
pub struct VethPair {
    /// The first namespace.
    pub a: Netns,
    /// The second namespace.
    pub b: Netns,
    /// The end in `a`.
    pub a_if: String,
    /// The end in `b`.
    pub b_if: String,
}

impl VethPair {
    /// Both ends with `mtu`.
    pub fn new(mtu: u16) -> VethPair {
        let a = Netns::new("a");
        let b = Netns::new("b");
        let a_if = unique("va");
        let b_if = unique("vb");
        let mtu = mtu.to_string();
        ip(&[
            "link",
            "add",
            &a_if,
            "mtu",
            &mtu,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &b_if,
            "mtu",
            &mtu,
            "netns",
            b.name(),
        ]);
        ip(&["-n", a.name(), "link", "set", &a_if, "up"]);
        ip(&["-n", b.name(), "link", "set", &b_if, "up"]);
        VethPair { a, b, a_if, b_if }
    }
}

/// Reads a counter of `ifname` in namespace `ns` from `ip -s -j link` (sysfs would show the
/// mount's namespace, not the namespace of the thread).
///
/// # Panics
/// If `ip` fails or has no such counter.
pub fn link_stat(ns: &Netns, ifname: &str, dir: &str, key: &str) -> u64 {
    let out = ip(&["-n", ns.name(), "-s", "-j", "link", "show", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0]["stats64"][dir][key].as_u64().expect("counter")
}

/// The sha256 of a file, by `sha256sum`.
pub fn sha256(path: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(path));
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The path of workspace binary `name` (`target/<profile>/NAME`, beside the calling test's own
/// `deps/` directory), built with `cargo build --bin NAME` first when it is not there yet: a
/// test of one crate may drive another crate's binary (the CLI, a runtime plugin).
///
/// # Panics
/// When it is missing and cannot be built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} has no target directory", exe.display()));
    let bin = profile_dir.join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = run(Command::new(cargo)
            .current_dir(root)
            .args(["build", "--quiet", "--bin", name]));
        assert!(
            out.status.success() && bin.exists(),
            "cannot build {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}
