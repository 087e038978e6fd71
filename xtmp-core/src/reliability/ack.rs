//! Acknowledgements (SPEC.md section 4.3): the ACK frame's encoding and the
//! receiver's record of what to acknowledge and when.

use alloc::vec::Vec;
use core::ops::Range;
use core::time::Duration;

use super::ranges::RangeSet;
use crate::time::Instant;

/// Ranges an ACK frame carries at most, and a receiver remembers.
pub const MAX_ACK_RANGES: usize = 32;

/// `largest u64 ‖ ack delay u32 ‖ range count u8 ‖ first range u64`.
const FIXED_LEN: usize = 21;
/// `gap u64 ‖ length u64`.
const RANGE_LEN: usize = 16;

/// A parsed ACK frame payload, borrowing the ranges after the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AckFrame<'a> {
    pub(crate) largest: u64,
    /// How long the receiver held the largest before acknowledging it.
    pub(crate) delay: Duration,
    first: u64,
    rest: &'a [u8],
}

impl<'a> AckFrame<'a> {
    /// Parses and checks an ACK payload: exact length, at most
    /// [`MAX_ACK_RANGES`] ranges, none below sequence number 0.
    pub(crate) fn parse(p: &'a [u8]) -> Option<AckFrame<'a>> {
        let (fixed, rest) = p.split_first_chunk::<FIXED_LEN>()?;
        let largest = u64::from_be_bytes(fixed[0..8].try_into().ok()?);
        let delay_us = u32::from_be_bytes(fixed[8..12].try_into().ok()?);
        let count = usize::from(fixed[12]);
        let first = u64::from_be_bytes(fixed[13..21].try_into().ok()?);
        if count + 1 > MAX_ACK_RANGES || rest.len() != count * RANGE_LEN || first > largest {
            return None;
        }
        let f = AckFrame { largest, delay: Duration::from_micros(delay_us.into()), first, rest };
        // Every range must stay at or above 0.
        let mut low = largest - first;
        for pair in rest.chunks_exact(RANGE_LEN) {
            let gap = u64::from_be_bytes(pair[..8].try_into().ok()?);
            let len = u64::from_be_bytes(pair[8..].try_into().ok()?);
            let high = low.checked_sub(gap)?.checked_sub(2)?;
            low = high.checked_sub(len)?;
        }
        Some(f)
    }

    /// The length of the ACK block at the start of `p` (one carried inside
    /// a data frame, SPEC.md 4.3), from its range count; `None` if the
    /// count is over the limit or `p` is shorter. The block itself is
    /// checked by [`AckFrame::parse`].
    pub(crate) fn peek_len(p: &[u8]) -> Option<usize> {
        let count = usize::from(*p.get(12)?);
        let len = FIXED_LEN + RANGE_LEN * count;
        (count < MAX_ACK_RANGES && p.len() >= len).then_some(len)
    }

    /// The acknowledged ranges, highest first, as half-open ranges.
    pub(crate) fn ranges(&self) -> impl Iterator<Item = Range<u64>> + 'a {
        let mut low = self.largest - self.first;
        let first = core::iter::once(low..self.largest + 1);
        let rest = self.rest.chunks_exact(RANGE_LEN).map(move |pair| {
            let gap = u64::from_be_bytes(pair[..8].try_into().unwrap_or_default());
            let len = u64::from_be_bytes(pair[8..].try_into().unwrap_or_default());
            let high = low - gap - 2;
            low = high - len;
            low..high + 1
        });
        first.chain(rest)
    }

    /// The encoded length of an ACK of `ranges`.
    pub(crate) fn encoded_len(ranges: &RangeSet) -> usize {
        FIXED_LEN + RANGE_LEN * ranges.len().min(MAX_ACK_RANGES).saturating_sub(1)
    }

    /// Encodes an ACK of `ranges` (highest [`MAX_ACK_RANGES`] only) into
    /// `out`, which must be [`AckFrame::encoded_len`] long. Returns the
    /// largest acknowledged.
    pub(crate) fn encode(ranges: &RangeSet, delay: Duration, out: &mut [u8]) -> Option<u64> {
        let mut iter = ranges.iter().rev().take(MAX_ACK_RANGES);
        let top = iter.next()?;
        let largest = top.end - 1;
        let count = ranges.len().min(MAX_ACK_RANGES) - 1;
        out[0..8].copy_from_slice(&largest.to_be_bytes());
        let us = u32::try_from(delay.as_micros()).unwrap_or(u32::MAX);
        out[8..12].copy_from_slice(&us.to_be_bytes());
        out[12] = count as u8;
        out[13..21].copy_from_slice(&(largest - top.start).to_be_bytes());
        let mut low = top.start;
        for (i, r) in iter.enumerate() {
            let at = FIXED_LEN + i * RANGE_LEN;
            let high = r.end - 1;
            out[at..at + 8].copy_from_slice(&(low - high - 2).to_be_bytes());
            out[at + 8..at + 16].copy_from_slice(&(high - r.start).to_be_bytes());
            low = r.start;
        }
        Some(largest)
    }
}

/// What a receiver has to acknowledge, and by when.
#[derive(Debug)]
pub(crate) struct AckState {
    ranges: RangeSet,
    largest_at: Instant,
    /// Ack-eliciting frames received since the last ACK was sent.
    eliciting: u32,
    /// When an ACK must go out at the latest.
    deadline: Option<Instant>,
    /// Some of those frames came on a stream path: the ACK goes on one
    /// too (see [`AckState::owe_on_stream`]).
    stream_owed: bool,
    /// ACKs sent and not yet known to be seen (slots are reused, so
    /// steady traffic allocates nothing).
    sent: Vec<SentAck>,
}

/// An ACK we sent: the frame's sequence number (`None`: a free slot) and
/// the ranges it carried.
#[derive(Debug)]
struct SentAck {
    seq: Option<u64>,
    ranges: RangeSet,
}

/// Sent ACKs remembered for [`AckState::on_peer_ack`]; an older one is
/// forgotten (its ranges are then repeated until a newer ACK is seen).
const MAX_SENT_ACKS: usize = 8;

impl AckState {
    pub(crate) fn new(now: Instant) -> AckState {
        AckState {
            ranges: RangeSet::new(),
            largest_at: now,
            eliciting: 0,
            deadline: None,
            stream_owed: false,
            sent: Vec::new(),
        }
    }

    /// Records an authenticated frame. An ack-eliciting frame asks for an
    /// ACK within `max_delay`, at once if it is the second since the last
    /// ACK, arrived out of order, or asks for one (`now_please`: the
    /// sender has nothing more to send and waits for this ACK).
    pub(crate) fn on_frame(&mut self, seq: u64, eliciting: bool, now_please: bool, now: Instant, max_delay: Duration) {
        let largest = self.ranges.max();
        let in_order = largest.is_none_or(|l| seq == l + 1);
        if largest.is_none_or(|l| seq > l) {
            self.largest_at = now;
        }
        self.ranges.insert(seq..seq + 1, MAX_ACK_RANGES);
        if !eliciting {
            return;
        }
        self.eliciting += 1;
        let at = if now_please || self.eliciting >= 2 || !in_order { now } else { now + max_delay };
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
    }

    /// The ack-eliciting frame just recorded came on a stream path, so the
    /// ACK that answers it goes on a stream path as well. A stream frame is
    /// never declared lost, so its sender relies on this ACK; on a datagram
    /// path (a hybrid session's other half) it could be lost, and nothing
    /// would ask for it again.
    pub(crate) fn owe_on_stream(&mut self) {
        self.stream_owed = true;
    }

    /// Whether the pending ACK goes on a stream path.
    pub(crate) fn stream_owed(&self) -> bool {
        self.stream_owed
    }

    /// Whether ack-eliciting frames wait for an ACK (one may go with other output).
    pub(crate) fn pending(&self) -> bool {
        self.eliciting > 0
    }

    /// When an ACK must be sent, if one is pending.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn encoded_len(&self) -> usize {
        AckFrame::encoded_len(&self.ranges)
    }

    /// Writes the ACK into `out` (exactly [`AckState::encoded_len`] bytes)
    /// and clears the pending state. Returns the largest acknowledged.
    pub(crate) fn write(&mut self, now: Instant, out: &mut [u8]) -> Option<u64> {
        let largest = AckFrame::encode(&self.ranges, now.saturating_duration_since(self.largest_at), out)?;
        self.eliciting = 0;
        self.deadline = None;
        self.stream_owed = false;
        Some(largest)
    }

    /// Notes that the ACK just written went out in the frame with sequence
    /// number `seq`: what it covered, to stop repeating exactly that once
    /// the peer has seen it.
    pub(crate) fn on_sent(&mut self, seq: u64) {
        if self.sent.len() < MAX_SENT_ACKS {
            self.sent.push(SentAck { seq: None, ranges: RangeSet::new() });
        }
        // A free slot, or else the oldest (lowest sequence number).
        let slot = self.sent.iter_mut().min_by_key(|a| a.seq.map_or((0, 0), |s| (1, s)));
        if let Some(a) = slot {
            a.seq = Some(seq);
            a.ranges.copy_from(&self.ranges);
        }
    }

    /// The peer acknowledged frames `acked`: ranges our ACKs among them
    /// covered need not be repeated. Only what such an ACK carried is
    /// forgotten: a frame that arrived after it was written, even below its
    /// largest (a stream frame overtaken by a datagram), is still
    /// acknowledged. The largest stays, so an out-of-order frame below it
    /// is still recognised as out of order.
    pub(crate) fn on_peer_ack(&mut self, acked: &[Range<u64>]) {
        for a in &mut self.sent {
            if !a.seq.is_some_and(|seq| acked.iter().any(|r| r.contains(&seq))) {
                continue;
            }
            a.seq = None;
            let Some(largest) = a.ranges.max() else { continue };
            for r in a.ranges.iter() {
                self.ranges.remove(r.start..r.end.min(largest));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn round_trip(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
        let mut s = RangeSet::new();
        for r in ranges {
            s.insert(r.clone(), MAX_ACK_RANGES);
        }
        let mut out = vec![0u8; AckFrame::encoded_len(&s)];
        let largest = AckFrame::encode(&s, Duration::from_micros(1500), &mut out).unwrap();
        let f = AckFrame::parse(&out).unwrap();
        assert_eq!(f.largest, largest);
        assert_eq!(f.delay, Duration::from_micros(1500));
        f.ranges().collect()
    }

    #[test]
    fn encodes_and_parses_ranges() {
        assert_eq!(round_trip(&[(0..1)]), vec![(0..1)]);
        assert_eq!(round_trip(&[0..10, 12..13, 20..25]), vec![20..25, 12..13, 0..10]);
        let many: Vec<_> = (0..40u64).map(|i| i * 3..i * 3 + 1).collect();
        let got = round_trip(&many);
        assert_eq!(got.len(), MAX_ACK_RANGES);
        assert_eq!(got[0], 117..118);
    }

    #[test]
    fn refuses_malformed_frames() {
        let mut s = RangeSet::new();
        s.insert(5..10, 8);
        s.insert(0..2, 8);
        let mut out = vec![0u8; AckFrame::encoded_len(&s)];
        AckFrame::encode(&s, Duration::ZERO, &mut out).unwrap();
        assert!(AckFrame::parse(&out).is_some());
        assert!(AckFrame::parse(&out[..out.len() - 1]).is_none(), "length must match the count");
        let mut bad = out.clone();
        bad[12] = 2;
        assert!(AckFrame::parse(&bad).is_none());
        // A gap reaching below zero.
        let mut bad = out.clone();
        bad[FIXED_LEN..FIXED_LEN + 8].copy_from_slice(&10u64.to_be_bytes());
        assert!(AckFrame::parse(&bad).is_none());
        // A first range longer than the largest.
        let mut bad = out;
        bad[13..21].copy_from_slice(&100u64.to_be_bytes());
        assert!(AckFrame::parse(&bad).is_none());
        assert!(AckFrame::parse(&[0u8; 20]).is_none());
        let mut too_many = vec![0u8; FIXED_LEN + RANGE_LEN * MAX_ACK_RANGES];
        too_many[12] = MAX_ACK_RANGES as u8;
        assert!(AckFrame::parse(&too_many).is_none());
    }

    #[test]
    fn ack_timing() {
        let t0 = Instant::from_nanos(1_000);
        let d = Duration::from_millis(25);
        let mut a = AckState::new(t0);
        a.on_frame(0, false, false, t0, d);
        assert!(!a.pending() && a.deadline().is_none(), "a non-eliciting frame asks for nothing");
        a.on_frame(1, true, false, t0, d);
        assert_eq!(a.deadline(), Some(t0 + d));
        a.on_frame(2, true, false, t0, d);
        assert_eq!(a.deadline(), Some(t0), "the second eliciting frame is acknowledged at once");
        let mut out = vec![0u8; a.encoded_len()];
        assert_eq!(a.write(t0, &mut out), Some(2));
        a.on_sent(10);
        assert!(!a.pending());
        a.on_frame(5, true, false, t0, d);
        assert_eq!(a.deadline(), Some(t0), "a gap is reported at once");
        let mut b = AckState::new(t0);
        b.on_frame(0, true, true, t0, d);
        assert_eq!(b.deadline(), Some(t0), "a frame that asks for an ACK now gets it now");
        a.on_peer_ack(&[10..11]);
        let mut out = vec![0u8; a.encoded_len()];
        a.write(t0, &mut out);
        let f = AckFrame::parse(&out).unwrap();
        assert_eq!(f.ranges().collect::<Vec<_>>(), vec![5..6, 2..3]);
    }

    #[test]
    fn a_frame_that_arrives_after_an_ack_was_written_is_still_acknowledged() {
        let t0 = Instant::from_nanos(1_000);
        let d = Duration::from_millis(25);
        let mut a = AckState::new(t0);
        for seq in [0, 1, 3] {
            a.on_frame(seq, true, false, t0, d);
        }
        let mut out = vec![0u8; a.encoded_len()];
        assert_eq!(a.write(t0, &mut out), Some(3));
        a.on_sent(7);
        // Frame 2 (on a stream path, overtaken by 3 on a datagram path)
        // arrives before the peer acknowledges our ACK in frame 7.
        a.on_frame(2, true, false, t0, d);
        a.on_peer_ack(&[6..8]);
        let mut out = vec![0u8; a.encoded_len()];
        a.write(t0, &mut out);
        let f = AckFrame::parse(&out).unwrap();
        assert_eq!(f.ranges().collect::<Vec<_>>(), vec![2..4], "2 was never acknowledged; 3 is the largest");
        a.on_sent(9);
        a.on_peer_ack(&[8..9]);
        assert_eq!(a.sent.iter().filter(|s| s.seq.is_some()).count(), 1, "an unacknowledged ACK is remembered");
    }
}
