//! `status`, `stats`, `fdb show`, `overlay`, `conntrack ls` and `conntrack flush`: snapshots
//! merged over the packet loops.

use crate::state::{Container, Daemon, lock, snapshot};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use switch::overlay::OverlayRow;

/// Networks, containers and per-worker loop counters.
pub(super) fn status(d: &Daemon) -> Result<Value> {
    let io = d
        .call_all(|e| e.io_counters())
        .context("the packet loop is not running")?;
    let containers: Vec<Container> = lock(&d.containers).values().cloned().collect();
    let networks: Vec<Value> = d
        .store
        .networks()?
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "subnet": n.subnet,
                "gateway": n.gateway,
                "internal": n.internal,
                "icc": n.icc,
                "anti_spoofing": n.anti_spoofing,
            })
        })
        .collect();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": d.started.elapsed().as_secs(),
        "networks": networks,
        "containers": containers,
        "workers": io,
        "health": crate::health::report(d),
    }))
}

/// Per-port counters and drops by reason, bridge and conntrack counters, each packet loop's NAT
/// flow cache counters, conntrack table fill and work (`loops`), NAT ports in use per uplink
/// address, the control requests served, and the multicast group memberships snooping learned.
pub(super) fn stats(d: &Daemon) -> Result<Value> {
    let s = snapshot(d)?;
    let loops = super::usage::loops(d).context("the packet loop is not running")?;
    let flow_cache = d
        .call_all(|e| e.pipeline().flow_cache_stats())
        .context("the packet loop is not running")?;
    // Each loop has its own tables (one per family), each limited to `conntrack.max_entries`:
    // a table that fills refuses new connections even while the others have room.
    let conntrack_tables = d
        .call_all(|e| {
            let (v4, v6) = (e.pipeline().conntrack(), e.pipeline().conntrack6());
            json!({
                "ipv4": { "entries": v4.len(), "max_entries": v4.config().max_entries },
                "ipv6": { "entries": v6.len(), "max_entries": v6.config().max_entries },
            })
        })
        .context("the packet loop is not running")?;
    Ok(json!({
        "ports": s.ports,
        "bridge": s.bridge,
        "conntrack": s.conntrack_counters,
        "conntrack_tables": conntrack_tables,
        "flow_cache": flow_cache,
        "loops": loops,
        "nat_ports_in_use": super::usage::nat_ports_in_use(&s),
        "control_requests": d.requests.all(),
        "multicast_groups": s.groups,
    }))
}

/// The FDB of every loop, merged.
pub(super) fn fdb(d: &Daemon) -> Result<Value> {
    Ok(serde_json::to_value(snapshot(d)?.fdb)?)
}

/// Every overlay network's flood list and remote endpoints, merged over the loops: the cluster's
/// endpoints are on all of them, a learned one on the loops that saw its traffic.
pub(super) fn overlay(d: &Daemon) -> Result<Value> {
    let parts = d
        .call_all(|e| e.pipeline().overlay_rows(e.now()))
        .context("the packet loop is not running")?;
    Ok(serde_json::to_value(merge_overlay_rows(parts))?)
}

/// One row per network; an endpoint once per MAC (the cluster's word over a learned entry).
fn merge_overlay_rows(parts: Vec<Vec<OverlayRow>>) -> Vec<OverlayRow> {
    let mut by_network: BTreeMap<String, OverlayRow> = BTreeMap::new();
    for row in parts.into_iter().flatten() {
        match by_network.get_mut(&row.network) {
            None => {
                by_network.insert(row.network.clone(), row);
            }
            Some(merged) => {
                for e in row.endpoints {
                    match merged.endpoints.iter_mut().find(|m| m.mac == e.mac) {
                        Some(m) if m.origin == "learned" && e.origin != "learned" => *m = e,
                        Some(_) => {}
                        None => merged.endpoints.push(e),
                    }
                }
            }
        }
    }
    let mut rows: Vec<OverlayRow> = by_network.into_values().collect();
    for r in &mut rows {
        r.endpoints
            .sort_by(|a, b| (a.vtep, &a.mac).cmp(&(b.vtep, &b.mac)));
    }
    rows
}

/// Tracked connections and the tracker's counters.
pub(super) fn conntrack(d: &Daemon) -> Result<Value> {
    let s = snapshot(d)?;
    let mut entries = serde_json::to_value(&s.conntrack)?;
    if let (Value::Array(all), Value::Array(v6)) =
        (&mut entries, serde_json::to_value(&s.conntrack6)?)
    {
        all.extend(v6);
    }
    Ok(json!({ "counters": s.conntrack_counters, "entries": entries }))
}

/// Forgets every tracked connection on every loop.
pub(super) fn conntrack_flush(d: &Daemon) -> Result<Value> {
    d.call_all(|e| e.pipeline_mut().flush_conntrack())
        .context("the packet loop is not running")?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::overlay::OverlayEndpointRow;

    fn row(endpoints: &[(&str, &'static str)]) -> OverlayRow {
        OverlayRow {
            network: "ov".into(),
            vni: 256,
            peers: vec!["198.51.100.12".parse().unwrap()],
            endpoints: endpoints
                .iter()
                .map(|(mac, origin)| OverlayEndpointRow {
                    mac: mac.to_string(),
                    ip: None,
                    vtep: "198.51.100.12".parse().unwrap(),
                    origin,
                })
                .collect(),
        }
    }

    #[test]
    fn workers_rows_merge_once_per_mac_with_the_cluster_s_word_first() {
        let merged = merge_overlay_rows(vec![
            vec![row(&[("02:00:00:00:00:01", "learned")])],
            vec![row(&[
                ("02:00:00:00:00:01", "cluster"),
                ("02:00:00:00:00:02", "learned"),
            ])],
        ]);
        assert_eq!(merged.len(), 1);
        let e: Vec<_> = merged[0]
            .endpoints
            .iter()
            .map(|e| (e.mac.as_str(), e.origin))
            .collect();
        assert_eq!(
            e,
            [
                ("02:00:00:00:00:01", "cluster"),
                ("02:00:00:00:00:02", "learned")
            ]
        );
    }
}
