//! Table configuration: capacity and per-state timeouts.
//!
//! Owns the defaults (Linux `nf_conntrack` values). All durations are `u64`
//! nanoseconds, the same unit as the `now` the caller passes in. Invariant:
//! every timeout class maps to exactly one duration, which is what keeps each
//! expiry list ordered (see `table`).

use serde::{Deserialize, Serialize};

const SEC: u64 = 1_000_000_000;

/// Idle timeouts per state, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    /// After the first SYN (Linux: 120 s).
    pub tcp_syn_sent: u64,
    /// After the SYN/ACK (60 s).
    pub tcp_syn_recv: u64,
    /// Handshake completed (432000 s = 5 days).
    pub tcp_established: u64,
    /// One FIN seen (120 s).
    pub tcp_fin_wait: u64,
    /// FIN acknowledged (60 s).
    pub tcp_close_wait: u64,
    /// Both FINs seen (30 s).
    pub tcp_last_ack: u64,
    /// Last ACK seen (120 s).
    pub tcp_time_wait: u64,
    /// After an accepted RST (10 s).
    pub tcp_close: u64,
    /// UDP not yet seen in both directions then continued (30 s).
    pub udp_unreplied: u64,
    /// UDP stream, assured (120 s).
    pub udp_assured: u64,
    /// ICMP echo (30 s).
    pub icmp: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 120 * SEC,
            tcp_syn_recv: 60 * SEC,
            tcp_established: 432_000 * SEC,
            tcp_fin_wait: 120 * SEC,
            tcp_close_wait: 60 * SEC,
            tcp_last_ack: 30 * SEC,
            tcp_time_wait: 120 * SEC,
            tcp_close: 10 * SEC,
            udp_unreplied: 30 * SEC,
            udp_assured: 120 * SEC,
            icmp: 30 * SEC,
        }
    }
}

/// Table configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Hard cap on stored entries (each entry holds two keys). Values above
    /// `Config::MAX_ENTRIES_LIMIT` are clamped to it.
    pub max_entries: usize,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Most entries one source address (of the original direction) may hold; 0 = no limit.
    /// Keeps one tenant from filling the table for everyone.
    pub max_per_source: u32,
    /// Most source-translated entries (masquerade) toward one destination address; 0 = no
    /// limit. Keeps the NAT ports toward a popular destination from being used up by a few.
    pub max_nat_per_destination: u32,
}

impl Config {
    /// Default capacity (Linux's default `nf_conntrack_max` on a large host).
    pub const DEFAULT_MAX_ENTRIES: usize = 262_144;
    /// Largest supported capacity: slab indices are 31-bit so that the
    /// direction fits in the same `u32` map value.
    pub const MAX_ENTRIES_LIMIT: usize = (1 << 31) - 1;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            timeouts: Timeouts::default(),
            max_per_source: 0,
            max_nat_per_destination: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_linux() {
        let t = Timeouts::default();
        assert_eq!(t.tcp_established, 5 * 24 * 3600 * SEC);
        assert_eq!(t.tcp_syn_sent, 120 * SEC);
        assert_eq!(t.tcp_close, 10 * SEC);
        assert_eq!(t.udp_unreplied, 30 * SEC);
        assert_eq!(t.udp_assured, 120 * SEC);
        assert_eq!(t.icmp, 30 * SEC);
        assert_eq!(Config::default().max_entries, 262_144);
    }
}
