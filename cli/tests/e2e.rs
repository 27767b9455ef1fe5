//! End-to-end tests in network namespaces: real kernels on both sides, real clients (ping, curl,
//! python's HTTP server, iperf3), the real daemon in between.
//!
//! Each lab has a unique prefix; "containers" and "the internet" are namespaces the lab creates,
//! the daemon runs inside its own namespace (so every link it makes lives there), and the lab's
//! `Drop` kills every process and deletes every namespace, even when an assertion failed.
//! Traffic goes only to addresses inside those namespaces. Needs root; skipped (with a message)
//! otherwise, and when `VSWITCH_SKIP_E2E=1`.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn two_containers_ping_download_and_fdb() {
    if skip() {
        return;
    }
    let mut lab = Lab::new("");
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let c2 = lab.container("c2", "bridge", "172.17.0.3");
    lab.exec_ok(
        &c1,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "172.17.0.3"],
    );
    lab.exec_ok(
        &c2,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "172.17.0.2"],
    );
    lab.exec_ok(
        &c1,
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "172.17.0.1"],
    );

    // A 12 MB file over HTTP, checked byte for byte.
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    ok(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=12", "status=none"])
        .arg(format!("of={}", www.join("big.bin").display())));
    lab.http_server(&c2, 8000, &www);
    lab.download_checked(
        &c1,
        "http://172.17.0.3:8000/big.bin",
        &www.join("big.bin"),
        "12 MB over L2",
    );

    // Both MACs are in the FDB, each on its container's port.
    let status = lab.json(&["status"]);
    let fdb = lab.json(&["fdb", "show"]);
    let on_bridge = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        // The host port is quiet: it has sent nothing to learn from.
        .filter(|c| c["network"] == "bridge" && c["name"] != "host.vswitch.internal");
    for c in on_bridge {
        let (mac, port) = (c["mac"].as_str().unwrap(), c["port"].as_str().unwrap());
        assert!(
            fdb.as_array()
                .unwrap()
                .iter()
                .any(|r| r["mac"] == mac && r["port"] == port && r["network"] == "bridge"),
            "{mac} on {port} missing from {fdb}"
        );
    }
    // Disconnect removes the link and the container's address is free again.
    lab.cli(&["network", "disconnect", "bridge", "c2"]);
    let links = ip(&["-n", &c2, "link", "show"]);
    assert!(
        !links.contains("eth0"),
        "container end left behind: {links}"
    );
    assert!(
        !lab.exec(&c1, &["ping", "-c", "1", "-W", "1", "172.17.0.3"])
            .status
            .success()
    );
}

#[test]
fn masquerade_published_port_and_icmp_errors() {
    if skip() {
        return;
    }
    let mut lab = Lab::new(PUBLISH_8080_TO_C2);
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let c2 = lab.container("c2", "bridge", "172.17.0.3");
    let inet = lab.ns("inet");
    let www = lab.dir.clone();
    lab.http_server(&inet, 8000, &www);
    lab.http_server(&c2, 80, &www);

    // SNAT: the far server sees the uplink address, and the reply comes back.
    assert_eq!(
        lab.curl(&c1, &format!("http://{INET_IP}:8000/whoami")),
        UPLINK_IP
    );
    lab.exec_ok(&c1, &["ping", "-c", "2", "-i", "0.2", "-W", "2", INET_IP]);
    // DNAT: a client outside reaches the container, which sees the client's real address.
    assert_eq!(
        lab.curl(&inet, &format!("http://{UPLINK_IP}:8080/whoami")),
        INET_IP
    );
    // Hairpin: a container reaches its neighbour through the published address.
    assert_eq!(
        lab.curl(&c1, &format!("http://{UPLINK_IP}:8080/whoami")),
        UPLINK_IP
    );
    // ICMP port unreachable from the far side reaches the container's socket translated: the
    // kernel matches the quoted (inner) header to the socket, so ECONNREFUSED proves both
    // the outer and the inner header were rewritten.
    let probe = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('203.0.113.1',9))\ns.send(b'x')\ntry:\n  s.recv(10)\n  print('answer')\nexcept ConnectionRefusedError:\n  print('refused')\nexcept socket.timeout:\n  print('timeout')\n";
    assert_eq!(
        lab.exec_ok(&c1, &["python3", "-c", probe]).trim(),
        "refused"
    );
    // The flows are visible in conntrack.
    let ct = lab.json(&["conntrack", "ls"]);
    let entries = ct["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["original"]["src"] == "172.17.0.2" && e["reply"]["dst"] == UPLINK_IP),
        "{ct}"
    );
    assert!(entries.iter().any(|e| e["original"]["dst"] == UPLINK_IP
        && e["original"]["dst_port"] == 8080
        && e["reply"]["src"] == "172.17.0.3"));
    // The first src= of a line is the original direction's source.
    let first_src = |l: &str| {
        l.split_whitespace()
            .find(|w| w.starts_with("src="))
            .map(str::to_string)
    };
    let mine = lab.cli(&["conntrack", "ls", "--src", "172.17.0.2"]);
    assert!(
        !mine.is_empty()
            && mine
                .lines()
                .all(|l| first_src(l).as_deref() == Some("src=172.17.0.2")),
        "{mine}"
    );
    let all = lab.cli(&["conntrack", "ls"]);
    assert!(
        all.lines()
            .any(|l| first_src(l).as_deref() == Some("src=203.0.113.1")),
        "{all}"
    );
    let text = lab.cli(&["conntrack", "ls", "-p", "tcp"]);
    assert!(text.contains("dport=8080"), "{text}");
    let status = lab.json(&["status"]);
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
}

#[test]
fn isolation_between_networks_and_with_icc_off() {
    if skip() {
        return;
    }
    let mut lab = Lab::new("");
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let o1 = lab.container("o1", "other", "172.18.0.2");
    let q1 = lab.container("q1", "quiet", "172.19.0.2");
    let q2 = lab.container("q2", "quiet", "172.19.0.3");
    lab.exec_ok(&o1, &["ping", "-c", "1", "-W", "2", "172.18.0.1"]);
    assert!(
        !lab.exec(
            &o1,
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", "172.17.0.2"]
        )
        .status
        .success(),
        "networks must not route to each other"
    );
    assert!(
        !lab.exec(
            &c1,
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", "172.18.0.2"]
        )
        .status
        .success()
    );
    assert!(
        !lab.exec(
            &q1,
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", "172.19.0.3"]
        )
        .status
        .success(),
        "icc=false"
    );
    lab.exec_ok(&q1, &["ping", "-c", "1", "-W", "2", INET_IP]);
    lab.exec_ok(&q2, &["ping", "-c", "1", "-W", "2", INET_IP]);
    let stats = lab.json(&["stats"]);
    let drops = |port_net: &str, reason: &str| -> u64 {
        stats["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["network"] == port_net)
            .filter_map(|p| p["drops"][reason].as_u64())
            .sum()
    };
    assert!(drops("other", "inter_network") > 0, "{stats}");
    assert!(drops("quiet", "icc_blocked") > 0, "{stats}");
}

#[test]
fn iperf3_through_the_switch_and_nat() {
    if skip() {
        return;
    }
    let mut lab = Lab::new("");
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let c2 = lab.container("c2", "bridge", "172.17.0.3");
    let inet = lab.ns("inet");
    let dir = lab.dir.clone();
    lab.spawn(&c2, &dir, &["iperf3", "-s", "-p", "5201"]);
    lab.spawn(&inet, &dir, &["iperf3", "-s", "-p", "5202"]);
    std::thread::sleep(Duration::from_millis(500));
    let gbps = lab.iperf_gbps(&c1, &["-c", "172.17.0.3", "-p", "5201"]);
    eprintln!("iperf3 TCP container<->container: {gbps:.2} Gbit/s");
    assert!(gbps > 0.0);
    let gbps = lab.iperf_gbps(&c1, &["-c", INET_IP, "-p", "5202"]);
    eprintln!("iperf3 TCP container->internet (NAT): {gbps:.2} Gbit/s");
    assert!(gbps > 0.0);
    // The masqueraded stream's segments were served from the packet loops' flow caches.
    let stats = lab.json(&["stats"]);
    let hits: u64 = stats["flow_cache"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["hits"].as_u64())
        .sum();
    assert!(hits > 1000, "flow cache: {}", stats["flow_cache"]);
    let lost = lab.iperf_udp_lost(&c1, "172.17.0.3", "5201", "10M");
    eprintln!("iperf3 UDP 10 Mbit/s: {lost:.3}% lost");
    assert!(
        lost < 1.0,
        "UDP at a modest rate must not lose packets: {lost}%"
    );
}

#[test]
fn restart_removes_links_and_traffic_resumes_after_reconnect() {
    if skip() {
        return;
    }
    let mut lab = Lab::new("");
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let c2 = lab.container("c2", "bridge", "172.17.0.3");
    lab.exec_ok(&c1, &["ping", "-c", "1", "-W", "2", "172.17.0.3"]);
    lab.stop_daemon();
    let sw_links = ip(&["-n", &lab.ns("sw"), "link", "show"]);
    assert!(
        !sw_links.contains("vsw"),
        "shutdown must remove the links it created: {sw_links}"
    );
    assert!(!lab.socket().exists(), "socket removed on shutdown");
    lab.start_daemon();
    for (tag, addr) in [("c1", "172.17.0.2"), ("c2", "172.17.0.3")] {
        let path = format!("/run/netns/{}", lab.ns(tag));
        lab.cli(&[
            "network", "connect", "bridge", "--netns", &path, "--name", tag, "--ip", addr,
        ]);
    }
    lab.exec_ok(
        &c2,
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "172.17.0.2"],
    );
    let _ = c1;
}

#[test]
fn control_socket_survives_garbage_and_bad_requests() {
    if skip() {
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    let lab = Lab::new("");
    let mode = std::fs::metadata(lab.socket())
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o600, "control socket must be private");
    let ask = |line: &[u8]| -> serde_json::Value {
        let mut s = std::os::unix::net::UnixStream::connect(lab.socket()).unwrap();
        s.write_all(line).unwrap();
        s.write_all(b"\n").unwrap();
        let mut answer = String::new();
        BufReader::new(&s).read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    };
    for garbage in [
        &b"not json"[..],
        b"{\"cmd\":\"launch_missiles\"}",
        b"\xff\xfe",
        b"{\"cmd\":\"connect\",\"network\":\"nope\",\"netns\":\"/nonexistent\"}",
    ] {
        let v = ask(garbage);
        assert_eq!(v["ok"], false, "{v}");
        assert!(!v["error"].as_str().unwrap_or_default().is_empty());
    }
    // Fault injection is for tests that ask for it at start.
    let v = ask(b"{\"cmd\":\"fault_inject\",\"action\":\"panic_loop\"}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("fault injection is off"),
        "{v}"
    );
    let huge = vec![b'x'; 100_000];
    assert_eq!(ask(&huge)["ok"], false);
    assert_eq!(
        ask(b"{\"cmd\":\"status\"}")["ok"],
        true,
        "daemon still serves after garbage"
    );
    // The CLI turns a daemon error into a non-zero exit with the message.
    let out = run(Command::new(BIN)
        .args(["network", "connect", "nope", "--netns", "/run/netns/none"])
        .arg("--socket")
        .arg(lab.socket()));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn networks_published_ports_and_state_across_kill_9() {
    if skip() {
        return;
    }
    let mut lab = Lab::new("");
    // network create: the next free /16 of the pool (the topology file took .17, .18 and .19).
    let id = lab.cli(&["network", "create", "web", "--label", "team=payments"]);
    assert_eq!(id.trim().len(), 64, "a docker-style id: {id}");
    let bad = run(Command::new(BIN)
        .args(["network", "create", "clash", "--subnet", "172.20.5.0/24"])
        .arg("--socket")
        .arg(lab.socket()));
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("overlaps"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = run(Command::new(BIN)
        .args(["network", "create", "x", "--subnet", "10.0.0.0/33"])
        .arg("--socket")
        .arg(lab.socket()));
    assert!(!bad.status.success(), "malformed CIDR refused by the CLI");
    let ls = lab.cli(&["network", "ls"]);
    assert!(ls.contains("web") && ls.contains("172.20.0.0/16"), "{ls}");

    let w1 = lab.container("w1", "web", "172.20.0.10");
    let w2 = lab.netns("w2");
    lab.cli(&[
        "network",
        "connect",
        "web",
        "--netns",
        &format!("/run/netns/{w2}"),
        "--name",
        "w2",
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.cli(&["network", "inspect", "web"])).unwrap();
    let net = &inspect[0];
    assert_eq!(net["Name"], "web");
    assert_eq!(net["IPAM"]["Config"][0]["Subnet"], "172.20.0.0/16");
    assert_eq!(net["IPAM"]["Config"][0]["Gateway"], "172.20.0.1");
    assert_eq!(net["Labels"]["team"], "payments");
    assert_eq!(net["Containers"]["w1"]["IPv4Address"], "172.20.0.10/16");
    assert_eq!(
        net["Containers"]["w2"]["IPv4Address"], "172.20.0.2/16",
        "lowest free address"
    );
    assert_eq!(net["Containers"]["w1"]["MacAddress"], "02:42:ac:14:00:0a");
    lab.exec_ok(&w1, &["ping", "-c", "1", "-W", "2", "172.20.0.2"]);
    let bad = run(Command::new(BIN)
        .args([
            "network",
            "connect",
            "web",
            "--netns",
            &format!("/run/netns/{w2}"),
            "--name",
            "w3",
            "--ip",
            "172.20.0.10",
        ])
        .arg("--socket")
        .arg(lab.socket()));
    assert!(!bad.status.success(), "an address is never given twice");

    // Publish at run time; the client's address reaches the container; unpublish stops it.
    let www = lab.dir.clone();
    lab.http_server(&w2, 80, &www);
    let inet = lab.ns("inet");
    lab.cli(&["port", "publish", "web", "w2", "9090:80/tcp"]);
    assert_eq!(
        lab.curl(&inet, &format!("http://{UPLINK_IP}:9090/whoami")),
        INET_IP
    );
    let dup = run(Command::new(BIN)
        .args(["port", "publish", "web", "w1", "9090:80"])
        .arg("--socket")
        .arg(lab.socket()));
    assert!(!dup.status.success(), "a host port goes to one container");
    assert!(lab.cli(&["port", "ls"]).contains("9090"));
    lab.cli(&["port", "rm", "9090/tcp"]);
    assert!(
        !lab.exec(
            &inet,
            &[
                "curl",
                "-sS",
                "--max-time",
                "2",
                &format!("http://{UPLINK_IP}:9090/whoami")
            ]
        )
        .status
        .success()
    );
    lab.cli(&["port", "publish", "web", "w2", "9090:80/tcp"]);

    let rm = run(Command::new(BIN)
        .args(["network", "rm", "web"])
        .arg("--socket")
        .arg(lab.socket()));
    assert!(!rm.status.success(), "a network with containers stays");

    // A container end left as a daemon killed mid-connect leaves it: no address yet.
    let half = lab.netns("half");
    lab.cli(&[
        "network",
        "connect",
        "web",
        "--netns",
        &format!("/run/netns/{half}"),
        "--name",
        "half",
    ]);
    lab.exec_ok(&half, &["ip", "addr", "flush", "dev", "eth0"]);

    // A loop of connects and disconnects, killed with SIGKILL part-way.
    let mut extra = Vec::new();
    for i in 0..6 {
        extra.push(lab.netns(&format!("k{i}")));
    }
    let socket = lab.socket();
    let churn_ns = extra.clone();
    let churn = std::thread::spawn(move || {
        for round in 0..20 {
            for ns in &churn_ns {
                let name = ns.rsplit('-').next().unwrap_or("k").to_string();
                let path = format!("/run/netns/{ns}");
                let verb: &[&str] = if round % 2 == 0 {
                    &[
                        "network", "connect", "web", "--netns", &path, "--name", &name,
                    ]
                } else {
                    &["network", "disconnect", "web", &name]
                };
                let _ = Command::new(BIN)
                    .args(verb)
                    .arg("--socket")
                    .arg(&socket)
                    .output();
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    let pid = lab.daemon.as_ref().unwrap().id();
    ok(Command::new("kill").args(["-KILL", &pid.to_string()]));
    let _ = lab.daemon.take().map(|mut d| d.wait());
    let _ = churn.join();
    let _ = std::fs::remove_file(lab.socket());
    lab.start_daemon();

    // After the restart: no address twice, every lease has its link, and the survivors talk.
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.cli(&["network", "inspect", "web"])).unwrap();
    let containers = inspect[0]["Containers"].as_object().unwrap();
    let mut ips: Vec<&str> = containers
        .values()
        .map(|c| c["IPv4Address"].as_str().unwrap())
        .collect();
    let n = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), n, "duplicate address after kill -9: {inspect}");
    let status = lab.json(&["status"]);
    let attached = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        // `network inspect` lists containers, not the network's own host port.
        .filter(|c| c["network"] == "web" && c["name"] != "host.vswitch.internal")
        .count();
    assert_eq!(attached, n, "every lease re-attached: {status}");
    assert!(
        containers.get("half").is_none(),
        "a half-made container's lease is released: {inspect}"
    );
    assert!(
        lab.daemon_log().contains("its connect did not finish"),
        "{}",
        lab.daemon_log()
    );
    lab.exec_ok(
        &w1,
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "172.20.0.2"],
    );
    lab.exec_ok(&w1, &["ping", "-c", "1", "-W", "2", "172.20.0.1"]);
    assert_eq!(
        lab.curl(&inet, &format!("http://{UPLINK_IP}:9090/whoami")),
        INET_IP,
        "published port restored"
    );
    for c in containers.values() {
        let name = c["Name"].as_str().unwrap();
        if name.starts_with('k') {
            lab.exec_ok(&lab.ns(name), &["ping", "-c", "1", "-W", "2", "172.20.0.1"]);
        }
    }
}

#[test]
fn embedded_dns_answers_names_on_the_same_network_with_dig() {
    if skip() {
        return;
    }
    let mut lab = Lab::new(&format!("\n[dns]\nupstream = [\"{INET_IP}\"]\n"));
    let inet = lab.ns("inet");
    let dir = lab.dir.clone();
    let upstream = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dns_upstream.py");
    lab.spawn(&inet, &dir, &["python3", upstream, "53"]);
    lab.wait_udp_listener(&inet, 53);
    lab.cli(&["network", "create", "web"]);
    let w1 = lab.container("w1", "web", "172.20.0.10");
    lab.container("w2", "web", "172.20.0.11");
    let o1 = lab.container("o1", "other", "172.18.0.2");
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let dig = |ns: &str, server: &str, args: &[&str]| -> String {
        let mut cmd = vec!["dig", "+time=2", "+tries=2"];
        let at = format!("@{server}");
        cmd.push(&at);
        cmd.extend_from_slice(args);
        String::from_utf8_lossy(&lab.exec(ns, &cmd).stdout).into_owned()
    };
    assert_eq!(
        dig(&w1, "172.20.0.1", &["+short", "w2"]).trim(),
        "172.20.0.11"
    );
    assert_eq!(
        dig(&w1, "172.20.0.1", &["+short", "W2.vswitch.internal"]).trim(),
        "172.20.0.11"
    );
    assert!(dig(&w1, "172.20.0.1", &["nope.vswitch.internal"]).contains("status: NXDOMAIN"));
    // Other names go to the upstream resolver (the stand-in answers everything with 192.0.2.123).
    assert_eq!(
        dig(&w1, "172.20.0.1", &["+short", "example.test"]).trim(),
        "192.0.2.123"
    );
    // Never the names of another network's containers.
    assert!(dig(&o1, "172.18.0.1", &["w2.vswitch.internal"]).contains("status: NXDOMAIN"));
    // The default bridge has no embedded DNS, as in Docker.
    assert!(
        !lab.exec(&c1, &["dig", "+time=1", "+tries=1", "@172.17.0.1", "w2"])
            .status
            .success()
    );
    // A disconnected container's name goes away.
    lab.cli(&["network", "disconnect", "web", "w2"]);
    assert!(dig(&w1, "172.20.0.1", &["w2.vswitch.internal"]).contains("status: NXDOMAIN"));
}

#[test]
fn metrics_are_served_in_prometheus_text_when_asked_for() {
    if skip() {
        return;
    }
    let mut lab = Lab::with_daemon_args("", &["--metrics", "127.0.0.1:9469"]);
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    lab.exec_ok(
        &c1,
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "172.17.0.1"],
    );
    let sw = lab.ns("sw");
    let text = lab.exec_ok(
        &sw,
        &["curl", "-sS", "-m", "5", "http://127.0.0.1:9469/metrics"],
    );
    let port = lab.json(&["status"])["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c1")
        .map(|c| c["port"].as_str().unwrap().to_string())
        .unwrap();
    let rx = format!("vswitch_port_rx_packets_total{{port=\"{port}\",network=\"bridge\"}} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&rx))
        .unwrap_or_else(|| panic!("{text}"));
    let n: f64 = line[rx.len()..].trim().parse().unwrap();
    assert!(n >= 2.0, "{line}");
    assert!(
        text.contains("vswitch_bridge_events_total{event=\"echo_replies_sent\"} 2"),
        "{text}"
    );
    assert!(text.contains("vswitch_workers 2"), "{text}");
    // The control requests so far (the connect) are counted; the loops did work.
    assert!(
        text.contains("vswitch_control_requests_total{cmd=\"connect\",result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vswitch_loop_frames_total{worker=\"0\"}"),
        "{text}"
    );
    // `stats --json` has the same numbers.
    let stats = lab.json(&["stats"]);
    let frames: u64 = stats["loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["frames"].as_u64().unwrap())
        .sum();
    assert!(frames >= 4, "{stats}");
    assert!(
        stats["control_requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["cmd"] == "connect")
    );
    assert!(text.ends_with("# EOF\n"));
    eprintln!("$ curl http://127.0.0.1:9469/metrics\n{text}");
    // Anything but GET /metrics is not found.
    let code = lab.exec_ok(
        &sw,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:9469/",
        ],
    );
    assert_eq!(code, "404");
}
