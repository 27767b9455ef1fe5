//! Hardening, end to end in namespaces: anti-spoofing against real kernels and raw sockets,
//! the control-socket client limit, and a bounded soak (short TCP connections and UDP flows
//! from several containers through NAT while one container floods random MACs and SYNs).
//!
//! The soak lasts 60 s by default; `VSWITCH_SOAK_SECS=N` lengthens it.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RAW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rawframes.py");
const SOAK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/soak_client.py");

/// Sum of one drop counter over the ports of `network` (or all ports for "").
fn drops(lab: &Lab, network: &str, reason: &str) -> u64 {
    let stats = lab.json(&["stats"]);
    stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| network.is_empty() || p["network"] == network)
        .filter_map(|p| p["drops"][reason].as_u64())
        .sum()
}

fn pings(lab: &Lab, ns: &str, args: &[&str]) -> bool {
    let mut cmd = vec!["ping", "-c", "2", "-i", "0.2", "-W", "1"];
    cmd.extend_from_slice(args);
    lab.exec(ns, &cmd).status.success()
}

#[test]
fn containers_cannot_spoof_each_other_unless_the_network_allows_it() {
    if skip() {
        return;
    }
    let mut lab = Lab::new("");
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let _c2 = lab.container("c2", "bridge", "172.17.0.3");
    let c3 = lab.container("c3", "bridge", "172.17.0.4");
    assert!(pings(&lab, &c1, &["172.17.0.3"]));

    // c1 adds c2's neighbour address .99 to itself and sends from it: dropped as spoofed_ip.
    lab.exec_ok(&c1, &["ip", "addr", "add", "172.17.0.99/16", "dev", "eth0"]);
    assert!(!pings(&lab, &c1, &["-I", "172.17.0.99", "172.17.0.3"]));
    assert!(drops(&lab, "bridge", "spoofed_ip") > 0);
    // ... and through the gateway to the outside too.
    assert!(!pings(&lab, &c1, &["-I", "172.17.0.99", INET_IP]));
    assert!(pings(&lab, &c1, &["-I", "172.17.0.2", INET_IP]));

    // A changed MAC: everything dropped as spoofed_mac until it is put back.
    let own = lab
        .exec_ok(&c1, &["cat", "/sys/class/net/eth0/address"])
        .trim()
        .to_string();
    lab.exec_ok(
        &c1,
        &["ip", "link", "set", "eth0", "address", "02:00:00:00:66:66"],
    );
    assert!(!pings(&lab, &c1, &["172.17.0.3"]));
    assert!(drops(&lab, "bridge", "spoofed_mac") > 0);
    lab.exec_ok(&c1, &["ip", "link", "set", "eth0", "address", &own]);
    assert!(pings(&lab, &c1, &["172.17.0.3"]));

    // ARP replies claiming c2's address never reach c3; c3 still reaches the real c2.
    lab.exec_ok(&c1, &["python3", RAW, "garp", "eth0", "172.17.0.3", "20"]);
    assert!(drops(&lab, "bridge", "spoofed_arp") >= 20);
    let neigh = lab.exec_ok(&c3, &["ip", "neigh", "show", "172.17.0.3"]);
    assert!(
        !neigh.contains(&own),
        "c3's ARP cache was poisoned: {neigh}"
    );
    assert!(pings(&lab, &c3, &["172.17.0.3"]));
    assert_eq!(
        lab.json(&["stats"])["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] != "up0" && p["network"] == "bridge")
            .filter(|p| {
                let d = &p["drops"];
                d["spoofed_ip"].as_u64().unwrap_or(0) + d["spoofed_mac"].as_u64().unwrap_or(0) > 0
            })
            .count(),
        1,
        "only c1's port counts spoofing drops"
    );

    // A network created with --anti-spoofing=false lets a container use any address.
    lab.cli(&[
        "network",
        "create",
        "loose",
        "--subnet",
        "172.30.0.0/24",
        "--anti-spoofing=false",
    ]);
    let l1 = lab.container("l1", "loose", "172.30.0.2");
    let _l2 = lab.container("l2", "loose", "172.30.0.3");
    lab.exec_ok(&l1, &["ip", "addr", "add", "172.30.0.99/24", "dev", "eth0"]);
    assert!(pings(&lab, &l1, &["-I", "172.30.0.99", "172.30.0.3"]));
    let inspect = lab.json(&["network", "inspect", "loose"]);
    assert_eq!(
        inspect[0]["Options"]["vswitch.anti_spoofing"], "false",
        "{inspect}"
    );
}

#[test]
fn control_socket_client_limit_refuses_extra_clients_and_recovers() {
    if skip() {
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let lab = Lab::new("[limits]\ncontrol_clients = 2\ncontrol_request_bytes = 1024\n");
    // Two clients that connect and say nothing hold both slots.
    let idle: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(lab.socket()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = UnixStream::connect(lab.socket()).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&third).read_line(&mut answer).unwrap();
    assert!(answer.contains("control_clients"), "{answer}");
    let _ = third.write_all(b"{\"cmd\":\"status\"}\n");
    drop(idle);
    // Slots free up as soon as those clients go; the request size limit is the configured one.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = run(Command::new(BIN)
            .arg("status")
            .arg("--socket")
            .arg(lab.socket()));
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "client slots never freed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut s = UnixStream::connect(lab.socket()).unwrap();
    let mut long = vec![b' '; 2000];
    long.push(b'\n');
    // The daemon answers after 1025 bytes and closes: the rest of the write may fail.
    let _ = s.write_all(&long);
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    assert!(answer.contains("longer than 1024"), "{answer}");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The daemon's resident memory may reach its packet rings (TPACKET_V3, 8 MiB per port and
/// worker, touched as traffic cycles through them) plus this much for everything else: code,
/// tables (bounded by the limits of the soak's topology), buffers.
const RSS_BASE_MIB: u64 = 64;
const RING_MIB: u64 = 8;
const WORKERS: u64 = 2;

#[test]
fn soak_short_flows_from_several_containers_survive_a_flooding_neighbour() {
    if skip() {
        return;
    }
    let secs: u64 = std::env::var("VSWITCH_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    // Short timeouts so the table drains within the test; a per-source limit well below the
    // table size, so the flooder fills its own share only. TIME_WAIT keeps Linux's 120 s: at or
    // near the server's own 60 s, a NAT port gets reused toward a server socket still in
    // TIME_WAIT for the previous connection, which answers the new SYN with a challenge ACK
    // (seen here at 5 s and at 61 s).
    let mut lab = Lab::new(
        "[conntrack]\nmax_entries = 32768\nmax_per_source = 6000\ntcp_syn_sent_secs = 5\n\
         tcp_syn_recv_secs = 5\ntcp_established_secs = 20\ntcp_fin_wait_secs = 5\n\
         tcp_close_wait_secs = 5\ntcp_last_ack_secs = 5\ntcp_time_wait_secs = 120\n\
         tcp_close_secs = 5\nudp_unreplied_secs = 5\nudp_assured_secs = 5\nicmp_secs = 5\n\
         [bridge]\nmax_macs_per_port = 64\n",
    );
    let inet = lab.ns("inet");
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    ok(Command::new("dd")
        .args(["if=/dev/urandom", "bs=64k", "count=1", "status=none"])
        .arg(format!("of={}", www.join("f.bin").display())));
    let want = sha256(&www.join("f.bin"));
    lab.http_server(&inet, 8000, &www);
    lab.spawn(&inet, &www, &["python3", SOAK, "serve-udp", "9000"]);
    lab.wait_udp_listener(&inet, 9000);

    let clients: Vec<String> = (2..5)
        .map(|i| lab.container(&format!("w{i}"), "bridge", &format!("172.17.0.{i}")))
        .collect();
    let flooder = lab.container("flood", "bridge", "172.17.0.66");
    // A second flooder on a network without anti-spoofing: its random MACs reach the FDB,
    // where max_macs_per_port caps them.
    lab.cli(&[
        "network",
        "create",
        "loose",
        "--subnet",
        "172.30.0.0/24",
        "--anti-spoofing=false",
    ]);
    let loose = lab.container("mflood", "loose", "172.30.0.66");
    for ns in clients.iter().chain([&flooder, &loose]) {
        // The switch reads whole, checksummed frames.
        lab.exec(
            ns,
            &[
                "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off",
            ],
        );
    }
    if let Ok(dir) = std::env::var("VSWITCH_SOAK_CAPTURE") {
        for ns in &clients {
            let file = format!("{dir}/{ns}.pcap");
            lab.spawn(
                ns,
                &lab.dir.clone(),
                &["tcpdump", "-i", "eth0", "-s", "128", "-w", &file],
            );
        }
        let inet = lab.ns("inet");
        let file = format!("{dir}/inet.pcap");
        lab.spawn(
            &inet,
            &lab.dir.clone(),
            &[
                "tcpdump",
                "-i",
                "eth0",
                "-s",
                "128",
                "-w",
                &file,
                "tcp port 8000",
            ],
        );
    }
    let daemon_pid = lab.daemon.as_ref().unwrap().id();
    let rss_start = rss_kib(daemon_pid);

    let spawn_in = |ns: &str, args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let secs_s = secs.to_string();
    let url = format!("http://{INET_IP}:8000/f.bin");
    let gw_mac = "02:42:ac:11:00:01";
    let floods = vec![
        spawn_in(
            &flooder,
            &[
                "python3",
                RAW,
                "flood",
                "eth0",
                "172.17.0.66",
                gw_mac,
                INET_IP,
                "8000",
                &secs_s,
                "3000",
            ],
        ),
        spawn_in(
            &loose,
            &[
                "python3",
                RAW,
                "flood",
                "eth0",
                "172.30.0.66",
                "02:42:ac:1e:00:01",
                INET_IP,
                "9999",
                &secs_s,
                "1000",
            ],
        ),
    ];
    let workers: Vec<_> = clients
        .iter()
        .map(|ns| {
            spawn_in(
                ns,
                &[
                    "python3", SOAK, "run", &secs_s, &url, &want, INET_IP, "9000",
                ],
            )
        })
        .collect();
    let mut peak_rss = rss_start;
    let deadline = Instant::now() + Duration::from_secs(secs + 60);
    let mut waiting: Vec<_> = workers.into_iter().chain(floods).collect();
    let mut results = Vec::new();
    while !waiting.is_empty() {
        assert!(Instant::now() < deadline, "soak clients did not finish");
        peak_rss = peak_rss.max(rss_kib(daemon_pid));
        std::thread::sleep(Duration::from_millis(500));
        let mut still = Vec::new();
        for mut c in waiting {
            match c.try_wait().unwrap() {
                Some(_) => results.push(c.wait_with_output().unwrap()),
                None => still.push(c),
            }
        }
        waiting = still;
    }
    let stats = lab.json(&["stats"]);
    for p in stats["ports"].as_array().unwrap() {
        eprintln!(
            "{} {}: drops {} kernel rx drops {} tx errors {}",
            p["network"], p["name"], p["drops"], p["rx_kernel_drops"], p["tx_errors"]
        );
    }
    eprintln!("bridge {}", stats["bridge"]);
    let mut totals = (0, 0);
    for out in &results {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        if v.get("http_ok").is_some() {
            assert_eq!(v["http_fail"], 0, "a client's download failed: {v}");
            assert_eq!(v["udp_fail"], 0, "a client's UDP flow failed: {v}");
            assert!(v["http_ok"].as_u64().unwrap() >= 10, "too little done: {v}");
            totals.0 += v["http_ok"].as_u64().unwrap();
            totals.1 += v["udp_ok"].as_u64().unwrap();
        } else {
            assert!(v["syns"].as_u64().unwrap() > 1000, "flood too small: {v}");
        }
    }
    eprintln!(
        "soak {secs}s: {} downloads and {} UDP exchanges intact; daemon RSS {} -> peak {} KiB",
        totals.0, totals.1, rss_start, peak_rss
    );
    // The flooders' drops are counted on their own ports.
    assert!(drops(&lab, "bridge", "spoofed_mac") > 1000);
    assert!(drops(&lab, "bridge", "ct_source_limit") > 0);
    let fdb = lab.json(&["fdb", "show"]);
    let loose_macs = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["network"] == "loose")
        .count();
    // Each packet loop keeps its own FDB (see README "Several packet loops"), so the cap of 64
    // holds per port and worker; `fdb show` lists the workers' tables merged.
    assert!(
        loose_macs <= 64 * WORKERS as usize,
        "FDB cap not kept: {loose_macs}"
    );
    let status = lab.json(&["stats"]);
    assert!(
        status["bridge"]["fdb_cap_reached"].as_u64().unwrap() > 0,
        "{status}"
    );

    // Once the load stops, every entry times out (longest timeout here: 120 s).
    let drained = Instant::now() + Duration::from_secs(150);
    loop {
        let ct = lab.json(&["conntrack", "ls"]);
        let n = ct["entries"].as_array().unwrap().len();
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < drained,
            "{n} conntrack entries left 150 s after the load stopped"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let ports = stats["ports"].as_array().unwrap().len() as u64;
    let bound_mib = RSS_BASE_MIB + ports * WORKERS * RING_MIB;
    assert!(
        peak_rss < bound_mib * 1024,
        "daemon RSS peaked at {peak_rss} KiB (bound {bound_mib} MiB for {ports} ports)"
    );
}
