//! The run's trace: a hash of everything that happened (two runs of one
//! seed must agree on it), and optionally the lines themselves, human
//! readable or as JSON lines.

use std::fmt::Write as _;

/// How much of the trace to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceMode {
    /// Only the hash.
    #[default]
    Hash,
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// One traced event: where, what, and details.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Simulator time, ns.
    pub at: u64,
    /// The node or link ("server", "client3", "link up 3").
    pub node: &'a str,
    /// What happened ("deliver", "drop", "event", ...).
    pub what: &'a str,
    /// Details.
    pub detail: &'a str,
}

/// The trace of a run.
#[derive(Debug)]
pub struct Trace {
    mode: TraceMode,
    hash: u64,
    lines: Vec<String>,
    events: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `h` (not a cryptographic hash: it
/// only tells two runs apart).
pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// A digest of a byte string, for the trace and the checker.
pub fn digest(bytes: &[u8]) -> u64 {
    fnv(FNV_OFFSET, bytes)
}

impl Trace {
    /// An empty trace.
    pub fn new(mode: TraceMode) -> Trace {
        Trace { mode, hash: FNV_OFFSET, lines: Vec::new(), events: 0 }
    }

    /// Whether detail strings are wanted (callers skip formatting them
    /// otherwise).
    pub fn verbose(&self) -> bool {
        self.mode != TraceMode::Hash
    }

    /// Records an event: `key` is hashed always (cheap, binary), `record`
    /// is formatted only when lines are kept.
    pub fn record(&mut self, key: &[u64], record: impl FnOnce() -> (String, String, String), at: u64) {
        self.events += 1;
        let mut h = fnv(self.hash, &at.to_le_bytes());
        for k in key {
            h = fnv(h, &k.to_le_bytes());
        }
        self.hash = h;
        if self.mode == TraceMode::Hash {
            return;
        }
        let (node, what, detail) = record();
        let r = Record { at, node: &node, what: &what, detail: &detail };
        self.lines.push(match self.mode {
            TraceMode::Json => json_line(&r),
            _ => text_line(&r),
        });
    }

    /// The hash of everything recorded.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// How many events were recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The kept lines.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}

fn text_line(r: &Record<'_>) -> String {
    let secs = r.at / 1_000_000_000;
    let micros = (r.at % 1_000_000_000) / 1000;
    format!("{secs:>5}.{micros:06} {:<10} {:<10} {}", r.node, r.what, r.detail)
}

fn json_line(r: &Record<'_>) -> String {
    let mut s = String::with_capacity(64 + r.detail.len());
    let _ = write!(s, "{{\"t_ns\":{},\"node\":", r.at);
    json_str(&mut s, r.node);
    s.push_str(",\"what\":");
    json_str(&mut s, r.what);
    s.push_str(",\"detail\":");
    json_str(&mut s, r.detail);
    s.push('}');
    s
}

fn json_str(out: &mut String, v: &str) {
    out.push('"');
    for ch in v.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_and_parse() {
        let mut t = Trace::new(TraceMode::Json);
        t.record(&[1], || ("client0".into(), "event".into(), "say \"hi\"\n".into()), 1_500);
        let v: serde_json::Value = serde_json::from_str(&t.lines()[0]).unwrap();
        assert_eq!(v["detail"], "say \"hi\"\n");
        assert_eq!(v["t_ns"], 1500);
    }

    #[test]
    fn the_hash_depends_on_order_and_content() {
        let mut a = Trace::new(TraceMode::Hash);
        let mut b = Trace::new(TraceMode::Hash);
        a.record(&[1], Default::default, 0);
        a.record(&[2], Default::default, 0);
        b.record(&[2], Default::default, 0);
        b.record(&[1], Default::default, 0);
        assert_ne!(a.hash(), b.hash());
    }
}
