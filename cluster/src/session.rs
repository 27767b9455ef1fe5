//! The background session: lease, keepalive, host record, full read, watch and view fan-out,
//! with reconnection after outages.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, PutOptions, WatchOptions};
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

use crate::ops::{self, Owned};
use crate::{HostRecord as Host, OP_TIMEOUT, Shared, lock};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Why a session ends when etcd is fine but this host's lease is gone (revoked or expired).
const LEASE_LOST: &str = "this host's lease expired";

/// A client for `endpoints` (no I/O happens until the first call).
pub(crate) async fn new_client(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    Client::connect(endpoints, Some(opts)).await
}

/// Runs sessions until `stop`; signals `ready` once the first view went out.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    ready: SyncSender<()>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut outage = false;
    let mut first = true;
    let mut attempt = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut up = false;
        let ended = tokio::select! {
            r = session(&shared, &ready, &mut up, &mut outage, first, attempt) => r,
            _ = stop.changed() => return,
        };
        attempt += 1;
        if up {
            backoff = BACKOFF_MIN;
            first = false;
        }
        if ended == LEASE_LOST {
            tracing::warn!(
                "cluster store: this host's lease is gone; granting a new one and putting this host's endpoints back"
            );
        } else if !outage {
            tracing::warn!(
                "cluster store at {} unreachable ({ended}); retrying in the background",
                shared.cfg.endpoints.join(",")
            );
            outage = true;
        }
        tokio::select! {
            () = sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Waits at most [`OP_TIMEOUT`] for `f`, making both failures one text.
async fn within<T>(
    what: &str,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within 3 s")),
    }
}

/// One session, until etcd fails; returns why it ended.
async fn session(
    sh: &Shared,
    ready: &SyncSender<()>,
    up: &mut bool,
    outage: &mut bool,
    first: bool,
    attempt: u64,
) -> String {
    match session_inner(sh, ready, up, outage, first, attempt).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

async fn session_inner(
    sh: &Shared,
    ready: &SyncSender<()>,
    up: &mut bool,
    outage: &mut bool,
    first: bool,
    attempt: u64,
) -> Result<Never, String> {
    // A fresh client each session (but the first, built by connect): a channel that saw the
    // server go may not come back.
    let mut client = if attempt == 0 {
        sh.client().map_err(|e| e.to_string())?
    } else {
        let c = new_client(&sh.cfg.endpoints)
            .await
            .map_err(|e| e.to_string())?;
        *lock(&sh.client) = Some(c.clone());
        c
    };
    let ttl = i64::try_from(sh.cfg.ttl.as_secs())
        .unwrap_or(i64::MAX)
        .max(2);
    let mut lease = sh.lease.load(Ordering::SeqCst);
    if lease != 0 {
        let left = match timeout(OP_TIMEOUT, client.lease_time_to_live(lease, None)).await {
            Ok(Ok(r)) => r.ttl(),
            // Some etcd versions answer NotFound instead of TTL -1.
            Ok(Err(e)) if e.to_string().contains("lease not found") => -1,
            Ok(Err(e)) => return Err(format!("reading the lease: {e}")),
            Err(_) => return Err("reading the lease: no answer within 3 s".into()),
        };
        if left <= 0 {
            tracing::info!("cluster store: this host's lease expired; granting a new one");
            lease = 0;
        }
    }
    if lease == 0 {
        lease = within("granting a lease", client.lease_grant(ttl, None))
            .await?
            .id();
        sh.lease.store(lease, Ordering::SeqCst);
        // Until done, also when this session fails halfway and the next keeps the lease.
        sh.republish.store(true, Ordering::SeqCst);
    }
    let host = Host {
        host: sh.cfg.host.clone(),
        vtep: sh.cfg.vtep,
    };
    let value = sh.encode(&host).map_err(|e| e.to_string())?;
    let put = client.put(
        sh.keys.host(&host.host),
        value,
        Some(PutOptions::new().with_lease(lease)),
    );
    within("putting the host record", put).await?;
    if sh.republish.load(Ordering::SeqCst) {
        republish(sh, &mut client, lease).await?;
        sh.republish.store(false, Ordering::SeqCst);
    }
    let (mut state, mut revision) =
        within("reading the state", ops::read_all(sh, &mut client)).await?;
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut watch = within("watching", client.watch(sh.keys.all(), Some(opts))).await?;
    let (mut keeper, mut alive) =
        within("keeping the lease alive", client.lease_keep_alive(lease)).await?;
    sh.publish(state.view(revision));
    if *outage || first {
        tracing::info!(
            "cluster store: connected to etcd at {} as host {}",
            sh.cfg.endpoints.join(","),
            sh.cfg.host
        );
    }
    *outage = false;
    *up = true;
    let _ = ready.try_send(());
    let period = (sh.cfg.ttl / 3).max(Duration::from_millis(200));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                keeper.keep_alive().await.map_err(|e| format!("keeping the lease alive: {e}"))?;
                match timeout(period.max(Duration::from_secs(1)), alive.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                    Ok(Ok(Some(_))) => {
                        sh.lease.store(0, Ordering::SeqCst);
                        return Err(LEASE_LOST.into());
                    }
                    Ok(Ok(None)) => return Err("the lease keepalive stream ended".into()),
                    Ok(Err(e)) => return Err(format!("keeping the lease alive: {e}")),
                    Err(_) => return Err("keeping the lease alive: no answer".into()),
                }
            }
            msg = watch.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err("the watch ended".into()),
                    Err(e) => return Err(format!("watching: {e}")),
                };
                if resp.canceled() {
                    return Err(format!("the watch was canceled: {}", resp.cancel_reason()));
                }
                if resp.events().is_empty() {
                    continue;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    match ev.event_type() {
                        EventType::Put => state.put(&sh.keys, kv.key(), kv.value()),
                        EventType::Delete => state.delete(kv.key()),
                    }
                }
                revision = resp.header().map_or(revision, |h| h.revision());
                sh.publish(state.view(revision));
            }
        }
    }
}

/// Puts this host's endpoints back under a new lease, never over another host's record.
async fn republish(sh: &Shared, client: &mut Client, lease: i64) -> Result<(), String> {
    let mine: Vec<_> = lock(&sh.mine).values().cloned().collect();
    for rec in mine {
        match within_op(ops::put_mine(sh, client, &rec, lease)).await? {
            // Released while this ran: take it away again.
            Owned::Stored if !lock(&sh.mine).contains_key(&(rec.network.clone(), rec.ip)) => {
                within_op(ops::release(sh, rec.network.as_str(), rec.ip)).await?;
            }
            Owned::Stored => {}
            Owned::Other(other) => {
                tracing::error!(
                    "cluster store: {} on {} ({}) was taken by host {other} during the outage; this host no longer owns it",
                    rec.ip,
                    rec.network,
                    rec.name
                );
                lock(&sh.mine).remove(&(rec.network.clone(), rec.ip));
            }
        }
    }
    Ok(())
}

async fn within_op<T>(f: impl Future<Output = Result<T, crate::Error>>) -> Result<T, String> {
    match timeout(OP_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("putting this host's endpoints back: no answer within 3 s".into()),
    }
}
