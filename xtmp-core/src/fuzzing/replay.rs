//! The anti-replay window against a plain set-based model.

use alloc::collections::BTreeSet;

use arbitrary::Unstructured;

use crate::session::replay::{Replay, ReplayWindow};

/// Checks and accepts fuzzer-chosen sequence numbers (near the top, far
/// below it, far above it, or anywhere in `u64`) on a window of fuzzer-chosen
/// width, and compares every answer with a `BTreeSet` of accepted numbers
/// and SPEC.md section 3.5's rule.
pub fn replay_window(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(width) = u.int_in_range(1..=4096u32) else { return };
    let mut w = ReplayWindow::new(width);
    let span = w.width();
    assert!(span >= u64::from(width), "window narrower than asked");
    let mut accepted: BTreeSet<u64> = BTreeSet::new();
    while !u.is_empty() {
        let top = accepted.last().copied();
        let (Ok(mode), Ok(n)) = (u.int_in_range(0..=3u8), u.arbitrary::<u64>()) else { return };
        let base = top.unwrap_or(0);
        let seq = match mode {
            // Within two windows of the top, either side.
            0 => base.wrapping_add(n % (4 * span)).wrapping_sub(2 * span),
            // Just around the window's edge.
            1 => base.wrapping_sub(span).wrapping_add(n % 3).wrapping_sub(1),
            // A big jump ahead.
            2 => base.saturating_add(n % (1 << 20)),
            _ => n,
        };
        let expected = match top {
            _ if seq == u64::MAX => Err(Replay::OutOfRange),
            None => Ok(()),
            Some(top) if seq > top => Ok(()),
            Some(top) if top - seq >= span => Err(Replay::TooOld),
            Some(_) if accepted.contains(&seq) => Err(Replay::Duplicate),
            Some(_) => Ok(()),
        };
        assert_eq!(w.check(seq), expected, "check({seq}) with top {top:?}, width {span}");
        if expected.is_ok() && u.arbitrary::<bool>().unwrap_or(true) {
            w.accept(seq);
            accepted.insert(seq);
            assert_eq!(w.check(seq), Err(Replay::Duplicate));
            // The model forgets what the window may forget.
            let top = accepted.last().copied().unwrap_or(0);
            while accepted.first().is_some_and(|&s| top - s >= span) {
                accepted.pop_first();
            }
        }
    }
}
