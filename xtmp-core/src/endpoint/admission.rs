//! Admission of new sessions (SPEC.md 3.2, 3.7.1): ClientHellos from
//! remotes with no session yet, reassembled under the half-open limits,
//! Retry cookies under load, and stateless Resets for sealed frames of
//! sessions this endpoint does not hold.

use alloc::vec::Vec;

use rand_core::Rng as _;

use super::{Endpoint, EndpointEvent, Entry, Remote, RemoteKind, RetryPolicy, SessionHandle};
use crate::crypto::{AeadAlgorithm, AeadKey, NONCE_LEN, Secret, TAG_LEN};
use crate::handshake::{ServerHandshake, messages};
use crate::session::carrier::FlightRecv;
use crate::session::codec::{self, HandshakeChunk};
use crate::session::{ConnectError, PathId, Session};
use crate::time::Instant;
use crate::wire::{Flags, Frame, Header, MessageType};

/// A ClientHello being reassembled.
pub(super) struct PartialHello {
    pub(super) recv: FlightRecv,
    pub(super) received: usize,
}

/// A key that seals Retry tokens, and its generation.
pub(super) struct TokenKey {
    generation: u8,
    aead: alloc::boxed::Box<dyn AeadKey>,
    counter: u64,
    created: Instant,
}

pub(super) const TOKEN_LEN: usize = 1 + 8 + 8 + TAG_LEN;

impl Endpoint {
    /// A frame from a remote with no session yet: only ClientHello chunks
    /// are accepted.
    pub(super) fn unrouted(&mut self, remote: Remote, frame: &Frame<'_>, datagram_len: usize) {
        let h = frame.header();
        let chunk = (h.message_type == MessageType::HANDSHAKE && !h.flags.contains(Flags::ENCRYPTED))
            .then(|| HandshakeChunk::parse(frame.payload()))
            .flatten();
        if chunk.is_some_and(|c| c.stage == codec::STAGE_CLIENT_FLIGHT) {
            // The client's final flight from a new address: it was rebound
            // after it read our flight. The flight authenticates itself;
            // the new address becomes a path only once a sealed frame from
            // it opens (SPEC.md 3.2).
            match self.sessions.get_mut(&h.session_id) {
                Some(e) if !e.session.is_established() => {
                    e.session.handle_relayed_handshake(self.now, frame);
                    self.collect(h.session_id);
                }
                _ => self.stats.dropped += 1,
            }
            return;
        }
        let Some(chunk) = chunk.filter(|c| c.stage == codec::STAGE_CLIENT_HELLO) else {
            self.stats.dropped += 1;
            if h.flags.contains(Flags::ENCRYPTED) && !self.sessions.contains_key(&h.session_id) {
                self.reset(remote, h.session_id, datagram_len);
            }
            return;
        };
        let cid = h.session_id;
        if let Some(&sid) = self.by_hello.get(&cid) {
            // A retransmitted hello for a session we created: it has lost
            // our flight (its route moved on, e.g. a new stream). From the
            // address the session was created from it extends that path's
            // amplification budget; from any other it changes nothing
            // (those bytes were not received on the path: a copy of an
            // honest hello from a spoofed address must not let the server
            // send more there).
            let now = self.now;
            let origin = self.sessions.get(&sid).and_then(|e| e.paths.first().copied().flatten());
            if origin != Some(remote) {
                self.stats.dropped += 1;
                return;
            }
            if let Some(e) = self.entry_for_input(sid) {
                let mut raw = frame.raw_header().to_vec();
                raw.extend_from_slice(frame.payload());
                e.session.handle_input(now, PathId(0), &raw);
            }
            self.collect(sid);
            return;
        }
        let key = (remote, cid);
        let proven = if self.hellos.contains_key(&key) {
            true
        } else if self.unproven.contains_key(&key) {
            false
        } else {
            match self.new_hello(remote, cid, &chunk, datagram_len) {
                Some(proven) => proven,
                None => return,
            }
        };
        let pool = if proven { &mut self.hellos } else { &mut self.unproven };
        let Some(partial) = pool.get_mut(&key) else { return };
        partial.received += if remote.kind == RemoteKind::Datagram { datagram_len } else { frame.encoded_len() };
        let end = chunk.offset as usize + chunk.data.len();
        if end > messages::MAX_CLIENT_HELLO_LEN || partial.recv.insert(chunk.offset, chunk.data).is_err() {
            // Past the largest hello there is: nothing honest.
            pool.remove(&key);
            self.stats.hellos_refused += 1;
            return;
        }
        let complete = match messages::split_message(partial.recv.prefix()) {
            Ok(Some((_, _, n))) => Some(n),
            Ok(None) if partial.recv.prefix().len() >= 4 && !hello_header_ok(partial.recv.prefix()) => {
                pool.remove(&key);
                self.stats.hellos_refused += 1;
                return;
            }
            Ok(None) => None,
            Err(_) => {
                pool.remove(&key);
                self.stats.hellos_refused += 1;
                return;
            }
        };
        if let Some(n) = complete {
            let Some(partial) = pool.remove(&key) else { return };
            let hello = partial.recv.prefix()[..n].to_vec();
            self.admit(remote, cid, &hello, partial.received, proven);
        }
    }

    /// The first frame of a hello from `(remote, cid)` with no state yet:
    /// decides, before keeping anything, whether it is proven (a valid
    /// token, or a stream), answered with a Retry, or answered with Busy
    /// (SPEC.md 3.2, in that order). Returns whether a reassembly entry was
    /// made for it, proven or not, or `None` if nothing was kept.
    fn new_hello(&mut self, remote: Remote, cid: u64, chunk: &HandshakeChunk<'_>, datagram_len: usize) -> Option<bool> {
        let first = chunk.offset == 0 && !chunk.data.is_empty();
        let has_token = !chunk.token.is_empty();
        if has_token && !self.check_token(&remote, cid, chunk.token) {
            self.stats.tokens_rejected += 1;
            return None;
        }
        if !has_token && self.wants_retry() {
            // Nothing is kept. Only the hello's first frame is answered,
            // once per attempt.
            if first {
                self.send_retry(remote, cid, datagram_len);
            } else {
                self.stats.dropped += 1;
            }
            return None;
        }
        let proven = has_token || remote.kind == RemoteKind::Stream;
        let origin = self.prefix(remote.addr.ip());
        if !proven {
            if !self.accepting || self.sessions.len() >= self.config.max_sessions {
                self.stats.hellos_shed += 1;
                self.send_busy(remote, cid, datagram_len, first);
                return None;
            }
            // Unproven state never refuses a newcomer: the oldest makes room.
            while self.unproven.len() >= self.config.max_unproven_hellos {
                let Some(oldest) = self.unproven.oldest() else { break };
                self.unproven.remove(&oldest);
                self.stats.hellos_evicted += 1;
            }
            let hello = PartialHello { recv: FlightRecv::new(), received: 0 };
            self.unproven.insert((remote, cid), self.now, origin, hello);
            return Some(false);
        }
        if !self.accepting
            || self.proven_half_open() >= self.config.max_half_open
            || self.sessions.len() >= self.config.max_sessions
        {
            self.stats.hellos_shed += 1;
            self.send_busy(remote, cid, datagram_len, first);
            return None;
        }
        if self.half_open_in(origin) >= self.config.max_half_open_per_prefix {
            self.stats.hellos_shed_per_prefix += 1;
            self.send_busy(remote, cid, datagram_len, first);
            return None;
        }
        let hello = PartialHello { recv: FlightRecv::new(), received: 0 };
        self.hellos.insert((remote, cid), self.now, origin, hello);
        Some(true)
    }

    /// A stateless Retry for the hello `cid` from `remote` (over UDP only
    /// in answer to a datagram at least as long, so it amplifies nothing).
    fn send_retry(&mut self, remote: Remote, cid: u64, datagram_len: usize) {
        let token = self.make_token(&remote, cid);
        let mut payload = Vec::with_capacity(codec::HANDSHAKE_HEADER_LEN + 4 + token.len() + 2);
        HandshakeChunk::write_header(codec::STAGE_RETRY, 0, 0, &[], &mut payload);
        payload.extend_from_slice(&crate::handshake::retry_message(&token));
        if self.stateless_frame(remote, cid, &payload, datagram_len) {
            self.stats.retries_sent += 1;
        }
    }

    /// Busy, asking the client of hello `cid` to come back after
    /// [`EndpointConfig::busy_retry_after`]: only for a hello's first frame
    /// (once per attempt), and over UDP within the Busy rate and for a
    /// datagram at least as long.
    fn send_busy(&mut self, remote: Remote, cid: u64, datagram_len: usize, first: bool) {
        if !first {
            return;
        }
        if remote.kind == RemoteKind::Datagram && !self.busy.take(self.now) {
            self.stats.busy_withheld += 1;
            return;
        }
        let ms = u32::try_from(self.config.busy_retry_after.as_millis()).unwrap_or(u32::MAX);
        let mut payload = Vec::with_capacity(codec::HANDSHAKE_HEADER_LEN + 8);
        HandshakeChunk::write_header(codec::STAGE_BUSY, 0, 0, &[], &mut payload);
        messages::encode_busy(ms, &mut payload);
        if self.stateless_frame(remote, cid, &payload, datagram_len) {
            self.stats.busy_sent += 1;
        } else {
            self.stats.busy_withheld += 1;
        }
    }

    /// Queues a cleartext HandshakeAck frame to `remote` naming the
    /// client's id `cid`. Over UDP only when `datagram_len` is at least the
    /// frame's length (no amplification); returns whether it was queued.
    fn stateless_frame(&mut self, remote: Remote, cid: u64, payload: &[u8], datagram_len: usize) -> bool {
        let len = crate::wire::HEADER_LEN + payload.len();
        if remote.kind == RemoteKind::Datagram && datagram_len < len {
            return false;
        }
        let header = Header::new(MessageType::HANDSHAKE_ACK, cid, 0);
        let mut out = alloc::vec![0u8; len];
        if Frame::encode(&header, payload, &mut out).is_err() {
            return false;
        }
        self.stateless.push_back((remote, out));
        true
    }

    /// A sealed frame names session `sid`, which this endpoint does not
    /// hold: with a reset key, answer with a Reset (SPEC.md 3.7.1), within
    /// the rate, and over UDP only for a datagram longer than the Reset
    /// (so two endpoints can never keep resetting each other, and a Reset
    /// amplifies nothing).
    pub(super) fn reset(&mut self, remote: Remote, sid: u64, datagram_len: usize) {
        let Some(key) = self.config.server.reset_key.clone() else { return };
        let short = remote.kind == RemoteKind::Datagram && datagram_len <= crate::session::reset::RESET_FRAME_LEN;
        if short || !self.resets.take(self.now) {
            self.stats.resets_withheld += 1;
            return;
        }
        let frame = crate::session::reset::reset_frame(&*self.config.server.provider, &key, sid);
        self.stateless.push_back((remote, frame));
        self.stats.resets_sent += 1;
    }

    pub(super) fn admit(&mut self, remote: Remote, client_sid: u64, hello: &[u8], received: usize, proven: bool) {
        // The hello's mac1 is computed here once; the handshake reuses what
        // this parsed.
        let checked = match ServerHandshake::check(&self.config.server, hello) {
            Ok(c) if c.summary().client_session_id == client_sid => c,
            _ => {
                self.stats.hellos_refused += 1;
                return;
            }
        };
        if !proven && (self.wants_retry() || self.handshaking_unproven >= self.config.max_half_open) {
            // It began before the load did: it proves its address now, and
            // unproven handshakes stay a bounded few.
            return self.send_retry(remote, client_sid, received);
        }
        let session = Session::accept_checked(
            self.now,
            self.config.session.clone(),
            self.config.server.clone(),
            remote.path_kind(),
            hello,
            checked,
            received,
            &mut self.rng,
        );
        let mut session = match session {
            Ok(s) => s,
            Err(ConnectError::Handshake(_) | ConnectError::Config(_)) => {
                self.stats.hellos_refused += 1;
                return;
            }
        };
        if proven {
            session.validate_path(PathId(0));
        }
        let sid = session.local_session_id();
        if self.sessions.contains_key(&sid) || self.retired.contains_key(&sid) {
            // A 2^-64 collision: refuse rather than confuse two sessions.
            return;
        }
        self.stats.sessions_created += 1;
        if let Some(old) = self.routes.insert(remote, sid)
            && let Some(e) = self.sessions.get_mut(&old)
            && let Some(i) = e.paths.iter().position(|r| *r == Some(remote))
        {
            // A new client on the address and port of an old session (a
            // client restarted on its port): the old one loses the path.
            e.paths[i] = None;
            e.session.path_closed(PathId(i as u32));
            self.collect(old);
        }
        self.unrouted_streams.remove(&remote);
        self.by_hello.insert(client_sid, sid);
        let origin = self.prefix(remote.addr.ip());
        let entry = Entry {
            session,
            paths: alloc::vec![Some(remote)],
            hello_key: client_sid,
            held: 0,
            handshaking: true,
            proven,
            origin,
            deadline: None,
            stale: false,
            queued: false,
        };
        if proven {
            self.handshaking += 1;
            *self.handshaking_from.entry(origin).or_default() += 1;
        } else {
            self.handshaking_unproven += 1;
        }
        self.sessions.insert(sid, entry);
        self.events.push_back(EndpointEvent::NewSession(SessionHandle(sid), remote));
        self.collect(sid);
    }

    pub(super) fn wants_retry(&self) -> bool {
        match self.config.retry {
            RetryPolicy::Never => false,
            RetryPolicy::Always => true,
            RetryPolicy::UnderLoad(n) => self.half_open() >= n,
        }
    }

    pub(super) fn token_key(&mut self) -> Option<&mut TokenKey> {
        let stale = self.token_keys[0].as_ref().is_none_or(|k| self.now >= k.created + self.config.token_key_lifetime);
        if stale {
            let mut key = Secret::<32>::zero();
            self.rng.fill_bytes(key.expose_mut());
            let generation = self.token_keys[0].as_ref().map_or(0, |k| k.generation.wrapping_add(1));
            let aead = self.config.server.provider.aead(AeadAlgorithm::Aes256Gcm, &key).ok()?;
            let fresh = TokenKey { generation, aead, counter: 0, created: self.now };
            self.token_keys[1] = self.token_keys[0].replace(fresh);
        }
        self.token_keys[0].as_mut()
    }

    /// `generation u8 ‖ counter u64 ‖ AEAD(issued_at u64) ‖ tag`, the
    /// associated data binding the remote address and the client's
    /// session id.
    pub(super) fn make_token(&mut self, remote: &Remote, cid: u64) -> Vec<u8> {
        let now = self.now.as_nanos();
        let aad = token_aad(remote, cid);
        let Some(key) = self.token_key() else { return Vec::new() };
        key.counter += 1;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&key.counter.to_be_bytes());
        let mut body = now.to_be_bytes();
        let Ok(tag) = key.aead.seal(&nonce, &aad, &mut body) else { return Vec::new() };
        let mut t = Vec::with_capacity(TOKEN_LEN);
        t.push(key.generation);
        t.extend_from_slice(&key.counter.to_be_bytes());
        t.extend_from_slice(&body);
        t.extend_from_slice(&tag);
        t
    }

    pub(super) fn check_token(&mut self, remote: &Remote, cid: u64, token: &[u8]) -> bool {
        if token.len() != TOKEN_LEN {
            return false;
        }
        let _ = self.token_key();
        let Some(key) = self.token_keys.iter().flatten().find(|k| k.generation == token[0]) else { return false };
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&token[1..9]);
        let mut body: [u8; 8] = token[9..17].try_into().unwrap_or_default();
        let tag: [u8; TAG_LEN] = token[17..].try_into().unwrap_or_default();
        if key.aead.open(&nonce, &token_aad(remote, cid), &mut body, &tag).is_err() {
            return false;
        }
        let issued = Instant::from_nanos(u64::from_be_bytes(body));
        issued <= self.now && self.now < issued + self.config.token_lifetime
    }
}

fn token_aad(remote: &Remote, cid: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(11 + 19 + 8);
    aad.extend_from_slice(b"xtmp1 token");
    aad.extend_from_slice(&remote.token_bytes());
    aad.extend_from_slice(&cid.to_be_bytes());
    aad
}

/// Whether the first four bytes of a hello in reassembly can begin a
/// ClientHello no longer than [`messages::MAX_CLIENT_HELLO_LEN`]: a longer
/// one is refused at its header, before its bytes are held.
fn hello_header_ok(prefix: &[u8]) -> bool {
    let len = u32::from_be_bytes([0, prefix[1], prefix[2], prefix[3]]) as usize;
    prefix[0] == messages::CLIENT_HELLO && 4 + len <= messages::MAX_CLIENT_HELLO_LEN
}
