//! Kernel-class TCP through vswitch: containers keep the kernel's default offloads (TSO,
//! checksum offload, GSO), so their TCP crosses the switch as GSO super-frames with partial
//! checksums. Checked end to end with real kernels on both sides: iperf3 both ways and UDP at a
//! fixed rate through L2 and NAT with two packet loops, 100 MB downloads checked by SHA-256
//! through L2, masquerade, a published port and hairpin, no checksum error counted by any
//! receiving kernel, and TCP over an uplink whose MTU is smaller than the containers' (PMTU
//! discovery by fragmentation-needed).
//!
//! Same lab as e2e.rs (unique prefix, everything removed on drop); needs root.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::*;
use std::process::Command;
use std::time::Duration;

/// TcpInCsumErrors + UdpInCsumErrors of the kernel in `ns` (absolute, history untouched).
fn csum_errors(lab: &Lab, ns: &str) -> u64 {
    let out = lab.exec_ok(ns, &["nstat", "-asz", "TcpInCsumErrors", "UdpInCsumErrors"]);
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            match (f.next(), f.next()) {
                (Some(name), Some(v)) if name.ends_with("CsumErrors") => v.parse::<u64>().ok(),
                _ => None,
            }
        })
        .sum()
}

fn tso_on(lab: &Lab, ns: &str) -> bool {
    let out = lab.exec_ok(ns, &["ethtool", "-k", "eth0"]);
    out.lines().any(|l| l.trim() == "tx-tcp-segmentation: on")
}

#[test]
fn default_offloads_through_l2_nat_dnat_and_hairpin() {
    if skip() {
        return;
    }
    let mut lab = Lab::new(PUBLISH_8080_TO_C2);
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let c2 = lab.container("c2", "bridge", "172.17.0.3");
    let inet = lab.ns("inet");
    assert!(
        tso_on(&lab, &c1) && tso_on(&lab, &c2),
        "containers keep TSO"
    );

    let dir = lab.dir.clone();
    lab.spawn(&c2, &dir, &["iperf3", "-s", "-p", "5201"]);
    lab.spawn(&inet, &dir, &["iperf3", "-s", "-p", "5202"]);
    std::thread::sleep(Duration::from_millis(500));
    for (what, ns, args) in [
        ("L2 c1->c2", &c1, vec!["-c", "172.17.0.3", "-p", "5201"]),
        (
            "L2 c2->c1",
            &c1,
            vec!["-c", "172.17.0.3", "-p", "5201", "-R"],
        ),
        ("NAT c1->internet", &c1, vec!["-c", INET_IP, "-p", "5202"]),
        (
            "NAT internet->c1",
            &c1,
            vec!["-c", INET_IP, "-p", "5202", "-R"],
        ),
    ] {
        let gbps = lab.iperf_gbps(ns, &args);
        eprintln!("iperf3 TCP {what}: {gbps:.2} Gbit/s");
        assert!(gbps > 0.0, "{what}");
    }
    let lost = lab.iperf_udp_lost(&c1, "172.17.0.3", "5201", "50M");
    eprintln!("iperf3 UDP 50 Mbit/s c1->c2: {lost:.3}% lost");
    assert!(lost < 1.0, "UDP at a fixed modest rate: {lost}% lost");

    // 100 MB, byte for byte, four ways.
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let big = www.join("big.bin");
    ok(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=100", "status=none"])
        .arg(format!("of={}", big.display())));
    lab.http_server(&c2, 80, &www);
    lab.http_server(&inet, 8000, &www);
    lab.download_checked(&c1, "http://172.17.0.3/big.bin", &big, "L2");
    lab.download_checked(
        &c1,
        &format!("http://{INET_IP}:8000/big.bin"),
        &big,
        "masquerade",
    );
    lab.download_checked(
        &inet,
        &format!("http://{UPLINK_IP}:8080/big.bin"),
        &big,
        "published port",
    );
    lab.download_checked(
        &c1,
        &format!("http://{UPLINK_IP}:8080/big.bin"),
        &big,
        "hairpin",
    );

    for ns in [&c1, &c2, &inet] {
        assert_eq!(csum_errors(&lab, ns), 0, "checksum errors counted in {ns}");
    }
    // The TCP crossed as super-frames, none refused.
    let stats = lab.json(&["stats"]);
    let ports = stats["ports"].as_array().unwrap();
    let gso_in: u64 = ports.iter().map(|p| p["rx_gso"].as_u64().unwrap()).sum();
    let bad: u64 = ports
        .iter()
        .map(|p| p["drops"]["bad_offload"].as_u64().unwrap_or(0))
        .sum();
    eprintln!("super-frames received: {gso_in}");
    assert!(gso_in > 1000, "super-frames crossed the switch: {stats:#}");
    assert_eq!(bad, 0, "{stats:#}");
}

#[test]
fn tcp_completes_over_an_uplink_with_a_smaller_mtu() {
    if skip() {
        return;
    }
    // The uplink's MTU is 1400, the containers' and the server's 1500: the containers' TSO
    // segments (1448 bytes of payload) do not fit, so the switch answers
    // fragmentation-needed and the senders' path MTU adapts.
    let mut lab = Lab::new("mtu = 1400\n");
    let c1 = lab.container("c1", "bridge", "172.17.0.2");
    let inet = lab.ns("inet");
    let dir = lab.dir.clone();
    lab.spawn(&inet, &dir, &["iperf3", "-s", "-p", "5202"]);
    std::thread::sleep(Duration::from_millis(500));
    let gbps = lab.iperf_gbps(&c1, &["-c", INET_IP, "-p", "5202"]);
    eprintln!("iperf3 TCP c1->internet over a 1400-byte uplink: {gbps:.2} Gbit/s");
    assert!(
        gbps > 0.01,
        "TCP must keep flowing once PMTU adapted: {gbps}"
    );

    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let file = www.join("f.bin");
    ok(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=20", "status=none"])
        .arg(format!("of={}", file.display())));
    lab.http_server(&inet, 8000, &www);
    lab.download_checked(
        &c1,
        &format!("http://{INET_IP}:8000/f.bin"),
        &file,
        "small uplink MTU",
    );
    let stats = lab.json(&["stats"]);
    let frag_needed: u64 = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["drops"]["frag_needed"].as_u64().unwrap_or(0))
        .sum();
    eprintln!("fragmentation-needed sent: {frag_needed}");
    assert!(
        frag_needed > 0,
        "the sender was told the path MTU: {stats:#}"
    );
    assert_eq!(csum_errors(&lab, &c1), 0);
    assert_eq!(csum_errors(&lab, &inet), 0);
}
