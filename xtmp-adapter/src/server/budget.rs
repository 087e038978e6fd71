//! Items per second: a token bucket for each session and one for each
//! shard (the server's budget shared out), so that no session, and no
//! set of sessions, can make the server publish faster than configured.
//! An item beyond the budget waits in its publisher's queue: a reliable
//! `push` then waits and a best-effort one drops the oldest, and a handler
//! that waits for [`Publisher::writable`](super::Publisher::writable)
//! builds nothing meanwhile.

use std::time::{Duration, Instant};

/// A rate of `rate` tokens a second with a burst of a tenth of a second's
/// worth (at least one); 0 is no limit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, now: Instant) -> TokenBucket {
        let rate = f64::from(rate);
        let burst = (rate / 10.0).max(1.0);
        TokenBucket { rate, burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Whether a token is there now (without taking it).
    pub(crate) fn ready(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes a token (call after [`TokenBucket::ready`] said yes).
    pub(crate) fn take(&mut self) {
        if self.rate != 0.0 {
            self.tokens -= 1.0;
        }
    }

    /// When the next token is there.
    pub(crate) fn next_at(&self, now: Instant) -> Instant {
        if self.rate == 0.0 || self.tokens >= 1.0 {
            return now;
        }
        now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_its_rate_through_after_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        let mut n = 0;
        while b.ready(t0) {
            b.take();
            n += 1;
        }
        assert_eq!(n, 10, "a tenth of a second's worth at once");
        assert_eq!(b.next_at(t0), t0 + Duration::from_millis(10));
        // Over the next second: 100 more, not more.
        let mut later = 0;
        for ms in 1..=1000 {
            let now = t0 + Duration::from_millis(ms);
            while b.ready(now) {
                b.take();
                later += 1;
            }
        }
        assert!((99..=101).contains(&later), "{later}");
    }

    #[test]
    fn zero_is_no_limit() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, t0);
        for _ in 0..1_000_000 {
            assert!(b.ready(t0));
            b.take();
        }
        assert_eq!(b.next_at(t0), t0);
    }
}
