//! Human-readable tables for terminal output.

use datapath::replay::Summary;
use std::path::Path;

/// Prints a replay summary: per-port counters, drops by reason, and the FDB.
pub fn print_replay(s: &Summary, out_dir: &Path) {
    println!(
        "replayed {} frames, wrote {} frames to {}",
        s.frames_in,
        s.frames_out,
        out_dir.display()
    );
    println!();
    println!(
        "{:<12} {:<10} {:>8} {:>8} {:>9} {:>6} {:>8}  drops",
        "PORT", "NETWORK", "RX", "TX", "FORWARDED", "LOCAL", "DROPPED"
    );
    for p in &s.state.ports {
        let c = &p.counters;
        let drops = serde_json::to_string(&c.drops).unwrap_or_default();
        println!(
            "{:<12} {:<10} {:>8} {:>8} {:>9} {:>6} {:>8}  {}",
            p.name,
            p.network,
            c.rx_frames,
            c.tx_frames,
            c.forwarded,
            c.local,
            c.dropped(),
            drops
        );
    }
    println!();
    println!(
        "{:<10} {:<19} {:<12} {:>8}",
        "NETWORK", "MAC", "PORT", "AGE(s)"
    );
    for r in &s.state.fdb {
        println!(
            "{:<10} {:<19} {:<12} {:>8.1}",
            r.network, r.mac, r.port, r.age_secs
        );
    }
    if !s.state.conntrack.is_empty() {
        println!();
        println!("conntrack ({} entries):", s.state.conntrack.len());
        for e in &s.state.conntrack {
            if let Ok(v) = serde_json::to_value(e) {
                println!("  {}", conntrack_line(&v, Some(s.end_time_ns)));
            }
        }
    }
}

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn drops_text(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
        _ => "-".into(),
    }
}

/// `vswitch status`.
pub fn print_status(v: &Value) {
    println!("vswitch {} up {}s", s(&v["version"]), s(&v["uptime_secs"]));
    println!("{}", health_line(&v["health"]));
    println!();
    println!(
        "{:<12} {:<18} {:<14} {:<9} {:<5}",
        "NETWORK", "SUBNET", "GATEWAY", "INTERNAL", "ICC"
    );
    for n in v["networks"].as_array().into_iter().flatten() {
        println!(
            "{:<12} {:<18} {:<14} {:<9} {:<5}",
            s(&n["name"]),
            s(&n["subnet"]),
            s(&n["gateway"]),
            s(&n["internal"]),
            s(&n["icc"])
        );
    }
    println!();
    let containers: Vec<&Value> = v["containers"].as_array().into_iter().flatten().collect();
    // Names run long (host.vswitch.internal, a runtime's ids): the column fits the longest.
    let w = containers
        .iter()
        .map(|c| s(&c["name"]).len())
        .max()
        .unwrap_or(0)
        .max(16);
    println!(
        "{:<w$} {:<12} {:<15} {:<19} {:<8} NETNS",
        "CONTAINER", "NETWORK", "IPV4", "MAC", "PORT"
    );
    for c in containers {
        println!(
            "{:<w$} {:<12} {:<15} {:<19} {:<8} {}",
            s(&c["name"]),
            s(&c["network"]),
            s(&c["ip"]),
            s(&c["mac"]),
            s(&c["port"]),
            s(&c["netns"])
        );
    }
}

/// `vswitch stats`: one line per port.
pub fn print_stats(v: &Value) {
    println!(
        "{:<12} {:<10} {:>10} {:>10} {:>10} {:>7} {:>8}  drops",
        "PORT", "NETWORK", "RX", "TX", "FORWARDED", "LOCAL", "DROPPED"
    );
    for p in v["ports"].as_array().into_iter().flatten() {
        let dropped: u64 = p["drops"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        println!(
            "{:<12} {:<10} {:>10} {:>10} {:>10} {:>7} {:>8}  {}",
            s(&p["name"]),
            s(&p["network"]),
            s(&p["rx_frames"]),
            s(&p["tx_frames"]),
            s(&p["forwarded"]),
            s(&p["local"]),
            dropped,
            drops_text(&p["drops"])
        );
    }
    // Summed over the packet loops: each keeps its own cache.
    let loops = v["flow_cache"].as_array();
    if let Some(loops) = loops.filter(|l| !l.is_empty()) {
        let sum = |k: &str| loops.iter().filter_map(|c| c[k].as_u64()).sum::<u64>();
        println!();
        println!(
            "NAT flow cache ({} loops): {} hits, {} misses, {} fills, {} bypassed",
            loops.len(),
            sum("hits"),
            sum("misses"),
            sum("fills"),
            sum("bypassed")
        );
    }
}

/// `vswitch fdb show`, like `bridge fdb`.
pub fn print_fdb(v: &Value) {
    for r in v.as_array().into_iter().flatten() {
        println!("{}", fdb_line(r));
    }
}

/// One FDB row as `bridge fdb` writes it: `vlan N` after the network on a macvlan network's
/// VLAN.
fn fdb_line(r: &Value) -> String {
    let vlan = match r["vlan"].as_u64() {
        Some(v) => format!(" vlan {v}"),
        None => String::new(),
    };
    format!(
        "{} dev {} network {}{vlan} age {:.1}s",
        s(&r["mac"]),
        s(&r["port"]),
        s(&r["network"]),
        r["age_secs"].as_f64().unwrap_or(0.0)
    )
}

/// `vswitch overlay`: per overlay network, its VNI and flood list, then one line per remote
/// MAC.
pub fn print_overlay(v: &Value) {
    for n in v.as_array().into_iter().flatten() {
        let peers: Vec<&str> = n["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "network {} vni {} peers {}",
            s(&n["network"]),
            s(&n["vni"]),
            if peers.is_empty() {
                "(none)".to_string()
            } else {
                peers.join(",")
            }
        );
        for e in n["endpoints"].as_array().into_iter().flatten() {
            println!(
                "  {} ip {} vtep {} {}",
                s(&e["mac"]),
                e["ip"].as_str().unwrap_or("-"),
                s(&e["vtep"]),
                s(&e["origin"])
            );
        }
    }
}

fn tuple_text(t: &Value) -> String {
    format!(
        "src={} dst={} sport={} dport={}",
        s(&t["src"]),
        s(&t["dst"]),
        s(&t["src_port"]),
        s(&t["dst_port"])
    )
}

/// One conntrack entry in `conntrack -L` style: protocol, seconds left, TCP state, original
/// tuple, `[UNREPLIED]` until a reply was seen, reply tuple, `[ASSURED]`.
pub fn conntrack_line(e: &Value, now_ns: Option<u64>) -> String {
    let state = &e["state"];
    let proto = s(&state["proto"]);
    let mut line = format!("{proto:<5}");
    if let Some(ttl) = now_ns.and_then(|now| {
        e["expires_at"]
            .as_u64()
            .map(|x| x.saturating_sub(now) / 1_000_000_000)
    }) {
        line.push_str(&format!(" {ttl}"));
    }
    if let Some(st) = state["state"].as_str() {
        line.push_str(&format!(" {st}"));
    }
    line.push_str(&format!(" {}", tuple_text(&e["original"])));
    if state["replied"].as_bool() == Some(false) {
        line.push_str(" [UNREPLIED]");
    }
    line.push_str(&format!(" {}", tuple_text(&e["reply"])));
    if e["assured"].as_bool() == Some(true) {
        line.push_str(" [ASSURED]");
    }
    line
}

/// `health: loop0 alive, loop1 DEAD (panicked: ...), rootless helper alive`.
pub fn health_line(h: &Value) -> String {
    let part = |name: String, p: &Value| match p["alive"].as_bool() {
        Some(true) => format!("{name} alive"),
        Some(false) => format!("{name} DEAD ({})", s(&p["reason"])),
        None => format!("{name} unknown"),
    };
    let mut parts: Vec<String> = h["loops"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| part(format!("loop{}", s(&l["worker"])), l))
        .collect();
    for (key, name) in [
        ("rootless_helper", "rootless helper"),
        ("socket_gateway", "socket gateway"),
    ] {
        if h[key].is_object() {
            parts.push(part(name.to_string(), &h[key]));
        }
    }
    if parts.is_empty() {
        return "health: not reported (an older daemon?)".into();
    }
    format!("health: {}", parts.join(", "))
}

/// `vswitch conntrack ls`.
pub fn print_conntrack(
    v: &Value,
    proto: Option<&str>,
    src: Option<std::net::IpAddr>,
    dst: Option<std::net::IpAddr>,
) {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    let mut shown = 0;
    for e in &entries {
        let p = s(&e["state"]["proto"]);
        if proto.is_some_and(|want| !want.eq_ignore_ascii_case(&p)) {
            continue;
        }
        if src.is_some_and(|a| e["original"]["src"] != a.to_string().as_str()) {
            continue;
        }
        if dst.is_some_and(|a| e["original"]["dst"] != a.to_string().as_str()) {
            continue;
        }
        println!("{}", conntrack_line(e, None));
        shown += 1;
    }
    eprintln!("vswitch conntrack: {shown} flow entries shown");
}

/// A connected container.
pub fn print_container(v: &Value) {
    println!(
        "connected {} to {}: {} ({}) on {} in {}",
        s(&v["name"]),
        s(&v["network"]),
        s(&v["ip"]),
        s(&v["mac"]),
        s(&v["port"]),
        s(&v["netns"])
    );
}

/// `vswitch network ls`.
pub fn print_networks(v: &Value) {
    println!(
        "{:<13} {:<14} {:<8} {:<18} {:<14} {:<9} {:<5} {:>10}",
        "NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "INTERNAL", "ICC", "CONTAINERS"
    );
    for n in v.as_array().into_iter().flatten() {
        println!(
            "{:<13} {:<14} {:<8} {:<18} {:<14} {:<9} {:<5} {:>10}",
            s(&n["id"]),
            s(&n["name"]),
            s(&n["driver"]),
            s(&n["subnet"]),
            s(&n["gateway"]),
            s(&n["internal"]),
            s(&n["icc"]),
            s(&n["containers"])
        );
    }
}

/// `vswitch port ls`: a port of a disconnected container shows `-` for its address.
pub fn print_ports(v: &Value) {
    println!(
        "{:<6} {:<15} {:>9}  {:<14} {:<16} {:<15} {:>6}",
        "PROTO", "HOST IP", "HOST PORT", "NETWORK", "CONTAINER", "CONTAINER IP", "PORT"
    );
    for p in v.as_array().into_iter().flatten() {
        println!(
            "{:<6} {:<15} {:>9}  {:<14} {:<16} {:<15} {:>6}",
            s(&p["proto"]),
            host_ip(p),
            s(&p["host_port"]),
            s(&p["network"]),
            s(&p["container"]),
            s(&p["container_ip"]),
            s(&p["container_port"])
        );
    }
}

fn host_ip(p: &Value) -> String {
    p["host_ip"].as_str().unwrap_or("0.0.0.0").to_string()
}

/// The rows of a publish or unpublish answer: one port, or a range under `key`.
fn rows<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    match v[key].as_array() {
        Some(all) => all.iter().collect(),
        None => vec![v],
    }
}

/// `vswitch port publish`.
pub fn print_published(v: &Value) {
    for p in rows(v, "published") {
        println!(
            "{}:{}/{} -> {}:{} ({})",
            host_ip(p),
            p["host_port"],
            s(&p["proto"]),
            s(&p["container_ip"]),
            p["container_port"],
            s(&p["container"])
        );
    }
}

/// `vswitch port rm`.
pub fn print_unpublished(v: &Value) {
    for p in rows(v, "unpublished") {
        println!("unpublished {}/{}", p["host_port"], s(&p["proto"]));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fdb_rows_show_their_vlan_when_they_have_one() {
        let row = serde_json::json!({"mac": "02:00:00:00:00:01", "port": "parent.20",
            "network": "v20", "vlan": 20, "age_secs": 1.25});
        assert_eq!(
            fdb_line(&row),
            "02:00:00:00:00:01 dev parent.20 network v20 vlan 20 age 1.2s"
        );
        let row = serde_json::json!({"mac": "02:00:00:00:00:01", "port": "vsw3",
            "network": "bridge", "age_secs": 0.0});
        assert_eq!(
            fdb_line(&row),
            "02:00:00:00:00:01 dev vsw3 network bridge age 0.0s"
        );
    }
}
