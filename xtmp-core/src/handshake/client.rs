//! The client side of the handshake.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use super::error::{HandshakeError, Role};
use super::identity::{Credential, IdentityKeypair, PUBLIC_IDENTITY_LEN, PublicIdentity};
use super::messages::{self, ClientHello, HELLO_PINNED, MAC1_LEN, Reader, ServerHello, SessionParams};
use super::trust::ServerVerifier;
use super::*;
use crate::crypto::{
    AeadAlgorithm, CryptoProvider, DhPrivateKey, ED25519_SIG_LEN, HASH_LEN, KemPrivateKey, MLDSA_SIG_LEN, Rng, Secret,
    Suite, ct_eq,
};

/// How a client handshakes.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Every primitive goes through this provider.
    pub provider: Arc<dyn CryptoProvider>,
    /// Decides whether the server is who the client wants.
    pub verifier: Arc<dyn ServerVerifier>,
    /// The client's own identity (a wallet), used if the server asks for it.
    pub identity: Option<Arc<IdentityKeypair>>,
    /// Record ciphers offered, in preference order (default: AES-256-GCM,
    /// then ChaCha20-Poly1305).
    pub ciphers: Vec<AeadAlgorithm>,
    /// The session parameters this client announces.
    pub params: SessionParams,
    /// Debug-only secret logging; see [`KeyLog`].
    pub key_log: Option<Arc<dyn KeyLog>>,
}

impl ClientConfig {
    /// A client trusting servers through `verifier`, with default ciphers
    /// and no client identity.
    pub fn new(provider: Arc<dyn CryptoProvider>, verifier: Arc<dyn ServerVerifier>) -> Self {
        ClientConfig {
            provider,
            verifier,
            identity: None,
            ciphers: vec![AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305],
            params: SessionParams::default(),
            key_log: None,
        }
    }
}

/// Starts client handshakes.
#[derive(Debug)]
pub struct ClientHandshake;

impl ClientHandshake {
    /// Generates the ephemeral keys and the ClientHello message. `pad_to`
    /// pads the message to at least that many bytes (datagram paths; 0 for
    /// none), so the server's reply fits its amplification limit.
    pub fn start(
        config: Arc<ClientConfig>,
        rng: Rng<'_>,
        pad_to: usize,
    ) -> Result<(ExpectServerHello, Vec<u8>), HandshakeError> {
        if config.ciphers.is_empty() {
            return Err(HandshakeError::NoCommonCipher);
        }
        let p = &*config.provider;
        let (kem, mlkem_ek) = p.mlkem_generate(rng)?;
        let (dh, x25519) = p.x25519_generate(rng)?;
        let mut random = [0u8; 32];
        rng.fill_bytes(&mut random);
        let session_id = loop {
            let id = rng.next_u64();
            if id != 0 {
                break id;
            }
        };
        let pinned = config.verifier.pinned().is_some();
        let hello = ClientHello {
            version: crate::wire::VERSION,
            suites: vec![Suite::V1],
            ciphers: config.ciphers.iter().map(|c| c.encryption_type().0).collect(),
            random,
            session_id,
            x25519,
            mlkem_ek,
            flags: if pinned { HELLO_PINNED } else { 0 },
            padding: 0,
        };
        let mut state = ExpectServerHello { config, hello, kem, dh, hello_bytes: Vec::new() };
        let pad_to = pad_to.min(messages::MAX_CLIENT_HELLO_LEN);
        state.hello.padding = pad_to.saturating_sub(state.hello.encode_without_mac().len());
        let bytes = state.encode_hello();
        Ok((state, bytes))
    }
}

/// Waiting for the ServerHello (or a Retry).
pub struct ExpectServerHello {
    config: Arc<ClientConfig>,
    hello: ClientHello,
    kem: Box<dyn KemPrivateKey>,
    dh: Box<dyn DhPrivateKey>,
    hello_bytes: Vec<u8>,
}

impl core::fmt::Debug for ExpectServerHello {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ExpectServerHello").field("client_session_id", &self.hello.session_id).finish_non_exhaustive()
    }
}

/// mac1 of a ClientHello: `HMAC-SHA-384(key_id, "xtmp1 mac1" ‖ message without mac1)[..16]`.
pub(crate) fn mac1(p: &dyn CryptoProvider, key_id: &[u8; 16], without_mac: &[u8]) -> [u8; MAC1_LEN] {
    let full = p.hmac_sha384(key_id, &[b"xtmp1 mac1", without_mac]);
    let mut out = [0u8; MAC1_LEN];
    out.copy_from_slice(&full.expose()[..MAC1_LEN]);
    out
}

impl ExpectServerHello {
    fn encode_hello(&mut self) -> Vec<u8> {
        let mut bytes = self.hello.encode_without_mac();
        let key_id = self.config.verifier.pinned().map_or([0u8; 16], |id| id.key_id().0);
        let split = bytes.len() - MAC1_LEN;
        let mac = mac1(&*self.config.provider, &key_id, &bytes[..split]);
        bytes[split..].copy_from_slice(&mac);
        self.hello_bytes = bytes.clone();
        bytes
    }

    /// The client session id this handshake chose.
    pub fn client_session_id(&self) -> u64 {
        self.hello.session_id
    }

    /// The ClientHello message as sent (a Retry asks for the same bytes
    /// again, with the server's token in the frames that carry them).
    pub fn hello_message(&self) -> &[u8] {
        &self.hello_bytes
    }

    /// Processes the ServerHello message: checks the server's choices
    /// against the offer, completes both key exchanges, derives handshake keys.
    pub fn handle_server_hello(self, message: &[u8]) -> Result<ExpectServerFlight, HandshakeError> {
        let body = single_message(message, messages::SERVER_HELLO, "ServerHello")?;
        let sh = ServerHello::parse(body)?;
        if sh.version != crate::wire::VERSION {
            return Err(HandshakeError::UnsupportedVersion(sh.version));
        }
        if !self.hello.suites.contains(&sh.suite) || !self.hello.ciphers.contains(&sh.cipher) {
            return Err(HandshakeError::Downgrade);
        }
        let cipher = AeadAlgorithm::from_code(sh.cipher).ok_or(HandshakeError::Downgrade)?;
        let p = &*self.config.provider;
        let ss_mlkem = self.kem.decapsulate(&sh.mlkem_ct)?;
        let ss_x25519 = self.dh.agree(&sh.x25519).map_err(|_| HandshakeError::InvalidKeyShare("X25519"))?;
        let mut transcript = Transcript::new(p);
        transcript.add(&self.hello_bytes);
        transcript.add(message);
        let th = transcript.hash();
        let log = self.config.key_log.as_deref().map(|l| (l, &self.hello.random));
        let keys = HandshakeKeys::derive(p, &ss_mlkem, &ss_x25519, &th, log)?;
        Ok(ExpectServerFlight {
            config: self.config,
            transcript,
            keys,
            cipher,
            suite: sh.suite,
            client_session_id: self.hello.session_id,
            server_session_id: sh.session_id,
            pinned: self.hello.flags & HELLO_PINNED != 0,
            client_random: self.hello.random,
        })
    }
}

/// Waiting for the server's encrypted flight.
pub struct ExpectServerFlight {
    config: Arc<ClientConfig>,
    transcript: Transcript,
    keys: HandshakeKeys,
    cipher: AeadAlgorithm,
    suite: Suite,
    client_session_id: u64,
    server_session_id: u64,
    pinned: bool,
    client_random: [u8; 32],
}

impl core::fmt::Debug for ExpectServerFlight {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ExpectServerFlight").field("server_session_id", &self.server_session_id).finish_non_exhaustive()
    }
}

/// ServerAuth modes.
pub(crate) const AUTH_KEY_ID: u8 = 0;
pub(crate) const AUTH_INLINE: u8 = 1;
pub(crate) const AUTH_INLINE_CREDENTIAL: u8 = 2;
/// ServerAuth flag: the server asks the client to authenticate.
pub(crate) const AUTH_REQUEST_CLIENT: u8 = 0x01;

/// Parses `mldsa_sig ‖ ed25519_sig`.
pub(crate) fn parse_certificate_verify(
    body: &[u8],
) -> Result<(&[u8; MLDSA_SIG_LEN], &[u8; ED25519_SIG_LEN]), HandshakeError> {
    let mut r = Reader::new("CertificateVerify", body);
    let ml = r.array::<MLDSA_SIG_LEN>("ML-DSA-87 signature")?;
    let ed = r.array::<ED25519_SIG_LEN>("Ed25519 signature")?;
    r.finish()?;
    Ok((ml, ed))
}

/// Writes a CertificateVerify over `th` for `role`.
pub(crate) fn write_certificate_verify(
    identity: &IdentityKeypair,
    role: Role,
    th: &[u8; HASH_LEN],
    rng: Rng<'_>,
    out: &mut Vec<u8>,
) -> Result<(), HandshakeError> {
    let (ml, ed) = identity.sign(&certificate_verify_input(role, th), rng)?;
    let start = messages::begin_message(out, messages::CERTIFICATE_VERIFY);
    out.extend_from_slice(&ml[..]);
    out.extend_from_slice(&ed);
    messages::end_message(out, start);
    Ok(())
}

/// Writes a Finished message.
pub(crate) fn write_finished(mac: &Secret<HASH_LEN>, out: &mut Vec<u8>) {
    let start = messages::begin_message(out, messages::FINISHED);
    out.extend_from_slice(mac.expose());
    messages::end_message(out, start);
}

impl ExpectServerFlight {
    /// The session id the server chose (frames to the server carry it).
    pub fn server_session_id(&self) -> u64 {
        self.server_session_id
    }

    /// Processes the server's Encrypted message: identity, signatures,
    /// trust, Finished. Returns the client's final flight (one Encrypted
    /// message, to send) and the outcome. `unix_time` is needed only for
    /// credential checks.
    pub fn handle_flight(
        mut self,
        message: &[u8],
        rng: Rng<'_>,
        unix_time: Option<u64>,
    ) -> Result<(Vec<u8>, HandshakeOutcome), HandshakeError> {
        let body = single_message(message, messages::ENCRYPTED, "Encrypted")?;
        let p = &*self.config.provider;
        let plain = open_flight(p, self.cipher, &self.keys.server_hs, body, Role::Server)?;
        let [auth, params, cv, fin] = expect_messages(
            &plain,
            [
                (messages::SERVER_AUTH, "ServerAuth"),
                (messages::PARAMETERS, "Parameters"),
                (messages::CERTIFICATE_VERIFY, "CertificateVerify"),
                (messages::FINISHED, "Finished"),
            ],
        )?;
        // ServerAuth.
        let mut r = Reader::new("ServerAuth", auth);
        let mode = r.u8("mode")?;
        let flags = r.u8("flags")?;
        if flags & !AUTH_REQUEST_CLIENT != 0 {
            return Err(HandshakeError::Malformed { message: "ServerAuth", field: "flags" });
        }
        let (server, credential) = match mode {
            AUTH_KEY_ID => {
                let key_id = r.array::<16>("key id")?;
                let pinned = self.config.verifier.pinned().filter(|_| self.pinned);
                let pinned = pinned.ok_or(HandshakeError::Malformed { message: "ServerAuth", field: "mode" })?;
                if !ct_eq(key_id, &pinned.key_id().0) {
                    return Err(HandshakeError::IdentityMismatch);
                }
                (pinned.clone(), None)
            }
            AUTH_INLINE | AUTH_INLINE_CREDENTIAL => {
                let id = PublicIdentity::from_bytes(p, r.bytes(PUBLIC_IDENTITY_LEN, "identity")?)
                    .ok_or(HandshakeError::Malformed { message: "ServerAuth", field: "identity" })?;
                let cred = if mode == AUTH_INLINE_CREDENTIAL {
                    let c = Credential::from_bytes(r.bytes(super::CREDENTIAL_LEN, "credential")?)
                        .ok_or(HandshakeError::Malformed { message: "ServerAuth", field: "credential" })?;
                    Some(c)
                } else {
                    None
                };
                (id, cred)
            }
            _ => return Err(HandshakeError::Malformed { message: "ServerAuth", field: "mode" }),
        };
        r.finish()?;
        self.transcript.add_parts(messages::SERVER_AUTH, auth);
        let peer_params = SessionParams::parse(params)?;
        self.transcript.add_parts(messages::PARAMETERS, params);
        // CertificateVerify: both halves must verify.
        let (ml, ed) = parse_certificate_verify(cv)?;
        let input = certificate_verify_input(Role::Server, &self.transcript.hash());
        server
            .verify(p, &input, ml, ed)
            .map_err(|algorithm| HandshakeError::BadSignature { algorithm, signer: Role::Server })?;
        self.config.verifier.verify(p, &server, credential.as_ref(), unix_time)?;
        self.transcript.add_parts(messages::CERTIFICATE_VERIFY, cv);
        // Finished.
        let expected = schedule::finished_mac(p, &self.keys.server_hs, &self.transcript.hash())?;
        if fin.len() != HASH_LEN || !ct_eq(expected.expose(), fin) {
            return Err(HandshakeError::BadFinished { from: Role::Server });
        }
        self.transcript.add_parts(messages::FINISHED, fin);
        let th_server_finished = self.transcript.hash();
        // The client's flight.
        let mut inner = Vec::new();
        self.config.params.encode(&mut inner);
        self.transcript.add(&inner);
        if flags & AUTH_REQUEST_CLIENT != 0 {
            let identity = self.config.identity.clone().ok_or(HandshakeError::ClientAuthRequired)?;
            let start = messages::begin_message(&mut inner, messages::CLIENT_AUTH);
            inner.extend_from_slice(&identity.public().to_bytes());
            messages::end_message(&mut inner, start);
            self.transcript.add(&inner[start - 4..]);
            let from = inner.len();
            write_certificate_verify(&identity, Role::Client, &self.transcript.hash(), rng, &mut inner)?;
            self.transcript.add(&inner[from..]);
        }
        let mac = schedule::finished_mac(p, &self.keys.client_hs, &self.transcript.hash())?;
        let from = inner.len();
        write_finished(&mac, &mut inner);
        self.transcript.add(&inner[from..]);
        let mut flight = Vec::new();
        seal_flight(p, self.cipher, &self.keys.client_hs, inner, &mut flight)?;
        let outcome = finish(p, &self, &th_server_finished, &self.transcript.hash(), Some(server), peer_params)?;
        Ok((flight, outcome))
    }
}

/// Derives the outcome from the master secret (shared by both sides).
fn finish(
    p: &dyn CryptoProvider,
    s: &ExpectServerFlight,
    th_server_finished: &[u8; HASH_LEN],
    th_client_finished: &[u8; HASH_LEN],
    peer_identity: Option<PublicIdentity>,
    peer_params: SessionParams,
) -> Result<HandshakeOutcome, HandshakeError> {
    outcome(
        p,
        OutcomeParams {
            role: Role::Client,
            suite: s.suite,
            cipher: s.cipher,
            client_session_id: s.client_session_id,
            server_session_id: s.server_session_id,
            master: &s.keys.master,
            client_random: &s.client_random,
            key_log: s.config.key_log.as_deref(),
        },
        th_server_finished,
        th_client_finished,
        peer_identity,
        peer_params,
    )
}

pub(crate) struct OutcomeParams<'a> {
    pub(crate) role: Role,
    pub(crate) suite: Suite,
    pub(crate) cipher: AeadAlgorithm,
    pub(crate) client_session_id: u64,
    pub(crate) server_session_id: u64,
    pub(crate) master: &'a Secret<HASH_LEN>,
    pub(crate) client_random: &'a [u8; 32],
    pub(crate) key_log: Option<&'a dyn KeyLog>,
}

/// `c ap traffic`, `s ap traffic` and `exp master` from the transcript
/// through the server's Finished; `res master` through the client's.
pub(crate) fn outcome(
    p: &dyn CryptoProvider,
    o: OutcomeParams<'_>,
    th_sf: &[u8; HASH_LEN],
    th_cf: &[u8; HASH_LEN],
    peer_identity: Option<PublicIdentity>,
    peer_params: SessionParams,
) -> Result<HandshakeOutcome, HandshakeError> {
    let out = HandshakeOutcome {
        role: o.role,
        suite: o.suite,
        cipher: o.cipher,
        client_session_id: o.client_session_id,
        server_session_id: o.server_session_id,
        peer_identity,
        peer_params,
        client_secret: schedule::derive(p, o.master, b"c ap traffic", th_sf)?,
        server_secret: schedule::derive(p, o.master, b"s ap traffic", th_sf)?,
        exporter: schedule::derive(p, o.master, b"exp master", th_sf)?,
        resumption: schedule::derive(p, o.master, b"res master", th_cf)?,
        transcript_hash: *th_cf,
    };
    if let Some(log) = o.key_log {
        log.log("c_ap_traffic", o.client_random, out.client_secret.expose());
        log.log("s_ap_traffic", o.client_random, out.server_secret.expose());
        log.log("exporter_secret", o.client_random, out.exporter.expose());
        log.log("resumption_secret", o.client_random, out.resumption.expose());
    }
    Ok(out)
}
