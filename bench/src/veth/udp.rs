//! The two 64-byte UDP rows, one routine for both: container → container (`udp_64B_pps`,
//! counted by the receiver's rx_packets) and container → "internet" through NAT
//! (`nat_udp_64B_pps`, counted by a drop rule in the internet namespace that matches only frames
//! that arrived masqueraded). Also the fallback generator (`vswitch bench blast`).

use super::*;
use crate::lab::Lab;
use std::path::Path;

/// Arguments of the hidden `vswitch bench blast`: UDP datagrams as fast as a socket sends them.
#[derive(Args)]
pub struct BlastArgs {
    /// Destination address.
    #[arg(long)]
    dst: Ipv4Addr,
    /// Destination port.
    #[arg(long, default_value_t = 9)]
    port: u16,
    /// Seconds to send for.
    #[arg(long)]
    seconds: f64,
    /// Sockets (one source port, so one flow, each), sent from in turn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    flows: u16,
}

/// The fallback generator: 18-byte UDP payloads (64-byte frames with FCS) in a loop.
pub fn blast(a: BlastArgs) -> Result<()> {
    let mut socks = Vec::new();
    for _ in 0..a.flows {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.connect((a.dst, a.port))?;
        socks.push(sock);
    }
    let payload = [0x41u8; 18];
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let mut sent = 0u64;
    while !stopped() {
        for i in 0..256 {
            // ENOBUFS and ECONNREFUSED (from ICMP port unreachable) are expected under load.
            if socks[i % socks.len()].send(&payload).is_ok() {
                sent += 1;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    println!("{sent}");
    Ok(())
}

/// The most flows the fallback generator opens (one socket each).
pub(super) const BLAST_MAX_FLOWS: u16 = 256;
/// The UDP destination port of both rows (discard); the internet namespaces drop it unanswered.
const SINK_PORT: &str = "9";
/// The uplink address both NAT sides masquerade to.
pub(super) const MASQ_IP: &str = "203.0.113.2";

/// Counting drop rules in an "internet" namespace (raw table, before conntrack, so that
/// namespace tracks nothing): UDP to port 9 from the masquerade address, then any other UDP to
/// port 9. Nothing reaches a socket, so no ICMP port unreachable is sent back.
pub(super) struct Sink {
    ns: String,
    tool: &'static str,
}

impl Sink {
    /// Installs the rules in `ns` (a namespace of this lab; never the root namespace).
    pub(super) fn install(ns: &str, nat_tool: &str) -> Result<Sink> {
        if nat_tool == "iptables" {
            for src in [Some(MASQ_IP), None] {
                let mut rule = vec!["iptables", "-t", "raw", "-A", "PREROUTING"];
                if let Some(s) = src {
                    rule.extend(["-s", s]);
                }
                rule.extend(["-p", "udp", "--dport", SINK_PORT, "-j", "DROP"]);
                in_ns(ns, &rule)?;
            }
            return Ok(Sink {
                ns: ns.into(),
                tool: "iptables",
            });
        }
        in_ns(
            ns,
            &[
                "nft",
                &format!(
                    "add table ip vsbsink; add chain ip vsbsink pre {{ type filter hook prerouting priority -300; }}; \
                     add rule ip vsbsink pre ip saddr {MASQ_IP} udp dport {SINK_PORT} counter drop; \
                     add rule ip vsbsink pre udp dport {SINK_PORT} counter drop"
                ),
            ],
        )?;
        Ok(Sink {
            ns: ns.into(),
            tool: "nft",
        })
    }

    /// (frames that arrived masqueraded, other frames to the port) so far.
    fn counts(&self) -> Result<(u64, u64)> {
        let v: Vec<u64> = if self.tool == "iptables" {
            let out = in_ns(
                &self.ns,
                &[
                    "iptables",
                    "-t",
                    "raw",
                    "-L",
                    "PREROUTING",
                    "-n",
                    "-v",
                    "-x",
                ],
            )?;
            iptables_packets(&out)
        } else {
            nft_packets(&in_ns(
                &self.ns,
                &["nft", "list", "chain", "ip", "vsbsink", "pre"],
            )?)
        };
        match v[..] {
            [masq, other, ..] => Ok((masq, other)),
            _ => bail!(
                "cannot read the counting rules in {} ({})",
                self.ns,
                self.tool
            ),
        }
    }
}

/// The packet counts of `iptables -L CHAIN -n -v -x`'s rules, in order.
fn iptables_packets(out: &str) -> Vec<u64> {
    // "Chain ...", the column header, then one line per rule: pkts first.
    out.lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The packet counts of the `counter` statements of `nft list chain`, in order.
fn nft_packets(out: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| {
            let rest = l.split("counter packets ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Who tracks the NAT flows, to count them after the warm-up.
pub(super) enum Tracker<'a> {
    /// The kernel's conntrack in this namespace.
    Kernel(&'a str),
    /// The vswitch daemon behind this control socket.
    Vswitch(&'a Path),
}

impl Tracker<'_> {
    fn entries(&self) -> Result<u64> {
        match self {
            Tracker::Kernel(ns) => {
                let out = in_ns(ns, &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])?;
                out.trim()
                    .parse()
                    .with_context(|| format!("nf_conntrack_count in {ns}: {out:?}"))
            }
            Tracker::Vswitch(socket) => {
                let v = control::call(socket, &Request::Conntrack)
                    .context("asking the daemon for its tracked connections")?;
                Ok(v["entries"].as_array().map_or(0, |e| e.len() as u64))
            }
        }
    }

    /// vswitch's drops so far, summed over its ports: (receive rings full, the packet loop
    /// behind; dropped in the pipeline, any reason). None for the kernel.
    fn drops(&self) -> Result<Option<(u64, u64)>> {
        let Tracker::Vswitch(socket) = self else {
            return Ok(None);
        };
        let v =
            control::call(socket, &Request::Stats).context("asking the daemon for its counters")?;
        let ports = v["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
        let ring = ports
            .iter()
            .filter_map(|p| p["rx_kernel_drops"].as_u64())
            .sum();
        let pipeline = ports
            .iter()
            .filter_map(|p| p["drops"].as_object())
            .flat_map(|d| d.values().filter_map(|n| n.as_u64()))
            .sum();
        Ok(Some((ring, pipeline)))
    }
}

/// The NAT side of a UDP figure: what counts arrivals and what tracks the flows.
pub(super) struct Nat<'a> {
    pub(super) sink: &'a Sink,
    pub(super) tracker: Tracker<'a>,
}

/// Where a UDP figure is sent and counted.
pub(super) struct Target<'a> {
    /// The sending container (its eth0).
    pub(super) src: &'a str,
    pub(super) src_ip: &'a str,
    /// The namespace whose eth0 receives.
    pub(super) dst: &'a str,
    pub(super) dst_ip: &'a str,
    /// The frames' destination MAC: the receiver's, or the sender's gateway through NAT.
    pub(super) dst_mac: String,
    /// Distinct UDP source ports (10000, 10001, ...); 1: port 4000 only.
    pub(super) flows: u16,
    /// Through NAT: count what arrived masqueraded instead of rx_packets.
    pub(super) nat: Option<Nat<'a>>,
}

/// One UDP measurement.
pub(super) struct Udp {
    /// Frames per second received (through NAT: that arrived masqueraded).
    pub(super) rx: f64,
    /// Frames per second the sender put on its link.
    pub(super) offered: f64,
    /// Through NAT, over the window: frames to the port that arrived not masqueraded.
    pub(super) stray: u64,
    /// Through NAT, over the window: ICMP destination unreachable sent by the receiver.
    pub(super) icmp: u64,
    /// Through NAT: flows tracked after the warm-up.
    pub(super) tracked: Option<u64>,
    /// vswitch, over the window: (frames dropped at its full receive rings, in its pipeline).
    pub(super) drops: Option<(u64, u64)>,
}

/// The MAC address `ns` resolves its default gateway to (pinged once more if not known yet).
pub(super) fn gateway_mac(ns: &str) -> Result<String> {
    let routes: serde_json::Value =
        serde_json::from_str(&ip(&["-n", ns, "-j", "route", "show", "default"])?)?;
    let gw = routes[0]["gateway"]
        .as_str()
        .with_context(|| format!("{ns} has no default route via a gateway"))?
        .to_string();
    for attempt in 0..2 {
        let out = ip(&["-n", ns, "-j", "neigh", "show", &gw, "dev", "eth0"])?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let found = v
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|n| n["lladdr"].as_str());
        if let Some(m) = found {
            return Ok(m.to_string());
        }
        if attempt == 0 {
            let _ = in_ns(ns, &["ping", "-c", "1", "-W", "1", &gw]);
        }
    }
    bail!(
        "{ns} has no neighbour entry for its gateway {gw} (install ping, or check the gateway answers ARP)"
    )
}

/// Fails unless `addr` is an address of `ns` itself: the NAT row's traffic must end there.
pub(super) fn check_local(ns: &str, addr: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(&ip(&["-n", ns, "-j", "route", "get", addr])?)?;
    if v[0]["type"].as_str() != Some("local") {
        bail!("{addr} is not an address of {ns}: refusing to send UDP load to it");
    }
    Ok(())
}

/// ICMP destination unreachable messages sent from `ns` so far.
fn icmp_unreachable_sent(ns: &str) -> Result<u64> {
    let snmp = in_ns(ns, &["cat", "/proc/net/snmp"])?;
    out_dest_unreachs(&snmp)
        .with_context(|| format!("no Icmp OutDestUnreachs in {ns}'s /proc/net/snmp"))
}

/// Icmp OutDestUnreachs of a /proc/net/snmp text.
fn out_dest_unreachs(snmp: &str) -> Option<u64> {
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next(), icmp.next());
    names.zip(values).and_then(|(n, v)| {
        n.split_whitespace()
            .zip(v.split_whitespace())
            .find(|(k, _)| *k == "OutDestUnreachs")
            .and_then(|(_, x)| x.parse().ok())
    })
}

/// 64-byte UDP frames per second received at `t.dst` (and offered by `t.src`): a warm-up, then
/// a window of `secs`. Every load is bounded: trafgen is stopped, blast ends by itself.
pub(super) fn udp_rate(lab: &mut Lab, t: &Target, secs: f64, trafgen: bool) -> Result<Udp> {
    // Through NAT the warm-up also fills the trackers with every flow before the window.
    let warm = if t.nat.is_some() { 1.0 } else { 0.5 };
    let i = if trafgen {
        let conf = lab.dir.join(format!("{}-{}.trafgen", t.src, t.flows));
        let sa = mac(t.src, "eth0")?;
        let sp = if t.flows > 1 {
            format!("dinc(10000, {})", 10000 + u32::from(t.flows) - 1)
        } else {
            "4000".to_string()
        };
        // 14 + 20 + 8 + 18 = 60 bytes, 64 on the wire with the FCS. trafgen recomputes the UDP
        // checksum of every frame whose source port it changes.
        std::fs::write(
            &conf,
            format!(
                "{{ eth(da={}, sa={sa}), ipv4(saddr={}, daddr={}, ttl=64), udp(sp={sp}, dp={SINK_PORT}), fill(0x41, 18) }}\n",
                t.dst_mac, t.src_ip, t.dst_ip
            ),
        )?;
        let conf = conf.to_string_lossy().into_owned();
        // -Q: leave IRQ affinity alone (socket memory limits cannot be changed from a netns).
        lab.spawn(
            t.src,
            &["trafgen", "-o", "eth0", "-c", &conf, "-P", "1", "-Q", "-C"],
            None,
        )?
    } else {
        let exe = std::env::current_exe()?.to_string_lossy().into_owned();
        let total = format!("{}", secs + warm + 2.0);
        let flows = t.flows.min(BLAST_MAX_FLOWS).to_string();
        lab.spawn(
            t.src,
            &[
                &exe,
                "blast",
                "--dst",
                t.dst_ip,
                "--seconds",
                &total,
                "--flows",
                &flows,
            ],
            None,
        )?
    };
    let result = (|| {
        sleep_checked(warm)?;
        if let Some(st) = lab.procs[i].try_wait()? {
            bail!("the packet generator exited early ({st})");
        }
        let tracked = match &t.nat {
            Some(n) => Some(n.tracker.entries()?),
            None => None,
        };
        // Each counter is timed on its own (reading the rules forks a process).
        let stamp = |v: u64| (v, Instant::now());
        let drops0 = t.nat.as_ref().map(|n| n.tracker.drops()).transpose()?;
        // The internet side's counts, the instant they were read, and its ICMP unreachables.
        let sink_now = || -> Result<_> {
            t.nat
                .as_ref()
                .map(|n| {
                    Ok((
                        n.sink.counts()?,
                        Instant::now(),
                        icmp_unreachable_sent(t.dst)?,
                    ))
                })
                .transpose()
        };
        let sink0 = sink_now()?;
        let rx0 = stamp(counters(t.dst, "eth0")?.0);
        let tx0 = stamp(counters(t.src, "eth0")?.1);
        sleep_checked(secs)?;
        let rx1 = stamp(counters(t.dst, "eth0")?.0);
        let tx1 = stamp(counters(t.src, "eth0")?.1);
        let sink1 = sink_now()?;
        let drops1 = t.nat.as_ref().map(|n| n.tracker.drops()).transpose()?;
        let drops = match (drops0.flatten(), drops1.flatten()) {
            (Some((r0, p0)), Some((r1, p1))) => {
                Some((r1.saturating_sub(r0), p1.saturating_sub(p0)))
            }
            _ => None,
        };
        let rate = |a: (u64, Instant), b: (u64, Instant)| {
            b.0.saturating_sub(a.0) as f64 / (b.1 - a.1).as_secs_f64()
        };
        let offered = rate(tx0, tx1);
        Ok(match sink0.zip(sink1) {
            Some((((m0, o0), s0, i0), ((m1, o1), s1, i1))) => Udp {
                rx: rate((m0, s0), (m1, s1)),
                offered,
                stray: o1.saturating_sub(o0),
                icmp: i1.saturating_sub(i0),
                tracked,
                drops,
            },
            None => Udp {
                rx: rate(rx0, rx1),
                offered,
                stray: 0,
                icmp: 0,
                tracked,
                drops,
            },
        })
    })();
    lab.signal(i, "-INT");
    let _ = lab.wait(i, 3.0);
    // Let the queues drain before the next figure.
    std::thread::sleep(Duration::from_millis(300));
    result
}

/// What a NAT UDP row saw besides its figure, in one line.
pub(super) fn nat_note(system: &str, off: &str, flows: u16, udps: &[Udp]) -> String {
    let tracked: Vec<u64> = udps.iter().filter_map(|u| u.tracked).collect();
    let (lo, hi) = (
        tracked.iter().min().copied().unwrap_or(0),
        tracked.iter().max().copied().unwrap_or(0),
    );
    let cold = if lo < u64::from(flows) {
        " (FEWER than the flows sent: not warm)"
    } else {
        ""
    };
    let stray: u64 = udps.iter().map(|u| u.stray).sum();
    let icmp: u64 = udps.iter().map(|u| u.icmp).sum();
    let drops = udps
        .iter()
        .filter_map(|u| u.drops)
        .reduce(|a, b| (a.0 + b.0, a.1 + b.1))
        .map_or(String::new(), |(ring, pipe)| {
            format!("; vswitch dropped {ring} at its full receive rings and {pipe} in its pipeline")
        });
    let plural = if flows == 1 { "" } else { "s" };
    format!(
        "{NAT_UDP} {system} (offloads {off}), {flows} flow{plural}: {lo}–{hi} connections tracked after \
         the warm-up{cold}; over the windows {stray} frames arrived not masqueraded, the \
         internet namespace sent {icmp} ICMP unreachables{drops}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_rules_are_read() {
        let ipt = "Chain PREROUTING (policy ACCEPT 12 packets, 900 bytes)
    pkts      bytes target     prot opt in     out     source               destination
  501234 30074040 DROP       17   --  *      *       203.0.113.2          0.0.0.0/0            udp dpt:9
       3      180 DROP       17   --  *      *       0.0.0.0/0            0.0.0.0/0            udp dpt:9
";
        assert_eq!(iptables_packets(ipt), [501234, 3]);
        let nft = "table ip vsbsink {
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		ip saddr 203.0.113.2 udp dport 9 counter packets 77 bytes 4620 drop
		udp dport 9 counter packets 0 bytes 0 drop
	}
}
";
        assert_eq!(nft_packets(nft), [77, 0]);
    }

    #[test]
    fn icmp_unreachables_are_read() {
        let snmp = "Ip: Forwarding DefaultTTL
Ip: 2 64
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost OutDestUnreachs
Icmp: 4 0 0 0 9 0 0 0 7
Udp: InDatagrams NoPorts
Udp: 1 2
";
        assert_eq!(out_dest_unreachs(snmp), Some(7));
        assert_eq!(out_dest_unreachs("Ip: a\nIp: 1\n"), None);
    }
}
