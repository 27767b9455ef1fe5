//! Dual-stack networks end to end in namespaces: containers with IPv6 addresses from IPAM ping
//! each other and the gateway over IPv6, get a router advertisement (a default route from it
//! appears), resolve each other's AAAA records, reach an "internet" namespace through NAT66
//! (SHA-256-checked download, the server sees the uplink's address) and are reached on a
//! published port by an IPv6 client whose address they see; a rogue router advertisement and a
//! spoofed neighbour advertisement from a container are dropped and counted while everything
//! else keeps working.
//!
//! Root only (skipped otherwise, and with VSWITCH_SKIP_E2E=1); only namespaces the lab makes.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::*;
use std::process::Command;
use std::time::Duration;

/// Connects a new namespace `tag` to web6; the namespace and the connect answer.
fn connect(lab: &mut Lab, tag: &str) -> (String, serde_json::Value) {
    let ns = lab.netns(tag);
    let path = format!("/run/netns/{ns}");
    let c = lab.json(&[
        "network", "connect", "web6", "--netns", &path, "--name", tag,
    ]);
    (ns, c)
}

fn drops(lab: &Lab, reason: &str) -> u64 {
    lab.json(&["stats"])["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["drops"][reason].as_u64())
        .sum()
}

#[test]
fn dual_stack_containers_ping_resolve_and_reach_the_internet_over_ipv6() {
    if skip() {
        return;
    }
    let mut lab = Lab::dual_stack(&[]);
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.cli(&["network", "inspect", "web6"])).unwrap();
    let net = &inspect[0];
    assert_eq!(net["EnableIPv6"], true, "{net}");
    assert_eq!(net["IPAM"]["Config"][1]["Subnet"], "fd00:89::/64", "{net}");
    assert_eq!(net["IPAM"]["Config"][1]["Gateway"], "fd00:89::1", "{net}");

    let (c1, a1) = connect(&mut lab, "c1");
    let (c2, a2) = connect(&mut lab, "c2");
    assert_eq!(a1["ip6"], "fd00:89::2", "{a1}");
    assert_eq!(a2["ip6"], "fd00:89::3", "{a2}");
    let addrs = lab.exec_ok(&c1, &["ip", "-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("fd00:89::2/64"), "{addrs}");

    let ping6 = ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2"];
    let out = lab.exec_ok(&c1, &[&ping6[..], &["fd00:89::3"]].concat());
    // The host reaches its containers over IPv6 too, through the host port.
    let sw = lab.ns("sw");
    lab.exec_ok(&sw, &[&ping6[..], &["fd00:89::2"]].concat());
    // What the README shows (run with --nocapture to see it).
    eprintln!(
        "$ vswitch network inspect web6\n{}",
        lab.cli(&["network", "inspect", "web6"])
    );
    eprintln!("c1$ ip -6 addr show dev eth0\n{addrs}\nc1$ ping -6 fd00:89::3\n{out}");
    lab.exec_ok(&c2, &[&ping6[..], &["fd00:89::2"]].concat());
    lab.exec_ok(&c1, &[&ping6[..], &["fd00:89::1"]].concat());

    // The router advertisement the container's kernel solicited gives it a default route.
    let from_ra = testkit::lab::wait_until(Duration::from_secs(15), || {
        let out = lab.exec(&c1, &["ip", "-6", "route", "show", "default"]);
        String::from_utf8_lossy(&out.stdout).contains("proto ra")
    });
    let routes = lab.exec_ok(&c1, &["ip", "-6", "route"]);
    assert!(
        from_ra,
        "no default route from a router advertisement:\n{routes}"
    );
    eprintln!("c1$ ip -6 route\n{routes}");

    // Names resolve to AAAA records too.
    let aaaa = lab.exec_ok(
        &c1,
        &[
            "dig",
            "+short",
            "+time=2",
            "+tries=2",
            "AAAA",
            "c2",
            "@10.89.0.1",
        ],
    );
    assert_eq!(aaaa.trim(), "fd00:89::3");
    eprintln!("c1$ dig +short AAAA c2 @10.89.0.1\n{aaaa}");
    // ... over IPv6 too, at the gateway's IPv6 address (what the RA announces as DNS server).
    let aaaa6 = lab.exec_ok(
        &c1,
        &[
            "dig",
            "+short",
            "+time=2",
            "+tries=2",
            "AAAA",
            "c2",
            "@fd00:89::1",
        ],
    );
    assert_eq!(aaaa6.trim(), "fd00:89::3");

    // Out through NAT66: the server sees the uplink's address; a download arrives whole.
    let www = lab.dir.join("www6");
    std::fs::create_dir_all(&www).unwrap();
    ok(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=8", "status=none"])
        .arg(format!("of={}", www.join("big.bin").display())));
    let inet = lab.ns("inet");
    lab.http_server_at(&inet, "::", 8000, &www);
    let seen = lab.curl(&c1, &format!("http://[{INET6}]:8000/whoami"));
    assert_eq!(seen.trim(), UPLINK6, "NAT66 hides the container's address");
    eprintln!("c1$ curl http://[{INET6}]:8000/whoami\n{seen}");
    lab.download_checked(
        &c1,
        &format!("http://[{INET6}]:8000/big.bin"),
        &www.join("big.bin"),
        "8 MB over NAT66",
    );
    let ct = lab.json(&["conntrack", "ls"]);
    assert!(ct.to_string().contains("fd00:89::2"), "{ct}");

    // A published port reached by an IPv6 client, whose address the container sees.
    lab.http_server_at(&c2, "::", 80, &www);
    lab.cli(&["port", "publish", "web6", "c2", "8080:80"]);
    let seen = lab.curl(&inet, &format!("http://[{UPLINK6}]:8080/whoami"));
    assert_eq!(seen.trim(), INET6, "the client's address is kept");

    // A rogue router and a neighbour-cache poisoner in c1: dropped, counted, harmless.
    let raw = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rawframes.py");
    lab.exec_ok(&c1, &["python3", raw, "rogue-ra", "eth0", "5"]);
    lab.exec_ok(
        &c1,
        &["python3", raw, "spoof-na", "eth0", "fd00:89::3", "5"],
    );
    assert!(drops(&lab, "ra_guard") >= 5, "{}", lab.cli(&["stats"]));
    assert!(drops(&lab, "spoofed_nd") >= 5, "{}", lab.cli(&["stats"]));
    eprintln!("$ vswitch stats\n{}", lab.cli(&["stats"]));
    eprintln!("$ vswitch conntrack ls\n{}", lab.cli(&["conntrack", "ls"]));
    let routes = lab.exec_ok(&c2, &["ip", "-6", "route"]);
    assert!(
        !routes.contains("2001:db8:bad"),
        "the rogue prefix arrived:\n{routes}"
    );
    lab.exec_ok(&c2, &[&ping6[..], &["fd00:89::2"]].concat());
    let seen = lab.curl(&inet, &format!("http://[{UPLINK6}]:8080/whoami"));
    assert_eq!(seen.trim(), INET6, "c2 still reached at its own MAC");
}
