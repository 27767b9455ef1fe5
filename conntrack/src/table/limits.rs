//! Per-address limits: entries per original source (`max_per_source`) and
//! source-translated entries per original destination
//! (`max_nat_per_destination`).
//!
//! Owns the counting maps' bookkeeping. Invariant: while a limit is set, its
//! map holds, for every address, exactly the number of stored entries (live
//! or expired-but-unreclaimed) it counts, and no zero counts.

use super::{Conntrack, InsertError, RECLAIM_BUDGET};
use crate::address::Address;
use crate::tuple::Tuple;
use rustc_hash::FxHashMap;

/// Whether the entry's source was translated (masquerade, hairpin): the reply is not addressed
/// to the original source.
pub(super) fn source_translated<A: Address>(original: &Tuple<A>, reply: &Tuple<A>) -> bool {
    reply.dst != original.src || reply.dst_port != original.src_port
}

/// Adds `delta` (+1 / -1) to `key`'s count, forgetting keys that reach zero.
pub(super) fn bump<A: Address>(map: &mut FxHashMap<A, u32>, key: A, up: bool) {
    if up {
        *map.entry(key).or_insert(0) += 1;
    } else if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl<A: Address> Conntrack<A> {
    /// Refuses an insert that would exceed the per-source or per-destination limit. Expired
    /// entries still count until reclaimed, so an over-limit insert first reclaims a bounded
    /// number of the table's oldest expired entries (any source's; housekeeping reaches the
    /// rest), then counts again.
    pub(super) fn check_address_limits(
        &mut self,
        original: &Tuple<A>,
        reply: &Tuple<A>,
    ) -> Result<(), InsertError<A>> {
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

    pub(super) fn count_addresses(&mut self, original: &Tuple<A>, reply: &Tuple<A>, up: bool) {
        if self.config.max_per_source > 0 {
            bump(&mut self.per_source, original.src, up);
        }
        if self.config.max_nat_per_destination > 0 && source_translated(original, reply) {
            bump(&mut self.per_destination, original.dst, up);
        }
    }

    /// Entries held by one original source address (0 unless `max_per_source` is set).
    pub fn source_count(&self, src: A) -> u32 {
        self.per_source.get(&src).copied().unwrap_or(0)
    }
}
