//! The packet loop: real ports in, the pipeline, real ports out.
//!
//! One [`Engine`] owns one [`Pipeline`] and the ports it serves, and runs on one thread:
//! wait for readiness (mio/epoll), read a batch of up to [`BATCH`] frames from each ready port,
//! run the batch through the pipeline with the monotonic clock, write the output grouped by
//! port. No lock on the per-packet path: the control plane talks to the loop by sending it
//! closures ([`Command`]) that run between batches, on the loop's own thread.
//!
//! Buffers are recycled: frames are read into vectors from a pool, and every vector the
//! pipeline hands back after transmission returns to the pool. GSO super-frames (up to 64 KB)
//! have a small pool of their own: allocating and freeing one per frame cost about an eighth
//! of the daemon's CPU under TCP load in page faults and page zeroing (perf, BENCHMARKS.md).
//!
//! Several workers ([`Engine::group`]) each own a pipeline and their own socket on every port
//! (the kernel's fanout spreads each port's frames over them). A frame that must meet its
//! connection's state on another worker ([`switch::affinity::owner`]) is handed to that worker
//! through a channel and its waker: the only cross-thread traffic on the packet path.

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use packet::offload::{Capabilities, Offload};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};
use switch::affinity::{Owner, owner};
use switch::{Packet, Pipeline, PortId};

/// Frames read from one port per wake-up.
pub const BATCH: usize = 64;
/// Super-frame buffers kept for reuse per loop (64 of 64 KB: 4 MiB).
const BIG_POOL: usize = 64;
/// Capacity of a super-frame buffer: the largest IP packet, its Ethernet header and a tag.
const BIG_CAPACITY: usize = 65_535 + 18;

/// Capacity of a pooled frame buffer: an MTU-sized frame with a VLAN tag, rounded up.
const BUF_CAPACITY: usize = 2048;
/// Marks "handed-off frames still queued" in the hot list (no port has this index).
const HANDOFF_PENDING: usize = usize::MAX;
/// The waker's token; port tokens are their ids.
const WAKE: Token = Token(usize::MAX);

/// A port backend the loop can read and write (TAP, AF_PACKET ring, ...).
pub trait PortIo: Send {
    /// The descriptor to wait on for readability.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Reads up to `max` frames without blocking, calling `f` for each with its offload state
    /// (plain unless the port carries virtio-net headers); returns how many.
    fn rx(&mut self, max: usize, f: &mut dyn FnMut(&[u8], Offload)) -> usize;
    /// Writes frames, each in its offload state (only states [`PortIo::offloads`] accepts; the
    /// pipeline finishes the rest); returns how many the kernel took.
    fn tx(&mut self, frames: &[(&[u8], Offload)]) -> std::io::Result<usize>;
    /// What the port carries besides plain frames (its virtio-net header's features).
    fn offloads(&self) -> Capabilities {
        Capabilities::NONE
    }
    /// Frames the kernel dropped for lack of receive buffer, or the ring clamped, since the
    /// last call.
    fn rx_kernel_drops(&mut self) -> u64 {
        0
    }
    /// Frames refused since the last call because their virtio-net header did not match them.
    fn rx_bad_offload(&mut self) -> u64 {
        0
    }
}

/// How often the loop collects the ports' kernel drop counters.
const KERNEL_STATS_EVERY: Duration = Duration::from_secs(1);

/// Work for the loop thread, sent by the control plane.
pub type Command = Box<dyn FnOnce(&mut Engine) + Send>;

/// A handle to send commands to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Command>,
    waker: std::sync::Arc<Waker>,
}

impl EngineHandle {
    /// Runs `f` on the loop thread and waits for its result. `None` if the loop has stopped.
    pub fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Option<T> {
        let (rtx, rrx) = crossbeam_channel::bounded(1);
        let cmd: Command = Box::new(move |e| {
            let _ = rtx.send(f(e));
        });
        self.tx.send(cmd).ok()?;
        self.waker.wake().ok()?;
        rrx.recv_timeout(Duration::from_secs(10)).ok()
    }
}

/// Per-port transmit error counts (the pipeline counted the frame as sent; the kernel refused).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct IoCounters {
    /// Frames the kernel did not take on transmit.
    pub tx_errors: u64,
    /// Wake-ups of the loop.
    pub wakeups: u64,
    /// Frames handed to another worker.
    pub handed_off: u64,
    /// Frames received from another worker.
    pub handed_in: u64,
    /// Batches processed.
    pub batches: u64,
}

/// One packet loop.
pub struct Engine {
    pipeline: Pipeline,
    ports: Vec<Option<Box<dyn PortIo>>>,
    poll: Poll,
    commands: Receiver<Command>,
    start: Instant,
    pool: Vec<Vec<u8>>,
    /// Buffers for frames longer than [`BUF_CAPACITY`] (super-frames), at most [`BIG_POOL`].
    big_pool: Vec<Vec<u8>>,
    /// Ports that returned a full batch: read again before sleeping.
    hot: Vec<usize>,
    running: bool,
    io: IoCounters,
    /// This worker's index and the group's size.
    worker: usize,
    workers: usize,
    /// Frames other workers handed to us.
    handoff_rx: Receiver<Packet>,
    /// Where to hand frames to each worker (index = worker), with the waker to ring.
    peers: Vec<(Sender<Packet>, std::sync::Arc<Waker>)>,
    /// When the ports' kernel counters were last collected (the loop's clock, ns).
    stats_at: u64,
}

impl Engine {
    /// An engine around `pipeline`, and the handle to command it.
    pub fn new(pipeline: Pipeline) -> std::io::Result<(Engine, EngineHandle)> {
        let mut group = Self::group(vec![pipeline])?;
        group
            .pop()
            .ok_or_else(|| std::io::Error::other("empty engine group"))
    }

    /// One engine per pipeline, wired to hand frames to each other; engine `i` is worker `i`.
    pub fn group(pipelines: Vec<Pipeline>) -> std::io::Result<Vec<(Engine, EngineHandle)>> {
        let workers = pipelines.len();
        let mut parts = Vec::with_capacity(workers);
        for pipeline in pipelines {
            let poll = Poll::new()?;
            let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKE)?);
            let (handoff_tx, handoff_rx) = crossbeam_channel::unbounded();
            parts.push((pipeline, poll, waker, handoff_tx, handoff_rx));
        }
        let peers: Vec<(Sender<Packet>, std::sync::Arc<Waker>)> = parts
            .iter()
            .map(|p| (p.3.clone(), std::sync::Arc::clone(&p.2)))
            .collect();
        let mut out = Vec::with_capacity(workers);
        for (worker, (pipeline, poll, waker, _, handoff_rx)) in parts.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let engine = Engine {
                pipeline,
                ports: Vec::new(),
                poll,
                commands: rx,
                start: Instant::now(),
                pool: Vec::new(),
                big_pool: Vec::new(),
                hot: Vec::new(),
                running: true,
                io: IoCounters::default(),
                worker,
                workers,
                handoff_rx,
                peers: peers.clone(),
                stats_at: 0,
            };
            out.push((engine, EngineHandle { tx, waker }));
        }
        Ok(out)
    }

    /// The pipeline (for status and dumps from commands).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The pipeline, mutably (to add or remove ports).
    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// Loop counters.
    pub fn io_counters(&self) -> IoCounters {
        self.io
    }

    /// Nanoseconds since the engine started: the pipeline's clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Serves `port` with `io` from now on.
    pub fn attach(&mut self, port: PortId, io: Box<dyn PortIo>) -> std::io::Result<()> {
        let idx = usize::from(port.0);
        let raw = io.fd().as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&raw), Token(idx), Interest::READABLE)?;
        if self.ports.len() <= idx {
            self.ports.resize_with(idx + 1, || None);
        }
        self.pipeline.set_port_offloads(port, io.offloads());
        self.ports[idx] = Some(io);
        // Level-triggered sources may already hold frames: read once without waiting.
        self.hot.push(idx);
        Ok(())
    }

    /// Stops serving `port`; returns its backend (dropping it closes the descriptor).
    pub fn detach(&mut self, port: PortId) -> Option<Box<dyn PortIo>> {
        let io = self.ports.get_mut(usize::from(port.0))?.take()?;
        let raw = io.fd().as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        self.hot.retain(|&p| p != usize::from(port.0));
        Some(io)
    }

    /// Asks the loop to return after the current iteration.
    pub fn stop(&mut self) {
        self.running = false;
    }

    /// Runs until [`Engine::stop`] is called by a command.
    pub fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut batch: Vec<Packet> = Vec::with_capacity(BATCH * 4);
        let mut out: Vec<Packet> = Vec::with_capacity(BATCH * 8);
        let mut ready: Vec<usize> = Vec::with_capacity(64);
        while self.running {
            // Housekeeping (ARP and conntrack timers) needs a tick even when idle.
            let timeout = if self.hot.is_empty() {
                Some(Duration::from_millis(100))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            self.io.wakeups += 1;
            ready.clear();
            ready.extend(self.hot.drain(..).filter(|&p| p != HANDOFF_PENDING));
            for ev in events.iter() {
                if ev.token() == WAKE {
                    continue;
                }
                if !ready.contains(&ev.token().0) {
                    ready.push(ev.token().0);
                }
            }
            self.run_commands();
            for &idx in &ready {
                self.read_port(idx, &mut batch);
            }
            // Frames other workers found to be ours.
            while batch.len() < BATCH * 16 {
                match self.handoff_rx.try_recv() {
                    Ok(p) => {
                        self.io.handed_in += 1;
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            if !self.handoff_rx.is_empty() {
                // More waiting: come back without sleeping.
                self.hot.push(HANDOFF_PENDING);
            }
            let now = self.now();
            // One clock read per batch serves the pipeline and this timer.
            if now.saturating_sub(self.stats_at) >= KERNEL_STATS_EVERY.as_nanos() as u64 {
                self.stats_at = now;
                for (idx, io) in self.ports.iter_mut().enumerate() {
                    if let Some(io) = io {
                        let drops = io.rx_kernel_drops();
                        if drops > 0 {
                            self.pipeline.count_port_io(PortId(idx as u16), drops, 0);
                        }
                        let bad = io.rx_bad_offload();
                        if bad > 0 {
                            self.pipeline.count_port_drops(
                                PortId(idx as u16),
                                switch::DropReason::BadOffload,
                                bad,
                            );
                        }
                    }
                }
            }
            self.pipeline.process(now, &mut batch, &mut out);
            self.io.batches += 1;
            self.transmit(&mut out);
        }
        Ok(())
    }

    fn run_commands(&mut self) {
        loop {
            match self.commands.try_recv() {
                Ok(cmd) => cmd(self),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    // Every handle is gone: nobody can ever stop us politely, so stop now.
                    self.running = false;
                    return;
                }
            }
        }
    }

    fn read_port(&mut self, idx: usize, batch: &mut Vec<Packet>) {
        let Some(Some(io)) = self.ports.get_mut(idx) else {
            return;
        };
        let pool = &mut self.pool;
        let big_pool = &mut self.big_pool;
        let port = PortId(idx as u16);
        let (me, workers) = (self.worker, self.workers);
        let topo = self.pipeline.topology();
        let peers = &self.peers;
        let counters = &mut self.io;
        // Workers to wake, as a bit set (no allocation per read); beyond 64 workers bits are
        // shared, which only costs a spurious wake-up.
        let mut woken = 0u64;
        let n = io.rx(BATCH, &mut |frame, offload| {
            let mut buf = if frame.len() > BUF_CAPACITY {
                big_pool
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(BIG_CAPACITY))
            } else {
                pool.pop()
                    .unwrap_or_else(|| Vec::with_capacity(BUF_CAPACITY))
            };
            buf.clear();
            buf.extend_from_slice(frame);
            match owner(topo, port, frame, workers) {
                Owner::Any => batch.push(Packet::with_offload(port, buf, offload)),
                Owner::Worker(w) if w == me => batch.push(Packet::with_offload(port, buf, offload)),
                Owner::Worker(w) => {
                    if let Some((tx, _)) = peers.get(w)
                        && tx.send(Packet::with_offload(port, buf, offload)).is_ok()
                    {
                        counters.handed_off += 1;
                        woken |= 1 << (w % 64);
                    }
                }
                Owner::All => {
                    for (w, (tx, _)) in peers.iter().enumerate() {
                        if w != me
                            && tx
                                .send(Packet::with_offload(port, buf.clone(), offload))
                                .is_ok()
                        {
                            counters.handed_off += 1;
                            woken |= 1 << (w % 64);
                        }
                    }
                    batch.push(Packet::with_offload(port, buf, offload));
                }
            }
        });
        for (w, (_, waker)) in self.peers.iter().enumerate() {
            if woken & (1 << (w % 64)) != 0 {
                let _ = waker.wake();
            }
        }
        if n >= BATCH {
            self.hot.push(idx);
        }
    }

    fn transmit(&mut self, out: &mut Vec<Packet>) {
        if out.is_empty() {
            return;
        }
        // Group by egress port, keeping each port's order.
        out.sort_by_key(|p| p.port);
        let mut start = 0;
        while start < out.len() {
            let port = out[start].port;
            let end = out[start..]
                .iter()
                .position(|p| p.port != port)
                .map_or(out.len(), |n| start + n);
            if let Some(Some(io)) = self.ports.get_mut(usize::from(port.0)) {
                let frames: Vec<(&[u8], Offload)> = out[start..end]
                    .iter()
                    .map(|p| (p.data.as_slice(), p.offload))
                    .collect();
                let sent = io.tx(&frames).unwrap_or(0);
                let failed = (frames.len() - sent.min(frames.len())) as u64;
                if failed > 0 {
                    self.io.tx_errors += failed;
                    self.pipeline.count_port_io(port, 0, failed);
                }
            }
            start = end;
        }
        for p in out.drain(..) {
            // Super-frames' buffers go to their own, small pool: thousands of 64 KB buffers
            // would pin hundreds of MB.
            if p.data.capacity() > BUF_CAPACITY {
                if self.big_pool.len() < BIG_POOL {
                    self.big_pool.push(p.data);
                }
            } else if self.pool.len() < 4096 {
                self.pool.push(p.data);
            }
        }
    }
}
