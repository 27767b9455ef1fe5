//! The key index of the table: [`Tuple`] hash -> packed slab reference.
//!
//! Open addressing with linear probing over one `Vec<u64>`. A bucket holds
//! the upper 32 bits of the key's hash (the tag, which also picks the home
//! bucket) and the caller's 32-bit value; keys themselves are not stored:
//! the caller confirms a tag match against its own copy of the key (the slab
//! entry), which a lookup reads next anyway. So a lookup touches one cache
//! line of buckets (8 per line) instead of a control group plus a bucket.
//!
//! Invariants:
//! - `buckets.len()` is zero or a power of two, and at most half the buckets
//!   are used, so probe sequences stay short and always end at an empty one;
//! - every stored bucket lies on the probe path from its home bucket with no
//!   empty bucket in between (kept by backward-shift deletion: no tombstones);
//! - values are unique (the table packs a slab index and a direction), which
//!   is what lets `remove` find a bucket without comparing keys;
//! - a value is never `u32::MAX` (slab indices stay below 2^31 - 1), so no
//!   stored bucket equals `EMPTY`.

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;

use crate::tuple::Tuple;

const EMPTY: u64 = u64::MAX;
const MIN_BUCKETS: usize = 16;

/// The tag of a key. Fx hashing leaves some bit ranges poorly mixed (keys
/// differing only in one address would share home buckets), so the hash is
/// multiplied once more and the product's upper half, which depends on every
/// bit, is kept.
#[inline]
pub(crate) fn tag_of(key: &Tuple) -> u32 {
    let h = FxBuildHasher.hash_one(key);
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    buckets: Vec<u64>,
    len: usize,
}

impl Index {
    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// Values stored under `tag`, in probe order: the caller checks which
    /// one (if any) belongs to its key.
    #[inline]
    pub(crate) fn candidates(&self, tag: u32) -> impl Iterator<Item = u32> + '_ {
        let mask = self.mask();
        let mut i = tag as usize & mask;
        let mut done = self.buckets.is_empty();
        std::iter::from_fn(move || {
            while !done {
                let b = self.buckets.get(i).copied().unwrap_or(EMPTY);
                if b == EMPTY {
                    done = true;
                    return None;
                }
                i = (i + 1) & mask;
                if (b >> 32) as u32 == tag {
                    return Some(b as u32);
                }
            }
            None
        })
    }

    /// Stores `value` under `tag`. The caller guarantees the key is absent.
    pub(crate) fn insert(&mut self, tag: u32, value: u32) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        self.place((u64::from(tag) << 32) | u64::from(value));
        self.len += 1;
    }

    fn place(&mut self, bucket: u64) {
        let mask = self.mask();
        let mut i = (bucket >> 32) as usize & mask;
        while let Some(b) = self.buckets.get_mut(i) {
            if *b == EMPTY {
                *b = bucket;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; n]);
        for b in old.into_iter().filter(|&b| b != EMPTY) {
            self.place(b);
        }
    }

    /// Removes the bucket holding `value` under `tag`; false if none does.
    pub(crate) fn remove(&mut self, tag: u32, value: u32) -> bool {
        let want = (u64::from(tag) << 32) | u64::from(value);
        let mask = self.mask();
        let mut i = tag as usize & mask;
        loop {
            match self.buckets.get(i).copied() {
                None => return false,
                Some(EMPTY) => return false,
                Some(b) if b == want => break,
                Some(_) => i = (i + 1) & mask,
            }
        }
        // Backward-shift deletion: pull later members of the cluster into
        // the hole when their home bucket allows it.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let b = self.buckets.get(j).copied().unwrap_or(EMPTY);
            if b == EMPTY {
                break;
            }
            let home = (b >> 32) as usize & mask;
            // `b` may move to `hole` unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.buckets[hole] = b;
                hole = j;
            }
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

    /// Bytes per stored key at the worst load (just after growing).
    pub(crate) const BYTES_PER_KEY: usize = 4 * std::mem::size_of::<u64>();
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
        for v in (0..10_000u32).step_by(3) {
            assert!(ix.remove(v.wrapping_mul(0x9e37_79b9), v));
        }
        for v in 0..10_000u32 {
            let t = v.wrapping_mul(0x9e37_79b9);
            assert_eq!(ix.candidates(t).any(|c| c == v), v % 3 != 0);
        }
    }
}
