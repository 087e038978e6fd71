//! The simulated clients: connecting, crashing and restarting, their
//! paths, the workload they generate, their events and their sessions'
//! ends.

use super::*;

impl World {
    pub(super) fn connect(&mut self, i: usize) {
        if self.phase >= Phase::Closing || self.clients[i].crashed {
            return;
        }
        let now = self.now;
        let kind = match self.scenario.transport {
            Transport::Datagram => PathKind::Datagram,
            Transport::Stream | Transport::Hybrid => PathKind::Stream,
        };
        let c = &mut self.clients[i];
        let n = c.sessions_started;
        let path = match self.open_path(i, kind) {
            Some(p) => p,
            None => {
                // The server is down: try again later.
                let c = &mut self.clients[i];
                c.reconnect_at = Some(now + backoff(c.backoff));
                c.backoff += 1;
                return;
            }
        };
        let c = &mut self.clients[i];
        c.paths = vec![path];
        let mut rng = ChaCha20Rng::from_seed(protocol_seed(self.seed, ((i as u64) << 20) | u64::from(n)));
        let local = c.clock.local(now);
        match Session::connect(local, self.client_session.clone(), self.client_config.clone(), kind, &mut rng) {
            Ok(s) => {
                c.session = Some(s);
                c.sessions_started += 1;
                c.attempt = crate::node::Attempt::new(now);
                self.counters.sessions += 1;
                if n > 0 {
                    self.marks.insert(Mark::Reconnect);
                }
                let name = c.name();
                self.note(&[7, i as u64, u64::from(n)], || name, "connect", || format!("session {n} over {kind:?}"));
            }
            Err(e) => self.violation(format!("client{i} could not start a session: {e}")),
        }
    }

    /// The client's node crashes: the session and its sockets vanish
    /// without a word to the server, and the application's in-flight
    /// messages with them.
    pub(super) fn crash_client(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.crashed {
            return;
        }
        c.crashed = true;
        if let Some(s) = c.session.take() {
            c.past_stats.push(s.stats());
        }
        c.attempt.subs.clear();
        self.app_session_lost(i);
        if let Some(app) = self.app.as_mut() {
            app.client_crashed(i);
        }
        let c = &mut self.clients[i];
        c.in_flight.clear();
        c.next_send = None;
        c.reconnect_at = None;
        c.redial_at = None;
        let conns: Vec<u64> = c.paths.iter().filter(|p| p.alive).filter_map(|p| p.conn).collect();
        c.paths.clear();
        let sid = c.attempt.sid.take();
        let lost = sid.map_or(0, |sid| self.checker.client_lost(sid));
        for id in conns {
            self.sever_conn(id, true);
        }
        let name = self.clients[i].name();
        self.note(&[17, i as u64], || name, "crash", || format!("{lost} reliable messages unresolved"));
    }

    /// The client's node is back: a new session, from new sockets.
    pub(super) fn restart_client(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        if !c.crashed {
            return;
        }
        c.crashed = false;
        c.backoff = 0;
        c.reconnect_at = Some(now);
        if self.phase == Phase::Faults {
            c.next_send = Some(now);
        }
        let name = c.name();
        self.note(&[18, i as u64], || name, "restart", String::new);
    }

    /// A new path of the given kind: a datagram socket, or a stream
    /// connection (`None` while the server is down).
    pub(super) fn open_path(&mut self, i: usize, kind: PathKind) -> Option<ClientPath> {
        let addr = self.clients[i].new_addr();
        match kind {
            PathKind::Datagram => {
                self.addr_owner.insert(addr, i);
                Some(ClientPath { kind, addr, conn: None, alive: true })
            }
            PathKind::Stream => {
                self.server.endpoint.as_ref()?;
                let id = self.conns.len() as u64 + 1;
                self.conns.insert(id, Conn { client: i, addr, alive: true });
                self.conn_by_addr.insert(addr, id);
                self.clients[i].up_stream.reset();
                self.clients[i].down_stream.reset();
                Some(ClientPath { kind, addr, conn: Some(id), alive: true })
            }
        }
    }

    /// A client whose stream connection broke dials a new one (or, after
    /// a datagram path failed, opens a new socket).
    pub(super) fn redial(&mut self, i: usize) {
        if self.clients[i].session.is_none() {
            return;
        }
        let kind = self.clients[i].redial_kind;
        let Some(path) = self.open_path(i, kind) else {
            let c = &mut self.clients[i];
            c.redial_at = Some(self.now + backoff(c.backoff));
            c.backoff += 1;
            return;
        };
        let c = &mut self.clients[i];
        let Some(s) = &mut c.session else { return };
        match s.add_path(kind, false) {
            Some(id) => {
                let idx = id.0 as usize;
                if c.paths.len() <= idx {
                    c.paths.resize(idx + 1, ClientPath { alive: false, ..path });
                }
                c.paths[idx] = path;
                c.backoff = 0;
            }
            None => self.violation(format!("client{i}: the session refused a new path")),
        }
    }

    /// The workload: the client application generates its next message.
    pub(super) fn generate(&mut self, i: usize) {
        let w = self.scenario.workload.clone();
        let c = &mut self.clients[i];
        if c.generated >= w.messages || self.phase != Phase::Faults {
            c.next_send = None;
            return;
        }
        let ch = &mut self.choices;
        let large = ch.chance(w.large_chance);
        let len = if large { ch.between(w.small as u64, w.large as u64) } else { ch.between(16, w.small as u64) };
        let class = if ch.chance(w.emergency) {
            2
        } else if ch.chance(w.high) {
            1
        } else {
            0
        };
        let request = ch.chance(w.request);
        // Requests are reliable: the application waits for every answer
        // before it closes, which an unreliable request may never get.
        let reliable = !ch.chance(w.unreliable) || request;
        let message_type = CLIENT_TYPES[ch.below(CLIENT_TYPES.len() as u64) as usize];
        c.generated += 1;
        let b = body(i as u32, c.sessions_started, c.generated, len as usize);
        c.pending.push_back(AppMsg { message_type, body: b, class, reliable, request, tag: None });
        let gap = if w.interval.is_zero() { 0 } else { ch.exponential(nanos(w.interval) as f64) as u64 };
        c.next_send = Some(self.now + gap);
        if large {
            self.marks.insert(Mark::Fragmented);
        }
    }

    /// Hands pending messages to the client's session while it takes them.
    pub(super) fn feed(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let Some(s) = &mut c.session else { return };
        // The application waits for `Connected` (the handshake confirmed),
        // as the adapters do.
        if !s.is_established() || !c.attempt.connected || c.attempt.closing {
            return;
        }
        let Some(sid) = c.attempt.sid else { return };
        while let Some(m) = c.pending.front() {
            let opts = SendOptions {
                priority: priority(m.class),
                request: m.request,
                reliable: m.reliable,
                ..SendOptions::default()
            };
            match s.send(m.message_type, m.body.clone(), opts) {
                Ok(id) => {
                    let kind = if m.request { SentKind::Request } else { SentKind::Message };
                    self.checker.sent(Side::Client, sid, id.0, &m.body, m.class, m.reliable, kind);
                    self.checker.totals.first_sent_at.get_or_insert(self.now);
                    if let Some(m) = c.pending.pop_front() {
                        if let Some(tag) = m.tag {
                            c.app_tags.insert(id.0, tag);
                        }
                        c.in_flight.insert(id.0, m);
                    }
                }
                Err(xtmp_core::session::SendError::WouldBlock) => return,
                Err(e) => {
                    self.checker
                        .violations
                        .push(crate::check::Violation { at: self.now, what: format!("client{i}: send refused: {e}") });
                    return;
                }
            }
        }
    }

    pub(super) fn client_events(&mut self, i: usize) {
        let now = self.now;
        loop {
            let c = &mut self.clients[i];
            let Some(s) = &mut c.session else { return };
            if c.attempt.sid.is_none()
                && let Some(sid) = s.peer_session_id()
            {
                c.attempt.sid = Some(sid);
                self.checker.bind(sid, i);
            }
            let Some(ev) = s.poll_event() else { return };
            let sid = c.attempt.sid.unwrap_or(0);
            let local = c.clock.local_ns(now);
            let name = c.name();
            self.note(&[8, i as u64, event_code(&ev)], || name, "event", || describe(&ev));
            match ev {
                Event::Connected { .. } => {
                    let c = &mut self.clients[i];
                    c.attempt.connected = true;
                    c.attempt.established_local = Some(local);
                    c.attempt.established_at = Some(now);
                    c.backoff = 0;
                    self.counters.handshakes += 1;
                    self.check_handshake_time(i, true);
                    if self.scenario.transport == Transport::Hybrid {
                        self.add_datagram_path(i);
                    }
                    self.open_subscriptions(i);
                    self.app_requests(i);
                }
                Event::Message(m) => {
                    self.checker.delivered(now, Side::Client, sid, &m);
                    self.subscription_message(i, &m);
                    self.app_response(i, &m);
                }
                Event::Acked(id) => {
                    self.checker.acked(now, Side::Client, sid, id.0);
                    self.clients[i].in_flight.remove(&id.0);
                }
                Event::Failed(id, why) => {
                    self.checker.failed(now, Side::Client, sid, id.0, why == FailReason::Unsubscribed);
                    self.marks.insert(Mark::MessageFailed);
                    let c = &mut self.clients[i];
                    if let Some(tag) = c.app_tags.remove(&id.0)
                        && let Some(app) = self.app.as_mut()
                    {
                        app.unanswered(i, tag);
                    }
                    if let Some(m) = c.in_flight.remove(&id.0)
                        && why == FailReason::Closed
                        && m.tag.is_none()
                    {
                        // The application tries again on its next session.
                        c.pending.push_back(m);
                    }
                }
                Event::KeyUpdated { sending: false, .. } => self.clients[i].attempt.recv_key_changed = Some(local),
                Event::PathFailed { path, .. } => self.path_failed(i, path),
                Event::Closed(reason) => {
                    self.client_closed(i, sid, reason);
                    return;
                }
                other => self.checker.event(now, Side::Client, sid, brief(&other)),
            }
        }
    }

    /// The client application subscribes, on each new session.
    pub(super) fn open_subscriptions(&mut self, i: usize) {
        let w = &self.scenario.workload;
        let (n, items, reliable) = (w.subscriptions, w.items, w.reliable_items);
        const TYPES: [MessageType; 3] =
            [MessageType::LIVE_UPDATES, MessageType::EVENT_STREAM, MessageType::METRICS_STREAM];
        for k in 0..n {
            let filter =
                Filter { reliable: self.choices.chance(reliable), items, server_ends: self.choices.chance(0.5) };
            let c = &mut self.clients[i];
            let (Some(s), Some(sid)) = (&mut c.session, c.attempt.sid) else { return };
            let f = filter.encode();
            match s.subscribe(TYPES[k % 3], f.clone(), SendOptions::default()) {
                Ok(id) => {
                    c.attempt.subs.insert(id.0, ClientSub { filter, done: false });
                    self.checker.sent(Side::Client, sid, id.0, &f, 0, true, SentKind::Subscribe);
                }
                Err(e) => return self.violation(format!("client{i}: subscribe refused: {e}")),
            }
        }
    }

    /// The client application reads its subscriptions: it leaves one the
    /// server does not end once an item from its second half arrives.
    pub(super) fn subscription_message(&mut self, i: usize, m: &xtmp_core::session::Message) {
        if let MessageKind::End(sub) = m.kind
            && m.end_reason() != Some((ErrorCode(0x100), "done".into()))
        {
            self.violation(format!("client{i}: subscription {} ended with {:?}", sub.0, m.end_reason()));
        }
        let c = &mut self.clients[i];
        let (Some(s), Some(sid)) = (&mut c.session, c.attempt.sid) else { return };
        match m.kind {
            MessageKind::Item(sub) => {
                let Some(cs) = c.attempt.subs.get_mut(&sub.0) else { return };
                let seq = m.body.get(8..16).map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
                if cs.filter.server_ends || cs.done || 2 * seq < cs.filter.items {
                    return;
                }
                match s.unsubscribe(sub) {
                    Ok(id) => {
                        cs.done = true;
                        self.checker.sent(Side::Client, sid, id.0, b"", 0, true, SentKind::Unsubscribe(sub.0));
                    }
                    Err(SendError::WouldBlock) => {}
                    Err(e) => self.violation(format!("client{i}: unsubscribe refused: {e}")),
                }
            }
            MessageKind::End(sub) => {
                if let Some(cs) = c.attempt.subs.get_mut(&sub.0) {
                    cs.done = true;
                }
            }
            _ => {}
        }
    }

    pub(super) fn check_handshake_time(&mut self, i: usize, connected: bool) {
        let c = &self.clients[i];
        let took = self.now - c.attempt.started;
        let timeout = match self.scenario.max_handshake {
            Some(bound) => bound.min(self.scenario.session.handshake_timeout),
            None => self.scenario.session.handshake_timeout,
        };
        let limit = nanos(timeout) as f64 * (1.0 + self.max_drift) + 1e6;
        if took as f64 > limit {
            let what = if connected { "completed" } else { "failed" };
            self.violation(format!(
                "client{i}: handshake {what} after {} (bound {})",
                fmt_dur(Duration::from_nanos(took)),
                fmt_dur(timeout)
            ));
        }
    }

    pub(super) fn client_closed(&mut self, i: usize, sid: u64, reason: CloseReason) {
        let now = self.now;
        let c = &mut self.clients[i];
        let closing = c.attempt.closing;
        let connected = c.attempt.connected;
        if let Some(s) = c.session.take() {
            c.past_stats.push(s.stats());
        }
        // The client's sockets close with the session.
        let conns: Vec<u64> = c.paths.iter().filter(|p| p.alive).filter_map(|p| p.conn).collect();
        c.paths.clear();
        c.redial_at = None;
        if c.attempt.sid.is_some() {
            self.checker.closed(now, Side::Client, sid);
        }
        // The application's requests of this session get no answer.
        self.app_session_lost(i);
        for id in conns {
            self.sever_conn(id, true);
        }
        if !connected {
            match reason {
                CloseReason::HandshakeTimeout
                | CloseReason::HandshakeFailed(_)
                | CloseReason::Busy { .. }
                | CloseReason::Peer { .. }
                | CloseReason::PathsLost => {}
                // The server crashed after its ServerHello and restarted:
                // the client's next handshake frame meets a server that
                // does not know the session.
                CloseReason::StatelessReset if self.server.incarnation >= 2 => {}
                ref other => self.violation(format!("client{i}: handshake ended with an unexpected reason: {other}")),
            }
            if self.scenario.max_handshake.is_some() && !matches!(reason, CloseReason::Busy { .. }) && !closing {
                // Under attack, an honest client still gets in: only a
                // Busy (it comes back) may end its attempt.
                self.violation(format!("client{i}: handshake failed under a bound on handshakes: {reason}"));
            }
            self.check_handshake_time(i, false);
        }
        if reason == CloseReason::IdleTimeout {
            self.marks.insert(Mark::IdleTimeout);
        }
        if reason == CloseReason::StatelessReset {
            self.marks.insert(Mark::StatelessReset);
            // Issue 42's bound: back within 2 s of the new server listening.
            let since = now.saturating_sub(self.server.started_at);
            if self.server.incarnation < 2 || since > 2 * SECOND {
                self.violation(format!("client{i}: reset {} ms after the server (re)started", since / 1_000_000));
            }
        }
        if !closing {
            // A handshake that fails loses nothing (the application has
            // not handed the session a message yet) and is retried.
            if self.scenario.lossless && connected {
                self.violation(format!("client{i}: session ended in a lossless scenario: {reason}"));
            }
            let c = &mut self.clients[i];
            let pending: Vec<AppMsg> = core::mem::take(&mut c.in_flight).into_values().collect();
            for m in pending.into_iter().rev() {
                c.pending.push_front(m);
            }
            let wait = match reason {
                // As the adapter does (SPEC.md 3.2, "Busy"): the server's
                // delay, doubled for each Busy in a row, with jitter.
                CloseReason::Busy { retry_after } => {
                    let d = nanos(retry_after).max(1_000_000) << c.backoff.min(4);
                    d + self.choices.below(d)
                }
                _ => backoff(c.backoff) + self.choices.below(SECOND / 10),
            };
            let c = &mut self.clients[i];
            c.backoff += 1;
            c.reconnect_at = Some(now + wait);
        }
    }

    /// The client's session gave up on a path: the application closes its
    /// socket and opens a new one of the same kind a little later.
    pub(super) fn path_failed(&mut self, i: usize, path: PathId) {
        let Some(p) = self.clients[i].paths.get(path.0 as usize).copied() else { return };
        if p.kind == PathKind::Datagram {
            self.marks.insert(Mark::DatagramPathFailed);
        }
        if let Some(id) = p.conn {
            self.sever_conn(id, true);
        }
        let c = &mut self.clients[i];
        c.paths[path.0 as usize].alive = false;
        let wait = self.choices.between(SECOND / 100, SECOND / 2);
        let c = &mut self.clients[i];
        c.redial_at = Some(self.now + wait);
        c.redial_kind = p.kind;
    }

    pub(super) fn add_datagram_path(&mut self, i: usize) {
        let Some(path) = self.open_path(i, PathKind::Datagram) else { return };
        let c = &mut self.clients[i];
        let Some(s) = &mut c.session else { return };
        if let Some(id) = s.add_path(PathKind::Datagram, false) {
            let idx = id.0 as usize;
            if c.paths.len() <= idx {
                c.paths.resize(idx + 1, ClientPath { alive: false, ..path });
            }
            c.paths[idx] = path;
        }
    }
}
