//! The connection table: storage, lookup, per-packet tracking and expiry.
//!
//! Owns every connection of one address family: [`Conntrack`] is generic
//! over [`Address`] (`Conntrack<Ipv4Addr>`, the default, or
//! `Conntrack<Ipv6Addr>` for NAT66), with the same states, timeouts and
//! limits for both. Layout (OVS / VPP nat44-ed style), sized for at most 128
//! bytes per IPv4 connection including the index (`tests/memory.rs`
//! measures it):
//! - a slab of `Slot`s (96 bytes for IPv4, 144 for IPv6: the addresses are
//!   stored as `Address::Bits`) in chunks of `CHUNK` slots (`Vec<Vec<Slot>>`:
//!   growth adds a chunk, never copies or doubles the slab), plus a free list
//!   threaded through `Slot::next`; an [`EntryId`] is a slab index plus the
//!   slot's generation, so a stale id never reaches a reused slot;
//! - one key index (`index::Index`, Robin Hood open addressing over 8-byte
//!   buckets, growing by 1.25x at 3/4 load) holding each entry twice, under its
//!   original and its reply tuple; the value packs `index << 1 | direction`, so
//!   one lookup yields both the entry and the packet's direction. The index
//!   stores hash tags, not keys: a lookup confirms a tag match against the
//!   slot's tuple;
//! - intrusive doubly-linked LRU lists, one per (timeout class, assured).
//!
//! A slot stores an entry packed, and [`Entry`] is built on read:
//! - the tuples as two addresses and a ports word each, the protocols and
//!   the state + assured flag in one byte each (`kind`: original protocol,
//!   TCP state or `replied`, assured; `FREE` when the slot holds nothing; the list is derived from it);
//! - `refreshed_at` (the last timeout refresh) instead of `expires_at`, which
//!   is `refreshed_at + timeout(class)`, saturating;
//! - `last_seen` only when it differs from `refreshed_at` (the last packet did
//!   not refresh: a retransmitted SYN, an ignored segment), in the `late` side
//!   map, flagged `LATE` in the slot;
//! - packet and byte counters as `u32` low halves, the high halves of those
//!   that ever exceeded `u32` in the `wide` side map, flagged `WIDE`;
//! - the TCP sequence bookkeeping as `tcp::PackedTrack` (21 bytes).
//!
//! The slot encoding lives in `slot`, the per-address limit bookkeeping in
//! `limits`.
//!
//! Invariants:
//! - a slot is in exactly one list iff it holds an entry (`kind != FREE`), and
//!   that list is the one `LIST_OF_KIND[kind]` names;
//! - both keys of a stored entry map to it (one key when original == reply),
//!   and every map value points at a stored entry;
//! - a slot has a `late` (`wide`) side-map entry iff it holds an entry and is
//!   flagged `LATE` (`WIDE`); a `late` value is never the slot's
//!   `refreshed_at`;
//! - every entry of a class shares one timeout and is appended at the tail
//!   with `refreshed_at = clock`, where `clock` never decreases (it is the
//!   high-water mark of every `now` seen, so a capture whose clock jumps
//!   backwards just makes time stand still). Hence each list is sorted by
//!   `refreshed_at` and so by `expires_at`: expiry pops heads, never scans;
//! - `len <= max_entries` at all times.
//!
//! Nothing here reads a clock, allocates randomness or panics on input: all
//! time arithmetic saturates and slab access goes through `get`.

mod counters;
mod events;
mod limits;
mod saved;
mod slot;

pub use counters::Counters;
pub use saved::{ImportError, SavedEntry, SavedState, SavedTcp};

use crate::address::Address;
use crate::config::Config;
use crate::index::{Index, tag_of};
use crate::tcp::{self, Outcome, PackedTrack, TcpSegment, TcpState, TcpTrack};
use crate::tuple::{Direction, Tuple};
use packet::L4Proto;
use rustc_hash::FxHashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use events::EventLog;
pub use events::{Event, EventKind, MAX_PENDING_EVENTS};
#[cfg(test)]
use limits::{bump, source_translated};
use slot::*;

/// Opaque handle to a table entry (slab index + generation).
///
/// Ids order by slab index, which is also the order of [`Conntrack::iter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct EntryId {
    idx: u32,
    generation: u32,
}

impl EntryId {
    /// Slab index: stable for the entry's lifetime, reused after removal.
    pub const fn index(self) -> u32 {
        self.idx
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.idx, self.generation)
    }
}

/// Protocol state of an entry. Serializes as `{"proto":"tcp","state":"ESTABLISHED"}`,
/// `{"proto":"udp","replied":true}` or `{"proto":"icmp","replied":false}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// TCP connection state.
    Tcp(TcpState),
    /// UDP: `replied` once a packet was seen in the reply direction.
    Udp {
        /// A reply-direction packet has been seen.
        replied: bool,
    },
    /// ICMP echo: `replied` once an echo reply was seen.
    Icmp {
        /// A reply-direction packet has been seen.
        replied: bool,
    },
}

impl serde::Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        match self {
            State::Tcp(t) => {
                m.serialize_entry("proto", "tcp")?;
                m.serialize_entry("state", t.as_str())?;
            }
            State::Udp { replied } => {
                m.serialize_entry("proto", "udp")?;
                m.serialize_entry("replied", replied)?;
            }
            State::Icmp { replied } => {
                m.serialize_entry("proto", "icmp")?;
                m.serialize_entry("replied", replied)?;
            }
        }
        m.end()
    }
}

/// One tracked connection, as read from the table (which stores it packed, see the module
/// docs, and builds this on every read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry<A: Address = Ipv4Addr> {
    /// Tuple of the packet that created the entry.
    pub original: Tuple<A>,
    /// Tuple reply packets carry on the wire (after NAT).
    pub reply: Tuple<A>,
    /// Protocol state.
    pub state: State,
    /// Seen as a real two-way connection: never early-dropped.
    pub assured: bool,
    /// Table clock (ns) when inserted.
    pub created: u64,
    /// Table clock (ns) of the last tracked packet, valid or ignored.
    pub last_seen: u64,
    /// Table clock (ns) at which the entry expires (expired iff `<= now`).
    pub expires_at: u64,
    /// Packets per direction (index with [`Direction::index`]).
    pub packets: [u64; 2],
    /// Bytes per direction (as passed to `track`).
    pub bytes: [u64; 2],
    /// Caller data (network index, NAT kind, ...); opaque to the table.
    pub mark: u32,
}

/// Why `insert` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsertError<A: Address = Ipv4Addr> {
    /// No room and nothing evictable (every entry is assured).
    #[error("conntrack table full ({max_entries} entries): raise max_entries or lower timeouts")]
    TableFull {
        /// The configured capacity.
        max_entries: usize,
    },
    /// The original or the reply tuple already belongs to a live entry.
    #[error("conntrack entry already exists for this original or reply tuple")]
    Exists,
    /// The source address holds as many entries as `max_per_source` allows.
    #[error("source {0} has {1} tracked connections, the per-source limit")]
    SourceLimit(A, u32),
    /// As many translated entries go to this destination as `max_nat_per_destination` allows.
    #[error("destination {0} has {1} translated connections, the per-destination limit")]
    DestinationLimit(A, u32),
}

/// What the caller should do with a tracked packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Accept,
    /// Invalid for this connection (counted; timeout not refreshed).
    Invalid,
    /// A SYN on a closed TCP entry: remove the entry, then handle the packet
    /// as the first packet of a new connection.
    Reopen,
}

/// Expired entries reclaimed by an `insert` that finds the table full: one
/// slot is needed, a few more amortise the next inserts.
const RECLAIM_BUDGET: usize = 16;

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY_LIST: List = List {
    head: NIL,
    tail: NIL,
};

/// The connection tracking table. See the module docs for its invariants.
#[derive(Clone, Debug)]
pub struct Conntrack<A: Address = Ipv4Addr> {
    config: Config,
    /// `class_timeout` per class.
    timeouts: [u64; NUM_CLASSES],
    map: Index,
    chunks: Vec<Vec<Slot<A>>>,
    free_head: u32,
    lists: [List; NUM_LISTS],
    len: usize,
    clock: u64,
    counters: Counters,
    /// Entries per original source address (kept only when `max_per_source` is set).
    per_source: FxHashMap<A, u32>,
    /// Translated entries per original destination (kept only when `max_nat_per_destination`
    /// is set).
    per_destination: FxHashMap<A, u32>,
    /// High halves (packets original, reply, bytes original, reply) of the counters of slots
    /// flagged `WIDE`.
    wide: FxHashMap<u32, [u32; 4]>,
    /// `last_seen` of slots flagged `LATE`.
    late: FxHashMap<u32, u64>,
    /// Events waiting to be drained, while they are asked for (see `events`).
    events: Option<EventLog<A>>,
}

impl Conntrack<Ipv4Addr> {
    /// An empty IPv4 table. `max_entries` is clamped to
    /// [`Config::MAX_ENTRIES_LIMIT`]; nothing is preallocated.
    pub fn new(config: Config) -> Self {
        Self::with_config(config)
    }

    /// [`Conntrack::memory_per_entry`] of an IPv4 table.
    pub const fn entry_memory_bytes() -> usize {
        Self::memory_per_entry()
    }
}

impl Conntrack<Ipv6Addr> {
    /// An empty IPv6 table (for NAT66), otherwise as [`Conntrack::new`].
    pub fn new_v6(config: Config) -> Self {
        Self::with_config(config)
    }
}

impl<A: Address> Conntrack<A> {
    /// An empty table of either family (`Conntrack::new` and
    /// `Conntrack::new_v6` name the family, so that a call needs no type
    /// annotation). `max_entries` is clamped to [`Config::MAX_ENTRIES_LIMIT`];
    /// nothing is preallocated.
    pub fn with_config(mut config: Config) -> Self {
        config.max_entries = config.max_entries.min(Config::MAX_ENTRIES_LIMIT);
        let mut timeouts = [0; NUM_CLASSES];
        for (class, t) in timeouts.iter_mut().enumerate() {
            *t = class_timeout(&config.timeouts, class);
        }
        Conntrack {
            config,
            timeouts,
            map: Index::default(),
            chunks: Vec::new(),
            free_head: NIL,
            lists: [EMPTY_LIST; NUM_LISTS],
            len: 0,
            clock: 0,
            counters: Counters::default(),
            per_source: FxHashMap::default(),
            per_destination: FxHashMap::default(),
            wide: FxHashMap::default(),
            late: FxHashMap::default(),
            events: None,
        }
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The table clock: the largest `now` passed so far.
    pub fn now(&self) -> u64 {
        self.clock
    }

    fn advance(&mut self, now: u64) {
        self.clock = self.clock.max(now);
    }

    /// Finds the entry whose original or reply tuple equals `key`, and the
    /// direction `key` travels in. One hash lookup. Counts `found` on a hit.
    /// An entry already expired at `now` is removed (counted `expired`) and
    /// reported as absent.
    pub fn lookup(&mut self, key: &Tuple<A>, now: u64) -> Option<(EntryId, Direction)> {
        self.advance(now);
        let (idx, dir) = unpack(self.find(key)?);
        let slot = self.slot(idx)?;
        let generation = slot.generation;
        if self.expires_at(slot) <= self.clock {
            if self.remove_idx(idx) {
                self.counters.expired += 1;
            }
            return None;
        }
        let id = EntryId { idx, generation };
        self.counters.found += 1;
        Some((id, dir))
    }

    /// The entry stored under `key` (live or expired-but-unreclaimed) and the
    /// direction `key` travels in. No counters, no side effects, no expiry
    /// check: a read-only probe, e.g. to pull a batch's entries into the
    /// cache before processing it (the answer may be stale by then).
    #[inline]
    pub fn peek(&self, key: &Tuple<A>) -> Option<(Entry<A>, Direction)> {
        let (idx, dir) = unpack(self.find(key)?);
        let slot = self.slot(idx)?;
        Some((self.entry_at(idx, slot), dir))
    }

    /// Whether `key` belongs to an entry live at the table clock. No
    /// counters, no side effects (the NAT port allocator probes with it).
    /// An expired-but-unreclaimed entry counts as absent: `insert` reclaims
    /// such an entry when it collides with it.
    pub fn contains(&self, key: &Tuple<A>) -> bool {
        self.find(key).is_some_and(|v| {
            let (idx, _) = unpack(v);
            self.slot(idx)
                .is_some_and(|s| self.expires_at(s) > self.clock)
        })
    }

    /// Creates an entry keyed by `original` and `reply` (the tuple reply
    /// packets carry on the wire, i.e. after NAT; `original.reversed()`
    /// without NAT).
    ///
    /// Convention: the entry starts with zero packets, in `TcpState::None`
    /// (TCP) or unreplied (UDP/ICMP), with that class's timeout; the caller
    /// must then `track` the packet that created it (for TCP a `track` that
    /// returns `Invalid` on a fresh entry means the packet was no SYN: remove
    /// the entry).
    ///
    /// An expired entry holding either key is reclaimed first. When full,
    /// reclaims expired entries, else early-drops the unassured entry with
    /// the oldest last refresh; if every entry is assured, counts `dropped`
    /// and returns `TableFull`. Counts `new` on success.
    pub fn insert(
        &mut self,
        original: Tuple<A>,
        reply: Tuple<A>,
        mark: u32,
        now: u64,
    ) -> Result<EntryId, InsertError<A>> {
        self.advance(now);
        for key in [original, reply] {
            if let Some(v) = self.find(&key) {
                let (idx, _) = unpack(v);
                if !self.reclaim_if_expired(idx) {
                    return Err(InsertError::Exists);
                }
            }
        }
        self.check_address_limits(&original, &reply)?;
        if self.len >= self.config.max_entries {
            self.expire(self.clock, RECLAIM_BUDGET);
        }
        if self.len >= self.config.max_entries {
            match self.early_drop_victim() {
                Some(victim) => {
                    self.remove_idx(victim);
                    self.counters.early_dropped += 1;
                }
                None => {
                    self.counters.dropped += 1;
                    return Err(InsertError::TableFull {
                        max_entries: self.config.max_entries,
                    });
                }
            }
        }
        let state = match original.proto {
            L4Proto::Tcp => State::Tcp(TcpState::None),
            L4Proto::Udp => State::Udp { replied: false },
            L4Proto::Icmp => State::Icmp { replied: false },
        };
        let fresh = PackedTrack::default();
        let (idx, generation) = self.alloc(Slot {
            original: Key::of(&original),
            reply: Key::of(&reply),
            created: self.clock,
            refreshed_at: self.clock,
            packets: [0; 2],
            bytes: [0; 2],
            mark,
            generation: 0,
            prev: NIL,
            next: NIL,
            tcp: fresh.words,
            tcp_flags: fresh.flags,
            kind: kind_of(state, false),
            reply_proto: proto_code(reply.proto),
            spill: 0,
        });
        self.map
            .insert(tag_of(&original), pack(idx, Direction::Original));
        if reply != original {
            self.map.insert(tag_of(&reply), pack(idx, Direction::Reply));
        }
        self.link_tail(idx, list_of(state, false));
        self.len += 1;
        self.counters.new += 1;
        self.count_addresses(&original, &reply, true);
        self.record(EventKind::New, idx);
        Ok(EntryId { idx, generation })
    }

    /// Accounts one packet travelling in `dir` and updates state, timeout
    /// and the assured flag. Pass `Some(segment)` for TCP (a TCP entry given
    /// `None` is `Invalid`); the segment is ignored for UDP/ICMP.
    ///
    /// `Invalid` (also for a stale id) counts `invalid` and touches nothing.
    /// `Reopen` touches nothing either. `Accept` counts the packet; it
    /// refreshes the timeout except for packets Linux lets through without
    /// taking them into account (a SYN on a live connection, a retransmitted
    /// SYN or SYN/ACK).
    ///
    /// UDP: replied on the first reply-direction packet (timeout still
    /// `udp_unreplied`); assured with `udp_assured` on any packet after that
    /// (Linux's stream rule without its 2 s delay). ICMP: replied on the
    /// first reply, never assured. TCP: see `tcp`; assured on reaching
    /// ESTABLISHED after a reply was seen.
    pub fn track(
        &mut self,
        id: EntryId,
        dir: Direction,
        tcp: Option<&TcpSegment>,
        len: usize,
        now: u64,
    ) -> Verdict {
        self.advance(now);
        let clock = self.clock;
        // Field access, not `slot_mut`, so the borrow stays disjoint from
        // `counters`, `wide` and `late`.
        let Some(slot) = slot_in_mut(&mut self.chunks, id.idx)
            .filter(|s| s.generation == id.generation && s.is_live())
        else {
            self.counters.invalid += 1;
            return Verdict::Invalid;
        };
        let old_kind = slot.kind;
        let mut assured = old_kind & ASSURED != 0;
        let (state, refresh) = match state_of(old_kind) {
            State::Tcp(state) => {
                let Some(seg) = tcp else {
                    self.counters.invalid += 1;
                    return Verdict::Invalid;
                };
                let packed = PackedTrack {
                    words: slot.tcp,
                    flags: slot.tcp_flags,
                };
                let mut trk = TcpTrack::unpack(&packed, state);
                let (state, refresh) = match tcp::step(state, &mut trk, dir, seg) {
                    Outcome::Invalid => {
                        self.counters.invalid += 1;
                        return Verdict::Invalid;
                    }
                    Outcome::Reopen => return Verdict::Reopen,
                    Outcome::Ignore => (state, false),
                    Outcome::Accept { state, refresh } => {
                        if state == TcpState::Established && trk.seen_reply() {
                            assured = true;
                        }
                        (state, refresh)
                    }
                };
                let packed = trk.pack(state);
                slot.tcp = packed.words;
                slot.tcp_flags = packed.flags;
                (State::Tcp(state), refresh)
            }
            State::Udp { replied } => {
                if replied {
                    assured = true;
                }
                let replied = replied || dir == Direction::Reply;
                (State::Udp { replied }, true)
            }
            State::Icmp { replied } => {
                let replied = replied || dir == Direction::Reply;
                (State::Icmp { replied }, true)
            }
        };
        let first_packet = slot.packets == [0; 2] && slot.spill & WIDE == 0;
        count_packet(slot, &mut self.wide, id.idx, dir.index(), len);
        slot.kind = kind_of(state, assured);
        let (old_list, new_list) = (
            usize::from(LIST_OF_KIND[usize::from(old_kind)]),
            slot.list(),
        );
        // Changing list always refreshes: the entry must join the new list
        // at its tail with that list's timeout to keep the list sorted.
        if refresh || new_list != old_list {
            slot.refreshed_at = clock;
            set_last_seen(slot, &mut self.late, id.idx, clock);
            // Already the tail of its list (one busy flow): moving it there is a no-op.
            let at_tail = self.lists.get(new_list).is_some_and(|l| l.tail == id.idx);
            if new_list != old_list || !at_tail {
                self.unlink(id.idx, old_list);
                self.link_tail(id.idx, new_list);
            }
        } else {
            set_last_seen(slot, &mut self.late, id.idx, clock);
        }
        if first_packet {
            self.refresh_new(id.idx);
        }
        if assured && old_kind & ASSURED == 0 {
            self.record(EventKind::Assured, id.idx);
        }
        Verdict::Accept
    }

    /// `track` for an id the caller cached: `None` (and no counter or state touched) if `id` is
    /// stale or its entry has expired at `max(clock, now)` — the caller then falls back to `lookup`,
    /// which reclaims and counts the expiry. Otherwise counts `found` (the lookup it replaces) and
    /// returns what `track` returns.
    pub fn track_live(
        &mut self,
        id: EntryId,
        dir: Direction,
        tcp: Option<&TcpSegment>,
        len: usize,
        now: u64,
    ) -> Option<Verdict> {
        let at = self.clock.max(now);
        let slot = self.live_slot(id)?;
        if self.expires_at(slot) <= at {
            return None;
        }
        self.counters.found += 1;
        Some(self.track(id, dir, tcp, len, now))
    }

    /// The entry behind `id`, if `id` is still current (expired entries not
    /// yet reclaimed are still returned).
    pub fn entry(&self, id: EntryId) -> Option<Entry<A>> {
        self.live_slot(id).map(|s| self.entry_at(id.idx, s))
    }

    /// The original and reply tuples of a live-or-unreclaimed entry (cheap: no `Entry`
    /// materialized, no counters or clocks read).
    #[inline]
    pub fn tuples(&self, id: EntryId) -> Option<(Tuple<A>, Tuple<A>)> {
        self.live_slot(id).map(|s| {
            (
                s.original.tuple(proto_of(s.kind)),
                s.reply.tuple(proto_of(s.reply_proto)),
            )
        })
    }

    /// [`Conntrack::peek`] for routing hints: the entry's original tuple, caller data and the
    /// direction `key` travels in, without materializing the `Entry`.
    #[inline]
    pub fn peek_route(&self, key: &Tuple<A>) -> Option<(Tuple<A>, u32, Direction)> {
        let (idx, dir) = unpack(self.find(key)?);
        let s = self.slot(idx)?;
        Some((s.original.tuple(proto_of(s.kind)), s.mark, dir))
    }

    /// The caller data of a live-or-unreclaimed entry (cheap, no `Entry` materialized).
    pub fn mark(&self, id: EntryId) -> Option<u32> {
        self.live_slot(id).map(|s| s.mark)
    }

    /// Replaces the caller data of an entry. False if `id` is stale.
    pub fn set_mark(&mut self, id: EntryId, mark: u32) -> bool {
        match slot_in_mut(&mut self.chunks, id.idx)
            .filter(|s| s.generation == id.generation && s.is_live())
        {
            Some(s) => {
                s.mark = mark;
                true
            }
            None => false,
        }
    }

    /// Removes an entry and both its keys. False if `id` is stale.
    pub fn remove(&mut self, id: EntryId) -> bool {
        self.live_slot(id).is_some() && self.remove_idx(id.idx)
    }

    /// Removes at most `budget` entries expired at `now` (counted
    /// `expired`), popping list heads: O(removed + number of lists).
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        self.advance(now);
        let mut removed = 0;
        for list in 0..NUM_LISTS {
            while removed < budget {
                let head = self.lists[list].head;
                let expired = self
                    .slot(head)
                    .is_some_and(|s| self.expires_at(s) <= self.clock);
                if !expired || !self.remove_idx(head) {
                    break;
                }
                removed += 1;
            }
        }
        self.counters.expired += removed as u64;
        removed
    }

    /// Removes every entry with `addr` on either side of either direction (a container went
    /// away: its flows must not outlive it and greet whoever gets the address next, as stale
    /// UDP entries do after a restart, kubernetes#71261); how many went.
    pub fn remove_address(&mut self, addr: A) -> usize {
        let has = |t: &Tuple<A>| t.src == addr || t.dst == addr;
        let doomed: Vec<EntryId> = self
            .iter()
            .map(|(id, _)| id)
            .filter(|&id| self.tuples(id).is_some_and(|(o, r)| has(&o) || has(&r)))
            .collect();
        doomed.into_iter().filter(|&id| self.remove(id)).count()
    }

    /// Removes every entry. Counters are kept; outstanding ids go stale.
    pub fn flush(&mut self) {
        self.record_all_destroyed();
        self.map.clear();
        self.lists = [EMPTY_LIST; NUM_LISTS];
        self.free_head = NIL;
        for (c, chunk) in self.chunks.iter_mut().enumerate().rev() {
            for (o, slot) in chunk.iter_mut().enumerate().rev() {
                if slot.is_live() {
                    slot.generation = slot.generation.wrapping_add(1);
                }
                slot.kind = FREE;
                slot.spill = 0;
                slot.prev = NIL;
                slot.next = self.free_head;
                self.free_head = u32::try_from(c << CHUNK_BITS | o).unwrap_or(NIL);
            }
        }
        self.wide.clear();
        self.late.clear();
        self.len = 0;
        self.per_source.clear();
        self.per_destination.clear();
    }

    /// Stored entries, including expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No entries stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Counts an invalid packet the caller rejected itself (e.g. a lone ACK
    /// with no entry).
    pub fn count_invalid(&mut self) {
        self.counters.invalid += 1;
    }

    /// Entries live at the table clock, in slab-index (= `EntryId`) order,
    /// which is deterministic for a given sequence of calls.
    pub fn iter(&self) -> impl Iterator<Item = (EntryId, Entry<A>)> + '_ {
        self.slots()
            .filter(|(_, s)| s.is_live() && self.expires_at(s) > self.clock)
            .map(|(idx, s)| {
                let id = EntryId {
                    idx,
                    generation: s.generation,
                };
                (id, self.entry_at(idx, s))
            })
    }

    /// Approximate memory per entry: one slab slot (96 bytes for IPv4, 144
    /// for IPv6) plus two index keys (an 8-byte bucket each, at the worst
    /// load of 0.7, just after the index grew). The slab grows by chunks of
    /// 256 slots, so it adds little on top; the side maps only hold entries
    /// whose counters outgrew `u32` or whose last packet did not refresh the
    /// timeout.
    pub const fn memory_per_entry() -> usize {
        std::mem::size_of::<Slot<A>>() + 2 * Index::BYTES_PER_KEY
    }

    // ---- internals ----

    #[inline]
    fn slot(&self, idx: u32) -> Option<&Slot<A>> {
        slot_in(&self.chunks, idx)
    }

    /// The slot `id` names, if current and holding an entry.
    #[inline]
    fn live_slot(&self, id: EntryId) -> Option<&Slot<A>> {
        self.slot(id.idx)
            .filter(|s| s.generation == id.generation && s.is_live())
    }

    /// Every slot with its index, in index order.
    fn slots(&self) -> impl Iterator<Item = (u32, &Slot<A>)> + '_ {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(move |(o, s)| (u32::try_from(c << CHUNK_BITS | o).unwrap_or(NIL), s))
        })
    }

    /// When a live slot's entry expires (0 for a free slot: callers check
    /// liveness first, or reach the slot through `find`).
    #[inline]
    fn expires_at(&self, s: &Slot<A>) -> u64 {
        let class = usize::from(LIST_OF_KIND[usize::from(s.kind)]) / 2;
        match self.timeouts.get(class) {
            Some(&t) => s.refreshed_at.saturating_add(t),
            None => 0,
        }
    }

    /// Builds the public view of the live slot at `idx`.
    fn entry_at(&self, idx: u32, s: &Slot<A>) -> Entry<A> {
        let hi = if s.spill & WIDE != 0 {
            self.wide.get(&idx).copied().unwrap_or_default()
        } else {
            [0; 4]
        };
        let last_seen = if s.spill & LATE != 0 {
            self.late.get(&idx).copied().unwrap_or(s.refreshed_at)
        } else {
            s.refreshed_at
        };
        Entry {
            original: s.original.tuple(proto_of(s.kind)),
            reply: s.reply.tuple(proto_of(s.reply_proto)),
            state: state_of(s.kind),
            assured: s.kind & ASSURED != 0,
            created: s.created,
            last_seen,
            expires_at: self.expires_at(s),
            packets: [join(hi[0], s.packets[0]), join(hi[1], s.packets[1])],
            bytes: [join(hi[2], s.bytes[0]), join(hi[3], s.bytes[1])],
            mark: s.mark,
        }
    }

    /// The index value of `key`: a candidate whose slot carries `key` in
    /// the direction the value names.
    #[inline]
    fn find(&self, key: &Tuple<A>) -> Option<u32> {
        self.map.candidates(tag_of(key)).find(|&v| {
            let (idx, dir) = unpack(v);
            self.slot(idx).is_some_and(|s| s.has_key(dir, key))
        })
    }

    /// Removes the entry at `idx` if it has expired; true if the slot is
    /// now free.
    fn reclaim_if_expired(&mut self, idx: u32) -> bool {
        let expired = self
            .slot(idx)
            .filter(|s| s.is_live())
            .is_none_or(|s| self.expires_at(s) <= self.clock);
        if expired && self.remove_idx(idx) {
            self.counters.expired += 1;
        }
        expired
    }

    /// Oldest (least recently refreshed) head among the unassured lists;
    /// ties go to the lower class index, so the choice is deterministic.
    fn early_drop_victim(&self) -> Option<u32> {
        let mut best: Option<(u64, u32)> = None;
        for list in (0..NUM_LISTS).step_by(2) {
            let head = self.lists[list].head;
            let Some(slot) = self.slot(head) else {
                continue;
            };
            if best.is_none_or(|(t, _)| slot.refreshed_at < t) {
                best = Some((slot.refreshed_at, head));
            }
        }
        best.map(|(_, idx)| idx)
    }

    /// Stores `new` in a free slot (the free list's head, else a new one at
    /// the end of the slab); returns its index and generation.
    fn alloc(&mut self, mut new: Slot<A>) -> (u32, u32) {
        let idx = self.free_head;
        if let Some(slot) = slot_in_mut(&mut self.chunks, idx) {
            self.free_head = slot.next;
            new.generation = slot.generation;
            *slot = new;
            return (idx, slot.generation);
        }
        let full = self.chunks.last().is_none_or(|c| c.len() >= CHUNK);
        if full {
            // The first chunk grows like any `Vec` (small tables stay small);
            // later ones are allocated whole.
            let cap = if self.chunks.is_empty() { 0 } else { CHUNK };
            self.chunks.push(Vec::with_capacity(cap));
        }
        let c = self.chunks.len() - 1;
        let chunk = &mut self.chunks[c];
        // `len < max_entries <= 2^31 - 1` so the index always fits.
        let idx = u32::try_from(c << CHUNK_BITS | chunk.len()).unwrap_or(NIL);
        chunk.push(new);
        (idx, 0)
    }

    /// Removes the entry at `idx` and its keys; false if it holds none.
    fn remove_idx(&mut self, idx: u32) -> bool {
        self.record(EventKind::Destroyed, idx);
        let Some(s) = self.slot(idx).filter(|s| s.is_live()) else {
            return false;
        };
        let original = s.original.tuple(proto_of(s.kind));
        let reply = s.reply.tuple(proto_of(s.reply_proto));
        let (list, spill) = (s.list(), s.spill);
        self.unlink(idx, list);
        if let Some(slot) = slot_in_mut(&mut self.chunks, idx) {
            slot.kind = FREE;
            slot.spill = 0;
            slot.generation = slot.generation.wrapping_add(1);
            slot.next = self.free_head;
        }
        self.free_head = idx;
        if spill & WIDE != 0 {
            self.wide.remove(&idx);
        }
        if spill & LATE != 0 {
            self.late.remove(&idx);
        }
        // Only drop keys that still point here (values are unique).
        self.map
            .remove(tag_of(&original), pack(idx, Direction::Original));
        self.map.remove(tag_of(&reply), pack(idx, Direction::Reply));
        self.len = self.len.saturating_sub(1);
        self.count_addresses(&original, &reply, false);
        true
    }

    fn link_tail(&mut self, idx: u32, list: usize) {
        let Some(l) = self.lists.get(list).copied() else {
            return;
        };
        let Some(slot) = slot_in_mut(&mut self.chunks, idx) else {
            return;
        };
        slot.prev = l.tail;
        slot.next = NIL;
        match slot_in_mut(&mut self.chunks, l.tail) {
            Some(tail) => tail.next = idx,
            None => self.lists[list].head = idx,
        }
        self.lists[list].tail = idx;
    }

    /// Takes `idx` out of `list`, the list it is in.
    fn unlink(&mut self, idx: u32, list: usize) {
        if list >= NUM_LISTS {
            return;
        }
        let Some(slot) = slot_in_mut(&mut self.chunks, idx) else {
            return;
        };
        let (prev, next) = (slot.prev, slot.next);
        slot.prev = NIL;
        slot.next = NIL;
        match slot_in_mut(&mut self.chunks, prev) {
            Some(p) => p.next = next,
            None => self.lists[list].head = next,
        }
        match slot_in_mut(&mut self.chunks, next) {
            Some(n) => n.prev = prev,
            None => self.lists[list].tail = prev,
        }
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut in_lists = 0;
        for (li, l) in self.lists.iter().enumerate() {
            let mut prev = NIL;
            let mut cur = l.head;
            let mut last_refresh = 0;
            while cur != NIL {
                let s = self.slot(cur).expect("listed slot exists");
                assert!(s.is_live(), "listed slot holds an entry");
                let e = self.entry_at(cur, s);
                assert_eq!(s.list(), li);
                assert_eq!(list_of(e.state, e.assured), li);
                assert_eq!(kind_of(e.state, e.assured), s.kind);
                assert_eq!(s.prev, prev);
                assert!(s.refreshed_at >= last_refresh, "list {li} not sorted");
                last_refresh = s.refreshed_at;
                assert_eq!(
                    e.expires_at,
                    s.refreshed_at
                        .saturating_add(class_timeout(&self.config.timeouts, li / 2))
                );
                assert!(e.last_seen >= s.refreshed_at && e.created <= s.refreshed_at);
                for (key, dir) in [
                    (e.original, Direction::Original),
                    (e.reply, Direction::Reply),
                ] {
                    let v = self.find(&key).expect("stored key is indexed");
                    assert_eq!(unpack(v).0, cur);
                    if e.original != e.reply {
                        assert_eq!(unpack(v).1, dir);
                    }
                }
                in_lists += 1;
                prev = cur;
                cur = s.next;
            }
            assert_eq!(l.tail, prev);
        }
        assert_eq!(in_lists, self.len);
        let live = || self.slots().filter(|(_, s)| s.is_live());
        assert_eq!(live().count(), self.len);
        assert!(self.len <= self.config.max_entries);
        for (i, c) in self.chunks.iter().enumerate() {
            assert!(c.len() <= CHUNK && c.capacity() <= CHUNK);
            assert!(i + 1 == self.chunks.len() || c.len() == CHUNK);
        }
        let keys: usize = live()
            .map(|(_, s)| {
                if s.original == s.reply && s.kind & 3 == s.reply_proto {
                    1
                } else {
                    2
                }
            })
            .sum();
        assert_eq!(self.map.len(), keys);
        for v in self.map.values() {
            assert!(self.slot(unpack(v).0).is_some_and(Slot::is_live));
        }
        self.map.check();
        let flagged = |flag| live().filter(move |(_, s)| s.spill & flag != 0);
        assert_eq!(flagged(WIDE).count(), self.wide.len());
        assert!(flagged(WIDE).all(|(i, _)| self.wide.contains_key(&i)));
        assert_eq!(flagged(LATE).count(), self.late.len());
        assert!(
            flagged(LATE).all(|(i, s)| self.late.get(&i).is_some_and(|&t| t != s.refreshed_at))
        );
        let mut per_source = FxHashMap::default();
        let mut per_destination = FxHashMap::default();
        for (i, s) in live() {
            let e = self.entry_at(i, s);
            if self.config.max_per_source > 0 {
                bump(&mut per_source, e.original.src, true);
            }
            if self.config.max_nat_per_destination > 0 && source_translated(&e.original, &e.reply) {
                bump(&mut per_destination, e.original.dst, true);
            }
        }
        assert_eq!(per_source, self.per_source);
        assert_eq!(per_destination, self.per_destination);
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_v6;
