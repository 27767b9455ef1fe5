//! `network create`, `ls`, `inspect` and `rm`: the store first, then every packet loop; a change
//! the datapath refuses is undone in the store.

use crate::state::{Daemon, def_of, lock, refresh_dns};
use anyhow::{Context, Result, bail};
use control::docker::{Endpoint, Ipam, IpamConfig, NetworkInspect, Peer};
use ipam::{NetworkRecord, NetworkSpec};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Creates a network in the store (an `overlay` one in the cluster's first) and on every
/// loop; answers as `network inspect` does.
pub(super) fn create(d: &Daemon, spec: NetworkSpec, overlay: bool) -> Result<NetworkInspect> {
    let _guard = lock(&d.changes);
    let rec = if overlay {
        crate::cluster::create_network(d, spec)?
    } else {
        d.store.create_network(spec)?
    };
    let def = def_of(&rec);
    let added = d.call_all(move |e| {
        e.pipeline_mut()
            .add_network(&def)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    if let Some(Err(e)) = added.as_ref().and_then(|v| v.iter().find(|r| r.is_err())) {
        let _ = d.store.remove_network(&rec.name);
        bail!("the datapath refused the network: {e}");
    }
    refresh_dns(d, &rec.name);
    super::host_port::ensure(d, &rec.name);
    inspect_one(d, &rec)
}

/// One row per network, with its container count.
pub(super) fn ls(d: &Daemon) -> Result<Value> {
    let nets = d.store.networks()?;
    let mut out = Vec::with_capacity(nets.len());
    for n in &nets {
        out.push(json!({
            "id": n.id.get(..12).unwrap_or(&n.id),
            "name": n.name,
            "driver": if n.vni.is_some() { "overlay" } else { "vswitch" },
            "subnet": n.subnet,
            "gateway": n.gateway,
            "subnet6": n.ipv6.map(|v| v.subnet),
            "internal": n.internal,
            "icc": n.icc,
            "anti_spoofing": n.anti_spoofing,
            "containers": d
                .store
                .leases(&n.name)?
                .iter()
                .filter(|(_, l)| l.container != super::host_port::HOST_NAME)
                .count(),
        }));
    }
    Ok(Value::Array(out))
}

/// `docker network inspect`-shaped records of the named networks.
pub(super) fn inspect(d: &Daemon, names: &[String]) -> Result<Vec<NetworkInspect>> {
    names
        .iter()
        .map(|name| {
            let n = d
                .store
                .network(name)?
                .with_context(|| format!("no such network: {name}"))?;
            inspect_one(d, &n)
        })
        .collect()
}

/// Removes a network without containers from the store and every loop; an overlay network
/// from the cluster's store first (refused while any host has containers on it), so that every
/// host leaves it.
pub(super) fn rm(d: &Daemon, name: &str) -> Result<Value> {
    let _guard = lock(&d.changes);
    let rec = d
        .store
        .network(name)?
        .with_context(|| format!("no such network: {name}"))?;
    if rec.vni.is_some() {
        let here = d.store.leases(name)?;
        if let Some((_, l)) = here
            .iter()
            .find(|(_, l)| l.container != super::host_port::HOST_NAME)
        {
            anyhow::bail!(
                "network {name:?} has containers on this host ({} at least): disconnect them first",
                l.container
            );
        }
        crate::cluster::link(d)?.store.delete_network(name)?;
    }
    rm_held(d, name)?;
    Ok(json!({ "name": rec.name, "id": rec.id }))
}

/// [`rm`]'s work here, with the `changes` lock already held.
pub(crate) fn rm_held(d: &Daemon, name: &str) -> Result<()> {
    let kept: Vec<_> = d
        .store
        .published()?
        .into_iter()
        .filter(|(_, _, p)| p.network == name)
        .collect();
    // The host port goes with the network, but only when no container is left on it.
    let containers = d.store.leases(name)?;
    if containers
        .iter()
        .all(|(_, l)| l.container == super::host_port::HOST_NAME)
    {
        super::host_port::remove(d, name)?;
    }
    if let Err(e) = d.store.remove_network(name) {
        super::host_port::ensure(d, name);
        return Err(e.into());
    }
    crate::cluster::forget_network(d, name);
    // The ports its disconnected containers kept went with it.
    for (proto, host_port, _) in &kept {
        super::port::deactivate(d, *proto, *host_port, true);
    }
    let n = name.to_string();
    d.call_all(move |e| e.pipeline_mut().remove_network(&n))
        .context("the packet loop is not running")?;
    Ok(())
}

fn inspect_one(d: &Daemon, n: &NetworkRecord) -> Result<NetworkInspect> {
    let containers = d
        .store
        .leases(&n.name)?
        .into_iter()
        // The host port is the network's own, as the gateway is (see `status` for it).
        .filter(|(_, l)| l.container != super::host_port::HOST_NAME)
        .map(|(ip, l)| {
            let endpoint = Endpoint {
                ipv4_address: format!("{ip}/{}", n.subnet.prefix_len()),
                ipv6_address: match (l.ip6, n.ipv6) {
                    (Some(ip6), Some(v6)) => format!("{ip6}/{}", v6.subnet.prefix_len()),
                    _ => String::new(),
                },
                interface: l.host_ifname,
                mac_address: l.mac,
                name: l.container.clone(),
            };
            (l.container, endpoint)
        })
        .collect();
    let options: BTreeMap<String, String> = BTreeMap::from([
        (
            "com.docker.network.bridge.enable_icc".to_string(),
            n.icc.to_string(),
        ),
        (
            "vswitch.anti_spoofing".to_string(),
            n.anti_spoofing.to_string(),
        ),
        (
            "com.docker.network.driver.mtu".to_string(),
            n.mtu.to_string(),
        ),
    ])
    .into_iter()
    .chain(n.vni.map(|v| ("vswitch.vni".to_string(), v.to_string())))
    .collect();
    let peers = match (n.vni, d.cluster.as_deref()) {
        (Some(_), Some(c)) => c
            .peers(&n.name)
            .into_iter()
            .map(|(name, vtep)| Peer {
                name,
                ip: vtep.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(NetworkInspect {
        containers,
        created: n.created_unix,
        driver: if n.vni.is_some() {
            "overlay"
        } else {
            "vswitch"
        }
        .into(),
        enable_ipv6: n.ipv6.is_some(),
        ipam: Ipam {
            config: std::iter::once(IpamConfig {
                gateway: n.gateway.to_string(),
                ip_range: n.ip_range.map(|r| r.to_string()),
                subnet: n.subnet.to_string(),
            })
            .chain(n.ipv6.map(|v| IpamConfig {
                gateway: v.gateway.to_string(),
                ip_range: None,
                subnet: v.subnet.to_string(),
            }))
            .collect(),
            driver: "default".into(),
            options: BTreeMap::new(),
        },
        id: n.id.clone(),
        internal: n.internal,
        labels: n.labels.clone(),
        name: n.name.clone(),
        options,
        peers,
        scope: if n.vni.is_some() { "global" } else { "local" }.into(),
    })
}
