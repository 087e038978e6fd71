//! A server of several endpoints, one per shard, with every frame routed by
//! `Shard::route` (SPEC.md 3.8.1): sessions are created in the shard their
//! ClientHello names, keep ids of that shard, and every later frame,
//! a Retry's second hello, a NAT rebinding and a reconnection included,
//! reaches the endpoint that holds the session.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::endpoint::{Endpoint, EndpointConfig, EndpointEvent, Remote, RemoteKind, RetryPolicy, SessionHandle};
use xtmp_core::handshake::{ClientConfig, IdentityKeypair, Pinned, ServerConfig};
use xtmp_core::session::{Event, MessageKind, PathId, PathKind, SendOptions, Session, SessionConfig};
use xtmp_core::shard::Shard;
use xtmp_core::time::Instant;
use xtmp_core::wire::MessageType;

const SHARDS: u32 = 3;
const CLIENTS: usize = 12;

struct Client {
    session: Session,
    remote: Remote,
    answers: usize,
}

struct Server {
    shards: Vec<Endpoint>,
    sessions: Vec<Vec<SessionHandle>>,
    /// Frames each shard received.
    received: Vec<usize>,
}

struct Net {
    now: Instant,
    clients: Vec<Client>,
    server: Server,
    to_server: VecDeque<(Remote, Vec<u8>)>,
    /// Bytes to a client, by the remote they were sent to.
    to_client: VecDeque<(Remote, Vec<u8>)>,
}

fn setup(kind: PathKind, retry: RetryPolicy) -> Net {
    let now = Instant::from_nanos(1_000_000_000);
    let provider = Arc::new(xtmp_core::crypto::RustCrypto);
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let id = Arc::new(IdentityKeypair::generate(&*provider, &mut rng).unwrap());
    let session = Arc::new(SessionConfig::default());
    let shards = (0..SHARDS)
        .map(|i| {
            let mut server = ServerConfig::new(provider.clone(), id.clone());
            server.session_ids = Shard::new(i, SHARDS).unwrap();
            let mut config = EndpointConfig::new(session.clone(), Arc::new(server));
            config.retry = retry;
            Endpoint::new(now, Arc::new(config), &mut rng).unwrap()
        })
        .collect();
    let client_config = Arc::new(ClientConfig::new(provider.clone(), Arc::new(Pinned(id.public().clone()))));
    let remote_kind = if kind == PathKind::Stream { RemoteKind::Stream } else { RemoteKind::Datagram };
    let clients = (0..CLIENTS)
        .map(|i| {
            let addr: SocketAddr = format!("192.0.2.{}:40000", i + 1).parse().unwrap();
            Client {
                session: Session::connect(now, session.clone(), client_config.clone(), kind, &mut rng).unwrap(),
                remote: Remote { addr, kind: remote_kind },
                answers: 0,
            }
        })
        .collect();
    let server = Server { shards, sessions: vec![Vec::new(); SHARDS as usize], received: vec![0; SHARDS as usize] };
    Net { now, clients, server, to_server: VecDeque::new(), to_client: VecDeque::new() }
}

impl Net {
    /// One round: every transmit moves, every input is delivered (a
    /// server's by `Shard::route`), events are handled (the server echoes
    /// requests); when nothing moved, time jumps to the next deadline.
    fn step(&mut self) -> bool {
        let mut moved = false;
        let mut buf = vec![0u8; 100_000];
        for c in &mut self.clients {
            while let Some(t) = c.session.poll_transmit(self.now, &mut buf).unwrap() {
                self.to_server.push_back((c.remote, buf[..t.len].to_vec()));
                moved = true;
            }
        }
        for e in &mut self.server.shards {
            while let Some((remote, len)) = e.poll_transmit(self.now, &mut buf).unwrap() {
                self.to_client.push_back((remote, buf[..len].to_vec()));
                moved = true;
            }
        }
        while let Some((remote, bytes)) = self.to_server.pop_front() {
            let shard = Shard::route(&bytes, SHARDS).unwrap() as usize;
            self.server.received[shard] += 1;
            self.server.shards[shard].handle_input(self.now, remote, &bytes);
        }
        while let Some((remote, bytes)) = self.to_client.pop_front() {
            // Bytes to an address the client left are lost.
            if let Some(c) = self.clients.iter_mut().find(|c| c.remote == remote) {
                c.session.handle_input(self.now, PathId(0), &bytes);
            }
        }
        for (i, e) in self.server.shards.iter_mut().enumerate() {
            while let Some(ev) = e.poll_event() {
                match ev {
                    EndpointEvent::NewSession(h, _) => self.server.sessions[i].push(h),
                    EndpointEvent::Session(h, Event::Message(m)) if m.kind == MessageKind::Request => {
                        let s = e.session_mut(h).unwrap();
                        s.respond(m.id, m.message_type, m.body, SendOptions::default()).unwrap();
                    }
                    _ => {}
                }
            }
        }
        for c in &mut self.clients {
            while let Some(ev) = c.session.poll_event() {
                if let Event::Message(m) = ev
                    && matches!(m.kind, MessageKind::Response(_))
                {
                    assert_eq!(m.body.as_ref(), c.remote.addr.to_string().as_bytes(), "an answer to another client");
                    c.answers += 1;
                }
            }
        }
        if moved {
            return true;
        }
        let next = self
            .clients
            .iter()
            .filter_map(|c| c.session.poll_timeout())
            .chain(self.server.shards.iter().filter_map(|e| e.poll_timeout()))
            .min();
        let Some(t) = next else { return false };
        self.now = self.now.max(t);
        for c in &mut self.clients {
            c.session.handle_timeout(self.now);
        }
        for e in &mut self.server.shards {
            e.handle_timeout(self.now);
        }
        true
    }

    fn drive(&mut self, what: &str, done: impl Fn(&Net) -> bool) {
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            assert!(self.step(), "nothing left to do before {what}");
        }
        assert!(done(self), "{what} never happened");
    }
}

impl Net {
    fn established(&self) -> bool {
        self.clients.iter().all(|c| c.session.is_established())
    }

    /// Every client sends a request naming itself.
    fn request_all(&mut self) {
        for c in &mut self.clients {
            let body = Bytes::from(c.remote.addr.to_string());
            c.session.send(MessageType::WALLET_BALANCE, body, SendOptions::request()).unwrap();
        }
    }

    fn answered(&self, n: usize) -> bool {
        self.clients.iter().all(|c| c.answers >= n)
    }

    /// Every session sits in the shard its id names, and the client knows it by that id.
    fn check_placement(&self) {
        let mut total = 0;
        for (i, handles) in self.server.sessions.iter().enumerate() {
            for h in handles {
                assert!(Shard::new(i as u32, SHARDS).unwrap().owns(h.0), "session {:#x} in shard {i}", h.0);
                total += 1;
            }
        }
        assert_eq!(total, CLIENTS, "one session per client, none twice");
        for c in &self.clients {
            let server_id = c.session.peer_session_id().unwrap();
            let shard = Shard::of(server_id, SHARDS) as usize;
            assert!(self.server.sessions[shard].contains(&SessionHandle(server_id)));
            assert_eq!(Shard::of(c.session.local_session_id(), SHARDS) as usize, shard, "hello and session agree");
        }
    }
}

fn run(kind: PathKind, retry: RetryPolicy) -> Net {
    let mut net = setup(kind, retry);
    net.drive("every handshake", Net::established);
    net.check_placement();
    // Sessions spread: with 12 random client ids over 3 shards, this seed
    // puts some in every shard.
    assert!(net.server.sessions.iter().all(|s| !s.is_empty()), "{:?}", net.server.received);
    net.request_all();
    net.drive("every answer", |n| n.answered(1));
    net
}

#[test]
fn datagram_sessions_live_and_stay_in_the_shard_their_hello_named() {
    let net = run(PathKind::Datagram, RetryPolicy::Never);
    let created: u64 = net.server.shards.iter().map(|e| e.stats().sessions_created).sum();
    assert_eq!(created, CLIENTS as u64);
    let dropped: u64 = net.server.shards.iter().map(|e| e.stats().dropped).sum();
    assert_eq!(dropped, 0, "no frame reached an endpoint that had no use for it");
}

#[test]
fn a_retry_token_comes_back_to_the_shard_that_issued_it() {
    let net = run(PathKind::Datagram, RetryPolicy::Always);
    let retries: u64 = net.server.shards.iter().map(|e| e.stats().retries_sent).sum();
    let rejected: u64 = net.server.shards.iter().map(|e| e.stats().tokens_rejected).sum();
    assert_eq!(retries, CLIENTS as u64);
    assert_eq!(rejected, 0, "every token was checked by the key that made it");
}

#[test]
fn stream_sessions_route_by_their_first_frame() {
    run(PathKind::Stream, RetryPolicy::Never);
}

#[test]
fn a_rebound_client_reaches_its_session_in_its_shard() {
    let mut net = run(PathKind::Datagram, RetryPolicy::Never);
    for (i, c) in net.clients.iter_mut().enumerate() {
        c.remote.addr = format!("198.51.100.{}:51000", i + 1).parse().unwrap();
    }
    net.request_all();
    net.drive("every answer after the rebinding", |n| n.answered(2));
    let migrations: u64 = net.server.shards.iter().map(|e| e.stats().migrations).sum();
    assert_eq!(migrations, CLIENTS as u64);
    net.check_placement();
}
