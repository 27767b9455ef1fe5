//! Rootless mode: a private user + network namespace for the switch, and a helper process left
//! behind in the host's namespaces.
//!
//! An unprivileged user gets CAP_NET_ADMIN only inside a user namespace of its own, whose
//! network namespace is empty. Two things must still happen outside it, and the [`HostHelper`]
//! does them:
//! - **host sockets**: a socket belongs to the network namespace it was created in, so the
//!   helper (which never leaves the host's namespaces) creates sockets on request and passes
//!   them over `SCM_RIGHTS`; the switch then connects/binds/listens on them as usual, and the
//!   traffic is the host's;
//! - **container links**: for a rootless container (a user + network namespace owned by the
//!   same user), the helper forks a child that enters that container's namespaces, creates a
//!   TAP device there, configures it (address, route, MAC, MTU) and passes the TAP fd back. The
//!   switch serves that fd as a port from its own namespace.
//!
//! Why a process and not a thread: `setns` into a user namespace is refused to multi-threaded
//! processes, and a forked copy of a multi-threaded process may only call async-signal-safe
//! functions. So the helper is forked by [`HostHelper::spawn`] while the caller is still
//! single-threaded (the very start of `vswitch daemon --rootless`), and it forks again (being
//! single-threaded itself) for each container.
//!
//! Protocol on the SOCK_SEQPACKET pair: one JSON [`Request`] per message; one JSON [`Reply`]
//! per message back, carrying the descriptor as `SCM_RIGHTS` when `ok`.

use super::IoError;
use nix::sched::CloneFlags;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// What the switch asks of the helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// `socket(domain, ty, proto)` in the host's network namespace.
    Socket {
        /// Address family (e.g. AF_INET).
        domain: i32,
        /// Socket type, with SOCK_NONBLOCK/SOCK_CLOEXEC as wanted.
        ty: i32,
        /// Protocol (0 for the default).
        proto: i32,
    },
    /// A TAP device inside the namespaces of process `pid`, configured as a container link.
    ContainerTap {
        /// A process of the container (its /proc/PID/ns/{user,net} are entered).
        pid: u32,
        /// Interface name inside the container, e.g. "eth0".
        ifname: String,
        /// The container's MAC.
        mac: [u8; 6],
        /// MTU.
        mtu: u16,
        /// Address and prefix length.
        addr: (Ipv4Addr, u8),
        /// Default gateway, if the network has an uplink.
        gateway: Option<Ipv4Addr>,
        /// IPv6 address and prefix length, on a dual-stack network.
        #[serde(default)]
        addr6: Option<(Ipv6Addr, u8)>,
        /// IPv6 default gateway, if the network has an uplink.
        #[serde(default)]
        gateway6: Option<Ipv6Addr>,
    },
}

/// The helper's answer; on success the descriptor rides along as SCM_RIGHTS.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    error: String,
}

/// The helper process, seen from the switch. Requests are serialized by a lock: one at a time.
#[derive(Debug)]
pub struct HostHelper {
    sock: Mutex<OwnedFd>,
    /// Set when a reply did not come in time: requests and replies can no longer be paired, so
    /// every later call fails at once instead of reading someone else's answer.
    broken: std::sync::atomic::AtomicBool,
    /// The helper process (our child).
    pid: nix::unistd::Pid,
    /// How it ended, once `health` reaped it.
    ended: std::sync::OnceLock<String>,
}

/// How long a request may take (a TAP set-up in a container is the slowest, well under this).
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

const MAX_MSG: usize = 4096;

fn io_err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// Sends one message, with `fd` attached if given.
fn send_msg(sock: RawFd, bytes: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let fds = fd.map(|f| [f]);
    let cmsgs: Vec<ControlMessage> = fds
        .as_ref()
        .map(|f| vec![ControlMessage::ScmRights(f)])
        .unwrap_or_default();
    sendmsg::<()>(sock, &iov, &cmsgs, MsgFlags::empty(), None)
        .map_err(|e| io_err("sending to the rootless helper", e))?;
    Ok(())
}

/// Receives one message and the descriptor it carries, if any. `Ok(None)` when the peer closed.
fn recv_msg(sock: RawFd) -> std::io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (len, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| io_err("receiving from the rootless helper", e))?;
        let mut fd = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for raw in fds {
                        // SAFETY: the kernel just installed `raw` in our table for this message;
                        // nothing else owns it. Extra descriptors are wrapped too (and closed).
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        fd.get_or_insert(owned);
                    }
                }
            }
        }
        (msg.bytes, fd)
    };
    if len == 0 && fd.is_none() {
        return Ok(None);
    }
    buf.truncate(len);
    Ok(Some((buf, fd)))
}

impl HostHelper {
    /// Forks the helper. The helper stays in the caller's (the host's) namespaces and serves
    /// requests until the returned handle is dropped (or this process dies: it asks for SIGKILL
    /// on its parent's death).
    ///
    /// # Safety contract (checked by the caller, not the compiler)
    /// Call it while the process is single-threaded, before any thread is spawned: the child
    /// goes on running ordinary Rust code.
    pub fn spawn() -> Result<HostHelper, IoError> {
        let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
        if threads > 1 {
            return Err(IoError::sys(
                "starting the rootless helper (the process already runs several threads)",
                std::io::ErrorKind::Other,
            ));
        }
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| {
            IoError::sys(
                "creating the rootless helper's socket pair",
                std::io::Error::from(e),
            )
        })?;
        // SAFETY: the process is single-threaded (checked above), so the child may run any code.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(IoError::sys(
                "forking the rootless helper",
                std::io::Error::from(e),
            )),
            Ok(nix::unistd::ForkResult::Child) => {
                drop(ours);
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                serve(theirs.as_raw_fd());
                // SAFETY: _exit ends the child without running the parent's atexit handlers.
                unsafe { libc::_exit(0) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(theirs);
                let timeout = nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
                nix::sys::socket::setsockopt(
                    &ours,
                    nix::sys::socket::sockopt::ReceiveTimeout,
                    &timeout,
                )
                .map_err(|e| {
                    IoError::sys(
                        "setting the helper's reply timeout",
                        std::io::Error::from(e),
                    )
                })?;
                Ok(HostHelper {
                    sock: Mutex::new(ours),
                    broken: std::sync::atomic::AtomicBool::new(false),
                    pid: child,
                    ended: std::sync::OnceLock::new(),
                })
            }
        }
    }

    /// Whether the helper still runs and answers; why not otherwise (it is reaped here).
    pub fn health(&self) -> Result<(), String> {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        if let Some(how) = self.ended.get() {
            return Err(how.clone());
        }
        let how = match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if self.broken.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err("it stopped answering requests: restart the daemon".into());
                }
                return Ok(());
            }
            Ok(WaitStatus::Exited(_, code)) => format!("it exited with status {code}"),
            Ok(WaitStatus::Signaled(_, sig, _)) => format!("it was killed by {sig}"),
            Ok(other) => return Err(format!("it is {other:?}")),
            Err(e) => format!("it is gone ({e})"),
        };
        Err(self.ended.get_or_init(|| how).clone())
    }

    /// Sends `req` and waits for the descriptor it yields.
    pub fn call(&self, req: &Request) -> std::io::Result<OwnedFd> {
        use std::sync::atomic::Ordering;
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        if self.broken.load(Ordering::Relaxed) {
            return Err(io_err(
                "the rootless helper",
                "stopped answering earlier; restart the daemon",
            ));
        }
        let bytes = serde_json::to_vec(req).map_err(|e| io_err("encoding a request", e))?;
        send_msg(sock.as_raw_fd(), &bytes, None)?;
        let received = recv_msg(sock.as_raw_fd());
        if received.is_err() {
            // Timed out (or the socket broke): a late answer would be taken for the next one's.
            self.broken.store(true, Ordering::Relaxed);
        }
        let Some((reply, fd)) = received? else {
            self.broken.store(true, Ordering::Relaxed);
            return Err(io_err("the rootless helper", "exited; restart the daemon"));
        };
        let reply: Reply =
            serde_json::from_slice(&reply).map_err(|e| io_err("decoding the helper's reply", e))?;
        match (reply.ok, fd) {
            (true, Some(fd)) => Ok(fd),
            (true, None) => Err(io_err(
                "the rootless helper",
                "answered without a descriptor",
            )),
            (false, _) => Err(std::io::Error::other(reply.error)),
        }
    }

    /// A socket in the host's network namespace.
    pub fn socket(&self, domain: i32, ty: i32, proto: i32) -> std::io::Result<OwnedFd> {
        self.call(&Request::Socket { domain, ty, proto })
    }
}

/// Sends the reply for `result`, with the descriptor when it is one.
fn answer(sock: RawFd, result: Result<OwnedFd, String>) -> std::io::Result<()> {
    let (reply, fd) = match result {
        Ok(fd) => (
            Reply {
                ok: true,
                error: String::new(),
            },
            Some(fd),
        ),
        Err(error) => (Reply { ok: false, error }, None),
    };
    let bytes = serde_json::to_vec(&reply).unwrap_or_default();
    send_msg(sock, &bytes, fd.as_ref().map(AsRawFd::as_raw_fd))
}

/// The helper's loop (in the child).
fn serve(sock: RawFd) {
    loop {
        let Ok(Some((bytes, _))) = recv_msg(sock) else {
            return;
        };
        let result = match serde_json::from_slice::<Request>(&bytes) {
            Err(e) => Err(format!("bad request: {e}")),
            Ok(Request::Socket { domain, ty, proto }) => {
                // SAFETY: plain socket(2); the returned descriptor is wrapped at once.
                let fd = unsafe { libc::socket(domain, ty, proto) };
                if fd < 0 {
                    Err(format!(
                        "socket() in the host namespace: {}",
                        std::io::Error::last_os_error()
                    ))
                } else {
                    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
                    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
                }
            }
            Ok(Request::ContainerTap { .. }) => {
                // The child answers on the socket itself (it inherits it).
                if let Err(e) = container_tap_in_child(sock, &bytes) {
                    Err(e)
                } else {
                    continue;
                }
            }
        };
        if answer(sock, result).is_err() {
            return;
        }
    }
}

/// Forks a child that enters the container's namespaces and answers the request itself; waits
/// for it. `Err` only when the child could not be started (then the helper answers).
fn container_tap_in_child(sock: RawFd, bytes: &[u8]) -> Result<(), String> {
    // SAFETY: the helper is single-threaded, so the child may run any code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("forking to enter the container: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            let result = serde_json::from_slice::<Request>(bytes)
                .map_err(|e| e.to_string())
                .and_then(|r| container_tap(&r));
            let rc = i32::from(answer(sock, result).is_err());
            // SAFETY: _exit ends the child without running atexit handlers.
            unsafe { libc::_exit(rc) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // The child replies itself; if it died without doing so, the helper must answer,
            // or the switch would wait for a reply that never comes.
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(status) => Err(format!(
                    "the process entering the container ended without answering ({status:?})"
                )),
                Err(e) => Err(format!(
                    "waiting for the process entering the container: {e}"
                )),
            }
        }
    }
}

/// In the forked child: enter the container, make and configure the TAP, return its fd.
fn container_tap(req: &Request) -> Result<OwnedFd, String> {
    let Request::ContainerTap {
        pid,
        ifname,
        mac,
        mtu,
        addr,
        gateway,
        addr6,
        gateway6,
    } = req
    else {
        return Err("not a container request".into());
    };
    let open = |kind: &str| {
        std::fs::File::open(format!("/proc/{pid}/ns/{kind}")).map_err(|e| {
            format!("opening /proc/{pid}/ns/{kind}: {e} (is the container running, and yours?)")
        })
    };
    let same_user_ns = std::fs::read_link("/proc/self/ns/user").ok()
        == std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let user = open("user")?;
    let net = open("net")?;
    if !same_user_ns {
        nix::sched::setns(&user, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("entering the user namespace of process {pid}: {e}"))?;
    }
    nix::sched::setns(&net, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("entering the network namespace of process {pid}: {e}"))?;
    let tap = super::tap::open_here(ifname).map_err(|e| e.to_string())?;
    let v6 = addr6.map(|a| (a, *gateway6));
    super::link::configure_link_here(ifname, Some(*mac), *mtu, (Some(*addr), *gateway), v6, false)
        .map_err(|e| e.to_string())?;
    Ok(tap)
}

/// Leaves the host's user and network namespaces for new ones of our own, in which we are root
/// (uid and gid 0 map to the caller's), with CAP_NET_ADMIN over the new network namespace, and
/// brings its loopback up. The process must be single-threaded.
pub fn enter_private_namespaces() -> Result<(), IoError> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).map_err(|e| {
        IoError::sys(
            "creating a user + network namespace (are unprivileged user namespaces enabled? \
             see /proc/sys/user/max_user_namespaces)",
            std::io::Error::from(e),
        )
    })?;
    let write = |path: &str, text: String| {
        std::fs::write(path, text).map_err(|e| IoError::sys(format!("writing {path}"), e))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1\n"))?;
    // Each flow of the socket gateway holds a host socket: allow as many as the hard limit.
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    super::link::set_link_up("lo", None)
}
