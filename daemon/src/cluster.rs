//! The daemon's side of a cluster (`vswitch daemon --cluster etcd://…`): overlay networks and
//! the endpoints other hosts attached to them, from the cluster store (etcd, through the
//! `cluster` crate) into the store and every packet loop.
//!
//! The cluster store is the truth for what spans hosts: an overlay network (subnet, VNI), its
//! address leases (one record per endpoint, held under this host's etcd lease, so a host that
//! dies takes its endpoints with it after the TTL), and each host's VTEP. The `vswitch-cluster`
//! thread receives the store's whole view after every change and makes this host agree: overlay
//! networks created or removed elsewhere are created or removed here, and each network's
//! remote endpoints become the pipeline's VTEP flood list, MAC → VTEP entries, ARP answers and
//! DNS names. While etcd is unreachable nothing here changes: local traffic, and traffic to the
//! endpoints known last, flow on; the view that comes after the reconnection is applied whole.

use crate::state::{Daemon, lock};
use ::cluster::{ClusterView, EndpointRecord};
use anyhow::{Context, Result, bail};
use ipam::{NetworkRecord, NetworkSpec};
use packet::MacAddr;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The VXLAN header and the outer Ethernet, IPv4 and UDP headers: what an overlay network's
/// MTU gives up to the uplink's.
pub(crate) const OVERLAY_OVERHEAD: u16 = 50;

/// `--cluster` and its companions.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// etcd client URLs (`http://host:2379`), several for a cluster of etcd servers.
    pub endpoints: Vec<String>,
    /// This host's name in the cluster (unique per host).
    pub host: String,
    /// How long this host's records outlive it (its etcd lease's TTL).
    pub ttl: Duration,
}

/// Parses `--cluster`'s value: comma-separated `etcd://host:port` (or `http://…`) URLs.
pub fn parse_endpoints(arg: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = arg
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|u| match u.split_once("://") {
            Some(("etcd" | "http", rest)) if !rest.is_empty() => Ok(format!("http://{rest}")),
            Some((scheme, _)) => bail!(
                "--cluster {u:?}: scheme {scheme:?} is not supported: give etcd://HOST:PORT \
                 (plain etcd client URLs; TLS is not supported yet)"
            ),
            None if !u.is_empty() => Ok(format!("http://{u}")),
            None => bail!("--cluster: an empty endpoint"),
        })
        .collect::<Result<_>>()?;
    if urls.is_empty() {
        bail!("--cluster: give at least one etcd endpoint, e.g. etcd://10.0.0.1:2379");
    }
    Ok(urls)
}

/// What this host told its loops about one overlay network's other hosts.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
struct Remote {
    /// The flood list: VTEPs of the hosts with endpoints on the network.
    peers: Vec<Ipv4Addr>,
    /// Their endpoints, by address.
    endpoints: BTreeMap<Ipv4Addr, EndpointRecord>,
}

/// The daemon's cluster session and what it applied.
pub(crate) struct ClusterLink {
    pub(crate) store: ::cluster::Cluster,
    pub(crate) host: String,
    /// Per overlay network, the remote state the loops have now.
    applied: Mutex<BTreeMap<String, Remote>>,
    /// The last view the store sent (for `network inspect`'s peers).
    last_view: Mutex<Option<ClusterView>>,
}

impl ClusterLink {
    /// Joins the cluster as `opts.host` with VTEP `vtep` (the uplink address).
    pub(crate) fn connect(opts: &ClusterOptions, vtep: Ipv4Addr) -> Result<ClusterLink> {
        let cfg = ::cluster::ClusterConfig {
            endpoints: opts.endpoints.clone(),
            prefix: ::cluster::DEFAULT_PREFIX.to_string(),
            host: opts.host.clone(),
            vtep,
            ttl: opts.ttl,
        };
        let store = ::cluster::Cluster::connect(cfg).with_context(|| {
            format!(
                "joining the cluster at {} as host {:?}",
                opts.endpoints.join(","),
                opts.host
            )
        })?;
        Ok(ClusterLink {
            store,
            host: opts.host.clone(),
            applied: Mutex::new(BTreeMap::new()),
            last_view: Mutex::new(None),
        })
    }

    /// Leaves the cluster at stop: this host's records go from every host now, unless `keep`
    /// (a restart that keeps its containers claims them again within the TTL).
    pub(crate) fn leave(&self, keep: bool) {
        if !keep {
            self.store.close();
        }
    }

    /// The remote endpoints of `network` the loops know, as (name, address) for DNS.
    pub(crate) fn remote_names(&self, network: &str) -> Vec<(String, IpAddr)> {
        lock(&self.applied)
            .get(network)
            .map(|r| {
                r.endpoints
                    .values()
                    .map(|e| (e.name.clone(), IpAddr::V4(e.ip)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The hosts with endpoints on `network`, with their VTEPs, from the last view.
    pub(crate) fn peers(&self, network: &str) -> Vec<(String, Ipv4Addr)> {
        let view = lock(&self.last_view);
        let Some(view) = view.as_ref() else {
            return Vec::new();
        };
        let hosts: BTreeSet<&str> = view
            .endpoints
            .iter()
            .filter(|e| e.network == network)
            .map(|e| e.host.as_str())
            .collect();
        view.hosts
            .iter()
            .filter(|h| hosts.contains(h.host.as_str()) || h.host == self.host)
            .map(|h| (h.host.clone(), h.vtep))
            .collect()
    }
}

/// Forgets what the loops were told of `network`'s other hosts (it was removed here: a network
/// of that name made again starts from nothing).
pub(crate) fn forget_network(d: &Daemon, network: &str) {
    if let Some(link) = d.cluster.as_deref() {
        lock(&link.applied).remove(network);
    }
}

/// The MTU of an overlay network's links on this host: the uplink's minus the encapsulation.
pub(crate) fn overlay_mtu(d: &Daemon) -> u16 {
    d.uplink_mtu.saturating_sub(OVERLAY_OVERHEAD).max(68)
}

/// The cluster this daemon is in, or the error a request for an overlay network gets.
pub(crate) fn link(d: &Daemon) -> Result<&ClusterLink> {
    d.cluster.as_deref().context(
        "this daemon is not in a cluster: start it with --cluster etcd://HOST:2379 (and \
         --cluster-host NAME) to use overlay networks",
    )
}

/// `network create --driver overlay`: the network in the cluster store (which gives it its
/// VNI), then here as any network is; the other hosts create it when their view shows it.
pub(crate) fn create_network(d: &Daemon, mut spec: NetworkSpec) -> Result<NetworkRecord> {
    let link = link(d)?;
    let subnet = spec.subnet.context(
        "an overlay network needs --subnet (the same on every host, so none is picked from \
         this host's free pools)",
    )?;
    if spec.ipv6.is_some() {
        bail!("overlay networks are IPv4-only for now: leave out --ipv6 and IPv6 subnets");
    }
    if spec.ip_range.is_some() {
        bail!("overlay networks allocate from the whole subnet: leave out --ip-range");
    }
    let gateway = spec
        .gateway
        .unwrap_or_else(|| Ipv4Addr::from(u32::from(subnet.network()) + 1));
    let made = link.store.create_network(::cluster::NetworkRecord {
        name: spec.name.clone(),
        subnet: subnet.to_string(),
        gateway,
        vni: 0,
        icc: spec.icc,
        internal: spec.internal,
        created_by: link.host.clone(),
    });
    let rec = match made {
        Ok(rec) => rec,
        // Made by another host: creating it on each host (as Docker and CNI set-ups do) joins
        // it, when the subnet agrees.
        Err(::cluster::Error::NetworkExists(_)) => {
            let view = link.store.view()?;
            let rec = view
                .networks
                .into_iter()
                .find(|n| n.name == spec.name)
                .with_context(|| {
                    format!("overlay network {:?} went meanwhile: try again", spec.name)
                })?;
            if rec.subnet.parse::<ipnet::Ipv4Net>().ok() != Some(subnet.trunc()) {
                bail!(
                    "overlay network {:?} exists in the cluster with subnet {}: give that \
                     subnet to join it, or another name",
                    spec.name,
                    rec.subnet
                );
            }
            if let Some(local) = d.store.network(&spec.name)?
                && local.vni == Some(rec.vni)
            {
                return Ok(local);
            }
            rec
        }
        Err(e) => return Err(e.into()),
    };
    spec.gateway = Some(gateway);
    spec.vni = Some(rec.vni);
    spec.mtu = Some(overlay_mtu(d).min(spec.mtu.unwrap_or(u16::MAX)));
    // Anti-spoofing needs every port's address, which remote endpoints are not (yet) checked
    // against; the local ports keep it.
    Ok(d.store.create_network(spec)?)
}

/// An address for container `name` on overlay network `network`, from the cluster store (the
/// one asked for, or the lowest free), recorded there as this host's endpoint with its MAC
/// (the one asked for, or the Docker-style one derived from the address).
pub(crate) fn allocate(
    d: &Daemon,
    network: &str,
    name: &str,
    ip: Option<Ipv4Addr>,
    mac: Option<MacAddr>,
) -> Result<Ipv4Addr> {
    let link = link(d)?;
    let mac = mac.map(|m| m.to_string());
    link.store
        .allocate(network, name, mac.as_deref(), ip)
        .with_context(|| format!("allocating an address on overlay network {network:?}"))
}

/// Gives `ip` on overlay network `network` back to the cluster store (logged if it cannot be
/// reached: the next view shows the record without a lease here, and it is released then).
pub(crate) fn release(d: &Daemon, network: &str, ip: Ipv4Addr) {
    if let Some(link) = d.cluster.as_deref()
        && let Err(e) = link.store.release(network, ip)
    {
        tracing::warn!(network, %ip, "cluster store: {e}; the record goes at the next view");
    }
}

/// Starts the thread that applies the cluster's views (and the first one now, so the
/// networks of the cluster exist before the containers of the last run are re-attached).
pub(crate) fn start(d: &Arc<Daemon>) -> Result<()> {
    let Some(link) = d.cluster.as_deref() else {
        return Ok(());
    };
    let views = link.store.subscribe();
    claim_reattached(d, link);
    match link.store.view() {
        Ok(view) => apply(d, &view),
        Err(e) => tracing::warn!("cluster store: {e:#}; overlay networks wait for it"),
    }
    let d = Arc::clone(d);
    std::thread::Builder::new()
        .name("vswitch-cluster".into())
        .spawn(move || {
            while !d.shutdown.load(Ordering::Relaxed) {
                match views.recv_timeout(Duration::from_millis(200)) {
                    Ok(mut view) => {
                        // Only the newest of a burst matters: each view is whole.
                        while let Ok(v) = views.try_recv() {
                            view = v;
                        }
                        apply(&d, &view);
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
            }
        })
        .context("starting the cluster thread")?;
    Ok(())
}

/// The overlay containers the start re-attached are this host's endpoints again in the cluster
/// store (under this run's lease); one another host took meanwhile is reported.
fn claim_reattached(d: &Daemon, link: &ClusterLink) {
    let overlays: BTreeSet<String> = d
        .store
        .networks()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.vni.is_some())
        .map(|n| n.name)
        .collect();
    let mine: Vec<_> = lock(&d.containers)
        .values()
        .filter(|c| overlays.contains(&c.network))
        .cloned()
        .collect();
    for c in mine {
        if let Err(e) = link.store.claim(&c.network, &c.name, &c.mac, c.ip) {
            tracing::error!(
                container = %c.name,
                network = %c.network,
                ip = %c.ip,
                "cannot claim its address in the cluster again: {e:#}"
            );
        }
    }
}

/// Makes this host agree with `view`: its overlay networks, then their remote endpoints.
fn apply(d: &Daemon, view: &ClusterView) {
    let Some(link) = d.cluster.as_deref() else {
        return;
    };
    let _guard = lock(&d.changes);
    *lock(&link.last_view) = Some(view.clone());
    let local = match d.store.networks() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("cluster: reading the networks: {e}");
            return;
        }
    };
    for rec in &view.networks {
        match local.iter().find(|l| l.name == rec.name) {
            None => {
                if let Err(e) = create_here(d, rec) {
                    tracing::warn!(network = %rec.name, "cannot create the overlay network here: {e:#}");
                }
            }
            Some(l) if l.vni != Some(rec.vni) => tracing::warn!(
                network = %rec.name,
                "the cluster's overlay network has the name of a network of this host: it is \
                 not joined here until that one is removed"
            ),
            Some(_) => {}
        }
    }
    for l in local.iter().filter(|l| l.vni.is_some()) {
        if !view
            .networks
            .iter()
            .any(|n| n.name == l.name && Some(n.vni) == l.vni)
        {
            remove_here(d, &l.name);
        }
    }
    let overlays: Vec<String> = match d.store.networks() {
        Ok(n) => n
            .into_iter()
            .filter(|n| n.vni.is_some())
            .map(|n| n.name)
            .collect(),
        Err(_) => return,
    };
    // Records of this host without a lease here (a release the store missed while it was
    // unreachable, or a run that died before it released) go.
    for e in view.endpoints.iter().filter(|e| e.host == link.host) {
        let leased = d
            .store
            .leases(&e.network)
            .is_ok_and(|l| l.iter().any(|(ip, _)| *ip == e.ip));
        if !leased {
            tracing::info!(network = %e.network, ip = %e.ip, "releasing a stale record of this host");
            release(d, &e.network, e.ip);
        }
    }
    // Containers of this host without a record (a claim made while etcd was down) get it.
    let unrecorded: Vec<_> = lock(&d.containers)
        .values()
        .filter(|c| overlays.contains(&c.network))
        .filter(|c| {
            !view
                .endpoints
                .iter()
                .any(|e| e.network == c.network && e.ip == c.ip && e.host == link.host)
        })
        .cloned()
        .collect();
    for c in unrecorded {
        match link.store.claim(&c.network, &c.name, &c.mac, c.ip) {
            Ok(()) => {
                tracing::info!(container = %c.name, ip = %c.ip, "recorded in the cluster again")
            }
            Err(e) => {
                tracing::warn!(container = %c.name, ip = %c.ip, "cannot record it in the cluster: {e}")
            }
        }
    }
    let mut applied = lock(&link.applied);
    applied.retain(|name, _| overlays.contains(name));
    for name in overlays {
        let endpoints: BTreeMap<Ipv4Addr, EndpointRecord> = view
            .endpoints
            .iter()
            .filter(|e| e.network == name && e.host != link.host)
            .map(|e| (e.ip, e.clone()))
            .collect();
        let mut peers: Vec<Ipv4Addr> = endpoints.values().map(|e| e.vtep).collect();
        peers.sort();
        peers.dedup();
        let want = Remote { peers, endpoints };
        let had = applied.entry(name.clone()).or_default();
        if *had != want {
            push_remote(d, &name, had, &want);
            *had = want;
        }
    }
}

/// Tells every loop what changed on `network`'s other hosts, from `had` to `want`.
fn push_remote(d: &Daemon, network: &str, had: &Remote, want: &Remote) {
    let gone: Vec<EndpointRecord> = had
        .endpoints
        .iter()
        .filter(|(ip, e)| want.endpoints.get(ip) != Some(e))
        .map(|(_, e)| e.clone())
        .collect();
    let new: Vec<(EndpointRecord, MacAddr)> = want
        .endpoints
        .iter()
        .filter(|(ip, e)| had.endpoints.get(ip) != Some(e))
        .filter_map(|(_, e)| match e.mac.parse::<MacAddr>() {
            Ok(mac) => Some((e.clone(), mac)),
            Err(err) => {
                tracing::warn!(network, ip = %e.ip, "endpoint with a bad MAC {:?} skipped: {err}", e.mac);
                None
            }
        })
        .collect();
    tracing::info!(
        network,
        peers = ?want.peers,
        endpoints = want.endpoints.len(),
        "overlay peers updated"
    );
    let (network, peers) = (network.to_string(), want.peers.clone());
    d.call_all(move |e| {
        let Some(id) = e.pipeline().topology().network_by_name(&network) else {
            return;
        };
        let p = e.pipeline_mut();
        for g in &gone {
            if let Ok(mac) = g.mac.parse::<MacAddr>() {
                p.remove_overlay_endpoint(id, mac);
            }
            p.dns_remove(id, &g.name, g.ip);
        }
        for (n, mac) in &new {
            p.set_overlay_endpoint(id, *mac, Some(n.ip), n.vtep);
            p.dns_insert(id, &n.name, n.ip);
        }
        p.set_overlay_peers(id, &peers);
    });
}

/// An overlay network another host created, made here: in the store and on every loop.
fn create_here(d: &Daemon, rec: &::cluster::NetworkRecord) -> Result<()> {
    let subnet: ipnet::Ipv4Net = rec
        .subnet
        .parse()
        .with_context(|| format!("the cluster's subnet {:?}", rec.subnet))?;
    let mut spec = NetworkSpec::new(rec.name.clone());
    spec.subnet = Some(subnet);
    spec.gateway = Some(rec.gateway);
    spec.icc = rec.icc;
    spec.internal = rec.internal;
    spec.vni = Some(rec.vni);
    spec.mtu = Some(overlay_mtu(d));
    let local = d.store.create_network(spec)?;
    crate::handlers::add_network_to_loops(d, &local)?;
    crate::state::refresh_dns(d, &local.name);
    crate::handlers::ensure_host_port(d, &local.name);
    tracing::info!(network = %local.name, vni = rec.vni, "overlay network joined");
    Ok(())
}

/// An overlay network gone from the cluster, removed here unless containers of this host are
/// still on it (they keep working locally; `network rm` after they leave).
fn remove_here(d: &Daemon, name: &str) {
    let busy = lock(&d.containers).keys().any(|(n, _)| n == name);
    if busy {
        tracing::warn!(
            network = name,
            "the overlay network is gone from the cluster but has containers here: kept"
        );
        return;
    }
    match crate::handlers::remove_network_held(d, name) {
        Ok(()) => tracing::info!(network = name, "overlay network left"),
        Err(e) => tracing::warn!(
            network = name,
            "cannot remove the overlay network here: {e:#}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_endpoints_parse_to_client_urls() {
        assert_eq!(
            parse_endpoints("etcd://10.0.0.1:2379, etcd://10.0.0.2:2379").unwrap(),
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(
            parse_endpoints("10.0.0.1:2379").unwrap(),
            ["http://10.0.0.1:2379"]
        );
        let e = parse_endpoints("https://x:2379").unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(parse_endpoints(" , ").is_err());
    }
}
