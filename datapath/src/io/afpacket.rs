//! AF_PACKET ports: a raw socket bound to one interface, with a TPACKET_V3 mmap RX ring
//! ([`AfPacket`]) or plain per-packet syscalls ([`AfPacketSimple`], the baseline the bench
//! compares the ring with).
//!
//! # The RX ring (TPACKET_V3)
//! The kernel and we share `block_count` blocks of `block_size` bytes. Each block starts with a
//! `tpacket_block_desc`; its `block_status` says who owns it. The kernel fills a block with
//! variable-sized frames (`tpacket3_hdr` + `sockaddr_ll` + frame, chained by `tp_next_offset`),
//! then "retires" it — when full, or `block_timeout_ms` after its first frame — by setting
//! TP_STATUS_USER. We read its frames in place and hand it back by storing TP_STATUS_KERNEL.
//! Blocks are used strictly in order, so one cursor (current block, frames left, offset)
//! is all the state; it survives across [`AfPacket::rx_batch`] calls that stop mid-block.
//!
//! Invariants:
//! - We touch a block's frames only between seeing TP_STATUS_USER (Acquire) and storing
//!   TP_STATUS_KERNEL (Release); the kernel does not write a block it has handed us.
//! - Offsets from the kernel are bounds-checked against the block before any slice is made, so
//!   a corrupt descriptor drops that block's remaining frames instead of reading out of bounds.
//! - The mapping is unmapped in `Drop` before the fd closes; the struct is `Send` but not `Sync`
//!   (one owner polls the ring).
//!
//! # What the ring sees
//! - Not our own transmissions: PACKET_IGNORE_OUTGOING (Linux ≥ 4.20) drops them in the kernel,
//!   and frames with `sll_pkttype == PACKET_OUTGOING` are skipped too, for older kernels.
//! - VLAN tags: the kernel strips an 802.1Q tag before AF_PACKET sees the frame, leaving the
//!   tag in `tp_vlan_tci` (TP_STATUS_VLAN_VALID); [`AfPacket::rx_batch_meta`] reports it.
//! - With `vnet_hdr` (PACKET_VNET_HDR, set before the ring is mapped), each frame is preceded
//!   in the ring by a 10-byte `struct virtio_net_hdr` (just before the MAC header): GSO
//!   super-frames up to 64 KB arrive whole, with their segment size, and partial checksums
//!   with their start and offset ([`FrameMeta::vnet`]). Blocks must hold the largest frame.
//! - A frame the ring clamped (`tp_snaplen < tp_len`, or TP_STATUS_COPY) is never handed on
//!   truncated: it is skipped and counted in [`RingStats::truncated`].
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

use super::{IoError, ifindex};
pub use packet::offload::VNET_HDR_LEN;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

const TPACKET_V3: libc::c_int = 2;
/// Frames per sendmmsg call.
const TX_CHUNK: usize = 64;
/// Offsets inside `tpacket_block_desc` (linux/if_packet.h): version, offset_to_priv, then
/// `tpacket_hdr_v1` { block_status, num_pkts, offset_to_first_pkt, blk_len, ... }.
const BLOCK_STATUS_OFF: usize = 8;
const BLOCK_NUM_PKTS_OFF: usize = 12;
const BLOCK_FIRST_PKT_OFF: usize = 16;
/// Where the `sockaddr_ll` sits after each `tpacket3_hdr`.
const SLL_OFF: usize = std::mem::size_of::<libc::tpacket3_hdr>().next_multiple_of(16);

/// Geometry and options of an [`AfPacket`] ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block; a multiple of the page size (e.g. 1 << 20).
    pub block_size: u32,
    /// Blocks in the ring (e.g. 8). Ring memory = `block_size * block_count`.
    pub block_count: u32,
    /// Nominal frame slot (e.g. 2048); a multiple of 16. TPACKET_V3 packs frames tightly, so
    /// this only sets the kernel's frame count, not a per-frame size limit.
    pub frame_size: u32,
    /// How long a partly filled block waits before the kernel hands it over (e.g. 1 ms): the
    /// latency bound at low rates.
    pub block_timeout_ms: u32,
    /// Join this PACKET_FANOUT group (per namespace), hashing flows symmetrically.
    pub fanout_group: Option<u16>,
    /// Send with PACKET_QDISC_BYPASS.
    pub qdisc_bypass: bool,
    /// PACKET_VNET_HDR: a virtio-net header before every frame, both ways.
    pub vnet_hdr: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            block_size: 1 << 20,
            block_count: 8,
            frame_size: 2048,
            block_timeout_ms: 1,
            fanout_group: None,
            qdisc_bypass: false,
            vnet_hdr: false,
        }
    }
}

impl RingConfig {
    fn validate(&self) -> Result<(), IoError> {
        let page = page_size();
        let bad = |why: String| Err(IoError::BadRingConfig(why));
        if self.block_size == 0 || !(self.block_size as usize).is_multiple_of(page) {
            return bad(format!(
                "block_size {} must be a non-zero multiple of the page size ({page})",
                self.block_size
            ));
        }
        if self.block_count == 0 {
            return bad("block_count must be at least 1".into());
        }
        if self.frame_size < 64
            || !self.frame_size.is_multiple_of(16)
            || self.frame_size > self.block_size
        {
            return bad(format!(
                "frame_size {} must be a multiple of 16, at least 64 and at most block_size",
                self.frame_size
            ));
        }
        if (self.block_size as u64) * (self.block_count as u64) > (1 << 32) {
            return bad("block_size * block_count must stay under 4 GiB".into());
        }
        Ok(())
    }
}

/// Software counters of one ring, since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Frames handed to the callback.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames the ring held that we sent ourselves (skipped; PACKET_IGNORE_OUTGOING missing).
    pub outgoing_skipped: u64,
    /// Frames with a partial checksum (TP_STATUS_CSUMNOTREADY): offloads are on upstream.
    pub csum_partial: u64,
    /// Frames cut short by the ring (TP_STATUS_COPY or snaplen < len).
    pub truncated: u64,
    /// Frames whose VLAN tag the kernel stripped (TP_STATUS_VLAN_VALID).
    pub vlan_stripped: u64,
    /// Blocks returned to the kernel.
    pub blocks: u64,
    /// Blocks abandoned because a descriptor pointed outside the block (should stay 0).
    pub corrupt_blocks: u64,
}

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
    /// The L4 checksum is partial (CHECKSUM_PARTIAL): offloads are on upstream.
    pub csum_partial: bool,
    /// `sll_pkttype`: PACKET_HOST, _BROADCAST, _MULTICAST, _OTHERHOST.
    pub pkttype: u8,
    /// The virtio-net header before the frame (all zero without `vnet_hdr`).
    pub vnet: [u8; VNET_HDR_LEN],
}

/// An AF_PACKET socket bound to one interface, with a TPACKET_V3 RX ring. Owned by one thread
/// at a time (`Send`, not `Sync`).
#[derive(Debug)]
pub struct AfPacket {
    fd: OwnedFd,
    ring: NonNull<u8>,
    ring_len: usize,
    block_size: usize,
    block_count: usize,
    ifindex: u32,
    /// Cursor: the block we read next, and inside it (when `in_block`) frames left and the
    /// offset of the next one.
    block: usize,
    in_block: bool,
    pkts_left: u32,
    pkt_off: usize,
    stats: RingStats,
    vnet_hdr: bool,
}

// SAFETY: the raw pointer is to a MAP_SHARED mapping owned by this struct alone (unmapped in
// Drop); nothing about it is tied to the thread that created it. Reads need `&mut self`, so
// moving the struct to a worker thread cannot create concurrent access.
unsafe impl Send for AfPacket {}

impl AfPacket {
    /// Opens an AF_PACKET socket bound to `ifname` in the caller's current namespace (use
    /// [`crate::io::in_netns`] to open one inside a container; it keeps working after): ETH_P_ALL,
    /// TPACKET_V3 RX ring, own transmissions ignored, non-blocking, PACKET_QDISC_BYPASS and
    /// PACKET_FANOUT (HASH | DEFRAG) when configured.
    ///
    /// # Errors
    /// A bad config or name, no such interface, EPERM without CAP_NET_RAW, ENOMEM when the ring
    /// cannot be allocated, EINVAL when a fanout group exists with other settings.
    pub fn open(ifname: &str, cfg: &RingConfig) -> Result<AfPacket, IoError> {
        cfg.validate()?;
        let ifindex = ifindex(ifname)?;
        let fd = packet_socket(ifname)?;
        let ctx = |what: &str| format!("{what} on AF_PACKET socket for {ifname}");

        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3)
            .map_err(|e| IoError::sys(ctx("selecting TPACKET_V3"), e))?;
        ignore_outgoing(&fd).map_err(|e| IoError::sys(ctx("setting PACKET_IGNORE_OUTGOING"), e))?;
        if cfg.vnet_hdr {
            // Before PACKET_RX_RING: the kernel refuses it (EBUSY) once a ring exists.
            setsockopt(
                &fd,
                libc::SOL_PACKET,
                libc::PACKET_VNET_HDR,
                &1 as &libc::c_int,
            )
            .map_err(|e| IoError::sys(ctx("setting PACKET_VNET_HDR"), e))?;
        }
        if cfg.qdisc_bypass {
            setsockopt(
                &fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &1 as &libc::c_int,
            )
            .map_err(|e| IoError::sys(ctx("setting PACKET_QDISC_BYPASS"), e))?;
        }
        let req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: cfg.frame_size,
            tp_frame_nr: (cfg.block_size / cfg.frame_size) * cfg.block_count,
            tp_retire_blk_tov: cfg.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(|e| IoError::sys(ctx("allocating the RX ring (PACKET_RX_RING)"), e))?;

        let ring_len = cfg.block_size as usize * cfg.block_count as usize;
        let ring = map_ring(&fd, ring_len)
            .map_err(|e| IoError::sys(ctx("mapping the RX ring (mmap)"), e))?;
        // From here on `sock` owns the mapping: an early return unmaps it.
        let mut sock = AfPacket {
            fd,
            ring,
            ring_len,
            block_size: cfg.block_size as usize,
            block_count: cfg.block_count as usize,
            ifindex,
            block: 0,
            in_block: false,
            pkts_left: 0,
            pkt_off: 0,
            stats: RingStats::default(),
            vnet_hdr: cfg.vnet_hdr,
        };
        // Bind last: the socket was created with protocol 0 and receives nothing until now, so
        // the ring never holds frames from other interfaces.
        bind(&sock.fd, ifindex).map_err(|e| IoError::sys(ctx("binding"), e))?;
        if let Some(group) = cfg.fanout_group {
            join_fanout(&sock.fd, group).map_err(|e| {
                IoError::sys(
                    ctx(&format!(
                        "joining PACKET_FANOUT group {group} (all members must use HASH|DEFRAG)"
                    )),
                    e,
                )
            })?;
        }
        sock.stats = RingStats::default();
        Ok(sock)
    }

    /// The ifindex the socket is bound to (in the namespace it was opened in).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Software counters since open.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// The kernel's counters (frames seen, dropped for lack of ring space); reading resets them.
    pub fn kernel_stats(&self) -> std::io::Result<KernelStats> {
        kernel_stats(&self.fd)
    }

    /// Walks ready RX blocks, calling `f(frame)` for each frame and returning each block to the
    /// kernel once all its frames are read; at most `max` frames. Returns the count. Never
    /// blocks: wait for POLLIN on [`AsFd`] when it returns 0.
    pub fn rx_batch(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        self.rx_batch_meta(max, |frame, _| f(frame))
    }

    /// [`AfPacket::rx_batch`] with the kernel's per-frame metadata (VLAN tag, checksum state).
    pub fn rx_batch_meta(&mut self, max: usize, mut f: impl FnMut(&[u8], FrameMeta)) -> usize {
        let mut n = 0;
        while n < max {
            let block = self.block_ptr(self.block);
            if !self.in_block {
                if self.block_status(block).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                    break;
                }
                // SAFETY: the block is ours (TP_STATUS_USER seen with Acquire above) and the
                // descriptor's u32 fields lie within the block's first 20 bytes (4-aligned).
                let (num, first) = unsafe {
                    (
                        block.add(BLOCK_NUM_PKTS_OFF).cast::<u32>().read(),
                        block.add(BLOCK_FIRST_PKT_OFF).cast::<u32>().read(),
                    )
                };
                self.in_block = true;
                self.pkts_left = num;
                self.pkt_off = first as usize;
            }
            while self.pkts_left > 0 && n < max {
                let Some((start, len, meta, next)) = self.frame_at(block, self.pkt_off) else {
                    self.stats.corrupt_blocks += 1;
                    self.pkts_left = 0;
                    break;
                };
                self.pkts_left -= 1;
                self.pkt_off += next;
                if meta.pkttype == libc::PACKET_OUTGOING {
                    self.stats.outgoing_skipped += 1;
                    continue;
                }
                if meta.wire_len as usize != len {
                    // Clamped by the ring: forwarding the rest would corrupt the flow.
                    self.stats.truncated += 1;
                    continue;
                }
                // SAFETY: frame_at checked that [start, start + len) lies within this block,
                // which is ours until the Release store below; the slice is dropped before that
                // (it does not escape `f`'s call).
                let frame = unsafe { std::slice::from_raw_parts(block.add(start), len) };
                self.stats.frames += 1;
                self.stats.bytes += frame.len() as u64;
                self.stats.csum_partial += u64::from(meta.csum_partial);
                self.stats.vlan_stripped += u64::from(meta.vlan_tci.is_some());
                n += 1;
                f(frame, meta);
            }
            if self.pkts_left == 0 {
                // Hand the block back; Release orders our reads of it before the kernel's
                // next writes.
                self.block_status(block)
                    .store(libc::TP_STATUS_KERNEL, Ordering::Release);
                self.stats.blocks += 1;
                self.in_block = false;
                self.block = (self.block + 1) % self.block_count;
            }
        }
        n
    }

    /// Sends `frames` (whole Ethernet frames) out of the bound interface, up to 64 per
    /// `sendmmsg` call; returns how many the kernel accepted. Stops at the first refusal:
    /// `Ok(k < frames.len())` after a partial send, `Err` (e.g. `WouldBlock`, ENOBUFS when the
    /// device queue is full) only when the first frame was refused.
    pub fn tx_batch(&mut self, frames: &[&[u8]]) -> std::io::Result<usize> {
        if self.vnet_hdr {
            // The kernel would read each frame's first 10 bytes as its virtio-net header.
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        send_batch(&self.fd, frames, None)
    }

    /// [`AfPacket::tx_batch`] for a socket opened with `vnet_hdr`: each frame goes after its
    /// virtio-net header (`headers[i]` for `frames[i]`).
    ///
    /// # Errors
    /// As [`AfPacket::tx_batch`]; `InvalidInput` if the socket has no `vnet_hdr` or the two
    /// slices differ in length.
    pub fn tx_batch_vnet(
        &mut self,
        frames: &[&[u8]],
        headers: &[[u8; VNET_HDR_LEN]],
    ) -> std::io::Result<usize> {
        if !self.vnet_hdr || frames.len() != headers.len() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        send_batch(&self.fd, frames, Some(headers))
    }

    /// Whether frames carry a virtio-net header on this socket.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    fn block_ptr(&self, index: usize) -> *mut u8 {
        // SAFETY: index < block_count, so the offset stays within the ring_len-byte mapping.
        unsafe { self.ring.as_ptr().add(index * self.block_size) }
    }

    fn block_status(&self, block: *mut u8) -> &AtomicU32 {
        // SAFETY: `block` points at a block of our live mapping; block_status is a 4-aligned u32
        // at offset 8 that the kernel also accesses atomically-by-convention; the reference
        // does not outlive `&self`, which keeps the mapping alive.
        unsafe { AtomicU32::from_ptr(block.add(BLOCK_STATUS_OFF).cast()) }
    }

    /// The frame whose `tpacket3_hdr` is at `off` in `block`: its start offset in the block,
    /// length, metadata, and the offset to the next header; `None` if the kernel's offsets fall
    /// outside the block.
    fn frame_at(&self, block: *mut u8, off: usize) -> Option<(usize, usize, FrameMeta, usize)> {
        let hdr_end = off.checked_add(SLL_OFF + std::mem::size_of::<libc::sockaddr_ll>())?;
        if hdr_end > self.block_size || !off.is_multiple_of(4) {
            return None;
        }
        // SAFETY: `off` + the header and sockaddr_ll lie within the block (checked above), the
        // block is ours (we hold it between the Acquire load and the Release store), and the
        // header is 4-aligned (kernel aligns to 16; checked); read_unaligned copes regardless.
        let (hdr, sll) = unsafe {
            (
                block.add(off).cast::<libc::tpacket3_hdr>().read_unaligned(),
                block
                    .add(off + SLL_OFF)
                    .cast::<libc::sockaddr_ll>()
                    .read_unaligned(),
            )
        };
        let start = off.checked_add(hdr.tp_mac as usize)?;
        let end = start.checked_add(hdr.tp_snaplen as usize)?;
        if end > self.block_size {
            return None;
        }
        let mut vnet = [0u8; VNET_HDR_LEN];
        if self.vnet_hdr {
            // The kernel writes the header right before the MAC header (tpacket_rcv).
            let at = start.checked_sub(VNET_HDR_LEN).filter(|&a| a >= hdr_end)?;
            // SAFETY: [at, at + 10) lies within the block (at >= hdr_end > off, start <= end <=
            // block_size) and the block is ours, as for the header reads above.
            unsafe {
                std::ptr::copy_nonoverlapping(block.add(at), vnet.as_mut_ptr(), VNET_HDR_LEN);
            }
        }
        // A zero next-offset ends the chain; only the block's last frame may have it.
        let next = if hdr.tp_next_offset == 0 && self.pkts_left > 1 {
            return None;
        } else {
            hdr.tp_next_offset as usize
        };
        let mut truncated_len = hdr.tp_len;
        if hdr.tp_status & libc::TP_STATUS_COPY != 0 {
            truncated_len = truncated_len.max(hdr.tp_snaplen + 1);
        }
        let meta = FrameMeta {
            wire_len: truncated_len,
            vlan_tci: (hdr.tp_status & libc::TP_STATUS_VLAN_VALID != 0)
                .then_some(hdr.hv1.tp_vlan_tci as u16),
            csum_partial: hdr.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0,
            pkttype: sll.sll_pkttype,
            vnet,
        };
        Some((start, end - start, meta, next))
    }
}

impl Drop for AfPacket {
    fn drop(&mut self) {
        // SAFETY: `ring`/`ring_len` are exactly the mapping made in `open`, unmapped once here;
        // no slice into it can outlive `&mut self`. The fd closes after (field drop).
        let _ = unsafe { nix::sys::mman::munmap(self.ring.cast(), self.ring_len) };
    }
}

impl AsFd for AfPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for AfPacket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
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

fn join_fanout(fd: &OwnedFd, group: u16) -> std::io::Result<()> {
    let mode = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;
    let arg: u32 = u32::from(group) | (mode << 16);
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
}

fn map_ring(fd: &OwnedFd, len: usize) -> std::io::Result<NonNull<u8>> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap};
    let len = std::num::NonZeroUsize::new(len).ok_or(std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a fresh shared mapping of the socket's ring at offset 0, of the exact size the
    // kernel allocated (block_size * block_count); it aliases no Rust object. MAP_POPULATE
    // pre-faults it so the first packets do not pay for page faults.
    let ptr = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED | MapFlags::MAP_POPULATE,
            fd,
            0,
        )
    }?;
    Ok(ptr.cast())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::in_netns;
    use crate::io::testutil::{VethPair, link_stat, skip_unless_root};
    use std::time::{Duration, Instant};

    const ETHERTYPE_TEST: [u8; 2] = [0x88, 0xb5]; // IEEE local experimental

    /// A test frame: broadcast, ethertype 0x88b5, `seq` in the first payload bytes, `len` long.
    fn test_frame(seq: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(18)];
        f[0..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        f[12..14].copy_from_slice(&ETHERTYPE_TEST);
        f[14..18].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in f[18..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
        f
    }

    fn small_ring() -> RingConfig {
        RingConfig {
            block_size: 1 << 16,
            block_count: 4,
            ..RingConfig::default()
        }
    }

    /// Reads test frames from `ring` until `want` arrive or 3 s pass.
    fn collect(ring: &mut AfPacket, want: usize, max_per_call: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while got.len() < want && Instant::now() < deadline {
            let n = ring.rx_batch(max_per_call, |f| {
                if f.len() >= 14 && f[12..14] == ETHERTYPE_TEST {
                    got.push(f.to_vec());
                }
            });
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        got
    }

    #[test]
    fn ring_receives_what_the_peer_sends() {
        if skip_unless_root("ring_receives_what_the_peer_sends") {
            return;
        }
        let pair = VethPair::new(1500);
        let mut rx = in_netns(pair.a.path(), || AfPacket::open(&pair.a_if, &small_ring()))
            .unwrap()
            .unwrap();
        let mut tx = in_netns(pair.b.path(), || {
            AfPacket::open(
                &pair.b_if,
                &RingConfig {
                    qdisc_bypass: true,
                    ..small_ring()
                },
            )
        })
        .unwrap()
        .unwrap();

        // Sizes from minimum to MTU; 300 frames span several 64 KiB blocks.
        let sizes = [60usize, 64, 100, 1000, 1514];
        let frames: Vec<Vec<u8>> = (0..300u32)
            .map(|i| test_frame(i, sizes[i as usize % sizes.len()]))
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let before = link_stat(&pair.a, &pair.a_if, "rx", "packets");
        let mut sent = 0;
        while sent < refs.len() {
            match tx.tx_batch(&refs[sent..]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => panic!("tx_batch: {e}"),
            }
        }
        // Small `max` exercises stopping and resuming in the middle of a block.
        let got = collect(&mut rx, frames.len(), 7);
        assert_eq!(got.len(), frames.len(), "all frames arrive, in order");
        assert_eq!(got, frames, "bytes and lengths intact");
        let after = link_stat(&pair.a, &pair.a_if, "rx", "packets");
        assert!(after - before >= frames.len() as u64, "{before} -> {after}");
        let st = rx.stats();
        assert_eq!(st.csum_partial, 0);
        assert_eq!(st.truncated, 0);
        assert_eq!(st.corrupt_blocks, 0);
        assert!(st.blocks >= 1, "{st:?}");

        // The sender's ring does not see its own transmissions.
        let own = collect(&mut tx, 1, 64);
        assert!(own.is_empty(), "tx ring saw {} own frames", own.len());
    }

    #[test]
    fn simple_socket_round_trip_and_ignores_own() {
        if skip_unless_root("simple_socket_round_trip_and_ignores_own") {
            return;
        }
        let pair = VethPair::new(1500);
        let a = in_netns(pair.a.path(), || AfPacketSimple::open(&pair.a_if))
            .unwrap()
            .unwrap();
        let b = in_netns(pair.b.path(), || AfPacketSimple::open(&pair.b_if))
            .unwrap()
            .unwrap();
        let frame = test_frame(7, 64);
        assert_eq!(b.send(&frame).unwrap(), 64);
        assert_eq!(b.send_batch(&[&frame, &frame]).unwrap(), 2);
        let mut buf = [0u8; 2048];
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while got < 3 && Instant::now() < deadline {
            match a.recv(&mut buf) {
                Ok(n) if buf[12..14] == ETHERTYPE_TEST => {
                    assert_eq!(&buf[..n], &frame[..]);
                    got += 1;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert_eq!(got, 3);
        // b sent, but must not read its own frames back.
        loop {
            match b.recv(&mut buf) {
                Ok(_) => assert_ne!(buf[12..14], ETHERTYPE_TEST, "own frame seen"),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
    }

    #[test]
    fn bad_ring_configs_are_refused() {
        let bad = [
            RingConfig {
                block_size: 1000,
                ..RingConfig::default()
            },
            RingConfig {
                block_count: 0,
                ..RingConfig::default()
            },
            RingConfig {
                frame_size: 100,
                ..RingConfig::default()
            },
        ];
        for cfg in bad {
            let err = AfPacket::open("lo", &cfg).unwrap_err();
            assert!(matches!(err, IoError::BadRingConfig(_)), "{err}");
        }
        let err = AfPacket::open("vsnosuchif0", &RingConfig::default()).unwrap_err();
        assert!(matches!(err, IoError::NoSuchInterface { .. }), "{err}");
    }

    /// An Ethernet + IPv4 + UDP frame (checksums zero: the flow dissector does not check them).
    fn udp_frame(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 18];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&46u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src.0);
        ip[16..20].copy_from_slice(&dst.0);
        let udp = &mut f[34..42];
        udp[0..2].copy_from_slice(&src.1.to_be_bytes());
        udp[2..4].copy_from_slice(&dst.1.to_be_bytes());
        udp[4..6].copy_from_slice(&26u16.to_be_bytes());
        f
    }

    /// The direction-free flow key of a frame built by `udp_frame`.
    fn flow_key(f: &[u8]) -> Option<[u8; 12]> {
        if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
            return None;
        }
        let a: [u8; 6] = f[26..30]
            .iter()
            .chain(&f[34..36])
            .copied()
            .collect::<Vec<_>>()
            .try_into()
            .ok()?;
        let b: [u8; 6] = f[30..34]
            .iter()
            .chain(&f[36..38])
            .copied()
            .collect::<Vec<_>>()
            .try_into()
            .ok()?;
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut k = [0u8; 12];
        k[..6].copy_from_slice(&lo);
        k[6..].copy_from_slice(&hi);
        Some(k)
    }

    #[test]
    fn fanout_hash_is_symmetric() {
        if skip_unless_root("fanout_hash_is_symmetric") {
            return;
        }
        let pair = VethPair::new(1500);
        let cfg = RingConfig {
            fanout_group: Some(0x5a5a),
            ..small_ring()
        };
        let mut rings = in_netns(pair.a.path(), || {
            (0..2)
                .map(|_| AfPacket::open(&pair.a_if, &cfg))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap()
        .unwrap();
        // A member with different fanout settings is refused with a clear error.
        let ifindex = rings[0].ifindex();
        let other = in_netns(pair.a.path(), || {
            let fd = packet_socket(&pair.a_if).unwrap();
            bind(&fd, ifindex).unwrap();
            let arg: u32 = 0x5a5a | (libc::PACKET_FANOUT_LB << 16);
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
        })
        .unwrap();
        assert!(other.is_err(), "joining with another mode must fail");

        let tx = in_netns(pair.b.path(), || AfPacketSimple::open(&pair.b_if))
            .unwrap()
            .unwrap();
        // 32 flows, each sent in both directions.
        let mut frames = Vec::new();
        for i in 0..32u8 {
            let c = ([192, 0, 2, 10 + i], 40000 + u16::from(i));
            let s = ([198, 51, 100, 1], 53);
            frames.push(udp_frame(c, s));
            frames.push(udp_frame(s, c));
        }
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        assert_eq!(tx.send_batch(&refs).unwrap(), refs.len());

        let mut owner: std::collections::HashMap<[u8; 12], usize> = Default::default();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while seen < frames.len() && Instant::now() < deadline {
            for (i, ring) in rings.iter_mut().enumerate() {
                ring.rx_batch(64, |f| {
                    if let Some(k) = flow_key(f) {
                        seen += 1;
                        let first = *owner.entry(k).or_insert(i);
                        assert_eq!(first, i, "both directions of a flow go to one socket");
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(seen, frames.len());
        assert_eq!(owner.len(), 32);
        let on_first = owner.values().filter(|&&i| i == 0).count();
        assert!(
            on_first > 0 && on_first < 32,
            "flows spread over both sockets ({on_first}/32 on the first)"
        );
    }

    /// Thread CPU time, for receiver cost per frame.
    fn thread_cpu() -> Duration {
        // SAFETY: timespec is plain old data; all zeroes is valid.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: `ts` is a valid, writable timespec for the call.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    struct RunResult {
        sent: usize,
        received: usize,
        wall: Duration,
        rx_cpu: Duration,
        kernel_drops: u32,
    }

    /// Injects `count` 64-byte frames from the b end (sendmmsg, qdisc bypass off: veth has no
    /// qdisc queue anyway) while this thread spins on the receiver at the a end.
    fn bench_run(pair: &VethPair, count: usize, ring: bool) -> RunResult {
        enum Rx {
            Ring(AfPacket),
            Simple(AfPacketSimple),
        }
        let mut rx = in_netns(pair.a.path(), || {
            if ring {
                AfPacket::open(&pair.a_if, &RingConfig::default()).map(Rx::Ring)
            } else {
                AfPacketSimple::open(&pair.a_if).map(Rx::Simple)
            }
        })
        .unwrap()
        .unwrap();
        let tx = in_netns(pair.b.path(), || AfPacketSimple::open(&pair.b_if))
            .unwrap()
            .unwrap();
        let frames: Vec<Vec<u8>> = (0..64u32).map(|i| test_frame(i, 64)).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        let start = Instant::now();
        let hard_deadline = start + Duration::from_secs(20);
        std::thread::scope(|s| {
            let sender = s.spawn(|| {
                let mut sent = 0;
                while sent < count && Instant::now() < hard_deadline {
                    let want = (count - sent).min(refs.len());
                    match tx.send_batch(&refs[..want]) {
                        Ok(k) => sent += k,
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("send: {e}"),
                    }
                }
                done.store(true, Ordering::Release);
                sent
            });
            let cpu0 = thread_cpu();
            let mut received = 0usize;
            let mut last = Instant::now();
            let mut buf = [0u8; 2048];
            loop {
                let n = match &mut rx {
                    Rx::Ring(r) => r.rx_batch(64, |f| {
                        if f[12..14] == ETHERTYPE_TEST {
                            received += 1;
                        }
                    }),
                    Rx::Simple(r) => match r.recv(&mut buf) {
                        Ok(_) => {
                            if buf[12..14] == ETHERTYPE_TEST {
                                received += 1;
                            }
                            1
                        }
                        Err(_) => 0,
                    },
                };
                let now = Instant::now();
                if n > 0 {
                    last = now;
                } else if (done.load(Ordering::Acquire) && now - last > Duration::from_millis(200))
                    || now > hard_deadline
                {
                    break;
                }
                if received >= count {
                    last = now;
                    break;
                }
            }
            let rx_cpu = thread_cpu() - cpu0;
            let sent = sender.join().unwrap();
            let kernel_drops = match &rx {
                Rx::Ring(r) => r.kernel_stats().unwrap().drops,
                Rx::Simple(r) => r.kernel_stats().unwrap().drops,
            };
            RunResult {
                sent,
                received,
                wall: last - start,
                rx_cpu,
                kernel_drops,
            }
        })
    }

    /// `cargo test --release -p datapath io::afpacket::tests::bench_ring_vs_simple -- --ignored
    /// --nocapture`: ring RX vs per-packet recvfrom on a veth pair, 200k 64-byte frames a run.
    #[test]
    #[ignore = "benchmark; run with --ignored --nocapture in release mode"]
    fn bench_ring_vs_simple() {
        if skip_unless_root("bench_ring_vs_simple") {
            return;
        }
        const COUNT: usize = 200_000;
        let pair = VethPair::new(1500);
        let mut ring_pps = Vec::new();
        let mut simple_pps = Vec::new();
        for round in 0..3 {
            for ring in [true, false] {
                let r = bench_run(&pair, COUNT, ring);
                let pps = r.received as f64 / r.wall.as_secs_f64();
                let ns_per = r.rx_cpu.as_nanos() as f64 / r.received.max(1) as f64;
                eprintln!(
                    "round {round} {:6}: sent {} received {} ({:.1}%) in {:?} = {:.0} kpps, \
                     rx thread cpu {:.0} ns/frame (spinning included), kernel drops {}",
                    if ring { "ring" } else { "simple" },
                    r.sent,
                    r.received,
                    100.0 * r.received as f64 / r.sent.max(1) as f64,
                    r.wall,
                    pps / 1e3,
                    ns_per,
                    r.kernel_drops
                );
                if ring {
                    ring_pps.push(pps);
                } else {
                    simple_pps.push(pps);
                }
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (rp, sp) = (median(&mut ring_pps), median(&mut simple_pps));
        eprintln!(
            "median received rate: ring {:.0} kpps, simple {:.0} kpps, ratio {:.2}",
            rp / 1e3,
            sp / 1e3,
            rp / sp
        );
    }
}
