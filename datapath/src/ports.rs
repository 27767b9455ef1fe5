//! Port backends as the packet loop sees them: [`PortIo`] for TAP devices and AF_PACKET sockets.
//!
//! Thin adapters over [`crate::io`]: they add the per-port receive buffer (TAP) and the ring
//! sizes vswitch uses, and keep the loop free of any syscall detail.

use crate::engine::{BATCH, PortIo};
use crate::io::IoError;
use crate::io::afpacket::{
    AfPacket, AfPacketQueue, FrameMeta, RingConfig, RxScratch, SocketOptions,
};
use crate::io::tap::Tap;
use packet::offload::{Capabilities, Offload, VNET_HDR_LEN};
use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd};

/// Largest frame read from a TAP device (a 64 KiB IP packet, its Ethernet header and tags) and
/// its virtio-net header.
const TAP_BUF: usize = 65_536 + 18 + VNET_HDR_LEN;

/// A TAP device in the switch's namespace.
pub struct TapPort {
    tap: Tap,
    buf: Vec<u8>,
    /// Frames refused for a virtio-net header that does not match them, not yet reported.
    bad_offload: u64,
}

impl TapPort {
    /// Creates TAP `name` (up, with `mtu`) in the current namespace, with a virtio-net header
    /// and the offloads the kernel offers; one queue per worker (IFF_MULTI_QUEUE when more
    /// than one).
    pub fn create_group(name: &str, mtu: u16, workers: usize) -> Result<Vec<TapPort>, IoError> {
        let queues = Tap::create_offloaded(name, None, mtu, workers)?;
        Ok(queues.into_iter().map(Self::from_tap).collect())
    }

    /// Wraps an existing TAP (e.g. one created inside a container's namespace).
    pub fn from_tap(tap: Tap) -> TapPort {
        TapPort {
            tap,
            buf: vec![0; TAP_BUF],
            bad_offload: 0,
        }
    }
}

impl PortIo for TapPort {
    fn fd(&self) -> BorrowedFd<'_> {
        self.tap.as_fd()
    }

    fn rx(&mut self, max: usize, f: &mut dyn FnMut(&[u8], Offload)) -> usize {
        let vnet = self.tap.offloads().is_some();
        let mut n = 0;
        while n < max {
            match self.tap.recv(&mut self.buf) {
                Ok(len) if !vnet => {
                    f(&self.buf[..len], Offload::NONE);
                    n += 1;
                }
                Ok(len) => {
                    n += 1;
                    let Some((header, frame)) = self.buf[..len].split_at_checked(VNET_HDR_LEN)
                    else {
                        self.bad_offload += 1;
                        continue;
                    };
                    match Offload::from_vnet_hdr(header, frame) {
                        Ok(offload) => f(frame, offload),
                        Err(_) => self.bad_offload += 1,
                    }
                }
                Err(_) => break,
            }
        }
        n
    }

    fn tx(&mut self, frames: &[(&[u8], Offload)]) -> std::io::Result<usize> {
        let vnet = self.tap.offloads().is_some();
        let mut sent = 0;
        for (frame, offload) in frames {
            let done = if vnet {
                self.tap.send_vnet(&offload.to_vnet_hdr(frame), frame)
            } else {
                self.tap.send(frame)
            };
            if done.is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }

    fn offloads(&self) -> Capabilities {
        self.tap.offloads().unwrap_or(Capabilities::NONE)
    }

    fn rx_bad_offload(&mut self) -> u64 {
        std::mem::take(&mut self.bad_offload)
    }
}

/// An existing interface (a veth end) read through a TPACKET_V3 ring or its socket's receive
/// queue (see [`crate::io::afpacket`] for which costs what).
pub struct AfPacketPort {
    sock: Socket,
    /// Frames refused for a virtio-net header that does not match them, not yet reported.
    bad_offload: u64,
    /// Reused for each batch's virtio-net headers.
    headers: Vec<[u8; VNET_HDR_LEN]>,
    /// Frames cut short, as far as reported in `rx_kernel_drops`.
    truncated_reported: u64,
    /// Reused for a frame whose VLAN tag the kernel stripped, with the tag back in.
    retagged: Vec<u8>,
    /// Whether the socket holds the interface in promiscuous mode.
    promiscuous: bool,
}

enum Socket {
    Ring(AfPacket),
    Queue(AfPacketQueue),
}

thread_local! {
    /// The queue sockets' receive scratch: one per packet-loop thread, shared by all its ports.
    static SCRATCH: RefCell<RxScratch> = RefCell::new(RxScratch::new(BATCH));
}

/// A queue socket's receive buffer limit: what a ring held (1 MiB), used only while frames
/// wait (the kernel doubles it for its bookkeeping).
const QUEUE_RCVBUF: usize = 1 << 20;

impl AfPacketPort {
    /// Ring sizes per port: 16 blocks of 256 KiB (4 MiB) is room for ~2,000 full-size frames.
    /// Only the few ports that carry most traffic (the uplink, the file's ports) have a ring,
    /// and the uplink's traffic can be all full-size frames: an overlay's VXLAN arrives one
    /// segment per frame (no GRO reaches a packet socket). With 4 blocks, `bench veth`'s
    /// overlay row lost 27,084 frames at the full ring (1.43 Gbit/s); with 16, 1,154 (1.73).
    pub fn ring_config() -> RingConfig {
        RingConfig {
            block_size: 1 << 18,
            block_count: 16,
            frame_size: 2048,
            block_timeout_ms: 1,
            fanout_group: None,
            qdisc_bypass: true,
            // GSO super-frames and partial checksums both ways; a block (256 KiB) holds the
            // largest (64 KiB) frame.
            vnet_hdr: true,
        }
    }

    /// Opens interface `ifname` in the current namespace, with a ring.
    pub fn open(ifname: &str) -> Result<AfPacketPort, IoError> {
        Ok(Self::from_socket(Socket::Ring(AfPacket::open(
            ifname,
            &Self::ring_config(),
        )?)))
    }

    /// One ring socket per worker on `ifname`, joined in worker order to fanout group `group`,
    /// so the kernel's symmetric flow hash picks socket (= worker) `hash % workers` and both
    /// directions of a flow, on any port, land on the same worker. For the few ports that
    /// carry most traffic (the uplink, topology ports).
    pub fn open_group(
        ifname: &str,
        workers: usize,
        group: u16,
    ) -> Result<Vec<AfPacketPort>, IoError> {
        if workers <= 1 {
            return Ok(vec![Self::open(ifname)?]);
        }
        let cfg = RingConfig {
            fanout_group: Some(group),
            ..Self::ring_config()
        };
        (0..workers)
            .map(|_| {
                Ok(Self::from_socket(Socket::Ring(AfPacket::open(
                    ifname, &cfg,
                )?)))
            })
            .collect()
    }

    /// [`AfPacketPort::open_group`] with queue sockets: no memory and no timer of their own,
    /// for container ports (a thousand of them must cost little while idle).
    pub fn open_queue_group(
        ifname: &str,
        workers: usize,
        group: u16,
    ) -> Result<Vec<AfPacketPort>, IoError> {
        let opts = SocketOptions {
            fanout_group: (workers > 1).then_some(group),
            qdisc_bypass: true,
            vnet_hdr: true,
            rcvbuf: Some(QUEUE_RCVBUF),
        };
        (0..workers.max(1))
            .map(|_| {
                Ok(Self::from_socket(Socket::Queue(AfPacketQueue::open(
                    ifname, &opts,
                )?)))
            })
            .collect()
    }

    fn from_socket(sock: Socket) -> AfPacketPort {
        AfPacketPort {
            sock,
            bad_offload: 0,
            headers: Vec::with_capacity(64),
            truncated_reported: 0,
            retagged: Vec::new(),
            promiscuous: false,
        }
    }

    fn vnet_hdr(&self) -> bool {
        match &self.sock {
            Socket::Ring(s) => s.vnet_hdr(),
            Socket::Queue(s) => s.vnet_hdr(),
        }
    }
}

impl PortIo for AfPacketPort {
    fn set_promiscuous(&mut self, on: bool) -> std::io::Result<()> {
        if self.promiscuous == on {
            return Ok(());
        }
        match &self.sock {
            Socket::Ring(s) => s.set_promiscuous(on),
            Socket::Queue(s) => s.set_promiscuous(on),
        }?;
        self.promiscuous = on;
        Ok(())
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.sock {
            Socket::Ring(s) => s.as_fd(),
            Socket::Queue(s) => s.as_fd(),
        }
    }

    fn rx(&mut self, max: usize, f: &mut dyn FnMut(&[u8], Offload)) -> usize {
        let vnet = self.vnet_hdr();
        let bad = &mut self.bad_offload;
        let retagged = &mut self.retagged;
        let mut each = |frame: &[u8], meta: FrameMeta| {
            let offload = if vnet {
                match Offload::from_vnet_hdr(&meta.vnet, frame) {
                    Ok(offload) => offload,
                    Err(_) => {
                        *bad += 1;
                        return;
                    }
                }
            } else {
                Offload::NONE
            };
            match meta.vlan_tci {
                // The kernel took the 802.1Q tag off into the ring's metadata before packet
                // sockets saw the frame: put it back, so the pipeline sees the wire's frame
                // (macvlan networks on VLANs tell their frames by it).
                Some(tci) if frame.len() >= 12 => {
                    let tpid = if meta.vlan_tpid == 0 {
                        0x8100
                    } else {
                        meta.vlan_tpid
                    };
                    retagged.clear();
                    retagged.extend_from_slice(&frame[..12]);
                    retagged.extend_from_slice(&tpid.to_be_bytes());
                    retagged.extend_from_slice(&tci.to_be_bytes());
                    retagged.extend_from_slice(&frame[12..]);
                    f(retagged, offload.retagged(true))
                }
                _ => f(frame, offload),
            }
        };
        match &mut self.sock {
            Socket::Ring(s) => s.rx_batch_meta(max, each),
            Socket::Queue(s) => {
                SCRATCH.with_borrow_mut(|scratch| s.rx_batch_meta(max, scratch, &mut each))
            }
        }
    }

    fn tx(&mut self, frames: &[(&[u8], Offload)]) -> std::io::Result<usize> {
        let refs: Vec<&[u8]> = frames.iter().map(|(f, _)| *f).collect();
        let vnet = self.vnet_hdr();
        if vnet {
            self.headers.clear();
            self.headers
                .extend(frames.iter().map(|(f, o)| o.to_vnet_hdr(f)));
        }
        match (&mut self.sock, vnet) {
            (Socket::Ring(s), false) => s.tx_batch(&refs),
            (Socket::Ring(s), true) => s.tx_batch_vnet(&refs, &self.headers),
            (Socket::Queue(s), false) => s.tx_batch(&refs),
            (Socket::Queue(s), true) => s.tx_batch_vnet(&refs, &self.headers),
        }
    }

    fn offloads(&self) -> Capabilities {
        if self.vnet_hdr() {
            Capabilities::ALL
        } else {
            Capabilities::NONE
        }
    }

    fn rx_kernel_drops(&mut self) -> u64 {
        let (kernel, truncated) = match &self.sock {
            Socket::Ring(s) => (s.kernel_stats(), s.stats().truncated),
            Socket::Queue(s) => (s.kernel_stats(), s.stats().truncated),
        };
        let kernel = kernel.map_or(0, |s| u64::from(s.drops));
        let new_truncated = truncated - self.truncated_reported.min(truncated);
        self.truncated_reported = truncated;
        kernel + new_truncated
    }

    fn rx_bad_offload(&mut self) -> u64 {
        std::mem::take(&mut self.bad_offload)
    }
}

/// The uplink served by the socket gateway ([`sockgw`], rootless mode): frames go over a
/// SOCK_SEQPACKET pair to the gateway's thread, which re-originates the flows with host sockets.
pub struct SocketUplinkPort {
    handle: sockgw::GatewayHandle,
    link: std::os::unix::net::UnixDatagram,
    buf: Vec<u8>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SocketUplinkPort {
    /// Starts the gateway on its own thread and returns the switch's end of the link.
    pub fn start(
        config: sockgw::GatewayConfig,
        sockets: Box<dyn sockgw::HostSockets>,
    ) -> std::io::Result<SocketUplinkPort> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        // One byte more than the largest frame, so a longer message shows up as oversize.
        let buf_len = config.mtu + 18 + 1;
        let gateway = sockgw::SocketGateway::new(config, sockets)?;
        let handle = gateway.handle();
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        // Room for a burst of 64 KiB frames toward the gateway (the default holds about three).
        nix::sys::socket::setsockopt(&ours, nix::sys::socket::sockopt::SndBuf, &(4 << 20))
            .map_err(std::io::Error::from)?;
        let link = std::os::unix::net::UnixDatagram::from(ours);
        link.set_nonblocking(true)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let their_stop = std::sync::Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("vswitch-sockgw".into())
            .spawn(move || {
                let link = std::os::unix::net::UnixDatagram::from(theirs);
                if let Err(e) = gateway.run(link, their_stop) {
                    tracing::error!("socket gateway stopped: {e}");
                }
            })?;
        Ok(SocketUplinkPort {
            handle,
            link,
            buf: vec![0; buf_len],
            stop,
            thread: Some(thread),
        })
    }
}

impl SocketUplinkPort {
    /// Publishes and unpublishes host ports of the running gateway.
    pub fn handle(&self) -> sockgw::GatewayHandle {
        self.handle.clone()
    }
}

impl Drop for SocketUplinkPort {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Closing our end wakes the gateway, which sees the hang-up and returns.
        let _ = self.link.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PortIo for SocketUplinkPort {
    fn fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    fn rx(&mut self, max: usize, f: &mut dyn FnMut(&[u8], Offload)) -> usize {
        let mut n = 0;
        while n < max {
            match self.link.recv(&mut self.buf) {
                // A message that fills the buffer was cut: not a frame to forward.
                Ok(len) if len == self.buf.len() => n += 1,
                Ok(len) if len > 0 => {
                    f(&self.buf[..len], Offload::NONE);
                    n += 1;
                }
                _ => break,
            }
        }
        n
    }

    fn tx(&mut self, frames: &[(&[u8], Offload)]) -> std::io::Result<usize> {
        let mut sent = 0;
        for (frame, _) in frames {
            if self.link.send(frame).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }
}

/// Host sockets made by the rootless helper in the host's network namespace.
pub struct HelperSockets(pub std::sync::Arc<crate::io::rootless::HostHelper>);

impl sockgw::HostSockets for HelperSockets {
    fn socket(
        &self,
        domain: socket2::Domain,
        ty: socket2::Type,
        proto: Option<socket2::Protocol>,
    ) -> std::io::Result<socket2::Socket> {
        let fd = self.0.socket(
            domain.into(),
            i32::from(ty) | libc::SOCK_CLOEXEC,
            proto.map_or(0, i32::from),
        )?;
        Ok(socket2::Socket::from(fd))
    }
}
