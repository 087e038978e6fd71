//! `bpci demo`: the whole application in one process, with no setup: a
//! BPCI server on a temporary redb store, a notary, two wallets and a BPI
//! node that registers and authenticates a wallet, transfers, and submits
//! bundles from a fake mempool at a steady rate while a watcher prints
//! their transitions live; the server is stopped abruptly and restarted on
//! the same store and port in the middle; at the end every bundle is
//! Confirmed exactly once with a verified receipt and the balances add up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use xtmp_adapter::{Endpoint, Transport};
use xtmp_bpci::schema::{BundleState, Capability, EventKind, Filter, Hash, Record, SubmitRequest};
use xtmp_bpci::server::{self, Admission};
use xtmp_bpci::service::bundle_of;
use xtmp_bpci::{BpciClient, BpciServer, Config, Engine, Notary, RedbStore, Rules, Wallet, WatchItem};
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::IdentityKeypair;

fn keys() -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::generate(&RustCrypto, &mut xtmp_bpci_rng()).expect("an identity"))
}

fn xtmp_bpci_rng() -> rand_chacha::ChaCha20Rng {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the operating system's random source");
    <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed)
}

async fn start(dir: &std::path::Path, identity: &Arc<IdentityKeypair>, addr: SocketAddr) -> Result<BpciServer, String> {
    // In one process the stopped server's last tasks may still hold the
    // file for a moment (a real restart is a new process): wait for it.
    let mut tries = 0;
    let store = loop {
        match RedbStore::open(dir.join("bpci.redb")) {
            Ok(s) => break Arc::new(s),
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let rules =
        Rules::new(Config { initial_balance: 1000, ..Config::default() }, Arc::new(RustCrypto), identity.clone());
    let engine = Engine::start(store, rules, 0).map_err(|e| e.to_string())?;
    let setup = server::setup(identity.clone(), Arc::new(RustCrypto), Admission::Open);
    BpciServer::start(xtmp_tokio::Tokio::shared(), setup, &[(Transport::Tcp, addr)], engine)
        .await
        .map_err(|e| e.to_string())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) async fn run(bundles: usize, interval: Duration) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let identity = keys();
    println!(
        "bpci demo: a BPCI server on {} (redb), identity {}",
        dir.path().join("bpci.redb").display(),
        identity.key_id()
    );
    let server = start(dir.path(), &identity, "127.0.0.1:0".parse().expect("an address")).await?;
    let addr = server.local_addr();
    let endpoint = Endpoint::from_addr(Transport::Tcp, addr);
    let connect = || BpciClient::connect(xtmp_tokio::Tokio::shared(), &endpoint, keys(), identity.public().clone());
    let node = connect().await.map_err(|e| e.to_string())?;
    println!("node connected over {}: post-quantum handshake, node authenticated", endpoint);

    let (alice, bob, owner) = (Wallet::generate(), Wallet::generate(), Wallet::generate());
    for w in [&alice, &bob, &owner] {
        node.register_wallet(w).await.map_err(|e| e.to_string())?;
    }
    node.authenticate(&alice, &[Capability::ReadBalance]).await.map_err(|e| e.to_string())?;
    node.authenticate(&bob, &[Capability::ReadBalance]).await.map_err(|e| e.to_string())?;
    let t = node.transfer(&alice, bob.id(), 250, 0).await.map_err(|e| e.to_string())?;
    println!(
        "wallets registered; alice authenticated (challenge bound to the session); transferred 250 to bob: alice has {}",
        t.balance
    );
    let notary = Notary::new("notary-1", keys());
    let record = Record::notary(notary.name.clone(), notary.public().clone(), owner.id());
    node.registry_update(&owner, record, 0).await.map_err(|e| e.to_string())?;
    println!("notary-1 registered in the registry (record signed by the server)");

    // The watcher: its own session, every bundle event from now on.
    let watcher = connect().await.map_err(|e| e.to_string())?;
    let head = node.sync(0, 1, None).await.map_err(|e| e.to_string())?.head;
    let submitted: Arc<Mutex<HashMap<Hash, Instant>>> = Arc::default();
    let filter = Filter { kinds: Some(vec![EventKind::Bundle]), ..Filter::default() };
    let mut watch = watcher.watch_events(filter, head);
    let (s2, total) = (submitted.clone(), bundles);
    let watching = tokio::spawn(async move {
        let mut confirmed: HashMap<Hash, usize> = HashMap::new();
        let mut latencies = Vec::new();
        while confirmed.len() < total {
            let Some(item) = watch.next().await else { break };
            match item {
                Ok(WatchItem::Event(e)) => {
                    let (Some(id), Some(state)) = (e.bundle_id, e.state) else { continue };
                    let since = s2.lock().expect("lock").get(&id).map(|t| t.elapsed());
                    let since = since.map_or_else(String::new, |d| format!(" +{}", ms(d)));
                    println!("  watch  {}…  {:<9} event {}{since}", &id.to_hex()[..12], state.name(), e.seq);
                    if state == BundleState::Confirmed {
                        *confirmed.entry(id).or_default() += 1;
                        if let Some(t) = s2.lock().expect("lock").get(&id) {
                            latencies.push(t.elapsed());
                        }
                    }
                }
                Ok(WatchItem::Resynced { .. }) => println!("  watch  (resynced after a cursor expired)"),
                Err(e) => {
                    println!("  watch  ended: {e}");
                    break;
                }
            }
        }
        (confirmed, latencies)
    });

    // The mempool: bundles at a steady rate; the server restarts halfway.
    let started = Instant::now();
    let mut server = Some(server);
    let mut requests = Vec::new();
    let mut restart = None;
    for n in 0..bundles {
        if n == bundles / 2 {
            println!("-- the server stops abruptly (sessions dropped, no goodbye) and restarts on the same store --");
            if let Some(s) = server.take() {
                let engine = s.engine().clone();
                drop(s);
                engine.shutdown();
            }
            server = Some(start(dir.path(), &identity, addr).await?);
            restart = Some(Instant::now());
        }
        let txs = (0..8).map(|i| Hash::of(format!("mempool tx {n}.{i} {:?}", started).as_bytes())).collect();
        let now_ms = crate::now_ms();
        let bundle = bundle_of(txs, 100 * (n as u64 + 1), now_ms, now_ms + 600_000);
        let req = SubmitRequest { approvals: vec![notary.approve(&bundle)], bundle };
        submitted.lock().expect("lock").insert(req.bundle.id(), Instant::now());
        // Like an outbox: re-send until the server has it (a re-sent
        // bundle gets its original answer, never a second copy).
        let mut tries = 0;
        let answer = loop {
            match node.submit(&req).await {
                Ok(a) => break a,
                Err(e) if tries < 50 => {
                    tries += 1;
                    if tries == 1 {
                        println!("  node   submit of bundle {n} failed ({e}); sending it again");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(format!("bundle {n}: {e}")),
            }
        };
        if let Some(t) = restart.take() {
            println!("  node   back {} after the restart, on a new session", ms(t.elapsed()));
        }
        println!("  node   submit {}…  {} (event {})", &answer.bundle_id.to_hex()[..12], answer.state, answer.seq);
        requests.push(req);
        tokio::time::sleep(interval).await;
    }
    let (confirmed, mut latencies) = watching.await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();

    // Every bundle once, with a verified receipt; balances add up.
    let mut receipts = 0;
    for r in &requests {
        let id = r.bundle.id();
        if confirmed.get(&id) != Some(&1) {
            return Err(format!("bundle {id} was confirmed {} times", confirmed.get(&id).unwrap_or(&0)));
        }
        node.receipt(id).await.map_err(|e| format!("receipt of {id}: {e}"))?;
        receipts += 1;
    }
    node.authenticate(&alice, &[Capability::ReadBalance]).await.map_err(|e| e.to_string())?;
    node.authenticate(&bob, &[Capability::ReadBalance]).await.map_err(|e| e.to_string())?;
    let a = node.balance(alice.id()).await.map_err(|e| e.to_string())?.balance;
    let b = node.balance(bob.id()).await.map_err(|e| e.to_string())?.balance;
    if a + b != 2000 {
        return Err(format!("balances do not add up: {a} + {b}"));
    }
    latencies.sort();
    let at = |q: f64| latencies.get(((latencies.len().max(1) - 1) as f64 * q) as usize).copied().unwrap_or_default();
    let stats = server.as_ref().map(|s| s.engine().stats()).unwrap_or_default();
    println!();
    println!("summary");
    println!(
        "  bundles        {bundles} submitted, {} confirmed exactly once, {receipts} receipts verified offline",
        confirmed.len()
    );
    println!("  submit to Confirmed  p50 {}  p99 {}", ms(at(0.5)), ms(at(0.99)));
    println!("  balances       alice {a} + bob {b} = 2000 (supply conserved)");
    println!("  server         restarted once; blocks after the restart: {}, height {}", stats.blocks, stats.height);
    println!(
        "  watcher        sessions {} (resumed from its cursor, no gap, no duplicate)",
        watcher.transport().stats().sessions
    );
    println!("  elapsed        {:.2} s", elapsed.as_secs_f64());
    if let Some(s) = server {
        s.shutdown(Duration::from_secs(1)).await;
    }
    Ok(())
}
