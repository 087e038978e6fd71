//! Bundles confirmed per second through the whole stack (XTMP sessions on
//! loopback, the handlers, the engine's group commit to a redb file, the
//! notary checks, the blocks), against the floor measured in the same
//! run: one notary approval's hybrid signature check (ML-DSA-87 +
//! Ed25519), which the server must do once per bundle.
//!
//! `cargo bench -p xtmp-bpci --bench bundles [--features aws-lc]` prints,
//! for 1 and 64 concurrent submitters: bundles confirmed durably per
//! second and its ratio to `cores / check time`, submit latency p50/p99
//! (the answer comes once the bundle is durably Received), and the delay
//! from a commit to the watcher's item (p50/p99): the time from the
//! engine's head passing an event to a LiveUpdates subscriber on another
//! session receiving it. Under each run it prints the CPU each bundle cost
//! by thread role (approval checks, writer, async runtime) and the bound
//! that CPU alone puts on the rate. `XTMP_BENCH_BUNDLES` sets the bundles per run
//! (default 2,000; the single submitter sends a quarter of them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_adapter::{Endpoint, Transport};
use xtmp_bpci::schema::{self, BundleState, Filter, Hash, Record, SubmitRequest};
use xtmp_bpci::server::{self, Admission};
use xtmp_bpci::{BpciClient, BpciServer, Config, Engine, Notary, RedbStore, Rules, Wallet, service};
use xtmp_core::crypto::{CryptoProvider, RustCrypto};
use xtmp_core::handshake::IdentityKeypair;

fn provider() -> (Arc<dyn CryptoProvider>, &'static str) {
    #[cfg(feature = "aws-lc")]
    return (Arc::new(xtmp_core::crypto::AwsLc), "aws-lc-rs");
    #[cfg(not(feature = "aws-lc"))]
    (Arc::new(RustCrypto), "RustCrypto")
}

fn keys(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap())
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples.get(((samples.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or_default()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn bundles(notary: &Notary, n: usize, tag: u8) -> Vec<SubmitRequest> {
    (0..n)
        .map(|i| {
            let txs = (0..8u32)
                .map(|t| Hash::of(&[&[tag][..], &(i as u32).to_be_bytes(), &t.to_be_bytes()].concat()))
                .collect();
            let bundle = service::bundle_of(txs, 1000, now_ms(), now_ms() + 3_600_000);
            let approvals = vec![notary.approve(&bundle)];
            SubmitRequest { bundle, approvals }
        })
        .collect()
}

/// The floor: one approval check, timed over `n` checks.
fn check_time(p: &dyn CryptoProvider, notary: &Notary, req: &SubmitRequest, n: usize) -> Duration {
    let st = schema::statement::notary_approval(&req.bundle.id());
    let sig = &req.approvals[0].signature;
    assert!(schema::verify(p, notary.public(), &st, sig));
    let t = Instant::now();
    for _ in 0..n {
        assert!(schema::verify(p, notary.public(), &st, sig));
    }
    t.elapsed() / n as u32
}

/// On-CPU time of this process's threads by role (from
/// `/proc/self/task/*/schedstat`, Linux), to show where a bundle's CPU
/// goes: the approval checks, the writer, and the async runtime (both
/// ends of every session: clients, server, watcher).
#[derive(Clone, Copy, Default)]
struct Cpu {
    verify: Duration,
    writer: Duration,
    runtime: Duration,
    other: Duration,
}

impl Cpu {
    fn now() -> Cpu {
        let mut cpu = Cpu::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return cpu };
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let ns: u64 = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
                .unwrap_or(0);
            let t = Duration::from_nanos(ns);
            match comm.trim() {
                c if c.starts_with("bpci-verify") => cpu.verify += t,
                "bpci-writer" => cpu.writer += t,
                c if c.starts_with("tokio-runtime") || c.starts_with("tokio-rt") => cpu.runtime += t,
                _ => cpu.other += t,
            }
        }
        cpu
    }

    /// CPU per bundle since `before`, for `n` bundles (threads that ended
    /// meanwhile are not counted).
    fn per_bundle(self, before: Cpu, n: usize) -> Cpu {
        let d = |a: Duration, b: Duration| a.saturating_sub(b) / n.max(1) as u32;
        Cpu {
            verify: d(self.verify, before.verify),
            writer: d(self.writer, before.writer),
            runtime: d(self.runtime, before.runtime),
            other: d(self.other, before.other),
        }
    }

    fn total(&self) -> Duration {
        self.verify + self.writer + self.runtime + self.other
    }
}

struct Run {
    cpu: Cpu,
    per_second: f64,
    submit: (Duration, Duration),
    watch: (Duration, Duration),
    commits: u64,
    blocks: u64,
    write: Duration,
}

async fn run(submitters: usize, reqs: Vec<SubmitRequest>, notary: &Notary) -> Run {
    let (p, _) = provider();
    let dir = tempfile::tempdir().unwrap();
    // The server signs each block with its identity: through the provider.
    let identity = Arc::new(IdentityKeypair::generate(&*p, &mut ChaCha20Rng::from_seed([1; 32])).unwrap());
    let rules = Rules::new(Config::default(), p.clone(), identity.clone());
    let store = Arc::new(RedbStore::open(dir.path().join("bench.redb")).unwrap());
    let engine = Engine::start(store, rules, 0).unwrap();
    let rt = xtmp_tokio::Tokio::shared();
    let setup = server::setup(identity.clone(), p.clone(), Admission::Open);
    let listeners = [(Transport::Tcp, "127.0.0.1:0".parse().unwrap())];
    let srv = BpciServer::start(rt.clone(), setup, &listeners, engine.clone()).await.unwrap();
    let endpoint = Endpoint::from_addr(Transport::Tcp, srv.local_addr());
    let connect = |node: u8| {
        let (rt, endpoint, p) = (rt.clone(), endpoint.clone(), p.clone());
        let mut setup = BpciClient::setup(keys(node), identity.public().clone());
        let mut c = (*setup.client).clone();
        c.provider = p;
        setup.client = Arc::new(c);
        let server = identity.public().clone();
        async move { BpciClient::connect_with(rt, &endpoint, setup, server).await.unwrap() }
    };
    let admin = connect(10).await;
    let owner = Wallet::from_keys(keys(20));
    admin.register_wallet(&owner).await.unwrap();
    let record = Record::notary(notary.name.clone(), notary.public().clone(), owner.id());
    admin.registry_update(&owner, record, 0).await.unwrap();

    // When the engine's head passes each sequence number (in process,
    // right after the commit), and when the watcher receives its event.
    let committed: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    {
        let (engine, committed) = (engine.clone(), committed.clone());
        tokio::spawn(async move {
            let mut seen = engine.head();
            loop {
                engine.wait_beyond(seen).await;
                let head = engine.head();
                if head == seen {
                    return;
                }
                let t = Instant::now();
                let mut c = committed.lock().unwrap();
                for s in seen + 1..=head {
                    c.insert(s, t);
                }
                seen = head;
            }
        });
    }
    let watcher = connect(11).await;
    let mut live = watcher.live_updates(Filter::default(), None).await.unwrap();
    let total = reqs.len();
    let watched = tokio::spawn(async move {
        let mut arrivals = Vec::with_capacity(total * 3);
        let mut confirmed = 0;
        while confirmed < total {
            let e = live.next().await.expect("the watcher's stream");
            arrivals.push((e.seq, Instant::now()));
            if e.state == Some(BundleState::Confirmed) {
                confirmed += 1;
            }
        }
        (arrivals, Instant::now())
    });

    let sessions = submitters.clamp(1, 4);
    let mut clients = Vec::new();
    for i in 0..sessions {
        clients.push(connect(30 + i as u8).await);
    }
    let queue = Arc::new(Mutex::new(reqs));
    let start = Instant::now();
    let before = engine.stats();
    let cpu_before = Cpu::now();
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let (c, queue) = (clients[s % sessions].clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let Some(req) = queue.lock().unwrap().pop() else { return lat };
                let t = Instant::now();
                c.submit(&req).await.unwrap();
                lat.push(t.elapsed());
            }
        }));
    }
    let mut submit = Vec::new();
    for t in tasks {
        submit.extend(t.await.unwrap());
    }
    let (arrivals, done) = watched.await.unwrap();
    let elapsed = done - start;
    let after = engine.stats();
    let cpu = Cpu::now().per_bundle(cpu_before, total);
    let mut watch: Vec<Duration> = {
        let committed = committed.lock().unwrap();
        arrivals.iter().filter_map(|(seq, at)| committed.get(seq).map(|c| at.saturating_duration_since(*c))).collect()
    };
    srv.shutdown(Duration::from_secs(1)).await;
    Run {
        cpu,
        per_second: total as f64 / elapsed.as_secs_f64(),
        submit: (percentile(&mut submit, 0.5), percentile(&mut submit, 0.99)),
        watch: (percentile(&mut watch, 0.5), percentile(&mut watch, 0.99)),
        commits: after.commits - before.commits,
        blocks: after.blocks - before.blocks,
        write: Duration::from_micros(after.write_micros - before.write_micros),
    }
}

fn n_of(submitters: usize, n: usize) -> usize {
    if submitters == 1 { n / 4 } else { n }
}

fn main() {
    let n: usize = std::env::var("XTMP_BENCH_BUNDLES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let (p, name) = provider();
    let notary = Notary::new("notary-1", keys(4));
    eprintln!("signing {} bundles' approvals...", n + n / 4);
    let many = bundles(&notary, n, 1);
    let one = bundles(&notary, n / 4, 2);
    let check = check_time(&*p, &notary, &many[0], 200);
    let floor = cores as f64 / check.as_secs_f64();
    println!("provider {name}, {cores} cores: one approval check {check:.1?}: floor {floor:.0} bundles/s");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let _entered = rt.enter();
    for (submitters, reqs) in [(1, one), (64, many)] {
        let r = rt.block_on(run(submitters, reqs, &notary));
        println!(
            "{submitters:>2} submitters: {:.0} bundles confirmed/s ({:.2} of the floor, target >= 0.70 at 64), \
             submit p50 {:.2?} p99 {:.2?}, commit -> watcher p50 {:.0?} p99 {:.0?} (target < 1 ms), \
             {} commits ({:.0} bundles each, {:.2?} each, writer busy {:.0}% of the run), {} blocks",
            r.per_second,
            r.per_second / floor,
            r.submit.0,
            r.submit.1,
            r.watch.0,
            r.watch.1,
            r.commits,
            n_of(submitters, n) as f64 / r.commits.max(1) as f64,
            r.write / r.commits.max(1) as u32,
            100.0 * r.write.as_secs_f64() * r.per_second / n_of(submitters, n) as f64,
            r.blocks,
        );
        let c = r.cpu;
        println!(
            "   CPU per bundle {:.0?}: approval checks {:.0?}, writer {:.0?}, async runtime (clients, server, watcher) \
             {:.0?}, other {:.0?}; {cores} cores bound it to {:.0} bundles/s ({:.2} of the floor)",
            c.total(),
            c.verify,
            c.writer,
            c.runtime,
            c.other,
            cores as f64 / c.total().as_secs_f64(),
            cores as f64 / c.total().as_secs_f64() / floor,
        );
    }
}
