//! The I/O edge of vswitch: the only module of the project with `unsafe` and raw syscalls.
//!
//! It owns:
//! - [`netns`]: running a closure inside another network namespace without moving the caller.
//! - [`tap`]: TAP devices (`/dev/net/tun`), single- and multi-queue.
//! - [`afpacket`]: AF_PACKET sockets read through a TPACKET_V3 mmap RX ring or their receive
//!   queue (`recvmmsg`, no ring: container ports), batched TX (`sendmmsg`), and a per-packet
//!   baseline ([`AfPacketSimple`]) to compare them with.
//! - [`link`][mod@link]: netlink (links, addresses, routes; the veth plumbing Docker does on `docker run`)
//!   and the ethtool ioctls that read and switch offloads.
//! - [`linkwatch`]: hearing of deleted links (containers gone), veth pairs a runtime finishes,
//!   and one link read back as it is.
//! - [`macvlan`]: the uplink beside the host's own stack (a macvlan of the NIC with vswitch's
//!   MAC, inert for the host), and the host's addresses on a link.
//! - [`kernel`]: what the running kernel offers, checked at start-up.
//! - [`bpf`]: capture filters in tcpdump's syntax, compiled and run by libpcap (opened at run
//!   time).
//!
//! Invariants kept by the whole module:
//! - Every file descriptor is an [`std::os::fd::OwnedFd`]; nothing here closes a raw fd by hand.
//! - Every `unsafe` block carries a `// SAFETY:` comment (clippy `undocumented_unsafe_blocks`).
//! - The caller's thread never changes network namespace: namespace work runs on a short-lived
//!   thread ([`in_netns`]). Sockets and TAP fds created there keep working from any namespace.
//! - Netlink is control plane only, synchronous, never on the packet path.
//!
//! Almost everything here needs root (CAP_NET_ADMIN for links, TAP and ethtool, CAP_NET_RAW for
//! AF_PACKET, CAP_SYS_ADMIN for `setns`); the errors say so when the kernel refuses.
#![allow(unsafe_code)]

pub mod afpacket;
pub mod bpf;
pub mod kernel;
pub mod link;
pub mod linkwatch;
pub mod macvlan;
pub mod netns;
pub mod process;
pub mod rootless;
pub mod tap;
pub mod wait;

#[cfg(test)]
mod testutil;

pub use afpacket::{
    AfPacket, AfPacketQueue, AfPacketSimple, RingConfig, RingStats, RxScratch, SocketOptions,
};
pub use link::{
    Offloads, VethSpec, create_container_veth, delete_link, get_offloads, link_exists, set_link_up,
    set_offloads,
};
pub use netns::in_netns;
pub use tap::Tap;

use std::path::PathBuf;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1 for the NUL).
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Why an I/O set-up step failed. Each message says what was attempted and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// An interface name the kernel would refuse.
    #[error(
        "interface name {name:?} is invalid: names are 1 to {MAX_IFNAME_LEN} bytes, without '/', \
         ':', whitespace or NUL — pick a shorter name"
    )]
    BadIfName {
        /// The name as given.
        name: String,
    },
    /// No interface of that name in the namespace where it was looked up.
    #[error(
        "interface {name:?} not found in this network namespace — check `ip link` (or \
         `ip -n NS link` when it lives in a namespace)"
    )]
    NoSuchInterface {
        /// The name as given.
        name: String,
    },
    /// Opening or entering a network namespace failed.
    #[error("entering network namespace {path}: {source}{}", hint(source))]
    Netns {
        /// The namespace file (e.g. /var/run/netns/NAME).
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The thread that does the namespace work could not be started.
    #[error("starting a helper thread for network namespace {path}: {source}")]
    Thread {
        /// The namespace file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A syscall on a TAP, AF_PACKET or ioctl socket failed.
    #[error("{what} failed: {source}{}", hint(source))]
    Sys {
        /// What was attempted, e.g. "opening /dev/net/tun".
        what: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The kernel refused a netlink request.
    #[error("netlink: {what} failed: {source}{}", hint(source))]
    Netlink {
        /// What was attempted, e.g. "creating veth vethab12 <-> vethab12p".
        what: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A ring geometry the kernel would refuse (or that makes no sense).
    #[error("AF_PACKET ring config is invalid: {0}")]
    BadRingConfig(String),
}

impl IoError {
    pub(crate) fn sys(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        IoError::Sys {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn netlink(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        IoError::Netlink {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The errno behind this error, if the kernel gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            IoError::Netns { source, .. }
            | IoError::Thread { source, .. }
            | IoError::Sys { source, .. }
            | IoError::Netlink { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A short "what to do" suffix for the errnos that users hit in practice.
fn hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " — run as root or give the process CAP_NET_ADMIN (and CAP_NET_RAW for AF_PACKET, \
             CAP_SYS_ADMIN for entering namespaces)"
        }
        Some(libc::EEXIST) => " — it already exists: delete it first or pick another name",
        Some(libc::ENODEV) => " — no such interface: check the name and the namespace",
        Some(libc::ENOENT) => " — no such file: check the path (e.g. `ip netns list`)",
        Some(libc::EBUSY) => " — the device is busy (another process holds it, or it is UP)",
        Some(libc::ENOMEM) => {
            " — out of (locked) memory: use smaller or fewer ring blocks, or raise RLIMIT_MEMLOCK"
        }
        Some(libc::EINVAL) => " — the kernel rejected an argument (check names, sizes, MTU)",
        _ => "",
    }
}

/// Checks `name` the way the kernel's `dev_valid_name` does, so that callers get a clear error
/// instead of a truncated name or an EINVAL from deep inside an ioctl.
pub fn check_ifname(name: &str) -> Result<(), IoError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(IoError::BadIfName {
            name: name.to_owned(),
        })
    }
}

/// The interface name as the `[c_char; IFNAMSIZ]` that ioctls want, NUL-terminated.
pub(crate) fn ifname_cstr(name: &str) -> Result<[libc::c_char; libc::IFNAMSIZ], IoError> {
    check_ifname(name)?;
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, src) in out.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(out)
}

/// The ifindex of `name` in the calling thread's network namespace.
pub(crate) fn ifindex(name: &str) -> Result<u32, IoError> {
    check_ifname(name)?;
    nix::net::if_::if_nametoindex(name).map_err(|e| {
        if e == nix::errno::Errno::ENODEV {
            IoError::NoSuchInterface {
                name: name.to_owned(),
            }
        } else {
            IoError::sys(format!("looking up interface {name:?}"), e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a23456789012345").is_ok());
        let err = check_ifname("a234567890123456").unwrap_err();
        assert!(err.to_string().contains("1 to 15 bytes"), "{err}");
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("..").is_err());
        let c = ifname_cstr("tap0").unwrap();
        assert_eq!(c[..5], [b't' as _, b'a' as _, b'p' as _, b'0' as _, 0]);
    }

    #[test]
    fn errors_tell_what_to_do() {
        let e = IoError::sys(
            "opening /dev/net/tun",
            std::io::Error::from_raw_os_error(libc::EPERM),
        );
        let msg = e.to_string();
        assert!(msg.starts_with("opening /dev/net/tun failed: "), "{msg}");
        assert!(msg.contains("run as root"), "{msg}");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }
}
