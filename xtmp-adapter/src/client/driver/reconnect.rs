//! The driver's connections: a broken link, redialing a live session
//! after the reconnection backoff, a hybrid client's datagram path, and a
//! new session when the old one ended.

use super::*;

impl Driver {
    /// The link of `path` broke: the session loses the path, and the
    /// driver dials a new one if none is left.
    pub(super) fn link_lost(&mut self, path: PathId) {
        self.drop_link(path);
        if self.dead {
            return;
        }
        self.session.path_closed(path);
        if !self.connected {
            // A handshake's only path: this attempt failed.
            self.session.abort(self.now(), CloseCode::NO_ERROR, "connection lost during the handshake");
            return;
        }
        self.after_link_gone();
    }

    /// Forgets `path`'s link, and the rest of a transmit it was writing:
    /// the session may give the id to the next path, which must not get
    /// half a frame.
    pub(super) fn drop_link(&mut self, path: PathId) {
        self.links.retain(|(p, _)| *p != path);
        if self.unsent.is_some_and(|(p, _, _)| p == path) {
            self.unsent = None;
        }
    }

    /// A link went. With none left the client is reconnecting; a hybrid
    /// client whose datagram path still works dials a new stream in the
    /// background (its traffic goes on the datagram path meanwhile).
    pub(super) fn after_link_gone(&mut self) {
        self.count_paths();
        if !self.connected || self.closing {
            return;
        }
        if self.links.is_empty() {
            tracing::info!("connection lost: reconnecting");
            self.shared.set_state(ConnectionState::Reconnecting { attempt: self.attempt });
            self.schedule_retry();
        } else if !self.links.iter().any(|(_, l)| l.kind() == self.dial.kind) {
            self.schedule_retry();
        } else {
            self.schedule_datagram_retry();
        }
    }

    /// A hybrid client that lost its datagram path (it stopped delivering,
    /// its validation failed, or its socket could not be opened) while the
    /// stream works opens another after the reconnection policy's backoff.
    pub(super) fn schedule_datagram_retry(&mut self) {
        let has = self.links.iter().any(|(_, l)| l.kind() == PathKind::Datagram);
        if !self.dial.hybrid || has || self.dialing_datagram.is_some() || self.datagram_retry_at.is_some() {
            return;
        }
        if let Some(d) = self.backoff.as_ref().and_then(|b| b.delay(self.datagram_attempt, self.rng.next_u32())) {
            self.datagram_attempt += 1;
            self.datagram_retry_at = Some(self.tick + d);
        }
    }

    /// A hybrid client opens its datagram path once connected, unless it
    /// has one.
    pub(super) fn ensure_datagram(&mut self) {
        let has = self.links.iter().any(|(_, l)| l.kind() == PathKind::Datagram);
        if self.dial.hybrid && !has && self.dialing_datagram.is_none() && !self.closing {
            self.dialing_datagram = Some(self.rt.dial(self.dial.addr, PathKind::Datagram));
        }
    }

    pub(super) fn schedule_retry(&mut self) {
        if self.retry_at.is_some() || self.dialing.is_some() {
            return;
        }
        let Some(backoff) = &self.backoff else {
            if self.dead {
                self.finish(CloseReason::PathsLost);
            }
            return;
        };
        match backoff.delay(self.attempt, self.rng.next_u32()) {
            Some(d) => self.retry_at = Some(self.tick + d),
            None => {
                // Out of attempts.
                if !self.dead {
                    self.session.abort(self.now(), CloseCode::NO_ERROR, "reconnection attempts exhausted");
                }
                self.backoff = None;
                self.finish(CloseReason::PathsLost);
            }
        }
    }

    pub(super) fn poll_dial(&mut self, cx: &mut Context<'_>) -> bool {
        let datagram = self.poll_dial_datagram(cx);
        let Some(fut) = &mut self.dialing else { return datagram };
        let Poll::Ready(r) = fut.as_mut().poll(cx) else { return false };
        self.dialing = None;
        match r {
            Ok(link) if self.dead => self.new_session(link),
            Ok(link) => match self.session.add_path(self.dial.kind, false) {
                Some(id) => {
                    tracing::info!(path = id.0, "redialed: a new connection for the live session");
                    telemetry::count("xtmp_client_reconnections_total", &[("how", "path")], 1);
                    self.links.push((id, link));
                    self.shared.update_stats(|s| s.paths_redialed += 1);
                    self.ensure_datagram();
                }
                None => {
                    // The session takes no more paths: start over.
                    self.session.abort(self.now(), CloseCode::NO_ERROR, "no room for a new path");
                }
            },
            Err(e) if self.ready.is_some() => {
                // The first connection, dialed again after a Busy: it
                // fails as a first dial does.
                tracing::info!(error = %e, "dial failed");
                self.finish(CloseReason::PathsLost);
            }
            Err(e) => {
                self.attempt += 1;
                tracing::info!(attempt = self.attempt, error = %e, "reconnection attempt failed");
                self.shared.set_state(ConnectionState::Reconnecting { attempt: self.attempt });
                self.schedule_retry();
            }
        }
        true
    }

    /// A hybrid client's datagram socket opened: it joins the session as
    /// a path (validated by the session before it carries data). One that
    /// cannot be opened leaves the session on its stream.
    pub(super) fn poll_dial_datagram(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(fut) = &mut self.dialing_datagram else { return false };
        let Poll::Ready(r) = fut.as_mut().poll(cx) else { return false };
        self.dialing_datagram = None;
        if !self.connected || self.dead || self.closing {
            return true;
        }
        match r.ok().map(|link| (self.session.add_path(PathKind::Datagram, false), link)) {
            Some((Some(id), link)) => self.links.push((id, link)),
            // The session takes no more paths: it keeps its stream.
            Some((None, _)) => {}
            None => self.schedule_datagram_retry(),
        }
        true
    }

    pub(super) fn new_session(&mut self, link: Box<dyn Link>) {
        let now = self.now();
        match Session::connect(now, self.config.clone(), self.client.clone(), self.dial.kind, &mut self.rng) {
            Ok(s) => {
                self.session = s;
                self.dead = false;
                self.connected = false;
                self.blocked = false;
                self.links = vec![(PathId(0), link)];
                self.unsent = None;
                self.dialing_datagram = None;
                self.datagram_retry_at = None;
                self.datagram_attempt = 0;
            }
            // The same configuration made the first session: only the
            // provider can fail here.
            Err(_) => self.finish(CloseReason::Internal("a new session could not start")),
        }
    }
}
