//! Model-based property test: random operation sequences are applied to the
//! table and to a naive reference (a `Vec` of live entries), which must agree
//! after every step on which keys are live, on every result, and on the
//! table's structural invariants (`check_invariants`).
//!
//! The model covers UDP and ICMP (whose state machines are trivial to
//! mirror); TCP transitions have their own unit tests. It runs for both
//! address families, on the same key pool shape.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use crate::{
    Address, Config, Conntrack, Direction, EntryId, InsertError, Timeouts, Tuple, Verdict,
};
use packet::L4Proto;

const S: u64 = 1_000_000_000;
const POOL: usize = 12;

/// The addresses the key pool uses, per family: a client, a server, a remote peer.
trait Family: Address {
    const HOSTS: [Self; 3];
}

impl Family for Ipv4Addr {
    const HOSTS: [Self; 3] = [
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(203, 0, 113, 1),
    ];
}

impl Family for Ipv6Addr {
    const HOSTS: [Self; 3] = [
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
        // Differs from the client in both halves.
        Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 2),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    ];
}

/// A small key pool so that collisions (Exists, NAT reply clashes) happen.
fn key<A: Family>(i: usize) -> Tuple<A> {
    let [client, server, remote] = A::HOSTS;
    let i = i % POOL;
    let proto = if matches!(i % 3, 0) {
        L4Proto::Icmp
    } else {
        L4Proto::Udp
    };
    let port = (i / 2) as u16;
    if matches!(i % 2, 0) {
        Tuple::from_parts(proto, client, port, server, 80)
    } else {
        Tuple::from_parts(proto, server, 80, remote, port)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert { orig: usize, reply: Option<usize> },
    Lookup { key: usize, reversed: bool },
    Track { pick: usize, reply: bool },
    TrackStale { pick: usize },
    Expire { budget: usize },
    Remove { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..POOL, proptest::option::of(0..POOL)).prop_map(|(orig, reply)| Op::Insert { orig, reply }),
        2 => (0..POOL, any::<bool>()).prop_map(|(key, reversed)| Op::Lookup { key, reversed }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, reply)| Op::Track { pick, reply }),
        1 => any::<usize>().prop_map(|pick| Op::TrackStale { pick }),
        1 => (0..4usize).prop_map(|budget| Op::Expire { budget }),
        1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
    ]
}

#[derive(Clone, Debug)]
struct ModelEntry<A: Address> {
    id: EntryId,
    orig: Tuple<A>,
    reply: Tuple<A>,
    proto: L4Proto,
    replied: bool,
    assured: bool,
    expires_at: u64,
    refreshed_at: u64,
    /// Global refresh order: position within a class list.
    seq: u64,
}

impl<A: Address> ModelEntry<A> {
    fn class(&self) -> u8 {
        match (self.proto, self.assured) {
            (L4Proto::Udp, false) => 8,
            (L4Proto::Udp, true) => 9,
            _ => 10,
        }
    }
    fn timeout(&self, t: &Timeouts) -> u64 {
        match self.class() {
            8 => t.udp_unreplied,
            9 => t.udp_assured,
            _ => t.icmp,
        }
    }
}

struct Model<A: Address> {
    clock: u64,
    live: Vec<ModelEntry<A>>,
    dead: Vec<EntryId>,
    seq: u64,
}

impl<A: Address> Model<A> {
    fn new() -> Self {
        Model {
            clock: 0,
            live: Vec::new(),
            dead: Vec::new(),
            seq: 0,
        }
    }

    fn advance(&mut self, now: u64) {
        self.clock = self.clock.max(now);
        let clock = self.clock;
        // Expired entries are invisible through every API, so the model
        // simply forgets them.
        let (keep, gone): (Vec<_>, Vec<_>) =
            self.live.drain(..).partition(|e| e.expires_at > clock);
        self.live = keep;
        self.dead.extend(gone.into_iter().map(|e| e.id));
    }

    fn find(&self, k: &Tuple<A>) -> Option<(usize, Direction)> {
        self.live
            .iter()
            .position(|e| e.orig == *k)
            .map(|i| (i, Direction::Original))
            .or_else(|| {
                self.live
                    .iter()
                    .position(|e| e.reply == *k)
                    .map(|i| (i, Direction::Reply))
            })
    }
}

fn run<A: Family>(max: usize, steps: Vec<(i8, Op)>) -> Result<(), TestCaseError> {
    let timeouts = Timeouts::default();
    let mut ct = Conntrack::<A>::with_config(Config {
        max_entries: max,
        timeouts,
        // Count per source and destination without ever refusing: check_invariants then
        // recounts both maps against the table after every step.
        max_per_source: u32::MAX,
        max_nat_per_destination: u32::MAX,
    });
    let mut m = Model::<A>::new();
    let mut now: u64 = 1000 * S;
    for (dt, op) in steps {
        // Steps of up to +-16 s; negative steps model capture clocks
        // jumping backwards.
        now = now.saturating_add_signed(i64::from(dt) * S as i64 / 8);
        m.advance(now);
        // Some ops skip the table; `contains` and `iter` judge liveness at
        // the table clock, so show it `now` (budget 0 removes nothing).
        // Half the time, so ops also advance the clock themselves.
        if dt % 2 == 0 {
            prop_assert_eq!(ct.expire(now, 0), 0);
        }
        match op {
            Op::Insert { orig, reply } => {
                let o = key::<A>(orig);
                let r = reply.map_or(o.reversed(), key);
                let got = ct.insert(o, r, 0, now);
                let want = if m.find(&o).is_some() || m.find(&r).is_some() {
                    Err(InsertError::Exists)
                } else if m.live.len() >= max {
                    let victim = m
                        .live
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| !e.assured)
                        .min_by_key(|(_, e)| (e.refreshed_at, e.class(), e.seq))
                        .map(|(i, _)| i);
                    match victim {
                        Some(i) => {
                            let e = m.live.remove(i);
                            m.dead.push(e.id);
                            Ok(())
                        }
                        None => Err(InsertError::TableFull { max_entries: max }),
                    }
                } else {
                    Ok(())
                };
                prop_assert_eq!(got.map(|_| ()), want);
                if let Ok(id) = got {
                    m.seq += 1;
                    let mut e = ModelEntry {
                        id,
                        orig: o,
                        reply: r,
                        proto: o.proto,
                        replied: false,
                        assured: false,
                        expires_at: 0,
                        refreshed_at: m.clock,
                        seq: m.seq,
                    };
                    e.expires_at = m.clock + e.timeout(&timeouts);
                    m.live.push(e);
                }
            }
            Op::Lookup { key: k, reversed } => {
                let k = if reversed {
                    key::<A>(k).reversed()
                } else {
                    key(k)
                };
                let got = ct.lookup(&k, now);
                let want = m.find(&k).map(|(i, d)| (m.live[i].id, d));
                prop_assert_eq!(got, want);
            }
            Op::Track { pick, reply } => {
                if m.live.is_empty() {
                    ct.expire(now, 0);
                    continue;
                }
                let i = pick % m.live.len();
                let dir = if reply {
                    Direction::Reply
                } else {
                    Direction::Original
                };
                prop_assert_eq!(ct.track(m.live[i].id, dir, None, 64, now), Verdict::Accept);
                m.seq += 1;
                let (clock, seq) = (m.clock, m.seq);
                let e = &mut m.live[i];
                match e.proto {
                    L4Proto::Udp if e.replied => e.assured = true,
                    _ if reply => e.replied = true,
                    _ => {}
                }
                e.expires_at = clock + e.timeout(&timeouts);
                e.refreshed_at = clock;
                e.seq = seq;
            }
            Op::TrackStale { pick } => {
                if m.dead.is_empty() {
                    ct.expire(now, 0);
                    continue;
                }
                let id = m.dead[pick % m.dead.len()];
                if ct.entry(id).is_none() {
                    prop_assert_eq!(
                        ct.track(id, Direction::Original, None, 1, now),
                        Verdict::Invalid
                    );
                } else {
                    // Expired but not reclaimed yet: tracking it would revive
                    // it (callers track right after `lookup`), so skip.
                    ct.expire(now, 0);
                }
            }
            Op::Expire { budget } => {
                let n = ct.expire(now, budget);
                prop_assert!(n <= budget);
            }
            Op::Remove { pick } => {
                if m.live.is_empty() {
                    ct.expire(now, 0);
                    continue;
                }
                let e = m.live.remove(pick % m.live.len());
                prop_assert!(ct.remove(e.id));
                prop_assert!(!ct.remove(e.id));
                m.dead.push(e.id);
                // `remove` takes no `now`: show it to the table.
                ct.expire(now, 0);
            }
        }
        ct.check_invariants();
        prop_assert!(ct.len() <= max);
        prop_assert!(ct.len() >= m.live.len());
        for i in 0..POOL {
            for k in [key::<A>(i), key::<A>(i).reversed()] {
                prop_assert_eq!(ct.contains(&k), m.find(&k).is_some(), "key {}", k);
            }
        }
        let mut got: Vec<EntryId> = ct.iter().map(|(id, _)| id).collect();
        let mut want: Vec<EntryId> = m.live.iter().map(|e| e.id).collect();
        want.sort();
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "iter order");
        got.sort();
        prop_assert_eq!(got, want);
        for e in &m.live {
            let real = ct.entry(e.id);
            prop_assert!(real.is_some());
            if let Some(r) = real {
                prop_assert_eq!(r.expires_at, e.expires_at);
                prop_assert_eq!(r.assured, e.assured);
            }
        }
    }
    // Draining with an unbounded budget leaves exactly the live entries.
    ct.expire(now, usize::MAX);
    prop_assert_eq!(ct.len(), m.live.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_model(
        max in 0usize..8,
        steps in proptest::collection::vec((-40i8..127, op()), 1..120),
    ) {
        run::<Ipv4Addr>(max, steps)?;
    }

    /// The same model over IPv6 tuples (`Conntrack<Ipv6Addr>`, NAT66).
    #[test]
    fn ipv6_table_agrees_with_model(
        max in 0usize..8,
        steps in proptest::collection::vec((-40i8..127, op()), 1..120),
    ) {
        run::<Ipv6Addr>(max, steps)?;
    }
}
