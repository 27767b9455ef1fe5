//! Neighbor tables of the gateway (ARP for IPv4, neighbour discovery for IPv6: one
//! [`Neighbors`] per family): one per network and one for the uplink, plus the queue of
//! packets waiting for an address to resolve.
//!
//! Invariants: a pending queue never holds more than [`MAX_PENDING_PER_IP`] frames, and all
//! queues together never more than [`MAX_PENDING_TOTAL`]; a queue older than
//! [`PENDING_TIMEOUT`] is dropped whole by [`Neighbors::expire`]. Entries are refreshed by ARP
//! traffic and by IPv4 packets the gateway receives (gleaning), and forgotten after
//! [`NEIGHBOR_TIMEOUT`] without news.

use crate::config::PortId;
use packet::MacAddr;
use rustc_hash::FxHashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An address family's neighbour address: how `(side, address)` packs into a cache key.
pub trait NeighborAddr: Copy + Eq + Ord + Hash + Debug {
    /// The packed key (one word for IPv4).
    type Key: Copy + Eq + Hash + Debug;
    /// `(side, ip)` packed (injective).
    fn key(side: Side, ip: Self) -> Self::Key;
}

impl NeighborAddr for Ipv4Addr {
    type Key = u64;
    /// The side above the address: one word hashes in a single step.
    #[inline]
    fn key(side: Side, ip: Ipv4Addr) -> u64 {
        (side_bits(side) << 32) | u64::from(ip.to_bits())
    }
}

impl NeighborAddr for Ipv6Addr {
    type Key = (u32, u128);
    #[inline]
    fn key(side: Side, ip: Ipv6Addr) -> (u32, u128) {
        (side_bits(side) as u32, ip.to_bits())
    }
}

#[inline]
fn side_bits(side: Side) -> u64 {
    match side {
        Side::Network(n) => u64::from(n),
        Side::Uplink => 1 << 16,
    }
}

/// Where a neighbor lives: a network (by id) or the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// A container network.
    Network(u16),
    /// The uplink segment.
    Uplink,
}

/// Frames held per unresolved address.
pub const MAX_PENDING_PER_IP: usize = 16;
/// Frames held in all.
pub const MAX_PENDING_TOTAL: usize = 1024;
/// How long a packet may wait for ARP (Linux: 3 probes, 1 s apart).
pub const PENDING_TIMEOUT: u64 = 3_000_000_000;
/// Minimum time between two ARP requests for the same address.
pub const ARP_RETRY: u64 = 1_000_000_000;
/// Neighbor entries unused for this long are forgotten.
pub const NEIGHBOR_TIMEOUT: u64 = 300_000_000_000;

/// A frame waiting for its next hop's MAC, with the port it came in on (for counters).
#[derive(Debug)]
pub struct Waiting {
    /// Ingress port of the frame.
    pub ingress: PortId,
    /// The frame, already translated; only its destination MAC is missing.
    pub data: Vec<u8>,
    /// Its offload state.
    pub offload: packet::offload::Offload,
}

#[derive(Debug)]
struct Queue {
    frames: Vec<Waiting>,
    since: u64,
    last_request: u64,
}

/// What happened to a frame offered to [`Neighbors::enqueue`].
#[derive(Debug)]
pub enum Enqueued {
    /// Queued; send an ARP request now.
    QueuedSendArp,
    /// Queued; a request went out recently.
    Queued,
    /// No room: the frame is handed back to be dropped.
    Full(Waiting),
}

/// Neighbor caches and pending queues of one address family.
#[derive(Debug)]
pub struct Neighbors<A: NeighborAddr = Ipv4Addr> {
    /// Keyed by [`NeighborAddr::key`].
    cache: FxHashMap<A::Key, (MacAddr, u64)>,
    pending: FxHashMap<(Side, A), Queue>,
    pending_total: usize,
    /// Bytes of the frames waiting: super-frames (up to 64 KB) must not let the frame limits
    /// pin 64 MB.
    pending_bytes: usize,
    max_per_ip: usize,
    max_total: usize,
    /// Bumped whenever a cached address changes MAC (the NAT flow cache checks it).
    generation: u64,
}

/// Bytes the pending queues may hold per allowed frame: what MTU-sized frames would take.
const PENDING_BYTES_PER_FRAME: usize = 2048;

impl<A: NeighborAddr> Default for Neighbors<A> {
    fn default() -> Self {
        Neighbors::with_limits(MAX_PENDING_PER_IP, MAX_PENDING_TOTAL)
    }
}

impl<A: NeighborAddr> Neighbors<A> {
    /// Empty caches whose pending queues hold at most `per_ip` frames per address and `total`
    /// in all.
    pub fn with_limits(per_ip: usize, total: usize) -> Neighbors<A> {
        Neighbors {
            cache: FxHashMap::default(),
            pending: FxHashMap::default(),
            pending_total: 0,
            pending_bytes: 0,
            max_per_ip: per_ip,
            max_total: total,
            generation: 0,
        }
    }

    /// The MAC of `ip` on `side`, if known and fresh.
    #[inline]
    pub fn lookup(&self, side: Side, ip: A, now: u64) -> Option<MacAddr> {
        self.cache
            .get(&A::key(side, ip))
            .filter(|(_, t)| now.saturating_sub(*t) < NEIGHBOR_TIMEOUT)
            .map(|(m, _)| *m)
    }

    /// [`Neighbors::lookup`] with the first clock value at which the entry is stale.
    #[inline]
    pub fn lookup_until(&self, side: Side, ip: A, now: u64) -> Option<(MacAddr, u64)> {
        self.cache
            .get(&A::key(side, ip))
            .filter(|(_, t)| now.saturating_sub(*t) < NEIGHBOR_TIMEOUT)
            .map(|&(m, t)| (m, t.saturating_add(NEIGHBOR_TIMEOUT)))
    }

    /// Changes whenever a cached address changed MAC.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records `ip` at `mac` on `side`; returns the frames that were waiting for it.
    pub fn learn(&mut self, side: Side, ip: A, mac: MacAddr, now: u64) -> Vec<Waiting> {
        let key = A::key(side, ip);
        match self.cache.get_mut(&key) {
            Some(e) if e.0 == mac => e.1 = now,
            _ => {
                let changed = self.cache.insert(key, (mac, now)).is_some();
                self.generation += u64::from(changed);
            }
        }
        if self.pending.is_empty() {
            return Vec::new();
        }
        match self.pending.remove(&(side, ip)) {
            Some(q) => {
                self.forget(&q.frames);
                q.frames
            }
            None => Vec::new(),
        }
    }

    /// Holds a frame until `ip` on `side` resolves.
    pub fn enqueue(&mut self, side: Side, ip: A, frame: Waiting, now: u64) -> Enqueued {
        let budget = self.max_total.saturating_mul(PENDING_BYTES_PER_FRAME);
        if self.pending_total >= self.max_total || self.pending_bytes + frame.data.len() > budget {
            return Enqueued::Full(frame);
        }
        let q = self.pending.entry((side, ip)).or_insert(Queue {
            frames: Vec::new(),
            since: now,
            last_request: 0,
        });
        if q.frames.len() >= self.max_per_ip {
            return Enqueued::Full(frame);
        }
        self.pending_bytes += frame.data.len();
        q.frames.push(frame);
        self.pending_total += 1;
        let first = q.frames.len() == 1;
        if first || now.saturating_sub(q.last_request) >= ARP_RETRY {
            q.last_request = now;
            Enqueued::QueuedSendArp
        } else {
            Enqueued::Queued
        }
    }

    /// Removes queues that waited too long; returns their frames (to be dropped and counted).
    pub fn expire(&mut self, now: u64) -> Vec<Waiting> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let mut dead = Vec::new();
        let mut keys: Vec<(Side, A)> = self
            .pending
            .iter()
            .filter(|(_, q)| now.saturating_sub(q.since) >= PENDING_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        // Sorted so the drop order (and so the counters' history) is deterministic.
        keys.sort();
        for k in keys {
            if let Some(q) = self.pending.remove(&k) {
                self.forget(&q.frames);
                dead.extend(q.frames);
            }
        }
        dead
    }

    /// Drops the frames that came in on `port` (it went away); returns how many. Queues left
    /// empty go too. At most the queues' cap of frames to look at, none in the usual case.
    pub fn forget_ingress(&mut self, port: PortId) -> usize {
        if self.pending_total == 0 {
            return 0;
        }
        let (mut frames, mut bytes) = (0, 0);
        self.pending.retain(|_, q| {
            q.frames.retain(|w| {
                let keep = w.ingress != port;
                if !keep {
                    frames += 1;
                    bytes += w.data.len();
                }
                keep
            });
            !q.frames.is_empty()
        });
        self.pending_total -= frames;
        self.pending_bytes -= bytes;
        frames
    }

    /// Frames waiting now.
    pub fn pending_len(&self) -> usize {
        self.pending_total
    }

    /// Accounts frames leaving the queues.
    fn forget(&mut self, frames: &[Waiting]) {
        self.pending_total -= frames.len();
        self.pending_bytes -= frames.iter().map(|w| w.data.len()).sum::<usize>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u8) -> Waiting {
        Waiting {
            ingress: PortId(0),
            data: vec![n],
            offload: packet::offload::Offload::NONE,
        }
    }

    #[test]
    fn super_frames_are_held_by_bytes_too() {
        let mut n = Neighbors::with_limits(1024, 1024);
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        let big = |_: usize| Waiting {
            ingress: PortId(0),
            data: vec![0; 65_000],
            offload: packet::offload::Offload::NONE,
        };
        // 1024 frames' worth of MTU-sized bytes (2 MiB) holds 32 super-frames, not 1024.
        let held = (0..100)
            .filter(|&i| !matches!(n.enqueue(Side::Uplink, ip, big(i), 0), Enqueued::Full(_)))
            .count();
        assert_eq!(held, 32);
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        assert_eq!(n.learn(Side::Uplink, ip, mac, 1).len(), 32);
        let other = Ipv4Addr::new(10, 0, 0, 10);
        assert!(!matches!(
            n.enqueue(Side::Uplink, other, big(0), 2),
            Enqueued::Full(_)
        ));
    }

    #[test]
    fn queue_then_resolve_releases_in_order() {
        let mut n = Neighbors::default();
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        assert!(matches!(
            n.enqueue(Side::Uplink, ip, w(1), 0),
            Enqueued::QueuedSendArp
        ));
        assert!(matches!(
            n.enqueue(Side::Uplink, ip, w(2), 10),
            Enqueued::Queued
        ));
        assert!(matches!(
            n.enqueue(Side::Uplink, ip, w(3), ARP_RETRY + 10),
            Enqueued::QueuedSendArp
        ));
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        let out = n.learn(Side::Uplink, ip, mac, 20);
        assert_eq!(
            out.iter().map(|f| f.data[0]).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(n.pending_len(), 0);
        assert_eq!(n.lookup(Side::Uplink, ip, 30), Some(mac));
        assert_eq!(n.lookup(Side::Network(0), ip, 30), None);
    }

    #[test]
    fn bounded_and_expiring() {
        let mut n = Neighbors::default();
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        for i in 0..MAX_PENDING_PER_IP {
            assert!(!matches!(
                n.enqueue(Side::Network(1), ip, w(i as u8), 0),
                Enqueued::Full(_)
            ));
        }
        assert!(matches!(
            n.enqueue(Side::Network(1), ip, w(99), 0),
            Enqueued::Full(_)
        ));
        assert!(n.expire(PENDING_TIMEOUT - 1).is_empty());
        assert_eq!(n.expire(PENDING_TIMEOUT).len(), MAX_PENDING_PER_IP);
        assert_eq!(n.pending_len(), 0);
    }

    #[test]
    fn a_gone_port_s_frames_leave_the_queues() {
        let mut n = Neighbors::with_limits(16, 1024);
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        let from = |port: u16, b: u8| Waiting {
            ingress: PortId(port),
            data: vec![b; 10],
            offload: packet::offload::Offload::NONE,
        };
        n.enqueue(Side::Network(0), ip, from(1, 1), 0);
        n.enqueue(Side::Network(0), ip, from(2, 2), 0);
        n.enqueue(Side::Uplink, ip, from(1, 3), 0);
        assert_eq!(n.forget_ingress(PortId(1)), 2);
        assert_eq!(n.pending_len(), 1);
        assert_eq!(n.forget_ingress(PortId(1)), 0);
        // The uplink's queue went with its only frame; what resolves now is port 2's frame.
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        assert!(n.learn(Side::Uplink, ip, mac, 1).is_empty());
        let left = n.learn(Side::Network(0), ip, mac, 1);
        assert_eq!(
            left.iter().map(|w| w.ingress).collect::<Vec<_>>(),
            [PortId(2)]
        );
        assert_eq!(n.pending_len(), 0);
    }
}
