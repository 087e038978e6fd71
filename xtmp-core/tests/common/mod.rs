//! A deterministic in-memory client/server pair: zero latency, time jumps
//! to the next deadline, and a filter that can drop, duplicate, reorder or
//! tamper with datagrams. `drive` fails if the pair livelocks.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use xtmp_core::crypto::{CryptoProvider, RustCrypto};
use xtmp_core::endpoint::{Endpoint, EndpointConfig, EndpointEvent, Remote, RemoteKind, SessionHandle};
use xtmp_core::handshake::{ClientConfig, IdentityKeypair, Pinned, ServerConfig};
use xtmp_core::session::{Event, PathId, PathKind, Session, SessionConfig};
use xtmp_core::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    ToServer,
    ToClient,
}

/// What the filter does with one datagram or chunk.
pub enum Verdict {
    Deliver,
    Drop,
    /// Deliver this instead.
    Replace(Vec<u8>),
    /// Deliver it twice.
    Duplicate,
    /// Hold it back until the next datagram in this direction has gone.
    Delay,
}

pub type Filter = Box<dyn FnMut(Dir, &[u8]) -> Verdict>;

pub struct Pair {
    pub now: Instant,
    pub client: Session,
    pub server: Endpoint,
    pub remote: Remote,
    pub handle: Option<SessionHandle>,
    pub client_events: Vec<Event>,
    pub server_events: Vec<Event>,
    /// Connections the endpoint asked to close, and why, with the time.
    pub closed_remotes: Vec<(Remote, xtmp_core::endpoint::CloseRemoteReason, Instant)>,
    pub filter: Option<Filter>,
    /// One-way black holes: what goes this way on this remote's path is
    /// lost (meant for datagram paths; a stream would be cut mid-frame).
    pub black_holes: Vec<(Dir, Remote)>,
    /// For each client path, the address the server sees it from.
    pub client_paths: Vec<Remote>,
    pub to_server: VecDeque<(Remote, Vec<u8>)>,
    pub to_client: VecDeque<(Remote, Vec<u8>)>,
    held: [Option<(Remote, Vec<u8>)>; 2],
    pub client_alive: bool,
    pub server_alive: bool,
    /// Bytes the server sent and received, for amplification checks.
    pub server_sent: u64,
    pub server_received: u64,
    pub server_sent_by_remote: std::collections::HashMap<Remote, u64>,
    /// Bytes the client sent on each of its paths.
    pub client_sent_by_path: std::collections::HashMap<PathId, u64>,
    /// Whether the server's application takes its events (a slow
    /// application stops: flow control must hold the client back).
    pub server_reading: bool,
    /// Whether the client's application takes its events.
    pub client_reading: bool,
}

/// A pair with the default configuration, connected.
pub fn established(kind: PathKind) -> Pair {
    Setup::new(kind).connected()
}

pub fn provider() -> Arc<dyn CryptoProvider> {
    Arc::new(RustCrypto)
}

pub fn identity(seed: u8) -> Arc<IdentityKeypair> {
    Arc::new(IdentityKeypair::generate(&RustCrypto, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap())
}

pub struct Setup {
    pub session: SessionConfig,
    pub server_session: Option<SessionConfig>,
    pub client: ClientConfig,
    pub endpoint: EndpointConfig,
    pub kind: PathKind,
    pub seed: u8,
}

impl Setup {
    pub fn new(kind: PathKind) -> Setup {
        Setup::with_providers(kind, provider(), provider())
    }

    /// A client on one crypto provider and a server on another.
    pub fn with_providers(kind: PathKind, client: Arc<dyn CryptoProvider>, server: Arc<dyn CryptoProvider>) -> Setup {
        let id = Arc::new(IdentityKeypair::generate(&*server, &mut ChaCha20Rng::from_seed([1; 32])).unwrap());
        let server = ServerConfig::new(server, id.clone());
        let client = ClientConfig::new(client, Arc::new(Pinned(id.public().clone())));
        let session = SessionConfig::default();
        let endpoint = EndpointConfig::new(Arc::new(session.clone()), Arc::new(server));
        Setup { session, server_session: None, client, endpoint, kind, seed: 7 }
    }

    pub fn server(&mut self) -> &mut ServerConfig {
        Arc::get_mut(&mut self.endpoint.server).unwrap()
    }

    /// Starts the pair and completes the handshake.
    pub fn connected(self) -> Pair {
        let mut p = self.start();
        p.connect();
        p
    }

    pub fn start(mut self) -> Pair {
        let now = Instant::from_nanos(1_000_000_000);
        let mut rng = ChaCha20Rng::from_seed([self.seed; 32]);
        self.endpoint.session = Arc::new(self.server_session.clone().unwrap_or(self.session.clone()));
        let server = Endpoint::new(now, Arc::new(self.endpoint), &mut rng).unwrap();
        let client = Session::connect(now, Arc::new(self.session), Arc::new(self.client), self.kind, &mut rng).unwrap();
        let addr: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let kind = if self.kind == PathKind::Stream { RemoteKind::Stream } else { RemoteKind::Datagram };
        Pair {
            now,
            client,
            server,
            remote: Remote { addr, kind },
            client_paths: vec![Remote { addr, kind }],
            handle: None,
            client_events: Vec::new(),
            server_events: Vec::new(),
            closed_remotes: Vec::new(),
            filter: None,
            black_holes: Vec::new(),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            held: [None, None],
            client_alive: true,
            server_alive: true,
            server_sent: 0,
            server_received: 0,
            server_sent_by_remote: Default::default(),
            client_sent_by_path: Default::default(),
            server_reading: true,
            client_reading: true,
        }
    }
}

impl Pair {
    pub fn server_session(&mut self) -> &mut Session {
        let h = self.handle.expect("no server session yet");
        self.server.session_mut(h).expect("server session gone")
    }

    fn push(&mut self, dir: Dir, remote: Remote, bytes: Vec<u8>) {
        if self.black_holes.contains(&(dir, remote)) {
            return;
        }
        let verdict = match &mut self.filter {
            Some(f) => f(dir, &bytes),
            None => Verdict::Deliver,
        };
        let q = match dir {
            Dir::ToServer => &mut self.to_server,
            Dir::ToClient => &mut self.to_client,
        };
        let held = &mut self.held[dir as usize];
        match verdict {
            Verdict::Deliver => q.push_back((remote, bytes)),
            Verdict::Drop => {}
            Verdict::Replace(b) => q.push_back((remote, b)),
            Verdict::Duplicate => {
                q.push_back((remote, bytes.clone()));
                q.push_back((remote, bytes));
            }
            Verdict::Delay => {
                if let Some(old) = held.replace((remote, bytes)) {
                    q.push_back(old);
                }
                return;
            }
        }
        if let Some(old) = held.take() {
            q.push_back(old);
        }
    }

    /// Moves every pending transmit into the queues. Returns whether anything moved.
    pub fn flush(&mut self) -> bool {
        let mut moved = false;
        // Exactly what each side says it needs: the contract under test.
        let mut buf = vec![0u8; self.client.max_transmit_len()];
        if self.client_alive {
            while let Some(t) = self.client.poll_transmit(self.now, &mut buf).unwrap() {
                let remote = self.client_paths[t.path.0 as usize];
                *self.client_sent_by_path.entry(t.path).or_default() += t.len as u64;
                self.push(Dir::ToServer, remote, buf[..t.len].to_vec());
                moved = true;
            }
        }
        buf.resize(self.server.max_transmit_len(), 0);
        if self.server_alive {
            while let Some((remote, len)) = self.server.poll_transmit(self.now, &mut buf).unwrap() {
                self.server_sent += len as u64;
                *self.server_sent_by_remote.entry(remote).or_default() += len as u64;
                self.push(Dir::ToClient, remote, buf[..len].to_vec());
                moved = true;
            }
        }
        moved
    }

    /// Delivers everything queued. Returns whether anything was delivered.
    pub fn deliver(&mut self) -> bool {
        let mut any = false;
        while let Some((remote, b)) = self.to_server.pop_front() {
            any = true;
            if self.server_alive {
                self.server_received += b.len() as u64;
                self.server.handle_input(self.now, remote, &b);
            }
        }
        while let Some((remote, b)) = self.to_client.pop_front() {
            any = true;
            // Bytes to an address no client path has any more are lost.
            let path = self.client_paths.iter().position(|r| *r == remote);
            if let (true, Some(i)) = (self.client_alive, path) {
                self.client.handle_input(self.now, PathId(i as u32), &b);
            }
        }
        self.collect();
        any
    }

    pub fn collect(&mut self) {
        while let Some(e) = self.client_reading.then(|| self.client.poll_event()).flatten() {
            self.client_events.push(e);
        }
        while let Some(e) = self.server_reading.then(|| self.server.poll_event()).flatten() {
            match e {
                EndpointEvent::NewSession(h, _) => self.handle = Some(h),
                EndpointEvent::Session(_, e) => self.server_events.push(e),
                EndpointEvent::CloseRemote(r, why) => {
                    self.closed_remotes.push((r, why, self.now));
                    // The connection is reset: the client's path breaks.
                    if let Some(i) = self.client_paths.iter().position(|p| *p == r) {
                        self.client.path_closed(PathId(i as u32));
                    }
                    self.server.remote_closed(r);
                }
                _ => {}
            }
        }
    }

    /// One round: send, deliver; if nothing moved, jump to the next deadline.
    /// Returns false when nothing at all is left to do.
    pub fn step(&mut self) -> bool {
        let moved = self.flush();
        let delivered = self.deliver();
        if moved || delivered {
            return true;
        }
        // Release held datagrams when nothing else is moving.
        if let Some(b) = self.held[0].take() {
            self.to_server.push_back(b);
            return true;
        }
        if let Some(b) = self.held[1].take() {
            self.to_client.push_back(b);
            return true;
        }
        let next = [
            self.client_alive.then(|| self.client.poll_timeout()).flatten(),
            self.server_alive.then(|| self.server.poll_timeout()).flatten(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(t) = next else { return false };
        self.now = self.now.max(t);
        if self.client_alive {
            self.client.handle_timeout(self.now);
        }
        if self.server_alive {
            self.server.handle_timeout(self.now);
        }
        self.collect();
        true
    }

    /// Steps until `done` holds; panics after `max` steps (a livelock).
    pub fn drive(&mut self, max: usize, mut done: impl FnMut(&Pair) -> bool) {
        for _ in 0..max {
            if done(self) {
                return;
            }
            if !self.step() {
                break;
            }
        }
        assert!(
            done(self),
            "pair did not reach the condition (client {:?}, server {:?})",
            self.client_events,
            self.server_events
        );
    }

    /// Exchanges traffic until none is left (without advancing time).
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            let moved = self.flush();
            if !self.deliver() && !moved {
                return;
            }
        }
        panic!("traffic never settled");
    }

    pub fn connect(&mut self) {
        self.drive(1000, |p| {
            p.client.is_established()
                && p.handle.is_some_and(|_| p.server_events.iter().any(|e| matches!(e, Event::Connected { .. })))
        });
        self.settle();
    }

    /// Bytes the server sent to `remote`.
    pub fn server_sent_to(&self, remote: Remote) -> u64 {
        self.server_sent_by_remote.get(&remote).copied().unwrap_or(0)
    }

    /// A NAT rebinding: the client's `path` now reaches the server from `addr`.
    pub fn rebind(&mut self, path: PathId, addr: &str) {
        self.client_paths[path.0 as usize].addr = addr.parse().unwrap();
    }

    /// The client opens a new path seen by the server from `addr`.
    pub fn add_client_path(&mut self, kind: PathKind, addr: &str) -> PathId {
        let id = self.client.add_path(kind, false).expect("path limit");
        let rk = if kind == PathKind::Stream { RemoteKind::Stream } else { RemoteKind::Datagram };
        let remote = Remote { addr: addr.parse().unwrap(), kind: rk };
        // A new id, or a dead path's (SPEC.md 3.7: ids are reused).
        match self.client_paths.get_mut(id.0 as usize) {
            Some(slot) => *slot = remote,
            None => {
                assert_eq!(id.0 as usize, self.client_paths.len());
                self.client_paths.push(remote);
            }
        }
        id
    }

    pub fn client_messages(&self) -> Vec<&xtmp_core::session::Message> {
        self.client_events.iter().filter_map(|e| if let Event::Message(m) = e { Some(m) } else { None }).collect()
    }

    pub fn server_messages(&self) -> Vec<&xtmp_core::session::Message> {
        self.server_events.iter().filter_map(|e| if let Event::Message(m) = e { Some(m) } else { None }).collect()
    }
}

/// RustCrypto, counting the signatures it verifies and the mac1s it
/// computes (SPEC.md 2.2).
#[derive(Debug, Default)]
pub struct CountingVerifies {
    pub verifies: std::sync::atomic::AtomicUsize,
    pub mac1s: std::sync::atomic::AtomicUsize,
}

impl CryptoProvider for CountingVerifies {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn mlkem_generate(
        &self,
        rng: xtmp_core::crypto::Rng<'_>,
    ) -> Result<xtmp_core::crypto::KemKeyPair, xtmp_core::crypto::CryptoError> {
        RustCrypto.mlkem_generate(rng)
    }
    fn mlkem_encapsulate(
        &self,
        ek: &[u8; xtmp_core::crypto::MLKEM_EK_LEN],
        rng: xtmp_core::crypto::Rng<'_>,
    ) -> Result<
        (Box<[u8; xtmp_core::crypto::MLKEM_CT_LEN]>, xtmp_core::crypto::Secret<32>),
        xtmp_core::crypto::CryptoError,
    > {
        RustCrypto.mlkem_encapsulate(ek, rng)
    }
    fn x25519_generate(
        &self,
        rng: xtmp_core::crypto::Rng<'_>,
    ) -> Result<(Box<dyn xtmp_core::crypto::DhPrivateKey>, [u8; 32]), xtmp_core::crypto::CryptoError> {
        RustCrypto.x25519_generate(rng)
    }
    fn signer(
        &self,
        mldsa_seed: &xtmp_core::crypto::Secret<32>,
        ed25519_seed: &xtmp_core::crypto::Secret<32>,
    ) -> Result<Box<dyn xtmp_core::crypto::HybridSigner>, xtmp_core::crypto::CryptoError> {
        RustCrypto.signer(mldsa_seed, ed25519_seed)
    }
    fn mldsa_verify(
        &self,
        vk: &[u8; xtmp_core::crypto::MLDSA_VK_LEN],
        msg: &[u8],
        context: &[u8],
        sig: &[u8; xtmp_core::crypto::MLDSA_SIG_LEN],
    ) -> Result<(), xtmp_core::crypto::CryptoError> {
        self.verifies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RustCrypto.mldsa_verify(vk, msg, context, sig)
    }
    fn ed25519_verify(&self, pk: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Result<(), xtmp_core::crypto::CryptoError> {
        self.verifies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RustCrypto.ed25519_verify(pk, msg, sig)
    }
    fn sha384(&self) -> Box<dyn xtmp_core::crypto::Hash> {
        RustCrypto.sha384()
    }
    fn hmac_sha384(&self, key: &[u8], parts: &[&[u8]]) -> xtmp_core::crypto::Secret<48> {
        if parts.first() == Some(&&b"xtmp1 mac1"[..]) {
            self.mac1s.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        RustCrypto.hmac_sha384(key, parts)
    }
    fn hkdf_extract(&self, salt: &[u8], ikm: &[u8]) -> xtmp_core::crypto::Secret<48> {
        RustCrypto.hkdf_extract(salt, ikm)
    }
    fn hkdf_expand(
        &self,
        prk: &xtmp_core::crypto::Secret<48>,
        info: &[&[u8]],
        out: &mut [u8],
    ) -> Result<(), xtmp_core::crypto::CryptoError> {
        RustCrypto.hkdf_expand(prk, info, out)
    }
    fn aead(
        &self,
        alg: xtmp_core::crypto::AeadAlgorithm,
        key: &xtmp_core::crypto::Secret<32>,
    ) -> Result<Box<dyn xtmp_core::crypto::AeadKey>, xtmp_core::crypto::CryptoError> {
        RustCrypto.aead(alg, key)
    }
}
