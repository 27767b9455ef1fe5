//! A lab of several vswitch hosts: each host is a namespace with a daemon, joined by an
//! underlay (a Linux bridge in a namespace of its own) that also holds the cluster's etcd
//! server and stands for the internet. Everything is removed when the lab drops, as a
//! [`Lab`]'s is.
//!
//! Addresses (TEST-NET-2, only inside the lab's namespaces): the underlay bridge
//! [`UNDERLAY_IP`] (etcd, the next hop, the "internet"); host N's vswitch uplink (its VTEP)
//! 198.51.100.1N on its `up0` veth, and its kernel's own address 198.51.100.2N on a second
//! veth `mg0` (how the daemon reaches etcd).

use super::{Lab, ip};
use std::process::Command;
use std::time::{Duration, Instant};

/// The underlay bridge's address: etcd listens here, and it is every host's internet.
pub const UNDERLAY_IP: &str = "198.51.100.254";
/// etcd's client port.
pub const ETCD_PORT: u16 = 2379;
/// How long a host's records outlive it (`--cluster-ttl`), short so that tests of a dead host
/// stay short.
pub const TTL_SECS: u64 = 3;

/// The VTEP (uplink) address of host `n` (1-based).
pub fn vtep(n: usize) -> String {
    format!("198.51.100.{}", 10 + n)
}

pub struct ClusterLab {
    /// The underlay namespace `ul` (bridge `br0`), and etcd running in it.
    pub underlay: Lab,
    /// One lab per host, each with a namespace `sw` and a daemon in it.
    pub hosts: Vec<Lab>,
    etcd: Option<std::process::Child>,
    /// Dropped last: the labs are gone before the next test takes the lock.
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl ClusterLab {
    /// `n` hosts, etcd started, every daemon in the cluster.
    pub fn new(n: usize) -> ClusterLab {
        let serial = testkit::lab::serial();
        let mut underlay = Lab::part(&[]);
        let ul = underlay.netns("ul");
        ip(&["-n", &ul, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &ul,
            "addr",
            "add",
            &format!("{UNDERLAY_IP}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &ul, "link", "set", "br0", "up"]);
        let mut lab = ClusterLab {
            underlay,
            hosts: Vec::new(),
            etcd: None,
            _serial: serial,
        };
        lab.start_etcd();
        for i in 1..=n {
            lab.add_host(i);
        }
        lab
    }

    fn ul(&self) -> String {
        self.underlay.ns("ul")
    }

    /// A veth pair from `ns` (end `inner`) to the underlay bridge (end `outer`).
    fn wire(&self, ns: &str, inner: &str, outer: &str) {
        let ul = self.ul();
        ip(&[
            "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns", &ul,
        ]);
        ip(&["-n", &ul, "link", "set", outer, "master", "br0", "up"]);
        ip(&["-n", ns, "link", "set", inner, "up"]);
    }

    /// Host `n`: its namespace, its uplink and management links, its daemon.
    fn add_host(&mut self, n: usize) {
        let mut host = Lab::part(&[
            "--cluster",
            &format!("etcd://{UNDERLAY_IP}:{ETCD_PORT}"),
            "--cluster-host",
            &format!("h{n}"),
            "--cluster-ttl",
            &TTL_SECS.to_string(),
        ]);
        let sw = host.netns("sw");
        // The underlay's ends live in the lab's own namespace: short names are unique there.
        self.wire(&sw, "up0", &format!("uh{n}"));
        self.wire(&sw, "mg0", &format!("mh{n}"));
        ip(&[
            "-n",
            &sw,
            "addr",
            "add",
            &format!("198.51.100.{}/24", 20 + n),
            "dev",
            "mg0",
        ]);
        host.config = format!(
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
        );
        host.start_daemon();
        self.hosts.push(host);
    }

    /// Starts etcd in the underlay namespace (again, on the same data, after [`stop_etcd`]),
    /// and waits until it answers.
    pub fn start_etcd(&mut self) {
        let dir = self.underlay.dir.join("etcd");
        let client = format!("http://{UNDERLAY_IP}:{ETCD_PORT}");
        let peer = "http://127.0.0.1:2380";
        let log = std::fs::File::create(self.underlay.dir.join("etcd.log")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ul(),
                "etcd",
                "--name",
                "ul",
                "--data-dir",
            ])
            .arg(&dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", peer])
            .args(["--initial-advertise-peer-urls", peer])
            .args(["--initial-cluster", &format!("ul={peer}")])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian package etcd-server) must be installed: scripts/setup.sh test");
        self.etcd = Some(child);
        let up = testkit::lab::wait_until(Duration::from_secs(15), || {
            self.etcdctl(&["endpoint", "health"]).status.success()
        });
        assert!(up, "etcd did not start");
    }

    /// Stops etcd (SIGTERM), keeping its data.
    pub fn stop_etcd(&mut self) {
        if let Some(mut c) = self.etcd.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `etcdctl` (API v3) against the lab's etcd.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        super::run(
            Command::new("ip")
                .args(["netns", "exec", &self.ul(), "etcdctl"])
                .arg(format!("--endpoints=http://{UNDERLAY_IP}:{ETCD_PORT}"))
                .args(args)
                .env("ETCDCTL_API", "3"),
        )
    }

    /// Host `n` (1-based).
    pub fn host(&self, n: usize) -> &Lab {
        &self.hosts[n - 1]
    }

    /// Host `n`, mutably.
    pub fn host_mut(&mut self, n: usize) -> &mut Lab {
        &mut self.hosts[n - 1]
    }

    /// Waits (at most `secs`) until `f` holds for host `n`'s `network inspect NETWORK`.
    pub fn wait_inspect(
        &self,
        n: usize,
        network: &str,
        secs: u64,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) {
        let host = self.host(n);
        let sock = host.socket();
        let ok = testkit::lab::wait_until(Duration::from_secs(secs), || {
            let out = super::run(
                Command::new(super::BIN)
                    .args(["network", "inspect", network, "--socket"])
                    .arg(&sock),
            );
            out.status.success()
                && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| f(&v[0]))
        });
        assert!(
            ok,
            "host {n}: {what} within {secs} s\n{}",
            host.daemon_log()
        );
    }
}

impl Drop for ClusterLab {
    fn drop(&mut self) {
        // The daemons first (they leave the cluster), then etcd; each lab removes its own.
        self.hosts.clear();
        self.stop_etcd();
        if std::thread::panicking() {
            let kept = std::env::temp_dir().join(format!("{}-etcd.log", self.underlay.prefix));
            let _ = std::fs::copy(self.underlay.dir.join("etcd.log"), &kept);
        }
    }
}
