//! Warnings about peers, rate-limited and aggregated per address prefix:
//! the first problem from a prefix in a second is logged at once; the rest
//! of that second's are counted by reason and logged as one line when the
//! prefix next misbehaves after the second (or at [`PeerWarnings::flush`]),
//! so a flood from one address costs at most one log line a second, and
//! each line says exactly why connections were closed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Prefixes tracked at once, at most (the oldest windows are flushed).
const MAX_PREFIXES: usize = 4096;
const WINDOW: Duration = Duration::from_secs(1);

/// An address prefix: /24 for IPv4, /64 for IPv6 (SPEC-independent: the
/// same grouping as the admission limits of issue 41).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Prefix(IpAddr);

impl Prefix {
    pub(crate) fn of(ip: IpAddr) -> Prefix {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Prefix(IpAddr::V4([o[0], o[1], o[2], 0].into()))
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Prefix(IpAddr::V6([s[0], s[1], s[2], s[3], 0, 0, 0, 0].into()))
            }
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}/24"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// A line to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// The first problem from a prefix in its second.
    First {
        /// The peer.
        ip: IpAddr,
        /// Why its connection was closed.
        reason: &'static str,
    },
    /// What followed from the prefix in that second.
    Summary {
        /// The prefix.
        prefix: Prefix,
        /// How many more.
        count: u64,
        /// The reasons, with their counts (`reason (n), ...`).
        reasons: String,
    },
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::First { ip, reason } => write!(f, "connection from {ip} closed: {reason}"),
            Line::Summary { prefix, count, reasons } => {
                write!(f, "{count} more connections from {prefix} closed in a second: {reasons}")
            }
        }
    }
}

struct Window {
    started: Instant,
    /// Problems counted since the line that opened the window, by reason.
    counted: BTreeMap<&'static str, u64>,
}

/// The aggregator (module docs).
#[derive(Default)]
pub(crate) struct PeerWarnings {
    windows: HashMap<Prefix, Window>,
}

impl PeerWarnings {
    /// A problem from `ip` at `now`: the lines to log now (at most two: the
    /// summary of the prefix's previous second, and this one if it opens a
    /// new second).
    pub(crate) fn note(&mut self, now: Instant, ip: IpAddr, reason: &'static str) -> Vec<Line> {
        let prefix = Prefix::of(ip);
        let mut lines = Vec::new();
        if let Some(w) = self.windows.get_mut(&prefix) {
            if now.saturating_duration_since(w.started) < WINDOW {
                *w.counted.entry(reason).or_default() += 1;
                return lines;
            }
            if let Some(line) = summary(prefix, &w.counted) {
                lines.push(line);
            }
            self.windows.remove(&prefix);
        }
        if self.windows.len() >= MAX_PREFIXES {
            lines.extend(self.flush(now));
        }
        lines.push(Line::First { ip, reason });
        self.windows.insert(prefix, Window { started: now, counted: BTreeMap::new() });
        lines
    }

    /// Summaries of every window that has ended by `now` (the server calls
    /// it from time to time so that a burst's count is not left unsaid).
    pub(crate) fn flush(&mut self, now: Instant) -> Vec<Line> {
        let mut lines = Vec::new();
        self.windows.retain(|p, w| {
            let ended = now.saturating_duration_since(w.started) >= WINDOW;
            if ended && let Some(line) = summary(*p, &w.counted) {
                lines.push(line);
            }
            !ended
        });
        lines
    }
}

fn summary(prefix: Prefix, counted: &BTreeMap<&'static str, u64>) -> Option<Line> {
    let count: u64 = counted.values().sum();
    if count == 0 {
        return None;
    }
    let reasons: Vec<String> = counted.iter().map(|(r, c)| format!("{r} ({c})")).collect();
    Some(Line::Summary { prefix, count, reasons: reasons.join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_from_one_prefix_is_one_line_a_second_with_exact_reasons() {
        let t0 = Instant::now();
        let mut w = PeerWarnings::default();
        let mut lines = Vec::new();
        for i in 0..1000u32 {
            let ip: IpAddr = [10, 1, 2, (i % 250) as u8].into();
            let reason = if i % 3 == 0 { "malformed stream" } else { "no handshake in time" };
            lines.extend(w.note(t0 + Duration::from_micros(u64::from(i)), ip, reason));
        }
        let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
        assert_eq!(text, vec![String::from("connection from 10.1.2.0 closed: malformed stream")]);
        // Another prefix has its own line.
        assert_eq!(w.note(t0, [10, 1, 3, 1].into(), "malformed stream").len(), 1);
        // The next second: the summary, then the new first line.
        let next: Vec<String> = w
            .note(t0 + Duration::from_secs(1), [10, 1, 2, 9].into(), "malformed stream")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            next,
            vec![
                String::from(
                    "999 more connections from 10.1.2.0/24 closed in a second: malformed stream (333), no handshake in time (666)"
                ),
                String::from("connection from 10.1.2.9 closed: malformed stream"),
            ]
        );
        // A flush says what is left once its second is over, and only then.
        assert!(w.flush(t0 + Duration::from_millis(1500)).is_empty(), "nothing counted after those first lines");
        w.note(t0 + Duration::from_millis(1100), [10, 1, 2, 9].into(), "no handshake in time");
        assert!(w.flush(t0 + Duration::from_millis(1500)).is_empty(), "its second is not over");
        assert_eq!(w.flush(t0 + Duration::from_secs(2)).len(), 1);
    }

    #[test]
    fn ipv6_prefixes_are_64_bits() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Prefix::of(a), Prefix::of(b));
        assert_ne!(Prefix::of(a), Prefix::of(c));
        assert_eq!(Prefix::of(a).to_string(), "2001:db8:1:2::/64");
    }
}
