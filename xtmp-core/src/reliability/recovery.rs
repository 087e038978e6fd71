//! Loss detection (RFC 9002 section 6): what was sent, what the peer
//! acknowledged, what is lost, and the probe timeout.
//!
//! Frames on stream paths are tracked until acknowledged but never declared
//! lost by time or by later acknowledgements (their transport retransmits);
//! they are lost only with their path ([`Recovery::lose_path`]).

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::time::Duration;

use super::ack::AckFrame;
use super::rtt::RttEstimator;
use crate::time::Instant;

/// A frame is lost once a frame sent this many sequence numbers later on
/// its path is acknowledged (until reordering is seen: see
/// [`MAX_PACKET_THRESHOLD`]).
pub const PACKET_THRESHOLD: u64 = 3;

/// The packet threshold grows, after a frame declared lost turns out to
/// have arrived (reordering, not loss), to the distance by which that frame
/// was outrun, up to this.
pub const MAX_PACKET_THRESHOLD: u64 = 64;

/// Probe timeouts without an acknowledgement, while frames are outstanding
/// on a stream path, after which the stream counts as stalled and fails
/// (the time a datagram path takes to send four backed-off probes).
pub const STALL_PTOS: u32 = 15;

/// The shortest stall: a peer busy for less than this is not taken for a
/// dead stream.
pub const MIN_STALL: Duration = Duration::from_secs(1);

/// Probe timeouts in a row (and at least [`MIN_STALL`]) after which a
/// datagram path with frames in flight counts as dead, when another path
/// can take its traffic (a hybrid session's stream): the time of
/// [`STALL_PTOS`], since each expiry doubles the wait.
pub const DATAGRAM_STALL_PROBES: u32 = 4;

/// Each spurious loss also widens the time threshold by a quarter of the
/// smoothed RTT, up to this many quarters (RACK's adaptive reordering
/// window, RFC 8985 section 6.2).
const MAX_REORDER_QUARTERS: u32 = 4;

/// Frames declared lost that are remembered, to recognise spurious losses.
const LOST_MEMORY: usize = 64;

/// What a tracked frame carried, to act on when it is acknowledged or lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Content {
    /// Unreliable data or a probe: nothing to repeat.
    Nothing,
    /// Bytes `start..end` of reliable message `id`.
    Data { id: u64, start: u64, end: u64 },
    /// A Forward for a priority class.
    Forward(u8),
    /// A MaxData for a priority class.
    MaxData(u8),
    /// A SubscriptionCredit for a subscription.
    SubCredit(u64),
    /// `len` bytes of best-effort subscription item `id`, which holds
    /// subscription credit until it is acknowledged or lost (SPEC.md 4.9).
    Item { id: u64, len: u64 },
    /// A path MTU probe of this many bytes.
    MtuProbe(u32),
}

/// One frame sent and tracked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SentFrame {
    pub(crate) seq: u64,
    pub(crate) path: u32,
    pub(crate) time: Instant,
    pub(crate) size: u32,
    /// Whether the peer acknowledges it on its own (REQUIRES_ACK).
    pub(crate) eliciting: bool,
    /// Sent on a datagram path: counts toward congestion control and is
    /// subject to loss detection.
    pub(crate) datagram: bool,
    /// Its datagram was larger than the path's base size (its loss may
    /// mean the path MTU shrank).
    pub(crate) large: bool,
    pub(crate) content: Content,
}

impl SentFrame {
    /// Whether it counts toward bytes in flight.
    pub(crate) fn in_flight(&self) -> bool {
        self.eliciting && self.datagram
    }

    /// Whether its loss says something about congestion: a lost MTU probe
    /// says only that the path is narrower (RFC 8899 section 3).
    pub(crate) fn congestion_signal(&self) -> bool {
        self.in_flight() && !matches!(self.content, Content::MtuProbe(_))
    }
}

/// What an ACK did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AckOutcome {
    /// Some frame was newly acknowledged.
    pub(crate) newly: bool,
    /// An RTT sample, if the largest acknowledged was newly acknowledged
    /// and ack-eliciting.
    pub(crate) rtt_sample: Option<Duration>,
    /// Frames we had declared lost that the peer did receive.
    pub(crate) spurious: u32,
}

/// The sender's record of tracked frames.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// In sequence order; the frame is `None` once acknowledged or lost.
    sent: VecDeque<(u64, Option<SentFrame>)>,
    /// Entries still `Some`.
    live: usize,
    in_flight: u64,
    eliciting_in_flight: usize,
    /// Largest acknowledged sequence number per path.
    largest_acked: Vec<(u32, u64)>,
    last_eliciting_sent: Option<Instant>,
    loss_time: Option<Instant>,
    pub(crate) pto_count: u32,
    /// Ack-eliciting frames outstanding on stream paths, and since when
    /// none of them was acknowledged while some were.
    stream_outstanding: usize,
    stream_silent_since: Option<Instant>,
    /// Recently declared lost: (sequence number, how far it was outrun).
    lost: VecDeque<(u64, u64)>,
    /// Current packet threshold, and extra time threshold in quarter RTTs.
    packet_threshold: u64,
    reorder_quarters: u32,
}

impl Recovery {
    pub(crate) fn new() -> Recovery {
        Recovery {
            sent: VecDeque::new(),
            live: 0,
            in_flight: 0,
            eliciting_in_flight: 0,
            largest_acked: Vec::new(),
            last_eliciting_sent: None,
            loss_time: None,
            pto_count: 0,
            stream_outstanding: 0,
            stream_silent_since: None,
            lost: VecDeque::new(),
            packet_threshold: PACKET_THRESHOLD,
            reorder_quarters: 0,
        }
    }

    /// Gives back spare capacity (an idle session stays small).
    pub(crate) fn shrink(&mut self) {
        self.sent.shrink_to_fit();
    }

    /// The packet threshold in force (it adapts to observed reordering).
    #[cfg(test)]
    pub(crate) fn packet_threshold(&self) -> u64 {
        self.packet_threshold
    }

    /// An acknowledged range covers frames we declared lost: they were
    /// reordered, not lost. Widen both thresholds so the same reordering
    /// is not taken for loss again.
    fn note_spurious(&mut self, range: &core::ops::Range<u64>) -> u32 {
        let mut n = 0;
        let mut i = 0;
        while i < self.lost.len() {
            let (seq, outrun) = self.lost[i];
            if range.contains(&seq) {
                self.packet_threshold = self.packet_threshold.max((outrun + 1).min(MAX_PACKET_THRESHOLD));
                self.reorder_quarters = (self.reorder_quarters + 1).min(MAX_REORDER_QUARTERS);
                self.lost.remove(i);
                n += 1;
            } else {
                i += 1;
            }
        }
        n
    }

    /// Bytes of ack-eliciting frames in flight on datagram paths.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Frames tracked and not yet resolved.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn on_sent(&mut self, f: SentFrame) {
        if f.in_flight() {
            self.in_flight += u64::from(f.size);
            self.eliciting_in_flight += 1;
            self.last_eliciting_sent = Some(f.time);
        }
        if f.eliciting && !f.datagram {
            if self.stream_outstanding == 0 {
                self.stream_silent_since = Some(f.time);
            }
            self.stream_outstanding += 1;
        }
        self.live += 1;
        self.sent.push_back((f.seq, Some(f)));
    }

    fn resolve(&mut self, i: usize) -> Option<SentFrame> {
        let f = self.sent.get_mut(i)?.1.take()?;
        self.live -= 1;
        if f.in_flight() {
            self.in_flight -= u64::from(f.size);
            self.eliciting_in_flight -= 1;
        }
        if f.eliciting && !f.datagram {
            self.stream_outstanding -= 1;
            if self.stream_outstanding == 0 {
                self.stream_silent_since = None;
            }
        }
        Some(f)
    }

    fn trim(&mut self) {
        while self.sent.front().is_some_and(|e| e.1.is_none()) {
            self.sent.pop_front();
        }
    }

    /// Applies an ACK: `acked` sees each newly acknowledged frame.
    pub(crate) fn on_ack(&mut self, ack: &AckFrame<'_>, now: Instant, mut acked: impl FnMut(SentFrame)) -> AckOutcome {
        let mut out = AckOutcome::default();
        let mut any_eliciting = false;
        let mut stream_progress = false;
        let mut largest_time = None;
        for range in ack.ranges() {
            if !self.lost.is_empty() {
                out.spurious += self.note_spurious(&range);
            }
            let mut i = self.sent.partition_point(|e| e.0 < range.start);
            while i < self.sent.len() && self.sent[i].0 < range.end {
                if let Some(f) = self.resolve(i) {
                    out.newly = true;
                    any_eliciting |= f.eliciting;
                    stream_progress |= f.eliciting && !f.datagram;
                    if f.seq == ack.largest {
                        largest_time = Some((f.time, f.eliciting));
                    }
                    self.note_largest(f.path, f.seq);
                    acked(f);
                }
                i += 1;
            }
        }
        if let Some((time, eliciting)) = largest_time
            && (eliciting || any_eliciting)
        {
            out.rtt_sample = Some(now.saturating_duration_since(time));
        }
        if out.newly {
            self.pto_count = 0;
        }
        // Only a stream frame acknowledged shows the stream delivers: in a
        // hybrid session ACKs of datagram frames keep coming from a stream
        // that is a black hole.
        if stream_progress && self.stream_outstanding > 0 {
            self.stream_silent_since = Some(now);
        }
        self.trim();
        out
    }

    fn note_largest(&mut self, path: u32, seq: u64) {
        match self.largest_acked.iter_mut().find(|(p, _)| *p == path) {
            Some((_, l)) => *l = (*l).max(seq),
            None => self.largest_acked.push((path, seq)),
        }
    }

    fn largest_on(&self, path: u32) -> Option<u64> {
        self.largest_acked.iter().find(|(p, _)| *p == path).map(|(_, l)| *l)
    }

    /// Declares lost every datagram frame that a later acknowledged frame
    /// on its path outran by [`PACKET_THRESHOLD`] or by the loss delay.
    /// Returns whether the lost frames show persistent congestion.
    pub(crate) fn detect_lost(
        &mut self,
        now: Instant,
        rtt: &RttEstimator,
        max_ack_delay: Duration,
        mut lost: impl FnMut(SentFrame),
    ) -> bool {
        self.loss_time = None;
        let delay = rtt.loss_delay() + rtt.get() * self.reorder_quarters / 4;
        let mut span: Option<(Instant, Instant)> = None;
        for i in 0..self.sent.len() {
            let Some(f) = self.sent[i].1 else { continue };
            if !f.datagram {
                continue;
            }
            let Some(largest) = self.largest_on(f.path).filter(|l| f.seq < *l) else { continue };
            let late = f.time.saturating_add(delay);
            if largest >= f.seq + self.packet_threshold || late <= now {
                if let Some(f) = self.resolve(i) {
                    if self.lost.len() >= LOST_MEMORY {
                        self.lost.pop_front();
                    }
                    self.lost.push_back((f.seq, largest - f.seq));
                    if f.congestion_signal() {
                        span = Some(span.map_or((f.time, f.time), |(a, b)| (a.min(f.time), b.max(f.time))));
                    }
                    lost(f);
                }
            } else {
                self.loss_time = Some(self.loss_time.map_or(late, |t| t.min(late)));
            }
        }
        self.trim();
        let persistent = rtt.pto(max_ack_delay) * 3;
        span.is_some_and(|(a, b)| rtt.has_sample() && b.saturating_duration_since(a) >= persistent)
    }

    /// Declares lost every frame sent on `path` (it failed).
    pub(crate) fn lose_path(&mut self, path: u32, mut lost: impl FnMut(SentFrame)) {
        for i in 0..self.sent.len() {
            if self.sent[i].1.is_some_and(|f| f.path == path)
                && let Some(f) = self.resolve(i)
            {
                lost(f);
            }
        }
        self.largest_acked.retain(|(p, _)| *p != path);
        self.trim();
    }

    /// Whether a tracked frame was sent on `path`.
    pub(crate) fn has_frames_on(&self, path: u32) -> bool {
        self.sent.iter().any(|(_, f)| f.is_some_and(|f| f.path == path))
    }

    /// When time-threshold loss detection must run next.
    pub(crate) fn loss_time(&self) -> Option<Instant> {
        self.loss_time
    }

    /// When the probe timeout fires: ack-eliciting datagram frames are in
    /// flight and nothing was acknowledged for a backed-off PTO.
    pub(crate) fn pto_deadline(&self, rtt: &RttEstimator, max_ack_delay: Duration) -> Option<Instant> {
        if self.eliciting_in_flight == 0 {
            return None;
        }
        let backoff = 1u32 << self.pto_count.min(10);
        self.last_eliciting_sent.map(|t| t.saturating_add(rtt.pto(max_ack_delay) * backoff))
    }

    /// When a stream path counts as stalled: ack-eliciting frames are
    /// outstanding on one and nothing was acknowledged for
    /// [`STALL_PTOS`] probe timeouts (at least [`MIN_STALL`]). Frames on a
    /// stream are never lost, but a stream can stop delivering: a black
    /// hole, or a corrupted length its receiver waits on.
    pub(crate) fn stall_deadline(&self, rtt: &RttEstimator, max_ack_delay: Duration) -> Option<Instant> {
        let wait = (rtt.pto(max_ack_delay) * STALL_PTOS).max(MIN_STALL);
        self.stream_silent_since.map(|t| t.saturating_add(wait))
    }

    /// The datagram path of the oldest frame in flight, once
    /// [`DATAGRAM_STALL_PROBES`] probe timeouts in a row went unanswered
    /// and that frame was sent at least [`MIN_STALL`] ago. The probe count
    /// starts again.
    pub(crate) fn stalled_datagram_path(&mut self, now: Instant) -> Option<u32> {
        if self.pto_count < DATAGRAM_STALL_PROBES {
            return None;
        }
        let oldest = self.sent.iter().find_map(|(_, f)| f.filter(|f| f.in_flight()))?;
        if now.saturating_duration_since(oldest.time) < MIN_STALL {
            return None;
        }
        self.pto_count = 0;
        Some(oldest.path)
    }

    /// The stream path of the oldest outstanding frame, once stalled; the
    /// silence is counted afresh for whatever stays outstanding elsewhere.
    pub(crate) fn stalled_path(&mut self, now: Instant) -> Option<u32> {
        let path = self.sent.iter().find_map(|(_, f)| f.filter(|f| f.eliciting && !f.datagram).map(|f| f.path));
        self.stream_silent_since = Some(now);
        path
    }

    /// Forgets everything (the session ended).
    pub(crate) fn clear(&mut self) {
        *self = Recovery::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reliability::ranges::RangeSet;
    use alloc::vec;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    fn frame(seq: u64, t: u64, datagram: bool) -> SentFrame {
        SentFrame {
            seq,
            path: 0,
            time: ms(t),
            size: 100,
            eliciting: true,
            datagram,
            large: false,
            content: Content::Data { id: seq, start: 0, end: 1 },
        }
    }

    fn ack(seqs: &[u64]) -> Vec<u8> {
        let mut s = RangeSet::new();
        for &q in seqs {
            s.insert(q..q + 1, 64);
        }
        let mut out = vec![0u8; AckFrame::encoded_len(&s)];
        AckFrame::encode(&s, Duration::ZERO, &mut out).unwrap();
        out
    }

    #[test]
    fn acks_losses_and_rtt() {
        let mut r = Recovery::new();
        for s in 0..6 {
            r.on_sent(frame(s, s, true));
        }
        assert_eq!(r.in_flight(), 600);
        let bytes = ack(&[4]);
        let mut got = vec![];
        let out = r.on_ack(&AckFrame::parse(&bytes).unwrap(), ms(20), |f| got.push(f.seq));
        assert_eq!(got, vec![4]);
        assert_eq!(out.rtt_sample, Some(Duration::from_millis(16)));
        let rtt = RttEstimator::new(Duration::from_millis(16));
        let mut lost = vec![];
        r.detect_lost(ms(20), &rtt, Duration::ZERO, |f| lost.push(f.seq));
        // 0 and 1: three later frames acknowledged; 2: sent 9/8 RTT (18 ms) ago.
        assert_eq!(lost, vec![0, 1, 2]);
        assert_eq!(r.loss_time(), Some(ms(3) + Duration::from_millis(18)));
        lost.clear();
        r.detect_lost(ms(21), &rtt, Duration::ZERO, |f| lost.push(f.seq));
        assert_eq!(lost, vec![3]);
        assert_eq!(r.in_flight(), 100, "only 5 remains");
        assert!(r.pto_deadline(&rtt, Duration::ZERO).is_some());
        let bytes = ack(&[5]);
        r.on_ack(&AckFrame::parse(&bytes).unwrap(), ms(41), |_| {});
        assert_eq!((r.in_flight(), r.live()), (0, 0));
        assert!(r.pto_deadline(&rtt, Duration::ZERO).is_none());
    }

    #[test]
    fn reordering_taken_for_loss_widens_the_thresholds() {
        let mut r = Recovery::new();
        let rtt = RttEstimator::new(Duration::from_millis(100));
        for s in 0..10 {
            r.on_sent(frame(s, s, true));
        }
        // 9 arrives first: 0..=6 are outrun by three or more.
        let bytes = ack(&[9]);
        r.on_ack(&AckFrame::parse(&bytes).unwrap(), ms(20), |_| {});
        let mut lost = vec![];
        r.detect_lost(ms(20), &rtt, Duration::ZERO, |f| lost.push(f.seq));
        assert_eq!(lost, (0..7).collect::<Vec<_>>());
        // ... but 0 and 1 had arrived: they were reordered by 9 and 8.
        let bytes = ack(&[0, 1, 7, 8, 9]);
        let out = r.on_ack(&AckFrame::parse(&bytes).unwrap(), ms(30), |_| {});
        assert_eq!(out.spurious, 2);
        assert_eq!(r.packet_threshold(), 10);
        let again = r.on_ack(&AckFrame::parse(&bytes).unwrap(), ms(31), |_| {});
        assert_eq!(again.spurious, 0, "each spurious loss counts once");
        // Now a frame outrun by 9 is not lost by count, only by time,
        // whose threshold grew by two quarters of the RTT (9/8 + 1/2).
        for s in 10..20 {
            r.on_sent(frame(s, 100, true));
        }
        let bytes = ack(&[19]);
        r.on_ack(&AckFrame::parse(&bytes).unwrap(), ms(101), |_| {});
        lost.clear();
        r.detect_lost(ms(101), &rtt, Duration::ZERO, |f| lost.push(f.seq));
        assert!(lost.is_empty(), "{lost:?}");
        assert_eq!(r.loss_time(), Some(ms(100) + Duration::from_micros(162_500)));
    }

    #[test]
    fn stream_frames_are_lost_only_with_their_path() {
        let mut r = Recovery::new();
        for s in 0..5 {
            r.on_sent(frame(s, s, false));
        }
        let bytes = ack(&[4]);
        r.on_ack(&AckFrame::parse(&bytes).unwrap(), ms(100), |_| {});
        let rtt = RttEstimator::new(Duration::from_millis(1));
        let mut lost = vec![];
        r.detect_lost(ms(1000), &rtt, Duration::ZERO, |f| lost.push(f.seq));
        assert!(lost.is_empty());
        r.lose_path(0, |f| lost.push(f.seq));
        assert_eq!(lost, vec![0, 1, 2, 3]);
        assert_eq!(r.live(), 0);
    }

    #[test]
    fn acks_with_holes_and_repeats() {
        let mut r = Recovery::new();
        for s in [0, 2, 3, 7, 9, 10] {
            r.on_sent(frame(s, 0, true));
        }
        let bytes = ack(&[3, 9]);
        let mut got = vec![];
        r.on_ack(&AckFrame::parse(&bytes).unwrap(), ms(1), |f| got.push(f.seq));
        assert_eq!(got, vec![9, 3]);
        let bytes = ack(&[0, 2, 3, 7, 9, 10]);
        got.clear();
        r.on_ack(&AckFrame::parse(&bytes).unwrap(), ms(1), |f| got.push(f.seq));
        got.sort();
        assert_eq!(got, vec![0, 2, 7, 10], "each frame is acknowledged once");
        assert_eq!(r.live(), 0);
    }
}
