//! `network connect` / `disconnect`: a container's lease, its link (a veth pair, or a TAP made
//! inside it by the rootless helper), its port on every packet loop, and re-attaching the
//! containers whose link survived a restart.

use crate::state::{Container, Daemon, dns_update, lock, release_lease};
use anyhow::{Context, Result, bail};
use datapath::engine::PortIo;
use datapath::io::link::{self, VethSpec};
use datapath::io::linkwatch;
use datapath::io::rootless::Request as HelperRequest;
use datapath::io::tap::Tap;
use datapath::ports::{AfPacketPort, TapPort};
use ipam::LeaseMeta;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::Ordering;
use switch::{PortAddress, PortId, PortKind};

/// What a `connect` asks for (the request's fields).
pub(crate) struct ConnectArgs {
    pub(crate) network: String,
    pub(crate) netns: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) ifname: Option<String>,
    pub(crate) ip: Option<Ipv4Addr>,
    pub(crate) ip6: Option<std::net::Ipv6Addr>,
    pub(crate) mac: Option<String>,
    pub(crate) peer_in_host: bool,
    /// A default route via the gateway in the namespace (not for the host port: the host
    /// keeps its own).
    pub(crate) default_route: bool,
}

/// The name a container gets when the client gives none: `pid-PID` for /proc/PID/ns/net (every
/// process's file is called `net`), else the namespace file's name.
fn default_name(netns: &str) -> Option<String> {
    if let Ok(pid) = container_tap_of(netns) {
        return Some(format!("pid-{pid}"));
    }
    Path::new(netns)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

pub(crate) fn connect(d: &Daemon, args: ConnectArgs) -> Result<Container> {
    let _guard = lock(&d.changes);
    connect_held(d, args)
}

/// [`connect`]'s work, with the `changes` lock already held.
pub(crate) fn connect_held(d: &Daemon, args: ConnectArgs) -> Result<Container> {
    let ConnectArgs {
        network,
        netns,
        name,
        ifname,
        ip,
        ip6,
        mac,
        peer_in_host,
        default_route,
    } = args;
    let network = network.as_str();
    let rec = d
        .store
        .network(network)?
        .with_context(|| format!("no network named {network:?}: see `vswitch network ls`"))?;
    let netns = match (netns, peer_in_host) {
        (Some(_), true) => bail!("give either a namespace or peer_in_host, not both"),
        (None, false) => bail!("give the container's namespace (--netns PATH or --pid PID)"),
        (Some(n), false) => Some(n),
        (None, true) => None,
    };
    if peer_in_host && d.rootless.is_some() {
        bail!("a rootless daemon cannot leave a veth end in its namespace for a runtime to move");
    }
    if let Some(netns) = &netns
        && d.rootless.is_none()
        && !Path::new(netns).exists()
    {
        // A rootless daemon cannot see other user namespaces' files; its helper opens them.
        bail!("namespace {netns} does not exist (give /run/netns/NAME or /proc/PID/ns/net)");
    }
    let name = name
        .or_else(|| netns.as_deref().and_then(default_name))
        .context("give the container a --name")?;
    let mac = mac
        .map(|m| {
            m.parse::<packet::MacAddr>()
                .map_err(|e| anyhow::anyhow!("bad MAC {m:?}: {e} (give aa:bb:cc:dd:ee:ff)"))
        })
        .transpose()?;
    // A container of that name whose namespace is gone (a restart faster than we heard of
    // it) is forgotten first, so the new one gets its network at once.
    let stale = lock(&d.containers)
        .get(&(network.to_string(), name.clone()))
        .is_some_and(|c| !super::lifecycle::alive(c));
    if stale {
        tracing::info!(container = %name, network, "namespace gone: forgetting the old attachment");
        forget(d, network, &name, false)?;
    }
    let netns_identity = netns.as_deref().and_then(super::lifecycle::identity);
    let port = loop {
        let n = d.next_link.fetch_add(1, Ordering::Relaxed);
        let candidate = format!("vsw{n}");
        let peer = format!("{candidate}p");
        if !link::link_exists(&candidate) && !link::link_exists(&peer) {
            break candidate;
        }
    };
    let peer_ifname = format!("{port}p");
    let ifname = ifname.unwrap_or_else(|| "eth0".to_string());
    // The lease is committed first: whatever happens next, the address is never given twice.
    let meta = LeaseMeta {
        netns: netns.clone().unwrap_or_default(),
        ifname: ifname.clone(),
        host_ifname: port.clone(),
        mac: mac.map(|m| m.0),
        ip6,
    };
    // On an overlay network the cluster store hands out the address, so that no two hosts
    // give the same one; the local lease records it as any other.
    let ip = match rec.vni {
        Some(_) => Some(crate::cluster::allocate(d, network, &name, ip, mac)?),
        None => ip,
    };
    let (ip, lease) = match d.store.allocate(network, &name, ip, meta) {
        Ok(l) => l,
        Err(e) => {
            if let (Some(ip), Some(_)) = (ip, rec.vni) {
                crate::cluster::release(d, network, ip);
            }
            return Err(e.into());
        }
    };
    let undo = |d: &Daemon| {
        let _ = link::delete_link(&port);
        let _ = release_lease(d, network, &name, false);
    };
    let mac = match lease.mac.parse::<packet::MacAddr>() {
        Ok(m) => m,
        Err(e) => {
            undo(d);
            bail!("lease has a bad MAC: {e}");
        }
    };
    let address = PortAddress {
        mac: Some(mac),
        ip: Some(ip),
        ip6: lease.ip6,
    };
    let gateway = (!rec.internal).then_some(rec.gateway);
    let v6 = rec.ipv6.zip(lease.ip6);
    let gateway6 = v6.filter(|_| !rec.internal).map(|(n, _)| n.gateway);
    let mtu = rec.mtu.min(d.mtu);
    let attached = match (&d.rootless, &netns) {
        // Rootless: a TAP made inside the container by the helper (no veth can cross into a
        // namespace owned by another user namespace). The link MTU is the bridge's (large).
        (Some(helper), Some(netns)) => container_tap_of(netns)
            .and_then(|pid| {
                let req = HelperRequest::ContainerTap {
                    pid,
                    ifname: ifname.clone(),
                    mac: mac.0,
                    mtu: d.mtu,
                    addr: (ip, rec.subnet.prefix_len()),
                    gateway,
                    addr6: v6.map(|(n, ip6)| (ip6, n.subnet.prefix_len())),
                    gateway6,
                };
                let fd = helper
                    .call(&req)
                    .context("creating the container's TAP device")?;
                Ok(Tap::from_fd(fd, &port)?)
            })
            .and_then(|tap| {
                let ios = vec![Box::new(TapPort::from_tap(tap)) as Box<dyn PortIo>];
                attach_ios(d, network, &port, address, ios)
            }),
        (_, None) => linkwatch::create_veth_pair_here(&port, &peer_ifname, mac.0, mtu)
            .context("creating the veth pair")
            .and_then(|()| attach_port(d, network, &port, address)),
        (None, Some(netns)) => {
            let spec = VethSpec {
                host_ifname: &port,
                peer_ifname: &peer_ifname,
                netns: Path::new(netns),
                container_ifname: &ifname,
                mac: Some(mac.0),
                mtu,
                addr: Some((ip, rec.subnet.prefix_len())),
                gateway: gateway.filter(|_| default_route),
                addr6: v6.map(|(n, ip6)| (ip6, n.subnet.prefix_len())),
                gateway6: gateway6.filter(|_| default_route),
            };
            link::create_container_veth(&spec)
                .context("creating the container's veth pair")
                .and_then(|()| attach_port(d, network, &port, address))
        }
    };
    let port_id = match attached {
        Ok(id) => id,
        Err(e) => {
            undo(d);
            return Err(e);
        }
    };
    let c = Container {
        tap: d.rootless.is_some(),
        name: name.clone(),
        network: network.to_string(),
        port,
        ip,
        mac: lease.mac,
        netns: netns.unwrap_or_default(),
        ifname,
        peer: peer_in_host.then_some(peer_ifname),
        prefix_len: rec.subnet.prefix_len(),
        gateway,
        ip6: lease.ip6,
        prefix_len6: rec.ipv6.map(|n| n.subnet.prefix_len()),
        gateway6,
        dns: crate::state::resolvers_for(d, &rec),
        port_id,
        netns_identity,
    };
    lock(&d.containers).insert((network.to_string(), name.clone()), c.clone());
    dns_update(d, network, &c.name, c.addresses(), true);
    // Ports published to this container before (it was disconnected, or restarted) follow it.
    match d.store.republish(network, &name) {
        Ok(ports) => {
            for (proto, host_port, p) in ports {
                if let Err(e) = super::port::activate(d, proto, host_port, &p) {
                    tracing::warn!(container = %name, "{e:#}");
                }
            }
        }
        Err(e) => tracing::warn!(container = %name, "its published ports stay inactive: {e}"),
    }
    tracing::info!(container = %c.name, ip = %c.ip, port = %c.port, "connected");
    crate::events::container(&d.events, true, &c);
    Ok(c)
}

/// The process whose namespaces a rootless container lives in: `/proc/PID/ns/net` (what
/// `network connect --pid PID` sends).
pub(crate) fn container_tap_of(netns: &str) -> Result<u32> {
    netns
        .strip_prefix("/proc/")
        .and_then(|rest| rest.strip_suffix("/ns/net"))
        .and_then(|pid| pid.parse().ok())
        .context(
            "a rootless daemon attaches containers by process: use `network connect --pid PID`",
        )
}

/// How a `disconnect` goes (the request's flags).
pub(crate) struct DisconnectIf {
    /// The container's published ports go too.
    pub(crate) unpublish: bool,
    /// No such container is not an error.
    pub(crate) missing_ok: bool,
    /// Only the container attached from this namespace path.
    pub(crate) netns: Option<String>,
}

/// Detaches container `name` from `network`: its port, its link, its lease, its DNS name and
/// its tracked flows go; its published ports stay recorded (inactive) unless `unpublish`.
/// `Ok(None)` when no such container is connected (or not from `netns`) and `missing_ok`.
pub(crate) fn disconnect(
    d: &Daemon,
    network: &str,
    name: &str,
    how: DisconnectIf,
) -> Result<Option<Container>> {
    let DisconnectIf {
        unpublish,
        missing_ok,
        netns,
    } = how;
    let _guard = lock(&d.changes);
    if let Some(want) = netns.filter(|n| !n.is_empty()) {
        let other = lock(&d.containers)
            .get(&(network.to_string(), name.to_string()))
            .map(|c| c.netns.clone())
            .filter(|have| *have != want);
        match other {
            Some(_) if missing_ok => return Ok(None),
            Some(have) => bail!("{name:?} on {network:?} is attached from {have}, not {want}"),
            None => {}
        }
    }
    match forget(d, network, name, unpublish) {
        Ok(c) => Ok(Some(c)),
        Err(_) if missing_ok => {
            // A lease without an attachment (a daemon that died mid-connect) goes too.
            release_lease(d, network, name, unpublish)?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// [`disconnect`]'s work, with the `changes` lock already held.
pub(crate) fn forget(d: &Daemon, network: &str, name: &str, unpublish: bool) -> Result<Container> {
    let c = lock(&d.containers)
        .remove(&(network.to_string(), name.to_string()))
        .with_context(|| {
            format!(
                "no container named {name:?} is connected to {network:?} (see `vswitch status`)"
            )
        })?;
    let id = c.port_id;
    remove_port_everywhere(d, id);
    if !c.tap {
        link::delete_link(&c.port).with_context(|| format!("deleting {}", c.port))?;
    }
    if let Some(released) = release_lease(d, network, name, unpublish)? {
        for (proto, host_port, _) in released.unpublished {
            super::port::deactivate(d, proto, host_port, unpublish);
        }
    }
    dns_update(d, network, &c.name, c.addresses(), false);
    let (ip, ip6) = (c.ip, c.ip6);
    d.call_all(move |e| {
        let p = e.pipeline_mut();
        p.forget_address(ip) + ip6.map_or(0, |ip6| p.forget_address6(ip6))
    });
    crate::events::container(&d.events, false, &c);
    Ok(c)
}

/// Whether container `name` on `network` is as it was made: its port on the switch, its host
/// link there, and (when its namespace is known) its interface there up with its MAC and
/// address. The container, or what differs.
pub(crate) fn check(d: &Daemon, network: &str, name: &str) -> Result<Container> {
    let c = lock(&d.containers)
        .get(&(network.to_string(), name.to_string()))
        .cloned()
        .with_context(|| format!("no container named {name:?} is connected to {network:?}"))?;
    if !c.tap && !link::link_exists(&c.port) {
        bail!("the switch's end {} of {name:?} is gone", c.port);
    }
    if c.netns.is_empty() || c.tap {
        return Ok(c);
    }
    check_container_end(&c.netns, &c.ifname, &c.mac, (c.ip, c.prefix_len))
        .with_context(|| format!("container {name:?}"))?;
    Ok(c)
}

/// Whether interface `ifname` in the namespace at `netns` is up with MAC `mac` and address
/// `addr`, as a finished connect leaves it; what differs otherwise.
fn check_container_end(netns: &str, ifname: &str, mac: &str, addr: (Ipv4Addr, u8)) -> Result<()> {
    let state = linkwatch::link_state_in(Path::new(netns), ifname)
        .with_context(|| format!("reading {ifname} in {netns}"))?
        .with_context(|| format!("there is no interface {ifname} in {netns}"))?;
    if !state.up {
        bail!("{ifname} is down");
    }
    let want = mac.parse::<packet::MacAddr>().ok().map(|m| m.0);
    if state.mac != want {
        bail!("{ifname} has MAC {:?}, not {mac}", state.mac);
    }
    if !state.addrs.contains(&addr) {
        bail!(
            "{ifname} lacks its address {}/{} (has {:?})",
            addr.0,
            addr.1,
            state.addrs
        );
    }
    Ok(())
}

/// Re-attaches containers whose link survived a restart; releases the leases of the others.
pub(crate) fn reattach(d: &Daemon) {
    let leases = match d.store.all_leases() {
        Ok(l) => l,
        Err(e) => return tracing::warn!("reading leases: {e}"),
    };
    for (network, ip, lease) in leases {
        // A runtime's veth (Docker's) has no namespace recorded: its link is all there is.
        let alive = link::link_exists(&lease.host_ifname)
            && (lease.netns.is_empty() || Path::new(&lease.netns).exists());
        let rec = d.store.network(&network).ok().flatten();
        // A daemon killed mid-connect leaves a pair whose container end is half made (down,
        // no address): that connect failed for its caller, so its lease goes.
        let half_made = (alive && !lease.netns.is_empty() && d.rootless.is_none())
            .then(|| {
                let prefix_len = rec.as_ref().map_or(32, |r| r.subnet.prefix_len());
                check_container_end(&lease.netns, &lease.ifname, &lease.mac, (ip, prefix_len)).err()
            })
            .flatten();
        let attached = match half_made {
            Some(e) => Err(e.context("its connect did not finish")),
            None => Ok(()),
        }
        .and_then(|()| {
            alive
                .then(|| {
                    let address = PortAddress {
                        mac: lease.mac.parse().ok(),
                        ip: Some(ip),
                        ip6: lease.ip6,
                    };
                    attach_port(d, &network, &lease.host_ifname, address)
                })
                .transpose()
        });
        match attached {
            Ok(Some(port_id)) => {
                if let Some(n) = lease
                    .host_ifname
                    .strip_prefix("vsw")
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    d.next_link.fetch_max(n + 1, Ordering::Relaxed);
                }
                let c = Container {
                    tap: false,
                    name: lease.container.clone(),
                    network: network.clone(),
                    port: lease.host_ifname.clone(),
                    ip,
                    mac: lease.mac.clone(),
                    netns: lease.netns.clone(),
                    ifname: lease.ifname.clone(),
                    // A runtime's veth (no namespace recorded): its peer's name as made.
                    peer: lease
                        .netns
                        .is_empty()
                        .then(|| format!("{}p", lease.host_ifname)),
                    prefix_len: rec.as_ref().map_or(32, |r| r.subnet.prefix_len()),
                    gateway: rec.as_ref().filter(|r| !r.internal).map(|r| r.gateway),
                    ip6: lease.ip6,
                    prefix_len6: rec
                        .as_ref()
                        .and_then(|r| r.ipv6)
                        .map(|n| n.subnet.prefix_len()),
                    gateway6: rec
                        .as_ref()
                        .filter(|r| !r.internal && lease.ip6.is_some())
                        .and_then(|r| r.ipv6)
                        .map(|n| n.gateway),
                    dns: rec
                        .as_ref()
                        .map(|r| crate::state::resolvers_for(d, r))
                        .unwrap_or_default(),
                    port_id,
                    netns_identity: super::lifecycle::identity(&lease.netns),
                };
                tracing::info!(container = %c.name, network = %network, ip = %ip, "re-attached");
                crate::events::container(&d.events, true, &c);
                lock(&d.containers).insert((network.clone(), c.name.clone()), c);
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!("re-attaching {} on {network}: {e:#}", lease.container);
                }
                let _ = link::delete_link(&lease.host_ifname);
                // Flows a kept state restored for it must not greet the address's next holder.
                let ip6 = lease.ip6;
                d.call_all(move |e| {
                    let p = e.pipeline_mut();
                    p.forget_address(ip) + ip6.map_or(0, |a| p.forget_address6(a))
                });
                match release_lease(d, &network, &lease.container, false) {
                    Ok(released) => {
                        for (proto, host_port, _) in
                            released.map(|r| r.unpublished).unwrap_or_default()
                        {
                            super::port::deactivate(d, proto, host_port, false);
                        }
                        tracing::info!(
                            container = %lease.container,
                            network = %network,
                            "link gone: lease released"
                        )
                    }
                    Err(e) => tracing::warn!("releasing {}: {e}", lease.container),
                }
            }
        }
    }
}

/// Opens the host end `ifname` on every worker and adds it to `network`'s bridge, bound to the
/// container's `address` (enforced when the network has anti-spoofing on).
pub(crate) fn attach_port(
    d: &Daemon,
    network: &str,
    ifname: &str,
    address: PortAddress,
) -> Result<PortId> {
    // Queue sockets, not rings: a container port must cost little while idle (a ring per worker
    // held 1 MiB and a kernel timer each; see datapath::io::afpacket).
    let ios = AfPacketPort::open_queue_group(ifname, d.engines.len(), d.groups.next())
        .context("opening AF_PACKET on the host end")?
        .into_iter()
        .map(|p| Box::new(p) as Box<dyn PortIo>)
        .collect();
    attach_ios(d, network, ifname, address, ios)
}

/// Adds port `name` to `network`'s bridge on every worker, each with its I/O from `ios`.
pub(crate) fn attach_ios(
    d: &Daemon,
    network: &str,
    name: &str,
    address: PortAddress,
    ios: Vec<Box<dyn PortIo>>,
) -> Result<PortId> {
    let ifname = name;
    let net_name = network.to_string();
    let ids = d
        .call_all(move |e| e.pipeline().topology().network_by_name(&net_name))
        .context("packet loop not running")?;
    let Some(Some(net_id)) = ids.first().copied() else {
        bail!("network {network:?} is not in the datapath");
    };
    if ios.len() != d.engines.len() {
        bail!("port {name}: one I/O per packet loop needed");
    }
    let mut ids = Vec::with_capacity(ios.len());
    let mut failure = None;
    for (handle, io) in d.engines.iter().zip(ios) {
        let port_name = ifname.to_string();
        let attached = handle.call(move |e| -> Result<PortId, String> {
            let id = e
                .pipeline_mut()
                .add_port(&port_name, PortKind::AfPacket, net_id, address)
                .map_err(|e| e.to_string())?;
            if let Err(err) = e.attach(id, io) {
                // Undone here, since `id` is not returned: every worker must keep the same
                // ports, or the next add would pick different ids on different workers.
                e.pipeline_mut().remove_port(id);
                return Err(err.to_string());
            }
            Ok(id)
        });
        match attached {
            Some(Ok(id)) => ids.push(id),
            Some(Err(e)) => failure = Some(e),
            None => failure = Some("packet loop not running".into()),
        }
    }
    match (failure, ids.first()) {
        (None, Some(&id)) if ids.iter().all(|&i| i == id) => Ok(id),
        (failure, _) => {
            for &id in &ids {
                remove_port_everywhere(d, id);
            }
            bail!(
                "attaching the port failed: {}",
                failure.unwrap_or_else(|| "workers disagree on the port id".into())
            )
        }
    }
}

/// Takes port `id` off every packet loop and out of every pipeline, and closes its sockets on a
/// thread of their own. Closing an AF_PACKET socket waits for an RCU grace period
/// (packet_release → synchronize_net, ~10 ms each): on a loop thread that stalled every frame
/// it serves (a ping between two other containers: p99 12 ms while containers left), and on
/// the control thread it would add it to every `disconnect`, once per worker.
pub(crate) fn remove_port_everywhere(d: &Daemon, id: PortId) {
    let ios = d.call_all(move |e| {
        let io = e.detach(id);
        e.pipeline_mut().remove_port(id);
        io
    });
    let close = move || drop(ios);
    let spawned = std::thread::Builder::new()
        .name("vswitch-close".into())
        .spawn(close);
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread to close a port's sockets: {e}");
    }
}
