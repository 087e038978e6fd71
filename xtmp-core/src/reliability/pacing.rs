//! Pacing (RFC 9002 section 7.7, SPEC.md 4.6): a datagram path spreads
//! its congestion window over the round trip instead of sending it in one
//! burst that a shallow router queue would drop.
//!
//! A token bucket, refilled at 5/4 of the window per smoothed RTT (a little
//! faster than the window so pacing never holds the sender below it), holds
//! at most a burst: the window's share of [`BURST_INTERVAL`], between
//! [`MIN_BURST`] and [`MAX_BURST`] datagrams. A datagram goes when the
//! bucket holds a full datagram's worth of tokens.

use core::time::Duration;

use crate::time::Instant;

/// The burst a full bucket allows is what the window sends in this long.
pub const BURST_INTERVAL: Duration = Duration::from_millis(2);

/// The smallest burst, in datagrams.
pub const MIN_BURST: u64 = 10;

/// The largest burst, in datagrams.
pub const MAX_BURST: u64 = 256;

/// The token bucket of one session's datagram sending.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pacer {
    /// Tokens (bytes) in the bucket at `last`; a full bucket before the
    /// first send.
    tokens: u64,
    last: Option<Instant>,
}

/// What the bucket is computed from at a given moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rate {
    /// The congestion window, bytes.
    pub(crate) window: u64,
    /// The smoothed round-trip time.
    pub(crate) rtt: Duration,
    /// The largest datagram, bytes.
    pub(crate) datagram: u64,
}

impl Rate {
    fn rtt_nanos(&self) -> u128 {
        self.rtt.as_nanos().max(1)
    }

    fn capacity(&self) -> u64 {
        let burst = u128::from(self.window) * BURST_INTERVAL.as_nanos() / self.rtt_nanos();
        let burst = u64::try_from(burst).unwrap_or(u64::MAX);
        burst.clamp(MIN_BURST * self.datagram, MAX_BURST * self.datagram)
    }

    /// Tokens gained over `elapsed`.
    fn gained(&self, elapsed: Duration) -> u64 {
        let g = elapsed.as_nanos().saturating_mul(u128::from(self.window) * 5) / (4 * self.rtt_nanos());
        u64::try_from(g).unwrap_or(u64::MAX)
    }

    /// How long gaining `tokens` takes (rounded up).
    fn time_for(&self, tokens: u64) -> Duration {
        let rate = u128::from(self.window.max(1)) * 5;
        let nanos = (u128::from(tokens) * 4).saturating_mul(self.rtt_nanos()).div_ceil(rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl Pacer {
    fn available(&self, now: Instant, rate: Rate) -> u64 {
        let capacity = rate.capacity();
        match self.last {
            None => capacity,
            Some(last) => {
                let gained = rate.gained(now.saturating_duration_since(last));
                self.tokens.saturating_add(gained).min(capacity)
            }
        }
    }

    /// When the next full datagram may go: `None` for now.
    pub(crate) fn release(&self, now: Instant, rate: Rate) -> Option<Instant> {
        let available = self.available(now, rate);
        (available < rate.datagram).then(|| now.saturating_add(rate.time_for(rate.datagram - available)))
    }

    /// A datagram of `bytes` that counts against the window went out.
    pub(crate) fn on_sent(&mut self, now: Instant, bytes: u64, rate: Rate) {
        self.tokens = self.available(now, rate).saturating_sub(bytes);
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    #[test]
    fn a_burst_then_one_datagram_per_interval() {
        // 120,000 bytes per 100 ms: a burst of 10 datagrams (the window's
        // 2 ms share is smaller), then 1,500 bytes per ms.
        let rate = Rate { window: 120_000, rtt: Duration::from_millis(100), datagram: 1200 };
        let mut p = Pacer::default();
        for i in 0..10 {
            assert_eq!(p.release(ms(0), rate), None, "datagram {i} of the burst");
            p.on_sent(ms(0), 1200, rate);
        }
        let next = p.release(ms(0), rate).expect("the burst is spent");
        assert_eq!(next, Instant::from_nanos(800_000), "1,200 bytes at 1.5 bytes per µs");
        assert_eq!(p.release(next, rate), None);
        p.on_sent(next, 1200, rate);
        assert!(p.release(next, rate).is_some());
        // An idle sender refills to the burst, no further.
        assert_eq!(p.available(ms(10_000), rate), 12_000);
    }

    #[test]
    fn a_large_window_on_a_short_rtt_allows_bigger_bursts() {
        let rate = Rate { window: 10_000_000, rtt: Duration::from_millis(1), datagram: 1200 };
        assert_eq!(rate.capacity(), 256 * 1200, "capped at MAX_BURST");
        let rate = Rate { window: 1_000_000, rtt: Duration::from_millis(20), datagram: 1200 };
        assert_eq!(rate.capacity(), 100_000, "2 ms of a 20 ms window");
    }

    #[test]
    fn extreme_inputs_do_not_overflow() {
        let rate = Rate { window: u64::MAX, rtt: Duration::ZERO, datagram: 65_507 };
        let mut p = Pacer::default();
        p.on_sent(ms(0), u64::MAX, rate);
        assert_eq!(p.release(Instant::from_nanos(u64::MAX), rate), None);
        let slow = Rate { window: 0, rtt: Duration::from_secs(3600), datagram: 1200 };
        let mut p = Pacer::default();
        p.on_sent(ms(0), 1_000_000, slow);
        assert!(p.release(ms(1), slow).is_some());
    }
}
