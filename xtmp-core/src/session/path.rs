//! Paths (SPEC.md section 3.7): the transports a session runs over, their
//! validation by challenge and response, and which one is primary.

use alloc::collections::VecDeque;
use core::time::Duration;

use bytes::Bytes;
use rand_core::Rng as _;

use super::*;
use crate::reliability::mtu::PathMtu;

/// Challenges sent on a path before it is given up.
const MAX_CHALLENGES: u8 = 3;

pub(super) struct Path {
    pub(super) kind: PathKind,
    pub(super) deframer: Option<Deframer>,
    pub(super) alive: bool,
    /// Whether the peer has proven it receives on this path: by the
    /// handshake (the first path), by a token, or by answering a challenge.
    pub(super) validated: bool,
    pub(super) received: u64,
    pub(super) sent: u64,
    /// Stream paths: the highest sequence number accepted on this path.
    pub(super) highest: Option<u64>,
    /// Frames that authenticated on this path.
    pub(super) authenticated: u64,
    pub(super) challenge: Option<Challenge>,
    /// Datagram paths: the datagram size in use and its discovery.
    pub(super) mtu: PathMtu,
}

pub(super) struct Challenge {
    data: [u8; codec::PATH_DATA_LEN],
    sent_at: Instant,
    rto: Duration,
    tries: u8,
}

/// Frames that must go on one particular path (challenges and responses).
pub(super) type PathQueue = VecDeque<(PathId, Outgoing)>;

impl Session {
    /// Adds a path (the datagram half of a hybrid session, or a
    /// reconnection) and returns its id. Once the session is established
    /// (or while it closes gracefully), a
    /// path added with `validated == false` is challenged at once and
    /// carries application data only after the peer answers
    /// ([`Event::PathValidated`]); `validated == true` asserts the caller
    /// already knows the peer is there. Returns `None` at the configured
    /// `max_paths` live paths.
    pub fn add_path(&mut self, kind: PathKind, validated: bool) -> Option<PathId> {
        if self.paths.iter().filter(|p| p.alive).count() >= self.config.max_paths {
            return None;
        }
        let id = self.push_path(kind, validated);
        if self.role == Role::Client && !self.confirmed && !self.paths[self.primary.0 as usize].alive {
            self.resend_flight_on(id);
        }
        if !validated && self.is_open() {
            self.start_challenge(id);
        }
        Some(id)
    }

    /// Client: the path that carried our final flight died before the
    /// server confirmed it, so the flight goes again, first, on the new
    /// path, followed by a sealed Heartbeat that opens the path at a
    /// server that completes its handshake with it (SPEC.md 3.2).
    fn resend_flight_on(&mut self, path: PathId) {
        let Some(s) = self.hs_send.as_mut().filter(|s| s.stage == codec::STAGE_CLIENT_FLIGHT) else { return };
        s.next = s.acked;
        s.done = false;
        s.sent_at = None;
        self.hs_probe = self.send_keys.is_some();
        self.primary = path;
    }

    /// A new path in a retired slot if there is one (see
    /// [`Session::retired_slot`]), otherwise at the end of the table.
    pub(super) fn push_path(&mut self, kind: PathKind, validated: bool) -> PathId {
        let deframer = (kind == PathKind::Stream).then(|| Deframer::new(self.local_max_frame));
        let path = Path {
            kind,
            deframer,
            alive: true,
            validated,
            received: 0,
            sent: 0,
            highest: None,
            authenticated: 0,
            challenge: None,
            mtu: PathMtu::new(
                self.config.max_datagram,
                self.config.mtu_discovery.filter(|_| kind == PathKind::Datagram),
            ),
        };
        if let Some(id) = self.retired_slot() {
            self.paths[id.0 as usize] = path;
            return id;
        }
        let id = PathId(self.paths.len() as u32);
        // Most sessions keep one path: grow one at a time.
        self.paths.reserve_exact(1);
        self.paths.push(path);
        id
    }

    /// A dead path's slot that nothing refers to any more, so its id can
    /// name a new path without confusing the two: not the primary path nor
    /// the peer's latest, no failure waiting for the endpoint, no event
    /// waiting for the application, no frame queued for it, nothing in
    /// flight on it. Reusing slots keeps the path table (and the session's
    /// memory) within a few entries of `max_paths` however many times a
    /// client reconnects or its address changes.
    fn retired_slot(&self) -> Option<PathId> {
        let named = |id: PathId| {
            id == self.primary
                || id == self.latest_path
                || self.failed_paths.contains(&id)
                || self.path_queue.iter().any(|(p, _)| *p == id)
                || self.recovery.has_frames_on(id.0)
                || self.events.iter().any(|(e, _)| e.as_ref().is_some_and(|e| e.path() == Some(id)))
        };
        (0..self.paths.len()).map(|i| PathId(i as u32)).find(|&id| !self.paths[id.0 as usize].alive && !named(id))
    }

    /// Bytes (whole frames) from a transport the session does not know yet,
    /// such as a known client's new address after a NAT rebinding, or its
    /// new TCP connection after a reconnection. The path is kept, and
    /// challenged, only if a frame on it authenticates as the peer's;
    /// otherwise nothing but the drop counters changes. The endpoint calls
    /// this; a client never needs to.
    pub fn handle_new_path_input(&mut self, now: Instant, kind: PathKind, data: &[u8]) -> Option<PathId> {
        let live = self.paths.iter().filter(|p| p.alive).count();
        if !self.is_open() || live >= self.config.max_paths {
            self.stats.frames_dropped += 1;
            return None;
        }
        let (primary, latest) = (self.primary, self.latest_path);
        let id = self.push_path(kind, false);
        self.handle_input(now, id, data);
        let kept = self.paths.get(id.0 as usize).is_some_and(|p| p.authenticated > 0 && p.alive);
        if !kept {
            // As if it had never been: a retired slot again, or gone.
            if id.0 as usize + 1 == self.paths.len() {
                self.paths.truncate(id.0 as usize);
            } else {
                let p = &mut self.paths[id.0 as usize];
                (p.alive, p.deframer, p.challenge) = (false, None, None);
            }
            self.events.retain(|(e, _)| !matches!(e, Some(Event::PathFailed { path, .. }) if *path == id));
            self.failed_paths.retain(|p| *p != id);
            self.path_queue.retain(|(p, _)| *p != id);
            (self.primary, self.latest_path) = (primary, latest);
            return None;
        }
        self.start_challenge(id);
        Some(id)
    }

    /// Marks `path` as proven (the endpoint validated the address with a
    /// token), lifting the amplification limit.
    pub fn validate_path(&mut self, path: PathId) {
        if let Some(p) = self.paths.get_mut(path.0 as usize) {
            p.validated = true;
        }
    }

    /// Whether `path` exists, is alive and has been validated.
    pub fn is_path_validated(&self, path: PathId) -> bool {
        self.paths.get(path.0 as usize).is_some_and(|p| p.alive && p.validated)
    }

    /// The path application data is sent on.
    pub fn primary_path(&self) -> PathId {
        self.primary
    }

    /// The adapter lost a path (the TCP connection closed, say). The
    /// session carries on over its other paths, or waits for a new one
    /// within the idle timeout.
    pub fn path_closed(&mut self, path: PathId) {
        if let Some(p) = self.paths.get_mut(path.0 as usize) {
            p.alive = false;
            p.challenge = None;
            // A partial frame will never complete.
            p.deframer = None;
        }
        // What it carried and nobody acknowledged goes again elsewhere.
        self.lose_path_frames(path);
        if self.primary == path
            && let Some(next) = self.paths.iter().position(|p| p.alive && p.validated)
        {
            self.primary = PathId(next as u32);
        }
    }

    /// Makes `path` the one application data is sent on, if it is alive
    /// and validated. Returns whether it is now primary.
    pub fn set_primary_path(&mut self, path: PathId) -> bool {
        if self.is_path_validated(path) || (self.paths.len() == 1 && path == PathId(0)) {
            self.switch_primary(path);
        }
        self.primary == path
    }

    pub(super) fn start_challenge(&mut self, path: PathId) {
        let mut data = [0u8; codec::PATH_DATA_LEN];
        self.rng.fill_bytes(&mut data);
        let rto = self.probe_timeout();
        if let Some(p) = self.paths.get_mut(path.0 as usize) {
            p.challenge = Some(Challenge { data, sent_at: self.now, rto, tries: 1 });
            self.queue_on_path(path, PATH_CHALLENGE, Bytes::copy_from_slice(&data));
        }
    }

    pub(super) fn queue_on_path(&mut self, path: PathId, ty: MessageType, body: Bytes) {
        let out = Outgoing::new(ty, Flags::empty(), Head::Raw, body);
        self.path_queue.push_back((path, out));
    }

    /// A PATH_RESPONSE arrived (on any path): it validates the path whose
    /// challenge it echoes.
    pub(super) fn on_path_response(&mut self, data: &[u8]) {
        let found = self
            .paths
            .iter()
            .position(|p| p.alive && p.challenge.as_ref().is_some_and(|c| crate::crypto::ct_eq(&c.data, data)));
        let Some(i) = found else { return };
        let path = PathId(i as u32);
        let p = &mut self.paths[i];
        p.challenge = None;
        p.validated = true;
        // Follow the peer: to this path if its newest frame came here, or
        // if the primary path is gone.
        let old = &self.paths[self.primary.0 as usize];
        let primary = self.latest_path == path || !old.alive || !old.validated;
        if primary {
            self.switch_primary(path);
        } else {
            self.supersede_datagram_paths(path);
        }
        self.push_event(Event::PathValidated { path, primary });
    }

    /// Moves application data to `path`. In a hybrid session the datagram
    /// path stays in use when the stream path becomes primary.
    pub(super) fn switch_primary(&mut self, path: PathId) {
        self.primary = path;
        self.supersede_datagram_paths(path);
    }

    /// `path` is now the datagram path in use (if it is one): every other
    /// live datagram path is retired ([`Event::PathFailed`] without an
    /// error), and what was in flight on it is counted lost and repeated
    /// (the peer drops duplicates). After a rebinding nothing would
    /// acknowledge those frames, and they would hold the congestion window
    /// for ever; the old address would hold a path slot for ever too, and
    /// a few rebindings would reach `max_paths`. (Should the old address
    /// speak again, it is a new path, validated anew.)
    fn supersede_datagram_paths(&mut self, path: PathId) {
        if self.paths[path.0 as usize].kind != PathKind::Datagram {
            return;
        }
        for i in 0..self.paths.len() {
            let p = &self.paths[i];
            if i != path.0 as usize && p.kind == PathKind::Datagram && p.alive {
                self.fail_path(PathId(i as u32), None);
            }
        }
    }

    /// The path that carries data preferring `kind`: the primary path if
    /// it is of that kind, otherwise the newest live validated path of
    /// that kind (a hybrid session's other half).
    pub(super) fn path_for(&self, kind: PathKind) -> Option<PathId> {
        let primary = &self.paths[self.primary.0 as usize];
        if primary.alive && primary.kind == kind {
            return Some(self.primary);
        }
        self.paths.iter().rposition(|p| p.alive && p.validated && p.kind == kind).map(|i| PathId(i as u32))
    }

    /// The paths data goes on: the primary, and in a hybrid session the
    /// live validated path of the other kind. They take turns going first.
    pub(super) fn data_paths(&self) -> [Option<PathId>; 2] {
        let other = match self.paths[self.primary.0 as usize].kind {
            PathKind::Stream => PathKind::Datagram,
            PathKind::Datagram => PathKind::Stream,
        };
        let second = self.path_for(other).filter(|&p| p != self.primary);
        match (second, self.tx_turn) {
            (Some(s), true) => [Some(s), Some(self.primary)],
            _ => [Some(self.primary), second],
        }
    }

    /// Whether an item that prefers `route` may go on `path`: yes, unless
    /// a path of its kind is up and `path` is not it.
    pub(super) fn routes_to(&self, route: Option<PathKind>, path: PathId) -> bool {
        match route.and_then(|kind| self.path_for(kind)) {
            Some(p) => p == path,
            None => true,
        }
    }

    /// The earliest challenge deadline.
    pub(super) fn path_deadline(&self) -> Option<Instant> {
        self.paths.iter().filter_map(|p| p.challenge.as_ref().map(|c| c.sent_at + c.rto)).min()
    }

    /// Repeats challenges that went unanswered; gives up on a path after
    /// [`MAX_CHALLENGES`].
    pub(super) fn on_path_timer(&mut self) {
        let now = self.now;
        for i in 0..self.paths.len() {
            let path = PathId(i as u32);
            let Some(c) = self.paths[i].challenge.as_mut() else { continue };
            if now < c.sent_at + c.rto {
                continue;
            }
            if c.tries >= MAX_CHALLENGES {
                self.paths[i].challenge = None;
                self.fail_path(path, None);
                continue;
            }
            c.tries += 1;
            c.sent_at = now;
            c.rto *= 2;
            let data = Bytes::copy_from_slice(&c.data);
            self.queue_on_path(path, PATH_CHALLENGE, data);
        }
    }
}
