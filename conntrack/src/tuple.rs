//! Connection keys: the 5-tuple (over [`packet::L4Proto`]) and the packet direction.
//!
//! Owns the identity of a flow as the table sees it. Invariants: a [`Tuple`]
//! is a plain value (no normalisation is applied: `a->b` and `b->a` are
//! different keys), and for ICMP echo both ports carry the echo identifier,
//! so `reversed()` of an echo request key is the echo reply key.

use packet::L4Proto;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

/// A directional flow key as seen on the wire.
///
/// For ICMP echo, `src_port == dst_port ==` the echo identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Tuple {
    /// L4 protocol.
    pub proto: L4Proto,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (ICMP: echo identifier).
    pub src_port: u16,
    /// Destination port (ICMP: echo identifier).
    pub dst_port: u16,
}

// Hand-written so that hashing is two word writes instead of a dozen byte
// writes (`Ipv4Addr` hashes as a length-prefixed byte array). The packing is
// injective, so it stays consistent with the derived `Eq`.
impl Hash for Tuple {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let addrs = (u64::from(self.src.to_bits()) << 32) | u64::from(self.dst.to_bits());
        let rest = (u64::from(self.src_port) << 24)
            | (u64::from(self.dst_port) << 8)
            | u64::from(self.proto.number());
        state.write_u64(addrs);
        state.write_u64(rest);
    }
}

impl Tuple {
    /// Convenience constructor.
    pub const fn new(
        proto: L4Proto,
        src: Ipv4Addr,
        src_port: u16,
        dst: Ipv4Addr,
        dst_port: u16,
    ) -> Self {
        Tuple {
            proto,
            src,
            dst,
            src_port,
            dst_port,
        }
    }

    /// The same flow seen from the other end (addresses and ports swapped).
    pub const fn reversed(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{}",
            self.proto, self.src, self.src_port, self.dst, self.dst_port
        )
    }
}

/// Which way a packet travels relative to the entry that tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Same direction as the packet that created the entry.
    Original,
    /// The opposite direction.
    Reply,
}

impl Direction {
    /// 0 for original, 1 for reply: index into per-direction arrays.
    pub const fn index(self) -> usize {
        match self {
            Direction::Original => 0,
            Direction::Reply => 1,
        }
    }

    /// The other direction.
    pub const fn opposite(self) -> Direction {
        match self {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashSet;

    fn t(sp: u16, dp: u16) -> Tuple {
        Tuple::new(
            L4Proto::Udp,
            Ipv4Addr::new(10, 0, 0, 1),
            sp,
            Ipv4Addr::new(10, 0, 0, 2),
            dp,
        )
    }

    #[test]
    fn reversed_swaps_and_is_involutive() {
        let a = t(1234, 80);
        let r = a.reversed();
        assert_eq!(r.src, a.dst);
        assert_eq!(r.dst_port, 1234);
        assert_ne!(r, a);
        assert_eq!(r.reversed(), a);
    }

    #[test]
    fn hash_distinguishes_fields() {
        let mut set = FxHashSet::default();
        set.insert(t(1, 2));
        set.insert(t(2, 1));
        set.insert(t(1, 2).reversed());
        let mut tcp = t(1, 2);
        tcp.proto = L4Proto::Tcp;
        set.insert(tcp);
        assert_eq!(set.len(), 4);
        assert!(set.contains(&t(1, 2)));
    }

    #[test]
    fn direction_helpers() {
        assert_eq!(Direction::Original.opposite(), Direction::Reply);
        assert_eq!(Direction::Reply.index(), 1);
        assert_eq!(t(1, 2).to_string(), "udp 10.0.0.1:1 -> 10.0.0.2:2");
    }
}
