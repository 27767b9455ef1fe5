//! Connection keys: the 5-tuple (over [`packet::L4Proto`]) and the packet direction.
//!
//! Owns the identity of a flow as the table sees it, for either address
//! family ([`Tuple<Ipv4Addr>`], the default, or [`Tuple<Ipv6Addr>`]).
//! Invariants: a [`Tuple`] is a plain value (no normalisation is applied:
//! `a->b` and `b->a` are different keys), and for ICMP echo (ICMPv6 echo in
//! an IPv6 tuple: `L4Proto::Icmp` names both) both ports carry the echo
//! identifier, so `reversed()` of an echo request key is the echo reply key.

use packet::L4Proto;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::address::Address;

/// A directional flow key as seen on the wire, over IPv4 (the default) or
/// IPv6 addresses.
///
/// For ICMP echo, `src_port == dst_port ==` the echo identifier.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(bound = "")]
pub struct Tuple<A: Address = Ipv4Addr> {
    /// L4 protocol.
    pub proto: L4Proto,
    /// Source address.
    pub src: A,
    /// Destination address.
    pub dst: A,
    /// Source port (ICMP: echo identifier).
    pub src_port: u16,
    /// Destination port (ICMP: echo identifier).
    pub dst_port: u16,
}

// Hand-written so that hashing is a few word writes instead of a dozen byte
// writes (`Ipv4Addr` hashes as a length-prefixed byte array): for IPv4 two
// `u64`s, as before the tuple was generic; for IPv6 two `u128`s and a `u64`.
// The packing is injective, so it stays consistent with the derived `Eq`.
impl<A: Address> Hash for Tuple<A> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        A::hash_pair(self.src, self.dst, state);
        let rest = (u64::from(self.src_port) << 24)
            | (u64::from(self.dst_port) << 8)
            | u64::from(self.proto.number());
        state.write_u64(rest);
    }
}

impl Tuple<Ipv4Addr> {
    /// Convenience constructor for an IPv4 tuple.
    pub const fn new(
        proto: L4Proto,
        src: Ipv4Addr,
        src_port: u16,
        dst: Ipv4Addr,
        dst_port: u16,
    ) -> Self {
        Tuple::from_parts(proto, src, src_port, dst, dst_port)
    }
}

impl Tuple<Ipv6Addr> {
    /// Convenience constructor for an IPv6 tuple.
    pub const fn new_v6(
        proto: L4Proto,
        src: Ipv6Addr,
        src_port: u16,
        dst: Ipv6Addr,
        dst_port: u16,
    ) -> Self {
        Tuple::from_parts(proto, src, src_port, dst, dst_port)
    }
}

impl<A: Address> Tuple<A> {
    /// Constructor for either family (`Tuple::new` and `Tuple::new_v6` name
    /// the family, so that a call infers it from neither argument).
    pub const fn from_parts(proto: L4Proto, src: A, src_port: u16, dst: A, dst_port: u16) -> Self {
        Tuple {
            proto,
            src,
            dst,
            src_port,
            dst_port,
        }
    }

    /// The same flow seen from the other end (addresses and ports swapped).
    pub const fn reversed(&self) -> Tuple<A> {
        Tuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

impl<A: Address> std::fmt::Display for Tuple<A> {
    /// `udp 10.0.0.1:1 -> 10.0.0.2:2`; IPv6 addresses in brackets
    /// (`tcp [2001:db8::1]:1 -> [2001:db8::2]:2`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let src = SocketAddr::new(self.src.into(), self.src_port);
        let dst = SocketAddr::new(self.dst.into(), self.dst_port);
        write!(f, "{} {src} -> {dst}", self.proto)
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

    fn t6(sp: u16, dp: u16) -> Tuple<Ipv6Addr> {
        Tuple::new_v6(
            L4Proto::Tcp,
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            sp,
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
            dp,
        )
    }

    #[test]
    fn ipv6_tuples_reverse_hash_and_display() {
        let a = t6(1234, 443);
        assert_eq!(a.reversed().reversed(), a);
        assert_eq!(a.reversed().src, a.dst);
        assert_eq!(a.to_string(), "tcp [2001:db8::1]:1234 -> [2001:db8::2]:443");
        let mut set = FxHashSet::default();
        set.insert(a);
        set.insert(a.reversed());
        set.insert(t6(1234, 444));
        // Addresses differing only in their high or their low half.
        let mut hi = a;
        hi.src = Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, 1);
        set.insert(hi);
        let mut lo = a;
        lo.src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 3);
        set.insert(lo);
        assert_eq!(set.len(), 5);
        assert!(set.contains(&t6(1234, 443)));
    }
}
