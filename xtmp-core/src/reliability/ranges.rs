//! A small set of half-open `u64` ranges, kept sorted and merged.
//!
//! Used for the sequence numbers a receiver acknowledges and for the bytes
//! of a message a sender has seen acknowledged. Its length is bounded by
//! the caller: [`RangeSet::insert`] drops the lowest ranges beyond a cap.

use alloc::vec::Vec;
use core::ops::Range;

/// Sorted, disjoint, non-adjacent half-open ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    pub(crate) const fn new() -> RangeSet {
        RangeSet { ranges: Vec::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The ranges, lowest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &Range<u64>> + '_ {
        self.ranges.iter()
    }

    pub(crate) fn max(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.end - 1)
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, x: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= x);
        self.ranges.get(i).is_some_and(|r| r.start <= x)
    }

    /// Whether the set holds all of `r`.
    pub(crate) fn covers(&self, r: Range<u64>) -> bool {
        if r.is_empty() {
            return true;
        }
        let i = self.ranges.partition_point(|x| x.end <= r.start);
        self.ranges.get(i).is_some_and(|x| x.start <= r.start && r.end <= x.end)
    }

    /// Adds `r`, merging with neighbours; then keeps only the `cap` highest
    /// ranges. Returns whether anything new was added.
    pub(crate) fn insert(&mut self, r: Range<u64>, cap: usize) -> bool {
        if r.is_empty() || self.covers(r.clone()) {
            return false;
        }
        // First range that ends at or after r.start (touching merges).
        let lo = self.ranges.partition_point(|x| x.end < r.start);
        // First range that starts after r.end.
        let hi = self.ranges.partition_point(|x| x.start <= r.end);
        let mut merged = r;
        if lo < hi {
            merged.start = merged.start.min(self.ranges[lo].start);
            merged.end = merged.end.max(self.ranges[hi - 1].end);
        }
        self.ranges.splice(lo..hi, core::iter::once(merged));
        if self.ranges.len() > cap {
            let excess = self.ranges.len() - cap;
            self.ranges.drain(..excess);
        }
        true
    }

    /// Makes this set a copy of `other`, reusing its allocation.
    pub(crate) fn copy_from(&mut self, other: &RangeSet) {
        self.ranges.clone_from(&other.ranges);
    }

    /// Removes `r` from the set, splitting a range it falls inside.
    pub(crate) fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let lo = self.ranges.partition_point(|x| x.end <= r.start);
        let hi = self.ranges.partition_point(|x| x.start < r.end);
        if lo >= hi {
            return;
        }
        let left = self.ranges[lo].start..r.start;
        let right = r.end..self.ranges[hi - 1].end;
        let keep = [left, right].into_iter().filter(|x| !x.is_empty());
        self.ranges.splice(lo..hi, keep);
    }

    /// The parts of `r` not in the set, lowest first.
    pub(crate) fn gaps(&self, r: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut at = r.start;
        let end = r.end;
        let i = self.ranges.partition_point(|x| x.end <= r.start);
        let mut iter = self.ranges[i..].iter();
        core::iter::from_fn(move || {
            while at < end {
                match iter.next() {
                    Some(x) if x.start <= at => at = at.max(x.end),
                    Some(x) => {
                        let gap = at..x.start.min(end);
                        at = x.end;
                        if !gap.is_empty() {
                            return Some(gap);
                        }
                    }
                    None => {
                        let gap = at..end;
                        at = end;
                        return Some(gap);
                    }
                }
            }
            None
        })
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use alloc::vec;

    fn set(rs: &[Range<u64>]) -> RangeSet {
        let mut s = RangeSet::new();
        for r in rs {
            s.insert(r.clone(), usize::MAX);
        }
        s
    }

    #[test]
    fn insert_merges_touching_and_overlapping() {
        let s = set(&[5..7, 1..2, 2..3, 10..12, 6..11]);
        assert_eq!(s.ranges, vec![1..3, 5..12]);
        assert!(s.contains(11) && !s.contains(12) && !s.contains(4) && s.contains(1));
        assert!(s.covers(5..12) && !s.covers(2..6));
        assert_eq!(s.max(), Some(11));
    }

    #[test]
    fn insert_reports_news_and_caps() {
        let mut s = set(&[(0..10)]);
        assert!(!s.insert(2..5, 8));
        assert!(s.insert(20..21, 2));
        assert!(s.insert(30..31, 2));
        assert_eq!(s.ranges, vec![20..21, 30..31], "the lowest range is dropped past the cap");
    }

    #[test]
    fn gaps_and_remove() {
        let mut s = set(&[2..4, 6..8]);
        let g: Vec<_> = s.gaps(0..10).collect();
        assert_eq!(g, vec![0..2, 4..6, 8..10]);
        assert_eq!(s.gaps(2..4).count(), 0);
        assert_eq!(s.gaps(3..7).collect::<Vec<_>>(), vec![4..6]);
        s.remove(0..3);
        assert_eq!(s.ranges, vec![3..4, 6..8]);
        s.remove(6..7);
        assert_eq!(s.ranges, vec![3..4, 7..8]);
        s.insert(4..7, 8);
        s.remove(5..6);
        assert_eq!(s.ranges, vec![3..5, 6..8], "a range is split");
        s.remove(0..100);
        assert!(s.ranges.is_empty());
    }

    #[test]
    fn matches_a_naive_model() {
        // A tiny deterministic LCG drives random inserts against a bitmap.
        let mut x = 12345u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 33
        };
        let mut s = RangeSet::new();
        let mut model = [false; 200];
        for _ in 0..500 {
            let a = next() % 200;
            let b = (a + next() % 10).min(200);
            if next() % 4 == 0 {
                s.remove(a..b);
                model[a as usize..b as usize].iter_mut().for_each(|v| *v = false);
            } else {
                let new = s.insert(a..b, usize::MAX);
                let model_new = model[a as usize..b as usize].iter().any(|v| !v);
                assert_eq!(new, model_new);
                model[a as usize..b as usize].iter_mut().for_each(|v| *v = true);
            }
            assert!(s.ranges.windows(2).all(|w| w[0].end < w[1].start), "sorted, disjoint, not touching");
            for (i, m) in model.iter().enumerate() {
                assert_eq!(s.contains(i as u64), *m);
            }
            let gaps: u64 = s.gaps(0..200).map(|g| g.end - g.start).sum();
            assert_eq!(gaps, model.iter().filter(|v| !**v).count() as u64);
        }
    }
}
