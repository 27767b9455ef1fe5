//! The per-worker NAT flow cache: for an established flow, the action its next packet takes,
//! found with one hash and one probe instead of a conntrack lookup, a route decision, an MTU
//! lookup and a neighbor or FDB lookup.
//!
//! A slot is keyed by the ingress port and the packet's tuple, and holds what the slow path
//! decided for that key: the conntrack entry and direction (still tracked per packet, so TCP
//! states, timeouts and counters stay exact), the addresses and ports to write, the egress
//! port with both MACs, and the egress MTU.
//!
//! Invariant (exactness): a slot is used only while nothing its action was derived from has
//! changed. Each slot records the *epoch* it was filled in, the sum of three monotonic
//! counters — the gateway's own (bumped by any topology, published-port or conntrack-flush
//! change), the neighbor tables' (a neighbor changed MAC) and the FDB's (an entry moved or
//! was removed) — so any such change invalidates every slot at once; and a `valid_until`
//! clock value, the first instant a neighbor or FDB entry it used would age out. The
//! conntrack entry itself is checked per packet (`Conntrack::track_live`: a stale id or an
//! expired entry sends the packet down the slow path, which reclaims it). Only unicast
//! outcomes to one port are cached: floods, ARP waits, fragments and ICMP errors never are.
//!
//! Owns: its slots and hit/miss counters. Sizing: direct-mapped, grown (and emptied) as the
//! number of fills outgrows it, up to [`MAX_SLOTS`]; with more live flows than that the
//! slow path serves the rest.

use crate::config::PortId;
use conntrack::{Direction, EntryId, Tuple};
use nat::Prepared;
use packet::MacAddr;
use serde::Serialize;

/// Slots at most (96 bytes each, plus 4 bytes of tag: 50 MiB per worker at most).
pub(crate) const MAX_SLOTS: usize = 1 << 19;
/// Slots per bucket: a key may live in any way of its bucket.
const WAYS: usize = 4;
const MIN_SLOTS: usize = 256;
/// Probes per evaluation of the hit rate.
const WINDOW: u32 = 8192;
/// Packets that skip the cache after a window with fewer than half hits; one in
/// [`SAMPLE_EVERY`] of them still probes (and fills), so the next window can find it paying.
const BYPASS: u32 = 1 << 17;
const SAMPLE_EVERY: u32 = 16;
/// A fill replaces a live slot for one key in 8 (by hash bits the bucket index does not use).
const REPLACE_LIVE_MASK: u64 = 0x7 << 8;

/// The cache key: ingress port and tuple, packed into two words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlowKey([u64; 2]);

impl FlowKey {
    #[inline]
    pub(crate) fn new(port: PortId, t: &Tuple) -> FlowKey {
        let addrs = (u64::from(t.src.to_bits()) << 32) | u64::from(t.dst.to_bits());
        let rest = (u64::from(port.0) << 40)
            | (u64::from(t.src_port) << 24)
            | (u64::from(t.dst_port) << 8)
            | u64::from(t.proto.number());
        FlowKey([addrs, rest])
    }

    /// Mixes both words: the upper bits pick the bucket, the lower half is the tag.
    #[inline]
    fn hash(self) -> u64 {
        let h = (self.0[0] ^ self.0[1].rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }

    /// A slot's tag: never 0, which marks an empty way.
    #[inline]
    fn tag(h: u64) -> u32 {
        (h as u32) | 1
    }
}

/// What a cached packet becomes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Action {
    /// Its conntrack entry and direction.
    pub(crate) id: EntryId,
    pub(crate) dir: Direction,
    /// The rewrite to the translated endpoints, checksum terms summed.
    pub(crate) rewrite: Prepared,
    /// Whether translation changes anything (the `nat_translated` counter).
    pub(crate) translated: bool,
    /// The one port it leaves by, and its Ethernet addresses there.
    pub(crate) egress: PortId,
    pub(crate) src_mac: MacAddr,
    pub(crate) dst_mac: MacAddr,
    /// The egress MTU the packet must fit.
    pub(crate) mtu: u16,
    /// The first clock value at which a neighbor or FDB entry behind the action may have aged.
    pub(crate) valid_until: u64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    key: FlowKey,
    epoch: u64,
    action: Action,
}

/// Hit and miss counts (probes made by established-flow candidates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowCacheStats {
    /// Packets forwarded from the cache.
    pub hits: u64,
    /// Probes that found nothing usable (then the slow path ran).
    pub misses: u64,
    /// Actions stored.
    pub fills: u64,
    /// Packets that skipped the cache because it was not paying (see [`FlowCache`]).
    pub bypassed: u64,
    /// Slots in use now (capacity).
    pub slots: usize,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct FlowCache {
    /// Per bucket, the tag of each way (0: empty): one probe reads one short line.
    tags: Vec<[u32; WAYS]>,
    slots: Vec<[Option<Slot>; WAYS]>,
    /// log2 of the number of buckets.
    bits: u32,
    /// Way the next fill of a full bucket replaces, per bucket (round robin).
    victim: Vec<u8>,
    enabled: bool,
    /// Probes of the current evaluation window, and the misses among them that found their
    /// bucket full of live slots (capacity misses: cold ones fill an empty way).
    window: (u32, u32),
    /// Packets left that skip the cache (but every [`SAMPLE_EVERY`]th) since the last window
    /// found it hitting too rarely.
    bypass_left: u32,
    /// Whether the packet in hand probed, so that its slow path may fill.
    probed: bool,
    stats: FlowCacheStats,
}

impl Default for FlowCache {
    fn default() -> Self {
        FlowCache {
            tags: Vec::new(),
            slots: Vec::new(),
            bits: 0,
            victim: Vec::new(),
            enabled: true,
            window: (0, 0),
            bypass_left: 0,
            probed: false,
            stats: FlowCacheStats::default(),
        }
    }
}

impl FlowCache {
    #[inline]
    fn bucket(&self, h: u64) -> usize {
        if self.bits == 0 {
            return 0;
        }
        (h >> (64 - self.bits)) as usize
    }

    /// The action cached for `key` in `epoch`, if it is still valid at `now`.
    #[inline]
    pub(crate) fn get(&mut self, key: FlowKey, epoch: u64, now: u64) -> Option<Action> {
        self.probed = false;
        if !self.enabled {
            return None;
        }
        if self.bypass_left > 0 {
            self.bypass_left -= 1;
            if !self.bypass_left.is_multiple_of(SAMPLE_EVERY) {
                self.stats.bypassed += 1;
                return None;
            }
        }
        self.probed = true;
        let h = key.hash();
        let (b, tag) = (self.bucket(h), FlowKey::tag(h));
        let hit = self.tags.get(b).and_then(|tags| {
            let way = tags.iter().position(|&t| t == tag)?;
            self.slots
                .get(b)?
                .get(way)?
                .as_ref()
                .filter(|s| s.key == key && s.epoch == epoch && now < s.action.valid_until)
                .map(|s| s.action)
        });
        match hit {
            Some(_) => self.stats.hits += 1,
            None => self.stats.misses += 1,
        }
        self.window.0 += 1;
        if self.window.0 == WINDOW {
            // More flows than slots, in an order that defeats it (say, a scan): probing and
            // filling cost more than the hits save, so most packets skip it for a while.
            let paying = self.window.1 < WINDOW / 2;
            self.bypass_left = if paying { 0 } else { BYPASS };
            self.window = (0, 0);
        }
        hit
    }

    /// Whether a [`FlowCache::fill`] for the packet in hand would store anything (so the slow
    /// path need not prepare an action that is thrown away).
    #[inline]
    pub(crate) fn will_fill(&self) -> bool {
        self.enabled && self.probed
    }

    /// Whether probes are mostly skipped now (a batch's warm-up then skips the slots too).
    #[inline]
    pub(crate) fn bypassing(&self) -> bool {
        self.bypass_left > 0 || !self.enabled
    }

    /// The action stored for `key`, valid or not: a read-only probe with no counters (to pull
    /// a batch's slots into the CPU cache before it is processed).
    #[inline]
    pub(crate) fn peek(&self, key: FlowKey) -> Option<&Action> {
        let h = key.hash();
        let (b, tag) = (self.bucket(h), FlowKey::tag(h));
        let way = self.tags.get(b)?.iter().position(|&t| t == tag)?;
        let slot = self.slots.get(b)?.get(way)?.as_ref()?;
        (slot.key == key).then_some(&slot.action)
    }

    /// Stores `action` for `key`, filled in `epoch`. `live_flows` (the conntrack table's size)
    /// sizes the cache: about two slots per key of every live connection, up to [`MAX_SLOTS`].
    pub(crate) fn fill(
        &mut self,
        key: FlowKey,
        epoch: u64,
        now: u64,
        action: Action,
        live_flows: usize,
    ) {
        if !self.enabled || !self.probed {
            return;
        }
        // Two keys per connection, at most half the slots used.
        let want = live_flows
            .saturating_mul(4)
            .clamp(MIN_SLOTS, MAX_SLOTS)
            .next_power_of_two();
        if want > self.tags.len() * WAYS {
            self.resize(want);
        }
        let h = key.hash();
        let (b, tag) = (self.bucket(h), FlowKey::tag(h));
        let (Some(tags), Some(slots), Some(victim)) = (
            self.tags.get_mut(b),
            self.slots.get_mut(b),
            self.victim.get_mut(b),
        ) else {
            return;
        };
        // The key's own way, else an empty one, else (for one key in 8) the next way in turn,
        // preferring one that can no longer hit. With more flows than slots, replacing on every
        // miss would only make every packet pay for a fill that is evicted before its flow
        // comes back; and only the tags are read unless a way is replaced.
        let own =
            (0..WAYS).find(|&w| tags[w] == tag && slots[w].as_ref().is_some_and(|s| s.key == key));
        let free = own.or_else(|| tags.iter().position(|&t| t == 0));
        self.window.1 += u32::from(free.is_none());
        let way = match free {
            Some(w) => w,
            None if h & REPLACE_LIVE_MASK == 0 => {
                let dead = |w: usize| {
                    slots[w]
                        .as_ref()
                        .is_none_or(|s| s.epoch != epoch || s.action.valid_until <= now)
                };
                (0..WAYS).find(|&w| dead(w)).unwrap_or_else(|| {
                    *victim = (*victim + 1) % WAYS as u8;
                    usize::from(*victim)
                })
            }
            None => return,
        };
        tags[way] = tag;
        slots[way] = Some(Slot { key, epoch, action });
        self.stats.fills += 1;
    }

    /// Grows the table to `slots` slots, moving what it holds.
    #[cold]
    fn resize(&mut self, slots: usize) {
        let buckets = (slots / WAYS).max(1);
        let old = std::mem::replace(&mut self.slots, vec![[None; WAYS]; buckets]);
        self.tags = vec![[0; WAYS]; buckets];
        self.victim = vec![0; buckets];
        self.bits = buckets.trailing_zeros();
        for slot in old.into_iter().flatten().flatten() {
            let h = slot.key.hash();
            let b = self.bucket(h);
            if let (Some(tags), Some(ways)) = (self.tags.get_mut(b), self.slots.get_mut(b))
                && let Some(w) = tags.iter().position(|&t| t == 0)
            {
                tags[w] = FlowKey::tag(h);
                ways[w] = Some(slot);
            }
        }
    }

    /// Turns the cache on or off (off: every packet takes the slow path; for comparisons).
    pub(crate) fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            *self = FlowCache {
                enabled: false,
                ..FlowCache::default()
            };
        }
    }

    pub(crate) fn stats(&self) -> FlowCacheStats {
        FlowCacheStats {
            slots: self.tags.len() * WAYS,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nat::Endpoint;
    use packet::L4Proto;

    fn action(n: u8) -> Action {
        let t = Tuple::new(L4Proto::Udp, [1, 1, 1, 1].into(), 1, [2, 2, 2, 2].into(), 2);
        let mut ct = conntrack::Conntrack::new(conntrack::Config::default());
        Action {
            id: ct.insert(t, t.reversed(), 0, 0).unwrap(),
            dir: Direction::Reply,
            rewrite: Prepared::new(
                (
                    Endpoint::new([10, 0, 0, 1].into(), 1),
                    Endpoint::new([10, 0, 0, 2].into(), 2),
                ),
                (
                    Endpoint::new([10, 0, 0, n].into(), 1),
                    Endpoint::new([10, 0, 0, 2].into(), 2),
                ),
            ),
            translated: true,
            egress: PortId(u16::from(n)),
            src_mac: MacAddr::ZERO,
            dst_mac: MacAddr::BROADCAST,
            mtu: 1500,
            valid_until: 100,
        }
    }

    /// As the gateway does: a probe (that missed) before the slow path fills.
    fn probe_and_fill(c: &mut FlowCache, k: FlowKey, epoch: u64, now: u64, a: Action, live: usize) {
        let _ = c.get(k, epoch, now);
        c.fill(k, epoch, now, a, live);
    }

    fn key(port: u16, sport: u16) -> FlowKey {
        let t = Tuple::new(
            L4Proto::Udp,
            [10, 0, 0, 1].into(),
            sport,
            [10, 0, 0, 2].into(),
            53,
        );
        FlowKey::new(PortId(port), &t)
    }

    #[test]
    fn a_slot_is_small() {
        // Two cache lines at most, so a probe costs the tag line and at most two more.
        let size = std::mem::size_of::<Option<Slot>>();
        assert!(size <= 128, "{size} bytes");
    }

    #[test]
    fn keys_separate_ports_and_tuples() {
        assert_ne!(key(0, 1), key(1, 1));
        assert_ne!(key(0, 1), key(0, 2));
        assert_eq!(key(3, 7), key(3, 7));
    }

    #[test]
    fn a_hit_needs_the_same_key_epoch_and_a_clock_before_valid_until() {
        let mut c = FlowCache::default();
        assert!(c.get(key(0, 1), 0, 0).is_none());
        probe_and_fill(&mut c, key(0, 1), 5, 0, action(1), 1);
        assert_eq!(c.get(key(0, 1), 5, 99).map(|a| a.egress), Some(PortId(1)));
        assert!(c.get(key(0, 1), 6, 99).is_none(), "another epoch");
        assert!(c.get(key(0, 1), 5, 100).is_none(), "aged");
        assert!(c.get(key(1, 1), 5, 0).is_none(), "another port");
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.fills), (1, 5, 1));
        c.set_enabled(false);
        probe_and_fill(&mut c, key(0, 1), 5, 0, action(1), 1);
        assert!(c.get(key(0, 1), 5, 0).is_none());
    }

    #[test]
    fn bypassed_while_it_does_not_pay_and_back_when_it_does() {
        let mut c = FlowCache::default();
        let k = key(0, 1);
        probe_and_fill(&mut c, k, 1, 0, action(1), 1);
        // A scan over far more flows than slots: once the buckets are full, every probe is a
        // capacity miss.
        for i in 1..WINDOW {
            probe_and_fill(&mut c, key(9, i as u16), 1, 0, action(1), 1);
        }
        assert_eq!(c.stats().bypassed, 0);
        assert!(c.peek(k).is_some());
        // Now most packets skip it, hits or not; one in SAMPLE_EVERY still probes.
        let hits_before = c.stats().hits;
        for _ in 0..(SAMPLE_EVERY * 100) {
            let _ = c.get(k, 1, 0);
        }
        let s = c.stats();
        assert_eq!(s.hits - hits_before, 100, "{s:?}");
        assert_eq!(s.bypassed, u64::from(SAMPLE_EVERY - 1) * 100);
        // The sampled probes hit: after a window of them the cache is used again.
        for _ in 0..(SAMPLE_EVERY * WINDOW) {
            let _ = c.get(k, 1, 0);
        }
        let bypassed = c.stats().bypassed;
        for _ in 0..100 {
            assert!(c.get(k, 1, 0).is_some());
        }
        assert_eq!(c.stats().bypassed, bypassed);
    }

    #[test]
    fn sized_by_live_flows_up_to_the_cap() {
        let mut c = FlowCache::default();
        probe_and_fill(&mut c, key(0, 0), 1, 0, action(1), 10);
        assert_eq!(c.stats().slots, MIN_SLOTS);
        // Four ways: a bucket's keys survive each other.
        let keys: Vec<FlowKey> = (0..1000u16).map(|i| key(0, i)).collect();
        for &k in &keys {
            probe_and_fill(&mut c, k, 1, 0, action(1), 1000);
        }
        assert_eq!(c.stats().slots, 4096);
        let found = keys.iter().filter(|&&k| c.get(k, 1, 0).is_some()).count();
        assert!(found > 950, "{found} of 1000 kept");
        // More keys than slots: the first ones stay (live slots are rarely replaced), so the
        // cache keeps hitting for most of what it holds instead of thrashing.
        let many = |i: usize| key((i >> 16) as u16, i as u16);
        for i in 0..(MAX_SLOTS * 2) {
            probe_and_fill(&mut c, many(i), 1, 0, action(1), usize::MAX);
        }
        let early = (0..10_000).filter(|&i| c.peek(many(i)).is_some()).count();
        assert!(early > 5_000, "{early} of the first 10k kept");
        assert_eq!(c.stats().slots, MAX_SLOTS);
    }
}
