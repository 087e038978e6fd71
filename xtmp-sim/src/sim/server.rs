//! The simulated server: its endpoint started and crashed, its
//! application answering requests and publishing subscriptions.

use super::*;

impl World {
    pub(super) fn start_server(&mut self) {
        let inc = self.server.incarnation;
        self.server.incarnation += 1;
        self.server.started_at = self.now;
        let mut rng = ChaCha20Rng::from_seed(protocol_seed(self.seed, 1_000_000 + inc));
        let local = self.server.clock.local(self.now);
        match Endpoint::new(local, self.endpoint_config.clone(), &mut rng) {
            Ok(e) => self.server.endpoint = Some(e),
            Err(e) => self.violation(format!("server configuration refused: {e}")),
        }
        self.server.sessions.clear();
        if let Some(p) = self.scenario.workload.push_interval
            && self.phase < Phase::Closing
        {
            self.server.next_push = Some(self.now + nanos(p));
        }
        self.note(&[3, inc], || "server".into(), "start", || format!("incarnation {inc}"));
    }

    pub(super) fn crash_server(&mut self) {
        let Some(e) = self.server.endpoint.take() else { return };
        self.server.past_endpoints.push(e.stats());
        let stats: Vec<_> = self.server.sessions.values().map(|s| s.last_stats).collect();
        self.server.past_stats.extend(stats);
        self.server.sessions.clear();
        self.server.next_push = None;
        self.checker.server_lost();
        if let Some(app) = self.app.as_mut() {
            app.server_crashed();
        }
        // The server's connections are reset.
        let conns: Vec<u64> = self.conns.iter().filter(|(_, c)| c.alive).map(|(k, _)| *k).collect();
        for id in conns {
            self.sever_conn(id, false);
        }
        self.note(&[4], || "server".into(), "crash", String::new);
    }

    pub(super) fn server_events(&mut self) {
        let now = self.now;
        if !self.server.reading {
            return;
        }
        loop {
            let Some(e) = self.server.endpoint.as_mut() else { return };
            let Some(ev) = e.poll_event() else { return };
            match ev {
                EndpointEvent::NewSession(h, remote) => {
                    self.server.sessions.insert(h.0, ServerSession::default());
                    self.note(&[5, h.0], || "server".into(), "accept", || format!("{:016x} from {}", h.0, remote.addr));
                }
                EndpointEvent::Session(h, ev) => self.server_event(h, ev, now),
                EndpointEvent::CloseRemote(remote, _) => {
                    // The server resets a connection whose stream broke.
                    if let Some(&id) = self.conn_by_addr.get(&remote.addr) {
                        self.sever_conn(id, false);
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn server_event(&mut self, h: SessionHandle, ev: Event, now: u64) {
        let sid = h.0;
        let local = self.server.clock.local_ns(now);
        self.note(&[6, sid, event_code(&ev)], || "server".into(), "event", || format!("{sid:016x} {}", describe(&ev)));
        match ev {
            Event::Message(m) => {
                self.checker.delivered(now, Side::Server, sid, &m);
                match m.kind {
                    MessageKind::Request if self.app.is_some() => self.app_serve(sid, &m),
                    MessageKind::Request => self.answer(sid, &m),
                    MessageKind::Subscribe => self.accept_subscription(sid, &m),
                    MessageKind::Unsubscribe(sub) => {
                        if let Some(s) = self.server.sessions.get_mut(&sid) {
                            s.subs.remove(&sub.0);
                        }
                    }
                    _ => {}
                }
            }
            Event::Acked(id) => self.checker.acked(now, Side::Server, sid, id.0),
            Event::Failed(id, why) => {
                if why == FailReason::Unsubscribed {
                    self.marks.insert(Mark::ItemWithdrawn);
                }
                self.checker.failed(now, Side::Server, sid, id.0, why == FailReason::Unsubscribed);
            }
            Event::Closed(_) => {
                self.checker.closed(now, Side::Server, sid);
                if self.checker.was_client_lost(sid) {
                    self.marks.insert(Mark::OrphanClosed);
                }
                if let Some(s) = self.server.sessions.remove(&sid) {
                    self.server.past_stats.push(s.last_stats);
                }
            }
            Event::Connected { .. } => {
                self.checker.event(now, Side::Server, sid, "Connected");
                if let Some(s) = self.server.sessions.get_mut(&sid) {
                    s.established = true;
                }
            }
            Event::KeyUpdated { sending: false, .. } => {
                if let Some(s) = self.server.sessions.get_mut(&sid) {
                    s.recv_key_changed = Some(local);
                }
            }
            other => self.checker.event(now, Side::Server, sid, brief(&other)),
        }
    }

    /// The server application answers a request: the response body is the
    /// request's digest and length, so the checker can tie them.
    pub(super) fn answer(&mut self, sid: u64, m: &xtmp_core::session::Message) {
        let Some(e) = self.server.endpoint.as_mut() else { return };
        let Some(s) = e.session_mut(SessionHandle(sid)) else { return };
        let mut b = digest(&m.body).to_be_bytes().to_vec();
        b.extend_from_slice(&(m.body.len() as u64).to_be_bytes());
        let class = class_of(m.priority);
        let opts = SendOptions { priority: priority(class), ..SendOptions::default() };
        match s.respond(m.id, m.message_type, b.clone().into(), opts) {
            Ok(id) => {
                self.checker.sent(Side::Server, sid, id.0, &b, class, true, SentKind::Response(m.id.0));
                let req = m.id.0;
                self.note(&[16, id.0], || "server".into(), "respond", || format!("{} to request {req}", id.0));
            }
            Err(e) => self.violation(format!("server could not answer request {}: {e}", m.id.0)),
        }
    }

    pub(super) fn push(&mut self) {
        let Some(interval) = self.scenario.workload.push_interval else { return };
        self.server.next_push = Some(self.now + nanos(interval));
        let Some(e) = self.server.endpoint.as_mut() else { return };
        let sids: Vec<u64> = self.server.sessions.iter().filter(|(_, s)| s.established).map(|(k, _)| *k).collect();
        for &sid in &sids {
            let Some(s) = e.session_mut(SessionHandle(sid)) else { continue };
            self.server.pushes += 1;
            let b = body(u32::MAX, (sid >> 32) as u32, self.server.pushes, 48);
            let opts = SendOptions { stream_data: true, ..SendOptions::unreliable() };
            if let Ok(id) = s.send(MessageType::LIVE_UPDATES, b.clone(), opts) {
                self.checker.sent(Side::Server, sid, id.0, &b, 0, false, SentKind::Message);
            }
        }
        for sid in sids {
            self.push_items(sid);
        }
    }

    /// The server accepts a subscription and publishes to it from the next
    /// push on.
    pub(super) fn accept_subscription(&mut self, sid: u64, m: &xtmp_core::session::Message) {
        let Some(e) = self.server.endpoint.as_mut() else { return };
        let Some(s) = e.session_mut(SessionHandle(sid)) else { return };
        let Some(filter) = Filter::decode(&m.body) else {
            return self.violation(format!("server: subscription {} has a filter it cannot read", m.id.0));
        };
        match s.respond(m.id, m.message_type, bytes::Bytes::new(), SendOptions::default()) {
            Ok(id) => {
                self.checker.sent(Side::Server, sid, id.0, &[], 0, true, SentKind::Response(m.id.0));
                if let Some(ss) = self.server.sessions.get_mut(&sid) {
                    ss.subs.insert(m.id.0, ServerSub { filter, pushed: 0 });
                }
            }
            Err(e) => self.violation(format!("server could not accept subscription {}: {e}", m.id.0)),
        }
    }

    /// One item to each of session `sid`'s subscriptions; the last one's
    /// end, when the server ends it. A subscription its client ends is fed
    /// until the client leaves (best-effort items may all be lost).
    pub(super) fn push_items(&mut self, sid: u64) {
        let Some(e) = self.server.endpoint.as_mut() else { return };
        let Some(ss) = self.server.sessions.get_mut(&sid) else { return };
        let Some(s) = e.session_mut(SessionHandle(sid)) else { return };
        let mut gone = Vec::new();
        for (&sub, state) in ss.subs.iter_mut() {
            let f = state.filter;
            let id = SubscriptionId(sub);
            if state.pushed < f.items || !f.server_ends {
                let b = body(u32::MAX - 1, sub as u32, state.pushed, 40);
                let opts = if f.reliable { SendOptions::default() } else { SendOptions::unreliable() };
                match s.push(id, b.clone(), opts) {
                    Ok(m) => {
                        state.pushed += 1;
                        self.checker.sent(Side::Server, sid, m.0, &b, 0, f.reliable, SentKind::Item(sub));
                    }
                    Err(SendError::WouldBlock | SendError::SubscriptionFull(_)) => {}
                    Err(_) => gone.push(sub),
                }
            } else {
                match s.end_subscription(id, ErrorCode(0x100), "done") {
                    Ok(m) => self.checker.sent(Side::Server, sid, m.0, b"", 0, true, SentKind::End(sub)),
                    Err(SendError::WouldBlock) => continue,
                    Err(_) => {}
                }
                gone.push(sub);
            }
        }
        for sub in gone {
            ss.subs.remove(&sub);
        }
    }
}
