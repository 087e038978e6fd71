//! 1,000 sessions at once against a real `xtmp serve` on loopback, over
//! TCP and then over UDP (issue 42: "the 1,000-session UDP load test runs
//! with a p99 within 2x of TCP's").
//!
//! One process of the bench opens the sessions together (as a fleet of
//! BPI nodes does after a deploy), then each session makes a 64-byte echo
//! request every `XTMP_LOAD_INTERVAL_MS` (default 50, so 20,000 requests a
//! second in all), their phases spread evenly over the interval, for `XTMP_LOAD_SECONDS`
//! (default 8). A request that takes longer than the interval delays the
//! session's next one (closed loop), so an overloaded server shows as
//! latency, not as a queue that grows without end. Per transport it
//! prints the requests answered per second, p50/p99/p99.9/max, the
//! retransmissions and losses the clients counted, and the server's CPU;
//! then the UDP p99 as a multiple of the TCP p99 (target: within 2x).
//!
//! `cargo bench -p xtmp-cli --bench load` (Linux: it reads `/proc`).
//! `XTMP_LOAD_SESSIONS` changes the number of sessions. It prints figures
//! and a verdict; it fails only if the server dies or a request fails.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use xtmp_tokio::xtmp_core::wire::MessageType;
use xtmp_tokio::{Client, ClientSetup, Endpoint};

use common::{Serve, percentile};

/// `xtmp serve`'s echo type.
const ECHO: MessageType = MessageType(0x50);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Figures {
    answered: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    retransmissions: u64,
    lost: u64,
    server_cpu: f64,
    connect: Duration,
}

/// Opens `n` sessions over `endpoint`, all at once.
async fn open(endpoint: &Endpoint, n: usize) -> Vec<Client> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let setup = ClientSetup::registry(None, false);
                Client::connect_to(&endpoint, setup).await
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(n);
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("a connect task") {
            Ok(c) => clients.push(c),
            Err(e) => panic!("session {i} did not connect: {e}"),
        }
    }
    clients
}

async fn run(scheme: &str, sessions: usize, interval: Duration, window: Duration) -> Figures {
    let mut serve = Serve::start(&["--listen", "xtmp+hybrid://127.0.0.1:0"]);
    let endpoint = serve.endpoint(scheme);
    let started = Instant::now();
    let clients = open(&endpoint, sessions).await;
    let connect = started.elapsed();
    let before: Vec<_> = clients.iter().map(|c| c.stats().session).collect();
    let cpu = serve.cpu();
    let t0 = Instant::now();
    let until = t0 + window;
    let body = Bytes::from(vec![0x5a; 64]);
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, c)| {
            let body = body.clone();
            // Phases spread evenly over the interval.
            let phase = interval.as_micros() as u64 * i as u64 / sessions as u64;
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut next = Instant::now() + Duration::from_micros(phase);
                loop {
                    tokio::time::sleep_until(next.into()).await;
                    if Instant::now() >= until {
                        break;
                    }
                    let t = Instant::now();
                    c.request(ECHO, body.clone()).await.expect("an echo");
                    lat.push(t.elapsed());
                    next = (next + interval).max(Instant::now());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("a session task"));
    }
    let elapsed = t0.elapsed();
    let server_cpu = (serve.cpu() - cpu).as_secs_f64() / elapsed.as_secs_f64();
    let (mut retransmissions, mut lost) = (0, 0);
    for (c, b) in clients.iter().zip(&before) {
        let s = c.stats().session;
        retransmissions += s.retransmissions - b.retransmissions;
        lost += s.lost - b.lost;
    }
    assert!(serve.alive(), "the server died");
    for c in clients {
        c.abort();
    }
    Figures {
        answered: lat.len(),
        per_second: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&mut lat, 0.5),
        p99: percentile(&mut lat, 0.99),
        p999: percentile(&mut lat, 0.999),
        max: percentile(&mut lat, 1.0),
        retransmissions,
        lost,
        server_cpu,
        connect,
    }
}

fn main() {
    let sessions = env_or("XTMP_LOAD_SESSIONS", 1000) as usize;
    let interval = Duration::from_millis(env_or("XTMP_LOAD_INTERVAL_MS", 50));
    let window = Duration::from_secs(env_or("XTMP_LOAD_SECONDS", 8));
    let rt = Arc::new(tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime"));
    println!(
        "{sessions} sessions, a 64 B echo request from each every {interval:?} ({:.0}/s offered), {window:?} per transport",
        sessions as f64 / interval.as_secs_f64()
    );
    let mut p99 = Vec::new();
    for (label, scheme) in [("TCP", "xtmp"), ("UDP", "xtmp+udp")] {
        let f = rt.block_on(run(scheme, sessions, interval, window));
        println!(
            "{label}: {sessions} sessions up in {:.0?}; {} answered ({:.0}/s); p50 {:.0?} p99 {:.0?} p99.9 {:.0?} max {:.0?}; {} retransmissions, {} lost; server {:.0}% of a core",
            f.connect,
            f.answered,
            f.per_second,
            f.p50,
            f.p99,
            f.p999,
            f.max,
            f.retransmissions,
            f.lost,
            f.server_cpu * 100.0
        );
        p99.push(f.p99);
    }
    let ratio = p99[1].as_secs_f64() / p99[0].as_secs_f64();
    let verdict = if ratio <= 2.0 { "meets" } else { "MISSES" };
    println!("UDP p99 / TCP p99 = {ratio:.2}x ({verdict} 2x)");
}
