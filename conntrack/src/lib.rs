//! Userspace connection tracking for vswitch.
//!
//! Owns the connection table ([`Conntrack`]) of one address family (generic
//! over [`Address`]: IPv4 by default, IPv6 for NAT66, with the same states,
//! timeouts and limits): flow keys ([`Tuple`]), per-flow state (TCP state
//! machine after Linux `nf_conntrack_proto_tcp`, UDP and ICMP echo, which is
//! ICMPv6 echo in an IPv6 table), timeouts and expiry. Each entry is reachable from its
//! original and its (possibly NATed) reply tuple with a single hash lookup.
//!
//! The crate is pure and deterministic: it never reads a clock (the caller
//! passes `now` in nanoseconds; backwards jumps are tolerated), spawns
//! nothing, draws no randomness, and iterates in a stable order. It never
//! panics on any input.
//!
//! Typical per-packet use:
//! 1. `lookup(&key, now)`; on a hit, `track(id, dir, seg, len, now)` and act
//!    on the [`Verdict`] (`Reopen`: `remove`, then handle as new);
//! 2. on a miss, if the packet may create state ([`tcp_may_create`] for
//!    TCP), `insert(original, reply, mark, now)` and then `track` the same
//!    packet in [`Direction::Original`] (insert itself counts no packet);
//! 3. periodically `expire(now, budget)`.
//!
//! A caller that caches [`EntryId`]s per flow (a per-worker NAT flow cache)
//! replaces step 1 with `track_live(id, ...)`, which counts as the lookup it
//! saves, and falls back to `lookup` when it returns `None` (stale id or
//! expired entry). Reads (`entry`, `iter`, `peek`) build an [`Entry`] from
//! the packed slot; `mark` reads the caller data alone.

#![forbid(unsafe_code)]

mod address;
mod config;
mod index;
mod table;
mod tcp;
mod tuple;

#[cfg(test)]
mod model_tests;

pub use address::Address;
pub use config::{Config, Timeouts};
pub use table::{
    Conntrack, Counters, Entry, EntryId, Event, EventKind, ImportError, InsertError,
    MAX_PENDING_EVENTS, SavedEntry, SavedState, SavedTcp, State, Verdict,
};
pub use tcp::{TcpSegment, TcpState, tcp_may_create};
pub use tuple::{Direction, Tuple};
