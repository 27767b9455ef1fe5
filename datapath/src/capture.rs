//! Live capture from the packet loops: taps that copy the frames of chosen ports, as they are
//! read (ingress, before the pipeline) and as they are written (egress, after NAT), into a
//! bounded queue that a reader drains.
//!
//! The loop never waits for a reader: a frame that finds the queue full, in frames or in bytes,
//! is counted as dropped and the loop goes on. With no tap installed the cost is one
//! `is_empty` test per read and per transmit; with taps, a port test per frame, the filter
//! (libpcap's BPF interpreter) on the frames of the chosen ports, and a copy of those that
//! pass.

use crate::io::bpf::Filter;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use switch::config::NetworkId;
use switch::{PortId, Topology};

/// Frames a capture queue holds at most.
pub const QUEUE_FRAMES: usize = 16_384;
/// Bytes a capture queue holds at most (super-frames are up to 64 KB each).
pub const QUEUE_BYTES: usize = 32 << 20;

/// Which way a captured frame was going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// Read from the port (as the container or the uplink sent it).
    In,
    /// Written to the port (after the pipeline: NAT-ed, routed).
    Out,
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Wall-clock time of the batch it was seen in.
    pub time: Duration,
    /// The port it was read from or written to.
    pub port: PortId,
    /// Read or written.
    pub direction: Direction,
    /// Its length on the wire (it is cut to the snap length).
    pub wire_len: u32,
    /// Its first bytes.
    pub data: Vec<u8>,
}

/// What a tap takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These ports.
    Ports(Vec<PortId>),
    /// Every port of a network, those added later included.
    Network(NetworkId),
}

/// The counters a tap shares with its reader.
#[derive(Debug, Default)]
pub struct TapCounters {
    /// Frames queued.
    pub captured: AtomicU64,
    /// Frames that matched but found the queue full.
    pub dropped: AtomicU64,
    /// Bytes queued and not read yet (the byte bound).
    queued_bytes: AtomicUsize,
}

/// One capture, installed in every packet loop (see [`crate::engine::Engine::add_tap`]).
#[derive(Clone)]
pub struct Tap {
    /// Its id, to remove it.
    pub id: u64,
    selection: Selection,
    filter: Option<Arc<Filter>>,
    snaplen: usize,
    directions: (bool, bool),
    tx: Sender<Captured>,
    counters: Arc<TapCounters>,
}

/// The reader's end of a capture.
pub struct TapReader {
    rx: Receiver<Captured>,
    counters: Arc<TapCounters>,
}

impl Tap {
    /// A tap on `selection` (frames passing `filter`, cut to `snaplen` bytes, in the
    /// `directions` (in, out) asked for) and its reader.
    pub fn new(
        id: u64,
        selection: Selection,
        filter: Option<Arc<Filter>>,
        snaplen: usize,
        directions: (bool, bool),
    ) -> (Tap, TapReader) {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_FRAMES);
        let counters = Arc::new(TapCounters::default());
        let tap = Tap {
            id,
            selection,
            filter,
            snaplen: snaplen.max(1),
            directions,
            tx,
            counters: Arc::clone(&counters),
        };
        (tap, TapReader { rx, counters })
    }

    fn wants(&self, topo: &Topology, port: PortId, direction: Direction) -> bool {
        let way = match direction {
            Direction::In => self.directions.0,
            Direction::Out => self.directions.1,
        };
        way && match &self.selection {
            Selection::Ports(ports) => ports.contains(&port),
            Selection::Network(net) => topo
                .port(port)
                .is_some_and(|p| p.active && p.network == Some(*net)),
        }
    }

    /// Offers one frame: queued when it is wanted and passes the filter, counted as dropped
    /// when the queue is full.
    fn offer(
        &self,
        topo: &Topology,
        port: PortId,
        direction: Direction,
        frame: &[u8],
        now: &mut Option<Duration>,
    ) {
        if !self.wants(topo, port, direction) {
            return;
        }
        let cut = frame.len().min(self.snaplen);
        if self
            .filter
            .as_ref()
            .is_some_and(|f| !f.matches(&frame[..cut], frame.len()))
        {
            return;
        }
        let c = &self.counters;
        if c.queued_bytes.load(Ordering::Relaxed) + cut > QUEUE_BYTES {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The wall clock once per batch, and only when a frame is taken.
        let time = *now.get_or_insert_with(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
        });
        let captured = Captured {
            time,
            port,
            direction,
            wire_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            data: frame[..cut].to_vec(),
        };
        match self.tx.try_send(captured) {
            Ok(()) => {
                c.queued_bytes.fetch_add(cut, Ordering::Relaxed);
                c.captured.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                c.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The reader is gone; the control plane removes the tap soon.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl TapReader {
    /// The next frame, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Captured> {
        let c = self.rx.recv_timeout(timeout).ok()?;
        self.counters
            .queued_bytes
            .fetch_sub(c.data.len(), Ordering::Relaxed);
        Some(c)
    }

    /// The next frame if one is queued (no wait: crossbeam's zero timeout yields the CPU).
    pub fn try_recv(&self) -> Option<Captured> {
        let c = self.rx.try_recv().ok()?;
        self.counters
            .queued_bytes
            .fetch_sub(c.data.len(), Ordering::Relaxed);
        Some(c)
    }

    /// (captured, dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.captured.load(Ordering::Relaxed),
            self.counters.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The taps of one packet loop.
#[derive(Default)]
pub struct Taps {
    taps: Vec<Tap>,
    /// The wall clock of the current batch, read once per batch while taps exist.
    now: Option<Duration>,
}

impl Taps {
    /// Whether no capture runs (the loop's only cost then).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.taps.is_empty()
    }

    /// Installs a tap.
    pub fn add(&mut self, tap: Tap) {
        self.taps.retain(|t| t.id != tap.id);
        self.taps.push(tap);
    }

    /// Removes tap `id`; whether it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.taps.len();
        self.taps.retain(|t| t.id != id);
        before != self.taps.len()
    }

    /// Starts a batch: the time its frames are stamped with.
    pub fn start_batch(&mut self) {
        self.now = None;
    }

    /// Offers `frame`, seen on `port` going `direction`, to every tap.
    pub fn offer(&mut self, topo: &Topology, port: PortId, direction: Direction, frame: &[u8]) {
        for tap in &self.taps {
            tap.offer(topo, port, direction, frame, &mut self.now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::Config;

    fn topo() -> Topology {
        let t = testkit::topology::lan(3).build();
        Topology::new(&Config::from_toml(&t).unwrap()).unwrap()
    }

    #[test]
    fn a_tap_takes_its_ports_and_directions_cut_to_the_snap_length() {
        let topo = topo();
        let (tap, reader) = Tap::new(
            1,
            Selection::Ports(vec![PortId(1)]),
            None,
            20,
            (true, false),
        );
        let mut taps = Taps::default();
        taps.add(tap);
        taps.start_batch();
        let frame: Vec<u8> = (0..60).collect();
        taps.offer(&topo, PortId(0), Direction::In, &frame);
        taps.offer(&topo, PortId(1), Direction::Out, &frame);
        taps.offer(&topo, PortId(1), Direction::In, &frame);
        let c = reader.recv_timeout(Duration::from_millis(10)).unwrap();
        assert_eq!(
            (c.port, c.direction, c.wire_len),
            (PortId(1), Direction::In, 60)
        );
        assert_eq!(c.data, frame[..20]);
        assert!(reader.try_recv().is_none());
        assert_eq!(reader.counts(), (1, 0));
        assert!(taps.remove(1) && taps.is_empty());
    }

    #[test]
    fn a_network_tap_takes_every_port_of_it_and_a_full_queue_drops_and_counts() {
        let topo = topo();
        let net = topo.network_by_name("lan").unwrap();
        let (tap, reader) = Tap::new(7, Selection::Network(net), None, 65535, (true, true));
        let mut taps = Taps::default();
        taps.add(tap);
        taps.start_batch();
        let frame = vec![0u8; 64];
        for i in 0..QUEUE_FRAMES + 10 {
            taps.offer(&topo, PortId((i % 3) as u16), Direction::Out, &frame);
        }
        assert_eq!(reader.counts(), (QUEUE_FRAMES as u64, 10));
        // Draining frees room again.
        assert!(reader.try_recv().is_some());
        taps.offer(&topo, PortId(0), Direction::In, &frame);
        assert_eq!(reader.counts(), (QUEUE_FRAMES as u64 + 1, 10));
    }

    #[test]
    fn the_byte_bound_holds_for_super_frames() {
        let topo = topo();
        let (tap, reader) = Tap::new(
            2,
            Selection::Ports(vec![PortId(0)]),
            None,
            1 << 20,
            (true, true),
        );
        let mut taps = Taps::default();
        taps.add(tap);
        taps.start_batch();
        let big = vec![0u8; 65_000];
        let fit = QUEUE_BYTES / big.len();
        for _ in 0..fit + 5 {
            taps.offer(&topo, PortId(0), Direction::In, &big);
        }
        assert_eq!(reader.counts(), (fit as u64, 5));
    }
}
