//! Goodput of a bulk transfer over a simulated datagram path, against the
//! path's capacity, at 0 %, 1 % and 5 % random loss (SPEC.md section 4:
//! acknowledgements, loss recovery, NewReno with pacing, path MTU
//! discovery). Virtual time, so the figures do not depend on the machine:
//! one client sends 128 reliable messages of up to 16 KiB (about 1 MB) at
//! once over a 10 Mbit/s path with a 40 ms round trip and a queue of two
//! bandwidth-delay products, the loss lasting until every message is
//! acknowledged; goodput is the application bytes the server got divided
//! by the time from the first send to the last delivery (slow start
//! included).
//!
//! The reference for the lossy rows is the Mathis et al. bound for a Reno
//! sender, `MSS / RTT × √(3/2) / √p`: no Reno-style controller can do
//! much better under random loss, whatever the capacity.
//!
//! `cargo bench -p xtmp-sim --bench goodput` (it prints a table; every run
//! is also checked by the simulator's invariant checker).

use std::time::Duration;

use xtmp_sim::{LinkConfig, Loss, Scenario, Workload};

/// Bytes per second: 10 Mbit/s.
const CAPACITY: u64 = 1_250_000;
const ONE_WAY: Duration = Duration::from_millis(20);
const MESSAGES: u64 = 128;
const MESSAGE: usize = 16 * 1024;
const SEEDS: u64 = 8;

fn scenario(loss: f64) -> Scenario {
    let mut s = Scenario::new("goodput");
    s.workload = Workload {
        messages: MESSAGES,
        interval: Duration::ZERO,
        small: MESSAGE,
        large_chance: 0.0,
        unreliable: 0.0,
        request: 0.0,
        high: 0.0,
        emergency: 0.0,
        push_interval: None,
        ..Workload::default()
    };
    let bdp = (CAPACITY as f64 * 2.0 * ONE_WAY.as_secs_f64()) as usize;
    let link = LinkConfig {
        loss: if loss > 0.0 { Loss::Bernoulli(loss) } else { Loss::None },
        bandwidth: Some(CAPACITY),
        queue: 2 * bdp,
        mtu: 1500,
        ..LinkConfig::clean(ONE_WAY)
    };
    s.hold_faults = true;
    s.links(link)
}

/// Mean goodput (bytes per second) and retransmissions per run.
fn measure(loss: f64) -> (f64, f64) {
    let s = scenario(loss);
    let (mut goodput, mut retransmissions) = (0.0, 0.0);
    for seed in 1..=SEEDS {
        let run = xtmp_sim::run(&s, seed);
        assert!(run.passed(), "seed {seed}: {:?}", run.violations.first());
        let t = run.totals;
        let (Some(first), Some(last)) = (t.first_sent_at, t.last_delivered_at) else {
            panic!("seed {seed}: nothing delivered")
        };
        goodput += t.delivered_bytes as f64 / ((last - first) as f64 / 1e9);
        retransmissions += run.counters.retransmissions as f64;
    }
    (goodput / SEEDS as f64, retransmissions / SEEDS as f64)
}

fn main() {
    let rtt = 2.0 * ONE_WAY.as_secs_f64();
    println!(
        "goodput: {MESSAGES} reliable messages of up to {} KiB, {:.0} Mbit/s path, {:.0} ms RTT, mean of {SEEDS} seeds",
        MESSAGE / 1024,
        CAPACITY as f64 * 8.0 / 1e6,
        rtt * 1e3
    );
    println!(
        "{:>6}  {:>12}  {:>12}  {:>14}  {:>16}",
        "loss", "goodput", "/ capacity", "retransmitted", "/ Mathis bound"
    );
    for loss in [0.0, 0.01, 0.05] {
        let (goodput, retransmissions) = measure(loss);
        // Mathis: MSS / RTT × sqrt(3/2) / sqrt(p), at most the capacity.
        let mss = 1452.0;
        let mathis = if loss > 0.0 { (mss / rtt * 1.5f64.sqrt() / loss.sqrt()).min(CAPACITY as f64) } else { f64::NAN };
        println!(
            "{:>5.0}%  {:>8.3} MB/s  {:>12.3}  {:>14.0}  {:>16}",
            loss * 100.0,
            goodput / 1e6,
            goodput / CAPACITY as f64,
            retransmissions,
            if mathis.is_nan() { "-".to_string() } else { format!("{:.3}", goodput / mathis) },
        );
    }
}
