//! Deadlines: handshake and idle timeouts, heartbeats, key updates.

use alloc::string::String;
use core::time::Duration;

use bytes::Bytes;
use rand_core::Rng as _;

use super::*;

impl Session {
    // ------------------------------------------------------------------ time

    /// When [`Session::handle_timeout`] should next be called; `None` once
    /// closed. While output is waiting, the last `now` the session saw.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, State::Closed) {
            return None;
        }
        if self.has_output() {
            return Some(self.now);
        }
        let mut t: Option<Instant> = None;
        let mut at = |d: Instant| t = Some(t.map_or(d, |t| t.min(d)));
        match self.state {
            State::Draining { until } => {
                // The previous receive key is still erased on time.
                let grace = self.recv_keys.as_ref().and_then(|k| k.previous.as_ref()).map(|(_, g)| *g);
                return Some(grace.map_or(until, |g| g.min(until)));
            }
            State::Established | State::Closing => {
                if !self.confirmed {
                    at(self.created + self.config.handshake_timeout);
                }
                if let Some(idle) = self.idle_timeout {
                    at(self.last_recv + idle);
                }
                if let Some(hb) = self.heartbeat_interval() {
                    at(self.last_send.max(self.last_heartbeat) + hb);
                }
                if let Some(k) = self.send_keys.as_ref().filter(|_| !self.rekey.freezes_sending()) {
                    at(k.since + self.config.key_update_interval);
                }
                if let Some(d) = self.reliability_deadline() {
                    at(d);
                }
                // A closing session may still need a new path (its
                // Disconnect waits for acknowledgements), so challenges run.
                if let Some(d) = self.path_deadline() {
                    at(d);
                }
                if self.is_established()
                    && let Some(d) = self.rekey_deadline()
                {
                    at(d);
                }
                if let Some(k) = &self.recv_keys {
                    if let Some((_, until)) = &k.previous {
                        at(*until);
                    }
                    at(self.recv_since + self.overdue_after());
                }
            }
            _ => at(self.created + self.config.handshake_timeout),
        }
        if let Some(d) = self.hs_send.as_ref().and_then(FlightSend::deadline)
            && self.path_kind() == PathKind::Datagram
        {
            at(d);
        }
        t
    }

    pub(super) fn heartbeat_interval(&self) -> Option<Duration> {
        self.config.heartbeat_interval.or(self.idle_timeout.map(|i| i / 3))
    }

    /// How long the peer may keep one key before it counts as overdue.
    pub(super) fn overdue_after(&self) -> Duration {
        self.config.key_update_interval * 2 + self.config.key_grace
    }

    /// Handles every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        match self.state {
            State::Closed => return,
            State::Draining { until } => {
                if let Some(k) = &mut self.recv_keys {
                    k.expire(now);
                }
                if now >= until {
                    self.finish(CloseReason::Local { code: CloseCode::NO_ERROR, reason: String::new() });
                }
                return;
            }
            State::ClientHello(_) | State::ClientFlight(_) | State::ServerFlight(_) => {
                if now >= self.created + self.config.handshake_timeout {
                    self.close_reason = Some(CloseReason::HandshakeTimeout);
                    return self.finish(CloseReason::HandshakeTimeout);
                }
            }
            State::Established | State::Closing => {
                if !self.confirmed && now >= self.created + self.config.handshake_timeout {
                    // The server never answered our flight: it lost it, or
                    // its own handshake timed out.
                    self.close_reason = Some(CloseReason::HandshakeTimeout);
                    return self.finish(CloseReason::HandshakeTimeout);
                }
                if self.idle_timeout.is_some_and(|idle| now >= self.last_recv + idle) {
                    // Silent: the peer is gone or unreachable.
                    self.close_reason = Some(CloseReason::IdleTimeout);
                    return self.finish(CloseReason::IdleTimeout);
                }
                if self.recv_keys.is_some() && now >= self.recv_since + self.overdue_after() {
                    return self.close_with(
                        CloseCode::KEY_UPDATE_OVERDUE,
                        CloseReason::ProtocolViolation("peer did not update its key in time"),
                    );
                }
                if let Some(k) = &mut self.recv_keys {
                    k.expire(now);
                }
                self.on_reliability_timer();
                self.on_path_timer();
                if self.is_established() {
                    self.on_rekey_timer();
                }
                let due = self.send_keys.as_ref().is_some_and(|k| now >= k.since + self.config.key_update_interval);
                if due && !self.rekey.freezes_sending() {
                    self.update_send_key();
                }
                if let Some(hb) = self.heartbeat_interval()
                    && now >= self.last_send.max(self.last_heartbeat) + hb
                    && self.is_established()
                {
                    self.last_heartbeat = now;
                    self.release_idle_memory();
                    self.queue_ping(Flags::empty());
                }
            }
        }
        if self.path_kind() == PathKind::Datagram {
            let max_rto = self.config.handshake_rto * 8;
            if let Some(s) = &mut self.hs_send {
                let before = s.next;
                if s.on_timeout(now, max_rto) {
                    self.stats.handshake_retransmits += (before - s.next) as u64;
                    self.hs_probe = s.stage == codec::STAGE_CLIENT_FLIGHT && self.send_keys.is_some();
                }
            }
        }
    }

    /// Nothing was sent for a heartbeat interval: buffers and queues sized
    /// for past traffic are given back until data flows again, so an idle
    /// session holds little (the README's figure).
    fn release_idle_memory(&mut self) {
        self.rx_buf = BytesMut::new();
        for q in &mut self.queues {
            q.shrink_to_fit();
        }
        self.events.shrink_to_fit();
        self.path_queue.shrink_to_fit();
        self.resolved = Vec::new();
        self.acked_ranges = Vec::new();
        self.outbound.shrink();
        self.recovery.shrink();
    }

    /// A probe timeout from the measured RTT (the handshake's initial RTO
    /// before any measurement): how long to wait for an answer.
    pub(super) fn probe_timeout(&self) -> Duration {
        if self.rtt.has_sample() {
            self.rtt.pto(self.config.max_ack_delay).max(Duration::from_millis(10))
        } else {
            self.config.handshake_rto
        }
    }

    /// Queues a ping; `flags` carries REQUIRES_ACK when it is a probe.
    pub(super) fn queue_ping(&mut self, flags: Flags) {
        let id = self.rng.next_u64();
        self.ping = Some((id, self.now));
        self.queue(Q_CONTROL, ping(id, flags));
    }

    pub(super) fn update_send_key(&mut self) {
        let (Some(cipher), Some(keys)) = (self.cipher, self.send_keys.as_mut()) else { return };
        match keys.current.next(&*self.provider, cipher) {
            Ok(next) => {
                let generation = next.number;
                *keys = SendKeys { current: next, sealed: 0, since: self.now };
                self.push_event(Event::KeyUpdated { sending: true, generation });
            }
            Err(_) => self.close_with(CloseCode::INTERNAL, CloseReason::Internal("key derivation")),
        }
    }
}

/// A Heartbeat ping with id `id`.
pub(super) fn ping(id: u64, flags: Flags) -> Outgoing {
    Outgoing::new(MessageType::HEARTBEAT, flags, Head::Heartbeat(codec::PING, id), Bytes::new())
}
