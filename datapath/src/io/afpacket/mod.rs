//! AF_PACKET ports: a raw socket bound to one interface, read through a TPACKET_V3 mmap RX
//! ring ([`AfPacket`], `ring.rs`) or through the socket's own receive queue with `recvmmsg`
//! ([`AfPacketQueue`], `queue.rs`), and plain per-packet syscalls ([`AfPacketSimple`], the
//! baseline the bench compares them with). This file holds what all of them share: opening and
//! binding the socket, fanout, the kernel's counters and batched TX.
//!
//! # Ring or queue
//! A ring costs its memory (mapped, so resident) and, in TPACKET_V3, a kernel timer per ring
//! that retires partly filled blocks every `block_timeout_ms` whether traffic flows or not. A
//! thousand container ports with a ring per worker kept a 2-vCPU machine in softirq while idle
//! (HRTIMER softirqs: ~90k/s at 150 ports) and held 2 MiB per port. The queue socket costs
//! neither: frames wait as socket buffers in the kernel (counted against `SO_RCVBUF`, only
//! while queued) and the reader is woken per frame, so latency at low rates is a wake-up, not a
//! block timeout. The ring pays off on the few ports that carry heavy traffic (the uplink).
//!
//! # What the sockets see
//! - Not our own transmissions: PACKET_IGNORE_OUTGOING (Linux ≥ 4.20) drops them in the kernel,
//!   and frames with `sll_pkttype == PACKET_OUTGOING` are skipped too, for older kernels.
//! - VLAN tags: the kernel strips an 802.1Q tag before AF_PACKET sees the frame (the ring
//!   reports it in `tp_vlan_tci`; see [`FrameMeta`]).
//! - With `vnet_hdr` (PACKET_VNET_HDR), each frame comes after a 10-byte
//!   `struct virtio_net_hdr`: GSO super-frames up to 64 KB arrive whole, with their segment size,
//!   and partial checksums with their start and offset ([`FrameMeta::vnet`]).
//! - A frame cut short (by the ring, or by a receive buffer too small) is never handed on
//!   truncated: it is skipped and counted.
//!
//! # Fanout
//! With a fanout group, several sockets (one per worker) on the same interface share its
//! traffic. PACKET_FANOUT_HASH picks the socket from `__skb_get_hash_symmetric()` — the flow
//! dissector's hash with the addresses and ports sorted, so both directions of a flow land on
//! the same socket (symmetric since Linux 4.x; the `fanout_hash_is_symmetric` test checks the
//! running kernel). PACKET_FANOUT_FLAG_DEFRAG makes the kernel reassemble IPv4 fragments first,
//! so fragments follow their flow instead of hashing on addresses only.
//!
//! # TX
//! [`AfPacket::tx_batch`] hands up to 64 frames per `sendmmsg(2)` call, each after its
//! virtio-net header when `vnet_hdr` is on (the kernel takes GSO frames past the MTU check and
//! segments them in software if the device cannot); with `qdisc_bypass` the frames skip the
//! qdisc layer and go straight to the driver (no traffic shaping, no requeue: a full device
//! drops).

mod queue;
mod ring;
#[cfg(test)]
mod tests;

pub use queue::{AfPacketQueue, QueueStats, RxScratch, SocketOptions};
pub use ring::{AfPacket, RingConfig, RingStats};

use super::{IoError, ifindex};
pub use packet::offload::VNET_HDR_LEN;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Frames per sendmmsg call.
const TX_CHUNK: usize = 64;

/// The kernel's PACKET_STATISTICS for a socket; reading them resets them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames the kernel saw for this socket (including drops).
    pub packets: u32,
    /// Frames dropped because the ring (or receive buffer) was full.
    pub drops: u32,
    /// Times the ring froze with every block owned by user space.
    pub freeze_q_cnt: u32,
}

/// What the kernel knows about a received frame besides its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// Length on the wire (can exceed the slice if truncated).
    pub wire_len: u32,
    /// The stripped 802.1Q tag (TCI), if there was one.
    pub vlan_tci: Option<u16>,
    /// Its TPID (0x8100, or 0x88a8 for an 802.1ad tag; 0 when the kernel did not say).
    pub vlan_tpid: u16,
    /// The L4 checksum is partial (CHECKSUM_PARTIAL): offloads are on upstream.
    pub csum_partial: bool,
    /// `sll_pkttype`: PACKET_HOST, _BROADCAST, _MULTICAST, _OTHERHOST.
    pub pkttype: u8,
    /// The virtio-net header before the frame (all zero without `vnet_hdr`).
    pub vnet: [u8; VNET_HDR_LEN],
}

/// A plain AF_PACKET socket: one `recv`/`send` syscall per frame. The baseline that the ring is
/// measured against; also handy where a ring's memory is not worth it.
#[derive(Debug)]
pub struct AfPacketSimple {
    fd: OwnedFd,
    ifindex: u32,
}

impl AfPacketSimple {
    /// Opens a non-blocking AF_PACKET socket bound to `ifname` (caller's namespace), ETH_P_ALL,
    /// own transmissions ignored.
    pub fn open(ifname: &str) -> Result<AfPacketSimple, IoError> {
        let ifindex = ifindex(ifname)?;
        let fd = packet_socket(ifname)?;
        ignore_outgoing(&fd)
            .map_err(|e| IoError::sys(format!("setting PACKET_IGNORE_OUTGOING for {ifname}"), e))?;
        bind(&fd, ifindex).map_err(|e| IoError::sys(format!("binding to {ifname}"), e))?;
        Ok(AfPacketSimple { fd, ifindex })
    }

    /// The ifindex the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Receives one frame (truncated to `buf`); `WouldBlock` when none is queued. Our own
    /// transmissions are skipped.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` is writable for `buf.len()` bytes and `sll`/`len` describe a
            // writable sockaddr_ll; all live across the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut sll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if sll.sll_pkttype != libc::PACKET_OUTGOING {
                return Ok(n.unsigned_abs());
            }
        }
    }

    /// Sends one frame out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<usize> {
        // SAFETY: `frame` is readable for `frame.len()` bytes across the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n.unsigned_abs())
    }

    /// Sends frames with one `sendmmsg` per 64, like [`AfPacket::tx_batch`].
    pub fn send_batch(&self, frames: &[&[u8]]) -> std::io::Result<usize> {
        send_batch(&self.fd, frames, None)
    }

    /// The kernel's counters (frames seen, dropped for lack of buffer space); reading resets.
    pub fn kernel_stats(&self) -> std::io::Result<KernelStats> {
        kernel_stats(&self.fd)
    }
}

impl AsFd for AfPacketSimple {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for AfPacketSimple {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096)
}

/// A non-blocking AF_PACKET raw socket with protocol 0: it receives nothing until bound.
fn packet_socket(ifname: &str) -> Result<OwnedFd, IoError> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(IoError::sys(
            format!("creating an AF_PACKET socket for {ifname}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: &T,
) -> std::io::Result<()> {
    // SAFETY: `val` points at a live, initialised T and we pass its exact size; the kernel only
    // reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the interface `ifindex` promiscuous for as long as socket `fd` lives (`on`), or stops
/// this socket's hold on it: a PACKET_MR_PROMISC membership, which the kernel counts per device
/// and drops when the socket closes, so a daemon that dies leaves no NIC promiscuous. A NIC
/// delivers frames for other MACs (a macvlan network's containers') only so.
fn set_promiscuous(fd: &OwnedFd, ifindex: u32, on: bool) -> std::io::Result<()> {
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex as libc::c_int,
        mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    let opt = if on {
        libc::PACKET_ADD_MEMBERSHIP
    } else {
        libc::PACKET_DROP_MEMBERSHIP
    };
    setsockopt(fd, libc::SOL_PACKET, opt, &mreq)
}

/// PACKET_IGNORE_OUTGOING where the kernel has it (≥ 4.20); older kernels are covered by the
/// `sll_pkttype` check on receive.
fn ignore_outgoing(fd: &OwnedFd) -> std::io::Result<()> {
    match setsockopt(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        &1 as &libc::c_int,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(()),
        r => r,
    }
}

fn bind(fd: &OwnedFd, ifindex: u32) -> std::io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `sll` is a valid sockaddr_ll and we pass its exact size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Joins fanout group `group` (HASH | DEFRAG), with an error that names the interface.
fn join_fanout(fd: &OwnedFd, group: u16, ifname: &str) -> Result<(), IoError> {
    let mode = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;
    let arg: u32 = u32::from(group) | (mode << 16);
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg).map_err(|e| {
        IoError::sys(
            format!(
                "joining PACKET_FANOUT group {group} on AF_PACKET socket for {ifname} (all \
                 members must use HASH|DEFRAG)"
            ),
            e,
        )
    })
}

/// [`send_batch`] for a socket whose frames carry a virtio-net header iff `vnet_hdr`:
/// `InvalidInput` when `headers` does not match that (or the frames' count).
fn send_checked(
    fd: &OwnedFd,
    vnet_hdr: bool,
    frames: &[&[u8]],
    headers: Option<&[[u8; VNET_HDR_LEN]]>,
) -> std::io::Result<usize> {
    match headers {
        // Without a header the kernel would read each frame's first 10 bytes as one.
        None if vnet_hdr => Err(std::io::ErrorKind::InvalidInput.into()),
        Some(h) if !vnet_hdr || h.len() != frames.len() => {
            Err(std::io::ErrorKind::InvalidInput.into())
        }
        _ => send_batch(fd, frames, headers),
    }
}

fn kernel_stats(fd: &OwnedFd) -> std::io::Result<KernelStats> {
    // SAFETY: tpacket_stats_v3 is plain old data; all zeroes is valid.
    let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: `st`/`len` describe a writable buffer of the struct's size; the kernel writes at
    // most `len` bytes (tpacket_stats for a V1/V2 socket is a prefix of it).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut st).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(KernelStats {
        packets: st.tp_packets,
        drops: st.tp_drops,
        freeze_q_cnt: if len as usize >= std::mem::size_of::<libc::tpacket_stats_v3>() {
            st.tp_freeze_q_cnt
        } else {
            0
        },
    })
}

/// sendmmsg over `frames`, 64 at a time, on a bound AF_PACKET socket (no address needed: the
/// kernel sends out of the bound interface).
fn send_batch(
    fd: &OwnedFd,
    frames: &[&[u8]],
    headers: Option<&[[u8; VNET_HDR_LEN]]>,
) -> std::io::Result<usize> {
    let mut sent = 0;
    for (c, chunk) in frames.chunks(TX_CHUNK).enumerate() {
        // SAFETY: iovec and mmsghdr are plain old data (pointers and integers); all zeroes is
        // valid (null name, no control data).
        let mut iov: [[libc::iovec; 2]; TX_CHUNK] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; TX_CHUNK] = unsafe { std::mem::zeroed() };
        for (i, frame) in chunk.iter().enumerate() {
            // The kernel only reads through iov_base for a send; the *mut is the C type's.
            let parts = match headers.and_then(|h| h.get(c * TX_CHUNK + i)) {
                Some(h) => {
                    iov[i][0].iov_base = h.as_ptr().cast_mut().cast();
                    iov[i][0].iov_len = VNET_HDR_LEN;
                    iov[i][1].iov_base = frame.as_ptr().cast_mut().cast();
                    iov[i][1].iov_len = frame.len();
                    2
                }
                None => {
                    iov[i][0].iov_base = frame.as_ptr().cast_mut().cast();
                    iov[i][0].iov_len = frame.len();
                    1
                }
            };
            msgs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = parts;
        }
        // SAFETY: `msgs[..chunk.len()]` are initialised headers whose iovecs point into
        // `frames` and `headers`, all alive across the call; the kernel writes only `msg_len`
        // fields.
        let rc = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                0,
            )
        };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            return if sent == 0 { Err(err) } else { Ok(sent) };
        }
        let accepted = rc.unsigned_abs() as usize;
        sent += accepted;
        if accepted < chunk.len() {
            break;
        }
    }
    Ok(sent)
}
