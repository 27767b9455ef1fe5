//! Events of the table, as `conntrack -E` reports them: an entry created, assured, destroyed
//! (with its packet and byte counts). Off by default; while off the table pays one `is_some`
//! test per insert, per assured transition and per removal. Recorded events wait in the table
//! until the caller drains them (once per batch); past [`MAX_PENDING_EVENTS`] they are counted
//! as lost instead.

use super::slot::{CHUNK_BITS, NIL};
use super::{Conntrack, Entry};
use crate::address::Address;

/// Events kept between two drains at most.
pub const MAX_PENDING_EVENTS: usize = 8192;

/// What happened to an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Created by the first packet of a connection.
    New,
    /// Became a real two-way connection (never early-dropped from now on).
    Assured,
    /// Removed: expired, closed and reclaimed, early-dropped, flushed or its address gone.
    Destroyed,
}

/// One event, with the entry as it was then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Event<A: Address> {
    /// What happened.
    pub kind: EventKind,
    /// The entry (for `Destroyed`, its final counts).
    pub entry: Entry<A>,
}

/// The table's event log.
#[derive(Clone, Debug)]
pub(super) struct EventLog<A: Address> {
    /// Each with its slot, to bring a `New` up to date (see `refresh_new`).
    pending: Vec<(u32, Event<A>)>,
    lost: u64,
}

impl<A: Address> EventLog<A> {
    fn new() -> Self {
        EventLog {
            pending: Vec::new(),
            lost: 0,
        }
    }
}

impl<A: Address> Conntrack<A> {
    /// Starts (or stops, dropping what is pending) recording events.
    pub fn set_events(&mut self, on: bool) {
        self.events = on.then(EventLog::new);
    }

    /// Whether events are recorded.
    pub fn events_on(&self) -> bool {
        self.events.is_some()
    }

    /// Hands every pending event to `f`, oldest first; then how many were lost (not recorded
    /// because too many were pending) since the last drain.
    pub fn drain_events(&mut self, mut f: impl FnMut(Event<A>)) -> u64 {
        let Some(log) = self.events.as_mut() else {
            return 0;
        };
        for (_, e) in log.pending.drain(..) {
            f(e);
        }
        std::mem::take(&mut log.lost)
    }

    /// The entry in slot `idx` when events are on and it is live; with the log to write to.
    fn for_event(&mut self, idx: u32) -> Option<(Entry<A>, &mut EventLog<A>)> {
        self.events.as_ref()?;
        let entry = self
            .slot(idx)
            .filter(|s| s.is_live())
            .map(|s| self.entry_at(idx, s))?;
        Some((entry, self.events.as_mut()?))
    }

    /// Records every stored entry (expired ones not yet reclaimed included) as destroyed, when
    /// events are on: the table is about to be flushed.
    pub(super) fn record_all_destroyed(&mut self) {
        if self.events.is_none() {
            return;
        }
        let live: Vec<u32> = (self.chunks.iter().enumerate())
            .flat_map(|(c, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_live())
                    .map(move |(o, _)| u32::try_from(c << CHUNK_BITS | o).unwrap_or(NIL))
            })
            .collect();
        for idx in live {
            self.record(EventKind::Destroyed, idx);
        }
    }

    /// Records `kind` for the entry in slot `idx`, when events are on.
    pub(super) fn record(&mut self, kind: EventKind, idx: u32) {
        if let Some((entry, log)) = self.for_event(idx) {
            if log.pending.len() < MAX_PENDING_EVENTS {
                log.pending.push((idx, Event { kind, entry }));
            } else {
                log.lost += 1;
            }
        }
    }

    /// Brings the pending `New` event of slot `idx` up to date after the packet that created
    /// it was tracked (`conntrack -E` shows a new TCP entry in SYN_SENT, not before its SYN).
    pub(super) fn refresh_new(&mut self, idx: u32) {
        let Some((entry, log)) = self.for_event(idx) else {
            return;
        };
        if let Some((_, e)) = log
            .pending
            .iter_mut()
            .rev()
            .find(|(i, e)| *i == idx && e.kind == EventKind::New)
        {
            e.entry = entry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Direction, TcpSegment, Tuple};
    use packet::L4Proto;
    use std::net::Ipv4Addr;

    fn tuple(sport: u16) -> Tuple {
        Tuple::new(
            L4Proto::Udp,
            Ipv4Addr::new(10, 0, 0, 2),
            sport,
            Ipv4Addr::new(10, 0, 0, 3),
            53,
        )
    }

    fn kinds(ct: &mut Conntrack) -> Vec<(EventKind, u64)> {
        let mut v = Vec::new();
        ct.drain_events(|e| v.push((e.kind, e.entry.packets[0] + e.entry.packets[1])));
        v
    }

    #[test]
    fn new_assured_and_destroyed_in_order_with_counts() {
        let mut ct = Conntrack::new(Config::default());
        let t = tuple(4000);
        let id = ct.insert(t, t.reversed(), 0, 1).unwrap();
        assert!(kinds(&mut ct).is_empty(), "off by default");
        ct.remove(id);
        ct.set_events(true);
        let id = ct.insert(t, t.reversed(), 0, 2).unwrap();
        for (dir, now) in [
            (Direction::Original, 3),
            (Direction::Reply, 4),
            (Direction::Original, 5),
            (Direction::Original, 6),
        ] {
            ct.track(id, dir, None::<&TcpSegment>, 100, now);
        }
        ct.remove(id);
        assert_eq!(
            kinds(&mut ct),
            [
                (EventKind::New, 1),
                (EventKind::Assured, 3),
                (EventKind::Destroyed, 4)
            ],
            "new with its first packet, assured once, on the packet after the reply"
        );
        // Expiry and flush destroy too.
        ct.insert(tuple(1), tuple(1).reversed(), 0, 10).unwrap();
        ct.insert(tuple(2), tuple(2).reversed(), 0, 10).unwrap();
        ct.expire(u64::MAX / 2, 1);
        ct.flush();
        let k: Vec<EventKind> = kinds(&mut ct).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            k,
            [
                EventKind::New,
                EventKind::New,
                EventKind::Destroyed,
                EventKind::Destroyed
            ]
        );
    }

    #[test]
    fn too_many_pending_are_counted_as_lost() {
        let mut ct = Conntrack::new(Config::default());
        ct.set_events(true);
        for p in 0..(MAX_PENDING_EVENTS as u16 + 5) {
            ct.insert(tuple(p), tuple(p).reversed(), 0, 1).unwrap();
        }
        let mut n = 0;
        let lost = ct.drain_events(|_| n += 1);
        assert_eq!((n, lost), (MAX_PENDING_EVENTS, 5));
        assert_eq!(ct.drain_events(|_| {}), 0);
        ct.set_events(false);
        assert!(!ct.events_on());
    }
}
