//! The connection table: storage, lookup, per-packet tracking and expiry.
//!
//! Owns every [`Entry`]. Layout (OVS / VPP nat44-ed style):
//! - a slab (`Vec<Slot>` + free list threaded through `Slot::next`); an
//!   [`EntryId`] is a slab index plus the slot's generation, so a stale id
//!   never reaches a reused slot;
//! - one key index (`index::Index`, open addressing over 8-byte buckets)
//!   holding each entry twice, under its original and its reply tuple; the
//!   value packs `index << 1 | direction`, so one lookup yields both the
//!   entry and the packet's direction. The index stores hash tags, not keys:
//!   a lookup confirms a tag match against the slab entry's tuple;
//! - intrusive doubly-linked LRU lists, one per (timeout class, assured).
//!
//! Invariants:
//! - a slot is in exactly one list iff it holds an entry, and that list is
//!   the one `list_of(entry)` names;
//! - both keys of a stored entry map to it (one key when original == reply),
//!   and every map value points at a stored entry;
//! - every entry of a class shares one timeout and is appended at the tail
//!   with `expires_at = clock + timeout`, where `clock` never decreases (it is
//!   the high-water mark of every `now` seen, so a capture whose clock jumps
//!   backwards just makes time stand still). Hence each list is sorted by
//!   `expires_at` (and by last refresh): expiry pops heads, never scans;
//! - `len <= max_entries` at all times.
//!
//! Nothing here reads a clock, allocates randomness or panics on input: all
//! time arithmetic saturates and slab access goes through `get`.

use crate::config::{Config, Timeouts};
use crate::index::{Index, tag_of};
use crate::tcp::{self, Outcome, TcpSegment, TcpState, TcpTrack};
use crate::tuple::{Direction, Tuple};
use packet::L4Proto;
use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;

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

/// One tracked connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Tuple of the packet that created the entry.
    pub original: Tuple,
    /// Tuple reply packets carry on the wire (after NAT).
    pub reply: Tuple,
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

/// Event counters, cumulative since `new` (not reset by `flush`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Successful lookups.
    pub found: u64,
    /// Entries inserted.
    pub new: u64,
    /// Packets judged invalid (by `track`, or reported via `count_invalid`).
    pub invalid: u64,
    /// Inserts refused because the table was full of assured entries.
    pub dropped: u64,
    /// Unassured entries evicted to make room.
    pub early_dropped: u64,
    /// Inserts refused because the source address held `max_per_source` entries.
    pub source_limited: u64,
    /// Inserts refused because `max_nat_per_destination` translated entries went to that
    /// destination already.
    pub destination_limited: u64,
    /// Entries removed because they timed out (by `expire`, or lazily).
    pub expired: u64,
}

/// Why `insert` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
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
    SourceLimit(std::net::Ipv4Addr, u32),
    /// As many translated entries go to this destination as `max_nat_per_destination` allows.
    #[error("destination {0} has {1} translated connections, the per-destination limit")]
    DestinationLimit(std::net::Ipv4Addr, u32),
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

const NIL: u32 = u32::MAX;
const NO_LIST: u8 = u8::MAX;
/// Timeout classes (see `class_of`); each has one list per assured value.
const NUM_CLASSES: usize = 11;
const NUM_LISTS: usize = NUM_CLASSES * 2;
const CLASS_UDP_UNREPLIED: usize = 8;
const CLASS_UDP_ASSURED: usize = 9;
const CLASS_ICMP: usize = 10;
/// Expired entries reclaimed by an `insert` that finds the table full: one
/// slot is needed, a few more amortise the next inserts.
const RECLAIM_BUDGET: usize = 16;

fn class_of(state: State, assured: bool) -> usize {
    match state {
        // An entry awaiting its first SYN times out like SYN_SENT.
        State::Tcp(TcpState::None | TcpState::SynSent) => 0,
        State::Tcp(TcpState::SynRecv) => 1,
        State::Tcp(TcpState::Established) => 2,
        State::Tcp(TcpState::FinWait) => 3,
        State::Tcp(TcpState::CloseWait) => 4,
        State::Tcp(TcpState::LastAck) => 5,
        State::Tcp(TcpState::TimeWait) => 6,
        State::Tcp(TcpState::Close) => 7,
        State::Udp { .. } if assured => CLASS_UDP_ASSURED,
        State::Udp { .. } => CLASS_UDP_UNREPLIED,
        State::Icmp { .. } => CLASS_ICMP,
    }
}

fn class_timeout(t: &Timeouts, class: usize) -> u64 {
    match class {
        0 => t.tcp_syn_sent,
        1 => t.tcp_syn_recv,
        2 => t.tcp_established,
        3 => t.tcp_fin_wait,
        4 => t.tcp_close_wait,
        5 => t.tcp_last_ack,
        6 => t.tcp_time_wait,
        7 => t.tcp_close,
        CLASS_UDP_UNREPLIED => t.udp_unreplied,
        CLASS_UDP_ASSURED => t.udp_assured,
        _ => t.icmp,
    }
}

fn list_of(entry: &Entry) -> usize {
    class_of(entry.state, entry.assured) * 2 + usize::from(entry.assured)
}

#[derive(Clone, Debug)]
struct Slot {
    generation: u32,
    /// LRU neighbours while stored; `next` threads the free list otherwise.
    prev: u32,
    next: u32,
    list: u8,
    /// Table clock of the last timeout refresh: the list sort key, used to
    /// pick the oldest early-drop victim across lists.
    refreshed_at: u64,
    tcp: TcpTrack,
    entry: Option<Entry>,
}

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
pub struct Conntrack {
    config: Config,
    map: Index,
    slots: Vec<Slot>,
    free_head: u32,
    lists: [List; NUM_LISTS],
    len: usize,
    clock: u64,
    counters: Counters,
    /// Entries per original source address (kept only when `max_per_source` is set).
    per_source: FxHashMap<Ipv4Addr, u32>,
    /// Translated entries per original destination (kept only when `max_nat_per_destination`
    /// is set).
    per_destination: FxHashMap<Ipv4Addr, u32>,
}

/// Whether the entry's source was translated (masquerade, hairpin): the reply is not addressed
/// to the original source.
fn source_translated(original: &Tuple, reply: &Tuple) -> bool {
    reply.dst != original.src || reply.dst_port != original.src_port
}

/// Adds `delta` (+1 / -1) to `key`'s count, forgetting keys that reach zero.
fn bump(map: &mut FxHashMap<Ipv4Addr, u32>, key: Ipv4Addr, up: bool) {
    if up {
        *map.entry(key).or_insert(0) += 1;
    } else if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

fn pack(idx: u32, dir: Direction) -> u32 {
    (idx << 1) | dir.index() as u32
}

fn unpack(v: u32) -> (u32, Direction) {
    let dir = if v & 1 == 0 {
        Direction::Original
    } else {
        Direction::Reply
    };
    (v >> 1, dir)
}

impl Conntrack {
    /// An empty table. `max_entries` is clamped to
    /// [`Config::MAX_ENTRIES_LIMIT`]; nothing is preallocated.
    pub fn new(mut config: Config) -> Self {
        config.max_entries = config.max_entries.min(Config::MAX_ENTRIES_LIMIT);
        Conntrack {
            config,
            map: Index::default(),
            slots: Vec::new(),
            free_head: NIL,
            lists: [EMPTY_LIST; NUM_LISTS],
            len: 0,
            clock: 0,
            counters: Counters::default(),
            per_source: FxHashMap::default(),
            per_destination: FxHashMap::default(),
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
    pub fn lookup(&mut self, key: &Tuple, now: u64) -> Option<(EntryId, Direction)> {
        self.advance(now);
        let (idx, dir) = unpack(self.find(key)?);
        let slot = self.slots.get(idx as usize)?;
        let expires_at = slot.entry.as_ref()?.expires_at;
        let generation = slot.generation;
        if expires_at <= self.clock {
            if self.remove_idx(idx).is_some() {
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
    pub fn peek(&self, key: &Tuple) -> Option<(&Entry, Direction)> {
        let (idx, dir) = unpack(self.find(key)?);
        let entry = self.slots.get(idx as usize)?.entry.as_ref()?;
        Some((entry, dir))
    }

    /// Whether `key` belongs to an entry live at the table clock. No
    /// counters, no side effects (the NAT port allocator probes with it).
    /// An expired-but-unreclaimed entry counts as absent: `insert` reclaims
    /// such an entry when it collides with it.
    pub fn contains(&self, key: &Tuple) -> bool {
        self.find(key).is_some_and(|v| {
            let (idx, _) = unpack(v);
            self.slots
                .get(idx as usize)
                .and_then(|s| s.entry.as_ref())
                .is_some_and(|e| e.expires_at > self.clock)
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
        original: Tuple,
        reply: Tuple,
        mark: u32,
        now: u64,
    ) -> Result<EntryId, InsertError> {
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
        let list = class_of(state, false) * 2;
        let entry = Entry {
            original,
            reply,
            state,
            assured: false,
            created: self.clock,
            last_seen: self.clock,
            expires_at: self
                .clock
                .saturating_add(class_timeout(&self.config.timeouts, list / 2)),
            packets: [0; 2],
            bytes: [0; 2],
            mark,
        };
        let idx = self.alloc(entry);
        let generation = self.slots.get(idx as usize).map_or(0, |s| s.generation);
        self.map
            .insert(tag_of(&original), pack(idx, Direction::Original));
        if reply != original {
            self.map.insert(tag_of(&reply), pack(idx, Direction::Reply));
        }
        self.link_tail(idx, list);
        self.len += 1;
        self.counters.new += 1;
        self.count_addresses(&original, &reply, true);
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
        // Field access, not `live_slot_mut`, so the borrow stays disjoint
        // from `counters` and `config`.
        let Some(slot) = self
            .slots
            .get_mut(id.idx as usize)
            .filter(|s| s.generation == id.generation)
        else {
            self.counters.invalid += 1;
            return Verdict::Invalid;
        };
        let Some(entry) = slot.entry.as_mut() else {
            self.counters.invalid += 1;
            return Verdict::Invalid;
        };
        let old_list = list_of(entry);
        let refresh = match entry.state {
            State::Tcp(state) => {
                let outcome = match tcp {
                    Some(seg) => tcp::step(state, &mut slot.tcp, dir, seg),
                    None => Outcome::Invalid,
                };
                match outcome {
                    Outcome::Invalid => {
                        self.counters.invalid += 1;
                        return Verdict::Invalid;
                    }
                    Outcome::Reopen => return Verdict::Reopen,
                    Outcome::Ignore => false,
                    Outcome::Accept { state, refresh } => {
                        entry.state = State::Tcp(state);
                        if state == TcpState::Established && slot.tcp.seen_reply() {
                            entry.assured = true;
                        }
                        refresh
                    }
                }
            }
            State::Udp { replied } => {
                if replied {
                    entry.assured = true;
                } else if dir == Direction::Reply {
                    entry.state = State::Udp { replied: true };
                }
                true
            }
            State::Icmp { .. } => {
                if dir == Direction::Reply {
                    entry.state = State::Icmp { replied: true };
                }
                true
            }
        };
        let d = dir.index();
        entry.packets[d] = entry.packets[d].saturating_add(1);
        entry.bytes[d] = entry.bytes[d].saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        entry.last_seen = clock;
        let new_list = list_of(entry);
        // Changing list always refreshes: the entry must join the new list
        // at its tail with that list's timeout to keep the list sorted.
        if refresh || new_list != old_list {
            entry.expires_at =
                clock.saturating_add(class_timeout(&self.config.timeouts, new_list / 2));
            slot.refreshed_at = clock;
            // Already the tail of its list (one busy flow): moving it there is a no-op.
            let at_tail = self.lists.get(new_list).is_some_and(|l| l.tail == id.idx);
            if new_list != old_list || !at_tail {
                self.unlink(id.idx);
                self.link_tail(id.idx, new_list);
            }
        }
        Verdict::Accept
    }

    /// The entry behind `id`, if `id` is still current (expired entries not
    /// yet reclaimed are still returned).
    pub fn entry(&self, id: EntryId) -> Option<&Entry> {
        self.slots
            .get(id.idx as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.entry.as_ref())
    }

    /// Replaces the caller data of an entry. False if `id` is stale.
    pub fn set_mark(&mut self, id: EntryId, mark: u32) -> bool {
        match self.live_slot_mut(id).and_then(|s| s.entry.as_mut()) {
            Some(e) => {
                e.mark = mark;
                true
            }
            None => false,
        }
    }

    /// Removes an entry and both its keys. False if `id` is stale.
    pub fn remove(&mut self, id: EntryId) -> bool {
        if self.entry(id).is_none() {
            return false;
        }
        self.remove_idx(id.idx).is_some()
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
                    .slots
                    .get(head as usize)
                    .and_then(|s| s.entry.as_ref())
                    .is_some_and(|e| e.expires_at <= self.clock);
                if !expired || self.remove_idx(head).is_none() {
                    break;
                }
                removed += 1;
            }
        }
        self.counters.expired += removed as u64;
        removed
    }

    /// Removes every entry. Counters are kept; outstanding ids go stale.
    pub fn flush(&mut self) {
        self.map.clear();
        self.lists = [EMPTY_LIST; NUM_LISTS];
        self.free_head = NIL;
        for (i, slot) in self.slots.iter_mut().enumerate().rev() {
            if slot.entry.take().is_some() {
                slot.generation = slot.generation.wrapping_add(1);
            }
            slot.prev = NIL;
            slot.next = self.free_head;
            slot.list = NO_LIST;
            self.free_head = u32::try_from(i).unwrap_or(NIL);
        }
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
    pub fn iter(&self) -> impl Iterator<Item = (EntryId, &Entry)> + '_ {
        let clock = self.clock;
        self.slots.iter().enumerate().filter_map(move |(i, s)| {
            let e = s.entry.as_ref().filter(|e| e.expires_at > clock)?;
            let idx = u32::try_from(i).ok()?;
            Some((
                EntryId {
                    idx,
                    generation: s.generation,
                },
                e,
            ))
        })
    }

    /// Approximate memory per entry: one slab slot plus two index keys (an
    /// 8-byte bucket each, at the worst load of a quarter, just after the
    /// index doubled). `Vec` doubling can add up to 2x on the slab part.
    pub const fn entry_memory_bytes() -> usize {
        std::mem::size_of::<Slot>() + 2 * Index::BYTES_PER_KEY
    }

    // ---- internals ----

    /// The index value of `key`: a candidate whose slab entry carries `key`
    /// in the direction the value names.
    #[inline]
    fn find(&self, key: &Tuple) -> Option<u32> {
        self.map
            .candidates(tag_of(key))
            .find(|&v| self.key_at(v) == Some(key))
    }

    #[inline]
    fn key_at(&self, v: u32) -> Option<&Tuple> {
        let (idx, dir) = unpack(v);
        let e = self.slots.get(idx as usize)?.entry.as_ref()?;
        Some(match dir {
            Direction::Original => &e.original,
            Direction::Reply => &e.reply,
        })
    }

    fn live_slot_mut(&mut self, id: EntryId) -> Option<&mut Slot> {
        self.slots
            .get_mut(id.idx as usize)
            .filter(|s| s.generation == id.generation && s.entry.is_some())
    }

    /// Removes the entry at `idx` if it has expired; true if the slot is
    /// now free.
    fn reclaim_if_expired(&mut self, idx: u32) -> bool {
        let expired = self
            .slots
            .get(idx as usize)
            .and_then(|s| s.entry.as_ref())
            .is_none_or(|e| e.expires_at <= self.clock);
        if expired && self.remove_idx(idx).is_some() {
            self.counters.expired += 1;
        }
        expired
    }

    /// Refuses an insert that would exceed the per-source or per-destination limit. Expired
    /// entries still count until reclaimed, so an over-limit insert first reclaims a bounded
    /// number of the table's oldest expired entries (any source's; housekeeping reaches the
    /// rest), then counts again.
    fn check_address_limits(&mut self, original: &Tuple, reply: &Tuple) -> Result<(), InsertError> {
        let (src_max, dst_max) = (
            self.config.max_per_source,
            self.config.max_nat_per_destination,
        );
        let translated = source_translated(original, reply);
        let over = |t: &Self| {
            let src_n = t.per_source.get(&original.src).copied().unwrap_or(0);
            let dst_n = t.per_destination.get(&original.dst).copied().unwrap_or(0);
            if src_max > 0 && src_n >= src_max {
                Some(InsertError::SourceLimit(original.src, src_max))
            } else if dst_max > 0 && translated && dst_n >= dst_max {
                Some(InsertError::DestinationLimit(original.dst, dst_max))
            } else {
                None
            }
        };
        if over(self).is_some() {
            self.expire(self.clock, RECLAIM_BUDGET);
        }
        match over(self) {
            None => Ok(()),
            Some(e) => {
                match e {
                    InsertError::SourceLimit(..) => self.counters.source_limited += 1,
                    _ => self.counters.destination_limited += 1,
                }
                Err(e)
            }
        }
    }

    fn count_addresses(&mut self, original: &Tuple, reply: &Tuple, up: bool) {
        if self.config.max_per_source > 0 {
            bump(&mut self.per_source, original.src, up);
        }
        if self.config.max_nat_per_destination > 0 && source_translated(original, reply) {
            bump(&mut self.per_destination, original.dst, up);
        }
    }

    /// Entries held by one original source address (0 unless `max_per_source` is set).
    pub fn source_count(&self, src: Ipv4Addr) -> u32 {
        self.per_source.get(&src).copied().unwrap_or(0)
    }

    /// Oldest (least recently refreshed) head among the unassured lists;
    /// ties go to the lower class index, so the choice is deterministic.
    fn early_drop_victim(&self) -> Option<u32> {
        let mut best: Option<(u64, u32)> = None;
        for list in (0..NUM_LISTS).step_by(2) {
            let head = self.lists[list].head;
            let Some(slot) = self.slots.get(head as usize) else {
                continue;
            };
            if best.is_none_or(|(t, _)| slot.refreshed_at < t) {
                best = Some((slot.refreshed_at, head));
            }
        }
        best.map(|(_, idx)| idx)
    }

    fn alloc(&mut self, entry: Entry) -> u32 {
        let clock = self.clock;
        if let Some(slot) = self.slots.get_mut(self.free_head as usize) {
            let idx = self.free_head;
            self.free_head = slot.next;
            slot.entry = Some(entry);
            slot.tcp = TcpTrack::default();
            slot.refreshed_at = clock;
            return idx;
        }
        // `len < max_entries <= 2^31 - 1` so the index always fits.
        let idx = u32::try_from(self.slots.len()).unwrap_or(NIL);
        self.slots.push(Slot {
            generation: 0,
            prev: NIL,
            next: NIL,
            list: NO_LIST,
            refreshed_at: clock,
            tcp: TcpTrack::default(),
            entry: Some(entry),
        });
        idx
    }

    fn remove_idx(&mut self, idx: u32) -> Option<Entry> {
        self.unlink(idx);
        let slot = self.slots.get_mut(idx as usize)?;
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.next = self.free_head;
        self.free_head = idx;
        // Only drop keys that still point here (values are unique).
        self.map
            .remove(tag_of(&entry.original), pack(idx, Direction::Original));
        self.map
            .remove(tag_of(&entry.reply), pack(idx, Direction::Reply));
        self.len = self.len.saturating_sub(1);
        self.count_addresses(&entry.original, &entry.reply, false);
        Some(entry)
    }

    fn link_tail(&mut self, idx: u32, list: usize) {
        let Some(l) = self.lists.get(list).copied() else {
            return;
        };
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        slot.prev = l.tail;
        slot.next = NIL;
        slot.list = list as u8;
        match self.slots.get_mut(l.tail as usize) {
            Some(tail) => tail.next = idx,
            None => self.lists[list].head = idx,
        }
        self.lists[list].tail = idx;
    }

    fn unlink(&mut self, idx: u32) {
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return;
        };
        let (prev, next, list) = (slot.prev, slot.next, usize::from(slot.list));
        if list >= NUM_LISTS {
            return;
        }
        slot.prev = NIL;
        slot.next = NIL;
        slot.list = NO_LIST;
        match self.slots.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.lists[list].head = next,
        }
        match self.slots.get_mut(next as usize) {
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
            let mut last_exp = 0;
            while cur != NIL {
                let s = &self.slots[cur as usize];
                let e = s.entry.as_ref().expect("listed slot holds an entry");
                assert_eq!(usize::from(s.list), li);
                assert_eq!(list_of(e), li);
                assert_eq!(s.prev, prev);
                assert!(e.expires_at >= last_exp, "list {li} not sorted");
                last_exp = e.expires_at;
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
        assert_eq!(
            self.slots.iter().filter(|s| s.entry.is_some()).count(),
            self.len
        );
        assert!(self.len <= self.config.max_entries);
        let keys: usize = self
            .slots
            .iter()
            .filter_map(|s| s.entry.as_ref())
            .map(|e| if e.original == e.reply { 1 } else { 2 })
            .sum();
        assert_eq!(self.map.len(), keys);
        for v in self.map.values() {
            assert!(self.slots[unpack(v).0 as usize].entry.is_some());
        }
        let mut per_source = FxHashMap::default();
        let mut per_destination = FxHashMap::default();
        for e in self.slots.iter().filter_map(|s| s.entry.as_ref()) {
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
mod tests {
    use super::*;
    use Direction::{Original as O, Reply as R};
    use std::net::Ipv4Addr;

    const S: u64 = 1_000_000_000;
    const SYN: u8 = TcpSegment::FLAG_SYN;
    const ACK: u8 = TcpSegment::FLAG_ACK;
    const FIN: u8 = TcpSegment::FLAG_FIN;
    const RST: u8 = TcpSegment::FLAG_RST;

    fn seg(flags: u8, seq: u32, ack_no: u32) -> TcpSegment {
        TcpSegment::from_flags(flags, seq, ack_no, 0)
    }

    fn tuple(proto: L4Proto, sport: u16) -> Tuple {
        Tuple::new(
            proto,
            Ipv4Addr::new(172, 17, 0, 2),
            sport,
            Ipv4Addr::new(1, 2, 3, 4),
            80,
        )
    }

    fn table(max: usize) -> Conntrack {
        Conntrack::new(Config {
            max_entries: max,
            ..Config::default()
        })
    }

    fn tcp_state(ct: &Conntrack, id: EntryId) -> TcpState {
        match ct.entry(id).map(|e| e.state) {
            Some(State::Tcp(s)) => s,
            other => panic!("not tcp: {other:?}"),
        }
    }

    /// Client ISN 1000, server ISN 5000; returns the id in ESTABLISHED.
    fn handshake(ct: &mut Conntrack, sport: u16, now: u64) -> EntryId {
        let t = tuple(L4Proto::Tcp, sport);
        let id = ct.insert(t, t.reversed(), 0, now).unwrap();
        assert_eq!(
            ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, now),
            Verdict::Accept
        );
        assert_eq!(tcp_state(ct, id), TcpState::SynSent);
        assert_eq!(
            ct.track(id, R, Some(&seg(SYN | ACK, 5000, 1001)), 60, now),
            Verdict::Accept
        );
        assert_eq!(tcp_state(ct, id), TcpState::SynRecv);
        assert!(!ct.entry(id).unwrap().assured);
        assert_eq!(
            ct.track(id, O, Some(&seg(ACK, 1001, 5001)), 52, now),
            Verdict::Accept
        );
        assert_eq!(tcp_state(ct, id), TcpState::Established);
        id
    }

    #[test]
    fn handshake_reaches_established_and_assured() {
        let mut ct = table(16);
        let id = handshake(&mut ct, 1234, 0);
        let e = ct.entry(id).unwrap();
        assert!(e.assured);
        assert_eq!(e.packets, [2, 1]);
        assert_eq!(e.bytes, [112, 60]);
        assert_eq!(e.expires_at, 432_000 * S);
        ct.check_invariants();
    }

    #[test]
    fn client_close_first_reaches_time_wait() {
        let mut ct = table(16);
        let id = handshake(&mut ct, 1, 0);
        let steps = [
            (O, FIN | ACK, 1001, 5001, TcpState::FinWait),
            (R, ACK, 5001, 1002, TcpState::CloseWait),
            (R, FIN | ACK, 5001, 1002, TcpState::LastAck),
            (O, ACK, 1002, 5002, TcpState::TimeWait),
        ];
        for (dir, flags, seq, ack, want) in steps {
            assert_eq!(
                ct.track(id, dir, Some(&seg(flags, seq, ack)), 40, S),
                Verdict::Accept
            );
            assert_eq!(tcp_state(&ct, id), want);
        }
        assert_eq!(ct.entry(id).unwrap().expires_at, S + 120 * S);
        ct.check_invariants();
    }

    #[test]
    fn server_close_first_and_simultaneous_fin_reach_time_wait() {
        let mut ct = table(16);
        let id = handshake(&mut ct, 1, 0);
        assert_eq!(
            ct.track(id, R, Some(&seg(FIN | ACK, 5001, 1001)), 40, S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), TcpState::FinWait);
        assert_eq!(ct.entry(id).unwrap().expires_at, S + 120 * S);
        // Client FIN+ACK before any pure ACK: straight to LAST_ACK.
        assert_eq!(
            ct.track(id, O, Some(&seg(FIN | ACK, 1001, 5002)), 40, S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), TcpState::LastAck);
        assert_eq!(ct.entry(id).unwrap().expires_at, S + 30 * S);
        assert_eq!(
            ct.track(id, R, Some(&seg(ACK, 5002, 1002)), 40, S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), TcpState::TimeWait);
        // A SYN on TIME_WAIT reopens.
        assert_eq!(
            ct.track(id, O, Some(&seg(SYN, 77, 0)), 40, S),
            Verdict::Reopen
        );
        assert_eq!(tcp_state(&ct, id), TcpState::TimeWait);
    }

    #[test]
    fn exact_rst_closes_inexact_is_invalid() {
        let mut ct = table(16);
        let id = handshake(&mut ct, 1, 0);
        let exp = ct.entry(id).unwrap().expires_at;
        assert_eq!(
            ct.track(id, O, Some(&seg(RST, 1_000_000, 0)), 40, S),
            Verdict::Invalid
        );
        assert_eq!(tcp_state(&ct, id), TcpState::Established);
        assert_eq!(
            ct.entry(id).unwrap().expires_at,
            exp,
            "invalid must not refresh"
        );
        assert_eq!(
            ct.entry(id).unwrap().packets,
            [2, 1],
            "invalid must not be counted"
        );
        assert_eq!(ct.counters().invalid, 1);
        assert_eq!(
            ct.track(id, R, Some(&seg(RST | ACK, 5001, 1001)), 40, 2 * S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), TcpState::Close);
        assert_eq!(ct.entry(id).unwrap().expires_at, 12 * S);
        assert!(ct.entry(id).unwrap().assured, "assured is sticky");
        ct.check_invariants();
    }

    #[test]
    fn rst_in_syn_sent_must_ack_the_syn() {
        let mut ct = table(16);
        let t = tuple(L4Proto::Tcp, 9);
        let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
        ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 0);
        assert_eq!(
            ct.track(id, R, Some(&seg(RST | ACK, 0, 999)), 40, 0),
            Verdict::Invalid
        );
        assert_eq!(
            ct.track(id, R, Some(&seg(RST, 0, 1001)), 40, 0),
            Verdict::Invalid
        );
        assert_eq!(tcp_state(&ct, id), TcpState::SynSent);
        assert_eq!(
            ct.track(id, R, Some(&seg(RST | ACK, 0, 1001)), 40, 0),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), TcpState::Close);
        assert!(!ct.entry(id).unwrap().assured);
    }

    #[test]
    fn client_rst_in_syn_sent_closes_so_the_retried_syn_reopens() {
        // The server still holds the tuple in TIME_WAIT: it answers the SYN with a challenge
        // ACK for the old connection, the client resets with that ACK's number as sequence.
        let mut ct = table(16);
        let t = tuple(L4Proto::Tcp, 9);
        let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
        ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 0);
        assert_eq!(
            ct.track(id, R, Some(&seg(ACK, 777_000, 555_000)), 40, 0),
            Verdict::Accept,
            "the challenge ACK is let through untracked"
        );
        assert_eq!(
            ct.track(id, O, Some(&seg(RST, 555_000, 0)), 40, S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), TcpState::Close);
        assert_eq!(
            ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 2 * S),
            Verdict::Reopen
        );
    }

    #[test]
    fn blind_rst_in_syn_sent_does_not_close() {
        let mut ct = table(16);
        let t = tuple(L4Proto::Tcp, 9);
        let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
        ct.track(id, O, Some(&seg(SYN, 1000, 0)), 60, 0);
        ct.track(id, O, Some(&seg(RST, 123_456, 0)), 40, 0);
        assert_eq!(
            tcp_state(&ct, id),
            TcpState::SynSent,
            "a guessed RST is ignored"
        );
        ct.track(id, O, Some(&seg(RST, 1001, 0)), 40, 0);
        assert_eq!(
            tcp_state(&ct, id),
            TcpState::Close,
            "in sequence with the SYN"
        );
    }

    #[test]
    fn syn_on_established_then_challenge_ack_rst_and_reopen() {
        let mut ct = table(16);
        let id = handshake(&mut ct, 1, 0);
        ct.track(
            id,
            O,
            Some(&TcpSegment::from_flags(ACK, 1001, 5001, 100)),
            140,
            0,
        );
        let exp = ct.entry(id).unwrap().expires_at;
        // Client restarted: new SYN with a fresh ISN passes, state kept.
        assert_eq!(
            ct.track(id, O, Some(&seg(SYN, 90_000, 0)), 60, S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), TcpState::Established);
        assert_eq!(
            ct.entry(id).unwrap().expires_at,
            exp,
            "ignored SYN does not refresh"
        );
        assert_eq!(ct.counters().invalid, 0);
        // Server's challenge ACK acknowledges the old stream.
        assert_eq!(
            ct.track(id, R, Some(&seg(ACK, 5001, 1101)), 40, S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), TcpState::Established);
        // Client answers the challenge ACK with RST seq = its ack number.
        assert_eq!(
            ct.track(id, O, Some(&seg(RST, 1101, 0)), 40, S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id), TcpState::Close);
        // Retransmitted SYN: caller must start over.
        assert_eq!(
            ct.track(id, O, Some(&seg(SYN, 90_000, 0)), 60, 2 * S),
            Verdict::Reopen
        );
        assert!(ct.remove(id));
        let t = tuple(L4Proto::Tcp, 1);
        let id2 = ct.insert(t, t.reversed(), 0, 2 * S).unwrap();
        assert_ne!(id2, id);
        assert_eq!(
            ct.track(id2, O, Some(&seg(SYN, 90_000, 0)), 60, 2 * S),
            Verdict::Accept
        );
        assert_eq!(tcp_state(&ct, id2), TcpState::SynSent);
        assert!(ct.entry(id).is_none(), "old id is stale");
        ct.check_invariants();
    }

    #[test]
    fn invalid_flags_and_missing_segment_are_invalid() {
        let mut ct = table(16);
        let id = handshake(&mut ct, 1, 0);
        assert_eq!(
            ct.track(id, O, Some(&seg(SYN | FIN, 1001, 0)), 40, 0),
            Verdict::Invalid
        );
        assert_eq!(
            ct.track(id, O, Some(&seg(SYN | RST, 1001, 0)), 40, 0),
            Verdict::Invalid
        );
        assert_eq!(
            ct.track(id, O, Some(&seg(0, 1001, 0)), 40, 0),
            Verdict::Invalid
        );
        assert_eq!(ct.track(id, O, None, 40, 0), Verdict::Invalid);
        assert_eq!(ct.counters().invalid, 4);
        assert_eq!(tcp_state(&ct, id), TcpState::Established);
        ct.count_invalid();
        assert_eq!(ct.counters().invalid, 5);
    }

    #[test]
    fn udp_unreplied_then_replied_then_assured() {
        let mut ct = table(16);
        let t = tuple(L4Proto::Udp, 5353);
        let id = ct.insert(t, t.reversed(), 7, 0).unwrap();
        assert_eq!(ct.entry(id).unwrap().expires_at, 30 * S);
        ct.track(id, O, None, 100, S);
        assert_eq!(ct.entry(id).unwrap().expires_at, 31 * S);
        ct.track(id, R, None, 100, 2 * S);
        let e = ct.entry(id).unwrap();
        assert_eq!(e.state, State::Udp { replied: true });
        assert!(!e.assured);
        assert_eq!(e.expires_at, 32 * S);
        ct.track(id, O, None, 100, 3 * S);
        let e = ct.entry(id).unwrap();
        assert!(e.assured);
        assert_eq!(e.expires_at, 123 * S);
        assert_eq!(e.packets, [2, 1]);
        assert_eq!(e.mark, 7);
        ct.check_invariants();
    }

    #[test]
    fn icmp_replied_on_echo_reply_and_expires() {
        let mut ct = table(16);
        let t = Tuple::new(
            L4Proto::Icmp,
            Ipv4Addr::new(10, 0, 0, 1),
            42,
            Ipv4Addr::new(8, 8, 8, 8),
            42,
        );
        let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
        ct.track(id, O, None, 84, 0);
        assert_eq!(ct.lookup(&t.reversed(), S), Some((id, R)));
        ct.track(id, R, None, 84, S);
        let e = ct.entry(id).unwrap();
        assert_eq!(e.state, State::Icmp { replied: true });
        assert!(!e.assured);
        assert_eq!(e.expires_at, 31 * S);
        assert_eq!(ct.expire(31 * S - 1, 10), 0);
        assert_eq!(ct.expire(31 * S, 10), 1);
        assert!(ct.is_empty());
        assert!(!ct.contains(&t));
    }

    #[test]
    fn lookup_both_directions_and_with_nat_reply() {
        let mut ct = table(16);
        let orig = tuple(L4Proto::Tcp, 1234);
        let reply = Tuple::new(
            L4Proto::Tcp,
            orig.dst,
            80,
            Ipv4Addr::new(203, 0, 113, 2),
            40000,
        );
        let id = ct.insert(orig, reply, 0, 0).unwrap();
        assert_eq!(ct.lookup(&orig, 0), Some((id, O)));
        assert_eq!(ct.lookup(&reply, 0), Some((id, R)));
        assert_eq!(ct.lookup(&orig.reversed(), 0), None);
        assert!(ct.contains(&reply));
        assert_eq!(ct.counters().found, 2);
        assert_eq!(
            ct.insert(orig, orig.reversed(), 0, 0),
            Err(InsertError::Exists)
        );
        assert_eq!(
            ct.insert(tuple(L4Proto::Tcp, 9), reply, 0, 0),
            Err(InsertError::Exists)
        );
        assert_eq!(ct.len(), 1);
        assert!(ct.remove(id));
        assert!(!ct.remove(id));
        assert!(!ct.contains(&orig) && !ct.contains(&reply));
        ct.check_invariants();
    }

    #[test]
    fn self_reversed_tuple_is_stored_once() {
        let mut ct = table(4);
        let a = Ipv4Addr::new(127, 0, 0, 1);
        let t = Tuple::new(L4Proto::Icmp, a, 7, a, 7);
        assert_eq!(t.reversed(), t);
        let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
        assert_eq!(ct.lookup(&t, 0), Some((id, O)));
        ct.check_invariants();
        assert!(ct.remove(id));
        assert!(ct.is_empty());
        ct.check_invariants();
    }

    #[test]
    fn lookup_lazily_removes_expired() {
        let mut ct = table(16);
        let t = tuple(L4Proto::Udp, 1);
        let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
        assert!(ct.lookup(&t, 30 * S - 1).is_some());
        assert_eq!(ct.lookup(&t.reversed(), 30 * S), None);
        assert_eq!(ct.len(), 0);
        assert_eq!(ct.counters().expired, 1);
        assert!(ct.entry(id).is_none());
        assert_eq!(ct.track(id, O, None, 1, 30 * S), Verdict::Invalid);
        ct.check_invariants();
    }

    #[test]
    fn insert_reclaims_expired_colliding_key() {
        let mut ct = table(16);
        let t = tuple(L4Proto::Udp, 1);
        ct.insert(t, t.reversed(), 0, 0).unwrap();
        ct.expire(100 * S, 0); // moves the clock only
        assert!(!ct.contains(&t), "expired entry is not 'taken'");
        assert_eq!(ct.len(), 1);
        assert!(ct.insert(t, t.reversed(), 0, 100 * S).is_ok());
        assert_eq!(ct.len(), 1);
        assert_eq!(ct.counters().expired, 1);
        ct.check_invariants();
    }

    #[test]
    fn expiry_pops_in_order_and_respects_budget() {
        let mut ct = table(64);
        let mut ids = Vec::new();
        for i in 0..10u16 {
            let t = tuple(L4Proto::Udp, i);
            ids.push(ct.insert(t, t.reversed(), 0, u64::from(i) * S).unwrap());
        }
        // Refresh #0 at t=9s: it moves behind all others.
        ct.track(ids[0], O, None, 1, 9 * S);
        assert_eq!(ct.expire(35 * S, 3), 3);
        let live: Vec<_> = ct.iter().map(|(id, _)| id).collect();
        // #4 and #5 are expired but not yet reclaimed: stored, not listed.
        assert_eq!(ct.len(), 7);
        assert_eq!(live, vec![ids[0], ids[6], ids[7], ids[8], ids[9]]);
        assert_eq!(ct.expire(35 * S, 100), 2);
        assert_eq!(ct.len(), 5);
        assert_eq!(ct.expire(u64::MAX, 100), 5);
        assert_eq!(ct.counters().expired, 10);
        ct.check_invariants();
    }

    #[test]
    fn clock_going_backwards_does_not_underflow_or_expire_early() {
        let mut ct = table(16);
        let t = tuple(L4Proto::Udp, 1);
        let id = ct.insert(t, t.reversed(), 0, 100 * S).unwrap();
        // Backwards jump: time stands still at 100 s.
        ct.track(id, O, None, 1, 5 * S);
        let e = ct.entry(id).unwrap();
        assert_eq!(e.last_seen, 100 * S);
        assert_eq!(e.expires_at, 130 * S);
        assert_eq!(ct.expire(0, 10), 0);
        assert!(ct.lookup(&t, 0).is_some());
        assert_eq!(ct.now(), 100 * S);
        // Saturation at the top of the clock.
        let u = tuple(L4Proto::Udp, 2);
        let id2 = ct.insert(u, u.reversed(), 0, u64::MAX - 1).unwrap();
        assert_eq!(ct.entry(id2).unwrap().expires_at, u64::MAX);
        ct.check_invariants();
    }

    #[test]
    fn early_drop_takes_oldest_unassured_never_assured() {
        let mut ct = table(3);
        let assured = handshake(&mut ct, 1, 0);
        let u1 = tuple(L4Proto::Udp, 10);
        let u2 = tuple(L4Proto::Udp, 11);
        let a = ct.insert(u1, u1.reversed(), 0, S).unwrap();
        let b = ct.insert(u2, u2.reversed(), 0, 2 * S).unwrap();
        // Refresh `a` so `b` becomes the oldest.
        ct.track(a, O, None, 1, 3 * S);
        let u3 = tuple(L4Proto::Udp, 12);
        let c = ct.insert(u3, u3.reversed(), 0, 4 * S).unwrap();
        assert!(ct.entry(b).is_none(), "oldest unassured dropped");
        assert!(ct.entry(a).is_some() && ct.entry(c).is_some());
        assert!(ct.entry(assured).is_some());
        assert_eq!(ct.counters().early_dropped, 1);
        assert_eq!(ct.len(), 3);
        ct.check_invariants();
    }

    #[test]
    fn per_source_limit_refuses_only_that_source() {
        let mut ct = Conntrack::new(Config {
            max_per_source: 2,
            ..Config::default()
        });
        let a = ct.insert(
            tuple(L4Proto::Udp, 1),
            tuple(L4Proto::Udp, 1).reversed(),
            0,
            0,
        );
        let b = ct.insert(
            tuple(L4Proto::Udp, 2),
            tuple(L4Proto::Udp, 2).reversed(),
            0,
            0,
        );
        assert!(a.is_ok() && b.is_ok());
        let t = tuple(L4Proto::Udp, 3);
        let err = ct.insert(t, t.reversed(), 0, 0).unwrap_err();
        assert_eq!(err, InsertError::SourceLimit(t.src, 2));
        assert_eq!(ct.counters().source_limited, 1);
        // Another source is not affected.
        let other = Tuple {
            src: Ipv4Addr::new(172, 17, 0, 3),
            ..t
        };
        assert!(ct.insert(other, other.reversed(), 0, 0).is_ok());
        assert_eq!(ct.source_count(t.src), 2);
        // Once the first source's entries time out, it may open new ones.
        assert!(ct.insert(t, t.reversed(), 0, 31 * S).is_ok());
        assert_eq!(ct.source_count(t.src), 1);
        ct.check_invariants();
        ct.flush();
        assert_eq!(ct.source_count(t.src), 0);
        ct.check_invariants();
    }

    #[test]
    fn per_destination_limit_counts_translated_entries_only() {
        let mut ct = Conntrack::new(Config {
            max_nat_per_destination: 1,
            ..Config::default()
        });
        let masq = |t: Tuple, port: u16| Tuple {
            src: t.dst,
            src_port: t.dst_port,
            dst: Ipv4Addr::new(192, 0, 2, 1),
            dst_port: port,
            proto: t.proto,
        };
        let (t1, t2) = (tuple(L4Proto::Tcp, 1), tuple(L4Proto::Tcp, 2));
        // Untranslated entries to the destination do not count.
        let t0 = tuple(L4Proto::Tcp, 9);
        ct.insert(t0, t0.reversed(), 0, 0).unwrap();
        let id = ct.insert(t1, masq(t1, 40000), 0, 0).unwrap();
        let err = ct.insert(t2, masq(t2, 40001), 0, 0).unwrap_err();
        assert_eq!(err, InsertError::DestinationLimit(t1.dst, 1));
        assert_eq!(ct.counters().destination_limited, 1);
        ct.check_invariants();
        assert!(ct.remove(id));
        assert!(ct.insert(t2, masq(t2, 40001), 0, 0).is_ok());
        ct.check_invariants();
    }

    #[test]
    fn table_full_when_only_assured_remain() {
        let mut ct = table(2);
        let a = handshake(&mut ct, 1, 0);
        let b = handshake(&mut ct, 2, 0);
        let u = tuple(L4Proto::Udp, 10);
        let err = ct.insert(u, u.reversed(), 0, S).unwrap_err();
        assert_eq!(err, InsertError::TableFull { max_entries: 2 });
        assert!(err.to_string().contains("conntrack table full (2 entries)"));
        assert_eq!(ct.counters().dropped, 1);
        assert!(ct.entry(a).is_some() && ct.entry(b).is_some());
        // Once one expires, the insert reclaims it instead.
        let later = 432_000 * S + 1;
        assert!(ct.insert(u, u.reversed(), 0, later).is_ok());
        assert_eq!(ct.counters().expired, 2);
        ct.check_invariants();
    }

    #[test]
    fn zero_capacity_refuses_without_panicking() {
        let mut ct = table(0);
        let u = tuple(L4Proto::Udp, 1);
        assert!(matches!(
            ct.insert(u, u.reversed(), 0, 0),
            Err(InsertError::TableFull { .. })
        ));
        assert!(ct.is_empty());
    }

    #[test]
    fn flush_empties_and_stales_ids() {
        let mut ct = table(16);
        let t = tuple(L4Proto::Udp, 1);
        let id = ct.insert(t, t.reversed(), 0, 0).unwrap();
        ct.flush();
        assert!(ct.is_empty());
        assert!(ct.entry(id).is_none());
        assert!(!ct.contains(&t));
        let id2 = ct.insert(t, t.reversed(), 0, 0).unwrap();
        assert_ne!(id, id2);
        assert_eq!(ct.counters().new, 2);
        ct.check_invariants();
    }

    #[test]
    fn set_mark_and_memory_estimate() {
        let mut ct = table(4);
        let t = tuple(L4Proto::Udp, 1);
        let id = ct.insert(t, t.reversed(), 1, 0).unwrap();
        assert!(ct.set_mark(id, 9));
        assert_eq!(ct.entry(id).unwrap().mark, 9);
        let b = Conntrack::entry_memory_bytes();
        assert!(b > std::mem::size_of::<Entry>() && b < 512, "{b}");
    }
}
