//! XTMP against rustls on loopback, measured in the same run:
//!
//! - a full handshake including the TCP connection: XTMP (ML-KEM-1024 +
//!   X25519, ML-DSA-87 + Ed25519, the aws-lc-rs provider) against rustls
//!   TLS 1.3 with X25519MLKEM768 and an ECDSA P-256 certificate (aws-lc-rs);
//! - bulk transfer in 64 KiB messages (XTMP acknowledged sends from 32
//!   tasks sharing a client) against rustls and raw TCP writes of 64 KiB;
//! - round trips of 64 B on an established connection: XTMP requests over
//!   TCP against a rustls echo and a raw TCP echo, timed the same way (the
//!   client in `block_on` on the main thread, the server on the runtime's
//!   workers, as in `xtmp-tokio`'s loopback bench).
//!
//! `bash perf/run.sh` runs it pinned to one core (`taskset -c 0`, one
//! worker thread) and split over two (two workers). Environment:
//! `XTMP_PERF_WORKERS` (default 2), `XTMP_PERF_HANDSHAKES` (default 200),
//! `XTMP_PERF_BULK_MIB` (default 256), `XTMP_PERF_ROUNDS` (default 2,000);
//! `XTMP_PERF_ONLY=xtmp-handshake` runs XTMP's handshakes alone,
//! `XTMP_PERF_ONLY=rtt` the three round-trip measurements alone, and
//! `XTMP_PERF_ONLY=bulk` the two bulk transfers alone (`xtmp-bulk`,
//! `rustls-bulk`, `raw-bulk`: one alone; for a profiler).
//!
//! It also measures how many handshakes per second a server completes with
//! one shard and with one per worker thread, under 16 clients connecting
//! again and again (the server's part of a handshake is the heavier).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use xtmp_core::crypto::AwsLc;
use xtmp_core::handshake::{ClientConfig, IdentityKeypair, Pinned, ServerConfig};
use xtmp_core::wire::MessageType;
use xtmp_tokio::{Client, ClientSetup, Reply, Router, Server, ServerSetup, Transport};

const CHUNK: usize = 64 * 1024;
/// The round trips' payload, as in the loopback bench.
const PING: usize = 64;
const TASKS_DEFAULT: usize = 32;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() - 1) * 9 / 10])
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// ---- XTMP ----

async fn xtmp_server(shards: usize) -> (Server, Arc<IdentityKeypair>) {
    let mut rng = xtmp_tokio::xtmp_adapter::clock::rng().expect("OS randomness");
    let identity = Arc::new(IdentityKeypair::generate(&AwsLc, &mut rng).expect("an identity"));
    let mut setup = ServerSetup::new(identity.clone());
    setup.limits.shards = shards;
    let mut endpoint = (*setup.endpoint).clone();
    endpoint.server = Arc::new(ServerConfig::new(Arc::new(AwsLc), identity.clone()));
    setup.endpoint = Arc::new(endpoint);
    let router = Router::new()
        .route(MessageType::BUNDLE_SUBMIT, |_| async move { Ok(Reply::new(MessageType::BUNDLE_SUBMIT, Bytes::new())) })
        .route(
            MessageType::REGISTRY_QUERY,
            |r| async move { Ok(Reply::new(MessageType::REGISTRY_QUERY, r.message.body)) },
        );
    let server = Server::bind(setup, Transport::Tcp, "127.0.0.1:0".parse().unwrap(), router).await.unwrap();
    (server, identity)
}

fn xtmp_setup(identity: &IdentityKeypair) -> ClientSetup {
    let client = ClientConfig::new(Arc::new(AwsLc), Arc::new(Pinned(identity.public().clone())));
    ClientSetup::new(Arc::new(client))
}

async fn xtmp_handshakes(n: usize) -> Vec<Duration> {
    let (server, identity) = xtmp_server(0).await;
    let setup = xtmp_setup(&identity);
    let mut v = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        let c = Client::connect(server.local_addr(), Transport::Tcp, setup.clone()).await.unwrap();
        if i >= n / 10 {
            v.push(t.elapsed());
        }
        c.abort();
    }
    v
}

/// Handshakes per second of a server with `shards` shards, from
/// `concurrency` clients connecting again and again: the server's part of a
/// handshake (ML-KEM encapsulation, two signatures) outweighs the client's,
/// so this shows whether the server uses more than one core.
async fn xtmp_handshake_rate(shards: usize, total: usize, concurrency: usize) -> f64 {
    let (server, identity) = xtmp_server(shards).await;
    let (addr, setup) = (server.local_addr(), xtmp_setup(&identity));
    let run = |count: usize| {
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (setup, next) = (setup.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        Client::connect(addr, Transport::Tcp, setup.clone()).await.unwrap().abort();
                    }
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    run(concurrency).await; // warm-up
    let t = Instant::now();
    run(total).await;
    total as f64 / t.elapsed().as_secs_f64()
}

async fn xtmp_bulk(bytes: usize) -> Duration {
    let (server, identity) = xtmp_server(0).await;
    let client = Client::connect(server.local_addr(), Transport::Tcp, xtmp_setup(&identity)).await.unwrap();
    let body = Bytes::from(vec![0x5a; env("XTMP_PERF_XCHUNK", CHUNK)]);
    let run = |count: usize| {
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..env("XTMP_PERF_TASKS", TASKS_DEFAULT))
            .map(|_| {
                let (c, b, next) = (client.clone(), body.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        c.send(MessageType::BUNDLE_SUBMIT, b.clone()).await.unwrap();
                    }
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    run(256).await; // warm-up: 16 MiB
    let t = Instant::now();
    run(bytes / CHUNK).await;
    let d = t.elapsed();
    client.abort();
    d
}

/// `n` timed round trips (after `n / 10` untimed ones) of `once`.
async fn timed(n: usize, mut once: impl AsyncFnMut()) -> Vec<Duration> {
    for _ in 0..n / 10 {
        once().await;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        once().await;
        v.push(t.elapsed());
    }
    v
}

async fn xtmp_rtt(n: usize) -> Vec<Duration> {
    let (server, identity) = xtmp_server(0).await;
    let client = Client::connect(server.local_addr(), Transport::Tcp, xtmp_setup(&identity)).await.unwrap();
    let body = Bytes::from(vec![7u8; PING]);
    let v = timed(n, async || {
        let m = client.request(MessageType::REGISTRY_QUERY, body.clone()).await.unwrap();
        assert_eq!(m.body.len(), PING);
    })
    .await;
    client.abort();
    v
}

/// Round trips of 64 B through an echo server, over TLS or plain TCP.
async fn echo_rtt(n: usize, tls: bool) -> Vec<Duration> {
    let (acc, conn) = tls_configs();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        if tls {
            echo(acc.accept(s).await.unwrap()).await;
        } else {
            echo(s).await;
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    if tls {
        let s = conn.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        ping(s, n).await
    } else {
        ping(tcp, n).await
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = [0u8; PING];
    while s.read_exact(&mut buf).await.is_ok() {
        if s.write_all(&buf).await.is_err() || s.flush().await.is_err() {
            break;
        }
    }
}

async fn ping<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, n: usize) -> Vec<Duration> {
    timed(n, async || {
        let mut buf = [7u8; PING];
        s.write_all(&buf).await.unwrap();
        s.flush().await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
    })
    .await
}

// ---- rustls and raw TCP ----

fn tls_configs() -> (TlsAcceptor, TlsConnector) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![aws_lc_rs::kx_group::X25519MLKEM768];
    let provider = Arc::new(provider);
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    (TlsAcceptor::from(Arc::new(server)), TlsConnector::from(Arc::new(client)))
}

/// Reads to the end, then answers one byte.
async fn sink<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; CHUNK];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    let _ = s.write_all(&[1]).await;
    let _ = s.flush().await;
}

async fn serve(tls: Option<TlsAcceptor>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            s.set_nodelay(true).unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acc) => {
                        if let Ok(t) = acc.accept(s).await {
                            sink(t).await;
                        }
                    }
                    None => sink(s).await,
                }
            });
        }
    });
    addr
}

async fn tls_handshakes(n: usize) -> Vec<Duration> {
    let (acc, conn) = tls_configs();
    let addr = serve(Some(acc)).await;
    let name = ServerName::try_from("localhost").unwrap();
    let mut v = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = conn.connect(name.clone(), tcp).await.unwrap();
        if i >= n / 10 {
            v.push(t.elapsed());
        }
        if i == 0 {
            let (_, c) = tls.get_ref();
            assert_eq!(c.negotiated_key_exchange_group().map(|g| g.name()), Some(rustls::NamedGroup::X25519MLKEM768));
        }
    }
    v
}

async fn write_bulk<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: usize) {
    let chunk = vec![0x5a; CHUNK];
    for _ in 0..bytes / CHUNK {
        s.write_all(&chunk).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.unwrap();
}

async fn tcp_bulk(bytes: usize, tls: bool) -> Duration {
    let (acc, conn) = tls_configs();
    let addr = serve(tls.then_some(acc)).await;
    let mut best = Duration::MAX;
    for _ in 0..2 {
        // The first run warms up.
        let t = Instant::now();
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        if tls {
            let s = conn.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
            write_bulk(s, bytes).await;
        } else {
            write_bulk(tcp, bytes).await;
        }
        best = t.elapsed();
    }
    best
}

fn main() {
    let workers = env("XTMP_PERF_WORKERS", 2);
    let handshakes = env("XTMP_PERF_HANDSHAKES", 200).max(10);
    let bulk = env("XTMP_PERF_BULK_MIB", 256).max(1) << 20;
    let rounds = env("XTMP_PERF_ROUNDS", 2_000).max(10);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    rt.block_on(async {
        let gbs = |d: Duration| bulk as f64 / d.as_secs_f64() / 1e9;
        // For a profiler: one part alone.
        match std::env::var("XTMP_PERF_ONLY").as_deref().unwrap_or("") {
            "" => {}
            "xtmp-handshake" => {
                let (x50, x90) = median(xtmp_handshakes(handshakes).await);
                return println!("xtmp handshake {:8.1} µs / {:8.1} µs", us(x50), us(x90));
            }
            "bulk" => {
                let x = gbs(xtmp_bulk(bulk).await);
                let t = gbs(tcp_bulk(bulk, true).await);
                return println!("bulk xtmp {x:6.2} GB/s, rustls {t:6.2} GB/s, {:.2}x", x / t);
            }
            "rtt" => return rtt(rounds).await,
            "xtmp-bulk" => return println!("bulk xtmp {:6.2} GB/s", gbs(xtmp_bulk(bulk).await)),
            "rustls-bulk" => return println!("bulk rustls {:6.2} GB/s", gbs(tcp_bulk(bulk, true).await)),
            "raw-bulk" => return println!("bulk raw {:6.2} GB/s", gbs(tcp_bulk(bulk, false).await)),
            other => {
                panic!("XTMP_PERF_ONLY={other:?}: want xtmp-handshake, rtt, bulk, xtmp-bulk, rustls-bulk or raw-bulk")
            }
        }
        println!("loopback, {workers} worker thread(s)");
        rtt(rounds).await;
        let (x50, x90) = median(xtmp_handshakes(handshakes).await);
        let (t50, t90) = median(tls_handshakes(handshakes).await);
        println!("full handshake incl. TCP connect ({handshakes}, median / p90):");
        println!("  xtmp   ML-KEM-1024+X25519, ML-DSA-87+Ed25519 (aws-lc) {:8.1} µs / {:8.1} µs", us(x50), us(x90));
        println!("  rustls TLS 1.3 X25519MLKEM768, ECDSA P-256 (aws-lc) {:8.1} µs / {:8.1} µs", us(t50), us(t90));
        println!("  xtmp / rustls {:.2}x (target: below 1)", x50.as_secs_f64() / t50.as_secs_f64());

        let (total, concurrency) = (handshakes * 2, 16);
        let one = xtmp_handshake_rate(1, total, concurrency).await;
        let all = xtmp_handshake_rate(workers, total, concurrency).await;
        println!("server handshake rate, {concurrency} clients connecting again and again ({total}):");
        println!("  1 shard            {one:8.0} /s");
        println!("  {workers} shard(s)         {all:8.0} /s   ({:.2}x)", all / one);

        let x = gbs(xtmp_bulk(bulk).await);
        let t = gbs(tcp_bulk(bulk, true).await);
        let r = gbs(tcp_bulk(bulk, false).await);
        println!("bulk, {} MiB in 64 KiB messages / writes:", bulk >> 20);
        println!("  xtmp acknowledged sends ({:>2} tasks)  {x:6.2} GB/s", env("XTMP_PERF_TASKS", TASKS_DEFAULT));
        println!("  rustls TLS 1.3 AES-256-GCM           {t:6.2} GB/s");
        println!("  raw TCP                              {r:6.2} GB/s");
        println!("  xtmp / rustls {:.2}x (target: at least 1.5)", x / t);
    });
}

/// Prints the three round-trip measurements and their ratios.
async fn rtt(rounds: usize) {
    let (r50, r90) = median(echo_rtt(rounds, false).await);
    let (t50, t90) = median(echo_rtt(rounds, true).await);
    let (x50, x90) = median(xtmp_rtt(rounds).await);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("round trips of {PING} B on an established connection ({rounds}, median / p90):");
    println!("  raw TCP echo              {:8.1} µs / {:8.1} µs", us(r50), us(r90));
    println!("  rustls TLS 1.3 echo       {:8.1} µs / {:8.1} µs   {:.2}x raw", us(t50), us(t90), ratio(t50, r50));
    println!(
        "  xtmp request over TCP     {:8.1} µs / {:8.1} µs   {:.2}x raw, {:.2}x rustls",
        us(x50),
        us(x90),
        ratio(x50, r50),
        ratio(x50, t50)
    );
}
