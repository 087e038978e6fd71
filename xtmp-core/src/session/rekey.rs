//! The in-session hybrid re-key (SPEC.md section 3.6): a fresh X25519 +
//! ML-KEM-1024 exchange inside the encrypted channel, mixed into both
//! directions' traffic secrets, so that a stolen traffic key stops working.
//!
//! The client starts every exchange (it holds the KEM's private half, as in
//! the handshake); the server answers. Each side freezes its sending key
//! generation while an exchange is open, so both know exactly which
//! generation the new secret is mixed into:
//!
//! 1. the client sends `Rekey` under its generation `c` and stops ratcheting;
//! 2. the server answers `RekeyAck` under its generation `s`, expects the
//!    client's next generation to be `rekeyed(c)`, and stops ratcheting;
//! 3. the client, on the whole `RekeyAck`, switches to `rekeyed(c)`, expects
//!    `rekeyed(s)` from the server, and sends a Ping;
//! 4. the server, on the first frame under `rekeyed(c)`, switches to
//!    `rekeyed(s)`.
//!
//! Lost messages are repeated on a timer (the server repeats its answer
//! when the request repeats); nothing else needs to be reliable.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;

use super::*;
use crate::crypto::{DhPrivateKey, HASH_LEN, KemPrivateKey, MLKEM_CT_LEN, MLKEM_EK_LEN, Secret, X25519_LEN, schedule};

/// Control frame: the client's half of a re-key.
pub const REKEY: MessageType = MessageType(0xC3);
/// Control frame: the server's half of a re-key.
pub const REKEY_ACK: MessageType = MessageType(0xC4);

/// `id u32 ‖ generation u32 ‖ offset u16 ‖ total u16`, then bytes of the body.
pub(crate) const HEADER_LEN: usize = 12;
/// Both bodies are 1,600 bytes: `x25519 (32) ‖ ML-KEM ek or ciphertext (1568)`.
pub(crate) const BODY_LEN: usize = X25519_LEN + MLKEM_EK_LEN;
const _: () = assert!(MLKEM_EK_LEN == MLKEM_CT_LEN);
/// The largest chunk of a body one frame carries.
const MAX_CHUNK: usize = 1024;

/// One chunk of a `Rekey` or `RekeyAck`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk<'a> {
    pub(crate) id: u32,
    pub(crate) generation: u32,
    pub(crate) offset: u16,
    pub(crate) data: &'a [u8],
}

impl<'a> Chunk<'a> {
    pub(crate) fn parse(p: &'a [u8]) -> Option<Chunk<'a>> {
        let (h, data) = p.split_first_chunk::<HEADER_LEN>()?;
        let id = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let generation = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let offset = u16::from_be_bytes([h[8], h[9]]);
        let total = u16::from_be_bytes([h[10], h[11]]);
        let end = offset as usize + data.len();
        (id != 0 && total as usize == BODY_LEN && !data.is_empty() && end <= BODY_LEN).then_some(Chunk {
            id,
            generation,
            offset,
            data,
        })
    }
}

/// Splits `body` into chunk payloads that fit `max_payload` bytes each.
fn chunks(id: u32, generation: u32, body: &[u8], max_payload: usize) -> Vec<Bytes> {
    let size = max_payload.saturating_sub(HEADER_LEN).clamp(1, MAX_CHUNK);
    body.chunks(size)
        .enumerate()
        .map(|(i, data)| {
            let mut p = Vec::with_capacity(HEADER_LEN + data.len());
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&generation.to_be_bytes());
            p.extend_from_slice(&((i * size) as u16).to_be_bytes());
            p.extend_from_slice(&(BODY_LEN as u16).to_be_bytes());
            p.extend_from_slice(data);
            Bytes::from(p)
        })
        .collect()
}

/// A body being reassembled from chunks.
struct Assembly {
    id: u32,
    generation: u32,
    recv: FlightRecv,
}

/// An exchange in progress.
enum Pending {
    /// Client: `Rekey` sent under generation `generation`.
    Client {
        id: u32,
        generation: u32,
        body: Vec<u8>,
        kem: Box<dyn KemPrivateKey>,
        dh: Box<dyn DhPrivateKey>,
        sent_at: Instant,
        rto: Duration,
    },
    /// Server: `RekeyAck` sent under `server_generation`; waiting for the
    /// client's first frame under its re-keyed generation.
    Server { id: u32, client_generation: u32, server_generation: u32, body: Vec<u8>, rk: Secret<HASH_LEN> },
}

/// A session's re-key state.
pub(crate) struct Rekey {
    /// When the last exchange completed (or the session was established).
    pub(crate) last: Instant,
    /// Client: the id of the next exchange. Server: the last id completed.
    id: u32,
    pending: Option<Pending>,
    incoming: Option<Assembly>,
    /// Exchanges completed.
    pub(crate) completed: u32,
}

impl Rekey {
    pub(crate) fn new(now: Instant) -> Rekey {
        Rekey { last: now, id: 0, pending: None, incoming: None, completed: 0 }
    }

    /// Whether this side's sending generation is frozen by an open exchange.
    pub(crate) fn freezes_sending(&self) -> bool {
        self.pending.is_some()
    }

    /// Client: when the open exchange's request is due again.
    pub(crate) fn retransmit_at(&self) -> Option<Instant> {
        match &self.pending {
            Some(Pending::Client { sent_at, rto, .. }) => Some(*sent_at + *rto),
            _ => None,
        }
    }
}

fn exchange_hash(
    p: &dyn CryptoProvider,
    id: u32,
    client_generation: u32,
    server_generation: u32,
    request: &[u8],
    answer: &[u8],
) -> [u8; HASH_LEN] {
    let mut h = p.sha384();
    h.update(b"xtmp1 rekey");
    h.update(&id.to_be_bytes());
    h.update(&client_generation.to_be_bytes());
    h.update(&server_generation.to_be_bytes());
    h.update(request);
    h.update(answer);
    h.current()
}

impl Session {
    /// Client: when the next exchange should start, or the open one be repeated.
    pub(super) fn rekey_deadline(&self) -> Option<Instant> {
        match self.role {
            Role::Client => Some(self.rekey.retransmit_at().unwrap_or(self.rekey.last + self.config.rekey_interval)),
            Role::Server => None,
        }
        .into_iter()
        .chain(core::iter::once(self.rekey.last + self.config.rekey_overdue))
        .min()
    }

    /// Timer work: start or repeat an exchange; close if one is long overdue.
    pub(super) fn on_rekey_timer(&mut self) {
        let now = self.now;
        if now >= self.rekey.last + self.config.rekey_overdue {
            return self
                .close_with(CloseCode::KEY_UPDATE_OVERDUE, CloseReason::ProtocolViolation("hybrid re-key overdue"));
        }
        if self.role != Role::Client || !self.is_established() {
            return;
        }
        match self.rekey.retransmit_at() {
            Some(at) if now >= at => self.repeat_rekey(),
            Some(_) => {}
            None if now >= self.rekey.last + self.config.rekey_interval => self.start_rekey(),
            None => {}
        }
    }

    /// Client: starts an exchange now (also called by [`Session::rekey_now`]).
    pub(super) fn start_rekey(&mut self) {
        if self.role != Role::Client || self.rekey.pending.is_some() || !self.is_established() {
            return;
        }
        let Some(generation) = self.send_keys.as_ref().map(|k| k.current.number) else { return };
        let p = self.provider.clone();
        let keys = p.mlkem_generate(&mut self.rng).and_then(|kem| Ok((kem, p.x25519_generate(&mut self.rng)?)));
        let ((kem, ek), (dh, x25519)) = match keys {
            Ok(k) => k,
            Err(_) => return self.close_with(CloseCode::INTERNAL, CloseReason::Internal("re-key key generation")),
        };
        let mut body = Vec::with_capacity(BODY_LEN);
        body.extend_from_slice(&x25519);
        body.extend_from_slice(&ek[..]);
        self.rekey.id = self.rekey.id.wrapping_add(1).max(1);
        let rto = self.probe_timeout();
        self.rekey.pending =
            Some(Pending::Client { id: self.rekey.id, generation, body, kem, dh, sent_at: self.now, rto });
        self.queue_rekey_message();
    }

    fn repeat_rekey(&mut self) {
        let cap = self.config.handshake_rto * 8;
        if let Some(Pending::Client { sent_at, rto, .. }) = &mut self.rekey.pending {
            *sent_at = self.now;
            *rto = (*rto * 2).min(cap.max(*rto));
        }
        self.stats.retransmissions += 1;
        self.queue_rekey_message();
    }

    /// Queues this side's open message (the request or the answer) in chunks.
    fn queue_rekey_message(&mut self) {
        let (ty, id, generation, body) = match &self.rekey.pending {
            Some(Pending::Client { id, generation, body, .. }) => (REKEY, *id, *generation, body),
            Some(Pending::Server { id, server_generation, body, .. }) => (REKEY_ACK, *id, *server_generation, body),
            None => return,
        };
        let max_payload = self.config.max_datagram - crate::wire::HEADER_LEN;
        for c in chunks(id, generation, body, max_payload) {
            self.queue(Q_CONTROL, Outgoing::new(ty, Flags::empty(), Head::Raw, c));
        }
    }

    /// A `Rekey` or `RekeyAck` chunk, opened under the peer's `generation`.
    pub(super) fn on_rekey_chunk(&mut self, ty: MessageType, generation: u32, plain: &[u8]) {
        let Some(chunk) = Chunk::parse(plain) else { return self.protocol_violation("malformed re-key message") };
        let expected = match self.role {
            Role::Server => REKEY,
            Role::Client => REKEY_ACK,
        };
        if ty != expected {
            return self.protocol_violation("re-key message from the wrong role");
        }
        // Late copies of a completed exchange are dropped before the
        // generation check: a chunk queued before its sender switched
        // generations may be sealed under the new one.
        match self.role {
            Role::Server => {
                if let Some(Pending::Server { id, .. }) = &self.rekey.pending {
                    if chunk.id == *id {
                        // The client lacks our answer: repeat it once per request.
                        if chunk.offset == 0 && chunk.generation == generation {
                            self.queue_rekey_message();
                        }
                        return;
                    }
                    return self.protocol_violation("re-key started before the previous one completed");
                }
                if chunk.id <= self.rekey.id {
                    return; // A late copy of a completed exchange.
                }
            }
            Role::Client => match &self.rekey.pending {
                Some(Pending::Client { id, .. }) if *id == chunk.id => {}
                _ => return, // A late copy of a completed exchange.
            },
        }
        if chunk.generation != generation {
            return self.protocol_violation("re-key message names another key generation");
        }
        let fresh = self.rekey.incoming.as_ref().is_none_or(|a| a.id != chunk.id);
        if fresh {
            self.rekey.incoming = Some(Assembly { id: chunk.id, generation, recv: FlightRecv::new() });
        }
        let Some(a) = self.rekey.incoming.as_mut() else { return };
        if a.generation != generation {
            return self.protocol_violation("re-key message split across key generations");
        }
        if a.recv.insert(chunk.offset.into(), chunk.data).is_err() {
            return self.protocol_violation("re-key message too fragmented");
        }
        if a.recv.contiguous() < BODY_LEN {
            return;
        }
        let Some(a) = self.rekey.incoming.take() else { return };
        let body = &a.recv.prefix()[..BODY_LEN];
        match self.role {
            Role::Server => self.answer_rekey(a.id, a.generation, body),
            Role::Client => self.finish_client_rekey(a.generation, body),
        }
    }

    /// Server: the whole request arrived: encapsulate, answer, and expect
    /// the client's next generation to be the re-keyed one.
    fn answer_rekey(&mut self, id: u32, client_generation: u32, request: &[u8]) {
        let (Some(_), Some(send), Some(recv)) = (self.cipher, &self.send_keys, &self.recv_keys) else { return };
        if recv.current.number != client_generation {
            return self.protocol_violation("re-key request under a stale key generation");
        }
        let server_generation = send.current.number;
        let p = self.provider.clone();
        let (x_peer, ek) = request.split_at(X25519_LEN);
        let (Ok(x_peer), Ok(ek)) = (<[u8; X25519_LEN]>::try_from(x_peer), <&[u8; MLKEM_EK_LEN]>::try_from(ek)) else {
            return;
        };
        let exchange = p.mlkem_encapsulate(ek, &mut self.rng).and_then(|(ct, ss_k)| {
            let (dh, x_own) = p.x25519_generate(&mut self.rng)?;
            Ok((ct, ss_k, x_own, dh.agree(&x_peer)?))
        });
        let (ct, ss_k, x_own, ss_x) = match exchange {
            Ok(e) => e,
            Err(_) => return self.protocol_violation("invalid re-key public key"),
        };
        let mut answer = Vec::with_capacity(BODY_LEN);
        answer.extend_from_slice(&x_own);
        answer.extend_from_slice(&ct[..]);
        let th = exchange_hash(&*p, id, client_generation, server_generation, request, &answer);
        let rk = schedule::rekey_secret(&*p, &th, &ss_k, &ss_x);
        let installed = self.recv_keys.as_mut().map(|r| r.rekey_next(&*p, &rk));
        if !matches!(installed, Some(Ok(()))) {
            return self.close_with(CloseCode::INTERNAL, CloseReason::Internal("key derivation"));
        }
        self.rekey.pending = Some(Pending::Server { id, client_generation, server_generation, body: answer, rk });
        self.queue_rekey_message();
    }

    /// Client: the whole answer arrived: decapsulate, switch sending to the
    /// re-keyed generation, expect the server's, and prove it with a Ping.
    fn finish_client_rekey(&mut self, server_generation: u32, answer: &[u8]) {
        let Some(Pending::Client { id, generation, body, kem, dh, .. }) = self.rekey.pending.take() else { return };
        let (Some(cipher), Some(recv)) = (self.cipher, &self.recv_keys) else { return };
        if recv.current.number != server_generation {
            return self.protocol_violation("re-key answer under a stale key generation");
        }
        let p = self.provider.clone();
        let (x_peer, ct) = answer.split_at(X25519_LEN);
        let (Ok(x_peer), Ok(ct)) = (<[u8; X25519_LEN]>::try_from(x_peer), <&[u8; MLKEM_CT_LEN]>::try_from(ct)) else {
            return;
        };
        let shared = kem.decapsulate(ct).and_then(|ss_k| Ok((ss_k, dh.agree(&x_peer)?)));
        let Ok((ss_k, ss_x)) = shared else { return self.protocol_violation("invalid re-key public key") };
        let th = exchange_hash(&*p, id, generation, server_generation, &body, answer);
        let rk = schedule::rekey_secret(&*p, &th, &ss_k, &ss_x);
        let send = self.send_keys.as_ref().map(|k| k.current.rekeyed(&*p, cipher, &rk));
        let recv = self.recv_keys.as_mut().map(|r| r.rekey_next(&*p, &rk));
        match (send, recv) {
            (Some(Ok(next)), Some(Ok(()))) => self.install_rekeyed_send(next),
            _ => return self.close_with(CloseCode::INTERNAL, CloseReason::Internal("key derivation")),
        }
        // Our first frame under the new generation tells the server to switch.
        self.queue_ping(Flags::empty());
    }

    /// Server: a frame under the client's generation `generation` opened;
    /// if it is the re-keyed one, switch our own sending key.
    pub(super) fn on_peer_generation(&mut self, generation: u32) {
        let done = matches!(&self.rekey.pending,
            Some(Pending::Server { client_generation, .. }) if generation > *client_generation);
        if !done {
            return;
        }
        let Some(Pending::Server { id, server_generation, rk, .. }) = self.rekey.pending.take() else { return };
        self.rekey.id = id;
        let (Some(cipher), Some(send)) = (self.cipher, &self.send_keys) else { return };
        if send.current.number != server_generation {
            return self.close_with(CloseCode::INTERNAL, CloseReason::Internal("re-key generation moved"));
        }
        match send.current.rekeyed(&*self.provider, cipher, &rk) {
            Ok(next) => self.install_rekeyed_send(next),
            Err(_) => self.close_with(CloseCode::INTERNAL, CloseReason::Internal("key derivation")),
        }
    }

    fn install_rekeyed_send(&mut self, next: Generation) {
        let generation = next.number;
        self.send_keys = Some(SendKeys { current: next, sealed: 0, since: self.now });
        self.rekey.last = self.now;
        self.rekey.completed += 1;
        self.stats.rekeys += 1;
        self.push_event(Event::KeyUpdated { sending: true, generation });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RustCrypto;

    #[test]
    fn chunks_round_trip_and_fit() {
        let body: Vec<u8> = (0..BODY_LEN).map(|i| i as u8).collect();
        for max in [300, 1104, 60_000] {
            let parts = chunks(9, 4, &body, max);
            let mut out = alloc::vec![0u8; BODY_LEN];
            for p in &parts {
                assert!(p.len() <= max.max(HEADER_LEN + 1));
                let c = Chunk::parse(p).unwrap();
                assert_eq!((c.id, c.generation), (9, 4));
                out[c.offset as usize..c.offset as usize + c.data.len()].copy_from_slice(c.data);
            }
            assert_eq!(out, body);
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let body = alloc::vec![1u8; BODY_LEN];
        let good = chunks(1, 0, &body, 1104)[1].to_vec();
        assert!(Chunk::parse(&good).is_some());
        assert!(Chunk::parse(&good[..HEADER_LEN]).is_none(), "empty data");
        let mut zero_id = good.clone();
        zero_id[..4].fill(0);
        assert!(Chunk::parse(&zero_id).is_none());
        let mut wrong_total = good.clone();
        wrong_total[11] ^= 1;
        assert!(Chunk::parse(&wrong_total).is_none());
        let mut past_end = good.clone();
        past_end[8..10].copy_from_slice(&(BODY_LEN as u16).to_be_bytes());
        assert!(Chunk::parse(&past_end).is_none());
    }

    #[test]
    fn a_stolen_key_does_not_predict_the_rekeyed_generation() {
        let p = RustCrypto;
        let alg = AeadAlgorithm::Aes256Gcm;
        let g = Generation::new(&p, alg, Secret::new([7; HASH_LEN]), 5).unwrap();
        let ratcheted = g.next(&p, alg).unwrap();
        let rekeyed = g.rekeyed(&p, alg, &Secret::new([9; HASH_LEN])).unwrap();
        let other = g.rekeyed(&p, alg, &Secret::new([10; HASH_LEN])).unwrap();
        assert_eq!(rekeyed.number, 6);
        assert_ne!(rekeyed.key_id(), ratcheted.key_id(), "the ratchet alone must not reach it");
        assert_ne!(rekeyed.key_id(), other.key_id(), "the exchange secret must matter");
    }
}
