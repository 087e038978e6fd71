//! The anti-replay window (RFC 6479 style): a ring of 64-bit blocks, so a
//! check or an update costs O(1) however wide the window is.
//!
//! The session calls [`ReplayWindow::check`] before opening a frame and
//! [`ReplayWindow::accept`] only after the AEAD tag has verified, so a
//! forged frame can never move the window.

use alloc::vec;
use alloc::vec::Vec;

/// Why a sequence number was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Seen before.
    Duplicate,
    /// Older than the window.
    TooOld,
    /// `2^64 - 1`: never sent (SPEC.md section 3.3), so the window's top
    /// (one past the highest accepted) always fits in a `u64`.
    OutOfRange,
}

/// Remembers which of the last `width` sequence numbers were accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplayWindow {
    blocks: Vec<u64>,
    /// One past the highest accepted sequence number (0: nothing yet).
    top: u64,
    width: u64,
}

impl ReplayWindow {
    /// A window at least `width` frames wide (rounded up to a multiple of 64).
    pub(crate) fn new(width: u32) -> Self {
        let n = (width as usize).div_ceil(64).max(1) + 1;
        ReplayWindow { blocks: vec![0; n], top: 0, width: ((n - 1) * 64) as u64 }
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        (((seq / 64) % self.blocks.len() as u64) as usize, 1u64 << (seq % 64))
    }

    /// Whether `seq` may be accepted. Changes nothing.
    pub(crate) fn check(&self, seq: u64) -> Result<(), Replay> {
        if seq == u64::MAX {
            return Err(Replay::OutOfRange);
        }
        if seq >= self.top {
            return Ok(());
        }
        if self.top - 1 - seq >= self.width {
            return Err(Replay::TooOld);
        }
        let (i, bit) = self.slot(seq);
        if self.blocks[i] & bit != 0 { Err(Replay::Duplicate) } else { Ok(()) }
    }

    /// Whether `seq` would be the highest accepted so far.
    pub(crate) fn is_newest(&self, seq: u64) -> bool {
        seq >= self.top
    }

    /// Records `seq` as accepted. Call only after [`ReplayWindow::check`]
    /// passed and the frame authenticated.
    pub(crate) fn accept(&mut self, seq: u64) {
        if seq >= self.top {
            // Clear the blocks the window slides over (at most all of them).
            let from = if self.top == 0 { 0 } else { (self.top - 1) / 64 + 1 };
            let to = seq / 64;
            let n = self.blocks.len() as u64;
            if self.top == 0 || to.saturating_sub(from) >= n {
                self.blocks.fill(0);
            } else {
                for b in from..=to {
                    self.blocks[(b % n) as usize] = 0;
                }
            }
            self.top = seq + 1;
        }
        let (i, bit) = self.slot(seq);
        self.blocks[i] |= bit;
    }

    /// How many sequence numbers below the highest the window remembers.
    #[cfg(any(test, feature = "__fuzzing"))]
    pub(crate) fn width(&self) -> u64 {
        self.width
    }

    /// The highest accepted sequence number, if any.
    #[cfg(test)]
    pub(crate) fn highest(&self) -> Option<u64> {
        self.top.checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use proptest::prelude::*;

    #[test]
    fn basic() {
        let mut w = ReplayWindow::new(128);
        assert_eq!(w.check(5), Ok(()));
        w.accept(5);
        assert_eq!(w.check(5), Err(Replay::Duplicate));
        assert_eq!(w.check(4), Ok(()));
        w.accept(1000);
        assert_eq!(w.check(5), Err(Replay::TooOld));
        assert_eq!(w.check(1000 - 127), Ok(()));
        assert_eq!(w.check(1000 - 128), Err(Replay::TooOld));
        assert_eq!(w.highest(), Some(1000));
        w.accept(u64::MAX - 1);
        assert_eq!(w.check(u64::MAX - 1), Err(Replay::Duplicate));
        // 2^64 - 1 is never valid, so the top (one past the highest) never overflows.
        assert_eq!(w.check(u64::MAX), Err(Replay::OutOfRange));
    }

    proptest! {
        /// The window agrees with a set-based model: a number is accepted
        /// iff it was never accepted and is within `width` of the highest.
        #[test]
        fn matches_set_model(width in 1u32..300, seqs in proptest::collection::vec(0u64..2000, 0..400)) {
            let mut w = ReplayWindow::new(width);
            let mut seen = BTreeSet::new();
            for s in seqs {
                let top = seen.iter().next_back().copied();
                let expect_ok = !seen.contains(&s) && top.is_none_or(|t: u64| s > t || t - s < w.width);
                prop_assert_eq!(w.check(s).is_ok(), expect_ok, "seq {} top {:?}", s, top);
                if expect_ok {
                    w.accept(s);
                    seen.insert(s);
                }
            }
        }
    }
}
