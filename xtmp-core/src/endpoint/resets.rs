//! The endpoint's side of stateless reset (SPEC.md 3.7.1): which frames
//! get a Reset, and how many a second.

use core::time::Duration;

use crate::time::Instant;

/// A token bucket of stateless replies (Reset, Busy): `rate` a second,
/// bursts of `rate`.
#[derive(Debug)]
pub(super) struct RateBudget {
    rate: u32,
    tokens: u32,
    refilled: Option<Instant>,
}

impl RateBudget {
    pub(super) fn new(rate: u32) -> RateBudget {
        RateBudget { rate, tokens: rate, refilled: None }
    }

    /// Takes one reply from the budget at `now`, if there is one left.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        match self.refilled {
            None => self.refilled = Some(now),
            Some(t) => {
                let elapsed = now.saturating_duration_since(t);
                let earned = (elapsed.as_nanos() * u128::from(self.rate) / Duration::from_secs(1).as_nanos()) as u32;
                if earned > 0 {
                    self.tokens = self.tokens.saturating_add(earned).min(self.rate);
                    self.refilled = Some(now);
                }
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_rate_a_second_in_bursts_of_rate() {
        let t0 = Instant::from_nanos(1_000_000_000);
        let mut b = RateBudget::new(3);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0), "the burst is spent");
        assert!(!b.take(t0 + Duration::from_millis(300)), "a third of a token is not one");
        assert!(b.take(t0 + Duration::from_millis(334)));
        assert!(!b.take(t0 + Duration::from_millis(335)));
        assert!((0..3).all(|_| b.take(t0 + Duration::from_secs(10))), "refilled, up to the burst");
        assert!(!b.take(t0 + Duration::from_secs(10)));
        let mut none = RateBudget::new(0);
        assert!(!none.take(t0));
    }
}
