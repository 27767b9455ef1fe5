//! Source-port allocation for masquerade (SNAT with port translation).
//!
//! The allocator holds no state: whether a port is free is the caller's knowledge (conntrack's
//! reply-tuple index plus reserved and published ports), asked through `is_taken`. Uniqueness is
//! therefore whatever `is_taken` checks; with conntrack's reply tuple (protocol, remote address,
//! remote port, external address, port) the same external port can serve many remotes at once,
//! as in Linux.
//!
//! Invariants: port 0 is never handed out; the walk is deterministic for a given seed (no
//! randomness in this crate: the caller derives the seed, e.g. with [`hash_seed`]), visits each
//! port of the range at most once, and is bounded by `max_tries` calls to `is_taken` (plus one
//! for the preferred port).

use crate::{Endpoint, NatError};

/// An inclusive range of ports, e.g. 32768-60999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (inclusive).
    pub last: u16,
}

impl PortRange {
    /// Linux's default `net.ipv4.ip_local_port_range`, 32768-60999.
    pub const EPHEMERAL: PortRange = PortRange {
        first: 32768,
        last: 60999,
    };

    /// The range `first..=last`.
    #[inline]
    pub const fn new(first: u16, last: u16) -> Self {
        Self { first, last }
    }

    /// Checks that the range holds at least one port other than 0.
    ///
    /// # Errors
    /// [`NatError::InvalidPortRange`] if `first > last` or the range is just port 0.
    pub fn validate(&self) -> Result<(), NatError> {
        if self.first > self.last || self.last == 0 {
            return Err(NatError::InvalidPortRange {
                first: self.first,
                last: self.last,
            });
        }
        Ok(())
    }

    /// Whether `port` is in the range.
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// Number of ports in the range (0 if `first > last`).
    #[inline]
    pub fn len(&self) -> u32 {
        if self.first > self.last {
            0
        } else {
            u32::from(self.last) - u32::from(self.first) + 1
        }
    }

    /// Whether the range holds no port.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::EPHEMERAL
    }
}

/// Picks a free source port in `range`.
///
/// 1. `preferred` (the client's own source port), if it is in `range`, not 0 and not taken:
///    like Linux, a NAT keeps the port when it can, which keeps port-based ACLs and logs readable.
///    It is only kept inside `range`, since ports outside it may belong to the host's sockets.
/// 2. Otherwise a walk over the range with wrap-around from `first + seed % len`, asking
///    `is_taken` for at most `max_tries` candidates (`u32::MAX` or `range.len()` for the whole
///    range). The walk never offers 0, nor `preferred` a second time.
///
/// # Errors
/// [`NatError::InvalidPortRange`] for an empty range, [`NatError::PortsExhausted`] when no
/// candidate was free.
pub fn allocate_port(
    range: PortRange,
    preferred: u16,
    seed: u64,
    max_tries: u32,
    mut is_taken: impl FnMut(u16) -> bool,
) -> Result<u16, NatError> {
    range.validate()?;
    let probed_preferred = preferred != 0 && range.contains(preferred);
    if probed_preferred && !is_taken(preferred) {
        return Ok(preferred);
    }
    let len = range.len();
    // `seed % len` < len <= 65536, so it fits in u32, and `start + i` < 2 * len.
    let start = u32::try_from(seed % u64::from(len)).unwrap_or(0);
    let mut tried = 0u32;
    for i in 0..len {
        if tried >= max_tries {
            break;
        }
        let offset = (start + i) % len;
        let Ok(port) = u16::try_from(u32::from(range.first) + offset) else {
            continue;
        };
        if port == 0 || (probed_preferred && port == preferred) {
            continue;
        }
        tried += 1;
        if !is_taken(port) {
            return Ok(port);
        }
    }
    Err(NatError::PortsExhausted {
        first: range.first,
        last: range.last,
    })
}

/// A deterministic 64-bit seed for [`allocate_port`] from a flow's original tuple: the same
/// tuple always starts its walk at the same port (a retransmitted SYN gets the same mapping if
/// the first one's state was lost), and different tuples spread over the range. Not keyed:
/// the start port is predictable by anyone who knows the tuple (RFC 6056 prefers a keyed hash;
/// mix a secret into the seed if that matters).
pub fn hash_seed(proto: u8, src: Endpoint, dst: Endpoint) -> u64 {
    let addrs = (u64::from(u32::from(src.addr)) << 32) | u64::from(u32::from(dst.addr));
    let rest = (u64::from(proto) << 32) | (u64::from(src.port) << 16) | u64::from(dst.port);
    mix(mix(addrs) ^ rest)
}

/// splitmix64's finalizer: every input bit affects every output bit, so `seed % len` is well
/// spread even for tuples that differ in one bit.
#[inline]
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::Ipv4Addr;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const R: PortRange = PortRange::EPHEMERAL;

    #[test]
    fn preferred_port_kept_when_free() {
        assert_eq!(allocate_port(R, 40000, 123, u32::MAX, |_| false), Ok(40000));
    }

    #[test]
    fn preferred_outside_range_or_taken_is_not_used() {
        let p = allocate_port(R, 5000, 123, u32::MAX, |_| false).unwrap();
        assert!(R.contains(p));
        let p = allocate_port(R, 40000, 123, u32::MAX, |p| p == 40000).unwrap();
        assert_ne!(p, 40000);
        assert!(R.contains(p));
    }

    #[test]
    fn exhausted_single_port_range() {
        let r = PortRange::new(5000, 5000);
        let err = allocate_port(r, 5000, 9, u32::MAX, |_| true).unwrap_err();
        assert_eq!(
            err,
            NatError::PortsExhausted {
                first: 5000,
                last: 5000
            }
        );
        assert_eq!(
            err.to_string(),
            "no free NAT source port in 5000-5000 for this destination: widen the port range \
             or wait for connections to time out"
        );
        assert_eq!(allocate_port(r, 1, 9, u32::MAX, |_| false), Ok(5000));
    }

    #[test]
    fn preferred_is_not_asked_twice() {
        let r = PortRange::new(5000, 5000);
        let mut asked = Vec::new();
        let _ = allocate_port(r, 5000, 0, u32::MAX, |p| {
            asked.push(p);
            true
        });
        assert_eq!(asked, [5000]);
    }

    #[test]
    fn walk_wraps_around() {
        let r = PortRange::new(100, 109);
        // The seed starts the walk at 108; 108 and 109 are taken, so it wraps to 100.
        let mut asked = Vec::new();
        let p = allocate_port(r, 0, 8, u32::MAX, |p| {
            asked.push(p);
            p >= 108
        })
        .unwrap();
        assert_eq!(p, 100);
        assert_eq!(asked, [108, 109, 100]);
    }

    #[test]
    fn whole_range_is_tried_once_then_exhausted() {
        let r = PortRange::new(1000, 1999);
        let mut seen = HashSet::new();
        let res = allocate_port(r, 0, 777, u32::MAX, |p| {
            assert!(seen.insert(p), "port {p} asked twice");
            true
        });
        assert!(matches!(res, Err(NatError::PortsExhausted { .. })));
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn max_tries_bounds_the_walk() {
        let mut n = 0;
        let res = allocate_port(R, 0, 1, 16, |_| {
            n += 1;
            true
        });
        assert!(res.is_err());
        assert_eq!(n, 16);
    }

    #[test]
    fn never_zero() {
        let r = PortRange::new(0, 3);
        for seed in 0..8 {
            let p = allocate_port(r, 0, seed, u32::MAX, |_| false).unwrap();
            assert_ne!(p, 0);
        }
        assert_eq!(
            allocate_port(r, 0, 0, u32::MAX, |p| p != 0),
            Err(NatError::PortsExhausted { first: 0, last: 3 })
        );
        assert!(matches!(
            allocate_port(PortRange::new(0, 0), 0, 0, u32::MAX, |_| false),
            Err(NatError::InvalidPortRange { .. })
        ));
    }

    #[test]
    fn invalid_range() {
        let r = PortRange::new(2000, 1000);
        assert!(r.is_empty());
        assert_eq!(
            allocate_port(r, 1500, 0, u32::MAX, |_| false),
            Err(NatError::InvalidPortRange {
                first: 2000,
                last: 1000
            })
        );
    }

    #[test]
    fn full_u16_range() {
        let r = PortRange::new(1, u16::MAX);
        assert_eq!(r.len(), 65535);
        let p = allocate_port(r, 0, u64::MAX, u32::MAX, |p| p < 65535).unwrap();
        assert_eq!(p, 65535);
    }

    #[test]
    fn deterministic_and_spread() {
        let a = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 5000);
        let b = Endpoint::new(Ipv4Addr::new(1, 1, 1, 1), 53);
        assert_eq!(hash_seed(17, a, b), hash_seed(17, a, b));
        assert_ne!(hash_seed(17, a, b), hash_seed(6, a, b));
        let p1 = allocate_port(R, 0, hash_seed(17, a, b), u32::MAX, |_| false).unwrap();
        let p2 = allocate_port(R, 0, hash_seed(17, a, b), u32::MAX, |_| false).unwrap();
        assert_eq!(p1, p2);
        // Different tuples start at different places.
        let starts: HashSet<u16> = (0..100u16)
            .map(|i| {
                let s = hash_seed(17, Endpoint::new(a.addr, i), b);
                allocate_port(R, 0, s, u32::MAX, |_| false).unwrap()
            })
            .collect();
        assert!(starts.len() > 90);
    }

    #[test]
    fn default_is_linux_range() {
        assert_eq!(PortRange::default(), PortRange::new(32768, 60999));
        assert_eq!(PortRange::default().len(), 28232);
    }

    proptest! {
        #[test]
        fn allocated_port_is_in_range_free_and_nonzero(first in any::<u16>(), span in 0u16..200,
                                                        seed in any::<u64>(), taken_mod in 1u16..5,
                                                        preferred in any::<u16>()) {
            let r = PortRange::new(first, first.saturating_add(span));
            let taken = |p: u16| taken_mod > 1 && p.is_multiple_of(taken_mod);
            match allocate_port(r, preferred, seed, u32::MAX, taken) {
                Ok(p) => {
                    prop_assert!(r.contains(p));
                    prop_assert_ne!(p, 0);
                    prop_assert!(!taken(p));
                }
                Err(NatError::PortsExhausted { .. }) => {
                    prop_assert!((r.first..=r.last).all(|p| p == 0 || taken(p)));
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
