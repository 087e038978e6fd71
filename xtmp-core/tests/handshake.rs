//! Handshake behaviour: every configuration completes, and every tampered
//! byte, wrong identity, stripped signature, replay and downgrade fails with
//! the expected error.

use std::sync::{Arc, Mutex};

mod common;
use common::CountingVerifies;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::{AeadAlgorithm, CryptoProvider, RustCrypto, TrafficKeys};
use xtmp_core::handshake::messages::CERTIFICATE_VERIFY;
use xtmp_core::handshake::*;

fn provider() -> Arc<dyn CryptoProvider> {
    Arc::new(RustCrypto)
}

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

fn identity(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::generate(&RustCrypto, &mut rng(seed)).unwrap())
}

/// Splits a flight into (type, whole message bytes).
fn messages(mut flight: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((ty, _, n)) = split_message(flight).unwrap() {
        out.push((ty, flight[..n].to_vec()));
        flight = &flight[n..];
    }
    assert!(flight.is_empty());
    out
}

fn body(msg: &[u8]) -> &[u8] {
    &msg[4..]
}

/// Runs a whole handshake; returns both outcomes.
fn run(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    seed: u8,
) -> Result<(HandshakeOutcome, HandshakeOutcome), HandshakeError> {
    let mut r = rng(seed);
    let (c1, hello) = ClientHandshake::start(client, &mut r, 0)?;
    let (flight, s1) = ServerHandshake::accept(server, &hello, &mut r)?;
    let msgs = messages(&flight);
    let c2 = c1.handle_server_hello(&msgs[0].1)?;
    let (cflight, client_out) = c2.handle_flight(&msgs[1].1, &mut r, Some(1_800_000_000))?;
    let server_out = s1.handle(&cflight, Some(1_800_000_000))?;
    Ok((client_out, server_out))
}

fn assert_agree(c: &HandshakeOutcome, s: &HandshakeOutcome) {
    assert_eq!(c.transcript_hash, s.transcript_hash);
    assert_eq!(c.client_secret.expose(), s.client_secret.expose());
    assert_eq!(c.server_secret.expose(), s.server_secret.expose());
    assert_eq!(c.exporter.expose(), s.exporter.expose());
    assert_eq!(c.resumption.expose(), s.resumption.expose());
    assert_ne!(c.client_secret.expose(), c.server_secret.expose());
    assert_eq!((c.client_session_id, c.server_session_id), (s.client_session_id, s.server_session_id));
    assert_eq!(c.cipher, s.cipher);
    assert_eq!(c.send_secret().expose(), s.recv_secret().expose());
}

#[test]
fn every_configuration_completes() {
    let server_id = identity(1);
    let wallet = identity(2);
    let root = identity(3);
    let cred = Credential::issue(&root, server_id.public(), 1_700_000_000, 1_900_000_000, &mut rng(4)).unwrap();
    let verifiers: Vec<(&str, Arc<dyn ServerVerifier>)> = vec![
        ("pinned", Arc::new(Pinned(server_id.public().clone()))),
        ("fingerprint", Arc::new(Fingerprints(vec![identity(9).key_id(), server_id.key_id()]))),
        ("root", Arc::new(RootOfTrust(root.public().clone()))),
    ];
    let cipher_sets = [
        (
            vec![AeadAlgorithm::Aes256Gcm],
            vec![AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305],
            AeadAlgorithm::Aes256Gcm,
        ),
        (
            vec![AeadAlgorithm::ChaCha20Poly1305],
            vec![AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305],
            AeadAlgorithm::ChaCha20Poly1305,
        ),
        (
            vec![AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305],
            vec![AeadAlgorithm::ChaCha20Poly1305, AeadAlgorithm::Aes256Gcm],
            AeadAlgorithm::ChaCha20Poly1305,
        ),
    ];
    let mut seed = 10;
    for (name, verifier) in &verifiers {
        for (client_ciphers, server_ciphers, expect) in &cipher_sets {
            for client_auth in [false, true] {
                seed += 1;
                let mut c = ClientConfig::new(provider(), verifier.clone());
                c.ciphers = client_ciphers.clone();
                c.identity = Some(wallet.clone());
                let mut s = ServerConfig::new(provider(), server_id.clone());
                s.ciphers = server_ciphers.clone();
                s.credential = Some(cred.clone());
                if client_auth {
                    s.client_auth = Some(Arc::new(Fingerprints(vec![wallet.key_id()])));
                }
                let (co, so) = run(Arc::new(c), Arc::new(s), seed).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_agree(&co, &so);
                assert_eq!(co.cipher, *expect, "{name}");
                assert_eq!(co.peer_identity.as_ref().unwrap().key_id(), server_id.key_id());
                assert_eq!(so.peer_identity.as_ref().map(|i| i.key_id()), client_auth.then(|| wallet.key_id()));
            }
        }
    }
}

fn default_pair() -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let server_id = identity(1);
    let client = ClientConfig::new(provider(), Arc::new(Pinned(server_id.public().clone())));
    (Arc::new(client), Arc::new(ServerConfig::new(provider(), server_id)))
}

#[test]
fn pinned_reply_is_smaller_than_inline() {
    let server_id = identity(1);
    let server = Arc::new(ServerConfig::new(provider(), server_id.clone()));
    let sizes: Vec<usize> = [
        Arc::new(Pinned(server_id.public().clone())) as Arc<dyn ServerVerifier>,
        Arc::new(Fingerprints(vec![server_id.key_id()])),
    ]
    .into_iter()
    .map(|v| {
        let (_, hello) = ClientHandshake::start(Arc::new(ClientConfig::new(provider(), v)), &mut rng(5), 0).unwrap();
        ServerHandshake::accept(server.clone(), &hello, &mut rng(6)).unwrap().0.len()
    })
    .collect();
    assert!(sizes[0] + 2000 < sizes[1], "{sizes:?}");
    assert!(sizes[0] < 7000 && sizes[1] < 10_000, "{sizes:?}");
}

#[test]
fn every_tampered_client_hello_byte_is_rejected_cheaply() {
    let (client, server) = default_pair();
    let (_, hello) = ClientHandshake::start(client, &mut rng(7), 0).unwrap();
    for i in 0..hello.len() {
        let mut bad = hello.clone();
        bad[i] ^= 0x01;
        let err = ServerHandshake::check_hello(&server, &bad).expect_err("tampered hello accepted");
        assert!(
            matches!(
                err,
                HandshakeError::BadMac1
                    | HandshakeError::Malformed { .. }
                    | HandshakeError::UnexpectedMessage { .. }
                    | HandshakeError::UnsupportedVersion(_)
                    | HandshakeError::TooLarge { .. }
            ),
            "byte {i}: {err}"
        );
    }
}

#[test]
fn every_tampered_server_flight_byte_fails_the_handshake() {
    let (client, server) = default_pair();
    let (_, hello) = ClientHandshake::start(client.clone(), &mut rng(8), 0).unwrap();
    let (flight, _) = ServerHandshake::accept(server, &hello, &mut rng(9)).unwrap();
    // Every byte: the ServerHello and the whole Encrypted message.
    let positions = 0..flight.len();
    for i in positions {
        let mut bad = flight.clone();
        bad[i] ^= 0x80;
        let (c1, again) = ClientHandshake::start(client.clone(), &mut rng(8), 0).unwrap();
        assert_eq!(again, hello);
        // Split where the genuine flight splits; a tampered length byte then
        // shows up as a malformed message.
        let n = messages(&flight)[0].1.len();
        let result = c1.handle_server_hello(&bad[..n]).and_then(|c2| c2.handle_flight(&bad[n..], &mut rng(10), None));
        assert!(result.is_err(), "tampered byte {i} accepted");
    }
}

#[test]
fn every_tampered_client_flight_byte_fails_the_handshake() {
    let server_id = identity(1);
    let wallet = identity(2);
    let mut c = ClientConfig::new(provider(), Arc::new(Pinned(server_id.public().clone())));
    c.identity = Some(wallet.clone());
    let mut s = ServerConfig::new(provider(), server_id);
    s.client_auth = Some(Arc::new(Fingerprints(vec![wallet.key_id()])));
    let (c, s) = (Arc::new(c), Arc::new(s));
    let (c1, hello) = ClientHandshake::start(c.clone(), &mut rng(11), 0).unwrap();
    let (flight, _) = ServerHandshake::accept(s.clone(), &hello, &mut rng(12)).unwrap();
    let m = messages(&flight);
    let c2 = c1.handle_server_hello(&m[0].1).unwrap();
    let (cflight, _) = c2.handle_flight(&m[1].1, &mut rng(13), None).unwrap();
    // Every byte of the client's flight (Encrypted: Parameters, ClientAuth,
    // CertificateVerify, Finished). The server state is rebuilt each time
    // from the same seed, so it matches the genuine flight.
    for i in 0..cflight.len() {
        let (_, s1) = ServerHandshake::accept(s.clone(), &hello, &mut rng(12)).unwrap();
        let mut bad = cflight.clone();
        bad[i] ^= 0x04;
        assert!(s1.handle(&bad, None).is_err(), "tampered client byte {i} accepted");
    }
}

/// mac1 keyed with the server's key id (a pinning client) is accepted
/// whatever `accept_unkeyed_mac1` says; the all-zero key (a client that
/// trusts by fingerprint set) only while it is on.
#[test]
fn mac1_keyed_or_unkeyed_is_accepted_as_configured() {
    let server_id = identity(1);
    let pinned: Arc<dyn ServerVerifier> = Arc::new(Pinned(server_id.public().clone()));
    let fingerprints: Arc<dyn ServerVerifier> = Arc::new(Fingerprints(vec![server_id.key_id()]));
    for accept_unkeyed in [true, false] {
        let mut server = ServerConfig::new(provider(), server_id.clone());
        server.accept_unkeyed_mac1 = accept_unkeyed;
        let server = Arc::new(server);
        for (verifier, keyed) in [(pinned.clone(), true), (fingerprints.clone(), false)] {
            let client = Arc::new(ClientConfig::new(provider(), verifier));
            let (_, hello) = ClientHandshake::start(client, &mut rng(12), 0).unwrap();
            let summary = ServerHandshake::check_hello(&server, &hello);
            let accepted = ServerHandshake::accept(server.clone(), &hello, &mut rng(13));
            if keyed || accept_unkeyed {
                assert_eq!(summary.unwrap().pinned, keyed, "keyed {keyed}, unkeyed accepted {accept_unkeyed}");
                assert!(accepted.is_ok(), "keyed {keyed}, unkeyed accepted {accept_unkeyed}");
            } else {
                assert_eq!(summary.unwrap_err(), HandshakeError::BadMac1);
                assert_eq!(accepted.unwrap_err(), HandshakeError::BadMac1);
            }
        }
    }
}

#[test]
fn wrong_pinned_identity_is_refused_by_mac1() {
    let (_, server) = default_pair();
    let client = Arc::new(ClientConfig::new(provider(), Arc::new(Pinned(identity(42).public().clone()))));
    let (_, hello) = ClientHandshake::start(client, &mut rng(12), 0).unwrap();
    assert_eq!(ServerHandshake::accept(server, &hello, &mut rng(13)).unwrap_err(), HandshakeError::BadMac1);
}

#[test]
fn unknown_fingerprint_and_root_failures() {
    let server_id = identity(1);
    let server = Arc::new(ServerConfig::new(provider(), server_id.clone()));
    let client = Arc::new(ClientConfig::new(provider(), Arc::new(Fingerprints(vec![identity(42).key_id()]))));
    assert_eq!(run(client, server.clone(), 14).unwrap_err(), HandshakeError::Untrusted(TrustError::UnknownIdentity));

    let root = identity(3);
    let client = Arc::new(ClientConfig::new(provider(), Arc::new(RootOfTrust(root.public().clone()))));
    assert_eq!(run(client.clone(), server, 15).unwrap_err(), HandshakeError::Untrusted(TrustError::MissingCredential));
    for (nb, na, want) in [
        (1_000, 2_000, TrustError::CredentialExpired),
        (1_850_000_000, 1_900_000_000, TrustError::CredentialNotYetValid),
    ] {
        let mut s = ServerConfig::new(provider(), server_id.clone());
        s.credential = Some(Credential::issue(&root, server_id.public(), nb, na, &mut rng(16)).unwrap());
        assert_eq!(run(client.clone(), Arc::new(s), 17).unwrap_err(), HandshakeError::Untrusted(want));
    }
    let mut s = ServerConfig::new(provider(), server_id.clone());
    s.credential = Some(Credential::issue(&identity(5), server_id.public(), 0, u64::MAX, &mut rng(16)).unwrap());
    assert_eq!(run(client, Arc::new(s), 18).unwrap_err(), HandshakeError::Untrusted(TrustError::UnknownIssuer));
}

/// Collects key-log secrets, so a test can play a man in the middle who
/// knows the server's handshake key (as after a key compromise) and
/// rewrites the encrypted flight.
#[derive(Debug, Default)]
struct Log(Mutex<Vec<(&'static str, Vec<u8>)>>);
impl KeyLog for Log {
    fn log(&self, label: &'static str, _: &[u8; 32], secret: &[u8]) {
        self.0.lock().unwrap().push((label, secret.to_vec()));
    }
}

#[test]
fn stripped_signature_halves_are_detected() {
    for (offset_in_cv, want) in [(10usize, SignatureAlgorithm::MlDsa87), (4627 + 10, SignatureAlgorithm::Ed25519)] {
        let server_id = identity(1);
        let log = Arc::new(Log::default());
        let mut s = ServerConfig::new(provider(), server_id.clone());
        s.key_log = Some(log.clone());
        let client = Arc::new(ClientConfig::new(provider(), Arc::new(Fingerprints(vec![server_id.key_id()]))));
        let mut r = rng(19);
        let (c1, hello) = ClientHandshake::start(client, &mut r, 0).unwrap();
        let (flight, _) = ServerHandshake::accept(Arc::new(s), &hello, &mut r).unwrap();
        let m = messages(&flight);
        // Decrypt the flight with the logged s_hs secret, zero part of one
        // signature half, and re-seal it.
        let s_hs = log.0.lock().unwrap().iter().find(|(l, _)| *l == "s_hs_traffic").unwrap().1.clone();
        let secret = xtmp_core::crypto::Secret::<48>::new(s_hs.try_into().unwrap());
        let keys = TrafficKeys::derive(&RustCrypto, &secret).unwrap();
        let aead = RustCrypto.aead(AeadAlgorithm::Aes256Gcm, &keys.key).unwrap();
        let enc = body(&m[1].1);
        let (ct, tag) = enc.split_at(enc.len() - 16);
        let mut pt = ct.to_vec();
        aead.open(&keys.nonce(0), &m[1].1[..4], &mut pt, tag.try_into().unwrap()).unwrap();
        let inner = messages(&pt);
        assert_eq!(inner[2].0, CERTIFICATE_VERIFY);
        let cv_start = inner[0].1.len() + inner[1].1.len() + 4;
        pt[cv_start + offset_in_cv..cv_start + offset_in_cv + 16].fill(0);
        let tag = aead.seal(&keys.nonce(0), &m[1].1[..4], &mut pt).unwrap();
        let mut resealed = m[1].1[..4].to_vec();
        resealed.extend_from_slice(&pt);
        resealed.extend_from_slice(&tag);
        let c2 = c1.handle_server_hello(&m[0].1).unwrap();
        assert_eq!(
            c2.handle_flight(&resealed, &mut r, None).unwrap_err(),
            HandshakeError::BadSignature { algorithm: want, signer: Role::Server }
        );
    }
}

#[test]
fn replayed_client_hello_cannot_complete() {
    let (client, server) = default_pair();
    let mut r = rng(20);
    let (c1, hello) = ClientHandshake::start(client, &mut r, 0).unwrap();
    let (flight, s_first) = ServerHandshake::accept(server.clone(), &hello, &mut r).unwrap();
    // The attacker replays the hello: the server answers with fresh keys...
    let (_, s_replayed) = ServerHandshake::accept(server, &hello, &mut rng(21)).unwrap();
    assert_ne!(s_first.server_session_id(), s_replayed.server_session_id());
    // ...and the genuine client's flight (all an attacker could replay) does
    // not complete the replayed handshake.
    let m = messages(&flight);
    let (cflight, _) = c1.handle_server_hello(&m[0].1).unwrap().handle_flight(&m[1].1, &mut r, None).unwrap();
    assert_eq!(s_replayed.handle(&cflight, None).unwrap_err(), HandshakeError::DecryptFailed { from: Role::Client });
    assert!(s_first.handle(&cflight, None).is_ok());
}

#[test]
fn downgrades_are_detected() {
    // A man in the middle strips AES-256-GCM from an unkeyed-mac1 hello and
    // recomputes mac1 (the zero key is public): the transcripts then differ
    // and the client cannot open the server's flight.
    let server_id = identity(1);
    let server = Arc::new(ServerConfig::new(provider(), server_id.clone()));
    let client = Arc::new(ClientConfig::new(provider(), Arc::new(Fingerprints(vec![server_id.key_id()]))));
    let mut r = rng(22);
    let (c1, hello) = ClientHandshake::start(client, &mut r, 0).unwrap();
    // Layout: header 4, version 1, suite count 1, suite 2, cipher count 1, ciphers [1, 2].
    assert_eq!(&hello[8..11], &[2, 1, 2]);
    let mut forged = hello.clone();
    forged[9] = 2; // offer ChaCha20 twice: the server now picks ChaCha20
    let n = forged.len() - 16;
    let mac = xtmp_core::crypto::RustCrypto.hmac_sha384(&[0; 16], &[b"xtmp1 mac1", &forged[..n]]);
    forged[n..].copy_from_slice(&mac.expose()[..16]);
    let (flight, _) = ServerHandshake::accept(server.clone(), &forged, &mut r).unwrap();
    let m = messages(&flight);
    let c2 = c1.handle_server_hello(&m[0].1).unwrap();
    assert_eq!(
        c2.handle_flight(&m[1].1, &mut r, None).unwrap_err(),
        HandshakeError::DecryptFailed { from: Role::Server }
    );

    // A server (or attacker) choosing a cipher the client did not offer.
    let mut c = ClientConfig::new(provider(), Arc::new(Fingerprints(vec![server_id.key_id()])));
    c.ciphers = vec![AeadAlgorithm::Aes256Gcm];
    let (c1, hello) = ClientHandshake::start(Arc::new(c), &mut r, 0).unwrap();
    let (flight, _) = ServerHandshake::accept(server, &hello, &mut r).unwrap();
    let mut sh = messages(&flight)[0].1.clone();
    sh[4 + 3] = 2; // the cipher byte: version 1, suite 2, then cipher
    assert_eq!(c1.handle_server_hello(&sh).unwrap_err(), HandshakeError::Downgrade);
}

#[test]
fn an_untrusted_clients_signatures_are_never_verified() {
    // Trust is checked first: a client the server would refuse costs it
    // no signature verification. A trusted one costs two.
    let server_id = identity(1);
    let wallet = identity(2);
    for (trusted, verifies) in [(false, 0), (true, 2)] {
        let counting = Arc::new(CountingVerifies::default());
        let mut s = ServerConfig::new(counting.clone(), server_id.clone());
        let allowed = if trusted { wallet.key_id() } else { identity(9).key_id() };
        s.client_auth = Some(Arc::new(Fingerprints(vec![allowed])));
        let mut c = ClientConfig::new(provider(), Arc::new(Pinned(server_id.public().clone())));
        c.identity = Some(wallet.clone());
        let result = run(Arc::new(c), Arc::new(s), 31);
        assert_eq!(result.is_ok(), trusted, "{result:?}");
        if !trusted {
            assert!(matches!(result, Err(HandshakeError::Untrusted(_))), "{result:?}");
        }
        assert_eq!(counting.verifies.load(std::sync::atomic::Ordering::Relaxed), verifies);
    }
}

#[test]
fn client_auth_required_but_absent() {
    let server_id = identity(1);
    let mut s = ServerConfig::new(provider(), server_id.clone());
    s.client_auth = Some(Arc::new(danger::AnyClient));
    let client = Arc::new(ClientConfig::new(provider(), Arc::new(Pinned(server_id.public().clone()))));
    assert_eq!(run(client, Arc::new(s), 23).unwrap_err(), HandshakeError::ClientAuthRequired);
}

#[test]
fn hello_is_padded_and_capped_at_the_largest_hello() {
    let (client, server) = default_pair();
    let (c1, hello) = ClientHandshake::start(client.clone(), &mut rng(24), 3000).unwrap();
    assert!(hello.len() >= 3000);
    assert_eq!(c1.hello_message(), &hello[..], "a Retry asks for these same bytes again");
    let summary = ServerHandshake::check_hello(&server, &hello).unwrap();
    assert!(summary.pinned);
    // However much padding is asked for, a hello never passes the cap a
    // server refuses beyond (SPEC.md 2.2).
    let (_, big) = ClientHandshake::start(client, &mut rng(25), 100_000).unwrap();
    assert_eq!(big.len(), xtmp_core::handshake::messages::MAX_CLIENT_HELLO_LEN);
    ServerHandshake::check_hello(&server, &big).unwrap();
}

#[test]
fn identity_files_round_trip_and_hide_secrets() {
    let id = identity(30);
    let pem = id.to_pem();
    assert!(pem.starts_with("-----BEGIN XTMP PRIVATE IDENTITY-----\n"));
    let back = IdentityKeypair::from_pem(&RustCrypto, &pem).unwrap();
    assert_eq!(back.key_id(), id.key_id());
    let public = PublicIdentity::from_pem(&RustCrypto, &id.public().to_pem()).unwrap();
    assert_eq!(&public, id.public());
    assert_eq!(KeyId::parse(&id.key_id().to_string()), Some(id.key_id()));
    assert_eq!(IdentityKeypair::from_pem(&RustCrypto, "junk").unwrap_err(), IdentityFileError::Armor);
    assert_eq!(
        PublicIdentity::from_pem(&RustCrypto, &pem.replace("PRIVATE", "PUBLIC")).unwrap_err(),
        IdentityFileError::Format
    );
    let debug = format!("{id:?}");
    assert!(debug.contains("redacted") && !debug.contains(pem.lines().nth(3).unwrap()));
    let (c, s) = run(default_pair().0, default_pair().1, 31).unwrap();
    let debug = format!("{c:?} {s:?}");
    for secret in [c.client_secret.expose().as_slice(), c.exporter.expose(), s.resumption.expose()] {
        assert!(!debug.contains(&format!("{:?}", &secret[..4])), "secret bytes in Debug output");
    }
    assert!(debug.contains("redacted"));
}

#[test]
fn errors_name_what_failed() {
    let cases = [
        (
            HandshakeError::Malformed { message: "ClientHello", field: "token length" },
            "malformed ClientHello: bad or missing token length",
        ),
        (
            HandshakeError::BadSignature { algorithm: SignatureAlgorithm::Ed25519, signer: Role::Server },
            "server Ed25519 signature",
        ),
        (HandshakeError::Untrusted(TrustError::CredentialExpired), "credential has expired"),
    ];
    for (e, text) in cases {
        assert!(e.to_string().contains(text), "{e}");
    }
}
