//! TAP devices: an Ethernet port of the switch backed by `/dev/net/tun`.
//!
//! A [`Tap`] owns one queue fd of a TAP device (IFF_TAP | IFF_NO_PI, so each read/write is one
//! bare Ethernet frame, no packet-info prefix). With [`Tap::create_offloaded`] the device also
//! has IFF_VNET_HDR: every read and write starts with a 10-byte virtio-net header, and
//! TUNSETOFFLOAD tells the kernel which offloads the reader takes (partial checksums, TSO4/6,
//! USO4/6 where the kernel has it: unknown bits give EINVAL, so USO is probed by asking for it
//! and falling back). The kernel then hands over TCP super-frames up to 64 KB; frames written
//! with a GSO header are segmented by the kernel where needed. The fd is non-blocking:
//! [`Tap::recv`] returns `WouldBlock` when nothing is queued, and readiness comes from
//! poll/epoll on [`AsFd`].
//!
//! The device is not persistent: it disappears when its last queue fd closes, so a crashed
//! daemon leaves nothing behind. When created inside another namespace the device lives there
//! for good, while the fd keeps working from any thread in any namespace.
//!
//! Multi-queue (IFF_MULTI_QUEUE, [`Tap::create_queues`]): the kernel spreads the frames it
//! sends towards the TAP over the queues by flow hash, so each worker can own one queue.

use super::{IoError, ifname_cstr, in_netns, link::set_link_up};
use packet::offload::VNET_HDR_LEN;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// One queue of a TAP device. Several threads may hold `&Tap`: reads and writes are whole frames,
/// atomic in the kernel.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    /// IFF_VNET_HDR: what the kernel hands over and takes besides plain frames; `None` without.
    offloads: Option<packet::offload::Capabilities>,
}

impl Tap {
    /// Creates (or attaches to) TAP `name` with IFF_TAP|IFF_NO_PI, non-blocking. If `netns` is
    /// `Some`, the device is created inside that namespace (open + TUNSETIFF on a thread in the
    /// namespace; the fd keeps working from any namespace). Sets the device up with the given
    /// MTU, in that namespace.
    ///
    /// # Errors
    /// A bad name, a missing namespace, no /dev/net/tun or no CAP_NET_ADMIN, or EBUSY when the
    /// device exists and another process holds it.
    pub fn create(name: &str, netns: Option<&Path>, mtu: u16) -> Result<Tap, IoError> {
        let mut taps = Self::create_inner(name, netns, mtu, 1, false, false)?;
        taps.pop()
            .ok_or_else(|| IoError::sys("creating TAP", std::io::ErrorKind::Other))
    }

    /// [`Tap::create_queues`] with IFF_VNET_HDR and the offloads this kernel offers
    /// (TUNSETOFFLOAD: checksum, TSO4/6, and USO4/6 when the kernel knows them); see
    /// [`Tap::offloads`].
    pub fn create_offloaded(
        name: &str,
        netns: Option<&Path>,
        mtu: u16,
        n: usize,
    ) -> Result<Vec<Tap>, IoError> {
        Self::create_inner(name, netns, mtu, n.max(1), n > 1, true)
    }

    /// What the device carries besides plain frames when it has a virtio-net header.
    pub fn offloads(&self) -> Option<packet::offload::Capabilities> {
        self.offloads
    }

    /// Creates TAP `name` with IFF_MULTI_QUEUE and `n` queues (one [`Tap`] each), otherwise as
    /// [`Tap::create`]. The kernel allows up to 256 queues.
    pub fn create_queues(
        name: &str,
        netns: Option<&Path>,
        mtu: u16,
        n: usize,
    ) -> Result<Vec<Tap>, IoError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        Self::create_inner(name, netns, mtu, n, true, false)
    }

    fn create_inner(
        name: &str,
        netns: Option<&Path>,
        mtu: u16,
        n: usize,
        multi_queue: bool,
        vnet: bool,
    ) -> Result<Vec<Tap>, IoError> {
        ifname_cstr(name)?;
        let work = || -> Result<Vec<Tap>, IoError> {
            let taps = (0..n)
                .map(|_| open_queue(name, multi_queue, vnet))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(first) = taps.first() {
                set_link_up(&first.name, Some(mtu))?;
            }
            Ok(taps)
        };
        match netns {
            Some(path) => in_netns(path, work)?,
            None => work(),
        }
    }

    /// Wraps a TAP queue fd made elsewhere (e.g. passed over from inside a container's
    /// namespace by the rootless helper) and makes it non-blocking.
    pub fn from_fd(fd: OwnedFd, name: &str) -> Result<Tap, IoError> {
        // SAFETY: F_GETFL on a descriptor we own; no memory is passed.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        let set = if flags < 0 {
            -1
        } else {
            // SAFETY: F_SETFL on a descriptor we own; no memory is passed.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }
        };
        if set < 0 {
            return Err(IoError::sys(
                "making the TAP descriptor non-blocking",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Tap {
            fd,
            name: name.to_string(),
            offloads: None,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame into `buf`; `WouldBlock` when none is queued. A frame longer than `buf`
    /// is truncated (size buffers for MTU + 14, or 65550 to be safe).
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n.unsigned_abs())
    }

    /// Writes one frame after its virtio-net header (a device made by
    /// [`Tap::create_offloaded`]), in one `writev`.
    pub fn send_vnet(&self, header: &[u8; VNET_HDR_LEN], frame: &[u8]) -> std::io::Result<usize> {
        let iov = [
            libc::iovec {
                iov_base: header.as_ptr().cast_mut().cast(),
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            },
        ];
        // SAFETY: both iovecs point at buffers alive and readable for their lengths across the
        // call; the kernel only reads through them for a write.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n.unsigned_abs())
    }

    /// Writes one frame; the kernel receives it as if it arrived on the device's wire.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<usize> {
        // SAFETY: `frame` is valid for reads of `frame.len()` bytes for the duration of the call.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n.unsigned_abs())
    }
}

/// Creates TAP `name` in the calling thread's namespace and returns its queue fd (for the
/// rootless helper, which passes it to the switch).
pub(crate) fn open_here(name: &str) -> Result<OwnedFd, IoError> {
    Ok(open_queue(name, false, false)?.fd)
}

/// Opens /dev/net/tun and attaches it to TAP `name` (creating it if absent), in the calling
/// thread's namespace.
fn open_queue(name: &str, multi_queue: bool, vnet: bool) -> Result<Tap, IoError> {
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| IoError::sys("opening /dev/net/tun", e))?;
    let fd = OwnedFd::from(file);

    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    if vnet {
        flags |= libc::IFF_VNET_HDR;
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name = ifname_cstr(name)?;
    // The TUN flags all fit the 16-bit ifr_flags field (they are < 0x8000).
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the `ifreq` we pass, which lives across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &raw mut ifr) };
    if rc < 0 {
        return Err(IoError::sys(
            format!("attaching to TAP {name:?} (TUNSETIFF)"),
            std::io::Error::last_os_error(),
        ));
    }
    // The kernel writes back the name it used (NUL-terminated, at most IFNAMSIZ - 1 bytes).
    let actual: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let offloads = if vnet {
        Some(set_offloads(&fd).map_err(|e| {
            IoError::sys(
                format!("enabling offloads on TAP {name:?} (TUNSETOFFLOAD)"),
                e,
            )
        })?)
    } else {
        None
    };
    Ok(Tap {
        fd,
        name: String::from_utf8_lossy(&actual).into_owned(),
        offloads,
    })
}

/// Asks for checksum, TSO4/6 and USO4/6 offloads; without USO (EINVAL: a kernel before 6.2)
/// for the rest. What the reader may then receive, and what it may send (the kernel takes any
/// GSO type it knows on write).
fn set_offloads(fd: &OwnedFd) -> std::io::Result<packet::offload::Capabilities> {
    let base = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    let set = |flags: libc::c_uint| {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of flags); no
        // memory is passed.
        let rc =
            unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let uso = match set(base | libc::TUN_F_USO4 | libc::TUN_F_USO6) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            set(base)?;
            false
        }
        Err(e) => return Err(e),
    };
    Ok(packet::offload::Capabilities {
        partial_checksum: true,
        tso4: true,
        tso6: true,
        uso,
    })
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::testutil::{Netns, ip, skip_unless_root, unique};
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::time::{Duration, Instant};

    const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const OUR_IP: [u8; 4] = [192, 0, 2, 2];
    const TAP_IP: [u8; 4] = [192, 0, 2, 1];

    /// An ARP request "who has 192.0.2.1? tell 192.0.2.2" from a fake neighbour.
    fn arp_request() -> Vec<u8> {
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&OUR_MAC);
        f.extend_from_slice(&[0x08, 0x06]); // ARP
        f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
        f.extend_from_slice(&OUR_MAC);
        f.extend_from_slice(&OUR_IP);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&TAP_IP);
        f
    }

    /// Waits up to 3 s for an ARP reply to OUR_MAC on any of `taps`.
    fn wait_arp_reply(taps: &[Tap]) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            let mut fds: Vec<PollFd> = taps
                .iter()
                .map(|t| PollFd::new(t.as_fd(), PollFlags::POLLIN))
                .collect();
            poll(&mut fds, PollTimeout::from(100u16)).unwrap();
            for tap in taps {
                while let Ok(n) = tap.recv(&mut buf) {
                    let f = &buf[..n];
                    if n >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] {
                        return Some(f.to_vec());
                    }
                }
            }
        }
        None
    }

    fn check_reply(reply: &[u8], tap_mac: &str) {
        assert_eq!(reply[0..6], OUR_MAC, "reply goes to the asker");
        assert_eq!(reply[28..32], TAP_IP, "sender protocol address");
        assert_eq!(reply[32..38], OUR_MAC, "target hardware address");
        assert_eq!(reply[38..42], OUR_IP, "target protocol address");
        let sha: Vec<String> = reply[22..28].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            sha.join(":"),
            tap_mac,
            "sender hardware address is the TAP's"
        );
    }

    fn mac_of(ns: &Netns, name: &str) -> String {
        let out = ip(&["-n", ns.name(), "-j", "link", "show", name]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["address"].as_str().unwrap().to_owned()
    }

    #[test]
    fn tap_in_netns_answers_arp() {
        if skip_unless_root("tap_in_netns_answers_arp") {
            return;
        }
        let ns = Netns::new("tap");
        let name = unique("t");
        let tap = Tap::create(&name, Some(ns.path()), 1400).unwrap();
        assert_eq!(tap.name(), name);
        let show = ip(&["-n", ns.name(), "link", "show", &name]);
        assert!(show.contains(",UP"), "{show}");
        assert!(show.contains("mtu 1400"), "{show}");
        assert!(
            !crate::io::link_exists(&name),
            "the TAP must live in the namespace, not in ours"
        );
        ip(&["-n", ns.name(), "addr", "add", "192.0.2.1/24", "dev", &name]);
        let mut buf = [0u8; 2048];
        // Nothing queued yet that we care about; the fd never blocks.
        while tap.recv(&mut buf).is_ok() {}
        assert_eq!(
            tap.recv(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );

        let req = arp_request();
        assert_eq!(tap.send(&req).unwrap(), req.len());
        let reply = wait_arp_reply(std::slice::from_ref(&tap)).expect("an ARP reply");
        check_reply(&reply, &mac_of(&ns, &name));

        // The device goes away with its fd.
        drop(tap);
        let gone = in_netns(ns.path(), || crate::io::link_exists(&name)).unwrap();
        assert!(!gone, "non-persistent TAP must vanish when its fd closes");
    }

    #[test]
    fn multi_queue_tap() {
        if skip_unless_root("multi_queue_tap") {
            return;
        }
        let ns = Netns::new("tmq");
        let name = unique("tq");
        let taps = Tap::create_queues(&name, Some(ns.path()), 1500, 3).unwrap();
        assert_eq!(taps.len(), 3);
        assert!(taps.iter().all(|t| t.name() == name));
        ip(&["-n", ns.name(), "addr", "add", "192.0.2.1/24", "dev", &name]);
        let req = arp_request();
        taps[1].send(&req).unwrap();
        let reply = wait_arp_reply(&taps).expect("an ARP reply on some queue");
        check_reply(&reply, &mac_of(&ns, &name));
    }

    #[test]
    fn tap_with_vnet_header_frames_every_read_and_write() {
        if skip_unless_root("tap_with_vnet_header_frames_every_read_and_write") {
            return;
        }
        let ns = Netns::new("tvn");
        let name = unique("tv");
        let taps = Tap::create_offloaded(&name, Some(ns.path()), 1500, 1).unwrap();
        let tap = &taps[0];
        let caps = tap.offloads().expect("a vnet TAP reports its offloads");
        assert!(caps.partial_checksum && caps.tso4 && caps.tso6, "{caps:?}");
        // TUNSETOFFLOAD turned the device's own offload features on.
        let on = in_netns(ns.path(), || crate::io::get_offloads(&name))
            .unwrap()
            .unwrap();
        assert!(on.tx_csum && on.tso, "{on:?}");
        ip(&["-n", ns.name(), "addr", "add", "192.0.2.1/24", "dev", &name]);
        let mut buf = [0u8; 2048];
        while tap.recv(&mut buf).is_ok() {}
        let req = arp_request();
        assert_eq!(
            tap.send_vnet(&[0; VNET_HDR_LEN], &req).unwrap(),
            10 + req.len()
        );
        // Replies come after their own 10-byte header.
        let deadline = Instant::now() + Duration::from_secs(3);
        let reply = loop {
            assert!(Instant::now() < deadline, "no ARP reply");
            let mut fds = [PollFd::new(tap.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(100u16)).unwrap();
            match tap.recv(&mut buf) {
                Ok(n) if n >= 52 && buf[22..24] == [0x08, 0x06] && buf[30..32] == [0, 2] => {
                    break buf[10..n].to_vec();
                }
                _ => {}
            }
        };
        check_reply(&reply, &mac_of(&ns, &name));
    }

    #[test]
    fn tap_name_errors() {
        let err = Tap::create("a-very-long-tap-name", None, 1500).unwrap_err();
        assert!(matches!(err, IoError::BadIfName { .. }), "{err}");
        let err = Tap::create("t0", Some(Path::new("/nonexistent/ns")), 1500).unwrap_err();
        assert!(matches!(err, IoError::Netns { .. }), "{err}");
    }
}
