//! Translation of IPv4 and IPv6 fragments that carry no transport header.
//!
//! Only a datagram's first fragment has ports, so conntrack can only match that one. When a
//! first fragment is translated, the translation of its addresses is remembered under the
//! fragment key (protocol, source, destination, IP identification) as the packet arrived, and
//! later fragments of the same datagram get the same addresses. Fragments that arrive before
//! their first fragment find nothing and are dropped (counted): reassembly is not done here.
//!
//! Owns [`Fragments`], the table of remembered translations (the gateway holds one per address
//! family: IPv6 keys carry the fragment header's 32-bit identification), and the routing of
//! later IPv4 fragments through it (IPv6's is in `ipv6::route`).
//!
//! Invariants: at most [`MAX_DATAGRAMS`] datagrams are remembered (oldest forgotten first), each
//! for [`FRAGMENT_TIMEOUT`] (Linux's ipfrag_time is 30 s).

use super::neighbor::Side;
use super::route::ip_ident;
use super::{Datagram, Gateway, icmp_error};
use crate::counters::DropReason;
use crate::frame::Frame;
use crate::synth;
use nat::Endpoint;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::hash::Hash;
use std::net::Ipv4Addr;

/// Most datagrams in flight remembered at once.
pub const MAX_DATAGRAMS: usize = 4096;
/// How long a datagram's translation is kept after its first fragment.
pub const FRAGMENT_TIMEOUT: u64 = 30_000_000_000;

/// A datagram as it arrived: protocol, source, destination, identification (16 bits in
/// IPv4's header, 32 in IPv6's fragment header).
pub type FragmentKey<A = Ipv4Addr, I = u16> = (u8, A, A, I);

/// Where a datagram's later fragments go and which addresses they get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentPlan<A = Ipv4Addr> {
    /// New source address.
    pub src: A,
    /// New destination address.
    pub dst: A,
    /// Egress side.
    pub egress: Side,
}

/// Remembered translations of fragmented datagrams.
#[derive(Debug)]
pub struct Fragments<A = Ipv4Addr, I = u16> {
    map: FxHashMap<FragmentKey<A, I>, (FragmentPlan<A>, u64)>,
    order: VecDeque<(FragmentKey<A, I>, u64)>,
}

impl<A, I> Default for Fragments<A, I> {
    fn default() -> Self {
        Fragments {
            map: FxHashMap::default(),
            order: VecDeque::new(),
        }
    }
}

impl<A: Copy + Eq + Hash, I: Copy + Eq + Hash> Fragments<A, I> {
    /// Remembers the translation of the datagram whose first fragment was just translated.
    pub fn remember(&mut self, key: FragmentKey<A, I>, plan: FragmentPlan<A>, now: u64) {
        self.expire(now);
        if self.map.len() >= MAX_DATAGRAMS
            && let Some((old, _)) = self.order.pop_front()
        {
            self.map.remove(&old);
        }
        let expires = now.saturating_add(FRAGMENT_TIMEOUT);
        self.map.insert(key, (plan, expires));
        self.order.push_back((key, expires));
    }

    /// The translation for a later fragment, if its first fragment came by recently.
    pub fn lookup(&self, key: &FragmentKey<A, I>, now: u64) -> Option<FragmentPlan<A>> {
        self.map
            .get(key)
            .filter(|(_, exp)| now < *exp)
            .map(|(p, _)| *p)
    }

    /// Forgets datagrams whose time is up (O(expired)).
    pub fn expire(&mut self, now: u64) {
        while let Some(&(key, exp)) = self.order.front() {
            if exp > now && self.map.len() <= MAX_DATAGRAMS {
                break;
            }
            self.order.pop_front();
            // Only remove if the map still holds this very registration (a later one may have
            // replaced it with a fresh expiry).
            if self.map.get(&key).is_some_and(|(_, e)| *e == exp) {
                self.map.remove(&key);
            }
        }
    }

    /// Datagrams remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Gateway {
    /// A later fragment: the addresses its first fragment got, or a counted drop.
    pub(super) fn route_fragment(&mut self, f: &mut Frame<'_>, dg: Datagram) {
        let (c, info) = (dg.c, dg.info);
        let key = (info.protocol, info.src, info.dst, ip_ident(&dg.data, &c));
        let Some(plan) = self.fragments.lookup(&key, f.now) else {
            return f.drop(DropReason::Unsupported);
        };
        if info.ttl <= 1 {
            return f.drop(DropReason::TtlExceeded);
        }
        if !icmp_error::fits_egress(f, plan.egress, &dg) {
            return;
        }
        let mut data = dg.data;
        if nat::rewrite(
            &mut data,
            &c,
            Endpoint::new(plan.src, 0),
            Endpoint::new(plan.dst, 0),
        )
        .is_err()
        {
            return f.drop(DropReason::Malformed);
        }
        f.events().nat_translated += 1;
        synth::decrement_ttl(&mut data, c.l3_offset);
        self.send_to(f, plan.egress, plan.dst, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_bounded_and_expires() {
        let mut f = Fragments::default();
        let plan = FragmentPlan {
            src: Ipv4Addr::new(1, 1, 1, 1),
            dst: Ipv4Addr::new(2, 2, 2, 2),
            egress: Side::Uplink,
        };
        let key = (
            17,
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(8, 8, 8, 8),
            77,
        );
        f.remember(key, plan, 0);
        assert_eq!(f.lookup(&key, FRAGMENT_TIMEOUT - 1), Some(plan));
        assert_eq!(f.lookup(&key, FRAGMENT_TIMEOUT), None);
        for i in 0..(MAX_DATAGRAMS as u32 + 10) {
            f.remember(
                (17, Ipv4Addr::from(i), Ipv4Addr::new(8, 8, 8, 8), 1),
                plan,
                1,
            );
        }
        assert!(f.len() <= MAX_DATAGRAMS);
        f.expire(FRAGMENT_TIMEOUT + 2);
        assert!(f.is_empty());
    }
}
