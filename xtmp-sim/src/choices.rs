//! The simulator's one source of network randomness, and its decision log.
//!
//! Every choice the simulated network and workload make (a fault, a delay,
//! a message size) is a draw from [`Choices`]. A run from a seed draws from
//! a ChaCha stream and records each draw; a replay reads the recorded draws
//! back instead, so a run can be reproduced without the RNG and edited: the
//! shrinker deletes and zeroes draws while the failure persists. A draw of
//! `0` is always the simplest outcome (no fault, the shortest delay, the
//! smallest message), and a replay past the end of its log draws `0`, so a
//! shrunk log means "fewer faults, simpler traffic", never garbage.
//!
//! The protocol's own randomness (keys, session ids, nonces) comes from a
//! separate generator seeded from the same seed (see [`protocol_seed`]), so
//! editing the log changes what the network does, never which keys exist.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng};

/// A draw's value range: `0..=u32::MAX`.
pub type Draw = u32;

enum Source {
    Random(Box<ChaCha8Rng>),
    Replay { log: BTreeMap<usize, Draw>, len: usize },
}

/// Where the simulator's choices come from.
pub struct Choices {
    source: Source,
    /// Every draw made so far, in order.
    log: Vec<Draw>,
}

impl Choices {
    /// Draws from a ChaCha stream seeded by `seed`.
    pub fn from_seed(seed: u64) -> Choices {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(b"xtmp-net");
        Choices { source: Source::Random(Box::new(ChaCha8Rng::from_seed(key))), log: Vec::new() }
    }

    /// Replays recorded draws; positions missing from `log` draw `0`, and
    /// so does every position past the end.
    pub fn replay(log: impl IntoIterator<Item = (usize, Draw)>) -> Choices {
        let log: BTreeMap<usize, Draw> = log.into_iter().filter(|&(_, v)| v != 0).collect();
        let len = log.keys().next_back().map_or(0, |k| k + 1);
        Choices { source: Source::Replay { log, len }, log: Vec::new() }
    }

    /// The next raw draw.
    pub fn draw(&mut self) -> Draw {
        let v = match &mut self.source {
            Source::Random(rng) => rng.next_u32(),
            Source::Replay { log, len } => {
                let i = self.log.len();
                if i < *len { log.get(&i).copied().unwrap_or(0) } else { 0 }
            }
        };
        self.log.push(v);
        v
    }

    /// `true` with probability `p` (a draw of 0 is `false` unless `p >= 1`).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            self.draw();
            return true;
        }
        let threshold = ((1.0 - p) * 4_294_967_296.0) as u64;
        u64::from(self.draw()) >= threshold
    }

    /// A value in `0..n` (0 when `n` is 0), draw 0 giving 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            self.draw();
            return 0;
        }
        ((u128::from(self.draw()) * u128::from(n)) >> 32) as u64
    }

    /// A value in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            self.draw();
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// A uniform fraction in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        f64::from(self.draw()) / 4_294_967_296.0
    }

    /// An exponentially distributed value with the given mean (draw 0 is 0).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        let u = self.unit();
        -mean * (1.0 - u).ln()
    }

    /// One of `items`, weighted; draw 0 picks the first.
    pub fn weighted<T: Copy>(&mut self, items: &[(u32, T)]) -> T {
        let total: u64 = items.iter().map(|(w, _)| u64::from(*w)).sum();
        let mut x = self.below(total);
        for (w, t) in items {
            if x < u64::from(*w) {
                return *t;
            }
            x -= u64::from(*w);
        }
        items[0].1
    }

    /// Every draw made so far.
    pub fn log(&self) -> &[Draw] {
        &self.log
    }

    /// How many draws were made.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// Whether no draw was made yet.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
}

/// The seed of the protocol's CSPRNG for a run (keys, session ids), derived
/// from the run's seed and the node's index.
pub fn protocol_seed(seed: u64, node: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&node.to_le_bytes());
    s[16..24].copy_from_slice(b"xtmp-key");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_of_the_log_draws_the_same_values() {
        let mut a = Choices::from_seed(9);
        let drawn: Vec<u64> = (0..100).map(|i| a.below(i + 1)).collect();
        let mut b = Choices::replay(a.log().iter().copied().enumerate());
        let again: Vec<u64> = (0..100).map(|i| b.below(i + 1)).collect();
        assert_eq!(drawn, again);
        assert_eq!(a.log(), b.log());
    }

    #[test]
    fn an_exhausted_replay_draws_the_simplest_outcome() {
        let mut c = Choices::replay([]);
        assert!(!c.chance(0.99));
        assert_eq!(c.below(10), 0);
        assert_eq!(c.exponential(5.0), 0.0);
        assert_eq!(c.weighted(&[(1, 'a'), (9, 'b')]), 'a');
    }

    #[test]
    fn chance_matches_its_probability() {
        let mut c = Choices::from_seed(1);
        let hits = (0..100_000).filter(|_| c.chance(0.2)).count();
        assert!((19_000..21_000).contains(&hits), "{hits}");
    }

    #[test]
    fn seeds_differ() {
        let mut a = Choices::from_seed(1);
        let mut b = Choices::from_seed(2);
        assert_ne!((0..8).map(|_| a.draw()).collect::<Vec<_>>(), (0..8).map(|_| b.draw()).collect::<Vec<_>>());
    }
}
