//! CNI conformance of `vswitch-cni`, driven as a runtime drives it: environment variables and
//! a configuration on stdin, against a vswitch daemon in the runtime lab's stand-in host and
//! namespaces made here (`ip netns add PREFIX-cN`). Root only; skipped with the reason
//! otherwise. Everything the tests make carries the lab's prefix and goes on drop.

mod common;

use common::{
    Answer, Namespaces, cni, fetch_from_inet, fetch_from_inet_within, vswitch_bin, web_root,
};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use testkit::lab::{self, wait_until};
use testkit::runtime_host::{INET_ADDR, RuntimeHost, UPLINK_ADDR};

const NET: &str = "cninet";
const GATEWAY: &str = "172.30.0.1";

/// A lab with the daemon running and network [`NET`] (172.30.0.0/16, its DNS at the gateway).
fn lab(stem: &str) -> RuntimeHost {
    RuntimeHost::with_network(&lab::prefix(stem), &vswitch_bin(), NET, "172.30.0.0/16")
}

/// The network configuration for `lab`, with `extra` fields merged in.
fn conf(lab: &RuntimeHost, version: &str, extra: Value) -> String {
    let mut c = json!({
        "cniVersion": version,
        "name": "cnitest",
        "type": "vswitch-cni",
        "network": NET,
        "socket": lab.socket(),
        "dataDir": lab.dir().join("cni-state"),
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c.to_string()
}

fn env<'a>(cmd: &'a str, id: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/nonexistent"),
    ]
}

fn ping(ns: &str, addr: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-W2", addr])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn assert_error(a: &Answer, code: u64, what: &str) {
    assert!(!a.ok, "{what}: expected failure, got {}", a.json);
    assert_eq!(a.json["code"], code, "{what}: {} / {}", a.json, a.stderr);
    assert!(a.json["msg"].is_string(), "{what}: {}", a.json);
    assert!(a.json["cniVersion"].is_string(), "{what}: {}", a.json);
}

#[test]
fn add_check_del_version_status_and_bad_input() {
    if lab::skip() {
        return;
    }
    let _serial = lab::serial();
    let lab = lab("cnic");
    let mut nss = Namespaces::default();
    let c1 = format!("{}-c1", lab.prefix());
    let c1_path = nss.add(&c1);
    let conf10 = conf(&lab, "1.0.0", json!({}));

    // ADD: a valid 1.0.0 result.
    let add = cni(&lab, &env("ADD", "ctr1", &c1_path), &conf10);
    assert!(add.ok, "ADD: {} {}", add.json, add.stderr);
    let r = &add.json;
    assert_eq!(r["cniVersion"], "1.0.0");
    let ifs = r["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 2, "{r}");
    assert!(
        ifs[0].get("sandbox").is_none(),
        "host end has no sandbox: {r}"
    );
    assert!(
        ifs[0]["mac"].as_str().is_some_and(|m| m.len() == 17),
        "host MAC: {r}"
    );
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], c1_path.as_str());
    let ip = &r["ips"][0];
    assert!(
        ip["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("172.30.") && a.ends_with("/16")),
        "{r}"
    );
    assert_eq!(ip["gateway"], GATEWAY);
    assert_eq!(ip["interface"], 1);
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": GATEWAY}]));
    assert_eq!(r["dns"]["nameservers"], json!([GATEWAY]));

    // The container reaches its gateway and the lab's internet.
    assert!(
        wait_until(Duration::from_secs(5), || ping(&c1, GATEWAY)),
        "ping gateway"
    );
    assert!(ping(&c1, INET_ADDR), "ping {INET_ADDR}");

    // ADD again (the spec forbids a runtime to do it; we answer the same result).
    let again = cni(&lab, &env("ADD", "ctr1", &c1_path), &conf10);
    assert!(again.ok, "second ADD: {} {}", again.json, again.stderr);
    assert_eq!(&again.json, r);

    // CHECK with prevResult passes, and fails once the address is flushed.
    let with_prev = conf(&lab, "1.0.0", json!({ "prevResult": r }));
    let check = cni(&lab, &env("CHECK", "ctr1", &c1_path), &with_prev);
    assert!(check.ok, "CHECK: {} {}", check.json, check.stderr);
    assert_eq!(check.json, Value::Null, "CHECK prints nothing");
    lab::ok(Command::new("ip").args(["-n", &c1, "addr", "flush", "dev", "eth0"]));
    let check = cni(&lab, &env("CHECK", "ctr1", &c1_path), &with_prev);
    assert_error(&check, 102, "CHECK after flush");
    assert!(
        check.json["details"]
            .as_str()
            .is_some_and(|d| d.contains("lacks its address")),
        "{}",
        check.json
    );

    // DEL, twice; DEL of an unknown container; DEL without a namespace.
    let del = cni(&lab, &env("DEL", "ctr1", &c1_path), &conf10);
    assert!(del.ok, "DEL: {} {}", del.json, del.stderr);
    assert!(lab.containers().is_empty(), "{:?}", lab.containers());
    let del = cni(&lab, &env("DEL", "ctr1", &c1_path), &conf10);
    assert!(del.ok, "second DEL: {} {}", del.json, del.stderr);
    let del = cni(&lab, &env("DEL", "never-added", "/run/netns/nope"), &conf10);
    assert!(del.ok, "DEL unknown: {} {}", del.json, del.stderr);
    let del = cni(&lab, &env("DEL", "never-added", ""), &conf10);
    assert!(del.ok, "DEL without netns: {} {}", del.json, del.stderr);

    // ADD, then DEL with an empty CNI_NETNS (the runtime lost the namespace) removes it.
    let add = cni(&lab, &env("ADD", "ctr2", &c1_path), &conf10);
    assert!(add.ok, "ADD ctr2: {} {}", add.json, add.stderr);
    let del = cni(&lab, &env("DEL", "ctr2", ""), &conf10);
    assert!(
        del.ok,
        "DEL ctr2 without netns: {} {}",
        del.json, del.stderr
    );
    assert!(lab.containers().is_empty(), "{:?}", lab.containers());

    // How long an ADD takes (the plugin's process, the connect, the record), and a DEL.
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let add = cni(&lab, &env("ADD", "timed", &c1_path), &conf10);
        adds.push(t.elapsed());
        assert!(add.ok, "{} {}", add.json, add.stderr);
        let t = std::time::Instant::now();
        let del = cni(&lab, &env("DEL", "timed", &c1_path), &conf10);
        dels.push(t.elapsed());
        assert!(del.ok, "{} {}", del.json, del.stderr);
    }
    adds.sort();
    dels.sort();
    eprintln!(
        "plugin ADD median {:?} (runs {adds:?}), DEL median {:?}",
        adds[2], dels[2]
    );

    // VERSION.
    let v = cni(
        &lab,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(v.ok);
    assert_eq!(
        v.json["supportedVersions"],
        json!(["0.4.0", "1.0.0", "1.1.0"])
    );

    // STATUS: ok with the daemon, 50 without one.
    let conf11 = conf(&lab, "1.1.0", json!({}));
    let s = cni(&lab, &[("CNI_COMMAND", "STATUS")], &conf11);
    assert!(s.ok, "STATUS: {} {}", s.json, s.stderr);
    let gone = conf(&lab, "1.1.0", json!({"socket": lab.dir().join("no.sock")}));
    assert_error(
        &cni(&lab, &[("CNI_COMMAND", "STATUS")], &gone),
        50,
        "STATUS unreachable",
    );
    let no_net = conf(&lab, "1.1.0", json!({"network": "nosuchnet"}));
    assert_error(
        &cni(&lab, &[("CNI_COMMAND", "STATUS")], &no_net),
        50,
        "STATUS no network",
    );
    // ADD with no daemon: a plugin-specific code.
    let unreachable = cni(&lab, &env("ADD", "ctr3", &c1_path), &gone);
    assert_error(&unreachable, 100, "ADD unreachable");

    // Bad input: not JSON (6), not a configuration (7), bad version (1), bad env (4).
    let add_env = env("ADD", "ctr4", &c1_path);
    assert_error(&cni(&lab, &add_env, "{ nope"), 6, "garbage stdin");
    assert_error(&cni(&lab, &add_env, ""), 6, "empty stdin");
    assert_error(
        &cni(&lab, &add_env, r#"{"cniVersion":"1.0.0"}"#),
        7,
        "no name",
    );
    let bad_ports = conf(
        &lab,
        "1.0.0",
        json!({"runtimeConfig": {"portMappings": [{"hostPort": 0, "containerPort": 80}]}}),
    );
    assert_error(&cni(&lab, &add_env, &bad_ports), 7, "port 0");
    assert_error(
        &cni(&lab, &add_env, r#"{"cniVersion":"0.2.0","name":"x"}"#),
        1,
        "old version",
    );
    assert_error(
        &cni(
            &lab,
            &[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")],
            &conf10,
        ),
        4,
        "no container id",
    );
    assert!(lab.containers().is_empty(), "bad input attached nothing");
}

#[test]
fn port_mappings_name_reuse_and_gc() {
    if lab::skip() {
        return;
    }
    let _serial = lab::serial();
    let mut lab = lab("cnip");
    let mut nss = Namespaces::default();
    let p = lab.prefix().to_string();

    // portMappings: busybox httpd in the container, reached from the internet at the uplink.
    let web = format!("{p}-web");
    let web_path = nss.add(&web);
    let root = web_root(lab.dir(), "www", "hello from the container\n");
    let mut httpd = Command::new("ip");
    httpd
        .args([
            "netns", "exec", &web, "busybox", "httpd", "-f", "-p", "80", "-h",
        ])
        .arg(&root);
    lab.spawn(httpd, "httpd.log").expect("httpd");
    let ports = conf(
        &lab,
        "1.0.0",
        json!({
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}
            ]}
        }),
    );
    let web_env = env("ADD", "webctr", &web_path);
    let add = cni(&lab, &web_env, &ports);
    assert!(add.ok, "ADD with ports: {} {}", add.json, add.stderr);
    let url = format!("http://{UPLINK_ADDR}:8080/index.html");
    let body = fetch_from_inet_within(&lab, &url, Duration::from_secs(10));
    assert_eq!(
        body.as_deref(),
        Some("hello from the container\n"),
        "{url}; daemon log:\n{}",
        lab.log("vswitch.log")
    );
    assert!(
        fetch_from_inet(&lab, &format!("http://{UPLINK_ADDR}:8081/index.html")).is_none(),
        "a port published on 127.0.0.1 is not reachable from outside"
    );
    let del = cni(&lab, &env("DEL", "webctr", &web_path), &ports);
    assert!(del.ok, "DEL: {} {}", del.json, del.stderr);
    let ls = control::call(&lab.socket(), &control::Request::PortLs).expect("port ls");
    assert_eq!(ls, json!([]), "DEL unpublished the ports");
    assert!(
        fetch_from_inet(&lab, &url).is_none(),
        "{url} still answers after DEL"
    );

    // A port already taken: ADD fails and leaves nothing attached.
    let other = format!("{p}-other");
    let other_path = nss.add(&other);
    let add = cni(&lab, &env("ADD", "first", &other_path), &ports);
    assert!(add.ok, "{} {}", add.json, add.stderr);
    let clash_ns = format!("{p}-clash");
    let clash_path = nss.add(&clash_ns);
    let clash = cni(&lab, &env("ADD", "second", &clash_path), &ports);
    assert_error(&clash, 101, "ADD with a taken host port");
    assert_eq!(lab.containers().len(), 1, "the failed ADD was rolled back");
    let del = cni(&lab, &env("DEL", "first", &other_path), &ports);
    assert!(del.ok, "{} {}", del.json, del.stderr);

    // Name reuse: container "old" named web goes without a DEL, "new" takes the name; the late
    // DEL of "old" leaves "new" attached.
    let conf10 = conf(&lab, "1.0.0", json!({}));
    let named = |id: &'static str, path: &str, cmd: &'static str| {
        let mut e = env(cmd, id, path);
        e.push(("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"));
        e.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let run = |pairs: Vec<(String, String)>, stdin: &str| {
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        cni(&lab, &refs, stdin)
    };
    let old_ns = format!("{p}-old");
    let old_path = nss.add(&old_ns);
    let add = run(named("old", &old_path, "ADD"), &conf10);
    assert!(add.ok, "{} {}", add.json, add.stderr);
    nss.del(&old_ns);
    let new_ns = format!("{p}-new");
    let new_path = nss.add(&new_ns);
    let mut add = run(named("new", &new_path, "ADD"), &conf10);
    if !add.ok {
        // The daemon may still be hearing of the old namespace's end: allow it a moment.
        std::thread::sleep(Duration::from_secs(1));
        add = run(named("new", &new_path, "ADD"), &conf10);
    }
    assert!(
        add.ok,
        "ADD of the name's new owner: {} {}",
        add.json, add.stderr
    );
    let del = run(named("old", &old_path, "DEL"), &conf10);
    assert!(
        del.ok,
        "late DEL of the old one: {} {}",
        del.json, del.stderr
    );
    let all = lab.containers();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["name"], "web");
    assert_eq!(all[0]["netns"], new_path.as_str());
    let prev = conf(&lab, "1.0.0", json!({ "prevResult": add.json }));
    let check = run(named("new", &new_path, "CHECK"), &prev);
    assert!(
        check.ok,
        "the new one is intact: {} {}",
        check.json, check.stderr
    );
    assert!(ping(&new_ns, GATEWAY), "new one pings its gateway");

    // GC: only the attachments the runtime still knows stay.
    let gc_ns = format!("{p}-gc");
    let gc_path = nss.add(&gc_ns);
    let add = cni(&lab, &env("ADD", "stale", &gc_path), &conf10);
    assert!(add.ok, "{} {}", add.json, add.stderr);
    assert_eq!(lab.containers().len(), 2);
    let gc = conf(
        &lab,
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": "new", "ifname": "eth0"}]}),
    );
    let out = cni(
        &lab,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/nonexistent")],
        &gc,
    );
    assert!(out.ok, "GC: {} {}", out.json, out.stderr);
    let all = lab.containers();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["name"], "web");
    let no_list = conf(&lab, "1.1.0", json!({}));
    assert_error(
        &cni(&lab, &[("CNI_COMMAND", "GC")], &no_list),
        7,
        "GC without the list",
    );
}
