//! Start-up and shut-down: the topology and the state, one pipeline per worker with the stored
//! networks and published ports, the ports opened on every loop, the loops started, the
//! containers of the last run re-attached; then the accept loop until SIGTERM/SIGINT or a
//! `shutdown` request, and the links the daemon made removed.

use crate::cluster::ClusterLink;
use crate::keep_state::{self, Snapshot};
use crate::state::{Daemon, FanoutGroups, def_of, lock, refresh_dns, register_config_networks};
use crate::uplink::{
    ROOTLESS_TOPOLOGY, gateway_published, host_resolvers, raw_uplink_macvlan, socket_uplink,
};
use crate::{DaemonOptions, handlers, server};
use anyhow::{Context, Result, bail};
use datapath::engine::{Engine, EngineHandle, PortIo};
use datapath::io::link;
use datapath::ports::{AfPacketPort, TapPort};
use ipam::Store;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use switch::{Config, PortId, PortKind};

type LoopThread = JoinHandle<()>;

/// Runs the daemon until SIGTERM/SIGINT or a `shutdown` request.
pub fn run(opts: DaemonOptions) -> Result<()> {
    let kernel = datapath::io::kernel::Kernel::running().context("reading the kernel version")?;
    if opts.rootless.is_none() {
        // Rootful daemons read every container through AF_PACKET rings with virtio-net headers.
        kernel.check().map_err(anyhow::Error::msg)?;
    }
    tracing::info!("{kernel}");
    if opts.keep_state && opts.rootless.is_some() {
        bail!(
            "--keep-state needs a rootful daemon: a rootless daemon's container TAPs and its \
             socket gateway's host sockets close with the process, so no connection could \
             survive the restart"
        );
    }
    let (config, origin) = load_topology(&opts)?;
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("cannot create state dir {}", opts.state_dir.display()))?;
    let store_path = opts.state_dir.join("state.redb");
    let store = Store::open(&store_path)
        .with_context(|| format!("opening state {}", store_path.display()))?;
    register_config_networks(&store, &config)?;
    let checked = store
        .verify()
        .context("the state file failed its consistency check")?;
    tracing::info!(leases = checked, "state verified");

    let workers = opts.workers.max(1);
    let mut pipelines = (0..workers)
        .map(|i| {
            let mut p = stored_pipeline(&config, &origin, &store)?;
            // One IGMP/MLD querier: worker 0. Every worker learns the reports (Owner::All).
            p.set_querier(i == 0);
            Ok(p)
        })
        .collect::<Result<Vec<_>>>()?;
    let topo = pipelines[0].topology().clone();
    // Before any loop runs: the connections the last run kept, each on its owner worker.
    let (kept_fdb, clock_base) = restore_kept(&opts.state_dir, &topo, &mut pipelines);
    // A socket uplink reaches the host's own resolvers too (its sockets live in the host's
    // namespace), loopback ones such as systemd-resolved's 127.0.0.53 included.
    let socket_uplink_port = topo.ports.iter().any(|p| p.kind == PortKind::Socket);
    let upstream = if config.dns.upstream.is_empty() {
        host_resolvers(socket_uplink_port)
    } else {
        config.dns.upstream.clone()
    };
    let (mut engines, handles): (Vec<Engine>, Vec<EngineHandle>) =
        Engine::group(pipelines)?.into_iter().unzip();
    if let Some(base) = clock_base {
        for e in &mut engines {
            e.set_clock_base(base);
        }
    }
    let groups = FanoutGroups::new();
    let uplink_macvlan = raw_uplink_macvlan(&config, &topo)?;
    let opened = open_topology_ports(
        &opts,
        &config,
        &topo,
        &upstream,
        &groups,
        uplink_macvlan.as_deref(),
        &mut engines,
    );
    let gateway = match opened {
        Ok(g) => g,
        Err(e) => {
            if let Some(m) = &uplink_macvlan {
                let _ = link::delete_link(m);
            }
            return Err(e);
        }
    };
    let cluster = match &opts.cluster {
        Some(c) => {
            let up = topo.uplink.context(
                "--cluster needs an [uplink] with an address: it is this host's VTEP, where \
                 the other hosts send its overlay networks' traffic",
            )?;
            if topo.ports.iter().any(|p| p.kind == PortKind::Socket) {
                bail!(
                    "--cluster needs a rootful daemon's uplink (af_packet or tap): a socket \
                     uplink cannot receive the other hosts' VXLAN"
                );
            }
            Some(Box::new(ClusterLink::connect(c, up.address)?))
        }
        None => None,
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let (loop_threads, loops) = crate::health::spawn_loops(engines, &shutdown)?;

    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown))?;
    }
    let daemon = Arc::new(Daemon {
        engines: handles,
        groups,
        store,
        containers: Mutex::new(BTreeMap::new()),
        changes: Mutex::new(()),
        next_link: AtomicU32::new(0),
        shutdown,
        keep_state: AtomicBool::new(opts.keep_state),
        state_dir: opts.state_dir.clone(),
        started: Instant::now(),
        mtu: topo.bridge.mtu,
        rootless: opts.rootless.clone(),
        gateway,
        clients: AtomicUsize::new(0),
        max_clients: topo.limits.control_clients.max(1) as usize,
        max_request: topo.limits.control_request_bytes.max(64) as usize,
        host: if opts.rootless.is_some() {
            switch::config::HostConfig {
                port: false,
                proxy: false,
            }
        } else {
            config.host.clone()
        },
        uplink_address: config.uplink.as_ref().map(|u| u.address),
        uplink_macvlan,
        proxy: Default::default(),
        events: crate::events::EventBus::new(),
        loops,
        fault_injection: opts.fault_injection,
        requests: Default::default(),
        cluster,
        uplink_mtu: topo.uplink.map_or(topo.bridge.mtu, |u| u.mtu),
        dns_upstream: upstream.clone(),
    });
    restore(&daemon, upstream);
    crate::cluster::start(&daemon)?;
    if !kept_fdb.is_empty() {
        // The containers are attached again (under new port ids): their MACs back on them.
        let r = daemon.call_all(move |e| {
            let now = e.now();
            e.pipeline_mut().import_fdb(&kept_fdb, now)
        });
        if let Some(r) = r.and_then(|r| r.into_iter().next()) {
            tracing::info!(fdb = r.fdb, skipped = r.skipped, "kept FDB restored");
        }
    }
    handlers::watch_containers(&daemon);
    if let Some(addr) = opts.metrics {
        crate::metrics::serve(&daemon, addr)?;
    }

    let listener = server::bind_socket(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "vswitch daemon ready");
    eprintln!("vswitch daemon: listening on {}", opts.socket.display());
    server::accept_until_shutdown(&daemon, &listener);
    eprintln!("vswitch daemon: shutting down");
    stop(&daemon, loop_threads);
    let _ = std::fs::remove_file(&opts.socket);
    if let Some((worker, reason)) = crate::health::dead_loop(&daemon) {
        bail!("packet loop {worker} {reason}: the daemon stopped (its supervisor may restart it)");
    }
    Ok(())
}

/// The topology file's text parsed, or the embedded rootless one; with where it came from.
fn load_topology(opts: &DaemonOptions) -> Result<(Config, String)> {
    let (text, origin) = match &opts.config {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read topology {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            ROOTLESS_TOPOLOGY.to_string(),
            "the embedded rootless topology".to_string(),
        ),
    };
    let config = Config::from_toml(&text).with_context(|| origin.clone())?;
    Ok((config, origin))
}

/// A pipeline for one worker, with the store's networks and published ports.
fn stored_pipeline(config: &Config, origin: &str, store: &Store) -> Result<switch::Pipeline> {
    let mut p = switch::Pipeline::new(config).with_context(|| origin.to_string())?;
    let socket_uplink = p
        .topology()
        .ports
        .iter()
        .any(|p| p.kind == PortKind::Socket);
    let uplink = config.uplink.as_ref().map(|u| u.address);
    for n in store.networks()? {
        p.add_network(&def_of(&n))
            .with_context(|| format!("network {:?} from the state", n.name))?;
    }
    for (proto, host_port, publ) in store.published()? {
        // Ports of disconnected containers wait for them; the host proxy serves the host's.
        if let Some(ip) = publ.container_ip
            && handlers::dnat_on_uplink(publ.host_ip, uplink, socket_uplink)
        {
            p.publish(proto.number(), host_port, ip, publ.container_port);
        }
    }
    Ok(p)
}

/// Opens the topology file's ports on every worker (the uplink's through `uplink_macvlan`
/// when it has one); the socket gateway's handle when the uplink is a socket port.
fn open_topology_ports(
    opts: &DaemonOptions,
    config: &Config,
    topo: &switch::Topology,
    upstream: &[IpAddr],
    groups: &FanoutGroups,
    uplink_macvlan: Option<&str>,
    engines: &mut [Engine],
) -> Result<Option<sockgw::GatewayHandle>> {
    let workers = engines.len();
    let mut gateway = None;
    for (i, p) in topo.ports.iter().enumerate() {
        let id = PortId(i as u16);
        let ifname = match uplink_macvlan {
            Some(m) if topo.uplink.is_some_and(|u| u.port == id) => m,
            _ => p.name.as_str(),
        };
        let ios: Vec<Box<dyn PortIo>> = match p.kind {
            PortKind::Tap => TapPort::create_group(&p.name, topo.bridge.mtu, workers)
                .with_context(|| format!("port {}: cannot create TAP device", p.name))?
                .into_iter()
                .map(|t| Box::new(t) as Box<dyn PortIo>)
                .collect(),
            PortKind::AfPacket => AfPacketPort::open_group(ifname, workers, groups.next())
                .with_context(|| {
                    format!(
                        "port {}: cannot open AF_PACKET on interface {ifname:?}",
                        p.name
                    )
                })?
                .into_iter()
                .map(|t| Box::new(t) as Box<dyn PortIo>)
                .collect(),
            // Made by the pipeline for an overlay network: nothing to open, its frames
            // travel in VXLAN through the uplink.
            PortKind::Overlay | PortKind::Parent => continue,
            PortKind::Pcap => bail!(
                "port {}: pcap ports are for `vswitch replay`, not the daemon",
                p.name
            ),
            PortKind::Socket => {
                if workers > 1 {
                    bail!("port {}: a socket uplink needs --workers 1", p.name);
                }
                // The socket gateway reaches loopback IPv4 resolvers (stubs such as
                // systemd-resolved's) for its containers.
                let dns_loopback = upstream
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(a) if a.is_loopback() => Some(*a),
                        _ => None,
                    })
                    .collect();
                let port = socket_uplink(config, topo, dns_loopback, opts.rootless.clone())?;
                gateway = Some(port.handle());
                vec![Box::new(port)]
            }
        };
        for (engine, io) in engines.iter_mut().zip(ios) {
            engine.attach(id, io)?;
        }
    }
    Ok(gateway)
}

/// What the last run left: containers whose link survived, the host ports, the host proxy's
/// and the socket gateway's listening sockets of published ports, DNS upstreams and names.
fn restore(daemon: &Daemon, upstream: Vec<IpAddr>) {
    handlers::reattach(daemon);
    handlers::ensure_host_ports(daemon);
    handlers::activate_published(daemon);
    handlers::uplink_promiscuous(daemon);
    if let Some(g) = &daemon.gateway {
        for (proto, host_port, p) in daemon.store.published().unwrap_or_default() {
            if let Err(e) = g.publish(gateway_published(proto, p.host_ip, host_port)) {
                tracing::warn!("cannot listen on host {proto} port {host_port} again: {e}");
            }
        }
    }
    tracing::info!(?upstream, "DNS forwarding");
    daemon.call_all(move |e| e.pipeline_mut().set_dns_upstream(upstream.clone()));
    if let Ok(nets) = daemon.store.networks() {
        for n in nets {
            refresh_dns(daemon, &n.name);
        }
    }
}

/// The snapshot the last run kept (see [`crate::keep_state`]), read, checked and restored
/// into `pipelines`; the FDB entries to restore once the ports exist, and the clock the loops
/// must start at. A snapshot that cannot be used is reported and ignored: a clean start.
fn restore_kept(
    dir: &std::path::Path,
    topo: &switch::Topology,
    pipelines: &mut [switch::Pipeline],
) -> (Vec<switch::saved::SavedFdb>, Option<u64>) {
    let mut snap = match Snapshot::take(dir) {
        Ok(Some(s)) => s,
        Ok(None) => return (Vec::new(), None),
        Err(e) => {
            tracing::error!(
                "cannot restore the kept state: {e:#}; starting clean (connections through \
                 vswitch must reconnect; the file was removed)"
            );
            eprintln!("vswitch daemon: kept state not restored: {e:#}; starting clean");
            return (Vec::new(), None);
        }
    };
    let (down, ran_out) = snap.age_by_downtime();
    let base = snap.clock_base();
    let (parts, lost) = match pipelines.first() {
        Some(p) => snap.place(topo, p, pipelines.len()),
        None => return (Vec::new(), None),
    };
    let mut done = switch::saved::Restored::default();
    for (p, (v4, v6)) in pipelines.iter_mut().zip(&parts) {
        done.merge(p.import_conntrack(v4, v6, base));
    }
    let per_worker: Vec<usize> = parts.iter().map(|(a, b)| a.len() + b.len()).collect();
    tracing::info!(
        written_by = %snap.header.vswitch,
        down_ms = down / 1_000_000,
        conntrack = done.conntrack,
        conntrack6 = done.conntrack6,
        ?per_worker,
        expired_while_down = ran_out,
        network_gone = lost,
        skipped = done.skipped,
        fdb_entries = snap.fdb.len(),
        "kept state restored"
    );
    for r in &done.reasons {
        tracing::warn!("kept state: skipped {r}");
    }
    (snap.fdb, Some(base))
}

/// Stops the loops (each exporting its state first when the state is kept), then removes the
/// links the daemon made and releases their leases (a runtime's veth pairs stay; see below);
/// with the state kept, every link and lease stays, for the next start to re-attach.
fn stop(daemon: &Daemon, loop_threads: Vec<LoopThread>) {
    let _guard = lock(&daemon.changes);
    let keep = daemon.keep_state.load(std::sync::atomic::Ordering::Relaxed);
    if keep {
        // Export and stop in one command: nothing is processed after a worker's export.
        let parts = daemon.call_all(|e| {
            let now = e.now();
            let saved = e.pipeline().export_state(now);
            e.stop();
            saved
        });
        match parts {
            Some(parts) => {
                let snap = Snapshot::merge(parts);
                let (n4, n6, nf) = (snap.conntrack.len(), snap.conntrack6.len(), snap.fdb.len());
                match snap.write(&daemon.state_dir) {
                    Ok(bytes) => {
                        tracing::info!(
                            conntrack = n4,
                            conntrack6 = n6,
                            fdb = nf,
                            bytes,
                            file = %daemon.state_dir.join(keep_state::FILE).display(),
                            "state kept for the next start; links and leases left in place"
                        );
                    }
                    Err(e) => tracing::error!(
                        "cannot write the kept state: {e:#}; the links stay all the same (the next \
                         start re-attaches them, but connections must reconnect)"
                    ),
                }
            }
            None => {
                tracing::error!("a packet loop had stopped: no state kept; the links stay");
                daemon.call_all(|e| e.stop());
            }
        }
    } else {
        daemon.call_all(|e| e.stop());
    }
    for t in loop_threads {
        // A loop that died said so (crate::health); its thread ends normally.
        let _ = t.join();
    }
    if let Some(m) = &daemon.uplink_macvlan
        && let Err(e) = link::delete_link(m)
    {
        tracing::warn!("removing the uplink's macvlan {m}: {e}");
    }
    let containers = std::mem::take(&mut *lock(&daemon.containers));
    if let Some(c) = &daemon.cluster {
        // Kept, this host's endpoints outlive it by the lease's TTL, long enough for the
        // restart to claim them again; else they go from every host now.
        c.leave(keep);
    }
    if keep {
        // As after a crash, on purpose: the next start re-attaches every link (`reattach`).
        return;
    }
    for c in containers.values() {
        if c.peer.is_some() {
            // A runtime's veth (Docker moved its end in): the runtime owns it and would not
            // learn it went. It stays, lease and all, as after a crash; the next start
            // re-attaches it.
            continue;
        }
        if let Err(e) = link::delete_link(&c.port)
            && !c.tap
        {
            tracing::warn!("removing {}: {e}", c.port);
        }
        if let Err(e) = daemon.store.release(&c.network, &c.name, false) {
            tracing::warn!("releasing {} on {}: {e}", c.name, c.network);
        }
    }
}
