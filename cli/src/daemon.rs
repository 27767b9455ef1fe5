//! `vswitch daemon`: the switch on real ports, in the foreground.
//!
//! Threads: one packet loop ([`datapath::engine::Engine`]) owning the pipeline; one accept loop
//! on the control socket, which also watches for SIGTERM/SIGINT; one short-lived thread per
//! control connection. Control requests reach the pipeline only as closures run by the packet
//! loop between batches, so nothing on the packet path takes a lock.
//!
//! On shutdown the daemon stops the loop and deletes the veth pairs it created for containers
//! (`network connect`), leaving the namespaces as they were before.

use crate::control::{MAX_REQUEST, Request, Response};
use anyhow::{Context, Result, bail};
use datapath::engine::{Engine, EngineHandle, PortIo};
use datapath::io::link::{self, VethSpec};
use datapath::ports::{AfPacketPort, TapPort};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switch::config::{Topology, mac_from_ip};
use switch::{Config, PortId, PortKind};

/// Where the daemon keeps its socket and state.
pub struct DaemonOptions {
    /// Topology file.
    pub config: PathBuf,
    /// State directory (socket lives here unless `socket` is given).
    pub state_dir: PathBuf,
    /// Control socket path.
    pub socket: PathBuf,
    /// Packet-loop threads.
    pub workers: usize,
}

/// A container attached by `network connect`.
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
    #[serde(skip)]
    port_id: PortId,
}

/// Fanout group ids for the ports' socket groups: unique per port within the namespace.
struct FanoutGroups(std::sync::atomic::AtomicU16);

impl FanoutGroups {
    fn new() -> FanoutGroups {
        // Start from a per-process offset so two daemons in one namespace do not collide.
        FanoutGroups(std::sync::atomic::AtomicU16::new(
            (std::process::id() as u16).wrapping_mul(97),
        ))
    }

    fn next(&self) -> u16 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

struct Daemon {
    /// One handle per worker; worker 0 first.
    engines: Vec<EngineHandle>,
    groups: FanoutGroups,
    topo: Topology,
    containers: Mutex<BTreeMap<String, Container>>,
    pools: Mutex<HashMap<String, ipam::Pool>>,
    next_link: AtomicU32,
    shutdown: Arc<AtomicBool>,
    started: Instant,
}

/// Runs the daemon until SIGTERM/SIGINT or a `shutdown` request.
pub fn run(opts: DaemonOptions) -> Result<()> {
    let text = std::fs::read_to_string(&opts.config)
        .with_context(|| format!("cannot read topology {}", opts.config.display()))?;
    let config = Config::from_toml(&text).with_context(|| opts.config.display().to_string())?;
    let workers = opts.workers.max(1);
    let mut pipelines = Vec::with_capacity(workers);
    for _ in 0..workers {
        pipelines.push(
            switch::Pipeline::new(&config).with_context(|| opts.config.display().to_string())?,
        );
    }
    let topo = pipelines[0].topology().clone();
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("cannot create state dir {}", opts.state_dir.display()))?;
    let (mut engines, handles): (Vec<Engine>, Vec<EngineHandle>) =
        Engine::group(pipelines)?.into_iter().unzip();
    let groups = FanoutGroups::new();
    for (i, p) in topo.ports.iter().enumerate() {
        let id = PortId(i as u16);
        let ios: Vec<Box<dyn PortIo>> = match p.kind {
            PortKind::Tap => TapPort::create_group(&p.name, topo.bridge.mtu, workers)
                .with_context(|| format!("port {}: cannot create TAP device", p.name))?
                .into_iter()
                .map(|t| Box::new(t) as Box<dyn PortIo>)
                .collect(),
            PortKind::AfPacket => AfPacketPort::open_group(&p.name, workers, groups.next())
                .with_context(|| {
                    format!(
                        "port {}: cannot open AF_PACKET on interface {:?}",
                        p.name, p.name
                    )
                })?
                .into_iter()
                .map(|t| Box::new(t) as Box<dyn PortIo>)
                .collect(),
            PortKind::Pcap => bail!(
                "port {}: pcap ports are for `vswitch replay`, not the daemon",
                p.name
            ),
        };
        for (engine, io) in engines.iter_mut().zip(ios) {
            engine.attach(id, io)?;
        }
    }
    let mut loop_threads = Vec::with_capacity(workers);
    for (i, mut engine) in engines.into_iter().enumerate() {
        loop_threads.push(
            std::thread::Builder::new()
                .name(format!("vswitch-loop{i}"))
                .spawn(move || engine.run())?,
        );
    }

    let pools = topo
        .networks
        .iter()
        .filter_map(|n| {
            n.subnet
                .map(|s| (n.name.clone(), ipam::Pool::new(s, n.gateway.map(|g| g.0))))
        })
        .collect();
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown))?;
    }
    let daemon = Arc::new(Daemon {
        engines: handles,
        groups,
        topo,
        containers: Mutex::new(BTreeMap::new()),
        pools: Mutex::new(pools),
        next_link: AtomicU32::new(0),
        shutdown,
        started: Instant::now(),
    });

    let listener = bind_socket(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "vswitch daemon ready");
    eprintln!("vswitch daemon: listening on {}", opts.socket.display());
    while !daemon.shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let d = Arc::clone(&daemon);
                std::thread::spawn(move || serve(&d, stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => tracing::warn!("accept on control socket: {e}"),
        }
    }
    eprintln!("vswitch daemon: shutting down");
    daemon.call_all(|e| e.stop());
    for t in loop_threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("packet loop ended with {e}"),
            Err(_) => tracing::warn!("packet loop panicked"),
        }
    }
    let containers = std::mem::take(&mut *lock(&daemon.containers));
    for c in containers.values() {
        if let Err(e) = link::delete_link(&c.port) {
            tracing::warn!("removing {}: {e}", c.port);
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked holder leaves data that is still consistent for our uses (maps of records).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "{} is in use: another vswitch daemon is running (stop it, or pass --socket)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn serve(d: &Daemon, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        let mut line = String::new();
        let n = match (&mut reader)
            .take(MAX_REQUEST as u64 + 1)
            .read_line(&mut line)
        {
            Ok(n) => n,
            Err(e) => {
                let _ = respond(
                    &mut writer,
                    &Response::err(format!("unreadable request: {e}")),
                );
                return;
            }
        };
        if n == 0 {
            return;
        }
        if line.len() > MAX_REQUEST {
            let _ = respond(
                &mut writer,
                &Response::err(format!("request longer than {MAX_REQUEST} bytes")),
            );
            return;
        }
        let resp = match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => handle(d, req),
            Err(e) => Response::err(format!(
                "bad request: {e} (send one JSON object per line, e.g. {{\"cmd\":\"status\"}})"
            )),
        };
        if respond(&mut writer, &resp).is_err() {
            return;
        }
    }
}

fn respond(w: &mut impl Write, resp: &Response) -> std::io::Result<()> {
    let mut s = serde_json::to_string(resp).unwrap_or_else(|_| "{\"ok\":false}".into());
    s.push('\n');
    w.write_all(s.as_bytes())
}

fn handle(d: &Daemon, req: Request) -> Response {
    match run_request(d, req) {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(format!("{e:#}")),
    }
}

impl Daemon {
    /// Runs `f` on every worker, in worker order; `None` if any loop has stopped.
    fn call_all<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Engine) -> T + Send + Clone + 'static,
    ) -> Option<Vec<T>> {
        self.engines.iter().map(|h| h.call(f.clone())).collect()
    }
}

fn snapshot(d: &Daemon) -> Result<switch::Snapshot> {
    let parts = d
        .call_all(|e| e.pipeline().snapshot(e.now()))
        .context("the packet loop is not running")?;
    switch::affinity::merge_snapshots(parts).context("no packet loop")
}

fn run_request(d: &Daemon, req: Request) -> Result<serde_json::Value> {
    Ok(match req {
        Request::Status => {
            let io = d
                .call_all(|e| e.io_counters())
                .context("the packet loop is not running")?;
            let containers: Vec<Container> = lock(&d.containers).values().cloned().collect();
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_secs": d.started.elapsed().as_secs(),
                "networks": d.topo.networks.iter().map(|n| json!({
                    "name": n.name, "subnet": n.subnet, "gateway": n.gateway.map(|g| g.0),
                    "internal": n.internal, "icc": n.icc,
                })).collect::<Vec<_>>(),
                "containers": containers,
                "workers": io,
            })
        }
        Request::Stats => {
            let s = snapshot(d)?;
            json!({ "ports": s.ports, "bridge": s.bridge, "conntrack": s.conntrack_counters })
        }
        Request::Fdb => serde_json::to_value(snapshot(d)?.fdb)?,
        Request::Conntrack => {
            let s = snapshot(d)?;
            json!({ "counters": s.conntrack_counters, "entries": s.conntrack })
        }
        Request::ConntrackFlush => {
            d.call_all(|e| e.pipeline_mut().flush_conntrack())
                .context("the packet loop is not running")?;
            json!({})
        }
        Request::Connect {
            network,
            netns,
            name,
            ifname,
            ip,
        } => serde_json::to_value(connect(d, &network, &netns, name, ifname, ip)?)?,
        Request::Disconnect { network, name } => {
            serde_json::to_value(disconnect(d, &network, &name)?)?
        }
        Request::Shutdown => {
            d.shutdown.store(true, Ordering::Relaxed);
            json!({})
        }
    })
}

fn connect(
    d: &Daemon,
    network: &str,
    netns: &str,
    name: Option<String>,
    ifname: Option<String>,
    ip: Option<Ipv4Addr>,
) -> Result<Container> {
    let net_id = d
        .topo
        .network_by_name(network)
        .with_context(|| format!("no network named {network:?}: see `vswitch status`"))?;
    let net = &d.topo.networks[usize::from(net_id.0)];
    let (Some(subnet), Some((gateway, _))) = (net.subnet, net.gateway) else {
        bail!("network {network:?} has no subnet and gateway: containers need both");
    };
    let netns_path = PathBuf::from(netns);
    if !netns_path.exists() {
        bail!("namespace {netns} does not exist (give /run/netns/NAME or /proc/PID/ns/net)");
    }
    let name = name.unwrap_or_else(|| {
        netns_path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if name.is_empty() {
        bail!("give the container a --name");
    }
    if lock(&d.containers).contains_key(&name) {
        bail!(
            "a container named {name:?} is already connected: disconnect it first or pick another --name"
        );
    }
    let ip = {
        let mut pools = lock(&d.pools);
        let pool = pools
            .get_mut(network)
            .context("network has no address pool")?;
        match ip {
            Some(ip) => pool.reserve(ip).map(|_| ip)?,
            None => pool.allocate()?,
        }
    };
    let release = |d: &Daemon| {
        if let Some(p) = lock(&d.pools).get_mut(network) {
            p.release(ip);
        }
    };
    let port = loop {
        let n = d.next_link.fetch_add(1, Ordering::Relaxed);
        let candidate = format!("vsw{n}");
        if !link::link_exists(&candidate) {
            break candidate;
        }
    };
    let peer = format!("{port}p");
    let mac = mac_from_ip(ip);
    let ifname = ifname.unwrap_or_else(|| "eth0".to_string());
    let spec = VethSpec {
        host_ifname: &port,
        peer_ifname: &peer,
        netns: &netns_path,
        container_ifname: &ifname,
        mac: Some(mac.0),
        mtu: d.topo.bridge.mtu,
        addr: Some((ip, subnet.prefix_len())),
        gateway: Some(gateway),
    };
    if let Err(e) = link::create_container_veth(&spec) {
        release(d);
        let _ = link::delete_link(&port);
        return Err(e).context("creating the container's veth pair");
    }
    let ios = match AfPacketPort::open_group(&port, d.engines.len(), d.groups.next()) {
        Ok(ios) => ios,
        Err(e) => {
            release(d);
            let _ = link::delete_link(&port);
            return Err(e).context("opening AF_PACKET on the host end");
        }
    };
    // Every worker adds the same port (so it gets the same id everywhere) with its own socket.
    let mut ids = Vec::with_capacity(ios.len());
    let mut failure = None;
    for (handle, io) in d.engines.iter().zip(ios) {
        let port_name = port.clone();
        let attached = handle.call(move |e| -> Result<PortId, String> {
            let id = e
                .pipeline_mut()
                .add_port(&port_name, PortKind::AfPacket, net_id)
                .map_err(|e| e.to_string())?;
            e.attach(id, Box::new(io)).map_err(|e| e.to_string())?;
            Ok(id)
        });
        match attached {
            Some(Ok(id)) => ids.push(id),
            Some(Err(e)) => failure = Some(e),
            None => failure = Some("packet loop not running".into()),
        }
    }
    let port_id = match (failure, ids.first()) {
        (None, Some(&id)) if ids.iter().all(|&i| i == id) => id,
        (failure, _) => {
            for &id in &ids {
                d.call_all(move |e| {
                    e.detach(id);
                    e.pipeline_mut().remove_port(id);
                });
            }
            release(d);
            let _ = link::delete_link(&port);
            bail!(
                "attaching the port failed: {}",
                failure.unwrap_or_else(|| "workers disagree on the port id".into())
            );
        }
    };
    let c = Container {
        name: name.clone(),
        network: network.to_string(),
        port,
        ip,
        mac: mac.to_string(),
        netns: netns.to_string(),
        ifname,
        port_id,
    };
    lock(&d.containers).insert(name, c.clone());
    tracing::info!(container = %c.name, ip = %c.ip, port = %c.port, "connected");
    Ok(c)
}

fn disconnect(d: &Daemon, network: &str, name: &str) -> Result<Container> {
    let c = {
        let mut cs = lock(&d.containers);
        match cs.get(name) {
            Some(c) if c.network == network => {}
            Some(c) => bail!("{name:?} is connected to {:?}, not {network:?}", c.network),
            None => bail!("no container named {name:?} is connected (see `vswitch status`)"),
        }
        cs.remove(name).context("container vanished")?
    };
    let id = c.port_id;
    d.call_all(move |e| {
        e.detach(id);
        e.pipeline_mut().remove_port(id);
    });
    link::delete_link(&c.port).with_context(|| format!("deleting {}", c.port))?;
    if let Some(p) = lock(&d.pools).get_mut(network) {
        p.release(c.ip);
    }
    Ok(c)
}
