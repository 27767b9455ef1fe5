//! Rootless Podman end to end: as the plain user `VSWITCH_ROOTLESS_USER` (default
//! `vswitch-test`) inside the rootless lab's stand-in host, a rootless vswitch daemon and a
//! `podman run --network none` busybox container attached with `network connect --pid`, port
//! 8080 published to its port 80; reached from the host's 127.0.0.1 (the container sees the
//! address mapped to the host's loopback) and from another host address (it sees that one).
//!
//! Podman keeps everything under the lab's directory (`--root`, `--runroot`, `--tmpdir`, vfs)
//! and its containers are named `PREFIX-…`; the guard removes them even when the test fails.
//! Skips (saying why) without root, the user, podman, busybox or a working rootless Podman.

#![allow(clippy::unwrap_used)]

mod lab;

use lab::{BIN, ok, run, skip};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::lab::wait_until;
use testkit::rootless::{RootlessHost, user_exists, with_host_loopback};

/// The CGI the container's httpd runs: the client's address as the container sees it.
const WHO_CGI: &str =
    "#!/bin/busybox sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n";

/// The client address a response names: busybox httpd listens on IPv6 and reports an IPv4
/// client as `[::ffff:A.B.C.D]`.
fn client(out: &std::process::Output) -> String {
    let s = String::from_utf8_lossy(&out.stdout);
    let s = s.trim();
    s.strip_prefix("[::ffff:")
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(s)
        .to_string()
}

/// Podman's rootless flags for this machine: runc (cgroup v1 hybrid), cgroupfs, file events,
/// its own storage under the lab's directory.
fn podman_args(dir: &Path) -> Vec<String> {
    let d = |s: &str| dir.join(s).to_string_lossy().into_owned();
    vec![
        "podman".into(),
        "--root".into(),
        d("podman/root"),
        "--runroot".into(),
        d("podman/runroot"),
        "--tmpdir".into(),
        d("podman/tmp"),
        "--storage-driver".into(),
        "vfs".into(),
        "--runtime".into(),
        "runc".into(),
        "--cgroup-manager".into(),
        "cgroupfs".into(),
        "--events-backend".into(),
        "file".into(),
    ]
}

/// The lab, and the Podman containers to remove before it goes (declared first: dropped
/// first).
struct PodmanLab {
    names: Vec<String>,
    lab: RootlessHost,
}

impl PodmanLab {
    fn podman(&self, args: &[&str]) -> Command {
        let base = podman_args(self.lab.dir());
        let mut all: Vec<&str> = base.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        // `ip netns exec` (what `as_user` uses) remounts /sys without the cgroup mounts, and
        // runc then fails ("no cgroup mount found in mountinfo"): enter the network only.
        let dir = self.lab.dir();
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.lab.host()))
            .args([
                "setpriv",
                "--reuid",
                self.lab.user(),
                "--regid",
                self.lab.user(),
            ])
            .args(["--init-groups", "env"])
            .arg(format!("XDG_RUNTIME_DIR={}", dir.join("run").display()))
            .arg(format!("HOME={}", dir.display()))
            .args(all)
            .current_dir(dir);
        c
    }
}

impl Drop for PodmanLab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = run(&mut self.podman(&["rm", "-f", "-t", "0", n]));
        }
        // Rootless Podman leaves a pause process holding its user namespace; its pid is in
        // the tmpdir.
        let pause = self.lab.dir().join("podman/tmp/pause.pid");
        if let Ok(pid) = std::fs::read_to_string(pause) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn rootless_podman_container_behind_a_rootless_daemon() {
    if skip() {
        return;
    }
    let user = std::env::var("VSWITCH_ROOTLESS_USER").unwrap_or_else(|_| "vswitch-test".into());
    if !user_exists(&user) {
        eprintln!("skipping rootless podman test: no user {user:?}");
        return;
    }
    if !Path::new("/bin/busybox").exists()
        || !run(Command::new("podman").arg("--version"))
            .status
            .success()
    {
        eprintln!("skipping rootless podman test: podman or /bin/busybox (busybox-static) missing");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let prefix = format!("vsp{}", std::process::id() % 100_000);
    let lab = RootlessHost::new(&prefix, &user).unwrap();
    let mut p = PodmanLab {
        names: Vec::new(),
        lab,
    };
    let dir = p.lab.dir().to_path_buf();
    p.lab.user_dir("podman").unwrap();
    p.lab
        .ip(&["addr", "add", "192.0.2.9/24", "dev", "de0"])
        .unwrap();

    // A busybox root file system. Applets are called as `/bin/busybox APPLET`: `--install -s`
    // would make absolute links that do not resolve inside the container.
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "www/cgi-bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/busybox\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let cgi = root.join("www/cgi-bin/who");
    std::fs::write(&cgi, WHO_CGI).unwrap();
    ok(Command::new("chmod").arg("755").arg(&cgi));
    let tar = dir.join("busybox.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    ok(Command::new("chown").arg(&user).arg(&tar));

    let image = format!("localhost/{prefix}-busybox");
    let import = run(&mut p.podman(&["import", tar.to_str().unwrap(), &image]));
    if !import.status.success() {
        eprintln!(
            "skipping rootless podman test: podman import failed: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        return;
    }
    let name = format!("{prefix}-web");
    p.names.push(name.clone());
    let started = run(&mut p.podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        &image,
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]));
    if !started.status.success() {
        eprintln!(
            "skipping rootless podman test: rootless podman run failed here: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        return;
    }
    let pid = ok(&mut p.podman(&["inspect", "-f", "{{.State.Pid}}", &name]));
    let pid = pid.trim().to_string();
    assert!(pid.parse::<u32>().is_ok_and(|n| n > 0), "pid {pid:?}");

    let bin = p.lab.install(Path::new(BIN), "vswitch").unwrap();
    let topo = dir.join("topo.toml");
    std::fs::write(&topo, with_host_loopback(daemon::ROOTLESS_TOPOLOGY)).unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    p.lab.start_daemon(&bin, &topo, log).unwrap();
    let daemon_log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let cli = |args: &[&str]| {
        let mut all = vec![bin.as_str()];
        all.extend_from_slice(args);
        let out = run(&mut p.lab.as_user(&all));
        assert!(
            out.status.success(),
            "vswitch {args:?}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon_log()
        );
    };
    cli(&[
        "network",
        "connect",
        "bridge",
        "--pid",
        &pid,
        "--name",
        &name,
        "--ip",
        "172.17.0.2",
    ]);
    cli(&["port", "publish", "bridge", &name, "8080:80/tcp"]);
    let link = ok(&mut p.podman(&[
        "exec",
        &name,
        "/bin/busybox",
        "ip",
        "-o",
        "link",
        "show",
        "eth0",
    ]));
    assert!(link.contains("mtu 65520"), "{link}");

    let get = |from: Option<&str>, url: &str| {
        let mut c = p.lab.exec(&["curl", "-sS", "--max-time", "5"]);
        if let Some(a) = from {
            c.args(["--interface", a]);
        }
        c.arg(url).output().unwrap()
    };
    // The server inside the container may take a moment.
    let mut who = get(None, "http://127.0.0.1:8080/cgi-bin/who");
    wait_until(
        Duration::from_secs(15).min(deadline.saturating_duration_since(Instant::now())),
        || {
            who = get(None, "http://127.0.0.1:8080/cgi-bin/who");
            who.status.success()
        },
    );
    assert_eq!(
        client(&who),
        "10.0.2.2",
        "from the host's 127.0.0.1: {}\ndaemon log:\n{}",
        String::from_utf8_lossy(&who.stderr),
        daemon_log()
    );
    let who = get(Some("192.0.2.9"), "http://192.0.2.1:8080/cgi-bin/who");
    assert_eq!(
        client(&who),
        "192.0.2.9",
        "from another host address: {}",
        String::from_utf8_lossy(&who.stderr)
    );
    assert!(Instant::now() < deadline, "took longer than 90 s");
    cli(&["shutdown"]);
}
