//! End to end against a real dockerd: the runtime lab's stand-in host runs the vswitch daemon,
//! this plugin (under a name unique to the run, so parallel or leftover runs never clash) and
//! dockerd without its own networking (`--bridge=none --iptables=false`); containers of a
//! busybox image on a `docker network create -d PLUGIN` network then reach each other by name,
//! the lab's internet (masqueraded to the uplink address), and are reached on published ports.
//!
//! Root only; skipped with a reason without root, dockerd or busybox. Every docker command is
//! bounded by `timeout`; the containers are removed (a guard, even on failure) before the lab
//! stops dockerd, so no container process outlives the run.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::lab::{self, median, retry, try_ok, wait_until, workspace_bin};
use testkit::runtime_host::{INET_ADDR, RuntimeHost, UPLINK_ADDR};

/// Where Debian's docker.io (sbin) or Docker's own packages (bin) put dockerd.
const DOCKERDS: [&str; 2] = ["/usr/sbin/dockerd", "/usr/bin/dockerd"];
/// The 20.10 client that matches the daemon (not a newer one on PATH).
const DOCKER: &str = "/usr/bin/docker";
/// Longest any one docker command may take.
const DOCKER_TIMEOUT: &str = "60";

/// The docker CLI of the lab's dockerd; on drop removes every container it runs (before the lab
/// stops dockerd: a container's process would outlive a killed dockerd and its shim) and the
/// plugin socket.
struct Docker {
    sock: PathBuf,
    plugin_socket: PathBuf,
}

impl Docker {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args([DOCKER_TIMEOUT, DOCKER, "-H"])
            .arg(format!("unix://{}", self.sock.display()))
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> io::Result<String> {
        try_ok(&mut self.cmd(args)).map(|s| s.trim().to_string())
    }

    /// `docker exec NAME busybox ARGS...` (the image's applet links point outside it, so the
    /// applet is named to busybox itself).
    fn busybox(&self, name: &str, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["exec", name, "busybox"];
        full.extend_from_slice(args);
        self.run(&full)
    }

    /// `docker network create -d DRIVER [EXTRA...] --subnet SUBNET NAME`; the vswitch
    /// network it became (`dk-` and the first 12 hex of Docker's ID).
    fn network_create(
        &self,
        driver: &str,
        name: &str,
        subnet: &str,
        extra: &[&str],
    ) -> io::Result<String> {
        let mut args = vec!["network", "create", "-d", driver];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--subnet", subnet, name]);
        let id = self.run(&args)?;
        id.get(..12)
            .map(|short| format!("dk-{short}"))
            .ok_or_else(|| io::Error::other(format!("docker network create answered {id:?}")))
    }

    fn ip_of(&self, name: &str, network: &str) -> io::Result<String> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        self.run(&["inspect", "-f", &format, name])
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Ok(ids) = self.run(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.run(&args);
            }
        }
        let _ = std::fs::remove_file(&self.plugin_socket);
    }
}

fn vswitch(lab: &RuntimeHost, args: &[&str]) -> String {
    lab.vswitch(&workspace_bin("vswitch"), args)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn curl(lab: &RuntimeHost, url: &str) -> io::Result<String> {
    try_ok(&mut lab.in_inet(&["curl", "-sS", "-m", "2", url]))
}

#[test]
fn docker_network_driver_end_to_end() {
    if lab::skip() {
        return;
    }
    let Some(dockerd) = DOCKERDS.into_iter().find(|p| Path::new(p).exists()) else {
        eprintln!(
            "skipping the Docker test: no dockerd in {DOCKERDS:?} (scripts/setup.sh installs docker.io)"
        );
        return;
    };
    for need in [DOCKER, "/bin/busybox"] {
        if !Path::new(need).exists() {
            eprintln!("skipping the Docker test: {need} is missing (scripts/setup.sh installs it)");
            return;
        }
    }
    let _serial = lab::serial();
    let started = Instant::now();
    let prefix = lab::prefix("dk");
    let mut lab = RuntimeHost::new(&prefix).expect("runtime lab");
    let dir = lab.dir().to_path_buf();
    lab.start_vswitch(&workspace_bin("vswitch"), "")
        .expect("vswitch daemon");

    // The plugin, known to dockerd by its socket's name.
    let plugin_socket = PathBuf::from(format!("/run/docker/plugins/{prefix}.sock"));
    let mut plugin = lab.in_host(&[]);
    plugin
        .arg(workspace_bin("vswitch-docker-plugin"))
        .arg("--plugin-socket")
        .arg(&plugin_socket)
        .arg("--socket")
        .arg(lab.socket())
        .env("RUST_LOG", "debug,tiny_http=info");
    let plugin_pid = lab.spawn(plugin, "plugin.log").expect("plugin");
    let docker = Docker {
        sock: dir.join("docker.sock"),
        plugin_socket: plugin_socket.clone(),
    };
    assert!(
        wait_until(Duration::from_secs(10), || plugin_socket.exists()),
        "the plugin did not start:\n{}",
        lab.log("plugin.log")
    );

    // dockerd in the host, with no networking of its own.
    let mut dockerd = lab.in_host(&[dockerd]);
    dockerd
        .args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-forward=false",
            "--ip-masq=false",
            "--userland-proxy=false",
        ])
        .arg("--data-root")
        .arg(dir.join("docker"))
        .arg("--exec-root")
        .arg(dir.join("docker-exec"))
        .arg("-H")
        .arg(format!("unix://{}", docker.sock.display()))
        .arg("--pidfile")
        .arg(dir.join("docker.pid"))
        // Should a system containerd be running, dockerd uses it: keep to namespaces of our own.
        .args(["--containerd-namespace", &prefix])
        .args(["--containerd-plugins-namespace", &format!("{prefix}p")]);
    lab.spawn(dockerd, "dockerd.log").expect("dockerd");
    assert!(
        wait_until(Duration::from_secs(40), || docker.run(&["version"]).is_ok()),
        "dockerd did not start:\n{}",
        lab.log("dockerd.log")
    );
    // A web server in the internet namespace.
    let www = dir.join("inet-www");
    std::fs::create_dir_all(&www).expect("www dir");
    std::fs::write(www.join("f.txt"), "from-the-internet\n").expect("www file");
    let mut httpd = lab.in_inet(&["busybox", "httpd", "-f", "-vv", "-p", "80", "-h"]);
    httpd.arg(&www);
    lab.spawn(httpd, "inet-httpd.log").expect("httpd");

    let image = format!("{prefix}img");
    let tar = lab.busybox_rootfs().expect("busybox image");
    let tar = tar.to_string_lossy().into_owned();
    docker
        .run(&["import", "-c", "ENV PATH=/bin", &tar, &image])
        .unwrap_or_else(|e| fail(&lab, "docker import", e));

    // A network: a vswitch network named after its ID.
    let net = format!("{prefix}net");
    let vnet = docker
        .network_create(&prefix, &net, "10.77.0.0/24", &[])
        .unwrap_or_else(|e| fail(&lab, "docker network create", e));
    assert!(
        vswitch(&lab, &["network", "ls"]).contains(&vnet),
        "no vswitch network {vnet}"
    );

    // Two containers reach each other by name (Docker's embedded DNS at 127.0.0.11).
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    for name in [&a, &b] {
        docker
            .run(&[
                "run",
                "-d",
                "--network",
                &net,
                "--name",
                name,
                &image,
                "busybox",
                "sleep",
                "600",
            ])
            .unwrap_or_else(|e| fail(&lab, "docker run", e));
    }
    let ip_b = docker
        .ip_of(&b, &net)
        .unwrap_or_else(|e| fail(&lab, "inspect", e));
    assert!(ip_b.starts_with("10.77.0."), "{b} has address {ip_b:?}");
    let ping = retry(Duration::from_secs(10), || {
        docker.busybox(&a, &["ping", "-c", "1", "-W", "2", &b])
    })
    .unwrap_or_else(|e| fail(&lab, "ping by name", e));
    assert!(ping.contains(&format!("({ip_b})")), "{ping}");

    // The internet, masqueraded to the uplink address.
    let url = format!("http://{INET_ADDR}/f.txt");
    let got = retry(Duration::from_secs(10), || {
        docker.busybox(
            &a,
            &["timeout", "5", "busybox", "wget", "-q", "-O", "-", &url],
        )
    })
    .unwrap_or_else(|e| fail(&lab, "wget from the internet", e));
    assert_eq!(got, "from-the-internet");
    let log = lab.log("inet-httpd.log");
    assert!(
        log.contains(UPLINK_ADDR),
        "the server saw no connection from {UPLINK_ADDR}:\n{log}"
    );

    // Published ports: all addresses, and the host's loopback only.
    let web = format!("{prefix}web");
    docker
        .run(&[
            "run",
            "-d",
            "--network",
            &net,
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:8081:80",
            "--name",
            &web,
            &image,
            "busybox",
            "sh",
            "-c",
            "echo from-the-container > /www/index.html; exec busybox httpd -f -vv -p 80 -h /www",
        ])
        .unwrap_or_else(|e| fail(&lab, "docker run -p", e));
    let ports = vswitch(&lab, &["port", "ls"]);
    assert!(
        ports.contains("8080") && ports.contains("127.0.0.1") && ports.contains("8081"),
        "{ports}"
    );
    let got = retry(Duration::from_secs(10), || {
        curl(&lab, &format!("http://{UPLINK_ADDR}:8080/"))
    })
    .unwrap_or_else(|e| fail(&lab, "curl the published port", e));
    assert_eq!(got.trim(), "from-the-container");
    // busybox httpd -vv logs each client to stderr.
    let out = lab::run(&mut docker.cmd(&["logs", &web]));
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        logs.contains(INET_ADDR),
        "the container did not see the client's address {INET_ADDR}:\n{logs}"
    );
    assert!(
        curl(&lab, &format!("http://{UPLINK_ADDR}:8081/")).is_err(),
        "a port published on 127.0.0.1 is reachable from the internet"
    );
    // The stand-in host reaches both through localhost (vswitch's host proxy).
    for port in [8080, 8081] {
        let url = format!("http://127.0.0.1:{port}/");
        let got = retry(Duration::from_secs(10), || {
            try_ok(&mut lab.in_host(&["curl", "-sS", "-m", "2", &url]))
        })
        .unwrap_or_else(|e| fail(&lab, "curl localhost from the host", e));
        assert_eq!(got.trim(), "from-the-container", "{url}");
    }

    // A port in use fails the start and leaves nothing published; so does a port Docker
    // would have the driver pick. Docker shows the plugin's message.
    for (ports, why) in [
        (&["-p", "9091:80", "-p", "8080:81"][..], "8080"),
        (&["-p", "80"][..], "give the host port"),
    ] {
        let name = format!("{prefix}bad{}", why.len());
        let mut args = vec!["run", "-d", "--network", &net, "--name", &name];
        args.extend_from_slice(ports);
        args.extend([image.as_str(), "busybox", "sleep", "600"]);
        let out = lab::run(&mut docker.cmd(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(why),
            "docker run {ports:?}: {stderr}"
        );
        let _ = docker.run(&["rm", "-f", &name]);
    }
    let ports = vswitch(&lab, &["port", "ls"]);
    assert!(!ports.contains("9091"), "{ports}");

    // The plugin keeps no state: one restarted now serves the endpoints of the last one.
    lab::ok(Command::new("kill").arg(plugin_pid.to_string()));
    assert!(
        wait_until(Duration::from_secs(10), || !plugin_socket.exists()),
        "the plugin did not stop (and remove its socket) on TERM:\n{}",
        lab.log("plugin.log")
    );
    let mut plugin = lab.in_host(&[]);
    plugin
        .arg(workspace_bin("vswitch-docker-plugin"))
        .arg("--plugin-socket")
        .arg(&plugin_socket)
        .arg("--socket")
        .arg(lab.socket())
        .env("RUST_LOG", "debug,tiny_http=info");
    lab.spawn(plugin, "plugin.log").expect("plugin restart");
    assert!(
        wait_until(Duration::from_secs(10), || plugin_socket.exists()),
        "the plugin did not restart:\n{}",
        lab.log("plugin.log")
    );
    docker
        .run(&["rm", "-f", &web])
        .unwrap_or_else(|e| fail(&lab, "docker rm -f (after a plugin restart)", e));
    let ports = vswitch(&lab, &["port", "ls"]);
    assert!(!ports.contains("8080"), "{ports}");

    // `docker network connect` / `disconnect` of a running container.
    let net2 = format!("{prefix}net2");
    let vnet2 = docker
        .network_create(&prefix, &net2, "10.78.0.0/24", &[])
        .unwrap_or_else(|e| fail(&lab, "docker network create", e));
    docker
        .run(&["network", "connect", &net2, &a])
        .unwrap_or_else(|e| fail(&lab, "docker network connect", e));
    let addrs = docker
        .busybox(&a, &["ip", "-4", "addr"])
        .unwrap_or_default();
    assert!(addrs.contains("10.78.0."), "{addrs}");
    retry(Duration::from_secs(10), || {
        docker.busybox(&a, &["ping", "-c", "1", "-W", "2", "10.78.0.1"])
    })
    .unwrap_or_else(|e| fail(&lab, "ping the second network's gateway", e));
    docker
        .run(&["network", "disconnect", &net2, &a])
        .unwrap_or_else(|e| fail(&lab, "docker network disconnect", e));
    let addrs = docker
        .busybox(&a, &["ip", "-4", "addr"])
        .unwrap_or_default();
    assert!(!addrs.contains("10.78.0."), "{addrs}");
    let inspect = vswitch(&lab, &["network", "inspect", &vnet2]);
    assert!(!inspect.contains("10.78.0.2/"), "{inspect}");
    docker
        .run(&["network", "rm", &net2])
        .unwrap_or_else(|e| fail(&lab, "docker network rm", e));

    // `docker rm -f` frees the address: vswitch forgets it, a new container may take it.
    docker
        .run(&["rm", "-f", &b])
        .unwrap_or_else(|e| fail(&lab, "docker rm -f", e));
    let inspect = vswitch(&lab, &["network", "inspect", &vnet]);
    assert!(!inspect.contains(&format!("\"{ip_b}/")), "{inspect}");
    let c = format!("{prefix}c");
    docker
        .run(&[
            "run",
            "-d",
            "--network",
            &net,
            "--ip",
            &ip_b,
            "--name",
            &c,
            &image,
            "busybox",
            "sleep",
            "600",
        ])
        .unwrap_or_else(|e| fail(&lab, "docker run --ip (the freed address)", e));
    let inspect = vswitch(&lab, &["network", "inspect", &vnet]);
    assert!(inspect.contains(&format!("\"{ip_b}/")), "{inspect}");

    // An internal network with its own MTU: no default route, the MTU on the link.
    let net3 = format!("{prefix}net3");
    let internal = ["--internal", "-o", "com.docker.network.driver.mtu=1400"];
    let vnet3 = docker
        .network_create(&prefix, &net3, "10.79.0.0/24", &internal)
        .unwrap_or_else(|e| fail(&lab, "docker network create --internal", e));
    let inspect = vswitch(&lab, &["network", "inspect", &vnet3]);
    assert!(inspect.contains("\"Internal\": true"), "{inspect}");
    let d = format!("{prefix}d");
    docker
        .run(&[
            "run",
            "-d",
            "--network",
            &net3,
            "--name",
            &d,
            &image,
            "busybox",
            "sleep",
            "600",
        ])
        .unwrap_or_else(|e| fail(&lab, "docker run on an internal network", e));
    let routes = docker.busybox(&d, &["ip", "route"]).unwrap_or_default();
    assert!(!routes.contains("default"), "{routes}");
    let link = docker
        .busybox(&d, &["ip", "link", "show", "eth0"])
        .unwrap_or_default();
    assert!(link.contains("mtu 1400"), "{link}");
    docker
        .run(&["rm", "-f", &d])
        .unwrap_or_else(|e| fail(&lab, "docker rm -f", e));
    docker
        .run(&["network", "rm", &net3])
        .unwrap_or_else(|e| fail(&lab, "docker network rm", e));

    // Dual-stack: `--ipv6` with an IPv6 prefix from Docker's IPAM; containers get both
    // families, reach each other and the gateway over IPv6.
    let net6 = format!("{prefix}net6");
    let vnet6 = docker
        .network_create(
            &prefix,
            &net6,
            "10.80.0.0/24",
            &["--ipv6", "--subnet", "fd00:80::/64"],
        )
        .unwrap_or_else(|e| fail(&lab, "docker network create --ipv6", e));
    let inspect = vswitch(&lab, &["network", "inspect", &vnet6]);
    assert!(inspect.contains("\"EnableIPv6\": true"), "{inspect}");
    assert!(inspect.contains("fd00:80::/64"), "{inspect}");
    let (e1, e2) = (format!("{prefix}e1"), format!("{prefix}e2"));
    for name in [&e1, &e2] {
        docker
            .run(&[
                "run",
                "-d",
                "--network",
                &net6,
                "--name",
                name,
                &image,
                "busybox",
                "sleep",
                "600",
            ])
            .unwrap_or_else(|e| fail(&lab, "docker run on a dual-stack network", e));
    }
    let format = format!("{{{{(index .NetworkSettings.Networks \"{net6}\").GlobalIPv6Address}}}}");
    let e2_ip6 = docker
        .run(&["inspect", "-f", &format, &e2])
        .unwrap_or_else(|e| fail(&lab, "docker inspect", e));
    assert!(e2_ip6.starts_with("fd00:80::"), "{e2_ip6:?}");
    let addrs = docker
        .busybox(&e1, &["ip", "-6", "addr", "show", "eth0"])
        .unwrap_or_default();
    assert!(addrs.contains("fd00:80::"), "{addrs}");
    for to in [e2_ip6.as_str(), "fd00:80::1"] {
        docker
            .busybox(&e1, &["ping", "-6", "-c", "1", "-W", "3", to])
            .unwrap_or_else(|e| fail(&lab, &format!("ping -6 {to}"), e));
    }
    let routes = docker
        .busybox(&e1, &["ip", "-6", "route"])
        .unwrap_or_default();
    assert!(routes.contains("default via fd00:80::1"), "{routes}");
    docker
        .run(&["rm", "-f", &e1, &e2])
        .unwrap_or_else(|e| fail(&lab, "docker rm -f", e));
    docker
        .run(&["network", "rm", &net6])
        .unwrap_or_else(|e| fail(&lab, "docker network rm", e));

    // Attach time: `docker run -d` on the vswitch network against `--network none`.
    let mut timings = Vec::new();
    for network in [net.as_str(), "none"] {
        let mut runs = Vec::new();
        for i in 0..5 {
            let name = format!("{prefix}t{network}{i}");
            let t = Instant::now();
            docker
                .run(&[
                    "run",
                    "-d",
                    "--network",
                    network,
                    "--name",
                    &name,
                    &image,
                    "busybox",
                    "sleep",
                    "600",
                ])
                .unwrap_or_else(|e| fail(&lab, "docker run (timed)", e));
            runs.push(t.elapsed());
            let _ = docker.run(&["rm", "-f", &name]);
        }
        timings.push((network.to_string(), median(runs.clone()), runs));
    }
    for (network, m, runs) in &timings {
        eprintln!("docker run -d --network {network}: median {m:?} of {runs:?}");
    }

    // The plugin's share: how long its CreateEndpoint and Join took (daemon calls included).
    let log = lab.log("plugin.log");
    for method in ["CreateEndpoint", "Join"] {
        let needle = format!("answer method=\"NetworkDriver.{method}\" status=200 elapsed_us=");
        let us: Vec<Duration> = log
            .lines()
            .filter_map(|l| l.split_once(needle.as_str()))
            .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .map(Duration::from_micros)
            .collect();
        if !us.is_empty() {
            eprintln!(
                "plugin {method}: median {:?} over {} calls",
                median(us.clone()),
                us.len()
            );
        }
    }

    // `docker network rm` removes the vswitch network.
    let left = docker.run(&["ps", "-aq"]).unwrap_or_default();
    let mut rm = vec!["rm", "-f"];
    rm.extend(left.split_whitespace());
    docker
        .run(&rm)
        .unwrap_or_else(|e| fail(&lab, "docker rm -f", e));
    docker
        .run(&["network", "rm", &net])
        .unwrap_or_else(|e| fail(&lab, "docker network rm", e));
    let nets = vswitch(&lab, &["network", "ls"]);
    assert!(!nets.contains("dk-"), "{nets}");
    assert!(
        !lab.log("plugin.log").contains("panicked"),
        "{}",
        lab.log("plugin.log")
    );
    eprintln!("docker end-to-end: {:?}", started.elapsed());
    drop(docker);
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails the test with the plugin's and dockerd's logs; `DK_HOLD=1` first keeps the lab for
/// 150 s to look around.
fn fail(lab: &RuntimeHost, what: &str, e: io::Error) -> ! {
    if std::env::var_os("DK_HOLD").is_some() {
        eprintln!("HOLDING {what}: {e}");
        std::thread::sleep(Duration::from_secs(150));
    }
    panic!(
        "{what}: {e}\n--- plugin log:\n{}\n--- internet httpd log:\n{}\n--- dockerd log (tail):\n{}",
        lab.log("plugin.log"),
        lab.log("inet-httpd.log"),
        tail(&lab.log("dockerd.log"), 30)
    )
}
