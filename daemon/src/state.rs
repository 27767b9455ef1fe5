//! The daemon's state and who owns it.
//!
//! [`Daemon`] is shared by the accept loop and the control threads behind an `Arc`. Lock order:
//! `changes` (held for the whole of a change, so the store and the pipelines change in step)
//! before `containers`; neither is ever held while waiting on a packet loop that waits for them.
//! The packet loops own the pipelines: the control plane reaches them only by sending closures
//! ([`Daemon::call_all`]) that run between batches.

use anyhow::{Context, Result, bail};
use datapath::engine::{Engine, EngineHandle};
use datapath::io::rootless::HostHelper;
use ipam::{NetworkRecord, NetworkSpec, Store};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use switch::runtime::NetworkDef;
use switch::{Config, PortId};

/// A container attached to a network.
#[derive(Debug, Clone, Serialize)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Network name.
    pub network: String,
    /// Switch port name (= host-side interface).
    pub port: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: String,
    /// Namespace path it lives in.
    pub netns: String,
    /// Interface inside the namespace.
    pub ifname: String,
    /// The container's end of the veth pair, left in the daemon's namespace for a runtime to
    /// move (`peer_in_host`); none when the daemon put it in the namespace itself.
    pub peer: Option<String>,
    /// The network's prefix length.
    pub prefix_len: u8,
    /// The default gateway (none on an internal network).
    pub gateway: Option<Ipv4Addr>,
    /// Its IPv6 address on a dual-stack network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// The network's IPv6 prefix length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_len6: Option<u8>,
    /// The IPv6 default gateway (none on an internal or IPv4-only network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// The resolvers it should use (the gateway's embedded DNS on user-defined networks).
    pub dns: Vec<Ipv4Addr>,
    #[serde(skip)]
    pub(crate) port_id: PortId,
    /// The namespace its path named when it connected (device, inode): a path bound again
    /// to another namespace is not this container any more.
    #[serde(skip)]
    pub(crate) netns_identity: Option<(u64, u64)>,
    /// A TAP inside the container (rootless): it goes away with its descriptor, there is no
    /// host-side link to delete.
    #[serde(skip)]
    pub(crate) tap: bool,
}

/// Fanout group ids for the ports' socket groups: unique per port within the namespace.
pub(crate) struct FanoutGroups(std::sync::atomic::AtomicU16);

impl Container {
    /// Its addresses, IPv4 first (for DNS).
    pub(crate) fn addresses(&self) -> Vec<IpAddr> {
        std::iter::once(IpAddr::V4(self.ip))
            .chain(self.ip6.map(IpAddr::V6))
            .collect()
    }
}

impl FanoutGroups {
    pub(crate) fn new() -> FanoutGroups {
        // Start from a per-process offset so two daemons in one namespace do not collide.
        FanoutGroups(std::sync::atomic::AtomicU16::new(
            (std::process::id() as u16).wrapping_mul(97),
        ))
    }

    pub(crate) fn next(&self) -> u16 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) struct Daemon {
    /// One handle per worker; worker 0 first.
    pub(crate) engines: Vec<EngineHandle>,
    pub(crate) groups: FanoutGroups,
    pub(crate) store: Store,
    /// Attached containers by (network, name).
    pub(crate) containers: Mutex<BTreeMap<(String, String), Container>>,
    /// Serializes control-plane changes so the store and the pipelines change in step.
    pub(crate) changes: Mutex<()>,
    pub(crate) next_link: AtomicU32,
    pub(crate) shutdown: Arc<AtomicBool>,
    /// Keep the links and write the connections at stop (`--keep-state`, `vswitch upgrade`).
    pub(crate) keep_state: AtomicBool,
    /// The state directory (where the kept state is written).
    pub(crate) state_dir: std::path::PathBuf,
    pub(crate) started: Instant,
    pub(crate) mtu: u16,
    pub(crate) rootless: Option<Arc<HostHelper>>,
    /// The socket gateway serving a socket uplink: published ports are its listening sockets.
    pub(crate) gateway: Option<sockgw::GatewayHandle>,
    /// Control clients being served now, and the limits on them (`[limits]`).
    pub(crate) clients: AtomicUsize,
    pub(crate) max_clients: usize,
    pub(crate) max_request: usize,
    /// `[host]`: host ports and the host proxy (both off in rootless mode).
    pub(crate) host: switch::config::HostConfig,
    /// vswitch's own address on the uplink (where published ports are DNATed).
    pub(crate) uplink_address: Option<Ipv4Addr>,
    /// The macvlan the uplink runs on beside the host's stack (`[uplink] mode`), removed at
    /// stop.
    pub(crate) uplink_macvlan: Option<String>,
    /// Published ports reached from the host itself.
    pub(crate) proxy: crate::host_proxy::HostProxy,
    /// `vswitch events` subscribers.
    pub(crate) events: Arc<crate::events::EventBus>,
    /// Each packet loop's health, by worker.
    pub(crate) loops: Vec<Arc<crate::health::LoopHealth>>,
    /// Whether `fault_inject` requests are served (tests only).
    pub(crate) fault_injection: bool,
    /// Control requests served, by command and result.
    pub(crate) requests: crate::handlers::usage::RequestCounts,
    /// The cluster this host is in (`--cluster`), for overlay networks.
    pub(crate) cluster: Option<Box<crate::cluster::ClusterLink>>,
    /// The uplink's MTU (an overlay network's links get it less the VXLAN encapsulation).
    pub(crate) uplink_mtu: u16,
    /// The resolvers the DNS forwards to: a macvlan network's containers get their IPv4 ones
    /// (vswitch answers no DNS on the LAN).
    pub(crate) dns_upstream: Vec<IpAddr>,
}

/// Counts a served control client; the count drops when the client's thread ends, however.
pub(crate) struct ClientSlot(pub(crate) Arc<Daemon>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Daemon {
    /// Runs `f` on every worker, in worker order; `None` if any loop has stopped.
    pub(crate) fn call_all<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Engine) -> T + Send + Clone + 'static,
    ) -> Option<Vec<T>> {
        self.engines.iter().map(|h| h.call(f.clone())).collect()
    }
}

pub(crate) fn def_of(n: &NetworkRecord) -> NetworkDef {
    NetworkDef {
        name: n.name.clone(),
        subnet: n.subnet,
        gateway: n.gateway,
        internal: n.internal,
        icc: n.icc,
        anti_spoofing: n.anti_spoofing,
        ipv6: n.ipv6.map(|v| (v.subnet, v.gateway)),
        vni: n.vni,
        macvlan: n.macvlan.map(|m| switch::config::Macvlan {
            mode: if m.private {
                switch::config::MacvlanMode::Private
            } else {
                switch::config::MacvlanMode::Bridge
            },
            vlan: m.vlan,
        }),
    }
}

/// The resolvers a container of network `n` is given: none on the built-in `bridge` (Docker's
/// copies the host's), the daemon's upstream ones on a macvlan network (vswitch has no address
/// on the LAN to answer from), else the gateway's embedded DNS.
pub(crate) fn resolvers_for(d: &Daemon, n: &NetworkRecord) -> Vec<Ipv4Addr> {
    if n.builtin {
        Vec::new()
    } else if n.macvlan.is_some() {
        d.dns_upstream
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v4) if !v4.is_loopback() => Some(*v4),
                _ => None,
            })
            .collect()
    } else {
        vec![n.gateway]
    }
}

/// Releases container `name`'s lease on `network`; on an overlay network, its record in the
/// cluster store too (if the store cannot be reached now, the next view of it shows the
/// record without a lease here, and it is released then).
pub(crate) fn release_lease(
    d: &Daemon,
    network: &str,
    name: &str,
    unpublish: bool,
) -> Result<Option<ipam::Released>, ipam::StoreError> {
    let released = d.store.release(network, name, unpublish)?;
    if let Some(r) = &released
        && d.store
            .network(network)
            .ok()
            .flatten()
            .is_some_and(|n| n.vni.is_some())
    {
        crate::cluster::release(d, network, r.ip);
    }
    Ok(released)
}

/// Makes the store agree with the topology file's networks: the file's `bridge` must be the
/// default one, other networks are registered (or must match what is registered).
pub(crate) fn register_config_networks(store: &Store, config: &Config) -> Result<()> {
    store.ensure_default_bridge()?;
    for n in &config.networks {
        let (Some(subnet), Some(gateway)) = (n.subnet, n.gateway) else {
            continue;
        };
        let want6 = n.subnet6;
        let macvlan =
            (n.driver == switch::config::NetworkDriver::Macvlan).then_some(ipam::MacvlanConfig {
                vlan: n.vlan,
                private: n.macvlan_mode == switch::config::MacvlanMode::Private,
            });
        match store.network(&n.name)? {
            Some(rec) if !rec.builtin && rec.macvlan != macvlan => bail!(
                "network {:?} is {} in the topology file but {} in the state: make them agree, or remove it with `vswitch network rm`",
                n.name,
                macvlan_text(macvlan),
                macvlan_text(rec.macvlan),
            ),
            Some(rec) if !rec.builtin && rec.ipv6.map(|v| v.subnet) != want6 => bail!(
                "network {:?} has IPv6 prefix {} in the topology file but {} in the state: make them agree, or remove it with `vswitch network rm`",
                n.name,
                want6.map_or("none".to_string(), |s| s.to_string()),
                rec.ipv6
                    .map_or("none".to_string(), |v| v.subnet.to_string()),
            ),
            Some(rec) if rec.subnet == subnet && rec.gateway == gateway => {}
            Some(rec) => bail!(
                "network {:?} is {} (gateway {}) in the topology file but {} (gateway {}) in the state: make them agree, or remove it with `vswitch network rm`",
                n.name,
                subnet,
                gateway,
                rec.subnet,
                rec.gateway
            ),
            None => {
                let mut spec = NetworkSpec::new(n.name.clone());
                spec.subnet = Some(subnet);
                spec.gateway = Some(gateway);
                spec.internal = n.internal;
                spec.icc = n.icc;
                spec.anti_spoofing = n.anti_spoofing;
                spec.ipv6 = n.subnet6.map(|subnet| ipam::Ipv6Spec {
                    subnet: Some(subnet),
                    gateway: n.gateway6,
                });
                spec.macvlan = macvlan;
                store.create_network(spec).with_context(|| {
                    format!("registering network {:?} of the topology file", n.name)
                })?;
            }
        }
    }
    Ok(())
}

/// A network's driver and VLAN, for messages.
fn macvlan_text(m: Option<ipam::MacvlanConfig>) -> String {
    match m {
        None => "a bridge network".to_string(),
        Some(m) => format!(
            "a macvlan network ({}, {})",
            m.vlan
                .map_or("untagged".to_string(), |v| format!("VLAN {v}")),
            if m.private { "private" } else { "bridge" }
        ),
    }
}

/// Gives every worker the whole DNS table of `network`, from its leases (user-defined networks
/// only: the default bridge has no embedded DNS, as in Docker). O(containers): for start-up and
/// network creation; a connect or disconnect changes one name with [`dns_update`].
pub(crate) fn refresh_dns(d: &Daemon, network: &str) {
    let Ok(Some(rec)) = d.store.network(network) else {
        return;
    };
    let table = if rec.builtin {
        None
    } else {
        let leases = d.store.leases(network).unwrap_or_default();
        // An overlay network's containers on other hosts have names here too.
        let remote = d
            .cluster
            .as_deref()
            .map(|c| c.remote_names(network))
            .unwrap_or_default();
        Some(switch::dns_gateway::DnsTable::new(
            leases
                .into_iter()
                .flat_map(|(ip, l)| {
                    let v6 = l.ip6.map(|ip6| (l.container.clone(), IpAddr::V6(ip6)));
                    std::iter::once((l.container, IpAddr::V4(ip))).chain(v6)
                })
                .chain(remote),
        ))
    };
    let name = network.to_string();
    d.call_all(move |e| {
        if let Some(id) = e.pipeline().topology().network_by_name(&name) {
            e.pipeline_mut().set_dns_table(id, table.clone());
        }
    });
}

/// Adds (`add`) or removes container `name` at `ips` (its IPv4 and IPv6 addresses) in
/// `network`'s DNS table on every worker. A network without a table (the default bridge) is
/// left without one.
pub(crate) fn dns_update(d: &Daemon, network: &str, name: &str, ips: Vec<IpAddr>, add: bool) {
    let (network, name) = (network.to_string(), name.to_string());
    d.call_all(move |e| {
        let Some(id) = e.pipeline().topology().network_by_name(&network) else {
            return;
        };
        let p = e.pipeline_mut();
        for &ip in &ips {
            if add {
                p.dns_insert(id, &name, ip);
            } else {
                p.dns_remove(id, &name, ip);
            }
        }
    });
}

pub(crate) fn snapshot(d: &Daemon) -> Result<switch::Snapshot> {
    let parts = d
        .call_all(|e| e.pipeline().snapshot(e.now()))
        .context("the packet loop is not running")?;
    switch::affinity::merge_snapshots(parts).context("no packet loop")
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked holder leaves data that is still consistent for our uses (maps of records).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(network: &str) -> Config {
        Config::from_toml(&format!(
            "[[network]]\nname = \"bridge\"\nsubnet = \"172.17.0.0/16\"\ngateway = \"172.17.0.1\"\n\n{network}"
        ))
        .unwrap()
    }

    #[test]
    fn a_topology_file_s_dual_stack_network_is_registered_with_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("state.redb")).unwrap();
        let web = "[[network]]\nname = \"web\"\nsubnet = \"10.9.0.0/24\"\ngateway = \"10.9.0.1\"\nsubnet6 = \"fd00:9::/64\"\n";
        register_config_networks(&store, &config(web)).unwrap();
        let rec = store.network("web").unwrap().unwrap();
        let v6 = rec.ipv6.expect("the prefix is in the store");
        assert_eq!(v6.subnet.to_string(), "fd00:9::/64");
        assert_eq!(v6.gateway.to_string(), "fd00:9::1");
        // Idempotent; a file that changes the prefix is refused with what to do.
        register_config_networks(&store, &config(web)).unwrap();
        let other = web.replace("fd00:9::/64", "fd00:10::/64");
        let err = register_config_networks(&store, &config(&other)).unwrap_err();
        assert!(err.to_string().contains("make them agree"), "{err}");
    }
}
