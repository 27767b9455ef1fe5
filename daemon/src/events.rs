//! `vswitch events`: what happens, as it happens, to every subscriber (`conntrack -E` and
//! `docker events` in one stream). Each event is one JSON object:
//!
//! - `{"type":"conntrack","event":"new"|"assured"|"destroyed","family":4|6,"entry":{...}}`,
//!   the entry as `conntrack ls` shows it (a destroyed one with its final packet and byte
//!   counts);
//! - `{"type":"container","action":"attach"|"detach","name","network","ip","port"}`;
//! - `{"type":"port","action":"up"|"down","port","network"}`;
//! - `{"type":"limit","reason","port","count"}`: drops for a limit (conntrack full, the
//!   per-source or per-destination caps, NAT ports, the ARP queue) in the last second;
//! - `{"type":"lost","count"}`: events this subscriber missed (it read too slowly, or a
//!   packet loop's queue was full).
//!
//! Every event carries `time` (seconds since the Unix epoch). Conntrack events are recorded
//! by the packet loops only while someone subscribes: the first subscriber turns them on, the
//! last one leaving turns them off. Nothing waits for a slow subscriber.

use crate::state::lock;
use datapath::engine::{EngineHandle, LoopEvent};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use switch::DropReason;

/// Events a subscriber may have waiting before it misses some.
const SUBSCRIBER_QUEUE: usize = 16_384;
/// Loop events waiting for the forwarder at most (per daemon).
const LOOP_QUEUE: usize = 65_536;
/// The drop reasons that mean a limit was hit.
const LIMITS: [DropReason; 5] = [
    DropReason::CtTableFull,
    DropReason::CtSourceLimit,
    DropReason::NatDestinationLimit,
    DropReason::PortsExhausted,
    DropReason::ArpQueueFull,
];

struct Subscriber {
    id: u64,
    tx: SyncSender<Value>,
    lost: Arc<AtomicU64>,
}

/// The subscribers, and whether the loops record conntrack events for them.
pub(crate) struct EventBus {
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
}

/// One subscriber's end: its events, and a count of those it missed.
pub(crate) struct Subscription {
    id: u64,
    rx: Receiver<Value>,
    lost: Arc<AtomicU64>,
}

impl Subscription {
    /// The next event, waiting up to `timeout`; a `lost` event first when some were missed.
    pub(crate) fn next(&self, timeout: Duration) -> Option<Value> {
        let lost = self.lost.swap(0, Ordering::Relaxed);
        if lost > 0 {
            return Some(stamped(json!({ "type": "lost", "count": lost })));
        }
        self.rx.recv_timeout(timeout).ok()
    }
}

fn stamped(mut v: Value) -> Value {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    v["time"] = json!(now.as_secs_f64());
    v
}

impl EventBus {
    pub(crate) fn new() -> Arc<EventBus> {
        Arc::new(EventBus {
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// Sends `event` (stamped with the time) to every subscriber; one that is full misses it
    /// (counted), one that is gone is dropped.
    pub(crate) fn publish(&self, event: Value) {
        let mut subs = lock(&self.subscribers);
        if subs.is_empty() {
            return;
        }
        let event = stamped(event);
        subs.retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.lost.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// A new subscriber. The first one turns conntrack events on in every loop and starts the
    /// thread that forwards them (and watches the limit counters).
    pub(crate) fn subscribe(self: &Arc<Self>, engines: &[EngineHandle]) -> Subscription {
        let (tx, rx) = std::sync::mpsc::sync_channel(SUBSCRIBER_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lost = Arc::new(AtomicU64::new(0));
        let mut subs = lock(&self.subscribers);
        if subs.is_empty() {
            self.start_loops(engines);
        }
        subs.push(Subscriber {
            id,
            tx,
            lost: Arc::clone(&lost),
        });
        Subscription { id, rx, lost }
    }

    /// Removes a subscriber; the last one turns the loops' events off (which ends the
    /// forwarder).
    pub(crate) fn unsubscribe(&self, s: Subscription, engines: &[EngineHandle]) {
        let mut subs = lock(&self.subscribers);
        subs.retain(|x| x.id != s.id);
        if subs.is_empty() {
            for e in engines {
                let _ = e.call(|e| e.set_event_sink(None));
            }
        }
    }

    fn start_loops(self: &Arc<Self>, engines: &[EngineHandle]) {
        let (tx, rx) = crossbeam_channel::bounded(LOOP_QUEUE);
        for e in engines {
            let tx = tx.clone();
            let _ = e.call(move |e| e.set_event_sink(Some(tx)));
        }
        // The loops hold the only senders: when they drop them, the forwarder ends.
        drop(tx);
        let bus = Arc::clone(self);
        let engines = engines.to_vec();
        let spawned = std::thread::Builder::new()
            .name("vswitch-events".into())
            .spawn(move || forward(&bus, &rx, &engines));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the events thread: {e}");
        }
    }
}

/// Publishes a container's attach or detach, and its port's up or down.
pub(crate) fn container(bus: &EventBus, attached: bool, c: &crate::state::Container) {
    bus.publish(json!({
        "type": "container",
        "action": if attached { "attach" } else { "detach" },
        "name": c.name,
        "network": c.network,
        "ip": c.ip,
        "ip6": c.ip6,
        "port": c.port,
    }));
    bus.publish(json!({
        "type": "port",
        "action": if attached { "up" } else { "down" },
        "port": c.port,
        "network": c.network,
    }));
}

/// Forwards the loops' conntrack events and, once a second, the limits hit.
fn forward(bus: &EventBus, rx: &crossbeam_channel::Receiver<LoopEvent>, engines: &[EngineHandle]) {
    let mut limits_at = Instant::now();
    let mut last: Option<HashMap<(String, DropReason), u64>> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => bus.publish(loop_event(e)),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
        if limits_at.elapsed() >= Duration::from_secs(1) {
            limits_at = Instant::now();
            let now = limit_drops(engines);
            if let Some(before) = &last {
                for ((port, reason), n) in &now {
                    let delta = n - before
                        .get(&(port.clone(), *reason))
                        .copied()
                        .unwrap_or(0)
                        .min(*n);
                    if delta > 0 {
                        bus.publish(json!({
                            "type": "limit",
                            "reason": reason.as_str(),
                            "port": port,
                            "count": delta,
                        }));
                    }
                }
            }
            last = Some(now);
        }
    }
}

fn loop_event(e: LoopEvent) -> Value {
    match e {
        LoopEvent::V4(e) => {
            json!({"type": "conntrack", "event": e.kind, "family": 4, "entry": e.entry})
        }
        LoopEvent::V6(e) => {
            json!({"type": "conntrack", "event": e.kind, "family": 6, "entry": e.entry})
        }
        LoopEvent::Lost(n) => json!({"type": "lost", "count": n}),
    }
}

/// Drops for each limit reason, per port name, summed over the loops.
fn limit_drops(engines: &[EngineHandle]) -> HashMap<(String, DropReason), u64> {
    let mut all = HashMap::new();
    for e in engines {
        let counts = e.call(|e| {
            let p = e.pipeline();
            let mut v = Vec::new();
            for (id, port) in p.topology().active_ports() {
                if let Some(c) = p.port_counters(id) {
                    for r in LIMITS {
                        let n = c.drops.get(r);
                        if n > 0 {
                            v.push(((port.name.clone(), r), n));
                        }
                    }
                }
            }
            v
        });
        for (k, n) in counts.unwrap_or_default() {
            *all.entry(k).or_insert(0) += n;
        }
    }
    all
}
