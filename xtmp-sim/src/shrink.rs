//! Shrinking a failing run to the fewest network choices that still fail.
//!
//! A run's decision log is a list of draws where `0` always means the
//! simplest outcome (no fault, the least delay, the smallest message). The
//! shrinker replays edited logs: first the shortest prefix that still
//! fails (later draws become 0), then zeroing ever smaller chunks, then
//! halving single draws; an edit is kept when the run still fails the same
//! way (the first violation's text, digits aside). What remains is a
//! handful of non-zero draws: the faults that matter.

use crate::choices::Draw;
use crate::scenario::Scenario;
use crate::{Run, replay, run};

/// A shrunk failure.
#[derive(Debug)]
pub struct Shrunk {
    /// The non-zero draws (position, value) that still fail.
    pub log: Vec<(usize, Draw)>,
    /// The failure they produce.
    pub violation: String,
    /// Runs the shrinker made.
    pub runs: usize,
    /// Non-zero draws before shrinking.
    pub original: usize,
    /// A ready-to-paste regression test.
    pub test: String,
}

fn signature(r: &Run) -> Option<String> {
    r.violations.first().map(|v| v.what.chars().filter(|c| !c.is_ascii_digit()).collect())
}

fn sparse(dense: &[Draw]) -> Vec<(usize, Draw)> {
    dense.iter().enumerate().filter(|(_, v)| **v != 0).map(|(i, v)| (i, *v)).collect()
}

/// Shrinks the failing run of `scenario` from `seed`, making at most
/// `budget` runs. `None` if the run passes.
pub fn shrink(scenario: &Scenario, seed: u64, budget: usize) -> Option<Shrunk> {
    let first = run(scenario, seed);
    let want = signature(&first)?;
    let mut best: Vec<Draw> = first.log.clone();
    let original = sparse(&best).len();
    let mut runs = 1;
    let fails = |candidate: &[Draw], runs: &mut usize| {
        *runs += 1;
        signature(&replay(scenario, seed, &sparse(candidate))).as_deref() == Some(want.as_str())
    };
    // The shortest failing prefix.
    let (mut lo, mut hi) = (0usize, best.len());
    while lo < hi && runs < budget {
        let mid = (lo + hi) / 2;
        if fails(&best[..mid], &mut runs) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    best.truncate(hi);
    // Zero chunks, halving their size.
    let mut chunk = best.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < best.len() && runs < budget {
            let end = (start + chunk).min(best.len());
            if best[start..end].iter().any(|v| *v != 0) {
                let mut c = best.clone();
                c[start..end].iter_mut().for_each(|v| *v = 0);
                if fails(&c, &mut runs) {
                    best = c;
                }
            }
            start = end;
        }
        if chunk == 1 || runs >= budget {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    // Smaller values for what is left.
    for i in 0..best.len() {
        if runs >= budget {
            break;
        }
        while best[i] > 1 && runs < budget {
            let mut c = best.clone();
            c[i] /= 2;
            if !fails(&c, &mut runs) {
                break;
            }
            best = c;
        }
    }
    let log = sparse(&best);
    let last = replay(scenario, seed, &log);
    let violation = last.violations.first().map_or_else(String::new, |v| v.what.clone());
    let draws: Vec<String> = log.iter().map(|(i, v)| format!("({i}, {v:#x})")).collect();
    let test = format!(
        "#[test]\nfn shrunk_{name}_{seed}() {{\n    // {violation}\n    let scenario = xtmp_sim::scenarios::by_name({name:?}).unwrap();\n    let run = xtmp_sim::replay(&scenario, {seed}, &[{draws}]);\n    run.check().unwrap();\n}}\n",
        name = scenario.name,
        draws = draws.join(", "),
    );
    Some(Shrunk { log, violation, runs, original, test })
}
