//! RFC 4787 endpoint-independent mapping (EIM) for UDP.
//!
//! RFC 4787 REQ-1: "A NAT MUST have an 'Endpoint-Independent Mapping' behavior": once an
//! internal endpoint (address, port) has been given an external port, every packet from it
//! reuses that port, whatever the remote, for as long as the mapping lives. This table holds
//! those mappings; conntrack still holds the per-remote flows.
//!
//! Time is the caller's: `now` is a monotonic clock in nanoseconds. A mapping expires `timeout`
//! ns after its last use (REQ-5 asks for at least 2 minutes for UDP). REQ-6: outbound packets
//! MUST refresh a mapping, so the caller calls [`EimTable::touch`] on outbound packets (and may on
//! inbound ones). Lookups are reads: they never refresh.
//!
//! Invariants:
//! - an expired mapping is never returned, even before it is reaped (expiry is checked on every
//!   lookup), so correctness never depends on how often [`EimTable::expire`] runs;
//! - `by_external[p] == e` if and only if `by_internal[e].port == p`: one external port belongs to
//!   at most one internal endpoint;
//! - every mapping has exactly one node in the expiry queue carrying its generation; nodes of
//!   removed or replaced mappings are stale and dropped when they reach the front. Expiry never
//!   scans the table: it pops from the front of the queue, within a budget.
//! - the queue is ordered by insertion, and a refreshed mapping is re-queued with its last-use
//!   stamp when it reaches the front, so a mapping may stay in memory up to about one timeout
//!   after it expired (invisible to lookups) when refreshes interleave.

use crate::Endpoint;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Mapping {
    port: u16,
    last_used: u64,
    generation: u64,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    internal: Endpoint,
    stamp: u64,
    generation: u64,
}

/// Endpoint-independent mappings: internal (address, port) to external port, with expiry.
#[derive(Debug, Default)]
pub struct EimTable {
    timeout_ns: u64,
    by_internal: FxHashMap<Endpoint, Mapping>,
    by_external: FxHashMap<u16, Endpoint>,
    queue: VecDeque<Node>,
    next_generation: u64,
}

impl EimTable {
    /// An empty table whose mappings expire `timeout_ns` after their last use.
    pub fn new(timeout_ns: u64) -> Self {
        Self {
            timeout_ns,
            ..Self::default()
        }
    }

    /// The idle timeout in nanoseconds.
    #[inline]
    pub fn timeout_ns(&self) -> u64 {
        self.timeout_ns
    }

    #[inline]
    fn live(&self, m: &Mapping, now: u64) -> bool {
        now.saturating_sub(m.last_used) < self.timeout_ns
    }

    /// The external port of `internal`'s live mapping, if any. Does not refresh it.
    #[inline]
    pub fn lookup(&self, internal: Endpoint, now: u64) -> Option<u16> {
        let m = self.by_internal.get(&internal)?;
        self.live(m, now).then_some(m.port)
    }

    /// The internal endpoint whose live mapping uses `ext_port`, if any. Does not refresh it.
    #[inline]
    pub fn reverse(&self, ext_port: u16, now: u64) -> Option<Endpoint> {
        let internal = *self.by_external.get(&ext_port)?;
        let m = self.by_internal.get(&internal)?;
        (m.port == ext_port && self.live(m, now)).then_some(internal)
    }

    /// Marks `internal`'s mapping as used at `now`. Returns false (and does nothing) if it has no
    /// live mapping: an expired mapping is not revived.
    #[inline]
    pub fn touch(&mut self, internal: Endpoint, now: u64) -> bool {
        let timeout = self.timeout_ns;
        match self.by_internal.get_mut(&internal) {
            Some(m) if now.saturating_sub(m.last_used) < timeout => {
                m.last_used = m.last_used.max(now);
                true
            }
            _ => false,
        }
    }

    /// Maps `internal` to `ext_port`, used at `now`, replacing any mapping `internal` had.
    ///
    /// The caller picks `ext_port` with [`crate::allocate_port`], whose `is_taken` should consult
    /// [`EimTable::reverse`]. If another endpoint still had a live mapping on `ext_port`, that
    /// mapping is removed and the endpoint returned (it would otherwise receive this one's
    /// traffic); an expired one is removed silently.
    pub fn insert(&mut self, internal: Endpoint, ext_port: u16, now: u64) -> Option<Endpoint> {
        let mut displaced = None;
        let owner = self.by_external.get(&ext_port).copied();
        if let Some(other) = owner.filter(|&o| o != internal) {
            let old = self.by_internal.remove(&other);
            if old.is_some_and(|m| self.live(&m, now)) {
                displaced = Some(other);
            }
        }
        match self.by_internal.get_mut(&internal) {
            Some(m) => {
                if m.port != ext_port && self.by_external.get(&m.port) == Some(&internal) {
                    self.by_external.remove(&m.port);
                }
                m.port = ext_port;
                m.last_used = now;
                // Its queue node (same generation) stays; it is re-queued when it is due.
            }
            None => {
                let generation = self.next_generation;
                self.next_generation = self.next_generation.wrapping_add(1);
                self.by_internal.insert(
                    internal,
                    Mapping {
                        port: ext_port,
                        last_used: now,
                        generation,
                    },
                );
                self.queue.push_back(Node {
                    internal,
                    stamp: now,
                    generation,
                });
            }
        }
        self.by_external.insert(ext_port, internal);
        displaced
    }

    /// Removes `internal`'s mapping (live or not) and returns its external port.
    pub fn remove(&mut self, internal: Endpoint) -> Option<u16> {
        let m = self.by_internal.remove(&internal)?;
        if self.by_external.get(&m.port) == Some(&internal) {
            self.by_external.remove(&m.port);
        }
        Some(m.port)
    }

    /// Removes every mapping of internal address `addr` (its container went away); how many.
    pub fn remove_address(&mut self, addr: std::net::Ipv4Addr) -> usize {
        let doomed: Vec<Endpoint> = self
            .by_internal
            .keys()
            .filter(|e| e.addr == addr)
            .copied()
            .collect();
        doomed
            .into_iter()
            .filter(|&e| self.remove(e).is_some())
            .count()
    }

    /// Reaps mappings that expired by `now`, looking at no more than `budget` queue nodes, and
    /// returns how many mappings it removed. Call it periodically with a small budget; it stops
    /// early at the first node that is not due.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            let Some(&node) = self.queue.front() else {
                break;
            };
            let current = self
                .by_internal
                .get(&node.internal)
                .filter(|m| m.generation == node.generation)
                .copied();
            let Some(m) = current else {
                // Stale: the mapping was removed or replaced since this node was queued.
                self.queue.pop_front();
                continue;
            };
            if now.saturating_sub(node.stamp) < self.timeout_ns {
                break;
            }
            self.queue.pop_front();
            if self.live(&m, now) {
                // Refreshed since it was queued: wait again from its last use.
                self.queue.push_back(Node {
                    stamp: m.last_used,
                    ..node
                });
            } else {
                self.remove(node.internal);
                removed += 1;
            }
        }
        removed
    }

    /// Number of mappings held, including expired ones not yet reaped by [`EimTable::expire`].
    #[inline]
    pub fn len(&self) -> usize {
        self.by_internal.len()
    }

    /// Whether the table holds no mapping.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.by_internal.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::Ipv4Addr;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::new(10, 0, 0, last), port)
    }

    #[test]
    fn mapping_is_reused_within_timeout() {
        let mut t = EimTable::new(120 * SEC);
        assert_eq!(t.lookup(ep(2, 5000), 0), None);
        assert_eq!(t.insert(ep(2, 5000), 40000, 0), None);
        assert_eq!(t.lookup(ep(2, 5000), 60 * SEC), Some(40000));
        assert!(t.touch(ep(2, 5000), 100 * SEC));
        // 200 s after insertion but 100 s after last use: still there.
        assert_eq!(t.lookup(ep(2, 5000), 200 * SEC), Some(40000));
        assert_eq!(t.expire(200 * SEC, 16), 0);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn mapping_expires_after_timeout() {
        let mut t = EimTable::new(120 * SEC);
        t.insert(ep(2, 5000), 40000, 10 * SEC);
        assert_eq!(t.lookup(ep(2, 5000), 129 * SEC), Some(40000));
        assert_eq!(t.lookup(ep(2, 5000), 130 * SEC), None);
        assert_eq!(t.reverse(40000, 130 * SEC), None);
        assert!(
            !t.touch(ep(2, 5000), 130 * SEC),
            "an expired mapping is not revived"
        );
        assert_eq!(t.len(), 1, "not reaped yet");
        assert_eq!(t.expire(130 * SEC, 16), 1);
        assert!(t.is_empty());
        assert_eq!(t.reverse(40000, 130 * SEC), None);
    }

    #[test]
    fn remove_address_drops_only_that_address() {
        let mut t = EimTable::new(120 * SEC);
        t.insert(ep(2, 5000), 40000, 0);
        t.insert(ep(2, 5001), 40001, 0);
        t.insert(ep(3, 5000), 40002, 0);
        assert_eq!(t.remove_address(Ipv4Addr::new(10, 0, 0, 2)), 2);
        assert_eq!(t.len(), 1);
        assert_eq!(t.reverse(40000, 1), None);
        assert_eq!(t.reverse(40002, 1), Some(ep(3, 5000)));
        assert_eq!(t.remove_address(Ipv4Addr::new(10, 0, 0, 2)), 0);
    }

    #[test]
    fn reverse_lookup() {
        let mut t = EimTable::new(120 * SEC);
        t.insert(ep(2, 5000), 40000, 0);
        t.insert(ep(3, 5000), 40001, 0);
        assert_eq!(t.reverse(40000, 1), Some(ep(2, 5000)));
        assert_eq!(t.reverse(40001, 1), Some(ep(3, 5000)));
        assert_eq!(t.reverse(40002, 1), None);
        // Remapping moves the reverse entry.
        t.insert(ep(2, 5000), 40005, 2);
        assert_eq!(t.reverse(40000, 3), None);
        assert_eq!(t.reverse(40005, 3), Some(ep(2, 5000)));
        assert_eq!(t.remove(ep(2, 5000)), Some(40005));
        assert_eq!(t.reverse(40005, 3), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn taking_a_live_port_displaces_its_owner() {
        let mut t = EimTable::new(10);
        t.insert(ep(2, 1), 40000, 0);
        assert_eq!(t.insert(ep(3, 1), 40000, 5), Some(ep(2, 1)));
        assert_eq!(t.lookup(ep(2, 1), 5), None);
        assert_eq!(t.reverse(40000, 5), Some(ep(3, 1)));
        // An expired owner goes silently.
        assert_eq!(t.insert(ep(4, 1), 40000, 100), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn expire_respects_budget_and_skips_stale_nodes() {
        let mut t = EimTable::new(10);
        for i in 0..100u16 {
            t.insert(ep(2, i), 1000 + i, u64::from(i));
        }
        t.remove(ep(2, 0));
        assert_eq!(t.expire(1000, 10), 9, "one of ten nodes was stale");
        assert_eq!(t.len(), 90);
        assert_eq!(t.expire(1000, 1000), 90);
        assert!(t.is_empty());
        assert_eq!(t.expire(1000, 1000), 0);
    }

    #[test]
    fn expire_requeues_refreshed_mappings() {
        let mut t = EimTable::new(10);
        t.insert(ep(2, 1), 1, 0);
        t.insert(ep(2, 2), 2, 5);
        t.touch(ep(2, 1), 8);
        // At 12 the first node is due by its stamp but the mapping was used at 8.
        assert_eq!(t.expire(12, 10), 0);
        assert_eq!(t.lookup(ep(2, 1), 12), Some(1));
        assert_eq!(t.expire(15, 10), 1);
        assert_eq!(t.lookup(ep(2, 2), 15), None);
        assert_eq!(t.expire(18, 10), 1);
        assert!(t.is_empty());
    }

    proptest! {
        // Against a naive model: lookups agree, and after a full expire only live mappings stay.
        #[test]
        fn matches_model(ops in proptest::collection::vec((0u8..4, 0u16..8, 0u16..8, 0u64..5), 1..200)) {
            let timeout = 6;
            let mut t = EimTable::new(timeout);
            let mut model: std::collections::HashMap<Endpoint, (u16, u64)> = Default::default();
            let mut now = 0;
            for (op, who, port, dt) in ops {
                now += dt;
                let e = ep(2, who);
                let live = |m: &(u16, u64)| now - m.1 < timeout;
                match op {
                    0 => {
                        t.insert(e, port, now);
                        model.retain(|k, v| !(v.0 == port && *k != e));
                        model.insert(e, (port, now));
                    }
                    1 => {
                        let touched = t.touch(e, now);
                        let m = model.get_mut(&e).filter(|m| now - m.1 < timeout);
                        prop_assert_eq!(touched, m.is_some());
                        if let Some(m) = m { m.1 = now; }
                    }
                    2 => { t.expire(now, 3); }
                    _ => {
                        t.expire(now, usize::MAX);
                        model.retain(|_, v| live(v));
                        prop_assert!(t.len() >= model.len());
                    }
                }
                for w in 0..8 {
                    let e = ep(2, w);
                    let want = model.get(&e).filter(|m| live(m)).map(|m| m.0);
                    prop_assert_eq!(t.lookup(e, now), want);
                    if let Some(p) = want {
                        prop_assert_eq!(t.reverse(p, now), Some(e));
                    }
                }
            }
        }
    }
}
