//! The hosted application (`crate::app`): its server answering requests,
//! its clients making them, and both told of crashes and lost sessions.

use super::*;

impl World {
    fn now_ms(&self) -> u64 {
        self.now / 1_000_000
    }

    /// The application's tick: the server's background work, then every
    /// client's new requests.
    pub(super) fn app_tick(&mut self) {
        let now = self.now_ms();
        let Some(app) = self.app.as_mut() else { return };
        self.next_app_tick = Some(self.now + app.tick_ms().max(1) * 1_000_000);
        if self.server.endpoint.is_some() {
            app.server_tick(now);
        }
        for i in 0..self.clients.len() {
            self.app_requests(i);
        }
    }

    /// Client `i`'s application makes its requests, once its session is
    /// connected (while faults run and while the run settles).
    pub(super) fn app_requests(&mut self, i: usize) {
        if self.phase >= Phase::Closing {
            return;
        }
        let now = self.now_ms();
        let c = &mut self.clients[i];
        let Some(app) = self.app.as_mut() else { return };
        let Some(s) = &c.session else { return };
        if c.crashed || !c.attempt.connected || c.attempt.closing || !s.is_established() {
            return;
        }
        let Ok(binding) = s.channel_binding() else { return };
        while let Some(r) = app.next_request(i, now, c.sessions_started, &binding) {
            c.pending.push_back(AppMsg {
                message_type: r.message_type,
                body: r.body.into(),
                class: 0,
                reliable: true,
                request: true,
                tag: Some(r.tag),
            });
        }
        self.feed(i);
    }

    /// The server's application answers a request.
    pub(super) fn app_serve(&mut self, sid: u64, m: &xtmp_core::session::Message) {
        let now = self.now_ms();
        let Some(e) = self.server.endpoint.as_mut() else { return };
        let Some(s) = e.session_mut(SessionHandle(sid)) else { return };
        let Some(app) = self.app.as_mut() else { return };
        let Ok(binding) = s.channel_binding() else {
            return self.violation(format!("server: session {sid:016x} has no channel binding"));
        };
        let (message_type, body) = match app.serve(now, sid, &binding, m.message_type, &m.body) {
            Ok(b) => (m.message_type, b),
            Err((code, reason)) => (MessageType::ERROR, crate::app::error_body(code, &reason)),
        };
        match s.respond(m.id, message_type, body.clone().into(), SendOptions::default()) {
            Ok(id) => {
                self.checker.sent(Side::Server, sid, id.0, &body, 0, true, SentKind::Response(m.id.0));
            }
            Err(e) => self.violation(format!("server could not answer request {}: {e}", m.id.0)),
        }
    }

    /// A response reached client `i`: its application gets the answer.
    pub(super) fn app_response(&mut self, i: usize, m: &xtmp_core::session::Message) {
        let MessageKind::Response(to) = m.kind else { return };
        let now = self.now_ms();
        let Some(tag) = self.clients[i].app_tags.remove(&to.0) else { return };
        let Some(app) = self.app.as_mut() else { return };
        match m.error() {
            Some(e) => app.answered(i, now, tag, Err(e)),
            None => app.answered(i, now, tag, Ok(&m.body)),
        }
    }

    /// Client `i`'s requests that will get no answer: those its session
    /// held and those not yet handed to one.
    pub(super) fn app_session_lost(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let Some(app) = self.app.as_mut() else { return };
        for (_, tag) in std::mem::take(&mut c.app_tags) {
            app.unanswered(i, tag);
        }
        c.pending.retain(|m| match m.tag {
            Some(tag) => {
                app.unanswered(i, tag);
                false
            }
            None => true,
        });
        c.in_flight.retain(|_, m| m.tag.is_none());
    }
}
