//! The host's side of vswitch, end to end, with the daemon in a stand-in host namespace
//! (testkit's runtime lab): the host port (the host reaches containers, as through docker0),
//! published ports reached from the host itself (localhost, host-only `127.0.0.1:` ports) and
//! from the internet namespace, ranges, and the container lifecycle a runtime relies on (a
//! namespace that disappears frees its address, port and name; ports stay the container's
//! across a disconnect and come back when it reconnects).
//!
//! Root only; everything lives in namespaces the test makes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::lab::{Netns, prefix, serial, skip_unless_root, try_ok, wait_until};
use testkit::runtime_host::{INET_ADDR, RuntimeHost, UPLINK_ADDR};

const BIN: &str = env!("CARGO_BIN_EXE_vswitch");

fn bin() -> PathBuf {
    PathBuf::from(BIN)
}

fn whoami_server() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/whoami_server.py")
        .display()
        .to_string()
}

/// `curl` of `url` from the namespace `ns`: the body, or None when it fails within 3 s.
fn curl(ns: &str, url: &str) -> Option<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["curl", "-s", "--noproxy", "*", "-m", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts the whoami server on port 80 inside `ns`; its pid.
fn serve(lab: &mut RuntimeHost, ns: &Netns) -> u32 {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns.name(),
        "python3",
        &whoami_server(),
        "80",
    ]);
    let pid = lab.spawn(cmd, "whoami.log").expect("whoami server");
    let up = wait_until(Duration::from_secs(10), || {
        ns.exec(&["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/80"])
            .status
            .success()
    });
    assert!(
        up,
        "whoami server in {}: {}",
        ns.name(),
        lab.log("whoami.log")
    );
    pid
}

fn json(lab: &RuntimeHost, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = lab.vswitch(&bin(), &all).expect("vswitch");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn lab(stem: &str) -> RuntimeHost {
    RuntimeHost::with_network(&prefix(stem), &bin(), "web", "10.88.0.0/24")
}

fn connect(lab: &RuntimeHost, ns: &Netns, name: &str) -> String {
    let path = ns.path().display().to_string();
    let out = json(
        lab,
        &[
            "network", "connect", "web", "--netns", &path, "--name", name,
        ],
    );
    out["ip"].as_str().expect("ip").to_string()
}

#[test]
fn the_host_reaches_containers_and_its_published_ports() {
    if skip_unless_root("the_host_reaches_containers_and_its_published_ports") {
        return;
    }
    let _serial = serial();
    let mut lab = lab("vsho");
    let host = lab.host().to_string();
    let inet = lab.inet().to_string();

    // The host port: the subnet's last address on vs-web, a connected route, no default route.
    let addrs = try_ok(&mut lab.in_host(&["ip", "-o", "-4", "addr", "show", "dev", "vs-web"]))
        .expect("vs-web in the host");
    assert!(addrs.contains("10.88.0.254/24"), "{addrs}");
    let routes = try_ok(&mut lab.in_host(&["ip", "-4", "route"])).expect("routes");
    assert!(
        !routes.contains("default"),
        "the host gained a default route: {routes}"
    );

    let c1 = Netns::new("ho");
    let ip = connect(&lab, &c1, "c1");
    serve(&mut lab, &c1);
    try_ok(&mut lab.in_host(&["ping", "-c", "1", "-W", "2", &ip])).expect("host pings container");
    // Containers find the host by name on a user-defined network.
    let dig = c1.exec(&[
        "dig",
        "+short",
        "+time=2",
        "+tries=2",
        "@10.88.0.1",
        "host.vswitch.internal",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&dig.stdout).trim(),
        "10.88.0.254",
        "{dig:?}"
    );
    let seen = curl(&host, &format!("http://{ip}/whoami"));
    assert_eq!(
        seen.as_deref(),
        Some("10.88.0.254"),
        "host → container directly"
    );

    lab.vswitch(&bin(), &["port", "publish", "web", "c1", "8080:80"])
        .expect("publish");
    lab.vswitch(
        &bin(),
        &["port", "publish", "web", "c1", "127.0.0.1:8081:80"],
    )
    .expect("publish host-only");
    // From the host itself: localhost reaches both, through the host proxy.
    for port in [8080, 8081] {
        let seen = curl(&host, &format!("http://127.0.0.1:{port}/whoami"));
        assert_eq!(seen.as_deref(), Some("10.88.0.254"), "localhost:{port}");
    }
    // From the internet: the DNAT keeps the client's address; the host-only port is closed.
    let seen = curl(&inet, &format!("http://{UPLINK_ADDR}:8080/whoami"));
    assert_eq!(seen.as_deref(), Some(INET_ADDR), "internet → 8080");
    assert_eq!(
        curl(&inet, &format!("http://{UPLINK_ADDR}:8081/whoami")),
        None
    );

    // UDP too: a datagram to localhost reaches the container and its answer comes back.
    let echo = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                s.bind(('0.0.0.0',5353))\nwhile True:\n d,a=s.recvfrom(2048)\n \
                s.sendto(d+(' from '+a[0]).encode(),a)\n";
    let mut server = Command::new("ip");
    server.args(["netns", "exec", c1.name(), "python3", "-c", echo]);
    lab.spawn(server, "udp-echo.log").expect("udp echo");
    lab.vswitch(&bin(), &["port", "publish", "web", "c1", "5353:5353/udp"])
        .expect("publish udp");
    let ask = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
               s.settimeout(1)\nfor _ in range(5):\n try:\n  \
               s.sendto(b'hi',('127.0.0.1',5353)); print(s.recv(2048).decode()); break\n \
               except OSError: pass\n";
    let got = try_ok(&mut lab.in_host(&["python3", "-c", ask])).expect("udp from localhost");
    assert_eq!(
        got.trim(),
        "hi from 10.88.0.254",
        "{}",
        lab.log("udp-echo.log")
    );
    lab.vswitch(&bin(), &["port", "rm", "5353/udp"])
        .expect("port rm udp");

    // A range publishes every port of it, or none.
    let out = json(&lab, &["port", "publish", "web", "c1", "9000-9001:80-81"]);
    assert_eq!(out["published"].as_array().map(Vec::len), Some(2), "{out}");
    let seen = curl(&inet, &format!("http://{UPLINK_ADDR}:9000/whoami"));
    assert_eq!(seen.as_deref(), Some(INET_ADDR), "internet → 9000");
    let clash = lab.vswitch(&bin(), &["port", "publish", "web", "c1", "8999-9000:80-81"]);
    assert!(
        clash.is_err(),
        "a range over a published port must be refused"
    );
    let ports = json(&lab, &["port", "ls"]);
    assert_eq!(ports.as_array().map(Vec::len), Some(4), "{ports}");

    // Unpublished: localhost and the internet both lose it.
    lab.vswitch(&bin(), &["port", "rm", "8080"])
        .expect("port rm");
    assert_eq!(curl(&host, "http://127.0.0.1:8080/whoami"), None);
    assert_eq!(
        curl(&inet, &format!("http://{UPLINK_ADDR}:8080/whoami")),
        None
    );

    // The network goes with its host port once its containers have left.
    let busy = lab.vswitch(&bin(), &["network", "rm", "web"]);
    assert!(busy.is_err(), "a network with a container must stay");
    assert!(try_ok(&mut lab.in_host(&["ip", "link", "show", "vs-web"])).is_ok());
    lab.vswitch(&bin(), &["network", "disconnect", "web", "c1"])
        .expect("disconnect");
    lab.vswitch(&bin(), &["network", "rm", "web"])
        .expect("network rm");
    assert!(try_ok(&mut lab.in_host(&["ip", "link", "show", "vs-web"])).is_err());
}

#[test]
fn a_vanished_container_is_released_and_its_name_reused() {
    if skip_unless_root("a_vanished_container_is_released_and_its_name_reused") {
        return;
    }
    let _serial = serial();
    let mut lab = lab("vslc");
    let inet = lab.inet().to_string();

    let c = Netns::new("lc");
    let first_ip = connect(&lab, &c, "app");
    let server = serve(&mut lab, &c);
    lab.vswitch(&bin(), &["port", "publish", "web", "app", "8090:80"])
        .expect("publish");
    let url = format!("http://{UPLINK_ADDR}:8090/whoami");
    assert_eq!(curl(&inet, &url).as_deref(), Some(INET_ADDR));

    // The container dies without a disconnect: its namespace goes with its last process.
    let _ = Command::new("kill").arg(server.to_string()).status();
    let gone_at = std::time::Instant::now();
    drop(c);
    let released = wait_until(Duration::from_secs(10), || {
        let status = json(&lab, &["status"]);
        !status.to_string().contains("\"app\"")
    });
    assert!(released, "app still attached: {}", lab.log("vswitch.log"));
    eprintln!(
        "namespace gone -> released in {} ms",
        gone_at.elapsed().as_millis()
    );
    let inspect = json(&lab, &["network", "inspect", "web"]);
    assert!(
        !inspect.to_string().contains(&format!("\"{first_ip}/24\"")),
        "lease kept: {inspect}"
    );
    // Its published port stays its own, inactive until it comes back.
    let ports = json(&lab, &["port", "ls"]);
    assert_eq!(ports[0]["container"], "app", "{ports}");
    assert!(ports[0]["container_ip"].is_null(), "{ports}");

    // The restarted container asks for the same name and has its network and port at once.
    let again = Netns::new("lc");
    let ip = connect(&lab, &again, "app");
    assert_eq!(ip, first_ip, "lowest free address again");
    serve(&mut lab, &again);
    assert_eq!(
        curl(&inet, &url).as_deref(),
        Some(INET_ADDR),
        "port follows"
    );

    // A runtime's late delete of an older container of that name (attached from another
    // namespace) leaves the new one alone.
    let late = control::Request::Disconnect {
        network: "web".into(),
        name: "app".into(),
        unpublish: true,
        missing_ok: true,
        netns: Some("/run/netns/an-older-one".into()),
    };
    let answer = control::call(&lab.socket(), &late).expect("guarded disconnect");
    assert!(answer.is_null(), "{answer}");
    assert_eq!(
        curl(&inet, &url).as_deref(),
        Some(INET_ADDR),
        "still attached"
    );

    // A disconnect keeps the port for the container; --unpublish drops it.
    lab.vswitch(&bin(), &["network", "disconnect", "web", "app"])
        .expect("disconnect");
    assert_eq!(
        json(&lab, &["port", "ls"]).as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        curl(&inet, &url),
        None,
        "a disconnected container's port is closed"
    );
    connect(&lab, &again, "app");
    assert_eq!(curl(&inet, &url).as_deref(), Some(INET_ADDR), "reconnected");
    let status = json(&lab, &["status"]);
    let port = status["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "app")
        .map(|c| c["port"].clone())
        .expect("app's port");
    lab.vswitch(
        &bin(),
        &["network", "disconnect", "web", "app", "--unpublish"],
    )
    .expect("disconnect --unpublish");
    // Its switch port leaves the counters with it.
    let stats = json(&lab, &["stats"]);
    let rows = stats["ports"].as_array().expect("stats rows");
    assert!(
        !rows.iter().any(|r| r["name"] == port),
        "{port} kept: {stats}"
    );
    assert!(rows.iter().any(|r| r["name"] == "up0"), "{stats}");
    assert_eq!(
        json(&lab, &["port", "ls"]).as_array().map(Vec::len),
        Some(0)
    );

    // Attached by process: every /proc/PID/ns/net is called "net", so the default name is
    // the pid's, and two containers do not clash.
    let mut names = Vec::new();
    for _ in 0..2 {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            again.name(),
            "unshare",
            "-n",
            "sleep",
            "60",
        ]);
        let pid = lab.spawn(cmd, "sleepers.log").expect("sleeper");
        // `ip netns exec` execs unshare, which execs sleep: the pid stays; wait for the new
        // namespace.
        let own = wait_until(Duration::from_secs(5), || {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
                != std::fs::read_link(format!("/proc/{}/ns/net", std::process::id())).ok()
                && Command::new("readlink")
                    .arg(format!("/proc/{pid}/exe"))
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("sleep"))
        });
        assert!(own, "sleeper {pid} did not start");
        let out = json(
            &lab,
            &["network", "connect", "web", "--pid", &pid.to_string()],
        );
        names.push(out["name"].as_str().unwrap_or_default().to_string());
    }
    assert!(names.iter().all(|n| n.starts_with("pid-")), "{names:?}");
    assert_ne!(names[0], names[1]);
}

#[test]
fn a_runtimes_veth_survives_a_graceful_restart() {
    if skip_unless_root("a_runtimes_veth_survives_a_graceful_restart") {
        return;
    }
    let _serial = serial();
    let mut lab = RuntimeHost::new(&prefix("vsrr")).expect("runtime lab");
    let daemon = lab.start_vswitch(&bin(), "").expect("vswitch daemon");
    // As Docker's driver does: the daemon leaves the container's end in its namespace, the
    // runtime moves it into the container and configures it.
    let connect = control::Request::Connect {
        network: "bridge".into(),
        netns: None,
        name: Some("ep-runtime".into()),
        ifname: None,
        ip: None,
        ip6: None,
        mac: None,
        peer_in_host: true,
    };
    let c = control::call(&lab.socket(), &connect).expect("connect peer_in_host");
    let (peer, ip) = (
        c["peer"].as_str().expect("peer"),
        c["ip"].as_str().expect("ip"),
    );
    let ns = Netns::new("rr");
    let cidr = format!("{ip}/{}", c["prefix_len"]);
    try_ok(&mut lab.in_host(&["ip", "link", "set", peer, "netns", ns.name()]))
        .expect("move the peer");
    for cmd in [
        vec!["ip", "link", "set", peer, "name", "eth0"],
        vec!["ip", "addr", "add", &cidr, "dev", "eth0"],
        vec!["ip", "link", "set", "eth0", "up"],
    ] {
        let out = ns.exec(&cmd);
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    }
    let ping = || {
        ns.exec(&["ping", "-c", "1", "-W", "2", "172.17.0.1"])
            .status
            .success()
    };
    assert!(ping(), "the runtime's container reaches the gateway");

    // SIGTERM: the daemon removes the links it made, not the runtime's.
    assert!(lab.terminate(daemon), "the daemon did not stop");
    let links = ns.exec(&["ip", "link", "show", "eth0"]);
    assert!(
        links.status.success(),
        "the runtime's veth went with the daemon"
    );
    lab.start_vswitch(&bin(), "").expect("vswitch again");
    assert!(
        wait_until(Duration::from_secs(5), ping),
        "not re-attached: {}",
        lab.log("vswitch.log")
    );
    let status = json(&lab, &["status"]);
    assert!(status.to_string().contains("ep-runtime"), "{status}");
}

#[test]
fn the_uplink_lives_beside_the_hosts_own_stack() {
    if skip_unless_root("the_uplink_lives_beside_the_hosts_own_stack") {
        return;
    }
    let _serial = serial();
    let mut lab = RuntimeHost::new(&prefix("vsmv")).expect("runtime lab");
    let (host, inet) = (lab.host().to_string(), lab.inet().to_string());
    // The host's own stack uses the NIC: an address of its own on the uplink's subnet.
    try_ok(&mut lab.in_host(&["ip", "addr", "add", "203.0.113.3/24", "dev", "up0"]))
        .expect("host address");
    let daemon = lab.start_vswitch(&bin(), "").expect("vswitch daemon");
    assert!(
        lab.log("vswitch.log")
            .contains("uplink beside the host's stack"),
        "mode auto did not pick macvlan: {}",
        lab.log("vswitch.log")
    );
    // The macvlan carries vswitch's MAC and nothing of the host's: no address, no ARP.
    let link = try_ok(&mut lab.in_host(&["ip", "-o", "addr", "show", "dev", "vsu-up0"]))
        .expect("the uplink's macvlan");
    assert!(!link.contains("inet"), "{link}");
    let flags = try_ok(&mut lab.in_host(&["ip", "-d", "-o", "link", "show", "dev", "vsu-up0"]))
        .expect("macvlan flags");
    assert!(
        flags.contains("NOARP") && flags.contains("macvlan"),
        "{flags}"
    );

    let mut server = lab.in_inet(&["python3", &whoami_server(), "8000"]);
    server.current_dir(lab.dir());
    lab.spawn(server, "inet-whoami.log")
        .expect("internet server");
    let whoami = format!("http://{INET_ADDR}:8000/whoami");
    assert!(
        wait_until(Duration::from_secs(10), || curl(&host, &whoami).is_some()),
        "the host's own stack reaches the internet"
    );
    assert_eq!(curl(&host, &whoami).as_deref(), Some("203.0.113.3"));

    // vswitch beside it: masquerade out, a published port in.
    let c = Netns::new("mv");
    let path = c.path().display().to_string();
    lab.vswitch(
        &bin(),
        &[
            "network", "connect", "bridge", "--netns", &path, "--name", "c",
        ],
    )
    .expect("connect");
    let seen = curl(c.name(), &whoami);
    assert_eq!(
        seen.as_deref(),
        Some(UPLINK_ADDR),
        "masqueraded to the uplink address"
    );
    serve(&mut lab, &c);
    lab.vswitch(&bin(), &["port", "publish", "bridge", "c", "8080:80"])
        .expect("publish");
    let seen = curl(&inet, &format!("http://{UPLINK_ADDR}:8080/whoami"));
    assert_eq!(seen.as_deref(), Some(INET_ADDR), "published port");
    // The internet knows each by its own MAC: the host did not answer for vswitch or back.
    let neigh = try_ok(&mut lab.in_inet(&["ip", "neigh", "show", "dev", "eth0"])).expect("neigh");
    let macs = |ip: &str| {
        neigh
            .lines()
            .find(|l| l.starts_with(&format!("{ip} ")))
            .and_then(|l| l.split_whitespace().skip_while(|w| *w != "lladdr").nth(1))
            .map(str::to_string)
    };
    assert!(
        macs(UPLINK_ADDR).is_some() && macs("203.0.113.3").is_some(),
        "{neigh}"
    );
    assert_ne!(macs(UPLINK_ADDR), macs("203.0.113.3"), "{neigh}");

    // Stopped, the daemon takes its macvlan away; the host's stack carries on.
    assert!(lab.terminate(daemon), "the daemon did not stop");
    assert!(try_ok(&mut lab.in_host(&["ip", "link", "show", "vsu-up0"])).is_err());
    assert_eq!(curl(&host, &whoami).as_deref(), Some("203.0.113.3"));
}
