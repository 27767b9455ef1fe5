//! Port backends as the packet loop sees them: [`PortIo`] for TAP devices and AF_PACKET rings.
//!
//! Thin adapters over [`crate::io`]: they add the per-port receive buffer (TAP) and the ring
//! sizes vswitch uses, and keep the loop free of any syscall detail.

use crate::engine::PortIo;
use crate::io::IoError;
use crate::io::afpacket::{AfPacket, RingConfig};
use crate::io::tap::Tap;
use std::os::fd::{AsFd, BorrowedFd};

/// Largest frame read from a TAP device (a 64 KiB IP packet and its Ethernet header).
const TAP_BUF: usize = 65_536 + 18;

/// A TAP device in the switch's namespace.
pub struct TapPort {
    tap: Tap,
    buf: Vec<u8>,
}

impl TapPort {
    /// Creates TAP `name` (up, with `mtu`) in the current namespace.
    pub fn create(name: &str, mtu: u16) -> Result<TapPort, IoError> {
        Ok(TapPort {
            tap: Tap::create(name, None, mtu)?,
            buf: vec![0; TAP_BUF],
        })
    }

    /// One TAP queue per worker (IFF_MULTI_QUEUE when more than one).
    pub fn create_group(name: &str, mtu: u16, workers: usize) -> Result<Vec<TapPort>, IoError> {
        if workers <= 1 {
            return Ok(vec![Self::create(name, mtu)?]);
        }
        let queues = Tap::create_queues(name, None, mtu, workers)?;
        Ok(queues.into_iter().map(Self::from_tap).collect())
    }

    /// Wraps an existing TAP (e.g. one created inside a container's namespace).
    pub fn from_tap(tap: Tap) -> TapPort {
        TapPort {
            tap,
            buf: vec![0; TAP_BUF],
        }
    }
}

impl PortIo for TapPort {
    fn fd(&self) -> BorrowedFd<'_> {
        self.tap.as_fd()
    }

    fn rx(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            match self.tap.recv(&mut self.buf) {
                Ok(len) => {
                    f(&self.buf[..len]);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }

    fn tx(&mut self, frames: &[&[u8]]) -> std::io::Result<usize> {
        let mut sent = 0;
        for frame in frames {
            if self.tap.send(frame).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }
}

/// An existing interface (a veth end) read through a TPACKET_V3 ring.
pub struct AfPacketPort {
    sock: AfPacket,
}

impl AfPacketPort {
    /// Ring sizes per port: 4 blocks of 256 KiB is room for ~500 full-size frames, enough to
    /// ride out a scheduling hiccup without holding much memory per container.
    pub fn ring_config() -> RingConfig {
        RingConfig {
            block_size: 1 << 18,
            block_count: 4,
            frame_size: 2048,
            block_timeout_ms: 1,
            fanout_group: None,
            qdisc_bypass: true,
        }
    }

    /// Opens interface `ifname` in the current namespace.
    pub fn open(ifname: &str) -> Result<AfPacketPort, IoError> {
        Ok(AfPacketPort {
            sock: AfPacket::open(ifname, &Self::ring_config())?,
        })
    }

    /// One socket per worker on `ifname`, joined in worker order to fanout group `group`, so
    /// the kernel's symmetric flow hash picks socket (= worker) `hash % workers` and both
    /// directions of a flow, on any port, land on the same worker.
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
                Ok(AfPacketPort {
                    sock: AfPacket::open(ifname, &cfg)?,
                })
            })
            .collect()
    }
}

impl PortIo for AfPacketPort {
    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    fn rx(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        self.sock.rx_batch(max, f)
    }

    fn tx(&mut self, frames: &[&[u8]]) -> std::io::Result<usize> {
        self.sock.tx_batch(frames)
    }

    fn rx_kernel_drops(&mut self) -> u64 {
        self.sock.kernel_stats().map_or(0, |s| u64::from(s.drops))
    }
}
