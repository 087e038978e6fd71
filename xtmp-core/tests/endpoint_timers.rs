//! The endpoint files each session's deadline and asks only the sessions
//! that ran (took input, a timeout, the application's call) for theirs and
//! for transmits. These tests run many sessions on one endpoint, driven
//! only by `Endpoint::poll_timeout` (no other clock for the server), and
//! check that the timers of sessions that do *not* run still fire on time
//! while the others keep it busy, and that no session's output is left
//! behind.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::endpoint::{Endpoint, EndpointEvent, Remote, RemoteKind, SessionHandle};
use xtmp_core::session::{CloseReason, Event, PathId, PathKind, SendOptions, Session};
use xtmp_core::time::Instant;
use xtmp_core::wire::MessageType;

const CLIENTS: usize = 24;

struct Net {
    now: Instant,
    server: Endpoint,
    clients: Vec<Client>,
    buf: Vec<u8>,
    /// Server events: closes by session, and messages answered.
    closed: Vec<(SessionHandle, CloseReason, Instant)>,
    answered: usize,
}

struct Client {
    session: Session,
    remote: Remote,
    /// Gone silent: it neither sends nor receives nor runs its timers.
    vanished: bool,
    answers: usize,
}

impl Net {
    fn new(kind: PathKind, idle: Duration) -> Net {
        let mut setup = Setup::new(kind);
        let ms = idle.as_millis() as u32;
        setup.client.params.idle_timeout_ms = ms;
        setup.server().params.idle_timeout_ms = ms;
        let session = Arc::new(setup.session.clone());
        let client_config = Arc::new(setup.client.clone());
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let now = Instant::from_nanos(1_000_000_000);
        let server = Endpoint::new(now, Arc::new(setup.endpoint), &mut rng).unwrap();
        let remote_kind = if kind == PathKind::Stream { RemoteKind::Stream } else { RemoteKind::Datagram };
        let clients = (0..CLIENTS)
            .map(|i| {
                let addr: SocketAddr = format!("192.0.2.{}:40000", i + 1).parse().unwrap();
                let session = Session::connect(now, session.clone(), client_config.clone(), kind, &mut rng).unwrap();
                Client { session, remote: Remote { addr, kind: remote_kind }, vanished: false, answers: 0 }
            })
            .collect();
        let mut net = Net { now, server, clients, buf: vec![0u8; 70_000], closed: Vec::new(), answered: 0 };
        net.settle();
        assert!(net.clients.iter().all(|c| c.session.is_established()), "every client connected");
        net
    }

    /// Moves traffic until none is left; the server answers every request.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for c in self.clients.iter_mut().filter(|c| !c.vanished) {
                while let Some(t) = c.session.poll_transmit(self.now, &mut self.buf).unwrap() {
                    self.server.handle_input(self.now, c.remote, &self.buf[..t.len]);
                    moved = true;
                }
                while let Some(e) = c.session.poll_event() {
                    if let Event::Message(_) = e {
                        c.answers += 1;
                    }
                }
            }
            while let Some((remote, len)) = self.server.poll_transmit(self.now, &mut self.buf).unwrap() {
                let c = self.clients.iter_mut().find(|c| c.remote == remote).unwrap();
                if !c.vanished {
                    c.session.handle_input(self.now, PathId(0), &self.buf[..len]);
                }
                moved = true;
            }
            while let Some(e) = self.server.poll_event() {
                match e {
                    EndpointEvent::Session(h, Event::Message(m)) => {
                        let s = self.server.session_mut(h).unwrap();
                        s.respond(m.id, MessageType::REGISTRY_QUERY, Bytes::from_static(b"ok"), SendOptions::default())
                            .unwrap();
                        self.answered += 1;
                        moved = true;
                    }
                    EndpointEvent::Session(h, Event::Closed(reason)) => self.closed.push((h, reason, self.now)),
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
        panic!("traffic never settled");
    }

    /// Advances to `until`, running every due timer; the server's only
    /// clock is its own `poll_timeout`.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.settle();
            let clients = self.clients.iter().filter(|c| !c.vanished).filter_map(|c| c.session.poll_timeout());
            let Some(t) = clients.chain(self.server.poll_timeout()).min().filter(|t| *t <= until) else { break };
            self.now = self.now.max(t);
            for c in self.clients.iter_mut().filter(|c| !c.vanished) {
                c.session.handle_timeout(self.now);
            }
            self.server.handle_timeout(self.now);
        }
        self.now = until;
        self.settle();
    }

    /// Every live client sends a request, and the traffic settles.
    fn talk(&mut self) {
        for c in self.clients.iter_mut().filter(|c| !c.vanished) {
            c.session.send(MessageType::REGISTRY_QUERY, Bytes::from_static(b"q"), SendOptions::request()).unwrap();
        }
        self.settle();
    }
}

/// A client that vanishes is closed by the server at its idle timeout,
/// while every other session keeps the endpoint busy (and its own idle
/// timer moving) all along.
#[test]
fn a_silent_session_times_out_on_time_among_busy_ones() {
    for kind in [PathKind::Datagram, PathKind::Stream] {
        let idle = Duration::from_secs(4);
        let mut net = Net::new(kind, idle);
        let silent = 5;
        net.clients[silent].vanished = true;
        let vanished_at = net.now;
        // The others talk every 100 ms for twice the idle timeout.
        for _ in 0..80 {
            let next = net.now + Duration::from_millis(100);
            net.run_until(next);
            net.talk();
        }
        let live = CLIENTS - 1;
        assert!(
            net.clients.iter().filter(|c| !c.vanished).all(|c| c.answers >= 80),
            "{kind:?}: every request answered"
        );
        assert_eq!(net.answered, 80 * live, "{kind:?}: the server answered every request once");
        assert_eq!(net.closed.len(), 1, "{kind:?}: only the silent session closed: {:?}", net.closed);
        let (_, reason, at) = &net.closed[0];
        assert_eq!(*reason, CloseReason::IdleTimeout, "{kind:?}");
        let after = *at - vanished_at;
        assert!(
            after >= idle && after <= idle + Duration::from_millis(200),
            "{kind:?}: closed {after:?} after it went silent"
        );
        assert_eq!(net.server.session_count(), live, "{kind:?}");
    }
}

/// Sessions that stop running keep their (idle) deadlines: with every client
/// silent at once, the server closes each of them at its idle timeout, and
/// its `poll_timeout` then has nothing left.
#[test]
fn every_session_times_out_when_all_go_silent() {
    let idle = Duration::from_secs(3);
    let mut net = Net::new(PathKind::Datagram, idle);
    net.talk();
    let silent_at = net.now;
    for c in &mut net.clients {
        c.vanished = true;
    }
    net.run_until(silent_at + idle * 3);
    assert_eq!(net.closed.len(), CLIENTS, "every session closed: {}", net.closed.len());
    for (h, reason, at) in &net.closed {
        assert_eq!(*reason, CloseReason::IdleTimeout, "{h:?}");
        let after = *at - silent_at;
        assert!(
            after >= idle && after <= idle + Duration::from_millis(200),
            "{h:?} closed {after:?} after the silence"
        );
    }
    assert_eq!(net.server.session_count(), 0);
    assert_eq!(net.server.poll_timeout(), None, "no session left, no deadline");
}
