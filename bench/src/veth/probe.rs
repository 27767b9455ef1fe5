//! The probes `bench veth` measures and checks its labs with: iperf3 TCP runs, pings, link
//! counters and offload switches, all run inside the lab's namespaces.

use super::*;

/// Turns the offloads vswitch turns off (tx checksum, sg, tso, gso, gro) off, or back on.
pub(super) fn offloads(ns: &str, dev: &str, on: bool) -> Result<()> {
    let v = if on { "on" } else { "off" };
    // Order matters when turning off (dependants first); ethtool applies them together.
    in_ns(
        ns,
        &[
            "ethtool", "-K", dev, "gro", v, "gso", v, "tso", v, "sg", v, "tx", v,
        ],
    )
    .map(|_| ())
}

/// (rx_packets, tx_packets) of `dev` in `ns`.
pub(super) fn counters(ns: &str, dev: &str) -> Result<(u64, u64)> {
    let out = ip(&["-n", ns, "-s", "-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let s = &v[0]["stats64"];
    let get = |dir: &str| s[dir]["packets"].as_u64().context("no packet counters");
    Ok((get("rx")?, get("tx")?))
}

pub(super) fn mac(ns: &str, dev: &str) -> Result<String> {
    let out = ip(&["-n", ns, "-j", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .context("no MAC address")
}

/// A ping that warms FDBs and ARP caches and proves the path works.
pub(super) fn ping(ns: &str, dst: &str) -> Result<()> {
    if !have("ping") {
        return Ok(());
    }
    in_ns(ns, &["ping", "-c", "2", "-i", "0.2", "-W", "2", dst])
        .map(|_| ())
        .with_context(|| format!("no path from {ns} to {dst}"))
}

/// Pings `dst` from `ns` until one reply comes, for at most `secs`.
pub(super) fn ping_within(ns: &str, dst: &str, secs: f64) -> Result<()> {
    if !have("ping") {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        check_stop()?;
        let r = in_ns(ns, &["ping", "-c", "1", "-W", "1", dst]);
        if r.is_ok() || Instant::now() > deadline {
            return r
                .map(|_| ())
                .with_context(|| format!("no path from {ns} to {dst} in {secs} s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(5201);

/// One iperf3 run.
pub(super) struct Tcp {
    /// What the receiver got, Gbit/s.
    pub(super) gbps: f64,
    /// Segments the sender retransmitted (what explains a low figure: drops on the path).
    pub(super) retransmits: Option<u64>,
}

/// TCP Gbit/s from `src` to `dst_ip` (an iperf3 server started in `dst`).
pub(super) fn tcp_rate(
    lab: &mut Lab,
    src: &str,
    dst: &str,
    dst_ip: &str,
    secs: u32,
) -> Result<f64> {
    tcp_run(lab, src, dst, dst_ip, secs).map(|t| t.gbps)
}

/// [`tcp_rate`] with the sender's retransmissions.
pub(super) fn tcp_run(lab: &mut Lab, src: &str, dst: &str, dst_ip: &str, secs: u32) -> Result<Tcp> {
    let port = PORT
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    let server = lab.spawn(dst, &["iperf3", "-s", "-1", "-p", &port], None)?;
    let out = format!("iperf3-{port}.json");
    let t = secs.to_string();
    let mut result = Err(anyhow::anyhow!("iperf3 did not run"));
    // The server needs a moment to listen: retry a refused connection a few times.
    for _ in 0..5 {
        sleep_checked(0.2)?;
        let client = lab.spawn(
            src,
            &[
                "iperf3",
                "-c",
                dst_ip,
                "-p",
                &port,
                "-t",
                &t,
                "-i",
                "0",
                "-J",
                "--connect-timeout",
                "2000",
            ],
            Some(&out),
        )?;
        let ok = lab.wait(client, f64::from(secs) + 15.0)?;
        let text = std::fs::read_to_string(lab.dir.join(&out)).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            result = Ok(Tcp {
                gbps: bps / 1e9,
                retransmits: v["end"]["sum_sent"]["retransmits"].as_u64(),
            });
            break;
        }
        let err = v["error"].as_str().unwrap_or("no output").to_string();
        result = Err(anyhow::anyhow!(
            "iperf3 {src} → {dst_ip}: {err} (exit ok: {ok})"
        ));
        if !err.contains("refused") {
            break;
        }
    }
    let _ = lab.wait(server, 2.0);
    result
}
