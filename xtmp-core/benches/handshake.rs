//! Handshake CPU cost per side for each provider (the aws-lc-rs one with
//! `--features aws-lc`), next to the sum of the server's primitive
//! operations measured in the same run.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::{CryptoProvider, RustCrypto};
use xtmp_core::handshake::*;

fn providers() -> Vec<Arc<dyn CryptoProvider>> {
    #[allow(unused_mut)]
    let mut v: Vec<Arc<dyn CryptoProvider>> = vec![Arc::new(RustCrypto)];
    #[cfg(feature = "aws-lc")]
    v.push(Arc::new(xtmp_core::crypto::AwsLc));
    v
}

fn bench(c: &mut Criterion) {
    for p in providers() {
        bench_provider(c, p);
    }
}

fn bench_provider(c: &mut Criterion, p: Arc<dyn CryptoProvider>) {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let id = Arc::new(IdentityKeypair::generate(&*p, &mut rng).unwrap());
    let server = Arc::new(ServerConfig::new(p.clone(), id.clone()));
    let client = Arc::new(ClientConfig::new(p.clone(), Arc::new(Pinned(id.public().clone()))));

    let mut g = c.benchmark_group(format!("handshake/{}", p.name()));
    g.sample_size(30);
    g.bench_function("server accept (pinned)", |b| {
        let (_, hello) = ClientHandshake::start(client.clone(), &mut rng, 0).unwrap();
        b.iter(|| black_box(ServerHandshake::accept(server.clone(), &hello, &mut rng).unwrap()))
    });
    g.bench_function("full in-memory handshake, both sides", |b| {
        b.iter(|| {
            let (c1, hello) = ClientHandshake::start(client.clone(), &mut rng, 0).unwrap();
            let (flight, s1) = ServerHandshake::accept(server.clone(), &hello, &mut rng).unwrap();
            let (_, _, n) = split_message(&flight).unwrap().unwrap();
            let c2 = c1.handle_server_hello(&flight[..n]).unwrap();
            let (cf, out) = c2.handle_flight(&flight[n..], &mut rng, None).unwrap();
            black_box((s1.handle(&cf, None).unwrap(), out))
        })
    });
    // The server's primitives, for the 1.2x target.
    let (_, ek) = p.mlkem_generate(&mut rng).unwrap();
    let (_, peer) = p.x25519_generate(&mut rng).unwrap();
    g.bench_function("primitives: ML-KEM encaps + X25519 keygen/DH + ML-DSA-87 sign + Ed25519 sign", |b| {
        b.iter(|| {
            let kem = p.mlkem_encapsulate(&ek, &mut rng).unwrap();
            let (dh, _) = p.x25519_generate(&mut rng).unwrap();
            let ss = dh.agree(&peer).unwrap();
            let sig = id.sign(b"transcript hash stand-in 48 bytes..............", &mut rng).unwrap();
            black_box((kem, ss, sig))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
