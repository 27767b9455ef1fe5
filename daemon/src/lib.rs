//! The vswitch daemon: the switch on real ports, with its control socket.
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
//! the namespaces as they were before `network connect` (and releasing those leases). With
//! `--keep-state` (or on a `vswitch upgrade` request) it keeps them instead and writes its
//! connections to `STATE_DIR/keep-state.json` for the next start to restore ([`keep_state`]).
//!
//! Rooms: [`startup`] (start and stop), `server` (the control socket), `state` (what the
//! daemon holds, and its locks), `handlers` (one module per resource: network, container, port,
//! status; the host port), `host_proxy` (published ports reached from the host itself), `uplink`
//! (the socket gateway, the embedded rootless topology, resolvers), [`cluster`] (overlay
//! networks across hosts, from the cluster store).

pub mod cluster;
mod events;
mod handlers;
mod health;
mod host_proxy;
pub mod keep_state;
mod metrics;
mod server;
mod startup;
mod state;
mod uplink;

pub use startup::run;
pub use uplink::ROOTLESS_TOPOLOGY;

use anyhow::{Context, Result, bail};
use datapath::io::rootless::HostHelper;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Serve Prometheus metrics on this address (`GET /metrics`); none by default.
    pub metrics: Option<std::net::SocketAddr>,
    /// Serve `fault_inject` requests (tests of what happens when a part dies).
    pub fault_injection: bool,
    /// Keep connections across a restart (`--keep-state`): see [`keep_state`].
    pub keep_state: bool,
    /// Join a cluster (`--cluster`) for overlay networks: see [`cluster`].
    pub cluster: Option<cluster::ClusterOptions>,
}

/// Rootless mode, first thing in the process while it is still single-threaded: forks the
/// helper that stays in the host's namespaces, then moves this process into a user + network
/// namespace of its own.
pub fn enter_rootless() -> Result<Arc<HostHelper>> {
    let helper = HostHelper::spawn().context("starting the rootless helper")?;
    datapath::io::rootless::enter_private_namespaces()?;
    Ok(Arc::new(helper))
}

/// The state directory and control socket: the ones given, else the defaults (`/run/vswitch`;
/// rootless: `$XDG_STATE_HOME/vswitch` and `$XDG_RUNTIME_DIR/vswitch/vswitch.sock`).
pub fn paths(
    rootless: bool,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
) -> Result<(PathBuf, PathBuf)> {
    if !rootless {
        let state_dir = state_dir.unwrap_or_else(|| PathBuf::from("/run/vswitch"));
        let socket = socket.unwrap_or_else(|| state_dir.join("vswitch.sock"));
        return Ok((state_dir, socket));
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    let state_dir = match (state_dir, state) {
        (Some(d), _) => d,
        (None, Some(s)) => s.join("vswitch"),
        (None, None) => bail!("set XDG_STATE_HOME or HOME, or pass --state-dir"),
    };
    let socket = match (socket, runtime) {
        (Some(s), _) => s,
        (None, Some(r)) => r.join("vswitch").join("vswitch.sock"),
        (None, None) => bail!("set XDG_RUNTIME_DIR (e.g. /run/user/$UID), or pass --socket"),
    };
    Ok((state_dir, socket))
}

/// Packet loops: one in rootless mode (the socket uplink), else the number asked for, else one
/// per core.
pub fn workers(rootless: bool, asked: Option<usize>) -> usize {
    if rootless {
        return 1;
    }
    asked.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
