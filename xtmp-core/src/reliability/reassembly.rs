//! Reassembly of one fragmented message (SPEC.md section 4.2).
//!
//! Bytes already held are never overwritten: a fragment adds only the bytes
//! it has that are not held yet. Memory grows with the bytes that arrived,
//! never with the size a fragment declares.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use bytes::{Bytes, BytesMut};

/// Separate runs of out-of-order bytes one message may hold. Beyond this a
/// fragment that would open another run is refused (and not acknowledged).
pub const MAX_RUNS: usize = 256;

/// Why a fragment cannot be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FragmentError {
    /// It reaches past the message's declared length, or is empty.
    OutOfBounds,
    /// It would open more than [`MAX_RUNS`] separate runs.
    TooManyRuns,
}

/// What storing a fragment did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Every byte was already held.
    Duplicate,
    /// New bytes were stored.
    Progress,
    /// The message is whole.
    Complete(Bytes),
}

/// One message being reassembled.
#[derive(Debug)]
pub(crate) struct Reassembly {
    total: u32,
    /// Bytes `0..head.len()`. A `Vec` rather than a `BytesMut` so that its
    /// growth stops at `total` (see [`Reassembly::extend_head`]).
    head: Vec<u8>,
    /// Disjoint, non-adjacent runs beyond the head, by start offset.
    runs: BTreeMap<u32, BytesMut>,
}

impl Reassembly {
    pub(crate) fn new(total: u32) -> Reassembly {
        Reassembly { total, head: Vec::new(), runs: BTreeMap::new() }
    }

    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// Bytes of memory held (capacities, so growth is charged too).
    pub(crate) fn held(&self) -> usize {
        self.head.capacity() + self.runs.values().map(BytesMut::capacity).sum::<usize>()
    }

    /// Stores `data` at `offset`.
    pub(crate) fn insert(&mut self, offset: u32, data: &[u8]) -> Result<Stored, FragmentError> {
        let end = u64::from(offset) + data.len() as u64;
        if data.is_empty() || end > u64::from(self.total) {
            return Err(FragmentError::OutOfBounds);
        }
        let end = end as u32;
        let mut at = offset.max(self.head.len() as u32);
        let mut progress = false;
        while at < end {
            // Runs the head absorbed are behind it now.
            at = at.max(self.head.len() as u32);
            if at >= end {
                break;
            }
            // The run at or before `at`, if it covers `at`.
            if let Some((&s, r)) = self.runs.range(..=at).next_back()
                && s + r.len() as u32 > at
            {
                at = s + r.len() as u32;
                continue;
            }
            // The gap from `at` to the next run or the end.
            let gap_end = self.runs.range(at..).next().map_or(end, |(&s, _)| s.min(end));
            let bytes = &data[(at - offset) as usize..(gap_end - offset) as usize];
            self.put(at, bytes)?;
            progress = true;
            at = gap_end;
        }
        if !progress {
            return Ok(Stored::Duplicate);
        }
        if self.head.len() as u32 == self.total {
            return Ok(Stored::Complete(Bytes::from(core::mem::take(&mut self.head))));
        }
        Ok(Stored::Progress)
    }

    /// Appends to the head. Its capacity grows to 1.5 times what it then
    /// holds (amortised copies stay linear) but never beyond the message's
    /// length, so a message is charged at most 1.5 times what arrived, and
    /// exactly its length once whole. A message whose first fragment is
    /// two thirds of it or more (a message just over one frame) gets its
    /// whole length at once: one allocation, no copy on growth.
    fn extend_head(&mut self, bytes: &[u8]) {
        let needed = self.head.len() + bytes.len();
        if needed > self.head.capacity() {
            let grown = (needed + needed / 2).min(self.total as usize);
            self.head.reserve_exact(grown - self.head.len());
        }
        self.head.extend_from_slice(bytes);
    }

    /// Stores bytes at `at`, which no held byte covers.
    fn put(&mut self, at: u32, bytes: &[u8]) -> Result<(), FragmentError> {
        let end = at + bytes.len() as u32;
        let before = self.runs.range(..at).next_back().filter(|(s, r)| **s + r.len() as u32 == at).map(|(s, _)| *s);
        let after = self.runs.contains_key(&end);
        if at == self.head.len() as u32 {
            self.extend_head(bytes);
            // Absorb the runs the head now reaches.
            while let Some(run) = self.runs.remove(&(self.head.len() as u32)) {
                self.extend_head(&run);
            }
            return Ok(());
        }
        let start = match before {
            Some(s) => {
                if let Some(r) = self.runs.get_mut(&s) {
                    r.extend_from_slice(bytes);
                }
                s
            }
            None => {
                if self.runs.len() >= MAX_RUNS && !after {
                    return Err(FragmentError::TooManyRuns);
                }
                self.runs.insert(at, BytesMut::from(bytes));
                at
            }
        };
        if after
            && let Some(next) = self.runs.remove(&end)
            && let Some(r) = self.runs.get_mut(&start)
        {
            r.extend_from_slice(&next);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn in_order_out_of_order_and_overlaps() {
        let msg: Vec<u8> = (0..100u8).collect();
        let mut r = Reassembly::new(100);
        assert_eq!(r.insert(50, &msg[50..70]), Ok(Stored::Progress));
        assert_eq!(r.insert(80, &msg[80..100]), Ok(Stored::Progress));
        assert_eq!(r.runs.len(), 2);
        assert_eq!(r.insert(70, &msg[70..80]), Ok(Stored::Progress));
        assert_eq!(r.runs.len(), 1, "adjacent runs merge");
        assert_eq!(r.insert(55, &msg[55..60]), Ok(Stored::Duplicate));
        assert_eq!(r.insert(0, &msg[0..10]), Ok(Stored::Progress));
        // Overlapping both the head and the run: only the gap is new.
        let got = r.insert(5, &msg[5..60]).unwrap();
        assert_eq!(got, Stored::Complete(Bytes::from(msg.clone())));
    }

    #[test]
    fn refuses_out_of_bounds_and_too_many_runs() {
        let mut r = Reassembly::new(10_000);
        assert_eq!(r.insert(9_999, &[1, 2]), Err(FragmentError::OutOfBounds));
        assert_eq!(r.insert(0, &[]), Err(FragmentError::OutOfBounds));
        assert_eq!(r.insert(u32::MAX, &[1]), Err(FragmentError::OutOfBounds));
        for i in 0..MAX_RUNS as u32 {
            assert_eq!(r.insert(10 + i * 2, &[7]), Ok(Stored::Progress));
        }
        assert_eq!(r.insert(9_000, &[7]), Err(FragmentError::TooManyRuns));
        // Filling a hole between runs still works: it opens no run.
        assert_eq!(r.insert(11, &[7]), Ok(Stored::Progress));
        assert!(r.held() >= MAX_RUNS);
    }

    #[test]
    fn the_head_is_charged_at_most_half_again_what_arrived_and_never_past_the_total() {
        let msg: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut r = Reassembly::new(msg.len() as u32);
        let mut at = 0;
        while at + 1000 < msg.len() {
            assert_eq!(r.insert(at as u32, &msg[at..at + 1000]), Ok(Stored::Progress));
            at += 1000;
            assert!(r.held() <= at + at / 2 + 1000, "{} bytes charged for {at}", r.held());
            assert!(r.held() <= msg.len());
        }
        assert_eq!(r.insert(at as u32, &msg[at..]), Ok(Stored::Complete(Bytes::from(msg.clone()))));
    }

    #[test]
    fn any_order_reassembles_exactly() {
        let msg: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let mut x = 99u64;
        for _ in 0..50 {
            let mut r = Reassembly::new(msg.len() as u32);
            let mut done = None;
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                // Starts below 0 are clamped, so the first byte is as likely as any.
                let a = (((x >> 33) % 3400) as usize).saturating_sub(400);
                let b = (a + 1 + ((x >> 20) % 400) as usize).min(3000);
                if let Stored::Complete(m) = r.insert(a as u32, &msg[a..b]).unwrap() {
                    done = Some(m);
                    break;
                }
            }
            assert_eq!(done.as_deref(), Some(&msg[..]));
        }
    }
}
