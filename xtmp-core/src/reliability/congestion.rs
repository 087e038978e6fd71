//! Congestion control on datagram paths: a pluggable controller (as in
//! quinn) and NewReno (RFC 9002 section 7), the default.

use alloc::boxed::Box;
use core::fmt::Debug;

use super::rtt::RttEstimator;
use crate::time::Instant;

/// A congestion controller: how many bytes may be in flight on a datagram
/// path. Stream paths leave congestion control to their transport.
pub trait Controller: Send + Sync + Debug {
    /// `bytes` of ack-eliciting frames were sent.
    fn on_sent(&mut self, now: Instant, bytes: u64);
    /// A frame of `bytes`, sent at `sent`, was acknowledged.
    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, rtt: &RttEstimator);
    /// Frames were lost; the newest of them was sent at `sent`.
    /// `persistent` reports persistent congestion (RFC 9002 section 7.6).
    fn on_congestion_event(&mut self, now: Instant, sent: Instant, persistent: bool);
    /// The congestion window in bytes.
    fn window(&self) -> u64;
}

/// Builds a controller for each new session.
pub trait ControllerFactory: Send + Sync + Debug {
    /// A controller for a path whose datagrams are at most `max_datagram` bytes.
    fn build(&self, now: Instant, max_datagram: u64) -> Box<dyn Controller>;
}

/// NewReno with the RFC 9002 initial and minimum windows.
#[derive(Clone, Debug)]
pub struct NewReno {
    window: u64,
    ssthresh: u64,
    max_datagram: u64,
    recovery_start: Option<Instant>,
    /// Bytes acknowledged toward the next window increase in congestion avoidance.
    acked: u64,
}

impl NewReno {
    /// A controller at the initial window.
    pub fn new(max_datagram: u64) -> NewReno {
        NewReno {
            window: (10 * max_datagram).min((2 * max_datagram).max(14_720)),
            ssthresh: u64::MAX,
            max_datagram,
            recovery_start: None,
            acked: 0,
        }
    }

    fn minimum(&self) -> u64 {
        2 * self.max_datagram
    }
}

impl Controller for NewReno {
    fn on_sent(&mut self, _now: Instant, _bytes: u64) {}

    fn on_ack(&mut self, _now: Instant, sent: Instant, bytes: u64, _rtt: &RttEstimator) {
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        if self.window < self.ssthresh {
            self.window += bytes;
        } else {
            self.acked += bytes;
            if self.acked >= self.window {
                self.acked -= self.window;
                self.window += self.max_datagram;
            }
        }
    }

    fn on_congestion_event(&mut self, now: Instant, sent: Instant, persistent: bool) {
        if persistent {
            self.window = self.minimum();
            self.recovery_start = Some(now);
            return;
        }
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        self.recovery_start = Some(now);
        self.ssthresh = (self.window / 2).max(self.minimum());
        self.window = self.ssthresh;
        self.acked = 0;
    }

    fn window(&self) -> u64 {
        self.window
    }
}

/// Builds [`NewReno`] controllers.
#[derive(Clone, Copy, Debug, Default)]
pub struct NewRenoFactory;

impl ControllerFactory for NewRenoFactory {
    fn build(&self, _now: Instant, max_datagram: u64) -> Box<dyn Controller> {
        Box::new(NewReno::new(max_datagram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn slow_start_then_halving_once_per_round() {
        let rtt = RttEstimator::new(Duration::from_millis(10));
        let t = |ms: u64| Instant::from_nanos(ms * 1_000_000);
        let mut c = NewReno::new(1200);
        assert_eq!(c.window(), 12_000);
        c.on_ack(t(10), t(0), 1200, &rtt);
        assert_eq!(c.window(), 13_200, "slow start grows by what was acknowledged");
        c.on_congestion_event(t(20), t(15), false);
        assert_eq!(c.window(), 6_600);
        c.on_congestion_event(t(21), t(16), false);
        assert_eq!(c.window(), 6_600, "losses sent before recovery started count once");
        c.on_ack(t(22), t(18), 1200, &rtt);
        assert_eq!(c.window(), 6_600, "frames sent before recovery do not grow the window");
        for _ in 0..6 {
            c.on_ack(t(40), t(30), 1200, &rtt);
        }
        assert_eq!(c.window(), 7_800, "congestion avoidance: one datagram per window");
        c.on_congestion_event(t(50), t(45), true);
        assert_eq!(c.window(), 2_400, "persistent congestion: the minimum window");
    }
}
