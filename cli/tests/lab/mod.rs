//! The namespace lab shared by the end-to-end tests: see e2e.rs for what it guarantees.

#![allow(clippy::unwrap_used, dead_code)] // Test helpers; each test binary uses a subset.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vswitch");
pub const INET_IP: &str = "203.0.113.1";
pub const UPLINK_IP: &str = "203.0.113.2";
/// Topology lines that publish the uplink's tcp 8080 to 172.17.0.3:80 (Docker's `-p 8080:80`).
/// The uplink's IPv6 address in [`Lab::dual_stack`].
pub const UPLINK6: &str = "2001:db8:1::2";
/// The "internet" namespace's IPv6 address in [`Lab::dual_stack`].
pub const INET6: &str = "2001:db8:1::1";
pub const PUBLISH_8080_TO_C2: &str = "\n[[publish]]\nproto = \"tcp\"\nhost_port = 8080\ncontainer_ip = \"172.17.0.3\"\ncontainer_port = 80\n";

#[allow(unused_imports)] // Each test binary uses a subset.
pub use testkit::lab::{ip, ok, run, sha256, skip};

pub mod cluster;

pub struct Lab {
    /// The lab lock, unless the lab is one part of a bigger one that holds it.
    pub _serial: Option<std::sync::MutexGuard<'static, ()>>,
    pub prefix: String,
    pub namespaces: Vec<String>,
    pub procs: Vec<Child>,
    pub daemon: Option<Child>,
    pub dir: PathBuf,
    pub config: String,
    /// More `vswitch daemon` arguments (e.g. `--metrics ADDR`).
    pub daemon_args: Vec<String>,
    /// The binary `start_daemon` runs (the one under test unless changed).
    pub daemon_bin: PathBuf,
}

impl Lab {
    /// A lab with the switch namespace and the "internet" namespace (203.0.113.1/24, linked to
    /// the switch's uplink port `up0`), and a daemon with `extra` appended to its topology.
    pub fn new(extra: &str) -> Lab {
        Lab::with_daemon_args(extra, &[])
    }

    /// [`Lab::new`] with more `vswitch daemon` arguments.
    pub fn with_daemon_args(extra: &str, daemon_args: &[&str]) -> Lab {
        let mut lab = Lab::part(daemon_args);
        lab._serial = Some(testkit::lab::serial());
        let sw = lab.netns("sw");
        let inet = lab.netns("inet");
        ip(&[
            "link", "add", "up0", "netns", &sw, "type", "veth", "peer", "name", "eth0", "netns",
            &inet,
        ]);
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{INET_IP}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &inet, "link", "set", "eth0", "up"]);
        ip(&["-n", &sw, "link", "set", "up0", "up"]);
        // The "internet" keeps the kernel's default offloads: the uplink carries super-frames.
        lab.config = format!(
            r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"

[[network]]
name = "other"
subnet = "172.18.0.0/16"
gateway = "172.18.0.1"

[[network]]
name = "quiet"
subnet = "172.19.0.0/16"
gateway = "172.19.0.1"
icc = false

[[port]]
name = "up0"
kind = "af_packet"

[uplink]
port = "up0"
address = "{UPLINK_IP}"
subnet = "203.0.113.0/24"
{extra}
"#
        );
        lab.start_daemon();
        lab
    }

    /// A lab whose uplink has an IPv6 side ([`UPLINK6`]), the internet at [`INET6`], and
    /// network `web6` (10.89.0.0/24 and fd00:89::/64); the daemon gets `daemon_args`.
    pub fn dual_stack(daemon_args: &[&str]) -> Lab {
        let lab = Lab::with_daemon_args(
            &format!("\n[uplink.ipv6]\naddress = \"{UPLINK6}\"\nsubnet = \"2001:db8:1::/64\"\n"),
            daemon_args,
        );
        let inet = lab.ns("inet");
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{INET6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        lab.cli(&[
            "network",
            "create",
            "web6",
            "--ipv6",
            "--subnet",
            "10.89.0.0/24",
            "--subnet",
            "fd00:89::/64",
        ]);
        lab
    }

    /// A lab with nothing in it yet (no namespace, no daemon, no lock): one part of a bigger
    /// lab (see [`cluster`]), which holds the lab lock.
    pub fn part(daemon_args: &[&str]) -> Lab {
        let prefix = testkit::lab::prefix("vse");
        let dir = std::env::temp_dir().join(format!("{prefix}-state"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            _serial: None,
            prefix,
            namespaces: Vec::new(),
            procs: Vec::new(),
            daemon: None,
            dir,
            config: String::new(),
            daemon_args: daemon_args.iter().map(|a| a.to_string()).collect(),
            daemon_bin: PathBuf::from(BIN),
        }
    }

    pub fn ns(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    pub fn netns(&mut self, tag: &str) -> String {
        let name = self.ns(tag);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("vswitch.sock")
    }

    pub fn start_daemon(&mut self) {
        let cfg = self.dir.join("topo.toml");
        std::fs::write(&cfg, &self.config).unwrap();
        let log = std::fs::File::create(self.dir.join("daemon.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("sw")])
            .arg(&self.daemon_bin)
            .args(["daemon", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&self.dir)
            // Two packet loops even on a one-core runner: cross-worker handoff is under test too
            // (unless the test asks for another count).
            .args(if self.daemon_args.iter().any(|a| a == "--workers") {
                &[][..]
            } else {
                &["--workers", "2"][..]
            })
            .args(&self.daemon_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "daemon did not start:\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(d.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = d.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = run(Command::new(BIN)
            .args(args)
            .arg("--socket")
            .arg(self.socket()));
        assert!(
            out.status.success(),
            "vswitch {args:?}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.cli(&all)).unwrap()
    }

    /// Makes a container namespace and connects it to `network` with `addr`.
    pub fn container(&mut self, tag: &str, network: &str, addr: &str) -> String {
        let ns = self.netns(tag);
        let path = format!("/run/netns/{ns}");
        self.cli(&[
            "network", "connect", network, "--netns", &path, "--name", tag, "--ip", addr,
        ]);
        ns
    }

    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Output {
        run(Command::new("ip").args(["netns", "exec", ns]).args(cmd))
    }

    pub fn exec_ok(&self, ns: &str, cmd: &[&str]) -> String {
        let out = self.exec(ns, cmd);
        assert!(
            out.status.success(),
            "in {ns}: {cmd:?} failed\nstdout: {}\nstderr: {}\ndaemon log:\n{}\nstats:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.daemon_log(),
            self.cli(&["stats"])
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running process inside `ns` (killed when the lab drops).
    pub fn spawn(&mut self, ns: &str, cwd: &Path, cmd: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .current_dir(cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs.push(child);
    }

    /// Waits (at most 15 s) until a UDP socket listens on `port` in `ns`: a server spawned a
    /// moment ago (python starts slowly on a busy machine) must be there before traffic is sent.
    pub fn wait_udp_listener(&self, ns: &str, port: u16) {
        let filter = format!("sport = :{port}");
        let up = testkit::lab::wait_until(Duration::from_secs(15), || {
            let out = self.exec(ns, &["ss", "-H", "-lun", &filter]);
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        });
        assert!(up, "nothing listens on UDP port {port} in {ns}");
    }

    /// Starts the whoami/file HTTP server in `ns` on `port`, serving `dir`, and waits for it.
    pub fn http_server(&mut self, ns: &str, port: u16, dir: &Path) {
        self.http_server_at(ns, "0.0.0.0", port, dir);
    }

    /// [`Lab::http_server`] bound to `addr` (`::` serves IPv6 and IPv4).
    pub fn http_server_at(&mut self, ns: &str, addr: &str, port: u16, dir: &Path) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/whoami_server.py");
        self.spawn(ns, dir, &["python3", script, &port.to_string(), addr]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.exec(
                ns,
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "1",
                    &format!("http://127.0.0.1:{port}/whoami"),
                ],
            );
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HTTP server in {ns} did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs an iperf3 client (3 s, JSON) in `ns` with `args`; the received rate in Gbit/s.
    pub fn iperf_gbps(&self, ns: &str, args: &[&str]) -> f64 {
        let mut all = vec!["iperf3", "-t", "3", "-J"];
        all.extend_from_slice(args);
        let out = self.exec_ok(ns, &all);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap()
            / 1e9
    }

    /// Runs an iperf3 UDP client (3 s at `rate`, e.g. "10M") in `ns` to `server`:`port`; the
    /// percentage of datagrams lost.
    pub fn iperf_udp_lost(&self, ns: &str, server: &str, port: &str, rate: &str) -> f64 {
        let args = [
            "iperf3", "-c", server, "-p", port, "-u", "-b", rate, "-t", "3", "-J",
        ];
        let out = self.exec_ok(ns, &args);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["end"]["sum"]["lost_percent"].as_f64().unwrap()
    }

    /// Downloads `url` with curl in `ns` and checks it is `original` byte for byte (SHA-256).
    pub fn download_checked(&self, ns: &str, url: &str, original: &Path, what: &str) {
        let got = self.dir.join(format!("got-{what}.bin"));
        self.exec_ok(
            ns,
            &[
                "curl",
                "-sS",
                "--max-time",
                "120",
                "-o",
                got.to_str().unwrap(),
                url,
            ],
        );
        assert_eq!(sha256(&got), sha256(original), "{what}: download corrupted");
        std::fs::remove_file(&got).unwrap();
    }

    pub fn curl(&self, ns: &str, url: &str) -> String {
        self.exec_ok(ns, &["curl", "-sS", "--max-time", "20", url])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        self.stop_daemon();
        if std::thread::panicking() {
            // Keep the daemon's log of a failed test (RUST_LOG reaches the daemon).
            let kept = std::env::temp_dir().join(format!("{}-daemon.log", self.prefix));
            if std::fs::copy(self.dir.join("daemon.log"), &kept).is_ok() {
                eprintln!("daemon log kept in {}", kept.display());
            }
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
