//! Rootless mode end to end, as an unprivileged user.
//!
//! To keep every packet on this machine, the whole scenario runs inside a network namespace
//! made for the test that stands in for "the host": loopback and a dead-end link (a veth pair
//! with nothing behind it, 192.0.2.1/24), servers on its loopback. Inside it, as the plain user
//! `VSWITCH_ROOTLESS_USER` (default `vswitch-test`, created by `.ci/run`): the daemon runs with
//! `--rootless`, and two "rootless containers" are `unshare --user --map-root-user --net`
//! processes attached with `network connect --pid`. A third one is on a dual-stack network:
//! IPv6 leaves through the socket gateway too (NAT66 to the embedded topology's ULA uplink
//! address).
//!
//! Needs root to build the stand-in host and a user to drop to; skips (saying why) without
//! them, and when `VSWITCH_SKIP_E2E=1`.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::{BIN, ip, ok, run, sha256, skip};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use testkit::lab::wait_until;
use testkit::rootless::{RootlessHost, user_exists, with_host_loopback};

const SOAK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/soak_client.py");
const WHOAMI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/whoami_server.py");
const UPSTREAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dns_upstream.py");

/// The stand-in host (removed on drop) and the copies of the binary and script the user runs.
struct Rootless {
    lab: RootlessHost,
    bin: String,
    whoami: String,
}

impl Rootless {
    fn cli(&self, args: &[&str]) -> String {
        let mut all = vec![self.bin.as_str()];
        all.extend_from_slice(args);
        ok(&mut self.lab.as_user(&all))
    }

    /// Starts a rootless container and connects it to `network` as `name` with `addr`.
    fn container(&mut self, name: &str, network: &str, addr: &str) -> u32 {
        let pid = self.lab.container(name).unwrap();
        let pid_s = pid.to_string();
        self.cli(&[
            "network", "connect", network, "--pid", &pid_s, "--name", name, "--ip", addr,
        ]);
        pid
    }

    fn run_in(&self, pid: u32, args: &[&str]) -> Output {
        run(&mut self.lab.in_container(pid, args))
    }

    fn ok_in(&self, pid: u32, args: &[&str]) -> String {
        let out = self.run_in(pid, args);
        assert!(
            out.status.success(),
            "in container {pid}: {args:?}\nstdout: {}\nstderr: {}\ndaemon log:\n{}\nstats:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.lab.dir().join("daemon.log")).unwrap_or_default(),
            String::from_utf8_lossy(&run(&mut self.lab.as_user(&[&self.bin, "stats"])).stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(15), f),
        "{what} did not happen in time"
    );
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
    let lab = RootlessHost::new(&format!("vsr{}", std::process::id() % 100_000), &user).unwrap();
    let host = lab.host().to_string();
    let dir = lab.dir().to_path_buf();
    let www = lab.user_dir("www").unwrap();
    let got = lab.user_dir("got").unwrap().join("big.bin");
    let mut r = Rootless {
        bin: lab.install(Path::new(BIN), "vswitch").unwrap(),
        whoami: lab.install(Path::new(WHOAMI), "whoami_server.py").unwrap(),
        lab,
    };
    // A second host address for the published-port client, so that its address differs from
    // the one the host listens on.
    r.lab
        .ip(&["addr", "add", "192.0.2.9/24", "dev", "de0"])
        .unwrap();
    // Unprivileged ICMP echo sockets for everyone in the stand-in host (Debian's default on a
    // real host varies).
    ok(&mut r
        .lab
        .exec(&["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]));

    // The daemon's own rootless topology, with the host's loopback mapped, and more.
    let topo = dir.join("topo.toml");
    std::fs::write(
        &topo,
        with_host_loopback(daemon::ROOTLESS_TOPOLOGY)
            + r#"
[dns]
# A resolver on the host's own loopback, like systemd-resolved's 127.0.0.53: the socket
# uplink reaches it (and nothing else on the host's loopback).
upstream = ["127.0.0.1"]

[[network]]
name = "appnet"
subnet = "10.89.0.0/24"
gateway = "10.89.0.1"

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
    let bin = r.bin.clone();
    r.lab.start_daemon(&bin, &topo, log).unwrap();

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
    ok(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=12", "status=none"])
        .arg(format!("of={}", www.join("big.bin").display())));
    let mut server = r.lab.exec(&["python3", WHOAMI, "8000"]);
    server.current_dir(&www);
    r.lab.spawn(server).unwrap();
    let resolver = r.lab.exec(&["python3", UPSTREAM, "53"]);
    r.lab.spawn(resolver).unwrap();
    let udp = r.lab.exec(&["python3", SOAK, "serve-udp", "9000"]);
    r.lab.spawn(udp).unwrap();
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
    // Its parts are alive, and status says so.
    let status = r.cli(&["status"]);
    assert!(
        status.contains("health: loop0 alive, rootless helper alive, socket gateway alive"),
        "{status}"
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
    let mut web = r.lab.in_container(a, &["python3", &r.whoami, "80"]);
    web.current_dir(&www);
    r.lab.spawn(web).unwrap();
    let get = |port: u16| {
        r.lab
            .exec(&["curl", "-sS", "--max-time", "5"])
            .args(["--interface", "192.0.2.9"])
            .arg(format!("http://192.0.2.1:{port}/whoami"))
            .output()
            .unwrap()
    };
    let mut tries = 0;
    let mut who = get(8080);
    while !who.status.success() && tries < 50 {
        std::thread::sleep(Duration::from_millis(100));
        tries += 1;
        who = get(8080);
    }
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), "192.0.2.9");

    // A port published at run time opens a host listening socket at once; removed, it closes.
    r.cli(&["port", "publish", "appnet", "web", "8081:80/tcp"]);
    let runtime = get(8081);
    assert_eq!(
        String::from_utf8_lossy(&runtime.stdout).trim(),
        "192.0.2.9",
        "{}",
        String::from_utf8_lossy(&runtime.stderr)
    );
    // From the host's own 127.0.0.1 the container sees the address mapped to the host's
    // loopback (127.0.0.1 would be dropped there as a martian, and curl would time out).
    let local = r
        .lab
        .exec(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:8081/whoami",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&local.stdout).trim(),
        "10.0.2.2",
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    // A container reaching the uplink address itself: a published port is hairpinned to its
    // container, a closed one refused at once (it used to hang).
    let hairpin = r.ok_in(
        b,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://10.0.2.100:8081/whoami",
        ],
    );
    assert_eq!(hairpin.trim(), "10.0.2.100", "hairpin: masqueraded to U");
    let started = std::time::Instant::now();
    let closed = r.run_in(
        b,
        &["curl", "-sS", "--max-time", "10", "http://10.0.2.100:9/"],
    );
    assert_eq!(
        closed.status.code(),
        Some(7),
        "connection refused, not a timeout: {}",
        String::from_utf8_lossy(&closed.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // And the containers' eth0 has the embedded topology's MTU.
    let link = r.ok_in(b, &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("mtu 65520"), "{link}");
    r.cli(&["port", "rm", "8081/tcp"]);
    assert!(!get(8081).status.success(), "unpublished port still open");
    // A range: a host listening socket for each of its ports.
    r.cli(&["port", "publish", "appnet", "web", "8090-8091:80-81/tcp"]);
    let ranged = get(8090);
    assert_eq!(
        String::from_utf8_lossy(&ranged.stdout).trim(),
        "192.0.2.9",
        "{}",
        String::from_utf8_lossy(&ranged.stderr)
    );
    r.cli(&["port", "rm", "8090-8091/tcp"]);
    assert!(!get(8090).status.success(), "unpublished range still open");

    // DNS: one container finds the other by name on the user-defined network ("a" would be
    // taken by dig as the query type).
    let dig = |name: &str| {
        let out = r.ok_in(
            b,
            &["dig", "+short", "+time=2", "+tries=2", "@10.89.0.1", name],
        );
        out.trim().to_string()
    };
    assert_eq!(dig("web"), "10.89.0.2");
    assert_eq!(dig("web.vswitch.internal"), "10.89.0.2");
    // Other names go to the host's resolver, on the host's loopback.
    assert_eq!(dig("example.com"), "192.0.2.123");
    let who = r.ok_in(
        b,
        &["curl", "-sS", "--max-time", "5", "http://10.89.0.2/whoami"],
    );
    assert_eq!(
        who.trim(),
        "10.89.0.3",
        "containers of one network talk directly"
    );

    // IPv6, on a dual-stack network: the TAP got the container's IPv6 address and default
    // route from the helper; the gateway answers, and the socket gateway carries ICMPv6 echo,
    // TCP and a published port to and from an IPv6 address of the stand-in host.
    r.cli(&[
        "network",
        "create",
        "dual",
        "--ipv6",
        "--subnet",
        "10.90.0.0/24",
        "--subnet",
        "fd00:90::/64",
    ]);
    let a = r.container("web6", "dual", "10.90.0.2");
    for a6 in ["fd00:beef::1/64", "fd00:beef::9/64"] {
        r.lab
            .ip(&["-6", "addr", "add", a6, "dev", "de0", "nodad"])
            .unwrap();
    }
    let addr6 = r.ok_in(a, &["ip", "-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr6.contains("fd00:90::"), "{addr6}");
    let route6 = r.ok_in(a, &["ip", "-6", "route", "show", "default"]);
    assert!(route6.contains("via fd00:90::1"), "{route6}");
    r.ok_in(a, &["ping", "-6", "-c", "2", "-W", "2", "fd00:90::1"]);
    r.ok_in(a, &["ping", "-6", "-c", "2", "-W", "2", "fd00:beef::1"]);
    let server6 = r.lab.exec(&["python3", WHOAMI, "8006", "::"]);
    r.lab.spawn(server6).unwrap();
    let url6 = "http://[fd00:beef::1]:8006/whoami";
    wait_for("the host's IPv6 HTTP server", || {
        r.run_in(
            a,
            &["curl", "-sg", "-o", "/dev/null", "--max-time", "2", url6],
        )
        .status
        .success()
    });
    let seen = r.ok_in(a, &["curl", "-sSg", "--max-time", "5", url6]);
    assert!(seen.trim().contains(':'), "an IPv6 host socket: {seen}");
    let ct = r.cli(&["conntrack", "ls"]);
    assert!(ct.contains("fd00:beef::1"), "{ct}");
    // A port published on every host address is reached by an IPv6 client, whose address the
    // container sees.
    let mut web6 = r.lab.in_container(a, &["python3", &r.whoami, "81", "::"]);
    web6.current_dir(&www);
    r.lab.spawn(web6).unwrap();
    r.cli(&["port", "publish", "dual", "web6", "8082:81/tcp"]);
    let get6 = || {
        r.lab
            .exec(&["curl", "-sSg", "--max-time", "5"])
            .args(["--interface", "fd00:beef::9"])
            .arg("http://[fd00:beef::1]:8082/whoami")
            .output()
            .unwrap()
    };
    let mut who6 = get6();
    for _ in 0..50 {
        if who6.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        who6 = get6();
    }
    assert_eq!(
        String::from_utf8_lossy(&who6.stdout).trim(),
        "fd00:beef::9",
        "{}",
        String::from_utf8_lossy(&who6.stderr)
    );
    r.cli(&["port", "rm", "8082/tcp"]);

    // The daemon never ran as root: its state belongs to the user.
    let owner = ok(Command::new("stat")
        .args(["-c", "%U"])
        .arg(dir.join("state/vswitch/state.redb")));
    assert_eq!(owner.trim(), r.lab.user());
    r.cli(&["shutdown"]);
}
