//! The table's event counters (what `conntrack -S` shows), cumulative since the table was made.

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

impl Counters {
    /// Adds another table's counters (another worker's, or the other address family's).
    pub fn merge(&mut self, o: &Counters) {
        self.found += o.found;
        self.new += o.new;
        self.invalid += o.invalid;
        self.dropped += o.dropped;
        self.early_dropped += o.early_dropped;
        self.source_limited += o.source_limited;
        self.destination_limited += o.destination_limited;
        self.expired += o.expired;
    }
}
