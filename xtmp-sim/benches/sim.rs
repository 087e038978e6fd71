//! Simulated messages per wall-clock second: one client sends small
//! reliable messages (encrypted with AES-256-GCM, acknowledged, checked by
//! the invariant checker) over a clean link and a 2 %-loss link. The
//! handshake (ML-KEM-1024, ML-DSA-87) is part of each run; with 5,000
//! messages it is a few percent of the time.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xtmp_sim::{LinkConfig, Loss, Scenario, Workload};

const MESSAGES: u64 = 5_000;

fn scenario(name: &str, loss: f64) -> Scenario {
    let mut s = Scenario::new(name);
    s.workload = Workload {
        messages: MESSAGES,
        interval: Duration::from_micros(100),
        small: 64,
        unreliable: 0.0,
        request: 0.0,
        high: 0.0,
        emergency: 0.0,
        push_interval: None,
        ..Workload::default()
    };
    let link =
        LinkConfig { loss: if loss > 0.0 { Loss::Bernoulli(loss) } else { Loss::None }, ..LinkConfig::default() };
    s.links(link)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(MESSAGES));
    g.sample_size(10);
    for (name, loss) in [("clean", 0.0), ("loss_2pct", 0.02)] {
        let s = scenario(name, loss);
        let mut seed = 0;
        g.bench_function(format!("messages_{name}"), |b| {
            b.iter(|| {
                seed += 1;
                let run = xtmp_sim::run(&s, seed);
                assert!(run.passed(), "{:?}", run.violations.first());
                run.totals.delivered
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
