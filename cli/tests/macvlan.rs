//! Macvlan networks end to end: containers bridged onto the uplink's LAN (no NAT, the LAN's
//! router as their gateway), and VLANs of a trunk uplink.
//!
//! (a) A "LAN": a Linux bridge in a namespace of its own holding the router's address, a LAN
//! host on it, and the vswitch host's uplink `up0`. A macvlan network on the LAN's subnet: the
//! LAN host and the containers ping each other, the LAN host sees the containers' own
//! addresses and MACs (no NAT), the router, the aux addresses and vswitch's own uplink address
//! are never handed out, the uplink is promiscuous while the network exists.
//!
//! (b) A trunk: the uplink's peer is a small 802.1Q switch (`trunk.py`: this kernel may have
//! neither VLAN devices nor bridge VLAN filtering) whose access ports lead to one namespace per
//! VLAN, each 192.168.77.1/24 (192.168.78.1/24 for VLAN 30) with a MAC of its own: networks on
//! VLAN 10 and 20 with the same subnet each reach their own peer, a broadcast on VLAN 20 never
//! reaches VLAN 10, full-size frames pass tagged, and a private-mode network's containers reach
//! the peer but not each other.
//!
//! Root only (skipped otherwise, and with VSWITCH_SKIP_E2E=1); only namespaces the lab makes,
//! addresses inside them; everything removed when the lab drops.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ROUTER: &str = "192.168.50.1";
const LAN_HOST: &str = "192.168.50.10";
const LAN_UPLINK: &str = "192.168.50.2";

/// A veth pair from `a` (end `a_end`) to `b` (end `b_end`), both up.
fn wire(a: &str, a_end: &str, b: &str, b_end: &str) {
    ip(&[
        "link", "add", a_end, "netns", a, "type", "veth", "peer", "name", b_end, "netns", b,
    ]);
    ip(&["-n", a, "link", "set", a_end, "up"]);
    ip(&["-n", b, "link", "set", b_end, "up"]);
}

/// The daemon's topology: the uplink `up0` with `address` on `subnet`, and the LAN router as
/// the resolver (what macvlan containers are given).
fn topology(address: &str, subnet: &str) -> String {
    format!(
        r#"
[[port]]
name = "up0"
kind = "af_packet"

[uplink]
port = "up0"
address = "{address}"
subnet = "{subnet}"

[dns]
upstream = ["{ROUTER}"]
"#
    )
}

/// A lab of its own: the lock held, nothing in it yet.
fn new_lab() -> Lab {
    let mut lab = Lab::part(&[]);
    lab._serial = Some(testkit::lab::serial());
    lab
}

/// The LAN of (a): namespaces `lan` (bridge br0 with the router's address), `host` (the LAN
/// host) and `sw` (the daemon, its uplink on the bridge).
fn lan_lab() -> Lab {
    let mut lab = new_lab();
    let lan = lab.netns("lan");
    let sw = lab.netns("sw");
    let host = lab.netns("host");
    ip(&["-n", &lan, "link", "add", "br0", "type", "bridge"]);
    ip(&[
        "-n",
        &lan,
        "addr",
        "add",
        &format!("{ROUTER}/24"),
        "dev",
        "br0",
    ]);
    ip(&["-n", &lan, "link", "set", "br0", "up"]);
    for (ns, inner, outer) in [(&sw, "up0", "lu0"), (&host, "eth0", "lh0")] {
        wire(ns, inner, &lan, outer);
        ip(&["-n", &lan, "link", "set", outer, "master", "br0"]);
    }
    ip(&[
        "-n",
        &host,
        "addr",
        "add",
        &format!("{LAN_HOST}/24"),
        "dev",
        "eth0",
    ]);
    lab.config = topology(LAN_UPLINK, "192.168.50.0/24");
    lab.start_daemon();
    lab
}

/// `vswitch ARGS` that must fail: its error text.
fn cli_err(lab: &Lab, args: &[&str]) -> String {
    let out = run(Command::new(BIN)
        .args(args)
        .arg("--socket")
        .arg(lab.socket()));
    assert!(!out.status.success(), "vswitch {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Connects a new namespace `tag` to `network` (`extra`: more `network connect` flags); the
/// namespace and the daemon's answer.
fn connect(lab: &mut Lab, tag: &str, network: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let ns = lab.netns(tag);
    let path = format!("/run/netns/{ns}");
    let mut args = vec![
        "network", "connect", network, "--netns", &path, "--name", tag,
    ];
    args.extend_from_slice(extra);
    let c = lab.json(&args);
    (ns, c)
}

fn ping(lab: &Lab, ns: &str, ip: &str) -> String {
    lab.exec_ok(ns, &["ping", "-c", "2", "-W", "2", "-i", "0.2", ip])
}

fn ping_fails(lab: &Lab, ns: &str, ip: &str) {
    let out = lab.exec(ns, &["ping", "-c", "2", "-W", "1", "-i", "0.2", ip]);
    assert!(
        !out.status.success(),
        "in {ns}: ping {ip} should fail\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The number `ip -d link` gives after `promiscuity` for `dev` in `ns`.
fn promiscuity(ns: &str, dev: &str) -> u64 {
    let out = ip(&["-d", "-n", ns, "link", "show", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "promiscuity")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no promiscuity in {out}"))
}

/// A process in `ns` whose stdout is kept (and which is killed if the test fails first).
fn spawn_piped(ns: &str, cmd: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stdout_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn macvlan_containers_are_hosts_of_the_lan_without_nat() {
    if skip() {
        return;
    }
    let mut lab = lan_lab();
    let host = lab.ns("host");
    let sw = lab.ns("sw");
    assert_eq!(promiscuity(&sw, "up0"), 0, "no macvlan network yet");
    lab.cli(&[
        "network",
        "create",
        "--driver",
        "macvlan",
        "lan",
        "--subnet",
        "192.168.50.0/24",
        "--gateway",
        ROUTER,
        "--ip-range",
        "192.168.50.128/25",
        "--aux-address",
        "router2=192.168.50.3",
        "--aux-address",
        "nas=192.168.50.129",
    ]);
    // The NIC delivers the containers' MACs only in promiscuous mode: each packet loop's socket
    // holds it so.
    assert!(promiscuity(&sw, "up0") > 0, "the uplink is promiscuous");

    let (c1, a1) = connect(&mut lab, "c1", "lan", &[]);
    let (c2, a2) = connect(&mut lab, "c2", "lan", &[]);
    // The range's first address, then the one after the aux address: never the router's.
    assert_eq!(a1["ip"], "192.168.50.128", "{a1}");
    assert_eq!(a2["ip"], "192.168.50.130", "{a2}");
    for a in [&a1, &a2] {
        assert_eq!(a["gateway"], ROUTER, "{a}");
        assert_eq!(a["prefix_len"], 24, "{a}");
        assert_eq!(
            a["dns"],
            serde_json::json!([ROUTER]),
            "upstream resolvers: {a}"
        );
    }
    // A static address that is someone else's on the LAN is refused too.
    for taken in [ROUTER, "192.168.50.3", LAN_UPLINK] {
        let path = format!("/run/netns/{c1}");
        let e = cli_err(
            &lab,
            &[
                "network", "connect", "lan", "--netns", &path, "--name", "c9", "--ip", taken,
            ],
        );
        assert!(e.contains(&format!("{taken} is reserved")), "{taken}: {e}");
    }
    let route = lab.exec_ok(&c1, &["ip", "route", "show", "default"]);
    assert!(route.contains(&format!("via {ROUTER}")), "{route}");

    // The LAN host reaches both containers, and they reach it and the router.
    let from_lan = ping(&lab, &host, "192.168.50.128");
    eprintln!("LAN host: ping 192.168.50.128\n{from_lan}");
    ping(&lab, &host, "192.168.50.130");
    ping(&lab, &c1, LAN_HOST);
    ping(&lab, &c2, ROUTER);
    // Bridge mode: the containers reach each other.
    ping(&lab, &c1, "192.168.50.130");
    // The host (the daemon's namespace) reaches its own macvlan containers, and the LAN,
    // through its host port: the range's last address, bridged by vswitch.
    let hp = lab.exec_ok(&sw, &["ip", "-o", "-4", "addr", "show", "dev", "vs-lan"]);
    assert!(hp.contains("192.168.50.254/24"), "{hp}");
    ping(&lab, &sw, "192.168.50.128");
    ping(&lab, &sw, LAN_HOST);

    // No NAT: the LAN host knows c1 by its own MAC and address...
    let neigh = lab.exec_ok(&host, &["ip", "neigh", "show", "192.168.50.128"]);
    assert!(
        neigh.contains(a1["mac"].as_str().unwrap()),
        "the LAN host's neighbour entry is c1's MAC {}: {neigh}",
        a1["mac"]
    );
    // ...and a datagram from c1 arrives from c1's address.
    let server = spawn_piped(
        &host,
        &[
            "python3",
            "-c",
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0',5353))\ns.settimeout(10)\nprint(s.recvfrom(100)[1][0],flush=True)",
        ],
    );
    lab.wait_udp_listener(&host, 5353);
    lab.exec_ok(
        &c1,
        &[
            "python3",
            "-c",
            "import socket\nsocket.socket(socket.AF_INET,socket.SOCK_DGRAM)\
             .sendto(b'hi',('192.168.50.10',5353))",
        ],
    );
    assert_eq!(
        stdout_of(server).trim(),
        "192.168.50.128",
        "the peer's source"
    );

    // Anti-spoofing as on any network: c2 sending from an address not its own gets nowhere.
    lab.exec_ok(
        &c2,
        &["ip", "addr", "add", "192.168.50.200/24", "dev", "eth0"],
    );
    let spoofed = lab.exec(
        &c2,
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "192.168.50.200",
            LAN_HOST,
        ],
    );
    assert!(!spoofed.status.success(), "a spoofed source passed");
    // Nothing to publish through: the containers have LAN addresses of their own.
    let e = cli_err(&lab, &["port", "publish", "lan", "c1", "8080:80"]);
    assert!(e.contains("macvlan network"), "{e}");

    // inspect, ls, fdb show.
    let inspect = lab.cli(&["network", "inspect", "lan"]);
    eprintln!("vswitch network inspect lan\n{inspect}");
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let n = &v[0];
    assert_eq!(n["Driver"], "macvlan");
    assert_eq!(n["Options"]["vswitch.macvlan_mode"], "bridge");
    assert!(n["Options"].get("vswitch.vlan").is_none(), "{n}");
    let cfg = &n["IPAM"]["Config"][0];
    assert_eq!(cfg["Gateway"], ROUTER);
    assert_eq!(cfg["IPRange"], "192.168.50.128/25");
    assert_eq!(cfg["AuxiliaryAddresses"]["router2"], "192.168.50.3");
    assert_eq!(cfg["AuxiliaryAddresses"]["nas"], "192.168.50.129");
    assert_eq!(cfg["AuxiliaryAddresses"]["vswitch-uplink"], LAN_UPLINK);
    // The two containers (the host port is not listed, as on any network).
    assert_eq!(n["Containers"].as_object().unwrap().len(), 2, "{n}");
    let ls = lab.cli(&["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.contains(" lan ") && l.contains("macvlan")),
        "{ls}"
    );
    let fdb = lab.cli(&["fdb", "show"]);
    assert!(
        fdb.lines().any(|l| l.contains(a1["mac"].as_str().unwrap())
            && l.contains("network lan")
            && !l.contains("vlan")),
        "{fdb}"
    );

    // One macvlan network per VLAN: the untagged LAN is taken; flags checked first. Each
    // `network create NAME ...` refused, with what its error must say.
    let refused: [(&[&str], &str); 5] = [
        (
            &["--driver", "macvlan", "lan2", "--subnet", "10.9.0.0/24"],
            "the untagged LAN",
        ),
        (&["x", "--vlan", "20"], "--vlan needs --driver macvlan"),
        (
            &[
                "--driver",
                "macvlan",
                "x",
                "--subnet",
                "10.9.0.0/24",
                "--vlan",
                "20.30",
            ],
            "QinQ",
        ),
        (
            &[
                "--driver",
                "macvlan",
                "x",
                "--subnet",
                "10.9.0.0/24",
                "--vlan",
                "9",
                "--ipv6",
            ],
            "IPv6",
        ),
        (&["--driver", "macvlan", "x", "--vlan", "9"], "--subnet"),
    ];
    for (args, why) in refused {
        let e = cli_err(&lab, &[&["network", "create"][..], args].concat());
        assert!(e.contains(why), "{args:?}: {e}");
    }

    // A restart: the network comes back from the state (promiscuous uplink, parent port), a
    // container connected again is reached from the LAN again.
    lab.stop_daemon();
    assert_eq!(
        promiscuity(&sw, "up0"),
        0,
        "the stopped daemon's sockets let go"
    );
    lab.start_daemon();
    assert!(
        promiscuity(&sw, "up0") > 0,
        "promiscuous again after the restart"
    );
    let again = lab.json(&["network", "inspect", "lan"]);
    assert_eq!(again[0]["Driver"], "macvlan", "{again}");
    let path = format!("/run/netns/{c1}");
    lab.cli(&[
        "network",
        "connect",
        "lan",
        "--netns",
        &path,
        "--name",
        "c1",
        "--ip",
        "192.168.50.128",
    ]);
    ping(&lab, &host, "192.168.50.128");
    ping(&lab, &c1, ROUTER);

    // The last macvlan network gone, the uplink is not promiscuous any more.
    lab.cli(&["network", "disconnect", "lan", "c1"]);
    lab.cli(&["network", "rm", "lan"]);
    assert_eq!(promiscuity(&sw, "up0"), 0, "promiscuous mode released");
}

/// The MAC of VLAN `vid`'s peer.
fn peer_mac(vid: u16) -> String {
    format!("02:00:00:00:{vid}:01")
}

/// The trunk of (b): `sw`'s uplink `up0` to `trunk.py` in `trunk`, whose access ports lead to
/// `t10`, `t20` (both 192.168.77.1/24) and `t30` (192.168.78.1/24).
fn trunk_lab() -> Lab {
    let mut lab = new_lab();
    let sw = lab.netns("sw");
    let trunk = lab.netns("trunk");
    wire(&sw, "up0", &trunk, "tr0");
    let mut access = Vec::new();
    for (vid, addr) in [
        (10u16, "192.168.77.1/24"),
        (20, "192.168.77.1/24"),
        (30, "192.168.78.1/24"),
    ] {
        let peer = lab.netns(&format!("t{vid}"));
        let port = format!("a{vid}");
        ip(&[
            "link", "add", &port, "netns", &trunk, "type", "veth", "peer", "name", "eth0", "netns",
            &peer,
        ]);
        ip(&[
            "-n",
            &peer,
            "link",
            "set",
            "eth0",
            "address",
            &peer_mac(vid),
        ]);
        ip(&["-n", &peer, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", &peer, "link", "set", "eth0", "up"]);
        ip(&["-n", &trunk, "link", "set", &port, "up"]);
        access.push(format!("{vid}={port}"));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/trunk.py");
    let mut cmd = vec!["python3", script, "tr0"];
    cmd.extend(access.iter().map(String::as_str));
    let dir = lab.dir.clone();
    lab.spawn(&trunk, &dir, &cmd);
    lab.config = topology("10.99.0.2", "10.99.0.0/24");
    lab.start_daemon();
    lab
}

#[test]
fn macvlan_vlans_on_a_trunk_are_separate_lans() {
    if skip() {
        return;
    }
    let mut lab = trunk_lab();
    for (name, vid, subnet, gateway, mode) in [
        ("v10", "10", "192.168.77.0/24", "192.168.77.1", "bridge"),
        ("v20", "20", "192.168.77.0/24", "192.168.77.1", "bridge"),
        ("p30", "30", "192.168.78.0/24", "192.168.78.1", "private"),
    ] {
        lab.cli(&[
            "network",
            "create",
            "--driver",
            "macvlan",
            name,
            "--subnet",
            subnet,
            "--gateway",
            gateway,
            "--vlan",
            vid,
            "--macvlan-mode",
            mode,
        ]);
    }
    let e = cli_err(
        &lab,
        &[
            "network",
            "create",
            "--driver",
            "macvlan",
            "v10b",
            "--subnet",
            "10.8.0.0/24",
            "--vlan",
            "10",
        ],
    );
    assert!(e.contains("VLAN 10"), "{e}");
    let v20 = lab.json(&["network", "inspect", "v20"]);
    assert_eq!(v20[0]["Options"]["vswitch.vlan"], "20", "{v20}");
    assert_eq!(v20[0]["Options"]["vswitch.macvlan_mode"], "bridge");

    let (c10, a10) = connect(&mut lab, "c10", "v10", &[]);
    let (c20, a20) = connect(&mut lab, "c20", "v20", &["--ip", "192.168.77.20"]);
    assert_eq!(a10["ip"], "192.168.77.2");
    // Each VLAN's container reaches its own peer: the ARP entry is that peer's MAC.
    for (ns, vid) in [(&c10, 10), (&c20, 20)] {
        ping(&lab, ns, "192.168.77.1");
        let neigh = lab.exec_ok(ns, &["ip", "neigh", "show", "192.168.77.1"]);
        assert!(neigh.contains(&peer_mac(vid)), "VLAN {vid}: {neigh}");
    }
    // Full-size frames (1500-byte packets) pass, tagged on the trunk: the links keep the
    // uplink's MTU.
    lab.exec_ok(
        &c10,
        &[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1472",
            "192.168.77.1",
        ],
    );
    let fdb = lab.cli(&["fdb", "show"]);
    eprintln!("vswitch fdb show\n{fdb}");
    eprintln!("vswitch network ls\n{}", lab.cli(&["network", "ls"]));
    assert!(
        fdb.lines()
            .any(|l| l.contains(a10["mac"].as_str().unwrap()) && l.contains("vlan 10")),
        "{fdb}"
    );

    // A broadcast on VLAN 20 (c20's ARP for the peer) reaches VLAN 20's peer, never VLAN 10's.
    let c20_mac = a20["mac"].as_str().unwrap().to_string();
    let filter = format!("ether src {c20_mac}");
    let watch = |vid: u16| {
        spawn_piped(
            &lab.ns(&format!("t{vid}")),
            &[
                "timeout", "6", "tcpdump", "-i", "eth0", "-c", "1", "-n", "-l", &filter,
            ],
        )
    };
    let (on10, on20) = (watch(10), watch(20));
    std::thread::sleep(Duration::from_secs(1));
    lab.exec_ok(&c20, &["ip", "neigh", "flush", "all"]);
    ping(&lab, &c20, "192.168.77.1");
    let (seen10, seen20) = (stdout_of(on10), stdout_of(on20));
    assert!(
        seen20.contains("ARP") || seen20.contains("ICMP"),
        "VLAN 20 sees c20: {seen20:?}"
    );
    assert!(
        seen10.trim().is_empty(),
        "VLAN 10 saw c20's frames: {seen10}"
    );

    // `vswitch upgrade` keeps the links: the new daemon re-attaches c10 and c20 on their
    // VLANs, with no reconnect.
    lab.cli(&["upgrade"]);
    let mut d = lab.daemon.take().unwrap();
    let stopped =
        testkit::lab::wait_until(Duration::from_secs(10), || d.try_wait().unwrap().is_some());
    assert!(stopped, "the daemon did not stop for the upgrade");
    lab.start_daemon();
    for (ns, vid) in [(&c10, 10), (&c20, 20)] {
        lab.exec_ok(ns, &["ip", "neigh", "flush", "all"]);
        ping(&lab, ns, "192.168.77.1");
        let neigh = lab.exec_ok(ns, &["ip", "neigh", "show", "192.168.77.1"]);
        assert!(
            neigh.contains(&peer_mac(vid)),
            "after the upgrade, VLAN {vid}: {neigh}"
        );
    }

    // Private mode: both containers reach the LAN, not each other.
    let (p1, b1) = connect(&mut lab, "p1", "p30", &[]);
    let (p2, b2) = connect(&mut lab, "p2", "p30", &[]);
    ping(&lab, &p1, "192.168.78.1");
    ping(&lab, &p2, "192.168.78.1");
    ping_fails(&lab, &p1, b2["ip"].as_str().unwrap());
    ping_fails(&lab, &p2, b1["ip"].as_str().unwrap());
}

#[test]
fn a_macvlan_network_of_the_topology_file_is_registered() {
    if skip() {
        return;
    }
    let mut lab = new_lab();
    let sw = lab.netns("sw");
    let peer = lab.netns("peer");
    wire(&sw, "up0", &peer, "eth0");
    ip(&["-n", &peer, "addr", "add", "192.168.77.1/24", "dev", "eth0"]);
    lab.config = topology("10.99.0.2", "10.99.0.0/24")
        + "\n[[network]]\nname = \"lan\"\ndriver = \"macvlan\"\nsubnet = \"192.168.77.0/24\"\n\
           gateway = \"192.168.77.1\"\nmacvlan_mode = \"private\"\n";
    lab.start_daemon();
    let v = lab.json(&["network", "inspect", "lan"]);
    assert_eq!(v[0]["Driver"], "macvlan", "{v}");
    assert_eq!(v[0]["Options"]["vswitch.macvlan_mode"], "private", "{v}");
    assert!(promiscuity(&sw, "up0") > 0, "the uplink is promiscuous");
    let (c1, a1) = connect(&mut lab, "c1", "lan", &[]);
    assert_eq!(a1["gateway"], "192.168.77.1", "{a1}");
    ping(&lab, &c1, "192.168.77.1");
}
