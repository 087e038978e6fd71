//! `xtmp demo`: a server and a client in one process, on loopback, showing
//! the post-quantum handshake, request/response latency, a live stream, key
//! rotation and a reconnection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures_lite::StreamExt;
use xtmp_core::crypto::{AeadAlgorithm, RustCrypto};
use xtmp_core::handshake::IdentityKeypair;
use xtmp_core::session::SessionConfig;
use xtmp_core::wire::MessageType;
use xtmp_tokio::{Client, ClientSetup, ConnectionState, Reply, Server, ServerSetup, Transport};

use crate::relay::Relay;
use crate::show::{self, Distribution, Progress};
use crate::{ECHO, serve};

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// The transport between client and server (both go through a relay
    /// the demo cuts to show a reconnection).
    #[arg(long, value_enum, default_value_t = DemoTransport::Tcp)]
    transport: DemoTransport,
    /// Sequential requests whose latency is measured.
    #[arg(long, default_value_t = 2_000)]
    requests: usize,
    /// Requests sent by many tasks at once through the one client.
    #[arg(long, default_value_t = 10_000)]
    concurrent: usize,
    /// Handshakes timed after the first.
    #[arg(long, default_value_t = 20)]
    handshakes: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DemoTransport {
    /// TCP (`xtmp://`).
    Tcp,
    /// WebSocket binary messages (`xtmp+ws://`).
    Ws,
}

/// Frames after which either side ratchets its sending key in the demo
/// (the default is the cipher's limit, 2^23 frames, or 10 minutes).
const RATCHET_FRAMES: u64 = 1_000;
/// Tasks that share the client in the concurrency step.
const TASKS: usize = 32;
/// Acknowledged sends around the reconnection, and how many are
/// acknowledged before the connection is cut.
const SENDS: usize = 300;
const CUT_AFTER: usize = 100;
/// Items of the live stream, and their rate.
const ITEMS: usize = 25;
const ITEM_RATE: f64 = 50.0;

fn heading(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

pub(crate) async fn run(a: DemoArgs) -> Result<(), String> {
    let transport = match a.transport {
        DemoTransport::Tcp => Transport::Tcp,
        DemoTransport::Ws => Transport::WebSocket,
    };
    println!("XTMP demo: a server and a client in this process, over {} on loopback", transport.scheme());

    heading(1, "Identities");
    let started = Instant::now();
    let mut rng = xtmp_tokio::xtmp_adapter::clock::rng().map_err(|e| format!("no OS randomness: {e}"))?;
    let identity = Arc::new(IdentityKeypair::generate(&RustCrypto, &mut rng).map_err(|e| e.to_string())?);
    println!("   server identity (ML-DSA-87 + Ed25519) made in {}", show::duration(started.elapsed()));
    println!("   fingerprint {}", identity.key_id());

    // The server: `xtmp serve`'s router, plus a route that counts each
    // acknowledged send it handles (to show that none is handled twice).
    let handled: Arc<Mutex<HashMap<Bytes, usize>>> = Arc::default();
    let counted = handled.clone();
    let router = serve::router(None, ITEM_RATE).route(MessageType::BUNDLE_SUBMIT, move |req| {
        let counted = counted.clone();
        async move {
            *counted.lock().unwrap_or_else(|p| p.into_inner()).entry(req.message.body.clone()).or_default() += 1;
            Ok(Reply::new(MessageType::BUNDLE_SUBMIT, Bytes::new()))
        }
    });
    let mut session = SessionConfig::default();
    session.key_update_frames = RATCHET_FRAMES;
    let session = Arc::new(session);
    let mut endpoint = (*ServerSetup::new(identity.clone()).endpoint).clone();
    endpoint.session = session.clone();
    let setup = ServerSetup { endpoint: Arc::new(endpoint), ..ServerSetup::new(identity.clone()) };
    let server = Server::bind(setup, transport, "127.0.0.1:0".parse().expect("an address"), router)
        .await
        .map_err(|e| e.to_string())?;
    let relay = Relay::start(server.local_addr()).await.map_err(|e| e.to_string())?;
    println!(
        "   server on {}://{}, reached through a relay at {}",
        transport.scheme(),
        server.local_addr(),
        relay.addr()
    );

    heading(2, "Post-quantum handshake");
    let mut client_setup = ClientSetup::pinned(identity.public().clone());
    let mut config = (*client_setup.client).clone();
    config.ciphers = vec![AeadAlgorithm::Aes256Gcm];
    client_setup.client = Arc::new(config);
    client_setup.session = session;
    let started = Instant::now();
    let client = Client::connect(relay.addr(), transport, client_setup.clone()).await.map_err(|e| e.to_string())?;
    let first = started.elapsed();
    println!("   key agreement ML-KEM-1024 + X25519, signatures ML-DSA-87 + Ed25519, records AES-256-GCM");
    println!("   server authenticated against its pinned fingerprint; connected in {}", show::duration(first));
    let mut times = Vec::new();
    for _ in 0..a.handshakes {
        let started = Instant::now();
        let c =
            Client::connect(server.local_addr(), transport, client_setup.clone()).await.map_err(|e| e.to_string())?;
        times.push(started.elapsed());
        c.abort();
    }
    if let Some(d) = Distribution::of(&times) {
        println!(
            "   {} more full handshakes (connection included): p50 {}, p90 {}",
            a.handshakes,
            show::duration(d.p50),
            show::duration(d.p90)
        );
    }

    heading(3, "Requests and responses");
    let mut samples = Vec::with_capacity(a.requests);
    let mut progress = Progress::new();
    for i in 0..a.requests {
        let body = Bytes::from(format!("request {i}"));
        let started = Instant::now();
        let answer = client.request(ECHO, body.clone()).await.map_err(|e| e.to_string())?;
        samples.push(started.elapsed());
        if answer.body != body {
            return Err(format!("request {i} got the answer to another request: {:?}", answer.body));
        }
        if i % 50 == 0 {
            progress.update(format!("   {} {i}/{}", show::bar(i, a.requests, 30), a.requests));
        }
    }
    if let Some(d) = Distribution::of(&samples) {
        progress.done(format!("   {} sequential requests of 64 bytes or less: {}", a.requests, d.line()));
    }
    let started = Instant::now();
    let total = a.concurrent;
    let c = client.clone();
    on_tasks(TASKS, total, move |i| {
        let client = c.clone();
        async move {
            let body = Bytes::from(format!("task request {i}"));
            let answer = client.request(ECHO, body.clone()).await.map_err(|e| e.to_string())?;
            if answer.body != body {
                return Err(format!("request {i} got another's answer"));
            }
            Ok(())
        }
    })
    .await?;
    let elapsed = started.elapsed();
    println!(
        "   {} requests from {TASKS} tasks sharing the client: {:.0} requests/s, each answer matched to its request",
        a.concurrent,
        a.concurrent as f64 / elapsed.as_secs_f64()
    );

    heading(4, "A live stream (server push)");
    let filter = Bytes::from(format!("count={ITEMS}"));
    let mut stream = client.subscribe(MessageType::LIVE_UPDATES, filter).await.map_err(|e| e.to_string())?;
    let mut progress = Progress::new();
    let mut n = 0;
    let mut delays = Vec::new();
    while let Some(item) = stream.next().await {
        n += 1;
        let text = String::from_utf8_lossy(&item.body).to_string();
        if let Some(sent) = text.rsplit(' ').next().and_then(|ms| ms.parse::<u128>().ok()) {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            delays.push(Duration::from_millis(now.saturating_sub(sent) as u64));
        }
        progress.update(format!("   {} item {n}/{ITEMS}: {text}", show::bar(n, ITEMS, 20)));
    }
    let worst = delays.iter().max().copied().unwrap_or_default();
    progress.done(format!(
        "   {n} LiveUpdates items pushed at {ITEM_RATE} per second, in order, each within {} of its publication (ms clock)",
        show::duration(worst.max(Duration::from_millis(1)))
    ));
    if let Some(end) = stream.end() {
        println!("   then {end}");
    }

    heading(5, "Key rotation");
    let s = client.stats().session;
    println!(
        "   symmetric ratchet every {RATCHET_FRAMES} frames: sending key generation {}, receiving {} (after {} frames out, {} in)",
        s.send_generation, s.recv_generation, s.frames_sent, s.frames_received
    );
    let started = Instant::now();
    if !client.rekey().await {
        return Err("the hybrid re-key did not start".into());
    }
    while client.stats().session.rekeys == 0 {
        client.request(ECHO, Bytes::from_static(b"during the re-key")).await.map_err(|e| e.to_string())?;
    }
    let s = client.stats().session;
    println!(
        "   hybrid re-key (fresh ML-KEM-1024 + X25519 inside the session) done in {}: generations now {} / {}; a stolen older key no longer decrypts",
        show::duration(started.elapsed()),
        s.send_generation,
        s.recv_generation
    );

    heading(6, "Reconnection");
    let states: Arc<Mutex<Vec<(Duration, ConnectionState)>>> = Arc::default();
    let started = Instant::now();
    let watcher = {
        let (client, states) = (client.clone(), states.clone());
        tokio::spawn(async move {
            loop {
                let s = client.state_changed().await;
                states.lock().unwrap_or_else(|p| p.into_inner()).push((started.elapsed(), s));
            }
        })
    };
    // The sender whose acknowledgement is the hundredth cuts the
    // connection, while the other senders' messages are in flight.
    let acked = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(AtomicUsize::new(0));
    let relay = Arc::new(relay);
    let c = client.clone();
    let (acked2, cut2) = (acked.clone(), cut.clone());
    on_tasks(16, SENDS, move |i| {
        let (client, acked, relay, cut) = (c.clone(), acked2.clone(), relay.clone(), cut2.clone());
        async move {
            let body = Bytes::from(format!("bundle {i}"));
            client.send(MessageType::BUNDLE_SUBMIT, body).await.map_err(|e| e.to_string())?;
            if acked.fetch_add(1, Ordering::Relaxed) + 1 == CUT_AFTER {
                cut.store(relay.cut(), Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await?;
    println!(
        "   {SENDS} acknowledged sends from 16 tasks; {} TCP connection(s) cut after the {CUT_AFTER}th acknowledgement",
        cut.load(Ordering::Relaxed)
    );
    watcher.abort();
    for (at, state) in states.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("   +{:>9}  {state:?}", show::duration(*at));
    }
    let handled = handled.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let twice = handled.values().filter(|n| **n > 1).count();
    let stats = client.stats();
    println!(
        "   all {SENDS} sends acknowledged; the server handled {} distinct ones, {twice} more than once",
        handled.len()
    );
    println!(
        "   {} (connections redialed for the live session: {}, sessions: {})",
        if stats.sessions == 1 { "the same session resumed" } else { "a new session was made" },
        stats.paths_redialed,
        stats.sessions
    );
    if handled.len() != SENDS || twice > 0 {
        return Err(format!("{} of {SENDS} sends handled, {twice} twice", handled.len()));
    }

    heading(7, "The session's counters");
    let s = client.stats().session;
    println!(
        "   frames {} out / {} in, bytes {} / {}, smoothed rtt {}, losses {}, retransmissions {}, decryption failures {}, replays rejected {}",
        s.frames_sent,
        s.frames_received,
        s.bytes_sent,
        s.bytes_received,
        s.rtt.map(show::duration).unwrap_or_else(|| "-".into()),
        s.lost,
        s.retransmissions,
        s.decrypt_failures,
        s.replays_rejected
    );
    client.close().await;
    server.shutdown(Duration::from_secs(2)).await;
    println!("\nclosed gracefully. Try `xtmp serve --ephemeral` and `xtmp ping --endpoint <printed endpoint>` next.");
    Ok(())
}

/// Runs `job(i)` for every `i` below `total` on `tasks` tasks that take
/// the next `i` as they finish one; the first error is returned.
async fn on_tasks<F, Fut>(tasks: usize, total: usize, job: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (next, job) = (next.clone(), job.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<(), String>(());
                    }
                    job(i).await?;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}
