//! The `xtmp-sim` command: run, sweep and shrink simulator scenarios.
//!
//! ```text
//! xtmp-sim list
//! xtmp-sim run <scenario> [--seed N] [--trace text|json]
//! xtmp-sim sweep [<scenario>|all] [--seeds N] [--from N]
//! xtmp-sim shrink <scenario> --seed N [--budget RUNS]
//! ```
//!
//! `sweep` prints one row per scenario (seeds run, messages, retransmissions,
//! simulated time, failures, marks never reached) and exits non-zero if any
//! run failed; each failure prints the seed and the command that replays it.

use std::process::ExitCode;
use std::time::Instant;

use xtmp_sim::scenarios::{NAMES, by_name};
use xtmp_sim::{Options, TraceMode};

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  xtmp-sim list\n  xtmp-sim run <scenario> [--seed N] [--trace text|json]\n  \
         xtmp-sim sweep [<scenario>|all] [--seeds N] [--from N]\n  xtmp-sim shrink <scenario> --seed N [--budget RUNS]"
    );
    ExitCode::from(2)
}

struct Args {
    positional: Vec<String>,
    seed: Option<u64>,
    seeds: u64,
    from: u64,
    budget: usize,
    trace: TraceMode,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args { positional: Vec::new(), seed: None, seeds: 100, from: 0, budget: 400, trace: TraceMode::Hash };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| v.parse::<u64>().map_err(|_| format!("{name} wants a number, not {v:?}"));
        match arg.as_str() {
            "--seed" => a.seed = Some(number(value("--seed")?, "--seed")?),
            "--seeds" => a.seeds = number(value("--seeds")?, "--seeds")?,
            "--from" => a.from = number(value("--from")?, "--from")?,
            "--budget" => a.budget = number(value("--budget")?, "--budget")? as usize,
            "--trace" => {
                a.trace = match value("--trace")?.as_str() {
                    "text" => TraceMode::Text,
                    "json" => TraceMode::Json,
                    other => return Err(format!("--trace is text or json, not {other:?}")),
                }
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            p => a.positional.push(p.to_string()),
        }
    }
    Ok(a)
}

fn scenario(name: Option<&String>) -> Result<xtmp_sim::Scenario, String> {
    let name = name.ok_or("which scenario? (xtmp-sim list)")?;
    by_name(name).ok_or_else(|| format!("no scenario {name:?} (xtmp-sim list)"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else { return usage() };
    let a = match parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xtmp-sim: {e}");
            return usage();
        }
    };
    let result = match command.as_str() {
        "list" => {
            for n in NAMES {
                println!("{n}");
            }
            Ok(true)
        }
        "run" => run(&a),
        "sweep" => sweep(&a),
        "shrink" => shrink(&a),
        _ => return usage(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtmp-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(a: &Args) -> Result<bool, String> {
    let s = scenario(a.positional.first())?;
    let seed = a.seed.unwrap_or(0);
    let r = xtmp_sim::run_with(&s, seed, &Options { trace: a.trace, ..Options::default() });
    for line in &r.trace {
        println!("{line}");
    }
    eprintln!(
        "{} seed {seed}: {} sent, {} delivered, {} acked, {} retransmissions, {:.3} s simulated, trace {:016x}, marks {:?}",
        s.name,
        r.totals.sent,
        r.totals.delivered,
        r.totals.acked,
        r.counters.retransmissions,
        r.elapsed.as_secs_f64(),
        r.trace_hash,
        r.marks
    );
    match r.check() {
        Ok(()) => Ok(true),
        Err(f) => {
            eprintln!("{f}");
            Ok(false)
        }
    }
}

fn sweep(a: &Args) -> Result<bool, String> {
    let names: Vec<String> = match a.positional.first().map(String::as_str) {
        None | Some("all") => NAMES.iter().map(|s| s.to_string()).collect(),
        Some(n) => vec![n.to_string()],
    };
    println!(
        "{:<16} {:>6} {:>10} {:>9} {:>12} {:>8} {:>6}  missing marks",
        "scenario", "seeds", "messages", "retrans", "simulated s", "wall s", "failed"
    );
    let mut ok = true;
    let mut failures = Vec::new();
    for name in names {
        let s = scenario(Some(&name))?;
        let t = Instant::now();
        let sw = xtmp_sim::sweep(&s, a.from..a.from + a.seeds);
        println!(
            "{:<16} {:>6} {:>10} {:>9} {:>12.1} {:>8.2} {:>6}  {:?}",
            name,
            sw.runs,
            sw.messages,
            sw.retransmissions,
            sw.simulated.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            sw.failures.len(),
            sw.missing
        );
        ok &= sw.check().is_ok();
        failures.extend(sw.failures);
    }
    for f in failures.iter().take(10) {
        println!("\n{f}");
    }
    Ok(ok)
}

fn shrink(a: &Args) -> Result<bool, String> {
    let s = scenario(a.positional.first())?;
    let seed = a.seed.ok_or("shrink needs --seed")?;
    match xtmp_sim::shrink(&s, seed, a.budget) {
        None => {
            println!("{} seed {seed} passes: nothing to shrink", s.name);
            Ok(true)
        }
        Some(r) => {
            println!(
                "shrunk from {} to {} non-zero draws and {} scenario edits in {} runs; it still fails with:\n  {}\n\n{}",
                r.original,
                r.log.len(),
                r.edits.len(),
                r.runs,
                r.violation,
                r.test
            );
            Ok(false)
        }
    }
}
