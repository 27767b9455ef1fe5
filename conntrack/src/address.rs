//! The address families the table tracks: [`Address`], implemented for
//! [`Ipv4Addr`] and [`Ipv6Addr`].
//!
//! Owns how an address is stored and hashed. A slot stores each address as
//! [`Address::Bits`] (`u32` for IPv4, so an IPv4 entry is exactly as small as
//! before the table was generic; `[u32; 4]` for IPv6, 4-byte aligned so the
//! two keys pack without padding). Invariant: `from_bits(to_bits(a)) == a`
//! for every address, and `hash_pair` is injective over `(src, dst)`, so the
//! hand-written [`Tuple`](crate::Tuple) hash stays consistent with `Eq`. The
//! trait is sealed: the table relies on both.

use std::fmt::{Debug, Display};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::Ipv4Addr {}
    impl Sealed for std::net::Ipv6Addr {}
}

/// An IP address the connection table can key on (IPv4 or IPv6).
///
/// A table tracks one family: `Conntrack<Ipv4Addr>` (the default) or
/// `Conntrack<Ipv6Addr>`. Sealed: implemented for those two only.
pub trait Address:
    sealed::Sealed
    + Copy
    + Eq
    + Ord
    + Hash
    + Debug
    + Display
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Into<IpAddr>
    + Send
    + Sync
    + 'static
{
    /// How a table slot stores the address: plain words, no padding.
    type Bits: Copy + Eq + Default + Debug + Send + Sync + 'static;

    /// The stored form.
    fn to_bits(self) -> Self::Bits;

    /// Inverse of [`Address::to_bits`].
    fn from_bits(bits: Self::Bits) -> Self;

    /// Feeds a source and destination address to `state` as few word writes
    /// (IPv4: one `u64`; IPv6: two `u128`), injectively.
    fn hash_pair<H: Hasher>(src: Self, dst: Self, state: &mut H);
}

impl Address for Ipv4Addr {
    type Bits = u32;

    #[inline]
    fn to_bits(self) -> u32 {
        Ipv4Addr::to_bits(self)
    }

    #[inline]
    fn from_bits(bits: u32) -> Self {
        Ipv4Addr::from_bits(bits)
    }

    #[inline]
    fn hash_pair<H: Hasher>(src: Self, dst: Self, state: &mut H) {
        state.write_u64((u64::from(src.to_bits()) << 32) | u64::from(dst.to_bits()));
    }
}

impl Address for Ipv6Addr {
    type Bits = [u32; 4];

    #[inline]
    fn to_bits(self) -> [u32; 4] {
        let b = Ipv6Addr::to_bits(self);
        [
            (b >> 96) as u32,
            (b >> 64) as u32,
            (b >> 32) as u32,
            b as u32,
        ]
    }

    #[inline]
    fn from_bits(bits: [u32; 4]) -> Self {
        let [a, b, c, d] = bits.map(u128::from);
        Ipv6Addr::from_bits(a << 96 | b << 64 | c << 32 | d)
    }

    #[inline]
    fn hash_pair<H: Hasher>(src: Self, dst: Self, state: &mut H) {
        state.write_u128(src.to_bits());
        state.write_u128(dst.to_bits());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip() {
        for a in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::BROADCAST,
        ] {
            assert_eq!(<Ipv4Addr as Address>::from_bits(Address::to_bits(a)), a);
        }
        let v6 = [
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6),
            Ipv6Addr::from_bits(u128::MAX),
        ];
        for a in v6 {
            assert_eq!(<Ipv6Addr as Address>::from_bits(Address::to_bits(a)), a);
        }
        let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        assert_eq!(Address::to_bits(a), [0x2001_0db8, 0, 0, 1]);
    }
}
