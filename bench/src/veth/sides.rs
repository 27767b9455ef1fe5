//! How each side of the `bench veth` comparison is built in the run's [`Lab`].

use super::ovs::Ovs;
use super::*;

impl Lab {
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
        self.start_daemon(&sw, &cfg)?;
        let mut names = Vec::new();
        for (tag, addr) in [("a", "172.17.0.2"), ("b", "172.17.0.3")] {
            let ns = self.netns(tag)?;
            let req = Request::Connect {
                network: "bridge".into(),
                netns: Some(format!("/run/netns/{ns}")),
                name: Some(tag.into()),
                ifname: Some("eth0".into()),
                ip: Some(addr.parse()?),
                ip6: None,
                mac: None,
                peer_in_host: false,
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
