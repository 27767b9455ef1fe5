//! Smoke tests of the benchmarks: a very short pipeline run through `vswitch bench` (always), and a short veth lab run
//! when root with iperf3 installed (skipped with a message otherwise, and when
//! `VSWITCH_SKIP_E2E=1`). They check the JSON shape and that figures are positive, not speed.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_vswitch-bench");

/// The product binary built beside the bench (`cargo test --workspace` builds both): its
/// `vswitch bench ...` runs this crate's binary.
fn vswitch() -> std::path::PathBuf {
    let path = std::path::Path::new(BENCH).with_file_name("vswitch");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p vswitch), or run the whole suite (scripts/test.sh)",
        path.display()
    );
    path
}
/// One bench at a time: on two cores, they would skew each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_json(program: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

fn positive_stat(v: &Value, what: &str) {
    let (med, min, max) = (
        v["median"].as_f64().unwrap(),
        v["min"].as_f64().unwrap(),
        v["max"].as_f64().unwrap(),
    );
    assert!(med > 0.0 && min > 0.0, "{what}: {v}");
    assert!(min <= med && med <= max, "{what}: {v}");
}

#[test]
fn pipeline_bench_json() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("vsbench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plot = dir.join("p.svg");
    // Through the product binary's `vswitch bench`, as a user runs it.
    let v = run_json(
        &vswitch(),
        &[
            "bench",
            "pipeline",
            "--seconds",
            "0.2",
            "--workers",
            "2",
            "--json",
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    assert_eq!(v["bench"], "pipeline");
    assert!(v["machine"]["cpu"].is_string());
    let results = v["results"].as_array().unwrap();
    // (l2 × 2 sizes + nat × 3 flow counts × 2 sizes) × 2 IP versions + pcap, each with 1 and
    // 2 workers.
    assert_eq!(results.len(), 17 * 2, "{v:#}");
    for r in results {
        let case = r["case"].as_str().unwrap();
        assert!(["l2", "nat", "pcap"].contains(&case), "{r}");
        for f in ["mpps", "gbps", "ns_per_packet"] {
            positive_stat(&r[f], &format!("{case} {f}"));
        }
        assert!(r["packets"].as_u64().unwrap() > 0, "{r}");
        if case != "pcap" {
            assert_eq!(r["dropped_share"].as_f64().unwrap(), 0.0, "{r}");
        }
    }
    for family in ["ipv4", "ipv6"] {
        for flows in [1, 1000, 100_000] {
            assert!(
                results.iter().any(|r| r["case"] == "nat"
                    && r["family"] == family
                    && r["flows"] == flows
                    && r["frame_bytes"] == 64.0),
                "{family} nat {flows} flows missing"
            );
        }
        assert!(
            results
                .iter()
                .any(|r| r["case"] == "l2" && r["family"] == family && r["frame_bytes"] == 1500.0),
            "{family} l2 missing"
        );
    }
    let scaling = v["scaling"].as_array().unwrap();
    assert_eq!(scaling.len(), 17);
    assert!(scaling.iter().all(|s| s["ratio"].as_f64().unwrap() > 0.0));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("scaling"), "plot");
    let _ = std::fs::remove_dir_all(&dir);
}

fn skip_veth() -> Option<String> {
    if std::env::var("VSWITCH_SKIP_E2E").is_ok_and(|v| v == "1") {
        return Some("VSWITCH_SKIP_E2E=1".into());
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        return Some("needs root (network namespaces)".into());
    }
    for tool in ["iperf3", "ethtool"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    // The kernel's NAT peer, and the internet namespaces' counting drop rules.
    let nat_tool = ["iptables", "nft"].iter().any(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !nat_tool {
        return Some("neither iptables nor nft is installed".into());
    }
    None
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn veth_bench_json_and_cleanup() {
    if let Some(why) = skip_veth() {
        eprintln!("skipping bench veth smoke test: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let v = run_json(
        std::path::Path::new(BENCH),
        &["veth", "--seconds", "1", "--json"],
    );
    assert_eq!(v["bench"], "veth");
    let prefix = v["prefix"].as_str().unwrap();
    assert!(prefix.starts_with("vsb"), "{prefix}");
    let rows = v["rows"].as_array().unwrap();
    let skipped = v["skipped"].as_array().unwrap();
    assert!(v["ovs"].is_string(), "{v:#}");
    let nat = format!("linux-router+{}", v["nat_tool"].as_str().unwrap());
    // (test, system, rows expected, may be skipped): the kernel rows twice (defaults, off).
    for (test, system, want, optional) in [
        ("udp_64B_pps", "vswitch", 1, false),
        ("udp_64B_pps", "linux-bridge", 2, false),
        ("udp_64B_pps", "raw-veth", 1, false),
        ("udp_64B_pps", "ovs-netdev", 1, true),
        ("tcp_gbps", "vswitch", 1, false),
        ("tcp_gbps", "linux-bridge", 2, false),
        ("tcp_gbps", "raw-veth", 1, false),
        ("tcp_gbps", "ovs-netdev", 1, true),
        ("tcp_gbps", "ovs-netdev+tso", 1, true),
        ("nat_tcp_gbps", "vswitch", 1, false),
        ("nat_tcp_gbps", nat.as_str(), 2, false),
        ("nat_udp_64B_pps", "vswitch", 1, false),
        ("nat_udp_64B_pps", nat.as_str(), 2, false),
        // vswitch's needs etcd (and is skipped without it); the kernel's only iproute2.
        ("overlay_tcp_gbps", "vswitch", 1, true),
        ("overlay_tcp_gbps", "linux-vxlan+bridge", 1, false),
    ] {
        let found: Vec<&Value> = rows
            .iter()
            .filter(|r| r["test"] == test && r["system"] == system)
            .collect();
        let skip = skipped
            .iter()
            .find(|s| s["test"] == test && s["system"] == system);
        if optional && found.is_empty() {
            let skip = skip.unwrap_or_else(|| panic!("{test} {system}: neither row nor skip"));
            assert!(!skip["reason"].as_str().unwrap().is_empty(), "{skip}");
            eprintln!("{test} {system} skipped: {}", skip["reason"]);
            continue;
        }
        assert!(skip.is_none(), "{test} {system}: row and skip: {v:#}");
        assert_eq!(found.len(), want, "{test} {system}: {v:#}");
        for r in found {
            assert!(r["value"]["median"].as_f64().unwrap() > 0.0, "{r}");
        }
        if system == "vswitch" {
            assert_eq!(
                found_offloads(rows, test, system),
                ["kernel defaults"],
                "{v:#}"
            );
        }
    }
    // The NAT UDP rows: their flow count, and one note each (tracked flows, strays, ICMP).
    let flows = v["nat_udp_flows"].as_u64().unwrap();
    assert!(flows >= 1, "{v:#}");
    for r in rows.iter().filter(|r| r["test"] == "nat_udp_64B_pps") {
        assert_eq!(r["flows"].as_u64(), Some(flows), "{r}");
        assert!(r["offered"].as_f64().unwrap() > 0.0, "{r}");
    }
    // One note per NAT UDP row and per overlay row (iperf3's retransmissions).
    let notes: Vec<&str> = v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let overlay_rows = rows
        .iter()
        .filter(|r| r["test"] == "overlay_tcp_gbps")
        .count();
    assert_eq!(notes.len(), 3 + overlay_rows, "{v:#}");
    let nat_notes = notes
        .iter()
        .filter(|n| n.contains("arrived not masqueraded"))
        .count();
    assert_eq!(nat_notes, 3, "{v:#}");
    assert!(v["overlay"].is_string(), "{v:#}");
    // vswitch against every other row of its test (one vswitch row per test).
    let ratios = v["ratios"].as_array().unwrap();
    let vswitch_rows = rows.iter().filter(|r| r["system"] == "vswitch").count();
    assert_eq!(ratios.len(), rows.len() - vswitch_rows, "{v:#}");
    if vswitch_rows == 5 {
        assert!(
            ratios
                .iter()
                .any(|r| r["test"] == "overlay_tcp_gbps" && r["system"] == "linux-vxlan+bridge"),
            "{v:#}"
        );
    }
    assert!(
        ratios
            .iter()
            .any(|r| r["test"] == "nat_udp_64B_pps" && r["system"] == nat.as_str()),
        "{v:#}"
    );
    for r in ratios {
        assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
        assert_ne!(r["system"], "vswitch", "{r}");
    }
    let left = netns_list();
    assert!(
        !left.lines().any(|l| l.starts_with(&format!("{prefix}-"))),
        "namespaces left behind:\n{left}"
    );
    // The lab's temp dir (the daemons' state, etcd's data) went with it.
    let dir = std::env::temp_dir().join(format!("{prefix}-state"));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

fn found_offloads<'a>(rows: &'a [Value], test: &str, system: &str) -> Vec<&'a str> {
    rows.iter()
        .filter(|r| r["test"] == test && r["system"] == system)
        .map(|r| r["offloads"].as_str().unwrap())
        .collect()
}

/// A few hundred containers through the daemon (debug build, so generous bounds; the benchmark
/// carries the real figures): attaching the last costs about what the first did, memory per
/// port stays small, the first two containers keep talking, and nothing is left behind.
#[test]
fn scale_bench_flat_attach_and_small_ports() {
    if let Some(why) = skip_veth() {
        eprintln!("skipping bench scale test: {why}");
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let v = run_json(
        &vswitch(),
        &[
            "bench",
            "scale",
            "--containers",
            "300",
            "--churn",
            "30",
            "--steps",
            "3",
            "--no-bridge",
            "--json",
        ],
    );
    assert_eq!(v["bench"], "scale");
    let side = &v["sides"][0];
    assert_eq!(side["system"], "vswitch", "{v:#}");
    let steps = side["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{v:#}");
    assert_eq!(steps[2]["last"], 300);
    let first = steps[0]["attach_ms"]["median"].as_f64().unwrap();
    let last = steps[2]["attach_ms"]["median"].as_f64().unwrap();
    // Flat: before the fixes of #20 the 300th attach took ~20× the first.
    assert!(
        last <= 2.0 * first + 5.0,
        "attach time grows with the containers: first {first:.1} ms, last {last:.1} ms: {v:#}"
    );
    let per_port = side["rss_per_container_kb"].as_f64().unwrap();
    assert!(
        per_port < 512.0,
        "{per_port:.0} KB of daemon RSS per port: {v:#}"
    );
    let after = &side["ping_after"];
    assert_eq!(
        after["sent"], after["received"],
        "pings lost after the churn: {v:#}"
    );
    assert!(
        side["idle_softirq_pct"].as_f64().unwrap() < 10.0,
        "idle ports keep the CPUs busy: {v:#}"
    );
    assert!(side["churn_attach_ms"].is_object(), "{v:#}");
    let prefix = v["prefix"].as_str().unwrap();
    assert!(
        !netns_list().contains(&format!("{prefix}-")),
        "namespaces left behind: {}",
        netns_list()
    );
}
