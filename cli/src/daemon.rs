//! `vswitch daemon`: the switch on real ports, in the foreground.
//!
//! Threads: one packet loop per worker ([`datapath::engine::Engine`]), each owning a pipeline;
//! one accept loop on the control socket, which also watches for SIGTERM/SIGINT; one short-lived
//! thread per control connection. Control requests reach the pipelines only as closures run by
//! the packet loops between batches, so nothing on the packet path takes a lock.
//!
//! State (networks, leases, published ports) lives in `STATE_DIR/state.redb` ([`ipam::Store`]):
//! each change is committed before the datapath is touched, and undone if the datapath refuses,
//! so a crash at any point never hands an address out twice. At start the daemon replays the
//! store into the pipelines and re-attaches every container whose link survived; leases whose
//! link or namespace is gone are released.
//!
//! On SIGTERM/SIGINT the daemon stops the loops and deletes the veth pairs it created, leaving
//! the namespaces as they were before `network connect` (and releasing those leases).

use anyhow::{Context, Result, bail};
use datapath::engine::{Engine, EngineHandle, PortIo};
use datapath::io::link::{self, VethSpec};
use datapath::io::rootless::{HostHelper, Request as HelperRequest};
use datapath::io::tap::Tap;
use datapath::ports::{AfPacketPort, HelperSockets, SocketUplinkPort, TapPort};
use ipam::{LeaseMeta, NetworkRecord, NetworkSpec, Proto, Store};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switch::runtime::NetworkDef;
use switch::{Config, PortAddress, PortId, PortKind};
use vswitch::control::{DecodeError, Request, Response, decode_request};

/// Where the daemon keeps its socket and state.
pub struct DaemonOptions {
    /// Topology file (`None`: the embedded rootless topology).
    pub config: Option<PathBuf>,
    /// State directory (socket and state.redb live here unless `socket` is given).
    pub state_dir: PathBuf,
    /// Control socket path.
    pub socket: PathBuf,
    /// Packet-loop threads.
    pub workers: usize,
    /// Rootless mode: the helper left in the host's namespaces (host sockets, container TAPs).
    pub rootless: Option<Arc<HostHelper>>,
}

/// The rootless default: an uplink of host sockets (the socket gateway), large MTUs like the
/// rootless tools use; networks come from the state (the default `bridge` at least).
const ROOTLESS_TOPOLOGY: &str = r#"
[bridge]
mtu = 65520

[[port]]
name = "uplink"
kind = "socket"

[uplink]
port = "uplink"
address = "10.0.2.100"
subnet = "10.0.2.0/24"
next_hop = "10.0.2.2"
mtu = 65520
"#;

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
    #[serde(skip)]
    port_id: PortId,
    /// A TAP inside the container (rootless): it goes away with its descriptor, there is no
    /// host-side link to delete.
    #[serde(skip)]
    tap: bool,
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
    store: Store,
    /// Attached containers by (network, name).
    containers: Mutex<BTreeMap<(String, String), Container>>,
    /// Serializes control-plane changes so the store and the pipelines change in step.
    changes: Mutex<()>,
    next_link: AtomicU32,
    shutdown: Arc<AtomicBool>,
    started: Instant,
    mtu: u16,
    rootless: Option<Arc<HostHelper>>,
    /// The socket gateway serving a socket uplink: published ports are its listening sockets.
    gateway: Option<sockgw::GatewayHandle>,
    /// Control clients being served now, and the limits on them (`[limits]`).
    clients: AtomicUsize,
    max_clients: usize,
    max_request: usize,
}

/// Counts a served control client; the count drops when the client's thread ends, however.
struct ClientSlot(Arc<Daemon>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
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

fn def_of(n: &NetworkRecord) -> NetworkDef {
    NetworkDef {
        name: n.name.clone(),
        subnet: n.subnet,
        gateway: n.gateway,
        internal: n.internal,
        icc: n.icc,
        anti_spoofing: n.anti_spoofing,
    }
}

fn gateway_proto(p: Proto) -> sockgw::Proto {
    match p {
        Proto::Tcp => sockgw::Proto::Tcp,
        Proto::Udp => sockgw::Proto::Udp,
    }
}

/// A port published at run time, as the socket gateway listens for it (all host addresses).
fn gateway_published(p: Proto, host_port: u16) -> sockgw::Published {
    sockgw::Published {
        proto: gateway_proto(p),
        host_addr: Ipv4Addr::UNSPECIFIED,
        host_port,
    }
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// Makes the store agree with the topology file's networks: the file's `bridge` must be the
/// default one, other networks are registered (or must match what is registered).
fn register_config_networks(store: &Store, config: &Config) -> Result<()> {
    store.ensure_default_bridge()?;
    for n in &config.networks {
        let (Some(subnet), Some(gateway)) = (n.subnet, n.gateway) else {
            continue;
        };
        match store.network(&n.name)? {
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
                store.create_network(spec).with_context(|| {
                    format!("registering network {:?} of the topology file", n.name)
                })?;
            }
        }
    }
    Ok(())
}

/// Runs the daemon until SIGTERM/SIGINT or a `shutdown` request.
pub fn run(opts: DaemonOptions) -> Result<()> {
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
    let mut pipelines = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut p = switch::Pipeline::new(&config).with_context(|| origin.clone())?;
        for n in store.networks()? {
            p.add_network(&def_of(&n))
                .with_context(|| format!("network {:?} from the state", n.name))?;
        }
        for (proto, host_port, publ) in store.published()? {
            p.publish(
                proto_number(proto),
                host_port,
                publ.container_ip,
                publ.container_port,
            );
        }
        pipelines.push(p);
    }
    let topo = pipelines[0].topology().clone();
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
    let groups = FanoutGroups::new();
    let mut gateway = None;
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
            PortKind::Socket => {
                if workers > 1 {
                    bail!("port {}: a socket uplink needs --workers 1", p.name);
                }
                let dns_loopback = upstream
                    .iter()
                    .copied()
                    .filter(|a| a.is_loopback())
                    .collect();
                let port = socket_uplink(&config, &topo, dns_loopback, opts.rootless.clone())?;
                gateway = Some(port.handle());
                vec![Box::new(port)]
            }
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

    let shutdown = Arc::new(AtomicBool::new(false));
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
        started: Instant::now(),
        mtu: topo.bridge.mtu,
        rootless: opts.rootless.clone(),
        gateway,
        clients: AtomicUsize::new(0),
        max_clients: topo.limits.control_clients.max(1) as usize,
        max_request: topo.limits.control_request_bytes.max(64) as usize,
    });
    reattach(&daemon);
    // Ports published at run time before a restart: listen for them again.
    if let Some(g) = &daemon.gateway {
        for (proto, host_port, _) in daemon.store.published().unwrap_or_default() {
            if let Err(e) = g.publish(gateway_published(proto, host_port)) {
                tracing::warn!("cannot listen on host {proto} port {host_port} again: {e}");
            }
        }
    }
    tracing::info!(?upstream, "DNS forwarding");
    daemon.call_all(move |e| e.pipeline_mut().set_dns_upstream(upstream.clone()));
    if let Ok(nets) = daemon.store.networks() {
        for n in nets {
            refresh_dns(&daemon, &n.name);
        }
    }

    let listener = bind_socket(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "vswitch daemon ready");
    eprintln!("vswitch daemon: listening on {}", opts.socket.display());
    while !daemon.shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if daemon.clients.fetch_add(1, Ordering::Relaxed) >= daemon.max_clients {
                    daemon.clients.fetch_sub(1, Ordering::Relaxed);
                    refuse_client(&stream, daemon.max_clients);
                    continue;
                }
                let slot = ClientSlot(Arc::clone(&daemon));
                let spawned = std::thread::Builder::new()
                    .name("vswitch-control".into())
                    .spawn(move || serve(&slot.0, stream));
                if let Err(e) = spawned {
                    // The slot was moved into the closure and is released with it.
                    tracing::warn!("cannot start a control client thread: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                // E.g. EMFILE: wait instead of spinning on the error.
                tracing::warn!("accept on control socket: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    eprintln!("vswitch daemon: shutting down");
    let _guard = lock(&daemon.changes);
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
        if let Err(e) = link::delete_link(&c.port)
            && !c.tap
        {
            tracing::warn!("removing {}: {e}", c.port);
        }
        if let Err(e) = daemon.store.release(&c.network, &c.name) {
            tracing::warn!("releasing {} on {}: {e}", c.name, c.network);
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}

/// The host's resolvers: nameserver lines of /etc/resolv.conf, loopback stubs left out (as
/// Docker does: they would not be reachable from the containers' side).
/// The nameservers of /etc/resolv.conf; loopback ones only when `keep_loopback` (a socket
/// uplink can reach them, a routed uplink cannot).
fn host_resolvers(keep_loopback: bool) -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| keep_loopback || !a.is_loopback())
        .collect()
}

/// Gives every worker the current names of `network`'s containers (user-defined networks only:
/// the default bridge has no embedded DNS, as in Docker).
fn refresh_dns(d: &Daemon, network: &str) {
    let Ok(Some(rec)) = d.store.network(network) else {
        return;
    };
    let table = if rec.builtin {
        None
    } else {
        let leases = d.store.leases(network).unwrap_or_default();
        Some(switch::dns_gateway::DnsTable::new(
            leases.into_iter().map(|(ip, l)| (l.container, ip)),
        ))
    };
    let name = network.to_string();
    d.call_all(move |e| {
        if let Some(id) = e.pipeline().topology().network_by_name(&name) {
            e.pipeline_mut().set_dns_table(id, table.clone());
        }
    });
}

/// Re-attaches containers whose link survived a restart; releases the leases of the others.
fn reattach(d: &Daemon) {
    let leases = match d.store.all_leases() {
        Ok(l) => l,
        Err(e) => return tracing::warn!("reading leases: {e}"),
    };
    for (network, ip, lease) in leases {
        let alive = link::link_exists(&lease.host_ifname) && Path::new(&lease.netns).exists();
        let attached = alive
            .then(|| {
                let address = PortAddress {
                    mac: lease.mac.parse().ok(),
                    ip: Some(ip),
                };
                attach_port(d, &network, &lease.host_ifname, address)
            })
            .transpose();
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
                    port_id,
                };
                tracing::info!(container = %c.name, network = %network, ip = %ip, "re-attached");
                lock(&d.containers).insert((network.clone(), c.name.clone()), c);
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!("re-attaching {} on {network}: {e:#}", lease.container);
                }
                let _ = link::delete_link(&lease.host_ifname);
                match d.store.release(&network, &lease.container) {
                    Ok(_) => {
                        tracing::info!(container = %lease.container, network = %network, "link gone: lease released")
                    }
                    Err(e) => tracing::warn!("releasing {}: {e}", lease.container),
                }
            }
        }
    }
}

/// Starts the socket gateway that serves a `kind = "socket"` uplink, with host sockets from the
/// rootless helper (or made directly when running as root).
fn socket_uplink(
    config: &Config,
    topo: &switch::Topology,
    dns_loopback: Vec<Ipv4Addr>,
    helper: Option<Arc<HostHelper>>,
) -> Result<SocketUplinkPort> {
    let up = topo
        .uplink
        .context("a socket port must be the [uplink] port (with an address)")?;
    let gateway_mac = up
        .next_hop_mac
        .unwrap_or(packet::MacAddr([0x02, 0, 0, 0, 0, 0x01]));
    let mut gw = sockgw::GatewayConfig::new(up.address, up.mac, gateway_mac);
    gw.mtu = usize::from(up.mtu);
    gw.host_loopback = config.uplink.as_ref().and_then(|u| u.host_loopback);
    gw.dns_loopback = dns_loopback;
    gw.published = config
        .published
        .iter()
        .map(|p| sockgw::Published {
            proto: match p.proto {
                switch::config::L4Proto::Tcp => sockgw::Proto::Tcp,
                switch::config::L4Proto::Udp => sockgw::Proto::Udp,
            },
            host_addr: p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            host_port: p.host_port,
        })
        .collect();
    let sockets: Box<dyn sockgw::HostSockets> = match helper {
        Some(h) => Box::new(HelperSockets(h)),
        None => Box::new(sockgw::Direct),
    };
    SocketUplinkPort::start(gw, sockets).context("starting the socket gateway (uplink)")
}

/// Opens the host end `ifname` on every worker and adds it to `network`'s bridge, bound to the
/// container's `address` (enforced when the network has anti-spoofing on).
fn attach_port(d: &Daemon, network: &str, ifname: &str, address: PortAddress) -> Result<PortId> {
    let ios = AfPacketPort::open_group(ifname, d.engines.len(), d.groups.next())
        .context("opening AF_PACKET on the host end")?
        .into_iter()
        .map(|p| Box::new(p) as Box<dyn PortIo>)
        .collect();
    attach_ios(d, network, ifname, address, ios)
}

/// Adds port `name` to `network`'s bridge on every worker, each with its I/O from `ios`.
fn attach_ios(
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
            e.attach(id, io).map_err(|e| e.to_string())?;
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
                d.call_all(move |e| {
                    e.detach(id);
                    e.pipeline_mut().remove_port(id);
                });
            }
            bail!(
                "attaching the port failed: {}",
                failure.unwrap_or_else(|| "workers disagree on the port id".into())
            )
        }
    }
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

/// Answers a client over the `limits.control_clients` limit and closes it, without blocking
/// the accept loop on a client that does not read.
fn refuse_client(stream: &UnixStream, max: usize) {
    tracing::warn!(max, "control client refused: too many at once");
    let _ = stream.set_nonblocking(true);
    let mut w = stream;
    let _ = respond(
        &mut w,
        &Response::err(format!(
            "the daemon is serving {max} control clients already (limits.control_clients): retry later"
        )),
    );
}

fn serve(d: &Daemon, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    // A client that stops reading must not hold its slot (and a thread) for ever.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    loop {
        let mut line = Vec::new();
        let n = match (&mut reader)
            .take(d.max_request as u64 + 1)
            .read_until(b'\n', &mut line)
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
        let resp = match decode_request(&line, d.max_request) {
            Ok(req) => handle(d, req),
            Err(e @ DecodeError::TooLong(_)) => {
                // The rest of the line is still unread: the stream cannot be resynchronised.
                let _ = respond(&mut writer, &Response::err(e));
                return;
            }
            Err(e) => Response::err(e),
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

fn snapshot(d: &Daemon) -> Result<switch::Snapshot> {
    let parts = d
        .call_all(|e| e.pipeline().snapshot(e.now()))
        .context("the packet loop is not running")?;
    switch::affinity::merge_snapshots(parts).context("no packet loop")
}

fn network_json(d: &Daemon, n: &NetworkRecord) -> Result<serde_json::Value> {
    let containers: serde_json::Map<String, serde_json::Value> = d
        .store
        .leases(&n.name)?
        .into_iter()
        .map(|(ip, l)| {
            (
                l.container.clone(),
                json!({
                    "Name": l.container,
                    "MacAddress": l.mac,
                    "IPv4Address": format!("{ip}/{}", n.subnet.prefix_len()),
                    "IPv6Address": "",
                    "Interface": l.host_ifname,
                }),
            )
        })
        .collect();
    Ok(json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created_unix,
        "Scope": "local",
        "Driver": "vswitch",
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": {}, "Config": [{
            "Subnet": n.subnet.to_string(),
            "Gateway": n.gateway.to_string(),
            "IPRange": n.ip_range.map(|r| r.to_string()),
        }]},
        "Internal": n.internal,
        "Containers": containers,
        "Options": {
            "com.docker.network.bridge.enable_icc": n.icc.to_string(),
            "vswitch.anti_spoofing": n.anti_spoofing.to_string(),
            "com.docker.network.driver.mtu": n.mtu.to_string(),
        },
        "Labels": n.labels,
    }))
}

fn run_request(d: &Daemon, req: Request) -> Result<serde_json::Value> {
    Ok(match req {
        Request::Status => {
            let io = d.call_all(|e| e.io_counters()).context("the packet loop is not running")?;
            let containers: Vec<Container> = lock(&d.containers).values().cloned().collect();
            let networks: Vec<serde_json::Value> = d
                .store
                .networks()?
                .iter()
                .map(|n| json!({ "name": n.name, "subnet": n.subnet, "gateway": n.gateway, "internal": n.internal, "icc": n.icc, "anti_spoofing": n.anti_spoofing }))
                .collect();
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_secs": d.started.elapsed().as_secs(),
                "networks": networks,
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
            d.call_all(|e| e.pipeline_mut().flush_conntrack()).context("the packet loop is not running")?;
            json!({})
        }
        Request::Connect { network, netns, name, ifname, ip } => serde_json::to_value(connect(d, &network, &netns, name, ifname, ip)?)?,
        Request::Disconnect { network, name } => serde_json::to_value(disconnect(d, &network, &name)?)?,
        Request::NetworkCreate { name, subnet, gateway, ip_range, internal, icc, anti_spoofing, mtu, labels } => {
            let _guard = lock(&d.changes);
            let mut spec = NetworkSpec::new(name);
            spec.subnet = subnet;
            spec.gateway = gateway;
            spec.ip_range = ip_range;
            spec.internal = internal;
            spec.icc = icc;
            spec.anti_spoofing = anti_spoofing;
            spec.mtu = mtu;
            spec.labels = labels;
            let rec = d.store.create_network(spec)?;
            let def = def_of(&rec);
            let name = rec.name.clone();
            let added = d.call_all(move |e| e.pipeline_mut().add_network(&def).map(|_| ()).map_err(|e| e.to_string()));
            if let Some(Err(e)) = added.as_ref().and_then(|v| v.iter().find(|r| r.is_err())) {
                let _ = d.store.remove_network(&rec.name);
                bail!("the datapath refused the network: {e}");
            }
            refresh_dns(d, &name);
            network_json(d, &rec)?
        }
        Request::NetworkLs => {
            let nets = d.store.networks()?;
            let mut out = Vec::with_capacity(nets.len());
            for n in &nets {
                out.push(json!({
                    "id": n.id.get(..12).unwrap_or(&n.id),
                    "name": n.name,
                    "driver": "vswitch",
                    "subnet": n.subnet,
                    "gateway": n.gateway,
                    "internal": n.internal,
                    "icc": n.icc,
                    "anti_spoofing": n.anti_spoofing,
                    "containers": d.store.leases(&n.name)?.len(),
                }));
            }
            serde_json::Value::Array(out)
        }
        Request::NetworkInspect { names } => {
            let mut out = Vec::with_capacity(names.len());
            for name in &names {
                let n = d.store.network(name)?.with_context(|| format!("no such network: {name}"))?;
                out.push(network_json(d, &n)?);
            }
            serde_json::Value::Array(out)
        }
        Request::NetworkRm { name } => {
            let _guard = lock(&d.changes);
            let rec = d.store.remove_network(&name)?;
            let n = name.clone();
            d.call_all(move |e| e.pipeline_mut().remove_network(&n)).context("the packet loop is not running")?;
            json!({ "name": rec.name, "id": rec.id })
        }
        Request::PortPublish { network, container, host_port, container_port, proto } => {
            let _guard = lock(&d.changes);
            let proto: Proto = proto.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            // With a socket uplink the port is a host listening socket: bind it first, so a
            // port in use is refused before anything is recorded.
            if let Some(g) = &d.gateway {
                g.publish(gateway_published(proto, host_port))
                    .with_context(|| format!("listening on host {proto} port {host_port}"))?;
            }
            let p = match d.store.publish(proto, host_port, &network, &container, container_port) {
                Ok(p) => p,
                Err(e) => {
                    if let Some(g) = &d.gateway {
                        let _ = g.unpublish(gateway_proto(proto), host_port);
                    }
                    return Err(e.into());
                }
            };
            let (ip, cport, num) = (p.container_ip, p.container_port, proto_number(proto));
            d.call_all(move |e| e.pipeline_mut().publish(num, host_port, ip, cport)).context("the packet loop is not running")?;
            json!({ "proto": proto.to_string(), "host_port": host_port, "network": p.network, "container": p.container, "container_ip": ip, "container_port": cport })
        }
        Request::PortLs => serde_json::Value::Array(
            d.store
                .published()?
                .into_iter()
                .map(|(proto, host_port, p)| json!({ "proto": proto.to_string(), "host_port": host_port, "network": p.network, "container": p.container, "container_ip": p.container_ip, "container_port": p.container_port }))
                .collect(),
        ),
        Request::PortRm { proto, host_port } => {
            let _guard = lock(&d.changes);
            let proto: Proto = proto.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            let p = d.store.unpublish(proto, host_port)?.with_context(|| format!("{proto} port {host_port} is not published"))?;
            let num = proto_number(proto);
            if let Some(g) = &d.gateway {
                let _ = g.unpublish(gateway_proto(proto), host_port);
            }
            d.call_all(move |e| e.pipeline_mut().unpublish(num, host_port)).context("the packet loop is not running")?;
            json!({ "proto": proto.to_string(), "host_port": host_port, "container": p.container })
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
    let _guard = lock(&d.changes);
    let rec = d
        .store
        .network(network)?
        .with_context(|| format!("no network named {network:?}: see `vswitch network ls`"))?;
    let netns_path = PathBuf::from(netns);
    // A rootless daemon cannot see other user namespaces' files; its helper opens them.
    if d.rootless.is_none() && !netns_path.exists() {
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
    let port = loop {
        let n = d.next_link.fetch_add(1, Ordering::Relaxed);
        let candidate = format!("vsw{n}");
        if !link::link_exists(&candidate) {
            break candidate;
        }
    };
    let ifname = ifname.unwrap_or_else(|| "eth0".to_string());
    // The lease is committed first: whatever happens next, the address is never given twice.
    let meta = LeaseMeta {
        netns: netns.to_string(),
        ifname: ifname.clone(),
        host_ifname: port.clone(),
        mac: None,
    };
    let (ip, lease) = d.store.allocate(network, &name, ip, meta)?;
    let undo = |d: &Daemon| {
        let _ = link::delete_link(&port);
        let _ = d.store.release(network, &name);
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
    };
    let attached = match &d.rootless {
        // Rootless: a TAP made inside the container by the helper (no veth can cross into a
        // namespace owned by another user namespace). The link MTU is the bridge's (large).
        Some(helper) => container_tap_of(netns)
            .and_then(|pid| {
                let req = HelperRequest::ContainerTap {
                    pid,
                    ifname: ifname.clone(),
                    mac: mac.0,
                    mtu: d.mtu,
                    addr: (ip, rec.subnet.prefix_len()),
                    gateway: (!rec.internal).then_some(rec.gateway),
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
        None => {
            let spec = VethSpec {
                host_ifname: &port,
                peer_ifname: &format!("{port}p"),
                netns: &netns_path,
                container_ifname: &ifname,
                mac: Some(mac.0),
                mtu: rec.mtu.min(d.mtu),
                addr: Some((ip, rec.subnet.prefix_len())),
                gateway: (!rec.internal).then_some(rec.gateway),
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
        netns: netns.to_string(),
        ifname,
        port_id,
    };
    lock(&d.containers).insert((network.to_string(), name), c.clone());
    refresh_dns(d, network);
    tracing::info!(container = %c.name, ip = %c.ip, port = %c.port, "connected");
    Ok(c)
}

/// The process whose namespaces a rootless container lives in: `/proc/PID/ns/net` (what
/// `network connect --pid PID` sends).
fn container_tap_of(netns: &str) -> Result<u32> {
    netns
        .strip_prefix("/proc/")
        .and_then(|rest| rest.strip_suffix("/ns/net"))
        .and_then(|pid| pid.parse().ok())
        .context(
            "a rootless daemon attaches containers by process: use `network connect --pid PID`",
        )
}

fn disconnect(d: &Daemon, network: &str, name: &str) -> Result<Container> {
    let _guard = lock(&d.changes);
    let c = lock(&d.containers)
        .remove(&(network.to_string(), name.to_string()))
        .with_context(|| {
            format!(
                "no container named {name:?} is connected to {network:?} (see `vswitch status`)"
            )
        })?;
    let id = c.port_id;
    d.call_all(move |e| {
        e.detach(id);
        e.pipeline_mut().remove_port(id);
    });
    if !c.tap {
        link::delete_link(&c.port).with_context(|| format!("deleting {}", c.port))?;
    }
    if let Some(released) = d.store.release(network, name)? {
        for (proto, host_port, _) in released.unpublished {
            if let Some(g) = &d.gateway {
                let _ = g.unpublish(gateway_proto(proto), host_port);
            }
            let num = proto_number(proto);
            d.call_all(move |e| e.pipeline_mut().unpublish(num, host_port));
        }
    }
    refresh_dns(d, network);
    Ok(c)
}
