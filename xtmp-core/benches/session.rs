//! Sessions in steady state: one message through the whole session path
//! (send, seal into the transmit buffer, endpoint demultiplexing, replay
//! check, open, event), next to raw AES-256-GCM seal + open of the same
//! size with the same provider, measured in the same run. Prints the
//! throughput ratio (target: at least 0.8 for 16 KiB messages), messages
//! per second on one core, the reliability layer's CPU per message (a
//! reliable message against an unreliable one), and heap allocations per
//! message on the send and open paths, and the core's CPU for one request
//! round trip (request and response through both ends), alone on its
//! endpoint and among a thousand idle sessions.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use criterion::{Criterion, Throughput};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::{AeadAlgorithm, AeadKey, CryptoProvider, RustCrypto, Secret};
use xtmp_core::endpoint::{EndpointEvent, Remote, RemoteKind};
use xtmp_core::session::{Event, PathId, PathKind, SendOptions, Session};
use xtmp_core::wire::{HEADER_LEN, MessageType, frame_crc};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const SIZES: [usize; 2] = [64, 16 * 1024];

fn providers() -> Vec<std::sync::Arc<dyn CryptoProvider>> {
    #[allow(unused_mut)]
    let mut v: Vec<std::sync::Arc<dyn CryptoProvider>> = vec![std::sync::Arc::new(RustCrypto)];
    #[cfg(feature = "aws-lc")]
    v.push(std::sync::Arc::new(xtmp_core::crypto::AwsLc));
    v
}

fn pair(kind: PathKind) -> Pair {
    pair_on(kind, std::sync::Arc::new(RustCrypto))
}

fn pair_on(kind: PathKind, provider: std::sync::Arc<dyn CryptoProvider>) -> Pair {
    let mut s = Setup::with_providers(kind, provider.clone(), provider);
    // Time stands still here: a paced datagram path would hold messages
    // back once its burst is spent, and a path MTU probe would take window.
    s.session.pacing = false;
    s.session.mtu_discovery = None;
    let mut p = s.start();
    p.connect();
    p
}

/// One reliable message from client to server through both sessions and
/// the endpoint, and its share of the acknowledgements coming back (the
/// server acknowledges every second frame).
fn one_message(p: &mut Pair, body: &Bytes, buf: &mut [u8]) {
    one_message_with(p, body, buf, SendOptions::default())
}

/// The same, with `options` (an unreliable message on a stream path is
/// neither acknowledged nor ordered: the reliability layer is skipped).
fn one_message_with(p: &mut Pair, body: &Bytes, buf: &mut [u8], options: SendOptions) {
    p.client.send(MessageType::BUNDLE_SUBMIT, body.clone(), options).unwrap();
    let t = p.client.poll_transmit(p.now, buf).unwrap().unwrap();
    p.server.handle_input(p.now, p.remote, &buf[..t.len]);
    let mut got = false;
    while let Some(e) = p.server.poll_event() {
        match e {
            EndpointEvent::Session(_, Event::Message(m)) => {
                black_box(m);
                got = true;
            }
            EndpointEvent::Session(_, Event::KeyUpdated { .. }) => {}
            other => panic!("expected the message, got {other:?}"),
        }
    }
    assert!(got);
    while let Some((_, len)) = p.server.poll_transmit(p.now, buf).unwrap() {
        p.client.handle_input(p.now, xtmp_core::session::PathId(0), &buf[..len]);
    }
    while let Some(e) = p.client.poll_event() {
        black_box(e);
    }
}

/// A request from the client and the server's response: the core's whole
/// CPU for one request round trip (both ends, both directions; each frame
/// carries the ACK of the one before, SPEC.md 4.3).
fn one_round_trip(p: &mut Pair, body: &Bytes, buf: &mut [u8]) {
    let ty = MessageType::REGISTRY_QUERY;
    p.client.send(ty, body.clone(), SendOptions::request()).unwrap();
    while let Some(t) = p.client.poll_transmit(p.now, buf).unwrap() {
        p.server.handle_input(p.now, p.remote, &buf[..t.len]);
    }
    let mut request = None;
    while let Some(e) = p.server.poll_event() {
        if let EndpointEvent::Session(_, Event::Message(m)) = e {
            request = Some(m.id);
        }
    }
    p.server_session().respond(request.unwrap(), ty, body.clone(), SendOptions::default()).unwrap();
    while let Some((_, len)) = p.server.poll_transmit(p.now, buf).unwrap() {
        p.client.handle_input(p.now, xtmp_core::session::PathId(0), &buf[..len]);
    }
    while let Some(e) = p.client.poll_event() {
        black_box(e);
    }
}

/// A pair on a datagram path whose endpoint also holds `idle` other
/// established sessions, which then stay silent.
fn crowded_pair(provider: Arc<dyn CryptoProvider>, idle: usize, buf: &mut [u8]) -> Pair {
    let mut s = Setup::with_providers(PathKind::Datagram, provider.clone(), provider);
    s.session.pacing = false;
    s.session.mtu_discovery = None;
    let (session, client) = (Arc::new(s.session.clone()), Arc::new(s.client.clone()));
    let mut p = s.start();
    p.connect();
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let mut others: Vec<(Session, Remote)> = (0..idle)
        .map(|i| {
            let addr = SocketAddr::from(([198, 51, 100, (i % 250) as u8], 10_000 + (i / 250) as u16));
            let c = Session::connect(p.now, session.clone(), client.clone(), PathKind::Datagram, &mut rng).unwrap();
            (c, Remote { addr, kind: RemoteKind::Datagram })
        })
        .collect();
    loop {
        let mut moved = false;
        for (c, r) in &mut others {
            while let Some(t) = c.poll_transmit(p.now, buf).unwrap() {
                p.server.handle_input(p.now, *r, &buf[..t.len]);
                moved = true;
            }
            while c.poll_event().is_some() {}
        }
        while let Some((r, len)) = p.server.poll_transmit(p.now, buf).unwrap() {
            if let Some((c, _)) = others.iter_mut().find(|(_, o)| *o == r) {
                c.handle_input(p.now, PathId(0), &buf[..len]);
            }
            moved = true;
        }
        while p.server.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
    assert!(others.iter().all(|(c, _)| c.is_established()));
    assert_eq!(p.server.session_count(), idle + 1);
    p
}

/// Raw AEAD seal + open of `buf` with a 96-byte header as associated data.
fn raw_aead(key: &dyn AeadKey, counter: &mut u64, aad: &[u8; HEADER_LEN], buf: &mut [u8]) {
    *counter += 1;
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    let tag = key.seal(&nonce, aad, buf).unwrap();
    key.open(&nonce, aad, buf, &tag).unwrap();
}

fn body(size: usize) -> Bytes {
    let b = Bytes::from(vec![0x5a; size]);
    let _ = b.clone(); // promote to shared once, outside any measurement
    b
}

fn criterion_benches(c: &mut Criterion) {
    let key = RustCrypto.aead(AeadAlgorithm::Aes256Gcm, &Secret::new([7; 32])).unwrap();
    let aad = [0u8; HEADER_LEN];
    let mut buf = vec![0u8; 70_000];
    let mut g = c.benchmark_group("session");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let b = body(size);
        let mut p = pair(PathKind::Stream);
        g.bench_function(format!("message {size} B, stream path, seal + open through the session"), |bench| {
            bench.iter(|| one_message(&mut p, &b, &mut buf))
        });
        let mut counter = 0;
        let mut plain = vec![0x5a; size + codec_overhead()];
        g.bench_function(format!("raw AES-256-GCM seal + open, {} B", plain.len()), |bench| {
            bench.iter(|| raw_aead(&*key, &mut counter, &aad, &mut plain))
        });
    }
    let b = body(64);
    g.throughput(Throughput::Elements(1));
    let mut p = pair(PathKind::Stream);
    g.bench_function("message 64 B, stream path, unreliable (no reliability layer)", |bench| {
        bench.iter(|| one_message_with(&mut p, &b, &mut buf, SendOptions::unreliable()))
    });
    let mut p = pair(PathKind::Datagram);
    g.bench_function("message 64 B, datagram path, seal + open through the session", |bench| {
        bench.iter(|| one_message(&mut p, &b, &mut buf))
    });
    g.finish();
}

/// The data record header travels inside the sealed payload.
fn codec_overhead() -> usize {
    25
}

/// Best of several interleaved rounds: nanoseconds per operation.
fn best_ns(rounds: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed());
    }
    best.as_nanos() as f64 / iters as f64
}

fn summary() {
    println!("\n== session summary (same run, best of 7 rounds) ==");
    let mut buf = vec![0u8; 70_000];
    for provider in providers() {
        let key = provider.aead(AeadAlgorithm::Aes256Gcm, &Secret::new([7; 32])).unwrap();
        let aad = [0u8; HEADER_LEN];
        for size in SIZES {
            let b = body(size);
            let mut p = pair_on(PathKind::Stream, provider.clone());
            let iters = if size > 1024 { 2_000 } else { 50_000 };
            let session = best_ns(7, iters, || one_message(&mut p, &b, &mut buf));
            let mut counter = 0;
            let mut plain = vec![0x5a; size + codec_overhead()];
            let raw = best_ns(7, iters, || raw_aead(&*key, &mut counter, &aad, &mut plain));
            // The frame CRC (SPEC 1.4) covers the ciphertext: the sender
            // computes it and the receiver checks it, so no session can
            // beat raw AEAD plus two CRCs of the frame.
            let frame = vec![0x5a; HEADER_LEN + size + codec_overhead()];
            let (head, payload) = frame.split_at(HEADER_LEN);
            let head: &[u8; HEADER_LEN] = head.try_into().unwrap();
            let crc = best_ns(7, iters, || {
                black_box(frame_crc(black_box(head), black_box(payload)));
            });
            let mbps = |ns: f64| size as f64 / ns * 1e3;
            println!(
                "{:>11} {size:>6} B: session {session:>8.0} ns/msg ({:>7.1} MB/s, {:>8.0} msg/s); raw AES-256-GCM {raw:>8.0} ns ({:>7.1} MB/s); session/raw throughput {:.2}",
                provider.name(),
                mbps(session),
                1e9 / session,
                mbps(raw),
                raw / session
            );
            println!(
                "{:>11} {size:>6} B: frame CRC32 {crc:>6.0} ns; the ceiling with the CRC at both ends, raw / (raw + 2 CRC): {:.2}; session minus raw AEAD and CRCs: {:>6.0} ns",
                provider.name(),
                raw / (raw + 2.0 * crc),
                session - raw - 2.0 * crc
            );
        }
    }
    // A request round trip's CPU in the core, the part of the loopback
    // bench's round trip (xtmp-tokio) that is not sockets or tasks.
    for provider in providers() {
        for kind in [PathKind::Stream, PathKind::Datagram] {
            let b = body(64);
            let mut p = pair_on(kind, provider.clone());
            let rtt = best_ns(7, 50_000, || one_round_trip(&mut p, &b, &mut buf));
            println!(
                "{:>11} request round trip, 64 B, {kind:?} path: {rtt:>6.0} ns in the core (both ends, both directions)",
                provider.name()
            );
        }
    }
    // The same round trip among idle sessions, the endpoint asked for its
    // next deadline after it as a driver does on every turn: the endpoint
    // looks at the sessions that ran, so the idle ones cost nothing.
    if let Some(provider) = providers().pop() {
        let b = body(64);
        let mut ns = Vec::new();
        for idle in [0, 1_000] {
            let mut p = crowded_pair(provider.clone(), idle, &mut buf);
            ns.push(best_ns(7, 20_000, || {
                one_round_trip(&mut p, &b, &mut buf);
                black_box(p.server.poll_timeout());
            }));
        }
        println!(
            "{:>11} request round trip, 64 B, Datagram path, and the endpoint's deadline: {:>6.0} ns alone, {:>6.0} ns among 1,000 idle sessions ({:.2}x)",
            provider.name(),
            ns[0],
            ns[1],
            ns[1] / ns[0]
        );
    }
    // The reliability layer's own CPU per message: a reliable message
    // (registered, ordered, acknowledged every second frame, its ACK
    // processed, delivered in order) against an unreliable one (sent
    // once, neither acknowledged nor ordered) of the same size on a stream
    // path, where nothing else differs.
    for size in [64, 1024] {
        let b = body(size);
        let (mut reliable, mut unreliable) = (pair(PathKind::Stream), pair(PathKind::Stream));
        let r = best_ns(7, 50_000, || one_message(&mut reliable, &b, &mut buf));
        let u = best_ns(7, 50_000, || one_message_with(&mut unreliable, &b, &mut buf, SendOptions::unreliable()));
        println!(
            "reliability layer, {size:>5} B on a stream path: reliable {r:>6.0} ns/msg, unreliable {u:>6.0} ns/msg: {:>5.0} ns per message ({:.0} % of the reliable path)",
            r - u,
            (r - u) / r * 100.0
        );
    }
    // Heap allocations per message in steady state.
    let _profiler = dhat::Profiler::builder().testing().build();
    for (kind, size) in [(PathKind::Stream, 64), (PathKind::Stream, 16 * 1024), (PathKind::Datagram, 64)] {
        let b = body(size);
        let mut p = pair(kind);
        for _ in 0..2_000 {
            one_message(&mut p, &b, &mut buf);
        }
        let (mut send, mut open) = (0u64, 0u64);
        let n = 20_000u64;
        for _ in 0..n {
            let s0 = dhat::HeapStats::get().total_blocks;
            p.client.send(MessageType::BUNDLE_SUBMIT, b.clone(), SendOptions::default()).unwrap();
            let t = p.client.poll_transmit(p.now, &mut buf).unwrap().unwrap();
            let s1 = dhat::HeapStats::get().total_blocks;
            p.server.handle_input(p.now, p.remote, &buf[..t.len]);
            drop(black_box(p.server.poll_event()));
            let s2 = dhat::HeapStats::get().total_blocks;
            send += s1 - s0;
            open += s2 - s1;
            while let Some((_, len)) = p.server.poll_transmit(p.now, &mut buf).unwrap() {
                p.client.handle_input(p.now, xtmp_core::session::PathId(0), &buf[..len]);
            }
            while p.client.poll_event().is_some() {}
        }
        println!(
            "{kind:?} {size:>6} B: heap allocations per message: send path {:.4}, open path {:.4}",
            send as f64 / n as f64,
            open as f64 / n as f64
        );
    }
}

/// `XTMP_BENCH_PROFILE=<provider>:<size>:<seconds>` (for example
/// `aws-lc-rs:16384:5`): only loops one message of that size through the
/// session path with that provider, for a profiler to sample.
/// `<size>` may also be `rtt`: request round trips of 64 B.
fn profile(spec: &str) {
    let mut it = spec.split(':');
    let (name, what, secs) = (it.next(), it.next(), it.next().and_then(|s| s.parse().ok()));
    let rtt = what == Some("rtt");
    let size = if rtt { Some(64) } else { what.and_then(|s| s.parse().ok()) };
    let (Some(name), Some(size), Some(secs)) = (name, size, secs) else {
        panic!("XTMP_BENCH_PROFILE wants <provider>:<size or rtt>:<seconds>, got {spec:?}");
    };
    let provider = providers().into_iter().find(|p| p.name() == name).expect("no such provider in this build");
    let (b, mut buf) = (body(size), vec![0u8; 70_000]);
    let mut p = pair_on(PathKind::Stream, provider);
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..1000 {
            if rtt {
                one_round_trip(&mut p, &b, &mut buf);
            } else {
                one_message(&mut p, &b, &mut buf);
            }
        }
        n += 1000;
    }
    let what = if rtt { "round trips" } else { "messages" };
    println!("{n} {what}, {:.0} ns each", start.elapsed().as_nanos() as f64 / n as f64);
}

fn main() {
    if let Ok(spec) = std::env::var("XTMP_BENCH_PROFILE") {
        return profile(&spec);
    }
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();
    summary();
}
