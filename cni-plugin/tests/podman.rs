//! Podman 4 (rootful, CNI backend) with `vswitch-cni`: the runtime lab's stand-in host runs the
//! vswitch daemon and Podman (entered with `nsenter --net=`: `ip netns exec` remounts /sys,
//! which container runtimes trip on). Podman keeps everything under the lab's directory
//! (`--root`, `--runroot`, `--tmpdir`, `--network-config-dir` holding the conflist,
//! `CONTAINERS_CONF` with `network_backend = "cni"` and `cni_plugin_dirs` = the plugin's build
//! directory); the image is `podman import` of the lab's busybox root file system. Root only.
//!
//! Checked: two containers ping each other by name (vswitch's DNS at the gateway, which Podman
//! writes to resolv.conf from the result's `dns`), one fetches from the lab's internet (seen
//! from the uplink address), `-p 8080:80` answers from the internet and `-p
//! 127.0.0.1:8081:80` does not, `podman restart` has a working network at once, `podman rm -f`
//! frees the address and the port. The attach time (`podman run -d` on the vswitch network
//! against `--network none`) is printed.

mod common;

use common::{fetch_from_inet, fetch_from_inet_within, plugin, vswitch_bin, web_root};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::lab::{self, median, try_ok, wait_until};
use testkit::runtime_host::{INET_ADDR, RuntimeHost, UPLINK_ADDR};

const NET: &str = "pnet";
const GATEWAY: &str = "172.29.0.1";
const IMAGE: &str = "localhost/vswitch-busybox:latest";

/// Podman confined to the lab; every container is removed on drop (before the lab goes, so
/// the plugin's DELs still reach the daemon).
struct Podman<'a> {
    lab: &'a RuntimeHost,
    conf: PathBuf,
    network: String,
}

impl<'a> Podman<'a> {
    fn new(lab: &'a RuntimeHost) -> Podman<'a> {
        let dir = lab.dir();
        let cni_dir = dir.join("cni");
        std::fs::create_dir_all(&cni_dir).expect("cni dir");
        std::fs::create_dir_all(dir.join("podman-tmp")).expect("tmp dir");
        // The CNI network's name carries the lab's prefix: libcni caches results under
        // /var/lib/cni/results/NAME-ID-IFNAME.
        let network = format!("{}-net", lab.prefix());
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{
                "type": "vswitch-cni",
                "network": NET,
                "socket": lab.socket(),
                "dataDir": dir.join("cni-state"),
                "capabilities": {"portMappings": true, "ips": true, "mac": true}
            }]
        });
        std::fs::write(
            cni_dir.join(format!("{network}.conflist")),
            conflist.to_string(),
        )
        .expect("conflist");
        let plugin_dir = plugin()
            .parent()
            .map(|p| p.display().to_string())
            .expect("plugin dir");
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{plugin_dir}\"]\n\
                 network_config_dir = \"{}\"\n[engine]\nevents_logger = \"file\"\n\
                 cgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\n",
                cni_dir.display()
            ),
        )
        .expect("containers.conf");
        Podman { lab, conf, network }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let dir = self.lab.dir();
        let mut c = self.lab.in_host(&["timeout", "60", "podman"]);
        c.env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(dir.join("storage"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .arg("--tmpdir")
            .arg(dir.join("podman-tmp"))
            .arg("--network-config-dir")
            .arg(dir.join("cni"))
            .args(["--storage-driver", "vfs", "--runtime", "runc"])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args);
        c
    }

    fn try_run(&self, args: &[&str]) -> std::io::Result<String> {
        try_ok(&mut self.cmd(args))
    }

    fn run(&self, args: &[&str]) -> String {
        self.try_run(args).unwrap_or_else(|e| {
            panic!(
                "podman {args:?}: {e}\ndaemon log:\n{}",
                self.lab.log("vswitch.log")
            )
        })
    }

    /// `podman run -d` on the vswitch network (or `network`), with the limits root here can
    /// set (no CAP_SYS_RESOURCE: nofile and nproc below the current hard limits).
    fn start(&self, name: &str, network: &str, extra: &[&str], cmd: &[&str]) -> String {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(cmd);
        self.run(&args)
    }

    /// Runs busybox applet `cmd` in container `name`; whether it succeeded, and its output.
    fn exec(&self, name: &str, cmd: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", name, "/bin/busybox"];
        args.extend_from_slice(cmd);
        match self.try_run(&args) {
            Ok(out) => (true, out),
            Err(e) => (false, e.to_string()),
        }
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-f", "-a", "-t", "0"]).output();
        if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.network) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

#[test]
fn podman_cni_backend_end_to_end() {
    if lab::skip() {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("skipping the Podman test: podman is not installed (scripts/setup.sh test)");
        return;
    }
    let _serial = lab::serial();
    let started = Instant::now();
    let bin = vswitch_bin();
    let mut lab = RuntimeHost::with_network(&lab::prefix("cnipd"), &bin, NET, "172.29.0.0/16");
    // The internet's web server: its CGI tells the client's address.
    let root = web_root(lab.dir(), "inet-www", "internet\n");
    std::fs::create_dir_all(root.join("cgi-bin")).expect("cgi-bin");
    let cgi = root.join("cgi-bin/ip");
    std::fs::write(
        &cgi,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$REMOTE_ADDR\"\n",
    )
    .expect("cgi");
    lab::ok(Command::new("chmod").arg("755").arg(&cgi));
    let mut httpd = lab.in_inet(&["busybox", "httpd", "-f", "-vv", "-p", "80", "-h"]);
    httpd.arg(&root);
    lab.spawn(httpd, "inet-httpd.log").expect("httpd");

    let pm = Podman::new(&lab);
    let tar = lab.busybox_rootfs().expect("busybox rootfs");
    pm.run(&["import", &tar.display().to_string(), IMAGE]);
    let net = pm.network.clone();
    let listed = pm.run(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        listed.contains(&format!("{net} vswitch-cni")),
        "podman sees the network: {listed}"
    );

    // Two containers; c2 serves HTTP on published ports.
    let sleep = ["/bin/busybox", "sleep", "3600"];
    pm.start("c1", &net, &[], &sleep);
    let serve = [
        "/bin/busybox",
        "sh",
        "-c",
        "echo from-c2 > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www",
    ];
    pm.start(
        "c2",
        &net,
        &["-p", "8080:80", "-p", "127.0.0.1:8081:80"],
        &serve,
    );

    // resolv.conf names the gateway (the result's dns), and names resolve there.
    let (_, resolv) = pm.exec("c1", &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.lines().next() == Some(&format!("nameserver {GATEWAY}")[..]),
        "resolv.conf: {resolv}"
    );
    for (from, to) in [("c1", "c2"), ("c2", "c1")] {
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(5), || {
            let (ok, out) = pm.exec(from, &["ping", "-c1", "-W1", to]);
            last = out;
            ok
        });
        assert!(ok, "{from} pings {to} by name: {last}");
    }

    // Out to the internet, masqueraded to the uplink's address (busybox httpd gives CGIs
    // REMOTE_ADDR as "[::ffff:A.B.C.D]"). Debian's static busybox wget segfaults: nc speaks
    // the HTTP.
    let get = format!(
        "printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 3 {INET_ADDR} 80"
    );
    let mut seen = String::new();
    let fetched = wait_until(Duration::from_secs(10), || {
        let (ok, out) = pm.exec("c1", &["sh", "-c", &get]);
        seen = out;
        ok
    });
    assert!(
        fetched,
        "c1 fetches from the internet: {seen}\nping: {:?}\nroutes: {:?}\nlocal: {:?}\nserver \
         log:\n{}",
        pm.exec("c1", &["ping", "-c1", "-W1", INET_ADDR]),
        pm.exec("c1", &["ip", "route"]),
        lab.in_inet(&["curl", "-sS", "-m", "3", "http://127.0.0.1/cgi-bin/ip"])
            .output(),
        lab.log("inet-httpd.log")
    );
    assert!(
        seen.contains(&format!(":{UPLINK_ADDR}]")) || seen.trim() == UPLINK_ADDR,
        "the server sees the uplink address: {seen}"
    );

    // Published ports.
    let url = format!("http://{UPLINK_ADDR}:8080/index.html");
    let body = fetch_from_inet_within(&lab, &url, Duration::from_secs(10));
    assert_eq!(
        body.as_deref(),
        Some("from-c2\n"),
        "-p 8080:80 from the internet"
    );
    assert!(
        fetch_from_inet(&lab, &format!("http://{UPLINK_ADDR}:8081/index.html")).is_none(),
        "-p 127.0.0.1:8081:80 must not be reachable from outside"
    );

    // A restart has its network (name, port) at once.
    pm.run(&["restart", "-t", "0", "c2"]);
    let restarted = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || fetch_from_inet(&lab, &url)
            .is_some()),
        "the restarted c2's port"
    );
    assert!(
        wait_until(Duration::from_secs(5), || pm
            .exec("c1", &["ping", "-c1", "-W1", "c2"])
            .0),
        "c1 pings the restarted c2"
    );
    eprintln!(
        "network back after podman restart: {:?}",
        restarted.elapsed()
    );

    // rm -f frees the address and the published ports.
    let c2_ip = lab
        .containers()
        .iter()
        .find(|c| c["name"] == "c2")
        .map(|c| c["ip"].clone())
        .expect("c2 is attached");
    pm.run(&["rm", "-f", "-t", "0", "c2"]);
    let all = lab.containers();
    assert!(all.iter().all(|c| c["name"] != "c2"), "{all:?}");
    let ports = control::call(&lab.socket(), &control::Request::PortLs).expect("port ls");
    assert_eq!(ports, json!([]), "rm -f unpublished c2's ports");
    assert!(
        fetch_from_inet(&lab, &url).is_none(),
        "8080 still answers after rm -f"
    );
    pm.start("c3", &net, &[], &sleep);
    let c3_ip = lab
        .containers()
        .iter()
        .find(|c| c["name"] == "c3")
        .map(|c| c["ip"].clone())
        .expect("c3 is attached");
    assert_eq!(
        c3_ip, c2_ip,
        "c2's address was freed (c3 gets the lowest free one)"
    );

    // Attach time: podman run -d on the vswitch network against --network none, interleaved
    // so that the load of a shared machine weighs on both alike.
    let runs = 7;
    let timed = |network: &str, name: &str| -> Duration {
        let t = Instant::now();
        pm.start(name, network, &[], &sleep);
        let d = t.elapsed();
        pm.run(&["rm", "-f", "-t", "0", name]);
        d
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..runs {
        with.push(timed(&net, &format!("tv{i}")));
        without.push(timed("none", &format!("tn{i}")));
    }
    let (mw, mn) = (median(with.clone()), median(without.clone()));
    eprintln!(
        "podman run -d, median of {runs}: vswitch network {mw:?} (runs {with:?}), --network none \
         {mn:?} (runs {without:?}): attach cost {:?}",
        mw.saturating_sub(mn)
    );
    eprintln!("podman test took {:?}", started.elapsed());
}
