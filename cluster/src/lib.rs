//! The daemon's view of the shared overlay state in etcd (v3 API), behind a blocking API.
//!
//! Key layout under `prefix` (default [`DEFAULT_PREFIX`]), values are JSON unless noted:
//! - `{p}/networks/{name}` → [`NetworkRecord`], no lease: networks outlive hosts.
//! - `{p}/vni/{vni}` → the network's name (plain text): makes VNIs unique cluster-wide.
//! - `{p}/endpoints/{network}/{ip}` → [`EndpointRecord`], under the owning host's lease.
//! - `{p}/hosts/{host}` → [`HostRecord`], under the host's lease.
//!
//! Lease rule: each host holds one lease of `ttl`, kept alive every `ttl/3`. [`Cluster::close`]
//! revokes it, so the host's endpoints vanish from every other host at once; a crash (or a plain
//! drop, as a daemon that restarts with kept containers does) leaves them until the TTL runs out.
//!
//! Outages: [`Cluster::connect`] does not fail when etcd is down; a background session retries
//! (backoff 200 ms → 2 s) and every blocking call gives up after about 3 s with
//! [`Error::Unavailable`]. On reconnection a lost lease is granted anew and this host's record and
//! all of its endpoints are put back (never over another host's record); then subscribers get a
//! fresh whole [`ClusterView`]. Values that fail to decode are skipped with a warning.

#![warn(missing_docs)]

mod keys;
mod ops;
mod session;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use keys::Keys;

/// The key prefix the daemon uses unless told otherwise (versioned, so a new layout can coexist).
pub const DEFAULT_PREFIX: &str = "/vswitch/v1";

/// How long one blocking call waits for etcd before it reports [`Error::Unavailable`].
const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the cluster store is and who this host is in it.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// etcd client URLs, such as `http://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster (see [`DEFAULT_PREFIX`]).
    pub prefix: String,
    /// This host's name, unique in the cluster: it owns the endpoints this host allocates.
    pub host: String,
    /// This host's VTEP address, where other hosts send VXLAN for its endpoints.
    pub vtep: Ipv4Addr,
    /// Lease TTL: how long this host's records outlive a crash (at least 2 s).
    pub ttl: Duration,
}

/// An overlay network, shared by every host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The network's name (unique in the cluster).
    pub name: String,
    /// Its IPv4 subnet, such as `10.77.0.0/24`.
    pub subnet: String,
    /// The gateway address inside the subnet.
    pub gateway: Ipv4Addr,
    /// The VXLAN network identifier, assigned by [`Cluster::create_network`].
    pub vni: u32,
    /// Whether containers on the network may talk to each other.
    pub icc: bool,
    /// Whether the network has no way out (no NAT to the outside).
    pub internal: bool,
    /// The host that created it (for the operator, not for ownership).
    pub created_by: String,
}

/// One container address on an overlay network, owned by the host it runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The network's name.
    pub network: String,
    /// The endpoint's address (unique in the network).
    pub ip: Ipv4Addr,
    /// The endpoint's MAC, lowercase colon text.
    pub mac: String,
    /// The container's name (for DNS).
    pub name: String,
    /// The owning host.
    pub host: String,
    /// The owning host's VTEP: where to tunnel frames for this endpoint.
    pub vtep: Ipv4Addr,
}

/// A live host of the cluster (present while its lease lives).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The host's name.
    pub host: String,
    /// The host's VTEP address (flood lists use it).
    pub vtep: Ipv4Addr,
}

/// The whole shared state at one etcd revision: each view replaces the previous one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Networks, sorted by name.
    pub networks: Vec<NetworkRecord>,
    /// Endpoints, sorted by (network, ip).
    pub endpoints: Vec<EndpointRecord>,
    /// Live hosts, sorted by name.
    pub hosts: Vec<HostRecord>,
    /// The etcd revision the view was read at (newer views have higher revisions).
    pub revision: i64,
}

/// What can go wrong talking to the cluster store; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// etcd did not answer in time or refused the call.
    #[error(
        "the cluster store (etcd at {endpoints}) cannot be reached ({reason}): check that etcd runs and --cluster names it"
    )]
    Unavailable {
        /// The configured endpoints.
        endpoints: String,
        /// What failed.
        reason: String,
    },
    /// A value given by the caller is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A network of that name exists already.
    #[error("network {0:?} exists already in the cluster: pick another name or delete it first")]
    NetworkExists(String),
    /// No network of that name exists in the cluster.
    #[error("network {0:?} does not exist in the cluster: create it first")]
    NoSuchNetwork(String),
    /// The network still has endpoints.
    #[error(
        "network {network:?} still has {endpoints} endpoint(s) in the cluster: disconnect them first"
    )]
    InUse {
        /// The network's name.
        network: String,
        /// How many endpoints it has.
        endpoints: usize,
    },
    /// The address is taken (by another endpoint, maybe on another host).
    #[error("address {0} is in use in the cluster: pick another one or let one be assigned")]
    AddressInUse(Ipv4Addr),
    /// The network has no free address left.
    #[error("network {0:?} has no free address left: release some or use a larger subnet")]
    Exhausted(String),
    /// Every VNI is taken.
    #[error("no free VNI is left in the cluster: delete unused networks")]
    VniExhausted,
    /// Concurrent changes kept winning the race.
    #[error("the cluster store kept changing under {0}: try again")]
    Conflict(String),
    /// The handle was closed.
    #[error("the cluster connection was closed: reconnect to use it")]
    Closed,
}

/// Takes a lock even if a panicking thread poisoned it (the data stays consistent per call).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the blocking handle and the background session.
pub(crate) struct Shared {
    pub(crate) cfg: ClusterConfig,
    pub(crate) keys: Keys,
    /// The client of the current session (replaced on each reconnection).
    pub(crate) client: Mutex<Option<etcd_client::Client>>,
    /// This host's lease, 0 while there is none.
    pub(crate) lease: AtomicI64,
    /// Set when a new lease was granted and this host's endpoints are not back under it yet.
    pub(crate) republish: AtomicBool,
    /// This host's endpoints, put back under a new lease after an outage.
    pub(crate) mine: Mutex<BTreeMap<(String, Ipv4Addr), EndpointRecord>>,
    pub(crate) subscribers: Mutex<Vec<Sender<ClusterView>>>,
    /// The newest view sent, given to new subscribers at once.
    pub(crate) last_view: Mutex<Option<ClusterView>>,
}

impl Shared {
    /// The error for an unreachable store.
    pub(crate) fn unavailable(&self, reason: impl std::fmt::Display) -> Error {
        Error::Unavailable {
            endpoints: self.cfg.endpoints.join(","),
            reason: reason.to_string(),
        }
    }

    /// The current client, or Unavailable before any session started.
    pub(crate) fn client(&self) -> Result<etcd_client::Client, Error> {
        lock(&self.client)
            .clone()
            .ok_or_else(|| self.unavailable("not connected yet"))
    }

    /// This host's lease, or Unavailable while the session has none.
    pub(crate) fn lease(&self) -> Result<i64, Error> {
        match self.lease.load(Ordering::SeqCst) {
            0 => Err(self.unavailable("this host holds no lease yet")),
            id => Ok(id),
        }
    }

    /// Sends `view` to every subscriber, dropping those that went away.
    pub(crate) fn publish(&self, view: ClusterView) {
        let mut subs = lock(&self.subscribers);
        subs.retain(|s| s.send(view.clone()).is_ok());
        *lock(&self.last_view) = Some(view);
    }

    pub(crate) fn encode<T: Serialize>(&self, rec: &T) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(rec).map_err(|e| Error::Invalid(format!("encoding a record: {e}")))
    }
}

/// A blocking handle on the cluster store, shared across the daemon's threads (call it from
/// plain threads, not from inside an async runtime: it runs its own).
pub struct Cluster {
    shared: Arc<Shared>,
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::watch::Sender<bool>,
    /// The background session, awaited by close so no lease is granted after the revoke.
    session: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Cluster {
    /// Joins the cluster: checks `cfg`, starts the background session and waits up to about 3 s
    /// for it; an unreachable etcd is not an error (the session keeps retrying).
    pub fn connect(cfg: ClusterConfig) -> Result<Cluster, Error> {
        if cfg.endpoints.is_empty() || cfg.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(Error::Config(
                "no etcd endpoint given: name at least one, like http://10.0.0.1:2379".into(),
            ));
        }
        if cfg.host.is_empty() || cfg.host.contains('/') {
            return Err(Error::Config(format!(
                "host name {:?} cannot name this host: give a non-empty name without '/'",
                cfg.host
            )));
        }
        if cfg.ttl < Duration::from_secs(2) {
            return Err(Error::Config(format!(
                "lease TTL {:?} is too short: give at least 2 s",
                cfg.ttl
            )));
        }
        if !cfg.prefix.starts_with('/') {
            return Err(Error::Config(format!(
                "key prefix {:?} must start with '/', like {DEFAULT_PREFIX}",
                cfg.prefix
            )));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vswitch-etcd")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("starting the etcd client runtime: {e}")))?;
        // Building the client does no I/O; it fails only for endpoints that are not URLs.
        let client = rt
            .block_on(session::new_client(&cfg.endpoints))
            .map_err(|e| Error::Config(format!("etcd endpoints {:?}: {e}", cfg.endpoints)))?;
        let shared = Arc::new(Shared {
            keys: Keys::new(&cfg.prefix),
            cfg,
            client: Mutex::new(Some(client)),
            lease: AtomicI64::new(0),
            republish: AtomicBool::new(false),
            mine: Mutex::new(BTreeMap::new()),
            subscribers: Mutex::new(Vec::new()),
            last_view: Mutex::new(None),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let session = rt.spawn(session::run(Arc::clone(&shared), stop_rx, ready_tx));
        // Not reachable yet is fine: the session warns and keeps retrying.
        let _ = ready_rx.recv_timeout(OP_TIMEOUT);
        Ok(Cluster {
            shared,
            rt,
            stop,
            session: Mutex::new(Some(session)),
            closed: AtomicBool::new(false),
        })
    }

    /// Runs one etcd call to completion or [`OP_TIMEOUT`], whichever comes first.
    fn block<T>(&self, f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.rt.block_on(async {
            match tokio::time::timeout(OP_TIMEOUT, f).await {
                Ok(r) => r,
                Err(_) => Err(self.shared.unavailable("no answer within 3 s")),
            }
        })
    }

    /// Creates a network cluster-wide with a fresh VNI (`rec.vni` is ignored); returns what was
    /// stored.
    pub fn create_network(&self, rec: NetworkRecord) -> Result<NetworkRecord, Error> {
        self.block(ops::create_network(&self.shared, rec))
    }

    /// Deletes a network and frees its VNI; refused while it has endpoints on any host.
    pub fn delete_network(&self, name: &str) -> Result<(), Error> {
        self.block(ops::delete_network(&self.shared, name))
    }

    /// Allocates an address on `network` for this host: `requested`, or the lowest free one.
    /// The MAC is `mac` or the Docker-style one of the address.
    pub fn allocate(
        &self,
        network: &str,
        name: &str,
        mac: Option<&str>,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, Error> {
        self.block(ops::allocate(&self.shared, network, name, mac, requested))
    }

    /// Releases an address this host holds (another host's, or an absent one, is left alone).
    pub fn release(&self, network: &str, ip: Ipv4Addr) -> Result<(), Error> {
        self.block(ops::release(&self.shared, network, ip))
    }

    /// Records again an endpoint this host had before a restart; refused if another host holds
    /// the address now.
    pub fn claim(&self, network: &str, name: &str, mac: &str, ip: Ipv4Addr) -> Result<(), Error> {
        self.block(ops::claim(&self.shared, network, name, mac, ip))
    }

    /// A channel of whole views: the newest one at once (if any), then one after every change.
    pub fn subscribe(&self) -> Receiver<ClusterView> {
        let (tx, rx) = crossbeam_channel::unbounded();
        if self.closed.load(Ordering::SeqCst) {
            return rx;
        }
        let mut subs = lock(&self.shared.subscribers);
        if let Some(v) = lock(&self.shared.last_view).clone() {
            let _ = tx.send(v);
        }
        subs.push(tx);
        rx
    }

    /// A fresh read of the whole state (not the cached view).
    pub fn view(&self) -> Result<ClusterView, Error> {
        self.block(ops::view(&self.shared))
    }

    /// Leaves the cluster: stops the session and revokes the lease, so this host's endpoints and
    /// host record vanish everywhere now. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.stop.send(true);
        if let Some(session) = lock(&self.session).take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(1), session).await });
        }
        let lease = self.shared.lease.swap(0, Ordering::SeqCst);
        if lease != 0
            && let Ok(mut client) = self.shared.client()
        {
            let revoked = self.rt.block_on(async {
                tokio::time::timeout(OP_TIMEOUT, client.lease_revoke(lease)).await
            });
            match revoked {
                Ok(Ok(_)) => tracing::info!("cluster store: left the cluster (lease revoked)"),
                Ok(Err(e)) => tracing::warn!(
                    "cluster store: revoking this host's lease failed ({e}); its records expire with the TTL"
                ),
                Err(_) => tracing::warn!(
                    "cluster store: revoking this host's lease timed out; its records expire with the TTL"
                ),
            }
        }
        lock(&self.shared.mine).clear();
        lock(&self.shared.subscribers).clear();
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.shared.cfg.endpoints)
            .field("prefix", &self.shared.cfg.prefix)
            .field("host", &self.shared.cfg.host)
            .field("lease", &self.shared.lease.load(Ordering::SeqCst))
            .field("closed", &self.closed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    /// Stops the background session only: the lease runs out by its TTL (a restarting daemon
    /// claims its endpoints again before that).
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        lock(&self.shared.subscribers).clear();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_is_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::Cluster>();
    }
}
