//! Test scaffolding for the netns tests: unique names, namespaces and links removed in `Drop`
//! even when the test fails, and the `ip` command for set-up and inspection (tests only — the
//! product code never shells out).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// True (and says why) when the tests cannot run: they need root for namespaces and links.
pub fn skip_unless_root(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid_is_root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !euid_is_root {
        eprintln!("skipping {test}: needs root (network namespaces, links, AF_PACKET)");
        return true;
    }
    if !Path::new("/dev/net/tun").exists() || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping {test}: needs /dev/net/tun and the `ip` command");
        return true;
    }
    false
}

/// A name unique to this process and call, at most 15 bytes: `vs<pid%100000><tag><n>`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    assert!(tag.len() <= 4, "tag too long for an interface name");
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("vs{}{}{}", std::process::id() % 100_000, tag, n);
    assert!(name.len() <= 15, "{name} too long");
    name
}

/// Runs `ip ARGS`, panicking with its stderr when it fails; returns stdout.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`ip netns add`), deleted on drop. IPv6 is off inside so that the
/// kernel's router solicitations and MLD reports do not mix with test traffic.
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        ip(&["netns", "add", &name]);
        let ns = Netns {
            path: PathBuf::from(format!("/var/run/netns/{name}")),
            name,
        };
        super::in_netns(&ns.path, || {
            for knob in ["all", "default"] {
                let p = format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6");
                let _ = std::fs::write(p, "1");
            }
        })
        .expect("entering the test namespace");
        ns
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn path(&self) -> &Path {
        &self.path
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
pub struct VethPair {
    pub a: Netns,
    pub b: Netns,
    pub a_if: String,
    pub b_if: String,
}

impl VethPair {
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
pub fn link_stat(ns: &Netns, ifname: &str, dir: &str, key: &str) -> u64 {
    let out = ip(&["-n", ns.name(), "-s", "-j", "link", "show", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0]["stats64"][dir][key].as_u64().expect("counter")
}
