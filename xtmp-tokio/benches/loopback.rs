//! Round trips on loopback through the whole stack (tokio sockets, the
//! driver task, the core's session, AEAD), against a raw socket ping-pong
//! of the same payload measured in the same run.
//!
//! `cargo bench -p xtmp-tokio --bench loopback` prints, per transport, the
//! median and 99th percentile of sequential round trips and the ratio of
//! the medians to the raw baseline. `XTMP_BENCH_ROUNDS` sets the number of
//! round trips (default 2,000), `XTMP_BENCH_WORKERS` the runtime's worker
//! threads (default 2; `perf/run.sh` runs it pinned and split).
//! `XTMP_BENCH_ONLY=tcp|udp` measures one transport (for `perf` or
//! `strace`); `XTMP_BENCH_RAW_ROUNDS` sets the raw baseline's rounds
//! apart, so a profile can hold (nearly) only one side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use xtmp_core::crypto::CryptoProvider;
use xtmp_core::endpoint::EndpointConfig;
use xtmp_core::handshake::{ClientConfig, IdentityKeypair, Pinned, ServerConfig};
use xtmp_core::session::SessionConfig;
use xtmp_core::wire::MessageType;
use xtmp_tokio::{Client, ClientSetup, Reply, Router, Server, ServerSetup, Transport};

const PAYLOAD: usize = 64;

fn rounds() -> usize {
    std::env::var("XTMP_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

/// Median and 99th percentile.
fn summary(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

async fn timed<F: std::future::Future<Output = ()>>(n: usize, mut once: impl FnMut() -> F) -> (Duration, Duration) {
    for _ in 0..n / 10 {
        once().await; // warm-up
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        once().await;
        samples.push(t.elapsed());
    }
    summary(samples)
}

async fn raw_tcp(n: usize) -> (Duration, Duration) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; PAYLOAD];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let c = Arc::new(tokio::sync::Mutex::new(c));
    timed(n, || {
        let c = c.clone();
        async move {
            let mut c = c.lock().await;
            let mut buf = [7u8; PAYLOAD];
            c.write_all(&buf).await.unwrap();
            c.read_exact(&mut buf).await.unwrap();
        }
    })
    .await
}

async fn raw_udp(n: usize) -> (Duration, Duration) {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = server.recv_from(&mut buf).await {
            let _ = server.send_to(&buf[..len], from).await;
        }
    });
    let c = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    c.connect(addr).await.unwrap();
    timed(n, || {
        let c = c.clone();
        async move {
            let mut buf = [7u8; PAYLOAD];
            c.send(&buf).await.unwrap();
            c.recv(&mut buf).await.unwrap();
        }
    })
    .await
}

/// The crypto provider of both ends: aws-lc-rs with the `aws-lc` feature
/// (as `perf/run.sh` runs it, and as rustls runs in the anchors), the
/// pure-Rust one without.
fn provider() -> Arc<dyn CryptoProvider> {
    #[cfg(feature = "aws-lc")]
    return Arc::new(xtmp_core::crypto::AwsLc);
    #[cfg(not(feature = "aws-lc"))]
    return Arc::new(xtmp_core::crypto::RustCrypto);
}

async fn xtmp(transport: Transport, n: usize) -> [(Duration, Duration); 2] {
    let provider = provider();
    let id = Arc::new(IdentityKeypair::generate(&*provider, &mut ChaCha20Rng::from_seed([1; 32])).unwrap());
    let router = Router::new().route(MessageType::REGISTRY_QUERY, |req| async move {
        Ok(Reply::new(MessageType::REGISTRY_QUERY, req.message.body))
    });
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = ServerConfig::new(provider.clone(), id.clone());
    let endpoint = EndpointConfig::new(Arc::new(SessionConfig::default()), Arc::new(config));
    let setup = ServerSetup { endpoint: Arc::new(endpoint), ..ServerSetup::new(id.clone()) };
    let server = Server::bind(setup, transport, any, router).await.unwrap();
    let config = ClientConfig::new(provider, Arc::new(Pinned(id.public().clone())));
    let setup = ClientSetup { client: Arc::new(config), ..ClientSetup::pinned(id.public().clone()) };
    let client = Client::connect(server.local_addr(), transport, setup).await.unwrap();
    let body = Bytes::from(vec![7u8; PAYLOAD]);
    let request = timed(n, || {
        let (c, b) = (client.clone(), body.clone());
        async move {
            c.request(MessageType::REGISTRY_QUERY, b).await.unwrap();
        }
    })
    .await;
    let acked = timed(n, || {
        let (c, b) = (client.clone(), body.clone());
        async move {
            c.send(MessageType::EVENT_STREAM, b).await.unwrap();
        }
    })
    .await;
    client.close().await;
    drop(server);
    [request, acked]
}

fn main() {
    // `XTMP_BENCH_WORKERS=1` with `taskset -c 0`: client and server on one
    // core; the default 2: split over two (see perf/run.sh).
    let workers = std::env::var("XTMP_BENCH_WORKERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    let n = rounds();
    rt.block_on(async {
        let crypto = if cfg!(feature = "aws-lc") { "aws-lc-rs" } else { "pure Rust" };
        println!("{n} sequential round trips of {PAYLOAD} B on loopback (median / p99), {crypto} crypto");
        let only = std::env::var("XTMP_BENCH_ONLY").ok();
        for name in ["tcp", "udp"] {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let raw_n = std::env::var("XTMP_BENCH_RAW_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(n).max(1);
            let (transport, raw) = if name == "tcp" {
                (Transport::Tcp, raw_tcp(raw_n).await)
            } else {
                (Transport::Udp, raw_udp(raw_n).await)
            };
            let [request, acked] = xtmp(transport, n).await;
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!("{name}: raw ping-pong      {:8.1} µs / {:8.1} µs", us(raw.0), us(raw.1));
            for (what, (p50, p99)) in [("request/response", request), ("acknowledged send", acked)] {
                println!(
                    "{name}: {what:<17} {:8.1} µs / {:8.1} µs   {:5.2}× raw",
                    us(p50),
                    us(p99),
                    p50.as_secs_f64() / raw.0.as_secs_f64()
                );
            }
        }
    });
}
