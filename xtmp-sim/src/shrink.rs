//! Shrinking a failing run to the fewest operations and network choices
//! that still fail.
//!
//! Two kinds of thing are removed, each kept out only while the run still
//! fails the same way (the first violation's text, digits aside):
//!
//! - **Operations**, as [`Edit`]s of the scenario: scheduled actions
//!   (partitions, crashes, clock steps...) are dropped one by one; the
//!   clients, their messages, subscriptions and items are halved; the
//!   server's pushes and the attacker are turned off.
//! - **Choices**: a run's decision log is a list of draws where `0` always
//!   means the simplest outcome (no fault, the least delay, the smallest
//!   message). The shrinker replays edited logs: first the shortest prefix
//!   that still fails (later draws become 0), then zeroing ever smaller
//!   chunks, then halving single draws.
//!
//! What remains is a handful of edits and non-zero draws: the operations
//! and faults that matter, printed as a ready-to-paste test.

use crate::choices::Draw;
use crate::scenario::{Action, Scenario, Who};
use crate::{Run, replay, run};

/// One simplification of a scenario, kept by the shrinker when the run
/// still fails without what it removes.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    /// Remove the scheduled action at this index of `schedule`.
    DropAction(usize),
    /// Run this many clients.
    Clients(usize),
    /// Each client sends this many messages.
    Messages(u64),
    /// Each client opens this many subscriptions per session.
    Subscriptions(usize),
    /// Each subscription runs for this many items.
    Items(u64),
    /// The server pushes no unreliable stream items.
    NoPush,
    /// No attacker.
    NoAttacker,
}

impl Edit {
    /// Applies the edit.
    pub fn apply(&self, s: &mut Scenario) {
        match *self {
            Edit::DropAction(i) => {
                if i < s.schedule.len() {
                    s.schedule.remove(i);
                }
            }
            Edit::Clients(n) => s.clients = n,
            Edit::Messages(n) => s.workload.messages = n,
            Edit::Subscriptions(n) => s.workload.subscriptions = n,
            Edit::Items(n) => s.workload.items = n,
            Edit::NoPush => s.workload.push_interval = None,
            Edit::NoAttacker => s.attacker = None,
        }
    }

    /// The edit as a line of Rust, applied to a `scenario` variable.
    pub fn code(&self) -> String {
        match self {
            Edit::DropAction(i) => format!("scenario.schedule.remove({i});"),
            Edit::Clients(n) => format!("scenario.clients = {n};"),
            Edit::Messages(n) => format!("scenario.workload.messages = {n};"),
            Edit::Subscriptions(n) => format!("scenario.workload.subscriptions = {n};"),
            Edit::Items(n) => format!("scenario.workload.items = {n};"),
            Edit::NoPush => "scenario.workload.push_interval = None;".into(),
            Edit::NoAttacker => "scenario.attacker = None;".into(),
        }
    }
}

/// A shrunk failure.
#[derive(Debug)]
pub struct Shrunk {
    /// The edits kept, in the order they apply.
    pub edits: Vec<Edit>,
    /// The scenario with the edits applied: replay it with `log`.
    pub scenario: Scenario,
    /// The non-zero draws (position, value) that still fail.
    pub log: Vec<(usize, Draw)>,
    /// The failure they produce.
    pub violation: String,
    /// Runs the shrinker made.
    pub runs: usize,
    /// Non-zero draws before shrinking.
    pub original: usize,
    /// A ready-to-paste regression test. It starts from
    /// `scenarios::by_name`: for a scenario built by hand, start from that
    /// instead.
    pub test: String,
}

fn signature(r: &Run) -> Option<String> {
    r.violations.first().map(|v| v.what.chars().filter(|c| !c.is_ascii_digit()).collect())
}

fn sparse(dense: &[Draw]) -> Vec<(usize, Draw)> {
    dense.iter().enumerate().filter(|(_, v)| **v != 0).map(|(i, v)| (i, *v)).collect()
}

/// The shrinker's state: the best failing scenario and log so far.
struct Shrinker {
    seed: u64,
    want: String,
    scenario: Scenario,
    edits: Vec<Edit>,
    best: Vec<Draw>,
    runs: usize,
    budget: usize,
}

impl Shrinker {
    fn spent(&self) -> bool {
        self.runs >= self.budget
    }

    /// Runs `scenario` with the draws `log`; `Some(run)` if it fails the
    /// same way.
    fn try_run(&mut self, scenario: &Scenario, log: &[Draw]) -> Option<Run> {
        self.runs += 1;
        let r = replay(scenario, self.seed, &sparse(log));
        (signature(&r).as_deref() == Some(self.want.as_str())).then_some(r)
    }

    fn fails(&mut self, log: &[Draw]) -> bool {
        let s = self.scenario.clone();
        self.try_run(&s, log).is_some()
    }

    /// Keeps `edit` if the run still fails with it. The kept run's own
    /// log (what it drew with the edit) becomes the best log.
    fn try_edit(&mut self, edit: Edit) -> bool {
        if self.spent() {
            return false;
        }
        let mut s = self.scenario.clone();
        edit.apply(&mut s);
        let best = self.best.clone();
        match self.try_run(&s, &best) {
            Some(r) => {
                self.scenario = s;
                self.best = r.log;
                self.edits.push(edit);
                true
            }
            None => false,
        }
    }

    /// Halves a count (to `min`) while the run still fails.
    fn halve(&mut self, min: u64, get: impl Fn(&Scenario) -> u64, edit: impl Fn(u64) -> Edit) {
        loop {
            let n = get(&self.scenario);
            if n <= min || !self.try_edit(edit((n / 2).max(min))) {
                return;
            }
        }
    }

    /// Removes operations: scheduled actions, then clients and traffic.
    fn operations(&mut self) {
        // Later actions first, so a kept removal leaves the indices of the
        // ones still to try unchanged.
        for i in (0..self.scenario.schedule.len()).rev() {
            self.try_edit(Edit::DropAction(i));
        }
        // Clients an action names must stay.
        let named = self
            .scenario
            .schedule
            .iter()
            .filter_map(|(_, a)| match a {
                Action::SetLink(Who::Client(i), ..)
                | Action::Partition(Who::Client(i), _)
                | Action::Heal(Who::Client(i))
                | Action::SetMtu(Who::Client(i), _)
                | Action::Sever(Who::Client(i))
                | Action::BlockDatagrams(Who::Client(i))
                | Action::Rebind(Who::Client(i))
                | Action::CrashClient(Who::Client(i))
                | Action::RestartClient(Who::Client(i))
                | Action::UpdateKey(Who::Client(i))
                | Action::Rekey(Who::Client(i))
                | Action::ClockStep(Some(i), _) => Some(*i as u64 + 1),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        self.halve(named, |s| s.clients as u64, |n| Edit::Clients(n as usize));
        if self.scenario.attacker.is_some() {
            self.try_edit(Edit::NoAttacker);
        }
        if self.scenario.workload.push_interval.is_some() {
            self.try_edit(Edit::NoPush);
        }
        if self.scenario.workload.subscriptions > 0 && !self.try_edit(Edit::Subscriptions(0)) {
            self.halve(1, |s| s.workload.subscriptions as u64, |n| Edit::Subscriptions(n as usize));
            self.halve(2, |s| s.workload.items, Edit::Items);
        }
        self.halve(1, |s| s.workload.messages, Edit::Messages);
    }

    /// Removes choices: the shortest failing prefix, zeroed chunks, then
    /// smaller values.
    fn choices(&mut self) {
        let (mut lo, mut hi) = (0usize, self.best.len());
        while lo < hi && !self.spent() {
            let mid = (lo + hi) / 2;
            let prefix = self.best[..mid].to_vec();
            if self.fails(&prefix) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        self.best.truncate(hi);
        let mut chunk = self.best.len().div_ceil(2).max(1);
        loop {
            let mut start = 0;
            while start < self.best.len() && !self.spent() {
                let end = (start + chunk).min(self.best.len());
                if self.best[start..end].iter().any(|v| *v != 0) {
                    let mut c = self.best.clone();
                    c[start..end].iter_mut().for_each(|v| *v = 0);
                    if self.fails(&c) {
                        self.best = c;
                    }
                }
                start = end;
            }
            if chunk == 1 || self.spent() {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
        for i in 0..self.best.len() {
            while self.best[i] > 1 && !self.spent() {
                let mut c = self.best.clone();
                c[i] /= 2;
                if !self.fails(&c) {
                    break;
                }
                self.best = c;
            }
        }
    }
}

/// Shrinks the failing run of `scenario` from `seed`, making at most
/// `budget` runs. `None` if the run passes.
pub fn shrink(scenario: &Scenario, seed: u64, budget: usize) -> Option<Shrunk> {
    let first = run(scenario, seed);
    let want = signature(&first)?;
    let original = sparse(&first.log).len();
    let mut s =
        Shrinker { seed, want, scenario: scenario.clone(), edits: Vec::new(), best: first.log, runs: 1, budget };
    s.operations();
    s.choices();
    let log = sparse(&s.best);
    let last = replay(&s.scenario, seed, &log);
    let violation = last.violations.first().map_or_else(String::new, |v| v.what.clone());
    let draws: Vec<String> = log.iter().map(|(i, v)| format!("({i}, {v:#x})")).collect();
    let edits: String = s.edits.iter().map(|e| format!("    {}\n", e.code())).collect();
    let test = format!(
        "#[test]\nfn shrunk_{name}_{seed}() {{\n    // {violation}\n    let {mutable}scenario = xtmp_sim::scenarios::by_name({name:?}).unwrap();\n{edits}    let run = xtmp_sim::replay(&scenario, {seed}, &[{draws}]);\n    run.check().unwrap();\n}}\n",
        name = scenario.name,
        mutable = if s.edits.is_empty() { "" } else { "mut " },
        draws = draws.join(", "),
    );
    Some(Shrunk { edits: s.edits, scenario: s.scenario, log, violation, runs: s.runs, original, test })
}
