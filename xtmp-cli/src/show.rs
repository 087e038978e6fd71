//! How results are shown: durations, distributions, a progress line.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

/// Writes a file only its owner can read (Unix), for secret keys.
pub(crate) fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// `1.23 ms`, `456 µs`, `2.50 s`.
pub(crate) fn duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Order statistics of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Distribution {
    pub(crate) min: Duration,
    pub(crate) p50: Duration,
    pub(crate) p90: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) mean: Duration,
}

impl Distribution {
    /// `None` for no samples.
    pub(crate) fn of(samples: &[Duration]) -> Option<Distribution> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort();
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        let mean = s.iter().sum::<Duration>() / s.len() as u32;
        Some(Distribution { min: s[0], p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[s.len() - 1], mean })
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "min {}  p50 {}  p90 {}  p99 {}  max {}  mean {}",
            duration(self.min),
            duration(self.p50),
            duration(self.p90),
            duration(self.p99),
            duration(self.max),
            duration(self.mean)
        )
    }
}

/// A histogram of `samples` in buckets that double in width from 25 µs,
/// one line per non-empty bucket: its bounds, count and a bar.
pub(crate) fn histogram(samples: &[Duration]) -> Vec<String> {
    const FIRST_US: u64 = 25;
    const BUCKETS: usize = 16;
    let mut counts = [0usize; BUCKETS];
    for d in samples {
        let us = d.as_micros() as u64;
        let mut b = 0;
        while b + 1 < BUCKETS && us >= FIRST_US << b {
            b += 1;
        }
        counts[b] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    let bound = |b: usize| if b == 0 { 0 } else { FIRST_US << (b - 1) };
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(b, &c)| {
            let upper = if b + 1 == BUCKETS { "   inf".to_string() } else { format!("{:>6}", FIRST_US << b) };
            let bar = "#".repeat((c * 40).div_ceil(most));
            format!("{:>6} .. {upper} µs {c:>7} {bar}", bound(b))
        })
        .collect()
}

/// A line redrawn in place on a terminal; elsewhere only its last state is
/// printed, by [`Progress::done`].
pub(crate) struct Progress {
    tty: bool,
    last: String,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress { tty: std::io::stdout().is_terminal(), last: String::new() }
    }

    pub(crate) fn update(&mut self, line: String) {
        if self.tty {
            print!("\r\x1b[K{line}");
            let _ = std::io::stdout().flush();
        }
        self.last = line;
    }

    pub(crate) fn done(self, line: String) {
        if self.tty {
            println!("\r\x1b[K{line}");
        } else {
            println!("{line}");
        }
    }
}

/// A bar `width` characters wide, `done` of `total` full.
pub(crate) fn bar(done: usize, total: usize, width: usize) -> String {
    let full = (done * width).checked_div(total).unwrap_or(width).min(width);
    format!("[{}{}]", "=".repeat(full), " ".repeat(width - full))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_pick_order_statistics() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let d = Distribution::of(&samples).unwrap();
        assert_eq!(d.min, Duration::from_micros(1));
        assert_eq!(d.p50, Duration::from_micros(51));
        assert_eq!(d.p90, Duration::from_micros(90));
        assert_eq!(d.p99, Duration::from_micros(99));
        assert_eq!(d.max, Duration::from_micros(100));
        assert_eq!(d.mean, Duration::from_nanos(50_500));
        assert_eq!(Distribution::of(&[]), None);
    }

    #[test]
    fn histograms_bucket_by_doubling_widths() {
        let samples = [10, 20, 30, 60, 60, 5_000].map(Duration::from_micros);
        let lines = histogram(&samples);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("     0 ..     25 µs       2"), "{lines:#?}");
        assert!(lines[1].starts_with("    25 ..     50 µs       1"), "{lines:#?}");
        assert!(lines[2].starts_with("    50 ..    100 µs       2"), "{lines:#?}");
        assert!(lines[3].starts_with("  3200 ..   6400 µs       1"), "{lines:#?}");
        assert!(lines[0].ends_with(&"#".repeat(40)));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_micros(456)), "456 µs");
        assert_eq!(duration(Duration::from_micros(1_234)), "1.23 ms");
        assert_eq!(duration(Duration::from_millis(2_500)), "2.50 s");
        assert_eq!(bar(5, 10, 10), "[=====     ]");
        assert_eq!(bar(0, 0, 4), "[====]");
    }
}
