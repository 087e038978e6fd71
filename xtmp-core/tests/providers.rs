//! The two crypto providers interoperate (feature `aws-lc`): identical
//! results on every deterministic operation, each other's keys,
//! ciphertexts and signatures accepted, the record vectors opened by both,
//! and whole handshakes and sessions with the client on one provider and
//! the server on the other.
#![cfg(feature = "aws-lc")]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::{AeadAlgorithm, AeadKey, AwsLc, CryptoError, CryptoProvider, RustCrypto, Secret};
use xtmp_core::handshake::SIGNATURE_CONTEXT;
use xtmp_core::session::{Event, PathKind, SendOptions};
use xtmp_core::wire::MessageType;

fn both() -> [(&'static str, Arc<dyn CryptoProvider>); 2] {
    [("rust-crypto", Arc::new(RustCrypto)), ("aws-lc-rs", Arc::new(AwsLc))]
}

#[test]
fn aead_results_are_byte_identical_and_cross_open() {
    for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305] {
        let key = Secret::new([0x42; 32]);
        let (a, b) = (RustCrypto.aead(alg, &key).unwrap(), AwsLc.aead(alg, &key).unwrap());
        for len in [0usize, 1, 17, 64, 1500, 16 * 1024] {
            let nonce = [len as u8; 12];
            let aad = [7u8; 96];
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (mut x, mut y) = (plain.clone(), plain.clone());
            let tx = a.seal(&nonce, &aad, &mut x).unwrap();
            let ty = b.seal(&nonce, &aad, &mut y).unwrap();
            assert_eq!((&x, tx), (&y, ty), "{alg:?} {len}");
            b.open(&nonce, &aad, &mut x, &tx).unwrap();
            a.open(&nonce, &aad, &mut y, &ty).unwrap();
            assert_eq!((&x, &y), (&plain, &plain));
            let mut bad = tx;
            bad[0] ^= 1;
            let mut z = y.clone();
            b.seal(&nonce, &aad, &mut z).unwrap();
            assert_eq!(b.open(&nonce, &aad, &mut z, &bad), Err(CryptoError::Decrypt));
        }
    }
}

/// Only the required methods: exercises the trait's default `open_to`
/// and `seal_gather`.
struct InPlaceOnly(Box<dyn AeadKey>);

impl AeadKey for InPlaceOnly {
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], CryptoError> {
        self.0.seal(nonce, aad, buf)
    }
    fn open(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> Result<(), CryptoError> {
        self.0.open(nonce, aad, buf, tag)
    }
}

#[test]
fn gathered_seals_and_out_of_place_opens_match_in_place_ones() {
    for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305] {
        let key = Secret::new([0x24; 32]);
        let keys: Vec<(&str, Box<dyn AeadKey>)> = vec![
            ("rust-crypto", RustCrypto.aead(alg, &key).unwrap()),
            ("aws-lc-rs", AwsLc.aead(alg, &key).unwrap()),
            ("default methods", Box::new(InPlaceOnly(RustCrypto.aead(alg, &key).unwrap()))),
        ];
        let reference = RustCrypto.aead(alg, &key).unwrap();
        for (name, k) in &keys {
            for len in [0usize, 1, 25, 64, 1500, 16 * 1024] {
                let (nonce, aad) = ([len as u8; 12], [3u8; 96]);
                let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let mut expected = plain.clone();
                let tag = reference.seal(&nonce, &aad, &mut expected).unwrap();
                // The head in place and the tail read from elsewhere, with
                // and without scratch room after the sealed part.
                for at in [0, len.min(25), len] {
                    for spare in [0, 16, 40] {
                        let mut buf = vec![0xee; len + spare];
                        buf[..at].copy_from_slice(&plain[..at]);
                        let t = k.seal_gather(&nonce, &aad, &mut buf, at, &plain[at..]).unwrap();
                        let what = format!("{name} {alg:?} len {len} at {at} spare {spare}");
                        assert_eq!((&buf[..len], t), (&expected[..], tag), "{what}");
                        assert!(buf[len..].iter().skip(16).all(|&b| b == 0xee), "{what}: wrote past the scratch room");
                    }
                }
                assert!(k.seal_gather(&nonce, &aad, &mut vec![0; len], len + 1, &[]).is_err(), "{name}");
                assert!(k.seal_gather(&nonce, &aad, &mut vec![0; len], usize::MAX - 8, &[]).is_err(), "{name}");
                let mut out = vec![0xee; len];
                k.open_to(&nonce, &aad, &expected, &tag, &mut out).unwrap();
                assert_eq!(out, plain, "{name} {alg:?} {len}");
                let mut bad = tag;
                bad[15] ^= 0x80;
                assert_eq!(k.open_to(&nonce, &aad, &expected, &bad, &mut out), Err(CryptoError::Decrypt), "{name}");
                let mut short = vec![0; len + 1];
                assert_eq!(k.open_to(&nonce, &aad, &expected, &tag, &mut short), Err(CryptoError::Decrypt), "{name}");
            }
        }
    }
}

#[test]
fn signatures_and_keys_agree_across_providers() {
    let (ml, ed) = (Secret::new([3; 32]), Secret::new([4; 32]));
    let a = RustCrypto.signer(&ml, &ed).unwrap();
    let b = AwsLc.signer(&ml, &ed).unwrap();
    assert_eq!(a.mldsa_public(), b.mldsa_public(), "ML-DSA-87 key generation from the same seed");
    assert_eq!(a.ed25519_public(), b.ed25519_public());
    let msg = b"XTMP/1 server CertificateVerify";
    assert_eq!(a.ed25519_sign(msg), b.ed25519_sign(msg), "Ed25519 is deterministic");
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let sa = a.mldsa_sign(msg, SIGNATURE_CONTEXT, &mut rng).unwrap();
    let sb = b.mldsa_sign(msg, SIGNATURE_CONTEXT, &mut rng).unwrap();
    for (_, p) in both() {
        p.mldsa_verify(&a.mldsa_public(), msg, SIGNATURE_CONTEXT, &sa).unwrap();
        p.mldsa_verify(&a.mldsa_public(), msg, SIGNATURE_CONTEXT, &sb).unwrap();
        assert!(p.mldsa_verify(&a.mldsa_public(), b"other", SIGNATURE_CONTEXT, &sb).is_err());
        p.ed25519_verify(&a.ed25519_public(), msg, &b.ed25519_sign(msg)).unwrap();
    }
    assert_eq!(b.mldsa_sign(msg, b"ctx", &mut rng).unwrap_err(), CryptoError::Unsupported);
}

#[test]
fn kem_and_dh_cross_agree_and_invalid_keys_are_refused_by_both() {
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    for (gen_name, g) in both() {
        for (enc_name, e) in both() {
            let (dk, ek) = g.mlkem_generate(&mut rng).unwrap();
            let (ct, ss) = e.mlkem_encapsulate(&ek, &mut rng).unwrap();
            assert_eq!(dk.decapsulate(&ct).unwrap().expose(), ss.expose(), "{gen_name} keys, {enc_name} encapsulates");
            let (x1, p1) = g.x25519_generate(&mut rng).unwrap();
            let (x2, p2) = e.x25519_generate(&mut rng).unwrap();
            assert_eq!(x1.agree(&p2).unwrap().expose(), x2.agree(&p1).unwrap().expose());
            let (x3, _) = g.x25519_generate(&mut rng).unwrap();
            assert_eq!(x3.agree(&[0; 32]).unwrap_err(), CryptoError::NonContributory, "{gen_name}");
        }
        // A coefficient of 4095 (not below q = 3329) fails the FIPS 203 check.
        let (_, mut ek) = g.mlkem_generate(&mut rng).unwrap();
        ek[0] = 0xff;
        ek[1] |= 0x0f;
        for (name, p) in both() {
            assert_eq!(p.mlkem_encapsulate(&ek, &mut rng).unwrap_err(), CryptoError::InvalidPublicKey, "{name}");
        }
    }
}

#[test]
fn handshakes_and_sessions_across_providers() {
    let pairs: [(Arc<dyn CryptoProvider>, Arc<dyn CryptoProvider>); 3] = [
        (Arc::new(RustCrypto), Arc::new(AwsLc)),
        (Arc::new(AwsLc), Arc::new(RustCrypto)),
        (Arc::new(AwsLc), Arc::new(AwsLc)),
    ];
    for (client, server) in pairs {
        for kind in [PathKind::Stream, PathKind::Datagram] {
            let names = (client.name(), server.name(), kind);
            let mut p = Setup::with_providers(kind, client.clone(), server.clone()).start();
            p.connect();
            assert!(matches!(p.client_events[0], Event::Connected { peer: Some(_), .. }), "{names:?}");
            p.client.send(MessageType::WALLET_REGISTER, Bytes::from_static(b"w"), SendOptions::default()).unwrap();
            p.server_session()
                .send(MessageType::LIVE_UPDATES, Bytes::from_static(b"u"), SendOptions::default())
                .unwrap();
            p.drive(100, |p| p.server_messages().len() == 1 && p.client_messages().len() == 1);
            // Key updates and a hybrid re-key across providers too.
            let now = p.now;
            assert!(p.client.update_key_now(now));
            assert!(p.client.rekey_now(now));
            p.drive(1000, |p| {
                p.client.stats().rekeys == 1
                    && p.server_events.iter().any(|e| matches!(e, Event::KeyUpdated { sending: true, .. }))
            });
            p.client.send(MessageType::WALLET_REGISTER, Bytes::from_static(b"x"), SendOptions::default()).unwrap();
            p.drive(100, |p| p.server_messages().len() == 2);
            assert_eq!(p.server_session().stats().decrypt_failures, 0, "{names:?}");
        }
    }
}

/// The record vectors of SPEC.md section 3.9 open under the aws-lc AEAD.
#[test]
fn record_vectors_open_with_aws_lc() {
    use xtmp_core::crypto::schedule::{TrafficKeys, next_traffic_secret};
    use xtmp_core::wire::{Frame, associated_data};
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/session.json")).unwrap(),
    )
    .unwrap();
    for r in v["records"].as_array().unwrap() {
        let hex_secret = v["secrets"][r["traffic_secret"].as_str().unwrap()].as_str().unwrap();
        let mut secret = Secret::<48>::new(hex::decode(hex_secret).unwrap().try_into().unwrap());
        for _ in 0..r["generation"].as_u64().unwrap() {
            secret = next_traffic_secret(&AwsLc, &secret).unwrap();
        }
        let keys = TrafficKeys::derive(&AwsLc, &secret).unwrap();
        let frame = hex::decode(r["frame"].as_str().unwrap()).unwrap();
        let (f, _) = Frame::decode(&frame, 1 << 20).unwrap();
        let aead = AwsLc.aead(AeadAlgorithm::Aes256Gcm, &keys.key).unwrap();
        let mut plain = f.payload().to_vec();
        aead.open(&keys.nonce(f.header().sequence), &associated_data(f.raw_header()), &mut plain, &f.header().tag)
            .unwrap();
        assert_eq!(hex::encode(&plain[25..]), r["body"].as_str().unwrap(), "after the 25-byte data header");
    }
}
