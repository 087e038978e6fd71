//! What the session targets start from: an established client–server pair
//! with fixed secrets, a sealer that encrypts fuzzer-chosen frames with the
//! client's real keys, and a real handshake transcript (computed once per
//! process, deterministic).

extern crate std;

use alloc::sync::Arc;
use alloc::vec::Vec;
use std::sync::OnceLock;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::crypto::{AeadAlgorithm, CryptoProvider, HASH_LEN, RustCrypto};
use crate::endpoint::{Endpoint, EndpointConfig, EndpointEvent, Remote, RemoteKind};
use crate::handshake::{ClientConfig, IdentityKeypair, Pinned, Role, ServerConfig};
use crate::session::record::{Generation, SendKeys};
use crate::session::{Event, PathId, PathKind, Session, SessionConfig};
use crate::time::Instant;
use crate::wire::{Flags, HEADER_LEN, Header, MessageType};

pub(super) const CLIENT_SID: u64 = 0x1111_2222_3333_4444;
pub(super) const SERVER_SID: u64 = 0x5555_6666_7777_8888;
pub(super) const CLIENT_SECRET: [u8; HASH_LEN] = [0xC1; HASH_LEN];
pub(super) const SERVER_SECRET: [u8; HASH_LEN] = [0x5E; HASH_LEN];

/// The time every target starts at.
pub(super) fn start() -> Instant {
    Instant::from_nanos(1_000_000_000)
}

pub(super) fn provider() -> Arc<dyn CryptoProvider> {
    Arc::new(RustCrypto)
}

/// A session config with small bounds, so limits are reachable.
pub(super) fn small_config() -> SessionConfig {
    SessionConfig {
        max_reassembly_bytes: 64 * 1024,
        max_queued_messages: 64,
        max_queued_bytes: 256 * 1024,
        ..SessionConfig::default()
    }
}

/// One side of an established pair.
pub(super) fn established(role: Role, kind: PathKind, cipher: AeadAlgorithm, config: Arc<SessionConfig>) -> Session {
    Session::established_for_fuzzing(
        role,
        start(),
        config,
        provider(),
        kind,
        cipher,
        [CLIENT_SECRET, SERVER_SECRET],
        [CLIENT_SID, SERVER_SID],
    )
}

/// Seals frames as the client of [`established`] would, with any header
/// fields and plaintext the fuzzer chooses.
pub(super) struct Sealer {
    keys: SendKeys,
    cipher: AeadAlgorithm,
}

impl Sealer {
    /// The client's sending keys after `generation` symmetric updates.
    pub(super) fn with_generation(cipher: AeadAlgorithm, generation: u32) -> Sealer {
        let p = RustCrypto;
        let mut g = Generation::new(&p, cipher, crate::crypto::Secret::new(CLIENT_SECRET), 0).expect("fixed keys");
        for _ in 0..generation {
            g = g.next(&p, cipher).expect("fixed keys");
        }
        Sealer { keys: SendKeys { current: g, sealed: 0, since: start() }, cipher }
    }

    /// A sealed frame to the server, or `None` if the header is one the
    /// wire refuses to encode (the raw-bytes inputs cover those).
    pub(super) fn seal(&mut self, ty: MessageType, flags: Flags, seq: u64, plaintext: &[u8]) -> Option<Vec<u8>> {
        let mut header = Header::new(ty, SERVER_SID, seq);
        header.flags = flags | Flags::ENCRYPTED;
        header.encryption = self.cipher.encryption_type();
        header.payload_len = plaintext.len() as u32;
        header.validate().ok()?;
        let mut out = alloc::vec![0u8; HEADER_LEN + plaintext.len() + crate::crypto::TAG_LEN];
        let n = self.keys.seal(self.cipher, header, plaintext.len(), &mut out, plaintext).ok()?;
        out.truncate(n);
        Some(out)
    }
}

/// A real handshake between a fixed client and server, over datagrams:
/// the frames each side sent, in order. Deterministic, computed once.
pub(super) struct Transcript {
    /// The client's datagrams (ClientHello chunks, then its flight).
    pub(super) client: Vec<Vec<u8>>,
    /// The server's datagrams (its flight).
    pub(super) server: Vec<Vec<u8>>,
    /// The client's session id.
    pub(super) client_sid: u64,
}

pub(super) fn identity() -> &'static Arc<IdentityKeypair> {
    static ID: OnceLock<Arc<IdentityKeypair>> = OnceLock::new();
    ID.get_or_init(|| {
        Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([1; 32])).expect("keygen"))
    })
}

pub(super) fn client_config() -> Arc<ClientConfig> {
    Arc::new(ClientConfig::new(provider(), Arc::new(Pinned(identity().public().clone()))))
}

pub(super) fn endpoint_config() -> Arc<EndpointConfig> {
    let server = ServerConfig::new(provider(), identity().clone());
    Arc::new(EndpointConfig::new(Arc::new(small_config()), Arc::new(server)))
}

pub(super) const CLIENT_ADDR: &str = "192.0.2.7:40000";

pub(super) fn remote() -> Remote {
    Remote { addr: CLIENT_ADDR.parse().expect("literal"), kind: RemoteKind::Datagram }
}

/// The client of [`transcript`], freshly started (same seed, same hello).
pub(super) fn client() -> Session {
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    Session::connect(start(), Arc::new(small_config()), client_config(), PathKind::Datagram, &mut rng).expect("connect")
}

/// The server endpoint of [`transcript`], freshly started.
pub(super) fn endpoint() -> Endpoint {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    Endpoint::new(start(), endpoint_config(), &mut rng).expect("endpoint")
}

pub(super) fn transcript() -> &'static Transcript {
    static T: OnceLock<Transcript> = OnceLock::new();
    T.get_or_init(|| {
        let now = start();
        let mut client = client();
        let mut server = endpoint();
        let mut t = Transcript { client: Vec::new(), server: Vec::new(), client_sid: client.local_session_id() };
        let mut buf = alloc::vec![0u8; 65_536];
        for _ in 0..16 {
            while let Ok(Some(tx)) = client.poll_transmit(now, &mut buf) {
                t.client.push(buf[..tx.len].to_vec());
                server.handle_input(now, remote(), &buf[..tx.len]);
            }
            while let Ok(Some((_, len))) = server.poll_transmit(now, &mut buf) {
                t.server.push(buf[..len].to_vec());
                client.handle_input(now, PathId(0), &buf[..len]);
            }
            let mut done = false;
            while let Some(e) = server.poll_event() {
                done |= matches!(e, EndpointEvent::Session(_, Event::Connected { .. }));
            }
            if done && client.is_established() {
                return t;
            }
        }
        panic!("the fixed handshake did not complete");
    })
}

/// Recomputes the CRC of every whole frame in `datagram`, so a mutation
/// gets past the CRC and reaches the checks behind it.
pub(super) fn fix_crcs(datagram: &mut [u8]) {
    use crate::wire::offset;
    let mut pos = 0;
    while pos + HEADER_LEN <= datagram.len() {
        let at = pos + offset::PAYLOAD_LEN;
        let len = u32::from_be_bytes([datagram[at], datagram[at + 1], datagram[at + 2], datagram[at + 3]]) as usize;
        let end = pos + HEADER_LEN + len;
        if end > datagram.len() || crate::wire::write_crc(&mut datagram[pos..end]).is_err() {
            return;
        }
        pos = end;
    }
}

/// A fuzzer-chosen mutation of `input`: bit flips, byte writes, a
/// truncation or an extension, with the CRCs fixed or not.
pub(super) fn mutate(u: &mut arbitrary::Unstructured<'_>, input: &[u8]) -> arbitrary::Result<Vec<u8>> {
    let mut out = input.to_vec();
    for _ in 0..u.int_in_range(1..=3u8)? {
        match u.int_in_range(0..=3u8)? {
            0 | 1 if !out.is_empty() => {
                let at = u.choose_index(out.len())?;
                out[at] ^= u.int_in_range(1..=255u8)?;
            }
            2 => {
                let keep = u.int_in_range(0..=out.len())?;
                out.truncate(keep);
            }
            _ => {
                let extra: Vec<u8> = u.arbitrary()?;
                out.extend_from_slice(&extra);
            }
        }
    }
    if u.ratio(3, 4)? {
        fix_crcs(&mut out);
    }
    Ok(out)
}

/// A well-formed frame (valid CRC) with fuzzer-chosen header and payload.
pub(super) fn forged_frame(u: &mut arbitrary::Unstructured<'_>, session_ids: &[u64]) -> arbitrary::Result<Vec<u8>> {
    let ty = MessageType(u.arbitrary()?);
    let sid = match u.choose_index(session_ids.len() + 1)? {
        i if i < session_ids.len() => session_ids[i],
        _ => u.arbitrary()?,
    };
    let mut header = Header::new(ty, sid, u.arbitrary()?);
    header.flags = Flags::from_bits_retain(u.arbitrary()?);
    let payload: Vec<u8> = u.arbitrary()?;
    header.payload_len = payload.len() as u32;
    let mut out = alloc::vec![0u8; HEADER_LEN + payload.len()];
    match crate::wire::Frame::encode(&header, &payload, &mut out) {
        Ok(n) => {
            out.truncate(n);
            Ok(out)
        }
        // The wire refuses this header: send it raw, CRC fixed.
        Err(_) => {
            let mut raw = alloc::vec![0u8; HEADER_LEN];
            header.write((&mut raw[..]).try_into().map_err(|_| arbitrary::Error::IncorrectFormat)?);
            raw.extend_from_slice(&payload);
            fix_crcs(&mut raw);
            Ok(raw)
        }
    }
}
