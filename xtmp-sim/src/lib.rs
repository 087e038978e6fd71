//! # xtmp-sim
//!
//! A deterministic, single-threaded network simulator for XTMP. One `u64`
//! seed drives virtual time, the network's faults and the protocol's own
//! randomness (keys and session ids come from CSPRNGs the simulator seeds
//! and injects into [`xtmp_core`]), so every run replays event for event.
//! It drives the core only through its public sans-IO surface, exactly as
//! the runtime adapters do: `handle_input`, `poll_transmit`,
//! `poll_timeout` / `handle_timeout`, `send`, `close` and `poll_event`.
//!
//! ## Model
//! - A server ([`xtmp_core::endpoint::Endpoint`]) and any number of clients
//!   ([`xtmp_core::session::Session`]), over datagrams, a stream, or both
//!   at once ([`Transport`]).
//! - Per client and direction a [`LinkConfig`]: latency (fixed, uniform,
//!   long-tailed), loss (independent, Gilbert-Elliott bursts, blackhole),
//!   duplication and delayed replay of old frames, reordering, corruption
//!   (bit flips, truncation), bandwidth with a tail-drop queue, and MTU.
//! - Scheduled [`Action`]s: partitions (both ways or one way) and heals,
//!   link changes, MTU changes, stream resets, NAT rebinding, server and
//!   client crashes and restarts, clock steps, forced key updates and re-keys.
//! - Per-node clocks with offset and drift ([`ClockFaults`]), and an
//!   [`Attacker`] that replays, reflects, forges and sprays frames.
//!
//! - An [`Application`] above the sessions ([`Scenario::app`]): the
//!   server's services and the clients' requests, told of crashes on
//!   either side, with invariants of their own (see [`app`]).
//!
//! ## Checks
//! The [`check::Checker`] holds every promise of SPEC.md section 4 on
//! every run (exactly once, unmodified, in order per priority class for
//! reliable messages; at most once and unmodified for unreliable ones;
//! responses tie to their requests; nothing after a close), the handshake
//! deadline, the memory bound, the erasure of old receive keys, and
//! liveness: once the faults stop, every reliable message is acknowledged
//! and every session closes on both sides. Coverage [`Mark`]s record which
//! rare paths a run reached; a sweep fails if one a scenario expects never
//! happens.
//!
//! ## Reproduce and shrink
//! Every network choice is a draw from [`Choices`], recorded in a decision
//! log. [`replay`] runs a scenario from a seed and an edited log;
//! [`shrink`] drops operations (scheduled actions, clients, messages,
//! subscriptions; see [`Edit`]) and deletes and zeroes draws while the
//! failure persists, and prints the smallest failing schedule as a
//! ready-to-paste test.
//!
//! ```
//! let run = xtmp_sim::run(&xtmp_sim::scenarios::nat_rebinding(), 7);
//! run.check().unwrap();
//! assert!(run.marks.contains(&xtmp_sim::Mark::Migration));
//! ```

pub mod app;
pub mod check;
pub mod choices;
pub mod clock;
pub mod link;
mod node;
pub mod scenario;
pub mod scenarios;
mod shrink;
mod sim;
pub mod trace;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

pub use app::{AppError, AppRequest, AppSpec, Application};
pub use check::{Totals, Violation};
pub use choices::{Choices, Draw};
pub use link::{Latency, LinkConfig, Loss};
pub use scenario::{Action, Attacker, ClockFaults, Dir, Flood, Mark, Scenario, Transport, Who, Workload};
pub use shrink::{Edit, Shrunk, shrink};
pub use sim::Counters;
pub use trace::TraceMode;
pub use xtmp_core;

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The sampled configuration, as text.
    pub config: String,
    /// Every broken promise (empty for a passing run).
    pub violations: Vec<Violation>,
    /// Message totals.
    pub totals: Totals,
    /// Network and session counters.
    pub counters: Counters,
    /// The rare paths reached.
    pub marks: BTreeSet<Mark>,
    /// Hash of the whole trace: equal for two runs of one seed.
    pub trace_hash: u64,
    /// Events traced.
    pub events: u64,
    /// The kept trace lines (see [`TraceMode`]).
    pub trace: Vec<String>,
    /// Simulated time the run took.
    pub elapsed: Duration,
    /// The hosted application's summary ([`Application::summary`]).
    pub app: Option<String>,
    /// The decision log (every draw, in order).
    pub log: Vec<Draw>,
    /// The draws this run was replayed from, if it was a replay.
    pub replayed: Option<Vec<(usize, Draw)>>,
}

impl Run {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok` for a passing run; otherwise a [`Failure`] that says how to
    /// replay it.
    pub fn check(&self) -> Result<(), Failure> {
        if self.passed() {
            return Ok(());
        }
        Err(Failure {
            scenario: self.scenario.clone(),
            seed: self.seed,
            config: self.config.clone(),
            violations: self.violations.clone(),
            replayed: self.replayed.clone(),
        })
    }
}

/// A failed run: what broke, and how to run it again.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The scenario.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The sampled configuration.
    pub config: String,
    /// What broke (the first is usually the cause).
    pub violations: Vec<Violation>,
    /// The replayed draws, if the run was a replay.
    pub replayed: Option<Vec<(usize, Draw)>>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "xtmp-sim: scenario {:?} failed with seed {}", self.scenario, self.seed)?;
        for v in self.violations.iter().take(5) {
            writeln!(f, "  at {:.6} s: {}", v.at as f64 / 1e9, v.what)?;
        }
        if self.violations.len() > 5 {
            writeln!(f, "  ... and {} more", self.violations.len() - 5)?;
        }
        writeln!(f, "replay: XTMP_SIM_SEED={} cargo test -p xtmp-sim --test scenarios {}", self.seed, self.scenario)?;
        writeln!(f, "    or: cargo run -p xtmp-sim -- run {} --seed {} --trace text", self.scenario, self.seed)?;
        writeln!(f, "shrink: cargo run -p xtmp-sim -- shrink {} --seed {}", self.scenario, self.seed)?;
        writeln!(f, "sampled configuration:\n{}", self.config)
    }
}

impl std::error::Error for Failure {}

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// What the trace keeps.
    pub trace: TraceMode,
    /// Replay these draws (position, value; others are 0) instead of
    /// drawing from the seed.
    pub replay: Option<Vec<(usize, Draw)>>,
}

/// Runs `scenario` from `seed`.
pub fn run(scenario: &Scenario, seed: u64) -> Run {
    run_with(scenario, seed, &Options::default())
}

/// Runs `scenario` from `seed` with the recorded draws `log` (see [`shrink`]).
pub fn replay(scenario: &Scenario, seed: u64, log: &[(usize, Draw)]) -> Run {
    run_with(scenario, seed, &Options { replay: Some(log.to_vec()), ..Options::default() })
}

/// Runs `scenario` from `seed` with options.
pub fn run_with(scenario: &Scenario, seed: u64, options: &Options) -> Run {
    let choices = match &options.replay {
        Some(log) => Choices::replay(log.iter().copied()),
        None => Choices::from_seed(seed),
    };
    let mut world = sim::World::new(scenario.clone(), seed, choices, options.trace);
    let config = world.scenario.describe();
    world.run();
    Run {
        scenario: scenario.name.clone(),
        seed,
        config,
        violations: world.checker.violations.clone(),
        totals: world.checker.totals,
        counters: world.counters,
        marks: world.marks.clone(),
        app: world.app.as_ref().map(|a| a.summary()),
        trace_hash: world.trace.hash(),
        events: world.trace.events(),
        trace: world.trace.lines().to_vec(),
        elapsed: world.elapsed(),
        log: world.choices.log().to_vec(),
        replayed: options.replay.clone(),
    }
}

/// What a sweep over many seeds found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// The scenario.
    pub scenario: String,
    /// Seeds run.
    pub runs: u64,
    /// Messages the clients sent, over all runs.
    pub messages: u64,
    /// Retransmissions, over all runs.
    pub retransmissions: u64,
    /// Simulated time, over all runs.
    pub simulated: Duration,
    /// The failing runs.
    pub failures: Vec<Failure>,
    /// Marks reached by at least one run.
    pub marks: BTreeSet<Mark>,
    /// Marks the scenario expects that no run reached.
    pub missing: Vec<Mark>,
}

impl Sweep {
    /// `Ok` if no run failed and every expected mark was reached.
    pub fn check(&self) -> Result<(), String> {
        if let Some(f) = self.failures.first() {
            return Err(format!("{} of {} runs failed; the first:\n{f}", self.failures.len(), self.runs));
        }
        if !self.missing.is_empty() {
            return Err(format!(
                "scenario {:?}: no run of {} reached {:?} (the fault model stopped biting?)",
                self.scenario, self.runs, self.missing
            ));
        }
        Ok(())
    }
}

/// Runs `scenario` over every seed in `seeds`.
pub fn sweep(scenario: &Scenario, seeds: impl IntoIterator<Item = u64>) -> Sweep {
    let mut s = Sweep { scenario: scenario.name.clone(), ..Sweep::default() };
    for seed in seeds {
        let r = run(scenario, seed);
        s.runs += 1;
        s.messages += r.totals.sent;
        s.retransmissions += r.counters.retransmissions;
        s.simulated += r.elapsed;
        s.marks.extend(r.marks.iter().copied());
        if let Err(f) = r.check() {
            s.failures.push(f);
        }
    }
    s.missing = scenario.marks.iter().filter(|m| !s.marks.contains(m)).copied().collect();
    s
}
