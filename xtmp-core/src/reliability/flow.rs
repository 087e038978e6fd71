//! Flow control (SPEC.md section 4.6): how many bytes of reliable messages
//! a receiver lets its peer send ahead of what its application has read.
//!
//! Credit is counted per priority class in **credit offsets**: the sum of
//! the body lengths (as sent, so compressed) of every reliable message of
//! the class before a given one. The receiver advertises a limit per class
//! (its window at first, then `MaxData`); the sender starts a message only
//! while the message's credit offset is below that limit, so a message may
//! overshoot the limit by at most its own length.

use super::delivery::CLASSES;

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

    /// A reliable message of `size` bytes (as sent) was delivered to the
    /// application's queue. Returns its credit end, or an error if the
    /// peer could not have sent it under any limit this side advertised:
    /// a message starts below `consumed + window`, so it ends at most
    /// `max_message` beyond that.
    pub(crate) fn on_delivered(&mut self, class: usize, size: usize, max_message: u32) -> Result<u64, &'static str> {
        let end = self.delivered[class].saturating_add(size as u64);
        self.delivered[class] = end;
        let bound = self.consumed[class].saturating_add(self.window).saturating_add(u64::from(max_message));
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
        assert_eq!(r.on_delivered(0, 400, 100), Ok(400));
        assert_eq!(r.on_delivered(0, 400, 100), Ok(800));
        assert_eq!(r.unread(0), 800);
        assert!(!r.on_read(0, 400), "400 more: less than half a window");
        assert!(r.on_read(0, 800), "800 more: due");
        assert_eq!(r.advertise(0), 1800);
        assert!(!r.on_read(0, 800), "advertised: nothing due until the application reads more");
        assert_eq!(r.unread(0), 0);
    }

    #[test]
    fn a_receiver_catches_a_peer_that_ignores_its_limit() {
        let mut r = RecvCredit::new(1000);
        // A message started at offset 999 (< 1000) may end at 999 + max.
        assert_eq!(r.on_delivered(0, 999, 500), Ok(999));
        assert_eq!(r.on_delivered(0, 500, 500), Ok(1499), "started below the limit");
        assert_eq!(r.on_delivered(0, 2, 500), Err(OVERRUN), "1,501 is beyond 1,000 + 500");
        let mut r = RecvCredit::new(1000);
        assert!(r.on_delivered(1, 1400, 500).is_ok());
        r.on_read(1, 1400);
        assert_eq!(r.on_delivered(1, 1500, 500), Ok(2900), "reading moves the bound: 1,400 + 1,000 + 500");
        assert_eq!(r.on_delivered(1, 1, 500), Err(OVERRUN));
    }

    #[test]
    fn a_forward_skips_credit_once() {
        let mut r = RecvCredit::new(1000);
        assert!(r.skip_to(2, 300));
        assert!(!r.skip_to(2, 200), "never backwards");
        assert_eq!(r.on_delivered(2, 10, 100), Ok(310));
        assert_eq!(r.unread(2), 310);
    }
}
