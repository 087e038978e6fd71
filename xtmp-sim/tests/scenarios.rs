//! Every shipped scenario, swept over seeds; the determinism and replay
//! meta-tests; the regression seeds.
//!
//! `XTMP_SIM_SEED=<n>` runs one seed of whichever scenarios are selected
//! (`cargo test -p xtmp-sim --test scenarios lossy`); `XTMP_SIM_SEEDS=<n>`
//! sweeps seeds `0..n` instead of each scenario's default.

use std::env;

use xtmp_sim::scenarios::by_name;
use xtmp_sim::{Action, Mark, Who};

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = env::var("XTMP_SIM_SEED") {
        return vec![s.parse().expect("XTMP_SIM_SEED must be a u64")];
    }
    let n = env::var("XTMP_SIM_SEEDS").map_or(default, |s| s.parse().expect("XTMP_SIM_SEEDS must be a u64"));
    (0..n).collect()
}

fn sweep(name: &str, default: u64) {
    let scenario = by_name(name).expect("a shipped scenario");
    let s = xtmp_sim::sweep(&scenario, seeds(default));
    if let Err(e) = s.check() {
        panic!("{e}");
    }
    assert!(s.messages > 0, "{name}: no message was sent");
}

#[test]
fn hello_flood() {
    sweep("hello_flood", 20);
}

#[test]
fn off_path_forgeries() {
    sweep("off_path_forgeries", 20);
}

#[test]
fn tcp_hello_flood() {
    sweep("tcp_hello_flood", 20);
}

#[test]
fn stalled_streams() {
    sweep("stalled_streams", 20);
}

#[test]
fn nat_burst() {
    sweep("nat_burst", 20);
}

#[test]
fn clean() {
    sweep("clean", 6);
}

#[test]
fn lossy() {
    sweep("lossy", 200);
}

#[test]
fn corruption() {
    sweep("corruption", 200);
}

#[test]
fn partition_heals() {
    sweep("partition_heals", 200);
}

#[test]
fn partition_idle() {
    sweep("partition_idle", 200);
}

#[test]
fn server_restart() {
    sweep("server_restart", 200);
}

#[test]
fn server_restart_reset() {
    sweep("server_restart_reset", 200);
}

#[test]
fn client_restart() {
    sweep("client_restart", 100);
}

#[test]
fn key_rotation() {
    sweep("key_rotation", 60);
}

#[test]
fn many_clients() {
    sweep("many_clients", 20);
}

#[test]
fn large_messages() {
    sweep("large_messages", 20);
}

#[test]
fn shared_reassembly() {
    sweep("shared_reassembly", 20);
}

#[test]
fn subscriptions() {
    sweep("subscriptions", 20);
}

#[test]
fn attacker() {
    sweep("attacker", 200);
}

#[test]
fn stream_severed() {
    sweep("stream_severed", 200);
}

#[test]
fn hybrid() {
    sweep("hybrid", 200);
}

#[test]
fn hybrid_udp_blocked() {
    sweep("hybrid_udp_blocked", 200);
}

#[test]
fn nat_rebinding() {
    sweep("nat_rebinding", 200);
}

#[test]
fn clock_faults() {
    sweep("clock_faults", 200);
}

#[test]
fn mtu_change() {
    sweep("mtu_change", 200);
}

#[test]
fn path_mtu() {
    sweep("path_mtu", 100);
}

#[test]
fn cookies() {
    sweep("cookies", 100);
}

#[test]
fn slow_reader() {
    sweep("slow_reader", 200);
}

#[test]
fn swarm() {
    sweep("swarm", 300);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let s = by_name("swarm").unwrap();
    for seed in [3, 77] {
        let a = xtmp_sim::run(&s, seed);
        let b = xtmp_sim::run(&s, seed);
        assert!(a.events > 1000, "a real run: {} events", a.events);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} ran twice differently");
        assert_eq!(a.log, b.log);
        assert_eq!(a.totals, b.totals);
    }
    assert_ne!(xtmp_sim::run(&s, 3).trace_hash, xtmp_sim::run(&s, 4).trace_hash);
}

#[test]
fn a_replayed_decision_log_reproduces_the_run() {
    let s = by_name("lossy").unwrap();
    let a = xtmp_sim::run(&s, 11);
    let log: Vec<(usize, u32)> = a.log.iter().copied().enumerate().collect();
    let b = xtmp_sim::replay(&s, 11, &log);
    assert_eq!(a.trace_hash, b.trace_hash);
    // An all-zero log is the same scenario with every fault off.
    let calm = xtmp_sim::replay(&s, 11, &[]);
    calm.check().unwrap();
    assert_ne!(calm.trace_hash, a.trace_hash);
    assert_eq!(calm.counters.dropped, 0, "draw 0 never drops");
}

#[test]
fn the_trace_lines_match_the_hash_and_parse_as_json() {
    let s = by_name("nat_rebinding").unwrap();
    let opts = xtmp_sim::Options { trace: xtmp_sim::TraceMode::Json, ..Default::default() };
    let a = xtmp_sim::run_with(&s, 5, &opts);
    let b = xtmp_sim::run(&s, 5);
    assert_eq!(a.trace_hash, b.trace_hash, "tracing must not change the run");
    assert_eq!(a.trace.len() as u64, a.events);
    for line in a.trace.iter().take(500) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["t_ns"].is_u64() && v["node"].is_string());
    }
}

#[test]
fn regression_seeds() {
    let text = include_str!("../regressions/seeds.txt");
    let mut n = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, seed) = line.split_once(' ').expect("`scenario seed`");
        let scenario = by_name(name).unwrap_or_else(|| panic!("unknown scenario {name}"));
        let run = xtmp_sim::run(&scenario, seed.trim().parse().expect("a u64 seed"));
        if let Err(f) = run.check() {
            panic!("{f}");
        }
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn a_broken_promise_is_caught_and_shrunk() {
    // A session lost to a partition longer than the idle timeout, in a
    // scenario that promises no loss: the run must fail, and the shrinker
    // must keep that failure while dropping almost every random choice.
    let mut s = by_name("partition_idle").unwrap();
    s.name = "partition_idle".into();
    s.lossless = true;
    s.workload.messages = 40;
    s.schedule.retain(|(_, a)| !matches!(a, Action::Heal(_)));
    s = s.at(std::time::Duration::from_secs(12), Action::Heal(Who::All));
    let needed = s.schedule.clone();
    // Two actions the failure does not need.
    s = s
        .at(std::time::Duration::from_millis(100), Action::UpdateKey(Who::All))
        .at(std::time::Duration::from_millis(300), Action::Rebind(Who::Client(0)));
    let run = xtmp_sim::run(&s, 9);
    let failure = run.check().expect_err("the checker must catch it");
    assert!(failure.to_string().contains("XTMP_SIM_SEED=9"), "{failure}");
    let shrunk = xtmp_sim::shrink(&s, 9, 300).expect("it fails");
    assert!(shrunk.log.len() < shrunk.original, "{} of {}", shrunk.log.len(), shrunk.original);
    assert!(shrunk.violation.contains("lossless"), "{}", shrunk.violation);
    // Operations went too: the partition and its late heal must stay
    // (the faults stop once the schedule is done), but most messages and
    // the server's pushes are not needed.
    let kept = &shrunk.scenario;
    assert!(kept.workload.messages < 40, "{:?}", shrunk.edits);
    assert!(kept.workload.push_interval.is_none(), "{:?}", shrunk.edits);
    assert_eq!(kept.schedule, needed);
    assert!(shrunk.edits.contains(&xtmp_sim::Edit::DropAction(0)), "{:?}", shrunk.edits);
    // The edits, applied in order, give that scenario; with the log, it
    // still fails.
    let mut again = s.clone();
    shrunk.edits.iter().for_each(|e| e.apply(&mut again));
    assert_eq!(again.describe(), kept.describe());
    assert!(xtmp_sim::replay(&again, 9, &shrunk.log).check().is_err());
    for e in &shrunk.edits {
        assert!(shrunk.test.contains(&e.code()), "{}", shrunk.test);
    }
    assert!(shrunk.test.contains("#[test]") && shrunk.test.contains("xtmp_sim::replay"));
}

#[test]
fn marks_reflect_what_happened() {
    let clean = xtmp_sim::run(&by_name("clean").unwrap(), 1);
    clean.check().unwrap();
    for m in [Mark::Retransmission, Mark::Probe, Mark::Reconnect, Mark::MessageFailed, Mark::IdleTimeout] {
        assert!(!clean.marks.contains(&m), "a clean run reached {m:?}");
    }
    assert_eq!(clean.totals.sent, 10_000);
    assert_eq!(clean.totals.delivered, 10_000);
    assert_eq!(clean.counters.dropped, 0);
}

/// Seeds of `scenario` listed in `regressions/open.txt`: known, open bugs.
fn open_seeds(scenario: &str) -> Vec<u64> {
    include_str!("../regressions/open.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| *name == scenario)
        .map(|(_, seed)| seed.trim().parse().expect("a u64 seed"))
        .collect()
}

#[test]
fn swarm_events() {
    // Every seed but the open bugs listed in regressions/open.txt, which
    // `open_seeds_still_fail` keeps honest.
    let open = open_seeds("swarm_events");
    let scenario = by_name("swarm_events").expect("a shipped scenario");
    let seeds: Vec<u64> = seeds(500).into_iter().filter(|s| !open.contains(s)).collect();
    let s = xtmp_sim::sweep(&scenario, seeds);
    if let Err(e) = s.check() {
        panic!("{e}");
    }
}

#[test]
fn open_seeds_still_fail() {
    // A seed in open.txt that passes was fixed: move it to seeds.txt, so
    // that it guards the fix instead of being skipped.
    let open = open_seeds("swarm_events");
    assert!(open.len() <= 20, "open.txt is a short list of known bugs, not a way to silence a sweep");
    let scenario = by_name("swarm_events").expect("a shipped scenario");
    for seed in open {
        assert!(
            xtmp_sim::run(&scenario, seed).check().is_err(),
            "swarm_events seed {seed} passes now: move it from regressions/open.txt to seeds.txt"
        );
    }
}
