//! The post-quantum handshake (SPEC.md, "Handshake"): identities, trust,
//! message codecs, and the client and server state machines.
//!
//! The state machines are values consumed by each step, so a stale state
//! cannot be reused. They work on whole handshake messages; carrying those
//! messages in frames (fragmentation, retransmission, amplification limits)
//! is the session's job.
//!
//! ```
//! use std::sync::Arc;
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//! use xtmp_core::crypto::{CryptoProvider, RustCrypto};
//! use xtmp_core::handshake::{
//!     ClientConfig, ClientHandshake, IdentityKeypair, Pinned, ServerConfig, ServerHandshake, split_message,
//! };
//!
//! let provider: Arc<dyn CryptoProvider> = Arc::new(RustCrypto);
//! let mut rng = ChaCha20Rng::from_seed([1; 32]);
//! let server_id = Arc::new(IdentityKeypair::generate(&*provider, &mut rng).unwrap());
//! let server = Arc::new(ServerConfig::new(provider.clone(), server_id.clone()));
//! let client = Arc::new(ClientConfig::new(provider, Arc::new(Pinned(server_id.public().clone()))));
//!
//! let (expect_sh, hello) = ClientHandshake::start(client, &mut rng, 0).unwrap();
//! let (flight, expect_cf) = ServerHandshake::accept(server, &hello, &mut rng).unwrap();
//! // The server's flight is two messages: ServerHello, then Encrypted.
//! let (_, _, n) = split_message(&flight).unwrap().unwrap();
//! let expect_flight = expect_sh.handle_server_hello(&flight[..n]).unwrap();
//! let (client_flight, client_keys) = expect_flight.handle_flight(&flight[n..], &mut rng, None).unwrap();
//! let server_keys = expect_cf.handle(&client_flight, None).unwrap();
//! assert_eq!(client_keys.transcript_hash, server_keys.transcript_hash);
//! ```

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

mod client;
mod error;
mod identity;
pub mod messages;
pub(crate) mod server;
mod trust;

pub use client::{ClientConfig, ClientHandshake, ExpectServerFlight, ExpectServerHello};
pub use error::{HandshakeError, Role, SignatureAlgorithm, TrustError};
pub use identity::{
    CREDENTIAL_LEN, Credential, IdentityFileError, IdentityKeypair, KeyId, PUBLIC_IDENTITY_LEN, PublicIdentity,
};
pub use messages::{SessionParams, split_message};
pub use server::{ExpectClientFlight, HelloSummary, ServerConfig, ServerHandshake, retry_message};
pub use trust::{ClientVerifier, Fingerprints, Pinned, RootOfTrust, ServerVerifier, danger};

use crate::crypto::schedule::{self, TrafficKeys};
use crate::crypto::{AeadAlgorithm, CryptoProvider, HASH_LEN, Hash, Secret, Suite, TAG_LEN};

/// The FIPS 204 context string of every ML-DSA-87 signature XTMP makes:
/// empty. Every signed content starts with its own domain-separation
/// string (`"XTMP/1 server CertificateVerify"`, `"xtmp1 credential"`), and
/// an empty context lets any FIPS 204 implementation interoperate,
/// including those without context support (AWS-LC).
pub const SIGNATURE_CONTEXT: &[u8] = b"";

/// Receives the handshake's secrets as they are derived, for test vectors
/// and for decrypting captures while debugging (like `SSLKEYLOGFILE`).
/// Anything that holds these secrets can read the session: never install
/// one in production.
pub trait KeyLog: Send + Sync + fmt::Debug {
    /// `label` names the secret (SPEC.md key schedule names), `client_random`
    /// identifies the handshake.
    fn log(&self, label: &'static str, client_random: &[u8; 32], secret: &[u8]);
}

/// What a completed handshake yields: the negotiated parameters, the peer,
/// and the application traffic secrets of both directions.
#[derive(Debug)]
pub struct HandshakeOutcome {
    /// This side's role.
    pub role: Role,
    /// The handshake suite.
    pub suite: Suite,
    /// The record cipher.
    pub cipher: AeadAlgorithm,
    /// The session id the client chose: the server puts it in frames to the client.
    pub client_session_id: u64,
    /// The session id the server chose: the client puts it in frames to the server.
    pub server_session_id: u64,
    /// The peer's identity: always the server's on the client; the client's
    /// on the server when it authenticated.
    pub peer_identity: Option<PublicIdentity>,
    /// The parameters the peer announced.
    pub peer_params: SessionParams,
    /// `c ap traffic`: the client-to-server application traffic secret.
    pub client_secret: Secret<HASH_LEN>,
    /// `s ap traffic`: the server-to-client application traffic secret.
    pub server_secret: Secret<HASH_LEN>,
    /// `exp master`: for applications that derive their own keys.
    pub exporter: Secret<HASH_LEN>,
    /// `res master`: for future session resumption.
    pub resumption: Secret<HASH_LEN>,
    /// The hash of the whole transcript, through the client's Finished.
    pub transcript_hash: [u8; HASH_LEN],
}

impl HandshakeOutcome {
    /// The traffic secret this side sends with.
    pub fn send_secret(&self) -> &Secret<HASH_LEN> {
        match self.role {
            Role::Client => &self.client_secret,
            Role::Server => &self.server_secret,
        }
    }

    /// The traffic secret this side receives with.
    pub fn recv_secret(&self) -> &Secret<HASH_LEN> {
        match self.role {
            Role::Client => &self.server_secret,
            Role::Server => &self.client_secret,
        }
    }
}

/// The running transcript hash over handshake messages in plaintext.
pub(crate) struct Transcript(Box<dyn Hash>);

impl Transcript {
    pub(crate) fn new(p: &dyn CryptoProvider) -> Self {
        Transcript(p.sha384())
    }

    pub(crate) fn add(&mut self, message: &[u8]) {
        self.0.update(message);
    }

    /// Adds a message given by type and body.
    pub(crate) fn add_parts(&mut self, ty: u8, body: &[u8]) {
        let len = (body.len() as u32).to_be_bytes();
        self.0.update(&[ty, len[1], len[2], len[3]]);
        self.0.update(body);
    }

    pub(crate) fn hash(&self) -> [u8; HASH_LEN] {
        self.0.current()
    }
}

/// The bytes both CertificateVerify signatures cover:
/// `64 × 0x20 ‖ "XTMP/1 <role> CertificateVerify" ‖ 0x00 ‖ transcript_hash`.
pub(crate) fn certificate_verify_input(role: Role, th: &[u8; HASH_LEN]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + 40 + HASH_LEN);
    m.resize(64, 0x20);
    m.extend_from_slice(match role {
        Role::Server => b"XTMP/1 server CertificateVerify".as_slice(),
        Role::Client => b"XTMP/1 client CertificateVerify".as_slice(),
    });
    m.push(0);
    m.extend_from_slice(th);
    m
}

/// Seals `inner` (a sequence of messages) into an Encrypted message under
/// the handshake traffic secret: nonce `iv ⊕ 0`, associated data the
/// message's own 4-byte header.
pub(crate) fn seal_flight(
    p: &dyn CryptoProvider,
    cipher: AeadAlgorithm,
    secret: &Secret<HASH_LEN>,
    mut inner: Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), HandshakeError> {
    let keys = TrafficKeys::derive(p, secret)?;
    let aead = p.aead(cipher, &keys.key)?;
    let len = ((inner.len() + TAG_LEN) as u32).to_be_bytes();
    let header = [messages::ENCRYPTED, len[1], len[2], len[3]];
    let tag = aead.seal(&keys.nonce(0), &header, &mut inner)?;
    out.extend_from_slice(&header);
    out.extend_from_slice(&inner);
    out.extend_from_slice(&tag);
    Ok(())
}

/// Opens an Encrypted message body sealed by [`seal_flight`].
pub(crate) fn open_flight(
    p: &dyn CryptoProvider,
    cipher: AeadAlgorithm,
    secret: &Secret<HASH_LEN>,
    body: &[u8],
    from: Role,
) -> Result<Vec<u8>, HandshakeError> {
    let split = body.len().checked_sub(TAG_LEN).ok_or(HandshakeError::DecryptFailed { from })?;
    let (ct, tag) = body.split_at(split);
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| HandshakeError::DecryptFailed { from })?;
    let keys = TrafficKeys::derive(p, secret)?;
    let aead = p.aead(cipher, &keys.key)?;
    let len = (body.len() as u32).to_be_bytes();
    let header = [messages::ENCRYPTED, len[1], len[2], len[3]];
    let mut pt = ct.to_vec();
    aead.open(&keys.nonce(0), &header, &mut pt, tag).map_err(|_| HandshakeError::DecryptFailed { from })?;
    Ok(pt)
}

/// The secrets shared by both state machines after the ServerHello.
pub(crate) struct HandshakeKeys {
    pub(crate) client_hs: Secret<HASH_LEN>,
    pub(crate) server_hs: Secret<HASH_LEN>,
    pub(crate) master: Secret<HASH_LEN>,
}

impl HandshakeKeys {
    pub(crate) fn derive(
        p: &dyn CryptoProvider,
        ss_mlkem: &Secret<32>,
        ss_x25519: &Secret<32>,
        th: &[u8; HASH_LEN],
        log: Option<(&dyn KeyLog, &[u8; 32])>,
    ) -> Result<HandshakeKeys, HandshakeError> {
        let hs = schedule::handshake_secret(p, None, ss_mlkem, ss_x25519)?;
        let keys = HandshakeKeys {
            client_hs: schedule::derive(p, &hs, b"c hs traffic", th)?,
            server_hs: schedule::derive(p, &hs, b"s hs traffic", th)?,
            master: schedule::master_secret(p, &hs)?,
        };
        if let Some((log, random)) = log {
            log.log("ss_mlkem", random, ss_mlkem.expose());
            log.log("ss_x25519", random, ss_x25519.expose());
            log.log("handshake_secret", random, hs.expose());
            log.log("c_hs_traffic", random, keys.client_hs.expose());
            log.log("s_hs_traffic", random, keys.server_hs.expose());
            log.log("master_secret", random, keys.master.expose());
        }
        Ok(keys)
    }
}

/// Splits the plaintext of an Encrypted message into its inner messages,
/// checking each type against `expected` in order.
pub(crate) fn expect_messages<'a, const N: usize>(
    mut plaintext: &'a [u8],
    expected: [(u8, &'static str); N],
) -> Result<[&'a [u8]; N], HandshakeError> {
    let mut out = [&[][..]; N];
    for (slot, (ty, name)) in out.iter_mut().zip(expected) {
        let (got, body, used) = split_message(plaintext)?
            .ok_or(HandshakeError::Malformed { message: name, field: "message header or length" })?;
        if got != ty {
            return Err(HandshakeError::UnexpectedMessage { expected: name, got });
        }
        *slot = body;
        plaintext = &plaintext[used..];
    }
    if !plaintext.is_empty() {
        return Err(HandshakeError::Malformed { message: "Encrypted", field: "trailing bytes" });
    }
    Ok(out)
}

/// The body of `message`, which must be exactly one message of type `ty`.
pub(crate) fn single_message<'a>(message: &'a [u8], ty: u8, name: &'static str) -> Result<&'a [u8], HandshakeError> {
    let (got, body, used) = split_message(message)?
        .ok_or(HandshakeError::Malformed { message: name, field: "message header or length" })?;
    if got != ty {
        return Err(HandshakeError::UnexpectedMessage { expected: name, got });
    }
    if used != message.len() {
        return Err(HandshakeError::Malformed { message: name, field: "trailing bytes" });
    }
    Ok(body)
}

/// Peeks the type of the first inner message (for optional ClientAuth).
pub(crate) fn first_type(plaintext: &[u8]) -> Option<u8> {
    plaintext.first().copied()
}
