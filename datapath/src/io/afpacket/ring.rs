//! The TPACKET_V3 mmap RX ring.
//!
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
//! - With `vnet_hdr` (set before the ring is mapped), the header sits just before the MAC
//!   header in the ring; blocks must hold the largest frame.

use super::{
    FrameMeta, KernelStats, VNET_HDR_LEN, bind, ignore_outgoing, join_fanout, kernel_stats,
    packet_socket, page_size, send_checked, setsockopt,
};
use crate::io::{IoError, ifindex};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

const TPACKET_V3: libc::c_int = 2;
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
            join_fanout(&sock.fd, group, ifname)?;
        }
        sock.stats = RingStats::default();
        Ok(sock)
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
        send_checked(&self.fd, self.vnet_hdr, frames, None)
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
        send_checked(&self.fd, self.vnet_hdr, frames, Some(headers))
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
            vlan_tpid: hdr.hv1.tp_vlan_tpid,
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
