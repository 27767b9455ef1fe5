//! `network create`, `ls`, `inspect` and `rm`: the store first, then every packet loop; a change
//! the datapath refuses is undone in the store.

use crate::state::{Daemon, def_of, lock, refresh_dns};
use anyhow::{Context, Result, bail};
use control::docker::{Endpoint, Ipam, IpamConfig, NetworkInspect, Peer};
use ipam::{NetworkRecord, NetworkSpec};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What `network create --driver` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// This host's network behind vswitch's gateway.
    Local,
    /// An overlay network across the cluster's hosts.
    Overlay,
    /// Bridged onto the uplink's LAN.
    Macvlan(ipam::MacvlanConfig),
}

impl Kind {
    /// The kind `driver`, `vlan` and `macvlan_mode` of a request name, or why they do not.
    pub(super) fn of(driver: Option<&str>, vlan: Option<u16>, mode: Option<&str>) -> Result<Kind> {
        let kind = match driver {
            None | Some("vswitch" | "bridge" | "local") => Kind::Local,
            Some("overlay") => Kind::Overlay,
            Some("macvlan") => {
                if let Some(v) = vlan
                    && !(1..=switch::config::MAX_VLAN).contains(&v)
                {
                    bail!("vlan {v}: give a VLAN id 1-{}", switch::config::MAX_VLAN);
                }
                let private = match mode {
                    None | Some("bridge") => false,
                    Some("private") => true,
                    Some(other) => {
                        bail!("unknown macvlan mode {other:?}: give bridge or private")
                    }
                };
                return Ok(Kind::Macvlan(ipam::MacvlanConfig { vlan, private }));
            }
            Some(other) => bail!(
                "unknown driver {other:?}: give overlay (a network across the cluster's hosts), \
                 macvlan (bridged onto the uplink's LAN) or leave --driver out (this host's \
                 network)"
            ),
        };
        if vlan.is_some() {
            bail!(
                "--vlan needs --driver macvlan (only a macvlan network is on a VLAN of the uplink)"
            );
        }
        if mode.is_some() {
            bail!("--macvlan-mode needs --driver macvlan");
        }
        Ok(kind)
    }
}

/// Where vswitch's own address on the uplink goes in a macvlan network's spec: never handed out
/// on the untagged LAN it is on (the switch answers ARP for it itself).
pub(crate) const UPLINK_AUX: &str = "vswitch-uplink";

/// Checks a macvlan network's spec against the daemon: an uplink to bridge onto, IPv4 only, not
/// internal, its MTU at most the uplink's (the uplink's by default: a VLAN's tag is not counted
/// against it, as on a Linux VLAN device), and vswitch's uplink address kept out.
fn macvlan_spec(d: &Daemon, spec: &mut NetworkSpec, m: ipam::MacvlanConfig) -> Result<()> {
    let Some(up) = d.uplink_address else {
        bail!(
            "network {:?}: a macvlan network is bridged onto the uplink's LAN, and this daemon \
             has no uplink",
            spec.name
        );
    };
    if let Some(m) = &d.uplink_macvlan {
        bail!(
            "network {:?}: the uplink is the macvlan {m} beside the host's stack, which receives \
             vswitch's own MAC only: a macvlan network's containers need the NIC itself \
             ([uplink] mode = \"raw\")",
            spec.name
        );
    }
    if spec.ipv6.is_some() {
        bail!(
            "network {:?}: IPv6 on a macvlan network is not supported yet",
            spec.name
        );
    }
    if spec.internal {
        bail!(
            "network {:?}: a macvlan network is the uplink's LAN: it cannot be --internal",
            spec.name
        );
    }
    let Some(subnet) = spec.subnet else {
        bail!(
            "network {:?}: a macvlan network needs --subnet (the LAN's) and --gateway (its \
             router; default: the subnet's first host)",
            spec.name
        );
    };
    spec.mtu = Some(spec.mtu.unwrap_or(d.uplink_mtu).min(d.uplink_mtu));
    if m.vlan.is_none() && subnet.contains(&up) && !spec.aux_addresses.values().any(|&a| a == up) {
        spec.aux_addresses.insert(UPLINK_AUX.to_string(), up);
    }
    let first_host = std::net::Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1));
    if spec.gateway.unwrap_or(first_host) == up && m.vlan.is_none() {
        bail!(
            "network {:?}: {up} is vswitch's own address on the uplink, not the LAN's router: \
             give --gateway the router's",
            spec.name
        );
    }
    spec.macvlan = Some(m);
    Ok(())
}

/// Creates a network in the store (an `overlay` one in the cluster's first) and on every
/// loop; answers as `network inspect` does.
pub(super) fn create(d: &Daemon, mut spec: NetworkSpec, kind: Kind) -> Result<NetworkInspect> {
    let _guard = lock(&d.changes);
    let rec = match kind {
        Kind::Overlay => crate::cluster::create_network(d, spec)?,
        Kind::Local => d.store.create_network(spec)?,
        Kind::Macvlan(m) => {
            macvlan_spec(d, &mut spec, m)?;
            d.store.create_network(spec)?
        }
    };
    add_to_loops(d, &rec)?;
    refresh_dns(d, &rec.name);
    super::host_port::ensure(d, &rec.name);
    if rec.macvlan.is_some() {
        uplink_promiscuous(d);
    }
    inspect_one(d, &rec)
}

/// Adds the stored network `rec` to every packet loop; when one refuses it, it leaves the store
/// again and the loop's reason is the error.
pub(crate) fn add_to_loops(d: &Daemon, rec: &NetworkRecord) -> Result<()> {
    let def = def_of(rec);
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
    Ok(())
}

/// Holds the uplink's NIC in promiscuous mode while there is a macvlan network (a NIC delivers
/// frames for its containers' MACs only so), and lets it go when the last one goes. The hold is
/// each packet loop's socket's (PACKET_MR_PROMISC): the kernel drops it when the daemon stops,
/// however it stops. A failure is logged: the network still works on a NIC that floods (a veth,
/// a bridge port), and the log says why a real NIC's containers get nothing.
pub(crate) fn uplink_promiscuous(d: &Daemon) {
    let want = d
        .store
        .networks()
        .unwrap_or_default()
        .iter()
        .any(|n| n.macvlan.is_some());
    let results = d.call_all(move |e| match e.pipeline().topology().uplink {
        Some(up) => e.set_promiscuous(up.port, want).map_err(|e| e.to_string()),
        None => Ok(()),
    });
    match results.and_then(|r| r.into_iter().find(|r| r.is_err())) {
        Some(Err(e)) => tracing::warn!(
            on = want,
            "setting the uplink's promiscuous mode: {e} (a macvlan network's containers get \
             only frames the NIC floods)"
        ),
        _ => tracing::debug!(on = want, "uplink promiscuous mode"),
    }
}

/// One row per network, with its container count.
pub(super) fn ls(d: &Daemon) -> Result<Value> {
    let nets = d.store.networks()?;
    let mut out = Vec::with_capacity(nets.len());
    for n in &nets {
        out.push(json!({
            "id": n.id.get(..12).unwrap_or(&n.id),
            "name": n.name,
            "driver": driver_name(n),
            "vlan": n.macvlan.and_then(|m| m.vlan),
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
    uplink_promiscuous(d);
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
    .chain(n.macvlan.into_iter().flat_map(|m| {
        let mode = if m.private { "private" } else { "bridge" };
        std::iter::once(("vswitch.macvlan_mode".to_string(), mode.to_string()))
            .chain(m.vlan.map(|v| ("vswitch.vlan".to_string(), v.to_string())))
    }))
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
        driver: driver_name(n).into(),
        enable_ipv6: n.ipv6.is_some(),
        ipam: Ipam {
            config: std::iter::once(IpamConfig {
                gateway: n.gateway.to_string(),
                ip_range: n.ip_range.map(|r| r.to_string()),
                subnet: n.subnet.to_string(),
                aux_addresses: n
                    .aux_addresses
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            })
            .chain(n.ipv6.map(|v| IpamConfig {
                gateway: v.gateway.to_string(),
                ip_range: None,
                subnet: v.subnet.to_string(),
                aux_addresses: BTreeMap::new(),
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

/// The driver `network ls` and `inspect` show.
fn driver_name(n: &NetworkRecord) -> &'static str {
    if n.vni.is_some() {
        "overlay"
    } else if n.macvlan.is_some() {
        "macvlan"
    } else {
        "vswitch"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_and_mode_need_the_macvlan_driver() {
        assert_eq!(Kind::of(None, None, None).unwrap(), Kind::Local);
        assert_eq!(
            Kind::of(Some("overlay"), None, None).unwrap(),
            Kind::Overlay
        );
        assert_eq!(
            Kind::of(Some("macvlan"), Some(20), Some("private")).unwrap(),
            Kind::Macvlan(ipam::MacvlanConfig {
                vlan: Some(20),
                private: true
            })
        );
        assert_eq!(
            Kind::of(Some("macvlan"), None, None).unwrap(),
            Kind::Macvlan(ipam::MacvlanConfig::default())
        );
        let e = Kind::of(None, Some(20), None).unwrap_err().to_string();
        assert!(e.contains("--vlan needs --driver macvlan"), "{e}");
        let e = Kind::of(Some("overlay"), None, Some("private"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--macvlan-mode needs --driver macvlan"), "{e}");
        let e = Kind::of(Some("macvlan"), None, Some("vepa"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bridge or private"), "{e}");
        let e = Kind::of(Some("macvlan"), Some(4095), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1-4094"), "{e}");
        let e = Kind::of(Some("ipvlan"), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("macvlan"), "{e}");
    }
}
