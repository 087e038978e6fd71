//! The server side of the handshake.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use super::client::{
    AUTH_INLINE, AUTH_INLINE_CREDENTIAL, AUTH_KEY_ID, AUTH_REQUEST_CLIENT, OutcomeParams, mac1, outcome,
    parse_certificate_verify, write_certificate_verify, write_finished,
};
use super::error::{HandshakeError, Role};
use super::identity::{Credential, IdentityKeypair, PUBLIC_IDENTITY_LEN, PublicIdentity};
use super::messages::{self, ClientHello, HELLO_PINNED, MAC1_LEN, ServerHello, SessionParams};
use super::trust::ClientVerifier;
use super::*;
use crate::crypto::{AeadAlgorithm, CryptoProvider, HASH_LEN, Rng, Secret, Suite, ct_eq};
use crate::shard::Shard;

/// How a server handshakes.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Every primitive goes through this provider.
    pub provider: Arc<dyn CryptoProvider>,
    /// The server's identity.
    pub identity: Arc<IdentityKeypair>,
    /// A root-signed credential for `identity`, sent to clients that trust a root.
    pub credential: Option<Credential>,
    /// Record ciphers accepted, in the server's preference order.
    pub ciphers: Vec<AeadAlgorithm>,
    /// When set, every client must authenticate and be accepted by this verifier.
    pub client_auth: Option<Arc<dyn ClientVerifier>>,
    /// Accept ClientHellos whose mac1 is keyed with the all-zero key id
    /// (clients that do not know this server's key id in advance: trust by
    /// fingerprint set or root). Default `true`.
    pub accept_unkeyed_mac1: bool,
    /// The session parameters this server announces.
    pub params: SessionParams,
    /// Debug-only secret logging; see [`KeyLog`].
    pub key_log: Option<Arc<dyn KeyLog>>,
    /// The static key this server's stateless reset tokens come from
    /// (SPEC.md 3.7.1). With it, the server gives each session's client a
    /// token in its Parameters, and its endpoint answers frames of
    /// sessions it does not hold with a Reset the client can trust. It must
    /// survive a restart for that to work:
    /// [`IdentityKeypair::derive_key`] makes it from the identity.
    /// `None` (the default): no tokens, no resets.
    pub reset_key: Option<Arc<crate::crypto::Secret<{ crate::crypto::HASH_LEN }>>>,
    /// The session ids this server picks: those of one [`Shard`] of a
    /// server that runs one endpoint per core. Default [`Shard::SINGLE`]
    /// (any id).
    pub session_ids: Shard,
}

impl ServerConfig {
    /// A server with `identity`, default ciphers, and no client authentication.
    pub fn new(provider: Arc<dyn CryptoProvider>, identity: Arc<IdentityKeypair>) -> Self {
        ServerConfig {
            provider,
            identity,
            credential: None,
            ciphers: vec![AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305],
            client_auth: None,
            accept_unkeyed_mac1: true,
            params: SessionParams::default(),
            key_log: None,
            reset_key: None,
            session_ids: Shard::SINGLE,
        }
    }
}

/// What the cheap checks of a ClientHello reveal, before any expensive work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloSummary {
    /// The client's session id (the id frames to the client carry).
    pub client_session_id: u64,
    /// The client random.
    pub client_random: [u8; 32],
    /// Whether the client asked for, and may have, the key-id-only reply.
    pub pinned: bool,
}

/// Accepts client handshakes.
#[derive(Debug)]
pub struct ServerHandshake;

/// A ClientHello that passed the cheap checks (length, version, mac1):
/// the endpoint checks a hello once, before deciding to spend a handshake
/// on it, and hands the result on.
pub(crate) struct Checked {
    hello: ClientHello,
    pinned: bool,
}

impl Checked {
    pub(crate) fn summary(&self) -> HelloSummary {
        HelloSummary { client_session_id: self.hello.session_id, client_random: self.hello.random, pinned: self.pinned }
    }
}

fn cheap_checks(config: &ServerConfig, message: &[u8]) -> Result<Checked, HandshakeError> {
    let (ty, body, used) = split_message(message)?
        .ok_or(HandshakeError::Malformed { message: "ClientHello", field: "message header or length" })?;
    if ty != messages::CLIENT_HELLO {
        return Err(HandshakeError::UnexpectedMessage { expected: "ClientHello", got: ty });
    }
    if used != message.len() {
        return Err(HandshakeError::Malformed { message: "ClientHello", field: "trailing bytes" });
    }
    let version = *body.first().ok_or(HandshakeError::Malformed { message: "ClientHello", field: "version" })?;
    if version != crate::wire::VERSION {
        return Err(HandshakeError::UnsupportedVersion(version));
    }
    let (hello, mac) = ClientHello::parse(body)?;
    let p = &*config.provider;
    let covered = &message[..message.len() - MAC1_LEN];
    let keyed = ct_eq(&mac1(p, &config.identity.key_id().0, covered), &mac);
    // The key id is public: which of the two MACs matched is no secret, so
    // the second is computed only when the first did not match.
    let unkeyed = !keyed && config.accept_unkeyed_mac1 && ct_eq(&mac1(p, &[0; 16], covered), &mac);
    if !keyed && !unkeyed {
        return Err(HandshakeError::BadMac1);
    }
    let pinned = keyed && hello.flags & HELLO_PINNED != 0;
    Ok(Checked { hello, pinned })
}

impl ServerHandshake {
    /// The cheap checks only (length, version, mac1): no KEM, DH or
    /// signature work. An endpoint calls this first to decide whether to
    /// spend CPU on the hello, for example to demand a cookie under load.
    pub fn check_hello(config: &ServerConfig, message: &[u8]) -> Result<HelloSummary, HandshakeError> {
        Ok(cheap_checks(config, message)?.summary())
    }

    /// [`ServerHandshake::check_hello`], keeping what it parsed for
    /// [`ServerHandshake::accept_checked`].
    pub(crate) fn check(config: &ServerConfig, message: &[u8]) -> Result<Checked, HandshakeError> {
        cheap_checks(config, message)
    }

    /// Runs the server's side up to its flight: checks the ClientHello,
    /// encapsulates, signs. Returns the flight (ServerHello followed by the
    /// Encrypted message) and the state waiting for the client's flight.
    pub fn accept(
        config: Arc<ServerConfig>,
        message: &[u8],
        rng: Rng<'_>,
    ) -> Result<(Vec<u8>, ExpectClientFlight), HandshakeError> {
        let checked = cheap_checks(&config, message)?;
        Self::accept_checked(config, checked, message, rng)
    }

    /// [`ServerHandshake::accept`] for a hello already checked: `checked`
    /// must come from [`ServerHandshake::check`] of this same `message`
    /// (its mac1 is not computed again).
    pub(crate) fn accept_checked(
        config: Arc<ServerConfig>,
        checked: Checked,
        message: &[u8],
        rng: Rng<'_>,
    ) -> Result<(Vec<u8>, ExpectClientFlight), HandshakeError> {
        let Checked { hello, pinned } = checked;
        let p = &*config.provider;
        if !hello.suites.contains(&Suite::V1) {
            return Err(HandshakeError::NoCommonSuite);
        }
        let cipher = *config
            .ciphers
            .iter()
            .find(|c| hello.ciphers.contains(&c.encryption_type().0))
            .ok_or(HandshakeError::NoCommonCipher)?;
        let (mlkem_ct, ss_mlkem) =
            p.mlkem_encapsulate(&hello.mlkem_ek, rng).map_err(|_| HandshakeError::InvalidKeyShare("ML-KEM-1024"))?;
        let (dh, x25519) = p.x25519_generate(rng)?;
        let ss_x25519 = dh.agree(&hello.x25519).map_err(|_| HandshakeError::InvalidKeyShare("X25519"))?;
        let mut random = [0u8; 32];
        rng.fill_bytes(&mut random);
        let session_id = loop {
            if let Some(id) = config.session_ids.id_from(rng.next_u64()) {
                break id;
            }
        };
        let sh = ServerHello {
            version: crate::wire::VERSION,
            suite: Suite::V1,
            cipher: cipher.encryption_type().0,
            random,
            session_id,
            x25519,
            mlkem_ct,
        };
        let mut flight = Vec::with_capacity(if pinned { 8 * 1024 } else { 10 * 1024 });
        sh.encode(&mut flight);
        let mut transcript = Transcript::new(p);
        transcript.add(message);
        transcript.add(&flight);
        let log = config.key_log.as_deref().map(|l| (l, &hello.random));
        let keys = HandshakeKeys::derive(p, &ss_mlkem, &ss_x25519, &transcript.hash(), log)?;

        // ServerAuth, CertificateVerify, Finished, sealed under s_hs.
        let mut inner = Vec::with_capacity(8 * 1024);
        let start = messages::begin_message(&mut inner, messages::SERVER_AUTH);
        let flags = if config.client_auth.is_some() { AUTH_REQUEST_CLIENT } else { 0 };
        if pinned {
            inner.extend_from_slice(&[AUTH_KEY_ID, flags]);
            inner.extend_from_slice(&config.identity.key_id().0);
        } else if let Some(cred) = &config.credential {
            inner.extend_from_slice(&[AUTH_INLINE_CREDENTIAL, flags]);
            inner.extend_from_slice(&config.identity.public().to_bytes());
            inner.extend_from_slice(&cred.to_bytes());
        } else {
            inner.extend_from_slice(&[AUTH_INLINE, flags]);
            inner.extend_from_slice(&config.identity.public().to_bytes());
        }
        messages::end_message(&mut inner, start);
        let mut params = config.params;
        params.reset_token = config.reset_key.as_deref().map(|k| crate::session::reset::reset_token(p, k, session_id));
        params.encode(&mut inner);
        transcript.add(&inner);
        let from = inner.len();
        write_certificate_verify(&config.identity, Role::Server, &transcript.hash(), rng, &mut inner)?;
        transcript.add(&inner[from..]);
        let mac = schedule::finished_mac(p, &keys.server_hs, &transcript.hash())?;
        let from = inner.len();
        write_finished(&mac, &mut inner);
        transcript.add(&inner[from..]);
        seal_flight(p, cipher, &keys.server_hs, inner, &mut flight)?;
        let th_server_finished = transcript.hash();
        let state = ExpectClientFlight {
            config,
            transcript,
            keys,
            cipher,
            client_session_id: hello.session_id,
            server_session_id: session_id,
            client_random: hello.random,
            th_server_finished,
        };
        Ok((flight, state))
    }
}

/// Waiting for the client's Encrypted flight.
pub struct ExpectClientFlight {
    config: Arc<ServerConfig>,
    transcript: Transcript,
    keys: HandshakeKeys,
    cipher: AeadAlgorithm,
    client_session_id: u64,
    server_session_id: u64,
    client_random: [u8; 32],
    th_server_finished: [u8; HASH_LEN],
}

impl core::fmt::Debug for ExpectClientFlight {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ExpectClientFlight").field("server_session_id", &self.server_session_id).finish_non_exhaustive()
    }
}

impl ExpectClientFlight {
    /// The session id this server chose.
    pub fn server_session_id(&self) -> u64 {
        self.server_session_id
    }

    /// The client session id from the ClientHello.
    pub fn client_session_id(&self) -> u64 {
        self.client_session_id
    }

    /// Processes the client's Encrypted message: its identity and
    /// signatures if asked for, then its Finished.
    pub fn handle(mut self, message: &[u8], unix_time: Option<u64>) -> Result<HandshakeOutcome, HandshakeError> {
        let body = single_message(message, messages::ENCRYPTED, "Encrypted")?;
        let p = &*self.config.provider;
        let plain = open_flight(p, self.cipher, &self.keys.client_hs, body, Role::Client)?;
        let (ty, params, used) = split_message(&plain)?
            .ok_or(HandshakeError::Malformed { message: "Parameters", field: "message header or length" })?;
        if ty != messages::PARAMETERS {
            return Err(HandshakeError::UnexpectedMessage { expected: "Parameters", got: ty });
        }
        let peer_params = SessionParams::parse(params)?;
        self.transcript.add_parts(messages::PARAMETERS, params);
        let plain = &plain[used..];
        let sent_auth = first_type(plain) == Some(messages::CLIENT_AUTH);
        let (peer, fin) = match (&self.config.client_auth, sent_auth) {
            (None, true) => return Err(HandshakeError::UnrequestedClientAuth),
            (Some(_), false) => return Err(HandshakeError::ClientAuthRequired),
            (None, false) => {
                let [fin] = expect_messages(plain, [(messages::FINISHED, "Finished")])?;
                (None, fin)
            }
            (Some(verifier), true) => {
                let [auth, cv, fin] = expect_messages(
                    plain,
                    [
                        (messages::CLIENT_AUTH, "ClientAuth"),
                        (messages::CERTIFICATE_VERIFY, "CertificateVerify"),
                        (messages::FINISHED, "Finished"),
                    ],
                )?;
                if auth.len() != PUBLIC_IDENTITY_LEN {
                    return Err(HandshakeError::Malformed { message: "ClientAuth", field: "identity" });
                }
                let client = PublicIdentity::from_bytes(p, auth)
                    .ok_or(HandshakeError::Malformed { message: "ClientAuth", field: "identity" })?;
                self.transcript.add_parts(messages::CLIENT_AUTH, auth);
                let (ml, ed) = parse_certificate_verify(cv)?;
                // Trust first: a client this server would refuse anyway
                // costs it no signature verification.
                verifier.verify(&client, unix_time)?;
                let input = certificate_verify_input(Role::Client, &self.transcript.hash());
                client
                    .verify(p, &input, ml, ed)
                    .map_err(|algorithm| HandshakeError::BadSignature { algorithm, signer: Role::Client })?;
                self.transcript.add_parts(messages::CERTIFICATE_VERIFY, cv);
                (Some(client), fin)
            }
        };
        let expected: Secret<HASH_LEN> = schedule::finished_mac(p, &self.keys.client_hs, &self.transcript.hash())?;
        if fin.len() != HASH_LEN || !ct_eq(expected.expose(), fin) {
            return Err(HandshakeError::BadFinished { from: Role::Client });
        }
        self.transcript.add_parts(messages::FINISHED, fin);
        outcome(
            p,
            OutcomeParams {
                role: Role::Server,
                suite: Suite::V1,
                cipher: self.cipher,
                client_session_id: self.client_session_id,
                server_session_id: self.server_session_id,
                master: &self.keys.master,
                client_random: &self.client_random,
                key_log: self.config.key_log.as_deref(),
            },
            &self.th_server_finished,
            &self.transcript.hash(),
            peer,
            peer_params,
        )
    }
}

/// Builds a Retry message carrying `token` (see SPEC.md, "Cookies").
pub fn retry_message(token: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    messages::encode_retry(token, &mut out);
    out
}
