//! The packed slot: how one entry is stored in the slab (see the table's
//! module docs for the layout), the `kind` byte's encoding, the timeout
//! classes and lists it maps to, and the packet accounting on a slot.
//!
//! Owns the encoding only: which slot is where, and every list and map, is
//! the table's. Invariants: `state_of(kind_of(s, a))` is `s`, and every
//! `kind` but `FREE` names its list in `LIST_OF_KIND`.

use crate::config::Timeouts;
use crate::tcp::TcpState;
use crate::tuple::{Direction, Tuple};
use packet::L4Proto;
use rustc_hash::FxHashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::address::Address;

use super::State;

pub(super) const NIL: u32 = u32::MAX;
/// Timeout classes (see `class_of`); each has one list per assured value.
pub(super) const NUM_CLASSES: usize = 11;
pub(super) const NUM_LISTS: usize = NUM_CLASSES * 2;
pub(super) const CLASS_UDP_UNREPLIED: usize = 8;
pub(super) const CLASS_UDP_ASSURED: usize = 9;
pub(super) const CLASS_ICMP: usize = 10;
/// Slots per slab chunk (24 KiB for IPv4, 36 KiB for IPv6): at most one chunk
/// is partly used.
pub(super) const CHUNK_BITS: u32 = 8;
pub(super) const CHUNK: usize = 1 << CHUNK_BITS;

pub(super) const fn class_of(state: State, assured: bool) -> usize {
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

pub(super) fn class_timeout(t: &Timeouts, class: usize) -> u64 {
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

pub(super) const fn list_of(state: State, assured: bool) -> usize {
    class_of(state, assured) * 2 + assured as usize
}

// ---- the packed `kind` byte: bits 0-1 original protocol, 2-5 state, 6 assured ----

/// `kind` of a slot that holds no entry (protocol code 3).
pub(super) const FREE: u8 = u8::MAX;
pub(super) const ASSURED: u8 = 1 << 6;
/// `Slot::spill` flags: which side maps hold part of the entry.
pub(super) const WIDE: u8 = 1;
pub(super) const LATE: u8 = 2;

pub(super) const fn proto_code(p: L4Proto) -> u8 {
    match p {
        L4Proto::Icmp => 0,
        L4Proto::Tcp => 1,
        L4Proto::Udp => 2,
    }
}

pub(super) const fn proto_of(code: u8) -> L4Proto {
    match code & 3 {
        0 => L4Proto::Icmp,
        1 => L4Proto::Tcp,
        _ => L4Proto::Udp,
    }
}

pub(super) const fn tcp_state_of(code: u8) -> TcpState {
    match code {
        0 => TcpState::None,
        1 => TcpState::SynSent,
        2 => TcpState::SynRecv,
        3 => TcpState::Established,
        4 => TcpState::FinWait,
        5 => TcpState::CloseWait,
        6 => TcpState::LastAck,
        7 => TcpState::TimeWait,
        _ => TcpState::Close,
    }
}

pub(super) const fn kind_of(state: State, assured: bool) -> u8 {
    let (proto, detail) = match state {
        State::Tcp(s) => (1, s as u8),
        State::Udp { replied } => (2, replied as u8),
        State::Icmp { replied } => (0, replied as u8),
    };
    proto | detail << 2 | if assured { ASSURED } else { 0 }
}

pub(super) const fn state_of(kind: u8) -> State {
    let detail = (kind >> 2) & 0x0f;
    match kind & 3 {
        1 => State::Tcp(tcp_state_of(detail)),
        2 => State::Udp {
            replied: detail != 0,
        },
        _ => State::Icmp {
            replied: detail != 0,
        },
    }
}

/// The list of every `kind` (`NUM_LISTS` for `FREE`): one load per lookup.
pub(super) const LIST_OF_KIND: [u8; 256] = {
    let mut t = [NUM_LISTS as u8; 256];
    let mut k = 0;
    while k < 256 {
        let kind = k as u8;
        if kind & 3 != 3 {
            t[k] = list_of(state_of(kind), kind & ASSURED != 0) as u8;
        }
        k += 1;
    }
    t
};

/// A tuple without its protocol: addresses (as `A::Bits`) and both ports
/// packed in a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Key<A: Address> {
    pub(super) src: A::Bits,
    pub(super) dst: A::Bits,
    pub(super) ports: u32,
}

impl<A: Address> Key<A> {
    #[inline]
    pub(super) fn of(t: &Tuple<A>) -> Self {
        Key {
            src: t.src.to_bits(),
            dst: t.dst.to_bits(),
            ports: u32::from(t.src_port) << 16 | u32::from(t.dst_port),
        }
    }

    pub(super) fn tuple(self, proto: L4Proto) -> Tuple<A> {
        Tuple::from_parts(
            proto,
            A::from_bits(self.src),
            (self.ports >> 16) as u16,
            A::from_bits(self.dst),
            self.ports as u16,
        )
    }
}

/// One slab slot: an entry packed into 96 bytes for IPv4, 144 for IPv6 (see
/// the module docs).
#[derive(Clone, Debug)]
pub(super) struct Slot<A: Address> {
    pub(super) original: Key<A>,
    pub(super) reply: Key<A>,
    pub(super) created: u64,
    /// Table clock of the last timeout refresh: the list sort key (used to
    /// pick the oldest early-drop victim across lists), and `expires_at`
    /// minus the class timeout.
    pub(super) refreshed_at: u64,
    /// Low halves per direction; the high halves are in `wide` if `WIDE`.
    pub(super) packets: [u32; 2],
    pub(super) bytes: [u32; 2],
    pub(super) mark: u32,
    pub(super) generation: u32,
    /// LRU neighbours while stored; `next` threads the free list otherwise.
    pub(super) prev: u32,
    pub(super) next: u32,
    /// `PackedTrack::words` (TCP only).
    pub(super) tcp: [u32; 5],
    pub(super) tcp_flags: u8,
    /// Original protocol, state, assured; `FREE` if empty.
    pub(super) kind: u8,
    pub(super) reply_proto: u8,
    /// `WIDE` | `LATE`.
    pub(super) spill: u8,
}

// An IPv4 slot stays as small as before the table was generic; an IPv6 one
// grows by its 48 address bytes and no padding.
const _: () = assert!(std::mem::size_of::<Slot<Ipv4Addr>>() == 96);
const _: () = assert!(std::mem::size_of::<Slot<Ipv6Addr>>() == 144);

impl<A: Address> Slot<A> {
    #[inline]
    pub(super) fn is_live(&self) -> bool {
        self.kind != FREE
    }

    #[inline]
    pub(super) fn list(&self) -> usize {
        usize::from(LIST_OF_KIND[usize::from(self.kind)])
    }

    #[inline]
    pub(super) fn has_key(&self, dir: Direction, key: &Tuple<A>) -> bool {
        let (k, proto) = match dir {
            Direction::Original => (self.original, self.kind),
            Direction::Reply => (self.reply, self.reply_proto),
        };
        self.is_live() && k == Key::of(key) && proto & 3 == proto_code(key.proto)
    }
}

pub(super) fn pack(idx: u32, dir: Direction) -> u32 {
    (idx << 1) | dir.index() as u32
}

pub(super) fn unpack(v: u32) -> (u32, Direction) {
    let dir = if v & 1 == 0 {
        Direction::Original
    } else {
        Direction::Reply
    };
    (v >> 1, dir)
}

pub(super) const fn join(hi: u32, lo: u32) -> u64 {
    (hi as u64) << 32 | lo as u64
}

#[inline]
pub(super) fn slot_in<A: Address>(chunks: &[Vec<Slot<A>>], idx: u32) -> Option<&Slot<A>> {
    chunks
        .get((idx >> CHUNK_BITS) as usize)?
        .get(idx as usize & (CHUNK - 1))
}

#[inline]
pub(super) fn slot_in_mut<A: Address>(
    chunks: &mut [Vec<Slot<A>>],
    idx: u32,
) -> Option<&mut Slot<A>> {
    chunks
        .get_mut((idx >> CHUNK_BITS) as usize)?
        .get_mut(idx as usize & (CHUNK - 1))
}

/// Counts a packet of `len` bytes in direction `d`, saturating at `u64::MAX` like a `u64`
/// counter: the `u32` low halves take it unless one would carry, which moves the entry's high
/// halves into `wide`.
pub(super) fn count_packet<A: Address>(
    slot: &mut Slot<A>,
    wide: &mut FxHashMap<u32, [u32; 4]>,
    idx: u32,
    d: usize,
    len: usize,
) {
    let packets = slot.packets[d].checked_add(1);
    let bytes = u32::try_from(len)
        .ok()
        .and_then(|l| slot.bytes[d].checked_add(l));
    if let (Some(p), Some(b)) = (packets, bytes) {
        slot.packets[d] = p;
        slot.bytes[d] = b;
        return;
    }
    let hi = wide.entry(idx).or_insert([0; 4]);
    slot.spill |= WIDE;
    let p = join(hi[d], slot.packets[d]).saturating_add(1);
    let b = join(hi[2 + d], slot.bytes[d]).saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
    hi[d] = (p >> 32) as u32;
    hi[2 + d] = (b >> 32) as u32;
    slot.packets[d] = p as u32;
    slot.bytes[d] = b as u32;
}

/// Records `last_seen = clock` for a slot whose `refreshed_at` is already current.
pub(super) fn set_last_seen<A: Address>(
    slot: &mut Slot<A>,
    late: &mut FxHashMap<u32, u64>,
    idx: u32,
    clock: u64,
) {
    if clock != slot.refreshed_at {
        late.insert(idx, clock);
        slot.spill |= LATE;
    } else if slot.spill & LATE != 0 {
        late.remove(&idx);
        slot.spill &= !LATE;
    }
}
