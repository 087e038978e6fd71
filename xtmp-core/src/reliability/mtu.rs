//! Datagram path MTU discovery (SPEC.md 4.10), in the style of DPLPMTUD
//! (RFC 8899): a path starts at the configured safe datagram size (the
//! base), probes upward with padded, acknowledged probes, and falls back to
//! the base when datagrams larger than it keep disappearing (a black hole:
//! the path's MTU shrank).
//!
//! The search tries the upper bound first (most paths carry it), then
//! halves the interval between the largest size acknowledged and the
//! smallest that failed, until it is narrower than [`GRANULARITY`]. A size
//! fails after [`MAX_PROBES`] lost probes. A finished search starts again
//! after the configured interval, since a path's MTU may grow.

use core::time::Duration;

use crate::time::Instant;

/// A search stops when the largest working and smallest failing sizes are
/// this close.
pub const GRANULARITY: usize = 16;

/// Probes of one size lost before the size counts as too large.
pub const MAX_PROBES: u8 = 3;

/// How a session discovers the datagram size of its datagram paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MtuDiscoveryConfig {
    /// The largest datagram probed for, bytes (headers of XTMP included,
    /// IP and UDP not). Default 1,452: a 1,500-byte Ethernet MTU less the
    /// IPv6 and UDP headers.
    pub upper_bound: usize,
    /// A search that ended starts again after this long. Default 10 minutes.
    pub interval: Duration,
    /// Loss events (detections that declare frames lost) of datagrams
    /// larger than the base, with none of those acknowledged in between,
    /// after which the path falls back to the base. Default 3.
    pub black_hole_threshold: u32,
}

impl Default for MtuDiscoveryConfig {
    fn default() -> Self {
        MtuDiscoveryConfig { upper_bound: 1452, interval: Duration::from_secs(600), black_hole_threshold: 3 }
    }
}

/// One datagram path's datagram size and its search.
#[derive(Clone, Debug)]
pub(crate) struct PathMtu {
    base: usize,
    current: usize,
    config: Option<MtuDiscoveryConfig>,
    /// The search in progress: the largest size known to work and the
    /// smallest known to fail (`upper_bound + 1` until one does).
    search: Option<(usize, usize)>,
    /// Probes of the size now probed that were lost.
    tries: u8,
    /// A probe is in flight.
    outstanding: bool,
    /// When the next search (or, searching, the next probe) may start.
    next_at: Option<Instant>,
    /// Loss events of large datagrams since one was last acknowledged.
    large_losses: u32,
}

impl PathMtu {
    /// A path at `base` bytes; with `config`, searching from the first
    /// moment the session lets it probe.
    pub(crate) fn new(base: usize, config: Option<MtuDiscoveryConfig>) -> PathMtu {
        let config = config.filter(|c| c.upper_bound > base);
        PathMtu {
            base,
            current: base,
            config,
            search: None,
            tries: 0,
            outstanding: false,
            // Due as soon as the session lets the path probe.
            next_at: config.map(|_| Instant::ZERO),
            large_losses: 0,
        }
    }

    /// The datagram size in use.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// The size a datagram must exceed to count as large.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// Lowers the upper bound (the caller's buffer or the peer's frame
    /// limit cannot carry more).
    pub(crate) fn cap(&mut self, max: usize) {
        if let Some(c) = &mut self.config
            && max < c.upper_bound
        {
            c.upper_bound = max.max(self.base);
            if let Some((_, hi)) = &mut self.search {
                *hi = (*hi).min(max + 1);
            }
        }
    }

    fn candidate(&self) -> Option<usize> {
        let c = self.config?;
        let (lo, hi) = self.search?;
        if hi > c.upper_bound {
            return (lo < c.upper_bound).then_some(c.upper_bound);
        }
        (hi.saturating_sub(lo) > GRANULARITY).then(|| lo + (hi - lo) / 2)
    }

    /// The size to probe now, if a probe is due.
    pub(crate) fn due(&mut self, now: Instant) -> Option<usize> {
        if self.outstanding || self.next_at.is_none_or(|t| now < t) {
            return None;
        }
        if self.search.is_none() {
            self.search = Some((self.current, usize::MAX));
            self.tries = 0;
        }
        match self.candidate() {
            Some(size) => Some(size),
            None => {
                self.finish(now);
                None
            }
        }
    }

    fn finish(&mut self, now: Instant) {
        self.search = None;
        self.next_at = self.config.map(|c| now.saturating_add(c.interval));
    }

    /// When [`PathMtu::due`] may next have something.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.outstanding { None } else { self.next_at }
    }

    pub(crate) fn on_probe_sent(&mut self) {
        self.outstanding = true;
    }

    /// The probe of `size` was acknowledged: the path carries it.
    pub(crate) fn on_probe_acked(&mut self, size: usize) {
        self.outstanding = false;
        self.large_losses = 0;
        if let Some((lo, hi)) = &mut self.search
            && size > *lo
        {
            *lo = size;
            if *hi <= size {
                *hi = usize::MAX;
            }
            self.current = size;
            self.tries = 0;
        }
    }

    /// The probe of `size` was lost.
    pub(crate) fn on_probe_lost(&mut self, size: usize, now: Instant) {
        self.outstanding = false;
        let Some((lo, hi)) = &mut self.search else { return };
        self.tries += 1;
        if self.tries >= MAX_PROBES && size > *lo {
            *hi = size;
            self.tries = 0;
        }
        self.next_at = Some(now);
    }

    /// A datagram larger than the base was acknowledged.
    pub(crate) fn on_large_acked(&mut self) {
        self.large_losses = 0;
    }

    /// One loss detection declared large datagrams lost. Returns whether
    /// the path fell back to the base (a black hole).
    pub(crate) fn on_large_lost(&mut self, now: Instant) -> bool {
        let Some(c) = self.config else { return false };
        if self.current <= self.base {
            return false;
        }
        self.large_losses += 1;
        if self.large_losses < c.black_hole_threshold {
            return false;
        }
        self.current = self.base;
        self.large_losses = 0;
        self.outstanding = false;
        self.finish(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn t(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    /// Runs a search over a path that carries `mtu`; returns the sizes probed.
    fn search(m: &mut PathMtu, mtu: usize, now: Instant) -> Vec<usize> {
        let mut probed = Vec::new();
        while let Some(size) = m.due(now) {
            probed.push(size);
            m.on_probe_sent();
            if size <= mtu {
                m.on_probe_acked(size)
            } else {
                m.on_probe_lost(size, now)
            }
            assert!(probed.len() < 100, "the search ends");
        }
        probed
    }

    #[test]
    fn the_upper_bound_is_tried_first_and_taken_when_it_works() {
        let mut m = PathMtu::new(1200, Some(MtuDiscoveryConfig::default()));
        assert_eq!(search(&mut m, 1500, t(0)), [1452]);
        assert_eq!(m.current(), 1452);
        assert_eq!(m.deadline(), Some(t(600)), "searched again after the interval");
    }

    #[test]
    fn a_narrower_path_is_found_by_halving_within_the_granularity() {
        let mut m = PathMtu::new(1200, Some(MtuDiscoveryConfig::default()));
        let probed = search(&mut m, 1300, t(0));
        assert_eq!(&probed[..3], [1452, 1452, 1452], "a size fails after three lost probes");
        assert!(m.current() <= 1300 && m.current() > 1300 - GRANULARITY, "found {}", m.current());
        assert!(probed.iter().all(|&s| s <= 1452));
    }

    #[test]
    fn a_black_hole_falls_back_to_the_base_and_searches_later() {
        let mut m = PathMtu::new(1200, Some(MtuDiscoveryConfig::default()));
        search(&mut m, 1500, t(0));
        assert!(!m.on_large_lost(t(1)));
        m.on_large_acked();
        assert!(!m.on_large_lost(t(2)));
        assert!(!m.on_large_lost(t(3)));
        assert!(m.on_large_lost(t(4)), "three loss events in a row");
        assert_eq!(m.current(), 1200);
        assert_eq!(m.due(t(5)), None);
        assert!(!search(&mut m, 1350, t(604)).is_empty(), "a new search after the interval");
        assert!(m.current() > 1350 - GRANULARITY && m.current() <= 1350);
    }

    #[test]
    fn without_configuration_or_headroom_nothing_is_probed() {
        let mut m = PathMtu::new(1200, None);
        assert_eq!(m.due(t(0)), None);
        assert_eq!(m.deadline(), None);
        let mut m = PathMtu::new(1500, Some(MtuDiscoveryConfig::default()));
        assert_eq!(m.due(t(0)), None, "the base is above the upper bound");
        let mut m = PathMtu::new(1200, Some(MtuDiscoveryConfig::default()));
        m.cap(1250);
        assert_eq!(search(&mut m, 9000, t(0)), [1250]);
    }
}
