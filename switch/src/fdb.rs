//! Forwarding database: which port each (network, MAC) was last seen on.
//!
//! Invariants:
//! - An entry is keyed by (network, MAC): the same MAC on two networks is two entries, so networks
//!   never share forwarding state.
//! - `per_port[p]` equals the number of live entries pointing at port `p`, and never exceeds
//!   `max_per_port` through learning (a move onto a full port is refused like a new MAC).
//! - An entry older than `aging` is dead: lookups ignore it at once, and [`Fdb::sweep`] removes
//!   it later. The sweep runs at most once per `aging / 10` of clock time, like the Linux
//!   bridge's garbage-collection timer, so the per-packet path never scans the table.

use crate::config::{NetworkId, PortId};
use packet::MacAddr;
use rustc_hash::FxHashMap;
use serde::Serialize;

#[derive(Clone, Copy, Debug)]
struct Entry {
    port: PortId,
    last_seen: u64,
}

/// What learning a source did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port; age refreshed.
    Refreshed,
    /// New entry.
    New,
    /// Was on another port; moved here.
    Moved {
        /// The port it was on.
        from: PortId,
    },
    /// The port already has its cap of MACs: not learned.
    CapReached,
}

/// One FDB entry as shown by `vswitch fdb show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FdbRow {
    /// Network id.
    pub network: NetworkId,
    /// MAC address (as text).
    pub mac: String,
    /// Port it was learned on.
    pub port: PortId,
    /// Nanoseconds since it was last seen.
    pub age_ns: u64,
}

/// The forwarding database of all networks.
#[derive(Debug)]
pub struct Fdb {
    map: FxHashMap<u64, Entry>,
    per_port: Vec<u32>,
    aging: u64,
    max_per_port: u32,
    next_sweep: u64,
    /// Bumped whenever an entry moves to another port or is removed: what was looked up
    /// before may now answer differently (the NAT flow cache checks it).
    generation: u64,
}

#[inline]
fn key(network: NetworkId, mac: MacAddr) -> u64 {
    (u64::from(network.0) << 48) | mac.to_u64()
}

impl Fdb {
    /// An empty FDB for `ports` ports.
    pub fn new(ports: usize, aging_ns: u64, max_per_port: u32) -> Fdb {
        Fdb {
            map: FxHashMap::default(),
            per_port: vec![0; ports],
            aging: aging_ns.max(1),
            max_per_port,
            next_sweep: 0,
            generation: 0,
        }
    }

    #[inline]
    fn alive(&self, e: &Entry, now: u64) -> bool {
        // A clock that went backwards makes the entry look fresh rather than underflowing.
        now.saturating_sub(e.last_seen) < self.aging
    }

    fn port_count(&mut self, port: PortId) -> Option<&mut u32> {
        self.per_port.get_mut(usize::from(port.0))
    }

    /// Learns that `mac` on `network` is behind `port`.
    #[inline(always)]
    pub fn learn(&mut self, network: NetworkId, mac: MacAddr, port: PortId, now: u64) -> Learned {
        let k = key(network, mac);
        let aging = self.aging;
        let at_cap = self
            .per_port
            .get(usize::from(port.0))
            .is_none_or(|&n| n >= self.max_per_port);
        match self.map.get_mut(&k) {
            Some(e) if e.port == port => {
                e.last_seen = now;
                Learned::Refreshed
            }
            Some(_) if at_cap => Learned::CapReached,
            Some(e) => {
                let from = e.port;
                let was_alive = now.saturating_sub(e.last_seen) < aging;
                e.port = port;
                e.last_seen = now;
                self.generation += 1;
                if let Some(n) = self.port_count(from) {
                    *n = n.saturating_sub(1);
                }
                if let Some(n) = self.port_count(port) {
                    *n += 1;
                }
                if was_alive {
                    Learned::Moved { from }
                } else {
                    Learned::New
                }
            }
            None if at_cap => Learned::CapReached,
            None => {
                self.map.insert(
                    k,
                    Entry {
                        port,
                        last_seen: now,
                    },
                );
                if let Some(n) = self.port_count(port) {
                    *n += 1;
                }
                Learned::New
            }
        }
    }

    /// The port `mac` was learned on, if the entry is alive.
    #[inline(always)]
    pub fn lookup(&self, network: NetworkId, mac: MacAddr, now: u64) -> Option<PortId> {
        self.map
            .get(&key(network, mac))
            .filter(|e| self.alive(e, now))
            .map(|e| e.port)
    }

    /// The port `mac` was learned on and the first clock value at which that entry is dead,
    /// if it is alive now.
    #[inline]
    pub fn lookup_until(
        &self,
        network: NetworkId,
        mac: MacAddr,
        now: u64,
    ) -> Option<(PortId, u64)> {
        self.map
            .get(&key(network, mac))
            .filter(|e| self.alive(e, now))
            .map(|e| (e.port, e.last_seen.saturating_add(self.aging)))
    }

    /// Changes whenever an entry moved or went: a lookup made before may answer differently.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Removes dead entries if the sweep interval has passed; returns how many went.
    pub fn sweep(&mut self, now: u64) -> usize {
        if now < self.next_sweep {
            return 0;
        }
        self.next_sweep = now.saturating_add(self.aging / 10);
        let aging = self.aging;
        let before = self.map.len();
        let per_port = &mut self.per_port;
        self.map.retain(|_, e| {
            let keep = now.saturating_sub(e.last_seen) < aging;
            if !keep && let Some(n) = per_port.get_mut(usize::from(e.port.0)) {
                *n = n.saturating_sub(1);
            }
            keep
        });
        let removed = before - self.map.len();
        self.generation += u64::from(removed > 0);
        removed
    }

    /// Makes room for port `id`, new or reused, with no entries counted (a removed port's
    /// entries went with [`Fdb::flush_port`]).
    pub fn add_port(&mut self, id: PortId) {
        let slot = usize::from(id.0);
        if self.per_port.len() <= slot {
            self.per_port.resize(slot + 1, 0);
        }
        self.per_port[slot] = 0;
    }

    /// Forgets every entry on `port` (the port went away).
    pub fn flush_port(&mut self, port: PortId) {
        self.map.retain(|_, e| e.port != port);
        self.generation += 1;
        if let Some(n) = self.port_count(port) {
            *n = 0;
        }
    }

    /// Number of entries learned on `port` (alive or awaiting the sweep).
    pub fn port_len(&self, port: PortId) -> u32 {
        self.per_port.get(usize::from(port.0)).copied().unwrap_or(0)
    }

    /// Number of stored entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Live entries, sorted by network, then MAC, for stable output.
    pub fn rows(&self, now: u64) -> Vec<FdbRow> {
        let mut rows: Vec<(u64, FdbRow)> = self
            .map
            .iter()
            .filter(|(_, e)| self.alive(e, now))
            .map(|(&k, e)| {
                let b = k.to_be_bytes();
                let mac = MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]]);
                let network = NetworkId(u16::from_be_bytes([b[0], b[1]]));
                let age_ns = now.saturating_sub(e.last_seen);
                (
                    k,
                    FdbRow {
                        network,
                        mac: mac.to_string(),
                        port: e.port,
                        age_ns,
                    },
                )
            })
            .collect();
        rows.sort_by_key(|(k, _)| *k);
        rows.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const N0: NetworkId = NetworkId(0);
    const N1: NetworkId = NetworkId(1);
    const SEC: u64 = 1_000_000_000;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    #[test]
    fn learn_lookup_move_and_age() {
        let mut f = Fdb::new(3, 300 * SEC, 10);
        assert_eq!(f.learn(N0, mac(1), PortId(0), 0), Learned::New);
        assert_eq!(f.learn(N0, mac(1), PortId(0), SEC), Learned::Refreshed);
        assert_eq!(f.lookup(N0, mac(1), SEC), Some(PortId(0)));
        assert_eq!(
            f.lookup(N1, mac(1), SEC),
            None,
            "networks never share entries"
        );
        assert_eq!(
            f.learn(N0, mac(1), PortId(2), 2 * SEC),
            Learned::Moved { from: PortId(0) }
        );
        assert_eq!((f.port_len(PortId(0)), f.port_len(PortId(2))), (0, 1));
        assert_eq!(f.lookup(N0, mac(1), 301 * SEC), Some(PortId(2)));
        assert_eq!(f.lookup(N0, mac(1), 302 * SEC), None, "aged out");
        assert_eq!(f.sweep(302 * SEC), 1);
        assert_eq!(f.port_len(PortId(2)), 0);
    }

    #[test]
    fn cap_refuses_new_and_moved_macs() {
        let mut f = Fdb::new(2, 300 * SEC, 2);
        assert_eq!(f.learn(N0, mac(1), PortId(0), 0), Learned::New);
        assert_eq!(f.learn(N0, mac(2), PortId(0), 0), Learned::New);
        assert_eq!(f.learn(N0, mac(3), PortId(0), 0), Learned::CapReached);
        assert_eq!(f.lookup(N0, mac(3), 0), None);
        assert_eq!(f.learn(N0, mac(4), PortId(1), 0), Learned::New);
        assert_eq!(f.learn(N0, mac(4), PortId(0), 0), Learned::CapReached);
        assert_eq!(f.lookup(N0, mac(4), 0), Some(PortId(1)));
    }

    #[test]
    fn clock_going_backwards_does_not_panic_or_expire() {
        let mut f = Fdb::new(1, 10 * SEC, 4);
        f.learn(N0, mac(1), PortId(0), 100 * SEC);
        assert_eq!(f.lookup(N0, mac(1), 5 * SEC), Some(PortId(0)));
        assert_eq!(f.sweep(5 * SEC), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Learn {
            net: u16,
            mac: u8,
            port: u16,
            dt: u64,
        },
        Lookup {
            net: u16,
            mac: u8,
            dt: u64,
        },
        Sweep {
            dt: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..2, 0u8..6, 0u16..3, 0u64..40).prop_map(|(net, mac, port, dt)| Op::Learn {
                net,
                mac,
                port,
                dt
            }),
            (0u16..2, 0u8..6, 0u64..40).prop_map(|(net, mac, dt)| Op::Lookup { net, mac, dt }),
            (0u64..40).prop_map(|dt| Op::Sweep { dt }),
        ]
    }

    proptest! {
        // The FDB agrees with a plain map model that stores every entry (dead ones too, until a
        // sweep), applies the per-port cap to stored entries, and ages on lookup.
        #[test]
        fn matches_reference_model(ops in proptest::collection::vec(op(), 1..200)) {
            let (aging, cap) = (50u64, 3u32);
            let mut f = Fdb::new(3, aging, cap);
            let mut model: BTreeMap<(u16, u8), (u16, u64)> = BTreeMap::new();
            let (mut now, mut next_sweep) = (0u64, 0u64);
            let stored_on = |model: &BTreeMap<(u16, u8), (u16, u64)>, p: u16| {
                model.values().filter(|(q, _)| *q == p).count() as u32
            };
            for op in ops {
                match op {
                    Op::Learn { net, mac: m, port, dt } => {
                        now += dt;
                        let res = f.learn(NetworkId(net), mac(m), PortId(port), now);
                        match model.get(&(net, m)).copied() {
                            Some((p, _)) if p == port => {
                                prop_assert_eq!(res, Learned::Refreshed);
                                model.insert((net, m), (port, now));
                            }
                            _ if stored_on(&model, port) >= cap => prop_assert_eq!(res, Learned::CapReached),
                            Some((p, t)) if now - t < aging => {
                                prop_assert_eq!(res, Learned::Moved { from: PortId(p) });
                                model.insert((net, m), (port, now));
                            }
                            _ => {
                                prop_assert_eq!(res, Learned::New);
                                model.insert((net, m), (port, now));
                            }
                        }
                    }
                    Op::Lookup { net, mac: m, dt } => {
                        now += dt;
                        let want = model.get(&(net, m)).filter(|(_, t)| now - t < aging).map(|(p, _)| PortId(*p));
                        prop_assert_eq!(f.lookup(NetworkId(net), mac(m), now), want);
                    }
                    Op::Sweep { dt } => {
                        now += dt;
                        let removed = f.sweep(now);
                        let mut want = 0;
                        if now >= next_sweep {
                            next_sweep = now + aging / 10;
                            let before = model.len();
                            model.retain(|_, (_, t)| now - *t < aging);
                            want = before - model.len();
                        }
                        prop_assert_eq!(removed, want);
                    }
                }
                prop_assert_eq!(f.len(), model.len());
                for p in 0..3u16 {
                    prop_assert_eq!(f.port_len(PortId(p)), stored_on(&model, p));
                    prop_assert!(f.port_len(PortId(p)) <= cap);
                }
            }
        }
    }
}
