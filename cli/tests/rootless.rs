//! Rootless mode end to end, as an unprivileged user.
//!
//! To keep every packet on this machine, the whole scenario runs inside a network namespace
//! made for the test that stands in for "the host": loopback and a dead-end link (a veth pair
//! with nothing behind it, 192.0.2.1/24), servers on its loopback. Inside it, as the plain user
//! `VSWITCH_ROOTLESS_USER` (default `vswitch-test`, created by `.ci/run`): the daemon runs with
//! `--rootless`, and two "rootless containers" are `unshare --user --map-root-user --net`
//! processes attached with `network connect --pid`.
//!
//! Needs root to build the stand-in host and a user to drop to; skips (saying why) without
//! them, and when `VSWITCH_SKIP_E2E=1`.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::{BIN, ip, ok, run, sha256, skip};
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SOAK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/soak_client.py");
const WHOAMI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/whoami_server.py");
const UPSTREAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dns_upstream.py");

/// The stand-in host namespace, the user's processes in it, and the files; all removed on drop.
struct Rootless {
    host: String,
    user: String,
    dir: PathBuf,
    /// Copies of the binary and scripts the user may run (the checkout may sit under a home
    /// directory the user cannot enter, such as /root).
    bin: String,
    whoami: String,
    procs: Vec<Child>,
    containers: Vec<(String, u32)>,
}

impl Rootless {
    fn socket(&self) -> PathBuf {
        self.dir.join("run/vswitch/vswitch.sock")
    }

    /// A command run as the user inside the stand-in host, with the user's XDG directories.
    fn as_user(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns", "exec", &self.host, "setpriv", "--reuid", &self.user,
        ])
        .args(["--regid", &self.user, "--init-groups", "env"])
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
    fn in_container(&self, pid: u32, args: &[&str]) -> Command {
        let pid = pid.to_string();
        let mut all = vec!["nsenter", "-t", &pid, "-U", "-n", "--preserve-credentials"];
        all.extend_from_slice(args);
        self.as_user(&all)
    }

    fn cli(&self, args: &[&str]) -> String {
        let mut all = vec![self.bin.as_str()];
        all.extend_from_slice(args);
        ok(&mut self.as_user(&all))
    }

    fn spawn(&mut self, mut cmd: Command) -> u32 {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.procs.push(child);
        pid
    }

    /// Starts a rootless container (a user + network namespace holding a `sleep`) and
    /// connects it to `network` as `name` with `addr`.
    fn container(&mut self, name: &str, network: &str, addr: &str) -> u32 {
        let marker = format!("{}-{name}", self.host);
        let cmd = self.as_user(&[
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "bash",
            "-c",
            &format!("exec -a {marker} sleep 600"),
        ]);
        self.spawn(cmd);
        // The sleep's pid (the namespaces are its own, not the wrapper's).
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let out = run(Command::new("pgrep").args(["-f", &marker]));
            if let Some(pid) = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .next()
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "container {name} did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        // Wait until unshare has entered its namespaces (the pid exists before that).
        let host_ns = std::fs::read_link("/proc/self/ns/user").ok();
        wait_for("the container's user namespace", || {
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
            ns.is_some() && ns != host_ns
        });
        std::thread::sleep(Duration::from_millis(100));
        let pid_s = pid.to_string();
        self.cli(&[
            "network", "connect", network, "--pid", &pid_s, "--name", name, "--ip", addr,
        ]);
        self.containers.push((name.to_string(), pid));
        pid
    }

    fn run_in(&self, pid: u32, args: &[&str]) -> Output {
        run(&mut self.in_container(pid, args))
    }

    fn ok_in(&self, pid: u32, args: &[&str]) -> String {
        let out = self.run_in(pid, args);
        assert!(
            out.status.success(),
            "in container {pid}: {args:?}\nstdout: {}\nstderr: {}\ndaemon log:\n{}\nstats:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default(),
            String::from_utf8_lossy(&run(&mut self.as_user(&[&self.bin, "stats"])).stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for (_, pid) in &self.containers {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = Command::new("pkill")
            .args(["-f", &format!("{}-", self.host)])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn user_exists(user: &str) -> bool {
    run(Command::new("id").arg(user)).status.success()
}

#[test]
fn rootless_containers_reach_the_host_each_other_and_published_ports() {
    if skip() {
        return;
    }
    let user = std::env::var("VSWITCH_ROOTLESS_USER").unwrap_or_else(|_| "vswitch-test".into());
    if !user_exists(&user) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must create the user {user:?} (see .ci/run)"
        );
        eprintln!("skipping rootless test: no user {user:?} (useradd -m {user}, as .ci/run does)");
        return;
    }
    let host = format!("vsr{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("{host}-rootless"));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["run", "state", "www", "got"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let copy = |from: &str, name: &str| -> String {
        let to = dir.join(name);
        std::fs::copy(Path::new(from), &to).unwrap();
        to.to_string_lossy().into_owned()
    };
    let bin = copy(BIN, "vswitch");
    let whoami = copy(WHOAMI, "whoami_server.py");
    ok(Command::new("chown").args(["-R", &user]).arg(&dir));
    ok(Command::new("chmod").arg("755").arg(&dir));
    ip(&["netns", "add", &host]);
    let mut r = Rootless {
        host: host.clone(),
        user,
        dir: dir.clone(),
        bin,
        whoami,
        procs: Vec::new(),
        containers: Vec::new(),
    };
    ip(&["-n", &host, "link", "set", "lo", "up"]);
    ip(&[
        "-n", &host, "link", "add", "de0", "type", "veth", "peer", "name", "de1",
    ]);
    ip(&["-n", &host, "addr", "add", "192.0.2.1/24", "dev", "de0"]);
    // A second host address for the published-port client, so that its address differs from
    // the one the host listens on.
    ip(&["-n", &host, "addr", "add", "192.0.2.9/24", "dev", "de0"]);
    ip(&["-n", &host, "link", "set", "de0", "up"]);
    // Unprivileged ICMP echo sockets for everyone in the stand-in host (Debian's default on a
    // real host varies).
    ok(Command::new("ip").args([
        "netns",
        "exec",
        &host,
        "sysctl",
        "-qw",
        "net.ipv4.ping_group_range=0 2147483647",
    ]));

    let topo = dir.join("topo.toml");
    std::fs::write(
        &topo,
        r#"
[bridge]
mtu = 65520

[dns]
# A resolver on the host's own loopback, like systemd-resolved's 127.0.0.53: the socket
# uplink reaches it (and nothing else on the host's loopback).
upstream = ["127.0.0.1"]

[[network]]
name = "appnet"
subnet = "10.89.0.0/24"
gateway = "10.89.0.1"

[[port]]
name = "uplink"
kind = "socket"

[uplink]
port = "uplink"
address = "10.0.2.100"
subnet = "10.0.2.0/24"
next_hop = "10.0.2.2"
host_loopback = "10.0.2.2"
mtu = 65520

[[publish]]
proto = "tcp"
host_port = 8080
host_ip = "192.0.2.1"
container_ip = "10.89.0.2"
container_port = 80
"#,
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let mut daemon = r.as_user(&[
        &r.bin,
        "daemon",
        "--rootless",
        "--config",
        topo.to_str().unwrap(),
    ]);
    daemon.stdout(Stdio::null()).stderr(log);
    r.procs.push(daemon.spawn().unwrap());
    let sock = r.socket();
    wait_for("the rootless daemon's socket", || sock.exists());

    let a = r.container("web", "appnet", "10.89.0.2");
    let b = r.container("client", "appnet", "10.89.0.3");
    // Nothing was made in the stand-in host but what the test made: the links are TAPs inside
    // the containers.
    let links = ip(&["-n", &host, "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 3, "{links}");

    // Ping: the gateway, the other container, and the host through an ICMP socket.
    r.ok_in(a, &["ping", "-c", "2", "-W", "2", "10.89.0.1"]);
    r.ok_in(a, &["ping", "-c", "2", "-W", "2", "10.89.0.3"]);
    r.ok_in(a, &["ping", "-c", "2", "-W", "2", "10.0.2.2"]);

    // 12 MB from a server on the stand-in host's loopback, byte for byte.
    let www = dir.join("www");
    ok(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=12", "status=none"])
        .arg(format!("of={}", www.join("big.bin").display())));
    let mut server = Command::new("ip");
    server
        .args(["netns", "exec", &host, "python3", WHOAMI, "8000"])
        .current_dir(&www);
    r.spawn(server);
    let mut resolver = Command::new("ip");
    resolver.args(["netns", "exec", &host, "python3", UPSTREAM, "53"]);
    r.spawn(resolver);
    let mut udp = Command::new("ip");
    udp.args(["netns", "exec", &host, "python3", SOAK, "serve-udp", "9000"]);
    r.spawn(udp);
    let got = dir.join("got/big.bin");
    let url = "http://10.0.2.2:8000/big.bin";
    wait_for("the host's HTTP server", || {
        r.run_in(
            a,
            &["curl", "-s", "-o", "/dev/null", "--max-time", "2", url],
        )
        .status
        .success()
    });
    r.ok_in(
        a,
        &[
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-o",
            got.to_str().unwrap(),
            url,
        ],
    );
    assert_eq!(
        sha256(&got),
        sha256(&www.join("big.bin")),
        "download corrupted"
    );
    // The flow is in conntrack like any other.
    let ct = r.cli(&["conntrack", "ls"]);
    assert!(
        ct.contains("dst=10.0.2.2") && ct.contains("dport=8000"),
        "{ct}"
    );

    // UDP echo through a host UDP socket.
    let echo = r.ok_in(
        a,
        &[
            "python3",
            "-c",
            "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);\
             s.sendto(b'rootless',('10.0.2.2',9000));print(s.recvfrom(100)[0].decode())",
        ],
    );
    assert_eq!(echo.trim(), "rootless");

    // Published port: a client on the stand-in host reaches container a's server, which sees
    // the client's real address.
    let mut web = r.in_container(a, &["python3", &r.whoami, "80"]);
    web.current_dir(&www);
    r.spawn(web);
    let who = Command::new("ip")
        .args(["netns", "exec", &host, "curl", "-sS", "--max-time", "5"])
        .args(["--interface", "192.0.2.9", "http://192.0.2.1:8080/whoami"])
        .output();
    let mut tries = 0;
    let mut who = who.unwrap();
    while !who.status.success() && tries < 50 {
        std::thread::sleep(Duration::from_millis(100));
        tries += 1;
        who = Command::new("ip")
            .args(["netns", "exec", &host, "curl", "-sS", "--max-time", "5"])
            .args(["--interface", "192.0.2.9", "http://192.0.2.1:8080/whoami"])
            .output()
            .unwrap();
    }
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), "192.0.2.9");

    // A port published at run time opens a host listening socket at once; removed, it closes.
    r.cli(&["port", "publish", "appnet", "web", "8081:80/tcp"]);
    let get = |port: u16| {
        Command::new("ip")
            .args(["netns", "exec", &host, "curl", "-sS", "--max-time", "5"])
            .args(["--interface", "192.0.2.9"])
            .arg(format!("http://192.0.2.1:{port}/whoami"))
            .output()
            .unwrap()
    };
    let runtime = get(8081);
    assert_eq!(
        String::from_utf8_lossy(&runtime.stdout).trim(),
        "192.0.2.9",
        "{}",
        String::from_utf8_lossy(&runtime.stderr)
    );
    r.cli(&["port", "rm", "8081/tcp"]);
    assert!(!get(8081).status.success(), "unpublished port still open");

    // DNS: one container finds the other by name on the user-defined network ("a" would be
    // taken by dig as the query type).
    let answer = r.ok_in(
        b,
        &["dig", "+short", "+time=2", "+tries=2", "@10.89.0.1", "web"],
    );
    assert_eq!(answer.trim(), "10.89.0.2");
    let full = r.ok_in(
        b,
        &[
            "dig",
            "+short",
            "+time=2",
            "+tries=2",
            "@10.89.0.1",
            "web.vswitch.internal",
        ],
    );
    assert_eq!(full.trim(), "10.89.0.2");
    // Other names go to the host's resolver, on the host's loopback.
    let forwarded = r.ok_in(
        b,
        &[
            "dig",
            "+short",
            "+time=2",
            "+tries=2",
            "@10.89.0.1",
            "example.com",
        ],
    );
    assert_eq!(forwarded.trim(), "192.0.2.123");
    let who = r.ok_in(
        b,
        &["curl", "-sS", "--max-time", "5", "http://10.89.0.2/whoami"],
    );
    assert_eq!(
        who.trim(),
        "10.89.0.3",
        "containers of one network talk directly"
    );

    // The daemon never ran as root: its state belongs to the user.
    let owner = ok(Command::new("stat")
        .args(["-c", "%U"])
        .arg(dir.join("state/vswitch/state.redb")));
    assert_eq!(owner.trim(), r.user);
    r.cli(&["shutdown"]);
}
