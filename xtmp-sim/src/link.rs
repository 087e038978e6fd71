//! One direction of a link and its faults.
//!
//! A [`Link`] takes a datagram (or a chunk of a stream) at the time it is
//! sent and answers with the deliveries it turns into: none (lost), one, or
//! several (duplicated, replayed), each with its arrival time and, if the
//! link corrupted it, different bytes. Every random choice is a draw from
//! [`Choices`], so a run replays from its decision log.

use std::collections::VecDeque;
use std::time::Duration;

use crate::choices::Choices;

/// One-way latency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Latency {
    /// Always the same.
    Fixed(Duration),
    /// Uniform between the two.
    Uniform(Duration, Duration),
    /// A base plus an exponential tail with the given mean: most frames
    /// arrive near the base, a few much later.
    LongTail {
        /// The least latency.
        base: Duration,
        /// Mean of the exponential extra.
        mean_extra: Duration,
    },
}

/// How frames are lost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// No random loss.
    None,
    /// Each frame independently, with this probability.
    Bernoulli(f64),
    /// Bursts: a two-state Markov chain (Gilbert-Elliott). In the good state
    /// frames are lost with `loss_good`, in the bad state with `loss_bad`.
    GilbertElliott {
        /// Per frame, the chance of moving from good to bad.
        to_bad: f64,
        /// Per frame, the chance of moving from bad to good.
        to_good: f64,
        /// Loss in the good state.
        loss_good: f64,
        /// Loss in the bad state.
        loss_bad: f64,
    },
}

/// A direction's faults. Plain data: change it during a run with
/// [`crate::Action::SetLink`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way latency.
    pub latency: Latency,
    /// Random loss.
    pub loss: Loss,
    /// Chance that a frame is delivered twice.
    pub duplicate: f64,
    /// Chance, per frame sent, that an old frame (one of the last 64) is
    /// delivered again, up to `replay_delay` later.
    pub replay: f64,
    /// The longest delay of a replayed old frame.
    pub replay_delay: Duration,
    /// Chance that a frame is held back by up to `hold_back`, so later frames
    /// overtake it (one frame far behind, or many jumping ahead).
    pub reorder: f64,
    /// How long a reordered frame may be held.
    pub hold_back: Duration,
    /// Chance that a frame is corrupted: bit flips or a truncation.
    pub corrupt: f64,
    /// Bytes per second; `None` for unlimited.
    pub bandwidth: Option<u64>,
    /// With a bandwidth: bytes that may wait to be transmitted; more are
    /// dropped (tail drop).
    pub queue: usize,
    /// Largest datagram; larger ones are dropped. Streams ignore it.
    pub mtu: usize,
    /// A blackhole: everything is dropped (a partition in this direction).
    pub down: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig::clean(Duration::from_millis(10))
    }
}

impl LinkConfig {
    /// A fault-free link with a fixed latency.
    pub fn clean(latency: Duration) -> LinkConfig {
        LinkConfig {
            latency: Latency::Fixed(latency),
            loss: Loss::None,
            duplicate: 0.0,
            replay: 0.0,
            replay_delay: Duration::from_secs(2),
            reorder: 0.0,
            hold_back: Duration::from_millis(100),
            corrupt: 0.0,
            bandwidth: None,
            queue: 1 << 20,
            mtu: 1500,
            down: false,
        }
    }

    /// The same link with every random fault off (latency, bandwidth and
    /// MTU stay): what a scenario's liveness phase runs on.
    pub fn calmed(&self) -> LinkConfig {
        LinkConfig {
            loss: Loss::None,
            duplicate: 0.0,
            replay: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            down: false,
            mtu: self.mtu.max(1500),
            ..self.clone()
        }
    }

    /// A swarm sample: each fault on or off, and its strength, drawn from
    /// `c` (the "swarm testing" of the issue: combinations nobody wrote).
    pub fn swarm(c: &mut Choices) -> LinkConfig {
        let ms = |v: u64| Duration::from_millis(v);
        let latency = match c.below(3) {
            0 => Latency::Fixed(ms(c.between(1, 80))),
            1 => {
                let lo = c.between(1, 40);
                Latency::Uniform(ms(lo), ms(lo + c.between(0, 60)))
            }
            _ => Latency::LongTail { base: ms(c.between(1, 40)), mean_extra: ms(c.between(1, 50)) },
        };
        let loss = match c.below(3) {
            0 => Loss::None,
            1 => Loss::Bernoulli(c.below(25) as f64 / 100.0),
            _ => Loss::GilbertElliott {
                to_bad: c.between(1, 10) as f64 / 100.0,
                to_good: c.between(10, 50) as f64 / 100.0,
                loss_good: c.below(3) as f64 / 100.0,
                loss_bad: c.between(30, 90) as f64 / 100.0,
            },
        };
        let on = |c: &mut Choices, max_pct: u64| if c.chance(0.5) { c.below(max_pct + 1) as f64 / 100.0 } else { 0.0 };
        let duplicate = on(c, 10);
        let replay = on(c, 5);
        let reorder = on(c, 15);
        let corrupt = on(c, 5);
        let bandwidth = c.chance(0.3).then(|| c.between(200_000, 20_000_000));
        LinkConfig {
            latency,
            loss,
            duplicate,
            replay,
            replay_delay: ms(c.between(10, 3000)),
            reorder,
            hold_back: ms(c.between(5, 300)),
            corrupt,
            bandwidth,
            queue: c.between(16_000, 512_000) as usize,
            mtu: 1500,
            down: false,
        }
    }
}

/// What happened to a delivery, for the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Delivered as sent.
    None,
    /// A second copy.
    Duplicate,
    /// An old frame delivered again.
    Replay,
    /// Held back so that later frames overtake it.
    Reordered,
    /// Bits flipped or truncated.
    Corrupted,
}

/// Why a link dropped a frame, for the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Random or burst loss.
    Lost,
    /// The link is down (partition).
    Down,
    /// Larger than the MTU.
    TooBig,
    /// The bandwidth queue was full.
    QueueFull,
}

/// One arrival.
#[derive(Debug)]
pub struct Arrival {
    /// Simulator time (ns).
    pub at: u64,
    /// The bytes that arrive.
    pub bytes: Vec<u8>,
    /// What the link did to them.
    pub fault: Fault,
}

/// One direction of a link, with its state (burst state, queue, the old
/// frames it may replay).
#[derive(Debug)]
pub struct Link {
    /// The faults, changeable at any time.
    pub config: LinkConfig,
    bad: bool,
    busy_until: u64,
    /// For ordered links (streams): no arrival before this.
    last_arrival: u64,
    history: VecDeque<Vec<u8>>,
}

const HISTORY: usize = 64;

impl Link {
    /// A link with the given faults.
    pub fn new(config: LinkConfig) -> Link {
        Link { config, bad: false, busy_until: 0, last_arrival: 0, history: VecDeque::new() }
    }

    fn latency(&self, c: &mut Choices) -> u64 {
        let d = match self.config.latency {
            Latency::Fixed(d) => d,
            Latency::Uniform(lo, hi) => {
                lo + Duration::from_nanos(c.below((hi.saturating_sub(lo)).as_nanos() as u64 + 1))
            }
            Latency::LongTail { base, mean_extra } => {
                let extra = c.exponential(mean_extra.as_nanos() as f64).min(60e9);
                base + Duration::from_nanos(extra as u64)
            }
        };
        d.as_nanos() as u64
    }

    fn lost(&mut self, c: &mut Choices) -> bool {
        match self.config.loss {
            Loss::None => false,
            Loss::Bernoulli(p) => c.chance(p),
            Loss::GilbertElliott { to_bad, to_good, loss_good, loss_bad } => {
                let flip = c.chance(if self.bad { to_good } else { to_bad });
                self.bad ^= flip;
                c.chance(if self.bad { loss_bad } else { loss_good })
            }
        }
    }

    /// Passes the queue: the time the frame's last byte has left, or `None`
    /// when the queue is full.
    fn serialise(&mut self, now: u64, len: usize) -> Option<u64> {
        let Some(rate) = self.config.bandwidth else { return Some(now) };
        let start = self.busy_until.max(now);
        let waiting = (start - now) as u128 * u128::from(rate) / 1_000_000_000;
        if waiting as usize + len > self.config.queue {
            return None;
        }
        self.busy_until = start + (len as u128 * 1_000_000_000 / u128::from(rate.max(1))) as u64;
        Some(self.busy_until)
    }

    fn corrupt(bytes: &mut Vec<u8>, c: &mut Choices) {
        if bytes.is_empty() {
            return;
        }
        if c.chance(0.25) {
            let keep = c.below(bytes.len() as u64) as usize;
            bytes.truncate(keep);
            return;
        }
        let before = bytes.clone();
        for _ in 0..=c.below(4) {
            let i = c.below(bytes.len() as u64) as usize;
            bytes[i] ^= 1 << c.below(8);
        }
        if *bytes == before {
            // Two flips of one bit cancelled out: corrupt means changed.
            bytes[0] ^= 1;
        }
    }

    /// A datagram sent at `now`: its arrivals, or why it was dropped.
    pub fn datagram(&mut self, now: u64, bytes: &[u8], c: &mut Choices) -> Result<Vec<Arrival>, Drop> {
        if self.config.down {
            return Err(Drop::Down);
        }
        if bytes.len() > self.config.mtu {
            return Err(Drop::TooBig);
        }
        let mut out = Vec::new();
        // An old frame comes back (it was captured and replayed, or looped).
        if c.chance(self.config.replay) && !self.history.is_empty() {
            let old = self.history[c.below(self.history.len() as u64) as usize].clone();
            let delay = c.below(self.config.replay_delay.as_nanos() as u64 + 1);
            out.push(Arrival { at: now + delay, bytes: old, fault: Fault::Replay });
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(bytes.to_vec());
        if self.lost(c) {
            return if out.is_empty() { Err(Drop::Lost) } else { Ok(out) };
        }
        let Some(sent) = self.serialise(now, bytes.len()) else {
            return if out.is_empty() { Err(Drop::QueueFull) } else { Ok(out) };
        };
        let mut at = sent + self.latency(c);
        let mut fault = Fault::None;
        if c.chance(self.config.reorder) {
            at += c.below(self.config.hold_back.as_nanos() as u64 + 1);
            fault = Fault::Reordered;
        }
        let mut data = bytes.to_vec();
        if c.chance(self.config.corrupt) {
            Self::corrupt(&mut data, c);
            fault = Fault::Corrupted;
        }
        if c.chance(self.config.duplicate) {
            let spread = self.latency(c);
            let extra = c.below(spread + 1);
            out.push(Arrival { at: at + extra, bytes: data.clone(), fault: Fault::Duplicate });
        }
        out.push(Arrival { at, bytes: data, fault });
        Ok(out)
    }

    /// A chunk of a stream sent at `now`: streams are ordered and reliable
    /// (nothing is lost, duplicated or reordered; corruption, if configured,
    /// is what TCP's checksum would have missed). `None` while the link is
    /// down: the bytes wait in the sender (the caller keeps them).
    pub fn stream(&mut self, now: u64, bytes: &[u8], c: &mut Choices) -> Option<Arrival> {
        if self.config.down {
            return None;
        }
        // A stream never drops for a full queue: the sender's socket buffer
        // holds the bytes, so only the pacing applies.
        let sent = match self.config.bandwidth {
            Some(rate) => {
                let start = self.busy_until.max(now);
                self.busy_until = start + (bytes.len() as u128 * 1_000_000_000 / u128::from(rate.max(1))) as u64;
                self.busy_until
            }
            None => now,
        };
        let at = (sent + self.latency(c)).max(self.last_arrival);
        self.last_arrival = at;
        let mut data = bytes.to_vec();
        let mut fault = Fault::None;
        if c.chance(self.config.corrupt) {
            Self::corrupt(&mut data, c);
            fault = Fault::Corrupted;
        }
        Some(Arrival { at, bytes: data, fault })
    }

    /// Forgets queue and order state (the stream was severed and a new one
    /// starts; the burst state of the medium stays).
    pub fn reset(&mut self) {
        self.busy_until = 0;
        self.last_arrival = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(config: LinkConfig) -> (Link, Choices) {
        (Link::new(config), Choices::from_seed(3))
    }

    #[test]
    fn a_clean_link_delivers_everything_once_after_its_latency() {
        let (mut l, mut c) = link(LinkConfig::clean(Duration::from_millis(5)));
        for i in 0..100u64 {
            let a = l.datagram(i * 1000, &[i as u8; 40], &mut c).unwrap();
            assert_eq!(a.len(), 1);
            assert_eq!(a[0].at, i * 1000 + 5_000_000);
            assert_eq!(a[0].bytes, vec![i as u8; 40]);
        }
    }

    #[test]
    fn bandwidth_spaces_frames_and_drops_at_the_tail() {
        let mut cfg = LinkConfig::clean(Duration::ZERO);
        cfg.bandwidth = Some(1_000_000); // 1 byte per microsecond
        cfg.queue = 3000;
        let (mut l, mut c) = link(cfg);
        let a = l.datagram(0, &[0; 1000], &mut c).unwrap();
        let b = l.datagram(0, &[0; 1000], &mut c).unwrap();
        assert_eq!(a[0].at, 1_000_000);
        assert_eq!(b[0].at, 2_000_000);
        l.datagram(0, &[0; 1000], &mut c).unwrap();
        assert_eq!(l.datagram(0, &[0; 1000], &mut c).unwrap_err(), Drop::QueueFull);
    }

    #[test]
    fn mtu_and_partitions_drop() {
        let mut cfg = LinkConfig::clean(Duration::ZERO);
        cfg.mtu = 100;
        let (mut l, mut c) = link(cfg);
        assert_eq!(l.datagram(0, &[0; 101], &mut c).unwrap_err(), Drop::TooBig);
        l.config.down = true;
        assert_eq!(l.datagram(0, &[0; 10], &mut c).unwrap_err(), Drop::Down);
        assert!(l.stream(0, &[0; 10], &mut c).is_none());
    }

    #[test]
    fn bursty_loss_comes_in_runs() {
        let mut cfg = LinkConfig::clean(Duration::ZERO);
        cfg.loss = Loss::GilbertElliott { to_bad: 0.02, to_good: 0.2, loss_good: 0.0, loss_bad: 1.0 };
        let (mut l, mut c) = link(cfg);
        let lost: Vec<bool> = (0..10_000).map(|i| l.datagram(i, &[1], &mut c).is_err()).collect();
        let n = lost.iter().filter(|x| **x).count();
        let runs = lost.windows(2).filter(|w| w[1] && !w[0]).count();
        // Mean burst length 1/to_good = 5; time in bad ≈ 0.02 / 0.22 ≈ 9 %.
        assert!((500..1500).contains(&n), "{n} lost");
        assert!(n as f64 / runs as f64 > 3.0, "{n} lost in {runs} runs");
    }

    #[test]
    fn a_stream_stays_in_order_under_jitter() {
        let mut cfg = LinkConfig::clean(Duration::ZERO);
        cfg.latency = Latency::Uniform(Duration::from_millis(1), Duration::from_millis(50));
        let (mut l, mut c) = link(cfg);
        let mut last = 0;
        for i in 0..1000 {
            let a = l.stream(i * 10_000, &[1, 2, 3], &mut c).unwrap();
            assert!(a.at >= last);
            last = a.at;
        }
    }

    #[test]
    fn faults_happen_at_their_rates() {
        let mut cfg = LinkConfig::clean(Duration::from_millis(1));
        cfg.duplicate = 0.1;
        cfg.corrupt = 0.1;
        cfg.replay = 0.05;
        let (mut l, mut c) = link(cfg);
        let mut counts = [0usize; 5];
        for i in 0..10_000u64 {
            for a in l.datagram(i, &i.to_be_bytes(), &mut c).unwrap() {
                counts[a.fault as usize] += 1;
                if a.fault == Fault::Corrupted {
                    assert_ne!(a.bytes, i.to_be_bytes());
                }
            }
        }
        let [_, dup, replay, _, corrupt] = counts;
        assert!((800..1200).contains(&dup), "{counts:?}");
        assert!((350..650).contains(&replay), "{counts:?}");
        assert!((800..1200).contains(&corrupt), "{counts:?}");
    }
}
