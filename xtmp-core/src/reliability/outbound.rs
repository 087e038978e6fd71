//! The sender's side of reliable delivery: messages waiting for their
//! acknowledgement, their order numbers and their deadlines.

use alloc::collections::VecDeque;
use core::ops::Range;

use super::delivery::CLASSES;
use super::ranges::RangeSet;
use crate::time::Instant;

/// A reliable message not yet fully acknowledged.
#[derive(Debug)]
pub(crate) struct Pending<M> {
    pub(crate) id: u64,
    pub(crate) class: usize,
    pub(crate) order: u64,
    pub(crate) total: u64,
    /// Credit offset (SPEC.md 4.6): the bytes of every earlier reliable
    /// message of its class.
    pub(crate) credit: u64,
    pub(crate) deadline: Instant,
    /// What is needed to send any part of it again.
    pub(crate) message: M,
    acked: RangeSet,
}

impl<M> Pending<M> {
    /// The parts of `range` not yet acknowledged. An empty range (the
    /// frame of an empty message) is one part while the message is
    /// pending: it has no bytes to be missing, yet its frame must go again.
    pub(crate) fn acked_gaps(&self, range: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let empty = range.is_empty().then(|| range.clone());
        empty.into_iter().chain(self.acked.gaps(range))
    }
}

/// Reliable messages in flight, by message id.
#[derive(Debug)]
pub(crate) struct Outbound<M> {
    pending: VecDeque<(u64, Option<Pending<M>>)>,
    live: usize,
    bytes: u64,
    next_order: [u64; CLASSES],
    next_credit: [u64; CLASSES],
    earliest: Option<Instant>,
}

impl<M> Outbound<M> {
    /// Gives back spare capacity (an idle session stays small).
    pub(crate) fn shrink(&mut self) {
        self.pending.shrink_to_fit();
    }

    pub(crate) fn new() -> Outbound<M> {
        Outbound {
            pending: VecDeque::new(),
            live: 0,
            bytes: 0,
            next_order: [1; CLASSES],
            next_credit: [0; CLASSES],
            earliest: None,
        }
    }

    /// Messages waiting for acknowledgement.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Their bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The order number the next message registered in `class` gets.
    pub(crate) fn next_order(&self, class: usize) -> u64 {
        self.next_order[class]
    }

    /// The credit offset the next message registered in `class` gets.
    pub(crate) fn next_credit(&self, class: usize) -> u64 {
        self.next_credit[class]
    }

    /// Registers message `id` and returns its order number in `class`. Ids
    /// are unique; they usually increase, but an item that waited for its
    /// subscription's credit registers after later messages.
    pub(crate) fn register(&mut self, id: u64, class: usize, total: u64, deadline: Instant, message: M) -> u64 {
        let order = self.next_order[class];
        self.next_order[class] += 1;
        let credit = self.next_credit[class];
        self.next_credit[class] += total + super::flow::MESSAGE_OVERHEAD;
        self.live += 1;
        self.bytes += total;
        self.earliest = Some(self.earliest.map_or(deadline, |e| e.min(deadline)));
        let p = Pending { id, class, order, total, credit, deadline, message, acked: RangeSet::new() };
        if self.pending.back().is_none_or(|e| e.0 < id) {
            self.pending.push_back((id, Some(p)));
        } else {
            let i = self.pending.partition_point(|e| e.0 < id);
            self.pending.insert(i, (id, Some(p)));
        }
        order
    }

    fn index(&self, id: u64) -> Option<usize> {
        let i = self.pending.partition_point(|e| e.0 < id);
        (self.pending.get(i)?.1.is_some() && self.pending[i].0 == id).then_some(i)
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Pending<M>> {
        self.pending[self.index(id)?].1.as_ref()
    }

    fn take(&mut self, i: usize) -> Option<Pending<M>> {
        let p = self.pending.get_mut(i)?.1.take()?;
        self.live -= 1;
        self.bytes -= p.total;
        while self.pending.front().is_some_and(|e| e.1.is_none()) {
            self.pending.pop_front();
        }
        if self.earliest == Some(p.deadline) {
            self.earliest = self.pending.iter().filter_map(|e| e.1.as_ref()).map(|p| p.deadline).min();
        }
        Some(p)
    }

    /// Bytes `range` of message `id` were acknowledged. Returns the message
    /// once every byte is.
    pub(crate) fn on_acked(&mut self, id: u64, range: Range<u64>) -> Option<Pending<M>> {
        let i = self.index(id)?;
        let p = self.pending[i].1.as_mut()?;
        if range.start == 0 && range.end >= p.total {
            // The common case, a message in one frame: no range to record.
            return self.take(i);
        }
        p.acked.insert(range, usize::MAX);
        if p.acked.covers(0..p.total.max(1)) || p.total == 0 {
            return self.take(i);
        }
        None
    }

    /// The lowest order number of `class` the receiver may still get (the
    /// oldest pending message's, or the next to be assigned), and its
    /// credit offset.
    pub(crate) fn floor(&self, class: usize) -> (u64, u64) {
        self.pending
            .iter()
            .filter_map(|e| e.1.as_ref())
            .filter(|p| p.class == class)
            .min_by_key(|p| p.order)
            .map_or((self.next_order[class], self.next_credit[class]), |p| (p.order, p.credit))
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.earliest
    }

    /// Removes the first message whose deadline has passed.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Pending<M>> {
        if self.earliest.is_none_or(|e| e > now) {
            return None;
        }
        let i = self.pending.iter().position(|e| e.1.as_ref().is_some_and(|p| p.deadline <= now))?;
        self.take(i)
    }

    /// Removes every message (the session ended), oldest first.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Pending<M>> + '_ {
        self.live = 0;
        self.bytes = 0;
        self.earliest = None;
        self.pending.drain(..).filter_map(|e| e.1)
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn t(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn acknowledgement_deadlines_and_floor() {
        let mut o: Outbound<()> = Outbound::new();
        assert_eq!(o.register(1, 0, 100, t(50), ()), 1);
        assert_eq!(o.register(2, 0, 10, t(30), ()), 2);
        assert_eq!(o.register(3, 1, 10, t(70), ()), 1);
        assert_eq!((o.len(), o.bytes(), o.next_deadline()), (3, 120, Some(t(30))));
        assert!(o.on_acked(1, 0..60).is_none());
        assert_eq!(o.get(1).unwrap().acked_gaps(40..100).collect::<Vec<_>>(), [(60..100)]);
        assert_eq!(o.floor(0), (1, 0));
        assert_eq!(o.on_acked(1, 60..100).map(|p| p.id), Some(1));
        assert_eq!(o.floor(0), (2, 132), "after the 100 bytes of message 1 and its overhead");
        assert!(o.get(1).is_none(), "gone once acknowledged");
        assert!(o.pop_expired(t(29)).is_none());
        assert_eq!(o.pop_expired(t(30)).map(|p| p.id), Some(2));
        assert_eq!(o.floor(0), (3, 174), "nothing pending: the next order and credit");
        assert_eq!(o.floor(1), (1, 0));
        assert_eq!(o.next_credit(1), 42);
        assert_eq!(o.next_deadline(), Some(t(70)));
        assert_eq!(o.drain().map(|p| p.id).collect::<Vec<_>>(), [3]);
        assert_eq!((o.len(), o.bytes()), (0, 0));
    }

    #[test]
    fn a_message_registered_late_keeps_id_order_and_the_floor_follows_order() {
        let mut o: Outbound<()> = Outbound::new();
        assert_eq!(o.register(5, 0, 10, t(50), ()), 1);
        assert_eq!(o.register(3, 0, 10, t(50), ()), 2, "id 3 waited: it registers second");
        assert_eq!(o.get(3).map(|p| p.order), Some(2));
        assert_eq!(o.floor(0), (1, 0), "the floor is the lowest order pending, not the lowest id");
        assert!(o.on_acked(5, 0..10).is_some());
        assert_eq!(o.floor(0), (2, 42));
        assert_eq!(o.on_acked(3, 0..10).map(|p| p.order), Some(2));
        assert_eq!(o.len(), 0);
    }
}
