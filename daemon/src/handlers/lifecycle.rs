//! Containers that go away without a disconnect: their process exits, `docker rm -f`, a
//! runtime deletes the namespace. The kernel deletes a veth pair with its namespace; a link
//! watcher hears of that at once, and a sweep every [`SWEEP`] catches what sends no link event
//! (a rootless container's TAP lives in its namespace; a namespace file bound again to a new
//! namespace). A container found gone is disconnected as `network disconnect` would (its
//! lease, port, DNS name and tracked flows go; its published ports wait for it to come back).

use super::container::forget;
use crate::state::{Container, Daemon, lock};
use datapath::io::link;
use datapath::io::linkwatch::{LinkEvents, LinkWatcher};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often every container is checked besides the link events.
const SWEEP: Duration = Duration::from_secs(2);

/// The identity of the namespace a path names now (device and inode of its nsfs file), when
/// it can be read.
pub(crate) fn identity(netns: &str) -> Option<(u64, u64)> {
    if netns.is_empty() {
        return None;
    }
    std::fs::metadata(netns).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `c` still has its link and its namespace.
pub(crate) fn alive(c: &Container) -> bool {
    if c.tap {
        // The TAP lives as long as we hold it; the container lives as long as its process.
        let Ok(pid) = super::container::container_tap_of(&c.netns) else {
            return true;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return false;
        }
    } else if !link::link_exists(&c.port) {
        return false;
    }
    match c.netns_identity {
        Some(known) => identity(&c.netns) == Some(known),
        None => true,
    }
}

/// Starts the link watcher and the sweep (threads that live as long as the process). A
/// watcher that cannot be opened leaves the sweep alone to do the work, said in the log.
pub(crate) fn start(d: &Arc<Daemon>) {
    let watching = Arc::clone(d);
    let watcher = LinkWatcher::open().map(|w| {
        std::thread::Builder::new()
            .name("vswitch-links".into())
            .spawn(move || watch(&watching, w))
    });
    match watcher {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!("no link watcher thread ({e}): containers gone are found by the sweep")
        }
        Err(e) => tracing::warn!("no link watcher ({e}): containers gone are found by the sweep"),
    }
    let sweeping = Arc::clone(d);
    let sweeper = std::thread::Builder::new()
        .name("vswitch-sweep".into())
        .spawn(move || {
            while !sweeping.shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(SWEEP);
                sweep(&sweeping, |_| true);
            }
        });
    if let Err(e) = sweeper {
        tracing::warn!("no sweep thread ({e}): containers that exit stay attached");
    }
}

fn watch(d: &Daemon, mut w: LinkWatcher) {
    while !d.shutdown.load(Ordering::Relaxed) {
        match w.wait() {
            Ok(LinkEvents::Removed(names)) if !names.is_empty() => {
                sweep(d, |c| names.contains(&c.port));
            }
            Ok(LinkEvents::Removed(_)) => {}
            Ok(LinkEvents::Overrun) => sweep(d, |_| true),
            Err(e) => {
                tracing::warn!(
                    "link watcher stopped ({e}): containers gone are found by the sweep"
                );
                return;
            }
        }
    }
}

/// Disconnects the containers picked by `which` that are gone.
fn sweep(d: &Daemon, which: impl Fn(&Container) -> bool) {
    let candidates: Vec<(String, String)> = lock(&d.containers)
        .values()
        .filter(|c| which(c) && !alive(c))
        .map(|c| (c.network.clone(), c.name.clone()))
        .collect();
    for (network, name) in candidates {
        let _guard = lock(&d.changes);
        if d.shutdown.load(Ordering::Relaxed) {
            return;
        }
        // Checked again under the lock: a reconnect may have replaced it meanwhile.
        let still_gone = lock(&d.containers)
            .get(&(network.clone(), name.clone()))
            .is_some_and(|c| !alive(c));
        if !still_gone {
            continue;
        }
        match forget(d, &network, &name, false) {
            Ok(c) => {
                tracing::info!(container = %name, network, ip = %c.ip, "namespace gone: disconnected")
            }
            Err(e) => {
                tracing::warn!(container = %name, network, "disconnecting a container gone: {e:#}")
            }
        }
    }
}
