//! Receiving: frames in, handshake progress, authentication and dispatch.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::{Bytes, BytesMut};

/// The smallest allocation of the receive buffer.
const RX_BUFFER_MIN: usize = 16 * 1024;

use super::*;

impl Session {
    // ---------------------------------------------------------------- input

    /// Processes bytes that arrived on `path`: one datagram, or any chunk
    /// of a stream. Frames that fail a check are dropped and counted, and
    /// change nothing else; a malformed frame on a stream path fails that
    /// path ([`Event::PathFailed`]).
    pub fn handle_input(&mut self, now: Instant, path: PathId, data: &[u8]) {
        self.now = self.now.max(now);
        let Some(p) = self.paths.get_mut(path.0 as usize) else { return };
        if !p.alive || matches!(self.state, State::Closed) {
            return;
        }
        p.received += data.len() as u64;
        match p.kind {
            PathKind::Datagram => {
                let mut frames = DatagramFrames::new(data, self.local_max_frame);
                for f in frames.by_ref() {
                    match f {
                        Ok(frame) => self.on_frame(path, &frame),
                        Err(_) => {
                            self.stats.frames_dropped += 1;
                            break;
                        }
                    }
                }
            }
            PathKind::Stream => {
                let Some(mut deframer) = p.deframer.take() else { return };
                let mut input = data;
                loop {
                    match deframer.decode(&mut input) {
                        Ok(Some(frame)) => self.on_frame(path, &frame),
                        Ok(None) => break,
                        Err(e) => {
                            self.stats.frames_dropped += 1;
                            self.fail_path(path, Some(e));
                            break;
                        }
                    }
                }
                // A path that died meanwhile lets its partial frame go.
                if let Some(p) = self.paths.get_mut(path.0 as usize).filter(|p| p.alive) {
                    p.deframer = Some(deframer);
                }
            }
        }
    }

    pub(super) fn fail_path(&mut self, path: PathId, error: Option<crate::wire::WireError>) {
        self.path_closed(path);
        self.push_event(Event::PathFailed { path, error });
        self.failed_paths.push(path);
        // A server waiting for the client's flight keeps waiting, until its
        // handshake timeout: the client resends the flight on its next
        // connection (SPEC.md 3.2).
        let awaiting_flight = self.role == Role::Server && matches!(self.state, State::ServerFlight(_));
        if !self.paths.iter().any(|p| p.alive) && !self.is_established() && !awaiting_flight {
            self.finish(CloseReason::PathsLost);
        }
    }

    pub(super) fn drop_frame(&mut self) {
        self.stats.frames_dropped += 1;
    }

    pub(super) fn on_frame(&mut self, path: PathId, frame: &Frame<'_>) {
        if matches!(self.state, State::Draining { .. } | State::Closed) {
            return self.drop_frame();
        }
        let h = frame.header();
        if !h.flags.contains(Flags::ENCRYPTED) {
            return self.on_cleartext(path, frame);
        }
        if h.session_id != self.local_sid {
            return self.drop_frame();
        }
        self.on_encrypted(path, frame);
    }

    pub(super) fn on_cleartext(&mut self, path: PathId, frame: &Frame<'_>) {
        let h = frame.header();
        let from_peer_type = match self.role {
            Role::Client => MessageType::HANDSHAKE_ACK,
            Role::Server => MessageType::HANDSHAKE,
        };
        if self.role == Role::Client && h.message_type == super::reset::STATELESS_RESET {
            return self.on_reset(frame);
        }
        // A server also sees retransmitted ClientHello chunks, addressed
        // with the client's own id.
        let addressed = h.session_id == self.local_sid
            || (self.role == Role::Server && Some(h.session_id) == self.peer_sid && h.message_type == from_peer_type);
        if !addressed {
            return self.drop_frame();
        }
        if h.message_type == MessageType::DISCONNECT && self.recv_keys.is_none() {
            // Before keys exist a Disconnect can only be cleartext: the
            // peer's handshake failed.
            let reason = codec::parse_code_reason(frame.payload()).map_or(
                CloseReason::Peer { code: CloseCode::HANDSHAKE_FAILED, reason: String::new() },
                |(code, reason)| CloseReason::Peer { code: CloseCode(code), reason },
            );
            self.note_received(frame);
            return self.finish(reason);
        }
        if h.message_type != from_peer_type {
            return self.drop_frame();
        }
        let Some(chunk) = HandshakeChunk::parse(frame.payload()) else { return self.drop_frame() };
        self.note_received(frame);
        if h.session_id == self.local_sid && self.role == Role::Server && !self.is_open() {
            // Only the client, having read our ServerHello, knows this id.
            // (After the handshake a new path needs a challenge: 3.8.)
            self.paths[path.0 as usize].validated = true;
        }
        self.on_handshake_chunk(chunk);
    }

    /// A Reset frame: the server no longer holds this session. It counts
    /// only if it names the session (the server's id) and carries the
    /// token the server gave in its Parameters (compared in constant
    /// time); otherwise anyone could end the session.
    fn on_reset(&mut self, frame: &Frame<'_>) {
        let h = frame.header();
        let genuine = self.peer_sid == Some(h.session_id)
            && self.reset_token.is_some_and(|t| crate::crypto::ct_eq(&t, frame.payload()));
        if !genuine {
            return self.drop_frame();
        }
        self.note_received(frame);
        self.stats.resets_received += 1;
        self.finish(CloseReason::StatelessReset);
    }

    /// A server's handshake frame that arrived from an address that is not
    /// one of the session's paths (the endpoint relays a client flight
    /// after a NAT rebinding). It counts toward the handshake only: it
    /// validates no path and extends no amplification budget.
    pub(crate) fn handle_relayed_handshake(&mut self, now: Instant, frame: &Frame<'_>) {
        self.now = self.now.max(now);
        let h = frame.header();
        let relayable = self.role == Role::Server
            && matches!(self.state, State::ServerFlight(_))
            && h.session_id == self.local_sid
            && h.message_type == MessageType::HANDSHAKE
            && !h.flags.contains(Flags::ENCRYPTED);
        match HandshakeChunk::parse(frame.payload()).filter(|c| relayable && c.stage == codec::STAGE_CLIENT_FLIGHT) {
            Some(chunk) => {
                self.note_received(frame);
                self.on_handshake_chunk(chunk);
            }
            None => self.drop_frame(),
        }
    }

    pub(super) fn note_received(&mut self, frame: &Frame<'_>) {
        self.stats.frames_received += 1;
        self.stats.bytes_received += frame.encoded_len() as u64;
    }

    pub(super) fn on_handshake_chunk(&mut self, chunk: HandshakeChunk<'_>) {
        use codec::{STAGE_CLIENT_FLIGHT, STAGE_CLIENT_HELLO, STAGE_RETRY, STAGE_SERVER_FLIGHT};
        // The ack field acknowledges our current flight.
        if let Some(send) = &mut self.hs_send {
            send.on_ack(chunk.ack);
        }
        let expected = match self.role {
            Role::Client => STAGE_SERVER_FLIGHT,
            Role::Server => STAGE_CLIENT_FLIGHT,
        };
        if chunk.stage == STAGE_RETRY && self.role == Role::Client {
            return self.on_retry(chunk.data);
        }
        if chunk.stage == codec::STAGE_BUSY && self.role == Role::Client {
            return self.on_busy(chunk.data);
        }
        if self.role == Role::Server && chunk.stage == STAGE_CLIENT_HELLO {
            // A repeated hello: the client lacks the start of our flight.
            // Our own timer resends it; the bytes extend our budget.
            return;
        }
        if chunk.stage != expected {
            return self.drop_frame();
        }

        if chunk.data.is_empty() {
            // A pure acknowledgement: handled above.
            return;
        }
        if self.is_established() || matches!(self.state, State::Closing) {
            // A retransmission: the peer missed our acknowledgement.
            self.hs_ack_pending = true;
            if let Some(send) = self.hs_send.as_mut().filter(|s| !s.done) {
                send.next = send.acked;
            }
            return;
        }
        let before = self.hs_recv.contiguous();
        if self.hs_recv.insert(chunk.offset, chunk.data).is_err() {
            return self.fail_handshake(HandshakeError::TooLarge {
                length: chunk.offset as usize + chunk.data.len(),
                max: carrier::MAX_FLIGHT_LEN,
            });
        }
        if self.path_kind() == PathKind::Datagram {
            self.hs_ack_pending = true;
        }
        if self.role == Role::Client && self.peer_sid.is_none() {
            // The first RTT sample: from our hello to the server's answer,
            // unless the hello was sent more than once (it would be
            // ambiguous which one was answered).
            if let Some(sent) = self.hs_send.as_ref().and_then(|s| s.sent_at)
                && self.stats.handshake_retransmits == 0
                && !self.retried
                && !self.rtt.has_sample()
            {
                self.rtt_sample(self.now.saturating_duration_since(sent));
            }
            self.learn_server_sid();
            if self.peer_sid.is_some()
                && let Some(send) = self.hs_send.as_mut().filter(|s| s.stage == STAGE_CLIENT_HELLO)
            {
                // The server has our hello, and we can acknowledge its
                // flight from now on. Until then the hello is repeated: it
                // also extends the server's amplification budget.
                send.done = true;
            }
        }
        if self.hs_recv.contiguous() > before {
            self.advance_handshake();
        }
    }

    pub(super) fn path_kind(&self) -> PathKind {
        self.paths[self.primary.0 as usize].kind
    }

    /// The ServerHello's session id sits at bytes 40..48 of the server's
    /// flight, so the client can acknowledge before the whole ServerHello
    /// (about 1.7 KB, two datagrams) has arrived.
    pub(super) fn learn_server_sid(&mut self) {
        let prefix = self.hs_recv.prefix();
        if prefix.len() >= 48 && prefix[0] == messages::SERVER_HELLO {
            let sid = u64::from_be_bytes(prefix[40..48].try_into().unwrap_or_default());
            if sid != 0 {
                self.peer_sid = Some(sid);
            }
        }
    }

    /// A Retry: the same ClientHello again from its first byte, with the
    /// server's token in every stage-`00` frame (SPEC.md 3.2). Accepted
    /// once, and only before any byte of the server's flight; a malformed
    /// one is dropped.
    pub(super) fn on_retry(&mut self, data: &[u8]) {
        let State::ClientHello(expect) = &self.state else { return self.drop_frame() };
        if self.retried || self.hs_recv.contiguous() > 0 {
            return self.drop_frame();
        }
        let token = whole_message(data, messages::RETRY).and_then(|body| messages::parse_retry(body).ok());
        // A malformed Retry is dropped, as any malformed frame: it must
        // not end a handshake the genuine server may still answer.
        let Some(token) = token else { return self.drop_frame() };
        let hello = expect.hello_message().to_vec();
        self.retried = true;
        self.retry_token = token;
        self.hs_send = Some(FlightSend::new(codec::STAGE_CLIENT_HELLO, hello, self.config.handshake_rto));
    }

    /// A Busy: the server did not take our hello and asks us to come back
    /// later. Accepted only before any byte of the server's flight (after
    /// it, the server has taken the hello); the session ends with
    /// [`CloseReason::Busy`] and sends nothing.
    pub(super) fn on_busy(&mut self, data: &[u8]) {
        if !matches!(self.state, State::ClientHello(_)) || self.hs_recv.contiguous() > 0 {
            return self.drop_frame();
        }
        let ms = whole_message(data, messages::BUSY).and_then(|body| messages::parse_busy(body).ok());
        let Some(ms) = ms else { return self.drop_frame() };
        let retry_after = core::time::Duration::from_millis(u64::from(ms));
        self.hs_send = None;
        self.close_reason = Some(CloseReason::Busy { retry_after });
        self.finish(CloseReason::Busy { retry_after });
    }

    pub(super) fn advance_handshake(&mut self) {
        loop {
            let pending = self.hs_recv.pending();
            let (n, complete) = match messages::split_message(pending) {
                Ok(Some((_, _, n))) => (n, true),
                Ok(None) => (0, false),
                Err(e) => return self.fail_handshake(e),
            };
            if !complete {
                return;
            }
            let message: Vec<u8> = pending[..n].to_vec();
            self.hs_recv.consumed += n;
            let state = core::mem::replace(&mut self.state, State::Closed);
            let result = match state {
                State::ClientHello(expect) => expect.handle_server_hello(&message).map(|next| {
                    self.peer_sid = Some(next.server_session_id());
                    self.state = State::ClientFlight(next);
                    None
                }),
                State::ClientFlight(expect) => {
                    let unix = self.unix_time();
                    expect.handle_flight(&message, &mut self.rng, unix).map(|(flight, outcome)| {
                        self.hs_send =
                            Some(FlightSend::new(codec::STAGE_CLIENT_FLIGHT, flight, self.config.handshake_rto));
                        Some(outcome)
                    })
                }
                State::ServerFlight(expect) => expect.handle(&message, self.unix_time()).map(Some),
                other => {
                    self.state = other;
                    return;
                }
            };
            match result {
                Ok(None) => {}
                Ok(Some(outcome)) => return self.establish(outcome),
                Err(e) => return self.fail_handshake(e),
            }
        }
    }

    pub(super) fn establish(&mut self, outcome: HandshakeOutcome) {
        let p = &*self.provider;
        let HandshakeOutcome {
            role, cipher, client_secret, server_secret, peer_identity, peer_params, exporter, ..
        } = outcome;
        self.exporter = Some(exporter);
        if role == Role::Client {
            self.reset_token = peer_params.reset_token;
        }
        let (send, recv) = match role {
            Role::Client => (client_secret, server_secret),
            Role::Server => (server_secret, client_secret),
        };
        let keys = Generation::new(p, cipher, send, 0)
            .and_then(|send| Ok((send, RecvKeys::new(Generation::new(p, cipher, recv, 0)?))));
        let (send, recv) = match keys {
            Ok(k) => k,
            Err(e) => return self.fail_handshake(HandshakeError::Crypto(e)),
        };
        self.cipher = Some(cipher);
        self.send_keys = Some(SendKeys { current: send, sealed: 0, since: self.now });
        self.recv_keys = Some(recv);
        self.recv_since = self.now;
        self.peer_max_frame = peer_params.max_frame_payload.min(self.local_max_frame.max(1024));
        self.peer_max_message = peer_params.max_message_len;
        self.send_credit = SendCredit::new(peer_params.receive_window);
        self.subs.set_peer_window(peer_params.subscription_window);
        let idle = match (self.local_idle_ms, peer_params.idle_timeout_ms) {
            (0, 0) => None,
            (0, x) | (x, 0) => Some(x),
            (a, b) => Some(a.min(b)),
        };
        self.idle_timeout = idle.map(|ms| Duration::from_millis(ms.into()));
        self.last_recv = self.now;
        self.rekey.last = self.now;
        self.state = State::Established;
        let connected = Event::Connected { peer: peer_identity, cipher };
        self.hs_recv.release();
        self.scratch = Vec::new();
        if self.role == Role::Server {
            // The client's flight shows it has ours.
            if let Some(s) = &mut self.hs_send {
                s.release();
            }
            self.hs_ack_pending = self.path_kind() == PathKind::Datagram;
            for p in &mut self.paths {
                p.validated = true;
            }
            self.confirmed = true;
            self.push_event(connected);
            // The first sealed frame confirms the handshake to the client
            // (SPEC.md 3.1), and its Pong gives the first RTT sample.
            self.queue_ping(Flags::empty());
        } else {
            if self.path_kind() == PathKind::Stream
                && let Some(s) = &mut self.hs_send
            {
                // A stream delivers the flight in order, before anything
                // after it, so data may follow it at once.
                s.done = s.next >= s.data.len();
            }
            self.connected = Some(connected);
        }
    }

    /// Client: a frame from the server opened under the session keys, so
    /// the server has our flight and the handshake is complete on both
    /// sides.
    fn confirm(&mut self) {
        if let Some(s) = self.hs_send.as_mut() {
            s.release();
        }
        if !self.confirmed {
            self.confirmed = true;
            if let Some(c) = self.connected.take() {
                self.push_event(c);
            }
        }
    }

    pub(super) fn fail_handshake(&mut self, e: HandshakeError) {
        // The peer learns only that the handshake failed.
        self.close_reason = Some(CloseReason::HandshakeFailed(e));
        self.abandon_handshake();
    }

    pub(super) fn on_encrypted(&mut self, path: PathId, frame: &Frame<'_>) {
        if let (Some(cipher), Some(keys)) = (self.cipher, self.recv_keys.as_mut())
            && keys.prepare(&*self.provider, cipher, &frame.header().key_id).is_err()
        {
            return self.close_with(CloseCode::INTERNAL, CloseReason::Internal("key derivation"));
        }
        let (Some(cipher), Some(keys)) = (self.cipher, self.recv_keys.as_ref()) else {
            return self.drop_frame();
        };
        let h = frame.header();
        let seq = h.sequence;
        let stream = self.paths[path.0 as usize].kind == PathKind::Stream;
        // Replay rules first: they need no cryptography and change nothing.
        let stream_ok = !stream || self.paths[path.0 as usize].highest.is_none_or(|top| seq > top);
        if !stream_ok || self.replay.check(seq).is_err() {
            self.stats.replays_rejected += 1;
            return;
        }
        let mut plain = core::mem::take(&mut self.rx_buf);
        if plain.capacity() < frame.payload().len() {
            // Room for this frame and more: bodies are split off this buffer,
            // and it is reclaimed whole once the application drops them.
            // Control and connection frames are parsed, never kept: they
            // need only their own size (an idle session stays small).
            let data =
                matches!(h.message_type.class(), TypeClass::Application | TypeClass::Extension | TypeClass::Error);
            plain.reserve(frame.payload().len().max(if data { RX_BUFFER_MIN } else { 0 }));
        }
        let slot = match keys.open(cipher, frame, &mut plain) {
            Ok(slot) => slot,
            Err(e) => {
                plain.clear();
                self.rx_buf = plain;
                if e == OpenError::Tag && !self.paths[path.0 as usize].validated {
                    // From an address not (yet) proven to be the peer's:
                    // anyone can send those, so they count toward nothing
                    // that could close the session (SPEC.md 3.6).
                    self.stats.forgeries_ignored += 1;
                } else if e == OpenError::Tag {
                    self.stats.decrypt_failures += 1;
                    let limit = self.config.max_decrypt_failures.min(cipher.integrity_limit());
                    if self.stats.decrypt_failures >= limit {
                        self.close_with(CloseCode::INTEGRITY_LIMIT, CloseReason::IntegrityLimit);
                    }
                } else {
                    self.drop_frame();
                }
                return;
            }
        };
        // Authenticated: now, and only now, change state.
        // The peer's newest non-probing frame says where it is now.
        let probing = h.message_type == PATH_CHALLENGE || h.message_type == PATH_RESPONSE;
        let newest = self.replay.is_newest(seq) && !probing;
        if newest {
            self.latest_path = path;
        }
        self.replay.accept(seq);
        let p = &mut self.paths[path.0 as usize];
        p.authenticated += 1;
        if stream {
            p.highest = Some(seq);
        }
        let generation = keys.number(slot).unwrap_or_default();
        self.note_received(frame);
        self.last_recv = self.now;
        // Anything encrypted from the server means it has our flight.
        self.confirm();
        let grace = self.now + self.config.key_grace;
        let promoted = self.recv_keys.as_mut().map(|k| k.promote(&*self.provider, slot, grace));
        match promoted {
            Some(Ok(Some(generation))) => {
                self.recv_since = self.now;
                self.recv_opened = 0;
                self.push_event(Event::KeyUpdated { sending: false, generation });
            }
            Some(Err(_)) => return self.close_with(CloseCode::INTERNAL, CloseReason::Internal("key derivation")),
            _ => {}
        }
        if self.role == Role::Server {
            self.on_peer_generation(generation);
        }
        if slot == record::Slot::Current || slot == record::Slot::Next || slot == record::Slot::AfterNext {
            self.recv_opened += 1;
            if self.recv_opened > cipher.confidentiality_limit() {
                return self.close_with(
                    CloseCode::KEY_UPDATE_OVERDUE,
                    CloseReason::ProtocolViolation("peer exceeded the key's usage limit"),
                );
            }
        }
        if newest && self.role == Role::Server && path != self.primary && self.is_path_validated(path) {
            // The client moved to another validated path (SPEC.md 3.8).
            self.switch_primary(path);
        }
        self.rx_path = path;
        self.rx_generation = generation;
        self.rx_ack_now = false;
        if self.dispatch(h.message_type, h.flags, plain) {
            let eliciting = h.flags.contains(Flags::REQUIRES_ACK);
            self.acks.on_frame(seq, eliciting, self.rx_ack_now, self.now, self.config.max_ack_delay);
            if eliciting && self.paths[path.0 as usize].kind == PathKind::Stream {
                self.acks.owe_on_stream();
            }
        }
    }

    /// Acts on an opened frame. Returns whether to acknowledge it (a data
    /// frame refused for lack of memory is not, so the sender repeats it).
    pub(super) fn dispatch(&mut self, ty: MessageType, flags: Flags, mut plain: BytesMut) -> bool {
        let ack = match ty.class() {
            TypeClass::Control => {
                self.on_control(ty, &plain);
                true
            }
            TypeClass::Connection if ty == MessageType::HEARTBEAT => {
                self.on_heartbeat(&plain);
                true
            }
            TypeClass::Connection if ty == MessageType::DISCONNECT => {
                match codec::parse_code_reason(&plain) {
                    Some((code, reason)) => self.on_peer_disconnect(CloseCode(code), reason),
                    None => self.protocol_violation("malformed Disconnect"),
                };
                true
            }
            _ => self.receive_data(ty, flags, &mut plain),
        };
        plain.clear();
        self.rx_buf = plain;
        ack
    }

    pub(super) fn on_control(&mut self, ty: MessageType, plain: &[u8]) {
        if ty == PATH_CHALLENGE && plain.len() == codec::PATH_DATA_LEN {
            // Answered on the path it came on.
            self.queue_on_path(self.rx_path, PATH_RESPONSE, Bytes::copy_from_slice(plain));
        } else if ty == PATH_RESPONSE && plain.len() == codec::PATH_DATA_LEN {
            self.on_path_response(plain);
        } else if ty == REKEY || ty == REKEY_ACK {
            self.on_rekey_chunk(ty, self.rx_generation, plain);
        } else if ty == ACK {
            self.on_ack_frame(plain);
        } else if ty == FORWARD {
            self.on_forward_frame(plain);
        } else if ty == MAX_DATA {
            self.on_max_data_frame(plain);
        } else if ty == SUBSCRIPTION_CREDIT {
            self.on_sub_credit_frame(plain);
        } else if ty == PADDING {
            // Nothing to do: acknowledging it is the point (a probe).
        } else {
            self.protocol_violation("unknown or malformed control frame");
        }
    }

    pub(super) fn on_heartbeat(&mut self, plain: &[u8]) {
        match codec::parse_heartbeat(plain) {
            Some((codec::PING, id)) => {
                let head = Head::Heartbeat(codec::PONG, id);
                let pong = Outgoing::new(MessageType::HEARTBEAT, Flags::empty(), head, Bytes::new());
                self.queue(Q_CONTROL, pong);
            }
            Some((_, id)) => {
                if let Some((sent_id, at)) = self.ping
                    && sent_id == id
                {
                    self.ping = None;
                    self.rtt_sample(self.now - at);
                }
            }
            None => self.protocol_violation("malformed Heartbeat"),
        }
    }

    pub(super) fn rtt_sample(&mut self, sample: Duration) {
        // A pong answers at once: no acknowledgement delay to discount.
        self.rtt.update(sample, Duration::ZERO, Duration::ZERO);
    }

    pub(super) fn on_peer_disconnect(&mut self, code: CloseCode, reason: String) {
        self.release_inbound();
        self.clear_queues();
        self.fail_all(FailReason::Closed);
        self.close_reason = Some(CloseReason::Peer { code, reason });
        self.state = State::Draining { until: self.now + self.config.drain_period };
    }

    pub(super) fn protocol_violation(&mut self, what: &'static str) {
        self.close_with(CloseCode::PROTOCOL_VIOLATION, CloseReason::ProtocolViolation(what));
    }

    /// Closes immediately because of `reason`: queued messages are dropped,
    /// Disconnect is sent, then the session drains.
    pub(super) fn close_with(&mut self, code: CloseCode, reason: CloseReason) {
        if self.close_reason.is_some() {
            return;
        }
        self.clear_queues();
        self.fail_all(FailReason::Closed);
        self.queue_disconnect(code, &alloc::format!("{reason}"));
        self.close_reason = Some(reason);
        self.state = State::Closing;
    }

    /// Delivers the acknowledged messages that wait for earlier ones that
    /// will never come (SPEC.md section 4.7), before the session stops
    /// delivering.
    pub(super) fn release_inbound(&mut self) {
        let mut inbound = core::mem::replace(&mut self.inbound, Inbound::new());
        if !matches!(self.state, State::Draining { .. }) {
            inbound.release(|m| self.deliver(m));
        }
    }

    /// Ends the session now and reports `reason`.
    pub(super) fn finish(&mut self, reason: CloseReason) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.release_inbound();
        self.state = State::Closed;
        self.hs_send = None;
        self.clear_queues();
        self.fail_all(FailReason::Closed);
        self.recovery.clear();
        self.send_keys = None;
        self.recv_keys = None;
        let reason = self.close_reason.take().unwrap_or(reason);
        self.push_event(Event::Closed(reason));
    }
}

/// The body of `data` if it is exactly one handshake message of type `ty`.
fn whole_message(data: &[u8], ty: u8) -> Option<&[u8]> {
    messages::split_message(data).ok().flatten().filter(|&(t, _, n)| t == ty && n == data.len()).map(|(_, b, _)| b)
}
