//! The namespaces, processes and files of one `bench veth` run, and how each side of the
//! comparison is built in them; `Drop` removes them all, also after an error or Ctrl-C.

use super::ovs::Ovs;
use super::*;

/// The namespaces, processes and files of one run; `Drop` removes them all.
pub(super) struct Lab {
    pub(super) prefix: String,
    pub(super) namespaces: Vec<String>,
    pub(super) procs: Vec<Child>,
    pub(super) daemon: Option<Child>,
    pub(super) dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if matches!(p.try_wait(), Ok(None)) {
                signal_group(p, "-KILL");
            }
            let _ = p.kill();
            let _ = p.wait();
        }
        if let Some(mut d) = self.daemon.take() {
            // SIGTERM: the daemon removes the links it made, then exits.
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !matches!(d.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in self.namespaces.iter().rev() {
            delete_netns(ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    pub(super) fn new() -> Result<Lab> {
        let prefix = format!("vsb{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{prefix}-state"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        Ok(Lab {
            prefix,
            namespaces: Vec::new(),
            procs: Vec::new(),
            daemon: None,
            dir,
        })
    }

    pub(super) fn netns(&mut self, tag: &str) -> Result<String> {
        let name = format!("{}-{tag}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A veth pair `a_if` in `a` and `b_if` in `b`, both up.
    pub(super) fn veth(a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        ip(&[
            "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
        ])?;
        ip(&["-n", a, "link", "set", a_if, "up"])?;
        ip(&["-n", b, "link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Starts `cmd` in `ns` in its own process group (the terminal's Ctrl-C reaches only the
    /// bench, which then stops it), stdout to `out` if given.
    pub(super) fn spawn(&mut self, ns: &str, cmd: &[&str], out: Option<&str>) -> Result<usize> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        match out {
            Some(f) => c.stdout(std::fs::File::create(self.dir.join(f))?),
            None => c.stdout(Stdio::null()),
        };
        let child = c.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
        self.procs.push(child);
        Ok(self.procs.len() - 1)
    }

    /// Waits for process `i` to exit, at most `secs`; kills it past that.
    pub(super) fn wait(&mut self, i: usize, secs: f64) -> Result<bool> {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        loop {
            if let Some(st) = self.procs[i].try_wait()? {
                return Ok(st.success());
            }
            if stopped() || Instant::now() >= deadline {
                signal_group(&self.procs[i], "-KILL");
                let _ = self.procs[i].kill();
                let _ = self.procs[i].wait();
                check_stop()?;
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the process group of process `i` (it leads its own group, see
    /// [`Lab::spawn`]): trafgen forks its sender, which must stop too.
    pub(super) fn signal(&mut self, i: usize, sig: &str) {
        signal_group(&self.procs[i], sig);
    }

    pub(super) fn socket(&self) -> PathBuf {
        self.dir.join("vswitch.sock")
    }

    pub(super) fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The vswitch side: daemon in `sw`, uplink to `inet`, containers `a` and `b`.
    pub(super) fn build_vswitch(&mut self) -> Result<(String, String, String)> {
        let sw = self.netns("sw")?;
        let inet = self.netns("inet")?;
        Lab::veth(&sw, "up0", &inet, "eth0")?;
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{INET_IP}/24"),
            "dev",
            "eth0",
        ])?;
        // The peer keeps the kernel's default offloads: vswitch's ports carry super-frames and
        // partial checksums (PACKET_VNET_HDR).
        let cfg = self.dir.join("topo.toml");
        std::fs::write(
            &cfg,
            r#"
[[network]]
name = "bridge"
subnet = "172.17.0.0/16"
gateway = "172.17.0.1"

[[port]]
name = "up0"
kind = "af_packet"

[uplink]
port = "up0"
address = "203.0.113.2"
subnet = "203.0.113.0/24"
"#,
        )?;
        let exe = crate::harness::vswitch_binary()?;
        let log = std::fs::File::create(self.dir.join("daemon.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &sw])
            .arg(&exe)
            .arg("daemon")
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start the vswitch daemon")?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.socket().exists() {
            check_stop()?;
            if let Some(d) = self.daemon.as_mut()
                && let Ok(Some(st)) = d.try_wait()
            {
                bail!("the daemon exited ({st}):\n{}", self.daemon_log());
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not open its socket in 15 s:\n{}",
                    self.daemon_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut names = Vec::new();
        for (tag, addr) in [("a", "172.17.0.2"), ("b", "172.17.0.3")] {
            let ns = self.netns(tag)?;
            let req = Request::Connect {
                network: "bridge".into(),
                netns: format!("/run/netns/{ns}"),
                name: Some(tag.into()),
                ifname: Some("eth0".into()),
                ip: Some(addr.parse()?),
            };
            control::call(&self.socket(), &req)
                .with_context(|| format!("connecting {ns}:\n{}", self.daemon_log()))?;
            names.push(ns);
        }
        let b = names.pop().unwrap_or_default();
        let a = names.pop().unwrap_or_default();
        Ok((a, b, inet))
    }

    /// The kernel side: `br` with br0 (172.17.0.1/16) and containers `ba`, `bb` on it, routing
    /// with MASQUERADE to `binet`. Returns (ba, bb, binet, br).
    pub(super) fn build_kernel(
        &mut self,
        nat_tool: &str,
    ) -> Result<(String, String, String, String)> {
        let br = self.netns("br")?;
        let binet = self.netns("binet")?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "addr", "add", "172.17.0.1/16", "dev", "br0"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let mut cs = Vec::new();
        for (tag, addr) in [("ba", "172.17.0.2"), ("bb", "172.17.0.3")] {
            let ns = self.netns(tag)?;
            let port = format!("v{tag}");
            Lab::veth(&br, &port, &ns, "eth0")?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/16"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "route", "add", "default", "via", "172.17.0.1"])?;
            cs.push(ns);
        }
        Lab::veth(&br, "up0", &binet, "eth0")?;
        ip(&["-n", &br, "addr", "add", "203.0.113.2/24", "dev", "up0"])?;
        ip(&[
            "-n",
            &binet,
            "addr",
            "add",
            &format!("{INET_IP}/24"),
            "dev",
            "eth0",
        ])?;
        in_ns(&br, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // The NAT rule lives in the `br` namespace only, never in the root namespace.
        if nat_tool == "iptables" {
            in_ns(
                &br,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    "172.17.0.0/16",
                    "-o",
                    "up0",
                    "-j",
                    "MASQUERADE",
                ],
            )?;
        } else {
            in_ns(
                &br,
                &[
                    "nft",
                    "add table ip vsbnat; add chain ip vsbnat post { type nat hook postrouting priority 100; }; add rule ip vsbnat post ip saddr 172.17.0.0/16 oifname \"up0\" masquerade",
                ],
            )?;
        }
        let bb = cs.pop().unwrap_or_default();
        let ba = cs.pop().unwrap_or_default();
        Ok((ba, bb, binet, br))
    }

    /// Two containers on one veth pair, no switch: `ra` (172.17.0.2) and `rb` (172.17.0.3).
    pub(super) fn build_raw(&mut self) -> Result<(String, String)> {
        let ra = self.netns("ra")?;
        let rb = self.netns("rb")?;
        Lab::veth(&ra, "eth0", &rb, "eth0")?;
        for (ns, addr) in [(&ra, "172.17.0.2/16"), (&rb, "172.17.0.3/16")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"])?;
        }
        Ok((ra, rb))
    }

    /// The namespaces of the Open vSwitch side: `ovs` (host ends `voa`, `vob`) and containers
    /// `oa`, `ob`. The daemons start later ([`Ovs::start`]).
    pub(super) fn build_ovs(&mut self) -> Result<Ovs> {
        let ns = self.netns("ovs")?;
        let mut cs = Vec::new();
        for (tag, addr) in [("oa", "172.17.0.2/16"), ("ob", "172.17.0.3/16")] {
            let c = self.netns(tag)?;
            Lab::veth(&ns, &format!("v{tag}"), &c, "eth0")?;
            ip(&["-n", &c, "addr", "add", addr, "dev", "eth0"])?;
            cs.push(c);
        }
        let dir = self.dir.join("ovs");
        std::fs::create_dir_all(&dir)?;
        let ob = cs.pop().unwrap_or_default();
        let oa = cs.pop().unwrap_or_default();
        Ok(Ovs {
            ns,
            oa,
            ob,
            dir,
            db: None,
            vswitchd: None,
            tso_lines: 0,
        })
    }
}
