//! Round-trip time estimation (RFC 9002 section 5).

use core::time::Duration;

/// Timer granularity: the smallest RTT variation a timer accounts for.
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// The smoothed RTT, its variation and the minimum, from samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
    initial: Duration,
}

impl RttEstimator {
    /// An estimator that assumes `initial` until the first sample.
    pub fn new(initial: Duration) -> RttEstimator {
        RttEstimator { latest: initial, smoothed: None, var: initial / 2, min: initial, initial }
    }

    /// The smoothed RTT (the initial RTT before any sample).
    pub fn get(&self) -> Duration {
        self.smoothed.unwrap_or(self.initial)
    }

    /// Whether a sample has been taken.
    pub fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    /// The latest sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// The RTT variation.
    pub fn var(&self) -> Duration {
        self.var
    }

    /// The smallest sample seen.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// Adds a sample: `sample` from sending to the acknowledgement, of which
    /// the peer held it for `ack_delay` (discounted, up to `max_ack_delay`,
    /// when that leaves at least the minimum RTT).
    pub fn update(&mut self, sample: Duration, ack_delay: Duration, max_ack_delay: Duration) {
        self.latest = sample;
        let Some(smoothed) = self.smoothed else {
            self.min = sample;
            self.smoothed = Some(sample);
            self.var = sample / 2;
            return;
        };
        self.min = self.min.min(sample);
        let delay = ack_delay.min(max_ack_delay);
        let adjusted = if sample >= self.min + delay { sample - delay } else { sample };
        self.var = (self.var * 3 + smoothed.abs_diff(adjusted)) / 4;
        self.smoothed = Some((smoothed * 7 + adjusted) / 8);
    }

    /// The probe timeout before backoff: `srtt + max(4 rttvar, granularity) + max_ack_delay`.
    pub fn pto(&self, max_ack_delay: Duration) -> Duration {
        self.get() + (self.var * 4).max(GRANULARITY) + max_ack_delay
    }

    /// How long after a later frame was acknowledged an earlier one counts
    /// as lost: 9/8 of the larger of the smoothed and latest RTT.
    pub fn loss_delay(&self) -> Duration {
        (self.get().max(self.latest) * 9 / 8).max(GRANULARITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rfc9002() {
        let ms = Duration::from_millis;
        let mut r = RttEstimator::new(ms(333));
        assert_eq!(r.get(), ms(333));
        r.update(ms(100), ms(0), ms(25));
        assert_eq!((r.get(), r.var(), r.min()), (ms(100), ms(50), ms(100)));
        // 140 ms with 20 ms of ack delay: adjusted to 120.
        r.update(ms(140), ms(20), ms(25));
        assert_eq!(r.get(), (ms(100) * 7 + ms(120)) / 8);
        assert_eq!(r.var(), (ms(50) * 3 + ms(20)) / 4);
        // An ack delay that would go below the minimum is ignored.
        let before = r.get();
        r.update(ms(105), ms(20), ms(25));
        assert_eq!(r.get(), (before * 7 + ms(105)) / 8);
        assert!(r.pto(ms(25)) > r.get());
        assert!(r.loss_delay() >= r.get());
    }
}
