//! An AF_PACKET socket without a ring: frames wait in the socket's receive queue and are read
//! in batches with `recvmmsg(2)`. No mapped memory, no block timer (see the module docs of
//! [`super`] for when that wins), and a wake-up per frame at low rates instead of a block
//! timeout.
//!
//! The frames are copied into an [`RxScratch`] that the caller owns, so one scratch per thread
//! serves every queue socket it reads: a port costs no user memory of its own. Each scratch
//! slot holds the largest frame (a 64 KiB GSO super-frame, its header and tags) after its
//! virtio-net header; the kernel writes only what arrives, so untouched slots stay unbacked.

use super::{
    FrameMeta, KernelStats, VNET_HDR_LEN, bind, ignore_outgoing, join_fanout, kernel_stats,
    packet_socket, send_checked, setsockopt,
};
use crate::io::{IoError, ifindex};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// One scratch slot: the virtio-net header and the largest frame (64 KiB IP packet, Ethernet
/// header and two tags). A longer frame is reported truncated (MSG_TRUNC) and skipped.
const SLOT: usize = VNET_HDR_LEN + 65_535 + 22;

/// How an [`AfPacketQueue`] is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// Join this PACKET_FANOUT group (per namespace), hashing flows symmetrically.
    pub fanout_group: Option<u16>,
    /// Send with PACKET_QDISC_BYPASS.
    pub qdisc_bypass: bool,
    /// PACKET_VNET_HDR: a virtio-net header before every frame, both ways.
    pub vnet_hdr: bool,
    /// The receive queue's limit in bytes (SO_RCVBUFFORCE, so past `net.core.rmem_max`; the
    /// kernel doubles it for its bookkeeping). Memory is used only while frames wait. `None`
    /// keeps the kernel's default (`net.core.rmem_default`, ~208 KiB: three super-frames).
    pub rcvbuf: Option<usize>,
}

/// Software counters of one queue socket, since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames handed to the callback.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames we sent ourselves (skipped; PACKET_IGNORE_OUTGOING missing).
    pub outgoing_skipped: u64,
    /// Frames longer than a scratch slot, or without a whole virtio-net header (skipped).
    pub truncated: u64,
    /// `recvmmsg` calls that returned frames.
    pub batches: u64,
}

/// Where [`AfPacketQueue::rx_batch_meta`] copies frames: `slots` frames per call at most. One
/// per reading thread, shared by all the sockets it reads.
pub struct RxScratch {
    buf: Vec<u8>,
    slots: usize,
}

impl RxScratch {
    /// Room for `slots` frames per batch (at least 1). The memory is reserved, not touched:
    /// it becomes resident only as far as the largest frames received reach into each slot.
    pub fn new(slots: usize) -> RxScratch {
        let slots = slots.max(1);
        RxScratch {
            // Zeroed allocations this large come straight from mmap: no page is touched here.
            buf: vec![0; slots * SLOT],
            slots,
        }
    }
}

/// An AF_PACKET socket bound to one interface, read from its receive queue. Owned by one thread
/// at a time.
#[derive(Debug)]
pub struct AfPacketQueue {
    fd: OwnedFd,
    ifindex: u32,
    vnet_hdr: bool,
    stats: QueueStats,
}

impl AfPacketQueue {
    /// Opens an AF_PACKET socket bound to `ifname` in the caller's current namespace: ETH_P_ALL,
    /// own transmissions ignored, non-blocking, with the options of `opts`.
    ///
    /// # Errors
    /// A bad name, no such interface, EPERM without CAP_NET_RAW (CAP_NET_ADMIN for `rcvbuf`),
    /// EINVAL when a fanout group exists with other settings.
    pub fn open(ifname: &str, opts: &SocketOptions) -> Result<AfPacketQueue, IoError> {
        let ifindex = ifindex(ifname)?;
        let fd = packet_socket(ifname)?;
        let ctx = |what: &str| format!("{what} on AF_PACKET socket for {ifname}");
        ignore_outgoing(&fd).map_err(|e| IoError::sys(ctx("setting PACKET_IGNORE_OUTGOING"), e))?;
        let on: libc::c_int = 1;
        if opts.vnet_hdr {
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &on)
                .map_err(|e| IoError::sys(ctx("setting PACKET_VNET_HDR"), e))?;
        }
        if opts.qdisc_bypass {
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &on)
                .map_err(|e| IoError::sys(ctx("setting PACKET_QDISC_BYPASS"), e))?;
        }
        if let Some(bytes) = opts.rcvbuf {
            let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes)
                .map_err(|e| IoError::sys(ctx("setting SO_RCVBUFFORCE"), e))?;
        }
        // Bind last: the socket was created with protocol 0 and receives nothing until now, so
        // the queue never holds frames from other interfaces.
        bind(&fd, ifindex).map_err(|e| IoError::sys(ctx("binding"), e))?;
        if let Some(group) = opts.fanout_group {
            join_fanout(&fd, group, ifname)?;
        }
        Ok(AfPacketQueue {
            fd,
            ifindex,
            vnet_hdr: opts.vnet_hdr,
            stats: QueueStats::default(),
        })
    }

    /// The ifindex the socket is bound to (in the namespace it was opened in).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Holds the interface in promiscuous mode while the socket lives (`on`), or lets it go
    /// (call each once: the kernel counts the holds).
    ///
    /// # Errors
    /// EPERM without CAP_NET_RAW.
    pub fn set_promiscuous(&self, on: bool) -> std::io::Result<()> {
        super::set_promiscuous(&self.fd, self.ifindex, on)
    }

    /// Software counters since open.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// The kernel's counters (frames seen, dropped for a full receive queue); reading resets.
    pub fn kernel_stats(&self) -> std::io::Result<KernelStats> {
        kernel_stats(&self.fd)
    }

    /// Whether frames carry a virtio-net header on this socket.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Reads the queued frames, at most `max` (and at most the scratch's slots), calling `f`
    /// for each with its metadata (`pkttype`, `wire_len` and, with `vnet_hdr`, the virtio-net
    /// header; no VLAN tag: see the module docs of [`super`]). Returns how many frames it read
    /// from the socket, skipped ones included, so that 0 means the queue is empty. Never
    /// blocks: wait for POLLIN on [`AsFd`] when it returns 0.
    pub fn rx_batch_meta(
        &mut self,
        max: usize,
        scratch: &mut RxScratch,
        mut f: impl FnMut(&[u8], FrameMeta),
    ) -> usize {
        const MAX_BATCH: usize = 64;
        let want = max.min(scratch.slots).min(MAX_BATCH);
        if want == 0 {
            return 0;
        }
        // SAFETY: iovec, mmsghdr and sockaddr_ll are plain old data (pointers and integers);
        // all zeroes is valid for each.
        let mut iov: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut names: [libc::sockaddr_ll; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let base = scratch.buf.as_mut_ptr();
        for i in 0..want {
            // SAFETY: i < slots, so [i * SLOT, (i + 1) * SLOT) lies within `scratch.buf`.
            iov[i].iov_base = unsafe { base.add(i * SLOT) }.cast();
            iov[i].iov_len = SLOT;
            msgs[i].msg_hdr.msg_iov = &raw mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = (&raw mut names[i]).cast();
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        }
        // SAFETY: `msgs[..want]` are initialised headers whose iovecs point at disjoint,
        // writable slots of `scratch.buf` and whose names point at writable sockaddr_ll, all
        // alive across the call; the kernel writes within those and the msg_len/msg_flags
        // fields. MSG_DONTWAIT: never blocks; no timeout pointer.
        let rc = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let Ok(got) = usize::try_from(rc) else {
            return 0; // EAGAIN (empty), or an error the next readiness will show again.
        };
        self.stats.batches += u64::from(got > 0);
        for (i, msg) in msgs.iter().enumerate().take(got) {
            let len = (msg.msg_len as usize).min(SLOT);
            let truncated = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            if names[i].sll_pkttype == libc::PACKET_OUTGOING {
                self.stats.outgoing_skipped += 1;
                continue;
            }
            let slot = &scratch.buf[i * SLOT..i * SLOT + len];
            let (vnet, frame) = if self.vnet_hdr {
                match slot.split_first_chunk::<VNET_HDR_LEN>() {
                    Some((h, frame)) => (*h, frame),
                    None => {
                        self.stats.truncated += 1;
                        continue;
                    }
                }
            } else {
                ([0; VNET_HDR_LEN], slot)
            };
            if truncated {
                self.stats.truncated += 1;
                continue;
            }
            self.stats.frames += 1;
            self.stats.bytes += frame.len() as u64;
            let meta = FrameMeta {
                wire_len: frame.len() as u32,
                vlan_tci: None,
                vlan_tpid: 0,
                // VIRTIO_NET_HDR_F_NEEDS_CSUM; without the header the queue cannot tell.
                csum_partial: vnet[0] & 1 != 0,
                pkttype: names[i].sll_pkttype,
                vnet,
            };
            f(frame, meta);
        }
        got
    }

    /// Sends `frames` out of the bound interface, as [`super::AfPacket::tx_batch`].
    pub fn tx_batch(&mut self, frames: &[&[u8]]) -> std::io::Result<usize> {
        send_checked(&self.fd, self.vnet_hdr, frames, None)
    }

    /// Sends each frame after its virtio-net header, as [`super::AfPacket::tx_batch_vnet`].
    pub fn tx_batch_vnet(
        &mut self,
        frames: &[&[u8]],
        headers: &[[u8; VNET_HDR_LEN]],
    ) -> std::io::Result<usize> {
        send_checked(&self.fd, self.vnet_hdr, frames, Some(headers))
    }
}

impl AsFd for AfPacketQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for AfPacketQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
