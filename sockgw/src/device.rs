//! The smoltcp device of the gateway: two frame queues between the event loop and the interface.
//!
//! The interface uses `Medium::Ip`: received frames keep their Ethernet header in the queue and the
//! interface sees the bytes after it; transmitted packets get an Ethernet header from the gateway's
//! MAC to U's MAC, with the EtherType of the IP version smoltcp wrote (IPv4 or IPv6). The transmit queue is bounded so that smoltcp, not this queue, holds the data
//! while the link is slow (smoltcp retries when `transmit` returns `None`).

use std::collections::VecDeque;

use packet::{ETH_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, MacAddr};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Most frames waiting for the link before smoltcp is told to hold back.
pub(crate) const TX_QUEUE_LIMIT: usize = 256;

pub(crate) struct FrameQueues {
    /// Ethernet frames from the switch, IPv4 or IPv6 inside.
    pub rx: VecDeque<Vec<u8>>,
    /// Ethernet frames for the switch.
    pub tx: VecDeque<Vec<u8>>,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    mtu: usize,
}

impl FrameQueues {
    pub fn new(src_mac: MacAddr, dst_mac: MacAddr, mtu: usize) -> Self {
        FrameQueues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            src_mac,
            dst_mac,
            mtu,
        }
    }

    /// Room for more frames to the switch.
    pub fn tx_has_room(&self) -> bool {
        self.tx.len() < TX_QUEUE_LIMIT
    }
}

pub(crate) struct RxToken(Vec<u8>);

pub(crate) struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
    src_mac: MacAddr,
    dst_mac: MacAddr,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0.get(ETH_HEADER_LEN..).unwrap_or(&[]))
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; ETH_HEADER_LEN + len];
        frame[0..6].copy_from_slice(&self.dst_mac.0);
        frame[6..12].copy_from_slice(&self.src_mac.0);
        let r = f(&mut frame[ETH_HEADER_LEN..]);
        let ethertype = match frame.get(ETH_HEADER_LEN).map(|b| b >> 4) {
            Some(6) => ETHERTYPE_IPV6,
            _ => ETHERTYPE_IPV4,
        };
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        self.queue.push_back(frame);
        r
    }
}

impl phy::Device for FrameQueues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((
            RxToken(frame),
            TxToken {
                queue: &mut self.tx,
                src_mac: self.src_mac,
                dst_mac: self.dst_mac,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if !self.tx_has_room() {
            return None;
        }
        Some(TxToken {
            queue: &mut self.tx,
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // The link is a local socket, nothing corrupts frames on it, and the switch may pass on
        // partial (offloaded) TCP/UDP checksums: verify only the IPv4 header, compute all on send.
        let mut cs = ChecksumCapabilities::default();
        cs.tcp = Checksum::Tx;
        cs.udp = Checksum::Tx;
        cs.icmpv4 = Checksum::Tx;
        cs.icmpv6 = Checksum::Tx;
        caps.checksum = cs;
        caps
    }
}
