//! The reconnection policy: exponential backoff with jitter and a cap.

use std::time::Duration;

/// How long a client waits before each reconnection attempt.
///
/// Attempt `n` (from 0) waits a random time in `[d/2, d]`, where
/// `d = min(initial × 2^n, max)` ("equal jitter": clients that lost their
/// server together do not come back together, and none waits less than
/// half the nominal delay). The count resets once a session is
/// established. With the defaults the waits are about 0.1, 0.2, 0.4 ...
/// seconds, levelling off at 15 to 30 seconds from the ninth attempt on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first nominal delay (default 100 ms).
    pub initial: Duration,
    /// The largest nominal delay (default 30 s).
    pub max: Duration,
    /// Give up after this many failed attempts in a row (`None`, the
    /// default: never).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(30), max_attempts: None }
    }
}

impl Backoff {
    /// The nominal delay of attempt `n`, before jitter.
    pub fn nominal(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before attempt `n`, given a uniformly random `random`;
    /// `None` once `max_attempts` is reached.
    pub fn delay(&self, n: u32, random: u32) -> Option<Duration> {
        if self.max_attempts.is_some_and(|m| n >= m) {
            return None;
        }
        let d = self.nominal(n);
        let half = d / 2;
        let extra = (half.as_nanos() * u128::from(random) / (u128::from(u32::MAX) + 1)) as u64;
        Some(half + Duration::from_nanos(extra))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff::default();
        assert_eq!(b.nominal(0), Duration::from_millis(100));
        assert_eq!(b.nominal(3), Duration::from_millis(800));
        assert_eq!(b.nominal(9), Duration::from_secs(30));
        assert_eq!(b.nominal(200), Duration::from_secs(30));
        for n in [0, 4, 12, 40] {
            let (lo, hi) = (b.delay(n, 0).unwrap(), b.delay(n, u32::MAX).unwrap());
            assert_eq!(lo, b.nominal(n) / 2);
            assert!(hi <= b.nominal(n) && hi > lo, "{hi:?}");
        }
        // Different random draws spread the waits.
        assert_ne!(b.delay(5, 1 << 30), b.delay(5, 3 << 30));
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let b = Backoff { max_attempts: Some(3), ..Backoff::default() };
        assert!(b.delay(2, 7).is_some());
        assert_eq!(b.delay(3, 7), None);
    }
}
