//! The BPCI application in the deterministic simulator: a BPCI server on
//! the in-memory store and BPI nodes with outboxes and watchers, over
//! XTMP sessions under loss, partitions, server and client crashes; the
//! invariants are `app.rs`'s (every bundle ends once, as expected, and is
//! confirmed at most once; watchers see every transition once and in
//! order; the supply is conserved; receipts verify; outboxes stay
//! bounded) on top of the simulator's own.
//!
//! `XTMP_SIM_SEEDS=N cargo test -p xtmp-bpci --test simulated` runs N
//! fresh seeds per scenario (default 8) after the seeds that once failed
//! (`simulated/seeds.txt`).

#[path = "simulated/app.rs"]
mod app;

use std::time::Duration;

use xtmp_sim::{Action, AppSpec, Latency, LinkConfig, Loss, Mark, Scenario, Transport, Who};

use app::{BpciApp, Workload};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn bpci(name: &str, nodes: usize, w: Workload) -> Scenario {
    let mut s = Scenario::new(name);
    s.clients = nodes;
    s.workload.messages = 0;
    s.app = Some(AppSpec::new("bpci", move |_seed, clients| Box::new(BpciApp::new(w, clients))));
    s.session.heartbeat_interval = Some(Duration::from_secs(1));
    s.time_limit = Duration::from_secs(300);
    s
}

/// Three nodes over datagrams that lose, duplicate and reorder.
fn lossy() -> Scenario {
    bpci("bpci_lossy", 3, Workload::default()).links(LinkConfig {
        latency: Latency::Uniform(ms(2), ms(25)),
        loss: Loss::Bernoulli(0.1),
        duplicate: 0.05,
        reorder: 0.1,
        hold_back: ms(60),
        ..LinkConfig::default()
    })
}

/// The BPCI server is killed twice while nodes submit, and restarts on the
/// same store; its sessions are gone, the nodes reconnect and resend.
fn server_restart() -> Scenario {
    let mut s = bpci("bpci_server_restart", 3, Workload::default())
        .at(ms(300), Action::CrashServer)
        .at(ms(700), Action::RestartServer)
        .at(ms(1_100), Action::CrashServer)
        .at(ms(1_300), Action::RestartServer)
        .expect(&[Mark::Reconnect]);
    s.transport = Transport::Hybrid;
    s.stateless_reset = true;
    s.lossless = false;
    s
}

/// BPI nodes crash between submitting and hearing the answer, and restart
/// with their outbox and cursor; a partition cuts one node off meanwhile.
fn client_restart() -> Scenario {
    let mut s = bpci("bpci_client_restart", 3, Workload::default())
        .links(LinkConfig { latency: Latency::Uniform(ms(1), ms(10)), ..LinkConfig::default() })
        .at(ms(250), Action::CrashClient(Who::Client(0)))
        .at(ms(500), Action::RestartClient(Who::Client(0)))
        .at(ms(600), Action::Partition(Who::Client(1), None))
        .at(ms(1_400), Action::Heal(Who::Client(1)))
        .at(ms(900), Action::CrashClient(Who::Client(2)))
        .at(ms(1_000), Action::RestartClient(Who::Client(2)))
        .expect(&[Mark::Reconnect]);
    s.transport = Transport::Stream;
    s.lossless = false;
    s.idle_timeout = Duration::from_secs(3);
    s
}

/// Link faults and recoverable events drawn from the seed.
fn swarm() -> Scenario {
    let mut s = bpci("bpci_swarm", 2, Workload { bundles: 4, transfers: 2, ..Workload::default() });
    s.swarm = true;
    s.swarm_events = true;
    s.lossless = false;
    s
}

/// Seeds of `scenario` that once failed (`simulated/seeds.txt`), replayed
/// first.
fn regressions(scenario: &str) -> Vec<u64> {
    include_str!("simulated/seeds.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| *name == scenario)
        .map(|(_, seed)| seed.trim().parse().expect("a seed in simulated/seeds.txt"))
        .collect()
}

fn sweep(s: &Scenario) {
    let n: u64 = std::env::var("XTMP_SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let fresh = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let seeds = regressions(&s.name).into_iter().chain((0..n).map(|k| fresh.wrapping_add(k * 0x9e37_79b9)));
    let mut marks = std::collections::BTreeSet::new();
    for seed in seeds {
        let run = xtmp_sim::run(s, seed);
        if let Err(e) = run.check() {
            panic!("{} seed {seed}: {e}\n{}", s.name, run.app.unwrap_or_default());
        }
        marks.extend(run.marks.iter().copied());
        eprintln!("{} seed {seed}: {} in {:?} simulated", s.name, run.app.unwrap_or_default(), run.elapsed);
    }
    for m in &s.marks {
        assert!(marks.contains(m), "{}: no run reached {m:?}", s.name);
    }
}

#[test]
fn bpci_lossy() {
    sweep(&lossy());
}

#[test]
fn bpci_server_restart() {
    sweep(&server_restart());
}

#[test]
fn bpci_client_restart() {
    sweep(&client_restart());
}

#[test]
fn bpci_swarm() {
    sweep(&swarm());
}
