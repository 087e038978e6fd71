//! Flow control (SPEC.md section 4.6): how many bytes of reliable messages
//! a receiver lets its peer send ahead of what its application has read.
//!
//! Credit is counted per priority class in **credit offsets**: the sum of
//! the credit sizes (body length as sent, so compressed, plus
//! [`MESSAGE_OVERHEAD`]) of every reliable message of the class before a
//! given one. The receiver advertises a limit per class
//! (its window at first, then `MaxData`); the sender starts a message only
//! while the message's credit offset is below that limit, so a message may
//! overshoot the limit by at most its own length.

use super::delivery::CLASSES;
#[cfg(test)]
use alloc::vec::Vec;

/// What each message costs in credit beyond its body, so a flood of empty
/// messages is bounded like any other (SPEC.md 4.6).
pub(crate) const MESSAGE_OVERHEAD: u64 = 32;

/// The credit a message of `len` body bytes (as sent) takes.
pub(crate) fn credit_size(len: usize) -> u64 {
    len as u64 + MESSAGE_OVERHEAD
}

/// The sender's view: the peer's limit per class.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendCredit {
    limit: [u64; CLASSES],
}

impl SendCredit {
    /// `window`: the peer's announced receive window (Parameters id 4).
    pub(crate) fn new(window: u32) -> SendCredit {
        SendCredit { limit: [u64::from(window); CLASSES] }
    }

    /// Whether a message of `class` at credit offset `start` may go.
    /// Repeats of a message always may: the limit never shrinks.
    pub(crate) fn allows(&self, class: usize, start: u64) -> bool {
        start < self.limit[class]
    }

    /// A `MaxData` arrived. Returns whether the limit grew.
    pub(crate) fn on_max_data(&mut self, class: usize, limit: u64) -> bool {
        let grew = limit > self.limit[class];
        self.limit[class] = self.limit[class].max(limit);
        grew
    }
}

/// Why the peer broke flow control.
pub(crate) const OVERRUN: &str = "reliable messages beyond the advertised flow-control window";

/// The receiver's view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecvCredit {
    window: u64,
    /// Credit offset after the last reliable message delivered (or skipped
    /// by a Forward).
    delivered: [u64; CLASSES],
    /// Credit offset up to which the application has read.
    consumed: [u64; CLASSES],
    /// The last limit sent to the peer (the window, before any MaxData).
    advertised: [u64; CLASSES],
}

impl RecvCredit {
    /// `window`: this side's announced receive window.
    pub(crate) fn new(window: u32) -> RecvCredit {
        let w = u64::from(window);
        RecvCredit { window: w, delivered: [0; CLASSES], consumed: [0; CLASSES], advertised: [w; CLASSES] }
    }

    /// A reliable message of `len` body bytes (as sent) was delivered to
    /// the application's queue. Returns its credit end, or an error if the
    /// peer could not have sent it under any limit this side advertised:
    /// a message starts below `consumed + window`, so it ends at most the
    /// credit size of a `max_message` beyond that.
    pub(crate) fn on_delivered(&mut self, class: usize, len: usize, max_message: u32) -> Result<u64, &'static str> {
        let end = self.delivered[class].saturating_add(credit_size(len));
        self.delivered[class] = end;
        let bound = self.consumed[class].saturating_add(self.window).saturating_add(credit_size(max_message as usize));
        if end > bound { Err(OVERRUN) } else { Ok(end) }
    }

    /// A Forward says the messages of `class` below credit offset `credit`
    /// will never come. Returns whether the offset moved.
    pub(crate) fn skip_to(&mut self, class: usize, credit: u64) -> bool {
        let moved = credit > self.delivered[class];
        self.delivered[class] = self.delivered[class].max(credit);
        moved
    }

    /// The application read up to credit offset `end` of `class`. Returns
    /// whether a `MaxData` is due: the limit would grow by half a window.
    pub(crate) fn on_read(&mut self, class: usize, end: u64) -> bool {
        self.consumed[class] = self.consumed[class].max(end);
        self.limit(class).saturating_sub(self.advertised[class]) >= self.window.div_ceil(2)
    }

    /// The limit to advertise now for `class`; records it as advertised.
    pub(crate) fn advertise(&mut self, class: usize) -> u64 {
        let limit = self.limit(class);
        self.advertised[class] = self.advertised[class].max(limit);
        self.advertised[class]
    }

    /// The window this side announced.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    fn limit(&self, class: usize) -> u64 {
        self.consumed[class].saturating_add(self.window)
    }

    /// Bytes of `class` delivered but not read yet.
    pub(crate) fn unread(&self, class: usize) -> u64 {
        self.delivered[class].saturating_sub(self.consumed[class])
    }
}

/// A subscription's flow control, the publisher's view (SPEC.md 4.9):
/// the credit its reliable items started, less any given up on, against
/// the subscriber's limit for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ItemSendCredit {
    /// `u64::MAX` when the subscriber announced no subscription window.
    limit: u64,
    used: u64,
}

impl ItemSendCredit {
    /// `window`: the subscriber's subscription window (Parameters id 5).
    pub(crate) fn new(window: u32) -> ItemSendCredit {
        let limit = if window == 0 { u64::MAX } else { u64::from(window) };
        ItemSendCredit { limit, used: 0 }
    }

    /// Whether another item may start.
    pub(crate) fn allows(&self) -> bool {
        self.used < self.limit
    }

    /// Whether the subscriber announced a window: best-effort items then
    /// take credit too.
    pub(crate) fn windowed(&self) -> bool {
        self.limit != u64::MAX
    }

    /// An item of `credit` started.
    pub(crate) fn on_started(&mut self, credit: u64) {
        self.used = self.used.saturating_add(credit);
    }

    /// An item of `credit` that started was given up on (a reliable one),
    /// or lost or superseded (a best-effort one).
    pub(crate) fn on_abandoned(&mut self, credit: u64) {
        self.used = self.used.saturating_sub(credit);
    }

    /// A SubscriptionCredit arrived. Returns whether the limit grew.
    pub(crate) fn on_limit(&mut self, limit: u64) -> bool {
        let grew = limit > self.limit;
        self.limit = self.limit.max(limit);
        grew
    }
}

/// A subscription's flow control, the subscriber's view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ItemRecvCredit {
    /// 0: none announced.
    window: u64,
    delivered: u64,
    read: u64,
    advertised: u64,
}

impl ItemRecvCredit {
    pub(crate) fn new(window: u32) -> ItemRecvCredit {
        let w = u64::from(window);
        ItemRecvCredit { window: w, delivered: 0, read: 0, advertised: w }
    }

    /// Whether a frame of an item may be taken:
    /// no more than a window and one largest message (`max_message` body
    /// bytes) of this subscription's items wait unread. Frames beyond are
    /// dropped (a reliable item's unacknowledged, so the publisher repeats
    /// it; a best-effort item's acknowledged and not counted, so the
    /// publisher's credit shrinks by it), so a publisher that overruns the
    /// limit holds back only itself.
    pub(crate) fn admits(&self, max_message: u32) -> bool {
        self.window == 0 || self.unread() <= self.window + credit_size(max_message as usize)
    }

    /// Whether this side announced a window: best-effort items then count
    /// against it too.
    pub(crate) fn windowed(&self) -> bool {
        self.window != 0
    }

    /// An item of `credit` was delivered.
    pub(crate) fn on_delivered(&mut self, credit: u64) {
        self.delivered = self.delivered.saturating_add(credit);
    }

    /// The application read an item of `credit`. Returns whether a
    /// SubscriptionCredit is due: the limit would grow by half a window.
    pub(crate) fn on_read(&mut self, credit: u64) -> bool {
        self.read = self.read.saturating_add(credit).min(self.delivered);
        self.window != 0 && (self.read + self.window).saturating_sub(self.advertised) >= self.window.div_ceil(2)
    }

    /// The limit to advertise now; records it as advertised.
    pub(crate) fn advertise(&mut self) -> u64 {
        self.advertised = self.advertised.max(self.read + self.window);
        self.advertised
    }

    /// Credit delivered and not read.
    pub(crate) fn unread(&self) -> u64 {
        self.delivered - self.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_starts_messages_below_the_limit_only() {
        let mut s = SendCredit::new(1000);
        assert!(s.allows(0, 0) && s.allows(0, 999));
        assert!(!s.allows(0, 1000), "at the limit: blocked");
        assert!(!s.on_max_data(0, 800), "a smaller limit never shrinks it");
        assert!(!s.allows(0, 1000));
        assert!(s.on_max_data(0, 1500));
        assert!(s.allows(0, 1499) && !s.allows(0, 1500));
        assert!(!s.allows(1, 1000), "classes are independent");
    }

    #[test]
    fn a_receiver_advertises_as_the_application_reads() {
        let mut r = RecvCredit::new(1000);
        assert_eq!(r.on_delivered(0, 368, 100), Ok(400), "368 bytes and the 32 of overhead");
        assert_eq!(r.on_delivered(0, 368, 100), Ok(800));
        assert_eq!(r.unread(0), 800);
        assert!(!r.on_read(0, 400), "400 more: less than half a window");
        assert!(r.on_read(0, 800), "800 more: due");
        assert_eq!(r.advertise(0), 1800);
        assert!(!r.on_read(0, 800), "advertised: nothing due until the application reads more");
        assert_eq!(r.unread(0), 0);
    }

    #[test]
    fn empty_messages_cost_credit() {
        let mut r = RecvCredit::new(1000);
        let ends: Vec<_> = (0..3).map(|_| r.on_delivered(0, 0, 100).unwrap()).collect();
        assert_eq!(ends, [32, 64, 96]);
        let mut r = RecvCredit::new(1000);
        let accepted = (0..100).take_while(|_| r.on_delivered(0, 0, 0).is_ok()).count();
        assert_eq!(accepted, 32, "1,000 + 32 bytes of credit hold 32 empty messages, not an unbounded number");
    }

    #[test]
    fn a_receiver_catches_a_peer_that_ignores_its_limit() {
        // Largest message 468 bytes: 500 of credit.
        let mut r = RecvCredit::new(1000);
        // A message started at offset 999 (< 1000) may end at 999 + 500.
        assert_eq!(r.on_delivered(0, 967, 468), Ok(999));
        assert_eq!(r.on_delivered(0, 468, 468), Ok(1499), "started below the limit");
        assert_eq!(r.on_delivered(0, 0, 468), Err(OVERRUN), "1,531 is beyond 1,000 + 500");
        let mut r = RecvCredit::new(1000);
        assert!(r.on_delivered(1, 1368, 468).is_ok());
        r.on_read(1, 1400);
        assert_eq!(r.on_delivered(1, 1468, 468), Ok(2900), "reading moves the bound: 1,400 + 1,000 + 500");
        assert_eq!(r.on_delivered(1, 0, 468), Err(OVERRUN));
    }

    #[test]
    fn a_forward_skips_credit_once() {
        let mut r = RecvCredit::new(1000);
        assert!(r.skip_to(2, 300));
        assert!(!r.skip_to(2, 200), "never backwards");
        assert_eq!(r.on_delivered(2, 10, 100), Ok(342));
        assert_eq!(r.unread(2), 342);
    }

    #[test]
    fn a_publisher_starts_items_below_the_subscription_limit() {
        let mut s = ItemSendCredit::new(1000);
        assert!(s.allows());
        s.on_started(credit_size(900));
        assert!(s.allows(), "932 < 1,000");
        s.on_started(credit_size(500));
        assert!(!s.allows(), "1,464: blocked");
        assert!(!s.on_limit(900), "never shrinks");
        assert!(s.on_limit(1500));
        assert!(s.allows());
        s.on_started(credit_size(100));
        assert!(!s.allows());
        s.on_abandoned(credit_size(100));
        assert!(s.allows(), "an item given up on gives its credit back");
        let s = ItemSendCredit::new(0);
        assert!(s.allows(), "a window of 0: no per-subscription limit");
    }

    #[test]
    fn a_subscriber_advertises_and_holds_back() {
        let mut r = ItemRecvCredit::new(1000);
        assert!(r.admits(500));
        r.on_delivered(credit_size(968));
        r.on_delivered(credit_size(468));
        assert_eq!(r.unread(), 1500);
        assert!(r.admits(500), "within window + largest message: still admitted");
        r.on_delivered(credit_size(100));
        assert!(!r.admits(500), "beyond: held back until the application reads");
        assert!(!r.on_read(400), "less than half a window");
        assert!(r.admits(500));
        assert!(r.on_read(200));
        assert_eq!(r.advertise(), 1600);
        assert_eq!(r.unread(), 1032);
        let mut r = ItemRecvCredit::new(0);
        r.on_delivered(1 << 40);
        assert!(r.admits(0) && !r.on_read(1 << 40), "no window: nothing held back, nothing to advertise");
    }
}
