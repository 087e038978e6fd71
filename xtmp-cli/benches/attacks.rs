//! Admission under attack, against a real `xtmp serve` process on loopback
//! (issue 41; SPEC.md 3.2). The attackers send from 127.0.1.0/24 and
//! above, the honest client from 127.0.0.1, another prefix. For each
//! attack it prints the attack's rate, the honest client's handshake
//! success and median latency before, during and after, and the server's
//! resident memory (idle, peak, final), with the targets:
//!
//! - an honest client from another prefix connects within 3x its normal
//!   handshake time during each attack;
//! - 1,000 honest simultaneous connects from one address all succeed
//!   (with retries) within 10 s;
//! - 10,000 silent connections cost the server under 64 MiB, and it
//!   returns to its idle size after they close.
//!
//! `cargo bench -p xtmp-cli --bench attacks` (Linux: it reads
//! `/proc/PID/status` and binds sources across 127.0.0.0/8). It prints
//! figures and verdicts; it fails only if the server dies.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::RustCrypto;
use xtmp_core::handshake::{ClientConfig, danger};
use xtmp_core::session::{PathKind, Session, SessionConfig};
use xtmp_core::time::Instant as CoreInstant;
use xtmp_tokio::{Client, ClientSetup, Endpoint};

use common::{Serve, rss_kib_of};

/// An attacker's source address: host `i` of the attackers' prefixes
/// (127.0.1.0/24 upward, 250 hosts each).
fn attacker_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 2 + (i % 250) as u8)
}

/// Honest handshakes, one after another, for `window`: (attempts, ok,
/// median latency in ms).
fn probe(rt: &tokio::runtime::Runtime, endpoint: &Endpoint, window: Duration) -> (usize, usize, f64) {
    let until = Instant::now() + window;
    let mut times = Vec::new();
    let mut attempts = 0;
    while Instant::now() < until || attempts == 0 {
        attempts += 1;
        let mut setup = ClientSetup::registry(None, false);
        setup.reconnect = None;
        let started = Instant::now();
        let ok = rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(10), Client::connect_to(endpoint, setup)).await {
                Ok(Ok(c)) => {
                    c.abort();
                    true
                }
                _ => false,
            }
        });
        if ok {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        thread::sleep(Duration::from_millis(20));
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    (attempts, times.len(), median)
}

/// Samples the server's memory until `stop`: the peak, in KiB.
fn sample_peak(server_pid: u32, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            let rss = rss_kib_of(&server_pid.to_string());
            peak = peak.max(rss);
            thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// A fresh client's first handshake frames (unkeyed mac1, as a client
/// that pins no identity sends): a datagram path's first datagram, or a
/// stream's whole hello.
fn hellos(n: usize, kind: PathKind) -> Vec<Vec<u8>> {
    let config = Arc::new(ClientConfig::new(Arc::new(RustCrypto), danger::no_server_verification()));
    let session = Arc::new(SessionConfig::default());
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    (0..n)
        .map(|_| {
            let mut s = Session::connect(CoreInstant::ZERO, session.clone(), config.clone(), kind, &mut rng)
                .expect("a client session");
            let mut out = Vec::new();
            let mut buf = vec![0u8; 4096];
            while let Some(t) = s.poll_transmit(CoreInstant::ZERO, &mut buf).expect("room") {
                out.extend_from_slice(&buf[..t.len]);
                if kind == PathKind::Datagram {
                    break;
                }
            }
            out
        })
        .collect()
}

/// A TCP connection from `ip` to `to`.
fn tcp_from(ip: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

struct Report {
    name: &'static str,
    rate: String,
    before: (usize, usize, f64),
    during: (usize, usize, f64),
    after: (usize, usize, f64),
    idle_kib: u64,
    peak_kib: u64,
    final_kib: u64,
}

impl Report {
    fn print(&self) {
        let f = |(a, ok, m): (usize, usize, f64)| format!("{ok}/{a} in {m:.1} ms");
        let ratio = self.during.2 / self.before.2;
        let verdict = if self.during.1 == self.during.0 && ratio <= 3.0 { "meets" } else { "MISSES" };
        println!(
            "{:<38} {:>22} | honest before {} | during {} ({ratio:.2}x, {verdict} the 3x target) | after {} | server {} MiB idle, {} MiB peak, {} MiB final",
            self.name,
            self.rate,
            f(self.before),
            f(self.during),
            f(self.after),
            self.idle_kib / 1024,
            self.peak_kib / 1024,
            self.final_kib / 1024
        );
    }
}

/// Runs `attack` (which returns its rate as text once `stop` is set) for
/// `secs` seconds while an honest client connects over `scheme`.
fn measure(
    name: &'static str,
    scheme: &str,
    secs: u64,
    attack: impl FnOnce(SocketAddr, Arc<AtomicBool>) -> String + Send + 'static,
) -> Report {
    let mut server = Serve::start(&["--shards", "1", "--listen", "xtmp+hybrid://127.0.0.1:0"]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let endpoint = server.endpoint(scheme);
    let before = probe(&rt, &endpoint, Duration::from_secs(1));
    let idle_kib = server.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(server.pid(), stop.clone());
    let attack_stop = Arc::new(AtomicBool::new(false));
    let addr = server.addr();
    let a = attack_stop.clone();
    let attacker = thread::spawn(move || attack(addr, a));
    thread::sleep(Duration::from_millis(500));
    let during = probe(&rt, &endpoint, Duration::from_secs(secs));
    attack_stop.store(true, Ordering::Relaxed);
    let rate = attacker.join().expect("the attacker");
    thread::sleep(Duration::from_secs(2));
    let after = probe(&rt, &endpoint, Duration::from_secs(1));
    let final_kib = server.rss_kib();
    stop.store(true, Ordering::Relaxed);
    let peak_kib = sampler.join().expect("the sampler");
    assert!(server.alive(), "{name}: the server died");
    Report { name, rate, before, during, after, idle_kib, peak_kib, final_kib }
}

/// Spoofed-style first fragments: first datagrams of fresh hellos from 32
/// addresses, never followed.
fn udp_first_fragments(addr: SocketAddr, stop: Arc<AtomicBool>) -> String {
    let frames = hellos(256, PathKind::Datagram);
    let sockets: Vec<UdpSocket> =
        (0..32).map(|i| UdpSocket::bind((attacker_ip(i), 0)).expect("an attacker socket")).collect();
    let (started, mut sent, mut bytes) = (Instant::now(), 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        for (i, f) in frames.iter().enumerate() {
            if sockets[i % 32].send_to(f, addr).is_ok() {
                sent += 1;
                bytes += f.len() as u64;
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    let s = started.elapsed().as_secs_f64();
    format!("{:.0} hellos/s, {:.1} Mbit/s", sent as f64 / s, bytes as f64 * 8.0 / s / 1e6)
}

/// 1,000 TCP connections from 32 addresses, each sending a whole hello
/// and never finishing the handshake.
fn tcp_unfinished_hellos(addr: SocketAddr, stop: Arc<AtomicBool>) -> String {
    let frames = hellos(64, PathKind::Stream);
    let started = Instant::now();
    let mut held = Vec::new();
    let opened = AtomicU64::new(0);
    while !stop.load(Ordering::Relaxed) {
        if held.len() < 1000 {
            let i = held.len();
            if let Ok(mut s) = tcp_from(attacker_ip(i % 32), addr) {
                let _ = s.write_all(&frames[i % frames.len()]);
                opened.fetch_add(1, Ordering::Relaxed);
                held.push(s);
            }
        } else {
            // Replace the ones the server closed (its hello timeout).
            thread::sleep(Duration::from_millis(50));
            held.retain(|s| s.peer_addr().is_ok());
        }
    }
    let n = opened.load(Ordering::Relaxed);
    format!("{n} conns ({:.0}/s)", n as f64 / started.elapsed().as_secs_f64())
}

/// 10,000 silent TCP connections from 20 prefixes (500 addresses): held
/// until the attack stops, then closed.
fn tcp_silent(addr: SocketAddr, stop: Arc<AtomicBool>) -> String {
    let mut held = Vec::new();
    for i in 0..10_000 {
        if let Ok(s) = tcp_from(attacker_ip(i % 5000), addr) {
            held.push(s);
        }
    }
    let n = held.len();
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    format!("{n} silent conns")
}

/// 1,000 honest clients connect at once from one address over `scheme`:
/// how many succeed, and how long the last took.
fn burst(scheme: &str) {
    let server = Serve::start(&["--shards", "1", "--listen", "xtmp+hybrid://127.0.0.1:0"]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let endpoint = server.endpoint(scheme);
    let started = Instant::now();
    let results: Vec<Option<Duration>> = rt.block_on(async {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    let mut setup = ClientSetup::registry(None, false);
                    setup.reconnect = None;
                    let t = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(10), Client::connect_to(&endpoint, setup)).await {
                        Ok(Ok(c)) => Some((t.elapsed(), c)),
                        _ => None,
                    }
                })
            })
            .collect();
        let mut out = Vec::new();
        let mut clients = Vec::new();
        for t in tasks {
            match t.await.ok().flatten() {
                Some((d, c)) => {
                    out.push(Some(d));
                    clients.push(c);
                }
                None => out.push(None),
            }
        }
        drop(clients);
        out
    });
    let ok = results.iter().flatten().count();
    let last = results.iter().flatten().max().copied().unwrap_or_default();
    let verdict = if ok == 1000 && last <= Duration::from_secs(10) { "meets" } else { "MISSES" };
    println!(
        "burst of 1,000 honest connects, {scheme:<12} {ok}/1000 connected, the last after {:.2} s (whole burst {:.2} s): {verdict} the target (all within 10 s)",
        last.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    if !cfg!(target_os = "linux") {
        println!("attacks: Linux only (loopback source addresses, /proc)");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!(
        "Admission under attack, against xtmp serve on loopback (honest client from 127.0.0.1, attackers from 127.0.1.0/24 up)"
    );
    // XTMP_ATTACKS=udp,tcp,silent,burst (default all) picks the attacks.
    let only = std::env::var("XTMP_ATTACKS").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    if run("udp") {
        measure("UDP first fragments, 32 addresses", "xtmp+udp", 3, udp_first_fragments).print();
    }
    if run("tcp") {
        measure("TCP unfinished hellos, 32 addresses", "xtmp", 3, tcp_unfinished_hellos).print();
    }
    if run("silent") {
        let silent = measure("10,000 silent TCP conns, 20 prefixes", "xtmp", 3, tcp_silent);
        silent.print();
        let cost = silent.peak_kib.saturating_sub(silent.idle_kib);
        println!(
            "10,000 silent connections cost the server {} MiB (target under 64 MiB: {}); after they closed it holds {} MiB ({} MiB idle before)",
            cost / 1024,
            if cost < 64 * 1024 { "meets" } else { "MISSES" },
            silent.final_kib / 1024,
            silent.idle_kib / 1024
        );
    }
    if run("burst") {
        burst("xtmp");
        burst("xtmp+udp");
    }
}
