//! The receiver's side of delivery (SPEC.md sections 4.2 and 4.4):
//! reassembly of fragmented messages, exactly-once delivery of reliable
//! messages in send order within their priority class, and the memory
//! bound on everything held.
//!
//! Generic over the delivered item `T` (the session's message, body empty
//! until complete), so the rules are testable on their own.

use alloc::collections::BTreeMap;
use core::time::Duration;

use bytes::Bytes;

use super::reassembly::{FragmentError, Reassembly, Stored};
use crate::time::Instant;

/// Priority classes: normal, high, emergency.
pub(crate) const CLASSES: usize = 3;

/// An item that receives its body once complete.
pub(crate) trait WithBody {
    fn with_body(self, body: Bytes) -> Self;
}

/// How much a receiver holds, and how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The largest message accepted (announced in Parameters).
    pub(crate) max_message: u32,
    /// Bytes held for reassembly and reordering. The next message of each
    /// class is admitted even beyond it, so progress is always possible.
    pub(crate) max_held: usize,
}

/// What became of a frame's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Stored or delivered: acknowledge it.
    New,
    /// Already held or delivered: acknowledge it, deliver nothing.
    Duplicate,
}

/// Why a frame's content was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The peer broke a rule: close the session.
    Violation(&'static str),
    /// Out of memory budget: drop the frame unacknowledged; the sender repeats it.
    Busy,
}

struct Partial<T> {
    template: T,
    class: usize,
    order: u64,
    asm: Reassembly,
    last_progress: Instant,
}

struct Order<T> {
    /// The order number delivered next.
    next: u64,
    /// Complete messages waiting for earlier ones, with their size.
    waiting: BTreeMap<u64, (T, usize)>,
}

/// Everything a receiver holds between frames and the application.
pub(crate) struct Inbound<T> {
    classes: [Order<T>; CLASSES],
    partial: BTreeMap<u64, Partial<T>>,
    held: usize,
}

impl<T> core::fmt::Debug for Inbound<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Inbound").field("partial", &self.partial.len()).field("held", &self.held).finish()
    }
}

impl<T: PartialEq + WithBody> Inbound<T> {
    pub(crate) fn new() -> Inbound<T> {
        let order = || Order { next: 1, waiting: BTreeMap::new() };
        Inbound { classes: [order(), order(), order()], partial: BTreeMap::new(), held: 0 }
    }

    /// Bytes held for reassembly and reordering.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Messages being reassembled.
    #[cfg(test)]
    pub(crate) fn partial_count(&self) -> usize {
        self.partial.len()
    }

    fn is_old(&self, class: usize, order: u64) -> bool {
        order != 0 && (order < self.classes[class].next || self.classes[class].waiting.contains_key(&order))
    }

    fn admits(&self, class: usize, order: u64, bytes: usize, limits: &Limits) -> bool {
        self.held + bytes <= limits.max_held || (order != 0 && order == self.classes[class].next)
    }

    /// A whole message (not fragmented). `order` 0: unordered.
    pub(crate) fn on_message(
        &mut self,
        class: usize,
        order: u64,
        item: T,
        size: usize,
        limits: &Limits,
        deliver: impl FnMut(T),
    ) -> Result<Accepted, Refused> {
        if self.is_old(class, order) {
            return Ok(Accepted::Duplicate);
        }
        if order != self.classes[class].next && order != 0 && self.held + size > limits.max_held {
            return Err(Refused::Busy);
        }
        self.complete(class, order, item, size, deliver);
        Ok(Accepted::New)
    }

    /// A message is whole (and admitted): deliver it or let it wait its turn.
    fn complete(&mut self, class: usize, order: u64, item: T, size: usize, mut deliver: impl FnMut(T)) {
        let c = &mut self.classes[class];
        if order == 0 || order == c.next {
            deliver(item);
            if order != 0 {
                c.next += 1;
                self.drain(class, deliver);
            }
            return;
        }
        self.held += size;
        self.classes[class].waiting.insert(order, (item, size));
    }

    /// Delivers the waiting messages that are next in line.
    fn drain(&mut self, class: usize, mut deliver: impl FnMut(T)) {
        let c = &mut self.classes[class];
        while let Some(e) = c.waiting.first_entry() {
            if *e.key() > c.next {
                break;
            }
            let order = *e.key();
            let (item, size) = e.remove();
            self.held -= size;
            if order == c.next {
                deliver(item);
                c.next += 1;
            }
        }
    }

    /// A fragment of message `id`: `template` is the message with an empty
    /// body, identical in every fragment.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_fragment(
        &mut self,
        (class, order, id): (usize, u64, u64),
        template: T,
        (offset, total): (u32, u32),
        data: &[u8],
        now: Instant,
        limits: &Limits,
        deliver: impl FnMut(T),
    ) -> Result<Accepted, Refused> {
        if total > limits.max_message {
            return Err(Refused::Violation("fragment declares a message beyond the announced maximum"));
        }
        if self.is_old(class, order) {
            return Ok(Accepted::Duplicate);
        }
        if !self.admits(class, order, data.len(), limits) {
            return Err(Refused::Busy);
        }
        let p = match self.partial.get_mut(&id) {
            Some(p) => {
                if p.template != template || p.asm.total() != total || p.class != class || p.order != order {
                    return Err(Refused::Violation("fragments of one message disagree"));
                }
                p
            }
            None => self.partial.entry(id).or_insert(Partial {
                template,
                class,
                order,
                asm: Reassembly::new(total),
                last_progress: now,
            }),
        };
        let before = p.asm.held();
        let stored = p.asm.insert(offset, data);
        let after = p.asm.held();
        self.held = self.held - before + after;
        match stored {
            Err(FragmentError::OutOfBounds) => {
                Err(Refused::Violation("fragment reaches past its message's length, or is empty"))
            }
            Err(FragmentError::TooManyRuns) => Err(Refused::Busy),
            Ok(Stored::Duplicate) => Ok(Accepted::Duplicate),
            Ok(Stored::Progress) => {
                p.last_progress = now;
                Ok(Accepted::New)
            }
            Ok(Stored::Complete(body)) => {
                // Admitted fragment by fragment already: it may wait its turn.
                let Some(p) = self.partial.remove(&id) else { return Ok(Accepted::New) };
                let size = body.len();
                self.complete(class, order, p.template.with_body(body), size, deliver);
                Ok(Accepted::New)
            }
        }
    }

    /// The sender will never send again the reliable messages of `class`
    /// below `floor` that are missing: deliver what waits, skip the rest.
    #[cfg(any(test, feature = "__fuzzing"))]
    pub(crate) fn on_forward(&mut self, class: usize, floor: u64, mut deliver: impl FnMut(T)) {
        self.forward_release(class, floor, &mut deliver);
        self.forward_advance(class, floor, deliver);
    }

    /// A Forward's first half: delivers, in order, the complete messages
    /// of `class` waiting below `floor`. Returns whether the Forward moves
    /// anything (its floor is above the next order number).
    pub(crate) fn forward_release(&mut self, class: usize, floor: u64, mut deliver: impl FnMut(T)) -> bool {
        let c = &mut self.classes[class];
        if floor <= c.next {
            return false;
        }
        while let Some(e) = c.waiting.first_entry() {
            if *e.key() >= floor {
                break;
            }
            let (item, size) = e.remove();
            self.held -= size;
            deliver(item);
        }
        true
    }

    /// A Forward's second half: skips the missing messages below `floor`,
    /// drops partial ones, and delivers what then is next in line.
    pub(crate) fn forward_advance(&mut self, class: usize, floor: u64, deliver: impl FnMut(T)) {
        let c = &mut self.classes[class];
        if floor <= c.next {
            return;
        }
        c.next = floor;
        let mut freed = 0;
        self.partial.retain(|_, p| {
            let skip = p.class == class && p.order != 0 && p.order < floor;
            if skip {
                freed += p.asm.held();
            }
            !skip
        });
        self.held -= freed;
        self.drain(class, deliver);
    }

    /// The session ends: every complete message still waiting for an
    /// earlier one is delivered, in order within its class (the earlier
    /// ones will never come; their senders learn that they failed), and
    /// partial messages are dropped. What was acknowledged is never lost.
    pub(crate) fn release(&mut self, mut deliver: impl FnMut(T)) {
        for c in &mut self.classes {
            while let Some((_, (item, _))) = c.waiting.pop_first() {
                deliver(item);
            }
        }
        self.partial.clear();
        self.held = 0;
    }

    /// Drops unordered messages that made no progress for `timeout`.
    /// Returns how many.
    pub(crate) fn expire(&mut self, now: Instant, timeout: Duration) -> usize {
        let mut freed = 0;
        let mut count = 0;
        self.partial.retain(|_, p| {
            let stale = p.order == 0 && p.last_progress.saturating_add(timeout) <= now;
            if stale {
                freed += p.asm.held();
                count += 1;
            }
            !stale
        });
        self.held -= freed;
        count
    }

    /// When the oldest unordered partial message expires.
    pub(crate) fn next_expiry(&self, timeout: Duration) -> Option<Instant> {
        self.partial.values().filter(|p| p.order == 0).map(|p| p.last_progress.saturating_add(timeout)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Item(u64, Bytes);

    impl WithBody for Item {
        fn with_body(self, body: Bytes) -> Self {
            Item(self.0, body)
        }
    }

    const LIMITS: Limits = Limits { max_message: 1 << 20, max_held: 10_000 };
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn t(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    #[test]
    fn reliable_messages_come_out_in_order_once() {
        let mut inb = Inbound::new();
        let mut out = vec![];
        for order in [2u64, 3, 1, 3, 1, 5, 4] {
            let r = inb.on_message(0, order, Item(order, Bytes::new()), 10, &LIMITS, |i: Item| out.push(i.0));
            assert!(r.is_ok());
        }
        assert_eq!(out, vec![1, 2, 3, 4, 5]);
        assert_eq!(inb.held(), 0);
        // Classes are independent; unordered messages go straight out.
        inb.on_message(1, 1, Item(100, Bytes::new()), 1, &LIMITS, |i: Item| out.push(i.0)).unwrap();
        inb.on_message(0, 0, Item(200, Bytes::new()), 1, &LIMITS, |i: Item| out.push(i.0)).unwrap();
        assert_eq!(&out[5..], &[100, 200]);
    }

    #[test]
    fn budget_refuses_all_but_the_next_in_line() {
        let mut inb = Inbound::new();
        let mut out = vec![];
        let limits = Limits { max_held: 100, ..LIMITS };
        assert_eq!(
            inb.on_message(0, 2, Item(2, Bytes::new()), 80, &limits, |i: Item| out.push(i.0)),
            Ok(Accepted::New)
        );
        assert_eq!(
            inb.on_message(0, 3, Item(3, Bytes::new()), 80, &limits, |i: Item| out.push(i.0)),
            Err(Refused::Busy)
        );
        let big = vec![0u8; 500];
        let r = inb.on_fragment((0, 1, 77), Item(1, Bytes::new()), (0, 1000), &big, t(0), &limits, |i| out.push(i.0));
        assert_eq!(r, Ok(Accepted::New), "the next in line is admitted beyond the budget");
        let r = inb.on_fragment((0, 1, 77), Item(1, Bytes::new()), (500, 1000), &big, t(0), &limits, |i| out.push(i.0));
        assert_eq!(r, Ok(Accepted::New));
        assert_eq!(out, vec![1, 2]);
        assert_eq!(inb.held(), 0);
    }

    #[test]
    fn fragments_are_checked() {
        let mut inb: Inbound<Item> = Inbound::new();
        let d = [1u8; 10];
        let mut out = vec![];
        let r = inb.on_fragment((0, 0, 1), Item(1, Bytes::new()), (0, 2 << 20), &d, t(0), &LIMITS, |i| out.push(i));
        assert!(matches!(r, Err(Refused::Violation(_))), "beyond the maximum message");
        inb.on_fragment((0, 0, 1), Item(1, Bytes::new()), (0, 100), &d, t(0), &LIMITS, |i| out.push(i)).unwrap();
        let r = inb.on_fragment((0, 0, 1), Item(1, Bytes::new()), (10, 101), &d, t(0), &LIMITS, |i| out.push(i));
        assert!(matches!(r, Err(Refused::Violation(_))), "a different total");
        let r = inb.on_fragment((0, 0, 1), Item(9, Bytes::new()), (10, 100), &d, t(0), &LIMITS, |i| out.push(i));
        assert!(matches!(r, Err(Refused::Violation(_))), "a different template");
        let r = inb.on_fragment((0, 0, 1), Item(1, Bytes::new()), (95, 100), &d, t(0), &LIMITS, |i| out.push(i));
        assert!(matches!(r, Err(Refused::Violation(_))), "past the end");
        let r = inb.on_fragment((0, 0, 1), Item(1, Bytes::new()), (0, 100), &d, t(0), &LIMITS, |i| out.push(i));
        assert_eq!(r, Ok(Accepted::Duplicate));
        assert_eq!(inb.next_expiry(TIMEOUT), Some(t(10)));
        assert_eq!(inb.expire(t(9), TIMEOUT), 0);
        assert_eq!(inb.expire(t(10), TIMEOUT), 1);
        assert_eq!((inb.held(), inb.partial_count()), (0, 0));
        assert!(out.is_empty());
    }

    #[test]
    fn forward_skips_what_the_sender_abandoned() {
        let mut inb = Inbound::new();
        let mut out: Vec<u64> = vec![];
        let d = [0u8; 10];
        inb.on_fragment((0, 2, 20), Item(2, Bytes::new()), (0, 20), &d, t(0), &LIMITS, |i: Item| out.push(i.0))
            .unwrap();
        inb.on_message(0, 3, Item(3, Bytes::new()), 5, &LIMITS, |i: Item| out.push(i.0)).unwrap();
        inb.on_message(0, 5, Item(5, Bytes::new()), 5, &LIMITS, |i: Item| out.push(i.0)).unwrap();
        assert!(out.is_empty(), "1 is missing");
        inb.on_forward(0, 3, |i: Item| out.push(i.0));
        assert_eq!(out, vec![3], "1 and the partial 2 are skipped; 3 goes; 5 waits for 4");
        assert_eq!(inb.partial_count(), 0);
        inb.on_forward(0, 6, |i: Item| out.push(i.0));
        assert_eq!(out, vec![3, 5]);
        assert_eq!(inb.held(), 0);
        let r = inb.on_message(0, 4, Item(4, Bytes::new()), 5, &LIMITS, |i: Item| out.push(i.0));
        assert_eq!(r, Ok(Accepted::Duplicate), "a skipped message arriving late is not delivered");
    }

    /// SPEC.md section 4.7: what was acknowledged is delivered when the
    /// session ends, in order per class; partial messages are dropped.
    #[test]
    fn release_delivers_acknowledged_messages_waiting_for_lost_ones() {
        let mut inb = Inbound::new();
        let mut out: Vec<u64> = vec![];
        let d = [0u8; 10];
        for (class, order, id) in [(0, 3, 3), (0, 2, 2), (2, 5, 15)] {
            inb.on_message(class, order, Item(id, Bytes::new()), 5, &LIMITS, |i: Item| out.push(i.0)).unwrap();
        }
        inb.on_fragment((1, 2, 20), Item(20, Bytes::new()), (0, 20), &d, t(0), &LIMITS, |i: Item| out.push(i.0))
            .unwrap();
        assert!(out.is_empty(), "every class waits for its first message");
        inb.release(|i: Item| out.push(i.0));
        assert_eq!(out, vec![2, 3, 15], "in order within each class; the partial message is dropped");
        assert_eq!((inb.held(), inb.partial_count()), (0, 0));
    }
}
