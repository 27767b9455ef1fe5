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

use crate::capture::{Direction, Tap, Taps};
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
    /// Receives frames for every MAC (`on`: the interface in promiscuous mode while the port
    /// holds it) or only the interface's own again; ports that have no such mode ignore it.
    fn set_promiscuous(&mut self, _on: bool) -> std::io::Result<()> {
        Ok(())
    }
}

/// How often the loop collects the ports' kernel drop counters (of the ports read since).
const KERNEL_STATS_EVERY: Duration = Duration::from_secs(1);

/// A frame handed to another worker, with the generation of its ingress port's slot when it
/// was read (see [`switch::config::Port::generation`]).
type Handoff = (Packet, u32);

/// A conntrack event of one loop, for `vswitch events`.
#[derive(Clone, Copy, Debug)]
pub enum LoopEvent {
    /// An IPv4 entry's event.
    V4(conntrack::Event<std::net::Ipv4Addr>),
    /// An IPv6 entry's event.
    V6(conntrack::Event<std::net::Ipv6Addr>),
    /// Events lost since the last: the table's pending list or the channel was full.
    Lost(u64),
}

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
    /// Batches of at least one frame processed (the pipeline also runs empty, for its timers).
    pub batches: u64,
    /// Frames processed (read, or handed in): over `batches`, the mean batch size.
    pub frames: u64,
    /// Nanoseconds spent working (from the wake-up to the end of transmit): over wall time,
    /// the loop's utilisation.
    pub busy_ns: u64,
    /// Handed-in frames dropped because their port was removed and its id reused since they
    /// were read: they are the old container's, not the new one's.
    pub handed_stale: u64,
}

/// One packet loop.
pub struct Engine {
    pipeline: Pipeline,
    ports: Vec<Option<Box<dyn PortIo>>>,
    poll: Poll,
    commands: Receiver<Command>,
    start: Instant,
    /// Added to the time since `start` (see [`Engine::set_clock_base`]).
    clock_base: u64,
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
    handoff_rx: Receiver<Handoff>,
    /// Where to hand frames to each worker (index = worker), with the waker to ring.
    peers: Vec<(Sender<Handoff>, std::sync::Arc<Waker>)>,
    /// When the ports' kernel counters were last collected (the loop's clock, ns).
    stats_at: u64,
    /// Ports read since then, each once (`stats_due[port]` says whether it is listed).
    stats_ports: Vec<usize>,
    stats_due: Vec<bool>,
    /// Live captures (see [`crate::capture`]).
    taps: Taps,
    /// Where conntrack events go while someone listens (`vswitch events`).
    events: Option<Sender<LoopEvent>>,
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
        let peers: Vec<(Sender<Handoff>, std::sync::Arc<Waker>)> = parts
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
                clock_base: 0,
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
                stats_ports: Vec::new(),
                stats_due: Vec::new(),
                taps: Taps::default(),
                events: None,
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

    /// Nanoseconds since the engine started, plus the clock base (0 unless set): the
    /// pipeline's clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(self.clock_base)
    }

    /// Starts the clock at `base` instead of 0, before the loop runs: state restored from a
    /// previous run (conntrack entries created up to `base` ago) then keeps its times without
    /// going below 0. Nothing in the pipeline depends on where the clock starts.
    pub fn set_clock_base(&mut self, base: u64) {
        self.clock_base = base;
        self.stats_at = self.now();
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

    /// Puts `port`'s interface in promiscuous mode (`on`) or takes it out (see
    /// [`PortIo::set_promiscuous`]); a port without I/O in this loop is left alone.
    ///
    /// # Errors
    /// What the port's backend says.
    pub fn set_promiscuous(&mut self, port: PortId, on: bool) -> std::io::Result<()> {
        match self.ports.get_mut(usize::from(port.0)) {
            Some(Some(io)) => io.set_promiscuous(on),
            _ => Ok(()),
        }
    }

    /// Stops serving `port`; returns its backend (dropping it closes the descriptor).
    pub fn detach(&mut self, port: PortId) -> Option<Box<dyn PortIo>> {
        let io = self.ports.get_mut(usize::from(port.0))?.take()?;
        let raw = io.fd().as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        self.hot.retain(|&p| p != usize::from(port.0));
        Some(io)
    }

    /// Installs a live capture on this loop.
    pub fn add_tap(&mut self, tap: Tap) {
        self.taps.add(tap);
    }

    /// Removes capture `id`; whether it was installed.
    pub fn remove_tap(&mut self, id: u64) -> bool {
        self.taps.remove(id)
    }

    /// Sends conntrack events to `sink` from now on (`None`: stop recording them). The sink
    /// is bounded: what does not fit is counted and reported as [`LoopEvent::Lost`].
    pub fn set_event_sink(&mut self, sink: Option<Sender<LoopEvent>>) {
        self.pipeline.set_conntrack_events(sink.is_some());
        self.events = sink;
    }

    /// Hands the batch's conntrack events to the sink, never waiting for it.
    fn send_events(&mut self) {
        let Some(tx) = &self.events else { return };
        let lost = std::cell::Cell::new(0u64);
        let send = |e: LoopEvent| {
            if tx.try_send(e).is_err() {
                lost.set(lost.get() + 1);
            }
        };
        let dropped = self
            .pipeline
            .drain_conntrack_events(|e| send(LoopEvent::V4(e)), |e| send(LoopEvent::V6(e)));
        let lost = lost.get() + dropped;
        if lost > 0 {
            let _ = tx.try_send(LoopEvent::Lost(lost));
        }
    }

    /// Asks the loop to return once the commands queued now have run, before it reads or
    /// processes another frame (so a state export made by a command just before is the last
    /// word: frames still queued in the kernel stay there).
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
            // One clock read at the wake-up serves the pipeline, the stats timer and the busy
            // time; one more at the end of the iteration.
            let woke = self.now();
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
            if !self.running {
                break;
            }
            self.taps.start_batch();
            for &idx in &ready {
                self.read_port(idx, &mut batch);
            }
            self.take_handoffs(&mut batch);
            if !self.handoff_rx.is_empty() {
                // More waiting: come back without sleeping.
                self.hot.push(HANDOFF_PENDING);
            }
            let now = woke;
            if now.saturating_sub(self.stats_at) >= KERNEL_STATS_EVERY.as_nanos() as u64 {
                self.stats_at = now;
                self.collect_port_stats();
            }
            self.io.frames += batch.len() as u64;
            self.io.batches += u64::from(!batch.is_empty());
            self.pipeline.process(now, &mut batch, &mut out);
            if self.events.is_some() {
                self.send_events();
            }
            self.transmit(&mut out);
            self.io.busy_ns += self.now().saturating_sub(woke);
        }
        Ok(())
    }

    /// Adds the kernel's drop counts of the ports read since the last collection to the
    /// pipeline's counters: one `getsockopt` per busy port, not one per attached port (2,000
    /// a second at 1,000 idle containers and two workers). Exact all the same: the kernel
    /// drops a frame only when the socket's queue (or ring) is full, so the socket is readable
    /// and the loop reads it, which lists the port; frames refused for a bad virtio-net header
    /// are counted by the read itself. What a read left uncollected is collected the next time
    /// the port is read (the counters are cumulative until collected).
    fn collect_port_stats(&mut self) {
        for idx in self.stats_ports.drain(..) {
            if let Some(due) = self.stats_due.get_mut(idx) {
                *due = false;
            }
            let Some(Some(io)) = self.ports.get_mut(idx) else {
                continue;
            };
            // Slots are port ids, so below 65,536.
            let port = PortId(idx as u16);
            let drops = io.rx_kernel_drops();
            if drops > 0 {
                self.pipeline.count_port_io(port, drops, 0);
            }
            let bad = io.rx_bad_offload();
            if bad > 0 {
                self.pipeline
                    .count_port_drops(port, switch::DropReason::BadOffload, bad);
            }
        }
    }

    /// Frames other workers found to be ours, but those read from a port since removed whose
    /// id went to a new port (the workers add and remove ports one after another, so another
    /// worker may still have been reading the old port while this one attached the new).
    fn take_handoffs(&mut self, batch: &mut Vec<Packet>) {
        while batch.len() < BATCH * 16 {
            let Ok((p, generation)) = self.handoff_rx.try_recv() else {
                return;
            };
            self.io.handed_in += 1;
            let port = self.pipeline.topology().port(p.port);
            if port.is_some_and(|port| port.generation != generation) {
                self.io.handed_stale += 1;
                self.recycle(p.data);
            } else {
                batch.push(p);
            }
        }
    }

    /// Lists `idx` for the next collection of kernel counters.
    fn stats_due(&mut self, idx: usize) {
        if self.stats_due.len() <= idx {
            self.stats_due.resize(idx + 1, false);
        }
        if !self.stats_due[idx] {
            self.stats_due[idx] = true;
            self.stats_ports.push(idx);
        }
    }

    /// Returns a frame's buffer to its pool.
    fn recycle(&mut self, data: Vec<u8>) {
        // Super-frames' buffers go to their own, small pool: thousands of 64 KB buffers
        // would pin hundreds of MB.
        if data.capacity() > BUF_CAPACITY {
            if self.big_pool.len() < BIG_POOL {
                self.big_pool.push(data);
            }
        } else if self.pool.len() < 4096 {
            self.pool.push(data);
        }
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
        let generation = topo.port(port).map_or(0, |p| p.generation);
        let peers = &self.peers;
        let counters = &mut self.io;
        let taps = &mut self.taps;
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
            if !taps.is_empty() {
                taps.offer(topo, port, Direction::In, frame);
            }
            match owner(topo, port, frame, workers) {
                Owner::Any => batch.push(Packet::with_offload(port, buf, offload)),
                Owner::Worker(w) if w == me => batch.push(Packet::with_offload(port, buf, offload)),
                Owner::Worker(w) => {
                    if let Some((tx, _)) = peers.get(w)
                        && tx
                            .send((Packet::with_offload(port, buf, offload), generation))
                            .is_ok()
                    {
                        counters.handed_off += 1;
                        woken |= 1 << (w % 64);
                    }
                }
                Owner::All => {
                    for (w, (tx, _)) in peers.iter().enumerate() {
                        if w != me
                            && tx
                                .send((
                                    Packet::with_offload(port, buf.clone(), offload),
                                    generation,
                                ))
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
        self.stats_due(idx);
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
            if !self.taps.is_empty() {
                let topo = self.pipeline.topology();
                for p in &out[start..end] {
                    self.taps.offer(topo, port, Direction::Out, &p.data);
                }
            }
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
            self.recycle(p.data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use switch::{Config, PortAddress, PortKind};

    /// A port that reads nothing and reports the kernel drops it is told to.
    struct Fake {
        sock: UnixDatagram,
        /// Drops the kernel would report at the next `rx_kernel_drops`.
        drops: Arc<AtomicU64>,
        /// `rx_kernel_drops` calls, for all fakes together.
        calls: Arc<AtomicU64>,
    }

    impl PortIo for Fake {
        fn fd(&self) -> BorrowedFd<'_> {
            self.sock.as_fd()
        }
        fn rx(&mut self, _max: usize, _f: &mut dyn FnMut(&[u8], Offload)) -> usize {
            0
        }
        fn tx(&mut self, frames: &[(&[u8], Offload)]) -> std::io::Result<usize> {
            Ok(frames.len())
        }
        fn rx_kernel_drops(&mut self) -> u64 {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.drops.swap(0, Ordering::Relaxed)
        }
    }

    fn lan(ports: usize) -> Pipeline {
        let topo = testkit::topology::lan(ports).build();
        Pipeline::new(&Config::from_toml(&topo).unwrap()).unwrap()
    }

    #[test]
    fn kernel_counters_are_read_for_busy_ports_only_and_add_up() {
        let (mut e, _handle) = Engine::new(lan(1000)).unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let mut drops = Vec::new();
        for i in 0..1000u16 {
            let d = Arc::new(AtomicU64::new(0));
            let (sock, _) = UnixDatagram::pair().unwrap();
            let io = Fake {
                sock,
                drops: Arc::clone(&d),
                calls: Arc::clone(&calls),
            };
            e.attach(PortId(i), Box::new(io)).unwrap();
            drops.push(d);
        }
        let mut batch = Vec::new();
        e.collect_port_stats();
        assert_eq!(calls.load(Ordering::Relaxed), 0, "idle ports cost nothing");
        drops[3].store(5, Ordering::Relaxed);
        for idx in [3, 7, 3] {
            e.read_port(idx, &mut batch);
        }
        e.collect_port_stats();
        assert_eq!(calls.load(Ordering::Relaxed), 2, "ports 3 and 7, once each");
        let kernel = |e: &Engine, p: u16| {
            e.pipeline()
                .port_counters(PortId(p))
                .unwrap()
                .rx_kernel_drops
        };
        assert_eq!(kernel(&e, 3), 5);
        // Drops after the collection wait for the port's next read (a full queue is readable).
        drops[3].store(4, Ordering::Relaxed);
        e.collect_port_stats();
        assert_eq!((calls.load(Ordering::Relaxed), kernel(&e, 3)), (2, 5));
        e.read_port(3, &mut batch);
        e.collect_port_stats();
        assert_eq!((calls.load(Ordering::Relaxed), kernel(&e, 3)), (3, 9));
        // A detached port is skipped, and its slot may be listed again after reuse.
        e.read_port(7, &mut batch);
        let _ = e.detach(PortId(7));
        e.collect_port_stats();
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn frames_handed_over_from_a_removed_port_do_not_reach_its_successor() {
        let mut group = Engine::group(vec![lan(2), lan(2)]).unwrap();
        let (mut w1, _h1) = group.pop().unwrap();
        let (mut w0, _h0) = group.pop().unwrap();
        let frame = |port: u16| Packet::new(PortId(port), vec![port as u8; 60]);
        // Worker 1 read these (port generations 1) and handed them to worker 0...
        let to_w0 = &w1.peers[0].0;
        to_w0.send((frame(0), 1)).unwrap();
        to_w0.send((frame(1), 1)).unwrap();
        // ... which meanwhile removed port 0 and gave its id to a new container.
        let net = w0.pipeline().topology().network_by_name("lan").unwrap();
        assert!(w0.pipeline_mut().remove_port(PortId(0)));
        let id = w0
            .pipeline_mut()
            .add_port("new", PortKind::AfPacket, net, PortAddress::default())
            .unwrap();
        assert_eq!(id, PortId(0));
        let mut batch = Vec::new();
        w0.take_handoffs(&mut batch);
        assert_eq!(batch, vec![frame(1)]);
        assert_eq!((w0.io.handed_in, w0.io.handed_stale), (2, 1));
        // The new port's own frames, read by a worker that has it too, pass.
        w1.pipeline_mut().remove_port(PortId(0));
        w1.pipeline_mut()
            .add_port("new", PortKind::AfPacket, net, PortAddress::default())
            .unwrap();
        w1.peers[0].0.send((frame(0), 2)).unwrap();
        batch.clear();
        w0.take_handoffs(&mut batch);
        assert_eq!(batch, vec![frame(0)]);
    }
}
