//! Running code inside another network namespace.
//!
//! `setns(2)` changes the namespace of the calling *thread* only, and a thread that has switched
//! would carry the switch into whatever runs on it next. So [`in_netns`] never switches the
//! caller: it runs the closure on a short-lived scoped thread that enters the namespace, runs,
//! and exits. What the closure creates keeps its namespace for life: a socket stays bound to the
//! namespace it was created in, a TAP fd to the device it attached, a netlink socket talks to its
//! namespace's tables. That is how the datapath opens ports inside container namespaces and then
//! polls them from worker threads in the root namespace.
//!
//! One thing does not follow the thread: `/sys` and `/proc/net` show the namespace of the mount,
//! not of the thread. Use netlink or ioctls inside the closure, not `/sys/class/net`.

use super::IoError;
use nix::sched::{CloneFlags, setns};
use std::fs::File;
use std::path::Path;

/// Runs `f` on a short-lived thread that has `setns()`'d into the network namespace at `netns`
/// (e.g. `/var/run/netns/NAME` or `/proc/PID/ns/net`); the caller's thread never changes
/// namespace.
///
/// A panic in `f` is resumed on the caller's thread.
///
/// # Errors
/// [`IoError::Netns`] when the namespace file cannot be opened or entered (needs CAP_SYS_ADMIN),
/// [`IoError::Thread`] when no thread can be spawned.
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, IoError> {
    let netns_err = |source: std::io::Error| IoError::Netns {
        path: netns.to_owned(),
        source,
    };
    // Open on the caller's thread: a bad path fails before any thread is started.
    let ns = File::open(netns).map_err(netns_err)?;
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("vswitch-netns".into())
            .spawn_scoped(s, move || -> Result<T, IoError> {
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(e.into()))?;
                drop(ns);
                Ok(f())
            })
            .map_err(|source| IoError::Thread {
                path: netns.to_owned(),
                source,
            })?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The namespace identity of the calling thread, e.g. `net:[4026531840]`.
pub fn current_netns_id() -> std::io::Result<String> {
    let link = std::fs::read_link("/proc/thread-self/ns/net")?;
    Ok(link.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::testutil::{Netns, skip_unless_root};

    #[test]
    fn closure_runs_in_other_netns_caller_unchanged() {
        if skip_unless_root("in_netns") {
            return;
        }
        let ns = Netns::new("nsid");
        let before = current_netns_id().unwrap();
        let inside = in_netns(ns.path(), || current_netns_id().unwrap()).unwrap();
        let after = current_netns_id().unwrap();
        assert_ne!(before, inside, "closure should run in the test namespace");
        assert_eq!(before, after, "caller's namespace must not change");
        // The id we saw inside is the namespace file's.
        let ns_ino = std::fs::metadata(ns.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(inside, format!("net:[{}]", ns_ino.ino()));
    }

    #[test]
    fn bad_path_is_a_clear_error() {
        let err = in_netns(Path::new("/nonexistent/netns/x"), || ()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/netns/x"), "{msg}");
        assert!(msg.contains("ip netns list"), "{msg}");
    }

    #[test]
    fn panics_propagate() {
        if skip_unless_root("in_netns panic") {
            return;
        }
        let ns = Netns::new("nspn");
        let r = std::panic::catch_unwind(|| in_netns(ns.path(), || panic!("boom")));
        assert!(r.is_err());
    }
}
