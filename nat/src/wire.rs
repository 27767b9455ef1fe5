//! Bounds-checked field access and the checksum delta accumulator shared by the rewriters.
//!
//! Every read and write goes through `get`/`get_mut`, so a frame that lies about its lengths
//! yields `None` instead of a panic. [`Delta`] collects RFC 1624 changes to 16-bit words and
//! applies them to a checksum in one step.

use packet::checksum::fold;
use std::net::Ipv4Addr;

/// Big-endian 16-bit word at `off`.
#[inline]
pub(crate) fn rd16(b: &[u8], off: usize) -> Option<u16> {
    let w = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([*w.first()?, *w.get(1)?]))
}

/// Writes a big-endian 16-bit word at `off`.
#[inline]
pub(crate) fn wr16(b: &mut [u8], off: usize, v: u16) -> Option<()> {
    b.get_mut(off..off.checked_add(2)?)?
        .copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// IPv4 address at `off`.
#[inline]
pub(crate) fn rd_addr(b: &[u8], off: usize) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

/// Writes an IPv4 address at `off`.
#[inline]
pub(crate) fn wr_addr(b: &mut [u8], off: usize, a: Ipv4Addr) -> Option<()> {
    b.get_mut(off..off.checked_add(4)?)?
        .copy_from_slice(&a.octets());
    Some(())
}

/// Folds a 64-bit ones' complement sum to 16 bits (end-around carry).
#[inline]
fn fold64(acc: u64) -> u16 {
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    fold(u32::try_from(acc).unwrap_or(u32::MAX))
}

/// Sum of RFC 1624 terms `~m + m'` for the words of a message that changed.
///
/// Unchanged words add nothing: besides saving work, this keeps a checksum of 0xffff from
/// turning into 0x0000 when nothing it covers changed (both encode ones' complement zero, but
/// "only fields that differ are touched").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    /// Sum of the terms, folded only by `merge` and `apply`.
    sum: u64,
    /// Some word changed, even if the terms fold to ones' complement zero (a word going from
    /// 0xffff to 0x0000 adds nothing to the sum but may leave the data all zero).
    changed: bool,
}

impl Delta {
    /// One 16-bit word changed from `old` to `new`.
    #[inline]
    pub(crate) fn word(&mut self, old: u16, new: u16) {
        if old != new {
            // Each term is below 2^17, so 2^46 of them fit: no folding until `apply`.
            self.sum = self.sum.wrapping_add(u64::from(!old) + u64::from(new));
            self.changed = true;
        }
    }

    /// An IPv4 address (two words) changed.
    #[inline]
    pub(crate) fn addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let (o, n) = (old.octets(), new.octets());
        self.word(
            u16::from_be_bytes([o[0], o[1]]),
            u16::from_be_bytes([n[0], n[1]]),
        );
        self.word(
            u16::from_be_bytes([o[2], o[3]]),
            u16::from_be_bytes([n[2], n[3]]),
        );
    }

    /// Adds every term of `other`.
    #[inline]
    pub(crate) fn merge(&mut self, other: Delta) {
        self.sum = u64::from(fold64(self.sum)) + u64::from(fold64(other.sum));
        self.changed |= other.changed;
    }

    /// The terms applied to a *partial* checksum field (the folded pseudo-header sum the device
    /// finishes later): `F' = F + ~m + m'`, no complement, no 0xffff rule (the final checksum
    /// is computed afresh from it).
    #[inline]
    pub(crate) fn apply_partial(self, field: u16) -> u16 {
        if !self.changed {
            return field;
        }
        fold(u32::from(field) + u32::from(fold64(self.sum)))
    }

    /// RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, for all the collected terms; a result of
    /// 0x0000 is written as 0xffff.
    ///
    /// No change leaves the checksum as it is. Changes that fold to ones' complement zero keep
    /// its value, written as 0xffff if it was 0x0000: the data may now be all zero (e.g. an
    /// echo reply whose identifier went from 0xffff to 0), and then only 0xffff verifies.
    #[inline]
    pub(crate) fn apply(self, checksum: u16) -> u16 {
        if !self.changed {
            return checksum;
        }
        let d = fold64(self.sum);
        if d == 0 || d == 0xffff {
            // The changes cancel out: the checksum keeps its value, but the data may now be all
            // zero, which only 0xffff verifies.
            return packet::checksum::nonzero(checksum);
        }
        // Never 0x0000: a message that is all zeros but its checksum needs 0xffff, the same
        // ones' complement value (see packet::checksum::nonzero).
        packet::checksum::nonzero(!fold(u32::from(!checksum) + u32::from(d)))
    }
}

impl Delta {
    /// [`Delta::apply`] for an IPv4 header checksum, where 0x0000 stays 0x0000: a header is
    /// never all zeros (its version nibble is 4), so its sum is never +0 and 0x0000 is the
    /// value a full computation gives, and the one receivers' checkers compare with.
    #[inline]
    pub(crate) fn apply_ip_header(self, checksum: u16) -> u16 {
        let d = fold64(self.sum);
        if !self.changed || d == 0 || d == 0xffff {
            return checksum;
        }
        !fold(u32::from(!checksum) + u32::from(d))
    }
}

/// A [`Delta`] folded to 16 bits for storage (4 bytes instead of 16); applies identically.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FoldedDelta {
    sum: u16,
    changed: bool,
}

impl From<Delta> for FoldedDelta {
    fn from(d: Delta) -> FoldedDelta {
        FoldedDelta {
            sum: fold64(d.sum),
            changed: d.changed,
        }
    }
}

impl FoldedDelta {
    /// The delta it came from, up to folding (which `apply` does first anyway).
    #[inline]
    pub(crate) fn delta(self) -> Delta {
        Delta {
            sum: u64::from(self.sum),
            changed: self.changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::checksum::{update_u16, update_u32};

    #[test]
    fn reads_and_writes_are_bounds_checked() {
        let mut b = [0u8; 5];
        assert_eq!(rd16(&b, 4), None);
        assert_eq!(rd16(&b, usize::MAX), None);
        assert_eq!(wr16(&mut b, 4, 1), None);
        assert_eq!(rd_addr(&b, 2), None);
        assert_eq!(wr_addr(&mut b, usize::MAX - 1, Ipv4Addr::LOCALHOST), None);
        assert_eq!(wr16(&mut b, 3, 0xabcd), Some(()));
        assert_eq!(rd16(&b, 3), Some(0xabcd));
        assert_eq!(b, [0, 0, 0, 0xab, 0xcd]);
    }

    #[test]
    fn delta_matches_packet_helpers() {
        let mut d = Delta::default();
        d.word(0x1234, 0xfedc);
        assert_eq!(d.apply(0x5555), update_u16(0x5555, 0x1234, 0xfedc));
        let mut d = Delta::default();
        d.addr(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(
            d.apply(0x0f0f),
            update_u32(0x0f0f, 0x0a00_0001, 0xcb00_7109)
        );
    }

    #[test]
    fn cancelling_changes_leave_checksum_alone() {
        let mut d = Delta::default();
        d.word(1, 2);
        d.word(2, 1);
        assert_eq!(d.apply(0xffff), 0xffff);
        assert_eq!(d.apply(0x1234), 0x1234);
        // Same value, but the data may have become all zero (see `apply`).
        assert_eq!(d.apply(0x0000), 0xffff);
        assert_eq!(Delta::default().apply(0xffff), 0xffff);
        assert_eq!(Delta::default().apply(0x0000), 0x0000);
        // A header whose new sum is -0 gets 0x0000, as a full computation gives.
        let mut h = Delta::default();
        h.word(0x1234, 0x1235);
        assert_eq!(h.apply_ip_header(0x0001), 0x0000);
        assert_eq!(h.apply(0x0001), 0xffff);
        // 0xffff -> 0x0000 adds nothing to the sum but is a change.
        let mut d = Delta::default();
        d.word(0xffff, 0);
        assert_eq!(d.apply(0x0000), 0xffff);
    }

    #[test]
    fn many_terms_do_not_overflow() {
        let mut d = Delta::default();
        for _ in 0..10_000 {
            d.word(0, 0xffff);
        }
        let mut m = Delta::default();
        m.merge(d);
        m.merge(d);
        let _ = m.apply(0x1234);
    }
}
