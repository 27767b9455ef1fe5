//! The key index of the table: [`Tuple`] hash -> packed slab reference, the
//! same 8-byte buckets for either address family (keys are not stored).
//!
//! Robin Hood open addressing with linear probing over one `Vec<u64>`. A
//! bucket holds the upper 32 bits of the key's hash (the tag, which also picks
//! the home bucket) and the caller's 32-bit value; keys themselves are not
//! stored: the caller confirms a tag match against its own copy of the key
//! (the slab entry), which a lookup reads next anyway. So a lookup touches one
//! cache line of buckets (8 per line) instead of a control group plus a bucket.
//!
//! Compactness: the bucket count need not be a power of two (the home bucket
//! is `tag * len >> 32`, a multiply instead of a mask), so the index grows by
//! 1.25x rather than doubling, and it fills up to 3/4 before growing. Robin
//! Hood ordering keeps probes short at that load: a miss stops at the first
//! bucket closer to its own home than the probe is to the key's home. At worst
//! (just after growing, load 0.6) a key costs 8 / 0.6 < 14 bytes. (At 7/8 it
//! cost under 12, but the longer probes made lookups in a table of a million
//! connections measurably slower.)
//!
//! Invariants:
//! - `buckets.len()` is zero or at least `MIN_BUCKETS`, and at most 3/4 of
//!   the buckets are used, so probe sequences always end at an empty one;
//! - every stored bucket lies on the probe path from its home bucket with no
//!   empty bucket in between, and along any probe path the distance of each
//!   bucket from its home (its displacement) grows by at most one per step
//!   (Robin Hood: an insert displaces residents closer to their home than it
//!   is to its own; removal shifts the following residents back, no
//!   tombstones), so a key's probe may stop at the first resident whose
//!   displacement is smaller than the probe's;
//! - values are unique (the table packs a slab index and a direction), which
//!   is what lets `remove` find a bucket without comparing keys;
//! - a value is never `u32::MAX` (slab indices stay below 2^31 - 1), so no
//!   stored bucket equals `EMPTY`.

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

use crate::address::Address;
use crate::tuple::Tuple;

const EMPTY: u64 = u64::MAX;
const MIN_BUCKETS: usize = 16;

/// The tag of a key. Fx hashing leaves some bit ranges poorly mixed (keys
/// differing only in one address would share home buckets), so the hash is
/// multiplied once more and the product's upper half, which depends on every
/// bit, is kept.
#[inline]
pub(crate) fn tag_of<A: Address>(key: &Tuple<A>) -> u32 {
    let h = FxBuildHasher.hash_one(key);
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

#[inline]
fn tag(bucket: u64) -> u32 {
    (bucket >> 32) as u32
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    buckets: Vec<u64>,
    len: usize,
}

impl Index {
    /// The home bucket of `tag`: `tag / 2^32` scaled to the bucket count.
    #[inline]
    fn home(&self, tag: u32) -> usize {
        ((u128::from(tag) * self.buckets.len() as u128) >> 32) as usize
    }

    /// Distance from `home` to `i` along the (wrapping) probe path.
    #[inline]
    fn distance(&self, home: usize, i: usize) -> usize {
        if i >= home {
            i - home
        } else {
            i + self.buckets.len() - home
        }
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    /// Values stored under `tag`, in probe order: the caller checks which
    /// one (if any) belongs to its key.
    #[inline]
    pub(crate) fn candidates(&self, tag: u32) -> impl Iterator<Item = u32> + '_ {
        let mut i = self.home(tag);
        let mut probe = 0;
        let mut done = self.buckets.is_empty();
        std::iter::from_fn(move || {
            while !done {
                let b = self.buckets.get(i).copied().unwrap_or(EMPTY);
                if b == EMPTY || self.distance(self.home(self::tag(b)), i) < probe {
                    done = true;
                    return None;
                }
                i = self.next(i);
                probe += 1;
                if self::tag(b) == tag {
                    return Some(b as u32);
                }
            }
            None
        })
    }

    /// Stores `value` under `tag`. The caller guarantees the key is absent.
    pub(crate) fn insert(&mut self, tag: u32, value: u32) {
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow();
        }
        self.place((u64::from(tag) << 32) | u64::from(value));
        self.len += 1;
    }

    /// Robin Hood insertion: carries the bucket along its probe path, swapping
    /// it with each resident that sits closer to its own home.
    fn place(&mut self, mut carried: u64) {
        let mut i = self.home(tag(carried));
        let mut probe = 0;
        // At most `buckets.len()` steps: there is always an empty bucket.
        for _ in 0..self.buckets.len() {
            let b = self.buckets[i];
            if b == EMPTY {
                self.buckets[i] = carried;
                return;
            }
            let resident = self.distance(self.home(tag(b)), i);
            if resident < probe {
                self.buckets[i] = carried;
                carried = b;
                probe = resident;
            }
            i = self.next(i);
            probe += 1;
        }
    }

    fn grow(&mut self) {
        let n = self.buckets.len();
        let n = (n + n / 4).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; n]);
        for b in old.into_iter().filter(|&b| b != EMPTY) {
            self.place(b);
        }
    }

    /// Removes the bucket holding `value` under `tag`; false if none does.
    pub(crate) fn remove(&mut self, tag: u32, value: u32) -> bool {
        if self.buckets.is_empty() {
            return false;
        }
        let want = (u64::from(tag) << 32) | u64::from(value);
        let mut i = self.home(tag);
        let mut probe = 0;
        loop {
            let b = self.buckets[i];
            if b == want {
                break;
            }
            if b == EMPTY || self.distance(self.home(self::tag(b)), i) < probe {
                return false;
            }
            i = self.next(i);
            probe += 1;
        }
        // Backward-shift deletion: pull the rest of the run back by one until
        // an empty bucket or a resident already at its home.
        let mut hole = i;
        loop {
            let j = self.next(hole);
            let b = self.buckets[j];
            if b == EMPTY || self.home(self::tag(b)) == j {
                break;
            }
            self.buckets[hole] = b;
            hole = j;
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        true
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.fill(EMPTY);
        self.len = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn values(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets
            .iter()
            .filter(|&&b| b != EMPTY)
            .map(|&b| b as u32)
    }

    /// Checks the invariants: the load bound, and that along the buckets a
    /// resident's displacement exceeds the previous bucket's by at most one
    /// (so no displaced resident follows an empty bucket).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let n = self.buckets.len();
        assert!(self.len * 4 <= n * 3);
        assert_eq!(self.values().count(), self.len);
        for i in 0..n {
            let b = self.buckets[i];
            if b == EMPTY {
                continue;
            }
            let d = self.distance(self.home(tag(b)), i);
            let prev = self.buckets[(i + n - 1) % n];
            if d > 0 {
                assert_ne!(prev, EMPTY, "bucket {i} displaced past an empty one");
                let pd = self.distance(self.home(tag(prev)), (i + n - 1) % n);
                assert!(pd + 1 >= d, "bucket {i}: displacement {d} after {pd}");
            }
        }
    }

    /// Bytes per stored key at the worst load (0.7, just after growing).
    pub(crate) const BYTES_PER_KEY: usize = (std::mem::size_of::<u64>() * 5).div_ceil(3);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_with_colliding_tags() {
        let mut ix = Index::default();
        assert_eq!(ix.candidates(7).count(), 0);
        assert!(!ix.remove(7, 1));
        // Same home bucket for all (tags equal modulo any small mask), some
        // equal tags: clusters, wrap-around and backward shifts.
        let tags = [5u32, 5, 21, 37, 15, 31, 5, 47];
        for (v, &t) in tags.iter().enumerate() {
            ix.insert(t, v as u32);
        }
        for (v, &t) in tags.iter().enumerate() {
            assert!(ix.candidates(t).any(|c| c == v as u32), "{v}");
        }
        assert!(ix.remove(5, 1));
        assert!(!ix.remove(5, 1));
        assert!(ix.remove(15, 4));
        for (v, &t) in tags.iter().enumerate() {
            let found = ix.candidates(t).any(|c| c == v as u32);
            assert_eq!(found, v != 1 && v != 4, "{v}");
        }
        assert_eq!(ix.len(), 6);
        for _ in 0..100 {
            for (v, &t) in tags.iter().enumerate() {
                ix.remove(t, v as u32);
                ix.insert(t, v as u32);
            }
        }
        assert_eq!(ix.len(), 8);
        ix.check();
        let mut vals: Vec<u32> = ix.values().collect();
        vals.sort();
        assert_eq!(vals, (0..8).collect::<Vec<_>>());
        ix.clear();
        assert_eq!(ix.candidates(5).count(), 0);
    }

    #[test]
    fn grows_and_keeps_everything() {
        let mut ix = Index::default();
        for v in 0..10_000u32 {
            ix.insert(v.wrapping_mul(0x9e37_79b9), v);
        }
        ix.check();
        for v in (0..10_000u32).step_by(3) {
            assert!(ix.remove(v.wrapping_mul(0x9e37_79b9), v));
        }
        ix.check();
        for v in 0..10_000u32 {
            let t = v.wrapping_mul(0x9e37_79b9);
            assert_eq!(ix.candidates(t).any(|c| c == v), v % 3 != 0);
        }
    }

    proptest::proptest! {
        /// Random inserts and removes (few distinct tags, so runs and wrap-around are
        /// common) agree with a set, and keep the invariants.
        #[test]
        fn agrees_with_a_set(ops in proptest::collection::vec((proptest::bool::ANY, 0u32..64), 1..400)) {
            let mut ix = Index::default();
            let mut set = std::collections::BTreeSet::new();
            for (insert, v) in ops {
                // Tags in the top and bottom few values of the range: long runs wrap.
                let t = v.wrapping_mul(0x0400_0000).wrapping_sub(3 * (v % 3));
                if insert && !set.contains(&v) {
                    ix.insert(t, v);
                    set.insert(v);
                } else {
                    proptest::prop_assert_eq!(ix.remove(t, v), set.remove(&v));
                }
                ix.check();
                for w in 0..64u32 {
                    let tw = w.wrapping_mul(0x0400_0000).wrapping_sub(3 * (w % 3));
                    proptest::prop_assert_eq!(ix.candidates(tw).any(|c| c == w), set.contains(&w));
                }
            }
        }
    }
}
