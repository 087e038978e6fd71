//! Node clocks: each node reads virtual time through its own clock, which
//! may be offset from the simulator's, drift (run fast or slow by so many
//! parts per million) and step forward. A clock never runs backwards: the
//! core's [`Instant`] is monotonic, as a real adapter's clock is.

use xtmp_core::time::Instant;

/// One node's view of time.
#[derive(Clone, Copy, Debug)]
pub struct NodeClock {
    /// Simulator time (ns) and local time (ns) at the last change of rate.
    base_sim: u64,
    base_local: u64,
    /// Drift in parts per million (positive: the node's clock runs fast).
    drift_ppm: i32,
}

const MILLION: i128 = 1_000_000;

impl NodeClock {
    /// A clock reading `offset` ns at simulator time 0, drifting by `drift_ppm`.
    pub fn new(offset: u64, drift_ppm: i32) -> NodeClock {
        NodeClock { base_sim: 0, base_local: offset, drift_ppm: drift_ppm.clamp(-500_000, 500_000) }
    }

    /// The local time at simulator time `sim` (ns, `sim >= base`).
    pub fn local_ns(&self, sim: u64) -> u64 {
        let d = i128::from(sim.saturating_sub(self.base_sim));
        let scaled = d * (MILLION + i128::from(self.drift_ppm)) / MILLION;
        self.base_local.saturating_add(scaled.max(0) as u64)
    }

    /// The local [`Instant`] at simulator time `sim`.
    pub fn local(&self, sim: u64) -> Instant {
        Instant::from_nanos(self.local_ns(sim))
    }

    /// The earliest simulator time at which the local clock reads `at` or
    /// later (never before `now`).
    pub fn sim_time_of(&self, at: Instant, now: u64) -> u64 {
        let local = at.as_nanos();
        if local <= self.local_ns(now) {
            return now;
        }
        let d = i128::from(local - self.base_local);
        let rate = MILLION + i128::from(self.drift_ppm);
        // ceil(d * 1e6 / rate)
        let sim = (d * MILLION + rate - 1) / rate;
        let mut t = self.base_sim.saturating_add(sim as u64).max(now);
        // Integer rounding may leave the clock a nanosecond short.
        while self.local_ns(t) < local {
            t += 1;
        }
        t
    }

    /// Steps the clock forward by `by` ns at simulator time `now`.
    pub fn step(&mut self, now: u64, by: u64) {
        self.base_local = self.local_ns(now).saturating_add(by);
        self.base_sim = now;
    }

    /// Changes the drift from simulator time `now` on.
    pub fn set_drift(&mut self, now: u64, drift_ppm: i32) {
        self.base_local = self.local_ns(now);
        self.base_sim = now;
        self.drift_ppm = drift_ppm.clamp(-500_000, 500_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drifting_clock_maps_deadlines_back_exactly() {
        for drift in [-200_000, -37, 0, 1, 150, 90_000] {
            let mut c = NodeClock::new(5_000_000_000, drift);
            c.step(3_000, 7_777);
            for now in [3_000u64, 10_000, 1_000_000_007] {
                for ahead in [0u64, 1, 999, 25_000_000, 3_600_000_000_000] {
                    let at = Instant::from_nanos(c.local_ns(now) + ahead);
                    let t = c.sim_time_of(at, now);
                    assert!(c.local_ns(t) >= at.as_nanos());
                    assert!(t == now || c.local_ns(t - 1) < at.as_nanos(), "{drift} {now} {ahead}");
                }
            }
        }
    }

    #[test]
    fn a_clock_never_runs_backwards() {
        let mut c = NodeClock::new(0, -300_000);
        let mut last = 0;
        for t in (0..10_000_000u64).step_by(99_991) {
            if t % 3 == 0 {
                c.set_drift(t, (t % 7) as i32 * 1000 - 3000);
            }
            let l = c.local_ns(t);
            assert!(l >= last);
            last = l;
        }
    }
}
